"""Checkers for the exercises of chapter 1 (prompting and decoding), kept apart from the library code they check.

Each ``check_<exercise>(learner_fn, ...)`` runs the learner's function and the library's reference
on inputs chosen so that every plausible mistake shows (see ``utils.checks``), and prints one line.
``tests/test_mutation.py`` and ``tests/test_wrong_answers.py`` prove that each rejects wrong answers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor
from transformers import PreTrainedModel

from utils.checks import Case, CheckResult, Varies, check_function, report
from utils.course_model.evaluate import Record
from utils.decoding import (
    apply_repetition_penalty, generate, min_p_filter, token_strings, top_beam_continuations, top_k_filter, top_p_filter,
)
from utils.models import tiny_random_model
from utils.prompt_eval import wilson_interval
from utils.soft_prompts import SoftPrompt, logits_with_soft_prompt
from utils.structured import (
    CharFSM, INTEGER_REGEX, RECORD_PREFIX, STRING_REGEX, regex_for_schema, token_transitions,
)


# ---------------------------------------------------------------------------------------------
# Exercises on utils.decoding


def _random_logits(batch: int, vocab: int, seed: int) -> Float[Tensor, "batch vocab"]:
    return 3 * torch.randn(batch, vocab, generator=torch.Generator().manual_seed(seed))


def check_top_k_filter(learner_fn: Callable) -> CheckResult:
    """Exercise 1.1 on random logits, k = 1, k above the vocabulary size, and ties at the k-th logit."""
    ties = torch.tensor([[2.0, 1.0, 1.0, 0.0, 1.0, -1.0]])
    cases = [Case("batch of 4, k=5", _random_logits(4, 50, seed=0), 5),
             Case("batch of 1, k=1", _random_logits(1, 50, seed=1), 1),
             Case("k=80 larger than the vocabulary of 50", _random_logits(2, 50, seed=2), 80),
             Case("ties: logits [2, 1, 1, 0, 1, -1] with k=2", ties, 2)]
    return check_function(
        learner_fn, top_k_filter, cases, exercise="1.1 (top_k_filter)",
        properties=[Varies("k", lambda k: k + 1, "ignores k")],
        hint="find each row's k-th largest logit (the smallest of the values topk returns) and set every logit below "
             "it to -inf; compare with '<' so that tokens tied with the k-th are kept, and cap k at the vocabulary "
             "size")


def check_top_p_filter(learner_fn: Callable) -> CheckResult:
    """Exercise 1.2 on random logits (no ties) for several p, and a row whose top token alone exceeds p."""
    peaked = torch.tensor([[8.0, 1.0, 0.5, 0.0, -1.0]])
    cases = [Case("batch of 4, p=0.9", _random_logits(4, 50, seed=3), 0.9),
             Case("batch of 1, p=0.5", _random_logits(1, 50, seed=4), 0.5),
             Case("p=1 keeps every token", _random_logits(2, 20, seed=5), 1.0),
             Case("one token has 99.7% of the mass, p=0.9", peaked, 0.9)]
    return check_function(
        learner_fn, top_p_filter, cases, exercise="1.2 (top_p_filter)",
        properties=[Varies("p", lambda p: p / 2, "ignores p")],
        hint="keep the most likely tokens up to and including the one whose cumulative probability "
             "reaches p (so at least one token stays); sort by probability, take the cumulative sum of "
             "softmax probabilities (not of logits), then map the mask back to vocabulary order with scatter")


def check_min_p_filter(learner_fn: Callable) -> CheckResult:
    """Exercise 1.3 on a peaked row, a flat row, random batches and tokens exactly at the threshold."""
    cases = [Case("batch of 4, min_p=0.1", _random_logits(4, 50, seed=6), 0.1),
             Case("peaked row [8, 1, 0.5, 0, -1], min_p=0.01", torch.tensor([[8.0, 1.0, 0.5, 0.0, -1.0]]), 0.01),
             Case("flat row [1, 0.9, 0.8, 0.7], min_p=0.5", torch.tensor([[1.0, 0.9, 0.8, 0.7]]), 0.5),
             Case("min_p=0 keeps every token", _random_logits(2, 20, seed=7), 0.0),
             Case("three equal tokens and a less likely one, min_p=1: the equal ones stay",
                  torch.tensor([[0.0, 0.0, 0.0, -1.0]]), 1.0)]
    return check_function(
        learner_fn, min_p_filter, cases, exercise="1.3 (min_p_filter)",
        properties=[Varies("min_p", lambda min_p: min_p / 2, "ignores min_p")],
        hint="compare probabilities, not logits: a token stays when softmax(logits) >= min_p times the largest "
             "probability of its own row (keepdim so the comparison broadcasts over the vocabulary)")


def check_apply_repetition_penalty(learner_fn: Callable) -> CheckResult:
    """Exercise 1.4 with positive and negative logits, repeated previous tokens, and a penalty below 1."""
    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0, 0.5]])
    cases = [Case("logits [2, -2, 1, -1, 0.5], tokens 0 and 1 seen", logits, torch.tensor([[0, 1]]), 2.0),
             Case("a token seen three times is penalised once", logits, torch.tensor([[3, 3, 3]]), 1.5),
             Case("penalty 0.5 rewards repetition", logits, torch.tensor([[0, 3]]), 0.5),
             Case("batch of 3, vocab 50", _random_logits(3, 50, seed=8),
                  torch.randint(50, (3, 6), generator=torch.Generator().manual_seed(9)), 1.3)]
    return check_function(
        learner_fn, apply_repetition_penalty, cases, exercise="1.4 (apply_repetition_penalty)",
        properties=[Varies("penalty", lambda penalty: penalty + 1, "ignores the penalty")],
        hint="gather the logits of the seen tokens, divide the positive ones by the penalty and multiply the "
             "negative ones by it (torch.where), then scatter them back into a copy; a repeated token must "
             "not be penalised twice")


def _tokens_fed_per_call(model: PreTrainedModel, run: Callable[[], object]) -> list[int]:
    """How many positions ``model`` was given at each forward call while ``run()`` ran."""
    lengths: list[int] = []

    def record(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        lengths.append(int(input_ids.shape[-1]) if input_ids is not None else -1)

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        run()
    finally:
        handle.remove()
    return lengths


def check_greedy_generate(learner_fn: Callable, model: PreTrainedModel) -> CheckResult:
    """Exercise 1.5: same tokens as ``model.generate(do_sample=False)``, and the KV cache really used.

    Inputs: ``model`` with a batch of 2 and with the BOS token alone, then tiny random Pythia
    (GPT-NeoX) and Llama models.
    """
    def case(name: str, checked_model: PreTrainedModel, batch: int, prompt: int, new: int) -> Case:
        generator = torch.Generator().manual_seed(batch * 10 + prompt)
        input_ids = torch.randint(1, checked_model.config.vocab_size, (batch, prompt), generator=generator)
        return Case(name, checked_model, input_ids, new)

    exercise = "1.5 (greedy_generate)"
    hint = ("run the whole prompt once with use_cache=True, then feed only the newest token together with the cache "
            "that the previous call returned (its past_key_values); append each step's argmax at the last position "
            "to the tokens")
    lengths = _tokens_fed_per_call(model, lambda: learner_fn(model, torch.tensor([[0, 5, 6, 7, 8]]), 4))
    if len(lengths) > 1 and max(lengths[1:]) > 1:
        return report(exercise, False, f"the model was given {lengths} positions at its {len(lengths)} forward calls: "
                      "after the first call only the new token should go in, the rest is in the KV cache", hint=hint)
    cases = [case("your model, batch of 2, prompt of 6", model, 2, 6, 8),
             Case("your model, the BOS token alone", model, torch.tensor([[0]]), 5),
             case("tiny random Pythia (GPT-NeoX)", tiny_random_model("gpt_neox"), 2, 4, 6),
             case("tiny random Llama", tiny_random_model("llama"), 1, 3, 6)]
    return check_function(learner_fn, lambda m, ids, n: generate(m, ids, n, eos_token_id=()), cases,
                          exercise=exercise, hint=hint)


def check_top_beam_continuations(learner_fn: Callable) -> CheckResult:
    """Exercise 1.6: the best candidates across beams, with the beams' own scores added."""
    def case(name: str, beams: int, vocab: int, k: int, seed: int) -> Case:
        generator = torch.Generator().manual_seed(seed)
        log_probs = torch.randn(beams, vocab, generator=generator).log_softmax(dim=-1)
        beam_scores = -5 * torch.rand(beams, generator=generator)
        return Case(name, beam_scores, log_probs, k)

    cases = [case("3 beams, vocab 20, k=6", 3, 20, 6, seed=0), case("1 beam, k=2", 1, 20, 2, seed=1),
             case("4 beams, vocab 7, k=8", 4, 7, 8, seed=2),
             Case("beam 1 is far behind: its best token must not win",
                  torch.tensor([0.0, -20.0]), torch.tensor([[-3.0, -1.0, -2.0], [-0.1, -5.0, -4.0]]).log_softmax(-1), 2)]
    return check_function(
        learner_fn, top_beam_continuations, cases, exercise="1.6 (top_beam_continuations)",
        properties=[Varies("beam_scores", torch.zeros_like, "ignores the beams' scores"),
                    Varies("k", lambda k: k - 1, "ignores k")],
        hint="add each beam's score to its row of log-probabilities, flatten [beams, vocab] to one row and take "
             "its top k; the beam is flat_index // vocab and the token flat_index % vocab")


