"""SAE training throughput on this machine: the from-scratch trainer vs sae-lens's, against the matmul ceiling.

Both train the same SAE (d_in 128 → d_sae 512, ReLU + L1 λ=5, Adam lr 2e-3, batches of 1024) on the same
cached residual activations of the course model (``resid_post.2`` of held-out course documents), so the
numbers compare the training loops, not the language model:

* activations/s of :func:`utils.sae.train_sae` and of sae-lens's ``SAETrainer`` (fed the cached batches);
* the GFLOP/s that makes (``12 · d_in · d_sae`` FLOPs per activation: encoder and decoder, forward and
  backward) as a share of the machine's fp32 matmul GFLOP/s;
* seconds to reach a fixed explained variance on held-out rows (checked every 20 steps, the checks' time
  excluded);
* the end-to-end rate of ``LanguageModelSAETrainingRunner`` (the language model's forward passes included),
  as the shipped SAEs were trained.

    .venv/bin/python benchmarks/sae_training.py            # about 3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from training_throughput import matmul_gflops  # noqa: E402

from utils.models import load_model, load_tokenizer  # noqa: E402
from utils.sae import (  # noqa: E402
    SparseAutoencoder, evaluation_batch, explained_variance, real_positions, site_activations, train_sae,
    train_with_sae_lens,
)

D_SAE, L1, LR, BATCH, SITE = 512, 5.0, 2e-3, 1024, "resid_post.2"


def cached_rows(n_documents: int) -> torch.Tensor:
    """``[rows, 128]`` activations at ``SITE`` of held-out course documents (BOS and padding dropped)."""
    model, tokenizer = load_model("course"), load_tokenizer("course")
    input_ids, mask = evaluation_batch(tokenizer, n_documents, seed=31)
    return site_activations(model, input_ids, mask, SITE)[real_positions(mask)]


class TimeToTarget:
    """Checks an SAE's explained variance on held-out rows every ``every`` steps; the checks' time is not counted."""

    def __init__(self, held_out: torch.Tensor, target: float, every: int = 20) -> None:
        self.held_out, self.target, self.every = held_out, target, every
        self.started = time.perf_counter()
        self.excluded = 0.0
        self.reached: float | None = None

    @torch.no_grad()
    def check(self, step: int, sae: torch.nn.Module) -> None:
        if self.reached is not None or step % self.every:
            return
        started = time.perf_counter()
        ev = float(explained_variance(self.held_out, sae(self.held_out)))
        self.excluded += time.perf_counter() - started
        if ev >= self.target:
            self.reached = started - self.started - self.excluded


def from_scratch(train: torch.Tensor, held_out: torch.Tensor, steps: int, target: float) -> tuple[float, float | None]:
    """(activations/s, seconds to the target explained variance) of utils.sae.train_sae."""
    sae = SparseAutoencoder(train.shape[1], D_SAE)
    clock = TimeToTarget(held_out, target)
    log = train_sae(sae, train, steps, lr=LR, l1_coefficient=L1, batch_size=BATCH, progress=False, on_step=clock.check)
    return steps * BATCH / (log.seconds - clock.excluded), clock.reached


def sae_lens_trainer(train: torch.Tensor, held_out: torch.Tensor, steps: int, target: float
                     ) -> tuple[float, float | None]:
    """(activations/s, seconds to the target explained variance) of sae-lens's SAETrainer on the same batches."""
    from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=train.shape[1], d_sae=D_SAE, l1_coefficient=L1))
    clock = TimeToTarget(held_out, target)

    def batches() -> Iterator[torch.Tensor]:
        generator = torch.Generator().manual_seed(0)
        step = 0
        while True:
            for batch in train[torch.randperm(len(train), generator=generator)].split(BATCH):
                if len(batch) == BATCH:
                    clock.check(step, sae)
                    step += 1
                    yield batch

    cfg = SAETrainerConfig(total_training_samples=steps * BATCH, train_batch_size_samples=BATCH, lr=LR,
                           lr_end=LR, n_batches_for_norm_estimate=1)
    started = time.perf_counter()
    SAETrainer(cfg, sae, batches()).fit()
    seconds = time.perf_counter() - started - clock.excluded
    return steps * BATCH / seconds, clock.reached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--documents", type=int, default=3000)
    parser.add_argument("--target", type=float, default=0.7, help="explained variance to time")
    parser.add_argument("--runner-tokens", type=int, default=200_000)
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")

    ceiling = matmul_gflops(2048, 5)
    rows = cached_rows(args.documents)
    held_out, train = rows[:4096], rows[4096:]
    print(f"fp32 2048² matmul: {ceiling:.1f} GFLOP/s; {len(train)} training rows at {SITE}")
    flops_per_activation = 12 * train.shape[1] * D_SAE
    for name, fn in (("from scratch (utils.sae.train_sae)", from_scratch), ("sae-lens SAETrainer", sae_lens_trainer)):
        torch.manual_seed(0)
        rate, reached = fn(train, held_out, args.steps, args.target)
        gflops = rate * flops_per_activation / 1e9
        when = f"{reached:.1f} s" if reached is not None else f"not within {args.steps} steps"
        print(f"{name}: {rate:,.0f} activations/s = {gflops:.1f} GFLOP/s ({gflops / ceiling:.0%} of the matmul ceiling); "
              f"explained variance {args.target} after {when}")

    tl_model, tokenizer = load_model("course", backend="transformer_lens"), load_tokenizer("course")
    started = time.perf_counter()
    train_with_sae_lens(tl_model, tokenizer, SITE, d_sae=D_SAE, training_tokens=args.runner_tokens, n_documents=10_000)
    seconds = time.perf_counter() - started
    print(f"sae-lens LanguageModelSAETrainingRunner, end to end (corpus, LM forward, training): "
          f"{args.runner_tokens / seconds:,.0f} activations/s ({seconds:.0f} s for {args.runner_tokens:,} tokens)")


if __name__ == "__main__":
    main()
