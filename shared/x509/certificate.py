"""Certificates read from their own DER, and the files admins hand us: PEM, DER, PKCS#7, PKCS#12.

`Certificate` walks the DER itself, so a certificate that `cryptography` refuses (a PrintableString
holding `*`, a Latin-1 T61String, an unsorted SET) still yields its names, dates, serial and DNS
names. `load_certificates` accepts any of the usual containers, finds the leaf, and orders the rest
as its chain. Private keys are never parsed: PEM key blocks are skipped undecoded, and PKCS#12 key
bags are skipped unopened by the certificates-only reader in `shared.x509.pkcs12`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from functools import cached_property

from shared.errors import CertificateInputError, DerError, NameDecodeError
from shared.x509 import der
from shared.x509.x500 import X500Name

MAX_INPUT_BYTES = 10 * 1024 * 1024

_SAN = "2.5.29.17"
_SKI = "2.5.29.14"
_AKI = "2.5.29.35"
_BASIC_CONSTRAINTS = "2.5.29.19"
_PKCS7_SIGNED_DATA = "1.2.840.113549.1.7.2"
_BER_PKCS12_START = b"\x30\x80\x02\x01\x03"  # SEQUENCE (indefinite length) starting with INTEGER 3

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 #]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
_PEM_CERTIFICATE_LABELS = {b"CERTIFICATE", b"X509 CERTIFICATE", b"TRUSTED CERTIFICATE"}
_PEM_PKCS7_LABELS = {b"PKCS7", b"PKCS #7 SIGNED DATA", b"CMS"}
_BASE64_ONLY = re.compile(rb"[A-Za-z0-9+/=\s]+\Z")


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
        """Read a DER certificate; raises CertificateInputError naming `label` when it is not one."""
        try:
            return cls._walk(bytes(data), label)
        except DerError as exc:
            raise CertificateInputError(f"{label}: not a valid X.509 certificate ({exc})") from None

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
        not_before, not_after = (read_time(buf, t) for t in der.children(buf, validity))
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
            return X500Name.from_der(name_der)
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


def load_certificate_file(path: str, password: bytes | None = None) -> CertificateBundle:
    """Read a certificate file of any supported kind; errors name the file and what to do."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_INPUT_BYTES + 1)
    except FileNotFoundError:
        raise CertificateInputError(f"{path}: no such file; check the path") from None
    except IsADirectoryError:
        raise CertificateInputError(f"{path}: is a directory; give a certificate file") from None
    except OSError as exc:
        raise CertificateInputError(
            f"{path}: cannot be read ({exc.strerror}); check that it is a file you can read"
        ) from None
    if len(data) > MAX_INPUT_BYTES:
        raise CertificateInputError(f"{path}: larger than 10 MiB, which no certificate file is; check the path")
    return load_certificates(data, source=path, password=password)


def load_certificates(
    data: bytes, source: str = "input", password: bytes | None = None, *, accept_pkcs12: bool = True
) -> CertificateBundle:
    """Certificates from PEM (any number of blocks), DER, PKCS#7 (DER or PEM) or PKCS#12 bytes.

    With `accept_pkcs12=False`, a PKCS#12 blob (which carries a private key) is refused unopened."""
    stripped = data.strip()
    if not stripped:
        raise CertificateInputError(f"{source}: is empty; give a PEM, DER, PKCS#7 or PKCS#12 file")
    if b"-----BEGIN " in stripped:
        return _from_pem(stripped, source)
    if stripped[:1] != b"\x30" and _BASE64_ONLY.match(stripped):
        try:  # a Key Vault secret value or a .cer saved as bare base64
            decoded = base64.b64decode(stripped, validate=False)
            return load_certificates(decoded, source, password, accept_pkcs12=accept_pkcs12)
        except (binascii.Error, ValueError):
            pass
    return _from_binary(data, source, password, accept_pkcs12)


def _from_pem(data: bytes, source: str) -> CertificateBundle:
    ders, container = _pem_certificates(data, source)
    return _bundle(_parse_all(ders, source), source, container)


