"""Chapter 1 reference: unit-test your prompts with a labelled evaluation set.

A prompt is a program whose output is text, and like any program it needs tests: a set of inputs
whose right answers are known, a rule that says whether an output is right, and a number with an
error bar. This module is that harness, for the course model and any ``transformers`` causal LM:

1. **Examples**: :class:`Example` (a prompt, the target continuation and the generator's labels),
   built by :func:`few_shot_examples` and :func:`arithmetic_examples` from ``utils.world``, so every
   target is the generator's truth and the *same questions* are asked at every shot count or style;
   :func:`few_shot_prompt` writes one few-shot prompt from a task's table.
2. **Scorers**: :func:`exact_greedy_match` (teacher forcing: does greedy decoding produce the target?
   one forward pass) and :func:`generated_answer_match` (generate, then :func:`parse_answer`
   reads ``The answer is N``).
3. **Accuracy with an interval**: :class:`Accuracy` and :func:`wilson_interval`. 18/50 and 50/50 are
   far apart; 42/50 and 47/50 may not be: the interval says which differences the set can resolve.
4. **Experiments**: :func:`evaluate_prompts` (one prompt set, one scorer), :func:`few_shot_sweep` and
   :func:`plot_accuracy_vs_shots` (accuracy against the number of shots), and
   :func:`chain_of_thought_comparison` (direct answers against worked steps, question by question,
   with McNemar's exact test).

Typical use::

    model, tokenizer = load_model("course"), load_tokenizer("course")
    table = few_shot_sweep(model, tokenizer, ["capital", "uppercase"], n=50)
    plot_accuracy_vs_shots(table).show()
    print(chain_of_thought_comparison(model, tokenizer, n=50))
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from statistics import NormalDist
from typing import Any, Literal

import pandas as pd
import plotly.graph_objects as go
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from utils.course_model.evaluate import encode, greedy_matches
from utils.decoding import generate_text
from utils.progress import tqdm
from utils.world import FEW_SHOT_TASKS, Document, eval_set
from utils.world.corpus import EVAL_SEED_OFFSET
from utils.world.families import arithmetic, few_shot

#: The shot counts of :func:`few_shot_sweep` (the model card uses 0, 1, 3 and 5).
DEFAULT_SHOTS: tuple[int, ...] = (0, 1, 2, 3, 5)
#: ``eval_set`` seeds: the model card's, so that 0-shot and arithmetic results match its numbers.
FEW_SHOT_SEED, ARITHMETIC_SEED = 4, 5
ARITHMETIC_STYLES: tuple[str, ...] = ("direct", "worked")
#: How many new tokens generation may use per style: a direct answer (`` 198.\\n``) is at most 6
#: tokens, worked steps about 34. The model card uses the same budgets.
ANSWER_TOKEN_BUDGET: dict[str, int] = {"direct": 6, "worked": 48}


# ---------------------------------------------------------------------------------------------
# Labelled examples
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """One test case for a prompt.

    Attributes:
        prompt: the text the model continues, e.g. ``"France -> Paris\\nSpain ->"``.
        target: the right continuation, to the end of its line, e.g. ``" Madrid\\n"``.
        labels: the generator's latent variables (``task``, ``query``, ``n_shots``; ``a``, ``b``,
            ``op``, ``result``, ``style``...): what scorers and analyses may check against.
    """

    prompt: str
    target: str
    labels: dict[str, Any] = field(default_factory=dict, hash=False)


def example_from_document(doc: Document) -> Example:
    """The :class:`Example` of a generated document that poses a task: its prompt, and its answer
    followed by the end of the line (a newline is appended if the answer lacks one), so that a
    match means the model also *stops* after the answer."""
    if doc.prompt is None or doc.answer is None:
        raise ValueError(f"a {doc.family!r} document without a prompt and an answer cannot be an Example: "
                         "use a family that poses a task (few_shot, arithmetic, facts, ioi...)")
    target = doc.answer if doc.answer.endswith("\n") else doc.answer + "\n"
    return Example(doc.prompt, target, dict(doc.labels))


def _check_n(n: int) -> None:
    if n < 1:
        raise ValueError(f"n={n}: an evaluation set needs at least one example; pass n >= 1")


def _check_task(task: str) -> None:
    if task not in FEW_SHOT_TASKS:
        raise ValueError(f"unknown few-shot task {task!r}: choose one of {', '.join(sorted(FEW_SHOT_TASKS))}")


def few_shot_prompt(table: Mapping[str, str], query: str, n_shots: int, rng: random.Random) -> str:
    """A few-shot prompt for ``query``: ``n_shots`` solved examples of ``table`` (one ``"x -> y"``
    per line, drawn with ``rng``), then ``"{query} ->"``.

    The shots are distinct and never the query itself (a shot that answers the question measures
    copying, not the task). The prompt ends right after ``"->"``: the answer's first token carries
    its own space (`` Paris``). With the same ``rng`` state it is the prompt that the world's
    generator writes (``utils.world.families.few_shot``), so harness prompts look like training ones.

    >>> few_shot_prompt({"France": "Paris", "Spain": "Madrid", "Peru": "Lima"}, "Spain", 2, random.Random(0))
    'Peru -> Lima\\nFrance -> Paris\\nSpain ->'
    """
    candidates = [x for x in sorted(table) if x != query]
    if not 0 <= n_shots <= len(candidates):
        raise ValueError(f"n_shots={n_shots}: the table has {len(candidates)} solved examples besides the query; "
                         f"use 0 to {len(candidates)} shots")
    shots = rng.sample(candidates, n_shots)
    return "".join(f"{x} -> {table[x]}\n" for x in shots) + f"{query} ->"


def few_shot_queries(task: str, n: int, seed: int = FEW_SHOT_SEED) -> list[str]:
    """The ``n`` query words of :func:`few_shot_examples`: those of ``eval_set``'s 0-shot documents.

    Drawn with replacement: ``capital`` has 24 countries, so 50 queries repeat some, and at 0 shots
    a repeated query is the very same prompt. The n outcomes are then not independent trials and
    a Wilson interval over them is somewhat too narrow; count ``len(set(queries))`` when it matters.
    """
    _check_task(task)
    _check_n(n)
    return [doc.labels["query"] for doc in eval_set("few_shot", n, seed=seed, task=task, n_shots=0)]


def few_shot_examples(task: str, n_shots: int, n: int, seed: int = FEW_SHOT_SEED) -> list[Example]:
    """``n`` few-shot prompts of ``task`` with ``n_shots`` solved examples each, then a query.

    **The queries do not depend on** ``n_shots``: the i-th example asks ``few_shot_queries(task, n,
    seed)[i]`` at every shot count, so accuracies at different shot counts compare the same
    questions. (``eval_set("few_shot", n, seed, n_shots=k)`` would not: drawing the shots moves its
    random state, so its queries change with ``k``.) The shots come from a generator seeded as
    ``eval_set(seed)`` is and never include the query, so at 0 shots the examples *are*
    ``eval_set``'s documents (the model card's 0-shot column for the default seed).

    Each prompt ends with ``"{query} ->"``; the target is ``" {answer}\\n"`` from ``FEW_SHOT_TASKS``.
    """
    queries = few_shot_queries(task, n, seed)
    if not 0 <= n_shots < len(FEW_SHOT_TASKS[task]):
        raise ValueError(f"n_shots={n_shots}: task {task!r} can show from 0 to {len(FEW_SHOT_TASKS[task]) - 1} "
                         "solved examples (every pair but the query)")
    rng = random.Random(EVAL_SEED_OFFSET + seed)  # the generator eval_set(seed=seed) uses
    return [example_from_document(few_shot(rng, task=task, n_shots=n_shots, query=query)) for query in queries]


def arithmetic_examples(style: Literal["direct", "worked"], n: int, seed: int = ARITHMETIC_SEED) -> list[Example]:
    """``n`` two-digit additions and subtractions: the questions of ``eval_set("arithmetic", n, seed,
    style=style)``, the model card's for the default seed.

    The questions (operation and operands) are drawn once and do not depend on ``style``, so the
    i-th ``"direct"`` and the i-th ``"worked"`` example ask the same sum. Prompts end with
    ``"A: The answer is"`` (direct) or ``"A: Step by step:"`` (worked); ``labels["result"]`` is the
    right number.
    """
    if style not in ARITHMETIC_STYLES:
        raise ValueError(f"unknown arithmetic style {style!r}: use one of {', '.join(ARITHMETIC_STYLES)}")
    _check_n(n)
    drawn = eval_set("arithmetic", n, seed=seed, style="direct")  # a given style draws no random number
    questions = [(d.labels["op"], d.labels["a"], d.labels["b"]) for d in drawn]
    rng = random.Random(0)  # unused: operation, operands and style are all given
    return [example_from_document(arithmetic(rng, op=op, style=style, operands=(a, b))) for op, a, b in questions]


# ---------------------------------------------------------------------------------------------
# Accuracy with a confidence interval
# ---------------------------------------------------------------------------------------------


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for a proportion: ``correct`` successes in ``n`` trials.

    With ``p = correct / n`` and ``z`` the standard normal quantile of ``(1 + confidence) / 2``
    (1.96 for 95 %), it is the set of proportions that a z-test would not reject::

        centre ± half_width,   centre = (p + z²/2n) / (1 + z²/n),
                               half_width = z √(p(1-p)/n + z²/4n²) / (1 + z²/n)

    Unlike the textbook ``p ± z √(p(1-p)/n)`` it stays inside [0, 1] and is not empty at 0/n or n/n
    (Wilson 1927; Brown, Cai & DasGupta 2001 recommend it for small n). 8/10 gives (0.490, 0.943).
    """
    if n < 1:
        raise ValueError(f"n={n}: an accuracy needs at least one trial; evaluate at least one example")
    if not 0 <= correct <= n:
        raise ValueError(f"correct={correct} with n={n}: the number correct must be between 0 and n")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence}: use a probability strictly between 0 and 1, e.g. 0.95")
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    p = correct / n
    denominator = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denominator
    half_width = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denominator
    low = 0.0 if correct == 0 else max(0.0, centre - half_width)  # exact ends where rounding could miss them
    high = 1.0 if correct == n else min(1.0, centre + half_width)
    return low, high


