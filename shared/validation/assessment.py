"""Assess a certificate the way Exchange will see it, before anything is deployed.

Exchange uses a certificate only when Windows can build and trust its chain on the server, and shows the
outcome as `Get-ExchangeCertificate`'s Status. `assess()` gives that status and the findings behind it:

- the path: the leaf, the certificates delivered with it, intermediates fetched through AIA caIssuers
  (each fetch reported, because the server will not have them), up to a root in the trust store;
- `cryptography.x509.verification` checks signatures, CA constraints and dates along that path;
- certsync's own lints on what the library lets through (`spec/validation.md` §0.2): EKU, key, signature
  hash, host names (RFC 6125), and the first CN Exchange reads for TlsCertificateName;
- revocation of the leaf and every intermediate (`shared.validation.revocation`), under policy hard, soft or off.

Status precedence when several apply: Revoked, DateInvalid, Untrusted, Invalid, RevocationCheckFailure.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import ipaddress
import itertools
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from shared.errors import CertsyncError
from shared.times import format_time, utc_now
from shared.validation.crl import Crl
from shared.validation.fetch import Fetcher
from shared.validation.hierarchies import identify
from shared.validation.leniency import lenient_chain
from shared.validation.lifetime import OK, ExpiryThresholds
from shared.validation.revocation import FetchCache, check_revocation
from shared.x509 import der
from shared.x509.certificate import Certificate, CertificateBundle
from shared.x509.containers import certificates_in
from shared.x509.lenient import signed_parts
from shared.x509.parsed import (
    KEPT_PER_CERTIFICATE,
    PARSE_ERRORS,
    MalformedCertificate,
    access_urls,
    extension,
    parse_error_reason,
    parse_warnings,
    to_x509,
)
from shared.x509.signatures import SHA1_SIGNATURES, verify_signature
from shared.x509.tls_certificate_name import TlsCertificateName
from shared.x509.x500 import X500Name

VALID, INVALID, UNTRUSTED = "Valid", "Invalid", "Untrusted"
# Dated facts (issue 18): what public CAs do with clientAuth, and what is not known.
CLIENT_AUTH_EVIDENCE = (
    "Let's Encrypt stopped including clientAuth on 11 February 2026, DigiCert keeps it until 1 March 2027, "
    "and Chrome's root program requires serverAuth-only certificates from 15 March 2027. Whether Exchange "
    "Online needs clientAuth on the on-premises certificate is not confirmed by Microsoft."
)
DATE_INVALID, REVOKED, REVOCATION_CHECK_FAILURE = "DateInvalid", "Revoked", "RevocationCheckFailure"
_PRECEDENCE = (REVOKED, DATE_INVALID, UNTRUSTED, INVALID, REVOCATION_CHECK_FAILURE)
POLICIES = ("hard", "soft", "off")
MAX_PATH = 8  # certificates in a path, leaf and root included
MAX_AIA_DEPTH = 4  # issuers fetched through AIA for one path
_GOOD_CURVES = {"secp256r1", "secp384r1"}


@dataclass(frozen=True)
class Finding:
    """One thing wrong or worth knowing. `status` is the Exchange status an error implies."""

    code: str
    severity: str  # "error" | "warning" | "info"
    subject: str  # the certificate it concerns, as Windows prints its subject
    thumbprint: str
    message: str
    remedy: str
    status: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "subject": self.subject,
            "thumbprint": self.thumbprint,
            "message": self.message,
            "remedy": self.remedy,
        }


@dataclass(frozen=True)
class PathEntry:
    """One certificate of the path, leaf first: where it came from (`delivered`, `aia`, `trust store`)."""

    certificate: Certificate
    source: str

    def to_dict(self) -> dict[str, Any]:
        cert = self.certificate
        return {
            "subject": _subject(cert),
            "issuer": _issuer(cert),
            "thumbprint": cert.thumbprint,
            "not_after": format_time(cert.not_after, timespec="seconds"),
            "source": self.source,
        }


@dataclass(frozen=True)
class Assessment:
    status: str
    tls_certificate_name: str
    findings: tuple[Finding, ...]
    path: tuple[PathEntry, ...]
    at: dt.datetime
    revocation_policy: str
    fetches: tuple[str, ...] = ()  # "URL: outcome" for every fetch attempted

    @property
    def intermediates_to_install(self) -> tuple[Certificate, ...]:
        """The intermediates of the path, delivered or fetched: what the servers' CA store needs."""
        return tuple(e.certificate for e in self.path[1:] if e.source != "trust store")

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "tls_certificate_name": self.tls_certificate_name,
            "at": format_time(self.at, timespec="seconds"),
            "revocation_policy": self.revocation_policy,
            "findings": [f.to_dict() for f in self.findings],
            "path": [e.to_dict() for e in self.path],
            "fetches": list(self.fetches),
        }


