"""Checkers for the exercises of chapter 0 (the course model), kept apart from the library code they check.

Each ``check_<exercise>(learner_fn, ...)`` runs the learner's function and the library's reference
on inputs chosen so that every plausible mistake shows (see ``utils.checks``), and prints one line.
``tests/test_mutation.py`` and ``tests/test_wrong_answers.py`` prove that each rejects wrong answers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import GPT2Config, PreTrainedModel

from utils.checks import Case, CheckResult, check_function
from utils.course_model.exercises import (
    final_residual_stream, logit_difference, logits_from_final_residual, per_token_loss,
)
from utils.gpt2_from_scratch import (
    causal_attention_pattern, embed, gpt2_forward, gpt2_parameter_count, layer_norm, mlp, padded_attention_pattern,
    self_attention, transformer_block,
)
from utils.models import tiny_random_model


# ---------------------------------------------------------------------------------------------
# Exercises on utils.course_model.exercises


def _random_logits(batch: int, pos: int, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(batch, pos, vocab, generator=generator)
    tokens = torch.randint(vocab, (batch, pos), generator=generator)
    return logits, tokens


def _random_ids(model: PreTrainedModel, batch: int, pos: int, seed: int) -> torch.Tensor:
    """``[batch, pos]`` token ids drawn uniformly from ``model``'s vocabulary."""
    return torch.randint(model.config.vocab_size, (batch, pos), generator=torch.Generator().manual_seed(seed))


def check_per_token_loss(learner_fn: Callable) -> CheckResult:
    """Exercise 0.1 on random logits: a batch of 3, a batch of 1, an odd length and two tokens."""
    cases = [Case(f"{name}: logits {tuple(logits.shape)}", logits, tokens) for name, (logits, tokens) in [
        ("batch of 3", _random_logits(3, 8, 50, seed=0)),
        ("batch of 1", _random_logits(1, 8, 50, seed=1)),
        ("odd length", _random_logits(2, 7, 11, seed=2)),
        ("two tokens", _random_logits(4, 2, 50, seed=3)),
    ]]
    return check_function(
        learner_fn, per_token_loss, cases, exercise="0.1 (per_token_loss)",
        hint="position i predicts token i + 1, so the output has one position fewer than the input; "
             "the loss is minus the log-probability (log_softmax over the vocabulary) of that next token")


def check_logit_difference(learner_fn: Callable) -> CheckResult:
    """Exercise 0.2 on random logits with several batch sizes and lengths."""
    def case(name: str, batch: int, pos: int, seed: int) -> Case:
        logits, _ = _random_logits(batch, pos, 40, seed)
        generator = torch.Generator().manual_seed(seed + 100)
        correct, wrong = torch.randint(40, (2, batch), generator=generator)
        return Case(f"{name}: logits {tuple(logits.shape)}", logits, correct, wrong)

    cases = [case("batch of 4", 4, 6, 0), case("batch of 1", 1, 5, 1), case("one position", 3, 1, 2),
             case("odd length", 2, 9, 3)]
    return check_function(
        learner_fn, logit_difference, cases, exercise="0.2 (logit_difference)",
        hint="use the logits at the last position only (the prediction after the whole prompt), "
             "pick each row's own correct and wrong token, and subtract wrong from correct")


def check_logits_from_final_residual(learner_fn: Callable, model: PreTrainedModel) -> CheckResult:
    """Exercise 0.3 on ``model`` and on tiny random GPT-NeoX (Pythia) and Llama models."""
    def case(name: str, checked_model: PreTrainedModel, batch: int, pos: int) -> Case:
        input_ids = _random_ids(checked_model, batch, pos, seed=batch * 100 + pos)
        return Case(name, checked_model, final_residual_stream(checked_model, input_ids))

    cases = [case("your model, batch of 2", model, 2, 6), case("your model, batch of 1", model, 1, 3),
             case("tiny random Pythia (GPT-NeoX)", tiny_random_model("gpt_neox"), 2, 5),
             case("tiny random Llama (RMSNorm)", tiny_random_model("llama"), 1, 4)]
    with torch.no_grad():
        return check_function(
            learner_fn, logits_from_final_residual, cases, exercise="0.3 (logits_from_final_residual)",
            atol=1e-4, rtol=1e-4,
            hint="apply the final norm (architecture.final_norm(model)) and then the unembedding "
                 "(architecture.unembedding(model)); use the helpers so the same code runs on every architecture")


