"""Long work shows a progress bar on stderr when stderr is a terminal, and nothing otherwise: `certsync
reconcile` in a real process with a pseudo-terminal as its stderr, and `certsync discover` waiting on the
fake ARM's job. stdout, the report, is the same either way."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from shared.cli.main import main
from tests.fakes.arm import FakeArm
from tests.inventories import GROUP
from tests.test_demo import run_demo_pki
from tests.test_discovery import RUNBOOKS, discover_through, inventory

REPO = Path(__file__).resolve().parent.parent
CERTSYNC = str(Path(sys.executable).with_name("certsync"))


@pytest.fixture
def world(tmp_path) -> Path:
    run_demo_pki(tmp_path, 8080)
    return tmp_path


RECONCILE = ["reconcile", "--vault-dir", "vault", "--vault", "contoso-kv", "--targets", "targets.json"]
RECONCILE += ["--trust", "demo-root.pem", "--revocation", "off"]
AT = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")  # both runs' time


def _reconcile(world: Path, stderr: int) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CERTSYNC_DEBUG"}
    argv = [CERTSYNC, *RECONCILE, "--at", AT]
    return subprocess.run(argv, cwd=world, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=120)


def _read_all(fd: int) -> bytes:
    """What the terminal holds, read while its other end is still open (after, Linux answers EIO)."""
    chunks = []
    while select.select([fd], [], [], 0)[0]:
        chunks.append(os.read(fd, 65536))
    return b"".join(chunks)


def test_reconcile_draws_a_bar_on_a_terminal_and_nothing_on_a_pipe(world):
    piped = _reconcile(world, subprocess.PIPE)
    assert piped.stderr == ""
    for name in ("certsync-state.sqlite", "certsync-audit.sqlite"):
        (world / name).unlink()  # the same run again, from the same start
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 wide
    try:
        shown = _reconcile(world, follower)
        terminal = _read_all(leader).decode("utf-8", "replace")
    finally:
        os.close(follower)
        os.close(leader)
    assert shown.returncode == piped.returncode
    assert shown.stdout == piped.stdout and "\r" not in shown.stdout  # the report is the same, bar-free
    frames = [f.strip() for f in terminal.split("\r") if f.strip()]
    assert any(f.startswith("reconciling:") and "/1 [" in f for f in frames), terminal
    assert terminal.endswith("\r")  # cleared at the end


class Terminal:
    """What a terminal keeps of what is written to it; `isatty` as a terminal's."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True


@pytest.fixture
def arm(keyvault_tls):
    with FakeArm(keyvault_tls, runbooks=RUNBOOKS, worker_groups=(GROUP,)) as fake:
        yield fake


def test_discover_shows_the_wait_for_the_job_on_a_terminal(arm, tmp_path, monkeypatch, capsys):
    discover_through(arm, monkeypatch)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    arm.script(["New", "Running", "Running", "Completed"], output=json.dumps(inventory()))
    common = ["--inventory", str(tmp_path / "i.sqlite"), "--audit", str(tmp_path / "a.sqlite")]
    assert main(["discover", GROUP, "--json", "--timeout", "60", "--poll-interval", "0.01", *common]) == 0
    assert json.loads(capsys.readouterr().out)["outcome"] == "stored"
    frames = [f.strip() for f in terminal.text.split("\r") if f.strip()]
    assert frames and all(f.startswith(f"waiting for discovery on {GROUP}:") for f in frames), terminal.text
    assert "/60 [" in frames[-1] and terminal.text.endswith("\r")
