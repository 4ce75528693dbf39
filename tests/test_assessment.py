"""`assess()` end to end on loopback: a PKI whose AIA, CRL and OCSP URLs point at real servers on 127.0.0.1
(a threaded HTTP server, and the real `openssl ocsp` responder), every status and finding, and the
adverse cases: a responder that is down, stale or wrongly signed CRLs, OCSP answers about another
certificate, a delegated responder without OCSPSigning, an AIA loop, a 20 MB CRL, and SSRF attempts."""

from __future__ import annotations

import datetime as dt
import socket
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from shared.validation.assessment import TrustStore, assess, host_matches
from shared.validation.crl import parse_crl
from shared.validation.fetch import Fetcher, FetchLimits
from shared.validation.lifetime import ExpiryThresholds
from shared.validation.revocation import FetchCache
from shared.x509.certificate import Certificate, CertificateBundle
from shared.x509.containers import load_certificates
from tests.chains import Issued, issue, make_crl, make_name, pem_of
from tests.pki import big_crl_der

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
SERVER_AUTH, CLIENT_AUTH = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
HOSTS = ("mail.contoso.com", "autodiscover.contoso.com")


def cert(issued: Issued) -> Certificate:
    return Certificate.from_der(issued.der, issued.subject_cn)


def trust(*roots: Issued) -> TrustStore:
    return TrustStore.from_certificates([cert(r) for r in roots], "test roots")


def bundle(leaf: Issued, *chain: Issued) -> CertificateBundle:
    return CertificateBundle(cert(leaf), tuple(cert(c) for c in chain))


def codes(result) -> dict[str, str]:
    return {f.code: f.severity for f in result.findings}


@dataclass
class Pki:
    """root -> intermediate -> leaf, with CRLs for both CAs served on loopback."""

    server: object
    root: Issued
    intermediate: Issued
    leaf: Issued

    @property
    def trust(self) -> TrustStore:
        return trust(self.root)

    def fetcher(self, **limits) -> Fetcher:
        return Fetcher(allow=[f"127.0.0.1:{self.server.port}"], limits=FetchLimits(retry_backoff=0.01, **limits))

    def publish_crls(self, leaf_revoked=(), intermediate_revoked=()) -> None:
        self.server.route("/root.crl", body=make_crl(self.root, intermediate_revoked))
        self.server.route("/issuing.crl", body=make_crl(self.intermediate, leaf_revoked))

    def new_leaf(self, **options) -> Issued:
        defaults = {
            "issuer": self.intermediate,
            "dns_names": HOSTS,
            "eku": [SERVER_AUTH, CLIENT_AUTH],
            "crl_urls": [self.server.url("/issuing.crl")],
            "ca_issuers_urls": [self.server.url("/issuing.cer")],
            "kind": "rsa",
        }
        return issue(make_name("mail.contoso.com", "Contoso"), **(defaults | options))

    def assess(self, leaf: Issued | None = None, *, chain=None, **kwargs):
        leaf = leaf or self.leaf
        chain = (self.intermediate,) if chain is None else chain
        kwargs.setdefault("trust", self.trust)
        kwargs.setdefault("fetcher", self.fetcher())
        kwargs.setdefault("hosts", HOSTS)
        return assess(bundle(leaf, *chain), **kwargs)


@pytest.fixture
def pki(http_server) -> Pki:
    root = issue(make_name("Contoso Test Root", "Contoso"), kind="rsa", ca=True, path_length=1)
    intermediate = issue(
        make_name("Contoso Issuing CA", "Contoso"),
        issuer=root,
        kind="rsa",
        ca=True,
        path_length=0,
        crl_urls=[http_server.url("/root.crl")],
    )
    http_server.route("/issuing.cer", body=intermediate.der)
    pki = Pki(http_server, root, intermediate, None)
    pki.leaf = pki.new_leaf()
    pki.publish_crls()
    return pki


# -- Valid, and the path ------------------------------------------------------------------------------


