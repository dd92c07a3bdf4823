"""Cache residual-stream activations to disk, in shards, with bounded memory, and read them back.

Sparse autoencoders (chapter 6) train on millions of residual-stream vectors. Holding them all in
memory (``run_with_cache`` on everything) does not scale, so this module streams them to disk::

    windows = token_windows(tokenizer, [doc.text for doc in generate_corpus(2_000, seed=1)], 256)
    info = cache_activations(model, windows, layer=2, directory="cache/layer2")
    store = ActivationStore("cache/layer2")
    store.check_compatible(model, layer=2)
    for batch in store.iter_batches(4096, shuffle=True):   # [4096, d_model] tensors
        ...

Choices, and why:

* **Packed windows.** Documents are packed into fixed windows exactly as in training
  (``<|endoftext|> doc <|endoftext|> doc ...``, :func:`utils.course_model.train.pack_documents`), and
  the forward pass uses the training's per-document position ids and attention mask, so every
  token sees only its own document, from position 0: the activations are those the model
  computes at inference, with no padding wasted.
* **BOS rows are dropped** (``drop_bos=True``, recorded in the metadata). The residual stream at a
  ``<|endoftext|>`` that starts a document is the same vector every time and has a far larger norm
  than other positions; SAE training usually drops it.
* **Shards hold whole windows.** A shard holds at most ``shard_rows`` rows, and is written
  atomically (a temporary file, then a rename) before ``metadata.json`` records it. The metadata
  counts the windows whose rows are on disk, so a run interrupted at any point resumes at the first
  window not on disk: no row is lost or written twice.
* Each shard holds ``activations`` ``[rows, d_model]`` and, for finding the tokens behind a row
  later, ``token_ids`` and ``window_ids`` ``[rows]``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import torch
from jaxtyping import Float, Int
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from utils.architecture import check_layer, unwrap
from utils.course_model.train import document_inputs, pack_documents
from utils.hooks import capture
from utils.progress import tqdm

METADATA_FILE = "metadata.json"
FORMAT_VERSION = 1
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SITES = ("resid_post",)
Dtype = Literal["float32", "float16", "bfloat16"]


# --------------------------------------------------------------------------------------------
# Inputs


def token_windows(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], context_length: int,
) -> Int[Tensor, "n context"]:
    """``texts`` packed into windows of ``context_length`` tokens, as in training.

    Each document starts with ``<|endoftext|>`` (the BOS token); the stream is cut into
    non-overlapping windows and the incomplete last window is dropped.
    """
    if context_length < 1:
        raise ValueError(f"context_length must be at least 1, got {context_length}")
    windows = pack_documents(list(texts), tokenizer, context_length)
    if len(windows) == 0:
        raise ValueError(f"{len(texts)} texts make less than one window of {context_length} tokens: "
                         "pass more (or longer) texts, or a smaller context_length")
    return windows


def windows_hash(windows: Int[Tensor, "n context"]) -> str:
    """A SHA-256 of the windows (their shape and token ids), so a resume with other inputs is refused."""
    digest = hashlib.sha256(str(tuple(windows.shape)).encode())
    digest.update(np.ascontiguousarray(windows.cpu().numpy().astype(np.int64)).tobytes())
    return digest.hexdigest()


def document_attention(
    windows: Int[Tensor, "batch pos"], bos: int, dtype: torch.dtype = torch.float32,
) -> tuple[Int[Tensor, "batch pos"], Float[Tensor, "batch 1 pos pos"]]:
    """Position ids and an *additive* attention mask that keep the packed documents apart.

    :func:`~utils.course_model.train.document_inputs` returns a boolean mask; the eager attention
    of transformers 5 adds a 4-D mask to the scores instead of masking with it, so it is turned
    into ``0`` (attend) / the most negative float (do not attend), which every implementation reads
    the same way.
    """
    positions, allowed = document_inputs(windows, bos)
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return positions, mask


# --------------------------------------------------------------------------------------------
# What identifies a model


def model_signature(model: Any) -> dict[str, Any]:
    """The shape of ``model`` that a store records: type, width, depth, vocabulary, and a config hash."""
    config = unwrap(model).config
    settings = {k: v for k, v in sorted(config.to_dict().items())
                if k not in {"_name_or_path", "transformers_version", "dtype", "torch_dtype", "architectures"}}
    return {
        "name": str(getattr(config, "_name_or_path", "") or ""),
        "model_type": config.model_type,
        "d_model": config.hidden_size,
        "n_layer": config.num_hidden_layers,
        "vocab_size": config.vocab_size,
        "config_hash": hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest(),
    }


# --------------------------------------------------------------------------------------------
# Capturing one block's output


def block_output(model: Any, windows: Int[Tensor, "batch pos"], layer: int, bos: int) -> Float[Tensor, "batch pos d_model"]:
    """The residual stream after block ``layer`` (``resid_post``) for packed ``windows``.

    The forward pass keeps the packed documents apart (:func:`document_attention`) and stops once
    block ``layer`` has run (:func:`utils.hooks.capture` with ``stop_early``).
    """
    hf_model = unwrap(model)
    device = next(hf_model.parameters()).device
    positions, mask = document_attention(windows, bos, dtype=hf_model.dtype)
    site = f"resid_post.{layer}"
    return capture(hf_model, windows.to(device), [site], stop_early=True,
                   position_ids=positions.to(device), attention_mask=mask.to(device))[site]


# --------------------------------------------------------------------------------------------
# Writing a store


@dataclass(frozen=True)
class CacheInfo:
    """What :func:`cache_activations` left in ``directory``."""

    directory: Path
    rows: int
    d_model: int
    shards: int
    windows_done: int
    resumed_from: int
    complete: bool


def _read_metadata(directory: Path) -> dict[str, Any]:
    return json.loads((directory / METADATA_FILE).read_text())


def _write_metadata(directory: Path, metadata: dict[str, Any]) -> None:
    """Write ``metadata.json`` atomically (a temporary file, then a rename)."""
    tmp = directory / (METADATA_FILE + ".tmp")
    tmp.write_text(json.dumps(metadata, indent=1) + "\n")
    os.replace(tmp, directory / METADATA_FILE)


def _write_shard(directory: Path, index: int, tensors: dict[str, Tensor]) -> str:
    """Write shard ``index`` atomically; return its file name."""
    name = f"shard_{index:05d}.safetensors"
    tmp = directory / (name + ".tmp")
    save_file({key: value.contiguous() for key, value in tensors.items()}, str(tmp))
    os.replace(tmp, directory / name)
    return name


def _check_resumable(directory: Path, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Refuse to resume a run whose model, layer, inputs or settings differ from this one."""
    for key in ("model", "layer", "site", "dtype", "drop_bos", "windows_hash", "shard_rows", "format"):
        if old.get(key) != new[key]:
            what = "inputs (windows)" if key == "windows_hash" else key
            raise ValueError(
                f"{directory} holds activations cached with another {what} ({old.get(key)!r}, this run: "
                f"{new[key]!r}): use a new directory, or delete {directory} to start again")


