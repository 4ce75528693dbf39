"""Fleet scale (issue 19): what makes a reconciliation of thousands of certificates cheap, tested for
behaviour, never for time -- `DirectoryVault` parses only the versions asked for, SQLite batches writes
into one transaction, the reconciliation reports progress and does not assess a version twice.
The figures are bench/scale.py's."""

from __future__ import annotations

import contextlib
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
from tests.inventories import GROUP, exchange, keep
from tests.test_reconcile import NAME, VAULT, RecordingNotifier, World


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


def listed_then_tagged(world: World) -> tuple[DirectoryVault, dict]:
    """A vault directory that listed NAME's folder (no tags), then NAME tagged on disk; the tags' file data."""
    import json

    vault = DirectoryVault(world.vault_dir, VAULT)
    vault.names()
    assert vault.tags(NAME) == {}
    meta = world.vault_dir / NAME / "certificate.json"
    data = json.loads(meta.read_text())
    data["tags"] = {"certsync-servers": "EX01"}
    meta.write_text(json.dumps(data))
    return vault, data


def test_inside_one_pass_get_and_previous_read_a_folder_as_the_listing_found_it(world: World):
    import threading

    from shared.pipeline.sources import one_pass

    vault, _ = listed_then_tagged(world)
    with one_pass(vault):
        assert vault.get(NAME, "v2").tags == {}  # as this listing found it: not checked again
        assert vault.previous(NAME, "v2").tags == {}
        other: list[dict] = []  # another thread is not in the pass: it checks
        reader = threading.Thread(target=lambda: other.append(vault.get(NAME, "v2").tags))
        reader.start()
        reader.join()
        assert other == [{"certsync-servers": "EX01"}]
    assert vault.get(NAME, "v2").tags == {"certsync-servers": "EX01"}  # out of the pass: checked on each call
    assert isinstance(one_pass(object()), contextlib.nullcontext)  # a source without passes: Key Vault's


def test_the_folder_listings_kept_are_bounded_and_an_evicted_folder_is_listed_again(world: World):
    vault = DirectoryVault(world.vault_dir, VAULT)
    vault.FOLDERS_KEPT = 1
    vault.names()
    assert vault.latest(NAME).version == "v2"
    assert vault.tags("other-web") == {}
    assert list(vault._folders) == ["other-web"]  # NAME's listing was let go
    world.add_version(NAME, "v3", pem_of([world.new, world.inter_b]), "2026-03-01T00:00:00Z", tags={"a": "b"})
    latest = vault.latest(NAME)  # the same listing, but NAME is read from its folder again
    assert (latest.version, latest.tags) == ("v3", {"a": "b"})
    assert vault.previous(NAME, "v3").version == "v2" and list(vault._folders) == [NAME.lower()]


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
    progress.advance(2)
    drawn = stream.getvalue()
    progress.close()
    progress.close()  # twice: nothing more
    frames = [f for f in drawn.split("\r") if f]
    assert frames[-1].startswith("reconciling:   0%|") and " 0/3 [" in frames[-1]  # one line, redrawn in place
    assert "\n" not in stream.getvalue()
    assert stream.getvalue().endswith("\r")  # cleared: nothing of the bar is left on the line
    assert stream.getvalue()[len(drawn) :].strip(" \r\x1b[A") == ""
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


# --- second pass: bulk reads, one listing per run, the remembered assessment, the pool ---------------


def _entry(certificate: str, kind: str, version: str = "v1", vault: str = VAULT):
    from shared.pipeline.audit import AuditEntry

    return AuditEntry(
        certificate=certificate, kind=kind, correlation_id="c", summary=kind, vault=vault, version=version
    )


def test_sqlite_reads_every_state_and_a_range_of_histories_at_once(tmp_path):
    audit = SqliteAuditLog(tmp_path / "audit.sqlite")
    for name in ("a", "b", "c", "d"):
        audit.record(_entry(name, "event-received"))
        audit.record(_entry(name, "plan"))
    found = audit.histories(["B", "d"])  # partitions b..d are read; c is in the range, not asked for
    assert sorted(found) == ["b", "d"]
    assert [e.kind for e in found["b"]] == ["event-received", "plan"]  # oldest first
    assert audit.histories([]) == {} and audit.histories(["z"]) == {}
    state = SqliteStateStore(tmp_path / "state.sqlite")
    at = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
    state.put("KV/A", "expiry", "30", at)
    state.put("kv/b", "drift", "ok", at)
    assert state.states() == {("kv/a", "expiry"): "30", ("kv/b", "drift"): "ok"}


