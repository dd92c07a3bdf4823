"""Tests for utils.activation_store: cached rows equal a direct forward pass, shards stay bounded,
an interrupted run resumes exactly, and stores of another model / layer / inputs are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import utils.activation_store as activation_store
from utils.activation_store import ActivationStore, cache_activations, document_attention, token_windows
from utils.checkers.caching_hooks import check_cache_to_shards
from utils.checks import assert_accepts, assert_rejects
from utils.models import load_model, load_tokenizer, tiny_random_model
from utils.world import generate_corpus

CONTEXT = 32


@pytest.fixture(scope="module")
def course():
    return load_model("course"), load_tokenizer("course")


@pytest.fixture(scope="module")
def windows(course):
    _, tokenizer = course
    return token_windows(tokenizer, [doc.text for doc in generate_corpus(30, seed=3)], CONTEXT)[:24]


def expected_rows(model, windows, layer, drop_bos=True):
    """Block ``layer``'s output from output_hidden_states (hidden_states[layer + 1]; layer < last)."""
    bos = model.config.bos_token_id
    positions, mask = document_attention(windows, bos)
    with torch.no_grad():
        hidden = model(input_ids=windows, position_ids=positions, attention_mask=mask,
                       output_hidden_states=True).hidden_states[layer + 1]
    keep = windows != bos if drop_bos else torch.ones_like(windows, dtype=torch.bool)
    return hidden[keep]


def test_token_windows_are_packed_documents(course, windows):
    assert windows.shape == (24, CONTEXT)
    assert (windows[:, 1:] == 0).any()  # documents packed end to end: a BOS starts one inside a window
    with pytest.raises(ValueError, match="less than one window"):
        token_windows(course[1], ["short"], 10_000)


def test_rows_equal_direct_forward_pass(course, windows, tmp_path):
    model, _ = course
    info = cache_activations(model, windows, layer=1, directory=tmp_path, batch_size=5, shard_rows=100,
                             progress=False)
    store = ActivationStore(tmp_path)
    expected = expected_rows(model, windows, layer=1)
    assert len(store) == info.rows == len(expected) == (windows != 0).sum()
    torch.testing.assert_close(store.as_tensor(), expected, atol=1e-5, rtol=0)
    assert torch.equal(store.token_ids(), windows[windows != 0])


def test_documents_are_kept_apart(course, tmp_path):
    """The second document of a window has the activations it has on its own."""
    model, tokenizer = course
    texts = [doc.text for doc in generate_corpus(2, seed=5)]
    first, second = ([0, *tokenizer(t)["input_ids"]] for t in texts)
    window = torch.tensor([first + second])
    cache_activations(model, window, layer=0, directory=tmp_path, progress=False, drop_bos=False)
    with torch.no_grad():
        alone = model(input_ids=torch.tensor([second]), output_hidden_states=True).hidden_states[1][0]
    torch.testing.assert_close(ActivationStore(tmp_path).as_tensor()[len(first):], alone, atol=1e-5, rtol=0)


def test_keeping_bos_and_float16(course, windows, tmp_path):
    model, _ = course
    cache_activations(model, windows[:4], layer=3, directory=tmp_path, dtype="float16", drop_bos=False,
                      progress=False)
    store = ActivationStore(tmp_path)
    assert len(store) == 4 * CONTEXT and store.metadata["dtype"] == "float16" and not store.metadata["drop_bos"]
    expected = expected_rows(model, windows[:4], layer=2, drop_bos=False)   # not the last block's: sanity
    assert not torch.allclose(store.as_tensor(), expected, atol=1e-2)


def test_shards_never_exceed_shard_rows(course, windows, tmp_path):
    model, _ = course
    cache_activations(model, windows, layer=0, directory=tmp_path, batch_size=7, shard_rows=CONTEXT * 2,
                      progress=False)
    store = ActivationStore(tmp_path)
    sizes = [len(store.load_shard(i)) for i in range(len(store.metadata["shards"]))]
    assert len(sizes) > 10 and max(sizes) <= CONTEXT * 2 and sum(sizes) == len(store)
    assert [s["rows"] for s in store.metadata["shards"]] == sizes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metadata.json"] + [f"shard_{i:05d}.safetensors"
                                                                             for i in range(len(sizes))]


