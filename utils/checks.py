"""Checkers for the course's exercises: run the learner's code against a reference, print one line.

Every exercise of a lab ends with a checker call such as ``check_per_token_loss(per_token_loss)``.
Chapter modules build their checkers from the two functions here::

    from utils.checks import Case, check_function

    def check_softmax(learner_fn):
        cases = [Case("a row of 5", torch.randn(1, 5)), Case("columns", torch.randn(3, 4), dim=0)]
        return check_function(learner_fn, torch.softmax, cases, exercise="1.1 (softmax)",
                              hint="exponentiate, then divide by the sum over `dim`")

A check prints exactly one line, for example::

    ✅ Exercise 1.1 (softmax): passed on 2 inputs
    ❌ Exercise 1.1 (softmax): input 'columns': first difference at index (0, 1): expected 0.2120, got 0.4512; max abs diff 0.239 (9 of 12 values differ). Hint: ...

and returns a :class:`CheckResult` (truthy when it passed, invisible as a cell's last expression).

Rules that every checker gets for free:

- The learner's function and the reference run on *fresh copies* of the tensor arguments, so a
  function that edits its input in place cannot corrupt the reference run or the next case; and
  the check fails when the learner's function changed any tensor argument in place, or the
  weights, hooks or training mode of a module argument (``mutable=`` names the arguments an
  exercise's function is meant to change).
- Both run with the same random seed (``seed=0``), so sampling exercises can be compared; the
  notebook's own random state is restored afterwards.
- A learner function that raises ``NotImplementedError`` (the lab's placeholder) is *not* caught:
  running a lab top to bottom stops at the first unfinished exercise. Any other exception becomes
  a ❌ line naming the exception (no traceback).
- Messages show the first difference only, never the whole reference output.
- A checker may declare ``properties`` its cases must have (:class:`Varies`: an argument changes
  the answer on some case; :class:`HasCase`: some case is of a kind), so that an answer that
  ignores ``k`` or normalises a weight it was given cannot pass. They are verified on the
  reference before the learner's function runs; a case list without them is a bug in the course.
- A later cell that runs the learner's functions starts with ``depends_on("0.4", "0.9")``: it prints one
  line naming each of those exercises whose last check in this kernel failed or never ran, so that
  numbers computed with unfinished code are not taken for the model's.
- Nothing a check prints counts for grading: ``python -m utils.grade`` runs the checkers itself, on
  the learner's definitions, outside the notebook (:mod:`utils.recheck`).

Tests of checkers use :func:`assert_accepts` and :func:`assert_rejects`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import linecache
import math
import numbers
import random
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "Case",
    "CaseProperty",
    "CheckResult",
    "CheckTimeout",
    "HasCase",
    "RaisingCase",
    "Varies",
    "assert_accepts",
    "assert_rejects",
    "check_function",
    "check_value",
    "compare",
    "depends_on",
    "float_losses",
    "report",
    "time_limited",
]

PASS_MARK, FAIL_MARK = "✅", "❌"
#: The learner's exception messages are cut to this many characters in a check's line.
MAX_ERROR_CHARS = 300
#: Seconds a learner's function may run on one case before the check stops it (a hang, an endless loop).
TIME_LIMIT_SECONDS = 120.0
#: Strings up to this length are shown whole when they differ.
SHORT_STRING = 60

_EXERCISE_ID = re.compile(r"^\s*(?:Exercise\s+)?(\d+\.\d+)(?!\.?\d)")


# --------------------------------------------------------------------------------------------
# Inputs and results


class Case:
    """One input of a check: a name shown on failure, and the arguments to call the functions with.

    ``Case("batch of 1", logits, tokens, dim=-1)`` calls ``fn(logits, tokens, dim=-1)``. The name
    says what is special about this input ("odd length 7", "layer 3", "tiny random Llama"), so a
    learner who fails on it knows where to look.
    """

    __slots__ = ("name", "args", "kwargs")

    def __init__(self, name: str, /, *args: Any, **kwargs: Any) -> None:
        if not isinstance(name, str) or not name.strip():
            raise TypeError(f"Case needs a name (a non-empty string) as its first argument, got {name!r}")
        self.name = name
        self.args = args
        self.kwargs = kwargs

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {len(self.args)} args, kwargs={sorted(self.kwargs)})"


class RaisingCase(Case):
    """An input on which the function must raise, and must still leave its arguments as they were: for
    example a forward pass that fails while a hook is registered (the hook must go all the same, in a
    ``finally`` block). Any exception will do, unless the keyword ``raises=`` names the class the
    exercise asks for (``RaisingCase("no pairs", tokenizer, [], raises=ValueError)``): then an error of
    another class (an ``IndexError`` from the code after a missing check) fails."""

    __slots__ = ("raises",)

    def __init__(self, name: str, /, *args: Any, raises: type[BaseException] = Exception, **kwargs: Any) -> None:
        super().__init__(name, *args, **kwargs)
        self.raises = raises


@dataclass(frozen=True)
class Varies:
    """A property of a checker's cases: on at least one case, the reference's answer changes when the
    argument ``name`` is replaced by ``change(value)``, so that an answer which makes that mistake
    cannot pass. ``mistake`` says which ("ignores k", "normalises the decoder's rows")."""

    name: str
    change: Callable[[Any], Any]
    mistake: str

    def holds(self, reference_fn: Callable[..., Any], cases: list[Case], seed: int | None) -> bool:
        for case in cases:
            bound = inspect.signature(reference_fn).bind(*_fresh_copy(case.args), **_fresh_copy(case.kwargs))
            if self.name not in bound.arguments:
                continue
            expected = _run(reference_fn, bound.args, bound.kwargs, seed)
            bound.arguments[self.name] = self.change(bound.arguments[self.name])
            try:
                changed = _run(reference_fn, bound.args, bound.kwargs, seed)
            except Exception:  # the changed value is no valid input on this case (a layer past the last)
                continue
            if compare(changed, expected) is not None:
                return True
        return False

    def __str__(self) -> str:
        return f"an answer that {self.mistake} gives another answer on some case (argument '{self.name}')"


@dataclass(frozen=True)
class HasCase:
    """A property of a checker's cases: at least one case is ``kind`` (``test(case)`` is true),
    for example "a batch of 1" or "a row with more than k positive pre-activations"."""

    kind: str
    test: Callable[[Case], bool]

    def holds(self, reference_fn: Callable[..., Any], cases: list[Case], seed: int | None) -> bool:
        return any(self.test(case) for case in cases)

    def __str__(self) -> str:
        return f"some case is {self.kind}"


CaseProperty = Varies | HasCase


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check. Truthy when it passed; shows nothing as a cell's last expression.

    ``exercise`` is the label printed after "Exercise" (e.g. ``"0.1 (per_token_loss)"``),
    ``message`` what follows it (e.g. ``"passed on 4 inputs"``, or the problem and the hint).
    """

    exercise: str
    passed: bool
    message: str

    @property
    def exercise_id(self) -> str:
        """The exercise number ``N.M`` at the start of :attr:`exercise`."""
        return exercise_id(self.exercise)

    @property
    def line(self) -> str:
        """The line the check printed."""
        return f"{PASS_MARK if self.passed else FAIL_MARK} Exercise {self.exercise}: {self.message}"

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return self.line

    def _ipython_display_(self) -> None:
        """The check already printed its line: display nothing more in Jupyter."""


