"""Progress bars for long work, and the one switch that turns them off (pages of the book show none)."""
from __future__ import annotations

import os

PROGRESS_ENV = "DIFFPATH_PROGRESS"  # "0": no progress bars (the book runner sets it; pages show no bar lines)


def progress_enabled(progress: bool = True) -> bool:
    """``progress`` unless the environment turns bars off (``DIFFPATH_PROGRESS=0``)."""
    return bool(progress) and os.environ.get(PROGRESS_ENV, "1") != "0"


def progress_bar(iterable=None, *, progress: bool = True, **kwargs):
    """A tqdm bar (notebook widget or terminal line), disabled when :func:`progress_enabled` says so."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not progress_enabled(progress), dynamic_ncols=True, **kwargs)
