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
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedModel, PreTrainedTokenizerBase
from transformers.pytorch_utils import Conv1D

from utils.checks import Case, CheckResult, RaisingCase, Varies, check_function, float_losses
from utils.finetune import ChatBatch, block_linear_targets, chat_batch, corpus_loss, response_labels, training_step
from utils.lora import (
    LinearLayer, add_lora, load_lora_state_dict, lora_forward, lora_modules, lora_parameter_count, lora_state_dict,
    merge_task_vectors_linear, merged_weight, slerp, task_vector_cosine,
)
from utils.models import tiny_random_model
from utils.world.instructions import chat_dataset


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


def _twelve_layer_gpt2() -> PreTrainedModel:
    """A tiny random GPT-2 with 12 blocks: "1.mlp.c_fc" must match block 1, not block 11."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return GPT2LMHeadModel(GPT2Config(n_layer=12, n_head=2, n_embd=16, n_positions=32, vocab_size=64, bos_token_id=0,
                                         eos_token_id=0)).eval()


def _after_adding_lora(add: Callable) -> Callable:
    """Run ``add`` on a copy of the model (seed 3); return what it returned, the LoRA layers it made,
    the parameters that train (the values of each ``A``, drawn from the seeded generator in model
    order), and whether the logits are the model's (B = 0)."""
    def run(model: nn.Module, target_modules: list[str], r: int, alpha: float) -> tuple:
        adapted = copy.deepcopy(model)
        names = add(adapted, target_modules, r, alpha, seed=3)
        trainable = {name: p.detach() if name.endswith("lora_A") else tuple(p.shape)
                     for name, p in adapted.named_parameters() if p.requires_grad}
        ids = torch.arange(8)[None] % model.config.vocab_size
        with torch.no_grad():
            unchanged = bool(torch.allclose(adapted(ids).logits, model(ids).logits, atol=1e-5))
        return list(names), sorted(lora_modules(adapted)), trainable, unchanged
    return run


def check_add_lora(learner_fn: Callable, model: PreTrainedModel) -> CheckResult:
    """Exercise 2.4 on ``model`` with one target and with every block's linear maps, and on a 12-block
    GPT-2 with a target with a dot ("attn.c_proj") and one where "1.mlp.c_fc" must not match block 11."""
    targets = list(block_linear_targets(model))
    gpt2 = _twelve_layer_gpt2()
    cases = [Case(f"your model, {targets[:1]}, r=4", model, targets[:1], 4, 8.0),
             Case(f"your model, {targets}, r=8", model, targets, 8, 16.0),
             Case("12-block GPT-2, ['attn.c_proj']: the attention's c_proj, not the MLP's", gpt2, ["attn.c_proj"], 2, 4.0),
             Case("12-block GPT-2, ['1.mlp.c_fc']: block 1 only, not block 11", gpt2, ["1.mlp.c_fc"], 2, 4.0)]
    return check_function(
        _after_adding_lora(learner_fn), _after_adding_lora(add_lora), cases, exercise="2.4 (add_lora)",
        hint="a layer is a target when its name equals the target or ends with '.' + target (peft's rule; a plain "
             "endswith or 'in' matches too much); freeze every parameter first (model.requires_grad_(False)), then "
             "replace each target layer, in model order, by LoRALinear(layer, r, alpha, generator=generator) with "
             "setattr on its parent (model.get_submodule of the name before the last dot), one generator "
             "torch.Generator().manual_seed(seed) for all the layers")


