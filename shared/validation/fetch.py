"""The one way certsync fetches a URL named in a certificate (AIA caIssuers, CRL distribution points, OCSP).

Those URLs come from whoever can write to Key Vault, and from every issuer the certificate chains to,
so each one is hostile until proven otherwise (SSRF, `spec/validation.md` §5):

- `http://` only, port 80 only; no redirects, no proxies from the environment, no user info in the URL.
- The host is resolved here and every address it resolves to must be global unicast; the connection goes
  to that pinned address (with the original Host header), so DNS rebinding cannot swap it afterwards.
  169.254.169.254 (IMDS) and 168.63.129.16 (the Azure wireserver) are refused even when allow-listed.
- Every fetch has a connect timeout, a read timeout (the longest silence while the answer is awaited or
  arrives), a hard deadline per document (all its attempts together), and a size cap for its kind (CRLs:
  64 MiB unless set otherwise); a `Fetcher` also has a budget of attempts and an overall deadline, so one
  assessment cannot be made to fetch forever. A slow server is fine as long as it keeps sending and
  finishes within the document deadline. A body is streamed into one buffer and handed over as it is: a CRL of
  tens of MiB is never held twice.

`allow` admits hosts the guard would refuse: `pki.corp.local` (port 80) or `10.1.2.3:8080`. It is how a
private PKI's CRL server is reached, and how the tests reach their servers on 127.0.0.1.

Errors say what was refused or failed in general terms; a fetched body or a detailed network error is
never reflected back (a status-code oracle is what makes blind SSRF useful).
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from shared.errors import CertsyncError
from shared.validation.endpoints import parse_host_port

# Addresses refused whatever the allow-list says: instance metadata and the Azure platform endpoint.
ALWAYS_BLOCKED = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "168.63.129.16", "fd00:ec2::254", "100.100.100.200")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")

Resolver = Callable[[str, int], list[str]]
Connector = Callable[[str, int, float], socket.socket]


class FetchError(CertsyncError):
    """A fetch that gave nothing usable: `FetchRefused` when nothing was fetched, a plain FetchError when the
    server was asked and failed."""


class FetchRefused(FetchError):
    """Refused, nothing was fetched and no connection made: the guard refused the URL, or this Fetcher's
    attempt budget or deadline is spent. Says nothing about the URL's server, so it is not remembered as a
    failure (`FetchCache.fail`)."""


MIB = 1024 * 1024
CRL_MAX_MB = 64  # the default CRL cap (CERTSYNC_CRL_MAX_MB, `certsync check --crl-max-mb`)


@dataclass(frozen=True)
class FetchLimits:
    """Per-fetch and per-assessment bounds (defaults from `spec/validation.md` §5; the CRL cap is 64 MiB so
    that a CA's million-entry CRL, about 47 MiB, is read: `with_crl_cap` sets another)."""

    connect_timeout: float = 3.0  # the TCP connection (CERTSYNC_FETCH_CONNECT_TIMEOUT)
    read_timeout: float = 10.0  # the longest silence once connected (CERTSYNC_FETCH_READ_TIMEOUT)
    document_deadline: float = 20.0  # one URL, first byte sent to last received, retries included
    deadline: float = 30.0  # all fetches of one Fetcher together
    max_attempts: int = 12  # all fetches of one Fetcher together, retries included
    retries: int = 1  # extra attempts after a failure that may be transient
    retry_backoff: float = 0.25  # seconds, doubled per retry
    max_bytes: dict[str, int] = field(
        default_factory=lambda: {"aia": 64 * 1024, "ocsp": 64 * 1024, "crl": CRL_MAX_MB * MIB}
    )

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "read_timeout", "document_deadline"):
            if not getattr(self, name) > 0:  # also refuses NaN
                raise CertsyncError(f"fetch limit {name} must be a positive number of seconds")
        if not self.deadline >= 0:  # 0: a Fetcher that fetches nothing
            raise CertsyncError("fetch limit deadline must be 0 or more seconds")

    @classmethod
    def with_crl_cap(
        cls,
        megabytes: int,
        *,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        document_deadline: float = 20.0,
    ) -> FetchLimits:
        """The default limits with CRLs capped at `megabytes` MiB, and the given timeouts (the overall deadline
        grows to the document deadline when that is longer, so one slow document may still finish)."""
        limits = cls(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            document_deadline=document_deadline,
            deadline=max(cls.deadline, document_deadline),
        )
        limits.max_bytes["crl"] = megabytes * MIB
        return limits


@dataclass(frozen=True)
class Attempt:
    """What one attempt did, for reports: never the body, never the low-level error."""

    url: str
    kind: str
    outcome: str  # "ok", or why it gave nothing
    address: str | None = None


@functools.lru_cache(maxsize=256)
def parse_allow_entry(entry: str, default_port: int = 80) -> tuple[str, int]:
    """An allow-list entry (`--allow-host`, CERTSYNC_ALLOW_HOSTS) -> (lower-case host, port); `default_port`
    (80, for fetches; 25 for the STARTTLS probe) when none is given."""
    return parse_host_port(entry, default_port, "--allow-host", "crl.corp.local or 10.0.0.5:8080")


