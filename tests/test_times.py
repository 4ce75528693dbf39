"""shared/times.py: the one clock, ISO 8601 formatter and parser, and Retry-After reader. How the Automation
client and the webhooks honour Retry-After on the wire is tested in test_automation.py and test_notify.py."""

from __future__ import annotations

import datetime as dt
import email.utils

import pytest

from shared.times import format_time, parse_time, retry_after_seconds, utc_now

AT = dt.datetime(2026, 11, 26, 8, 0, tzinfo=dt.timezone.utc)


def http_date(when: dt.datetime) -> str:
    return email.utils.format_datetime(when, usegmt=True)


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after_seconds("2", AT) == 2.0
    assert retry_after_seconds(" 17 ", AT) == 17.0
    assert retry_after_seconds(http_date(AT + dt.timedelta(seconds=30)), AT) == 30.0
    assert retry_after_seconds(http_date(AT - dt.timedelta(seconds=30)), AT) == 0.0  # a date passed: at once


def test_a_date_without_a_zone_is_utc():
    assert retry_after_seconds("Thu, 26 Nov 2026 08:01:00 -0000", AT) == 60.0


@pytest.mark.parametrize(("value", "seconds"), [("1.5", 1.5), ("-3", 0.0), ("0", 0.0)])
def test_fractions_are_taken_and_nothing_is_below_zero(value: str, seconds: float):
    assert retry_after_seconds(value, AT) == seconds


@pytest.mark.parametrize("value", [None, "", "  ", "soon", "inf", "nan", "-inf", "Thu, 99 Nov 2026"])
def test_what_cannot_be_read_is_none(value: str | None):
    assert retry_after_seconds(value, AT) is None


def test_format_time_writes_utc_with_a_z_and_microseconds_only_when_present():
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert format_time(dt.datetime(2026, 12, 3, 9, 0, 0, tzinfo=plus_two)) == "2026-12-03T07:00:00Z"
    assert format_time(dt.datetime(2026, 12, 3, 7, 0, 0, 120, tzinfo=dt.timezone.utc)) == "2026-12-03T07:00:00.000120Z"
    assert format_time(dt.datetime(2026, 12, 3, 7, 0, 0, 120), timespec="seconds") == "2026-12-03T07:00:00Z"


def test_format_time_and_parse_time_round_trip():
    at = dt.datetime(2026, 12, 3, 7, 0, 0, 123456, tzinfo=dt.timezone.utc)
    assert parse_time(format_time(at)) == at


def test_utc_now_is_aware_utc():
    now = utc_now()
    assert now.tzinfo is not None and now.utcoffset() == dt.timedelta(0)
