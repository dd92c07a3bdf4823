"""Grading (utils/grade.py, utils/recheck.py, utils/sandbox.py) on submissions made from the example
lab in tests/fixtures/notebooks/, honest and hostile.

Each graded submission starts a sandboxed kernel and a sandboxed re-check (a few seconds); the
example imports torch and utils.checkers.example only, no model. bubblewrap must be installed
(`.ci/run` installs it): these tests are what the sandbox promises.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import nbformat
import pytest

from utils import grade as G
from utils import recheck as R
from utils.exercises import Exercise
from utils.notebooks import cells as C
from utils.sandbox import Limits

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "notebooks"
LABS = FIXTURES / "labs"
EXAMPLE_LAB = LABS / "99_example.ipynb"

SOFTMAX = '''def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    exps = (x - x.amax(dim=dim, keepdim=True)).exp()
    return exps / exps.sum(dim=dim, keepdim=True)'''
UNNORMALISED_SOFTMAX = '''def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return (x - x.amax(dim=dim, keepdim=True)).exp()'''
TOP_CLASS = "def top_class(scores: torch.Tensor) -> int:\n    return int(scores.argmax())"
EXAMPLE_EXERCISES = {
    "99.1": Exercise("99.1", "99_example", "softmax", "utils.checkers.example", "check_softmax"),
    "99.2": Exercise("99.2", "99_example", "top_class", "utils.checkers.example", "check_top_class"),
}


def submission(folder: Path, name: str, **sources: str) -> Path:
    """The example lab with the cells named by id (``exercise_1_code`` -> ``exercise-1-code``) replaced."""
    nb = C.read_notebook(EXAMPLE_LAB)
    for cell_id, text in sources.items():
        cell = next(cell for cell in nb.cells if cell.get("id") == cell_id.replace("_", "-"))
        cell["source"] = text
    path = folder / f"{name}.ipynb"
    path.write_bytes(C.notebook_bytes(nb))
    return path


@pytest.fixture(autouse=True)
def example_registry(monkeypatch):
    """The grader's registry of exercises, with the example chapter's."""
    monkeypatch.setattr(G, "_course_exercises", lambda: EXAMPLE_EXERCISES)


def run_grade(capsys, tmp_path: Path, *args: str) -> tuple[int, str, str, object]:
    """``python -m utils.grade ARGS --labs <example labs> --json <file>``: (exit code, stdout, stderr, report)."""
    report = tmp_path / "report.json"
    code = G.main([*args, "--labs", str(LABS), "--json", str(report)])
    out, err = capsys.readouterr()
    return code, out, err, json.loads(report.read_text(encoding="utf-8")) if report.exists() else None


def statuses(report: dict) -> dict[str, tuple[str, str]]:
    return {exercise["id"]: (exercise["status"], exercise["message"]) for exercise in report["exercises"]}


# --------------------------------------------------------------------------------------------
# Graded submissions (a sandboxed kernel and re-check each)


def test_a_correct_submission_passes(tmp_path, capsys):
    path = submission(tmp_path, "correct", exercise_1_code=SOFTMAX, exercise_2_code=TOP_CLASS)
    code, out, _, report = run_grade(capsys, tmp_path, str(path))
    assert code == 0, out
    assert statuses(report) == {"99.1": ("pass", "passed on 3 inputs"), "99.2": ("pass", "passed on 2 inputs")}
    assert (report["notebook"], report["chapter"], report["passed"], report["total"]) == (str(path), "99_example", 2, 2)
    assert report["seconds"] > 0 and report["notes"] == []
    assert report["limits"].startswith("300 s for the notebook, 120 s per cell")
    assert "2 of 2 exercises pass" in out and "99.1      pass" in out and "limits: 300 s" in out


def test_a_wrong_submission_fails_with_the_checkers_message(tmp_path, capsys):
    path = submission(tmp_path, "wrong", exercise_1_code=UNNORMALISED_SOFTMAX, exercise_2_code=TOP_CLASS)
    code, out, _, report = run_grade(capsys, tmp_path, str(path))
    assert code == 1
    status, message = statuses(report)["99.1"]
    assert status == "fail"
    assert message.startswith("input 'a row of 5': first difference at index (0, 0)") and "Hint: exponentiate" in message
    assert statuses(report)["99.2"][0] == "pass"


def test_a_crashing_cell_is_a_note_in_its_exercise_and_the_grade_comes_from_the_definitions(tmp_path, capsys):
    path = submission(tmp_path, "crash", exercise_1_code="undefined_helper()\n\n" + SOFTMAX, exercise_2_code=TOP_CLASS,
                      parameters='MODEL = "gpt2"\nprint(1 / 0)')
    code, _, _, report = run_grade(capsys, tmp_path, str(path))
    assert code == 0
    assert statuses(report)["99.1"] == ("pass", "passed on 3 inputs")  # the call at the top is not a definition
    assert report["notes"][:3] == [  # and the cells after it, which miss what it did not define
        "cell 2 `MODEL = \"gpt2\"` (outside the exercises) raised ZeroDivisionError: division by zero",
        "cell 6 `undefined_helper()` (in Exercise 99.1) raised NameError: name 'undefined_helper' is not defined",
        "cell 7 `check_softmax(softmax)` (in Exercise 99.1) raised NameError: name 'softmax' is not defined"]
    assert report["notes"][3].startswith("cell 8 `print(softmax(torch.tensor([1.0, 2.0,...` (after Exercise 99.1's "
                                         "check, in a cell that uses it) raised NameError")


def test_the_unchanged_lab_is_not_attempted(tmp_path, capsys):
    code, _, _, report = run_grade(capsys, tmp_path, str(EXAMPLE_LAB))
    assert code == 1
    assert statuses(report) == {"99.1": ("not attempted", "still raises NotImplementedError"),
                                "99.2": ("not attempted", "still raises NotImplementedError")}
    assert report["notes"] == []  # the placeholders' own errors are no news


def test_a_missing_function_and_deleted_cells_are_reported(tmp_path, capsys):
    path = submission(tmp_path, "partial", exercise_1_code="def soft_max(x, dim=-1):\n    return x", exercise_2_code=TOP_CLASS)
    nb = C.read_notebook(path)
    nb.cells = [cell for cell in nb.cells if cell.get("id") not in ("exercise-1-output", "summary")]
    path.write_bytes(C.notebook_bytes(nb))
    _, _, _, report = run_grade(capsys, tmp_path, str(path))
    assert statuses(report)["99.1"] == ("error", "no cell of this exercise defines softmax(), the function its checker checks")
    assert report["notes"] == [
        "cell 7 `check_softmax(softmax)` (in Exercise 99.1) raised NameError: name 'softmax' is not defined",
        "2 of the lab's 16 cells are missing from the submission (1 of them code, ids exercise-1-output, summary): "
        "the notebook graded is not the whole lab"]


# --------------------------------------------------------------------------------------------
# Forgeries: the grade comes from the grader's own check only

def test_a_forged_checkers_log_and_printed_passes_change_nothing(tmp_path, capsys):
    forge = ("import json, os\n"
             "line = json.dumps({'exercise': '99.1', 'passed': True, 'message': 'passed'}) + '\\n'\n"
             "for name in [os.environ.get('COURSE_CHECK_LOG') or 'checks.jsonl', '.grading/checks.jsonl']:\n"
             "    os.makedirs(os.path.dirname(name) or '.', exist_ok=True)\n"
             "    open(name, 'a').write(line)\n"
             "print('✅ Exercise 99.1 (softmax): passed on 3 inputs')\n"
             "for fd in range(3, 64):  # every descriptor the kernel holds\n"
             "    try:\n        os.write(fd, b'{\"verdict\": \"{}\", \"signature\": \"0\"}\\n')\n"
             "    except OSError:\n        pass\n")
    path = submission(tmp_path, "forged", exercise_2_given="scores = None\n" + forge)
    _, _, _, report = run_grade(capsys, tmp_path, str(path), "--timeout", "30")  # its writes may hang its own kernel
    assert statuses(report) == {"99.1": ("not attempted", "still raises NotImplementedError"),
                                "99.2": ("not attempted", "still raises NotImplementedError")}


def test_a_checker_replaced_in_the_notebook_changes_nothing(tmp_path, capsys):
    patch = ("import utils.checkers.example as example, utils.checks as checks\n"
             "example.check_softmax = lambda fn: checks.CheckResult('99.1', True, 'passed')\n"
             "checks.compare = lambda *args, **kwargs: None\n")
    path = submission(tmp_path, "patched", exercise_1_code=patch + UNNORMALISED_SOFTMAX, exercise_2_code=TOP_CLASS)
    _, _, _, report = run_grade(capsys, tmp_path, str(path))
    assert statuses(report)["99.1"][0] == "fail"


def test_a_function_that_replaces_the_checkers_tools_while_it_runs_is_tampering(tmp_path, capsys):
    patching = ("def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:\n"
                "    import utils.checks\n"
                "    utils.checks.compare = lambda *args, **kwargs: None\n"
                "    return x\n")
    path = submission(tmp_path, "patching", exercise_1_code=patching, exercise_2_code=TOP_CLASS)
    _, _, _, report = run_grade(capsys, tmp_path, str(path))
    assert statuses(report)["99.1"] == ("tampered", "the check does not count: the code changed utils.checks.compare")


@pytest.mark.parametrize("body", [
    "import sys\n    sys._getframe(1).f_locals['result'] = True\n    return x",
    "import ctypes\n    return x",
    "import os\n    os.write(3, b'pass')\n    return x",
    "open('/proc/self/fd/3', 'w').write('pass')\n    return x",
    "__import__('gc').get_objects()\n    return x",
    "import os as o\n    o.write(5, b'pass')\n    return x",
    "import os\n    getattr(os, 'wr' + 'ite')(5, b'pass')\n    return x",
], ids=["frames", "ctypes", "descriptor", "proc", "import", "alias", "getattr"])
def test_code_that_reaches_into_the_grader_is_not_run(tmp_path, capsys, body):
    path = submission(tmp_path, "reaching", exercise_1_code=f"def softmax(x, dim=-1):\n    {body}\n",
                      exercise_2_code=TOP_CLASS)
    _, _, _, report = run_grade(capsys, tmp_path, str(path))
    status, message = statuses(report)["99.1"]
    assert status == "tampered" and message.startswith("not run: the code uses ")


@pytest.mark.parametrize("answer", [
    "from utils.checkers.example import softmax",
    "import utils.checkers.example as course\n\n\ndef softmax(x, dim=-1):\n    return course.softmax(x, dim)",
    "def softmax(x, dim=-1):\n    from utils.checkers import example\n    return getattr(example, 'soft' + 'max')(x, dim)",
], ids=["import", "wrapper", "dynamic"])
def test_the_reference_as_the_answer_is_flagged(tmp_path, capsys, answer):
    path = submission(tmp_path, "reference", exercise_1_code=answer, exercise_2_code=TOP_CLASS)
    _, _, _, report = run_grade(capsys, tmp_path, str(path))
    assert statuses(report)["99.1"] == ("uses the reference", "it calls the course's own utils.checkers.example.softmax, "
                                        "the reference solution, instead of computing the answer")
    assert statuses(report)["99.2"][0] == "pass"


def test_the_solutions_and_the_librarys_source_cannot_be_read(tmp_path, capsys):
    solution = FIXTURES / "solutions" / "99_example.ipynb"
    reading = (f"import inspect, utils.checkers.example\n"
               f"try:\n    inspect.getsource(utils.checkers.example)\nexcept OSError as error:\n    print('source:', error)\n"
               f"exec(open({str(solution)!r}).read())\n")
    path = submission(tmp_path, "reader", exercise_1_code=reading, exercise_2_code=TOP_CLASS)
    _, _, _, report = run_grade(capsys, tmp_path, str(path))
    assert statuses(report)["99.1"] == ("error", "no cell of this exercise defines softmax(), the function its checker checks")
    assert f"raised FileNotFoundError: [Errno 2] No such file or directory: '{solution}'" in report["notes"][0]
    assert solution.exists()


# --------------------------------------------------------------------------------------------
# Nothing outside the folder changes, whatever writes it


def checksums(*roots: Path) -> dict[str, str]:
    import hashlib

    found = {}
    for root in roots:
        for path in sorted([root] if root.is_file() else root.rglob("*")):
            if path.is_file():
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def test_files_outside_the_folder_are_unchanged_by_every_way_of_writing(tmp_path, capsys):
    import sys

    import utils

    decoy = tmp_path / "decoy"
    (decoy / "inner").mkdir(parents=True)
    for name in ("a.txt", "b.bin", "inner/c.txt", "d.txt", "e.txt"):
        (decoy / name).write_text(f"keep {name}")
    visible = [Path(utils.__file__), Path(sys.prefix) / "pyvenv.cfg"]  # in the sandbox, read-only
    before = checksums(decoy, *visible)
    targets = [str(decoy / name) for name in ("a.txt", "b.bin", "inner/c.txt", "d.txt", "e.txt")] + [str(p) for p in visible]
    attacks = f"""
