"""Real webhook receivers on loopback, for the notification tests and the demo.

`WebhookReceiver` is a threaded HTTP(S) server on 127.0.0.1 (`tests.servers.HttpServer`) with one
webhook path that looks like a real one (a token in the path and a `sig=` in the query, so tests can
prove the URL never leaks). It records every request, checks Standard Webhooks signatures with the
independent `standardwebhooks` library (not certsync's own `shared.notify.signing`), and answers as scripted:

    with WebhookReceiver(secrets=[secret]) as receiver:
        receiver.answer(500)                                  # the next request gets a 500
        receiver.answer(429, headers={"Retry-After": "2"})    # the one after that a 429
        channel = WebhookChannel("generic", receiver.url, parse_secrets(secret, "test"))
        channel.deliver(notice)
        assert [r.status for r in receiver.received] == [500, 429, 200]
        assert receiver.received[-1].verified

Run it alone to watch a delivery (the demo does): `python -m tests.receivers --secret whsec_...` prints
the URL, then one line per request, and exits after `--count` verified deliveries.
"""

from __future__ import annotations

import argparse
import json
import secrets as random
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

from tests.servers import Headers, HttpServer, LoopbackTls, Service


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it, with its verification and the answer it got."""

    headers: Headers
    body: bytes
    path: str
    status: int  # what the receiver answered
    verified: bool | None  # None: the receiver holds no secret (Teams, Slack)
    verified_by: tuple[int, ...]  # indexes of the receiver's secrets that verify it
    error: str  # the library's reason when no secret verifies it

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


class WebhookReceiver(Service):
    """A webhook endpoint on loopback; a context manager. Without scripted answers it answers
    `status` (200 `ok`, as Slack does; Teams Workflows answer 202). `tls` (a `LoopbackTls`) serves
    HTTPS with that test CA."""

    def __init__(
        self,
        secrets: Sequence[str] = (),
        *,
        status: int = 200,
        body: bytes = b"ok",
        tls: LoopbackTls | None = None,
    ) -> None:
        self.secrets = tuple(secrets)
        self.token = random.token_urlsafe(18)  # stands for the secret part of a real webhook URL
        self.path = f"/workflows/{self.token[:6]}/triggers/manual/paths/invoke"
        self.query = f"api-version=2016-06-01&sig={self.token}"
        self._default = _Answer(status, {"Content-Type": "text/plain"}, body)
        self._script: list[_Answer] = []
        self._received: list[Received] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._server = HttpServer(tls, name="webhook-receiver")

    # lifecycle

    def start(self) -> WebhookReceiver:
        self._server.start()
        self._server.route(self.path, handler=self._handle)
        return self

    def stop(self) -> None:
        self._server.stop()

    # configuration

    @property
    def url(self) -> str:
        """The webhook URL, secret token included (http://127.0.0.1:PORT/... or https:// with `tls`)."""
        return f"{self._server.url(self.path)}?{self.query}"

    def answer(
        self, status: int, *, times: int = 1, headers: Mapping[str, str] | None = None, body: bytes = b""
    ) -> None:
        """Answer the next `times` requests (after those already scripted) with `status`."""
        with self._lock:
            self._script.extend([_Answer(status, dict(headers or {}), body)] * times)

    # observations

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def wait_for(self, count: int, timeout: float) -> list[Received]:
        """Block until `count` requests arrived (or `timeout` seconds passed); the requests so far."""
        with self._arrived:
            self._arrived.wait_for(lambda: len(self._received) >= count, timeout)
            return list(self._received)

    def verify(self, headers: Mapping[str, str], body: bytes) -> tuple[tuple[int, ...], str]:
        """The indexes of this receiver's secrets under which the library accepts `body` with `headers`,
        and, when none does, the library's reason for refusing it under the first secret."""
        good: list[int] = []
        errors: list[str] = []
        for index, secret in enumerate(self.secrets):
            try:
                Webhook(secret).verify(body, dict(headers))
            except (WebhookVerificationError, ValueError) as exc:  # ValueError: a signature without a comma
                errors.append(str(exc) or type(exc).__name__)
                continue
            good.append(index)
        return tuple(good), "" if good or not errors else errors[0]

    # the server thread

    def _handle(self, method: str, path: str, headers: Headers, body: bytes) -> tuple[int, Mapping[str, str], bytes]:
        verified_by, error = self.verify(headers, body)
        with self._lock:
            answer = self._script.pop(0) if self._script else self._default
            self._received.append(
                Received(
                    headers=headers,
                    body=body,
                    path=path,
                    status=answer.status,
                    verified=bool(verified_by) if self.secrets else None,
                    verified_by=verified_by,
                    error=error,
                )
            )
            self._arrived.notify_all()
        if method != "POST":
            return 405, {"Content-Type": "text/plain"}, b"method_not_allowed"
        return answer.status, answer.headers, answer.body


def main(argv: Sequence[str] | None = None) -> int:
    """Serve one receiver; print its URL, then a line per request; exit 0 after `--count` verified ones."""
    parser = argparse.ArgumentParser(prog="python -m tests.receivers", description=__doc__.splitlines()[0])
    parser.add_argument("--secret", action="append", default=[], help="whsec_ secret to verify with (repeatable)")
    parser.add_argument("--count", type=int, default=1, help="exit after this many verified deliveries")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up (exit 1) after this many seconds")
    args = parser.parse_args(argv)
    with WebhookReceiver(args.secret) as receiver:
        print(receiver.url, flush=True)
        deadline = time.monotonic() + args.timeout
        seen = verified = 0
        while verified < args.count and time.monotonic() < deadline:
            requests = receiver.wait_for(seen + 1, max(0.0, deadline - time.monotonic()))
            for request in requests[seen:]:
                seen += 1
                message_id = request.headers.get("webhook-id") or "-"
                if request.verified is False:
                    print(f"REJECTED {message_id}: {request.error}", flush=True)
                    continue
                verified += 1
                try:
                    event = request.json.get("type", "?")
                except ValueError:
                    event = "?"
                print(f"{'VERIFIED' if request.verified else 'RECEIVED'} {message_id} {event}", flush=True)
    return 0 if verified >= args.count else 1


if __name__ == "__main__":
    sys.exit(main())
