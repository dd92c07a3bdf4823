"""Chapter 1 reference: structured outputs, by constraining generation to a JSON schema.

A language model sampled at temperature 1 writes a valid JSON record most of the time, not
always. *Constrained decoding* makes "always" true: before each token is sampled, every token
that would break the format gets logit ``-inf``. The pipeline, one section of this module each:

1. **Schema -> regular expression.** :func:`regex_for_schema` turns a pydantic model into a
   regex for its JSON in ``json.dumps`` layout: ``{"name": "Anna", "age": 42}``.
2. **Regex -> character automaton.** :class:`CharFSM` wraps the deterministic finite-state
   machine (DFA) that ``interegular`` builds from the regex: a state says how much of the
   pattern has been written, ``step(state, char)`` where one more character leads.
3. **Characters -> tokens.** A model writes *tokens*, several characters at a time.
   :func:`token_transitions` (the lab's exercise) lists the tokens allowed in one state and the
   state after each; :class:`TokenIndex` does it for every reachable state, once, and keeps a
   ``Bool[Tensor, "vocab"]`` mask per state (the idea of Outlines, Willard & Louf 2023).
4. **Masking logits.** :class:`SchemaLogitsProcessor` follows each sequence's state as tokens
   are generated and sets the logits of disallowed tokens to ``-inf``; it has the interface of
   a ``transformers`` logits processor, so it works in ``model.generate`` and in a plain loop.
5. **Sampling and checking records.** :func:`constrained_records` samples records from the course
   model (strings bounded to 20 characters, so that every generation ends within its token
   budget), :func:`validate_records` parses them with pydantic, :func:`plausibility` compares
   their values with the world's vocabulary::

    texts = constrained_records(model, tokenizer, 200, seed=0)
    share, records = validate_records(texts)        # share == 1.0
    plausibility(records)                           # {'name': ..., 'age': ..., 'city': ..., 'job': ...}

The index works on *characters*: a token is the text ``tokenizer.decode([id])``. Tokens that
are only part of a multi-byte UTF-8 character (they decode to ``'\\ufffd'``) can never be used,
so a pattern that needs a character no whole token spells (``"café"`` with an ASCII vocabulary)
cannot be generated; :class:`TokenIndex` says so when it is built. Outlines avoids this by
running the automaton on bytes.
"""

from __future__ import annotations

import dataclasses
import json
import re
import string
import time
import typing
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import interegular
import torch
from interegular.fsm import FSM, anything_else
from jaxtyping import Bool, Float, Int
from pydantic import BaseModel, ValidationError
from torch import Tensor
from transformers import LogitsProcessor, PreTrainedModel, PreTrainedTokenizerBase

from utils.course_model.evaluate import Record, encode
from utils.decoding import Decoding, generate, token_strings
from utils.world.vocabulary import CAPITALS, JOBS, NAMES

__all__ = [
    "BOOLEAN_REGEX",
    "CharFSM",
    "INTEGER_REGEX",
    "STRING_REGEX",
    "SchemaLogitsProcessor",
    "TokenIndex",
    "constrained_records",
    "plausibility",
    "record_index",
    "regex_for_schema",
    "token_strings",
    "token_transitions",
    "unconstrained_records",
    "validate_records",
]

# --------------------------------------------------------------------------------------------
# 1. Schema -> regular expression

#: A JSON string without escapes or control characters (what ``json.dumps`` writes for plain text).
STRING_CHAR = r'[^"\\\x00-\x1f]'
STRING_REGEX = f'"{STRING_CHAR}*"'
#: A JSON integer: no leading zeros, no plus sign.
INTEGER_REGEX = r"-?(0|[1-9][0-9]*)"
BOOLEAN_REGEX = r"(true|false)"
#: An ``int`` field with ``ge`` and ``le`` becomes an alternation of its values up to this many.
MAX_ENUMERATED_INTS = 1000
SUPPORTED_TYPES = "str, int, bool and Literal[...] of strings, ints or bools"


