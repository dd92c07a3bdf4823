"""The course's notebook pipeline: solution notebooks in, exercise notebooks (labs) out.

Command line (``python -m utils.notebooks --help``)::

    python -m utils.notebooks sync                 # rewrite the colab-install cell of solutions/*.ipynb
    python -m utils.notebooks build-labs [--check] # labs/NN_slug.ipynb from solutions/NN_slug.ipynb
    python -m utils.notebooks store-outputs solutions/00_course_model.ipynb
    python -m utils.notebooks format [--check]     # ruff format the code cells (88 columns)
    python -m utils.notebooks lint                 # the conventions, on every solution notebook

Modules: :mod:`.project` (pyproject.toml, the Colab cell), :mod:`.cells` (tags, exercise
headings, solution markers), :mod:`.labs` (build-labs), :mod:`.sync`, :mod:`.execute`
(store-outputs), :mod:`.formatting` (format), :mod:`.lint`.
"""

from utils.notebooks.cells import NotebookError, exercise_scopes, read_notebook
from utils.notebooks.formatting import CODE_LINE_LENGTH, long_lines, ruff_format
from utils.notebooks.labs import build_lab, generate_labs, stale_labs, write_labs
from utils.notebooks.lint import lint_course, lint_notebook
from utils.notebooks.project import ProjectError, colab_install_source, project_info

__all__ = [
    "CODE_LINE_LENGTH",
    "NotebookError",
    "ProjectError",
    "build_lab",
    "colab_install_source",
    "exercise_scopes",
    "generate_labs",
    "lint_course",
    "lint_notebook",
    "long_lines",
    "project_info",
    "read_notebook",
    "ruff_format",
    "stale_labs",
    "write_labs",
]
