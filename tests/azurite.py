"""A real Azurite (the Azure Storage emulator) on loopback, for tests of the Storage backends.

`Azurite` runs the copy `scripts/install-azurite.sh` puts in `.tools/azurite` (`make test` installs it),
in memory, on free random ports for blob, queue and table, all on 127.0.0.1:

    with Azurite() as azurite:
        queue = QueueClient.from_connection_string(azurite.connection_string, "jobs")

`queued_json(connection_string, queue)` reads what the app queued (base64 JSON, as the Functions host
sends it) without taking it off the queue.

What Azurite 3.37.0 does, and how this class copes (see the local-stack spec, section 3):
- The Python SDKs send API versions newer than Azurite knows (azure-storage-queue 12.18.1 sends
  2026-10-06), which it refuses with 400 unless started with `--skipApiVersionCheck`.
- Without `--disableTelemetry` it closes its listeners on SIGTERM but never exits on an offline machine.
- Ports are picked by binding port 0 and closing the socket, so another process can take one before
  Azurite binds it; Azurite then exits with EADDRINUSE and `start()` tries again with new ports.
- Readiness is all three ports accepting TCP while the process is still running; it prints
  "successfully listening" lines on stdout, but TCP is what the clients need.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.servers import LIVE_PROCESSES, LOOPBACK, Service, terminate_process

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / ".tools" / "azurite" / "node_modules" / ".bin" / "azurite"

# The well-known key of Azurite's devstoreaccount1 (public, the same in every emulator).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

FLAGS = (
    "--silent",
    "--inMemoryPersistence",
    "--skipApiVersionCheck",
    "--disableTelemetry",
    "--disableProductStyleUrl",
    "--extentMemoryLimit", "256",
)  # fmt: skip
_SERVICES = ("blob", "queue", "table")


class AzuriteError(RuntimeError):
    """Azurite is not installed or did not come up (the message carries its output)."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def accepts_tcp(port: int) -> bool:
    """Whether something on 127.0.0.1 accepts a TCP connection on `port` now."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def queued_json(connection_string: str, queue: str) -> list[dict]:
    """The JSON messages waiting on a base64 Storage `queue` (peeked: they stay); none if it was never made."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.queue import QueueClient, TextBase64DecodePolicy

    client = QueueClient.from_connection_string(
        connection_string, queue, message_decode_policy=TextBase64DecodePolicy()
    )
    try:
        return [json.loads(m.content) for m in client.peek_messages(max_messages=32)]
    except ResourceNotFoundError:  # nothing was ever queued
        return []


