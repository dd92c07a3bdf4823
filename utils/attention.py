"""Attention patterns, previous-token and induction heads (chapter 3).

An *induction head* completes patterns: having seen ``... A B ... A``, it attends from the
second ``A`` to the token after the first one, ``B``, and copies it. It needs a *previous-token
head* in an earlier layer, which writes "the token before me was ``A``" into the position of
``B`` (Olsson et al. 2022). On repeated random tokens ``BOS w1..wL w1..wL`` (nothing to predict
in the first copy, everything in the second) both kinds of head show up in the patterns::

    tokens = repeated_random_tokens(tokenizer, n=64, length=20)          # [64, 41]
    patterns = attention_patterns(model, tokens)                          # [layer, batch, head, query, key]
    induction = induction_scores(patterns, length=20)                     # [layer, head]
    previous = previous_token_scores(patterns)                            # [layer, head]
    heads = heads_above(induction, threshold=0.5)                         # [(2, 0), (2, 4)] on the course model

and ablating the induction heads takes the loss on the second copy back up to the loss on the
first: :func:`copy_losses`.

Exercises 3.7 to 3.13 and 3.15 of chapter 3 have their references here (their checkers are in
:mod:`utils.checkers.caching_hooks`): the scores of one layer, a pattern from its queries and keys,
repeated sequences, the loss on each copy, the ablation test and the composition scores.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import einops
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from plotly.subplots import make_subplots
from torch import Tensor
from transformers import PreTrainedModel

from utils import architecture
from utils.hooks import Ablation, ablate_head, capture

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

Head = tuple[int, int]


# --------------------------------------------------------------------------------------------
# Patterns and scores


def attention_patterns(model: PreTrainedModel, input_ids: Int[Tensor, "batch pos"]
                       ) -> Float[Tensor, "layer batch head query key"]:
    """Every layer's attention probabilities on ``input_ids``, from one forward pass."""
    sites = [f"pattern.{layer}" for layer in range(architecture.n_layers(model))]
    return torch.stack(list(capture(model, input_ids, sites).values()))


def _check_pattern(pattern: Tensor, name: str = "pattern") -> None:
    if pattern.ndim < 4 or pattern.shape[-1] != pattern.shape[-2]:
        raise ValueError(f"{name} must be [..., batch, head, query, key] with query = key positions, got shape "
                         f"{tuple(pattern.shape)}: capture it with capture(model, input_ids, ['pattern.0'])")


def previous_token_scores(pattern: Float[Tensor, "*layer batch head query key"]) -> Float[Tensor, "*layer head"]:
    """Each head's mean attention from a token to the token just before it.

    Averaged over the batch and over the queries 1..pos-1 (query 0 has no previous token).
    A perfect previous-token head scores 1; uniform attention over ``n`` keys scores about ``1/n``.
    """
    _check_pattern(pattern)
    to_previous = pattern.diagonal(offset=-1, dim1=-2, dim2=-1)   # [*layer, batch, head, pos - 1]
    return einops.reduce(to_previous, "... batch head query -> ... head", "mean")


def induction_scores(pattern: Float[Tensor, "*layer batch head query key"], length: int
                     ) -> Float[Tensor, "*layer head"]:
    """Each head's mean attention from a token of the second copy to the token after its first occurrence.

    ``pattern`` comes from sequences ``BOS w1..wL w1..wL`` (:func:`repeated_random_tokens`,
    ``L = length``): the query at position ``q`` in ``L+1..2L`` holds the same token as position
    ``q - L``, so an induction head attends to ``q - L + 1``. Averaged over the batch and the ``L`` queries.
    """
    _check_pattern(pattern)
    if pattern.shape[-1] != 2 * length + 1:
        raise ValueError(f"a pattern over BOS + two copies of {length} tokens has {2 * length + 1} positions, this one "
                         f"has {pattern.shape[-1]}: pass the length of one copy (repeated_random_tokens(..., length))")
    queries = torch.arange(length + 1, 2 * length + 1)
    to_next_of_first = pattern[..., queries, queries - length + 1]   # [*layer, batch, head, L]
    return einops.reduce(to_next_of_first, "... batch head query -> ... head", "mean")


def heads_above(scores: Float[Tensor, "layer head"], threshold: float) -> list[Head]:
    """The ``(layer, head)`` pairs whose score exceeds ``threshold``, best first."""
    layers, heads = torch.nonzero(scores > threshold, as_tuple=True)
    pairs = [(int(layer), int(head)) for layer, head in zip(layers, heads)]
    return sorted(pairs, key=lambda pair: -float(scores[pair]))


