"""Pre-flight checks run by `make` before it touches the virtual environment.

Usage:
    python3 scripts/check_env.py            # is this Python new enough, can it make a venv?
    python3 scripts/check_env.py pip-failed LOGFILE   # explain a failed `pip install`

Written to run on old interpreters too (no f-strings, no walrus), so that an unsupported
Python fails with one readable line instead of a SyntaxError or a stack trace.
"""
import sys

MIN = (3, 10)
MAX = (3, 12)  # newest minor version the pinned requirements are known to install on

NETWORK_SIGNS = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Connection refused",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "Max retries exceeded",
)
NOT_FOUND_SIGNS = (
    "No matching distribution found",
    "Could not find a version that satisfies",
)


def fail(message):
    sys.stderr.write("error: " + message + "\n")
    sys.exit(1)


def check_python():
    version = sys.version_info[:2]
    found = "%d.%d" % version
    if version < MIN:
        fail(
            "Python %s found (%s); this course needs Python %d.%d-%d.%d. "
            "Install one and run e.g. `make book PYTHON=python3.11`."
            % (found, sys.executable, MIN[0], MIN[1], MAX[0], MAX[1])
        )
    if version > MAX:
        sys.stderr.write(
            "warning: Python %s is newer than the tested %d.%d-%d.%d; "
            "if installing fails, use e.g. `make book PYTHON=python3.11`.\n"
            % (found, MIN[0], MIN[1], MAX[0], MAX[1])
        )
    try:
        import venv  # noqa: F401
        import ensurepip  # noqa: F401
    except ImportError:
        fail(
            "Python %s cannot create virtual environments (no venv/ensurepip); "
            "on Debian/Ubuntu run `apt-get install python3-venv`." % found
        )


def explain_pip_failure(logfile):
    try:
        with open(logfile) as handle:
            log = handle.read()
    except (IOError, OSError):
        log = ""
    if any(sign in log for sign in NETWORK_SIGNS):
        fail(
            "pip could not download the course's requirements: this machine cannot reach "
            "the Python package index (PyPI). `make book` needs network access to PyPI the "
            "first time and whenever requirements.txt changes; nothing else needs network."
        )
    if any(sign in log for sign in NOT_FOUND_SIGNS):
        fail(
            "pip found no installable version of a pinned requirement: either this machine "
            "cannot reach the Python package index (PyPI; `make book` needs it the first time "
            "and whenever requirements.txt changes), or a pin has no wheel for Python %d.%d "
            "(use Python 3.10-3.12)." % sys.version_info[:2]
        )
    fail(
        "`pip install` failed (log: %s). Check the messages above; "
        "delete .venv and run `make book` again to start from scratch." % logfile
    )


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "pip-failed":
        explain_pip_failure(sys.argv[2] if len(sys.argv) > 2 else "")
    else:
        check_python()
