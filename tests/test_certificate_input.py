"""Loading certificates from the files admins hand us: PEM, DER, PKCS#7, PKCS#12 and bare base64.

All material is made at test time (tests/chains.py, and the `openssl` CLI for the containers Windows
and OpenSSL write). Expected values come from `cryptography`, `hashlib` or `openssl`, never from the
code under test.
"""

from __future__ import annotations

import base64
import datetime as dt
import gc
import hashlib
import itertools
import random
import re
import shutil
import socket
import subprocess
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12

import shared.x509.pkcs12
from shared.errors import CertificateInputError
from shared.x509.certificate import CertificateBundle
from shared.x509.containers import load_certificate_file, load_certificates
from tests.chains import Chain, Issued, build_chain, issue, make_name, pem_of, pfx_openssl

OPENSSL = shutil.which("openssl")
PASSWORD = "Pa55-w0rd!"
MIB = 1024 * 1024


# --------------------------------------------------------------------------------------------------
# Material


@pytest.fixture(scope="module")
def rsa_chain() -> Chain:
    return build_chain("rsa")


@pytest.fixture(scope="module")
def ec_chain() -> Chain:
    return build_chain("ec", organization="Fabrikam", dns_names=("mail.fabrikam.com", "*.fabrikam.com"))


@pytest.fixture(scope="module", params=["rsa", "ec"])
def chain(request: pytest.FixtureRequest) -> Chain:
    return request.getfixturevalue(f"{request.param}_chain")


@pytest.fixture(scope="module")
def other_chain() -> Chain:
    """A chain sharing nothing with the others."""
    return build_chain("ec", organization="Northwind", dns_names=("smtp.northwind.example",))


@pytest.fixture(scope="module")
def sibling(rsa_chain: Chain) -> Issued:
    """A second end certificate from rsa_chain's intermediate."""
    return issue(
        make_name("owa.contoso.com", "Contoso"),
        issuer=rsa_chain.intermediate,
        kind="ec",
        dns_names=("owa.contoso.com",),
    )


def write(directory: Path, name: str, data: bytes) -> str:
    path = directory / name
    path.write_bytes(data)
    return str(path)


def openssl(*args: str, cwd: Path, stdin: bytes | None = None) -> bytes:
    assert OPENSSL is not None, "the openssl CLI is missing: `make test` installs it (Debian package openssl)"
    proc = subprocess.run([OPENSSL, *args], cwd=cwd, input=stdin, capture_output=True, check=False)
    assert proc.returncode == 0, f"openssl {' '.join(args)}: {proc.stderr.decode(errors='replace')}"
    return proc.stdout


def ders(bundle: CertificateBundle) -> list[bytes]:
    return [bundle.leaf.der, *(c.der for c in bundle.chain)]


def assert_chain(bundle: CertificateBundle, chain: Chain, source: str | None = None) -> None:
    """The bundle's leaf is chain.leaf, its chain is [intermediate, root], and nothing is left over."""
    assert bundle.leaf.der == chain.leaf.der
    assert [c.der for c in bundle.chain] == [chain.intermediate.der, chain.root.der]
    assert bundle.extras == ()
    if source is not None:
        assert bundle.source == source


def expect_error(call: Callable[[], object], names: str, *fragments: str) -> str:
    """`call` raises CertificateInputError with a one-line message naming `names` and holding `fragments`."""
    with pytest.raises(CertificateInputError) as caught:
        call()
    message = str(caught.value)
    assert names in message, message
    assert "\n" not in message and "\r" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --------------------------------------------------------------------------------------------------
# PEM


def test_pem_single_certificate(tmp_path: Path, ec_chain: Chain) -> None:
    path = write(tmp_path, "leaf.pem", ec_chain.leaf.pem)
    bundle = load_certificate_file(path)
    assert bundle.leaf.der == ec_chain.leaf.der
    assert bundle.chain == ()
    assert bundle.extras == ()
    assert bundle.source == path
    assert bundle.container == "pem"
    assert bundle.has_private_key is False


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))), ids=lambda o: "".join("LIR"[i] for i in o))
def test_pem_bundle_in_any_order_gives_the_same_leaf_and_chain(tmp_path: Path, chain: Chain, order: tuple) -> None:
    """Leaf first, leaf last, root in the middle, ...: every order yields leaf -> intermediate -> root."""
    path = write(tmp_path, "bundle.pem", pem_of(chain.members[i] for i in order))
    bundle = load_certificate_file(path)
    assert_chain(bundle, chain, path)
    assert bundle.container == "pem"


def test_pem_chain_without_the_root(tmp_path: Path, rsa_chain: Chain) -> None:
    path = write(tmp_path, "fullchain.pem", pem_of([rsa_chain.intermediate, rsa_chain.leaf]))
    bundle = load_certificate_file(path)
    assert bundle.leaf.der == rsa_chain.leaf.der
    assert [c.der for c in bundle.chain] == [rsa_chain.intermediate.der]


def test_pem_names_chain_up_by_subject_and_issuer(tmp_path: Path, rsa_chain: Chain) -> None:
    bundle = load_certificate_file(write(tmp_path, "b.pem", pem_of(reversed(rsa_chain.members))))
    # Windows prints the last encoded RDN first, ", " between RDNs: the reverse of RFC 4514's order.
    for got, want in zip([bundle.leaf, *bundle.chain], rsa_chain.members, strict=True):
        assert str(got.subject) == ", ".join(want.cert.subject.rfc4514_string().split(","))
        assert str(got.issuer) == ", ".join(want.cert.issuer.rfc4514_string().split(","))
    assert str(bundle.leaf.subject) == "CN=mail.contoso.com, O=Contoso, C=US"
    assert str(bundle.leaf.issuer) == "CN=Contoso Issuing CA 1, O=Contoso, C=US"


def test_pem_with_crlf_line_endings_and_text_around_blocks(tmp_path: Path, rsa_chain: Chain) -> None:
    text = b"# exported for the hybrid connector\r\n"
    for member in rsa_chain.members:
        text += b"subject=" + member.cert.subject.rfc4514_string().encode() + b"\r\n"
        text += member.pem.replace(b"\n", b"\r\n") + b"\r\n"
    bundle = load_certificate_file(write(tmp_path, "crlf.pem", text))
    assert_chain(bundle, rsa_chain)


@pytest.mark.parametrize("where", ["key first", "key between", "key last"])
@pytest.mark.parametrize(
    "key_format",
    ["pkcs8", "traditional", "encrypted"],
)
def test_pem_with_private_key_block_loads(tmp_path: Path, chain: Chain, where: str, key_format: str) -> None:
    key = chain.leaf.key
    if key_format == "pkcs8":
        block = chain.leaf.key_pem
        label = b"PRIVATE KEY"
    elif key_format == "traditional":
        block = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
        label = b"RSA PRIVATE KEY" if isinstance(key, rsa.RSAPrivateKey) else b"EC PRIVATE KEY"
    else:
        block = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
        label = b"ENCRYPTED PRIVATE KEY"
    assert block.startswith(b"-----BEGIN " + label + b"-----")
    certs = [chain.leaf.pem, chain.intermediate.pem, chain.root.pem]
    position = {"key first": 0, "key between": 1, "key last": 3}[where]
    path = write(tmp_path, "withkey.pem", b"".join([*certs[:position], block, *certs[position:]]))
    bundle = load_certificate_file(path)
    assert_chain(bundle, chain, path)


