"""The course's promise: a solution notebook runs unchanged on another model by changing `MODEL`.

Each solution notebook is executed with its parameters cell set to a tiny random GPT-2 or Llama
checkpoint saved locally in Hugging Face format (the format `load_model("gpt2")` downloads), with
the course tokenizer so that the world's prompts tokenize as usual. Outputs are not compared: a
random model's numbers mean nothing; every cell must run (the guards `if MODEL == "course"`
included).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

from utils.models import COURSE_MODEL_DIR, load_tokenizer, tiny_random_model
from utils.notebooks.execute import execute_notebook, failing_cell

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def other_checkpoint(request, tmp_path_factory) -> Path:
    """A tiny random model of another family, with the course tokenizer, in a local directory."""
    directory = tmp_path_factory.mktemp(f"tiny_{request.param}")
    tiny_random_model(request.param, vocab_size=len(load_tokenizer("course"))).save_pretrained(directory)
    for name in TOKENIZER_FILES:
        shutil.copy(COURSE_MODEL_DIR / name, directory / name)
    return directory


def with_model(nb: nbformat.NotebookNode, model: str) -> nbformat.NotebookNode:
    """``nb`` with its ``parameters`` cell replaced by ``MODEL = model``."""
    (cell,) = [cell for cell in nb.cells if "parameters" in cell.metadata.get("tags", [])]
    cell.source = f"MODEL = {model!r}"
    return nb


@pytest.mark.parametrize("path", SOLUTIONS, ids=[path.stem for path in SOLUTIONS])
def test_solution_notebook_runs_on_another_model(path: Path, other_checkpoint: Path) -> None:
    nb = with_model(nbformat.read(path, as_version=4), str(other_checkpoint))
    execute_notebook(nb, cwd=path.parent, timeout=300, allow_errors=True)
    failure = failing_cell(nb)
    assert failure is None, f"{path.name} cell {failure[0]} failed with MODEL = {other_checkpoint}: {failure[1]}"