@dataclass(frozen=True)
class Accuracy:
    """``correct`` right answers out of ``n``, with a Wilson interval at ``confidence``."""

    correct: int
    n: int
    confidence: float = 0.95

    def __post_init__(self) -> None:
        wilson_interval(self.correct, self.n, self.confidence)  # validates the three numbers

    @classmethod
    def from_outcomes(cls, outcomes: Iterable[bool], confidence: float = 0.95) -> Accuracy:
        """The accuracy of a list of per-example results (True = right)."""
        outcomes = list(outcomes)
        return cls(sum(map(bool, outcomes)), len(outcomes), confidence)

    @property
    def value(self) -> float:
        """The share right, ``correct / n``."""
        return self.correct / self.n

    @property
    def interval(self) -> tuple[float, float]:
        """``(low, high)``: the Wilson score interval (:func:`wilson_interval`)."""
        return wilson_interval(self.correct, self.n, self.confidence)

    @property
    def low(self) -> float:
        return self.interval[0]

    @property
    def high(self) -> float:
        return self.interval[1]

    def __str__(self) -> str:
        return f"{self.value:.2f} [{self.low:.2f}, {self.high:.2f}] ({self.correct}/{self.n})"


# ---------------------------------------------------------------------------------------------
# Scorers: (model, tokenizer, examples) -> one bool per example
# ---------------------------------------------------------------------------------------------