def test_pem_private_key_block_is_never_decoded_garbage_body(tmp_path: Path, rsa_chain: Chain) -> None:
    """A PRIVATE KEY block whose body is not even base64 does not stop the certificates loading."""
    garbage = (
        b"-----BEGIN PRIVATE KEY-----\n"
        b"!!! this is not base64, not DER, not a key: *** %%% ~~~ !!!\n"
        b"\x00\xff\xfe binary junk \x80\x81\n"
        b"-----END PRIVATE KEY-----\n"
        b"-----BEGIN RSA PRIVATE KEY-----\n"
        b"Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\n@@@@\n"
        b"-----END RSA PRIVATE KEY-----\n"
    )
    path = write(
        tmp_path, "garbagekey.pem", rsa_chain.leaf.pem + garbage + pem_of([rsa_chain.intermediate, rsa_chain.root])
    )
    bundle = load_certificate_file(path)
    assert_chain(bundle, rsa_chain, path)


def test_pem_private_key_body_is_never_base64_decoded(
    tmp_path: Path, rsa_chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spy on base64 decoding: the body of the (valid) key block is never handed to a decoder."""
    key_body = b"".join(rsa_chain.leaf.key_pem.splitlines()[1:-1])
    calls: list[bytes] = []
    real = {name: getattr(base64, name) for name in ("b64decode", "standard_b64decode", "decodebytes")}

    def spy(name: str) -> Callable[..., bytes]:
        def decode(data: object, *args: object, **kwargs: object) -> bytes:
            raw = data.encode() if isinstance(data, str) else bytes(data)  # type: ignore[arg-type]
            calls.append(b"".join(raw.split()))
            return real[name](data, *args, **kwargs)

        return decode

    for name in real:
        monkeypatch.setattr(base64, name, spy(name))
    path = write(tmp_path, "withkey.pem", rsa_chain.leaf.key_pem + pem_of(rsa_chain.members))
    bundle = load_certificate_file(path)
    monkeypatch.undo()
    assert_chain(bundle, rsa_chain)
    assert calls, "the spy saw no decoding at all, so it proves nothing"
    assert all(key_body[:64] not in call for call in calls)


def test_pem_written_by_openssl_pkcs12_nodes(tmp_path: Path, rsa_chain: Chain) -> None:
    """`openssl pkcs12 -nodes` output: Bag Attributes text, the key, then the certificates."""
    pfx = pfx_openssl(tmp_path, rsa_chain, PASSWORD)
    out = openssl("pkcs12", "-in", "x.pfx", "-passin", f"pass:{PASSWORD}", "-nodes", cwd=tmp_path)
    assert pfx and b"Bag Attributes" in out and b"PRIVATE KEY-----" in out
    bundle = load_certificate_file(write(tmp_path, "dump.pem", out))
    assert_chain(bundle, rsa_chain)


def test_pem_trusted_certificate_with_trust_settings(tmp_path: Path, ec_chain: Chain) -> None:
    """OpenSSL's `TRUSTED CERTIFICATE` block is the certificate followed by its trust settings."""
    write(tmp_path, "root.pem", ec_chain.root.pem)
    out = openssl("x509", "-in", "root.pem", "-trustout", "-addtrust", "serverAuth", cwd=tmp_path)
    assert out.startswith(b"-----BEGIN TRUSTED CERTIFICATE-----")
    body = base64.b64decode(b"".join(out.splitlines()[1:-1]))
    assert len(body) > len(ec_chain.root.der) and body.startswith(ec_chain.root.der)  # the aux really follows
    bundle = load_certificate_file(write(tmp_path, "trusted.pem", out))
    assert bundle.leaf.der == ec_chain.root.der
    assert bundle.chain == ()


def test_pem_x509_certificate_label(tmp_path: Path, ec_chain: Chain) -> None:
    text = ec_chain.leaf.pem.replace(b"CERTIFICATE-----", b"X509 CERTIFICATE-----")
    assert text.startswith(b"-----BEGIN X509 CERTIFICATE-----")
    assert load_certificate_file(write(tmp_path, "x.pem", text)).leaf.der == ec_chain.leaf.der


# --------------------------------------------------------------------------------------------------
# DER


def test_der_certificate(tmp_path: Path, chain: Chain) -> None:
    path = write(tmp_path, "leaf.cer", chain.leaf.der)
    bundle = load_certificate_file(path)
    assert bundle.leaf.der == chain.leaf.der
    assert bundle.chain == ()
    assert bundle.container == "der"
    assert bundle.has_private_key is False
    assert bundle.source == path


def test_der_certificate_from_bytes(ec_chain: Chain) -> None:
    bundle = load_certificates(ec_chain.root.der, source="root.cer")
    assert bundle.leaf.der == ec_chain.root.der
    assert bundle.source == "root.cer"


# --------------------------------------------------------------------------------------------------
# PKCS#7


def p7b_openssl(tmp_path: Path, members: list[Issued], outform: str) -> bytes:
    write(tmp_path, "certs.pem", pem_of(members))
    return openssl("crl2pkcs7", "-nocrl", "-certfile", "certs.pem", "-outform", outform, cwd=tmp_path)


@pytest.mark.parametrize("outform", ["DER", "PEM"])
@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)], ids=["LIR", "RIL", "IRL"])
def test_pkcs7_from_openssl(tmp_path: Path, chain: Chain, outform: str, order: tuple) -> None:
    data = p7b_openssl(tmp_path, [chain.members[i] for i in order], outform)
    if outform == "PEM":
        assert data.startswith(b"-----BEGIN PKCS7-----")
    else:
        assert data[:1] == b"\x30"
    path = write(tmp_path, "chain.p7b", data)
    bundle = load_certificate_file(path)
    assert_chain(bundle, chain, path)
    assert bundle.container == "pkcs7"
    assert bundle.has_private_key is False


@pytest.mark.parametrize("encoding", [serialization.Encoding.DER, serialization.Encoding.PEM])
def test_pkcs7_from_cryptography(tmp_path: Path, rsa_chain: Chain, encoding: serialization.Encoding) -> None:
    data = pkcs7.serialize_certificates(
        [m.cert for m in (rsa_chain.root, rsa_chain.leaf, rsa_chain.intermediate)], encoding
    )
    bundle = load_certificate_file(write(tmp_path, "c.p7c", data))
    assert_chain(bundle, rsa_chain)
    assert bundle.container == "pkcs7"


