"""Attention patterns and induction heads (chapter 3): the scores, the course model's heads checked
against what they do and how they compose, the plots, and the references of exercises 3.7 to 3.13, 3.15
and 3.16."""

from __future__ import annotations

import einops
import pytest
import torch

from utils.attention import (
    PATTERNS_PER_ROW, ablate_heads, attention_patterns, attention_view, composition_baseline, composition_scores, copy_losses,
    copy_losses_with_heads_ablated, heads_above, induction_scores, k_composition_scores, losses_by_copy,
    pattern_from_cache, plot_attention_patterns, plot_copy_losses, plot_head_scores, previous_token_scores,
    repeated_sequences, token_losses,
)
from utils.checkers import caching_hooks
from utils.checkers.caching_hooks import (
    check_composition_scores, check_induction_scores, check_previous_token_scores,
)
from utils.checks import assert_accepts, assert_rejects
from utils.course_model.evaluate import repeated_random_tokens
from utils.hooks import resample_ablate_head
from utils.models import tiny_random_model, to_hooked_transformer

LENGTH = 20
#: The course model's heads, as the chapter names them (measured on 64 sequences of 2 x 20 random words).
INDUCTION_HEADS = [(2, 7), (2, 1), (2, 0), (2, 4)]   # induction scores 0.75, 0.71, 0.65, 0.63; every other head < 0.05
PREVIOUS_TOKEN_HEADS = [(0, 3)]                      # previous-token score 0.98; every other head < 0.21


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
    others = induction.clone()
    for layer, head in INDUCTION_HEADS:
        assert induction[layer, head] > 0.6
        others[layer, head] = 0
    assert others.max() < 0.1


