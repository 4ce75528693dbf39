"""The daily reconciliation on its local adapters (a vault directory, the outbox, SQLite audit and state,
CRLs served on loopback) with a clock the tests set: unprocessed versions, expiry crossings, drift
against a runbook inventory, failures that stay with their certificate, the status snapshots, and
`certsync reconcile` as a user runs it. The Table storage state store runs on Azurite."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shared.adapters.azure.storage import TABLE_STRING_LIMIT, table_string_fits
from shared.adapters.azure.tables import TableStateStore
from shared.adapters.local.outbox import OutboxQueue
from shared.adapters.local.sqlite import SqliteAuditLog, SqliteInventoryStore, SqliteStateStore
from shared.adapters.local.vault_directory import DirectoryVault
from shared.errors import CertsyncError, StorageError
from shared.pipeline.audit import AuditEntry
from shared.pipeline.jobs import job_id
from shared.pipeline.process import Notice, Pipeline, PipelineSettings
from shared.pipeline.sources import SourceError
from shared.pipeline.targets import parse_targets_json
from shared.reconciliation.reconcile import (
    OK,
    SNAPSHOT_SCHEMA,
    Reconciler,
    expiry_state,
    fit_snapshot,
)
from shared.validation.assessment import TrustStore
from shared.validation.lifetime import ExpiryThresholds
from shared.x509.certificate import Certificate
from tests.chains import MAIL_HOSTS, Issued, RenewalPki, pem_of, renewal_pki
from tests.inventories import exchange, keep

NAME = "exch-hybrid-smtp"
VAULT = "contoso-kv"
HOSTS = MAIL_HOSTS
SEND = "Outbound to Office 365"
OLD_NAME = "<I>CN=R10, O=Contoso, C=US<S>CN=mail.contoso.com, C=US"
NEW_NAME = "<I>CN=R11, O=Contoso, C=US<S>CN=mail.contoso.com, C=US"
TARGETS = {
    "schema": "certsync.targets/1",
    "certificates": {
        "*": {"worker_group": "hrw-exchange", "servers": ["EX09"]},  # defaults only: targets nothing alone
        NAME: {"servers": ["EX01", "EX02"], "send_connectors": [SEND], "hybrid_configuration": True, "hosts": HOSTS},
        "broken-cert": {"servers": ["EX01"]},
    },
}
SNAPSHOT_KEYS = {
    "schema",
    "proof",  # the last job's proof steps per server (issue 16)
    "certificate",
    "vault",
    "version",
    "thumbprint",
    "tls_certificate_name",
    "status",
    "not_after",
    "days_left",
    "expiry_state",
    "drift",
    "servers",
    "findings",
    "attention",
    "checked_at",
}
CERTSYNC = str(Path(sys.executable).with_name("certsync"))


def thumbprint(issued: Issued) -> str:
    return hashlib.sha1(issued.der).hexdigest().upper()


class RecordingNotifier:
    """A Notifier that keeps every notice (the webhook notifiers themselves are tested in test_notify)."""

    def __init__(self) -> None:
        self.notices: list[Notice] = []

    def notify(self, notice: Notice) -> None:
        self.notices.append(notice)

    def of(self, *kinds: str) -> list[Notice]:
        return [n for n in self.notices if n.kind in kinds]


class FailingOnceNotifier(RecordingNotifier):
    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def notify(self, notice: Notice) -> None:
        if not self.failed:
            self.failed = True
            raise ConnectionError("the webhook is down")
        super().notify(notice)


@dataclass
class World(RenewalPki):
    old: Issued
    new: Issued
    vault_dir: Path
    tmp: Path
    notifier: RecordingNotifier = field(default_factory=RecordingNotifier)
    targets: dict = field(default_factory=lambda: json.loads(json.dumps(TARGETS)))

    @property
    def expires(self) -> dt.datetime:
        return self.new.cert.not_valid_after_utc

    def add_version(self, name: str, version: str, data: bytes, created: str, **meta) -> None:
        folder = self.vault_dir / name
        folder.mkdir(exist_ok=True)
        (folder / f"{version}.pem").write_bytes(data)
        path = folder / "certificate.json"
        current = json.loads(path.read_text()) if path.exists() else {}
        current.setdefault("created", {})[version] = created
        current.update(meta)
        path.write_text(json.dumps(current))

    def audit(self) -> SqliteAuditLog:
        return SqliteAuditLog(self.tmp / "audit.sqlite")

    def inventories(self) -> SqliteInventoryStore:
        return SqliteInventoryStore(self.tmp / "inventory.sqlite")

    def state(self) -> SqliteStateStore:
        return SqliteStateStore(self.tmp / "state.sqlite")

    def reconciler(self, *, with_pipeline: bool = True, notifier=None) -> Reconciler:
        notifier = notifier or self.notifier
        settings = PipelineSettings(
            vaults=(VAULT,),
            trust=TrustStore.from_certificates([Certificate.from_der(self.root.der)], "test"),
            allow_hosts=(f"127.0.0.1:{self.server.port}",),
        )
        targets = parse_targets_json(json.dumps(self.targets), "targets.json")
        pipeline = Pipeline(
            sources=lambda vault: DirectoryVault(self.vault_dir, vault),
            jobs=OutboxQueue(self.tmp / "outbox"),
            audit=self.audit(),
            settings=settings,
            targets_file=targets,
            notifier=notifier,
            inventories=self.inventories(),
        )
        return Reconciler(
            sources=pipeline.sources,
            vaults=(VAULT,),
            audit=pipeline.audit,
            state=self.state(),
            notifier=notifier,
            pipeline=pipeline if with_pipeline else None,
            targets_file=targets,
            settings=settings,
        )

    def jobs(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted((self.tmp / "outbox").glob("*.json"))]

    def result(self, version: str, inventory: list[dict], *, status: str = "succeeded", steps=()) -> None:
        """A job-result audit entry as remediation writes it, with the runbook's certsync.result/1."""
        job = job_id(VAULT, NAME, version)
        result = {
            "schema": "certsync.result/1",
            "job_id": job,
            "correlation_id": "c0ffee",
            "certificate": {"vault": VAULT, "name": NAME, "version": version, "thumbprint": thumbprint(self.new)},
            "status": status,
            "error": None,
            "worker": "HRW01",
            "started": "2026-01-01T00:00:00Z",
            "finished": "2026-01-01T00:05:00Z",
            "steps": list(steps),
            "inventory": inventory,
        }
        self.audit().record(
            AuditEntry(
                certificate=NAME,
                kind="job-result",
                correlation_id="c0ffee",
                summary=f"runbook {status}",
                vault=VAULT,
                version=version,
                details={
                    "job_id": job,
                    "automation_job": str(uuid.UUID(hex=job)),
                    "status": "Completed",
                    "result": result,
                    "error": "",
                    "via": "callback",
                },
            )
        )

    def inventory(self, *, send: str = NEW_NAME, servers=("EX01", "EX02"), status: str = "Valid") -> list[dict]:
        items = [
            {
                "server": None,
                "kind": "send-connector",
                "object": SEND,
                "tls_certificate_name": send,
                "thumbprint": None,
                "status": None,
                "services": None,
            },
            {
                "server": None,
                "kind": "hybrid-configuration",
                "object": "HybridConfiguration",
                "tls_certificate_name": NEW_NAME,
                "thumbprint": None,
                "status": None,
                "services": None,
            },
        ]
        for server in servers:
            items.append(
                {
                    "server": server,
                    "kind": "receive-connector",
                    "object": f"{server}\\Default Frontend {server}",
                    "tls_certificate_name": NEW_NAME,
                    "thumbprint": None,
                    "status": None,
                    "services": None,
                }
            )
            items.append(
                {
                    "server": server,
                    "kind": "certificate",
                    "object": thumbprint(self.new),
                    "tls_certificate_name": None,
                    "thumbprint": thumbprint(self.new),
                    "status": status,
                    "services": "SMTP",
                }
            )
        return items


