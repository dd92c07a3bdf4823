"""Grading (utils/grade.py) on submissions made from the example lab in tests/fixtures/notebooks/.

Each graded submission starts a kernel (a few seconds); the example imports torch and
utils.checks only, no model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import nbformat
import pytest

from utils import checks
from utils import grade as G
from utils.notebooks import cells as C

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "notebooks"
LABS = FIXTURES / "labs"
EXAMPLE_LAB = LABS / "99_example.ipynb"

SOFTMAX = '''def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    exps = (x - x.amax(dim=dim, keepdim=True)).exp()
    return exps / exps.sum(dim=dim, keepdim=True)'''
UNNORMALISED_SOFTMAX = '''def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return (x - x.amax(dim=dim, keepdim=True)).exp()'''
TOP_CLASS = "top_class = int(scores.argmax())"


def submission(folder: Path, name: str, **sources: str) -> Path:
    """The example lab with the cells named by id (``exercise_1_code`` -> ``exercise-1-code``) replaced."""
    nb = C.read_notebook(EXAMPLE_LAB)
    for cell_id, text in sources.items():
        cell = next(cell for cell in nb.cells if cell.get("id") == cell_id.replace("_", "-"))
        cell["source"] = text
    path = folder / f"{name}.ipynb"
    path.write_bytes(C.notebook_bytes(nb))
    return path


def run_grade(capsys, tmp_path: Path, *args: str) -> tuple[int, str, str, object]:
    """``python -m utils.grade ARGS --labs <example labs> --json <file>``: (exit code, stdout, stderr, report)."""
    report = tmp_path / "report.json"
    code = G.main([*args, "--labs", str(LABS), "--json", str(report)])
    out, err = capsys.readouterr()
    return code, out, err, json.loads(report.read_text(encoding="utf-8")) if report.exists() else None


def statuses(report: dict) -> dict[str, tuple[str, str]]:
    return {exercise["id"]: (exercise["status"], exercise["message"]) for exercise in report["exercises"]}


# --------------------------------------------------------------------------------------------
# Graded submissions (a kernel each)


def test_a_correct_submission_passes(tmp_path, capsys):
    path = submission(tmp_path, "correct", exercise_1_code=SOFTMAX, exercise_2_code=TOP_CLASS)
    code, out, _, report = run_grade(capsys, tmp_path, str(path))
    assert code == 0, out
    assert statuses(report) == {"99.1": ("pass", "passed on 3 inputs"), "99.2": ("pass", "correct")}
    assert (report["notebook"], report["chapter"], report["passed"], report["total"]) == (str(path), "99_example", 2, 2)
    assert report["seconds"] > 0 and report["notes"] == []
    assert "2 of 2 exercises pass" in out and "99.1      pass" in out


def test_a_wrong_submission_fails_with_the_checkers_message(tmp_path, capsys):
    path = submission(tmp_path, "wrong", exercise_1_code=UNNORMALISED_SOFTMAX, exercise_2_code=TOP_CLASS)
    code, out, _, report = run_grade(capsys, tmp_path, str(path))
    assert code == 1
    status, message = statuses(report)["99.1"]
    assert status == "fail"
    assert message.startswith("input 'a row of 5': first difference at index (0, 0)") and "Hint: exponentiate" in message
    assert statuses(report)["99.2"][0] == "pass"


def test_a_crashing_exercise_is_an_error_and_later_exercises_are_still_graded(tmp_path, capsys):
    path = submission(tmp_path, "crash", exercise_1_code="undefined_helper()\n\n" + SOFTMAX, exercise_2_code=TOP_CLASS,
                      parameters='MODEL = "gpt2"\nprint(1 / 0)')
    code, _, _, report = run_grade(capsys, tmp_path, str(path))
    assert code == 1
    assert statuses(report)["99.1"] == (
        "error", "cell 6 `undefined_helper()` raised NameError: name 'undefined_helper' is not defined")
    assert statuses(report)["99.2"] == ("pass", "correct")
    # an error outside the exercises is a note; the grader still runs on the course model
    assert report["notes"] == [
        "cell 2 `MODEL = \"gpt2\"` (outside the exercises) raised ZeroDivisionError: division by zero"]


def test_the_unchanged_lab_is_not_attempted(tmp_path, capsys):
    code, _, _, report = run_grade(capsys, tmp_path, str(EXAMPLE_LAB))
    assert code == 1
    assert {key: status for key, (status, _) in statuses(report).items()} == {
        "99.1": "not attempted", "99.2": "not attempted"}
    assert "still raises NotImplementedError (cell 7 `check_softmax(softmax)`)" == statuses(report)["99.1"][1]
    assert report["notes"] == []  # the placeholders' own errors are no news


def test_an_endless_loop_times_out_and_grading_stops(tmp_path, capsys):
    path = submission(tmp_path, "loop", exercise_1_code="while True:\n    pass", exercise_2_code=TOP_CLASS)
    started = time.monotonic()
    code, out, _, report = run_grade(capsys, tmp_path, str(path), "--timeout", "5")
    assert time.monotonic() - started < 5 + 40, "the time limit did not bound the run"
    assert code == 1
    status, message = statuses(report)["99.1"]
    assert status == "error" and "timed out after" in message and "endless loop" in message
    status, message = statuses(report)["99.2"]
    assert status == "error" and message.startswith("not run: the time limit of 5 s ran out in cell 6")
    assert any("grading stopped" in note for note in report["notes"])


def test_the_guard_keeps_files_outside_the_grading_folder_intact(tmp_path, capsys):
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("keep me")
    path = submission(
        tmp_path, "vandal",
        exercise_1_code=(f"import os, subprocess\n"
                         f"try:\n    subprocess.run(['rm', '-f', {str(sentinel)!r}])\n"
                         f"except PermissionError as error:\n    print('blocked:', error)\n"
                         f"os.remove({str(sentinel)!r})\n\n" + SOFTMAX),
        exercise_2_code=(f"with open('inside.txt', 'w') as handle:  # its own folder: allowed\n    handle.write('fine')\n"
                         f"with open({str(sentinel)!r}, 'w') as handle:\n    handle.write('overwritten')\n" + TOP_CLASS),
    )
    code, _, _, report = run_grade(capsys, tmp_path, str(path))
    assert sentinel.read_text() == "keep me"
    assert code == 1
    status, message = statuses(report)["99.1"]
    assert status == "error" and f"PermissionError: grading sandbox: deleting {sentinel} is not allowed" in message
    status, message = statuses(report)["99.2"]
    assert status == "error" and f"PermissionError: grading sandbox: writing to {sentinel} is not allowed" in message
    notes = "\n".join(report["notes"])
    assert f"blocked: the notebook tried deleting {sentinel}" in notes
    assert "blocked: the notebook tried starting the program" in notes


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


def test_the_log_variable_is_the_checks_one():
    assert G.CHECK_LOG_ENV == checks.CHECK_LOG_ENV
