"""How much the KV cache saves: generation tokens/s with and without it, on the course model.

For each batch size, generates ``--new`` greedy tokens after a prompt of ``--prompt`` tokens

1. with ``utils.decoding.generate`` (KV cache: one new position per step),
2. with a loop that re-reads the whole sequence at every step (no cache),
3. with ``model.generate`` (transformers' loop, KV cache),

and prints new tokens per second for each (best of ``--repeats``), after checking that the three
give the same tokens.

    .venv/bin/python benchmarks/generation.py
    .venv/bin/python benchmarks/generation.py --batch 1 32 --new 200 --json out.json

Run it on an otherwise idle machine; the numbers are printed, nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable

import torch

from utils.decoding import generate
from utils.models import load_model


@torch.no_grad()
def generate_without_cache(model: torch.nn.Module, input_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Greedy decoding that runs the model on the whole sequence at every step."""
    tokens = input_ids
    for _ in range(max_new_tokens):
        next_tokens = model(tokens).logits[:, -1].argmax(dim=-1, keepdim=True)
        tokens = torch.cat([tokens, next_tokens], dim=1)
    return tokens


def best_seconds(run: Callable[[], torch.Tensor], repeats: int) -> tuple[float, torch.Tensor]:
    best, tokens = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        tokens = run()
        best = min(best, time.perf_counter() - started)
    return best, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--prompt", type=int, default=16, help="prompt length in tokens")
    parser.add_argument("--new", type=int, default=200, help="tokens to generate")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    model = load_model("course")
    model.generation_config.eos_token_id = None   # every loop generates exactly --new tokens
    rows = []
    for batch in args.batch:
        generator = torch.Generator().manual_seed(0)
        input_ids = torch.randint(1, model.config.vocab_size, (batch, args.prompt), generator=generator)
        loops = {
            "generate (KV cache)": lambda: generate(model, input_ids, args.new),
            "no cache": lambda: generate_without_cache(model, input_ids, args.new),
            # an explicit mask: with pad_token_id = 0 = BOS, transformers would otherwise mask out the BOS
            "model.generate": lambda: model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                                     do_sample=False, max_new_tokens=args.new, pad_token_id=0),
        }
        results = {name: best_seconds(run, args.repeats) for name, run in loops.items()}
        reference = results["generate (KV cache)"][1]
        for name, (seconds, tokens) in results.items():
            if not torch.equal(tokens, reference):
                raise SystemExit(f"{name} gave different tokens from generate at batch {batch}")
            rows.append({"batch": batch, "loop": name, "seconds": seconds, "new_tokens_per_s": batch * args.new / seconds})
    print(f"\nprompt {args.prompt} tokens, {args.new} new tokens, greedy\n")
    print("| batch | loop | seconds | new tokens/s |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['batch']} | {row['loop']} | {row['seconds']:.2f} | {row['new_tokens_per_s']:,.0f} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