def regex_for_schema(model: type[BaseModel], *, max_string_length: int | None = None,
                     max_int_digits: int | None = None) -> str:
    r"""A regular expression for ``model``'s JSON exactly as ``json.dumps`` lays it out.

    Fields come in declaration order, separated by ``", "``, each written ``"key": value``::

        >>> class Pet(BaseModel):
        ...     name: str
        ...     legs: int
        >>> print(regex_for_schema(Pet))
        \{"name": "[^"\\\x00-\x1f]*", "legs": -?(0|[1-9][0-9]*)\}

    Field types: ``str`` (no escapes or control characters; ``min_length``/``max_length`` are
    honoured), ``int`` (``ge``/``le``, or ``gt``/``lt``, are honoured when both ends are given and
    the range holds at most 1000 values: the regex lists them), ``bool`` and ``Literal[...]`` of
    strings, ints or bools. A ``Literal`` string is written as itself, non-ASCII characters
    included (``json.dumps(..., ensure_ascii=False)``), as a model would write it.

    ``max_string_length`` and ``max_int_digits`` bound the strings and integers that have no
    bound of their own. With both, the pattern matches finitely many texts, so constrained
    generation is sure to end (a model that drifts inside an unbounded string can write until it
    runs out of tokens); every text they allow is still valid for ``model``.

    Raises:
        TypeError: ``model`` is not a pydantic model class.
        ValueError: a field has another type (nested model, list, float, Optional...) or a
            constraint the regex cannot express; the message names the field.
    """
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError("regex_for_schema expects a pydantic model class (a subclass of pydantic.BaseModel), "
                        f"got {model!r}: pass the class itself, e.g. regex_for_schema(Record), "
                        "not an instance or a dict")
    if not model.model_fields:
        raise ValueError(f"{model.__name__} has no fields: give the schema at least one field")
    for name, bound in [("max_string_length", max_string_length), ("max_int_digits", max_int_digits)]:
        if bound is not None and (not isinstance(bound, int) or bound < 1):
            raise ValueError(f"{name} must be a positive int or None, got {bound!r}")
    members = []
    for name, field in model.model_fields.items():
        value = _field_regex(f"{model.__name__}.{name}", field.annotation, _constraints(field),
                             max_string_length, max_int_digits)
        key = re.escape(json.dumps(field.alias or name, ensure_ascii=False))
        members.append(f"{key}: {value}")
    return r"\{" + ", ".join(members) + r"\}"


def _field_regex(where: str, annotation: Any, constraints: dict[str, Any],
                 max_string_length: int | None, max_int_digits: int | None) -> str:
    """The regex of one field's value; ``where`` (``"Record.age"``) names the field in errors."""
    if annotation is str:
        return _string_regex(where, constraints, max_string_length)
    if annotation is int:
        return _integer_regex(where, constraints, max_int_digits)
    if constraints:
        raise ValueError(f"field {where}: constraints {sorted(constraints)} on {_type_name(annotation)} are not "
                         "supported; remove them (only str lengths and int ranges are)")
    if annotation is bool:
        return BOOLEAN_REGEX
    if typing.get_origin(annotation) is Literal:
        return _literal_regex(where, typing.get_args(annotation))
    raise ValueError(f"field {where} has type {_type_name(annotation)}, which regex_for_schema does not support: "
                     f"use one of {SUPPORTED_TYPES} (nested models, lists, floats and Optional are not supported)")


def _constraints(field: Any) -> dict[str, Any]:
    """``{"max_length": 10, "ge": 0, ...}``: the constraints pydantic keeps in ``field.metadata``."""
    found: dict[str, Any] = {}
    for item in field.metadata:  # annotated_types dataclasses (MaxLen, Ge...) or pydantic's own metadata
        found.update({f.name: getattr(item, f.name) for f in dataclasses.fields(item)}
                     if dataclasses.is_dataclass(item) else vars(item))
    return {key: value for key, value in found.items() if value is not None and key != "strict"}


def _string_regex(where: str, constraints: dict[str, Any], max_string_length: int | None) -> str:
    unknown = set(constraints) - {"min_length", "max_length"}
    if unknown:
        raise ValueError(f"field {where}: str constraints {sorted(unknown)} are not supported; "
                         "only min_length and max_length are")
    low, high = constraints.get("min_length", 0), constraints.get("max_length", max_string_length)
    if high is not None and high < low:
        raise ValueError(f"field {where}: max_length {high} is below min_length {low}; "
                         "raise max_string_length or the field's max_length")
    if low == 0 and high is None:
        return STRING_REGEX
    return f'"{STRING_CHAR}{{{low},{"" if high is None else high}}}"'


