"""Mutants of a reference solution, for proving that an exercise's checker rejects wrong answers.

A checker that accepts the reference proves little: the question is whether it rejects code that
is *almost* the reference. :func:`mutants` rewrites a function's syntax tree one small change at a
time, the mistakes learners make::

    for mutant in mutants(per_token_loss):
        print(mutant.name)          # "drop .log_softmax() in `logits[:, :-1].log_softmax(dim=-1)` (line 5)", ...
        wrong_fn = mutant.function  # compiled in the reference's module, ready for the checker

and :func:`surviving` runs a checker on every mutant and returns those it accepted: each is either
a hole in the checker or a mutant *equivalent* to the reference (the same function written
differently), which a reviewed list records with its reason (``tests/mutation_equivalents.json``).

The mutations: arithmetic and comparison operators swapped, a sign dropped, integer constants
moved by one (dimensions, positions, offsets), slice bounds dropped, a method call replaced by
its object and a function call by its first argument (a dropped normalisation, softmax or norm), the two
arguments of a call swapped, a statement deleted, a ``finally`` block deleted, ``True`` and
``False`` and ``and``/``or`` swapped, and an out-of-place operation on an argument made in place
(``logits / t`` -> ``logits.div_(t)``).
"""

from __future__ import annotations

import ast
import contextlib
import copy
import inspect
import io
import itertools
import os
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from utils import checks

#: Seconds a mutant may run on one case of its checker: a mutated loop that never ends is a wrong answer.
MUTANT_TIME_LIMIT_SECONDS = 10.0

__all__ = ["Mutant", "mutants", "surviving"]

_OPERATOR_SWAPS: dict[type, type] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
    ast.Pow: ast.Mult, ast.MatMult: ast.Mult,
}
_COMPARE_SWAPS: dict[type, type] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In,
}
_IN_PLACE: dict[type, str] = {ast.Add: "add_", ast.Sub: "sub_", ast.Mult: "mul_", ast.Div: "div_"}
#: Modules whose functions are called as ``torch.f(x)``, not methods of an object to drop.
_FUNCTION_MODULES = {"torch", "F", "einops", "math", "np", "architecture"}


@dataclass(frozen=True)
class Mutant:
    """One changed copy of a function: what changed (``name``), its source and the compiled function."""

    name: str
    source: str
    function: Callable[..., Any]


def mutants(function: Callable[..., Any], source: str | None = None) -> list[Mutant]:
    """Every single-change mutant of ``function`` that compiles, named by change and line.

    ``function`` must be defined with ``def``; its source is read with ``inspect``, or is the
    code ``source`` that defines it (a notebook cell). Each mutant is compiled in ``function``'s
    globals, keeps the decorators and the name, and has the same signature. Lines are counted
    from the ``def`` line (1).
    """
    tree = ast.parse(textwrap.dedent(source if source is not None else inspect.getsource(function)))
    definition = next((node for node in tree.body if isinstance(node, ast.FunctionDef)
                       and node.name == function.__name__), None)
    if definition is None:
        raise TypeError(f"no def {function.__name__}(...) in the source of {function!r}")
    parameters = {a.arg for a in (*definition.args.posonlyargs, *definition.args.args, *definition.args.kwonlyargs)}
    found: dict[str, Mutant] = {}
    for name, mutated in _mutations(definition, parameters):
        text = ast.unparse(ast.fix_missing_locations(mutated))
        if text == ast.unparse(definition) or any(m.source == text for m in found.values()):
            continue
        compiled = _compile(mutated, function)
        if compiled is not None:
            found.setdefault(name, Mutant(name, text, compiled))
    return list(found.values())


def surviving(checker: Callable[[Callable[..., Any]], Any], candidates: list[Mutant],
              time_limit: float = MUTANT_TIME_LIMIT_SECONDS) -> list[Mutant]:
    """The mutants that ``checker`` (called with the mutant's function) accepts; checker output is
    silenced, and a mutant that hangs (a loop that no longer ends) is stopped after ``time_limit`` s.
    Each runs in a scratch working directory, so that a mutant writing files where its reference
    would not (a path dropped from ``directory / name``) leaves nothing behind."""
    accepted = []
    for mutant in candidates:
        with contextlib.redirect_stdout(io.StringIO()), _checks_time_limit(time_limit), _in_a_scratch_directory():
            try:
                passed = bool(checker(mutant.function))
            except Exception:  # a mutant that breaks the checker itself is not accepted
                passed = False
        if passed:
            accepted.append(mutant)
    return accepted