def check_lora_parameter_count(learner_fn: Callable, model: PreTrainedModel) -> CheckResult:
    """Exercise 2.5 on ``model``'s block layers, a tiny Llama's nn.Linear ones (its key and value
    projections are narrower than the queries: grouped-query attention), and a 12-block GPT-2 where
    "1.mlp.c_fc" must not match block 11."""
    llama = tiny_random_model("llama")
    targets = list(block_linear_targets(model))
    cases = [Case(f"your model, {targets[:1]}, r=8", model, targets[:1], 8),
             Case("12-block GPT-2, ['1.mlp.c_fc']: block 1 only, not block 11", _twelve_layer_gpt2(), ["1.mlp.c_fc"], 3),
             Case(f"your model, {targets}, r=4", model, targets, 4),
             Case("12-block GPT-2, ['mlp.c_proj'], r=1", _twelve_layer_gpt2(), ["mlp.c_proj"], 1),
             Case("tiny Llama, ['q_proj', 'k_proj', 'v_proj'], r=2 (k and v narrower)", llama,
                  ["q_proj", "k_proj", "v_proj"], 2)]
    return check_function(
        learner_fn, lora_parameter_count, cases, exercise="2.5 (lora_parameter_count)",
        properties=[Varies("r", lambda r: r + 1, "ignores r")],
        hint="each matched layer (the rule of Exercise 2.4: the name is the target or ends with '.' + target) adds "
             "A [r, d_in] and B [d_out, r]: r * (d_in + d_out) numbers, read from the weight's shape")


def _unit(*values: float) -> Tensor:
    vector = torch.tensor(values)
    return vector / vector.norm()


def check_slerp(learner_fn: Callable) -> CheckResult:
    """Exercise 2.10 on orthogonal, oblique, parallel, opposite and 2-D inputs, at several ``t``."""
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
        learner_fn, slerp, cases, exercise="2.10 (slerp)",
        properties=[Varies("t", lambda t: (t + 0.5) % 1, "ignores t")],
        hint="flatten a and b, take the angle θ = arccos(â · b̂) between the UNIT vectors â = a/|a| and "
             "b̂ = b/|b|, weight â by sin((1 - t) θ) / sin θ and b̂ by sin(t θ) / sin θ (t = 0 must give a), "
             "multiply by the interpolated norm (1 - t)|a| + t|b|, reshape back; when |cos θ| > 0.9995 return "
             "(1 - t) a + t b")



# ---------------------------------------------------------------------------------------------
# Training, saving and forgetting


def _two_training_steps(step: Callable) -> Callable:
    """Two AdamW steps of ``step`` on a copy of the (LoRA) model; the losses and the trained parameters after."""
    def run(model: nn.Module, rows: ChatBatch) -> tuple[list[float], dict[str, Tensor]]:
        trained = copy.deepcopy(model)
        optimizer = torch.optim.AdamW([p for p in trained.parameters() if p.requires_grad], lr=0.01, weight_decay=0.0)
        losses = float_losses(lambda: step(trained, rows, optimizer), steps=2)
        return losses, {name: p.detach() for name, p in trained.named_parameters() if p.requires_grad}
    return run


def _with_lora(model: PreTrainedModel, targets: list[str], seed: int) -> PreTrainedModel:
    adapted = copy.deepcopy(model)
    add_lora(adapted, targets, r=2, alpha=4, seed=seed)
    with torch.no_grad():                                     # B = 0 would give A no gradient at the first step
        for module in lora_modules(adapted).values():
            module.lora_B.copy_(0.1 * torch.randn(module.lora_B.shape, generator=torch.Generator().manual_seed(seed)))
    return adapted


def check_training_step(learner_fn: Callable, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
                        ) -> CheckResult:
    """Exercise 2.6: two steps give the reference's losses and weights, on ``model`` with LoRA and with
    every weight trainable (a copy), on chat rows whose padding and prompts carry no loss."""
    rows = chat_batch(tokenizer, chat_dataset(4, seed=0))
    full = copy.deepcopy(model).requires_grad_(True)
    first, last = block_linear_targets(model)[0], block_linear_targets(model)[-1]
    cases = [Case(f"your model with LoRA on {first}, 4 chat rows", _with_lora(model, [first], seed=0), rows),
             Case("your model, every weight trainable", full, rows),
             Case(f"your model with LoRA on {last}, 2 rows", _with_lora(model, [last], seed=1),
                  rows.rows(torch.tensor([1, 3])))]
    return check_function(
        _two_training_steps(learner_fn), _two_training_steps(training_step), cases, exercise="2.6 (training_step)",
        atol=1e-5, rtol=1e-4,
        hint="the model computes the loss when given labels (it shifts them and skips -100): call it with input_ids, "
             "attention_mask and labels from rows, clear the old gradients, backpropagate, step the optimizer, and "
             "return loss.item()")


