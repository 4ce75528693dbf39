"""Certificates read from their own DER: `Certificate`, and `CertificateBundle` (a leaf and its chain).

`Certificate` walks the DER itself, so a certificate that `cryptography` refuses (a PrintableString
holding `*`, a Latin-1 T61String, an unsorted SET) still yields its names, dates, serial and DNS
names. The files that hold certificates (PEM, DER, PKCS#7, PKCS#12) are read by `shared.x509.containers`.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import TypedDict

from shared.errors import CertificateInputError, DerError, NameDecodeError
from shared.x509 import der
from shared.x509.x500 import X500Name

_SAN = "2.5.29.17"
_SKI = "2.5.29.14"
_AKI = "2.5.29.35"
_BASIC_CONSTRAINTS = "2.5.29.19"


@dataclass(frozen=True, eq=False)
class Certificate:
    """An X.509 certificate, as its DER and the fields certsync reads from it.

    `label` says where it came from (`mail.pfx, certificate 2 of 3`) so that every error can name it.
    Two certificates are equal when their DER is."""

    der: bytes
    label: str
    serial_bytes: bytes
    issuer_der: bytes
    subject_der: bytes
    not_before: dt.datetime
    not_after: dt.datetime
    spki_der: bytes
    dns_names: tuple[str, ...] = ()
    subject_key_id: bytes | None = None
    authority_key_id: bytes | None = None
    is_ca: bool = False

    @classmethod
    def from_der(cls, data: bytes, label: str = "certificate") -> Certificate:
        """Read a DER certificate; raises CertificateInputError naming `label` when it is not one.

        The same DER read again (an intermediate in every version of a fleet's certificates) is not walked
        again: the last `_WALKED` walks are kept, and a hit is a copy under the new label."""
        try:
            walked = _walked(bytes(data))
        except DerError as exc:
            raise CertificateInputError(f"{label}: not a valid X.509 certificate ({exc})") from None
        copy = object.__new__(cls)
        copy.__dict__.update(walked.__dict__)  # the fields, and the names once read (immutable)
        copy.__dict__["label"] = label
        return copy

    @classmethod
    def _walk(cls, buf: bytes, label: str) -> Certificate:
        outer = der.expect(buf, 0, der.SEQUENCE, "Certificate")
        if outer.end != len(buf):
            raise DerError("bytes after the end of the certificate")
        tbs = der.expect(buf, outer.content_start, der.SEQUENCE, "TBSCertificate", outer.end)
        fields = der.children(buf, tbs)
        i = 1 if fields and fields[0].tag == 0xA0 else 0  # [0] EXPLICIT version
        if len(fields) < i + 6:
            raise DerError("TBSCertificate has too few fields")
        serial, _sig_alg, issuer, validity, subject, spki = fields[i : i + 6]
        if serial.tag != der.INTEGER or issuer.tag != der.SEQUENCE or subject.tag != der.SEQUENCE:
            raise DerError("TBSCertificate fields are out of order")
        times = der.children(buf, validity) if validity.tag == der.SEQUENCE else []
        if len(times) != 2:
            raise DerError("the validity does not hold exactly two times (notBefore, notAfter)")
        not_before, not_after = (read_time(buf, t) for t in times)
        cert = cls(
            der=buf,
            label=label,
            serial_bytes=der.content(buf, serial),
            issuer_der=der.whole(buf, issuer),
            subject_der=der.whole(buf, subject),
            not_before=not_before,
            not_after=not_after,
            spki_der=der.whole(buf, spki),
            **_read_extensions(buf, fields[i + 6 :]),
        )
        return cert

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Certificate) and self.der == other.der

    def __hash__(self) -> int:
        return hash(self.der)

    @cached_property
    def issuer(self) -> X500Name:
        return self._name(self.issuer_der, "issuer")

    @cached_property
    def subject(self) -> X500Name:
        return self._name(self.subject_der, "subject")

    def _name(self, name_der: bytes, which: str) -> X500Name:
        try:
            return _name(name_der)
        except NameDecodeError as exc:
            raise NameDecodeError(
                f"{self.label}: the {which} name cannot be decoded ({exc}); re-issue the certificate"
            ) from None

    @property
    def thumbprint(self) -> str:
        """SHA-1 of the DER in upper-case hex, as Get-ExchangeCertificate shows it."""
        return hashlib.sha1(self.der).hexdigest().upper()

    @property
    def serial(self) -> str:
        """The serial number as Windows shows it: the encoded bytes in upper-case hex."""
        return self.serial_bytes.hex().upper()

    @property
    def is_self_issued(self) -> bool:
        return self.issuer_der == self.subject_der

    def issued(self, other: Certificate) -> bool:
        """Whether this certificate's subject (and key id, where both say) names `other`'s issuer."""
        if self == other:
            return False
        if self.subject_key_id and other.authority_key_id and self.subject_key_id != other.authority_key_id:
            return False
        if self.subject_der == other.issuer_der:
            return True
        try:  # the same name in another string type still chains (RFC 5280 §7.1)
            return self.subject.matches(other.issuer)
        except NameDecodeError:
            return False


@dataclass(frozen=True)
class CertificateBundle:
    """What a file held: the leaf, its chain in order towards the root, and any unrelated extras."""

    leaf: Certificate
    chain: tuple[Certificate, ...] = ()
    extras: tuple[Certificate, ...] = ()
    source: str = ""
    container: str = "pem"  # pem | der | pkcs7 | pkcs12
    has_private_key: bool = False


def parse_certificates(ders: list[bytes], source: str) -> list[Certificate]:
    """Certificates from DER blobs, duplicates dropped; each labelled `source` (and its place when there are more)."""
    unique = list(dict.fromkeys(ders))
    if len(unique) == 1:
        return [Certificate.from_der(unique[0], source)]
    return [
        Certificate.from_der(blob, f"{source}, certificate {n} of {len(unique)}") for n, blob in enumerate(unique, 1)
    ]


def read_time(buf: der.Buffer, tlv: der.Tlv) -> dt.datetime:
    raw = der.content(buf, tlv)
    text = raw.decode("ascii", "replace")
    if not text.endswith("Z"):
        raise DerError(f"time {text!r} is not in UTC")
    digits = text[:-1]
    if tlv.tag == der.UTC_TIME:
        if len(digits) not in (10, 12) or not digits.isdigit():
            raise DerError(f"bad time {text!r}")
        year = int(digits[:2])
        year += 1900 if year >= 50 else 2000  # RFC 5280 4.1.2.5.1
        digits = f"{year}{digits[2:]}"
    elif tlv.tag == der.GENERALIZED_TIME:
        digits = digits.split(".")[0]  # fractional seconds are allowed and dropped
        if len(digits) != 14 or not digits.isdigit():
            raise DerError(f"bad time {text!r}")
    else:
        raise DerError(f"validity field at offset {tlv.start} is not a time")
    year, month, day = int(digits[:4]), int(digits[4:6]), int(digits[6:8])
    hour, minute = int(digits[8:10]), int(digits[10:12])
    seconds = int(digits[12:14]) if len(digits) >= 14 else 0
    try:
        return dt.datetime(year, month, day, hour, minute, seconds, tzinfo=dt.timezone.utc)
    except ValueError:
        raise DerError(f"bad time {text!r}") from None


class _Extensions(TypedDict, total=False):
    """The fields of `Certificate` that its extensions give, for those it has."""

    dns_names: tuple[str, ...]
    subject_key_id: bytes
    authority_key_id: bytes | None
    is_ca: bool


_WALKED = 256


@functools.lru_cache(maxsize=_WALKED)
def _walked(buf: bytes) -> Certificate:
    return Certificate._walk(buf, "")


@functools.lru_cache(maxsize=4 * _WALKED)
def _name(name_der: bytes) -> X500Name:
    """A decoded name, shared (a leaf's issuer is its intermediate's subject), with its text and key caches."""
    return X500Name.from_der(name_der)


def _read_extensions(buf: bytes, trailing: list[der.Tlv]) -> _Extensions:
    found: _Extensions = {}
    block = next((t for t in trailing if t.tag == 0xA3), None)
    if block is None:
        return found
    seq = der.expect(buf, block.content_start, der.SEQUENCE, "Extensions", block.end)
    for ext in der.children(buf, seq):
        parts = der.children(buf, ext)
        if len(parts) < 2 or parts[0].tag != der.OID:
            raise DerError(f"extension at offset {ext.start} is not (id, value)")
        oid = der.decode_oid(der.content(buf, parts[0]))
        value = parts[-1]
        if value.tag != der.OCTET_STRING:
            raise DerError(f"extension {oid} has no OCTET STRING value")
        inner = der.content(buf, value)
        if oid == _SAN:
            names = der.expect(inner, 0, der.SEQUENCE, "subjectAltName")
            found["dns_names"] = tuple(
                der.content(inner, g).decode("latin-1") for g in der.children(inner, names) if g.tag == 0x82
            )
        elif oid == _SKI:
            found["subject_key_id"] = der.content(inner, der.expect(inner, 0, der.OCTET_STRING, "SKI"))
        elif oid == _AKI:
            aki = der.expect(inner, 0, der.SEQUENCE, "AKI")
            key_id = next((g for g in der.children(inner, aki) if g.tag == 0x80), None)
            found["authority_key_id"] = der.content(inner, key_id) if key_id else None
        elif oid == _BASIC_CONSTRAINTS:
            bc = der.expect(inner, 0, der.SEQUENCE, "basicConstraints")
            first = der.children(inner, bc)[:1]
            found["is_ca"] = bool(first and first[0].tag == der.BOOLEAN and der.content(inner, first[0]) != b"\x00")
    return found
