"""Sparse feature circuits (Marks et al. 2025), chapter 7: circuits whose nodes are SAE latents.

Splice an SAE into the residual stream after every block: the stream ``x`` becomes
``decode(encode(x)) + error``, where the *error* term is what the SAE misses. The model computes
exactly what it did, but now every latent, and every error term, is a variable we can attribute to.

1. **Nodes.** Attribution patching over latents (:func:`node_effects`): the effect of latent ``i`` at
   position ``p`` of layer ``l`` is ``(f_clean - f_corrupted) . dM/df`` on the corrupted run; an error
   term is a node too.
2. **Edges.** Between nodes of adjacent layers (:func:`edge_effects`, :func:`edges_into`): how much of a
   downstream node's effect goes through an upstream node, ``(dM/dd) (dd/du) (u_clean - u_corrupted)``.
3. **Pruning** keeps the nodes above a threshold; **faithfulness** is the metric with only the
   circuit (every other node mean-ablated) and **completeness** the metric with the circuit ablated.

The error terms are detached from what comes before them (a stop-gradient, as in Marks et al.), so
gradients reach a latent only through the SAE reconstructions of later layers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import einops
import plotly.graph_objects as go
import torch
from jaxtyping import Bool, Float
from torch import Tensor
from transformers import PreTrainedModel

from utils import architecture
from utils.hooks import hooks
from utils.models import frozen
from utils.patching import PairTokens, baseline, logit_difference, normalised_metric

#: ``{layer: SAE on resid_post.{layer}}``; each SAE has ``encode`` ``[..., d_model] -> [..., d_sae]`` and ``decode``.
SAEs = Mapping[int, Any]


@dataclass(frozen=True)
class Node:
    """A latent ``feature`` of the SAE after block ``layer`` at ``position``, or that SAE's error term (``feature=None``)."""

    layer: int
    position: int
    feature: int | None

    @property
    def name(self) -> str:
        return f"L{self.layer} p{self.position} " + ("error" if self.feature is None else f"#{self.feature}")


@dataclass
class Spliced:
    """What a forward pass with SAEs spliced in recorded, per layer: latents ``[n, pos, d_sae]``, errors ``[n, pos, d_model]``."""

    latents: dict[int, Tensor]
    errors: dict[int, Tensor]


def check_saes(model: PreTrainedModel, saes: SAEs) -> None:
    """Raise a ``ValueError`` unless there is an SAE of this model's width after every block."""
    missing = [layer for layer in range(architecture.n_layers(model)) if layer not in saes]
    if missing:
        raise ValueError(f"no SAE for layer(s) {missing}: a feature circuit needs an SAE on resid_post of every layer "
                         f"(this model has {architecture.n_layers(model)}); load them with "
                         "{layer: load_shipped_sae(f'resid_post.{layer}') for layer in range(n_layers)}")
    width = architecture.d_model(model)
    for layer, sae in saes.items():
        if sae.W_dec.shape[-1] != width:
            raise ValueError(f"the SAE for layer {layer} reads {sae.W_dec.shape[-1]}-wide activations, this model's "
                             f"residual stream is {width} wide: use SAEs trained on this model")


@contextlib.contextmanager
def spliced(model: PreTrainedModel, saes: SAEs, record: Spliced, *, ablate: Mapping[int, tuple[Tensor, Tensor]] | None = None,
            for_gradients: bool = False) -> Iterator[PreTrainedModel]:
    """Inside the ``with`` block, the stream after each block is ``decode(latents) + error``, recorded into ``record``.

    ``ablate`` maps a layer to ``(latent_mask [pos, d_sae], error_mask [pos])`` of nodes to replace by
    the means in ``record`` (``record.latents[layer]`` ``[pos, d_sae]``, ``record.errors[layer]``
    ``[pos, d_model]``); with ``for_gradients`` the latents and errors keep their gradients.
    """
    means = Spliced(dict(record.latents), dict(record.errors)) if ablate else None

    def splice(layer: int):
        sae = saes[layer]

        def edit(residual: Tensor) -> Tensor:
            latents = sae.encode(residual)
            error = (residual - sae.decode(latents)).detach()
            if ablate and layer in ablate:
                latent_mask, error_mask = ablate[layer]
                latents = torch.where(latent_mask, means.latents[layer], latents)
                error = torch.where(error_mask[:, None], means.errors[layer], error)
            if for_gradients:
                if not latents.requires_grad:                       # the first SAE: nothing before it needs a gradient
                    latents = latents.detach().requires_grad_()
                latents.retain_grad()
                error.requires_grad_()
            record.latents[layer], record.errors[layer] = latents, error
            return sae.decode(latents) + error
        return edit

    check_saes(model, saes)
    with hooks(model, {f"resid_post.{layer}": splice(layer) for layer in range(architecture.n_layers(model))}):
        yield model


