"""Hand-written answers to every exercise: mistakes a learner makes that mutation cannot produce (the
wrong layer, the wrong library call, a TopK over the batch), and correct answers in another style.

``WRONG[exercise]`` must each be rejected and ``RIGHT[exercise]`` each accepted by the exercise's
checker (``tests/test_wrong_answers.py``); ``benchmarks/mutation_report.py`` counts them. Each
function's name says its mistake, or its style.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import random
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from statistics import NormalDist

import einops
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers.pytorch_utils import Conv1D

from utils import architecture
from utils.activation_store import block_output, cache_to_shards
from utils.attention import losses_by_copy, token_losses
from utils.course_model.evaluate import encode
from utils.feature_circuits import Node, faithfulness, logit_difference_with
from utils.finetune import IGNORE_INDEX
from utils.gpt2_from_scratch import causal_attention_pattern, embed, layer_norm, mlp, self_attention, transformer_block
from utils.hooks import (
    ATTENTION, ATTENTION_OUTPUT_PROJECTION, ablate_head, capture, editing_head_outputs, head_outputs, hooks,
)
from utils.logit_lens import ATTENTION_INPUT_NORM, direction_logits, kl_to_final, layer_labels, ov_circuit
from utils.lora import LoRALinear, add_lora, count_parameters, linear_module_names, lora_modules
from utils.models import frozen
from utils.patching import PairTokens, baseline, clean_head_outputs, logit_difference, normalised_metric, patch_sweep
from utils.sae import loss_with_replacement, next_token_loss, real_positions, sae_loss
from utils.sae_features import auroc, split_aurocs
from utils.soft_prompts import answer_loss, logits_with_soft_prompt
from utils.steering import BEHAVIOURS, last_token_activations
from utils.world import label_text

Answer = Callable[..., object]


# --------------------------------------------------------------------------------------------- 0
def loss_without_the_shift(logits, tokens):
    return -logits.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def loss_of_the_current_token(logits, tokens):
    return -logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, :-1].unsqueeze(-1)).squeeze(-1)


def loss_averaged_to_one_number(logits, tokens):
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:])


def loss_with_cross_entropy(logits, tokens):
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")


def difference_at_the_first_position(logits, correct, wrong):
    rows = torch.arange(len(correct))
    return logits[rows, 0, correct] - logits[rows, 0, wrong]


def difference_the_wrong_way_round(logits, correct, wrong):
    rows = torch.arange(len(correct))
    return logits[rows, -1, wrong] - logits[rows, -1, correct]


def difference_of_probabilities(logits, correct, wrong):
    probs, rows = logits[:, -1].softmax(-1), torch.arange(len(correct))
    return probs[rows, correct] - probs[rows, wrong]


def difference_with_gather(logits, correct, wrong):
    last = logits[:, -1]
    return (last.gather(-1, correct[:, None]) - last.gather(-1, wrong[:, None])).squeeze(-1)


def logits_without_the_final_norm(model, residual):
    return architecture.unembedding(model)(residual)


def logits_with_the_norm_twice(model, residual):
    norm = architecture.final_norm(model)
    return architecture.unembedding(model)(norm(norm(residual)))


def logits_with_a_norm_of_no_weights(model, residual):
    return architecture.unembedding(model)(F.layer_norm(residual, residual.shape[-1:]))


def logits_as_a_matrix_product(model, residual):
    unembedding = architecture.unembedding(model)
    logits = architecture.final_norm(model)(residual) @ unembedding.weight.T
    return logits if unembedding.bias is None else logits + unembedding.bias



# GPT-2 from scratch (0.4 to 0.10)
def norm_with_the_unbiased_variance(x, norm):
    return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + norm.eps) * norm.weight + norm.bias


def norm_without_eps(x, norm):
    centred = x - x.mean(-1, keepdim=True)
    return centred / centred.pow(2).mean(-1, keepdim=True).sqrt() * norm.weight + norm.bias


def norm_without_its_weight_and_bias(x, norm):
    centred = x - x.mean(-1, keepdim=True)
    return centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + norm.eps)


def norm_with_layer_norm(x, norm):
    return F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps)


def embed_without_positions(model, input_ids):
    return model.transformer.wte.weight[input_ids]


def embed_with_positions_from_one(model, input_ids):
    return model.transformer.wte.weight[input_ids] + model.transformer.wpe.weight[1:input_ids.shape[1] + 1]


def embed_with_the_token_table_for_positions(model, input_ids):
    return model.transformer.wte.weight[input_ids] + model.transformer.wte.weight[:input_ids.shape[1]]


def embed_with_the_modules(model, input_ids):
    return model.transformer.wte(input_ids) + model.transformer.wpe(torch.arange(input_ids.shape[1]))[None]


def pattern_without_scaling(q, k):
    scores = q @ k.transpose(-1, -2)
    return scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)


def pattern_masking_the_past(q, k):
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    return scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).tril(-1), float("-inf")).softmax(-1)


def pattern_normalised_over_queries(q, k):
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    return scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf")).softmax(-2)


def pattern_with_scaled_dot_product_attention(q, k):
    n = q.shape[-2]
    identity = torch.eye(n).expand(*q.shape[:-2], n, n)        # the values' identity returns the pattern itself
    return F.scaled_dot_product_attention(q, k, identity, is_causal=True)


def attention_with_heads_outermost(attention, x):
    qkv = x @ attention.c_attn.weight + attention.c_attn.bias
    q, k, v = einops.rearrange(qkv, "b p (head three d) -> three b head p d", three=3, head=attention.num_heads)
    z = causal_attention_pattern(q, k) @ v
    return einops.rearrange(z, "b head p d -> b p (head d)") @ attention.c_proj.weight + attention.c_proj.bias


def attention_without_the_mask(attention, x):
    qkv = x @ attention.c_attn.weight + attention.c_attn.bias
    q, k, v = einops.rearrange(qkv, "b p (three head d) -> three b head p d", three=3, head=attention.num_heads)
    z = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1) @ v
    return einops.rearrange(z, "b head p d -> b p (head d)") @ attention.c_proj.weight + attention.c_proj.bias


def attention_without_the_output_bias(attention, x):
    qkv = x @ attention.c_attn.weight + attention.c_attn.bias
    q, k, v = einops.rearrange(qkv, "b p (three head d) -> three b head p d", three=3, head=attention.num_heads)
    z = causal_attention_pattern(q, k) @ v
    return einops.rearrange(z, "b head p d -> b p (head d)") @ attention.c_proj.weight


def attention_with_split_and_sdpa(attention, x):
    q, k, v = attention.c_attn(x).split(x.shape[-1], dim=-1)
    heads = lambda t: t.unflatten(-1, (attention.num_heads, -1)).transpose(1, 2)  # noqa: E731
    z = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), is_causal=True)
    return attention.c_proj(z.transpose(1, 2).flatten(-2))


def mlp_with_the_exact_gelu(feed_forward, x):
    return F.gelu(x @ feed_forward.c_fc.weight + feed_forward.c_fc.bias) @ feed_forward.c_proj.weight + feed_forward.c_proj.bias


def mlp_with_relu(feed_forward, x):
    return F.relu(x @ feed_forward.c_fc.weight + feed_forward.c_fc.bias) @ feed_forward.c_proj.weight + feed_forward.c_proj.bias


def mlp_without_the_biases(feed_forward, x):
    return F.gelu(x @ feed_forward.c_fc.weight, approximate="tanh") @ feed_forward.c_proj.weight


def mlp_with_the_modules(feed_forward, x):
    return feed_forward.c_proj(torch.tanh((2 / math.pi) ** 0.5 * (lambda h: h + 0.044715 * h ** 3)(
        feed_forward.c_fc(x))).add(1).mul(feed_forward.c_fc(x)).mul(0.5))


def block_post_norm(block, x):
    x = layer_norm(x + self_attention(block.attn, x), block.ln_1)
    return layer_norm(x + mlp(block.mlp, x), block.ln_2)


def block_in_parallel(block, x):
    return x + self_attention(block.attn, layer_norm(x, block.ln_1)) + mlp(block.mlp, layer_norm(x, block.ln_2))


def block_without_the_residual(block, x):
    x = self_attention(block.attn, layer_norm(x, block.ln_1))
    return x + mlp(block.mlp, layer_norm(x, block.ln_2))


def block_with_the_norm_and_mlp_modules(block, x):
    x = x + attention_with_split_and_sdpa(block.attn, block.ln_1(x))    # block.attn alone is not causal: no mask
    return x + block.mlp(block.ln_2(x))


def forward_without_the_final_norm(model, input_ids):
    x = embed(model, input_ids)
    for block in model.transformer.h:
        x = transformer_block(block, x)
    return x @ model.lm_head.weight.T


def forward_without_positions(model, input_ids):
    x = model.transformer.wte.weight[input_ids]
    for block in model.transformer.h:
        x = transformer_block(block, x)
    return layer_norm(x, model.transformer.ln_f) @ model.lm_head.weight.T


def forward_through_the_first_block_only(model, input_ids):
    x = transformer_block(model.transformer.h[0], embed(model, input_ids))
    return layer_norm(x, model.transformer.ln_f) @ model.lm_head.weight.T


def forward_with_the_modules(model, input_ids):
    x = embed(model, input_ids)
    for block in model.transformer.h:
        x = transformer_block(block, x)
    return model.lm_head(model.transformer.ln_f(x))



def count_without_the_biases(config):
    d, m = config.n_embd, config.n_inner or 4 * config.n_embd
    return config.vocab_size * d + config.n_positions * d + config.n_layer * (2 * 2 * d + 3 * d * d + d * d + 2 * d * m) + 2 * d


def count_with_a_four_times_wide_mlp(config):
    d = config.n_embd
    per_block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d)
    unembedding = 0 if config.tie_word_embeddings else config.vocab_size * d
    return config.vocab_size * d + config.n_positions * d + config.n_layer * per_block + 2 * d + unembedding


def count_with_the_unembedding_always(config):
    d, m = config.n_embd, config.n_inner or 4 * config.n_embd
    per_block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * m + m) + (m * d + d)
    return 2 * config.vocab_size * d + config.n_positions * d + config.n_layer * per_block + 2 * d


def count_by_building_the_model_on_the_meta_device(config):
    from transformers import GPT2LMHeadModel

    with torch.device("meta"):
        return sum(p.numel() for p in GPT2LMHeadModel(config).parameters())


def padded_pattern_ignoring_the_padding(q, k, attention_mask):
    return causal_attention_pattern(q, k)


def padded_pattern_masking_padding_queries_not_keys(q, k, attention_mask):
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    hidden = torch.ones_like(scores, dtype=torch.bool).triu(1) | (attention_mask == 0)[:, None, :, None]
    return scores.masked_fill(hidden, float("-inf")).softmax(-1).nan_to_num(0.0)


def padded_pattern_with_nan_rows(q, k, attention_mask):
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    hidden = torch.ones_like(scores, dtype=torch.bool).triu(1) | (attention_mask == 0)[:, None, None, :]
    return scores.masked_fill(hidden, float("-inf")).softmax(-1)


def padded_pattern_with_an_additive_mask(q, k, attention_mask):
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    allowed = torch.ones_like(scores, dtype=torch.bool).tril() & attention_mask.bool()[:, None, None, :]
    weights = (scores - scores.amax(-1, keepdim=True)).exp() * allowed
    return torch.where(allowed.any(-1, keepdim=True), weights / weights.sum(-1, keepdim=True).clamp_min(1e-30), 0.0)


# --------------------------------------------------------------------------------------------- 1
def top_k_dropping_the_kth(logits, k):
    kth = logits.topk(min(k, logits.shape[-1]), dim=-1).values[:, -1:]
    return logits.masked_fill(logits <= kth, -torch.inf)


def top_k_zeroing_instead_of_minus_infinity(logits, k):
    kth = logits.topk(min(k, logits.shape[-1]), dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, 0.0)


def top_k_over_the_batch(logits, k):
    kth = logits.topk(min(k, logits.shape[0]), dim=0).values[-1:]
    return logits.masked_fill(logits < kth, -torch.inf)


def top_k_with_a_sort(logits, k):
    kth = logits.sort(dim=-1, descending=True).values[:, min(k, logits.shape[-1]) - 1:][:, :1]
    return torch.where(logits >= kth, logits, torch.full_like(logits, -torch.inf))


def top_p_on_cumulative_logits(logits, p):
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    before = sorted_logits.cumsum(-1) - sorted_logits
    return logits.masked_fill((before >= p).scatter(-1, order, before >= p), -torch.inf)


def top_p_without_the_token_that_crosses_p(logits, p):
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    remove = sorted_logits.softmax(-1).cumsum(-1) > p
    return logits.masked_fill(remove.scatter(-1, order, remove), -torch.inf)


def top_p_mask_left_in_sorted_order(logits, p):
    sorted_logits, _ = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    return logits.masked_fill(probs.cumsum(-1) - probs >= p, -torch.inf)


def top_p_row_by_row(logits, p):
    filtered = torch.full_like(logits, -torch.inf)
    for row, row_logits in enumerate(logits):
        mass = 0.0
        for token in row_logits.softmax(-1).argsort(descending=True).tolist():
            filtered[row, token] = row_logits[token]
            mass += row_logits.softmax(-1)[token].item()
            if mass >= p:
                break
    return filtered


def min_p_on_logits(logits, min_p):
    return logits.masked_fill(logits < min_p * logits.max(-1, keepdim=True).values, -torch.inf)


def min_p_against_the_batch_maximum(logits, min_p):
    probs = logits.softmax(-1)
    return logits.masked_fill(probs < min_p * probs.max(), -torch.inf)


def min_p_as_an_absolute_threshold(logits, min_p):
    return logits.masked_fill(logits.softmax(-1) < min_p, -torch.inf)


def min_p_in_log_space(logits, min_p):
    log_probs = logits.log_softmax(-1)
    threshold = log_probs.max(-1, keepdim=True).values + torch.log(torch.tensor(min_p))
    return torch.where(log_probs < threshold, -torch.inf, logits)


def penalty_dividing_every_seen_logit(logits, previous_tokens, penalty):
    return logits.scatter(-1, previous_tokens, logits.gather(-1, previous_tokens) / penalty)


def penalty_for_every_occurrence(logits, previous_tokens, penalty):
    logits = logits.clone()
    for row, tokens in enumerate(previous_tokens.tolist()):
        for token in tokens:
            value = logits[row, token]
            logits[row, token] = value * penalty if value < 0 else value / penalty
    return logits


def penalty_on_the_unseen_tokens(logits, previous_tokens, penalty):
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, previous_tokens, True)
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, logits, penalised)


def penalty_with_a_seen_mask(logits, previous_tokens, penalty):
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, previous_tokens, True)
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


@torch.no_grad()
def greedy_without_the_cache(model, input_ids, max_new_tokens):
    tokens = input_ids
    for _ in range(max_new_tokens):
        tokens = torch.cat([tokens, model(tokens).logits[:, -1:].argmax(-1)], dim=1)
    return tokens


@torch.no_grad()
def greedy_one_token_short(model, input_ids, max_new_tokens):
    tokens, fed, cache = input_ids, input_ids, None
    for _ in range(max_new_tokens - 1):
        out = model(input_ids=fed, past_key_values=cache, use_cache=True)
        cache, fed = out.past_key_values, out.logits[:, -1:].argmax(-1)
        tokens = torch.cat([tokens, fed], dim=1)
    return tokens


@torch.no_grad()
def greedy_returning_only_the_new_tokens(model, input_ids, max_new_tokens):
    fed, cache, new = input_ids, None, []
    for _ in range(max_new_tokens):
        out = model(input_ids=fed, past_key_values=cache, use_cache=True)
        cache, fed = out.past_key_values, out.logits[:, -1:].argmax(-1)
        new.append(fed)
    return torch.cat(new, dim=1)


@torch.no_grad()
def greedy_while_loop(model, input_ids, max_new_tokens):
    out = model(input_ids=input_ids, use_cache=True)
    tokens = input_ids
    while tokens.shape[1] < input_ids.shape[1] + max_new_tokens:
        next_token = out.logits[:, -1].argmax(-1, keepdim=True)
        tokens = torch.cat([tokens, next_token], dim=1)
        if tokens.shape[1] < input_ids.shape[1] + max_new_tokens:
            out = model(input_ids=next_token, past_key_values=out.past_key_values, use_cache=True)
    return tokens


def beams_best_per_beam(beam_scores, log_probs, k):
    best, tokens = (beam_scores[:, None] + log_probs).max(-1)
    order = best.argsort(descending=True)[:k]
    return best[order], order, tokens[order]


def beams_ignoring_their_scores(beam_scores, log_probs, k):
    scores, flat = log_probs.flatten().topk(k)
    return scores, flat // log_probs.shape[1], flat % log_probs.shape[1]


def beams_with_beam_and_token_swapped(beam_scores, log_probs, k):
    scores, flat = (beam_scores[:, None] + log_probs).flatten().topk(k)
    return scores, flat % log_probs.shape[1], flat // log_probs.shape[1]


def beams_with_a_sort(beam_scores, log_probs, k):
    scores, flat = (beam_scores[:, None] + log_probs).reshape(-1).sort(descending=True)
    beams, tokens = torch.div(flat[:k], log_probs.shape[1], rounding_mode="floor"), flat[:k] % log_probs.shape[1]
    return scores[:k], beams, tokens


def prompt_with_a_space_after_the_arrow(table, query, n_shots, rng):
    shots = rng.sample([x for x in sorted(table) if x != query], n_shots)
    return "".join(f"{x} -> {table[x]}\n" for x in shots) + f"{query} -> "


def prompt_with_the_query_among_the_shots(table, query, n_shots, rng):
    shots = rng.sample(sorted(table), n_shots)
    return "".join(f"{x} -> {table[x]}\n" for x in shots) + f"{query} ->"


def prompt_drawn_with_the_global_random(table, query, n_shots, rng):
    shots = random.sample([x for x in sorted(table) if x != query], n_shots)
    return "".join(f"{x} -> {table[x]}\n" for x in shots) + f"{query} ->"


def prompt_joined_line_by_line(table, query, n_shots, rng):
    lines = [f"{x} -> {table[x]}" for x in rng.sample(sorted(set(table) - {query}), n_shots)]
    return "\n".join([*lines, f"{query} ->"])


def wald_interval(correct, n, confidence=0.95):
    z, p = NormalDist().inv_cdf((1 + confidence) / 2), correct / n
    half = z * math.sqrt(p * (1 - p) / n)
    return p - half, p + half


def wilson_with_a_one_sided_z(correct, n, confidence=0.95):
    z, p = NormalDist().inv_cdf(confidence), correct / n
    denominator = 1 + z**2 / n
    centre, half = (p + z**2 / (2 * n)) / denominator, z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denominator
    return centre - half, centre + half


def wilson_without_its_denominator(correct, n, confidence=0.95):
    z, p = NormalDist().inv_cdf((1 + confidence) / 2), correct / n
    centre, half = p + z**2 / (2 * n), z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return centre - half, centre + half


def wilson_from_counts(correct, n, confidence=0.95):
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    root = z * math.sqrt(z**2 + 4 * correct * (n - correct) / n)
    return ((2 * correct + z**2 - root) / (2 * (n + z**2)), (2 * correct + z**2 + root) / (2 * (n + z**2)))


def matches_without_the_shift(logits, labels):
    return ((logits.argmax(-1) == labels) | (labels == IGNORE_INDEX)).all(-1)


def matches_any_answer_token(logits, labels):
    targets = labels[:, 1:]
    return ((logits[:, :-1].argmax(-1) == targets) & (targets != IGNORE_INDEX)).any(-1)


def matches_with_the_ignored_positions_as_mismatches(logits, labels):
    return (logits[:, :-1].argmax(-1) == labels[:, 1:]).all(-1)


def matches_row_by_row(logits, labels):
    rows = []
    for row_logits, row_labels in zip(logits, labels):
        positions = (row_labels != IGNORE_INDEX).nonzero().flatten()
        rows.append(bool((row_logits[positions - 1].argmax(-1) == row_labels[positions]).all()))
    return torch.tensor(rows)


def answer_as_the_last_number(text):
    numbers = re.findall(r"\d+", text)
    return int(numbers[-1]) if "The answer is" in text else None


def answer_as_the_first_number(text):
    numbers = re.findall(r"\d+", text)
    return int(numbers[0]) if "The answer is" in text else None


def answer_as_a_string(text):
    found = re.search(r"The answer is (\d+)", text)
    return found.group(1) if found else None


def answer_by_splitting(text):
    if "The answer is " not in text:
        return None
    rest = text.split("The answer is ", 1)[1]
    digits = "".join(itertools.takewhile(str.isdigit, rest))
    return int(digits) if digits else None


def mcnemar_one_sided(only_a, only_b):
    m = only_a + only_b
    return sum(math.comb(m, k) for k in range(min(only_a, only_b) + 1)) / 2**m


def mcnemar_without_the_cap(only_a, only_b):
    m = only_a + only_b
    return 2 * sum(math.comb(m, k) for k in range(min(only_a, only_b) + 1)) / 2**m


def mcnemar_chi_squared(only_a, only_b):
    if only_a + only_b == 0:
        return 1.0
    statistic = (only_a - only_b) ** 2 / (only_a + only_b)
    return math.erfc(math.sqrt(statistic / 2))


def mcnemar_summing_the_unlikely_splits(only_a, only_b):
    m = only_a + only_b
    probabilities = [math.comb(m, k) / 2**m for k in range(m + 1)]
    observed = probabilities[only_a]
    return min(1.0, sum(p for p in probabilities if p <= observed * (1 + 1e-9)))


def transitions_by_first_character(fsm, state, token_strings):
    return {i: fsm.step(state, text[0]) for i, text in enumerate(token_strings)
            if text and "\ufffd" not in text and fsm.step(state, text[0]) is not None}


def transitions_allowing_the_empty_token(fsm, state, token_strings):
    return {i: end for i, text in enumerate(token_strings) if "\ufffd" not in text
            and (end := fsm.walk(state, text)) is not None}


def transitions_taking_state_0_for_a_dead_end(fsm, state, token_strings):
    return {i: end for i, text in enumerate(token_strings) if text and "\ufffd" not in text
            and (end := fsm.walk(state, text))}


def transitions_character_by_character(fsm, state, token_strings):
    transitions = {}
    for token_id, text in enumerate(token_strings):
        if not text or "\ufffd" in text:
            continue
        current = state
        for char in text:
            current = fsm.step(current, char)
            if current is None:
                break
        if current is not None:
            transitions[token_id] = current
    return transitions


def mask_allowing_the_padded_ids(scores, allowed):
    allowed = F.pad(allowed, (0, scores.shape[-1] - allowed.shape[-1]), value=True)
    return scores.masked_fill(~allowed, -torch.inf)


def mask_in_place(scores, allowed):
    allowed = F.pad(allowed, (0, scores.shape[-1] - allowed.shape[-1]), value=False)
    return scores.masked_fill_(~allowed, -torch.inf)


def mask_removing_the_allowed_tokens(scores, allowed):
    allowed = F.pad(allowed, (0, scores.shape[-1] - allowed.shape[-1]), value=False)
    return scores.masked_fill(allowed, -torch.inf)


def mask_with_where(scores, allowed):
    padding = torch.zeros(allowed.shape[0], scores.shape[-1] - allowed.shape[-1], dtype=torch.bool)
    return torch.where(torch.cat([allowed, padding], dim=-1), scores, -torch.inf)


def soft_prompt_after_the_tokens(model, soft_prompt, input_ids):
    embeds = model.get_input_embeddings()(input_ids)
    prompt = soft_prompt.expand(len(input_ids), -1, -1)
    return model(inputs_embeds=torch.cat([embeds, prompt], dim=1)).logits[:, :input_ids.shape[1]]


def soft_prompt_logits_kept(model, soft_prompt, input_ids):
    prompt = soft_prompt.expand(len(input_ids), -1, -1)
    return model(inputs_embeds=torch.cat([prompt, model.get_input_embeddings()(input_ids)], dim=1)).logits


def soft_prompt_one_position_off(model, soft_prompt, input_ids):
    prompt = soft_prompt.expand(len(input_ids), -1, -1)
    logits = model(inputs_embeds=torch.cat([prompt, model.get_input_embeddings()(input_ids)], dim=1)).logits
    return logits[:, soft_prompt.shape[0] - 1:-1]


def soft_prompt_with_expand(model, soft_prompt, input_ids):
    prompt = soft_prompt.unsqueeze(0).expand(input_ids.shape[0], -1, -1)
    embeds = torch.cat([prompt, model.get_input_embeddings()(input_ids)], dim=1)
    return model(inputs_embeds=embeds).logits[:, -input_ids.shape[1]:]


def step_without_zero_grad(model, soft_prompt, optimizer, input_ids, labels):
    loss = answer_loss(logits_with_soft_prompt(model, soft_prompt.embeddings, input_ids), labels)
    loss.backward()
    optimizer.step()
    return loss.item()


def step_returning_the_loss_after_the_update(model, soft_prompt, optimizer, input_ids, labels):
    loss = answer_loss(logits_with_soft_prompt(model, soft_prompt.embeddings, input_ids), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        return answer_loss(logits_with_soft_prompt(model, soft_prompt.embeddings, input_ids), labels).item()


def step_returning_the_loss_tensor(model, soft_prompt, optimizer, input_ids, labels):
    loss = answer_loss(logits_with_soft_prompt(model, soft_prompt.embeddings, input_ids), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


def step_clearing_the_soft_prompt_gradient(model, soft_prompt, optimizer, input_ids, labels):
    soft_prompt.embeddings.grad = None
    logits = logits_with_soft_prompt(model, soft_prompt.embeddings, input_ids)
    loss = F.cross_entropy(einops.rearrange(logits[:, :-1], "b s v -> (b s) v"), labels[:, 1:].flatten(),
                           ignore_index=IGNORE_INDEX)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def nearest_by_dot_product(model, tokenizer, embeddings, k=3):
    similarity = embeddings @ model.get_input_embeddings().weight.T
    return [[tokenizer.decode([t]) for t in row] for row in similarity.topk(k, dim=-1).indices.tolist()]


def nearest_by_euclidean_distance(model, tokenizer, embeddings, k=3):
    distance = torch.cdist(embeddings, model.get_input_embeddings().weight)
    return [[tokenizer.decode([t]) for t in row] for row in distance.topk(k, dim=-1, largest=False).indices.tolist()]


def nearest_decoding_each_row_at_once(model, tokenizer, embeddings, k=3):
    vocab = F.normalize(model.get_input_embeddings().weight, dim=-1)
    similarity = F.normalize(embeddings, dim=-1) @ vocab.T
    return [[tokenizer.decode(row)] for row in similarity.topk(k, dim=-1).indices.tolist()]


@torch.no_grad()
def nearest_with_cosine_similarity(model, tokenizer, embeddings, k=3):
    weight = model.get_input_embeddings().weight                                   # [vocab, d_model]
    similarity = F.cosine_similarity(embeddings[:, None], weight[None], dim=-1)     # [n_tokens, vocab]
    return [tokenizer.batch_decode([[t] for t in row]) for row in similarity.topk(k, dim=-1).indices.tolist()]


def typical_ranked_by_probability(logits, mass):
    probs = logits.softmax(-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    remove = (sorted_probs.cumsum(-1) - sorted_probs) >= mass
    return logits.masked_fill(remove.scatter(-1, order, remove), -torch.inf)


def typical_without_the_token_that_crosses(logits, mass):
    log_probs = logits.log_softmax(-1)
    entropy = -(log_probs.exp() * log_probs).nansum(-1, keepdim=True)
    _, order = (-log_probs - entropy).abs().sort(dim=-1)
    remove = log_probs.exp().gather(-1, order).cumsum(-1) >= mass
    return logits.masked_fill(remove.scatter(-1, order, remove), -torch.inf)


def typical_ranked_the_wrong_way(logits, mass):
    log_probs = logits.log_softmax(-1)
    entropy = -(log_probs.exp() * log_probs).nansum(-1, keepdim=True)
    _, order = (-log_probs - entropy).abs().sort(dim=-1, descending=True)
    sorted_probs = log_probs.exp().gather(-1, order)
    remove = (sorted_probs.cumsum(-1) - sorted_probs) >= mass
    return logits.masked_fill(remove.scatter(-1, order, remove), -torch.inf)


def typical_row_by_row(logits, mass):
    rows = []
    for row in logits:
        probs = row.softmax(-1)
        surprise = -torch.log(probs)
        entropy = (probs[probs > 0] * surprise[probs > 0]).sum()
        distance = (surprise - entropy).abs()
        kept, total = [], 0.0
        for token in distance.argsort(stable=True).tolist():
            if total >= mass:
                break
            kept.append(token)
            total += probs[token].item()
        threshold = distance[kept[-1]]
        rows.append(row.masked_fill(distance > threshold, -torch.inf))
    return torch.stack(rows)


# --------------------------------------------------------------------------------------------- 2
def labels_on_the_padding_too(input_ids, prompt_lengths, attention_mask):
    positions = torch.arange(input_ids.shape[1])
    return input_ids.masked_fill(positions[None] < prompt_lengths[:, None], IGNORE_INDEX)


def labels_one_past_the_prompt(input_ids, prompt_lengths, attention_mask):
    positions = torch.arange(input_ids.shape[1])
    return input_ids.masked_fill((positions[None] <= prompt_lengths[:, None]) | (attention_mask == 0), IGNORE_INDEX)


def labels_ignored_with_zero(input_ids, prompt_lengths, attention_mask):
    positions = torch.arange(input_ids.shape[1])
    return input_ids.masked_fill((positions[None] < prompt_lengths[:, None]) | (attention_mask == 0), 0)


def labels_row_by_row(input_ids, prompt_lengths, attention_mask):
    labels = input_ids.clone()
    for row, length in enumerate(prompt_lengths.tolist()):
        labels[row, :length] = IGNORE_INDEX
    labels[attention_mask == 0] = IGNORE_INDEX
    return labels


def lora_without_scaling(layer, x, lora_A, lora_B, scaling):
    return layer(x) + x @ lora_A.T @ lora_B.T


def lora_scaling_the_whole_output(layer, x, lora_A, lora_B, scaling):
    return (layer(x) + x @ lora_A.T @ lora_B.T) * scaling


def lora_without_the_layer(layer, x, lora_A, lora_B, scaling):
    return x @ lora_A.T @ lora_B.T * scaling


def lora_with_a_merged_matrix(layer, x, lora_A, lora_B, scaling):
    return layer(x) + scaling * einops.einsum(x, lora_B @ lora_A, "... d_in, d_out d_in -> ... d_out")


def merged_without_the_conv1d_transpose(layer, lora_A, lora_B, scaling):
    return layer.weight + scaling * (lora_B @ lora_A)


def merged_without_scaling(layer, lora_A, lora_B, scaling):
    delta = lora_B @ lora_A
    return layer.weight + (delta.T if isinstance(layer, Conv1D) else delta)


def merged_delta_only(layer, lora_A, lora_B, scaling):
    delta = scaling * lora_B @ lora_A
    return delta.T if isinstance(layer, Conv1D) else delta


def merged_with_einsum_in_the_layer_layout(layer, lora_A, lora_B, scaling):
    layout = "d_in d_out" if isinstance(layer, Conv1D) else "d_out d_in"
    return layer.weight + scaling * einops.einsum(lora_A, lora_B, f"r d_in, d_out r -> {layout}")


def _wrap(model, names, r, alpha, seed):
    generator = torch.Generator().manual_seed(seed)
    for name in names:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, LoRALinear(model.get_submodule(name), r, alpha, generator=generator))
    return names


def add_lora_by_plain_suffix(model, target_modules, r, alpha, seed=0):
    names = [n for n in linear_module_names(model) if any(n.endswith(t) for t in target_modules)]
    model.requires_grad_(False)
    return _wrap(model, names, r, alpha, seed)


def add_lora_without_freezing(model, target_modules, r, alpha, seed=0):
    names = [n for n in linear_module_names(model) if any(n == t or n.endswith("." + t) for t in target_modules)]
    return _wrap(model, names, r, alpha, seed)


def add_lora_on_the_first_match_only(model, target_modules, r, alpha, seed=0):
    names = [next(n for n in linear_module_names(model) if n.endswith("." + t)) for t in target_modules]
    model.requires_grad_(False)
    return _wrap(model, names, r, alpha, seed)


def add_lora_with_named_modules(model, target_modules, r, alpha, seed=0):
    for parameter in model.parameters():
        parameter.requires_grad = False
    chosen = [(name, module) for name, module in model.named_modules() if isinstance(module, (torch.nn.Linear, Conv1D))
              and any(name.split(".")[-len(t.split(".")):] == t.split(".") for t in target_modules)]
    generator = torch.Generator().manual_seed(seed)
    for name, module in chosen:
        model.set_submodule(name, LoRALinear(module, r, alpha, generator=generator))
    return [name for name, _ in chosen]


def _matching(model, target_modules):
    return [model.get_submodule(n) for n in linear_module_names(model)
            if any(n == t or n.endswith("." + t) for t in target_modules)]


def count_by_plain_suffix(model, target_modules, r):
    layers = [model.get_submodule(n) for n in linear_module_names(model) if any(n.endswith(t) for t in target_modules)]
    return sum(r * sum(layer.weight.shape) for layer in layers)


def count_of_a_only(model, target_modules, r):
    return sum(r * (layer.weight.shape[0] if isinstance(layer, Conv1D) else layer.weight.shape[1])
               for layer in _matching(model, target_modules))


def count_of_the_full_weights(model, target_modules, r):
    return sum(layer.weight.numel() for layer in _matching(model, target_modules))


def count_by_adding_lora_to_a_copy(model, target_modules, r):
    adapted = copy.deepcopy(model)
    add_lora(adapted, target_modules, r=r)
    return count_parameters(adapted)[0]


def step_without_clearing_the_gradients(model, rows, optimizer):
    loss = model(input_ids=rows.input_ids, attention_mask=rows.attention_mask, labels=rows.labels).loss
    loss.backward()
    optimizer.step()
    return loss.item()


def step_on_every_token(model, rows, optimizer):
    loss = model(input_ids=rows.input_ids, attention_mask=rows.attention_mask, labels=rows.input_ids).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def step_that_reports_the_loss_after_the_update(model, rows, optimizer):
    def loss_now():
        return model(input_ids=rows.input_ids, attention_mask=rows.attention_mask, labels=rows.labels).loss
    optimizer.zero_grad()
    loss_now().backward()
    optimizer.step()
    with torch.no_grad():
        return loss_now().item()


def step_with_the_loss_by_hand(model, rows, optimizer):
    logits = model(input_ids=rows.input_ids, attention_mask=rows.attention_mask).logits
    loss = F.cross_entropy(einops.rearrange(logits[:, :-1], "b s v -> (b s) v"), rows.labels[:, 1:].flatten(),
                           ignore_index=IGNORE_INDEX)
    for parameter in model.parameters():
        parameter.grad = None
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def state_dict_sharing_the_parameters(model):
    return {f"base_model.model.{n}.lora_{w}.weight": getattr(m, f"lora_{w}") for n, m in lora_modules(model).items()
            for w in "AB"}


def state_dict_without_the_peft_prefix(model):
    return {f"{n}.lora_{w}.weight": getattr(m, f"lora_{w}").detach().clone() for n, m in lora_modules(model).items()
            for w in "AB"}


def state_dict_of_every_trainable_parameter_and_the_base(model):
    return {f"base_model.model.{name}": p.detach().clone() for name, p in model.named_parameters()}


def state_dict_from_named_parameters(model):
    return {f"base_model.model.{name.replace('lora_A', 'lora_A.weight').replace('lora_B', 'lora_B.weight')}":
            p.detach().clone() for name, p in model.named_parameters() if ".lora_" in name}


def corpus_loss_as_the_mean_of_document_means(logits, sequences):
    means = [F.cross_entropy(row[:-1], torch.tensor(seq[1:])).item() for row, seq in zip(logits, sequences)]
    return sum(means) / len(means)


def corpus_loss_without_the_shift(logits, sequences):
    total = sum(F.cross_entropy(row, torch.tensor(seq), reduction="sum").item() for row, seq in zip(logits, sequences))
    return total / sum(len(seq) for seq in sequences)


def corpus_loss_over_every_position(logits, sequences):
    total = sum(F.cross_entropy(row[:-1], torch.tensor(seq[1:]), reduction="sum").item()
                for row, seq in zip(logits, sequences))
    return total / sum(len(seq) for seq in sequences)


def corpus_loss_from_log_softmax(logits, sequences):
    log_probs = [row.log_softmax(-1)[torch.arange(len(seq) - 1), seq[1:]] for row, seq in zip(logits, sequences)]
    return -torch.cat(log_probs).mean().item()


def merge_normalising_the_weights(vectors, weights):
    total = sum(weights)
    return {name: sum(w / total * v[name] for w, v in zip(weights, vectors)) for name in vectors[0]}


def merge_ignoring_the_weights(vectors, weights):
    return {name: sum(v[name] for v in vectors) for name in vectors[0]}


def merge_of_the_first_two_only(vectors, weights):
    return {name: weights[0] * vectors[0][name] + weights[1] * vectors[1][name] for name in vectors[0]}


def merge_by_stacking(vectors, weights):
    w = torch.tensor(weights)
    return {name: einops.einsum(w, torch.stack([v[name] for v in vectors]), "n, n ... -> ...") for name in vectors[0]}


def slerp_as_linear_interpolation(a, b, t):
    return (1 - t) * a + t * b


def slerp_of_the_raw_vectors(a, b, t):
    a_flat, b_flat = a.flatten(), b.flatten()
    cos = (a_flat @ b_flat / (a_flat.norm() * b_flat.norm())).clamp(-1, 1)
    if cos.abs() > 0.9995:
        return torch.lerp(a, b, t)
    theta = torch.arccos(cos)
    return ((torch.sin((1 - t) * theta) * a_flat + torch.sin(t * theta) * b_flat) / torch.sin(theta)).reshape(a.shape)


def slerp_with_the_weights_swapped(a, b, t):
    a_flat, b_flat = a.flatten(), b.flatten()
    a_unit, b_unit = a_flat / a_flat.norm(), b_flat / b_flat.norm()
    cos = (a_unit @ b_unit).clamp(-1, 1)
    if cos.abs() > 0.9995:
        return torch.lerp(a, b, t)
    theta = torch.arccos(cos)
    direction = (torch.sin(t * theta) * a_unit + torch.sin((1 - t) * theta) * b_unit) / torch.sin(theta)
    return (((1 - t) * a_flat.norm() + t * b_flat.norm()) * direction).reshape(a.shape)


def slerp_with_atan2(a, b, t):
    a_unit, b_unit = a.flatten() / a.norm(), b.flatten() / b.norm()
    if (a_unit @ b_unit).abs() > 0.9995:
        return torch.lerp(a, b, t)
    theta = 2 * torch.atan2((a_unit - b_unit).norm(), (a_unit + b_unit).norm())   # the angle, robustly
    direction = (torch.sin((1 - t) * theta) * a_unit + torch.sin(t * theta) * b_unit) / torch.sin(theta)
    return (torch.lerp(a.norm(), b.norm(), t) * direction).reshape(a.shape)


def cosine_averaged_over_modules(a, b):
    cosines = [F.cosine_similarity(a[n].flatten(), b[n].flatten(), dim=0).item() for n in a]
    return sum(cosines) / len(cosines)


def cosine_of_the_first_module(a, b):
    name = next(iter(a))
    return F.cosine_similarity(a[name].flatten(), b[name].flatten(), dim=0).item()


def cosine_as_a_dot_product(a, b):
    return sum((a[n] * b[n]).sum() for n in a).item()


def cosine_from_norms(a, b):
    dot = sum(float((a[n] * b[n]).sum()) for n in a)
    norm_a = math.sqrt(sum(float((a[n] ** 2).sum()) for n in a))
    norm_b = math.sqrt(sum(float((b[n] ** 2).sum()) for n in a))
    return dot / (norm_a * norm_b)


def load_without_checking_the_keys(model, state_dict):
    with torch.no_grad():
        for name, layer in lora_modules(model).items():
            for which in "AB":
                key = f"base_model.model.{name}.lora_{which}.weight"
                if key in state_dict:
                    getattr(layer, f"lora_{which}").copy_(state_dict[key])


def load_that_copies_before_checking(model, state_dict):
    with torch.no_grad():
        for name, layer in lora_modules(model).items():
            for which in "AB":
                getattr(layer, f"lora_{which}").copy_(state_dict[f"base_model.model.{name}.lora_{which}.weight"])


def load_that_replaces_the_parameters(model, state_dict):
    for name, layer in lora_modules(model).items():
        for which in "AB":
            tensor = state_dict[f"base_model.model.{name}.lora_{which}.weight"]
            if tensor.shape != getattr(layer, f"lora_{which}").shape:
                raise ValueError(name)
    for name, layer in lora_modules(model).items():
        for which in "AB":
            setattr(layer, f"lora_{which}", torch.nn.Parameter(torch.zeros_like(
                state_dict[f"base_model.model.{name}.lora_{which}.weight"])))


def load_with_load_state_dict(model, state_dict):
    own = {f"base_model.model.{n}.lora_{w}.weight": (m, f"lora_{w}") for n, m in lora_modules(model).items()
           for w in "AB"}
    if own.keys() != state_dict.keys():
        raise ValueError("keys differ")
    for key, (module, attribute) in own.items():
        if getattr(module, attribute).shape != state_dict[key].shape:
            raise ValueError(key)
    for key, (module, attribute) in own.items():
        module.load_state_dict({attribute: state_dict[key]}, strict=False)


# --------------------------------------------------------------------------------------------- 3
def _hooked_block(model, input_ids, block, pre: bool = False):
    captured = []
    handle = (block.register_forward_pre_hook(lambda module, args: captured.append(args[0])) if pre else
              block.register_forward_hook(lambda module, args, output: captured.append(output)))
    try:
        with torch.no_grad():
            model(input_ids)
    finally:
        handle.remove()
    return captured[0][0] if isinstance(captured[0], tuple) else captured[0]


def residual_before_the_block(model, input_ids, layer):
    return _hooked_block(model, input_ids, architecture.blocks(model)[layer], pre=True)


def residual_of_the_block_before(model, input_ids, layer):
    return _hooked_block(model, input_ids, architecture.blocks(model)[max(layer - 1, 0) if layer else 1])


def residual_from_hidden_states_at_layer(model, input_ids, layer):
    with torch.no_grad():
        return model(input_ids, output_hidden_states=True).hidden_states[layer]


class _Recorder:
    """A forward hook that keeps the block's output."""

    def __init__(self) -> None:
        self.output = None

    def __call__(self, module, args, kwargs, output) -> None:
        self.output = output[0] if isinstance(output, tuple) else output


