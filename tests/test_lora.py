"""Tests for utils/lora.py: LoRA from scratch on nn.Linear and GPT-2's transposed Conv1D, its equality
with peft (logits, merged weights, saved adapters), task-vector merging, and the chapter's checkers."""

from __future__ import annotations

import copy
import json
import math
import warnings

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from utils.checkers.lora import check_lora_forward, check_merged_weight, check_slerp
from utils.checks import assert_accepts, assert_rejects
from utils.lora import (
    ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, LoRALinear, add_lora, apply_task_vector, count_parameters,
    linear_weight, load_adapter, load_lora_state_dict, lora_forward, lora_modules, lora_parameter_count,
    lora_state_dict, merge_lora, merge_task_vectors_linear, merge_task_vectors_slerp, merged_weight, remove_lora,
    save_adapter, slerp, task_vector, task_vector_cosine, unmerge_lora,
)
from utils.models import tiny_random_model

TARGETS = ["c_attn", "c_proj", "c_fc"]
#: Merged vs unmerged logits of the whole model: the sums are rounded in another order through 4 layers
#: (measured up to 1.6e-5 on logits of size ~10, i.e. 2e-6 relative). Single layers are compared at 1e-5.
MERGED_LOGITS_ATOL = 1e-4


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_layer(kind: str, d_in: int, d_out: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layer = nn.Linear(d_in, d_out) if kind == "linear" else Conv1D(d_out, d_in)
    with torch.no_grad():
        layer.bias.normal_()  # Conv1D starts with a zero bias: make it matter
    return layer


def randomise_lora_B(model: nn.Module, seed: int = 0, std: float = 0.05) -> None:
    """Give every LoRA B (ours: ``lora_B``; peft's: ``lora_B.default.weight``) random values: with B = 0
    every LoRA model computes the base model and nothing would be tested."""
    generator = seeded(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(std * torch.randn(parameter.shape, generator=generator))


def random_ids(model, batch: int = 2, seq: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(model.config.vocab_size, (batch, seq), generator=seeded(seed))


@torch.no_grad()
def logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=input_ids).logits


@pytest.fixture
def base(course_model):
    """A fresh copy of the course model (tests here wrap, freeze and merge into it)."""
    return copy.deepcopy(course_model)


@pytest.fixture
def lora_model(course_model):
    """A copy of the course model with LoRA (r=8, alpha=16) on TARGETS and random B."""
    model = copy.deepcopy(course_model)
    add_lora(model, TARGETS, r=8, alpha=16)
    randomise_lora_B(model)
    return model


def peft_lora(model, target_modules, r=8, alpha=16):
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=list(target_modules), lora_dropout=0.0,
                             init_lora_weights=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "fan_in_fan_out is set to False but the target module is Conv1D"
        return peft.get_peft_model(model, config)


# The LoRA layer -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_lora_linear_has_the_shapes_and_init_of_peft(kind):
    layer = make_layer(kind, 16, 48)
    lora = LoRALinear(layer, r=4, alpha=8, generator=seeded(3))
    assert (lora.in_features, lora.out_features) == (16, 48)
    assert lora.lora_A.shape == (4, 16) and lora.lora_B.shape == (48, 4)
    assert lora.scaling == 2.0
    assert torch.equal(lora.lora_B, torch.zeros(48, 4))
    expected_A = torch.empty(4, 16)
    nn.init.kaiming_uniform_(expected_A, a=math.sqrt(5), generator=seeded(3))
    assert torch.equal(lora.lora_A, expected_A)
    assert lora.lora_A.abs().max() <= 1 / math.sqrt(16)  # kaiming_uniform_(a=sqrt(5)) is U(-1/sqrt(d_in), ...)
    assert [name for name, p in lora.named_parameters() if p.requires_grad] == ["lora_A", "lora_B"]


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_lora_linear_starts_equal_to_its_base(kind):
    layer = make_layer(kind, 16, 48)
    x = torch.randn(2, 5, 16, generator=seeded(1))
    expected = layer(x)
    lora = LoRALinear(layer, r=4)
    assert torch.equal(lora(x), expected)


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_lora_linear_forward_equals_the_hand_computation(kind):
    layer = make_layer(kind, 16, 48)
    lora = LoRALinear(layer, r=4, alpha=8)
    randomise_lora_B(lora)
    x = torch.randn(2, 5, 16, generator=seeded(1))
    W, b = layer.weight.detach(), layer.bias.detach()
    base_output = x @ W + b if kind == "conv1d" else x @ W.T + b  # Conv1D stores W as [d_in, d_out]
    expected = base_output + 2.0 * (x @ lora.lora_A.detach().T @ lora.lora_B.detach().T)
    with torch.no_grad():
        torch.testing.assert_close(lora(x), expected, atol=1e-5, rtol=1e-5)
        functional = lora_forward(layer, x, lora.lora_A, lora.lora_B, 2.0)
        torch.testing.assert_close(functional, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(expected, base_output, atol=1e-3)


@pytest.mark.parametrize(("kind", "d_out"), [("linear", 48), ("conv1d", 48), ("conv1d", 16)])
def test_merge_gives_the_same_output_and_unmerge_restores_the_weight(kind, d_out):
    layer = make_layer(kind, 16, d_out)
    original = layer.weight.detach().clone()
    lora = LoRALinear(layer, r=4, alpha=8)
    randomise_lora_B(lora)
    x = torch.randn(3, 16, generator=seeded(2))
    with torch.no_grad():
        unmerged = lora(x)
        lora.merge()
        assert lora.merged and not torch.allclose(layer.weight, original)
        torch.testing.assert_close(layer.weight, original + (lora.delta_weight().T if kind == "conv1d" else
                                                             lora.delta_weight()), atol=1e-6, rtol=0)
        torch.testing.assert_close(lora(x), unmerged, atol=1e-5, rtol=0)
        lora.merge()  # a second merge does nothing
        torch.testing.assert_close(lora(x), unmerged, atol=1e-5, rtol=0)
        lora.unmerge()
        assert not lora.merged
        torch.testing.assert_close(layer.weight, original, atol=1e-6, rtol=0)
        torch.testing.assert_close(lora(x), unmerged, atol=1e-5, rtol=0)


def test_delta_weight_is_in_linear_layout_for_conv1d():
    lora = LoRALinear(make_layer("conv1d", 16, 48), r=4, alpha=4)
    randomise_lora_B(lora)
    delta = lora.delta_weight()
    assert delta.shape == (48, 16)
    torch.testing.assert_close(delta, lora.lora_B @ lora.lora_A)
    assert linear_weight(lora.base_layer).shape == (48, 16)


def test_dropout_applies_to_the_lora_path_only():
    layer = make_layer("linear", 16, 8)
    lora = LoRALinear(layer, r=4, dropout=0.5)
    x = torch.randn(4, 16, generator=seeded(0))
    lora.train()
    assert torch.equal(lora(x), layer(x))  # B = 0: dropout of the LoRA path changes nothing
    randomise_lora_B(lora)
    torch.manual_seed(0)
    first = lora(x)
    assert not torch.allclose(first, lora(x)), "dropout in training mode must be random"
    lora.eval()
    assert torch.equal(lora(x), lora(x))


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(r=0), r"r must be a positive integer.*got 0"),
    (dict(r=-2), r"r must be a positive integer.*got -2"),
    (dict(r=2.5), r"r must be a positive integer.*got 2.5"),
    (dict(alpha=0), r"alpha must be a positive number.*got 0"),
    (dict(dropout=1.0), r"dropout must be a probability in \[0, 1\).*got 1.0"),
    (dict(dropout=-0.1), r"dropout must be a probability"),
])
def test_lora_linear_rejects_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LoRALinear(make_layer("linear", 4, 4), **kwargs)


