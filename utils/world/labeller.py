"""Decide a text's sentiment, topic and emotion from its words alone.

The world's word sets for these variables are disjoint (see :mod:`utils.world.vocabulary`),
so counting them is exact on generated text and well defined on any model continuation:
later chapters use it to score steered generations.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from utils.world.vocabulary import EMOTION_ADJECTIVES, EMOTION_VERBS, SENTIMENT_WORDS, TOPIC_WORDS

_WORD = re.compile(r"[a-z]+")


def _invert(groups: dict[str, frozenset[str]]) -> dict[str, str]:
    return {word: label for label, words in groups.items() for word in words}


_SENTIMENT_OF = _invert({s: frozenset(words) for s, words in SENTIMENT_WORDS.items()})
_EMOTION_OF = _invert({e: frozenset(EMOTION_ADJECTIVES[e] + EMOTION_VERBS[e]) for e in EMOTION_ADJECTIVES})
_TOPIC_OF = _invert({t: words.all_words for t, words in TOPIC_WORDS.items()})


@dataclass(frozen=True)
class TextLabels:
    """What the labeller read: the majority label of each variable (None when there is no
    evidence or a tie) and the word counts behind it."""

    sentiment: str | None
    topic: str | None
    emotion: str | None
    counts: dict[str, Counter] = field(default_factory=dict, compare=False)


def _majority(counts: Counter) -> str | None:
    ranked = counts.most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def label_text(text: str) -> TextLabels:
    """Label ``text`` by counting the world's sentiment, topic and emotion words.

    >>> label_text("The cake was lovely. Mary laughed.").sentiment
    'positive'
    """
    words = _WORD.findall(text.lower())
    counts = {
        "sentiment": Counter(_SENTIMENT_OF[w] for w in words if w in _SENTIMENT_OF),
        "topic": Counter(_TOPIC_OF[w] for w in words if w in _TOPIC_OF),
        "emotion": Counter(_EMOTION_OF[w] for w in words if w in _EMOTION_OF),
    }
    return TextLabels(*(_majority(counts[k]) for k in ("sentiment", "topic", "emotion")), counts=counts)