# ---------------------------------------------------------------------------------------------
# Exercises on utils.prompt_eval


def check_wilson_interval(learner_fn: Callable) -> CheckResult:
    """Exercise 1.7: 8/10, the extremes 0/n and n/n, a small n, and another confidence level."""
    cases = [Case("8 right out of 10", 8, 10), Case("0 right out of 20 (the interval is not empty)", 0, 20),
             Case("50 right out of 50", 50, 50), Case("1 right out of 3", 1, 3),
             Case("42 out of 50 at confidence 0.9", 42, 50, 0.9)]
    return check_function(
        learner_fn, wilson_interval, cases, exercise="1.7 (wilson_interval)", atol=1e-6,
        properties=[Varies("confidence", lambda confidence: 0.95, "ignores the confidence level")],
        hint="z is the standard normal quantile of (1 + confidence) / 2 (1.96 for 95 %, from "
             "statistics.NormalDist().inv_cdf); centre = (p + z²/2n) / (1 + z²/n) and half-width = "
             "z √(p(1-p)/n + z²/4n²) / (1 + z²/n): not the textbook p ± z √(p(1-p)/n)")


# ---------------------------------------------------------------------------------------------
# Exercises on utils.structured


def _state_after(fsm: CharFSM, text: str) -> int:
    state = fsm.walk(fsm.initial, text)
    assert state is not None, f"{text!r} does not start a match of {fsm.pattern!r}"
    return state