@pytest.fixture
def world(tmp_path: Path, http_server) -> World:
    now = dt.datetime.now(dt.timezone.utc)
    pki = renewal_pki(http_server, crl_next_update=now + dt.timedelta(days=400))
    old, new = pki.leaf(pki.inter_a), pki.leaf(pki.inter_b, not_after=now + dt.timedelta(days=100))
    w = World(**vars(pki), old=old, new=new, vault_dir=tmp_path / "vault", tmp=tmp_path)
    w.vault_dir.mkdir()
    w.add_version(NAME, "v1", pem_of([w.old, w.inter_a]), "2026-01-01T00:00:00Z")
    w.add_version(NAME, "v2", pem_of([w.new, w.inter_b]), "2026-02-01T00:00:00Z")
    # Exchange uses v1 on EX01 and EX02, read just now
    keep(w.inventories(), exchange(w.old, group="hrw-exchange"), collected=now)
    # Another certificate in the vault with neither tags nor an own entry: not certsync's business.
    w.add_version("other-web", "w1", pem_of([w.leaf(w.inter_b), w.inter_b]), "2026-01-01T00:00:00Z")
    return w


def findings(report, code: str | None = None) -> list:
    return [f for f in report.findings if code is None or f.code == code]


# --- unprocessed versions ------------------------------------------------------------------------


