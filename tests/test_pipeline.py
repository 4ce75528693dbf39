"""The pipeline end to end on its local adapters: a vault directory, the outbox, SQLite, and CRLs served
on loopback. A renewal whose issuing intermediate rotated (A -> B), and every way an event can end."""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from shared.adapters.local.outbox import OutboxQueue
from shared.adapters.local.sqlite import SqliteAuditLog
from shared.adapters.local.vault_directory import DirectoryVault
from shared.pipeline.events import EventError, parse_event
from shared.pipeline.plan import Plan
from shared.pipeline.process import Pipeline, PipelineSettings
from shared.pipeline.sources import SourceError
from shared.pipeline.targets import parse_targets_json
from shared.validation.assessment import TrustStore
from shared.x509.certificate import Certificate
from tests.chains import MAIL_HOSTS, Issued, RenewalPki, make_crl, pem_of, renewal_pki

NAME = "exch-hybrid-smtp"
VAULT = "contoso-kv"
HOSTS = MAIL_HOSTS
SEND = "Outbound to Office 365 - 0b9d5c6e-3f51-4d2b-9a70-2f1c8e4b7a10"
TARGETS = {
    "schema": "certsync.targets/1",
    "certificates": {
        NAME: {
            "worker_group": "hrw-exchange",
            "servers": ["EX01", "EX02"],
            "send_connectors": [SEND],
            "hybrid_configuration": True,
            "hosts": HOSTS,
        }
    },
}


def event(version: str, *, event_type: str = "CertificateNewVersionCreated", vault: str = VAULT, **data) -> dict:
    body = {
        "Id": f"https://{vault}.vault.azure.net/certificates/{NAME}/{version}",
        "VaultName": vault,
        "ObjectType": "Certificate",
        "ObjectName": NAME,
        "Version": version,
        "NBF": 1777622400,
        "EXP": 1809158400,
    } | data
    return {
        "id": f"evt-{version}-{event_type}",
        "topic": f"/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/{vault}",
        "subject": NAME,
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

    def pipeline(self, targets: dict | None = TARGETS, **settings) -> Pipeline:
        settings.setdefault("trust", TrustStore.from_certificates([Certificate.from_der(self.root.der)], "test"))
        settings.setdefault("allow_hosts", (f"127.0.0.1:{self.server.port}",))
        return Pipeline(
            sources=lambda vault: DirectoryVault(self.vault_dir, vault),
            jobs=OutboxQueue(self.outbox),
            audit=SqliteAuditLog(self.audit_path),
            settings=PipelineSettings(**settings),
            targets_file=parse_targets_json(json.dumps(targets), "targets.json") if targets else None,
        )

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
    )
    r.add_version("v1", pem_of([r.old, r.inter_a]))
    r.add_version("v2", pem_of([r.new, r.inter_b]))
    (vault_dir / NAME / "certificate.json").write_text(
        json.dumps({"created": {"v1": "2026-08-01T00:00:00Z", "v2": "2026-11-20T00:00:00Z"}})
    )
    return r


def kinds(entries) -> list[str]:
    return [e.kind for e in entries]