@contextlib.contextmanager
def _in_a_scratch_directory() -> Iterator[None]:
    """Run the block in a new temporary working directory, removed afterwards."""
    previous = os.getcwd()
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)
        try:
            yield
        finally:
            os.chdir(previous)


@contextlib.contextmanager
def _checks_time_limit(seconds: float) -> Iterator[None]:
    """Set the checkers' time limit per case (:data:`utils.checks.TIME_LIMIT_SECONDS`) in the block."""
    previous, checks.TIME_LIMIT_SECONDS = checks.TIME_LIMIT_SECONDS, seconds
    try:
        yield
    finally:
        checks.TIME_LIMIT_SECONDS = previous


# ---------------------------------------------------------------------------------------------
# The mutations


def _mutations(definition: ast.FunctionDef, parameters: set[str]) -> Iterator[tuple[str, ast.FunctionDef]]:
    """(name, mutated copy of ``definition``) for every node of the body and every change it admits."""
    nodes = [node for statement in definition.body for node in ast.walk(statement)]
    parents = {child: parent for parent in ast.walk(definition) for child in ast.iter_child_nodes(parent)}
    seen: dict[str, int] = {}
    for index, node in enumerate(nodes):
        line = getattr(node, "lineno", definition.lineno) - definition.lineno + 1
        # a constant or a slice is named with what holds it: "1 in `logits[:, :-1]`", not "1 in `1`"
        shown = node
        while isinstance(shown, (ast.Constant, ast.Slice, ast.UnaryOp, ast.Tuple, ast.keyword)) and shown in parents:
            shown = parents[shown]
        snippet = _shorten((ast.unparse(shown).splitlines() or ["..."])[0])
        for description, replace in _changes(node, parameters):
            mutated = copy.deepcopy(definition)
            target = [n for statement in mutated.body for n in ast.walk(statement)][index]
            if replace(target, mutated):
                name = f"{description} in `{snippet}` (line {line})"
                seen[name] = seen.get(name, 0) + 1
                yield name + (f" #{seen[name]}" if seen[name] > 1 else ""), mutated


Change = Callable[[ast.AST, ast.FunctionDef], bool]


def _changes(node: ast.AST, parameters: set[str]) -> Iterator[tuple[str, Change]]:
    """The changes that apply to ``node``: (description, function that applies it to the copy's node)."""
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATOR_SWAPS:
        new = _OPERATOR_SWAPS[type(node.op)]
        yield f"{_symbol(node.op)} -> {_symbol(new())}", lambda n, _: _set(n, "op", new())
        for side in ("left", "right"):
            yield f"drop the {side} operand of {_symbol(node.op)}", _replace_with(lambda n, side=side: getattr(n, side))
        if type(node.op) in _IN_PLACE and isinstance(node.left, ast.Name) and node.left.id in parameters:
            method = _IN_PLACE[type(node.op)]
            yield f"{node.left.id} {_symbol(node.op)} ... in place ({method})", _replace_with(
                lambda n, method=method: ast.Call(ast.Attribute(n.left, method, ast.Load()), [n.right], []))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not)):
        yield f"drop {_symbol(node.op)}", _replace_with(lambda n: n.operand)
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in _COMPARE_SWAPS:
                new = _COMPARE_SWAPS[type(op)]
                yield f"{_symbol(op)} -> {_symbol(new())}", lambda n, _, i=i, new=new: _set_item(n.ops, i, new())
    if isinstance(node, ast.BoolOp):
        new_op = ast.Or if isinstance(node.op, ast.And) else ast.And
        yield f"{_symbol(node.op)} -> {_symbol(new_op())}", lambda n, _: _set(n, "op", new_op())
    if isinstance(node, ast.Constant) and type(node.value) is bool:
        yield f"{node.value} -> {not node.value}", lambda n, _: _set(n, "value", not n.value)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        for delta in (1, -1):
            yield f"constant {node.value} -> {node.value + delta}", lambda n, _, d=delta: _set(n, "value", n.value + d)
    if isinstance(node, ast.Slice):
        for bound in ("lower", "upper"):
            if getattr(node, bound) is not None:
                yield f"drop the slice's {bound} bound", lambda n, _, b=bound: _set(n, b, None)
    if isinstance(node, ast.Call):
        yield from _call_changes(node)
    if isinstance(node, ast.Try) and node.finalbody:
        yield "drop the finally block", lambda n, _: _set(n, "finalbody", []) if n.handlers else _unwrap_try(n, _)
    if isinstance(node, ast.stmt) and not isinstance(node, (ast.Return, ast.FunctionDef, ast.Try)) and not _is_docstring(node):
        yield "delete the statement", _delete_statement


