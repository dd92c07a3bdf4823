"""Checkers for the exercises of chapter 1 (prompting and decoding), kept apart from the library code they check.

Each ``check_<exercise>(learner_fn, ...)`` runs the learner's function and the library's reference
on inputs chosen so that every plausible mistake shows (see ``utils.checks``), and prints one line.
``tests/test_mutation.py`` and ``tests/test_wrong_answers.py`` prove that each rejects wrong answers.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from utils.checks import Case, CheckResult, Varies, check_function, float_losses, report
from utils.course_model.evaluate import Record
from utils.decoding import (
    apply_repetition_penalty, generate, min_p_filter, token_strings, top_beam_continuations, top_k_filter, top_p_filter,
    typical_filter,
)
from utils.models import frozen, tiny_random_model
from utils.prompt_eval import mcnemar_exact, parse_answer, wilson_interval
from utils.soft_prompts import (
    IGNORE, SoftPrompt, answer_batch, answer_matches, logits_with_soft_prompt, nearest_tokens, soft_prompt_step,
    split_queries, zero_shot_examples,
)
from utils.structured import (
    CharFSM, INTEGER_REGEX, RECORD_PREFIX, STRING_REGEX, mask_disallowed, regex_for_schema, token_transitions,
)
from utils.world import FEW_SHOT_TASKS


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


def _few_shot_problem(prompt: object, table: Mapping[str, str], query: str, n_shots: int) -> str | None:
    """What is wrong with ``prompt`` as a few-shot prompt of ``table`` for ``query``, or None."""
    if not isinstance(prompt, str):
        return f"returned a {type(prompt).__name__}: return the prompt as one string"
    *shots, last = prompt.split("\n")
    if last != f"{query} ->":
        if last.rstrip() == f"{query} ->":
            return (f"the last line is {last!r}: end right after '->', with no space (the answer's first token "
                    "carries its own space, ' Paris')")
        return f"the last line is {last!r}, expected {query + ' ->'!r}"
    if len(shots) != n_shots:
        return f"{len(shots)} lines before the query, expected n_shots={n_shots} solved examples"
    for line in shots:
        x, arrow, y = line.partition(" -> ")
        if not arrow or table.get(x) != y:
            return f"the line {line!r} is not a solved example 'x -> y' of the task's table"
        if x == query:
            return f"the solved example {line!r} answers the query itself: leave the query out of the shots"
    if len(set(shots)) != len(shots):
        return "a solved example appears twice: draw the shots without replacement (rng.sample)"
    return None


def _follows_only_its_rng(learner_fn: Callable, table: Mapping[str, str]) -> bool:
    """Whether two calls with ``random.Random(0)`` give the same prompt while the global ``random``
    state differs between them (the caller's global state is restored)."""
    state = random.getstate()
    try:
        prompts = []
        for global_seed in (1, 2):
            random.seed(global_seed)
            prompts.append(learner_fn(dict(table), "France", 3, random.Random(0)))
        return prompts[0] == prompts[1]
    finally:
        random.setstate(state)


def check_few_shot_prompt(learner_fn: Callable) -> CheckResult:
    """Exercise 1.7: the prompt's structure on the ``capital`` and ``uppercase`` tables, a small table
    where every other pair is a shot, 0 shots and a query outside the table; then that the shots
    come from ``rng`` (the same seed gives the same prompt whatever the global ``random`` state,
    and other seeds give other shots)."""
    exercise = "1.7 (few_shot_prompt)"
    hint = ("draw n_shots distinct keys from the table's keys other than the query with rng.sample, write one "
            "'x -> y' line per shot, each ending in a newline, then the query followed by ' ->' and nothing else")
    capitals, numbers = FEW_SHOT_TASKS["capital"], {"one": "1", "two": "2", "three": "3", "four": "4"}
    cases = [("capital, 'France', 3 shots", capitals, "France", 3, 0),
             ("capital, 0 shots: the query alone", capitals, "France", 0, 1),
             ("a table of 4, query 'two', 3 shots: every other pair", numbers, "two", 3, 2),
             ("a query outside the table ('Atlantis'), 2 shots", capitals, "Atlantis", 2, 3),
             ("uppercase, 'monday', 5 shots", FEW_SHOT_TASKS["uppercase"], "monday", 5, 4)]
    for name, table, query, n_shots, seed in cases:
        try:
            prompt = learner_fn(dict(table), query, n_shots, random.Random(seed))
        except NotImplementedError:
            raise
        except Exception as error:  # noqa: BLE001 - any other error is the learner's to fix
            return report(exercise, False, f"input '{name}': raised {type(error).__name__}: {error}", hint=hint)
        problem = _few_shot_problem(prompt, table, query, n_shots)
        if problem is not None:
            return report(exercise, False, f"input '{name}': {problem}", hint=hint)
    if not _follows_only_its_rng(learner_fn, capitals):
        return report(exercise, False, "two calls with random.Random(0) gave different prompts: draw the shots with "
                      "the rng argument, not the global random module", hint=hint)
    if len({learner_fn(dict(capitals), "France", 3, random.Random(seed)) for seed in range(5)}) == 1:
        return report(exercise, False, "five different rng seeds gave the same prompt: the shots should be drawn "
                      "with rng (rng.sample), not taken in a fixed order", hint=hint)
    return report(exercise, True, f"passed on {len(cases)} inputs, and the shots follow rng", learner_fn=learner_fn)


def check_wilson_interval(learner_fn: Callable) -> CheckResult:
    """Exercise 1.8: 8/10, the extremes 0/n and n/n, a small n, and another confidence level."""
    cases = [Case("8 right out of 10", 8, 10), Case("0 right out of 20 (the interval is not empty)", 0, 20),
             Case("50 right out of 50", 50, 50), Case("1 right out of 3", 1, 3),
             Case("42 out of 50 at confidence 0.9", 42, 50, 0.9)]
    return check_function(
        learner_fn, wilson_interval, cases, exercise="1.8 (wilson_interval)", atol=1e-6,
        properties=[Varies("confidence", lambda confidence: 0.95, "ignores the confidence level")],
        hint="z is the standard normal quantile of (1 + confidence) / 2 (1.96 for 95 %, from "
             "statistics.NormalDist().inv_cdf); centre = (p + z²/2n) / (1 + z²/n) and half-width = "
             "z √(p(1-p)/n + z²/4n²) / (1 + z²/n): not the textbook p ± z √(p(1-p)/n)")


def _answer_case(name: str, rows: list[tuple[int, int, int | None]], vocab: int = 11, seed: int = 0) -> Case:
    """Random logits and labels ``[batch, seq]`` for :func:`answer_matches`: each row is
    ``(prompt length, answer length, index of the answer token made wrong or None)``; the answer
    tokens are the argmax of the position before them (so a row is right unless made wrong), the
    prompt and the right padding are ``IGNORE``."""
    seq = max(prompt + answer for prompt, answer, _ in rows) + 1
    logits = torch.randn(len(rows), seq, vocab, generator=torch.Generator().manual_seed(seed))
    predicted = logits.argmax(dim=-1)                                          # [batch, seq]
    labels = torch.full((len(rows), seq), IGNORE)
    for row, (prompt, answer, wrong) in enumerate(rows):
        labels[row, prompt:prompt + answer] = predicted[row, prompt - 1:prompt + answer - 1]
        if wrong is not None:
            labels[row, prompt + wrong] = (labels[row, prompt + wrong] + 1) % vocab
    return Case(name, logits, labels)


def check_answer_matches(learner_fn: Callable) -> CheckResult:
    """Exercise 1.9 on rows that are right, wrong at their first or at their last answer token,
    with prompts of different lengths, right padding, and one-token answers."""
    cases = [_answer_case("rows right, wrong at the first answer token, wrong at the last",
                          [(4, 3, None), (4, 3, 0), (4, 3, 2)], seed=0),
             _answer_case("prompts of 2, 5 and 3 tokens, answers of 4, 1 and 2, right-padded",
                          [(2, 4, None), (5, 1, None), (3, 2, 1)], seed=1),
             _answer_case("one-token answers, one of them wrong", [(3, 1, None), (3, 1, 0)], seed=2),
             _answer_case("a batch of 6", [(3, 2, None), (6, 2, 1), (2, 5, None), (4, 1, 0), (5, 3, None), (2, 2, 0)],
                          vocab=50, seed=3)]
    return check_function(
        learner_fn, answer_matches, cases, exercise="1.9 (answer_matches)",
        hint="the logits at position t predict the token at t + 1: compare the argmax of logits[:, :-1] with "
             "labels[:, 1:], count a position as matching when its label is IGNORE, and a row is right only when "
             "all its positions match")


def check_parse_answer(learner_fn: Callable) -> CheckResult:
    """Exercise 1.10 on worked and direct answers, no answer, two answers, a three-digit answer and a
    continuation that runs on to the next question."""
    cases = [Case("worked steps", "A: Step by step: 7 + 8 = 15, carry 1. 4 + 3 + 1 = 8. The answer is 85."),
             Case("a direct answer", "A: The answer is 7."),
             Case("no answer at all", "A: Step by step: 5 - 3 = 2."),
             Case("two answers: the first counts", "A: The answer is 12. The answer is 13."),
             Case("a three-digit answer without a full stop", "A: The answer is 105"),
             Case("the text runs on to the next question", "A: The answer is 85. Q: 12 + 30 = ?")]
    return check_function(
        learner_fn, parse_answer, cases, exercise="1.10 (parse_answer)",
        hint="search for 'The answer is ' followed by one or more digits (re.search with a group around \\d+), "
             "return int(group) for the first match, and None when there is none: not the first or last number "
             "of the text")


def check_mcnemar_exact(learner_fn: Callable) -> CheckResult:
    """Exercise 1.11 on balanced, lopsided and empty tables, both orders, and larger counts."""
    cases = [Case("3 and 7", 3, 7), Case("7 and 3 (the test is two-sided)", 7, 3),
             Case("no discordant questions", 0, 0), Case("5 and 0", 5, 0), Case("10 and 10", 10, 10),
             Case("1 and 12", 1, 12), Case("40 and 25", 40, 25)]
    return check_function(
        learner_fn, mcnemar_exact, cases, exercise="1.11 (mcnemar_exact)", atol=1e-9,
        properties=[Varies("only_b", lambda only_b: only_b + 3, "ignores only_b")],
        hint="m = only_a + only_b questions are coin flips under the null: sum math.comb(m, k) for k from 0 to "
             "min(only_a, only_b) inclusive, divide by 2**m, double it (two-sided) and cap the result at 1")


# ---------------------------------------------------------------------------------------------
# Exercises on utils.structured


def _state_after(fsm: CharFSM, text: str) -> int:
    state = fsm.walk(fsm.initial, text)
    assert state is not None, f"{text!r} does not start a match of {fsm.pattern!r}"
    return state


def check_token_transitions(learner_fn: Callable, *, exercise: str = "1.12 (token_transitions)") -> CheckResult:
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


def _mask_case(name: str, batch: int, index_vocab: int, padding: int, seed: int) -> Case:
    generator = torch.Generator().manual_seed(seed)
    scores = 3 * torch.randn(batch, index_vocab + padding, generator=generator)
    allowed = torch.rand(batch, index_vocab, generator=generator) < 0.4
    allowed[:, 0] = True                                    # every row allows a token, as a TokenIndex's do
    return Case(name, scores, allowed)


def check_mask_disallowed(learner_fn: Callable) -> CheckResult:
    """Exercise 1.13 on masks as wide as the scores, on scores wider than the tokenizer (a padded
    embedding) and on a row that allows one token only."""
    one_token = Case("a row that allows only token 2", torch.randn(1, 6, generator=torch.Generator().manual_seed(4)),
                     torch.tensor([[False, False, True, False, False, False]]))
    cases = [_mask_case("batch of 3, as many scores as tokens", 3, 20, 0, seed=0),
             _mask_case("scores with 4 more columns than the tokenizer has tokens", 2, 20, 4, seed=1),
             _mask_case("batch of 1, vocab 50, 14 padded columns", 1, 50, 14, seed=2), one_token]
    return check_function(
        learner_fn, mask_disallowed, cases, exercise="1.13 (mask_disallowed)",
        hint="pad allowed on the right with False up to the width of scores (the extra ids are no token), then set "
             "the scores of every position that is not allowed to -inf with masked_fill on ~allowed, not in place")


# ---------------------------------------------------------------------------------------------
# Exercises on utils.soft_prompts


def check_logits_with_soft_prompt(learner_fn: Callable, model: PreTrainedModel, *,
                                  exercise: str = "1.14 (logits_with_soft_prompt)") -> CheckResult:
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



def _two_steps(step: Callable) -> Callable:
    """Run ``step`` twice from a fresh soft prompt and Adam optimizer, the model frozen; return the
    two losses and the soft prompt after them."""
    def run(model: PreTrainedModel, initial: Float[Tensor, "n_tokens d_model"], input_ids: Int[Tensor, "batch seq"],
            labels: Int[Tensor, "batch seq"]) -> tuple[list[float], Float[Tensor, "n_tokens d_model"]]:
        soft_prompt = SoftPrompt(initial)
        optimizer = torch.optim.Adam(soft_prompt.parameters(), lr=0.05)
        with frozen(model):
            losses = float_losses(lambda: step(model, soft_prompt, optimizer, input_ids, labels), steps=2)
        return losses, soft_prompt.embeddings.detach()
    return run


def check_soft_prompt_step(learner_fn: Callable, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
                           ) -> CheckResult:
    """Exercise 1.15: two Adam steps from the same soft prompt give the reference's two losses and the
    reference's soft prompt, on ``model`` with uppercase questions and on a tiny random Llama."""
    prompts, answers = zero_shot_examples("uppercase", split_queries("uppercase")[0][:4])
    input_ids, labels = answer_batch(tokenizer, prompts, answers)
    llama = tiny_random_model("llama")
    llama_ids = torch.randint(llama.config.vocab_size, (2, 6), generator=torch.Generator().manual_seed(0))
    llama_labels = torch.cat([torch.full((2, 3), IGNORE), llama_ids[:, 3:]], dim=1)
    cases = [Case("your model, 4 uppercase questions, 3 soft tokens", model,
                  SoftPrompt.from_vocabulary(model, 3, seed=0).embeddings.detach(), input_ids, labels),
             Case("tiny random Llama, 2 soft tokens", llama,
                  SoftPrompt.from_vocabulary(llama, 2, seed=1).embeddings.detach(), llama_ids, llama_labels)]
    return check_function(
        _two_steps(learner_fn), _two_steps(soft_prompt_step), cases, exercise="1.15 (soft_prompt_step)",
        atol=1e-5, rtol=1e-4,
        hint="the loss is answer_loss of logits_with_soft_prompt(model, soft_prompt.embeddings, input_ids) against "
             "labels; clear the old gradients (optimizer.zero_grad()), backpropagate, take the optimizer's step, and "
             "return loss.item(), the loss before the update")


def check_nearest_tokens(learner_fn: Callable, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
                         ) -> CheckResult:
    """Exercise 1.16 (bonus) on vectors that are token embeddings, on random vectors of another scale,
    and with k = 1."""
    d_model = model.get_input_embeddings().embedding_dim
    random_vectors = 10 * torch.randn(3, d_model, generator=torch.Generator().manual_seed(0))
    cases = [Case("4 vectors that are token embeddings, k=3", model, tokenizer,
                  SoftPrompt.from_vocabulary(model, 4, seed=0).embeddings.detach(), 3),
             Case("3 random vectors ten times the embeddings' scale, k=5", model, tokenizer, random_vectors, 5),
             Case("k=1", model, tokenizer, random_vectors[:2], 1)]
    return check_function(
        learner_fn, nearest_tokens, cases, exercise="1.16 (nearest_tokens)",
        properties=[Varies("k", lambda k: k + 1, "ignores k")],
        hint="normalise the rows of the input embedding matrix and of the soft prompt to unit length "
             "(F.normalize), take their dot products [n_tokens, vocab] (cosine similarities, not raw dot products), "
             "topk(k) per row, and decode each index on its own")


# ---------------------------------------------------------------------------------------------
# The bonus exercise on utils.decoding


def check_typical_filter(learner_fn: Callable) -> CheckResult:
    """Exercise 1.17 (bonus) on random logits for several masses, a row whose most likely token is
    atypical, and logits an earlier filter has cut."""
    atypical = torch.tensor([[0.4] + [0.01] * 60]).log()
    cut = _random_logits(3, 40, seed=12)
    cases = [Case("batch of 4, mass 0.9", _random_logits(4, 50, seed=10), 0.9),
             Case("batch of 2, mass 0.3", _random_logits(2, 50, seed=11), 0.3),
             Case("p = 0.4 for one token and 0.01 for 60: the likely one is atypical", atypical, 0.5),
             Case("logits already cut to -inf by another filter", cut.masked_fill(cut < -2, -torch.inf), 0.8)]
    return check_function(
        learner_fn, typical_filter, cases, exercise="1.17 (typical_filter)",
        properties=[Varies("mass", lambda mass: mass / 2, "ignores the mass")],
        hint="with log_probs = log_softmax(logits), the entropy is -(p * log p) summed over the row (nansum: "
             "0 * -inf is nan); rank tokens by |-log p - entropy|, walk that ranking adding probabilities, and keep a "
             "token while the mass before it is below mass (then ties with the last kept token)")
