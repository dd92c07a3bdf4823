"""Tests for utils/prompt_eval.py: chapter 1's prompt-evaluation harness.

The statistics are checked against hand-computed values (and statsmodels / scipy where installed),
the evaluation sets against the generator, and the chapter's claims (shots help; worked steps beat
direct answers) against the course model on the generator's labels.
"""

from __future__ import annotations

import json
import math
import random
from statistics import NormalDist

import plotly.graph_objects as go
import pytest

from utils.checkers.prompting import check_wilson_interval
from utils.checks import assert_accepts, assert_rejects
from utils.course_model.evaluate import greedy_matches
from utils.models import COURSE_MODEL_DIR, load_model, load_tokenizer, tiny_random_model
from utils.prompt_eval import (
    Accuracy, ChainOfThoughtComparison, Example, arithmetic_examples, chain_of_thought_comparison,
    evaluate_prompts, exact_greedy_match, example_from_document, few_shot_examples, few_shot_prompt, few_shot_queries,
    few_shot_sweep, generated_answer_match, mcnemar_exact, parse_answer, plot_accuracy_vs_shots,
    score_examples, wilson_interval,
)
from utils.world import FEW_SHOT_TASKS, eval_set
from utils.world.families import few_shot

#: Tasks whose 0-shot accuracy the model card shows far below 5-shot (0.36, 0.10, 0.50, 0.40 vs 1.00).
TASKS_WHERE_SHOTS_HELP = ("capital", "uppercase", "successor", "predecessor")


@pytest.fixture(scope="module")
def course(course_model, course_tokenizer):
    return course_model, course_tokenizer


@pytest.fixture(scope="module")
def sweep(course):
    """Every task at 0, 1, 2, 3, 5 shots, 50 queries each (a few seconds on 2 CPU cores)."""
    return few_shot_sweep(*course, n=50)


@pytest.fixture(scope="module")
def cot(course) -> ChainOfThoughtComparison:
    """50 arithmetic questions, answered directly and with worked steps (generation: the slow test)."""
    return chain_of_thought_comparison(*course, n=50)


# --------------------------------------------------------------------------------------------
# The Wilson score interval


@pytest.mark.parametrize(("correct", "n", "confidence", "expected"), [
    (8, 10, 0.95, (0.4902, 0.9433)),   # by hand: centre 0.7167, half-width 0.2266
    (0, 10, 0.95, (0.0, 0.2775)),      # z²/n / (1 + z²/n) = 0.38415 / 1.38415
    (10, 10, 0.95, (0.7225, 1.0)),
    (18, 50, 0.95, (0.2414, 0.4986)),
    (50, 50, 0.95, (0.9287, 1.0)),     # n / (n + z²)
    (5, 10, 0.99, (0.1842, 0.8158)),   # z = 2.5758: centre 1/2, half-width 0.3158
])
def test_wilson_interval_known_values(correct, n, confidence, expected):
    assert wilson_interval(correct, n, confidence) == pytest.approx(expected, abs=1e-4)


def test_wilson_interval_matches_statsmodels():
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    for n in (1, 7, 50, 400):
        for correct in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            for confidence in (0.8, 0.95, 0.99):
                expected = proportion.proportion_confint(correct, n, alpha=1 - confidence, method="wilson")
                assert wilson_interval(correct, n, confidence) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("n", [1, 2, 10, 50, 333])
