"""Tests for the generation loop and beam search of utils/decoding.py: token for token the same as
``model.generate`` on the course model and on tiny random GPT-2, Pythia (GPT-NeoX) and Llama models;
the chapter's exercise checkers accept the references and reject typical wrong answers."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest
import torch
from transformers import AutoModel

from utils import decoding
from utils.checkers.prompting import (
    _tokens_fed_per_call, check_apply_repetition_penalty, check_greedy_generate, check_min_p_filter,
    check_top_beam_continuations, check_top_k_filter, check_top_p_filter,
)
from utils.checks import assert_accepts, assert_rejects
from utils.decoding import (
    Decoding, beam_search, generate, generate_text, plot_filtered_distributions, top_k_filter, top_p_filter,
)
from utils.models import tiny_random_model

EOS = 0
PROMPTS = ["Record:", "Q: 47 + 38 = ?\nA: Step by step:", "One day, Anna went to the", "monday -> MONDAY\nparis ->"]


@pytest.fixture(scope="module", params=["gpt2", "gpt_neox", "llama"])
def tiny_model(request):
    return tiny_random_model(request.param)


def prompt_ids(tokenizer, prompt: str) -> torch.Tensor:
    return torch.tensor([[tokenizer.bos_token_id, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]])


def left_padded_batch(tokenizer, prompts: list[str]):
    return tokenizer([tokenizer.bos_token + p for p in prompts], return_tensors="pt", padding=True,
                     padding_side="left", add_special_tokens=False)


def assert_same_as_beam_generate(model, input_ids, num_beams, max_new_tokens, **kwargs):
    expected = model.generate(input_ids, num_beams=num_beams, do_sample=False, max_new_tokens=max_new_tokens,
                              pad_token_id=EOS, **kwargs)[0]
    actual = beam_search(model, input_ids, num_beams, max_new_tokens, **kwargs)[0]
    assert torch.equal(actual, expected[: len(actual)]), (actual.tolist(), expected.tolist())
    assert (expected[len(actual):] == EOS).all()  # transformers pads the shorter result with the end token


# --------------------------------------------------------------------------------------------
# generate equals model.generate


def test_greedy_matches_transformers_on_a_left_padded_batch(course_model, course_tokenizer):
    batch = left_padded_batch(course_tokenizer, PROMPTS)
    expected = course_model.generate(**batch, do_sample=False, max_new_tokens=30, eos_token_id=EOS, pad_token_id=EOS)
    actual = generate(course_model, batch.input_ids, 30, attention_mask=batch.attention_mask, eos_token_id=EOS)
    assert torch.equal(actual, expected)


@pytest.mark.parametrize("settings", [
    dict(temperature=1.0),
    dict(temperature=0.7, top_k=20),
    dict(temperature=1.3, top_p=0.9),
    dict(temperature=1.0, min_p=0.05),
    dict(temperature=1.0, typical_p=0.8),
    dict(temperature=0.8, top_k=30, top_p=0.95, min_p=0.02, repetition_penalty=1.3),
], ids=str)
def test_sampling_matches_transformers_with_the_same_seed(course_model, course_tokenizer, settings):
    """``transformers`` samples with top_k=50 unless told otherwise (top_k=0 turns it off)."""
    batch = left_padded_batch(course_tokenizer, PROMPTS)
    torch.manual_seed(5)
    expected = course_model.generate(**batch, do_sample=True, max_new_tokens=30, eos_token_id=EOS,
                                     pad_token_id=EOS, **{"top_k": 0, **settings})
    torch.manual_seed(5)
    actual = generate(course_model, batch.input_ids, 30, attention_mask=batch.attention_mask, eos_token_id=EOS,
                      decoding=Decoding(**settings))
    assert torch.equal(actual, expected)


def test_greedy_with_repetition_penalty_matches_transformers(course_model, course_tokenizer):
    input_ids = prompt_ids(course_tokenizer, "One day, Anna went to the")
    expected = course_model.generate(input_ids, do_sample=False, repetition_penalty=1.5, max_new_tokens=30,
                                     pad_token_id=EOS)
    actual = generate(course_model, input_ids, 30, decoding=Decoding(repetition_penalty=1.5))
    assert torch.equal(actual, expected)


def test_greedy_matches_transformers_on_tiny_random_models(tiny_model):
    input_ids = torch.randint(1, 300, (3, 7), generator=torch.Generator().manual_seed(0))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :3] = 0  # a left-padded row
    expected = tiny_model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=False,
                                   max_new_tokens=12, pad_token_id=EOS)
    assert torch.equal(generate(tiny_model, input_ids, 12, attention_mask=attention_mask), expected)


def test_a_custom_logits_processor_is_applied_like_in_transformers(course_model, course_tokenizer):
    """A processor that bans the digit tokens: the same hook works in both loops."""
    digits = torch.tensor([course_tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)])

    def ban_digits(input_ids, scores):
        return scores.index_fill(-1, digits, -torch.inf)

    input_ids = prompt_ids(course_tokenizer, "Q: 47 + 38 = ?\nA: The answer is")
    expected = course_model.generate(input_ids, do_sample=False, max_new_tokens=10, logits_processor=[ban_digits],
                                     pad_token_id=EOS)
    actual = generate(course_model, input_ids, 10, decoding=Decoding(logits_processors=[ban_digits]))
    assert torch.equal(actual, expected)
    assert not torch.isin(actual[0, input_ids.shape[1]:], digits).any()


def test_rows_that_end_are_padded_and_generation_stops_when_all_end(course_model, course_tokenizer):
    input_ids = prompt_ids(course_tokenizer, "Record:")
    tokens = generate(course_model, input_ids, 100, eos_token_id=EOS)
    assert tokens.shape[1] < input_ids.shape[1] + 100 and tokens[0, -1] == EOS   # a record ends the document
    assert course_tokenizer.decode(tokens[0, input_ids.shape[1]:-1]).startswith(' {"name": ')


def test_the_kv_cache_feeds_one_position_per_step(course_model):
    def run():
        generate(course_model, torch.tensor([[0, 5, 6]]), 5, eos_token_id=())

    assert _tokens_fed_per_call(course_model, run) == [3, 1, 1, 1, 1]


def test_sampling_is_reproducible_with_a_generator(course_model, course_tokenizer):
    input_ids = prompt_ids(course_tokenizer, "One day,")
    runs = [generate(course_model, input_ids, 20, decoding=Decoding(temperature=1.0),
                     generator=torch.Generator().manual_seed(0)) for _ in range(2)]
    assert torch.equal(*runs)


def test_generate_text_batches_prompts_and_stops_at_the_stop_string(course_model, course_tokenizer):
    prompts = ["Q: 47 + 38 = ?\nA: Step by step:", "Record:", "The capital of Norway is"]
    batched = generate_text(course_model, course_tokenizer, prompts, 48, stop="\n")
    one_by_one = [generate_text(course_model, course_tokenizer, [prompt], 48, stop="\n")[0] for prompt in prompts]
    assert batched == one_by_one
    assert batched[0] == " 7 + 8 = 15, carry 1. 4 + 3 + 1 = 8. The answer is 85."
    assert batched[1].startswith(' {"name": ') and batched[1].endswith("}")   # cut before the newline
    assert all("\n" not in text for text in batched)


def test_generate_text_samples_reproducibly_with_a_seed(course_model, course_tokenizer):
    def sampled(seed):
        return generate_text(course_model, course_tokenizer, ["One day,"] * 3, 20, decoding=Decoding(temperature=1.0),
                             seed=seed)

    assert sampled(0) == sampled(0) and sampled(0) != sampled(1)


@pytest.mark.parametrize("prompts, match", [([""], "empty prompt"), ([], "empty prompt"), ("Record:", "list")])
def test_generate_text_rejects_bad_prompts(course_model, course_tokenizer, prompts, match):
    with pytest.raises(ValueError, match=match):
        generate_text(course_model, course_tokenizer, prompts, 5)


# --------------------------------------------------------------------------------------------
# beam_search equals model.generate(num_beams=...)


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("prompt", PROMPTS[:3])
def test_beam_search_matches_transformers(course_model, course_tokenizer, prompt, num_beams):
    assert_same_as_beam_generate(course_model, prompt_ids(course_tokenizer, prompt), num_beams, 30, eos_token_id=EOS)


@pytest.mark.parametrize("length_penalty", [-1.0, 0.0, 2.0])
def test_beam_search_matches_transformers_with_a_length_penalty(course_model, course_tokenizer, length_penalty):
    assert_same_as_beam_generate(course_model, prompt_ids(course_tokenizer, "Record:"), 4, 40, eos_token_id=EOS,
                                 length_penalty=length_penalty)


def test_beam_search_stops_early_once_no_beam_can_win(course_model, course_tokenizer):
    """Records end after ~25 tokens: the search stops there, not at max_new_tokens."""
    input_ids = prompt_ids(course_tokenizer, "Record:")
    calls = _tokens_fed_per_call(course_model, lambda: beam_search(course_model, input_ids, 3, 120,
                                                                              eos_token_id=EOS))
    assert len(calls) < 60
    assert_same_as_beam_generate(course_model, input_ids, 3, 120, eos_token_id=EOS)


def test_beam_search_matches_transformers_on_tiny_random_models(tiny_model):
    input_ids = torch.randint(1, 300, (1, 6), generator=torch.Generator().manual_seed(1))
    assert_same_as_beam_generate(tiny_model, input_ids, 3, 12, eos_token_id=5)
    assert_same_as_beam_generate(tiny_model, input_ids, 4, 10)


def test_beam_search_with_one_beam_is_greedy_decoding(course_model, course_tokenizer):
    input_ids = prompt_ids(course_tokenizer, "One day, Anna went to the")
    assert torch.equal(beam_search(course_model, input_ids, 1, 20), generate(course_model, input_ids, 20))


def test_generation_stops_at_the_model_s_end_token_unless_told_otherwise(course_model, course_tokenizer):
    input_ids = prompt_ids(course_tokenizer, "Record:")
    assert generate(course_model, input_ids, 40)[0, -1] == course_tokenizer.eos_token_id
    assert generate(course_model, input_ids, 40, eos_token_id=()).shape[1] == input_ids.shape[1] + 40


# --------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("call, match", [
    (lambda m: generate(m, torch.zeros(1, 0, dtype=torch.long), 5), "empty prompt"),
    (lambda m: generate(m, torch.tensor([1, 2, 3]), 5), r"\[batch, seq\]"),
    (lambda m: generate(m, torch.tensor([[1, 2]]), 0), "max_new_tokens"),
    (lambda m: generate(m, torch.tensor([[1, 5000]]), 3), r"token ids must be in \[0, 2048\)"),
    (lambda m: generate(m, torch.ones(1, 250, dtype=torch.long), 10), "256 positions"),
    (lambda m: generate(m, torch.ones(2, 3, dtype=torch.long), 4, attention_mask=torch.ones(2, 4)), "attention_mask"),
    (lambda m: generate(m, torch.tensor([[1, 2]]), 3, decoding=Decoding(temperature=-1.0)), "temperature"),
    (lambda m: generate(m, torch.tensor([[1, 2]]), 3, decoding=Decoding(temperature=1.0, top_p=1.5)), r"\bp\b"),
    (lambda m: generate(m, torch.tensor([[1, 2]]), 3, decoding=Decoding(temperature=1.0, top_k=0)), r"\bk\b"),
    (lambda m: generate(m, torch.tensor([[1, 2]]), 3, decoding=Decoding(repetition_penalty=0.0)), "penalty"),
    (lambda m: beam_search(m, torch.ones(2, 3, dtype=torch.long), 2, 5), "one prompt"),
    (lambda m: beam_search(m, torch.ones(1, 3, dtype=torch.long), 0, 5), "num_beams"),
])
def test_bad_input_raises_a_clear_error(course_model, call, match):
    with pytest.raises(ValueError, match=match):
        call(course_model)


def test_temperature_zero_is_greedy(course_model, course_tokenizer):
    input_ids = prompt_ids(course_tokenizer, "One day,")
    assert torch.equal(generate(course_model, input_ids, 15, decoding=Decoding(temperature=0.0, top_k=3)),
                       course_model.generate(input_ids, do_sample=False, max_new_tokens=15, pad_token_id=EOS))


def test_a_model_without_a_language_model_head_is_refused(tmp_path):
    tiny_random_model("gpt2").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="AutoModelForCausalLM"):
        generate(AutoModel.from_pretrained(tmp_path), torch.tensor([[1, 2]]), 3)


def test_plot_shows_one_bar_series_per_distribution(course_model, course_tokenizer):
    logits = course_model(prompt_ids(course_tokenizer, "One day, Anna went to the")).logits[0, -1].detach()
    figure = plot_filtered_distributions(course_tokenizer, logits, {"top-k 3": top_k_filter(logits[None], 3)[0],
                                                             "top-p 0.5": top_p_filter(logits[None], 0.5)[0]}, top=10)
    assert isinstance(figure, go.Figure) and [trace.name for trace in figure.data][1:] == ["top-k 3", "top-p 0.5"]
    assert all(len(trace.y) == 10 for trace in figure.data)
    assert sum(y > 0 for y in figure.data[1].y) == 3


# --------------------------------------------------------------------------------------------
# Checkers: accept the reference, reject typical wrong answers


def top_k_with_exactly_k(logits, k):
    kept = logits.topk(min(k, logits.shape[-1])).indices
    return torch.full_like(logits, -torch.inf).scatter(-1, kept, logits.gather(-1, kept))


def top_k_without_capping(logits, k):
    threshold = logits.topk(k).values[:, -1:]
    return logits.masked_fill(logits < threshold, -torch.inf)


def top_k_keeping_the_smallest(logits, k):
    threshold = (-logits).topk(k).values[:, -1:]
    return logits.masked_fill(-logits < threshold, -torch.inf)


def test_top_k_checker():
    assert_accepts(check_top_k_filter(top_k_filter))
    assert_rejects(check_top_k_filter(top_k_with_exactly_k), "ties")
    assert_rejects(check_top_k_filter(top_k_without_capping), "larger than the vocabulary")
    assert_rejects(check_top_k_filter(top_k_keeping_the_smallest), "batch of 4")


def top_p_excluding_the_crossing_token(logits, p):
    probs, order = logits.softmax(-1).sort(descending=True)
    remove = probs.cumsum(-1) > p
    return logits.masked_fill(remove.scatter(-1, order, remove), -torch.inf)


def top_p_on_logits_not_probabilities(logits, p):
    values, order = logits.sort(descending=True)
    remove = values.cumsum(-1) - values > p
    return logits.masked_fill(remove.scatter(-1, order, remove), -torch.inf)


def top_p_without_unsorting(logits, p):
    probs = logits.softmax(-1).sort(descending=True).values
    remove = probs.cumsum(-1) - probs >= p
    return logits.masked_fill(remove, -torch.inf)


def test_top_p_checker():
    assert_accepts(check_top_p_filter(top_p_filter))
    assert_rejects(check_top_p_filter(top_p_excluding_the_crossing_token), "p=")
    assert_rejects(check_top_p_filter(top_p_on_logits_not_probabilities), "p=")
    assert_rejects(check_top_p_filter(top_p_without_unsorting), "batch of 4")


def min_p_on_logits(logits, min_p):
    return logits.masked_fill(logits < min_p * logits.amax(-1, keepdim=True), -torch.inf)


def min_p_over_the_batch(logits, min_p):
    probs = logits.softmax(-1)
    return logits.masked_fill(probs < min_p * probs.max(), -torch.inf)


def test_min_p_checker():
    assert_accepts(check_min_p_filter(decoding.min_p_filter))
    assert_rejects(check_min_p_filter(min_p_on_logits), "min_p")
    assert_rejects(check_min_p_filter(min_p_over_the_batch), "batch of 4")


def penalty_dividing_every_logit(logits, previous_tokens, penalty):
    return logits.scatter(-1, previous_tokens, logits.gather(-1, previous_tokens) / penalty)


def penalty_once_per_occurrence(logits, previous_tokens, penalty):
    logits = logits.clone()
    for row, tokens in enumerate(previous_tokens):
        for token in tokens:
            value = logits[row, token]
            logits[row, token] = value * penalty if value < 0 else value / penalty
    return logits


def test_repetition_penalty_checker():
    assert_accepts(check_apply_repetition_penalty(decoding.apply_repetition_penalty))
    assert_rejects(check_apply_repetition_penalty(penalty_dividing_every_logit), "tokens 0 and 1")
    assert_rejects(check_apply_repetition_penalty(penalty_once_per_occurrence), "three times")


def greedy_generate_reference(model, input_ids, max_new_tokens):
    tokens, fed, cache = input_ids, input_ids, None
    for _ in range(max_new_tokens):
        out = model(input_ids=fed, past_key_values=cache, use_cache=True)
        cache, fed = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        tokens = torch.cat([tokens, fed], dim=1)
    return tokens


def greedy_generate_without_cache(model, input_ids, max_new_tokens):
    tokens = input_ids
    for _ in range(max_new_tokens):
        tokens = torch.cat([tokens, model(tokens).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return tokens


def greedy_generate_one_short(model, input_ids, max_new_tokens):
    return greedy_generate_reference(model, input_ids, max_new_tokens - 1)


def greedy_generate_first_position(model, input_ids, max_new_tokens):
    tokens, fed, cache = input_ids, input_ids, None
    for _ in range(max_new_tokens):
        out = model(input_ids=fed, past_key_values=cache, use_cache=True)
        cache, fed = out.past_key_values, out.logits[:, 0].argmax(-1, keepdim=True)
        tokens = torch.cat([tokens, fed], dim=1)
    return tokens


def test_greedy_generate_checker(course_model):
    with torch.no_grad():
        assert_accepts(check_greedy_generate(greedy_generate_reference, course_model))
        assert_rejects(check_greedy_generate(greedy_generate_without_cache, course_model), "KV cache")
        assert_rejects(check_greedy_generate(greedy_generate_one_short, course_model), "shape")
        assert_rejects(check_greedy_generate(greedy_generate_first_position, course_model), "first difference")


def continuations_ignoring_beam_scores(beam_scores, log_probs, k):
    return decoding.top_beam_continuations(torch.zeros_like(beam_scores), log_probs, k)


def continuations_per_beam(beam_scores, log_probs, k):
    candidates = beam_scores[:, None] + log_probs
    per_beam = -(-k // len(beam_scores))
    scores, tokens = candidates.topk(per_beam, dim=-1)
    beams = torch.arange(len(beam_scores))[:, None].expand_as(tokens)
    return scores.flatten()[:k], beams.flatten()[:k], tokens.flatten()[:k]


def continuations_with_swapped_indices(beam_scores, log_probs, k):
    scores, flat = (beam_scores[:, None] + log_probs).flatten().topk(k)
    return scores, flat % log_probs.shape[-1], flat // log_probs.shape[-1]


def test_top_beam_continuations_checker():
    assert_accepts(check_top_beam_continuations(decoding.top_beam_continuations))
    assert_rejects(check_top_beam_continuations(continuations_ignoring_beam_scores), "3 beams")
    assert_rejects(check_top_beam_continuations(continuations_per_beam), "3 beams")
    assert_rejects(check_top_beam_continuations(continuations_with_swapped_indices), "3 beams")
