"""The course's generated world: documents with known latent variables.

Every document the course model was trained on comes from here, with its labels: the
sentiment, topic and emotion of a story, the names in an indirect-object sentence, the number
of a subject, the task of a few-shot list... so that every interpretability result can be
checked against the truth.

>>> import random
>>> doc = story(random.Random(0), sentiment="negative", topic="storm")
>>> label_text(doc.text).sentiment, label_text(doc.text).topic
('negative', 'storm')
"""

from utils.world.corpus import DEFAULT_MIX, eval_set, generate_corpus
from utils.world.documents import Document, Span
from utils.world.families import (
    FAMILIES, FEW_SHOT_TASKS, IOI_TEMPLATES, RECORD_SCHEMA, agreement, all_facts, arithmetic, fact,
    few_shot, indirect_object, multiple_choice, record, sequence, story, worked_steps,
)
from utils.world.labeller import TextLabels, label_text
from utils.world.instructions import ChatExample, ResponseScore, chat_dataset, chat_eval_set, score_response, summarize_scores  # noqa: F401, E501  (chapter 2)

__all__ = [
    "DEFAULT_MIX", "Document", "FAMILIES", "FEW_SHOT_TASKS", "IOI_TEMPLATES", "RECORD_SCHEMA", "Span",
    "TextLabels", "agreement", "all_facts", "arithmetic", "eval_set", "fact", "few_shot",
    "generate_corpus", "indirect_object", "label_text", "multiple_choice", "record", "sequence",
    "story", "worked_steps",
]