def test_lora_linear_rejects_a_module_that_is_not_linear():
    with pytest.raises(ValueError, match=r"is a Embedding: LoRA here wraps torch.nn.Linear or transformers' Conv1D"):
        LoRALinear(nn.Embedding(10, 4))


def test_lora_linear_rejects_an_input_of_the_wrong_width():
    with pytest.raises(ValueError, match=r"expects inputs \[\.\.\., 16\].*got shape \(2, 48\)"):
        LoRALinear(make_layer("conv1d", 16, 48))(torch.zeros(2, 48))


# Adding LoRA to the course model --------------------------------------------------------------

def test_add_lora_on_the_course_model(course_model, base):
    names = add_lora(base, TARGETS, r=8, alpha=16)
    assert len(names) == 16 and names[:4] == ["transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj",
                                              "transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj"]
    assert list(lora_modules(base)) == names
    expected = sum(8 * (m.in_features + m.out_features) for m in lora_modules(base).values())
    trainable, total = count_parameters(base)
    print(f"\nr=8 on {TARGETS}: {trainable:,} trainable of {total:,}")
    assert trainable == expected == 65_536
    assert total == sum(p.numel() for p in course_model.parameters()) + 65_536
    assert all(("lora_A" in n or "lora_B" in n) == p.requires_grad for n, p in base.named_parameters())
    input_ids = random_ids(base)
    assert torch.equal(logits(base, input_ids), logits(course_model, input_ids))


