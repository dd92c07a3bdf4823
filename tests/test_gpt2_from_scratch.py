"""GPT-2's forward pass by hand (chapter 0's exercises 0.4 to 0.10) equals transformers', piece by piece.

On the course model and on a tiny random GPT-2 (4 heads of 16): every block's output is compared with
the residual stream the model itself computes, every pattern with its ``output_attentions``.
"""

from __future__ import annotations

import pytest
import torch

from utils.gpt2_from_scratch import (
    causal_attention_pattern, conv1d, embed, gpt2_forward, gpt2_parameter_count, layer_norm, padded_attention_pattern,
    self_attention, transformer_block,
)
from utils.hooks import capture
from utils.models import tiny_random_model


@pytest.fixture(scope="module", params=["course", "tiny"])
def gpt2(request, course_model):
    return course_model if request.param == "course" else tiny_random_model("gpt2", seed=3)


@pytest.fixture(scope="module")
def input_ids(gpt2):
    return torch.randint(gpt2.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def test_the_forward_pass_by_hand_gives_the_models_logits(gpt2, input_ids):
    torch.testing.assert_close(gpt2_forward(gpt2, input_ids), gpt2(input_ids).logits, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_each_piece_equals_what_the_model_computes(gpt2, input_ids):
    n_layers = gpt2.config.n_layer
    streams = capture(gpt2, input_ids, [f"resid_pre.{layer}" for layer in range(n_layers)]
                      + [f"resid_post.{layer}" for layer in range(n_layers)])
    torch.testing.assert_close(embed(gpt2, input_ids), streams["resid_pre.0"], atol=1e-6, rtol=0)
    patterns = gpt2(input_ids, output_attentions=True).attentions
    for layer, block in enumerate(gpt2.transformer.h):
        x = streams[f"resid_pre.{layer}"]
        torch.testing.assert_close(layer_norm(x, block.ln_1), block.ln_1(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(transformer_block(block, x), streams[f"resid_post.{layer}"], atol=1e-4, rtol=1e-4)
        q, k, _ = conv1d(block.ln_1(x), block.attn.c_attn).split(gpt2.config.n_embd, dim=-1)
        heads = lambda t: t.unflatten(-1, (block.attn.num_heads, -1)).transpose(1, 2)  # noqa: E731
        torch.testing.assert_close(causal_attention_pattern(heads(q), heads(k)), patterns[layer], atol=1e-5, rtol=1e-4)


def test_the_pattern_is_causal_and_sums_to_one():
    q, k = torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 8)
    pattern = causal_attention_pattern(q, k)
    assert (pattern.triu(diagonal=1) == 0).all() and pattern[..., 0, 0].eq(1).all()
    torch.testing.assert_close(pattern.sum(dim=-1), torch.ones(2, 3, 6))


def test_self_attention_of_one_position_is_its_value_projected(course_model):
    attention, x = course_model.transformer.h[0].attn, torch.randn(1, 1, 128)
    value = conv1d(x, attention.c_attn)[..., 2 * 128:]
    torch.testing.assert_close(self_attention(attention, x), conv1d(value, attention.c_proj), atol=1e-5, rtol=1e-5)


def test_another_architecture_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="written for GPT-2's modules, and this is a llama model"):
        gpt2_forward(tiny_random_model("llama"), torch.zeros(1, 3, dtype=torch.long))


@pytest.mark.parametrize("fields", [{}, {"n_inner": 100}, {"tie_word_embeddings": False}])
def test_the_parameter_count_from_the_config_is_the_models(fields):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=20, vocab_size=90, bos_token_id=0, eos_token_id=0,
                        **fields)
    with torch.device("meta"):
        assert gpt2_parameter_count(config) == sum(p.numel() for p in GPT2LMHeadModel(config).parameters())
    assert gpt2_parameter_count(GPT2Config()) == 124_439_808                     # GPT-2 small


def test_left_padding_leaves_the_real_tokens_pattern_as_without_it():
    q, k = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)
    padded_q, padded_k = (torch.cat([torch.randn(1, 2, 2, 8), t], dim=2) for t in (q, k))
    pattern = padded_attention_pattern(padded_q, padded_k, torch.tensor([[0, 0, 1, 1, 1, 1]]))
    torch.testing.assert_close(pattern[..., 2:, 2:], causal_attention_pattern(q, k))
    assert (pattern[..., 2:, :2] == 0).all() and (pattern[..., :2, :] == 0).all()    # padding: never read, rows of 0
