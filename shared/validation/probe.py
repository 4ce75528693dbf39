"""Proof after the change: connect to an SMTP endpoint, STARTTLS, and assess the certificate chain it serves.

This is the check Exchange Online makes when it connects to the on-premises server for hybrid mail flow:
it opens SMTP on port 25, says EHLO, requires STARTTLS, completes the TLS handshake and checks the
certificate the server presents (its chain, its names and, for the connector, its TlsCertificateName).
`probe()` does the same by hand over a socket, so that it can take the chain exactly as the server sent
it, and reports:

- whether the served certificate is the expected one (the new thumbprint);
- whether the server sends the intermediates its path needs (judged with AIA fetching off: an intermediate
  that only AIA would find is one Exchange is not sending, because it is missing from the server's
  intermediate store);
- the assessment of what was served (`shared.validation.assessment.assess`, with revocation per the caller).

Everything happens under one deadline (`timeout`): a server that never speaks, or drips a byte at a time,
cannot hold the probe past it. Nothing is sent until the server greets with 220, so an endpoint that is
not an SMTP server hears nothing from us.

With `guarded=True` (the pipeline: probe endpoints may come from Key Vault tags, which whoever can write to
Key Vault controls) the host is resolved once, refused unless every address is global (loopback, private,
link-local, metadata addresses...) or the HOST:PORT is allow-listed, and the connection goes to that pinned
address: the rules of `shared.validation.fetch`. `certsync probe`, run by an admin, is unguarded.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared.errors import CertsyncError
from shared.times import format_time
from shared.validation.assessment import Assessment, TrustStore, assess
from shared.validation.endpoints import format_endpoint, is_ip_address, parse_host_port
from shared.validation.fetch import AddressRefused, Fetcher, FetchRefused, Resolver, parse_allow_entry, pin_address
from shared.x509.certificate import Certificate, CertificateBundle
from shared.x509.tls_certificate_name import is_exchange_host_name

SMTP_PORT = 25
_MAX_LINE = 4096  # bytes in one reply line (RFC 5321 allows 512; be generous, never unbounded)
_MAX_LINES = 100  # lines in one multi-line reply
_ENDPOINT_EXAMPLE = "mail.contoso.com or mail.contoso.com:25 ([2001:db8::1]:25 for IPv6)"


@dataclass(frozen=True)
class ProbeResult:
    """What one probe found. `ok`: connected, STARTTLS offered and the TLS handshake completed."""

    endpoint: str  # normalised HOST:PORT
    host: str
    port: int
    ok: bool
    error: str | None  # one line when not ok: what failed, at which endpoint, and what to do
    banner: str | None
    starttls_offered: bool
    tls_version: str | None
    cipher: str | None
    chain: tuple[Certificate, ...]  # as served, leaf first
    expected_thumbprint: str | None
    is_expected: bool | None  # the served leaf is the expected certificate (None: no expectation, or no leaf)
    intermediates_sent: bool | None  # every intermediate the path needs was served (None: cannot tell)
    assessment: Assessment | None  # of what was served

    @property
    def leaf(self) -> Certificate | None:
        return self.chain[0] if self.chain else None

    @property
    def passed(self) -> bool:
        """Served what was expected (when anything was), with the intermediates, and assessed Valid."""
        return (
            self.ok
            and self.is_expected is not False
            and self.intermediates_sent is True
            and self.assessment is not None
            and self.assessment.status == "Valid"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; certificates by subject, issuer, thumbprint and expiry (never a key: a probe sees none)."""
        return {
            "endpoint": self.endpoint,
            "host": self.host,
            "port": self.port,
            "ok": self.ok,
            "error": self.error,
            "banner": self.banner,
            "starttls_offered": self.starttls_offered,
            "tls_version": self.tls_version,
            "cipher": self.cipher,
            "chain": [
                {
                    "subject": _name(cert, "subject"),
                    "issuer": _name(cert, "issuer"),
                    "thumbprint": cert.thumbprint,
                    "not_after": format_time(cert.not_after, timespec="seconds"),
                }
                for cert in self.chain
            ],
            "expected_thumbprint": self.expected_thumbprint,
            "is_expected": self.is_expected,
            "intermediates_sent": self.intermediates_sent,
            "assessment": self.assessment.to_dict() if self.assessment else None,
        }


def parse_endpoint(text: str, default_port: int = SMTP_PORT) -> tuple[str, int]:
    """A probe endpoint, `HOST`, `HOST:PORT`, `[v6]`, `[v6]:PORT` (or a bare IPv6 address) -> (lower-case
    host, port), by the one HOST:PORT reader (`shared.validation.endpoints`)."""
    return parse_host_port(text, default_port, "probe endpoint", _ENDPOINT_EXAMPLE)


