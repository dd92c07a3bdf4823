"""Categorical and hierarchical concepts as vectors (Park, Choe, Jiang and Veitch 2024, "The Geometry
of Categorical and Hierarchical Concepts in Large Language Models").

The unembedding row ``gamma(y)`` of each token ``y`` is a vector; the *causal inner product*
``<x, y>_C = x^T Cov(gamma)^-1 y`` makes concepts that the model treats as unrelated orthogonal.
Whitening turns it into the ordinary dot product:

    g(y) = Cov(gamma)^(-1/2) (gamma(y) - mean(gamma))          (:class:`CausalBasis`)

A category ``w`` (animals, emotions, the days of the week), given by the tokens of its words, has a
vector ``l_w`` (:func:`category_vector`: the direction that best separates the category's ``g``'s
from the origin, scaled to their mean's projection). The paper's hierarchy claim: a parent's
vector is orthogonal to what a child adds, ``l_parent . (l_child - l_parent) = 0`` (emotion vs.
joy, time vs. days), and a parent's vector is orthogonal to the differences between its children
(the children form a simplex around it). :func:`hierarchy_cosines` measures the first and
:func:`random_hierarchy_cosines` gives the baseline: the same sizes of categories drawn at random
from the vocabulary.

:data:`WORLD_HIERARCHY` is the course world's own hierarchy of single-token words.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from utils import architecture
from utils.world import vocabulary as V

#: parent -> child -> words: the categories of the course world (every word one token of the
#: course tokenizer, with a leading space).
WORLD_HIERARCHY: dict[str, dict[str, tuple[str, ...]]] = {
    "sentiment": {"positive": V.SENTIMENT_WORDS["positive"], "negative": V.SENTIMENT_WORDS["negative"]},
    "emotion": {emotion: V.EMOTION_ADJECTIVES[emotion] for emotion in V.EMOTIONS},
    "time": {"days": V.DAYS, "months": V.MONTHS},
    "geography": {"countries": tuple(V.CAPITALS), "capitals": tuple(V.CAPITALS.values()),
                  "languages": tuple(dict.fromkeys(V.LANGUAGES.values()))},
    "topic": {topic: tuple(sorted(V.TOPIC_WORDS[topic].all_words)) for topic in V.TOPICS},
}
#: How far :func:`category_vector` shrinks a category's covariance toward a multiple of the
#: identity: categories have fewer words than ``d_model``, so their own covariance is singular.
SHRINKAGE = 0.5


@dataclass(frozen=True)
class CausalBasis:
    """The whitening ``g(y) = A (gamma(y) - mean)`` of a model's unembedding (``A``: [d_model, d_model])."""

    mean: Float[Tensor, "d_model"]
    whitening: Float[Tensor, "d_model d_model"]

    @classmethod
    def from_unembedding(cls, unembedding: Float[Tensor, "vocab d_model"]) -> CausalBasis:
        if unembedding.ndim != 2 or unembedding.shape[0] <= unembedding.shape[1]:
            raise ValueError(f"the unembedding must be [vocab, d_model] with more tokens than dimensions, got "
                             f"{list(unembedding.shape)}")
        mean = unembedding.mean(dim=0)
        eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov((unembedding - mean).T))
        inverse_root = eigenvalues.clamp_min(1e-8 * eigenvalues.max()).rsqrt()
        return cls(mean, eigenvectors @ torch.diag(inverse_root) @ eigenvectors.T)

    def embed(self, unembedding_rows: Float[Tensor, "n d_model"]) -> Float[Tensor, "n d_model"]:
        """``g`` of the given unembedding rows: their causal inner products are dot products."""
        return (unembedding_rows - self.mean) @ self.whitening.T


def whitened_unembedding(model: torch.nn.Module) -> Float[Tensor, "vocab d_model"]:
    """``g(y)`` for every token of ``model``'s vocabulary (any architecture of ``utils.architecture``)."""
    unembedding = architecture.unembedding(model).weight.detach().float()
    return CausalBasis.from_unembedding(unembedding).embed(unembedding)


