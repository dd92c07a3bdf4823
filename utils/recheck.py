"""The grader's own check of each exercise, outside the submitted notebook.

A submitted notebook can print anything, write any file of its folder and replace any function in
its kernel, so the grade never comes from its run. After the run, ``utils.grade`` takes the
definitions of the learner's exercise code out of the notebook (:func:`definitions`: imports,
functions, classes and constants, not the statements that would run) and calls this module in a
fresh sandboxed process::

    python -m utils.recheck VERDICT_FD < request.json

The process loads what the chapter's checkers need (the course model...), then checks each
exercise in a child process of its own (``fork``): the child runs the learner's definitions and the
exercise's checker, and sends its verdict to the parent over a pipe of its own. Only the parent,
which never runs learner code, holds ``VERDICT_FD``, the grader's pipe (children close it at once,
and the parent cannot be opened through ``/proc``), and it writes there one JSON line per exercise,
signed with the run's secret (the request's first line) once every child has ended.

In each child, before the learner's code runs:

- the exercise's reference function is replaced, wherever the library exports it, by a tripwire that
  notes a call from the learner's code (``uses the reference``: the same function, a wrapper around
  it, or an import of it);
- the attributes of the library's and the checkers' modules are noted, and compared after the check:
  a change (a checker or ``torch.allclose`` replaced) voids the check (``tampered``).

The learner's code is also read for the means of reaching into the grader (frames, ``ctypes``,
file descriptors, ``/proc``): such code is not run (``tampered``).
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import hmac
import importlib
import io
import json
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

PASS, FAIL, ERROR, NOT_ATTEMPTED, USES_REFERENCE, TAMPERED = (
    "pass", "fail", "error", "not attempted", "uses the reference", "tampered")
STATUSES = (PASS, FAIL, ERROR, NOT_ATTEMPTED, USES_REFERENCE, TAMPERED)
#: The file name the learner's code is compiled under (the tripwire looks for it on the stack).
LEARNER_FILE = "<submission: exercise {id}>"
#: Top-level statements kept from the learner's cells: definitions, and constants that run no code.
KEPT_STATEMENTS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
#: Names, and attributes of modules, that only code reaching into the grader needs: such code is not run.
REACHING_IN_NAMES = frozenset({"ctypes", "gc", "importlib", "builtins", "__import__", "__builtins__", "exec", "eval",
                               "compile", "globals", "vars"})
#: Attributes of anything (frames, functions, modules) that only such code needs.
REACHING_IN_ANY_ATTRIBUTE = frozenset({"__code__", "__globals__", "__builtins__", "__closure__", "__dict__", "f_back",
                                       "f_locals", "f_globals", "_getframe", "currentframe"})
REACHING_IN_ATTRIBUTES = {
    "os": frozenset({"write", "writev", "pwrite", "sendfile", "dup", "dup2", "fdopen", "kill", "killpg", "fork",
                     "forkpty", "_exit", "execv", "execve", "system", "popen"}),
    "sys": frozenset({"modules", "settrace", "setprofile", "addaudithook", "_getframe"}),
    "inspect": frozenset({"stack", "currentframe", "getouterframes"}),
}
#: Substrings of the learner's string constants that name a process's descriptors or memory.
REACHING_IN_PATHS = ("/proc", "/dev/fd")
#: Module families whose attributes must be the same after a check as before it.
WATCHED_MODULES = ("utils", "torch", "numpy", "einops", "transformer_lens", "nnsight", "builtins", "math", "random",
                   "jaxtyping", "sae_lens", "transformers", "peft")
#: Characters of a message kept in a verdict.
MAX_MESSAGE = 2000


# --------------------------------------------------------------------------------------------
# In the grader: the learner's definitions


def definitions(cell_sources: Iterable[str]) -> str:
    """The imports, functions, classes and literal constants of ``cell_sources`` (in order), as one
    source, without the statements that would run code (calls, loops, assignments of computed values).
    A cell that does not parse (IPython magics, a syntax error) gives none."""
    kept: list[str] = []
    for text in cell_sources:
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, KEPT_STATEMENTS) or _is_literal_constant(node):
                decorators = [f"@{ast.unparse(decorator)}\n" for decorator in getattr(node, "decorator_list", [])]
                kept.append("".join(decorators) + (ast.get_source_segment(text, node) or ast.unparse(node)))
    return "\n\n".join(kept) + "\n"


def _is_literal_constant(node: ast.stmt) -> bool:
    value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
    if value is None:
        return False
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    if not all(isinstance(target, ast.Name) for target in targets):
        return False
    try:
        ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError):
        return False
    return True


def reaching_in(source: str) -> list[str]:
    """The names, attributes and paths in ``source`` that only code reaching into the grader needs
    (modules imported under another name count as theirs; so does ``getattr`` on them with a name
    that is not written out)."""
    tree = ast.parse(source)
    aliases = {alias.asname or alias.name: alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in REACHING_IN_NAMES:
            found.append(node.id)
        elif isinstance(node, ast.Attribute):
            module = aliases.get(node.value.id, node.value.id) if isinstance(node.value, ast.Name) else None
            if node.attr in REACHING_IN_ANY_ATTRIBUTE or node.attr in REACHING_IN_ATTRIBUTES.get(module, ()):
                found.append(f"{module or ast.unparse(node.value)}.{node.attr}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "setattr")
              and len(node.args) >= 2 and isinstance(node.args[0], ast.Name)
              and aliases.get(node.args[0].id, node.args[0].id) in REACHING_IN_ATTRIBUTES
              and not isinstance(node.args[1], ast.Constant)):
            found.append(f"{node.func.id}({aliases.get(node.args[0].id, node.args[0].id)}, ...)")
        elif isinstance(node, ast.ImportFrom) and node.module in REACHING_IN_ATTRIBUTES:
            found += [f"{node.module}.{alias.name}" for alias in node.names
                      if alias.name in REACHING_IN_ATTRIBUTES[node.module] or alias.name == "*"]
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [module for module in modules if module.split(".")[0] in REACHING_IN_NAMES]
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += [f"'{path}'" for path in REACHING_IN_PATHS if path in node.value]
    return sorted(set(found))


def sign(secret: bytes, line: str) -> str:
    """The HMAC-SHA256 of ``line`` under ``secret`` (hex)."""
    return hmac.new(secret, line.encode(), hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------------------------
# In the sandbox: the parent, which never runs learner code


def main(argv: list[str]) -> int:
    verdict_fd = int(argv[0])
    secret = bytearray(128)
    _read_line_into(0, secret)
    request = json.loads(sys.stdin.buffer.read())
    _not_dumpable()
    context = _load_context(request)
    verdicts = [_check_in_child(exercise, request, context, verdict_fd, secret) for exercise in request["exercises"]]
    key = bytes(secret).rstrip(b"\0")  # only now, with every child gone, does the key exist as bytes
    with os.fdopen(verdict_fd, "w", encoding="utf-8") as channel:
        for verdict in verdicts:
            line = json.dumps(verdict, ensure_ascii=False)
            channel.write(json.dumps({"verdict": line, "signature": sign(key, line)}) + "\n")
    return 0


def _read_line_into(fd: int, buffer: bytearray) -> None:
    """Read the secret's line from ``fd`` into ``buffer`` byte by byte (no other copy of it is made)."""
    view = memoryview(buffer)
    for index in range(len(buffer)):
        if os.readv(fd, [view[index:index + 1]]) == 0 or buffer[index] == ord("\n"):
            buffer[index] = 0
            return


