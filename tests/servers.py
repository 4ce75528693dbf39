"""Real loopback servers for tests: HTTP(S) for code that fetches (CRLs, OCSP, caIssuers) and the one
way the HTTPS fakes (Key Vault, ARM) and the webhook receivers run, plus the real `openssl ocsp`.

`HttpServer` is a threading HTTP/1.1 server on 127.0.0.1 with an ephemeral port; with `tls` (a
`LoopbackTls`: a throwaway CA and a certificate for localhost and 127.0.0.1) it serves HTTPS. Routes
answer with a fixed response (any status, headers, delay, dripped body, with or without Content-Length)
or a callable; every request and every accepted TCP connection is recorded. A fake serves every path
itself by overriding `_lookup`. `HttpsServer` is HTTPS with a CA of its own when it is given none.
`Service` gives every server here the same start/stop and context-manager protocol.

    with HttpServer() as server:
        server.route("/ca.crl", body=crl_der, headers={"Content-Type": "application/pkix-crl"})
        server.redirect("/moved", server.url("/ca.crl"))
        fetch(server.url("/moved"))
        assert [r.path for r in server.requests] == ["/moved", "/ca.crl"]

`OcspResponder` runs the real `openssl ocsp` responder for one CA, with its own OpenSSL index:

    with OcspResponder(ca, responder=delegated) as responder:
        leaf = issue("leaf", issuer=ca, ocsp_urls=[responder.url])
        responder.add(leaf, "R", reason="keyCompromise")

What OpenSSL 3.0's responder does, and how this class copes:
- `-port` takes a number only and binds the wildcard address ([::], dual-stack), not loopback only;
  port 0 picks a free port, printed on stdout as `ACCEPT [::]:PORT PID=...`. Tests still only ever
  connect to 127.0.0.1.
- It does re-read index.txt when the file's mtime/ctime/inode change, but it looks before it waits
  for the next connection, so a change shows up one request late. `add()` therefore restarts the
  process on the same port, so the next answer is always current.
- `ACCEPT` is printed before the index and keys are loaded, so readiness is proven with a real OCSP
  request (for the CA certificate itself, answered "unknown"); `request_count` leaves it out.
- Do not send it anything but OCSP requests: a TCP connection closed without a request makes it spin
  at 100% CPU and never answer again, and `GET /` makes it exit. Use `HttpServer` for such tests.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import http.client
import os
import re
import shutil
import socket
import socketserver
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from tests.chains import Issued, issue, make_name

LOOPBACK = "127.0.0.1"

_S = TypeVar("_S", bound="Service")


class Service:
    """Something a test starts and stops, also as a context manager: `with Server() as server:`
    starts it and stops it at the end of the block. Subclasses define `start` (returning self) and
    `stop` (safe to call twice)."""

    def start(self: _S) -> _S:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# --- TLS -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoopbackTls:
    """A throwaway CA and a server certificate for `localhost` and 127.0.0.1, as PEM files.

    Clients trust `ca_pem` (`connection_verify=str(ca_pem)`); the server loads `cert_pem`/`key_pem`."""

    ca_pem: Path
    cert_pem: Path
    key_pem: Path

    @classmethod
    def create(cls, directory: Path) -> LoopbackTls:
        directory.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.timezone.utc)
        valid = {"not_before": now - dt.timedelta(hours=1), "not_after": now + dt.timedelta(days=2)}
        ca = issue(make_name("certsync test Key Vault CA", country=None), ca=True, path_length=0, **valid)
        server = issue(
            make_name("localhost", country=None), issuer=ca, dns_names=["localhost"], ip_addresses=[LOOPBACK], **valid
        )
        tls = cls(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
        tls.ca_pem.write_bytes(ca.pem)
        tls.cert_pem.write_bytes(server.pem)
        tls.key_pem.write_bytes(server.key_pem)
        tls.key_pem.chmod(0o600)
        return tls

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_pem, self.key_pem)
        return context


# --- HTTP ----------------------------------------------------------------------------------------


class Headers(dict[str, str]):
    """Header names as the client sent them, looked up case-insensitively (`h["host"] == h["Host"]`)."""

    def _key(self, name: object) -> object:
        if not isinstance(name, str) or dict.__contains__(self, name):
            return name
        return next((key for key in self if key.lower() == name.lower()), name)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(self._key(name))  # type: ignore[arg-type]

    def __contains__(self, name: object) -> bool:
        return super().__contains__(self._key(name))

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(self._key(name), default)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Request:
    """One request as the server read it."""

    method: str
    path: str  # with the query string
    headers: Headers
    body: bytes


# handler(method, path, headers, body) -> (status, headers, body)
Handler = Callable[[str, str, Headers, bytes], tuple[int, Mapping[str, str | None], bytes]]


@dataclass(frozen=True)
class Route:
    """A registered response; see `HttpServer.route`."""

    body: bytes = b""
    status: int = 200
    headers: Mapping[str, str | None] = field(default_factory=dict)
    delay: float = 0.0
    drip: tuple[int, float] | None = None
    content_length: bool = True
    handler: Handler | None = None


class _Server(ThreadingHTTPServer):
    """The threading server behind `HttpServer`. With a TLS `context` the listening socket is a TLS
    socket: accepted connections are TLS sockets, and each one's handshake runs on its own thread."""

    daemon_threads = True

    def __init__(self, owner: HttpServer, context: ssl.SSLContext | None = None) -> None:
        self.owner = owner
        self._context = context
        super().__init__((LOOPBACK, 0), _RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look up the FQDN of 127.0.0.1; a fixed name avoids DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
        if self._context is not None:
            self.socket = self._context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self._context is not None:
            # Headers and body go out as two TLS records; without NODELAY the second waits for the
            # client's delayed ACK (~40 ms a response).
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            request.do_handshake()  # a failed handshake (untrusted CA) ends here, quietly
        super().finish_request(request, client_address)

    def get_request(self) -> tuple[socket.socket, object]:
        conn, address = super().get_request()
        self.owner._accepted(conn)  # counted at accept time, before a byte is read
        return conn, address

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True, name="http-test-conn"
        )
        self.owner._threads.append(thread)
        thread.start()

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        self.owner._closed(request)
        super().shutdown_request(request)

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that hang up early are part of the tests; nothing goes to stderr


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "certsync-test"
    sys_version = ""
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _serve(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        headers = Headers(self.headers.items())
        owner._record(Request(self.command, self.path, headers, body))
        route = owner._lookup(self.path)
        if route is None:
            route = Route(b"not found\n", 404, {"Content-Type": "text/plain"})
        elif route.handler is not None:
            try:
                status, extra, payload = route.handler(self.command, self.path, headers, body)
                route = Route(payload, status, dict(extra), route.delay, route.drip, route.content_length)
            except Exception as exc:  # a broken test handler answers 500 instead of hanging the client
                route = Route(f"handler failed: {exc!r}\n".encode(), 500, {"Content-Type": "text/plain"})
        try:
            self._respond(route, owner._stopping)
        except OSError:  # the client hung up (BrokenPipe, ConnectionReset) or the server is stopping
            self.close_connection = True

    def _respond(self, route: Route, stopping: threading.Event) -> None:
        if route.delay and stopping.wait(route.delay):
            self.close_connection = True
            return
        self.send_response(route.status)
        names = {name.lower() for name in route.headers}
        for name, value in route.headers.items():
            if value is not None:
                self.send_header(name, value)
        unframed = any(name.lower() == "content-length" and value is None for name, value in route.headers.items())
        if unframed or not route.content_length:
            self.send_header("Connection", "close")
            self.close_connection = True
        elif "content-length" not in names:
            self.send_header("Content-Length", str(len(route.body)))
        self.end_headers()
        if self.command == "HEAD" or not route.body:
            return
        if route.drip is None:
            self.wfile.write(route.body)
            return
        size, interval = route.drip
        for start in range(0, len(route.body), size):
            if start and stopping.wait(interval):
                self.close_connection = True
                return
            self.wfile.write(route.body[start : start + size])

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve


class HttpServer(Service):
    """A threading HTTP/1.1 server on 127.0.0.1 (ephemeral port); HTTPS with `tls`. A context manager.

    Unknown paths answer 404. `requests` lists every request read (in order) and `connections`
    counts accepted TCP connections, including ones that never send a byte. `name` names its thread."""

    def __init__(self, tls: LoopbackTls | None = None, *, name: str = "http-test") -> None:
        self.tls = tls
        self._name = name
        self._lock = threading.Lock()
        self._routes: dict[str, Route] = {}
        self._requests: list[Request] = []
        self._connections = 0
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self: _S) -> _S:
        if self._server is None:
            self._server = _Server(self, self.tls.server_context() if self.tls is not None else None)
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name=self._name
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, cut open connections (ending drips and delays), join the threads."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            open_sockets = list(self._sockets)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in [self._thread, *self._threads]:
            if thread is not None:
                thread.join(timeout=5)

    # configuration

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("HttpServer is not running")
        return self._server.server_address[1]

    @property
    def origin(self) -> str:
        """`http://127.0.0.1:PORT` (`https://` with `tls`), no trailing slash."""
        return f"{'https' if self.tls is not None else 'http'}://{LOOPBACK}:{self.port}"

    def url(self, path: str = "/") -> str:
        """`<origin>/path`."""
        return self.origin + (path if path.startswith("/") else "/" + path)

    def route(
        self,
        path: str,
        body: bytes = b"",
        status: int = 200,
        headers: Mapping[str, str | None] | None = None,
        delay: float = 0.0,
        drip: tuple[int, float] | None = None,
        *,
        content_length: bool = True,
        handler: Handler | None = None,
    ) -> None:
        """Answer `path` (any method) with `status`, `headers` and `body`.

        The path matches with its query string first, then without it. `delay` waits that many
        seconds before the status line; `drip=(n, seconds)` sends the body n bytes at a time with a
        pause between pieces. Content-Length is added unless `headers` set one (which may lie);
        `content_length=False` (or `headers={"Content-Length": None}`) sends none and frames the
        body by closing the connection. Other headers set to None are not sent either.
        `handler(method, path, headers, body) -> (status, headers, body)` computes the response
        instead (it still gets `delay`, `drip` and the framing); if it raises, the answer is 500."""
        route = Route(body, status, dict(headers or {}), delay, drip, content_length, handler)
        with self._lock:
            self._routes[path] = route

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        """Answer `path` with a redirect to `location` (sent exactly as given)."""
        self.route(path, status=status, headers={"Location": location})

    # observations

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    def paths(self) -> list[str]:
        """The request paths in order: the common assertion."""
        return [request.path for request in self.requests]

    # called from the server threads

    def _accepted(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections += 1
            self._sockets.add(sock)

    def _closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)

    def _record(self, request: Request) -> None:
        with self._lock:
            self._requests.append(request)

    def _lookup(self, path: str) -> Route | None:
        with self._lock:
            return self._routes.get(path) or self._routes.get(path.split("?", 1)[0])


