"""Mix the document families into a training corpus, and draw held-out evaluation sets.

Training documents come from ``random.Random(seed)`` and a *recipe*: the families' shares and
the options each family's documents are drawn with. Recipe "v1" made the shipped course model
(the default); recipe "v2", its successor, draws every family from a wider world
(indirect-object sentences composed from openers of many shapes, middles and verbs of giving
and telling, between real and invented names, with made-up words for places, objects, verbs and
activities; A/B questions in many phrasings, with option sentences of many frames that sometimes
hold made-up words, or between two words; repeats of any word at any distance; more nouns
(some whose number is not their last letter), prepositions and fact phrasings; stories that tell
the number of nouns the agreement sentences never use) and adds repeats of uniformly random token
ids (which the training script writes, since they are tokens, not text). Evaluation sets use their own
seeds (``EVAL_SEED_OFFSET`` apart), so they are fresh draws from the same world; material that
no recipe ever writes is in :mod:`utils.world.heldout`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from utils.world.documents import Document
from utils.world.families import (
    BRIDGE_CHOICE_PARTS, FAMILIES, IOI_CLAUSE_OPENERS, STORY_IOI_VERBS, TRAINING_CHOICE_PARTS, TRAINING_FACT_PHRASINGS,
    TRAINING_IOI_PARTS, WORD_CHOICE_PARTS, IOIParts, compose,
)
from utils.world.heldout import HELDOUT_IOI_PARTS, heldout_words
from utils.world.vocabulary import (
    AGREEMENT_NOUNS, AGREEMENT_PREPOSITIONS, GIVING_VERBS, MORE_AGREEMENT_NOUNS, MORE_AGREEMENT_PREPOSITIONS,
    EVERY_NAME_ONSET, NEW_S_SINGULAR_AGREEMENT_NOUNS, PLURALS, S_SINGULAR_AGREEMENT_NOUNS, VES_AGREEMENT_NOUNS,
    invented_names, invented_words, made_up_leads, world_words,
)

#: Share of documents from each family in the recipe "v1" (the first course model's corpus).
V1_MIX: dict[str, float] = {
    "story": 0.13, "ioi": 0.20, "agreement": 0.08, "facts": 0.08, "few_shot": 0.15,
    "sequence": 0.20, "arithmetic": 0.10, "record": 0.03, "multiple_choice": 0.03,
}
#: The shares of the recipe "v2": more A/B questions and indirect-object sentences, fewer stories.
V2_MIX: dict[str, float] = {
    "story": 0.12, "ioi": 0.16, "agreement": 0.08, "facts": 0.08, "few_shot": 0.12,
    "sequence": 0.14, "arithmetic": 0.07, "record": 0.03, "multiple_choice": 0.20,
}
#: The shares of the last part of recipe "v3": A/B questions and indirect-object sentences first.
V3_FINISH_MIX: dict[str, float] = {
    "story": 0.06, "ioi": 0.25, "agreement": 0.04, "facts": 0.04, "few_shot": 0.05,
    "sequence": 0.07, "arithmetic": 0.03, "record": 0.01, "multiple_choice": 0.45,
}
#: The shares of the last part of recipe "v4": indirect objects first, arithmetic and stories kept at
#: their v2 shares (v3's finish, with a third of that arithmetic, lost direct sums: 0.92 -> 0.04).
V4_FINISH_MIX: dict[str, float] = {
    "story": 0.10, "ioi": 0.30, "agreement": 0.08, "facts": 0.03, "few_shot": 0.06,
    "sequence": 0.06, "arithmetic": 0.07, "record": 0.02, "multiple_choice": 0.28,
}
#: The shares of the last part of recipe "v5": v3's finish, with the agreement of v4's (held-out
#: nouns 0.895 -> 0.925) taken from stories and sequences.
V5_FINISH_MIX: dict[str, float] = {
    "story": 0.06, "ioi": 0.26, "agreement": 0.07, "facts": 0.03, "few_shot": 0.05,
    "sequence": 0.06, "arithmetic": 0.04, "record": 0.01, "multiple_choice": 0.42,
}
#: The recipe of the shipped course model, and its shares of documents (those of its first 70 % of windows: the
#: finish's are ``RECIPES["v11-finish"].mix``).
DEFAULT_RECIPE = "v11"
DEFAULT_MIX: dict[str, float] = V2_MIX
EVAL_SEED_OFFSET = 1_000_003

#: Options drawn for one document of a family: ``options(rng) -> kwargs``.
FamilyOptions = Callable[[random.Random], dict[str, object]]


@dataclass(frozen=True)
class Recipe:
    """How a training corpus is drawn.

    ``mix`` gives each family's share of documents, ``options`` the keyword arguments each
    document of a family is drawn with (the family's defaults for a family not listed), and
    ``token_repeats`` the share of extra documents that repeat uniformly random token ids. With
    ``finish`` (the name of another recipe), the last ``finish_share`` of the training windows are
    drawn from that recipe instead: a curriculum that ends on the hardest forms of the tasks.
    """

    mix: dict[str, float]
    options: dict[str, FamilyOptions]
    token_repeats: float = 0.0
    finish: str | None = None
    finish_share: float = 0.0


_V2_WORDS = world_words()
_V2_NUMBER_NOUNS = (*PLURALS.items(), *AGREEMENT_NOUNS, *MORE_AGREEMENT_NOUNS)
_V2_STORY_VERBS = tuple(verb for verb, kind in GIVING_VERBS.items() if kind == "thing")
#: The composed indirect-object sentences of recipe "v2": their place, object and verb are
#: sometimes made-up words (never a world word or a held-out one).
V2_IOI_PARTS = replace(TRAINING_IOI_PARTS, made_up_words=invented_words(exclude=heldout_words() | set(_V2_WORDS)))
#: The same, between made-up names, which the tokenizer splits into pieces.
INVENTED_NAME_IOI_PARTS = replace(V2_IOI_PARTS, names=invented_names(exclude=heldout_words()))
#: The A/B questions between two sentences of recipe "v2", with the same made-up words.
V2_CHOICE_PARTS = replace(TRAINING_CHOICE_PARTS, made_up_words=V2_IOI_PARTS.made_up_words)


def _v2_ioi_options(rng: random.Random) -> dict[str, object]:
    """A sixth of the v2 indirect-object sentences keep the eight templates; the others are
    composed from parts, half of them between made-up names."""
    draw = rng.random()
    return {} if draw < 1 / 6 else {"parts": INVENTED_NAME_IOI_PARTS if draw < 7 / 12 else V2_IOI_PARTS}


#: Openers of the finishing indirect-object sentences of recipe "v3": the v2 ones and clauses of
#: sixteen more subordinators, so that no one word before "{A} and {B}" is what the reading hangs on.
V3_FINISH_IOI_OPENERS: tuple[str, ...] = TRAINING_IOI_PARTS.openers + compose(
    ("Whereas ", "Unless ", "Though ", "Wherever ", "Ever since ", "Long after ", "Not long after ", "The minute ",
     "The second ", "Each time ", "Given that ", "So that ", "Considering that ", "Now, while ", "Even as ",
     "Ever after "),
    IOI_CLAUSE_OPENERS)
V3_FINISH_IOI_PARTS = replace(V2_IOI_PARTS, openers=V3_FINISH_IOI_OPENERS, made_up_encounters=True)
V3_FINISH_INVENTED_NAME_IOI_PARTS = replace(V3_FINISH_IOI_PARTS, names=INVENTED_NAME_IOI_PARTS.names)
#: The A/B options of a few words, with the made-up words of recipe "v2".
V3_BRIDGE_CHOICE_PARTS = replace(BRIDGE_CHOICE_PARTS, made_up_words=V2_IOI_PARTS.made_up_words)


def _v3_finish_ioi_options(rng: random.Random) -> dict[str, object]:
    """As :func:`_v2_ioi_options`, from the finishing parts (more openers, made-up encounters)."""
    draw = rng.random()
    return {} if draw < 1 / 6 else {
        "parts": V3_FINISH_INVENTED_NAME_IOI_PARTS if draw < 7 / 12 else V3_FINISH_IOI_PARTS}


def _v3_finish_choice_options(rng: random.Random) -> dict[str, object]:
    """A fifth of the finishing A/B questions between two words, three tenths between options of a
    few words, half between two sentences."""
    draw = rng.random()
    return {"parts": WORD_CHOICE_PARTS if draw < 0.2 else V3_BRIDGE_CHOICE_PARTS if draw < 0.5 else V2_CHOICE_PARTS}


#: Capitalised made-up words that open v4's finishing clauses before the names ("Dova {A} and {B}
#: went to the park,"), none of them an invented name: v3 read a held-out multi-token word there
#: ("Because", "Aecause") as the start of a pieced name and chose the subject (ABB order: 0.17).
V4_LEADS: tuple[str, ...] = tuple(
    lead for lead in (w.capitalize() for w in V2_IOI_PARTS.made_up_words) if lead not in INVENTED_NAME_IOI_PARTS.names)
V4_LEAD_IOI_OPENERS: tuple[str, ...] = compose(
    ("{lead} ",),
    IOI_CLAUSE_OPENERS + compose(("{A} {encounter} {B} ",), ("at", "in", "by", "near", "next to"), (" the {place},",)))
V4_LEAD_IOI_PARTS = replace(V3_FINISH_IOI_PARTS, openers=V4_LEAD_IOI_OPENERS, leads=V4_LEADS)
V4_LEAD_INVENTED_NAME_IOI_PARTS = replace(V4_LEAD_IOI_PARTS, names=INVENTED_NAME_IOI_PARTS.names)


def _lead_ioi_options(lead_parts: IOIParts, lead_invented_name_parts: IOIParts, invented_share: float = 0.5,
                      invented_name_parts: IOIParts = V3_FINISH_INVENTED_NAME_IOI_PARTS) -> FamilyOptions:
    """As :func:`_v3_finish_ioi_options`, with a quarter of all the sentences drawn from ``lead_parts`` (between
    real names) or ``lead_invented_name_parts``: sentences that open on a made-up word before the names. A share
    ``invented_share`` of the composed sentences are between made-up names (``invented_name_parts`` for those
    without a lead)."""
    def options(rng: random.Random) -> dict[str, object]:
        draw, invented_names = rng.random(), rng.random() < invented_share
        if draw < 1 / 6:
            return {}
        if draw < 1 / 6 + 1 / 4:
            return {"parts": lead_invented_name_parts if invented_names else lead_parts}
        return {"parts": invented_name_parts if invented_names else V3_FINISH_IOI_PARTS}
    return options


_v4_finish_ioi_options = _lead_ioi_options(V4_LEAD_IOI_PARTS, V4_LEAD_INVENTED_NAME_IOI_PARTS)


def _v4_agreement_options(rng: random.Random) -> dict[str, object]:
    """The v2 agreement sentences, the last one plural across a singular distractor a third of the
    time: v3 missed plural subjects of held-out nouns (0.87) more than singular ones (0.92)."""
    options = _V2_OPTIONS["agreement"](rng)
    return {**options, "number": "plural", "distractor_number": "singular"} if rng.random() < 1 / 3 else options


#: The words of the held-out openers ("Because", "Before"...): no lead of recipe v5 is one of them.
_HELDOUT_OPENER_WORDS = frozenset(word.strip(",.") for opener in HELDOUT_IOI_PARTS.openers for word in opener.split()
                                  if not word.startswith("{"))
#: 50,000 capitalised made-up words of many shapes that open a quarter of v5's finishing clauses
#: before the names: v4's 297 leads were learnt one by one (ABB order after a training lead 0.84,
#: after an unseen word 0.00-0.17), so v5 draws so many that each is seen a few times at most.
V5_LEADS: tuple[str, ...] = made_up_leads(exclude=heldout_words() | _HELDOUT_OPENER_WORDS | set(_V2_WORDS))
V5_LEAD_IOI_PARTS = replace(V4_LEAD_IOI_PARTS, leads=V5_LEADS)
V5_LEAD_INVENTED_NAME_IOI_PARTS = replace(V5_LEAD_IOI_PARTS, names=INVENTED_NAME_IOI_PARTS.names)

_v5_finish_ioi_options = _lead_ioi_options(V5_LEAD_IOI_PARTS, V5_LEAD_INVENTED_NAME_IOI_PARTS)

#: Openers that put the first name first in the document ("{A} and {B} went to the park." or
#: "{A} met {B} at the park,"): after v5's leads, a sentence that opens on a name read that name as a
#: lead, and the ABB order of held-out frames that start with a name fell to 0.42 (v3: 0.86).
V6_NAME_FIRST_OPENERS: tuple[str, ...] = compose(
    ("{A} and {B} {activity} the {place}", "{A} and {B} {activity} the {place} together")
    + compose(("{A} {encounter} {B} ",), ("at", "in", "by", "near", "behind", "next to", "across from"), (" the {place}",)),
    (",", "."))
V6_NAME_FIRST_IOI_PARTS = replace(V3_FINISH_IOI_PARTS, openers=V6_NAME_FIRST_OPENERS)
V6_NAME_FIRST_INVENTED_NAME_IOI_PARTS = replace(V6_NAME_FIRST_IOI_PARTS, names=INVENTED_NAME_IOI_PARTS.names)


def _name_first_ioi_options(other_options: FamilyOptions, invented_share: float = 0.5, name_first_share: float = 1 / 6,
                            invented_name_parts: IOIParts = V6_NAME_FIRST_INVENTED_NAME_IOI_PARTS) -> FamilyOptions:
    """A share ``name_first_share`` of the sentences open on the first name (:data:`V6_NAME_FIRST_OPENERS`), a share
    ``invented_share`` of them between made-up names (``invented_name_parts``); the others are drawn by
    ``other_options``."""
    def options(rng: random.Random) -> dict[str, object]:
        if rng.random() < name_first_share:
            invented_names = rng.random() < invented_share
            return {"parts": invented_name_parts if invented_names else V6_NAME_FIRST_IOI_PARTS}
        return other_options(rng)
    return options


_v6_finish_ioi_options = _name_first_ioi_options(_v5_finish_ioi_options)
#: v6's finishing indirect objects with two thirds of the composed ones between made-up names instead of half:
#: the held-out names, which the tokenizer splits into pieces as it does made-up ones, stayed at 0.825-0.875.
_v7_finish_ioi_options = _name_first_ioi_options(
    _lead_ioi_options(V5_LEAD_IOI_PARTS, V5_LEAD_INVENTED_NAME_IOI_PARTS, invented_share=2 / 3), invented_share=2 / 3)
#: The shares of the last part of recipe "v7": v5's, with more agreement (held-out nouns 0.94 in v5, 0.835 in v6
#: from the same share) taken from the A/B questions (held-out phrasings 1.00 in both).
V7_FINISH_MIX: dict[str, float] = {**V5_FINISH_MIX, "agreement": 0.10, "multiple_choice": 0.39}
#: v7's finishing indirect objects with a quarter opening on the first name instead of a sixth (v7's name-first
#: held-out frames: 1.00 in one order, 0.59 in the other) and three quarters between made-up names (v7's held-out
#: names 0.88, v6's 0.825 at a half).
_v8_finish_ioi_options = _name_first_ioi_options(
    _lead_ioi_options(V5_LEAD_IOI_PARTS, V5_LEAD_INVENTED_NAME_IOI_PARTS, invented_share=3 / 4), invented_share=3 / 4,
    name_first_share=1 / 4)
#: v7's finish with more agreement again (held-out nouns 0.835 at 0.07 in v6, 0.86 at 0.10 in v7), from the A/B
#: questions.
V8_FINISH_MIX: dict[str, float] = {**V5_FINISH_MIX, "agreement": 0.13, "multiple_choice": 0.36}

#: Made-up names over every onset, the vowels, H, J and C included. v8 preferred the indirect object between
#: held-out names whose first piece starts some made-up name (Boris, Doris, Vera, Nina: 1.00) and failed on those
#: whose first piece starts none (" O": Otto 0.27, Oscar 0.41; " I": Ivy 0.59; " H": Hugo 0.67; " E": Ezra 0.69).
V9_INVENTED_NAMES = invented_names(600, exclude=heldout_words() | set(INVENTED_NAME_IOI_PARTS.names) | set(V5_LEADS),
                                   onsets=EVERY_NAME_ONSET)


def _every_onset_ioi_options(name_first_share: float) -> FamilyOptions:
    """v8's finishing indirect objects between :data:`V9_INVENTED_NAMES` (three quarters), a share
    ``name_first_share`` of them opening on the first name."""
    return _name_first_ioi_options(
        _lead_ioi_options(V5_LEAD_IOI_PARTS, replace(V5_LEAD_IOI_PARTS, names=V9_INVENTED_NAMES), invented_share=3 / 4,
                          invented_name_parts=replace(V3_FINISH_IOI_PARTS, names=V9_INVENTED_NAMES)),
        invented_share=3 / 4, name_first_share=name_first_share,
        invented_name_parts=replace(V6_NAME_FIRST_IOI_PARTS, names=V9_INVENTED_NAMES))


_v9_finish_ioi_options = _every_onset_ioi_options(name_first_share=1 / 4)


#: v9's finishing indirect objects with a third opening on the first name instead of a quarter: v10's held-out frames
#: that open on a name were right 1.00 in the ABA order and 0.62 in the ABB order (the others 0.99 and 0.89), and the
#: same name-first frames with v10's training middles, verbs and places instead of held-out ones 0.93.
_v11_finish_ioi_options = _every_onset_ioi_options(name_first_share=1 / 3)
#: v8's finish with more indirect objects, taken from the A/B questions (held-out phrasings 1.00 for every trait in v10).
V11_FINISH_MIX: dict[str, float] = {**V8_FINISH_MIX, "ioi": 0.32, "multiple_choice": 0.30}


#: The options of recipe "v2", family by family.
_V2_OPTIONS: dict[str, FamilyOptions] = {
    "facts": lambda rng: {"n_facts": rng.randint(1, 5), "phrasings": TRAINING_FACT_PHRASINGS},
    "agreement": lambda rng: {"n_sentences": rng.randint(1, 4), "nouns": AGREEMENT_NOUNS + MORE_AGREEMENT_NOUNS,
                              "prepositions": AGREEMENT_PREPOSITIONS + MORE_AGREEMENT_PREPOSITIONS},
    "ioi": _v2_ioi_options,
    "story": lambda rng: {"ioi_verbs": _V2_STORY_VERBS if rng.random() < 0.75 else STORY_IOI_VERBS,
                          "number_nouns": _V2_NUMBER_NOUNS},
    "sequence": lambda rng: {"pool": _V2_WORDS, "gap": True},
    # a third of the A/B questions choose between two words: in the project's trials the letter
    # circuit formed on those first, and then served the questions between two sentences
    "multiple_choice": lambda rng: {"parts": WORD_CHOICE_PARTS if rng.random() < 1 / 3 else V2_CHOICE_PARTS},
}


def _v2_then(finish: str, finish_share: float) -> Recipe:
    """v2's documents (and random token ids), then the recipe ``finish`` for the last ``finish_share`` of the windows:
    every such recipe with the same ``finish_share`` has the same first phase (``train --start-from``)."""
    return Recipe(V2_MIX, _V2_OPTIONS, token_repeats=0.06, finish=finish, finish_share=finish_share)


def _lead_finish(mix: dict[str, float], ioi_options: FamilyOptions,
                 agreement_options: FamilyOptions = _v4_agreement_options) -> Recipe:
    """A finish of v4 and later: v2's options with these indirect objects and agreement (v4's plural agreement by
    default), and v3's A/B questions."""
    return Recipe(mix, {**_V2_OPTIONS, "ioi": ioi_options, "agreement": agreement_options,
                        "multiple_choice": _v3_finish_choice_options}, token_repeats=0.06)


