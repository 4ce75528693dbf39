"""Certificate chains for tests, made at test time with `cryptography`.

`build_chain()` returns a root -> intermediate -> leaf chain with the extensions a public CA sets
(basicConstraints, keyUsage, SKI/AKI, and SAN DNS names plus serverAuth on the leaf). `issue()` makes
any single certificate, so a test can add a sibling leaf, an unrelated chain or odd serials and dates.
Every certificate is returned with its private key (`Issued`), so tests can build PFX files from it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyKind = Literal["rsa", "ec"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def new_key(kind: KeyKind = "ec") -> PrivateKey:
    """A fresh RSA-2048 or P-256 private key."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def make_name(common_name: str, organization: str | None = None, country: str | None = "US") -> x509.Name:
    """A Name encoded as C, O, CN (the order public CAs use; Windows prints it CN first)."""
    attributes = []
    if country:
        attributes.append(x509.NameAttribute(NameOID.COUNTRY_NAME, country))
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


@dataclass(frozen=True)
class Issued:
    """A certificate and the private key of its subject."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        """The private key as an unencrypted PKCS#8 `PRIVATE KEY` PEM block."""
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def subject_cn(self) -> str:
        return str(self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def issue(
    subject: x509.Name | str,
    *,
    issuer: Issued | None = None,
    key: PrivateKey | None = None,
    kind: KeyKind = "ec",
    ca: bool = False,
    path_length: int | None = None,
    dns_names: Sequence[str] = (),
    serial: int | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    key_ids: bool = True,
    issuer_name: x509.Name | None = None,
) -> Issued:
    """Issue one certificate.

    `subject` is a Name, or a string taken as the CN of `make_name(cn, "Contoso")`. With no `issuer`
    the certificate is self-signed. `key` defaults to a new key of `kind`. Datetimes must be UTC
    (naive ones are read as UTC by `cryptography`); defaults are yesterday and a year (ten for a CA)
    from now. `key_ids=False` leaves out SKI and AKI. `issuer_name` overrides the issuer Name written
    into the certificate (for chains that are deliberately broken).
    """
    name = make_name(subject, "Contoso") if isinstance(subject, str) else subject
    key = key or new_key(kind)
    signer_key = issuer.key if issuer else key
    now = _now()
    not_before = not_before or now - dt.timedelta(days=1)
    not_after = not_after or now + dt.timedelta(days=3650 if ca else 365)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name or (issuer.cert.subject if issuer else name))
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
    )
    if ca:
        usage = {"key_cert_sign": True, "crl_sign": True, "digital_signature": True}
    else:
        usage = {"digital_signature": True, "key_encipherment": isinstance(key, rsa.RSAPrivateKey)}
    flags = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    builder = builder.add_extension(x509.KeyUsage(**(flags | usage)), critical=True)
    if key_ids:
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        if issuer is not None:
            ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
            )
    if dns_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False
        )
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return Issued(builder.sign(signer_key, hashes.SHA256()), key)


@dataclass(frozen=True)
class Chain:
    """root -> intermediate -> leaf."""

    root: Issued
    intermediate: Issued
    leaf: Issued

    @property
    def members(self) -> tuple[Issued, Issued, Issued]:
        """Leaf first, then towards the root: the order a loader's (leaf, *chain) should come out in."""
        return (self.leaf, self.intermediate, self.root)


def build_chain(
    kind: KeyKind = "ec",
    *,
    organization: str = "Contoso",
    dns_names: Sequence[str] = ("mail.contoso.com", "autodiscover.contoso.com"),
    leaf_cn: str | None = None,
    leaf_serial: int | None = None,
    leaf_not_before: dt.datetime | None = None,
    leaf_not_after: dt.datetime | None = None,
) -> Chain:
    """A three-certificate chain; all keys are `kind` (RSA-2048 or P-256).

    The CA names carry `organization`, so two chains built with different organizations are
    unrelated. The leaf's CN defaults to its first DNS name."""
    root = issue(make_name(f"{organization} Root CA", organization), kind=kind, ca=True, path_length=1)
    intermediate = issue(
        make_name(f"{organization} Issuing CA 1", organization), issuer=root, kind=kind, ca=True, path_length=0
    )
    leaf = issue(
        make_name(leaf_cn or (dns_names[0] if dns_names else "server"), organization),
        issuer=intermediate,
        kind=kind,
        dns_names=dns_names,
        serial=leaf_serial,
        not_before=leaf_not_before,
        not_after=leaf_not_after,
    )
    return Chain(root, intermediate, leaf)


def pem_of(items: Iterable[Issued | bytes]) -> bytes:
    """The PEM certificates of `items` concatenated in the order given; bytes are inserted as they are."""
    return b"".join(item if isinstance(item, bytes) else item.pem for item in items)
