"""Grade every chapter's complete, honest submission, optionally while the machine is busy.

The submission is the chapter's solution notebook (every exercise done), graded by ``python -m
utils.grade`` with its default limits (in the sandbox). ``--busy N`` runs N processes that keep a
core busy the whole time (a second job on the machine). Prints one row per chapter: the seconds,
the limits, how many exercises pass, and the notes. Nothing is asserted (see README.md).

    .venv/bin/python benchmarks/grading.py                # every chapter, idle machine
    .venv/bin/python benchmarks/grading.py --busy 1 05 07 # a busy machine, two chapters
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import subprocess
import sys
import time
from pathlib import Path

from utils import grade

ROOT = Path(__file__).resolve().parents[1]


def spin() -> None:
    while True:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", help="prefixes (00, 05); default: all")
    parser.add_argument("--busy", type=int, default=0, help="processes that keep a core busy meanwhile")
    parser.add_argument("--json", type=Path, help="also write the reports to this JSON file")
    args = parser.parse_args()

    solutions = sorted(p for p in (ROOT / "solutions").glob("[0-9][0-9]_*.ipynb")
                       if not args.chapters or any(p.name.startswith(c) for c in args.chapters))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    print(f"{platform.node()}: {multiprocessing.cpu_count()} CPUs, commit {commit}, {args.busy} busy process(es)")
    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.busy)]
    for spinner in spinners:
        spinner.start()
    reports = []
    try:
        for path in solutions:
            started = time.monotonic()
            report = grade.grade(path)
            reports.append(report.to_json())
            print(f"{path.stem:<24} {time.monotonic() - started:6.1f} s  {report.passed:>2}/{report.total:<2} pass  "
                  f"limits: {report.limits}", flush=True)
            for result in report.exercises:
                if result.status != grade.PASS:
                    print(f"    {result.id} {result.status}: {result.message[:200]}")
            for note in report.notes:
                print(f"    note: {note[:200]}")
    finally:
        for spinner in spinners:
            spinner.terminate()
    if args.json:
        args.json.write_text(json.dumps(reports, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
