"""Caching activations at scale: tokens/s and peak memory of four ways to get layer 2's residual stream.

Each method runs in its own Python process on the same packed windows of course-corpus text
(``--windows`` windows of ``--context`` tokens), after the model is loaded and the inputs are
built; its peak memory is the growth of the process's resident set from that point
(``/proc/self/clear_refs`` resets the high-water mark, ``VmHWM`` reads it).

- ``forward``: the forward pass alone on every batch, keeping nothing (the limit any cache can reach);
- ``store``: ``utils.activation_store.cache_activations`` to a temporary directory (one site, the
  forward pass stopped after the block, shards of ``--shard-rows`` rows written as they fill);
- ``run_with_cache``: TransformerLens's ``run_with_cache`` on every hook point, the whole cache of
  every batch kept in memory (the naive way);
- ``sae-lens``: sae-lens's ``ActivationsStore`` on the same tokens and hook, read in batches of
  4,096 until every token has been served (what SAE training consumes; it keeps an in-memory buffer
  and stores nothing on disk). Its mixing fraction is 0: with the default 0.5 it holds half the
  buffer back to shuffle with later batches, and serving every token once takes extra forward passes.

    .venv/bin/python benchmarks/caching.py
    .venv/bin/python benchmarks/caching.py --windows 200 --json out.json

Run it on an otherwise idle machine; the numbers are printed, nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

METHODS = ("forward", "store", "run_with_cache", "sae-lens")
LAYER = 2


def _status_kib(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(work: Callable[[], object]) -> tuple[float, float]:
    """Seconds ``work()`` takes and the growth (MiB) of the resident set at its peak."""
    Path("/proc/self/clear_refs").write_text("5")    # VmHWM := VmRSS from here on
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    kept = work()                                     # kept alive until the peak is read
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    del kept
    return seconds, (peak - before) / 1024


def run_method(method: str, n_windows: int, context: int, batch: int, shard_rows: int) -> dict:
    """Measure one method in this process."""
    from utils.activation_store import cache_activations, document_attention, token_windows
    from utils.models import load_model, load_tokenizer
    from utils.world import generate_corpus

    torch.manual_seed(0)
    model, tokenizer = load_model("course"), load_tokenizer("course")
    documents = 4 * n_windows * context // 40                          # about 40 tokens a document
    windows = token_windows(tokenizer, [doc.text for doc in generate_corpus(documents, seed=11)], context)[:n_windows]
    if len(windows) < n_windows:
        raise RuntimeError(f"only {len(windows)} windows from {documents} documents")
    bos = tokenizer.bos_token_id
    batches = windows.split(batch)

    if method == "forward":
        def work():
            with torch.no_grad():
                for ids in batches:
                    positions, mask = document_attention(ids, bos)
                    model(input_ids=ids, position_ids=positions, attention_mask=mask)
    elif method == "store":
        directory = tempfile.mkdtemp(prefix="bench-cache-")

        def work():
            return cache_activations(model, windows, LAYER, directory, batch_size=batch, shard_rows=shard_rows,
                                     progress=False)
    elif method == "run_with_cache":
        tl_model = load_model("course", backend="transformer_lens")

        def work():
            with torch.no_grad():
                return [tl_model.run_with_cache(ids)[1] for ids in batches]
    else:
        work = sae_lens_work(load_model("course", backend="transformer_lens"), windows, context, batch)
    seconds, peak_mib = measure(work)
    return {"method": method, "tokens": windows.numel(), "seconds": seconds,
            "tokens_per_s": windows.numel() / seconds, "peak_mib": peak_mib}


def sae_lens_work(tl_model, windows: torch.Tensor, context: int, batch: int) -> Callable[[], int]:
    """A function that reads every token's activation at ``LAYER`` from sae-lens's ``ActivationsStore``."""
    from datasets import Dataset
    from sae_lens.training.activations_store import ActivationsStore

    dataset = Dataset.from_dict({"tokens": windows.tolist()})
    train_batch = 4096
    store = ActivationsStore(
        model=tl_model, dataset=dataset, streaming=False, hook_name=f"blocks.{LAYER}.hook_resid_post",
        hook_head_index=None, context_size=context, d_in=tl_model.cfg.d_model, n_batches_in_buffer=64,
        total_training_tokens=windows.numel(), store_batch_size_prompts=batch, train_batch_size_tokens=train_batch,
        prepend_bos=False, normalize_activations="none", device=torch.device("cpu"), dtype="float32",
        activations_mixing_fraction=0.0,
    )

    def work() -> int:
        served = 0
        while served < windows.numel():
            served += len(store.next_batch())
        return served

    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=400)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--shard-rows", type=int, default=65_536)
    parser.add_argument("--method", choices=METHODS, help="run one method in this process and print JSON")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    settings = [str(args.windows), str(args.context), str(args.batch), str(args.shard_rows)]
    if args.method:
        print(json.dumps(run_method(args.method, args.windows, args.context, args.batch, args.shard_rows)))
        return
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    rows = []
    for method in METHODS:
        command = [sys.executable, __file__, "--method", method, "--windows", settings[0], "--context", settings[1],
                   "--batch", settings[2], "--shard-rows", settings[3]]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
    print(f"\nlayer {LAYER} resid_post of {rows[0]['tokens']:,} tokens ({args.windows} windows of {args.context}), "
          f"batches of {args.batch} windows\n")
    print("| method | seconds | tokens/s | share of the forward pass | peak memory growth (MiB) |")
    print("|---|---|---|---|---|")
    limit = rows[0]["tokens_per_s"]
    for row in rows:
        print(f"| {row['method']} | {row['seconds']:.2f} | {row['tokens_per_s']:,.0f} | "
              f"{row['tokens_per_s'] / limit:.2f} | {row['peak_mib']:.0f} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
