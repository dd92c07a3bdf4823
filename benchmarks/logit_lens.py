"""Chapter 4 on the course model: the seconds each step of the chapter takes, and the numbers it shows.

Steps: the logit lens on the 48 facts, 48 agreement and 48 IOI prompts (answer rank and probability
by layer, formation layers); direct logit attribution on the same prompts; the logit lens's and the
shipped tuned lens's KL to the final distribution on 100 held-out documents; training a tuned lens
for ``--steps`` steps (what a notebook run on another MODEL does). Nothing is asserted.

    .venv/bin/python benchmarks/logit_lens.py
    .venv/bin/python benchmarks/logit_lens.py --steps 100 --json logit_lens.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from utils.logit_lens import (
    direct_logit_attribution, encode_prompts, formation_layers, lens_prompts, prompt_answers_by_layer,
)
from utils.models import load_model, load_tokenizer
from utils.tuned_lens import compare_lenses, load_tuned_lens, train_tuned_lens


def timed(name: str, work: Callable[[], Any], timings: dict[str, float]) -> Any:
    """Run ``work()``, record its seconds under ``name``, return its result."""
    start = time.perf_counter()
    result = work()
    timings[name] = round(time.perf_counter() - start, 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="tuned-lens training steps to time")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    timings: dict[str, float] = {}
    model, tokenizer = timed("load", lambda: (load_model("course"), load_tokenizer("course")), timings)
    numbers: dict[str, Any] = {}
    for family in ("facts", "agreement", "ioi"):
        tokens = encode_prompts(tokenizer, lens_prompts(family))
        result = timed(f"lens {family}", lambda: prompt_answers_by_layer(model, tokens), timings)
        correct = result.logit_differences > 0 if family == "agreement" else result.ranks == 1
        layers = formation_layers(correct)
        numbers[family] = {"correct at the last layer": round(float(correct[-1].float().mean()), 3),
                           "formation layers": torch.bincount(layers[layers >= 0], minlength=5).tolist()}
        attribution = timed(f"DLA {family}", lambda: direct_logit_attribution(
            model, tokens.input_ids, tokens.answer_ids, tokens.contrast_ids, position=tokens.positions), timings)
        numbers[family]["DLA max error"] = float((attribution.contributions.sum(0) - attribution.logit_difference)
                                                 .abs().max())
        numbers[family]["DLA top"] = attribution.top(3)
    lens = timed("load tuned lens", lambda: load_tuned_lens(model), timings)
    kls = timed("KL, 100 documents", lambda: compare_lenses(model, tokenizer, lens), timings)
    numbers["KL"] = {name: [round(v, 3) for v in kl.tolist()] for name, kl in kls.items()}
    timed(f"train tuned lens, {args.steps} steps", lambda: train_tuned_lens(model, tokenizer, steps=args.steps), timings)
    for name, seconds in timings.items():
        print(f"{name:32s} {seconds:8.2f} s")
    print(json.dumps(numbers))
    if args.json:
        args.json.write_text(json.dumps({"timings": timings, "numbers": numbers}, indent=1) + "\n")


if __name__ == "__main__":
    main()
