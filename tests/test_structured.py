"""Tests for utils/structured.py: schema -> regex -> character automaton -> token index -> constrained sampling.

The ground truth of the chapter: constrained decoding makes *every* sampled record valid for the
``Record`` schema (the unconstrained baseline is not), and the records stay world-like.
"""

from __future__ import annotations

import json
import random
import re
import time
from typing import Literal, Optional

import outlines_core
import pytest
import torch
from interegular.fsm import FSM, Alphabet
from outlines_core.json_schema import build_regex_from_schema
from pydantic import BaseModel, Field
from transformers import LogitsProcessorList

from utils.checkers.prompting import check_token_transitions
from utils.checks import assert_accepts, assert_rejects
from utils.course_model.evaluate import Record, encode
from utils.models import load_model, load_tokenizer
from utils.structured import (
    INTEGER_REGEX, CharFSM, SchemaLogitsProcessor, TokenIndex, constrained_records, mask_disallowed, plausibility,
    record_index, regex_for_schema, token_strings, token_transitions, unconstrained_records, validate_records,
)
from utils.world import eval_set

N_SAMPLES = 200
#: Measured on the course model (seed 0, 200 samples): name 0.99, age 1.0, city 0.935, job 0.985.
PLAUSIBILITY_THRESHOLDS = {"name": 0.9, "age": 0.95, "city": 0.85, "job": 0.9}


@pytest.fixture(scope="module")
def index(course_tokenizer):
    return record_index(course_tokenizer)


@pytest.fixture(scope="module")
def strings(course_tokenizer):
    return token_strings(course_tokenizer)


def generated_records(n: int = 200, seed: int = 3) -> list[str]:
    """``json.dumps`` of the world's records, as the corpus writes them."""
    return [json.dumps(doc.labels["record"]) for doc in eval_set("record", n, seed=seed)]


class Pet(BaseModel):
    """A schema with only finite choices: any model, even a random one, can finish it quickly."""

    animal: Literal["cat", "dog", "bird"]
    legs: Literal[2, 4]
    wild: bool


# --------------------------------------------------------------------------------------------
# 1. Schema -> regex


def test_every_generated_record_matches_the_record_regex():
    for regex in [regex_for_schema(Record), regex_for_schema(Record, max_string_length=20, max_int_digits=3)]:
        pattern = re.compile(regex)
        for text in generated_records():
            assert pattern.fullmatch(text), (text, regex)


def test_outlines_regex_for_the_schema_matches_the_same_records():
    """outlines_core's regex (Python ``re`` syntax) accepts every record our regex accepts."""
    outlines_regex = re.compile(build_regex_from_schema(json.dumps(Record.model_json_schema())))
    for text in generated_records():
        assert outlines_regex.fullmatch(text), text


@pytest.mark.parametrize("text", [
    '{"name": "Anna", "age": "42", "city": "Paris", "job": "baker"}',   # age as a string
    '{"name": "Anna", "age": 42, "city": "Paris"}',                     # a field missing
    '{"age": 42, "name": "Anna", "city": "Paris", "job": "baker"}',     # another order
    '{"name":"Anna","age":42,"city":"Paris","job":"baker"}',            # compact separators
    '{"name": "Anna", "age": 042, "city": "Paris", "job": "baker"}',    # leading zero
    '{"name": "An"na", "age": 42, "city": "Paris", "job": "baker"}',    # a quote inside a string
    '{"name": "Anna", "age": 42, "city": "Paris", "job": "baker", "x": 1}',
])
def test_record_regex_rejects_other_texts(text):
    assert re.fullmatch(regex_for_schema(Record), text) is None