Scorer = Callable[[PreTrainedModel, PreTrainedTokenizerBase, Sequence[Example]], list[bool]]


def exact_greedy_match(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                       examples: Sequence[Example]) -> list[bool]:
    """Whether greedy decoding from each prompt produces exactly its target (the answer, then the
    newline that ends it). Teacher-forced: one batched forward pass, no generation loop
    (``utils.course_model.evaluate.greedy_matches``)."""
    matches = greedy_matches(model, tokenizer, [e.prompt for e in examples], [e.target for e in examples])
    return matches.tolist()


ANSWER_PATTERN = re.compile(r"The answer is (\d+)")


def parse_answer(text: str) -> int | None:
    """The number after the first ``"The answer is"`` in ``text``, or None if there is none.

    >>> parse_answer("A: 7 + 8 = 15, carry 1. 4 + 3 + 1 = 8. The answer is 85.")
    85
    """
    found = ANSWER_PATTERN.search(text)
    return int(found.group(1)) if found else None


def generated_answer_match(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                           examples: Sequence[Example], *, max_new_tokens: int = 48,
                           parse: Callable[[str], int | None] = parse_answer) -> list[bool]:
    """Whether the answer the model *writes* is right: continue each prompt greedily to the end of
    the line (at most ``max_new_tokens`` tokens), ``parse`` the answer from the prompt's last line
    and the continuation (a direct prompt ends with ``"The answer is"``), compare it with
    ``labels["result"]``. Unlike :func:`exact_greedy_match`, worked steps that differ from the
    generator's but reach the right number count as right. The examples are generated as one batch
    (:func:`utils.decoding.generate_text`)."""
    missing = [i for i, e in enumerate(examples) if "result" not in e.labels]
    if missing:
        raise ValueError(f"example {missing[0]} has no 'result' label: generated_answer_match compares the parsed "
                         "number with labels['result']; build examples with arithmetic_examples")
    continuations = generate_text(model, tokenizer, [e.prompt for e in examples], max_new_tokens, stop="\n")
    answer_lines = [e.prompt.rsplit("\n", 1)[-1] + continuation for e, continuation in zip(examples, continuations)]
    return [parse(line) == e.labels["result"] for line, e in zip(answer_lines, examples)]


