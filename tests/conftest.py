"""Shared fixtures: loopback servers from `tests.servers` and Azurite from `tests.azurite`, stopped at
teardown even when a test fails."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.azurite import Azurite, running
from tests.chains import Issued
from tests.servers import HttpServer, OcspResponder

if TYPE_CHECKING:
    from tests.fakes.arm import FakeArm
    from tests.fakes.keyvault import FakeKeyVault
    from tests.servers import LoopbackTls


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


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """One running Azurite for the whole session (in memory, random loopback ports); fails, never skips,
    when Azurite is not installed (`tests.azurite.running`)."""
    yield from running(Azurite())


@pytest.fixture(scope="session")
def keyvault_tls(tmp_path_factory: pytest.TempPathFactory) -> LoopbackTls:
    """The test CA and server certificate the fake Key Vault serves with (made once per session)."""
    from tests.servers import LoopbackTls

    return LoopbackTls.create(tmp_path_factory.mktemp("keyvault-tls"))


@pytest.fixture
def keyvault(keyvault_tls: LoopbackTls) -> Iterator[FakeKeyVault]:
    """A running `FakeKeyVault` (HTTPS on localhost) for one test: `vault_url`, `credential` and
    `client_kwargs` are what a real SDK client needs to talk to it. A new port per test also means
    a fresh bearer challenge (the SDK caches challenges per host and port)."""
    from tests.fakes.keyvault import FakeKeyVault

    with FakeKeyVault(keyvault_tls) as vault:
        yield vault


@pytest.fixture
def arm(keyvault_tls: LoopbackTls) -> Iterator[FakeArm]:
    """A running `FakeArm` (Azure Automation jobs over HTTPS on 127.0.0.1) for one test: `account_id`,
    `endpoint`, `credential` and `client_kwargs` (or `env`) are what `AutomationClient` needs."""
    from tests.fakes.arm import FakeArm

    with FakeArm(keyvault_tls) as fake:
        yield fake
