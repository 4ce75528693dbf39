"""The guarded fetcher against real loopback servers: what it admits, what it refuses before connecting,
and the bounds it keeps (size, time, attempts) whatever the server does."""

from __future__ import annotations

import datetime as dt
import socket

import pytest

from shared.errors import CertsyncError
from shared.validation.crl import parse_crl
from shared.validation.fetch import Fetcher, FetchError, FetchLimits, FetchRefused, address_problem, parse_allow_entry
from tests.chains import issue, make_crl, make_name
from tests.pki import big_crl_der


class Recorder:
    """The connector seam: records every connection the fetcher opens, then opens it for real."""

    def __init__(self) -> None:
        self.connections: list[tuple[str, int]] = []

    def __call__(self, address: str, port: int, timeout: float) -> socket.socket:
        self.connections.append((address, port))
        return socket.create_connection((address, port), timeout=timeout)


def allowed(server, **kwargs) -> Fetcher:
    return Fetcher(allow=[f"127.0.0.1:{server.port}"], **kwargs)


def test_an_allow_listed_loopback_server_is_fetched_with_its_host_header(http_server):
    http_server.route("/ca.crl", body=b"crl bytes")
    assert allowed(http_server).get(http_server.url("/ca.crl"), "crl") == b"crl bytes"
    request = http_server.requests[-1]
    assert request.method == "GET"
    assert request.headers["Host"] == f"127.0.0.1:{http_server.port}"


def test_a_name_is_resolved_once_and_the_connection_goes_to_the_pinned_address(http_server):
    http_server.route("/crl", body=b"ok")
    answers = iter([["127.0.0.1"], ["203.0.113.9"]])  # a rebinding resolver: a second lookup would move it
    recorder = Recorder()
    fetcher = Fetcher(
        allow=[f"pki.contoso.test:{http_server.port}"],
        resolver=lambda host, port: next(answers),
        connector=recorder,
    )
    assert fetcher.get(f"http://pki.contoso.test:{http_server.port}/crl", "crl") == b"ok"
    assert recorder.connections == [("127.0.0.1", http_server.port)]
    assert http_server.requests[-1].headers["Host"] == f"pki.contoso.test:{http_server.port}"


def test_a_post_carries_the_body_and_content_type(http_server):
    http_server.route("/ocsp", handler=lambda method, path, headers, body: (200, {}, body[::-1]))
    answer = allowed(http_server).post(http_server.url("/ocsp"), b"request", "application/ocsp-request")
    assert answer == b"tseuqer"
    assert http_server.requests[-1].headers["Content-Type"] == "application/ocsp-request"


REFUSED_URLS = [
    ("http://169.254.169.254/latest/meta-data/", "instance-metadata"),
    ("http://168.63.129.16/machine?comp=goalstate", "instance-metadata"),
    ("http://10.0.0.1/crl", "not a global address"),
    ("http://192.168.1.10/crl", "not a global address"),
    ("http://100.64.0.1/crl", "not a global address"),
    ("http://127.0.0.1/crl", "not a global address"),
    ("http://localhost/crl", "not a global address"),
    ("http://LOCALHOST./crl", "not a global address|does not resolve"),
    ("http://0x7f.1/crl", "not a global address"),
    ("http://2130706433/crl", "not a global address"),
    ("http://[::1]/crl", "not a global address"),
    ("http://[::ffff:127.0.0.1]/crl", "not a global address"),
    ("http://[::ffff:169.254.169.254]/crl", "instance-metadata"),
    ("http://[64:ff9b::a9fe:a9fe]/crl", "instance-metadata"),
    ("http://[fe80::1]/crl", "not a global address"),
    ("http://[fd00::1]/crl", "not a global address"),
    ("http://0.0.0.0/crl", "not a global address"),
    ("http://224.0.0.1/crl", "not a global address"),
    ("https://127.0.0.1/crl", "scheme 'https'"),
    ("ldap://ldap.contoso.com/CN=CA,DC=contoso?certificateRevocationList", "scheme 'ldap'"),
    ("file:///etc/passwd", "scheme 'file'"),
    ("ftp://ftp.contoso.com/ca.crl", "scheme 'ftp'"),
    ("data:application/pkix-crl;base64,MAA=", "scheme 'data'"),
    ("gopher://127.0.0.1:70/_GET", "scheme 'gopher'"),
    ("http://user:secret@crl.contoso.com/ca.crl", "user info"),
    ("http://crl.contoso.com:8080/ca.crl", "not allow-listed"),
    ("http:///ca.crl", "no host"),
    ("http://crl.cöntoso.com/ca.crl", "characters"),
]