def test_a_good_certificate_with_its_chain_is_valid(pki):
    result = pki.assess()
    assert result.status == "Valid"
    assert [f for f in result.findings if f.severity == "error"] == []
    assert [e.source for e in result.path] == ["delivered", "delivered", "trust store"]
    assert [e.certificate.thumbprint for e in result.path] == [
        cert(c).thumbprint for c in (pki.leaf, pki.intermediate, pki.root)
    ]
    assert (
        result.tls_certificate_name
        == "<I>CN=Contoso Issuing CA, O=Contoso, C=US<S>CN=mail.contoso.com, O=Contoso, C=US"
    )
    assert {r.path for r in pki.server.requests} == {"/issuing.crl", "/root.crl"}


def test_the_json_shape_names_status_findings_and_path(pki):
    report = pki.assess(pki.new_leaf(eku=[SERVER_AUTH])).to_dict()
    assert report["status"] == "Valid"
    assert {"code", "severity", "subject", "message", "remedy"} <= set(report["findings"][0])
    assert [p["source"] for p in report["path"]] == ["delivered", "delivered", "trust store"]
    assert report["path"][0]["subject"] == "CN=mail.contoso.com, O=Contoso, C=US"


# -- the chain ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["der", "pem", "pkcs7"])
def test_a_missing_intermediate_is_fetched_through_aia_and_still_reported(pki, encoding):
    if encoding == "pem":
        body = pki.intermediate.pem
    elif encoding == "pkcs7":
        from cryptography.hazmat.primitives.serialization import pkcs7

        body = pkcs7.serialize_certificates([pki.intermediate.cert], serialization.Encoding.DER)
    else:
        body = pki.intermediate.der
    pki.server.route("/issuing.cer", body=body)
    result = pki.assess(chain=())
    assert result.status == "Valid"
    finding = next(f for f in result.findings if f.code == "chain-incomplete")
    assert finding.severity == "warning"
    assert "454 4.7.5" in finding.message
    assert [e.source for e in result.path] == ["delivered", "aia", "trust store"]
    assert result.intermediates_to_install == (cert(pki.intermediate),)


def test_a_missing_intermediate_that_cannot_be_fetched_is_untrusted(pki):
    pki.server.route("/issuing.cer", status=404)
    result = pki.assess(chain=())
    assert result.status == "Untrusted"
    assert codes(result)["chain-incomplete"] == "error"


def test_a_missing_intermediate_is_not_fetched_offline(pki):
    result = pki.assess(chain=(), offline=True, revocation="off")
    assert result.status == "Untrusted"
    assert pki.server.requests == []


def test_a_root_outside_the_trust_store_is_untrusted(pki):
    result = pki.assess(chain=(pki.intermediate, pki.root), trust=trust(issue("Someone Else Root", ca=True)))
    assert result.status == "Untrusted"
    assert "untrusted-root" in codes(result)


def test_a_chain_with_a_bad_signature_is_invalid(pki):
    # Same name as the real intermediate and no key ids, but another key: the leaf's signature does not verify.
    impostor = issue(
        make_name("Contoso Issuing CA", "Contoso"), issuer=pki.root, kind="rsa", ca=True, path_length=0, key_ids=False
    )
    leaf = pki.new_leaf(ca_issuers_urls=[])
    result = pki.assess(leaf, chain=(impostor,), revocation="off")
    assert result.status == "Invalid"
    assert "chain-invalid" in codes(result)


def test_an_aia_loop_ends(http_server, pki):
    a_key, b_key = (issue("tmp").key for _ in range(2))
    name_a, name_b = make_name("Loop CA A", "Loop"), make_name("Loop CA B", "Loop")
    a_from_b = issue(
        name_a,
        key=a_key,
        issuer=Issued(issue(name_b, key=b_key, ca=True).cert, b_key),
        ca=True,
        ca_issuers_urls=[http_server.url("/b.cer")],
    )
    b_from_a = issue(
        name_b,
        key=b_key,
        issuer=Issued(issue(name_a, key=a_key, ca=True).cert, a_key),
        ca=True,
        ca_issuers_urls=[http_server.url("/a.cer")],
    )
    http_server.route("/a.cer", body=a_from_b.der)
    http_server.route("/b.cer", body=b_from_a.der)
    leaf = issue(
        "mail.contoso.com",
        issuer=Issued(a_from_b.cert, a_key),
        dns_names=HOSTS,
        ca_issuers_urls=[http_server.url("/a.cer")],
    )
    result = pki.assess(leaf, chain=())
    assert result.status == "Untrusted"
    assert any(f.code == "chain-incomplete" and f.severity == "error" for f in result.findings)
    assert len([r for r in http_server.requests if r.path in ("/a.cer", "/b.cer")]) <= 3


