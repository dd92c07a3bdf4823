"""Numbers the book quotes, written by the code that computes them, so prose cannot go stale.

A chapter's solution notebook records each number its page quotes::

    results = Results("04_logit_lens", model=MODEL)
    results.record("kl_logit_lens_layer_0", kl[0], digits=2)        # -> "16.01"
    results.record("induction_head", f"{layer}.{head}")              # text is fine too

and the page (``book/04_logit_lens.md``) writes ``{result}`04_logit_lens/kl_logit_lens_layer_0``` where
the number goes; the book extension (``book/_ext/course_ext.py``) puts in the recorded text. A whole
table is one record (:meth:`Results.record_table`) and one directive on the page::

    ```{result-table} 04_logit_lens/kl_by_layer
    ```
 The
values live in ``book/results/<chapter>.json``, committed. What ``record`` does depends on the
environment variable ``COURSE_RESULTS``:

* ``write`` (``python -m utils.notebooks store-outputs`` sets it): store the value;
* ``check`` (``make book`` and ``make test`` set it): raise :class:`StaleResultError` when the value
  computed now, at the recorded precision, is not the stored one, so a retrained model that
  changes a quoted number fails the build until the notebook's outputs are stored again;
* unset (a learner's notebook): nothing, ``record`` only returns the text.

Only runs on the course model record or check (``model="course"``): a learner who sets ``MODEL`` to
a hub model gets other numbers, which are not the book's.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Where the records live (``COURSE_RESULTS_DIR`` points elsewhere, for the extension's own tests).
RESULTS_DIR = Path(os.environ.get("COURSE_RESULTS_DIR") or Path(__file__).resolve().parent.parent / "book" / "results")
MODE_VARIABLE = "COURSE_RESULTS"
_CHAPTER = re.compile(r"^\d\d_[a-z0-9_]+$")
_KEY = re.compile(r"^[a-z0-9_.]+$")


class StaleResultError(AssertionError):
    """A number the book quotes is no longer what the code computes."""


def format_value(value: float | int | str, digits: int | None = None) -> str:
    """The text of a value: ``digits`` decimals for a float, thousands separators for an int, a string as is.

    >>> format_value(0.91666, digits=2), format_value(32768000), format_value("L2H4")
    ('0.92', '32,768,000', 'L2H4')
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise TypeError("record a bool as the text to show, e.g. 'yes' or 'no'")
    if isinstance(value, int) and digits is None:
        return f"{value:,}"
    if digits is None:
        raise ValueError(f"a float ({value!r}) needs digits=: the precision the page quotes it at")
    if not math.isfinite(value):
        raise ValueError(f"cannot quote a non-finite value ({value!r})")
    text = f"{value:.{digits}f}"
    return "0" + text[2:] if text.startswith("-0") and float(text) == 0 else text  # no "-0.00"


def format_table(rows: Sequence[Mapping[str, float | int | str]], digits: int) -> str:
    """A markdown table of ``rows`` (dicts with the same keys, in column order), floats at ``digits`` decimals.

    >>> print(format_table([{"layer": 0, "KL": 16.04}, {"layer": 1, "KL": 3.861}], digits=2))
    | layer | KL |
    |---|---|
    | 0 | 16.04 |
    | 1 | 3.86 |
    """
    if not rows:
        raise ValueError("a table needs at least one row")
    columns = list(rows[0])
    if any(list(row) != columns for row in rows):
        raise ValueError(f"every row needs the columns {columns}, in that order")
    cell = lambda value: format_value(value, digits if isinstance(value, float) else None)  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows])


