"""The certificates-only PKCS#12 reader (`shared.x509.pkcs12`): certificates out, private keys never opened.

PFX files come from the `openssl` CLI and `cryptography`, or are put together here from DER pieces, with
the encryption done by `cryptography` and the MAC by this file's own RFC 7292 key derivation; `openssl`
reading every hand-made file is the proof that it is a real PFX (and that this file's MAC is right).
Expected values come from those tools, never from the code under test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import random
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import RC2, TripleDES
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.serialization import pkcs12

import shared.x509.pkcs12 as reader
from shared.errors import CertificateInputError
from shared.x509 import der
from shared.x509.containers import load_certificates
from shared.x509.pkcs12 import Pkcs12Contents, read_pkcs12
from tests.chains import Chain, Issued, build_chain, issue, make_name, pfx_openssl

OPENSSL = shutil.which("openssl")
PASSWORD = "Pa55-w0rd!"

DATA = "1.2.840.113549.1.7.1"
SIGNED_DATA = "1.2.840.113549.1.7.2"
ENVELOPED_DATA = "1.2.840.113549.1.7.3"
ENCRYPTED_DATA = "1.2.840.113549.1.7.6"
KEY_BAG = "1.2.840.113549.1.12.10.1.1"
SHROUDED_KEY_BAG = "1.2.840.113549.1.12.10.1.2"
CERT_BAG = "1.2.840.113549.1.12.10.1.3"
CRL_BAG = "1.2.840.113549.1.12.10.1.4"
SECRET_BAG = "1.2.840.113549.1.12.10.1.5"
SAFE_CONTENTS_BAG = "1.2.840.113549.1.12.10.1.6"
X509_CERTIFICATE = "1.2.840.113549.1.9.22.1"
X509_CRL = "1.2.840.113549.1.9.23.1"
FRIENDLY_NAME = "1.2.840.113549.1.9.20"
LOCAL_KEY_ID = "1.2.840.113549.1.9.21"
PBES2 = "1.2.840.113549.1.5.13"
PBKDF2 = "1.2.840.113549.1.5.12"
PBMAC1 = "1.2.840.113549.1.5.14"
PBE_SHA1_3DES = "1.2.840.113549.1.12.1.3"
PBE_SHA1_RC4_128 = "1.2.840.113549.1.12.1.1"
MAC_HASHES = {
    "sha1": "1.3.14.3.2.26",
    "sha256": "2.16.840.1.101.3.4.2.1",
    "sha384": "2.16.840.1.101.3.4.2.2",
    "sha512": "2.16.840.1.101.3.4.2.3",
}
PRFS = {  # hashlib name -> (hmacWith OID, cryptography hash)
    "sha1": ("1.2.840.113549.2.7", hashes.SHA1()),
    "sha224": ("1.2.840.113549.2.8", hashes.SHA224()),
    "sha256": ("1.2.840.113549.2.9", hashes.SHA256()),
    "sha384": ("1.2.840.113549.2.10", hashes.SHA384()),
    "sha512": ("1.2.840.113549.2.11", hashes.SHA512()),
}
PBES2_CIPHERS = {  # name -> (OID, key length, cryptography algorithm)
    "aes128": ("2.16.840.1.101.3.4.1.2", 16, algorithms.AES),
    "aes192": ("2.16.840.1.101.3.4.1.22", 24, algorithms.AES),
    "aes256": ("2.16.840.1.101.3.4.1.42", 32, algorithms.AES),
    "des-ede3": ("1.2.840.113549.3.7", 24, TripleDES),
}


# --------------------------------------------------------------------------------------------------
# Material


@pytest.fixture(scope="module")
def rsa_chain() -> Chain:
    return build_chain("rsa")


@pytest.fixture(scope="module")
def ec_chain() -> Chain:
    return build_chain("ec", organization="Fabrikam", dns_names=("mail.fabrikam.com",))


@pytest.fixture(scope="module")
def sibling(ec_chain: Chain) -> Issued:
    """A second end certificate from ec_chain's intermediate."""
    return issue(
        make_name("owa.fabrikam.com", "Fabrikam"), issuer=ec_chain.intermediate, dns_names=("owa.fabrikam.com",)
    )


def openssl(*args: str | bytes, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[bytes]:
    assert OPENSSL is not None, "the openssl CLI is missing: `make test` installs it (Debian package openssl)"
    proc = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, check=False)
    if ok:
        assert proc.returncode == 0, f"openssl {args}: {proc.stderr.decode(errors='replace')}"
    return proc


def openssl_info(tmp_path: Path, data: bytes, password: str | bytes, *options: str, ok: bool = True) -> str:
    """What `openssl pkcs12 -info` says about `data` (certificates only unless options say otherwise)."""
    (tmp_path / "check.pfx").write_bytes(data)
    passin = (b"pass:" + password) if isinstance(password, bytes) else f"pass:{password}"
    proc = openssl(
        "pkcs12",
        "-in",
        "check.pfx",
        "-passin",
        passin,
        "-info",
        "-legacy",
        *(options or ("-nokeys",)),
        cwd=tmp_path,
        ok=ok,
    )
    return proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")


def ders(contents: Pkcs12Contents) -> list[bytes]:
    return [c.der for c in contents.certificates]


