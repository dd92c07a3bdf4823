"""Every exercise's checker rejects three hand-written wrong answers and accepts a correct answer
in another style (``tests/wrong_answers.py``), beyond the mutants of ``tests/test_mutation.py``."""

from __future__ import annotations

import pytest
from wrong_answers import RIGHT, WRONG

from utils.checks import assert_accepts, assert_rejects
from utils.exercises import EXERCISES, ExerciseContext


@pytest.fixture(scope="module")
def context() -> ExerciseContext:
    return ExerciseContext()


def test_no_answer_is_defined_twice() -> None:
    """A second ``def`` of a name replaces the first silently: one exercise would test another's answer."""
    import ast
    from collections import Counter
    from pathlib import Path

    tree = ast.parse((Path(__file__).parent / "wrong_answers.py").read_text())
    counts = Counter(node.name for node in tree.body if isinstance(node, ast.FunctionDef))
    assert not [name for name, count in counts.items() if count > 1]


def test_every_exercise_has_three_wrong_answers_and_a_right_one_in_another_style() -> None:
    assert set(WRONG) == set(RIGHT) == set(EXERCISES)
    assert all(len(answers) >= 3 for answers in WRONG.values())
    assert all(RIGHT.values())


@pytest.mark.parametrize("exercise_id, wrong", [(e, fn) for e, fns in WRONG.items() for fn in fns],
                         ids=lambda value: getattr(value, "__name__", value))
def test_the_checker_rejects_a_hand_written_wrong_answer(exercise_id: str, wrong, context: ExerciseContext) -> None:
    assert_rejects(EXERCISES[exercise_id].check(wrong, context), match=".")


@pytest.mark.parametrize("exercise_id, right", [(e, fn) for e, fns in RIGHT.items() for fn in fns],
                         ids=lambda value: getattr(value, "__name__", value))
def test_the_checker_accepts_a_correct_answer_in_another_style(exercise_id: str, right, context: ExerciseContext) -> None:
    assert_accepts(EXERCISES[exercise_id].check(right, context))