@pytest.mark.parametrize("fail_in", ["save_file", "_write_metadata"])
def test_interrupted_run_resumes_exactly(course, windows, tmp_path, monkeypatch, fail_in):
    """Kill the run half-way through writing the third shard (or between a shard and its metadata), then resume."""
    model, _ = course
    settings = dict(layer=2, batch_size=3, shard_rows=70, progress=False)  # resumes mid-batch
    cache_activations(model, windows, directory=tmp_path / "whole", **settings)
    original, calls = getattr(activation_store, fail_in), []
    # _write_metadata: call 1 starts the run, calls 2 and 3 record shards 0 and 1, call 4 would record
    # shard 2, whose file is already renamed into place: the resume must overwrite it, not keep it.
    fail_at = 3 if fail_in == "save_file" else 4

    def failing(*args):
        calls.append(1)
        if len(calls) == fail_at:
            if fail_in == "save_file":
                Path(args[1]).write_bytes(b"half a shard")   # the temporary file, never renamed
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(activation_store, fail_in, failing)
    with pytest.raises(KeyboardInterrupt):
        cache_activations(model, windows, directory=tmp_path / "resumed", **settings)
    monkeypatch.setattr(activation_store, fail_in, original)
    assert fail_in != "save_file" or list((tmp_path / "resumed").glob("*.tmp"))
    partial = ActivationStore(tmp_path / "resumed")
    assert not partial.complete and len(partial.metadata["shards"]) == 2
    info = cache_activations(model, windows, directory=tmp_path / "resumed", **settings)
    assert info.resumed_from == partial.metadata["windows_done"] > 0
    assert info.resumed_from % 3 != 0   # the resumed run batches the windows differently
    whole, resumed = ActivationStore(tmp_path / "whole"), ActivationStore(tmp_path / "resumed")
    assert resumed.complete and len(resumed) == len(whole)
    assert torch.equal(resumed.as_tensor(), whole.as_tensor())
    assert resumed.metadata["shards"] == whole.metadata["shards"]
    assert not list((tmp_path / "resumed").glob("*.tmp"))


def test_resume_with_other_inputs_or_layer_is_refused(course, windows, tmp_path):
    model, _ = course
    cache_activations(model, windows[:6], layer=1, directory=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"another inputs \(windows\).*new directory, or delete"):
        cache_activations(model, windows[6:12], layer=1, directory=tmp_path, progress=False)
    with pytest.raises(ValueError, match="another layer.*new directory"):
        cache_activations(model, windows[:6], layer=2, directory=tmp_path, progress=False)
    other = tiny_random_model("gpt2", vocab_size=2037)
    with pytest.raises(ValueError, match="another model"):
        cache_activations(other, windows[:6], layer=1, directory=tmp_path, progress=False)
    again = cache_activations(model, windows[:6], layer=1, directory=tmp_path, progress=False)
    assert again.resumed_from == 6   # complete: nothing to do


def test_check_compatible_names_both_shapes(course, windows, tmp_path):
    model, _ = course
    cache_activations(model, windows[:2], layer=1, directory=tmp_path, progress=False)
    store = ActivationStore(tmp_path)
    store.check_compatible(model, 1)
    store.check_compatible(model, -3)
    with pytest.raises(ValueError, match="d_model=128.*d_model=64"):
        store.check_compatible(tiny_random_model("gpt2", vocab_size=2037), 1)
    with pytest.raises(ValueError, match="holds layer 1, not layer 2"):
        store.check_compatible(model, 2)


