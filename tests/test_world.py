"""The generated world: determinism, and labels that agree with the text they describe."""

from __future__ import annotations

import json
import random
import re
import string
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


# ---------------------------------------------------------------------------------------------
# Recipes, the wider world of recipe "v2", and held-out material
# ---------------------------------------------------------------------------------------------

from utils.world.corpus import (  # noqa: E402
    INVENTED_NAME_IOI_PARTS, RECIPES, V2_IOI_PARTS, V3_FINISH_IOI_PARTS, V4_LEAD_INVENTED_NAME_IOI_PARTS,
    V4_LEAD_IOI_PARTS, V4_LEADS, V5_LEAD_IOI_PARTS, V5_LEADS, V6_NAME_FIRST_INVENTED_NAME_IOI_PARTS,
    V6_NAME_FIRST_IOI_PARTS, V9_INVENTED_NAMES, recipe,
)
from utils.world.families import (  # noqa: E402
    BRIDGE_CHOICE_PARTS, CAA_CHOICE_PARTS, TRAINING_CHOICE_PARTS, TRAINING_IOI_PARTS, IOIParts, past_tense,
)
from utils.world.heldout import (  # noqa: E402
    HELDOUT_AGREEMENT_NOUNS, HELDOUT_CHOICE_PARTS, HELDOUT_FACT_PHRASINGS, HELDOUT_IOI_PARTS, HELDOUT_NAME_IOI_PARTS,
    HELDOUT_NAMES, heldout_words,
)
from utils.world.vocabulary import ALL_NAMES, EVERY_NAME_ONSET, world_words  # noqa: E402


def test_recipe_v1_still_writes_the_corpus_the_shipped_model_was_trained_on() -> None:
    """The digest of the first 500 documents, taken before recipe "v2" was added: the options that
    v2 added to the families leave every v1 document as it was."""
    import hashlib

    texts = "\x00".join(d.text for d in generate_corpus(500, seed=0, recipe_name="v1"))
    assert hashlib.sha256(texts.encode()).hexdigest() == "010e5471c74bdb6f432c167a23f75d2cae2b558209adc0befc3f877e78612716"


def test_recipe_v2_writes_the_recorded_corpus() -> None:
    """The digest of the first 3,000 documents of recipe "v2": a change to the world that moves it
    makes ``python -m utils.course_model train --recipe v2`` train another model (once v2 ships,
    change the digest only together with a retrain)."""
    import hashlib

    texts = "\x00".join(d.text for d in generate_corpus(3_000, seed=0, recipe_name="v2"))
    assert hashlib.sha256(texts.encode()).hexdigest() == "e5e4b3e37f1d573f421898da08ec4acb5d40e3276a11f168bccbaf16fc930d76"


def test_unknown_recipe_is_named() -> None:
    with pytest.raises(ValueError, match="unknown corpus recipe 'v99'; choose one of .*'v1'.*'v2'"):
        next(generate_corpus(1, recipe_name="v99"))
    assert recipe("v2").token_repeats > 0 == recipe("v1").token_repeats


@pytest.fixture(scope="module")
def v2_corpus() -> list:
    return list(generate_corpus(20_000, seed=0, recipe_name="v2"))


def test_v2_corpus_draws_every_family_from_the_wider_world(v2_corpus: list) -> None:
    assert set(Counter(d.family for d in v2_corpus)) == set(FAMILIES) == set(RECIPES["v2"].mix)
    ioi = [d for d in v2_corpus if d.family == "ioi"]
    verbs = Counter(re.search(r"(\w+) the \w+ to \w+\.$", d.text).group(1) for d in ioi)
    assert len(verbs) >= 20, verbs
    names = {d.labels["indirect_object"] for d in ioi}
    assert len(names & set(ALL_NAMES)) >= 90 and len(names & set(INVENTED_NAME_IOI_PARTS.names)) >= 300
    questions = {d.prompt.split("\n")[0] for d in v2_corpus if d.family == "multiple_choice"}
    assert len(questions) >= 60


def _words(texts: list[str]) -> set[str]:
    return {w for text in texts for w in re.findall(r"[A-Za-z]+", text)}


@pytest.fixture(scope="module")
def v3_finish_corpus() -> list:
    return list(generate_corpus(10_000, seed=0, recipe_name="v3-finish"))