def _not_dumpable() -> None:
    """``prctl(PR_SET_DUMPABLE, 0)``: no process of the same user may open this one's ``/proc`` files
    (its descriptors, its memory) or trace it."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE = 4
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def _load_context(request: dict[str, Any]) -> Any:
    """The checkers' context with what the chapter's exercises need loaded, before any fork."""
    import torch

    from utils.exercises import ExerciseContext

    torch.manual_seed(0)
    context = ExerciseContext()
    for need in dict.fromkeys(need for exercise in request["exercises"] for need in exercise["needs"]):
        getattr(context, need)
    for exercise in request["exercises"]:
        importlib.import_module(exercise["checker"].split(":")[0])
        with contextlib.suppress(ImportError):
            importlib.import_module(exercise["library"])
    return context


def _check_in_child(exercise: dict[str, Any], request: dict[str, Any], context: Any, verdict_fd: int,
                    secret: bytearray) -> dict[str, Any]:
    """Fork; the child checks ``exercise`` and reports over its own pipe; the child's verdict (or why
    there is none) as a dict ``{"id", "status", "message"}``."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nothing of the parent's channel or secret stays within reach
        try:
            os.close(read_end)
            os.close(verdict_fd)
            secret[:] = bytes(len(secret))
            verdict = _check(exercise, request, context)
            os.write(write_end, json.dumps(verdict).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    data, timed_out = _read_until(read_end, float(request["seconds_per_exercise"]), pid)
    os.close(read_end)
    if timed_out:
        return _verdict(exercise, ERROR, f"its check did not end within {request['seconds_per_exercise']:g} s "
                                         "(the time limit of an exercise's check)")
    _, status = os.waitpid(pid, 0)
    try:
        verdict = json.loads(data)
        if verdict.get("id") == exercise["id"] and verdict.get("status") in STATUSES:
            return _verdict(exercise, verdict["status"], str(verdict.get("message", "")))
    except (json.JSONDecodeError, AttributeError):
        pass
    return _verdict(exercise, ERROR, "its check ended without a verdict (" + _exit_words(status) + ")")


def _read_until(fd: int, seconds: float, pid: int) -> tuple[bytes, bool]:
    """Everything the child writes to ``fd`` until it closes it; (data, True) if ``seconds`` ran out first
    (the child is killed)."""
    deadline, chunks = time.monotonic() + seconds, []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return b"", True
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)