@pytest.mark.parametrize(("url", "why"), REFUSED_URLS)
def test_hostile_urls_are_refused_before_any_connection(url, why):
    recorder = Recorder()
    fetcher = Fetcher(connector=recorder)
    with pytest.raises(FetchRefused, match=why):
        fetcher.get(url, "crl")
    assert recorder.connections == []
    assert fetcher.attempts[-1].outcome.startswith("refused")


def test_a_loopback_server_named_in_a_certificate_sees_no_connection_unless_allow_listed(http_server):
    http_server.route("/crl", body=b"x")
    for url in (http_server.url("/crl"), f"http://localhost:{http_server.port}/crl"):
        with pytest.raises(FetchRefused):
            Fetcher().get(url, "crl")
    assert http_server.connections == 0


def test_a_name_that_resolves_to_a_private_address_is_refused():
    recorder = Recorder()
    fetcher = Fetcher(resolver=lambda host, port: ["93.184.215.14", "10.0.0.1"], connector=recorder)
    with pytest.raises(FetchRefused, match=r"resolves to 10\.0\.0\.1"):
        fetcher.get("http://crl.attacker.example/crl", "crl")
    assert recorder.connections == []


def test_metadata_addresses_are_refused_even_when_allow_listed():
    recorder = Recorder()
    fetcher = Fetcher(
        allow=["169.254.169.254", "metadata.test", "168.63.129.16"],
        resolver=lambda host, port: ["169.254.169.254"] if host == "metadata.test" else [host],
        connector=recorder,
    )
    for url in ("http://169.254.169.254/metadata", "http://metadata.test/", "http://168.63.129.16/"):
        with pytest.raises(FetchRefused, match="always refused"):
            fetcher.get(url, "aia")
    assert recorder.connections == []


def test_an_unresolvable_name_is_refused():
    def fail(host, port):
        raise socket.gaierror("no such name")

    with pytest.raises(FetchRefused, match="does not resolve"):
        Fetcher(resolver=fail).get("http://crl.nowhere.test/crl", "crl")


def test_redirects_are_not_followed(http_server):
    http_server.route("/old", status=302, headers={"Location": http_server.url("/new")})
    http_server.route("/new", body=b"should never be fetched")
    with pytest.raises(FetchError, match="redirect"):
        allowed(http_server).get(http_server.url("/old"), "crl")
    assert [r.path for r in http_server.requests] == ["/old"]


def test_a_redirect_towards_metadata_is_not_followed(http_server):
    http_server.route("/aia", status=301, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
    with pytest.raises(FetchError, match="redirect"):
        allowed(http_server).get(http_server.url("/aia"), "aia")
    assert len(http_server.requests) == 1


def test_environment_proxies_are_ignored(http_server, monkeypatch):
    from tests.servers import HttpServer

    http_server.route("/crl", body=b"direct")
    with HttpServer() as proxy:
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy.url("/"))
        assert allowed(http_server).get(http_server.url("/crl"), "crl") == b"direct"
        assert proxy.connections == 0


def test_a_body_over_the_cap_is_refused_by_its_content_length(http_server):
    http_server.route("/big", body=b"\0" * (64 * 1024 + 1))
    with pytest.raises(FetchError, match="larger than the 64 KiB allowed for aia"):
        allowed(http_server).get(http_server.url("/big"), "aia")


def test_a_body_over_the_cap_is_cut_off_while_streaming_without_content_length(http_server):
    http_server.route("/stream", body=b"\0" * (200 * 1024), headers={"Content-Length": None})
    with pytest.raises(FetchError, match="larger than the 64 KiB allowed for ocsp"):
        allowed(http_server).post(http_server.url("/stream"), b"req", "application/ocsp-request")


