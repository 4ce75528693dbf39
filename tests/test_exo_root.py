"""Trust of Exchange Online's root (issue 18 item 7): discovery records whether each server's root store holds
DigiCert Global Root G2, the inventory reads it (optional for old inventories), and `certsync doctor` flags a
server that lacks it, on the inventory fixtures."""

from __future__ import annotations

import hashlib
import json

import certifi
import pytest

from shared.exchange.inventory import EXO_ROOT_FIELD, EXO_ROOT_NAME, EXO_ROOT_THUMBPRINT, InventoryError, read_inventory
from shared.exchange.mailflow import EXO_ROOT_MISSING, predict
from shared.x509.containers import certificates_in
from tests.test_cli_plan import FIXTURES, run
from tests.test_discovery_runbook import RUNBOOK, functions, strings


def fixture(name: str = "two-server", **roots: object) -> dict:
    document = json.loads((FIXTURES / name / "inventory.json").read_text(encoding="utf-8"))
    for server in document["servers"]:
        if server["Name"] in roots:
            server[EXO_ROOT_FIELD] = roots[server["Name"]]
    return document


def test_the_thumbprint_is_digicert_global_root_g2_as_certifi_ships_it():
    with open(certifi.where(), "rb") as handle:
        roots = certificates_in(handle.read(), "certifi")
    (root,) = [r for r in roots if str(r.subject).startswith(f"CN={EXO_ROOT_NAME},")]
    assert hashlib.sha1(root.der).hexdigest().upper() == root.thumbprint == EXO_ROOT_THUMBPRINT
    assert EXO_ROOT_THUMBPRINT in RUNBOOK.read_text(encoding="utf-8")


def test_discovery_records_the_root_per_server_read_only():
    servers = functions()["Read-CertsyncDiscoveryServers"]
    assert EXO_ROOT_FIELD in strings(servers) and "Test-CertsyncDiscoveryExoRoot" in servers.text.decode()
    probe = functions()["Test-CertsyncDiscoveryExoRoot"].text.decode()
    assert "'ReadOnly, OpenExistingOnly'" in probe and "Add-CertsyncDiscoveryError" not in probe


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), ("False", False), (None, None)])
def test_the_inventory_reads_the_field_and_an_old_inventory_has_none(value, expected):
    inventory = read_inventory(fixture(EX01=value), "inventory.json")
    assert inventory.server("EX01").has_exo_root is expected
    assert inventory.server("EX02").has_exo_root is None  # written before discovery recorded it


def test_a_bad_value_is_a_one_line_error_naming_the_field():
    with pytest.raises(InventoryError, match=rf"inventory.json: servers\[0\].{EXO_ROOT_FIELD}: expected true or false"):
        read_inventory(fixture(EX01="maybe"), "inventory.json")


def test_doctor_flags_a_hybrid_server_without_the_root_with_the_fix():
    findings = predict(read_inventory(fixture(EX01=True, EX02=False)))
    (finding,) = [f for f in findings if f.error == EXO_ROOT_MISSING]
    assert (finding.server, finding.severity) == ("EX02", "error")
    assert "MC1224565" in finding.error and EXO_ROOT_THUMBPRINT in finding.error
    assert "Import-Certificate" in finding.fix and "Cert:\\LocalMachine\\Root" in finding.fix
    assert not [f for f in predict(read_inventory(fixture(EX01=True, EX02=True))) if f.error == EXO_ROOT_MISSING]
    assert not [f for f in predict(read_inventory(fixture())) if f.error == EXO_ROOT_MISSING]


def test_a_server_outside_exchange_online_mail_flow_is_a_warning():
    # multi-site: EX03 is in no hybrid configuration list
    document = fixture("multi-site", EX03=False)
    hybrid = document["hybrid_configuration"]
    assert "EX03" not in hybrid["SendingTransportServers"] + hybrid["ReceivingTransportServers"]
    (finding,) = [f for f in predict(read_inventory(document)) if f.error == EXO_ROOT_MISSING]
    assert (finding.server, finding.severity) == ("EX03", "warning")


def test_without_a_hybrid_configuration_the_cloud_connectors_servers_count():
    document = fixture(EX01=False, EX02=False)
    document["hybrid_configuration"] = None
    severities = {f.server: f.severity for f in predict(read_inventory(document)) if f.error == EXO_ROOT_MISSING}
    assert severities == {"EX01": "error", "EX02": "error"}  # both are sources of "Outbound to Office 365"


def test_certsync_doctor_reports_it_and_exits_1(tmp_path):
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(fixture(EX01=True, EX02=False)), encoding="utf-8")
    result = run("doctor", "--inventory", path)
    assert result.returncode == 1, result.stderr
    rows = [line.split()[:2] for line in result.stdout.splitlines()]
    assert ["ERROR", "EX02"] in rows and EXO_ROOT_NAME in result.stdout and "Traceback" not in result.stderr
    document = json.loads(run("doctor", "--inventory", path, "--json").stdout)
    assert [f["server"] for f in document["findings"] if f["error"] == EXO_ROOT_MISSING] == ["EX02"]
