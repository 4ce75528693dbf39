"""Maintenance windows: when a worker group's servers may be changed (CERTSYNC_MAINTENANCE_WINDOWS).

A window is a weekly span of time in UTC, written `DAY HH:MM-DAY HH:MM` (`Sat 22:00-Sun 04:00`) or
`DAY HH:MM-HH:MM` (`Tue 01:00-03:00`, the same day, or the next when the end is earlier); `daily
HH:MM-HH:MM` stands for the seven of them. Days are English, three letters or whole (`Saturday`), any
case. The setting maps a worker group to its windows, as JSON: `{"hrw-exchange": ["Sat 22:00-Sun 04:00"]}`;
a worker group it does not name may be changed at any time. A plan made outside its group's windows waits
(`waiting-for-window`) and is queued when the next one opens (`next_open`); see `shared.pipeline.process`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from shared.errors import CertsyncError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
WEEK = 7 * 24 * 60  # minutes
_WINDOW = re.compile(
    r"\s*(?P<day>[A-Za-z]+)\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?:(?P<end_day>[A-Za-z]+)\s+)?(?P<end>\d{1,2}:\d{2})\s*\Z"
)
_EXAMPLE = "write e.g. 'Sat 22:00-Sun 04:00', 'Tue 01:00-03:00' or 'daily 01:00-03:00' (UTC)"


class WindowError(CertsyncError):
    """A maintenance window that cannot be read: names it, says how to write one."""


@dataclass(frozen=True)
class Window:
    """One weekly window: minutes from Monday 00:00 UTC at which it opens, and how many it lasts."""

    start: int  # 0 <= start < WEEK
    length: int  # 0 < length <= WEEK
    text: str  # as written

    def contains(self, at: dt.datetime) -> bool:
        return (minute_of_week(at) - self.start) % WEEK < self.length

    def opens_after(self, at: dt.datetime) -> dt.datetime:
        """The next time this window opens at or after `at` (its start, to the minute)."""
        floor = _utc(at).replace(second=0, microsecond=0)
        wait = (self.start - minute_of_week(floor)) % WEEK
        opens = floor + dt.timedelta(minutes=wait)
        return opens if opens >= _utc(at) else opens + dt.timedelta(minutes=WEEK)


def _utc(at: dt.datetime) -> dt.datetime:
    return at.astimezone(dt.timezone.utc) if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)


def minute_of_week(at: dt.datetime) -> int:
    at = _utc(at)
    return at.weekday() * 24 * 60 + at.hour * 60 + at.minute


def _day(name: str, text: str) -> int:
    key = name.lower()
    for days in (DAYS, _FULL_DAYS):
        if key in days:
            return days.index(key)
    raise WindowError(f"maintenance window {text!r}: {name!r} is not a day; {_EXAMPLE}")


def _minutes(clock: str, text: str) -> int:
    hours, minutes = (int(part) for part in clock.split(":"))
    if hours > 24 or minutes > 59 or (hours == 24 and minutes):
        raise WindowError(f"maintenance window {text!r}: {clock} is not a time of day; {_EXAMPLE}")
    return hours * 60 + minutes


def parse_window(text: str) -> tuple[Window, ...]:
    """The window(s) `text` writes: one, or seven for `daily`. Raises `WindowError` naming it."""
    if not isinstance(text, str):
        raise WindowError(f"maintenance window {text!r}: not text; {_EXAMPLE}")
    match = _WINDOW.match(text)
    if match is None:
        raise WindowError(f"maintenance window {text[:80]!r}: {_EXAMPLE}")
    start_at = _minutes(match["start"], text)
    end_at = _minutes(match["end"], text)
    if match["day"].lower() == "daily":
        if match["end_day"]:
            raise WindowError(f"maintenance window {text!r}: a daily window has no end day; {_EXAMPLE}")
        length = (end_at - start_at) % (24 * 60)
        if length == 0:
            raise WindowError(f"maintenance window {text!r}: it opens and closes at the same time; {_EXAMPLE}")
        return tuple(Window((d * 24 * 60 + start_at) % WEEK, length, text) for d in range(7))
    start = _day(match["day"], text) * 24 * 60 + start_at
    if match["end_day"]:
        end = _day(match["end_day"], text) * 24 * 60 + end_at
    else:  # the same day, or the next when the end is earlier
        end = start - start_at + end_at + (24 * 60 if end_at <= start_at else 0)
    length = (end - start) % WEEK or (WEEK if end != start else 0)  # Mon 00:00-Sun 24:00: the whole week
    if length == 0:
        raise WindowError(f"maintenance window {text!r}: it opens and closes at the same time; {_EXAMPLE}")
    return (Window(start % WEEK, length, text),)


def parse_windows(document: str, what: str = "CERTSYNC_MAINTENANCE_WINDOWS") -> dict[str, tuple[Window, ...]]:
    """`{"worker group": ["Sat 22:00-Sun 04:00", ...]}` as JSON text -> worker group (lower case) -> its
    windows. Every error is one line naming `what`, the group and the window."""
    if not document.strip():
        return {}
    try:
        groups = json.loads(document)
    except (ValueError, RecursionError):
        raise WindowError(f'{what}: not JSON; write {{"worker group": ["Sat 22:00-Sun 04:00"]}} (UTC times)') from None
    if not isinstance(groups, Mapping):
        raise WindowError(f'{what}: write an object, {{"worker group": ["Sat 22:00-Sun 04:00"]}} (UTC times)')
    windows: dict[str, tuple[Window, ...]] = {}
    for group, texts in groups.items():
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts:
            raise WindowError(f'{what}: worker group {group!r}: give a list of windows, e.g. ["Sat 22:00-Sun 04:00"]')
        try:
            windows[str(group).strip().lower()] = tuple(w for text in texts for w in parse_window(text))
        except WindowError as exc:
            raise WindowError(f"{what}: worker group {group!r}: {exc}") from None
    return windows


def is_open(windows: Iterable[Window], at: dt.datetime) -> bool:
    """Whether `at` is inside one of `windows` (no windows: always)."""
    windows = tuple(windows)
    return not windows or any(w.contains(at) for w in windows)


def next_open(windows: Iterable[Window], at: dt.datetime) -> dt.datetime:
    """`at` when a window is open then (or there are none), else when the next one opens."""
    windows = tuple(windows)
    if is_open(windows, at):
        return _utc(at)
    return min(w.opens_after(at) for w in windows)
