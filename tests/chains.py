"""Certificate chains for tests, made at test time with `cryptography`.

`build_chain()` returns a root -> intermediate -> leaf chain with the extensions a public CA sets
(basicConstraints, keyUsage, SKI/AKI, and SAN DNS names plus serverAuth on the leaf). `issue()` makes
any single certificate, so a test can add a sibling leaf, an unrelated chain or odd serials and dates.
Every certificate is returned with its private key (`Issued`), so tests can build PFX files from it.
`issue()` also takes the revocation-related extensions (AIA with OCSP/caIssuers URLs, CRL distribution
points, OCSPNoCheck, a chosen EKU or keyUsage) and legacy SHA-1 signatures, and `make_crl()` makes a
CRL for any issuer with `cryptography`'s builder (see `tests.pki.big_crl_der` for very large ones).
`renewal_pki()` makes the R10 -> R11 renewal that the pipeline, reconciliation and function tests act
out, with its CRLs served on loopback; `unprotected_pfx()` packs a leaf, its key and chain as Key Vault
stores them.

`cryptography` 50 refuses to sign with SHA-1 or MD5, so for those `issue()`/`make_crl()` build with
SHA-256 and then re-sign the TBS bytes themselves, rewriting both signature AlgorithmIdentifiers.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.x509 import der
from tests import pki

if TYPE_CHECKING:
    from tests.servers import HttpServer  # tests.servers imports this module

KeyKind = Literal["rsa", "ec", "rsa1024", "rsa4096", "p384", "p521", "secp256k1", "ed25519", "ed448"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey

_RSA_BITS = {"rsa": 2048, "rsa1024": 1024, "rsa4096": 4096}
_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ec": ec.SECP256R1,
    "p384": ec.SECP384R1,
    "p521": ec.SECP521R1,
    "secp256k1": ec.SECP256K1,
}


def new_key(kind: KeyKind = "ec") -> PrivateKey:
    """A fresh private key: "rsa" (2048), "rsa1024", "rsa4096", "ec" (P-256), "p384", "p521",
    "secp256k1", "ed25519" or "ed448"."""
    if kind in _RSA_BITS:
        return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS[kind])
    if kind in _CURVES:
        return ec.generate_private_key(_CURVES[kind]())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "ed448":
        return ed448.Ed448PrivateKey.generate()
    raise ValueError(f"unknown key kind {kind!r}")


# Signature algorithms `cryptography` no longer signs with: (key family, hash name) -> OID.
_LEGACY_SIGNATURES = {
    ("rsa", "sha1"): "1.2.840.113549.1.1.5",
    ("rsa", "md5"): "1.2.840.113549.1.1.4",
    ("ec", "sha1"): "1.2.840.10045.4.1",
}


def _is_legacy(hash_algorithm: hashes.HashAlgorithm | None) -> bool:
    return hash_algorithm is not None and hash_algorithm.name in ("sha1", "md5")


def _resign(signed: bytes, key: PrivateKey, hash_algorithm: hashes.HashAlgorithm) -> bytes:
    """Re-sign a certificate or CRL (DER) with a hash `cryptography` refuses (SHA-1, MD5): both
    AlgorithmIdentifiers (the TBS one and the outer one) are rewritten and the TBS is signed again."""
    if isinstance(key, rsa.RSAPrivateKey):
        family = "rsa"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        family = "ec"
    else:
        raise ValueError(f"{hash_algorithm.name} signatures need an RSA or EC key")
    algorithm_oid = _LEGACY_SIGNATURES.get((family, hash_algorithm.name))
    if algorithm_oid is None:
        raise ValueError(f"no {hash_algorithm.name} signature algorithm for {family} keys")
    algorithm = pki.seq(pki.oid(algorithm_oid), pki.tlv(0x05, b"") if family == "rsa" else b"")
    tbs_tlv, old_algorithm_tlv, _ = der.children(signed, der.read_tlv(signed, 0))
    old_algorithm = der.whole(signed, old_algorithm_tlv)
    parts = [der.whole(signed, child) for child in der.children(signed, tbs_tlv)]
    parts[parts.index(old_algorithm)] = algorithm  # the TBS copy of the algorithm (first match)
    tbs = pki.seq(*parts)
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(tbs, padding.PKCS1v15(), hash_algorithm)
    else:
        signature = key.sign(tbs, ec.ECDSA(hash_algorithm))
    return pki.seq(tbs, algorithm, pki.tlv(der.BIT_STRING, b"\x00" + signature))


def _signing_hash(key: PrivateKey, hash_algorithm: hashes.HashAlgorithm | None) -> hashes.HashAlgorithm | None:
    """`None` means the default: SHA-256, or no separate hash for an Ed25519/Ed448 key."""
    if hash_algorithm is None and not isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return hashes.SHA256()
    return hash_algorithm


_KEY_USAGE_FLAGS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


def key_usage_of(**flags: bool) -> x509.KeyUsage:
    """A KeyUsage with the named flags set and every other one clear."""
    return x509.KeyUsage(**(dict.fromkeys(_KEY_USAGE_FLAGS, False) | flags))


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
    ip_addresses: Sequence[str] = (),
    serial: int | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    key_ids: bool = True,
    issuer_name: x509.Name | None = None,
    ocsp_urls: Sequence[str] = (),
    ca_issuers_urls: Sequence[str] = (),
    crl_urls: Sequence[str] = (),
    eku: Sequence[x509.ObjectIdentifier] | None = None,
    ocsp_no_check: bool = False,
    key_usage: dict[str, bool] | Literal[False] | None = None,
    hash_algorithm: hashes.HashAlgorithm | None = None,
) -> Issued:
    """Issue one certificate.

    `subject` is a Name, or a string taken as the CN of `make_name(cn, "Contoso")`. With no `issuer`
    the certificate is self-signed. `key` defaults to a new key of `kind`. Datetimes must be UTC
    (naive ones are read as UTC by `cryptography`); defaults are yesterday and a year (ten for a CA)
    from now. `key_ids=False` leaves out SKI and AKI. `issuer_name` overrides the issuer Name written
    into the certificate (for chains that are deliberately broken). `dns_names` and `ip_addresses`
    make the subjectAltName.

    Revocation and usage options (all non-critical except keyUsage):
    `ocsp_urls` / `ca_issuers_urls` make an AuthorityInformationAccess extension (OCSP entries first);
    `crl_urls` make CRLDistributionPoints, one DistributionPoint with a full_name URI per URL;
    `eku=None` keeps the default (serverAuth on a non-CA certificate, none on a CA), `eku=()` leaves
    the extension out, anything else is written exactly (on a CA too); `ocsp_no_check` adds
    id-pkix-ocsp-nocheck; `key_usage` replaces the default keyUsage flags with the named ones set
    (e.g. `{"digital_signature": True}`), or `False` leaves keyUsage out entirely.
    `hash_algorithm=None` signs with SHA-256 (no separate hash for an Ed25519/Ed448 issuer key);
    `hashes.SHA1()` gives a real sha1WithRSAEncryption / ecdsa-with-SHA1 signature.
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
    if key_usage is not None:
        usage = dict(key_usage or {})
    elif ca:
        usage = {"key_cert_sign": True, "crl_sign": True, "digital_signature": True}
    else:
        usage = {"digital_signature": True, "key_encipherment": isinstance(key, rsa.RSAPrivateKey)}
    if key_usage is not False:
        builder = builder.add_extension(key_usage_of(**usage), critical=True)
    if key_ids:
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        if issuer is not None:
            ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
            )
    if dns_names or ip_addresses:
        alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        alt_names += [x509.IPAddress(ipaddress.ip_address(address)) for address in ip_addresses]
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    usages = ([] if ca else [ExtendedKeyUsageOID.SERVER_AUTH]) if eku is None else list(eku)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if ocsp_urls or ca_issuers_urls:
        access = [
            x509.AccessDescription(x509.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(url))
            for url in ocsp_urls
        ] + [
            x509.AccessDescription(x509.AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(url))
            for url in ca_issuers_urls
        ]
        builder = builder.add_extension(x509.AuthorityInformationAccess(access), critical=False)
    if crl_urls:
        points = [x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None) for url in crl_urls]
        builder = builder.add_extension(x509.CRLDistributionPoints(points), critical=False)
    if ocsp_no_check:
        builder = builder.add_extension(x509.OCSPNoCheck(), critical=False)
    hash_algorithm = _signing_hash(signer_key, hash_algorithm)
    if _is_legacy(hash_algorithm):
        assert hash_algorithm is not None
        signed = builder.sign(signer_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
        return Issued(x509.load_der_x509_certificate(_resign(signed, signer_key, hash_algorithm)), key)
    return Issued(builder.sign(signer_key, hash_algorithm), key)


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
    leaf_options: dict[str, Any] | None = None,
    intermediate_options: dict[str, Any] | None = None,
    root_options: dict[str, Any] | None = None,
) -> Chain:
    """A three-certificate chain; all keys are `kind` (see `new_key`).

    The CA names carry `organization`, so two chains built with different organizations are
    unrelated. The leaf's CN defaults to its first DNS name. `leaf_options`, `intermediate_options`
    and `root_options` are extra `issue()` keywords for that certificate (they win over the ones
    set here), e.g. `build_chain("rsa", leaf_options={"crl_urls": [url]})`."""
    root = issue(
        make_name(f"{organization} Root CA", organization),
        **{"kind": kind, "ca": True, "path_length": 1} | (root_options or {}),
    )
    intermediate = issue(
        make_name(f"{organization} Issuing CA 1", organization),
        **{"issuer": root, "kind": kind, "ca": True, "path_length": 0} | (intermediate_options or {}),
    )
    leaf = issue(
        make_name(leaf_cn or (dns_names[0] if dns_names else "server"), organization),
        **{
            "issuer": intermediate,
            "kind": kind,
            "dns_names": dns_names,
            "serial": leaf_serial,
            "not_before": leaf_not_before,
            "not_after": leaf_not_after,
        }
        | (leaf_options or {}),
    )
    return Chain(root, intermediate, leaf)