def test_pkcs7_with_the_pkcs_7_signed_data_pem_label(tmp_path: Path, ec_chain: Chain) -> None:
    """Some Windows tools armour a .p7b as `PKCS #7 SIGNED DATA` rather than `PKCS7`."""
    data = p7b_openssl(tmp_path, list(ec_chain.members), "PEM")
    data = data.replace(b"-----BEGIN PKCS7-----", b"-----BEGIN PKCS #7 SIGNED DATA-----")
    data = data.replace(b"-----END PKCS7-----", b"-----END PKCS #7 SIGNED DATA-----")
    bundle = load_certificate_file(write(tmp_path, "certnew.p7b", data))
    assert_chain(bundle, ec_chain)
    assert bundle.container == "pkcs7"


def test_pkcs7_signed_message_certificates(tmp_path: Path, ec_chain: Chain) -> None:
    """A real signed CMS message (with signerInfos) also yields its certificates."""
    write(tmp_path, "leaf.pem", ec_chain.leaf.pem)
    write(tmp_path, "key.pem", ec_chain.leaf.key_pem)
    write(tmp_path, "ca.pem", pem_of([ec_chain.root, ec_chain.intermediate]))
    write(tmp_path, "msg.txt", b"hello")
    data = openssl(
        "cms",
        "-sign",
        "-in",
        "msg.txt",
        "-signer",
        "leaf.pem",
        "-inkey",
        "key.pem",
        "-certfile",
        "ca.pem",
        "-outform",
        "DER",
        "-nodetach",
        cwd=tmp_path,
    )
    assert_chain(load_certificate_file(write(tmp_path, "signed.p7s", data)), ec_chain)


# --------------------------------------------------------------------------------------------------
# PKCS#12


def _leaf_files(tmp_path: Path, chain: Chain) -> None:
    write(tmp_path, "leaf.pem", chain.leaf.pem)
    write(tmp_path, "key.pem", chain.leaf.key_pem)
    write(tmp_path, "ca.pem", pem_of([chain.intermediate, chain.root]))


def pfx_cryptography(chain: Chain, encryption: serialization.KeySerializationEncryption) -> bytes:
    return pkcs12.serialize_key_and_certificates(
        b"Exchange", chain.leaf.key, chain.leaf.cert, [chain.intermediate.cert, chain.root.cert], encryption
    )


def _pbes(algorithm: pkcs12.PBES, mac: hashes.HashAlgorithm) -> serialization.KeySerializationEncryption:
    return (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(2048)
        .key_cert_algorithm(algorithm)
        .hmac_hash(mac)
        .build(PASSWORD.encode())
    )


# producer name -> (options for `openssl pkcs12 -export`, or None for cryptography's encryption; the
# strings `openssl pkcs12 -info` must print for the file, proving what the fixture really is)
OPENSSL_PFX = {
    "openssl-modern-aes": ((), ["PBES2, PBKDF2, AES-256-CBC", "MAC: sha256"]),
    "openssl-legacy-rc2-3des": (
        ("-legacy",),
        ["pbeWithSHA1And40BitRC2-CBC", "pbeWithSHA1And3-KeyTripleDES-CBC", "MAC: sha1"],
    ),
    "openssl-3des-sha1": (
        ("-certpbe", "PBE-SHA1-3DES", "-keypbe", "PBE-SHA1-3DES", "-macalg", "sha1"),
        ["PKCS7 Encrypted data: pbeWithSHA1And3-KeyTripleDES-CBC", "MAC: sha1"],
    ),
}
CRYPTOGRAPHY_PFX = {
    "cryptography-best": lambda: serialization.BestAvailableEncryption(PASSWORD.encode()),
    "cryptography-3des-sha1": lambda: _pbes(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC, hashes.SHA1()),
    "cryptography-aes-sha256": lambda: _pbes(pkcs12.PBES.PBESv2SHA256AndAES256CBC, hashes.SHA256()),
}


