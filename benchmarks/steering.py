"""Steered generation throughput: what a steering hook costs, with plain hooks, TransformerLens and nnsight.

Greedy generation of ``--new-tokens`` tokens (24: before any story ends, so no method meets the end-of-text
token, at which their stopping rules differ) from ``--prompts`` story openings of the course model,
one prompt at a time (TransformerLens and nnsight generate one sequence here), KV cache on:

- ``hooks``: ``model.generate`` unsteered, and inside ``utils.steering.steer`` (a forward hook on one block);
- ``transformer_lens``: ``HookedTransformer.generate`` unsteered, and with the steering ``fwd_hooks``;
- ``nnsight``: ``utils.steering.generate_steered_nnsight`` (one ``generate`` trace, edited at every step),
  with alpha 0 and alpha 4, against ``model.generate`` on the same wrapped model.

Each method also checks that its steered tokens equal the hooks' ones. Printed: new tokens/s for
each (method, steered) pair and the steering overhead.

    .venv/bin/python benchmarks/steering.py
    .venv/bin/python benchmarks/steering.py --prompts 16 --new-tokens 64

Run it on an otherwise idle machine; the numbers are printed, nothing is asserted.
"""

from __future__ import annotations

import argparse
import platform
import time
from typing import Callable

import torch

LAYER, ALPHA = 0, 4.0


def tokens_per_second(generate: Callable[[torch.Tensor], torch.Tensor], prompts: list[torch.Tensor]) -> tuple[float, list]:
    """New tokens per second of ``generate`` over ``prompts`` (one warm-up call first), and its outputs."""
    generate(prompts[0])
    start = time.perf_counter()
    outputs = [generate(input_ids) for input_ids in prompts]
    seconds = time.perf_counter() - start
    return sum(o.shape[-1] for o in outputs) / seconds, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=24)
    args = parser.parse_args()

    from utils.models import load_model, load_tokenizer
    from utils.steering import (
        caa_vectors, contrastive_pairs, generate_steered_nnsight, generate_steered_transformer_lens, steer,
        story_openings, unit,
    )

    torch.manual_seed(0)
    model, tokenizer = load_model("course"), load_tokenizer("course")
    tl_model, nn_model = load_model("course", backend="transformer_lens"), load_model("course", backend="nnsight")
    vector = unit(caa_vectors(model, tokenizer, contrastive_pairs("positive", 64))[LAYER])
    prompts = [torch.tensor([[tokenizer.bos_token_id, *tokenizer(text)["input_ids"]]])
               for text in story_openings("positive", args.prompts)]
    n, pad = args.new_tokens, tokenizer.eos_token_id

    def hf(input_ids: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model.generate(input_ids, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                  pad_token_id=pad)[:, input_ids.shape[1]:]

    def hf_steered(input_ids: torch.Tensor) -> torch.Tensor:
        with steer(model, LAYER, vector, ALPHA):
            return hf(input_ids)

    def tl(input_ids: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return tl_model.generate(input_ids, max_new_tokens=n, do_sample=False, stop_at_eos=False, verbose=False,
                                     use_past_kv_cache=True, prepend_bos=False)[:, input_ids.shape[1]:]

    def nn_unsteered(input_ids: torch.Tensor) -> torch.Tensor:
        return generate_steered_nnsight(nn_model, input_ids, LAYER, vector, 0.0, n)

    runs = {
        ("hooks", "no"): hf, ("hooks", "yes"): hf_steered,
        ("transformer_lens", "no"): tl,
        ("transformer_lens", "yes"): lambda ids: generate_steered_transformer_lens(tl_model, ids, LAYER, vector, ALPHA, n),
        ("nnsight", "alpha 0"): nn_unsteered,
        ("nnsight", "yes"): lambda ids: generate_steered_nnsight(nn_model, ids, LAYER, vector, ALPHA, n),
    }
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"\n{args.prompts} prompts, {n} new greedy tokens each, steering layer {LAYER}, alpha {ALPHA:g}\n")
    results = {key: tokens_per_second(generate, prompts) for key, generate in runs.items()}
    reference = results["hooks", "yes"][1]
    print("| method | steered | new tokens/s | same tokens as hooks (steered) |")
    print("|---|---|---|---|")
    for (method, steered), (speed, outputs) in results.items():
        same = all(torch.equal(a, b) for a, b in zip(outputs, reference)) if steered == "yes" else ""
        print(f"| {method} | {steered} | {speed:,.0f} | {same} |")


if __name__ == "__main__":
    main()