@pytest.mark.parametrize(("targets", "trainable"), [
    (["c_attn"], 16_384),                    # 4 layers x 8 (128 + 384)
    (["attn.c_attn", "attn.c_proj"], 24_576),  # + 4 x 8 (128 + 128); "attn.c_proj" leaves mlp.c_proj alone
    (["c_fc", "c_proj"], 49_152),            # c_fc 8 (128 + 512), attn.c_proj 8 (256), mlp.c_proj 8 (640)
])
def test_trainable_counts_for_other_targets(base, targets, trainable):
    assert lora_parameter_count(base, targets, r=8) == trainable          # predicted from the shapes alone
    add_lora(base, targets, r=8)
    assert count_parameters(base)[0] == trainable


@pytest.mark.parametrize("family, targets", [("llama", ["q_proj", "k_proj", "v_proj", "o_proj"]),
                                             ("gpt_neox", ["query_key_value", "dense_4h_to_h"])])
def test_predicted_counts_equal_the_counted_ones_on_linear_architectures(family, targets):
    model = tiny_random_model(family)
    predicted = lora_parameter_count(model, targets, r=3)
    add_lora(model, targets, r=3)
    assert predicted == count_parameters(model)[0] > 0


def test_add_lora_is_seeded(course_model):
    first, again, other = (copy.deepcopy(course_model) for _ in range(3))
    add_lora(first, ["c_attn"], seed=0)
    add_lora(again, ["c_attn"], seed=0)
    add_lora(other, ["c_attn"], seed=1)
    A = [lora_modules(model)["transformer.h.2.attn.c_attn"].lora_A for model in (first, again, other)]
    assert torch.equal(A[0], A[1]) and not torch.equal(A[0], A[2])
    assert not torch.equal(A[0], lora_modules(first)["transformer.h.1.attn.c_attn"].lora_A)


def test_unknown_target_lists_the_available_layers(base):
    flags = [p.requires_grad for p in base.parameters()]
    with pytest.raises(ValueError, match=r"'q_proj' matches no nn.Linear or Conv1D.*"
                                         r"end with: c_attn, c_fc, c_proj, lm_head"):
        add_lora(base, ["c_attn", "q_proj"])
    assert not lora_modules(base) and [p.requires_grad for p in base.parameters()] == flags, "nothing may change"
    with pytest.raises(ValueError, match=r"'transformer.h.0.attn' is a GPT2Attention, not a linear layer"):
        add_lora(base, ["attn"])


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(r=0), r"r must be a positive integer"),
    (dict(r=-1), r"r must be a positive integer"),
    (dict(alpha=-1), r"alpha must be a positive number"),
    (dict(target_modules=[]), r"target_modules must be a non-empty list"),
])
def test_add_lora_rejects_bad_settings(base, kwargs, message):
    with pytest.raises(ValueError, match=message):
        add_lora(base, **{"target_modules": TARGETS, **kwargs})
    assert not lora_modules(base)


def test_add_lora_twice_is_rejected(lora_model):
    with pytest.raises(ValueError, match=r"already has LoRA layers.*remove_lora\(model\)"):
        add_lora(lora_model, ["c_attn"])


def test_functions_that_need_lora_say_so(base):
    with pytest.raises(ValueError, match=r"has no LoRA layers: call add_lora"):
        merge_lora(base)
    with pytest.raises(ValueError, match=r"has no LoRA layers"):
        task_vector(base)


def test_merge_and_remove(course_model, lora_model):
    input_ids = random_ids(lora_model)
    expected = logits(lora_model, input_ids)
    assert merge_lora(lora_model) == list(lora_modules(lora_model))
    torch.testing.assert_close(logits(lora_model, input_ids), expected, atol=MERGED_LOGITS_ATOL, rtol=0)
    unmerge_lora(lora_model)
    torch.testing.assert_close(logits(lora_model, input_ids), expected, atol=MERGED_LOGITS_ATOL, rtol=0)

    unloaded = copy.deepcopy(lora_model)
    remove_lora(unloaded, merge=False)
    assert not lora_modules(unloaded) and isinstance(unloaded.transformer.h[0].attn.c_attn, Conv1D)
    for (name, mine), theirs in zip(unloaded.state_dict().items(), course_model.state_dict().values()):
        torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=0, msg=name)

    remove_lora(lora_model, merge=True)
    assert not lora_modules(lora_model) and isinstance(lora_model.transformer.h[0].mlp.c_fc, Conv1D)
    torch.testing.assert_close(logits(lora_model, input_ids), expected, atol=MERGED_LOGITS_ATOL, rtol=0)