def test_a_folder_is_checked_once_per_listing_by_tags_and_latest_and_on_each_get(world: World):
    import json

    vault, data = listed_then_tagged(world)
    meta = world.vault_dir / NAME / "certificate.json"
    assert vault.tags(NAME) == {}  # the same listing: not checked again
    assert vault.get(NAME, "v2").tags == {"certsync-servers": "EX01"}  # the event path checks each time
    vault.names()
    assert vault.tags(NAME) == {"certsync-servers": "EX01"}
    data["tags"] = {}
    meta.write_text(json.dumps(data))
    vault.names()
    assert vault.latest(NAME).tags == {}


def test_a_daily_run_without_revocation_reuses_the_remembered_valid_assessment(world: World, monkeypatch):
    import shared.reconciliation.reconcile as reconcile
    from shared.validation.assessment import TrustStore
    from shared.x509.certificate import Certificate

    calls = []
    real = reconcile.assess
    monkeypatch.setattr(reconcile, "assess", lambda *a, **k: calls.append(1) or real(*a, **k))

    def reconciler(trust=None):
        r = world.reconciler(with_pipeline=False)
        r.settings = dataclasses.replace(r.settings, revocation="off", trust=trust or r.settings.trust)
        return r

    at = world.new.cert.not_valid_before_utc
    first = reconciler().run(at)
    assert len(calls) == 1 and first.findings[0].code == "unprocessed"
    state = SqliteStateStore(world.tmp / "state.sqlite")
    remembered = state.get(f"{VAULT}/{NAME}".lower(), reconcile.ASSESSED)
    assert remembered is not None and " " in remembered
    daily = reconciler().run(at + dt.timedelta(days=1))
    assert len(calls) == 1  # nothing new: decided from the remembered facts
    snapshot = next(s for s in state.snapshots() if s["certificate"] == NAME)
    assert snapshot["status"] == "Valid" and snapshot["tls_certificate_name"].startswith("<I>")
    assert [f.code for f in daily.findings] == [f.code for f in first.findings]
    # another trust store (no root for the chain): the inputs changed, so it is assessed again
    other = TrustStore.from_certificates([Certificate.from_der(world.inter_a.der)], "other")
    reconciler(other).run(at + dt.timedelta(days=2))
    assert len(calls) == 2
    assert next(s for s in state.snapshots() if s["certificate"] == NAME)["status"] != "Valid"
    # back to the first trust store: the same inputs as the remembered Valid assessment, so it holds
    reconciler().run(at + dt.timedelta(days=3))
    assert len(calls) == 2
    assert next(s for s in state.snapshots() if s["certificate"] == NAME)["status"] == "Valid"
    # in the expiry warning window the remembered assessment has lapsed
    late = world.expires - dt.timedelta(days=5)
    reconciler().run(late)
    assert len(calls) == 3
    # a remembered state this code did not write is not trusted
    state.put(f"{VAULT}/{NAME}".lower(), reconcile.ASSESSED, remembered.split(" ")[0] + " never", late)
    reconciler().run(at + dt.timedelta(days=4))
    assert len(calls) == 4


def test_revocation_checks_mean_every_run_assesses(world: World, monkeypatch):
    import shared.reconciliation.reconcile as reconcile

    calls = []
    real = reconcile.assess
    monkeypatch.setattr(reconcile, "assess", lambda *a, **k: calls.append(1) or real(*a, **k))
    at = world.new.cert.not_valid_before_utc
    world.reconciler(with_pipeline=False).run(at)
    world.reconciler(with_pipeline=False).run(at)
    assert len(calls) == 2
    assert SqliteStateStore(world.tmp / "state.sqlite").get(f"{VAULT}/{NAME}".lower(), reconcile.ASSESSED) is None


