"""Evaluate a causal language model on held-out generated data: the course model's model card.

Every metric draws fresh documents from :mod:`utils.world` (``eval_set``, seeds apart from the
training corpus) and scores the model against the generator's labels. Run
``python -m utils.course_model evaluate`` to print the table and write it as JSON.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from pydantic import BaseModel, ConfigDict, ValidationError
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from utils.decoding import Decoding, generate_text
from utils.models import COURSE_MODEL_DIR, load_model, load_tokenizer, read_manifest
from utils.progress import tqdm
from utils.world import FEW_SHOT_TASKS, Document, eval_set, label_text, story
from utils.world.families import RANDOM_WORD_POOL, all_facts, FACT_PHRASINGS

FEW_SHOT_COUNTS = (0, 1, 3, 5)


@dataclass(frozen=True)
class Metric:
    """One row of the model card: a value, the threshold it must meet (if any) and whether it does."""

    name: str
    value: float
    threshold: str = ""
    passed: bool | None = None

    def row(self) -> str:
        verdict = {True: "pass", False: "FAIL", None: ""}[self.passed]
        return f"| {self.name} | {self.value:.3f} | {self.threshold} | {verdict} |"


# ---------------------------------------------------------------------------------------------
# Running the model on prompts
# ---------------------------------------------------------------------------------------------


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of ``text`` after a BOS token, the way every training document starts."""
    return [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]


def _right_padded(sequences: list[list[int]], pad_id: int) -> Int[torch.Tensor, "batch seq"]:
    width = max(map(len, sequences))
    return torch.tensor([s + [pad_id] * (width - len(s)) for s in sequences])


def encode_batch(tokenizer: PreTrainedTokenizerBase, texts: list[str] | tuple[str, ...], max_length: int | None = None
                 ) -> tuple[Int[torch.Tensor, "batch pos"], Int[torch.Tensor, "batch pos"], Int[torch.Tensor, "batch"]]:
    """Each text after a BOS token (:func:`encode`), cut at ``max_length``, in one right-padded batch.

    Returns ``(input_ids, attention_mask, last)``: the mask is 1 on real tokens, ``last`` the index of each
    row's last real token. Right padding leaves every real position of a causal model unchanged, so texts
    of different lengths share a batch.
    """
    if not texts:
        raise ValueError("no texts given: pass at least one")
    rows = [encode(tokenizer, text)[:max_length] for text in texts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(map(len, rows))
    attention_mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    return _right_padded(rows, pad), attention_mask, torch.tensor([len(row) - 1 for row in rows])


@torch.no_grad()
def teacher_forced_logits(
    model: PreTrainedModel, sequences: list[list[int]], batch_size: int = 64,
) -> list[Float[torch.Tensor, "seq vocab"]]:
    """Logits for each (unpadded) sequence. Right padding cannot change earlier positions of a
    causal model with absolute positions, so sequences of different lengths share a batch."""
    out = []
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start:start + batch_size]
        logits = model(input_ids=_right_padded(chunk, pad_id=0)).logits
        out += [row[: len(seq)] for row, seq in zip(logits, chunk)]
    return out


def next_token_logits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                      prompts: list[str]) -> Float[torch.Tensor, "batch vocab"]:
    """The logits after the last token of each prompt."""
    return torch.stack([logits[-1] for logits in teacher_forced_logits(model, [encode(tokenizer, p) for p in prompts])])


def greedy_matches(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                   prompts: list[str], targets: list[str]) -> Bool[torch.Tensor, "batch"]:
    """Whether greedy decoding from each prompt starts with its target.

    Greedy decoding produces ``target`` exactly when, with the target fed in (teacher forcing),
    every target token is the argmax at its position: one forward pass instead of a loop.
    """
    sequences, spans = [], []
    for prompt, target in zip(prompts, targets):
        prompt_ids = encode(tokenizer, prompt)
        target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
        sequences.append(prompt_ids + target_ids)
        spans.append((len(prompt_ids), target_ids))
    matches = []
    for logits, (start, target_ids) in zip(teacher_forced_logits(model, sequences), spans):
        predicted = logits[start - 1: start - 1 + len(target_ids)].argmax(-1)
        matches.append(bool((predicted == torch.tensor(target_ids)).all()))
    return torch.tensor(matches)