def residual_with_a_hook_object(model, input_ids, layer):
    recorder = _Recorder()
    handle = architecture.blocks(model)[layer].register_forward_hook(recorder, with_kwargs=True)
    try:
        with torch.no_grad():
            model(input_ids)
    finally:
        handle.remove()
    return recorder.output


def previous_token_on_the_main_diagonal(pattern):
    return pattern.diagonal(dim1=-2, dim2=-1).mean(dim=(0, 2))


def previous_token_looking_forward(pattern):
    return pattern.diagonal(offset=1, dim1=-2, dim2=-1).mean(dim=(0, 2))


def previous_token_summed(pattern):
    return pattern.diagonal(offset=-1, dim1=-2, dim2=-1).sum(dim=(0, 2))


def previous_token_in_a_loop(pattern):
    positions = pattern.shape[-1]
    return torch.stack([pattern[:, :, query, query - 1] for query in range(1, positions)], dim=-1).mean(dim=(0, 2))


def induction_to_the_first_occurrence(pattern, length):
    queries = torch.arange(length + 1, 2 * length + 1)
    return pattern[..., queries, queries - length].mean(dim=(0, 2))


def induction_one_query_early(pattern, length):
    queries = torch.arange(length, 2 * length)
    return pattern[..., queries, queries - length + 1].mean(dim=(0, 2))


