"""Regenerates examples/: a renewal in which the issuing intermediate rotated (R10 -> R11).

The certificates are synthetic (a demo root signs both intermediates); only public certificates are
written, and every key lives in memory for the length of this script. Run:
    .venv/bin/python scripts/make_examples.py
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

OUT = Path(__file__).resolve().parent.parent / "examples"
UTC = dt.timezone.utc


def _name(**attrs: str) -> x509.Name:
    oids = {"C": NameOID.COUNTRY_NAME, "O": NameOID.ORGANIZATION_NAME, "CN": NameOID.COMMON_NAME}
    return x509.Name([x509.NameAttribute(oids[k], v) for k, v in attrs.items()])


def _key_usage(ca: bool) -> x509.KeyUsage:
    flags = dict.fromkeys(
        [
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "encipher_only",
            "decipher_only",
        ],
        False,
    )
    return x509.KeyUsage(digital_signature=True, key_cert_sign=ca, crl_sign=ca, **flags)


def _issue(subject, issuer, key, issuer_key, start, days, *, ca, dns=(), path_length=0):  # noqa: ANN001
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
        .add_extension(_key_usage(ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def main() -> None:
    root_key = ec.generate_private_key(ec.SECP384R1())
    root_name = _name(C="US", O="certsync demo", CN="certsync Demo Root X1")
    root = _issue(
        root_name, root_name, root_key, root_key, dt.datetime(2024, 1, 1, tzinfo=UTC), 3650, ca=True, path_length=None
    )
    (OUT / "demo-root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))  # for `check --trust`
    versions = [
        (
            "mail-2026-08.pem",
            "R10",
            dt.datetime(2026, 8, 28, tzinfo=UTC),
            ["mail.contoso.com", "autodiscover.contoso.com"],
        ),
        (
            "mail-2026-11.pem",
            "R11",
            dt.datetime(2026, 11, 20, tzinfo=UTC),
            ["mail.contoso.com", "autodiscover.contoso.com", "smtp.contoso.com"],
        ),
    ]
    for filename, ca_cn, start, dns in versions:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = _name(C="US", O="Let's Encrypt", CN=ca_cn)
        ca = _issue(ca_name, root_name, ca_key, root_key, dt.datetime(2024, 3, 13, tzinfo=UTC), 1095, ca=True)
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        leaf = _issue(_name(CN=dns[0]), ca_name, leaf_key, ca_key, start, 90, ca=False, dns=dns)
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, ca, root))
        (OUT / filename).write_bytes(pem)
        print(f"wrote examples/{filename}")


if __name__ == "__main__":
    main()
