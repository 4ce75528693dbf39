"""Certificates re-encoded the way Windows reads them: the encoding quirks CryptoAPI tolerates, made canonical.

`cryptography` refuses some certificates that real CAs issued and Windows accepts, because of how they are
*encoded*, not what they say. `canonical()` rewrites a certificate's TBSCertificate into the DER a strict
parser wants and says what it changed; the signature is left as it was (so it no longer matches the new TBS:
signatures are always checked over the original bytes, `signed_parts()`). Each rewrite, and why Windows
accepts the original (sources, and how well each is documented, in docs/validation.md):

| quirk | rewritten to | Windows |
| --- | --- | --- |
| validity before 2050 as GeneralizedTime | UTCTime | decoded to a FILETIME, whichever `Time` choice |
| `critical FALSE` encoded (DER forbids encoding a default) | the BOOLEAN omitted | decoded to fCritical FALSE |
| a PrintableString holding `*`, `@`, `&`... | UTF8String | "an arbitrary string of printable characters (8 bits)" |
| a negative serial (`shadow` only) | its absolute value | the serial is a byte blob |

`canonical(..., shadow=True)` also makes the changes that let a strict verifier check a *shadow* of the
chain (`shared.validation.leniency`): basicConstraints marked critical, certificatePolicies marked
non-critical, directoryName and URI subtrees taken out of nameConstraints (checked by certsync itself), a v1
certificate given a critical basicConstraints CA extension (only ever applied to a trust-store root).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import DerError
from shared.x509 import der
from shared.x509.signatures import algorithm_oid

_BASIC_CONSTRAINTS = "2.5.29.19"
_CERT_POLICIES = "2.5.29.32"
_NAME_CONSTRAINTS = "2.5.29.30"
_PRINTABLE = 0x13
_UTF8 = 0x0C
_PRINTABLE_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?")
_DIRECTORY_NAME = 0xA4
_URI = 0x86
_Subtrees = tuple[tuple[list[bytes], list[bytes]], tuple[list[str], list[str]]]

GENERALIZED_TIME = "validity date before 2050 encoded as GeneralizedTime"
EXPLICIT_FALSE = "critical FALSE encoded explicitly"
PRINTABLE_STRING = "PrintableString holding characters outside its set"
NEGATIVE_SERIAL = "negative serial number"
BC_NOT_CRITICAL = "basicConstraints of a CA not marked critical"
POLICIES_CRITICAL = "certificatePolicies marked critical"
DN_CONSTRAINTS = "directoryName name constraints"
URI_CONSTRAINTS = "URI name constraints"
V1_ROOT = "version 1 root from the trust store"


@dataclass(frozen=True)
class Rewritten:
    """A certificate re-encoded: the new DER, what was changed (the quirks above), and the directoryName and
    uniformResourceIdentifier subtrees taken out of its nameConstraints (DER of each Name; each URI host)."""

    der: bytes
    quirks: tuple[str, ...]
    dn_permitted: tuple[bytes, ...] = ()
    dn_excluded: tuple[bytes, ...] = ()
    uri_permitted: tuple[str, ...] = ()
    uri_excluded: tuple[str, ...] = ()


@dataclass(frozen=True)
class SignedParts:
    tbs: bytes
    algorithm_oid: str
    signature: bytes


def signed_parts(cert_der: bytes) -> SignedParts:
    """The exact TBSCertificate bytes, the signature algorithm's OID and the signature value."""
    outer = der.expect(cert_der, 0, der.SEQUENCE, "Certificate")
    fields = der.children(cert_der, outer)
    if len(fields) != 3:
        raise DerError("a certificate is (TBSCertificate, algorithm, signature)")
    tbs, algorithm, value = fields
    bits = der.content(cert_der, value)
    if value.tag != der.BIT_STRING or not bits or bits[0] != 0:
        raise DerError("the signature is not a BIT STRING of whole octets")
    return SignedParts(der.whole(cert_der, tbs), algorithm_oid(der.whole(cert_der, algorithm)), bits[1:])


