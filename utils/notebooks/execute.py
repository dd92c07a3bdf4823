"""Run notebooks in a Jupyter kernel: ``store-outputs``, and the environment every run uses."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import nbformat

from utils.notebooks import cells as C

KERNEL_NAME = "python3"
#: nbval's sanitizer, relative to the checkout (see Makefile NBVAL_FLAGS).
SANITIZER = Path("tests") / "nbval_sanitize.cfg"
#: Output mime types whose text the sanitizer rewrites (as nbval does before comparing).
SANITIZED_MIME_TYPES = ("text/plain", "text/html", "text/markdown", "text/latex")

#: Nothing at build, test or grading time may reach a model hub; hash order is fixed (the same
#: variables as the Makefile exports, so nbval sees what store-outputs saw).
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "WANDB_MODE": "disabled",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONHASHSEED": "0",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    # These kernels have no ipywidgets on purpose (widgets need JavaScript the offline site cannot
    # load), so tqdm.auto, imported by transformers, warns on stderr that they are missing;
    # utils.progress draws text bars instead. Only that warning is silenced.
    "PYTHONWARNINGS": "ignore:IProgress not found",
}


def kernel_env(**extra: str) -> dict[str, str]:
    """The environment for a notebook's kernel: ours, plus the offline variables, plus ``extra``.

    ``COURSE_RESULTS`` (:mod:`utils.results`) is passed on only through ``extra``: grading and the
    tests' own runs neither write nor check the book's quoted numbers.
    """
    env = dict(os.environ)
    env.pop("PYTHONSTARTUP", None)
    env.pop("COURSE_RESULTS", None)
    env.update(OFFLINE_ENV)
    env.update(extra)
    return env


def execute_notebook(nb: nbformat.NotebookNode, cwd: Path, *, timeout: int | None = 600,
                     allow_errors: bool = False, env: dict[str, str] | None = None) -> nbformat.NotebookNode:
    """Execute ``nb`` in place in a fresh ``python3`` kernel started in ``cwd``; returns it.

    Raises ``nbclient.exceptions.CellExecutionError`` at the first failing cell unless ``allow_errors``.
    """
    from nbclient import NotebookClient

    client = NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=timeout, allow_errors=allow_errors,
                            record_timing=False, shutdown_kernel="immediate", coalesce_streams=True,
                            resources={"metadata": {"path": str(Path(cwd).resolve())}})
    client.execute(env=env or kernel_env(), cwd=str(Path(cwd).resolve()))
    return nb


def failing_cell(nb: nbformat.NotebookNode) -> tuple[int, dict[str, Any]] | None:
    """``(index, error output)`` of the first code cell with an error output, or None."""
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            if output.get("output_type") == "error":
                return index, output
    return None


def read_sanitizer(path: Path) -> list[tuple[str, str]]:
    """The (regex, replacement) pairs of an nbval sanitizer file, parsed the way nbval parses it."""
    if not Path(path).is_file():
        return []
    return re.findall(r"^regex: (.*)$\n^replace: (.*)$", Path(path).read_text(encoding="utf-8"), flags=re.MULTILINE)


def sanitized(outputs: list[Any], patterns: list[tuple[str, str]]) -> list[Any]:
    """A copy of ``outputs`` with the sanitizer applied to their text (stream text and text/* data)."""
    def clean(text: Any) -> Any:
        joined = "".join(text) if isinstance(text, list) else text
        if not isinstance(joined, str):
            return text
        for regex, replacement in patterns:
            joined = re.sub(regex, replacement, joined)
        return joined

    result = copy.deepcopy(outputs)
    for output in result:
        if output.get("output_type") == "stream":
            output["text"] = clean(output.get("text", ""))
        for mime in SANITIZED_MIME_TYPES:
            if mime in output.get("data", {}):
                output["data"][mime] = clean(output["data"][mime])
    return result


def store_outputs(path: Path, *, timeout: int | None = 600, sanitizer: Path | None = None) -> int:
    """Execute the notebook at ``path`` (kernel ``python3``, started in the notebook's own folder,
    as the book build and nbval run it) and keep outputs only on ``# NBVAL_CHECK_OUTPUT`` cells.

    Every other cell's outputs and execution count are cleared (a checked cell keeps its count:
    nbval refuses a cell with outputs and no count, "Unrun reference cell has outputs"; the
    counts are deterministic, 1, 2, ... in execution order); the notebook's metadata is left as
    it was. With ``sanitizer`` (nbval's file, ``tests/nbval_sanitize.cfg``), the stored text is
    sanitized the way nbval sanitizes before comparing (timings, progress bars, addresses...), so
    storing twice gives the same bytes. Returns the number of cells whose outputs were stored. Raises NotebookError
    naming the cell if a cell fails (the file is then left untouched).
    """
    from nbclient.exceptions import CellExecutionError

    path = Path(path)
    nb = C.read_notebook(path)
    patterns = read_sanitizer(sanitizer) if sanitizer else []
    run = copy.deepcopy(nb)
    try:
        execute_notebook(run, path.parent, timeout=timeout, env=kernel_env(COURSE_RESULTS="write"))
    except CellExecutionError as error:
        found = failing_cell(run)
        where = f"cell {found[0]}" if found else "a cell"
        detail = f"{found[1].get('ename')}: {found[1].get('evalue')}" if found else str(error).strip().splitlines()[-1]
        raise C.NotebookError(f"{path}: {where} failed ({detail}); outputs not stored. Fix it and run again") from None
    stored = 0
    for cell, done in zip(nb.cells, run.cells):
        if cell.get("cell_type") != "code":
            continue
        if C.is_check_output_cell(cell):
            cell["execution_count"] = done.get("execution_count")
            cell["outputs"] = sanitized(done.get("outputs", []), patterns)
            stored += 1
        else:
            cell["execution_count"] = None
            cell["outputs"] = []
    C.write_if_changed(path, C.notebook_bytes(nb))
    return stored
