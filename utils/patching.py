"""Activation patching and attribution patching (chapter 7).

A *clean* prompt and a *corrupted* one differ in the one thing the task depends on, and have the
same tokens everywhere else::

    clean:     When Mary and John went to the shop, John gave the ring to      -> " Mary"
    corrupted: When Mary and John went to the shop, Mary gave the ring to      -> " John"

Run the corrupted prompt, but copy one activation from the clean run: if the model's answer comes
back, that activation carries the task's information. The metric is the logit difference
``logit(answer) - logit(wrong)`` (the clean prompt's answer and wrong token), normalised so that the
corrupted run scores 0 and the clean run 1::

    pairs = ioi_pairs(32)
    tokens = tokenize_pairs(tokenizer, pairs)                    # aligned [n, pos] clean and corrupted
    effects = patch_heads(model, tokens)                         # [layer, head], each in about [0, 1]
    estimates = attribution_patch_heads(model, tokens)           # the same from one forward + backward

Attribution patching (Nanda 2023; Syed et al. 2023) replaces the ``layers x heads`` forward passes
by a first-order Taylor estimate, ``(a_clean - a_corrupted) . dM/da`` at the corrupted run; integrated
gradients (Sundararajan et al. 2017) averages the gradient along the path from one to the other,
which fixes it where the metric is far from linear.
"""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import einops
import plotly.graph_objects as go
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from utils import architecture
from utils.hooks import capture, editing_head_outputs, hooks
from utils.world import agreement, indirect_object
from utils.world.vocabulary import AGREEMENT_NOUNS, AGREEMENT_PREPOSITIONS

Task = Literal["ioi", "agreement"]


# --------------------------------------------------------------------------------------------
# 1. Clean and corrupted prompts


@dataclass(frozen=True)
class PatchingPair:
    """A clean prompt, its corrupted twin, and the clean answer and wrong tokens (with their leading space)."""

    clean: str
    corrupted: str
    answer: str
    wrong: str


def ioi_pairs(n: int, seed: int = 0, template: int = 0) -> list[PatchingPair]:
    """``n`` indirect-object pairs of one template: the corrupted prompt gives the object to the other name.

    Clean ``"... John gave the ring to"`` (answer ``" Mary"``, wrong ``" John"``); corrupted ``"... Mary
    gave the ring to"``, whose own answer is ``" John"``. Half the pairs are in each name order.
    """
    rng = random.Random(50_021 + seed)
    pairs = []
    for index in range(n):
        document = indirect_object(rng, template=template, subject_first=index % 2 == 0)
        io, subject = document.labels["indirect_object"], document.labels["subject"]
        cut = document.prompt.rindex(subject)       # the second mention of the subject, S2
        corrupted = document.prompt[:cut] + io + document.prompt[cut + len(subject):]
        pairs.append(PatchingPair(document.prompt, corrupted, " " + io, " " + subject))
    return pairs


def agreement_pairs(n: int, seed: int = 0) -> list[PatchingPair]:
    """``n`` agreement pairs ``"The dog near the cats"`` / ``"The dogs near the cats"``: the subject's number flips.

    The distractor has the other number than the clean subject; half the clean subjects are singular.
    Answer and wrong are the clean prompt's verb forms (``" is"``, ``" are"``).
    """
    rng = random.Random(60_013 + seed)
    pairs = []
    while len(pairs) < n:
        number = ("singular", "plural")[len(pairs) % 2]
        other = "plural" if number == "singular" else "singular"
        document = agreement(rng, number=number, distractor_number=other)
        if not any(f" {preposition} the " in document.prompt for preposition in AGREEMENT_PREPOSITIONS):
            continue                                 # keep one shape: "The X <preposition> the Y", not "that the Y saw"
        (subject,) = [span for span in document.spans if span.kind == "subject"]
        flipped = _other_number(document.prompt[subject.start:subject.end])
        corrupted = document.prompt[:subject.start] + flipped + document.prompt[subject.end:]
        singular, plural = document.labels["verb_pair"].split("/")
        answer, wrong = (singular, plural) if number == "singular" else (plural, singular)
        pairs.append(PatchingPair(document.prompt, corrupted, " " + answer, " " + wrong))
    return pairs


def _other_number(noun: str) -> str:
    for singular, plural in AGREEMENT_NOUNS:
        if noun in (singular, plural):
            return plural if noun == singular else singular
    raise ValueError(f"{noun!r} is not one of the world's agreement nouns")