def test_v3_finishes_on_the_hard_forms_of_ab_questions_and_indirect_objects(v3_finish_corpus: list) -> None:
    assert recipe("v3").finish == "v3-finish" and 0 < recipe("v3").finish_share < 1
    assert recipe("v3").mix == recipe("v2").mix and recipe("v3-finish").finish is None
    families = Counter(d.family for d in v3_finish_corpus)
    assert families["multiple_choice"] > 0.4 * len(v3_finish_corpus) and families["ioi"] > 0.2 * len(v3_finish_corpus)
    options = [line for d in v3_finish_corpus if d.family == "multiple_choice"
               for line in d.prompt.split("\n") if line.startswith("(A) ")]
    short = [o for o in options if len(o.split()) <= 4]
    assert 0.3 < len(short) / len(options) < 0.8, "the bridge of short options and the words are there"
    ioi = [d.text for d in v3_finish_corpus if d.family == "ioi"]
    assert any(t.startswith(("Whereas ", "Unless ", "Ever since ", "Considering that ")) for t in ioi)


@pytest.fixture(scope="module")
def v4_finish_corpus() -> list:
    return list(generate_corpus(10_000, seed=0, recipe_name="v4-finish"))


def test_v4_finishes_on_indirect_objects_that_open_on_made_up_words(v4_finish_corpus: list) -> None:
    assert recipe("v4").finish == "v4-finish" and recipe("v4").finish_share > recipe("v3").finish_share
    assert recipe("v4").mix == recipe("v2").mix and recipe("v4-finish").finish is None
    families = Counter(d.family for d in v4_finish_corpus)
    assert families["ioi"] > 0.25 * len(v4_finish_corpus)
    assert families["arithmetic"] > 0.9 * recipe("v2").mix["arithmetic"] * len(v4_finish_corpus), "v2's arithmetic"
    ioi = [d for d in v4_finish_corpus if d.family == "ioi"]
    leading = [d for d in ioi if d.text.split()[0] in V4_LEADS]
    assert 0.2 < len(leading) / len(ioi) < 0.3
    assert {d.labels["order"] for d in leading} == {"ABA", "ABB"}
    agreement = [d.labels for d in v4_finish_corpus if d.family == "agreement"]
    plural_across_singular = [a for a in agreement if (a["number"], a["distractor_number"]) == ("plural", "singular")]
    assert 0.4 < len(plural_across_singular) / len(agreement) < 0.6


def test_made_up_leads_are_capitalised_made_up_words_and_never_a_name() -> None:
    assert len(V4_LEADS) > 250 and all(lead[0].isupper() and lead[1:].islower() for lead in V4_LEADS)
    assert not set(V4_LEADS) & {*INVENTED_NAME_IOI_PARTS.names, *ALL_NAMES, *heldout_words()}
    rng = random.Random(0)
    for parts in (V4_LEAD_IOI_PARTS, V4_LEAD_INVENTED_NAME_IOI_PARTS):
        doc = indirect_object(rng, parts=parts)
        lead, first_name = doc.text.split()[:2]
        assert lead in V4_LEADS and first_name in parts.names
    assert all("{lead}" not in opener for opener in TRAINING_IOI_PARTS.openers + V3_FINISH_IOI_PARTS.openers)


@pytest.fixture(scope="module")
def v6_finish_corpus() -> list:
    return list(generate_corpus(10_000, seed=0, recipe_name="v6-finish"))


def _opening(doc) -> str:
    """What an indirect-object sentence opens on: a name, a made-up lead or another word (a few
    leads are English words that v3's openers start with too: "When", "Then"...)."""
    first = doc.text.split()[0].strip(",.")
    opener_words = {opener.split()[0].strip(",.") for opener in V3_FINISH_IOI_PARTS.openers}
    return "name" if first in doc.labels.values() else "lead" if first in set(V5_LEADS) - opener_words else "other"


def test_v5_leads_are_many_and_none_is_a_held_out_opener_word() -> None:
    assert len(V5_LEADS) == 50_000 and len(set(V5_LEADS)) == 50_000
    assert all(lead[0].isupper() and lead[1:].islower() for lead in V5_LEADS)
    opener_words = {w.strip(",.") for o in HELDOUT_IOI_PARTS.openers for w in o.split() if not w.startswith("{")}
    assert not set(V5_LEADS) & (opener_words | heldout_words() | set(world_words()) | set(ALL_NAMES))
    assert V5_LEAD_IOI_PARTS.leads == V5_LEADS