def _fleet(world: World, folder, count: int):
    """`count` targeted certificates (copies of NAME's two versions) in a vault directory at `folder`."""
    import json
    import shutil

    tags = {
        "certsync-worker-group": GROUP,  # the worker group whose inventory the world keeps
        "certsync-servers": "EX01",
        "certsync-send-connectors": "Outbound to Office 365",
    }
    for i in range(count):
        copy = folder / f"{NAME}-{i:03d}"
        shutil.copytree(world.vault_dir / NAME, copy)
        meta = json.loads((copy / "certificate.json").read_text())
        (copy / "certificate.json").write_text(json.dumps({**meta, "tags": tags}))
    (folder / "broken").mkdir()
    (folder / "broken" / "certificate.json").write_text(json.dumps({"tags": tags}))
    (folder / "broken" / "v1.pem").write_bytes(b"not a certificate")


def test_the_pool_checks_in_worker_processes_and_reports_as_one_process_would(world: World, tmp_path, monkeypatch):
    import os
    import shutil

    import shared.reconciliation.reconcile as reconcile
    from shared.pipeline.process import PipelineSettings
    from shared.validation.assessment import TrustStore
    from shared.wiring import local_reconciler
    from shared.x509.certificate import Certificate

    monkeypatch.setattr(reconcile, "POOL_MIN", 3)
    monkeypatch.setattr(reconcile, "BATCH", 4)
    _fleet(world, world.vault_dir, 9)
    shutil.copytree(world.vault_dir, tmp_path / "serial" / VAULT)
    shutil.copytree(world.vault_dir, tmp_path / "pooled" / VAULT)
    trust = TrustStore.from_certificates([Certificate.from_der(world.root.der)], "test")
    settings = PipelineSettings(trust=trust, revocation="off")
    at = world.new.cert.not_valid_before_utc
    reports = {}
    told: dict[str, RecordingNotifier] = {}
    for kind, workers in (("serial", 1), ("pooled", 2)):
        base = tmp_path / kind
        reconciler = local_reconciler(
            vault_dir=str(base / VAULT),
            outbox=str(base / "outbox"),
            audit=str(base / "audit.sqlite"),
            state=str(base / "state.sqlite"),
            settings=settings,
            workers=workers,
            inventory_store=str(world.tmp / "inventory.sqlite"),  # the world's: Exchange uses v1
        )
        reconciler.progress = progress = CountingProgress()
        reconciler.notifier = told[kind] = RecordingNotifier()  # the workers' notices come back to the parent's
        reports[kind] = [reconciler.run(at), reconciler.run(at + dt.timedelta(days=1))]
        assert progress.total == progress.done == 2 * 12  # 11 folders and "broken", twice
        assert len(os.listdir(base / "outbox")) == 9  # the 9 tagged copies: one job each
    for serial, pooled in zip(reports["serial"], reports["pooled"], strict=True):
        assert pooled.certificates == serial.certificates and len(serial.certificates) == 10
        assert [(f.certificate, f.code, f.state) for f in pooled.findings] == [
            (f.certificate, f.code, f.state) for f in serial.findings
        ]
        assert [p["certificate"] for p in pooled.processed] == [p["certificate"] for p in serial.processed]
        assert len(pooled.failures) == len(serial.failures) == 1  # "broken": no version
    # one digest per run when more than 10 are due, the same whether the workers or this process checked
    assert [n.kind for n in told["pooled"].notices] == [n.kind for n in told["serial"].notices] == ["digest"]
    assert told["pooled"].notices[0].details["counts"] == told["serial"].notices[0].details["counts"]
    serial_snapshots = SqliteStateStore(tmp_path / "serial" / "state.sqlite").snapshots()
    pooled_snapshots = SqliteStateStore(tmp_path / "pooled" / "state.sqlite").snapshots()
    assert [(s["certificate"], s["status"]) for s in pooled_snapshots] == [
        (s["certificate"], s["status"]) for s in serial_snapshots
    ]


