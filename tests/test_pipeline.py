"""The pipeline end to end on its local adapters: a vault directory, the outbox, SQLite, and CRLs served
on loopback. A renewal whose issuing intermediate rotated (A -> B), and every way an event can end."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from shared.adapters.local.outbox import OutboxQueue
from shared.adapters.local.sqlite import SqliteAuditLog, SqliteInventoryStore
from shared.adapters.local.vault_directory import DirectoryVault
from shared.errors import CertsyncError
from shared.pipeline.audit import AuditEntry
from shared.pipeline.events import EventError, parse_event
from shared.pipeline.inventories import InventoryRecord, audit_partition
from shared.pipeline.process import Pipeline, PipelineSettings, rejected_partition
from shared.pipeline.sources import SourceError
from shared.pipeline.targets import parse_targets_json
from shared.remediation.automation import AutomationError
from shared.remediation.discovery import Discovery, discovery_job_name
from shared.remediation.messages import parse_job_message
from shared.settings import load
from shared.validation.assessment import TrustStore
from shared.wiring import automation_client, inventory_validator
from shared.x509.certificate import Certificate
from tests.chains import MAIL_HOSTS, Issued, RenewalPki, make_crl, pem_of, renewal_pki
from tests.inventories import GROUP, INTERNAL, SEND, exchange, keep, tls_name

NAME = "exch-hybrid-smtp"
VAULT = "contoso-kv"
HOSTS = MAIL_HOSTS
TARGETS = {
    "schema": "certsync.targets/1",
    "certificates": {
        NAME: {
            "worker_group": GROUP,
            "servers": ["EX01", "EX02"],
            "send_connectors": [SEND],
            "hybrid_configuration": True,
            "hosts": HOSTS,
        }
    },
}
NOW = dt.datetime(2026, 11, 26, 8, 0, tzinfo=dt.timezone.utc)


def event(
    version: str,
    *,
    event_type: str = "CertificateNewVersionCreated",
    vault: str = VAULT,
    name: str = NAME,
    event_id: str | None = None,
    **data,
) -> dict:
    """A Key Vault event in the Event Grid schema, as Event Grid delivers it (also for the storm and the benches)."""
    body = {
        "Id": f"https://{vault}.vault.azure.net/certificates/{name}/{version}",
        "VaultName": vault,
        "ObjectType": "Certificate",
        "ObjectName": name,
        "Version": version,
        "NBF": 1777622400,
        "EXP": 1809158400,
    } | data
    return {
        "id": event_id or f"evt-{version}-{event_type}",
        "topic": f"/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/{vault}",
        "subject": name,
        "eventType": f"Microsoft.KeyVault.{event_type}",
        "eventTime": "2026-11-26T08:00:00.1234567Z",
        "data": body,
        "dataVersion": "1",
        "metadataVersion": "1",
    }


@dataclass
class Renewal(RenewalPki):
    old: Issued
    new: Issued
    vault_dir: Path
    outbox: Path
    audit_path: Path
    inventory_path: Path

    def pipeline(self, targets: dict | None = TARGETS, discovery=None, **settings) -> Pipeline:
        settings.setdefault("trust", TrustStore.from_certificates([Certificate.from_der(self.root.der)], "test"))
        settings.setdefault("allow_hosts", (f"127.0.0.1:{self.server.port}",))
        return Pipeline(
            sources=lambda vault: DirectoryVault(self.vault_dir, vault),
            jobs=OutboxQueue(self.outbox),
            audit=SqliteAuditLog(self.audit_path),
            settings=PipelineSettings(**settings),
            targets_file=parse_targets_json(json.dumps(targets), "targets.json") if targets else None,
            inventories=SqliteInventoryStore(self.inventory_path),
            discovery=discovery,
            clock=lambda: NOW,
        )

    def store(self, document: dict, *, group: str = GROUP, collected: dt.datetime | None = None) -> InventoryRecord:
        return keep(SqliteInventoryStore(self.inventory_path), document, group=group, collected=collected)

    def add_version(self, version: str, data: bytes, suffix: str = ".pem") -> None:
        (self.vault_dir / NAME / f"{version}{suffix}").write_bytes(data)

    def history(self) -> list:
        return list(SqliteAuditLog(self.audit_path).history(NAME))

    def jobs(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(self.outbox.glob("*.json"))]


@pytest.fixture
def renewal(tmp_path: Path, http_server) -> Renewal:
    pki = renewal_pki(http_server)
    vault_dir = tmp_path / "vault"
    (vault_dir / NAME).mkdir(parents=True)
    r = Renewal(
        **vars(pki),
        old=pki.leaf(pki.inter_a),
        new=pki.leaf(pki.inter_b),
        vault_dir=vault_dir,
        outbox=tmp_path / "outbox",
        audit_path=tmp_path / "audit.sqlite",
        inventory_path=tmp_path / "inventory.sqlite",
    )
    r.add_version("v1", pem_of([r.old, r.inter_a]))
    r.add_version("v2", pem_of([r.new, r.inter_b]))
    (vault_dir / NAME / "certificate.json").write_text(
        json.dumps({"created": {"v1": "2026-08-01T00:00:00Z", "v2": "2026-11-20T00:00:00Z"}})
    )
    r.store(exchange(r.old))  # Exchange uses v1 today, read an hour ago
    return r


def kinds(entries) -> list[str]:
    return [e.kind for e in entries]


def test_a_renewal_with_a_new_intermediate_queues_a_plan_in_the_safe_order(renewal):
    outcome = renewal.pipeline().process(parse_event(event("v2")))
    assert outcome.outcome == "queued", outcome.to_dict()
    assert outcome.assessment.status == "Valid"
    plan = outcome.plan_document
    assert plan["schema"] == "certsync.plan/2" and plan["blocked"] is None
    assert plan["worker_group"] == GROUP and plan["servers"] == ["EX01", "EX02"]
    assert plan["probe"] == [f"{host}:25" for host in HOSTS]  # probed after the remediation, as EXO connects
    old_cert = Certificate.from_der(renewal.old.der)
    assert plan["old_certificates"] == [old_cert.thumbprint]  # the previous Key Vault version
    old, new = tls_name(renewal.old), plan["certificate"]["tls_certificate_name"]
    assert old == "<I>CN=R10, O=Contoso, C=US<S>CN=mail.contoso.com, C=US"
    assert new == "<I>CN=R11, O=Contoso, C=US<S>CN=mail.contoso.com, C=US"
    actions = [(s["phase"], s["action"], s["server"]) for s in plan["steps"]]
    stage = [a for a in actions if a[0] == "stage"]
    assert stage[:5] == [
        ("stage", "install-intermediate", "EX01"),
        ("stage", "import-certificate", "EX01"),
        ("stage", "enable-services", "EX01"),
        ("stage", "check-status", "EX01"),
        ("stage", "check-name", "EX01"),
    ]
    phases = [a[0] for a in actions]
    assert phases == sorted(phases, key=["stage", "switch", "verify", "retire"].index)
    switch = {(s["action"], s["object"]): (s["previous"], s["value"]) for s in plan["steps"] if s["phase"] == "switch"}
    assert switch == {
        ("set-send-connector", SEND): (old, new),
        ("set-receive-connector", "EX01\\Default Frontend EX01"): (old, new),
        ("set-receive-connector", "EX02\\Default Frontend EX02"): (old, new),
        ("set-hybrid-configuration", "Hybrid Configuration"): (old, new),
    }
    retire = [s for s in plan["steps"] if s["phase"] == "retire"]
    assert [(s["action"], s["object"]) for s in retire] == [("remove-certificate", old_cert.thumbprint)] * 2
    enable = next(s for s in plan["steps"] if s["action"] == "enable-services")
    assert enable["value"] == ["IIS", "SMTP"] and enable["internal_transport_certificate"] == INTERNAL["EX01"]
    # the plan records the inventory it was made from
    stored = SqliteInventoryStore(renewal.inventory_path).get(GROUP)
    digest = hashlib.sha256(json.dumps(stored.inventory, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert plan["inventory"] == {"worker_group": GROUP, "collected_at": "2026-11-26T07:00:00Z", "sha256": digest}
    [job] = renewal.jobs()
    assert job["plan"]["schema"] == "certsync.plan/2" and job["version"] == "v2" and job["vault"] == VAULT
    assert job["plan"]["inventory"] == plan["inventory"]
    assert job["secret_id"] == f"https://{VAULT}.vault.azure.net/secrets/{NAME}/v2"
    certificate = job["plan"]["certificate"]
    assert (certificate["vault"], certificate["name"], certificate["version"]) == (VAULT, NAME, "v2")
    assert certificate["secret_id"] == job["secret_id"]
    inter_b = Certificate.from_der(renewal.inter_b.der)
    assert [i["thumbprint"] for i in certificate["intermediates"]] == [inter_b.thumbprint]
    assert base64.b64decode(certificate["intermediates"][0]["der_base64"]) == renewal.inter_b.der
    history = renewal.history()
    assert kinds(history) == ["event-received", "assessment", "plan", "job-queued"]
    assert len({e.correlation_id for e in history}) == 1
    assert "der_base64" not in json.dumps([e.to_dict() for e in history])
    assert history[2].details["plan"]["inventory"] == plan["inventory"]
    assert parse_job_message(json.dumps(job)).job.plan == job["plan"]  # remediation takes plan/2 jobs


def test_a_server_that_sends_hybrid_mail_but_is_missing_from_the_targets_file_is_planned(renewal):
    """Issue 15's first defect: EX03 sends through the hybrid send connector with the old certificate, but
    the targets file lists EX01 and EX02 only. It must get the new certificate too, or its mail fails with
    454 4.7.5."""
    renewal.store(exchange(renewal.old, servers=("EX01", "EX02", "EX03")))
    outcome = renewal.pipeline().process(parse_event(event("v2")))
    assert outcome.outcome == "queued", outcome.reason
    plan = outcome.plan_document
    assert plan["servers"] == ["EX01", "EX02", "EX03"]
    new = Certificate.from_der(renewal.new.der).thumbprint
    assert ("import-certificate", "EX03", new) in [(s["action"], s["server"], s["object"]) for s in plan["steps"]]
    assert ("verify", "EX03") in [(s["phase"], s["server"]) for s in plan["steps"]]
    [job] = renewal.jobs()
    assert "EX03" in job["plan"]["servers"]


def test_a_targets_object_the_inventory_disagrees_with_is_a_conflict_never_a_write(renewal):
    targets = json.loads(json.dumps(TARGETS))
    targets["certificates"][NAME]["send_connectors"] = [SEND, "Partner TLS to fabrikam"]
    targets["certificates"][NAME]["receive_connectors"] = ["EX01\\Default Frontend EX01"]
    outcome = renewal.pipeline(targets).process(parse_event(event("v2")))
    plan = outcome.plan_document
    assert plan["conflicts"] == ["send connector 'Partner TLS to fabrikam' is in the targets but not in the inventory"]
    written = {s["object"] for s in plan["steps"] if s["phase"] == "switch"}
    assert "Partner TLS to fabrikam" not in written
    assert "EX02\\Default Frontend EX02" not in written  # narrowed by the targets, and said so
    assert any("Default Frontend EX02" in w and "not in the targets; left as is" in w for w in plan["warnings"])
    assert "1 conflict(s) with the targets (not written)" in outcome.reason


def test_no_inventory_without_discovery_waits_and_says_what_to_run(renewal):
    SqliteInventoryStore(renewal.inventory_path).put(  # another group's inventory does not count
        InventoryRecord("hrw-other", NOW, NOW, exchange(renewal.old), "import")
    )
    renewal.inventory_path.unlink()
    outcome = renewal.pipeline().process(parse_event(event("v2")))
    assert outcome.outcome == "waiting-for-inventory"
    assert outcome.reason == (
        f"no inventory of worker group {GROUP} yet; import one with: certsync discover --import FILE "
        f"--worker-group {GROUP} (or give certsync process --inventory FILE), then process this event again"
    )
    assert renewal.jobs() == [] and outcome.plan is None
    assert kinds(renewal.history()) == ["event-received", "assessment", "waiting-for-inventory"]
    [waiting] = SqliteAuditLog(renewal.audit_path).history(audit_partition(GROUP))
    assert waiting.kind == "waiting-for-inventory" and waiting.details["event"]["version"] == "v2"


def test_a_stale_inventory_is_never_planned_on(renewal):
    renewal.store(exchange(renewal.old), collected=NOW - dt.timedelta(hours=25))
    outcome = renewal.pipeline().process(parse_event(event("v2")))
    assert outcome.outcome == "waiting-for-inventory" and renewal.jobs() == []
    assert outcome.reason.startswith(
        f"the inventory of worker group {GROUP} is 25 h old (collected 2026-11-25T07:00:00Z), older than "
        "the 24 h CERTSYNC_INVENTORY_MAX_AGE_HOURS allows"
    )
    fresh_enough = renewal.pipeline(inventory_max_age=dt.timedelta(hours=26))
    assert fresh_enough.process(parse_event(event("v2"))).outcome == "queued"


def test_an_unchanged_name_imports_without_touching_connectors(renewal):
    same_issuer = renewal.leaf(renewal.inter_b)
    renewal.add_version("v3", pem_of([same_issuer, renewal.inter_b]))
    (renewal.vault_dir / NAME / "certificate.json").write_text(
        json.dumps(
            {"created": {"v1": "2026-08-01T00:00:00Z", "v2": "2026-11-20T00:00:00Z", "v3": "2026-11-25T00:00:00Z"}}
        )
    )
    renewal.store(exchange(renewal.new))  # v2 is deployed; v3 has its TlsCertificateName
    outcome = renewal.pipeline().process(parse_event(event("v3")))
    plan = outcome.plan_document
    assert outcome.outcome == "queued", outcome.reason
    assert {s["phase"] for s in plan["steps"]} == {"stage", "verify", "retire"}
    assert "0 switch(es)" in plan["summary"]


# The certsync.plan/2 document's keys as the pipeline queues it: the planner's (exchange-inventory.md §3),
# then the pipeline's additional fields; the certificate's with its Key Vault identity.
PLAN_KEYS = [
    "schema",
    "certificate",
    "servers",
    "blocked",
    "warnings",
    "steps",
    "kept",
    "old_certificates",
    "conflicts",
    "worker_group",
    "probe",
    "assessment_status",
    "nothing_to_change",
    "summary",
    "inventory",
]
CERTIFICATE_KEYS = [
    "thumbprint",
    "tls_certificate_name",
    "vault",
    "name",
    "version",
    "secret_id",
    "not_after",
    "intermediates",
]
STEP_KEYS = ["phase", "action", "server", "object", "property", "previous", "value", "manual"]


def test_the_plan_document_in_the_request_and_in_the_audit_trail(renewal):
    pipeline = renewal.pipeline()
    first = pipeline.process(parse_event(event("v1")))  # v1 is what Exchange has: nothing to change
    second = pipeline.process(parse_event(event("v2")))
    assert (first.outcome, second.outcome) == ("nothing-to-change", "queued")
    for document in (first.plan_document, second.plan_document):
        assert list(document) == PLAN_KEYS and list(document["certificate"]) == CERTIFICATE_KEYS
        for step in document["steps"]:
            assert list(step)[: len(STEP_KEYS)] == STEP_KEYS, step
    # the queued request carries the document; the audit trail the same without the intermediates' DER
    [job] = renewal.jobs()
    assert job["job_id"] == second.request.job_id
    queued = json.loads(json.dumps(job["plan"]))
    for item in queued["certificate"]["intermediates"]:
        del item["der_base64"]
    assert queued == second.plan_document
    audited = [e.details["plan"] for e in renewal.history() if e.kind == "plan"]
    assert audited == [first.plan_document, second.plan_document]
    assert "der_base64" not in json.dumps(audited)


def test_the_same_certificate_as_a_new_version_changes_nothing(renewal):
    renewal.add_version("v3", pem_of([renewal.new, renewal.inter_b]))
    (renewal.vault_dir / NAME / "certificate.json").write_text(
        json.dumps(
            {"created": {"v1": "2026-08-01T00:00:00Z", "v2": "2026-11-20T00:00:00Z", "v3": "2026-11-25T00:00:00Z"}}
        )
    )
    renewal.store(exchange(renewal.new))
    outcome = renewal.pipeline().process(parse_event(event("v3")))
    assert outcome.outcome == "nothing-to-change"
    assert outcome.plan_document["nothing_to_change"]
    changes = {s["action"] for s in outcome.plan_document["steps"] if not s["action"].startswith("check-")}
    assert changes == {"install-intermediate"}  # found in place by the runbook: no job for that alone
    assert "Nothing to change" in outcome.plan_document["summary"]
    assert renewal.jobs() == []


def test_a_disabled_previous_version_is_skipped_for_the_diff(renewal):
    renewal.add_version("v0", pem_of([renewal.new, renewal.inter_b]))
    (renewal.vault_dir / NAME / "certificate.json").write_text(
        json.dumps(
            {
                "disabled": ["v1"],
                "created": {"v0": "2026-01-01T00:00:00Z", "v1": "2026-08-01T00:00:00Z", "v2": "2026-11-20T00:00:00Z"},
            }
        )
    )
    renewal.store(exchange(renewal.new))
    outcome = renewal.pipeline().process(parse_event(event("v2")))
    assert outcome.previous.version == "v0"
    assert outcome.outcome == "nothing-to-change"


def test_a_revoked_certificate_blocks_the_plan_and_says_why(renewal):
    serial = renewal.new.cert.serial_number
    renewal.server.route(
        "/R11.crl",
        body=make_crl(
            renewal.inter_b,
            [(serial, x509.ReasonFlags.key_compromise, dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2))],
        ),
    )
    outcome = renewal.pipeline().process(parse_event(event("v2")))
    assert outcome.outcome == "blocked"
    assert outcome.assessment.status == "Revoked"
    assert "Revoked" in outcome.reason
    assert renewal.jobs() == []
    history = renewal.history()
    assert kinds(history) == ["event-received", "assessment", "plan", "blocked"]
    assert "Revoked" in history[-1].summary


def test_policy_may_allow_a_status_other_than_valid(renewal):
    renewal.server.route("/R11.crl", status=500)
    targets = json.loads(json.dumps(TARGETS))
    strict = renewal.pipeline().process(parse_event(event("v2")))
    assert (strict.outcome, strict.assessment.status) == ("blocked", "RevocationCheckFailure")
    targets["certificates"][NAME]["allow_status"] = ["RevocationCheckFailure"]
    lenient = renewal.pipeline(targets).process(parse_event(event("v2", event_type="CertificateNewVersionCreated")))
    assert lenient.outcome == "queued"


def test_no_targets_blocks_with_the_remedy(renewal):
    outcome = renewal.pipeline(targets=None).process(parse_event(event("v2")))
    assert outcome.outcome == "blocked"
    assert "no targets" in outcome.reason and "certsync-worker-group" in outcome.reason
    assert kinds(renewal.history())[-1] == "blocked"


def test_tags_alone_are_targets_a_worker_group_is_enough(renewal):
    (renewal.vault_dir / NAME / "certificate.json").write_text(
        json.dumps(
            {
                "created": {"v1": "2026-08-01T00:00:00Z", "v2": "2026-11-20T00:00:00Z"},
                "tags": {"certsync-worker-group": "hrw-b", "certsync-hybrid": "false"},
            }
        )
    )
    renewal.store(exchange(renewal.old), group="hrw-b")
    outcome = renewal.pipeline(targets=None).process(parse_event(event("v2")))
    assert outcome.outcome == "queued", outcome.reason
    plan = outcome.plan_document
    assert plan["worker_group"] == "hrw-b" and plan["servers"] == ["EX01", "EX02"]
    assert plan["inventory"]["worker_group"] == "hrw-b"
    assert {s["object"] for s in plan["steps"] if s["phase"] == "switch"} == {
        SEND,
        "EX01\\Default Frontend EX01",
        "EX02\\Default Frontend EX02",
    }  # the tag excludes the hybrid configuration
    assert "the hybrid configuration selects the old certificate but the targets exclude it" in plan["warnings"]


@pytest.mark.parametrize(
    ("envelope", "why"),
    [
        (event("v2", vault="other-kv"), "not on the allow-list"),
        (event("v2") | {"eventType": "Microsoft.KeyVault.SecretNewVersionCreated"}, "not a certificate event"),
    ],
)
def test_events_certsync_does_not_act_on_are_acknowledged_and_audited(renewal, envelope, why):
    outcome = renewal.pipeline(vaults=(VAULT,)).process(parse_event(envelope))
    assert outcome.outcome == "ignored" and why in outcome.reason
    assert kinds(renewal.history()) == ["event-received", "event-ignored"]
    assert renewal.jobs() == []


def test_a_malformed_event_is_audited_and_raised_for_redelivery(renewal):
    broken = event("v2")
    del broken["data"]["Version"]
    broken["data"]["Id"] = f"https://{VAULT}.vault.azure.net/certificates/{NAME}"
    with pytest.raises(EventError, match="has no Version"):
        renewal.pipeline().process(parse_event(broken))
    assert kinds(renewal.history()) == ["event-received", "event-rejected"]


def test_a_version_the_vault_does_not_have_is_audited_and_raised(renewal):
    with pytest.raises(SourceError, match="no version 'v9'") as caught:
        renewal.pipeline().process(parse_event(event("v9")))
    assert caught.value.kind == "not-found"
    history = renewal.history()
    assert kinds(history) == ["event-received", "event-failed"]
    assert "v9" in history[-1].summary


@pytest.mark.parametrize("event_type", ["CertificateNearExpiry", "CertificateExpired"])
def test_expiry_events_assess_and_warn_without_queueing(renewal, event_type):
    outcome = renewal.pipeline().process(parse_event(event("v2", event_type=event_type)))
    assert outcome.outcome == "expiry-warning" and "renew it in Key Vault" in outcome.reason
    assert kinds(renewal.history()) == ["event-received", "assessment", "expiry-warning"]
    assert renewal.jobs() == []


def test_a_pfx_version_never_lets_key_material_out(renewal):
    key_der = renewal.new.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pfx = pkcs12.serialize_key_and_certificates(
        b"mail", renewal.new.key, renewal.new.cert, [renewal.inter_b.cert], serialization.NoEncryption()
    )
    (renewal.vault_dir / NAME / "v2.pem").unlink()
    renewal.add_version("v2", pfx, ".pfx")
    outcome = renewal.pipeline().process(parse_event(event("v2")))
    assert outcome.outcome == "queued", outcome.to_dict()
    everything = json.dumps(renewal.jobs()) + json.dumps([e.to_dict() for e in renewal.history()])
    everything += json.dumps(outcome.to_dict())
    for secret in (key_der,):  # the PFX holds this key; its certificates are public and may appear
        for chunk in (secret[-48:-16], secret[len(secret) // 2 : len(secret) // 2 + 24]):
            assert chunk.hex() not in everything.lower()
            assert base64.b64encode(chunk).decode()[4:-4] not in everything


# --- discover, then plan: the real Discovery against the HTTPS ARM fake -----------------------------------


@pytest.fixture
def arm(keyvault_tls):
    from tests.fakes.arm import FakeArm

    with FakeArm(keyvault_tls, runbooks=("Get-CertsyncInventory",), worker_groups=(GROUP,)) as fake:
        yield fake


def discovering(renewal: Renewal, arm, **pipeline_options) -> tuple[Pipeline, Discovery]:
    """The pipeline with a discovery that starts jobs on the ARM fake and stores into the same inventory
    store and audit trail; the stored inventory lets the pipeline plan what waited (as `shared.wiring` does)."""
    pipeline = renewal.pipeline(**pipeline_options)
    discovery = Discovery(
        automation=automation_client(load(arm.env), arm.credential, **arm.client_kwargs),
        store=SqliteInventoryStore(renewal.inventory_path),
        audit=SqliteAuditLog(renewal.audit_path),
        validate=inventory_validator(),
        on_stored=lambda record: pipeline.resume(record.worker_group),
        clock=lambda: NOW,
    )
    pipeline.discovery = discovery
    return pipeline, discovery


def test_a_missing_inventory_starts_discovery_and_the_version_is_planned_once_when_it_is_stored(renewal, arm):
    renewal.inventory_path.unlink()
    pipeline, discovery = discovering(renewal, arm)
    arm.script(["Running", "Completed"], output="Reading EX01\n" + json.dumps(exchange(renewal.old)) + "\n")
    waiting = pipeline.process(parse_event(event("v2")))
    assert waiting.outcome == "waiting-for-inventory" and renewal.jobs() == []
    assert f"discovery of {GROUP} started: this version is planned once its inventory is stored" in waiting.reason
    again = pipeline.process(parse_event(event("v2")))  # redelivered within the hour: the same job, found
    assert again.outcome == "waiting-for-inventory"
    name = discovery_job_name(GROUP, NOW)
    polls = [discovery.poll(GROUP, name).outcome for _ in range(2)]
    assert polls[-1] == "stored" and set(polls) <= {"running", "stored"}
    [queued] = renewal.jobs()
    assert queued["version"] == "v2" and queued["plan"]["inventory"]["worker_group"] == GROUP
    assert queued["plan"]["servers"] == ["EX01", "EX02"]
    # another look at the ended job, a second discovery, a second resume: nothing is planned twice
    assert discovery.poll(GROUP, name).outcome == "stored"
    assert pipeline.resume(GROUP) == []
    assert len(renewal.jobs()) == 1
    history = kinds(renewal.history())
    assert history.count("waiting-for-inventory") == 2 and history.count("job-queued") == 1
    assert history[-2:] == ["plan", "job-queued"]
    group = [e.kind for e in SqliteAuditLog(renewal.audit_path).history(audit_partition(GROUP))]
    assert group.count("discovery-started") == 1 and group.count("waiting-for-inventory") == 2
    assert "discovery-result" in group


def test_a_waiting_version_whose_run_fails_stays_waiting_and_the_others_are_planned(renewal, arm):
    renewal.inventory_path.unlink()
    pipeline, discovery = discovering(renewal, arm)
    arm.script(["Completed"], output=json.dumps(exchange(renewal.old)))
    renewal.add_version("v3", pem_of([renewal.leaf(renewal.inter_b), renewal.inter_b]))
    (renewal.vault_dir / NAME / "certificate.json").write_text(
        json.dumps(
            {"created": {"v1": "2026-08-01T00:00:00Z", "v2": "2026-11-20T00:00:00Z", "v3": "2026-11-25T00:00:00Z"}}
        )
    )
    assert pipeline.process(parse_event(event("v2"))).outcome == "waiting-for-inventory"
    assert pipeline.process(parse_event(event("v3"))).outcome == "waiting-for-inventory"
    (renewal.vault_dir / NAME / "v3.pem").unlink()  # v3 cannot be read when its turn comes
    outcome = discovery.start(GROUP)
    assert outcome.outcome == "found"
    assert discovery.poll(GROUP, outcome.automation_job).outcome == "stored"
    assert [job["version"] for job in renewal.jobs()] == ["v2"]
    renewal.add_version("v3", pem_of([renewal.leaf(renewal.inter_b), renewal.inter_b]))
    [planned] = pipeline.resume(GROUP)  # the next inventory plans it; v2 is settled
    assert planned.event.version == "v3"


def test_discovery_that_cannot_start_blocks_or_is_retried(renewal, arm):
    renewal.inventory_path.unlink()
    pipeline, _ = discovering(renewal, arm)
    arm.fail_next(503, method="PUT")
    with pytest.raises(AutomationError):
        pipeline.process(parse_event(event("v2")))  # Event Grid delivers it again
    assert kinds(renewal.history())[-1] == "event-failed"
    arm.fail_next(403, method="PUT")
    blocked = pipeline.process(parse_event(event("v2")))
    assert blocked.outcome == "blocked"
    assert blocked.reason.startswith(f"no inventory of worker group {GROUP} yet, and discovery of {GROUP} could not")
    assert renewal.jobs() == []


def test_waiting_entries_that_are_not_events_are_skipped(renewal):
    audit = SqliteAuditLog(renewal.audit_path)
    audit.record(
        AuditEntry(
            certificate=audit_partition(GROUP),
            kind="waiting-for-inventory",
            correlation_id="x",
            summary="hand-made",
            vault=VAULT,
            version="v2",
            details={"worker_group": GROUP, "certificate": NAME, "event": {"name": NAME}},
        )
    )
    assert renewal.pipeline().resume(GROUP) == []
    assert renewal.jobs() == []


# --- certsync process: the local inventory --------------------------------------------------------------


def local_options(renewal: Renewal, trust: bytes | None = None) -> list[str]:
    """The renewal's local adapters as certsync's options, with TARGETS and the trust file (the root's, or
    `trust`) written beside its vault directory."""
    folder = renewal.vault_dir.parent
    (folder / "targets.json").write_text(json.dumps(TARGETS))
    (folder / "root.pem").write_bytes(trust or renewal.root.pem)
    return [
        "--vault-dir",
        str(renewal.vault_dir),
        "--targets",
        str(folder / "targets.json"),
        "--trust",
        str(folder / "root.pem"),
        "--allow-host",
        f"127.0.0.1:{renewal.server.port}",
        "--outbox",
        str(renewal.outbox),
        "--audit",
        str(renewal.audit_path),
    ]


def run_process(renewal: Renewal, capsys, *options: str) -> tuple[int, str, str]:
    from shared.cli.main import main

    path = renewal.vault_dir.parent / "event.json"
    path.write_text(json.dumps(event("v2")))
    code = main(["process", str(path), *local_options(renewal), *options])
    out, err = capsys.readouterr()
    return code, out, err


def test_certsync_process_plans_from_an_inventory_file(renewal, capsys):
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    inventory = renewal.vault_dir.parent / "inventory.json"
    inventory.write_text(json.dumps(exchange(renewal.old, collected_at=now)), encoding="utf-16")  # as PS 5.1 saves
    code, out, err = run_process(renewal, capsys, "--inventory", str(inventory))
    assert code == 0, out + err
    assert f"Inventory: {GROUP}, collected {now}" in out and "Outcome: QUEUED" in out
    assert any(
        line.split()[1:5] == ["switch", "set-hybrid-configuration", "Hybrid", "Configuration"]
        and "TlsCertificateName: " in line
        for line in out.splitlines()
    )
    [job] = renewal.jobs()
    assert job["plan"]["inventory"]["collected_at"] == now


def test_certsync_process_without_an_inventory_says_what_to_run_and_exits_1(renewal, capsys):
    code, out, _ = run_process(renewal, capsys, "--inventory-store", str(renewal.vault_dir.parent / "none.sqlite"))
    assert code == 1
    assert (
        f"Outcome: WAITING-FOR-INVENTORY (no inventory of worker group {GROUP} yet; import one with: certsync "
        f"discover --import FILE --worker-group {GROUP} (or give certsync process --inventory FILE)"
    ) in out
    assert renewal.jobs() == []


def test_certsync_process_refuses_an_inventory_file_of_another_worker_group(renewal, capsys):
    inventory = renewal.vault_dir.parent / "inventory.json"
    inventory.write_text(json.dumps(exchange(renewal.old, group="hrw-other")))
    code, out, err = run_process(renewal, capsys, "--inventory", str(inventory))
    assert code == 2 and out == ""
    [line] = err.splitlines()
    assert "the inventory is of worker group 'hrw-other', not 'hrw-exchange'" in line


def test_certsync_process_refuses_an_unreadable_inventory_file(renewal, capsys):
    missing = renewal.vault_dir.parent / "missing.json"
    code, _, err = run_process(renewal, capsys, "--inventory", str(missing))
    assert code == 2 and "cannot read it" in err and "give --inventory an inventory JSON file" in err
    big = renewal.vault_dir.parent / "big.json"
    with big.open("wb") as handle:
        handle.truncate(64 * 2**20 + 1)
    code, _, err = run_process(renewal, capsys, "--inventory", str(big))
    assert code == 2 and "larger than 64 MiB" in err


def test_an_inventory_file_is_read_never_written(renewal):
    from shared.adapters.local.inventory_file import FileInventoryStore

    inventory = renewal.vault_dir.parent / "inventory.json"
    inventory.write_text(json.dumps(exchange(renewal.old)))
    store = FileInventoryStore(str(inventory))
    [record] = store.all()
    assert record.worker_group == GROUP and record.source == "file"
    with pytest.raises(CertsyncError, match="read, never written"):
        store.put(record)
    unnamed = {k: v for k, v in exchange(renewal.old).items() if k != "worker_group"}
    inventory.write_text(json.dumps(unnamed))
    assert FileInventoryStore(str(inventory)).all() == []


def test_a_stored_inventory_that_no_longer_validates_blocks_with_the_fix(renewal):
    renewal.store(exchange(renewal.old, servers=("EX01",)) | {"send_connectors": [{"Identity": 7}]})
    outcome = renewal.pipeline().process(parse_event(event("v2")))
    assert outcome.outcome == "blocked" and renewal.jobs() == []
    assert outcome.reason.startswith(f"the stored inventory of {GROUP}: send_connectors[0]")
    assert outcome.reason.endswith(f"; run discovery of {GROUP} again")


def test_an_inventory_stays_stored_when_planning_the_waiting_versions_fails(renewal, arm, caplog):
    renewal.inventory_path.unlink()
    pipeline, discovery = discovering(renewal, arm)
    arm.script(["Completed"], output=json.dumps(exchange(renewal.old)))
    assert pipeline.process(parse_event(event("v2"))).outcome == "waiting-for-inventory"

    def broken(record):
        raise CertsyncError("the audit table is unavailable")

    discovery.on_stored = broken
    assert discovery.poll(GROUP, discovery_job_name(GROUP, NOW)).outcome == "stored"
    assert SqliteInventoryStore(renewal.inventory_path).get(GROUP) is not None
    assert "stored, but the versions waiting for it were not planned: the audit table is unavailable" in caplog.text
    assert [job["version"] for job in (pipeline.resume(GROUP) and renewal.jobs())] == ["v2"]  # the next resume


def test_an_object_name_no_folder_can_hold_is_a_source_error_the_pipeline_audits(renewal):
    with pytest.raises(SourceError, match="Key Vault names are") as caught:
        renewal.pipeline().process(parse_event(event("v2", ObjectName="a/b")))
    assert caught.value.kind == "not-found" and not caught.value.transient
    [received, failed] = SqliteAuditLog(renewal.audit_path).history(rejected_partition("a/b"))
    assert (received.kind, failed.kind) == ("event-received", "event-failed")
    assert failed.details == {"error": "not-found", "transient": False}


def test_an_envelope_that_cannot_be_read_is_audited_under_a_synthetic_key_then_raised(renewal):
    pipeline = renewal.pipeline()
    body = {"id": "e1", "subject": "not a name!", "data": {"ObjectName": "x" * 500}}
    with pytest.raises(EventError, match="has no eventType"):
        pipeline.receive(body, "event e1")
    [rejected] = SqliteAuditLog(renewal.audit_path).history(rejected_partition(body))
    assert rejected.kind == "event-rejected" and "has no eventType" in rejected.summary
    assert rejected.event_id == "e1" and rejected.certificate.startswith("rejected/")
    assert rejected_partition(body) == rejected_partition(dict(reversed(body.items())))  # key order is not the body
    named = event("v2") | {"eventTime": "yesterday"}  # names a usable certificate: audited in its trail
    with pytest.raises(EventError, match="not ISO 8601"):
        pipeline.receive(named, "event e2")
    assert kinds(renewal.history()) == ["event-rejected"]
    assert pipeline.receive(event("v2"), "event e3").outcome == "queued"


def test_a_synthetic_key_survives_any_nesting():
    deep: object = "x"
    for _ in range(5000):
        deep = [deep]
    assert rejected_partition({"data": deep}).startswith("rejected/")
    assert rejected_partition({"data": deep}) != rejected_partition({"data": [[1]]})