# --------------------------------------------------------------------------------------------
# Losses on repeated tokens, with heads ablated


@contextlib.contextmanager
def ablate_heads(model: PreTrainedModel, heads: Sequence[Head], how: Ablation = "zero",
                 mean_over: Int[Tensor, "batch pos"] | None = None) -> Iterator[PreTrainedModel]:
    """Inside the ``with`` block, every ``(layer, head)`` of ``heads`` is ablated (see :func:`utils.hooks.ablate_head`)."""
    with contextlib.ExitStack() as stack:
        for layer, head in heads:
            stack.enter_context(ablate_head(model, layer, head, how, mean_over))
        yield model


@torch.no_grad()
def token_losses(model: PreTrainedModel, input_ids: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos_minus_1"]:
    """The loss (nats) of predicting each token from the ones before it: entry ``i`` is for token ``i + 1``."""
    logits = model(input_ids).logits                                  # [batch, pos, vocab]
    return F.cross_entropy(einops.rearrange(logits[:, :-1], "batch pos vocab -> batch vocab pos"),
                           input_ids[:, 1:], reduction="none")


def losses_by_copy(losses: Float[Tensor, "batch two_length"], length: int) -> tuple[float, float]:
    """Reference for Exercise 3.9: from the per-token losses of ``BOS w1..wL w1..wL`` (entry ``i`` for
    token ``i + 1``), the mean loss on the first copy's ``w2..wL`` and on the second copy's ``w2..wL``.

    ``w1`` of each copy is left out: nothing before it predicts it.
    """
    if losses.ndim != 2 or losses.shape[1] != 2 * length:
        raise ValueError(f"losses must be [batch, {2 * length}] (one per predicted token of BOS + two copies of "
                         f"{length}), got shape {tuple(losses.shape)}: pass token_losses(model, tokens)")
    return losses[:, 1:length].mean().item(), losses[:, length + 1:].mean().item()


def copy_losses(model: PreTrainedModel, tokens: Int[Tensor, "batch two_length_plus_one"], length: int
                ) -> tuple[float, float]:
    """Mean loss on the first copy (predicting ``w2..wL``) and on the second copy (the repeat's ``w2..wL``).

    Run it inside :func:`ablate_heads` to measure what the heads do.
    """
    return losses_by_copy(token_losses(model, tokens), length)


def copy_losses_with_heads_ablated(model: PreTrainedModel, tokens: Int[Tensor, "batch two_length_plus_one"],
                                   length: int, heads: Sequence[Head], how: Ablation = "zero",
                                   mean_over: Int[Tensor, "batch pos"] | None = None) -> tuple[float, float]:
    """Reference for Exercise 3.12: :func:`copy_losses` with every head of ``heads`` ablated, the
    causal test of a head score: if the heads are the mechanism, the second copy costs what the first does."""
    with ablate_heads(model, heads, how, mean_over):
        return copy_losses(model, tokens, length)


def repeated_sequences(pool: Int[Tensor, "n_pool"], n: int, length: int, bos: int, seed: int = 0
                       ) -> Int[Tensor, "n two_length_plus_one"]:
    """Reference for Exercise 3.8: ``n`` rows ``BOS w1..wL w1..wL``, each ``w`` drawn uniformly from ``pool``
    (a 1-D tensor of token ids), reproducibly from ``seed`` (a ``torch.Generator``, not the global state)."""
    if pool.ndim != 1 or len(pool) < 2:
        raise ValueError(f"pool must be a 1-D tensor of at least 2 token ids, got shape {tuple(pool.shape)}")
    generator = torch.Generator().manual_seed(seed)
    copies = pool[torch.randint(len(pool), (n, length), generator=generator)]      # [n, L]
    return torch.cat([torch.full((n, 1), bos, dtype=copies.dtype), copies, copies], dim=1)


# --------------------------------------------------------------------------------------------
# Patterns from queries and keys; composition of heads


def pattern_from_cache(cache: Mapping[str, Tensor], layer: int) -> Float[Tensor, "batch head query key"]:
    """Reference for Exercise 3.7: the attention pattern of ``layer`` recomputed from the queries and
    keys of a TransformerLens cache, ``softmax(q k^T / sqrt(d_head))`` over the keys at or before each query.

    The queries and keys are ``blocks.{layer}.attn.hook_q`` and ``hook_k``, ``[batch, pos, head, d_head]``,
    or, in a model with rotary positions (Pythia, Llama), ``hook_rot_q`` and ``hook_rot_k`` after the
    rotation. With grouped-query attention (Llama) there are fewer key heads: key head ``j`` serves
    query heads ``j * g .. j * g + g - 1``.
    """
    name = f"blocks.{layer}.attn.hook_"
    q = cache[name + "rot_q"] if name + "rot_q" in cache else cache[name + "q"]      # [batch, pos, head, d_head]
    k = cache[name + "rot_k"] if name + "rot_k" in cache else cache[name + "k"]      # [batch, pos, kv_head, d_head]
    k = k.repeat_interleave(q.shape[2] // k.shape[2], dim=2)                          # [batch, pos, head, d_head]
    scores = einops.einsum(q, k, "batch query head d, batch key head d -> batch head query key") / q.shape[-1] ** 0.5
    future = torch.ones_like(scores, dtype=torch.bool).triu(diagonal=1)
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1)


def _composition(left: Float[Tensor, "a d d"], right: Float[Tensor, "b d d"]) -> Float[Tensor, "a b"]:
    """``||L_a R_b||_F / (||L_a||_F ||R_b||_F)`` for every pair, through ``||L R||_F^2 = tr(L^T L R R^T)``:
    no ``[a, b, d, d]`` product is ever held (at GPT-2 small's size it would take 340 MB)."""
    left_gram = einops.einsum(left, left, "a i j, a i k -> a j k")                   # L^T L
    right_gram = einops.einsum(right, right, "b j i, b k i -> b j k")                # R R^T
    squared = einops.einsum(left_gram, right_gram, "a j k, b k j -> a b")
    norms = einops.einsum(left_gram, "a j j -> a")[:, None] * einops.einsum(right_gram, "b j j -> b")[None, :]
    return (squared.clamp(min=0) / norms).sqrt()


def _ov_and_qk(tl_model: HookedTransformer, layer: int) -> tuple[Float[Tensor, "head d d"], Float[Tensor, "head d d"]]:
    """Each head's ``W_OV = W_V W_O`` and ``W_QK = W_Q W_K^T`` (``[head, d_model, d_model]``, row-vector convention)."""
    ov = einops.einsum(tl_model.W_V[layer], tl_model.W_O[layer], "head d h, head h e -> head d e")
    qk = einops.einsum(tl_model.W_Q[layer], tl_model.W_K[layer], "head d h, head e h -> head d e")
    return ov, qk


@torch.no_grad()
def k_composition_scores(tl_model: HookedTransformer, earlier: int, later: int) -> Float[Tensor, "head_earlier head_later"]:
    """Reference for Exercise 3.13: how much each head of layer ``earlier`` writes into the subspace that
    each head of layer ``later`` reads its *keys* from (Elhage et al., 2021):
    ``||W_OV^e (W_QK^l)^T||_F / (||W_OV^e||_F ||W_QK^l||_F)``, the same as TransformerLens's
    ``all_composition_scores("K")[earlier, :, later, :]``. Random matrices of the same shapes score
    about ``1 / sqrt(d_model)`` on average (``composition_baseline``)."""
    if not earlier < later:
        raise ValueError(f"composition goes from an earlier layer into a later one: got earlier={earlier}, later={later}")
    ov, _ = _ov_and_qk(tl_model, earlier)
    _, qk = _ov_and_qk(tl_model, later)
    return _composition(ov, qk.transpose(1, 2))


def _factored_composition(left: tuple[Float[Tensor, "a d h"], Float[Tensor, "a h d"]],
                          right: tuple[Float[Tensor, "b d h"], Float[Tensor, "b h d"]]) -> Float[Tensor, "a b"]:
    """:func:`_composition` of ``L_a = A_a B_a`` and ``R_b = C_b D_b`` from their thin factors (``h = d_head``):
    with the Gram matrices ``G = A^T A``, ``H = D D^T`` and the middle ``M = B C`` (all ``[h, h]``),
    ``||L R||_F^2 = tr(G M H M^T)``, so no ``d_model``-wide matrix and no SVD is ever formed."""
    (a, b), (c, d) = left, right
    gram_a, gram_b = einops.einsum(a, a, "x d i, x d j -> x i j"), einops.einsum(b, b, "x i d, x j d -> x i j")
    gram_c, gram_d = einops.einsum(c, c, "y d i, y d j -> y i j"), einops.einsum(d, d, "y i d, y j d -> y i j")
    middle = einops.einsum(b, c, "x i d, y d j -> x y i j")                                  # [a, b, h, h]
    through = gram_a[:, None] @ middle @ gram_d[None]                                        # G M H
    squared = einops.einsum(through, middle, "x y i j, x y i j -> x y")                      # tr(G M H M^T)
    left_norm = einops.einsum(gram_a, gram_b, "x i j, x i j -> x")                          # ||L||_F^2 = tr(G B B^T)
    right_norm = einops.einsum(gram_c, gram_d, "y i j, y i j -> y")
    norms = left_norm[:, None] * right_norm[None, :]
    return (squared.clamp(min=0) / norms).sqrt()


@torch.no_grad()
def composition_scores(tl_model: HookedTransformer, mode: Literal["Q", "K", "V"]
                       ) -> Float[Tensor, "layer head later_layer later_head"]:
    """Reference for bonus exercise 3.15: every head's ``mode``-composition score into every head of every later
    layer (0 where the second layer is not later), as ``all_composition_scores(mode)`` of TransformerLens:
    Q and K with ``W_QK`` (queries or keys read the earlier head's output), V with the later ``W_OV``."""
    if mode not in ("Q", "K", "V"):
        raise ValueError(f"mode must be 'Q', 'K' or 'V', got {mode!r}")
    n_layers, n_heads = tl_model.cfg.n_layers, tl_model.cfg.n_heads
    scores = torch.zeros(n_layers, n_heads, n_layers, n_heads)
    for earlier in range(n_layers):
        ov = tl_model.W_V[earlier], tl_model.W_O[earlier]                                  # W_OV = W_V W_O
        for later in range(earlier + 1, n_layers):
            q, k = tl_model.W_Q[later], tl_model.W_K[later]                                # W_QK = W_Q W_K^T
            right = {"Q": (q, k.mT), "K": (k, q.mT), "V": (tl_model.W_V[later], tl_model.W_O[later])}[mode]
            scores[earlier, :, later] = _factored_composition(ov, right)
    return scores


def composition_baseline(d_model: int, d_head: int, n: int = 64, seed: int = 0) -> float:
    """The mean composition score of random ``W_OV``-like and ``W_QK``-like matrices (rank ``d_head``,
    ``d_model`` wide): what a score means nothing above."""
    generator = torch.Generator().manual_seed(seed)

    def low_rank() -> Float[Tensor, "n d d"]:
        return torch.randn(n, d_model, d_head, generator=generator) @ torch.randn(n, d_head, d_model, generator=generator)

    return _composition(low_rank(), low_rank()).diagonal().mean().item()


# --------------------------------------------------------------------------------------------
# Plots


#: Heads side by side in :func:`plot_attention_patterns` before it starts a new row (the page is about 690 px wide).
PATTERNS_PER_ROW = 3


def _token_labels(tokens: Sequence[str]) -> list[str]:
    """Unique axis labels ``"3 ␣cat"`` (plotly merges equal category names, and repeated tokens are the point here)."""
    return [f"{position} {token.replace(' ', '␣')}" for position, token in enumerate(tokens)]


def _check_one_sequence(pattern: Tensor, tokens: Sequence[str]) -> None:
    """A pattern to draw is one sequence's ``[head, query, key]`` over its ``tokens``."""
    if pattern.ndim != 3 or pattern.shape[-1] != pattern.shape[-2] or pattern.shape[-1] != len(tokens):
        raise ValueError(f"pattern must be [head, query, key] over the {len(tokens)} tokens, got shape "
                         f"{tuple(pattern.shape)}: pick one sequence, e.g. capture(...)['pattern.2'][0]")


def plot_attention_patterns(pattern: Float[Tensor, "head query key"], tokens: Sequence[str],
                            heads: Sequence[int] | None = None, title: str = "Attention patterns") -> go.Figure:
    """Heatmaps of the attention of each head in ``heads`` (all by default), queries down, keys across.

    ``tokens`` are the token strings of the sequence (``len(tokens) == pos``); hovering a cell
    shows the query token, the key token and the probability.
    """
    _check_one_sequence(pattern, tokens)
    heads = list(range(pattern.shape[0])) if heads is None else list(heads)
    labels = _token_labels(tokens)
    columns = min(len(heads), PATTERNS_PER_ROW)
    rows = -(-len(heads) // columns)
    figure = make_subplots(rows=rows, cols=columns, subplot_titles=[f"head {h}" for h in heads],
                           shared_yaxes=True, horizontal_spacing=0.03, vertical_spacing=0.12)
    for index, head in enumerate(heads):
        figure.add_trace(go.Heatmap(
            z=pattern[head].float().numpy(), x=labels, y=labels, zmin=0, zmax=1, coloraxis="coloraxis",
            hovertemplate="query %{y}<br>key %{x}<br>attention %{z:.2f}<extra></extra>"),
            row=index // columns + 1, col=index % columns + 1)
    figure.update_yaxes(autorange="reversed", tickfont_size=8)
    figure.update_xaxes(tickfont_size=8, tickangle=-90)
    # No fixed width: the figure takes its container's (the page's column, the notebook's cell).
    figure.update_layout(title=title, coloraxis={"colorscale": "Blues", "cmin": 0, "cmax": 1},
                         height=380 * rows, margin={"t": 70})
    return figure


class CircuitsVisView:
    """A CircuitsVis view, shown in a notebook with its JavaScript bundle inlined, so it draws offline.

    circuitsvis's own object loads its bundle from a CDN whenever ``google.com`` answers (and waits
    up to a second to find out); this one always carries the bundle (about 1.3 MB per view). The
    course's website keeps the bundle once, in ``_static`` (book/_ext/course_ext.py).
    """

    def __init__(self, html: str) -> None:
        self.html = html

    def _repr_html_(self) -> str:
        return self.html


def attention_view(pattern: Float[Tensor, "head query key"], tokens: Sequence[str],
                   head_names: Sequence[str] | None = None) -> CircuitsVisView:
    """CircuitsVis's interactive attention view of the heads in ``pattern`` (the tool of
    TransformerLens's demos): hover a head to enlarge it, then a token to see where it attends.

    ``tokens`` are the sequence's token strings (``len(tokens) == pos``), ``head_names`` one label per
    head (default ``"head 0"``, ...). Beside :func:`plot_attention_patterns`, which draws the same
    numbers as heatmaps.
    """
    _check_one_sequence(pattern, tokens)
    names = [f"head {head}" for head in range(pattern.shape[0])] if head_names is None else list(head_names)
    if len(names) != pattern.shape[0]:
        raise ValueError(f"{len(names)} head names for {pattern.shape[0]} heads: give one name per head of pattern")
    from circuitsvis.attention import attention_heads

    rounded = pattern.detach().double().cpu().round(decimals=3)  # three decimals: the view's colours need no more
    view = attention_heads(attention=rounded, tokens=list(tokens), attention_head_names=names)
    return CircuitsVisView(view.local_src)


def plot_head_scores(scores: Float[Tensor, "layer head"], title: str) -> go.Figure:
    """A layer × head heatmap of a per-head score, with the values written in the cells."""
    values = scores.float().numpy()
    figure = go.Figure(go.Heatmap(
        z=values, x=[f"H{h}" for h in range(values.shape[1])], y=[f"L{l}" for l in range(values.shape[0])],
        zmin=0, zmax=1, colorscale="Blues", texttemplate="%{z:.2f}",  # two decimals: enough to rank heads
        hovertemplate="layer %{y}, head %{x}: %{z:.3f}<extra></extra>"))
    figure.update_yaxes(autorange="reversed")
    figure.update_layout(title=title, height=300, width=520, xaxis_title="head", yaxis_title="layer")
    return figure


def plot_copy_losses(losses: dict[str, Float[Tensor, "pos"]], length: int) -> go.Figure:
    """Loss by position on repeated tokens, one line per condition (e.g. clean, induction heads ablated)."""
    figure = go.Figure()
    for name, curve in losses.items():
        figure.add_trace(go.Scatter(x=list(range(1, len(curve) + 1)), y=curve.tolist(), mode="lines", name=name))
    figure.add_vline(x=length + 1.5, line_dash="dot", annotation_text="second copy starts")
    figure.update_layout(title="Loss on each token of BOS w1..wL w1..wL", xaxis_title="position of the predicted token",
                         yaxis_title="loss (nats)", height=350)
    return figure
