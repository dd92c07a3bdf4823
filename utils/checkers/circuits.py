"""Checkers for the exercises of chapter 7 (circuits), kept apart from the library code they check.

Each ``check_<exercise>(learner_fn, ...)`` runs the learner's function and the library's reference
on inputs chosen so that every plausible mistake shows (see ``utils.checks``), and prints one line.
``tests/test_mutation.py`` and ``tests/test_wrong_answers.py`` prove that each rejects wrong answers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from utils.checks import Case, CheckResult, Varies, check_function
from utils.patching import attribution, normalised_metric, replace_head


# ---------------------------------------------------------------------------------------------
# Exercises on utils.patching


def check_normalised_metric(learner_fn: Callable[[Tensor, float, float], Tensor]) -> CheckResult:
    """Exercise 7.1 on logit differences around a positive and a negative clean baseline."""
    values = torch.tensor([3.0, -1.0, 0.5, 2.0])
    cases = [Case("clean 3.0, corrupted -1.0", values, 3.0, -1.0),
             Case("clean 2.0, corrupted 0.5", values, 2.0, 0.5),
             Case("clean -2.0, corrupted 1.0 (the task's answer has a lower logit)", values, -2.0, 1.0)]
    return check_function(
        learner_fn, normalised_metric, cases, exercise="7.1 (normalised_metric)", atol=1e-6,
        properties=[Varies("clean", lambda clean: clean + 1, "ignores the clean run"),
                    Varies("corrupted", lambda corrupted: corrupted + 1, "ignores the corrupted run")],
        hint="subtract the corrupted baseline, then divide by (clean - corrupted): the corrupted run maps to 0 "
             "and the clean run to 1, whatever their signs")


def check_replace_head(learner_fn: Callable[[Tensor, Tensor, int], Tensor]) -> CheckResult:
    """Exercise 7.2 on random head outputs; the learner's function must not change its inputs."""
    generator = torch.Generator().manual_seed(1)
    cases = [Case(f"[2, 5, 4, 3] head outputs, head {head}", torch.randn(2, 5, 4, 3, generator=generator),
                  torch.randn(2, 5, 4, 3, generator=generator), head) for head in (1, 3)]
    return check_function(
        learner_fn, replace_head, cases, exercise="7.2 (replace_head)", atol=0,
        properties=[Varies("head", lambda head: head - 1, "patches another head")],
        in_place_advice={"z": "the corrupted z is the hook's input and belongs to the model; clone it and patch "
                              "the copy"},
        hint="z is [n, pos, head, d_head]: the head is the third dimension; clone z first, then replace that "
             "head's slice of the copy with the same slice of clean_z, at every position")


def check_attribution(learner_fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> CheckResult:
    """Exercise 7.3 on random head outputs and gradients."""
    generator = torch.Generator().manual_seed(0)

    def case(name: str, n: int, pos: int, heads: int, d_head: int) -> Case:
        return Case(name, *(torch.randn(n, pos, heads, d_head, generator=generator) for _ in range(3)))

    cases = [case("batch 3, 5 positions, 4 heads, d_head 6", 3, 5, 4, 6), case("batch 1, 2 positions, 2 heads", 1, 2, 2, 3)]
    return check_function(
        learner_fn, attribution, cases, exercise="7.3 (attribution)", atol=1e-4,
        hint="multiply (clean - corrupted) by the gradient elementwise, sum over d_head and over the batch (the "
             "gradient is of the batch's mean metric), and keep head and position, in that order: [head, pos]")