class Fetcher:
    """Guarded HTTP GET/POST for one assessment: the allow-list, the limits and the attempt budget.

    `resolver` and `connector` are the seams tests use to see what would be resolved and connected;
    the defaults are the system resolver and a plain TCP connection."""

    def __init__(
        self,
        allow: Iterable[str] = (),
        limits: FetchLimits | None = None,
        resolver: Resolver | None = None,
        connector: Connector | None = None,
    ) -> None:
        self.allow = frozenset(parse_allow_entry(a) for a in allow)
        self.limits = limits or FetchLimits()
        self._resolve = resolver or _system_resolve
        self._connect = connector or _tcp_connect
        self._started = time.monotonic()
        self.attempts: list[Attempt] = []

    def get(self, url: str, kind: str) -> bytearray:
        """GET `url` (an AIA or CRL URL); `kind` ("aia", "crl") picks the size cap. The body comes back in the
        one buffer it was read into, never copied: parse it in place (a CRL may be tens of MiB)."""
        return self._fetch("GET", url, kind, None, None)

    def post(self, url: str, body: bytes, content_type: str, kind: str = "ocsp") -> bytearray:
        """POST `body` to `url` (an OCSP request)."""
        return self._fetch("POST", url, kind, body, content_type)

    def check_url(self, url: str) -> tuple[str, int, str]:
        """(host, port, path) of a URL the guard admits, addresses not yet checked; raises FetchRefused."""
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port or 80
        except ValueError:
            raise FetchRefused("the URL is malformed") from None
        if parts.scheme.lower() != "http":
            raise FetchRefused(f"scheme {parts.scheme or '(none)'!r} is not http")
        if not host or parts.username is not None or parts.password is not None:
            raise FetchRefused("the URL has no host, or carries user info")
        if not _is_host(host):
            raise FetchRefused("the host name has characters a DNS name cannot")
        if port != 80 and (host, port) not in self.allow:
            raise FetchRefused(f"port {port} is not 80 and {host}:{port} is not allow-listed")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return host, port, path

    def _fetch(self, method: str, url: str, kind: str, body: bytes | None, content_type: str | None) -> bytearray:
        limits = self.limits
        try:
            host, port, path = self.check_url(url)
            address = self._pinned_address(host, port)
        except FetchRefused as exc:
            self.attempts.append(Attempt(url, kind, f"refused: {exc}"))
            raise
        delay = limits.retry_backoff
        document_end = time.monotonic() + limits.document_deadline
        for attempt in range(limits.retries + 1):
            self._spend(url, kind)
            budget = min(document_end - time.monotonic(), self._remaining())
            try:
                data = self._once(method, address, host, port, path, kind, body, content_type, max(budget, 0.001))
            except _Transient as exc:
                self.attempts.append(Attempt(url, kind, str(exc), address))
                left = min(document_end - time.monotonic(), self._remaining())
                if attempt == limits.retries or left < delay:
                    raise FetchError(f"{url}: {exc}") from None
                time.sleep(delay)
                delay *= 2
            except FetchError as exc:
                self.attempts.append(Attempt(url, kind, str(exc), address))
                raise FetchError(f"{url}: {exc}") from None
            else:
                self.attempts.append(Attempt(url, kind, "ok", address))
                return data
        raise AssertionError("unreachable")  # pragma: no cover

    def _spend(self, url: str, kind: str) -> None:
        if len([a for a in self.attempts if a.address]) >= self.limits.max_attempts:
            self.attempts.append(Attempt(url, kind, "refused: the fetch budget is spent"))
            raise FetchRefused(f"{url}: the fetch budget of {self.limits.max_attempts} attempts is spent")
        if self._remaining() <= 0:
            self.attempts.append(Attempt(url, kind, "refused: the fetch deadline has passed"))
            raise FetchRefused(f"{url}: the {self.limits.deadline:g} s fetch deadline has passed")

    def _remaining(self) -> float:
        return self.limits.deadline - (time.monotonic() - self._started)

    def _pinned_address(self, host: str, port: int) -> str:
        return pin_address(host, port, allowed=(host, port) in self.allow, resolve=self._resolve)

    def _once(
        self,
        method: str,
        address: str,
        host: str,
        port: int,
        path: str,
        kind: str,
        body: bytes | None,
        content_type: str | None,
        budget: float,
    ) -> bytearray:
        """One attempt, cut off after `budget` seconds whatever the server does."""
        limits = self.limits
        cap = limits.max_bytes[kind]
        try:
            sock = self._connect(address, port, min(limits.connect_timeout, budget))
        except OSError:
            raise _Transient("cannot connect") from None
        # The connect timeout stays on the socket unless replaced: every read would give up as soon as a
        # connection may. Reads wait up to the read timeout; the watchdog below bounds the whole document.
        with contextlib.suppress(OSError):
            sock.settimeout(min(limits.read_timeout, budget))
        # A hard deadline for the whole exchange: a server that drips bytes cannot hold us past it.
        expired = threading.Event()
        watchdog = threading.Timer(budget, _shutdown, (sock, expired))
        watchdog.start()
        try:
            conn = http.client.HTTPConnection(host, port, timeout=limits.read_timeout)
            conn.sock = sock  # connect to the pinned address; Host: still names the original host
            headers = {"Accept": "*/*", "Connection": "close", "User-Agent": "certsync"}
            if content_type:
                headers["Content-Type"] = content_type
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            if 300 <= response.status < 400:
                raise FetchError(f"answered with a redirect (HTTP {response.status}), which is not followed")
            if response.status >= 500 or response.status == 429:
                raise _Transient(f"answered HTTP {response.status}")
            if response.status != 200:
                raise FetchError(f"answered HTTP {response.status}")
            length = response.getheader("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            if expected is not None and expected > cap:
                raise FetchError(f"the response is larger than the {_size(cap)} allowed for {kind}")
            data = _read_capped(response, expected, cap, kind)
            if expired.is_set():  # the deadline cut the connection: what arrived is only part of it
                raise _Transient(f"no complete answer within {budget:.3g} s")
            if expected is not None and len(data) != expected:
                raise _Transient("the connection closed before the whole response arrived")
            return data
        except FetchError:
            raise
        except TimeoutError:
            if expired.is_set():
                raise _Transient(f"no complete answer within {budget:.3g} s") from None
            raise _Transient(f"the server sent nothing for {limits.read_timeout:g} s") from None
        except (OSError, http.client.HTTPException, ValueError):
            if expired.is_set():
                raise _Transient(f"no complete answer within {budget:.3g} s") from None
            raise _Transient("the connection failed") from None
        finally:
            watchdog.cancel()
            sock.close()


def _read_capped(response: http.client.HTTPResponse, expected: int | None, cap: int, kind: str) -> bytearray:
    """The body streamed into one buffer, never more than `cap` bytes: with a Content-Length, a buffer of
    that size filled in place; without one (chunked), a buffer grown as the chunks arrive."""
    if expected is not None:
        data = bytearray(expected)
        view = memoryview(data)
        size = 0
        while size < expected:
            got = response.readinto(view[size:])
            if not got:
                break
            size += got
        view.release()
        if size < expected:
            del data[size:]  # cut short: the caller sees a short body and retries
        return data
    data = bytearray()
    while chunk := response.read1(65536):
        if len(data) + len(chunk) > cap:
            raise FetchError(f"the response is larger than the {_size(cap)} allowed for {kind}")
        data += chunk
    return data


class AddressRefused(FetchRefused):
    """A host that resolves to an address the guard refuses: `address`, and `problem` ("blocked" or "private")."""

    def __init__(self, host: str, address: str, problem: str) -> None:
        super().__init__(f"{host} resolves to {address}, {_PROBLEMS[problem]}")
        self.host, self.address, self.problem = host, address, problem


def pin_address(host: str, port: int, *, allowed: bool = False, resolve: Resolver | None = None) -> str:
    """Resolve `host` once and return the address to connect to. Every address it resolves to must be global
    (`address_problem`), unless `allowed` (the host and port are allow-listed), which still never admits a
    "blocked" one. Raises FetchRefused when it does not resolve, AddressRefused for a refused address.

    Connecting to the returned address, not to the name again, is what defeats DNS rebinding. Shared by the
    fetcher and the STARTTLS probe (`shared.validation.probe`), whose endpoints may come from Key Vault tags."""
    try:
        addresses = (resolve or _system_resolve)(host, port)
    except OSError:
        raise FetchRefused("the host name does not resolve") from None
    if not addresses:
        raise FetchRefused("the host name does not resolve")
    for text in addresses:
        problem = address_problem(text)
        if problem and (not allowed or problem == "blocked"):
            raise AddressRefused(host, text, problem)
    return addresses[0]


class _Transient(FetchError):
    """A failure worth one more try: no connection, a reset, a timeout, a 5xx or a 429."""


_PROBLEMS = {
    "blocked": "an instance-metadata or platform address, always refused",
    "private": "not a global address (allow-list the host to admit a private PKI server)",
}


def address_problem(text: str) -> str | None:
    """None for a global unicast address; "blocked" for metadata endpoints; "private" for everything else
    (loopback, RFC 1918, CGNAT, link-local, multicast, reserved, and v4 addresses embedded in v6 forms)."""
    try:
        address = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return "private"
    if address in ALWAYS_BLOCKED:
        return "blocked"
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return address_problem(str(embedded))
    if not address.is_global or address.is_multicast:
        return "private"
    return None


def _is_host(host: str) -> bool:
    """A DNS name in ASCII, or an IP address literal."""
    if host.isascii() and set(host) <= _HOST_CHARS:
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _system_resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _tcp_connect(address: str, port: int, timeout: float) -> socket.socket:
    return socket.create_connection((address, port), timeout=timeout)


def _shutdown(sock: socket.socket, expired: threading.Event) -> None:
    expired.set()
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n >= 1024 * 1024 else f"{n // 1024} KiB"
