"""Self-tests of the test infrastructure: loopback HTTP server, the real openssl OCSP responder,
and the CRL / certificate helpers in `tests.chains` and `tests.pki`, cross-checked with openssl."""

from __future__ import annotations

import datetime as dt
import http.client
import os
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.chains import Issued, build_chain, issue, make_crl, make_name
from tests.pki import big_crl_der
from tests.servers import HttpServer, HttpsServer, LoopbackTls, OcspResponder, OcspResponderError

UTC = dt.timezone.utc


def _get(url: str, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60, check=False)


# --- HttpServer ----------------------------------------------------------------------------------


def test_routes_statuses_handler_and_recorded_requests(http_server: HttpServer):
    http_server.route("/ca.crl", b"crl bytes", headers={"Content-Type": "application/pkix-crl"})
    http_server.route("/boom", b"oops", status=500)
    http_server.route("/busy", status=429, headers={"Retry-After": "1"})
    http_server.route("/echo", handler=lambda method, path, headers, body: (201, {"X-Method": method}, body[::-1]))

    assert http_server.url("/ca.crl") == f"http://127.0.0.1:{http_server.port}/ca.crl"
    assert _get(http_server.url("/ca.crl"))[::2] == (200, b"crl bytes")
    assert _get(http_server.url("/ca.crl"))[1]["Content-Type"] == "application/pkix-crl"
    assert _get(http_server.url("/ca.crl?x=1"))[0] == 200  # the query string is optional in a route
    assert _get(http_server.url("/missing"))[0] == 404
    assert _get(http_server.url("/boom"))[::2] == (500, b"oops")
    status, headers, _ = _get(http_server.url("/busy"))
    assert (status, headers["Retry-After"]) == (429, "1")
    request = urllib.request.Request(http_server.url("/echo"), data=b"abc", headers={"X-Test": "yes"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert (answer.status, answer.headers["X-Method"], answer.read()) == (201, "POST", b"cba")

    last = http_server.requests[-1]
    assert (last.method, last.path, last.body, last.headers["X-Test"]) == ("POST", "/echo", b"abc", "yes")
    assert last.headers["host"] == f"127.0.0.1:{http_server.port}" and "content-LENGTH" in last.headers
    assert http_server.paths() == ["/ca.crl", "/ca.crl", "/ca.crl?x=1", "/missing", "/boom", "/busy", "/echo"]


def test_redirect(http_server: HttpServer):
    http_server.route("/target", b"here")
    http_server.redirect("/moved", http_server.url("/target"))
    status, _, body = _get(http_server.url("/moved"))
    assert (status, body) == (200, b"here")
    assert http_server.paths() == ["/moved", "/target"]
    connection = http.client.HTTPConnection("127.0.0.1", http_server.port, timeout=5)
    connection.request("GET", "/moved")
    answer = connection.getresponse()
    assert (answer.status, answer.getheader("Location")) == (302, http_server.url("/target"))
    connection.close()


def test_large_body_with_and_without_content_length(http_server: HttpServer):
    big = os.urandom(1024) * 20 * 1024  # 20 MiB
    http_server.route("/big", big)
    http_server.route("/unframed", big, content_length=False)
    http_server.route("/unframed-too", b"abc", headers={"content-length": None, "X-Kept": "1"})

    connection = http.client.HTTPConnection("127.0.0.1", http_server.port, timeout=10)
    connection.request("GET", "/big")
    answer = connection.getresponse()
    assert answer.getheader("Content-Length") == str(len(big))
    assert answer.read() == big
    connection.close()

    # No Content-Length: the body ends when the server closes; a capped client stops early.
    connection = http.client.HTTPConnection("127.0.0.1", http_server.port, timeout=10)
    connection.request("GET", "/unframed")
    answer = connection.getresponse()
    assert answer.getheader("Content-Length") is None
    assert answer.getheader("Connection") == "close"
    received = 0
    while chunk := answer.read(64 * 1024):
        received += len(chunk)
        if received > 1024 * 1024:
            break
    connection.close()
    assert received > 1024 * 1024

    status, _, body = _get(http_server.url("/unframed"))
    assert (status, len(body)) == (200, len(big))
    status, headers, body = _get(http_server.url("/unframed-too"))
    assert (status, body, headers["X-Kept"], "Content-Length" in headers) == (200, b"abc", "1", False)


def test_drip_and_delay_are_slow(http_server: HttpServer):
    http_server.route("/drip", b"x" * 40, drip=(10, 0.1))  # four pieces, 0.3 s in all
    started = time.monotonic()
    assert _get(http_server.url("/drip"))[2] == b"x" * 40
    assert time.monotonic() - started >= 0.25

    http_server.route("/slow", b"late", delay=2.0)
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        _get(http_server.url("/slow"), timeout=0.2)


def test_stop_cuts_a_long_drip():
    server = HttpServer().start()
    server.route("/forever", b"x" * 1000, drip=(1, 10.0))
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.sendall(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
    received = sock.recv(1024)
    assert received.startswith(b"HTTP/1.1 200")
    server.stop()
    # The rest of the drip would take hours: the connection ends instead (a recv that blocks past the
    # socket's timeout fails the test with TimeoutError).
    while chunk := sock.recv(1024):
        received += chunk
    sock.close()
    assert received.count(b"x") < 1000


def test_connections_are_counted_at_accept(http_server: HttpServer):
    silent = socket.create_connection(("127.0.0.1", http_server.port), timeout=5)
    deadline = time.monotonic() + 5
    while http_server.connections < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert http_server.connections == 1
    assert http_server.requests == []
    silent.close()
    _get(http_server.url("/nothing"))
    assert (http_server.connections, len(http_server.requests)) == (2, 1)


def test_with_tls_it_serves_https_that_only_clients_trusting_the_test_ca_accept(keyvault_tls: LoopbackTls):
    with HttpServer(keyvault_tls) as server:
        server.route("/ca.crl", b"crl bytes")
        assert server.url("/ca.crl") == f"https://127.0.0.1:{server.port}/ca.crl"
        trusting = ssl.create_default_context(cafile=str(keyvault_tls.ca_pem))
        with urllib.request.urlopen(server.url("/ca.crl"), timeout=5, context=trusting) as answer:
            assert answer.read() == b"crl bytes"
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(server.url("/ca.crl"), timeout=5, context=ssl.create_default_context())
        assert server.paths() == ["/ca.crl"]  # the refused handshake never became a request


def test_an_https_server_without_tls_makes_its_own_ca_and_removes_it_on_stop():
    with HttpsServer() as server:
        ca_pem = server.tls.ca_pem
        server.route("/", b"hello")
        trusting = ssl.create_default_context(cafile=str(ca_pem))
        with urllib.request.urlopen(server.url("/"), timeout=5, context=trusting) as answer:
            assert answer.read() == b"hello"
    assert not ca_pem.parent.exists()


# --- OcspResponder -------------------------------------------------------------------------------


def _ask(url: str, cert: Issued, issuer: Issued) -> tuple[ocsp.OCSPResponse, bytes]:
    """POST an OCSP request with a nonce, as a client would."""
    nonce = os.urandom(16)
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(cert.cert, issuer.cert, hashes.SHA1())
        .add_extension(x509.OCSPNonce(nonce), critical=False)
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    http_request = urllib.request.Request(url, data=request, headers={"Content-Type": "application/ocsp-request"})
    with urllib.request.urlopen(http_request, timeout=10) as answer:
        assert answer.headers["Content-Type"] == "application/ocsp-response"
        return ocsp.load_der_ocsp_response(answer.read()), nonce


@pytest.mark.parametrize("delegated", [True, False], ids=["delegated-responder", "ca-signs"])
def test_openssl_ocsp_responder(ocsp_responder: Callable[..., OcspResponder], delegated: bool):
    ca = issue(make_name("OCSP Test CA", "Contoso"), ca=True)
    signer = (
        issue(
            "OCSP Responder",
            issuer=ca,
            eku=[ExtendedKeyUsageOID.OCSP_SIGNING],
            ocsp_no_check=True,
            key_usage={"digital_signature": True},
        )
        if delegated
        else ca
    )
    responder = ocsp_responder(ca, signer if delegated else None)
    assert responder.url == f"http://127.0.0.1:{responder.port}/"
    good = issue("good.contoso.com", issuer=ca, ocsp_urls=[responder.url])
    bad = issue("bad.contoso.com", issuer=ca, ocsp_urls=[responder.url])
    responder.add(good, "V")

    response, _ = _ask(responder.url, bad, ca)
    assert response.certificate_status == ocsp.OCSPCertStatus.UNKNOWN

    revoked_at = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(days=2)
    responder.add(bad, "R", revoked_at=revoked_at, reason="keyCompromise")  # effective at once (restart)
    port = responder.port
    response, nonce = _ask(responder.url, bad, ca)
    assert responder.port == port
    assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_time_utc == revoked_at
    assert response.revocation_reason == x509.ReasonFlags.key_compromise
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce

    response, nonce = _ask(responder.url, good, ca)
    assert response.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert response.serial_number == good.cert.serial_number
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
    assert response.next_update_utc is not None and response.next_update_utc > response.this_update_utc
    assert response.responder_name == signer.cert.subject
    assert [c.serial_number for c in response.certificates] == [signer.cert.serial_number]
    signer.cert.public_key().verify(
        response.signature, response.tbs_response_bytes, ec.ECDSA(response.signature_hash_algorithm)
    )
    assert responder.request_count == 3

    process_log = responder.log
    responder.stop()
    assert not responder.running
    assert "Received request" in process_log


def test_ocsp_responder_startup_failure_is_clear(tmp_path: Path):
    ca = issue("Broken CA", ca=True)
    with pytest.raises(OcspResponderError, match=r"(?s)exited with status.*no-such-option"):
        OcspResponder(ca, directory=tmp_path, extra_args=["-no-such-option"])


# --- CRLs and certificate options ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_big_crl_der(tmp_path: Path, kind: str):
    ca = issue(make_name("Big CRL CA", "Contoso"), ca=True, kind=kind)
    now = dt.datetime.now(UTC).replace(microsecond=0)
    extra = [0x1234, 2**150 + 7]
    crl_der = big_crl_der(
        ca.cert.subject.public_bytes(),
        ca.key,
        10_000,
        this_update=now,
        next_update=now + dt.timedelta(days=7),
        number=42,
        include_serials=extra,
    )
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    (tmp_path / "big.crl").write_bytes(crl_der)
    result = _openssl("crl", "-inform", "DER", "-in", str(tmp_path / "big.crl"), "-CAfile", str(tmp_path / "ca.pem"))
    assert "verify OK" in result.stdout + result.stderr, result.stderr

    crl = x509.load_der_x509_crl(crl_der)
    assert crl.is_signature_valid(ca.cert.public_key())
    assert len(crl) == 10_002
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 42
    assert crl.next_update_utc == now + dt.timedelta(days=7)
    for serial in extra:
        entry = crl.get_revoked_certificate_by_serial_number(serial)
        assert entry is not None
        assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    again = x509.load_der_x509_crl(
        big_crl_der(ca.cert.subject.public_bytes(), ca.key, 10_000, this_update=now, next_update=None)
    )
    assert {e.serial_number for e in again} == {e.serial_number for e in crl} - set(extra)  # same seed


def test_make_crl_and_sha1_signatures_verify_with_openssl(tmp_path: Path):
    chain = build_chain("rsa", leaf_options={"crl_urls": ["http://127.0.0.1:1/a.crl"], "serial": 0x77})
    revoked_at = dt.datetime(2025, 3, 1, tzinfo=UTC)
    crl_der = make_crl(
        chain.intermediate,
        [(0x77, x509.ReasonFlags.superseded, revoked_at), (0x78, None, revoked_at)],
        number=9,
        idp_url="http://127.0.0.1:1/a.crl",
        hash_algorithm=hashes.SHA1(),
    )
    crl = x509.load_der_x509_crl(crl_der)
    assert crl.signature_hash_algorithm is not None and crl.signature_hash_algorithm.name == "sha1"
    assert crl.get_revoked_certificate_by_serial_number(0x77).revocation_date_utc == revoked_at
    idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
    assert idp.critical and idp.value.full_name == [x509.UniformResourceIdentifier("http://127.0.0.1:1/a.crl")]
    (tmp_path / "int.pem").write_bytes(chain.intermediate.pem)
    (tmp_path / "a.crl").write_bytes(crl_der)
    result = _openssl("crl", "-inform", "DER", "-in", str(tmp_path / "a.crl"), "-CAfile", str(tmp_path / "int.pem"))
    assert "verify OK" in result.stdout + result.stderr, result.stderr

    wrong = x509.load_der_x509_crl(make_crl(chain.intermediate, number=None, signer_key=chain.root.key))
    assert not wrong.is_signature_valid(chain.intermediate.cert.public_key())
    with pytest.raises(x509.ExtensionNotFound):
        wrong.extensions.get_extension_for_class(x509.CRLNumber)

    ca = issue("SHA1 CA", ca=True, kind="ec", hash_algorithm=hashes.SHA1())
    leaf = issue("sha1.contoso.com", issuer=ca, kind="ec", hash_algorithm=hashes.SHA1())
    assert leaf.cert.signature_algorithm_oid.dotted_string == "1.2.840.10045.4.1"
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    (tmp_path / "leaf.pem").write_bytes(leaf.pem)
    result = _openssl("verify", "-auth_level", "0", "-CAfile", str(tmp_path / "ca.pem"), str(tmp_path / "leaf.pem"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_issue_extension_options():
    leaf = issue(
        "opts.contoso.com",
        kind="ed25519",
        ocsp_urls=["http://127.0.0.1:1/ocsp"],
        ca_issuers_urls=["http://127.0.0.1:1/ca.crt"],
        crl_urls=["http://127.0.0.1:1/1.crl", "http://127.0.0.1:1/2.crl"],
        eku=(),
        key_usage=False,
    )
    extensions = leaf.cert.extensions
    aia = extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [d.access_method._name for d in aia] == ["OCSP", "caIssuers"]
    assert len(extensions.get_extension_for_class(x509.CRLDistributionPoints).value) == 2
    for absent in (x509.ExtendedKeyUsage, x509.KeyUsage, x509.OCSPNoCheck):
        with pytest.raises(x509.ExtensionNotFound):
            extensions.get_extension_for_class(absent)
    ca = issue("EKU CA", ca=True, kind="p384", eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    assert list(ca.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey) and ca.key.curve.name == "secp384r1"
