"""Every exercise's hints are a ladder that never gives the answer away.

The course's rule (README.md, "Write a chapter notebook"): hints are a ladder and never the
answer, except a last hint labelled as the answer. For every exercise of every solution
notebook, these tests read the exercise's markdown and its solution (the lines between
``# BEGIN SOLUTION`` and ``# END SOLUTION``, or a cell tagged ``solution``) and check that

- the hints are ``<details><summary>Hint 1</summary>...</details>``, ``Hint 2``, ``Hint 3``, ...
  in that order, at least three, optionally followed by one hint labelled ``Answer``;
- the ``Answer``, when there is one, is the last hint;
- no hint but the ``Answer`` contains a piece of the solution: a line, the expression a line
  assigns or returns, or a string literal (an einsum pattern), each of at least 12 characters
  once comments, whitespace and backticks are removed.

Pure file reading: no kernel, no model.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from utils.notebooks import cells as C

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))

HINT_BLOCK = re.compile(r"<details>\s*<summary>(?P<summary>.*?)</summary>(?P<body>.*?)</details>", re.S)
ANSWER = "Answer"
MIN_HINTS = 3
MIN_FRAGMENT = 12  # characters, after normalised(): shorter pieces (`else:`, `k = 0`) give nothing away


@dataclass(frozen=True)
class Hint:
    summary: str
    body: str


@dataclass(frozen=True)
class Exercise:
    notebook: str
    number: str
    hints: tuple[Hint, ...]
    solution: tuple[str, ...]  # the solution's lines

    @property
    def name(self) -> str:
        return f"{self.notebook} {self.number}"


# --------------------------------------------------------------------------------------------
# Reading the notebooks


def hint_blocks(markdown: str) -> list[Hint]:
    """The ``<details><summary>...</summary>...</details>`` blocks of a markdown text, in order."""
    return [Hint(match["summary"].strip(), match["body"]) for match in HINT_BLOCK.finditer(markdown)]


def solution_lines(cell: Any) -> list[str]:
    """The lines of a cell that are solution: all of a cell tagged ``solution``, else those between the markers."""
    lines = C.source(cell).splitlines()
    if C.SOLUTION_TAG in C.tags(cell):
        return lines
    if cell.get("cell_type") != "code":
        return []
    return [line for begin, end in C.solution_regions(C.source(cell)) for line in lines[begin + 1:end]]


def exercises_of(cells: list[dict[str, Any]], notebook: str) -> list[Exercise]:
    """Every exercise of a notebook's cells with its hints and its solution lines."""
    scopes = C.exercise_scopes(cells)
    exercises = []
    for _, heading in C.exercise_headings(cells):
        members = [cell for cell, scope in zip(cells, scopes) if scope == heading.exercise]
        markdown = "\n".join(C.source(cell) for cell in members
                             if cell["cell_type"] == "markdown" and C.SOLUTION_TAG not in C.tags(cell))
        solution = [line for cell in members for line in solution_lines(cell)]
        exercises.append(Exercise(notebook, heading.exercise, tuple(hint_blocks(markdown)), tuple(solution)))
    return exercises


def read_exercises(path: Path) -> list[Exercise]:
    """Every exercise of a solution notebook (read as JSON: no kernel)."""
    return exercises_of(json.loads(path.read_text(encoding="utf-8"))["cells"], path.stem)


# --------------------------------------------------------------------------------------------
# What counts as giving the answer away


def normalised(text: str) -> str:
    """``text`` without whitespace and backticks, so that reflowing or quoting a line does not hide it."""
    return re.sub(r"[\s`]", "", text)


def without_comment(line: str) -> str:
    """A line of Python up to its ``#`` comment (a ``#`` inside a string literal stays)."""
    quote, escaped = None, False
    for position, char in enumerate(line):
        if quote:
            quote = None if char == quote and not escaped else quote
            escaped = char == "\\" and not escaped
        elif char in "'\"":
            quote = char
        elif char == "#":
            return line[:position]
    return line