def test_an_unprocessed_version_is_processed_and_reported_once(world):
    now = dt.datetime.now(dt.timezone.utc)
    report = world.reconciler().run(now)

    [finding] = findings(report, "unprocessed")
    assert finding.changed and finding.version == "v2" and finding.details["outcome"] == "queued"
    assert "never processed" in finding.summary and "queued" in finding.summary
    [job] = world.jobs()
    assert (job["version"], job["plan"]["old_certificates"]) == ("v2", [thumbprint(world.old)])  # v1 replaced
    assert report.processed == [
        {
            "vault": VAULT,
            "certificate": NAME,
            "version": "v2",
            "outcome": "queued",
            "job_id": job["job_id"],
            "correlation_id": finding.details["correlation_id"],
        }
    ]
    assert [n.kind for n in world.notifier.notices] == ["queued", "unprocessed"]
    history = list(world.audit().history(NAME))
    received = [e for e in history if e.kind == "event-received"]
    assert [e.event_id for e in received] == ["reconcile-v2"]
    assert received[0].details["event"]["event_type"] == "Microsoft.KeyVault.CertificateNewVersionCreated"
    assert [e.details["finding"] for e in history if e.kind == "reconcile-finding"] == ["unprocessed"]

    for later in (now + dt.timedelta(hours=2), now + dt.timedelta(days=1), now + dt.timedelta(days=2)):
        again = world.reconciler().run(later)
        assert findings(again, "unprocessed") == [] and again.processed == []
    assert [n.kind for n in world.notifier.notices] == ["queued", "unprocessed"]  # nothing repeated
    assert len(world.jobs()) == 1
    assert report.certificates == [f"{VAULT}/{NAME}"]  # other-web has no targets: the "*" entry alone is none


def test_a_version_settled_by_its_event_is_not_processed_again(world):
    from shared.pipeline.events import parse_event

    event = {
        "id": "evt-1",
        "topic": "t",
        "subject": NAME,
        "eventType": "Microsoft.KeyVault.CertificateNewVersionCreated",
        "eventTime": "2026-02-01T00:00:00Z",
        "data": {
            "Id": f"https://{VAULT}.vault.azure.net/certificates/{NAME}/v2",
            "VaultName": VAULT,
            "ObjectType": "Certificate",
            "ObjectName": NAME,
            "Version": "v2",
        },
    }
    reconciler = world.reconciler()
    assert reconciler.pipeline.process(parse_event(event)).outcome == "queued"
    world.notifier.notices.clear()

    report = world.reconciler().run(dt.datetime.now(dt.timezone.utc))

    assert findings(report, "unprocessed") == [] and report.processed == []
    assert world.notifier.notices == [] and len(world.jobs()) == 1


def test_without_a_pipeline_an_unprocessed_version_is_reported_once_and_left_alone(world):
    now = dt.datetime.now(dt.timezone.utc)
    report = world.reconciler(with_pipeline=False).run(now)
    [finding] = findings(report, "unprocessed")
    assert finding.severity == "warning" and "deliver its event" in finding.summary
    assert world.jobs() == []
    world.reconciler(with_pipeline=False).run(now + dt.timedelta(days=1))
    assert [n.kind for n in world.notifier.notices] == ["unprocessed"]


# --- expiry --------------------------------------------------------------------------------------


def test_expiry_notifies_at_each_crossing_only_then_resolves_on_renewal(world):
    end = world.expires
    states = []
    # a 101-day certificate: warning under 15% of its lifetime (15.15 days), critical under 5% (5.05 days)
    for days_before in (95, 25, 16, 13, 6, 5, 4, -1, -2):
        report = world.reconciler().run(end - dt.timedelta(days=days_before))
        [snapshot] = world.state().snapshots()
        states.append(snapshot["expiry_state"])
    assert states == ["ok", "ok", "ok", "warning", "warning", "critical", "critical", "expired", "expired"]
    notices = world.notifier.of("expiry-warning")
    assert [n.details["state"] for n in notices] == ["warning", "critical", "expired"]
    assert [n.details["severity"] for n in notices] == ["warning", "critical", "critical"]
    assert notices[0].summary.startswith(f"{NAME} version v2 expires in 13 day(s)")
    assert "expired 1 day(s) ago" in notices[-1].summary
    assert [f.state for f in findings(report, "expiry")] == ["expired"]  # still a finding, just not news
    audited = [e for e in world.audit().history(NAME) if e.kind == "reconcile-finding"]
    assert [e.details["state"] for e in audited if e.details["finding"] == "expiry"] == [
        "warning",
        "critical",
        "expired",
    ]

    renewed = world.leaf(world.inter_b)
    world.add_version(NAME, "v3", pem_of([renewed, world.inter_b]), "2026-03-01T00:00:00Z")
    report = world.reconciler().run(end + dt.timedelta(days=3))
    [resolved] = world.notifier.of("resolved")
    assert resolved.details["finding"] == "expiry" and resolved.details["previous"] == "expired"
    assert resolved.version == "v3" and resolved.details["severity"] == "good"
    assert [f.code for f in report.resolved] == ["expiry"]
    assert [p["version"] for p in report.processed] == ["v3"]
    world.reconciler().run(end + dt.timedelta(days=4))
    assert len(world.notifier.of("resolved")) == 1 and len(world.notifier.of("expiry-warning")) == 3