def test_merging_into_a_tied_weight_is_refused(base):
    add_lora(base, ["lm_head"], r=2)
    randomise_lora_B(base)
    with pytest.raises(ValueError, match=r"lm_head's weight is tied to transformer.wte.weight"):
        merge_lora(base)
    assert not lora_modules(base)["lm_head"].merged


# Equality with peft ---------------------------------------------------------------------------

def test_peft_logits_and_merged_weights_equal_ours(course_model, lora_model):
    peft_model = peft_lora(copy.deepcopy(course_model), TARGETS)
    from peft import get_peft_model_state_dict

    randomise_lora_B(peft_model, seed=1)
    ours = copy.deepcopy(course_model)
    add_lora(ours, TARGETS)
    load_lora_state_dict(ours, get_peft_model_state_dict(peft_model))
    peft_parameters = list(peft_model.parameters())
    assert count_parameters(ours) == (sum(p.numel() for p in peft_parameters if p.requires_grad),
                                      sum(p.numel() for p in peft_parameters))
    input_ids = random_ids(ours)
    theirs_logits, ours_logits = logits(peft_model, input_ids), logits(ours, input_ids)
    difference = (theirs_logits - ours_logits).abs().max().item()
    print(f"\npeft vs ours (course model, {TARGETS}): max abs logit difference {difference:.2e}")
    assert difference <= 1e-5
    assert (ours_logits - logits(course_model, input_ids)).abs().max() > 0.1, "B must change the logits"

    merged = peft_model.merge_and_unload()
    remove_lora(ours, merge=True)
    theirs_state, ours_state = merged.state_dict(), ours.state_dict()
    assert theirs_state.keys() == ours_state.keys()
    weight_difference = max((theirs_state[k] - ours_state[k]).abs().max().item() for k in ours_state)
    print(f"peft merge_and_unload vs remove_lora(merge=True): max abs weight difference {weight_difference:.2e}")
    assert weight_difference <= 1e-6