def _integer_regex(where: str, constraints: dict[str, Any], max_int_digits: int | None) -> str:
    unknown = set(constraints) - {"ge", "gt", "le", "lt"}
    if unknown:
        raise ValueError(f"field {where}: int constraints {sorted(unknown)} are not supported; only ge/gt/le/lt are")
    if not constraints:
        return INTEGER_REGEX if max_int_digits is None else f"-?(0|[1-9][0-9]{{0,{max_int_digits - 1}}})"
    low = constraints["ge"] if "ge" in constraints else constraints["gt"] + 1 if "gt" in constraints else None
    high = constraints["le"] if "le" in constraints else constraints["lt"] - 1 if "lt" in constraints else None
    if low is None or high is None or high - low + 1 > MAX_ENUMERATED_INTS:
        raise ValueError(f"field {where}: an int bound is supported only as a closed range of at most "
                         f"{MAX_ENUMERATED_INTS} values (both ge and le), got {constraints}; "
                         "give both ends, or use Literal[...] for a few values")
    if high < low:
        raise ValueError(f"field {where}: the range [{low}, {high}] is empty; check ge/le")
    return "(" + "|".join(str(value) for value in range(low, high + 1)) + ")"


def _literal_regex(where: str, values: tuple[Any, ...]) -> str:
    bad = [value for value in values if not isinstance(value, (str, int))]
    if bad:
        raise ValueError(f"field {where}: Literal values must be strings, ints or bools, got {bad[0]!r}")
    return "(" + "|".join(re.escape(json.dumps(value, ensure_ascii=False)) for value in values) + ")"


