"""Activation patching vs attribution patching: time on the same grid, and sparse-feature-circuit discovery time.

On the course model (or ``--shape gpt2-small``: a random checkpoint of a real model's shape), for
``--pairs`` prompt pairs of each task:

- ``one patch per pass``: activation patching with one corrupted forward pass per (layer, head, position),
  as the course did before its sweeps were batched (``--skip-one-per-pass`` leaves it out);
- ``activation patching``: the same grid with many patches per pass from the patched layer on, unchanged
  entries skipped (``utils.patching.patch_head_positions``);
- ``attribution patching``: one forward and one backward pass for the whole grid (``attribution_patch_head_positions``);
- ``integrated gradients``: ``--steps`` forward and backward passes per layer;
- ``feature circuit``: node effects over the shipped SAEs of every layer, then the edges between the top
  ``--nodes`` nodes (``utils.feature_circuits``), agreement only, on the course model only (its SAEs).

Printed: seconds for each, the speed-up of attribution patching and its correlation with the real
effects. Run it on an otherwise idle machine; nothing is asserted.

    .venv/bin/python benchmarks/patching.py
    .venv/bin/python benchmarks/patching.py --shape gpt2-small --pairs 8 --skip-one-per-pass
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


@torch.no_grad()
def one_patch_per_pass(model: Any, tokens: Any) -> torch.Tensor:
    """The head x position grid with one forward pass per patch: the baseline the batched sweep replaced."""
    from utils import architecture
    from utils.hooks import editing_head_outputs
    from utils.patching import baseline, clean_head_outputs, logit_difference, normalised_metric

    base, clean = baseline(model, tokens), clean_head_outputs(model, tokens.clean)
    n_layers, n_heads, n_pos = architecture.n_layers(model), model.config.num_attention_heads, tokens.clean.shape[1]
    effects = torch.zeros(n_layers, n_heads, n_pos)
    for layer in range(n_layers):
        for head in range(n_heads):
            for pos in range(n_pos):
                def patch(z: torch.Tensor, layer: int = layer, head: int = head, pos: int = pos) -> torch.Tensor:
                    patched = z.clone()
                    patched[:, pos, head] = clean[layer][:, pos, head]
                    return patched
                with editing_head_outputs(model, layer, patch):
                    difference = logit_difference(model(tokens.corrupted).logits, tokens.answer, tokens.wrong).mean()
                effects[layer, head, pos] = normalised_metric(difference, base.clean, base.corrupted)
    return effects


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--shape", help="a random checkpoint of this real model's shape: gpt2-small or pythia-160m")
    parser.add_argument("--skip-one-per-pass", action="store_true", help="leave out the one-patch-per-pass baseline")
    args = parser.parse_args()

    from utils.feature_circuits import edge_effects, node_effects
    from utils.models import load_model, load_tokenizer, random_checkpoint_of_shape
    from utils.patching import (
        attribution_patch_head_positions, correlation, integrated_gradients_head_positions, patch_head_positions,
        task_pairs, tokenize_pairs,
    )
    from utils.sae import load_shipped_sae

    scratch = tempfile.TemporaryDirectory()
    name = "course" if args.shape is None else random_checkpoint_of_shape(args.shape, Path(scratch.name) / args.shape)
    model, tokenizer = load_model(name), load_tokenizer(name)
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"model {args.shape or 'course'}, {args.pairs} pairs\n")
    print("| task | grid (layer x head x position) | one patch per pass (s) | activation patching (s) "
          "| attribution patching (s) | r | integrated gradients (s) | r |")
    print("|---|---|---|---|---|---|---|---|")
    for task in ("ioi", "agreement"):
        tokens = tokenize_pairs(tokenizer, task_pairs(task, args.pairs))
        loop = "skipped"
        if not args.skip_one_per_pass:
            seconds, _ = timed(lambda: one_patch_per_pass(model, tokens))
            loop = f"{seconds:.2f}"
        batched, actual = timed(lambda: patch_head_positions(model, tokens, progress=False))
        fast, estimate = timed(lambda: attribution_patch_head_positions(model, tokens))
        path, integrated = timed(lambda: integrated_gradients_head_positions(model, tokens, args.steps))
        grid = " x ".join(map(str, actual.shape))
        print(f"| {task} | {grid} | {loop} | {batched:.2f} | {fast:.3f} | {correlation(actual, estimate):.3f} "
              f"| {path:.2f} | {correlation(actual, integrated):.3f} |")
    if args.shape is not None:
        return

    saes = {layer: load_shipped_sae(f"resid_post.{layer}") for layer in range(model.config.n_layer)}
    tokens = tokenize_pairs(tokenizer, task_pairs("agreement", args.pairs))
    nodes_seconds, effects = timed(lambda: node_effects(model, saes, tokens))
    top = [node for node, _ in effects.ranked()[:args.nodes]]
    edges_seconds, edges = timed(lambda: edge_effects(model, saes, tokens, top))
    print(f"\nfeature circuit (agreement, {args.pairs} pairs, SAEs of {model.config.n_layer} layers): node effects "
          f"{nodes_seconds:.2f} s, edges between the top {args.nodes} nodes {edges_seconds:.2f} s ({len(edges)} edges)")


if __name__ == "__main__":
    main()
