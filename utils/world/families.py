"""Document families: one function per kind of text the world contains.

Every function takes a ``random.Random`` and optional keyword arguments that fix a latent
variable (``sentiment="negative"``, ``topic="storm"``...); what is not fixed is drawn from
``rng``. Each returns a :class:`~utils.world.documents.Document` with its labels, and the
families that pose a task (indirect object, agreement, facts, few-shot, arithmetic, multiple
choice) also set ``prompt`` and ``answer`` so evaluation sets come from the same code.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass
from itertools import product
from typing import Callable, Literal

from utils.world.documents import Document, TextBuilder
from utils.world.vocabulary import (
    AGREEMENT_ADJECTIVES, AGREEMENT_NOUNS, AGREEMENT_PREPOSITIONS, AGREEMENT_VERBS, ALL_NAMES, ANIMAL_SOUNDS,
    ANTONYMS, CAPITALS, DAYS, EMOTION_ADJECTIVES, EMOTION_VERBS, EMOTIONS, FILLER_WORDS, GIVING_OBJECTS,
    GIVING_VERBS, JOBS, LANGUAGES, MONTHS, MORE_PLACES, NAMES, PLURALS, PRONOUNS, SENTIMENT_WORDS, SENTIMENTS,
    TOPIC_WORDS, TOPICS, Emotion, Gender, ObjectKind, Sentiment, Topic,
)

# ---------------------------------------------------------------------------------------------
# Stories: characters, a topic, a sentiment and an emotion that colour every sentence.
# ---------------------------------------------------------------------------------------------


def _pick_names(rng: random.Random, n: int, pool: dict[str, Gender] = NAMES) -> list[str]:
    return rng.sample(sorted(pool), n)


#: The verbs of a story's indirect-object sentence ("Then John gave the ring to Mary.").
STORY_IOI_VERBS: tuple[str, ...] = ("gave", "handed", "passed", "showed")


class _StoryWriter:
    """Writes a story sentence by sentence, keeping track of who can be called "he" or "she"."""

    def __init__(self, rng: random.Random, characters: list[str], sentiment: Sentiment,
                 topic: Topic, emotion: Emotion, ioi_verbs: tuple[str, ...] = STORY_IOI_VERBS) -> None:
        self.rng, self.characters, self.ioi_verbs = rng, characters, ioi_verbs
        self.sentiment, self.topic, self.emotion = sentiment, topic, emotion
        self.words = TOPIC_WORDS[topic]
        self.out = TextBuilder()

    def _genders(self) -> list[str]:
        return [NAMES[c] for c in self.characters]

    def mention(self, character: str, *, capitalise: bool, allow_pronoun: bool = True) -> None:
        """Name a character, or use a pronoun when no other character shares its gender."""
        gender = NAMES[character]
        unambiguous = self._genders().count(gender) == 1
        if allow_pronoun and unambiguous and self.rng.random() < 0.4:
            pronoun = PRONOUNS[gender]["subject"]
            self.out.add(pronoun.capitalize() if capitalise else pronoun, "pronoun", character)
        else:
            self.out.add(character, "name", character)

    def word(self, kind: Literal["sentiment", "emotion_adjective", "emotion_verb", "place", "object", "event"]) -> str:
        rng = self.rng
        choices = {
            "sentiment": SENTIMENT_WORDS[self.sentiment],
            "emotion_adjective": EMOTION_ADJECTIVES[self.emotion],
            "emotion_verb": EMOTION_VERBS[self.emotion],
            "place": self.words.places,
            "object": self.words.objects,
            "event": self.words.events,
        }[kind]
        return rng.choice(choices)

    def intro(self) -> None:
        place = self.word("place")
        if len(self.characters) == 1:
            (a,) = self.characters
            opener = self.rng.choice(["One day, ", "", "Early one morning, "])
            self.out.add(opener)
            self.out.add(a, "name", a)
            self.out.add(self.rng.choice([" went to the ", " spent the day at the ", " visited the "]) + place + ".")
        else:
            a, b = self.characters
            self.out.add(self.rng.choice(["", "One day, ", "Last week, "]))
            self.out.add(a, "name", a).add(" and ").add(b, "name", b)
            self.out.add(self.rng.choice([" went to the ", " spent the day at the ", " met at the "]) + place + ".")

    def body_sentence(self) -> None:
        """One sentence that carries the topic and the sentiment or the emotion."""
        who = self.rng.choice(self.characters)
        out = self.out
        template = self.rng.randrange(8)
        out.add(" ")
        if template == 0:
            out.add(f"The {self.word('event')} was {self.word('sentiment')}.")
        elif template == 1:
            self.mention(who, capitalise=True)
            out.add(f" thought the {self.word('object')} was {self.word('sentiment')}.")
        elif template == 2:
            self.mention(who, capitalise=True)
            out.add(f" felt {self.word('emotion_adjective')} about the {self.word('event')}.")
        elif template == 3:
            self.mention(who, capitalise=True)
            out.add(f" {self.word('emotion_verb')} at the {self.word('object')}.")
        elif template == 4:
            out.add(f"It was a {self.word('sentiment')} day at the {self.word('place')}.")
        elif template == 5:
            self.mention(who, capitalise=True)
            possessive = PRONOUNS[NAMES[who]]["possessive"]
            out.add(" held ").add(possessive, "possessive", who)
            out.add(f" {self.word('object')} and felt {self.word('emotion_adjective')}.")
        elif template == 6:
            out.add(f"Everyone said the {self.word('event')} was {self.word('sentiment')}.")
        else:
            self.mention(who, capitalise=True)
            out.add(f" {self.word('emotion_verb')}, because the {self.word('object')} was {self.word('sentiment')}.")

    def ioi_sentence(self, subject: str) -> tuple[str, str]:
        """'Then John gave the ring to Mary.': the subject gives an object to the other character."""
        (indirect_object,) = [c for c in self.characters if c != subject]
        verb = self.rng.choice(self.ioi_verbs)
        self.out.add(" " + self.rng.choice(["Then ", "Later, ", "After that, "]))
        self.out.add(subject, "ioi_subject", subject)
        self.out.add(f" {verb} the {self.word('object')} to ")
        self.out.add(indirect_object, "ioi_indirect_object", indirect_object)
        self.out.add(".")
        return subject, indirect_object

    def noun_sentence(self, nouns: tuple[tuple[str, str], ...]) -> None:
        """'The mice were quiet.': a noun, singular or plural, and a verb of its number."""
        singular, plural = self.rng.choice(nouns)
        is_plural = self.rng.random() < 0.5
        verb = self.rng.choice([("was", "were"), ("is", "are")])[is_plural]
        self.out.add(f" The {plural if is_plural else singular} {verb} {self.rng.choice(AGREEMENT_ADJECTIVES)}.")

    def ending(self) -> None:
        self.out.add(" In the end, ")
        self.mention(self.rng.choice(self.characters), capitalise=False)
        self.out.add(f" felt {self.word('emotion_adjective')} and the day was {self.word('sentiment')}.")


def story(
    rng: random.Random,
    *,
    sentiment: Sentiment | None = None,
    topic: Topic | None = None,
    emotion: Emotion | None = None,
    n_characters: int | None = None,
    n_sentences: int | None = None,
    with_ioi: bool | None = None,
    ioi_verbs: tuple[str, ...] = STORY_IOI_VERBS,
    number_nouns: tuple[tuple[str, str], ...] = (),
) -> Document:
    """A short story whose every sentence reflects its topic, sentiment and emotion.

    Labels: ``sentiment``, ``topic``, ``emotion``, ``characters`` ({name: gender}) and, when the
    story contains an indirect-object sentence, ``ioi_subject`` / ``ioi_indirect_object``.
    Spans: every name and pronoun (value: the character it refers to). ``ioi_verbs`` are the verbs
    the indirect-object sentence may use (each takes a thing: "gave the ring to"). With
    ``number_nouns`` (singular, plural), half the stories say something of one of them after the
    introduction ("The mice were quiet."), which tells the number of nouns the agreement
    sentences never use.
    """
    sentiment = sentiment or rng.choice(SENTIMENTS)
    topic = topic or rng.choice(TOPICS)
    emotion = emotion or rng.choice(EMOTIONS)
    with_ioi = rng.random() < 0.3 if with_ioi is None else with_ioi
    n_characters = 2 if with_ioi else (n_characters or rng.choice([1, 2]))
    n_sentences = n_sentences or rng.randint(3, 7)
    characters = _pick_names(rng, n_characters)
    writer = _StoryWriter(rng, characters, sentiment, topic, emotion, ioi_verbs)

    writer.intro()
    if number_nouns and rng.random() < 0.5:
        writer.noun_sentence(number_nouns)
    ioi_at = rng.randrange(n_sentences) if with_ioi else -1
    labels: dict[str, object] = {"sentiment": sentiment, "topic": topic, "emotion": emotion,
                                 "characters": {c: NAMES[c] for c in characters}}
    for i in range(n_sentences):
        writer.body_sentence()
        if i == ioi_at:
            subject, indirect_object = writer.ioi_sentence(rng.choice(characters))
            labels.update(ioi_subject=subject, ioi_indirect_object=indirect_object)
    writer.ending()
    return Document(writer.out.text, "story", labels, tuple(writer.out.spans))


# ---------------------------------------------------------------------------------------------
# Indirect object identification (Wang et al. 2022): "When Mary and John went to the shop,
# John gave a drink to" -> " Mary".
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class IOIParts:
    """The parts an indirect-object sentence is composed from (see :func:`indirect_object`).

    ``openers`` introduce A and B (fields ``{A}``, ``{B}``, ``{place}``, ``{day}``), ``middles``
    are sentences that may stand between the opener and the giving clause (fields ``{sentiment}``,
    ``{event}``), ``verbs`` map a verb to the kind of object it takes, ``objects`` give the
    objects of each kind, ``names`` the characters with their genders. With ``topic_words`` the
    places and things of the sentence's topic join ``places`` and ``objects["thing"]``. Half the
    giving clauses of parts with ``adverbs`` put one before the verb ("{S} then gave"). With
    ``made_up_words``, the place, the object and the verb are each, a quarter of the time, a
    made-up word ("the dova", "{S} kelined the tarup to"): a word never seen before must not
    break the sentence's reading. Openers may leave their ``{activity}`` (what A and B did at the
    place, a made-up verb a quarter of the time) and ``{encounter}`` (what A did with B) open,
    drawn from ``activities`` and ``encounters``; with ``made_up_encounters`` the encounter too is
    a made-up verb a quarter of the time ("{A} trobbed {B} at the park"). Openers with a
    ``{lead}`` field open on one of ``leads``, capitalised made-up words ("Dova {A} and {B} went
    to the park,"): an unfamiliar word of several tokens just before the first name must not be
    read as part of that name.
    """

    openers: tuple[str, ...]
    middles: tuple[str, ...]
    verbs: dict[str, ObjectKind]
    objects: dict[ObjectKind, tuple[str, ...]]
    places: tuple[str, ...]
    names: dict[str, Gender]
    topic_words: bool = True
    adverbs: tuple[str, ...] = ()
    made_up_words: tuple[str, ...] = ()
    activities: tuple[str, ...] = ()
    encounters: tuple[str, ...] = ()
    made_up_encounters: bool = False
    leads: tuple[str, ...] = ()


IOI_TEMPLATES: tuple[str, ...] = (
    "When {A} and {B} went to the {place}, {S} gave the {object} to {IO}.",
    "While {A} and {B} were at the {place}, {S} handed the {object} to {IO}.",
    "{A} and {B} went to the {place}. {S} gave the {object} to {IO}.",
    "After {A} and {B} arrived at the {place}, {S} passed the {object} to {IO}.",
    "Then, {A} and {B} had a long day at the {place}. {S} showed the {object} to {IO}.",
    "When {A} and {B} got to the {place}, {S} threw the {object} to {IO}.",
    "{A} and {B} were working at the {place}. {S} brought the {object} to {IO}.",
    "As {A} and {B} left the {place}, {S} offered the {object} to {IO}.",
)

def compose(*slots: tuple[str, ...]) -> tuple[str, ...]:
    """Every concatenation of one piece per slot, in order: a few short lists make many frames.

    >>> compose(("When ", "As "), ("{A} left",))
    ('When {A} left', 'As {A} left')
    """
    return tuple("".join(pieces) for pieces in product(*slots))


#: What A and B did at a place, the ``{activity}`` of a composed opener ("went to", "reached").
_IOI_ACTIVITIES: tuple[str, ...] = (
    "went to", "were at", "arrived at", "got to", "left", "visited", "walked to", "reached",
    "spent the morning at", "spent the afternoon at", "had lunch at", "were working at", "came back from",
    "ran to", "sat down in", "were playing at", "met up at", "stopped by", "were sitting in", "hurried to",
    "wandered into", "returned to", "moved into", "painted", "found", "were resting in", "climbed up to",
    "were waiting in", "headed for", "set off for", "were reading in", "showed up at",
)
#: What A did with B, the ``{encounter}`` of an opener such as "{A} met {B} at the {place}.".
_IOI_ENCOUNTERS: tuple[str, ...] = (
    "met", "saw", "called", "helped", "found", "was talking with", "sat next to", "was walking with",
    "played with", "had dinner with", "waved to", "spotted", "followed", "bumped into", "waited for",
    "looked for", "chatted with", "worked with", "ran into", "was dancing with",
)
#: The openers of composed indirect-object sentences: a clause ("When A and B went to the park,"),
#: a sentence ("On Monday, A and B reached the park.") or A with B ("A sat next to B at the park.").
#: Their ``{activity}``, ``{encounter}`` and preposition are drawn when a sentence is composed.
#: The clause that follows a subordinator in a composed opener ("When" + "A and B went to the park,").
IOI_CLAUSE_OPENERS: tuple[str, ...] = ("{A} and {B} {activity} the {place},", "{A} and {B} {activity} the {place} together,")
_IOI_OPENERS: tuple[str, ...] = (
    compose(("When ", "While ", "After ", "As ", "Once ", "Just after ", "As soon as ", "Since ", "The moment ",
             "Just as ", "Right after ", "By the time ", "Whenever ", "Every time ", "Soon after ", "Now that ",
             "Although ", "Even though ", "If ", "Shortly after ", "Until "),
            IOI_CLAUSE_OPENERS)
    + compose(("", "Yesterday ", "One day, ", "Later, ", "That morning, ", "On {day}, ", "Then, ", "Last week, ",
               "At noon, ", "Early that day, ", "In the evening, ", "This time, ", "Once again, "),
              ("{A} and {B} {activity} the {place}.", "{A} and {B} {activity} the {place} together."))
    + compose(("", "Yesterday ", "On {day}, ", "That evening, ", "Later, ", "One morning, ", "Last week, "),
              ("{A} {encounter} {B} ",), ("at", "in", "by", "near", "behind", "next to", "across from"),
              (" the {place}.",))
)

#: The parts of the corpus recipe "v2"'s indirect-object sentences (:mod:`utils.world.heldout` has others).
TRAINING_IOI_PARTS = IOIParts(
    openers=_IOI_OPENERS,
    middles=("It was a {sentiment} day.", "They talked for a while.", "The {event} was {sentiment}.",
             "Everyone was busy.", "Time passed slowly.", "They both smiled.", "The sun was shining.",
             "It started to rain.", "The {event} was about to start.", "It was late.",
             "Some music was playing.", "They were in a hurry.", "Everything went well.",
             "Their time there was {sentiment}.")
    + compose(("The room", "The street", "The air", "The sky", "The road", "The water", "The garden", "The hall"),
              (" was quiet.", " was cold.", " felt warm.", " grew dark.", " was busy.", " looked clean.",
               " was empty.", " smelled of rain.")),
    verbs=dict(GIVING_VERBS), objects=dict(GIVING_OBJECTS), places=MORE_PLACES, names=dict(ALL_NAMES),
    adverbs=("then ", "later ", "finally ", "quickly ", "soon "),
    activities=_IOI_ACTIVITIES, encounters=_IOI_ENCOUNTERS,
)


def indirect_object(
    rng: random.Random,
    *,
    names: tuple[str, str] | None = None,
    subject_first: bool | None = None,
    template: int | None = None,
    topic: Topic | None = None,
    parts: IOIParts | None = None,
) -> Document:
    """One indirect-object sentence; ``prompt`` stops before the indirect object's name.

    ``names`` are (A, B) in order of appearance; the subject S of the second clause is A when
    ``subject_first`` (the "ABA" order, answer B) and B otherwise ("ABB", answer A). Without
    ``parts`` the sentence is one of the eight :data:`IOI_TEMPLATES`; with ``parts`` it is composed
    from them (an opener, 0 to 2 sentences between, a verb of giving or telling and its object),
    and its names come from ``parts.names``.
    Labels: ``indirect_object``, ``subject``, their genders, ``order``, ``template`` (the template's
    or the opener's index), ``topic``.
    """
    a, b = names or _pick_names(rng, 2, parts.names if parts else NAMES)
    subject_first = rng.random() < 0.5 if subject_first is None else subject_first
    if parts is None:
        template_index = rng.randrange(len(IOI_TEMPLATES)) if template is None else template
    topic = topic or rng.choice(TOPICS)
    subject, io = (a, b) if subject_first else (b, a)
    words = TOPIC_WORDS[topic]
    if parts is None:
        values = {"place": rng.choice(words.places), "object": rng.choice(words.objects)}
        text_template = IOI_TEMPLATES[template_index].format(A="{A}", B="{B}", S="{S}", IO="{IO}", **values)
    else:
        text_template, template_index = _composed_ioi_template(rng, parts, topic)
    values = {"A": a, "B": b, "S": subject, "IO": io}
    span_kinds = {"A": "name", "B": "name", "S": "ioi_subject", "IO": "ioi_indirect_object"}
    out = TextBuilder()
    for literal, field, _, _ in string.Formatter().parse(text_template):
        out.add(literal)
        if field == "IO":
            prompt = out.text[:-1]  # the prompt stops before " {IO}"
        if field:
            out.add(values[field], span_kinds[field], values[field])
    genders = {**NAMES, **(parts.names if parts else {})}
    labels = {"indirect_object": io, "subject": subject, "indirect_object_gender": genders[io],
              "subject_gender": genders[subject], "order": "ABA" if subject_first else "ABB",
              "template": template_index, "topic": topic}
    return Document(out.text, "ioi", labels, tuple(out.spans), prompt=prompt, answer=" " + io)


def past_tense(word: str | None) -> str | None:
    """A made-up verb's past tense ("dova" -> "dovaed", "tare" -> "tared"); None stays None."""
    return None if word is None else word + ("d" if word.endswith("e") else "ed")


def _composed_ioi_template(rng: random.Random, parts: IOIParts, topic: Topic) -> tuple[str, int]:
    """A sentence template composed from ``parts`` with only the name fields left open, and the
    index of its opener: ``"{A} met {B} at the cafe. It was a lovely day. {S} sent the card to {IO}."``."""
    words = TOPIC_WORDS[topic]
    topic_places, topic_objects = (words.places, words.objects) if parts.topic_words else ((), ())
    opener_index = rng.randrange(len(parts.openers))
    made_up = lambda: rng.choice(parts.made_up_words) if parts.made_up_words and rng.random() < 0.25 else None  # noqa: E731
    place = made_up() or rng.choice(topic_places + parts.places)
    activity = past_tense(made_up()) or (rng.choice(parts.activities) if parts.activities else None)
    encounter = rng.choice(parts.encounters) if parts.encounters else None
    if parts.made_up_encounters:  # an extra draw only here: parts without it give the sentences they always did
        encounter = past_tense(made_up()) or encounter
    day = rng.choice(DAYS)
    lead = rng.choice(parts.leads) if "{lead}" in parts.openers[opener_index] else None
    opener = parts.openers[opener_index].format(A="{A}", B="{B}", place=place, day=day,
                                                activity=activity, encounter=encounter, lead=lead)
    # a sentence may stand between a full opening sentence and the giving clause, not after "When ...,"
    n_middles = 0 if opener.endswith(",") else rng.choice([0, 1, 1, 2])
    middles = [m.format(sentiment=rng.choice(SENTIMENT_WORDS[rng.choice(SENTIMENTS)]), event=rng.choice(words.events))
               for m in rng.sample(parts.middles, n_middles)]
    verb = rng.choice(sorted(parts.verbs))
    kind = parts.verbs[verb]
    obj = rng.choice(parts.objects[kind] + (topic_objects if kind == "thing" else ()))
    obj, verb = made_up() or obj, past_tense(made_up()) or verb
    adverb = rng.choice(parts.adverbs) if parts.adverbs and rng.random() < 0.5 else ""
    giving = f"{{S}} {adverb}{verb} the {obj} to {{IO}}."
    return " ".join([opener, *middles, giving]), opener_index


# ---------------------------------------------------------------------------------------------
# Subject-verb agreement across a distractor: "The dog near the cats is" -> " is" not " are".
# ---------------------------------------------------------------------------------------------


def agreement(
    rng: random.Random,
    *,
    number: Literal["singular", "plural"] | None = None,
    distractor_number: Literal["singular", "plural", "none"] | None = None,
    n_sentences: int = 1,
    nouns: tuple[tuple[str, str], ...] = AGREEMENT_NOUNS,
    prepositions: tuple[str, ...] = AGREEMENT_PREPOSITIONS,
) -> Document:
    """Sentences whose verb must agree with the subject, not with the noun next to the verb.

    With ``n_sentences > 1`` the earlier sentences are context; ``prompt``, ``answer`` and the
    labels (``number``, ``distractor_number``, ``verb``) describe the last one. Subjects and
    distractors are drawn from ``nouns`` (singular, plural), prepositions from ``prepositions``.
    """
    out = TextBuilder()
    labels: dict[str, str] = {}
    prompt = ""
    for i in range(n_sentences):
        last = i == n_sentences - 1
        subject_number = (number if last and number else None) or rng.choice(["singular", "plural"])
        distractor = (distractor_number if last and distractor_number else None) or rng.choice(
            ["singular", "plural", "plural" if subject_number == "singular" else "singular", "none"])
        subject_pair, distractor_pair = rng.sample(nouns, 2)
        subject = subject_pair[subject_number == "plural"]
        verb_pair = rng.choice(AGREEMENT_VERBS)
        verb = verb_pair[subject_number == "plural"]
        if i:
            out.add(" ")
        out.add("The ").add(subject, "subject", subject_number)
        if distractor != "none":
            noun = distractor_pair[distractor == "plural"]
            if rng.random() < 0.7:
                out.add(f" {rng.choice(prepositions)} the ").add(noun, "distractor", distractor)
            else:
                out.add(" that the ").add(noun, "distractor", distractor).add(" saw")
        prompt = out.text
        out.add(" ").add(verb, "verb", subject_number)
        out.add(f" a {rng.choice(AGREEMENT_ADJECTIVES)} hat." if verb_pair[0] == "has"
                else f" {rng.choice(AGREEMENT_ADJECTIVES)}.")
        labels = {"number": subject_number, "distractor_number": distractor, "verb": verb,
                  "verb_pair": f"{verb_pair[0]}/{verb_pair[1]}"}
    return Document(out.text, "agreement", labels, tuple(out.spans), prompt=prompt, answer=" " + labels["verb"])


# ---------------------------------------------------------------------------------------------
# Facts: a fixed table stated in several phrasings. Phrasing 0 is the canonical prompt.
# ---------------------------------------------------------------------------------------------

FACT_RELATIONS: dict[str, dict[str, str]] = {
    "capital": CAPITALS, "language": LANGUAGES, "animal_sound": ANIMAL_SOUNDS,
}
FACT_PHRASINGS: dict[str, tuple[str, ...]] = {
    "capital": ("The capital of {s} is {o}.", "{s} has its capital in {o}.",
                "Q: What is the capital of {s}? A: {o}.", "{o} is the capital of {s}."),
    "language": ("The language of {s} is {o}.", "People in {s} speak {o}.",
                 "In {s}, most people speak {o}.", "{o} is spoken in {s}."),
    "animal_sound": ("The {s} says {o}.", "A {s} makes the sound {o}.",
                     "Listen! The {s} goes {o}.", "{o} is the sound of the {s}."),
}

#: More phrasings of each relation, for the corpus recipe "v2" (``FACT_PHRASINGS`` come first).
TRAINING_FACT_PHRASINGS: dict[str, tuple[str, ...]] = {
    "capital": FACT_PHRASINGS["capital"] + ("{s}'s capital is {o}.", "The capital of {s}? It is {o}."),
    "language": FACT_PHRASINGS["language"] + ("The people of {s} speak {o}.", "In {s} the language is {o}."),
    "animal_sound": FACT_PHRASINGS["animal_sound"] + ("The sound of the {s} is {o}.", "A {s} can say {o}."),
}


def all_facts() -> list[tuple[str, str, str]]:
    """Every fact of the world as (relation, subject, object); 48 in all."""
    return [(relation, s, o) for relation, table in FACT_RELATIONS.items() for s, o in table.items()]


def fact(
    rng: random.Random,
    *,
    relation: str | None = None,
    subject: str | None = None,
    phrasing: int | None = None,
    n_facts: int = 1,
    phrasings: dict[str, tuple[str, ...]] = FACT_PHRASINGS,
) -> Document:
    """One or more facts in a paragraph; ``prompt``/``answer`` state the last one.

    Each fact is stated in one of ``phrasings[relation]``. Labels: ``relation``, ``subject``,
    ``object``, ``phrasing`` of the last fact. With the default phrasing choice the last fact ends
    with its object, so ``prompt`` is well defined.
    """
    out = TextBuilder()
    facts = rng.sample(all_facts(), n_facts)
    if relation is not None or subject is not None:
        relation = relation or next(r for r, table in FACT_RELATIONS.items() if subject in table)
        subject = subject or rng.choice(sorted(FACT_RELATIONS[relation]))
        facts[-1] = (relation, subject, FACT_RELATIONS[relation][subject])
    prompt, labels = "", {}
    for i, (rel, s, o) in enumerate(facts):
        last = i == n_facts - 1
        # the last fact ends with its object so that it can be asked as a prompt
        ending_with_object = [k for k, p in enumerate(phrasings[rel]) if p.endswith("{o}.")]
        k = phrasing if (last and phrasing is not None) else rng.choice(
            ending_with_object if last else range(len(phrasings[rel])))
        sentence = phrasings[rel][k].format(s=s, o=o)
        if i:
            out.add(" ")
        start = sentence.rindex(o) if sentence.endswith(o + ".") else sentence.index(o)
        if last:
            prompt = out.text + sentence[:start].rstrip()
        out.add(sentence[:start]).add(o, "answer", rel).add(sentence[start + len(o):])
        labels = {"relation": rel, "subject": s, "object": o, "phrasing": k}
    return Document(out.text, "facts", labels, tuple(out.spans), prompt=prompt, answer=" " + labels["object"])


# ---------------------------------------------------------------------------------------------
# Few-shot lists "x -> y": the tasks share inputs so that the shots decide the task.
# ---------------------------------------------------------------------------------------------


def _successor(items: tuple[str, ...]) -> dict[str, str]:
    return {x: items[(i + 1) % len(items)] for i, x in enumerate(items)}


_NUMBERS = tuple(str(n) for n in range(1, 31))
_COUNTRIES = tuple(CAPITALS)
FEW_SHOT_TASKS: dict[str, dict[str, str]] = {
    "antonym": dict(ANTONYMS),
    "uppercase": {x: x.upper() for x in (*ANTONYMS, *PLURALS, *_COUNTRIES, *DAYS, *MONTHS)},
    "plural": dict(PLURALS),
    "capital": dict(CAPITALS),
    "language": dict(LANGUAGES),
    "successor": {**_successor(DAYS), **_successor(MONTHS), **{str(n): str(n + 1) for n in range(1, 30)}},
    "predecessor": {**{v: k for k, v in _successor(DAYS).items()}, **{v: k for k, v in _successor(MONTHS).items()},
                    **{str(n + 1): str(n) for n in range(1, 30)}},
}


def few_shot(
    rng: random.Random,
    *,
    task: str | None = None,
    n_shots: int | None = None,
    query: str | None = None,
) -> Document:
    """A list of ``n_shots`` solved examples of one task, then a query: ``x -> y`` per line.

    ``prompt`` ends with ``"{query} ->"``, ``answer`` is ``" {y}"``. Labels: ``task``,
    ``n_shots``, ``query``, ``target``.
    """
    task = task or rng.choice(sorted(FEW_SHOT_TASKS))
    if task not in FEW_SHOT_TASKS:
        raise ValueError(f"unknown few-shot task {task!r}; choose one of {sorted(FEW_SHOT_TASKS)}")
    table = FEW_SHOT_TASKS[task]
    n_shots = rng.randint(0, 10) if n_shots is None else n_shots
    query = query or rng.choice(sorted(table))
    shots = rng.sample([x for x in sorted(table) if x != query], n_shots)
    out = TextBuilder()
    for x in shots:
        out.add(f"{x} -> {table[x]}\n")
    prompt = out.text + f"{query} ->"
    out.add(f"{query} -> ").add(table[query], "answer", task).add("\n")
    labels = {"task": task, "n_shots": n_shots, "query": query, "target": table[query]}
    return Document(out.text, "few_shot", labels, tuple(out.spans), prompt=prompt, answer=" " + table[query])


# ---------------------------------------------------------------------------------------------
# Sequences: counting, days, months, and random word sequences repeated once (induction).
# ---------------------------------------------------------------------------------------------

RANDOM_WORD_POOL: tuple[str, ...] = tuple(sorted(set(
    FILLER_WORDS + JOBS + tuple(w for pair in AGREEMENT_NOUNS for w in pair) + tuple(PLURALS))))


SequenceKind = Literal["count", "days", "months", "repeat"]
#: How often each kind of sequence is drawn: mostly repeats, the data that teaches in-context
#: copying (induction heads, Olsson et al. 2022).
SEQUENCE_KIND_WEIGHTS: dict[str, float] = {"count": 0.1, "days": 0.05, "months": 0.05, "repeat": 0.8}
REPEAT_SEPARATORS: tuple[str, ...] = (". ", " ", "\n", ", again: ")


def sequence(rng: random.Random, *, kind: SequenceKind | None = None, length: int | None = None,
             pool: tuple[str, ...] = RANDOM_WORD_POOL, gap: bool = False) -> Document:
    """An ordered sequence, or a random word sequence followed by an exact repeat.

    For ``kind="repeat"`` the words are drawn from ``pool`` and the spans ``first_copy`` and
    ``second_copy`` mark the two copies. Between them stands a separator (full stop, space, new
    line, ", again: ") or, with ``gap``, sometimes a story sentence or a few other words, so that
    copying does not depend on the distance between the copies.
    """
    kind = kind or rng.choices(list(SEQUENCE_KIND_WEIGHTS), list(SEQUENCE_KIND_WEIGHTS.values()))[0]
    out = TextBuilder()
    if kind == "count":
        start, length = rng.randint(1, 60), length or rng.randint(5, 20)
        out.add(" ".join(str(n) for n in range(start, start + length)) + ".")
    elif kind in ("days", "months"):
        items = DAYS if kind == "days" else MONTHS
        start, length = rng.randrange(len(items)), length or rng.randint(4, 12)
        out.add(", ".join(items[(start + i) % len(items)] for i in range(length)) + ".")
    else:
        length = length or rng.randint(5, 40)
        words = " ".join(rng.choice(pool) for _ in range(length))
        separator = _repeat_gap(rng, pool) if gap and rng.random() < 0.5 else rng.choice(REPEAT_SEPARATORS)
        out.add(words, "first_copy", "").add(separator).add(words, "second_copy", "").add(".")
    return Document(out.text, "sequence", {"kind": kind, "length": length}, tuple(out.spans))


def _repeat_gap(rng: random.Random, pool: tuple[str, ...]) -> str:
    """What stands between two copies when there is a gap: a story sentence or 1 to 12 other words."""
    if rng.random() < 0.5:
        return ". " + story(rng, n_sentences=1, with_ioi=False).text.split(". ")[0] + ". "
    return ". " + " ".join(rng.choice(pool) for _ in range(rng.randint(1, 12))) + ". "


# ---------------------------------------------------------------------------------------------
# Arithmetic: two-digit addition and subtraction, answered directly or with worked steps.
# ---------------------------------------------------------------------------------------------


def worked_steps(a: int, b: int, op: Literal["+", "-"]) -> str:
    """The chain of thought for ``a op b``, digit by digit, e.g. '7 + 8 = 15, carry 1. 4 + 3 + 1 = 8.'"""
    (a_tens, a_units), (b_tens, b_units) = divmod(a, 10), divmod(b, 10)
    if op == "+":
        units = a_units + b_units
        carry = units // 10
        return f"{a_units} + {b_units} = {units}, carry {carry}. {a_tens} + {b_tens} + {carry} = {a_tens + b_tens + carry}."
    borrow = int(a_units < b_units)
    top = a_units + 10 * borrow
    return f"{top} - {b_units} = {top - b_units}, borrow {borrow}. {a_tens} - {b_tens} - {borrow} = {a_tens - b_tens - borrow}."


def arithmetic(
    rng: random.Random,
    *,
    op: Literal["+", "-"] | None = None,
    style: Literal["direct", "worked"] | None = None,
    operands: tuple[int, int] | None = None,
) -> Document:
    """``Q: 47 + 38 = ?`` answered as ``A: The answer is 85.`` or with worked steps first.

    ``prompt`` ends with ``"A: The answer is"`` (direct) or ``"A: Step by step:"`` (worked);
    ``answer`` is the rest of the line. Subtraction never goes below zero.
    Labels: ``op``, ``a``, ``b``, ``result``, ``style``.
    """
    op = op or rng.choice(["+", "-"])
    style = style or rng.choice(["direct", "worked"])
    a, b = operands or (rng.randint(10, 99), rng.randint(10, 99))
    if op == "-" and b > a:
        a, b = b, a
    result = a + b if op == "+" else a - b
    question = f"Q: {a} {op} {b} = ?\nA:"
    if style == "direct":
        prompt, answer = question + " The answer is", f" {result}.\n"
    else:
        prompt, answer = question + " Step by step:", f" {worked_steps(a, b, op)} The answer is {result}.\n"
    labels = {"op": op, "a": a, "b": b, "result": result, "style": style}
    return Document(prompt + answer, "arithmetic", labels, prompt=prompt, answer=answer)


# ---------------------------------------------------------------------------------------------
# Records: JSON objects with a fixed schema, sometimes inside prose.
# ---------------------------------------------------------------------------------------------

RECORD_SCHEMA: dict[str, type] = {"name": str, "age": int, "city": str, "job": str}


def record(rng: random.Random, *, framing: int | None = None) -> Document:
    """A JSON record ``{"name": ..., "age": ..., "city": ..., "job": ...}`` on one line.

    ``prompt`` is the text up to and including ``Record:``; ``answer`` the JSON and newline.
    Labels: ``record`` (the dict), ``framing``.
    """
    data = {"name": rng.choice(sorted(NAMES)), "age": rng.randint(18, 90),
            "city": rng.choice(sorted(CAPITALS.values())), "job": rng.choice(JOBS)}
    framing = rng.randrange(3) if framing is None else framing
    prefix = ["", f"Here is the file on {data['name']}. ", f"{data['name']} filled in a form. "][framing]
    prompt = prefix + "Record:"
    answer = " " + json.dumps(data) + "\n"
    return Document(prompt + answer, "record", {"record": data, "framing": framing}, prompt=prompt, answer=answer)


# ---------------------------------------------------------------------------------------------
# Multiple choice in the A/B format of contrastive activation addition (Rimsky et al. 2024).
# ---------------------------------------------------------------------------------------------

TOPIC_PHRASES: dict[Topic, str] = {
    "wedding": "a wedding", "storm": "a storm", "school": "school",
    "sport": "sport", "cooking": "cooking", "travel": "travel",
}


Trait = Literal["sentiment", "emotion", "topic"]
TRAIT_VALUES: dict[str, tuple[str, ...]] = {"sentiment": SENTIMENTS, "emotion": EMOTIONS, "topic": TOPICS}


@dataclass(frozen=True)
class ChoiceParts:
    """The phrasings of an A/B question (see :func:`multiple_choice`), per trait.

    ``questions`` have a ``{value}`` field (for topics, a phrase such as "a wedding"); ``options``
    are sentences whose fields are filled from the world's word lists: ``{sentiment}``,
    ``{emotion_adjective}``, ``{emotion_verb}`` from the option's value, ``{event}``, ``{object}``,
    ``{place}`` from its topic, ``{name}`` a character. With ``made_up_words``, each event, object
    and place of a sentiment or emotion option is, a quarter of the time, a made-up word: only
    the trait's own word answers the question (a topic option keeps its topic's words).
    """

    questions: dict[str, tuple[str, ...]]
    options: dict[str, tuple[str, ...]]
    made_up_words: tuple[str, ...] = ()


#: The one phrasing of each trait that chapter 5's contrastive pairs use.
CAA_CHOICE_PARTS = ChoiceParts(
    questions={"sentiment": ("Which sentence is {value}?",), "emotion": ("Which sentence shows {value}?",),
               "topic": ("Which sentence is about {value}?",)},
    options={"sentiment": ("The {event} was {sentiment}.",), "emotion": ("{name} felt {emotion_adjective}.",),
             "topic": ("{name} looked at the {object}.",)},
)
#: Option sentences of the corpus recipe "v2", composed so that the trait's word stands anywhere
#: in a sentence of many shapes: only finding that word, not a frame, answers the question.
_SENTIMENT_OPTIONS: tuple[str, ...] = (
    compose(("The {event}", "The {object}", "The trip to the {place}", "The day at the {place}", "{name}'s {event}",
             "That {event}", "The whole {event}", "The {place}", "Everything", "The end of the {event}"),
            (" was {sentiment}", " was really {sentiment}", " turned out {sentiment}", " looked {sentiment}",
             " sounded {sentiment}", " felt {sentiment}", " seemed {sentiment}", " was quite {sentiment}"),
            (".", " to {name}.", " in the end.", " that day.", " for everyone.", " again.", " this time."))
    + compose(("", "Later, ", "In the end, ", "For {name}, ", "That day, "),
              ("It was a {sentiment} {event}", "It was a {sentiment} day at the {place}",
               "{name} thought the {object} was {sentiment}", "Everyone said the {event} was {sentiment}",
               "{name} called the {place} {sentiment}", "{name} called the {event} {sentiment}",
               "Everyone found the {event} {sentiment}", "They found the {place} {sentiment}",
               "{name} had a {sentiment} time", "{name} found the {object} {sentiment}"),
              (".",))
)
_EMOTION_PREFIXES: tuple[str, ...] = (
    "", "Later, ", "At the {place}, ", "After the {event}, ", "That day, ", "In the morning, ", "Soon ", "Then ",
    "At last, ", "That night, ", "All day, ", "By noon, ", "Once again, ",
)
_EMOTION_OPTIONS: tuple[str, ...] = (
    compose(_EMOTION_PREFIXES,
            ("{name} felt {emotion_adjective}", "{name} was {emotion_adjective}", "{name} became {emotion_adjective}",
             "{name} got {emotion_adjective}", "{name} looked {emotion_adjective}", "{name} seemed {emotion_adjective}",
             "{name} sounded {emotion_adjective}", "{name} grew {emotion_adjective}", "{name} stayed {emotion_adjective}",
             "{name} was very {emotion_adjective}", "{name} felt so {emotion_adjective}"),
            (".", " about the {event}.", " at the {place}.", " again.", " about the {object}.", " all day.",
             " for a while.", " that night.", " at the {event}."))
    + compose(_EMOTION_PREFIXES,
              ("{name} {emotion_verb}",),
              (".", " at the {object}.", " at the {place}.", " again.", " all the way home.", " for a while.",
               " at the {event}."))
)
_TOPIC_OPTIONS: tuple[str, ...] = (
    compose(("", "Later, ", "That day, ", "In the morning, ", "After a while, ", "Soon ", "At last, ", "That night, "),
            ("{name} looked at the {object}", "{name} found the {object}", "{name} bought the {object}",
             "{name} put away the {object}", "{name} went to the {place}", "{name} walked into the {place}",
             "{name} waited for the {event}", "{name} planned the {event}", "{name} thought about the {event}",
             "{name} got ready for the {event}", "{name} cleaned the {object}", "{name} ran to the {place}",
             "{name} asked for the {object}", "{name} dreamed of the {event}", "{name} stayed at the {place}",
             "{name} wrote about the {event}"),
            (".",))
    + ("The {object} was in the {place}.", "Everyone went to the {event}.", "The {event} was at the {place}.",
       "There was a {object} at the {place}.", "The {event} took all day.", "Nobody forgot the {event}.")
)


def _questions(*cores: str) -> tuple[str, ...]:
    """The A/B questions of a trait: each core question alone or after a sentence that sets it up."""
    leads = ("", "Look at both sentences. ", "Read the two sentences. ", "Here are two options. ", "Think about it. ")
    return compose(leads, cores)


#: The phrasings of the corpus recipe "v2" (:mod:`utils.world.heldout` has others).
TRAINING_CHOICE_PARTS = ChoiceParts(
    questions={
        "sentiment": _questions(
            "Which sentence is {value}?", "Which of these sentences is {value}?", "Which sentence sounds {value}?",
            "Pick the {value} sentence.", "Which option is {value}?", "Choose the {value} sentence.",
            "Which one is {value}?", "Select the {value} option.", "Which of the two is {value}?",
            "Which one seems {value}?", "Which line is {value}?", "Which of them is {value}?",
            "Choose the {value} one.", "Name the {value} sentence.", "Which sentence is the {value} one?",
            "Tell me which sentence is {value}."),
        "emotion": _questions(
            "Which sentence shows {value}?", "Which sentence is about {value}?", "Which sentence expresses {value}?",
            "Pick the sentence that shows {value}.", "Which option shows {value}?",
            "Choose the sentence that shows {value}.", "Which one shows {value}?", "Select the option with {value}.",
            "Where is there {value}?", "Which sentence has {value} in it?", "Which line shows {value}?",
            "Which of them expresses {value}?", "Pick the one with {value}.", "Which sentence describes {value}?",
            "In which sentence is there {value}?", "Tell me which sentence shows {value}."),
        "topic": _questions(
            "Which sentence is about {value}?", "Which sentence mentions {value}?",
            "Which sentence belongs to a story about {value}?", "Pick the sentence about {value}.",
            "Which option is about {value}?", "Choose the sentence about {value}.", "Which one is about {value}?",
            "Select the option about {value}.", "Which of the two mentions {value}?", "Which line is about {value}?",
            "Which sentence has to do with {value}?", "Which of them is about {value}?", "Which one mentions {value}?",
            "Which sentence describes {value}?", "Pick the one about {value}.",
            "Tell me which sentence is about {value}."),
    },
    options={"sentiment": _SENTIMENT_OPTIONS, "emotion": _EMOTION_OPTIONS, "topic": _TOPIC_OPTIONS},
)

#: A/B questions between two words, the letter right before each: the easy form of the task,
#: whose circuit (find the option with the trait, read its letter) the sentence form reuses.
WORD_CHOICE_PARTS = ChoiceParts(
    questions={"sentiment": ("Which word is {value}?",), "emotion": ("Which word shows {value}?",),
               "topic": ("Which word is about {value}?",)},
    options={"sentiment": ("{sentiment}",), "emotion": ("{emotion_adjective}",), "topic": ("{object}",)},
)


#: A/B options of a few words each, the trait's word at most three words after the letter: the
#: bridge from the questions between two words to those between two sentences, which recipe "v3"
#: finishes on (in the project's trials the letter circuit of the word form reached the sentence
#: form through them, and not without them).
BRIDGE_CHOICE_PARTS = ChoiceParts(
    questions=TRAINING_CHOICE_PARTS.questions,
    options={
        "sentiment": ("{sentiment} {event}.", "{sentiment} day at the {place}.", "a {sentiment} {event}.",
                      "so {sentiment}.", "very {sentiment}.", "It was {sentiment}.", "A {sentiment} {object}.",
                      "Quite {sentiment}.", "The {event}: {sentiment}.", "The {object} was {sentiment}."),
        "emotion": ("{emotion_adjective} {name}.", "{emotion_adjective} again.", "so {emotion_adjective}.",
                    "very {emotion_adjective}.", "{name} {emotion_verb}.", "She was {emotion_adjective}.",
                    "He felt {emotion_adjective}.", "{name} felt {emotion_adjective}.", "All {emotion_adjective}.",
                    "Then {name} {emotion_verb}."),
        "topic": ("the {object}.", "a {event}.", "the {place}.", "at the {place}.", "a {object}.", "to the {event}.",
                  "{name}'s {object}.", "{name} saw the {object}.", "The {event} began.", "In the {place}."),
    },
)


def _option_sentence(rng: random.Random, template: str, trait: str, value: str, name: str, topic: Topic,
                     made_up_words: tuple[str, ...] = ()) -> str:
    """Fill an option template, its fields drawn in order from the word lists of ``value`` (and
    ``topic``); outside topic questions an event, object or place is a made-up word a quarter of the time."""
    words = TOPIC_WORDS[value if trait == "topic" else topic]  # type: ignore[index]
    choices = {"sentiment": lambda: SENTIMENT_WORDS[value], "emotion_adjective": lambda: EMOTION_ADJECTIVES[value],
               "emotion_verb": lambda: EMOTION_VERBS[value], "event": lambda: words.events,
               "object": lambda: words.objects, "place": lambda: words.places}
    replaceable = ("event", "object", "place") if made_up_words and trait != "topic" else ()
    values = {"name": name}
    for _, field, _, _ in string.Formatter().parse(template):
        if field in replaceable and rng.random() < 0.25:
            values[field] = rng.choice(made_up_words)
        elif field and field != "name":
            values[field] = rng.choice(choices[field]())  # type: ignore[index]
    return template.format(**values)


def multiple_choice(
    rng: random.Random,
    *,
    trait: Trait | None = None,
    value: str | None = None,
    correct_letter: Literal["A", "B"] | None = None,
    parts: ChoiceParts | None = None,
) -> Document:
    """'Question: Which sentence is positive? (A) ... (B) ... Answer: (A)'.

    The correct letter is decided by the labelled trait: the option whose ``trait`` equals the
    ``value`` asked for. ``prompt`` ends with ``"Answer:"``, ``answer`` is ``" (A)"`` or ``" (B)"``.
    Without ``parts`` the question is phrased as in :data:`CAA_CHOICE_PARTS`; with ``parts`` its
    question and its two option sentences are drawn from them (both options in one phrasing).
    Labels: ``trait``, ``value`` (asked for), ``other`` (the wrong option's value), ``correct``,
    ``question`` and ``option`` (the phrasings' indices).
    """
    trait = trait or rng.choice(["sentiment", "emotion", "topic"])
    values = TRAIT_VALUES[trait]
    value = value or rng.choice(values)
    other = rng.choice([v for v in values if v != value])
    correct_letter = correct_letter or rng.choice(["A", "B"])
    name, topic = rng.choice(sorted(NAMES)), rng.choice(TOPICS)
    phrasings = parts or CAA_CHOICE_PARTS
    option = rng.randrange(len(phrasings.options[trait])) if parts else 0
    right, wrong = (_option_sentence(rng, phrasings.options[trait][option], trait, v, name, topic,
                                     phrasings.made_up_words) for v in (value, other))
    first, second = (right, wrong) if correct_letter == "A" else (wrong, right)
    question = rng.randrange(len(phrasings.questions[trait])) if parts else 0
    asked = TOPIC_PHRASES[value] if trait == "topic" else value  # type: ignore[index]
    prompt = f"Question: {phrasings.questions[trait][question].format(value=asked)}\n(A) {first}\n(B) {second}\nAnswer:"
    answer = f" ({correct_letter})\n"
    labels = {"trait": trait, "value": value, "other": other, "correct": correct_letter,
              "question": question, "option": option}
    return Document(prompt + answer, "multiple_choice", labels, prompt=prompt, answer=answer)


FAMILIES: dict[str, Callable[..., Document]] = {
    "story": story, "ioi": indirect_object, "agreement": agreement, "facts": fact,
    "few_shot": few_shot, "sequence": sequence, "arithmetic": arithmetic, "record": record,
    "multiple_choice": multiple_choice,
}
