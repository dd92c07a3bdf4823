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
from typing import Any, Literal

import einops
import plotly.graph_objects as go
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from utils import architecture
from utils.batching import MEMORY_BUDGET, chunks, variants_per_pass
from utils.hooks import capture, editing_head_outputs, hooks  # hooks: what Exercise 7.16's solution edits with
from utils.progress import tqdm
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

    def first(self, k: int) -> PairTokens:
        """The first ``k`` pairs (all of them when there are fewer)."""
        if k < 1:
            raise ValueError(f"k must be at least 1 pair, got {k}")
        return PairTokens(self.clean[:k], self.corrupted[:k], self.answer[:k], self.wrong[:k], self.labels)


def _single_token(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"the answer {text!r} is {len(ids)} tokens: the logit difference needs one-token answers")
    return ids[0]


def tokenize_pairs(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[PatchingPair]) -> PairTokens:
    """Reference for Exercise 7.1: tokenise ``pairs``; every clean and corrupted prompt must have the same number
    of tokens, and every answer and wrong token must be one token.

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
    """Reference for Exercise 7.2: 0 where ``logit_diff`` equals the corrupted run's, 1 where it equals the clean run's."""
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
# 3. Activation patching, many patches per forward pass
#
# A sweep patches one activation at a time: every position of the residual stream, every head,
# every head at every position. Run one forward pass per patch and the cost is (number of patches)
# x (a whole forward pass). Two things make it cheap:
#
# - **Variants side by side.** The corrupted prompts are repeated once per patch *variant* along the
#   batch dimension ([variant * n, pos]) and each copy is patched differently, so one forward pass
#   runs many patches, chunked to a memory budget.
# - **The shared prefix once.** Every patch at block ``layer`` leaves the blocks before it untouched,
#   so the corrupted prompts run once up to there and are repeated only on entering block ``layer``.
#
# A patch is a boolean *mask* over the activation's entries (``[pos]`` of the residual stream,
# ``[pos, head]`` of the heads' outputs): where it is True the clean value is copied in. A mask that
# only covers entries where clean and corrupted are already equal (positions before the first token
# that differs) changes nothing, so it is not run: its effect is 0 by definition.

Site = Literal["resid_pre", "z"]


@contextlib.contextmanager
def _repeated_from(model: PreTrainedModel, layer: int, copies: int,
                   edit: Callable[[Tensor], Tensor] | None = None) -> Iterator[None]:
    """Inside the block, the residual stream entering block ``layer`` is repeated ``copies`` times along
    the batch (``[n, pos, d_model] -> [copies * n, pos, d_model]``, copy by copy), then passed to ``edit``.

    The blocks before ``layer`` run once for all copies; the model's output has ``copies * n`` rows. The
    per-prompt inputs every block receives besides the residual stream (an attention mask ``[n, 1, pos, pos]``,
    rotary tables ``[n, pos, d]``) are repeated the same way from block ``layer`` on.
    """
    first, *later = architecture.blocks(model)[layer:]
    n_prompts: list[int] = []                                # set when the first block is reached

    def repeat(value: Any) -> Any:
        if isinstance(value, Tensor) and value.ndim >= 2 and len(value) == n_prompts[0]:
            return einops.repeat(value, "n ... -> (copy n) ...", copy=copies)
        return tuple(map(repeat, value)) if isinstance(value, tuple) else value

    def pre_hook(module: nn.Module, args: tuple[Tensor, ...], kwargs: dict) -> tuple[tuple, dict]:
        residual, *others = args
        if module is first:
            n_prompts[:] = [len(residual)]
            residual = repeat(residual)
            residual = edit(residual) if edit else residual
        return (residual, *map(repeat, others)), {key: repeat(value) for key, value in kwargs.items()}

    handles = [block.register_forward_pre_hook(pre_hook, with_kwargs=True) for block in (first, *later)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def copy_where(masks: Bool[Tensor, "variant *entry"], clean: Float[Tensor, "n *entry d"],
               activation: Float[Tensor, "variant_n *entry d"]) -> Float[Tensor, "variant_n *entry d"]:
    """Reference for Exercise 7.4: ``activation`` (``variant`` copies of ``n`` prompts, copy by copy) with copy
    ``v`` taking ``clean``'s value wherever ``masks[v]`` is True."""
    copies = einops.rearrange(activation, "(variant n) ... -> variant n ...", variant=len(masks))
    chosen = einops.rearrange(masks, "variant ... -> variant () ... ()")
    return einops.rearrange(torch.where(chosen, clean, copies), "variant n ... -> (variant n) ...")