def check_token_transitions(learner_fn: Callable, *, exercise: str = "1.8 (token_transitions)") -> CheckResult:
    """The lab's exercise: hand-made token lists on small automata, then the course tokenizer on the
    Record schema. The cases catch checking only a token's first character, allowing the empty
    string or a ``'\\ufffd'`` token, returning the state after the first character only, and
    taking the start state (id 0) for a dead end.

    ``exercise`` is the label printed (the chapter notebook numbers its exercises)."""
    from utils.models import load_tokenizer

    pairs = CharFSM.from_regex("(ab|ac)+")
    tokens = ["a", "b", "c", "ab", "ac", "abac", "aba", "ad", "abx", "ba", "", "\ufffd", "acab"]
    digits = CharFSM.from_regex(INTEGER_REGEX)
    number_tokens = ["0", "7", "42", "01", "-", "-0", "-7", "4a", "10", "", "\ufffd"]
    json_string = CharFSM.from_regex(STRING_REGEX + ",")
    string_tokens = ["a", "ab", '"', '",', '" ,', '"x', "\ufffd", "", "é", " x"]
    loop = CharFSM.from_regex("(ab)*")           # "ab" leads back to the start state, whose id is 0
    loop_tokens = ["a", "b", "ab", "abab", "aba", "ba", "bab", "", "\ufffd"]
    record = CharFSM.from_regex(RECORD_PREFIX + regex_for_schema(Record))
    course_tokens = token_strings(load_tokenizer("course"))
    cases = [
        Case("'(ab|ac)+' at the start: tokens such as 'ad' fit only at their first character",
             pairs, pairs.initial, tokens),
        Case("'(ab|ac)+' after 'a': the state after a token is not the state after its first character",
             pairs, _state_after(pairs, "a"), tokens),
        Case("'(ab|ac)+' after 'ab' (a final state): the empty token must not be allowed",
             pairs, _state_after(pairs, "ab"), tokens),
        Case("an integer at the start: '01' has a leading zero", digits, digits.initial, number_tokens),
        Case("'(ab)*' after 'a': 'b' and 'bab' lead back to the start state (state 0 is a state, not a failure)",
             loop, _state_after(loop, "a"), loop_tokens),
        Case("inside a JSON string: '\\ufffd' (part of a multi-byte character) is never allowed",
             json_string, _state_after(json_string, '"ab'), string_tokens),
        Case("the Record schema after ' {\"name\": \"A', course tokenizer", record,
             _state_after(record, ' {"name": "A'), course_tokens),
    ]
    return check_function(
        learner_fn, token_transitions, cases, exercise=exercise,
        hint="walk every character of a token's text from `state` with fsm.step (or fsm.walk) and keep the token "
             "only if no step returns None; map it to the state after its LAST character; skip empty texts and "
             "texts containing '\\ufffd'")


