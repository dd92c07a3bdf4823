"""The generated world: determinism, and labels that agree with the text they describe."""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from utils.world import (
    FAMILIES, FEW_SHOT_TASKS, RECORD_SCHEMA, agreement, all_facts, arithmetic, eval_set, fact, few_shot,
    generate_corpus, indirect_object, label_text, multiple_choice, record, sequence, story,
)
from utils.world.vocabulary import EMOTIONS, NAMES, PRONOUNS, SENTIMENTS, TOPICS

seeds = st.integers(min_value=0, max_value=10**9)


def test_corpus_is_deterministic_for_a_seed() -> None:
    first = [d.text for d in generate_corpus(300, seed=7)]
    assert first == [d.text for d in generate_corpus(300, seed=7)]
    assert first != [d.text for d in generate_corpus(300, seed=8)]


def test_corpus_mixes_every_family_and_has_no_chat_data() -> None:
    docs = list(generate_corpus(3000, seed=0))
    assert set(Counter(d.family for d in docs)) == set(FAMILIES)
    assert not any(re.search(r"\b(User|Assistant):", d.text) for d in docs)


def test_unknown_family_in_mix_is_named() -> None:
    with pytest.raises(ValueError, match="unknown families \\['poems'\\]"):
        next(generate_corpus(1, mix={"poems": 1.0}))


@settings(max_examples=200, deadline=None)
@given(seed=seeds, sentiment=st.sampled_from(SENTIMENTS), topic=st.sampled_from(TOPICS),
       emotion=st.sampled_from(EMOTIONS))
def test_labeller_recovers_every_story_label(seed: int, sentiment: str, topic: str, emotion: str) -> None:
    doc = story(random.Random(seed), sentiment=sentiment, topic=topic, emotion=emotion)
    read = label_text(doc.text)
    assert (read.sentiment, read.topic, read.emotion) == (sentiment, topic, emotion)


@settings(max_examples=100, deadline=None)
@given(seed=seeds)
def test_story_spans_point_at_their_words_and_pronouns_agree(seed: int) -> None:
    doc = story(random.Random(seed))
    for span in doc.spans:
        word = doc.text[span.start:span.end]
        if span.kind in ("name", "ioi_subject", "ioi_indirect_object"):
            assert word == span.value
        else:  # a pronoun or possessive refers to a character of its gender
            assert word.lower() in PRONOUNS[NAMES[span.value]].values()
    assert set(doc.labels["characters"]) <= set(NAMES)


def test_labeller_on_neutral_and_mixed_text() -> None:
    assert label_text("The dog near the cats is old.").sentiment is None
    assert label_text("It was lovely but terrible.").sentiment is None  # a tie is no evidence
    assert label_text("It was lovely, lovely and terrible.").sentiment == "positive"


@settings(max_examples=200, deadline=None)
@given(seed=seeds)
def test_indirect_object_prompt_ends_before_the_name_used_once(seed: int) -> None:
    doc = indirect_object(random.Random(seed))
    io, s = doc.labels["indirect_object"], doc.labels["subject"]
    assert io != s and doc.text.startswith(doc.prompt + doc.answer) and doc.answer == " " + io
    names_in_prompt = Counter(w for w in re.findall(r"[A-Z][a-z]+", doc.prompt) if w in NAMES)
    assert names_in_prompt == Counter({s: 2, io: 1})
    assert doc.labels["indirect_object_gender"] == NAMES[io]


@settings(max_examples=200, deadline=None)
@given(seed=seeds, number=st.sampled_from(["singular", "plural"]), n=st.integers(1, 4))
def test_agreement_verb_follows_the_subject_not_the_distractor(seed: int, number: str, n: int) -> None:
    other = "plural" if number == "singular" else "singular"
    doc = agreement(random.Random(seed), number=number, distractor_number=other, n_sentences=n)
    subject, distractor = doc.spans_of("subject")[-1], doc.spans_of("distractor")[-1]
    assert (subject.value, distractor.value) == (number, other)
    singular, plural = doc.labels["verb_pair"].split("/")
    assert doc.answer == " " + (singular if number == "singular" else plural)
    assert doc.text.startswith(doc.prompt + doc.answer)


