"""The numbers the book quotes: recorded by the notebooks, checked on every build, shown by a role."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from utils.results import (
    MODE_VARIABLE, RESULTS_DIR, Results, StaleResultError, format_table, format_value, lookup, quoted_numbers,
    recorded_numbers,
)

ROOT = Path(__file__).resolve().parent.parent
ROLE = re.compile(r"\{result\}`([^`]+)`|```\{result-table\} (\S+)")


def test_values_are_quoted_at_the_stated_precision() -> None:
    assert format_value(0.91666, digits=2) == "0.92"
    assert format_value(-0.0004, digits=2) == "0.00"          # no "-0.00"
    assert format_value(32_768_000) == "32,768,000"
    assert format_value("L2H4") == "L2H4"
    with pytest.raises(ValueError, match="needs digits="):
        format_value(0.5)
    with pytest.raises(ValueError, match="non-finite"):
        format_value(float("nan"), digits=2)
    with pytest.raises(TypeError, match="bool"):
        format_value(True)


def test_write_then_check_round_trips_and_a_changed_value_is_stale(tmp_path: Path, monkeypatch) -> None:
    results = Results("04_logit_lens", directory=tmp_path)
    monkeypatch.setenv(MODE_VARIABLE, "write")
    assert results.record("kl_layer_0", 16.012, digits=2) == "16.01"
    results.record("head", "L2H4")
    assert json.loads(results.path.read_text()) == {"head": "L2H4", "kl_layer_0": "16.01"}
    monkeypatch.setenv(MODE_VARIABLE, "check")
    assert results.record("kl_layer_0", 16.0149, digits=2) == "16.01"    # the same at the quoted precision
    with pytest.raises(StaleResultError, match=r"quotes '16.01' but this run computes '15.20'.*store-outputs "
                                               r"solutions/04_logit_lens.ipynb"):
        results.record("kl_layer_0", 15.2, digits=2)
    with pytest.raises(StaleResultError, match="not recorded"):
        results.record("kl_layer_1", 3.0, digits=2)


def test_a_table_is_one_record_in_column_order(tmp_path: Path, monkeypatch) -> None:
    rows = [{"layer": 0, "logit lens": 16.04, "head": "L0H1"}, {"layer": 1, "logit lens": 3.861, "head": "L1H5"}]
    assert format_table(rows, digits=2).splitlines() == [
        "| layer | logit lens | head |", "|---|---|---|", "| 0 | 16.04 | L0H1 |", "| 1 | 3.86 | L1H5 |"]
    with pytest.raises(ValueError, match="every row needs the columns"):
        format_table([{"a": 1}, {"b": 2}], digits=1)
    monkeypatch.setenv(MODE_VARIABLE, "write")
    Results("04_logit_lens", directory=tmp_path).record_table("kl", rows, digits=2)
    assert lookup("04_logit_lens/kl", directory=tmp_path) == format_table(rows, digits=2)


def test_learners_and_other_models_neither_write_nor_check(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(MODE_VARIABLE, raising=False)
    assert Results("04_logit_lens", directory=tmp_path).record("x", 1.0, digits=1) == "1.0"
    monkeypatch.setenv(MODE_VARIABLE, "check")
    assert Results("04_logit_lens", model="gpt2", directory=tmp_path).record("x", 2.0, digits=1) == "2.0"
    assert not list(tmp_path.iterdir())
    monkeypatch.setenv(MODE_VARIABLE, "always")
    with pytest.raises(ValueError, match="'write', 'check' or leave it unset"):
        Results("04_logit_lens", directory=tmp_path).record("x", 1.0, digits=1)


def test_bad_chapters_keys_and_references_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a chapter slug"):
        Results("logit lens")
    with pytest.raises(ValueError, match="lower-case letters"):
        Results("04_logit_lens", directory=tmp_path).record("KL layer 0", 1.0, digits=1)
    with pytest.raises(KeyError, match="<chapter>/<key>"):
        lookup("kl_layer_0", directory=tmp_path)
    with pytest.raises(KeyError, match="not recorded in .*04_logit_lens.json.*store-outputs"):
        lookup("04_logit_lens/kl_layer_0", directory=tmp_path)


def _references() -> list[tuple[str, str]]:
    pages = [(p.name, p.read_text()) for p in sorted((ROOT / "book").glob("*.md"))]
    return [(name, role or table) for name, text in pages for role, table in ROLE.findall(text)]


def test_every_quoted_result_is_recorded() -> None:
    missing = []
    for page, reference in _references():
        try:
            lookup(reference)
        except KeyError as error:
            missing.append(f"{page}: {error.args[0]}")
    assert not missing, "\n".join(missing)


def test_store_outputs_writes_and_the_build_checks() -> None:
    """store-outputs runs kernels with COURSE_RESULTS=write, make with =check; other runs pass neither."""
    from utils.notebooks.execute import kernel_env

    assert "COURSE_RESULTS := check" in (ROOT / "Makefile").read_text()
    assert MODE_VARIABLE not in kernel_env() and kernel_env(COURSE_RESULTS="write")[MODE_VARIABLE] == "write"
    assert RESULTS_DIR == ROOT / "book" / "results"


#: Numbers of the solution notebooks' prose that no model result determines (a method's constant,
#: a threshold, a size the lab chose), per chapter: the others must be recorded results.
NOT_RESULTS: dict[str, set[str]] = {
    "00_course_model": {"0.5"},                   # the induction-score threshold of the phase-change test
    "01_prompting": {"100 %", "1.96", "1.64", "95 %"},  # a parser's guarantee, normal quantiles (95 %, 90 %)
    "02_lora": {"1,200"},                         # the shipped adapter's training steps (its recipe)
    "04_logit_lens": {"90 %"},                    # the share of prompts a test requires
    "05_steering_caa": {"10 %"},                  # the bound a test puts on CAA's norm against the stream's
    "06_sparse_autoencoders": {"0.9"},            # the AUROC a latent needs for a label
    "07_circuits": {"0.9", "0.5", "2.0", "1.25"},  # the labelling threshold, chance AUROC, a hint's worked example
}


def test_every_number_in_a_notebooks_prose_is_a_recorded_result() -> None:
    """A notebook's markdown quotes a measurement only as the chapter's recorded text, so that a
    retrained model that moves it fails here until the sentence is rewritten (the pages use roles)."""
    stale = []
    for notebook in sorted((ROOT / "solutions").glob("*.ipynb")):
        chapter = notebook.stem
        allowed = recorded_numbers(chapter) | NOT_RESULTS.get(chapter, set())
        for index, cell in enumerate(json.loads(notebook.read_text())["cells"]):
            if cell["cell_type"] == "markdown":
                stale += [f"{chapter} cell {index}: {number}" for number in quoted_numbers("".join(cell["source"]))
                          if number not in allowed]
    assert not stale, "numbers that are not recorded results of their chapter:\n" + "\n".join(stale)


def test_every_recorded_result_is_quoted_by_its_page() -> None:
    """A result no page quotes is a leftover of an old story (a retrain that rewrote a section must drop its keys)."""
    pages = "".join(page.read_text() for page in (ROOT / "book").glob("*.md"))
    unquoted = [f"{path.stem}/{key}" for path in sorted(RESULTS_DIR.glob("*.json"))
                for key in json.loads(path.read_text()) if f"{path.stem}/{key}" not in pages]
    assert not unquoted, "recorded but quoted nowhere (remove the record and the key): " + ", ".join(unquoted)


def test_quoted_numbers_skip_code_maths_and_exercise_numbers() -> None:
    assert quoted_numbers("Exercise 1.7: `top_p=0.9` and $\\alpha = 4.0$ leave 0.56 and 6 %") == ["0.56", "6 %"]
    stored = Results("00_course_model").stored()
    assert recorded_numbers("00_course_model") >= {stored["vocabulary"], f"{stored['sequence_percent']} %"}