def _metric_per_variant(logits: Float[Tensor, "variant_n pos vocab"], tokens: PairTokens, base: Baseline,
                        n_variants: int) -> Float[Tensor, "variant"]:
    """The normalised metric of each of ``n_variants`` copies of the prompts (rows variant by variant)."""
    difference = logit_difference(logits, tokens.answer.repeat(n_variants), tokens.wrong.repeat(n_variants))
    per_variant = einops.reduce(difference, "(variant n) -> variant", "mean", variant=n_variants)
    return normalised_metric(per_variant, base.clean, base.corrupted)


@torch.no_grad()
def patched_metrics(model: PreTrainedModel, tokens: PairTokens, base: Baseline, layer: int, site: Site,
                    clean: Float[Tensor, "n *entry d"], masks: Bool[Tensor, "variant *entry"],
                    memory_budget: int = MEMORY_BUDGET, progress: tqdm | None = None) -> Float[Tensor, "variant"]:
    """The normalised metric of the corrupted run under each patch ``masks[v]`` at ``layer``, many per pass.

    ``site`` is ``"resid_pre"`` (the residual stream entering block ``layer``, entries ``[pos]``) or ``"z"``
    (the heads' outputs, entries ``[pos, head]``); ``clean`` is that activation on the clean prompts. Variants
    run in chunks of :func:`variants_per_pass`; ``progress`` advances by one per variant.
    """
    n, n_pos = tokens.corrupted.shape
    metrics = []
    for chunk in chunks(len(masks), variants_per_pass(model, n, n_pos, memory_budget)):
        part = masks[chunk]
        patch = lambda activation, part=part: copy_where(part, clean, activation)  # noqa: E731
        with contextlib.ExitStack() as stack:
            stack.enter_context(_repeated_from(model, layer, len(part), patch if site == "resid_pre" else None))
            if site == "z":
                stack.enter_context(editing_head_outputs(model, layer, patch))
            logits = model(tokens.corrupted, logits_to_keep=1).logits                 # [(variant n), 1, vocab]
        metrics.append(_metric_per_variant(logits, tokens, base, len(part)))
        if progress is not None:
            progress.update(len(part))
    return torch.cat(metrics)


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


def patch_sweep(model: PreTrainedModel, tokens: PairTokens, site: Site, masks: Bool[Tensor, "variant *entry"],
                description: str, memory_budget: int = MEMORY_BUDGET, progress: bool = True
                ) -> Float[Tensor, "layer variant"]:
    """The metric of every patch ``masks[v]`` at every layer: ``effects[layer, v]``.

    Patches that only copy values equal in the clean and the corrupted run are not run (their effect is 0).
    """
    base = baseline(model, tokens)
    clean, corrupted = _activations(model, tokens.clean, site), _activations(model, tokens.corrupted, site)
    n_layers = architecture.n_layers(model)
    effects = torch.zeros(n_layers, len(masks))
    changing = [_masks_that_change(masks, clean[layer], corrupted[layer]) for layer in range(n_layers)]
    with tqdm(total=sum(len(c) for c in changing), desc=description, unit="patch", disable=not progress) as bar:
        for layer, variants in enumerate(changing):
            if len(variants):
                effects[layer, variants] = patched_metrics(model, tokens, base, layer, site, clean[layer],
                                                           masks[variants], memory_budget, bar)
    return effects


