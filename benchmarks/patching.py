"""Activation patching vs attribution patching: time on the same grid, and sparse-feature-circuit discovery time.

On the course model, for ``--pairs`` prompt pairs of each task:

- ``activation patching``: one corrupted forward pass per (layer, head, position), ``utils.patching.patch_head_positions``;
- ``attribution patching``: one forward and one backward pass for the whole grid (``attribution_patch_head_positions``);
- ``integrated gradients``: ``--steps`` forward and backward passes per layer;
- ``feature circuit``: node effects over the shipped SAEs of every layer, then the edges between the top
  ``--nodes`` nodes (``utils.feature_circuits``), agreement only.

Printed: seconds for each, the speed-up of attribution patching and its correlation with the real
effects. Run it on an otherwise idle machine; nothing is asserted.

    .venv/bin/python benchmarks/patching.py
"""

from __future__ import annotations

import argparse
import platform
import time
from typing import Any, Callable

import torch


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--nodes", type=int, default=20)
    args = parser.parse_args()

    from utils.feature_circuits import edge_effects, node_effects
    from utils.models import load_model, load_tokenizer
    from utils.patching import (
        attribution_patch_head_positions, correlation, integrated_gradients_head_positions, patch_head_positions,
        task_pairs, tokenize_pairs,
    )
    from utils.sae import load_shipped_sae

    model, tokenizer = load_model("course"), load_tokenizer("course")
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}\n")
    print("| task | grid (layer x head x position) | activation patching (s) | attribution patching (s) | speed-up "
          "| r | integrated gradients (s) | r |")
    print("|---|---|---|---|---|---|---|---|")
    for task in ("ioi", "agreement"):
        tokens = tokenize_pairs(tokenizer, task_pairs(task, args.pairs))
        slow, actual = timed(lambda: patch_head_positions(model, tokens, progress=False))
        fast, estimate = timed(lambda: attribution_patch_head_positions(model, tokens))
        path, integrated = timed(lambda: integrated_gradients_head_positions(model, tokens, args.steps))
        grid = " x ".join(map(str, actual.shape))
        print(f"| {task} | {grid} | {slow:.2f} | {fast:.3f} | {slow / fast:.0f}x | {correlation(actual, estimate):.3f} "
              f"| {path:.2f} | {correlation(actual, integrated):.3f} |")

    saes = {layer: load_shipped_sae(f"resid_post.{layer}") for layer in range(model.config.n_layer)}
    tokens = tokenize_pairs(tokenizer, task_pairs("agreement", args.pairs))
    nodes_seconds, effects = timed(lambda: node_effects(model, saes, tokens))
    top = [node for node, _ in effects.ranked()[:args.nodes]]
    edges_seconds, edges = timed(lambda: edge_effects(model, saes, tokens, top))
    print(f"\nfeature circuit (agreement, {args.pairs} pairs, SAEs of {model.config.n_layer} layers): node effects "
          f"{nodes_seconds:.2f} s, edges between the top {args.nodes} nodes {edges_seconds:.2f} s ({len(edges)} edges)")


if __name__ == "__main__":
    main()
