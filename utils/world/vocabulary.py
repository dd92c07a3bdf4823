"""The world's vocabulary: every word the generator can write, grouped by what it means.

The word sets that carry a latent variable (sentiment, emotion, topic) are disjoint, so
the labeller in :mod:`utils.world.labeller` can recover the variable from text alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Gender = Literal["female", "male"]
Sentiment = Literal["positive", "negative"]
Emotion = Literal["anger", "joy", "fear", "calm"]
Topic = Literal["wedding", "storm", "school", "sport", "cooking", "travel"]
Number = Literal["singular", "plural"]

SENTIMENTS: tuple[Sentiment, ...] = ("positive", "negative")
EMOTIONS: tuple[Emotion, ...] = ("anger", "joy", "fear", "calm")
TOPICS: tuple[Topic, ...] = ("wedding", "storm", "school", "sport", "cooking", "travel")

NAMES: dict[str, Gender] = {
    "Mary": "female", "Anna": "female", "Sarah": "female", "Emma": "female",
    "Lucy": "female", "Kate": "female", "Alice": "female", "Jane": "female",
    "Rose": "female", "Laura": "female", "Emily": "female", "Grace": "female",
    "John": "male", "Tom": "male", "James": "male", "David": "male",
    "Peter": "male", "Mark": "male", "Paul": "male", "Jack": "male",
    "Ben": "male", "Mike": "male", "Henry": "male", "Sam": "male",
}

PRONOUNS: dict[Gender, dict[str, str]] = {
    "female": {"subject": "she", "object": "her", "possessive": "her"},
    "male": {"subject": "he", "object": "him", "possessive": "his"},
}


@dataclass(frozen=True)
class TopicWords:
    """The words that mark one topic: places to go, objects to hold, things that happen."""

    places: tuple[str, ...]
    objects: tuple[str, ...]
    events: tuple[str, ...]  # nouns used in "The {event} was {adjective}."

    @property
    def all_words(self) -> frozenset[str]:
        return frozenset(self.places + self.objects + self.events)


TOPIC_WORDS: dict[Topic, TopicWords] = {
    "wedding": TopicWords(("chapel", "reception"), ("ring", "cake", "veil", "bouquet"), ("ceremony", "vows", "bride", "groom")),
    "storm": TopicWords(("harbour", "cliff"), ("umbrella", "lantern", "raincoat", "rope"), ("thunder", "lightning", "rain", "wind")),
    "school": TopicWords(("classroom", "library"), ("notebook", "pencil", "chalk", "textbook"), ("lesson", "exam", "teacher", "homework")),
    "sport": TopicWords(("stadium", "field"), ("ball", "whistle", "trophy", "helmet"), ("match", "goal", "team", "coach")),
    "cooking": TopicWords(("kitchen", "bakery"), ("pan", "spoon", "bread", "soup"), ("recipe", "dinner", "oven", "sauce")),
    "travel": TopicWords(("station", "airport"), ("suitcase", "ticket", "map", "passport"), ("journey", "train", "flight", "hotel")),
}

SENTIMENT_WORDS: dict[Sentiment, tuple[str, ...]] = {
    "positive": ("wonderful", "lovely", "beautiful", "perfect", "delightful", "pleasant", "splendid", "great"),
    "negative": ("terrible", "awful", "horrible", "dreadful", "miserable", "ugly", "nasty", "bad"),
}

# Emotions: adjectives for "X felt {adjective}" and past-tense verbs for "X {verb}."
EMOTION_ADJECTIVES: dict[Emotion, tuple[str, ...]] = {
    "anger": ("angry", "furious", "annoyed", "cross"),
    "joy": ("joyful", "cheerful", "delighted", "glad"),
    "fear": ("afraid", "scared", "terrified", "nervous"),
    "calm": ("calm", "peaceful", "relaxed", "serene"),
}
EMOTION_VERBS: dict[Emotion, tuple[str, ...]] = {
    "anger": ("shouted", "yelled", "fumed"),
    "joy": ("laughed", "cheered", "giggled"),
    "fear": ("trembled", "shivered", "gasped"),
    "calm": ("rested", "sighed", "lingered"),
}

# Subject-verb agreement: (singular, plural) nouns and the verb pairs that must agree.
AGREEMENT_NOUNS: tuple[tuple[str, str], ...] = (
    ("dog", "dogs"), ("cat", "cats"), ("key", "keys"), ("box", "boxes"), ("bird", "birds"),
    ("car", "cars"), ("child", "children"), ("farmer", "farmers"), ("horse", "horses"),
    ("lamp", "lamps"), ("door", "doors"), ("man", "men"), ("woman", "women"), ("apple", "apples"),
    ("boat", "boats"), ("chair", "chairs"),
)
AGREEMENT_PREPOSITIONS: tuple[str, ...] = ("near", "behind", "beside", "under", "with", "by", "above")
AGREEMENT_VERBS: tuple[tuple[str, str], ...] = (("is", "are"), ("was", "were"), ("has", "have"))
AGREEMENT_ADJECTIVES: tuple[str, ...] = ("old", "red", "new", "tired", "small", "quiet", "clean", "wet")

# Facts: subject -> object per relation. At least 40 in all.
CAPITALS: dict[str, str] = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
    "China": "Beijing", "Russia": "Moscow", "Egypt": "Cairo", "Greece": "Athens", "Portugal": "Lisbon",
    "Poland": "Warsaw", "Austria": "Vienna", "Ireland": "Dublin", "Norway": "Oslo", "Sweden": "Stockholm",
    "Finland": "Helsinki", "Denmark": "Copenhagen", "Hungary": "Budapest", "Kenya": "Nairobi", "Peru": "Lima",
    "Cuba": "Havana", "Canada": "Ottawa", "Turkey": "Ankara", "Thailand": "Bangkok",
}
LANGUAGES: dict[str, str] = {
    "France": "French", "Germany": "German", "Italy": "Italian", "Spain": "Spanish", "Japan": "Japanese",
    "China": "Chinese", "Russia": "Russian", "Greece": "Greek", "Portugal": "Portuguese", "Poland": "Polish",
    "Sweden": "Swedish", "Finland": "Finnish", "Hungary": "Hungarian", "Turkey": "Turkish",
    "Denmark": "Danish", "Norway": "Norwegian",
}
ANIMAL_SOUNDS: dict[str, str] = {
    "cow": "moo", "duck": "quack", "sheep": "baa", "owl": "hoot",
    "lion": "roar", "pig": "oink", "frog": "croak", "wolf": "howl",
}

# Few-shot tasks share their inputs, so that zero shots leave the task ambiguous.
ANTONYMS: dict[str, str] = {
    "hot": "cold", "big": "small", "fast": "slow", "happy": "sad", "tall": "short", "young": "old",
    "light": "dark", "early": "late", "rich": "poor", "hard": "soft", "loud": "silent", "wet": "dry",
    "full": "empty", "strong": "weak", "open": "closed", "high": "low", "thick": "thin", "clean": "dirty",
    "near": "far", "warm": "cool",
}
ANTONYMS.update({v: k for k, v in list(ANTONYMS.items())})
PLURALS: dict[str, str] = {
    "cat": "cats", "dog": "dogs", "box": "boxes", "child": "children", "mouse": "mice", "knife": "knives",
    "city": "cities", "bus": "buses", "foot": "feet", "tooth": "teeth", "baby": "babies", "key": "keys",
    "man": "men", "woman": "women", "leaf": "leaves", "glass": "glasses", "horse": "horses", "fox": "foxes",
    "story": "stories", "wolf": "wolves",
}
DAYS: tuple[str, ...] = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS: tuple[str, ...] = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)

JOBS: tuple[str, ...] = ("teacher", "baker", "doctor", "farmer", "pilot", "singer", "nurse", "painter", "driver", "writer")

# Plain words for random sequences (induction), drawn from the whole world.
FILLER_WORDS: tuple[str, ...] = (
    "apple", "river", "stone", "garden", "window", "candle", "mirror", "forest", "bridge", "pocket",
    "button", "ladder", "basket", "feather", "hammer", "island", "jacket", "kettle", "meadow", "pillow",
    "rabbit", "shadow", "tunnel", "valley", "wagon", "anchor", "bottle", "carpet", "desert", "engine",
    "flower", "guitar", "honey", "jungle", "lemon", "marble", "needle", "orange", "pepper", "rocket",
    "silver", "tiger", "violin", "wheel", "yellow", "zebra", "copper", "dragon", "planet", "sugar",
)