def test_field_types_and_constraints():
    class Item(BaseModel):
        code: str = Field(min_length=2, max_length=3)
        count: int = Field(ge=-1, le=12)
        size: Literal["S", "M", 'a "big" one']
        fresh: bool

    pattern = re.compile(regex_for_schema(Item))
    valid = [Item(code="ab", count=-1, size="S", fresh=True), Item(code="xyz", count=12, size='a "big" one', fresh=False)]
    for item in valid:
        assert pattern.fullmatch(json.dumps(item.model_dump()))
    for invalid in [dict(code="a", count=0, size="S", fresh=True), dict(code="abcd", count=0, size="S", fresh=True),
                    dict(code="ab", count=13, size="S", fresh=True), dict(code="ab", count=0, size="L", fresh=True)]:
        assert not pattern.fullmatch(json.dumps(invalid)), invalid


def test_bounds_make_strings_and_integers_finite():
    regex = regex_for_schema(Record, max_string_length=4, max_int_digits=2)
    assert re.fullmatch(regex, '{"name": "Anna", "age": 99, "city": "Rome", "job": ""}')
    assert not re.fullmatch(regex, '{"name": "Annie", "age": 9, "city": "Rome", "job": ""}')
    assert not re.fullmatch(regex, '{"name": "Anna", "age": 100, "city": "Rome", "job": ""}')


class Inner(BaseModel):
    x: int


@pytest.mark.parametrize(("annotation", "shown"), [
    (float, "float"), (list[str], "list"), (Optional[str], "Optional|None"), (Inner, "Inner"), (dict, "dict"),
])
def test_unsupported_field_types_raise_naming_the_field(annotation, shown):
    model = type("Bad", (BaseModel,), {"__annotations__": {"name": str, "value": annotation}})
    with pytest.raises(ValueError, match=rf"field Bad\.value has type .*({shown}).*use one of str, int, bool and Literal"):
        regex_for_schema(model)


@pytest.mark.parametrize(("annotation", "field", "message"), [
    (str, Field(pattern="a+"), r"field Bad\.value: str constraints \['pattern'\] are not supported"),
    (int, Field(ge=0), r"field Bad\.value: an int bound is supported only as a closed range"),
    (int, Field(ge=0, le=10**6), r"closed range of at most 1000 values"),
    (int, Field(multiple_of=2), r"int constraints \['multiple_of'\] are not supported"),
])
def test_unsupported_constraints_raise(annotation, field, message):
    model = type("Bad", (BaseModel,), {"__annotations__": {"value": annotation}, "value": field})
    with pytest.raises(ValueError, match=message):
        regex_for_schema(model)


@pytest.mark.parametrize("not_a_model", [dict, Record(name="A", age=1, city="B", job="C"), {"name": str}, int])
def test_regex_for_schema_needs_a_pydantic_class(not_a_model):
    with pytest.raises(TypeError, match="expects a pydantic model class.*pass the class itself"):
        regex_for_schema(not_a_model)


def test_regex_for_schema_rejects_bad_bounds():
    with pytest.raises(ValueError, match="max_string_length must be a positive int"):
        regex_for_schema(Record, max_string_length=0)


# --------------------------------------------------------------------------------------------
# 2. The character automaton


def test_char_fsm_steps_walks_and_accepts():
    fsm = CharFSM.from_regex("(ab|ac)+")
    after_a = fsm.step(fsm.initial, "a")
    assert after_a is not None and not fsm.is_final(after_a)
    assert fsm.is_final(fsm.walk(fsm.initial, "abacab"))
    assert fsm.walk(fsm.initial, "aba") is not None and not fsm.is_final(fsm.walk(fsm.initial, "aba"))
    assert fsm.walk(fsm.initial, "abb") is None
    assert fsm.step(fsm.initial, "z") is None                  # a character outside the alphabet
    assert fsm.walk(fsm.initial, "") == fsm.initial
    assert fsm.shortest_match() == "ab"


def test_char_fsm_negated_classes_accept_any_other_character():
    fsm = CharFSM.from_regex('"[^"]*"')
    inside = fsm.step(fsm.initial, '"')
    for char in "aZ é\u4e00\ufffd":
        assert fsm.step(inside, char) == inside
    assert fsm.is_final(fsm.step(inside, '"'))