def test_shape_mismatch_detected_on_load(course, windows, tmp_path):
    model, _ = course
    cache_activations(model, windows[:2], layer=1, directory=tmp_path, progress=False)
    metadata = json.loads((tmp_path / "metadata.json").read_text())
    metadata["model"]["d_model"] = 64
    (tmp_path / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match=r"shape \(\d+, 128\).*\(\d+, 64\)"):
        ActivationStore(tmp_path).as_tensor()


def test_iter_batches_cover_every_row_once(course, windows, tmp_path):
    model, _ = course
    cache_activations(model, windows, layer=0, directory=tmp_path, shard_rows=90, progress=False)
    store = ActivationStore(tmp_path)
    everything = store.as_tensor()
    batches = list(store.iter_batches(37))
    assert all(len(b) == 37 for b in batches[:-1]) and 0 < len(batches[-1]) <= 37
    assert torch.equal(torch.cat(batches), everything)

    def shuffled(seed):
        return torch.cat(list(store.iter_batches(37, shuffle=True, seed=seed)))

    once, again, other = shuffled(0), shuffled(0), shuffled(1)
    assert torch.equal(once, again) and not torch.equal(once, other) and not torch.equal(once, everything)
    key = lambda rows: sorted(map(tuple, rows.tolist()))
    assert key(once) == key(everything)
    assert sum(len(b) for b in store.iter_batches(37, drop_last=True)) == len(store) // 37 * 37


def test_a_shard_smaller_than_the_batch_never_yields_an_empty_batch(course, windows, tmp_path):
    """A short last shard visited first used to give an empty batch (and an SAE trained on it NaN losses)."""
    model, _ = course
    cache_activations(model, windows, layer=0, directory=tmp_path, shard_rows=90, progress=False)
    store = ActivationStore(tmp_path)
    assert len(store) % 90 < 80                                    # the last shard is shorter than a batch of 80
    for seed in range(8):
        batches = list(store.iter_batches(80, shuffle=True, seed=seed, drop_last=True))
        assert all(len(batch) == 80 for batch in batches) and len(batches) == len(store) // 80


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama"])
def test_tiny_random_families(family, tmp_path):
    model = tiny_random_model(family)
    windows = torch.randint(1, 320, (6, 16))
    windows[:, 0] = 0
    windows[::2, 9] = 0
    cache_activations(model, windows, layer=0, directory=tmp_path, batch_size=4, shard_rows=40, progress=False)
    store = ActivationStore(tmp_path)
    assert store.d_model == 64
    torch.testing.assert_close(store.as_tensor(), expected_rows(model, windows, layer=0), atol=1e-5, rtol=0)
    store.check_compatible(model, 0)


