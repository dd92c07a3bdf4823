"""Chapter 3 groundwork: capturing and editing activations with PyTorch hooks, TransformerLens and nnsight.

The three ways must agree on the course model (the chapter compares them side by side), the edits
must change the model only inside their ``with`` block, and the Exercise 3.1 checker must accept
the reference and reject the usual wrong answers.
"""

from __future__ import annotations

import pytest
import torch

from utils import architecture
from utils.checkers.caching_hooks import check_capture_residual_stream
from utils.checks import assert_accepts, assert_rejects
from utils.hooks import (
    ablate_head, ablate_mlp, capture, capture_nnsight, capture_residual_stream, capture_transformer_lens,
    head_outputs, hooks, loss_with, nnsight_loss_with_ablation, site_to_transformer_lens,
    transformer_lens_ablate_head, transformer_lens_ablate_mlp, valid_sites,
)
from utils.models import load_model, load_tokenizer, tiny_random_model
from utils.world import generate_corpus


@pytest.fixture(scope="module")
def input_ids():
    """32 tokens of the course corpus as a batch of two sequences: [2, 16]."""
    tokenizer = load_tokenizer("course")
    text = " ".join(doc.text for doc in generate_corpus(10, seed=1))
    return tokenizer(text, return_tensors="pt").input_ids[0, :32].reshape(2, 16)


@pytest.fixture(scope="module")
def tl_model():
    return load_model("course", backend="transformer_lens")


@pytest.fixture(scope="module")
def nn_model():
    return load_model("course", backend="nnsight")


def assert_no_hooks(model):
    """No hook of ours is left on ``model`` (transformers 5 keeps hooks of its own once output_hidden_states is used)."""
    left = [name for name, module in model.named_modules()
            for hook in [*module._forward_hooks.values(), *module._forward_pre_hooks.values()]
            if not hook.__module__.startswith("transformers.")]
    assert not left, f"hooks left on {left}"


# --------------------------------------------------------------------------------------------
# Capturing, three ways


def test_three_ways_agree_on_every_site_of_the_course_model(course_model, tl_model, nn_model, input_ids):
    sites = valid_sites(architecture.n_layers(course_model))
    hf = capture(course_model, input_ids, sites)
    lens = capture_transformer_lens(tl_model, input_ids, sites)
    nnsight = capture_nnsight(nn_model, input_ids, sites)
    assert_no_hooks(course_model)
    assert list(hf) == list(lens) == list(nnsight) == sites
    batch, pos = input_ids.shape
    for site in sites:
        expected_shape = (batch, 8, pos, pos) if site.startswith("pattern") else (batch, pos, 128)
        assert hf[site].shape == expected_shape, site
        # float32 rounding grows with the stream (|x| up to about 40 after the last block: 2e-5 apart on v11)
        torch.testing.assert_close(lens[site], hf[site], atol=1e-5, rtol=1e-5, msg=lambda m: f"{site} (TL): {m}")
        torch.testing.assert_close(nnsight[site], hf[site], atol=1e-5, rtol=1e-5, msg=lambda m: f"{site} (nnsight): {m}")


