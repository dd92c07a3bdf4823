"""Reading notebooks the way the course writes them: tags, exercise headings, solution markers.

The conventions (``README.md``, "Write a chapter notebook"):

- a markdown heading ``### Exercise N.M: title`` (``##`` also works) opens exercise ``N.M``; the
  exercise runs until the next heading of the same or a higher level (``#``, ``##``, ``###``);
- in a code cell, the lines from ``# BEGIN SOLUTION`` to ``# END SOLUTION`` are the solution;
- tags: ``colab-install`` (first cell, generated), ``parameters`` (``MODEL = "course"``),
  ``solution`` (a whole code or markdown cell that is the answer), ``solution-only`` (dropped
  from the lab);
- ``# NBVAL_CHECK_OUTPUT`` as the first line of a code cell: nbval compares its stored outputs;
- the title, the first line of the first markdown cell, is ``# Solution N · Topic`` (the lab's
  reads ``# Lab N · Topic``), where ``Topic`` is the chapter page's, ``# Chapter N · Topic``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

COLAB_TAG = "colab-install"
#: myst-nb's tag for a cell the website does not show (the colab-install cell: set-up plumbing).
HIDDEN_TAG = "remove-cell"
PARAMETERS_TAG = "parameters"
SOLUTION_TAG = "solution"
SOLUTION_ONLY_TAG = "solution-only"
NBVAL_CHECK = "# NBVAL_CHECK_OUTPUT"

#: A page's title: ``# Chapter N · Topic`` (book/), ``# Solution N · Topic``, ``# Lab N · Topic``.
TITLE = re.compile(r"^# (?P<role>Chapter|Solution|Lab) (?P<number>\d+) · (?P<topic>\S.*?)\s*$")
EXERCISE_HEADING = re.compile(r"^(#{2,3})\s+Exercise\s+(\d+)\.(\d+)\s*:\s*(\S.*?)\s*#*\s*$")
HEADING = re.compile(r"^(#{1,6})\s+(\S.*?)\s*$")
FENCE = re.compile(r"^\s{0,3}(```|~~~)")
MARKER = re.compile(r"^(\s*)#\s*(BEGIN|END)\s+SOLUTION\b")
CHECKER_CALL = re.compile(r"(?<![\w.])check_\w+\s*\(")
CHECKER_DEF = re.compile(r"^\s*def\s+check_\w+\s*\(", re.M)


class NotebookError(ValueError):
    """A notebook breaks the course's conventions; the message names the notebook, the cell and the fix."""


@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    exercise: str | None  # "N.M" for an exercise heading
    title: str | None = None


# --------------------------------------------------------------------------------------------
# Reading and writing


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """Read a notebook as nbformat v4 (raises NotebookError naming the file if it cannot)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return nbformat.read(handle, as_version=4)
    except FileNotFoundError:
        raise NotebookError(f"{path}: no such file") from None
    except Exception as error:  # NotJSONError, validation and version errors
        raise NotebookError(f"{path}: not a Jupyter notebook ({type(error).__name__}: {_first_line(error)})") from None


def notebook_bytes(nb: nbformat.NotebookNode) -> bytes:
    """The notebook serialised the way nbformat does it (sorted keys, indent 1), ending with a newline."""
    text = nbformat.writes(nb, version=4)
    return (text if text.endswith("\n") else text + "\n").encode("utf-8")


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` unless it already holds exactly that; True when it wrote."""
    path = Path(path)
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return True


# --------------------------------------------------------------------------------------------
# Cells


def tags(cell: Any) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []) or [])


def source(cell: Any) -> str:
    text = cell.get("source", "")
    return "".join(text) if isinstance(text, list) else str(text)


def is_check_output_cell(cell: Any) -> bool:
    """A code cell whose outputs nbval compares (``# NBVAL_CHECK_OUTPUT`` as a comment line)."""
    return cell.get("cell_type") == "code" and any(line.strip() == NBVAL_CHECK for line in source(cell).splitlines())


def calls_checker(cell: Any) -> bool:
    """A code cell that calls a ``check_...(...)`` function (and is not just defining one)."""
    if cell.get("cell_type") != "code":
        return False
    code = CHECKER_DEF.sub("", source(cell))
    return any(CHECKER_CALL.search(line) for line in code.splitlines() if not line.lstrip().startswith("#"))


def markdown_headings(text: str) -> list[Heading]:
    """The ATX headings of a markdown cell, in order (lines inside ``` fences are skipped)."""
    headings, fence = [], None
    for line in text.splitlines():
        opening = FENCE.match(line)
        if opening:
            fence = None if fence == opening.group(1) else (fence or opening.group(1))
            continue
        if fence:
            continue
        exercise = EXERCISE_HEADING.match(line)
        if exercise:
            headings.append(Heading(len(exercise.group(1)), line.strip(), f"{int(exercise.group(2))}.{int(exercise.group(3))}",
                                    exercise.group(4)))
            continue
        heading = HEADING.match(line)
        if heading:
            headings.append(Heading(len(heading.group(1)), heading.group(2), None))
    return headings


def exercise_scopes(cells: list[Any]) -> list[str | None]:
    """For each cell, the exercise ``N.M`` it belongs to, or None.

    An exercise heading opens the exercise (its own cell included); the next heading of the same
    or a higher level (fewer ``#``) closes it.
    """
    scopes: list[str | None] = []
    current: Heading | None = None
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            for heading in markdown_headings(source(cell)):
                if heading.exercise:
                    current = heading
                elif current is not None and heading.level <= current.level:
                    current = None
        scopes.append(current.exercise if current else None)
    return scopes


def exercise_headings(cells: list[Any]) -> list[tuple[int, Heading]]:
    """``(cell index, heading)`` of every exercise heading, in order."""
    return [(index, heading) for index, cell in enumerate(cells) if cell.get("cell_type") == "markdown"
            for heading in markdown_headings(source(cell)) if heading.exercise]


def solution_regions(code: str) -> list[tuple[int, int]]:
    """``(begin line, end line)`` (0-based, inclusive) of each BEGIN/END SOLUTION pair.

    Raises NotebookError (without a location; callers add it) for an END without a BEGIN, a
    BEGIN without an END, or a BEGIN inside another solution.
    """
    regions, begin = [], None
    for number, line in enumerate(code.splitlines()):
        marker = MARKER.match(line)
        if not marker:
            continue
        if marker.group(2) == "BEGIN":
            if begin is not None:
                raise NotebookError(f"line {number + 1}: '# BEGIN SOLUTION' inside the solution opened on line "
                                    f"{begin + 1} (nested markers); close the first one with '# END SOLUTION'")
            begin = number
        else:
            if begin is None:
                raise NotebookError(f"line {number + 1}: '# END SOLUTION' without a '# BEGIN SOLUTION' above it")
            regions.append((begin, number))
            begin = None
    if begin is not None:
        raise NotebookError(f"line {begin + 1}: '# BEGIN SOLUTION' is never closed; add a '# END SOLUTION' line")
    return regions


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def title_cell(cells: list[Any]) -> int | None:
    """The index of the notebook's first markdown cell (whose first line is its title), or None."""
    return next((index for index, cell in enumerate(cells) if cell.get("cell_type") == "markdown"), None)


def notebook_title(cells: list[Any]) -> re.Match[str] | None:
    """The notebook's title line matched against :data:`TITLE`, or None when it has no such title."""
    index = title_cell(cells)
    return None if index is None else TITLE.match(source(cells[index]).partition("\n")[0])
