"""Hand-built DER for tests: names and certificates that `cryptography` would refuse to build or load.

Everything here encodes exactly what it is given (SET members in the order passed, any string tag
over any bytes), so a test can make the odd names real CAs issue: a PrintableString holding `*`,
a Latin-1 T61String, an unsorted multi-valued RDN, a non-string attribute value. Certificates are
signed for real with an EC P-256 key, so they also load in tools that check the signature.

    subject = name(rdn(ava(CN, PRINTABLE, b"*.contoso.com")))
    cert_der = certificate(subject, name(rdn(utf8(CN, "Test CA"))), extensions=[san("a.contoso.com")])

`big_crl_der()` writes CRLs with hundreds of thousands of entries in about a second (the builder in
`cryptography` would take minutes), for tests and benchmarks of CRL size limits and lookups.
"""

from __future__ import annotations

import base64
import datetime as dt
import random
import textwrap
from collections.abc import Iterable, Sequence

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from shared.x509 import der

# Attribute OIDs used often in tests.
CN = "2.5.4.3"
C = "2.5.4.6"
L = "2.5.4.7"
ST = "2.5.4.8"
O = "2.5.4.10"  # noqa: E741
OU = "2.5.4.11"
EMAIL = "1.2.840.113549.1.9.1"
BUSINESS_CATEGORY = "2.5.4.15"

# Value tags (spec §2.7).
UTF8 = 0x0C
PRINTABLE = 0x13
T61 = 0x14
IA5 = 0x16
NUMERIC = 0x12
VISIBLE = 0x1A
GRAPHIC = 0x19
GENERAL = 0x1B
VIDEOTEX = 0x15
UNIVERSAL = 0x1C
BMP = 0x1E

# Extension OIDs.
SUBJECT_ALT_NAME = "2.5.29.17"
BASIC_CONSTRAINTS = "2.5.29.19"
SUBJECT_KEY_ID = "2.5.29.14"
AUTHORITY_KEY_ID = "2.5.29.35"
ECDSA_WITH_SHA256 = "1.2.840.10045.4.3.2"
SHA256_WITH_RSA = "1.2.840.113549.1.1.11"
CRL_NUMBER = "2.5.29.20"
CRL_REASON = "2.5.29.21"

Extension = tuple[str, bool, bytes]  # (OID, critical, DER of the extension value)


# --- DER primitives ------------------------------------------------------------------------------


def tlv(tag: int, body: bytes) -> bytes:
    """One element with a single-octet tag and a definite (DER) length."""
    n = len(body)
    if n < 0x80:
        length = bytes([n])
    else:
        octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(octets)]) + octets
    return bytes([tag]) + length + body


def seq(*items: bytes) -> bytes:
    return tlv(der.SEQUENCE, b"".join(items))


