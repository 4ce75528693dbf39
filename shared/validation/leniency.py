"""Windows-like leniency: a chain that `cryptography`'s verifier refuses only for how it is encoded.

Windows CryptoAPI (CertGetCertificateChain) accepts chains that `cryptography.x509.verification` refuses
for reasons of encoding or profile, not of security. Exchange shows such a certificate as Valid, so
certsync must too. When the strict verifier refuses the path certsync walked, `lenient_chain()` checks it
again, as Windows would:

1. every signature is verified over the *original* bytes, with the issuer's real key
   (`shared.x509.signatures`); SHA-1 below the root, RSA under 2048 bits, EdDSA and unknown algorithms
   are refused;
2. a *shadow* of the path is built: each certificate re-encoded canonically (`shared.x509.lenient`), its
   key replaced by a fresh P-256 key and re-signed down the shadow path. The strict verifier then checks
   that shadow at the same time: validity, basicConstraints CA and path length, keyUsage keyCertSign,
   DNS/IP name constraints, unknown critical extensions, depth. Anything but the relaxations below still
   fails there;
3. directoryName and URI name constraints (which `cryptography` does not implement) are checked here (RFC
   5280 §4.2.1.10: the subject and directoryName SANs of every later certificate must lie under a permitted
   subtree and under no excluded one, compared RDN by RDN, case ignored as Windows compares names; the host
   of every URI SAN likewise). A path with policyMappings, policyConstraints or inhibitAnyPolicy, or with
   rfc822Name constraints over a subject's emailAddress, is never accepted here: Windows processes them and
   certsync does not.

| relaxation | applies to | Windows |
| --- | --- | --- |
| GeneralizedTime validity before 2050 | any certificate | decoded, as either `Time` choice |
| `critical FALSE` encoded | any certificate | BER accepted |
| `*` (or `@`, `&`) in a PrintableString | any name | not checked |
| negative serial | any certificate | serial is an opaque blob |
| basicConstraints CA not critical | CAs | criticality not required (RFC 5280 §4.2.1.9 is a CA's duty) |
| certificatePolicies critical | CAs | policy processing is implemented, so it is understood |
| directoryName and URI name constraints | CAs | implemented (only x400, EDI, registeredID are unsupported) |
| brainpool P-256/384/512 keys | CAs | CNG implements the brainpool curves |
| version 1 root | trust-store roots only | a v1 root in the store is a CA |

Sources for each row: docs/validation.md, "Windows-like leniency".
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import urllib.parse
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification

from shared.errors import CertsyncError
from shared.x509 import der
from shared.x509.certificate import Certificate
from shared.x509.lenient import Rewritten, canonical, signed_parts, tlv
from shared.x509.parsed import PARSE_ERRORS, MalformedCertificate, extension, to_x509
from shared.x509.signatures import SHA1_SIGNATURES, verify_signature
from shared.x509.x500 import X500Name, fold_case

BRAINPOOL = "brainpool curve key"
_CURVES = {"secp256r1", "secp384r1", "secp521r1"}
_BRAINPOOL_CURVES = {"brainpoolP256r1", "brainpoolP384r1", "brainpoolP512r1"}
_EDDSA = {"1.3.101.112", "1.3.101.113"}
_ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")
_EMPTY_NAME = b"\x30\x00"
_POLICY_PROCESSING = {"2.5.29.33": "policyMappings", "2.5.29.36": "policyConstraints", "2.5.29.54": "inhibitAnyPolicy"}
_EMAIL = "1.2.840.113549.1.9.1"  # emailAddress, the e-mail address in a subject name

_UNREADABLE: tuple[type[Exception], ...] = (CertsyncError, MalformedCertificate, IndexError, *PARSE_ERRORS)

VerifierFactory = Callable[[verification.Store, dt.datetime], verification.ClientVerifier]


@dataclass(frozen=True)
class Leniency:
    """The outcome: `chain` (the walked path) when it holds under Windows's rules, else None and `reason`
    (empty when no relaxation applies, so the strict verifier's reason stands); `relaxed` says which
    relaxation each certificate needed, as (certificate, quirk)."""

    chain: list[Certificate] | None
    reason: str
    relaxed: tuple[tuple[Certificate, str], ...] = ()


def lenient_chain(path: Sequence[Certificate], at: dt.datetime, verifier: VerifierFactory) -> Leniency:
    """Check `path` (leaf first, a trust-store root last) as Windows would; see the module docstring."""
    if len(path) < 2:
        return Leniency(None, "no path to check")
    try:
        return _check(list(path), at, verifier)
    except _UNREADABLE as exc:
        return Leniency(None, f"a certificate of the path cannot be read ({exc})")


def _check(path: list[Certificate], at: dt.datetime, verifier: VerifierFactory) -> Leniency:
    relaxed: list[tuple[Certificate, str]] = []
    for child, parent in itertools.pairwise(path):
        problem = _signature_problem(child, parent)
        if problem:
            return Leniency(None, problem)
    for cert in path[1:]:
        problem, brainpool = _key_problem(cert)
        if problem:
            return Leniency(None, problem)
        if brainpool:
            relaxed.append((cert, BRAINPOOL))
    rewritten = []
    for index, cert in enumerate(path):
        is_root = index == len(path) - 1
        result = canonical(cert.der, shadow=True, v1_ca=is_root)
        rewritten.append(result)
        relaxed.extend((cert, q) for q in result.quirks)
    problem = (
        _policy_problem(path) or _dn_constraints_problem(path, rewritten) or _uri_constraints_problem(path, rewritten)
    )
    if problem:
        return Leniency(None, problem)
    if not relaxed:
        return Leniency(None, "")
    problem = _shadow_problem(path, rewritten, at, verifier)
    if problem:
        return Leniency(None, problem, tuple(dict.fromkeys(relaxed)))
    return Leniency(path, "", tuple(dict.fromkeys(relaxed)))


def _signature_problem(child: Certificate, parent: Certificate) -> str:
    parts = signed_parts(child.der)
    if parts.algorithm_oid in SHA1_SIGNATURES and child != parent:
        return f"{child.label} is signed with SHA-1, which Windows refuses below the root"
    if parts.algorithm_oid in _EDDSA:
        return f"{child.label} is signed with EdDSA, which Windows does not implement for certificates"
    key = serialization.load_der_public_key(parent.spki_der)
    if not verify_signature(key, parts.algorithm_oid, parts.signature, parts.tbs):
        return f"the signature of {child.label} does not verify with the key of {parent.label}"
    return ""


def _key_problem(cert: Certificate) -> tuple[str, bool]:
    key = serialization.load_der_public_key(cert.spki_der)
    if isinstance(key, rsa.RSAPublicKey):
        return ("", False) if key.key_size >= 2048 else (f"{cert.label} has a {key.key_size}-bit RSA key", False)
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name in _CURVES:
            return "", False
        if key.curve.name in _BRAINPOOL_CURVES:
            return "", True
        return f"{cert.label} has a key on curve {key.curve.name}", False
    return f"{cert.label} has a {type(key).__name__} key, which Windows does not use for a CA", False


def _shadow_problem(
    path: list[Certificate], rewritten: list[Rewritten], at: dt.datetime, verifier: VerifierFactory
) -> str:
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in path]
    shadows = []
    for index, result in enumerate(rewritten):
        signer = keys[min(index + 1, len(path) - 1)]
        shadows.append(_resign(result.der, keys[index], signer))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = [x509.load_der_x509_certificate(d) for d in shadows]
        store = verification.Store([parsed[-1]])
        try:
            verifier(store, at).verify(parsed[0], parsed[1:-1])
        except verification.VerificationError as exc:
            start = max(c.not_before for c in path)
            end = min(c.not_after for c in path)
            if start <= end and not start <= at <= end:  # dates are judged by the assessment's own lint
                with contextlib.suppress(verification.VerificationError):
                    verifier(store, start + (end - start) / 2).verify(parsed[0], parsed[1:-1])
                    return ""
            return str(exc).split(" (encountered processing", 1)[0].removeprefix("validation failed: ")
    return ""


def _resign(cert_der: bytes, subject_key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey) -> bytes:
    """`cert_der` with its key replaced by `subject_key` and signed (ECDSA P-256/SHA-256) by `signer`."""
    outer = der.expect(cert_der, 0, der.SEQUENCE, "Certificate")
    tbs = der.children(cert_der, outer)[0]
    fields = der.children(cert_der, tbs)
    offset = 1 if fields[0].tag == 0xA0 else 0
    spki = subject_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    parts = [der.whole(cert_der, f) for f in fields]
    parts[offset + 1] = _ECDSA_SHA256
    parts[offset + 5] = spki
    new_tbs = tlv(der.SEQUENCE, b"".join(parts))
    signature = signer.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    return tlv(der.SEQUENCE, new_tbs + _ECDSA_SHA256 + tlv(der.BIT_STRING, b"\x00" + signature))


def _policy_problem(path: list[Certificate]) -> str:
    """Windows processes policyConstraints, policyMappings and inhibitAnyPolicy (RFC 5280 §6.1); neither
    cryptography nor certsync does, so a path that has them is never accepted by leniency."""
    for cert in path:
        found = {e.oid.dotted_string for e in to_x509(cert).extensions} & _POLICY_PROCESSING.keys()
        if found:
            return f"{cert.label} has {_POLICY_PROCESSING[min(found)]}, which certsync does not process as Windows does"
    return ""


def _dn_constraints_problem(path: list[Certificate], rewritten: list[Rewritten]) -> str:
    """RFC 5280 §4.2.1.10 for directoryName subtrees: checked on every certificate below the constraining CA
    (self-issued intermediates excepted, §6.1.3 (b))."""
    for index in range(1, len(path)):
        result = rewritten[index]
        constraints = extension(path[index], x509.NameConstraints)
        subtrees = (
            [*(constraints.permitted_subtrees or ()), *(constraints.excluded_subtrees or ())] if constraints else []
        )
        if any(isinstance(s, x509.RFC822Name) for s in subtrees) and any(
            a.oid == _EMAIL for cert in path[:index] for rdn in X500Name.from_der(cert.subject_der).rdns for a in rdn
        ):  # RFC 5280 §4.2.1.10: emailAddress in a subject is an rfc822Name too; neither library checks it there
            return f"{path[index].label} constrains e-mail addresses, which certsync does not check in subject names"
        if not (result.dn_permitted or result.dn_excluded):
            continue
        permitted = [_rdns(n) for n in result.dn_permitted]
        excluded = [_rdns(n) for n in result.dn_excluded]
        for below in range(index):
            cert = path[below]
            if below > 0 and cert.is_self_issued:
                continue
            names = [("subject", cert.subject_der)] if cert.subject_der != _EMPTY_NAME else []
            names += [("directoryName SAN", n) for n in _san_directory_names(cert)]
            for what, name_der in names:
                rdns = _rdns(name_der)
                if any(_within(rdns, e) for e in excluded):
                    return f"{cert.label}: its {what} is excluded by the name constraints of {path[index].label}"
                if permitted and not any(_within(rdns, p) for p in permitted):
                    return f"{cert.label}: its {what} is outside the name constraints of {path[index].label}"
    return ""


def _uri_constraints_problem(path: list[Certificate], rewritten: list[Rewritten]) -> str:
    """RFC 5280 §4.2.1.10 for uniformResourceIdentifier subtrees, on the host of every URI SAN below the CA:
    `.example.com` is any host under example.com, `example.com` that host only. A URI without a host fails
    a CA that has URI constraints."""
    for index in range(1, len(path)):
        result = rewritten[index]
        if not (result.uri_permitted or result.uri_excluded):
            continue
        for cert in path[:index]:
            san = extension(cert, x509.SubjectAlternativeName)
            for uri in san.get_values_for_type(x509.UniformResourceIdentifier) if san else ():
                host = (urllib.parse.urlsplit(uri).hostname or "").rstrip(".").lower()
                if not host or any(_uri_within(host, e) for e in result.uri_excluded):
                    return f"{cert.label}: its URI {uri} is excluded by the name constraints of {path[index].label}"
                if result.uri_permitted and not any(_uri_within(host, p) for p in result.uri_permitted):
                    return f"{cert.label}: its URI {uri} is outside the name constraints of {path[index].label}"
    return ""


def _uri_within(host: str, constraint: str) -> bool:
    constraint = constraint.rstrip(".").lower()
    if constraint.startswith("."):
        return host.endswith(constraint)
    return host == constraint


def _san_directory_names(cert: Certificate) -> list[bytes]:
    san = extension(cert, x509.SubjectAlternativeName)
    return [] if san is None else [n.public_bytes() for n in san.get_values_for_type(x509.DirectoryName)]


def _rdns(name_der: bytes) -> list[frozenset[tuple[str, str]]]:
    """A Name's RDNs in encoded order, each a set of (OID, value with case folded and blanks squeezed)."""
    display = X500Name.from_der(name_der).rdns
    return [frozenset((a.oid, " ".join(fold_case(a.value).split())) for a in rdn) for rdn in reversed(display)]


def _within(subject: list[frozenset[tuple[str, str]]], subtree: list[frozenset[tuple[str, str]]]) -> bool:
    return len(subtree) <= len(subject) and subject[: len(subtree)] == subtree