def canonical(cert_der: bytes, *, shadow: bool = False, v1_ca: bool = False) -> Rewritten:
    """`cert_der` with the quirks in the module table rewritten (and, with `shadow`, the verifier-policy
    changes too; with `v1_ca`, a v1 certificate becomes a v3 CA). Raises DerError for DER it cannot walk."""
    try:
        return _canonical(cert_der, shadow, v1_ca)
    except (IndexError, ValueError) as exc:  # a field missing or of the wrong shape
        raise DerError(f"the certificate cannot be re-encoded ({type(exc).__name__})") from None


def _canonical(cert_der: bytes, shadow: bool, v1_ca: bool) -> Rewritten:
    quirks: list[str] = []
    outer = der.expect(cert_der, 0, der.SEQUENCE, "Certificate")
    tbs_tlv, algorithm, value = der.children(cert_der, outer)[:3]
    fields = der.children(cert_der, tbs_tlv)
    has_version = bool(fields) and fields[0].tag == 0xA0
    out: list[bytes] = []
    version = 1
    if has_version:
        version_body = der.content(cert_der, der.children(cert_der, fields[0])[0])
        version = int.from_bytes(version_body, "big") + 1
        out.append(der.whole(cert_der, fields[0]))
    rest = fields[1:] if has_version else fields
    if len(rest) < 6:
        raise DerError("TBSCertificate has too few fields")
    serial, sig_alg, issuer, validity, subject, spki = rest[:6]
    serial_body = der.content(cert_der, serial)
    if shadow and serial_body and serial_body[0] & 0x80:
        quirks.append(NEGATIVE_SERIAL)
        magnitude = -int.from_bytes(serial_body, "big", signed=True)
        out.append(tlv(der.INTEGER, magnitude.to_bytes(magnitude.bit_length() // 8 + 1, "big")))
    else:
        out.append(der.whole(cert_der, serial))
    out.append(der.whole(cert_der, sig_alg))
    out.append(_name(cert_der, issuer, quirks))
    out.append(_validity(cert_der, validity, quirks))
    out.append(_name(cert_der, subject, quirks))
    out.append(der.whole(cert_der, spki))
    dn: tuple[list[bytes], list[bytes]] = ([], [])
    uri: tuple[list[str], list[str]] = ([], [])
    trailing = rest[6:]
    for item in trailing:
        if item.tag == 0xA3:
            block = der.expect(cert_der, item.content_start, der.SEQUENCE, "Extensions", item.end)
            exts = [_extension(cert_der, e, quirks, shadow, (dn, uri)) for e in der.children(cert_der, block)]
            out.append(tlv(0xA3, tlv(der.SEQUENCE, b"".join(e for e in exts if e))))
        else:
            out.append(der.whole(cert_der, item))
    if shadow and v1_ca and version == 1:
        quirks.append(V1_ROOT)
        bc = tlv(der.SEQUENCE, tlv(der.BOOLEAN, b"\xff"))
        extension = tlv(der.SEQUENCE, _oid(_BASIC_CONSTRAINTS) + tlv(der.BOOLEAN, b"\xff") + tlv(0x04, bc))
        out.insert(0, tlv(0xA0, tlv(der.INTEGER, b"\x02")))
        out.append(tlv(0xA3, tlv(der.SEQUENCE, extension)))
    tbs = tlv(der.SEQUENCE, b"".join(out))
    rebuilt = tlv(der.SEQUENCE, tbs + der.whole(cert_der, algorithm) + der.whole(cert_der, value))
    return Rewritten(rebuilt, tuple(dict.fromkeys(quirks)), tuple(dn[0]), tuple(dn[1]), tuple(uri[0]), tuple(uri[1]))


def _validity(buf: bytes, validity: der.Tlv, quirks: list[str]) -> bytes:
    times = []
    for t in der.children(buf, validity):
        body = der.content(buf, t)
        if t.tag == der.GENERALIZED_TIME and len(body) == 15 and body[:2] in (b"19", b"20"):
            year = int(body[:4])
            if 1950 <= year < 2050:
                quirks.append(GENERALIZED_TIME)
                times.append(tlv(der.UTC_TIME, body[2:]))
                continue
        times.append(der.whole(buf, t))
    return tlv(der.SEQUENCE, b"".join(times))


def _name(buf: bytes, name: der.Tlv, quirks: list[str]) -> bytes:
    rdns = []
    changed = False
    for rdn in der.children(buf, name):
        avas = []
        for ava in der.children(buf, rdn):
            parts = der.children(buf, ava)
            if (
                len(parts) == 2
                and parts[1].tag == _PRINTABLE
                and not set(der.content(buf, parts[1])) <= _PRINTABLE_CHARS
            ):
                text = der.content(buf, parts[1]).decode("latin-1").encode("utf-8")
                avas.append(tlv(der.SEQUENCE, der.whole(buf, parts[0]) + tlv(_UTF8, text)))
                changed = True
            else:
                avas.append(der.whole(buf, ava))
        rdns.append(tlv(der.SET, b"".join(avas)))
    if not changed:
        return der.whole(buf, name)
    quirks.append(PRINTABLE_STRING)
    return tlv(der.SEQUENCE, b"".join(rdns))


def _extension(buf: bytes, ext: der.Tlv, quirks: list[str], shadow: bool, subtrees: _Subtrees) -> bytes:
    parts = der.children(buf, ext)
    oid = der.decode_oid(der.content(buf, parts[0]))
    critical = False
    if len(parts) == 3 and parts[1].tag == der.BOOLEAN:
        critical = der.content(buf, parts[1]) != b"\x00"
        if not critical:
            quirks.append(EXPLICIT_FALSE)
    value = der.content(buf, parts[-1])
    if shadow and oid == _BASIC_CONSTRAINTS and not critical:
        inner = der.expect(value, 0, der.SEQUENCE, "basicConstraints")
        first = der.children(value, inner)[:1]
        if first and first[0].tag == der.BOOLEAN and der.content(value, first[0]) != b"\x00":
            quirks.append(BC_NOT_CRITICAL)
            critical = True
    elif shadow and oid == _CERT_POLICIES and critical:
        quirks.append(POLICIES_CRITICAL)
        critical = False
    elif shadow and oid == _NAME_CONSTRAINTS:
        value = _without_subtrees(value, subtrees)
        dn, uri = subtrees
        if dn[0] or dn[1]:
            quirks.append(DN_CONSTRAINTS)
        if uri[0] or uri[1]:
            quirks.append(URI_CONSTRAINTS)
        if not value:
            return b""
    flag = tlv(der.BOOLEAN, b"\xff") if critical else b""
    return tlv(der.SEQUENCE, der.whole(buf, parts[0]) + flag + tlv(der.OCTET_STRING, value))


def _without_subtrees(value: bytes, taken: _Subtrees) -> bytes:
    """NameConstraints without its directoryName and URI subtrees (collected into `taken`, permitted first);
    empty if nothing is left."""
    (dn, uri) = taken
    outer = der.expect(value, 0, der.SEQUENCE, "nameConstraints")
    kept = b""
    for part in der.children(value, outer):
        which = 0 if part.tag == 0xA0 else 1
        subtrees = b""
        for subtree in der.children(value, part):
            base = der.children(value, subtree)[0]
            if base.tag == _DIRECTORY_NAME:
                dn[which].append(der.content(value, base))
            elif base.tag == _URI:
                uri[which].append(der.content(value, base).decode("ascii", "replace"))
            else:
                subtrees += der.whole(value, subtree)
        if subtrees:
            kept += tlv(part.tag, subtrees)
    return tlv(der.SEQUENCE, kept) if kept else b""


def _oid(dotted: str) -> bytes:
    return tlv(der.OID, der.encode_oid(dotted))


def tlv(tag: int, body: bytes) -> bytes:
    """One DER element with a single-octet tag."""
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + body
