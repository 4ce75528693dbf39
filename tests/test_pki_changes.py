"""Issue 18 with real certificates: Let's Encrypt Generation Y (a 4-certificate chain through the Root YR
cross-sign, leaves without a subject), clientAuth, expiry by lifetime (`tests/fixtures/pki/PROVENANCE.md`)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from shared.validation.assessment import TrustStore, assess
from shared.validation.lifetime import CRITICAL, EXPIRED, OK, WARNING, ExpiryThresholds
from shared.x509.containers import load_certificates

PKI = Path(__file__).parent / "fixtures" / "pki"
AT = dt.datetime(2026, 10, 2, 12, tzinfo=dt.timezone.utc)  # inside the test-site leaves' week


def real_chain(*files: str):
    return load_certificates(b"".join((PKI / f).read_bytes() for f in files), "Let's Encrypt Generation Y")


def test_a_real_generation_y_leaf_builds_the_4_certificate_chain_through_the_cross_sign() -> None:
    bundle = real_chain("le-valid-yr-leaf.pem", "le-yr1.pem", "le-root-yr-by-x1.pem")
    result = assess(bundle, trust=TrustStore.mozilla(), at=AT, revocation="off", offline=True)
    assert [str(e.certificate.subject.first("2.5.4.3")) for e in result.path[1:]] == [
        "YR1",
        "Root YR",
        "ISRG Root X1",
    ]
    assert [e.source for e in result.path] == ["delivered", "delivered", "delivered", "trust store"]
    assert [c.thumbprint for c in result.intermediates_to_install] == [
        e.certificate.thumbprint for e in result.path[1:3]
    ]


@pytest.mark.parametrize(
    ("leaf", "chain"), [("le-valid-yr-leaf.pem", "le-yr1.pem"), ("le-valid-ye-leaf.pem", "le-ye2.pem")]
)
def test_a_real_leaf_with_an_empty_subject_has_its_own_finding_with_the_fix(leaf: str, chain: str) -> None:
    result = assess(real_chain(leaf, chain, "le-root-yr-by-x1.pem"), at=AT, revocation="off", offline=True)
    [finding] = [f for f in result.findings if f.code == "subject-without-cn"]
    assert finding.severity == "error" and "subject is empty" in finding.message
    assert "'classic'" in finding.remedy and "Key Vault certificate policy" in finding.remedy
    assert "cn-not-dns-name" not in {f.code for f in result.findings}
    # YE2's chain needs Root YE cross-signed by ISRG Root X2, which is not among the fixtures: Untrusted
    assert result.status == ("Invalid" if "yr" in leaf else "Untrusted")


def test_a_real_generation_y_leaf_lacks_client_auth_and_says_what_is_known() -> None:
    result = assess(real_chain("le-valid-yr-leaf.pem", "le-yr1.pem", "le-root-yr-by-x1.pem"), at=AT, revocation="off")
    [finding] = [f for f in result.findings if f.code == "eku-no-client-auth"]
    assert finding.severity == "info" and "11 February 2026" in finding.message


@pytest.mark.parametrize(
    ("lifetime", "left", "state"),
    [
        (45, 30, OK),  # NearExpiry day for a 45-day certificate: renewal due, not an alarm
        (45, 6.5, WARNING),
        (45, 2, CRITICAL),
        (398, 31, OK),
        (398, 29, WARNING),
        (398, 7, CRITICAL),
        (7, 2.9, WARNING),
        (7, 0.9, CRITICAL),
        (45, -1, EXPIRED),
    ],
)
def test_expiry_states_follow_the_lifetime(lifetime: float, left: float, state: str) -> None:
    not_after = AT + dt.timedelta(days=left)
    assert ExpiryThresholds().state(not_after - dt.timedelta(days=lifetime), not_after, AT) == state


def test_near_expiry_means_renewal_due_for_a_short_certificate_and_a_warning_for_a_long_one() -> None:
    thresholds = ExpiryThresholds()
    not_after = AT + dt.timedelta(days=30)
    short = thresholds.near_expiry_meaning(not_after - dt.timedelta(days=45), not_after, AT)
    assert short.startswith("renewal due per policy") and "45 days" in short
    long = thresholds.near_expiry_meaning(not_after - dt.timedelta(days=398), not_after, AT)
    assert long.startswith("warning: 30.0 day(s) of its 398-day lifetime left")
    assert thresholds.near_expiry_meaning(AT - dt.timedelta(days=40), AT - dt.timedelta(days=1), AT).startswith(
        "expired"
    )
    assert thresholds.warning_starts(AT, AT + dt.timedelta(days=100)) == AT + dt.timedelta(days=85)


@pytest.mark.parametrize(
    "options",
    [
        {"warning_fraction": 0.1, "critical_fraction": 0.2},
        {"warning_fraction": 1.0},
        {"critical_fraction": 0},
        {"warning_floor_days": 0},
    ],
)
def test_bad_expiry_thresholds_are_refused_in_one_line(options: dict[str, float]) -> None:
    from shared.errors import CertsyncError

    with pytest.raises(CertsyncError, match="expiry"):
        ExpiryThresholds(**options)