def induction_one_query_too_many(pattern, length):
    queries = torch.arange(length, pattern.shape[-1])
    return pattern[..., queries, queries - length + 1].mean(dim=(0, 2))


def induction_in_a_loop(pattern, length):
    scores = [pattern[:, :, length + i, i + 1] for i in range(1, length + 1)]
    return torch.stack(scores).mean(dim=(0, 1))


def shards_in_one_file(model, windows, layer, directory, shard_rows=1024, batch_size=8):
    return cache_to_shards(model, windows, layer, directory, shard_rows=10**9, batch_size=batch_size)


def shards_keeping_bos(model, windows, layer, directory, shard_rows=1024, batch_size=8):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rows = torch.cat([block_output(model, batch, layer, model.config.bos_token_id).flatten(0, 1)
                      for batch in windows.split(batch_size)])
    for i, shard in enumerate(rows.split(shard_rows)):
        save_file({"activations": shard.contiguous()}, str(directory / f"shard_{i:05d}.safetensors"))
    return len(rows)


def shards_of_the_layer_before(model, windows, layer, directory, shard_rows=1024, batch_size=8):
    return cache_to_shards(model, windows, max(layer - 1, 0) if layer else 1, directory, shard_rows, batch_size)


def shards_from_a_list_of_chunks(model, windows, layer, directory, shard_rows=1024, batch_size=8):
    directory, bos = Path(directory), model.config.bos_token_id
    directory.mkdir(parents=True, exist_ok=True)
    chunks, pending, written = [], 0, 0

    def flush(rows: torch.Tensor) -> None:
        nonlocal written
        save_file({"activations": rows.contiguous()}, str(directory / f"shard_{written // shard_rows:05d}.safetensors"))
        written += len(rows)

    for batch in windows.split(batch_size):
        chunks.append(block_output(model, batch, layer, bos)[batch != bos])
        pending += len(chunks[-1])
        while pending >= shard_rows:
            rows = torch.cat(chunks)
            flush(rows[:shard_rows])
            chunks, pending = [rows[shard_rows:]], pending - shard_rows
    if pending:
        flush(torch.cat(chunks))
    return written



def _path_module(block, path):
    for name in path.split("."):
        block = getattr(block, name)
    return block


def site_read_from_the_block_input(tl_model, input_ids, site):
    kind, layer = site.split(".")
    _, cache = tl_model.run_with_cache(input_ids)
    return cache[f"blocks.{layer}.hook_resid_pre"]


def site_with_the_pattern_at_block_level(tl_model, input_ids, site):
    kind, layer = site.split(".")
    name = f"blocks.{layer}.hook_{kind}"
    _, cache = tl_model.run_with_cache(input_ids)
    return cache[name] if name in cache else cache[f"blocks.{layer}.attn.hook_attn_scores"]


def site_of_the_next_layer(tl_model, input_ids, site):
    kind, layer = site.split(".")
    hooks = {"resid_pre": "hook_resid_pre", "resid_post": "hook_resid_post", "attn_out": "hook_attn_out",
             "mlp_out": "hook_mlp_out", "pattern": "attn.hook_pattern"}
    layer = min(int(layer) + 1, tl_model.cfg.n_layers - 1)
    _, cache = tl_model.run_with_cache(input_ids)
    return cache[f"blocks.{layer}.{hooks[kind]}"]


def site_with_a_filter_function(tl_model, input_ids, site):
    kind, layer = site.split(".")
    suffix = "attn.hook_pattern" if kind == "pattern" else f"hook_{kind}"
    wanted = f"blocks.{layer}.{suffix}"
    _, cache = tl_model.run_with_cache(input_ids, names_filter=lambda name: name == wanted)
    return cache[wanted]


def nnsight_block_input_for_the_mlp(nn_model, input_ids, layer):
    with torch.no_grad(), nn_model.trace(input_ids):
        block = architecture.blocks(nn_model)[layer]
        block_in = block.input.save()
        block_out = block.output.save()
    return block_in, block_out


def nnsight_outputs_swapped(nn_model, input_ids, layer):
    with torch.no_grad(), nn_model.trace(input_ids):
        block = architecture.blocks(nn_model)[layer]
        mlp_out = block.mlp.output.save()
        block_out = block.output.save()
    return block_out, mlp_out


def nnsight_attention_for_the_mlp(nn_model, input_ids, layer):
    with torch.no_grad(), nn_model.trace(input_ids):
        block = architecture.blocks(nn_model)[layer]
        attention_out = getattr(block, ATTENTION[architecture.model_type(nn_model)]).output[0].save()
        block_out = block.output.save()
    return attention_out, block_out


def nnsight_two_traces(nn_model, input_ids, layer):
    with torch.no_grad():
        with nn_model.trace(input_ids):
            mlp_out = architecture.blocks(nn_model)[layer].mlp.output.save()
        with nn_model.trace(input_ids):
            block_out = architecture.blocks(nn_model)[layer].output.save()
    return mlp_out, block_out


def _projection_and_columns(model, layer, head):
    projection = architecture.block_part(model, layer, ATTENTION_OUTPUT_PROJECTION)
    d_head = model.config.hidden_size // model.config.num_attention_heads
    return projection, slice(head * d_head, (head + 1) * d_head)


@contextlib.contextmanager
def ablation_without_finally(model, layer, head, how="zero", mean_over=None):
    projection, columns = _projection_and_columns(model, layer, head)
    replacement = 0.0
    if how == "mean":
        seen = []
        reader = projection.register_forward_pre_hook(lambda module, args: seen.append(args[0][..., columns]))
        model(mean_over)
        reader.remove()
        replacement = seen[0].mean(dim=(0, 1))

    def edit(module, args):
        heads = args[0].clone()
        heads[..., columns] = replacement
        return (heads, *args[1:])

    handle = projection.register_forward_pre_hook(edit)
    yield model
    handle.remove()


@contextlib.contextmanager
def ablation_with_the_mean_per_position(model, layer, head, how="zero", mean_over=None):
    projection, columns = _projection_and_columns(model, layer, head)
    replacement = 0.0
    if how == "mean":
        seen = []
        reader = projection.register_forward_pre_hook(lambda module, args: seen.append(args[0][..., columns]))
        try:
            model(mean_over)
        finally:
            reader.remove()
        replacement = seen[0].mean(dim=(0, 1, 2))

    def edit(module, args):
        heads = args[0].clone()
        heads[..., columns] = replacement
        return (heads, *args[1:])

    handle = projection.register_forward_pre_hook(edit)
    try:
        yield model
    finally:
        handle.remove()


@contextlib.contextmanager
def ablation_of_the_projection_output(model, layer, head, how="zero", mean_over=None):
    projection, columns = _projection_and_columns(model, layer, head)

    def edit(module, args, output):
        output = output.clone()
        output[..., columns] = 0.0
        return output

    handle = projection.register_forward_hook(edit)
    try:
        yield model
    finally:
        handle.remove()


@contextlib.contextmanager
def ablation_with_the_hooks_library(model, layer, head, how="zero", mean_over=None):
    projection, columns = _projection_and_columns(model, layer, head)
    replacement = None
    if how == "mean":
        replacement = head_outputs(model, mean_over, layer)[:, :, head].mean(dim=(0, 1))

    def edit(module, args):
        heads = einops.rearrange(args[0], "b p (h d) -> b p h d", h=model.config.num_attention_heads).clone()
        heads[:, :, head] = 0.0 if replacement is None else replacement
        return (einops.rearrange(heads, "b p h d -> b p (h d)"),)

    with contextlib.ExitStack() as stack:
        handle = projection.register_forward_pre_hook(edit)
        stack.callback(handle.remove)
        yield model


def tl_ablation_always_to_zero(tl_model, layer, head, how="zero", mean_over=None):
    name = f"blocks.{layer}.attn.hook_z"

    def edit(z, hook):
        z = z.clone()
        z[:, :, head] = 0.0
        return z
    return [(name, edit)]


def tl_ablation_of_the_wrong_axis(tl_model, layer, head, how="zero", mean_over=None):
    name = f"blocks.{layer}.attn.hook_z"
    replacement = 0.0
    if how == "mean":
        _, cache = tl_model.run_with_cache(mean_over, names_filter=[name])
        replacement = cache[name][:, :, head].mean(dim=(0, 1))

    def edit(z, hook):
        z = z.clone()
        z[:, :, :, head] = replacement if isinstance(replacement, float) else replacement[head]
        return z
    return [(name, edit)]


def tl_ablation_of_the_attention_output(tl_model, layer, head, how="zero", mean_over=None):
    name = f"blocks.{layer}.hook_attn_out"
    return [(name, lambda out, hook: torch.zeros_like(out))]


def tl_ablation_with_a_filter_function(tl_model, layer, head, how="zero", mean_over=None):
    z_name = f"blocks.{layer}.attn.hook_z"
    replacement = 0.0
    if how == "mean":
        _, cache = tl_model.run_with_cache(mean_over, names_filter=lambda n: n == z_name)
        replacement = cache[z_name][:, :, head].mean(dim=(0, 1))

    def edit(z, hook):
        out = torch.clone(z)
        out[..., head, :] = replacement
        return out
    return [(z_name, edit)]


def nnsight_ablation_without_labels(nn_model, input_ids, layer, head, how="zero", mean_over=None):
    config = architecture.unwrap(nn_model).config
    d_head = config.hidden_size // config.num_attention_heads
    columns = slice(head * d_head, (head + 1) * d_head)
    projection = _path_module(architecture.blocks(nn_model)[layer], ATTENTION_OUTPUT_PROJECTION[architecture.model_type(nn_model)])
    with torch.no_grad(), nn_model.trace(input_ids):
        projection.input[..., columns] = 0.0
        logits = nn_model.output.logits.save()
    return float(F.cross_entropy(logits[:, :-1].flatten(0, 1), input_ids[:, 1:].flatten()))


def nnsight_ablation_of_the_whole_layer(nn_model, input_ids, layer, head, how="zero", mean_over=None):
    projection = _path_module(architecture.blocks(nn_model)[layer], ATTENTION_OUTPUT_PROJECTION[architecture.model_type(nn_model)])
    replacement = 0.0
    with torch.no_grad():
        if how == "mean":
            with nn_model.trace(mean_over):
                heads = projection.input.save()
            replacement = heads.mean(dim=(0, 1))
        with nn_model.trace(input_ids, labels=input_ids):
            projection.input[...] = replacement
            loss = nn_model.output.loss.save()
    return float(loss)


def nnsight_ablation_with_the_mean_of_the_inputs(nn_model, input_ids, layer, head, how="zero", mean_over=None):
    config = architecture.unwrap(nn_model).config
    d_head = config.hidden_size // config.num_attention_heads
    columns = slice(head * d_head, (head + 1) * d_head)
    projection = _path_module(architecture.blocks(nn_model)[layer], ATTENTION_OUTPUT_PROJECTION[architecture.model_type(nn_model)])
    replacement = 0.0
    with torch.no_grad():
        if how == "mean":
            with nn_model.trace(input_ids):
                heads = projection.input.save()
            replacement = heads[..., columns].mean(dim=(0, 1))
        with nn_model.trace(input_ids, labels=input_ids):
            projection.input[..., columns] = replacement
            loss = nn_model.output.loss.save()
    return float(loss)