def test_wilson_interval_properties(n):
    for correct in range(0, n + 1, max(1, n // 10)):
        low, high = wilson_interval(correct, n)
        assert 0 <= low <= correct / n <= high <= 1
        narrower_low, narrower_high = wilson_interval(4 * correct, 4 * n)  # same proportion, 4x the data
        assert narrower_high - narrower_low < high - low
        wider_low, wider_high = wilson_interval(correct, n, confidence=0.99)
        assert wider_low <= low and wider_high >= high
    assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0
    assert wilson_interval(0, n)[1] > 0 and wilson_interval(n, n)[0] < 1  # never a zero-width interval


@pytest.mark.parametrize(("args", "message"), [
    ((0, 0), "at least one trial"),
    ((5, 4), "between 0 and n"),
    ((-1, 4), "between 0 and n"),
    ((2, 4, 0.0), "strictly between 0 and 1"),
    ((2, 4, 1.0), "strictly between 0 and 1"),
    ((2, 4, 95), "strictly between 0 and 1"),
])
def test_wilson_interval_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        wilson_interval(*args)


def test_accuracy_holds_counts_value_and_interval():
    accuracy = Accuracy.from_outcomes([True] * 8 + [False] * 2)
    assert (accuracy.correct, accuracy.n, accuracy.value) == (8, 10, 0.8)
    assert accuracy.interval == (accuracy.low, accuracy.high) == wilson_interval(8, 10)
    assert str(accuracy) == "0.80 [0.49, 0.94] (8/10)"
    with pytest.raises(ValueError, match="at least one trial"):
        Accuracy.from_outcomes([])
    with pytest.raises(ValueError, match="between 0 and n"):
        Accuracy(11, 10)


@pytest.mark.parametrize(("only_a", "only_b", "expected"), [
    (8, 0, 2 / 2**8), (0, 0, 1.0), (3, 3, 1.0), (10, 2, 2 * (1 + 12 + 66) / 2**12)])
def test_mcnemar_exact_known_values(only_a, only_b, expected):
    assert mcnemar_exact(only_a, only_b) == pytest.approx(expected)
    assert mcnemar_exact(only_b, only_a) == pytest.approx(expected)


def test_mcnemar_exact_matches_scipy_binomial_test():
    stats = pytest.importorskip("scipy.stats")
    for only_a, only_b in [(8, 0), (1, 1), (10, 2), (7, 15), (30, 12)]:
        expected = stats.binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue
        assert mcnemar_exact(only_a, only_b) == pytest.approx(expected, rel=1e-9)


# --------------------------------------------------------------------------------------------
# Evaluation sets from the generator


@pytest.mark.parametrize("task", sorted(FEW_SHOT_TASKS))
def test_few_shot_examples_ask_the_same_queries_at_every_shot_count(task):
    by_shots = {k: few_shot_examples(task, k, n=30) for k in (0, 1, 3, 5)}
    queries = few_shot_queries(task, n=30)
    for k, examples in by_shots.items():
        assert [e.labels["query"] for e in examples] == queries
        for example in examples:
            query, table = example.labels["query"], FEW_SHOT_TASKS[task]
            assert example.target == f" {table[query]}\n"
            assert example.labels == {"task": task, "n_shots": k, "query": query, "target": table[query]}
            *shots, last = example.prompt.split("\n")
            assert last == f"{query} ->" and len(shots) == k
            pairs = [line.split(" -> ") for line in shots]
            assert all(table[x] == y for x, y in pairs)  # every shot is solved right
            assert query not in [x for x, _ in pairs]


def test_zero_shot_examples_are_the_model_cards_documents():
    docs = eval_set("few_shot", 50, seed=4, task="capital", n_shots=0)
    assert few_shot_examples("capital", 0, n=50) == [example_from_document(d) for d in docs]
    assert eval_set("few_shot", 50, seed=4, task="capital", n_shots=3)[1].labels["query"] != docs[1].labels["query"], (
        "eval_set's queries change with n_shots: the reason few_shot_examples fixes them")


def test_arithmetic_examples_share_operands_across_styles():
    direct, worked = arithmetic_examples("direct", 100), arithmetic_examples("worked", 100)
    for d, w in zip(direct, worked):
        assert {k: d.labels[k] for k in "op a b result".split()} == {k: w.labels[k] for k in "op a b result".split()}
        a, b = d.labels["a"], d.labels["b"]
        assert d.labels["result"] == (a + b if d.labels["op"] == "+" else a - b)
        assert d.prompt.endswith("A: The answer is") and w.prompt.endswith("A: Step by step:")
        for example in (d, w):  # the reference answer states the generator's result
            assert parse_answer(example.prompt.rsplit("\n", 1)[-1] + example.target) == example.labels["result"]
    for style, examples in (("direct", direct), ("worked", worked)):  # the model card's questions
        docs = eval_set("arithmetic", 100, seed=5, style=style)
        assert [(e.prompt, e.target) for e in examples] == [(doc.prompt, doc.answer) for doc in docs]


@pytest.mark.parametrize("task", ["capital", "uppercase", "successor"])
@pytest.mark.parametrize("n_shots", [0, 1, 5])
def test_few_shot_prompt_is_the_generators_prompt(task, n_shots):
    table = FEW_SHOT_TASKS[task]
    for seed, query in enumerate(sorted(table)[:4]):
        document = few_shot(random.Random(seed), task=task, n_shots=n_shots, query=query)
        assert few_shot_prompt(table, query, n_shots, random.Random(seed)) == document.prompt


def test_few_shot_prompt_never_shows_the_query_and_rejects_too_many_shots():
    table = {"one": "1", "two": "2", "three": "3"}
    assert few_shot_prompt(table, "two", 2, random.Random(0)).count("two") == 1
    assert few_shot_prompt(table, "four", 3, random.Random(0)).count("\n") == 3   # a query outside the table
    with pytest.raises(ValueError, match="n_shots=3.*0 to 2 shots"):
        few_shot_prompt(table, "two", 3, random.Random(0))


def test_parse_answer():
    assert parse_answer("A: The answer is 85.") == 85
    assert parse_answer("A: 5 + 3 = 8, carry 0. 1 + 2 + 0 = 3. The answer is 38. The answer is 12.") == 38
    assert parse_answer("A: The answer is") is None
    assert parse_answer("A: the answer is 85") is None


@pytest.mark.parametrize(("call", "message"), [
    (lambda: few_shot_examples("capitals", 3, n=5), "unknown few-shot task 'capitals'.*antonym, capital, language"),
    (lambda: few_shot_examples("capital", -1, n=5), "n_shots=-1"),
    (lambda: few_shot_examples("capital", 24, n=5), "from 0 to 23"),
    (lambda: few_shot_examples("capital", 3, n=0), "at least one example"),
    (lambda: arithmetic_examples("cot", n=5), "unknown arithmetic style 'cot'.*direct, worked"),
    (lambda: example_from_document(eval_set("story", 1)[0]), "without a prompt and an answer"),
])
def test_builders_reject_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --------------------------------------------------------------------------------------------
# Running evaluations: bad input, batching, scorers


def test_evaluate_prompts_rejects_bad_input(course):
    model, tokenizer = course
    with pytest.raises(ValueError, match="no examples"):
        evaluate_prompts(model, tokenizer, [])
    with pytest.raises(ValueError, match="example_from_document"):
        evaluate_prompts(model, tokenizer, eval_set("few_shot", 2, task="capital"))
    with pytest.raises(ValueError, match="'result' label"):
        evaluate_prompts(model, tokenizer, few_shot_examples("capital", 1, n=2), generated_answer_match)
    with pytest.raises(ValueError, match="batch size"):
        evaluate_prompts(model, tokenizer, few_shot_examples("capital", 1, n=2), batch_size=0)
    with pytest.raises(ValueError, match="context of 256"):
        evaluate_prompts(model, tokenizer, [Example("word " * 300, " x\n")])
    with pytest.raises(ValueError, match="list of task names"):
        few_shot_sweep(model, tokenizer, "capital")


def test_a_tokenizer_of_another_model_is_rejected(course):
    _, course_tokenizer = course
    tiny = tiny_random_model("gpt2", vocab_size=320)
    with pytest.raises(ValueError, match=r"token id \d+ but the model's vocabulary has 320 tokens.*same name"):
        evaluate_prompts(tiny, course_tokenizer, few_shot_examples("capital", 1, n=4))


def test_batch_size_does_not_change_the_result(course):
    examples = few_shot_examples("successor", 0, n=50)
    outcomes = {size: score_examples(*course, examples, batch_size=size) for size in (1, 7, 64)}
    assert outcomes[1] == outcomes[7] == outcomes[64]
    assert outcomes[1] == greedy_matches(*course, [e.prompt for e in examples], [e.target for e in examples]).tolist()


def test_exact_match_demands_the_answer_and_its_end_of_line(course):
    model, tokenizer = course
    right = few_shot_examples("capital", 3, n=10)
    assert all(exact_greedy_match(model, tokenizer, right))
    wrong_answer = [Example(e.prompt, " Paris\n" if e.labels["target"] != "Paris" else " Rome\n") for e in right]
    assert not any(exact_greedy_match(model, tokenizer, wrong_answer))
    no_end_of_line = [Example(e.prompt, e.target + "And") for e in right]
    assert not any(exact_greedy_match(model, tokenizer, no_end_of_line))


def test_generated_answers_are_read_by_the_parser_given(course):
    examples = arithmetic_examples("direct", 8)
    outcomes = generated_answer_match(*course, examples, max_new_tokens=6)
    assert any(outcomes) and outcomes == generated_answer_match(*course, examples, max_new_tokens=6, parse=parse_answer)
    assert generated_answer_match(*course, examples, max_new_tokens=6, parse=lambda text: None) == [False] * 8


def test_teacher_forced_exact_match_implies_a_right_generated_answer(course, cot):
    """Greedy decoding that reproduces the generator's worked steps writes the right number."""
    teacher_forced = exact_greedy_match(*course, arithmetic_examples("worked", 50))
    assert all(generated for exact, generated in zip(teacher_forced, cot.worked_outcomes) if exact)
    assert sum(teacher_forced) >= 45


# --------------------------------------------------------------------------------------------
# The chapter's claims about the course model, against the generator's labels


def test_sweep_table_is_tidy_and_its_zero_shot_column_is_the_model_cards(sweep):
    assert list(sweep.columns) == ["task", "shots", "accuracy", "low", "high", "correct", "n"]
    assert len(sweep) == len(FEW_SHOT_TASKS) * 5 and (sweep["n"] == 50).all()
    assert ((sweep["low"] <= sweep["accuracy"]) & (sweep["accuracy"] <= sweep["high"])).all()
    stored = json.loads((COURSE_MODEL_DIR / "evaluation.json").read_text())["few_shot"]  # n=50, same seed
    zero_shot = sweep[sweep["shots"] == 0].set_index("task")["accuracy"]
    for task, accuracy in zero_shot.items():
        assert accuracy == pytest.approx(stored[task]["0"], abs=1e-6), task


@pytest.mark.parametrize("task", TASKS_WHERE_SHOTS_HELP)
def test_five_shots_beat_zero_shots_with_separate_intervals(sweep, task):
    """Chapter 1's claim: on the same 50 queries, 5-shot accuracy is above 0-shot accuracy and the
    two 95 % Wilson intervals do not overlap (measured: 0-shot 0.10-0.50, 5-shot 1.00)."""
    rows = sweep[sweep["task"] == task].set_index("shots")
    assert rows.loc[5, "accuracy"] >= 0.9
    assert rows.loc[5, "low"] > rows.loc[0, "high"]


def test_chain_of_thought_beats_direct_answers_on_the_same_questions(cot):
    """Chapter 1's claim: with worked steps the model gets more of the same 50 sums right
    (measured: 42/50 direct, 50/50 worked). Asserted with the paired test (McNemar, p < 0.05) and
    worked-steps accuracy's interval lying above direct accuracy; the unpaired Wilson intervals only
    just separate at n=50 (0.92 vs 0.93), so that is not asserted."""
    assert cot.n == 50 == cot.both + cot.only_worked + cot.only_direct + cot.neither
    assert cot.worked.value >= 0.95
    assert cot.only_worked > cot.only_direct
    assert cot.p_value < 0.05
    assert cot.worked.low > cot.direct.value
    table = cot.agreement_table()
    assert table.loc["direct wrong", "worked right"] == cot.only_worked
    assert table.to_numpy().sum() == cot.n


def test_comparison_rejects_outcomes_of_different_questions():
    with pytest.raises(ValueError, match="same questions"):
        ChainOfThoughtComparison((True, False), (True,))


# --------------------------------------------------------------------------------------------
# The plot


def test_plot_has_one_line_with_error_bars_per_task(sweep):
    tasks = ["capital", "plural", "uppercase"]
    figure = plot_accuracy_vs_shots(sweep[sweep["task"].isin(tasks)])
    assert isinstance(figure, go.Figure)
    assert [trace.name for trace in figure.data] == tasks
    for trace in figure.data:
        assert list(trace.x) == [0, 1, 2, 3, 5]
        assert trace.error_y.type == "data" and trace.error_y.symmetric is False
        rows = sweep[sweep["task"] == trace.name].sort_values("shots")
        assert list(trace.error_y.arrayminus) == pytest.approx(list(rows["accuracy"] - rows["low"]))
        assert list(trace.error_y.array) == pytest.approx(list(rows["high"] - rows["accuracy"]))
    with pytest.raises(ValueError, match="lacks columns"):
        plot_accuracy_vs_shots(sweep.drop(columns="low"))


# --------------------------------------------------------------------------------------------
# Other architectures: tiny random GPT-2, GPT-NeoX and Llama


def test_harness_runs_on_tiny_random_models(tiny_checkpoint):
    model, tokenizer = load_model(tiny_checkpoint), load_tokenizer(tiny_checkpoint)
    accuracy = evaluate_prompts(model, tokenizer, few_shot_examples("capital", 3, n=8))
    assert (accuracy.n, accuracy.correct) == (8, 0)  # a random model does not know capitals
    table = few_shot_sweep(model, tokenizer, ["capital", "uppercase"], shots=(0, 2), n=4)
    assert len(table) == 4 and (table["n"] == 4).all() and (table["accuracy"] <= 0.5).all()
    cot = chain_of_thought_comparison(model, tokenizer, n=2)
    assert cot.n == 2 and cot.worked.correct == 0 and math.isclose(cot.p_value, 1.0)


# Exercise 1.8's checker ---------------------------------------------------------------------


def wald_interval(correct, n, confidence=0.95):
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    p = correct / n
    half_width = z * math.sqrt(p * (1 - p) / n)
    return p - half_width, p + half_width


def wilson_with_one_sided_z(correct, n, confidence=0.95):
    return wilson_interval(correct, n, 2 * confidence - 1)


def wilson_with_fixed_z(correct, n, confidence=0.95):
    z = 1.96
    p, denominator = correct / n, 1 + 1.96**2 / n
    centre = (p + z**2 / (2 * n)) / denominator
    half_width = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denominator
    return centre - half_width, centre + half_width


def test_wilson_interval_checker():
    assert_accepts(check_wilson_interval(wilson_interval))
    assert_rejects(check_wilson_interval(wald_interval), "8 right out of 10")
    assert_rejects(check_wilson_interval(wilson_with_one_sided_z), "8 right out of 10")
    assert_rejects(check_wilson_interval(wilson_with_fixed_z), "confidence 0.9")