def exercise_id(exercise: str) -> str:
    """``"0.1"`` from ``"0.1 (per_token_loss)"`` or ``"Exercise 0.1"``; ValueError for anything else."""
    match = _EXERCISE_ID.match(exercise) if isinstance(exercise, str) else None
    if not match:
        raise ValueError(
            f"exercise={exercise!r}: a check's exercise must start with its number N.M, "
            "e.g. exercise='0.1 (per_token_loss)'"
        )
    return match.group(1)


# --------------------------------------------------------------------------------------------
# The two checks


def check_function(
    learner_fn: Callable[..., Any],
    reference_fn: Callable[..., Any],
    cases: Iterable[Case],
    *,
    exercise: str,
    hint: str,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    seed: int | None = 0,
    mutable: Iterable[str] = (),
    in_place_advice: Mapping[str, str] | None = None,
    properties: Iterable[CaseProperty] = (),
    time_limit: float | None = None,
) -> CheckResult:
    """Run ``learner_fn`` and ``reference_fn`` on every case and compare their outputs.

    Args:
        learner_fn: the learner's function.
        reference_fn: the course's solution, called with the same arguments.
        cases: the inputs, each a :class:`Case`; the first failing one is reported.
        exercise: ``"N.M"`` or ``"N.M (name)"``; with a bare ``"N.M"`` the learner's function
            name is added.
        hint: one or two sentences shown after a failure.
        atol, rtol: tolerances for floating-point values (``|got - expected| <= atol + rtol * |expected|``).
        seed: both functions run with ``torch``/``random`` seeded with it (``None``: not seeded);
            the caller's random state is restored afterwards.
        mutable: the names (in ``reference_fn``'s signature) of the arguments the function may
            change in place; a change to any other tensor or module argument fails the check.
        in_place_advice: for a tensor argument (by name), why changing it in place is a bug here and
            what to do instead, said in place of the general advice ("the hook's input is the
            model's own tensor: clone it first").
        properties: what the cases must be like (:class:`Varies`, :class:`HasCase`), verified on the
            reference once per process and exercise before the learner's function runs.
        time_limit: seconds the learner's function may take on one case (0: no limit; ``None``:
            :data:`TIME_LIMIT_SECONDS`, read at call time); past it the check fails with one line
            (on Unix, in the main thread, where Jupyter runs cells).

    Returns:
        The :class:`CheckResult`; its line has been printed.

    Raises:
        NotImplementedError: raised by ``learner_fn`` (an unfinished exercise) is passed on.
        RuntimeError: the cases lack one of the ``properties`` (a bug in the course's checker).
    """
    label = _label(exercise, learner_fn)
    cases = list(cases)
    if not cases:
        raise ValueError(f"check for Exercise {label}: no cases given")
    if not all(isinstance(case, Case) for case in cases):
        raise TypeError(f"check for Exercise {label}: cases must be Case(name, *args, **kwargs) objects")
    if not callable(learner_fn):
        return _finish(label, False, f"expected a function, got {_describe_type(learner_fn)}: pass the "
                                     "function itself (check(my_function)), not the result of calling it", hint)
    _verify_properties(reference_fn, cases, tuple(properties), exercise_id(exercise), seed)
    watch = _Watch(set(mutable), in_place_advice or {}, TIME_LIMIT_SECONDS if time_limit is None else time_limit, seed)
    for case in cases:
        problem = _case_problem(learner_fn, reference_fn, case, watch, label, atol, rtol)
        if problem is not None:
            return _finish(label, False, f"input '{case.name}': {problem}", hint)
    count = len(cases)
    return _finish(label, True, f"passed on {count} input{'s' if count != 1 else ''}")