def test_bad_inputs(course, windows, tmp_path):
    model, _ = course
    with pytest.raises(ValueError, match="this model has 4 layers"):
        cache_activations(model, windows, layer=4, directory=tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="non-empty"):
        cache_activations(model, windows[:0], layer=0, directory=tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        cache_activations(model, windows, layer=0, directory=tmp_path / "c", batch_size=0, progress=False)
    with pytest.raises(ValueError, match="shard_rows=8 is smaller than one window"):
        cache_activations(model, windows, layer=0, directory=tmp_path / "d", shard_rows=8, progress=False)
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no metadata.json"):
        cache_activations(model, windows, layer=0, directory=tmp_path / "e", progress=False)
    with pytest.raises(ValueError, match="not an activation store"):
        ActivationStore(tmp_path / "e")


# --------------------------------------------------------------------------------------------
# Exercise 3.4


def test_cache_to_shards_writes_bounded_shards(course, windows, tmp_path):
    model, _ = course
    rows = activation_store.cache_to_shards(model, windows, 1, tmp_path, shard_rows=100, batch_size=5)
    sizes = [len(load_file(str(p))["activations"]) for p in sorted(tmp_path.glob("shard_*.safetensors"))]
    assert rows == sum(sizes) == (windows != 0).sum() and set(sizes[:-1]) == {100} and 0 < sizes[-1] <= 100
    whole = torch.cat([load_file(str(p))["activations"] for p in sorted(tmp_path.glob("shard_*.safetensors"))])
    torch.testing.assert_close(whole, expected_rows(model, windows, layer=1), atol=1e-5, rtol=0)


def test_cache_to_shards_checker(course, windows):
    model, _ = course
    reference = activation_store.cache_to_shards
    windows = windows[:8]

    def one_shard(model, windows, layer, directory, shard_rows=1024, batch_size=8):   # memory not bounded
        return reference(model, windows, layer, directory, shard_rows=10**9, batch_size=batch_size)

    def keeps_bos(model, windows, layer, directory, shard_rows=1024, batch_size=8):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        acts = activation_store.block_output(model, windows, layer, model.config.bos_token_id)
        rows = acts.reshape(-1, acts.shape[-1])
        for i, shard in enumerate(rows.split(shard_rows)):
            save_file({"activations": shard.contiguous()}, str(directory / f"shard_{i:05d}.safetensors"))
        return len(rows)

    def drops_last_shard(model, windows, layer, directory, shard_rows=1024, batch_size=8):
        written = reference(model, windows, layer, directory, shard_rows, batch_size)
        last = sorted(Path(directory).glob("shard_*.safetensors"))[-1]
        last.unlink()
        return written

    def wrong_layer(model, windows, layer, directory, shard_rows=1024, batch_size=8):
        return reference(model, windows, max(layer - 1, 0) if layer else 1, directory, shard_rows, batch_size)

    def unpadded_names(model, windows, layer, directory, shard_rows=1024, batch_size=8):
        written = reference(model, windows, layer, directory, shard_rows, batch_size)
        for path in Path(directory).glob("shard_*.safetensors"):
            path.rename(path.with_name(f"shard_{int(path.stem[len('shard_'):])}.safetensors"))
        return written

    def a_shard_per_batch(model, windows, layer, directory, shard_rows=1024, batch_size=8):
        return reference(model, windows, layer, directory, shard_rows=1, batch_size=batch_size)

    def all_windows_at_once(model, windows, layer, directory, shard_rows=1024, batch_size=8):
        return reference(model, windows, layer, directory, shard_rows, batch_size=len(windows))

    def needs_a_path(model, windows, layer, directory, shard_rows=1024, batch_size=8):
        return reference(model, windows, layer, directory / ".", shard_rows, batch_size)

    def makes_only_the_last_folder(model, windows, layer, directory, shard_rows=1024, batch_size=8):
        Path(directory).mkdir()
        return reference(model, windows, layer, directory, shard_rows, batch_size)

    assert_accepts(check_cache_to_shards(reference, model, windows))
    assert_rejects(check_cache_to_shards(one_shard, model, windows),
                   r"shard_00000.safetensors holds \d+ rows, expected 100: every shard but the last holds exactly")
    assert_rejects(check_cache_to_shards(unpadded_names, model, windows),
                   r"holds \d+ files: shard_0.safetensors, .*\(shard_0.safetensors where shard_00000.safetensors was")
    assert_rejects(check_cache_to_shards(a_shard_per_batch, model, windows),
                   r"shard_00000.safetensors holds 1 row, expected 100")
    assert_rejects(check_cache_to_shards(all_windows_at_once, model, windows),
                   r"ran the model on 8 windows at once, with batch_size=3")
    assert_rejects(check_cache_to_shards(needs_a_path, model, windows),
                   r"directory a str .*raised TypeError")
    assert_rejects(check_cache_to_shards(makes_only_the_last_folder, model, windows),
                   r"folders do not exist yet': your function raised FileNotFoundError")
    assert_rejects(check_cache_to_shards(keeps_bos, model, windows), "not BOS")
    assert_rejects(check_cache_to_shards(drops_last_shard, model, windows), "rows in all")
    assert_rejects(check_cache_to_shards(wrong_layer, model, windows), "the rows, in shard order")
