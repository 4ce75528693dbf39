"""Real SMTP servers on 127.0.0.1 for the STARTTLS probe: aiosmtpd with TLS, and misbehaving ones.

`SmtpTlsServer(chain_pem, key_pem)` is aiosmtpd (a real SMTP implementation) on a free loopback port,
offering STARTTLS and serving the certificates of `chain_pem` (leaf first, then whatever intermediates the
file holds, exactly as an Exchange server sends what its stores give it). `present()` switches the
certificate for new connections, as an admin does on a live server; `starttls=False` offers no STARTTLS.

`StallingServer` accepts connections and then never speaks ("silent"), drips a multi-line greeting forever
("drip"), refuses with a 554 greeting ("reject"), answers STARTTLS with 454 ("starttls-454"), or answers it
with 220 and then sends plaintext ("no-tls"), nothing at all ("stall-tls") or a TLS record a byte at a time
("drip-tls") instead of a TLS handshake.

Also a command for the demo: `python -m tests.smtp --chain CHAIN.pem --key KEY.pem [--port N]` prints the
endpoint (127.0.0.1:PORT) and serves until killed.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import ssl
import sys
import threading
from pathlib import Path

from aiosmtpd.controller import Controller

from tests.servers import Service

SERVER_NAME = "mail.contoso.test"  # given explicitly: aiosmtpd's default, socket.getfqdn(), asks DNS


class _Handler:
    """Accepts and discards mail: the probe never sends any, but a server must have a handler."""

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 OK"


class _LoopbackController(Controller):
    """aiosmtpd's Controller on port 0: it learns the port the OS chose before its start-up self-test."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def tls_context(chain_pem: str | Path, key_pem: str | Path, server_names: list | None = None) -> ssl.SSLContext:
    """A server context that presents every certificate in `chain_pem`, leaf first; the SNI of each
    handshake (None when the client sent none) is appended to `server_names`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(chain_pem), str(key_pem))
    if server_names is not None:
        context.sni_callback = lambda _sock, name, _context: server_names.append(name)
    return context


class SmtpTlsServer(Service):
    """aiosmtpd on 127.0.0.1 with STARTTLS; `endpoint` is "127.0.0.1:PORT"; `server_names` the SNI of each
    TLS handshake, in order."""

    def __init__(
        self,
        chain_pem: str | Path | None = None,
        key_pem: str | Path | None = None,
        *,
        starttls: bool = True,
        port: int = 0,
    ) -> None:
        if starttls and (chain_pem is None or key_pem is None):
            raise ValueError("a STARTTLS server needs chain_pem and key_pem")
        self.server_names: list[str | None] = []
        context = tls_context(chain_pem, key_pem, self.server_names) if starttls else None  # type: ignore[arg-type]
        self._controller = _LoopbackController(
            _Handler(),
            hostname="127.0.0.1",
            port=port,
            server_hostname=SERVER_NAME,
            tls_context=context,
            require_starttls=False,
        )
        self.starttls = starttls

    def present(self, chain_pem: str | Path, key_pem: str | Path) -> None:
        """Serve another certificate (and chain) from the next connection on."""
        if not self.starttls:
            raise ValueError("this server offers no STARTTLS")
        self._controller.SMTP_kwargs["tls_context"] = tls_context(chain_pem, key_pem, self.server_names)

    def start(self) -> SmtpTlsServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        with contextlib.suppress(AssertionError):  # not running
            self._controller.stop()

    @property
    def port(self) -> int:
        return self._controller.port

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"


_MODES = ("silent", "drip", "reject", "starttls-454", "no-tls", "stall-tls", "drip-tls")


class StallingServer(Service):
    """A TCP server on 127.0.0.1 that misbehaves: "silent" never speaks, "drip" sends `220-` lines forever
    (one every `interval` seconds), "reject" greets with 554 and closes; "starttls-454", "no-tls" and
    "stall-tls" and "drip-tls" greet and offer STARTTLS, then refuse it, send plaintext, stall the
    handshake or drip it.
    `accepted` counts connections."""

    def __init__(self, mode: str = "silent", interval: float = 0.05) -> None:
        if mode not in _MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.mode = mode
        self.interval = interval
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._connections: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.accepted = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> StallingServer:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept(); close() does not
        self._listener.close()
        for conn in list(self._connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            self._connections.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            if self.mode == "reject":
                conn.sendall(b"554 5.7.1 mail.contoso.test does not accept connections from you\r\n")
                conn.close()
            elif self.mode == "drip":
                while not self._stopping.wait(self.interval):
                    conn.sendall(b"220-mail.contoso.test still greeting\r\n")
            elif self.mode == "silent":
                self._stopping.wait()
            else:
                self._fake_starttls(conn)

    def _fake_starttls(self, conn: socket.socket) -> None:
        """Greet, offer STARTTLS, and then fail it the way `mode` says."""
        reader = conn.makefile("rb")
        conn.sendall(b"220 mail.contoso.test ESMTP\r\n")
        for line in reader:
            command = line.strip().upper()
            if command.startswith(b"EHLO"):
                conn.sendall(b"250-mail.contoso.test\r\n250-SIZE 37748736\r\n250-STARTTLS\r\n250 8BITMIME\r\n")
            elif command == b"STARTTLS" and self.mode == "starttls-454":
                conn.sendall(b"454 4.7.0 TLS not available due to temporary reason\r\n")
            elif command == b"STARTTLS":
                conn.sendall(b"220 2.0.0 Ready to start TLS\r\n")
                if self.mode == "no-tls":
                    conn.sendall(b"250 this is not a TLS handshake\r\n" * 4)
                    conn.close()
                elif self.mode == "drip-tls":  # a TLS record header announcing 16 KiB, then a byte at a time
                    conn.sendall(b"\x16\x03\x03\x40\x00")
                    while not self._stopping.wait(self.interval):
                        conn.sendall(b"\x00")
                else:
                    self._stopping.wait()
                return
            elif command == b"QUIT":
                conn.sendall(b"221 2.0.0 Bye\r\n")
                return
            else:
                conn.sendall(b"500 5.5.1 unrecognized command\r\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.smtp", description="An SMTP STARTTLS server on 127.0.0.1.")
    parser.add_argument("--chain", required=True, help="PEM: the server certificate, then any intermediates")
    parser.add_argument("--key", required=True, help="PEM: the server certificate's private key")
    parser.add_argument("--port", type=int, default=0, help="the port (default: any free one)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with SmtpTlsServer(args.chain, args.key, port=args.port) as server:
        print(server.endpoint, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
