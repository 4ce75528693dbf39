"""The files admins hand us, as certificates: PEM, DER, PKCS#7 and PKCS#12 containers.

`load_certificates` accepts any of the usual containers, finds the leaf, and orders the rest as its
chain; `certificates_in` lists what a trust-store file or an AIA answer holds. Private keys are never
parsed: PEM key blocks are skipped undecoded, and PKCS#12 key bags are skipped unopened by the
certificates-only reader in `shared.x509.pkcs12`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re

from shared.errors import CertificateInputError, DerError, NameDecodeError
from shared.x509 import der
from shared.x509.certificate import Certificate, CertificateBundle, parse_certificates

MAX_INPUT_BYTES = 10 * 1024 * 1024

_PKCS7_SIGNED_DATA = "1.2.840.113549.1.7.2"
_BER_PKCS12_START = b"\x30\x80\x02\x01\x03"  # SEQUENCE (indefinite length) starting with INTEGER 3

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 #]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
_PEM_CERTIFICATE_LABELS = {b"CERTIFICATE", b"X509 CERTIFICATE", b"TRUSTED CERTIFICATE"}
_PEM_PKCS7_LABELS = {b"PKCS7", b"PKCS #7 SIGNED DATA", b"CMS"}
_BASE64_ONLY = re.compile(rb"[A-Za-z0-9+/=\s]+\Z")


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
    return _bundle(parse_certificates(ders, source), source, container)


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
        return parse_certificates(_pem_certificates(stripped, source)[0], source)
    try:
        outer = der.expect(data, 0, der.SEQUENCE, "file")
        first = der.read_tlv(data, outer.content_start, outer.end)
    except DerError:
        raise CertificateInputError(f"{source}: is not a certificate (not PEM, DER or PKCS#7); check it") from None
    if first.tag == der.OID:
        return parse_certificates(_pkcs7_certificates(data, source), source)
    if first.tag == der.INTEGER:
        raise CertificateInputError(f"{source}: is a PKCS#12 file or a key, not certificates; export the certificates")
    return parse_certificates([data], source)


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
        return _bundle(parse_certificates(_pkcs7_certificates(data, source), source), source, "pkcs7")
    return _bundle(parse_certificates([data], source), source, "der")


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
    from shared.x509.pkcs12 import read_pkcs12  # lazily: reading PEM or DER never loads the PKCS#12 reader

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