# -- dates ---------------------------------------------------------------------------------------------


def test_an_expired_leaf_is_date_invalid(pki):
    leaf = pki.new_leaf(not_before=NOW - dt.timedelta(days=100), not_after=NOW - dt.timedelta(days=1))
    result = pki.assess(leaf)
    assert result.status == "DateInvalid"
    assert codes(result)["expired"] == "error"


def test_a_leaf_not_yet_valid_is_date_invalid(pki):
    leaf = pki.new_leaf(not_before=NOW + dt.timedelta(days=2), not_after=NOW + dt.timedelta(days=90))
    result = pki.assess(leaf)
    assert result.status == "DateInvalid"
    assert "not-yet-valid" in codes(result)


def test_an_expired_intermediate_is_date_invalid(pki):
    old = issue(
        make_name("Contoso Issuing CA", "Contoso"),
        key=pki.intermediate.key,
        issuer=pki.root,
        kind="rsa",
        ca=True,
        path_length=0,
        not_before=NOW - dt.timedelta(days=400),
        not_after=NOW - dt.timedelta(days=3),
    )
    result = pki.assess(chain=(old,), revocation="off")
    assert result.status == "DateInvalid"
    assert "intermediate-expired" in codes(result)


@pytest.mark.parametrize(
    ("lifetime", "days_left", "expiry", "warned"),
    [
        (45, 30, None, False),  # Key Vault's NearExpiry point: the normal time to renew a 45-day certificate
        (45, 6, None, True),  # under 15% of 45 days
        (365, 25, None, True),  # a long-lived certificate still warns 30 days ahead (the cap)
        (365, 40, None, False),
        (365, 40, ExpiryThresholds(warning_cap_days=60), True),
        (7, 2.5, None, True),  # a week-long certificate: the 3-day floor
    ],
)
def test_expiry_warning_window_is_a_fraction_of_the_lifetime(pki, lifetime, days_left, expiry, warned):
    not_after = NOW + dt.timedelta(days=days_left)
    leaf = pki.new_leaf(not_before=not_after - dt.timedelta(days=lifetime), not_after=not_after)
    result = pki.assess(leaf, expiry=expiry)
    assert result.status == "Valid"
    assert ("expires-soon" in codes(result)) is warned
    if warned:
        [finding] = [f for f in result.findings if f.code == "expires-soon"]
        assert f"{lifetime}-day lifetime" in finding.message


def test_the_time_of_assessment_can_be_given(pki):
    result = pki.assess(at=NOW + dt.timedelta(days=400), revocation="off")
    assert result.status == "DateInvalid"
    assert "expired" in codes(result)


# -- leaf profile ---------------------------------------------------------------------------------------


def test_a_leaf_without_server_auth_is_invalid(pki):
    result = pki.assess(pki.new_leaf(eku=[CLIENT_AUTH]))
    assert result.status == "Invalid"
    assert codes(result)["eku-no-server-auth"] == "error"


def test_a_leaf_without_client_auth_is_information_with_the_dated_evidence(pki):
    result = pki.assess(pki.new_leaf(eku=[SERVER_AUTH]))
    assert result.status == "Valid"
    assert codes(result)["eku-no-client-auth"] == "info"
    [finding] = [f for f in result.findings if f.code == "eku-no-client-auth"]
    for fact in ("11 February 2026", "1 March 2027", "15 March 2027", "not confirmed"):
        assert fact in finding.message
    assert "client-auth-ending" not in codes(result)  # a private CA: nothing to say about its plans


def test_an_intermediate_whose_eku_excludes_server_auth_is_invalid(pki):
    email_ca = issue(
        make_name("Contoso Issuing CA", "Contoso"),
        key=pki.intermediate.key,
        issuer=pki.root,
        kind="rsa",
        ca=True,
        path_length=0,
        eku=[ExtendedKeyUsageOID.EMAIL_PROTECTION],
    )
    result = pki.assess(chain=(email_ca,), revocation="off")
    assert result.status == "Invalid"
    assert any(f.code == "eku-no-server-auth" and "Issuing CA" in f.subject for f in result.findings)