def test_facts_table_and_phrasings() -> None:
    facts = all_facts()
    assert len(facts) >= 40 and len(set(facts)) == len(facts)
    rng = random.Random(0)
    for relation, subject, obj in facts:
        for phrasing in range(3):
            doc = fact(rng, relation=relation, subject=subject, phrasing=phrasing, n_facts=2)
            assert doc.answer == " " + obj and doc.text.startswith(doc.prompt + doc.answer)


def test_few_shot_tasks_share_inputs_so_shots_decide_the_task() -> None:
    assert {"antonym", "capital", "plural", "successor", "uppercase"} <= set(FEW_SHOT_TASKS)
    for task, table in FEW_SHOT_TASKS.items():
        others = set().union(*(t.keys() for name, t in FEW_SHOT_TASKS.items() if name != task))
        assert len(table.keys() & others) / len(table) > 0.9, task


@settings(max_examples=100, deadline=None)
@given(seed=seeds, task=st.sampled_from(sorted(FEW_SHOT_TASKS)), shots=st.integers(0, 10))
def test_few_shot_lines_follow_the_task(seed: int, task: str, shots: int) -> None:
    doc = few_shot(random.Random(seed), task=task, n_shots=shots)
    lines = doc.text.strip("\n").split("\n")
    assert len(lines) == shots + 1
    for line in lines:
        x, y = line.split(" -> ")
        assert FEW_SHOT_TASKS[task][x] == y
    assert doc.prompt.endswith(f"{doc.labels['query']} ->") and doc.text.startswith(doc.prompt + doc.answer)


@settings(max_examples=100, deadline=None)
@given(seed=seeds)
def test_repeated_sequences_repeat_exactly(seed: int) -> None:
    doc = sequence(random.Random(seed), kind="repeat")
    (first,), (second,) = doc.spans_of("first_copy"), doc.spans_of("second_copy")
    assert doc.text[first.start:first.end] == doc.text[second.start:second.end]
    assert len(doc.text[first.start:first.end].split()) == doc.labels["length"]


@settings(max_examples=300, deadline=None)
@given(seed=seeds, op=st.sampled_from(["+", "-"]), style=st.sampled_from(["direct", "worked"]))
def test_arithmetic_answers_and_every_worked_step_are_correct(seed: int, op: str, style: str) -> None:
    doc = arithmetic(random.Random(seed), op=op, style=style)
    a, b, result = doc.labels["a"], doc.labels["b"], doc.labels["result"]
    assert result == (a + b if op == "+" else a - b) and result >= 0
    assert doc.text.endswith(f"The answer is {result}.\n")
    for left, right in re.findall(r"(\d+(?: [+-] \d+)+) = (\d+)", doc.answer):
        assert eval(left) == int(right)  # each step's arithmetic holds  # noqa: S307


@settings(max_examples=100, deadline=None)
@given(seed=seeds)
def test_records_parse_to_their_labels_with_the_schema(seed: int) -> None:
    doc = record(random.Random(seed))
    parsed = json.loads(doc.answer)
    assert parsed == doc.labels["record"]
    assert {k: type(v) for k, v in parsed.items()} == RECORD_SCHEMA


@settings(max_examples=200, deadline=None)
@given(seed=seeds, trait=st.sampled_from(["sentiment", "emotion", "topic"]))
def test_multiple_choice_correct_letter_has_the_trait_asked_for(seed: int, trait: str) -> None:
    doc = multiple_choice(random.Random(seed), trait=trait)
    options = dict(re.findall(r"\(([AB])\) (.*)", doc.prompt))
    assert getattr(label_text(options[doc.labels["correct"]]), trait) == doc.labels["value"]
    wrong = "B" if doc.labels["correct"] == "A" else "A"
    assert getattr(label_text(options[wrong]), trait) == doc.labels["other"] != doc.labels["value"]


def test_multiple_choice_letters_are_balanced() -> None:
    letters = Counter(d.labels["correct"] for d in eval_set("multiple_choice", 2000))
    assert abs(letters["A"] - letters["B"]) < 150


def test_eval_sets_are_fresh_draws() -> None:
    training = {d.text for d in generate_corpus(5000, seed=0) if d.family == "story"}
    held_out = [d.text for d in eval_set("story", 200)]
    assert sum(text in training for text in held_out) == 0


def test_unknown_task_and_family_errors_name_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown few-shot task 'rhymes'.*antonym"):
        few_shot(random.Random(0), task="rhymes")
    with pytest.raises(ValueError, match="unknown family 'poem'"):
        eval_set("poem", 1)