def check_value(
    learner_value: Any,
    expected: Any,
    *,
    exercise: str,
    hint: str,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> CheckResult:
    """Compare a value the learner computed (not a function) with the expected one.

    A learner value of ``...`` (the lab's placeholder, as in ``answer = ...``) raises
    ``NotImplementedError``, like an unfinished function.
    """
    label = _label(exercise, None)
    if learner_value is Ellipsis:
        raise NotImplementedError(f"Exercise {exercise_id(exercise)}: replace ... with your answer, then run the check")
    problem = compare(learner_value, expected, atol=atol, rtol=rtol)
    if problem is not None:
        return _finish(label, False, problem, hint)
    return _finish(label, True, "correct")


def report(exercise: str, passed: bool, message: str, *, hint: str = "",
           learner_fn: Callable[..., Any] | None = None) -> CheckResult:
    """Print and log a result the checker decided itself, for a property no output comparison shows
    (for example *how* a function used the model: a generation loop that ignores its KV cache)."""
    return _finish(_label(exercise, learner_fn), passed, message, hint)


# --------------------------------------------------------------------------------------------
# Comparing outputs


def compare(actual: Any, expected: Any, *, atol: float = 1e-5, rtol: float = 1e-4, path: str = "") -> str | None:
    """``None`` when ``actual`` matches ``expected``, else a one-line description of the first difference.

    Tensors (and numpy arrays) are compared by shape, then kind of dtype (floating point is
    compared with tolerance whatever its precision; integers and booleans exactly), then values.
    Numbers are compared with tolerance, bools/strings/None exactly, and tuples, lists and dicts
    element by element, the message naming the path (``output[1]``, ``output['loss']``).
    """
    where = f"{path}: " if path else ""
    if _is_array(expected):
        return _compare_tensors(actual, _as_tensor(expected), atol, rtol, where, expected_is_array=True)
    if isinstance(expected, torch.Tensor):
        return _compare_tensors(actual, expected, atol, rtol, where)
    if _is_bool(expected):
        if not _is_bool(actual):
            return f"{where}expected a bool (True or False), got {_describe_type(actual)}"
        return None if bool(actual) == bool(expected) else f"{where}expected {bool(expected)}, got {bool(actual)}"
    if isinstance(expected, numbers.Number):
        return _compare_numbers(actual, expected, atol, rtol, where)
    if isinstance(expected, str):
        return _compare_strings(actual, expected, where)
    if expected is None:
        return None if actual is None else f"{where}expected None, got {_describe_type(actual)}"
    if isinstance(expected, Mapping):
        return _compare_mappings(actual, expected, atol, rtol, path)
    if dataclasses.is_dataclass(expected) and not isinstance(expected, type):
        return _compare_dataclasses(actual, expected, atol, rtol, path)
    if isinstance(expected, (list, tuple)):
        return _compare_sequences(actual, expected, atol, rtol, path)
    try:
        equal = bool(actual == expected)
    except Exception:  # e.g. an ambiguous comparison
        equal = False
    return None if equal else f"{where}expected {_short_repr(expected)}, got {_short_repr(actual)}"


def _compare_dataclasses(actual: Any, expected: Any, atol: float, rtol: float, path: str) -> str | None:
    """A dataclass (``PairTokens``...) field by field, the message naming the field (``output['clean']``)."""
    name = type(expected).__name__
    if not (dataclasses.is_dataclass(actual) and type(actual).__name__ == name):
        return f"{path + ': ' if path else ''}expected a {name}, got {_describe_type(actual)}"
    fields = [field.name for field in dataclasses.fields(expected)]
    return _compare_mappings({f: getattr(actual, f) for f in fields}, {f: getattr(expected, f) for f in fields},
                             atol, rtol, path)


def _compare_tensors(actual: Any, expected: torch.Tensor, atol: float, rtol: float, where: str,
                     expected_is_array: bool = False) -> str | None:
    if _is_array(actual) and expected_is_array:
        actual = _as_tensor(actual)
    if _is_array(actual):
        return (f"{where}expected a torch tensor of shape {_shape(expected)}, got {_describe_type(actual)}: "
                "stay in torch (torch.from_numpy(array) turns an array back into a tensor)")
    if not isinstance(actual, torch.Tensor):
        return f"{where}expected a tensor of shape {_shape(expected)}, got {_describe_type(actual)}"
    if actual.device != expected.device:
        return (f"{where}expected a tensor on {expected.device}, got one on {actual.device}: create new tensors "
                "on the inputs' device (torch.zeros(..., device=x.device))")
    if actual.shape != expected.shape:
        return f"{where}expected shape {_shape(expected)}, got {_shape(actual)}"
    kind_expected, kind_actual = _dtype_kind(expected.dtype), _dtype_kind(actual.dtype)
    if kind_expected != kind_actual:
        return f"{where}expected {_a(kind_expected)} tensor (dtype {expected.dtype}), got dtype {actual.dtype}"
    got, want = actual.detach().cpu(), expected.detach().cpu()
    if kind_expected in ("bool", "integer"):
        differs = got != want
        abs_diff = None
    else:
        wide = torch.complex128 if kind_expected == "complex" else torch.float64
        got, want = got.to(wide), want.to(wide)
        close = torch.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
        differs = ~close
        abs_diff = torch.where(close, torch.zeros((), dtype=torch.float64), (got - want).abs().to(torch.float64))
    if not bool(differs.any()):
        return None
    index = tuple(int(i) for i in differs.nonzero()[0]) if differs.dim() else ()
    at = f" at index {index}" if index else ""
    message = f"{where}first difference{at}: expected {_format_number(want[index].item())}, got {_format_number(got[index].item())}"
    if abs_diff is not None:
        message += f"; max abs diff {_format_diff(abs_diff.max().item())}"
    count, total = int(differs.sum()), differs.numel()
    if total > 1:
        message += f" ({count} of {total} values differ)"
    return message


def _compare_numbers(actual: Any, expected: numbers.Number, atol: float, rtol: float, where: str) -> str | None:
    if isinstance(actual, torch.Tensor) or _is_array(actual):
        return (f"{where}expected a Python number, got {_describe_type(actual)}: "
                "use .item() to turn a one-element tensor into a number")
    if not isinstance(actual, numbers.Number) or _is_bool(actual):
        return f"{where}expected a number, got {_describe_type(actual)}"
    if isinstance(expected, numbers.Integral) and isinstance(actual, numbers.Integral):
        equal = int(actual) == int(expected)
    elif isinstance(expected, numbers.Real) and isinstance(actual, numbers.Real):
        a, e = float(actual), float(expected)
        equal = (math.isnan(a) and math.isnan(e)) or a == e or abs(a - e) <= atol + rtol * abs(e)
    else:  # complex
        equal = abs(complex(actual) - complex(expected)) <= atol + rtol * abs(complex(expected))
    return None if equal else f"{where}expected {_format_number(expected)}, got {_format_number(actual)}"


def _compare_strings(actual: Any, expected: str, where: str) -> str | None:
    if not isinstance(actual, str):
        return f"{where}expected a string, got {_describe_type(actual)}"
    if actual == expected:
        return None
    if len(actual) <= SHORT_STRING and len(expected) <= SHORT_STRING:
        return f"{where}expected {expected!r}, got {actual!r}"
    first = next((i for i, (a, e) in enumerate(zip(actual, expected)) if a != e), min(len(actual), len(expected)))
    return (f"{where}strings differ from character {first}: expected {expected[first:first + 20]!r}..., "
            f"got {actual[first:first + 20]!r}... (lengths: expected {len(expected)}, got {len(actual)})")


def _compare_sequences(actual: Any, expected: list | tuple, atol: float, rtol: float, path: str) -> str | None:
    where = f"{path}: " if path else ""
    kind = type(expected).__name__
    if not isinstance(actual, (list, tuple)):
        return f"{where}expected {_a(kind)} of length {len(expected)}, got {_describe_type(actual)}"
    if len(actual) != len(expected):
        return f"{where}expected {_a(kind)} of length {len(expected)}, got length {len(actual)}"
    for i, (got, want) in enumerate(zip(actual, expected)):
        problem = compare(got, want, atol=atol, rtol=rtol, path=f"{path or 'output'}[{i}]")
        if problem is not None:
            return problem
    return None


def _compare_mappings(actual: Any, expected: Mapping, atol: float, rtol: float, path: str) -> str | None:
    where = f"{path}: " if path else ""
    if not isinstance(actual, Mapping):
        return f"{where}expected a dict with keys {_short_repr(sorted(map(str, expected)))}, got {_describe_type(actual)}"
    missing = [key for key in expected if key not in actual]
    if missing:
        return f"{where}missing key {missing[0]!r}"
    extra = [key for key in actual if key not in expected]
    if extra:
        return f"{where}unexpected key {extra[0]!r}"
    for key, want in expected.items():
        problem = compare(actual[key], want, atol=atol, rtol=rtol, path=f"{path or 'output'}[{key!r}]")
        if problem is not None:
            return problem
    return None


# --------------------------------------------------------------------------------------------
# Test helpers


def assert_accepts(result: CheckResult) -> None:
    """Fail (AssertionError) unless the check passed: use on the reference solution."""
    if not isinstance(result, CheckResult):
        raise AssertionError(f"expected a CheckResult, got {_describe_type(result)}: does the checker return its result?")
    if not result.passed:
        raise AssertionError(f"the checker rejected a correct answer: {result.message}")


def assert_rejects(result: CheckResult, match: str) -> None:
    """Fail unless the check failed with a message matching the regular expression ``match``."""
    if not isinstance(result, CheckResult):
        raise AssertionError(f"expected a CheckResult, got {_describe_type(result)}: does the checker return its result?")
    if result.passed:
        raise AssertionError(f"the checker accepted a wrong answer ({result.message})")
    if not re.search(match, result.message):
        raise AssertionError(f"the checker's message {result.message!r} does not match {match!r}")


# --------------------------------------------------------------------------------------------
# Helpers


def _label(exercise: str, learner_fn: Callable[..., Any] | None) -> str:
    """``"0.1 (per_token_loss)"``: the exercise as given, or its number plus the function's name."""
    number = exercise_id(exercise)
    label = re.sub(r"^\s*Exercise\s+", "", exercise).strip()
    name = getattr(learner_fn, "__name__", None)
    if label == number and isinstance(name, str) and name.isidentifier():
        label = f"{number} ({name})"
    return label


def _finish(label: str, passed: bool, message: str, hint: str = "") -> CheckResult:
    message = _one_line(message)
    if not passed and hint:
        message = f"{message.rstrip('.')}. Hint: {_one_line(hint)}"
    result = CheckResult(label, passed, message)
    print(result.line, flush=True)
    LAST_RESULTS[result.exercise_id] = result
    return result


def exec_source(source: str, filename: str, namespace: dict[str, Any]) -> None:
    """``exec`` ``source`` in ``namespace`` as if it had been read from ``filename``.

    The lines go into ``linecache`` first, so that code which reads a function's source back finds
    them: nnsight's ``trace`` compiles the body of its ``with`` block from the source, and tracebacks
    show the lines. Give each distinct source its own ``filename``.
    """
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102


def float_losses(take_step: Callable[[], Any], steps: int) -> list[float]:
    """Call ``take_step()`` ``steps`` times (a training-step exercise on its own state) and return its
    losses; a step that does not return a float raises ``TypeError`` saying so, which the check reports."""
    losses = []
    for _ in range(steps):
        loss = take_step()
        if not isinstance(loss, float):
            raise TypeError(f"the step returned a {type(loss).__name__}: return the loss as a float (loss.item()), "
                            "so that a list of losses holds no graph")
        losses.append(loss)
    return losses


#: The last result of each exercise checked in this process, by number (what :func:`depends_on` reads).
LAST_RESULTS: dict[str, CheckResult] = {}
WARNING_MARK = "⚠️"


def depends_on(*exercises: str) -> bool:
    """Before a cell that runs the learner's code of ``exercises`` (numbers ``"N.M"``): print one line naming
    those whose last check failed or has not run, and return whether all of them passed."""
    for exercise in exercises:
        exercise_id(exercise)                                       # a ValueError names a malformed number
    failed = [e for e in exercises if e in LAST_RESULTS and not LAST_RESULTS[e].passed]
    unchecked = [e for e in exercises if e not in LAST_RESULTS]
    problems = ([f"Exercise {', '.join(failed)} failed its checker"] if failed else []) + \
        ([f"Exercise {', '.join(unchecked)} has not been checked"] if unchecked else [])
    if problems:
        print(f"{WARNING_MARK} This cell runs your code, and {'; '.join(problems)}: what it prints may be your code's "
              "mistake, not the model's. Fix the exercise and run its checker again.", flush=True)
    return not problems


_VERIFIED: set[tuple[str, Callable[..., Any], str]] = set()   # (exercise, reference, property) verified


def _verify_properties(reference_fn: Callable[..., Any], cases: list[Case], properties: tuple[CaseProperty, ...],
                       exercise: str, seed: int | None) -> None:
    """Raise RuntimeError naming the first of ``properties`` that the cases lack (each verified once)."""
    for prop in properties:
        key = (exercise, reference_fn, str(prop))
        if key in _VERIFIED:
            continue
        if not prop.holds(reference_fn, cases, seed):
            raise RuntimeError(f"the cases of the checker of Exercise {exercise} lack a property it declares: "
                               f"{prop}. This is a bug in the course, please report it")
        _VERIFIED.add(key)


def _run(fn: Callable[..., Any], args: tuple, kwargs: dict, seed: int | None, time_limit: float = 0) -> Any:
    with _seeded(seed), time_limited(time_limit):
        return fn(*args, **kwargs)


@dataclass(frozen=True)
class _Watch:
    """How the learner's function is run: the arguments it may change, the advice for those it must
    not, its time limit and seed."""

    mutable: set[str]
    advice: Mapping[str, str]
    time_limit: float
    seed: int | None


def _case_problem(learner_fn: Callable[..., Any], reference_fn: Callable[..., Any], case: Case, watch: _Watch,
                  label: str, atol: float, rtol: float) -> str | None:
    """What is wrong with the learner's function on one case (``"your function raised ..."``), or None."""
    try:
        actual, error, changed = _call_watched(learner_fn, case, _argument_names(reference_fn, case), watch)
    except CheckTimeout as timeout:
        return f"your function {timeout}"
    if isinstance(case, RaisingCase):
        if error is None:
            return f"your function returned {_describe_type(actual)}, but on this input it must raise"
        if not isinstance(error, case.raises):
            return (f"your function raised {_describe_error(error)}, but on this input it must raise a "
                    f"{case.raises.__name__} that says what is wrong")
        return f"when it raised {_describe_error(error)}, your function {changed}" if changed else None
    if error is not None:  # the learner's bug: report it, no traceback
        return f"your function raised {_describe_error(error)}"
    if changed:
        return f"your function {changed}"
    return compare(actual, _call_reference(reference_fn, case, watch.seed, label), atol=atol, rtol=rtol)


def _call_watched(fn: Callable[..., Any], case: Case, names: list[str], watch: _Watch
                  ) -> tuple[Any, Exception | None, str | None]:
    """``fn``'s output (or its exception) on fresh copies of the case's arguments, and what it
    changed in place (``"changed its argument 'logits' in place: ..."``, with ``watch.advice[name]``
    as the reason when given) or ``None``. Hooks it left on a module argument are removed and the
    module's mode restored, so that a later case, and the learner's notebook, see the module as it was."""
    args, kwargs = _fresh_copy(case.args), _fresh_copy(case.kwargs)
    watched = [(name, value) for name, value in [*zip(names, args), *kwargs.items()] if name not in watch.mutable]
    before = [_state(value) for _, value in watched]
    output, error = None, None
    try:
        output = _run(fn, args, kwargs, watch.seed, watch.time_limit)
    except (NotImplementedError, CheckTimeout):
        raise
    except Exception as raised:
        error = raised
    finally:
        changes = [(name, value, _what_changed(state, _state(value))) for (name, value), state in zip(watched, before)]
        for (_, value), state in zip(watched, before):
            _restore_module(value, state)
    for name, value, change in changes:
        if change and name in watch.advice and isinstance(value, torch.Tensor):
            return output, error, f"changed its argument '{name}' in place: {watch.advice[name]}"
        if change:
            return output, error, change.format(name=name)
    return output, error, None


class CheckTimeout(BaseException):
    """The learner's function ran past the check's time limit (a BaseException, so that an
    ``except Exception`` in the learner's code cannot swallow it)."""


@contextlib.contextmanager
def time_limited(seconds: float) -> Iterator[None]:
    """Raise :class:`CheckTimeout` in the block after ``seconds`` (main thread on Unix; elsewhere no limit)."""
    if not seconds or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise CheckTimeout(f"ran for more than {seconds:g} s and was stopped: look for a loop that never ends")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _argument_names(fn: Callable[..., Any], case: Case) -> list[str]:
    """The names of the case's positional arguments in ``fn``'s signature (``argument 2`` past them)."""
    try:
        parameters = [p.name for p in inspect.signature(fn).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):  # a builtin without a signature
        parameters = []
    return [parameters[i] if i < len(parameters) else f"argument {i + 1}" for i in range(len(case.args))]


def _state(value: Any) -> tuple:
    """What an in-place change would move: tensors' version counters (through tuples, lists and
    dicts); a module's parameters' and buffers' versions, its number of hooks and its mode."""
    if isinstance(value, torch.Tensor):
        return ("tensor", value._version)
    if isinstance(value, torch.nn.Module):
        versions = tuple(t._version for t in (*value.parameters(), *value.buffers()))
        return ("module", versions, _hooks(value), value.training)
    if isinstance(value, (list, tuple)):
        return ("sequence", tuple(_state(item) for item in value))
    if isinstance(value, dict):
        return ("mapping", tuple((key, _state(item)) for key, item in value.items()))
    return ("other",)


def _hook_registries(module: torch.nn.Module) -> Iterator[dict]:
    for submodule in module.modules():
        yield from (submodule._forward_hooks, submodule._forward_pre_hooks, submodule._backward_hooks)


def _is_transformers_own(hook: Callable[..., Any]) -> bool:
    """Whether ``hook`` belongs to ``transformers``: version 5 installs hooks of its own, for good, the first
    time a model is asked for ``output_hidden_states`` or ``output_attentions``."""
    return getattr(hook, "__module__", "").startswith("transformers.")


def _hooks(module: torch.nn.Module) -> frozenset[tuple[int, int]]:
    """``(registry id, key)`` of every hook on ``module`` and its submodules but transformers' own."""
    return frozenset((id(registry), key) for registry in _hook_registries(module)
                     for key, hook in registry.items() if not _is_transformers_own(hook))


def _restore_module(value: Any, before: tuple) -> None:
    """Remove the hooks added to a module argument since ``before`` (its :func:`_state`) and restore its mode."""
    if before[0] != "module":
        return
    for registry in _hook_registries(value):
        added = [key for key, hook in registry.items() if (id(registry), key) not in before[2]
                 and not _is_transformers_own(hook)]
        for key in added:
            del registry[key]
    if value.training != before[3]:
        value.train(before[3])


def _what_changed(before: tuple, after: tuple) -> str | None:
    """A sentence (with ``{name}`` for the argument) saying how ``after`` differs from ``before``."""
    if before == after:
        return None
    if before[0] == "tensor" or before[0] != after[0]:
        return ("changed its argument '{name}' in place: later cells (and the code that called it) see the "
                "change. Work on a copy (x = x.clone()) or use operations that return new tensors (x + y, not x += y)")
    if before[0] == "module":
        if before[1] != after[1]:
            return "changed the weights of its argument '{name}' in place: leave the model as it was given"
        if before[2] != after[2]:
            return ("left a hook on its argument '{name}': remove every hook it adds, also when the forward pass "
                    "raises (try/finally, or a context manager)")
        return "changed the training mode of its argument '{name}' (model.train() / model.eval()): restore it"
    resized = ("changed its argument '{name}' in place (it added or removed items): build a new list or dict "
               "instead")
    if len(before[1]) != len(after[1]):
        return resized
    if before[0] == "sequence":
        return next(change.replace("'{name}'", "'{name}[%d]'" % i) for i, (b, a) in enumerate(zip(before[1], after[1]))
                    if (change := _what_changed(b, a)))
    return next((change.replace("'{name}'", "'{name}[%r]'" % key) for (key, b), (_, a) in zip(before[1], after[1])
                 if (change := _what_changed(b, a))), resized)


def _call_reference(fn: Callable[..., Any], case: Case, seed: int | None, label: str) -> Any:
    try:
        return _run(fn, _fresh_copy(case.args), _fresh_copy(case.kwargs), seed)
    except Exception as error:
        raise RuntimeError(
            f"the reference solution of Exercise {label} failed on input '{case.name}' "
            f"({_describe_error(error)}): this is a bug in the course, please report it"
        ) from error


def _fresh_copy(value: Any) -> Any:
    """Copy the tensors in ``value`` (through tuples, lists and dicts); other objects are shared."""
    if isinstance(value, torch.Tensor):
        copy = value.detach().clone()
        return copy.requires_grad_(value.requires_grad) if value.is_leaf else copy
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_fresh_copy(item) for item in value)
    if isinstance(value, list):
        return [_fresh_copy(item) for item in value]
    if isinstance(value, dict):
        return {key: _fresh_copy(item) for key, item in value.items()}
    if _is_array(value):
        return value.copy()
    return value


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Seed ``random`` and ``torch`` for the block, then restore the caller's random state."""
    if seed is None:
        yield
        return
    python_state = random.getstate()
    numpy = sys.modules.get("numpy")
    numpy_state = numpy.random.get_state() if numpy is not None else None
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        random.seed(seed)
        torch.manual_seed(seed)
        if numpy is not None:
            numpy.random.seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            if numpy is not None:
                numpy.random.set_state(numpy_state)