@pytest.mark.parametrize(
    ("kind", "code", "status"),
    [
        ("rsa1024", "weak-key", "Invalid"),
        ("p521", "weak-key", "Invalid"),
        ("ec", "ecdsa-key", "Valid"),
        ("p384", "ecdsa-key", "Valid"),
        ("rsa4096", None, "Valid"),
    ],
)
def test_keys(pki, kind, code, status):
    result = pki.assess(pki.new_leaf(kind=kind))
    assert result.status == status
    key_codes = {c for c in codes(result) if c in ("weak-key", "ecdsa-key")}
    assert key_codes == ({code} if code else set())


def test_a_sha1_signed_leaf_is_invalid(pki):
    result = pki.assess(pki.new_leaf(hash_algorithm=hashes.SHA1()), revocation="off")
    assert result.status == "Invalid"
    assert "sha1-signature" in codes(result)


def test_a_host_outside_the_san_is_invalid(pki):
    result = pki.assess(hosts=["mail.contoso.com", "smtp.contoso.com"])
    assert result.status == "Invalid"
    finding = next(f for f in result.findings if f.code == "host-not-covered")
    assert "smtp.contoso.com" in finding.message


def test_a_wildcard_covers_one_label(pki):
    leaf = pki.new_leaf(dns_names=["*.contoso.com"])
    assert pki.assess(leaf, hosts=["mail.contoso.com", "SMTP.Contoso.com."]).status == "Valid"
    assert "host-not-covered" in codes(pki.assess(leaf, hosts=["a.mail.contoso.com"]))


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("mail.contoso.com", "MAIL.contoso.com", True),
        ("*.contoso.com", "mail.contoso.com", True),
        ("*.contoso.com", "contoso.com", False),
        ("*.contoso.com", "a.b.contoso.com", False),
        ("m*.contoso.com", "mail.contoso.com", False),
        ("mail.*.com", "mail.contoso.com", False),
        ("*.com", "contoso.com", False),
        ("*", "localhost", False),
    ],
)
def test_rfc_6125_wildcards(pattern, host, matches):
    assert host_matches(pattern, host) is matches


def test_a_first_cn_that_is_not_a_dns_name_is_invalid(pki):
    leaf = issue(
        make_name("Contoso Mail Server", "Contoso"),
        issuer=pki.intermediate,
        dns_names=HOSTS,
        eku=[SERVER_AUTH, CLIENT_AUTH],
        crl_urls=[pki.server.url("/issuing.crl")],
        kind="rsa",
    )
    result = pki.assess(leaf)
    assert result.status == "Invalid"
    assert "cn-not-dns-name" in codes(result)


# -- revocation: CRL ------------------------------------------------------------------------------------


def test_a_leaf_on_the_crl_is_revoked_with_reason_and_date(pki):
    when = (NOW - dt.timedelta(days=2)).replace(second=0)
    pki.publish_crls(leaf_revoked=[(pki.leaf.cert.serial_number, x509.ReasonFlags.key_compromise, when)])
    result = pki.assess()
    assert result.status == "Revoked"
    finding = next(f for f in result.findings if f.code == "revoked")
    assert finding.subject == "CN=mail.contoso.com, O=Contoso, C=US"
    assert "keyCompromise" in finding.message and when.strftime("%Y-%m-%dT%H:%M") in finding.message


def test_a_revoked_intermediate_is_revoked(pki):
    pki.publish_crls(intermediate_revoked=[(pki.intermediate.cert.serial_number, x509.ReasonFlags.ca_compromise, NOW)])
    result = pki.assess()
    assert result.status == "Revoked"
    assert any(f.code == "revoked" and "Issuing CA" in f.subject for f in result.findings)


def test_another_serial_on_the_crl_leaves_the_leaf_good(pki):
    pki.publish_crls(leaf_revoked=[(pki.leaf.cert.serial_number + 1, None, NOW)])
    assert pki.assess().status == "Valid"