def task_pairs(task: Task, n: int, seed: int = 0) -> list[PatchingPair]:
    """:func:`ioi_pairs` or :func:`agreement_pairs`."""
    if task not in ("ioi", "agreement"):
        raise ValueError(f"unknown task {task!r}: use 'ioi' or 'agreement'")
    return ioi_pairs(n, seed) if task == "ioi" else agreement_pairs(n, seed)


@dataclass(frozen=True)
class PairTokens:
    """Tokenised pairs, BOS first: ``clean`` and ``corrupted`` ``[n, pos]`` with equal lengths, and the
    ``answer`` and ``wrong`` token ids ``[n]``. ``labels`` are the first clean prompt's tokens, for plots."""

    clean: Int[Tensor, "n pos"]
    corrupted: Int[Tensor, "n pos"]
    answer: Int[Tensor, "n"]
    wrong: Int[Tensor, "n"]
    labels: list[str]


def _single_token(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"the answer {text!r} is {len(ids)} tokens: the logit difference needs one-token answers")
    return ids[0]


def tokenize_pairs(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[PatchingPair]) -> PairTokens:
    """Tokenise ``pairs``; every clean and corrupted prompt must have the same number of tokens.

    Patching copies position ``p`` of the clean run into position ``p`` of the corrupted run, and a
    batch patches one position of every row at once, so all prompts must line up token for token.
    """
    if not pairs:
        raise ValueError("no pairs given: build them with ioi_pairs(n) or agreement_pairs(n)")
    bos = tokenizer.bos_token_id

    def encode(text: str) -> list[int]:
        return [bos, *tokenizer(text, add_special_tokens=False)["input_ids"]]

    clean, corrupted = [encode(p.clean) for p in pairs], [encode(p.corrupted) for p in pairs]
    for index, (a, b) in enumerate(zip(clean, corrupted)):
        if len(a) != len(b):
            raise ValueError(
                f"pair {index}: the clean prompt has {len(a)} tokens and the corrupted one {len(b)}: patching copies "
                "each position of the clean run into the same position of the corrupted run, so the two must "
                f"align token for token ({pairs[index].clean!r} / {pairs[index].corrupted!r}); change words that "
                "tokenise to the same number of tokens")
    lengths = Counter(map(len, clean))
    if len(lengths) > 1:
        raise ValueError(f"the pairs have different lengths {dict(lengths)}: a batch patches the same position of "
                         "every row, so use one template (ioi_pairs(n, template=...)) or one sentence shape")
    return PairTokens(torch.tensor(clean), torch.tensor(corrupted),
                      torch.tensor([_single_token(tokenizer, p.answer) for p in pairs]),
                      torch.tensor([_single_token(tokenizer, p.wrong) for p in pairs]),
                      tokenizer.convert_ids_to_tokens(clean[0]))


# --------------------------------------------------------------------------------------------
# 2. The metric


def logit_difference(logits: Float[Tensor, "n pos vocab"], answer: Int[Tensor, "n"], wrong: Int[Tensor, "n"]
                     ) -> Float[Tensor, "n"]:
    """``logit(answer) - logit(wrong)`` at the last position of each row."""
    last = logits[:, -1]                                                   # [n, vocab]
    rows = torch.arange(len(answer))
    return last[rows, answer] - last[rows, wrong]


def normalised_metric(logit_diff: Float[Tensor, "*n"], clean: float, corrupted: float) -> Float[Tensor, "*n"]:
    """Reference for Exercise 7.1: 0 where ``logit_diff`` equals the corrupted run's, 1 where it equals the clean run's."""
    if abs(clean - corrupted) < 1e-6:
        raise ValueError(f"the clean and corrupted runs have the same logit difference ({clean:.4f}): there is "
                         "nothing to patch; the corruption must change the answer (check the pairs)")
    return (logit_diff - corrupted) / (clean - corrupted)


@dataclass(frozen=True)
class Baseline:
    """Mean logit difference of the clean and of the corrupted run (the metric's 1 and 0)."""

    clean: float
    corrupted: float