def _masks_that_change(masks: Bool[Tensor, "variant *entry"], clean: Float[Tensor, "n *entry d"],
                       corrupted: Float[Tensor, "n *entry d"]) -> Int[Tensor, "changing"]:
    """Indices of the masks that cover at least one entry where ``clean`` and ``corrupted`` differ."""
    differs = einops.reduce(clean != corrupted, "n ... d -> ...", "max")                    # [*entry]
    return torch.nonzero((masks & differs).flatten(1).any(dim=1)).flatten()


def _activations(model: PreTrainedModel, ids: Int[Tensor, "n pos"], site: Site) -> dict[int, Tensor]:
    return _clean_residuals(model, ids) if site == "resid_pre" else clean_head_outputs(model, ids)


def patch_residual(model: PreTrainedModel, tokens: PairTokens, progress: bool = True,
                   memory_budget: int = MEMORY_BUDGET) -> Float[Tensor, "layer pos"]:
    """Reference for Exercise 7.16: the metric with the residual stream entering block ``layer`` at ``pos`` copied
    from the clean run (the learner's version runs every position side by side at each layer; this one also
    shares the blocks before ``layer`` and skips the positions before the first token that differs)."""
    one_position = torch.eye(tokens.clean.shape[1], dtype=torch.bool)                 # [variant = pos, pos]
    return patch_sweep(model, tokens, "resid_pre", one_position, "patching the residual stream", memory_budget,
                       progress)


@torch.no_grad()
def _clean_residuals(model: PreTrainedModel, ids: Int[Tensor, "n pos"]) -> dict[int, Float[Tensor, "n pos d_model"]]:
    sites = [f"resid_pre.{layer}" for layer in range(architecture.n_layers(model))]
    captured = capture(model, ids, sites)
    return {layer: captured[site] for layer, site in enumerate(sites)}


def replace_head(z: Float[Tensor, "n pos head d_head"], clean_z: Float[Tensor, "n pos head d_head"], head: int
                 ) -> Float[Tensor, "n pos head d_head"]:
    """Reference for Exercise 7.3: a copy of ``z`` whose head ``head`` (every position) is taken from ``clean_z``."""
    patched = z.clone()
    patched[:, :, head] = clean_z[:, :, head]
    return patched


def patch_heads(model: PreTrainedModel, tokens: PairTokens, progress: bool = True,
                memory_budget: int = MEMORY_BUDGET) -> Float[Tensor, "layer head"]:
    """The metric with one head's output (every position) copied from the clean run."""
    n_pos, n_heads = tokens.clean.shape[1], model.config.num_attention_heads
    one_head = einops.repeat(torch.eye(n_heads, dtype=torch.bool), "variant head -> variant pos head", pos=n_pos)
    return patch_sweep(model, tokens, "z", one_head, "patching heads", memory_budget, progress)


def patch_head_positions(model: PreTrainedModel, tokens: PairTokens, progress: bool = True,
                         memory_budget: int = MEMORY_BUDGET) -> Float[Tensor, "layer head pos"]:
    """Reference for Exercise 7.6: the metric with one head's output at one position copied from the clean run."""
    n_pos, n_heads = tokens.clean.shape[1], model.config.num_attention_heads
    one_entry = einops.rearrange(torch.eye(n_heads * n_pos, dtype=torch.bool),      # variant = (head, pos)
                                 "variant (head pos) -> variant pos head", head=n_heads)
    effects = patch_sweep(model, tokens, "z", one_entry, "patching heads by position", memory_budget, progress)
    return einops.rearrange(effects, "layer (head pos) -> layer head pos", head=n_heads)


# --------------------------------------------------------------------------------------------
# 4. Attribution patching and integrated gradients


