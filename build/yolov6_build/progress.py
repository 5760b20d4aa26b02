"""Progress of long work, visible wherever its output goes.

On a terminal a tqdm bar redraws in place. Elsewhere (``make demo > log``, CI, ``nohup``) tqdm's own
default is to show nothing, which leaves minutes of silence; there the same bar prints as a plain
line every ``LOG_INTERVAL_S`` seconds and once at the end, so a log shows steps, rate and time left.
"""

from __future__ import annotations

import sys
from typing import Iterable, TextIO

LOG_INTERVAL_S = 20.0


class _LineWriter:
    """A file for tqdm that turns its carriage-return redraws into whole lines (blank ones dropped)."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, text: str) -> None:
        for part in text.replace("\r", "\n").split("\n"):
            if part.strip():
                self._stream.write(part.rstrip() + "\n")

    def flush(self) -> None:
        self._stream.flush()


def progress(iterable: Iterable | None = None, *, desc: str, total: int | None = None, unit: str = "it",
             enabled: bool = True, stream: TextIO | None = None, **options):
    """A tqdm bar over ``iterable`` (or updated by hand up to ``total``); ``enabled=False`` shows nothing."""
    from tqdm import tqdm

    stream = stream or sys.stderr
    if not enabled:
        return tqdm(iterable, total=total, disable=True)
    if stream.isatty():
        return tqdm(iterable, desc=desc, total=total, unit=unit, file=stream, leave=False, **options)
    return tqdm(iterable, desc=desc, total=total, unit=unit, file=_LineWriter(stream), leave=True,
                mininterval=LOG_INTERVAL_S, maxinterval=LOG_INTERVAL_S, ascii=True, ncols=100, **options)