class HttpsServer(HttpServer):
    """`HttpServer` over TLS with `tls`, or, without it, with a throwaway CA of its own in a temporary
    directory that `stop()` removes (clients then trust `self.tls.ca_pem`)."""

    def __init__(self, tls: LoopbackTls | None = None, *, name: str = "https-test") -> None:
        self._own_tls_dir: str | None = None
        if tls is None:
            self._own_tls_dir = tempfile.mkdtemp(prefix=f"{name}-")
            tls = LoopbackTls.create(Path(self._own_tls_dir))
        super().__init__(tls, name=name)

    def stop(self) -> None:
        super().stop()
        if self._own_tls_dir is not None:
            shutil.rmtree(self._own_tls_dir, ignore_errors=True)
            self._own_tls_dir = None


# --- OCSP ----------------------------------------------------------------------------------------


class OcspResponderError(RuntimeError):
    """`openssl ocsp` could not be started (the message carries its stderr)."""


OPENSSL = os.environ.get("OPENSSL", "openssl")
_ACCEPT = re.compile(rb"ACCEPT \S*:(\d+) PID=")
LIVE_PROCESSES: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for process in list(LIVE_PROCESSES):
        terminate_process(process)


def terminate_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    LIVE_PROCESSES.discard(process)


def _index_time(when: dt.datetime) -> str:
    """The time format of OpenSSL's index.txt: UTCTime text to 2049, GeneralizedTime text after."""
    when = when.astimezone(dt.timezone.utc) if when.tzinfo else when
    return when.strftime("%y%m%d%H%M%SZ" if when.year < 2050 else "%Y%m%d%H%M%SZ")