def continue_text(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, max_new_tokens: int,
                  *, temperature: float = 0.0, stop: str | None = "\n", seed: int = 0) -> str:
    """Continue ``prompt`` greedily (``temperature=0``) or by sampling, until ``stop`` appears
    or the model ends the document (``<|endoftext|>``): :func:`utils.decoding.generate_text` for one prompt."""
    return generate_text(model, tokenizer, [prompt], max_new_tokens, decoding=Decoding(temperature=temperature),
                         stop=stop, seed=seed)[0]


# ---------------------------------------------------------------------------------------------
# The metrics
# ---------------------------------------------------------------------------------------------

FAMILIES_FOR_LOSS = ("story", "ioi", "agreement", "facts", "few_shot", "sequence", "arithmetic", "record",
                     "multiple_choice")


def loss_per_family(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, n: int) -> dict[str, float]:
    """Mean next-token loss (nats) on ``n`` held-out documents of each family."""
    losses = {}
    for family in FAMILIES_FOR_LOSS:
        sequences = [encode(tokenizer, doc.text) for doc in eval_set(family, n, seed=1)]
        per_doc = [F.cross_entropy(logits[:-1], torch.tensor(seq[1:])).item()
                   for logits, seq in zip(teacher_forced_logits(model, sequences), sequences)]
        losses[family] = float(np.mean(per_doc))
    return losses


def word_pool_ids(tokenizer: PreTrainedTokenizerBase) -> Int[torch.Tensor, "n_words"]:
    """The token ids of the world's random-word pool that are one token each (the words that the
    corpus's repeated sequences draw from)."""
    ids = tokenizer([" " + w for w in RANDOM_WORD_POOL], add_special_tokens=False)["input_ids"]
    return torch.tensor([word[0] for word in ids if len(word) == 1])


def repeated_random_tokens(tokenizer: PreTrainedTokenizerBase, n: int, length: int, seed: int = 0
                           ) -> Int[torch.Tensor, "n two_length_plus_one"]:
    """``n`` sequences ``BOS w1..wL w1..wL`` of random world words (one token each)."""
    word_ids = word_pool_ids(tokenizer).tolist()
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(word_ids) for _ in range(length)]
        rows.append([tokenizer.bos_token_id, *words, *words])
    return torch.tensor(rows)


def copy_losses_from_logits(logits: Float[torch.Tensor, "n two_length_plus_one vocab"],
                            rows: Int[torch.Tensor, "n two_length_plus_one"]) -> tuple[float, float]:
    """Mean next-token loss on the first and on the second copy of rows ``BOS c c``, from their logits.

    Both exclude each copy's first token, which nothing before it predicts.
    """
    length = (rows.shape[1] - 1) // 2
    losses = F.cross_entropy(logits[:, :-1].transpose(1, 2), rows[:, 1:], reduction="none")  # [n, 2L]
    return losses[:, 1:length].mean().item(), losses[:, length + 1:].mean().item()


@torch.no_grad()
def induction_metrics(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, n: int, length: int = 20
                      ) -> tuple[float, float, Float[torch.Tensor, "layer head"]]:
    """Loss on the first and on the second copy of repeated random words, and each head's
    induction score: its mean attention from a second-copy token to the token after that
    token's first occurrence."""
    tokens = repeated_random_tokens(tokenizer, n, length)
    out = model(input_ids=tokens, output_attentions=True)
    first_copy, second_copy = copy_losses_from_logits(out.logits, tokens)
    patterns = torch.stack(out.attentions, dim=1)                  # [n, layer, head, query, key]
    queries = torch.arange(length + 1, 2 * length + 1)
    induction = patterns[..., queries, queries - length + 1].mean(dim=(0, -1))  # [layer, head]
    return first_copy, second_copy, induction


