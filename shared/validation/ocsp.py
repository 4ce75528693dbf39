"""OCSP requests and the checks that make a response evidence (RFC 6960, `spec/validation.md` §4).

A response counts only when:
- it is `successful` and its SingleResponse has exactly the CertID asked about (hash algorithm, issuer
  name hash, issuer key hash, serial);
- it is signed by the issuing CA itself, or by a delegated responder certificate that the CA issued
  directly, that carries id-kp-OCSPSigning, is not a CA, and is valid now (mozilla::pkix's rule, the
  defence against the 2020 intermediates-with-OCSPSigning incident);
- an echoed nonce equals the one sent (high-volume responders pre-sign and echo none; freshness covers them);
- thisUpdate has passed and nextUpdate has not (no nextUpdate: thisUpdate within the last day).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from shared.errors import CertsyncError
from shared.x509.signatures import verify_signature

NONCE_BYTES = 32  # RFC 8954
_SKEW = dt.timedelta(minutes=5)
_NO_NEXT_UPDATE_MAX_AGE = dt.timedelta(days=1)


class OcspError(CertsyncError):
    """A response that is not evidence; the message says why in general terms."""


@dataclass(frozen=True)
class OcspRequest:
    der: bytes
    nonce: bytes
    cert_id: tuple[str, bytes, bytes, int]  # hash name, issuer name hash, issuer key hash, serial


@dataclass(frozen=True)
class OcspAnswer:
    """What an authenticated response says about one certificate."""

    status: str  # "good" | "revoked" | "unknown"
    this_update: dt.datetime
    next_update: dt.datetime | None
    revoked_at: dt.datetime | None = None
    reason: str | None = None
    responder: str = "issuer"  # "issuer", or the delegated responder's subject


def build_request(cert: x509.Certificate, issuer: x509.Certificate) -> OcspRequest:
    """A DER OCSP request for `cert` (SHA-1 CertID, as responders expect) with a fresh 32-byte nonce."""
    nonce = os.urandom(NONCE_BYTES)
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(cert, issuer, hashes.SHA1())
        .add_extension(x509.OCSPNonce(nonce), critical=False)
        .build()
    )
    cert_id = (
        request.hash_algorithm.name,
        request.issuer_name_hash,
        request.issuer_key_hash,
        request.serial_number,
    )
    return OcspRequest(request.public_bytes(serialization.Encoding.DER), nonce, cert_id)


def read_response(data: bytes, request: OcspRequest, issuer: x509.Certificate, at: dt.datetime) -> OcspAnswer:
    """Check a DER response against the request it answers; raises OcspError when it is not evidence."""
    try:
        response = ocsp.load_der_ocsp_response(data)
    except ValueError:
        raise OcspError("the response is not a valid OCSP response") from None
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise OcspError(f"the responder answered {response.response_status.name.lower()}")
    single = _matching_single_response(response, request)
    signer, responder = _signer(response, issuer, at)
    algorithm = response.signature_algorithm_oid.dotted_string
    if not verify_signature(signer.public_key(), algorithm, response.signature, response.tbs_response_bytes):
        raise OcspError("the response signature does not verify")
    _check_nonce(response, request)
    this_update, next_update = single.this_update_utc, single.next_update_utc
    if this_update > at + _SKEW:
        raise OcspError("the response is not yet in effect")
    if next_update is None:
        if this_update < at - _NO_NEXT_UPDATE_MAX_AGE:
            raise OcspError("the response has no nextUpdate and is more than a day old")
    elif next_update < at - _SKEW:
        raise OcspError("the response is stale (its nextUpdate has passed)")
    status = single.certificate_status
    if status == ocsp.OCSPCertStatus.REVOKED:
        reason = single.revocation_reason.name if single.revocation_reason else None
        return OcspAnswer(
            "revoked", this_update, next_update, single.revocation_time_utc, _reason_text(reason), responder
        )
    return OcspAnswer(
        "good" if status == ocsp.OCSPCertStatus.GOOD else "unknown", this_update, next_update, None, None, responder
    )


def _matching_single_response(response: ocsp.OCSPResponse, request: OcspRequest) -> ocsp.OCSPSingleResponse:
    for single in response.responses:
        cert_id = (single.hash_algorithm.name, single.issuer_name_hash, single.issuer_key_hash, single.serial_number)
        if cert_id == request.cert_id:
            return single
    raise OcspError("the response is about another certificate (no matching CertID)")


def _signer(response: ocsp.OCSPResponse, issuer: x509.Certificate, at: dt.datetime) -> tuple[x509.Certificate, str]:
    if _names_responder(response, issuer):
        return issuer, "issuer"
    for candidate in response.certificates:
        if not _names_responder(response, candidate):
            continue
        try:
            candidate.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            raise OcspError("the responder certificate was not issued by the certificate's issuer") from None
        try:
            ekus = list(candidate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        except x509.ExtensionNotFound:
            ekus = []
        if ExtendedKeyUsageOID.OCSP_SIGNING not in ekus:
            raise OcspError("the delegated responder certificate lacks the OCSPSigning EKU")
        try:
            if candidate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                raise OcspError("the delegated responder certificate is a CA certificate")
        except x509.ExtensionNotFound:
            pass
        if not candidate.not_valid_before_utc - _SKEW <= at <= candidate.not_valid_after_utc + _SKEW:
            raise OcspError("the delegated responder certificate is outside its validity period")
        return candidate, candidate.subject.rfc4514_string()
    raise OcspError("the response is signed by neither the issuer nor a responder certificate it carries")


def _names_responder(response: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    if response.responder_key_hash is not None:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest == response.responder_key_hash
    return response.responder_name == cert.subject


def _check_nonce(response: ocsp.OCSPResponse, request: OcspRequest) -> None:
    try:
        echoed = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return
    if echoed != request.nonce:
        raise OcspError("the response echoes a different nonce (a replayed or misdirected response)")


def _reason_text(name: str | None) -> str | None:
    """cryptography's ReasonFlags member name -> the RFC 5280 spelling used in CRL reports."""
    if name is None:
        return None
    spelling = {"key_compromise": "keyCompromise", "ca_compromise": "cACompromise", "aa_compromise": "aACompromise"}
    if name in spelling:
        return spelling[name]
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)
