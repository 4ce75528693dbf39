"""cryptography's view of a `Certificate`, parsed once per certificate and shared by the assessment and
revocation code. `Certificate` walks its own DER; this strict parse is only needed for signatures, keys
and extensions, and a certificate it refuses is reported as malformed, never as a crash."""

from __future__ import annotations

import functools
import warnings

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

from shared.x509.certificate import Certificate


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


@functools.lru_cache(maxsize=4096)
def extensions(cert: Certificate) -> dict[type, x509.ExtensionType]:
    """The certificate's extensions by type, read once. cryptography parses them lazily, so a malformed
    or duplicated extension surfaces here, as a malformed certificate."""
    try:
        return {type(ext.value): ext.value for ext in to_x509(cert).extensions}
    except (ValueError, TypeError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        raise MalformedCertificate(cert) from None