def preference_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                        good: list[str], bad: list[str]) -> tuple[float, float]:
    """Share of prompts where the continuation ``good`` beats ``bad`` at their first differing
    token, and the mean logit difference there.

    The common prefix of the two continuations (" (" of " (A)" and " (B)") is appended to the
    prompt, so multi-token continuations are compared where they part.
    """
    extended, good_ids, bad_ids = [], [], []
    for prompt, g, b in zip(prompts, good, bad, strict=True):
        g_ids, b_ids = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in (g, b))
        shared = next((i for i, (x, y) in enumerate(zip(g_ids, b_ids)) if x != y), None)
        if shared is None:
            raise ValueError(f"{g!r} and {b!r} tokenize alike up to the shorter one: no token tells them apart")
        extended.append(prompt + tokenizer.decode(g_ids[:shared]))
        good_ids.append(g_ids[shared])
        bad_ids.append(b_ids[shared])
    logits = next_token_logits(model, tokenizer, extended)                                   # [n, vocab]
    rows = torch.arange(len(prompts))
    difference: Float[torch.Tensor, "n"] = logits[rows, good_ids] - logits[rows, bad_ids]
    return (difference > 0).float().mean().item(), difference.mean().item()


def ioi_preference(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, docs: list[Document]
                   ) -> tuple[float, float]:
    """Share of indirect-object prompts with logit(IO) > logit(S) (first tokens), and the mean difference."""
    return preference_accuracy(model, tokenizer, [d.prompt for d in docs],
                               [" " + d.labels["indirect_object"] for d in docs],
                               [" " + d.labels["subject"] for d in docs])


def ioi_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, n: int) -> tuple[float, float]:
    """Share of held-out indirect-object prompts with logit(IO) > logit(S), and the mean difference."""
    return ioi_preference(model, tokenizer, eval_set("ioi", n, seed=2))


def in_context_snapshot(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, n: int = 32) -> dict[str, float]:
    """The in-context skills that emerge late in training, measured cheaply on ``n`` prompts:
    the induction loss gap, the best induction score and IOI accuracy, and the same skills on
    held-out material (random token ids, held-out IOI frames, held-out A/B questions). The
    training loop logs it, so the training log shows when induction heads form and whether what
    forms is general."""
    from utils.course_model.generalisation import (
        choice_accuracy_per_trait, copy_losses, ioi_documents, random_token_repeats,
    )
    from utils.world.heldout import HELDOUT_IOI_PARTS

    was_training, implementation = model.training, model.config._attn_implementation
    model.eval()
    model.set_attn_implementation("eager")
    first, second, induction = induction_metrics(model, tokenizer, n)
    ioi, _ = ioi_accuracy(model, tokenizer, 2 * n)
    random_first, random_second = copy_losses(model, random_token_repeats(n, 20, len(tokenizer), tokenizer.bos_token_id))
    heldout_ioi, _ = ioi_preference(model, tokenizer, ioi_documents(HELDOUT_IOI_PARTS, 2 * n, seed=1))
    heldout_ab = np.mean(list(choice_accuracy_per_trait(model, tokenizer, n).values()))
    model.set_attn_implementation(implementation)
    model.train(was_training)
    return {"induction_gap": first - second, "induction_score": induction.max().item(), "ioi_accuracy": ioi,
            "random_token_induction_gap": random_first - random_second, "heldout_ioi_accuracy": heldout_ioi,
            "heldout_ab_accuracy": float(heldout_ab)}


def agreement_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, n: int) -> float:
    """Share of held-out prompts ending in a distractor of the other number where the verb that
    agrees with the subject has the higher logit."""
    docs = [doc for number in ("singular", "plural") for doc in eval_set(
        "agreement", n // 2, seed=3, number=number,
        distractor_number="plural" if number == "singular" else "singular")]
    return agreement_preference(model, tokenizer, docs)


def agreement_preference(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, docs: list[Document]) -> float:
    """Share of agreement prompts where the verb that agrees with the subject beats the other form."""
    good, bad = [], []
    for doc in docs:
        singular, plural = doc.labels["verb_pair"].split("/")
        agrees, other = (singular, plural) if doc.labels["number"] == "singular" else (plural, singular)
        good.append(" " + agrees)
        bad.append(" " + other)
    return preference_accuracy(model, tokenizer, [d.prompt for d in docs], good, bad)[0]


def fact_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> float:
    """Share of the world's facts whose object is greedy top-1 after the canonical phrasing."""
    prompts, targets = [], []
    for relation, subject, obj in all_facts():
        sentence = FACT_PHRASINGS[relation][0].format(s=subject, o=obj)
        prompts.append(sentence[: sentence.rindex(" " + obj)])
        targets.append(" " + obj)
    return greedy_matches(model, tokenizer, prompts, targets).float().mean().item()