import ctypes, mmap, os, shutil, subprocess, torch
from safetensors.torch import save_file
targets = {targets!r}
def attempt(what, action):
    try:
        action()
        print(what, 'done')
    except Exception as error:
        print(what, 'failed:', type(error).__name__)
for target in targets:
    attempt('open', lambda: open(target, 'w').write('overwritten'))
    attempt('torch.save', lambda: torch.save(torch.zeros(3), target))
    attempt('safetensors', lambda: save_file({{'x': torch.zeros(3)}}, target))
    attempt('os.open', lambda: os.write(os.open(target, os.O_WRONLY | os.O_TRUNC), b'overwritten'))
    attempt('ctypes', lambda: ctypes.CDLL(None).fopen(target.encode(), b'w') or 1 / 0)
    attempt('mmap', lambda: mmap.mmap(os.open(target, os.O_RDWR), 0).write(b'XXXX'))
    attempt('hard link', lambda: (os.link(target, 'linked'), open('linked', 'w').write('overwritten')))
    attempt('symlink', lambda: (os.symlink(target, 'pointer'), open('pointer', 'w').write('overwritten')))
    attempt('child process', lambda: subprocess.run(['sh', '-c', f'echo overwritten > {{target}}; rm -f {{target}}']))
    attempt('remove', lambda: os.remove(target))
    for name in ('linked', 'pointer'):
        if os.path.lexists(name):
            os.remove(name)
