"""Chapter 7: activation patching and attribution patching on the course model, checked against the tasks.

Numbers in comments: measured on the course model, 32 pairs, 2026-11-25.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from utils.batching import activation_bytes_per_prompt, variants_per_pass
from utils.checkers import circuits
from utils.checkers.circuits import (
    check_attribution, check_faithfulness, check_normalised_metric, check_patch_head_positions, check_replace_head,
)
from utils.checks import assert_accepts, assert_rejects
from utils.hooks import capture, editing_head_outputs, hooks
from utils.models import load_model
from utils.patching import (
    PairTokens, accuracy, accuracy_with_heads_ablated, agreement_pairs, attribution,
    attribution_patch_head_positions, attribution_patch_heads, baseline, clean_head_outputs, correlation,
    integrated_gradients, integrated_gradients_head_positions, ioi_pairs, logit_difference,
    logit_difference_with_heads_ablated, metric_gradient_at, normalised_metric, patch_head_positions, patch_heads,
    patch_residual, path_patch, path_patch_senders, path_patch_to_logits, position_labels, replace_head,
    tokenize_pairs,
)

#: The IOI heads that matter (patching one head back restores: 0.2 1.05, 3.5 0.62, 1.3 0.14, 1.6 0.14).
IOI_HEADS = [(0, 0), (0, 4), (2, 5), (2, 4)]       # patched alone: 0.44, 0.39, 0.20, 0.09 (v11)


@pytest.fixture(scope="module")
def ioi(course_tokenizer):
    return tokenize_pairs(course_tokenizer, ioi_pairs(32))


@pytest.fixture(scope="module")
def agreement_tokens(course_tokenizer):
    return tokenize_pairs(course_tokenizer, agreement_pairs(32))


def test_pairs_align_and_flip_the_answer(course_model, ioi, agreement_tokens):
    for tokens in (ioi, agreement_tokens):
        assert tokens.clean.shape == tokens.corrupted.shape
        differs = (tokens.clean != tokens.corrupted).sum(dim=1)
        assert (differs == 1).all()                               # one token changes: S2, or the subject
        assert accuracy(course_model, tokens) == 1.0 and accuracy(course_model, tokens, "corrupted") == 1.0
    base = baseline(course_model, ioi)
    assert base.clean > 8 and base.corrupted < -8                  # 10.2 and -10.0
    assert position_labels(ioi)[10] == "10 ␣" + ioi.labels[10][1:]


def test_bad_pairs_are_explained(course_tokenizer, course_model):
    pair = ioi_pairs(1)[0]
    with pytest.raises(ValueError, match=r"clean prompt has 15 tokens and the corrupted one 16.*align token for token"):
        tokenize_pairs(course_tokenizer, [dataclasses.replace(pair, corrupted=pair.corrupted + " the")])
    with pytest.raises(ValueError, match="different lengths"):
        tokenize_pairs(course_tokenizer, [pair, ioi_pairs(1, template=2)[0]])
    with pytest.raises(ValueError, match="one-token answers"):
        tokenize_pairs(course_tokenizer, [dataclasses.replace(pair, answer=" Mary Anna")])
    same = tokenize_pairs(course_tokenizer, [dataclasses.replace(pair, corrupted=pair.clean)])
    with pytest.raises(ValueError, match="nothing to patch"):
        baseline(course_model, same)
    with pytest.raises(ValueError, match="no pairs"):
        tokenize_pairs(course_tokenizer, [])


def test_ioi_heads_found_by_patching_destroy_the_task_when_knocked_out(course_model, course_tokenizer, ioi):
    effects = patch_heads(course_model, ioi, progress=False)
    assert effects[0, 0] > 0.3 and effects[0, 4] > 0.3 and effects.max() < 0.6        # no head restores it alone
    top = torch.topk(effects.flatten(), 4).indices.tolist()
    assert sorted((i // 8, i % 8) for i in top) == sorted(IOI_HEADS)
    reference = tokenize_pairs(course_tokenizer, ioi_pairs(32, seed=1)).clean
    assert accuracy_with_heads_ablated(course_model, ioi, IOI_HEADS, reference) < 0.6          # 0.53: chance
    assert accuracy_with_heads_ablated(course_model, ioi, [(0, 1), (1, 2), (3, 6), (2, 7)], reference) > 0.95
    with torch.no_grad():
        clean_differences = logit_difference(course_model(ioi.clean).logits, ioi.answer, ioi.wrong)
    torch.testing.assert_close(logit_difference_with_heads_ablated(course_model, ioi, [], reference), clean_differences)
    with pytest.raises(ValueError, match="mean_over has 5 positions and the prompts"):
        logit_difference_with_heads_ablated(course_model, ioi, IOI_HEADS, reference[:, :5])


def test_integrated_gradients_are_exact_for_a_linear_metric_and_need_the_midpoints():
    generator = torch.Generator().manual_seed(0)
    clean, corrupted, weights = (torch.randn(2, 3, 4, 5, generator=generator) for _ in range(3))
    exact = ((clean - corrupted) * weights).sum(dim=(0, 3)).T                       # [head, pos]
    linear = integrated_gradients(clean, corrupted, lambda points: weights.expand_as(points), steps=3)
    torch.testing.assert_close(linear, exact)
    points_seen = []
    integrated_gradients(clean, corrupted, lambda points: points_seen.append(points) or torch.zeros_like(points), 4)
    t = ((points_seen[0] - corrupted) / (clean - corrupted)).flatten(1).mean(dim=1)
    torch.testing.assert_close(t, torch.tensor([1, 3, 5, 7]) / 8)


def test_residual_patching_follows_the_information(course_model, ioi, agreement_tokens):
    ioi_effects = patch_residual(course_model, ioi, progress=False)
    assert ioi_effects[0, 10] == pytest.approx(1.0, abs=1e-4)       # S2 enters block 0: everything is there
    assert ioi_effects[:, :10].abs().max() < 1e-4                    # before S2 the runs are identical
    agreement_effects = patch_residual(course_model, agreement_tokens, progress=False)
    assert agreement_effects[0, 2] == pytest.approx(1.0, abs=1e-4)  # the subject
    assert agreement_effects[3, -1] > 0.6                            # moved to the last position by block 3 (0.78)


def test_attribution_patching_approximates_activation_patching(course_model, ioi, agreement_tokens):
    """Heads x positions: r = 1.00 for agreement and IOI, with and without integrated gradients. AtP underestimates
    the largest IOI patch, head 0.0 (0.32 for a real 0.44); integrated gradients get 0.44."""
    actual = patch_head_positions(course_model, agreement_tokens, progress=False)
    assert correlation(actual, attribution_patch_head_positions(course_model, agreement_tokens)) >= 0.95
    actual_ioi = patch_head_positions(course_model, ioi, progress=False)
    estimate = attribution_patch_head_positions(course_model, ioi)
    integrated = integrated_gradients_head_positions(course_model, ioi)
    assert correlation(actual_ioi, estimate) >= 0.95 and correlation(actual_ioi, integrated) >= 0.99
    real, first_order, averaged = (effects[0, 0].sum() for effects in (actual_ioi, estimate, integrated))
    assert real > 0.3 and first_order < 0.85 * real and abs(averaged - real) < 0.03
    torch.testing.assert_close(attribution_patch_heads(course_model, ioi), estimate.sum(dim=-1))


def one_patch_per_pass(model, tokens, site, layer, masks, clean):
    """The specification of the batched sweeps: one forward pass per patch, nothing skipped."""
    base = baseline(model, tokens)
    effects = []
    for mask in masks:
        def patch(activation, mask=mask):
            chosen = mask.reshape(1, *mask.shape, 1)
            return torch.where(chosen, clean, activation)
        edit = hooks(model, {f"resid_pre.{layer}": patch}) if site == "resid_pre" else \
            editing_head_outputs(model, layer, patch)
        with edit, torch.no_grad():
            difference = logit_difference(model(tokens.corrupted).logits, tokens.answer, tokens.wrong).mean()
        effects.append(normalised_metric(difference, base.clean, base.corrupted))
    return torch.stack(effects)


def test_batched_sweeps_equal_one_patch_per_pass(course_model, ioi):
    """Many patches per forward pass, the prefix run once and unchanged entries skipped: the same numbers."""
    n_pos = ioi.clean.shape[1]
    residual = patch_residual(course_model, ioi, progress=False)
    heads = patch_heads(course_model, ioi, progress=False)
    positions = patch_head_positions(course_model, ioi, progress=False)
    clean_z, clean_residual = clean_head_outputs(course_model, ioi.clean), capture(
        course_model, ioi.clean, ["resid_pre.2"])["resid_pre.2"]
    one_position = torch.eye(n_pos, dtype=torch.bool)
    torch.testing.assert_close(residual[2], one_patch_per_pass(course_model, ioi, "resid_pre", 2, one_position,
                                                               clean_residual), atol=1e-5, rtol=0)
    for layer in (0, 3):
        one_head = torch.eye(8, dtype=torch.bool).unsqueeze(1).expand(8, n_pos, 8)
        torch.testing.assert_close(heads[layer], one_patch_per_pass(course_model, ioi, "z", layer, one_head,
                                                                    clean_z[layer]), atol=1e-5, rtol=0)
        entries = [(head, pos) for head in (2, 5) for pos in (0, 9, 10, n_pos - 1)]
        masks = torch.zeros(len(entries), n_pos, 8, dtype=torch.bool)
        for index, (head, pos) in enumerate(entries):
            masks[index, pos, head] = True
        expected = one_patch_per_pass(course_model, ioi, "z", layer, masks, clean_z[layer])
        torch.testing.assert_close(torch.stack([positions[layer, h, p] for h, p in entries]), expected,
                                   atol=1e-5, rtol=0)


def integrated_gradients_one_point_per_pass(model, tokens, steps):
    """The specification of integrated gradients: one forward and backward pass per layer and midpoint."""
    base = baseline(model, tokens)
    clean, corrupted = clean_head_outputs(model, tokens.clean), clean_head_outputs(model, tokens.corrupted)
    results = []
    for layer in range(len(clean)):
        total = torch.zeros_like(clean[layer])
        for t in (torch.arange(steps) + 0.5) / steps:
            point = (corrupted[layer] + t * (clean[layer] - corrupted[layer])).requires_grad_()
            with editing_head_outputs(model, layer, lambda _: point):
                difference = logit_difference(model(tokens.corrupted).logits, tokens.answer, tokens.wrong).mean()
            normalised_metric(difference, base.clean, base.corrupted).backward()
            total += point.grad
        model.zero_grad(set_to_none=True)
        results.append(attribution(clean[layer], corrupted[layer], total / steps))
    return torch.stack(results)


@pytest.mark.parametrize("memory_budget", [2**30, 1])
def test_integrated_gradients_side_by_side_equal_one_point_per_pass(course_model, ioi, memory_budget):
    expected = integrated_gradients_one_point_per_pass(course_model, ioi, steps=4)
    actual = integrated_gradients_head_positions(course_model, ioi, steps=4, memory_budget=memory_budget)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)


def test_a_sweep_over_the_memory_budget_runs_in_chunks(course_model, agreement_tokens):
    n, n_pos = agreement_tokens.clean.shape
    one_prompt = activation_bytes_per_prompt(course_model, n_pos)
    assert variants_per_pass(course_model, n, n_pos, 10 * n * one_prompt) == 10
    assert variants_per_pass(course_model, n, n_pos, 1) == 1                         # never fewer than one
    with pytest.raises(ValueError, match="memory_budget must be a positive number of bytes"):
        variants_per_pass(course_model, n, n_pos, 0)
    passes = []
    handle = course_model.register_forward_hook(lambda module, args, output: passes.append(output.logits.shape[0]))
    try:
        in_one_go = patch_heads(course_model, agreement_tokens, progress=False)
        passes.clear()
        chunked = patch_heads(course_model, agreement_tokens, progress=False, memory_budget=3 * n * one_prompt)
    finally:
        handle.remove()
    torch.testing.assert_close(chunked, in_one_go, atol=1e-5, rtol=0)
    patch_passes = passes[4:]                      # after the baseline's and the recordings' four passes
    assert max(patch_passes) == 3 * n and len(patch_passes) == 4 * 3   # 8 heads a layer in chunks of 3, 3, 2


def test_the_first_pairs_of_a_batch(ioi):
    two = ioi.first(2)
    assert two.clean.shape == (2, ioi.clean.shape[1]) and two.labels == ioi.labels
    for field in ("clean", "corrupted", "answer", "wrong"):
        assert torch.equal(getattr(two, field), getattr(ioi, field)[:2])
    assert torch.equal(ioi.first(1000).clean, ioi.clean)                  # all of them when there are fewer
    with pytest.raises(ValueError, match="at least 1 pair"):
        ioi.first(0)


def test_a_sweep_check_on_a_much_larger_model_runs_on_the_course_model(course_model, course_tokenizer, monkeypatch):
    """Exercise 7.6's check sweeps every head at every position: on a model 80 times the course model's size that
    would take half a minute, so it runs the same function on the course model instead (and 7.11's on its SAEs)."""
    from utils.feature_circuits import faithfulness
    from utils.models import tiny_random_model

    assert circuits._sweep_subject(course_model, course_tokenizer).model is course_model
    monkeypatch.setattr(circuits, "size_relative_to_course_model", lambda model: 80.0)
    unusable = tiny_random_model("gpt2", vocab_size=8)          # the course tokenizer's ids would not fit it
    subject = circuits._sweep_subject(unusable, course_tokenizer)
    assert subject.model is not unusable and subject.where == ", on the course model"
    assert set(subject.saes) == set(range(4)) and subject.saes[0].W_dec.shape[1] == course_model.config.n_embd
    assert_accepts(check_patch_head_positions(patch_head_positions, unusable, course_tokenizer))
    wrong = lambda model, tokens, progress=True: patch_head_positions(model, tokens, progress).transpose(1, 2)  # noqa: E731
    assert_rejects(check_patch_head_positions(wrong, unusable, course_tokenizer), "on the course model")
    assert_accepts(check_faithfulness(faithfulness, unusable, course_tokenizer, saes={}))    # with the course's SAEs


def test_path_patching_every_sender_at_once_equals_one_path_at_a_time(course_model, ioi):
    for receiver in [(2, 4), (3, 1)]:
        batched = path_patch_senders(course_model, ioi, receiver, progress=False)
        one_at_a_time = torch.tensor([[path_patch(course_model, ioi, (layer, head), receiver) for head in range(8)]
                                      for layer in range(receiver[0])])
        assert batched.shape == (receiver[0], 8)
        torch.testing.assert_close(batched, one_at_a_time, atol=1e-5, rtol=0)
    in_chunks = path_patch_senders(course_model, ioi, (2, 4), progress=False, memory_budget=1)   # one sender a pass
    torch.testing.assert_close(in_chunks, path_patch_senders(course_model, ioi, (2, 4), progress=False))


def test_path_patching_tells_a_chain_of_heads_from_a_route_of_its_own(course_model, ioi):
    """The chapter's claim: the paths from the layer-0 IOI heads 0.0 and 0.4 carry about all of what 2.4 restores
    (0.05 + 0.06 for 0.09 patched alone: a chain), and almost none of what 2.5 restores (0.00 + 0.01 for 0.20)."""
    alone = patch_heads(course_model, ioi, progress=False)
    for receiver, at_least, at_most in [((2, 4), 0.5, None), ((2, 5), None, 0.25)]:
        share = sum(path_patch(course_model, ioi, sender, receiver) for sender in [(0, 0), (0, 4)]) / alone[receiver]
        assert (at_least is None or share >= at_least) and (at_most is None or share <= at_most), (receiver, share)


def test_the_first_layer_heads_reach_the_answer_partly_through_later_heads(course_model, ioi):
    """The chapter's claim: 0.0 and 0.4 keep 0.30 and 0.28 of their 0.44 and 0.39 when every later head is frozen;
    2.5 and 2.4 keep all of theirs (0.21 for 0.20, 0.09 for 0.09): no head after them relays their effect."""
    alone = patch_heads(course_model, ioi, progress=False)
    for head in [(0, 0), (0, 4)]:
        assert 0.5 * alone[head] < path_patch_to_logits(course_model, ioi, head) < alone[head] - 0.05, head
    for head in [(2, 5), (2, 4)]:
        assert path_patch_to_logits(course_model, ioi, head) == pytest.approx(alone[head].item(), abs=0.02), head
    last = (3, 1)                                                    # nothing after it to freeze: its whole effect
    assert path_patch_to_logits(course_model, ioi, last) == pytest.approx(alone[last].item(), abs=1e-5)


def test_a_path_must_run_from_an_earlier_layer_to_a_later_one(course_model, ioi):
    with pytest.raises(ValueError, match="earlier layer than the receiver"):
        path_patch(course_model, ioi, (2, 0), (2, 4))
    with pytest.raises(ValueError, match="not a head of this model"):
        path_patch(course_model, ioi, (0, 8), (2, 4))
    with pytest.raises(ValueError, match="not a head of this model"):
        path_patch_to_logits(course_model, ioi, (4, 0))
    with pytest.raises(ValueError, match="earlier layer than the receiver"):
        path_patch_senders(course_model, ioi, (0, 3), progress=False)


@pytest.mark.parametrize("family", ["gpt_neox", "llama"])
def test_other_architectures(family):
    from utils.models import tiny_random_model

    model = tiny_random_model(family)
    generator = torch.Generator().manual_seed(0)
    clean = torch.randint(1, 320, (4, 6), generator=generator)
    corrupted = clean.clone()
    corrupted[:, 2] = torch.randint(1, 320, (4,), generator=generator)
    tokens = PairTokens(clean, corrupted, torch.tensor([5, 6, 7, 8]), torch.tensor([9, 10, 11, 12]), ["t"] * 6)
    effects = patch_head_positions(model, tokens, progress=False)
    assert effects.shape == (2, 4, 6) and effects[:, :, :2].abs().max() < 1e-5   # before the change, nothing
    assert correlation(effects, attribution_patch_head_positions(model, tokens)) > 0.5
    masks = torch.zeros(6, 6, 4, dtype=torch.bool)
    masks[torch.arange(6), torch.arange(6), 1] = True                         # head 1 at each position
    expected = one_patch_per_pass(model, tokens, "z", 1, masks, clean_head_outputs(model, tokens.clean)[1])
    torch.testing.assert_close(effects[1, 1], expected, atol=1e-5, rtol=0)
    points = clean_head_outputs(model, tokens.corrupted)[1].expand(3, -1, -1, -1, -1)
    assert metric_gradient_at(model, tokens, 1, memory_budget=1)(points).shape == points.shape
    mean_over = torch.randint(1, 320, (3, 6), generator=generator)
    assert logit_difference_with_heads_ablated(model, tokens, [(0, 1), (1, 3)], mean_over).shape == (4,)
    torch.testing.assert_close(path_patch_senders(model, tokens, (1, 2), progress=False)[0, 3],
                               torch.tensor(path_patch(model, tokens, (0, 3), (1, 2))), atol=1e-5, rtol=0)


def test_normalised_metric_checker():
    assert_accepts(check_normalised_metric(normalised_metric))
    assert_rejects(check_normalised_metric(lambda ld, clean, corrupted: ld / clean), "input")          # no offset
    assert_rejects(check_normalised_metric(lambda ld, clean, corrupted: (ld - clean) / (corrupted - clean)), "input")
    assert_rejects(check_normalised_metric(                                                            # abs() of the range
        lambda ld, clean, corrupted: (ld - corrupted) / abs(clean - corrupted)), "clean -2.0")


def test_attribution_checker():
    assert_accepts(check_attribution(attribution))
    assert_rejects(check_attribution(lambda c, r, g: torch.einsum("npha,npha->hp", r - c, g)), "input")      # sign
    assert_rejects(check_attribution(lambda c, r, g: torch.einsum("npha,npha->hp", c - r, g) / len(c)), "batch 3")
    assert_rejects(check_attribution(lambda c, r, g: torch.einsum("npha,npha->ph", c - r, g)), "shape")


def test_with_the_transformer_lens_model_too(ioi):
    """The same patching numbers come out of the HookedTransformer of the same weights (its hook_z)."""
    tl_model = load_model("course", backend="transformer_lens")
    _, clean_cache = tl_model.run_with_cache(ioi.clean, names_filter="blocks.0.attn.hook_z")

    def patch(z, hook):
        z[:, :, 2] = clean_cache["blocks.0.attn.hook_z"][:, :, 2]
        return z

    logits = tl_model.run_with_hooks(ioi.corrupted, fwd_hooks=[("blocks.0.attn.hook_z", patch)])
    rows = torch.arange(len(ioi.answer))
    difference = (logits[rows, -1, ioi.answer] - logits[rows, -1, ioi.wrong]).mean()
    hf_model = load_model("course")
    base = baseline(hf_model, ioi)
    expected = patch_heads(hf_model, ioi, progress=False)[0, 2]
    assert normalised_metric(difference, base.clean, base.corrupted).item() == pytest.approx(expected.item(), abs=1e-3)


def test_replace_head_checker():
    assert_accepts(check_replace_head(replace_head))

    def in_place(z, clean_z, head):
        z[:, :, head] = clean_z[:, :, head]
        return z

    def wrong_dimension(z, clean_z, head):
        patched = z.clone()
        patched[:, head] = clean_z[:, head]
        return patched

    def whole_layer(z, clean_z, head):
        return clean_z.clone()

    assert_rejects(check_replace_head(in_place), "changed its argument 'z' in place: the corrupted z is the hook's input")
    assert_rejects(check_replace_head(wrong_dimension), "head 1")
    assert_rejects(check_replace_head(whole_layer), "head 1")