def test_expiry_states_follow_the_lifetime_not_fixed_days():
    start = dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc)
    short, long = start + dt.timedelta(days=45), start + dt.timedelta(days=398)
    at = [end - dt.timedelta(days=d) for end in (short, long) for d in (30, 6, 2, -1)]
    states = [expiry_state(start, end, when) for end, when in zip([short] * 4 + [long] * 4, at, strict=True)]
    assert states == [OK, "warning", "critical", "expired", "warning", "critical", "critical", "expired"]
    assert expiry_state(start, long, long - dt.timedelta(days=40), ExpiryThresholds(warning_cap_days=60)) == "warning"
    with pytest.raises(CertsyncError, match="expiry"):
        ExpiryThresholds(warning_fraction=0.01, critical_fraction=0.2)


# --- drift ---------------------------------------------------------------------------------------


def test_drift_from_the_last_inventory_is_notified_once_and_resolves_once(world):
    now = dt.datetime.now(dt.timezone.utc)
    world.reconciler().run(now)  # v2 is processed: its job is queued, so drift waits for its result
    [snapshot] = world.state().snapshots()
    assert snapshot["drift"] == "pending"
    assert [s["outcome"] for s in snapshot["servers"]] == ["pending", "pending"]

    failed_step = {
        "n": 9,
        "action": "set-send-connector",
        "server": "EX02",
        "object": SEND,
        "before": OLD_NAME,
        "after": OLD_NAME,
        "outcome": "failed",
        "message": "access denied",
    }
    world.result("v2", world.inventory(send=OLD_NAME, servers=("EX01",)), status="failed", steps=[failed_step])
    report = world.reconciler().run(now + dt.timedelta(hours=1))

    [drift] = findings(report, "drift")
    assert drift.changed and drift.severity == "critical" and drift.state.startswith("drift:")
    assert drift.details["drift"] == [
        f"send-connector {SEND} uses {OLD_NAME}, not {NEW_NAME}",
        f"EX02 does not have certificate {thumbprint(world.new)}",
    ]
    [notice] = world.notifier.of("drift")
    assert notice.version == "v2" and SEND in notice.summary
    [snapshot] = world.state().snapshots()
    assert snapshot["drift"] == "drift" and snapshot["attention"] == "critical"
    assert [(s["server"], s["outcome"]) for s in snapshot["servers"]] == [("EX01", "failed"), ("EX02", "failed")]
    assert {f["code"] for f in snapshot["findings"]} >= {"drift", "remediation"}

    world.reconciler().run(now + dt.timedelta(days=1))
    assert len(world.notifier.of("drift")) == 1  # the same drift the next day: no repeat

    world.result("v2", world.inventory())
    report = world.reconciler().run(now + dt.timedelta(days=2))
    assert findings(report, "drift") == []
    [resolved] = world.notifier.of("resolved")
    assert resolved.details["finding"] == "drift" and resolved.details["previous"].startswith("drift:")
    [snapshot] = world.state().snapshots()
    assert snapshot["drift"] == "ok" and snapshot["attention"] == "ok"
    assert [(s["server"], s["outcome"], s["thumbprint"]) for s in snapshot["servers"]] == [
        ("EX01", "succeeded", thumbprint(world.new)),
        ("EX02", "succeeded", thumbprint(world.new)),
    ]
    world.reconciler().run(now + dt.timedelta(days=3))
    assert len(world.notifier.of("resolved")) == 1 and len(world.notifier.of("drift")) == 1


def test_a_certificate_not_valid_on_a_server_is_drift(world):
    world.reconciler().run(dt.datetime.now(dt.timezone.utc))
    world.result("v2", world.inventory(status="Untrusted"))
    report = world.reconciler().run(dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1))
    assert findings(report, "drift")[0].details["drift"] == [
        f"EX01 has certificate {thumbprint(world.new)} with status Untrusted",
        f"EX02 has certificate {thumbprint(world.new)} with status Untrusted",
    ]


def test_without_an_inventory_drift_is_unknown_and_no_finding(world):
    report = world.reconciler().run(dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2))  # past the grace
    assert findings(report, "drift") == []
    [snapshot] = world.state().snapshots()
    assert snapshot["drift"] == "unknown" and world.notifier.of("drift") == []


# --- failures stay with their certificate --------------------------------------------------------