def _type_name(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else repr(annotation).replace("typing.", "")


# --------------------------------------------------------------------------------------------
# 2. Regex -> character automaton


class CharFSM:
    """A deterministic finite-state machine over characters, built from a regex by ``interegular``.

    States are ints. ``step(state, char)`` is the state after one more character, or ``None``
    when no string of the pattern continues that way; ``walk`` does it for a whole text. States
    from which no final state can be reached ("dead" states) count as ``None`` too, so a
    non-``None`` state can always still be completed into a match.

    >>> fsm = CharFSM.from_regex("(ab|ac)+")
    >>> fsm.is_final(fsm.walk(fsm.initial, "abac")), fsm.walk(fsm.initial, "ad")
    (True, None)
    """

    def __init__(self, fsm: FSM) -> None:
        if not isinstance(fsm, FSM):
            raise TypeError(f"CharFSM wraps an interegular FSM, got {type(fsm).__name__}: "
                            "use CharFSM.from_regex(pattern) to build one from a regular expression")
        self.pattern: str | None = None
        self.initial: int = fsm.initial
        self.finals: frozenset[int] = frozenset(fsm.finals)
        # interegular groups characters that behave alike under one "transition key";
        # characters outside its alphabet use the key of `anything_else` (if any).
        self._keys: dict[str, int] = {char: key for char, key in fsm.alphabet.items() if char is not anything_else}
        self._other_key: int | None = fsm.alphabet[anything_else] if anything_else in fsm.alphabet else None
        self._representatives = _representative_chars(fsm)
        live = {state for state in fsm.states if fsm.islive(state)}
        self.states: frozenset[int] = frozenset(live)   # the states from which a match can be completed
        self._map: dict[int, dict[int, int]] = {
            state: {key: target for key, target in fsm.map.get(state, {}).items() if target in live}
            for state in live}

    @classmethod
    def from_regex(cls, regex: str) -> CharFSM:
        """Parse ``regex`` (Python syntax, without backreferences, ``\\b`` or anchors) into a DFA."""
        if not isinstance(regex, str):
            raise TypeError(f"regex must be a string, got {type(regex).__name__}")
        if regex == "":
            raise ValueError("the regex is empty: it matches only the empty string, so there is nothing to "
                             "generate; give a pattern such as regex_for_schema(Record)")
        try:
            fsm = interegular.parse_pattern(regex).to_fsm().reduce()  # reduce(): the minimal DFA
        except Exception as error:  # interegular raises bare Exceptions for some patterns
            raise ValueError(f"interegular cannot turn the regex {_clip(regex)!r} into an automaton "
                             f"({type(error).__name__}: {error}); backreferences, \\b and some lookarounds "
                             "are not supported: rewrite the pattern without them") from error
        char_fsm = cls(fsm)
        char_fsm.pattern = regex
        return char_fsm

    def step(self, state: int, char: str) -> int | None:
        """The state after reading one character ``char`` in ``state``; ``None`` if no match continues so."""
        key = self._keys.get(char, self._other_key)
        if key is None or state not in self._map:
            return None
        return self._map[state].get(key)

    def is_final(self, state: int) -> bool:
        """Whether the text read so far is a complete match."""
        return state in self.finals

    def walk(self, state: int, text: str) -> int | None:
        """The state after reading every character of ``text`` from ``state``; ``None`` if one fails."""
        for char in text:
            state = self.step(state, char)
            if state is None:
                return None
        return state

    def shortest_match(self) -> str | None:
        """A shortest string the pattern accepts, ``None`` if it accepts none.

        Breadth-first search from the initial state, trying characters in alphabetical order
        (a character class is represented by its first character).
        """
        if self.initial not in self.states:
            return None
        paths, queue = {self.initial: ""}, deque([self.initial])
        while queue:
            state = queue.popleft()
            if self.is_final(state):
                return paths[state]
            moves = sorted((self._representatives[key], target) for key, target in self._map[state].items())
            for char, target in moves:
                if target not in paths:
                    paths[target] = paths[state] + char
                    queue.append(target)
        return None

    def __repr__(self) -> str:
        pattern = f"{_clip(self.pattern)!r}, " if self.pattern is not None else ""
        return f"CharFSM({pattern}{len(self.states)} live states, {len(self.finals & self.states)} final)"


def _representative_chars(fsm: FSM) -> dict[int, str]:
    """One character for each transition key (for ``anything_else``, one outside the alphabet)."""
    chosen = {}
    for key, symbols in fsm.alphabet.by_transition.items():
        chars = sorted(s for s in symbols if s is not anything_else)
        if chars:
            chosen[key] = chars[0]
        else:
            candidates = string.ascii_lowercase + string.digits + " " + string.ascii_uppercase + "\u00e9\u4e00"
            chosen[key] = next((c for c in candidates if c not in fsm.alphabet), "\uffff")
    return chosen


def _clip(text: str | None, limit: int = 80) -> str | None:
    return text if text is None or len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# 3. Characters -> tokens


def token_transitions(fsm: CharFSM, state: int, token_strings: list[str]) -> dict[int, int]:
    """Reference for the lab's exercise: the tokens allowed in ``state``, each mapped to the state after it.

    A token is allowed when the automaton accepts *every* character of its text in sequence from
    ``state``. Empty texts (special tokens) and texts containing ``'\\ufffd'`` (a piece of a
    multi-byte character) are never allowed.

    Args:
        fsm: the character automaton.
        state: the state to start from.
        token_strings: the text of each token; position ``i`` is token id ``i``.

    Returns:
        ``{token_id: state after the token}`` for the allowed tokens.
    """
    transitions = {}
    for token_id, text in enumerate(token_strings):
        if text == "" or "\ufffd" in text:
            continue
        end = fsm.walk(state, text)
        if end is not None:
            transitions[token_id] = end
    return transitions


class TokenIndex:
    """For every automaton state that tokens can reach: which tokens are allowed, and where each leads.

    Built once per (pattern, tokenizer), like Outlines' index:

    1. explore, breadth first from the initial state, every state reachable through tokens,
       computing each state's transitions with :func:`token_transitions`;
    2. prune dead ends: drop the states from which no *token* path reaches a final state (a
       state can be live for characters yet dead for tokens), and the transitions into them;
    3. keep, for each remaining state, a ``Bool[Tensor, "vocab"]`` mask of the allowed tokens.
       EOS is allowed exactly in final states, so generation can stop only on a complete match.

    After pruning every state allows at least one token, so constrained generation never gets
    stuck. If no token path reaches a final state at all, building raises ``ValueError``.

    Limitation: the index works on characters. A token that is only part of a multi-byte UTF-8
    character (its text contains ``'\\ufffd'``) is never allowed, so a pattern that needs a
    character no whole token spells (``Literal["café"]`` with an ASCII vocabulary) cannot be
    produced; Outlines works on bytes instead and can.

    Attributes:
        fsm: the character automaton.
        initial: the automaton's initial state.
        eos_token_id: the token that ends generation.
        vocab_size: ``len(tokenizer)``: the length of each mask.
        token_strings: the text of each token (see :func:`token_strings`).
        transitions: ``{state: {token_id: next_state}}`` for the states kept.
        max_new_tokens: the most tokens a constrained generation can take, EOS included (``None``
            when the pattern allows texts of any length, e.g. an unbounded string).
        build_seconds: how long building took.
    """

    def __init__(self, pattern: str | CharFSM, tokenizer: PreTrainedTokenizerBase) -> None:
        start = time.perf_counter()
        self.fsm = pattern if isinstance(pattern, CharFSM) else CharFSM.from_regex(pattern)
        self.token_strings = token_strings(tokenizer)
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token (tokenizer.eos_token_id is None): constrained "
                             "generation needs one to end on a complete match; set tokenizer.eos_token = ...")
        self.eos_token_id: int = tokenizer.eos_token_id
        self.vocab_size = len(self.token_strings)
        self.initial = self.fsm.initial
        reachable = self._explore()
        self.transitions = self._prune(reachable)
        if self.initial not in self.transitions:
            raise ValueError(self._unsatisfiable_message(reachable))
        self._masks = {state: self._mask(state) for state in self.transitions}
        self.max_new_tokens = self._longest_generation()
        self.build_seconds = time.perf_counter() - start

    @property
    def states(self) -> list[int]:
        """The automaton states the index keeps (reachable through tokens, not dead ends)."""
        return list(self.transitions)

    def _explore(self) -> dict[int, dict[int, int]]:
        """``{state: {token: next state}}`` for every state reachable through tokens from the start."""
        found: dict[int, dict[int, int]] = {}
        queue = deque([self.initial]) if self.initial in self.fsm.states else deque()
        while queue:
            state = queue.popleft()
            if state in found:
                continue
            found[state] = token_transitions(self.fsm, state, self.token_strings)
            queue.extend(target for target in found[state].values() if target not in found)
        return found

    def _prune(self, reachable: dict[int, dict[int, int]]) -> dict[int, dict[int, int]]:
        """Drop states with no token path to a final state, repeatedly, until none is left to drop."""
        kept = dict(reachable)
        while True:
            dead = [state for state, moves in kept.items()
                    if not self.fsm.is_final(state) and not any(target in kept for target in moves.values())]
            if not dead:
                break
            for state in dead:
                del kept[state]
        return {state: {token: target for token, target in moves.items() if target in kept}
                for state, moves in kept.items()}

    def _mask(self, state: int) -> Bool[Tensor, "vocab"]:
        mask = torch.zeros(self.vocab_size, dtype=torch.bool)
        mask[list(self.transitions[state])] = True
        if self.fsm.is_final(state):
            mask[self.eos_token_id] = True
        return mask

    def _longest_generation(self) -> int | None:
        """The most tokens a constrained generation can take, EOS included; ``None`` if unbounded.

        The longest token path from the initial state to a final state (depth-first search with
        memory); a cycle among the kept states means texts of any length are possible.
        """
        longest: dict[int, int] = {}
        on_path: set[int] = set()

        def tokens_from(state: int) -> int | None:  # the most tokens from `state` to the end, EOS included
            if state in longest:
                return longest[state]
            if state in on_path:  # a cycle: no bound
                return None
            on_path.add(state)
            most = 1 if self.is_final(state) else 0
            for target in set(self.transitions[state].values()):
                after = tokens_from(target)
                if after is None:
                    return None
                most = max(most, 1 + after)
            on_path.discard(state)
            longest[state] = most
            return most

        return tokens_from(self.initial)

    def _unsatisfiable_message(self, reachable: dict[int, dict[int, int]]) -> str:
        """Why no token path reaches a final state: how far tokens get, and the characters they lack."""
        pattern = f"the pattern {_clip(self.fsm.pattern)!r}" if self.fsm.pattern else "this CharFSM"
        shortest = self.fsm.shortest_match()
        if shortest is None:
            return (f"{pattern} matches no string at all (its automaton has no reachable final state), so "
                    "nothing can be generated: look for an empty character class or contradictory parts")
        reached = max(k for k in range(len(shortest) + 1) if self.fsm.walk(self.initial, shortest[:k]) in reachable)
        vocabulary = set("".join(text for text in self.token_strings if "\ufffd" not in text))
        missing = sorted(set(shortest) - vocabulary)
        lacking = f"; no token spells the character(s) {missing}" if missing else ""
        return (f"no sequence of tokens spells a string that {pattern} accepts: tokens can write "
                f"{shortest[:reached]!r}, the start of its shortest match {shortest!r}, but no token continues it "
                f"with {shortest[reached:reached + 1]!r}{lacking}. This index works on characters and cannot "
                "use tokens that are parts of a multi-byte character: change the pattern to characters the "
                "vocabulary has (e.g. ASCII), or use a byte-level index such as Outlines'")

    def allowed(self, state: int) -> Bool[Tensor, "vocab"]:
        """The mask of tokens allowed in ``state``: shape ``[vocab_size]``."""
        if state not in self._masks:
            raise KeyError(f"state {state} is not in the index (its states: {sorted(self._masks)[:10]}...): "
                           "use index.initial or a state returned by index.next_state")
        return self._masks[state]

    def next_state(self, state: int, token_id: int) -> int:
        """The state after ``token_id`` in ``state``; ``ValueError`` if the token is not allowed there."""
        try:
            return self.transitions[state][token_id]
        except KeyError:
            text = self.token_strings[token_id] if 0 <= token_id < self.vocab_size else "<out of vocabulary>"
            raise ValueError(f"token {token_id} ({text!r}) is not allowed in state {state}: sample from "
                             "logits masked with index.allowed(state)") from None

    def is_final(self, state: int) -> bool:
        """Whether ``state`` completes a match (EOS is allowed there)."""
        return self.fsm.is_final(state)

    def __repr__(self) -> str:
        return (f"TokenIndex({len(self.transitions)} states, vocab {self.vocab_size}, "
                f"built in {self.build_seconds:.2f} s)")


