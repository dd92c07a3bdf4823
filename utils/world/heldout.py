"""Held-out material: names, words, frames and phrasings that no corpus recipe ever writes.

A behaviour measured on the generator's own templates may be a lookup; the same behaviour on a
new sentence of the same kind is a mechanism. Everything here is disjoint *by construction* from
the training world (``tests/test_world.py`` checks it against the word lists and a sample of
the corpus): new names and words are absent from every word list, new frames and phrasings
from every template. The model card's generalisation section
(:mod:`utils.course_model.generalisation`) measures the course model on it.
"""

from __future__ import annotations

from utils.world.families import ChoiceParts, IOIParts, TRAINING_IOI_PARTS
from utils.world.vocabulary import AGREEMENT_NOUNS, MORE_AGREEMENT_NOUNS, PLURALS, Gender

#: Names of no character of the corpus (each tokenized into pieces by the course tokenizer).
HELDOUT_NAMES: dict[str, Gender] = {
    **{name: "female" for name in ("Ivy", "Nora", "Ruby", "Iris", "Vera", "Hazel", "Stella", "Flora", "Greta",
                                   "Edith", "Mabel", "Tessa", "Nina", "Agnes", "Doris")},
    **{name: "male" for name in ("Oscar", "Hugo", "Felix", "Leo", "Otto", "Milo", "Jonah", "Caleb", "Silas",
                                 "Rufus", "Dexter", "Ezra", "Jasper", "Boris", "Victor")},
}

#: Indirect-object sentences of new openers, middles, verbs, objects and places (the names are
#: the training ones: :data:`HELDOUT_NAME_IOI_PARTS` holds out the names instead).
HELDOUT_IOI_PARTS = IOIParts(
    openers=(
        "Because {A} and {B} stayed at the {place},", "{A} and {B} waited outside the {place}.",
        "Before {A} and {B} drove to the {place},", "{A} joined {B} near the {place}.",
        "After lunch, {A} and {B} looked around the {place}.", "The day {A} and {B} cleaned the {place},",
    ),
    middles=("Nobody else was around.", "The light was fading.", "A bell rang twice."),
    verbs={"awarded": "thing", "slid": "thing", "donated": "thing", "presented": "thing", "rolled": "thing",
           "kicked": "thing", "shipped": "thing", "rented": "thing", "forwarded": "writing",
           "recited": "writing", "whispered": "message", "revealed": "message"},
    objects={"thing": ("blanket", "teapot", "compass", "scarf", "puzzle", "kite", "trumpet", "saddle", "bucket",
                       "medal"),
             "message": ("rumour", "riddle", "password"), "writing": ("postcard", "diary", "telegram")},
    places=("museum", "cinema", "market", "beach", "castle", "garage", "zoo", "bank", "theatre", "barn"),
    names=TRAINING_IOI_PARTS.names,
    topic_words=False,
)
#: The training frames with held-out names.
HELDOUT_NAME_IOI_PARTS = IOIParts(
    openers=TRAINING_IOI_PARTS.openers, middles=TRAINING_IOI_PARTS.middles, verbs=TRAINING_IOI_PARTS.verbs,
    objects=TRAINING_IOI_PARTS.objects, places=TRAINING_IOI_PARTS.places, names=HELDOUT_NAMES,
    activities=TRAINING_IOI_PARTS.activities, encounters=TRAINING_IOI_PARTS.encounters,
)

#: Nouns of no agreement sentence of the corpus that the model knows from elsewhere: the plural
#: few-shot task's (irregular ones included), never a subject or a distractor.
HELDOUT_AGREEMENT_NOUNS: tuple[tuple[str, str], ...] = tuple(
    pair for pair in PLURALS.items() if pair not in AGREEMENT_NOUNS + MORE_AGREEMENT_NOUNS)
#: Regular nouns of no document at all: agreement from the plural "s" alone, in pieces of words.
UNSEEN_AGREEMENT_NOUNS: tuple[tuple[str, str], ...] = (
    ("tree", "trees"), ("girl", "girls"), ("boy", "boys"), ("shoe", "shoes"), ("bell", "bells"),
    ("bench", "benches"), ("flag", "flags"), ("cup", "cups"), ("pen", "pens"), ("tent", "tents"),
    ("sailor", "sailors"), ("drum", "drums"),
)
#: Prepositions of no document of the corpus.
HELDOUT_PREPOSITIONS: tuple[str, ...] = ("below", "inside", "beneath", "outside", "around")

#: Common words of no word list of the world: repeated, they test induction on unseen text.
HELDOUT_WORDS: tuple[str, ...] = (
    "pumpkin", "glacier", "walrus", "velvet", "orchid", "lobster", "cactus", "tornado", "harp", "igloo",
    "jigsaw", "kayak", "llama", "noodle", "octopus", "parrot", "quartz", "raisin", "sapphire", "tulip",
    "umpire", "vortex", "waffle", "yogurt", "zipper", "acorn", "biscuit", "crayon", "dolphin", "emerald",
    "falcon", "goblin", "hammock", "iceberg", "jellyfish", "koala", "mango", "nutmeg", "oyster", "peanut",
    "quilt", "radish", "salmon", "turnip", "unicorn", "volcano", "walnut", "yacht", "pebble", "cobweb",
)

#: A/B questions phrased in new ways, with options in new sentence frames.
HELDOUT_CHOICE_PARTS = ChoiceParts(
    questions={
        "sentiment": ("Find the {value} sentence.", "Of the two, which sentence feels {value}?"),
        "emotion": ("Find the sentence that shows {value}.", "Of the two, which sentence is full of {value}?"),
        "topic": ("Find the sentence about {value}.", "Of the two, which sentence talks about {value}?"),
    },
    options={
        "sentiment": ("What a {sentiment} {event} it was.", "All of it seemed {sentiment} to {name}."),
        "emotion": ("Suddenly {name} was {emotion_adjective}.", "{name} looked {emotion_adjective} all evening."),
        "topic": ("{name} talked about the {event}.", "{name} asked where the {object} was."),
    },
)

#: Each relation in phrasings that no fact of the corpus is stated in (each ends with its object).
HELDOUT_FACT_PHRASINGS: dict[str, tuple[str, ...]] = {
    "capital": ("The capital city of {s} is {o}.", "Visitors to {s} often fly into its capital, {o}."),
    "language": ("The main language in {s} is {o}.", "Children in {s} learn to read in {o}."),
    "animal_sound": ("Every {s} says {o}.", "On the farm, you can hear the {s} say {o}."),
}


def heldout_words() -> frozenset[str]:
    """Every word that no training document may contain: the held-out names, verbs, objects,
    places, unseen nouns, prepositions and induction words (the nouns of
    :data:`HELDOUT_AGREEMENT_NOUNS` are held out of agreement sentences only)."""
    words = {*HELDOUT_NAMES, *HELDOUT_IOI_PARTS.verbs, *HELDOUT_IOI_PARTS.places, *HELDOUT_PREPOSITIONS,
             *HELDOUT_WORDS}
    words |= {w for group in HELDOUT_IOI_PARTS.objects.values() for w in group}
    words |= {w for pair in UNSEEN_AGREEMENT_NOUNS for w in pair}
    return frozenset(words)