def parsed(code: str) -> ast.Module | None:
    """``code`` (one line) as Python, completing a block header (``for ...:``) with ``pass``; None if not Python."""
    for attempt in (code, code + " pass"):
        try:
            return ast.parse(attempt)
        except SyntaxError:
            continue
    return None


def line_pieces(code: str) -> list[str]:
    """The line itself, the expression it assigns or returns, and its string literals (not the parts of an f-string)."""
    pieces = [code]
    tree = parsed(code)
    if tree is None:
        return pieces
    in_f_strings = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in ast.walk(node)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return)) and node.value is not None:
            pieces.append(ast.get_source_segment(code, node.value) or "")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in in_f_strings:
            pieces.append(node.value)
    return pieces


def solution_fragments(solution: tuple[str, ...] | list[str]) -> set[str]:
    """The normalised pieces of a solution that no hint but the Answer may contain."""
    fragments = set()
    for line in solution:
        code = without_comment(line).strip()
        fragments.update(piece for piece in map(normalised, line_pieces(code)) if len(piece) >= MIN_FRAGMENT)
    return fragments


def leaked_fragments(hint: Hint, fragments: set[str]) -> list[str]:
    """The solution fragments that appear in a hint's text."""
    text = normalised(hint.body)
    return sorted(fragment for fragment in fragments if fragment in text)


def hint_leaks(exercise: Exercise) -> dict[str, list[str]]:
    """``{summary: fragments}`` for each hint but the Answer that quotes the exercise's solution."""
    fragments = solution_fragments(exercise.solution)
    leaks = {hint.summary: leaked_fragments(hint, fragments) for hint in exercise.hints if hint.summary != ANSWER}
    return {summary: found for summary, found in leaks.items() if found}


def ladder_problems(summaries: list[str]) -> list[str]:
    """What is wrong with a sequence of hint summaries; empty for Hint 1, Hint 2, Hint 3, ... [, Answer]."""
    problems = []
    hints = summaries[:-1] if summaries and summaries[-1] == ANSWER else summaries
    if ANSWER in hints:
        problems.append(f"the {ANSWER!r} hint must be the last one: {summaries}")
        hints = [summary for summary in hints if summary != ANSWER]
    expected = [f"Hint {number}" for number in range(1, len(hints) + 1)]
    if hints != expected:
        problems.append(f"the hints must be named {expected} in this order, not {hints}")
    if len(hints) < MIN_HINTS:
        problems.append(f"{len(hints)} hints: at least {MIN_HINTS} "
                        "(the concept, the shapes or the formula, the shape of the code)")
    return problems


# --------------------------------------------------------------------------------------------
# The course's exercises


EXERCISES = [exercise for path in SOLUTIONS for exercise in read_exercises(path)]


def test_every_solution_notebook_has_exercises_with_hints_and_a_solution():
    assert SOLUTIONS, "found no solution notebooks"
    assert {exercise.notebook for exercise in EXERCISES} == {path.stem for path in SOLUTIONS}
    for exercise in EXERCISES:
        assert exercise.hints, f"Exercise {exercise.name}: no hint blocks"
        assert solution_fragments(exercise.solution), f"Exercise {exercise.name}: no solution to compare hints with"


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda exercise: exercise.name)
def test_hints_climb_from_hint_1_to_at_least_hint_3(exercise: Exercise):
    problems = ladder_problems([hint.summary for hint in exercise.hints])
    assert not problems, f"Exercise {exercise.name}: " + "; ".join(problems)


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda exercise: exercise.name)
def test_the_answer_is_the_last_hint_when_there_is_one(exercise: Exercise):
    summaries = [hint.summary for hint in exercise.hints]
    assert summaries.count(ANSWER) <= 1, f"Exercise {exercise.name}: more than one {ANSWER!r} hint"
    if ANSWER in summaries:
        assert summaries[-1] == ANSWER, f"Exercise {exercise.name}: the {ANSWER!r} hint is not the last: {summaries}"


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda exercise: exercise.name)
def test_no_hint_but_the_answer_gives_the_solution_away(exercise: Exercise):
    leaks = hint_leaks(exercise)
    assert not leaks, f"Exercise {exercise.name}: hints quote the solution (normalised): {leaks}"