def _exit_words(status: int) -> str:
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        return f"killed by {name}" + (": out of memory?" if name == "SIGKILL" else "")
    return f"exit status {os.WEXITSTATUS(status)}"


def _verdict(exercise: dict[str, Any], status: str, message: str) -> dict[str, Any]:
    return {"id": exercise["id"], "status": status, "message": message[:MAX_MESSAGE]}


# --------------------------------------------------------------------------------------------
# In the child


def _check(exercise: dict[str, Any], request: dict[str, Any], context: Any) -> dict[str, Any]:
    """Run the learner's definitions and the exercise's checker; the verdict."""
    import torch

    torch.set_num_threads(1)  # the parent's OpenMP threads do not exist in a forked child
    source = request["sources"].get(exercise["id"])
    if source is None:
        return _verdict(exercise, ERROR, f"no cell of this exercise defines {exercise['function']}()")
    means = reaching_in(source)
    if means:
        return _verdict(exercise, TAMPERED, "not run: the code uses " + ", ".join(means)
                        + ", which an exercise never needs and which can reach into the grader")
    reference_calls: list[str] = []
    tripwire = _tripwire(exercise, reference_calls)
    before = _module_attributes()
    try:
        learner_fn = _learner_function(exercise, source)
    except NotImplementedError:
        return _verdict(exercise, NOT_ATTEMPTED, "still raises NotImplementedError")
    except Exception as error:  # noqa: BLE001  (the learner's definitions)
        return _verdict(exercise, ERROR, f"its definitions raised {type(error).__name__}: {error}")
    if not callable(learner_fn):
        return _verdict(exercise, ERROR, f"{exercise['function']} is a {type(learner_fn).__name__}, not a function")
    if tripwire is not None and learner_fn is tripwire:
        reference_calls.append(f"{exercise['library']}.{exercise['function']}")
    result, problem = _run_checker(exercise, learner_fn, context)
    changed = _changed(before, _module_attributes())
    if changed:
        return _verdict(exercise, TAMPERED, "the check does not count: the code changed " + ", ".join(changed[:5])
                        + (" ..." if len(changed) > 5 else ""))
    if reference_calls:
        return _verdict(exercise, USES_REFERENCE, f"it calls the course's own {reference_calls[0]}, the reference "
                                                  "solution, instead of computing the answer")
    if problem is not None:
        return problem
    return _verdict(exercise, PASS if result.passed else FAIL, result.message)