# --------------------------------------------------------------------------------------------
# 4. Masking logits

#: A row's state once it has generated EOS: from then on only EOS (padding) is allowed.
FINISHED = -1


def mask_disallowed(scores: Float[Tensor, "batch vocab"], allowed: Bool[Tensor, "batch index_vocab"]
                    ) -> Float[Tensor, "batch vocab"]:
    """The masking step of constrained decoding: ``scores`` with every token that ``allowed`` does
    not allow set to ``-inf``, so that sampling or the argmax can only pick an allowed token.

    ``allowed`` has one column per token of the tokenizer (a :class:`TokenIndex` mask per row).
    A model's embedding matrix may be padded past the tokenizer (``scores`` then has more
    columns): those extra ids are no token at all and are never allowed.
    """
    if allowed.shape[0] != scores.shape[0] or allowed.shape[-1] > scores.shape[-1]:
        raise ValueError(f"allowed {tuple(allowed.shape)} does not fit scores {tuple(scores.shape)}: give one row "
                         "per row of scores, with at most as many columns (one per token of the tokenizer)")
    padding = scores.shape[-1] - allowed.shape[-1]
    allowed = torch.nn.functional.pad(allowed, (0, padding), value=False)          # [batch, vocab]
    return scores.masked_fill(~allowed, -torch.inf)