def test_a_body_at_the_cap_is_accepted(http_server):
    http_server.route("/exact", body=b"\1" * (64 * 1024), headers={"Content-Length": None})
    assert len(allowed(http_server).get(http_server.url("/exact"), "aia")) == 64 * 1024


def test_a_server_that_drips_is_cut_off_at_the_fetch_deadline(http_server):
    http_server.route("/slow", body=b"x" * 1000, drip=(1, 0.2))  # a byte every 0.2 s: 200 s in all
    limits = FetchLimits(document_deadline=0.6, retries=0)
    with pytest.raises(FetchError, match=r"no complete answer within 0.6 s"):
        allowed(http_server, limits=limits).get(http_server.url("/slow"), "crl")


def _slow_crl(http_server, path: str, *, delay: float, drip: tuple[int, float]) -> bytes:
    root = issue(make_name("Slow CRL Test Root"), kind="ec", ca=True)
    when = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    der = make_crl(root, [(serial, None, when) for serial in range(1, 40)])  # a real CRL of about 2 KiB
    http_server.route(path, body=der, delay=delay, drip=drip)
    return der


def test_a_slow_crl_within_the_document_deadline_is_read(http_server):
    # The server thinks for longer than a connection may take, then sends the CRL in small pieces: the
    # connect timeout must not be left on the socket as the read timeout (issue 17: a CRL taking 4 s to
    # download was a RevocationCheckFailure with the 3 s connect timeout).
    der = _slow_crl(http_server, "/slow.crl", delay=0.6, drip=(256, 0.05))
    limits = FetchLimits(connect_timeout=0.2, retries=0)  # reads wait up to the default 10 s
    fetched = allowed(http_server, limits=limits).get(http_server.url("/slow.crl"), "crl")
    assert fetched == der
    assert parse_crl(fetched, "slow").lookup((7).to_bytes(1, "big")) is not None


def test_a_crl_that_drips_past_the_document_deadline_fails_cleanly_without_a_retry(http_server):
    _slow_crl(http_server, "/slower.crl", delay=0, drip=(16, 0.1))  # about 20 s for the whole CRL
    limits = FetchLimits(connect_timeout=1, read_timeout=5, document_deadline=0.8, retry_backoff=0.01)
    fetcher = allowed(http_server, limits=limits)
    with pytest.raises(FetchError, match=r"/slower.crl: no complete answer within 0.8 s"):
        fetcher.get(http_server.url("/slower.crl"), "crl")
    # The deadline covers the document, retries included: nothing is left for a second attempt.
    assert [a.outcome for a in fetcher.attempts] == ["no complete answer within 0.8 s"]


def test_a_server_silent_for_longer_than_the_read_timeout_is_given_up(http_server):
    http_server.route("/silent.crl", body=b"late", delay=30)
    limits = FetchLimits(connect_timeout=1, read_timeout=0.3, document_deadline=20, retries=0)
    with pytest.raises(FetchError, match=r"the server sent nothing for 0.3 s"):
        allowed(http_server, limits=limits).get(http_server.url("/silent.crl"), "crl")


@pytest.mark.parametrize("name", ["connect_timeout", "read_timeout", "document_deadline"])
@pytest.mark.parametrize("value", [0, -1, float("nan")])
def test_fetch_limits_refuse_a_timeout_that_is_not_positive(name, value):
    with pytest.raises(CertsyncError, match=f"fetch limit {name} must be a positive number of seconds"):
        FetchLimits(**{name: value})


@pytest.mark.parametrize("value", [-1, float("nan")])
def test_fetch_limits_refuse_a_negative_overall_deadline(value):
    with pytest.raises(CertsyncError, match="fetch limit deadline must be 0 or more seconds"):
        FetchLimits(deadline=value)


def test_with_crl_cap_keeps_the_timeouts_it_is_given():
    limits = FetchLimits.with_crl_cap(8, connect_timeout=1.5, read_timeout=4, document_deadline=12)
    assert (limits.connect_timeout, limits.read_timeout, limits.document_deadline) == (1.5, 4, 12)
    assert limits.max_bytes["crl"] == 8 * 1024 * 1024


