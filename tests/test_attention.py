"""Attention patterns and induction heads (chapter 3): the scores, the course model's heads checked
against what they do, the plots, and the Exercise 3.2 / 3.3 checkers."""

from __future__ import annotations

import einops
import pytest
import torch

from utils.attention import (
    ablate_heads, attention_patterns, copy_losses, heads_above, induction_scores, plot_attention_patterns,
    plot_copy_losses, plot_head_scores, previous_token_scores, token_losses,
)
from utils.checkers.caching_hooks import check_induction_scores, check_previous_token_scores
from utils.checks import assert_accepts, assert_rejects
from utils.course_model.evaluate import repeated_random_tokens
from utils.models import tiny_random_model

LENGTH = 20
#: The course model's heads, as the chapter names them (measured on 64 sequences of 2 x 20 random words).
INDUCTION_HEADS = [(2, 4), (2, 0)]          # induction scores 0.94 and 0.82; every other head < 0.07
PREVIOUS_TOKEN_HEADS = [(0, 3), (1, 1)]     # previous-token scores 0.95 and 0.91; every other head < 0.19


@pytest.fixture(scope="module")
def repeated(course_tokenizer):
    return repeated_random_tokens(course_tokenizer, 64, LENGTH, seed=0)


@pytest.fixture(scope="module")
def patterns(course_model, repeated):
    return attention_patterns(course_model, repeated)


def test_patterns_are_causal_distributions(patterns):
    assert patterns.shape == (4, 64, 8, 2 * LENGTH + 1, 2 * LENGTH + 1)
    torch.testing.assert_close(patterns.sum(-1), torch.ones(patterns.shape[:-1]))
    assert patterns.triu(diagonal=1).abs().max() == 0