def test_one_certificates_failure_does_not_stop_the_others_and_is_notified_once(world):
    other = world.leaf(world.inter_b)
    world.add_version(
        "exch-internal",
        "i1",
        pem_of([other, world.inter_b]),
        "2026-01-01T00:00:00Z",
        tags={"certsync-servers": "EX03", "certsync-hybrid": "maybe"},
    )
    (world.vault_dir / "broken-cert").mkdir()
    (world.vault_dir / "broken-cert" / "b1.pem").write_bytes(b"not a certificate")
    now = dt.datetime.now(dt.timezone.utc)

    report = world.reconciler().run(now)

    assert report.certificates == [f"{VAULT}/broken-cert", f"{VAULT}/exch-hybrid-smtp", f"{VAULT}/exch-internal"]
    failed = {f.certificate: f for f in findings(report, "failed")}
    assert set(failed) == {"broken-cert", "exch-internal"}
    assert failed["broken-cert"].state == "bad-content" and failed["exch-internal"].state == "targets"
    assert "certsync-hybrid" in failed["exch-internal"].summary and "\n" not in failed["exch-internal"].summary
    assert len(report.failures) == 2
    assert [p["certificate"] for p in report.processed] == [NAME]  # the good one went on
    assert sorted(n.certificate for n in world.notifier.of("failed")) == ["broken-cert", "exch-internal"]
    assert [e.kind for e in world.audit().history("exch-internal")] == ["reconcile-finding"]
    snapshots = {s["certificate"]: s for s in world.state().snapshots()}
    assert set(snapshots) == {"broken-cert", "exch-hybrid-smtp", "exch-internal"}
    assert snapshots["exch-internal"]["attention"] == "critical"
    assert snapshots["exch-internal"]["findings"][0]["code"] == "failed"

    world.reconciler().run(now + dt.timedelta(days=1))
    assert len(world.notifier.of("failed")) == 2  # the same failures the next day: no repeat

    world.add_version(
        "exch-internal",
        "i1",
        pem_of([other, world.inter_b]),
        "2026-01-01T00:00:00Z",
        tags={"certsync-servers": "EX03", "certsync-hybrid": "true", "certsync-worker-group": "hrw"},
    )
    report = world.reconciler().run(now + dt.timedelta(days=2))
    assert [(n.certificate, n.details["finding"]) for n in world.notifier.of("resolved")] == [
        ("exch-internal", "failed")
    ]
    assert {f.certificate for f in findings(report, "failed")} == {"broken-cert"}


def test_a_notice_that_could_not_be_sent_is_sent_by_the_next_run(world):
    notifier = FailingOnceNotifier()
    now = dt.datetime.now(dt.timezone.utc)
    report = world.reconciler(with_pipeline=False, notifier=notifier).run(now)
    assert notifier.notices == [] and "not sent" in report.failures[0]
    assert [e for e in world.audit().history(NAME) if e.kind == "reconcile-finding"] == []
    world.reconciler(with_pipeline=False, notifier=notifier).run(now + dt.timedelta(days=1))
    assert [n.kind for n in notifier.notices] == ["unprocessed"]


def test_a_vault_that_cannot_be_listed_is_one_failure(world, tmp_path):
    reconciler = world.reconciler()
    reconciler.vaults = ("missing-kv", VAULT)
    reconciler.sources = lambda vault: DirectoryVault(world.vault_dir if vault == VAULT else tmp_path / "nope", vault)
    report = reconciler.run(dt.datetime.now(dt.timezone.utc))
    assert [f.certificate for f in findings(report, "failed")] == ["*"]
    assert "nope" in report.failures[0] and report.certificates == [f"{VAULT}/{NAME}"]
    assert world.notifier.of("failed")[0].vault == "missing-kv"


# --- snapshots -----------------------------------------------------------------------------------


def test_snapshots_have_the_status_schema(world):
    now = dt.datetime.now(dt.timezone.utc)
    world.reconciler().run(now)
    [snapshot] = world.state().snapshots()
    assert set(snapshot) == SNAPSHOT_KEYS | {"forecast", "expiry_windows"}
    assert snapshot["expiry_windows"] == [15.15, 5.05]  # 15% and 5% of its 101 days
    assert snapshot["forecast"] == {
        "ca": None,
        "as_of": None,
        "issuer_strings": [],
        "note": snapshot["forecast"]["note"],
    }
    assert snapshot["schema"] == SNAPSHOT_SCHEMA
    assert (snapshot["certificate"], snapshot["vault"], snapshot["version"]) == (NAME, VAULT, "v2")
    assert snapshot["thumbprint"] == thumbprint(world.new)
    assert snapshot["tls_certificate_name"] == NEW_NAME and snapshot["status"] == "Valid"
    assert snapshot["not_after"] == world.expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert 99 <= snapshot["days_left"] <= 100 and snapshot["expiry_state"] == "ok"
    assert snapshot["checked_at"] == now.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [s["server"] for s in snapshot["servers"]] == ["EX01", "EX02"]
    assert set(snapshot["servers"][0]) == {"server", "outcome", "at", "job_id", "thumbprint"}
    assert snapshot["servers"][0]["job_id"] == job_id(VAULT, NAME, "v2")
    assert snapshot["findings"] == [
        {"code": "unprocessed", "severity": "info", "summary": findings_summary(snapshot, "unprocessed")}
    ]
    assert snapshot["attention"] == "ok"  # info is no cause for attention
    json.dumps(snapshot)


def findings_summary(snapshot: dict, code: str) -> str:
    return next(f["summary"] for f in snapshot["findings"] if f["code"] == code)


