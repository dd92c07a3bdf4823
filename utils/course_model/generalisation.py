"""The model card's generalisation section: each skill measured on material no corpus contains.

A skill that works on the generator's own templates and fails on a new sentence of the same kind
is a lookup, not a mechanism. Every metric here draws its prompts from :mod:`utils.world.heldout`
(names, words, frames and phrasings disjoint from the training world by construction) or from
uniformly random token ids, and compares the model with the generator's labels:

* induction: the second copy of a repeated sequence of random token ids, or of held-out words,
  is cheaper to predict than the first (Olsson et al. 2022);
* indirect object: logit(IO) > logit(S) in sentences of held-out frames, or with held-out names;
* agreement: the verb that agrees with the subject beats the other, with held-out nouns (known
  from elsewhere, or new words) or prepositions;
* A/B questions: the letter of the option with the asked-for trait beats the other letter,
  questions and options phrased in held-out ways, per trait;
* facts: the object is the greedy answer after a held-out phrasing.
"""

from __future__ import annotations

import random

import torch
from jaxtyping import Int
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from utils.course_model.evaluate import (
    Metric, agreement_preference, copy_losses_from_logits, greedy_matches, ioi_preference, preference_accuracy,
)
from utils.world import Document, agreement, all_facts, indirect_object, multiple_choice
from utils.world.families import TRAIT_VALUES, IOIParts
from utils.world.heldout import (
    HELDOUT_AGREEMENT_NOUNS, HELDOUT_CHOICE_PARTS, HELDOUT_FACT_PHRASINGS, HELDOUT_IOI_PARTS,
    HELDOUT_NAME_IOI_PARTS, HELDOUT_PREPOSITIONS, HELDOUT_WORDS, UNSEEN_AGREEMENT_NOUNS,
)
from utils.world.vocabulary import AGREEMENT_NOUNS, AGREEMENT_PREPOSITIONS

#: Where the held-out prompts' random draws start (apart from every training and evaluation seed).
HELDOUT_SEED = 7_000_001


# ---------------------------------------------------------------------------------------------
# Induction on sequences the corpus never repeats
# ---------------------------------------------------------------------------------------------


def random_token_repeats(n: int, length: int, vocab_size: int, bos: int, seed: int = 0
                         ) -> Int[torch.Tensor, "n two_length_plus_one"]:
    """``n`` rows ``BOS r1..rL r1..rL`` of uniformly random token ids (any id but BOS)."""
    generator = torch.Generator().manual_seed(HELDOUT_SEED + seed)
    copies = torch.randint(0, vocab_size - 1, (n, length), generator=generator)
    copies = copies + (copies >= bos).long()                                   # skip the BOS id
    return torch.cat([torch.full((n, 1), bos), copies, copies], dim=1)


def heldout_word_repeats(tokenizer: PreTrainedTokenizerBase, n: int, length: int, seed: int = 0
                         ) -> Int[torch.Tensor, "n two_length_plus_one"]:
    """``n`` rows ``BOS c c`` where ``c`` is the first ``length`` tokens of a random sequence of
    held-out words (" pumpkin walrus kayak ..."): text the model has never seen, let alone repeated."""
    rng = random.Random(HELDOUT_SEED + seed)
    rows = []
    for _ in range(n):
        copy: list[int] = []
        while len(copy) < length:
            copy += tokenizer(" " + rng.choice(HELDOUT_WORDS), add_special_tokens=False)["input_ids"]
        rows.append([tokenizer.bos_token_id, *copy[:length], *copy[:length]])
    return torch.tensor(rows)


@torch.no_grad()
def copy_losses(model: PreTrainedModel, rows: Int[torch.Tensor, "n two_length_plus_one"]) -> tuple[float, float]:
    """Mean next-token loss on the first and on the second copy of rows ``BOS c c``
    (:func:`~utils.course_model.evaluate.copy_losses_from_logits`)."""
    return copy_losses_from_logits(model(input_ids=rows).logits, rows)


# ---------------------------------------------------------------------------------------------
# Two-way choices: IO vs S, agreeing vs other verb, right vs wrong letter
# ---------------------------------------------------------------------------------------------


def ioi_documents(parts: IOIParts, n: int, seed: int) -> list[Document]:
    """``n`` indirect-object sentences composed from ``parts``, ABA and ABB orders alternating."""
    rng = random.Random(HELDOUT_SEED + seed)
    return [indirect_object(rng, parts=parts, subject_first=i % 2 == 0) for i in range(n)]


def agreement_documents(nouns: tuple[tuple[str, str], ...], prepositions: tuple[str, ...], n: int, seed: int
                        ) -> list[Document]:
    """``n`` agreement prompts whose last noun has the other number than the subject (half singular)."""
    rng = random.Random(HELDOUT_SEED + seed)
    docs = []
    while len(docs) < n:
        number = ("singular", "plural")[len(docs) % 2]
        other = "plural" if number == "singular" else "singular"
        docs.append(agreement(rng, number=number, distractor_number=other, nouns=nouns, prepositions=prepositions))
    return docs


