"""Every `certsync` command's `--help` ends with real examples, and they run: each example that needs
neither Azure nor a mail server on the internet is run, as written, in a world `scripts/demo_pki.py` makes
(a vault directory, an event, targets, an Exchange inventory, a demo root) beside a copy of `examples/`."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared.cli.main import _parser
from tests.test_demo import run_demo_pki

REPO = Path(__file__).resolve().parent.parent
CERTSYNC = str(Path(sys.executable).with_name("certsync"))
# what an example may need that no test here has: Azure, an internet mail server, a PFX, jq
NOT_RUN = ("--vault-url", "certsync probe ", "certsync discover hrw-exchange", ".pfx", "mail.pem", "|")
# the order the examples run in: discover stores the inventory and process writes the audit trail history reads
FIRST = ("discover", "process")
EXAMPLE_VERSION = "8f1c2a9e4b7d4c0e9a6b3f5d2e1c0b9a"  # the version id the help examples use


def commands() -> dict[str, argparse.ArgumentParser]:
    [subparsers] = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subparsers.choices)


def examples(parser: argparse.ArgumentParser) -> list[str]:
    """The `certsync ...` lines of the epilog, with `\\` continuations joined."""
    text = (parser.epilog or "").replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip().startswith("certsync ")]


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_command_help_ends_with_two_or_three_examples(name):
    parser = commands()[name]
    lines = examples(parser)
    assert 2 <= len(lines) <= 3, (name, parser.epilog)
    assert all(line.startswith(f"certsync {name} ") for line in lines), lines
    assert parser.format_help().rstrip().endswith("examples:\n" + parser.epilog.split("examples:\n", 1)[1].rstrip())


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    world = tmp_path_factory.mktemp("world")
    run_demo_pki(world, 8080)
    shutil.copytree(REPO / "examples", world / "examples")
    versions = sorted((world / "vault" / "exch-hybrid-smtp").glob("*.pem"), key=lambda p: p.stat().st_mtime)
    new = next(p for p in versions if "R11" in _issuer(p))
    # `approve`'s examples name a version: the renewed one takes that id, as Key Vault would have given it
    meta_path = world / "vault" / "exch-hybrid-smtp" / "certificate.json"
    meta = json.loads(meta_path.read_text())
    meta["created"][EXAMPLE_VERSION] = meta["created"].pop(new.stem)
    meta_path.write_text(json.dumps(meta))
    for named in (world / "event.json",):  # the event names the version too
        named.write_text(named.read_text().replace(new.stem, EXAMPLE_VERSION))
    new = new.rename(new.with_name(f"{EXAMPLE_VERSION}.pem"))
    shutil.copy(new, world / "mail-2026-11.pem")  # the names `plan`'s examples use
    shutil.copy(world / "demo-root.pem", world / "root.pem")
    return world


def _issuer(path: Path) -> str:
    from shared.x509.containers import load_certificate_file

    return str(load_certificate_file(str(path)).leaf.issuer)


def test_the_examples_run_as_written(world):
    ordered = sorted(commands(), key=lambda n: (FIRST.index(n) if n in FIRST else len(FIRST), n))
    env = {k: v for k, v in os.environ.items() if k != "CERTSYNC_DEBUG"}
    env["PATH"] = f"{Path(CERTSYNC).parent}{os.pathsep}{env['PATH']}"  # the shell finds this certsync
    ran = set()
    for name in ordered:
        for line in examples(commands()[name]):
            if any(word in line for word in NOT_RUN):
                continue
            result = subprocess.run(
                ["bash", "-c", line], capture_output=True, text=True, cwd=world, env=env, timeout=120, check=False
            )
            assert result.returncode in (0, 1), (line, result.stdout, result.stderr)
            assert "Traceback" not in result.stderr and "error" not in result.stderr, (line, result.stderr)
            assert result.stdout or ">" in line, line
            ran.add(name)
    assert ran == set(commands()) - {"probe"}, ran  # probe: only with a mail server on the internet
