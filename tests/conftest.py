"""Shared fixtures: loopback servers from `tests.servers`, stopped at teardown even when a test fails."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chains import Issued
from tests.servers import HttpServer, OcspResponder


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    """A running `HttpServer` on 127.0.0.1 for one test."""
    with HttpServer() as server:
        yield server


@pytest.fixture
def ocsp_responder(tmp_path: Path) -> Iterator[Callable[..., OcspResponder]]:
    """A factory: `ocsp_responder(ca, responder=None, **options)` starts an `OcspResponder` (its
    files under the test's tmp_path); every one it made is killed at teardown."""
    made: list[OcspResponder] = []

    def make(ca: Issued, responder: Issued | None = None, **options: Any) -> OcspResponder:
        options.setdefault("directory", tmp_path / f"ocsp-{len(made)}")
        server = OcspResponder(ca, responder, start=False, **options)
        made.append(server)  # registered before starting, so a half-started one is cleaned up too
        return server.start()

    try:
        yield make
    finally:
        for server in made:
            server.stop()