def _metric_gradients(model: PreTrainedModel, tokens: PairTokens, base: Baseline
                      ) -> dict[int, Float[Tensor, "n pos head d_head"]]:
    """Gradients of the normalised metric (mean over the batch) with respect to every layer's head outputs
    on the corrupted run."""
    store: dict[int, Tensor] = {}
    with _recording_heads(model, store, keep_grad=True):
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
    """Reference for Exercise 7.7: the first-order estimate of patching each head at each position.

    The gradient is of the batch's mean metric, so the per-row terms are summed over the batch (not
    averaged) and over ``d_head``.
    """
    return einops.einsum(clean - corrupted, gradient, "n pos head d_head, n pos head d_head -> head pos")


def attribution_patch_heads(model: PreTrainedModel, tokens: PairTokens) -> Float[Tensor, "layer head"]:
    """Attribution patching of whole heads: :func:`attribution_patch_head_positions` summed over positions."""
    return attribution_patch_head_positions(model, tokens).sum(dim=-1)


def integrated_gradients_head_positions(model: PreTrainedModel, tokens: PairTokens, steps: int = 8,
                                        memory_budget: int = MEMORY_BUDGET) -> Float[Tensor, "layer head pos"]:
    """Attribution patching with the gradient averaged along the straight path from corrupted to clean.

    For each layer, :func:`integrated_gradients` of its head outputs, the gradients taken by
    :func:`metric_gradient_at` (the other layers run corrupted). Exact for a metric linear along the
    path; far better than one gradient where the softmax saturates.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    clean, corrupted = clean_head_outputs(model, tokens.clean), clean_head_outputs(model, tokens.corrupted)
    return torch.stack([integrated_gradients(clean[layer], corrupted[layer],
                                             metric_gradient_at(model, tokens, layer, memory_budget), steps)
                        for layer in range(architecture.n_layers(model))])


def integrated_gradients(clean: Float[Tensor, "n pos head d_head"], corrupted: Float[Tensor, "n pos head d_head"],
                         gradient_at: Callable[[Tensor], Tensor], steps: int) -> Float[Tensor, "head pos"]:
    """Reference for Exercise 7.8: :func:`attribution` with the metric's gradient averaged over ``steps`` points
    ``corrupted + t (clean - corrupted)``, at the midpoints ``t = (k + 1/2) / steps`` of ``steps`` equal parts
    of [0, 1].

    ``gradient_at(points)`` takes the points side by side, ``[steps, n, pos, head, d_head]``, and returns the
    gradient at each, of the same shape.
    """
    t = (torch.arange(steps) + 0.5) / steps
    points = corrupted + einops.rearrange(t, "step -> step 1 1 1 1") * (clean - corrupted)
    return attribution(clean, corrupted, gradient_at(points).mean(dim=0))


def metric_gradient_at(model: PreTrainedModel, tokens: PairTokens, layer: int, memory_budget: int = MEMORY_BUDGET
                       ) -> Callable[[Tensor], Tensor]:
    """``gradient_at(points)``: the normalised metric's gradient with respect to ``layer``'s head outputs, at each
    of ``points`` ``[variant, n, pos, head, d_head]`` put in place of them on the corrupted run.

    The points run side by side in one batch (as many as fit ``memory_budget``), from ``layer`` on: the
    blocks before it run once for all of them.
    """
    base = baseline(model, tokens)
    n, n_pos = tokens.corrupted.shape
    per_pass = variants_per_pass(model, 3 * n, n_pos, memory_budget)        # 3x: activations kept for the backward

    def gradient_at(points: Float[Tensor, "variant n pos head d_head"]) -> Float[Tensor, "variant n pos head d_head"]:
        return torch.cat([_metric_gradients_at(model, tokens, base, layer, points[chunk.start:chunk.stop])
                          for chunk in chunks(len(points), per_pass)])
    return gradient_at


def _metric_gradients_at(model: PreTrainedModel, tokens: PairTokens, base: Baseline, layer: int,
                         points: Float[Tensor, "variant n pos head d_head"]) -> Float[Tensor, "variant n pos head d_head"]:
    """The metric's gradient at each of ``points``: one forward and one backward pass for all of them."""
    variants = len(points)
    flat = einops.rearrange(points, "variant n ... -> (variant n) ...").detach().requires_grad_()
    with _repeated_from(model, layer, variants, edit=Tensor.detach), editing_head_outputs(model, layer, lambda _: flat):
        logits = model(tokens.corrupted, logits_to_keep=1).logits
    _metric_per_variant(logits, tokens, base, variants).sum().backward()   # the points do not interact
    model.zero_grad(set_to_none=True)
    return einops.rearrange(flat.grad, "(variant n) ... -> variant n ...", variant=variants)


