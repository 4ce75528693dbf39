"""Issue 17's "renewals that never deploy": what is deployed is the baseline, transient blocks retry
themselves, permanent ones wait for a new version or a person (retry, approve), the approval gate and the
maintenance windows. On the pipeline's local adapters (vault directory, outbox, SQLite) and real CRLs on
loopback, as tests/test_pipeline.py."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from cryptography import x509

from shared.pipeline.audit import AuditEntry
from shared.pipeline.events import parse_event
from shared.x509.certificate import Certificate
from tests.chains import make_crl, pem_of
from tests.exchange_model import ExchangeOrg
from tests.inventories import exchange, tls_name
from tests.test_pipeline import NAME, VAULT, Renewal, event
from tests.test_pipeline import renewal as renewal_fixture

renewal = renewal_fixture  # the fixture: v1 (R10) deployed, v2 (R11) in the vault, CRLs on loopback

CREATED = {"v1": "2026-08-01T00:00:00Z", "v2": "2026-11-20T00:00:00Z", "v3": "2026-11-25T00:00:00Z"}


def revoke(renewal: Renewal, *issued) -> None:
    """R11's CRL lists these certificates as revoked (key compromise, two hours ago)."""
    when = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)
    revoked = [(i.cert.serial_number, x509.ReasonFlags.key_compromise, when) for i in issued]
    renewal.server.route("/R11.crl", body=make_crl(renewal.inter_b, revoked))


def third_version(renewal: Renewal):
    """v3: another mail.contoso.com certificate from R11, created after v2."""
    v3 = renewal.leaf(renewal.inter_b)
    renewal.add_version("v3", pem_of([v3, renewal.inter_b]))
    (renewal.vault_dir / NAME / "certificate.json").write_text(json.dumps({"created": CREATED}))
    return v3


def facts(issued, intermediate) -> dict:
    """The facts of a PFX the Exchange model can import."""
    cert, inter = Certificate.from_der(issued.der), Certificate.from_der(intermediate.der)
    return {
        "thumbprint": cert.thumbprint,
        "subject": str(cert.subject),
        "issuer": str(cert.issuer),
        "dns_names": list(cert.dns_names),
        "intermediates": [{"thumbprint": inter.thumbprint, "subject": str(inter.subject)}],
        "not_before": "2026-01-01T00:00:00Z",
        "not_after": "2027-01-01T00:00:00Z",
        "exportable": True,
    }


def succeeded(renewal: Renewal, version: str) -> None:
    """The audit trail shows that the job of `version` succeeded (the runbook's certsync.result/1)."""
    renewal.pipeline().audit.record(
        AuditEntry(
            certificate=NAME,
            kind="job-result",
            correlation_id="c0",
            summary="job done",
            vault=VAULT,
            version=version,
            details={"job_id": "j", "status": "Completed", "result": {"status": "succeeded", "steps": []}},
        )
    )


@pytest.mark.parametrize("job_history", [False, True], ids=["inventory", "last-succeeded-job"])
def test_a_blocked_version_is_never_the_next_versions_baseline(renewal, job_history):
    """v1 is deployed; v2 is blocked (revoked) and never deployed; v3's plan must replace v1: its
    compare-and-set expects v1's values, and the plan applied to the Exchange model switches everything.
    The old code took v2 (the previous Key Vault version) as the old certificate, found it on no server
    and switched nothing."""
    if job_history:
        succeeded(renewal, "v1")
    revoke(renewal, renewal.new)
    assert renewal.pipeline().process(parse_event(event("v2"))).outcome == "blocked"
    v3 = third_version(renewal)
    outcome = renewal.pipeline().process(parse_event(event("v3")))
    assert outcome.outcome == "queued", outcome.reason
    if job_history:  # the renewal's diff is against it too (with the inventory alone, no version is known)
        assert outcome.previous.version == "v1"
    plan = outcome.plan_document
    old, new = tls_name(renewal.old), tls_name(v3)
    assert plan["old_certificates"] == [Certificate.from_der(renewal.old.der).thumbprint]
    switches = [(s["previous"], s["value"]) for s in plan["steps"] if s["phase"] == "switch"]
    assert len(switches) == 4 and set(switches) == {(old, new)}
    org = ExchangeOrg(
        exchange(renewal.old),
        intermediates={"EX01": set(), "EX02": set()},
        importable={facts(v3, renewal.inter_b)["thumbprint"]: facts(v3, renewal.inter_b)},
    )
    org.apply_plan(plan)  # raises StaleWrite if a compare-and-set expected a value Exchange does not hold
    values = {c["TlsCertificateName"] for c in org.inventory["receive_connectors"] + org.inventory["send_connectors"]}
    assert values == {new} and org.inventory["hybrid_configuration"]["TlsCertificateName"] == new
    assert org.violations() == []