def _index_serial(serial: int) -> str:
    """A serial as OpenSSL's BN_bn2hex writes it: upper-case, whole octets (so the lookup matches)."""
    if serial == 0:
        return "0"
    text = f"{serial:X}"
    return "0" + text if len(text) % 2 else text


def _index_subject(name: x509.Name) -> str:
    """`/C=US/O=Contoso/CN=leaf` (encoded order)."""
    return "".join("/" + "+".join(f"{a.rfc4514_attribute_name}={a.value!s}" for a in rdn) for rdn in name.rdns)


IndexStatus = Literal["V", "R", "E"]


class OcspResponder(Service):
    """The real `openssl ocsp` responder for `ca`, on an ephemeral port; a context manager.

    Responses are signed by `responder` (a delegated OCSP signing certificate, included in the
    response) or, when it is None, by the CA itself. `nmin`/`ndays` set nextUpdate (None for both
    leaves it out). `other_certs` go into responses too (`-rother`); `extra_args` are appended to
    the command line (e.g. `["-resp_key_id"]`, `["-rmd", "sha1"]`). Files live in `directory`
    (default: a fresh temporary directory, removed by `stop()`)."""

    def __init__(
        self,
        ca: Issued,
        responder: Issued | None = None,
        *,
        directory: Path | None = None,
        nmin: int | None = 60,
        ndays: int | None = None,
        other_certs: Sequence[Issued] = (),
        extra_args: Sequence[str] = (),
        startup_timeout: float = 10.0,
        start: bool = True,
    ) -> None:
        if shutil.which(OPENSSL) is None:
            raise OcspResponderError(f"{OPENSSL!r} is not on PATH; the OCSP tests need the openssl CLI")
        self.ca = ca
        self.responder = responder or ca
        self._own_directory = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix="certsync-ocsp-")) if directory is None else directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._entries: dict[int, str] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._port = 0
        self._probes = 0
        self._index_mtime = 0
        self._startup_timeout = startup_timeout
        self._write(self.directory / "ca.pem", ca.pem)
        self._write(self.directory / "responder.pem", self.responder.pem)
        self._write(self.directory / "responder.key", self.responder.key_pem)
        self._write(self.directory / "other.pem", b"".join(c.pem for c in other_certs))
        self._write_index()
        self._args = [
            OPENSSL, "ocsp",
            "-index", "index.txt",
            "-CA", "ca.pem",
            "-rsigner", "responder.pem",
            "-rkey", "responder.key",
        ]  # fmt: skip
        if nmin is not None:
            self._args += ["-nmin", str(nmin)]
        if ndays is not None:
            self._args += ["-ndays", str(ndays)]
        if other_certs:
            self._args += ["-rother", "other.pem"]
        self._args += list(extra_args)
        if start:
            self.start()

    # lifecycle

    def start(self) -> OcspResponder:
        """Start the responder (on the same port again after a restart) and wait until it answers."""
        if self._process is not None:
            return self
        last_error: OcspResponderError | None = None
        for _ in range(20 if self._port else 1):  # the old port may need a moment to be free again
            try:
                self._launch()
                return self
            except OcspResponderError as exc:
                last_error = exc
                time.sleep(0.05)
        assert last_error is not None
        raise last_error

    def stop(self) -> None:
        """Kill the process; remove the directory if this object made it."""
        self._kill()
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def restart(self) -> None:
        self._kill()
        self.start()

    # state

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT/` (stable across restarts)."""
        if not self._port:
            raise RuntimeError("OcspResponder has not been started")
        return f"http://{LOOPBACK}:{self._port}/"

    @property
    def port(self) -> int:
        return self._port

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def log(self) -> str:
        """Everything openssl wrote to stderr (all runs)."""
        return (self.directory / "stderr.log").read_bytes().decode(errors="replace")

    @property
    def request_count(self) -> int:
        """OCSP requests received (all runs), not counting the readiness probes."""
        return self.log.count("Received request") - self._probes

    def add(
        self,
        cert: Issued | x509.Certificate,
        status: IndexStatus = "V",
        revoked_at: dt.datetime | None = None,
        reason: str | None = "keyCompromise",
        *,
        restart: bool = True,
    ) -> None:
        """Write (or replace) the index line for `cert` and restart a running responder.

        `status` is "V" (good), "R" (revoked at `revoked_at`, default an hour ago, with `reason`,
        an OpenSSL reason name such as keyCompromise, CACompromise, superseded,
        cessationOfOperation, affiliationChanged, certificateHold, or None for none) or "E"
        (expired). Certificates with no line are answered "unknown". `restart=False` only writes
        the file (then call `restart()` once after several adds)."""
        certificate = cert.cert if isinstance(cert, Issued) else cert
        revocation = ""
        if status == "R":
            when = revoked_at or dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
            revocation = _index_time(when) + (f",{reason}" if reason else "")
        line = "\t".join(
            (
                status,
                _index_time(certificate.not_valid_after_utc),
                revocation,
                _index_serial(certificate.serial_number),
                "unknown",
                _index_subject(certificate.subject),
            )
        )
        self._entries[certificate.serial_number] = line
        self._write_index()
        if restart and self._process is not None:
            self.restart()

    # internals

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_bytes(data)
        os.replace(temporary, path)

    def _write_index(self) -> None:
        path = self.directory / "index.txt"
        self._write(path, "".join(line + "\n" for line in self._entries.values()).encode())
        # A strictly new mtime, in case a running openssl ever looks (it compares whole seconds).
        self._index_mtime = max(self._index_mtime + 1, int(time.time()))
        os.utime(path, (self._index_mtime, self._index_mtime))

    def _launch(self) -> None:
        stdout_path = self.directory / "stdout.log"
        stdout_path.write_bytes(b"")
        with open(stdout_path, "wb") as stdout, open(self.directory / "stderr.log", "ab") as stderr:
            process = subprocess.Popen(
                [*self._args, "-port", str(self._port)],
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        LIVE_PROCESSES.add(process)
        try:
            port = self._wait_for_accept(process, stdout_path)
            if self._port and port != self._port:
                raise OcspResponderError(f"openssl ocsp came up on port {port}, not {self._port}")
            self._port = port
            self._process = process
            self._probe()
        except BaseException:
            self._process = None
            terminate_process(process)
            raise

    def _wait_for_accept(self, process: subprocess.Popen[bytes], stdout_path: Path) -> int:
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            match = _ACCEPT.search(stdout_path.read_bytes())
            if match:
                return int(match.group(1))
            if process.poll() is not None:
                raise self._failure(f"openssl ocsp exited with status {process.returncode} before listening")
            time.sleep(0.01)
        raise self._failure(f"openssl ocsp did not report a listening port within {self._startup_timeout}s")

    def _probe(self) -> None:
        """One real OCSP request (the CA's own certificate, answered "unknown") proves readiness."""
        request = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(self.ca.cert, self.ca.cert, hashes.SHA1())
            .build()
            .public_bytes(serialization.Encoding.DER)
        )
        http_request = urllib.request.Request(
            self.url, data=request, headers={"Content-Type": "application/ocsp-request"}
        )
        self._probes += 1
        deadline = time.monotonic() + self._startup_timeout
        while True:
            try:
                with urllib.request.urlopen(http_request, timeout=self._startup_timeout) as answer:
                    response = ocsp.load_der_ocsp_response(answer.read())
                break
            except (OSError, ValueError, http.client.HTTPException) as exc:
                if not self.running or time.monotonic() > deadline:
                    raise self._failure(f"openssl ocsp did not answer a probe request: {exc!r}") from exc
                time.sleep(0.02)
        if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise self._failure(f"openssl ocsp answered the probe with {response.response_status.name}")

    def _failure(self, what: str) -> OcspResponderError:
        log = self.log.strip()
        return OcspResponderError(f"{what}\ncommand: {' '.join(self._args)}\nstderr:\n{log or '(empty)'}")

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            terminate_process(process)