def correlation(a: Tensor, b: Tensor) -> float:
    """Pearson correlation of two tensors' entries."""
    return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()


# --------------------------------------------------------------------------------------------
# 5. Path patching: one head's effect through another
#
# Patching a head measures its effect along every path to the logits. Path patching (Wang et al. 2022;
# Goldowsky-Dill et al. 2023) keeps one: the *sender*'s clean output reaches the *receiver*, a head of a
# later layer, and nothing else. Two runs on the corrupted prompts:
#
# 1. the sender's output copied from the clean run, every head of the layers between the two frozen at
#    its corrupted output (the MLPs recompute, so the sender reaches the receiver directly or through
#    them), and the receiver's output recorded;
# 2. only the receiver's output replaced by the recorded one, everything after it recomputed: the metric.

#: A head, ``(layer, head)``.
Head = tuple[int, int]


def _check_head(model: PreTrainedModel, head: Head, role: str) -> None:
    n_layers, n_heads = architecture.n_layers(model), model.config.num_attention_heads
    if not (0 <= head[0] < n_layers and 0 <= head[1] < n_heads):
        raise ValueError(f"the {role} {head[0]}.{head[1]} is not a head of this model ({n_layers} layers of {n_heads} "
                         "heads, counted from 0)")


def _check_path(model: PreTrainedModel, sender: Head, receiver: Head) -> None:
    _check_head(model, sender, "sender")
    _check_head(model, receiver, "receiver")
    if sender[0] >= receiver[0]:
        raise ValueError(f"the sender {sender[0]}.{sender[1]} must be in an earlier layer than the receiver "
                         f"{receiver[0]}.{receiver[1]}: a head reads only what the layers before it wrote")


@contextlib.contextmanager
def _sending(model: PreTrainedModel, sender: Head, until_layer: int, clean_z: dict[int, Tensor],
             corrupted_z: dict[int, Tensor]) -> Iterator[None]:
    """Inside the block, the sender's output is its clean one and every head of the layers after the sender's and
    before ``until_layer`` is frozen at its corrupted output: the one path open from the sender."""
    send_layer, send_head = sender
    with contextlib.ExitStack() as stack:
        stack.enter_context(editing_head_outputs(model, send_layer,
                                                 lambda z: replace_head(z, clean_z[send_layer], send_head)))
        for layer in range(send_layer + 1, until_layer):
            stack.enter_context(editing_head_outputs(model, layer, lambda z, layer=layer: corrupted_z[layer]))
        yield


@torch.no_grad()
def path_patch(model: PreTrainedModel, tokens: PairTokens, sender: Head, receiver: Head) -> float:
    """Reference for Exercise 7.14: the normalised metric when the sender's clean output reaches the receiver and
    nothing else (the heads of the layers between them frozen at their corrupted outputs)."""
    _check_path(model, sender, receiver)
    receive_layer, receive_head = receiver
    clean_z, corrupted_z = clean_head_outputs(model, tokens.clean), clean_head_outputs(model, tokens.corrupted)
    received: list[Tensor] = []                                          # run 1's z at the receiver's layer

    def record(z: Tensor) -> Tensor:
        received.append(z.clone())
        return z

    with _sending(model, sender, receive_layer, clean_z, corrupted_z), \
            editing_head_outputs(model, receive_layer, record):                    # run 1
        model(tokens.corrupted)
    with editing_head_outputs(model, receive_layer, lambda z: replace_head(z, received[0], receive_head)):   # run 2
        difference = logit_difference(model(tokens.corrupted).logits, tokens.answer, tokens.wrong).mean()
    base = baseline(model, tokens)
    return normalised_metric(difference, base.clean, base.corrupted).item()


