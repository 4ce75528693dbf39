"""Fleet scale (issue 19): what makes a reconciliation of thousands of certificates cheap, tested for
behaviour, never for time -- `DirectoryVault` parses only the versions asked for, SQLite batches writes
into one transaction, the reconciliation reports progress and does not assess a version twice.
The figures are bench/scale.py's."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import sqlite3

import pytest

from shared.adapters.local.sqlite import SqliteAuditLog, SqliteFile, SqliteStateStore
from shared.adapters.local.vault_directory import DirectoryVault
from shared.cli.progress import TerminalProgress
from shared.pipeline.audit import batched
from shared.pipeline.sources import SourceError
from shared.reconciliation.reconcile import NO_PROGRESS
from tests.chains import pem_of, renewal_pki
from tests.inventories import exchange, keep
from tests.test_reconcile import NAME, VAULT, World


@pytest.fixture(name="world")
def _world(tmp_path, http_server) -> World:
    """tests/test_reconcile.py's world: certificate NAME (v1 old, v2 new) and an untargeted one."""
    now = dt.datetime.now(dt.timezone.utc)
    pki = renewal_pki(http_server, crl_next_update=now + dt.timedelta(days=400))
    old, new = pki.leaf(pki.inter_a), pki.leaf(pki.inter_b, not_after=now + dt.timedelta(days=100))
    w = World(**vars(pki), old=old, new=new, vault_dir=tmp_path / "vault", tmp=tmp_path)
    w.vault_dir.mkdir()
    w.add_version(NAME, "v1", pem_of([w.old, w.inter_a]), "2026-01-01T00:00:00Z")
    w.add_version(NAME, "v2", pem_of([w.new, w.inter_b]), "2026-02-01T00:00:00Z")
    keep(w.inventories(), exchange(w.old), collected=now)  # Exchange uses v1, read just now
    w.add_version("other-web", "w1", pem_of([w.leaf(w.inter_b), w.inter_b]), "2026-01-01T00:00:00Z")
    return w


def test_the_latest_version_is_read_without_parsing_the_older_ones(world: World):
    world.add_version(NAME, "v0", b"not a certificate", "2025-01-01T00:00:00Z")
    vault = DirectoryVault(world.vault_dir, VAULT)
    assert vault.tags(NAME) == {}
    assert vault.latest(NAME).version == "v2"  # v0 is older and never parsed
    assert vault.previous(NAME, "v2").version == "v1"
    with pytest.raises(SourceError) as raised:
        vault.previous(NAME, "v1")  # now the diff needs v0
    assert raised.value.kind == "bad-content"
    with pytest.raises(SourceError) as raised:
        vault.get(NAME, "v9")
    assert raised.value.kind == "not-found"


def test_versions_without_created_times_are_ordered_by_not_before(world: World):
    folder = world.vault_dir / "no-times"
    folder.mkdir()
    (folder / "b.pem").write_bytes(pem_of([world.old, world.inter_a]))
    (folder / "a.pem").write_bytes(pem_of([world.new, world.inter_b]))
    vault = DirectoryVault(world.vault_dir, VAULT)
    newer = max(world.old, world.new, key=lambda i: i.cert.not_valid_before_utc)
    assert vault.latest("no-times").bundle.leaf.der == newer.der
    assert [vault.get("no-times", v).version for v in ("a", "b")] == ["a", "b"]


def test_a_parsed_version_is_kept_until_its_folder_changes_and_the_cache_is_bounded(world: World):
    vault = DirectoryVault(world.vault_dir, VAULT)
    first = vault.latest(NAME)
    assert vault.get(NAME, "v2") is first  # parsed once
    world.add_version(NAME, "v2", pem_of([world.new, world.inter_b]), "2026-02-01T00:00:00Z", tags={"a": "b"})
    again = vault.latest(NAME)
    assert again is not first and again.tags == {"a": "b"}
    vault.PARSED_KEPT = 1
    vault.get(NAME, "v1")
    assert len(vault._parsed) == 1
    (world.vault_dir / NAME / "certificate.json").write_text("[]")
    with pytest.raises(SourceError, match="must be a JSON object"):
        vault.tags(NAME)
    (world.vault_dir / NAME / "certificate.json").write_text("{")
    with pytest.raises(SourceError, match="not readable JSON"):
        vault.tags(NAME)
    with pytest.raises(SourceError) as raised:
        vault.tags("gone")
    assert raised.value.kind == "not-found"