def test_a_certificate_that_leaves_the_vault_loses_its_snapshot(world):
    world.reconciler().run(dt.datetime.now(dt.timezone.utc))
    assert [s["certificate"] for s in world.state().snapshots()] == [NAME]
    for path in (world.vault_dir / NAME).iterdir():
        path.unlink()
    (world.vault_dir / NAME).rmdir()
    world.reconciler().run(dt.datetime.now(dt.timezone.utc))
    assert world.state().snapshots() == []


def test_a_snapshot_too_large_for_a_table_property_is_shortened_and_still_json():
    snapshot = {
        "schema": SNAPSHOT_SCHEMA,
        "certificate": NAME,
        "vault": VAULT,
        "servers": [{"server": f"EX{n:02}", "outcome": "never"} for n in range(300)],
        "findings": [{"code": "drift", "severity": "critical", "summary": "x" * 2000} for _ in range(100)],
    }
    text = fit_snapshot(snapshot, table_string_fits)
    assert len(text.encode("utf-16-le")) <= TABLE_STRING_LIMIT
    shortened = json.loads(text)
    assert shortened["truncated"] is True and shortened["certificate"] == NAME
    assert 0 < len(shortened["findings"]) < 100


def test_the_sqlite_state_store_remembers_states_and_snapshots(tmp_path):
    store = SqliteStateStore(tmp_path / "state.sqlite")
    at = dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc)
    assert store.get("kv/a", "expiry") is None
    store.put("KV/A", "expiry", "30", at)
    store.put("kv/a", "expiry", "14", at)
    assert SqliteStateStore(tmp_path / "state.sqlite").get("kv/a", "expiry") == "14"
    for name, vault in (("b", "kv"), ("a", "kv2"), ("a", "kv")):
        store.put_snapshot({"certificate": name, "vault": vault, "n": 1})
    assert [(s["certificate"], s["vault"]) for s in store.snapshots()] == [("a", "kv"), ("a", "kv2"), ("b", "kv")]
    assert store.snapshot_keys() == {"kv/a", "kv2/a", "kv/b"}
    assert store.snapshot("KV", "B") == {"certificate": "b", "vault": "kv", "n": 1}
    store.delete_snapshot("KV2", "A")
    assert len(store.snapshots()) == 2
    assert store.snapshot("kv2", "a") is None and store.snapshot_keys() == {"kv/a", "kv/b"}


def test_the_table_state_store_on_azurite(azurite):
    from azure.data.tables import TableClient

    name = f"state{uuid.uuid4().hex[:8]}"
    store = TableStateStore(TableClient.from_connection_string(azurite.connection_string, name))
    at = dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc)
    assert store.get("contoso-kv/exch", "expiry") is None and store.snapshots() == []  # no table yet
    assert store.snapshot_keys() == set() and store.snapshot("contoso-kv", "exch") is None
    store.put("contoso-kv/exch", "expiry", "30", at)
    store.put("contoso-kv/exch", "expiry", "14", at)
    store.put("other-kv/exch", "expiry", "7", at)
    assert store.get("Contoso-KV/exch", "expiry") == "14" and store.get("other-kv/exch", "expiry") == "7"
    big = {
        "schema": SNAPSHOT_SCHEMA,
        "certificate": "exch",
        "vault": "contoso-kv",
        "findings": [{"code": "drift", "severity": "critical", "summary": "é" * 40000}],
        "servers": [],
    }
    store.put_snapshot(big)
    store.put_snapshot({"schema": SNAPSHOT_SCHEMA, "certificate": "exch", "vault": "other-kv", "findings": []})
    stored = store.snapshots()
    assert [(s["certificate"], s["vault"]) for s in stored] == [("exch", "contoso-kv"), ("exch", "other-kv")]
    assert stored[0]["truncated"] is True
    assert store.snapshot_keys() == {"contoso-kv/exch", "other-kv/exch"}
    assert store.snapshot("Other-KV", "EXCH") == stored[1]
    store.delete_snapshot("other-kv", "exch")
    assert len(store.snapshots()) == 1
    assert store.snapshot_keys() == {"contoso-kv/exch"} and store.snapshot("other-kv", "exch") is None


def test_table_state_store_errors_name_the_table(azurite):
    from azure.data.tables import TableClient

    bad = azurite.connection_string.replace("AccountKey=", "AccountKey=AAAA")
    store = TableStateStore(TableClient.from_connection_string(bad, "certsyncstate", retry_total=0))
    with pytest.raises(StorageError) as caught:
        store.put("kv/a", "expiry", "30", dt.datetime.now(dt.timezone.utc))
    message = str(caught.value)
    assert message.startswith("state table certsyncstate:") and "403" in message and "\n" not in message
    assert "AccountKey" not in message


# --- the sources' listing, locally ---------------------------------------------------------------