def test_v6_finishes_on_sentences_that_open_on_a_lead_or_on_the_first_name(v6_finish_corpus: list) -> None:
    assert recipe("v6").mix == recipe("v2").mix and recipe("v6").finish == "v6-finish"
    assert recipe("v6").finish_share == recipe("v5").finish_share == 0.3
    assert recipe("v6-finish").mix == recipe("v5-finish").mix
    ioi = [d for d in v6_finish_corpus if d.family == "ioi"]
    openings = Counter(_opening(d) for d in ioi)
    assert 0.15 < openings["lead"] / len(ioi) < 0.25
    name_first = [d for d in ioi if _opening(d) == "name"]
    assert 0.18 < len(name_first) / len(ioi) < 0.3, "a sixth from the name-first openers, a few more from v3's"
    orders = Counter(d.labels["order"] for d in name_first)
    assert 0.4 < orders["ABB"] / len(name_first) < 0.6
    rng = random.Random(0)
    for parts in (V6_NAME_FIRST_IOI_PARTS, V6_NAME_FIRST_INVENTED_NAME_IOI_PARTS):
        assert all(opener.startswith("{A} ") for opener in parts.openers)
        doc = indirect_object(rng, parts=parts)
        assert doc.text.split()[0] in parts.names


def test_v7_finishes_on_more_agreement_and_more_made_up_names(v6_finish_corpus: list) -> None:
    assert recipe("v7").mix == recipe("v2").mix and recipe("v7").finish_share == 0.3
    mix = recipe("v7-finish").mix
    assert abs(sum(mix.values()) - 1) < 1e-9 and mix["agreement"] > recipe("v6-finish").mix["agreement"]
    v7_finish = list(generate_corpus(6_000, seed=0, recipe_name="v7-finish"))

    def invented_share(corpus: list) -> float:
        ioi = [d for d in corpus if d.family == "ioi"]
        return sum(d.labels["indirect_object"] in INVENTED_NAME_IOI_PARTS.names for d in ioi) / len(ioi)
    assert invented_share(v6_finish_corpus) < 0.5 < invented_share(v7_finish) < 0.65
    assert Counter(d.family for d in v7_finish)["agreement"] > 0.09 * len(v7_finish)



def test_v8_finishes_on_more_name_first_openers_made_up_names_and_agreement_than_v7() -> None:
    assert recipe("v8").mix == recipe("v2").mix and recipe("v8").finish_share == 0.3
    mix = recipe("v8-finish").mix
    assert abs(sum(mix.values()) - 1) < 1e-9 and mix["agreement"] > recipe("v7-finish").mix["agreement"]
    v8_finish = list(generate_corpus(6_000, seed=0, recipe_name="v8-finish"))
    ioi = [d for d in v8_finish if d.family == "ioi"]
    assert 0.6 < sum(d.labels["indirect_object"] in INVENTED_NAME_IOI_PARTS.names for d in ioi) / len(ioi) < 0.72
    assert 0.25 < sum(_opening(d) == "name" for d in ioi) / len(ioi) < 0.38, "a quarter name-first, a few more from v3's"
    assert Counter(d.family for d in v8_finish)["agreement"] > 0.12 * len(v8_finish)


def test_v9_finishes_on_made_up_names_that_start_like_any_name() -> None:
    assert recipe("v9").mix == recipe("v2").mix and recipe("v9").finish_share == 0.3
    assert recipe("v9-finish").mix == recipe("v8-finish").mix
    assert {name[0] for name in V9_INVENTED_NAMES} >= set("AEIOUCHJW")
    assert all(name.startswith(EVERY_NAME_ONSET) for name in V9_INVENTED_NAMES)
    assert not set(V9_INVENTED_NAMES) & (set(HELDOUT_NAMES) | set(ALL_NAMES) | set(INVENTED_NAME_IOI_PARTS.names))
    ioi = [d for d in generate_corpus(3_000, seed=0, recipe_name="v9-finish") if d.family == "ioi"]
    assert 0.6 < sum(d.labels["indirect_object"] in V9_INVENTED_NAMES for d in ioi) / len(ioi) < 0.72


