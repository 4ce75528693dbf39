"""Time, one way: the clock, the ISO 8601 formatter and parser, and the HTTP Retry-After header.

Every timestamp certsync writes (audit rows, job messages, status snapshots, notices, reports) is UTC with a
trailing `Z`, formatted by `format_time`; every one it reads (Event Grid, Key Vault, ARM, its own files) goes
through `parse_time`, which also takes Azure's 7 fractional digits. `utc_now` is the one clock; code that
must be testable at a fixed time takes a `Clock` and defaults to it. Pure standard library.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from typing import Literal

Clock = Callable[[], dt.datetime]

_BEYOND_MICROSECONDS = re.compile(r"(\.\d{6})\d+")


def utc_now() -> dt.datetime:
    """Now, as an aware UTC datetime: the one clock."""
    return dt.datetime.now(dt.timezone.utc)


def format_time(at: dt.datetime, timespec: Literal["auto", "seconds", "microseconds"] = "auto") -> str:
    """`at` in UTC as ISO 8601 with a trailing Z (`2026-12-03T07:00:00Z`); microseconds only when present
    (`auto`) or always, or never (`seconds`). A naive datetime is taken as UTC."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.timezone.utc)
    return at.astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat(timespec=timespec) + "Z"


def parse_time(text: str) -> dt.datetime | None:
    """An ISO 8601 time as Azure writes it (a trailing Z, 7 fractional digits); None for blank text.

    A time without an offset is taken as UTC; an offset is kept. Raises ValueError when the text is
    not ISO 8601, so each caller words its own one-line error.
    """
    text = text.strip()
    if not text:
        return None
    # Azure writes 7 fractional digits and a Z, which Python 3.10's fromisoformat refuses; keep microseconds.
    text = _BEYOND_MICROSECONDS.sub(r"\1", text, count=1)
    stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)


def retry_after_seconds(value: str | None, now: dt.datetime) -> float | None:
    """A Retry-After header as seconds from `now`: delay-seconds (RFC 9110 says whole; a fraction is taken
    too) or an HTTP date, never below 0; None when absent, not finite or unreadable. Used by every client
    that honours it (Azure Automation over ARM, the webhooks)."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        import email.utils  # lazily: only Retry-After needs it, and it costs `certsync name` 14 ms

        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" in the date: UTC, as every HTTP date is
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - now).total_seconds())
