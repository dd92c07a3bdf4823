"""``lint``: check that solution notebooks follow the course's conventions.

Per notebook: the kernelspec is ``python3``; the first cell is the up-to-date ``colab-install``
cell; a ``parameters`` cell sets ``MODEL``; outputs are stored only on ``# NBVAL_CHECK_OUTPUT``
cells (and each such cell has them); every exercise heading is numbered ``N.M`` (N the chapter,
M = 1, 2, ... in order), states difficulty, importance and time, has at least one hint, has a
solution, and is followed by a checker call when its solution is code; the code cells are as
``ruff format`` writes them and no line is wider than the site's code column
(``formatting.CODE_LINE_LENGTH``); the lab can be built; the notebook is listed in ``_toc.yml``.
For the repository: ``_config.yml`` and ``utils/__init__.py`` agree with ``pyproject.toml``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nbformat

from utils.notebooks import cells as C
from utils.notebooks.formatting import long_lines, ruff_format
from utils.notebooks.labs import build_lab, solution_notebooks
from utils.notebooks.project import SOLUTIONS_DIR, colab_install_source, project_info, repository_problems

META_LINE = re.compile(r"Difficulty:\s*\S.*Importance:\s*\S.*\b\d+\s*(?:minutes?|mins?|hours?|h)\b", re.I)
HINT = re.compile(r"<details>\s*<summary>\s*(?:<b>|\*\*)?\s*Hint\b", re.I)
LOOKS_LIKE_EXERCISE = re.compile(r"^#+\s+Exercise\b", re.I)
MODEL_LINE = re.compile(r"^MODEL\s*=", re.M)


def lint_notebook(path: Path, root: Path, *, colab_source: str | None = None,
                  toc: set[str] | None = None) -> list[str]:
    """The problems of one solution notebook, each ``"<path>, cell N: what is wrong; how to fix it"``."""
    path, root = Path(path), Path(root)
    name = _display(path, root)
    try:
        nb = C.read_notebook(path)
    except C.NotebookError as error:
        return [str(error)]
    colab_source = colab_source or colab_install_source(project_info(root))
    problems = [f"{name}: {problem}" for problem in _notebook_problems(nb, path.stem, colab_source)]
    problems += [f"{name}: {problem}" for problem in _format_problems(nb, path)]
    try:
        build_lab(nb, path.stem, colab_source, name=name)
    except C.NotebookError as error:
        problems.append(str(error))
    except nbformat.ValidationError as error:
        problems.append(f"{name}: the lab would not be a valid notebook ({str(error).splitlines()[0]})")
    if toc is not None and f"{SOLUTIONS_DIR}/{path.stem}" not in toc:
        problems.append(f"{name}: not listed in _toc.yml; add '- file: {SOLUTIONS_DIR}/{path.stem}' to its chapter")
    return problems


def lint_course(root: Path, notebooks: list[Path] | None = None) -> list[str]:
    """The problems of the repository and of ``notebooks`` (default: every solution notebook)."""
    root = Path(root)
    problems = repository_problems(root)
    colab_source = colab_install_source(project_info(root))
    toc = toc_files(root)
    for path in notebooks if notebooks is not None else solution_notebooks(root / SOLUTIONS_DIR):
        problems.extend(lint_notebook(path, root, colab_source=colab_source, toc=toc))
    return problems


def toc_files(root: Path) -> set[str] | None:
    """The ``file:`` entries of ``root/_toc.yml`` (without suffix), or None when there is no such file."""
    path = Path(root) / "_toc.yml"
    if not path.is_file():
        return None
    import yaml

    files: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("file", "root") and isinstance(value, str):
                    files.add(re.sub(r"\.(ipynb|md)$", "", value))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(yaml.safe_load(path.read_text(encoding="utf-8")))
    return files


# --------------------------------------------------------------------------------------------
# The checks


def _notebook_problems(nb: nbformat.NotebookNode, chapter: str, colab_source: str) -> list[str]:
    problems = []
    kernel = (nb.metadata.get("kernelspec") or {}).get("name")
    if kernel != "python3":
        problems.append(f"kernelspec is {kernel!r}; set it to python3 (Kernel > Change kernel > Python 3), "
                        "the kernel nbval and the book build use")
    problems += _colab_problems(nb, colab_source)
    problems += _title_problems(nb, chapter)
    problems += _plumbing_problems(nb)
    if not any(cell.cell_type == "code" and C.PARAMETERS_TAG in C.tags(cell) and MODEL_LINE.search(C.source(cell))
               for cell in nb.cells):
        problems.append(f"no code cell tagged '{C.PARAMETERS_TAG}' that sets MODEL; add one with MODEL = \"course\"")
    problems += _output_problems(nb)
    problems += _exercise_problems(nb, chapter)
    return problems


def _format_problems(nb: nbformat.NotebookNode, path: Path) -> list[str]:
    try:
        problems = [f"not formatted as `ruff format` writes it; run `python -m utils.notebooks format {path}`"
                    ] if ruff_format([path], check=True) else []
    except C.NotebookError as error:  # a cell that is not Python
        problems = [str(error)]
    return problems + [f"{line}; wrap the comment, docstring or string by hand (ruff leaves them): "
                       f"{line.text.strip()[:60]!r}" for line in long_lines(nb)]


def _colab_problems(nb: nbformat.NotebookNode, colab_source: str) -> list[str]:
    first = nb.cells[0] if nb.cells else None
    if first is None or first.cell_type != "code" or C.COLAB_TAG not in C.tags(first):
        return [f"cell 0: the first cell must be the code cell tagged '{C.COLAB_TAG}'; run `python -m utils.notebooks sync`"]
    if C.source(first) != colab_source:
        return [f"cell 0: the '{C.COLAB_TAG}' cell is out of date with pyproject.toml; run `python -m utils.notebooks sync`"]
    if C.HIDDEN_TAG not in C.tags(first):
        return [f"cell 0: the '{C.COLAB_TAG}' cell lacks the tag '{C.HIDDEN_TAG}' (the website would show it); "
                "run `python -m utils.notebooks sync`"]
    return []


def _title_problems(nb: nbformat.NotebookNode, chapter: str) -> list[str]:
    number = int(chapter[:2]) if chapter[:2].isdigit() else None
    title = C.notebook_title(nb.cells)
    if title is None or title["role"] != "Solution" or int(title["number"]) != number:
        index = C.title_cell(nb.cells)
        first_line = "" if index is None else C.source(nb.cells[index]).partition("\n")[0]
        found = "no markdown cell" if index is None else f"cell {index} starts {first_line!r}"
        return [f"the title must be '# Solution {number} · Topic' (the topic of the chapter page), but {found}"]
    return []


#: A cell that records the numbers the chapter page quotes (utils.results) is the book's plumbing.
RECORDS_RESULTS = re.compile(r"\bresults\.record(?:_table)?\(")


def _plumbing_problems(nb: nbformat.NotebookNode) -> list[str]:
    """A cell recording the book's numbers must be hidden on the site and left out of the lab."""
    wanted = {C.SOLUTION_ONLY_TAG, C.HIDDEN_TAG}
    return [f"cell {index}: records the book's numbers (results.record) but is not tagged "
            f"{' and '.join(repr(tag) for tag in sorted(wanted - set(C.tags(cell))))}: the site and the lab would show it"
            for index, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and RECORDS_RESULTS.search(C.source(cell)) and not wanted <= set(C.tags(cell))]