def test_a_directory_vault_lists_names_and_its_latest_enabled_version(world):
    vault = DirectoryVault(world.vault_dir, VAULT)
    (world.vault_dir / "not a certificate name").mkdir()
    assert vault.names() == [NAME, "other-web"]
    assert vault.latest(NAME).version == "v2"
    world.add_version(
        NAME,
        "v3",
        pem_of([world.old, world.inter_a]),
        "2026-03-01T00:00:00Z",
        disabled=["v3"],
        tags={"certsync-servers": "EX01"},
    )
    vault = DirectoryVault(world.vault_dir, VAULT)
    assert vault.latest(NAME).version == "v2" and vault.tags(NAME) == {"certsync-servers": "EX01"}
    world.add_version(
        NAME, "v3", pem_of([world.old, world.inter_a]), "2026-03-01T00:00:00Z", disabled=["v1", "v2", "v3"]
    )
    assert vault.latest(NAME) is None and vault.tags(NAME) == {}
    with pytest.raises(SourceError):
        vault.latest("no-such")


# --- the command line ----------------------------------------------------------------------------


def run_cli(world: World, *args: str) -> subprocess.CompletedProcess:
    (world.tmp / "targets.json").write_text(json.dumps(world.targets))
    (world.tmp / "root.pem").write_bytes(world.root.pem)
    environment = {k: v for k, v in os.environ.items() if k != "CERTSYNC_DEBUG"}
    return subprocess.run(
        [
            CERTSYNC,
            "reconcile",
            "--vault-dir",
            str(world.vault_dir),
            "--vault",
            VAULT,
            "--targets",
            str(world.tmp / "targets.json"),
            "--trust",
            str(world.tmp / "root.pem"),
            "--allow-host",
            f"127.0.0.1:{world.server.port}",
            "--outbox",
            str(world.tmp / "outbox"),
            "--audit",
            str(world.tmp / "audit.sqlite"),
            "--state",
            str(world.tmp / "state.sqlite"),
            "--inventory-store",
            str(world.tmp / "inventory.sqlite"),
            *args,
        ],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        cwd=world.tmp,
    )


def test_certsync_reconcile_prints_findings_and_exits_1_then_0(world):
    first = run_cli(world)
    assert first.returncode == 1, first.stderr
    lines = [line.split(None, 4) for line in first.stdout.splitlines()]
    assert lines[0] == ["SEVERITY", "CERTIFICATE", "CHECK", "STATE", "DETAIL"]
    assert lines[1][:5] == ["INFO", NAME, "unprocessed", "v2", "(new)  " + lines[1][4][7:]]
    assert lines[2][:4] == ["PROCESSED", NAME, "processed", "v2"] and lines[2][4].startswith("queued (job ")
    assert first.stdout.splitlines()[-1].startswith("1 certificate(s) in ")
    assert first.stdout.splitlines()[-1].endswith(": 1 info (1 new); 1 processed.")
    assert len(world.jobs()) == 1

    second = run_cli(world, "--json")
    assert second.returncode == 0, second.stdout + second.stderr
    report = json.loads(second.stdout)
    assert report["findings"] == [] and report["certificates"] == [f"{VAULT}/{NAME}"]

    late = run_cli(world, "--at", (world.expires - dt.timedelta(days=10)).isoformat())
    assert late.returncode == 1 and ["WARNING", NAME, "expiry", "warning"] in [
        line.split()[:4] for line in late.stdout.splitlines()
    ]
    assert late.stdout.splitlines()[-1].endswith(": 1 warning (1 new).")


@pytest.mark.parametrize(
    ("args", "words"),
    [(("--at", "tomorrow"), "--at 'tomorrow'"), (("--vault", "bad_name"), "vault name 'bad_name'")],
)
def test_certsync_reconcile_bad_input_exits_2_with_one_line(world, args, words):
    result = run_cli(world, *args)
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("certsync: error: ") and words in line


# --- discovery ------------------------------------------------------------------------------------


def test_each_run_starts_the_discovery_of_the_worker_groups_the_targets_name(world, arm, tmp_path):
    """Through the Automation client on the fake ARM: one job per group and hour, found again by a second
    run in the same hour; a group Automation refuses is a failure of the run, not an exception."""
    import dataclasses

    from shared.adapters.azure.automation import AutomationClient
    from shared.adapters.local.sqlite import SqliteInventoryStore
    from shared.remediation.discovery import Discovery, DiscoverySettings

    client = AutomationClient(arm.account_id, arm.credential, endpoint=arm.endpoint, **arm.client_kwargs)
    arm.runbooks = (*arm.runbooks, "Get-CertsyncInventory")
    discovery = Discovery(
        automation=client,
        store=SqliteInventoryStore(tmp_path / "inventory.sqlite"),
        audit=world.audit(),
        settings=DiscoverySettings(),
        notifier=world.notifier,
    )
    reconciler = dataclasses.replace(world.reconciler(), discovery=discovery)
    now = dt.datetime.now(dt.timezone.utc)
    report = reconciler.run(now)
    assert report.discoveries == ["hrw-exchange"] and report.failures == []
    assert report.to_dict()["discoveries"] == ["hrw-exchange"]
    again = dataclasses.replace(world.reconciler(), discovery=discovery).run(now)
    assert again.discoveries == ["hrw-exchange"]
    assert len([r for r in arm.requests if r[0] == "PUT"]) == 1  # found, not started twice

    world.targets["certificates"]["*"]["worker_group"] = "hrw-gone"
    failed = dataclasses.replace(world.reconciler(), discovery=discovery).run(now)
    assert failed.discoveries == []
    [failure] = failed.failures
    assert failure.startswith("discovery of worker group hrw-gone not started:") and "\n" not in failure