# ---------------------------------------------------------------------------------------------
# Exercises on utils.gpt2_from_scratch: the forward pass by hand, on the course model's weights and
# on a tiny random GPT-2 (4 heads of 16, not the course model's 8 of 16), so that nothing hard-coded passes


def _stream(shape: tuple[int, ...], seed: int, scale: float = 3.0, offset: float = 1.0) -> torch.Tensor:
    """A residual-stream-like input: not centred and not of unit size, as the real stream is not."""
    return offset + scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _affine_norm(width: int, eps: float, seed: int) -> torch.nn.LayerNorm:
    norm = torch.nn.LayerNorm(width, eps=eps)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.5 * torch.randn(width, generator=generator))
        norm.bias.copy_(0.5 * torch.randn(width, generator=generator))
    return norm


def _tiny_gpt2() -> PreTrainedModel:
    return tiny_random_model("gpt2", seed=3)


def check_layer_norm(learner_fn: Callable, model: PreTrainedModel) -> CheckResult:
    """Exercise 0.4 on the model's own norms, on one vector, and on an almost constant input (where ``eps`` matters)."""
    block = model.transformer.h[0]
    width = model.config.n_embd
    cases = [Case("ln_1 of block 0, a [2, 5, d_model] stream", _stream((2, 5, width), 0), block.ln_1),
             Case("the final norm ln_f, a [1, 3, d_model] stream", _stream((1, 3, width), 1), model.transformer.ln_f),
             Case("a LayerNorm(16) with its own weight and bias, one vector [16]", _stream((16,), 2),
                  _affine_norm(16, 1e-5, 0)),
             Case("an almost constant input (variance 1e-6, below eps = 1e-5)", _stream((3, 16), 3, 1e-3, 0.0),
                  _affine_norm(16, 1e-5, 1)),
             Case("a LayerNorm(16) with eps = 0.01", _stream((2, 16), 4, 0.1), _affine_norm(16, 1e-2, 2))]
    return check_function(
        learner_fn, layer_norm, cases, exercise="0.4 (layer_norm)",
        hint="over the last axis only: subtract the mean, divide by sqrt(variance + norm.eps) with the biased "
             "variance (the mean of the squared deviations, as torch.var(unbiased=False)), then * norm.weight + norm.bias")


def check_embed(learner_fn: Callable, model: PreTrainedModel) -> CheckResult:
    """Exercise 0.5 on the model and a tiny random GPT-2, with a batch, one token, and repeated tokens."""
    tiny = _tiny_gpt2()
    cases = [Case("your model, a batch of 2 x 7 ids", model, _random_ids(model, 2, 7, 0)),
             Case("your model, one token", model, _random_ids(model, 1, 1, 1)),
             Case("your model, the same token at every position", model, torch.full((1, 6), 5)),
             Case("a tiny random GPT-2, 3 x 4 ids", tiny, _random_ids(tiny, 3, 4, 2))]
    return check_function(
        learner_fn, embed, cases, exercise="0.5 (embed)",
        hint="two lookups added: model.transformer.wte.weight[input_ids] (a row per token) and "
             "model.transformer.wpe.weight[positions] with positions 0, 1, ..., pos - 1, the same for every row")


