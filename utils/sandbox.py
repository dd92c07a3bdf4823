"""Run untrusted code (a submitted notebook, its exercises) in a bubblewrap sandbox.

The sandbox (``bwrap``, Debian's ``bubblewrap`` package) gives the program a view of the machine
it cannot leave:

- the system (``/usr``, the dynamic linker's ``/etc`` files), Python and the virtual environment,
  read-only;
- the course package as **bytecode only** (a copy without the ``.py`` files, made once per
  grading run by :func:`sourceless_copy`), so a submission cannot read the reference solutions
  out of the library (except the modules that open nnsight traces, :func:`needs_source`, which
  nnsight must read); nothing else of the course (no ``solutions/``, no ``.git``, no built site);
- one writable folder (the submission's), plus ``/dev`` and a private ``/proc``;
- no network, no other process (new user, PID, IPC, network and UTS namespaces), and it dies
  with its parent;
- limits (``prlimit``): address space, processes and threads, core dumps off, file size.

Whatever the program does, through Python, C extensions, ``mmap``, ``ctypes``, links or child
processes, the kernel refuses every write outside that folder (a read-only mount, or no mount at
all): nothing here depends on the program's cooperation.
"""

from __future__ import annotations

import ast
import functools
import os
import py_compile
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: What the sandbox shows of ``/etc``: what the dynamic linker, Python and the libraries read.
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "passwd", "group", "nsswitch.conf", "hosts",
             "localtime", "alternatives", "mime.types")
#: The system's top-level folders shown read-only (or as the symbolic links they are, on merged-/usr systems).
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib64", "lib32")
#: The methods of an nnsight model that open a tracing context (``with nn_model.trace(...):``). nnsight
#: compiles the body of such a ``with`` block from the source of the function around it, so a module
#: that opens one stays as source in the sandbox (:func:`needs_source`).
NNSIGHT_CONTEXTS = frozenset({"trace", "generate", "scan", "session", "edit"})
INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: `sudo apt-get install bubblewrap`; Fedora: `dnf install bubblewrap`)"


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create namespaces here; the message says why and what to do."""


@dataclass(frozen=True)
class Limits:
    """What a sandboxed program may use: ``memory`` bytes of address space, ``processes`` (threads
    count too), ``file_size`` bytes per file written."""

    memory: int = 12 * 2**30
    processes: int = 512
    file_size: int = 4 * 2**30

    def prlimit(self) -> list[str]:
        """The ``prlimit`` command line prefix that sets these limits for the program it starts."""
        return ["prlimit", f"--as={self.memory}", f"--nproc={self.processes}", f"--fsize={self.file_size}",
                "--core=0", "--"]


@dataclass(frozen=True)
class Sandbox:
    """A sandbox around one writable folder. ``package`` maps the course package's folder (as
    Python imports it) to the sourceless copy shown in its place."""

    writable: Path
    package: tuple[Path, Path] | None = None
    limits: Limits = Limits()

    def command(self, argv: Iterable[str]) -> list[str]:
        """The full command line that runs ``argv`` in this sandbox (working folder: the writable one)."""
        return [*self.limits.prlimit(), *bwrap_arguments(self.writable, self.package), "--", *argv]


def bwrap_arguments(writable: Path, package: tuple[Path, Path] | None) -> list[str]:
    """bubblewrap's options for the view described in the module's docstring."""
    arguments = [find_bwrap(), "--unshare-all", "--die-with-parent", "--cap-drop", "ALL", "--hostname", "sandbox",
                 "--dev", "/dev", "--proc", "/proc",
                 "--setenv", "JPY_PARENT_PID", "1"]  # no parent to poll: the kernel's is outside the PID namespace
    for name in SYSTEM_DIRS:
        path = Path("/") / name
        if path.is_symlink():
            arguments += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            arguments += ["--ro-bind", str(path), str(path)]
    for name in ETC_FILES:
        if (Path("/etc") / name).exists():
            arguments += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    for prefix in dict.fromkeys([sys.base_prefix, sys.prefix]):  # the Python installation, then the venv
        if not prefix.startswith("/usr/"):
            arguments += ["--ro-bind", prefix, prefix]
    if package is not None:
        source, copy = package
        arguments += ["--ro-bind", str(copy), str(source)]
    arguments += ["--bind", str(writable), str(writable), "--remount-ro", "/", "--chdir", str(writable)]
    return arguments


@functools.cache
def find_bwrap() -> str:
    """The path of ``bwrap``; SandboxUnavailable (saying how to install it) when it is missing."""
    found = shutil.which("bwrap")
    if found is None:
        raise SandboxUnavailable(f"the grading sandbox needs bubblewrap (`bwrap`), which is not installed: {INSTALL_HINT}")
    if shutil.which("prlimit") is None:
        raise SandboxUnavailable("the grading sandbox needs `prlimit` (Debian's util-linux package) to set its limits")
    return found


@functools.cache
def check_sandbox() -> None:
    """Start ``true`` in a sandbox once; SandboxUnavailable with bubblewrap's own words when that fails
    (for example user namespaces switched off in a container)."""
    probe = Path(os.environ.get("TMPDIR", "/tmp")).resolve()
    run = subprocess.run(Sandbox(probe).command(["true"]), capture_output=True, text=True, timeout=60)
    if run.returncode != 0:
        raise SandboxUnavailable(f"bubblewrap cannot create a sandbox here ({run.stderr.strip() or run.returncode}); "
                                 "on Debian/Ubuntu allow unprivileged user namespaces "
                                 "(`sysctl kernel.unprivileged_userns_clone=1`), or run the grader in a VM")


def needs_source(path: Path, package_root: Path) -> bool:
    """Whether the module at ``path`` must stay as source in the sandbox: the package's own
    ``__init__.py`` (an editable install's import finder looks for it), and every module with a
    ``with`` block that opens an nnsight context (:data:`NNSIGHT_CONTEXTS`)."""
    if path == package_root / "__init__.py":
        return True
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.With, ast.AsyncWith)) and any(
                isinstance(item.context_expr, ast.Call) and isinstance(item.context_expr.func, ast.Attribute)
                and item.context_expr.func.attr in NNSIGHT_CONTEXTS for item in node.items):
            return True
    return False


def sourceless_copy(package: Path, destination: Path) -> Path:
    """Copy the package folder ``package`` to ``destination`` with every ``.py`` file compiled to a
    ``.pyc`` beside it and removed (Python imports such "sourceless" modules), except those that
    :func:`needs_source`; data files are copied as they are. Returns ``destination``."""
    package, destination = Path(package), Path(destination)
    if not (package / "__init__.py").is_file():
        raise ValueError(f"{package} is not a Python package (it has no __init__.py)")
    shutil.copytree(package, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for source in destination.rglob("*.py"):
        if needs_source(source, destination):
            continue
        py_compile.compile(str(source), cfile=str(source.with_suffix(".pyc")), dfile=str(package / source.relative_to(destination)),
                           doraise=True)
        source.unlink()
    return destination