def test_char_fsm_treats_dead_states_as_none():
    # interegular may keep states from which no match can be completed: step() never returns them.
    fsm = CharFSM.from_regex("a(?!)|b")
    assert fsm.step(fsm.initial, "a") is None
    assert fsm.is_final(fsm.step(fsm.initial, "b"))


@pytest.mark.parametrize(("regex", "error", "message"), [
    ("", ValueError, "the regex is empty"),
    (r"(a)\1", ValueError, "cannot turn the regex.*backreferences"),
    ("(", ValueError, "cannot turn the regex"),
    (42, TypeError, "regex must be a string"),
])
def test_char_fsm_bad_regex(regex, error, message):
    with pytest.raises(error, match=message):
        CharFSM.from_regex(regex)


# --------------------------------------------------------------------------------------------
# 3. token_transitions (the exercise) and its checker

HAND_MADE_TOKENS = ["a", "b", "ab", "ac", "abac", "ad", "", "\ufffd", "ba", "aba"]


def test_token_transitions_on_hand_made_tokens():
    fsm = CharFSM.from_regex("(ab|ac)+")
    got = token_transitions(fsm, fsm.initial, HAND_MADE_TOKENS)
    expected = {0: fsm.walk(fsm.initial, "a"), 2: fsm.walk(fsm.initial, "ab"), 3: fsm.walk(fsm.initial, "ac"),
                4: fsm.walk(fsm.initial, "abac"), 9: fsm.walk(fsm.initial, "aba")}
    assert got == expected
    after_a = fsm.walk(fsm.initial, "a")
    assert token_transitions(fsm, after_a, HAND_MADE_TOKENS) == {1: fsm.walk(after_a, "b"), 8: fsm.walk(after_a, "ba")}


def test_token_strings_round_trip_a_record(course_tokenizer, strings):
    assert len(strings) == len(course_tokenizer) and strings[course_tokenizer.eos_token_id] == ""
    text = ' {"name": "Anna", "age": 42, "city": "Paris", "job": "baker"}'
    ids = course_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert "".join(strings[i] for i in ids) == text


def first_character_only(fsm, state, token_strings):
    transitions = {}
    for token_id, text in enumerate(token_strings):
        if text and "\ufffd" not in text and fsm.step(state, text[0]) is not None:
            transitions[token_id] = fsm.walk(state, text)
    return transitions


def allows_the_empty_string(fsm, state, token_strings):
    transitions = {}
    for token_id, text in enumerate(token_strings):
        end = fsm.walk(state, text)
        if "\ufffd" not in text and end is not None:
            transitions[token_id] = end
    return transitions


def state_after_first_character(fsm, state, token_strings):
    transitions = {}
    for token_id, text in enumerate(token_strings):
        if text and "\ufffd" not in text and fsm.walk(state, text) is not None:
            transitions[token_id] = fsm.step(state, text[0])
    return transitions


def allows_replacement_characters(fsm, state, token_strings):
    transitions = {}
    for token_id, text in enumerate(token_strings):
        end = fsm.walk(state, text)
        if text and end is not None:
            transitions[token_id] = end
    return transitions


def test_checker_accepts_the_reference():
    assert_accepts(check_token_transitions(token_transitions))


def test_checker_accepts_an_equivalent_solution():
    def with_step(fsm, state, token_strings):
        allowed = {}
        for token_id, text in enumerate(token_strings):
            current = state if text and "\ufffd" not in text else None
            for char in text:
                current = fsm.step(current, char) if current is not None else None
            if current is not None:
                allowed[token_id] = current
        return allowed

    assert_accepts(check_token_transitions(with_step))


@pytest.mark.parametrize(("wrong", "message"), [
    (first_character_only, r"input ''\(ab\|ac\)\+' at the start.*unexpected key 7.*Hint"),
    (allows_the_empty_string, r"input ''\(ab\|ac\)\+' at the start.*unexpected key 10"),
    (state_after_first_character, r"input ''\(ab\|ac\)\+' at the start.*output\[3\]: expected \d+, got \d+"),
    (allows_replacement_characters, r"input 'inside a JSON string.*unexpected key 6"),
])
def test_checker_rejects(wrong, message):
    assert_rejects(check_token_transitions(wrong), match=message)