def test_a_transient_failure_is_retried_once(http_server):
    answers = iter([(503, {}, b"busy"), (200, {}, b"second time lucky")])
    http_server.route("/crl", handler=lambda *request: next(answers))
    fetcher = allowed(http_server, limits=FetchLimits(retry_backoff=0.01))
    assert fetcher.get(http_server.url("/crl"), "crl") == b"second time lucky"
    assert [a.outcome for a in fetcher.attempts] == ["answered HTTP 503", "ok"]


def test_a_permanent_failure_is_not_retried(http_server):
    fetcher = allowed(http_server, limits=FetchLimits(retry_backoff=0.01))
    with pytest.raises(FetchError, match="HTTP 404"):
        fetcher.get(http_server.url("/missing"), "crl")
    assert len(http_server.requests) == 1


def test_a_server_that_is_down_fails_after_the_retries():
    with socket.socket() as placeholder:  # a port nothing listens on
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    fetcher = Fetcher(allow=[f"127.0.0.1:{port}"], limits=FetchLimits(retry_backoff=0.01))
    with pytest.raises(FetchError, match="cannot connect"):
        fetcher.get(f"http://127.0.0.1:{port}/crl", "crl")
    assert [a.outcome for a in fetcher.attempts] == ["cannot connect", "cannot connect"]


def test_the_attempt_budget_bounds_one_assessment(http_server):
    http_server.route("/crl", body=b"x")
    fetcher = allowed(http_server, limits=FetchLimits(max_attempts=2))
    fetcher.get(http_server.url("/crl"), "crl")
    fetcher.get(http_server.url("/crl"), "crl")
    with pytest.raises(FetchRefused, match="budget of 2 attempts is spent"):
        fetcher.get(http_server.url("/crl"), "crl")
    assert http_server.connections == 2


def test_errors_never_carry_the_fetched_body(http_server):
    http_server.route("/secret", status=403, body=b"internal-token-abc123")
    with pytest.raises(FetchError) as caught:
        allowed(http_server).get(http_server.url("/secret"), "crl")
    assert "internal-token" not in str(caught.value)
    assert "HTTP 403" in str(caught.value)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("crl.contoso.local", ("crl.contoso.local", 80)),
        ("PKI.Contoso.Local:8080", ("pki.contoso.local", 8080)),
        ("10.1.2.3:8080", ("10.1.2.3", 8080)),
        ("[::1]:8080", ("::1", 8080)),
    ],
)
def test_allow_list_entries(entry, expected):
    assert parse_allow_entry(entry) == expected


@pytest.mark.parametrize("entry", ["", "http://crl.contoso.local", "crl.contoso.local:", "a b:x", "u@host", "host/x"])
def test_bad_allow_list_entries_are_refused_with_an_example(entry):
    with pytest.raises(CertsyncError, match="give HOST or HOST:PORT"):
        parse_allow_entry(entry)


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("93.184.215.14", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:93.184.215.14", None),
        ("169.254.169.254", "blocked"),
        ("168.63.129.16", "blocked"),
        ("fd00:ec2::254", "blocked"),
        ("169.254.1.1", "private"),
        ("100.64.0.1", "private"),
        ("172.16.0.1", "private"),
        ("198.18.0.1", "private"),
        ("240.0.0.1", "private"),
        ("255.255.255.255", "private"),
        ("2002:a00:1::", "private"),  # 6to4 around 10.0.0.1
        ("64:ff9b::a00:1", "private"),  # NAT64 around 10.0.0.1
        ("ff02::1", "private"),
        ("not an address", "private"),
    ],
)
def test_address_classification(address, problem):
    assert address_problem(address) == problem


