"""Windows-like leniency (issue 18 item 8): chains `cryptography` refuses for their encoding, which Windows
accepts, are Valid; every chain Windows rejects stays rejected, quirks or not. Real certificates where they
exist: every Mozilla root in certifi (its encoding, re-keyed), and Certum Trusted Network CA 2 itself."""

from __future__ import annotations

import datetime as dt
import json

import certifi
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from shared.validation.assessment import TrustStore, assess
from shared.validation.leniency import lenient_chain
from shared.x509 import lenient
from shared.x509.certificate import Certificate, CertificateBundle
from shared.x509.containers import certificates_in
from shared.x509.parsed import parse_warnings, to_x509
from tests import pki as P
from tests.quirks import (
    CLIENT_AUTH,
    UTC,
    QuirkyPki,
    dn_subtree,
    dns_subtree,
    ext,
    name_constraints_value,
    under_real_root,
)

G = {"generalized": True}
CERTUM = "Certum Trusted Network CA 2"


def assess_chain(root: bytes, inter: bytes, leaf: bytes):
    trust = TrustStore.from_certificates([Certificate.from_der(root, "test root")], "test roots")
    bundle = CertificateBundle(Certificate.from_der(leaf, "leaf"), (Certificate.from_der(inter, "issuing CA"),))
    return assess(bundle, trust=trust, offline=True, revocation="off", hosts=["mail.contoso.com"])


def errors(result) -> list[str]:
    return [f.code for f in result.findings if f.severity == "error"]


def certifi_roots() -> list[Certificate]:
    with open(certifi.where(), "rb") as handle:
        return certificates_in(handle.read(), "certifi")


ACCEPTED = {
    "generalized-time-root": {"root": G},
    "generalized-time-intermediate": {"inter": G},
    "generalized-time-leaf": {"leaf": G},
    "negative-root-serial": {"root": {"serial": -0x1234}},
    "explicit-critical-false-root": {"root": {"explicit_false": True}},
    "explicit-critical-false-intermediate": {"inter": {"explicit_false": True}},
    "explicit-critical-false-leaf": {"leaf": {"explicit_false": True}},
    "asterisk-in-printable-cn": {"leaf": {"cn": b"*.contoso.com"}},
    "basic-constraints-not-critical-intermediate": {"inter": {"bc_critical": False}},
    "basic-constraints-not-critical-root": {"root": {"bc_critical": False}},
    "v1-root": {"root": {"version": 1}},
    "certificate-policies-critical": {"inter": {"policies_critical": True}},
    "certificate-policies-critical-root": {"root": {"policies_critical": True}},
}


# A trust-store root is read from its canonical encoding, and its own signature is never checked: the strict
# verifier then accepts it with no fallback needed.
NO_FALLBACK = {"explicit-critical-false-root"}


@pytest.mark.parametrize("case", ACCEPTED)
def test_a_chain_windows_accepts_despite_its_encoding_is_valid(case):
    result = assess_chain(*QuirkyPki().chain(**ACCEPTED[case]))
    assert result.status == "Valid", errors(result)
    leniency = [f for f in result.findings if f.code == "windows-leniency" and f.severity == "info"]
    assert bool(leniency) != (case in NO_FALLBACK)


def test_directory_name_constraints_that_permit_the_leaf_are_checked_and_accepted():
    pki = QuirkyPki()
    permitted = name_constraints_value([dn_subtree(pki.leaf_name)])
    result = assess_chain(*pki.chain(inter={"name_constraints": permitted}))
    assert result.status == "Valid", errors(result)


@pytest.mark.parametrize("role", ["inter", "root"])
def test_brainpool_ca_keys_are_accepted(role):
    pki = QuirkyPki(ec.generate_private_key(ec.BrainpoolP384R1()) if role == "root" else None)
    if role == "inter":
        pki.inter_key = ec.generate_private_key(ec.BrainpoolP256R1())
    result = assess_chain(*pki.chain())
    assert result.status == "Valid", errors(result)
    leniency = next(f for f in result.findings if f.code == "windows-leniency")
    assert "brainpool" in leniency.message