def _is_array(value: Any) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.ndarray)


def _as_tensor(array: Any) -> torch.Tensor:
    return torch.from_numpy(array.copy()) if array.dtype != object else torch.tensor(array.tolist())


def _is_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.bool_)


def _dtype_kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    if dtype.is_complex:
        return "complex"
    if dtype.is_floating_point:
        return "floating-point"
    return "integer"


def _shape(tensor: torch.Tensor) -> str:
    dims = tuple(tensor.shape)
    return f"({dims[0]},)" if len(dims) == 1 else str(dims)


def _describe_type(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {_shape(value)}"
    if _is_array(value):
        return f"a numpy array of shape {tuple(value.shape)}"
    if value is None:
        return "None"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of length {len(value)}"
    return _a(type(value).__name__)


def _a(word: str) -> str:
    """``"an int"``, ``"a float"``: the word with its indefinite article."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def _describe_error(error: BaseException) -> str:
    text = _one_line(str(error))
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _format_number(value: Any) -> str:
    if isinstance(value, bool) or isinstance(value, numbers.Integral):
        return str(value)
    if isinstance(value, numbers.Real):
        x = float(value)
        if math.isnan(x) or math.isinf(x):
            return str(x)
        return f"{x:.4f}" if x == 0 or 1e-3 <= abs(x) < 1e5 else f"{x:.4e}"
    return str(value)


def _format_diff(value: float) -> str:
    return str(value) if math.isnan(value) or math.isinf(value) else f"{value:.3g}"


def _short_repr(value: Any, limit: int = 80) -> str:
    text = _one_line(repr(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(text: str) -> str:
    """The text with its line breaks (and the blanks around them) turned into single spaces."""
    return re.sub(r"\s*[\r\n]+\s*", " ", str(text)).strip()