@torch.no_grad()
def baseline(model: PreTrainedModel, tokens: PairTokens) -> Baseline:
    """The mean logit differences that :func:`normalised_metric` maps to 1 and 0."""
    clean = logit_difference(model(tokens.clean).logits, tokens.answer, tokens.wrong).mean().item()
    corrupted = logit_difference(model(tokens.corrupted).logits, tokens.answer, tokens.wrong).mean().item()
    normalised_metric(torch.tensor(0.0), clean, corrupted)   # raises when there is nothing to patch
    return Baseline(clean, corrupted)


@torch.no_grad()
def accuracy(model: PreTrainedModel, tokens: PairTokens, which: Literal["clean", "corrupted"] = "clean") -> float:
    """The share of clean prompts whose answer beats the wrong token (``which="corrupted"``: of corrupted ones
    whose own answer, the clean wrong token, wins)."""
    ids = tokens.clean if which == "clean" else tokens.corrupted
    difference = logit_difference(model(ids).logits, tokens.answer, tokens.wrong)
    return ((difference > 0) if which == "clean" else (difference < 0)).float().mean().item()


# --------------------------------------------------------------------------------------------
# 3. Activation patching


@contextlib.contextmanager
def _recording_heads(model: PreTrainedModel, store: dict[int, Tensor], keep_grad: bool = False) -> Iterator[None]:
    """Record each layer's head outputs ``z`` ``[n, pos, head, d_head]`` into ``store[layer]`` during forward passes.

    With ``keep_grad`` each ``z`` keeps its gradient: it is passed on itself, so what comes after depends on it.
    """
    def recorder(layer: int) -> Callable[[Tensor], Tensor]:
        def record(z: Tensor) -> Tensor:
            if keep_grad:
                z.retain_grad()
            store[layer] = z
            return z
        return record

    with contextlib.ExitStack() as stack:
        for layer in range(architecture.n_layers(model)):
            stack.enter_context(editing_head_outputs(model, layer, recorder(layer)))
        yield


@torch.no_grad()
def clean_head_outputs(model: PreTrainedModel, ids: Int[Tensor, "n pos"]) -> dict[int, Float[Tensor, "n pos head d_head"]]:
    """Every layer's head outputs on ``ids``."""
    store: dict[int, Tensor] = {}
    with _recording_heads(model, store):
        model(ids)
    return store


@torch.no_grad()
def _patched_metric(model: PreTrainedModel, tokens: PairTokens, base: Baseline) -> float:
    """The normalised metric of the corrupted run with whatever patch hooks are active."""
    difference = logit_difference(model(tokens.corrupted).logits, tokens.answer, tokens.wrong).mean()
    return normalised_metric(difference, base.clean, base.corrupted).item()


def patch_residual(model: PreTrainedModel, tokens: PairTokens, progress: bool = True) -> Float[Tensor, "layer pos"]:
    """The metric with the residual stream entering block ``layer`` at ``pos`` copied from the clean run."""
    base = baseline(model, tokens)
    n_layers, n_pos = architecture.n_layers(model), tokens.clean.shape[1]
    clean = _clean_residuals(model, tokens.clean)
    effects = torch.zeros(n_layers, n_pos)
    for layer in tqdm(range(n_layers), desc="patching the residual stream", disable=not progress):
        for pos in range(n_pos):
            def patch(residual: Tensor, layer: int = layer, pos: int = pos) -> Tensor:
                patched = residual.clone()
                patched[:, pos] = clean[layer][:, pos]
                return patched
            with hooks(model, {f"resid_pre.{layer}": patch}):
                effects[layer, pos] = _patched_metric(model, tokens, base)
    return effects


@torch.no_grad()
def _clean_residuals(model: PreTrainedModel, ids: Int[Tensor, "n pos"]) -> dict[int, Float[Tensor, "n pos d_model"]]:
    sites = [f"resid_pre.{layer}" for layer in range(architecture.n_layers(model))]
    captured = capture(model, ids, sites)
    return {layer: captured[site] for layer, site in enumerate(sites)}


def replace_head(z: Float[Tensor, "n pos head d_head"], clean_z: Float[Tensor, "n pos head d_head"], head: int
                 ) -> Float[Tensor, "n pos head d_head"]:
    """Reference for Exercise 7.2: a copy of ``z`` whose head ``head`` (every position) is taken from ``clean_z``."""
    patched = z.clone()
    patched[:, :, head] = clean_z[:, :, head]
    return patched