@torch.no_grad()
def _spliced_run(model: PreTrainedModel, saes: SAEs, ids: Tensor) -> Spliced:
    record = Spliced({}, {})
    with spliced(model, saes, record):
        model(ids)
    return record


# --------------------------------------------------------------------------------------------
# Nodes and edges


@dataclass(frozen=True)
class NodeEffects:
    """Attribution-patching effects: ``latents[layer]`` ``[pos, d_sae]`` and ``errors[layer]`` ``[pos]``."""

    latents: dict[int, Tensor]
    errors: dict[int, Tensor]

    def ranked(self) -> list[tuple[Node, float]]:
        """Every node with its effect, largest absolute effect first."""
        nodes = [(Node(layer, pos, feature), float(values[pos, feature]))
                 for layer, values in self.latents.items() for pos, feature in values.nonzero().tolist()]
        nodes += [(Node(layer, pos, None), float(values[pos])) for layer, values in self.errors.items()
                  for pos in range(len(values))]
        return sorted(nodes, key=lambda item: -abs(item[1]))


def node_effects(model: PreTrainedModel, saes: SAEs, tokens: PairTokens) -> NodeEffects:
    """The attribution-patching effect of every latent and error term on the normalised metric."""
    return NodeEffects(*node_attribution(*attribution_records(model, saes, tokens)))


def attribution_graph(model: PreTrainedModel, saes: SAEs, tokens: PairTokens) -> tuple[Spliced, Spliced, Spliced]:
    """:func:`attribution_records` with the corrupted run's latents and errors still in the autograd graph of its
    forward pass (the graph is kept, so more backward passes can run through it: the edges)."""
    base = baseline(model, tokens)
    clean = _spliced_run(model, saes, tokens.clean)
    corrupted = Spliced({}, {})
    with frozen(model, *saes.values()), spliced(model, saes, corrupted, for_gradients=True):
        difference = logit_difference(model(tokens.corrupted).logits, tokens.answer, tokens.wrong).mean()
        normalised_metric(difference, base.clean, base.corrupted).backward(retain_graph=True)
    gradients = Spliced({layer: v.grad for layer, v in corrupted.latents.items()},
                        {layer: v.grad for layer, v in corrupted.errors.items()})
    return clean, corrupted, gradients


def attribution_records(model: PreTrainedModel, saes: SAEs, tokens: PairTokens) -> tuple[Spliced, Spliced, Spliced]:
    """What attribution patching over the nodes needs: the latents and errors of the clean run, those of the
    corrupted run, and the normalised metric's gradients with respect to the corrupted ones (one forward and one
    backward pass), each a :class:`Spliced` of ``[n, pos, d_sae]`` latents and ``[n, pos, d_model]`` errors."""
    clean, corrupted, gradients = attribution_graph(model, saes, tokens)
    detached = Spliced({layer: v.detach() for layer, v in corrupted.latents.items()},
                       {layer: v.detach() for layer, v in corrupted.errors.items()})
    return clean, detached, gradients


def node_attribution(clean: Spliced, corrupted: Spliced, gradients: Spliced
                     ) -> tuple[dict[int, Float[Tensor, "pos d_sae"]], dict[int, Float[Tensor, "pos"]]]:
    """Reference for Exercise 7.9: per layer, ``(f_clean - f_corrupted) . dM/df`` of every latent ``[pos, d_sae]``
    and of every error term ``[pos]``, summed over the batch (the gradient is of the batch's mean metric).

    A latent is one number per position, an error term a ``d_model`` vector: its effect sums over ``d_model``.
    """
    latents = {layer: einops.einsum(clean.latents[layer] - corrupted.latents[layer], gradients.latents[layer],
                                    "n pos d_sae, n pos d_sae -> pos d_sae") for layer in clean.latents}
    errors = {layer: einops.einsum(clean.errors[layer] - corrupted.errors[layer], gradients.errors[layer],
                                   "n pos d_model, n pos d_model -> pos") for layer in clean.errors}
    return latents, errors