def _learner_function(exercise: dict[str, Any], source: str) -> Any:
    """Execute the learner's definitions in the solution's namespace; the exercise's function."""
    from utils.checks import exec_source
    from utils.exercises import Exercise, _solution_namespace

    namespace = _solution_namespace(Exercise(exercise["id"], "", exercise["function"], exercise["library"], ""))
    namespace.pop(exercise["function"], None)
    namespace["__name__"] = "submission"
    with _quiet():
        exec_source(source, LEARNER_FILE.format(id=exercise["id"]), namespace)
    if exercise["function"] not in namespace:
        raise LookupError(f"no cell of this exercise defines {exercise['function']}()")
    return namespace[exercise["function"]]


def _run_checker(exercise: dict[str, Any], learner_fn: Any, context: Any) -> tuple[Any, dict[str, Any] | None]:
    module, name = exercise["checker"].split(":")
    checker = getattr(importlib.import_module(module), name)
    try:
        with _quiet():
            result = checker(learner_fn, *(getattr(context, need) for need in exercise["needs"]))
    except NotImplementedError:
        return None, _verdict(exercise, NOT_ATTEMPTED, "still raises NotImplementedError")
    except Exception as error:  # noqa: BLE001
        return None, _verdict(exercise, ERROR, f"its check raised {type(error).__name__}: {error}")
    if not hasattr(result, "passed"):
        return None, _verdict(exercise, ERROR, f"the checker {name} returned no result (a course bug)")
    return result, None


def _tripwire(exercise: dict[str, Any], calls: list[str]) -> Callable[..., Any] | None:
    """Replace the exercise's reference (``library.function``) wherever a module of the library exports
    it by a wrapper that notes calls made from the learner's code; the wrapper (None without a reference)."""
    try:
        reference = getattr(importlib.import_module(exercise["library"]), exercise["function"])
    except (ImportError, AttributeError):
        return None
    if not callable(reference):
        return None
    learner_file = LEARNER_FILE.format(id=exercise["id"])
    label = f"{exercise['library']}.{exercise['function']}"

    @functools.wraps(reference)  # the checkers read its signature
    def tripwire(*args: Any, **kwargs: Any) -> Any:
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_filename == learner_file:
                calls.append(label)
                break
            frame = frame.f_back
        return reference(*args, **kwargs)

    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("utils") and getattr(module, exercise["function"], None) is reference:
            setattr(module, exercise["function"], tripwire)
    return tripwire


def _module_attributes() -> dict[str, dict[str, int]]:
    """For every loaded module of :data:`WATCHED_MODULES`, the identity of each attribute: all of the
    course's, the public ones of the other libraries (which set private ones lazily as they run)."""
    attributes = {}
    for name, module in list(sys.modules.items()):
        family = name.split(".")[0]
        if module is None or family not in WATCHED_MODULES:
            continue
        try:
            attributes[name] = {key: id(value) for key, value in list(vars(module).items())
                                if family == "utils" or not key.startswith("_")}
        except TypeError:
            continue
    for cls in _watched_classes():
        attributes[f"{cls.__module__}.{cls.__qualname__}"] = {key: id(value) for key, value in list(vars(cls).items())}
    return attributes


def _watched_classes() -> list[type]:
    import torch

    from utils import checks

    return [torch.Tensor, torch.nn.Module, checks.CheckResult, checks.Case]


def _changed(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> list[str]:
    """The module attributes that were replaced or deleted (new modules and attributes are allowed:
    imports, caches)."""
    changed = []
    for module, names in before.items():
        now = after.get(module)
        if now is None:
            continue
        for key, identity in names.items():
            if now.get(key, identity) != identity and key not in _CHANGING:
                changed.append(f"{module}.{key}")
            elif key not in now and not key.startswith("_"):
                changed.append(f"{module}.{key} (deleted)")
    return changed


#: Module attributes that the libraries themselves rebind while they run.
_CHANGING = frozenset({"__warningregistry__", "_last_traceback", "last_value", "last_type", "last_traceback"})


@contextlib.contextmanager
def _quiet() -> Any:
    """The checkers' printed line and the learner's prints go nowhere: the verdict is the result."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
