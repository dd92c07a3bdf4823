"""Mutation testing of every exercise's checker: per exercise, the mutants of its reference solution
(``utils.mutation``), how many the checker rejects, how many are listed as equivalent
(``tests/mutation_equivalents.json``), the ones it lets through, and the seconds it took.

    .venv/bin/python benchmarks/mutation_report.py              # every exercise
    .venv/bin/python benchmarks/mutation_report.py 0 1.4         # a chapter, or single exercises
    .venv/bin/python benchmarks/mutation_report.py --json mutation.json

Nothing is asserted here: ``tests/test_mutation.py`` fails when a mutation-tested checker lets a
non-equivalent mutant through.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from utils.exercises import EXERCISES, Exercise, ExerciseContext, solution
from utils.mutation import mutants, surviving

EQUIVALENTS_FILE = Path(__file__).resolve().parent.parent / "tests" / "mutation_equivalents.json"


def selected(patterns: list[str]) -> list[Exercise]:
    """The exercises named by number ("1.4") or chapter ("1"), all of them without patterns."""
    if not patterns:
        return list(EXERCISES.values())
    return [e for e in EXERCISES.values() if any(e.id == p or e.id.split(".")[0] == p for p in patterns)]


def report_row(exercise: Exercise, context: ExerciseContext, equivalents: dict[str, str]) -> dict:
    """One exercise's mutants, killed, equivalent and surviving mutants, and seconds."""
    start = time.perf_counter()
    reference, source = solution(exercise)
    candidates = mutants(reference, source)
    alive = [m.name for m in surviving(lambda fn: exercise.check(fn, context), candidates)]
    equivalent = [name for name in alive if name in equivalents]
    return {"exercise": exercise.id, "function": exercise.function, "mutants": len(candidates),
            "killed": len(candidates) - len(alive), "equivalent": len(equivalent),
            "surviving": [name for name in alive if name not in equivalents],
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exercises", nargs="*", help="exercise numbers or chapter numbers (default: all)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    listed = json.loads(EQUIVALENTS_FILE.read_text())
    context = ExerciseContext()
    rows = []
    print("| exercise | mutants | killed | equivalent | surviving | kill rate | seconds |\n|---|---|---|---|---|---|---|")
    for exercise in selected(args.exercises):
        row = report_row(exercise, context, listed.get(exercise.id, {}))
        rows.append(row)
        non_equivalent = row["mutants"] - row["equivalent"]
        rate = row["killed"] / non_equivalent if non_equivalent else 1.0
        print(f"| {row['exercise']} {row['function']} | {row['mutants']} | {row['killed']} | {row['equivalent']} | "
              f"{len(row['surviving'])} | {rate:.0%} | {row['seconds']} |", flush=True)
    for row in rows:
        for name in row["surviving"]:
            print(f"surviving, {row['exercise']}: {name}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
