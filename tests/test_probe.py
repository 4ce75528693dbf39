"""The STARTTLS probe against real SMTP servers on 127.0.0.1: aiosmtpd serving the old certificate, then the
new one without its intermediate, then the full chain; servers that refuse, stall or drip; the SSRF guard;
and `certsync probe` as a real process on every exit path."""

from __future__ import annotations

import hashlib
import json
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from shared.errors import CertsyncError
from shared.validation.assessment import TrustStore
from shared.validation.fetch import Fetcher
from shared.validation.probe import ProbeResult, normalise_thumbprint, parse_endpoint, probe
from shared.x509.certificate import Certificate
from tests.chains import Issued, issue, make_name, pem_of
from tests.smtp import SmtpTlsServer, StallingServer
from tests.test_cli import assert_bad_input, run

EKU = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
HOSTS = ["mail.contoso.com", "autodiscover.contoso.com"]


def thumbprint(cert: Issued) -> str:
    return hashlib.sha1(cert.der).hexdigest().upper()


@dataclass
class Pki:
    """One root; R10 issued the certificate in use, R11 its renewal (a new intermediate, as in 2024)."""

    root: Issued
    r10: Issued
    r11: Issued
    old: Issued
    new: Issued
    trust: TrustStore
    files: dict[str, Path]

    def key_texts(self) -> list[str]:
        """Pieces of every private key PEM: none may appear in any output."""
        texts = []
        for cert in (self.old, self.new):
            body = cert.key_pem.decode().splitlines()[1:-1]
            texts += [body[0], body[-1]]
        return texts


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    root = issue(make_name("Probe Test Root", "Contoso"), ca=True, path_length=1)
    r10 = issue(make_name("R10", "Contoso"), issuer=root, ca=True, path_length=0)
    r11 = issue(make_name("R11", "Contoso"), issuer=root, ca=True, path_length=0)
    old = issue(make_name("mail.contoso.com", "Contoso"), issuer=r10, dns_names=HOSTS, eku=EKU)
    new = issue(make_name("mail.contoso.com", "Contoso"), issuer=r11, dns_names=HOSTS, eku=EKU)
    contents = {
        "old-full.pem": pem_of([old, r10]),
        "old-key.pem": old.key_pem,
        "new-leaf.pem": new.pem,
        "new-full.pem": pem_of([new, r11]),
        "new-key.pem": new.key_pem,
        "root.pem": root.pem,
    }
    files = {}
    for name, data in contents.items():
        files[name] = tmp_path / name
        files[name].write_bytes(data)
    trust = TrustStore.from_certificates([Certificate.from_der(root.der)], "probe test root")
    return Pki(root, r10, r11, old, new, trust, files)


def assert_no_key_material(text: str, pki: Pki) -> None:
    assert "PRIVATE KEY" not in text
    for piece in pki.key_texts():
        assert piece not in text


def free_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------------------------------
# The renewal, as the servers serve it


def test_old_certificate_then_new_without_its_intermediate_then_the_full_chain(pki):
    expected = thumbprint(pki.new)
    with SmtpTlsServer(pki.files["old-full.pem"], pki.files["old-key.pem"]) as server:
        before = probe(server.endpoint, expected_thumbprint=expected, trust=pki.trust)
        server.present(pki.files["new-leaf.pem"], pki.files["new-key.pem"])
        half = probe(server.endpoint, expected_thumbprint=expected, trust=pki.trust)
        server.present(pki.files["new-full.pem"], pki.files["new-key.pem"])
        done = probe(server.endpoint, expected_thumbprint=expected, trust=pki.trust)
    results = [before, half, done]
    assert [r.ok for r in results] == [True, True, True], [r.error for r in results]
    assert [[c.thumbprint for c in r.chain] for r in results] == [
        [thumbprint(pki.old), thumbprint(pki.r10)],
        [expected],
        [expected, thumbprint(pki.r11)],
    ]
    assert [r.is_expected for r in results] == [False, True, True]
    assert [r.intermediates_sent for r in results] == [True, False, True]
    assert [r.assessment.status for r in results] == ["Valid", "Untrusted", "Valid"]
    assert [r.passed for r in results] == [False, False, True]
    missing = [f for f in half.assessment.findings if f.code == "chain-incomplete"]
    assert len(missing) == 1 and missing[0].severity == "error" and "CN=R11, O=Contoso, C=US" in missing[0].message
    for result in results:
        assert result.banner.startswith("220 mail.contoso.test")
        assert result.starttls_offered and result.tls_version in ("TLSv1.2", "TLSv1.3") and result.cipher
        assert result.endpoint == server.endpoint and (result.host, result.port) == ("127.0.0.1", server.port)
        assert result.expected_thumbprint == expected