RevokedEntry = tuple[int, x509.ReasonFlags | None, dt.datetime]


def make_crl(
    issuer: Issued,
    revoked: Sequence[RevokedEntry] = (),
    *,
    this_update: dt.datetime | None = None,
    next_update: dt.datetime | None = None,
    number: int | None = 1,
    number_critical: bool = False,
    idp_url: str | None = None,
    hash_algorithm: hashes.HashAlgorithm | None = None,
    signer_key: PrivateKey | None = None,
    issuer_name: x509.Name | None = None,
    key_ids: bool = True,
) -> bytes:
    """A v2 CRL (DER) from `issuer`, built with `cryptography`'s CertificateRevocationListBuilder.

    `revoked` holds (serial, reason or None for no reasonCode, revocation date). `this_update`
    defaults to an hour ago and `next_update` to `this_update` + 7 days. `number=None` leaves out
    CRLNumber; `number_critical` marks it critical (a test of unknown-critical handling). `idp_url`
    adds a critical IssuingDistributionPoint with that full_name URI. The CRL carries the issuer's
    SKI as its AKI unless `key_ids=False` (or the issuer has no SKI). `signer_key` signs with another
    key ("signed by the wrong key"); `issuer_name` overrides the issuer Name written into the CRL.
    `hash_algorithm` works as in `issue()` (SHA-1 is re-signed by hand)."""
    this_update = this_update or _now() - dt.timedelta(hours=1)
    next_update = next_update or this_update + dt.timedelta(days=7)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_name or issuer.cert.subject)
        .last_update(this_update)
        .next_update(next_update)
    )
    for serial, reason, revoked_at in revoked:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(revoked_at)
        if reason is not None:
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    if number is not None:
        builder = builder.add_extension(x509.CRLNumber(number), critical=number_critical)
    if key_ids:
        try:
            ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            pass
        else:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
            )
    if idp_url is not None:
        idp = x509.IssuingDistributionPoint(
            full_name=[x509.UniformResourceIdentifier(idp_url)],
            relative_name=None,
            only_contains_user_certs=False,
            only_contains_ca_certs=False,
            only_some_reasons=None,
            indirect_crl=False,
            only_contains_attribute_certs=False,
        )
        builder = builder.add_extension(idp, critical=True)
    key = signer_key or issuer.key
    hash_algorithm = _signing_hash(key, hash_algorithm)
    if _is_legacy(hash_algorithm):
        assert hash_algorithm is not None
        return _resign(builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER), key, hash_algorithm)
    return builder.sign(key, hash_algorithm).public_bytes(serialization.Encoding.DER)


