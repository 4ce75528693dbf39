"""A certificates-only PKCS#12 (RFC 7292) reader: the certificates of a .pfx, and whether it holds a key.

The product rule is that a private key is never parsed or kept, so this reader walks the PFX itself
instead of asking a library to open it (which decrypts and parses the key). It checks the password
against the file's MAC, decrypts the parts that hold certificates, and reads the certificate bags. Key
bags (`keyBag`, `pkcs8ShroudedKeyBag`) are skipped unopened: only their `localKeyId` attribute is read,
so that the certificate carrying the same id can be named the key's certificate.

Supported: MACs with SHA-1/SHA-224/SHA-256/SHA-384/SHA-512 (not PBMAC1), and the encryptions OpenSSL,
Windows, Azure Key Vault and `cryptography` write: PBES2 (PBKDF2 with AES-CBC or DES-EDE3-CBC) and the
PKCS#12 PBEs with 3DES and RC2. `cryptography` only supports 128-bit RC2, so the 40-bit RC2 that
Windows and `openssl -legacy` use for certificates is decrypted here (RFC 2268). BER, which some
producers (BouncyCastle, Java) write, is re-encoded as DER before the strict reader `shared.x509.der` walks
it. The password is encoded as RFC 7292 says: a NUL-terminated BMPString for the PKCS#12 key
derivation, UTF-8 for PBKDF2. `cryptography` is imported only when something must be decrypted.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

from shared.errors import CertificateInputError, DerError
from shared.x509 import der
from shared.x509.certificate import Certificate, parse_certificates

MAX_ITERATIONS = 10_000_000  # per key derivation; producers use 1 to 600,000
MAX_NESTING = 4  # safeContentsBag inside safeContentsBag
_MAX_WORK = 4 * MAX_ITERATIONS  # hash iterations over a whole file, wrong-password retries included
_MAX_RC2_40_BYTES = 1024 * 1024  # decrypted here in Python (2 s a MiB); a chain takes a few KiB
_MAX_BER_DEPTH = 64
_T = TypeVar("_T")

_DATA = "1.2.840.113549.1.7.1"
_SIGNED_DATA = "1.2.840.113549.1.7.2"
_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
_ENCRYPTED_DATA = "1.2.840.113549.1.7.6"

_KEY_BAG = "1.2.840.113549.1.12.10.1.1"
_SHROUDED_KEY_BAG = "1.2.840.113549.1.12.10.1.2"
_CERT_BAG = "1.2.840.113549.1.12.10.1.3"
_SAFE_CONTENTS_BAG = "1.2.840.113549.1.12.10.1.6"
_X509_CERTIFICATE = "1.2.840.113549.1.9.22.1"
_LOCAL_KEY_ID = "1.2.840.113549.1.9.21"

_PBES2 = "1.2.840.113549.1.5.13"
_PBKDF2 = "1.2.840.113549.1.5.12"
_PBMAC1 = "1.2.840.113549.1.5.14"

# MAC digest / PBKDF2 PRF -> hashlib name
_HASHES = {
    "1.3.14.3.2.26": "sha1",
    "2.16.840.1.101.3.4.2.4": "sha224",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}
_PRFS = {
    "1.2.840.113549.2.7": "sha1",
    "1.2.840.113549.2.8": "sha224",
    "1.2.840.113549.2.9": "sha256",
    "1.2.840.113549.2.10": "sha384",
    "1.2.840.113549.2.11": "sha512",
}
# PBES2 encryption scheme -> (cipher, key length)
_PBES2_CIPHERS = {
    "2.16.840.1.101.3.4.1.2": ("aes", 16),
    "2.16.840.1.101.3.4.1.22": ("aes", 24),
    "2.16.840.1.101.3.4.1.42": ("aes", 32),
    "1.2.840.113549.3.7": ("3des", 24),
}
# PKCS#12 PBE (RFC 7292 appendix C, SHA-1 key derivation) -> (cipher, key length)
_PKCS12_PBES = {
    "1.2.840.113549.1.12.1.3": ("3des", 24),
    "1.2.840.113549.1.12.1.4": ("3des", 16),
    "1.2.840.113549.1.12.1.5": ("rc2", 16),
    "1.2.840.113549.1.12.1.6": ("rc2-40", 5),
}
_NAMES = {
    _PBMAC1: "PBMAC1",
    "1.2.840.113549.2.5": "MD5",
    "1.2.840.113549.1.12.1.1": "pbeWithSHAAnd128BitRC4",
    "1.2.840.113549.1.12.1.2": "pbeWithSHAAnd40BitRC4",
    "1.2.840.113549.1.5.3": "pbeWithMD5AndDES-CBC",
    "1.2.840.113549.1.5.10": "pbeWithSHA1AndDES-CBC",
    "1.2.840.113549.3.2": "RC2-CBC",
    "1.3.14.3.2.7": "DES-CBC",
}
_REEXPORT = "re-export it with AES (openssl pkcs12 -export, or Windows' AES256-SHA256 option)"


@dataclass(frozen=True)
class Pkcs12Contents:
    """The certificates of a PFX in file order, the one whose localKeyId matches a key bag's (when one
    does), and whether the file holds a private key at all. Nothing here comes from a key bag's value."""

    certificates: tuple[Certificate, ...]
    key_certificate: Certificate | None
    has_private_key: bool


