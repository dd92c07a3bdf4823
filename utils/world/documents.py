"""The data types the generator returns: a document's text with its labels and spans."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Span:
    """A labelled character range ``text[start:end]`` of a document.

    ``kind`` says what the span is (``"name"``, ``"pronoun"``, ``"answer"``, ``"subject"``...),
    ``value`` what it stands for (the character a pronoun refers to, the subject's number...).
    """

    start: int
    end: int
    kind: str
    value: str


@dataclass(frozen=True)
class Document:
    """One generated document.

    Attributes:
        text: the document, as the model sees it.
        family: which generator wrote it (``"story"``, ``"ioi"``, ``"agreement"``...).
        labels: the latent variables of the whole document (sentiment, topic, task...).
        spans: labelled character ranges inside ``text``.
        prompt: for documents that pose a task, the text up to the answer; ``text`` starts with it.
        answer: the expected continuation of ``prompt`` (with its leading space, if any).
    """

    text: str
    family: str
    labels: dict[str, Any] = field(default_factory=dict)
    spans: tuple[Span, ...] = ()
    prompt: str | None = None
    answer: str | None = None

    def spans_of(self, kind: str) -> list[Span]:
        """The spans of one kind, in order of position."""
        return sorted((s for s in self.spans if s.kind == kind), key=lambda s: s.start)


class TextBuilder:
    """Appends pieces of text and records spans at the right character offsets."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._length = 0
        self.spans: list[Span] = []

    def add(self, piece: str, kind: str | None = None, value: str = "") -> "TextBuilder":
        """Append ``piece``; if ``kind`` is given, record it as a span."""
        if kind is not None:
            self.spans.append(Span(self._length, self._length + len(piece), kind, value))
        self._parts.append(piece)
        self._length += len(piece)
        return self

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def __len__(self) -> int:
        return self._length
