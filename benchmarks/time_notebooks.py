"""Time every solution notebook: wall-clock seconds and the kernel's peak memory.

Each notebook runs top to bottom in a fresh `python3` kernel (nbclient), in its own folder,
offline (HF_HUB_OFFLINE=1 ...), exactly as nbval and the book build run it. Outputs are not
written back. Results are printed as a table; nothing here is asserted (see README.md).

    .venv/bin/python benchmarks/time_notebooks.py                    # all solutions/*.ipynb
    .venv/bin/python benchmarks/time_notebooks.py 00 03              # a subset, by prefix or path
    .venv/bin/python benchmarks/time_notebooks.py --json out.json    # also save the results
    .venv/bin/python benchmarks/time_notebooks.py --limits           # the grader's time limits (see below)
    .venv/bin/python benchmarks/time_notebooks.py --budget 90        # flag notebooks over 90 s
    .venv/bin/python benchmarks/time_notebooks.py --shape gpt2-small  # at the size of a real model
    .venv/bin/python benchmarks/time_notebooks.py --model path/to/checkpoint

``--shape`` writes a random checkpoint of a real model's shape (``utils.models.REAL_MODEL_SHAPES``:
GPT-2 small, Pythia-160M) with the course tokenizer to a temporary folder (with a tuned lens beside it,
as a real model's published one would be), and ``--model`` names a
checkpoint; either replaces the notebook's ``MODEL = "course"`` line, as a learner would. Every
cell is timed, and the slowest cell of each notebook is named. Peak memory is the largest resident
set size (RSS) of the kernel process and its children, sampled every 0.1 s.

``--limits`` (course model, all notebooks) writes ``utils/assets/solution_times.json``: each
chapter's solution time and slowest cell, with the machine and commit, from which ``python -m
utils.grade`` derives its default time limits (``utils.grade.time_limits``). ``--limits-from
out.json`` writes it from an earlier ``--json`` run instead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

from utils.notebooks.execute import kernel_env

ROOT = Path(__file__).resolve().parents[1]
SOLUTION_TIMES = ROOT / "utils" / "assets" / "solution_times.json"


class PeakRSS:
    """Samples the RSS of a process tree in a background thread."""

    def __init__(self, pid: int, interval: float = 0.1):
        import psutil

        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        total = 0
        try:
            for proc in [self.process, *self.process.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.peak = max(self.peak, self._sample())
        self._stop.set()
        self._thread.join()


MODEL_LINE = re.compile(r"^MODEL = .*$", re.M)


def with_model(nb, model: str) -> None:
    """Point the notebook's ``MODEL = ...`` line at ``model`` (a checkpoint name or folder)."""
    for cell in nb.cells:
        if cell.cell_type == "code" and MODEL_LINE.search(cell.source):
            cell.source = MODEL_LINE.sub(f"MODEL = {model!r}", cell.source, count=1)
            return
    raise ValueError("the notebook has no `MODEL = ...` line to point at another model")


def time_notebook(path: Path, timeout: int, model: str | None = None) -> dict:
    """Run one notebook (on ``model`` when given); its seconds, peak RSS, per-cell seconds and error."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    if model is not None:
        with_model(nb, model)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    result = {"notebook": os.path.relpath(path, ROOT), "seconds": None, "peak_rss_mb": None, "error": None,
              "cells": []}
    start = time.perf_counter()
    with client.setup_kernel(env=kernel_env()):
        pid = client.km.provisioner.process.pid  # the kernel process
        with PeakRSS(pid) as rss:
            try:
                for index, cell in enumerate(nb.cells):
                    cell_start = time.perf_counter()
                    client.execute_cell(cell, index)
                    if cell.cell_type == "code":
                        first_line = next((line for line in cell.source.splitlines() if line.strip()), "")
                        result["cells"].append({"index": index, "seconds": round(time.perf_counter() - cell_start, 1),
                                                "first_line": first_line[:60]})
            except Exception as error:  # report and go on with the next notebook
                result["error"] = f"{type(error).__name__}: {str(error).strip().splitlines()[-1][:200] if str(error).strip() else ''}"
        result["seconds"] = round(time.perf_counter() - start, 1)
        result["peak_rss_mb"] = round(rss.peak / 2**20)
    return result


def checkpoint_of_shape(shape: str, directory: Path) -> Path:
    """A random checkpoint of ``shape`` with an (identity) tuned lens saved beside it, in ``tuned_lens/``: it stands
    in for the lens the tuned-lens project publishes for the real GPT-2, which chapter 4 loads instead of training."""
    from utils.models import load_model, random_checkpoint_of_shape
    from utils.tuned_lens import TunedLens, save_published_tuned_lens

    checkpoint = random_checkpoint_of_shape(shape, directory)
    save_published_tuned_lens(TunedLens.for_model(load_model(checkpoint)), checkpoint / "tuned_lens", base_model=shape)
    return checkpoint


def slowest_cell(row: dict) -> str:
    """``"cell 12, 41.3 s: patch_head_positions(...)"`` for the notebook's slowest code cell."""
    if not row["cells"]:
        return ""
    cell = max(row["cells"], key=lambda c: c["seconds"])
    return f"cell {cell['index']}, {cell['seconds']} s: {cell['first_line']}"