def test_a_sqlite_batch_is_one_transaction_committed_at_its_end_even_on_error(tmp_path):
    db = SqliteFile(tmp_path / "t.sqlite", "CREATE TABLE IF NOT EXISTS t (x INTEGER);", "test")
    other = sqlite3.connect(tmp_path / "t.sqlite")
    with db.batch():
        db.execute("INSERT INTO t VALUES (1)")
        with db.batch():  # nested: the outer block commits
            db.execute("INSERT INTO t VALUES (2)")
        assert other.execute("SELECT count(*) FROM t").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM t")[0][0] == 2
    assert other.execute("SELECT count(*) FROM t").fetchone()[0] == 2
    with pytest.raises(RuntimeError), db.batch():
        db.execute("INSERT INTO t VALUES (3)")
        raise RuntimeError("stop")
    assert other.execute("SELECT count(*) FROM t").fetchone()[0] == 3


def test_stores_batch_when_they_can(tmp_path):
    state = SqliteStateStore(tmp_path / "s.sqlite")
    audit = SqliteAuditLog(tmp_path / "a.sqlite")
    with batched(state), batched(audit):
        state.put("v/c", "expiry", "30", dt.datetime(2026, 1, 1))
        assert state.get("v/c", "expiry") == "30"
    with batched(object()):  # a store without batching: writes go as they come
        pass
    assert state.get("v/c", "expiry") == "30"


def test_terminal_progress_redraws_one_line_and_clears_it():
    stream = io.StringIO()
    progress = TerminalProgress(stream, "reconciling", interval=3600)
    progress.add_total(3)
    progress.advance(1)  # within the interval: not drawn
    progress.advance(2)  # the last one always is
    progress.close()
    progress.close()  # twice: nothing more
    assert stream.getvalue() == "\r\x1b[Kreconciling 0/3 (0%)\r\x1b[Kreconciling 3/3 (100%)\r\x1b[K"
    NO_PROGRESS.add_total(1)
    NO_PROGRESS.advance(1)
    NO_PROGRESS.close()


class CountingProgress:
    def __init__(self) -> None:
        self.total = self.done = 0
        self.closed = False

    def add_total(self, count: int) -> None:
        self.total += count

    def advance(self, count: int) -> None:
        self.done += count

    def close(self) -> None:
        self.closed = True


def test_a_reconciliation_reports_progress_and_assesses_each_version_once(world: World, monkeypatch):
    import shared.reconciliation.reconcile as reconcile

    calls = []
    real = reconcile.assess
    monkeypatch.setattr(reconcile, "assess", lambda *a, **k: calls.append(1) or real(*a, **k))
    reconciler = world.reconciler()
    reconciler.progress = progress = CountingProgress()
    report = reconciler.run(world.new.cert.not_valid_before_utc)
    assert progress.total == progress.done == 2 and progress.closed  # both folders listed, one with targets
    assert [p["version"] for p in report.processed] == ["v2"]
    assert calls == []  # the pipeline's assessment of v2 was the one the snapshot needs
    reconciler.run(world.new.cert.not_valid_before_utc)
    assert calls == [1]  # the daily run: settled, assessed by the reconciliation


def test_a_reconciliation_with_other_settings_than_its_pipeline_assesses_again(world: World, monkeypatch):
    import shared.reconciliation.reconcile as reconcile

    calls = []
    real = reconcile.assess
    monkeypatch.setattr(reconcile, "assess", lambda *a, **k: calls.append(1) or real(*a, **k))
    reconciler = world.reconciler()
    reconciler.settings = dataclasses.replace(reconciler.settings, revocation="off")
    reconciler.run(world.new.cert.not_valid_before_utc)
    assert calls == [1]
