"""Progress of long work on stderr, only when stderr is a terminal: `certsync reconcile` (certificates
checked), `certsync discover` (seconds waited for the job) and the benchmarks. A tqdm bar behind the three
methods of `shared.reconciliation.reconcile.Progress`; redrawn at most ten times a second, cleared at the end,
so that nothing of it is left in a scrollback, a pipe or a log."""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

from shared.reconciliation.reconcile import NO_PROGRESS, Progress


class TerminalProgress:
    """A tqdm bar on `stream`: `<what>: 40%|████      | 48/120 [00:03<00:04, 14.2 cert/s]`."""

    def __init__(self, stream: TextIO, what: str, *, unit: str = "cert", interval: float = 0.1) -> None:
        self._bar = tqdm(
            total=0,
            desc=what,
            unit=unit,
            file=stream,
            mininterval=interval,
            leave=False,  # cleared when closed: the report that follows is the record
            dynamic_ncols=True,
            disable=False,  # tqdm would otherwise decide by itself whether `stream` is a terminal
        )

    def add_total(self, count: int) -> None:
        self._bar.total = (self._bar.total or 0) + count
        self._bar.refresh()

    def advance(self, count: float) -> None:
        self._bar.update(count)

    def close(self) -> None:
        self._bar.close()


def on_stderr(what: str, *, unit: str = "cert", total: int = 0) -> Progress:
    """A bar on stderr when it is a terminal, otherwise nothing (stdout stays the report in every case)."""
    if not sys.stderr.isatty():
        return NO_PROGRESS
    progress = TerminalProgress(sys.stderr, what, unit=unit)
    if total:
        progress.add_total(total)
    return progress