def edges_into(down: Node, ups: Sequence[Node], corrupted: Spliced, gradients: Spliced, clean: Spliced
               ) -> dict[Node, float]:
    """Reference for Exercise 7.13: the effect through the edge from each node of ``ups`` (all one layer below
    ``down``) into ``down``, ``sum over the batch of (d score / du) (u_clean - u_corrupted)``, where ``score`` is
    ``down``'s attribution with its gradient held fixed, ``(dM/dd) . d``.

    ``corrupted`` holds the corrupted run's latents ``[n, pos, d_sae]`` and errors ``[n, pos, d_model]`` inside the
    autograd graph of its forward pass (:func:`attribution_graph`), ``gradients`` the metric's gradient with respect
    to each, ``clean`` the clean run's values. The graph is kept for the next downstream node. An error term is cut
    from what comes before it (a stop-gradient), so the edges into an error node are 0.
    """
    if any(up.layer != down.layer - 1 for up in ups):
        raise ValueError(f"edges join adjacent layers: every upstream node must be in layer {down.layer - 1}, got "
                         f"{sorted({up.layer for up in ups})} for {down.name}")
    if down.feature is None or not ups:                 # nothing upstream reaches an error term
        return {up: 0.0 for up in ups}
    layer, position, feature = down.layer, down.position, down.feature
    score = (gradients.latents[layer][:, position, feature] * corrupted.latents[layer][:, position, feature]).sum()
    up_latents, up_errors = corrupted.latents[layer - 1], corrupted.errors[layer - 1]
    through_latents, through_errors = torch.autograd.grad(score, [up_latents, up_errors], retain_graph=True)
    edges = {}
    for up in ups:
        if up.feature is None:                                                           # [n, d_model]
            delta = clean.errors[up.layer][:, up.position] - up_errors[:, up.position].detach()
            gradient = through_errors[:, up.position]
        else:                                                                            # [n]
            delta = (clean.latents[up.layer][:, up.position, up.feature]
                     - up_latents[:, up.position, up.feature].detach())
            gradient = through_latents[:, up.position, up.feature]
        edges[up] = float((delta * gradient).sum())
    return edges


def edge_effects(model: PreTrainedModel, saes: SAEs, tokens: PairTokens, nodes: Sequence[Node],
                 into: Callable[[Node, Sequence[Node], Spliced, Spliced, Spliced], dict[Node, float]] = edges_into
                 ) -> dict[tuple[Node, Node], float]:
    """The effect through each edge between ``nodes`` of adjacent layers, ``{(up, down): effect}``: one forward pass
    (:func:`attribution_graph`), then one backward pass per downstream node, by ``into`` (:func:`edges_into`)."""
    clean, corrupted, gradients = attribution_graph(model, saes, tokens)
    edges = {}
    for down in nodes:
        ups = [node for node in nodes if node.layer == down.layer - 1]
        if ups:
            edges.update({(up, down): effect for up, effect in into(down, ups, corrupted, gradients, clean).items()})
    return edges


# --------------------------------------------------------------------------------------------
# Faithfulness and completeness


@torch.no_grad()
def mean_activations(model: PreTrainedModel, saes: SAEs, ids: Tensor) -> Spliced:
    """Per layer, the mean latents ``[pos, d_sae]`` and errors ``[pos, d_model]`` over the rows of ``ids``."""
    record = _spliced_run(model, saes, ids)
    return Spliced({l: v.mean(0) for l, v in record.latents.items()}, {l: v.mean(0) for l, v in record.errors.items()})


def ablation_masks(d_saes: Mapping[int, int], n_pos: int, nodes: Sequence[Node], keep_only: bool
                   ) -> dict[int, tuple[Bool[Tensor, "pos d_sae"], Bool[Tensor, "pos"]]]:
    """Reference for Exercise 7.10: per layer of ``d_saes`` (``{layer: number of latents}``), which latents
    ``[pos, d_sae]`` and error terms ``[pos]`` to mean-ablate: every node but ``nodes`` (``keep_only``), or
    ``nodes`` themselves."""
    masks = {}
    for layer, d_sae in d_saes.items():
        in_latents = torch.zeros(n_pos, d_sae, dtype=torch.bool)
        in_errors = torch.zeros(n_pos, dtype=torch.bool)
        for node in nodes:
            if node.layer == layer and node.feature is None:
                in_errors[node.position] = True
            elif node.layer == layer:
                in_latents[node.position, node.feature] = True
        masks[layer] = (~in_latents, ~in_errors) if keep_only else (in_latents, in_errors)
    return masks


@torch.no_grad()
def logit_difference_with(model: PreTrainedModel, saes: SAEs, tokens: PairTokens, means: Spliced,
                          nodes: Sequence[Node], *, keep_only: bool) -> Float[Tensor, "n"]:
    """The clean prompts' logit differences with every node but ``nodes`` (``keep_only``), or ``nodes``, mean-ablated."""
    record = Spliced(dict(means.latents), dict(means.errors))
    d_saes = {layer: sae.W_dec.shape[0] for layer, sae in saes.items()}
    masks = ablation_masks(d_saes, tokens.clean.shape[1], nodes, keep_only)
    with spliced(model, saes, record, ablate=masks):
        return logit_difference(model(tokens.clean).logits, tokens.answer, tokens.wrong)


