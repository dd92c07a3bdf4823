"""GPT-2's forward pass written out by hand on a ``GPT2LMHeadModel``'s own weights (chapter 0).

Each function is the reference solution of one exercise of lab 0, and together they compute the
model's logits to float precision (``tests/test_gpt2_from_scratch.py`` checks it on the course model
and on a tiny random GPT-2)::

    x = embed(model, input_ids)                                  # [batch, pos, d_model]
    for block in model.transformer.h:
        x = transformer_block(block, x)                          # attention, then MLP, each added to x
    logits = layer_norm(x, model.transformer.ln_f) @ model.lm_head.weight.T

GPT-2's linear layers are ``transformers``' ``Conv1D``: ``y = x @ weight + bias`` with ``weight``
``[d_in, d_out]`` (the transpose of ``nn.Linear``'s). ``c_attn`` computes queries, keys and values
side by side (``[d_model, 3 * d_model]``), each ``n_heads`` heads of ``d_head`` side by side.
"""

from __future__ import annotations

import math

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformers import GPT2Config, PreTrainedModel
from transformers.pytorch_utils import Conv1D

from utils import architecture


def check_gpt2(model: PreTrainedModel) -> None:
    """Raise ``ValueError`` unless ``model`` is a GPT-2 (these functions use its modules by name)."""
    if architecture.model_type(model) != "gpt2":
        raise ValueError(f"the from-scratch forward pass is written for GPT-2's modules, and this is a "
                         f"{architecture.model_type(model)} model: run it on the course model or a GPT-2 "
                         "(Pythia and Llama differ: rotary positions, parallel blocks, RMSNorm)")


def conv1d(x: Float[Tensor, "... d_in"], layer: Conv1D) -> Float[Tensor, "... d_out"]:
    """GPT-2's linear layer: ``x @ weight + bias``, ``weight`` ``[d_in, d_out]``."""
    return x @ layer.weight + layer.bias


def layer_norm(x: Float[Tensor, "... d_model"], norm: nn.LayerNorm) -> Float[Tensor, "... d_model"]:
    """Reference for Exercise 0.4: ``norm(x)`` by hand: centre and scale each vector over ``d_model``
    (the biased variance, plus ``norm.eps`` inside the square root), then ``weight`` and ``bias``."""
    centred = x - x.mean(dim=-1, keepdim=True)
    variance = centred.pow(2).mean(dim=-1, keepdim=True)
    return centred / torch.sqrt(variance + norm.eps) * norm.weight + norm.bias


def embed(model: PreTrainedModel, input_ids: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
    """Reference for Exercise 0.5: the residual stream entering block 0, the token embedding of each
    id plus the position embedding of its position (0, 1, 2, ...)."""
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    return model.transformer.wte.weight[input_ids] + model.transformer.wpe.weight[positions]


def attention_scores(q: Float[Tensor, "batch head query d_head"], k: Float[Tensor, "batch head key d_head"]
                     ) -> Float[Tensor, "batch head query key"]:
    """``q k^T / sqrt(d_head)`` for every query and key of every head: the scores before any mask."""
    scores = einops.einsum(q, k, "batch head query d_head, batch head key d_head -> batch head query key")
    return scores / math.sqrt(q.shape[-1])


def causal_attention_pattern(q: Float[Tensor, "batch head query d_head"], k: Float[Tensor, "batch head key d_head"]
                             ) -> Float[Tensor, "batch head query key"]:
    """Reference for Exercise 0.6: ``softmax(q k^T / sqrt(d_head))`` over the keys, each query attending
    only to itself and earlier positions (later keys get probability 0)."""
    scores = attention_scores(q, k)
    future = torch.ones_like(scores, dtype=torch.bool).triu(diagonal=1)          # key > query
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1)


def self_attention(attention: nn.Module, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
    """Reference for Exercise 0.7: GPT-2's causal self-attention (``block.attn``) on the normalised stream
    ``x``: queries, keys and values from ``c_attn``, split into heads, each head's pattern mixing its
    values, the heads side by side again, then the output projection ``c_proj``."""
    q, k, v = einops.rearrange(conv1d(x, attention.c_attn), "batch pos (three head d_head) -> three batch head pos d_head",
                               three=3, head=attention.num_heads)
    pattern = causal_attention_pattern(q, k)                                   # [batch, head, query, key]
    z = einops.einsum(pattern, v, "batch head query key, batch head key d_head -> batch query head d_head")
    return conv1d(einops.rearrange(z, "batch pos head d_head -> batch pos (head d_head)"), attention.c_proj)


def mlp(feed_forward: nn.Module, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
    """Reference for Exercise 0.8: GPT-2's MLP (``block.mlp``) on the normalised stream: ``c_fc`` up to
    ``d_mlp``, the tanh approximation of GELU (GPT-2's ``gelu_new``), ``c_proj`` back down."""
    return conv1d(F.gelu(conv1d(x, feed_forward.c_fc), approximate="tanh"), feed_forward.c_proj)


def transformer_block(block: nn.Module, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
    """Reference for Exercise 0.9: one GPT-2 block: attention reads ``ln_1(x)`` and adds to the stream,
    then the MLP reads ``ln_2`` of the new stream and adds to it (pre-norm residual blocks)."""
    x = x + self_attention(block.attn, layer_norm(x, block.ln_1))
    return x + mlp(block.mlp, layer_norm(x, block.ln_2))


def gpt2_forward(model: PreTrainedModel, input_ids: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos vocab"]:
    """Reference for Exercise 0.10: the whole forward pass: embed, every block in turn, the final norm
    and the unembedding. Equals ``model(input_ids).logits``."""
    check_gpt2(model)
    x = embed(model, input_ids)
    for block in model.transformer.h:
        x = transformer_block(block, x)
    return layer_norm(x, model.transformer.ln_f) @ model.lm_head.weight.T


def gpt2_parameter_count(config: GPT2Config) -> int:
    """Reference for Exercise 0.11 (bonus): the parameters of ``GPT2LMHeadModel(config)``, from the config alone.

    Token and position embeddings; per block two layer norms (weight and bias), ``c_attn`` and
    ``c_proj`` of attention, ``c_fc`` and ``c_proj`` of the MLP (``d_mlp = n_inner``, or ``4 d_model``),
    each a weight and a bias; the final norm; and an unembedding of its own only when it is not tied.
    """
    d, d_mlp = config.n_embd, config.n_inner or 4 * config.n_embd
    per_block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * d_mlp + d_mlp) + (d_mlp * d + d)
    unembedding = 0 if config.tie_word_embeddings else config.vocab_size * d
    return config.vocab_size * d + config.n_positions * d + config.n_layer * per_block + 2 * d + unembedding


def padded_attention_pattern(q: Float[Tensor, "batch head query d_head"], k: Float[Tensor, "batch head key d_head"],
                             attention_mask: Int[Tensor, "batch key"]) -> Float[Tensor, "batch head query key"]:
    """Reference for Exercise 0.12 (bonus): the causal pattern of a left-padded batch: ``attention_mask`` is 1
    on real tokens and 0 on padding, and no query attends to a padding key. A padding query has no key
    to attend to: its row is all zeros (nothing reads it)."""
    scores = attention_scores(q, k)
    future = torch.ones_like(scores, dtype=torch.bool).triu(diagonal=1)
    padding = einops.rearrange(attention_mask == 0, "batch key -> batch 1 1 key")
    return scores.masked_fill(future | padding, float("-inf")).softmax(dim=-1).nan_to_num(0.0)