class SchemaLogitsProcessor(LogitsProcessor):
    """A ``transformers`` logits processor that allows only tokens continuing a match of ``index``.

    ``processor(input_ids, scores)`` takes ``input_ids: Int[Tensor, "batch seq"]`` (the prompt,
    ``prompt_length`` tokens, then the tokens generated so far) and ``scores:
    Float[Tensor, "batch vocab"]`` (the next-token logits), and returns the scores with every
    disallowed token at ``-inf``. It reads only the tokens that are new since its last call, so
    each step costs one state lookup per row; rows are independent. After a row's EOS, only EOS
    is allowed (``generate`` pads finished rows with ``pad_token_id``, which must be EOS).

    Use one processor per generation: a call whose ``input_ids`` hold only the prompt starts over.

        processor = SchemaLogitsProcessor(index, prompt_length=input_ids.shape[1])
        model.generate(input_ids, logits_processor=LogitsProcessorList([processor]), ...)
    """

    def __init__(self, index: TokenIndex, prompt_length: int) -> None:
        if not isinstance(index, TokenIndex):
            raise TypeError(f"expected a TokenIndex, got {type(index).__name__}: "
                            "build one with TokenIndex(regex, tokenizer)")
        if not isinstance(prompt_length, int) or prompt_length < 0:
            raise ValueError("prompt_length must be a non-negative int (the number of prompt tokens), "
                             f"got {prompt_length!r}")
        self.index = index
        self.prompt_length = prompt_length
        self.states: list[int] = []      # one per row
        self._seen = 0                    # tokens after the prompt already read
        self._only_eos = torch.zeros(index.vocab_size, dtype=torch.bool)
        self._only_eos[index.eos_token_id] = True

    def __call__(self, input_ids: Int[Tensor, "batch seq"], scores: Float[Tensor, "batch vocab"]
                 ) -> Float[Tensor, "batch vocab"]:
        self._check_shapes(input_ids, scores)
        if input_ids.shape[1] == self.prompt_length or not self.states:
            self.states, self._seen = [self.index.initial] * input_ids.shape[0], 0
        new_tokens = input_ids[:, self.prompt_length + self._seen:].tolist()      # [batch, new]
        self.states = [self._advance(state, tokens) for state, tokens in zip(self.states, new_tokens)]
        self._seen += len(new_tokens[0])
        allowed = torch.stack([self._allowed(state) for state in self.states])  # [batch, index vocab]
        return mask_disallowed(scores, allowed.to(scores.device))

    def _advance(self, state: int, tokens: list[int]) -> int:
        for token in tokens:
            if state == FINISHED or (token == self.index.eos_token_id and self.index.is_final(state)):
                state = FINISHED
            else:
                state = self.index.next_state(state, token)
        return state

    def _allowed(self, state: int) -> Bool[Tensor, "vocab"]:
        return self._only_eos if state == FINISHED else self.index.allowed(state)

    def _check_shapes(self, input_ids: Tensor, scores: Tensor) -> None:
        if input_ids.dim() != 2 or scores.dim() != 2:
            raise ValueError(f"expected input_ids [batch, seq] and scores [batch, vocab], got shapes "
                             f"{tuple(input_ids.shape)} and {tuple(scores.shape)}: pass the logits of the last "
                             "position only, logits[:, -1]")
        if input_ids.shape[0] != scores.shape[0]:
            raise ValueError(f"input_ids has {input_ids.shape[0]} rows but scores has {scores.shape[0]}: "
                             "pass the same batch to both")
        if input_ids.shape[1] < self.prompt_length:
            raise ValueError(f"input_ids has {input_ids.shape[1]} positions but prompt_length is "
                             f"{self.prompt_length}: prompt_length must be the number of prompt tokens, "
                             "input_ids.shape[1] before generation starts")
        if scores.shape[-1] < self.index.vocab_size:
            raise ValueError(f"scores have {scores.shape[-1]} columns but the index's tokenizer has "
                             f"{self.index.vocab_size} tokens: build the index with the model's own tokenizer")
        if self.states and input_ids.shape[1] > self.prompt_length and input_ids.shape[0] != len(self.states):
            raise ValueError(f"the batch changed from {len(self.states)} to {input_ids.shape[0]} rows during "
                             "generation: use a new SchemaLogitsProcessor for each generation")