def test_v10_finishes_on_agreement_about_singulars_that_end_in_s() -> None:
    from utils.world.heldout import UNSEEN_AGREEMENT_NOUNS
    from utils.world.vocabulary import S_SINGULAR_AGREEMENT_NOUNS, VES_AGREEMENT_NOUNS

    assert recipe("v10").mix == recipe("v2").mix and recipe("v10").finish_share == 0.3
    new_nouns = {word for pair in S_SINGULAR_AGREEMENT_NOUNS + VES_AGREEMENT_NOUNS for word in pair}
    held_out = {word for pair in HELDOUT_AGREEMENT_NOUNS + UNSEEN_AGREEMENT_NOUNS for word in pair}
    assert not new_nouns & (held_out | heldout_words())
    assert all(singular.endswith("s") for singular, _ in S_SINGULAR_AGREEMENT_NOUNS)
    agreement = [d for d in generate_corpus(3_000, seed=0, recipe_name="v10-finish") if d.family == "agreement"]
    last_subjects = [d.prompt[span.start:span.end] for d in agreement for span in d.spans if span.kind == "subject"]
    singulars = {singular for singular, _ in S_SINGULAR_AGREEMENT_NOUNS}
    assert 0.2 < sum(subject in singulars for subject in last_subjects) / len(last_subjects) < 0.35


def test_v11_finishes_on_more_indirect_objects_a_third_of_them_name_first() -> None:
    assert recipe("v11").mix == recipe("v2").mix and recipe("v11").finish_share == 0.3
    mix, v10_mix = recipe("v11-finish").mix, recipe("v10-finish").mix
    assert abs(sum(mix.values()) - 1) < 1e-9 and mix["ioi"] > v10_mix["ioi"]
    assert mix["multiple_choice"] < v10_mix["multiple_choice"]

    def name_first_share(recipe_name: str) -> float:
        ioi = [d for d in generate_corpus(3_000, seed=0, recipe_name=recipe_name) if d.family == "ioi"]
        return sum(_opening(d) == "name" for d in ioi) / len(ioi)
    assert name_first_share("v10-finish") + 0.02 < name_first_share("v11-finish") < 0.45, "a third, a few more from v3's"


def test_made_up_encounters_only_where_the_parts_ask_for_them() -> None:
    """v2's sentences do not move (its digest test), v3's finishing ones meet with made-up verbs."""
    encounters = set(TRAINING_IOI_PARTS.encounters)
    rng = random.Random(0)
    finishing = [indirect_object(rng, parts=V3_FINISH_IOI_PARTS).text for _ in range(3_000)]
    meeting = re.compile(r"^(?:[^,.]*, )?[A-Z][a-z]+ (\w+) [A-Z][a-z]+ (?:at|in|by|near|behind|next|across)")
    verbs = {m.group(1) for t in finishing if (m := meeting.match(t))}
    assert verbs - encounters and verbs & encounters
    assert not V2_IOI_PARTS.made_up_encounters


def test_heldout_words_are_in_no_word_list_and_no_training_document(v2_corpus: list, v3_finish_corpus: list,
                                                                   v4_finish_corpus: list,
                                                                   v6_finish_corpus: list) -> None:
    held_out = heldout_words()
    assert not held_out & set(world_words()), held_out & set(world_words())
    assert not held_out & set(INVENTED_NAME_IOI_PARTS.names)
    made_up = set(V2_IOI_PARTS.made_up_words)
    assert len(made_up) == 300 and not made_up & (held_out | set(world_words()))
    v1_corpus = list(generate_corpus(5_000, seed=0, recipe_name="v1"))
    assert not held_out & _words([d.text for d in v2_corpus + v1_corpus + v3_finish_corpus + v4_finish_corpus
                                  + v6_finish_corpus])


def test_heldout_agreement_nouns_are_never_a_subject_or_distractor(v2_corpus: list) -> None:
    nouns = {w for pair in HELDOUT_AGREEMENT_NOUNS for w in pair}
    spanned = {d.text[s.start:s.end] for d in v2_corpus if d.family == "agreement"
               for s in d.spans if s.kind in ("subject", "distractor")}
    assert len(nouns) >= 20 and not nouns & spanned
    assert nouns <= _words([d.text for d in v2_corpus if d.family == "few_shot"]), "the model knows them from elsewhere"


