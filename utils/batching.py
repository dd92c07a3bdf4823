"""Many interventions per forward pass, in chunks sized to a memory budget.

A sweep (patching every head, steering at every layer with every strength) runs one *variant* of
an intervention per setting. Instead of one forward pass per variant, the prompts are repeated once
per variant along the batch dimension, variant by variant (``[variant * n, pos]``), and each copy is
edited its own way; the chunk of variants that runs together is sized so that its activations fit
:data:`MEMORY_BUDGET` bytes. ``chunks(n_variants, per_pass)`` yields the index ranges.
"""

from __future__ import annotations

from collections.abc import Iterator

from transformers import PreTrainedModel

from utils import architecture

#: Bytes of activations one batched forward pass may use; a sweep that needs more runs in chunks.
MEMORY_BUDGET = 2**30


def activation_bytes_per_prompt(model: PreTrainedModel, n_pos: int, logit_positions: int = 1) -> int:
    """An upper estimate of the memory (bytes) one prompt of ``n_pos`` tokens needs in a forward pass
    without gradients, in float32: the residual stream and its copies, the MLP's hidden layer, the
    attention scores, the key-value cache, and the logits at ``logit_positions`` positions."""
    config = architecture.unwrap(model).config
    width, n_heads, n_layers = config.hidden_size, config.num_attention_heads, config.num_hidden_layers
    d_mlp = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * width
    floats = n_pos * (8 * width + 2 * d_mlp + 2 * n_heads * n_pos + 2 * n_layers * width) \
        + 2 * logit_positions * config.vocab_size
    return 4 * floats


def variants_per_pass(model: PreTrainedModel, n_prompts: int, n_pos: int, memory_budget: int = MEMORY_BUDGET,
                      logit_positions: int = 1) -> int:
    """How many variants of ``n_prompts`` prompts fit one forward pass in ``memory_budget`` bytes (at least 1)."""
    if memory_budget <= 0:
        raise ValueError(f"memory_budget must be a positive number of bytes, got {memory_budget}")
    per_variant = n_prompts * activation_bytes_per_prompt(model, n_pos, logit_positions)
    return max(1, memory_budget // per_variant)


def chunks(n_variants: int, per_pass: int) -> Iterator[range]:
    """``range(0, per_pass), range(per_pass, 2 * per_pass), ...`` covering ``n_variants``."""
    for start in range(0, n_variants, per_pass):
        yield range(start, min(start + per_pass, n_variants))
