"""Mutation testing of every exercise's checker: per exercise, the mutants of its reference solution
(``utils.mutation``), how many the checker rejects, how many are listed as equivalent
(``tests/mutation_equivalents.json``), the ones it lets through, the hand-written wrong answers it
rejects and correct answers in other styles it accepts (``tests/wrong_answers.py``), and the
seconds it took; then the same per chapter.

    .venv/bin/python benchmarks/mutation_report.py              # every exercise
    .venv/bin/python benchmarks/mutation_report.py 0 1.4         # a chapter, or single exercises
    .venv/bin/python benchmarks/mutation_report.py --json mutation.json

Nothing is asserted here: ``tests/test_mutation.py`` fails when a mutation-tested checker lets a
non-equivalent mutant through.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from utils.exercises import EXERCISES, Exercise, ExerciseContext, solution
from utils.mutation import mutants, surviving

TESTS = Path(__file__).resolve().parent.parent / "tests"
EQUIVALENTS_FILE = TESTS / "mutation_equivalents.json"
sys.path.insert(0, str(TESTS))
from wrong_answers import RIGHT, WRONG  # noqa: E402  (tests/ holds the hand-written answers)


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
    with contextlib.redirect_stdout(io.StringIO()):
        wrong_rejected = sum(not exercise.check(fn, context) for fn in WRONG.get(exercise.id, ()))
        right_accepted = sum(bool(exercise.check(fn, context)) for fn in RIGHT.get(exercise.id, ()))
    return {"exercise": exercise.id, "function": exercise.function, "mutants": len(candidates),
            "killed": len(candidates) - len(alive), "equivalent": len(equivalent),
            "surviving": [name for name in alive if name not in equivalents],
            "wrong": len(WRONG.get(exercise.id, ())), "wrong_rejected": wrong_rejected,
            "right": len(RIGHT.get(exercise.id, ())), "right_accepted": right_accepted,
            "seconds": round(time.perf_counter() - start, 1)}


def kill_rate(rows: list[dict]) -> str:
    """Killed mutants over the non-equivalent ones."""
    non_equivalent = sum(r["mutants"] - r["equivalent"] for r in rows)
    return f"{sum(r['killed'] for r in rows) / non_equivalent:.0%}" if non_equivalent else "100%"


def print_chapters(rows: list[dict]) -> None:
    """The per-chapter table: exercises, mutants, killed, equivalent, surviving, hand-written answers."""
    chapters: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        chapters[row["exercise"].split(".")[0]].append(row)
    print("\n| chapter | exercises | mutants | killed | equivalent | surviving | kill rate | wrong answers rejected "
          "| other correct forms accepted |\n|---|---|---|---|---|---|---|---|---|")
    for chapter, group in [*chapters.items(), ("all", rows)]:
        total = lambda key: sum(r[key] if isinstance(r[key], int) else len(r[key]) for r in group)  # noqa: E731
        print(f"| {chapter} | {len(group)} | {total('mutants')} | {total('killed')} | {total('equivalent')} | "
              f"{total('surviving')} | {kill_rate(group)} | {total('wrong_rejected')}/{total('wrong')} | "
              f"{total('right_accepted')}/{total('right')} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exercises", nargs="*", help="exercise numbers or chapter numbers (default: all)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    listed = json.loads(EQUIVALENTS_FILE.read_text())
    context = ExerciseContext()
    rows = []
    print("| exercise | mutants | killed | equivalent | surviving | kill rate | wrong rejected | right accepted "
          "| seconds |\n|---|---|---|---|---|---|---|---|---|")
    for exercise in selected(args.exercises):
        row = report_row(exercise, context, listed.get(exercise.id, {}))
        rows.append(row)
        print(f"| {row['exercise']} {row['function']} | {row['mutants']} | {row['killed']} | {row['equivalent']} | "
              f"{len(row['surviving'])} | {kill_rate([row])} | {row['wrong_rejected']}/{row['wrong']} | "
              f"{row['right_accepted']}/{row['right']} | {row['seconds']} |", flush=True)
    print_chapters(rows)
    for row in rows:
        for name in row["surviving"]:
            print(f"surviving, {row['exercise']}: {name}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
