"""Revocation status of one certificate: supplied CRLs, then OCSP, then the CRL distribution points.

The first authenticated answer decides: a valid CRL or OCSP response that says revoked, or one that says
good. A source that gives nothing usable (down, stale, badly signed, about another certificate) is
noted and the next is tried; when none answers, the status is "unknown" and the caller's policy decides.

`FetchCache` keeps verified CRLs by URL until their nextUpdate, OCSP answers until theirs, and
failed URLs for a minute, across assessments in one process (CryptoAPI caches per process too).
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID

from shared.validation.crl import Crl, CrlError, parse_crl
from shared.validation.fetch import Fetcher, FetchError, FetchRefused
from shared.validation.ocsp import OcspAnswer, OcspError, build_request, read_response
from shared.x509.certificate import Certificate
from shared.x509.parsed import KEPT_PER_CERTIFICATE, access_urls, extension, to_x509
from shared.x509.x500 import X500Name

MAX_URLS_PER_EXTENSION = 4
FAILURE_TTL = 60.0  # seconds a failed URL is not asked again


@dataclass(frozen=True)
class RevocationStatus:
    """`status` is "good", "revoked" or "unknown"; `source` names the evidence; `problems` say why sources failed."""

    status: str
    source: str | None = None
    revoked_at: dt.datetime | None = None
    reason: str | None = None
    problems: tuple[str, ...] = ()


@dataclass
class FetchCache:
    """What fetches gave, kept between assessments: CRLs and OCSP answers until their nextUpdate, AIA
    certificates by URL, failed URLs for a minute (which also caps what a hostile URL can make us send)."""

    crls: dict[str, Crl] = field(default_factory=dict)
    verified: dict[Crl, bytes] = field(default_factory=dict)  # CRL -> key id of the issuer it verified with
    ocsp: dict[tuple[str, bytes, bytes], OcspAnswer] = field(default_factory=dict)
    aia: dict[str, tuple[Certificate, ...]] = field(default_factory=dict)
    failures: dict[str, float] = field(default_factory=dict)

    def failed_recently(self, url: str) -> bool:
        until = self.failures.get(url)
        return until is not None and until > time.monotonic()

    def fail(self, url: str, exc: Exception) -> None:
        """Remember that fetching or reading `url` failed, so it is not asked again for FAILURE_TTL; unless
        `exc` is a FetchRefused: nothing was fetched (the guard, or one assessment's spent budget or deadline),
        so the next assessment asks."""
        if not isinstance(exc, FetchRefused):
            self.failures[url] = time.monotonic() + FAILURE_TTL


def serial_bytes(serial: int) -> bytes:
    """The DER INTEGER content of a serial number (what a CRL entry holds)."""
    return serial.to_bytes((serial.bit_length() + 8) // 8, "big", signed=True)


def check_revocation(
    cert: Certificate,
    issuer: Certificate,
    *,
    at: dt.datetime,
    fetcher: Fetcher | None,
    cache: FetchCache,
    supplied_crls: tuple[Crl, ...] = (),
) -> RevocationStatus:
    """The revocation status of `cert`, issued by `issuer`, at `at`. With no `fetcher` nothing is fetched.

    Raises `MalformedCertificate` if either certificate is one cryptography refuses."""
    problems: list[str] = []
    for crl in supplied_crls:
        if not _crl_names(crl, issuer):
            continue
        status = _from_crl(crl, cert, issuer, at, None, cache, problems)
        if status:
            return status
    ocsp_urls, crl_urls = _urls(cert)
    if fetcher is not None:
        for url in ocsp_urls:
            status = _from_ocsp(url, cert, issuer, at, fetcher, cache, problems)
            if status:
                return status
        for url in crl_urls:
            fetched = _fetch_crl(url, at, fetcher, cache, problems)
            if fetched is not None:
                status = _from_crl(fetched, cert, issuer, at, url, cache, problems)
                if status:
                    return status
    elif ocsp_urls or crl_urls:
        problems.append("fetching is off, and no supplied CRL is from this issuer")
    if not ocsp_urls and not crl_urls and not problems:
        problems.append("the certificate names no OCSP responder and no CRL distribution point")
    return RevocationStatus("unknown", problems=tuple(problems))


def _from_crl(
    crl: Crl,
    cert: Certificate,
    issuer: Certificate,
    at: dt.datetime,
    url: str | None,
    cache: FetchCache,
    problems: list[str],
) -> RevocationStatus | None:
    where = url or crl.source
    try:
        if not _crl_names(crl, issuer):
            raise CrlError("it is issued by another CA")
        if not _may_sign_crls(issuer):
            raise CrlError("its issuer's key usage does not include cRLSign")
        key_id = _key_id(issuer)
        if cache.verified.get(crl) != key_id:
            if not crl.verify_signature(to_x509(issuer).public_key()):
                if url:
                    cache.crls.pop(url, None)
                raise CrlError("its signature does not verify with the issuer's key")
            if url:  # only cached CRLs are remembered as verified: a supplied one is checked each time
                cache.verified[crl] = key_id
        crl.check(at=at, fetched_from=url, for_ca=cert.is_ca)
        entry = crl.lookup(cert.serial_bytes)
    except CrlError as exc:
        problems.append(f"CRL {where}: {exc}")
        return None
    if entry is None:
        return RevocationStatus("good", f"CRL {where}")
    if entry.reason == "removeFromCRL":  # only meaningful in delta CRLs, which are refused above
        return RevocationStatus("good", f"CRL {where}")
    return RevocationStatus("revoked", f"CRL {where}", entry.revoked_at, entry.reason)


def _fetch_crl(url: str, at: dt.datetime, fetcher: Fetcher, cache: FetchCache, problems: list[str]) -> Crl | None:
    cached = cache.crls.get(url)
    if cached is not None:
        if cached.next_update is not None and cached.next_update >= at:
            return cached
        del cache.crls[url]  # past its nextUpdate: fetch the next one
        cache.verified.pop(cached, None)
    if cache.failed_recently(url):
        problems.append(f"CRL {url}: failed moments ago; not asked again yet")
        return None
    try:
        crl = parse_crl(fetcher.get(url, "crl"), url)
    except (FetchError, CrlError) as exc:
        problems.append(f"CRL {url}: {_short(exc, url)}")
        cache.fail(url, exc)
        return None
    cache.crls[url] = crl  # checked (signature, freshness) by the caller before each use
    return crl


def _from_ocsp(
    url: str,
    cert: Certificate,
    issuer: Certificate,
    at: dt.datetime,
    fetcher: Fetcher,
    cache: FetchCache,
    problems: list[str],
) -> RevocationStatus | None:
    key = (url, cert.serial_bytes, _key_id(issuer))
    answer = cache.ocsp.get(key)
    if answer is None or (answer.next_update or answer.this_update + dt.timedelta(minutes=5)) < at:
        if cache.failed_recently(url):
            problems.append(f"OCSP {url}: failed moments ago; not asked again yet")
            return None
        request = build_request(to_x509(cert), to_x509(issuer))
        try:
            body = fetcher.post(url, request.der, "application/ocsp-request")
            answer = read_response(bytes(body), request, to_x509(issuer), at)
        except (FetchError, OcspError) as exc:
            problems.append(f"OCSP {url}: {_short(exc, url)}")
            cache.fail(url, exc)
            return None
        cache.ocsp[key] = answer
    if answer.status == "revoked":
        return RevocationStatus("revoked", f"OCSP {url}", answer.revoked_at, answer.reason)
    if answer.status == "good":
        return RevocationStatus("good", f"OCSP {url}")
    problems.append(f"OCSP {url}: the responder does not know the certificate")
    return None


@functools.lru_cache(maxsize=KEPT_PER_CERTIFICATE)
def _urls(cert: Certificate) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The OCSP and CRL URLs the certificate names (at most MAX_URLS_PER_EXTENSION of each)."""
    ocsp_urls = access_urls(cert, AuthorityInformationAccessOID.OCSP)
    cdp = extension(cert, x509.CRLDistributionPoints)
    crl_urls = [
        name.value
        for point in cdp or ()
        for name in (point.full_name or ())
        if isinstance(name, x509.UniformResourceIdentifier)
    ]
    return tuple(ocsp_urls[:MAX_URLS_PER_EXTENSION]), tuple(crl_urls[:MAX_URLS_PER_EXTENSION])


@functools.lru_cache(maxsize=KEPT_PER_CERTIFICATE)
def _key_id(cert: Certificate) -> bytes:
    """SHA-1 of the subjectPublicKey bits: what OCSP's issuerKeyHash and RFC 5280 key ids use."""
    return x509.SubjectKeyIdentifier.from_public_key(to_x509(cert).public_key()).digest


def _crl_names(crl: Crl, issuer: Certificate) -> bool:
    if crl.issuer_der == issuer.subject_der:
        return True
    try:
        return X500Name.from_der(crl.issuer_der).matches(issuer.subject)
    except Exception:  # an undecodable name is simply not this issuer's
        return False


def _may_sign_crls(issuer: Certificate) -> bool:
    usage = extension(issuer, x509.KeyUsage)
    return usage is None or usage.crl_sign


def _short(exc: Exception, url: str) -> str:
    """The error without the URL it already starts with."""
    text = str(exc)
    return text[len(url) + 2 :] if text.startswith(url + ": ") else text


def load_crl_file(path: str) -> Crl:
    """A CRL from a file (DER or PEM), for `--crl`; errors name the file."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(200 * 1024 * 1024 + 1)
    except OSError as exc:
        raise CrlError(f"{path}: cannot be read ({exc.strerror}); check the path") from None
    return parse_crl(data, path)