def test_table_stores_batch_writes_per_partition_and_read_in_bulk_on_azurite(azurite, monkeypatch):
    import uuid

    from azure.data.tables import TableClient

    import shared.adapters.azure.tables as tables
    from shared.adapters.azure.tables import TableAuditLog, TableStateStore
    from shared.reconciliation.snapshot import SNAPSHOT_SCHEMA

    sent: list[int] = []

    def client(prefix: str) -> TableClient:
        table = TableClient.from_connection_string(azurite.connection_string, f"{prefix}{uuid.uuid4().hex[:8]}")
        real = table.submit_transaction
        monkeypatch.setattr(table, "submit_transaction", lambda ops, **kw: sent.append(len(ops)) or real(ops, **kw))
        return table

    monkeypatch.setattr(tables, "TRANSACTION_OPERATIONS", 3)
    audit = TableAuditLog(client("audit"))
    assert audit.histories(["a"]) == {}  # no table yet
    with batched(audit):
        for name in ("a", "b"):
            for kind in ("event-received", "assessment", "plan", "job-queued"):
                audit.record(_entry(name, kind))
        audit.record(_entry("c/d", "plan"))  # a name Table keys must escape
        assert sent == []  # nothing sent yet
    assert sorted(sent) == [3, 3]  # per partition, at most 3 operations each; a lone one is sent alone
    with batched(audit):
        audit.record(_entry("e", "plan"))
        audit.record(_entry("e", "job-queued"))
        assert [e.kind for e in audit.history("e")] == ["plan", "job-queued"]  # a read sends the batch first
        audit.record(_entry("e", "job-started"))
    assert [e.kind for e in audit.history("e")] == ["plan", "job-queued", "job-started"]
    sent.clear()
    found = audit.histories(["A", "b", "c/d", "zz"])
    assert sorted(found) == ["a", "b", "c/d"]
    assert [e.kind for e in found["a"]] == ["event-received", "assessment", "plan", "job-queued"]
    assert audit.histories([]) == {}

    state = TableStateStore(client("state"))
    assert state.states() == {}  # no table yet
    at = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)

    def snapshot(name: str) -> dict:
        return {"schema": SNAPSHOT_SCHEMA, "certificate": name, "vault": "kv", "findings": [], "servers": []}

    with batched(state):
        state.put("kv/a", "expiry", "30", at)
        state.put("kv/a", "expiry", "14", at)  # the last write to a row wins
        state.put("kv/a", "drift", "ok", at)
        state.put("kv/b%x", "failed", "ok", at)
        for name in ("a", "b", "c", "d"):
            state.put_snapshot(snapshot(name))
        state.delete_snapshot("kv", "d")
    assert sorted(sent) == [2, 3]  # kv/a: 2 rows; snapshots: a, b, c, then the delete of d alone
    assert state.states() == {("kv/a", "expiry"): "14", ("kv/a", "drift"): "ok", ("kv/b%x", "failed"): "ok"}
    assert [s["certificate"] for s in state.snapshots()] == ["a", "b", "c"]
    state.delete_snapshot("kv", "missing")  # outside a batch: at once, and a missing row is fine
    state.delete_snapshot("kv", "c")
    assert [s["certificate"] for s in state.snapshots()] == ["a", "b"]


def test_a_stored_inventory_is_read_once_per_record(world: World, monkeypatch):
    """The pipeline reads (validates, hashes) a worker group's stored inventory once, not once per event;
    a new discovery is a new record, read again."""
    from shared.pipeline import process

    real = process.read_inventory
    reads: list[str] = []
    monkeypatch.setattr(process, "read_inventory", lambda doc, source: reads.append(source) or real(doc, source))
    store = world.inventories()
    decoded = process._DecodedInventories()

    inventory, digest = decoded.get(store.get(GROUP))
    assert decoded.get(store.get(GROUP)) == (inventory, digest) and len(reads) == 1  # the same record, read again
    assert digest == process.inventory_digest(store.get(GROUP).inventory)

    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5)
    keep(store, exchange(world.new), collected=later)
    assert decoded.get(store.get(GROUP))[0] != inventory and len(reads) == 2


