"""x509-limbo through `assess()`: the agreement count holds, and every disagreement is documented.

Each SERVER case is assessed offline (nothing fetched): the trust store is `trusted_certs`, the
intermediates are delivered with the peer certificate as extras, the host is the expected peer name when
it is a DNS name or an IP address (an IP is matched against iPAddress SANs only), the time is
`validation_time` (now when null), and revocation is "hard" over the case's CRLs when it has any, else
"off". A case agrees when certsync says Valid exactly when limbo expects SUCCESS. A CertsyncError (a
certificate or CRL certsync refuses to read) is a rejection; any other exception is a crash, which never agrees.

CLIENT cases are skipped: certsync assesses TLS server certificates, and those cases validate client
certificates by e-mail address. Every disagreement must be listed, with its reason, in
`fixtures/x509-limbo/divergences.json`; a listed case that starts agreeing must be removed from it.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.errors import CertsyncError
from shared.validation.assessment import VALID, TrustStore, assess
from shared.validation.crl import parse_crl
from shared.x509.certificate import Certificate, CertificateBundle
from shared.x509.containers import certificates_in

LIMBO = Path(__file__).parent / "fixtures" / "x509-limbo"
CASES = json.loads((LIMBO / "limbo.json").read_text(encoding="utf-8"))["testcases"]
BY_ID = {case["id"]: case for case in CASES}
SERVER_IDS = [case["id"] for case in CASES if case["validation_kind"] == "SERVER"]
DIVERGENCE_FILE = json.loads((LIMBO / "divergences.json").read_text(encoding="utf-8"))
DIVERGENCES: dict[str, str] = DIVERGENCE_FILE["divergences"]
CATEGORIES: dict[str, str] = DIVERGENCE_FILE["categories"]
IP_PEER_CASES: dict[str, str] = DIVERGENCE_FILE["ip_peer_names"]["cases"]

BASELINE_AGREE = 158  # of 198 SERVER cases; raise it when a fix makes more cases agree
CASE_SECONDS = 5.0  # a denial-of-service case must be rejected, not hang; the slowest takes ~0.2 s


@dataclass(frozen=True)
class Outcome:
    """What certsync made of a case: an Assessment status, "refused" (CertsyncError) or "crashed"."""

    status: str
    detail: str
    seconds: float

    def agrees_with(self, expected: str) -> bool:
        if self.status == "crashed":
            return False
        return (self.status == VALID) == (expected == "SUCCESS")

    def __str__(self) -> str:
        return f"{self.status} in {self.seconds:.2f} s{': ' + self.detail if self.detail else ''}"


def _certificates(pems: list[str], label: str) -> list[Certificate]:
    return [cert for pem in pems for cert in certificates_in(pem.encode("ascii"), label)]


@functools.cache
def outcome(case_id: str) -> Outcome:
    case = BY_ID[case_id]
    start = time.perf_counter()
    try:
        trust = TrustStore.from_certificates(_certificates(case["trusted_certs"], f"{case_id} trusted"), "limbo")
        extras = _certificates(case["untrusted_intermediates"], f"{case_id} intermediate")
        (leaf,) = _certificates([case["peer_certificate"]], f"{case_id} peer")
        crls = [parse_crl(pem.encode("ascii"), "limbo crl") for pem in case["crls"]]
        peer = case["expected_peer_name"]
        at = case["validation_time"]
        assessment = assess(
            CertificateBundle(leaf=leaf, extras=tuple(extras)),  # the peer is the leaf, whatever else is given
            hosts=[peer["value"]] if peer and peer["kind"] in ("DNS", "IP") else [],
            trust=trust,
            at=dt.datetime.fromisoformat(at) if at else None,
            revocation="hard" if crls else "off",
            crls=crls,
            offline=True,
        )
    except CertsyncError as exc:
        return Outcome("refused", str(exc), time.perf_counter() - start)
    except Exception as exc:  # a crash is a bug in certsync, reported as the case's outcome
        return Outcome("crashed", f"{type(exc).__name__}: {exc}", time.perf_counter() - start)
    errors = "; ".join(f"{f.code}: {f.message}" for f in assessment.findings if f.severity == "error")
    return Outcome(assessment.status, errors, time.perf_counter() - start)


def _describe(case_id: str) -> str:
    return f"{case_id}: limbo expects {BY_ID[case_id]['expected_result']}, certsync gave {outcome(case_id)}"


@pytest.mark.parametrize("case_id", list(BY_ID), ids=list(BY_ID))
def test_limbo_case_agrees_or_is_a_listed_divergence(case_id):
    if BY_ID[case_id]["validation_kind"] != "SERVER":
        pytest.skip("limbo CLIENT case: certsync assesses TLS server certificates only")
    result = outcome(case_id)
    if result.seconds >= CASE_SECONDS:
        pytest.fail(f"slower than {CASE_SECONDS} s: {_describe(case_id)}")
    agrees = result.agrees_with(BY_ID[case_id]["expected_result"])
    if agrees and case_id in DIVERGENCES:
        pytest.fail(
            f"{case_id} now agrees with limbo ({result}); delete its entry from divergences.json "
            f"(it said: {DIVERGENCES[case_id]}) and raise BASELINE_AGREE"
        )
    if not agrees and case_id not in DIVERGENCES:
        pytest.fail(
            f"new disagreement with x509-limbo: {_describe(case_id)}. Fix certsync, or list the case in "
            "tests/fixtures/x509-limbo/divergences.json with the reason it differs"
        )


def test_limbo_agreement_holds_the_baseline():
    disagreeing = [i for i in SERVER_IDS if not outcome(i).agrees_with(BY_ID[i]["expected_result"])]
    agreeing = len(SERVER_IDS) - len(disagreeing)
    unlisted = [_describe(i) for i in disagreeing if i not in DIVERGENCES]
    print(f"x509-limbo: {agreeing} of {len(SERVER_IDS)} SERVER cases agree (baseline {BASELINE_AGREE})")
    if agreeing < BASELINE_AGREE or unlisted:
        pytest.fail(
            f"{agreeing} of {len(SERVER_IDS)} limbo SERVER cases agree (baseline {BASELINE_AGREE}); "
            f"{len(unlisted)} disagreements are not in divergences.json:\n" + "\n".join(unlisted)
        )


def test_divergence_file_lists_server_cases_with_a_categorised_one_line_reason():
    unknown = sorted(set(DIVERGENCES) - set(SERVER_IDS))
    assert not unknown, f"divergences.json lists ids that are not limbo SERVER cases: {unknown}"
    for case_id, reason in DIVERGENCES.items():
        category, _, why = reason.partition(": ")
        assert category in CATEGORIES and why, f"{case_id}: the reason must start with one of {list(CATEGORIES)}"
        assert "\n" not in reason, f"{case_id}: the reason must be one line"


@pytest.mark.parametrize("case_id", list(IP_PEER_CASES))
def test_ip_peer_name_cases_are_documented_and_agree(case_id):
    case = BY_ID[case_id]
    assert case["validation_kind"] == "SERVER" and case["expected_peer_name"]["kind"] == "IP"
    assert case_id not in DIVERGENCES and IP_PEER_CASES[case_id]
    assert outcome(case_id).agrees_with(case["expected_result"]), _describe(case_id)


def test_ip_peer_name_cases_agree_or_are_listed():
    ip_cases = [i for i in SERVER_IDS if (BY_ID[i]["expected_peer_name"] or {}).get("kind") == "IP"]
    assert set(IP_PEER_CASES) <= set(ip_cases)
    for case_id in ip_cases:
        assert outcome(case_id).agrees_with(BY_ID[case_id]["expected_result"]) or case_id in DIVERGENCES


def test_limbo_snapshot_is_the_one_described_in_provenance():
    assert len(CASES) == len(BY_ID) == 208
    assert len(SERVER_IDS) == 198
