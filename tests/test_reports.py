"""The `name`, `diff` and `parse` reports (`shared.x509.reports`) in-process, and the renewal diff behind
them; tests/test_cli.py runs the same reports through the CLI. Also `verify_signature` for the key families
the CRL and OCSP tests do not use."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519

from shared.x509.certificate import Certificate, CertificateBundle
from shared.x509.reports import diff_report, name_report, parse_report, powershell_literal
from shared.x509.signatures import verify_signature
from shared.x509.tls_certificate_name import TlsCertificateName
from tests.chains import Issued, issue, make_name

NOT_BEFORE = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
NOT_AFTER = dt.datetime(2027, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
VALUE = "<I>CN=Contoso Issuing CA, O=Contoso, C=US<S>CN=mail.contoso.com, O=Contoso, C=US"


@pytest.fixture(scope="module")
def ca() -> Issued:
    return issue(make_name("Contoso Issuing CA", "Contoso"), ca=True)


def leaf(issuer: Issued, cn: str = "mail.contoso.com", *dns: str) -> Certificate:
    issued = issue(
        make_name(cn, "Contoso"),
        issuer=issuer,
        dns_names=dns or (cn,),
        not_before=NOT_BEFORE,
        not_after=NOT_AFTER,
    )
    return Certificate.from_der(issued.der, cn)


def bundle(cert: Certificate, *chain: Issued) -> CertificateBundle:
    return CertificateBundle(cert, tuple(Certificate.from_der(c.der, "chain") for c in chain))


def test_name_report(ca):
    cert = leaf(ca, "mail.contoso.com", "mail.contoso.com", "autodiscover.contoso.com")
    report = name_report(bundle(cert, ca))
    assert (
        report["tls_certificate_name"]
        == "<I>CN=Contoso Issuing CA, O=Contoso, C=US<S>CN=mail.contoso.com, O=Contoso, C=US"
    )
    assert (report["not_before"], report["not_after"]) == ("2026-01-02T03:04:05Z", "2027-01-02T03:04:05Z")
    assert report["dns_names"] == ["mail.contoso.com", "autodiscover.contoso.com"]
    assert report["exchange_accepts"] is True and report["problems"] == []
    assert report["chain"] == [
        {"subject": "CN=Contoso Issuing CA, O=Contoso, C=US", "thumbprint": bundle(cert, ca).chain[0].thumbprint}
    ]
    assert report["powershell_literal"] == "'" + report["tls_certificate_name"] + "'"


def test_powershell_literal_doubles_every_single_quote_powershell_knows():
    assert powershell_literal("O'Brien \u2019s") == "'O''Brien \u2019\u2019s'"


@pytest.mark.parametrize(
    ("new_issuer", "new_cn", "change"),
    [
        ("Contoso Issuing CA", "mail.contoso.com", "unchanged"),
        ("Contoso Issuing CA 2", "mail.contoso.com", "issuer_changed"),
        ("Contoso Issuing CA", "smtp.contoso.com", "subject_changed"),
        ("Contoso Issuing CA 2", "smtp.contoso.com", "issuer_and_subject_changed"),
    ],
)
def test_diff_report(ca, new_issuer, new_cn, change):
    old = leaf(ca, "mail.contoso.com", "mail.contoso.com", "old.contoso.com")
    issuer = ca if new_issuer == "Contoso Issuing CA" else issue(make_name(new_issuer, "Contoso"), ca=True)
    new = leaf(issuer, new_cn, new_cn, "MAIL.contoso.com", "new.contoso.com")
    report = diff_report(bundle(old), bundle(new))
    assert report["change"] == change
    assert report["connector_update_required"] is (change != "unchanged")
    assert report["issuer_changed"] is ("issuer" in change)
    assert report["subject_changed"] is ("subject" in change)
    assert report["differs_only_in_case"] is False
    assert report["dns_names_removed"] == ["old.contoso.com"]
    assert report["dns_names_added"] == ([] if new_cn == "mail.contoso.com" else [new_cn]) + ["new.contoso.com"]
    assert report["old"]["subject"] == "CN=mail.contoso.com, O=Contoso, C=US"


def test_a_diff_only_in_case_needs_no_update(ca):
    old = leaf(ca, "mail.contoso.com")
    new = leaf(ca, "MAIL.contoso.com")
    report = diff_report(bundle(old), bundle(new))
    assert (report["change"], report["differs_only_in_case"], report["connector_update_required"]) == (
        "unchanged",
        True,
        False,
    )


def test_parse_report(ca):
    cert = leaf(ca)
    report = parse_report(VALUE, bundle(cert))
    assert report["exchange_accepts"] is True and report["canonical"] == VALUE
    assert report["selects_certificate"] is True
    assert report["certificate"] == {"thumbprint": cert.thumbprint, "tls_certificate_name": VALUE}
    other = parse_report("<I>CN=Someone Else<S>CN=mail.contoso.com, O=Contoso, C=US", bundle(cert))
    assert other["selects_certificate"] is False and other["issuer"] == "CN=Someone Else"
    assert parse_report("CN=mail.contoso.com")["issuer"] is None
    bad = parse_report("<I>CN=Contoso")
    assert bad["exchange_accepts"] is False and bad["subject"] is None and len(bad["problems"]) == 1


def test_a_name_selects_certificates_regardless_of_case(ca):
    cert = leaf(ca)
    name = TlsCertificateName.parse("<I>cn=contoso issuing ca, o=contoso, c=us<S>CN=MAIL.CONTOSO.COM, O=Contoso, C=US")
    assert name.selects(cert)
    assert name.exchange_key() == TlsCertificateName.from_certificate(cert).exchange_key()
    assert not TlsCertificateName.parse(VALUE.replace("CN=mail.", "CN=smtp.")).selects(cert)


@pytest.mark.parametrize("family", ["ed25519", "ed448"])
def test_edwards_signatures(family):
    key = ed25519.Ed25519PrivateKey.generate() if family == "ed25519" else ed448.Ed448PrivateKey.generate()
    algorithm = "1.3.101.112" if family == "ed25519" else "1.3.101.113"
    signature = key.sign(b"tbs")
    assert verify_signature(key.public_key(), algorithm, signature, b"tbs") is True
    assert verify_signature(key.public_key(), algorithm, signature, b"tbx") is False
    other = "1.3.101.113" if family == "ed25519" else "1.3.101.112"
    assert verify_signature(key.public_key(), other, signature, b"tbs") is False  # the wrong family


def test_an_unknown_algorithm_or_a_key_of_another_family_does_not_verify():
    key = ec.generate_private_key(ec.SECP256R1())
    signature = key.sign(b"tbs", ec.ECDSA(hashes.SHA256()))
    assert verify_signature(key.public_key(), "1.2.840.10045.4.3.2", signature, memoryview(b"tbs")) is True
    assert verify_signature(key.public_key(), "1.2.840.113549.1.1.11", signature, b"tbs") is False  # RSA OID
    assert verify_signature(key.public_key(), "1.2.3.4", signature, b"tbs") is False
