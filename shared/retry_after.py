"""The HTTP Retry-After header read one way, for every client that honours it (Azure Automation over ARM in
`shared.automation`, the webhooks in `shared.notify`). Pure standard library, so either can import it
without pulling in an Azure SDK."""

from __future__ import annotations

import datetime as dt
import email.utils
import math


def retry_after_seconds(value: str | None, now: dt.datetime) -> float | None:
    """A Retry-After header as seconds from `now`: delay-seconds (RFC 9110 says whole; a fraction is taken
    too) or an HTTP date, never below 0; None when absent, not finite or unreadable."""
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
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" in the date: UTC, as every HTTP date is
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - now).total_seconds())
