"""Paged, streamed audit history (`AuditLog.history`, `read_page`) on both backends: SQLite in a temporary
file and Azure Tables on a real Azurite, with pages of 3 so that every boundary is crossed by a few rows."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import pytest

from shared.adapters.azure.tables import TableAuditLog
from shared.adapters.local.sqlite import SqliteAuditLog
from shared.errors import CertsyncError
from shared.pipeline.audit import AuditEntry, AuditLog, lower_bound, read_page
from shared.wiring import storage_from_env
from tests.azurite import Azurite

T0 = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc)
PAGE = 3


def entry(minutes: float, certificate: str = "web", entry_id: str | None = None) -> AuditEntry:
    return AuditEntry(
        certificate=certificate,
        kind="assessment",
        correlation_id="corr-1",
        summary=f"at +{minutes} min",
        at=T0 + dt.timedelta(minutes=minutes),
        details={"minutes": minutes},
        **({"entry_id": entry_id} if entry_id else {}),
    )


@pytest.fixture(params=["sqlite", "tables"])
def log(request, tmp_path) -> Iterator[AuditLog]:
    if request.param == "sqlite":
        sqlite = SqliteAuditLog(tmp_path / "audit.sqlite", page_size=PAGE)
        yield sqlite
        sqlite.close()
    else:
        azurite: Azurite = request.getfixturevalue("azurite")
        settings = storage_from_env({"JobsStorage": azurite.connection_string})
        yield TableAuditLog(settings.table_client(f"audit{uuid.uuid4().hex[:20]}"), page_size=PAGE)


def fill(log: AuditLog, count: int, certificate: str = "web") -> list[AuditEntry]:
    """`count` entries a minute apart, recorded newest first (the store, not the writer, orders them)."""
    entries = [entry(i, certificate) for i in range(count)]
    for item in reversed(entries):
        log.record(item)
    return entries


def minutes(entries) -> list[float]:
    return [e.details["minutes"] for e in entries]


@pytest.mark.parametrize("count", [0, 1, PAGE - 1, PAGE, PAGE + 1, 2 * PAGE, 2 * PAGE + 1])
def test_every_entry_oldest_first_across_page_boundaries(log, count):
    fill(log, count)
    assert minutes(log.history("web")) == list(range(count))


@pytest.mark.parametrize("limit", [1, PAGE - 1, PAGE, PAGE + 1, 2 * PAGE, 7, 8, 50])
def test_limit_gives_the_oldest_n(log, limit):
    fill(log, 7)
    assert minutes(log.history("web", limit=limit)) == list(range(min(limit, 7)))


def test_since_includes_an_entry_at_that_instant_and_excludes_older(log):
    fill(log, 7)
    assert minutes(log.history("web", since=T0 + dt.timedelta(minutes=4))) == [4, 5, 6]
    assert minutes(log.history("web", since=T0 + dt.timedelta(minutes=3, seconds=30))) == [4, 5, 6]
    assert minutes(log.history("web", since=T0 - dt.timedelta(days=1))) == list(range(7))
    assert list(log.history("web", since=T0 + dt.timedelta(days=1))) == []


def test_since_in_another_offset_is_the_same_instant(log):
    fill(log, 5)
    paris = dt.timezone(dt.timedelta(hours=1))
    assert minutes(log.history("web", since=(T0 + dt.timedelta(minutes=2)).astimezone(paris))) == [2, 3, 4]


def test_since_and_limit_together(log):
    fill(log, 9)
    assert minutes(log.history("web", since=T0 + dt.timedelta(minutes=2), limit=4)) == [2, 3, 4, 5]


def test_continuations_walk_every_entry_once_in_order(log):
    fill(log, 10)
    seen, after, pages = [], None, 0
    while True:
        page = read_page(log, "web", limit=4, after=after)
        seen += minutes(page.entries)
        pages += 1
        if page.after is None:
            break
        assert page.after == page.entries[-1].row_key
        after = page.after
    assert seen == list(range(10)) and pages == 3


def test_the_last_full_page_has_no_continuation(log):
    fill(log, 8)
    first = read_page(log, "web", limit=4)
    assert first.after is not None
    second = read_page(log, "web", limit=4, after=first.after)
    assert minutes(second.entries) == [4, 5, 6, 7] and second.after is None


def test_a_continuation_and_since_take_the_later_bound(log):
    fill(log, 8)
    early = read_page(log, "web", limit=2).after  # after minute 1
    assert minutes(log.history("web", since=T0 + dt.timedelta(minutes=5), after=early)) == [5, 6, 7]
    late = read_page(log, "web", limit=6).after  # after minute 5
    assert minutes(log.history("web", since=T0 + dt.timedelta(minutes=1), after=late)) == [6, 7]


def test_entries_of_one_instant_split_across_pages_by_their_ids(log):
    same = [entry(0, entry_id=f"{i:032x}") for i in range(2 * PAGE + 1)]
    for item in reversed(same):
        log.record(item)
    assert [e.entry_id for e in log.history("web")] == [e.entry_id for e in same]
    first = read_page(log, "web", limit=PAGE)
    rest = read_page(log, "web", limit=50, after=first.after)
    assert [e.entry_id for e in first.entries + rest.entries] == [e.entry_id for e in same]


def test_other_certificates_never_leak_into_a_page(log):
    fill(log, 4, "web-a")
    fill(log, 4, "web")
    fill(log, 4, "web-b")
    assert [e.certificate for e in log.history("web")] == ["web"] * 4
    assert [e.certificate for e in read_page(log, "WEB-A", limit=PAGE).entries] == ["web-a"] * PAGE


def test_history_streams_pages_as_the_caller_iterates(log):
    """A page is read when the caller gets to it: an entry recorded after the first page was read, but
    sorting after it, is seen by the same iteration."""
    fill(log, PAGE + 1)
    reading = log.history("web")
    assert minutes([next(reading) for _ in range(PAGE)]) == [0, 1, 2]
    log.record(entry(10))
    assert minutes(reading) == [3, 10]


def test_a_table_never_written_has_an_empty_history_in_pages(log):
    assert read_page(log, "never", limit=5).entries == []


@pytest.mark.parametrize("limit", [0, -1])
def test_a_limit_below_one_is_refused_at_the_call(log, limit):
    with pytest.raises(CertsyncError, match=f"limit {limit}: give a whole number"):
        log.history("web", limit=limit)


@pytest.mark.parametrize("token", ["", "x", "20261126T120000.000000Z", "20261126T120000.000000Z-ab' or 1 eq 1"])
def test_a_continuation_certsync_did_not_hand_out_is_refused_at_the_call(log, token):
    with pytest.raises(CertsyncError, match=r"continuation .*start again without it"):
        log.history("web", after=token)


def test_lower_bound_is_empty_for_everything_and_a_time_prefix_for_since():
    assert lower_bound() == ""
    assert lower_bound(T0) == "20261126T120000.000000Z"


# --- record_once ---------------------------------------------------------------------------------------


def test_record_once_records_the_first_entry_under_a_key_only(log):
    fill(log, PAGE)
    tenth = entry(10)
    assert log.record_once(tenth, "job-result/j1") is True
    assert log.record_once(entry(11), "job-result/j1") is False  # another writer, same key: nothing written
    assert log.record_once(entry(12), "job-result/j2") is True  # another key
    assert log.record_once(entry(13, "other"), "job-result/j1") is True  # keys are per certificate

    # The keys' own rows are never history: every page, every bound, the range read.
    assert minutes(log.history("web")) == [0, 1, 2, 10, 12]
    assert minutes(log.history("web", after=tenth.row_key, limit=PAGE)) == [12]
    assert minutes(log.histories(["web", "other"])["web"]) == [0, 1, 2, 10, 12]
    assert minutes(log.histories(["web", "other"])["other"]) == [13]


def test_record_once_inside_a_batch_writes_what_the_batch_gathered_and_answers_at_once(log):
    from shared.pipeline.audit import batched

    with batched(log):
        log.record(entry(0))
        assert log.record_once(entry(1), "k") is True
        assert log.record_once(entry(2), "k") is False
        log.record(entry(3))
    assert minutes(log.history("web")) == [0, 1, 3]


def test_record_once_on_sqlite_leaves_neither_row_when_the_entry_cannot_be_written(tmp_path):
    import sqlite3

    log = SqliteAuditLog(tmp_path / "audit.sqlite")
    log.record(entry(0, entry_id="same"))
    with pytest.raises(sqlite3.IntegrityError):  # the entry's own row exists: the transaction is undone
        log.record_once(entry(0, entry_id="same"), "k")
    assert log.record_once(entry(1), "k") is True  # so the key is still free
    with log.batch(), pytest.raises(sqlite3.IntegrityError):  # the same inside a batch (a savepoint)
        log.record_once(entry(0, entry_id="same"), "k2")
    assert log.record_once(entry(2), "k2") is True
    assert minutes(log.history("web")) == [0, 1, 2]
    log.close()


def test_record_once_on_tables_leaves_neither_row_when_the_entry_cannot_be_written(azurite):
    from shared.errors import StorageError

    settings = storage_from_env({"JobsStorage": azurite.connection_string})
    log = TableAuditLog(settings.table_client(f"audit{uuid.uuid4().hex[:20]}"))
    log.record(entry(0, entry_id="same"))
    with pytest.raises(StorageError, match=r"^audit table audit\w+: Azure Storage answered HTTP 409"):
        log.record_once(entry(0, entry_id="same"), "k")  # the entry's row exists: the transaction fails whole
    assert log.record_once(entry(1), "k") is True  # so the key is still free
    assert minutes(log.history("web")) == [0, 1]
