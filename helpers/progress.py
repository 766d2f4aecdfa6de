"""Progress bars that read well both live and in a committed notebook.

In JupyterLab a loop shows tqdm's widget bar. In a headless run (`make run`, `make test`, `make bench`,
which set `COURSE_HEADLESS=1`) a widget is saved only as its text fallback, `0%| 0/8`, which looks as if
nothing ran; there the bar prints one line instead, when the loop ends, with the count, elapsed time and
rate: `fit: 100%|██████████| 8/8 [00:12<00:00, 1.50s/it]`.
"""
from __future__ import annotations

import os
import sys

from tqdm.std import tqdm as _text_tqdm


def headless() -> bool:
    """True in a scripted run (`COURSE_HEADLESS=1`): progress prints one final line instead of a live bar."""
    return os.environ.get("COURSE_HEADLESS", "") not in ("", "0")


class FinalLine(_text_tqdm):
    """A tqdm that prints nothing while it runs and its final state, on one line of stdout, when closed."""

    def __init__(self, *args, **kwargs):
        kwargs.update(file=sys.stdout, mininterval=float("inf"), maxinterval=float("inf"), delay=float("inf"),
                      leave=True, dynamic_ncols=False, ncols=kwargs.get("ncols") or 90)
        super().__init__(*args, **kwargs)

    def refresh(self, *args, **kwargs):
        """No live redraws headless: `set_postfix()` / `set_description()` would print a `0%|` line."""
        return None

    def close(self):
        if self.disable:
            return
        line = self.format_meter(**self.format_dict)  # rate: overall average, since no refresh ever ran
        super().close()  # prints nothing: the bar was never displayed
        print(line, file=sys.stdout, flush=True)


def progress_bar(iterable=None, **kwargs):
    """`for x in progress_bar(xs, desc="fit"):` — tqdm's arguments; a widget live, one final line headless."""
    if headless():
        return FinalLine(iterable, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)
