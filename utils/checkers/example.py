"""The worked example, chapter 99 (``tests/fixtures/notebooks``), which the tests of the notebook
pipeline and of grading use (a kernel runs it in seconds, without a model): its reference solutions,
as a chapter's library module has them, and its checkers."""

from __future__ import annotations

from typing import Any

import torch

from utils.checks import Case, CheckResult, check_function


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """The softmax of ``x`` along ``dim`` (same shape as ``x``)."""
    return torch.softmax(x, dim=dim)


def top_class(scores: torch.Tensor) -> int:
    """The index of the largest of ``scores`` (shape ``[n]``), as a Python int."""
    return int(scores.argmax())


def check_softmax(learner_fn: Any) -> CheckResult:
    """Exercise 99.1 on a row, a batch along dim 0, and logits too large for a naive exp."""
    generator = torch.Generator().manual_seed(0)
    cases = [
        Case("a row of 5", torch.randn(1, 5, generator=generator)),
        Case("3 x 4 along dim 0", torch.randn(3, 4, generator=generator), dim=0),
        Case("large logits", torch.tensor([[1000.0, 0.0, -1000.0]])),
    ]
    return check_function(learner_fn, softmax, cases, exercise="99.1 (softmax)",
                          hint="exponentiate x minus its maximum along dim, then divide by the sum along the same dim")


def check_top_class(learner_fn: Any) -> CheckResult:
    """Exercise 99.2: the index of the largest score, as a Python int."""
    cases = [Case("4 scores", torch.tensor([0.5, 2.0, -1.0, 1.5])), Case("the first is largest", torch.tensor([3.0, 1.0]))]
    return check_function(learner_fn, top_class, cases, exercise="99.2 (top_class)",
                          hint="torch.argmax gives a tensor; .item() or int() turns it into a Python int")