class Azurite(Service):
    """One Azurite process; a context manager. `start()` waits until blob, queue and table accept TCP."""

    def __init__(
        self,
        binary: Path | None = None,
        *,
        startup_timeout: float = 15.0,
        attempts: int = 3,
        persistent: bool = False,
    ) -> None:
        self.binary = Path(binary) if binary is not None else BINARY
        self.persistent = persistent  # data on disk in its working directory: kept across `restart`
        self.startup_timeout = startup_timeout
        self.attempts = attempts
        self.ports: dict[str, int] = {}
        self.startup_seconds = 0.0
        self._process: subprocess.Popen[bytes] | None = None
        self._directory: Path | None = None

    # lifecycle

    def start(self) -> Azurite:
        if self._process is not None:
            return self
        if not (self.binary.is_file() and self.binary.stat().st_mode & 0o111):
            raise AzuriteError(
                f"Azurite is not installed ({self.binary} is missing): run `make test`, or"
                " `scripts/install-azurite.sh` before running pytest directly"
            )
        started = time.monotonic()
        for attempt in range(1, self.attempts + 1):
            try:
                self._launch()
                self.startup_seconds = time.monotonic() - started
                return self
            except AzuriteError as exc:
                if "EADDRINUSE" not in str(exc) or attempt == self.attempts:
                    raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """SIGTERM our own process, SIGKILL it after 5 s; remove its working directory."""
        process, self._process = self._process, None
        if process is not None:
            terminate_process(process)
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    def restart(self, pause: float = 0.0) -> None:
        """Stop the process (SIGTERM: it saves its data) and, `pause` seconds later, start it again on the
        same ports and data (a persistent one only): what clients see when the storage service goes away
        and comes back."""
        if not self.persistent:
            raise RuntimeError("only a persistent Azurite keeps its data across a restart")
        process, self._process = self._require(), None
        terminate_process(process)
        time.sleep(pause)
        for attempt in range(50):  # the old listeners' ports may take a moment to be free again
            try:
                self._launch(ports=dict(self.ports))
                return
            except AzuriteError as exc:
                if "EADDRINUSE" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.1)

    # state

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        return self._require().pid

    @property
    def queue_port(self) -> int:
        self._require()
        return self.ports["queue"]

    @property
    def table_port(self) -> int:
        self._require()
        return self.ports["table"]

    @property
    def connection_string(self) -> str:
        """The explicit form, with 127.0.0.1 endpoints and the well-known devstoreaccount1 key."""
        self._require()
        endpoints = "".join(
            f"{service.capitalize()}Endpoint=http://{LOOPBACK}:{self.ports[service]}/{ACCOUNT};"
            for service in _SERVICES
        )
        return f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};{endpoints}"

    # internals

    def _require(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("Azurite has not been started")
        return self._process

    def _launch(self, ports: dict[str, int] | None = None) -> None:
        self.ports = ports or {service: _free_port() for service in _SERVICES}
        # Its working directory: it holds the output logs (in-memory mode refuses --location), and a
        # persistent one's data.
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="certsync-azurite-"))
        args = [str(self.binary), *FLAGS]
        if self.persistent:
            args = [str(self.binary), *FLAGS[: FLAGS.index("--extentMemoryLimit")]]
            args = [a for a in args if a != "--inMemoryPersistence"] + ["--location", str(self._directory / "data")]
        for service, port in self.ports.items():
            args += [f"--{service}Host", LOOPBACK, f"--{service}Port", str(port)]
        with open(self._directory / "stdout.log", "wb") as stdout, open(self._directory / "stderr.log", "wb") as stderr:
            process = subprocess.Popen(
                args, cwd=self._directory, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr
            )
        LIVE_PROCESSES.add(process)  # killed at interpreter exit if a test run never reaches stop()
        try:
            self._wait_until_ready(process, args)
        except BaseException:
            terminate_process(process)
            if not self.persistent:  # a persistent one keeps its data for another try (`stop` removes it)
                shutil.rmtree(self._directory, ignore_errors=True)
                self._directory = None
            raise
        self._process = process

    def _wait_until_ready(self, process: subprocess.Popen[bytes], args: list[str]) -> None:
        deadline = time.monotonic() + self.startup_timeout
        waiting = dict(self.ports)
        while True:
            if process.poll() is not None:
                raise self._failure(f"azurite exited with status {process.returncode} before listening", args)
            waiting = {service: port for service, port in waiting.items() if not accepts_tcp(port)}
            if not waiting and process.poll() is None:
                return
            if time.monotonic() > deadline:
                names = ", ".join(f"{service} on {port}" for service, port in waiting.items())
                raise self._failure(f"azurite did not accept TCP ({names}) within {self.startup_timeout:g} s", args)
            time.sleep(0.05)

    def _failure(self, what: str, args: list[str]) -> AzuriteError:
        assert self._directory is not None
        stderr = (self._directory / "stderr.log").read_bytes().decode(errors="replace").strip()
        stdout = (self._directory / "stdout.log").read_bytes().decode(errors="replace").strip()
        return AzuriteError(
            f"{what}\ncommand: {' '.join(args)}\nstderr:\n{stderr or '(empty)'}\nstdout:\n{stdout or '(empty)'}"
        )


def running(emulator: Azurite) -> Iterator[Azurite]:
    """For a pytest fixture (`yield from running(...)`): the emulator started, then stopped. Fails the test,
    never skips it, when it cannot start: `make test` (and so CI) installs Azurite, so a missing emulator
    is a broken setup that a skip would hide."""
    import pytest

    try:
        emulator.start()
    except AzuriteError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield emulator
    finally:
        emulator.stop()
