"""Checkers for the exercises of chapter 0 (the course model), kept apart from the library code they check.

Each ``check_<exercise>(learner_fn, ...)`` runs the learner's function and the library's reference
on inputs chosen so that every plausible mistake shows (see ``utils.checks``), and prints one line.
``tests/test_mutation.py`` and ``tests/test_wrong_answers.py`` prove that each rejects wrong answers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import PreTrainedModel

from utils.checks import Case, CheckResult, check_function
from utils.course_model.exercises import (
    final_residual_stream, logit_difference, logits_from_final_residual, per_token_loss,
)
from utils.models import tiny_random_model


# ---------------------------------------------------------------------------------------------
# Exercises on utils.course_model.exercises


def _random_logits(batch: int, pos: int, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(batch, pos, vocab, generator=generator)
    tokens = torch.randint(vocab, (batch, pos), generator=generator)
    return logits, tokens


def check_per_token_loss(learner_fn: Callable) -> CheckResult:
    """Exercise 0.1 on random logits: a batch of 3, a batch of 1, an odd length and two tokens."""
    cases = [Case(f"{name}: logits {tuple(logits.shape)}", logits, tokens) for name, (logits, tokens) in [
        ("batch of 3", _random_logits(3, 8, 50, seed=0)),
        ("batch of 1", _random_logits(1, 8, 50, seed=1)),
        ("odd length", _random_logits(2, 7, 11, seed=2)),
        ("two tokens", _random_logits(4, 2, 50, seed=3)),
    ]]
    return check_function(
        learner_fn, per_token_loss, cases, exercise="0.1 (per_token_loss)",
        hint="position i predicts token i + 1, so the output has one position fewer than the input; "
             "the loss is minus the log-probability (log_softmax over the vocabulary) of that next token")


def check_logit_difference(learner_fn: Callable) -> CheckResult:
    """Exercise 0.2 on random logits with several batch sizes and lengths."""
    def case(name: str, batch: int, pos: int, seed: int) -> Case:
        logits, _ = _random_logits(batch, pos, 40, seed)
        generator = torch.Generator().manual_seed(seed + 100)
        correct, wrong = torch.randint(40, (2, batch), generator=generator)
        return Case(f"{name}: logits {tuple(logits.shape)}", logits, correct, wrong)

    cases = [case("batch of 4", 4, 6, 0), case("batch of 1", 1, 5, 1), case("one position", 3, 1, 2),
             case("odd length", 2, 9, 3)]
    return check_function(
        learner_fn, logit_difference, cases, exercise="0.2 (logit_difference)",
        hint="use the logits at the last position only (the prediction after the whole prompt), "
             "pick each row's own correct and wrong token, and subtract wrong from correct")


def check_logits_from_final_residual(learner_fn: Callable, model: PreTrainedModel) -> CheckResult:
    """Exercise 0.3 on ``model`` and on tiny random GPT-NeoX (Pythia) and Llama models."""
    def case(name: str, checked_model: PreTrainedModel, batch: int, pos: int) -> Case:
        generator = torch.Generator().manual_seed(batch * 100 + pos)
        input_ids = torch.randint(checked_model.config.vocab_size, (batch, pos), generator=generator)
        return Case(name, checked_model, final_residual_stream(checked_model, input_ids))

    cases = [case("your model, batch of 2", model, 2, 6), case("your model, batch of 1", model, 1, 3),
             case("tiny random Pythia (GPT-NeoX)", tiny_random_model("gpt_neox"), 2, 5),
             case("tiny random Llama (RMSNorm)", tiny_random_model("llama"), 1, 4)]
    with torch.no_grad():
        return check_function(
            learner_fn, logits_from_final_residual, cases, exercise="0.3 (logits_from_final_residual)",
            atol=1e-4, rtol=1e-4,
            hint="apply the final norm (architecture.final_norm(model)) and then the unembedding "
                 "(architecture.unembedding(model)); use the helpers so the same code runs on every architecture")