def pfx_info(tmp_path: Path, data: bytes, password: str) -> str:
    write(tmp_path, "info.pfx", data)
    proc = subprocess.run(
        [OPENSSL, "pkcs12", "-in", "info.pfx", "-passin", f"pass:{password}", "-info", "-noout", "-legacy"],
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout.decode() + proc.stderr.decode()


@pytest.mark.parametrize("producer", list(OPENSSL_PFX))
def test_pfx_with_password_from_openssl(tmp_path: Path, chain: Chain, producer: str) -> None:
    options, expected_info = OPENSSL_PFX[producer]
    data = pfx_openssl(tmp_path, chain, PASSWORD, *options)
    info = pfx_info(tmp_path, data, PASSWORD)
    for fragment in expected_info:
        assert fragment in info, info
    path = write(tmp_path, "exchange.pfx", data)
    bundle = load_certificate_file(path, password=PASSWORD.encode())
    assert_chain(bundle, chain, path)
    assert bundle.container == "pkcs12"
    assert bundle.has_private_key is True


@pytest.mark.parametrize("producer", list(CRYPTOGRAPHY_PFX))
def test_pfx_with_password_from_cryptography(tmp_path: Path, chain: Chain, producer: str) -> None:
    data = pfx_cryptography(chain, CRYPTOGRAPHY_PFX[producer]())
    bundle = load_certificate_file(write(tmp_path, "x.pfx", data), password=PASSWORD.encode())
    assert_chain(bundle, chain)
    assert bundle.container == "pkcs12"
    assert bundle.has_private_key is True


def test_pfx_with_non_ascii_password(tmp_path: Path, ec_chain: Chain) -> None:
    password = "Kennwort-äöü-€".encode()
    data = pfx_cryptography(ec_chain, serialization.BestAvailableEncryption(password))
    assert_chain(load_certificate_file(write(tmp_path, "x.pfx", data), password=password), ec_chain)


@pytest.mark.parametrize(
    "options", [(), ("-nomac", "-keypbe", "NONE", "-certpbe", "NONE")], ids=["empty-password", "no-mac-no-encryption"]
)
def test_pfx_without_password_from_openssl(tmp_path: Path, chain: Chain, options: tuple) -> None:
    data = pfx_openssl(tmp_path, chain, "", *options)
    bundle = load_certificate_file(write(tmp_path, "nopass.pfx", data))
    assert_chain(bundle, chain)
    assert bundle.container == "pkcs12"
    assert bundle.has_private_key is True


def test_pfx_without_password_from_cryptography(tmp_path: Path, chain: Chain) -> None:
    data = pfx_cryptography(chain, serialization.NoEncryption())
    bundle = load_certificate_file(write(tmp_path, "nopass.pfx", data))
    assert_chain(bundle, chain)
    assert bundle.has_private_key is True


def _pfx_subject_order(tmp_path: Path, data: bytes) -> list[str]:
    """The CNs of the certificate bags in file order, as `openssl pkcs12` prints them."""
    write(tmp_path, "order.pfx", data)
    out = openssl("pkcs12", "-in", "order.pfx", "-passin", "pass:", "-nokeys", cwd=tmp_path).decode()
    return re.findall(r"^subject=.*CN ?= ?([^,\n]+)$", out, re.MULTILINE)


def test_pfx_whose_key_certificate_is_not_first(tmp_path: Path, rsa_chain: Chain) -> None:
    data = pkcs12.serialize_key_and_certificates(
        b"x",
        rsa_chain.leaf.key,
        None,
        [rsa_chain.root.cert, rsa_chain.intermediate.cert, rsa_chain.leaf.cert],
        serialization.NoEncryption(),
    )
    assert _pfx_subject_order(tmp_path, data) == ["Contoso Root CA", "Contoso Issuing CA 1", "mail.contoso.com"]
    bundle = load_certificate_file(write(tmp_path, "x.pfx", data))
    assert_chain(bundle, rsa_chain)
    assert bundle.has_private_key is True


def test_pfx_leaf_is_the_key_certificate_even_with_another_end_certificate(
    tmp_path: Path, rsa_chain: Chain, sibling: Issued, other_chain: Chain
) -> None:
    """Three end certificates: the leaf is still the key's certificate, the one whose localKeyId is the
    key bag's (the key itself is never opened; tests/test_pkcs12.py has the key's certificate not first)."""
    data = pkcs12.serialize_key_and_certificates(
        b"x",
        rsa_chain.leaf.key,
        rsa_chain.leaf.cert,
        [sibling.cert, other_chain.leaf.cert, rsa_chain.intermediate.cert, rsa_chain.root.cert],
        serialization.BestAvailableEncryption(PASSWORD.encode()),
    )
    bundle = load_certificate_file(write(tmp_path, "x.pfx", data), password=PASSWORD.encode())
    assert bundle.leaf.der == rsa_chain.leaf.der
    assert [c.der for c in bundle.chain] == [rsa_chain.intermediate.der, rsa_chain.root.der]
    assert sorted(c.der for c in bundle.extras) == sorted([sibling.der, other_chain.leaf.der])
    assert bundle.has_private_key is True
    # Control: without the key, the same certificates are ambiguous.
    expect_error(
        lambda: load_certificates(pem_of([sibling, rsa_chain.leaf, rsa_chain.intermediate]), source="nokey.pem"),
        "nokey.pem",
        "unrelated end certificates",
    )


def test_pfx_without_key(tmp_path: Path, ec_chain: Chain) -> None:
    _leaf_files(tmp_path, ec_chain)
    openssl(
        "pkcs12",
        "-export",
        "-nokeys",
        "-in",
        "leaf.pem",
        "-certfile",
        "ca.pem",
        "-passout",
        f"pass:{PASSWORD}",
        "-out",
        "certs.pfx",
        cwd=tmp_path,
    )
    bundle = load_certificate_file(str(tmp_path / "certs.pfx"), password=PASSWORD.encode())
    assert_chain(bundle, ec_chain)
    assert bundle.has_private_key is False
    assert bundle.container == "pkcs12"


# --------------------------------------------------------------------------------------------------
# Bare base64 (a Key Vault secret value, a .cer saved as text)


def test_bare_base64_of_pfx_without_password(tmp_path: Path, rsa_chain: Chain) -> None:
    secret = base64.b64encode(pfx_cryptography(rsa_chain, serialization.NoEncryption()))
    bundle = load_certificates(secret, source="keyvault:mail-contoso")
    assert_chain(bundle, rsa_chain, "keyvault:mail-contoso")
    assert bundle.container == "pkcs12"
    assert bundle.has_private_key is True
    assert_chain(load_certificate_file(write(tmp_path, "secret.txt", secret + b"\n")), rsa_chain)


def test_bare_base64_of_pfx_with_password(ec_chain: Chain) -> None:
    secret = base64.b64encode(pfx_cryptography(ec_chain, CRYPTOGRAPHY_PFX["cryptography-3des-sha1"]()))
    assert_chain(load_certificates(secret, "kv", password=PASSWORD.encode()), ec_chain)
    expect_error(lambda: load_certificates(secret, "kv-secret"), "kv-secret", "password-protected", "--password-env")


@pytest.mark.parametrize("wrap", [0, 64, 76], ids=["one-line", "wrapped-64", "wrapped-76-crlf"])
def test_bare_base64_of_der_certificate(tmp_path: Path, ec_chain: Chain, wrap: int) -> None:
    text = base64.b64encode(ec_chain.leaf.der)
    if wrap:
        newline = b"\r\n" if wrap == 76 else b"\n"
        text = newline.join(text[i : i + wrap] for i in range(0, len(text), wrap)) + newline
    bundle = load_certificate_file(write(tmp_path, "leaf.txt", text))
    assert bundle.leaf.der == ec_chain.leaf.der
    assert bundle.container == "der"


def test_bare_base64_of_pkcs7(tmp_path: Path, rsa_chain: Chain) -> None:
    text = base64.b64encode(p7b_openssl(tmp_path, list(rsa_chain.members), "DER"))
    bundle = load_certificate_file(write(tmp_path, "p7.txt", text))
    assert_chain(bundle, rsa_chain)
    assert bundle.container == "pkcs7"


# --------------------------------------------------------------------------------------------------
# The private key of a PFX is not kept


def _key_types(chain: Chain) -> tuple[type, ...]:
    return (type(chain.leaf.key), pkcs12.PKCS12KeyAndCertificates)


def _live_instances(kinds: tuple[type, ...]) -> int:
    """How many objects of exactly `kinds` are reachable from any GC-tracked object.

    cryptography's key objects are not GC-tracked, so gc.get_objects() never lists them, nor the dicts
    and tuples that hold nothing but untracked objects. So from every tracked object this descends
    through its untracked containers to what they hold: a key kept anywhere (a list, a dict, an
    instance attribute, a module global, a frame, a traceback) is found."""
    gc.collect()
    found: set[int] = set()
    expanded: set[int] = set()
    stack = list(gc.get_objects())
    while stack:
        obj = stack.pop()
        if type(obj) in kinds:
            found.add(id(obj))
        if gc.is_tracked(obj) or isinstance(obj, (dict, tuple, list, set, frozenset)):
            if id(obj) in expanded:
                continue
            expanded.add(id(obj))
            stack.extend(r for r in gc.get_referents(obj) if not gc.is_tracked(r))
    return len(found)


_LEAKED: list[object] = []


def test_key_scan_detects_a_retained_key(tmp_path: Path, rsa_chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan used below can fail: a key kept anywhere reachable is counted."""
    kinds = _key_types(rsa_chain)
    before = _live_instances(kinds)
    holder = types.SimpleNamespace(key=rsa.generate_private_key(65537, 2048))
    assert _live_instances(kinds) == before + 1
    del holder
    assert _live_instances(kinds) == before
    real = shared.x509.pkcs12.read_pkcs12

    def leaky(data: bytes, password: bytes | None, source: str) -> object:
        _LEAKED.append(pkcs12.load_pkcs12(data, password).key)  # what going back to the library could do
        return real(data, password, source)

    monkeypatch.setattr(shared.x509.pkcs12, "read_pkcs12", leaky)
    try:
        load_certificates(pfx_cryptography(rsa_chain, serialization.NoEncryption()), "leaky.pfx")
        assert _live_instances(kinds) == before + 1
    finally:
        _LEAKED.clear()


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_pfx_private_key_is_not_kept_after_loading(tmp_path: Path, kind: str, request: pytest.FixtureRequest) -> None:
    chain: Chain = request.getfixturevalue(f"{kind}_chain")
    data = pfx_cryptography(chain, serialization.BestAvailableEncryption(PASSWORD.encode()))
    kinds = _key_types(chain)
    before = _live_instances(kinds)
    bundle = load_certificate_file(write(tmp_path, "x.pfx", data), password=PASSWORD.encode())
    assert bundle.has_private_key is True
    assert _live_instances(kinds) == before
    # Also after a failed load (wrong password) and after many loads.
    for _ in range(5):
        load_certificates(data, "again.pfx", password=PASSWORD.encode())
    with pytest.raises(CertificateInputError):
        load_certificates(data, "wrong.pfx", password=b"wrong")
    assert _live_instances(kinds) == before


def test_pfx_private_key_is_never_handed_to_the_library(rsa_chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    """No key object is ever made: the library is not asked to open the PFX or any key in it."""
    seen: list[str] = []
    for module, name in [
        (pkcs12, "load_pkcs12"),
        (pkcs12, "load_key_and_certificates"),
        (serialization, "load_der_private_key"),
    ]:
        monkeypatch.setattr(module, name, lambda *args, name=name, **kwargs: seen.append(name))
    for password in (None, PASSWORD.encode()):
        encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
        bundle = load_certificates(pfx_cryptography(rsa_chain, encryption), "x.pfx", password)
        assert bundle.has_private_key is True
        assert bundle.leaf.der == rsa_chain.leaf.der
    assert seen == []


def _secrets(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> tuple[list[bytes], list[int]]:
    blobs = [
        key.private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption())
        for fmt in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL)
    ]
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.private_numbers()
        ints = [numbers.d, numbers.p, numbers.q, numbers.dmp1, numbers.dmq1, numbers.iqmp]
    else:
        ints = [key.private_numbers().private_value]
    blobs += [n.to_bytes((n.bit_length() + 7) // 8, "big") for n in ints]
    return blobs, ints


def _reachable(root: object) -> Iterator[object]:
    """Every object reachable from `root` through data (not through types, modules or functions)."""
    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.CodeType)
    seen: set[int] = set()
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        yield obj
        stack.extend(gc.get_referents(obj))
        if hasattr(obj, "__dict__"):
            stack.append(vars(obj))


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_bundle_holds_no_key_material(tmp_path: Path, kind: str, request: pytest.FixtureRequest) -> None:
    chain: Chain = request.getfixturevalue(f"{kind}_chain")
    data = pfx_cryptography(chain, serialization.NoEncryption())
    bundle = load_certificates(data, "x.pfx")
    for cert in (bundle.leaf, *bundle.chain):  # fill every cached property too
        str(cert.subject), str(cert.issuer), cert.thumbprint, cert.serial
    blobs, ints = _secrets(chain.leaf.key)
    visited = 0
    for obj in _reachable(bundle):
        visited += 1
        assert type(obj) not in _key_types(chain)
        if isinstance(obj, (bytes, bytearray, memoryview)):
            raw = bytes(obj)
            assert not any(blob in raw for blob in blobs)
        elif isinstance(obj, str):
            assert not any(format(n, "X") in obj.upper() or str(n) in obj for n in ints)
        elif isinstance(obj, int) and not isinstance(obj, bool):
            assert obj not in ints
    assert visited > 20  # the walk really went into the certificates
    text = repr(bundle)
    for blob in blobs:
        assert repr(blob)[12:60] not in text
        assert blob.hex()[:32] not in text.lower()
        assert base64.b64encode(blob).decode()[:32] not in text
    for n in ints:
        assert str(n) not in text
        assert format(n, "x") not in text.lower()


# --------------------------------------------------------------------------------------------------
# Fields


def test_thumbprint(tmp_path: Path, chain: Chain) -> None:
    bundle = load_certificate_file(write(tmp_path, "b.pem", pem_of(chain.members)))
    for got, want in zip(ders(bundle), chain.members, strict=True):
        assert got == want.der
    for cert, want in zip([bundle.leaf, *bundle.chain], chain.members, strict=True):
        expected = hashlib.sha1(want.der).hexdigest().upper()
        assert cert.thumbprint == expected
        assert cert.thumbprint == want.cert.fingerprint(hashes.SHA1()).hex().upper()
        write(tmp_path, "one.pem", want.pem)
        out = openssl("x509", "-in", "one.pem", "-noout", "-fingerprint", "-sha1", cwd=tmp_path).decode()
        assert cert.thumbprint == out.strip().split("=", 1)[1].replace(":", "")
        assert re.fullmatch(r"[0-9A-F]{40}", cert.thumbprint)


def _encoded_serial(n: int) -> str:
    """Upper-case hex of the content octets of a DER INTEGER holding the positive `n` (X.690 8.3)."""
    return n.to_bytes(n.bit_length() // 8 + 1, "big").hex().upper()


@pytest.mark.parametrize(
    "serial",
    [
        1,
        0x7F,
        0x80,
        0xFF,
        0x0100,
        0x80112233,
        0x8000,
        (1 << 151) | 0x1234,  # 19 bytes, high bit set: 20 encoded
        (1 << 158) | 0xBEEF,  # 20 bytes, high bit clear
        (1 << 159) - 1,  # the largest serial cryptography will write
    ],
    ids=hex,
)
def test_serial_is_the_encoded_integer_bytes(tmp_path: Path, serial: int) -> None:
    cert = issue("serial.contoso.com", serial=serial, key_ids=False)
    bundle = load_certificates(cert.der, "serial.cer")
    expected = _encoded_serial(serial)
    assert bundle.leaf.serial == expected
    # The same bytes, found in the DER right after the INTEGER tag and length.
    content = bytes.fromhex(expected)
    assert bytes([0x02, len(content)]) + content in cert.der
    assert int(expected, 16) == cert.cert.serial_number
    if serial.bit_length() % 8 == 0:  # high bit set: the leading 00 Windows shows is kept
        assert bundle.leaf.serial.startswith("00")
        assert len(bundle.leaf.serial) == 2 * (serial.bit_length() // 8 + 1)
    else:
        assert not bundle.leaf.serial.startswith("00")


def test_serial_with_high_bit_keeps_leading_zero_concrete() -> None:
    cert = issue("hb.contoso.com", serial=0x80112233)
    assert load_certificates(cert.der, "hb.cer").leaf.serial == "0080112233"


def _time_tlv(when: dt.datetime) -> bytes:
    """The DER encoding RFC 5280 4.1.2.5 requires for `when`."""
    if 1950 <= when.year < 2050:
        return b"\x17\x0d" + when.strftime("%y%m%d%H%M%SZ").encode()
    return b"\x18\x0f" + when.strftime("%Y%m%d%H%M%SZ").encode()


UTC = dt.timezone.utc


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [
        (dt.datetime(1990, 5, 17, 12, 34, 56, tzinfo=UTC), dt.datetime(2051, 2, 3, 4, 5, 6, tzinfo=UTC)),
        (dt.datetime(1950, 1, 1, 0, 0, 0, tzinfo=UTC), dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)),
        (dt.datetime(1969, 7, 20, 20, 17, 40, tzinfo=UTC), dt.datetime(2050, 1, 1, 0, 0, 0, tzinfo=UTC)),
        (dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), dt.datetime(2000, 1, 1, 0, 0, 0, tzinfo=UTC)),
        (dt.datetime(2025, 2, 28, 8, 0, 0, tzinfo=UTC), dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
    ids=["utc19xx-gen2051", "utc1950-utc2049", "utc1969-gen2050", "y2k", "gen9999"],
)
def test_dates(not_before: dt.datetime, not_after: dt.datetime) -> None:
    cert = issue("dates.contoso.com", not_before=not_before, not_after=not_after)
    assert _time_tlv(not_before) in cert.der and _time_tlv(not_after) in cert.der  # the encodings under test
    loaded = load_certificates(cert.der, "dates.cer").leaf
    assert loaded.not_before == cert.cert.not_valid_before_utc == not_before
    assert loaded.not_after == cert.cert.not_valid_after_utc == not_after
    for stamp in (loaded.not_before, loaded.not_after):
        assert stamp.tzinfo is not None and stamp.utcoffset() == dt.timedelta(0)


def test_dates_of_a_chain(chain: Chain) -> None:
    bundle = load_certificates(pem_of(chain.members), "b.pem")
    for got, want in zip([bundle.leaf, *bundle.chain], chain.members, strict=True):
        assert got.not_before == want.cert.not_valid_before_utc
        assert got.not_after == want.cert.not_valid_after_utc


def _san_dns(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.DNSName)


def test_dns_names(chain: Chain) -> None:
    bundle = load_certificates(pem_of(chain.members), "b.pem")
    assert list(bundle.leaf.dns_names) == _san_dns(chain.leaf.cert)
    assert len(bundle.leaf.dns_names) == 2
    for ca in bundle.chain:
        assert ca.dns_names == ()


def test_dns_names_skip_other_general_names_and_keep_order() -> None:
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    names = [
        x509.RFC822Name("postmaster@contoso.com"),
        x509.DNSName("smtp.contoso.com"),
        x509.IPAddress(ipaddress.ip_address("192.0.2.10")),
        x509.DNSName("*.contoso.com"),
        x509.UniformResourceIdentifier("https://contoso.com/"),
        x509.DNSName("autodiscover.contoso.com"),
    ]
    subject = make_name("smtp.contoso.com")
    now = dt.datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    loaded = load_certificates(cert.public_bytes(serialization.Encoding.DER), "san.cer").leaf
    assert list(loaded.dns_names) == _san_dns(cert) == ["smtp.contoso.com", "*.contoso.com", "autodiscover.contoso.com"]


def test_no_san_means_no_dns_names() -> None:
    cert = issue("nosan.contoso.com", dns_names=())
    assert _san_dns(cert.cert) == []
    assert load_certificates(cert.der, "nosan.cer").leaf.dns_names == ()


def test_key_ids_and_ca_flag(rsa_chain: Chain) -> None:
    bundle = load_certificates(pem_of(rsa_chain.members), "b.pem")
    for got, want in zip([bundle.leaf, *bundle.chain], rsa_chain.members, strict=True):
        ext = want.cert.extensions
        assert got.subject_key_id == ext.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        assert got.is_ca == ext.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (
        bundle.leaf.authority_key_id
        == rsa_chain.intermediate.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    )
    assert [bundle.leaf.is_ca, *(c.is_ca for c in bundle.chain)] == [False, True, True]


# --------------------------------------------------------------------------------------------------
# De-duplication


def test_duplicated_certificates_in_pem_are_deduplicated(tmp_path: Path, rsa_chain: Chain) -> None:
    root, inter, leaf = rsa_chain.root, rsa_chain.intermediate, rsa_chain.leaf
    path = write(tmp_path, "dups.pem", pem_of([leaf, inter, root, inter, leaf, root, root]))
    assert_chain(load_certificate_file(path), rsa_chain)


def test_a_single_certificate_repeated(tmp_path: Path, ec_chain: Chain) -> None:
    bundle = load_certificate_file(write(tmp_path, "twice.pem", pem_of([ec_chain.leaf] * 3)))
    assert bundle.leaf.der == ec_chain.leaf.der
    assert bundle.chain == () and bundle.extras == ()


def test_duplicated_certificates_in_pfx_are_deduplicated(tmp_path: Path, ec_chain: Chain) -> None:
    data = pkcs12.serialize_key_and_certificates(
        b"x",
        ec_chain.leaf.key,
        ec_chain.leaf.cert,
        [ec_chain.leaf.cert, ec_chain.intermediate.cert, ec_chain.root.cert, ec_chain.intermediate.cert],
        serialization.NoEncryption(),
    )
    assert_chain(load_certificate_file(write(tmp_path, "dups.pfx", data)), ec_chain)


def test_duplicated_certificates_in_pkcs7_are_deduplicated(tmp_path: Path, ec_chain: Chain) -> None:
    members = [ec_chain.root, ec_chain.leaf, ec_chain.root, ec_chain.intermediate, ec_chain.leaf]
    data = pkcs7.serialize_certificates([m.cert for m in members], serialization.Encoding.DER)
    assert data.count(ec_chain.root.der) == 2  # the duplicates really are in the file
    assert_chain(load_certificate_file(write(tmp_path, "dups.p7b", data)), ec_chain)


# --------------------------------------------------------------------------------------------------
# Errors: every message names the file, is one line, and says what to do


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope" / "mail.pfx")
    expect_error(lambda: load_certificate_file(path), path, "no such file")


def test_directory(tmp_path: Path) -> None:
    expect_error(lambda: load_certificate_file(str(tmp_path)), str(tmp_path), "directory")


def test_unreadable_file(tmp_path: Path) -> None:
    """A path open() refuses even to root (tests run as root in CI, where chmod 0 would not stop it)."""
    path = str(tmp_path / "cert.sock")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        expect_error(lambda: load_certificate_file(path), path, "cannot be read", "a file you can read")


@pytest.mark.parametrize("content", [b"", b"   \n\r\n\t  "], ids=["zero-bytes", "whitespace"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    path = write(tmp_path, "empty.pem", content)
    expect_error(lambda: load_certificate_file(path), path, "empty")


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("start", [b"", b"\x30\x82"], ids=["random", "sequence-header"])
def test_random_bytes(tmp_path: Path, seed: int, start: bytes) -> None:
    data = start + random.Random(seed).randbytes(3000)
    if not start:
        data = bytes([data[0] | 0x80]) + data[1:]  # surely not 0x30, and not text
    path = write(tmp_path, "random.bin", data)
    expect_error(lambda: load_certificate_file(path), path)


@pytest.mark.parametrize(
    "text",
    [
        b"Hello, this is the certificate you asked for!\n",
        b"this is not a certificate\n",
        b'{"kid": "https://vault.azure.net/secrets/mail", "value": null}\n',
        b"subject=CN = mail.contoso.com\nissuer=CN = Contoso Issuing CA 1\n",
        b"-----BEGIN CERTIFICATE-----\n",
    ],
    ids=["sentence", "base64-alphabet-words", "json", "openssl-text", "begin-without-end"],
)
def test_text_that_is_not_pem(tmp_path: Path, text: bytes) -> None:
    path = write(tmp_path, "notes.txt", text)
    expect_error(lambda: load_certificate_file(path), path)


def test_pem_with_only_a_certificate_request(tmp_path: Path, ec_chain: Chain) -> None:
    write(tmp_path, "key.pem", ec_chain.leaf.key_pem)
    csr = openssl("req", "-new", "-key", "key.pem", "-subj", "/CN=mail.contoso.com", cwd=tmp_path)
    assert csr.startswith(b"-----BEGIN CERTIFICATE REQUEST-----")
    path = write(tmp_path, "mail.csr", csr)
    expect_error(lambda: load_certificate_file(path), path, "holds no certificate (found CERTIFICATE REQUEST)")


def test_pem_with_only_a_private_key(tmp_path: Path, ec_chain: Chain) -> None:
    path = write(tmp_path, "mail.key", ec_chain.leaf.key_pem)
    message = expect_error(lambda: load_certificate_file(path), path, "holds no certificate (found PRIVATE KEY)")
    body = b"".join(ec_chain.leaf.key_pem.splitlines()[1:-1]).decode()
    assert body[:20] not in message


def test_pem_with_a_request_and_a_key(tmp_path: Path, ec_chain: Chain) -> None:
    key = ec_chain.leaf.key
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(make_name("mail.contoso.com"))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    path = write(tmp_path, "both.pem", ec_chain.leaf.key_pem + csr)
    expect_error(
        lambda: load_certificate_file(path), path, "holds no certificate (found PRIVATE KEY, CERTIFICATE REQUEST)"
    )


def _pem_body_lines(pem: bytes) -> list[bytes]:
    return pem.splitlines()[1:-1]


@pytest.mark.parametrize("damage", ["bad-character", "bad-padding", "missing-line", "flipped-byte"])
def test_corrupted_certificate_block(tmp_path: Path, rsa_chain: Chain, damage: str) -> None:
    lines = _pem_body_lines(rsa_chain.leaf.pem)
    if damage == "bad-character":
        lines[3] = lines[3][:10] + b"*" + lines[3][11:]
    elif damage == "bad-padding":
        lines[-1] = lines[-1].rstrip(b"=")[:-1]
    elif damage == "missing-line":
        del lines[5]
    else:
        der = bytearray(rsa_chain.leaf.der)
        der[1] ^= 0x01  # the outer length no longer matches
        encoded = base64.b64encode(bytes(der))
        lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    pem = b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"
    # Checked independently: openssl's parser (through cryptography) refuses the block too.
    with pytest.raises(ValueError):
        x509.load_pem_x509_certificate(pem)
    path = write(tmp_path, "broken.pem", pem_of([rsa_chain.root, pem, rsa_chain.intermediate]))
    expect_error(lambda: load_certificate_file(path), path)


@pytest.mark.parametrize("keep", [3, 100, -1], ids=["3-bytes", "100-bytes", "all-but-one"])
def test_truncated_der(tmp_path: Path, rsa_chain: Chain, keep: int) -> None:
    data = rsa_chain.leaf.der[:keep]
    path = write(tmp_path, "cut.cer", data)
    expect_error(lambda: load_certificate_file(path), path)


def test_der_with_trailing_bytes(tmp_path: Path, ec_chain: Chain) -> None:
    path = write(tmp_path, "tail.cer", ec_chain.leaf.der + b"\x00\x00junk")
    expect_error(lambda: load_certificate_file(path), path)


def test_truncated_pfx(tmp_path: Path, ec_chain: Chain) -> None:
    data = pfx_cryptography(ec_chain, serialization.NoEncryption())
    path = write(tmp_path, "cut.pfx", data[: len(data) // 2])
    expect_error(lambda: load_certificate_file(path), path)


@pytest.mark.parametrize("fmt", ["pkcs8", "traditional"])
def test_der_private_key_is_not_called_a_password_protected_pfx(tmp_path: Path, ec_chain: Chain, fmt: str) -> None:
    """A DER key (SEQUENCE { INTEGER version, ... }) is not a PKCS#12 file (whose version is always 3)."""
    form = serialization.PrivateFormat.PKCS8 if fmt == "pkcs8" else serialization.PrivateFormat.TraditionalOpenSSL
    data = ec_chain.leaf.key.private_bytes(serialization.Encoding.DER, form, serialization.NoEncryption())
    path = write(tmp_path, "mail.key", data)
    message = expect_error(lambda: load_certificate_file(path), path)
    assert "password" not in message


@pytest.mark.parametrize("producer", ["openssl-legacy-rc2-3des", "openssl-modern-aes"])
def test_pfx_with_password_but_none_given(tmp_path: Path, rsa_chain: Chain, producer: str) -> None:
    path = write(tmp_path, "mail.pfx", pfx_openssl(tmp_path, rsa_chain, PASSWORD, *OPENSSL_PFX[producer][0]))
    message = expect_error(lambda: load_certificate_file(path), path, "password-protected", "--password-env")
    assert PASSWORD not in message


@pytest.mark.parametrize("wrong", [b"Hunter2-typo", b"", PASSWORD.upper().encode()], ids=["other", "empty", "case"])
def test_pfx_with_wrong_password(tmp_path: Path, rsa_chain: Chain, wrong: bytes) -> None:
    path = write(tmp_path, "mail.pfx", pfx_openssl(tmp_path, rsa_chain, PASSWORD, "-legacy"))
    message = expect_error(lambda: load_certificate_file(path, password=wrong), path, "wrong password")
    assert PASSWORD not in message
    if wrong:
        assert wrong.decode() not in message


def test_two_unrelated_leaves(tmp_path: Path, rsa_chain: Chain, other_chain: Chain) -> None:
    path = write(tmp_path, "two.pem", pem_of([rsa_chain.leaf, other_chain.leaf]))
    expect_error(
        lambda: load_certificate_file(path),
        path,
        "unrelated end certificates",
        "mail.contoso.com",
        "smtp.northwind.example",
    )


def test_two_leaves_with_their_chains(tmp_path: Path, rsa_chain: Chain, other_chain: Chain) -> None:
    path = write(tmp_path, "two.pem", pem_of([*rsa_chain.members, *other_chain.members]))
    expect_error(lambda: load_certificate_file(path), path, "unrelated end certificates")


def test_two_sibling_leaves(tmp_path: Path, rsa_chain: Chain, sibling: Issued) -> None:
    path = write(tmp_path, "siblings.pem", pem_of([rsa_chain.leaf, rsa_chain.intermediate, sibling]))
    expect_error(lambda: load_certificate_file(path), path, "unrelated end certificates")


def test_an_extra_unrelated_root_goes_to_extras(tmp_path: Path, rsa_chain: Chain, other_chain: Chain) -> None:
    """Someone appended a root that issued nothing here: the end-entity certificate is still the leaf."""
    path = write(tmp_path, "extra-root.pem", pem_of([other_chain.root, *rsa_chain.members]))
    bundle = load_certificate_file(path)
    assert bundle.leaf.der == rsa_chain.leaf.der
    assert [c.der for c in bundle.chain] == [rsa_chain.intermediate.der, rsa_chain.root.der]
    assert [c.der for c in bundle.extras] == [other_chain.root.der]


def test_two_unrelated_cas_alone_are_still_ambiguous(tmp_path: Path, rsa_chain: Chain, other_chain: Chain) -> None:
    path = write(tmp_path, "two-roots.pem", pem_of([rsa_chain.root, other_chain.root]))
    expect_error(lambda: load_certificate_file(path), path, "unrelated end certificates")


def test_two_self_signed_certificates(tmp_path: Path) -> None:
    a, b = issue("a.contoso.com"), issue("b.contoso.com")
    path = write(tmp_path, "selfsigned.pem", pem_of([a, b]))
    expect_error(lambda: load_certificate_file(path), path, "unrelated end certificates")


def test_certificates_that_issued_each_other(tmp_path: Path) -> None:
    """Two CAs cross-issued to each other: every certificate issued another, so there is no leaf."""
    ka, kb = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    x = issue(make_name("CA X"), key=ka, ca=True, key_ids=False, issuer_name=make_name("CA Y"))
    y = issue(make_name("CA Y"), key=kb, ca=True, key_ids=False, issuer_name=make_name("CA X"))
    path = write(tmp_path, "loop.pem", pem_of([x, y]))
    expect_error(lambda: load_certificate_file(path), path, "no leaf")


def test_file_over_10_mib(tmp_path: Path, ec_chain: Chain) -> None:
    pem = ec_chain.leaf.pem
    exact = pem + b"\n" * (10 * MIB - len(pem))
    assert len(exact) == 10 * MIB
    assert load_certificate_file(write(tmp_path, "exact.pem", exact)).leaf.der == ec_chain.leaf.der
    path = write(tmp_path, "big.pem", exact + b"\n")
    expect_error(lambda: load_certificate_file(path), path, "10 MiB")


def test_pkcs7_content_type_other_than_signed_data_is_refused(tmp_path: Path, ec_chain: Chain) -> None:
    """A well-formed certs-only SignedData body labelled with another content type is not read."""
    data = bytearray(p7b_openssl(tmp_path, list(ec_chain.members), "DER"))
    signed_data_oid = b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02"
    at = data.index(signed_data_oid)
    assert at < 6
    data[at + len(signed_data_oid) - 1] = 0x03  # id-envelopedData
    path = write(tmp_path, "relabelled.p7b", bytes(data))
    expect_error(lambda: load_certificate_file(path), path, "PKCS#7", "re-export")


def test_pkcs7_enveloped_data_is_not_a_bundle(tmp_path: Path, ec_chain: Chain) -> None:
    write(tmp_path, "leaf.pem", ec_chain.leaf.pem)
    write(tmp_path, "msg.txt", b"hello")
    data = openssl("cms", "-encrypt", "-in", "msg.txt", "-outform", "DER", "leaf.pem", cwd=tmp_path)
    assert b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x03" in data[:20]  # id-envelopedData
    path = write(tmp_path, "enveloped.p7m", data)
    expect_error(lambda: load_certificate_file(path), path, "PKCS#7", "re-export")


@pytest.mark.parametrize("outform", ["DER", "PEM"])
def test_pkcs7_data_is_not_a_bundle(tmp_path: Path, outform: str) -> None:
    data = openssl("cms", "-data_create", "-outform", outform, cwd=tmp_path, stdin=b"hello")
    if outform == "DER":
        assert data[2:13] == b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x01"  # id-data
    path = write(tmp_path, "data.p7", data)
    expect_error(lambda: load_certificate_file(path), path, "PKCS#7", "re-export")


def test_pkcs7_without_certificates(tmp_path: Path) -> None:
    data = openssl("crl2pkcs7", "-nocrl", "-outform", "DER", cwd=tmp_path)
    path = write(tmp_path, "empty.p7b", data)
    expect_error(lambda: load_certificate_file(path), path, "no certificate")


def test_errors_from_bytes_name_the_source() -> None:
    expect_error(lambda: load_certificates(b"", "keyvault:mail"), "keyvault:mail", "empty")
    expect_error(lambda: load_certificates(b"\x01\x02\x03", "keyvault:mail"), "keyvault:mail")


# --------------------------------------------------------------------------------------------------
# accept_pkcs12=False: a PKCS#12 blob (which carries a private key) is refused without being opened


def test_pkcs12_refused_unopened_when_not_accepted(ec_chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    import shared.x509.pkcs12

    calls: list[object] = []
    monkeypatch.setattr(shared.x509.pkcs12, "read_pkcs12", lambda *args: calls.append(args))
    monkeypatch.setattr(pkcs12, "load_pkcs12", lambda *args: calls.append(args))
    data = pfx_cryptography(ec_chain, serialization.NoEncryption())
    for blob in (data, base64.b64encode(data)):
        expect_error(
            lambda blob=blob: load_certificates(blob, "upload.pfx", accept_pkcs12=False),
            "upload.pfx",
            "PKCS#12",
            "private key",
        )
    assert calls == []


def test_public_containers_still_load_when_pkcs12_is_not_accepted(tmp_path: Path, ec_chain: Chain) -> None:
    for data in (
        pem_of(ec_chain.members),
        ec_chain.leaf.der,
        base64.b64encode(ec_chain.leaf.der),
        p7b_openssl(tmp_path, list(ec_chain.members), "DER"),
    ):
        bundle = load_certificates(data, "upload", accept_pkcs12=False)
        assert bundle.leaf.der == ec_chain.leaf.der
