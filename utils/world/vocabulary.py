"""The world's vocabulary: every word the generator can write, grouped by what it means.

The word sets that carry a latent variable (sentiment, emotion, topic) are disjoint, so
the labeller in :mod:`utils.world.labeller` can recover the variable from text alone.
"""

from __future__ import annotations

import random
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

# ---------------------------------------------------------------------------------------------
# The wider world of the corpus recipe "v2" (see :mod:`utils.world.corpus`): more names, verbs,
# objects, places, nouns and prepositions, so that a mechanism cannot be a lookup of a few words.
# Everything in :mod:`utils.world.heldout` is disjoint from these lists and from those above.
# ---------------------------------------------------------------------------------------------

MORE_NAMES: dict[str, Gender] = {
    **{name: "female" for name in (
        "Amy", "Beth", "Chloe", "Diana", "Ella", "Fiona", "Gina", "Helen", "Isla", "Julia", "Karen", "Lily",
        "Megan", "Nancy", "Olivia", "Paula", "Rachel", "Sophie", "Tina", "Wendy", "Zoe", "Clara", "Hannah",
        "Jenny", "Molly", "Amber", "Daisy", "Holly", "Linda", "Maria", "Sofia", "Eva", "Leah", "Ruth", "Carol",
        "Joan", "Martha", "Bella")},
    **{name: "male" for name in (
        "Adam", "Bill", "Carl", "Dan", "Eric", "Frank", "Greg", "Harry", "Ian", "Joe", "Kevin", "Luke",
        "Matt", "Nick", "Oliver", "Phil", "Steve", "Tim", "Alan", "Chris", "Fred", "George", "Jim", "Ken",
        "Leon", "Max", "Neil", "Owen", "Pete", "Scott", "Ted", "Tony", "Walter", "Andy", "Colin", "Simon",
        "Hugh", "Dean")},
}
#: Every real name an indirect-object sentence of the v2 recipe can use.
ALL_NAMES: dict[str, Gender] = {**NAMES, **MORE_NAMES}


#: The onsets of the made-up names of recipes v2 to v8: consonants only.
NAME_ONSETS: tuple[str, ...] = ("B", "D", "F", "G", "K", "L", "M", "N", "P", "R", "S", "T", "V", "Z", "Br", "Dr", "Kr",
                                "St", "Tr")
#: The onsets of recipe v9's made-up names: the vowels and every other capital a name starts with as well.
EVERY_NAME_ONSET: tuple[str, ...] = NAME_ONSETS + ("A", "E", "I", "O", "U", "C", "H", "J", "W", "Ch", "Cl", "Fl", "Gr",
                                                   "Pl", "Sh")


def invented_names(n: int = 400, exclude: frozenset[str] = frozenset(),
                   onsets: tuple[str, ...] = NAME_ONSETS) -> dict[str, Gender]:
    """``n`` made-up names of two syllables ("Tarin", "Belos"...) that start with one of ``onsets``, genders
    alternating, none in ``exclude``: names the tokenizer splits into pieces, so that copying a name cannot rely
    on the name being one familiar token. Always the same names for the same arguments."""
    vowels, codas = ("a", "e", "i", "o", "u"), ("", "n", "r", "l", "s")
    rng = random.Random(20_26)
    names: dict[str, Gender] = {}
    while len(names) < n:
        name = rng.choice(onsets) + rng.choice(vowels) + rng.choice("dlmnrstv") + rng.choice(vowels) + rng.choice(codas)
        if name not in ALL_NAMES and name not in exclude and name not in names:
            names[name] = ("female", "male")[len(names) % 2]
    return names


def invented_words(n: int = 300, exclude: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """``n`` made-up lower-case words of two syllables ("dova", "kelin"...), none in ``exclude`` and
    none a world word: the unfamiliar words that composed sentences may contain. Always the same."""
    onsets = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "bl", "gr", "pl", "sn", "tr")
    vowels, codas = ("a", "e", "i", "o", "u"), ("", "n", "p", "l", "k")
    known = {w.lower() for w in (*ALL_NAMES, *exclude)}
    rng = random.Random(20_27)
    words: list[str] = []
    while len(words) < n:
        word = rng.choice(onsets) + rng.choice(vowels) + rng.choice("dklmnprstv") + rng.choice(vowels) + rng.choice(codas)
        if word not in known and word not in words:
            words.append(word)
    return tuple(words)


def made_up_leads(n: int = 50_000, exclude: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """``n`` capitalised made-up words of one to three syllables and many shapes ("Oskrau", "Ebe",
    "Plintaucer"...), none a name, a world word or in ``exclude``: so many that a training corpus
    uses each only a few times, and a model must learn *where* a word stands, not which it is.
    Always the same words for the same arguments."""
    onsets = ("", "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
              "bl", "br", "ch", "cl", "dr", "fl", "gr", "pl", "pr", "sc", "sh", "sk", "sl", "sp", "st", "th", "tr", "wh")
    vowels = ("a", "e", "i", "o", "u", "y", "ai", "au", "ea", "ee", "ie", "oa", "ou")
    codas = ("", "", "", "n", "r", "s", "l", "m", "t", "ck", "nd", "nt", "rt", "se", "ce", "st", "ng", "x")
    known = {w.lower() for w in (*ALL_NAMES, *exclude, *invented_names())}
    rng = random.Random(20_28)
    leads: dict[str, None] = {}
    while len(leads) < n:
        lead = "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
                       for _ in range(rng.choice((1, 2, 2, 3)))).capitalize()
        if len(lead) >= 3 and lead.lower() not in known:
            leads[lead] = None
    return tuple(leads)