def normalise_thumbprint(value: str) -> str:
    """A SHA-1 thumbprint as Get-ExchangeCertificate shows it (40 upper-case hex digits); spaces and colons,
    as certificate viewers print them, are dropped. CertsyncError when it is not one."""
    text = "".join(ch for ch in str(value) if ch not in " :\t").upper()
    if len(text) != 40 or any(ch not in "0123456789ABCDEF" for ch in text):
        raise CertsyncError(
            f"expected thumbprint {value!r}: not 40 hex digits; copy the Thumbprint from Get-ExchangeCertificate "
            "or the certificate's SHA-1 fingerprint"
        )
    return text


def probe(
    endpoint: str,
    *,
    expected_thumbprint: str | None = None,
    trust: TrustStore | None = None,
    at: dt.datetime | None = None,
    revocation: str = "soft",
    timeout: float = 15.0,
    allow_hosts: Sequence[str] | None = None,
    guarded: bool = False,
    ehlo_name: str = "certsync.invalid",
    server_name: str | None = None,
    fetcher: Fetcher | None = None,
    resolver: Resolver | None = None,
) -> ProbeResult:
    """Probe `endpoint` (HOST[:PORT], port 25 by default) over SMTP STARTTLS, as Exchange Online does.

    `expected_thumbprint` is the certificate that should be served now; `trust`, `at`, `revocation` and
    `fetcher` go to the assessment (`fetcher` for its AIA and revocation fetches). `server_name` is sent as
    SNI and is the host name the certificate must cover (default: HOST, when it is a name). `guarded`
    applies the SSRF rules of `shared.validation.fetch`, admitting HOST[:PORT] entries of `allow_hosts` (port 25 when
    none is given); `resolver` is the seam tests use to see what a name resolves to (default: the system's).
    Raises CertsyncError only for bad arguments; a failed probe is a result with `ok` False."""
    host, port = parse_endpoint(endpoint)
    name = format_endpoint(host, port)
    expected = normalise_thumbprint(expected_thumbprint) if expected_thumbprint else None
    if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
        raise CertsyncError(f"probe timeout {timeout!r}: give a number of seconds above 0")
    sni_host = _server_name(server_name) if server_name is not None else None if is_ip_address(host) else host
    allowed = {parse_allow_entry(entry, SMTP_PORT) for entry in allow_hosts or ()}
    served = _Served()
    try:
        address = _address(host, port, guarded, (host, port) in allowed, name, resolver)
        _converse(served, host if address is None else address, port, name, timeout, ehlo_name, sni_host)
    except _Failed as exc:
        return _result(name, host, port, served, expected, error=str(exc))
    chain: tuple[Certificate, ...] = ()
    try:
        chain = tuple(
            Certificate.from_der(der, f"{name}, served certificate {n}") for n, der in enumerate(served.ders, 1)
        )
        if not chain:
            raise CertsyncError(f"{name}: the server completed TLS without a certificate")
        hosts = [sni_host] if sni_host else []
        bundle = CertificateBundle(chain[0], chain[1:], (), source=name, container="tls")
        sent = None
        if served.full_chain:
            alone = assess(bundle, hosts=hosts, trust=trust, at=at, revocation="off", offline=True)
            sent = not any(f.code == "chain-incomplete" for f in alone.findings)
        assessment = assess(bundle, hosts=hosts, trust=trust, at=at, revocation=revocation, fetcher=fetcher)
    except CertsyncError as exc:  # what was served cannot be read or assessed
        error = f"{exc}; check the certificate enabled for SMTP there (re-issue or re-import it)"
        return _result(name, host, port, served, expected, error=error, chain=chain)
    return _result(name, host, port, served, expected, chain=chain, sent=sent, assessment=assessment)


# --------------------------------------------------------------------------------------------------


class _Failed(Exception):
    """The probe could not complete; the message is the ProbeResult's one-line error."""


@dataclass
class _Served:
    """What the conversation got so far (kept when it fails half-way, for the report)."""

    banner: str | None = None
    starttls_offered: bool = False
    tls_version: str | None = None
    cipher: str | None = None
    ders: tuple[bytes, ...] = ()
    full_chain: bool = False  # the chain came from get_unverified_chain, not only the leaf


def _result(
    name: str,
    host: str,
    port: int,
    served: _Served,
    expected: str | None,
    *,
    error: str | None = None,
    chain: tuple[Certificate, ...] = (),
    sent: bool | None = None,
    assessment: Assessment | None = None,
) -> ProbeResult:
    return ProbeResult(
        endpoint=name,
        host=host,
        port=port,
        ok=error is None,
        error=error,
        banner=served.banner,
        starttls_offered=served.starttls_offered,
        tls_version=served.tls_version,
        cipher=served.cipher,
        chain=chain,
        expected_thumbprint=expected,
        is_expected=None if expected is None or not chain else chain[0].thumbprint == expected,
        intermediates_sent=sent,
        assessment=assessment,
    )


