"""Linear probes, one per layer, with the controls that say what their accuracy means.

A probe is a multinomial logistic regression from a layer's residual stream to a label. High
held-out accuracy says the label can be *read* linearly from that layer; it does not say the
model *uses* that direction (steer along it, or ablate it, to find out), and a probe that is
expressive enough can learn any labelling of inputs it can tell apart. Two controls:

- **shuffled labels**: the same activations with the labels permuted: what a probe reaches by
  memorising the training set (at held-out time, chance);
- **a control task** (Hewitt and Liang 2019, "Designing and Interpreting Probes with Control
  Tasks"): each word *type* gets a random label, fixed for all its occurrences. A probe that
  reaches high accuracy there is reading the word's identity, not the property.
  ``selectivity = accuracy - control accuracy``.

Every layer's probe trains at once: the weights are ``[layer, class, d_model]`` and one Adam step
updates all of them (the layers share no parameter, so each gets its own gradient).

A quantity (a number's value, a date's position) is read by a linear *regression* instead:
:func:`fit_value_probes` (ridge, solved in closed form for every layer at once) and ``r2``.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor


@dataclass
class LayerProbes:
    """One logistic-regression probe per layer, on standardised activations.

    ``weight``: [layer, class, d_model] and ``bias``: [layer, class] act on
    ``(activation - mean) / std`` (``mean``, ``std``: [layer, d_model], from the training rows).
    """

    weight: Float[Tensor, "layer n_classes d_model"]
    bias: Float[Tensor, "layer n_classes"]
    mean: Float[Tensor, "layer d_model"]
    std: Float[Tensor, "layer d_model"]

    @property
    def n_layers(self) -> int:
        return self.weight.shape[0]

    def logits(self, activations: Float[Tensor, "layer n d_model"]) -> Float[Tensor, "layer n n_classes"]:
        """Each layer's probe applied to that layer's activations."""
        _check_activations(activations, self.n_layers, self.weight.shape[-1])
        standardised = (activations - self.mean[:, None]) / self.std[:, None]
        return einops.einsum(self.weight, standardised, "layer c d, layer n d -> layer n c") + self.bias[:, None]

    def predict(self, activations: Float[Tensor, "layer n d_model"]) -> Int[Tensor, "layer n"]:
        return self.logits(activations).argmax(dim=-1)

    def accuracy(self, activations: Float[Tensor, "layer n d_model"], labels: Int[Tensor, "n"]
                 ) -> Float[Tensor, "layer"]:
        """The share of rows each layer's probe labels right."""
        labels = _check_labels(activations, labels)
        return (self.predict(activations) == labels).float().mean(dim=-1)

    def directions(self) -> Float[Tensor, "layer n_classes d_model"]:
        """The probes' weights in the activations' own units (``weight / std``), one direction per
        class and layer: what to steer along or ablate, and to compare with a mean difference."""
        return self.weight / self.std[:, None]


def fit_probes(activations: Float[Tensor, "layer n d_model"], labels: Int[Tensor, "n"], *, steps: int = 300,
               lr: float = 1e-2, weight_decay: float = 1e-3) -> LayerProbes:
    """Train one probe per layer on the same rows: full-batch Adam on the cross-entropy, with
    weight decay (an unregularised probe on separable data grows without bound). The weights
    start at zero and every step sees every row, so the result is deterministic."""
    labels = _check_labels(activations, labels)
    n_classes = int(labels.max()) + 1
    if labels.unique().numel() < 2:
        raise ValueError(f"a probe needs at least two classes among the labels, got only {labels.unique().tolist()}")
    mean = activations.mean(dim=1)
    std = activations.std(dim=1) + 1e-6
    standardised = (activations - mean[:, None]) / std[:, None]
    n_layers, _, d_model = activations.shape
    weight = torch.zeros(n_layers, n_classes, d_model, requires_grad=True)
    bias = torch.zeros(n_layers, n_classes, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=lr, weight_decay=weight_decay)
    targets = einops.repeat(labels, "n -> (layer n)", layer=n_layers)
    for _ in range(steps):
        logits = einops.einsum(weight, standardised, "layer c d, layer n d -> layer n c") + bias[:, None]
        loss = F.cross_entropy(einops.rearrange(logits, "layer n c -> (layer n) c"), targets) * n_layers
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return LayerProbes(weight.detach(), bias.detach(), mean, std)


def shuffled_labels(labels: Int[Tensor, "n"], seed: int = 0) -> Int[Tensor, "n"]:
    """The same labels in a random order: the link between a row and its label is gone."""
    generator = torch.Generator().manual_seed(seed)
    return labels[torch.randperm(len(labels), generator=generator)]