def _after_zeroing_the_adapter(fn: Callable) -> Callable:
    """``fn(model)``, then the model's LoRA weights set to zero: a state dict that shares the model's
    tensors instead of copying them changes with them. A tensor that still requires a gradient is refused."""
    def run(model: nn.Module) -> dict[str, Tensor]:
        adapted = copy.deepcopy(model)
        state = fn(adapted)
        attached = [key for key, tensor in state.items() if isinstance(tensor, Tensor) and tensor.requires_grad]
        if attached:
            raise ValueError(f"{attached[0]} still requires a gradient: detach the tensors, a saved adapter holds no "
                             "graph")
        with torch.no_grad():
            for module in lora_modules(adapted).values():
                module.lora_A.zero_()
                module.lora_B.zero_()
        return state
    return run


def check_lora_state_dict(learner_fn: Callable, model: PreTrainedModel) -> CheckResult:
    """Exercise 2.7 on ``model`` with LoRA on one target and on every block's linear maps, and on a tiny Llama."""
    targets = list(block_linear_targets(model))
    cases = [Case(f"your model with LoRA on {targets[0]}", _with_lora(model, targets[:1], seed=2)),
             Case(f"your model with LoRA on {', '.join(targets)}", _with_lora(model, targets, seed=3)),
             Case("tiny Llama with LoRA on q_proj and v_proj", _with_lora(tiny_random_model("llama"), ["q_proj", "v_proj"],
                                                                             seed=4))]
    return check_function(
        _after_zeroing_the_adapter(learner_fn), _after_zeroing_the_adapter(lora_state_dict), cases,
        exercise="2.7 (lora_state_dict)",
        hint="for each LoRA layer (lora_modules(model)), two entries: 'base_model.model.' + its name + "
             "'.lora_A.weight' and '.lora_B.weight', each lora_A / lora_B detached and cloned (a saved adapter must "
             "not change when training goes on); nothing of the base model")


def _corpus_case(name: str, lengths: list[int], vocab: int, seed: int) -> Case:
    generator = torch.Generator().manual_seed(seed)
    sequences = [torch.randint(vocab, (length,), generator=generator).tolist() for length in lengths]
    logits = [2 * torch.randn(length, vocab, generator=generator) for length in lengths]
    return Case(name, logits, sequences)


def check_corpus_loss(learner_fn: Callable) -> CheckResult:
    """Exercise 2.8 on documents of very different lengths (a mean of per-document means differs), one
    document, and two-token documents."""
    cases = [_corpus_case("documents of 3, 12 and 5 tokens", [3, 12, 5], vocab=11, seed=0),
             _corpus_case("one document of 9 tokens", [9], vocab=20, seed=1),
             _corpus_case("two-token documents and a long one", [2, 2, 30], vocab=7, seed=2)]
    return check_function(
        learner_fn, corpus_loss, cases, exercise="2.8 (corpus_loss)", atol=1e-5,
        hint="the logits at position t predict token t + 1: sum the cross-entropy of row[:-1] against sequence[1:] "
             "over every document (reduction='sum'), then divide by the number of predicted tokens, len - 1 per "
             "document: every token counts once, so this is not the mean of the documents' mean losses")


