"""Checkers for the exercises of chapter 5 (steering with CAA), kept apart from the library code they check.

Each ``check_<exercise>(learner_fn, ...)`` runs the learner's function and the library's reference
on inputs chosen so that every plausible mistake shows (see ``utils.checks``), and prints one line.
``tests/test_mutation.py`` and ``tests/test_wrong_answers.py`` prove that each rejects wrong answers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from utils import architecture
from utils.checks import Case, CheckResult, HasCase, Varies, check_function
from utils.directions import project_out
from utils.steering import add_steering, caa_vector, contrastive_pairs


# ---------------------------------------------------------------------------------------------
# Exercises on utils.steering


def check_caa_vector(learner_fn: Callable[..., Tensor], model: PreTrainedModel,
                     tokenizer: PreTrainedTokenizerBase) -> CheckResult:
    """Exercise 5.1 on the course model (two layers, two behaviours)."""
    positive, wedding = contrastive_pairs("positive", 8, seed=5), contrastive_pairs("wedding", 6, seed=6)
    last = architecture.n_layers(model) - 1
    cases = [Case("8 'positive' pairs, layer 0", model, tokenizer, positive, 0),
             Case(f"6 'wedding' pairs, layer {last}", model, tokenizer, wedding, last)]
    return check_function(
        learner_fn, caa_vector, cases, exercise="5.1 (caa_vector)", atol=1e-4,
        properties=[Varies("layer", lambda layer: layer + 1, "reads another layer")],
        hint="last_token_activations(model, tokenizer, texts, [layer])[0] gives [n, d_model] at each text's last "
             "token (the answer letter); average the matching texts (pair.matching_text) and the non-matching "
             "ones over the pairs, and return matching minus non-matching, not normalised")


def check_add_steering(learner_fn: Callable[[Tensor, Tensor, float], Tensor]) -> CheckResult:
    """Exercise 5.2 on a prompt pass (several positions) and on generation steps (one position)."""
    generator = torch.Generator().manual_seed(0)
    vector = torch.randn(16, generator=generator)

    def case(name: str, batch: int, pos: int, alpha: float) -> Case:
        return Case(name, torch.randn(batch, pos, 16, generator=generator), vector, alpha)

    cases = [case("a prompt pass: batch 2, 7 positions, alpha 4", 2, 7, 4.0),
             case("a generation step: batch 2, 1 position, alpha 4", 2, 1, 4.0),
             case("a prompt pass with alpha -2.5", 1, 3, -2.5)]
    return check_function(
        learner_fn, add_steering, cases, exercise="5.2 (add_steering)", atol=1e-5,
        properties=[Varies("alpha", lambda alpha: 2 * alpha, "ignores alpha"),
                    HasCase("a generation step (one position)", lambda case: case.args[0].shape[1] == 1)],
        in_place_advice={"residual": "the hook's input is the model's own tensor; clone it first and return the copy"},
        hint="a prompt pass has pos > 1: add alpha * vector at the last position only (residual[:, -1]); a "
             "generation step has pos == 1: add it there; work on a copy of the residual, never in place")


# ---------------------------------------------------------------------------------------------
# Exercises on utils.directions


def check_project_out(learner_fn: Callable[[Tensor, Tensor], Tensor]) -> CheckResult:
    """Exercise 5.3 on a batch of residuals and directions of norm 1, 3.5 and 0.2."""
    generator = torch.Generator().manual_seed(0)
    residual = torch.randn(2, 5, 8, generator=generator) * 4
    cases = [Case(f"[2, 5, 8] residuals, a direction of norm {norm}", residual, direction * norm)
             for norm in (1.0, 3.5, 0.2)
             for direction in [F.normalize(torch.randn(8, generator=generator), dim=0)]]
    return check_function(
        learner_fn, project_out, cases, exercise="5.3 (project_out)", atol=1e-5,
        hint="make the direction a unit vector r first (it may have any norm); the component of x along r is "
             "(x · r) r, with the dot products given a trailing dimension to broadcast; subtract it from x (do not "
             "keep only it)")