def test_our_adapter_loads_in_peft_and_peft_adapter_loads_in_ours(course_model, lora_model, tmp_path):
    from peft import PeftModel

    save_adapter(lora_model, tmp_path / "ours")
    config = json.loads((tmp_path / "ours" / ADAPTER_CONFIG_FILE).read_text())
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (8, 16, 0.0)
    assert config["target_modules"] == ["c_attn", "c_fc", "c_proj"] and config["fan_in_fan_out"] is True
    input_ids = random_ids(lora_model, seed=3)
    expected = logits(lora_model, input_ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        in_peft = PeftModel.from_pretrained(copy.deepcopy(course_model), tmp_path / "ours")
    difference = (logits(in_peft, input_ids) - expected).abs().max().item()
    print(f"\nour adapter loaded by peft: max abs logit difference {difference:.2e}")
    assert difference <= 1e-5

    randomise_lora_B(in_peft, seed=7)
    in_peft.save_pretrained(tmp_path / "peft")
    ours = copy.deepcopy(course_model)
    assert load_adapter(ours, tmp_path / "peft") == list(lora_modules(lora_model))
    torch.testing.assert_close(logits(ours, input_ids), logits(in_peft, input_ids), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("family", "targets"), [("llama", ["q_proj", "v_proj"]), ("gpt_neox", ["query_key_value"])])
def test_peft_equals_ours_on_linear_architectures(family, targets):
    from peft import get_peft_model_state_dict

    peft_model = peft_lora(tiny_random_model(family), targets, r=4, alpha=8)
    randomise_lora_B(peft_model, seed=2, std=0.2)
    ours = tiny_random_model(family)
    names = add_lora(ours, targets, r=4, alpha=8)
    assert len(names) == 2 * len(targets)
    load_lora_state_dict(ours, get_peft_model_state_dict(peft_model))
    input_ids = random_ids(ours, seq=8)
    difference = (logits(peft_model, input_ids) - logits(ours, input_ids)).abs().max().item()
    print(f"\npeft vs ours ({family}, {targets}): max abs logit difference {difference:.2e}")
    assert difference <= 1e-5
    assert (logits(ours, input_ids) - logits(tiny_random_model(family), input_ids)).abs().max() > 1e-3

    merged = peft_model.merge_and_unload()
    remove_lora(ours, merge=True)
    for name, weight in ours.state_dict().items():
        torch.testing.assert_close(weight, merged.state_dict()[name], atol=1e-6, rtol=0, msg=name)


# Saving and loading ---------------------------------------------------------------------------

def test_state_dict_has_peft_keys_and_only_the_adapter(lora_model):
    state = lora_state_dict(lora_model)
    assert len(state) == 32
    assert state["base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"].shape == (8, 128)
    assert state["base_model.model.transformer.h.3.mlp.c_proj.lora_B.weight"].shape == (128, 8)


def test_save_load_round_trip_gives_identical_logits(course_model, lora_model, tmp_path):
    save_adapter(lora_model, tmp_path)
    assert (tmp_path / ADAPTER_WEIGHTS_FILE).is_file()
    again = copy.deepcopy(course_model)
    load_adapter(again, tmp_path, seed=5)  # a different init: every A and B must come from the file
    input_ids = random_ids(again)
    assert torch.equal(logits(again, input_ids), logits(lora_model, input_ids))


def test_save_records_full_names_when_suffixes_would_match_more(base, tmp_path):
    add_lora(base, ["attn.c_proj"], r=2)
    save_adapter(base, tmp_path)
    config = json.loads((tmp_path / ADAPTER_CONFIG_FILE).read_text())
    assert config["target_modules"] == [f"transformer.h.{i}.attn.c_proj" for i in range(4)]


def test_adapter_of_another_model_size_is_rejected_naming_both_shapes(lora_model, tmp_path):
    save_adapter(lora_model, tmp_path)
    small = tiny_random_model("gpt2")  # d_model 64
    flags = [p.requires_grad for p in small.parameters()]
    with pytest.raises(ValueError, match=r"transformer.h.0.attn.c_attn: the adapter's lora_A has shape \(8, 128\) "
                                         r"but this model's needs \(8, 64\)"):
        load_adapter(small, tmp_path)
    assert not lora_modules(small) and [p.requires_grad for p in small.parameters()] == flags, "left as it was"


def test_load_lora_state_dict_rejects_missing_keys(lora_model):
    state = lora_state_dict(lora_model)
    del state["base_model.model.transformer.h.1.mlp.c_fc.lora_B.weight"]
    with pytest.raises(ValueError, match=r"missing \['base_model.model.transformer.h.1.mlp.c_fc.lora_B.weight'\]"):
        load_lora_state_dict(lora_model, state)


# Task vectors and merging ---------------------------------------------------------------------

def test_task_vector_applied_to_the_base_equals_the_lora_model(course_model, lora_model):
    vector = task_vector(lora_model)
    assert vector["transformer.h.0.attn.c_attn"].shape == (384, 128)  # [d_out, d_in] although Conv1D is [128, 384]
    before = course_model.transformer.h[0].attn.c_attn.weight.clone()
    edited = apply_task_vector(course_model, vector)
    assert torch.equal(course_model.transformer.h[0].attn.c_attn.weight, before), "the base model must not change"
    input_ids = random_ids(course_model)
    torch.testing.assert_close(logits(edited, input_ids), logits(lora_model, input_ids),
                               atol=MERGED_LOGITS_ATOL, rtol=0)
    twice = apply_task_vector(course_model, vector, scale=2.0)
    torch.testing.assert_close(twice.transformer.h[0].attn.c_attn.weight - before,
                               2 * vector["transformer.h.0.attn.c_attn"].T, atol=1e-6, rtol=0)


def test_task_vector_into_a_model_of_another_shape_names_both_shapes(lora_model):
    with pytest.raises(ValueError, match=r"transformer.h.0.attn.c_attn: the task vector's ΔW has shape \(384, 128\) "
                                         r"but this Conv1D \(64 -> 192\) needs \[d_out, d_in\] = \(192, 64\)"):
        apply_task_vector(tiny_random_model("gpt2"), task_vector(lora_model))
    with pytest.raises(ValueError, match=r"does not have.*another architecture"):
        apply_task_vector(tiny_random_model("llama"), task_vector(lora_model))
    with pytest.raises(ValueError, match=r"has LoRA layers.*remove_lora"):
        apply_task_vector(lora_model, task_vector(lora_model))


def two_task_vectors(course_model) -> tuple[dict, dict]:
    vectors = []
    for seed in (0, 1):
        model = copy.deepcopy(course_model)
        add_lora(model, ["c_attn"], r=4, seed=seed)
        randomise_lora_B(model, seed=seed)
        vectors.append(task_vector(model))
    return vectors[0], vectors[1]


def test_linear_merge_of_task_vectors(course_model):
    first, second = two_task_vectors(course_model)
    only_first = merge_task_vectors_linear([first, second], [1.0, 0.0])
    assert only_first.keys() == first.keys()
    for name in first:
        torch.testing.assert_close(only_first[name], first[name], atol=0, rtol=0)
    average = merge_task_vectors_linear([first, second], [0.5, 0.5])
    torch.testing.assert_close(average["transformer.h.1.attn.c_attn"],
                               (first["transformer.h.1.attn.c_attn"] + second["transformer.h.1.attn.c_attn"]) / 2)
    with pytest.raises(ValueError, match=r"one weight per task vector"):
        merge_task_vectors_linear([first, second], [1.0])
    smaller = {name: delta[:, :64] for name, delta in second.items()}
    with pytest.raises(ValueError, match=r"transformer.h.0.attn.c_attn: task vector 0 has shape \(384, 128\) "
                                         r"but task vector 1 has \(384, 64\)"):
        merge_task_vectors_linear([first, smaller], [0.5, 0.5])
    with pytest.raises(ValueError, match=r"cover different modules"):
        one_module = {"transformer.h.0.attn.c_attn": first["transformer.h.0.attn.c_attn"]}
        merge_task_vectors_linear([first, one_module], [1, 1])


def test_slerp_merge_of_task_vectors_works_module_by_module(course_model):
    first, second = two_task_vectors(course_model)
    merged = merge_task_vectors_slerp(first, second, 0.5)
    name = "transformer.h.2.attn.c_attn"
    torch.testing.assert_close(merged[name], slerp(first[name], second[name], 0.5))
    assert merged[name].shape == (384, 128)
    mean_norm = (first[name].norm() + second[name].norm()) / 2
    torch.testing.assert_close(merged[name].norm(), mean_norm, atol=1e-4, rtol=1e-5)
    assert (first[name] + second[name]).norm() / 2 < 0.8 * mean_norm, "random task vectors are nearly orthogonal"


def test_task_vector_cosine_is_one_cosine_over_every_module():
    a = {"x": torch.tensor([[1.0, 0.0]]), "y": torch.tensor([[0.0, 10.0]])}
    b = {"x": torch.tensor([[1.0, 0.0]]), "y": torch.tensor([[0.0, -10.0]])}
    assert math.isclose(task_vector_cosine(a, b), (1 - 100) / 101, rel_tol=1e-6)   # the large module dominates
    assert math.isclose(task_vector_cosine(a, a), 1.0, rel_tol=1e-6)
    with pytest.raises(ValueError, match="cover different modules"):
        task_vector_cosine(a, {"x": a["x"]})


def test_slerp_properties():
    generator = seeded(0)
    a, b = torch.randn(5, 7, generator=generator), 2 * torch.randn(5, 7, generator=generator)
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b)
    x, y = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    middle = slerp(x, y, 0.5)
    torch.testing.assert_close(middle.norm(), torch.tensor(1.0))
    torch.testing.assert_close(middle, torch.tensor([1.0, 1.0]) / math.sqrt(2))  # 45 degrees from both
    assert torch.lerp(x, y, 0.5).norm() < 0.71  # what linear interpolation does instead
    # The angle moves uniformly and the norm linearly.
    for t in (0.2, 0.7):
        out = slerp(a, b, t).flatten()
        angle = lambda u, v: torch.arccos(u @ v / (u.norm() * v.norm()))  # noqa: E731
        torch.testing.assert_close(angle(a.flatten(), out), t * angle(a.flatten(), b.flatten()), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out.norm(), (1 - t) * a.norm() + t * b.norm())
    # Nearly parallel vectors, and a zero vector, fall back to linear interpolation.
    torch.testing.assert_close(slerp(a, 3 * a + 1e-4, 0.3), torch.lerp(a, 3 * a + 1e-4, 0.3))
    torch.testing.assert_close(slerp(torch.zeros(3), torch.ones(3), 0.25), torch.full((3,), 0.25))


