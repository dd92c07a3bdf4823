"""How fast this machine trains the course model, as a fraction of what its CPU can do.

Measures, on the current torch thread count:

1. fp32 matrix multiply throughput (GFLOP/s) on square matrices, the ceiling for training;
2. the course model's training throughput (tokens/s) with the shipped configuration
   (``TrainConfig``: batch, context, width, depth), on random tokens packed as documents of 40
   tokens, forward + backward + AdamW;
3. the model FLOPs per token (6 x parameters, plus attention) and hence the share of the
   matmul ceiling that training reaches.

    .venv/bin/python benchmarks/training_throughput.py             # defaults: 2048^2 matmul, 8 steps
    .venv/bin/python benchmarks/training_throughput.py --steps 20 --json out.json

Run it on an otherwise idle machine; the numbers are printed, nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from tqdm.auto import tqdm

from utils.course_model.train import TrainConfig, build_model, document_inputs


def matmul_gflops(size: int, repeats: int) -> float:
    """Best-of-``repeats`` fp32 GFLOP/s of a ``size`` x ``size`` matrix product."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def training_tokens_per_second(config: TrainConfig, steps: int) -> tuple[float, int]:
    """Median tokens/s of ``steps`` training steps (after two warm-up steps) and the parameter count."""
    model = build_model(config, config.vocab_size)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    batch = torch.randint(1, config.vocab_size, (config.batch_size, config.context_length))
    batch[:, ::40] = 0  # a document starts every 40 tokens, about the corpus's average
    position_ids, attention_mask = document_inputs(batch, eos=0)
    seconds = []
    for _ in tqdm(range(steps + 2), desc="training steps", unit="step"):
        started = time.perf_counter()
        model(input_ids=batch, labels=batch, position_ids=position_ids, attention_mask=attention_mask).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - started)
    median = sorted(seconds[2:])[len(seconds[2:]) // 2]
    return batch.numel() / median, sum(p.numel() for p in model.parameters())


def flops_per_token(config: TrainConfig, parameters: int) -> float:
    """Training FLOPs per token: 6 per parameter (forward + backward) plus the attention scores
    and their weighted sum (6 * n_layer * context * d_model, Kaplan et al. 2020)."""
    return 6 * parameters + 6 * config.n_layer * config.context_length * config.d_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048, help="matmul size")
    parser.add_argument("--steps", type=int, default=8, help="timed training steps")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    config = TrainConfig()
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    gflops = matmul_gflops(args.size, repeats=5)
    tokens_per_second, parameters = training_tokens_per_second(config, args.steps)
    model_gflops = flops_per_token(config, parameters) * tokens_per_second / 1e9
    results = {
        "threads": torch.get_num_threads(), "matmul_size": args.size, "matmul_gflops": round(gflops, 1),
        "parameters": parameters, "training_tokens_per_second": round(tokens_per_second),
        "training_gflops": round(model_gflops, 1), "share_of_matmul_ceiling": round(model_gflops / gflops, 3),
        "minutes_for_shipped_run": round(config.tokens / tokens_per_second / 60, 1),
    }
    for key, value in results.items():
        print(f"{key:28s} {value}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=1)


if __name__ == "__main__":
    main()