@pytest.mark.parametrize(
    ("crl_options", "why"),
    [
        ({"this_update": NOW - dt.timedelta(days=10), "next_update": NOW - dt.timedelta(days=3)}, "stale"),
        ({"this_update": NOW + dt.timedelta(days=1)}, "not yet in effect"),
        ({"signer_key": "other"}, "does not verify"),
        ({"number": None}, "no CRLNumber"),
        ({"number_critical": True}, "CRLNumber is marked critical"),
        ({"idp_url": "http://elsewhere.example/other.crl"}, "not the URL it was fetched from"),
    ],
)
def test_an_unusable_crl_is_no_evidence(pki, crl_options, why):
    if crl_options.get("signer_key") == "other":
        crl_options = {"signer_key": issue("Impostor", kind="rsa").key}
    pki.server.route("/issuing.crl", body=make_crl(pki.intermediate, **crl_options))
    hard = pki.assess()
    assert hard.status == "RevocationCheckFailure"
    finding = next(f for f in hard.findings if f.code == "revocation-unknown")
    assert finding.severity == "error" and why in finding.message
    soft = pki.assess(revocation="soft")
    assert soft.status == "Valid"
    assert codes(soft)["revocation-unknown"] == "warning"


def test_an_issuer_without_crl_sign_cannot_vouch_for_its_crl(http_server):
    root = issue("No CRLSign Root", kind="rsa", ca=True, key_usage={"key_cert_sign": True, "digital_signature": True})
    leaf = issue("mail.contoso.com", issuer=root, dns_names=HOSTS, crl_urls=[http_server.url("/r.crl")])
    http_server.route("/r.crl", body=make_crl(root))
    fetcher = Fetcher(allow=[f"127.0.0.1:{http_server.port}"])
    result = assess(bundle(leaf), trust=trust(root), fetcher=fetcher)
    assert result.status == "RevocationCheckFailure"
    assert "cRLSign" in next(f.message for f in result.findings if f.code == "revocation-unknown")


def test_revocation_off_is_said(pki):
    result = pki.assess(revocation="off")
    assert result.status == "Valid"
    assert codes(result)["revocation-not-checked"] == "info"
    assert pki.server.requests == []


def test_a_supplied_crl_works_offline(pki):
    crl = parse_crl(make_crl(pki.intermediate, [(pki.leaf.cert.serial_number, None, NOW)]), "issuing.crl")
    root_crl = parse_crl(make_crl(pki.root), "root.crl")
    result = pki.assess(crls=[crl, root_crl], offline=True)
    assert result.status == "Revoked"
    assert pki.server.requests == []


def test_a_supplied_crl_from_another_issuer_is_ignored(pki):
    stranger = issue("Stranger CA", kind="rsa", ca=True)
    crl = parse_crl(make_crl(stranger, [(pki.leaf.cert.serial_number, None, NOW)]), "stranger.crl")
    result = pki.assess(crls=[crl], offline=True)
    assert result.status == "RevocationCheckFailure"


def test_a_warm_cache_fetches_nothing(pki):
    cache = FetchCache()
    assert pki.assess(cache=cache).status == "Valid"
    fetched = len(pki.server.requests)
    assert pki.assess(cache=cache).status == "Valid"
    assert len(pki.server.requests) == fetched


SPENT = pytest.mark.parametrize("spent", [{"max_attempts": 0}, {"deadline": 0}], ids=["budget", "deadline"])


@SPENT
def test_a_crl_url_refused_by_a_spent_fetcher_is_fetched_by_the_next_assessment(pki, spent):
    cache = FetchCache()
    refused = pki.assess(fetcher=pki.fetcher(**spent), cache=cache)
    assert refused.status == "RevocationCheckFailure"
    assert pki.server.requests == []
    why = "the fetch budget is spent" if "max_attempts" in spent else "the fetch deadline has passed"
    assert f"{pki.server.url('/issuing.crl')}: refused: {why}" in refused.fetches
    result = pki.assess(cache=cache)
    assert result.status == "Valid"
    assert f"{pki.server.url('/issuing.crl')}: ok" in result.fetches