def patch_heads(model: PreTrainedModel, tokens: PairTokens, progress: bool = True) -> Float[Tensor, "layer head"]:
    """The metric with one head's output (every position) copied from the clean run."""
    base = baseline(model, tokens)
    clean = clean_head_outputs(model, tokens.clean)
    n_layers, n_heads = architecture.n_layers(model), model.config.num_attention_heads
    effects = torch.zeros(n_layers, n_heads)
    for layer, head in tqdm([(l, h) for l in range(n_layers) for h in range(n_heads)], desc="patching heads",
                            disable=not progress):
        def patch(z: Tensor, layer: int = layer, head: int = head) -> Tensor:
            return replace_head(z, clean[layer], head)
        with editing_head_outputs(model, layer, patch):
            effects[layer, head] = _patched_metric(model, tokens, base)
    return effects


def patch_head_positions(model: PreTrainedModel, tokens: PairTokens, progress: bool = True
                         ) -> Float[Tensor, "layer head pos"]:
    """The metric with one head's output at one position copied from the clean run."""
    base = baseline(model, tokens)
    clean = clean_head_outputs(model, tokens.clean)
    n_layers, n_heads, n_pos = architecture.n_layers(model), model.config.num_attention_heads, tokens.clean.shape[1]
    effects = torch.zeros(n_layers, n_heads, n_pos)
    grid = [(l, h, p) for l in range(n_layers) for h in range(n_heads) for p in range(n_pos)]
    for layer, head, pos in tqdm(grid, desc="patching heads by position", disable=not progress):
        def patch(z: Tensor, layer: int = layer, head: int = head, pos: int = pos) -> Tensor:
            patched = z.clone()
            patched[:, pos, head] = clean[layer][:, pos, head]
            return patched
        with editing_head_outputs(model, layer, patch):
            effects[layer, head, pos] = _patched_metric(model, tokens, base)
    return effects


# --------------------------------------------------------------------------------------------
# 4. Attribution patching and integrated gradients


def _metric_gradients(model: PreTrainedModel, tokens: PairTokens, base: Baseline,
                      z_override: dict[int, Tensor] | None = None) -> dict[int, Float[Tensor, "n pos head d_head"]]:
    """Gradients of the normalised metric (mean over the batch) with respect to every layer's head outputs
    on the corrupted run (or, with ``z_override``, with those layers' head outputs replaced)."""
    store: dict[int, Tensor] = {}
    with contextlib.ExitStack() as stack:
        for layer, z in (z_override or {}).items():
            stack.enter_context(editing_head_outputs(model, layer, lambda _, z=z: z.detach().clone().requires_grad_()))
        stack.enter_context(_recording_heads(model, store, keep_grad=True))
        difference = logit_difference(model(tokens.corrupted).logits, tokens.answer, tokens.wrong).mean()
        normalised_metric(difference, base.clean, base.corrupted).backward()
    model.zero_grad(set_to_none=True)
    return {layer: z.grad.detach() for layer, z in store.items()}


def attribution_patch_head_positions(model: PreTrainedModel, tokens: PairTokens) -> Float[Tensor, "layer head pos"]:
    """Attribution patching: ``(z_clean - z_corrupted) . dM/dz`` at the corrupted run, per head and position.

    One forward and one backward pass estimate every entry of :func:`patch_head_positions`.
    """
    base = baseline(model, tokens)
    clean, corrupted = clean_head_outputs(model, tokens.clean), clean_head_outputs(model, tokens.corrupted)
    gradients = _metric_gradients(model, tokens, base)
    return torch.stack([attribution(clean[layer], corrupted[layer], gradients[layer]) for layer in sorted(gradients)])


def attribution(clean: Float[Tensor, "n pos head d_head"], corrupted: Float[Tensor, "n pos head d_head"],
                gradient: Float[Tensor, "n pos head d_head"]) -> Float[Tensor, "head pos"]:
    """Reference for Exercise 7.3: the first-order estimate of patching each head at each position.

    The gradient is of the batch's mean metric, so the per-row terms are summed over the batch (not
    averaged) and over ``d_head``.
    """
    return einops.einsum(clean - corrupted, gradient, "n pos head d_head, n pos head d_head -> head pos")


def attribution_patch_heads(model: PreTrainedModel, tokens: PairTokens) -> Float[Tensor, "layer head"]:
    """Attribution patching of whole heads: :func:`attribution_patch_head_positions` summed over positions."""
    return attribution_patch_head_positions(model, tokens).sum(dim=-1)