def select(patterns: list[str]) -> list[Path]:
    notebooks = sorted((ROOT / "solutions").glob("*.ipynb"))
    if not patterns:
        return notebooks
    chosen = []
    for pattern in patterns:
        path = Path(pattern)
        if path.suffix == ".ipynb" and path.exists():
            chosen.append(path.resolve())
            continue
        found = [nb for nb in notebooks if nb.name.startswith(pattern) or pattern in nb.stem]
        if not found:
            sys.exit(f"error: no solution notebook matches {pattern!r} (have: {', '.join(nb.name for nb in notebooks) or 'none'})")
        chosen.extend(found)
    return list(dict.fromkeys(chosen))


def solution_times(rows: list[dict], cpus: int) -> dict:
    """The grader's measured times (``utils/assets/solution_times.json``) from course-model rows."""
    import subprocess

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    chapters = {Path(row["notebook"]).stem: {"seconds": row["seconds"],
                                              "slowest_cell": max(cell["seconds"] for cell in row["cells"])}
                for row in rows if not row["error"]}
    return {"measured": {"machine": f"{platform.node()}, {cpus} CPUs", "commit": commit,
                         "by": "benchmarks/time_notebooks.py --limits", "model": "course"}, "chapters": chapters}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="prefixes (00, 03_caching) or paths; default: all")
    parser.add_argument("--timeout", type=int, default=600, help="per-cell timeout in seconds")
    parser.add_argument("--budget", type=float, default=90.0, help="mark notebooks slower than this (s)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--model", help="run the notebooks on this checkpoint (name or folder) instead of the course model")
    target.add_argument("--shape", help="run them on a random checkpoint of this real model's shape: "
                                        "gpt2-small or pythia-160m")
    parser.add_argument("--limits", action="store_true", help=f"write {SOLUTION_TIMES.relative_to(ROOT)} (course model)")
    parser.add_argument("--limits-from", type=Path, help="write it from this earlier --json file instead of a run")
    args = parser.parse_args()

    if args.limits_from:
        saved = json.loads(args.limits_from.read_text())
        SOLUTION_TIMES.write_text(json.dumps(solution_times(saved["results"], saved["cpus"]), indent=1) + "\n")
        return 0
    notebooks = select(args.notebooks)
    if not notebooks:
        print("no solutions/*.ipynb to time")
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if args.shape:
            model = str(checkpoint_of_shape(args.shape, Path(scratch) / args.shape))
        print(f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
              f"model {args.shape or args.model or 'course'}")
        rows = []
        header = f"{'notebook':<42} {'seconds':>8} {'peak RSS MB':>12}  slowest cell  note"
        print(header)
        print("-" * len(header))
        for path in notebooks:
            row = time_notebook(path, args.timeout, model)
            note = row["error"] or ("over budget" if row["seconds"] > args.budget else "")
            print(f"{row['notebook']:<42} {row['seconds']:>8.1f} {row['peak_rss_mb']:>12}  {slowest_cell(row)}  {note}",
                  flush=True)
            rows.append(row)
    if args.json:
        args.json.write_text(json.dumps({"cpus": os.cpu_count(), "model": args.shape or args.model or "course",
                                         "results": rows}, indent=2) + "\n")
    if args.limits and not (args.model or args.shape):
        SOLUTION_TIMES.write_text(json.dumps(solution_times(rows, os.cpu_count() or 0), indent=1) + "\n")
    return 1 if any(row["error"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