def faithfulness(model: PreTrainedModel, saes: SAEs, tokens: PairTokens, means: Spliced, nodes: Sequence[Node]
                 ) -> float:
    """Reference for Exercise 7.11: ``(m(C) - m(nothing)) / (m(model) - m(nothing))`` for the mean clean logit
    difference ``m``: 1 when the circuit ``C`` alone (everything else mean-ablated) does all the model does, 0
    when it does nothing."""
    return _share_of_the_model(model, saes, tokens, means, nodes, keep_only=True)


def completeness(model: PreTrainedModel, saes: SAEs, tokens: PairTokens, means: Spliced, nodes: Sequence[Node]
                 ) -> float:
    """Reference for Exercise 7.12: the faithfulness of the model without the circuit ``C`` (Marks et al. 2025),
    ``(m(M \\ C) - m(nothing)) / (m(model) - m(nothing))`` with ``C``'s nodes mean-ablated and everything else
    kept: near 0 when the model cannot do the task without ``C`` (a complete circuit), near 1 when it does not
    need it."""
    return _share_of_the_model(model, saes, tokens, means, nodes, keep_only=False)


def _share_of_the_model(model: PreTrainedModel, saes: SAEs, tokens: PairTokens, means: Spliced,
                        nodes: Sequence[Node], keep_only: bool) -> float:
    """``(m(run) - m(nothing)) / (m(model) - m(nothing))`` for the mean clean logit difference ``m``, where the run
    keeps only ``nodes`` (``keep_only``) or ablates them."""
    everything = logit_difference_with(model, saes, tokens, means, [], keep_only=False).mean()
    nothing = logit_difference_with(model, saes, tokens, means, [], keep_only=True).mean()
    run = logit_difference_with(model, saes, tokens, means, nodes, keep_only=keep_only).mean()
    return float((run - nothing) / (everything - nothing))


def accuracy_with_nodes_ablated(model: PreTrainedModel, saes: SAEs, tokens: PairTokens, means: Spliced,
                                nodes: Sequence[Node]) -> float:
    """The share of clean prompts still answered right with ``nodes`` mean-ablated (completeness, as accuracy)."""
    return float((logit_difference_with(model, saes, tokens, means, nodes, keep_only=False) > 0).float().mean())


# --------------------------------------------------------------------------------------------
# Plot


def plot_circuit(nodes: Sequence[tuple[Node, float]], edges: Mapping[tuple[Node, Node], float],
                 position_labels: Sequence[str], feature_labels: Mapping[tuple[int, int], str] | None = None,
                 title: str = "Sparse feature circuit") -> go.Figure:
    """The circuit as a graph: layers up, positions across, node colour = effect, edge width = |effect|."""
    feature_labels = feature_labels or {}
    placed: dict[Node, tuple[float, float]] = {}
    for node, _ in nodes:
        same_cell = [n for n in placed if n.layer == node.layer and n.position == node.position]
        placed[node] = (node.position + 0.18 * len(same_cell), node.layer)
    figure = go.Figure()
    largest = max((abs(v) for v in edges.values()), default=1.0) or 1.0
    for (up, down), effect in edges.items():
        if up in placed and down in placed:
            (x0, y0), (x1, y1) = placed[up], placed[down]
            figure.add_trace(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", hoverinfo="skip", showlegend=False,
                                        line={"width": 0.5 + 5 * abs(effect) / largest,
                                              "color": "rgba(33,102,172,0.6)" if effect > 0 else "rgba(178,24,43,0.6)"}))
    text = [f"{node.name}<br>{feature_labels.get((node.layer, node.feature), '')}<br>effect {effect:+.3f}"
            for node, effect in nodes]
    figure.add_trace(go.Scatter(
        x=[placed[node][0] for node, _ in nodes], y=[placed[node][1] for node, _ in nodes], mode="markers",
        marker={"size": 14, "color": [effect for _, effect in nodes], "colorscale": "RdBu", "cmid": 0,
                "symbol": ["square" if node.feature is None else "circle" for node, _ in nodes],
                "colorbar": {"title": "effect"}, "line": {"width": 1, "color": "black"}},
        text=text, hovertemplate="%{text}<extra></extra>", showlegend=False))
    figure.update_xaxes(tickvals=list(range(len(position_labels))), ticktext=list(position_labels), title="position")
    figure.update_yaxes(title="layer (SAE after block)", dtick=1)
    figure.update_layout(title=title, height=480)
    return figure


@torch.no_grad()
def latents_at(model: PreTrainedModel, saes: SAEs, ids: Tensor, layer: int, position: int) -> Float[Tensor, "n d_sae"]:
    """The latents of the SAE after block ``layer`` at ``position`` of each row of ``ids`` (for AUROCs against labels)."""
    return _spliced_run(model, saes, ids).latents[layer][:, position]
