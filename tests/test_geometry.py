"""Categorical and hierarchical concepts in the unembedding (utils.geometry): the whitening, the
category vectors on planted categories, and the hierarchy claim on the course model against its
random baseline (threshold stated in the test)."""

from __future__ import annotations

import statistics

import pytest
import torch

from utils.geometry import (
    WORLD_HIERARCHY, CausalBasis, category_tokens, category_vector, hierarchy_cosines, parent_child_cosine,
    random_hierarchy_cosines, whitened_unembedding, world_hierarchy_tokens,
)
from utils.models import load_model, load_tokenizer


def test_whitening_makes_the_causal_inner_product_a_dot_product():
    unembedding = torch.randn(500, 16, generator=torch.Generator().manual_seed(0)) @ torch.randn(16, 16)
    g = CausalBasis.from_unembedding(unembedding).embed(unembedding)
    assert torch.allclose(torch.cov(g.T), torch.eye(16), atol=1e-3)
    assert torch.allclose(g.mean(dim=0), torch.zeros(16), atol=1e-4)


def test_a_categorys_vector_points_at_its_members():
    generator = torch.Generator().manual_seed(0)
    g = torch.randn(400, 32, generator=generator)
    centre = torch.zeros(32)
    centre[3] = 4.0
    g[:60] += centre                                          # a planted category: tokens 0 to 59
    vector = category_vector(g, range(60))
    assert torch.cosine_similarity(vector, centre, dim=0) > 0.9
    assert vector.norm() == pytest.approx(4.0, rel=0.25)


def test_a_child_that_only_adds_an_orthogonal_direction_has_cosine_zero():
    generator = torch.Generator().manual_seed(0)
    g = torch.randn(400, 32, generator=generator) * 0.1
    g[:20, 0] += 3.0                                          # the parent: tokens 0 to 19
    g[:10, 1] += 3.0                                          # a child adds dimension 1 only
    assert abs(parent_child_cosine(g, range(20), range(10))) < 0.15


def test_world_hierarchy_words_are_single_tokens_of_the_course_tokenizer(course_tokenizer):
    tokens = world_hierarchy_tokens(course_tokenizer)
    assert {parent: set(children) for parent, children in tokens.items()} == {
        parent: set(children) for parent, children in WORLD_HIERARCHY.items()}
    assert all(len(ids) >= 2 for children in tokens.values() for ids in children.values())


def test_the_course_models_hierarchy_is_more_orthogonal_than_random_categories(course_model, course_tokenizer):
    """Ground truth: the world's parents and children (emotion and joy, time and days...) give
    mean |cos(l_parent, l_child - l_parent)| under half that of random categories of the same sizes."""
    g = whitened_unembedding(course_model)
    tokens = world_hierarchy_tokens(course_tokenizer)
    real = [abs(c) for c in hierarchy_cosines(g, tokens).values()]
    baseline = [abs(c) for children in tokens.values()
                for c in random_hierarchy_cosines(g, [len(ids) for ids in children.values()], n=20)]
    assert statistics.mean(real) < 0.5 * statistics.mean(baseline), (statistics.mean(real), statistics.mean(baseline))


def test_the_whitening_works_on_every_architecture(tiny_checkpoint):
    model = load_model(tiny_checkpoint)
    g = whitened_unembedding(model)
    assert g.shape == model.get_output_embeddings().weight.shape
    tokenizer = load_tokenizer(tiny_checkpoint)
    whole = [word for word in ("the", "and", "was", "to", "a", "of", "he", "she")
             if len(tokenizer(" " + word, add_special_tokens=False)["input_ids"]) == 1]
    assert len(whole) >= 2
    assert category_vector(g, category_tokens(tokenizer, whole)).isfinite().all()


# --------------------------------------------------------------------------------------------
# Bad input


def test_a_category_needs_two_members_that_are_whole_tokens(course_tokenizer):
    with pytest.raises(ValueError, match="at least two members"):
        category_tokens(course_tokenizer, ["Monday"])
    with pytest.raises(ValueError, match=r"\['Xqzvwy'\] are not one token of this tokenizer"):
        category_tokens(course_tokenizer, ["Monday", "Xqzvwy"])
    with pytest.raises(ValueError, match="at least two distinct tokens"):
        category_vector(torch.randn(10, 4), [3, 3])


def test_bad_shrinkage_and_a_short_unembedding_are_refused():
    with pytest.raises(ValueError, match=r"shrinkage must be in \(0, 1\]"):
        category_vector(torch.randn(10, 4), [1, 2], shrinkage=0.0)
    with pytest.raises(ValueError, match="more tokens than dimensions"):
        CausalBasis.from_unembedding(torch.randn(4, 8))