def check_causal_attention_pattern(learner_fn: Callable) -> CheckResult:
    """Exercise 0.6 on random queries and keys: several heads and widths, and one position."""
    def case(name: str, shape: tuple[int, int, int, int], seed: int) -> Case:
        generator = torch.Generator().manual_seed(seed)
        return Case(f"{name}: q and k {shape}", 2 * torch.randn(*shape, generator=generator),
                    2 * torch.randn(*shape, generator=generator))

    cases = [case("2 prompts, 3 heads of 8", (2, 3, 5, 8), 0), case("1 prompt, 1 head of 16", (1, 1, 6, 16), 1),
             case("one position", (2, 2, 1, 4), 2), case("4 heads of 32", (1, 4, 7, 32), 3)]
    return check_function(
        learner_fn, causal_attention_pattern, cases, exercise="0.6 (causal_attention_pattern)",
        hint="scores q . k over d_head for every query and key, divided by sqrt(d_head); set the scores of later "
             "keys (key > query) to -inf before the softmax over the key axis, so each row sums to 1")


def check_self_attention(learner_fn: Callable, model: PreTrainedModel) -> CheckResult:
    """Exercise 0.7 on two of the model's blocks and on a tiny random GPT-2 of other head sizes."""
    tiny, width = _tiny_gpt2(), model.config.n_embd
    cases = [Case("block 0 of your model, a [2, 6, d_model] stream", model.transformer.h[0].attn, _stream((2, 6, width), 0, 1, 0)),
             Case("the last block of your model", model.transformer.h[-1].attn, _stream((1, 5, width), 1, 1, 0)),
             Case("one position", model.transformer.h[1].attn, _stream((2, 1, width), 2, 1, 0)),
             Case("a tiny random GPT-2 (4 heads of 16)", tiny.transformer.h[0].attn, _stream((1, 5, 64), 3, 1, 0))]
    return check_function(
        learner_fn, self_attention, cases, exercise="0.7 (self_attention)",
        hint="x @ c_attn.weight + c_attn.bias gives [batch, pos, 3 * d_model]: queries, then keys, then values, "
             "each n_heads heads of d_head side by side; take the pattern of Exercise 0.6, mix the values with it, put "
             "the heads side by side again (head before d_head) and apply c_proj", atol=1e-5, rtol=1e-4)


def check_mlp(learner_fn: Callable, model: PreTrainedModel) -> CheckResult:
    """Exercise 0.8 on the model's MLPs and on a tiny random GPT-2."""
    tiny, width = _tiny_gpt2(), model.config.n_embd
    cases = [Case("the MLP of block 0, a [2, 4, d_model] stream", model.transformer.h[0].mlp, _stream((2, 4, width), 0, 1, 0)),
             Case("the MLP of the last block", model.transformer.h[-1].mlp, _stream((1, 3, width), 1, 2, 0)),
             Case("a tiny random GPT-2", tiny.transformer.h[1].mlp, _stream((3, 2, 64), 2, 1, 0))]
    return check_function(
        learner_fn, mlp, cases, exercise="0.8 (mlp)",
        hint="c_fc up to d_mlp (x @ weight + bias), GPT-2's GELU (the tanh approximation: "
             "F.gelu(h, approximate='tanh')), then c_proj back to d_model")


def check_transformer_block(learner_fn: Callable, model: PreTrainedModel) -> CheckResult:
    """Exercise 0.9 on every block of the model and on a tiny random GPT-2."""
    tiny, width = _tiny_gpt2(), model.config.n_embd
    cases = [Case(f"block {index} of your model", block, _stream((2, 5, width), index))
             for index, block in enumerate(model.transformer.h)]
    cases.append(Case("a tiny random GPT-2", tiny.transformer.h[0], _stream((1, 4, 64), 9)))
    return check_function(
        learner_fn, transformer_block, cases, exercise="0.9 (transformer_block)",
        hint="pre-norm and residual: attention reads ln_1 of the stream and its output is added to the stream; then "
             "the MLP reads ln_2 of that new stream (not of the input) and its output is added too",
        atol=1e-4, rtol=1e-4)