def _as_pattern(template: str) -> re.Pattern:
    """A template's literal text with each field standing for one or two words."""
    parts = [re.escape(literal) + (r"[\w']+(?: [\w']+)?" if field else "")
             for literal, field, _, _ in string.Formatter().parse(template)]
    return re.compile("".join(parts))


def test_heldout_frames_and_phrasings_match_no_training_document(v2_corpus: list, v3_finish_corpus: list,
                                                                 v4_finish_corpus: list,
                                                                 v6_finish_corpus: list) -> None:
    templates = [*HELDOUT_IOI_PARTS.openers, *HELDOUT_IOI_PARTS.middles,
                 *(q for qs in HELDOUT_CHOICE_PARTS.questions.values() for q in qs),
                 *(o for os_ in HELDOUT_CHOICE_PARTS.options.values() for o in os_),
                 *(p for ps in HELDOUT_FACT_PHRASINGS.values() for p in ps)]
    texts = [d.text for d in v2_corpus + v3_finish_corpus + v4_finish_corpus + v6_finish_corpus
             + list(generate_corpus(5_000, seed=0, recipe_name="v1"))]
    for template in templates:
        pattern = _as_pattern(template)
        assert not any(pattern.search(text) for text in texts), template


@settings(max_examples=200, deadline=None)
@given(seed=seeds, parts=st.sampled_from([TRAINING_IOI_PARTS, V2_IOI_PARTS, INVENTED_NAME_IOI_PARTS, HELDOUT_IOI_PARTS,
                                           HELDOUT_NAME_IOI_PARTS, V3_FINISH_IOI_PARTS, V4_LEAD_IOI_PARTS,
                                           V4_LEAD_INVENTED_NAME_IOI_PARTS, V5_LEAD_IOI_PARTS,
                                           V6_NAME_FIRST_IOI_PARTS, V6_NAME_FIRST_INVENTED_NAME_IOI_PARTS]))
def test_composed_indirect_object_names_the_subject_twice_and_the_answer_once(seed: int, parts: IOIParts) -> None:
    doc = indirect_object(random.Random(seed), parts=parts)
    io, s = doc.labels["indirect_object"], doc.labels["subject"]
    assert io != s and doc.text.startswith(doc.prompt + doc.answer) and doc.answer == " " + io
    assert doc.prompt.endswith(" to") and doc.prompt.split()[-3] == "the"
    assert doc.prompt.split()[-4] in {*parts.verbs, *map(past_tense, parts.made_up_words)}
    names = Counter(w for w in re.findall(r"[A-Z][a-z]+", doc.prompt) if w in parts.names)
    assert names == Counter({s: 2, io: 1})
    assert doc.labels["indirect_object_gender"] == parts.names[io]
    assert [sp.value for sp in doc.spans_of("ioi_indirect_object")] == [io]


@settings(max_examples=200, deadline=None)
@given(seed=seeds, trait=st.sampled_from(["sentiment", "emotion", "topic"]),
       parts=st.sampled_from([CAA_CHOICE_PARTS, TRAINING_CHOICE_PARTS, HELDOUT_CHOICE_PARTS, BRIDGE_CHOICE_PARTS]))
def test_every_phrasing_of_an_ab_question_puts_the_trait_in_the_right_option(seed: int, trait: str, parts) -> None:
    doc = multiple_choice(random.Random(seed), trait=trait, parts=parts)
    options = dict(re.findall(r"\(([AB])\) (.*)", doc.prompt))
    assert getattr(label_text(options[doc.labels["correct"]]), trait) == doc.labels["value"]
    wrong = "B" if doc.labels["correct"] == "A" else "A"
    assert getattr(label_text(options[wrong]), trait) == doc.labels["other"]
    assert doc.prompt.startswith("Question: ") and doc.prompt.endswith("\nAnswer:")


@settings(max_examples=100, deadline=None)
@given(seed=seeds)
def test_repeats_of_any_world_word_with_a_gap_repeat_exactly(seed: int) -> None:
    doc = sequence(random.Random(seed), kind="repeat", pool=world_words(), gap=True)
    (first,), (second,) = doc.spans_of("first_copy"), doc.spans_of("second_copy")
    assert doc.text[first.start:first.end] == doc.text[second.start:second.end]
    assert second.start > first.end