def _call_changes(node: ast.Call) -> Iterator[tuple[str, Change]]:
    function = node.func
    if isinstance(function, ast.Attribute) and not _is_module(function.value):
        yield f"drop .{function.attr}()", _replace_with(lambda n: n.func.value)
    elif node.args and not isinstance(node.args[0], ast.Starred):
        yield f"replace {ast.unparse(function)}(...) by its first argument", _replace_with(lambda n: n.args[0])
    if len(node.args) >= 2 and not any(isinstance(a, ast.Starred) for a in node.args[:2]):
        yield f"swap the first two arguments of {ast.unparse(function)}()", lambda n, _: _swap_arguments(n)


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _is_module(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id in _FUNCTION_MODULES or (
        isinstance(node, ast.Attribute) and _is_module(node.value))


def _replace_with(new_node: Callable[[Any], ast.AST]) -> Change:
    """A change that puts ``new_node(node)`` where ``node`` was in its parent."""
    def apply(node: ast.AST, root: ast.FunctionDef) -> bool:
        replacement = new_node(node)
        for parent in ast.walk(root):
            for field, value in ast.iter_fields(parent):
                if value is node:
                    setattr(parent, field, replacement)
                    return True
                if isinstance(value, list) and any(item is node for item in value):
                    value[[i for i, item in enumerate(value) if item is node][0]] = replacement
                    return True
        return False
    return apply


def _delete_statement(node: ast.AST, root: ast.FunctionDef) -> bool:
    for parent in ast.walk(root):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(parent, field, None)
            if isinstance(block, list) and any(item is node for item in block):
                block.remove(node)
                if not block:
                    block.append(ast.Pass())
                return True
    return False


def _unwrap_try(node: ast.Try, root: ast.FunctionDef) -> bool:
    """``try: body finally: cleanup`` without handlers becomes ``body``: the cleanup never runs."""
    return _replace_with(lambda n: ast.If(ast.Constant(True), n.body, []))(node, root)


def _swap_arguments(node: ast.Call) -> bool:
    node.args[0], node.args[1] = node.args[1], node.args[0]
    return True


def _set(node: ast.AST, field: str, value: Any) -> bool:
    setattr(node, field, value)
    return True


def _set_item(items: list, index: int, value: Any) -> bool:
    items[index] = value
    return True


def _shorten(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _symbol(op: ast.AST) -> str:
    return {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Pow: "**",
            ast.MatMult: "@", ast.USub: "unary -", ast.Not: "not", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">",
            ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.Is: "is", ast.IsNot: "is not", ast.In: "in",
            ast.NotIn: "not in", ast.And: "and", ast.Or: "or"}[type(op)]


_MUTANT_NUMBERS = itertools.count()


def _compile(definition: ast.FunctionDef, original: Callable[..., Any]) -> Callable[..., Any] | None:
    """The mutated ``def`` compiled in ``original``'s module, or None when it does not compile."""
    module = ast.fix_missing_locations(ast.Module([definition], type_ignores=[]))
    namespace = dict(inspect.unwrap(original).__globals__)  # a decorated function: the globals of its def
    try:  # each mutant under a name of its own: nnsight reads a trace's source back by file name and line
        checks.exec_source(ast.unparse(module), f"<mutant {next(_MUTANT_NUMBERS)} of {original.__qualname__}>",
                           namespace)
    except Exception:
        return None
    return namespace[definition.name]