@SPENT
def test_an_aia_url_refused_by_a_spent_fetcher_is_fetched_by_the_next_assessment(pki, spent):
    cache = FetchCache()
    assert pki.assess(chain=(), fetcher=pki.fetcher(**spent), cache=cache).status == "Untrusted"
    assert pki.server.requests == []
    result = pki.assess(chain=(), cache=cache)
    assert result.status == "Valid"
    assert [e.source for e in result.path] == ["delivered", "aia", "trust store"]


def test_a_crl_url_that_failed_is_not_asked_again_by_the_next_assessment(pki):
    pki.server.route("/issuing.crl", status=404)
    cache = FetchCache()
    assert pki.assess(cache=cache).status == "RevocationCheckFailure"
    asked = pki.server.paths().count("/issuing.crl")
    pki.publish_crls()
    result = pki.assess(cache=cache)
    assert result.status == "RevocationCheckFailure"
    assert "failed moments ago" in next(f.message for f in result.findings if f.code == "revocation-unknown")
    assert pki.server.paths().count("/issuing.crl") == asked == 1


def test_a_crl_server_that_is_down_is_revocation_check_failure_after_retries(pki):
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        dead = placeholder.getsockname()[1]
    leaf = pki.new_leaf(crl_urls=[f"http://127.0.0.1:{dead}/issuing.crl"])
    fetcher = Fetcher(
        allow=[f"127.0.0.1:{pki.server.port}", f"127.0.0.1:{dead}"], limits=FetchLimits(retry_backoff=0.01)
    )
    result = pki.assess(leaf, fetcher=fetcher)
    assert result.status == "RevocationCheckFailure"
    assert "cannot connect" in next(f.message for f in result.findings if f.code == "revocation-unknown")
    assert [f.split(": ", 1)[1] for f in result.fetches if str(dead) in f] == ["cannot connect", "cannot connect"]


def test_a_20_mb_crl_is_used_under_the_default_cap_and_refused_under_a_smaller_one(pki):
    crl = big_crl_der(
        pki.intermediate.cert.subject.public_bytes(),
        pki.intermediate.key,
        420_000,
        this_update=NOW - dt.timedelta(hours=1),
        next_update=NOW + dt.timedelta(days=1),
        include_serials=[pki.leaf.cert.serial_number],
    )
    assert len(crl) > 20_000_000
    pki.server.route("/issuing.crl", body=crl)
    result = pki.assess()
    assert result.status == "Revoked"
    limits = {"max_bytes": {"aia": 65536, "ocsp": 65536, "crl": 16 * 1024 * 1024}}
    capped = pki.assess(fetcher=pki.fetcher(**limits))
    assert capped.status == "RevocationCheckFailure"
    assert "larger than the 16 MiB allowed" in next(
        f.message for f in capped.findings if f.code == "revocation-unknown"
    )


# -- revocation: OCSP, against the real openssl responder --------------------------------------------------


@pytest.fixture
def ocsp_pki(pki, ocsp_responder):
    """The same PKI, the leaf with an OCSP URL served by `openssl ocsp` with a delegated responder."""
    signer = issue(
        "Contoso OCSP Responder",
        issuer=pki.intermediate,
        kind="rsa",
        eku=[ExtendedKeyUsageOID.OCSP_SIGNING],
        ocsp_no_check=True,
    )
    responder = ocsp_responder(pki.intermediate, signer)
    pki.leaf = pki.new_leaf(ocsp_urls=[responder.url], crl_urls=[])
    pki.responder = responder
    return pki


def ocsp_fetcher(pki) -> Fetcher:
    return Fetcher(
        allow=[f"127.0.0.1:{pki.server.port}", f"127.0.0.1:{pki.responder.port}"],
        limits=FetchLimits(retry_backoff=0.01),
    )


def test_ocsp_good(ocsp_pki):
    ocsp_pki.responder.add(ocsp_pki.leaf, "V")
    result = ocsp_pki.assess(fetcher=ocsp_fetcher(ocsp_pki))
    assert result.status == "Valid"
    assert f"{ocsp_pki.responder.url}: ok" in result.fetches
    assert ocsp_pki.responder.request_count >= 1