def choice_documents(trait: str, n: int, seed: int) -> list[Document]:
    """``n`` held-out A/B questions about ``trait``, letters and asked-for values balanced."""
    rng = random.Random(HELDOUT_SEED + seed)
    values = TRAIT_VALUES[trait]
    return [multiple_choice(rng, trait=trait, value=values[i % len(values)], correct_letter="AB"[(i // len(values)) % 2],
                            parts=HELDOUT_CHOICE_PARTS) for i in range(n)]


def choice_preference(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, docs: list[Document]) -> float:
    """Share of A/B questions where the right letter beats the other one after ``Answer:``."""
    wrong = {"A": "B", "B": "A"}
    return preference_accuracy(model, tokenizer, [d.prompt for d in docs],
                               [f" ({d.labels['correct']})" for d in docs],
                               [f" ({wrong[d.labels['correct']]})" for d in docs])[0]


def choice_accuracy_per_trait(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, n: int) -> dict[str, float]:
    """:func:`choice_preference` on ``n`` held-out A/B questions of each trait."""
    return {trait: choice_preference(model, tokenizer, choice_documents(trait, n, seed=7 + i))
            for i, trait in enumerate(TRAIT_VALUES)}


def heldout_fact_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> tuple[float, int]:
    """Share of (fact, held-out phrasing) pairs whose object is the greedy continuation, and their number."""
    prompts, targets = [], []
    for relation, subject, obj in all_facts():
        for phrasing in HELDOUT_FACT_PHRASINGS[relation]:
            sentence = phrasing.format(s=subject, o=obj)
            prompts.append(sentence[: sentence.rindex(" " + obj)])
            targets.append(" " + obj)
    return greedy_matches(model, tokenizer, prompts, targets).float().mean().item(), len(prompts)


# ---------------------------------------------------------------------------------------------
# The section
# ---------------------------------------------------------------------------------------------


def check_tokenizer_fits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise ValueError when ``tokenizer`` cannot be the model's: more ids than embeddings, or no BOS."""
    n_embeddings = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > n_embeddings:
        raise ValueError(
            f"the tokenizer has {len(tokenizer):,} tokens but the model only {n_embeddings:,} embeddings: it is "
            "another model's tokenizer. Load both from the same checkpoint (utils.models.load_model and "
            "load_tokenizer with the same name).")
    if tokenizer.bos_token_id is None:
        raise ValueError("the tokenizer has no BOS token: the evaluation starts every prompt with one, as training did")


def generalisation_metrics(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, n: int = 200
                           ) -> list[Metric]:
    """The generalisation rows of the model card, ``n`` held-out prompts each (fewer for induction).

    Thresholds: induction gap >= 3 nats; IOI and agreement >= 0.9; A/B >= 0.8 for every trait.
    """
    check_tokenizer_fits(model, tokenizer)
    n_induction = max(16, n // 4)
    vocab_size = model.get_input_embeddings().num_embeddings
    random_ids = copy_losses(model, random_token_repeats(n_induction, 20, min(vocab_size, len(tokenizer)),
                                                         tokenizer.bos_token_id))
    words = copy_losses(model, heldout_word_repeats(tokenizer, n_induction, 30))
    ioi_frames = ioi_preference(model, tokenizer, ioi_documents(HELDOUT_IOI_PARTS, n, seed=1))
    ioi_names = ioi_preference(model, tokenizer, ioi_documents(HELDOUT_NAME_IOI_PARTS, n, seed=2))
    facts, n_facts = heldout_fact_accuracy(model, tokenizer)
    choices = choice_accuracy_per_trait(model, tokenizer, n)
    return [
        Metric("induction, random token ids: first-copy minus second-copy loss (nats)",
               random_ids[0] - random_ids[1], ">= 3"),
        Metric("induction, held-out words: first-copy minus second-copy loss (nats)", words[0] - words[1], ">= 3"),
        Metric("indirect object, held-out frames: share with logit(IO) > logit(S)", ioi_frames[0], ">= 0.9"),
        Metric("indirect object, held-out frames: mean logit difference", ioi_frames[1]),
        Metric("indirect object, held-out names: share with logit(IO) > logit(S)", ioi_names[0], ">= 0.9"),
        Metric("agreement, held-out nouns: accuracy", agreement_preference(
            model, tokenizer, agreement_documents(HELDOUT_AGREEMENT_NOUNS, AGREEMENT_PREPOSITIONS, n, seed=3)), ">= 0.9"),
        Metric("agreement, nouns of no document (new words): accuracy", agreement_preference(
            model, tokenizer, agreement_documents(UNSEEN_AGREEMENT_NOUNS, AGREEMENT_PREPOSITIONS, n, seed=6))),
        Metric("agreement, held-out prepositions: accuracy", agreement_preference(
            model, tokenizer, [d for d in agreement_documents(AGREEMENT_NOUNS, HELDOUT_PREPOSITIONS, 2 * n, seed=4)
                               if any(f" {p} the " in d.prompt for p in HELDOUT_PREPOSITIONS)][:n]), ">= 0.9"),
        *(Metric(f"A/B questions, held-out phrasings ({trait}): share with the right letter preferred",
                 accuracy, ">= 0.8") for trait, accuracy in choices.items()),
        Metric(f"facts, held-out phrasings: top-1 accuracy ({n_facts} prompts)", facts),
    ]
