"""Toy models of superposition (utils.superposition): the measures on weights whose geometry is
known, then the paper's results reproduced, with the thresholds stated here.

- dense features (sparsity 0), 5 into 2 dimensions, importance 0.9^i: the 2 most important are
  represented, orthogonal (interference < 0.05, dimensionality > 0.95), the other 3 dropped;
- sparse features (sparsity 0.97, importance 1): all 5 represented, as a pentagon (neighbours
  72 +- 10 degrees apart, dimensionality 2/5 +- 0.1);
- the phase change: at sparsity 0.9 more features are represented than there are dimensions, and
  the dimensions per feature fall from 1 (dense) to at most 0.5.
"""

from __future__ import annotations

import math

import pytest
import torch

from utils.superposition import (
    ToyConfig, ToyModel, dimensions_per_feature, feature_dimensionality, feature_norms, interference,
    polygon_angles, represented, sparse_features, train_toy_model, weighted_mse,
)


def polygon(n: int) -> torch.Tensor:
    """``n`` unit vectors evenly spaced on the circle: [1, 2, n]."""
    angles = torch.arange(n) * 2 * math.pi / n
    return torch.stack([angles.cos(), angles.sin()])[None]


# --------------------------------------------------------------------------------------------
# The measures, on known geometry


def test_orthogonal_features_have_a_dimension_each():
    W = torch.eye(3)[None]
    assert torch.allclose(feature_dimensionality(W), torch.ones(1, 3))
    assert torch.allclose(interference(W), torch.zeros(1, 3))
    assert torch.allclose(dimensions_per_feature(W), torch.tensor([1.0]))


@pytest.mark.parametrize(("n", "dimensionality"), [(2, 1 / 2), (3, 2 / 3), (5, 2 / 5)])
def test_an_antipodal_pair_a_triangle_and_a_pentagon_share_their_two_dimensions(n, dimensionality):
    W = polygon(n)
    assert torch.allclose(feature_dimensionality(W), torch.full((1, n), dimensionality), atol=1e-5)
    assert polygon_angles(W[0], range(n)) == pytest.approx([i * 360 / n for i in range(n)], abs=1e-4)


def test_a_dropped_feature_has_no_norm_and_no_dimension():
    W = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    assert represented(W).tolist() == [[True, True, False]]
    assert feature_dimensionality(W)[0, 2] == 0
    assert feature_norms(W)[0].tolist() == [1.0, 1.0, 0.0]


def test_sparse_features_are_zero_at_the_stated_rate():
    config = ToyConfig(n_features=20, sparsity=(0.0, 0.5, 0.9))
    features = sparse_features(config, 20_000, torch.Generator().manual_seed(0))
    zero_share = (features == 0).float().mean(dim=(0, 2))
    assert zero_share == pytest.approx(torch.tensor([0.0, 0.5, 0.9]), abs=0.01)
    assert features.min() >= 0 and features.max() <= 1


def test_the_loss_weights_each_feature_by_its_importance():
    config = ToyConfig(n_features=3, sparsity=(0.0,), importance_decay=0.5)
    features = torch.zeros(1, 1, 3)
    reconstruction = torch.ones(1, 1, 3)
    assert weighted_mse(config, features, reconstruction).tolist() == [1 + 0.5 + 0.25]


# --------------------------------------------------------------------------------------------
# The paper's results


@pytest.fixture(scope="module")
def sweep():
    config = ToyConfig(n_features=5, n_hidden=2, sparsity=(0.0, 0.9, 0.97), importance_decay=0.9)
    return train_toy_model(config, progress=False).model.W.detach()


def test_dense_features_keep_the_two_most_important_and_orthogonal(sweep):
    W = sweep[0:1]
    assert represented(W).tolist() == [[True, True, False, False, False]]
    assert interference(W)[0, :2].max() < 0.05
    assert feature_dimensionality(W)[0, :2].min() > 0.95


def test_sparse_features_are_stored_in_superposition(sweep):
    W = sweep[1:2]
    assert represented(W).sum() > 2
    assert interference(W)[represented(W)].max() > 0.3
    assert dimensions_per_feature(sweep[0:1]).item() == pytest.approx(1.0, abs=0.1)
    assert dimensions_per_feature(W).item() <= 0.5


def test_very_sparse_features_of_equal_importance_form_a_pentagon():
    config = ToyConfig(n_features=5, n_hidden=2, sparsity=(0.97,), importance_decay=1.0)
    W = train_toy_model(config, progress=False).model.W.detach()
    assert represented(W).all()
    angles = polygon_angles(W[0], range(5))
    gaps = [(b - a) % 360 for a, b in zip(angles, angles[1:] + angles[:1])]
    assert max(abs(gap - 72) for gap in gaps) < 10, angles
    assert feature_dimensionality(W)[0] == pytest.approx(torch.full((5,), 0.4), abs=0.1)


def test_instances_train_independently():
    """Each instance's gradient comes from its own loss only: one instance's parameters do not
    move another's loss."""
    config = ToyConfig(sparsity=(0.0, 0.9))
    model = ToyModel(config)
    features = sparse_features(config, 64, torch.Generator().manual_seed(0))
    weighted_mse(config, features, model(features))[0].backward()
    assert model.W.grad[1].abs().max() == 0 and model.b_final.grad[1].abs().max() == 0
    assert model.W.grad[0].abs().max() > 0


# --------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"sparsity": (1.0,)}, r"each sparsity must be in \[0, 1\)"),
    ({"sparsity": ()}, r"each sparsity must be in \[0, 1\)"),
    ({"n_hidden": 0}, "must be at least 1"),
    ({"importance_decay": 0.0}, r"importance_decay must be in \(0, 1\]"),
])
def test_a_bad_config_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ToyConfig(**kwargs)


def test_features_of_the_wrong_shape_are_refused():
    model = ToyModel(ToyConfig(n_features=5, sparsity=(0.0, 0.5)))
    with pytest.raises(ValueError, match=r"features must be \[batch, instance, n_features\] = \[batch, 2, 5\]"):
        model(torch.rand(8, 5))


def test_measures_want_the_instance_dimension():
    with pytest.raises(ValueError, match=r"add the instance dimension with W\[None\]"):
        feature_dimensionality(torch.eye(2))
    with pytest.raises(ValueError, match="n_hidden = 2"):
        polygon_angles(torch.eye(3), [0, 1])
