"""cryptography's view of a `Certificate`, parsed once per certificate and shared by the assessment and
revocation code. `Certificate` walks its own DER; this strict parse is only needed for signatures, keys
and extensions, and a certificate it refuses is reported as malformed, never as a crash."""

from __future__ import annotations

import functools
import warnings
from typing import TypeVar

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

from shared.x509.certificate import Certificate

_E = TypeVar("_E", bound=x509.ExtensionType)


class MalformedCertificate(Exception):
    """`cert` is not DER that a strict parser accepts (or one of its extensions is not)."""

    def __init__(self, cert: Certificate) -> None:
        super().__init__(cert.label)
        self.cert = cert


@functools.lru_cache(maxsize=4096)
def to_x509(cert: Certificate) -> x509.Certificate:
    try:
        with warnings.catch_warnings():  # a few Mozilla roots have non-positive serials; we only read them
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            return x509.load_der_x509_certificate(cert.der)
    except ValueError:
        raise MalformedCertificate(cert) from None


def extension(cert: Certificate, kind: type[_E]) -> _E | None:
    """The certificate's extension of type `kind` (`x509.KeyUsage`, ...), or None when it has none.
    Raises MalformedCertificate when any of its extensions is malformed or duplicated."""
    value = _extensions(cert).get(kind)
    return value if isinstance(value, kind) else None


def access_urls(cert: Certificate, method: x509.ObjectIdentifier) -> list[str]:
    """The URLs of the certificate's authorityInfoAccess entries for `method` (OCSP or caIssuers), in order."""
    aia = extension(cert, x509.AuthorityInformationAccess)
    return [
        d.access_location.value
        for d in aia or ()
        if d.access_method == method and isinstance(d.access_location, x509.UniformResourceIdentifier)
    ]


@functools.lru_cache(maxsize=4096)
def _extensions(cert: Certificate) -> dict[type[x509.ExtensionType], x509.ExtensionType]:
    """The certificate's extensions by type, read once. cryptography parses them lazily, so a malformed
    or duplicated extension surfaces here, as a malformed certificate."""
    try:
        return {type(ext.value): ext.value for ext in to_x509(cert).extensions}
    except (ValueError, TypeError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        raise MalformedCertificate(cert) from None