def _server_name(text: str) -> str:
    name = text.strip().lower().rstrip(".") if isinstance(text, str) else ""
    if is_ip_address(name) or not is_exchange_host_name(name) or name.startswith("*."):
        raise CertsyncError(f"server name {text!r}: give a DNS name, e.g. mail.contoso.com")
    return name


def _address(host: str, port: int, guarded: bool, allowed: bool, name: str, resolver: Resolver | None) -> str | None:
    """The pinned address to connect to when guarded; None when unguarded (connect by name)."""
    if not guarded:
        return None
    try:
        return pin_address(host, port, allowed=allowed, resolve=resolver)
    except AddressRefused as exc:
        if exc.problem == "blocked":
            why = "an instance-metadata or platform address, never probed"
            fix = "probe the Exchange server's own address"
        else:
            why = "not a global address"
            fix = f"add {name} to CERTSYNC_ALLOW_HOSTS to probe a server on a private network"
        where = host if host == exc.address else f"{host} resolves to {exc.address}, which"
        raise _Failed(f"{name}: refused: {where} is {why}; {fix}") from None
    except FetchRefused:
        raise _Failed(f"{name}: {host} does not resolve; check the probe endpoint's name") from None


def _converse(
    served: _Served, address: str, port: int, name: str, timeout: float, ehlo_name: str, sni_host: str | None
) -> None:
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except TimeoutError:
        raise _Failed(
            f"{name}: no connection within {timeout:g} s; check the host, the port and the firewalls"
        ) from None
    except ConnectionRefusedError:
        raise _Failed(f"{name}: connection refused; check that the SMTP service runs there on port {port}") from None
    except socket.gaierror:
        raise _Failed(f"{name}: the host name does not resolve; check the probe endpoint's name") from None
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise _Failed(f"{name}: cannot connect ({why}); check the host, the port and the firewalls") from None
    talk = _Dialogue(sock, deadline, name, timeout)
    try:
        code, lines = talk.reply("the 220 greeting")
        served.banner = _clip(" / ".join(lines))
        if code != 220:
            raise _Failed(f"{name}: the server greeted with {_clip(lines[0])} instead of 220; it refuses this client")
        talk.send(f"EHLO {ehlo_name}", "the EHLO reply")
        code, lines = talk.reply("the EHLO reply")
        if code != 250:
            raise _Failed(f"{name}: EHLO was answered {_clip(lines[0])}; check the receive connector")
        served.starttls_offered = any(line[4:].strip().upper().split(" ")[0] == "STARTTLS" for line in lines)
        if not served.starttls_offered:
            raise _Failed(
                f"{name}: the server does not offer STARTTLS in its EHLO reply; enable TLS on its receive "
                "connector with a certificate (Exchange Online requires STARTTLS)"
            )
        talk.send("STARTTLS", "the STARTTLS reply")
        code, lines = talk.reply("the STARTTLS reply")
        if code != 220:
            raise _Failed(
                f"{name}: STARTTLS was answered {_clip(lines[0])}; check that a valid certificate is enabled "
                "for SMTP on the server (Get-ExchangeCertificate)"
            )
        # Whatever the server sent after its 220 is plaintext it had no business sending; it is dropped
        # (RFC 3207 §4.2), which the TLS layer would not see anyway: it reads the socket afresh.
        tls = talk.start_tls(sni_host)
        served.tls_version = tls.version()
        cipher = tls.cipher()
        served.cipher = cipher[0] if cipher else None
        served.ders, served.full_chain = _served_chain(tls)
        with contextlib.suppress(_Failed, OSError):  # politeness only: the evidence is already in hand
            talk.send("QUIT", "the QUIT reply")
            talk.reply("the QUIT reply")
    finally:
        with contextlib.suppress(OSError):
            talk.sock.close()
        with contextlib.suppress(OSError):
            sock.close()


