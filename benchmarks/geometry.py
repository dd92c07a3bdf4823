"""The geometry chapter's sweeps on this machine (issue 22): toy models of superposition, per-layer
probes, the causal inner product.

* the toy-model sweep: ``n_sparsities`` instances of 5 -> 2 features trained side by side in one
  ``ToyModel`` (``utils.superposition.train_toy_model``), against the same runs one at a time;
* the probe sweep: residual streams of every layer at the last token of labelled stories
  (``utils.steering.last_token_activations``), then one probe per layer trained in one batch
  (``utils.probes.fit_probes``), against one ``fit_probes`` call per layer;
* the world hierarchy's parent-child cosines on the whitened unembedding with their random baseline.

    .venv/bin/python benchmarks/geometry.py                # about a minute on 2 cores
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time
from collections.abc import Callable
from typing import Any

import torch

from utils.directions import labelled_stories
from utils.geometry import hierarchy_cosines, random_hierarchy_cosines, whitened_unembedding, world_hierarchy_tokens
from utils.models import load_model, load_tokenizer
from utils.probes import fit_probes
from utils.steering import last_token_activations
from utils.superposition import ToyConfig, train_toy_model


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def toy_sweep(sparsities: tuple[float, ...], steps: int) -> dict[str, float]:
    config = ToyConfig(n_features=5, n_hidden=2, sparsity=sparsities, importance_decay=0.9)
    together, _ = timed(lambda: train_toy_model(config, steps=steps, progress=False))
    one_by_one, _ = timed(lambda: [train_toy_model(ToyConfig(n_features=5, n_hidden=2, sparsity=(s,),
                                                             importance_decay=0.9), steps=steps, progress=False)
                                   for s in sparsities])
    return {"batched": together, "one at a time": one_by_one}


def probe_sweep(n_stories: int) -> dict[str, float]:
    model, tokenizer = load_model("course"), load_tokenizer("course")
    positive, negative = labelled_stories("positive", n_stories // 2)
    labels = torch.tensor([1] * len(positive) + [0] * len(negative))
    caching, activations = timed(lambda: last_token_activations(model, tokenizer, positive + negative))
    batched, _ = timed(lambda: fit_probes(activations, labels))
    per_layer, _ = timed(lambda: [fit_probes(activations[layer:layer + 1], labels)
                                  for layer in range(activations.shape[0])])
    return {"activations (every layer)": caching, "probes, batched": batched, "probes, one layer at a time": per_layer}


def hierarchy() -> dict[str, float]:
    model, tokenizer = load_model("course"), load_tokenizer("course")
    tokens = world_hierarchy_tokens(tokenizer)
    whitening, g = timed(lambda: whitened_unembedding(model))
    real, _ = timed(lambda: hierarchy_cosines(g, tokens))
    baseline, _ = timed(lambda: [random_hierarchy_cosines(g, [len(ids) for ids in children.values()], n=20)
                                 for children in tokens.values()])
    return {"whitening": whitening, "world hierarchy": real, "random baseline (20 per parent)": baseline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsities", type=int, default=10, help="toy-model instances (default 10)")
    parser.add_argument("--steps", type=int, default=2_000, help="toy-model training steps (default 2000)")
    parser.add_argument("--stories", type=int, default=400, help="labelled stories for the probes (default 400)")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, commit {commit}")
    sparsities = tuple(1 - 0.7 ** k for k in range(args.sparsities))
    sections = {f"toy models: {args.sparsities} sparsities x {args.steps} steps": toy_sweep(sparsities, args.steps),
                f"probes: {args.stories} stories": probe_sweep(args.stories),
                "hierarchy (causal inner product)": hierarchy()}
    for title, timings in sections.items():
        print(f"\n{title}")
        for name, seconds in timings.items():
            print(f"  {name:32} {seconds:7.2f} s")


if __name__ == "__main__":
    main()
