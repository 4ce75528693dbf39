"""`certsync plan` and `certsync doctor` as an admin runs them: a real process on every inventory fixture
(tests/fixtures/inventory/README.md), exit codes, the JSON documents and the human tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.pipeline import contract

CERTSYNC = str(Path(sys.executable).with_name("certsync"))
FIXTURES = Path(__file__).parent / "fixtures" / "inventory"
SCENARIOS = ("two-server", "multi-site", "edge", "partner-tls", "not-accepted-domain")
ASSESS = ("--trust", FIXTURES / "root.pem", "--revocation", "off", "--at", "2026-12-01", "--offline")
STEP_KEYS = {"phase", "action", "server", "object", "property", "previous", "value"}
ACTIONS = set(contract.ACTIONS)  # every action the runbook has a handler for


def run(*args, env=None):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CERTSYNC_")} | (env or {})
    return subprocess.run([CERTSYNC, *map(str, args)], capture_output=True, text=True, env=environment, timeout=60)


def plan(scenario, *extra, env=None):
    folder = FIXTURES / scenario
    targets = ("--targets", folder / "targets.json", "--name", "new") if (folder / "targets.json").exists() else ()
    return run("plan", folder / "new.pem", "--inventory", folder / "inventory.json", *targets, *ASSESS, *extra, env=env)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_plan_json_on_every_fixture_follows_the_spec(scenario):
    result = plan(scenario, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["schema"] == "certsync.plan/2" and doc["blocked"] is None
    # a file has no Key Vault identifiers; the intermediates are there for every install-intermediate step
    assert set(doc["certificate"]) == {"thumbprint", "tls_certificate_name", "not_after", "intermediates"}
    listed = {i["thumbprint"] for i in doc["certificate"]["intermediates"] if i["der_base64"]}
    assert {s["object"] for s in doc["steps"] if s["action"] == "install-intermediate"} <= listed
    assert doc["servers"] == sorted(doc["servers"]) and all(s == s.upper() for s in doc["servers"])
    assert doc["steps"] and all(set(s) >= STEP_KEYS and s["action"] in ACTIONS for s in doc["steps"])
    assert all(set(k) == {"server", "thumbprint", "reason"} for k in doc["kept"])
    assert isinstance(doc["warnings"], list)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_doctor_json_on_every_fixture(scenario):
    result = run("doctor", "--inventory", FIXTURES / scenario / "inventory.json", "--json")
    doc = json.loads(result.stdout)
    assert doc["schema"] == "certsync.doctor/1"
    keys = {"server", "object", "kind", "tls_certificate_name", "severity", "error", "fix"}
    assert all(set(f) == keys for f in doc["findings"])
    worse = any(f["severity"] in ("error", "warning") for f in doc["findings"])
    assert result.returncode == (1 if worse else 0)


def test_the_readable_plan_and_the_issue_15_servers():
    result = plan("multi-site")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Servers             EX01, EX02, EX04" in out  # EX04 sends hybrid mail, though the targets omit it
    assert "Plan                READY" in out
    table = [line.split(None, 5) for line in out.splitlines()[5:38]]
    assert table[0] == ["#", "PHASE", "SERVER", "ACTION", "OBJECT", "CHANGE"]
    assert [int(row[0]) for row in table[1:]] == list(range(1, 33))  # the order the steps run in
    switch = out.splitlines()[22]
    assert switch.split()[:3] == ["17", "switch", "set-send-connector"] and "Outbound to Office 365 - London" in switch
    assert switch.endswith(
        "TlsCertificateName: <I>CN=R10, O=Let's Encrypt, C=US<S>CN=mail.contoso.com -> <I>CN=R11, "
        "O=Let's Encrypt, C=US<S>CN=mail.contoso.com"
    )
    assert out.splitlines()[-1] == (
        "Plan READY: 32 step(s) (15 stage, 6 switch, 8 verify, 3 retire) on EX01, EX02, EX04; 1 kept, 1 warning(s)."
    )
    assert "Kept     EX03 " in out and "EX03 is not one of the servers" in out
    assert "Warning  discovery could not read EX05" in out


def test_edge_steps_are_marked_manual_and_partner_connectors_are_conflicts_not_writes():
    edge = plan("edge").stdout
    assert any(line.split()[2:5] == ["EDGE01", "import-certificate", "(manual)"] for line in edge.splitlines())
    assert "Warning  manual: run the runbook on the Edge server EDGE01" in edge
    partner = plan("partner-tls", "--json")
    doc = json.loads(partner.stdout)
    assert "Partner - Fabrikam" not in {s["object"] for s in doc["steps"]}
    assert doc["conflicts"][0].startswith("send connector 'Partner - Fabrikam' is in the targets but selects another")
    assert "Conflict send connector 'Partner - Fabrikam'" in plan("partner-tls").stdout


def test_the_accepted_domain_setting_turns_the_warning_into_a_block():
    assert plan("not-accepted-domain").returncode == 0
    blocked = plan("not-accepted-domain", env={"CERTSYNC_REQUIRE_ACCEPTED_DOMAIN": "true"})
    assert blocked.returncode == 1
    assert "Plan                BLOCKED: mail.contoso-mail.net is not an accepted domain" in blocked.stdout
    assert "Fix                 add its domain with New-AcceptedDomain" in blocked.stdout
    as_json = plan("not-accepted-domain", "--json", env={"CERTSYNC_REQUIRE_ACCEPTED_DOMAIN": "true"})
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["blocked"]["fix"]
    bad = plan("not-accepted-domain", env={"CERTSYNC_REQUIRE_ACCEPTED_DOMAIN": "perhaps"})
    assert bad.returncode == 2 and "CERTSYNC_REQUIRE_ACCEPTED_DOMAIN='perhaps': write true or false" in bad.stderr


def test_a_certificate_that_is_not_valid_blocks_with_exit_1():
    result = plan("two-server", "--at", "2028-01-01")
    assert result.returncode == 1 and "BLOCKED: the new certificate is DateInvalid" in result.stdout


def test_the_doctor_table():
    result = run("doctor", "--inventory", FIXTURES / "multi-site" / "inventory.json")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SEVERITY", "SERVER", "KIND", "CONNECTOR"]
    rows = [line.split(None, 3) for line in lines[1:-1] if not line.startswith(" ")]
    assert rows == [  # worst first, then by server, kind and connector
        ["ERROR", "EX02", "hybrid", "Hybrid Configuration"],
        ["ERROR", "EX02", "receive", "EX02\\Default Frontend EX02"],
        ["ERROR", "EX02", "send", "Outbound to Office 365 - 0b9d5c6e-3f51-4d2b-9a70-2f1c8e4b7a10"],
        ["WARNING", "EX05", "certificate", "EX05"],
    ]
    assert lines[-1] == "4 finding(s) on 5 server(s): 3 error, 1 warning."
    assert (
        "Error: 454 4.7.5 The certificate specified in TlsCertificateName of the SendConnector could not be found."
        in result.stdout
    )
    assert "Fix: let EX02 reach the CRL" in result.stdout
    clean = run("doctor", "--inventory", FIXTURES / "two-server" / "inventory.json")
    assert clean.returncode == 0 and clean.stdout.startswith("No findings")


@pytest.mark.parametrize("command", ["plan", "doctor"])
def test_help_ends_with_real_examples(command):
    out = run(command, "--help").stdout
    assert "examples:" in out and f"certsync {command} " in out.split("examples:")[1]


def test_unusable_input_is_exit_2_in_one_line(tmp_path):
    broken = tmp_path / "inventory.json"
    broken.write_text(json.dumps({"send_connectors": [{"Identity": "x", "SourceTransportServers": 5}]}))
    for args in (
        ("plan", FIXTURES / "edge" / "new.pem", "--inventory", broken, *ASSESS),
        ("doctor", "--inventory", broken),
        ("plan", tmp_path / "missing.pem", "--inventory", FIXTURES / "edge" / "inventory.json", *ASSESS),
        ("doctor", "--inventory", FIXTURES / "edge" / "inventory.json", "--at", "someday"),
    ):
        result = run(*args)
        assert result.returncode == 2 and result.stdout == "", result
        assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    result = run("doctor", "--inventory", broken)
    assert "inventory.json: send_connectors[0].SourceTransportServers: expected a list of server names" in result.stderr