def test_sites_are_what_they_say(course_model, input_ids):
    acts = capture(course_model, input_ids, ["resid_pre.1", "attn_out.1", "mlp_out.1", "resid_post.1", "resid_pre.2",
                                             "pattern.1"])
    torch.testing.assert_close(acts["resid_pre.1"] + acts["attn_out.1"] + acts["mlp_out.1"], acts["resid_post.1"])
    assert torch.equal(acts["resid_post.1"], acts["resid_pre.2"])
    pattern = acts["pattern.1"]
    torch.testing.assert_close(pattern.sum(-1), torch.ones(pattern.shape[:-1]))
    assert pattern.triu(diagonal=1).abs().max() == 0  # causal: no query attends to a later key
    hidden = course_model(input_ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(acts["resid_pre.1"], hidden[1])


def test_site_names_map_to_transformer_lens():
    assert site_to_transformer_lens("resid_pre.0") == "blocks.0.hook_resid_pre"
    assert site_to_transformer_lens("attn_out.3") == "blocks.3.hook_attn_out"
    assert site_to_transformer_lens("pattern.2") == "blocks.2.attn.hook_pattern"
    assert site_to_transformer_lens("resid_post.-1", n_layers=4) == "blocks.3.hook_resid_post"


@pytest.mark.parametrize("family", ["gpt_neox", "llama"])
def test_plain_hooks_on_other_architectures(family):
    model = tiny_random_model(family)
    ids = torch.randint(model.config.vocab_size, (2, 5), generator=torch.Generator().manual_seed(0))
    acts = capture(model, ids, valid_sites(2))
    assert_no_hooks(model)
    assert acts["pattern.1"].shape == (2, 4, 5, 5) and acts["mlp_out.0"].shape == (2, 5, 64)
    hidden = model(ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(acts["resid_pre.1"], hidden[1])
    torch.testing.assert_close(acts["resid_post.0"], hidden[1])
    # both families add attention and MLP outputs to the residual stream (GPT-NeoX in parallel)
    torch.testing.assert_close(acts["resid_pre.1"] + acts["attn_out.1"] + acts["mlp_out.1"], acts["resid_post.1"])
    assert head_outputs(model, ids, 0).shape == (2, 5, 4, 16)
    base = loss_with(model, ids)
    assert loss_with(model, ids, [ablate_head(model, 0, 1)]) != base
    assert loss_with(model, ids, [ablate_mlp(model, 1)]) != base
    assert loss_with(model, ids) == base
    assert_no_hooks(model)


# --------------------------------------------------------------------------------------------
# Editing


def test_hooks_edit_inside_the_block_only(course_model, input_ids):
    before = course_model(input_ids).logits
    with hooks(course_model, {"resid_post.3": lambda resid: 0 * resid}):
        edited = course_model(input_ids).logits
    # the final layer norm of a zero vector is its bias: every position predicts the same logits
    torch.testing.assert_close(edited[0, 0], edited[1, 5])
    torch.testing.assert_close(course_model(input_ids).logits, before)
    assert_no_hooks(course_model)
    with hooks(course_model, {"transformer.h.0.mlp": lambda out: None}):  # a module name; None keeps the output
        torch.testing.assert_close(course_model(input_ids).logits, before)
    with pytest.raises(RuntimeError, match="boom"), hooks(course_model, {"resid_pre.0": lambda x: x}):
        raise RuntimeError("boom")
    assert_no_hooks(course_model)


def test_zero_ablating_a_head_agrees_with_transformer_lens(course_model, tl_model, input_ids):
    base = loss_with(course_model, input_ids)
    assert base == pytest.approx(loss_with(tl_model, input_ids), abs=1e-4)
    for layer, head in [(0, 0), (2, 5)]:
        ablated = loss_with(course_model, input_ids, [ablate_head(course_model, layer, head)])
        assert abs(ablated - base) > 1e-4, (layer, head)
        assert ablated == pytest.approx(loss_with(tl_model, input_ids, transformer_lens_ablate_head(tl_model, layer, head)),
                                        abs=1e-4)
    assert loss_with(course_model, input_ids) == base
    assert_no_hooks(course_model)


def test_mean_ablation_uses_the_mean_over_the_given_batch(course_model, tl_model, input_ids):
    layer, head = 1, 2
    z = head_outputs(course_model, input_ids, layer)                              # [batch, pos, head, d_head]
    assert z.shape == (*input_ids.shape, 8, 16)
    mean = z[:, :, head].mean(dim=(0, 1))
    # by hand: set the head's slice of the projection's input to the mean
    def by_hand(module, args):
        x = args[0].clone()
        x[:, :, head * 16:(head + 1) * 16] = mean
        return (x,)
    handle = course_model.transformer.h[layer].attn.c_proj.register_forward_pre_hook(by_hand)
    try:
        expected = loss_with(course_model, input_ids)
    finally:
        handle.remove()
    mean_ablated = loss_with(course_model, input_ids, [ablate_head(course_model, layer, head, "mean", mean_over=input_ids)])
    assert mean_ablated == pytest.approx(expected, abs=1e-6)
    assert mean_ablated != pytest.approx(loss_with(course_model, input_ids, [ablate_head(course_model, layer, head)]), abs=1e-4)
    assert mean_ablated == pytest.approx(
        loss_with(tl_model, input_ids, transformer_lens_ablate_head(tl_model, layer, head, "mean", input_ids)), abs=1e-4)
    # another batch gives another mean
    other = input_ids.flip(-1)[:1]
    assert loss_with(course_model, input_ids, [ablate_head(course_model, layer, head, "mean", other)]) != pytest.approx(
        mean_ablated, abs=1e-6)


def test_ablating_an_mlp_agrees_with_transformer_lens(course_model, tl_model, input_ids):
    base = loss_with(course_model, input_ids)
    for how, mean_over in [("zero", None), ("mean", input_ids)]:
        ablated = loss_with(course_model, input_ids, [ablate_mlp(course_model, 0, how, mean_over)])
        assert ablated > base + 0.01, how
        assert ablated == pytest.approx(
            loss_with(tl_model, input_ids, transformer_lens_ablate_mlp(tl_model, 0, how, mean_over)), abs=1e-4)
    assert_no_hooks(course_model)


@pytest.mark.parametrize("how", ["zero", "mean"])
def test_the_three_tools_ablate_alike(course_model, tl_model, nn_model, input_ids, how):
    """A head (2.4) and an MLP (0), zero- and mean-ablated: the same loss with hooks, TransformerLens and nnsight."""
    mean_over = input_ids.flip(0) if how == "mean" else None
    head = [loss_with(course_model, input_ids, [ablate_head(course_model, 2, 4, how, mean_over)]),
            loss_with(tl_model, input_ids, transformer_lens_ablate_head(tl_model, 2, 4, how, mean_over)),
            nnsight_loss_with_ablation(nn_model, input_ids, 2, 4, how, mean_over)]
    mlp = [loss_with(course_model, input_ids, [ablate_mlp(course_model, 0, how, mean_over)]),
           loss_with(tl_model, input_ids, transformer_lens_ablate_mlp(tl_model, 0, how, mean_over)),
           nnsight_loss_with_ablation(nn_model, input_ids, 0, None, how, mean_over)]
    assert max(head) - min(head) < 1e-4 and max(mlp) - min(mlp) < 1e-4
    assert mlp[0] > loss_with(course_model, input_ids) + 0.01
    with pytest.raises(ValueError, match="head 8 does not exist"):
        nnsight_loss_with_ablation(nn_model, input_ids, 0, 8)
    with pytest.raises(ValueError, match="layer 4 does not exist"):
        nnsight_loss_with_ablation(nn_model, input_ids, 4)


# --------------------------------------------------------------------------------------------
# Bad input


def test_unknown_site_suggests_near_names(course_model, input_ids):
    with pytest.raises(ValueError, match=r"unknown site 'resid_mid.1'.*Did you mean 'resid_pre.1'.*this model has 4 layers"):
        capture(course_model, input_ids, ["resid_mid.1"])
    with pytest.raises(ValueError, match=r"unknown site 'mlp_out'.*Did you mean 'mlp_out\.\d'"):
        capture(course_model, input_ids, ["mlp_out"])
    with pytest.raises(ValueError, match=r"neither a site nor a module.*Did you mean 'transformer.h.0.mlp'"):
        with hooks(course_model, {"transformer.h.0.mpl": lambda x: x}):
            pass
    with pytest.raises(ValueError, match="can be captured but not edited"):
        with hooks(course_model, {"pattern.0": lambda x: x}):
            pass
    assert_no_hooks(course_model)


def test_layer_head_and_how_out_of_range(course_model, tl_model, input_ids):
    with pytest.raises(ValueError, match=r"site 'resid_post.4': layer 4 is out of range.*layer 0 to 3"):
        capture(course_model, input_ids, ["resid_pre.0", "resid_post.4"])
    assert_no_hooks(course_model)  # the hook registered before the bad site is removed
    with pytest.raises(ValueError, match="layer 4 is out of range"):
        capture_transformer_lens(tl_model, input_ids, ["attn_out.4"])
    with pytest.raises(ValueError, match="layer 9 does not exist: this model has 4 layers"):
        with ablate_head(course_model, 9, 0):
            pass
    with pytest.raises(ValueError, match="head 8 does not exist: this model has 8 heads"):
        with ablate_head(course_model, 0, 8):
            pass
    with pytest.raises(ValueError, match="unknown ablation how='foo': use 'zero'.*or 'mean'"):
        with ablate_mlp(course_model, 0, how="foo"):
            pass
    with pytest.raises(ValueError, match="how='mean' needs mean_over"):
        transformer_lens_ablate_head(tl_model, 0, 0, how="mean")


# --------------------------------------------------------------------------------------------
# Exercise 3.1 and its checker


def test_reference_capture_matches_capture(course_model, input_ids):
    torch.testing.assert_close(capture_residual_stream(course_model, input_ids, 2),
                               capture(course_model, input_ids, ["resid_post.2"])["resid_post.2"])
    assert_no_hooks(course_model)


def test_checker_accepts_the_reference(course_model):
    assert_accepts(check_capture_residual_stream(capture_residual_stream, course_model))
    assert_no_hooks(course_model)


def _hooked(model, input_ids, layer, *, take, keep_hook=False):
    captured = []
    block = architecture.blocks(model)[layer]
    if take == "input":
        handle = block.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    else:
        handle = block.register_forward_hook(lambda module, args, output: captured.append(output))
    with torch.no_grad():
        model(input_ids)
    if not keep_hook:
        handle.remove()
    return captured[0]


def forgets_to_remove(model, input_ids, layer):
    return _hooked(model, input_ids, layer, take="output", keep_hook=True)


def captures_the_input(model, input_ids, layer):
    return _hooked(model, input_ids, layer, take="input")


def returns_a_tuple(model, input_ids, layer):
    return (_hooked(model, input_ids, layer, take="output"),)


def off_by_one(model, input_ids, layer):
    return _hooked(model, input_ids, max(layer - 1, 0) if layer else 1, take="output")


def removes_without_finally(model, input_ids, layer):
    output = _hooked(model, input_ids, layer, take="output")  # right, until a forward pass raises
    return output[0] if isinstance(output, tuple) else output


@pytest.mark.parametrize("wrong, match", [
    (forgets_to_remove, r"left a hook on its argument 'model': remove every hook it adds, also when the forward"),
    (removes_without_finally, r"input 'a token id past the vocabulary.*when it raised \w*Error.*left a hook on its "
                              r"argument 'model'"),
    (captures_the_input, "input 'your model, layer 0, batch of 2': .*differ"),
    (returns_a_tuple, "input 'your model, layer 0, batch of 2': expected a tensor.*got a tuple"),
    (off_by_one, "input 'your model, layer 0, batch of 2': .*differ"),
])
def test_checker_rejects_wrong_answers(course_model, wrong, match):
    assert_rejects(check_capture_residual_stream(wrong, course_model), match)
    assert_no_hooks(course_model)  # the checker removes what the learner left


def hidden_states_one_up(model, input_ids, layer):
    """Right for every block but the last: hidden_states[layer + 1] of the last one is after ln_f."""
    with torch.no_grad():
        return model(input_ids, output_hidden_states=True).hidden_states[layer + 1]


def test_the_hidden_states_shortcut_fails_at_the_last_layer_and_is_told_why(course_model):
    assert_rejects(check_capture_residual_stream(hidden_states_one_up, course_model),
                   r"input 'your model, last layer \(3\), batch of 1'.*its last entry is after the final norm ln_f")