def control_labels(types: Sequence[Hashable], n_classes: int, seed: int = 0) -> Int[Tensor, "n"]:
    """Hewitt and Liang's control task: each distinct type (a word, a name) gets a random label in
    ``range(n_classes)``, the same wherever it occurs. Types are labelled in sorted order, so the
    labels do not depend on the rows' order."""
    if n_classes < 2:
        raise ValueError(f"a control task needs at least two classes, got n_classes={n_classes}")
    distinct = sorted(set(types), key=repr)
    rng = random.Random(seed)
    label_of = {kind: rng.randrange(n_classes) for kind in distinct}
    return torch.tensor([label_of[kind] for kind in types])


def encode_labels(values: Sequence[Hashable]) -> tuple[Int[Tensor, "n"], list[Hashable]]:
    """Class indices for ``values`` and the classes in index order (sorted): ("joy", "fear", "joy")
    gives [1, 0, 1] and ["fear", "joy"]."""
    classes = sorted(set(values), key=repr)
    index = {value: i for i, value in enumerate(classes)}
    return torch.tensor([index[value] for value in values]), classes


@dataclass
class ValueProbes:
    """One ridge-regression readout per layer: ``value = (activation - mean) . weight + intercept``."""

    weight: Float[Tensor, "layer d_model"]
    mean: Float[Tensor, "layer d_model"]
    intercept: float

    def predict(self, activations: Float[Tensor, "layer n d_model"]) -> Float[Tensor, "layer n"]:
        _check_activations(activations, self.weight.shape[0], self.weight.shape[-1])
        return einops.einsum(activations - self.mean[:, None], self.weight, "layer n d, layer d -> layer n") \
            + self.intercept

    def r2(self, activations: Float[Tensor, "layer n d_model"], values: Float[Tensor, "n"]) -> Float[Tensor, "layer"]:
        """The share of the values' variance that each layer's readout explains (1 is perfect, 0 is
        predicting their mean; held-out rows can go below 0)."""
        values = _check_values(activations, values)
        residual = (self.predict(activations) - values).pow(2).sum(dim=-1)
        return 1 - residual / (values - values.mean()).pow(2).sum()


def fit_value_probes(activations: Float[Tensor, "layer n d_model"], values: Float[Tensor, "n"],
                     ridge: float = 10.0) -> ValueProbes:
    """Ridge regression of ``values`` on each layer's activations, all layers in one batched solve:
    ``weight = (X^T X + ridge I)^-1 X^T (y - mean(y))`` with ``X`` the centred activations."""
    values = _check_values(activations, values)
    if ridge <= 0:
        raise ValueError(f"ridge must be positive, got {ridge}: with fewer rows than d_model the plain "
                         "least-squares problem has no unique solution")
    mean = activations.mean(dim=1)
    centred = activations - mean[:, None]                                       # [layer, n, d]
    gram = einops.einsum(centred, centred, "layer n d, layer n e -> layer d e")
    target = einops.einsum(centred, values - values.mean(), "layer n d, n -> layer d")
    eye = torch.eye(activations.shape[-1])
    weight = torch.linalg.solve(gram + ridge * eye, target)
    return ValueProbes(weight, mean, values.mean().item())


def _check_values(activations: Tensor, values: Tensor | Sequence[float]) -> Tensor:
    _check_activations(activations)
    values = torch.as_tensor(values, dtype=torch.float32)
    if values.ndim != 1 or len(values) != activations.shape[1]:
        raise ValueError(f"one value per row: {activations.shape[1]} rows of activations but values of shape "
                         f"{list(values.shape)}")
    return values


def _check_activations(activations: Tensor, n_layers: int | None = None, d_model: int | None = None) -> None:
    if activations.ndim != 3:
        raise ValueError(f"activations must be [layer, n, d_model] (utils.steering.last_token_activations gives "
                         f"them), got {list(activations.shape)}; for one layer use activations[None]")
    if n_layers is not None and activations.shape[0] != n_layers:
        raise ValueError(f"these probes were trained on {n_layers} layers, the activations have {activations.shape[0]}")
    if d_model is not None and activations.shape[-1] != d_model:
        raise ValueError(f"these probes read d_model={d_model}, the activations have {activations.shape[-1]}")


def _check_labels(activations: Tensor, labels: Tensor | Sequence[int]) -> Tensor:
    _check_activations(activations)
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or len(labels) != activations.shape[1]:
        raise ValueError(f"one label per row: {activations.shape[1]} rows of activations but labels of shape "
                         f"{list(labels.shape)}")
    if labels.dtype.is_floating_point or (len(labels) and labels.min() < 0):
        raise ValueError("labels must be class indices 0, 1, ... (use encode_labels for strings)")
    return labels.long()