# ---------------------------------------------------------------------------------------------
# Exercises on utils.soft_prompts


def check_logits_with_soft_prompt(learner_fn: Callable, model: PreTrainedModel, *,
                                  exercise: str = "1.9 (logits_with_soft_prompt)") -> CheckResult:
    """The exercise on ``model`` (batch of 2, batch of 1, 1 and 8 soft tokens) and on tiny random
    GPT-NeoX (Pythia) and Llama models, whose rotary positions need no position embedding.

    ``exercise`` is the label printed (the chapter notebook numbers its exercises)."""
    def case(name: str, checked_model: PreTrainedModel, batch: int, seq: int, n_tokens: int) -> Case:
        generator = torch.Generator().manual_seed(100 * batch + 10 * seq + n_tokens)
        input_ids = torch.randint(checked_model.config.vocab_size, (batch, seq), generator=generator)
        soft_prompt = SoftPrompt.from_vocabulary(checked_model, n_tokens, seed=n_tokens).embeddings.detach()
        return Case(f"{name}: {n_tokens} soft tokens, input_ids {tuple(input_ids.shape)}",
                    checked_model, soft_prompt, input_ids)

    cases = [case("your model, batch of 2", model, 2, 6, 4),
             case("your model, batch of 1", model, 1, 5, 3),
             case("your model, 1 soft token", model, 3, 4, 1),
             case("your model, 8 soft tokens", model, 2, 5, 8),
             case("tiny random Pythia (GPT-NeoX)", tiny_random_model("gpt_neox"), 2, 5, 3),
             case("tiny random Llama (rotary positions)", tiny_random_model("llama"), 2, 4, 2)]
    with torch.no_grad():
        return check_function(
            learner_fn, logits_with_soft_prompt, cases, exercise=exercise,
            atol=1e-4, rtol=1e-4,
            hint="embed input_ids with model.get_input_embeddings(), repeat the soft prompt for every "
                 "sequence of the batch (einops.repeat), concatenate it *before* the token embeddings "
                 "(dim=1), call model(inputs_embeds=...), and return only the logits of the real tokens "
                 "(drop the first n_tokens positions); the model adds positions itself")
