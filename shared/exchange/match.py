"""Exchange's match rule (`tls-certificate-name.md` §4): does a TlsCertificateName select a certificate?

Exchange re-parses the value's issuer and subject as X.500 strings and looks for certificates whose
`Subject` and `Issuer` equal them, case ignored, RDN order and inner spacing kept; a value without `<I>`
selects every certificate with that subject. A certificate discovered on a server is known only by
Windows's own rendering of its names (`Get-ExchangeCertificate`'s Subject and Issuer); a certificate
certsync holds is rendered by `shared.x509`. Both are compared through `TlsCertificateName.matches`.
Whether the chain validates on the server (Status Valid) is the caller's concern.
"""

from __future__ import annotations

from functools import lru_cache

from shared.errors import NameSyntaxError
from shared.x509.certificate import Certificate
from shared.x509.tls_certificate_name import TlsCertificateName
from shared.x509.x500 import X500Name

# A plan matches every connector value and inventory certificate against the old and the new certificate,
# and a fleet's plans read the same inventory again and again: each distinct text is parsed once. The names
# are immutable; a text that does not parse raises each time (exceptions are not cached).
_PARSED_KEPT = 4096


@lru_cache(maxsize=_PARSED_KEPT)
def read_value(value: str) -> TlsCertificateName:
    """A TlsCertificateName as a connector holds it (syntax only: a stored value was accepted once)."""
    return TlsCertificateName.parse(value, strict=False)


@lru_cache(maxsize=_PARSED_KEPT)
def name_of(subject: str, issuer: str) -> TlsCertificateName:
    """The name of a certificate known by its Windows-rendered Subject and Issuer texts."""
    try:
        return TlsCertificateName(X500Name.parse(issuer), X500Name.parse(subject))
    except NameSyntaxError as exc:
        raise NameSyntaxError(f"{subject!r} issued by {issuer!r}: {exc}") from None


def selects(value: TlsCertificateName | str, certificate: TlsCertificateName | Certificate) -> bool:
    """Whether a connector holding `value` looks for `certificate`, as Exchange matches (chain validity aside).

    `certificate` is a parsed certificate (rendered by certsync) or the name of one read from a server."""
    wanted = read_value(value) if isinstance(value, str) else value
    if isinstance(certificate, Certificate):
        certificate = TlsCertificateName.from_certificate(certificate)
    return wanted.matches(certificate)