def test_crls_are_capped_at_64_mib_by_default_and_a_larger_one_than_the_old_20_mib_cap_is_read(http_server):
    assert FetchLimits().max_bytes["crl"] == 64 * 1024 * 1024
    assert FetchLimits.with_crl_cap(5).max_bytes == {"aia": 64 * 1024, "ocsp": 64 * 1024, "crl": 5 * 1024 * 1024}
    http_server.route("/big.crl", body=b"\1" * (21 * 1024 * 1024))
    body = allowed(http_server).get(http_server.url("/big.crl"), "crl")
    assert isinstance(body, bytearray) and len(body) == 21 * 1024 * 1024 and body.count(1) == len(body)


@pytest.mark.parametrize("content_length", [True, False])
def test_a_crl_under_its_cap_is_streamed_into_the_buffer_the_crl_keeps(http_server, content_length):
    ca = issue("Contoso Streamed CRL CA", kind="ec", ca=True)
    now = dt.datetime.now(dt.timezone.utc)
    data = big_crl_der(
        ca.cert.subject.public_bytes(), ca.key, 20_000, this_update=now, next_update=now + dt.timedelta(days=1)
    )
    assert 900 * 1024 < len(data) <= 1024 * 1024
    http_server.route("/fleet.crl", body=data, content_length=content_length)
    body = allowed(http_server, limits=FetchLimits.with_crl_cap(1)).get(http_server.url("/fleet.crl"), "crl")
    crl = parse_crl(body, "fleet.crl")
    assert crl.der is body and body == data  # parsed where it was read: the download is never copied
    assert crl.verify_signature(ca.cert.public_key())
    over = data + b"\0" * (1024 * 1024 + 1 - len(data))
    http_server.route("/over.crl", body=over, content_length=content_length)
    with pytest.raises(FetchError, match="larger than the 1 MiB allowed for crl"):
        allowed(http_server, limits=FetchLimits.with_crl_cap(1)).get(http_server.url("/over.crl"), "crl")


def test_a_body_shorter_than_its_content_length_is_not_taken(http_server):
    http_server.route("/short.crl", body=b"0123456789", headers={"Content-Length": "100"})
    fetcher = allowed(http_server, limits=FetchLimits(retry_backoff=0.01))
    with pytest.raises(FetchError, match="closed before the whole response arrived"):
        fetcher.get(http_server.url("/short.crl"), "crl")
    assert [a.outcome for a in fetcher.attempts] == ["the connection closed before the whole response arrived"] * 2


def _app_fetcher(http_server, **timeouts: str) -> Fetcher:
    """The pipeline's Fetcher as the Function App builds it from its settings (`shared.wiring`)."""
    from shared.wiring import settings_from_env

    env = {"CERTSYNC_VAULTS": "kv", "CERTSYNC_ALLOW_HOSTS": f"127.0.0.1:{http_server.port}", **timeouts}
    return settings_from_env(env).fetcher()


def test_the_fetch_timeouts_are_app_settings_and_a_slow_crl_within_the_deadline_is_read(http_server):
    der = _slow_crl(http_server, "/slow-app.crl", delay=0.6, drip=(256, 0.05))
    fetcher = _app_fetcher(
        http_server,
        CERTSYNC_FETCH_CONNECT_TIMEOUT="0.2",
        CERTSYNC_FETCH_READ_TIMEOUT="2",
        CERTSYNC_FETCH_DEADLINE="15",
    )
    assert (fetcher.limits.connect_timeout, fetcher.limits.read_timeout, fetcher.limits.document_deadline) == (
        0.2,
        2.0,
        15.0,
    )
    assert fetcher.get(http_server.url("/slow-app.crl"), "crl") == der


def test_a_crl_past_the_deadline_set_in_the_app_settings_fails_cleanly(http_server):
    _slow_crl(http_server, "/slower-app.crl", delay=0, drip=(16, 0.1))
    fetcher = _app_fetcher(http_server, CERTSYNC_FETCH_DEADLINE="0.8")
    with pytest.raises(FetchError, match=r"/slower-app.crl: no complete answer within 0.8 s"):
        fetcher.get(http_server.url("/slower-app.crl"), "crl")


def test_a_document_deadline_longer_than_the_fetchers_own_deadline_raises_it():
    limits = FetchLimits.with_crl_cap(64, document_deadline=90)
    assert limits.deadline == 90 and FetchLimits.with_crl_cap(64).deadline == 30