# ---------------------------------------------------------------------------------------------
# Running an evaluation
# ---------------------------------------------------------------------------------------------


def check_examples_fit(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example]) -> None:
    """Raise ValueError unless ``examples`` is a non-empty list of :class:`Example` whose token ids
    (prompt and target, ``tokenizer``) exist in ``model``'s vocabulary and fit its context."""
    if not isinstance(model, PreTrainedModel):
        raise ValueError(f"got a {type(model).__name__}: the harness runs a transformers causal LM; "
                         "load one with load_model(name) (backend='hf', the default)")
    if len(examples) == 0:
        raise ValueError("no examples to evaluate: build some with few_shot_examples or arithmetic_examples (n >= 1)")
    wrong_type = next((e for e in examples if not isinstance(e, Example)), None)
    if wrong_type is not None:
        hint = "convert documents with example_from_document" if isinstance(wrong_type, Document) else \
            "build them with few_shot_examples, arithmetic_examples or Example(prompt, target, labels)"
        raise ValueError(f"expected Example objects, got a {type(wrong_type).__name__}: {hint}")
    vocab_size = model.get_input_embeddings().num_embeddings
    context = getattr(model.config, "max_position_embeddings", None)
    for example in examples:
        ids = encode(tokenizer, example.prompt + example.target)
        if max(ids) >= vocab_size:
            raise ValueError(f"the tokenizer gives token id {max(ids)} but the model's vocabulary has {vocab_size} "
                             "tokens: the tokenizer belongs to another model; load both with the same name "
                             "(load_model(name), load_tokenizer(name))")
        if context is not None and len(ids) > context:
            raise ValueError(f"an example is {len(ids)} tokens long, more than the model's context of {context}: "
                             "use fewer shots or shorter prompts")


def evaluate_prompts(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example],
                     scorer: Scorer = exact_greedy_match, *, batch_size: int = 64,
                     progress: bool | None = None, desc: str = "prompts") -> Accuracy:
    """Score every example with ``scorer``, ``batch_size`` examples at a time, and return the accuracy.

    ``progress``: show a tqdm bar (default: when there is more than one batch). Raises ValueError on
    an empty list, non-:class:`Example` items, or a tokenizer whose ids the model does not have.
    """
    return Accuracy.from_outcomes(score_examples(model, tokenizer, examples, scorer, batch_size=batch_size,
                                                 progress=progress, desc=desc))


