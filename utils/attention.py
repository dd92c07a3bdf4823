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

Exercises 3.2 and 3.3 ask for the scores of one layer; their checkers are here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

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


def copy_losses(model: PreTrainedModel, tokens: Int[Tensor, "batch two_length_plus_one"], length: int
                ) -> tuple[float, float]:
    """Mean loss on the first copy (predicting ``w2..wL``) and on the second copy (the repeat's ``w2..wL``).

    ``w1`` of each copy is left out: nothing predicts it. Run it inside :func:`ablate_heads` to
    measure what the heads do.
    """
    losses = token_losses(model, tokens)                              # [batch, 2L]
    return losses[:, 1:length].mean().item(), losses[:, length + 1:].mean().item()


# --------------------------------------------------------------------------------------------
# Plots


def _token_labels(tokens: Sequence[str]) -> list[str]:
    """Unique axis labels ``"3 ␣cat"`` (plotly merges equal category names, and repeated tokens are the point here)."""
    return [f"{position} {token.replace(' ', '␣')}" for position, token in enumerate(tokens)]


def plot_attention_patterns(pattern: Float[Tensor, "head query key"], tokens: Sequence[str],
                            heads: Sequence[int] | None = None, title: str = "Attention patterns") -> go.Figure:
    """Heatmaps of the attention of each head in ``heads`` (all by default), queries down, keys across.

    ``tokens`` are the token strings of the sequence (``len(tokens) == pos``); hovering a cell
    shows the query token, the key token and the probability.
    """
    if pattern.ndim != 3 or pattern.shape[-1] != pattern.shape[-2] or pattern.shape[-1] != len(tokens):
        raise ValueError(f"pattern must be [head, query, key] over the {len(tokens)} tokens, got shape "
                         f"{tuple(pattern.shape)}: pick one sequence, e.g. capture(...)['pattern.2'][0]")
    heads = list(range(pattern.shape[0])) if heads is None else list(heads)
    labels = _token_labels(tokens)
    figure = make_subplots(rows=1, cols=len(heads), subplot_titles=[f"head {h}" for h in heads],
                           shared_yaxes=True, horizontal_spacing=0.02)
    for column, head in enumerate(heads, start=1):
        figure.add_trace(go.Heatmap(
            z=pattern[head].float().numpy(), x=labels, y=labels, zmin=0, zmax=1, coloraxis="coloraxis",
            hovertemplate="query %{y}<br>key %{x}<br>attention %{z:.2f}<extra></extra>"), row=1, col=column)
    figure.update_yaxes(autorange="reversed", tickfont_size=8)
    figure.update_xaxes(tickfont_size=8, tickangle=-90)
    figure.update_layout(title=title, coloraxis={"colorscale": "Blues", "cmin": 0, "cmax": 1},
                         height=380, width=max(450, 330 * len(heads)), margin={"t": 70})
    return figure


def plot_head_scores(scores: Float[Tensor, "layer head"], title: str) -> go.Figure:
    """A layer × head heatmap of a per-head score, with the values written in the cells."""
    values = scores.float().numpy()
    figure = go.Figure(go.Heatmap(
        z=values, x=[f"H{h}" for h in range(values.shape[1])], y=[f"L{l}" for l in range(values.shape[0])],
        zmin=0, zmax=1, colorscale="Blues", text=values.round(2), texttemplate="%{text}",
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
                         yaxis_title="loss (nats)", height=350, width=700)
    return figure


# --------------------------------------------------------------------------------------------
# Exercises 3.2 and 3.3: the checkers