def test_scores_on_hand_made_patterns():
    """A head that always attends to the previous token, one that does induction, one uniform."""
    positions = 2 * 3 + 1                                              # BOS + 2 copies of 3 tokens
    previous = torch.eye(positions).roll(-1, dims=1).tril()            # query q -> key q - 1 (query 0 -> itself)
    previous[0, 0] = 1
    induction = torch.eye(positions)
    for query in range(4, 7):
        induction[query] = 0
        induction[query, query - 3 + 1] = 1
    uniform = torch.ones(positions, positions).tril()
    uniform = uniform / uniform.sum(-1, keepdim=True)
    pattern = einops.rearrange(torch.stack([previous, induction, uniform]), "head q k -> 1 head q k")
    torch.testing.assert_close(previous_token_scores(pattern)[:2], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(induction_scores(pattern, 3)[:2], torch.tensor([0.0, 1.0]))
    assert induction_scores(pattern, 3)[2] == pytest.approx(torch.tensor([1 / 5, 1 / 6, 1 / 7]).mean())


def test_course_model_heads_are_named_by_their_scores(patterns):
    induction = induction_scores(patterns, LENGTH)
    previous = previous_token_scores(patterns)
    assert heads_above(induction, 0.5) == INDUCTION_HEADS
    assert heads_above(previous, 0.5) == PREVIOUS_TOKEN_HEADS
    assert induction[2, 4] > 0.9 and induction[2, 0] > 0.75
    others = induction.clone()
    others[2, 0] = others[2, 4] = 0
    assert others.max() < 0.1


def test_ablating_induction_heads_removes_the_in_context_loss_drop(course_model, course_tokenizer, repeated):
    """Clean: the second copy costs 0.29 nats against 4.66 for the first. Induction heads zero- or
    mean-ablated: 4.70, no better than the first copy. Two other heads ablated: the drop stays."""
    first, second = copy_losses(course_model, repeated, LENGTH)
    assert first > 4.0 and second < 0.5
    reference = repeated_random_tokens(course_tokenizer, 32, LENGTH, seed=1)   # what mean ablation averages over
    for how, mean_over in [("zero", None), ("mean", reference)]:
        with ablate_heads(course_model, INDUCTION_HEADS, how, mean_over):
            first_ablated, second_ablated = copy_losses(course_model, repeated, LENGTH)
        assert abs(first_ablated - first) < 0.05, how
        assert second_ablated > first - 0.1, how      # the whole in-context drop is gone
    with ablate_heads(course_model, [(0, 0), (3, 5)]):
        assert copy_losses(course_model, repeated, LENGTH)[1] < 0.5
    with ablate_heads(course_model, [(0, 3)]):         # the previous-token head the induction heads read
        assert copy_losses(course_model, repeated, LENGTH)[1] > 4.0


def test_token_losses_match_the_model_loss(course_model, repeated):
    losses = token_losses(course_model, repeated[:4])
    assert losses.shape == (4, 2 * LENGTH)
    assert losses.mean().item() == pytest.approx(course_model(repeated[:4], labels=repeated[:4]).loss.item(), rel=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama"])
def test_tiny_random_families(family):
    model = tiny_random_model(family)
    tokens = torch.randint(1, 320, (3, 2 * 5 + 1))
    patterns = attention_patterns(model, tokens)
    assert patterns.shape == (2, 3, 4, 11, 11)
    assert induction_scores(patterns, 5).shape == previous_token_scores(patterns).shape == (2, 4)


def test_plots(patterns, course_tokenizer, repeated):
    tokens = course_tokenizer.convert_ids_to_tokens(repeated[0])
    figure = plot_attention_patterns(patterns[2, 0], tokens, heads=[0, 4])
    assert len(figure.data) == 2 and len(set(figure.data[0].x)) == len(tokens)   # repeated tokens stay apart
    assert plot_head_scores(induction_scores(patterns, LENGTH), "induction").data[0].z.shape == (4, 8)
    assert len(plot_copy_losses({"clean": torch.ones(40), "ablated": torch.zeros(40)}, LENGTH).data) == 2


def test_bad_inputs(patterns):
    with pytest.raises(ValueError, match="this one has 41"):
        induction_scores(patterns, 10)
    with pytest.raises(ValueError, match=r"\[\.\.\., batch, head, query, key\]"):
        previous_token_scores(patterns[0, 0, 0])
    with pytest.raises(ValueError, match="over the 5 tokens"):
        plot_attention_patterns(patterns[2, 0], ["a"] * 5)


# --------------------------------------------------------------------------------------------
# Checkers


def test_previous_token_checker():
    assert_accepts(check_previous_token_scores(previous_token_scores))
    assert_rejects(check_previous_token_scores(  # the diagonal above: the next token, which a causal head never sees
        lambda p: p.diagonal(offset=1, dim1=-2, dim2=-1).mean(dim=(0, -1))), "input")
    assert_rejects(check_previous_token_scores(  # query 0 counted (attends to itself, score 1)
        lambda p: torch.cat([p[..., :1, :1], p.diagonal(offset=-1, dim1=-2, dim2=-1)[..., None, :].transpose(-1, -2)],
                            dim=-2).mean(dim=(0, -2, -1))), "input")
    assert_rejects(check_previous_token_scores(  # not averaged over the batch
        lambda p: p.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=-1)), "shape")


def test_induction_checker():
    def duplicate_token(pattern, length):  # attends to the first occurrence itself, not to the token after it
        queries = torch.arange(length + 1, 2 * length + 1)
        return pattern[..., queries, queries - length].mean(dim=(0, -1))

    def both_copies(pattern, length):      # queries of the first copy averaged in
        queries = torch.arange(length + 1, 2 * length + 1)
        second = pattern[..., queries, queries - length + 1]
        first = pattern[..., torch.arange(1, length + 1), torch.arange(1, length + 1)]
        return torch.cat([first, second], dim=-1).mean(dim=(0, -1))

    def transposed(pattern, length):       # keys down, queries across
        return induction_scores(pattern.transpose(-1, -2), length)

    assert_accepts(check_induction_scores(induction_scores))
    for wrong in (duplicate_token, both_copies, transposed):
        assert_rejects(check_induction_scores(wrong), "input")