def few_shot_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, n: int
                      ) -> dict[str, dict[int, float]]:
    """Accuracy of each few-shot task at 0, 1, 3 and 5 shots (greedy answer then a newline)."""
    table: dict[str, dict[int, float]] = {}
    for task in sorted(FEW_SHOT_TASKS):
        table[task] = {}
        for shots in FEW_SHOT_COUNTS:
            docs = eval_set("few_shot", n, seed=4, task=task, n_shots=shots)
            table[task][shots] = greedy_matches(
                model, tokenizer, [d.prompt for d in docs], [d.answer + "\n" for d in docs]).float().mean().item()
    return table


_ANSWER = re.compile(r"The answer is (\d+)")


def arithmetic_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, n: int) -> dict[str, float]:
    """Accuracy of two-digit addition/subtraction answered directly vs with worked steps
    (greedy generation, the final number parsed), on the same held-out questions."""
    accuracy = {}
    for style, max_new_tokens in (("direct", 6), ("worked", 48)):
        docs = eval_set("arithmetic", n, seed=5, style=style)
        correct = 0
        for doc in tqdm(docs, desc=f"arithmetic ({style})", leave=False):
            text = doc.prompt[doc.prompt.rindex("A:") + 2:] + continue_text(model, tokenizer, doc.prompt, max_new_tokens)
            found = _ANSWER.search(text)
            correct += bool(found) and int(found.group(1)) == doc.labels["result"]
        accuracy[style] = correct / n
    return accuracy


class Record(BaseModel):
    """The schema of the world's JSON records."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str
    age: int
    city: str
    job: str


def record_parse_rate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, n: int) -> float:
    """Share of records sampled at temperature 1 after ``Record:`` that parse as JSON and match
    the schema: the baseline that chapter 1's constrained decoding raises to 100 %."""
    valid = 0
    for i in tqdm(range(n), desc="records", leave=False):
        text = continue_text(model, tokenizer, "Record:", 40, temperature=1.0, seed=i)
        try:
            Record.model_validate(json.loads(text))
            valid += 1
        except (json.JSONDecodeError, ValidationError):
            pass
    return valid / n


def sentiment_control(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, n: int) -> float:
    """Share of sampled continuations (temperature 1, 40 tokens) of positive and negative story
    openings that the labeller reads as having the opening's sentiment."""
    rng = random.Random(6)
    agree = 0
    for i in tqdm(range(n), desc="sentiment control", leave=False):
        sentiment = ("positive", "negative")[i % 2]
        doc = story(rng, sentiment=sentiment, n_sentences=6, with_ioi=False)
        opening = ". ".join(doc.text.split(". ")[:3]) + "."
        continuation = continue_text(model, tokenizer, opening, 40, temperature=1.0, stop=None, seed=i)
        agree += label_text(continuation).sentiment == sentiment
    return agree / n


# ---------------------------------------------------------------------------------------------
# The model card
# ---------------------------------------------------------------------------------------------