# --------------------------------------------------------------------------------------------
# 5. Sampling and checking records

#: The corpus writes ``Record: {...}``: the space after the colon begins the first token of the
#: JSON (``'Ġ{'``), so it belongs to the generated text, not to the prompt.
RECORD_PREFIX = " "
#: Bounds that make the records' language finite, so generation always ends (the world's longest
#: value, "Copenhagen", has 10 characters; its ages have 2 digits).
RECORD_MAX_STRING_LENGTH, RECORD_MAX_INT_DIGITS = 20, 3
#: The world's ranges (``utils.world.families.record``): ages are drawn from 18..90.
AGE_RANGE = (18, 90)


def record_index(tokenizer: PreTrainedTokenizerBase, schema: type[BaseModel] = Record) -> TokenIndex:
    """The index of what follows ``Record:`` in the corpus: a space, then ``schema``'s JSON with
    strings of at most 20 characters and integers of at most 3 digits."""
    regex = regex_for_schema(schema, max_string_length=RECORD_MAX_STRING_LENGTH,
                             max_int_digits=RECORD_MAX_INT_DIGITS)
    return TokenIndex(RECORD_PREFIX + regex, tokenizer)


def constrained_records(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, n: int, *, seed: int,
    schema: type[BaseModel] = Record, index: TokenIndex | None = None, temperature: float = 1.0,
    prompt: str = "Record:", max_new_tokens: int | None = None,
) -> list[str]:
    """``n`` texts sampled after ``prompt`` with every token constrained to ``schema``'s JSON.

    One batch of ``n`` rows (they share the prompt, so no padding), ``model.generate`` with
    pure sampling (no top-k) at ``temperature`` and a :class:`SchemaLogitsProcessor`. ``index``
    defaults to :func:`record_index` of ``schema``; pass one to reuse it across calls.
    ``max_new_tokens`` defaults to ``index.max_new_tokens``, enough for the longest text the
    pattern allows, so every row ends with a complete match.
    """
    index = index if index is not None else record_index(tokenizer, schema)
    if index.vocab_size != len(tokenizer):
        raise ValueError(f"the index was built for a vocabulary of {index.vocab_size} tokens, the tokenizer has "
                         f"{len(tokenizer)}: build the index with this tokenizer")
    max_new_tokens = max_new_tokens if max_new_tokens is not None else index.max_new_tokens
    if max_new_tokens is None:
        raise ValueError("the index's pattern allows texts of any length, so no max_new_tokens is sure to be enough: "
                         "pass max_new_tokens, or bound the pattern (regex_for_schema(..., max_string_length=..., "
                         "max_int_digits=...))")
    return _sample(model, tokenizer, n, seed=seed, temperature=temperature, prompt=prompt,
                   max_new_tokens=max_new_tokens, index=index)