def _v10_agreement_options(rng: random.Random) -> dict[str, object]:
    """v4's agreement sentences over more nouns (:data:`S_SINGULAR_AGREEMENT_NOUNS`, :data:`VES_AGREEMENT_NOUNS`);
    a quarter of the time the last sentence's subject is a singular that ends in "s", across a plural distractor."""
    options = _v4_agreement_options(rng)
    if rng.random() < 1 / 4:
        return {**options, "nouns": S_SINGULAR_AGREEMENT_NOUNS, "number": "singular", "distractor_number": "plural"}
    return {**options, "nouns": options["nouns"] + NEW_S_SINGULAR_AGREEMENT_NOUNS + VES_AGREEMENT_NOUNS}


RECIPES: dict[str, Recipe] = {
    "v1": Recipe(V1_MIX, {
        "facts": lambda rng: {"n_facts": rng.randint(1, 5)},
        "agreement": lambda rng: {"n_sentences": rng.randint(1, 4)},
    }),
    "v2": Recipe(V2_MIX, _V2_OPTIONS, token_repeats=0.06),
    # v2 for the first 70 % of the windows, then v3-finish: in the project's trials, v2 alone
    # answered held-out A/B questions at chance and 77 % of held-out IOI frames; 2,500 steps of
    # this finishing mix on its checkpoint took them to 92-100 % and 89 %
    "v3": _v2_then("v3-finish", 0.3),
    "v3-finish": Recipe(V3_FINISH_MIX, {**_V2_OPTIONS, "ioi": _v3_finish_ioi_options,
                                        "multiple_choice": _v3_finish_choice_options}, token_repeats=0.06),
    # v3 with a longer finish of more indirect objects, some opening on made-up words, more plural
    # subjects and v2's arithmetic, in 7,500 steps (v3's 10,750 took 107 minutes on 2 cores). In the
    # project's trial (runs/v4) A/B answering never formed (held out 0.50) and held-out IOI fell to
    # 0.63; only agreement on held-out nouns gained (0.925): too few steps before a finish with fewer A/B questions
    "v4": _v2_then("v4-finish", 0.35),
    "v4-finish": _lead_finish(V4_FINISH_MIX, _v4_finish_ioi_options),
    # v3's finish with 50,000 leads instead of v4's 297 and v4's agreement, trained on whole
    # documents (train --packing whole). In the project's trial (runs/v5, 16 x 256 windows) held-out
    # A/B questions reached 0.98-1.00 and agreement 0.94, but held-out IOI frames only 0.90 and names
    # 0.845: the frames that open on a name, in the ABB order, fell to 0.42
    "v5": _v2_then("v5-finish", 0.3),
    "v5-finish": _lead_finish(V5_FINISH_MIX, _v5_finish_ioi_options),
    # v5 with a sixth of the finishing indirect objects opening on the first name, in the same
    # 10,750 steps of whole documents (train --packing whole). In the project's trial (runs/v6) the
    # held-out frames passed (0.925; the name-first ones in the ABB order 0.42 -> 0.66), but held-out
    # names fell to 0.825 and agreement on held-out nouns to 0.835 (v5: 0.94, with the same agreement
    # documents: the two runs differ only in their draws, so that number moves by 0.1 from run to run)
    "v6": _v2_then("v6-finish", 0.3),
    "v6-finish": _lead_finish(V5_FINISH_MIX, _v6_finish_ioi_options),
    # v6 with more agreement and more made-up names in the finish.
    "v7": _v2_then("v7-finish", 0.3),
    "v7-finish": _lead_finish(V7_FINISH_MIX, _v7_finish_ioi_options),
    # In the project's trial (runs/v7, the same 10,750 steps of whole documents) held-out frames passed (0.93),
    # names rose to 0.88 and agreement on held-out nouns to 0.86, both still under 0.9; the name-first frames were
    # right in one order (1.00) and not the other (0.59, v6 the reverse). v8 pushes the same three levers further
    "v8": _v2_then("v8-finish", 0.3),
    "v8-finish": _lead_finish(V8_FINISH_MIX, _v8_finish_ioi_options),
    # In the project's trial (runs/v8) held-out frames (0.91) and agreement on held-out nouns (0.92) passed, and
    # held-out names stayed at 0.875: v9 is v8 with made-up names that start like any name (V9_INVENTED_NAMES)
    "v9": _v2_then("v9-finish", 0.3),
    "v9-finish": _lead_finish(V8_FINISH_MIX, _v9_finish_ioi_options),
    # In the project's trial (runs/v9) held-out names rose to 0.99 and frames passed (0.925), but agreement on held-out
    # nouns fell to 0.865 (v8: 0.92 from the same documents): the singulars that end in "s" were read as plurals
    # (bus 0.00, glass 0.40). v10 is v9 with agreement sentences about many more of them
    "v10": _v2_then("v10-finish", 0.3),
    "v10-finish": _lead_finish(V8_FINISH_MIX, _v9_finish_ioi_options, _v10_agreement_options),
    # In the project's trial (runs/v10) every row passed but held-out frames (0.900, a hair under): the name-first ones in
    # the ABB order were right 0.62. v11 is v10 with more indirect objects, a third of them name-first. In the project's
    # trial (runs/v11) every row passed: held-out frames 0.905 (name-first ABB 0.58-0.80), agreement on held-out nouns
    # 0.905, A/B held-out sentiment 0.915. It is the shipped recipe (utils/assets/course_model/model_card.md)
    "v11": _v2_then("v11-finish", 0.3),
    "v11-finish": _lead_finish(V11_FINISH_MIX, _v11_finish_ioi_options, _v10_agreement_options),
}


