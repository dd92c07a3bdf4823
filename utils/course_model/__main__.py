"""Command line: ``python -m utils.course_model train|evaluate``."""

from __future__ import annotations

import argparse
from pathlib import Path

from utils.course_model.train import COURSE_MODEL_DIR, PACKINGS, TrainConfig, train
from utils.world.corpus import RECIPES


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m utils.course_model", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train_parser = commands.add_parser("train", help="generate the corpus and train the course model")
    train_parser.add_argument("--out", type=Path, default=COURSE_MODEL_DIR, help="checkpoint directory")
    train_parser.add_argument("--tokens", type=int, default=TrainConfig.tokens, help="training tokens")
    train_parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    train_parser.add_argument("--recipe", choices=sorted(RECIPES), default=TrainConfig.recipe,
                              help="the corpus recipe (utils.world.corpus.RECIPES)")
    train_parser.add_argument("--context-length", type=int, default=TrainConfig.context_length,
                              help="tokens per training window (and the model's context)")
    train_parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size, help="windows per step")
    train_parser.add_argument("--packing", choices=sorted(PACKINGS), default=TrainConfig.packing,
                              help="'stream' cuts one stream of documents into windows; 'whole' cuts no document")
    train_parser.add_argument("--start-from", type=Path, default=None,
                              help="another run's first_phase_state folder: start this recipe's finish from it")
    evaluate_parser = commands.add_parser("evaluate", help="evaluate a checkpoint and write the model card table")
    evaluate_parser.add_argument("--model", default="course", help="'course', a local checkpoint directory or a hub name")
    evaluate_parser.add_argument("--out", type=Path, default=None, help="where to write the JSON table")
    evaluate_parser.add_argument("--n", type=int, default=200, help="held-out prompts per metric")
    args = parser.parse_args(argv)
    if args.command == "train":
        config = TrainConfig(tokens=args.tokens, seed=args.seed, recipe=args.recipe, context_length=args.context_length,
                             batch_size=args.batch_size, packing=args.packing)
        manifest = train(config, out_dir=args.out, start_from=args.start_from)
        print(f"wrote {args.out}: {manifest['tokens_trained']:,} tokens, final loss {manifest['final_loss']:.3f}")
    else:
        from utils.course_model.evaluate import main as evaluate_main

        evaluate_main(args.model, args.out, args.n)


if __name__ == "__main__":
    main()