@torch.no_grad()
def path_patch_to_logits(model: PreTrainedModel, tokens: PairTokens, sender: Head) -> float:
    """Reference for Exercise 7.15: the normalised metric when the sender's clean output reaches the logits along
    the paths no later head is on: every head of the later layers frozen at its corrupted output (the MLPs
    recompute), so what is left is the sender's write to the residual stream, read directly by the unembedding or
    through MLPs."""
    _check_head(model, sender, "sender")
    clean_z, corrupted_z = clean_head_outputs(model, tokens.clean), clean_head_outputs(model, tokens.corrupted)
    with _sending(model, sender, architecture.n_layers(model), clean_z, corrupted_z):
        difference = logit_difference(model(tokens.corrupted).logits, tokens.answer, tokens.wrong).mean()
    base = baseline(model, tokens)
    return normalised_metric(difference, base.clean, base.corrupted).item()


@torch.no_grad()
def path_patch_senders(model: PreTrainedModel, tokens: PairTokens, receiver: Head, progress: bool = True,
                       memory_budget: int = MEMORY_BUDGET) -> Float[Tensor, "sender_layer head"]:
    """:func:`path_patch` of every head of the layers before the receiver's into it, ``[receiver's layer, head]``:
    the senders side by side along the batch (each copy of the prompts sends another head), in chunks of
    :func:`variants_per_pass`."""
    _check_head(model, receiver, "receiver")
    receive_layer, receive_head = receiver
    if receive_layer == 0:
        raise ValueError(f"the receiver {receive_layer}.{receive_head} is in the first layer: a sender must be in an "
                         "earlier layer than the receiver, and there is none")
    n_heads = model.config.num_attention_heads
    base = baseline(model, tokens)
    clean_z, corrupted_z = clean_head_outputs(model, tokens.clean), clean_head_outputs(model, tokens.corrupted)
    senders = [(layer, head) for layer in range(receive_layer) for head in range(n_heads)]
    n, n_pos = tokens.corrupted.shape
    effects = []
    with tqdm(total=len(senders), desc=f"path patching into {receive_layer}.{receive_head}", unit="sender",
              disable=not progress) as bar:
        for chunk in chunks(len(senders), variants_per_pass(model, n, n_pos, memory_budget)):
            part = [senders[i] for i in chunk]
            received = _received_from_senders(model, tokens, part, receive_layer, clean_z, corrupted_z)
            receive = lambda z, received=received: replace_head(z, received, receive_head)  # noqa: E731
            with _repeated_from(model, receive_layer, len(part)), editing_head_outputs(model, receive_layer, receive):
                logits = model(tokens.corrupted, logits_to_keep=1).logits               # [(variant n), 1, vocab]
            effects.append(_metric_per_variant(logits, tokens, base, len(part)))
            bar.update(len(part))
    return einops.rearrange(torch.cat(effects), "(layer head) -> layer head", head=n_heads)