def nnsight_ablation_with_a_zero_mask(nn_model, input_ids, layer, head, how="zero", mean_over=None):
    config = architecture.unwrap(nn_model).config
    n_heads = config.num_attention_heads
    projection = _path_module(architecture.blocks(nn_model)[layer], ATTENTION_OUTPUT_PROJECTION[architecture.model_type(nn_model)])
    keep = torch.ones(n_heads, config.hidden_size // n_heads)
    keep[head] = 0
    keep = keep.flatten()
    replacement = torch.zeros(config.hidden_size)
    with torch.no_grad():
        if how == "mean":
            with nn_model.trace(mean_over):
                heads = projection.input.save()
            replacement = heads.mean(dim=(0, 1)) * (1 - keep)
        with nn_model.trace(input_ids, labels=input_ids):
            projection.input[:] = projection.input * keep + replacement
            loss = nn_model.output.loss.save()
    return loss.item()


def pattern_from_unrotated_queries(cache, layer):
    q, k = cache[f"blocks.{layer}.attn.hook_q"], cache[f"blocks.{layer}.attn.hook_k"]
    k = k.repeat_interleave(q.shape[2] // k.shape[2], dim=2)
    scores = einops.einsum(q, k, "b q h d, b k h d -> b h q k") / q.shape[-1] ** 0.5
    return scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)


def pattern_with_the_key_heads_tiled(cache, layer):
    name = f"blocks.{layer}.attn.hook_"
    q = cache[name + "rot_q"] if name + "rot_q" in cache else cache[name + "q"]
    k = cache[name + "rot_k"] if name + "rot_k" in cache else cache[name + "k"]
    k = k.repeat(1, 1, q.shape[2] // k.shape[2], 1)
    scores = einops.einsum(q, k, "b q h d, b k h d -> b h q k") / q.shape[-1] ** 0.5
    return scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)


def pattern_normalised_over_the_queries(cache, layer):
    name = f"blocks.{layer}.attn.hook_"
    q = cache[name + "rot_q"] if name + "rot_q" in cache else cache[name + "q"]
    k = cache[name + "rot_k"] if name + "rot_k" in cache else cache[name + "k"]
    k = k.repeat_interleave(q.shape[2] // k.shape[2], dim=2)
    scores = einops.einsum(q, k, "b q h d, b k h d -> b h q k") / q.shape[-1] ** 0.5
    return scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf")).softmax(-2).nan_to_num()


def pattern_with_sdpa_style_additive_mask(cache, layer):
    name = f"blocks.{layer}.attn.hook_"
    q = cache.get(name + "rot_q", cache.get(name + "q"))
    k = cache.get(name + "rot_k", cache.get(name + "k"))
    q, k = q.transpose(1, 2), k.transpose(1, 2).repeat_interleave(q.shape[2] // k.shape[2], dim=1)
    pos = q.shape[2]
    mask = torch.full((pos, pos), float("-inf")).triu(1)
    return (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + mask).softmax(dim=-1)


def sequences_with_the_global_random_state(pool, n, length, bos, seed=0):
    copies = pool[torch.randint(len(pool), (n, length))]
    return torch.cat([torch.full((n, 1), bos, dtype=copies.dtype), copies, copies], dim=1)


def sequences_without_bos(pool, n, length, bos, seed=0):
    generator = torch.Generator().manual_seed(seed)
    copies = pool[torch.randint(len(pool), (n, length), generator=generator)]
    return torch.cat([copies[:, :1], copies, copies], dim=1)


def sequences_of_pool_indices(pool, n, length, bos, seed=0):
    generator = torch.Generator().manual_seed(seed)
    copies = torch.randint(len(pool), (n, length), generator=generator)
    return torch.cat([torch.full((n, 1), bos), copies, copies], dim=1)


def sequences_with_einops_repeat(pool, n, length, bos, seed=0):
    indices = torch.randint(len(pool), (n, length), generator=torch.Generator().manual_seed(seed))
    twice = einops.repeat(pool[indices], "n l -> n (copy l)", copy=2)
    return torch.cat([torch.full_like(twice[:, :1], bos), twice], dim=-1)


def copies_with_their_first_tokens(losses, length):
    return losses[:, :length].mean().item(), losses[:, length:].mean().item()


def copies_one_token_late(losses, length):
    return losses[:, 2:length + 1].mean().item(), losses[:, length + 2:].mean().item()


def copies_as_tensors(losses, length):
    return losses[:, 1:length].mean(), losses[:, length + 1:].mean()


def copies_with_a_mask(losses, length):
    position = torch.arange(losses.shape[1])
    first = (position >= 1) & (position < length)
    second = position >= length + 1
    return float(losses[:, first].mean()), float(losses[:, second].mean())


def ablating_only_the_first_head(model, tokens, length, heads, how="zero", mean_over=None):
    if not heads:
        return losses_by_copy(token_losses(model, tokens), length)
    with ablate_head(model, *heads[0], how, mean_over):
        return losses_by_copy(token_losses(model, tokens), length)


def ablating_the_heads_one_after_another(model, tokens, length, heads, how="zero", mean_over=None):
    result = losses_by_copy(token_losses(model, tokens), length)
    for layer, head in heads:
        with ablate_head(model, layer, head, how, mean_over):
            result = losses_by_copy(token_losses(model, tokens), length)
    return result


def ablating_with_copies_swapped(model, tokens, length, heads, how="zero", mean_over=None):
    with contextlib.ExitStack() as stack:
        for layer, head in heads:
            stack.enter_context(ablate_head(model, layer, head, how, mean_over))
        first, second = losses_by_copy(token_losses(model, tokens), length)
    return second, first


def ablating_with_nested_recursion(model, tokens, length, heads, how="zero", mean_over=None):
    if not heads:
        return losses_by_copy(token_losses(model, tokens), length)
    layer, head = heads[0]
    with ablate_head(model, layer, head, how, mean_over):
        return ablating_with_nested_recursion(model, tokens, length, heads[1:], how, mean_over)


def k_composition_unnormalised(tl_model, earlier, later):
    w_ov = tl_model.W_V[earlier] @ tl_model.W_O[earlier]
    w_qk = tl_model.W_Q[later] @ tl_model.W_K[later].transpose(-1, -2)
    return torch.stack([(ov @ w_qk.transpose(-1, -2)).norm(dim=(-2, -1)) for ov in w_ov]).detach()


def k_composition_as_q_composition(tl_model, earlier, later):
    w_ov = tl_model.W_V[earlier] @ tl_model.W_O[earlier]
    w_qk = tl_model.W_Q[later] @ tl_model.W_K[later].transpose(-1, -2)
    products = torch.stack([(ov @ w_qk).norm(dim=(-2, -1)) for ov in w_ov])
    return (products / (w_ov.norm(dim=(-2, -1))[:, None] * w_qk.norm(dim=(-2, -1))[None, :])).detach()


def k_composition_without_the_output_matrix(tl_model, earlier, later):
    w_v = tl_model.W_V[earlier] @ tl_model.W_V[earlier].transpose(-1, -2)
    w_qk = tl_model.W_Q[later] @ tl_model.W_K[later].transpose(-1, -2)
    products = torch.stack([(v @ w_qk.transpose(-1, -2)).norm(dim=(-2, -1)) for v in w_v])
    return (products / (w_v.norm(dim=(-2, -1))[:, None] * w_qk.norm(dim=(-2, -1))[None, :])).detach()


def k_composition_with_einsum(tl_model, earlier, later):
    with torch.no_grad():
        w_ov = einops.einsum(tl_model.W_V[earlier], tl_model.W_O[earlier], "e d h, e h f -> e d f")
        w_qk = einops.einsum(tl_model.W_Q[later], tl_model.W_K[later], "l d h, l f h -> l d f")
        products = einops.einsum(w_ov, w_qk, "e i j, l k j -> e l i k")
        return einops.reduce(products ** 2, "e l i k -> e l", "sum").sqrt() / torch.outer(
            w_ov.flatten(1).norm(dim=1), w_qk.flatten(1).norm(dim=1))


def composition_of_every_pair_of_layers(tl_model, mode):
    scores = torch.zeros(tl_model.cfg.n_layers, tl_model.cfg.n_heads, tl_model.cfg.n_layers, tl_model.cfg.n_heads)
    ov = (tl_model.W_V @ tl_model.W_O).detach()
    qk = (tl_model.W_Q @ tl_model.W_K.transpose(-1, -2)).detach()
    right = {"Q": qk, "K": qk.transpose(-1, -2), "V": ov}[mode]
    for a in range(tl_model.cfg.n_layers):
        for b in range(tl_model.cfg.n_layers):
            for h in range(tl_model.cfg.n_heads):
                scores[a, h, b] = (ov[a, h] @ right[b]).norm(dim=(-2, -1)) / (ov[a, h].norm() * right[b].norm(dim=(-2, -1)))
    return scores


def composition_with_q_and_k_swapped(tl_model, mode):
    scores = torch.zeros(tl_model.cfg.n_layers, tl_model.cfg.n_heads, tl_model.cfg.n_layers, tl_model.cfg.n_heads)
    ov = (tl_model.W_V @ tl_model.W_O).detach()
    qk = (tl_model.W_Q @ tl_model.W_K.transpose(-1, -2)).detach()
    right = {"K": qk, "Q": qk.transpose(-1, -2), "V": ov}[mode]
    for a in range(tl_model.cfg.n_layers):
        for b in range(a + 1, tl_model.cfg.n_layers):
            for h in range(tl_model.cfg.n_heads):
                scores[a, h, b] = (ov[a, h] @ right[b]).norm(dim=(-2, -1)) / (ov[a, h].norm() * right[b].norm(dim=(-2, -1)))
    return scores


def composition_with_v_read_the_wrong_way(tl_model, mode):
    scores = torch.zeros(tl_model.cfg.n_layers, tl_model.cfg.n_heads, tl_model.cfg.n_layers, tl_model.cfg.n_heads)
    ov = (tl_model.W_V @ tl_model.W_O).detach()
    qk = (tl_model.W_Q @ tl_model.W_K.transpose(-1, -2)).detach()
    for a in range(tl_model.cfg.n_layers):
        for b in range(a + 1, tl_model.cfg.n_layers):
            right = {"Q": qk[b], "K": qk[b].transpose(-1, -2), "V": ov[b]}[mode]
            for h in range(tl_model.cfg.n_heads):
                product = right @ ov[a, h] if mode == "V" else ov[a, h] @ right
                scores[a, h, b] = product.norm(dim=(-2, -1)) / (ov[a, h].norm() * right.norm(dim=(-2, -1)))
    return scores


def composition_from_transformer_lens(tl_model, mode):
    return tl_model.all_composition_scores(mode).detach()


@contextlib.contextmanager
def resample_from_the_first_source_row(model, layer, head, source_ids):
    projection, columns = _projection_and_columns(model, layer, head)
    recorded = []
    reader = projection.register_forward_pre_hook(lambda module, args: recorded.append(args[0][..., columns].clone()))
    try:
        model(source_ids)
    finally:
        reader.remove()

    def edit(module, args):
        heads = args[0].clone()
        heads[..., columns] = recorded[0][:1]
        return (heads, *args[1:])

    handle = projection.register_forward_pre_hook(edit)
    try:
        yield model
    finally:
        handle.remove()


@contextlib.contextmanager
def resample_averaged_over_positions(model, layer, head, source_ids):
    projection, columns = _projection_and_columns(model, layer, head)
    recorded = []
    reader = projection.register_forward_pre_hook(lambda module, args: recorded.append(args[0][..., columns].clone()))
    try:
        model(source_ids)
    finally:
        reader.remove()

    def edit(module, args):
        heads = args[0].clone()
        heads[..., columns] = recorded[0].mean(dim=1, keepdim=True)
        return (heads, *args[1:])

    handle = projection.register_forward_pre_hook(edit)
    try:
        yield model
    finally:
        handle.remove()


@contextlib.contextmanager
def resample_without_finally(model, layer, head, source_ids):
    projection, columns = _projection_and_columns(model, layer, head)
    recorded = []
    reader = projection.register_forward_pre_hook(lambda module, args: recorded.append(args[0][..., columns].clone()))
    model(source_ids)
    reader.remove()

    def edit(module, args):
        heads = args[0].clone()
        heads[..., columns] = recorded[0]
        return (heads, *args[1:])

    handle = projection.register_forward_pre_hook(edit)
    yield model
    handle.remove()


@contextlib.contextmanager
def resample_with_head_outputs(model, layer, head, source_ids):
    source = head_outputs(model, source_ids, layer)[:, :, head]

    def edit(z):
        z = z.clone()
        z[:, :, head] = source
        return z

    with editing_head_outputs(model, layer, edit):
        yield model


# --------------------------------------------------------------------------------------------- 4
def _stack_sites(model):
    return layer_labels(architecture.n_layers(model))            # resid_pre.0, then resid_post of every block


def stack_from_the_hidden_states(model, input_ids):
    return torch.stack(model(input_ids, output_hidden_states=True).hidden_states)


def stack_without_the_embeddings(model, input_ids):
    sites = _stack_sites(model)[1:]
    stream = capture(model, input_ids, sites)
    return torch.stack([stream[site] for site in sites])


def stack_with_the_batch_first(model, input_ids):
    sites = _stack_sites(model)
    stream = capture(model, input_ids, sites)
    return torch.stack([stream[site] for site in sites], dim=1)


def stack_from_the_hidden_states_but_the_last(model, input_ids):
    last = f"resid_post.{architecture.n_layers(model) - 1}"
    hidden = model(input_ids, output_hidden_states=True).hidden_states
    return torch.stack([*hidden[:-1], capture(model, input_ids, [last])[last]])


def positions_as_a_grid(tensor, position):
    return tensor[..., position, :]


def positions_of_the_first_row(tensor, position):
    first = int(torch.as_tensor(position).reshape(-1)[0])
    return tensor[..., first, :]


def positions_one_early(tensor, position):
    batch = tensor.shape[-3]
    return tensor[..., torch.arange(batch), torch.as_tensor(position).expand(batch) - 1, :]


def positions_with_gather(tensor, position):
    batch, _, d = tensor.shape[-3:]
    index = torch.as_tensor(position).expand(batch) % tensor.shape[-2]
    index = index.view(batch, 1, 1).expand(*tensor.shape[:-3], batch, 1, d)
    return tensor.gather(-2, index).squeeze(-2)


def lens_without_the_final_norm(model, residual, position):
    return architecture.unembedding(model)(residual[:, :, position])


def lens_at_the_last_position(model, residual, position):
    return architecture.unembedding(model)(architecture.final_norm(model)(residual[:, :, -1]))


def lens_indexing_the_batch(model, residual, position):
    return architecture.unembedding(model)(architecture.final_norm(model)(residual[:, position]))


def lens_of_every_position_then_one(model, residual, position):
    logits = architecture.unembedding(model)(architecture.final_norm(model)(residual))
    return logits[:, :, position]


def scale_with_the_unbiased_variance(norm, residual):
    if isinstance(norm, torch.nn.LayerNorm):
        return (residual.var(dim=-1, keepdim=True) + norm.eps).sqrt()
    return (residual.pow(2).mean(dim=-1, keepdim=True) + norm.variance_epsilon).sqrt()


def scale_without_eps(norm, residual):
    if isinstance(norm, torch.nn.LayerNorm):
        return residual.var(dim=-1, keepdim=True, unbiased=False).sqrt()
    return residual.pow(2).mean(dim=-1, keepdim=True).sqrt()


def scale_centred_for_every_norm(norm, residual):
    eps = getattr(norm, "eps", getattr(norm, "variance_epsilon", 0.0))
    return (residual.var(dim=-1, keepdim=True, unbiased=False) + eps).sqrt()


def scale_by_hand(norm, residual):
    if isinstance(norm, torch.nn.LayerNorm):
        centred = residual - residual.mean(dim=-1, keepdim=True)
        return 1 / torch.rsqrt((centred * centred).mean(dim=-1, keepdim=True) + norm.eps)
    return 1 / torch.rsqrt((residual * residual).mean(dim=-1, keepdim=True) + norm.variance_epsilon)


def _direction(model, answer, contrast):
    W_U = architecture.unembedding(model).weight
    return W_U[answer] - W_U[contrast]


def heads_split_with_the_head_inside(z, W_O):
    per_head = einops.rearrange(W_O, "(d_head head) d_model -> head d_head d_model", head=z.shape[1])
    return einops.einsum(z, per_head, "batch head d_head, head d_head d_model -> head batch d_model")


def heads_added_up(z, W_O):
    per_head = einops.rearrange(W_O, "(head d_head) d_model -> head d_head d_model", head=z.shape[1])
    return einops.einsum(z, per_head, "batch head d_head, head d_head d_model -> batch d_model")


def heads_with_the_batch_first(z, W_O):
    per_head = einops.rearrange(W_O, "(head d_head) d_model -> head d_head d_model", head=z.shape[1])
    return einops.einsum(z, per_head, "batch head d_head, head d_head d_model -> batch head d_model")


def heads_in_a_loop(z, W_O):
    d_head = z.shape[2]
    return torch.stack([z[:, head] @ W_O[head * d_head:(head + 1) * d_head] for head in range(z.shape[1])])


def contributions_uncentred(model, components, scale, answer, contrast):
    return (components / scale * _direction(model, answer, contrast) * architecture.final_norm(model).weight).sum(-1)


def contributions_without_the_norm_weight(model, components, scale, answer, contrast):
    if isinstance(architecture.final_norm(model), torch.nn.LayerNorm):
        components = components - components.mean(-1, keepdim=True)
    return (components / scale * _direction(model, answer, contrast)).sum(-1)


def contributions_without_the_scale(model, components, scale, answer, contrast):
    if isinstance(architecture.final_norm(model), torch.nn.LayerNorm):
        components = components - components.mean(-1, keepdim=True)
    return (components * _direction(model, answer, contrast) * architecture.final_norm(model).weight).sum(-1)


def contributions_with_einsum(model, components, scale, answer, contrast):
    norm = architecture.final_norm(model)
    centred = components - components.mean(-1, keepdim=True) if isinstance(norm, torch.nn.LayerNorm) else components
    direction = _direction(model, answer, contrast) * norm.weight
    return einops.einsum(centred, direction, "component batch d, batch d -> component batch") / scale.squeeze(-1)


def formation_at_the_first_correct_layer(correct):
    first = correct.long().argmax(0)
    return torch.where(correct.any(0), first, torch.full_like(first, -1))


def formation_as_the_number_of_final_layers(correct):
    return correct.flip(0).long().cumprod(0).sum(0)


def formation_past_the_last_layer_when_never(correct):
    return correct.shape[0] - correct.flip(0).long().cumprod(0).sum(0)


def formation_in_a_loop(correct):
    layers = []
    for column in correct.T.tolist():
        layer = -1
        for index in range(len(column) - 1, -1, -1):
            if not column[index]:
                break
            layer = index
        layers.append(layer)
    return torch.tensor(layers)


def kl_the_other_way_round(lens_logits):
    log_probs = lens_logits.log_softmax(-1)
    return (log_probs.exp() * (log_probs - log_probs[-1])).sum(-1).mean(-1)


def kl_of_logits_not_log_probabilities(lens_logits):
    final = lens_logits[-1]
    return (final.softmax(-1) * (final - lens_logits)).sum(-1).mean(-1)


def kl_summed_over_prompts(lens_logits):
    log_probs = lens_logits.log_softmax(-1)
    return (log_probs[-1].exp() * (log_probs[-1] - log_probs)).sum(-1).sum(-1)


def kl_with_torch_kl_div(lens_logits):
    log_probs = lens_logits.log_softmax(-1)
    final = log_probs[-1].expand_as(log_probs)
    return F.kl_div(log_probs, final, log_target=True, reduction="none").sum(-1).mean(-1)



def agreement_with_the_first_layer(lens_logits):
    top = lens_logits.argmax(dim=-1)
    return (top == top[0]).float().mean(dim=-1)


def agreement_counted_not_averaged(lens_logits):
    top = lens_logits.argmax(dim=-1)
    return (top == top[-1]).float().sum(dim=-1)


def agreement_averaged_over_layers(lens_logits):
    top = lens_logits.argmax(dim=-1)
    return (top == top[-1]).float().mean(dim=0)


def agreement_with_topk(lens_logits):
    top = lens_logits.topk(1, dim=-1).indices.squeeze(-1)
    return torch.stack([(layer == top[-1]).double().mean() for layer in top]).float()


def lens_step_without_clearing_the_gradients(lens, model, residual, optimizer):
    with frozen(model):
        loss = kl_to_final(lens(model, residual)).sum()
        loss.backward()
    optimizer.step()
    return loss.item()


def lens_step_on_the_mean_over_layers(lens, model, residual, optimizer):
    optimizer.zero_grad()
    with frozen(model):
        loss = kl_to_final(lens(model, residual)).mean()
        loss.backward()
    optimizer.step()
    return loss.item()


def lens_step_training_the_model_too(lens, model, residual, optimizer):
    optimizer.zero_grad()
    loss = kl_to_final(lens(model, residual)).sum()
    loss.backward()
    optimizer.step()
    return loss.item()


def lens_step_with_the_kl_by_hand(lens, model, residual, optimizer):
    flags = [parameter.requires_grad for parameter in model.parameters()]
    model.requires_grad_(False)
    log_q = lens(model, residual).log_softmax(-1)                                 # [layer_plus_one, n, vocab]
    log_p = log_q[-1].detach()
    loss = (log_p.exp() * (log_p - log_q)).sum(-1).mean(-1).sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    for parameter, flag in zip(model.parameters(), flags):
        parameter.requires_grad_(flag)
    return float(loss.detach())


def directions_centred_over_each_row(matrix, k, centre=False):
    if centre:
        matrix = matrix - matrix.mean(dim=1, keepdim=True)
    _, values, right = torch.linalg.svd(matrix, full_matrices=False)
    return values[:k], right[:k]


def directions_smallest_first(matrix, k, centre=False):
    if centre:
        matrix = matrix - matrix.mean(dim=0)
    _, values, right = torch.linalg.svd(matrix, full_matrices=False)
    return values[-k:], right[-k:]


def directions_from_the_left_vectors(matrix, k, centre=False):
    if centre:
        matrix = matrix - matrix.mean(dim=0)
    left, values, _ = torch.linalg.svd(matrix, full_matrices=False)
    return values[:k], left[:, :k].T


def directions_from_the_covariance(matrix, k, centre=False):
    matrix = matrix.double()
    if centre:
        matrix = matrix - matrix.mean(dim=0)
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix.T @ matrix)         # ascending
    values, directions = eigenvalues.flip(0)[:k].clamp_min(0).sqrt(), eigenvectors.flip(1)[:, :k].T
    return values.float(), directions.float()


def _written_by_head(model, layer, head, token_ids, normalise=True):
    embeddings = architecture.token_embedding(model)(token_ids)
    if normalise:
        embeddings = architecture.block_part(model, layer, ATTENTION_INPUT_NORM)(embeddings)
    return embeddings @ ov_circuit(model, layer, head)


def ranks_of_the_raw_embedding(model, layer, head, token_ids):
    logits = direction_logits(model, _written_by_head(model, layer, head, token_ids, normalise=False))[:, token_ids]
    return 1 + (logits > logits.diag()[:, None]).sum(-1)


def ranks_over_the_whole_vocabulary(model, layer, head, token_ids):
    logits = direction_logits(model, _written_by_head(model, layer, head, token_ids))
    own = logits[torch.arange(len(token_ids)), token_ids]
    return 1 + (logits > own[:, None]).sum(-1)


def ranks_through_the_transposed_circuit(model, layer, head, token_ids):
    norm = architecture.block_part(model, layer, ATTENTION_INPUT_NORM)
    written = norm(architecture.token_embedding(model)(token_ids)) @ ov_circuit(model, layer, head).T
    logits = direction_logits(model, written)[:, token_ids]
    return 1 + (logits > logits.diag()[:, None]).sum(-1)


def ranks_by_sorting(model, layer, head, token_ids):
    logits = direction_logits(model, _written_by_head(model, layer, head, token_ids))[:, token_ids]
    order = logits.argsort(dim=-1, descending=True)                                # [n, n]: token indices, best first
    return (order == torch.arange(len(token_ids))[:, None]).int().argmax(-1) + 1


def _ratio(eigenvalues):
    return (eigenvalues.real.sum() / eigenvalues.abs().sum()).item()


def _weighted_ends(model, layer):
    w_in = architecture.block_part(model, layer, ATTENTION_INPUT_NORM).weight
    embedding = architecture.token_embedding(model).weight * w_in
    readout = architecture.unembedding(model).weight * architecture.final_norm(model).weight
    return embedding, readout


def score_of_the_ov_circuit_alone(model, layer, head):
    return _ratio(torch.linalg.eigvals(ov_circuit(model, layer, head).double()))


def score_without_the_norm_weights(model, layer, head):
    embedding, readout = architecture.token_embedding(model).weight, architecture.unembedding(model).weight
    return _ratio(torch.linalg.eigvals((ov_circuit(model, layer, head) @ readout.T @ embedding).double()))


def score_from_singular_values(model, layer, head):
    embedding, readout = _weighted_ends(model, layer)
    values = torch.linalg.svdvals((ov_circuit(model, layer, head) @ readout.T @ embedding).double())
    return (values.sum() / values.abs().sum()).item()


def score_from_another_cyclic_order(model, layer, head):
    embedding, readout = _weighted_ends(model, layer)
    return _ratio(torch.linalg.eigvals((readout.T @ embedding @ ov_circuit(model, layer, head)).double()))


def translator_without_a_bias(x, target):
    return torch.linalg.lstsq(x.double(), target.double()).solution.float(), torch.zeros(x.shape[-1])


def translator_the_other_way_round(x, target):
    with_ones = torch.cat([target, torch.ones_like(target[:, :1])], dim=-1)
    solution = torch.linalg.lstsq(with_ones.double(), x.double()).solution.float()
    return solution[:-1], solution[-1]


def translator_reading_the_bias_from_the_first_row(x, target):
    with_ones = torch.cat([x, torch.ones_like(x[:, :1])], dim=-1)
    solution = torch.linalg.lstsq(with_ones.double(), target.double()).solution.float()
    return solution[1:], solution[0]


def translator_from_centred_data(x, target):
    x_mean, target_mean = x.double().mean(0), target.double().mean(0)
    A = torch.linalg.lstsq(x.double() - x_mean, target.double() - target_mean).solution
    return A.float(), (target_mean - x_mean @ A).float()


# --------------------------------------------------------------------------------------------- 5
def _letters(model, tokenizer, pairs, layer):
    matching = last_token_activations(model, tokenizer, [p.matching_text for p in pairs], [layer])[0]
    return matching, last_token_activations(model, tokenizer, [p.non_matching_text for p in pairs], [layer])[0]


def caa_the_wrong_way_round(model, tokenizer, pairs, layer):
    matching, non_matching = _letters(model, tokenizer, pairs, layer)
    return non_matching.mean(0) - matching.mean(0)


def caa_of_the_layer_before(model, tokenizer, pairs, layer):
    matching, non_matching = _letters(model, tokenizer, pairs, max(layer - 1, 0) if layer else 1)
    return matching.mean(0) - non_matching.mean(0)


def caa_summed_over_pairs(model, tokenizer, pairs, layer):
    matching, non_matching = _letters(model, tokenizer, pairs, layer)
    return matching.sum(0) - non_matching.sum(0)


def caa_as_the_mean_of_differences(model, tokenizer, pairs, layer):
    matching, non_matching = _letters(model, tokenizer, pairs, layer)
    return einops.reduce(matching - non_matching, "pair d_model -> d_model", "mean")


def steering_every_position(residual, vector, alpha):
    return residual + alpha * vector


def steering_in_place(residual, vector, alpha):
    residual[:, -1] += alpha * vector
    return residual


def steering_the_first_position(residual, vector, alpha):
    steered = residual.clone()
    steered[:, 0] += alpha * vector
    return steered


def steering_with_cat(residual, vector, alpha):
    return torch.cat([residual[:, :-1], residual[:, -1:] + alpha * vector], dim=1)


def project_out_unnormalised(residual, direction):
    return residual - (residual @ direction)[..., None] * direction


def project_onto_the_direction(residual, direction):
    unit = direction / direction.norm()
    return (residual @ unit)[..., None] * unit


def project_out_of_a_normalised_residual(residual, direction):
    unit, residual = direction / direction.norm(), F.normalize(residual, dim=-1)
    return residual - (residual @ unit)[..., None] * unit


def project_out_with_a_projection_matrix(residual, direction):
    unit = direction / direction.norm()
    return residual @ (torch.eye(len(unit)) - torch.outer(unit, unit))



def rate_as_a_count(texts, name):
    wanted = BEHAVIOURS[name]
    return float(sum(getattr(label_text(text), wanted.trait) == wanted.value for text in texts))


def rate_of_the_sentiment_always(texts, name):
    wanted = BEHAVIOURS[name]
    return sum(label_text(text).sentiment == wanted.value for text in texts) / len(texts)


def rate_of_the_texts_without_it(texts, name):
    wanted = BEHAVIOURS[name]
    return sum(getattr(label_text(text), wanted.trait) != wanted.value for text in texts) / len(texts)


def rate_with_a_counter(texts, name):
    wanted = BEHAVIOURS[name]
    values = Counter(getattr(label_text(text), wanted.trait) for text in texts)
    return values[wanted.value] / sum(values.values())


def pca_of_uncentred_differences(with_behaviour, without):
    differences = with_behaviour - without
    component = torch.linalg.svd(differences, full_matrices=False).Vh[0]
    return component if component @ differences.mean(dim=0) >= 0 else -component


def pca_scaled_by_its_singular_value(with_behaviour, without):
    differences = with_behaviour - without
    _, values, right = torch.linalg.svd(differences - differences.mean(dim=0), full_matrices=False)
    component = values[0] * right[0]
    return component if component @ differences.mean(dim=0) >= 0 else -component


def pca_of_both_sets_pooled(with_behaviour, without):
    pooled = torch.cat([with_behaviour, without])
    component = torch.linalg.svd(pooled - pooled.mean(dim=0), full_matrices=False).Vh[0]
    mean = (with_behaviour - without).mean(dim=0)
    return component if component @ mean >= 0 else -component


def pca_from_the_covariance(with_behaviour, without):
    differences = (with_behaviour - without).double()
    centred = differences - differences.mean(dim=0)
    component = torch.linalg.eigh(centred.T @ centred).eigenvectors[:, -1]
    return (component if component @ differences.mean(dim=0) >= 0 else -component).float()


def actadd_the_wrong_way_round(model, tokenizer, positive_prompt, negative_prompt, layer):
    activations = last_token_activations(model, tokenizer, [positive_prompt, negative_prompt], [layer])[0]
    return activations[1] - activations[0]


def actadd_averaged_over_positions(model, tokenizer, positive_prompt, negative_prompt, layer):
    from utils.directions import mean_token_activations
    activations = mean_token_activations(model, tokenizer, [positive_prompt, negative_prompt], layer)
    return activations[0] - activations[1]


def actadd_of_the_layer_before(model, tokenizer, positive_prompt, negative_prompt, layer):
    site = "resid_pre.0" if layer == 0 else f"resid_post.{layer - 1}"
    ids = [torch.tensor([encode(tokenizer, prompt)]) for prompt in (positive_prompt, negative_prompt)]
    positive, negative = (capture(model, input_ids, [site])[site][0, -1] for input_ids in ids)
    return positive - negative


def actadd_one_prompt_at_a_time(model, tokenizer, positive_prompt, negative_prompt, layer):
    site = f"resid_post.{layer}"
    ids = [torch.tensor([encode(tokenizer, prompt)]) for prompt in (positive_prompt, negative_prompt)]
    positive, negative = (capture(model, input_ids, [site])[site][0, -1] for input_ids in ids)
    return positive - negative


def refusal_of_prompt_and_response(model, tokenizer, harmful, harmless, layer):
    activations = [last_token_activations(model, tokenizer, [e.prompt + " " + e.response for e in examples], [layer])[0]
                   for examples in (harmful, harmless)]
    return activations[0].mean(0) - activations[1].mean(0)


def refusal_the_wrong_way_round(model, tokenizer, harmful, harmless, layer):
    activations = [last_token_activations(model, tokenizer, [e.prompt for e in examples], [layer])[0]
                   for examples in (harmful, harmless)]
    return activations[1].mean(0) - activations[0].mean(0)


def refusal_of_paired_rows(model, tokenizer, harmful, harmless, layer):
    n = min(len(harmful), len(harmless))
    activations = [last_token_activations(model, tokenizer, [e.prompt for e in examples[:n]], [layer])[0]
                   for examples in (harmful, harmless)]
    return (activations[0] - activations[1]).mean(0)


def refusal_with_the_library_mean_difference(model, tokenizer, harmful, harmless, layer):
    from utils.directions import mean_difference_direction
    return mean_difference_direction(*(last_token_activations(model, tokenizer, [e.prompt for e in examples], [layer])[0]
                                       for examples in (harmful, harmless)))


def settings_strength_first(vectors, alphas):
    return [(layer, F.normalize(vectors[layer], dim=0), float(alpha)) for alpha in alphas for layer in range(len(vectors))]


def settings_not_unit(vectors, alphas):
    return [(layer, vectors[layer], float(alpha)) for layer in range(len(vectors)) for alpha in alphas]


def settings_with_the_alphas_sorted(vectors, alphas):
    return [(layer, F.normalize(vectors[layer], dim=0), float(alpha)) for layer in range(len(vectors))
            for alpha in sorted(alphas)]


def settings_with_itertools(vectors, alphas):
    return [(layer, vectors[layer] / vectors[layer].norm(), float(alpha))
            for layer, alpha in itertools.product(range(len(vectors)), alphas)]


def mean_difference_the_wrong_way_round(with_behaviour, without):
    return without.mean(0) - with_behaviour.mean(0)


def mean_difference_normalised(with_behaviour, without):
    return F.normalize(with_behaviour.mean(0) - without.mean(0), dim=0)


def mean_difference_of_the_pooled_means(with_behaviour, without):
    return with_behaviour.mean(0) - torch.cat([with_behaviour, without]).mean(0)


def mean_difference_from_sums(with_behaviour, without):
    return with_behaviour.sum(0) / len(with_behaviour) - without.sum(0) / len(without)


@contextlib.contextmanager
def ablate_after_the_last_block_only(model, direction):
    from utils.directions import project_out
    from utils.hooks import hooks
    with hooks(model, {f"resid_post.{architecture.n_layers(model) - 1}": lambda r: project_out(r, direction)}):
        yield model


@contextlib.contextmanager
def ablate_without_the_embeddings(model, direction):
    from utils.directions import project_out
    from utils.hooks import hooks
    with hooks(model, {site: lambda r: project_out(r, direction) for site in _stack_sites(model)[1:]}):
        yield model


@contextlib.contextmanager
def ablate_along_the_unnormalised_direction(model, direction):
    from utils.hooks import hooks
    with hooks(model, {site: lambda r: r - (r @ direction)[..., None] * direction for site in _stack_sites(model)}):
        yield model


@contextlib.contextmanager
def ablate_with_forward_hooks(model, direction):
    unit = direction / direction.norm()

    def remove(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden - (hidden @ unit)[..., None] * unit
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    def remove_before(module, args):
        return (args[0] - (args[0] @ unit)[..., None] * unit, *args[1:])

    blocks = architecture.blocks(model)
    handles = [blocks[0].register_forward_pre_hook(remove_before)] + [block.register_forward_hook(remove) for block in blocks]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()


def function_vector_the_wrong_way_round(model, tokenizer, few_shot_prompts, zero_shot_prompts, layer):
    few, zero = (last_token_activations(model, tokenizer, list(p), [layer])[0] for p in (few_shot_prompts, zero_shot_prompts))
    return zero.mean(0) - few.mean(0)


def function_vector_without_the_baseline(model, tokenizer, few_shot_prompts, zero_shot_prompts, layer):
    return last_token_activations(model, tokenizer, list(few_shot_prompts), [layer])[0].mean(0)


def function_vector_of_pooled_prompts(model, tokenizer, few_shot_prompts, zero_shot_prompts, layer):
    few, zero = (last_token_activations(model, tokenizer, list(p), [layer])[0] for p in (few_shot_prompts, zero_shot_prompts))
    return few.mean(0) - torch.cat([few, zero]).mean(0)


def function_vector_with_the_library_mean_difference(model, tokenizer, few_shot_prompts, zero_shot_prompts, layer):
    from utils.directions import mean_difference_direction
    return mean_difference_direction(*(last_token_activations(model, tokenizer, list(p), [layer])[0]
                                       for p in (few_shot_prompts, zero_shot_prompts)))


def accuracy_at_threshold_zero(direction, with_behaviour, without):
    correct = (with_behaviour @ direction > 0).sum() + (without @ direction <= 0).sum()
    return (correct / (len(with_behaviour) + len(without))).item()


def accuracy_at_the_pooled_mean(direction, with_behaviour, without):
    threshold = (torch.cat([with_behaviour, without]) @ direction).mean()
    correct = (with_behaviour @ direction > threshold).sum() + (without @ direction <= threshold).sum()
    return (correct / (len(with_behaviour) + len(without))).item()


def accuracy_averaged_over_the_classes(direction, with_behaviour, without):
    threshold = ((with_behaviour @ direction).mean() + (without @ direction).mean()) / 2
    return (((with_behaviour @ direction > threshold).float().mean() + (without @ direction <= threshold).float().mean())
            / 2).item()


def accuracy_with_labels(direction, with_behaviour, without):
    scores = torch.cat([with_behaviour, without]) @ direction
    labels = torch.cat([torch.ones(len(with_behaviour)), torch.zeros(len(without))]).bool()
    threshold = (scores[labels].mean() + scores[~labels].mean()) / 2
    return ((scores > threshold) == labels).float().mean().item()


def variants_tiled(residual, added, everywhere=False):
    per_row = added.repeat(len(residual) // len(added), 1)
    if everywhere:
        return residual + per_row[:, None]
    steered = residual.clone()
    steered[:, -1] += per_row
    return steered


def variants_in_place(residual, added, everywhere=False):
    per_row = added.repeat_interleave(len(residual) // len(added), dim=0)
    if everywhere:
        residual += per_row[:, None]
    else:
        residual[:, -1] += per_row
    return residual


def variants_everywhere_always(residual, added, everywhere=False):
    return residual + added.repeat_interleave(len(residual) // len(added), dim=0)[:, None]


def variants_with_einops(residual, added, everywhere=False):
    per_row = einops.repeat(added, "v d -> (v n) 1 d", n=len(residual) // len(added))
    if everywhere:
        return residual + per_row
    return torch.cat([residual[:, :-1], residual[:, -1:] + per_row], dim=1)


def neutral_loss_steered_at_the_last_position(model, tokenizer, texts, layer, vector, alpha):
    from utils.hooks import hooks
    from utils.steering import add_steering, mean_token_loss
    with hooks(model, {f"resid_post.{layer}": lambda residual: add_steering(residual, vector, alpha)}):
        return mean_token_loss(model, tokenizer, texts)


def neutral_loss_of_the_layer_before(model, tokenizer, texts, layer, vector, alpha):
    from utils.hooks import hooks
    from utils.steering import mean_token_loss
    site = "resid_pre.0" if layer == 0 else f"resid_post.{layer - 1}"
    with hooks(model, {site: lambda residual: residual + alpha * vector}):
        return mean_token_loss(model, tokenizer, texts)


def neutral_loss_of_the_unit_vector(model, tokenizer, texts, layer, vector, alpha):
    from utils.hooks import hooks
    from utils.steering import mean_token_loss
    with hooks(model, {f"resid_post.{layer}": lambda residual: residual + vector}):
        return mean_token_loss(model, tokenizer, texts)


def neutral_loss_with_a_forward_hook(model, tokenizer, texts, layer, vector, alpha):
    from utils.steering import mean_token_loss

    def add(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        return (hidden + alpha * vector, *output[1:]) if isinstance(output, tuple) else hidden + alpha * vector

    handle = architecture.blocks(model)[layer].register_forward_hook(add)
    try:
        return mean_token_loss(model, tokenizer, texts)
    finally:
        handle.remove()

# --------------------------------------------------------------------------------------------- 6
def _sae_latents(pre, k, dim=-1):
    """ReLU, or the k largest along ``dim`` ReLU'd and the rest zeroed."""
    if k is None:
        return pre.relu()
    values, indices = pre.topk(min(k, pre.shape[dim]), dim=dim)
    return torch.zeros_like(pre).scatter(dim, indices, values.relu())


def sae_with_topk_over_the_batch(x, W_enc, b_enc, W_dec, b_dec, k=None):
    latents = _sae_latents((x - b_dec) @ W_enc + b_enc, k, dim=0)
    return latents @ W_dec + b_dec, latents


def sae_ignoring_k(x, W_enc, b_enc, W_dec, b_dec, k=None):
    latents = ((x - b_dec) @ W_enc + b_enc).relu()
    return latents @ W_dec + b_dec, latents


def sae_normalising_the_decoder(x, W_enc, b_enc, W_dec, b_dec, k=None):
    latents = _sae_latents((x - b_dec) @ W_enc + b_enc, k)
    return latents @ F.normalize(W_dec, dim=-1) + b_dec, latents


def sae_with_a_topk_mask(x, W_enc, b_enc, W_dec, b_dec, k=None):
    pre = einops.einsum(x - b_dec, W_enc, "batch d_in, d_in d_sae -> batch d_sae") + b_enc
    keep = torch.ones_like(pre, dtype=torch.bool) if k is None else \
        torch.zeros_like(pre, dtype=torch.bool).scatter(-1, pre.topk(k, dim=-1).indices, True)
    latents = pre.relu() * keep
    return einops.einsum(latents, W_dec, "batch d_sae, d_sae d_in -> batch d_in") + b_dec, latents


def sae_loss_mse_averaged_over_dimensions(x, reconstruction, latents, W_dec, l1_coefficient):
    return F.mse_loss(reconstruction, x) + l1_coefficient * (latents * W_dec.norm(dim=-1)).sum(-1).mean()


def sae_loss_unweighted_l1(x, reconstruction, latents, W_dec, l1_coefficient):
    return (reconstruction - x).pow(2).sum(-1).mean() + l1_coefficient * latents.abs().sum(-1).mean()


def sae_loss_l1_summed_over_the_batch(x, reconstruction, latents, W_dec, l1_coefficient):
    return (reconstruction - x).pow(2).sum(-1).mean() + l1_coefficient * (latents * W_dec.norm(dim=-1)).sum()


def sae_loss_with_einsum(x, reconstruction, latents, W_dec, l1_coefficient):
    batch = len(x)
    sparsity = einops.einsum(latents, W_dec.norm(dim=-1), "batch d_sae, d_sae ->") / batch
    return F.mse_loss(reconstruction, x, reduction="sum") / batch + l1_coefficient * sparsity


def explained_variance_uncentred(x, reconstruction):
    return 1 - (x - reconstruction).pow(2).sum() / x.pow(2).sum()


def explained_variance_per_dimension(x, reconstruction):
    return (1 - (x - reconstruction).pow(2).sum(0) / (x - x.mean(0)).pow(2).sum(0)).mean()


def explained_variance_of_the_reconstruction(x, reconstruction):
    return (reconstruction - reconstruction.mean(0)).pow(2).sum() / (x - x.mean(0)).pow(2).sum()


def explained_variance_with_var(x, reconstruction):
    total = x.var(dim=0, unbiased=False).sum() * len(x)
    return 1 - F.mse_loss(reconstruction, x, reduction="sum") / total


def parallel_component_of_unnormalised_rows(W_dec, grad):
    along = (grad * W_dec).sum(-1, keepdim=True)
    return grad - along * W_dec


def parallel_component_kept(W_dec, grad):
    unit = F.normalize(W_dec, dim=-1)
    return (grad * unit).sum(-1, keepdim=True) * unit


def parallel_component_over_the_latents(W_dec, grad):
    unit = F.normalize(W_dec, dim=0)
    return grad - (grad * unit).sum(0, keepdim=True) * unit


def parallel_component_as_a_projection_matrix(W_dec, grad):
    unit = W_dec / W_dec.norm(dim=-1, keepdim=True)
    projections = torch.eye(W_dec.shape[-1]) - einops.einsum(unit, unit, "sae i, sae j -> sae i j")
    return einops.einsum(projections, grad, "sae i j, sae j -> sae i")


def _sae_step(sae, optimizer, x, l1_coefficient, *, zero_grad=True, project=True, normalise_after=True):
    latents = sae.encode(x)
    reconstruction = sae.decode(latents)
    loss = sae_loss(x, reconstruction, latents, sae.W_dec, l1_coefficient)
    if zero_grad:
        optimizer.zero_grad()
    loss.backward()
    if project:
        sae.remove_parallel_gradient_()
    if not normalise_after:
        sae.normalize_decoder_()
    optimizer.step()
    if normalise_after:
        sae.normalize_decoder_()
    return loss.detach(), reconstruction.detach(), latents.detach()


def sae_step_without_zero_grad(sae, optimizer, x, l1_coefficient):
    return _sae_step(sae, optimizer, x, l1_coefficient, zero_grad=False)


def step_without_the_gradient_projection(sae, optimizer, x, l1_coefficient):
    return _sae_step(sae, optimizer, x, l1_coefficient, project=False)


def step_normalising_before_the_step(sae, optimizer, x, l1_coefficient):
    return _sae_step(sae, optimizer, x, l1_coefficient, normalise_after=False)


def step_returning_tensors_with_their_graph(sae, optimizer, x, l1_coefficient):
    latents = sae.encode(x)
    reconstruction = sae.decode(latents)
    loss = sae_loss(x, reconstruction, latents, sae.W_dec, l1_coefficient)
    optimizer.zero_grad()
    loss.backward()
    sae.remove_parallel_gradient_()
    optimizer.step()
    sae.normalize_decoder_()
    return loss, reconstruction, latents


def step_with_the_forward_module_and_set_to_none(sae, optimizer, x, l1_coefficient):
    optimizer.zero_grad(set_to_none=True)
    latents = sae.encode(x)
    reconstruction = sae(x)
    loss = (reconstruction - x).pow(2).sum(-1).mean() + l1_coefficient * (latents @ sae.W_dec.norm(dim=-1)).mean()
    loss.backward()
    with torch.no_grad():
        unit = sae.W_dec / sae.W_dec.norm(dim=-1, keepdim=True)
        sae.W_dec.grad -= (sae.W_dec.grad * unit).sum(-1, keepdim=True) * unit
    optimizer.step()
    with torch.no_grad():
        sae.W_dec /= sae.W_dec.norm(dim=-1, keepdim=True)
    return loss.detach(), reconstruction.detach(), latents.detach()


def _jumprelu(x, W_enc, b_enc, W_dec, b_dec, latents_of):
    pre = (x - b_dec) @ W_enc + b_enc
    latents = latents_of(pre)
    return latents @ W_dec + b_dec, latents


def jumprelu_without_the_relu(x, W_enc, b_enc, W_dec, b_dec, threshold):
    return _jumprelu(x, W_enc, b_enc, W_dec, b_dec, lambda pre: pre * (pre > threshold))


def jumprelu_shifted_by_the_threshold(x, W_enc, b_enc, W_dec, b_dec, threshold):
    return _jumprelu(x, W_enc, b_enc, W_dec, b_dec, lambda pre: (pre - threshold).relu())


def jumprelu_without_b_dec_before_encoding(x, W_enc, b_enc, W_dec, b_dec, threshold):
    latents = (x @ W_enc + b_enc).relu() * (x @ W_enc + b_enc > threshold)
    return latents @ W_dec + b_dec, latents


def jumprelu_with_where_and_a_heaviside(x, W_enc, b_enc, W_dec, b_dec, threshold):
    pre = einops.einsum(x - b_dec, W_enc, "batch d_in, d_in d_sae -> batch d_sae") + b_enc
    latents = torch.where(pre > threshold, pre, 0.0).clamp_min(0.0)
    return latents @ W_dec + b_dec, latents


def sparsity_with_l0_summed_over_the_tokens(latents, dense_threshold=0.1):
    active = latents > 0
    frequency = active.float().mean(0)
    return float(active.sum()), float((frequency == 0).float().mean()), float((frequency > dense_threshold).float().mean())


def sparsity_dense_at_the_threshold(latents, dense_threshold=0.1):
    active = latents > 0
    frequency = active.float().mean(0)
    return (float(active.float().sum(-1).mean()), float((frequency == 0).float().mean()),
            float((frequency >= dense_threshold).float().mean()))


def sparsity_active_above_a_tolerance(latents, dense_threshold=0.1):
    active = latents > 1e-3
    frequency = active.float().mean(0)
    return (float(active.float().sum(-1).mean()), float((frequency == 0).float().mean()),
            float((frequency > dense_threshold).float().mean()))


def sparsity_with_counts(latents, dense_threshold=0.1):
    tokens, d_sae = latents.shape
    counts = (latents != 0).sum(0)
    return (counts.sum().item() / tokens, (counts == 0).sum().item() / d_sae,
            (counts > dense_threshold * tokens).sum().item() / d_sae)


def _spliced(model, sae, input_ids, mask, site, keep, loss_of):
    def splice(activation):
        return torch.where(keep, sae.decode(sae.encode(activation)), activation)
    with hooks(model, {site: splice}):
        logits = model(input_ids, attention_mask=mask).logits
    return loss_of(logits)


def spliced_at_bos_too(model, sae, input_ids, mask, site):
    return _spliced(model, sae, input_ids, mask, site, mask.bool().unsqueeze(-1),
                    lambda logits: next_token_loss(logits, input_ids, mask))


def spliced_loss_over_the_padding_too(model, sae, input_ids, mask, site):
    return _spliced(model, sae, input_ids, mask, site, real_positions(mask).unsqueeze(-1),
                    lambda logits: next_token_loss(logits, input_ids, torch.ones_like(mask)))


def spliced_without_the_shift(model, sae, input_ids, mask, site):
    def loss_of(logits):
        losses = F.cross_entropy(logits.flatten(0, 1), input_ids.flatten(), reduction="none")
        return float((losses * mask.flatten()).sum() / mask.sum())
    return _spliced(model, sae, input_ids, mask, site, real_positions(mask).unsqueeze(-1), loss_of)


def spliced_with_the_library_replacement(model, sae, input_ids, mask, site):
    return loss_with_replacement(model, input_ids, mask, site, lambda x: sae.decode(sae.encode(x)))


def top_activations_one_per_row(acts, n):
    values, positions = acts.max(dim=1)
    order = values.argsort(descending=True)[:n]
    return [(int(row), int(positions[row]), float(values[row])) for row in order if values[row] > 0]


def top_activations_unravelled_by_the_rows(acts, n):
    values, flat = acts.flatten().topk(min(n, acts.numel()))
    return [(i % acts.shape[0], i // acts.shape[0], v) for v, i in zip(values.tolist(), flat.tolist()) if v > 0]


def top_activations_with_the_zeros(acts, n):
    values, flat = acts.flatten().topk(min(n, acts.numel()))
    return [(i // acts.shape[1], i % acts.shape[1], v) for v, i in zip(values.tolist(), flat.tolist())]


def top_activations_by_sorting(acts, n):
    entries = [(value, row, position) for row, values in enumerate(acts.tolist())
               for position, value in enumerate(values) if value > 0]
    return [(row, position, value) for value, row, position in sorted(entries, reverse=True)[:n]]


def effects_without_gamma(direction, gamma, W_U, k):
    effects = W_U @ direction
    return effects.topk(k).indices, (-effects).topk(k).indices


def effects_with_the_least_negative_first(direction, gamma, W_U, k):
    effects = W_U @ (direction * gamma)
    return effects.topk(k).indices, (-effects).topk(k).indices.flip(0)


def effects_by_magnitude(direction, gamma, W_U, k):
    effects = W_U @ (direction * gamma)
    return effects.abs().topk(k).indices, (-effects).topk(k).indices


def effects_with_einsum_and_argsort(direction, gamma, W_U, k):
    effects = einops.einsum(W_U, direction * gamma, "vocab d, d -> vocab")
    order = effects.argsort(descending=True)
    return order[:k], order.flip(0)[:k]


def _auroc_by_pairs(scores, labels, tie):
    labels = labels.bool()
    columns = scores.reshape(len(scores), -1)
    positive, negative = columns[labels][:, None], columns[~labels][None, :]
    wins = (positive > negative).float() + tie * (positive == negative).float()
    return wins.mean((0, 1)).reshape(scores.shape[1:])


def auroc_with_ties_lost(scores, labels):
    return _auroc_by_pairs(scores, labels, 0.0)


def auroc_with_ties_won(scores, labels):
    return _auroc_by_pairs(scores, labels, 1.0)


def auroc_as_accuracy_at_the_mean(scores, labels):
    columns = scores.reshape(len(scores), -1)
    predicted = columns > columns.mean(0)
    return (predicted == labels.bool()[:, None]).float().mean(0).reshape(scores.shape[1:])


def auroc_from_all_pairs(scores, labels):
    return _auroc_by_pairs(scores, labels, 0.5)


def best_latent_selected_on_all_rows(scores, labels):
    half = len(scores) // 2
    latent = int(auroc(scores, labels).argmax())
    return latent, float(auroc(scores[:half], labels[:half])[latent]), float(auroc(scores[half:], labels[half:])[latent])


def best_latent_reporting_the_selection(scores, labels):
    half = len(scores) // 2
    select = auroc(scores[:half], labels[:half])
    latent = int(select.argmax())
    return latent, float(select[latent]), float(select[latent])


def best_latent_split_after_the_middle(scores, labels):
    half = (len(scores) + 1) // 2
    select, held_out = auroc(scores[:half], labels[:half]), auroc(scores[half:], labels[half:])
    latent = int(select.argmax())
    return latent, float(select[latent]), float(held_out[latent])


def best_latent_with_split_aurocs(scores, labels):
    select, held_out = split_aurocs(scores, labels)
    latent = int(torch.argmax(select))
    return latent, select[latent].item(), held_out[latent].item()


def aligned_by_signed_cosine(W_dec, vector, k):
    cosines = F.normalize(W_dec, dim=-1) @ F.normalize(vector, dim=0)
    top = cosines.topk(min(k, len(cosines))).indices
    return [(int(i), float(cosines[i])) for i in top]


def aligned_by_dot_product(W_dec, vector, k):
    dots = W_dec @ vector
    top = dots.abs().topk(min(k, len(dots))).indices
    cosines = F.normalize(W_dec, dim=-1) @ F.normalize(vector, dim=0)
    return [(int(i), float(cosines[i])) for i in top]


def aligned_with_the_absolute_cosine(W_dec, vector, k):
    cosines = (F.normalize(W_dec, dim=-1) @ F.normalize(vector, dim=0)).abs()
    top = cosines.topk(min(k, len(cosines))).indices
    return [(int(i), float(cosines[i])) for i in top]


def aligned_with_cosine_similarity(W_dec, vector, k):
    cosines = F.cosine_similarity(W_dec, vector[None, :], dim=-1)
    order = sorted(range(len(cosines)), key=lambda i: -abs(float(cosines[i])))
    return [(i, float(cosines[i])) for i in order[:k]]


def projection_summed_row_by_row(rows, vector):
    units = F.normalize(rows, dim=-1)
    return ((units @ vector)[:, None] * units).sum(0)


def projection_without_normalising_the_rows(rows, vector):
    return ((rows @ vector)[:, None] * rows).sum(0)


def projection_of_the_coefficients(rows, vector):
    return torch.linalg.lstsq(rows.T, vector.unsqueeze(-1)).solution.squeeze(-1)


def projection_with_the_pseudo_inverse(rows, vector):
    return rows.T @ (torch.linalg.pinv(rows.T) @ vector)


# --------------------------------------------------------------------------------------------- 7
def _tokenized(tokenizer, pairs, bos=True, check_lengths=True, one_token=True, labels_of="clean"):
    def ids(text):
        return ([tokenizer.bos_token_id] if bos else []) + tokenizer(text, add_special_tokens=False)["input_ids"]

    def token(text):
        token_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if one_token and len(token_ids) != 1:
            raise ValueError(f"{text!r} is {len(token_ids)} tokens")
        return token_ids[0]
    clean, corrupted = [ids(p.clean) for p in pairs], [ids(p.corrupted) for p in pairs]
    if check_lengths and len({len(row) for row in clean + corrupted}) != 1:
        raise ValueError("the prompts differ in length")
    width = max(map(len, clean + corrupted))
    padded = lambda rows: torch.tensor([row + [0] * (width - len(row)) for row in rows])  # noqa: E731
    return PairTokens(padded(clean), padded(corrupted), torch.tensor([token(p.answer) for p in pairs]),
                      torch.tensor([token(p.wrong) for p in pairs]),
                      tokenizer.convert_ids_to_tokens((clean if labels_of == "clean" else corrupted)[0]))


def pairs_without_bos(tokenizer, pairs):
    return _tokenized(tokenizer, pairs, bos=False)


def pairs_padded_instead_of_refused(tokenizer, pairs):
    return _tokenized(tokenizer, pairs, check_lengths=False)


def pairs_with_the_first_token_of_a_long_answer(tokenizer, pairs):
    return _tokenized(tokenizer, pairs, one_token=False)


def pairs_labelled_with_the_corrupted_prompt(tokenizer, pairs):
    return _tokenized(tokenizer, pairs, labels_of="corrupted")


def pairs_tokenized_as_a_batch(tokenizer, pairs):
    if not pairs:
        raise ValueError("no pairs")
    encode = lambda texts: tokenizer(texts, add_special_tokens=False)["input_ids"]  # noqa: E731
    clean = [[tokenizer.bos_token_id, *row] for row in encode([p.clean for p in pairs])]
    corrupted = [[tokenizer.bos_token_id, *row] for row in encode([p.corrupted for p in pairs])]
    if any(len(row) != len(clean[0]) for row in clean + corrupted):
        raise ValueError("every prompt must have as many tokens as the first")
    answers, wrongs = encode([p.answer for p in pairs]), encode([p.wrong for p in pairs])
    if any(len(ids) != 1 for ids in answers + wrongs):
        raise ValueError("answers must be one token")
    return PairTokens(torch.tensor(clean), torch.tensor(corrupted), torch.tensor([a for a, in answers]),
                      torch.tensor([w for w, in wrongs]), tokenizer.convert_ids_to_tokens(clean[0]))


def metric_divided_by_clean(logit_diff, clean, corrupted):
    return (logit_diff - corrupted) / clean


def metric_from_the_clean_end(logit_diff, clean, corrupted):
    return (logit_diff - clean) / (corrupted - clean)


def metric_without_the_baseline(logit_diff, clean, corrupted):
    return logit_diff / (clean - corrupted)


def metric_as_one_minus_the_gap(logit_diff, clean, corrupted):
    return 1 - (clean - logit_diff) / (clean - corrupted)


def head_on_the_position_axis(z, clean_z, head):
    patched = z.clone()
    patched[:, head] = clean_z[:, head]
    return patched


def head_patched_in_place(z, clean_z, head):
    z[:, :, head] = clean_z[:, :, head]
    return z


def head_the_whole_layer(z, clean_z, head):
    return clean_z.clone()


def head_with_a_mask(z, clean_z, head):
    is_head = torch.arange(z.shape[2]) == head
    return torch.where(einops.rearrange(is_head, "head -> 1 1 head 1"), clean_z, z)


def attribution_of_the_clean_run(clean, corrupted, gradient):
    return einops.einsum(clean, gradient, "n pos head d, n pos head d -> head pos")


def attribution_the_wrong_way_round(clean, corrupted, gradient):
    return einops.einsum(corrupted - clean, gradient, "n pos head d, n pos head d -> head pos")


def attribution_averaged_over_prompts(clean, corrupted, gradient):
    return einops.einsum(clean - corrupted, gradient, "n pos head d, n pos head d -> head pos") / len(clean)


def attribution_as_a_sum_of_products(clean, corrupted, gradient):
    return ((clean - corrupted) * gradient).sum(dim=(0, 3)).T


def copy_where_with_the_prompt_outermost(masks, clean, activation):
    copies = einops.rearrange(activation, "(n variant) ... -> variant n ...", variant=len(masks))
    chosen = einops.rearrange(masks, "variant ... -> variant () ... ()")
    return einops.rearrange(torch.where(chosen, clean, copies), "variant n ... -> (n variant) ...")


def copy_where_where_the_mask_is_false(masks, clean, activation):
    copies = einops.rearrange(activation, "(variant n) ... -> variant n ...", variant=len(masks))
    chosen = einops.rearrange(masks, "variant ... -> variant () ... ()")
    return einops.rearrange(torch.where(chosen, copies, clean), "variant n ... -> (variant n) ...")


def copy_where_into_the_activation(masks, clean, activation):
    n = len(clean)
    for variant, mask in enumerate(masks):
        rows = activation[variant * n:(variant + 1) * n]
        rows[:, mask] = clean[:, mask]
    return activation


def copy_where_the_first_mask_everywhere(masks, clean, activation):
    copies = einops.rearrange(activation, "(variant n) ... -> variant n ...", variant=len(masks))
    return einops.rearrange(torch.where(masks[0, ..., None], clean, copies), "variant n ... -> (variant n) ...")


def copy_where_copy_by_copy(masks, clean, activation):
    n = len(clean)
    parts = [torch.where(mask[..., None], clean, activation[variant * n:(variant + 1) * n])
             for variant, mask in enumerate(masks)]
    return torch.cat(parts)


def _with_heads_replaced(model, tokens, heads, replacement):
    """The clean logit differences with each (layer, head) of heads set to replacement(layer, z) in those heads."""
    with contextlib.ExitStack() as stack, torch.no_grad():
        for layer in {layer for layer, _ in heads}:
            chosen = [head for l, head in heads if l == layer]

            def edit(z, layer=layer, chosen=chosen):
                edited = z.clone()
                edited[:, :, chosen] = replacement(layer, z)[..., chosen, :]
                return edited
            stack.enter_context(editing_head_outputs(model, layer, edit))
        return logit_difference(model(tokens.clean).logits, tokens.answer, tokens.wrong)


def heads_zero_ablated(model, tokens, heads, mean_over):
    return _with_heads_replaced(model, tokens, heads, lambda layer, z: torch.zeros_like(z))


def heads_ablated_by_their_mean_over_positions_too(model, tokens, heads, mean_over):
    means = clean_head_outputs(model, mean_over)
    return _with_heads_replaced(model, tokens, heads, lambda layer, z: means[layer].mean(dim=(0, 1)).expand_as(z))


def heads_ablated_with_the_last_layers_edit(model, tokens, heads, mean_over):
    means = clean_head_outputs(model, mean_over)
    with contextlib.ExitStack() as stack, torch.no_grad():
        for layer in sorted({layer for layer, _ in heads}):
            ablated = torch.zeros(model.config.num_attention_heads, 1, dtype=torch.bool)
            ablated[[head for l, head in heads if l == layer]] = True
            mean = means[layer].mean(dim=0)
            stack.enter_context(editing_head_outputs(model, layer, lambda z: torch.where(ablated, mean, z)))
        return logit_difference(model(tokens.clean).logits, tokens.answer, tokens.wrong)


def heads_ablated_by_their_mean_over_the_prompts_themselves(model, tokens, heads, mean_over):
    means = clean_head_outputs(model, tokens.clean)
    return _with_heads_replaced(model, tokens, heads, lambda layer, z: means[layer].mean(dim=0).expand_as(z))


def heads_ablated_one_by_one_with_slices(model, tokens, heads, mean_over):
    means = clean_head_outputs(model, mean_over)
    return _with_heads_replaced(model, tokens, heads, lambda layer, z: means[layer].mean(dim=0).expand_as(z))


def _head_position_sweep(model, tokens, progress, pattern):
    n_pos, n_heads = tokens.clean.shape[1], model.config.num_attention_heads
    one_entry = einops.rearrange(torch.eye(n_heads * n_pos, dtype=torch.bool), pattern, head=n_heads)
    return patch_sweep(model, tokens, "z", one_entry, "patching", progress=progress)


def head_positions_in_position_major_order(model, tokens, progress=True):
    effects = _head_position_sweep(model, tokens, progress, "variant (pos head) -> variant pos head")
    return einops.rearrange(effects, "layer (head pos) -> layer head pos", head=model.config.num_attention_heads)


def head_positions_regrouped_the_other_way(model, tokens, progress=True):
    effects = _head_position_sweep(model, tokens, progress, "variant (head pos) -> variant pos head")
    n_pos = tokens.clean.shape[1]
    return einops.rearrange(effects, "layer (pos head) -> layer head pos", pos=n_pos)


def head_positions_every_head_at_once(model, tokens, progress=True):
    n_pos, n_heads = tokens.clean.shape[1], model.config.num_attention_heads
    one_position = einops.repeat(torch.eye(n_pos, dtype=torch.bool), "variant pos -> variant pos head", head=n_heads)
    effects = patch_sweep(model, tokens, "z", one_position, "patching", progress=progress)
    return einops.repeat(effects, "layer pos -> layer head pos", head=n_heads)


def head_positions_of_the_residual_stream(model, tokens, progress=True):
    n_pos, n_heads = tokens.clean.shape[1], model.config.num_attention_heads
    effects = patch_sweep(model, tokens, "resid_pre", torch.eye(n_pos, dtype=torch.bool), "patching", progress=progress)
    return einops.repeat(effects, "layer pos -> layer head pos", head=n_heads)


def head_positions_with_a_loop_over_heads(model, tokens, progress=True):
    n_pos, n_heads = tokens.clean.shape[1], model.config.num_attention_heads
    per_head = []
    for head in range(n_heads):
        masks = torch.zeros(n_pos, n_pos, n_heads, dtype=torch.bool)
        masks[torch.arange(n_pos), torch.arange(n_pos), head] = True
        per_head.append(patch_sweep(model, tokens, "z", masks, "patching", progress=progress))
    return torch.stack(per_head, dim=1)

def _integrated_at(clean, corrupted, gradient_at, t):
    points = corrupted + einops.rearrange(t, "step -> step 1 1 1 1") * (clean - corrupted)
    return einops.einsum(clean - corrupted, gradient_at(points).mean(dim=0), "n pos head d, n pos head d -> head pos")


def integrated_with_the_end_points(clean, corrupted, gradient_at, steps):
    return _integrated_at(clean, corrupted, gradient_at, torch.linspace(0, 1, steps))


def integrated_from_the_left_ends(clean, corrupted, gradient_at, steps):
    return _integrated_at(clean, corrupted, gradient_at, torch.arange(steps) / steps)


def integrated_summed_over_the_steps(clean, corrupted, gradient_at, steps):
    return steps * _integrated_at(clean, corrupted, gradient_at, (torch.arange(steps) + 0.5) / steps)


def integrated_at_the_clean_run(clean, corrupted, gradient_at, steps):
    return _integrated_at(clean, corrupted, gradient_at, torch.ones(steps))


def integrated_walked_from_the_clean_end_one_point_at_a_time(clean, corrupted, gradient_at, steps):
    total = torch.zeros_like(clean)
    for k in range(steps):
        total += gradient_at((clean + (k + 0.5) / steps * (corrupted - clean))[None])[0]
    return ((clean - corrupted) * total / steps).sum(dim=(0, 3)).T

def _attributed(clean, corrupted, gradients, latent_pattern, error_pattern, sign=1):
    latents = {layer: einops.einsum(sign * (clean.latents[layer] - corrupted.latents[layer]), gradients.latents[layer],
                                    latent_pattern) for layer in clean.latents}
    errors = {layer: einops.einsum(sign * (clean.errors[layer] - corrupted.errors[layer]), gradients.errors[layer],
                                   error_pattern) for layer in clean.errors}
    return latents, errors


def nodes_averaged_over_prompts(clean, corrupted, gradients):
    latents, errors = _attributed(clean, corrupted, gradients, "n pos f, n pos f -> pos f", "n pos d, n pos d -> pos")
    n = len(next(iter(clean.latents.values())))
    return {l: v / n for l, v in latents.items()}, {l: v / n for l, v in errors.items()}


def nodes_with_the_error_term_per_dimension_summed_over_positions(clean, corrupted, gradients):
    latents, _ = _attributed(clean, corrupted, gradients, "n pos f, n pos f -> pos f", "n pos d, n pos d -> pos")
    _, errors = _attributed(clean, corrupted, gradients, "n pos f, n pos f -> pos f", "n pos d, n pos d -> d")
    return latents, errors


def nodes_the_wrong_way_round(clean, corrupted, gradients):
    return _attributed(clean, corrupted, gradients, "n pos f, n pos f -> pos f", "n pos d, n pos d -> pos", sign=-1)


def nodes_of_the_clean_run_alone(clean, corrupted, gradients):
    latents = {l: (clean.latents[l] * gradients.latents[l]).sum(0) for l in clean.latents}
    errors = {l: (clean.errors[l] * gradients.errors[l]).sum((0, 2)) for l in clean.errors}
    return latents, errors


def nodes_layer_by_layer_with_sums(clean, corrupted, gradients):
    latents, errors = {}, {}
    for layer in clean.latents:
        latents[layer] = ((clean.latents[layer] - corrupted.latents[layer]) * gradients.latents[layer]).sum(dim=0)
        errors[layer] = ((clean.errors[layer] - corrupted.errors[layer]) * gradients.errors[layer]).sum(dim=-1).sum(dim=0)
    return latents, errors

def masks_the_wrong_way_round(d_saes, n_pos, nodes, keep_only):
    return _node_masks(d_saes, n_pos, nodes, lambda latents, errors: (latents, errors) if keep_only
                       else (~latents, ~errors))


def masks_keeping_the_error_terms_out(d_saes, n_pos, nodes, keep_only):
    return _node_masks(d_saes, n_pos, nodes, lambda latents, errors: (~latents, errors) if keep_only
                       else (latents, errors))


def masks_with_every_node_in_every_layer(d_saes, n_pos, nodes, keep_only):
    anywhere = [Node(layer, node.position, node.feature) for node in nodes for layer in d_saes]
    return _node_masks(d_saes, n_pos, anywhere, lambda latents, errors: (~latents, ~errors) if keep_only
                       else (latents, errors))


def _node_masks(d_saes, n_pos, nodes, finish):
    masks = {}
    for layer, d_sae in d_saes.items():
        latents = torch.zeros(n_pos, d_sae, dtype=torch.bool)
        errors = torch.zeros(n_pos, dtype=torch.bool)
        for node in nodes:
            if node.layer == layer:
                if node.feature is None:
                    errors[node.position] = True
                else:
                    latents[node.position, node.feature] = True
        masks[layer] = finish(latents, errors)
    return masks


def masks_from_index_lists(d_saes, n_pos, nodes, keep_only):
    masks = {}
    for layer, d_sae in d_saes.items():
        latent_nodes = [(node.position, node.feature) for node in nodes if node.layer == layer and node.feature is not None]
        error_positions = [node.position for node in nodes if node.layer == layer and node.feature is None]
        latents = torch.zeros(n_pos, d_sae, dtype=torch.bool)
        if latent_nodes:
            positions, features = zip(*latent_nodes)
            latents[list(positions), list(features)] = True
        errors = torch.isin(torch.arange(n_pos), torch.tensor(error_positions, dtype=torch.long))
        masks[layer] = (latents != keep_only, errors != keep_only)
    return masks


def faithfulness_as_completeness(model, saes, tokens, means, nodes):
    everything = logit_difference_with(model, saes, tokens, means, [], keep_only=False).mean()
    nothing = logit_difference_with(model, saes, tokens, means, [], keep_only=True).mean()
    circuit = logit_difference_with(model, saes, tokens, means, nodes, keep_only=False).mean()
    return float((circuit - nothing) / (everything - nothing))


def faithfulness_without_the_empty_circuit(model, saes, tokens, means, nodes):
    everything = logit_difference_with(model, saes, tokens, means, [], keep_only=False).mean()
    circuit = logit_difference_with(model, saes, tokens, means, nodes, keep_only=True).mean()
    return float(circuit / everything)


def faithfulness_averaged_over_prompts(model, saes, tokens, means, nodes):
    everything = logit_difference_with(model, saes, tokens, means, [], keep_only=False)
    nothing = logit_difference_with(model, saes, tokens, means, [], keep_only=True)
    circuit = logit_difference_with(model, saes, tokens, means, nodes, keep_only=True)
    return float(((circuit - nothing) / (everything - nothing)).mean())


def faithfulness_against_the_model_without_saes(model, saes, tokens, means, nodes):
    with torch.no_grad():
        everything = logit_difference(model(tokens.clean).logits, tokens.answer, tokens.wrong).mean()
    nothing = logit_difference_with(model, saes, tokens, means, [], keep_only=True).mean()
    circuit = logit_difference_with(model, saes, tokens, means, nodes, keep_only=True).mean()
    return float((circuit - nothing) / (everything - nothing))


def completeness_as_faithfulness(model, saes, tokens, means, nodes):
    return faithfulness(model, saes, tokens, means, nodes)                 # the circuit kept alone, not taken away


def completeness_as_one_minus_faithfulness(model, saes, tokens, means, nodes):
    return 1 - faithfulness(model, saes, tokens, means, nodes)


def completeness_without_the_empty_circuit(model, saes, tokens, means, nodes):
    everything = logit_difference_with(model, saes, tokens, means, [], keep_only=False).mean()
    without = logit_difference_with(model, saes, tokens, means, nodes, keep_only=False).mean()
    return float(without / everything)


def completeness_as_one_minus_the_share_lost(model, saes, tokens, means, nodes):
    everything = logit_difference_with(model, saes, tokens, means, [], keep_only=False).mean()
    nothing = logit_difference_with(model, saes, tokens, means, [], keep_only=True).mean()
    lost = everything - logit_difference_with(model, saes, tokens, means, nodes, keep_only=False).mean()
    return float(1 - lost / (everything - nothing))



def _edges(down, ups, corrupted, gradients, clean, *, weighted=True, sign=1.0, reduce=torch.sum):
    """edges_into, with the mistakes the wrong answers below make as switches."""
    if not ups:
        return {}
    layer = down.layer
    value = corrupted.errors[layer][:, down.position] if down.feature is None else \
        corrupted.latents[layer][:, down.position, down.feature]
    gradient = gradients.errors[layer][:, down.position] if down.feature is None else \
        gradients.latents[layer][:, down.position, down.feature]
    score = (gradient * value).sum() if weighted else value.sum()
    through = torch.autograd.grad(score, [corrupted.latents[layer - 1], corrupted.errors[layer - 1]],
                                  retain_graph=True, allow_unused=True)
    edges = {}
    for up in ups:
        index = (slice(None), up.position) if up.feature is None else (slice(None), up.position, up.feature)
        values = (clean.errors if up.feature is None else clean.latents)[up.layer]
        start = (corrupted.errors if up.feature is None else corrupted.latents)[up.layer]
        grad = through[1 if up.feature is None else 0]
        delta = sign * (values[index] - start[index].detach())
        edges[up] = 0.0 if grad is None else float(reduce(delta * grad[index]))
    return edges


def edges_from_the_unweighted_value(down, ups, corrupted, gradients, clean):
    return _edges(down, ups, corrupted, gradients, clean, weighted=False)


def edges_the_wrong_way_round(down, ups, corrupted, gradients, clean):
    return _edges(down, ups, corrupted, gradients, clean, sign=-1.0)


def edges_averaged_over_the_batch(down, ups, corrupted, gradients, clean):
    return _edges(down, ups, corrupted, gradients, clean, reduce=torch.mean)


def edges_one_upstream_node_at_a_time(down, ups, corrupted, gradients, clean):
    edges = {}
    for up in ups:
        layer, position = down.layer, down.position
        if down.feature is None:
            score = torch.einsum("nd,nd->", gradients.errors[layer][:, position], corrupted.errors[layer][:, position])
        else:
            score = torch.dot(gradients.latents[layer][:, position, down.feature],
                              corrupted.latents[layer][:, position, down.feature])
        source = (corrupted.errors if up.feature is None else corrupted.latents)[up.layer]
        (grad,) = torch.autograd.grad(score, [source], retain_graph=True, allow_unused=True)
        if grad is None:
            edges[up] = 0.0
            continue
        index = (slice(None), up.position) if up.feature is None else (slice(None), up.position, up.feature)
        target = (clean.errors if up.feature is None else clean.latents)[up.layer]
        edges[up] = torch.einsum("n...,n...->", target[index] - source[index].detach(), grad[index]).item()
    return edges


def _send_and_freeze(stack, model, sender, frozen_layers, clean_z, corrupted_z):
    """Enter in ``stack`` the sender's clean output and the heads of ``frozen_layers`` at their corrupted outputs."""
    send_layer, send_head = sender

    def send(z):
        z = z.clone()
        z[:, :, send_head] = clean_z[send_layer][:, :, send_head]
        return z

    stack.enter_context(editing_head_outputs(model, send_layer, send))
    for layer in frozen_layers:
        stack.enter_context(editing_head_outputs(model, layer, lambda z, layer=layer: corrupted_z[layer]))


def _metric(model, tokens, difference):
    base = baseline(model, tokens)
    return normalised_metric(difference, base.clean, base.corrupted)


@torch.no_grad()
def _path(model, tokens, sender, receiver, *, freeze=True, from_clean_run=False, normalise=True):
    """path_patch, with the mistakes the wrong answers below make as switches."""
    if sender[0] >= receiver[0]:
        raise ValueError("the sender must be in an earlier layer than the receiver")
    receive_layer, receive_head = receiver
    clean_z, corrupted_z = clean_head_outputs(model, tokens.clean), clean_head_outputs(model, tokens.corrupted)
    recorded = []

    def record(z):
        recorded.append(z[:, :, receive_head].clone())
        return z

    with contextlib.ExitStack() as stack:
        _send_and_freeze(stack, model, sender, range(sender[0] + 1, receive_layer) if freeze else (), clean_z,
                         corrupted_z)
        stack.enter_context(editing_head_outputs(model, receive_layer, record))
        model(tokens.corrupted)
    received = clean_z[receive_layer][:, :, receive_head] if from_clean_run else recorded[0]

    def receive(z):
        z = z.clone()
        z[:, :, receive_head] = received
        return z

    with editing_head_outputs(model, receive_layer, receive):
        difference = logit_difference(model(tokens.corrupted).logits, tokens.answer, tokens.wrong).mean()
    return _metric(model, tokens, difference).item() if normalise else difference.item()


def path_without_freezing_the_heads_between(model, tokens, sender, receiver):
    return _path(model, tokens, sender, receiver, freeze=False)


def path_with_the_receivers_clean_output(model, tokens, sender, receiver):
    return _path(model, tokens, sender, receiver, from_clean_run=True)


def path_as_the_raw_logit_difference(model, tokens, sender, receiver):
    return _path(model, tokens, sender, receiver, normalise=False)


def path_from_the_batched_sweep(model, tokens, sender, receiver):
    from utils.patching import path_patch_senders

    if sender[0] >= receiver[0]:
        raise ValueError(f"sender {sender} is not before receiver {receiver}")
    return path_patch_senders(model, tokens, receiver, progress=False)[sender].item()



@torch.no_grad()
def _to_logits(model, tokens, sender, *, first_frozen=1, normalise=True):
    """path_patch_to_logits, freezing the layers from sender's + first_frozen on (0: none)."""
    clean_z, corrupted_z = clean_head_outputs(model, tokens.clean), clean_head_outputs(model, tokens.corrupted)
    frozen = range(sender[0] + first_frozen, architecture.n_layers(model)) if first_frozen else ()
    with contextlib.ExitStack() as stack:
        _send_and_freeze(stack, model, sender, frozen, clean_z, corrupted_z)
        difference = logit_difference(model(tokens.corrupted).logits, tokens.answer, tokens.wrong).mean()
    return _metric(model, tokens, difference).item() if normalise else difference.item()


def to_logits_freezing_nothing(model, tokens, sender):
    return _to_logits(model, tokens, sender, first_frozen=0)


def to_logits_leaving_the_next_layer_free(model, tokens, sender):
    return _to_logits(model, tokens, sender, first_frozen=2)


def to_logits_as_the_raw_logit_difference(model, tokens, sender):
    return _to_logits(model, tokens, sender, normalise=False)


@torch.no_grad()
def to_logits_with_one_mask_per_layer(model, tokens, sender):
    clean_z, corrupted_z = clean_head_outputs(model, tokens.clean), clean_head_outputs(model, tokens.corrupted)
    n_heads = model.config.num_attention_heads
    with contextlib.ExitStack() as stack:
        for layer in range(sender[0], architecture.n_layers(model)):
            if layer == sender[0]:
                chosen, source = torch.arange(n_heads) == sender[1], clean_z[layer]
            else:
                chosen, source = torch.ones(n_heads, dtype=torch.bool), corrupted_z[layer]
            stack.enter_context(editing_head_outputs(
                model, layer, lambda z, chosen=chosen, source=source: torch.where(chosen[:, None], source, z)))
        patched = logit_difference(model(tokens.corrupted).logits, tokens.answer, tokens.wrong).mean()
    return float(_metric(model, tokens, patched))


@torch.no_grad()
def _residual(model, tokens, progress=True, *, site="resid_pre", interleave=False, transpose=False):
    """patch_residual by hand, with the mistakes the wrong answers below make as switches."""
    n, n_pos = tokens.clean.shape
    sites = [f"{site}.{layer}" for layer in range(architecture.n_layers(model))]
    clean = capture(model, tokens.clean, sites)
    pattern = "n pos -> (n variant) pos" if interleave else "n pos -> (variant n) pos"
    repeated = einops.repeat(tokens.corrupted, pattern, variant=n_pos)
    base = baseline(model, tokens)
    effects = torch.zeros(len(sites), n_pos)
    for layer, name in enumerate(sites):
        def patch(residual, name=name):
            copies = einops.rearrange(residual, "(variant n) pos d -> variant n pos d", variant=n_pos).clone()
            copies[torch.arange(n_pos), :, torch.arange(n_pos)] = clean[name][:, torch.arange(n_pos)].transpose(0, 1)
            return einops.rearrange(copies, "variant n pos d -> (variant n) pos d")
        with hooks(model, {name: patch}):
            difference = logit_difference(model(repeated).logits, tokens.answer.repeat(n_pos), tokens.wrong.repeat(n_pos))
        mean = einops.reduce(difference, "(variant n) -> variant", "mean", variant=n_pos)
        effects[layer] = normalised_metric(mean, base.clean, base.corrupted)
    return effects.T if transpose else effects


def residual_after_each_block(model, tokens, progress=True):
    return _residual(model, tokens, progress, site="resid_post")


def residual_with_the_copies_interleaved(model, tokens, progress=True):
    return _residual(model, tokens, progress, interleave=True)


def residual_by_position_then_layer(model, tokens, progress=True):
    return _residual(model, tokens, progress, transpose=True)


@torch.no_grad()
def residual_one_position_per_pass(model, tokens, progress=True):
    n_layers, n_pos = architecture.n_layers(model), tokens.clean.shape[1]
    clean = capture(model, tokens.clean, [f"resid_pre.{layer}" for layer in range(n_layers)])
    base = baseline(model, tokens)
    effects = torch.zeros(n_layers, n_pos)
    for layer in range(n_layers):
        for position in range(n_pos):
            def patch(residual, layer=layer, position=position):
                patched = residual.clone()
                patched[:, position] = clean[f"resid_pre.{layer}"][:, position]
                return patched
            with hooks(model, {f"resid_pre.{layer}": patch}):
                value = logit_difference(model(tokens.corrupted).logits, tokens.answer, tokens.wrong).mean()
            effects[layer, position] = normalised_metric(value, base.clean, base.corrupted)
    return effects



def batch_topk_per_row(pre, k):
    values, indices = pre.relu().topk(int(k), dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, values)


def batch_topk_counting_the_first_dimension(pre, k):
    flat = pre.relu().flatten()
    kept = flat.topk(int(k * pre.shape[0]))
    return torch.zeros_like(flat).scatter(0, kept.indices, kept.values).reshape(pre.shape)


def batch_topk_without_the_relu(pre, k):
    flat = pre.flatten()
    kept = flat.topk(int(k * pre.shape[:-1].numel()))
    return torch.zeros_like(flat).scatter(0, kept.indices, kept.values).reshape(pre.shape)


def batch_topk_with_a_threshold(pre, k):
    acts = pre.relu()
    n_kept = int(k * math.prod(acts.shape[:-1]))
    threshold = acts.flatten().sort(descending=True).values[n_kept - 1]
    return torch.where(acts >= threshold, acts, torch.zeros_like(acts))


def matches_of_raw_dot_products(decoder_a, decoder_b):
    return (decoder_a @ decoder_b.T).max(dim=-1)


def matches_by_absolute_cosine(decoder_a, decoder_b):
    return (F.normalize(decoder_a, dim=-1) @ F.normalize(decoder_b, dim=-1).T).abs().max(dim=-1)


def matches_for_the_rows_of_b(decoder_a, decoder_b):
    return (F.normalize(decoder_a, dim=-1) @ F.normalize(decoder_b, dim=-1).T).max(dim=0)


def decoder_matches_row_by_row(decoder_a, decoder_b):
    cosines, indices = [], []
    for row in decoder_a:
        similarity = F.cosine_similarity(row[None], decoder_b, dim=-1)
        cosines.append(similarity.max())
        indices.append(similarity.argmax())
    return torch.stack(cosines), torch.stack(indices)


WRONG: dict[str, tuple[Answer, ...]] = {
    "0.1": (loss_without_the_shift, loss_of_the_current_token, loss_averaged_to_one_number),
    "0.2": (difference_at_the_first_position, difference_the_wrong_way_round, difference_of_probabilities),
    "0.3": (logits_without_the_final_norm, logits_with_the_norm_twice, logits_with_a_norm_of_no_weights),
    "0.4": (norm_with_the_unbiased_variance, norm_without_eps, norm_without_its_weight_and_bias),
    "0.5": (embed_without_positions, embed_with_positions_from_one, embed_with_the_token_table_for_positions),
    "0.6": (pattern_without_scaling, pattern_masking_the_past, pattern_normalised_over_queries),
    "0.7": (attention_with_heads_outermost, attention_without_the_mask, attention_without_the_output_bias),
    "0.8": (mlp_with_the_exact_gelu, mlp_with_relu, mlp_without_the_biases),
    "0.9": (block_post_norm, block_in_parallel, block_without_the_residual),
    "0.10": (forward_without_the_final_norm, forward_without_positions, forward_through_the_first_block_only),
    "0.11": (count_without_the_biases, count_with_a_four_times_wide_mlp, count_with_the_unembedding_always),
    "0.12": (padded_pattern_ignoring_the_padding, padded_pattern_masking_padding_queries_not_keys,
             padded_pattern_with_nan_rows),
    "1.1": (top_k_dropping_the_kth, top_k_zeroing_instead_of_minus_infinity, top_k_over_the_batch),
    "1.2": (top_p_on_cumulative_logits, top_p_without_the_token_that_crosses_p, top_p_mask_left_in_sorted_order),
    "1.3": (min_p_on_logits, min_p_against_the_batch_maximum, min_p_as_an_absolute_threshold),
    "1.4": (penalty_dividing_every_seen_logit, penalty_for_every_occurrence, penalty_on_the_unseen_tokens),
    "1.5": (greedy_without_the_cache, greedy_one_token_short, greedy_returning_only_the_new_tokens),
    "1.6": (beams_best_per_beam, beams_ignoring_their_scores, beams_with_beam_and_token_swapped),
    "1.7": (prompt_with_a_space_after_the_arrow, prompt_with_the_query_among_the_shots,
            prompt_drawn_with_the_global_random),
    "1.8": (wald_interval, wilson_with_a_one_sided_z, wilson_without_its_denominator),
    "1.9": (matches_without_the_shift, matches_any_answer_token, matches_with_the_ignored_positions_as_mismatches),
    "1.10": (answer_as_the_last_number, answer_as_the_first_number, answer_as_a_string),
    "1.11": (mcnemar_one_sided, mcnemar_without_the_cap, mcnemar_chi_squared),
    "1.12": (transitions_by_first_character, transitions_allowing_the_empty_token,
             transitions_taking_state_0_for_a_dead_end),
    "1.13": (mask_allowing_the_padded_ids, mask_in_place, mask_removing_the_allowed_tokens),
    "1.14": (soft_prompt_after_the_tokens, soft_prompt_logits_kept, soft_prompt_one_position_off),
    "1.15": (step_without_zero_grad, step_returning_the_loss_after_the_update, step_returning_the_loss_tensor),
    "1.16": (nearest_by_dot_product, nearest_by_euclidean_distance, nearest_decoding_each_row_at_once),
    "1.17": (typical_ranked_by_probability, typical_without_the_token_that_crosses, typical_ranked_the_wrong_way),
    "2.1": (labels_on_the_padding_too, labels_one_past_the_prompt, labels_ignored_with_zero),
    "2.2": (lora_without_scaling, lora_scaling_the_whole_output, lora_without_the_layer),
    "2.3": (merged_without_the_conv1d_transpose, merged_without_scaling, merged_delta_only),
    "2.4": (add_lora_by_plain_suffix, add_lora_without_freezing, add_lora_on_the_first_match_only),
    "2.5": (count_by_plain_suffix, count_of_a_only, count_of_the_full_weights),
    "2.6": (step_without_clearing_the_gradients, step_on_every_token, step_that_reports_the_loss_after_the_update),
    "2.7": (state_dict_sharing_the_parameters, state_dict_without_the_peft_prefix,
            state_dict_of_every_trainable_parameter_and_the_base),
    "2.8": (corpus_loss_as_the_mean_of_document_means, corpus_loss_without_the_shift, corpus_loss_over_every_position),
    "2.9": (merge_normalising_the_weights, merge_ignoring_the_weights, merge_of_the_first_two_only),
    "2.10": (slerp_as_linear_interpolation, slerp_of_the_raw_vectors, slerp_with_the_weights_swapped),
    "2.11": (cosine_averaged_over_modules, cosine_of_the_first_module, cosine_as_a_dot_product),
    "2.12": (load_without_checking_the_keys, load_that_copies_before_checking, load_that_replaces_the_parameters),
    "3.1": (residual_before_the_block, residual_of_the_block_before, residual_from_hidden_states_at_layer),
    "3.2": (site_read_from_the_block_input, site_with_the_pattern_at_block_level, site_of_the_next_layer),
    "3.3": (nnsight_block_input_for_the_mlp, nnsight_outputs_swapped, nnsight_attention_for_the_mlp),
    "3.4": (ablation_without_finally, ablation_with_the_mean_per_position, ablation_of_the_projection_output),
    "3.5": (tl_ablation_always_to_zero, tl_ablation_of_the_wrong_axis, tl_ablation_of_the_attention_output),
    "3.6": (nnsight_ablation_without_labels, nnsight_ablation_of_the_whole_layer,
            nnsight_ablation_with_the_mean_of_the_inputs),
    "3.7": (pattern_from_unrotated_queries, pattern_with_the_key_heads_tiled, pattern_normalised_over_the_queries),
    "3.8": (sequences_with_the_global_random_state, sequences_without_bos, sequences_of_pool_indices),
    "3.9": (copies_with_their_first_tokens, copies_one_token_late, copies_as_tensors),
    "3.10": (previous_token_on_the_main_diagonal, previous_token_looking_forward, previous_token_summed),
    "3.11": (induction_to_the_first_occurrence, induction_one_query_early, induction_one_query_too_many),
    "3.12": (ablating_only_the_first_head, ablating_the_heads_one_after_another, ablating_with_copies_swapped),
    "3.13": (k_composition_unnormalised, k_composition_as_q_composition, k_composition_without_the_output_matrix),
    "3.14": (shards_in_one_file, shards_keeping_bos, shards_of_the_layer_before),
    "3.15": (composition_of_every_pair_of_layers, composition_with_q_and_k_swapped,
             composition_with_v_read_the_wrong_way),
    "3.16": (resample_from_the_first_source_row, resample_averaged_over_positions, resample_without_finally),
    "4.1": (stack_from_the_hidden_states, stack_without_the_embeddings, stack_with_the_batch_first),
    "4.2": (lens_without_the_final_norm, lens_at_the_last_position, lens_indexing_the_batch),
    "4.3": (positions_as_a_grid, positions_of_the_first_row, positions_one_early),
    "4.4": (heads_split_with_the_head_inside, heads_added_up, heads_with_the_batch_first),
    "4.5": (scale_with_the_unbiased_variance, scale_without_eps, scale_centred_for_every_norm),
    "4.6": (contributions_uncentred, contributions_without_the_norm_weight, contributions_without_the_scale),
    "4.7": (formation_at_the_first_correct_layer, formation_as_the_number_of_final_layers, formation_past_the_last_layer_when_never),
    "4.8": (kl_the_other_way_round, kl_of_logits_not_log_probabilities, kl_summed_over_prompts),
    "4.9": (lens_step_without_clearing_the_gradients, lens_step_on_the_mean_over_layers, lens_step_training_the_model_too),
    "4.10": (agreement_with_the_first_layer, agreement_counted_not_averaged, agreement_averaged_over_layers),
    "4.11": (directions_centred_over_each_row, directions_smallest_first, directions_from_the_left_vectors),
    "4.12": (ranks_of_the_raw_embedding, ranks_over_the_whole_vocabulary, ranks_through_the_transposed_circuit),
    "4.13": (score_of_the_ov_circuit_alone, score_without_the_norm_weights, score_from_singular_values),
    "4.14": (translator_without_a_bias, translator_the_other_way_round, translator_reading_the_bias_from_the_first_row),
    "5.1": (caa_the_wrong_way_round, caa_of_the_layer_before, caa_summed_over_pairs),
    "5.2": (steering_every_position, steering_in_place, steering_the_first_position),
    "5.3": (settings_strength_first, settings_not_unit, settings_with_the_alphas_sorted),
    "5.4": (rate_as_a_count, rate_of_the_sentiment_always, rate_of_the_texts_without_it),
    "5.5": (mean_difference_the_wrong_way_round, mean_difference_normalised, mean_difference_of_the_pooled_means),
    "5.6": (pca_of_uncentred_differences, pca_scaled_by_its_singular_value, pca_of_both_sets_pooled),
    "5.7": (actadd_the_wrong_way_round, actadd_averaged_over_positions, actadd_of_the_layer_before),
    "5.8": (accuracy_at_threshold_zero, accuracy_at_the_pooled_mean, accuracy_averaged_over_the_classes),
    "5.9": (project_out_unnormalised, project_onto_the_direction, project_out_of_a_normalised_residual),
    "5.10": (ablate_after_the_last_block_only, ablate_without_the_embeddings, ablate_along_the_unnormalised_direction),
    "5.11": (refusal_of_prompt_and_response, refusal_the_wrong_way_round, refusal_of_paired_rows),
    "5.12": (function_vector_the_wrong_way_round, function_vector_without_the_baseline, function_vector_of_pooled_prompts),
    "5.13": (variants_tiled, variants_in_place, variants_everywhere_always),
    "5.14": (neutral_loss_steered_at_the_last_position, neutral_loss_of_the_layer_before, neutral_loss_of_the_unit_vector),
    "6.1": (sae_with_topk_over_the_batch, sae_ignoring_k, sae_normalising_the_decoder),
    "6.2": (sae_loss_mse_averaged_over_dimensions, sae_loss_unweighted_l1, sae_loss_l1_summed_over_the_batch),
    "6.3": (explained_variance_uncentred, explained_variance_per_dimension, explained_variance_of_the_reconstruction),
    "6.4": (parallel_component_of_unnormalised_rows, parallel_component_kept, parallel_component_over_the_latents),
    "6.5": (sae_step_without_zero_grad, step_without_the_gradient_projection, step_normalising_before_the_step,
            step_returning_tensors_with_their_graph),
    "6.6": (jumprelu_without_the_relu, jumprelu_shifted_by_the_threshold, jumprelu_without_b_dec_before_encoding),
    "6.7": (sparsity_with_l0_summed_over_the_tokens, sparsity_dense_at_the_threshold, sparsity_active_above_a_tolerance),
    "6.8": (spliced_at_bos_too, spliced_loss_over_the_padding_too, spliced_without_the_shift),
    "6.9": (top_activations_one_per_row, top_activations_unravelled_by_the_rows, top_activations_with_the_zeros),
    "6.10": (effects_without_gamma, effects_with_the_least_negative_first, effects_by_magnitude),
    "6.11": (auroc_with_ties_lost, auroc_with_ties_won, auroc_as_accuracy_at_the_mean),
    "6.12": (best_latent_selected_on_all_rows, best_latent_reporting_the_selection, best_latent_split_after_the_middle),
    "6.13": (aligned_by_signed_cosine, aligned_by_dot_product, aligned_with_the_absolute_cosine),
    "6.14": (projection_summed_row_by_row, projection_without_normalising_the_rows, projection_of_the_coefficients),
    "6.15": (batch_topk_per_row, batch_topk_counting_the_first_dimension, batch_topk_without_the_relu),
    "6.16": (matches_of_raw_dot_products, matches_by_absolute_cosine, matches_for_the_rows_of_b),
    "7.1": (pairs_without_bos, pairs_padded_instead_of_refused, pairs_with_the_first_token_of_a_long_answer,
            pairs_labelled_with_the_corrupted_prompt),
    "7.2": (metric_divided_by_clean, metric_from_the_clean_end, metric_without_the_baseline),
    "7.3": (head_on_the_position_axis, head_patched_in_place, head_the_whole_layer),
    "7.4": (copy_where_with_the_prompt_outermost, copy_where_where_the_mask_is_false, copy_where_into_the_activation,
            copy_where_the_first_mask_everywhere),
    "7.5": (heads_zero_ablated, heads_ablated_by_their_mean_over_positions_too, heads_ablated_with_the_last_layers_edit,
            heads_ablated_by_their_mean_over_the_prompts_themselves),
    "7.6": (head_positions_in_position_major_order, head_positions_regrouped_the_other_way,
            head_positions_every_head_at_once, head_positions_of_the_residual_stream),
    "7.7": (attribution_of_the_clean_run, attribution_the_wrong_way_round, attribution_averaged_over_prompts),
    "7.8": (integrated_with_the_end_points, integrated_from_the_left_ends, integrated_summed_over_the_steps,
            integrated_at_the_clean_run),
    "7.9": (nodes_averaged_over_prompts, nodes_with_the_error_term_per_dimension_summed_over_positions,
            nodes_the_wrong_way_round, nodes_of_the_clean_run_alone),
    "7.10": (masks_the_wrong_way_round, masks_keeping_the_error_terms_out, masks_with_every_node_in_every_layer),
    "7.11": (faithfulness_as_completeness, faithfulness_without_the_empty_circuit, faithfulness_averaged_over_prompts),
    "7.12": (completeness_as_faithfulness, completeness_as_one_minus_faithfulness, completeness_without_the_empty_circuit),
    "7.13": (edges_from_the_unweighted_value, edges_the_wrong_way_round, edges_averaged_over_the_batch),
    "7.14": (path_without_freezing_the_heads_between, path_with_the_receivers_clean_output,
             path_as_the_raw_logit_difference),
    "7.15": (to_logits_freezing_nothing, to_logits_leaving_the_next_layer_free, to_logits_as_the_raw_logit_difference),
    "7.16": (residual_after_each_block, residual_with_the_copies_interleaved, residual_by_position_then_layer),
}

RIGHT: dict[str, tuple[Answer, ...]] = {
    "0.1": (loss_with_cross_entropy,), "0.2": (difference_with_gather,), "0.3": (logits_as_a_matrix_product,),
    "0.4": (norm_with_layer_norm,), "0.5": (embed_with_the_modules,), "0.6": (pattern_with_scaled_dot_product_attention,),
    "0.7": (attention_with_split_and_sdpa,), "0.8": (mlp_with_the_modules,), "0.9": (block_with_the_norm_and_mlp_modules,),
    "0.10": (forward_with_the_modules,), "0.11": (count_by_building_the_model_on_the_meta_device,),
    "0.12": (padded_pattern_with_an_additive_mask,),
    "1.1": (top_k_with_a_sort,), "1.2": (top_p_row_by_row,), "1.3": (min_p_in_log_space,),
    "1.4": (penalty_with_a_seen_mask,), "1.5": (greedy_while_loop,), "1.6": (beams_with_a_sort,),
    "1.7": (prompt_joined_line_by_line,), "1.8": (wilson_from_counts,), "1.9": (matches_row_by_row,),
    "1.10": (answer_by_splitting,), "1.11": (mcnemar_summing_the_unlikely_splits,),
    "1.12": (transitions_character_by_character,), "1.13": (mask_with_where,), "1.14": (soft_prompt_with_expand,),
    "1.15": (step_clearing_the_soft_prompt_gradient,), "1.16": (nearest_with_cosine_similarity,),
    "1.17": (typical_row_by_row,),
    "2.1": (labels_row_by_row,), "2.2": (lora_with_a_merged_matrix,), "2.3": (merged_with_einsum_in_the_layer_layout,),
    "2.4": (add_lora_with_named_modules,), "2.5": (count_by_adding_lora_to_a_copy,), "2.6": (step_with_the_loss_by_hand,),
    "2.7": (state_dict_from_named_parameters,), "2.8": (corpus_loss_from_log_softmax,), "2.9": (merge_by_stacking,),
    "2.10": (slerp_with_atan2,), "2.11": (cosine_from_norms,), "2.12": (load_with_load_state_dict,),
    "3.1": (residual_with_a_hook_object,), "3.2": (site_with_a_filter_function,), "3.3": (nnsight_two_traces,),
    "3.4": (ablation_with_the_hooks_library,), "3.5": (tl_ablation_with_a_filter_function,),
    "3.6": (nnsight_ablation_with_a_zero_mask,), "3.7": (pattern_with_sdpa_style_additive_mask,),
    "3.8": (sequences_with_einops_repeat,), "3.9": (copies_with_a_mask,), "3.10": (previous_token_in_a_loop,),
    "3.11": (induction_in_a_loop,), "3.12": (ablating_with_nested_recursion,), "3.13": (k_composition_with_einsum,),
    "3.14": (shards_from_a_list_of_chunks,), "3.15": (composition_from_transformer_lens,),
    "3.16": (resample_with_head_outputs,),
    "4.1": (stack_from_the_hidden_states_but_the_last,), "4.2": (lens_of_every_position_then_one,),
    "4.3": (positions_with_gather,), "4.4": (heads_in_a_loop,), "4.5": (scale_by_hand,),
    "4.6": (contributions_with_einsum,), "4.7": (formation_in_a_loop,), "4.8": (kl_with_torch_kl_div,),
    "4.9": (lens_step_with_the_kl_by_hand,), "4.10": (agreement_with_topk,), "4.11": (directions_from_the_covariance,),
    "4.12": (ranks_by_sorting,), "4.13": (score_from_another_cyclic_order,), "4.14": (translator_from_centred_data,),
    "5.1": (caa_as_the_mean_of_differences,), "5.2": (steering_with_cat,), "5.3": (settings_with_itertools,),
    "5.4": (rate_with_a_counter,), "5.5": (mean_difference_from_sums,), "5.6": (pca_from_the_covariance,),
    "5.7": (actadd_one_prompt_at_a_time,), "5.8": (accuracy_with_labels,), "5.9": (project_out_with_a_projection_matrix,),
    "5.10": (ablate_with_forward_hooks,), "5.11": (refusal_with_the_library_mean_difference,),
    "5.12": (function_vector_with_the_library_mean_difference,), "5.13": (variants_with_einops,),
    "5.14": (neutral_loss_with_a_forward_hook,),
    "6.1": (sae_with_a_topk_mask,), "6.2": (sae_loss_with_einsum,), "6.3": (explained_variance_with_var,),
    "6.4": (parallel_component_as_a_projection_matrix,), "6.5": (step_with_the_forward_module_and_set_to_none,),
    "6.6": (jumprelu_with_where_and_a_heaviside,), "6.7": (sparsity_with_counts,),
    "6.8": (spliced_with_the_library_replacement,),
    "6.9": (top_activations_by_sorting,), "6.10": (effects_with_einsum_and_argsort,), "6.11": (auroc_from_all_pairs,),
    "6.12": (best_latent_with_split_aurocs,), "6.13": (aligned_with_cosine_similarity,),
    "6.14": (projection_with_the_pseudo_inverse,), "6.15": (batch_topk_with_a_threshold,),
    "6.16": (decoder_matches_row_by_row,),
    "7.1": (pairs_tokenized_as_a_batch,), "7.2": (metric_as_one_minus_the_gap,), "7.3": (head_with_a_mask,),
    "7.4": (copy_where_copy_by_copy,),
    "7.5": (heads_ablated_one_by_one_with_slices,), "7.6": (head_positions_with_a_loop_over_heads,),
    "7.7": (attribution_as_a_sum_of_products,),
    "7.8": (integrated_walked_from_the_clean_end_one_point_at_a_time,), "7.9": (nodes_layer_by_layer_with_sums,),
    "7.10": (masks_from_index_lists,), "7.11": (faithfulness_against_the_model_without_saes,),
    "7.12": (completeness_as_one_minus_the_share_lost,), "7.13": (edges_one_upstream_node_at_a_time,),
    "7.14": (path_from_the_batched_sweep,), "7.15": (to_logits_with_one_mask_per_layer,),
    "7.16": (residual_one_position_per_pass,),
}