def _task_vectors(shapes: dict[str, tuple[int, int]], count: int, seed: int) -> list[dict[str, Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [{name: torch.randn(shape, generator=generator) for name, shape in shapes.items()} for _ in range(count)]


def check_merge_task_vectors_linear(learner_fn: Callable) -> CheckResult:
    """Exercise 2.9 on two and three task vectors of two modules, weights that sum to 1 and that do not,
    and a negative weight."""
    shapes = {"transformer.h.0.attn.c_attn": (12, 4), "transformer.h.0.mlp.c_fc": (16, 4)}
    two, three = _task_vectors(shapes, 2, seed=0), _task_vectors(shapes, 3, seed=1)
    cases = [Case("two vectors, weights (0.5, 0.5): the average", two, [0.5, 0.5]),
             Case("two vectors, weights (1, 1): the sum", two, [1.0, 1.0]),
             Case("three vectors, weights (0.2, 0.3, 1.5)", three, [0.2, 0.3, 1.5]),
             Case("a negative weight subtracts a task: (1, -0.5)", two, [1.0, -0.5])]
    return check_function(
        learner_fn, merge_task_vectors_linear, cases, exercise="2.9 (merge_task_vectors_linear)",
        properties=[Varies("weights", lambda weights: [1.0] * len(weights), "ignores the weights")],
        hint="module by module: for each name of the first vector, the sum over i of weights[i] * vectors[i][name]; "
             "do not normalise the weights (they need not sum to 1), and return a dict with the same names")


def check_task_vector_cosine(learner_fn: Callable) -> CheckResult:
    """Exercise 2.11 (bonus) on vectors of one and of two modules, of different scales, parallel and opposite."""
    shapes = {"h.0.attn.c_attn": (6, 3), "h.0.mlp.c_fc": (8, 3)}
    a, b = _task_vectors(shapes, 2, seed=2)
    scaled = {"h.0.attn.c_attn": 10 * a["h.0.attn.c_attn"], "h.0.mlp.c_fc": 0.1 * a["h.0.mlp.c_fc"]}
    cases = [Case("two random vectors of two modules", a, b),
             Case("the same vector, each module scaled differently: one cosine over all modules", a, scaled),
             Case("a vector and its negative", a, {name: -t for name, t in a.items()}),
             Case("one module only", {"w": torch.tensor([[1.0, 2.0]])}, {"w": torch.tensor([[2.0, 1.0]])})]
    return check_function(
        learner_fn, task_vector_cosine, cases, exercise="2.11 (task_vector_cosine)", atol=1e-5,
        hint="flatten every module of each vector and concatenate them in the same order into one long vector per "
             "task, then take one cosine: dot product over the product of the norms (not an average of per-module "
             "cosines); return a float")


def _after_loading(load: Callable) -> Callable:
    def run(model: nn.Module, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        adapted = copy.deepcopy(model)
        load(adapted, state_dict)
        return lora_state_dict(adapted)
    return run


def check_load_lora_state_dict(learner_fn: Callable, model: PreTrainedModel) -> CheckResult:
    """Exercise 2.12 (bonus): switching a model's adapter for another one's weights, and refusing a
    state dict with a missing key or a tensor of the wrong shape."""
    targets = list(block_linear_targets(model))[:2]
    holder, other = _with_lora(model, targets, seed=5), _with_lora(model, targets, seed=6)
    state = lora_state_dict(other)
    missing = dict(list(state.items())[1:])
    wrong_shape = {key: (value[:1] if key.endswith("lora_A.weight") else value) for key, value in state.items()}
    cases = [Case("your model's adapter switched for another one", holder, state),
             Case("a tiny Llama's adapter switched", _with_lora(tiny_random_model("llama"), ["q_proj"], seed=7),
                  lora_state_dict(_with_lora(tiny_random_model("llama"), ["q_proj"], seed=8))),
             RaisingCase("a state dict with a key missing: raise, and change nothing", holder, missing),
             RaisingCase("a state dict with an unexpected key: raise", holder, {**state, "lm_head.lora_A.weight": state[
                 next(iter(state))]}),
             RaisingCase("an A of rank 1 where the model's has rank 2: raise", holder, wrong_shape)]
    return check_function(
        _after_loading(learner_fn), _after_loading(load_lora_state_dict), cases, exercise="2.12 (load_lora_state_dict)",
        hint="build the model's own {key: parameter} for every LoRA layer's A and B (the keys lora_state_dict "
             "writes); raise ValueError if the keys differ or a shape differs, before copying anything; then copy "
             "each tensor into its parameter in place under torch.no_grad()")