# --------------------------------------------------------------------------------------------
# The detector itself


MADE_UP_SOLUTION = (
    "def scores(a, b):\n"
    "    # BEGIN SOLUTION\n"
    "    dots = einops.einsum(a, b, \"batch d_model, batch d_model -> batch\")   # one score per row\n"
    "    return dots.softmax(dim=-1)\n"
    "    # END SOLUTION"
)


def made_up_exercise(second_hint: str) -> Exercise:
    """Exercise 9.1 of a made-up notebook: three hints (the second one given), an Answer, the solution above."""
    markdown = ("### Exercise 9.1: scores\n\n"
                "<details><summary>Hint 1</summary>\n\nA dot product per row, then a softmax.\n</details>\n\n"
                f"<details><summary>Hint 2</summary>\n\n{second_hint}\n</details>\n\n"
                "<details><summary>Hint 3</summary>\n\n`einops.einsum`, then `softmax`.\n</details>\n\n"
                "<details><summary>Answer</summary>\n\n```python\n"
                "dots = einops.einsum(a, b, \"batch d_model, batch d_model -> batch\")\n"
                "return dots.softmax(dim=-1)\n```\n</details>\n")
    cells = [{"cell_type": "markdown", "metadata": {}, "source": markdown},
             {"cell_type": "code", "metadata": {}, "source": MADE_UP_SOLUTION}]
    [exercise] = exercises_of(cells, "99_made_up")
    return exercise


@pytest.mark.parametrize("leaking_hint", [
    'Write `dots = einops.einsum(a, b, "batch d_model, batch d_model -> batch")`.',   # the line, less its comment
    "`return   dots.softmax(\n    dim=-1)`",                                          # the line, reflowed
    "It is `dots.softmax(dim=-1)`.",                                                  # the returned expression
    "The pattern is `batch d_model, batch d_model -> batch`.",                        # the einsum string
])
def test_the_detector_catches_a_hint_that_quotes_the_solution(leaking_hint: str):
    exercise = made_up_exercise(leaking_hint)
    assert [hint.summary for hint in exercise.hints] == ["Hint 1", "Hint 2", "Hint 3", ANSWER]
    assert list(hint_leaks(exercise)) == ["Hint 2"]


def test_the_detector_accepts_hints_that_point_without_quoting_and_an_answer_that_quotes():
    exercise = made_up_exercise("Contract `d_model` with `einops.einsum`; normalise over the last dimension.")
    assert hint_leaks(exercise) == {}
    assert leaked_fragments(exercise.hints[-1], solution_fragments(exercise.solution))  # the Answer does quote


def test_comments_and_short_lines_are_not_fragments():
    fragments = solution_fragments(["x = 1  # a comment of more than twelve characters", "else:", "return out"])
    assert fragments == set()
    assert without_comment('save(f"shard_#{i}")  # write') == 'save(f"shard_#{i}")  '
    assert without_comment('path = "a\\\\"  # a backslash') == 'path = "a\\\\"  '


@pytest.mark.parametrize(("summaries", "problem"), [
    (["Hint 1", "Hint 2"], "at least 3"),
    (["Hint", "Hint 2", "Hint 3"], "in this order"),
    (["Hint 1", "Hint 3", "Hint 2"], "in this order"),
    (["Hint 1", "Answer", "Hint 2", "Hint 3"], "must be the last"),
    (["Hint 1", "Hint 2", "Answer"], "at least 3"),
])
def test_the_ladder_check_names_what_is_wrong(summaries: list[str], problem: str):
    assert any(problem in found for found in ladder_problems(summaries)), ladder_problems(summaries)


def test_the_ladder_check_accepts_three_hints_and_an_answer():
    assert ladder_problems(["Hint 1", "Hint 2", "Hint 3"]) == []
    assert ladder_problems(["Hint 1", "Hint 2", "Hint 3", "Hint 4", ANSWER]) == []