def test_a_renewal_with_a_new_intermediate_queues_a_plan_in_the_safe_order(renewal):
    outcome = renewal.pipeline().process(parse_event(event("v2")))
    assert outcome.outcome == "queued", outcome.to_dict()
    assert outcome.assessment.status == "Valid"
    plan = outcome.plan.to_dict()
    assert plan["change"] == "issuer_changed" and plan["connector_update_required"]
    assert plan["probe"] == [f"{host}:25" for host in HOSTS]  # probed after the remediation, as EXO connects
    assert plan["previous"]["tls_certificate_name"] == "<I>CN=R10, O=Contoso, C=US<S>CN=mail.contoso.com, C=US"
    assert plan["certificate"]["tls_certificate_name"] == "<I>CN=R11, O=Contoso, C=US<S>CN=mail.contoso.com, C=US"
    actions = [(s["phase"], s["action"], s.get("server")) for s in plan["steps"]]
    stage = [a for a in actions if a[0] == "stage"]
    assert stage[:4] == [
        ("stage", "install-intermediate", "EX01"),
        ("stage", "import-certificate", "EX01"),
        ("stage", "enable-smtp", "EX01"),
        ("stage", "check-status", "EX01"),
    ]
    phases = [a[0] for a in actions]
    assert phases == sorted(phases, key=["stage", "switch", "verify", "retire"].index)
    switch = {(s["action"], s["object"]): (s["previous"], s["value"]) for s in plan["steps"] if s["phase"] == "switch"}
    old, new = plan["previous"]["tls_certificate_name"], plan["certificate"]["tls_certificate_name"]
    assert switch == {
        ("set-send-connector", SEND): (old, new),
        ("set-receive-connector", "EX01\\Default Frontend EX01"): (old, new),
        ("set-receive-connector", "EX02\\Default Frontend EX02"): (old, new),
        ("set-hybrid-configuration", "HybridConfiguration"): (old, new),
    }
    retire = [s for s in plan["steps"] if s["phase"] == "retire"]
    assert [s["thumbprint"] for s in retire] == [Certificate.from_der(renewal.old.der).thumbprint] * 2
    enable = next(s for s in plan["steps"] if s["action"] == "enable-smtp")
    assert enable["keep_internal_transport_certificate"] is True
    [job] = renewal.jobs()
    assert job["plan"] == plan and job["version"] == "v2" and job["vault"] == VAULT
    assert job["secret_id"] == f"https://{VAULT}.vault.azure.net/secrets/{NAME}/v2"
    inter_b = Certificate.from_der(renewal.inter_b.der)
    assert [i["thumbprint"] for i in job["plan"]["certificate"]["intermediates"]] == [inter_b.thumbprint]
    history = renewal.history()
    assert kinds(history) == ["event-received", "assessment", "plan", "job-queued"]
    assert len({e.correlation_id for e in history}) == 1
    assert "der_base64" not in json.dumps([e.to_dict() for e in history])


def test_a_second_delivery_of_the_same_event_queues_nothing_more(renewal):
    pipeline = renewal.pipeline()
    first = pipeline.process(parse_event(event("v2")))
    again = pipeline.process(parse_event(event("v2")))
    assert (first.outcome, again.outcome) == ("queued", "duplicate")
    assert len(renewal.jobs()) == 1
    assert kinds(renewal.history())[-2:] == ["event-received", "duplicate"]  # stopped before assessing
    assert renewal.pipeline().process(parse_event(event("v2"))).outcome == "duplicate"  # a new process too


def test_an_unchanged_name_imports_without_touching_connectors(renewal):
    same_issuer = renewal.leaf(renewal.inter_b)
    renewal.add_version("v3", pem_of([same_issuer, renewal.inter_b]))
    (renewal.vault_dir / NAME / "certificate.json").write_text(
        json.dumps(
            {"created": {"v1": "2026-08-01T00:00:00Z", "v2": "2026-11-20T00:00:00Z", "v3": "2026-11-25T00:00:00Z"}}
        )
    )
    outcome = renewal.pipeline().process(parse_event(event("v3")))
    plan = outcome.plan.to_dict()
    assert outcome.outcome == "queued" and plan["change"] == "unchanged"
    assert not plan["connector_update_required"]
    assert {s["phase"] for s in plan["steps"]} == {"stage", "verify", "retire"}
    assert "no connector changes" in plan["summary"]


