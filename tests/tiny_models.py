"""Tiny randomly initialised GPT-2, GPT-NeoX (Pythia) and Llama checkpoints, saved locally.

They stand in for hub models in tests: same classes, same file format, same loading code as
``load_model("gpt2")`` on Colab, but built in a second with no network. Use the
``tiny_checkpoint`` fixture (parametrised over the three families) from ``conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

from utils.course_model.tokenizer import train_tokenizer
from utils.models import tiny_random_model
from utils.world import generate_corpus

VOCAB_SIZE = 320


def save_tiny_checkpoint(family: str, directory: Path) -> Path:
    """Save a tiny random ``family`` model and a tiny BPE tokenizer to ``directory`` (Hugging Face format)."""
    texts = [doc.text for doc in generate_corpus(300, seed=0)]
    tokenizer = train_tokenizer(texts, vocab_size=VOCAB_SIZE, context_length=128)
    tiny_random_model(family, vocab_size=VOCAB_SIZE).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