def unconstrained_records(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, n: int, *, seed: int,
    temperature: float = 1.0, prompt: str = "Record:", max_new_tokens: int = 64,
) -> list[str]:
    """The baseline: the same sampling as :func:`constrained_records` without the constraint,
    each text cut at its first newline (a record is one line)."""
    texts = _sample(model, tokenizer, n, seed=seed, temperature=temperature, prompt=prompt,
                    max_new_tokens=max_new_tokens, index=None)
    return [text.split("\n")[0] for text in texts]


def _sample(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, n: int, *, seed: int, temperature: float,
            prompt: str, max_new_tokens: int, index: TokenIndex | None) -> list[str]:
    """``n`` samples after ``prompt`` with :func:`utils.decoding.generate`, constrained to ``index`` unless it is None."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int (the number of records), got {n!r}")
    prompt_ids = torch.tensor([encode(tokenizer, prompt)] * n, device=model.device)    # [n, prompt]
    processors = [SchemaLogitsProcessor(index, prompt_ids.shape[1])] if index is not None else []
    tokens = generate(model, prompt_ids, max_new_tokens, decoding=Decoding(temperature, logits_processors=processors),
                      eos_token_id=tokenizer.eos_token_id, generator=torch.Generator().manual_seed(seed))
    return tokenizer.batch_decode(tokens[:, prompt_ids.shape[1]:], skip_special_tokens=True)


def validate_records(texts: Sequence[str], model: type[BaseModel] = Record) -> tuple[float, list[BaseModel]]:
    """The share of ``texts`` that are valid ``model`` JSON (pydantic ``model_validate_json``), and the
    parsed records of the valid ones, in order."""
    if isinstance(texts, str) or not texts:
        raise ValueError("texts must be a non-empty list of strings (one record each), "
                         f"got {'a single string' if isinstance(texts, str) else 'an empty list'}")
    parsed = []
    for text in texts:
        try:
            parsed.append(model.model_validate_json(text))
        except ValidationError:
            pass
    return len(parsed) / len(texts), parsed


def plausibility(records: Iterable[BaseModel | dict[str, Any]]) -> dict[str, float]:
    """How world-like valid records are: the share with a known name (``NAMES``), city (a value of
    ``CAPITALS``), job (``JOBS``), and an age in the generator's range 18..90."""
    rows = [record.model_dump() if isinstance(record, BaseModel) else dict(record) for record in records]
    if not rows:
        raise ValueError("no records to score: pass the parsed records from validate_records (are none valid?)")
    cities, (youngest, oldest) = set(CAPITALS.values()), AGE_RANGE
    checks = {"name": lambda row: row.get("name") in NAMES,
              "age": lambda row: isinstance(row.get("age"), int) and youngest <= row["age"] <= oldest,
              "city": lambda row: row.get("city") in cities,
              "job": lambda row: row.get("job") in JOBS}
    return {field: sum(map(check, rows)) / len(rows) for field, check in checks.items()}
