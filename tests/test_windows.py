"""Maintenance windows (`shared.pipeline.windows`): parsing, whether one is open, when the next opens."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.pipeline.windows import WindowError, is_open, next_open, parse_window, parse_windows

UTC = dt.timezone.utc
THURSDAY = dt.datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


def t(day: int, hour: int, minute: int = 0, second: int = 0) -> dt.datetime:
    """A time in the week of 2026-11-23 (a Monday); day 0 is Monday."""
    return dt.datetime(2026, 11, 23 + day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "inside", "outside"),
    [
        ("Sat 22:00-Sun 04:00", [t(5, 22), t(5, 23, 59), t(6, 3, 59)], [t(5, 21, 59), t(6, 4), t(0, 0)]),
        ("Sun 22:00-Mon 02:00", [t(6, 23), t(0, 1, 30)], [t(0, 2), t(6, 21)]),  # across the week's end
        ("tue 01:00-03:00", [t(1, 1), t(1, 2, 59)], [t(1, 3), t(2, 1)]),
        ("Friday 23:00-01:00", [t(4, 23, 30), t(5, 0, 30)], [t(5, 1), t(4, 22)]),  # ends the next day
        ("daily 01:00-02:00", [t(d, 1, 30) for d in range(7)], [t(d, 2) for d in range(7)]),
        ("Mon 00:00-Sun 24:00", [t(0, 0), t(3, 12), t(6, 23, 59)], []),  # the whole week
    ],
)
def test_a_window_holds_exactly_its_span(text, inside, outside):
    windows = parse_window(text)
    for when in inside:
        assert is_open(windows, when), (text, when)
    for when in outside:
        assert not is_open(windows, when), (text, when)


def test_next_open_is_now_inside_a_window_else_the_next_start():
    windows = parse_windows('{"g": ["Sat 22:00-Sun 04:00", "Wed 01:00-02:00"]}')["g"]
    assert next_open(windows, THURSDAY) == t(5, 22)
    assert next_open(windows, t(5, 23, 10, 5)) == t(5, 23, 10, 5)  # open: now
    assert next_open(windows, t(6, 4)) == t(2, 1) + dt.timedelta(days=7)  # the next Wednesday
    assert next_open(windows, t(2, 0, 59, 30)) == t(2, 1)
    assert next_open((), THURSDAY) == THURSDAY  # no windows: any time
    naive = dt.datetime(2026, 11, 26, 8, 0)
    assert next_open(windows, naive) == t(5, 22)  # a naive time is UTC


@given(
    start=st.integers(0, 7 * 24 * 60 - 1),
    length=st.integers(1, 7 * 24 * 60 - 1),
    offset=st.integers(0, 14 * 24 * 60 * 60),
)
def test_next_open_is_open_and_nothing_before_it_is(start, length, offset):
    from shared.pipeline.windows import Window

    window = Window(start, length, "generated")
    when = t(0, 0) + dt.timedelta(seconds=offset)
    opens = next_open((window,), when)
    assert opens >= when and window.contains(opens)
    if opens > when:  # closed from `when` until it opens: check the minute before
        assert not window.contains(opens - dt.timedelta(minutes=1))
        assert opens - when < dt.timedelta(days=7)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            '{"g": ["Sat 22:00 to Sun 04:00"]}',
            "worker group 'g': maintenance window 'Sat 22:00 to Sun 04:00': write e.g.",
        ),
        ('{"g": ["Caturday 22:00-23:00"]}', "'Caturday' is not a day"),
        ('{"g": ["Sat 25:00-Sun 04:00"]}', "25:00 is not a time of day"),
        ('{"g": ["Sat 22:61-Sun 04:00"]}', "22:61 is not a time of day"),
        ('{"g": ["Sat 22:00-Sat 22:00"]}', "opens and closes at the same time"),
        ('{"g": ["daily 01:00-01:00"]}', "opens and closes at the same time"),
        ('{"g": ["daily 01:00-Sun 02:00"]}', "a daily window has no end day"),
        ('{"g": []}', "give a list of windows"),
        ('{"g": [7]}', "not text"),
        ('["Sat 22:00-Sun 04:00"]', "write an object"),
        ("{not json", "not JSON"),
        ("[" * 5000, "not JSON"),
    ],
)
def test_a_window_that_cannot_be_read_is_one_line_naming_the_setting(document, message):
    with pytest.raises(WindowError) as caught:
        parse_windows(document)
    text = str(caught.value)
    assert text.startswith("CERTSYNC_MAINTENANCE_WINDOWS: ") and message in text and "\n" not in text


def test_groups_are_matched_case_insensitively_and_one_text_is_a_list_of_one():
    windows = parse_windows('{"HRW-Exchange": "Sat 22:00-Sun 04:00"}')
    assert list(windows) == ["hrw-exchange"] and len(windows["hrw-exchange"]) == 1
    assert parse_windows("  ") == {}


def test_the_setting_is_read_and_checked_with_the_others():
    from shared.errors import CertsyncError
    from shared.wiring import settings_from_env

    env = {"CERTSYNC_VAULTS": "kv", "CERTSYNC_MAINTENANCE_WINDOWS": '{"hrw": ["Sat 22:00-Sun 04:00"]}'}
    settings = settings_from_env(env | {"CERTSYNC_APPROVAL_REQUIRED": "true", "CERTSYNC_BLOCK_NOTICE_HOURS": "2"})
    assert [w.text for w in settings.maintenance_windows["hrw"]] == ["Sat 22:00-Sun 04:00"]
    assert settings.approval_required is True and settings.block_notice_after == dt.timedelta(hours=2)
    defaults = settings_from_env({"CERTSYNC_VAULTS": "kv"})
    assert defaults.maintenance_windows == {} and defaults.approval_required is False
    assert defaults.block_notice_after == dt.timedelta(hours=6)
    with pytest.raises(CertsyncError, match="CERTSYNC_MAINTENANCE_WINDOWS: worker group 'hrw'"):
        settings_from_env(env | {"CERTSYNC_MAINTENANCE_WINDOWS": '{"hrw": ["Sat"]}'})