def test_the_vault_directory_keeps_a_whole_reconciliation_batch_parsed():
    """The reconciliation reads a batch's latest versions ahead, then the pipeline `get`s each: the
    directory must still hold them, or every latest version is parsed twice (issue 19)."""
    from shared.reconciliation.reconcile import BATCH

    assert DirectoryVault.PARSED_KEPT >= BATCH


def test_the_inventory_store_decodes_a_record_again_only_when_it_changed(tmp_path):
    from shared.adapters.local.sqlite import SqliteInventoryStore
    from shared.pipeline.inventories import InventoryRecord

    store, other = SqliteInventoryStore(tmp_path / "i.sqlite"), SqliteInventoryStore(tmp_path / "i.sqlite")
    at = dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc)
    store.put(InventoryRecord("HRW-A", at, at, {"servers": ["EX01"]}, "import"))
    first = store.get("hrw-a")
    assert store.get("HRW-A") is first and first.inventory == {"servers": ["EX01"]}
    later = at + dt.timedelta(hours=1)
    other.put(InventoryRecord("hrw-a", later, later, {"servers": ["EX02"]}, "runbook", "job-2"))  # another process
    again = store.get("hrw-a")
    assert (again.inventory, again.collected_at, again.automation_job) == ({"servers": ["EX02"]}, later, "job-2")
    assert store.get("hrw-b") is None


def test_a_buffered_block_holds_writes_until_the_next_read_without_taking_the_write_lock(tmp_path):
    db = SqliteFile(tmp_path / "t.sqlite", "CREATE TABLE IF NOT EXISTS t (x INTEGER PRIMARY KEY);", "test")
    other = sqlite3.connect(tmp_path / "t.sqlite", timeout=0, isolation_level=None)

    def seen() -> list[int]:
        return [x for (x,) in other.execute("SELECT x FROM t ORDER BY x")]

    with db.buffered():
        db.execute("INSERT INTO t VALUES (1)")
        db.execute("INSERT INTO t VALUES (2)")
        assert seen() == []  # held
        other.execute("BEGIN IMMEDIATE")  # another process can write meanwhile: no lock is held
        other.execute("INSERT INTO t VALUES (10)")
        other.execute("COMMIT")
        assert db.execute("SELECT x FROM t ORDER BY x") == [(1,), (2,), (10,)]  # a read sees its own writes
        assert seen() == [1, 2, 10]
        db.execute("INSERT INTO t VALUES (3)")
    assert seen() == [1, 2, 3, 10]  # the end of the block writes what is left
    with pytest.raises(sqlite3.IntegrityError), db.buffered():
        db.execute("INSERT INTO t VALUES (4)")
        db.execute("INSERT INTO t VALUES (1)")  # a duplicate: raised when sent, after the good one is written
        db.execute("INSERT INTO t VALUES (5)")
    assert seen() == [1, 2, 3, 4, 10]
    db.execute("INSERT INTO t VALUES (6)")  # outside a block: written at once
    assert seen()[-2:] == [6, 10]


def test_pool_workers_hold_their_writes_and_the_serial_run_batches_them(tmp_path, monkeypatch):
    from shared.pipeline import audit as audit_module
    from shared.reconciliation import reconcile

    used = []
    monkeypatch.setattr(reconcile, "buffered", lambda store: used.append("buffered") or audit_module.buffered(store))
    monkeypatch.setattr(reconcile, "batched", lambda store: used.append("batched") or audit_module.batched(store))
    state, audit = SqliteStateStore(tmp_path / "s.sqlite"), SqliteAuditLog(tmp_path / "a.sqlite")
    reconciler = reconcile.Reconciler(lambda vault: None, ("kv",), audit, state, RecordingNotifier())
    run = reconcile._Run(reconciler, None, dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), None, batch_writes=False)
    run._commit()
    state.put("kv/a", "expiry", "30", dt.datetime(2026, 1, 1))
    assert SqliteStateStore(tmp_path / "s.sqlite").states() == {}  # held by the worker
    run._batches.close()
    assert SqliteStateStore(tmp_path / "s.sqlite").states() == {("kv/a", "expiry"): "30"}
    serial = reconcile._Run(reconciler, None, dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), None)
    serial._commit()
    serial._batches.close()
    assert used == ["buffered", "buffered", "batched", "batched"]
