"""Checkers for the exercises of chapter 7 (circuits), kept apart from the library code they check.

Each ``check_<exercise>(learner_fn, ...)`` runs the learner's function and the library's reference
on inputs chosen so that every plausible mistake shows (see ``utils.checks``), and prints one line.
``tests/test_mutation.py`` and ``tests/test_wrong_answers.py`` prove that each rejects wrong answers.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from utils import architecture
from utils.checks import Case, CheckResult, HasCase, RaisingCase, Varies, check_function
from utils.feature_circuits import (
    SAEs, Node, Spliced, ablation_masks, completeness, edge_effects, edges_into, faithfulness, mean_activations,
    node_attribution, node_effects,
)
from utils.exercises import ExerciseContext
from utils.models import SWEEP_BUDGET, size_relative_to_course_model
from utils.patching import (
    PairTokens, PatchingPair, agreement_pairs, attribution, copy_where, integrated_gradients, ioi_pairs,
    logit_difference_with_heads_ablated, normalised_metric, patch_head_positions, patch_residual, path_patch,
    path_patch_to_logits, replace_head, tokenize_pairs,
)


# ---------------------------------------------------------------------------------------------
# Exercises on utils.patching


def check_tokenize_pairs(learner_fn: Callable[[PreTrainedTokenizerBase, list[PatchingPair]], PairTokens],
                         tokenizer: PreTrainedTokenizerBase) -> CheckResult:
    """Exercise 7.1 on IOI and agreement pairs, and on pairs that must be refused."""
    pair = ioi_pairs(1, seed=2)[0]
    cases = [Case("16 IOI pairs of one template", tokenizer, ioi_pairs(16, seed=2)),
             Case("8 agreement pairs", tokenizer, agreement_pairs(8, seed=2)),
             RaisingCase("a corrupted prompt one word longer than its clean one", tokenizer,
                         [dataclasses.replace(pair, corrupted=pair.corrupted + " again")], raises=ValueError),
             RaisingCase("pairs of two templates, of different lengths", tokenizer,
                         ioi_pairs(2, seed=2, template=0) + ioi_pairs(2, seed=2, template=2), raises=ValueError),
             RaisingCase("an answer of several tokens", tokenizer, [dataclasses.replace(pair, answer=" Zqxvt")],
                         raises=ValueError),
             RaisingCase("no pairs", tokenizer, [], raises=ValueError)]
    return check_function(
        learner_fn, tokenize_pairs, cases, exercise="7.1 (tokenize_pairs)", atol=0,
        hint="encode each prompt without special tokens and put the BOS id first; every clean and corrupted row must "
             "have the same length (raise a ValueError that says which pair does not, or that the pairs differ in "
             "length); the answer and wrong strings must each be one token (raise otherwise); labels are the first "
             "clean row's tokens, from convert_ids_to_tokens")


def check_normalised_metric(learner_fn: Callable[[Tensor, float, float], Tensor]) -> CheckResult:
    """Exercise 7.2 on logit differences around a positive and a negative clean baseline."""
    values = torch.tensor([3.0, -1.0, 0.5, 2.0])
    cases = [Case("clean 3.0, corrupted -1.0", values, 3.0, -1.0),
             Case("clean 2.0, corrupted 0.5", values, 2.0, 0.5),
             Case("clean -2.0, corrupted 1.0 (the task's answer has a lower logit)", values, -2.0, 1.0)]
    return check_function(
        learner_fn, normalised_metric, cases, exercise="7.2 (normalised_metric)", atol=1e-6,
        properties=[Varies("clean", lambda clean: clean + 1, "ignores the clean run"),
                    Varies("corrupted", lambda corrupted: corrupted + 1, "ignores the corrupted run")],
        hint="subtract the corrupted baseline, then divide by (clean - corrupted): the corrupted run maps to 0 "
             "and the clean run to 1, whatever their signs")


def check_replace_head(learner_fn: Callable[[Tensor, Tensor, int], Tensor]) -> CheckResult:
    """Exercise 7.3 on random head outputs; the learner's function must not change its inputs."""
    generator = torch.Generator().manual_seed(1)
    cases = [Case(f"[2, 5, 4, 3] head outputs, head {head}", torch.randn(2, 5, 4, 3, generator=generator),
                  torch.randn(2, 5, 4, 3, generator=generator), head) for head in (1, 3)]
    return check_function(
        learner_fn, replace_head, cases, exercise="7.3 (replace_head)", atol=0,
        properties=[Varies("head", lambda head: head - 1, "patches another head")],
        in_place_advice={"z": "the corrupted z is the hook's input and belongs to the model; clone it and patch "
                              "the copy"},
        hint="z is [n, pos, head, d_head]: the head is the third dimension; clone z first, then replace that "
             "head's slice of the copy with the same slice of clean_z, at every position")


