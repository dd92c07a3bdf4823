"""Checkers reject the mutants of their reference solutions (``utils.mutation``), except the
equivalent ones, listed with their reasons in ``tests/mutation_equivalents.json``.

The reference is the solution notebook's own function (``utils.exercises.solution``); every
exercise of the course is tested. ``benchmarks/mutation_report.py`` prints the counts per exercise.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from utils.exercises import EXERCISES, SOLUTIONS_DIR, ExerciseContext, solution
from utils.mutation import Mutant, mutants, surviving

EQUIVALENTS_FILE = Path(__file__).with_name("mutation_equivalents.json")


@pytest.fixture(scope="module")
def context() -> ExerciseContext:
    return ExerciseContext()


def _equivalents() -> dict[str, dict[str, str]]:
    return json.loads(EQUIVALENTS_FILE.read_text())


@pytest.mark.parametrize("exercise_id", EXERCISES)
def test_the_checker_rejects_every_mutant_that_is_not_equivalent(exercise_id: str, context: ExerciseContext) -> None:
    exercise = EXERCISES[exercise_id]
    reference, source = solution(exercise)
    candidates = mutants(reference, source)
    assert len(candidates) >= 3, f"{exercise_id}: only {len(candidates)} mutants"
    accepted = {m.name: m for m in surviving(lambda fn: exercise.check(fn, context), candidates)}
    listed = _equivalents().get(exercise_id, {})
    holes = [f"{name}:\n{accepted[name].source}" for name in accepted if name not in listed]
    assert not holes, f"{exercise_id}: the checker accepts {len(holes)} wrong answer(s):\n" + "\n\n".join(holes)
    stale = sorted(set(listed) - set(accepted))
    assert not stale, f"{exercise_id}: listed as equivalent but rejected now (remove from {EQUIVALENTS_FILE.name}): {stale}"


def test_the_reference_solutions_pass_their_checkers(context: ExerciseContext) -> None:
    for exercise_id in EXERCISES:
        exercise = EXERCISES[exercise_id]
        assert exercise.check(solution(exercise)[0], context), exercise_id


def test_every_exercise_of_every_solution_notebook_is_registered() -> None:
    headings = {match for notebook in sorted(SOLUTIONS_DIR.glob("*.ipynb"))
                for cell in json.loads(notebook.read_text())["cells"] if cell["cell_type"] == "markdown"
                for match in re.findall(r"^#+ Exercise (\d+\.\d+)", "".join(cell["source"]), re.M)}
    assert headings == set(EXERCISES)
    for exercise in EXERCISES.values():
        reference, _ = solution(exercise)
        assert reference.__name__ == exercise.function


def test_every_listed_equivalent_has_a_reason_and_a_tested_exercise() -> None:
    for exercise_id, listed in _equivalents().items():
        assert exercise_id in EXERCISES, exercise_id
        assert all(len(reason) > 20 for reason in listed.values()), exercise_id


def test_mutants_cover_the_mistakes_learners_make() -> None:
    reference, source = solution(EXERCISES["0.1"])
    names = [m.name for m in mutants(reference, source)]
    for kind in ("drop .log_softmax()", "constant 1 -> 0", "drop the slice's lower bound", "drop unary -",
                 "swap the first two arguments", "delete the statement"):
        assert any(name.startswith(kind) for name in names), kind

    def scaled(logits, temperature):
        try:
            out = logits / temperature
        finally:
            pass
        return out if temperature > 0 else None

    by_name: dict[str, Mutant] = {m.name.split(" in `")[0]: m for m in mutants(scaled)}
    assert "logits.div_(temperature)" in by_name["logits / ... in place (div_)"].source
    assert "finally" not in by_name["drop the finally block"].source
    assert scaled(1.0, 0.5) == 2.0 and by_name["> -> >="].function(1.0, 0.5) == 2.0 and ">=" in by_name["> -> >="].source


def test_a_checker_that_lets_a_mutant_through_is_caught() -> None:
    def mean_loss(losses):
        return losses.sum() / losses.numel()

    lenient = lambda fn: True  # noqa: E731  (accepts anything)
    assert len(surviving(lenient, mutants(mean_loss))) == len(mutants(mean_loss)) > 0