def test_a_leaf_cryptography_cannot_parse_is_read_from_its_canonical_encoding_and_warned_about():
    root, inter, leaf = QuirkyPki().chain(leaf={"explicit_false": True, "cn": b"*.contoso.com"})
    cert = Certificate.from_der(leaf, "leaf")
    assert to_x509(cert).subject.rfc4514_string() == "CN=*.contoso.com"
    assert set(parse_warnings(cert)) >= {lenient.EXPLICIT_FALSE, lenient.PRINTABLE_STRING}
    result = assess_chain(root, inter, leaf)
    assert {f.code for f in result.findings if f.severity == "warning"} >= {"nonconforming-encoding"}


REJECTED = {
    "path-length-exceeded": ({"root": {**G, "path_length": 0}}, "Invalid", "chain-invalid"),
    "expired-intermediate": (
        {"inter": {**G, "not_after": dt.datetime(2025, 6, 1, tzinfo=UTC)}},
        "DateInvalid",
        "intermediate-expired",
    ),
    "leaf-without-server-auth": ({"leaf": {**G, "eku": (CLIENT_AUTH,)}}, "Invalid", "eku-no-server-auth"),
    "ca-without-server-auth": ({"inter": {**G, "eku": (CLIENT_AUTH,)}}, "Invalid", "eku-no-server-auth"),
    "dns-name-constraint-violated": (
        {"inter": {**G, "name_constraints": name_constraints_value([dns_subtree("fabrikam.com")])}},
        "Invalid",
        "chain-invalid",
    ),
    "v1-intermediate": ({"inter": {"version": 1}}, "Invalid", "chain-invalid"),
    "sha1-below-the-root": ({"inter": {**G, "hash_algorithm": hashes.SHA1()}}, "Invalid", "sha1-signature"),
    "unknown-critical-extension": (
        {"inter": {**G, "extra": (ext("1.2.3.4.5", True, P.seq()),)}},
        "Invalid",
        "chain-invalid",
    ),
    "policy-constraints-critical": (
        {"inter": {**G, "extra": (ext("2.5.29.36", True, P.seq(P.tlv(0x80, b"\x00"))),)}},
        "Invalid",
        "chain-invalid",
    ),
}


@pytest.mark.parametrize(("quirks", "status", "code"), REJECTED.values(), ids=REJECTED.keys())
def test_leniency_never_accepts_what_windows_rejects(quirks, status, code):
    result = assess_chain(*QuirkyPki().chain(**quirks))
    assert result.status == status
    assert code in errors(result)
    if code == "chain-invalid":  # dates and EKU are judged by the lints, on whichever path was accepted
        assert "windows-leniency" not in {f.code for f in result.findings}


def test_a_bad_signature_in_a_quirky_chain_is_rejected_with_the_reason():
    root, inter, leaf = QuirkyPki().chain(inter=G)
    tampered = bytearray(inter)
    tampered[-5] ^= 1
    result = assess_chain(root, bytes(tampered), leaf)
    assert result.status == "Invalid"
    message = next(f.message for f in result.findings if f.code == "chain-invalid")
    assert "under Windows's rules as well: the signature of issuing CA does not verify" in message


@pytest.mark.parametrize("excluded", [False, True])
def test_directory_name_constraints_are_enforced(excluded):
    pki = QuirkyPki()
    other = P.name(P.rdn(P.printable(P.C, "DE")))
    value = (
        name_constraints_value([], [dn_subtree(pki.leaf_name)])
        if excluded
        else name_constraints_value([dn_subtree(other)])
    )
    result = assess_chain(*pki.chain(inter={"name_constraints": value}))
    assert result.status == "Invalid"
    message = next(f.message for f in result.findings if f.code == "chain-invalid")
    assert ("excluded by" if excluded else "outside") in message


def test_a_weak_or_foreign_ca_key_is_not_relaxed():
    pki = QuirkyPki()
    pki.inter_key = ec.generate_private_key(ec.SECP224R1())
    result = assess_chain(*pki.chain(root=G))
    assert result.status == "Invalid"
    assert "curve secp224r1" in next(f.message for f in result.findings if f.code == "chain-invalid")


def test_leniency_needs_a_path():
    leaf = Certificate.from_der(QuirkyPki().chain()[2], "leaf")
    assert lenient_chain([leaf], dt.datetime.now(UTC), lambda store, at: None).chain is None  # type: ignore[arg-type]