@dataclass(frozen=True, eq=False)
class TrustStore:
    """The roots a path may end at. Compared and hashed by identity: the verifier is cached per store."""

    roots: tuple[Certificate, ...]
    source: str
    _x509: tuple[x509.Certificate, ...] = field(repr=False, default=())
    _owners: dict[int, Certificate] = field(repr=False, compare=False, hash=False, default_factory=dict)
    _ders: frozenset[bytes] = field(repr=False, compare=False, hash=False, default=frozenset())
    _by_name: dict[str | bytes, list[Certificate]] = field(repr=False, compare=False, hash=False, default_factory=dict)

    @classmethod
    def from_certificates(cls, roots: Sequence[Certificate], source: str) -> TrustStore:
        if not roots:
            raise CertsyncError(f"{source}: holds no certificate to trust; give a PEM file of root certificates")
        try:
            parsed = tuple(to_x509(c) for c in roots)
        except MalformedCertificate as exc:
            raise CertsyncError(
                f"{exc.cert.label}: cannot be used as a trust anchor, cryptography refuses it"
                f" ({exc.reason}); remove it from the file or replace it with the CA's current root"
            ) from None
        by_name: dict[str | bytes, list[Certificate]] = {}
        for root in roots:
            by_name.setdefault(_name_key(root.subject_der), []).append(root)
        owners = {id(x): c for x, c in zip(parsed, roots, strict=True)}
        return cls(tuple(roots), source, parsed, owners, frozenset(c.der for c in roots), by_name)

    @classmethod
    def from_file(cls, path: str) -> TrustStore:
        """Exactly the roots in a PEM, DER or PKCS#7 file (`--trust FILE`)."""
        try:
            with open(path, "rb") as handle:
                data = handle.read(10 * 1024 * 1024)
        except OSError as exc:
            raise CertsyncError(f"{path}: cannot be read ({exc.strerror}); check the --trust path") from None
        return cls.from_certificates(certificates_in(data, path), path)

    @classmethod
    def mozilla(cls) -> TrustStore:
        """Mozilla's roots, as `certifi` ships them."""
        return _mozilla()

    def contains(self, cert: Certificate) -> bool:
        return cert.der in self._ders

    def issuers_of(self, cert: Certificate) -> list[Certificate]:
        """The roots that issued `cert` by name (as Exchange compares names) and key id."""
        return [r for r in self._by_name.get(_name_key(cert.issuer_der), ()) if r.issued(cert)]

    def store(self) -> verification.Store:
        return verification.Store(list(self._x509))


@functools.lru_cache(maxsize=KEPT_PER_CERTIFICATE)
def _name_key(name_der: bytes) -> str | bytes:
    """A name as Exchange compares it; the DER itself when it cannot be decoded (then only equal DER matches)."""
    try:
        return X500Name.from_der(name_der).exchange_key()
    except CertsyncError:
        return name_der


@functools.lru_cache(maxsize=1)
def _mozilla() -> TrustStore:
    import certifi

    with open(certifi.where(), "rb") as handle:
        return TrustStore.from_certificates(certificates_in(handle.read(), "Mozilla roots (certifi)"), "mozilla")


def assess(
    bundle: CertificateBundle,
    *,
    hosts: Iterable[str] = (),
    trust: TrustStore | None = None,
    at: dt.datetime | None = None,
    revocation: str = "hard",
    crls: Sequence[Crl] = (),
    fetcher: Fetcher | None = None,
    offline: bool = False,
    cache: FetchCache | None = None,
    expiry: ExpiryThresholds | None = None,
) -> Assessment:
    """Assess `bundle` (the leaf and what came with it) for use by Exchange.

    `at` defaults to now; `trust` to Mozilla's roots; `fetcher` to a default guarded one. With `offline`,
    nothing is fetched (AIA and revocation use only what is given). `cache` carries CRLs and OCSP answers
    between assessments. `expiry` sets when a certificate `expires-soon`: a fraction of its own lifetime
    (`shared.validation.lifetime`; the defaults when None)."""
    if revocation not in POLICIES:
        raise CertsyncError(f"revocation policy {revocation!r}: use one of {', '.join(POLICIES)}")
    run = _Run(
        bundle=bundle,
        hosts=tuple(dict.fromkeys(h.strip().lower().rstrip(".") for h in hosts if h.strip())),
        trust=trust or TrustStore.mozilla(),
        at=(at or utc_now()).astimezone(dt.timezone.utc),
        policy=revocation,
        crls=tuple(crls),
        fetcher=None if offline else (fetcher or Fetcher()),
        cache=cache if cache is not None else FetchCache(),
        expiry=expiry or ExpiryThresholds(),
    )
    return run.assess()


