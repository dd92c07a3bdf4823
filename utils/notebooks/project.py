"""The repository's metadata that notebooks depend on: where the checkout is, and the Colab cell.

The repository URL and the version are written in ONE place, ``pyproject.toml``
(``[project] version`` and ``[project.urls] Repository``). The first cell of every notebook
(tagged ``colab-install``) is generated from them by :func:`colab_install_source`; the book's
``_config.yml`` repeats the URL (``repository.url``), and ``python -m utils.notebooks lint``
checks that the two agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The checkout this package lives in (``utils/notebooks/project.py`` -> the repository root).
PACKAGE_ROOT = Path(__file__).resolve().parents[2]

SOLUTIONS_DIR = "solutions"
LABS_DIR = "labs"
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"


class ProjectError(RuntimeError):
    """The checkout is missing a file the notebook tools need, or it is malformed."""


@dataclass(frozen=True)
class ProjectInfo:
    """What the notebooks need to know about the course package."""

    name: str        # the distribution name, e.g. "inside-llms"
    version: str     # e.g. "0.1.0"
    repository: str  # e.g. "https://github.com/inside-llms/inside-llms"

    @property
    def pip_requirement(self) -> str:
        """``inside-llms @ git+https://github.com/inside-llms/inside-llms@v0.1.0``: the pinned course."""
        return f"{self.name} @ git+{self.repository}@v{self.version}"


def default_root() -> Path:
    """The checkout that holds this package, else the current directory (if it has a pyproject.toml)."""
    if (PACKAGE_ROOT / "pyproject.toml").is_file():
        return PACKAGE_ROOT
    return Path.cwd()


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file (``tomllib`` on Python >= 3.11, ``tomli`` before)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            return _read_simple_toml(path)
    with path.open("rb") as handle:
        return tomllib.load(handle)


def _read_simple_toml(path: Path) -> dict[str, Any]:
    """A fallback reader for ``key = "string"`` lines under ``[table]`` headers (enough for our keys)."""
    data: dict[str, Any] = {}
    table = data
    for line in path.read_text(encoding="utf-8").splitlines():
        header = re.match(r"^\s*\[([^\[\]]+)\]\s*$", line)
        if header:
            table = data
            for part in header.group(1).strip().split("."):
                table = table.setdefault(part.strip(), {})
            continue
        pair = re.match(r'^\s*([A-Za-z0-9_-]+)\s*=\s*"([^"]*)"\s*$', line)
        if pair:
            table[pair.group(1)] = pair.group(2)
    return data


def project_info(root: Path) -> ProjectInfo:
    """Read the package name, version and repository URL from ``root/pyproject.toml``."""
    path = Path(root) / "pyproject.toml"
    if not path.is_file():
        raise ProjectError(f"{path} not found: run the notebook tools from a checkout of the course repository "
                           "(or pass --root DIR)")
    project = read_toml(path).get("project", {})
    name, version = project.get("name"), project.get("version")
    repository = (project.get("urls") or {}).get("Repository")
    missing = [key for key, value in (("[project] name", name), ("[project] version", version),
                                      ("[project.urls] Repository", repository)) if not value]
    if missing:
        raise ProjectError(f"{path}: {', '.join(missing)} missing; the Colab cell of every notebook is generated from them")
    repository = str(repository).rstrip("/")
    if not re.match(r"^https://\S+$", repository):
        raise ProjectError(f"{path}: [project.urls] Repository must be an https URL, got {repository!r}")
    return ProjectInfo(name=str(name), version=str(version), repository=repository.removesuffix(".git"))


def colab_install_source(info: ProjectInfo) -> str:
    """The source of the ``colab-install`` cell: pip-install the pinned course, in Colab only.

    Plain Python (no ``%pip``), so the cell also runs under nbval, in the book build and in a
    local JupyterLab, where it does nothing.
    """
    return (
        "# Runs only in Colab: installs the course package (pinned). Elsewhere it does nothing.\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        "    import subprocess\n"
        "\n"
        f'    course = "{info.pip_requirement}"\n'
        '    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", course])'
    )


def book_repository_url(root: Path) -> str | None:
    """``repository.url`` from ``root/_config.yml`` (None when the file or the key is missing)."""
    path = Path(root) / "_config.yml"
    if not path.is_file():
        return None
    import yaml  # installed with jupyter-book; only the lint needs it

    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    url = (config.get("repository") or {}).get("url")
    return str(url).rstrip("/") if url else None


def repository_problems(root: Path) -> list[str]:
    """Where the checkout disagrees with ``pyproject.toml`` about the repository URL or the version."""
    root = Path(root)
    info = project_info(root)
    problems = []
    config = root / "_config.yml"
    book_url = book_repository_url(root)
    if config.is_file():
        if book_url is None:
            problems.append(f"_config.yml: repository.url is missing; set it to {info.repository} "
                            "([project.urls] Repository in pyproject.toml)")
        elif book_url.removesuffix(".git") != info.repository:
            problems.append(f"_config.yml: repository.url is {book_url} but pyproject.toml's "
                            f"[project.urls] Repository is {info.repository}; make them equal (the book's "
                            "Colab badges use the first, the notebooks' install cell the second)")
        for url in sorted(set(re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", config.read_text(encoding="utf-8")))):
            if url.removesuffix(".git") != info.repository and not url.startswith(info.repository + "/"):
                problems.append(f"_config.yml mentions {url}, not the repository {info.repository}")
    init = root / "utils" / "__init__.py"
    if init.is_file():
        match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', init.read_text(encoding="utf-8"), flags=re.M)
        if match and match.group(1) != info.version:
            problems.append(f"utils/__init__.py: __version__ is {match.group(1)} but pyproject.toml's version is "
                            f"{info.version}; make them equal")
    return problems
