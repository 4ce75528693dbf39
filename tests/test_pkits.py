"""NIST PKITS through `assess()` (issue 18 item 8): how many of its valid paths certsync accepts, and that
no path it must reject is accepted beyond the documented gaps of the strict path (none from leniency).

Each test without RFC 5280 policy inputs (`params`) is assessed offline at 2022-05-01, trusting PKITS's
trust anchor, with the test's certificates delivered as extras and its CRLs supplied (revocation hard,
or off where the test says). The verdict is the path's: an error about the chain, dates or revocation.
The leaf's Exchange profile (a CN that is a host name, EKU) is not PKITS's business and is ignored.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from pathlib import Path

import pytest

from shared.errors import CertsyncError
from shared.validation.assessment import TrustStore, assess
from shared.validation.crl import parse_crl
from shared.x509.certificate import Certificate, CertificateBundle

PKITS = Path(__file__).parent / "fixtures" / "pkits"
CASES = [c for c in json.loads((PKITS / "pkits.json").read_text(encoding="utf-8")) if not c.get("params")]
AT = dt.datetime(2022, 5, 1, tzinfo=dt.timezone.utc)
PATH_CODES = {
    "chain-invalid", "chain-incomplete", "untrusted-root", "chain-too-long", "intermediate-expired", "expired",
    "not-yet-valid", "revoked", "revocation-unknown", "malformed-certificate", "sha1-signature",
}  # fmt: skip

BASELINE_VALID = 57  # of 92 valid paths; 45 before Windows-like leniency. Raise it when more pass.
# Paths PKITS rejects that certsync accepts, all from before leniency (the strict verifier accepts them too).
KNOWN_FALSE_ACCEPTS = {
    "40505": "self-issued old-with-new key rollover whose CRL signer is revoked: certsync reads no such CRL",
    "40507": "the CRL-signing self-issued key's own revocation is not checked",
    "40804": "no valid policy set: RFC 5280 policy processing is not done (Windows does it only when asked)",
    "40805": "no valid policy set (policy processing not done)",
    "40807": "no valid policy set (policy processing not done)",
    "40808": "no valid policy set (policy processing not done)",
    "40809": "no valid policy set (policy processing not done)",
    "40812": "no valid policy set (policy processing not done)",
    "41403": "a CRL distribution point mismatch: certsync does not match issuingDistributionPoint to the CDP",
    "41408": "a CRL distribution point mismatch (issuingDistributionPoint not matched)",
    "41409": "a CRL distribution point mismatch (issuingDistributionPoint not matched)",
    "41504": "a revocation only in a delta CRL: delta CRLs are not read",
}


def _cert(name: str) -> Certificate:
    return Certificate.from_der((PKITS / "certs" / name).read_bytes(), name)


@functools.cache
def _trust() -> TrustStore:
    return TrustStore.from_certificates([_cert("TrustAnchorRootCertificate.crt")], "PKITS trust anchor")


@functools.cache
def accepted(case_id: str, name: str) -> tuple[bool, str]:
    case = next(c for c in CASES if c["id"] == case_id and c["name"] == name)
    try:
        names = ["TrustAnchorRootCRL.crl", *case.get("crls", [])]
        crls = [parse_crl((PKITS / "crls" / n).read_bytes(), n) for n in names]
        result = assess(
            CertificateBundle(_cert(case["cert"]), extras=tuple(_cert(n) for n in case.get("other_certs", []))),
            trust=_trust(),
            at=AT,
            revocation="hard" if case.get("revocation", True) else "off",
            crls=crls,
            offline=True,
        )
    except CertsyncError as exc:
        return False, str(exc)
    errors = [f"{f.code}: {f.message}" for f in result.findings if f.severity == "error" and f.code in PATH_CODES]
    return not errors, "; ".join(errors)


def test_no_path_pkits_rejects_is_accepted_beyond_the_known_gaps():
    invalid = [c for c in CASES if "error" in c]
    false_accepts = {c["id"] for c in invalid if accepted(c["id"], c["name"])[0]}
    assert false_accepts == set(KNOWN_FALSE_ACCEPTS)
    assert len(invalid) == 121


def test_valid_paths_accepted_hold_the_baseline():
    valid = [c for c in CASES if "error" not in c]
    refused = {f"{c['id']} {c['name']}": accepted(c["id"], c["name"])[1] for c in valid}
    refused = {k: v for k, v in refused.items() if v}
    print(f"PKITS: {len(valid) - len(refused)} of {len(valid)} valid paths accepted (baseline {BASELINE_VALID})")
    assert len(valid) == 92
    assert len(valid) - len(refused) >= BASELINE_VALID, "\n".join(f"{k}: {v}" for k, v in refused.items())


@pytest.mark.parametrize(
    ("case_id", "name"),
    [
        ("41301", "valid_dn_nameconstraints_test1"),  # directoryName constraints
        ("41334", "valid_uri_nameconstraints_test34"),  # URI constraints
        ("41304", "valid_dn_nameconstraints_test4"),  # directoryName constraints, excluded subtrees
        ("40604", "valid_basicconstraints_not_critical_test4"),  # a CA's basicConstraints not critical
    ],
)
def test_pkits_paths_windows_accepts_are_accepted(case_id, name):
    assert accepted(case_id, name) == (True, "")


@pytest.mark.parametrize(
    ("case_id", "name", "why"),
    [
        ("41302", "invalid_dn_nameconstraints_test2", "outside the name constraints"),
        ("41335", "invalid_uri_nameconstraints_test35", "outside the name constraints"),
        ("41337", "invalid_uri_nameconstraints_test37", "excluded by the name constraints"),
        ("41329", "invalid_dn_and_rfc822_nameconstraints_test29", "constrains e-mail addresses"),
        ("40605", "invalid_pathlenconstraint_test5", "chain-invalid"),
    ],
)
def test_pkits_paths_windows_rejects_stay_rejected_with_the_reason(case_id, name, why):
    ok, reason = accepted(case_id, name)
    assert not ok and why in reason