def expect_error(call: Callable[[], object], *fragments: str, absent: tuple[str, ...] = ()) -> str:
    with pytest.raises(CertificateInputError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    for secret in absent:
        assert secret not in message, message
    return message


# --------------------------------------------------------------------------------------------------
# PFX files put together from DER pieces


def tlv(tag: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    if len(body) < 0x80:
        return bytes([tag, len(body)]) + body
    size = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def seq(*parts: bytes) -> bytes:
    return tlv(0x30, *parts)


def oid(dotted: str) -> bytes:
    return tlv(0x06, der.encode_oid(dotted))


def octets(data: bytes) -> bytes:
    return tlv(0x04, data)


def integer(n: int) -> bytes:
    return tlv(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big"))


def explicit(*parts: bytes) -> bytes:
    return tlv(0xA0, *parts)


NULL = b"\x05\x00"


def attributes(local_key_id: bytes | None, name: str | None = "Exchange") -> list[bytes]:
    items = []
    if name is not None:
        items.append(seq(oid(FRIENDLY_NAME), tlv(0x31, tlv(0x1E, name.encode("utf-16-be")))))
    if local_key_id is not None:
        items.append(seq(oid(LOCAL_KEY_ID), tlv(0x31, octets(local_key_id))))
    return [tlv(0x31, *items)] if items else []


def cert_bag(cert: Issued | bytes, local_key_id: bytes | None = None) -> bytes:
    blob = cert if isinstance(cert, bytes) else cert.der
    return seq(oid(CERT_BAG), explicit(seq(oid(X509_CERTIFICATE), explicit(octets(blob)))), *attributes(local_key_id))


def shrouded_key_bag(value: bytes, local_key_id: bytes | None = None) -> bytes:
    """A pkcs8ShroudedKeyBag whose [0] holds `value` as it is (an EncryptedPrivateKeyInfo, or garbage)."""
    return seq(oid(SHROUDED_KEY_BAG), explicit(value), *attributes(local_key_id))


def safe_contents_bag(*bags: bytes) -> bytes:
    return seq(oid(SAFE_CONTENTS_BAG), explicit(seq(*bags)))


def data_info(*bags: bytes) -> bytes:
    return seq(oid(DATA), explicit(octets(seq(*bags))))


def bmp(password: str) -> bytes:
    return password.encode("utf-16-be") + b"\x00\x00"


def kdf(hash_name: str, password: bytes, salt: bytes, iterations: int, purpose: int, size: int) -> bytes:
    """RFC 7292 appendix B.2, written out again for the tests (openssl confirms the MACs it makes)."""
    v = hashlib.new(hash_name).block_size

    def stretch(data: bytes) -> bytes:
        return (data * v)[: v * -(-len(data) // v)] if data else b""

    block = stretch(salt) + stretch(password)
    out = b""
    while len(out) < size:
        a = hashlib.new(hash_name, bytes([purpose]) * v + block).digest()
        for _ in range(iterations - 1):
            a = hashlib.new(hash_name, a).digest()
        out += a
        b = int.from_bytes((a * v)[:v], "big")
        block = b"".join(
            ((int.from_bytes(block[j : j + v], "big") + b + 1) % (1 << (8 * v))).to_bytes(v, "big")
            for j in range(0, len(block), v)
        )
    return out[:size]


def mac_data(auth_safe: bytes, password: bytes, hash_name: str = "sha256", iterations: int | None = 2048) -> bytes:
    salt = os.urandom(8)
    size = hashlib.new(hash_name).digest_size
    key = kdf(hash_name, password, salt, iterations or 1, 3, size)
    digest = hmac.new(key, auth_safe, hash_name).digest()
    count = [integer(iterations)] if iterations is not None else []
    return seq(seq(seq(oid(MAC_HASHES[hash_name]), NULL), octets(digest)), octets(salt), *count)


def pfx(
    *infos: bytes, mac_password: bytes | None = bmp(PASSWORD), hash_name: str = "sha256", iterations: int = 2048
) -> bytes:
    """A PFX over `infos` (ContentInfos), with a MAC keyed by `mac_password` (a BMPString) unless None."""
    auth_safe = seq(*infos)
    mac = [mac_data(auth_safe, mac_password, hash_name, iterations)] if mac_password is not None else []
    return seq(integer(3), seq(oid(DATA), explicit(octets(auth_safe))), *mac)


def _pad(plaintext: bytes, block_bits: int) -> bytes:
    padder = padding.PKCS7(block_bits).padder()
    return padder.update(plaintext) + padder.finalize()


def pbes2_info(
    safe_contents: bytes,
    password: bytes = PASSWORD.encode(),
    prf: str | None = "sha256",
    cipher: str = "aes256",
    iterations: int = 2048,
    key_length_field: bool = False,
    pad: bool = True,
) -> bytes:
    """An encryptedData ContentInfo: PBES2 (PBKDF2 with `prf`, None meaning the default hmacWithSHA1).
    With `pad=False` the plaintext is encrypted as it is (a whole number of blocks, its own padding)."""
    cipher_oid, size, algorithm = PBES2_CIPHERS[cipher]
    salt = os.urandom(16)
    key = PBKDF2HMAC(PRFS[prf or "sha1"][1], size, salt, iterations).derive(password)
    iv = os.urandom(algorithm.block_size // 8)
    encryptor = Cipher(algorithm(key), modes.CBC(iv)).encryptor()
    plaintext = _pad(safe_contents, algorithm.block_size) if pad else safe_contents
    ciphertext = encryptor.update(plaintext) + encryptor.finalize()
    kdf_params = [octets(salt), integer(iterations)]
    if key_length_field:
        kdf_params.append(integer(size))
    if prf is not None:
        kdf_params.append(seq(oid(PRFS[prf][0]), NULL))
    scheme = seq(oid(PBES2), seq(seq(oid(PBKDF2), seq(*kdf_params)), seq(oid(cipher_oid), octets(iv))))
    return encrypted_info(scheme, ciphertext)


def pbe_3des_info(safe_contents: bytes, password: bytes = bmp(PASSWORD), iterations: int = 2048) -> bytes:
    """An encryptedData ContentInfo: pbeWithSHAAnd3-KeyTripleDES-CBC (PKCS#12 key derivation)."""
    salt = os.urandom(8)
    key, iv = kdf("sha1", password, salt, iterations, 1, 24), kdf("sha1", password, salt, iterations, 2, 8)
    encryptor = Cipher(TripleDES(key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(_pad(safe_contents, 64)) + encryptor.finalize()
    return encrypted_info(seq(oid(PBE_SHA1_3DES), seq(octets(salt), integer(iterations))), ciphertext)


def encrypted_info(algorithm: bytes, ciphertext: bytes) -> bytes:
    return seq(oid(ENCRYPTED_DATA), explicit(seq(integer(0), seq(oid(DATA), algorithm, tlv(0x80, ciphertext)))))


def encrypted_key(issued: Issued, password: bytes = PASSWORD.encode()) -> bytes:
    """The leaf's key as an EncryptedPrivateKeyInfo (PBES2/AES), the value of a pkcs8ShroudedKeyBag."""
    return issued.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(password)
    )


def key_id(issued: Issued) -> bytes:
    return hashlib.sha1(issued.der).digest()


def _element(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, end) of the DER element at pos (single-byte tags only)."""
    first = buf[pos + 1]
    if first < 0x80:
        return buf[pos], pos + 2, pos + 2 + first
    count = first & 0x7F
    length = int.from_bytes(buf[pos + 2 : pos + 2 + count], "big")
    return buf[pos], pos + 2 + count, pos + 2 + count + length


def to_ber(buf: bytes, chunk: int = 100) -> bytes:
    """DER `buf` as BouncyCastle-style BER: every constructed element with an indefinite length, and OCTET
    STRINGs (and [0] IMPLICIT ones) longer than `chunk` split into constructed pieces. What primitive
    elements hold is left alone, so BER can be nested inside an OCTET STRING by converting in layers."""
    out = b""
    pos = 0
    while pos < len(buf):
        tag, start, end = _element(buf, pos)
        body = buf[start:end]
        if tag & 0x20:
            out += bytes([tag, 0x80]) + to_ber(body, chunk) + b"\x00\x00"
        elif tag in (0x04, 0x80) and len(body) > chunk:
            pieces = b"".join(octets(body[i : i + chunk]) for i in range(0, len(body), chunk))
            out += bytes([tag | 0x20, 0x80]) + pieces + b"\x00\x00"
        else:
            out += buf[pos:end]
        pos = end
    return out


# --------------------------------------------------------------------------------------------------
# Producers


OPENSSL_PRODUCERS = {  # options for `openssl pkcs12 -export` -> what `openssl pkcs12 -info` must say
    "modern-aes256-sha256": ((), ["PBES2, PBKDF2, AES-256-CBC", "MAC: sha256"]),
    "legacy-rc2-40-3des-sha1": (("-legacy",), ["pbeWithSHA1And40BitRC2-CBC", "MAC: sha1"]),
    "rc2-128": (("-legacy", "-certpbe", "PBE-SHA1-RC2-128"), ["pbeWithSHA1And128BitRC2-CBC"]),
    "2-key-3des": (("-legacy", "-certpbe", "PBE-SHA1-2DES"), ["pbeWithSHA1And2-KeyTripleDES-CBC"]),
    "3-key-3des": (("-certpbe", "PBE-SHA1-3DES", "-macalg", "sha1"), ["pbeWithSHA1And3-KeyTripleDES-CBC"]),
    "aes128-sha384": (("-certpbe", "AES-128-CBC", "-macalg", "sha384"), ["AES-128-CBC", "MAC: sha384"]),
    "aes192-sha512": (("-certpbe", "AES-192-CBC", "-macalg", "sha512"), ["AES-192-CBC", "MAC: sha512"]),
    "pbes2-des-ede3": (("-certpbe", "DES-EDE3-CBC"), ["PBES2, PBKDF2, DES-EDE3-CBC"]),
    "one-iteration-mac-count-omitted": (("-noiter", "-nomaciter"), ["MAC: sha256, Iteration 1", "Iteration 1"]),
}


@pytest.mark.parametrize("producer", list(OPENSSL_PRODUCERS))
def test_openssl_producers(tmp_path: Path, rsa_chain: Chain, producer: str) -> None:
    options, expected = OPENSSL_PRODUCERS[producer]
    data = pfx_openssl(tmp_path, rsa_chain, PASSWORD, *options)
    info = openssl_info(tmp_path, data, PASSWORD)
    for fragment in expected:
        assert fragment in info, info
    contents = read_pkcs12(data, PASSWORD.encode(), "x.pfx")
    assert ders(contents) == [m.der for m in rsa_chain.members]
    assert contents.key_certificate is not None and contents.key_certificate.der == rsa_chain.leaf.der
    assert contents.has_private_key is True


def _children(buf: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    while start < end:
        out.append(_element(buf, start))
        start = out[-1][2]
    return out


def test_one_iteration_mac_omits_the_count(tmp_path: Path, rsa_chain: Chain) -> None:
    """The `-nomaciter` fixture really leaves the iterations INTEGER out of its MacData (DEFAULT 1)."""
    data = pfx_openssl(tmp_path, rsa_chain, PASSWORD, "-noiter", "-nomaciter")
    _, start, end = _element(data, 0)
    mac = _children(data, start, end)[2]
    assert [tag for tag, _, _ in _children(data, mac[1], mac[2])] == [0x30, 0x04]
    assert len(read_pkcs12(data, PASSWORD.encode(), "x.pfx").certificates) == 3


@pytest.mark.parametrize(
    "encryption",
    [
        lambda: serialization.BestAvailableEncryption(PASSWORD.encode()),
        lambda: (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(2048)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())
            .build(PASSWORD.encode())
        ),
        lambda: (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(2048)
            .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA512())
            .build(PASSWORD.encode())
        ),
    ],
    ids=["best", "3des-sha1", "aes-sha512"],
)
def test_cryptography_producers(
    ec_chain: Chain, encryption: Callable[[], serialization.KeySerializationEncryption]
) -> None:
    data = pkcs12.serialize_key_and_certificates(
        b"Exchange",
        ec_chain.leaf.key,
        ec_chain.leaf.cert,
        [ec_chain.intermediate.cert, ec_chain.root.cert],
        encryption(),
    )
    contents = read_pkcs12(data, PASSWORD.encode(), "x.pfx")
    assert ders(contents) == [m.der for m in ec_chain.members]
    assert contents.key_certificate is not None and contents.key_certificate.der == ec_chain.leaf.der
    assert contents.has_private_key is True


@pytest.mark.parametrize("prf", [None, "sha1", "sha224", "sha256", "sha384", "sha512"])
@pytest.mark.parametrize("cipher", list(PBES2_CIPHERS))
def test_pbes2_prfs_and_ciphers(tmp_path: Path, ec_chain: Chain, prf: str | None, cipher: str) -> None:
    """PBKDF2 with every PRF (None: the field left out, meaning hmacWithSHA1) and every PBES2 cipher."""
    certs = seq(cert_bag(ec_chain.leaf, b"\x01\x00\x00\x00"), cert_bag(ec_chain.root))
    data = pfx(
        pbes2_info(certs, prf=prf, cipher=cipher, key_length_field=prf == "sha384"),
        data_info(shrouded_key_bag(encrypted_key(ec_chain.leaf), b"\x01\x00\x00\x00")),
    )
    info = openssl_info(tmp_path, data, PASSWORD)
    assert f"PRF hmacWith{(prf or 'sha1').upper()}" in info, info
    contents = read_pkcs12(data, PASSWORD.encode(), "x.pfx")
    assert ders(contents) == [ec_chain.leaf.der, ec_chain.root.der]
    assert contents.key_certificate is not None and contents.key_certificate.der == ec_chain.leaf.der


def test_pkcs12_pbe_3des_made_here(tmp_path: Path, ec_chain: Chain) -> None:
    data = pfx(pbe_3des_info(seq(cert_bag(ec_chain.leaf))), mac_password=bmp(PASSWORD), hash_name="sha1")
    assert "pbeWithSHA1And3-KeyTripleDES-CBC" in openssl_info(tmp_path, data, PASSWORD)
    contents = read_pkcs12(data, PASSWORD.encode(), "x.pfx")
    assert ders(contents) == [ec_chain.leaf.der]
    assert contents.has_private_key is False and contents.key_certificate is None


@pytest.mark.parametrize(
    "password", ["Kennwort-äöü-€", "pässwörd-😀-𝄞", " spaced out "], ids=["bmp", "astral", "spaces"]
)
@pytest.mark.parametrize("options", [(), ("-legacy",)], ids=["aes", "legacy"])
def test_non_ascii_passwords(tmp_path: Path, ec_chain: Chain, password: str, options: tuple[str, ...]) -> None:
    """UTF-8 for PBKDF2, a BMPString (surrogate pairs beyond the BMP) for the PKCS#12 key derivation."""
    data = pfx_openssl(tmp_path, ec_chain, password.encode(), *options)
    assert read_pkcs12(data, password.encode(), "x.pfx").key_certificate is not None
    expect_error(lambda: read_pkcs12(data, password[:-1].encode(), "x.pfx"), "wrong password")


# --------------------------------------------------------------------------------------------------
# Empty password, no MAC


@pytest.mark.parametrize("password", [None, b""], ids=["none", "empty"])
@pytest.mark.parametrize("options", [(), ("-legacy",)], ids=["aes", "legacy"])
def test_empty_password_from_openssl(tmp_path: Path, rsa_chain: Chain, password: bytes | None, options: tuple) -> None:
    data = pfx_openssl(tmp_path, rsa_chain, "", *options)
    assert "MAC: sha" in openssl_info(tmp_path, data, "")
    contents = read_pkcs12(data, password, "nopass.pfx")
    assert ders(contents) == [m.der for m in rsa_chain.members]
    assert contents.key_certificate is not None and contents.key_certificate.der == rsa_chain.leaf.der


@pytest.mark.parametrize("password", [None, b""], ids=["none", "empty"])
def test_empty_password_from_cryptography(ec_chain: Chain, password: bytes | None) -> None:
    data = pkcs12.serialize_key_and_certificates(
        b"x", ec_chain.leaf.key, ec_chain.leaf.cert, [ec_chain.root.cert], serialization.NoEncryption()
    )
    contents = read_pkcs12(data, password, "nopass.pfx")
    assert ders(contents) == [ec_chain.leaf.der, ec_chain.root.der]
    assert contents.key_certificate is not None and contents.has_private_key is True


@pytest.mark.parametrize("form", [b"\x00\x00", b""], ids=["bmp-nul", "zero-length"])
def test_both_forms_of_the_empty_password(tmp_path: Path, ec_chain: Chain, form: bytes) -> None:
    """An empty password is the two NUL bytes of an empty BMPString, or no bytes at all: both are read."""
    certs = seq(cert_bag(ec_chain.leaf))
    data = pfx(pbe_3des_info(certs, password=form), data_info(cert_bag(ec_chain.root)), mac_password=form)
    openssl_info(tmp_path, data, "")  # openssl tries both forms too
    for password in (None, b""):
        assert ders(read_pkcs12(data, password, "nopass.pfx")) == [ec_chain.leaf.der, ec_chain.root.der]
    expect_error(lambda: read_pkcs12(data, b"x", "nopass.pfx"), "wrong password")


@pytest.mark.parametrize(("form", "macs"), [(b"\x00\x00", 1), (b"", 2)], ids=["bmp-nul", "zero-length"])
def test_the_mac_is_computed_once_per_form_tried(
    ec_chain: Chain, form: bytes, macs: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Key Vault's PFX (an empty BMPString password) costs one MAC: the form it matches is tried first and
    the other is not tried after it; the zero-length form is tried second, after the first fails."""
    from shared.x509 import pkcs12 as module

    data = pfx(data_info(cert_bag(ec_chain.leaf), cert_bag(ec_chain.root)), mac_password=form)
    calls = []
    real = module._Reader._mac_matches

    def counted(self, mac, auth_safe, password):  # the real check, counted
        calls.append(password)
        return real(self, mac, auth_safe, password)

    monkeypatch.setattr(module._Reader, "_mac_matches", counted)
    assert ders(read_pkcs12(data, None, "kv.pfx")) == [ec_chain.leaf.der, ec_chain.root.der]
    assert len(calls) == macs
    calls.clear()
    assert load_certificates(data, "kv.pfx").leaf.der == ec_chain.leaf.der  # the loader: one read, no second
    assert len(calls) == macs


NOMAC_ENCRYPTED = {  # `-nomac` alone leaves the certificates unencrypted, so name the encryption
    "aes": ("-nomac", "-certpbe", "AES-256-CBC"),
    "legacy": ("-nomac", "-legacy", "-certpbe", "PBE-SHA1-RC2-40"),
}


@pytest.mark.parametrize("options", list(NOMAC_ENCRYPTED.values()), ids=list(NOMAC_ENCRYPTED))
def test_no_mac_with_password(tmp_path: Path, rsa_chain: Chain, options: tuple[str, ...]) -> None:
    data = pfx_openssl(tmp_path, rsa_chain, PASSWORD, *options)
    info = openssl_info(tmp_path, data, PASSWORD)
    assert "MAC:" not in info and "PKCS7 Encrypted data" in info
    contents = read_pkcs12(data, PASSWORD.encode(), "nomac.pfx")
    assert ders(contents) == [m.der for m in rsa_chain.members]
    # Without a MAC a wrong password shows as a decryption that does not come out.
    expect_error(lambda: read_pkcs12(data, b"Hunter2", "nomac.pfx"), "nomac.pfx", "wrong password", absent=(PASSWORD,))
    expect_error(lambda: read_pkcs12(data, None, "nomac.pfx"), "password-protected", "--password-env")


@pytest.mark.parametrize("options", list(NOMAC_ENCRYPTED.values()), ids=list(NOMAC_ENCRYPTED))
def test_no_mac_empty_password(tmp_path: Path, ec_chain: Chain, options: tuple[str, ...]) -> None:
    data = pfx_openssl(tmp_path, ec_chain, "", *options)
    assert "PKCS7 Encrypted data" in openssl_info(tmp_path, data, "")
    assert ders(read_pkcs12(data, None, "nomac.pfx")) == [m.der for m in ec_chain.members]


def test_no_mac_no_encryption_any_password(tmp_path: Path, ec_chain: Chain) -> None:
    data = pfx_openssl(tmp_path, ec_chain, "", "-nomac", "-keypbe", "NONE", "-certpbe", "NONE")
    for password in (None, b"", b"anything"):
        contents = read_pkcs12(data, password, "plain.pfx")
        assert ders(contents) == [m.der for m in ec_chain.members]
        assert contents.has_private_key is True and contents.key_certificate is not None


# --------------------------------------------------------------------------------------------------
# Wrong password, damage


@pytest.mark.parametrize("wrong", [b"Hunter2-typo", b"", PASSWORD.upper().encode()], ids=["other", "empty", "case"])
@pytest.mark.parametrize("options", [(), ("-legacy",)], ids=["aes", "legacy"])
def test_wrong_password(tmp_path: Path, rsa_chain: Chain, wrong: bytes, options: tuple[str, ...]) -> None:
    data = pfx_openssl(tmp_path, rsa_chain, PASSWORD, *options)
    message = expect_error(
        lambda: read_pkcs12(data, wrong, "mail.pfx"), "mail.pfx", "wrong password", absent=(PASSWORD,)
    )
    if wrong:
        assert wrong.decode() not in message
    expect_error(lambda: read_pkcs12(data, None, "mail.pfx"), "password-protected", "--password-env VAR")


def test_wrong_password_is_found_by_the_mac_before_any_decryption(
    tmp_path: Path, rsa_chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = pfx_openssl(tmp_path, rsa_chain, PASSWORD)
    calls: list[object] = []
    monkeypatch.setattr(reader, "_cbc_decrypt", lambda *args: calls.append(args))
    expect_error(lambda: read_pkcs12(data, b"wrong", "mail.pfx"), "wrong password")
    assert calls == []


def test_tampered_mac(tmp_path: Path, rsa_chain: Chain) -> None:
    data = bytearray(pfx_openssl(tmp_path, rsa_chain, PASSWORD))
    digest = data.rindex(bytes([0x04, 32])) + 2  # the SHA-256 MAC value, near the end
    data[digest + 5] ^= 0x01
    openssl_info(tmp_path, bytes(data), PASSWORD, ok=False)
    expect_error(lambda: read_pkcs12(bytes(data), PASSWORD.encode(), "mail.pfx"), "wrong password", "damaged")


def test_tampered_content_fails_the_mac(tmp_path: Path, rsa_chain: Chain) -> None:
    data = bytearray(pfx_openssl(tmp_path, rsa_chain, PASSWORD))
    data[len(data) // 2] ^= 0x40  # inside the encrypted certificates
    expect_error(lambda: read_pkcs12(bytes(data), PASSWORD.encode(), "mail.pfx"), "wrong password")


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.99])
def test_truncated(tmp_path: Path, rsa_chain: Chain, keep: float) -> None:
    data = pfx_openssl(tmp_path, rsa_chain, PASSWORD)
    cut = data[: int(len(data) * keep)]
    expect_error(lambda: read_pkcs12(cut, PASSWORD.encode(), "cut.pfx"), "cut.pfx")
    expect_error(lambda: load_certificates(cut, "cut.pfx", PASSWORD.encode()), "cut.pfx")


def test_a_verified_mac_over_undecryptable_content_says_damaged(ec_chain: Chain) -> None:
    certs = seq(cert_bag(ec_chain.leaf))
    good = pbes2_info(certs)
    bad = pbes2_info(certs, password=b"another password")  # the MAC still uses PASSWORD
    assert read_pkcs12(pfx(good), PASSWORD.encode(), "ok.pfx").certificates
    expect_error(lambda: read_pkcs12(pfx(bad), PASSWORD.encode(), "x.pfx"), "x.pfx", "is damaged", "re-export")


def test_padding_is_removed_strictly(tmp_path: Path, ec_chain: Chain) -> None:
    """Padding ending 01 02 is not PKCS#7 padding (openssl refuses it too), though cutting 2 bytes would
    leave good DER: the MAC is right, so the file is damaged."""
    for n in range(16):
        safe_contents = seq(cert_bag(ec_chain.leaf), seq(oid(SECRET_BAG), explicit(octets(b"x" * n))))
        if len(safe_contents) % 16 == 14:
            break
    assert len(safe_contents) % 16 == 14
    good = pfx(pbes2_info(safe_contents + b"\x02\x02", pad=False))
    assert ders(read_pkcs12(good, PASSWORD.encode(), "x.pfx")) == [ec_chain.leaf.der]
    bad = pfx(pbes2_info(safe_contents + b"\x01\x02", pad=False))
    openssl_info(tmp_path, bad, PASSWORD, ok=False)
    expect_error(lambda: read_pkcs12(bad, PASSWORD.encode(), "x.pfx"), "x.pfx", "is damaged")


@pytest.mark.parametrize("seed", range(3))
def test_random_damage_gives_only_input_errors(tmp_path: Path, ec_chain: Chain, seed: int) -> None:
    """Flipped bytes and cuts anywhere in MAC-less files: a certificate list or a CertificateInputError."""
    rng = random.Random(seed)
    files = [
        pfx_openssl(tmp_path, ec_chain, "", "-nomac", "-keypbe", "NONE", "-certpbe", "NONE"),
        pfx_openssl(tmp_path, ec_chain, PASSWORD, *NOMAC_ENCRYPTED["legacy"]),
        pfx_openssl(tmp_path, ec_chain, PASSWORD, *NOMAC_ENCRYPTED["aes"]),
        pfx(pbes2_info(seq(cert_bag(ec_chain.leaf), safe_contents_bag(cert_bag(ec_chain.root)))), mac_password=None),
    ]
    for data in files:
        for pos in rng.sample(range(len(data)), 60):
            damaged = bytearray(data)
            damaged[pos] ^= rng.choice([0x01, 0x80, 0xFF])
            for blob in (bytes(damaged), data[:pos]):
                try:
                    read_pkcs12(blob, PASSWORD.encode(), "fuzz.pfx")
                except CertificateInputError as exc:
                    assert str(exc).startswith("fuzz.pfx") and PASSWORD not in str(exc)


# --------------------------------------------------------------------------------------------------
# Which certificate is the key's


def test_key_certificate_not_first(tmp_path: Path, ec_chain: Chain, sibling: Issued) -> None:
    """Two end certificates and a key: the key's certificate (by localKeyId) is neither first nor alone."""
    lkid = key_id(ec_chain.leaf)
    certs = seq(cert_bag(sibling, b"other"), cert_bag(ec_chain.intermediate), cert_bag(ec_chain.leaf, lkid))
    data = pfx(pbes2_info(certs), data_info(shrouded_key_bag(encrypted_key(ec_chain.leaf), lkid)))
    out = openssl_info(tmp_path, data, PASSWORD, "-nodes")  # openssl itself opens everything, key included
    assert out.index("owa.fabrikam.com") < out.index("mail.fabrikam.com") and "PRIVATE KEY" in out
    contents = read_pkcs12(data, PASSWORD.encode(), "two.pfx")
    assert ders(contents) == [sibling.der, ec_chain.intermediate.der, ec_chain.leaf.der]
    assert contents.key_certificate is not None and contents.key_certificate.der == ec_chain.leaf.der
    assert contents.certificates[2].label == "two.pfx, certificate 3 of 3"
    bundle = load_certificates(data, "two.pfx", PASSWORD.encode())
    assert bundle.leaf.der == ec_chain.leaf.der
    assert [c.der for c in bundle.chain] == [ec_chain.intermediate.der]
    assert [c.der for c in bundle.extras] == [sibling.der]
    assert bundle.has_private_key is True


def test_without_local_key_ids_the_leaf_is_found_by_issuing(ec_chain: Chain) -> None:
    certs = seq(cert_bag(ec_chain.root), cert_bag(ec_chain.leaf), cert_bag(ec_chain.intermediate))
    data = pfx(data_info(shrouded_key_bag(encrypted_key(ec_chain.leaf))), pbes2_info(certs))
    contents = read_pkcs12(data, PASSWORD.encode(), "x.pfx")
    assert contents.key_certificate is None and contents.has_private_key is True
    bundle = load_certificates(data, "x.pfx", PASSWORD.encode())
    assert bundle.leaf.der == ec_chain.leaf.der and bundle.has_private_key is True


def test_no_key(tmp_path: Path, ec_chain: Chain) -> None:
    data = pfx_openssl(tmp_path, ec_chain, PASSWORD, "-nokeys")
    contents = read_pkcs12(data, PASSWORD.encode(), "certs.pfx")
    assert contents.has_private_key is False and contents.key_certificate is None
    assert sorted(ders(contents)) == sorted(m.der for m in ec_chain.members)


def test_duplicate_certificates_are_read_once(ec_chain: Chain) -> None:
    lkid = b"\x01\x00\x00\x00"
    certs = data_info(cert_bag(ec_chain.leaf, lkid), cert_bag(ec_chain.root), cert_bag(ec_chain.leaf))
    contents = read_pkcs12(pfx(certs, data_info(shrouded_key_bag(b"", lkid))), PASSWORD.encode(), "d")
    assert ders(contents) == [ec_chain.leaf.der, ec_chain.root.der]
    assert contents.key_certificate is contents.certificates[0]


# --------------------------------------------------------------------------------------------------
# The private key is never opened


_KEY_PARSERS = [
    (serialization, "load_der_private_key"),
    (serialization, "load_pem_private_key"),
    (pkcs12, "load_pkcs12"),
    (pkcs12, "load_key_and_certificates"),
]


def _forbid_key_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a private key parser was called")

    for module, name in _KEY_PARSERS:
        monkeypatch.setattr(module, name, refuse)


def _corrupt_ciphertext(epki: bytes) -> bytes:
    """The EncryptedPrivateKeyInfo with one byte of its encrypted key flipped (its last element)."""
    damaged = bytearray(epki)
    damaged[-20] ^= 0x55
    return bytes(damaged)


def test_key_parsers_are_really_refused(rsa_chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard below can fail: with it in place, the library cannot open a PFX."""
    data = pkcs12.serialize_key_and_certificates(
        b"x", rsa_chain.leaf.key, rsa_chain.leaf.cert, None, serialization.NoEncryption()
    )
    _forbid_key_parsing(monkeypatch)
    with pytest.raises(AssertionError, match="private key parser"):
        pkcs12.load_pkcs12(data, None)
    with pytest.raises(AssertionError, match="private key parser"):
        serialization.load_der_private_key(b"", None)


def test_a_damaged_shrouded_key_does_not_stop_the_certificates(
    tmp_path: Path, rsa_chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key bag's encrypted bytes are damaged and the MAC made over them again: openssl then verifies
    the MAC and lists the certificates, but cannot open the key. The reader never tries to."""
    lkid = key_id(rsa_chain.leaf)
    certs = seq(cert_bag(rsa_chain.leaf, lkid), cert_bag(rsa_chain.intermediate), cert_bag(rsa_chain.root))
    epki = encrypted_key(rsa_chain.leaf)
    intact = pfx(pbes2_info(certs), data_info(shrouded_key_bag(epki, lkid)))
    assert "PRIVATE KEY" in openssl_info(tmp_path, intact, PASSWORD, "-nodes")
    data = pfx(pbes2_info(certs), data_info(shrouded_key_bag(_corrupt_ciphertext(epki), lkid)))
    assert "MAC: sha256" in openssl_info(tmp_path, data, PASSWORD)  # MAC verified, certificates listed
    openssl_info(tmp_path, data, PASSWORD, "-nocerts", "-nodes", ok=False)  # the key no longer opens

    decrypted: list[bytes] = []
    real = reader._cbc_decrypt

    def spy(cipher: str, key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
        decrypted.append(ciphertext)
        return real(cipher, key, iv, ciphertext)

    monkeypatch.setattr(reader, "_cbc_decrypt", spy)
    _forbid_key_parsing(monkeypatch)
    contents = read_pkcs12(data, PASSWORD.encode(), "x.pfx")
    assert ders(contents) == [m.der for m in rsa_chain.members]
    assert contents.key_certificate is not None and contents.key_certificate.der == rsa_chain.leaf.der
    assert contents.has_private_key is True
    assert len(decrypted) == 1  # the certificates' encryptedData, and nothing from the key bag
    assert not any(blob[-32:] in _corrupt_ciphertext(epki) for blob in decrypted)
    bundle = load_certificates(data, "x.pfx", PASSWORD.encode())
    assert bundle.leaf.der == rsa_chain.leaf.der and bundle.has_private_key is True


@pytest.mark.parametrize("bag", [SHROUDED_KEY_BAG, KEY_BAG])
def test_key_bags_whose_value_is_not_even_der(ec_chain: Chain, monkeypatch: pytest.MonkeyPatch, bag: str) -> None:
    """No MAC, and the key bag's value is random bytes: only its localKeyId is read."""
    _forbid_key_parsing(monkeypatch)
    lkid = b"key-1"
    garbage = bytes([0xFF]) + os.urandom(300)
    key = seq(oid(bag), explicit(garbage), *attributes(lkid))
    data = pfx(data_info(cert_bag(ec_chain.root), cert_bag(ec_chain.leaf, lkid), key), mac_password=None)
    contents = read_pkcs12(data, None, "x.pfx")
    assert contents.has_private_key is True
    assert contents.key_certificate is not None and contents.key_certificate.der == ec_chain.leaf.der


def test_openssl_pfx_read_with_key_parsers_refused(
    tmp_path: Path, rsa_chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = pfx_openssl(tmp_path, rsa_chain, PASSWORD, "-legacy")
    _forbid_key_parsing(monkeypatch)
    bundle = load_certificates(data, "x.pfx", PASSWORD.encode())
    assert bundle.leaf.der == rsa_chain.leaf.der and bundle.has_private_key is True


def test_reading_a_pem_or_der_does_not_import_the_pkcs12_reader(ec_chain: Chain) -> None:
    code = (
        "import sys; from shared.x509.containers import load_certificates; "
        f"load_certificates({ec_chain.leaf.pem!r}); load_certificates({ec_chain.leaf.der!r}); "
        "print(sorted(m for m in sys.modules if m.startswith(('cryptography', 'shared.x509.pkcs12'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# --------------------------------------------------------------------------------------------------
# Bags: nesting, CRLs, secrets


def nested(levels: int, *bags: bytes) -> bytes:
    for _ in range(levels):
        bags = (safe_contents_bag(*bags),)
    return bags[0]


def test_nested_safe_contents(tmp_path: Path, ec_chain: Chain) -> None:
    lkid = b"k"
    data = pfx(
        data_info(nested(reader.MAX_NESTING, cert_bag(ec_chain.leaf, lkid)), cert_bag(ec_chain.root)),
        data_info(nested(2, shrouded_key_bag(encrypted_key(ec_chain.leaf), lkid))),
    )
    assert "mail.fabrikam.com" in openssl_info(tmp_path, data, PASSWORD)
    contents = read_pkcs12(data, PASSWORD.encode(), "x.pfx")
    assert ders(contents) == [ec_chain.leaf.der, ec_chain.root.der]
    assert contents.key_certificate is not None and contents.has_private_key is True


def test_nesting_too_deep_is_refused(ec_chain: Chain) -> None:
    data = pfx(data_info(nested(reader.MAX_NESTING + 1, cert_bag(ec_chain.leaf))))
    expect_error(lambda: read_pkcs12(data, PASSWORD.encode(), "deep.pfx"), "deep.pfx", "more than 4 deep")


def test_crl_secret_and_other_bags_are_ignored(tmp_path: Path, ec_chain: Chain) -> None:
    crl = seq(oid(CRL_BAG), explicit(seq(oid(X509_CRL), explicit(octets(b"not a CRL at all")))))
    secret = seq(oid(SECRET_BAG), explicit(seq(oid("1.2.3.4"), explicit(octets(b"s3cret")))))
    sdsi = seq(oid(CERT_BAG), explicit(seq(oid("1.2.840.113549.1.9.22.2"), explicit(tlv(0x16, b"sdsi")))))
    data = pfx(data_info(crl, secret, sdsi, cert_bag(ec_chain.leaf)))
    contents = read_pkcs12(data, PASSWORD.encode(), "x.pfx")
    assert ders(contents) == [ec_chain.leaf.der] and contents.has_private_key is False


def test_a_certificate_bag_holding_no_certificate(ec_chain: Chain) -> None:
    data = pfx(data_info(cert_bag(b"\x30\x03\x02\x01\x00")))
    expect_error(lambda: read_pkcs12(data, PASSWORD.encode(), "x.pfx"), "x.pfx", "not a valid X.509 certificate")


def test_no_certificate_at_all(ec_chain: Chain) -> None:
    data = pfx(data_info(shrouded_key_bag(encrypted_key(ec_chain.leaf), b"k")))
    contents = read_pkcs12(data, PASSWORD.encode(), "x.pfx")
    assert contents.certificates == () and contents.has_private_key is True
    expect_error(lambda: load_certificates(data, "x.pfx", PASSWORD.encode()), "x.pfx", "holds no certificate")


# --------------------------------------------------------------------------------------------------
# What is refused, and limits


def test_pbmac1_and_unknown_macs_are_refused(ec_chain: Chain) -> None:
    auth_safe = seq(data_info(cert_bag(ec_chain.leaf)))
    for algorithm, name in ((PBMAC1, "PBMAC1"), ("1.2.840.113549.2.5", "MD5"), ("1.2.3.4", "1.2.3.4")):
        mac = seq(seq(seq(oid(algorithm), NULL), octets(b"\x00" * 32)), octets(b"salt"), integer(2048))
        data = seq(integer(3), seq(oid(DATA), explicit(octets(auth_safe))), mac)
        expect_error(lambda data=data: read_pkcs12(data, PASSWORD.encode(), "x.pfx"), "x.pfx", name, "not support")


def test_rc4_and_unknown_encryption_is_refused(ec_chain: Chain) -> None:
    algorithm = seq(oid(PBE_SHA1_RC4_128), seq(octets(b"salt"), integer(2048)))
    data = pfx(encrypted_info(algorithm, b"\x00" * 64))
    expect_error(lambda: read_pkcs12(data, PASSWORD.encode(), "x.pfx"), "pbeWithSHAAnd128BitRC4", "does not read")


@pytest.mark.parametrize(
    "content_type,fragment", [(SIGNED_DATA, "public-key integrity"), (ENVELOPED_DATA, "public-key privacy")]
)
def test_public_key_modes_are_refused(ec_chain: Chain, content_type: str, fragment: str) -> None:
    if content_type == SIGNED_DATA:
        data = seq(integer(3), seq(oid(SIGNED_DATA), explicit(seq(integer(1)))))
    else:
        data = pfx(seq(oid(ENVELOPED_DATA), explicit(seq(integer(0)))))
    expect_error(lambda: read_pkcs12(data, PASSWORD.encode(), "x.pfx"), "x.pfx", fragment)


def test_iteration_counts_above_the_limit_are_refused_at_once(ec_chain: Chain) -> None:
    too_many = reader.MAX_ITERATIONS + 1
    # A MAC asking for too many iterations (its value never gets computed).
    auth_safe = seq(data_info(cert_bag(ec_chain.leaf)))
    mac = seq(seq(seq(oid(MAC_HASHES["sha256"]), NULL), octets(b"\x00" * 32)), octets(b"salt"), integer(too_many))
    by_mac = seq(integer(3), seq(oid(DATA), explicit(octets(auth_safe))), mac)
    # PBKDF2 and the PKCS#12 PBE asking for too many.
    pbkdf2 = seq(
        seq(oid(PBKDF2), seq(octets(b"salt"), integer(too_many))),
        seq(oid(PBES2_CIPHERS["aes256"][0]), octets(bytes(16))),
    )
    by_pbes2 = pfx(encrypted_info(seq(oid(PBES2), pbkdf2), bytes(32)), mac_password=None)
    by_pbe = pfx(
        encrypted_info(seq(oid(PBE_SHA1_3DES), seq(octets(b"salt"), integer(too_many))), bytes(32)), mac_password=None
    )
    for data in (by_mac, by_pbes2, by_pbe):
        started = time.monotonic()
        expect_error(lambda data=data: read_pkcs12(data, PASSWORD.encode(), "x.pfx"), "10,000,001", "10,000,000")
        assert time.monotonic() - started < 1


def test_total_key_derivation_work_is_bounded(ec_chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many encrypted parts, each within the per-count limit, still cannot add up without end."""
    infos = [pbe_3des_info(seq(cert_bag(ec_chain.leaf)), iterations=1000) for _ in range(5)]
    data = pfx(*infos, mac_password=bmp(PASSWORD), iterations=1000)
    assert len(read_pkcs12(data, PASSWORD.encode(), "x.pfx").certificates) == 1
    monkeypatch.setattr(reader, "_MAX_WORK", 10_000)  # MAC 1,000 + 3,000 per 3DES part (key 2 blocks, IV 1)
    expect_error(lambda: read_pkcs12(data, PASSWORD.encode(), "x.pfx"), "key-derivation iterations in all")


def test_rc2_40_content_is_bounded(tmp_path: Path, ec_chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    """40-bit RC2 is decrypted in Python, so how much of it a file may hold is bounded."""
    data = pfx_openssl(tmp_path, ec_chain, PASSWORD, "-legacy")
    assert len(read_pkcs12(data, PASSWORD.encode(), "x.pfx").certificates) == 3
    monkeypatch.setattr(reader, "_MAX_RC2_40_BYTES", 256)
    expect_error(lambda: read_pkcs12(data, PASSWORD.encode(), "x.pfx"), "40-bit RC2", "re-export")


@pytest.mark.parametrize(
    "blob",
    [
        b"\x30\x03\x02\x01\x02",  # version 2
        b"\x30\x03\x02\x01\x03",  # no authSafe
        seq(integer(3), seq(oid(DATA), explicit(octets(b"\x30\x80")))),  # AuthenticatedSafe truncated
        seq(integer(3), seq(oid(DATA), explicit(octets(seq(seq(oid(DATA))))))) + b"\x00",  # trailing byte
        seq(integer(3), seq(oid(DATA), explicit(octets(seq(seq(oid("1.2.3")))))), NULL),  # MacData not a SEQUENCE
    ],
    ids=["version", "no-authsafe", "truncated-inner", "trailing", "bad-macdata"],
)
def test_malformed_structures(blob: bytes) -> None:
    expect_error(lambda: read_pkcs12(blob, None, "bad.pfx"), "bad.pfx")


# --------------------------------------------------------------------------------------------------
# BER


def test_ber_pfx_inside_and_out(tmp_path: Path, ec_chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    """Indefinite lengths and chunked OCTET STRINGs at every level, as BouncyCastle writes them."""
    lkid = key_id(ec_chain.leaf)
    certs = to_ber(seq(cert_bag(ec_chain.leaf, lkid), cert_bag(ec_chain.intermediate), cert_bag(ec_chain.root)))
    keys = to_ber(seq(shrouded_key_bag(encrypted_key(ec_chain.leaf), lkid)))
    auth_safe = to_ber(seq(pbes2_info(certs), seq(oid(DATA), explicit(octets(keys)))))
    mac = mac_data(auth_safe, bmp(PASSWORD))
    data = to_ber(seq(integer(3), seq(oid(DATA), explicit(octets(auth_safe))), mac))
    assert data.startswith(b"\x30\x80\x02\x01\x03") and b"\x24\x80" in data and b"\xa0\x80\x04" in auth_safe
    assert "mail.fabrikam.com" in openssl_info(tmp_path, data, PASSWORD)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert pkcs12.load_pkcs12(data, PASSWORD.encode()).cert is not None  # cryptography reads it too
    _forbid_key_parsing(monkeypatch)
    contents = read_pkcs12(data, PASSWORD.encode(), "ber.pfx")
    assert ders(contents) == [m.der for m in ec_chain.members]
    assert contents.key_certificate is not None and contents.key_certificate.der == ec_chain.leaf.der
    for blob in (data, base64.b64encode(data)):
        bundle = load_certificates(blob, "ber.pfx", PASSWORD.encode())
        assert bundle.leaf.der == ec_chain.leaf.der and bundle.container == "pkcs12"
    expect_error(lambda: load_certificates(data, "upload", accept_pkcs12=False), "upload", "PKCS#12", "private key")


def test_ber_outside_of_an_openssl_pfx(tmp_path: Path, rsa_chain: Chain) -> None:
    data = to_ber(pfx_openssl(tmp_path, rsa_chain, PASSWORD, "-legacy"))
    openssl_info(tmp_path, data, PASSWORD)
    assert ders(read_pkcs12(data, PASSWORD.encode(), "x.pfx")) == [m.der for m in rsa_chain.members]


@pytest.mark.parametrize(
    "blob",
    [
        b"\x30\x80\x02\x01\x03\x30\x80",  # never closed
        b"\x30\x80\x02\x01\x03\x04\x80\x00\x00\x00\x00",  # primitive with an indefinite length
        b"\x30\x80\x02\x01\x03" + b"\x30\x80" * 100,  # nested without end
        b"\x30\x80\x02\x01\x03\x24\x80\x02\x01\x00\x00\x00\x00\x00",  # constructed OCTET STRING of INTEGERs
    ],
    ids=["unterminated", "primitive-indefinite", "deep", "mixed-octets"],
)
def test_bad_ber(blob: bytes) -> None:
    expect_error(lambda: load_certificates(blob, "ber.pfx"), "ber.pfx", "not a valid PKCS#12 file")


# --------------------------------------------------------------------------------------------------
# RC2


def test_rc2_against_cryptography_at_128_bits() -> None:
    rng = random.Random(7)
    for _ in range(20):
        key, iv = rng.randbytes(16), rng.randbytes(8)
        plaintext = rng.randbytes(8 * rng.randint(1, 12))
        encryptor = Cipher(RC2(key), modes.CBC(iv)).encryptor()
        ciphertext = encryptor.update(plaintext) + encryptor.finalize()
        assert reader._rc2_cbc_decrypt(key, 128, iv, ciphertext) == plaintext


@pytest.mark.parametrize("seed", range(4))
def test_rc2_40_against_openssl(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    key, iv, plaintext = rng.randbytes(5), rng.randbytes(8), rng.randbytes(rng.randint(1, 90))
    (tmp_path / "plain").write_bytes(plaintext)
    openssl(
        "enc",
        "-rc2-40-cbc",
        "-K",
        key.hex(),
        "-iv",
        iv.hex(),
        "-in",
        "plain",
        "-out",
        "enc",
        "-provider",
        "legacy",
        "-provider",
        "default",
        cwd=tmp_path,
    )
    ciphertext = (tmp_path / "enc").read_bytes()
    padded = reader._rc2_cbc_decrypt(key, 40, iv, ciphertext)
    assert padded[: len(plaintext)] == plaintext and padded[-1] == len(padded) - len(plaintext)


def test_rc2_rfc_2268_vectors() -> None:
    vectors = [  # key, effective bits, plaintext, ciphertext (RFC 2268 section 5)
        ("0000000000000000", 63, "0000000000000000", "ebb773f993278eff"),
        ("ffffffffffffffff", 64, "ffffffffffffffff", "278b27e42e2f0d49"),
        ("3000000000000000", 64, "1000000000000001", "30649edf9be7d2c2"),
        ("88", 64, "0000000000000000", "61a8a244adacccf0"),
        ("88bca90e90875a", 64, "0000000000000000", "6ccf4308974c267f"),
        ("88bca90e90875a7f0f79c384627bafb2", 64, "0000000000000000", "1a807d272bbe5db1"),
        ("88bca90e90875a7f0f79c384627bafb2", 128, "0000000000000000", "2269552ab0f85ca6"),
    ]
    for key, bits, plain, cipher in vectors:
        # CBC with a zero IV over one block is the block cipher itself.
        assert reader._rc2_cbc_decrypt(bytes.fromhex(key), bits, bytes(8), bytes.fromhex(cipher)).hex() == plain


KDF_CASES = [
    ("sha256", bmp(""), 2048, 3, 32),  # Key Vault's MAC key
    ("sha1", b"", 1, 3, 20),  # the zero-length form
    ("sha1", bmp("pässwörd"), 2048, 1, 24),  # a 3DES key: longer than one digest
    ("sha1", bmp("x" * 70), 3, 2, 8),  # a password longer than one block
    ("sha384", bmp("mail"), 7, 3, 48),
    ("sha512", bmp("mail"), 2, 1, 130),  # several rounds of the B.2 loop
    ("sha224", bmp("mail"), 5, 3, 28),
]


@pytest.mark.parametrize(("hash_name", "password", "iterations", "purpose", "size"), KDF_CASES)
def test_the_native_kdf_gives_the_reference_bytes(
    hash_name: str, password: bytes, iterations: int, purpose: int, size: int
) -> None:
    """OpenSSL's PKCS12_key_gen_uni (the system libcrypto, as on every Linux certsync runs on) and the Python
    loop both give what RFC 7292 B.2, written out again in this file, gives."""
    native = reader._native_kdf()
    assert native is not None, "no libcrypto loaded: the MAC check costs 0.3 ms more per PFX"
    salt = os.urandom(8)
    expected = kdf(hash_name, password, salt, iterations, purpose, size)
    assert native(hash_name, password, salt, iterations, purpose, size) == expected
    new = getattr(hashlib, hash_name)
    assert reader._python_kdf(new, new().block_size, password, salt, iterations, purpose, size) == expected


def test_a_digest_libcrypto_does_not_know_falls_back_to_python() -> None:
    native = reader._native_kdf()
    assert native is not None
    assert native("no-such-digest", b"", b"salt", 1, 3, 16) is None


def test_without_libcrypto_a_pfx_reads_the_same(ec_chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    data = pfx(data_info(cert_bag(ec_chain.leaf), cert_bag(ec_chain.root)), mac_password=bmp(""))
    with_native = ders(read_pkcs12(data, None, "kv.pfx"))
    monkeypatch.setattr(reader, "_native_kdf", lambda: None)
    assert ders(read_pkcs12(data, None, "kv.pfx")) == with_native == [ec_chain.leaf.der, ec_chain.root.der]
    expect_error(lambda: read_pkcs12(data, b"x", "kv.pfx"), "wrong password")