def _copies(variants: int, n: int, entry: tuple[int, ...], d: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Random masks ``[variant, *entry]``, clean ``[n, *entry, d]`` and ``variant`` copies ``[(variant n), *entry, d]``."""
    generator = torch.Generator().manual_seed(seed)
    masks = torch.rand(variants, *entry, generator=generator) < 0.4
    return (masks, torch.randn(n, *entry, d, generator=generator),
            torch.randn(variants * n, *entry, d, generator=generator))


def check_copy_where(learner_fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> CheckResult:
    """Exercise 7.4 on random residual-stream masks ``[variant, pos]`` and head masks ``[variant, pos, head]``."""
    cases = [Case("3 variants of 2 prompts, masks over 5 positions, d 4", *_copies(3, 2, (5,), 4, seed=0)),
             Case("4 variants of 3 prompts, masks over [3 positions, 2 heads], d_head 5", *_copies(4, 3, (3, 2), 5, seed=1)),
             Case("1 variant of 2 prompts, masks over [4 positions, 3 heads]", *_copies(1, 2, (4, 3), 2, seed=2))]
    return check_function(
        learner_fn, copy_where, cases, exercise="7.4 (copy_where)", atol=0,
        properties=[Varies("masks", lambda masks: ~masks, "copies where the mask is False"),
                    Varies("masks", lambda masks: masks[:1].expand_as(masks), "uses the first mask for every copy"),
                    HasCase("masks over positions and heads", lambda case: case.args[0].ndim == 3)],
        in_place_advice={"activation": "activation is the hook's input and belongs to the model: build a new tensor "
                                       "(torch.where does) instead of writing into it"},
        hint="split activation's batch into [variant, n] with einops.rearrange (the variant first: copy by copy), give "
             "the masks a size-1 dimension for the prompts and one for d, torch.where them against clean, and merge "
             "[variant, n] back")


def _ioi_tokens(tokenizer: PreTrainedTokenizerBase, n: int, seed: int) -> PairTokens:
    return tokenize_pairs(tokenizer, ioi_pairs(n, seed=seed))


def _agreement_tokens(tokenizer: PreTrainedTokenizerBase, n: int, seed: int) -> PairTokens:
    return tokenize_pairs(tokenizer, agreement_pairs(n, seed=seed))


@dataclasses.dataclass(frozen=True)
class _Subject:
    """What a check whose cases run many forward passes runs on, and the words its case names end with."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    saes: SAEs | None
    where: str


@functools.cache
def _course_model_with_saes() -> _Subject:
    course = ExerciseContext()                  # the course model, its tokenizer and its shipped SAEs, loaded on use
    return _Subject(course.model, course.tokenizer, course.saes, ", on the course model")


def _sweep_subject(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, saes: SAEs | None = None) -> _Subject:
    """The learner's model, or the course model (with its shipped SAEs) where the learner's is more than
    ``SWEEP_BUDGET`` times its size: a check's sweeps would cost minutes there, and the function under test is
    the same code on any model (the notebook's next cell runs it on the learner's)."""
    if size_relative_to_course_model(model) <= SWEEP_BUDGET:
        return _Subject(model, tokenizer, saes, "")
    return _course_model_with_saes()


def check_logit_difference_with_heads_ablated(
        learner_fn: Callable[[PreTrainedModel, PairTokens, Sequence[tuple[int, int]], Tensor], Tensor],
        model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> CheckResult:
    """Exercise 7.5 on IOI prompts, with heads of two layers, two heads of one layer, and none."""
    tokens, mean_over = _ioi_tokens(tokenizer, 8, seed=3), _ioi_tokens(tokenizer, 8, seed=4).clean
    last_layer, last_head = architecture.n_layers(model) - 1, model.config.num_attention_heads - 1
    cases = [Case("heads of two layers", model, tokens, [(0, 1), (last_layer, last_head)], mean_over),
             Case("two heads of one layer", model, tokens, [(1, 0), (1, last_head)], mean_over),
             Case("heads of three layers, listed out of order", model, tokens,
                  [(last_layer, 0), (0, last_head), (1, 2)], mean_over),
             Case("no heads: the clean logit differences", model, tokens, [], mean_over)]
    return check_function(
        learner_fn, logit_difference_with_heads_ablated, cases, exercise="7.5 (logit_difference_with_heads_ablated)",
        atol=1e-4, properties=[Varies("mean_over", lambda ids: ids[:2], "takes the means over other prompts")],
        hint="record every head's output on mean_over with clean_head_outputs and average over the prompts only "
             "(dimension 0: one mean per position); for each layer in heads, register an edit with "
             "editing_head_outputs that puts the mean in the chosen heads' slices of z (bind this layer's values as "
             "default arguments, or every edit sees the last layer's), then run the clean prompts")


def _sweep_cases(on: _Subject) -> list[Case]:
    """8 IOI pairs and 8 agreement pairs (prompts of different lengths), for a sweep ``fn(model, tokens, progress)``."""
    return [Case(f"8 IOI pairs{on.where}", on.model, _ioi_tokens(on.tokenizer, 8, seed=5), progress=False),
            Case(f"8 agreement pairs{on.where}", on.model, _agreement_tokens(on.tokenizer, 8, seed=5), progress=False)]


def check_patch_head_positions(learner_fn: Callable[..., Tensor], model: PreTrainedModel,
                               tokenizer: PreTrainedTokenizerBase) -> CheckResult:
    """Exercise 7.6 on IOI and agreement pairs (prompts of different lengths, so that heads and positions differ), on
    the course model where the learner's is much larger (:func:`_sweep_subject`)."""
    return check_function(
        learner_fn, patch_head_positions, _sweep_cases(_sweep_subject(model, tokenizer)),
        exercise="7.6 (patch_head_positions)", atol=1e-4,
        hint="one variant per (head, position): an identity matrix of size n_heads * n_pos, each row rearranged into "
             "a [pos, head] mask (the variant's index is head-major, (head pos)); patch_sweep on site z gives "
             "[layer, variant], which the same grouping turns back into [layer, head, pos]")


def check_attribution(learner_fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> CheckResult:
    """Exercise 7.7 on random head outputs and gradients."""
    generator = torch.Generator().manual_seed(0)

    def case(name: str, n: int, pos: int, heads: int, d_head: int) -> Case:
        return Case(name, *(torch.randn(n, pos, heads, d_head, generator=generator) for _ in range(3)))

    cases = [case("batch 3, 5 positions, 4 heads, d_head 6", 3, 5, 4, 6), case("batch 1, 2 positions, 2 heads", 1, 2, 2, 3)]
    return check_function(
        learner_fn, attribution, cases, exercise="7.7 (attribution)", atol=1e-4,
        hint="multiply (clean - corrupted) by the gradient elementwise, sum over d_head and over the batch (the "
             "gradient is of the batch's mean metric), and keep head and position, in that order: [head, pos]")


def _sine_metric_gradient(weights: Tensor) -> Callable[[Tensor], Tensor]:
    """``gradient_at`` of the metric ``sum(weights * sin(z))`` at each point: ``weights * cos(points)``, which changes
    along the path (a linear metric would make every point's gradient the same)."""
    return lambda points: weights * torch.cos(points)


def check_integrated_gradients(learner_fn: Callable[[Tensor, Tensor, Callable[[Tensor], Tensor], int], Tensor]
                               ) -> CheckResult:
    """Exercise 7.8 on random head outputs and a metric whose gradient is known at every point."""
    generator = torch.Generator().manual_seed(0)

    def case(name: str, n: int, pos: int, heads: int, d_head: int, steps: int) -> Case:
        clean, corrupted, weights = (2 * torch.randn(n, pos, heads, d_head, generator=generator) for _ in range(3))
        return Case(name, clean, corrupted, _sine_metric_gradient(weights), steps)

    cases = [case("8 steps, batch 2, 3 positions, 4 heads, d_head 5", 2, 3, 4, 5, steps=8),
             case("3 steps, batch 3", 3, 2, 2, 3, steps=3),
             case("1 step: the gradient halfway along the path", 1, 4, 3, 2, steps=1)]
    return check_function(
        learner_fn, integrated_gradients, cases, exercise="7.8 (integrated_gradients)", atol=1e-4,
        properties=[Varies("steps", lambda steps: steps + 1, "ignores steps"),
                    HasCase("a single step", lambda case: case.args[3] == 1)],
        hint="t is the middle of each of steps equal parts of [0, 1], (k + 0.5) / steps, neither end; the points are "
             "corrupted + t (clean - corrupted), [steps, n, pos, head, d_head], passed to gradient_at in one call; "
             "average the gradients over the steps and give the mean to attribution")


# ---------------------------------------------------------------------------------------------
# Exercises on utils.feature_circuits


def _records(layers: dict[int, int], n: int, pos: int, d_model: int, seed: int) -> tuple[Spliced, Spliced, Spliced]:
    """Random clean, corrupted and gradient records: latents ``[n, pos, d_sae]`` (``layers`` maps each layer to
    its ``d_sae``), errors ``[n, pos, d_model]``."""
    generator = torch.Generator().manual_seed(seed)

    def record() -> Spliced:
        return Spliced({layer: torch.randn(n, pos, d_sae, generator=generator) for layer, d_sae in layers.items()},
                       {layer: torch.randn(n, pos, d_model, generator=generator) for layer in layers})
    return record(), record(), record()


def check_node_attribution(learner_fn: Callable[[Spliced, Spliced, Spliced], tuple[dict, dict]]) -> CheckResult:
    """Exercise 7.9 on random records of SAEs of different widths."""
    cases = [Case("2 layers of 6 and 4 latents, batch 3, 5 positions, d_model 7", *_records({0: 6, 1: 4}, 3, 5, 7, seed=0)),
             Case("3 layers, batch 1, 2 positions", *_records({0: 3, 1: 3, 2: 5}, 1, 2, 4, seed=1))]
    return check_function(
        learner_fn, node_attribution, cases, exercise="7.9 (node_attribution)", atol=1e-4,
        properties=[HasCase("a batch of more than one prompt", lambda case: len(case.args[0].latents[0]) > 1)],
        hint="per layer, (clean - corrupted) times the gradient, elementwise; sum over the batch (the gradient is of "
             "the batch's mean metric) and keep each latent: [pos, d_sae]; an error term is one node per position, "
             "so its products are summed over d_model as well: [pos]")


def check_ablation_masks(learner_fn: Callable[[Mapping[int, int], int, Sequence[Node], bool], dict]) -> CheckResult:
    """Exercise 7.10 on SAEs of different widths, with latents and error terms of several layers in the circuit."""
    d_saes = {0: 6, 1: 6, 2: 4}
    circuit = [Node(0, 1, 3), Node(0, 2, None), Node(1, 0, 5), Node(1, 0, None), Node(2, 2, 0), Node(2, 2, 1)]
    cases = [Case("a circuit in every layer, keep only it", d_saes, 3, circuit, True),
             Case("a circuit in every layer, ablate it", d_saes, 3, circuit, False),
             Case("error terms only, 5 positions, keep only them", {0: 8, 3: 2}, 5, [Node(0, 4, None), Node(3, 0, None)], True),
             Case("no nodes, keep only them: ablate everything", d_saes, 2, [], True)]
    return check_function(
        learner_fn, ablation_masks, cases, exercise="7.10 (ablation_masks)", atol=0,
        properties=[Varies("keep_only", lambda keep_only: not keep_only, "ignores keep_only"),
                    HasCase("a layer without a node of the circuit", lambda case: any(
                        layer not in {node.layer for node in case.args[2]} for layer in case.args[0]))],
        hint="start every layer from all-False masks: [n_pos, d_sae] for the latents and [n_pos] for the error terms; "
             "mark each node of that layer (the error mask when its feature is None); with keep_only the nodes are "
             "the ones to keep, so the masks of what to ablate are the negations, of both masks")


def _circuit_cases(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, saes: SAEs) -> list[Case]:
    """Agreement prompts with the top nodes of attribution patching, and with the error terms alone."""
    on = _sweep_subject(model, tokenizer, saes)
    model, saes = on.model, on.saes
    tokens, other = _agreement_tokens(on.tokenizer, 16, seed=3), _agreement_tokens(on.tokenizer, 32, seed=4)
    means = mean_activations(model, saes, torch.cat([other.clean, other.corrupted]))
    ranked = [node for node, _ in node_effects(model, saes, tokens).ranked()]
    last = tokens.clean.shape[1] - 1
    return [Case(f"the top 30 nodes of attribution patching{on.where}", model, saes, tokens, means, ranked[:30]),
            Case("the top 15 nodes", model, saes, tokens, means, ranked[:15]),
            Case("the top 5 nodes", model, saes, tokens, means, ranked[:5]),
            Case("the error terms at the last position", model, saes, tokens, means,
                 [Node(layer, last, None) for layer in saes])]


def _check_circuit_measure(learner_fn: Callable[..., float], reference: Callable[..., float], exercise: str,
                           hint: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, saes: SAEs
                           ) -> CheckResult:
    return check_function(
        learner_fn, reference, _circuit_cases(model, tokenizer, saes), exercise=exercise, atol=1e-4,
        properties=[Varies("nodes", lambda nodes: nodes[: len(nodes) // 2], "ignores the circuit's nodes")], hint=hint)


def check_faithfulness(learner_fn: Callable[[PreTrainedModel, SAEs, PairTokens, Spliced, Sequence[Node]], float],
                       model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, saes: SAEs) -> CheckResult:
    """Exercise 7.11 on agreement prompts, with the top nodes of attribution patching and with error terms alone (on
    the course model and its SAEs where the learner's model is much larger: :func:`_sweep_subject`)."""
    return _check_circuit_measure(
        learner_fn, faithfulness, "7.11 (faithfulness)",
        "three mean clean logit differences from logit_difference_with: nothing ablated (no nodes, keep_only=False), "
        "everything ablated (no nodes, keep_only=True), and only the circuit kept (the nodes, keep_only=True); then "
        "(circuit - nothing) / (model - nothing), as a float", model, tokenizer, saes)


def check_completeness(learner_fn: Callable[[PreTrainedModel, SAEs, PairTokens, Spliced, Sequence[Node]], float],
                       model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, saes: SAEs) -> CheckResult:
    """Exercise 7.12 on the cases of Exercise 7.11."""
    return _check_circuit_measure(
        learner_fn, completeness, "7.12 (completeness)",
        "the three runs of your faithfulness, but the circuit's run ablates the circuit's nodes and keeps the rest "
        "(the nodes, keep_only=False); the same fraction, (without the circuit - nothing) / (model - nothing), as a "
        "float", model, tokenizer, saes)


def _edges_between(edges_fn: Callable[..., dict[Node, float]]) -> Callable[..., dict[tuple[Node, Node], float]]:
    """The edges between ``nodes`` as :func:`edge_effects` finds them with ``edges_fn``: one graph per call, one
    downstream node after another on it (so the graph must survive each call)."""
    def run(model: PreTrainedModel, saes: SAEs, tokens: PairTokens, nodes: list[Node]
            ) -> dict[tuple[Node, Node], float]:
        return edge_effects(model, saes, tokens, nodes, into=edges_fn)
    return run


def check_edges_into(learner_fn: Callable[[Node, Sequence[Node], Spliced, Spliced, Spliced], dict[Node, float]],
                     model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, saes: SAEs) -> CheckResult:
    """Exercise 7.13 through :func:`edge_effects` on agreement prompts: the edges of the top 20 nodes, of the
    strongest latent past the first layer with the nodes below it (latents and error terms at several positions),
    and into error terms alone."""
    on = _sweep_subject(model, tokenizer, saes)
    tokens = _agreement_tokens(on.tokenizer, 16, seed=3)
    ranked = [node for node, _ in node_effects(on.model, on.saes, tokens).ranked()]
    down = next(node for node in ranked if node.feature is not None and node.layer > 0)
    below = [node for node in ranked if node.layer == down.layer - 1]
    ups = [*[node for node in below if node.feature is not None][:6],                  # latents and error terms
           *[node for node in below if node.feature is None][:2]]
    errors = [Node(down.layer, down.position, None), Node(down.layer, 2, None)]
    cases = [Case(f"the top 20 nodes{on.where}", on.model, on.saes, tokens, ranked[:20]),
             Case(f"{down.name} and {len(ups)} nodes of layer {down.layer - 1}", on.model, on.saes, tokens,
                  [down, *ups]),
             Case("error terms (cut from what comes before them) and the nodes below them", on.model, on.saes, tokens,
                  [*errors, *ups])]
    return check_function(
        _edges_between(learner_fn), _edges_between(edges_into), cases, exercise="7.13 (edges_into)", atol=1e-5,
        rtol=1e-3,
        hint="an error node's edges are 0 (nothing upstream reaches it); a latent's score is its gradient times its "
             "value at its position, summed over the batch (gradients held fixed); torch.autograd.grad of that score "
             "with respect to the latents and errors of the layer below, with retain_graph=True (the next downstream "
             "node needs the graph); each edge is (clean - corrupted) of the upstream node times that gradient, "
             "summed over the batch (and d_model for an error term)")


def _path_setting(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
                  ) -> tuple[_Subject, PairTokens, PairTokens, Callable[[int], int], int]:
    """What the path-patching checks run on: the subject, 8 IOI and 8 agreement pairs, a head index that exists on
    the subject (``index % n_heads``) and its last layer."""
    on = _sweep_subject(model, tokenizer)
    n_heads = on.model.config.num_attention_heads
    return (on, _ioi_tokens(on.tokenizer, 8, seed=5), _agreement_tokens(on.tokenizer, 8, seed=5),
            lambda index: index % n_heads, architecture.n_layers(on.model) - 1)


def check_path_patch(learner_fn: Callable[[PreTrainedModel, PairTokens, tuple[int, int], tuple[int, int]], float],
                     model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> CheckResult:
    """Exercise 7.14 on IOI and agreement pairs: paths across one frozen layer, across two, between adjacent layers
    (nothing to freeze), and a sender that is not before its receiver (refused)."""
    on, ioi, agreement, head, last = _path_setting(model, tokenizer)
    cases = [Case(f"IOI, 0.{head(4)} -> 2.0, layer 1 frozen{on.where}", on.model, ioi, (0, head(4)), (2, 0)),
             Case(f"IOI, 0.0 -> 2.{head(4)}", on.model, ioi, (0, 0), (2, head(4))),
             Case(f"IOI, 0.{head(4)} -> {last}.{head(6)}, the layers between frozen", on.model, ioi, (0, head(4)),
                  (last, head(6))),
             Case(f"agreement, 1.{head(2)} -> {last}.{head(3)}", on.model, agreement, (1, head(2)), (last, head(3))),
             Case(f"agreement, 1.{head(2)} -> 2.{head(2)}, adjacent layers", on.model, agreement, (1, head(2)),
                  (2, head(2))),
             RaisingCase("a sender in the receiver's layer", on.model, ioi, (2, 0), (2, head(4)), raises=ValueError)]
    return check_function(
        learner_fn, path_patch, cases, exercise="7.14 (path_patch)", atol=1e-4, rtol=1e-3,
        hint="run 1 on the corrupted prompts: the sender's output from the clean run, every head of the layers "
             "strictly between sender and receiver set to its corrupted output, and the receiver's output recorded; "
             "run 2 on the corrupted prompts with only the receiver's output replaced by the recorded one; the "
             "normalised metric of run 2's mean logit difference (and a ValueError unless the sender's layer is "
             "earlier)")


def check_path_patch_to_logits(learner_fn: Callable[[PreTrainedModel, PairTokens, tuple[int, int]], float],
                               model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> CheckResult:
    """Bonus exercise 7.15 on IOI and agreement pairs: senders with every later layer frozen, with one, and in the
    last layer (nothing to freeze)."""
    on, ioi, agreement, head, last = _path_setting(model, tokenizer)
    cases = [Case(f"IOI, head 0.0, every later layer frozen{on.where}", on.model, ioi, (0, 0)),
             Case(f"IOI, head 0.{head(4)}", on.model, ioi, (0, head(4))),
             Case(f"IOI, head {last - 1}.{head(5)}, one later layer", on.model, ioi, (last - 1, head(5))),
             Case(f"IOI, head {last}.{head(1)}, the last layer: nothing to freeze", on.model, ioi, (last, head(1))),
             Case(f"agreement, head 1.{head(2)}", on.model, agreement, (1, head(2)))]
    return check_function(
        learner_fn, path_patch_to_logits, cases, exercise="7.15 (path_patch_to_logits)", atol=1e-4, rtol=1e-3,
        hint="one run on the corrupted prompts: the sender's output from the clean run and every head of every later "
             "layer at its corrupted output (the sender's own layer and the MLPs left alone); the normalised metric of "
             "its mean logit difference")


def check_patch_residual(learner_fn: Callable[[PreTrainedModel, PairTokens, bool], Tensor], model: PreTrainedModel,
                         tokenizer: PreTrainedTokenizerBase) -> CheckResult:
    """Bonus exercise 7.16 on IOI and agreement pairs (of different lengths)."""
    return check_function(
        learner_fn, patch_residual, _sweep_cases(_sweep_subject(model, tokenizer)), exercise="7.16 (patch_residual)",
        atol=1e-4,
        hint="capture the clean run's resid_pre at every layer; the corrupted prompts repeated once per position, "
             "(variant n), and at each layer a hook on resid_pre that copies the clean stream into copy v at position "
             "v (your copy_where with the identity matrix as masks); the mean logit difference of each copy, "
             "normalised, is row layer of a [layer, pos] result")
