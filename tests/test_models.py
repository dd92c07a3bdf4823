"""Loading models three ways (transformers, nnsight, TransformerLens) and the architecture helpers.

Runs on tiny random GPT-2, GPT-NeoX and Llama checkpoints saved locally (the hub path without the
hub) and on the shipped course model.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import GPT2LMHeadModel

from utils import architecture, models
from utils.models import (
    COURSE_MODEL_DIR, REAL_MODEL_SHAPES, CheckpointError, ModelNotAvailableError, ModelTooLargeError,
    check_fits_in_memory, course_parameter_count, load_model, load_tokenizer, parameter_count,
    random_checkpoint_of_shape, resolve_checkpoint, sized_prompts, sized_training, verify_checkpoint, write_manifest,
)

TOKENS = torch.tensor([[0, 5, 17, 42, 99, 7, 3, 250], [0, 11, 12, 13, 14, 15, 16, 17]])


def hf_residual_streams(model, tokens):
    """[n_layers + 1, batch, pos, d_model]: the input to each block, then the last block's output (pre final norm)."""
    outputs = model(tokens, output_hidden_states=True)
    captured = []
    handle = architecture.blocks(model)[-1].register_forward_hook(
        lambda module, inputs, output: captured.append(output[0] if isinstance(output, tuple) else output))
    model(tokens)
    handle.remove()
    return torch.stack([*outputs.hidden_states[:-1], captured[0]]), outputs.logits


def nnsight_residual_streams(model, tokens):
    blocks = architecture.blocks(model)
    streams = []
    with model.trace(tokens):
        for block in blocks:
            streams.append(block.input.save())
        streams.append(blocks[-1].output.save())
        logits = model.output.logits.save()
    return torch.stack([s[0] if isinstance(s, tuple) else s for s in streams]), logits


def tl_residual_streams(model, tokens):
    logits, cache = model.run_with_cache(tokens)
    n = model.cfg.n_layers
    return torch.stack([cache[f"blocks.{i}.hook_resid_pre"] for i in range(n)] + [cache[f"blocks.{n - 1}.hook_resid_post"]]), logits