def _output_problems(nb: nbformat.NotebookNode) -> list[str]:
    problems = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        checked = C.is_check_output_cell(cell)
        if checked and C.source(cell).splitlines()[0].strip() != C.NBVAL_CHECK:
            problems.append(f"cell {index}: '{C.NBVAL_CHECK}' must be the cell's first line")
        if cell.get("outputs") and not checked:
            problems.append(f"cell {index}: has stored outputs but is not a '{C.NBVAL_CHECK}' cell; run "
                            "`python -m utils.notebooks store-outputs <notebook>` (it keeps outputs only where nbval compares them)")
        if checked and cell.get("outputs") and cell.get("execution_count") is None:
            problems.append(f"cell {index}: a '{C.NBVAL_CHECK}' cell with outputs but no execution count (nbval "
                            "would fail: 'Unrun reference cell has outputs'); run "
                            "`python -m utils.notebooks store-outputs <notebook>`")
        if checked and not cell.get("outputs"):
            problems.append(f"cell {index}: a '{C.NBVAL_CHECK}' cell without stored outputs (nbval would fail); run "
                            "`python -m utils.notebooks store-outputs <notebook>`")
    return problems


def _exercise_problems(nb: nbformat.NotebookNode, chapter: str) -> list[str]:
    problems = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        exercise_lines = {h.text for h in C.markdown_headings(C.source(cell)) if h.exercise}
        for line in C.source(cell).splitlines():
            if LOOKS_LIKE_EXERCISE.match(line) and line.strip() not in exercise_lines:
                problems.append(f"cell {index}: heading {line.strip()!r} is not an exercise heading the tools "
                                "recognise; write '### Exercise N.M: title'")
    headings = C.exercise_headings(nb.cells)
    scopes = C.exercise_scopes(nb.cells)
    try:
        number = int(chapter[:2])
    except ValueError:
        number = None
    for position, (index, heading) in enumerate(headings, start=1):
        expected = f"{number}.{position}" if number is not None else None
        if expected and heading.exercise != expected:
            problems.append(f"cell {index}: exercise {heading.exercise} should be numbered {expected} "
                            f"(chapter {number}, exercise {position} of the notebook)")
        members = [i for i, scope in enumerate(scopes) if scope == heading.exercise and i >= index]
        problems += [f"cell {index}: Exercise {heading.exercise}: {problem}"
                     for problem in _one_exercise_problems(nb, members)]
    return problems


def _one_exercise_problems(nb: nbformat.NotebookNode, members: list[int]) -> list[str]:
    cells = [nb.cells[i] for i in members]
    markdown = "\n".join(C.source(cell) for cell in cells if cell.cell_type == "markdown")
    problems = []
    if not META_LINE.search(markdown):
        problems.append("no line stating difficulty, importance and time, e.g. "
                        "'Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · About 10 minutes'")
    if not HINT.search(markdown):
        problems.append("no hint; add '<details><summary>Hint 1</summary>...</details>'")
    code_solution = any(cell.cell_type == "code" and (C.SOLUTION_TAG in C.tags(cell) or _has_markers(cell))
                        for cell in cells)
    text_solution = any(cell.cell_type == "markdown" and C.SOLUTION_TAG in C.tags(cell) for cell in cells)
    if not code_solution and not text_solution:
        problems.append("no solution: mark it with '# BEGIN SOLUTION' / '# END SOLUTION' lines, or tag the "
                        f"solution cell '{C.SOLUTION_TAG}'")
    if code_solution and not any(C.calls_checker(cell) for cell in cells):
        problems.append("no checker call (a cell calling check_...(...)) after the exercise's code")
    return problems


def _has_markers(cell: Any) -> bool:
    return any(C.MARKER.match(line) for line in C.source(cell).splitlines())


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)
