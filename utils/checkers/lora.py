"""Checkers for the exercises of chapter 2 (LoRA), kept apart from the library code they check.

Each ``check_<exercise>(learner_fn, ...)`` runs the learner's function and the library's reference
on inputs chosen so that every plausible mistake shows (see ``utils.checks``), and prints one line.
``tests/test_mutation.py`` and ``tests/test_wrong_answers.py`` prove that each rejects wrong answers.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from transformers.pytorch_utils import Conv1D

from utils.checks import Case, CheckResult, Varies, check_function
from utils.finetune import response_labels
from utils.lora import LinearLayer, lora_forward, merged_weight, slerp


# ---------------------------------------------------------------------------------------------
# Exercises on utils.finetune


def check_response_labels(learner_fn: Callable) -> CheckResult:
    """Exercise 2.1 on hand-made rows: right padding, a one-token response, a batch of one."""
    def case(name: str, rows: list[list[int]], prompt_lengths: list[int]) -> Case:
        width = max(map(len, rows))
        input_ids = torch.tensor([row + [0] * (width - len(row)) for row in rows])
        attention_mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
        return Case(name, input_ids, torch.tensor(prompt_lengths), attention_mask)

    cases = [case("two rows, the second padded on the right", [[0, 5, 6, 7, 8, 9, 0], [0, 5, 6, 9, 0]], [4, 3]),
             case("a batch of one, no padding", [[0, 11, 12, 13, 14, 0]], [3]),
             case("a one-token response (then EOS)", [[0, 5, 6, 7, 9, 0], [0, 5, 6, 9, 9, 9, 9, 0]], [4, 3])]
    return check_function(
        learner_fn, response_labels, cases, exercise="2.1 (response_labels)",
        hint="keep input_ids where the position is >= the row's prompt length and the attention mask is 1, put "
             "-100 everywhere else; do not shift the labels yourself: transformers compares the logits at "
             "position i with labels[:, i + 1]")


# ---------------------------------------------------------------------------------------------
# Exercises on utils.lora


def _random_layer(kind: str, d_in: int, d_out: int, seed: int) -> LinearLayer:
    """A frozen ``nn.Linear`` or ``Conv1D`` with seeded random weights and a non-zero bias."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):                            # layer init must not touch the notebook's RNG
        layer = nn.Linear(d_in, d_out) if kind == "linear" else Conv1D(d_out, d_in)   # Conv1D(nf=d_out, nx=d_in)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) / math.sqrt(d_in))
        layer.bias.copy_(torch.randn(d_out, generator=generator))
    return layer.requires_grad_(False)


def _lora_case(name: str, kind: str, d_in: int, d_out: int, r: int, scaling: float, seed: int,
               x_shape: tuple[int, ...] | None = None) -> Case:
    """A case ``(layer, [x,] lora_A, lora_B, scaling)``; ``B`` is random (zeros would hide every bug)."""
    generator = torch.Generator().manual_seed(seed + 1000)
    layer = _random_layer(kind, d_in, d_out, seed)
    lora_A = torch.randn(r, d_in, generator=generator) / math.sqrt(d_in)
    lora_B = torch.randn(d_out, r, generator=generator)
    if x_shape is None:
        return Case(name, layer, lora_A, lora_B, scaling)
    x = torch.randn(*x_shape, d_in, generator=generator)
    return Case(name, layer, x, lora_A, lora_B, scaling)