@torch.no_grad()
def test_three_backends_agree_on_tiny_models(tiny_checkpoint):
    hf_model = load_model(tiny_checkpoint)
    lens = load_model(tiny_checkpoint, backend="transformer_lens")
    nn_model = load_model(tiny_checkpoint, backend="nnsight")

    hf_resid, hf_logits = hf_residual_streams(hf_model, TOKENS)   # [n_layers + 1, batch, pos, d_model]
    tl_resid, tl_logits = tl_residual_streams(lens, TOKENS)
    nn_resid, nn_logits = nnsight_residual_streams(nn_model, TOKENS)

    assert tl_resid.shape == nn_resid.shape == hf_resid.shape == (3, *TOKENS.shape, 64)
    torch.testing.assert_close(tl_resid, hf_resid, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tl_logits, hf_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(nn_resid, hf_resid, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(nn_logits, hf_logits, atol=1e-6, rtol=1e-6)


def test_course_model_loads_three_ways_with_equal_activations():
    hf_model = load_model("course")
    assert isinstance(hf_model, GPT2LMHeadModel)
    lens = load_model("course", backend="transformer_lens")
    nn_model = load_model("course", backend="nnsight")
    tokenizer = load_tokenizer("course")
    tokens = tokenizer("<|endoftext|>When Mary and John went to the shop, John gave a drink to", return_tensors="pt").input_ids
    with torch.no_grad():
        hf_resid, hf_logits = hf_residual_streams(hf_model, tokens)
        tl_resid, tl_logits = tl_residual_streams(lens, tokens)
        nn_resid, nn_logits = nnsight_residual_streams(nn_model, tokens)
    assert hf_resid.shape[0] == hf_model.config.n_layer + 1
    torch.testing.assert_close(tl_resid, hf_resid, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(tl_logits, hf_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(nn_resid, hf_resid, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(nn_logits, hf_logits, atol=1e-6, rtol=1e-6)
    assert torch.equal(lens.to_tokens("The capital of France is"), tokenizer("<|endoftext|>The capital of France is", return_tensors="pt").input_ids)


def test_every_model_names_its_loss(tiny_checkpoint):
    """transformers cannot tell the loss of a "GPT2LMHeadModel" from its name (a warning on the first
    loss, on every chapter page that trains); load_hf_model names the causal-LM loss it uses anyway."""
    assert models.load_hf_model("course").loss_type == "ForCausalLM"
    model = models.load_hf_model(tiny_checkpoint)
    tokens = torch.tensor([[1, 2, 3, 4]])
    assert model.loss_type == "ForCausalLM" and torch.isfinite(model(tokens, labels=tokens).loss)


def test_course_tokenizer_pads_with_end_of_text():
    tokenizer = load_tokenizer("course")
    assert tokenizer.pad_token == tokenizer.eos_token == tokenizer.bos_token == "<|endoftext|>"
    assert tokenizer.convert_tokens_to_ids("<|endoftext|>") == 0


def test_architecture_helpers(tiny_checkpoint):
    model = load_model(tiny_checkpoint)
    assert architecture.n_layers(model) == len(architecture.blocks(model)) == 2
    assert architecture.d_model(model) == 64
    assert architecture.token_embedding(model).weight.shape == (model.config.vocab_size, 64)
    assert architecture.unembedding(model).weight.shape == (model.config.vocab_size, 64)
    resid = torch.randn(1, 3, 64)
    assert architecture.final_norm(model)(resid).shape == resid.shape
    assert architecture.check_layer(model, -1) == 1
    with pytest.raises(ValueError, match="this model has 2 layers, numbered 0 to 1"):
        architecture.check_layer(model, 2)


def test_architecture_helpers_on_nnsight_model(tiny_checkpoint):
    model = load_model(tiny_checkpoint, backend="nnsight")
    with model.trace(TOKENS):
        normed = architecture.final_norm(model).output.save()
    assert normed.shape == (*TOKENS.shape, 64)


def test_architecture_rejects_other_objects():
    with pytest.raises(TypeError, match="expected a transformers model or an nnsight TransformersModel"):
        architecture.blocks(torch.nn.Linear(2, 2))


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="unknown backend 'pytorch': use one of 'hf', 'nnsight', 'transformer_lens'"):
        load_model("course", backend="pytorch")


def test_hub_name_offline_fails_fast_with_the_fix():
    with pytest.raises(ModelNotAvailableError, match="use MODEL = 'course' here"):
        resolve_checkpoint("EleutherAI/pythia-70m-not-cached")


def test_missing_directory_and_directory_without_config(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(str(tmp_path / "nowhere"))
    with pytest.raises(CheckpointError, match="without config.json"):
        resolve_checkpoint(tmp_path)


def test_course_checkpoint_matches_its_manifest():
    manifest = verify_checkpoint(COURSE_MODEL_DIR)
    assert set(manifest["files"]) >= {"model.safetensors", "config.json", "tokenizer.json"}
    assert manifest["tokens_trained"] == manifest["steps"] * manifest["config"]["batch_size"] * manifest["config"]["context_length"]


def test_corrupted_checkpoint_is_named_with_the_fix(tmp_path):
    copy = shutil.copytree(COURSE_MODEL_DIR, tmp_path / "course")
    with (copy / "config.json").open("a") as handle:
        handle.write(" ")
    fix = r"config.json does not match the SHA-256 .*`git checkout -- utils/assets/course_model`"
    with pytest.raises(CheckpointError, match=fix):
        verify_checkpoint(copy)
    (copy / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        verify_checkpoint(copy)


def test_write_manifest_records_checksums(tiny_checkpoint, tmp_path):
    copy = shutil.copytree(tiny_checkpoint, tmp_path / "copy")
    manifest = write_manifest(copy, name="tiny", steps=3)
    assert json.loads((copy / "manifest.json").read_text()) == manifest
    assert manifest["steps"] == 3 and len(manifest["files"]["model.safetensors"]["sha256"]) == 64
    assert verify_checkpoint(copy) == manifest


def test_a_random_checkpoint_of_a_real_models_shape_loads_offline(tmp_path):
    directory = random_checkpoint_of_shape("gpt2-small", tmp_path / "gpt2-small")
    model, tokenizer = load_model(directory), load_tokenizer(directory)
    assert (model.config.n_layer, model.config.n_head, model.config.n_embd) == (12, 12, 768)
    assert model.config.vocab_size == len(tokenizer) == len(load_tokenizer("course"))
    assert 80e6 < sum(p.numel() for p in model.parameters()) < 100e6
    assert set(REAL_MODEL_SHAPES) == {"gpt2-small", "pythia-160m"}
    with pytest.raises(ValueError, match="unknown shape 'gpt2-xl': use one of gpt2-small, pythia-160m"):
        random_checkpoint_of_shape("gpt2-xl", tmp_path / "x")


def test_a_model_too_large_for_the_free_memory_is_refused_with_what_it_needs(tiny_checkpoint, monkeypatch):
    model = load_model(tiny_checkpoint)
    count = sum(p.numel() for p in model.parameters())
    assert parameter_count(model.config) == count
    assert check_fits_in_memory(tiny_checkpoint, model.config, torch.bfloat16) == 2 * count
    monkeypatch.setattr(models, "free_memory_bytes", lambda device="cpu": 4 * count - 1)
    with pytest.raises(ModelTooLargeError, match=rf"has {count:,} parameters: its weights alone need .* MiB in "
                                                 r"float32, and cpu has .* free\. Choose a smaller MODEL"):
        load_model(tiny_checkpoint)
    assert isinstance(load_model(tiny_checkpoint, dtype=torch.bfloat16), torch.nn.Module)   # half of it fits


def test_training_on_a_larger_model_is_cut_to_the_budget_and_says_so(course_model, monkeypatch, capsys):
    assert course_parameter_count() == sum(p.numel() for p in course_model.parameters())
    assert sized_training(course_model, 60, 32, what="the run") == (60, 32)          # the course model: as written
    assert capsys.readouterr().out == ""
    course = course_parameter_count()
    for times, expected in [(83.0, (12, 4)), (8.0, (60, 8)), (1_000.0, (5, 4))]:   # GPT-2 small: about 80 times
        monkeypatch.setattr(models, "course_parameter_count", lambda: course / times)
        steps, batch_size = sized_training(course_model, 60, 32, what="the run", budget=2.0)
        assert (steps, batch_size) == expected
        assert steps * batch_size * times <= 2.0 * 60 * 32 * 1.05 or (steps, batch_size) == (5, 4)   # or the floor
        assert f"the run: this model is {times:,.0f} times the course model's size, so {steps} steps of {batch_size} " \
               "examples instead of 60 of 32" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"steps \(0\), batch_size \(32\) and budget \(2.0\) must be positive"):
        sized_training(course_model, 0, 32, what="the run")


def test_a_sweep_on_a_larger_model_runs_fewer_prompts_and_says_so(course_model, monkeypatch, capsys):
    assert sized_prompts(course_model, 32, what="IOI pairs") == 32                 # the course model: as written
    assert capsys.readouterr().out == ""
    course = course_parameter_count()
    for times, minimum, expected in [(83.0, 8, 8), (83.0, 1, 1), (8.0, 4, 8), (1.5, 8, 32)]:
        monkeypatch.setattr(models, "course_parameter_count", lambda: course / times)
        assert sized_prompts(course_model, 32, what="IOI pairs", budget=2.0, minimum=minimum) == expected
        printed = capsys.readouterr().out
        assert (f"IOI pairs: this model is {times:,.0f} times the course model's size, so {expected} instead "
                "of 32" in printed) == (expected < 32)
    assert sized_prompts(course_model, 4, what="pairs", minimum=8) == 4            # never more than asked for
    with pytest.raises(ValueError, match=r"n \(0\), minimum \(8\) and budget \(2.0\) must be positive"):
        sized_prompts(course_model, 0, what="pairs")
