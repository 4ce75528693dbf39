"""cryptography's view of a `Certificate`, parsed once per certificate and shared by the assessment and
revocation code. `Certificate` walks its own DER; this strict parse is only needed for signatures, keys
and extensions, and a certificate it refuses is reported as malformed, never as a crash.

Whatever `cryptography` raises while loading a certificate or reading its extensions becomes
`MalformedCertificate` with a one-line reason, and whatever it warns about (a serial number that is not
positive, UTF-8 in a VisibleString, an attribute of the wrong length) is kept per certificate
(`parse_warnings`) instead of reaching stderr: the assessment reports it as a finding where it matters.
"""

from __future__ import annotations

import functools
import warnings
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from shared.errors import DerError
from shared.x509.certificate import Certificate
from shared.x509.lenient import canonical

_E = TypeVar("_E", bound=x509.ExtensionType)

# How many certificates' parsed forms and derived facts each cache keeps (here and in validation): the
# intermediates every assessment meets stay, the leaves in flight are reused, and a fleet's thousands of
# leaves are not all held at once (each parsed certificate costs tens of KiB, mostly outside Python's heap).
KEPT_PER_CERTIFICATE = 512

# What cryptography raises for bytes it will not read: ValueError (most), InvalidVersion (not a
# ValueError), DuplicateExtension, UnsupportedGeneralNameType, UnsupportedAlgorithm, and TypeError.
PARSE_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


class MalformedCertificate(Exception):
    """`cert` is not DER that a strict parser accepts (or one of its extensions is not); `reason` says why,
    in one line (never the certificate's bytes)."""

    def __init__(self, cert: Certificate, reason: str = "") -> None:
        super().__init__(f"{cert.label}: {reason}" if reason else cert.label)
        self.cert = cert
        self.reason = reason


def parse_error_reason(exc: BaseException) -> str:
    """A one-line reason from a cryptography exception: its first line, without the Rust parser's
    location dump, at most 160 characters."""
    text = (str(exc).strip().splitlines() or [""])[0]
    text = text.split(" {", 1)[0].split(" (encountered processing", 1)[0].strip().rstrip(":")
    text = text or type(exc).__name__
    return text if len(text) <= 160 else text[:159] + "…"


def to_x509(cert: Certificate) -> x509.Certificate:
    """cryptography's parse of `cert`; raises MalformedCertificate when it refuses the DER."""
    return _load(cert)[0]


def parse_warnings(cert: Certificate) -> tuple[str, ...]:
    """What cryptography warned about while reading `cert` and its extensions, one line each, deduplicated.
    Empty for a certificate it refuses (that is MalformedCertificate's to say)."""
    try:
        loaded = _load(cert)[1]
        read = _read_extensions(cert)[1]
    except MalformedCertificate:
        return ()
    return tuple(dict.fromkeys((*loaded, *read)))


@functools.lru_cache(maxsize=KEPT_PER_CERTIFICATE)
def _load(cert: Certificate) -> tuple[x509.Certificate, tuple[str, ...]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parsed = x509.load_der_x509_certificate(cert.der)
            parsed.serial_number  # noqa: B018 - some warnings come only when a field is first read
        except PARSE_ERRORS as exc:
            return _load_canonical(cert, parse_error_reason(exc))
    return parsed, _messages(caught)


def _load_canonical(cert: Certificate, reason: str) -> tuple[x509.Certificate, tuple[str, ...]]:
    """cryptography's parse of the certificate re-encoded as Windows reads it (`shared.x509.lenient`), when
    only an encoding quirk Windows tolerates made it refuse the original; each quirk becomes a warning.
    The parse's signature no longer matches its TBS: signatures are checked over the original bytes."""
    try:
        rewritten = canonical(cert.der)
    except DerError:
        rewritten = None
    if rewritten is None or not rewritten.quirks:
        raise MalformedCertificate(cert, reason)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parsed = x509.load_der_x509_certificate(rewritten.der)
            parsed.serial_number  # noqa: B018
        except PARSE_ERRORS:
            raise MalformedCertificate(cert, reason) from None
    return parsed, (*rewritten.quirks, *_messages(caught))


def _messages(caught: list[warnings.WarningMessage]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_warning_text(str(w.message)) for w in caught))


def _warning_text(message: str) -> str:
    """The first sentence of a cryptography warning ("... Loading this certificate will cause an exception
    in a future release" is about cryptography, not the certificate)."""
    first = message.strip().split(". ", 1)[0].rstrip(".")
    return first if len(first) <= 160 else first[:159] + "…"


def extension(cert: Certificate, kind: type[_E]) -> _E | None:
    """The certificate's extension of type `kind` (`x509.KeyUsage`, ...), or None when it has none.
    Raises MalformedCertificate when any of its extensions is malformed or duplicated."""
    value = _read_extensions(cert)[0].get(kind)
    return value if isinstance(value, kind) else None


def access_urls(cert: Certificate, method: x509.ObjectIdentifier) -> list[str]:
    """The URLs of the certificate's authorityInfoAccess entries for `method` (OCSP or caIssuers), in order."""
    aia = extension(cert, x509.AuthorityInformationAccess)
    return [
        d.access_location.value
        for d in aia or ()
        if d.access_method == method and isinstance(d.access_location, x509.UniformResourceIdentifier)
    ]


@functools.lru_cache(maxsize=KEPT_PER_CERTIFICATE)
def _read_extensions(
    cert: Certificate,
) -> tuple[dict[type[x509.ExtensionType], x509.ExtensionType], tuple[str, ...]]:
    """The certificate's extensions by type, read once, and the warnings reading them gave. cryptography
    parses them lazily, so a malformed or duplicated extension surfaces here, as a malformed certificate."""
    parsed = to_x509(cert)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            found = {type(ext.value): ext.value for ext in parsed.extensions}
        except PARSE_ERRORS as exc:
            raise MalformedCertificate(cert, parse_error_reason(exc)) from None
    return found, _messages(caught)