def _on_copies_of_the_layer(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` called on a deep copy of its first argument (the layer), so a function that changes the
    layer in place cannot change the next call's input. Non-callables are passed on for check_function to report."""
    if not callable(fn):
        return fn

    @functools.wraps(fn)
    def on_a_copy(layer: nn.Module, *args: Any) -> Any:
        return fn(copy.deepcopy(layer), *args)

    return on_a_copy


def check_lora_forward(learner_fn: Callable) -> CheckResult:
    """Exercise 2.2 on ``nn.Linear`` and GPT-2 ``Conv1D`` layers (square and not), several batch shapes."""
    cases = [
        _lora_case("nn.Linear 16 -> 24, batch of 2 x 5 positions", "linear", 16, 24, r=4, scaling=4.0, seed=0,
                   x_shape=(2, 5)),
        _lora_case("square Conv1D 16 -> 16 (like GPT-2's attn.c_proj)", "conv1d", 16, 16, r=4, scaling=2.0, seed=1,
                   x_shape=(2, 5)),
        _lora_case("Conv1D 16 -> 48 (like GPT-2's attn.c_attn, 128 -> 384)", "conv1d", 16, 48, r=8, scaling=2.0,
                   seed=2, x_shape=(3, 4)),
        _lora_case("batch of 1, one position, Conv1D 16 -> 48", "conv1d", 16, 48, r=2, scaling=0.5, seed=3,
                   x_shape=(1, 1)),
        _lora_case("rank 1, nn.Linear 24 -> 8, input [6, 24] (no batch dimension)", "linear", 24, 8, r=1,
                   scaling=16.0, seed=4, x_shape=(6,)),
    ]
    return check_function(
        _on_copies_of_the_layer(learner_fn), _on_copies_of_the_layer(lora_forward), cases,
        properties=[Varies("scaling", lambda scaling: 2 * scaling, "ignores the scaling")],
        exercise="2.2 (lora_forward)",
        hint="call the frozen layer itself rather than using its weight (GPT-2's Conv1D stores W as [d_in, d_out] "
             "and computes x @ W + b), and add the update: down to r with A [r, d_in] first, up to d_out with "
             "B [d_out, r] second (both transposed, x being a row vector), times scaling")


def check_merged_weight(learner_fn: Callable) -> CheckResult:
    """Exercise 2.3 on ``nn.Linear`` and GPT-2 ``Conv1D`` layers: a non-square ``Conv1D`` (only the right
    layout has the right shape) and a square one (the shapes agree, only the values tell)."""
    cases = [
        _lora_case("nn.Linear 16 -> 24", "linear", 16, 24, r=4, scaling=4.0, seed=10),
        _lora_case("Conv1D 16 -> 48 (like GPT-2's attn.c_attn, 128 -> 384)", "conv1d", 16, 48, r=8, scaling=2.0,
                   seed=11),
        _lora_case("square Conv1D 16 -> 16 (like GPT-2's attn.c_proj)", "conv1d", 16, 16, r=4, scaling=2.0, seed=12),
        _lora_case("square nn.Linear 12 -> 12", "linear", 12, 12, r=3, scaling=0.5, seed=13),
        _lora_case("rank 1, Conv1D 24 -> 8 (like GPT-2's mlp.c_proj)", "conv1d", 24, 8, r=1, scaling=16.0, seed=14),
    ]
    return check_function(
        _on_copies_of_the_layer(learner_fn), _on_copies_of_the_layer(merged_weight), cases,
        properties=[Varies("scaling", lambda scaling: 2 * scaling, "ignores the scaling")],
        exercise="2.3 (merged_weight)",
        hint="ΔW = scaling * lora_B @ lora_A is [d_out, d_in], nn.Linear's layout; GPT-2's Conv1D stores its "
             "weight as [d_in, d_out], so add ΔW.T there. Decide with isinstance(layer, Conv1D), not by comparing "
             "shapes: a square layer has the same shape both ways. The bias does not change")


def _unit(*values: float) -> Tensor:
    vector = torch.tensor(values)
    return vector / vector.norm()


def check_slerp(learner_fn: Callable) -> CheckResult:
    """Exercise 2.4 on orthogonal, oblique, parallel, opposite and 2-D inputs, at several ``t``."""
    generator = torch.Generator().manual_seed(0)
    cos60, sin60 = 0.5, math.sqrt(3) / 2
    a_2d, b_2d = torch.randn(6, 4, generator=generator), 3 * torch.randn(6, 4, generator=generator)
    cases = [
        Case("orthogonal unit vectors, t = 0.5", torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), 0.5),
        Case("norms 2 and 5 at 60 degrees, t = 0.3", 2 * torch.tensor([1.0, 0.0, 0.0]),
             5 * torch.tensor([cos60, sin60, 0.0]), 0.3),
        Case("2-D task vectors [6, 4] (flatten them), t = 0.25", a_2d, b_2d, 0.25),
        Case("t = 0 gives a", 2 * _unit(1.0, 2.0, -1.0), _unit(0.0, 1.0, 3.0), 0.0),
        Case("t = 1 gives b", 2 * _unit(1.0, 2.0, -1.0), _unit(0.0, 1.0, 3.0), 1.0),
        Case("parallel vectors (norms 1 and 3): fall back to linear interpolation", _unit(1.0, 2.0, 2.0),
             3 * _unit(1.0, 2.0, 2.0), 0.4),
        Case("opposite vectors (cos θ = -1, sin θ = 0): fall back to linear interpolation", _unit(1.0, 2.0, 2.0),
             -2 * _unit(1.0, 2.0, 2.0), 0.3),
    ]
    return check_function(
        learner_fn, slerp, cases, exercise="2.4 (slerp)",
        properties=[Varies("t", lambda t: (t + 0.5) % 1, "ignores t")],
        hint="flatten a and b, take the angle θ = arccos(â · b̂) between the UNIT vectors â = a/|a| and "
             "b̂ = b/|b|, weight â by sin((1 - t) θ) / sin θ and b̂ by sin(t θ) / sin θ (t = 0 must give a), "
             "multiply by the interpolated norm (1 - t)|a| + t|b|, reshape back; when |cos θ| > 0.9995 return "
             "(1 - t) a + t b")