def score_examples(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example],
                   scorer: Scorer = exact_greedy_match, *, batch_size: int = 64,
                   progress: bool | None = None, desc: str = "prompts") -> list[bool]:
    """The per-example outcomes behind :func:`evaluate_prompts` (True = right), in order."""
    check_examples_fit(model, tokenizer, examples)
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: use a positive batch size, e.g. 64")
    batches = [examples[i:i + batch_size] for i in range(0, len(examples), batch_size)]
    show = len(batches) > 1 if progress is None else progress
    outcomes: list[bool] = []
    with tqdm(total=len(examples), desc=desc, unit="prompt", disable=not show, leave=False) as bar:
        for batch in batches:
            outcomes += scorer(model, tokenizer, batch)
            bar.update(len(batch))
    return outcomes


# ---------------------------------------------------------------------------------------------
# Experiment 1: accuracy against the number of shots
# ---------------------------------------------------------------------------------------------


def few_shot_sweep(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, tasks: Sequence[str] | None = None,
                   shots: Sequence[int] = DEFAULT_SHOTS, n: int = 50, seed: int = FEW_SHOT_SEED) -> pd.DataFrame:
    """Greedy exact-match accuracy of each few-shot task at each shot count, on the same ``n``
    queries per task (:func:`few_shot_examples`). ``tasks`` defaults to all of ``FEW_SHOT_TASKS``.

    Returns a tidy table, one row per (task, shots): columns ``task``, ``shots``, ``accuracy``,
    ``low``, ``high`` (the 95 % Wilson interval), ``correct``, ``n``.
    """
    if isinstance(tasks, str):
        raise ValueError(f"tasks={tasks!r}: pass a list of task names, e.g. tasks=[{tasks!r}]")
    tasks = sorted(FEW_SHOT_TASKS) if tasks is None else list(tasks)
    if not tasks or not shots:
        raise ValueError("give a list of tasks and a list of shot counts, e.g. tasks=['capital'], shots=(0, 5)")
    cells = [(task, k) for task in tasks for k in shots]
    examples = {cell: few_shot_examples(*cell, n=n, seed=seed) for cell in cells}  # validates every cell first
    rows = []
    for task, k in tqdm(cells, desc="few-shot sweep", unit="cell", leave=False, disable=len(cells) < 8):
        accuracy = evaluate_prompts(model, tokenizer, examples[task, k], exact_greedy_match, progress=False)
        rows.append({"task": task, "shots": k, "accuracy": accuracy.value, "low": accuracy.low,
                     "high": accuracy.high, "correct": accuracy.correct, "n": accuracy.n})
    return pd.DataFrame(rows)


SWEEP_COLUMNS = ("task", "shots", "accuracy", "low", "high")


def plot_accuracy_vs_shots(table: pd.DataFrame, title: str = "Few-shot accuracy (95 % Wilson intervals)") -> go.Figure:
    """A plotly figure of :func:`few_shot_sweep`'s table: one line per task, accuracy against the
    number of shots, with the Wilson interval as asymmetric error bars. Returns the figure
    (call ``.show()`` on it)."""
    missing = [c for c in SWEEP_COLUMNS if c not in table]
    if missing:
        raise ValueError(f"the table lacks columns {missing}: pass the DataFrame few_shot_sweep returns")
    figure = go.Figure()
    for task, rows in table.sort_values("shots").groupby("task", sort=True):
        figure.add_trace(go.Scatter(
            x=rows["shots"], y=rows["accuracy"], name=task, mode="lines+markers",
            error_y=dict(type="data", symmetric=False, array=rows["high"] - rows["accuracy"],
                         arrayminus=rows["accuracy"] - rows["low"]),
            customdata=rows[["low", "high"]],
            hovertemplate=f"{task}<br>%{{x}} shots: %{{y:.2f}} [%{{customdata[0]:.2f}}, %{{customdata[1]:.2f}}]"
                          "<extra></extra>"))
    figure.update_layout(title=title, xaxis_title="solved examples in the prompt (shots)",
                         yaxis_title="exact-match accuracy", yaxis_range=[0, 1.05], legend_title="task")
    figure.update_xaxes(tickvals=sorted(table["shots"].unique()))
    return figure


