"""What LoRA saves: training tokens/s and peak memory of LoRA against full fine-tuning on the course model.

Each method runs in its own Python process (so that its peak resident memory is its own) on the
same chat batches (``utils.world.instructions``): ``--steps`` AdamW steps of ``--batch`` examples.

- ``lora``: ``utils.lora.add_lora`` on GPT-2's ``c_attn``, ``c_proj`` and ``c_fc``, rank ``--rank``;
- ``peft-lora`` and ``peft-dora``: the same with ``peft`` (LoRA, and DoRA with ``use_dora=True``);
- ``full``: every weight trainable.

Printed per method: trainable parameters, AdamW state (MB), tokens/s and seconds per
step and the process's peak RSS (MB).

    .venv/bin/python benchmarks/finetuning.py
    .venv/bin/python benchmarks/finetuning.py --steps 30 --json out.json

Run it on an otherwise idle machine; the numbers are printed, nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys

import torch

METHODS = ("lora", "peft-lora", "peft-dora", "full")


def run_method(method: str, steps: int, batch: int, rank: int) -> dict:
    """Train with one method in this process and return its measurements."""
    from utils.finetune import GPT2_TARGETS, chat_batch, full_finetuning_copy, peft_adapter, train_model
    from utils.lora import add_lora
    from utils.models import load_model, load_tokenizer
    from utils.world.instructions import chat_dataset

    model, tokenizer = load_model("course"), load_tokenizer("course")
    data = chat_batch(tokenizer, chat_dataset(batch * steps, seed=0))
    if method == "lora":
        add_lora(model, GPT2_TARGETS, r=rank, alpha=2 * rank)
    elif method.startswith("peft"):
        model = peft_adapter(model, r=rank, alpha=2 * rank, use_dora=method == "peft-dora")
    else:
        model = full_finetuning_copy(model)
    run = train_model(model, data, steps=steps, batch_size=batch, desc=method)
    return {"method": method, "trainable": run.trainable_parameters, "optimizer_mb": run.optimizer_state_bytes / 2**20,
            "tokens_per_s": run.tokens_per_second, "seconds_per_step": run.seconds_per_step,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--method", choices=METHODS, help="run one method in this process and print JSON")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.method:
        print(json.dumps(run_method(args.method, args.steps, args.batch, args.rank)))
        return
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    rows = []
    for method in METHODS:
        command = [sys.executable, __file__, "--method", method, "--steps", str(args.steps), "--batch", str(args.batch),
                   "--rank", str(args.rank)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
    print(f"\n{args.steps} steps of {args.batch} chat examples, rank {args.rank}\n")
    print("| method | trainable parameters | AdamW state (MB) | tokens/s | s/step | peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['method']} | {row['trainable']:,} | {row['optimizer_mb']:.2f} | {row['tokens_per_s']:,.0f} | "
              f"{row['seconds_per_step']:.3f} | {row['peak_rss_mb']:.0f} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