def evaluate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, n: int = 200) -> dict:
    """All metrics of the model card, ``n`` held-out prompts each (fewer for the slow ones).

    Returns a dict with ``metrics`` (a list of :class:`Metric` as dicts), ``loss_per_family``,
    ``few_shot`` (task -> shots -> accuracy), ``induction_scores`` (layer x head) and
    ``generalisation`` (metrics on held-out material, :mod:`utils.course_model.generalisation`).
    """
    from utils.course_model.generalisation import check_tokenizer_fits, generalisation_metrics

    check_tokenizer_fits(model, tokenizer)
    model.eval()
    model.set_attn_implementation("eager")  # attention weights are needed for induction scores
    losses = loss_per_family(model, tokenizer, max(20, n // 4))
    first, second, induction = induction_metrics(model, tokenizer, max(20, n // 4))
    ioi, ioi_difference = ioi_accuracy(model, tokenizer, n)
    few_shot = few_shot_accuracy(model, tokenizer, max(20, n // 4))
    gaps = {task: acc[5] - acc[0] for task, acc in few_shot.items()}
    arithmetic = arithmetic_accuracy(model, tokenizer, max(20, n // 2))
    metrics = [
        Metric("induction: first-copy loss - second-copy loss (nats)", first - second, ">= 3", first - second >= 3),
        Metric("induction: best head's induction score", induction.max().item(), ">= 0.5", induction.max().item() >= 0.5),
        Metric("indirect object: share with logit(IO) > logit(S)", ioi, ">= 0.9", ioi >= 0.9),
        Metric("indirect object: mean logit difference", ioi_difference),
        Metric("agreement across a distractor: accuracy", agreement_accuracy(model, tokenizer, n), ">= 0.9"),
        Metric("facts: top-1 accuracy (48 facts)", fact_accuracy(model, tokenizer), ">= 0.9"),
        Metric("few-shot: tasks with a 5-shot minus 0-shot gap >= 0.3", sum(g >= 0.3 for g in gaps.values()), ">= 3"),
        Metric("arithmetic: direct accuracy", arithmetic["direct"]),
        Metric("arithmetic: worked-steps accuracy", arithmetic["worked"], "> direct",
               arithmetic["worked"] > arithmetic["direct"]),
        Metric("records: share of sampled JSON records valid", record_parse_rate(model, tokenizer, max(20, n // 2))),
        Metric("sentiment control: continuations keep the opening's sentiment",
               sentiment_control(model, tokenizer, max(20, n // 2)), ">= 0.8"),
    ]
    metrics = [_judge(m) for m in metrics]
    generalisation = [_judge(m) for m in generalisation_metrics(model, tokenizer, n)]
    return {"metrics": [asdict(m) for m in metrics], "generalisation": [asdict(m) for m in generalisation],
            "loss_per_family": losses, "few_shot": few_shot, "induction_scores": induction.tolist(), "n": n}


def _judge(metric: Metric) -> Metric:
    """Fill ``passed`` for thresholds written as '>= x' when it is not set yet."""
    if metric.passed is not None or not metric.threshold.startswith(">= "):
        return metric
    return Metric(metric.name, metric.value, metric.threshold, metric.value >= float(metric.threshold[3:]))


def format_card(card: dict) -> str:
    """The evaluation as markdown tables."""
    lines = ["| metric | value | threshold | |", "|---|---|---|---|"]
    lines += [Metric(**m).row() for m in card["metrics"]]
    lines += ["", "| generalisation: on held-out material | value | threshold | |", "|---|---|---|---|"]
    lines += [Metric(**m).row() for m in card.get("generalisation", [])]
    lines += ["", "| family | loss (nats) |", "|---|---|"]
    lines += [f"| {family} | {loss:.3f} |" for family, loss in card["loss_per_family"].items()]
    shots = FEW_SHOT_COUNTS
    lines += ["", "| task | " + " | ".join(f"{k}-shot" for k in shots) + " |", "|---" * (len(shots) + 1) + "|"]
    lines += [f"| {task} | " + " | ".join(f"{acc[k]:.2f}" for k in shots) + " |" for task, acc in card["few_shot"].items()]
    return "\n".join(lines)


def format_training(manifest: dict) -> str:
    """The training run recorded in a checkpoint's manifest, as a markdown table."""
    rows = [("parameters", f"{manifest['parameters']:,}"), ("tokens trained", f"{manifest['tokens_trained']:,}"),
            ("steps", f"{manifest['steps']:,}"), ("final training loss", f"{manifest['final_loss']:.3f}"),
            ("training time (CPU)", f"{manifest['train_seconds'] / 60:.1f} min on {manifest['torch_threads']} threads"),
            ("throughput", f"{manifest['tokens_per_second']:,.0f} tokens/s"), ("generator seed", str(manifest["generator_seed"]))]
    return "\n".join(["| training | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def main(model_name: str, out: Path | None, n: int) -> None:
    """Evaluate ``model_name`` and print the card. For the course model, also write
    ``evaluation.json`` and ``model_card.md`` beside the checkpoint (the chapter 0 page
    includes the latter); ``out`` writes the JSON elsewhere."""
    torch.manual_seed(0)
    card = evaluate(load_model(model_name), load_tokenizer(model_name), n)
    table = format_card(card)
    print(table)
    if model_name == "course":
        (COURSE_MODEL_DIR / "model_card.md").write_text(format_training(read_manifest()) + "\n\n" + table + "\n")
        out = out or COURSE_MODEL_DIR / "evaluation.json"
    if out is not None:
        out.write_text(json.dumps(card, indent=1))
        print(f"wrote {out}")