def test_the_certum_root_in_certifi_has_the_quirk_and_its_encoding_no_longer_makes_a_chain_invalid():
    certum = next(r for r in certifi_roots() if CERTUM in str(r.subject))
    assert lenient.GENERALIZED_TIME in lenient.canonical(certum.der).quirks
    assert TrustStore.from_certificates([certum], "certifi").contains(certum)
    root, pki = under_real_root(certum.der)
    _, inter, leaf = pki.chain()
    result = assess_chain(root, inter, leaf)
    assert result.status == "Valid", errors(result)
    assert any(CERTUM in f.message for f in result.findings if f.code == "windows-leniency")


def test_a_chain_under_every_certifi_roots_encoding_is_valid():
    """The issue's measurement: 1 of 117 certifi roots (Certum Trusted Network CA 2) failed; now none does."""
    roots = certifi_roots()
    failing = []
    for real in roots:
        root, pki = under_real_root(real.der)
        _, inter, leaf = pki.chain()
        result = assess_chain(root, inter, leaf)
        if result.status != "Valid":
            failing.append(f"{real.subject}: {result.status} {errors(result)}")
    print(f"certifi roots: {len(roots) - len(failing)} of {len(roots)} valid under their own encoding")
    assert failing == []
    assert len(roots) >= 100


def test_a_sha1_self_signed_untrusted_root_is_reported_as_an_untrusted_root():
    pki = QuirkyPki()
    pki.root_name = P.name(P.rdn(P.utf8(P.CN, "Private SHA-1 Root")))
    root, inter, leaf = pki.chain(root={"hash_algorithm": hashes.SHA1()})
    other = QuirkyPki().chain()[0]
    trust = TrustStore.from_certificates([Certificate.from_der(other, "other root")], "other")
    bundle = CertificateBundle(
        Certificate.from_der(leaf, "leaf"),
        (Certificate.from_der(inter, "issuing CA"), Certificate.from_der(root, "sha1 root")),
    )
    result = assess(bundle, trust=trust, offline=True, revocation="off")
    assert result.status == "Untrusted"
    assert "untrusted-root" in errors(result)
    assert "chain-incomplete" not in errors(result)
    assert "sha1-signature" not in errors(result)  # a root's self-signature is not what SHA-1 deprecation is about


def test_an_ip_host_is_matched_against_ip_address_sans_only():
    from tests.chains import issue

    root = issue("IP Root", ca=True)
    leaf = issue("192.0.2.7", issuer=root, dns_names=["192.0.2.8"], ip_addresses=["192.0.2.7", "2001:db8::1"])
    trust = TrustStore.from_certificates([Certificate.from_der(root.der, "root")], "roots")

    def status(*hosts: str) -> list[str]:
        result = assess(
            CertificateBundle(Certificate.from_der(leaf.der, "leaf")),
            trust=trust,
            offline=True,
            revocation="off",
            hosts=hosts,
        )
        return [f.message for f in result.findings if f.code == "host-not-covered"]

    assert status("192.0.2.7", "[2001:db8::1]", "2001:DB8:0::1") == []
    missing = status("192.0.2.8")  # only a dNSName holds it, and the CN never counts for an address
    assert missing == ["The address 192.0.2.8 is not among the certificate's IP address SANs (192.0.2.7, 2001:db8::1)."]


def test_a_directory_name_san_outside_the_constraints_is_rejected():
    pki = QuirkyPki()
    permitted = name_constraints_value([dn_subtree(pki.leaf_name)])
    outside = P.tlv(0xA4, P.name(P.rdn(P.printable(P.C, "DE"))))
    result = assess_chain(*pki.chain(inter={"name_constraints": permitted}, leaf={"san_extra": outside}))
    assert result.status == "Invalid"
    assert "directoryName SAN is outside" in next(f.message for f in result.findings if f.code == "chain-invalid")


def test_certsync_check_on_a_certum_like_chain_is_valid_and_says_why(tmp_path):
    from tests.test_cli import run, write

    root, inter, leaf = QuirkyPki().chain(root=G, inter={**G, "explicit_false": True})
    bundle = write(tmp_path, "mail.pem", (P.pem(leaf) + P.pem(inter)).encode())
    trust = write(tmp_path, "root.pem", P.pem(root).encode())
    common = ("--trust", trust, "--revocation", "off")
    result = run("check", bundle, *common, "--host", "mail.contoso.com", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "Valid" and "windows-leniency" in {f["code"] for f in report["findings"]}
    assert result.stderr == ""
    address = run("check", bundle, *common, "--host", "192.0.2.7")
    assert address.returncode == 1 and "The address 192.0.2.7 is not among" in address.stdout