def test_slerp_rejects_bad_input():
    with pytest.raises(ValueError, match=r"same shape, got \(3,\) and \(4,\)"):
        slerp(torch.ones(3), torch.ones(4), 0.5)
    with pytest.raises(ValueError, match=r"t must be in \[0, 1\].*got 1.5"):
        slerp(torch.ones(3), torch.ones(3), 1.5)


# Checkers -------------------------------------------------------------------------------------

def test_checkers_accept_the_references():
    assert_accepts(check_lora_forward(lora_forward))
    assert_accepts(check_merged_weight(merged_weight))
    assert_accepts(check_slerp(slerp))


def test_checkers_accept_other_correct_answers():
    def forward_with_einsum(layer, x, lora_A, lora_B, scaling):
        return layer(x) + scaling * torch.einsum("...i,ri,or->...o", x, lora_A, lora_B)

    def merges_in_place(layer, lora_A, lora_B, scaling):
        with torch.no_grad():
            layer.weight += (lora_B @ lora_A * scaling).T if isinstance(layer, Conv1D) else lora_B @ lora_A * scaling
        return layer.weight

    def slerp_in_float64(a, b, t):
        a64, b64 = a.double().flatten(), b.double().flatten()
        cos = a64 @ b64 / (a64.norm() * b64.norm())
        if cos.abs() > 0.9995:
            return (1 - t) * a + t * b
        theta = torch.arccos(cos)
        a_unit, b_unit = a64 / a64.norm(), b64 / b64.norm()
        unit = (torch.sin((1 - t) * theta) * a_unit + torch.sin(t * theta) * b_unit) / torch.sin(theta)
        return (((1 - t) * a64.norm() + t * b64.norm()) * unit).reshape(a.shape).to(a.dtype)

    assert_accepts(check_lora_forward(forward_with_einsum))
    assert_accepts(check_merged_weight(merges_in_place))
    assert_accepts(check_slerp(slerp_in_float64))