class _Dialogue:
    """SMTP replies read line by line from our own buffer, every wait bounded by the probe's one deadline.

    Each socket operation gets the time left, not a fresh timeout, so a server that drips a byte at a time
    cannot hold the probe past `timeout`; the TLS handshake counts its own timeout as one deadline across
    its reads (CPython's ssl module), so it is bounded the same way."""

    def __init__(self, sock: socket.socket, deadline: float, name: str, timeout: float) -> None:
        self.sock: socket.socket = sock  # the TLS socket once STARTTLS has wrapped it
        self.deadline = deadline
        self.name = name
        self.timeout = timeout
        self.buffer = b""

    def _remaining(self, waiting_for: str) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self._timed_out(waiting_for)
        return left

    def _timed_out(self, waiting_for: str) -> _Failed:
        return _Failed(
            f"{self.name}: no complete answer within {self.timeout:g} s (waiting for {waiting_for}); check that "
            "it is an SMTP server and that it answers promptly"
        )

    def _lost(self, waiting_for: str, exc: BaseException | None = None) -> _Failed:
        if isinstance(exc, TimeoutError) or time.monotonic() >= self.deadline:
            return self._timed_out(waiting_for)
        return _Failed(
            f"{self.name}: the server closed the connection (waiting for {waiting_for}); check its logs and "
            "that it accepts connections from this address"
        )

    def send(self, line: str, waiting_for: str) -> None:
        try:
            self.sock.settimeout(self._remaining(waiting_for))
            self.sock.sendall(line.encode("ascii") + b"\r\n")
        except OSError as exc:
            raise self._lost(waiting_for, exc) from None

    def reply(self, waiting_for: str) -> tuple[int, list[str]]:
        """(code, lines) of one SMTP reply, multi-line replies (`250-...`) joined."""
        lines: list[str] = []
        while True:
            line = self._line(waiting_for)
            if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in ("", " ", "-"):
                raise _Failed(
                    f"{self.name}: {waiting_for} is not an SMTP reply ({_clip(line)}); check the port "
                    "(SMTP is 25, or 587 for submission)"
                )
            if lines and line[:3] != lines[0][:3]:
                raise _Failed(f"{self.name}: {waiting_for} mixes reply codes; the server is not speaking SMTP")
            lines.append(line)
            if line[3:4] != "-":
                return int(line[:3]), lines
            if len(lines) >= _MAX_LINES:
                raise _Failed(
                    f"{self.name}: {waiting_for} runs past {_MAX_LINES} lines; the server is not speaking SMTP"
                )

    def _line(self, waiting_for: str) -> str:
        while b"\n" not in self.buffer:
            if len(self.buffer) > _MAX_LINE:
                raise _Failed(f"{self.name}: {waiting_for} has a line over {_MAX_LINE} bytes; it is not SMTP")
            try:
                self.sock.settimeout(self._remaining(waiting_for))
                chunk = self.sock.recv(4096)
            except OSError as exc:
                raise self._lost(waiting_for, exc) from None
            if not chunk:
                raise self._lost(waiting_for)
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def start_tls(self, sni_host: str | None) -> ssl.SSLSocket:
        self.buffer = b""
        # No verification here: the chain is captured and assessed by certsync, as Exchange would judge it.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            self.sock.settimeout(self._remaining("the TLS handshake"))
            tls = context.wrap_socket(self.sock, server_hostname=sni_host, do_handshake_on_connect=False)
            self.sock = tls
            tls.do_handshake()
        except ssl.SSLError as exc:
            reason = _clip(exc.reason or exc.strerror or type(exc).__name__)
            raise _Failed(
                f"{self.name}: the TLS handshake failed ({reason}); check the certificate enabled for SMTP and "
                "that TLS 1.2 or later is enabled on the server"
            ) from None
        except OSError as exc:
            raise self._lost("the TLS handshake", exc) from None
        return tls


def _served_chain(tls: ssl.SSLSocket) -> tuple[tuple[bytes, ...], bool]:
    """The certificates the server sent, leaf first, and whether that is the whole of what it sent.

    `get_unverified_chain()` is public from Python 3.13 (DER bytes); 3.10-3.12 have it on the private
    `_sslobj` (certificate objects). Failing both, only the leaf is known."""
    items = None
    public = getattr(tls, "get_unverified_chain", None)
    if public is not None:
        items = public()
    else:
        private = getattr(getattr(tls, "_sslobj", None), "get_unverified_chain", None)
        if private is not None:
            items = private()
    if items:
        ders = tuple(item if isinstance(item, bytes) else item.public_bytes(ssl._ssl.ENCODING_DER) for item in items)  # type: ignore[attr-defined]
        return ders, True
    leaf = tls.getpeercert(binary_form=True)
    return ((leaf,) if leaf else ()), False


def _clip(text: str, limit: int = 160) -> str:
    """Server text made safe for a one-line report: control characters replaced, length bounded."""
    clean = "".join(ch if ch >= " " and ch != "\x7f" else "?" for ch in text).strip()
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def _name(cert: Certificate, which: str) -> str:
    try:
        return str(getattr(cert, which))
    except CertsyncError:
        return f"(undecodable {which}, thumbprint {cert.thumbprint})"
