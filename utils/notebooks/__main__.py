"""``python -m utils.notebooks {sync,build-labs,store-outputs,format,lint}``: see ``utils/notebooks/__init__.py``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.notebooks.cells import NotebookError
from utils.notebooks.execute import SANITIZER
from utils.notebooks.formatting import CODE_LINE_LENGTH, ruff_format
from utils.notebooks.project import LABS_DIR, SOLUTIONS_DIR, ProjectError, default_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.notebooks",
                                     description="The course's notebook pipeline: solution notebooks in, labs out.")
    parser.add_argument("--root", type=Path, default=None,
                        help="the course checkout (default: the one this package is in)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = commands.add_parser("build-labs", help=f"generate {LABS_DIR}/NN_slug.ipynb from {SOLUTIONS_DIR}/NN_slug.ipynb")
    build.add_argument("--check", action="store_true", help="write nothing; exit 1 listing labs that are out of date")
    build.add_argument("--solutions", type=Path, default=None, help=f"solutions folder (default ROOT/{SOLUTIONS_DIR})")
    build.add_argument("--labs", type=Path, default=None, help=f"labs folder (default ROOT/{LABS_DIR})")

    sync = commands.add_parser("sync", help="rewrite the colab-install cell of every solution notebook from pyproject.toml")
    sync.add_argument("--check", action="store_true", help="write nothing; exit 1 listing notebooks that are out of date")
    sync.add_argument("--solutions", type=Path, default=None, help=f"solutions folder (default ROOT/{SOLUTIONS_DIR})")

    store = commands.add_parser("store-outputs", help="execute notebooks; keep outputs only on # NBVAL_CHECK_OUTPUT cells")
    store.add_argument("notebooks", nargs="+", type=Path, metavar="NOTEBOOK")
    store.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    store.add_argument("--raw", action="store_true",
                       help=f"store outputs as they are (default: sanitized with ROOT/{SANITIZER} like nbval does)")

    format_ = commands.add_parser("format", help=f"ruff format the code cells of the solution notebooks "
                                  f"({CODE_LINE_LENGTH} columns: the site's code width)")
    format_.add_argument("notebooks", nargs="*", type=Path, metavar="NOTEBOOK", help=f"default: {SOLUTIONS_DIR}/*.ipynb")
    format_.add_argument("--check", action="store_true", help="write nothing; exit 1 listing notebooks to format")

    lint = commands.add_parser("lint", help="check the solution notebooks against the course's conventions")
    lint.add_argument("notebooks", nargs="*", type=Path, metavar="NOTEBOOK", help=f"default: {SOLUTIONS_DIR}/*.ipynb")

    args = parser.parse_args(argv)
    root = (args.root or default_root()).resolve()
    try:
        return COMMANDS[args.command](args, root)
    except (NotebookError, ProjectError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _build_labs(args: argparse.Namespace, root: Path) -> int:
    from utils.notebooks.labs import stale_labs, write_labs

    if args.check:
        problems = stale_labs(root, args.solutions, args.labs)
        for problem in problems:
            print(problem)
        if problems:
            print("labs are out of date: run `make labs` (python -m utils.notebooks build-labs)", file=sys.stderr)
            return 1
        print("labs are up to date")
        return 0
    results = write_labs(root, args.solutions, args.labs)
    for result, changed in results:
        exercises = ", ".join(result.exercises) or "none"
        print(f"{_show(result.lab, root)}: {'written' if changed else 'up to date'} (exercises: {exercises})")
    if not results:
        print(f"no solution notebooks ({SOLUTIONS_DIR}/NN_slug.ipynb) yet: nothing to build")
    return 0


def _sync(args: argparse.Namespace, root: Path) -> int:
    from utils.notebooks.sync import sync_solutions

    changed = sync_solutions(root, args.solutions, check=args.check)
    for path, what in changed:
        print(f"{_show(path, root)}: colab-install cell {what if not args.check else 'out of date'}")
    if args.check and changed:
        print("run `python -m utils.notebooks sync`", file=sys.stderr)
        return 1
    if not changed:
        print("colab-install cells are up to date")
    return 0


def _store_outputs(args: argparse.Namespace, root: Path) -> int:
    from utils.notebooks.execute import store_outputs

    sanitizer = None if args.raw else root / SANITIZER
    for path in args.notebooks:
        stored = store_outputs(path, timeout=args.timeout, sanitizer=sanitizer)
        print(f"{path}: executed; outputs kept on {stored} '# NBVAL_CHECK_OUTPUT' cell{'s' if stored != 1 else ''}")
    return 0


def _format(args: argparse.Namespace, root: Path) -> int:
    from utils.notebooks.labs import solution_notebooks

    notebooks = args.notebooks or solution_notebooks(root / SOLUTIONS_DIR)
    changed = ruff_format(notebooks, check=args.check)
    for path in changed:
        print(f"{_show(path, root)}: {'would be reformatted' if args.check else 'formatted'}")
    if args.check and changed:
        print("run `python -m utils.notebooks format`", file=sys.stderr)
        return 1
    print(f"{len(notebooks) - len(changed)} of {len(notebooks)} notebooks already formatted")
    return 0


def _lint(args: argparse.Namespace, root: Path) -> int:
    from utils.notebooks.lint import lint_course

    problems = lint_course(root, args.notebooks or None)
    for problem in problems:
        print(problem)
    if problems:
        print(f"lint: {len(problems)} problem{'s' if len(problems) != 1 else ''}", file=sys.stderr)
        return 1
    print("lint: no problems")
    return 0


def _show(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)


COMMANDS = {"build-labs": _build_labs, "sync": _sync, "store-outputs": _store_outputs, "format": _format,
            "lint": _lint}

if __name__ == "__main__":
    sys.exit(main())