def pem_of(items: Iterable[Issued | bytes]) -> bytes:
    """The PEM certificates of `items` concatenated in the order given; bytes are inserted as they are."""
    return b"".join(item if isinstance(item, bytes) else item.pem for item in items)


def pfx_openssl(directory: Path, chain: Chain, password: str | bytes, *options: str) -> bytes:
    """`openssl pkcs12 -export` of the chain's leaf and key with its intermediate and root (friendly
    name "Exchange"); `options` are extra export options, e.g. `-legacy`. Files are written to `directory`."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "the openssl CLI is missing: `make test` installs it (Debian package openssl)"
    (directory / "leaf.pem").write_bytes(chain.leaf.pem)
    (directory / "key.pem").write_bytes(chain.leaf.key_pem)
    (directory / "ca.pem").write_bytes(pem_of([chain.intermediate, chain.root]))
    passout = b"pass:" + password if isinstance(password, bytes) else f"pass:{password}"
    args = ["pkcs12", "-export", "-in", "leaf.pem", "-inkey", "key.pem", "-certfile", "ca.pem"]
    args += ["-name", "Exchange", "-passout", passout, "-out", "x.pfx", *options]
    proc = subprocess.run([openssl, *args], cwd=directory, capture_output=True, check=False)
    assert proc.returncode == 0, f"openssl {args}: {proc.stderr.decode(errors='replace')}"
    return (directory / "x.pfx").read_bytes()


# --- the renewal the pipeline tests act out -----------------------------------------------------

MAIL_HOSTS = ["mail.contoso.com", "autodiscover.contoso.com"]


@dataclass
class RenewalPki:
    """A renewal that changes the issuing intermediate: root "Contoso Demo Root" issues R10 (`inter_a`,
    the old issuer) and R11 (`inter_b`, the new one), all EC. Each CA's CRL is on `server` at /root.crl,
    /R10.crl and /R11.crl, and named in the certificates it issues, so revocation checks pass. Test
    fixtures extend it with their leaves and folders (a dataclass: `Fixture(**vars(pki), ...)`)."""

    root: Issued
    inter_a: Issued
    inter_b: Issued
    server: HttpServer

    def leaf(self, inter: Issued, **options: Any) -> Issued:
        """A mail.contoso.com server certificate from `inter` (SANs `MAIL_HOSTS`, serverAuth and
        clientAuth, `inter`'s CRL); `options` are extra `issue()` keywords, e.g. `not_after`."""
        return issue(
            make_name("mail.contoso.com"),
            issuer=inter,
            kind="ec",
            dns_names=MAIL_HOSTS,
            eku=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            crl_urls=[self.server.url(f"/{inter.subject_cn}.crl")],
            **options,
        )


def renewal_pki(server: HttpServer, *, crl_next_update: dt.datetime | None = None) -> RenewalPki:
    """The CAs of the renewal, their CRLs routed on `server` (valid for 7 days, or until `crl_next_update`
    for tests whose clock runs ahead)."""
    root = issue(make_name("Contoso Demo Root", "Contoso"), kind="ec", ca=True, path_length=1)
    server.route("/root.crl", body=make_crl(root, next_update=crl_next_update))
    intermediates = []
    for cn in ("R10", "R11"):
        inter = issue(
            make_name(cn, "Contoso"), issuer=root, kind="ec", ca=True, path_length=0, crl_urls=[server.url("/root.crl")]
        )
        server.route(f"/{cn}.crl", body=make_crl(inter, next_update=crl_next_update))
        intermediates.append(inter)
    return RenewalPki(root, intermediates[0], intermediates[1], server)


def unprotected_pfx(leaf: Issued, *chain: Issued) -> bytes:
    """`leaf`'s key and certificate with `chain` as a PFX without a password, as Key Vault holds one."""
    return pkcs12.serialize_key_and_certificates(
        b"", leaf.key, leaf.cert, [c.cert for c in chain], serialization.NoEncryption()
    )
