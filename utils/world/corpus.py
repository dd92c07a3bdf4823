"""Mix the document families into a training corpus, and draw held-out evaluation sets.

Training documents come from ``random.Random(seed)``; evaluation sets use their own seeds
(``EVAL_SEED_OFFSET`` apart), so they are fresh draws from the same world.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from utils.world.documents import Document
from utils.world.families import FAMILIES

#: Share of documents from each family in the training corpus.
DEFAULT_MIX: dict[str, float] = {
    "story": 0.13, "ioi": 0.20, "agreement": 0.08, "facts": 0.08, "few_shot": 0.15,
    "sequence": 0.20, "arithmetic": 0.10, "record": 0.03, "multiple_choice": 0.03,
}
EVAL_SEED_OFFSET = 1_000_003

#: Keyword arguments the training corpus passes to some families (the defaults elsewhere).
_TRAINING_KWARGS: dict[str, dict[str, object]] = {"facts": {"n_facts": None}, "agreement": {"n_sentences": None}}


def _training_document(rng: random.Random, family: str) -> Document:
    kwargs = dict(_TRAINING_KWARGS.get(family, {}))
    if "n_facts" in kwargs:
        kwargs["n_facts"] = rng.randint(1, 5)
    if "n_sentences" in kwargs:
        kwargs["n_sentences"] = rng.randint(1, 4)
    return FAMILIES[family](rng, **kwargs)


def generate_corpus(n_documents: int, seed: int = 0, mix: dict[str, float] | None = None) -> Iterator[Document]:
    """Yield ``n_documents`` training documents, families drawn in the proportions of ``mix``.

    The same ``(n_documents, seed, mix)`` always gives the same documents.
    """
    mix = mix or DEFAULT_MIX
    unknown = set(mix) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown families {sorted(unknown)} in mix; known: {sorted(FAMILIES)}")
    rng = random.Random(seed)
    families, weights = list(mix), list(mix.values())
    for _ in range(n_documents):
        yield _training_document(rng, rng.choices(families, weights)[0])


def eval_set(family: str, n: int, seed: int = 0, **kwargs: object) -> list[Document]:
    """``n`` held-out documents of one family, with fixed latent variables passed as ``kwargs``.

    >>> [d.labels["task"] for d in eval_set("few_shot", 2, task="antonym", n_shots=3)]
    ['antonym', 'antonym']
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {sorted(FAMILIES)}")
    rng = random.Random(EVAL_SEED_OFFSET + seed)
    return [FAMILIES[family](rng, **kwargs) for _ in range(n)]
