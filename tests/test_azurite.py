"""The Azurite fixture: a real emulator the real SDK clients talk to, and clear failures when it cannot run."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableClient
from azure.storage.queue import QueueClient

from tests.azurite import Azurite, AzuriteError, accepts_tcp

ROOT = Path(__file__).resolve().parent.parent


def _unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def test_queue_round_trip_through_the_fixture(azurite):
    assert f"QueueEndpoint=http://127.0.0.1:{azurite.queue_port}/devstoreaccount1;" in azurite.connection_string
    queue = QueueClient.from_connection_string(azurite.connection_string, _unique("roundtrip-"))
    queue.create_queue()
    queue.send_message("hello from certsync")
    [message] = queue.receive_messages(visibility_timeout=30)
    assert message.content == "hello from certsync"
    assert message.dequeue_count == 1
    queue.delete_message(message)
    assert queue.get_queue_properties().approximate_message_count == 0


def test_table_round_trip_through_the_fixture(azurite):
    assert f"TableEndpoint=http://127.0.0.1:{azurite.table_port}/devstoreaccount1;" in azurite.connection_string
    table = TableClient.from_connection_string(azurite.connection_string, _unique("roundtrip"))
    table.create_table()
    table.create_entity({"PartitionKey": "p", "RowKey": "1", "state": "pending"})
    with pytest.raises(ResourceExistsError):
        table.create_entity({"PartitionKey": "p", "RowKey": "1", "state": "other"})
    assert table.get_entity("p", "1")["state"] == "pending"
    rows = list(table.query_entities("PartitionKey eq @pk", parameters={"pk": "p"}))
    assert [(row["RowKey"], row["state"]) for row in rows] == [("1", "pending")]


def test_a_second_instance_starts_on_other_ports_and_stop_ends_its_process():
    with Azurite() as second:
        pid, port = second.pid, second.queue_port
        assert second.running and accepts_tcp(port)
        assert second.startup_seconds < 15
    assert not second.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not accepts_tcp(port)


def test_missing_binary_says_how_to_install_it(tmp_path: Path):
    with pytest.raises(AzuriteError, match=r"not installed.*make test.*scripts/install-azurite\.sh"):
        Azurite(tmp_path / "azurite").start()


def test_the_fixture_fails_rather_than_skips_when_azurite_is_not_installed(tmp_path: Path):
    plugin = tmp_path / "no_azurite.py"
    plugin.write_text(f"import tests.azurite\ntests.azurite.BINARY = tests.azurite.Path({str(tmp_path / 'none')!r})\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no_azurite", "-p", "no:cacheprovider", "-q", "-rA",
         "tests/test_azurite.py::test_queue_round_trip_through_the_fixture"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout and "skipped" not in result.stdout
    assert "Azurite is not installed" in result.stdout and "scripts/install-azurite.sh" in result.stdout


def test_a_binary_that_exits_is_reported_with_its_stderr(tmp_path: Path):
    binary = tmp_path / "azurite"
    binary.write_text("#!/bin/sh\necho 'cannot start: something is wrong' >&2\nexit 3\n")
    binary.chmod(0o755)
    with pytest.raises(AzuriteError, match=r"(?s)exited with status 3.*stderr:\ncannot start: something is wrong"):
        Azurite(binary).start()


def test_a_binary_that_never_listens_times_out_and_is_killed(tmp_path: Path):
    pid_file = tmp_path / "pid"
    binary = tmp_path / "azurite"
    binary.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 60\n")
    binary.chmod(0o755)
    never = r"did not accept TCP \(blob on \d+, queue on \d+, table on \d+\) within 0.3 s"
    with pytest.raises(AzuriteError, match=never):
        Azurite(binary, startup_timeout=0.3).start()
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)