def category_tokens(tokenizer: PreTrainedTokenizerBase, words: Sequence[str]) -> list[int]:
    """The token of each word, written with a leading space as in running text.

    Raises ``ValueError`` for a category of fewer than two words, or for words that are not one
    token (their first piece would stand for another category: a prefix shared with other words).
    """
    if len(set(words)) < 2:
        raise ValueError(f"a category needs at least two members to have a direction, got {list(words)}")
    pieces = {word: tokenizer(" " + word, add_special_tokens=False)["input_ids"] for word in words}
    split = [word for word, ids in pieces.items() if len(ids) != 1]
    if split:
        raise ValueError(f"{split} are not one token of this tokenizer (with a leading space); leave them out of "
                         "the category, or pick words the vocabulary holds whole")
    return [pieces[word][0] for word in words]


def category_vector(g: Float[Tensor, "vocab d_model"], token_ids: Sequence[int],
                    shrinkage: float = SHRINKAGE) -> Float[Tensor, "d_model"]:
    """Park et al.'s vector of a category: ``l_w = (w . mean) w`` with ``w`` the unit vector along
    ``Cov_w^-1 mean`` (``mean`` and ``Cov_w`` of the category's ``g``'s; ``Cov_w`` shrunk toward
    ``trace/d * I`` by ``shrinkage``, as few words cannot fill ``d_model`` dimensions)."""
    if len(set(token_ids)) < 2:
        raise ValueError(f"a category needs at least two distinct tokens, got {list(token_ids)}")
    if not 0.0 < shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in (0, 1], got {shrinkage}: without it a small category's "
                         "covariance cannot be inverted")
    members = g[list(token_ids)]                                            # [n, d_model]
    mean = members.mean(dim=0)
    covariance = torch.cov(members.T)
    d_model = covariance.shape[0]
    shrunk = (1 - shrinkage) * covariance + shrinkage * covariance.trace() / d_model * torch.eye(d_model)
    direction = F.normalize(torch.linalg.solve(shrunk, mean), dim=0)
    return (direction @ mean) * direction


def parent_child_cosine(g: Float[Tensor, "vocab d_model"], parent: Sequence[int], child: Sequence[int]) -> float:
    """``cos(l_parent, l_child - l_parent)``: 0 when the child's vector adds only what is
    orthogonal to the parent's."""
    return _added_cosine(category_vector(g, parent), category_vector(g, child))


def _added_cosine(parent_vector: Float[Tensor, "d_model"], child_vector: Float[Tensor, "d_model"]) -> float:
    return F.cosine_similarity(parent_vector, child_vector - parent_vector, dim=0).item()


def _children_cosines(g: Float[Tensor, "vocab d_model"], children: Sequence[Sequence[int]]) -> list[float]:
    """Each child's cosine under the parent made of all their tokens (its vector computed once)."""
    parent_vector = category_vector(g, [token for tokens in children for token in tokens])
    return [_added_cosine(parent_vector, category_vector(g, tokens)) for tokens in children]


def hierarchy_cosines(g: Float[Tensor, "vocab d_model"], hierarchy: Mapping[str, Mapping[str, Sequence[int]]]
                      ) -> dict[tuple[str, str], float]:
    """``{(parent, child): cos(l_parent, l_child - l_parent)}``; a parent's tokens are its children's."""
    return {(parent, child): cosine for parent, children in hierarchy.items()
            for child, cosine in zip(children, _children_cosines(g, list(children.values())))}


def random_hierarchy_cosines(g: Float[Tensor, "vocab d_model"], child_sizes: Sequence[int], n: int = 50,
                             seed: int = 0) -> list[float]:
    """The baseline: ``n`` times, a parent of ``sum(child_sizes)`` random tokens split into
    children of ``child_sizes``; every child's cosine (``n * len(child_sizes)`` values)."""
    rng = random.Random(seed)
    ends = list(itertools.accumulate(child_sizes))
    cosines = []
    for _ in range(n):
        parent = rng.sample(range(g.shape[0]), ends[-1])
        cosines += _children_cosines(g, [parent[end - size:end] for size, end in zip(child_sizes, ends)])
    return cosines


def world_hierarchy_tokens(tokenizer: PreTrainedTokenizerBase,
                           hierarchy: Mapping[str, Mapping[str, Sequence[str]]] = WORLD_HIERARCHY
                           ) -> dict[str, dict[str, list[int]]]:
    """:data:`WORLD_HIERARCHY` (or another parent -> child -> words mapping) as token ids."""
    return {parent: {child: category_tokens(tokenizer, words) for child, words in children.items()}
            for parent, children in hierarchy.items()}
