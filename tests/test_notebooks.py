"""The notebook pipeline (utils/notebooks): build-labs, sync, store-outputs, format, lint.

First on the worked example in tests/fixtures/notebooks/ (its own pyproject.toml, _config.yml,
_toc.yml, a solution notebook and the lab it must give), then on the course itself: the labs
are up to date, the solution notebooks follow the conventions, and each lab runs until its first
exercise (slow: that runs the course model).
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

from utils.notebooks import cells as C
from utils.notebooks.__main__ import main
from utils.notebooks.execute import execute_notebook, failing_cell, store_outputs
from utils.notebooks.formatting import CODE_LINE_LENGTH, long_lines, ruff_command, ruff_format
from utils.notebooks.labs import build_lab, cell_placeholder, function_placeholder, stale_labs
from utils.notebooks.lint import lint_course, lint_notebook, toc_files
from utils.notebooks.project import colab_install_source, project_info, repository_problems
from utils.notebooks.sync import sync_notebook

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = Path(__file__).resolve().parent / "fixtures" / "notebooks"
EXAMPLE_SOLUTION = EXAMPLE / "solutions" / "99_example.ipynb"
EXAMPLE_LAB = EXAMPLE / "labs" / "99_example.ipynb"
REPO_SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
REPO_LABS = sorted((ROOT / "labs").glob("[0-9][0-9]_*.ipynb"))


def read(path: Path) -> nbformat.NotebookNode:
    return C.read_notebook(path)


def cell_by_id(nb: nbformat.NotebookNode, cell_id: str) -> nbformat.NotebookNode:
    return next(cell for cell in nb.cells if cell.get("id") == cell_id)


def example_colab_source() -> str:
    return colab_install_source(project_info(EXAMPLE))


@pytest.fixture()
def example_root(tmp_path: Path) -> Path:
    """A writable copy of the example course (pyproject.toml, _config.yml, _toc.yml, solutions/, labs/)."""
    root = tmp_path / "course"
    shutil.copytree(EXAMPLE, root)
    return root


# --------------------------------------------------------------------------------------------
# build-labs on the worked example


def test_build_labs_gives_the_committed_example_lab(tmp_path, capsys):
    assert main(["--root", str(EXAMPLE), "build-labs", "--labs", str(tmp_path)]) == 0
    assert (tmp_path / "99_example.ipynb").read_bytes() == EXAMPLE_LAB.read_bytes(), (
        "the lab built from tests/fixtures/notebooks/solutions/99_example.ipynb differs from the committed "
        "tests/fixtures/notebooks/labs/99_example.ipynb; if the change is intended, rebuild it with "
        "`python -m utils.notebooks --root tests/fixtures/notebooks build-labs`")
    assert "written (exercises: 99.1, 99.2)" in capsys.readouterr().out
    assert main(["--root", str(EXAMPLE), "build-labs", "--check"]) == 0


def test_building_twice_gives_identical_bytes_and_leaves_the_file_alone(example_root):
    lab = example_root / "labs" / "99_example.ipynb"
    lab.unlink()
    assert main(["--root", str(example_root), "build-labs"]) == 0
    first, mtime = lab.read_bytes(), lab.stat().st_mtime_ns
    assert main(["--root", str(example_root), "build-labs"]) == 0
    assert lab.read_bytes() == first and lab.stat().st_mtime_ns == mtime
    rebuilt = C.notebook_bytes(build_lab(read(EXAMPLE_SOLUTION), "99_example", example_colab_source()))
    assert rebuilt == first


def test_the_lab_replaces_solutions_and_keeps_everything_else():
    solution, lab = read(EXAMPLE_SOLUTION), read(EXAMPLE_LAB)
    assert lab.metadata["course"] == {"chapter": "99_example", "exercises": ["99.1", "99.2"]}
    assert lab.metadata["kernelspec"]["name"] == "python3"
    # ids are the solution's; the solution-only cell is gone, nothing else
    assert [cell.id for cell in lab.cells] == [cell.id for cell in solution.cells if cell.id != "exercise-1-extra"]
    function = C.source(cell_by_id(lab, "exercise-1-code"))
    assert function == (
        'def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:\n'
        '    """The softmax of x along dim (same shape as x)."""\n'
        "    raise NotImplementedError(\n"
        '        "Exercise 99.1: write this function, then run the check below"\n'
        "    )")
    assert C.source(cell_by_id(lab, "exercise-2-code")) == (
        "# Exercise 99.2: your code here\n"
        "raise NotImplementedError(\n"
        '    "Exercise 99.2: write your code in this cell, then run the check below"\n'
        ")")
    assert C.source(cell_by_id(lab, "exercise-2-answer")) == "*Exercise 99.2: write your answer here.*"
    for cell_id in ("parameters", "setup", "exercise-1", "exercise-1-check", "exercise-2-question"):
        assert C.source(cell_by_id(lab, cell_id)) == C.source(cell_by_id(solution, cell_id))
    assert cell_by_id(lab, "parameters").metadata["tags"] == ["parameters"]
    assert "tags" not in cell_by_id(lab, "exercise-2-code").metadata  # the 'solution' tag is gone
    assert C.source(lab.cells[0]) == example_colab_source()
    for cell in lab.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def solution_lines(nb: nbformat.NotebookNode) -> set[str]:
    """Lines of a solution notebook that only its solutions contain (stripped, at least 4 characters)."""
    hidden, visible = set(), set()
    for cell in nb.cells:
        lines = C.source(cell).splitlines()
        if {C.SOLUTION_TAG, C.SOLUTION_ONLY_TAG} & set(C.tags(cell)):
            hidden.update(lines)
            continue
        inside: set[int] = set()
        if cell.cell_type == "code":
            for begin, end in C.solution_regions(C.source(cell)):
                inside.update(range(begin + 1, end))
        for number, line in enumerate(lines):
            (hidden if number in inside else visible).add(line)
    return {line.strip() for line in hidden - visible if len(line.strip()) >= 4} - {line.strip() for line in visible}


def lab_pairs() -> list[tuple[Path, Path]]:
    pairs = [(EXAMPLE_SOLUTION, EXAMPLE_LAB)]
    pairs += [(path, ROOT / "labs" / path.name) for path in REPO_SOLUTIONS if (ROOT / "labs" / path.name).exists()]
    return pairs


@pytest.mark.parametrize(("solution", "lab"), lab_pairs(), ids=lambda path: path.parent.parent.name + "/" + path.name)
def test_a_lab_contains_no_solution_text(solution, lab):
    secret = solution_lines(read(solution))
    assert secret, f"{solution.name}: found no solution lines to look for"
    lab_lines = {line.strip() for cell in read(lab).cells for line in C.source(cell).splitlines()}
    leaked = sorted(secret & lab_lines)
    assert not leaked, f"{lab} contains solution lines: {leaked}"
    assert "BEGIN SOLUTION" not in lab.read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------
# build-labs: errors


def notebook_with(*cells: nbformat.NotebookNode) -> nbformat.NotebookNode:
    colab = nbformat.v4.new_code_cell(example_colab_source(), metadata={"tags": [C.COLAB_TAG, C.HIDDEN_TAG]})
    return nbformat.v4.new_notebook(cells=[colab, *cells])


HEADING = nbformat.v4.new_markdown_cell("### Exercise 99.1: something")


def function_cell(body: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell("def f(x):\n" + body)


@pytest.mark.parametrize(("cells", "problem"), [
    ([HEADING, function_cell("    return x\n    # END SOLUTION")],
     r"cell 2: line 3: '# END SOLUTION' without a '# BEGIN SOLUTION' above it"),
    ([HEADING, function_cell("    # BEGIN SOLUTION\n    return x")],
     r"cell 2: line 2: '# BEGIN SOLUTION' is never closed"),
    ([HEADING, function_cell("    # BEGIN SOLUTION\n    # BEGIN SOLUTION\n    return x\n    # END SOLUTION\n    # END SOLUTION")],
     r"cell 2: line 3: '# BEGIN SOLUTION' inside the solution opened on line 2 \(nested markers\)"),
    ([function_cell("    # BEGIN SOLUTION\n    return x\n    # END SOLUTION")],
     r"cell 1: '# BEGIN SOLUTION' \(line 2\) outside any exercise"),
    ([HEADING, nbformat.v4.new_markdown_cell("## Next section"), function_cell("    # BEGIN SOLUTION\n    return x\n    # END SOLUTION")],
     r"cell 3: '# BEGIN SOLUTION' \(line 2\) outside any exercise"),
    ([nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["solution"]})],
     r"cell 1: tagged 'solution' outside any exercise"),
    ([HEADING, nbformat.v4.new_markdown_cell(HEADING.source)], r"exercise 99.1 has more than one heading"),
], ids=["end-without-begin", "begin-without-end", "nested", "before-any-exercise", "after-the-exercise-ended",
        "solution-tag-outside", "duplicate-heading"])
def test_build_lab_errors_name_the_notebook_the_cell_and_the_problem(cells, problem):
    with pytest.raises(C.NotebookError, match=r"^solutions/99_example\.ipynb.*" + problem):
        build_lab(notebook_with(*copy.deepcopy(cells)), "99_example", example_colab_source())


def test_markers_keep_their_indentation_and_the_rest_of_the_cell():
    nb = notebook_with(HEADING, nbformat.v4.new_code_cell(
        "class Model:\n    def forward(self, x):\n        # a comment that stays\n        # BEGIN SOLUTION\n"
        "        return x * 2\n        # END SOLUTION\n\n    def other(self):\n        return 1\n"))
    lab = build_lab(nb, "99_example", example_colab_source())
    assert C.source(lab.cells[2]) == (
        "class Model:\n    def forward(self, x):\n        # a comment that stays\n"
        "        raise NotImplementedError(\n"
        '            "Exercise 99.1: write this function, then run the check below"\n'
        "        )\n"
        "\n    def other(self):\n        return 1\n")


def test_build_labs_cli_reports_a_broken_notebook(example_root, capsys):
    nb = read(example_root / "solutions" / "99_example.ipynb")
    cell_by_id(nb, "exercise-1-code")["source"] = "def softmax(x):\n    # BEGIN SOLUTION\n    return x"
    (example_root / "solutions" / "99_example.ipynb").write_bytes(C.notebook_bytes(nb))
    assert main(["--root", str(example_root), "build-labs"]) == 2
    assert "solutions/99_example.ipynb, cell 6: line 2: '# BEGIN SOLUTION' is never closed" in capsys.readouterr().err


def test_check_lists_outdated_missing_and_orphan_labs(example_root, capsys):
    solution = example_root / "solutions" / "99_example.ipynb"
    nb = read(solution)
    cell_by_id(nb, "intro")["source"] += "\n\nAn edit."
    solution.write_bytes(C.notebook_bytes(nb))
    shutil.copy(example_root / "labs" / "99_example.ipynb", example_root / "labs" / "98_gone.ipynb")
    assert main(["--root", str(example_root), "build-labs", "--check"]) == 1
    out = capsys.readouterr().out
    assert "labs/99_example.ipynb is out of date with solutions/99_example.ipynb" in out
    assert "labs/98_gone.ipynb has no solution notebook solutions/98_gone.ipynb; delete it" in out
    (example_root / "labs" / "99_example.ipynb").unlink()
    assert stale_labs(example_root)[0] == "labs/99_example.ipynb is missing"


# --------------------------------------------------------------------------------------------
# The colab-install cell and sync


def test_the_colab_cell_installs_the_pinned_course_only_in_colab(monkeypatch):
    source = example_colab_source()
    assert "%" not in source and "!" not in source  # plain Python: runs under nbval and the book build
    calls = []
    monkeypatch.setattr(subprocess, "check_call", lambda args, **kwargs: calls.append(args))
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(compile(source, "colab-install", "exec"), {})
    assert calls == []
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    exec(compile(source, "colab-install", "exec"), {})
    assert calls == [[sys.executable, "-m", "pip", "install", "-q",
                      "example-course @ git+https://github.com/example/example-course@v9.9.9"]]


def test_sync_rewrites_the_colab_cell_from_pyproject(example_root, capsys):
    pyproject = example_root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "9.9.9"', 'version = "9.9.10"'))
    assert main(["--root", str(example_root), "sync", "--check"]) == 1
    assert main(["--root", str(example_root), "build-labs", "--check"]) == 1  # the lab pins the old version too
    assert main(["--root", str(example_root), "sync"]) == 0
    assert "solutions/99_example.ipynb: colab-install cell updated" in capsys.readouterr().out
    solution = read(example_root / "solutions" / "99_example.ipynb")
    assert "example-course @ git+https://github.com/example/example-course@v9.9.10" in C.source(solution.cells[0])
    assert solution.cells[0].id == "colab-install" and solution.cells[0].metadata["tags"] == [C.COLAB_TAG, C.HIDDEN_TAG]
    assert main(["--root", str(example_root), "sync", "--check"]) == 0
    assert main(["--root", str(example_root), "build-labs"]) == 0
    assert "@v9.9.10" in C.source(read(example_root / "labs" / "99_example.ipynb").cells[0])


def test_sync_inserts_a_missing_colab_cell_and_refuses_a_misplaced_one():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title")])
    assert sync_notebook(nb, "pass") == "inserted"
    assert C.source(nb.cells[0]) == "pass" and C.tags(nb.cells[0]) == [C.COLAB_TAG, C.HIDDEN_TAG]
    assert sync_notebook(nb, "pass") is None
    nb.cells[0].metadata["tags"] = [C.COLAB_TAG]  # an older notebook: the site would show the cell
    assert sync_notebook(nb, "pass") == "updated" and C.tags(nb.cells[0]) == [C.COLAB_TAG, C.HIDDEN_TAG]
    nb.cells.reverse()
    with pytest.raises(C.NotebookError, match="cell 1 is tagged 'colab-install': only the first cell may be"):
        sync_notebook(nb, "pass")


# --------------------------------------------------------------------------------------------
# lint


def test_lint_accepts_the_example(capsys):
    assert lint_course(EXAMPLE) == []
    assert main(["--root", str(EXAMPLE), "lint"]) == 0


def test_lint_names_each_problem(example_root):
    path = example_root / "solutions" / "99_example.ipynb"
    nb = read(path)
    nb.metadata["kernelspec"]["name"] = "my-env"
    cell_by_id(nb, "parameters").metadata["tags"] = []
    cell_by_id(nb, "setup").outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi\n")]
    cell_by_id(nb, "exercise-1-output").outputs = []
    cell_by_id(nb, "exercise-2")["source"] = "### Exercise 99.3: the most likely class\n\nStore the index."
    cell_by_id(nb, "exercise-2-check")["source"] = "print(top_class)"
    nb.cells.append(nbformat.v4.new_markdown_cell("### Exercise 3: unnumbered"))
    path.write_bytes(C.notebook_bytes(nb))
    problems = "\n".join(lint_notebook(path, example_root, toc=set()))
    for expected in [
        "kernelspec is 'my-env'; set it to python3",
        "no code cell tagged 'parameters' that sets MODEL",
        "cell 3: has stored outputs but is not a '# NBVAL_CHECK_OUTPUT' cell",
        "cell 9: a '# NBVAL_CHECK_OUTPUT' cell without stored outputs",
        "cell 10: exercise 99.3 should be numbered 99.2",
        "cell 10: Exercise 99.3: no line stating difficulty, importance and time",
        "cell 10: Exercise 99.3: no hint",
        "cell 10: Exercise 99.3: no checker call",
        "cell 17: heading '### Exercise 3: unnumbered' is not an exercise heading the tools recognise",
        "not listed in _toc.yml; add '- file: solutions/99_example'",
    ]:
        assert expected in problems, f"missing {expected!r} in:\n{problems}"


def test_lint_checks_the_colab_cell_and_the_repository_url(example_root, capsys):
    config = example_root / "_config.yml"
    config.write_text(config.read_text().replace("example/example-course", "someone/fork"))
    pyproject = example_root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "9.9.9"', 'version = "9.9.10"'))
    assert main(["--root", str(example_root), "lint"]) == 1
    out = capsys.readouterr().out
    assert "_config.yml: repository.url is https://github.com/someone/fork but pyproject.toml's" in out
    assert "cell 0: the 'colab-install' cell is out of date with pyproject.toml; run `python -m utils.notebooks sync`" in out


def test_the_lab_is_titled_lab_and_lint_wants_the_solution_titled_solution(example_root, capsys):
    lab = read(example_root / "labs" / "99_example.ipynb")
    assert C.source(lab.cells[C.title_cell(lab.cells)]).startswith("# Lab 99 · A worked example\n")
    path = example_root / "solutions" / "99_example.ipynb"
    for wrong in ("# Lab 99 · A worked example", "# Solution 98 · A worked example", "# 99. A worked example"):
        nb = read(path)
        cell = nb.cells[C.title_cell(nb.cells)]
        cell["source"] = wrong + C.source(cell)[C.source(cell).index("\n"):]
        path.write_bytes(C.notebook_bytes(nb))
        assert main(["--root", str(example_root), "lint"]) == 1
        assert f"the title must be '# Solution 99 · Topic' (the topic of the chapter page), but cell 1 starts {wrong!r}" in (
            capsys.readouterr().out)


def test_lint_wants_the_cells_recording_the_books_numbers_hidden(example_root, capsys):
    path = example_root / "solutions" / "99_example.ipynb"
    nb = read(path)
    nb.cells.append(nbformat.v4.new_code_cell('results.record("accuracy", 0.9, digits=2)',
                                              metadata={"tags": [C.SOLUTION_ONLY_TAG]}))
    path.write_bytes(C.notebook_bytes(nb))
    assert main(["--root", str(example_root), "lint"]) == 1
    assert (f"cell {len(nb.cells) - 1}: records the book's numbers (results.record) but is not tagged 'remove-cell': "
            "the site and the lab would show it") in capsys.readouterr().out


def test_lint_wants_the_colab_cell_hidden_on_the_site(example_root, capsys):
    path = example_root / "solutions" / "99_example.ipynb"
    nb = read(path)
    nb.cells[0].metadata["tags"] = [C.COLAB_TAG]
    path.write_bytes(C.notebook_bytes(nb))
    assert main(["--root", str(example_root), "lint"]) == 1
    assert "cell 0: the 'colab-install' cell lacks the tag 'remove-cell' (the website would show it)" in capsys.readouterr().out


def with_setup_cell(root: Path, source: str) -> Path:
    """The example solution of ``root`` with ``source`` in its setup cell (written); its path."""
    path = root / "solutions" / "99_example.ipynb"
    nb = read(path)
    cell_by_id(nb, "setup")["source"] = source
    path.write_bytes(C.notebook_bytes(nb))
    return path


def test_lint_wants_the_code_as_ruff_formats_it_and_format_writes_it(example_root, capsys):
    path = with_setup_cell(example_root, "import torch\nscores = torch.tensor([1.0,2.0 ,3.0])")
    assert main(["--root", str(example_root), "lint"]) == 1
    assert "not formatted as `ruff format` writes it; run `python -m utils.notebooks format" in capsys.readouterr().out
    assert main(["--root", str(example_root), "format", "--check"]) == 1
    assert "solutions/99_example.ipynb: would be reformatted" in capsys.readouterr().out
    assert main(["--root", str(example_root), "format"]) == 0
    assert "solutions/99_example.ipynb: formatted" in capsys.readouterr().out
    assert C.source(cell_by_id(read(path), "setup")) == "import torch\n\nscores = torch.tensor([1.0, 2.0, 3.0])"
    assert main(["--root", str(example_root), "lint"]) == 0


def test_lint_names_each_line_wider_than_the_sites_code_column(example_root, capsys):
    comment = ("# " + "a comment that ruff leaves as it is, " * 3).strip()
    setup = C.source(cell_by_id(read(EXAMPLE_SOLUTION), "setup")) + "\n" + comment
    nb = read(with_setup_cell(example_root, setup))
    index, line = nb.cells.index(cell_by_id(nb, "setup")), setup.count("\n") + 1
    assert main(["--root", str(example_root), "lint"]) == 1
    assert (f"cell {index}, line {line}: {len(comment)} columns (at most {CODE_LINE_LENGTH}); wrap the comment, "
            "docstring or string by hand") in capsys.readouterr().out


def test_format_and_lint_name_a_cell_ruff_cannot_parse(example_root, capsys):
    path = with_setup_cell(example_root, "def broken(:\n    pass")
    with pytest.raises(C.NotebookError, match="ruff format failed on .*99_example.ipynb"):
        ruff_format([path])
    assert main(["--root", str(example_root), "lint"]) == 1
    assert "ruff format failed on" in capsys.readouterr().out


def test_format_says_how_to_install_ruff_when_it_is_missing(example_root, monkeypatch):
    from utils.notebooks import formatting

    monkeypatch.setattr(formatting, "ruff_command", lambda paths, check: [sys.executable, "-m", "ruff_is_not_here"])
    with pytest.raises(C.NotebookError, match=r"ruff is not installed: pip install -r requirements.txt"):
        ruff_format([example_root / "solutions" / "99_example.ipynb"])


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_the_placeholders_are_written_as_ruff_format_writes_them(depth, tmp_path):
    """One line where it fits in CODE_LINE_LENGTH, three where it does not: the labs stay formatted."""
    nested = "".join(f"{'    ' * level}def f{level}():\n" for level in range(depth + 1))
    code = nested + function_placeholder("1.12", "    " * (depth + 1)) + "\n\n\n" + cell_placeholder("1.12") + "\n"
    script = tmp_path / "snippet.py"
    script.write_text(code)
    subprocess.run(ruff_command([script], check=False), check=True)
    assert script.read_text() == code
    assert all(len(line) <= CODE_LINE_LENGTH for line in code.splitlines())


# --------------------------------------------------------------------------------------------
# Running notebooks (a kernel each: a few seconds)


def test_store_outputs_keeps_outputs_only_on_checked_cells(example_root, capsys):
    path = example_root / "solutions" / "99_example.ipynb"
    nb = read(path)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [nbformat.v4.new_output("stream", name="stdout", text="stale\n")], 7
    path.write_bytes(C.notebook_bytes(nb))
    assert main(["store-outputs", str(path)]) == 0
    assert "outputs kept on 1 '# NBVAL_CHECK_OUTPUT' cell" in capsys.readouterr().out
    stored = read(path)
    for cell in stored.cells:
        if cell.cell_type == "code":
            checked = C.is_check_output_cell(cell)
            assert bool(cell.outputs) == checked, cell.id
            # nbval refuses a checked cell with outputs and no execution count
            assert (cell.execution_count is not None) == checked, cell.id
    assert cell_by_id(stored, "exercise-1-output").outputs[0]["text"] == "tensor([0.0900, 0.2447, 0.6652])\n"
    assert path.read_bytes() == EXAMPLE_SOLUTION.read_bytes()  # the committed fixture is what store-outputs writes


def test_store_outputs_names_the_failing_cell(example_root):
    path = example_root / "solutions" / "99_example.ipynb"
    nb = read(path)
    cell_by_id(nb, "exercise-2-given")["source"] = "scores = undefined_name"
    path.write_bytes(C.notebook_bytes(nb))
    with pytest.raises(C.NotebookError, match=r"cell 11 failed \(NameError: name 'undefined_name' is not defined\)"):
        store_outputs(path)


def test_the_example_solution_passes_nbval_as_make_test_runs_it(tmp_path):
    """store-outputs + the sanitizer + nbval --nbval-lax (the Makefile's NBVAL_FLAGS) agree."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-kernel-name", "python3",
         "--nbval-sanitize-with", str(ROOT / "tests" / "nbval_sanitize.cfg"), str(EXAMPLE_SOLUTION),
         "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "passed" in result.stdout


PLACEHOLDER = re.compile(r'raise NotImplementedError\(\s*"Exercise ')


def assert_runs_until_its_first_exercise(lab_path: Path) -> None:
    """Execute a lab (from its own folder): the first error must be the first code exercise's NotImplementedError."""
    from nbclient.exceptions import CellExecutionError

    nb = read(lab_path)
    scopes = C.exercise_scopes(nb.cells)
    placeholders = [scope for cell, scope in zip(nb.cells, scopes)
                    if cell.cell_type == "code" and PLACEHOLDER.search(C.source(cell))]
    assert placeholders, f"{lab_path.name} has no exercise placeholder"
    first = placeholders[0]
    with pytest.raises(CellExecutionError):
        execute_notebook(nb, lab_path.parent, timeout=600)
    index, error = failing_cell(nb)
    assert error["ename"] == "NotImplementedError", (
        f"{lab_path.name}: cell {index} raised {error['ename']}: {error['evalue']} before the first exercise")
    assert f"Exercise {first}:" in error["evalue"] and scopes[index] == first, (
        f"{lab_path.name}: stopped at cell {index} ({error['evalue']}), expected Exercise {first}")


def test_the_example_lab_runs_until_its_first_exercise():
    assert_runs_until_its_first_exercise(EXAMPLE_LAB)


# --------------------------------------------------------------------------------------------
# The course itself


def test_the_repository_url_and_version_agree_with_pyproject():
    """pyproject.toml's [project.urls] Repository (the Colab install cell) == _config.yml's
    repository.url (the book's Colab badges); utils.__version__ == the version the cell pins."""
    assert repository_problems(ROOT) == []


def test_labs_are_up_to_date_with_solutions():
    problems = stale_labs(ROOT)
    assert not problems, "\n".join(problems) + "\nrun `make labs`"


def test_toc_is_readable():
    files = toc_files(ROOT)
    assert files is not None and "book/intro" in files


@pytest.mark.parametrize("solution", REPO_SOLUTIONS, ids=lambda path: path.name)
def test_solution_stores_outputs_only_on_checked_cells(solution):
    nb = read(solution)
    offenders = [index for index, cell in enumerate(nb.cells)
                 if cell.cell_type == "code" and cell.get("outputs") and not C.is_check_output_cell(cell)]
    assert not offenders, (f"{solution.name}: cells {offenders} have outputs but no '# NBVAL_CHECK_OUTPUT'; run "
                           f"`python -m utils.notebooks store-outputs solutions/{solution.name}`")


@pytest.mark.parametrize("solution", REPO_SOLUTIONS, ids=lambda path: path.name)
def test_solution_passes_lint(solution):
    problems = lint_notebook(solution, ROOT, toc=toc_files(ROOT))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("lab", REPO_LABS, ids=lambda path: path.name)
def test_lab_is_formatted_to_the_sites_code_width(lab):
    assert ruff_format([lab], check=True) == [], f"{lab.name}: labs are generated formatted; see labs.function_placeholder"
    assert [str(line) for line in long_lines(read(lab))] == []


@pytest.mark.slow
@pytest.mark.parametrize("lab", REPO_LABS, ids=lambda path: path.name)
def test_lab_runs_until_its_first_exercise(lab):
    assert_runs_until_its_first_exercise(lab)


# --------------------------------------------------------------------------------------------
# The nbval sanitizer


def sanitize(text: str) -> str:
    import re

    from nbval.plugin import get_sanitize_patterns

    patterns = get_sanitize_patterns((ROOT / "tests" / "nbval_sanitize.cfg").read_text(encoding="utf-8"))
    assert len(patterns) >= 8, "tests/nbval_sanitize.cfg: some sections were not read (format: 'regex: ...' then 'replace: ...')"
    for regex, replacement in patterns:
        text = re.sub(regex, replacement, text)
    return text


@pytest.mark.parametrize(("one", "other"), [
    ("train: 100%|##########| 50/50 [00:01<00:00, 30.12it/s]\ndone\n",
     "train: 100%|##########| 50/50 [00:03<00:00, 14.80it/s]\ndone\n"),
    ("12it [00:01, 10.5it/s]", "12it [00:02, 6.1it/s]"),
    ("trained in 12.3 s (3.4k tokens/s)", "trained in 9.8 s (4.1k tokens/s)"),
    ("took 850µs", "took 1.2 ms"),
    ("<utils.Thing object at 0x7f3a2b1c9d80>", "<utils.Thing object at 0x7f00aa11bb22>"),
    ("saved to /tmp/tmpab12cd/model.pt", "saved to /tmp/tmpzz99yy/model.pt"),
    ("/work/a/.venv/lib/python3.11/site-packages/transformers/x.py:12: FutureWarning: y",
     "/home/b/.venv/lib/python3.11/site-packages/transformers/x.py:15: FutureWarning: y"),
    ("run at 2026-11-22 21:47:48.123", "run at 2026-11-23T08:00:01"),
])
def test_sanitizer_hides_run_dependent_text(one, other):
    assert sanitize(one) == sanitize(other)


def test_sanitizer_is_idempotent_so_sanitized_stored_outputs_still_compare():
    samples = ["train: 100%|##########| 50/50 [00:01<00:00, 30.12it/s]", "took 1.2 ms at 0x7f3a2b1c9d80",
               "/tmp/tmpab12cd/x /a/site-packages/torch/nn.py:12: warn 2026-11-22 21:47:48"]
    for text in samples:
        assert sanitize(sanitize(text)) == sanitize(text)


def test_store_outputs_sanitizes_what_it_stores():
    from utils.notebooks.execute import read_sanitizer, sanitized

    patterns = read_sanitizer(ROOT / "tests" / "nbval_sanitize.cfg")
    outputs = [nbformat.v4.new_output("stream", name="stderr", text="Loading: 100%|##| 52/52 [00:00<00:00, 7551.03it/s]\n"),
               nbformat.v4.new_output("execute_result", data={"text/plain": "<Thing at 0x7f3a2b1c9d80>"}, execution_count=3)]
    clean = sanitized(outputs, patterns)
    assert clean[0]["text"] == "[PROGRESS BAR]\n"
    assert clean[1]["data"]["text/plain"] == "<Thing at 0xADDRESS>" and clean[1]["execution_count"] == 3
    assert outputs[0]["text"].startswith("Loading")  # the input is not changed


@pytest.mark.parametrize("text", [
    "accuracy: 0.87", "shape: (1, 7)", "top 3 after the prompt: [' Paris', ' Oslo', ' Rome']",
    "tensor([0.0900, 0.2447, 0.6652])", "first copy: 7.6 nats, second copy: 0.4 nats", "4 layers, d_model = 256",
])
def test_sanitizer_keeps_values_that_teach(text):
    assert sanitize(text) == text


def test_the_makefile_exports_what_the_notebook_kernels_get():
    """`make book`/`make test` and store-outputs/nbval's own kernels run with the same variables."""
    from utils.notebooks.execute import OFFLINE_ENV

    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    exported = dict(re.findall(r"^export (\w+) := (.*)$", makefile, flags=re.M))
    assert {name: exported.get(name) for name in OFFLINE_ENV} == OFFLINE_ENV
