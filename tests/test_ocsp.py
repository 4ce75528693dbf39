"""`read_response` on OCSP responses that `cryptography` builds and signs: each way a response is not
evidence (unreadable, unsuccessful, badly signed, not yet in effect, stale, an unfit delegated responder)
and how revocation reasons are spelled. The `openssl ocsp` responder runs in tests/test_assessment.py."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.validation.ocsp import OcspAnswer, OcspError, build_request, read_response
from tests.chains import Issued, issue, new_key

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
OCSP_SIGNING = ExtendedKeyUsageOID.OCSP_SIGNING


@pytest.fixture(scope="module")
def ca() -> Issued:
    return issue("Contoso OCSP Test CA", kind="ec", ca=True)


@pytest.fixture(scope="module")
def leaf(ca: Issued) -> Issued:
    return issue("mail.contoso.com", issuer=ca)


def respond(
    ca: Issued,
    leaf: Issued,
    *,
    status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD,
    this_update: dt.datetime | None = None,
    next_update: dt.datetime | None = NOW + dt.timedelta(hours=4),
    revoked_at: dt.datetime | None = None,
    reason: x509.ReasonFlags | None = None,
    signer: Issued | None = None,
    carried: tuple[Issued, ...] = (),
) -> bytes:
    """A DER response about `leaf`, signed by `signer` (default: the CA itself), carrying `carried`."""
    signer = signer or ca
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=leaf.cert,
            issuer=ca.cert,
            algorithm=hashes.SHA1(),
            cert_status=status,
            this_update=this_update or NOW - dt.timedelta(minutes=1),
            next_update=next_update,
            revocation_time=revoked_at,
            revocation_reason=reason,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, signer.cert)
    )
    if carried:
        builder = builder.certificates([c.cert for c in carried])
    return builder.sign(signer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def read(ca: Issued, leaf: Issued, data: bytes, at: dt.datetime = NOW) -> OcspAnswer:
    return read_response(data, build_request(leaf.cert, ca.cert), ca.cert, at)


def refused(ca: Issued, leaf: Issued, data: bytes, fragment: str, at: dt.datetime = NOW) -> None:
    with pytest.raises(OcspError, match=fragment):
        read(ca, leaf, data, at)


def responder(issuer: Issued, **options: object) -> Issued:
    options.setdefault("eku", [OCSP_SIGNING])
    return issue("Contoso OCSP Responder", issuer=issuer, **options)


def test_a_good_answer_signed_by_the_ca(ca, leaf):
    answer = read(ca, leaf, respond(ca, leaf))
    assert (answer.status, answer.responder, answer.revoked_at, answer.reason) == ("good", "issuer", None, None)


def test_an_unknown_answer(ca, leaf):
    assert read(ca, leaf, respond(ca, leaf, status=ocsp.OCSPCertStatus.UNKNOWN)).status == "unknown"


@pytest.mark.parametrize(
    ("reason", "spelled"),
    [
        (None, None),
        (x509.ReasonFlags.key_compromise, "keyCompromise"),
        (x509.ReasonFlags.ca_compromise, "cACompromise"),
        (x509.ReasonFlags.cessation_of_operation, "cessationOfOperation"),
        (x509.ReasonFlags.superseded, "superseded"),
    ],
)
def test_a_revoked_answer_spells_the_reason_as_rfc_5280(ca, leaf, reason, spelled):
    when = NOW - dt.timedelta(days=2)
    data = respond(ca, leaf, status=ocsp.OCSPCertStatus.REVOKED, revoked_at=when, reason=reason)
    answer = read(ca, leaf, data)
    assert (answer.status, answer.revoked_at, answer.reason) == ("revoked", when, spelled)


def test_bytes_that_are_not_an_ocsp_response(ca, leaf):
    refused(ca, leaf, b"<html>captive portal</html>", "not a valid OCSP response")


def test_an_unsuccessful_response(ca, leaf):
    data = ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER).public_bytes(
        serialization.Encoding.DER
    )
    refused(ca, leaf, data, "the responder answered try_later")


def test_a_signature_that_does_not_verify(ca, leaf):
    data = bytearray(respond(ca, leaf))
    data[-1] ^= 0x01  # the last byte of the signature: no certificates follow it
    refused(ca, leaf, bytes(data), "signature does not verify")


def test_a_response_not_yet_in_effect(ca, leaf):
    data = respond(ca, leaf, this_update=NOW + dt.timedelta(hours=1), next_update=NOW + dt.timedelta(hours=5))
    refused(ca, leaf, data, "not yet in effect")


def test_a_stale_response(ca, leaf):
    data = respond(ca, leaf, this_update=NOW - dt.timedelta(days=3), next_update=NOW - dt.timedelta(days=1))
    refused(ca, leaf, data, "stale")


def test_without_next_update_a_response_is_good_for_a_day(ca, leaf):
    fresh = respond(ca, leaf, this_update=NOW - dt.timedelta(hours=20), next_update=None)
    assert read(ca, leaf, fresh).next_update is None
    old = respond(ca, leaf, this_update=NOW - dt.timedelta(days=2), next_update=None)
    refused(ca, leaf, old, "no nextUpdate and is more than a day old")


def test_a_delegated_responder_it_carries(ca, leaf):
    signer = responder(ca)
    answer = read(ca, leaf, respond(ca, leaf, signer=signer, carried=(signer,)))
    assert answer.status == "good" and "Contoso OCSP Responder" in answer.responder


def test_a_carried_certificate_that_does_not_sign_is_skipped(ca, leaf):
    bystander = responder(ca)
    answer = read(ca, leaf, respond(ca, leaf, carried=(bystander,)))
    assert answer.responder == "issuer"
    stranger = issue("Someone Else", kind="ec")
    refused(ca, leaf, respond(ca, leaf, signer=stranger, carried=(bystander,)), "signed by neither the issuer")


def test_a_delegated_responder_from_another_ca(ca, leaf):
    other_ca = issue("Other CA", kind="ec", ca=True)
    signer = responder(other_ca)
    refused(ca, leaf, respond(ca, leaf, signer=signer, carried=(signer,)), "not issued by the certificate's issuer")


def test_a_delegated_responder_without_any_eku(ca, leaf):
    signer = responder(ca, eku=())
    refused(ca, leaf, respond(ca, leaf, signer=signer, carried=(signer,)), "lacks the OCSPSigning EKU")


def test_a_delegated_responder_that_is_a_ca(ca, leaf):
    signer = responder(ca, ca=True)
    refused(ca, leaf, respond(ca, leaf, signer=signer, carried=(signer,)), "is a CA certificate")


def test_a_delegated_responder_outside_its_validity(ca, leaf):
    signer = responder(ca, not_before=NOW - dt.timedelta(days=30), not_after=NOW - dt.timedelta(days=1))
    refused(ca, leaf, respond(ca, leaf, signer=signer, carried=(signer,)), "outside its validity period")


def test_a_delegated_responder_without_basic_constraints(ca, leaf):
    key = new_key("ec")
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bare Responder")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage([OCSP_SIGNING]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    signer = Issued(cert, key)
    assert read(ca, leaf, respond(ca, leaf, signer=signer, carried=(signer,))).responder == "CN=Bare Responder"
