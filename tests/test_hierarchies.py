"""The table of public CA hierarchies: its shipped certificates are the real ones, and what it says about a
renewal's issuer change and the next renewal's issuers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509

from shared.validation import hierarchies
from shared.validation.assessment import TrustStore
from shared.validation.hierarchies import HIERARCHIES, explain_issuer_change, forecast, identify, key_type
from shared.x509.containers import certificates_in
from shared.x509.x500 import X500Name

PKI = Path(__file__).parent / "fixtures" / "pki"
LE = "O=Let's Encrypt, C=US"


def name(text: str) -> X500Name:
    return X500Name.parse(text)


def _isrg_root_x1() -> x509.Certificate:
    root = next(r for r in TrustStore.mozilla().roots if r.subject.first("2.5.4.3") == "ISRG Root X1")
    return x509.load_der_x509_certificate(root.der)


def test_the_shipped_generation_y_certificates_chain_to_isrg_root_x1_through_the_cross_sign() -> None:
    x1 = _isrg_root_x1()
    yr = [i for g in HIERARCHIES for i in g.issuers if i.chain and i.key == "RSA"]
    assert [i.common_name for i in yr] == ["YR1", "YR2"]
    for issuer in yr:
        intermediate, cross_sign = (x509.load_pem_x509_certificate(p.encode()) for p in issuer.chain)
        cross_sign.verify_directly_issued_by(x1)
        intermediate.verify_directly_issued_by(cross_sign)


def test_each_shipped_certificate_is_the_issuer_it_is_listed_as_and_the_fixture_beside_it() -> None:
    fixtures = {c.der for f in PKI.glob("le-*.pem") for c in certificates_in(f.read_bytes(), f.name)}
    for generation in HIERARCHIES:
        for issuer in generation.issuers:
            for pem in issuer.chain:
                (cert,) = certificates_in(pem.encode(), issuer.subject)
                assert cert.der in fixtures
            if issuer.chain:
                (first,) = certificates_in(issuer.chain[0].encode(), issuer.subject)
                assert str(first.subject) == issuer.subject


def test_every_listed_issuer_is_identified_as_itself() -> None:
    for generation in HIERARCHIES:
        for issuer in generation.issuers:
            found = identify(name(issuer.subject))
            assert found is not None and found.issuer == issuer and found.generation == generation
        assert generation.sources and generation.as_of <= dt.date(2026, 12, 31)


def test_an_issuer_is_identified_by_organization_and_cn_not_by_country_or_order() -> None:
    found = identify(name("CN=yr1, O=LET'S ENCRYPT"))
    assert found is not None and found.issuer is not None and found.issuer.common_name == "YR1"
    assert identify(name("CN=YR1, O=Someone Else, C=US")) is None
    assert identify(name("O=Let's Encrypt, C=US")) is None
    assert identify(None) is None


def test_a_ca_that_rotates_intermediates_by_name_is_recognised_by_its_pattern() -> None:
    atlas = identify(name("CN=GlobalSign Atlas R3 DV TLS CA 2026 Q1, O=GlobalSign nv-sa, C=BE"))
    assert atlas is not None and atlas.issuer is None and atlas.generation.ca == "GlobalSign"
    assert "GlobalSign" in atlas.label
    change = explain_issuer_change(
        name("CN=GlobalSign Atlas R3 DV TLS CA 2025 Q4, O=GlobalSign nv-sa, C=BE"),
        name("CN=GlobalSign Atlas R3 DV TLS CA 2026 Q1, O=GlobalSign nv-sa, C=BE"),
    )
    assert change is not None and change.expected


def test_lets_encrypt_rotating_r12_to_yr1_is_expected_and_says_so() -> None:
    change = explain_issuer_change(name(f"CN=R12, {LE}"), name(f"CN=YR1, {LE}"))
    assert change is not None and change.expected
    assert change.explanation == "Let's Encrypt rotated R12 -> YR1 (Generation X -> Generation Y), expected"
    assert change.to_dict()["expected"] is True


def test_a_rotation_within_a_generation_is_expected() -> None:
    change = explain_issuer_change(name(f"CN=R10, {LE}"), name(f"CN=R11, {LE}"))
    assert change is not None and change.expected
    assert change.explanation == "Let's Encrypt rotated R10 -> R11 within Generation X, expected"


def test_entrust_to_its_successors_is_expected() -> None:
    entrust = identify(name('CN=Entrust Certification Authority - L1K, O="Entrust, Inc.", C=US'))
    assert entrust is not None
    sectigo = name("CN=Sectigo Public Server Authentication CA OV R36, O=Sectigo Limited, C=GB")
    change = explain_issuer_change(name('CN=Entrust Certification Authority - L1K, O="Entrust, Inc.", C=US'), sectigo)
    assert change is not None and change.expected and "now issued by Sectigo" in change.explanation


@pytest.mark.parametrize(
    ("old", "new", "said"),
    [
        (f"CN=R12, {LE}", "CN=DigiCert Global G2 TLS RSA SHA256 2020 CA1, O=DigiCert Inc, C=US", "Let's Encrypt (R12)"),
        (f"CN=R12, {LE}", "CN=Fabrikam Issuing CA, O=Fabrikam, C=US", "Fabrikam Issuing CA (not in certsync's table)"),
        ("CN=Contoso CA, O=Contoso", f"CN=YR1, {LE}", "Contoso CA (not in certsync's table)"),
    ],
)
def test_an_issuer_change_the_table_does_not_explain_is_flagged(old: str, new: str, said: str) -> None:
    change = explain_issuer_change(name(old), name(new))
    assert change is not None and not change.expected
    assert said in change.explanation and "does not explain" in change.explanation


def test_no_change_or_no_issuer_explains_nothing() -> None:
    assert explain_issuer_change(name(f"CN=R12, {LE}"), name("cn=r12, o=let's encrypt, c=us")) is None
    assert explain_issuer_change(None, name(f"CN=R12, {LE}")) is None


def test_the_forecast_after_generation_x_is_generation_y_of_the_same_key_type() -> None:
    rsa = forecast(name(f"CN=R12, {LE}"), "RSA", dt.date(2026, 12, 3))
    assert rsa.ca == "Let's Encrypt"
    assert rsa.issuer_strings == (f"<I>CN=YR1, {LE}", f"<I>CN=YR2, {LE}", f"<I>CN=YR3, {LE}")
    assert [i.common_name for i in rsa.prestageable] == ["YR1", "YR2"]
    ecdsa = forecast(name(f"CN=E7, {LE}"), key_type("ec"), dt.date(2026, 12, 3))
    assert [i.common_name for i in ecdsa.issuers] == ["YE1", "YE2", "YE3"]
    assert "Root YE" in ecdsa.note
    both = forecast(name(f"CN=E7, {LE}"), None, dt.date(2026, 3, 1))
    assert {"YR1", "YE1"} <= {i.common_name for i in both.issuers}
    assert rsa.to_dict()["prestageable"] == [f"CN=YR1, {LE}", f"CN=YR2, {LE}"]


def test_the_forecast_of_a_ca_that_stopped_issuing_is_its_successors() -> None:
    result = forecast(
        name('CN=Entrust Certification Authority - L1K, O="Entrust, Inc.", C=US'), "RSA", dt.date(2026, 12, 3)
    )
    assert result.ca == "Sectigo / SSL.com"
    assert any("Sectigo Public Server Authentication CA DV R36" in s for s in result.issuer_strings)


def test_the_forecast_of_an_unknown_issuer_says_so() -> None:
    result = forecast(name("CN=Contoso CA, O=Contoso"), "RSA", dt.date(2026, 12, 3))
    assert result.unknown and result.issuers == () and "not in certsync's table" in result.note
    assert key_type("ed25519") is None
    assert list(hierarchies.generations("DigiCert"))