def test_the_issuance_policy_s_problems_are_on_the_status_page_before_the_renewal(world):
    policy = {
        "key_props": {"exportable": False, "kty": "RSA", "key_size": 2048},
        "secret_props": {"contentType": "application/x-pkcs12"},
        "x509_props": {"subject": "", "validity_months": 12},
        "lifetime_actions": [{"trigger": {"lifetime_percentage": 67}, "action": {"action_type": "AutoRenew"}}],
    }
    (world.vault_dir / NAME / "policy.json").write_text(json.dumps(policy))
    now = dt.datetime.now(dt.timezone.utc)
    world.reconciler().run(now)
    [snapshot] = world.state().snapshots()
    policy_findings = {f["code"]: f for f in snapshot["findings"] if f["code"].startswith("policy-")}
    assert set(policy_findings) == {"policy-key-not-exportable", "policy-subject-empty"}
    assert policy_findings["policy-subject-empty"]["severity"] == "warning"
    assert "Let's Encrypt 'classic'" in policy_findings["policy-subject-empty"]["summary"]
    assert snapshot["attention"] == "warning" and world.notifier.of("expiry-warning") == []
    from shared.notify.status_page import PageQuery, render_status_page

    page = render_status_page([snapshot], now, query=PageQuery(certificate=f"{VAULT}/{NAME}"))
    assert "policy-subject-empty" in page and "Key Vault policy: the policy&#x27;s subject is empty" in page
    assert "Next renewal" in page and "not in certsync&#x27;s table of CA hierarchies" in page


def test_the_pipeline_takes_the_history_the_reconciliation_read_and_hands_back_what_it_audited(world, monkeypatch):
    reads = []
    real = SqliteAuditLog.history
    monkeypatch.setattr(SqliteAuditLog, "history", lambda self, *a, **k: reads.append(a) or real(self, *a, **k))
    reconciler = world.reconciler()
    report = reconciler.run(dt.datetime.now(dt.timezone.utc))
    [processed] = report.processed
    assert processed["outcome"] == "queued"
    assert reads == [("pending/versions",)]  # the versions due again; the certificate's own: one batch read
    [snapshot] = world.state().snapshots()
    stored = [e.kind for e in world.audit().history(NAME) if e.version == "v2"]
    assert stored[:4] == ["event-received", "assessment", "plan", "job-queued"]
    assert snapshot["status"] == "Valid" and snapshot["version"] == "v2"


def test_an_event_given_its_history_uses_it_and_reports_its_own_entries(world):
    from shared.pipeline.audit import AuditEntry
    from shared.pipeline.events import parse_event
    from tests.test_pipeline import event

    pipeline = world.reconciler().pipeline
    assert pipeline is not None
    pipeline.settings = dataclasses.replace(pipeline.settings, approval_required=True)
    delivered = parse_event(event("v2", vault=VAULT, name=NAME))
    waiting = pipeline.process(delivered, history=[])
    assert waiting.outcome == "awaiting-approval"
    assert [e.kind for e in waiting.audited] == ["event-received", "assessment", "plan", "awaiting-approval"]
    approved = AuditEntry(NAME, "approved", "c1", "approved by a person", vault=VAULT, version="v2")
    queued = pipeline.process(delivered, history=[*waiting.audited, approved])  # never written: only given
    assert queued.outcome == "queued"
    assert [e.kind for e in queued.audited] == ["event-received", "assessment", "plan", "job-queued"]


def test_a_reconciliation_reads_each_folder_once_the_pipeline_included(world, monkeypatch):
    from shared.adapters.local.vault_directory import DirectoryVault

    vault = DirectoryVault(world.vault_dir, VAULT)
    scans: list[str] = []
    real = DirectoryVault._folder

    def folder(self, name, *, recheck=True):
        before = self._folders.get(name.lower())
        found = real(self, name, recheck=recheck)
        if before is None or before.listing != found.listing or recheck:
            scans.append(name)
        return found

    monkeypatch.setattr(DirectoryVault, "_folder", folder)
    reconciler = world.reconciler()
    reconciler.sources = lambda _vault: vault
    assert reconciler.pipeline is not None
    reconciler.pipeline.sources = reconciler.sources
    report = reconciler.run(dt.datetime.now(dt.timezone.utc))
    assert [p["outcome"] for p in report.processed] == ["queued"]
    assert scans.count(NAME) == 1  # tags, latest, and the pipeline's get and previous: one check
