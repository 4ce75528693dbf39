"""`make demo`'s event-pipeline half: the world `scripts/demo_pki.py` writes loads with certsync's own
loaders and assesses Valid with its CRLs served on loopback, and `scripts/demo.sh` runs end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from shared.adapters.local.vault_directory import DirectoryVault
from shared.exchange.inventory import load_inventory
from shared.pipeline.events import NEW_VERSION, parse_event_json
from shared.pipeline.targets import load_targets_file, resolve_targets
from shared.validation.assessment import VALID, TrustStore, assess
from shared.validation.fetch import Fetcher
from tests.servers import HttpServer

REPO = Path(__file__).resolve().parent.parent
NAME = "exch-hybrid-smtp"
VAULT = "contoso-kv"


def run_demo_pki(work: Path, port: int) -> None:
    """`scripts/demo_pki.py` writes the demo's world (PKI, vault, targets, trust) into `work`, for `port`."""
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo_pki.py"), str(work), "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_demo_pki_loads_with_certsyncs_loaders_and_assesses_valid(tmp_path: Path):
    work = tmp_path / "demo"
    with HttpServer() as server:
        run_demo_pki(work, server.port)
        crls = sorted(p.name for p in (work / "crl").iterdir())
        assert crls == ["R10.crl", "R11.crl", "root.crl"]
        for name in crls:
            server.route(f"/{name}", body=(work / "crl" / name).read_bytes())

        [event] = parse_event_json((work / "event.json").read_bytes(), "event.json")
        assert event.event_type == NEW_VERSION and event.schema == "EventGrid"
        assert (event.vault, event.name) == (VAULT, NAME)
        assert len(event.version) == 32 and int(event.version, 16) >= 0
        assert event.object_id == f"https://{VAULT}.vault.azure.net/certificates/{NAME}/{event.version}"
        data = json.loads((work / "event.json").read_text())[0]["data"]
        assert list(data) == ["Id", "VaultName", "ObjectType", "ObjectName", "Version", "NBF", "EXP"]

        vault = DirectoryVault(work / "vault", event.vault)
        new = vault.get(event.name, event.version)
        previous = vault.previous(event.name, event.version)
        assert previous is not None and previous.created < new.created
        assert str(previous.bundle.leaf.issuer) == "CN=R10, O=Let's Encrypt, C=US"
        assert str(new.bundle.leaf.issuer) == "CN=R11, O=Let's Encrypt, C=US"
        assert [str(c.subject) for c in new.bundle.chain] == ["CN=R11, O=Let's Encrypt, C=US"]
        assert event.not_before == new.bundle.leaf.not_before and event.expires == new.bundle.leaf.not_after
        assert new.tags["certsync-worker-group"] == "hrw-exchange"

        targets = resolve_targets(NAME, tags=new.tags, file=load_targets_file(str(work / "targets.json")))
        assert targets.worker_group == "hrw-exchange" and targets.servers == ()  # the inventory names them
        assert targets.hybrid_configuration and "mail.contoso.com" in targets.hosts
        # the inventory discovery would read: both servers hold the old version, every connector selects it
        inventory = load_inventory(str(work / "inventory.json"))
        assert [s.name for s in inventory.servers] == ["EX01", "EX02"] and inventory.errors == ()
        assert {c.thumbprint for c in inventory.certificates} == {previous.thumbprint}
        assert [c.source_servers for c in inventory.send_connectors] == [("EX01", "EX02")]
        assert inventory.send_connectors[0].identity.startswith("Outbound to Office 365 - ")

        result = assess(
            new.bundle,
            hosts=targets.hosts,
            trust=TrustStore.from_file(str(work / "demo-root.pem")),
            revocation="hard",
            fetcher=Fetcher(allow=[f"127.0.0.1:{server.port}"]),
        )
        assert result.status == VALID, result.to_dict()
        # issued under Let's Encrypt's names with clientAuth: only the dated note that public CAs drop it
        assert [(f.code, f.severity) for f in result.findings] == [("client-auth-ending", "info")]
        fetched = {r.path for r in server.requests}
        assert {"/R11.crl", "/root.crl"} <= fetched  # the leaf's and the intermediate's CRLs

    # The only private key written is the demo mail server's own (its loopback SMTP server needs it),
    # readable by its owner alone; the vault, the event, the targets and the CRLs hold none.
    written = b"".join(p.read_bytes() for p in work.rglob("*") if p.is_file() and p.parent.name != "mailserver")
    assert b"PRIVATE KEY" not in written
    mail = work / "mailserver"
    assert [p.name for p in sorted(mail.iterdir()) if b"PRIVATE KEY" in p.read_bytes()] == ["new-key.pem"]
    assert (mail / "new-key.pem").stat().st_mode & 0o077 == 0