@dataclass(frozen=True)
class Results:
    """The recorded numbers of one chapter (``book/results/<chapter>.json``)."""

    chapter: str
    model: str = "course"
    directory: Path = RESULTS_DIR

    def __post_init__(self) -> None:
        if not _CHAPTER.match(self.chapter):
            raise ValueError(f"chapter {self.chapter!r} is not a chapter slug like '04_logit_lens'")

    @property
    def path(self) -> Path:
        return Path(self.directory) / f"{self.chapter}.json"

    def stored(self) -> dict[str, str]:
        """Every recorded key and its text (empty when nothing was recorded yet)."""
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def record(self, key: str, value: float | int | str, *, digits: int | None = None) -> str:
        """Record (or check, see the module's doc) the text of ``value`` under ``key``; return the text."""
        if not _KEY.match(key):
            raise ValueError(f"key {key!r}: use lower-case letters, digits, '_' and '.' only")
        text = format_value(value, digits)
        mode = os.environ.get(MODE_VARIABLE, "")
        if self.model != "course" or not mode:
            return text
        if mode not in ("write", "check"):
            raise ValueError(f"{MODE_VARIABLE}={mode!r}: use 'write', 'check' or leave it unset")
        stored = self.stored()
        if mode == "write":
            if stored.get(key) != text:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.write_text(json.dumps({**stored, key: text}, indent=1, sort_keys=True) + "\n")
            return text
        if key not in stored:
            raise StaleResultError(
                f"{self.chapter}/{key} is not recorded in {self.path}: run "
                f"`python -m utils.notebooks store-outputs solutions/{self.chapter}.ipynb`")
        if stored[key] != text:
            raise StaleResultError(
                f"{self.chapter}/{key}: the book quotes {stored[key]!r} but this run computes {text!r}. If the "
                f"model or the code changed on purpose, run `python -m utils.notebooks store-outputs "
                f"solutions/{self.chapter}.ipynb` and reread the sentences around {{result}}`{self.chapter}/{key}`")
        return text


    def record_table(self, key: str, rows: Sequence[Mapping[str, float | int | str]], *, digits: int) -> str:
        """Record a whole table (:func:`format_table`) under ``key``; the page shows it with ``{result-table}``."""
        return self.record(key, format_table(rows, digits))


#: A number as prose quotes a measurement: a decimal, a percentage or an integer with thousands separators.
_QUOTED_NUMBER = re.compile(r"(?<![\w.,])(\d+\.\d+|\d+ ?%|\d{1,3}(?:,\d{3})+)(?![\w]|\.\d)")
#: What is not prose: fenced and inline code, maths, link targets, and exercise numbers ("Exercise 3.1").
_NOT_PROSE = re.compile(r"```.*?```|`[^`]*`|\$\$.*?\$\$|\$[^$\n]*\$|\]\([^)]*\)|Exercise \d+\.\d+", re.S)


def quoted_numbers(text: str) -> list[str]:
    """The measurement-like numbers of markdown prose, outside code, maths, links and exercise numbers.

    >>> quoted_numbers("Exercise 3.2: heads 2.0 and 2.4 cost 0.3 nats (`x = 1.5`), 95 % of 1,024, $p = 0.5$.")
    ['2.0', '2.4', '0.3', '95 %', '1,024']
    """
    return [match.replace(" %", "%").replace("%", " %") for match in _QUOTED_NUMBER.findall(_NOT_PROSE.sub(" ", text))]


def recorded_numbers(chapter: str, directory: Path = RESULTS_DIR) -> set[str]:
    """Every number in the recorded texts of ``chapter`` (percentages also as ``"N %"``)."""
    numbers: set[str] = set()
    for text in Results(chapter, directory=directory).stored().values():
        numbers |= set(quoted_numbers(text))
        numbers |= {f"{n} %" for n in re.findall(r"\d+(?:\.\d+)?", text)}
    return numbers


def lookup(reference: str, directory: Path = RESULTS_DIR) -> str:
    """The recorded text of ``"<chapter>/<key>"`` (what the book's ``{result}`` role shows).

    Raises KeyError naming the file and the command that records it when it is missing.
    """
    chapter, _, key = reference.partition("/")
    if not key:
        raise KeyError(f"{reference!r}: write a result as <chapter>/<key>, e.g. 04_logit_lens/kl_logit_lens_layer_0")
    results = Results(chapter, directory=directory)
    stored = results.stored()
    if key not in stored:
        raise KeyError(f"{reference!r} is not recorded in {results.path}: record it in solutions/{chapter}.ipynb "
                       f"and run `python -m utils.notebooks store-outputs solutions/{chapter}.ipynb`")
    return stored[key]