# Wrong answers to Exercise 2.2 (lora_forward)

def forward_ignores_the_conv1d_layout(layer, x, lora_A, lora_B, scaling):
    return x @ layer.weight.T + layer.bias + x @ lora_A.T @ lora_B.T * scaling


def forward_forgets_scaling(layer, x, lora_A, lora_B, scaling):
    return layer(x) + x @ lora_A.T @ lora_B.T


def forward_swaps_A_and_B(layer, x, lora_A, lora_B, scaling):
    return layer(x) + x @ lora_B @ lora_A * scaling


def forward_uses_the_untransposed_delta(layer, x, lora_A, lora_B, scaling):
    return layer(x) + x @ (lora_B @ lora_A) * scaling


def forward_forgets_the_base_layer(layer, x, lora_A, lora_B, scaling):
    return x @ lora_A.T @ lora_B.T * scaling


@pytest.mark.parametrize(("wrong", "message"), [
    (forward_ignores_the_conv1d_layout, r"input 'square Conv1D 16 -> 16.*first difference"),
    (forward_forgets_scaling, r"input 'nn.Linear 16 -> 24.*first difference"),
    (forward_swaps_A_and_B, r"input 'nn.Linear 16 -> 24.*raised RuntimeError"),
    (forward_uses_the_untransposed_delta, r"input 'nn.Linear 16 -> 24.*raised RuntimeError"),
    (forward_forgets_the_base_layer, r"input 'nn.Linear 16 -> 24.*first difference"),
])
def test_lora_forward_checker_rejects(wrong, message):
    result = check_lora_forward(wrong)
    assert_rejects(result, match=message)
    assert "Hint:" in result.message


def test_lora_forward_checker_catches_a_bug_that_only_square_layers_let_run():
    def uses_the_untransposed_delta_where_the_shapes_allow(layer, x, lora_A, lora_B, scaling):
        """x @ (B A) instead of x @ (B A).T: it runs only when d_in == d_out, so only a square case can catch it."""
        if lora_B.shape[0] != lora_A.shape[1]:
            return lora_forward(layer, x, lora_A, lora_B, scaling)
        return layer(x) + x @ (lora_B @ lora_A) * scaling

    assert_rejects(check_lora_forward(uses_the_untransposed_delta_where_the_shapes_allow),
                   match=r"input 'square Conv1D.*first difference")


# Wrong answers to Exercise 2.3 (merged_weight)

def merge_forgets_the_conv1d_transpose(layer, lora_A, lora_B, scaling):
    return layer.weight + lora_B @ lora_A * scaling


def merge_transposes_when_the_shapes_differ(layer, lora_A, lora_B, scaling):
    delta = lora_B @ lora_A * scaling
    return layer.weight + (delta if delta.shape == layer.weight.shape else delta.T)


def merge_transposes_when_the_transposed_shape_fits(layer, lora_A, lora_B, scaling):
    delta = lora_B @ lora_A * scaling
    return layer.weight + (delta.T if delta.T.shape == layer.weight.shape else delta)


def merge_reshapes_instead_of_transposing(layer, lora_A, lora_B, scaling):
    return layer.weight + (lora_B @ lora_A * scaling).reshape(layer.weight.shape)


def merge_always_transposes(layer, lora_A, lora_B, scaling):
    return layer.weight + (lora_B @ lora_A * scaling).T


def merge_forgets_scaling(layer, lora_A, lora_B, scaling):
    return merged_weight(layer, lora_A, lora_B, 1.0)


def merge_multiplies_A_by_B(layer, lora_A, lora_B, scaling):
    return layer.weight + lora_A.T @ lora_B.T * scaling


def merge_adds_the_bias(layer, lora_A, lora_B, scaling):
    return merged_weight(layer, lora_A, lora_B, scaling) + layer.bias


def merge_returns_only_the_delta(layer, lora_A, lora_B, scaling):
    return merged_weight(layer, lora_A, lora_B, scaling) - layer.weight