def test_checker_reports_an_exception_and_a_wrong_type():
    assert_rejects(check_token_transitions(lambda fsm, state, tokens: 1 / 0), match="ZeroDivisionError")
    assert_rejects(check_token_transitions(lambda fsm, state, tokens: sorted(token_transitions(fsm, state, tokens))),
                   match="expected a dict")


# --------------------------------------------------------------------------------------------
# 4. The token index


def test_record_index_builds_in_a_few_seconds(course_tokenizer):
    start = time.perf_counter()
    built = record_index(course_tokenizer)
    assert time.perf_counter() - start < 5
    assert 50 <= len(built.states) <= 200
    assert built.max_new_tokens is not None and built.max_new_tokens <= 120


def test_every_state_allows_a_token_and_eos_exactly_in_final_states(index):
    eos = index.eos_token_id
    for state in index.states:
        mask = index.allowed(state)
        assert mask.shape == (index.vocab_size,) and mask.dtype == torch.bool
        assert mask.any(), f"state {state} is a dead end"
        assert bool(mask[eos]) == index.is_final(state)
        for token, target in index.transitions[state].items():
            assert mask[token] and target in index.transitions


def test_index_follows_a_record_token_by_token(index, course_tokenizer):
    text = ' {"name": "Anna", "age": 42, "city": "Paris", "job": "baker"}'
    state = index.initial
    for token in course_tokenizer(text, add_special_tokens=False)["input_ids"]:
        assert index.allowed(state)[token]
        state = index.next_state(state, token)
    assert index.is_final(state) and index.allowed(state)[index.eos_token_id]
    with pytest.raises(ValueError, match="not allowed in state"):
        index.next_state(index.initial, course_tokenizer.eos_token_id)


def test_index_prunes_branches_tokens_cannot_finish(course_tokenizer):
    # Tokens can write "x" but never "é" (no whole token spells it), so "x" leads to a dead end.
    built = TokenIndex("(xé|y)z", course_tokenizer)
    allowed = {built.token_strings[t] for t in built.allowed(built.initial).nonzero().flatten().tolist()}
    assert "y" in allowed and "x" not in allowed


def test_max_new_tokens_is_the_longest_generation(course_tokenizer):
    assert TokenIndex("[0-9]{1,3}", course_tokenizer).max_new_tokens == 4   # digits are single tokens, then EOS
    assert TokenIndex(INTEGER_REGEX, course_tokenizer).max_new_tokens is None


