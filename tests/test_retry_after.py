"""The one Retry-After reader (shared/retry_after.py) that Azure Automation's client and the webhooks share;
how each honours it on the wire is tested in test_automation.py and test_notify.py."""

from __future__ import annotations

import datetime as dt
import email.utils

import pytest

from shared.retry_after import retry_after_seconds

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
