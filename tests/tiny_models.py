"""Tiny randomly initialised GPT-2, GPT-NeoX (Pythia) and Llama checkpoints, saved locally.

They stand in for hub models in tests: same classes, same file format, same loading code as
``load_model("gpt2")`` on Colab, but built in a second with no network. Use the
``tiny_checkpoint`` fixture (parametrised over the three families) from ``conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM,
    PretrainedConfig, PreTrainedModel,
)

from utils.course_model.tokenizer import train_tokenizer
from utils.world import generate_corpus

VOCAB_SIZE = 320
FAMILIES = ("gpt2", "gpt_neox", "llama")


def tiny_config(family: str, vocab_size: int = VOCAB_SIZE) -> PretrainedConfig:
    """A 2-layer, d_model 64, 4-head config of ``family`` (Llama with 2 key-value heads: grouped queries)."""
    shared = dict(vocab_size=vocab_size, bos_token_id=0, eos_token_id=0)
    if family == "gpt2":
        return GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=128, **shared)
    if family == "gpt_neox":
        return GPTNeoXConfig(num_hidden_layers=2, num_attention_heads=4, hidden_size=64, intermediate_size=256,
                             max_position_embeddings=128, rotary_pct=0.25, **shared)
    if family == "llama":
        return LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=64,
                           intermediate_size=128, max_position_embeddings=128, **shared)
    raise ValueError(f"unknown family {family!r}: use one of {FAMILIES}")


def tiny_model(family: str, seed: int = 0) -> PreTrainedModel:
    """A randomly initialised tiny causal LM of ``family`` (fixed seed)."""
    torch.manual_seed(seed)
    config = tiny_config(family)
    model_class = {"gpt2": GPT2LMHeadModel, "gpt_neox": GPTNeoXForCausalLM, "llama": LlamaForCausalLM}[family]
    return model_class(config).eval()


def save_tiny_checkpoint(family: str, directory: Path) -> Path:
    """Save a tiny ``family`` model and a tiny BPE tokenizer to ``directory`` (Hugging Face format)."""
    texts = [doc.text for doc in generate_corpus(300, seed=0)]
    tokenizer = train_tokenizer(texts, vocab_size=VOCAB_SIZE, context_length=128)
    tiny_model(family).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
