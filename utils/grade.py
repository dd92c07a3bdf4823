"""Grade submitted lab notebooks: each in a sandbox, offline, every exercise checked by the grader itself.

    python -m utils.grade SUBMISSION.ipynb [--chapter 00_course_model] [--timeout S] [--json report.json]
    python -m utils.grade submissions/ --json reports.json     # every notebook of a folder, then a summary

For each submission the grader

1. reads it (exit code 2 if it is not a notebook, or is another chapter's lab);
2. runs it top to bottom in a new ``python3`` kernel inside a bubblewrap sandbox
   (:mod:`utils.sandbox`: a read-only system, the course package as bytecode only, no
   ``solutions/``, no network, one writable folder, limits on memory and processes), with
   ``MODEL = "course"`` forced after the parameters cell, errors allowed (so later cells still
   run), and time limits per cell and for the whole notebook derived from the chapter's measured
   solution time (:func:`time_limits`, stated in the report; ``--timeout`` overrides);
3. checks every exercise itself (:mod:`utils.recheck`): the definitions of the learner's exercise
   code, taken out of the submitted notebook, run with the exercise's checker in a fresh sandboxed
   process whose verdicts reach the grader signed, over a pipe the learner's code cannot write.
   Nothing the notebook printed, wrote or replaced counts;
4. gives each exercise of the chapter's reference lab (``labs/<chapter>.ipynb`` metadata) a status:

   - ``pass`` / ``fail``: what its checker said;
   - ``not attempted``: its code still raises the lab's ``NotImplementedError``;
   - ``uses the reference``: its answer calls the course's own solution (the library's function,
     a wrapper around it);
   - ``tampered``: its code changed the checker or a library it relies on, or reaches into the
     grader (frames, ``ctypes``, file descriptors): the check does not count;
   - ``error``: its definitions or its check raised, or the check ran out of time;

   and notes what the notebook run showed: cells that raised or timed out (with the CPU time the
   kernel used, so a busy machine is told from an endless loop), cells of the lab that are missing,
   writes refused outside the folder.

Exit code: 0 when every exercise passes, 1 when one does not, 2 when a submission cannot be
graded. ``--json`` writes ``{"notebook", "chapter", "exercises": [{"id", "status", "message"}],
"passed", "total", "seconds", "limits", "notes"}`` (a list of them for several notebooks).

Without bubblewrap the grader refuses to run a submission unless told ``--unsafe-no-sandbox``
(then it runs with the user's rights: for your own notebooks only).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import hmac
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from utils.recheck import ERROR, NOT_ATTEMPTED, PASS, definitions, sign
from utils.sandbox import Limits, Sandbox, SandboxUnavailable, check_sandbox, sourceless_copy

EXIT_ALL_PASS, EXIT_NOT_ALL_PASS, EXIT_CANNOT_GRADE = 0, 1, 2
#: The grader's limits are this many times the chapter's measured solution time...
TIME_FACTOR = 5.0
#: ... and never below these (seconds): for the whole notebook, for one cell, for one exercise's check.
NOTEBOOK_FLOOR, CELL_FLOOR, CHECK_FLOOR = 300.0, 120.0, 120.0
#: An exercise's check never gets less (seconds), whatever ``--timeout`` says.
SHORTEST_CHECK = 30.0
#: The measured solution times (``benchmarks/time_notebooks.py --limits``), shipped with the package.
SOLUTION_TIMES = Path(__file__).resolve().parent / "assets" / "solution_times.json"
#: Seconds between two counts of the sandbox's processes (the watchdog of a fork bomb).
WATCH_INTERVAL = 0.1
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
    limits: str = ""

    @property
    def passed(self) -> int:
        return sum(result.status == PASS for result in self.exercises)

    @property
    def total(self) -> int:
        return len(self.exercises)

    def to_json(self) -> dict[str, Any]:
        return {"notebook": self.notebook, "chapter": self.chapter,
                "exercises": [asdict(result) for result in self.exercises],
                "passed": self.passed, "total": self.total, "seconds": round(self.seconds, 1), "limits": self.limits,
                "notes": self.notes}


@dataclass
class CellRun:
    """What happened to one code cell of the submission."""

    status: str  # "ok", "error", "timeout" or "not run"
    ename: str = ""
    evalue: str = ""


@dataclass(frozen=True)
class TimeLimits:
    """Seconds for the whole notebook, for one of its cells, and for one exercise's check; ``basis``
    says where they come from (shown in the report)."""

    notebook: float
    cell: float
    check: float
    basis: str

    def describe(self) -> str:
        return (f"{_seconds(self.notebook)} for the notebook, {_seconds(self.cell)} per cell, "
                f"{_seconds(self.check)} per exercise's check ({self.basis})")


def time_limits(chapter: str, *, timeout: float | None = None, cell_timeout: float | None = None,
                times: Path = SOLUTION_TIMES) -> TimeLimits:
    """The limits for ``chapter``: :data:`TIME_FACTOR` times its solution's measured time (the whole
    notebook, its slowest cell), at least the floors. ``timeout`` / ``cell_timeout`` override the
    notebook's and the cells' limits; an exercise's check then gets the cells' limit, at least
    :data:`SHORTEST_CHECK`."""
    measured = {}
    if times.is_file():
        measured = json.loads(times.read_text(encoding="utf-8")).get("chapters", {}).get(chapter, {})
    if measured:
        notebook = max(NOTEBOOK_FLOOR, TIME_FACTOR * measured["seconds"])
        cell = max(CELL_FLOOR, TIME_FACTOR * measured["slowest_cell"])
        basis = (f"{TIME_FACTOR:g} x the solution's {measured['seconds']:g} s and slowest cell's "
                 f"{measured['slowest_cell']:g} s, at least {_seconds(NOTEBOOK_FLOOR)} and {_seconds(CELL_FLOOR)}")
    else:
        notebook, cell, basis = NOTEBOOK_FLOOR, CELL_FLOOR, "no measured solution time: the floors"
    if timeout is None and cell_timeout is None:
        return TimeLimits(notebook, cell, max(CHECK_FLOOR, cell), basis)
    notebook = notebook if timeout is None else timeout
    cell = min(cell, notebook) if cell_timeout is None else cell_timeout
    return TimeLimits(notebook, cell, max(SHORTEST_CHECK, cell), "--timeout" if cell_timeout is None else
                      "--cell-timeout" if timeout is None else "--timeout, --cell-timeout")


# --------------------------------------------------------------------------------------------
# Grading


def grade(path: Path, *, chapter: str | None = None, labs_dir: Path | None = None,
          timeout: float | None = None, cell_timeout: float | None = None, keep: bool = False,
          sandboxed: bool = True, limits: Limits | None = None,
          exercises: dict[str, Any] | None = None) -> Report:
    """Grade the notebook at ``path`` (see the module's docstring); GradingError if it cannot be graded.

    ``sandboxed=False`` runs it with the user's rights (``--unsafe-no-sandbox``); ``limits`` are the
    sandbox's memory and process limits; ``exercises`` the registry (default ``utils.exercises.EXERCISES``).
    """
    started = time.monotonic()
    path = Path(path)
    nb = load_submission(path)
    labs_dir = Path(labs_dir) if labs_dir else _default_labs_dir()
    chapter = resolve_chapter(nb, path, chapter, labs_dir)
    exercise_ids = reference_exercises(labs_dir, chapter)
    registry = exercises if exercises is not None else _course_exercises()
    seconds = time_limits(chapter, timeout=timeout, cell_timeout=cell_timeout)
    limits = limits or Limits()
    if sandboxed:
        check_sandbox()
    workdir = Path(tempfile.mkdtemp(prefix="course-grade-")).resolve()
    try:
        notebook_dir, check_dir = workdir / "notebook", workdir / "check"
        notebook_dir.mkdir()
        check_dir.mkdir()
        shutil.copyfile(path, notebook_dir / path.name)
        package = _sourceless_package() if sandboxed else None
        runs, notes = run_submission(nb, notebook_dir, seconds, _sandbox(notebook_dir, package, limits, sandboxed))
        verdicts, check_notes = recheck(nb, exercise_ids, registry, check_dir, seconds.check,
                                        _sandbox(check_dir, package, limits, sandboxed))
        blocked = read_blocked(notebook_dir / ".grading" / "blocked.jsonl")
    finally:
        if keep:
            print(f"grading folder kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results = [verdicts[exercise] for exercise in exercise_ids]
    explained = {result.id for result in results if result.status == NOT_ATTEMPTED}
    run_notes = cell_notes(nb, runs, explained) + missing_cells(nb, labs_dir / f"{chapter}.ipynb")
    all_notes = notes + check_notes + run_notes + blocked
    if not sandboxed:
        all_notes.insert(0, "graded WITHOUT the sandbox (--unsafe-no-sandbox): the notebook ran with your rights")
    return Report(str(path), chapter, results, time.monotonic() - started, all_notes, seconds.describe())


def _course_exercises() -> dict[str, Any]:
    from utils.exercises import EXERCISES

    return EXERCISES


def _sandbox(folder: Path, package: tuple[Path, Path] | None, limits: Limits, sandboxed: bool) -> Sandbox | None:
    return Sandbox(folder, package, limits) if sandboxed else None


@functools.cache
def _sourceless_package() -> tuple[Path, Path]:
    """(the course package's folder, a bytecode-only copy of it), made once per process."""
    import utils

    package = Path(utils.__file__).resolve().parent
    copy_root = Path(tempfile.mkdtemp(prefix="course-package-"))
    atexit.register(shutil.rmtree, copy_root, True)
    return package, sourceless_copy(package, copy_root / package.name)


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


def run_submission(nb: Any, workdir: Path, limits: TimeLimits, sandbox: Sandbox | None
                   ) -> tuple[dict[int, CellRun], list[str]]:
    """Execute the submission's code cells in a fresh kernel in ``workdir`` (inside ``sandbox``).

    Returns what happened to each code cell (by index in ``nb``) and notes (why the run stopped).
    ``limits.notebook`` bounds the whole run (after the kernel has started), ``limits.cell`` each cell.
    """
    import nbformat
    from nbclient import NotebookClient

    grading = workdir / ".grading"
    for folder in (workdir / "tmp", grading):
        folder.mkdir()
    cells, origin = _cells_to_run(nb, workdir)
    client = NotebookClient(nbformat.v4.new_notebook(cells=cells), kernel_name="python3", allow_errors=True,
                            record_timing=False, shutdown_kernel="immediate", interrupt_on_timeout=False,
                            startup_timeout=120, resources={"metadata": {"path": str(workdir)}}, log=_quiet_logger())
    client.km = _kernel_manager(sandbox, grading)
    kernel_stderr = grading / "kernel-stderr.txt"
    runner = _Runner(client, origin, limits, kernel_stderr, sandbox.limits.processes if sandbox else None)
    try:
        with open(kernel_stderr, "wb") as stderr, \
                client.setup_kernel(env=grading_env(workdir, sandboxed=sandbox is not None), cwd=str(workdir),
                                    stdout=stderr, stderr=stderr):
            runner.run_all()
    except GradingError:
        raise
    except Exception as error:  # the kernel did not start, or the client broke
        raise GradingError(f"cannot run the notebook: {type(error).__name__}: {_first_line(error)}"
                           + _last_line(kernel_stderr)) from None
    return runner.runs, runner.notes


def _kernel_manager(sandbox: Sandbox | None, grading: Path) -> Any:
    """A kernel manager whose kernel starts inside ``sandbox`` and talks over Unix sockets in
    ``grading`` (the sandbox has no network, not even the loopback the TCP transport needs)."""
    from jupyter_client.asynchronous import AsyncKernelClient
    from jupyter_client.manager import AsyncKernelManager

    class NoHeartbeatClient(AsyncKernelClient):
        """Without the heartbeat channel, whose thread never ends once the kernel has written over its
        sockets; whether the kernel lives is asked of its process instead."""

        def start_channels(self, *args: Any, **kwargs: Any) -> None:
            super().start_channels(*args, **{**kwargs, "hb": False})

    class SandboxedKernelManager(AsyncKernelManager):
        def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
            command = super().format_kernel_cmd(extra_arguments)
            return sandbox.command(command) if sandbox is not None else command

    return SandboxedKernelManager(kernel_name="python3", transport="ipc", ip=str(grading / "kernel"),
                                  connection_file=str(grading / "kernel.json"), client_factory=NoHeartbeatClient)


class _Runner:
    """Runs a client's cells one by one under the time limits; records a CellRun per submission cell."""

    def __init__(self, client: Any, origin: list[int | None], limits: TimeLimits, kernel_stderr: Path,
                 max_processes: int | None) -> None:
        self.client, self.origin, self.limits, self.kernel_stderr = client, origin, limits, kernel_stderr
        self.max_processes = max_processes
        self.runs: dict[int, CellRun] = {}
        self.notes: list[str] = []
        self.stopped: str | None = None  # why the remaining cells do not run
        self.deadline = 0.0
        self.watchdog: _Watchdog | None = None

    def run_all(self) -> None:
        self.deadline = time.monotonic() + self.limits.notebook
        self.watchdog = _Watchdog(self.client.km.provisioner.process.pid, self.max_processes)
        with self.watchdog:
            for index, cell in enumerate(self.client.nb.cells):
                if cell.cell_type == "code" and cell.source.strip():
                    self.run_one(index, cell, self.origin[index])

    def run_one(self, index: int, cell: Any, own: int | None) -> None:
        from nbclient.exceptions import CellTimeoutError, DeadKernelError

        if self.stopped is None and time.monotonic() >= self.deadline:
            self.stop(f"the time limit of {_seconds(self.limits.notebook)} ran out before cell {own}")
        if self.stopped is not None:
            self.record(own, CellRun("not run", evalue=self.stopped))
            return
        limit = min(self.limits.cell, self.deadline - time.monotonic())
        self.client.timeout = max(1, math.ceil(limit))
        cpu_before = self.watchdog.cpu_seconds() if self.watchdog else 0.0
        try:
            self.client.execute_cell(cell, index)
        except CellTimeoutError:
            self.timed_out(own, (self.watchdog.cpu_seconds() if self.watchdog else 0.0) - cpu_before)
            return
        except DeadKernelError:
            why = self.watchdog.killed if self.watchdog and self.watchdog.killed else \
                "out of memory, or exit()?" + _last_line(self.kernel_stderr)
            self.stop(f"the kernel died while running cell {own} ({why})")
            self.record(own, CellRun("error", "DeadKernelError", self.stopped or ""))
            return
        self.record(own, _outcome(cell))

    def timed_out(self, own: int | None, cpu: float) -> None:
        seconds = self.client.timeout
        out_of_time = time.monotonic() >= self.deadline - 0.5
        busy = (f"; the kernel computed for {cpu:.0f} s of it: an endless loop, or more work than the lab asks"
                if cpu >= 0.5 * seconds else
                f"; the kernel computed for only {cpu:.0f} s of it: it waited (for input, a lock, a sleep), "
                "or the machine was busy with other work")
        self.record(own, CellRun("timeout", evalue=f"timed out after {_seconds(seconds)}"
                                 + (" (the time limit for the whole notebook)" if out_of_time else "") + busy))
        if out_of_time:
            self.stop(f"the time limit of {_seconds(self.limits.notebook)} ran out in cell {own}")
        elif not self.interrupted():
            self.stop(f"cell {own} went on running after it was interrupted (does it catch KeyboardInterrupt?)")

    def interrupted(self, seconds: float = 10.0) -> bool:
        """Interrupt the kernel and wait until it is idle again; False if it does not become idle."""
        from nbclient.util import run_sync

        run_sync(self.client.km.interrupt_kernel)()
        try:
            msg_id = self.client.kc.kernel_info()
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                reply = run_sync(self.client.kc.get_shell_msg)(timeout=max(0.1, deadline - time.monotonic()))
                if reply.get("parent_header", {}).get("msg_id") == msg_id:
                    return True
        except Exception:  # noqa: BLE001  (queue.Empty: no reply in time)
            return False
        return False

    def stop(self, reason: str) -> None:
        self.stopped = reason
        self.notes.append(f"grading stopped: {reason}")

    def record(self, own: int | None, run: CellRun) -> None:
        if own is not None:
            self.runs[own] = run
        elif run.status != "ok":  # one of the grader's own cells
            raise GradingError(f"cannot set up the grading kernel: {run.status} {run.ename}: {run.evalue}".strip())


class _Watchdog:
    """Counts a sandboxed program's processes and threads every :data:`WATCH_INTERVAL` seconds and kills
    its process group beyond ``max_processes`` (where the system's process limit does not apply: a
    grader run as root); adds up their CPU time."""

    def __init__(self, pid: int, max_processes: int | None) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.max_processes = max_processes
        self.killed: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> _Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def processes(self) -> list[Any]:
        import psutil

        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return []

    def cpu_seconds(self) -> float:
        import psutil

        total = 0.0
        for process in self.processes():
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def _watch(self) -> None:
        import psutil

        while not self._stop.wait(WATCH_INTERVAL):
            if self.max_processes is None:
                continue
            count = 0
            for process in self.processes():
                with contextlib.suppress(psutil.Error):
                    count += process.num_threads()
            if count > self.max_processes:
                self.killed = (f"it ran more than {self.max_processes} processes and threads at once, the sandbox's "
                               "limit: a fork bomb?")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(os.getpgid(self.root.pid), signal.SIGKILL)
                return


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


def grading_env(workdir: Path, *, sandboxed: bool = True) -> dict[str, str]:
    """The environment of a sandboxed program: offline, every home and cache folder inside ``workdir``;
    in the sandbox nothing else of the grader's environment (no tokens, no paths) is passed on."""
    from utils.notebooks.execute import OFFLINE_ENV, kernel_env

    home = str(workdir)
    folders = dict(
        HOME=home, USERPROFILE=home, TMPDIR=str(workdir / "tmp"), TEMP=str(workdir / "tmp"), TMP=str(workdir / "tmp"),
        IPYTHONDIR=str(workdir / ".ipython"), XDG_CACHE_HOME=str(workdir / ".cache"),
        XDG_CONFIG_HOME=str(workdir / ".config"), HF_HOME=str(workdir / ".cache" / "huggingface"),
        MPLCONFIGDIR=str(workdir / ".config" / "matplotlib"), TORCH_HOME=str(workdir / ".cache" / "torch"),
        JUPYTER_RUNTIME_DIR=str(workdir / ".grading"), MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1",
        # One thread: OpenMP's threads spin-wait for each other, which on a machine busy with another job
        # makes small tensor operations tens of times slower (a 2 s training cell took over 120 s).
        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
    )
    if not sandboxed:
        return kernel_env(**folders)
    return {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
            **OFFLINE_ENV, **folders}


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
# The grader's own check of each exercise


def exercise_sources(nb: Any, exercise_ids: list[str], registry: dict[str, Any]) -> dict[str, str]:
    """For each exercise, the learner's definitions it is checked with: those of every code cell up to the
    last cell of the exercise that defines its function (:func:`utils.recheck.definitions`). An exercise
    none of whose cells defines the function has no entry."""
    from utils.notebooks.cells import exercise_scopes

    scopes = exercise_scopes(nb.cells)
    code = [(i, cell.get("source", "")) for i, cell in enumerate(nb.cells) if cell.get("cell_type") == "code"]
    sources = {}
    for exercise_id in exercise_ids:
        function = registry[exercise_id].function
        defining = [i for i, text in code if scopes[i] == exercise_id and _defines(text, function)]
        if defining:
            sources[exercise_id] = definitions(text for i, text in code if i <= defining[-1])
    return sources


def _defines(text: str, name: str) -> bool:
    import ast

    try:
        tree = ast.parse(text)
    except SyntaxError:
        return False
    return any(isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and node.name == name
               or isinstance(node, (ast.Import, ast.ImportFrom))
               and any((alias.asname or alias.name).split(".")[0] == name for alias in node.names)
               or isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
               for node in tree.body)


def recheck(nb: Any, exercise_ids: list[str], registry: dict[str, Any], workdir: Path, seconds: float,
            sandbox: Sandbox | None) -> tuple[dict[str, ExerciseResult], list[str]]:
    """Check every exercise in a fresh process (``python -m utils.recheck``, inside ``sandbox``); the
    results by exercise, and notes. Only lines signed with this run's secret count."""
    unknown = [exercise for exercise in exercise_ids if exercise not in registry]
    if unknown:
        raise GradingError(f"exercise(s) {', '.join(unknown)} of the lab are not in utils.exercises.EXERCISES: "
                           "the grader cannot check them (a course bug)")
    sources = exercise_sources(nb, exercise_ids, registry)
    request = {"exercises": [_request_row(registry[exercise]) for exercise in exercise_ids], "sources": sources,
               "seconds_per_exercise": seconds}
    secret = secrets.token_hex(32)
    lines, notes = _run_recheck(request, secret, workdir, seconds * len(exercise_ids) + 180, sandbox)
    verdicts: dict[str, ExerciseResult] = {}
    forged = 0
    for line in lines:
        try:
            envelope = json.loads(line)
            signed, signature = envelope["verdict"], envelope["signature"]
            if not hmac.compare_digest(sign(secret.encode(), signed), str(signature)):
                raise ValueError("bad signature")
            verdict = json.loads(signed)
            verdicts[verdict["id"]] = ExerciseResult(verdict["id"], verdict["status"], verdict["message"])
        except (ValueError, KeyError, TypeError):
            forged += 1
    if forged:
        notes.append(f"{forged} line(s) on the grader's channel were not signed by it: ignored")
    for exercise in exercise_ids:
        if exercise not in verdicts:
            verdicts[exercise] = ExerciseResult(exercise, ERROR, "the grader's check gave no verdict"
                                                + (f" ({notes[0]})" if notes else ""))
        elif exercise not in sources and verdicts[exercise].status == ERROR:
            verdicts[exercise] = ExerciseResult(exercise, *_without_definition(nb, exercise, registry[exercise]))
    return verdicts, notes


def _request_row(exercise: Any) -> dict[str, Any]:
    return {"id": exercise.id, "function": exercise.function, "library": exercise.library,
            "checker": exercise.checker, "needs": list(exercise.needs)}


def _without_definition(nb: Any, exercise_id: str, exercise: Any) -> tuple[str, str]:
    """The status of an exercise whose cells define no function: its placeholder, or a missing definition."""
    from utils.notebooks.cells import exercise_scopes

    scopes = exercise_scopes(nb.cells)
    cells = [cell for cell, scope in zip(nb.cells, scopes) if scope == exercise_id]
    if not cells:
        return ERROR, f"no cells for this exercise: its heading '### Exercise {exercise_id}: ...' is missing from the notebook"
    if any(cell.get("cell_type") == "code" and "raise NotImplementedError" in cell.get("source", "") for cell in cells):
        return NOT_ATTEMPTED, "still raises NotImplementedError"
    return ERROR, f"no cell of this exercise defines {exercise.function}(), the function its checker checks"


def _run_recheck(request: dict[str, Any], secret: str, workdir: Path, seconds: float, sandbox: Sandbox | None
                 ) -> tuple[list[str], list[str]]:
    """Start ``python -m utils.recheck`` with the request on its standard input; the lines of its
    verdict pipe, and notes (why it gave none)."""
    (workdir / "tmp").mkdir(exist_ok=True)
    read_end, write_end = os.pipe()
    command = [sys.executable, "-m", "utils.recheck", str(write_end)]
    stderr_path = workdir / "recheck-stderr.txt"
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(sandbox.command(command) if sandbox else command, stdin=subprocess.PIPE,
                                   stdout=subprocess.DEVNULL, stderr=stderr, pass_fds=(write_end,), cwd=workdir,
                                   env=grading_env(workdir, sandboxed=sandbox is not None), start_new_session=True)
    os.close(write_end)
    feeder = threading.Thread(target=_feed, args=(process, (secret + "\n").encode() + json.dumps(request).encode()),
                              daemon=True)
    feeder.start()
    with os.fdopen(read_end, "r", encoding="utf-8", errors="replace") as channel:
        reader = threading.Thread(target=lambda: lines.extend(channel.read().splitlines()), daemon=True)
        lines: list[str] = []
        reader.start()
        with _Watchdog(process.pid, sandbox.limits.processes if sandbox else None) as watchdog:
            reader.join(seconds)
        notes = [f"the grader's check was stopped: {watchdog.killed}"] if watchdog.killed else []
        if reader.is_alive():
            notes.append(f"the grader's check did not finish within {_seconds(seconds)}")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        reader.join(5)
    if not lines and not notes:
        notes.append("the grader's check stopped" + _last_line(stderr_path))
    return lines, notes


def _feed(process: subprocess.Popen[bytes], data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, OSError):
        assert process.stdin is not None
        process.stdin.write(data)
        process.stdin.close()


# --------------------------------------------------------------------------------------------
# Notes from the notebook's run


def cell_notes(nb: Any, runs: dict[int, CellRun], explained: set[str] = frozenset(), limit: int = MAX_ERROR_NOTES
               ) -> list[str]:
    """Notes for the cells that raised (other than a placeholder's NotImplementedError) or timed out,
    each placed in its exercise (the first ``limit`` of them); not for the cells of the ``explained``
    exercises, whose status already says what is wrong (not attempted)."""
    from utils.notebooks.cells import calls_checker, exercise_scopes

    scopes = exercise_scopes(nb.cells)
    last_check = {scope: index for index, (cell, scope) in enumerate(zip(nb.cells, scopes))
                  if scope and cell.get("cell_type") == "code" and calls_checker(cell)}
    notes = []
    for index, run in sorted(runs.items()):
        scope = scopes[index]
        if run.status not in ("error", "timeout") or run.ename == "NotImplementedError" or scope in explained:
            continue
        where = ("outside the exercises" if scope is None else f"in Exercise {scope}"
                 if index <= last_check.get(scope, index) else f"after Exercise {scope}'s check, in a cell that uses it")
        what = f"raised {run.ename}: {run.evalue}" if run.status == "error" else run.evalue
        notes.append(f"cell {index} {_snippet(nb.cells[index])} ({where}) {what}")
    if len(notes) > limit:
        notes = notes[:limit] + [f"... and {len(notes) - limit} more cells failed (often because of the first ones)"]
    return notes


def missing_cells(nb: Any, lab: Path) -> list[str]:
    """A note if cells of the reference lab (matched by cell id) are missing from the submission."""
    if not lab.is_file():
        return []
    lab_cells = json.loads(lab.read_text(encoding="utf-8"))["cells"]
    own = {cell.get("id") for cell in nb.cells}
    if own == {None}:
        return []  # a notebook saved without cell ids: nothing to compare
    missing = [cell for cell in lab_cells if cell.get("id") not in own]
    if not missing:
        return []
    code = sum(cell["cell_type"] == "code" for cell in missing)
    return [f"{len(missing)} of the lab's {len(lab_cells)} cells are missing from the submission ({code} of them code, "
            f"ids {', '.join(str(cell.get('id')) for cell in missing[:6])}{' ...' if len(missing) > 6 else ''}): "
            "the notebook graded is not the whole lab"]


def read_blocked(path: Path) -> list[str]:
    """Notes for the file operations the guard refused."""
    if not path.is_file():
        return []
    notes = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
            notes.append(f"refused: the notebook tried {entry['action']} {entry['target']} (outside its folder: "
                         "a submission may only write files in its own folder)")
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return sorted(set(notes), key=notes.index)


def _snippet(cell: Any, limit: int = 40) -> str:
    source = cell.get("source", "")
    source = "".join(source) if isinstance(source, list) else source
    lines = [line.strip() for line in source.splitlines() if line.strip() and not line.strip().startswith("#")]
    text = lines[0] if lines else ""
    return f"`{text if len(text) <= limit else text[: limit - 3] + '...'}`" if text else "(empty)"


# --------------------------------------------------------------------------------------------
# The guard (runs inside the kernel)


def install_write_guard(root: str, blocked_log: str) -> None:
    """Refuse, from now on in this process, to write, delete or rename files outside ``root``: the
    operation raises a PermissionError that says what to do instead, and is logged to ``blocked_log``.

    This is the friendly first word only: a Python audit hook sees Python's own file operations, not
    a C extension's. What keeps files outside the folder intact is the sandbox (read-only mounts).
    Writing under ``/dev`` (``/dev/null``, ``/dev/shm``) stays allowed.
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

    def deny(action: str, target: str) -> None:
        state["busy"] = True
        try:
            with open(blocked_log, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"action": action, "target": target}) + "\n")
        except OSError:
            pass
        finally:
            state["busy"] = False
        raise PermissionError(f"grading sandbox: {action} {target} is not allowed; while it is graded a notebook "
                              f"may only create, change or delete files inside its own folder ({root}), so use "
                              "a relative path such as 'output.txt'")

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
    if report.limits:
        lines.append(f"  limits: {report.limits}")
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
    parser.add_argument("--timeout", type=float, default=None,
                        help=f"seconds for the whole notebook (default: {TIME_FACTOR:g} x the chapter's measured "
                             f"solution time, at least {NOTEBOOK_FLOOR:g})")
    parser.add_argument("--cell-timeout", type=float, default=None,
                        help=f"seconds per cell (default: {TIME_FACTOR:g} x the solution's slowest cell, "
                             f"at least {CELL_FLOOR:g})")
    parser.add_argument("--memory-gb", type=float, default=Limits.memory / 2**30,
                        help=f"address space the notebook may use, in GiB (default {Limits.memory / 2**30:g})")
    parser.add_argument("--unsafe-no-sandbox", action="store_true",
                        help="run without the bubblewrap sandbox, with your rights: only for notebooks you trust")
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
                           cell_timeout=args.cell_timeout, keep=args.keep, sandboxed=not args.unsafe_no_sandbox,
                           limits=Limits(memory=int(args.memory_gb * 2**30)))
        except SandboxUnavailable as error:
            print(f"cannot grade: {error}. The grader will not run a submission outside its sandbox unless told "
                  "--unsafe-no-sandbox (with your rights: for notebooks you trust).", file=sys.stderr)
            return EXIT_CANNOT_GRADE
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