def test_an_intermediate_only_aia_finds_is_not_sent_even_when_the_assessment_is_valid(pki, http_server, tmp_path):
    new = issue(
        make_name("mail.contoso.com", "Contoso"),
        issuer=pki.r11,
        dns_names=HOSTS,
        eku=EKU,
        ca_issuers_urls=[http_server.url("/r11.cer")],
    )
    http_server.route("/r11.cer", body=pki.r11.der)
    (tmp_path / "aia.pem").write_bytes(new.pem)
    (tmp_path / "aia-key.pem").write_bytes(new.key_pem)
    fetcher = Fetcher(allow=[f"127.0.0.1:{http_server.port}"])
    with SmtpTlsServer(tmp_path / "aia.pem", tmp_path / "aia-key.pem") as server:
        result = probe(server.endpoint, expected_thumbprint=thumbprint(new), trust=pki.trust, fetcher=fetcher)
    assert result.ok and result.is_expected
    # Windows would fetch it too, but Exchange Online sees only what the server sends.
    assert result.assessment.status == "Valid"
    assert [e.source for e in result.assessment.path] == ["delivered", "aia", "trust store"]
    assert result.intermediates_sent is False and not result.passed
    assert http_server.paths() == ["/r11.cer"]  # fetched by the reported assessment only, not to judge "sent"


def test_the_server_name_is_sent_as_sni_and_is_the_name_the_certificate_must_cover(pki):
    with SmtpTlsServer(pki.files["new-full.pem"], pki.files["new-key.pem"]) as server:
        covered = probe(server.endpoint, trust=pki.trust, server_name="mail.contoso.com")
        other = probe(server.endpoint, trust=pki.trust, server_name="smtp.fabrikam.com")
        by_address = probe(server.endpoint, trust=pki.trust)
    assert server.server_names == ["mail.contoso.com", "smtp.fabrikam.com", None]
    assert covered.assessment.status == "Valid" and covered.passed
    assert other.assessment.status == "Invalid"
    assert [f.code for f in other.assessment.findings if f.severity == "error"] == ["host-not-covered"]
    assert by_address.is_expected is None and by_address.passed  # no expectation: nothing to compare