def test_ablating_induction_heads_removes_the_in_context_loss_drop(course_model, course_tokenizer, repeated):
    """Clean: the second copy costs 0.42 nats against 7.52 for the first. Induction heads zero- or
    mean-ablated: 6.89 or 7.03, at least 90 % of the first copy's (the first copy itself moves by 0.21 or
    0.16). Two other heads ablated: the drop stays. The previous-token head ablated: 7.02."""
    first, second = copy_losses(course_model, repeated, LENGTH)
    assert first > 4.0 and second < 0.5
    reference = repeated_random_tokens(course_tokenizer, 32, LENGTH, seed=1)   # what mean ablation averages over
    for how, mean_over in [("zero", None), ("mean", reference)]:
        with ablate_heads(course_model, INDUCTION_HEADS, how, mean_over):
            first_ablated, second_ablated = copy_losses(course_model, repeated, LENGTH)
        assert abs(first_ablated - first) < 0.3, how
        assert second_ablated > 0.9 * first, how      # the in-context drop is gone
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
    assert figure.layout.width is None, "a fixed width is clipped on a narrower page"
    six = plot_attention_patterns(patterns[2, 0], tokens)                           # all 8 heads: rows of 3
    assert len(six.data) == 8 and six.layout.height == 380 * -(-8 // PATTERNS_PER_ROW)
    scores = plot_head_scores(induction_scores(patterns, LENGTH), "induction").data[0]
    assert scores.z.shape == (4, 8) and scores.texttemplate == "%{z:.2f}" and scores.text is None
    assert len(plot_copy_losses({"clean": torch.ones(40), "ablated": torch.zeros(40)}, LENGTH).data) == 2


def test_attention_view_draws_offline_with_circuitsvis(patterns, course_tokenizer, repeated):
    """The view inlines circuitsvis's bundle (never its CDN), with one name per head and the pattern's values."""
    import json
    import re

    from circuitsvis.utils.render import render_local

    tokens = course_tokenizer.convert_ids_to_tokens(repeated[0])
    html = attention_view(patterns[2, 0, [0, 4]], tokens, head_names=["2.0", "2.4"])._repr_html_()
    assert "unpkg.com" not in html and "https://" not in html.split("CircuitsVis.render(")[1]
    bundle = render_local("AttentionHeads", attention=[[[1.0]]], tokens=["a"]).split("<script crossorigin type=\"module\">")[1]
    assert bundle.split("CircuitsVis.render(")[0].strip() in html, "not circuitsvis's own inline bundle"
    props = json.loads(re.search(r"CircuitsVis\.AttentionHeads,\s*(\{.*\})\s*\)", html, re.S).group(1))
    assert props["attentionHeadNames"] == ["2.0", "2.4"] and props["tokens"] == tokens
    shown = torch.tensor(props["attention"], dtype=torch.float64)
    assert torch.allclose(shown, patterns[2, 0, [0, 4]].double(), atol=5e-4)


def test_bad_inputs(patterns):
    with pytest.raises(ValueError, match="this one has 41"):
        induction_scores(patterns, 10)
    with pytest.raises(ValueError, match=r"\[\.\.\., batch, head, query, key\]"):
        previous_token_scores(patterns[0, 0, 0])
    with pytest.raises(ValueError, match="over the 5 tokens"):
        plot_attention_patterns(patterns[2, 0], ["a"] * 5)
    with pytest.raises(ValueError, match="over the 5 tokens"):
        attention_view(patterns[2, 0], ["a"] * 5)
    with pytest.raises(ValueError, match="2 head names for 8 heads"):
        attention_view(patterns[2, 0], ["a"] * 41, head_names=["x", "y"])


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


# --------------------------------------------------------------------------------------------
# Exercises 3.7 to 3.9, 3.12, 3.13, 3.15 and 3.16: patterns from queries and keys, repeated
# sequences, copy losses, composition, resampling


@pytest.fixture(scope="module")
def tl_course(course_model, course_tokenizer):
    return to_hooked_transformer(course_model, course_tokenizer)


@pytest.mark.parametrize("family", ["course", "gpt_neox", "llama"])
def test_patterns_recomputed_from_queries_and_keys_equal_the_models(family, tl_course):
    """Rotary (Pythia, Llama) and grouped-query (Llama) attention included."""
    tl = tl_course if family == "course" else to_hooked_transformer(tiny_random_model(family))
    _, cache = tl.run_with_cache(torch.randint(1, 300, (2, 9), generator=torch.Generator().manual_seed(0)))
    for layer in range(tl.cfg.n_layers):
        torch.testing.assert_close(pattern_from_cache(cache, layer), cache[f"blocks.{layer}.attn.hook_pattern"])


@pytest.mark.parametrize("family", ["course", "gpt_neox", "llama"])
def test_composition_scores_equal_transformer_lens(family, tl_course):
    tl = tl_course if family == "course" else to_hooked_transformer(tiny_random_model(family))
    for mode in ("Q", "K", "V"):
        torch.testing.assert_close(composition_scores(tl, mode), tl.all_composition_scores(mode).detach())
    torch.testing.assert_close(k_composition_scores(tl, 0, 1), tl.all_composition_scores("K")[0, :, 1].detach())


def test_the_composition_check_on_a_much_larger_model_checks_q_and_v_on_a_tiny_one(tl_course, monkeypatch):
    """Each score takes seconds on GPT-2 small: there the check computes K on the learner's model only, and still
    rejects a function that mixes the modes up, on a tiny random GPT-2."""
    monkeypatch.setattr(caching_hooks, "size_relative_to_course_model", lambda model: 80.0)
    assert_accepts(check_composition_scores(composition_scores, tl_course))
    q_as_k = lambda tl, mode: composition_scores(tl, "K" if mode == "Q" else mode)  # noqa: E731
    v_as_k = lambda tl, mode: composition_scores(tl, "K" if mode == "V" else mode)  # noqa: E731
    assert_rejects(check_composition_scores(q_as_k, tl_course), "tiny random GPT-2, Q")
    assert_rejects(check_composition_scores(v_as_k, tl_course), "tiny random GPT-2, V")


def test_composition_baseline_is_about_one_over_the_square_root_of_the_width():
    for d_model, d_head in [(128, 16), (768, 64)]:
        assert composition_baseline(d_model, d_head) == pytest.approx(d_model ** -0.5, rel=0.1)


def test_each_induction_head_reads_its_keys_from_the_previous_token_head(tl_course):
    """The chapter's claim: in the K-composition of layer 0 into layer 2, the previous-token head 0.3 is
    the strongest writer for each induction head, far above random matrices of the same shapes."""
    scores = k_composition_scores(tl_course, 0, 2)                          # [head of 0, head of 2]
    baseline = composition_baseline(tl_course.cfg.d_model, tl_course.cfg.d_head)
    for _, head in INDUCTION_HEADS:
        assert int(scores[:, head].argmax()) == PREVIOUS_TOKEN_HEADS[0][1]
        assert scores[PREVIOUS_TOKEN_HEADS[0][1], head] > 2 * baseline
    with pytest.raises(ValueError, match="earlier layer into a later one"):
        k_composition_scores(tl_course, 2, 2)


def test_repeated_sequences_repeat_draws_from_the_pool():
    pool = torch.tensor([5, 9, 13])
    rows = repeated_sequences(pool, 50, 6, bos=1, seed=3)
    assert rows.shape == (50, 13) and (rows[:, 0] == 1).all()
    assert torch.equal(rows[:, 1:7], rows[:, 7:]) and set(rows[:, 1:].unique().tolist()) == {5, 9, 13}
    assert torch.equal(rows, repeated_sequences(pool, 50, 6, bos=1, seed=3))
    assert not torch.equal(rows, repeated_sequences(pool, 50, 6, bos=1, seed=4))
    with pytest.raises(ValueError, match="1-D tensor of at least 2"):
        repeated_sequences(torch.tensor([[1, 2]]), 2, 3, bos=0)


def test_losses_by_copy_leave_out_the_first_token_of_each_copy(course_model, repeated):
    losses = token_losses(course_model, repeated)
    assert losses_by_copy(losses, LENGTH) == pytest.approx(copy_losses(course_model, repeated, LENGTH))
    marked = torch.zeros(1, 6)
    marked[0, [0, 3]] = 100.0                                           # the unpredictable first tokens
    assert losses_by_copy(marked, 3) == (0.0, 0.0)
    with pytest.raises(ValueError, match="losses must be"):
        losses_by_copy(losses, LENGTH + 1)


def test_copy_losses_with_heads_ablated_is_the_ablation_experiment(course_model, repeated):
    with ablate_heads(course_model, INDUCTION_HEADS):
        expected = copy_losses(course_model, repeated, LENGTH)
    assert copy_losses_with_heads_ablated(course_model, repeated, LENGTH, INDUCTION_HEADS) == pytest.approx(expected)
    assert copy_losses_with_heads_ablated(course_model, repeated, LENGTH, []) == pytest.approx(
        copy_losses(course_model, repeated, LENGTH))


def test_resample_ablation_from_the_same_input_changes_nothing(course_model, repeated):
    clean = course_model(repeated).logits
    with resample_ablate_head(course_model, 2, 4, repeated):
        torch.testing.assert_close(course_model(repeated).logits, clean)
    others = repeated.roll(1, dims=0)                                   # each row gets another row's head output
    with resample_ablate_head(course_model, 2, 4, others):
        assert not torch.allclose(course_model(repeated).logits, clean)
    with pytest.raises(ValueError, match="same shape"), resample_ablate_head(course_model, 2, 4, repeated[:1]):
        course_model(repeated)
    assert not course_model.transformer.h[2].attn.c_proj._forward_pre_hooks