@pytest.mark.parametrize("kind", ["record", "bounded record", "integer"])
def test_index_agrees_with_outlines_core(kind, course_tokenizer):
    """Same allowed tokens as ``outlines_core.Index`` (built on bytes, in Rust) on every step of
    real records' token paths and of random token walks.

    outlines gets the vocabulary without EOS and without tokens that decode to '\\ufffd' (which our
    character-level index never uses), so the comparison is exact, EOS included: both allow EOS
    exactly in final states. (On patterns such as ``(ab)+``, outlines_core 0.2.14 leaves out tokens
    that cross the end of one repetition, like "ba" after "a", so those are not compared.)
    """
    regex = {"record": " " + regex_for_schema(Record), "integer": INTEGER_REGEX,
             "bounded record": " " + regex_for_schema(Record, max_string_length=20, max_int_digits=3)}[kind]
    ours = TokenIndex(regex, course_tokenizer)
    vocabulary: dict[str, list[int]] = {}
    for token_id, text in enumerate(ours.token_strings):
        if text and "\ufffd" not in text:
            vocabulary.setdefault(text, []).append(token_id)
    theirs = outlines_core.Index(regex, outlines_core.Vocabulary(course_tokenizer.eos_token_id, vocabulary))

    def allowed(ours_state, their_state):
        return (set(ours.allowed(ours_state).nonzero().flatten().tolist()),
                set(theirs.get_allowed_tokens(their_state)))

    examples = ([str(doc.labels["record"]["age"]) for doc in eval_set("record", 5, seed=3)] if kind == "integer"
                else [" " + text for text in generated_records(5)])
    paths = [course_tokenizer(text, add_special_tokens=False)["input_ids"] for text in examples]
    rng = random.Random(0)
    for _ in range(20):  # random walks through our index, each ending at a final state
        state, walk = ours.initial, []
        while ours.transitions[state] and not (ours.is_final(state) and rng.random() < 0.2):
            token = rng.choice(sorted(ours.transitions[state]))
            walk.append(token)
            state = ours.next_state(state, token)
        paths.append(walk)
    for path in paths:
        ours_state, their_state = ours.initial, theirs.get_initial_state()
        for step, token in enumerate(path):
            mine, outlines = allowed(ours_state, their_state)
            assert mine == outlines, (kind, step, sorted(mine ^ outlines)[:10])
            ours_state, their_state = ours.next_state(ours_state, token), theirs.get_next_state(their_state, token)
        assert ours.is_final(ours_state) and theirs.is_final_state(their_state)
        assert allowed(ours_state, their_state)[0] == allowed(ours_state, their_state)[1]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("regex", ["[]", "a[]b", "a(?!)"])
def test_empty_language_raises_at_build_time(regex, course_tokenizer):
    with pytest.raises(ValueError, match="matches no string at all"):
        TokenIndex(regex, course_tokenizer)


@pytest.mark.timeout(30)
def test_fsm_without_final_states_raises(course_tokenizer):
    no_finals = CharFSM(FSM(alphabet=Alphabet.from_groups({"a"}), states={0, 1}, initial=0, finals=set(),
                            map={0: {0: 1}, 1: {0: 1}}))
    with pytest.raises(ValueError, match="this CharFSM matches no string at all"):
        TokenIndex(no_finals, course_tokenizer)


@pytest.mark.timeout(30)
def test_schema_the_tokens_cannot_spell_raises_at_build_time(course_tokenizer):
    class Cafe(BaseModel):
        name: Literal["café"]

    with pytest.raises(ValueError, match=r"""tokens can write '\{"name": "caf'.*continues it with 'é'.*"""
                                         r"""no token spells the character\(s\) \['é'\].*ASCII"""):
        TokenIndex(regex_for_schema(Cafe), course_tokenizer)


def test_index_bad_input(course_tokenizer):
    with pytest.raises(TypeError, match="expected a transformers tokenizer"):
        TokenIndex("a", "gpt2")
    with pytest.raises(KeyError, match="not in the index"):
        TokenIndex("ab", course_tokenizer).allowed(12345)


# --------------------------------------------------------------------------------------------
# 5. The logits processor


def test_processor_masks_each_row_from_its_own_tokens(course_tokenizer):
    digits = TokenIndex("[0-9]{1,3}|x", course_tokenizer)
    prompt = torch.tensor([[0, 5], [0, 5]])
    vocab = len(course_tokenizer)
    processor = SchemaLogitsProcessor(digits, prompt_length=2)
    scores = processor(prompt, torch.zeros(2, vocab))
    assert torch.equal(scores[0] == 0, digits.allowed(digits.initial))
    one, x = course_tokenizer.convert_tokens_to_ids("1"), course_tokenizer.convert_tokens_to_ids("x")
    ids = torch.cat([prompt, torch.tensor([[one], [x]])], dim=1)
    scores = processor(ids, torch.zeros(2, vocab))
    allowed = [set((row == 0).nonzero().flatten().tolist()) for row in scores]
    assert course_tokenizer.eos_token_id in allowed[0] and one in allowed[0] and x not in allowed[0]
    assert allowed[1] == {course_tokenizer.eos_token_id}                       # "x" is complete: only EOS
    ids = torch.cat([ids, torch.tensor([[one], [course_tokenizer.eos_token_id]])], dim=1)
    scores = processor(ids, torch.zeros(2, vocab))
    assert set((scores[1] == 0).nonzero().flatten().tolist()) == {course_tokenizer.eos_token_id}   # finished: padding
    assert processor(prompt, torch.zeros(2, vocab)).isfinite().sum() == 2 * digits.allowed(digits.initial).sum()