def check_gpt2_forward(learner_fn: Callable, model: PreTrainedModel) -> CheckResult:
    """Exercise 0.10: the learner's logits against ``model(input_ids).logits``' reference, on both models."""
    tiny = _tiny_gpt2()
    cases = [Case("your model, 2 x 8 ids", model, _random_ids(model, 2, 8, 0)),
             Case("your model, one token", model, _random_ids(model, 1, 1, 1)),
             Case("a tiny random GPT-2, 2 x 5 ids", tiny, _random_ids(tiny, 2, 5, 2))]
    with torch.no_grad():
        return check_function(
            learner_fn, gpt2_forward, cases, exercise="0.10 (gpt2_forward)", atol=1e-4, rtol=1e-4,
            hint="embed (Exercise 0.5), every block of model.transformer.h in order (Exercise 0.9), then the final "
                 "norm model.transformer.ln_f and the unembedding model.lm_head.weight (logits = x @ W_U^T)")


def _small_config(**fields: int | bool) -> GPT2Config:
    return GPT2Config(bos_token_id=0, eos_token_id=0, **fields)


def check_gpt2_parameter_count(learner_fn: Callable, model: PreTrainedModel) -> CheckResult:
    """Exercise 0.11 (bonus) on the model's config, GPT-2 small's, a tiny one, one with its own MLP width and one
    with an untied unembedding (each reference count equals the model's own, ``tests/test_gpt2_from_scratch.py``)."""
    cases = [Case("your model's config", model.config),
             Case("GPT-2 small's config (124 M parameters)", GPT2Config()),
             Case("a tiny config: 2 layers, d_model 64, 40 positions", _small_config(n_layer=2, n_embd=64, n_head=4,
                                                                                    n_positions=40, vocab_size=300)),
             Case("n_inner = 100 (an MLP not 4 x d_model wide)", _small_config(n_layer=3, n_embd=32, n_head=2,
                                                                              n_inner=100, vocab_size=50)),
             Case("tie_word_embeddings = False (an unembedding of its own)",
                  _small_config(n_layer=1, n_embd=16, n_head=2, vocab_size=70, tie_word_embeddings=False))]
    return check_function(
        learner_fn, gpt2_parameter_count, cases, exercise="0.11 (gpt2_parameter_count)",
        hint="count module by module: two embedding tables, then per block two layer norms (weight and bias each), "
             "c_attn, attention's c_proj, c_fc and the MLP's c_proj (each weight plus bias; d_mlp is config.n_inner "
             "or 4 * n_embd), then ln_f; lm_head adds parameters only when it is not tied to wte")


def check_padded_attention_pattern(learner_fn: Callable) -> CheckResult:
    """Exercise 0.12 (bonus) on left-padded batches: rows with different amounts of padding, none, and one token."""
    def case(name: str, batch: int, heads: int, pos: int, padding: list[int], seed: int) -> Case:
        generator = torch.Generator().manual_seed(seed)
        q, k = (2 * torch.randn(batch, heads, pos, 8, generator=generator) for _ in range(2))
        mask = torch.tensor([[0] * pad + [1] * (pos - pad) for pad in padding])
        return Case(f"{name}: q and k {tuple(q.shape)}, padding {padding}", q, k, mask)

    cases = [case("left padding of 0, 2 and 3 tokens", 3, 2, 6, [0, 2, 3], 0), case("no padding", 2, 1, 4, [0, 0], 1),
             case("a row of one real token", 2, 3, 5, [4, 1], 2)]
    return check_function(
        learner_fn, padded_attention_pattern, cases, exercise="0.12 (padded_attention_pattern)",
        hint="mask two things before the softmax over the keys: the future (as in Exercise 0.6) and every key whose "
             "attention_mask is 0, broadcast over heads and queries; a padding query then has every key masked, and its "
             "row of NaNs must become zeros")