# `make demo` installs no Azure SDK (requirements-demo.txt): every process of the demo refuses `azure` imports
NO_AZURE = """import sys


class NoAzure:
    def find_spec(self, name, path=None, target=None):
        if name == "azure" or name.startswith("azure."):
            raise ModuleNotFoundError(f"{name}: make demo installs no Azure SDK", name=name)


sys.meta_path.insert(0, NoAzure())
"""


def test_make_demo_runs_end_to_end(tmp_path: Path):
    env = dict(os.environ)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(NO_AZURE)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "site"), *filter(None, [env.get("PYTHONPATH")])])
    env["PATH"] = os.pathsep.join([str(REPO / ".venv" / "bin"), str(Path(sys.executable).parent), env["PATH"]])
    env["DEMO_WORK"] = str(tmp_path / "demo")
    env.pop("CERTSYNC_DEBUG", None)
    # Its own process group, so that a demo that hangs is stopped with its CRL server.
    demo = subprocess.Popen(
        ["bash", str(REPO / "scripts" / "demo.sh")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        output, errors = demo.communicate(timeout=60)  # the requirement: well within a minute
    except subprocess.TimeoutExpired:
        os.killpg(demo.pid, signal.SIGKILL)
        demo.communicate()
        raise
    assert demo.returncode == 0, output[-3000:] + errors[-3000:]
    assert "Outcome: QUEUED" in output and "Outcome: DUPLICATE" in output
    assert "Assessment  Valid" in output
    assert "Old         <I>CN=R10, O=Let's Encrypt, C=US<S>CN=mail.contoso.com" in output
    assert "New         <I>CN=R11, O=Let's Encrypt, C=US<S>CN=mail.contoso.com" in output
    history = output.rsplit("certsync history", 1)[-1]
    for kind in ("event-received", "assessment", "plan", "job-queued", "duplicate"):
        assert f"  {kind} " in history, kind
    assert len(list((tmp_path / "demo" / "outbox").glob("*.json"))) == 1
    # The renewal's notice reached the loopback receiver once, and its signature verified there.
    verified = [line for line in output.splitlines() if line.startswith("VERIFIED ")]
    assert len(verified) == 1 and verified[0].endswith(" certsync.queued"), verified
    assert "sig=" not in output and "whsec_" not in output.replace("whsec_...", "")
    # The probe: first the server without R11 (exit 1), then with the full chain (exit 0).
    probes = output.split("certsync probe ")[1:]
    assert len(probes) == 2  # each probe step echoes its command, then its output follows
    assert "Intermediates sent  NO" in probes[0] and "(exit 1)" in probes[0]
    assert "Intermediates sent  yes" in probes[1] and "Status              Valid" in probes[1]
    assert "Demo finished" in output
    _the_steps_show_the_commands_they_run(output, env)


def _the_steps_show_the_commands_they_run(output: str, env: dict[str, str]) -> None:
    """Steps 1-7 work on the bundled examples at a fixed time: each command as printed, pasted into bash,
    prints what the step printed and exits as it did (step 7 once showed one command and ran another)."""
    steps = output.split("\n\033[1m== ")[1:]
    assert len(steps) == 16
    for text in steps[:7]:
        title, shown, *printed = text.splitlines()
        assert shown.startswith("$ certsync "), title
        exit_line = next(n for n in range(len(printed) - 1, -1, -1) if printed[n].startswith("(exit "))
        again = subprocess.run(
            ["bash", "-c", shown[2:]], capture_output=True, text=True, cwd=REPO, env=env, timeout=60, check=False
        )
        assert printed[exit_line] == f"(exit {again.returncode})", title
        assert again.stdout.splitlines() == printed[:exit_line], title