def _pem_certificates(data: bytes, source: str) -> tuple[list[bytes], str]:
    ders: list[bytes] = []
    seen: list[str] = []
    container = "pem"
    for match in _PEM_BLOCK.finditer(data):
        label = match.group(1)
        seen.append(label.decode())
        if label not in _PEM_CERTIFICATE_LABELS and label not in _PEM_PKCS7_LABELS:
            continue  # private keys and requests are skipped without being decoded
        try:
            body = base64.b64decode(b"".join(match.group(2).split()), validate=True)
        except binascii.Error:
            raise CertificateInputError(
                f"{source}: the {label.decode()} block {len(seen)} is not valid base64; re-export the file"
            ) from None
        if label in _PEM_PKCS7_LABELS:
            ders.extend(_pkcs7_certificates(body, source))
            container = "pkcs7"
        else:
            if label == b"TRUSTED CERTIFICATE":  # the certificate, then OpenSSL's trust settings
                with contextlib.suppress(DerError):  # if it is not DER, Certificate.from_der says so
                    body = der.whole(body, der.read_tlv(body, 0))
            ders.append(body)
    if not ders:
        found = f" (found {', '.join(seen)})" if seen else ""
        raise CertificateInputError(f"{source}: holds no certificate{found}; give the certificate file")
    return ders, container


def certificates_in(data: bytes, source: str) -> list[Certificate]:
    """Every certificate in PEM, DER or PKCS#7 bytes, in file order, with no leaf or chain logic: for
    trust-store files and AIA caIssuers answers. PKCS#12 is refused (it carries a private key)."""
    stripped = data.strip()
    if b"-----BEGIN " in stripped:
        return _parse_all(_pem_certificates(stripped, source)[0], source)
    try:
        outer = der.expect(data, 0, der.SEQUENCE, "file")
        first = der.read_tlv(data, outer.content_start, outer.end)
    except DerError:
        raise CertificateInputError(f"{source}: is not a certificate (not PEM, DER or PKCS#7); check it") from None
    if first.tag == der.OID:
        return _parse_all(_pkcs7_certificates(data, source), source)
    if first.tag == der.INTEGER:
        raise CertificateInputError(f"{source}: is a PKCS#12 file or a key, not certificates; export the certificates")
    return _parse_all([data], source)


def _from_binary(data: bytes, source: str, password: bytes | None, accept_pkcs12: bool) -> CertificateBundle:
    # A PFX in BER with an indefinite outer length (BouncyCastle, Java) is PKCS#12 too; shared.x509.pkcs12 reads it.
    is_pkcs12 = data[:5] == _BER_PKCS12_START
    if not is_pkcs12:
        try:
            outer = der.expect(data, 0, der.SEQUENCE, "file")
            first = der.read_tlv(data, outer.content_start, outer.end)
            if first.tag == der.INTEGER and der.content(data, first) != b"\x03":
                raise DerError("not a PKCS#12 file, whose version is always 3")  # e.g. a DER private key
        except DerError:
            raise CertificateInputError(
                f"{source}: is not a certificate (not PEM, DER, PKCS#7 or PKCS#12); check the file"
            ) from None
        is_pkcs12 = first.tag == der.INTEGER
    if is_pkcs12:
        if not accept_pkcs12:
            raise CertificateInputError(
                f"{source}: is a PKCS#12 file, which carries a private key; send only the public certificate "
                "(PEM, DER or PKCS#7)"
            )
        return _from_pkcs12(data, source, password)
    if first.tag == der.OID:
        return _bundle(_parse_all(_pkcs7_certificates(data, source), source), source, "pkcs7")
    return _bundle(_parse_all([data], source), source, "der")


