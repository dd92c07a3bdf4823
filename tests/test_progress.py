"""utils.progress: the progress bar each place gets (a widget, a text bar on stdout, or on stderr)."""

from __future__ import annotations

import tqdm.notebook
import tqdm.std

from utils.progress import StdoutTqdm, bar_class, in_jupyter_kernel, tqdm as course_tqdm, trange


def test_each_place_gets_its_bar():
    assert bar_class(in_kernel=True, widgets=True) is tqdm.notebook.tqdm      # Colab, JupyterLab with widgets
    assert bar_class(in_kernel=True, widgets=False) is StdoutTqdm            # the book build, nbval
    assert bar_class(in_kernel=False, widgets=True) is tqdm.std.tqdm         # a terminal
    assert not in_jupyter_kernel() and course_tqdm is tqdm.std.tqdm          # pytest is no kernel


def test_the_kernel_text_bar_writes_to_stdout_and_ends_on_its_last_state(capsys):
    for _ in StdoutTqdm(range(5), desc="fixture", mininterval=0):
        pass
    printed = capsys.readouterr()
    assert printed.err == "" and printed.out.rsplit("\r", 1)[-1].startswith("fixture: 100%|")


def test_trange_is_tqdm_over_a_range(capsys):
    assert list(trange(2, 5, disable=True)) == [2, 3, 4]