def test_processor_pads_a_larger_model_vocabulary(course_tokenizer):
    digits = TokenIndex("[0-9]", course_tokenizer)
    scores = SchemaLogitsProcessor(digits, 1)(torch.tensor([[0]]), torch.zeros(1, len(course_tokenizer) + 11))
    assert scores.shape == (1, len(course_tokenizer) + 11) and scores[0, -11:].isinf().all()


def test_mask_disallowed_never_allows_ids_past_the_tokenizer_and_leaves_its_input():
    scores = torch.arange(6.0).reshape(1, 6)
    masked = mask_disallowed(scores, torch.tensor([[True, False, True, False]]))     # 2 ids past the tokenizer
    assert masked.isfinite().tolist() == [[True, False, True, False, False, False]]
    assert masked[masked.isfinite()].tolist() == [0.0, 2.0] and scores.isfinite().all()
    with pytest.raises(ValueError, match="does not fit scores"):
        mask_disallowed(torch.zeros(1, 3), torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="one row per row of scores"):
        mask_disallowed(torch.zeros(2, 4), torch.ones(1, 4, dtype=torch.bool))


def test_processor_bad_input(index, course_tokenizer):
    vocab = len(course_tokenizer)
    with pytest.raises(ValueError, match="input_ids has 2 positions but prompt_length is 5"):
        SchemaLogitsProcessor(index, 5)(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, vocab))
    with pytest.raises(ValueError, match=r"logits\[:, -1\]"):
        SchemaLogitsProcessor(index, 1)(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2, vocab))
    with pytest.raises(ValueError, match="input_ids has 2 rows but scores has 3"):
        SchemaLogitsProcessor(index, 1)(torch.zeros(2, 2, dtype=torch.long), torch.zeros(3, vocab))
    with pytest.raises(ValueError, match="build the index with the model's own tokenizer"):
        SchemaLogitsProcessor(index, 1)(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 320))
    with pytest.raises(ValueError, match="prompt_length must be a non-negative int"):
        SchemaLogitsProcessor(index, -1)
    with pytest.raises(TypeError, match="expected a TokenIndex"):
        SchemaLogitsProcessor("regex", 1)
    with pytest.raises(ValueError, match="is not allowed in state"):  # "x" cannot start a record
        SchemaLogitsProcessor(index, 1)(torch.tensor([[0, course_tokenizer.convert_tokens_to_ids("x")]]), torch.zeros(1, vocab))
    with pytest.raises(ValueError, match=r"token 0 \(''\) is not allowed in state"):  # EOS before the record ends
        SchemaLogitsProcessor(index, 1)(torch.tensor([[0, course_tokenizer.eos_token_id]]), torch.zeros(1, vocab))


