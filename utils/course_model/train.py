"""Train the course model: generate the corpus, train the tokenizer, train a GPT-2 on CPU.

Run ``python -m utils.course_model train`` (about 45 minutes on 2 CPU cores with the defaults).
The checkpoint is written in Hugging Face format, with ``train_log.json`` (the loss curve) and
``manifest.json`` (what was trained, how, and the checksums the loader verifies). Every
``checkpoint_every`` steps the run saves its state in ``<out>/training_state/``; run the same
command again after an interruption and it resumes from there (with the same configuration only).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import einops
import numpy as np
import torch
from jaxtyping import Bool, Int
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from utils.course_model.evaluate import in_context_snapshot
from utils.course_model.tokenizer import train_tokenizer
from utils.models import COURSE_MODEL_DIR, write_manifest
from utils.progress import tqdm
from utils.world import generate_corpus
from utils.world.corpus import DEFAULT_RECIPE, recipe


@dataclass
class TrainConfig:
    """Everything that decides the trained model. The defaults make the shipped checkpoint."""

    seed: int = 0
    n_layer: int = 4
    n_head: int = 8
    d_model: int = 128
    context_length: int = 256
    vocab_size: int = 2048
    tokens: int = 44_032_000
    batch_size: int = 16
    learning_rate: float = 2e-3
    min_learning_rate: float = 2e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    tokenizer_documents: int = 60_000
    validation_documents: int = 2_000
    log_every: int = 25
    validate_every: int = 250
    checkpoint_every: int = 500
    recipe: str = DEFAULT_RECIPE
    mix: dict[str, float] | None = None  # the recipe's own mix when None
    packing: str = "whole"  # "stream": cut one stream of documents; "whole": no document cut (pack_whole_documents)

    def __post_init__(self) -> None:
        self.mix = dict(self.mix or recipe(self.recipe).mix)
        if self.packing not in PACKINGS:
            raise ValueError(f"unknown packing {self.packing!r}; choose one of {sorted(PACKINGS)}")

    @property
    def steps(self) -> int:
        return self.tokens // (self.batch_size * self.context_length)


def pack_documents(
    texts: list[str], tokenizer: PreTrainedTokenizerFast, context_length: int,
    token_documents: list[list[int]] | None = None, seed: int = 0,
) -> Int[torch.Tensor, "n_windows context"]:
    """Tokenize ``texts``, join them as ``<|endoftext|> doc <|endoftext|> doc ...`` and cut the
    stream into non-overlapping windows of ``context_length`` tokens (the tail is dropped).

    ``token_documents`` (already token ids) are shuffled in among the texts, in an order fixed by ``seed``.
    """
    eos = tokenizer.eos_token_id
    documents = tokenizer(texts)["input_ids"] if texts else []
    if token_documents:
        documents = documents + token_documents
        random.Random(seed).shuffle(documents)
    ids = [token for doc in documents for token in (eos, *doc)]
    n_windows = len(ids) // context_length
    stream = torch.tensor(ids[: n_windows * context_length], dtype=torch.long)
    return einops.rearrange(stream, "(window position) -> window position", position=context_length)


#: The value of a packed window's unused tail: read as ``<|endoftext|>``, and no loss (the label Hugging Face ignores).
PADDING = -100


def pack_whole_documents(
    texts: list[str], tokenizer: PreTrainedTokenizerFast, context_length: int,
    token_documents: list[list[int]] | None = None, seed: int = 0,
) -> Int[torch.Tensor, "n_windows context"]:
    """Tokenize ``texts`` and pack them, each as ``<|endoftext|> doc``, into windows of
    ``context_length`` tokens without cutting any: a window ends on ``<|endoftext|>`` when it has
    room and on :data:`PADDING` after that. A document longer than a window keeps its first
    ``context_length`` tokens.

    Cutting one stream into windows (:func:`pack_documents`) splits the documents that straddle a
    boundary: the second piece has lost its beginning (an indirect-object sentence its names),
    which is a share of about length / ``context_length`` of the documents. Here each window takes
    the longest document left, then the longest that still fits, until none fits, so the padding
    stays small. ``token_documents`` join the texts, in an order fixed by ``seed``.
    """
    eos = tokenizer.eos_token_id
    documents = [[eos, *doc][:context_length] for doc in (tokenizer(texts)["input_ids"] if texts else [])]
    documents += [[eos, *doc][:context_length] for doc in token_documents or []]
    random.Random(seed).shuffle(documents)
    by_length: list[list[list[int]]] = [[] for _ in range(context_length + 1)]
    for document in documents:
        by_length[len(document)].append(document)
    longest, windows = context_length, []
    while longest > 0:
        if not by_length[longest]:
            longest -= 1
            continue
        window = by_length[longest].pop()
        room = context_length - len(window)
        while room > 0:
            fitting = next((n for n in range(room, 0, -1) if by_length[n]), None)
            if fitting is None:
                break
            window += by_length[fitting].pop()
            room -= fitting
        windows.append(window + [eos] * min(room, 1) + [PADDING] * max(room - 1, 0))
    random.Random(seed).shuffle(windows)
    return torch.tensor(windows, dtype=torch.long).reshape(-1, context_length)


#: How the training script packs documents into windows, by the name TrainConfig.packing gives.
PACKINGS = {"stream": pack_documents, "whole": pack_whole_documents}


def training_inputs(
    windows: Int[torch.Tensor, "batch pos"], eos: int,
) -> dict[str, torch.Tensor]:
    """The keyword arguments of a training forward pass on packed ``windows``: ``input_ids`` (padding
    read as ``<|endoftext|>``), ``labels`` (no loss on padding) and the :func:`document_inputs`."""
    input_ids = windows.masked_fill(windows == PADDING, eos)
    position_ids, attention_mask = document_inputs(input_ids, eos)
    return {"input_ids": input_ids, "labels": windows, "position_ids": position_ids, "attention_mask": attention_mask}


def document_inputs(
    windows: Int[torch.Tensor, "batch pos"], eos: int,
) -> tuple[Int[torch.Tensor, "batch pos"], Bool[torch.Tensor, "batch 1 pos pos"]]:
    """Position ids and attention mask that keep the packed documents of a window apart.

    Each ``<|endoftext|>`` starts a document: positions count from it (so every document sees
    the positions it sees at inference, where a prompt starts at 0) and a token attends only to
    earlier tokens of its own document. Without this, attention is diluted over up to
    ``context_length`` unrelated tokens: in the project's runs without it, no induction head
    had formed after 1,367 steps; with it, they form within 2,000 (see ``train_log.json``).
    """
    starts = windows == eos                                                  # [batch, pos]
    positions = torch.arange(windows.shape[1]).expand_as(windows)            # [batch, pos]
    start_of_document = torch.cummax(torch.where(starts, positions, 0), dim=1).values
    document = torch.cumsum(starts, dim=1)                                   # [batch, pos]
    same_document = einops.rearrange(document, "b q -> b q 1") == einops.rearrange(document, "b k -> b 1 k")
    causal = torch.ones(windows.shape[1], windows.shape[1], dtype=torch.bool).tril()
    mask = einops.rearrange(same_document & causal, "b q k -> b 1 q k")
    return positions - start_of_document, mask


def repeated_random_token_documents(n: int, vocab_size: int, seed: int) -> list[list[int]]:
    """``n`` documents that repeat a sequence of uniformly random token ids (never ``<|endoftext|>``, id 0).

    Each draws 5 to 60 ids and writes them two or three times, with 0 to 8 other random ids
    between the copies: the data that teaches induction on *any* token (Olsson et al. 2022),
    not only on the words that the generator happens to repeat.
    """
    rng = np.random.default_rng(seed)
    documents = []
    for _ in range(n):
        copy = rng.integers(1, vocab_size, size=int(rng.integers(5, 61))).tolist()
        document = list(copy)
        for _ in range(int(rng.integers(1, 3))):
            document += rng.integers(1, vocab_size, size=int(rng.integers(0, 9))).tolist() + copy
        documents.append(document)
    return documents


def training_windows(config: TrainConfig, tokenizer: PreTrainedTokenizerFast) -> Int[torch.Tensor, "n_windows context"]:
    """Generate documents until ``config.tokens`` tokens are packed, in a seeded random order.

    A recipe with a ``finish`` ends on it: its last ``finish_share`` of the windows come from the
    finishing recipe, shuffled among themselves, after the others.
    """
    first, finishing = phase_windows(config)
    if not finishing:
        return _shuffled_windows(config, tokenizer, config.recipe, config.mix, first, config.seed)
    return torch.cat([
        _shuffled_windows(config, tokenizer, config.recipe, config.mix, first, config.seed),
        _shuffled_windows(config, tokenizer, recipe(config.recipe).finish, None, finishing, config.seed + 500_009)])


def phase_windows(config: TrainConfig) -> tuple[int, int]:
    """``(windows of the recipe's first phase, windows of its finish)``; no finish windows without a finish."""
    windows_needed = math.ceil(config.tokens / config.context_length)
    drawn = recipe(config.recipe)
    finishing = round(windows_needed * drawn.finish_share) if drawn.finish is not None else 0
    return windows_needed - finishing, finishing


def first_phase_steps(config: TrainConfig) -> int | None:
    """The steps that see only the first phase's windows, or None for a recipe without a finish."""
    first, finishing = phase_windows(config)
    return first // config.batch_size if finishing else None


def _shuffled_windows(config: TrainConfig, tokenizer: PreTrainedTokenizerFast, recipe_name: str,
                      mix: dict[str, float] | None, windows_needed: int, seed: int
                      ) -> Int[torch.Tensor, "n_windows context"]:
    """``windows_needed`` packed windows of ``recipe_name``'s documents (``mix`` overriding its shares),
    in an order fixed by ``seed``."""
    documents = generate_corpus(10**9, seed=seed, mix=mix, recipe_name=recipe_name)
    chunk_size = 20_000
    n_token_documents = round(chunk_size * recipe(recipe_name).token_repeats)
    chunks, n_windows = [], 0
    with tqdm(total=windows_needed, desc=f"generating corpus ({recipe_name})", unit="window") as progress:
        while n_windows < windows_needed:
            chunk_seed = seed * 100_003 + len(chunks)
            token_documents = repeated_random_token_documents(n_token_documents, len(tokenizer), chunk_seed)
            chunk = PACKINGS[config.packing]([next(documents).text for _ in range(chunk_size)], tokenizer,
                                             config.context_length, token_documents, seed=chunk_seed)
            chunks.append(chunk)
            n_windows += len(chunk)
            progress.update(len(chunk))
    windows = torch.cat(chunks)[:windows_needed]
    order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(seed))
    return windows[order]