# ---------------------------------------------------------------------------------------------
# Experiment 2: chain of thought against direct answers, on the same questions
# ---------------------------------------------------------------------------------------------


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """McNemar's exact two-sided p-value for paired outcomes: under "A and B are equally good",
    each of the ``only_a + only_b`` questions that exactly one of them gets right is a fair coin,
    so the p-value is a two-sided binomial(m, 1/2) test of ``min(only_a, only_b)``."""
    if only_a < 0 or only_b < 0:
        raise ValueError(f"counts must be non-negative, got {only_a} and {only_b}")
    m = only_a + only_b
    tail = sum(math.comb(m, k) for k in range(min(only_a, only_b) + 1)) / 2**m
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class ChainOfThoughtComparison:
    """Direct answers against worked steps on the same arithmetic questions.

    ``direct_outcomes[i]`` and ``worked_outcomes[i]`` say whether each style got question ``i``
    right. ``both``, ``only_worked``, ``only_direct`` and ``neither`` count the questions by which
    style got them right (they sum to ``n``): the 2x2 table of :meth:`agreement_table`.
    """

    direct_outcomes: tuple[bool, ...]
    worked_outcomes: tuple[bool, ...]

    def __post_init__(self) -> None:
        if len(self.direct_outcomes) != len(self.worked_outcomes):
            raise ValueError(f"{len(self.direct_outcomes)} direct and {len(self.worked_outcomes)} worked outcomes: "
                             "both styles must answer the same questions")

    @property
    def n(self) -> int:
        return len(self.direct_outcomes)

    @property
    def direct(self) -> Accuracy:
        return Accuracy.from_outcomes(self.direct_outcomes)

    @property
    def worked(self) -> Accuracy:
        return Accuracy.from_outcomes(self.worked_outcomes)

    def _count(self, direct: bool, worked: bool) -> int:
        return sum(d == direct and w == worked for d, w in zip(self.direct_outcomes, self.worked_outcomes))

    @property
    def both(self) -> int:
        return self._count(direct=True, worked=True)

    @property
    def only_worked(self) -> int:
        return self._count(direct=False, worked=True)

    @property
    def only_direct(self) -> int:
        return self._count(direct=True, worked=False)

    @property
    def neither(self) -> int:
        return self._count(direct=False, worked=False)

    @property
    def p_value(self) -> float:
        """McNemar's exact test that both styles are equally accurate: only the questions that
        exactly one style gets right carry information on the difference."""
        return mcnemar_exact(self.only_worked, self.only_direct)

    def agreement_table(self) -> pd.DataFrame:
        """The 2x2 table of questions: rows direct right/wrong, columns worked right/wrong."""
        return pd.DataFrame([[self.both, self.only_direct], [self.only_worked, self.neither]],
                            index=pd.Index(["direct right", "direct wrong"]),
                            columns=pd.Index(["worked right", "worked wrong"]))

    def __str__(self) -> str:
        return (f"direct {self.direct}\nworked {self.worked}\n{self.agreement_table()}\n"
                f"McNemar exact p = {self.p_value:.3g}")


def chain_of_thought_comparison(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, n: int = 50,
                                seed: int = ARITHMETIC_SEED, *,
                                parse: Callable[[str], int | None] = parse_answer) -> ChainOfThoughtComparison:
    """Ask the same ``n`` arithmetic questions (:func:`arithmetic_examples`) directly and with
    worked steps, score the generated answers (:func:`generated_answer_match` with ``parse``, the
    budgets of ``ANSWER_TOKEN_BUDGET``), and compare them question by question. Generation is the
    slow part; it runs 25 questions at a time."""
    outcomes = {}
    for style in ARITHMETIC_STYLES:
        scorer = partial(generated_answer_match, max_new_tokens=ANSWER_TOKEN_BUDGET[style], parse=parse)
        outcomes[style] = tuple(score_examples(model, tokenizer, arithmetic_examples(style, n, seed), scorer,
                                               batch_size=25, desc=f"arithmetic ({style})"))
    return ChainOfThoughtComparison(direct_outcomes=outcomes["direct"], worked_outcomes=outcomes["worked"])


# ---------------------------------------------------------------------------------------------
# Checker for the lab's exercise (tests/test_prompt_eval.py proves it accepts the reference and
# rejects typical wrong answers)
# ---------------------------------------------------------------------------------------------