@torch.no_grad()
def sample_in_a_loop(model, processor, input_ids, max_new_tokens, seed):
    """A plain sampling loop (no KV cache) that calls the processor like ``generate`` does."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(max_new_tokens):
        scores = processor(input_ids, model(input_ids).logits[:, -1])
        next_tokens = torch.multinomial(scores.softmax(-1), 1, generator=generator)
        input_ids = torch.cat([input_ids, next_tokens], dim=1)
    return input_ids


@pytest.mark.parametrize("schema", [Pet, Record])
def test_random_models_write_only_valid_json(tiny_checkpoint, schema):
    """A random model knows no JSON at all: the processor alone makes every text valid."""
    model, tok = load_model(tiny_checkpoint), load_tokenizer(tiny_checkpoint)
    regex = regex_for_schema(schema, max_string_length=8, max_int_digits=2)
    built = TokenIndex(regex, tok)
    texts = constrained_records(model, tok, 8, seed=0, index=built, prompt="Record:")
    assert validate_records(texts, schema)[0] == 1.0, texts
    prompt = torch.tensor([[tok.bos_token_id] * 3] * 4)
    ids = sample_in_a_loop(model, SchemaLogitsProcessor(built, 3), prompt, built.max_new_tokens, seed=1)
    texts = tok.batch_decode(ids[:, 3:], skip_special_tokens=True)
    assert validate_records(texts, schema)[0] == 1.0, texts


def test_generate_with_the_processor_twice_starts_over(course_model, course_tokenizer, index):
    prompt = torch.tensor([encode(course_tokenizer, "Record:")] * 2)
    processor = SchemaLogitsProcessor(index, prompt_length=prompt.shape[1])
    for seed in (0, 1):
        torch.manual_seed(seed)
        out = course_model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, top_k=0,
                                    max_new_tokens=index.max_new_tokens, pad_token_id=course_tokenizer.eos_token_id,
                                    logits_processor=LogitsProcessorList([processor]))
        texts = course_tokenizer.batch_decode(out[:, prompt.shape[1]:], skip_special_tokens=True)
        assert validate_records(texts)[0] == 1.0, texts


# --------------------------------------------------------------------------------------------
# 6. Ground truth on the course model


@pytest.fixture(scope="module")
def constrained_texts(course_model, course_tokenizer, index):
    return constrained_records(course_model, course_tokenizer, N_SAMPLES, seed=0, index=index)


def test_constrained_decoding_makes_every_record_valid(constrained_texts):
    share, records = validate_records(constrained_texts)
    assert share == 1.0 and len(records) == N_SAMPLES
    outlines_regex = re.compile(" " + build_regex_from_schema(json.dumps(Record.model_json_schema())))
    assert all(outlines_regex.fullmatch(text) for text in constrained_texts)


def test_constrained_records_are_world_like(constrained_texts):
    scores = plausibility(validate_records(constrained_texts)[1])
    for field, threshold in PLAUSIBILITY_THRESHOLDS.items():
        assert scores[field] >= threshold, (field, scores)


def test_unconstrained_baseline_is_not_always_valid(course_model, course_tokenizer):
    share, records = validate_records(unconstrained_records(course_model, course_tokenizer, N_SAMPLES, seed=0))
    assert 0.8 <= share < 1.0


def test_validate_and_plausibility_on_hand_made_records():
    texts = ['{"name": "Anna", "age": 42, "city": "Paris", "job": "baker"}',
             ' {"name": "Zorg", "age": 7, "city": "Mars", "job": "baker"}',
             '{"name": "Anna", "age": "42", "city": "Paris", "job": "baker"}',   # strict: age must be an int
             '{"name": "Anna", "age": 42, "city": "Paris"}']
    share, records = validate_records(texts)
    assert share == 0.5 and [r.name for r in records] == ["Anna", "Zorg"]
    assert plausibility(records) == {"name": 0.5, "age": 0.5, "city": 0.5, "job": 1.0}
    with pytest.raises(ValueError, match="non-empty list of strings"):
        validate_records(texts[0])
    with pytest.raises(ValueError, match="no records to score"):
        plausibility([])


def test_constrained_records_bad_input(course_model, course_tokenizer, index):
    with pytest.raises(ValueError, match="n must be a positive int"):
        constrained_records(course_model, course_tokenizer, 0, seed=0, index=index)
    with pytest.raises(ValueError, match="allows texts of any length.*max_string_length"):
        constrained_records(course_model, course_tokenizer, 1, seed=0, index=TokenIndex(INTEGER_REGEX, course_tokenizer))
    with pytest.raises(ValueError, match="does not fit the model's 256 positions"):
        constrained_records(course_model, course_tokenizer, 1, seed=0, index=index, max_new_tokens=1000)