@dataclass
class _Run:
    bundle: CertificateBundle
    hosts: tuple[str, ...]
    trust: TrustStore
    at: dt.datetime
    policy: str
    crls: tuple[Crl, ...]
    fetcher: Fetcher | None
    cache: FetchCache
    expiry: ExpiryThresholds
    findings: list[Finding] = field(default_factory=list)
    _verifier_reason: str = ""

    def assess(self) -> Assessment:
        leaf = self.bundle.leaf
        path: list[PathEntry] = [PathEntry(leaf, "delivered")]
        try:
            path, verified = self._path()
            self._lint_leaf(leaf, path)
            self._lint_path(path)
            if verified and self.policy != "off":
                self._check_revocation(path)
        except MalformedCertificate as exc:
            reason = f" ({exc.reason})" if exc.reason else ""
            self._add(
                "malformed-certificate",
                "error",
                exc.cert,
                f"The certificate is not well-formed DER that a strict parser accepts{reason}.",
                "Re-issue or re-export the certificate; Windows may also refuse it.",
                INVALID,
            )
        self._lint_encoding(path)
        if self.policy == "off":
            self._add(
                "revocation-not-checked",
                "info",
                leaf,
                "Revocation was not checked (policy off).",
                "Run with --revocation hard before deploying.",
            )
        status = next((s for s in _PRECEDENCE if any(f.status == s for f in self.findings)), VALID)
        order = {"error": 0, "warning": 1, "info": 2}
        findings = tuple(sorted(self.findings, key=lambda f: order[f.severity]))
        attempts = self.fetcher.attempts if self.fetcher else []
        return Assessment(
            status=status,
            tls_certificate_name=_tls_name(leaf)[0],
            findings=findings,
            path=tuple(path),
            at=self.at,
            revocation_policy=self.policy,
            fetches=tuple(f"{a.url}: {a.outcome}" for a in attempts),
        )

    # -- the path -------------------------------------------------------------------------------------

    def _path(self) -> tuple[list[PathEntry], bool]:
        """The path, and whether it verified (signatures and constraints; dates are judged separately).

        certsync walks leaf to root by name and key id (trust store, then what was delivered, then AIA),
        which finds what is missing and fetches it. cryptography's verifier then builds and checks the
        path from everything found; where it finds a path (backtracking past a dead end the walk took),
        that path is the one reported."""
        walked, anchored, walk_findings = self._walk()
        known = {e.certificate.der: e for e in walked}
        for extra in (*self.bundle.chain, *self.bundle.extras):
            known.setdefault(extra.der, PathEntry(extra, "delivered"))
        pool = [e.certificate for e in known.values() if e.source != "trust store"]
        chain = self._verified_chain(pool, [e.certificate for e in walked])
        if chain is None and anchored:
            chain = self._lenient_chain([e.certificate for e in walked])
        if chain is None:
            self.findings.extend(walk_findings)
            self._lint_dates(walked)
            if anchored:
                self._add(
                    "chain-invalid",
                    "error",
                    self.bundle.leaf,
                    f"The chain does not validate: {self._verifier_reason}.",
                    "Re-issue the certificate from a CA whose chain validates, and deliver the chain with it.",
                    INVALID,
                )
            return walked, False
        path = [known.get(c.der) or PathEntry(c, "trust store") for c in chain[:-1]]
        path.append(PathEntry(chain[-1], "trust store"))
        self.findings.extend(f for f in walk_findings if f.severity != "error")
        fetched_warnings = {f.thumbprint for f in walk_findings if f.code == "chain-incomplete"}
        for child, parent in itertools.pairwise(path):
            if parent.source == "aia" and child.certificate.thumbprint not in fetched_warnings:
                self.findings.append(self._aia_finding(child.certificate, parent.certificate))
        self._lint_dates(path)
        return path, True

    def _walk(self) -> tuple[list[PathEntry], bool, list[Finding]]:
        findings: list[Finding] = []
        delivered = [c for c in (*self.bundle.chain, *self.bundle.extras) if c != self.bundle.leaf]
        path = [PathEntry(self.bundle.leaf, "delivered")]
        fetched = 0
        while len(path) < MAX_PATH:
            current = path[-1].certificate
            if self.trust.contains(current):
                return path, True, findings
            root = next(iter(self.trust.issuers_of(current)), None)
            if root is not None:
                path.append(PathEntry(root, "trust store"))
                return path, True, findings
            in_path = {e.certificate for e in path}
            parent = next((c for c in delivered if c not in in_path and c.issued(current)), None)
            if parent is not None:
                path.append(PathEntry(parent, "delivered"))
                continue
            if current.is_self_issued and _signed_by(current, current):
                findings.append(
                    self._finding(
                        "untrusted-root",
                        "error",
                        current,
                        "The chain ends at a root that is not in the trust store.",
                        "Use a certificate from a public CA, or add this root to the servers' and certsync's trust.",
                        UNTRUSTED,
                    )
                )
                return path, False, findings
            parent = self._fetch_issuer(current, in_path) if fetched < MAX_AIA_DEPTH else None
            if parent is None:
                findings.append(
                    self._finding(
                        "chain-incomplete",
                        "error",
                        current,
                        f"The issuer of {_subject(current)!r} ({_issuer(current)}) was not delivered with the "
                        "certificate and could not be fetched, so Exchange will not find a chain "
                        "(454 4.7.5 certificate not found).",
                        "Re-import the certificate into Key Vault as a PFX that includes the intermediate "
                        "certificates, or install the intermediate on every Exchange server.",
                        UNTRUSTED,
                    )
                )
                return path, False, findings
            fetched += 1
            findings.append(self._aia_finding(current, parent))
            path.append(PathEntry(parent, "aia"))
        findings.append(
            self._finding(
                "chain-too-long",
                "error",
                self.bundle.leaf,
                f"No path to a trusted root within {MAX_PATH} certificates.",
                "Check the chain delivered with the certificate.",
                UNTRUSTED,
            )
        )
        return path, False, findings

    def _aia_finding(self, cert: Certificate, fetched: Certificate) -> Finding:
        return self._finding(
            "chain-incomplete",
            "warning",
            cert,
            f"The intermediate {_subject(fetched)!r} was not delivered with the certificate; certsync "
            "fetched it through AIA, but a server without it shows the certificate as missing (454 4.7.5).",
            "Re-import the certificate into Key Vault with its full chain; until then certsync installs "
            "the fetched intermediate on the servers.",
        )

    def _fetch_issuer(self, cert: Certificate, in_path: set[Certificate]) -> Certificate | None:
        if self.fetcher is None:
            return None
        for url in access_urls(cert, AuthorityInformationAccessOID.CA_ISSUERS)[:4]:
            candidates = self.cache.aia.get(url)
            if candidates is None:
                if self.cache.failed_recently(url):
                    continue
                try:
                    candidates = tuple(certificates_in(bytes(self.fetcher.get(url, "aia")), url))
                except CertsyncError as exc:  # a FetchError, or an answer that holds no certificate
                    self.cache.fail(url, exc)
                    continue
                self.cache.aia[url] = candidates
            for candidate in candidates:
                if candidate in in_path:
                    continue  # an AIA loop: a certificate already in the path
                if candidate.issued(cert) and _signed_by(cert, candidate):
                    return candidate
        return None

    def _verified_chain(self, pool: list[Certificate], walked: list[Certificate]) -> list[Certificate] | None:
        """cryptography's verified chain, leaf to root, at `at`; failing only on dates, at a time inside
        every validity period of the walked path (dates are then reported by `_lint_dates`). None if neither."""
        leaf_x = to_x509(self.bundle.leaf)
        owners = {id(leaf_x): self.bundle.leaf} | self.trust._owners  # the verifier hands back the objects it got
        intermediates = []
        for cert in pool:
            if cert != self.bundle.leaf:
                try:
                    cert_x = to_x509(cert)
                except MalformedCertificate:
                    continue
                intermediates.append(cert_x)
                owners[id(cert_x)] = cert
        with warnings.catch_warnings():  # what it warns about is reported once, by `_lint_encoding`
            warnings.simplefilter("ignore")
            return self._verify(leaf_x, intermediates, walked, owners)

    def _verify(
        self,
        leaf_x: x509.Certificate,
        intermediates: list[x509.Certificate],
        walked: list[Certificate],
        owners: dict[int, Certificate],
    ) -> list[Certificate] | None:
        try:
            chain = _verifier(self.trust, self.at).verify(leaf_x, intermediates).chain
        except verification.VerificationError as exc:
            self._verifier_reason = _verifier_reason(str(exc))
            chain = None
            start = max(c.not_before for c in walked)
            end = min(c.not_after for c in walked)
            if start <= end and not start <= self.at <= end:
                with contextlib.suppress(verification.VerificationError, *PARSE_ERRORS):
                    chain = _verifier(self.trust, start + (end - start) / 2).verify(leaf_x, intermediates).chain
        except PARSE_ERRORS as exc:  # the verifier's own parse of a name or extension it cannot read
            self._verifier_reason = f"cryptography cannot read a certificate of the path ({parse_error_reason(exc)})"
            chain = None
        return None if chain is None else [owners[id(c)] for c in chain]

    def _lenient_chain(self, walked: list[Certificate]) -> list[Certificate] | None:
        """The walked path when it holds under Windows's rules (`shared.validation.leniency`), with an info
        finding that names each relaxation it needed; None (and the strict reason kept) otherwise."""
        outcome = lenient_chain(walked, self.at, _store_verifier)
        if outcome.chain is None:
            if outcome.reason:
                self._verifier_reason += f"; checked under Windows's rules as well: {outcome.reason}"
            return None
        notes = "; ".join(f"{_subject(cert)!r}: {quirk}" for cert, quirk in outcome.relaxed)
        self._add(
            "windows-leniency",
            "info",
            self.bundle.leaf,
            f"Strict TLS libraries refuse this chain ({self._verifier_reason}), but Windows accepts it and so "
            f"does certsync, which checked it under Windows's rules: {notes}.",
            "Nothing to do for Exchange; ask the CA to re-issue with conforming encoding if other peers refuse it.",
        )
        return outcome.chain

    # -- lints ----------------------------------------------------------------------------------------

    def _lint_dates(self, path: list[PathEntry]) -> None:
        leaf = self.bundle.leaf
        if self.at < leaf.not_before:
            self._add(
                "not-yet-valid",
                "error",
                leaf,
                f"The certificate is not valid until {format_time(leaf.not_before, timespec='seconds')}.",
                "Wait until it is valid before switching the connectors to it.",
                DATE_INVALID,
            )
        elif self.at > leaf.not_after:
            self._add(
                "expired",
                "error",
                leaf,
                f"The certificate expired on {format_time(leaf.not_after, timespec='seconds')}.",
                "Renew the certificate in Key Vault.",
                DATE_INVALID,
            )
        else:
            left = leaf.not_after - self.at
            state = self.expiry.state(leaf.not_before, leaf.not_after, self.at)
            if state != OK:
                lifetime = (leaf.not_after - leaf.not_before).total_seconds() / 86400
                warning_days = self.expiry.days(leaf.not_after - leaf.not_before)[0]
                self._add(
                    "expires-soon",
                    "warning",
                    leaf,
                    f"The certificate expires on {format_time(leaf.not_after, timespec='seconds')}, "
                    f"in {left.days} days: less than the {warning_days:.1f} days its {lifetime:.0f}-day "
                    "lifetime allows before a warning.",
                    "Renew it now; Key Vault can renew it automatically at a lifetime percentage.",
                )
        for entry in path[1:]:
            ca = entry.certificate
            if not ca.not_before <= self.at <= ca.not_after:
                when = "expired on" if self.at > ca.not_after else "is not valid until"
                stamp = ca.not_after if self.at > ca.not_after else ca.not_before
                kind = "root" if entry.source == "trust store" else "intermediate"
                self._add(
                    "intermediate-expired",
                    "error",
                    ca,
                    f"The {kind} certificate {_subject(ca)!r} {when} {format_time(stamp, timespec='seconds')}.",
                    "Deliver the CA's current intermediate with the certificate (re-import the PFX with its chain).",
                    DATE_INVALID,
                )

    def _lint_leaf(self, leaf: Certificate, path: list[PathEntry]) -> None:
        self._lint_eku(leaf)
        self._lint_key(leaf)
        self._lint_hosts(leaf, path)
        problems = _tls_name(leaf)[1]
        if _tls_name(leaf)[2] is None:
            empty = not _subject_rdns(leaf)
            self._add(
                "subject-without-cn",
                "error",
                leaf,
                "The certificate's subject is empty, so Exchange's TlsCertificateName (<S>) cannot name it."
                if empty
                else "The certificate's subject has no CN, so Exchange's TlsCertificateName (<S>) cannot name it.",
                "Request a profile that includes a CN (Let's Encrypt 'classic', not 'shortlived' or 'tlsserver'), "
                "or set the subject (CN=<mail host name>) in the Key Vault certificate policy, then renew.",
                INVALID,
            )
        elif problems:
            self._add(
                "cn-not-dns-name",
                "error",
                leaf,
                f"Exchange will reject this certificate's TlsCertificateName: {problems[0]}",
                "Re-issue the certificate with the mail host name (e.g. mail.contoso.com) as its first CN.",
                INVALID,
            )

    def _lint_eku(self, leaf: Certificate) -> None:
        ekus = _ekus(leaf)
        if ekus is None or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in ekus:
            return
        if ExtendedKeyUsageOID.SERVER_AUTH not in ekus:
            self._add(
                "eku-no-server-auth",
                "error",
                leaf,
                "The extended key usage does not include Server Authentication, so TLS cannot use it.",
                "Re-issue the certificate as a TLS server certificate (EKU serverAuth).",
                INVALID,
            )
        if ExtendedKeyUsageOID.CLIENT_AUTH not in ekus:
            self._add(
                "eku-no-client-auth",
                "info",
                leaf,
                "The extended key usage has Server Authentication only. Exchange presents this certificate as a "
                f"TLS client when it sends to Exchange Online; {CLIENT_AUTH_EVIDENCE}",
                "Nothing to do now; if mail to Exchange Online fails TLS after this renewal, report it with the "
                "connector's protocol log.",
            )
        elif _public_issuer(leaf):  # a public CA's: the next renewal may drop it
            self._add(
                "client-auth-ending",
                "info",
                leaf,
                f"The certificate has Client Authentication, which public CAs are removing: {CLIENT_AUTH_EVIDENCE}",
                "Nothing to do now; expect a renewal without clientAuth.",
            )
        key_usage = _key_usage(leaf)
        if key_usage is not None and not key_usage.digital_signature and not key_usage.key_encipherment:
            self._add(
                "key-usage",
                "error",
                leaf,
                "The key usage allows neither digitalSignature nor keyEncipherment, so TLS cannot use the key.",
                "Re-issue the certificate with digitalSignature (and keyEncipherment for RSA).",
                INVALID,
            )

    def _lint_key(self, leaf: Certificate) -> None:
        kind, detail = _key_facts(leaf)
        remedy = "Re-issue the certificate with an RSA-2048 (or larger) or a P-256/P-384 key."
        if kind == "unreadable":
            message = f"The key cannot be read ({detail}); Exchange cannot use it for TLS."
            self._add("unsupported-key", "error", leaf, message, remedy, INVALID)
        elif kind == "rsa":
            if int(detail) < 2048:
                message = f"The RSA key is {detail} bits; Windows and Exchange Online require at least 2048."
                self._add("weak-key", "error", leaf, message, remedy, INVALID)
        elif kind == "ec":
            if detail not in _GOOD_CURVES:
                message = f"The key is on curve {detail}; only P-256 and P-384 are usable for TLS here."
                self._add("weak-key", "error", leaf, message, remedy, INVALID)
            else:
                self._add(
                    "ecdsa-key",
                    "warning",
                    leaf,
                    "The key is ECDSA; Exchange Server supports ECC certificates only on recent builds, and only "
                    "once ECC support is enabled.",
                    "Confirm the servers run Exchange Server SE or 2019 CU with ECC enabled, or use RSA-2048.",
                )
        else:
            self._add(
                "weak-key", "error", leaf, f"The key is {kind}, which Exchange cannot use for TLS.", remedy, INVALID
            )

    def _lint_path(self, path: list[PathEntry]) -> None:
        for entry in path:
            if entry.source == "trust store":
                continue  # a root's self-signature is not checked, by Windows or anyone
            cert_x = to_x509(entry.certificate)
            self_signed_end = entry is path[-1] and entry.certificate.is_self_issued
            if cert_x.signature_algorithm_oid.dotted_string in SHA1_SIGNATURES and not self_signed_end:
                self._add(
                    "sha1-signature",
                    "error",
                    entry.certificate,
                    "The certificate is signed with SHA-1, which TLS clients no longer accept.",
                    "Re-issue it; every public CA signs with SHA-256 or better.",
                    INVALID,
                )
            if entry is not path[0]:
                ekus = _ekus(entry.certificate)
                if ekus is not None and not {
                    ExtendedKeyUsageOID.SERVER_AUTH,
                    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
                } & set(ekus):
                    self._add(
                        "eku-no-server-auth",
                        "error",
                        entry.certificate,
                        "This CA certificate's extended key usage excludes Server Authentication, so nothing "
                        "it issues is valid for TLS.",
                        "Use a certificate from a CA hierarchy issued for TLS server authentication.",
                        INVALID,
                    )

    def _lint_hosts(self, leaf: Certificate, path: list[PathEntry]) -> None:
        names = leaf.dns_names
        source = "subject alternative names"
        if not names and self.hosts:
            constrained = any(extension(e.certificate, x509.NameConstraints) for e in path[1:])
            cn = _tls_name(leaf)[2]
            if constrained:  # name constraints bind SANs only: a CN would slip past them
                names, source = (), "DNS SANs (it has none; the CN is not used under name constraints)"
            else:
                names, source = ((cn,) if cn else ()), "subject CN (the certificate has no DNS SAN)"
        for host in self.hosts:
            address = _ip_address(host)
            if address is not None:
                self._lint_ip_host(leaf, host, address)
                continue
            if not any(host_matches(pattern, host) for pattern in names):
                self._add(
                    "host-not-covered",
                    "error",
                    leaf,
                    f"The host name {host} is not covered by the certificate's {source} "
                    f"({', '.join(names) or 'none'}).",
                    f"Re-issue the certificate with {host} in its subject alternative names.",
                    INVALID,
                )

    def _lint_ip_host(
        self, leaf: Certificate, host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> None:
        """An IP address is matched only against iPAddress SANs (RFC 6125 §6.2.1 / RFC 9525 §6.3: never a
        dNSName or the CN), as Windows's SSL policy does."""
        san = extension(leaf, x509.SubjectAlternativeName)
        addresses = [] if san is None else san.get_values_for_type(x509.IPAddress)
        if address not in addresses:
            listed = ", ".join(str(a) for a in addresses) or "none"
            self._add(
                "host-not-covered",
                "error",
                leaf,
                f"The address {host} is not among the certificate's IP address SANs ({listed}).",
                f"Connect by host name, or re-issue the certificate with {host} as an IP address SAN.",
                INVALID,
            )

    def _lint_encoding(self, path: list[PathEntry]) -> None:
        """What cryptography only warned about in the delivered or fetched certificates (not the trust
        store's roots, whose encoding is the CA's business): a warning finding, never stderr."""
        for entry in path:
            if entry.source == "trust store":
                continue
            for text in parse_warnings(entry.certificate):
                self._add(
                    "nonconforming-encoding",
                    "warning",
                    entry.certificate,
                    f"The certificate breaks an encoding rule that strict TLS libraries enforce: {text}.",
                    "Windows accepts it today; ask the CA to re-issue it, as stricter peers may refuse it.",
                )

    # -- revocation ---------------------------------------------------------------------------------

    def _check_revocation(self, path: list[PathEntry]) -> None:
        for child, parent in itertools.pairwise(path):
            if self.trust.contains(child.certificate):
                break
            result = check_revocation(
                child.certificate,
                parent.certificate,
                at=self.at,
                fetcher=self.fetcher,
                cache=self.cache,
                supplied_crls=self.crls,
            )
            cert = child.certificate
            if result.status == "revoked":
                when = f" on {format_time(result.revoked_at, timespec='seconds')}" if result.revoked_at else ""
                reason = f" (reason: {result.reason})" if result.reason else ""
                self._add(
                    "revoked",
                    "error",
                    cert,
                    f"{_subject(cert)!r} was revoked{when}{reason}, according to {result.source}.",
                    "Do not deploy it: issue a new certificate and import it into Key Vault.",
                    REVOKED,
                )
            elif result.status == "unknown":
                hard = self.policy == "hard"
                why = "; ".join(result.problems) or "no source answered"
                self._add(
                    "revocation-unknown",
                    "error" if hard else "warning",
                    cert,
                    f"The revocation status of {_subject(cert)!r} could not be established ({why}).",
                    "Make the CRL/OCSP URLs reachable (allow-list a private PKI host with --allow-host), or "
                    "supply the CRL with --crl; Exchange shows RevocationCheckFailure in the same situation.",
                    REVOCATION_CHECK_FAILURE if hard else None,
                )

    def _add(
        self, code: str, severity: str, cert: Certificate, message: str, remedy: str, status: str | None = None
    ) -> None:
        self.findings.append(self._finding(code, severity, cert, message, remedy, status))

    def _finding(
        self, code: str, severity: str, cert: Certificate, message: str, remedy: str, status: str | None = None
    ) -> Finding:
        return Finding(code, severity, _subject(cert), cert.thumbprint, message, remedy, status)


def host_matches(pattern: str, host: str) -> bool:
    """RFC 6125 §6.4: exact match ignoring case, or `*.rest` matching exactly one leftmost label.

    Partial-label wildcards (`f*.example.com`), wildcards not in the leftmost label, and wildcards
    over fewer than two remaining labels (`*.com`) match nothing."""
    pattern = pattern.lower().rstrip(".")
    host = host.lower().rstrip(".")
    if "*" not in pattern:
        return pattern == host
    label, _, rest = pattern.partition(".")
    if label != "*" or "*" in rest or rest.count(".") < 1:
        return False
    first, _, host_rest = host.partition(".")
    return bool(first) and host_rest == rest


@functools.lru_cache(maxsize=1024)  # the same few host names, every assessment
def _ip_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


@functools.lru_cache(maxsize=64)
def _verifier_cached(trust: TrustStore, at: dt.datetime) -> verification.ClientVerifier:
    return _store_verifier(trust.store(), at)


def _store_verifier(store: verification.Store, at: dt.datetime) -> verification.ClientVerifier:
    # CA EKU is our lint (`eku-no-server-auth`), so a serverAuth-only CA passes the client verifier. A CA
    # without KeyUsage is accepted, as Windows accepts it; one with KeyUsage must have keyCertSign.
    ca_policy = (
        verification.ExtensionPolicy.webpki_defaults_ca()
        .may_be_present(x509.ExtendedKeyUsage, verification.Criticality.AGNOSTIC, None)
        .may_be_present(x509.KeyUsage, verification.Criticality.AGNOSTIC, _ca_key_usage)
    )
    builder = (
        verification.PolicyBuilder()
        .store(store)
        .time(at)
        .extension_policies(ca_policy=ca_policy, ee_policy=verification.ExtensionPolicy.permit_all())
    )
    return builder.build_client_verifier()


def _ca_key_usage(_policy: object, _cert: x509.Certificate, usage: x509.KeyUsage | None) -> None:
    if usage is not None and not usage.key_cert_sign:
        raise ValueError("the CA certificate's key usage lacks keyCertSign")


def _verifier(trust: TrustStore, at: dt.datetime) -> verification.ClientVerifier:
    """Path building and signatures without the leaf profile: EKU, SAN and key are certsync's own lints."""
    return _verifier_cached(trust, at.replace(microsecond=0))


def _verifier_reason(text: str) -> str:
    """cryptography's message without the certificate repr it appends."""
    text = text.split(" (encountered processing", 1)[0].split(": AlgorithmIdentifier {", 1)[0]
    return text.removeprefix("validation failed: ")


_NOT_SIGNED_BY: tuple[type[Exception], ...] = (CertsyncError, IndexError, UnsupportedAlgorithm, *PARSE_ERRORS)


def _signed_by(cert: Certificate, issuer: Certificate) -> bool:
    """Whether `issuer`'s key signed `cert`, checked over the exact bytes signed (so a certificate whose
    encoding cryptography re-reads, or a SHA-1 self-signed root, is still recognised)."""
    try:
        parts = signed_parts(cert.der)
        key = serialization.load_der_public_key(issuer.spki_der)
    except _NOT_SIGNED_BY:
        return False
    return verify_signature(key, parts.algorithm_oid, parts.signature, parts.tbs)


def _ekus(cert: Certificate) -> list[x509.ObjectIdentifier] | None:
    usage = extension(cert, x509.ExtendedKeyUsage)
    return None if usage is None else list(usage)


def _key_usage(cert: Certificate) -> x509.KeyUsage | None:
    return extension(cert, x509.KeyUsage)


@functools.lru_cache(maxsize=KEPT_PER_CERTIFICATE)
def _key_facts(cert: Certificate) -> tuple[str, int | str]:
    """("rsa", bits) | ("ec", curve name) | (other key type name, "") | ("unreadable", why)."""
    try:
        key = to_x509(cert).public_key()
    except UnsupportedAlgorithm:
        return "unreadable", f"algorithm {_key_algorithm(cert)} is not one certsync or Windows knows"
    except (ValueError, TypeError) as exc:
        return "unreadable", f"{_key_algorithm(cert)} key: {parse_error_reason(exc)}"
    if isinstance(key, rsa.RSAPublicKey):
        return "rsa", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ec", key.curve.name
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", ""
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", ""
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", ""
    return type(key).__name__, ""


def _key_algorithm(cert: Certificate) -> str:
    """The OID of the certificate's key algorithm, as text ("unknown" when the SPKI is not DER)."""
    try:
        info = der.read_tlv(cert.spki_der, 0)
        algorithm = der.children(cert.spki_der, der.children(cert.spki_der, info)[0])[0]
        return der.decode_oid(der.content(cert.spki_der, algorithm))
    except (CertsyncError, IndexError):
        return "unknown"


@functools.lru_cache(maxsize=KEPT_PER_CERTIFICATE)
def _tls_name(cert: Certificate) -> tuple[str, tuple[str, ...], str | None]:
    """The TlsCertificateName, what Exchange would object to in it, and the first CN as Exchange reads it."""
    name = TlsCertificateName.from_certificate(cert)
    return str(name), tuple(name.problems()), name.first_cn_as_exchange_reads_it()


def _public_issuer(cert: Certificate) -> bool:
    """Whether the certificate's issuer is in the table of public CA hierarchies."""
    try:
        return identify(cert.issuer) is not None
    except CertsyncError:
        return False


def _subject_rdns(cert: Certificate) -> int:
    try:
        return len(cert.subject.rdns)
    except CertsyncError:
        return 1  # undecodable is not empty: cn-not-dns-name's problems say what Exchange makes of it


@functools.lru_cache(maxsize=KEPT_PER_CERTIFICATE)
def _subject(cert: Certificate) -> str:
    try:
        return str(cert.subject)
    except CertsyncError:
        return f"(undecodable subject, thumbprint {cert.thumbprint})"


@functools.lru_cache(maxsize=KEPT_PER_CERTIFICATE)
def _issuer(cert: Certificate) -> str:
    try:
        return str(cert.issuer)
    except CertsyncError:
        return "(undecodable issuer)"