def _pkcs7_certificates(data: bytes, source: str) -> list[bytes]:
    """The certificates of a PKCS#7 SignedData (a .p7b/.p7c certs-only bundle), by our own walk."""
    try:
        info = der.expect(data, 0, der.SEQUENCE, "ContentInfo")
        oid_tlv, explicit = der.children(data, info)[:2]
        if der.decode_oid(der.content(data, oid_tlv)) != _PKCS7_SIGNED_DATA:
            raise DerError("not SignedData")
        signed = der.expect(data, explicit.content_start, der.SEQUENCE, "SignedData", explicit.end)
        certs = [f for f in der.children(data, signed) if f.tag == 0xA0]
        out = [der.whole(data, c) for c in der.children(data, certs[0]) if c.tag == der.SEQUENCE] if certs else []
    except (DerError, ValueError):
        raise CertificateInputError(f"{source}: is not a valid PKCS#7 certificate bundle; re-export it") from None
    if not out:
        raise CertificateInputError(f"{source}: the PKCS#7 bundle holds no certificate")
    return out


def _from_pkcs12(data: bytes, source: str, password: bytes | None) -> CertificateBundle:
    from shared.x509.pkcs12 import read_pkcs12  # imports cryptography only to decrypt

    contents = read_pkcs12(data, password, source)
    if not contents.certificates:
        raise CertificateInputError(f"{source}: the PKCS#12 file holds no certificate")
    return _bundle(
        list(contents.certificates),
        source,
        "pkcs12",
        leaf=contents.key_certificate,
        has_private_key=contents.has_private_key,
    )


def _parse_all(ders: list[bytes], source: str) -> list[Certificate]:
    unique = list(dict.fromkeys(ders))
    if len(unique) == 1:
        return [Certificate.from_der(unique[0], source)]
    return [
        Certificate.from_der(blob, f"{source}, certificate {n} of {len(unique)}") for n, blob in enumerate(unique, 1)
    ]


def _bundle(
    certs: list[Certificate],
    source: str,
    container: str,
    leaf: Certificate | None = None,
    has_private_key: bool = False,
) -> CertificateBundle:
    if leaf is None:
        leaf = find_leaf(certs, source)
    chain: list[Certificate] = []
    rest = [c for c in certs if c != leaf]
    current = leaf
    while not current.is_self_issued:
        parent = next((c for c in rest if c.issued(current)), None)
        if parent is None:
            break
        chain.append(parent)
        rest.remove(parent)
        current = parent
    return CertificateBundle(leaf, tuple(chain), tuple(rest), source, container, has_private_key)


def find_leaf(certs: list[Certificate], source: str = "input") -> Certificate:
    """The one certificate that issued no other in the set. A CA certificate that issued nothing here
    (an extra root someone appended) gives way to the one end-entity certificate, if there is one."""
    candidates = [c for c in certs if not any(c.issued(other) for other in certs)]
    if len(candidates) > 1:
        end_entities = [c for c in candidates if not c.is_ca]
        candidates = end_entities if len(end_entities) == 1 else candidates
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise CertificateInputError(
            f"{source}: every certificate in it issued another, so there is no leaf; "
            "give the server certificate with its chain"
        )
    names = "; ".join(_describe(c) for c in candidates)
    raise CertificateInputError(
        f"{source}: holds {len(candidates)} unrelated end certificates ({names}); "
        "keep one server certificate and its chain in the file"
    )


def _describe(cert: Certificate) -> str:
    try:
        return str(cert.subject) or "empty subject"
    except NameDecodeError:
        return cert.thumbprint


def read_time(buf: bytes, tlv: der.Tlv) -> dt.datetime:
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
    parts = [int(digits[:4]), int(digits[4:6]), int(digits[6:8]), int(digits[8:10]), int(digits[10:12])]
    seconds = int(digits[12:14]) if len(digits) >= 14 else 0
    try:
        return dt.datetime(*parts, seconds, tzinfo=dt.timezone.utc)
    except ValueError:
        raise DerError(f"bad time {text!r}") from None


def _read_extensions(buf: bytes, trailing: list[der.Tlv]) -> dict:
    found: dict = {}
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