def _start_or_resume(directory: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata to continue from: ``metadata`` for a new run, the directory's for a resumed one."""
    if (directory / METADATA_FILE).exists():
        old = _read_metadata(directory)
        _check_resumable(directory, old, metadata)
        for stray in directory.glob("*.tmp"):   # a write interrupted before its rename
            stray.unlink()
        return old
    if directory.exists() and any(directory.iterdir()):
        raise ValueError(f"{directory} is not empty and holds no {METADATA_FILE}: cache into a new or empty directory")
    directory.mkdir(parents=True, exist_ok=True)
    _write_metadata(directory, metadata)
    return metadata


def _window_rows(
    activations: Float[Tensor, "pos d_model"], tokens: Int[Tensor, "pos"], bos: int, drop_bos: bool,
) -> tuple[Float[Tensor, "rows d_model"], Int[Tensor, "rows"]]:
    keep = tokens != bos if drop_bos else torch.ones_like(tokens, dtype=torch.bool)
    return activations[keep], tokens[keep]


@torch.no_grad()
def cache_activations(
    model: PreTrainedModel,
    windows: Int[Tensor, "n context"],
    layer: int,
    directory: str | Path,
    *,
    batch_size: int = 32,
    shard_rows: int = 65_536,
    site: str = "resid_post",
    dtype: Dtype = "float32",
    drop_bos: bool = True,
    progress: bool = True,
) -> CacheInfo:
    """Run ``model`` on ``windows`` and write the residual stream after block ``layer`` to ``directory``.

    Rows are written, in window order, to ``shard_00000.safetensors``, ``shard_00001.safetensors``
    ... of at most ``shard_rows`` rows each (a shard holds whole windows, so ``shard_rows`` must be
    at least the window length), plus ``metadata.json``. At most one shard is held in memory.

    If ``directory`` holds an interrupted run of the same model, layer, inputs and settings, the run
    resumes at the first window not on disk; any other store there is refused.
    """
    directory = Path(directory)
    if site not in SITES:
        raise ValueError(f"site {site!r} is not supported: use one of {SITES}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported: use one of {tuple(DTYPES)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if windows.ndim != 2 or windows.shape[0] == 0 or windows.shape[1] == 0:
        raise ValueError(f"windows must be a non-empty [n, context] tensor of token ids, got shape "
                         f"{tuple(windows.shape)}: build them with token_windows(tokenizer, texts, context_length)")
    if shard_rows < windows.shape[1]:
        raise ValueError(f"shard_rows={shard_rows} is smaller than one window ({windows.shape[1]} tokens): "
                         f"use shard_rows >= {windows.shape[1]}")
    layer = check_layer(model, layer)
    bos = unwrap(model).config.bos_token_id
    if bos is None:
        raise ValueError("the model's config has no bos_token_id: set model.config.bos_token_id to the token "
                         "that starts each document")
    signature = model_signature(model)

    metadata = _start_or_resume(directory, {
        "format": FORMAT_VERSION, "model": signature, "layer": layer, "site": site, "dtype": dtype,
        "drop_bos": drop_bos, "bos_token_id": bos, "context_length": windows.shape[1],
        "n_windows": windows.shape[0], "windows_hash": windows_hash(windows), "shard_rows": shard_rows,
        "windows_done": 0, "rows": 0, "shards": [], "complete": False,
    })
    resumed_from = metadata["windows_done"]
    buffer: list[tuple[Tensor, Tensor, int]] = []   # (activations, token ids, window index) of whole windows
    buffered_rows, buffer_start = 0, resumed_from

    def flush(next_window: int) -> None:
        nonlocal buffer, buffered_rows, buffer_start
        activations = torch.cat([a for a, _, _ in buffer]) if buffer else torch.empty(0, signature["d_model"])
        tensors = {
            "activations": activations.to(DTYPES[dtype]).cpu(),
            "token_ids": torch.cat([t for _, t, _ in buffer]).cpu() if buffer else torch.empty(0, dtype=torch.long),
            "window_ids": torch.cat([torch.full((len(t),), w) for _, t, w in buffer]) if buffer
            else torch.empty(0, dtype=torch.long),
        }
        name = _write_shard(directory, len(metadata["shards"]), tensors)
        metadata["shards"].append({"file": name, "rows": buffered_rows, "windows": [buffer_start, next_window]})
        metadata["rows"] += buffered_rows
        metadata["windows_done"] = next_window
        _write_metadata(directory, metadata)
        buffer, buffered_rows, buffer_start = [], 0, next_window

    hf_model = unwrap(model)
    was_training = hf_model.training
    hf_model.eval()
    try:
        with tqdm(total=len(windows), initial=resumed_from, desc=f"caching layer {layer}", unit="window",
                  disable=not progress) as bar:
            for start in range(resumed_from, len(windows), batch_size):
                batch = windows[start:start + batch_size]
                activations = block_output(model, batch, layer, bos).float().cpu()
                for offset, (acts, tokens) in enumerate(zip(activations, batch)):
                    rows, kept_tokens = _window_rows(acts, tokens.cpu(), bos, drop_bos)
                    if buffered_rows + len(rows) > shard_rows:
                        flush(next_window=start + offset)
                    buffer.append((rows, kept_tokens, start + offset))
                    buffered_rows += len(rows)
                bar.update(len(batch))
            if buffer or metadata["windows_done"] < len(windows):
                flush(next_window=len(windows))
    finally:
        hf_model.train(was_training)
    if not metadata["complete"]:
        metadata["complete"] = True
        _write_metadata(directory, metadata)
    return CacheInfo(directory=directory, rows=metadata["rows"], d_model=signature["d_model"],
                     shards=len(metadata["shards"]), windows_done=metadata["windows_done"],
                     resumed_from=resumed_from, complete=True)


# --------------------------------------------------------------------------------------------
# Reading a store


class ActivationStore:
    """The activations cached in ``directory``, read one shard at a time.

    ``len(store)`` is the number of rows; ``store.d_model`` their width. Nothing is loaded until
    :meth:`iter_batches` or :meth:`as_tensor` asks for it.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        if not (self.directory / METADATA_FILE).exists():
            raise ValueError(f"{self.directory} holds no {METADATA_FILE}: it is not an activation store "
                             "(write one with cache_activations(model, windows, layer, directory))")
        self.metadata: dict[str, Any] = _read_metadata(self.directory)
        if self.metadata.get("format") != FORMAT_VERSION:
            raise ValueError(f"{self.directory} has store format {self.metadata.get('format')!r}, this code reads "
                             f"format {FORMAT_VERSION}: re-cache the activations")

    def __len__(self) -> int:
        return self.metadata["rows"]

    def __repr__(self) -> str:
        m = self.metadata
        return (f"ActivationStore({str(self.directory)!r}: {len(self)} rows x {self.d_model}, layer {self.layer} "
                f"{m['site']} of {m['model']['model_type']}, {len(m['shards'])} shards"
                f"{'' if self.complete else ', INCOMPLETE'})")

    @property
    def d_model(self) -> int:
        return self.metadata["model"]["d_model"]

    @property
    def layer(self) -> int:
        return self.metadata["layer"]

    @property
    def complete(self) -> bool:
        """Whether the run that wrote the store finished (an interrupted one can be resumed)."""
        return self.metadata["complete"]

    def check_compatible(self, model: Any, layer: int) -> None:
        """Raise ``ValueError`` unless the store was cached from a model of ``model``'s shape at ``layer``."""
        cached, here = self.metadata["model"], model_signature(model)
        shape = lambda s: f"{s['model_type']} with d_model={s['d_model']}, {s['n_layer']} layers, vocab {s['vocab_size']}"
        if any(cached[key] != here[key] for key in ("model_type", "d_model", "n_layer", "vocab_size")):
            raise ValueError(f"{self.directory} was cached from a {shape(cached)}; this model is a {shape(here)}: "
                             "cache activations for this model in a new directory")
        if check_layer(model, layer) != self.layer:
            raise ValueError(f"{self.directory} holds layer {self.layer}, not layer {layer}: "
                             f"cache layer {layer} in a new directory")

    def load_shard(self, index: int) -> Float[Tensor, "rows d_model"]:
        """The activations of shard ``index``, as float32, after checking their shape against the metadata."""
        entry = self.metadata["shards"][index]
        activations = load_file(str(self.directory / entry["file"]))["activations"]
        if tuple(activations.shape) != (entry["rows"], self.d_model):
            raise ValueError(f"{entry['file']} holds activations of shape {tuple(activations.shape)}, the metadata "
                             f"says ({entry['rows']}, {self.d_model}): the store is corrupted, re-cache it")
        return activations.float()

    def iter_batches(
        self, batch_size: int, shuffle: bool = False, seed: int = 0, drop_last: bool = False,
    ) -> Iterator[Float[Tensor, "batch d_model"]]:
        """Every row once, in ``[batch_size, d_model]`` batches (the last may be smaller unless ``drop_last``).

        With ``shuffle``, shards are visited in a random order and rows are shuffled within each shard
        (a seeded permutation of all rows, not a uniform one: rows of neighbouring windows stay in the
        same shard). Memory: one shard plus one batch.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self.metadata["shards"]), generator=generator).tolist() if shuffle \
            else range(len(self.metadata["shards"]))
        leftover = torch.empty(0, self.d_model)
        for index in order:
            shard = self.load_shard(index)
            if shuffle:
                shard = shard[torch.randperm(len(shard), generator=generator)]
            shard = torch.cat([leftover, shard])
            n_full = len(shard) // batch_size * batch_size
            if n_full:                                   # split() of no rows would yield one empty batch
                yield from shard[:n_full].split(batch_size)
            leftover = shard[n_full:]
        if len(leftover) and not drop_last:
            yield leftover

    def as_tensor(self, max_bytes: int = 2**30) -> Float[Tensor, "rows d_model"]:
        """All rows in one float32 tensor, for small stores (refused above ``max_bytes``)."""
        size = len(self) * self.d_model * 4
        if size > max_bytes:
            raise ValueError(f"the store holds {size / 2**20:.0f} MiB of activations, more than max_bytes="
                             f"{max_bytes / 2**20:.0f} MiB: iterate with iter_batches, or raise max_bytes")
        shards = [self.load_shard(i) for i in range(len(self.metadata["shards"]))]
        return torch.cat(shards) if shards else torch.empty(0, self.d_model)

    def token_ids(self) -> Int[Tensor, "rows"]:
        """The token id behind each row, in row order."""
        ids = [load_file(str(self.directory / s["file"]))["token_ids"] for s in self.metadata["shards"]]
        return torch.cat(ids) if ids else torch.empty(0, dtype=torch.long)


# --------------------------------------------------------------------------------------------
# Exercise 3.14: the core of cache_activations, written by the learner


@torch.no_grad()
def cache_to_shards(
    model: PreTrainedModel, windows: Int[Tensor, "n context"], layer: int, directory: str | Path,
    shard_rows: int = 1024, batch_size: int = 8, *, progress: bool = True,
) -> int:
    """Reference for Exercise 3.14: write block ``layer``'s output on ``windows``, BOS rows dropped, in shards.

    ``directory/shard_00000.safetensors``, ``shard_00001.safetensors``... each hold a tensor
    ``"activations"`` of exactly ``shard_rows`` rows ``[shard_rows, d_model]`` in window order,
    but the last, which holds the rest. Memory stays below one shard plus one batch. Returns the
    number of rows written. ``progress=False`` hides the progress bar.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bos = unwrap(model).config.bos_token_id
    pending = torch.empty(0, unwrap(model).config.hidden_size)       # rows not yet on disk: [rows, d_model]
    shards_written = rows_written = 0

    def write(rows: Float[Tensor, "rows d_model"]) -> None:
        nonlocal shards_written, rows_written
        save_file({"activations": rows.contiguous()}, str(directory / f"shard_{shards_written:05d}.safetensors"))
        shards_written += 1
        rows_written += len(rows)

    for start in tqdm(range(0, len(windows), batch_size), desc=f"caching layer {layer}", unit="batch",
                      disable=not progress):
        batch = windows[start:start + batch_size]                     # [batch, context]
        activations = block_output(model, batch, layer, bos)         # [batch, context, d_model]
        pending = torch.cat([pending, activations[batch != bos]])    # BOS rows dropped
        while len(pending) >= shard_rows:
            write(pending[:shard_rows])
            pending = pending[shard_rows:]
    if len(pending):
        write(pending)
    return rows_written
