"""Tests for utils/decoding.py: each filter matches the ``transformers`` logits processor it re-implements."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from utils.decoding import (
    apply_repetition_penalty,
    apply_temperature,
    greedy,
    min_p_filter,
    sample,
    top_k_filter,
    top_p_filter,
    typical_filter,
)


def random_logits(batch: int, vocab: int, seed: int) -> torch.Tensor:
    return 3 * torch.randn(batch, vocab, generator=torch.Generator().manual_seed(seed))


def logits_with_ties(seed: int) -> torch.Tensor:
    """Integer logits in [-2, 2] over a vocab of 7 (many ties), plus a row where every logit is equal."""
    rows = torch.randint(-2, 3, (3, 7), generator=torch.Generator().manual_seed(seed)).float()
    return torch.cat([rows, torch.ones(1, 7)])


def already_filtered(seed: int) -> torch.Tensor:
    """A batch where an earlier filter has set some logits to -inf (never a row's largest)."""
    logits = random_logits(4, 50, seed)
    return logits.masked_fill(logits < -2, -torch.inf)


LOGITS = {
    "batch 1, vocab 7": random_logits(1, 7, seed=0),
    "batch 4, vocab 7": random_logits(4, 7, seed=1),
    "batch 3, vocab 2048": random_logits(3, 2048, seed=2),
    "batch 1, vocab 2048": random_logits(1, 2048, seed=3),
    "ties, vocab 7": logits_with_ties(seed=4),
    "already filtered": already_filtered(seed=5),
}
with_logits = pytest.mark.parametrize("logits", LOGITS.values(), ids=LOGITS.keys())


def previous_tokens_for(logits: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """[batch, 6] token ids, drawn from the first 10 ids so that some repeat."""
    vocab = min(10, logits.shape[-1])
    return torch.randint(vocab, (logits.shape[0], 6), generator=torch.Generator().manual_seed(seed))


def assert_same_logits(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Same -inf mask, and close values where kept."""
    assert actual.shape == expected.shape
    assert torch.equal(actual == -torch.inf, expected == -torch.inf), "different tokens filtered out"
    kept = expected != -torch.inf
    torch.testing.assert_close(actual[kept], expected[kept])


def assert_is_distribution(filtered: torch.Tensor) -> None:
    probs = filtered.softmax(dim=-1)
    assert not probs.isnan().any()
    torch.testing.assert_close(probs.sum(dim=-1), torch.ones(filtered.shape[0]))


# --------------------------------------------------------------------------------------------
# Each filter equals transformers' processor, and softmax of its output is a distribution


@with_logits
@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.5])
def test_temperature_matches_transformers(logits, temperature):
    expected = TemperatureLogitsWarper(temperature)(None, logits.clone())
    actual = apply_temperature(logits, temperature)
    assert_same_logits(actual, expected)
    assert_is_distribution(actual)


@with_logits
@pytest.mark.parametrize("k", [1, 2, 5, 7, 100, 5000])
def test_top_k_matches_transformers(logits, k):
    expected = TopKLogitsWarper(top_k=k)(None, logits.clone())
    actual = top_k_filter(logits, k)
    assert_same_logits(actual, expected)
    assert_is_distribution(actual)


@with_logits
@pytest.mark.parametrize("p", [0.05, 0.3, 0.9, 0.99, 1.0])
@pytest.mark.parametrize("min_tokens_to_keep", [1, 3])
def test_top_p_matches_transformers(logits, p, min_tokens_to_keep):
    expected = TopPLogitsWarper(top_p=p, min_tokens_to_keep=min_tokens_to_keep)(None, logits.clone())
    actual = top_p_filter(logits, p, min_tokens_to_keep=min_tokens_to_keep)
    assert_same_logits(actual, expected)
    assert_is_distribution(actual)


@with_logits
@pytest.mark.parametrize("min_p", [0.0, 0.01, 0.1, 0.5, 1.0])
def test_min_p_matches_transformers(logits, min_p):
    expected = MinPLogitsWarper(min_p=min_p)(None, logits.clone())
    actual = min_p_filter(logits, min_p)
    assert_same_logits(actual, expected)
    assert_is_distribution(actual)


@with_logits
@pytest.mark.parametrize("mass", [0.05, 0.3, 0.9, 0.99])
def test_typical_matches_transformers(logits, mass):
    expected = TypicalLogitsWarper(mass=mass)(None, logits.clone())
    actual = typical_filter(logits, mass)
    assert_same_logits(actual, expected)
    assert_is_distribution(actual)


def test_typical_can_drop_the_most_likely_token():
    """p = 0.4 for one token and 0.01 for 60 others: the entropy (3.1 nats) is near the rare tokens'
    surprise (4.6), far from the likely one's (0.9), so the typical set is the 60 rare tokens."""
    logits = torch.tensor([[0.4] + [0.01] * 60]).log()
    assert typical_filter(logits, 0.5).isfinite().tolist() == [[False] + [True] * 60]


@with_logits
@pytest.mark.parametrize("penalty", [0.5, 1.0, 1.3, 3.0])
def test_repetition_penalty_matches_transformers(logits, penalty):
    previous = previous_tokens_for(logits)
    expected = RepetitionPenaltyLogitsProcessor(penalty=penalty)(previous, logits.clone())
    actual = apply_repetition_penalty(logits, previous, penalty)
    assert_same_logits(actual, expected)
    assert_is_distribution(actual)


@with_logits
def test_filters_keep_the_original_probabilities_renormalised(logits):
    """Filtering only removes tokens: the kept ones keep their relative probabilities."""
    probs = logits.softmax(dim=-1)
    for filtered in [top_k_filter(logits, 3), top_p_filter(logits, 0.7), min_p_filter(logits, 0.2),
                     typical_filter(logits, 0.7)]:
        kept = filtered != -torch.inf
        renormalised = probs * kept / (probs * kept).sum(dim=-1, keepdim=True)
        torch.testing.assert_close(filtered.softmax(dim=-1), renormalised)


def test_filters_do_not_edit_their_input():
    logits = random_logits(4, 7, seed=6)
    original = logits.clone()
    apply_temperature(logits, 0.5)
    top_k_filter(logits, 2)
    top_p_filter(logits, 0.5)
    min_p_filter(logits, 0.5)
    typical_filter(logits, 0.5)
    apply_repetition_penalty(logits, previous_tokens_for(logits), 2.0)
    assert torch.equal(logits, original)


# --------------------------------------------------------------------------------------------
# Small worked examples (the semantics the chapter explains)


def test_top_k_keeps_every_token_tied_with_the_kth():
    logits = torch.tensor([[1.0, 3.0, 3.0, 2.0]])
    assert top_k_filter(logits, 1).isfinite().tolist() == [[False, True, True, False]]


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    assert top_p_filter(logits, 0.7).isfinite().tolist() == [[True, True, False, False]]
    assert top_p_filter(logits, 0.5).isfinite().tolist() == [[True, False, False, False]]
    assert top_p_filter(logits, 0.5, min_tokens_to_keep=3).isfinite().tolist() == [[True, True, True, False]]


def test_min_p_scales_the_cut_off_with_the_top_probability():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    assert min_p_filter(logits, 0.5).isfinite().tolist() == [[True, True, False, False]]  # cut-off 0.25


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    logits = torch.tensor([[2.0, -2.0, 2.0, -2.0]])
    previous = torch.tensor([[0, 1, 1]])  # token 1 twice: penalised once
    assert apply_repetition_penalty(logits, previous, 2.0).tolist() == [[1.0, -4.0, 2.0, -2.0]]


# --------------------------------------------------------------------------------------------
# Bad inputs: ValueError naming the parameter


@pytest.mark.parametrize("call, parameter", [
    (lambda x: apply_temperature(x, 0.0), "temperature"),
    (lambda x: apply_temperature(x, -1.0), "temperature"),
    (lambda x: apply_temperature(x, float("nan")), "temperature"),
    (lambda x: top_k_filter(x, 0), "k"),
    (lambda x: top_k_filter(x, -3), "k"),
    (lambda x: top_k_filter(x, 2.5), "k"),
    (lambda x: top_p_filter(x, 0.0), "p"),
    (lambda x: top_p_filter(x, 1.5), "p"),
    (lambda x: top_p_filter(x, -0.1), "p"),
    (lambda x: top_p_filter(x, 0.9, min_tokens_to_keep=0), "min_tokens_to_keep"),
    (lambda x: min_p_filter(x, -0.1), "min_p"),
    (lambda x: min_p_filter(x, 1.1), "min_p"),
    (lambda x: typical_filter(x, 0.0), "mass"),
    (lambda x: typical_filter(x, 1.0), "mass"),
    (lambda x: apply_repetition_penalty(x, previous_tokens_for(x), 0.0), "penalty"),
    (lambda x: apply_repetition_penalty(x, previous_tokens_for(x), -1.2), "penalty"),
])
def test_bad_parameters_raise_value_error_naming_them(call, parameter):
    with pytest.raises(ValueError, match=rf"\b{parameter}\b"):
        call(random_logits(2, 7, seed=7))


def test_temperature_zero_points_to_greedy():
    with pytest.raises(ValueError, match="greedy"):
        apply_temperature(random_logits(2, 7, seed=7), 0)


# --------------------------------------------------------------------------------------------
# Choosing the token


@with_logits
def test_greedy_is_argmax(logits):
    assert torch.equal(greedy(logits), logits.argmax(dim=-1))
    assert greedy(logits).shape == (logits.shape[0],)


@with_logits
def test_filters_always_keep_a_most_likely_token(logits):
    """Even the strictest settings keep a token of maximal logit (with ties, top-p's sort picks which one)."""
    rows = torch.arange(logits.shape[0])
    for filtered in [top_k_filter(logits, 1), top_p_filter(logits, 0.05), min_p_filter(logits, 1.0)]:
        assert torch.equal(logits[rows, greedy(filtered)], logits.amax(dim=-1))


def test_sample_is_reproducible_with_a_seeded_generator():
    logits = random_logits(8, 2048, seed=8)
    first = [sample(logits, torch.Generator().manual_seed(0)) for _ in range(3)]
    assert all(torch.equal(draw, first[0]) for draw in first)
    generator = torch.Generator().manual_seed(1)
    draws = torch.stack([sample(logits, generator) for _ in range(20)])
    assert draws.shape == (20, 8) and draws.dtype == torch.long
    assert len(draws.unique()) > 1  # a generator that is not reseeded gives new draws


@pytest.mark.parametrize("name, keep", [
    ("top_k", lambda x: top_k_filter(x, 5)),
    ("top_p", lambda x: top_p_filter(x, 0.5)),
    ("min_p", lambda x: min_p_filter(x, 0.1)),
    ("typical", lambda x: typical_filter(x, 0.5)),
])
def test_sample_never_picks_a_filtered_out_token(name, keep):
    filtered = keep(random_logits(4, 2048, seed=9))
    generator = torch.Generator().manual_seed(0)
    rows = torch.arange(filtered.shape[0])
    for _ in range(200):
        assert filtered[rows, sample(filtered, generator)].isfinite().all(), name


def test_sample_follows_the_distribution():
    logits = torch.tensor([[0.7, 0.2, 0.1]]).log().expand(20_000, 3)
    counts = sample(logits, torch.Generator().manual_seed(0)).bincount(minlength=3)
    torch.testing.assert_close(counts / counts.sum(), torch.tensor([0.7, 0.2, 0.1]), atol=0.02, rtol=0)