def oid(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER element."""
    return tlv(der.OID, der.encode_oid(dotted))


def integer(value: int) -> bytes:
    """An INTEGER element, minimal two's complement."""
    return tlv(der.INTEGER, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def octet_string(body: bytes) -> bytes:
    return tlv(der.OCTET_STRING, body)


def boolean(value: bool) -> bytes:
    return tlv(der.BOOLEAN, b"\xff" if value else b"\x00")


def explicit(number: int, inner: bytes) -> bytes:
    """A context-specific constructed `[number] EXPLICIT` wrapper (number < 31)."""
    return tlv(0xA0 | number, inner)


def time(when: dt.datetime) -> bytes:
    """UTCTime up to 2049, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5). Naive means UTC."""
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
    if 1950 <= when.year < 2050:
        return tlv(der.UTC_TIME, when.strftime("%y%m%d%H%M%SZ").encode())
    return tlv(der.GENERALIZED_TIME, when.strftime("%Y%m%d%H%M%SZ").encode())


# --- Names ---------------------------------------------------------------------------------------


def ava(attr_oid: str, tag: int, raw: bytes) -> bytes:
    """An AttributeTypeAndValue whose value is `raw` under `tag`, with no charset check at all."""
    return seq(oid(attr_oid), tlv(tag, raw))


def ava_tlv(attr_oid: str, value_tlv: bytes) -> bytes:
    """An AttributeTypeAndValue whose value is a ready-made element (e.g. an INTEGER)."""
    return seq(oid(attr_oid), value_tlv)


def utf8(attr_oid: str, text: str) -> bytes:
    return ava(attr_oid, UTF8, text.encode("utf-8"))


def printable(attr_oid: str, text: str) -> bytes:
    """PrintableString holding whatever `text` is, one Latin-1 byte per character."""
    return ava(attr_oid, PRINTABLE, text.encode("latin-1"))


def bmp(attr_oid: str, text: str) -> bytes:
    return ava(attr_oid, BMP, text.encode("utf-16-be"))


def rdn(*avas: bytes, sort: bool = False) -> bytes:
    """A RelativeDistinguishedName. The AVAs stay in the order given (which may break DER's SET OF
    ordering) unless `sort` asks for DER order (by encoding, shorter padded with zeros)."""
    members = sorted(avas, key=lambda a: a.ljust(max(map(len, avas)), b"\0")) if sort and avas else avas
    return tlv(der.SET, b"".join(members))


def name(*rdns: bytes) -> bytes:
    """A Name: the RDNs in encoded order (Windows prints the last one first)."""
    return seq(*rdns)


# --- Extensions ----------------------------------------------------------------------------------


def san(*dns_names: str, critical: bool = False) -> Extension:
    """subjectAltName with dNSName entries."""
    return SUBJECT_ALT_NAME, critical, seq(*(tlv(0x82, n.encode("ascii")) for n in dns_names))


def basic_constraints(ca: bool, path_length: int | None = None) -> Extension:
    body = (boolean(True) if ca else b"") + (integer(path_length) if path_length is not None else b"")
    return BASIC_CONSTRAINTS, True, seq(body)


def subject_key_id(key_id: bytes) -> Extension:
    return SUBJECT_KEY_ID, False, octet_string(key_id)


def authority_key_id(key_id: bytes) -> Extension:
    return AUTHORITY_KEY_ID, False, seq(tlv(0x80, key_id))


def extension(ext: Extension) -> bytes:
    ext_oid, critical, value = ext
    return seq(oid(ext_oid), boolean(True) if critical else b"", octet_string(value))


# --- Keys and certificates -----------------------------------------------------------------------

PublicKey = ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey
_DEFAULT_KEY: ec.EllipticCurvePrivateKey | None = None


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def default_key() -> ec.EllipticCurvePrivateKey:
    """One P-256 key per test session, for tests that do not care which key signs."""
    global _DEFAULT_KEY
    if _DEFAULT_KEY is None:
        _DEFAULT_KEY = new_key()
    return _DEFAULT_KEY


def spki(key: PublicKey) -> bytes:
    """SubjectPublicKeyInfo DER of a key (a private key stands for its public half)."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(key: PublicKey) -> bytes:
    """The RFC 5280 §4.2.1.2 method 1 key identifier: SHA-1 of the subjectPublicKey bits."""
    info = spki(key)
    outer = der.read_tlv(info, 0)
    bits = der.children(info, outer)[1]
    digest = hashes.Hash(hashes.SHA1())
    digest.update(der.content(info, bits)[1:])  # skip the unused-bits octet
    return digest.finalize()


def certificate(
    subject_der: bytes,
    issuer_der: bytes | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
    *,
    subject_key: PublicKey | None = None,
    serial: int = 0x1001,
    not_before: dt.datetime = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc),
    not_after: dt.datetime = dt.datetime(2035, 1, 1, tzinfo=dt.timezone.utc),
    extensions: Iterable[Extension] = (),
) -> bytes:
    """A v3 certificate, DER, with the names exactly as given.

    `issuer_der` defaults to the subject (self-issued). `key` is the issuer's private key and signs
    with ECDSA/SHA-256 (default: `default_key()`); `subject_key` is the certified key (default: the
    signing key, i.e. self-signed). `extensions` are (OID, critical, value DER) triples, in order;
    with none, the certificate has no extensions block at all."""
    signer = key or default_key()
    algorithm = seq(oid(ECDSA_WITH_SHA256))
    exts: Sequence[Extension] = list(extensions)
    tbs = seq(
        explicit(0, integer(2)),
        integer(serial),
        algorithm,
        issuer_der if issuer_der is not None else subject_der,
        seq(time(not_before), time(not_after)),
        subject_der,
        spki(subject_key or signer),
        explicit(3, seq(*(extension(e) for e in exts))) if exts else b"",
    )
    signature = signer.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return seq(tbs, algorithm, tlv(der.BIT_STRING, b"\x00" + signature))


def pem(cert_der: bytes) -> str:
    """The PEM text of a certificate DER."""
    body = "\n".join(textwrap.wrap(base64.b64encode(cert_der).decode(), 64))
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"


# --- Large CRLs ----------------------------------------------------------------------------------

ENUMERATED = 0x0A


def big_crl_der(
    issuer_name_der: bytes,
    signer_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    entries: int,
    *,
    this_update: dt.datetime,
    next_update: dt.datetime | None,
    number: int | None = 1,
    include_serials: Sequence[int] = (),
    seed: int = 0,
    aki: bytes | None = None,
) -> bytes:
    """A v2 CRL (DER) with `entries` random revoked entries plus one entry per `include_serials`.

    The random serials are 16-byte positive INTEGERs from `random.Random(seed)`; every entry has a
    revocationDate (an hour before `this_update`) and a reasonCode (keyCompromise, superseded,
    cessationOfOperation or affiliationChanged, by turns). The `include_serials` entries (reason
    keyCompromise) are spread among the random ones. Extensions: CRLNumber unless `number` is None,
    and an AKI if `aki` (a key identifier) is given. Signed with SHA-256 with RSA (PKCS#1 v1.5) or ECDSA,
    as the key asks. `issuer_name_der` is the issuer Name's DER, e.g. `cert.subject.public_bytes()`.
    The entries are joined as bytes in one go: a million take about a second."""
    rng = random.Random(seed)
    revoked_at = time(this_update - dt.timedelta(hours=1))
    tails = [revoked_at + seq(extension((CRL_REASON, False, tlv(ENUMERATED, bytes([r]))))) for r in (1, 4, 5, 3)]
    # Each random entry is SEQUENCE { INTEGER (16 octets), Time, Extensions }, all short-form lengths.
    body_len = 18 + len(tails[0])
    assert body_len < 0x80
    head = bytes([der.SEQUENCE, body_len, der.INTEGER, 16])
    serials = bytearray(rng.randbytes(16 * entries))
    # First octet 0x40..0x7F: positive, minimal, and always exactly 16 octets long.
    serials[0::16] = bytes((b & 0x3F) | 0x40 for b in serials[0::16])
    view = bytes(serials)
    parts = [head + view[i * 16 : i * 16 + 16] + tails[i & 3] for i in range(entries)]
    for extra in include_serials:
        parts.insert(rng.randrange(len(parts) + 1), seq(integer(extra), tails[0]))
    if isinstance(signer_key, rsa.RSAPrivateKey):
        algorithm = seq(oid(SHA256_WITH_RSA), tlv(0x05, b""))
    else:
        algorithm = seq(oid(ECDSA_WITH_SHA256))
    crl_extensions: list[Extension] = []
    if aki is not None:
        crl_extensions.append(authority_key_id(aki))
    if number is not None:
        crl_extensions.append((CRL_NUMBER, False, integer(number)))
    tbs = seq(
        integer(1),  # v2
        algorithm,
        issuer_name_der,
        time(this_update),
        time(next_update) if next_update is not None else b"",
        tlv(der.SEQUENCE, b"".join(parts)) if parts else b"",
        explicit(0, seq(*(extension(e) for e in crl_extensions))) if crl_extensions else b"",
    )
    if isinstance(signer_key, rsa.RSAPrivateKey):
        signature = signer_key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    else:
        signature = signer_key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return seq(tbs, algorithm, tlv(der.BIT_STRING, b"\x00" + signature))