def test_to_dict_is_json_with_the_chain_as_served_and_no_key_material(pki):
    with SmtpTlsServer(pki.files["new-full.pem"], pki.files["new-key.pem"]) as server:
        result = probe(server.endpoint, expected_thumbprint=thumbprint(pki.new).lower(), trust=pki.trust)
    report = result.to_dict()
    text = json.dumps(report)
    assert_no_key_material(text, pki)
    assert "BEGIN" not in text
    assert set(report) == {
        "endpoint",
        "host",
        "port",
        "ok",
        "error",
        "banner",
        "starttls_offered",
        "tls_version",
        "cipher",
        "chain",
        "expected_thumbprint",
        "is_expected",
        "intermediates_sent",
        "assessment",
    }
    assert report["chain"] == [
        {
            "subject": "CN=mail.contoso.com, O=Contoso, C=US",
            "issuer": "CN=R11, O=Contoso, C=US",
            "thumbprint": thumbprint(pki.new),
            "not_after": pki.new.cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        {
            "subject": "CN=R11, O=Contoso, C=US",
            "issuer": "CN=Probe Test Root, O=Contoso, C=US",
            "thumbprint": thumbprint(pki.r11),
            "not_after": pki.r11.cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    ]
    assert report["expected_thumbprint"] == thumbprint(pki.new) and report["is_expected"] is True
    assert report["assessment"]["status"] == "Valid"
    assert (
        report["assessment"]["tls_certificate_name"]
        == "<I>CN=R11, O=Contoso, C=US<S>CN=mail.contoso.com, O=Contoso, C=US"
    )
    assert report["assessment"]["revocation_policy"] == "soft"


# --------------------------------------------------------------------------------------------------
# Endpoints that cannot be probed: one line each, within the deadline


def assert_failed(result: ProbeResult, endpoint: str, *words: str) -> None:
    assert not result.ok and not result.passed
    assert result.chain == () and result.assessment is None
    assert result.is_expected is None and result.intermediates_sent is None
    assert "\n" not in result.error and result.error.startswith(f"{endpoint}: ")
    for word in words:
        assert word in result.error, (word, result.error)


def test_a_refused_connection_is_one_line_naming_the_endpoint():
    endpoint = f"127.0.0.1:{free_port()}"
    result = probe(endpoint, expected_thumbprint="AB" * 20)
    assert_failed(result, endpoint, "connection refused")
    assert result.banner is None and not result.starttls_offered


def test_a_server_that_offers_no_starttls_says_so(pki):
    with SmtpTlsServer(starttls=False) as server:
        result = probe(server.endpoint, trust=pki.trust)
    assert_failed(result, server.endpoint, "does not offer STARTTLS")
    assert result.banner.startswith("220 ") and result.starttls_offered is False


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        pytest.param("silent", ["no complete answer within 0.5 s", "waiting for the 220 greeting"], id="silent"),
        pytest.param("drip", ["no complete answer within 0.5 s", "waiting for the 220 greeting"], id="drip"),
        pytest.param("stall-tls", ["no complete answer within 0.5 s", "the TLS handshake"], id="stall-tls"),
        pytest.param("drip-tls", ["no complete answer within 0.5 s", "the TLS handshake"], id="drip-tls"),
        pytest.param("reject", ["greeted with 554 5.7.1", "instead of 220"], id="reject"),
        pytest.param("starttls-454", ["STARTTLS was answered 454 4.7.0"], id="starttls-454"),
        pytest.param("no-tls", ["the TLS handshake failed"], id="no-tls"),
    ],
)
def test_a_misbehaving_server_fails_with_what_went_wrong(mode, words):
    with StallingServer(mode) as server:
        result = probe(server.endpoint, timeout=0.5)
    assert server.accepted == 1
    assert_failed(result, server.endpoint, *words)


# --------------------------------------------------------------------------------------------------
# Guarded: what the pipeline runs for endpoints from targets and Key Vault tags


def test_guarded_refuses_loopback_without_connecting():
    with StallingServer("reject") as server:
        plain = probe(server.endpoint, guarded=True)
        port_25_only = probe(server.endpoint, guarded=True, allow_hosts=("127.0.0.1",))  # no port: 25
        by_name = probe(f"mail.contoso.test:{server.port}", guarded=True, resolver=lambda host, port: ["127.0.0.1"])
    assert server.accepted == 0
    assert_failed(plain, server.endpoint, "127.0.0.1 is not a global address", "CERTSYNC_ALLOW_HOSTS")
    assert_failed(port_25_only, server.endpoint, "not a global address")
    assert_failed(by_name, f"mail.contoso.test:{server.port}", "mail.contoso.test resolves to 127.0.0.1")


def test_guarded_admits_an_allow_listed_endpoint_and_connects_to_the_address_resolved_once(pki):
    answers = iter([["127.0.0.1"], ["203.0.113.9"]])  # a rebinding resolver: a second lookup would move it
    with SmtpTlsServer(pki.files["new-full.pem"], pki.files["new-key.pem"]) as server:
        by_address = probe(server.endpoint, guarded=True, allow_hosts=(server.endpoint,), trust=pki.trust)
        by_name = probe(
            f"mail.contoso.com:{server.port}",
            guarded=True,
            allow_hosts=(f"MAIL.contoso.com:{server.port}",),
            resolver=lambda host, port: next(answers),
            trust=pki.trust,
            expected_thumbprint=thumbprint(pki.new),
        )
    assert by_address.ok and by_address.passed
    assert by_name.ok and by_name.passed, by_name.error
    assert server.server_names[-1] == "mail.contoso.com"  # SNI and host check by name, connection by address


