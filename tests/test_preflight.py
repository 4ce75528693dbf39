"""Never queue a job that cannot succeed (issue 16): every plan is checked against the runbook's contract
(`shared.pipeline.contract`) before it is queued (`shared.pipeline.preflight`). Each defect the issue lists
("certsync queues jobs that can never succeed") has a test here that queued a job on the code before."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from hypothesis import HealthCheck, given, settings

from shared.adapters.azure.keyvault import KeyVaultSource
from shared.adapters.local.outbox import OutboxQueue
from shared.adapters.local.sqlite import SqliteAuditLog, SqliteInventoryStore
from shared.pipeline import contract
from shared.pipeline.events import parse_event
from shared.pipeline.jobs import MAX_PARAMETERS_BYTES
from shared.pipeline.preflight import Refusal, preflight
from shared.pipeline.process import Pipeline, PipelineSettings
from shared.pipeline.sources import StoredVersion
from shared.pipeline.targets import parse_targets_json
from shared.validation.assessment import TrustStore
from shared.x509.certificate import Certificate
from tests import test_pipeline
from tests.chains import pem_of, unprotected_pfx
from tests.fakes.keyvault import PEM, PKCS12, FakeKeyVault
from tests.test_pipeline import NAME, NOW, TARGETS, Renewal, event
from tests.test_planner_properties import plan_of
from tests.topologies import Topology, topologies

renewal = test_pipeline.renewal  # the pipeline tests' renewal fixture: a rotated intermediate, CRLs on loopback


def key_vault_pipeline(renewal: Renewal, keyvault: FakeKeyVault, targets: dict = TARGETS) -> Pipeline:
    """The real pipeline reading the real Key Vault adapter against the loopback Key Vault."""
    return Pipeline(
        sources=lambda vault: KeyVaultSource(keyvault.vault_url, keyvault.credential, **keyvault.client_kwargs),
        jobs=OutboxQueue(renewal.outbox),
        audit=SqliteAuditLog(renewal.audit_path),
        settings=PipelineSettings(
            trust=TrustStore.from_certificates([Certificate.from_der(renewal.root.der)], "test"),
            allow_hosts=(f"127.0.0.1:{renewal.server.port}",),
        ),
        targets_file=parse_targets_json(json.dumps(targets), "targets.json"),
        inventories=SqliteInventoryStore(renewal.inventory_path),
        clock=lambda: NOW,
    )


def deliver(renewal: Renewal, keyvault: FakeKeyVault, new: bytes, content_type: str, **options: Any) -> Any:
    keyvault.add_version(
        NAME, unprotected_pfx(renewal.old, renewal.inter_a), PKCS12, version="v1", created=NOW.replace(month=8)
    )
    keyvault.add_version(NAME, new, content_type, version="v2", created=NOW.replace(day=20), **options)
    vault = keyvault.vault_url.split("//")[1].split(".")[0].split(":")[0]
    return key_vault_pipeline(renewal, keyvault).process(parse_event(event("v2", vault=vault)))


def test_a_pfx_with_an_exportable_key_from_key_vault_is_queued_and_passes(renewal, keyvault) -> None:
    outcome = deliver(renewal, keyvault, unprotected_pfx(renewal.new, renewal.inter_b), PKCS12)
    assert outcome.outcome == "queued", outcome.reason
    [job] = renewal.jobs()
    assert preflight(job["plan"]) is None


def test_a_pem_secret_is_not_queued_and_the_fix_is_the_policy_content_type(renewal, keyvault) -> None:
    # Before: the pipeline queued it and the runbook refused PEM on the worker.
    key = renewal.new.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pem = pem_of([key, renewal.new, renewal.inter_b])
    outcome = deliver(renewal, keyvault, pem, PEM)
    assert outcome.outcome == "blocked" and renewal.jobs() == []
    assert "is a PEM secret, and the runbook imports only a PFX" in outcome.reason
    assert "set the Key Vault certificate policy's contentType to application/x-pkcs12, then renew" in outcome.reason


def test_a_key_vault_version_without_its_key_is_not_queued(renewal, keyvault) -> None:
    # exportable: false -> Key Vault's secret has no private key, and the import on the servers needs it.
    version = StoredVersion(
        "kv", NAME, "v2", None, "https://kv/secrets/x/v2", content_type=PKCS12, key_exportable=False
    )  # type: ignore[arg-type]
    refusal = preflight(good_plan(), version)
    assert refusal is not None and refusal.fix == "create the certificate with exportable: true"


def good_plan(**changes: Any) -> dict[str, Any]:
    return {
        "schema": contract.PLAN_SCHEMA,
        "blocked": None,
        "worker_group": "hrw-exchange",
        "assessment_status": "Valid",
        "steps": [
            {"phase": "stage", "action": "import-certificate", "server": "EX01", "object": "AB" * 20},
            {"phase": "stage", "action": "check-status", "server": "EX01", "object": "AB" * 20, "value": "Valid"},
        ],
        **changes,
    }


@pytest.mark.parametrize(
    ("changes", "allow", "words"),
    [
        ({"assessment_status": "DateInvalid"}, ["DateInvalid"], "the certificate is DateInvalid, and the runbook"),
        ({"assessment_status": "RevocationCheckFailure"}, [], "run certsync check"),
        ({"schema": "certsync.plan/1"}, [], "not certsync.plan/2"),
        ({"blocked": {"reason": "r", "fix": "f"}}, [], "the plan is blocked (r)"),
        ({"worker_group": " "}, [], "no worker group"),
        (
            {"steps": [{"action": "restart-everything"}]},
            [],
            "'restart-everything', which the runbook has no handler for",
        ),
        ({"steps": [{"action": "check-status", "value": "Untrusted"}]}, [], "accepts only Valid"),
        ({"steps": [{"action": "set-exo-inbound-connector", "object": "Inbound"}]}, [], "names no Exchange Online"),
        ({"steps": ["not a step"]}, [], "not an object"),
        ({"steps": None}, [], "no list of steps"),
        ({"padding": "x" * MAX_PARAMETERS_BYTES}, [], "more than the 524288 an Automation job takes"),
    ],
)
def test_what_the_runbook_would_refuse_is_refused_before_queueing(changes, allow, words) -> None:
    refusal = preflight(good_plan(**changes), allow_status=allow)
    assert isinstance(refusal, Refusal) and words in str(refusal) and "\n" not in str(refusal)


def test_an_assessment_status_the_targets_allow_and_the_servers_read_as_valid_passes() -> None:
    plan = good_plan(assessment_status="RevocationCheckFailure")
    assert preflight(plan, allow_status=["RevocationCheckFailure"]) is None
    version = StoredVersion("kv", NAME, "v2", None, "u", content_type="application/x-pkcs12", key_exportable=True)  # type: ignore[arg-type]
    assert preflight(plan, version, ["RevocationCheckFailure"]) is None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topologies())
def test_every_plan_the_planner_can_queue_passes_the_preflight(topology: Topology) -> None:
    plan = plan_of(topology)
    if plan["blocked"] is not None:
        return
    queued = copy.deepcopy(plan) | {"worker_group": "exchange-hybrid", "assessment_status": "Valid"}
    assert {s["action"] for s in queued["steps"]} <= set(contract.ACTIONS)
    assert preflight(queued) is None


def test_a_key_vault_pfx_without_its_key_is_blocked_with_the_exportable_fix(renewal, keyvault) -> None:
    # A policy with exportable: false: Key Vault's secret is a PFX without the private key.
    keyless = pkcs12.serialize_key_and_certificates(
        b"", None, renewal.new.cert, [renewal.inter_b.cert], serialization.NoEncryption()
    )
    outcome = deliver(renewal, keyvault, keyless, PKCS12, cer=renewal.new.der)
    assert outcome.outcome == "blocked" and renewal.jobs() == []
    assert outcome.reason.endswith(
        "fix: create the certificate with exportable: true (Key Vault certificate policy), then renew"
    )
