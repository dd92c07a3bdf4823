"""Grade submitted lab notebooks: run each offline in a fresh kernel, report every exercise.

    python -m utils.grade SUBMISSION.ipynb [--chapter 00_course_model] [--timeout 300] [--json report.json]
    python -m utils.grade submissions/ --json reports.json     # every notebook of a folder, then a summary

For each submission the grader

1. reads it (exit code 2 if it is not a notebook, or is another chapter's lab);
2. copies it into a fresh temporary folder, which is also the kernel's working folder, ``HOME``
   and ``TMPDIR``;
3. runs it top to bottom in a new ``python3`` kernel, offline (``HF_HUB_OFFLINE=1``...), with
   ``MODEL = "course"`` forced after the parameters cell, errors allowed (so later exercises
   still run), a time limit per cell and for the whole notebook, and a guard (a Python audit
   hook) that refuses to create, change, delete or rename files outside that folder or to
   start programs;
4. reads the checkers' results (``COURSE_CHECK_LOG``, one JSON line per check) and the cells'
   errors, and gives each exercise of the chapter's reference lab (``labs/<chapter>.ipynb``
   metadata) a status:

   - ``pass`` / ``fail``: what its checker said (all of its checks must pass);
   - ``not attempted``: its code still raises the lab's ``NotImplementedError``;
   - ``error``: one of its cells raised something else, timed out, or never ran (the time ran
     out or the kernel died before it).

Exit code: 0 when every exercise passes, 1 when one does not, 2 when a submission cannot be
graded. ``--json`` writes ``{"notebook", "chapter", "exercises": [{"id", "status", "message"}],
"passed", "total", "seconds", "notes"}`` (a list of them for several notebooks).

The guard stops accidents (``os.remove`` on the wrong path, ``open(..., "w")`` outside the
folder); it is not a security sandbox (audit hooks can be bypassed with ctypes, for example).
Grade untrusted code in a container or a throwaway VM.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PASS, FAIL, ERROR, NOT_ATTEMPTED = "pass", "fail", "error", "not attempted"
EXIT_ALL_PASS, EXIT_NOT_ALL_PASS, EXIT_CANNOT_GRADE = 0, 1, 2
#: The same variable as ``utils.checks.CHECK_LOG_ENV`` (not imported here: that would import torch).
CHECK_LOG_ENV = "COURSE_CHECK_LOG"
DEFAULT_TIMEOUT = 300
#: Errors outside the exercises are listed as notes, up to this many.
MAX_ERROR_NOTES = 5
FORCED_MODEL = 'MODEL = "course"  # set by the grader: grading runs offline, on the course model'


class GradingError(Exception):
    """The submission cannot be graded (exit code 2); the message says why."""


@dataclass
class ExerciseResult:
    id: str
    status: str
    message: str


@dataclass
class Report:
    """The grade of one submission (``to_json()`` is the ``--json`` format)."""

    notebook: str
    chapter: str
    exercises: list[ExerciseResult]
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(result.status == PASS for result in self.exercises)

    @property
    def total(self) -> int:
        return len(self.exercises)

    def to_json(self) -> dict[str, Any]:
        return {"notebook": self.notebook, "chapter": self.chapter,
                "exercises": [asdict(result) for result in self.exercises],
                "passed": self.passed, "total": self.total, "seconds": round(self.seconds, 1), "notes": self.notes}


@dataclass
class CellRun:
    """What happened to one code cell of the submission."""

    status: str  # "ok", "error", "timeout" or "not run"
    ename: str = ""
    evalue: str = ""


# --------------------------------------------------------------------------------------------
# Grading


def grade(path: Path, *, chapter: str | None = None, labs_dir: Path | None = None,
          timeout: float = DEFAULT_TIMEOUT, cell_timeout: float | None = None, keep: bool = False) -> Report:
    """Grade the notebook at ``path`` (see the module's docstring); GradingError if it cannot be graded."""
    started = time.monotonic()
    path = Path(path)
    nb = load_submission(path)
    labs_dir = Path(labs_dir) if labs_dir else _default_labs_dir()
    chapter = resolve_chapter(nb, path, chapter, labs_dir)
    exercises = reference_exercises(labs_dir, chapter)
    workdir = Path(tempfile.mkdtemp(prefix="course-grade-")).resolve()
    try:
        shutil.copyfile(path, workdir / path.name)
        runs, notes = run_submission(nb, workdir, timeout=timeout, cell_timeout=cell_timeout)
        entries, log_notes = read_check_log(workdir / ".grading" / "checks.jsonl")
        results, more_notes = exercise_results(nb, exercises, runs, entries)
        blocked = read_blocked(workdir / ".grading" / "blocked.jsonl")
    finally:
        if keep:
            print(f"grading folder kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return Report(str(path), chapter, results, time.monotonic() - started, notes + more_notes + log_notes + blocked)


def load_submission(path: Path) -> Any:
    """Read the submission as an nbformat v4 notebook; GradingError ("cannot read ...") if it is not one."""
    import nbformat

    if not path.exists():
        raise GradingError(f"cannot read {path}: no such file")
    if path.is_dir():
        raise GradingError(f"cannot read {path}: it is a folder, not a notebook")
    try:
        with open(path, encoding="utf-8") as handle, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nb = nbformat.read(handle, as_version=4)
    except Exception as error:  # JSON, encoding, version or schema errors
        raise GradingError(f"cannot read {path}: not a Jupyter notebook ({type(error).__name__}: {_first_line(error)})") from None
    cells = nb.get("cells")
    if not isinstance(cells, list) or not all(isinstance(cell, dict) and "cell_type" in cell for cell in cells):
        raise GradingError(f"cannot read {path}: not a Jupyter notebook (no list of cells)")
    for cell in cells:
        if isinstance(cell.get("source"), list):
            cell["source"] = "".join(cell["source"])
    return nb


def resolve_chapter(nb: Any, path: Path, chapter: str | None, labs_dir: Path) -> str:
    """The chapter to grade against: ``--chapter``, else the notebook's metadata, else its file name
    (a submission whose metadata was lost, e.g. ``Copy of 00_course_model.ipynb``)."""
    own = ((nb.get("metadata") or {}).get("course") or {}).get("chapter")
    if chapter and own and own != chapter:
        raise GradingError(f"this notebook is chapter {own}, expected {chapter}")
    chapter = chapter or own
    if not chapter:
        known = sorted(lab.stem for lab in labs_dir.glob("[0-9][0-9]_*.ipynb"))
        chapter = next((stem for stem in known if stem in path.stem), None)  # "Copy of 00_course_model (2)"
    if not chapter:
        raise GradingError("cannot tell which chapter this notebook is (it has no course metadata); "
                           "pass --chapter NN_slug")
    return chapter


def reference_exercises(labs_dir: Path, chapter: str) -> list[str]:
    """The exercise ids of the chapter, from ``labs_dir/<chapter>.ipynb``'s metadata."""
    lab = Path(labs_dir) / f"{chapter}.ipynb"
    if not lab.is_file():
        known = ", ".join(sorted(p.stem for p in Path(labs_dir).glob("[0-9][0-9]_*.ipynb"))) or "none"
        raise GradingError(f"no reference lab {lab} for chapter {chapter!r} (labs there: {known}); "
                           "pass --labs DIR, or build the labs with `make labs`")
    with open(lab, encoding="utf-8") as handle:
        metadata = json.load(handle).get("metadata", {})
    exercises = (metadata.get("course") or {}).get("exercises")
    if not isinstance(exercises, list):
        raise GradingError(f"{lab} has no course.exercises metadata: rebuild it with `make labs`")
    return [str(exercise) for exercise in exercises]


def _default_labs_dir() -> Path:
    from utils.notebooks.project import LABS_DIR, default_root

    return default_root() / LABS_DIR


# --------------------------------------------------------------------------------------------
# Running the notebook


def run_submission(nb: Any, workdir: Path, *, timeout: float, cell_timeout: float | None = None
                   ) -> tuple[dict[int, CellRun], list[str]]:
    """Execute the submission's code cells in a fresh kernel in ``workdir``.

    Returns what happened to each code cell (by index in ``nb``) and notes (why the run stopped).
    ``timeout`` bounds the whole run (after the kernel has started), ``cell_timeout`` each cell.
    """
    import nbformat
    from nbclient import NotebookClient

    (workdir / "tmp").mkdir()
    (workdir / ".grading").mkdir()
    cells, origin = _cells_to_run(nb, workdir)
    client = NotebookClient(nbformat.v4.new_notebook(cells=cells), kernel_name="python3", allow_errors=True,
                            record_timing=False, shutdown_kernel="immediate", interrupt_on_timeout=False,
                            startup_timeout=120, resources={"metadata": {"path": str(workdir)}}, log=_quiet_logger())
    kernel_stderr = workdir / ".grading" / "kernel-stderr.txt"
    runner = _Runner(client, origin, timeout, cell_timeout, kernel_stderr)
    try:
        with open(kernel_stderr, "wb") as stderr, \
                client.setup_kernel(env=grading_env(workdir), cwd=str(workdir), stderr=stderr):
            runner.run_all()
    except GradingError:
        raise
    except Exception as error:  # the kernel did not start, or the client broke
        raise GradingError(f"cannot run the notebook: {type(error).__name__}: {_first_line(error)}") from None
    return runner.runs, runner.notes


class _Runner:
    """Runs a client's cells one by one under the time limits; records a CellRun per submission cell."""

    def __init__(self, client: Any, origin: list[int | None], timeout: float, cell_timeout: float | None,
                 kernel_stderr: Path) -> None:
        self.client, self.origin = client, origin
        self.timeout, self.cell_timeout, self.kernel_stderr = timeout, cell_timeout, kernel_stderr
        self.runs: dict[int, CellRun] = {}
        self.notes: list[str] = []
        self.stopped: str | None = None  # why the remaining cells do not run
        self.deadline = 0.0

    def run_all(self) -> None:
        self.deadline = time.monotonic() + self.timeout
        for index, cell in enumerate(self.client.nb.cells):
            if cell.cell_type == "code" and cell.source.strip():
                self.run_one(index, cell, self.origin[index])

    def run_one(self, index: int, cell: Any, own: int | None) -> None:
        from nbclient.exceptions import CellTimeoutError, DeadKernelError

        if self.stopped is None and time.monotonic() >= self.deadline:
            self.stop(f"the time limit of {_seconds(self.timeout)} ran out before cell {own}")
        if self.stopped is not None:
            self.record(own, CellRun("not run", evalue=self.stopped))
            return
        remaining = self.deadline - time.monotonic()
        limit = remaining if self.cell_timeout is None else min(self.cell_timeout, remaining)
        self.client.timeout = max(1, math.ceil(limit))
        try:
            self.client.execute_cell(cell, index)
        except CellTimeoutError:
            self.timed_out(own)
            return
        except DeadKernelError:
            self.stop(f"the kernel died while running cell {own} (out of memory, or exit()?)"
                      + _last_line(self.kernel_stderr))
            self.record(own, CellRun("error", "DeadKernelError", self.stopped or ""))
            return
        self.record(own, _outcome(cell))

    def timed_out(self, own: int | None) -> None:
        from nbclient.util import run_sync

        out_of_time = time.monotonic() >= self.deadline - 0.5
        self.record(own, CellRun("timeout", evalue=f"timed out after {_seconds(self.client.timeout)}"
                                 + (" (the time limit for the whole notebook)" if out_of_time else "")))
        if out_of_time:
            self.stop(f"the time limit of {_seconds(self.timeout)} ran out in cell {own} (an endless loop?)")
        else:
            run_sync(self.client.km.interrupt_kernel)()  # and go on with the next cell

    def stop(self, reason: str) -> None:
        self.stopped = reason
        self.notes.append(f"grading stopped: {reason}")

    def record(self, own: int | None, run: CellRun) -> None:
        if own is not None:
            self.runs[own] = run
        elif run.status != "ok":  # one of the grader's own cells
            raise GradingError(f"cannot set up the grading kernel: {run.status} {run.ename}: {run.evalue}".strip())


def _cells_to_run(nb: Any, workdir: Path) -> tuple[list[Any], list[int | None]]:
    """The cells to execute: the guard first, the submission's cells, ``MODEL = "course"`` after the
    parameters cell. ``origin[i]`` is the submission's index of cell i (None for the grader's cells)."""
    import nbformat

    guard = nbformat.v4.new_code_cell(
        "import utils.grade as _course_grade\n"
        f"_course_grade.install_write_guard({str(workdir)!r}, {str(workdir / '.grading' / 'blocked.jsonl')!r})\n"
        "del _course_grade"
    )
    cells: list[Any] = [guard]
    origin: list[int | None] = [None]
    for index, cell in enumerate(nb.cells):
        cell_type = cell.get("cell_type")
        text = cell.get("source", "")
        new = nbformat.v4.new_code_cell(text) if cell_type == "code" else nbformat.v4.new_markdown_cell(text)
        cells.append(new)
        origin.append(index)
        if cell_type == "code" and "parameters" in (cell.get("metadata", {}).get("tags") or []):
            cells.append(nbformat.v4.new_code_cell(FORCED_MODEL))
            origin.append(None)
    return cells, origin


def grading_env(workdir: Path) -> dict[str, str]:
    """The kernel's environment: offline, with every home and cache folder inside ``workdir``."""
    from utils.notebooks.execute import kernel_env

    home = str(workdir)
    return kernel_env(
        HOME=home, USERPROFILE=home, TMPDIR=str(workdir / "tmp"), TEMP=str(workdir / "tmp"), TMP=str(workdir / "tmp"),
        IPYTHONDIR=str(workdir / ".ipython"), XDG_CACHE_HOME=str(workdir / ".cache"),
        XDG_CONFIG_HOME=str(workdir / ".config"), HF_HOME=str(workdir / ".cache" / "huggingface"),
        MPLCONFIGDIR=str(workdir / ".config" / "matplotlib"), TORCH_HOME=str(workdir / ".cache" / "torch"),
        MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1",
        **{CHECK_LOG_ENV: str(workdir / ".grading" / "checks.jsonl")},
    )


def _outcome(cell: Any) -> CellRun:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return CellRun("error", str(output.get("ename", "")), _first_line(output.get("evalue", "")))
    return CellRun("ok")


def _quiet_logger() -> Any:
    import logging

    logger = logging.getLogger("utils.grade.kernel")
    logger.setLevel(logging.CRITICAL)
    logger.propagate = False
    return logger


# --------------------------------------------------------------------------------------------
# From cells and checks to statuses


def read_check_log(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The checkers' JSON lines (and a note if some line is unreadable)."""
    if not path.is_file():
        return [], []
    entries, bad = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
            if isinstance(entry, dict) and "exercise" in entry:
                entries.append(entry)
                continue
        except json.JSONDecodeError:
            pass
        bad += bool(line.strip())
    return entries, ([f"{bad} unreadable line(s) in the checkers' log"] if bad else [])


def read_blocked(path: Path) -> list[str]:
    """Notes for the file operations the guard refused."""
    if not path.is_file():
        return []
    notes = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
            why = entry.get("why") or "outside its folder"
            if why == "outside its folder":
                why = "outside its folder: a submission may only write files in its own folder"
            notes.append(f"blocked: the notebook tried {entry['action']} {entry['target']} ({why})")
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return sorted(set(notes), key=notes.index)


def exercise_results(nb: Any, exercises: list[str], runs: dict[int, CellRun], entries: list[dict[str, Any]]
                     ) -> tuple[list[ExerciseResult], list[str]]:
    """The status of each reference exercise, plus notes for errors no status explains."""
    from utils.notebooks.cells import calls_checker, exercise_scopes

    scopes = exercise_scopes(nb.cells)
    results = []
    for exercise in exercises:
        checks = [entry for entry in entries if str(entry.get("exercise")) == exercise]
        if checks:
            failed = [entry for entry in checks if not entry.get("passed")]
            status, message = (FAIL, failed[0].get("message", "")) if failed else (PASS, checks[-1].get("message", ""))
            results.append(ExerciseResult(exercise, status, str(message)))
            continue
        members = [i for i, scope in enumerate(scopes) if scope == exercise and nb.cells[i].get("cell_type") == "code"]
        if not members:
            results.append(ExerciseResult(exercise, ERROR, f"no cells for this exercise: its heading "
                                                           f"'### Exercise {exercise}: ...' is missing from the notebook"))
            continue
        checkers = [i for i in members if calls_checker(nb.cells[i])]
        if checkers:
            members = [i for i in members if i <= checkers[-1]]
        result = _first_problem(nb, exercise, members, runs)
        if result is None:
            result = ExerciseResult(exercise, ERROR, "no check ran: the checker call (check_...(...)) was removed or changed"
                                    if not checkers else "the checker cell ran but reported nothing (was the checker replaced?)")
        results.append(result)
    unfinished = {result.id for result in results if result.status in (ERROR, NOT_ATTEMPTED)}
    return results, _unexplained_errors(nb, scopes, runs, unfinished)


def _unexplained_errors(nb: Any, scopes: list[str | None], runs: dict[int, CellRun], unfinished: set[str],
                        limit: int = MAX_ERROR_NOTES) -> list[str]:
    """Notes for the errors no exercise status explains (the first ``limit`` of them)."""
    notes = []
    for index, run in sorted(runs.items()):
        if run.status not in ("error", "timeout") or run.ename == "NotImplementedError":
            continue  # an unfinished exercise's placeholder is no news
        scope = scopes[index] if index < len(scopes) else None
        if scope in unfinished:
            continue  # already reported as that exercise's status
        where = f"in Exercise {scope}" if scope else "outside the exercises"
        what = f"raised {run.ename}: {run.evalue}" if run.status == "error" else run.evalue
        notes.append(f"cell {index} {_snippet(nb.cells[index])} ({where}) {what}")
    if len(notes) > limit:
        notes = notes[:limit] + [f"... and {len(notes) - limit} more cells failed (often because of the first ones)"]
    return notes


def _first_problem(nb: Any, exercise: str, members: list[int], runs: dict[int, CellRun]) -> ExerciseResult | None:
    for index in members:
        run = runs.get(index)
        if run is None or run.status == "ok":
            continue
        where = f"cell {index} {_snippet(nb.cells[index])}"
        if run.status == "error" and run.ename == "NotImplementedError":
            return ExerciseResult(exercise, NOT_ATTEMPTED, f"still raises NotImplementedError ({where})")
        if run.status == "error":
            return ExerciseResult(exercise, ERROR, f"{where} raised {run.ename}: {run.evalue}")
        if run.status == "timeout":
            return ExerciseResult(exercise, ERROR, f"{where} {run.evalue} (an endless loop?)")
        return ExerciseResult(exercise, ERROR, f"not run: {run.evalue}")
    return None


def _snippet(cell: Any, limit: int = 40) -> str:
    source = cell.get("source", "")
    source = "".join(source) if isinstance(source, list) else source
    lines = [line.strip() for line in source.splitlines() if line.strip() and not line.strip().startswith("#")]
    text = lines[0] if lines else ""
    return f"`{text if len(text) <= limit else text[: limit - 3] + '...'}`" if text else "(empty)"


# --------------------------------------------------------------------------------------------
# The guard (runs inside the kernel)


def install_write_guard(root: str, blocked_log: str) -> None:
    """Refuse, from now on in this process, to write, delete or rename files outside ``root``, or to
    start programs: the operation raises PermissionError, and is logged to ``blocked_log``.

    Uses a Python audit hook (``sys.addaudithook``); it cannot be removed. Writing under ``/dev``
    (``/dev/null``, ``/dev/shm``) stays allowed.
    """
    root = os.path.realpath(root)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    state = {"busy": False}
    sys.dont_write_bytecode = True

    def resolve(target: Any, dir_fd: Any = None, *, follow: bool = True) -> str | None:
        if isinstance(target, int):
            return None  # an open file descriptor
        name = os.fsdecode(os.fspath(target))
        if isinstance(dir_fd, int) and dir_fd >= 0 and not os.path.isabs(name):
            name = os.path.join(_fd_path(dir_fd), name)
        name = os.path.abspath(name)
        if follow:
            return os.path.realpath(name)
        return os.path.join(os.path.realpath(os.path.dirname(name)), os.path.basename(name))

    def allowed(target: str | None) -> bool:
        return target is None or target == root or target.startswith(root + os.sep) or target.startswith("/dev/")

    def deny(action: str, target: str, why: str = "outside its folder") -> None:
        state["busy"] = True
        try:
            with open(blocked_log, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"action": action, "target": target, "why": why}) + "\n")
        except OSError:
            pass
        finally:
            state["busy"] = False
        if why == "outside its folder":
            raise PermissionError(f"grading sandbox: {action} {target} is not allowed; while it is graded a notebook "
                                  f"may only create, change or delete files inside its own folder ({root}), so use "
                                  "a relative path such as 'output.txt'")
        raise PermissionError(f"grading sandbox: {action} {target} is not allowed; {why}")

    def check(action: str, target: Any, dir_fd: Any = None, *, follow: bool = True) -> None:
        path = resolve(target, dir_fd, follow=follow)
        if not allowed(path):
            deny(action, path)  # type: ignore[arg-type]

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if state["busy"]:
            return
        if event == "open":
            target, _mode, flags = (tuple(args) + (None, None, None))[:3]
            if isinstance(flags, int) and flags & write_flags:
                check("writing to", target)
        elif event in ("os.remove", "os.rmdir", "shutil.rmtree"):
            check("deleting", args[0], args[1] if len(args) > 1 else None, follow=False)
        elif event == "os.rename":
            check("moving", args[0], args[2] if len(args) > 2 else None, follow=False)
            check("moving a file to", args[1], args[3] if len(args) > 3 else None, follow=False)
        elif event in ("os.mkdir", "os.truncate", "os.chmod", "os.chown", "os.utime", "os.setxattr",
                       "os.removexattr", "os.chflags", "os.lchflags", "os.lchmod"):
            check("changing", args[0], args[-1] if event in ("os.mkdir", "os.chmod", "os.chown", "os.utime") else None)
        elif event in ("os.symlink", "os.link"):
            check("creating a link at", args[1], args[-1] if event == "os.symlink" else (args[3] if len(args) > 3 else None),
                  follow=False)
        elif event == "sqlite3.connect" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            database = os.fsdecode(os.fspath(args[0]))
            if database not in ("", ":memory:") and not database.startswith("file::memory:"):
                check("writing to", database.removeprefix("file:").split("?")[0])
        elif event in ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen", "os.startfile", "pty.spawn"):
            deny("starting the program", repr(args[0] if args else "?")[:200],
                 "a notebook may not start programs (subprocess, os.system, !commands) while it is graded")
        elif event == "os.killpg" or (event == "os.kill" and args and (args[0] <= 0 or args[0] == os.getppid())):
            deny("sending a signal to process", str(args[0] if args else "?"),
                 "a notebook may only signal itself while it is graded")

    def guarded(event: str, args: tuple[Any, ...]) -> None:
        try:
            hook(event, args)
        except PermissionError:
            raise
        except Exception:  # an argument shape we did not expect: never break the notebook for it
            return

    sys.addaudithook(guarded)


def _fd_path(fd: int) -> str:
    """The path of the folder open as ``fd`` (Linux /proc, macOS F_GETPATH)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        import fcntl

        return os.fsdecode(fcntl.fcntl(fd, getattr(fcntl, "F_GETPATH"), bytes(1024)).rstrip(b"\0"))


# --------------------------------------------------------------------------------------------
# Command line


def format_report(report: Report) -> str:
    """The report as a table (exercise | status | message), then notes and a summary line."""
    rows = [("exercise", "status", "message")] + [(r.id, r.status, r.message) for r in report.exercises]
    width_id = max(len(row[0]) for row in rows)
    width_status = max(len(row[1]) for row in rows)
    lines = [f"{report.notebook}: chapter {report.chapter}, graded in {report.seconds:.1f} s"]
    lines += [f"  {a:<{width_id}}  {b:<{width_status}}  {c}".rstrip() for a, b, c in rows]
    if report.notes:
        lines.append("  notes:")
        lines += [f"  - {note}" for note in report.notes]
    lines.append(f"  {report.passed} of {report.total} exercises pass")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path, metavar="SUBMISSION",
                        help="submitted .ipynb files, or folders of them")
    parser.add_argument("--chapter", help="the chapter, e.g. 00_course_model (default: from the notebook's metadata)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds for the whole notebook (default {DEFAULT_TIMEOUT})")
    parser.add_argument("--cell-timeout", type=float, default=None, help="seconds per cell (default: the --timeout)")
    parser.add_argument("--labs", type=Path, default=None, help="folder of the reference labs (default: the course's labs/)")
    parser.add_argument("--json", type=Path, default=None, help="write the report(s) as JSON to this file")
    parser.add_argument("--keep", action="store_true", help="keep each grading folder (for debugging)")
    args = parser.parse_args(argv)

    paths = _expand(args.notebooks)
    reports: list[dict[str, Any]] = []
    codes = []
    for path in paths:
        try:
            report = grade(path, chapter=args.chapter, labs_dir=args.labs, timeout=args.timeout,
                           cell_timeout=args.cell_timeout, keep=args.keep)
        except GradingError as error:
            print(str(error) if str(error).startswith("cannot") else f"cannot grade {path}: {error}", file=sys.stderr)
            reports.append({"notebook": str(path), "error": str(error)})
            codes.append(EXIT_CANNOT_GRADE)
            continue
        print(format_report(report))
        reports.append(report.to_json())
        codes.append(EXIT_ALL_PASS if report.passed == report.total else EXIT_NOT_ALL_PASS)
    if len(paths) > 1:
        print(_summary(reports))
    if args.json:
        args.json.write_text(json.dumps(reports[0] if len(paths) == 1 else reports, indent=1, ensure_ascii=False) + "\n",
                             encoding="utf-8")
    if not codes:
        print("no notebooks to grade", file=sys.stderr)
        return EXIT_CANNOT_GRADE
    return EXIT_CANNOT_GRADE if EXIT_CANNOT_GRADE in codes else max(codes)


def _expand(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        found.extend(sorted(path.glob("*.ipynb")) if path.is_dir() else [path])
    return found


def _summary(reports: list[dict[str, Any]]) -> str:
    lines = ["summary:"]
    for report in reports:
        if "error" in report:
            lines.append(f"  {report['notebook']}: cannot grade ({report['error']})")
        else:
            lines.append(f"  {report['notebook']}: {report['passed']}/{report['total']} pass")
    return "\n".join(lines)


def _last_line(path: Path) -> str:
    """``"; it said: <last line>"`` of the kernel's stderr, or "" when it said nothing."""
    try:
        lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
                 if line.strip() and "without encryption" not in line]
    except OSError:
        return ""
    return f"; its last words: {lines[-1].strip()[:200]}" if lines else ""


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _first_line(error: Any) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else (type(error).__name__ if isinstance(error, BaseException) else "")


if __name__ == "__main__":
    sys.exit(main())