# The certsync.plan/1 document's keys, in the order they have always been written (`certsync process --json`
# prints them unsorted), and each step's keys by action.
PLAN_KEYS = [
    "schema",
    "certificate",
    "previous",
    "change",
    "connector_update_required",
    "nothing_to_change",
    "assessment_status",
    "blocked",
    "worker_group",
    "servers",
    "probe",
    "summary",
    "steps",
]
CERTIFICATE_KEYS = [
    "vault",
    "name",
    "version",
    "secret_id",
    "thumbprint",
    "tls_certificate_name",
    "not_after",
    "intermediates",
]
HEAD, TAIL = ["n", "phase", "action", "server", "object"], ["previous", "value"]
STEP_KEYS = {
    "install-intermediate": [*HEAD, "thumbprint", "subject", *TAIL],
    "import-certificate": [*HEAD, "thumbprint", *TAIL],
    "enable-smtp": [*HEAD, "thumbprint", "keep_internal_transport_certificate", *TAIL],
    "check-status": [*HEAD, "thumbprint", *TAIL],
    "set-send-connector": [*HEAD, *TAIL],
    "set-receive-connector": [*HEAD, *TAIL],
    "set-hybrid-configuration": [*HEAD, *TAIL],
    "set-exo-inbound-connector": [*HEAD, "where", *TAIL],
    "verify-certificate": [*HEAD, "thumbprint", *TAIL],
    "verify-connectors": [*HEAD, *TAIL],
    "retire-certificate": [*HEAD, "thumbprint", "condition", *TAIL],
}


def test_the_plan_document_keeps_its_key_order_and_reads_back_byte_for_byte(renewal):
    targets = json.loads(json.dumps(TARGETS))
    targets["certificates"][NAME]["exo_inbound_connector"] = "Inbound from contoso"
    pipeline = renewal.pipeline(targets)
    first = pipeline.process(parse_event(event("v1")))  # no previous version: every phase but retire
    second = pipeline.process(parse_event(event("v2")))  # the issuer changed: retire too
    assert (first.outcome, second.outcome) == ("queued", "queued")
    actions = set()
    for plan in (first.plan, second.plan):
        document = plan.to_dict()
        assert list(document) == PLAN_KEYS and list(document["certificate"]) == CERTIFICATE_KEYS
        assert [list(c) for c in document["certificate"]["intermediates"]] == [["thumbprint", "subject", "der_base64"]]
        for step in document["steps"]:
            assert list(step) == STEP_KEYS[step["action"]], step
            actions.add(step["action"])
        text = json.dumps(document)
        again = Plan.from_dict(json.loads(text))
        assert again == plan and json.dumps(again.to_dict()) == text
    assert actions == set(STEP_KEYS)
    assert first.plan.previous is None and second.plan.previous.version == "v1"
    # the queued request carries the document; the audit trail the same without the intermediates' DER
    queued = {job["job_id"]: job["plan"] for job in renewal.jobs()}
    assert queued == {first.request.job_id: first.plan.to_dict(), second.request.job_id: second.plan.to_dict()}
    audited = [e.details["plan"] for e in renewal.history() if e.kind == "plan"]
    assert audited == [first.plan.to_dict(der=False), second.plan.to_dict(der=False)]
    assert "der_base64" not in json.dumps(audited)


def test_the_same_certificate_as_a_new_version_changes_nothing(renewal):
    renewal.add_version("v3", pem_of([renewal.new, renewal.inter_b]))
    (renewal.vault_dir / NAME / "certificate.json").write_text(
        json.dumps(
            {"created": {"v1": "2026-08-01T00:00:00Z", "v2": "2026-11-20T00:00:00Z", "v3": "2026-11-25T00:00:00Z"}}
        )
    )
    outcome = renewal.pipeline().process(parse_event(event("v3")))
    assert outcome.outcome == "nothing-to-change"
    assert outcome.plan.nothing_to_change and outcome.plan.steps == []
    assert "Nothing to change" in outcome.plan.summary
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


def test_tags_alone_are_targets(renewal):
    (renewal.vault_dir / NAME / "certificate.json").write_text(
        json.dumps(
            {
                "created": {"v1": "2026-08-01T00:00:00Z", "v2": "2026-11-20T00:00:00Z"},
                "tags": {
                    "certsync-worker-group": "hrw-b",
                    "certsync-servers": "EX09",
                    "certsync-hybrid": "false",
                    "certsync-hosts": "mail.contoso.com",
                },
            }
        )
    )
    outcome = renewal.pipeline(targets=None).process(parse_event(event("v2")))
    assert outcome.outcome == "queued"
    plan = outcome.plan.to_dict()
    assert plan["worker_group"] == "hrw-b" and plan["servers"] == ["EX09"]
    assert {s["object"] for s in plan["steps"] if s["phase"] == "switch"} == {"EX09\\Default Frontend EX09"}


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
