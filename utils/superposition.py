"""Toy models of superposition (Elhage et al. 2022, "Toy Models of Superposition").

``n_features`` sparse features, each zero with probability ``sparsity`` and otherwise uniform in
[0, 1], are squeezed through ``n_hidden < n_features`` dimensions and read back out with a ReLU:

    h = W x                       W: [n_hidden, n_features]
    x' = ReLU(W^T h + b)          b: [n_features]

and trained on the importance-weighted squared error ``sum_i I_i (x_i - x'_i)^2``. Dense features
(sparsity 0) are stored only as many as there are dimensions, the most important ones, orthogonal
to each other; sparse ones are stored more than the dimensions allow, in superposition: antipodal
pairs, triangles, pentagons. That is why an SAE's dictionary is wider than the residual stream.

A ``ToyModel`` holds several independent *instances* (one per sparsity, or per seed) in one
batch dimension, so a whole sweep trains in one loop. The measures, per instance and feature:

- :func:`feature_norms`: ``||W_i||``, about 1 for a represented feature and 0 for a dropped one;
- :func:`interference`: ``sum_{j != i} (W_i/||W_i|| . W_j)^2``, 0 for a feature with its own
  dimension (the paper's superposition measure);
- :func:`feature_dimensionality`: ``D_i = ||W_i||^2 / sum_j (W_i/||W_i|| . W_j)^2``, the share of a
  dimension that feature ``i`` has: 1 alone, 1/2 in an antipodal pair, 2/5 in a pentagon;
- :func:`dimensions_per_feature`: ``n_hidden / ||W||_F^2``, how many dimensions each represented
  feature gets on average.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from utils.progress import trange

#: Below this norm a feature counts as not represented (the paper's figures use the same cut).
REPRESENTED_NORM = 0.5


@dataclass(frozen=True)
class ToyConfig:
    """A family of toy models: ``n_instances`` of them, each ``n_features`` -> ``n_hidden`` -> ``n_features``.

    ``sparsity`` gives each instance the probability that a feature is zero (one value per
    instance, or one for all); ``importance`` is ``importance_decay ** i`` for feature ``i``.
    """

    n_features: int = 5
    n_hidden: int = 2
    sparsity: tuple[float, ...] = (0.0,)
    importance_decay: float = 1.0

    def __post_init__(self) -> None:
        if self.n_features < 1 or self.n_hidden < 1:
            raise ValueError(f"n_features ({self.n_features}) and n_hidden ({self.n_hidden}) must be at least 1")
        bad = [s for s in self.sparsity if not 0.0 <= s < 1.0]
        if not self.sparsity or bad:
            raise ValueError(f"each sparsity must be in [0, 1) (the probability a feature is zero), got "
                             f"{list(self.sparsity)}: at 1 no feature is ever active")
        if not 0.0 < self.importance_decay <= 1.0:
            raise ValueError(f"importance_decay must be in (0, 1], got {self.importance_decay}")

    @property
    def n_instances(self) -> int:
        return len(self.sparsity)

    def importance(self) -> Float[Tensor, "n_features"]:
        """``importance_decay ** i``: feature 0 matters most."""
        return self.importance_decay ** torch.arange(self.n_features, dtype=torch.float32)

    def feature_probability(self) -> Float[Tensor, "instance"]:
        """The probability that a feature is active (1 - sparsity), per instance."""
        return 1.0 - torch.tensor(self.sparsity, dtype=torch.float32)


class ToyModel(torch.nn.Module):
    """``n_instances`` ReLU-output toy models trained side by side (no parameter is shared).

    ``W``: [instance, n_hidden, n_features] (column ``i`` is feature ``i``'s direction);
    ``b_final``: [instance, n_features].
    """

    def __init__(self, config: ToyConfig, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        generator = torch.Generator().manual_seed(seed)
        weights = torch.empty(config.n_instances, config.n_hidden, config.n_features)
        for instance in weights:
            torch.nn.init.xavier_normal_(instance, generator=generator)
        self.W = torch.nn.Parameter(weights)
        self.b_final = torch.nn.Parameter(torch.zeros(config.n_instances, config.n_features))

    def hidden(self, features: Float[Tensor, "batch instance n_features"]) -> Float[Tensor, "batch instance n_hidden"]:
        """``h = W x``, per instance."""
        _check_features(features, self.config)
        return einops.einsum(self.W, features, "instance hidden feature, batch instance feature -> batch instance hidden")

    def forward(self, features: Float[Tensor, "batch instance n_features"]) -> Float[Tensor, "batch instance n_features"]:
        """``ReLU(W^T W x + b)``, per instance."""
        hidden = self.hidden(features)
        out = einops.einsum(self.W, hidden, "instance hidden feature, batch instance hidden -> batch instance feature")
        return torch.relu(out + self.b_final)


def _check_features(features: Tensor, config: ToyConfig) -> None:
    expected = (config.n_instances, config.n_features)
    if features.ndim != 3 or tuple(features.shape[1:]) != expected:
        raise ValueError(f"features must be [batch, instance, n_features] = [batch, {expected[0]}, {expected[1]}], "
                         f"got {list(features.shape)}; make them with sparse_features(config, batch)")


def sparse_features(config: ToyConfig, batch: int, generator: torch.Generator | None = None,
                    ) -> Float[Tensor, "batch instance n_features"]:
    """A batch of inputs: each feature is uniform in [0, 1] with probability ``1 - sparsity`` of
    its instance, else 0."""
    shape = (batch, config.n_instances, config.n_features)
    values = torch.rand(shape, generator=generator)
    active = torch.rand(shape, generator=generator) < config.feature_probability()[:, None]
    return values * active


def weighted_mse(config: ToyConfig, features: Float[Tensor, "batch instance n_features"],
                 reconstruction: Float[Tensor, "batch instance n_features"]) -> Float[Tensor, "instance"]:
    """``mean over the batch of sum_i I_i (x_i - x'_i)^2``, one loss per instance."""
    squared = (features - reconstruction).pow(2) * config.importance()
    return einops.reduce(squared, "batch instance feature -> instance", "sum") / features.shape[0]


@dataclass
class ToyRun:
    """A trained toy model and its loss per instance, logged every ``log_every`` steps."""

    model: ToyModel
    losses: Float[Tensor, "log instance"]
    log_every: int


def train_toy_model(config: ToyConfig, steps: int = 2_000, batch: int = 512, lr: float = 1e-2,
                    seed: int = 0, log_every: int = 100, progress: bool = True) -> ToyRun:
    """Train every instance of ``ToyModel(config, seed)`` with Adam on fresh batches of
    :func:`sparse_features` (the instances' losses are summed: they share no parameter, so each
    gets its own gradient). The paper trains 10,000 steps at lr 1e-3; at lr 1e-2, 2,000 steps
    reach the same geometry for 5 -> 2 features (tests/test_superposition.py)."""
    if steps < 1 or batch < 1:
        raise ValueError(f"steps ({steps}) and batch ({batch}) must be at least 1")
    model = ToyModel(config, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for step in trange(steps, desc="toy models", disable=not progress):
        features = sparse_features(config, batch, generator)
        loss = weighted_mse(config, features, model(features))
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
        if step % log_every == 0 or step == steps - 1:
            losses.append(loss.detach())
    return ToyRun(model, torch.stack(losses), log_every)


# --------------------------------------------------------------------------------------------
# Measuring superposition


def feature_norms(W: Float[Tensor, "instance n_hidden n_features"]) -> Float[Tensor, "instance n_features"]:
    """``||W_i||`` per instance and feature."""
    return _check_weights(W).norm(dim=1)


def feature_overlaps(W: Float[Tensor, "instance n_hidden n_features"]) -> Float[Tensor, "instance n_features n_features"]:
    """``(W_i / ||W_i||) . W_j`` for every pair: row ``i`` is feature ``j``'s projection on ``i``'s direction."""
    directions = _check_weights(W) / feature_norms(W).clamp_min(1e-8)[:, None, :]
    return einops.einsum(directions, W, "instance hidden i, instance hidden j -> instance i j")


def interference(W: Float[Tensor, "instance n_hidden n_features"]) -> Float[Tensor, "instance n_features"]:
    """``sum_{j != i} ((W_i / ||W_i||) . W_j)^2``: 0 when feature ``i`` has a dimension to itself.
    Read it for represented features only: a dropped feature's direction is whatever is left of
    its initialisation."""
    squared = feature_overlaps(W).pow(2)
    return squared.sum(dim=-1) - squared.diagonal(dim1=-2, dim2=-1)


def feature_dimensionality(W: Float[Tensor, "instance n_hidden n_features"]) -> Float[Tensor, "instance n_features"]:
    """``D_i = ||W_i||^2 / sum_j ((W_i / ||W_i||) . W_j)^2`` (Elhage et al. 2022, "Feature
    dimensionality"): 1 for a feature alone in its dimension, 1/2 in an antipodal pair, 2/5 in a
    pentagon, 0 for a dropped feature."""
    squared_norms = feature_norms(W).pow(2)
    return squared_norms / feature_overlaps(W).pow(2).sum(dim=-1).clamp_min(1e-8)


def dimensions_per_feature(W: Float[Tensor, "instance n_hidden n_features"]) -> Float[Tensor, "instance"]:
    """``n_hidden / ||W||_F^2``: the dimensions each feature gets on average (1 without
    superposition if every dimension is used; below 1 in superposition)."""
    return _check_weights(W).shape[1] / W.pow(2).sum(dim=(1, 2))


def represented(W: Float[Tensor, "instance n_hidden n_features"],
                threshold: float = REPRESENTED_NORM) -> Float[Tensor, "instance n_features"]:
    """Whether each feature is represented: ``||W_i|| > threshold``."""
    return feature_norms(W) > threshold


def _check_weights(W: Tensor) -> Tensor:
    if W.ndim != 3:
        raise ValueError(f"W must be [instance, n_hidden, n_features] (ToyModel.W), got {list(W.shape)}; "
                         "for one model, add the instance dimension with W[None]")
    return W


def polygon_angles(W: Float[Tensor, "n_hidden n_features"], features: Sequence[int]) -> list[float]:
    """The angles (degrees, in [0, 360)) of ``features`` in a two-dimensional hidden space, sorted:
    a pentagon's five features are 72 degrees apart, an antipodal pair's two 180."""
    if W.ndim != 2 or W.shape[0] != 2:
        raise ValueError(f"polygon_angles needs one instance with n_hidden = 2 ([2, n_features]), got {list(W.shape)}")
    return sorted(math.degrees(math.atan2(W[1, i].item(), W[0, i].item())) % 360 for i in features)