def build_model(config: TrainConfig, vocab_size: int) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 of the configured size (tied input and output embeddings)."""
    gpt2_config = GPT2Config(
        vocab_size=vocab_size, n_positions=config.context_length, n_embd=config.d_model,
        n_layer=config.n_layer, n_head=config.n_head, bos_token_id=0, eos_token_id=0,
        # no dropout: every document is seen once, so there is nothing to overfit
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="sdpa")
    torch.manual_seed(config.seed)
    return GPT2LMHeadModel(gpt2_config)


def learning_rate_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay from ``learning_rate`` to ``min_learning_rate``."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return config.min_learning_rate + (config.learning_rate - config.min_learning_rate) * cosine


@torch.no_grad()
def validation_loss(model: GPT2LMHeadModel, windows: Int[torch.Tensor, "n context"], eos: int,
                    batch_size: int = 32) -> float:
    """Mean next-token loss over held-out windows, documents kept apart as in training."""
    model.eval()
    losses = []
    for batch in windows.split(batch_size):
        losses.append(model(**training_inputs(batch, eos)).loss.item())
    model.train()
    return float(np.mean(losses))


def _git_commit() -> str:
    """The commit the code was trained from, with ``-dirty`` when the working tree had changes."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=40"], capture_output=True,
                              text=True, check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def train(config: TrainConfig, out_dir: Path = COURSE_MODEL_DIR, start_from: Path | None = None) -> dict:
    """Train the course model with ``config`` and write the checkpoint to ``out_dir``.

    Resumes from ``out_dir/training_state`` when an earlier run with the same ``config`` was
    interrupted there. A run whose recipe has a finish keeps its state at the end of the first phase in
    ``out_dir/first_phase_state``; ``start_from`` (such a folder of another run) starts this run's finish
    from it, when the two runs differ only in a recipe with the same first phase: the weights are those
    of a run from scratch, in the finish's share of the time. Returns the manifest (also written to
    ``out_dir/manifest.json``).
    """
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    state_dir = out_dir / TRAINING_STATE
    state, started_from = load_training_state(state_dir, config), None
    if state is None and start_from is not None:
        state, started_from = load_first_phase_state(Path(start_from), config), Path(start_from)
    if state is None:
        tokenizer_texts = [doc.text for doc in generate_corpus(
            config.tokenizer_documents, seed=config.seed + 1, mix=config.mix, recipe_name=config.recipe)]
        tokenizer = train_tokenizer(tokenizer_texts, config.vocab_size, config.context_length)
    else:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(started_from or state_dir)
    windows = training_windows(config, tokenizer)
    validation = PACKINGS[config.packing](
        [doc.text for doc in generate_corpus(config.validation_documents, seed=config.seed + 2, mix=config.mix,
                                             recipe_name=config.recipe)],
        tokenizer, config.context_length)
    model = build_model(config, len(tokenizer))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, betas=(0.9, 0.95),
                                  weight_decay=config.weight_decay)
    first_step, log, seconds_before = 0, [], 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        first_step, log, seconds_before = state["step"] + 1, state["log"], state["seconds"]
        print(f"resuming from {started_from or state_dir} at step {first_step:,}")
    started = time.perf_counter() - seconds_before
    batches = windows.split(config.batch_size)[: config.steps]
    finish_starts = first_phase_steps(config)
    progress = tqdm(range(first_step, len(batches)), initial=first_step, total=len(batches), desc="training",
                    unit="step")
    for step in progress:
        batch = batches[step]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, config)
        loss = model(**training_inputs(batch, tokenizer.eos_token_id)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % config.log_every == 0 or step == len(batches) - 1:
            entry = {"step": step, "tokens": (step + 1) * batch.numel(), "loss": loss.item(),
                     "learning_rate": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - started}
            if step % config.validate_every == 0 or step == len(batches) - 1:
                entry["validation_loss"] = validation_loss(model, validation, tokenizer.eos_token_id)
                entry.update(in_context_snapshot(model, tokenizer))
                progress.write(", ".join(f"{k} {v:.3g}" for k, v in entry.items()))
            log.append(entry)
            progress.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % config.checkpoint_every == 0 and step + 1 < len(batches):
            save_training_state(state_dir, config, tokenizer, model, optimizer, step, log,
                                time.perf_counter() - started)
        if step + 1 == finish_starts:
            save_training_state(out_dir / FIRST_PHASE_STATE, config, tokenizer, model, optimizer, step, log,
                                time.perf_counter() - started)
    seconds = time.perf_counter() - started
    manifest = save_checkpoint(model, tokenizer, config, log, seconds, out_dir,
                               started_from=str(started_from) if started_from else None)
    shutil.rmtree(state_dir, ignore_errors=True)
    return manifest


#: The folder inside a checkpoint directory where an unfinished run keeps its state.
TRAINING_STATE = "training_state"
#: The folder where a run keeps its state at the end of its recipe's first phase (``train --start-from``).
FIRST_PHASE_STATE = "first_phase_state"


def save_training_state(state_dir: Path, config: TrainConfig, tokenizer: PreTrainedTokenizerFast,
                        model: GPT2LMHeadModel, optimizer: torch.optim.Optimizer, step: int,
                        log: list[dict[str, float]], seconds: float) -> None:
    """Write what a run needs to resume after ``step``: weights, optimizer, log, tokenizer and config.

    The file is replaced atomically, so an interruption while saving leaves the previous state.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(state_dir)
    (state_dir / "config.json").write_text(json.dumps(asdict(config), indent=1))
    partial = state_dir / "state.pt.partial"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "log": log,
                "seconds": seconds}, partial)
    partial.replace(state_dir / "state.pt")


def load_training_state(state_dir: Path, config: TrainConfig) -> dict | None:
    """The saved state of an interrupted run with ``config``, or None when there is none.

    Raises ValueError, naming each setting that differs, when the state was saved by a run with
    another configuration: resuming it would silently mix two recipes.
    """
    if not (state_dir / "state.pt").exists():
        return None
    differences = _differences(_saved_config(state_dir), asdict(config))
    if differences:
        raise ValueError(
            f"the interrupted run in {state_dir} was trained with another configuration ("
            + "; ".join(differences) + "). Run with the saved settings to resume it, or delete "
            f"{state_dir} to start a new run.")
    return torch.load(state_dir / "state.pt", weights_only=False)


def load_first_phase_state(state_dir: Path, config: TrainConfig) -> dict:
    """The state another run saved at the end of its first phase, for a run with ``config`` to start its finish from.

    Raises ValueError when there is none, when the two configurations differ in more than the recipe, or when
    the two recipes differ before their finish (another mix, other options, another finish share).
    """
    if not (state_dir / "state.pt").exists():
        raise ValueError(f"{state_dir} holds no saved state: pass the {FIRST_PHASE_STATE} folder of a run whose "
                         "recipe has a finish")
    saved = _saved_config(state_dir)
    differences = _differences({**saved, "recipe": config.recipe}, asdict(config))
    if differences:
        raise ValueError(f"the run in {state_dir} was trained with another configuration than this one ("
                         + "; ".join(differences) + "): only the recipe may differ")
    if replace(recipe(saved["recipe"]), finish=None) != replace(recipe(config.recipe), finish=None):
        raise ValueError(f"recipes {saved['recipe']!r} and {config.recipe!r} differ before their finish (mix, "
                         "options or finish share), so their first phases are not the same training")
    state = torch.load(state_dir / "state.pt", weights_only=False)
    if state["step"] + 1 != first_phase_steps(config):
        raise ValueError(f"the state in {state_dir} is at step {state['step'] + 1:,}, not at the end of the first "
                         f"phase ({first_phase_steps(config):,} steps)")
    return state


def _saved_config(state_dir: Path) -> dict:
    return json.loads((state_dir / "config.json").read_text())


def _differences(saved: dict, wanted: dict) -> list[str]:
    """``"key: saved X, now Y"`` for each setting that differs."""
    return [f"{key}: saved {saved.get(key)!r}, now {wanted.get(key)!r}"
            for key in sorted(saved.keys() | wanted.keys()) if saved.get(key) != wanted.get(key)]


def save_checkpoint(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast, config: TrainConfig,
                    log: list[dict[str, float]], seconds: float, out_dir: Path, started_from: str | None = None) -> dict:
    """Write model, tokenizer, ``train_log.json`` and ``manifest.json`` into ``out_dir`` (the manifest names the
    first-phase state the run ``started_from``, if any; its seconds include that phase's)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "train_log.json").write_text(json.dumps({"config": asdict(config), "log": log}, indent=1))
    tokens = config.steps * config.batch_size * config.context_length
    return write_manifest(
        out_dir,
        name="course-gpt2",
        parameters=sum(p.numel() for p in model.parameters()),
        generator_seed=config.seed,
        tokens_trained=tokens,
        steps=config.steps,
        final_loss=log[-1]["loss"],
        final_validation_loss=log[-1].get("validation_loss"),
        train_seconds=round(seconds, 1),
        tokens_per_second=round(tokens / seconds, 1),
        torch_threads=torch.get_num_threads(),
        git_commit=_git_commit(),
        train_command="python -m utils.course_model train",
        config=asdict(config),
        **({"started_from": started_from} if started_from else {}),
    )