def _received_from_senders(model: PreTrainedModel, tokens: PairTokens, senders: Sequence[Head], receive_layer: int,
                           clean_z: dict[int, Tensor], corrupted_z: dict[int, Tensor]
                           ) -> Float[Tensor, "variant_n pos head d_head"]:
    """Run 1 of path patching for each sender side by side: the head outputs of ``receive_layer``, copy by copy, when
    that copy's sender is clean and the heads of the layers between it and ``receive_layer`` are frozen at their
    corrupted outputs."""
    n_heads, n_pos = model.config.num_attention_heads, tokens.corrupted.shape[1]
    received: list[Tensor] = []

    def edit(layer: int) -> Callable[[Tensor], Tensor]:
        sends = torch.tensor([[sender == (layer, head) for head in range(n_heads)] for sender in senders])
        frozen = torch.tensor([send_layer < layer for send_layer, _ in senders])                  # [variant]
        send_masks = einops.repeat(sends, "variant head -> variant pos head", pos=n_pos)
        frozen_masks = einops.repeat(frozen, "variant -> variant pos head", pos=n_pos, head=n_heads)
        return lambda z: copy_where(frozen_masks, corrupted_z[layer], copy_where(send_masks, clean_z[layer], z))

    def record(z: Tensor) -> Tensor:
        received.append(z.clone())
        return z

    with contextlib.ExitStack() as stack:
        for layer in range(receive_layer):
            stack.enter_context(editing_head_outputs(model, layer, edit(layer)))
        stack.enter_context(editing_head_outputs(model, receive_layer, record))
        model(einops.repeat(tokens.corrupted, "n pos -> (variant n) pos", variant=len(senders)))
    return received[0]


# --------------------------------------------------------------------------------------------
# 6. Knocking heads out


@torch.no_grad()
def logit_difference_with_heads_ablated(model: PreTrainedModel, tokens: PairTokens, heads: Sequence[tuple[int, int]],
                                        mean_over: Int[Tensor, "m pos"]) -> Float[Tensor, "n"]:
    """Reference for Exercise 7.5: the clean prompts' logit differences with ``heads`` (``(layer, head)`` pairs)
    mean-ablated: each one's output at each position replaced by its mean over the prompts ``mean_over``
    at that position."""
    if mean_over.shape[1] != tokens.clean.shape[1]:
        raise ValueError(f"mean_over has {mean_over.shape[1]} positions and the prompts {tokens.clean.shape[1]}: the "
                         "means are taken per position, so use prompts of the same template (ioi_pairs(m, seed=1))")
    means = clean_head_outputs(model, mean_over)                                   # {layer: [m, pos, head, d_head]}
    n_heads = model.config.num_attention_heads
    with contextlib.ExitStack() as stack:
        for layer in sorted({layer for layer, _ in heads}):
            ablated = torch.zeros(n_heads, 1, dtype=torch.bool)                    # [head, 1]: the same for every d_head
            ablated[[head for l, head in heads if l == layer]] = True
            mean = means[layer].mean(dim=0)                                        # [pos, head, d_head]
            stack.enter_context(editing_head_outputs(
                model, layer, lambda z, ablated=ablated, mean=mean: torch.where(ablated, mean, z)))
        return logit_difference(model(tokens.clean).logits, tokens.answer, tokens.wrong)


def accuracy_with_heads_ablated(model: PreTrainedModel, tokens: PairTokens, heads: Sequence[tuple[int, int]],
                                mean_over: Int[Tensor, "m pos"]) -> float:
    """Clean accuracy with ``heads`` mean-ablated (:func:`logit_difference_with_heads_ablated`)."""
    return (logit_difference_with_heads_ablated(model, tokens, heads, mean_over) > 0).float().mean().item()


# --------------------------------------------------------------------------------------------
# 7. Plots


def plot_patching(effects: Float[Tensor, "rows columns"], title: str, y: Sequence[str], x: Sequence[str],
                  x_title: str = "position", y_title: str = "layer") -> go.Figure:
    """A heatmap of patching effects (0 = corrupted, 1 = clean), diverging around 0."""
    values = effects.float().numpy()
    limit = max(1.0, float(abs(values).max()))
    figure = go.Figure(go.Heatmap(z=values, x=list(x), y=list(y), zmid=0, zmin=-limit, zmax=limit,
                                  colorscale="RdBu", hovertemplate="%{y}, %{x}: %{z:.3f}<extra></extra>"))
    figure.update_yaxes(autorange="reversed", title=y_title)
    figure.update_xaxes(title=x_title, tickangle=-45)
    figure.update_layout(title=title, height=330)
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

