"""``format``: the notebooks' code cells formatted by ``ruff format`` to the width of the site's code.

A code cell of the book shows ``CODE_LINE_LENGTH`` columns at a desktop width of 1280 px
(``book/_static/course.css`` sizes the code font for it, ``tests/test_site.py`` checks that no
cell scrolls sideways). ``ruff format`` wraps code, but not comments, docstrings or string
literals: ``long_lines`` finds those, and lint reports both.

The labs are generated already formatted (``labs.function_placeholder`` wraps as ruff does).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utils.notebooks import cells as C

#: Columns of a code cell on the site at 1280 px (and the line length of ``ruff format``).
CODE_LINE_LENGTH = 88
#: The oldest Python the course supports (pyproject's ``requires-python``): ruff writes no newer syntax.
TARGET_VERSION = "py310"


@dataclass(frozen=True)
class LongLine:
    """A line of a code cell longer than ``CODE_LINE_LENGTH``: cell index, line number (from 1), text."""

    cell: int
    line: int
    text: str

    def __str__(self) -> str:
        return f"cell {self.cell}, line {self.line}: {len(self.text)} columns (at most {CODE_LINE_LENGTH})"


def ruff_command(paths: list[Path], *, check: bool) -> list[str]:
    """The ``ruff format`` command line for ``paths`` (notebooks or folders of them).

    ``--isolated``: the course's settings only, whatever ruff configuration is around the files.
    """
    return [sys.executable, "-m", "ruff", "format", "--isolated", "--no-cache", "--quiet",
            f"--line-length={CODE_LINE_LENGTH}", f"--target-version={TARGET_VERSION}",
            *(["--check"] if check else []), *map(str, paths)]


def ruff_format(paths: list[Path], *, check: bool = False) -> list[Path]:
    """Format the code cells of the notebooks ``paths``; the notebooks that change (or, with
    ``check``, would change: nothing is written).

    Raises ``NotebookError`` when ruff is not installed or cannot parse a cell.
    """
    changed = [path for path in paths if _would_change(path)]
    if not check:
        for path in changed:
            _run_ruff(path, check=False)
    return changed


def _would_change(path: Path) -> bool:
    return _run_ruff(path, check=True).returncode == 1


def _run_ruff(path: Path, *, check: bool) -> subprocess.CompletedProcess[str]:
    """ruff on one notebook; its exit status 1 under ``--check`` means "would reformat"."""
    result = subprocess.run(ruff_command([path], check=check), capture_output=True, text=True)
    if result.returncode == 0 or (check and result.returncode == 1):
        return result
    message = result.stderr.strip() or result.stdout.strip()
    if "No module named ruff" in message:
        raise C.NotebookError("ruff is not installed: pip install -r requirements.txt (it pins ruff)")
    raise C.NotebookError(f"ruff format failed on {path}: {message}")


def long_lines(nb: Any) -> list[LongLine]:
    """Every line of ``nb``'s code cells longer than ``CODE_LINE_LENGTH`` (comments, docstrings and
    string literals, which ``ruff format`` leaves as they are: wrap them by hand)."""
    return [LongLine(index, number, line)
            for index, cell in enumerate(nb.cells) if cell.cell_type == "code"
            for number, line in enumerate(C.source(cell).splitlines(), start=1)
            if len(line) > CODE_LINE_LENGTH]
