"""Time the book build and measure the site it writes.

The working tree (the files git tracks or would track: no .venv, no _build) is copied into a
temporary folder and built there with this checkout's .venv, with the same flags as `make book`
(`jupyter-book build . --builder html -W -n --keep-going`) and the same offline kernel
environment, so the shared `_build/` is left alone. Three builds, in order:

- full: a clean build; every notebook of the table of contents is executed;
- cached: `_build/html` and `_build/.doctrees` removed, `_build/.jupyter_cache` kept: every page
  is read and written again, no notebook is executed (jupyter-cache has them all);
- no-op: the same command again with nothing changed (Sphinx's incremental build).

Then the size of `_build/html` (all files), of its largest HTML page, and the page count.
Nothing is asserted (see README.md).

    .venv/bin/python benchmarks/book_build.py
    .venv/bin/python benchmarks/book_build.py --json book_build.json --keep
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from utils.notebooks.execute import kernel_env

ROOT = Path(__file__).resolve().parents[1]
JUPYTER_BOOK = ROOT / ".venv" / "bin" / "jupyter-book"
BOOK_FLAGS = ["--builder", "html", "-W", "-n", "--keep-going"]  # as BOOK_FLAGS in the Makefile


@dataclass
class SiteSize:
    """The built site: total bytes, HTML page count, and its largest HTML page."""

    total_bytes: int
    pages: int
    largest_page: str
    largest_page_bytes: int


@dataclass
class Result:
    """One run of the benchmark: build seconds and the size of the site."""

    machine: str
    full_build_s: float
    cached_build_s: float
    noop_build_s: float
    site: SiteSize


def working_tree_files(root: Path) -> list[Path]:
    """The files `git` tracks, or would track (untracked but not ignored), relative to `root`."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=root, check=True, capture_output=True, text=True,
    ).stdout
    return sorted({Path(name) for name in listed.split("\0") if name and (root / name).is_file()})


def copy_tree(root: Path, target: Path) -> None:
    """Copy the working tree of `root` into `target` (which must not exist yet)."""
    for relative in working_tree_files(root):
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / relative, destination)


def timed_build(book: Path) -> float:
    """Build the book in `book` as `make book` does; return the wall-clock seconds."""
    # The copy's own `utils` first on the path, not the editable install of this checkout.
    env = kernel_env(PYTHONPATH=str(book), PYTHONHASHSEED="0")
    start = time.perf_counter()
    result = subprocess.run([str(JUPYTER_BOOK), "build", str(book), *BOOK_FLAGS], cwd=book, env=env,
                            capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"book build failed (exit {result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return seconds


def site_size(html: Path) -> SiteSize:
    """Measure the built site in `html`."""
    files = [path for path in html.rglob("*") if path.is_file()]
    pages = [path for path in files if path.suffix == ".html"]
    largest = max(pages, key=lambda path: path.stat().st_size)
    return SiteSize(
        total_bytes=sum(path.stat().st_size for path in files),
        pages=len(pages),
        largest_page=largest.relative_to(html).as_posix(),
        largest_page_bytes=largest.stat().st_size,
    )


def run(book: Path) -> Result:
    """The three builds of the module docstring, then the site's size."""
    full = timed_build(book)
    for folder in ("html", ".doctrees"):
        shutil.rmtree(book / "_build" / folder)
    cached = timed_build(book)
    noop = timed_build(book)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    return Result(machine, round(full, 1), round(cached, 1), round(noop, 1), site_size(book / "_build" / "html"))


def report(result: Result) -> str:
    """The result as a short table."""
    mib = 1024 * 1024
    site = result.site
    return "\n".join([
        f"machine: {result.machine}",
        f"full clean build      {result.full_build_s:8.1f} s",
        f"cached rebuild        {result.cached_build_s:8.1f} s   (html and doctrees removed, jupyter-cache kept)",
        f"no-change rebuild     {result.noop_build_s:8.1f} s",
        f"_build/html           {site.total_bytes / mib:8.1f} MiB, {site.pages} HTML pages",
        f"largest page          {site.largest_page_bytes / 1024:8.1f} KiB   ({site.largest_page})",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy and print its path")
    args = parser.parse_args()
    if not JUPYTER_BOOK.exists():
        sys.exit(f"{JUPYTER_BOOK} not found: run `make venv` first")
    workdir = Path(tempfile.mkdtemp(prefix="book_build_"))
    try:
        book = workdir / "book"
        copy_tree(ROOT, book)
        result = run(book)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2) + "\n")


if __name__ == "__main__":
    main()