def test_guarded_never_probes_a_metadata_address_even_when_allow_listed():
    result = probe(
        "metadata.test:25",
        guarded=True,
        allow_hosts=("metadata.test:25",),
        resolver=lambda host, port: ["169.254.169.254"],
        timeout=0.5,
    )
    assert_failed(result, "metadata.test:25", "instance-metadata")


# --------------------------------------------------------------------------------------------------
# Arguments


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail.contoso.com", ("mail.contoso.com", 25)),
        ("  Mail.Contoso.COM.:587 ", ("mail.contoso.com", 587)),
        ("10.0.0.5:2525", ("10.0.0.5", 2525)),
        ("[2001:db8::1]:25", ("2001:db8::1", 25)),
        ("[2001:DB8::1]", ("2001:db8::1", 25)),
        ("2001:db8::1", ("2001:db8::1", 25)),
    ],
)
def test_endpoints_parse_with_port_25_by_default(text, expected):
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "mail.contoso.com:", "mail.contoso.com:0", "mail.contoso.com:65536", "mail.contoso.com:smtp",
     "*.contoso.com", "mail contoso.com", "[mail.contoso.com]:25", "[2001:db8::1", "smtp://mail.contoso.com",
     "user@mail.contoso.com", "mail.contoso.com:25/"],
)  # fmt: skip
def test_bad_endpoints_are_one_line_errors(text):
    with pytest.raises(CertsyncError) as info:
        probe(text)
    message = str(info.value)
    assert message.startswith("probe endpoint ") and "give HOST or HOST:PORT" in message and "\n" not in message


def test_thumbprints_are_normalised_and_checked():
    value = "ab:cd " + "EF" * 18
    assert normalise_thumbprint(value) == "ABCD" + "EF" * 18
    with pytest.raises(CertsyncError, match="not 40 hex digits"):
        probe("127.0.0.1:25", expected_thumbprint="XYZ")


# --------------------------------------------------------------------------------------------------
# certsync probe, as an admin runs it


def line_of(stdout: str, label: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith(label))[len(label) :].strip()


