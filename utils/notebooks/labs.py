"""Generate the exercise notebooks ``labs/NN_slug.ipynb`` from the solutions ``solutions/NN_slug.ipynb``.

What changes from a solution to its lab (see ``cells.py`` for the conventions):

- in a code cell, the lines from ``# BEGIN SOLUTION`` to ``# END SOLUTION`` become, at the same
  indentation, ``raise NotImplementedError("Exercise N.M: write this function, then run the check below")``
  (wrapped over three lines as ``ruff format`` does when it is wider than ``CODE_LINE_LENGTH``);
- a code cell tagged ``solution`` becomes ``# Exercise N.M: your code here`` plus such a raise;
- a markdown cell tagged ``solution`` becomes ``*Exercise N.M: write your answer here.*``;
- a cell tagged ``solution-only`` is dropped;
- the title ``# Solution N · Topic`` becomes ``# Lab N · Topic``;
- the ``colab-install`` cell is regenerated from ``pyproject.toml``; all outputs and execution
  counts are cleared; the notebook's metadata gets
  ``"course": {"chapter": "NN_slug", "exercises": ["N.1", ...]}``.

The output is deterministic (cell ids are the solution's, JSON as nbformat writes it), so
``build-labs --check`` can tell whether the committed labs are up to date.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from utils.notebooks import cells as C
from utils.notebooks.formatting import CODE_LINE_LENGTH
from utils.notebooks.project import LABS_DIR, NOTEBOOK_GLOB, SOLUTIONS_DIR, colab_install_source, project_info

#: Cell metadata kept in labs (anything else, e.g. execution timings, is dropped).
KEPT_CELL_METADATA = ("tags", "jupyter", "editable", "deletable", "slideshow")
#: Tags that only mean something in a solution notebook.
SOLUTION_TAGS = {C.SOLUTION_TAG, C.SOLUTION_ONLY_TAG}


def function_placeholder(exercise: str, indent: str = "") -> str:
    """The line(s) that replace a solution region at ``indent``, wrapped as ``ruff format`` would."""
    return _raise_not_implemented(f"Exercise {exercise}: write this function, then run the check below", indent)


def cell_placeholder(exercise: str) -> str:
    return (f"# Exercise {exercise}: your code here\n"
            + _raise_not_implemented(f"Exercise {exercise}: write your code in this cell, then run the check below"))


def _raise_not_implemented(message: str, indent: str = "") -> str:
    one_line = f'{indent}raise NotImplementedError("{message}")'
    if len(one_line) <= CODE_LINE_LENGTH:
        return one_line
    return f'{indent}raise NotImplementedError(\n{indent}    "{message}"\n{indent})'


def answer_placeholder(exercise: str) -> str:
    return f"*Exercise {exercise}: write your answer here.*"


@dataclass
class LabResult:
    """One generated lab: where it goes, its bytes, and its exercises."""

    solution: Path
    lab: Path
    data: bytes
    exercises: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# One notebook


def build_lab(solution: nbformat.NotebookNode, chapter: str, colab_source: str, *, name: str | None = None
              ) -> nbformat.NotebookNode:
    """The lab notebook for ``solution`` (chapter ``NN_slug``); NotebookError names any problem.

    ``name`` is how errors refer to the notebook (default ``solutions/<chapter>.ipynb``).
    """
    name = name or f"{SOLUTIONS_DIR}/{chapter}.ipynb"
    if not solution.cells or C.COLAB_TAG not in C.tags(solution.cells[0]):
        raise C.NotebookError(f"{name}: the first cell must be the code cell tagged '{C.COLAB_TAG}'; "
                              "run `python -m utils.notebooks sync` to add it")
    scopes = C.exercise_scopes(solution.cells)
    lab_cells, used_ids = [], set()
    for index, (cell, exercise) in enumerate(zip(solution.cells, scopes)):
        cell_tags = C.tags(cell)
        if C.SOLUTION_ONLY_TAG in cell_tags:
            continue
        try:
            new = _lab_cell(cell, exercise, colab_source, first=index == 0)
        except C.NotebookError as error:
            raise C.NotebookError(f"{name}, cell {index}: {error}") from None
        new["id"] = _cell_id(cell, chapter, index, used_ids)
        lab_cells.append(new)
    _retitle_as_lab(lab_cells)
    exercises = [heading.exercise for _, heading in C.exercise_headings(lab_cells)]
    duplicates = sorted({e for e in exercises if exercises.count(e) > 1})
    if duplicates:
        raise C.NotebookError(f"{name}: exercise {', '.join(duplicates)} has more than one heading; number them N.1, N.2, ...")
    lab = nbformat.v4.new_notebook()
    lab.nbformat_minor = max(5, int(solution.get("nbformat_minor", 5)))
    lab.cells = lab_cells
    lab.metadata = _lab_metadata(solution.metadata, chapter, exercises)
    nbformat.validate(lab)
    return lab


def _lab_cell(cell: Any, exercise: str | None, colab_source: str, *, first: bool) -> nbformat.NotebookNode:
    cell_type, cell_tags, text = cell.get("cell_type"), C.tags(cell), C.source(cell)
    is_solution = C.SOLUTION_TAG in cell_tags
    if is_solution and exercise is None:
        raise C.NotebookError(f"tagged '{C.SOLUTION_TAG}' outside any exercise; put it after a "
                              "'### Exercise N.M: title' heading (or remove the tag)")
    if cell_type == "code":
        if C.COLAB_TAG in cell_tags:
            if not first:
                raise C.NotebookError(f"the '{C.COLAB_TAG}' cell must be the first cell of the notebook")
            text = colab_source
        elif is_solution:
            text = cell_placeholder(exercise)  # type: ignore[arg-type]
        else:
            text = _strip_solutions(text, exercise)
        new = nbformat.v4.new_code_cell(text)
    elif cell_type == "markdown":
        new = nbformat.v4.new_markdown_cell(answer_placeholder(exercise) if is_solution else text)  # type: ignore[arg-type]
        if not is_solution and cell.get("attachments"):
            new["attachments"] = cell["attachments"]
    elif cell_type == "raw":
        new = nbformat.v4.new_raw_cell(text)
    else:
        raise C.NotebookError(f"unknown cell type {cell_type!r}")
    metadata = {key: cell["metadata"][key] for key in KEPT_CELL_METADATA if key in cell.get("metadata", {})}
    if "tags" in metadata:
        metadata["tags"] = [tag for tag in metadata["tags"] if tag not in SOLUTION_TAGS]
        if not metadata["tags"]:
            del metadata["tags"]
    new["metadata"] = metadata
    return new


def _retitle_as_lab(cells: list[Any]) -> None:
    """``# Solution N · Topic`` -> ``# Lab N · Topic`` in the title cell (a notebook without that
    title keeps its own; lint names the problem)."""
    title = C.notebook_title(cells)
    if title is not None and title["role"] == "Solution":
        cell = cells[C.title_cell(cells)]  # type: ignore[index]
        cell["source"] = f"# Lab {title['number']} · {title['topic']}" + C.source(cell)[title.end():]


def _strip_solutions(code: str, exercise: str | None) -> str:
    """Replace each BEGIN/END SOLUTION region by a ``raise NotImplementedError(...)`` statement."""
    regions = C.solution_regions(code)
    if not regions:
        return code
    if exercise is None:
        raise C.NotebookError(f"'# BEGIN SOLUTION' (line {regions[0][0] + 1}) outside any exercise; put the cell "
                              "after a '### Exercise N.M: title' heading, or remove the markers")
    lines = code.splitlines()
    out: list[str] = []
    position = 0
    for begin, end in regions:
        out.extend(lines[position:begin])
        indent = C.MARKER.match(lines[begin]).group(1)  # type: ignore[union-attr]
        out.append(function_placeholder(exercise, indent))
        position = end + 1
    out.extend(lines[position:])
    return "\n".join(out) + ("\n" if code.endswith("\n") else "")


def _cell_id(cell: Any, chapter: str, index: int, used: set[str]) -> str:
    """The solution cell's id (stable), or one derived from the chapter and the cell's position."""
    cell_id = cell.get("id")
    if not cell_id or cell_id in used:
        cell_id = hashlib.sha1(f"{chapter}/{index}/{cell_id}".encode()).hexdigest()[:8]
    used.add(cell_id)
    return cell_id


def _lab_metadata(metadata: Any, chapter: str, exercises: list[str]) -> dict[str, Any]:
    kernelspec = dict(metadata.get("kernelspec") or {"display_name": "Python 3", "language": "python", "name": "python3"})
    language = (metadata.get("language_info") or {}).get("name", "python")
    return {
        "course": {"chapter": chapter, "exercises": exercises},
        "kernelspec": kernelspec,
        "language_info": {"name": language},
    }


# --------------------------------------------------------------------------------------------
# The whole course


def solution_notebooks(solutions_dir: Path) -> list[Path]:
    """``NN_slug.ipynb`` files of ``solutions_dir``, sorted."""
    return sorted(Path(solutions_dir).glob(NOTEBOOK_GLOB))


def generate_labs(root: Path, solutions_dir: Path | None = None, labs_dir: Path | None = None) -> list[LabResult]:
    """Build (in memory) the lab of every solution notebook; NotebookError on the first problem."""
    root = Path(root)
    solutions_dir = Path(solutions_dir or root / SOLUTIONS_DIR)
    labs_dir = Path(labs_dir or root / LABS_DIR)
    colab_source = colab_install_source(project_info(root))
    results = []
    for path in solution_notebooks(solutions_dir):
        chapter = path.stem
        lab = build_lab(C.read_notebook(path), chapter, colab_source, name=_display(path, root))
        results.append(LabResult(path, labs_dir / path.name, C.notebook_bytes(lab), lab.metadata["course"]["exercises"]))
    return results


def stale_labs(root: Path, solutions_dir: Path | None = None, labs_dir: Path | None = None) -> list[str]:
    """Problems that ``build-labs`` would fix: missing or outdated labs, and labs without a solution."""
    root = Path(root)
    labs_dir = Path(labs_dir or root / LABS_DIR)
    results = generate_labs(root, solutions_dir, labs_dir)
    problems = []
    for result in results:
        if not result.lab.is_file():
            problems.append(f"{_display(result.lab, root)} is missing")
        elif result.lab.read_bytes() != result.data:
            problems.append(f"{_display(result.lab, root)} is out of date with {_display(result.solution, root)}")
    expected = {result.lab.name for result in results}
    for lab in sorted(labs_dir.glob(NOTEBOOK_GLOB)):
        if lab.name not in expected:
            problems.append(f"{_display(lab, root)} has no solution notebook {SOLUTIONS_DIR}/{lab.name}; delete it")
    return problems


def write_labs(root: Path, solutions_dir: Path | None = None, labs_dir: Path | None = None) -> list[tuple[LabResult, bool]]:
    """Write every lab; returns each result and whether its file changed."""
    return [(result, C.write_if_changed(result.lab, result.data)) for result in generate_labs(root, solutions_dir, labs_dir)]


def _display(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)
