"""Progress of a long command on a terminal's stderr (`certsync reconcile`): one line, redrawn at most
ten times a second, cleared at the end. Implements `shared.reconciliation.reconcile.Progress`; a
progress library (tqdm, rich) could stand in behind the same three methods."""

from __future__ import annotations

import time
from typing import TextIO


class TerminalProgress:
    """`<what> <done>/<total> (<percent>%)` redrawn in place on `stream` (a terminal)."""

    def __init__(self, stream: TextIO, what: str, interval: float = 0.1) -> None:
        self._stream = stream
        self._what = what
        self._interval = interval
        self._total = 0
        self._done = 0
        self._drawn = 0.0
        self._shown = False

    def add_total(self, count: int) -> None:
        self._total += count
        self._draw(force=True)

    def advance(self, count: int) -> None:
        self._done += count
        self._draw(force=self._done >= self._total)

    def close(self) -> None:
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._shown = False

    def _draw(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._drawn < self._interval:
            return
        self._drawn = now
        percent = f" ({100 * self._done // self._total}%)" if self._total else ""
        self._stream.write(f"\r\x1b[K{self._what} {self._done}/{self._total}{percent}")
        self._stream.flush()
        self._shown = True