ObjectKind = Literal["thing", "message", "writing"]
#: Verbs of giving, telling and sending, each with the kind of object it takes ("gave the ring to").
GIVING_VERBS: dict[str, ObjectKind] = {
    "gave": "thing", "handed": "thing", "passed": "thing", "showed": "thing", "threw": "thing",
    "brought": "thing", "offered": "thing", "sent": "thing", "lent": "thing", "sold": "thing",
    "returned": "thing", "carried": "thing", "delivered": "thing", "tossed": "thing", "left": "thing",
    "mailed": "writing", "wrote": "writing", "read": "writing", "told": "message", "explained": "message",
    "repeated": "message", "taught": "message", "described": "message",
}
#: Objects that are not a topic's, by kind (the topic's objects are things too).
GIVING_OBJECTS: dict[ObjectKind, tuple[str, ...]] = {
    "thing": ("book", "gift", "drink", "key", "coin", "box", "flower", "basket", "bottle", "jacket"),
    "message": ("story", "news", "secret", "joke", "plan", "truth", "rule", "answer"),
    "writing": ("letter", "note", "card", "poem", "list", "message"),
}
MORE_PLACES: tuple[str, ...] = ("shop", "park", "garden", "office", "cafe", "river", "church", "hospital")

#: More subjects and distractors; the nouns of the plural few-shot task (``PLURALS``) stay out of
#: every agreement sentence, so that they can test agreement on nouns the model knows from elsewhere.
MORE_AGREEMENT_NOUNS: tuple[tuple[str, str], ...] = (
    ("book", "books"), ("house", "houses"), ("student", "students"), ("table", "tables"), ("tool", "tools"),
    ("pilot", "pilots"), ("baker", "bakers"), ("window", "windows"), ("teacher", "teachers"), ("driver", "drivers"),
    ("bottle", "bottles"), ("basket", "baskets"), ("bridge", "bridges"), ("candle", "candles"), ("rabbit", "rabbits"),
    ("tiger", "tigers"), ("doctor", "doctors"), ("painter", "painters"), ("singer", "singers"), ("nurse", "nurses"),
    # singulars that end in "s" and plurals without one: the number is the word's, not its last letter's
    ("dress", "dresses"), ("class", "classes"), ("boss", "bosses"), ("princess", "princesses"), ("goose", "geese"),
    ("person", "people"), ("shelf", "shelves"), ("calf", "calves"), ("wife", "wives"), ("ox", "oxen"),
)
#: Singular nouns that end in "s" that no recipe before v10 uses: v9 read the held-out "bus" (0.00) and "glass"
#: (0.40) as plurals, having seen four such singulars among 46 agreement nouns.
NEW_S_SINGULAR_AGREEMENT_NOUNS: tuple[tuple[str, str], ...] = (
    ("address", "addresses"), ("actress", "actresses"), ("witness", "witnesses"), ("mattress", "mattresses"),
    ("waitress", "waitresses"), ("circus", "circuses"), ("campus", "campuses"), ("canvas", "canvases"),
    ("atlas", "atlases"), ("lens", "lenses"), ("hostess", "hostesses"), ("fortress", "fortresses"),
    ("genius", "geniuses"), ("bonus", "bonuses"), ("chorus", "choruses"),
)
#: Every agreement singular that ends in "s" (recipe v10's finish): v2's four, then the new ones.
S_SINGULAR_AGREEMENT_NOUNS: tuple[tuple[str, str], ...] = tuple(
    pair for pair in AGREEMENT_NOUNS + MORE_AGREEMENT_NOUNS if pair[0].endswith("s")) + NEW_S_SINGULAR_AGREEMENT_NOUNS
#: Plurals in "-ves" besides v2's (held out: wolf, knife, leaf).
VES_AGREEMENT_NOUNS: tuple[tuple[str, str], ...] = (
    ("loaf", "loaves"), ("thief", "thieves"), ("elf", "elves"), ("hoof", "hooves"))
MORE_AGREEMENT_PREPOSITIONS: tuple[str, ...] = ("on", "in", "over", "across from", "next to", "near to", "opposite")


def world_words() -> tuple[str, ...]:
    """Every word of the world's word lists (names, places, objects, adjectives, nouns...), sorted:
    the pool that the v2 recipe's repeated sequences draw from."""
    words: set[str] = {*ALL_NAMES, *CAPITALS, *CAPITALS.values(), *LANGUAGES.values(), *ANIMAL_SOUNDS,
                       *ANIMAL_SOUNDS.values(), *ANTONYMS, *PLURALS, *PLURALS.values(), *DAYS, *MONTHS, *JOBS,
                       *FILLER_WORDS, *AGREEMENT_ADJECTIVES, *GIVING_VERBS, *MORE_PLACES}
    for topic in TOPIC_WORDS.values():
        words |= topic.all_words
    for groups in (SENTIMENT_WORDS, EMOTION_ADJECTIVES, EMOTION_VERBS, GIVING_OBJECTS):
        words |= {w for group in groups.values() for w in group}
    for pairs in (AGREEMENT_NOUNS, MORE_AGREEMENT_NOUNS):
        words |= {w for pair in pairs for w in pair}
    return tuple(sorted(w for w in words if " " not in w))
