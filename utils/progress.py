"""Progress bars that suit where the code runs: the course's ``tqdm`` and ``trange``.

``tqdm.auto`` picks tqdm's widget bar in any Jupyter kernel, and where ipywidgets is missing (the
book build, nbval, a bare kernel) it warns "IProgress not found" on stderr and falls back to a
text bar, also on stderr. The executed pages of the website must show no stderr (the build fails
on it), so the course chooses for itself:

- a Jupyter kernel with ipywidgets (Colab, JupyterLab with widgets): the widget bar;
- a Jupyter kernel without it: tqdm's text bar on **stdout**, which the book shows collapsed to
  its last state (book/_ext/course_ext.py folds the carriage returns as a terminal would);
- anywhere else (a terminal, a script): tqdm's text bar on stderr, as usual.

Use them as tqdm's own: ``for batch in tqdm(batches, desc="caching"): ...``.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

from tqdm.std import tqdm as _text_tqdm


def in_jupyter_kernel() -> bool:
    """Whether this process is an IPython kernel (Jupyter, Colab, nbclient), not a terminal."""
    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and "IPKernelApp" in shell.config


def has_widgets() -> bool:
    """Whether ipywidgets, which tqdm's notebook bar draws with, can be imported."""
    return importlib.util.find_spec("ipywidgets") is not None


class StdoutTqdm(_text_tqdm):  # type: ignore[misc]
    """tqdm's text bar, written to stdout unless a ``file`` is given."""

    def __init__(self, *args: Any, file: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, file=file if file is not None else sys.stdout, **kwargs)


def bar_class(in_kernel: bool, widgets: bool) -> type[_text_tqdm]:
    """The tqdm class for a process that is (or not) a Jupyter kernel, with (or without) ipywidgets."""
    if in_kernel and widgets:
        from tqdm.notebook import tqdm as notebook_tqdm

        return notebook_tqdm
    return StdoutTqdm if in_kernel else _text_tqdm


tqdm = bar_class(in_jupyter_kernel(), has_widgets())


def trange(*args: int, **kwargs: Any) -> Any:
    """``tqdm(range(*args), **kwargs)``, with the bar chosen above."""
    return tqdm(range(*args), **kwargs)


__all__ = ["StdoutTqdm", "bar_class", "has_widgets", "in_jupyter_kernel", "tqdm", "trange"]