def recipe(name: str) -> Recipe:
    """The recipe called ``name``, or an error that lists the recipes."""
    if name not in RECIPES:
        raise ValueError(f"unknown corpus recipe {name!r}; choose one of {sorted(RECIPES)}")
    return RECIPES[name]


def generate_corpus(n_documents: int, seed: int = 0, mix: dict[str, float] | None = None,
                    recipe_name: str = DEFAULT_RECIPE) -> Iterator[Document]:
    """Yield ``n_documents`` training documents of a recipe, families drawn in the proportions
    of ``mix`` (the recipe's own mix by default).

    The same ``(n_documents, seed, mix, recipe_name)`` always gives the same documents.
    """
    drawn = recipe(recipe_name)
    mix = mix or drawn.mix
    unknown = set(mix) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown families {sorted(unknown)} in mix; known: {sorted(FAMILIES)}")
    rng = random.Random(seed)
    families, weights = list(mix), list(mix.values())
    no_options: FamilyOptions = lambda rng: {}  # noqa: E731
    for _ in range(n_documents):
        family = rng.choices(families, weights)[0]
        yield FAMILIES[family](rng, **drawn.options.get(family, no_options)(rng))


def eval_set(family: str, n: int, seed: int = 0, **kwargs: object) -> list[Document]:
    """``n`` held-out documents of one family, with fixed latent variables passed as ``kwargs``.

    >>> [d.labels["task"] for d in eval_set("few_shot", 2, task="antonym", n_shots=3)]
    ['antonym', 'antonym']
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {sorted(FAMILIES)}")
    rng = random.Random(EVAL_SEED_OFFSET + seed)
    return [FAMILIES[family](rng, **kwargs) for _ in range(n)]