def read_pkcs12(data: bytes, password: bytes | None, source: str) -> Pkcs12Contents:
    """The certificates of PKCS#12 `data`; raises CertificateInputError naming `source`.

    `password` is the password's UTF-8 bytes. None or empty tries both encodings of an empty password
    (a NUL-terminated empty BMPString and no bytes at all), as OpenSSL does: Key Vault and Windows
    write PFX files with an empty password."""
    return _Reader(source, password).read(bytes(data))


class _Password(NamedTuple):
    bmp: bytes  # NUL-terminated BMPString, for the PKCS#12 key derivation
    utf8: bytes  # for PBKDF2


class _Undecryptable(Exception):
    """Decryption gave bad padding or not DER: the password is wrong, or the file damaged."""


class _Safe(NamedTuple):
    """What the bags of one password attempt held."""

    certificates: list[tuple[bytes, bytes | None]]  # (certificate DER, localKeyId)
    key_ids: list[bytes | None]


class _Mac(NamedTuple):
    hash_name: str
    digest: bytes
    salt: bytes
    iterations: int


class _Reader:
    def __init__(self, source: str, password: bytes | None) -> None:
        self.source = source
        self.password = password
        self.work = 0
        self.rc2_40_bytes = 0

    # -- messages ---------------------------------------------------------------------------------

    def _fail(self, what: str) -> CertificateInputError:
        return CertificateInputError(f"{self.source}: {what}")

    def _password_error(self) -> CertificateInputError:
        if self.password is None:
            return self._fail(
                "is a password-protected PKCS#12 file; pass --password-env VAR, "
                "where VAR is an environment variable holding the password"
            )
        return self._fail("wrong password for this PKCS#12 file, or the file is damaged; check the password")

    def _invalid(self, exc: DerError) -> CertificateInputError:
        return self._fail(f"is not a valid PKCS#12 file ({exc}); re-export it")

    # -- the PFX ----------------------------------------------------------------------------------

    def read(self, data: bytes) -> Pkcs12Contents:
        try:
            auth_safe, mac = _strict_or_ber(self._pfx, data)
        except DerError as exc:
            raise self._invalid(exc) from None
        candidates = _passwords(self.password)
        verified = mac is not None
        if mac is not None:  # the first form of the password the MAC accepts; no MAC computed after it
            accepted = next((p for p in candidates if self._mac_matches(mac, auth_safe, p)), None)
            if accepted is None:
                raise self._password_error()
            candidates = [accepted]
        for password in candidates:
            try:
                safe = _strict_or_ber(functools.partial(self._authenticated_safe, password=password), auth_safe)
            except _Undecryptable:
                continue
            except DerError as exc:
                raise self._invalid(exc) from None
            return self._contents(safe)
        if verified:
            raise self._fail(
                "is damaged: its encrypted part does not decrypt with the password its MAC accepts; re-export it"
            )
        raise self._password_error()

    def _pfx(self, buf: bytes) -> tuple[bytes, _Mac | None]:
        """The AuthenticatedSafe's encoded bytes (what the MAC covers) and the MAC, if there is one."""
        pfx = der.expect(buf, 0, der.SEQUENCE, "PFX")
        if pfx.end != len(buf):
            raise DerError("bytes after the end of the PFX")
        fields = der.children(buf, pfx)
        if len(fields) not in (2, 3):
            raise DerError("PFX does not have 2 or 3 fields")
        if _integer(buf, fields[0], "PFX version") != 3:
            raise DerError("PFX version is not 3")
        content_type, inner = _content_info(buf, fields[1])
        if content_type == _SIGNED_DATA:
            raise self._fail(
                "is a PKCS#12 file signed with a key (public-key integrity mode), which certsync does not "
                "read; re-export it with a password"
            )
        if content_type != _DATA or inner is None:
            raise DerError(f"authSafe is {content_type}, not data")
        octets = der.expect(buf, inner.content_start, der.OCTET_STRING, "authSafe", inner.end)
        if octets.end != inner.end:
            raise DerError("authSafe holds more than its OCTET STRING")
        auth_safe = der.content(buf, octets)
        mac = self._mac_data(buf, fields[2]) if len(fields) == 3 else None
        return auth_safe, mac

    def _mac_data(self, buf: bytes, tlv: der.Tlv) -> _Mac:
        if tlv.tag != der.SEQUENCE:
            raise DerError("MacData is not a SEQUENCE")
        fields = der.children(buf, tlv)
        if len(fields) not in (2, 3):
            raise DerError("MacData does not have 2 or 3 fields")
        digest_info = der.children(buf, _tagged(fields[0], der.SEQUENCE, "DigestInfo"))
        if len(digest_info) != 2:
            raise DerError("DigestInfo does not have 2 fields")
        oid = _algorithm(buf, digest_info[0])[0]
        hash_name = _HASHES.get(oid)
        if hash_name is None:
            raise self._fail(
                f"the PKCS#12 file's MAC uses {_NAMES.get(oid, oid)}, which certsync does not support; "
                "re-export it with a SHA-256 MAC (openssl pkcs12 -export -macalg sha256)"
            )
        digest = der.content(buf, _tagged(digest_info[1], der.OCTET_STRING, "MAC digest"))
        salt = der.content(buf, _tagged(fields[1], der.OCTET_STRING, "MAC salt"))
        iterations = _integer(buf, fields[2], "MAC iterations") if len(fields) == 3 else 1
        return _Mac(hash_name, digest, salt, self._check_iterations(iterations))

    def _mac_matches(self, mac: _Mac, auth_safe: bytes, password: _Password) -> bool:
        size = hashlib.new(mac.hash_name).digest_size
        key = self._pkcs12_kdf(mac.hash_name, password.bmp, mac.salt, mac.iterations, 3, size)
        return hmac.compare_digest(hmac.new(key, auth_safe, mac.hash_name).digest(), mac.digest)

    def _check_iterations(self, iterations: int) -> int:
        if iterations < 1:
            raise DerError(f"iteration count {iterations} is not positive")
        if iterations > MAX_ITERATIONS:
            raise self._fail(
                f"the PKCS#12 file asks for {iterations:,} key-derivation iterations, more than the "
                f"{MAX_ITERATIONS:,} certsync allows; re-export it"
            )
        return iterations

    def _charge(self, iterations: int) -> None:
        self.work += iterations
        if self.work > _MAX_WORK:
            raise self._fail(
                f"the PKCS#12 file asks for more than {_MAX_WORK:,} key-derivation iterations in all, "
                "more than certsync allows; re-export it"
            )

    # -- AuthenticatedSafe and SafeContents -------------------------------------------------------

    def _authenticated_safe(self, buf: bytes, password: _Password) -> _Safe:
        outer = der.expect(buf, 0, der.SEQUENCE, "AuthenticatedSafe")
        if outer.end != len(buf):
            raise DerError("bytes after the end of the AuthenticatedSafe")
        safe = _Safe([], [])
        for info in der.children(buf, outer):
            content_type, inner = _content_info(buf, info)
            if inner is None:
                continue  # a ContentInfo without content holds no bag
            if content_type == _DATA:
                octets = der.expect(buf, inner.content_start, der.OCTET_STRING, "SafeContents", inner.end)
                found = _strict_or_ber(self._safe_contents, der.content(buf, octets))
            elif content_type == _ENCRYPTED_DATA:
                plain = self._encrypted_data(buf, inner, password)
                try:
                    found = _strict_or_ber(self._safe_contents, plain)
                except DerError:
                    raise _Undecryptable from None
            elif content_type == _ENVELOPED_DATA:
                raise self._fail(
                    "is a PKCS#12 file encrypted to a certificate (public-key privacy mode), which certsync "
                    "does not read; re-export it with a password"
                )
            else:
                raise DerError(f"AuthenticatedSafe holds a ContentInfo of type {content_type}")
            safe.certificates.extend(found.certificates)
            safe.key_ids.extend(found.key_ids)
        return safe

    def _safe_contents(self, buf: bytes) -> _Safe:
        outer = der.expect(buf, 0, der.SEQUENCE, "SafeContents")
        if outer.end != len(buf):
            raise DerError("bytes after the end of the SafeContents")
        safe = _Safe([], [])
        self._bags(buf, outer, safe, 0)
        return safe

    def _bags(self, buf: bytes, contents: der.Tlv, safe: _Safe, depth: int) -> None:
        for bag in der.children(buf, contents):
            fields = der.children(buf, _tagged(bag, der.SEQUENCE, "SafeBag"))
            if len(fields) not in (2, 3) or fields[0].tag != der.OID or fields[1].tag != 0xA0:
                raise DerError(f"SafeBag at offset {bag.start} is not (id, [0] value, attributes)")
            bag_id = der.decode_oid(der.content(buf, fields[0]))
            if bag_id in (_KEY_BAG, _SHROUDED_KEY_BAG):  # the value is neither decrypted nor parsed
                safe.key_ids.append(_local_key_id(buf, fields[2:]))
            elif bag_id == _CERT_BAG:
                value = der.expect(buf, fields[1].content_start, der.SEQUENCE, "CertBag", fields[1].end)
                cert_fields = der.children(buf, value)
                if len(cert_fields) != 2 or cert_fields[0].tag != der.OID or cert_fields[1].tag != 0xA0:
                    raise DerError(f"CertBag at offset {value.start} is not (id, [0] value)")
                if der.decode_oid(der.content(buf, cert_fields[0])) != _X509_CERTIFICATE:
                    continue  # an SDSI certificate
                holder = cert_fields[1]
                octets = der.expect(buf, holder.content_start, der.OCTET_STRING, "certificate", holder.end)
                safe.certificates.append((der.content(buf, octets), _local_key_id(buf, fields[2:])))
            elif bag_id == _SAFE_CONTENTS_BAG:
                if depth + 1 > MAX_NESTING:
                    raise self._fail(f"the PKCS#12 file nests its bags more than {MAX_NESTING} deep; re-export it")
                inner = der.expect(buf, fields[1].content_start, der.SEQUENCE, "SafeContents", fields[1].end)
                self._bags(buf, inner, safe, depth + 1)
            # crlBag, secretBag and unknown bags hold no certificate

    def _contents(self, safe: _Safe) -> Pkcs12Contents:
        ders = list(dict.fromkeys(blob for blob, _ in safe.certificates))
        certs = parse_certificates(ders, self.source)
        by_der = dict(zip(ders, certs, strict=True))
        key_certificate = None
        for key_id in safe.key_ids:
            match = next((blob for blob, cert_id in safe.certificates if key_id and cert_id == key_id), None)
            if match is not None:
                key_certificate = by_der[match]
                break
        return Pkcs12Contents(tuple(certs), key_certificate, bool(safe.key_ids))

    # -- decryption -------------------------------------------------------------------------------

    def _encrypted_data(self, buf: bytes, holder: der.Tlv, password: _Password) -> bytes:
        encrypted = der.expect(buf, holder.content_start, der.SEQUENCE, "EncryptedData", holder.end)
        fields = der.children(buf, encrypted)
        if len(fields) < 2:
            raise DerError("EncryptedData has too few fields")
        _integer(buf, fields[0], "EncryptedData version")
        info = der.children(buf, _tagged(fields[1], der.SEQUENCE, "EncryptedContentInfo"))
        if len(info) < 2 or info[0].tag != der.OID:
            raise DerError("EncryptedContentInfo has too few fields")
        if len(info) == 2:
            return b""  # no encrypted content: nothing to read
        content = info[2]
        if content.tag == 0x80:  # [0] IMPLICIT OCTET STRING
            ciphertext = der.content(buf, content)
        elif content.tag == 0xA0:  # the same, constructed (BER)
            pieces = der.children(buf, content)
            if any(p.tag != der.OCTET_STRING for p in pieces):
                raise DerError("constructed encryptedContent holds something other than OCTET STRINGs")
            ciphertext = b"".join(der.content(buf, p) for p in pieces)
        else:
            raise DerError(f"encryptedContent has tag 0x{content.tag:02X}")
        return self._decrypt(buf, info[1], ciphertext, password)

    def _decrypt(self, buf: bytes, algorithm: der.Tlv, ciphertext: bytes, password: _Password) -> bytes:
        oid, params = _algorithm(buf, algorithm)
        if oid == _PBES2:
            if params is None:
                raise DerError("PBES2 without parameters")
            cipher, key, iv = self._pbes2(buf, params, password)
        elif oid in _PKCS12_PBES:
            if params is None or params.tag != der.SEQUENCE:
                raise DerError("PKCS#12 PBE parameters are not a SEQUENCE")
            fields = der.children(buf, params)
            if len(fields) != 2:
                raise DerError("PKCS#12 PBE parameters do not have 2 fields")
            salt = der.content(buf, _tagged(fields[0], der.OCTET_STRING, "PBE salt"))
            iterations = self._check_iterations(_integer(buf, fields[1], "PBE iterations"))
            cipher, size = _PKCS12_PBES[oid]
            if cipher == "rc2-40":
                self.rc2_40_bytes += len(ciphertext)
                if self.rc2_40_bytes > _MAX_RC2_40_BYTES:
                    raise self._fail(f"the PKCS#12 file holds more than 1 MiB encrypted with 40-bit RC2; {_REEXPORT}")
            key = self._pkcs12_kdf("sha1", password.bmp, salt, iterations, 1, size)
            iv = self._pkcs12_kdf("sha1", password.bmp, salt, iterations, 2, 8)
        else:
            raise self._fail(
                f"the PKCS#12 file is encrypted with {_NAMES.get(oid, oid)}, which certsync does not read; {_REEXPORT}"
            )
        if not ciphertext or len(ciphertext) % len(iv):
            raise DerError("encrypted content is not a whole number of cipher blocks")
        return _unpad(_cbc_decrypt(cipher, key, iv, ciphertext), len(iv))

    def _pbes2(self, buf: bytes, params: der.Tlv, password: _Password) -> tuple[str, bytes, bytes]:
        fields = der.children(buf, _tagged(params, der.SEQUENCE, "PBES2 parameters"))
        if len(fields) != 2:
            raise DerError("PBES2 parameters do not have 2 fields")
        kdf_oid, kdf_params = _algorithm(buf, fields[0])
        if kdf_oid != _PBKDF2:
            raise self._fail(
                f"the PKCS#12 file derives its key with {_NAMES.get(kdf_oid, kdf_oid)}, which certsync does "
                f"not read; {_REEXPORT}"
            )
        scheme_oid, iv_tlv = _algorithm(buf, fields[1])
        if scheme_oid not in _PBES2_CIPHERS:
            raise self._fail(
                f"the PKCS#12 file is encrypted with {_NAMES.get(scheme_oid, scheme_oid)}, which certsync does "
                f"not read; {_REEXPORT}"
            )
        cipher, size = _PBES2_CIPHERS[scheme_oid]
        if iv_tlv is None or iv_tlv.tag != der.OCTET_STRING:
            raise DerError("PBES2 cipher has no IV")
        iv = der.content(buf, iv_tlv)
        if len(iv) != (16 if cipher == "aes" else 8):
            raise DerError("PBES2 IV has the wrong length")
        if kdf_params is None:
            raise DerError("PBKDF2 without parameters")
        kdf = der.children(buf, _tagged(kdf_params, der.SEQUENCE, "PBKDF2 parameters"))
        if len(kdf) < 2 or kdf[0].tag != der.OCTET_STRING:
            raise DerError("PBKDF2 parameters are not (salt, iterations, ...)")
        salt = der.content(buf, kdf[0])
        iterations = self._check_iterations(_integer(buf, kdf[1], "PBKDF2 iterations"))
        prf = "sha1"
        for extra in kdf[2:]:
            if extra.tag == der.INTEGER:
                if _integer(buf, extra, "PBKDF2 key length") != size:
                    raise DerError("PBKDF2 key length does not match the cipher")
            else:
                prf_oid = _algorithm(buf, extra)[0]
                if prf_oid not in _PRFS:
                    raise self._fail(
                        f"the PKCS#12 file derives its key with PBKDF2 and {_NAMES.get(prf_oid, prf_oid)}, which "
                        f"certsync does not read; {_REEXPORT}"
                    )
                prf = _PRFS[prf_oid]
        blocks = -(-size // hashlib.new(prf).digest_size)
        self._charge(iterations * blocks)
        return cipher, hashlib.pbkdf2_hmac(prf, password.utf8, salt, iterations, size), iv

    def _pkcs12_kdf(
        self, hash_name: str, password: bytes, salt: bytes, iterations: int, purpose: int, size: int
    ) -> bytes:
        """RFC 7292 appendix B.2: `size` bytes of key material for `purpose` (1 key, 2 IV, 3 MAC key)."""
        # hashlib.sha1 and its kin: faster in this loop than hashlib.new(hash_name)
        new: Callable[[bytes], hashlib._Hash] = getattr(hashlib, hash_name)
        u, v = new(b"").digest_size, new(b"").block_size
        self._charge(iterations * -(-size // u))
        native = _native_kdf()
        if native is not None:
            derived = native(hash_name, password, salt, iterations, purpose, size)
            if derived is not None:
                return derived
        return _python_kdf(new, v, password, salt, iterations, purpose, size)


def _python_kdf(
    new: Callable[[bytes], hashlib._Hash],
    v: int,
    password: bytes,
    salt: bytes,
    iterations: int,
    purpose: int,
    size: int,
) -> bytes:
    """RFC 7292 B.2 in Python: the reference for `_native_kdf`, and what runs where it is not available."""
    block = bytearray(_fill(salt, v) + _fill(password, v))
    prefix = bytes([purpose]) * v
    out = b""
    while True:
        a = new(prefix + block).digest()
        for _ in range(iterations - 1):
            a = new(a).digest()
        out += a
        if len(out) >= size:
            return out[:size]
        b = int.from_bytes(_fill(a, v), "big") + 1
        for j in range(0, len(block), v):
            chunk = (int.from_bytes(block[j : j + v], "big") + b) & ((1 << (8 * v)) - 1)
            block[j : j + v] = chunk.to_bytes(v, "big")


# The RFC 7292 key derivation hashes its input `iterations` times (2,048 for Key Vault's MAC): 0.45 ms in
# a Python loop, 0.15 ms in OpenSSL. libcrypto is the system's (`cryptography` links its own statically and
# does not expose this function); where it is not there, the Python loop gives the same bytes.
_LIBCRYPTO = ("libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.so", "libcrypto.3.dylib", "libcrypto.dylib")


@functools.cache
def _native_kdf() -> Callable[[str, bytes, bytes, int, int, int], bytes | None] | None:
    """OpenSSL's `PKCS12_key_gen_uni` through ctypes, or None where no libcrypto can be loaded."""
    import ctypes

    for name in _LIBCRYPTO:
        try:
            lib = ctypes.CDLL(name)
            key_gen, by_name = lib.PKCS12_key_gen_uni, lib.EVP_get_digestbyname
        except (OSError, AttributeError):
            continue
        break
    else:
        return None
    by_name.restype, by_name.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    key_gen.restype = ctypes.c_int
    key_gen.argtypes = [
        ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
        ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p,
    ]  # fmt: skip
    digests: dict[str, int | None] = {}

    def derive(hash_name: str, password: bytes, salt: bytes, iterations: int, purpose: int, size: int) -> bytes | None:
        if hash_name not in digests:
            digests[hash_name] = by_name(hash_name.encode("ascii"))
        digest = digests[hash_name]
        if not digest:
            return None
        out = ctypes.create_string_buffer(size)
        ok = key_gen(password, len(password), salt, len(salt), purpose, iterations, size, out, digest)
        return out.raw if ok == 1 else None

    return derive


# -- helpers ----------------------------------------------------------------------------------------


def _passwords(password: bytes | None) -> list[_Password]:
    if not password:
        return [_Password(b"\x00\x00", b""), _Password(b"", b"")]
    try:
        text = password.decode("utf-8")
    except UnicodeDecodeError:  # as OpenSSL does: each byte is one character
        text = password.decode("latin-1")
    return [_Password(text.encode("utf-16-be") + b"\x00\x00", password)]


def _fill(data: bytes, v: int) -> bytes:
    """`data` repeated to the next multiple of `v` bytes (empty stays empty)."""
    if not data:
        return b""
    length = v * -(-len(data) // v)
    return (data * -(-length // len(data)))[:length]


def _tagged(tlv: der.Tlv, tag: int, what: str) -> der.Tlv:
    if tlv.tag != tag:
        raise DerError(f"{what}: expected tag 0x{tag:02X}, found 0x{tlv.tag:02X} at offset {tlv.start}")
    return tlv


def _integer(buf: bytes, tlv: der.Tlv, what: str) -> int:
    body = der.content(buf, _tagged(tlv, der.INTEGER, what))
    if not 1 <= len(body) <= 8:
        raise DerError(f"{what} is not a small INTEGER")
    return int.from_bytes(body, "big", signed=True)


def _algorithm(buf: bytes, tlv: der.Tlv) -> tuple[str, der.Tlv | None]:
    """An AlgorithmIdentifier's OID and its parameters (None when absent)."""
    fields = der.children(buf, _tagged(tlv, der.SEQUENCE, "AlgorithmIdentifier"))
    if not 1 <= len(fields) <= 2 or fields[0].tag != der.OID:
        raise DerError(f"AlgorithmIdentifier at offset {tlv.start} is not (OID, parameters)")
    return der.decode_oid(der.content(buf, fields[0])), fields[1] if len(fields) == 2 else None


def _content_info(buf: bytes, tlv: der.Tlv) -> tuple[str, der.Tlv | None]:
    """A ContentInfo's type and its [0] EXPLICIT wrapper (None when there is no content)."""
    fields = der.children(buf, _tagged(tlv, der.SEQUENCE, "ContentInfo"))
    if not 1 <= len(fields) <= 2 or fields[0].tag != der.OID or (len(fields) == 2 and fields[1].tag != 0xA0):
        raise DerError(f"ContentInfo at offset {tlv.start} is not (type, [0] content)")
    return der.decode_oid(der.content(buf, fields[0])), fields[1] if len(fields) == 2 else None


def _local_key_id(buf: bytes, attributes: list[der.Tlv]) -> bytes | None:
    """The localKeyId among a SafeBag's bagAttributes, if it has one."""
    if not attributes:
        return None
    for attribute in der.children(buf, _tagged(attributes[0], der.SET, "bagAttributes")):
        fields = der.children(buf, _tagged(attribute, der.SEQUENCE, "attribute"))
        if len(fields) != 2 or fields[0].tag != der.OID or fields[1].tag != der.SET:
            raise DerError(f"attribute at offset {attribute.start} is not (type, values)")
        if der.decode_oid(der.content(buf, fields[0])) == _LOCAL_KEY_ID:
            values = der.children(buf, fields[1])
            if len(values) != 1 or values[0].tag != der.OCTET_STRING:
                raise DerError("localKeyId is not one OCTET STRING")
            return der.content(buf, values[0])
    return None


def _unpad(plain: bytes, block: int) -> bytes:
    """`plain` without its PKCS#7 padding, which must be exact; bad padding means a wrong key."""
    pad = plain[-1] if plain else 0
    if not 1 <= pad <= block or plain[-pad:] != bytes([pad]) * pad:
        raise _Undecryptable
    return plain[:-pad]


def _cbc_decrypt(cipher: str, key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    if cipher == "rc2-40":
        return _rc2_cbc_decrypt(key, 40, iv, ciphertext)
    from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, Cipher, modes

    algorithm: BlockCipherAlgorithm
    if cipher == "aes":
        from cryptography.hazmat.primitives.ciphers.algorithms import AES

        algorithm = AES(key)
    elif cipher == "3des":
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES

        algorithm = TripleDES(key if len(key) == 24 else key + key[:8])  # two-key 3DES: K3 is K1
    else:
        from cryptography.hazmat.decrepit.ciphers.algorithms import RC2

        algorithm = RC2(key)
    decryptor = Cipher(algorithm, modes.CBC(iv)).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()


# -- RC2 (RFC 2268), for the 40-bit keys `cryptography` does not take --------------------------------

_PITABLE = bytes.fromhex(
    "d978f9c419ddb5ed28e9fd794aa0d89dc67e37832b76538e624c6488448bfba2179a59f587b34f1361456d8d09817d32"
    "bd8f40eb86b77b0bf09521225c6b4e8254d66593ce60b21c7356c014a78cf1dc1275ca1f3bbee4d1423dd430a33cb626"
    "6fbf0eda4669075727f21d9bbc944303f811c7f690ef3ee706c3d52fc8661ed708e8eade8052eef784aa72ac354d6a2a"
    "961ad2715a1549744b9fd05e0418a4ecc2e0416e0f51cbcc2491af50a1f47039997c3a8523b8b47afc02365b25559731"
    "2d5dfa98e38a92ae05df2910676cbac9d300e6cfe19ea82c6316013f58e289a90d38341bab33ffb0bb480c5fb9b1cd2e"
    "c5f3db47e5a59c770aa62068fe7fc1ad"
)


def _rc2_key_schedule(key: bytes, effective_bits: int) -> list[int]:
    """The 64 16-bit subkeys K[0..63] of RFC 2268 §2 for `key` with `effective_bits` effective bits."""
    t = len(key)
    table = bytearray(128)
    table[:t] = key
    for i in range(t, 128):
        table[i] = _PITABLE[(table[i - 1] + table[i - t]) & 0xFF]
    t8 = (effective_bits + 7) // 8
    mask = 0xFF >> (8 * t8 - effective_bits)
    table[128 - t8] = _PITABLE[table[128 - t8] & mask]
    for i in range(127 - t8, -1, -1):
        table[i] = _PITABLE[table[i + 1] ^ table[i + t8]]
    return [table[2 * i] | (table[2 * i + 1] << 8) for i in range(64)]


def _rc2_cbc_decrypt(key: bytes, effective_bits: int, iv: bytes, ciphertext: bytes) -> bytes:
    k = _rc2_key_schedule(key, effective_bits)
    out = bytearray()
    previous = int.from_bytes(iv, "little")
    for offset in range(0, len(ciphertext), 8):
        block = int.from_bytes(ciphertext[offset : offset + 8], "little")
        r0, r1, r2, r3 = block & 0xFFFF, (block >> 16) & 0xFFFF, (block >> 32) & 0xFFFF, block >> 48
        j = 63
        for rounds in (5, 6, 5):
            for _ in range(rounds):  # r-mixing rounds, inverted
                r3 = (((r3 >> 5) | (r3 << 11)) - k[j] - (r2 & r1) - (~r2 & r0)) & 0xFFFF
                r2 = (((r2 >> 3) | (r2 << 13)) - k[j - 1] - (r1 & r0) - (~r1 & r3)) & 0xFFFF
                r1 = (((r1 >> 2) | (r1 << 14)) - k[j - 2] - (r0 & r3) - (~r0 & r2)) & 0xFFFF
                r0 = (((r0 >> 1) | (r0 << 15)) - k[j - 3] - (r3 & r2) - (~r3 & r1)) & 0xFFFF
                j -= 4
            if j > 0:  # an r-mashing round, inverted, after the first 5 and the next 6 mixing rounds
                r3 = (r3 - k[r2 & 63]) & 0xFFFF
                r2 = (r2 - k[r1 & 63]) & 0xFFFF
                r1 = (r1 - k[r0 & 63]) & 0xFFFF
                r0 = (r0 - k[r3 & 63]) & 0xFFFF
        plain = (r0 | (r1 << 16) | (r2 << 32) | (r3 << 48)) ^ previous
        out += plain.to_bytes(8, "little")
        previous = block
    return bytes(out)


# -- BER to DER ---------------------------------------------------------------------------------------


def _strict_or_ber(walk: Callable[[bytes], _T], buf: bytes) -> _T:
    """`walk(buf)`; when that fails and `buf` is BER, `walk` of it re-encoded as DER. DER, which every
    mainstream producer writes, is walked as it is: a key bag's value is then skipped by its length."""
    try:
        return walk(buf)
    except DerError as strict:
        try:
            converted = _to_der(buf)
        except DerError:
            raise strict from None
        if converted == buf:
            raise
    return walk(converted)


def _to_der(buf: bytes) -> bytes:
    """`buf` with BER's indefinite lengths made definite and constructed OCTET STRINGs joined, so that
    `shared.x509.der` can walk it; DER comes back unchanged. Primitive contents are never looked into."""
    out, end, _ = _reencode(buf, 0, len(buf), 0)
    if end != len(buf):
        raise DerError(f"bytes after the end of the element at offset 0 (at offset {end})")
    return out


def _reencode(buf: bytes, pos: int, limit: int, depth: int) -> tuple[bytes, int, bool]:
    """(DER of the element at `pos`, where it ends in `buf`, whether that differs from `buf`)."""
    if depth > _MAX_BER_DEPTH:
        raise DerError(f"elements nested more than {_MAX_BER_DEPTH} deep")
    if pos >= limit:
        raise DerError(f"truncated: expected an element at offset {pos}")
    first = buf[pos]
    length_at = pos + 1
    if first & 0x1F == 0x1F:
        while length_at < limit and buf[length_at] & 0x80 and length_at - pos < 5:
            length_at += 1
        length_at += 1
    if length_at >= limit:
        raise DerError(f"truncated element at offset {pos}")
    indefinite = buf[length_at] == 0x80
    if indefinite:
        if not first & 0x20:
            raise DerError(f"primitive element at offset {pos} has an indefinite length")
        content_start, end = length_at + 1, None
    else:
        tlv = der.read_tlv(buf, pos, limit)
        content_start, end = tlv.content_start, tlv.end
        if not first & 0x20:
            return buf[pos:end], end, False
    parts: list[bytes] = []
    changed = indefinite
    at = content_start
    while True:
        if end is None:
            if buf[at : at + 2] == b"\x00\x00":
                end = at + 2
                break
        elif at >= end:
            break
        part, at, part_changed = _reencode(buf, at, limit if end is None else end, depth + 1)
        parts.append(part)
        changed = changed or part_changed
    identifier = buf[pos:length_at]
    if first == 0x24:  # constructed OCTET STRING: one primitive OCTET STRING with the pieces joined
        pieces = []
        for part in parts:
            piece = der.read_tlv(part, 0)
            if piece.tag != der.OCTET_STRING:
                raise DerError(f"constructed OCTET STRING at offset {pos} holds another type")
            pieces.append(der.content(part, piece))
        return _encode(der.OCTET_STRING, b"".join(pieces)), end, True
    if not changed:
        return buf[pos:end], end, False
    return identifier + _length(sum(map(len, parts))) + b"".join(parts), end, True


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _encode(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _length(len(body)) + body