def test_ocsp_revoked(ocsp_pki):
    when = (NOW - dt.timedelta(hours=5)).replace(second=0)
    ocsp_pki.responder.add(ocsp_pki.leaf, "R", revoked_at=when, reason="keyCompromise")
    result = ocsp_pki.assess(fetcher=ocsp_fetcher(ocsp_pki))
    assert result.status == "Revoked"
    finding = next(f for f in result.findings if f.code == "revoked")
    assert "keyCompromise" in finding.message and "OCSP" in finding.message


def test_ocsp_responder_down_falls_back_to_the_crl(ocsp_pki):
    ocsp_pki.responder.stop()
    leaf = ocsp_pki.new_leaf(ocsp_urls=[ocsp_pki.responder.url])
    result = ocsp_pki.assess(leaf, fetcher=ocsp_fetcher(ocsp_pki))
    assert result.status == "Valid"


def test_ocsp_responder_down_and_no_crl_is_revocation_check_failure(ocsp_pki):
    ocsp_pki.responder.stop()
    result = ocsp_pki.assess(fetcher=ocsp_fetcher(ocsp_pki))
    assert result.status == "RevocationCheckFailure"


@SPENT
def test_an_ocsp_url_refused_by_a_spent_fetcher_is_asked_by_the_next_assessment(ocsp_pki, spent):
    ocsp_pki.responder.add(ocsp_pki.leaf, "V")
    cache = FetchCache()
    spent_fetcher = Fetcher(allow=[f"127.0.0.1:{ocsp_pki.responder.port}"], limits=FetchLimits(**spent))
    assert ocsp_pki.assess(fetcher=spent_fetcher, cache=cache).status == "RevocationCheckFailure"
    assert ocsp_pki.responder.request_count == 0
    result = ocsp_pki.assess(fetcher=ocsp_fetcher(ocsp_pki), cache=cache)
    assert result.status == "Valid"
    assert f"{ocsp_pki.responder.url}: ok" in result.fetches


def test_a_delegated_responder_without_ocsp_signing_is_refused(pki, ocsp_responder):
    signer = issue("Contoso Not A Responder", issuer=pki.intermediate, kind="rsa", eku=[SERVER_AUTH])
    responder = ocsp_responder(pki.intermediate, signer)
    pki.responder = responder
    leaf = pki.new_leaf(ocsp_urls=[responder.url], crl_urls=[])
    responder.add(leaf, "R", revoked_at=NOW, reason="keyCompromise")  # a forged "revoked" must not count either
    result = pki.assess(leaf, fetcher=ocsp_fetcher(pki))
    assert result.status == "RevocationCheckFailure"
    assert "lacks the OCSPSigning EKU" in next(f.message for f in result.findings if f.code == "revocation-unknown")


def test_an_ocsp_response_about_another_certificate_is_refused(pki):
    other = pki.new_leaf()
    response = ocsp_response(pki.intermediate, other, ocsp.OCSPCertStatus.GOOD)
    pki.server.route("/ocsp", body=response)
    leaf = pki.new_leaf(ocsp_urls=[pki.server.url("/ocsp")], crl_urls=[])
    result = pki.assess(leaf)
    assert result.status == "RevocationCheckFailure"
    assert "about another certificate" in next(f.message for f in result.findings if f.code == "revocation-unknown")


def test_a_replayed_ocsp_response_with_another_nonce_is_refused(pki):
    leaf = pki.new_leaf(ocsp_urls=[pki.server.url("/ocsp")], crl_urls=[])
    pki.server.route("/ocsp", body=ocsp_response(pki.intermediate, leaf, ocsp.OCSPCertStatus.GOOD, nonce=b"\1" * 32))
    result = pki.assess(leaf)
    assert result.status == "RevocationCheckFailure"
    assert "different nonce" in next(f.message for f in result.findings if f.code == "revocation-unknown")


def test_an_ocsp_response_signed_by_the_ca_itself_counts(pki):
    leaf = pki.new_leaf(ocsp_urls=[pki.server.url("/ocsp")], crl_urls=[])
    pki.server.route("/ocsp", body=ocsp_response(pki.intermediate, leaf, ocsp.OCSPCertStatus.GOOD))
    assert pki.assess(leaf).status == "Valid"


