"""``sync``: rewrite the ``colab-install`` cell of every solution notebook from ``pyproject.toml``."""

from __future__ import annotations

from pathlib import Path

import nbformat

from utils.notebooks import cells as C
from utils.notebooks.labs import solution_notebooks
from utils.notebooks.project import SOLUTIONS_DIR, colab_install_source, project_info

COLAB_CELL_ID = "colab-install"


def sync_notebook(nb: nbformat.NotebookNode, colab_source: str) -> str | None:
    """Make the notebook's first cell the up-to-date ``colab-install`` cell, tagged also
    ``remove-cell`` so that the website does not show it (the notebooks keep it).

    Returns what changed ("updated" or "inserted"), or None when it already was. Raises
    NotebookError when a ``colab-install`` cell exists but is not the first cell.
    """
    tagged = [index for index, cell in enumerate(nb.cells) if C.COLAB_TAG in C.tags(cell)]
    if tagged and tagged != [0]:
        raise C.NotebookError(f"cell {tagged[-1] if tagged[0] == 0 else tagged[0]} is tagged '{C.COLAB_TAG}': "
                              "only the first cell may be; move it to the top (or remove the tag)")
    if tagged:
        cell = nb.cells[0]
        if cell.cell_type == "code" and C.source(cell) == colab_source and C.HIDDEN_TAG in C.tags(cell):
            return None
        metadata = dict(cell.get("metadata", {}))
        metadata["tags"] = [*C.tags(cell), *([] if C.HIDDEN_TAG in C.tags(cell) else [C.HIDDEN_TAG])]
        new = nbformat.v4.new_code_cell(colab_source, metadata=metadata)
        new["id"] = cell.get("id") or COLAB_CELL_ID
        nb.cells[0] = new
        return "updated"
    new = nbformat.v4.new_code_cell(colab_source, metadata={"tags": [C.COLAB_TAG, C.HIDDEN_TAG]})
    existing = {cell.get("id") for cell in nb.cells}
    new["id"] = COLAB_CELL_ID if COLAB_CELL_ID not in existing else COLAB_CELL_ID + "-cell"
    nb.cells.insert(0, new)
    if nb.get("nbformat_minor", 5) < 5:
        nb.nbformat_minor = 5
    return "inserted"


def sync_solutions(root: Path, solutions_dir: Path | None = None, *, check: bool = False) -> list[tuple[Path, str]]:
    """Sync every solution notebook (``check``: only report); returns ``(path, what changed)`` pairs."""
    colab_source = colab_install_source(project_info(Path(root)))
    changed = []
    for path in solution_notebooks(Path(solutions_dir or Path(root) / SOLUTIONS_DIR)):
        nb = C.read_notebook(path)
        try:
            what = sync_notebook(nb, colab_source)
        except C.NotebookError as error:
            raise C.NotebookError(f"{path}: {error}") from None
        if what:
            changed.append((path, what))
            if not check:
                C.write_if_changed(path, C.notebook_bytes(nb))
    return changed