@pytest.mark.parametrize(("wrong", "message"), [
    (merge_forgets_the_conv1d_transpose, r"input 'Conv1D 16 -> 48.*raised RuntimeError"),
    (merge_transposes_when_the_shapes_differ, r"input 'square Conv1D 16 -> 16.*first difference"),
    (merge_transposes_when_the_transposed_shape_fits, r"input 'square nn.Linear 12 -> 12.*first difference"),
    (merge_reshapes_instead_of_transposing, r"input 'Conv1D 16 -> 48.*first difference"),
    (merge_always_transposes, r"input 'nn.Linear 16 -> 24.*raised RuntimeError"),
    (merge_forgets_scaling, r"input 'nn.Linear 16 -> 24.*first difference"),
    (merge_multiplies_A_by_B, r"input 'nn.Linear 16 -> 24.*raised RuntimeError"),
    (merge_adds_the_bias, r"input 'nn.Linear 16 -> 24.*raised RuntimeError"),
    (merge_returns_only_the_delta, r"input 'nn.Linear 16 -> 24.*first difference"),
])
def test_merged_weight_checker_rejects(wrong, message):
    result = check_merged_weight(wrong)
    assert_rejects(result, match=message)
    assert "isinstance(layer, Conv1D)" in result.message


def test_checkers_do_not_let_an_in_place_change_reach_the_reference():
    def merges_in_place_forgetting_the_transpose(layer, lora_A, lora_B, scaling):
        with torch.no_grad():
            layer.weight += lora_B @ lora_A * scaling  # square layers only; corrupts the layer if not copied
        return layer.weight

    assert_rejects(check_merged_weight(merges_in_place_forgetting_the_transpose), match=r"input 'Conv1D 16 -> 48")


# Wrong answers to Exercise 2.10 (slerp)

def slerp_is_linear(a, b, t):
    return (1 - t) * a + t * b


def slerp_does_not_normalise(a, b, t):
    theta = torch.arccos((a.flatten() @ b.flatten()).clamp(max=1.0))  # the dot product of raw vectors is no cosine
    return (torch.sin((1 - t) * theta) * a + torch.sin(t * theta) * b) / torch.sin(theta)


def slerp_swaps_t(a, b, t):
    return slerp(a, b, 1 - t)


def slerp_of_directions_only(a, b, t):
    return slerp(a / a.norm(), b / b.norm(), t)


def slerp_like_mergekit(a, b, t):
    a_unit, b_unit = a.flatten() / a.norm(), b.flatten() / b.norm()
    theta = torch.arccos((a_unit @ b_unit).clamp(-1, 1))
    if torch.sin(theta).abs() < 1e-3:
        return torch.lerp(a, b, t)
    return (torch.sin((1 - t) * theta) * a + torch.sin(t * theta) * b) / torch.sin(theta)


def slerp_without_the_parallel_fallback(a, b, t):
    a_unit, b_unit = a.flatten() / a.norm(), b.flatten() / b.norm()
    theta = torch.arccos((a_unit @ b_unit).clamp(-1, 1))
    unit = (torch.sin((1 - t) * theta) * a_unit + torch.sin(t * theta) * b_unit) / torch.sin(theta)
    return (((1 - t) * a.norm() + t * b.norm()) * unit).reshape(a.shape)


def slerp_with_dot_on_2d(a, b, t):
    a_unit, b_unit = a / a.norm(), b / b.norm()
    theta = torch.arccos(torch.dot(a_unit, b_unit))
    return ((1 - t) * a.norm() + t * b.norm()) * (torch.sin((1 - t) * theta) * a_unit
                                                 + torch.sin(t * theta) * b_unit) / torch.sin(theta)


@pytest.mark.parametrize(("wrong", "message"), [
    (slerp_is_linear, r"input 'orthogonal unit vectors, t = 0.5': first difference.*expected 0.7071, got 0.5"),
    (slerp_does_not_normalise, r"input 'norms 2 and 5 at 60 degrees, t = 0.3': first difference"),
    (slerp_swaps_t, r"input 'norms 2 and 5 at 60 degrees, t = 0.3': first difference"),
    (slerp_of_directions_only, r"input 'norms 2 and 5 at 60 degrees, t = 0.3': first difference"),
    (slerp_like_mergekit, r"input 'norms 2 and 5 at 60 degrees, t = 0.3': first difference"),
    (slerp_without_the_parallel_fallback, r"input 'parallel vectors.*got nan"),
    (slerp_with_dot_on_2d, r"input '2-D task vectors \[6, 4\].*raised RuntimeError"),
])
def test_slerp_checker_rejects(wrong, message):
    result = check_slerp(wrong)
    assert_rejects(result, match=message)
    assert "Hint:" in result.message