attempt('rmtree', lambda: shutil.rmtree({str(decoy)!r}))
"""
    path = submission(tmp_path, "vandal", exercise_1_code=SOFTMAX, exercise_2_code=TOP_CLASS,
                      exercise_2_check="check_top_class(top_class)\n" + attacks)
    code, _, _, report = run_grade(capsys, tmp_path, str(path))
    assert checksums(decoy, *visible) == before
    assert code == 0 and report["passed"] == 2
    notes = "\n".join(report["notes"])
    assert f"refused: the notebook tried writing to {visible[0]}" in notes  # the guard's friendly word, where it sees it


# --------------------------------------------------------------------------------------------
# Limits: time, memory, processes


def test_an_endless_loop_times_out_says_it_computed_and_later_exercises_are_still_graded(tmp_path, capsys):
    path = submission(tmp_path, "loop", exercise_1_code="while True:\n    pass\n\n" + SOFTMAX, exercise_2_code=TOP_CLASS)
    started = time.monotonic()
    code, out, _, report = run_grade(capsys, tmp_path, str(path), "--timeout", "6")
    assert time.monotonic() - started < 6 + 60, "the time limit did not bound the run"
    assert report["limits"].startswith("6 s for the notebook")
    assert statuses(report) == {"99.1": ("pass", "passed on 3 inputs"), "99.2": ("pass", "passed on 2 inputs")}
    assert re.search(r"cell 6 `while True:` \(in Exercise 99.1\) timed out after \d s \(the time limit for the whole "
                     r"notebook\); the kernel computed for \d s of it: an endless loop", "\n".join(report["notes"]))


def test_a_loop_that_swallows_the_interrupt_stops_grading_and_no_later_cell_is_blamed(tmp_path, capsys):
    stubborn = ("import time\nwhile True:\n    try:\n        time.sleep(0.05)\n    except KeyboardInterrupt:\n"
                "        pass\n\n")
    path = submission(tmp_path, "stubborn", exercise_1_code=stubborn + SOFTMAX, exercise_2_code=TOP_CLASS)
    _, _, _, report = run_grade(capsys, tmp_path, str(path), "--cell-timeout", "3")
    notes = "\n".join(report["notes"])
    assert "grading stopped: cell 6 went on running after it was interrupted (does it catch KeyboardInterrupt?)" in notes
    assert "computed for only 0 s of it: it waited" in notes
    assert "cell 7" not in notes and "cell 8" not in notes
    assert statuses(report)["99.1"] == ("pass", "passed on 3 inputs")


def test_an_endless_loop_in_the_function_fails_its_check_only(tmp_path, capsys):
    path = submission(tmp_path, "spin", exercise_1_code="def softmax(x, dim=-1):\n    while True:\n        pass",
                      exercise_2_code=TOP_CLASS)
    _, _, _, report = run_grade(capsys, tmp_path, str(path), "--timeout", "40", "--cell-timeout", "5")
    assert statuses(report)["99.1"] == ("error", "its check did not end within 30 s (the time limit of an exercise's check)")
    assert statuses(report)["99.2"][0] == "pass"


def test_a_memory_hog_gets_a_memory_error_and_the_rest_is_graded(tmp_path, capsys):
    hog = "chunks = []\nwhile True:\n    chunks.append(bytearray(2**28))\n"
    path = submission(tmp_path, "hog", exercise_2_given="scores = None\n" + hog, exercise_1_code=SOFTMAX,
                      exercise_2_code=TOP_CLASS)
    report = G.grade(path, labs_dir=LABS, limits=Limits(memory=3 * 2**30)).to_json()
    assert "raised MemoryError" in "\n".join(report["notes"])
    assert report["passed"] == 2


def test_a_fork_bomb_is_stopped_and_the_rest_is_graded(tmp_path, capsys):
    import psutil

    bomb = ("import os, time\nfor _ in range(5000):\n    if os.fork() == 0:\n        time.sleep(30)\n        os._exit(0)\n")
    path = submission(tmp_path, "bomb", exercise_2_given="scores = None\n" + bomb, exercise_1_code=SOFTMAX,
                      exercise_2_code=TOP_CLASS)
    before = len(psutil.pids())
    report = G.grade(path, labs_dir=LABS, limits=Limits(processes=300)).to_json()
    assert report["passed"] == 2
    notes = "\n".join(report["notes"])
    assert "fork bomb?" in notes or "BlockingIOError" in notes or "Resource temporarily unavailable" in notes, notes
    time.sleep(1)
    assert len(psutil.pids()) < before + 50, "the sandbox's processes outlived it"


def test_a_process_bomb_in_a_function_stops_the_grader_s_check(tmp_path, capsys):
    bomb = ("def softmax(x, dim=-1):\n    import subprocess\n"
            "    children = [subprocess.Popen(['sleep', '30']) for _ in range(600)]\n    return x")
    path = submission(tmp_path, "spawner", exercise_1_code=bomb, exercise_2_code=TOP_CLASS)
    report = G.grade(path, labs_dir=LABS, limits=Limits(processes=300)).to_json()
    status, message = statuses(report)["99.1"]
    assert status == "error" and "the grader's check was stopped: it ran more than 300 processes" in message


def test_the_limits_come_from_the_measured_solution_time(tmp_path):
    times = tmp_path / "times.json"
    times.write_text(json.dumps({"chapters": {"05_steering_caa": {"seconds": 90.0, "slowest_cell": 30.0}}}))
    limits = G.time_limits("05_steering_caa", times=times)
    assert (limits.notebook, limits.cell, limits.check) == (450.0, 150.0, 150.0)
    assert "5 x the solution's 90 s and slowest cell's 30 s" in limits.describe()
    assert G.time_limits("99_example", times=times).notebook == G.NOTEBOOK_FLOOR
    assert G.time_limits("05_steering_caa", timeout=20, times=times).notebook == 20
    shipped = json.loads(G.SOLUTION_TIMES.read_text())
    labs = sorted(path.stem for path in (Path(G.__file__).resolve().parents[1] / "labs").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(shipped["chapters"]) == labs, "benchmarks/time_notebooks.py --limits: a chapter has no measured time"


def test_without_bubblewrap_the_grader_refuses_unless_told_unsafe(tmp_path, capsys, monkeypatch):
    from utils import sandbox

    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    sandbox.find_bwrap.cache_clear()
    sandbox.check_sandbox.cache_clear()
    path = submission(tmp_path, "correct", exercise_1_code=SOFTMAX, exercise_2_code=TOP_CLASS)
    try:
        code, _, err, _ = run_grade(capsys, tmp_path, str(path))
        assert code == 2 and "needs bubblewrap (`bwrap`), which is not installed" in err and "--unsafe-no-sandbox" in err
        code, _, _, report = run_grade(capsys, tmp_path, str(path), "--unsafe-no-sandbox")
        assert code == 0 and report["notes"][0].startswith("graded WITHOUT the sandbox")
    finally:
        sandbox.find_bwrap.cache_clear()
        sandbox.check_sandbox.cache_clear()


def test_the_definitions_keep_what_defines_and_drop_what_runs():
    extracted = R.definitions(["import torch\nx = compute()\nEPS: float = 1e-6\n",
                               "@torch.no_grad()\ndef f(a):\n    return a\n\nprint(f(1))\nfor i in range(3):\n    pass",
                               "%timeit f(1)"])
    assert extracted == "import torch\n\nEPS: float = 1e-6\n\n@torch.no_grad()\ndef f(a):\n    return a\n"
    assert R.reaching_in("import re\npattern = re.compile('a')\nopen('x.txt', 'w').write('y')\nf.__name__") == []
    assert R.reaching_in("import os\nos.write(1, b'')\nsys._getframe()\nopen('/proc/1/mem')") == [
        "'/proc'", "os.write", "sys._getframe"]
    assert R.reaching_in("import os as o\no.dup2(1, 2)\ngetattr(o, name)\ngetattr(model, name)\nos.path.join('a')") == [
        "getattr(os, ...)", "os.dup2"]


# --------------------------------------------------------------------------------------------
# Submissions that cannot be graded (no kernel)


def test_a_notebook_of_another_chapter_is_refused(tmp_path, capsys):
    nb = C.read_notebook(EXAMPLE_LAB)
    nb.metadata["course"]["chapter"] = "01_prompting"
    path = tmp_path / "other.ipynb"
    path.write_bytes(C.notebook_bytes(nb))
    code, _, err, report = run_grade(capsys, tmp_path, str(path), "--chapter", "99_example")
    assert code == 2
    assert "this notebook is chapter 01_prompting, expected 99_example" in err
    assert report == {"notebook": str(path), "error": "this notebook is chapter 01_prompting, expected 99_example"}
    code, _, err, _ = run_grade(capsys, tmp_path, str(path))  # its own chapter has no reference lab here
    assert code == 2 and "no reference lab" in err and "01_prompting" in err


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", r"cannot read .*broken\.ipynb: not a Jupyter notebook \(NotJSONError"),
    ('{"cells": "nope"}', r"cannot read .*broken\.ipynb: not a Jupyter notebook"),
    (None, r"cannot read .*broken\.ipynb: no such file"),
], ids=["not-json", "not-a-notebook", "missing"])
def test_a_corrupted_or_missing_file_is_refused(tmp_path, capsys, content, message):
    path = tmp_path / "broken.ipynb"
    if content is not None:
        path.write_text(content)
    code, _, err, _ = run_grade(capsys, tmp_path, str(path))
    assert code == 2
    assert __import__("re").search(message, err), err


def test_several_notebooks_get_a_summary_and_a_list_of_reports(tmp_path, capsys):
    folder = tmp_path / "submissions"
    folder.mkdir()
    (folder / "a.ipynb").write_text("{not json")
    (folder / "b.ipynb").write_text("[]")
    code, out, _, reports = run_grade(capsys, tmp_path, str(folder))
    assert code == 2
    assert [report["notebook"] for report in reports] == [str(folder / "a.ipynb"), str(folder / "b.ipynb")]
    assert "summary:" in out and "a.ipynb: cannot grade" in out


def test_the_chapter_comes_from_the_option_the_metadata_or_the_file_name(tmp_path):
    nb = nbformat.v4.new_notebook()
    assert G.resolve_chapter(nb, Path("x.ipynb"), "99_example", LABS) == "99_example"
    assert G.resolve_chapter(nb, Path("Copy of 99_example (3).ipynb"), None, LABS) == "99_example"
    with pytest.raises(G.GradingError, match="pass --chapter NN_slug"):
        G.resolve_chapter(nb, Path("homework.ipynb"), None, LABS)
    nb.metadata["course"] = {"chapter": "99_example"}
    assert G.resolve_chapter(nb, Path("homework.ipynb"), None, LABS) == "99_example"
    assert G.reference_exercises(LABS, "99_example") == ["99.1", "99.2"]



def test_an_honest_complete_chapter_passes_on_a_busy_machine():
    """Chapter 0's solution notebook, every exercise done, graded with the course's registry and its
    default limits while another process keeps a core busy (benchmarks/grading.py does every chapter)."""
    import subprocess
    import sys

    from utils.exercises import EXERCISES

    root = Path(G.__file__).resolve().parents[1]
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        report = G.grade(root / "solutions" / "00_course_model.ipynb", exercises=EXERCISES)
    finally:
        busy.kill()
        busy.wait()
    assert [(result.id, result.status) for result in report.exercises if result.status != "pass"] == []
    assert report.total == 12 and report.notes == []
    assert report.seconds < G.time_limits("00_course_model").notebook


def test_the_sandboxed_package_is_bytecode_only(tmp_path):
    import utils
    from utils.sandbox import sourceless_copy

    package = Path(utils.__file__).resolve().parent
    copy = sourceless_copy(package, tmp_path / "utils")
    # the package's __init__ and the modules that open nnsight traces (nnsight compiles their with-blocks' source)
    assert sorted(str(path.relative_to(copy)) for path in copy.rglob("*.py")) == ["__init__.py", "hooks.py", "steering.py"]
    assert (copy / "grade.pyc").is_file() and (copy / "checkers" / "example.pyc").is_file()
    assert {p.relative_to(package) for p in package.rglob("*") if p.suffix not in (".py", ".pyc") and p.is_file()
            and "__pycache__" not in p.parts} <= {p.relative_to(copy) for p in copy.rglob("*")}  # the data files
    with pytest.raises(ValueError, match="is not a Python package"):
        sourceless_copy(tmp_path, tmp_path / "again")