def test_cli_exits_0_when_the_new_certificate_is_served_with_its_chain(pki):
    with SmtpTlsServer(pki.files["new-full.pem"], pki.files["new-key.pem"]) as server:
        result = run("probe", server.endpoint, "--expect", thumbprint(pki.new), "--trust", pki.files["root.pem"])
        by_file = run(
            "probe", server.endpoint, "--expect-file", pki.files["new-leaf.pem"], "--trust", pki.files["root.pem"]
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert by_file.returncode == 0, by_file.stdout + by_file.stderr
    out = result.stdout
    assert line_of(out, "Endpoint") == server.endpoint
    assert line_of(out, "Banner").startswith("220 mail.contoso.test")
    assert line_of(out, "TLS").startswith("TLSv1.")
    assert (
        line_of(out, "Served chain")
        == f"1. CN=mail.contoso.com, O=Contoso, C=US  [until {pki.new.cert.not_valid_after_utc:%Y-%m-%d}]"
    )
    assert f"issued by CN=R11, O=Contoso, C=US; thumbprint {thumbprint(pki.new)}" in out
    assert "2. CN=R11, O=Contoso, C=US" in out
    assert line_of(out, "TlsCertificateName") == "<I>CN=R11, O=Contoso, C=US<S>CN=mail.contoso.com, O=Contoso, C=US"
    assert line_of(out, "New certificate") == "yes"
    assert line_of(out, "Intermediates sent") == "yes"
    assert line_of(out, "Status") == "Valid (revocation soft)"
    assert result.stderr == ""
    assert_no_key_material(out, pki)


def test_cli_exits_1_while_the_old_certificate_is_served(pki):
    with SmtpTlsServer(pki.files["old-full.pem"], pki.files["old-key.pem"]) as server:
        result = run("probe", server.endpoint, "--expect", thumbprint(pki.new), "--trust", pki.files["root.pem"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert line_of(result.stdout, "New certificate") == f"NO: expected {thumbprint(pki.new)}"
    assert line_of(result.stdout, "Intermediates sent") == "yes"
    assert_no_key_material(result.stdout + result.stderr, pki)


def test_cli_exits_1_when_the_intermediate_is_not_sent_and_says_how_to_fix_it(pki):
    with SmtpTlsServer(pki.files["new-leaf.pem"], pki.files["new-key.pem"]) as server:
        result = run("probe", server.endpoint, "--expect", thumbprint(pki.new), "--trust", pki.files["root.pem"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert line_of(result.stdout, "New certificate") == "yes"
    assert line_of(result.stdout, "Intermediates sent").startswith("NO")
    assert line_of(result.stdout, "Status") == "Untrusted (revocation soft)"
    assert "Fix: install the intermediate certificate into the server's intermediate store" in result.stdout
    assert "ERROR    chain-incomplete: " in result.stdout
    assert_no_key_material(result.stdout + result.stderr, pki)


def test_cli_json_has_the_probe_result_shape_and_the_same_exit_codes(pki):
    with SmtpTlsServer(pki.files["new-leaf.pem"], pki.files["new-key.pem"]) as server:
        half = run(
            "probe", server.endpoint, "--expect", thumbprint(pki.new), "--trust", pki.files["root.pem"], "--json"
        )
        server.present(pki.files["new-full.pem"], pki.files["new-key.pem"])
        done = run(
            "probe", server.endpoint, "--expect", thumbprint(pki.new), "--trust", pki.files["root.pem"], "--json"
        )
    assert (half.returncode, done.returncode) == (1, 0), half.stderr + done.stderr
    for result, sent in ((half, False), (done, True)):
        report = json.loads(result.stdout)
        assert report["endpoint"] == server.endpoint and report["ok"] is True and report["error"] is None
        assert report["is_expected"] is True and report["intermediates_sent"] is sent
        assert [set(c) for c in report["chain"]] == [{"subject", "issuer", "thumbprint", "not_after"}] * len(
            report["chain"]
        )
        assert {"status", "findings", "path", "tls_certificate_name"} <= set(report["assessment"])
        assert_no_key_material(result.stdout + result.stderr, pki)
    assert json.loads(done.stdout)["assessment"]["status"] == "Valid"


def test_cli_exits_2_with_one_line_when_the_endpoint_cannot_be_probed(pki):
    endpoint = f"127.0.0.1:{free_port()}"
    refused = run("probe", endpoint, "--json")
    assert_bad_input(refused, endpoint, "connection refused", "check that the SMTP service runs there")
    with SmtpTlsServer(starttls=False) as server:
        plain = run("probe", server.endpoint)
    assert_bad_input(plain, server.endpoint, "does not offer STARTTLS")
    with StallingServer("silent") as server:
        silent = run("probe", server.endpoint, "--timeout", "0.5")
    assert_bad_input(silent, server.endpoint, "no complete answer within 0.5 s")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param(["mail.contoso.com:99999"], ["probe endpoint", "port"], id="port"),
        pytest.param(["127.0.0.1:25", "--expect", "not-a-thumbprint"], ["not 40 hex digits"], id="expect"),
        pytest.param(["127.0.0.1:25", "--timeout", "0"], ["timeout"], id="timeout"),
        pytest.param(["127.0.0.1:25", "--servername", "10.0.0.1"], ["server name", "DNS name"], id="servername"),
        pytest.param(["127.0.0.1:25", "--expect-file", "/nonexistent.pem"], ["/nonexistent.pem"], id="expect-file"),
    ],
)
def test_cli_bad_input_exits_2_before_connecting(args, words):
    assert_bad_input(run("probe", *args), *words)