def ocsp_response(issuer: Issued, about: Issued, status, nonce: bytes | None = None) -> bytes:
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=about.cert,
            issuer=issuer.cert,
            algorithm=hashes.SHA1(),
            cert_status=status,
            this_update=NOW - dt.timedelta(minutes=1),
            next_update=NOW + dt.timedelta(hours=4),
            revocation_time=None,
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, issuer.cert)
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


# -- SSRF: URLs in certificates aimed at places they must not reach -----------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://168.63.129.16/machine?comp=goalstate",
        "http://10.0.0.1/ca.crl",
        "http://localhost/ca.crl",
        "http://127.0.0.1:{port}/issuing.crl",
        "https://crl.contoso.com/ca.crl",
        "ldap://ldap.contoso.com/CN=Contoso,DC=contoso?certificateRevocationList",
        "file:///etc/passwd",
    ],
)
@pytest.mark.parametrize("where", ["ocsp", "crl", "aia"])
def test_hostile_urls_in_certificates_are_refused_without_connecting(pki, http_server, url, where):
    url = url.format(port=http_server.port)
    leaf = pki.new_leaf(
        ocsp_urls=[url] if where == "ocsp" else [],
        crl_urls=[url] if where == "crl" else [],
        ca_issuers_urls=[url] if where == "aia" else [],
    )
    opened = []

    def connector(address, port, timeout):
        opened.append((address, port))
        return socket.create_connection((address, port), timeout=timeout)

    result = assess(
        bundle(leaf) if where == "aia" else bundle(leaf, pki.intermediate),
        trust=pki.trust,
        fetcher=Fetcher(connector=connector),
        revocation="hard",
    )
    assert opened == []
    assert http_server.connections == 0
    assert result.status == ("Untrusted" if where == "aia" else "RevocationCheckFailure")
    assert all(": refused: " in f for f in result.fetches)


def test_a_redirect_in_a_crl_url_is_not_followed(pki):
    pki.server.route("/issuing.crl", status=302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
    result = pki.assess()
    assert result.status == "RevocationCheckFailure"
    assert "redirect" in next(f.message for f in result.findings if f.code == "revocation-unknown")


def test_fetch_outcomes_never_reflect_bodies(pki):
    pki.server.route("/issuing.crl", body=b"<html>internal admin console secret-token</html>")
    result = pki.assess()
    text = repr(result.to_dict())
    assert "secret-token" not in text
    assert result.status == "RevocationCheckFailure"


def test_the_mozilla_store_is_the_default_and_knows_public_roots():
    store = TrustStore.mozilla()
    assert len(store.roots) > 100
    assert any("ISRG Root X1" in str(r.subject) for r in store.roots)


def test_a_bundle_loaded_from_pem_assesses_the_same(pki):
    loaded = load_certificates(pem_of([pki.leaf, pki.intermediate]), "mail.pem")
    assert assess(loaded, trust=pki.trust, fetcher=pki.fetcher(), hosts=HOSTS).status == "Valid"


def test_a_private_root_among_mozillas_is_found(pki):
    roots = TrustStore.from_certificates([*TrustStore.mozilla().roots, cert(pki.root)], "mozilla + contoso")
    result = pki.assess(trust=roots)
    assert result.status == "Valid", result.to_dict()
    assert result.path[-1].certificate == cert(pki.root)
    assert pki.assess(trust=TrustStore.mozilla()).status == "Untrusted"


def test_of_two_roots_with_one_name_the_one_whose_key_signed_is_used(pki):
    """A root rollover: the old and new root share a name; the key id picks the right one."""
    old_root = issue(make_name("Contoso Test Root", "Contoso"), kind="rsa", ca=True, path_length=1)
    roots = TrustStore.from_certificates([cert(old_root), cert(pki.root)], "rollover")
    assert roots.issuers_of(cert(pki.intermediate)) == [cert(pki.root)]
    result = pki.assess(trust=roots)
    assert result.status == "Valid", result.to_dict()
    assert result.path[-1].certificate == cert(pki.root)
    assert TrustStore.from_certificates([cert(old_root)], "old only").issuers_of(cert(pki.intermediate)) == []