def integrated_gradients_head_positions(model: PreTrainedModel, tokens: PairTokens, steps: int = 8
                                        ) -> Float[Tensor, "layer head pos"]:
    """Attribution patching with the gradient averaged along the straight path from corrupted to clean.

    For each layer, its head outputs are set to ``z_corrupted + t (z_clean - z_corrupted)`` for ``steps``
    midpoints ``t`` in (0, 1) (the other layers run corrupted), and the gradients are averaged. Exact
    for a metric linear along the path; far better than one gradient where the softmax saturates.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    base = baseline(model, tokens)
    clean, corrupted = clean_head_outputs(model, tokens.clean), clean_head_outputs(model, tokens.corrupted)
    results = []
    for layer in range(architecture.n_layers(model)):
        total = torch.zeros_like(clean[layer])
        for t in (torch.arange(steps) + 0.5) / steps:
            point = corrupted[layer] + t * (clean[layer] - corrupted[layer])
            total += _metric_gradients(model, tokens, base, {layer: point})[layer]
        results.append(attribution(clean[layer], corrupted[layer], total / steps))
    return torch.stack(results)


def correlation(a: Tensor, b: Tensor) -> float:
    """Pearson correlation of two tensors' entries."""
    return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()


# --------------------------------------------------------------------------------------------
# 5. Knocking heads out


@torch.no_grad()
def accuracy_with_heads_ablated(model: PreTrainedModel, tokens: PairTokens, heads: Sequence[tuple[int, int]],
                                mean_over: Int[Tensor, "m pos"]) -> float:
    """Clean accuracy with ``heads`` mean-ablated (their mean output over ``mean_over``, per position)."""
    means = clean_head_outputs(model, mean_over)
    with contextlib.ExitStack() as stack:
        for layer in sorted({layer for layer, _ in heads}):
            chosen = [head for l, head in heads if l == layer]

            def ablate(z: Tensor, layer: int = layer, chosen: list[int] = chosen) -> Tensor:
                ablated = z.clone()
                ablated[:, :, chosen] = means[layer][:, :, chosen].mean(dim=0)
                return ablated
            stack.enter_context(editing_head_outputs(model, layer, ablate))
        return accuracy(model, tokens)


# --------------------------------------------------------------------------------------------
# 6. Plots


def plot_patching(effects: Float[Tensor, "rows columns"], title: str, y: Sequence[str], x: Sequence[str],
                  x_title: str = "position", y_title: str = "layer") -> go.Figure:
    """A heatmap of patching effects (0 = corrupted, 1 = clean), diverging around 0."""
    values = effects.float().numpy()
    limit = max(1.0, float(abs(values).max()))
    figure = go.Figure(go.Heatmap(z=values, x=list(x), y=list(y), zmid=0, zmin=-limit, zmax=limit,
                                  colorscale="RdBu", hovertemplate="%{y}, %{x}: %{z:.3f}<extra></extra>"))
    figure.update_yaxes(autorange="reversed", title=y_title)
    figure.update_xaxes(title=x_title, tickangle=-45)
    figure.update_layout(title=title, height=330, width=760)
    return figure


def position_labels(tokens: PairTokens) -> list[str]:
    """Unique x-axis labels ``"3 ␣John"`` for the positions of the pairs."""
    return [f"{i} {token.replace('Ġ', '␣')}" for i, token in enumerate(tokens.labels)]


def plot_attribution_scatter(actual: Tensor, estimated: dict[str, Tensor], title: str) -> go.Figure:
    """Each estimate against real activation patching, one point per entry, with the diagonal."""
    figure = go.Figure()
    for name, values in estimated.items():
        figure.add_trace(go.Scatter(x=actual.flatten().tolist(), y=values.flatten().tolist(), mode="markers",
                                    name=f"{name} (r = {correlation(actual, values):.2f})", marker={"size": 5}))
    low, high = float(actual.min()), float(actual.max())
    figure.add_trace(go.Scatter(x=[low, high], y=[low, high], mode="lines", name="y = x", line={"dash": "dot"}))
    figure.update_layout(title=title, xaxis_title="activation patching", yaxis_title="estimate", height=420, width=620)
    return figure


# --------------------------------------------------------------------------------------------
# Exercises 7.1 to 7.3: the checkers
