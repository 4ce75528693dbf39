"""`certsync doctor --deployment` against the local stack: the HTTPS Key Vault fake with the real SDK
clients, the ARM fake (the Automation account, worker groups and workers, the Event Grid subscription)
and Azurite (the inventories). A healthy deployment exits 0; each misconfiguration is injected on its own
and must be found by name, with a fix, exit 1."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shared.adapters.azure.tables import TableInventoryStore
from shared.cli.doctor_deployment import doctor_deployment
from shared.pipeline.inventories import InventoryRecord
from shared.reconciliation.health import Deployment, Finding, check_deployment
from shared.times import format_time, utc_now
from shared.wiring import storage_from_env
from tests.azurite import Azurite
from tests.chains import build_chain
from tests.fakes.arm import FakeArm
from tests.fakes.keyvault import PKCS12, FakeKeyVault
from tests.test_keyvault import pfx_of

ROOT = Path(__file__).resolve().parent.parent
WATCHED = "exch-smtp"
UNWATCHED = "other-cert"
GROUP = "hrw-exchange"


@dataclass
class Stack:
    keyvault: FakeKeyVault
    arm: FakeArm
    azurite: Azurite
    now: dt.datetime
    env: dict[str, str] = field(default_factory=dict)
    secret_values: list[str] = field(default_factory=list)

    def inventories(self) -> TableInventoryStore:
        storage = storage_from_env(self.env)
        return TableInventoryStore(storage.table_client(self.env["INVENTORY_TABLE"]))

    def store_inventory(self, group: str = GROUP, *, age: dt.timedelta = dt.timedelta(hours=1), errors=()) -> None:
        document = {"schema": "certsync.inventory/1", "servers": [], "errors": list(errors)}
        collected = self.now - age
        self.inventories().put(InventoryRecord(group, collected, collected, document))

    def run(self, capsys, *, as_json: bool = False) -> tuple[int, str]:
        code = doctor_deployment(
            self.env,
            self.now,
            as_json=as_json,
            keyvault_credential=self.keyvault.credential,
            arm_credential=self.arm.credential,
            keyvault_options=self.keyvault.client_kwargs,
            arm_options=self.arm.client_kwargs,
        )
        out = capsys.readouterr().out
        for value in self.secret_values:
            assert value[:40] not in out  # a secret's value never reaches the answer
        return code, out

    def findings(self) -> list[Finding]:
        from shared.cli.doctor_deployment import deployment_from_env

        return check_deployment(
            deployment_from_env(
                self.env,
                self.now,
                keyvault_credential=self.keyvault.credential,
                arm_credential=self.arm.credential,
                keyvault_options=self.keyvault.client_kwargs,
                arm_options=self.arm.client_kwargs,
            )
        )


@pytest.fixture
def stack(keyvault: FakeKeyVault, arm: FakeArm, azurite: Azurite) -> Iterator[Stack]:
    """A healthy deployment: the Function's identity reads the watched certificate's secret and is refused
    the other one (per-secret RBAC), the subscription delivers to the function, the worker was seen five
    minutes ago, and the group's inventory is an hour old."""
    now = utc_now()
    for name in (WATCHED, UNWATCHED):
        keyvault.add_version(name, pfx_of(build_chain("rsa")), PKCS12)
    keyvault.fail(f"/secrets/{UNWATCHED}", 403, "Forbidden", inner_code="ForbiddenByRbac")
    arm.workers[GROUP] = {"EX01": format_time(now - dt.timedelta(minutes=5))}
    arm.key_vaults["kv"] = True  # Azure RBAC
    subscription = arm.event_subscription_id()
    arm.add_event_subscription(subscription)
    env = {
        "JobsStorage": azurite.connection_string,
        "INVENTORY_TABLE": f"inv{uuid.uuid4().hex[:16]}",
        "CERTSYNC_VAULTS": "kv",
        "CERTSYNC_VAULT_URLS": f"kv={keyvault.vault_url}",
        "CERTSYNC_WATCHED_CERTIFICATES": f"{WATCHED}={GROUP}",
        "CERTSYNC_EVENT_SUBSCRIPTION_ID": subscription,
        "KEY_VAULT_RESOURCE_GROUP": arm.resource_group,
        "FUNCTION_APP_ID": arm.function_app_id,
        **arm.env,
    }
    world = Stack(keyvault, arm, azurite, now, env)
    world.secret_values = [v.secret for versions in keyvault._versions.values() for v in versions]
    world.store_inventory()
    yield world


def only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, findings
    return findings[0]


def test_a_healthy_deployment_exits_0_and_says_so(stack, capsys):
    code, out = stack.run(capsys)
    assert code == 0, out
    assert out.splitlines() == [
        f"Key Vault kv: 2 certificate(s) listed; secrets readable: {WATCHED}",
        "Healthy: settings, Key Vault, identity, Event Grid, Automation, worker groups and inventories.",
    ]
    # It did look: the vault was listed, both secrets tried, and ARM asked for each part.
    paths = [p for _, p, _, _ in stack.arm.requests]
    assert any(p.endswith("/hybridRunbookWorkerGroups/hrw-exchange/hybridRunbookWorkers") for p in paths)
    assert any("/eventSubscriptions/" in p for p in paths)
    tried = {a.path.split("?")[0].rstrip("/") for a in stack.keyvault.answers if a.path.startswith("/secrets/")}
    assert tried == {f"/secrets/{WATCHED}", f"/secrets/{UNWATCHED}"}


def test_the_json_answer_is_the_health_document(stack, capsys):
    stack.env["CERTSYNC_EXPIRY_DAYS"] = "soon"
    code, out = stack.run(capsys, as_json=True)
    document = json.loads(out)
    assert code == 1 and document["schema"] == "certsync.deployment-health/1" and document["healthy"] is False
    assert document["reach"] == {"kv": {"certificates": [WATCHED, UNWATCHED], "readable_secrets": [WATCHED]}}
    assert document["findings"] == [
        {
            "check": "settings",
            "severity": "error",
            "object": "CERTSYNC_EXPIRY_DAYS",
            "problem": "CERTSYNC_EXPIRY_DAYS='soon': give a whole number of days",
            "fix": "set CERTSYNC_EXPIRY_DAYS in the Function App's settings (locally: the environment);"
            " README, Settings",
        }
    ]


# --- settings ---------------------------------------------------------------------------------------------


def test_a_missing_required_setting_is_found_and_its_part_skipped(stack, capsys):
    del stack.env["CERTSYNC_VAULTS"]
    code, out = stack.run(capsys)
    assert code == 1
    assert "ERROR    settings      CERTSYNC_VAULTS: CERTSYNC_VAULTS is not set" in out
    assert not [a for a in stack.keyvault.answers if a.path.startswith("/certificates")]  # no vault to probe
    assert out.rstrip().splitlines()[-1] == "1 finding(s), 1 error(s): the deployment needs the fixes above."


def test_a_malformed_watched_list_is_a_settings_finding(stack):
    stack.env["CERTSYNC_WATCHED_CERTIFICATES"] = "exch smtp=hrw-exchange"
    found = [f for f in stack.findings() if f.check == "settings"]
    assert only(found).object == "CERTSYNC_WATCHED_CERTIFICATES"
    assert "write NAME or NAME=WORKER_GROUP" in found[0].problem


# --- Key Vault and identity ---------------------------------------------------------------------------------


def test_an_unreachable_vault_is_found(stack):
    stack.keyvault.fail("/certificates", 500, "InternalServerError")
    finding = only(stack.findings())
    assert (finding.check, finding.severity, finding.object) == ("keyvault", "error", "kv")
    assert "cannot list the vault's certificates: HTTP 500" in finding.problem
    assert "Key Vault Reader on kv" in finding.fix


def test_a_watched_certificate_whose_secret_the_identity_cannot_read_is_found(stack):
    stack.keyvault.fail(f"/secrets/{WATCHED}", 403, "Forbidden", inner_code="ForbiddenByRbac")
    finding = only(stack.findings())
    assert (finding.check, finding.severity, finding.object) == ("identity", "error", f"kv/{WATCHED}")
    assert "cannot read the certificate's secret" in finding.problem
    assert "Key Vault Secrets User" in finding.fix and "CERTSYNC_WATCHED_CERTIFICATES" in finding.fix


def test_an_identity_that_can_read_secrets_it_does_not_watch_is_found(stack):
    # The vault-wide role of old: every secret readable, the unwatched certificate's private key too.
    stack.keyvault.clear_failures()
    finding = only(stack.findings())
    assert (finding.check, finding.severity, finding.object) == ("identity", "warning", f"kv/{UNWATCHED}")
    assert "not watched" in finding.problem and "grant per secret" in finding.fix


def test_a_watched_certificate_no_vault_has_is_found(stack):
    stack.env["CERTSYNC_WATCHED_CERTIFICATES"] += ",renamed-cert"
    finding = only(stack.findings())
    assert (finding.check, finding.object) == ("identity", "renamed-cert")


def test_without_a_watched_list_least_privilege_cannot_be_judged(stack):
    del stack.env["CERTSYNC_WATCHED_CERTIFICATES"]
    finding = only(stack.findings())
    assert (finding.check, finding.severity, finding.object) == ("identity", "warning", "CERTSYNC_WATCHED_CERTIFICATES")


def test_a_vault_that_still_uses_access_policies_is_found(stack):
    stack.arm.key_vaults["kv"] = False
    finding = only(stack.findings())
    assert (finding.check, finding.severity, finding.object) == ("keyvault", "error", "kv")
    assert "access policies" in finding.problem and "--enable-rbac-authorization true" in finding.fix
    asked = [q["api-version"] for _, p, q, _ in stack.arm.requests if p.endswith("/Microsoft.KeyVault/vaults/kv")]
    assert asked == ["2026-02-01"]  # the control-plane version that does not retire in 2027


def test_a_vault_outside_the_given_resource_group_is_a_warning(stack):
    stack.env["KEY_VAULT_RESOURCE_GROUP"] = "rg-elsewhere"  # the fake ARM answers 404 for another group
    finding = only(stack.findings())
    assert (finding.check, finding.severity, finding.object) == ("keyvault", "warning", "kv")


def test_a_managed_identity_that_reads_the_whole_vault_is_found_from_its_role_assignment(stack):
    # The data-plane probe shows what the identity running doctor can read; ARM shows everyone's grants.
    group = f"/subscriptions/{stack.arm.subscription}/resourceGroups/{stack.arm.resource_group}"
    vault = f"{group}/providers/Microsoft.KeyVault/vaults/kv"
    roles = "/providers/Microsoft.Authorization/roleDefinitions"
    worker = str(uuid.uuid4())
    stack.arm.role_assignments += [
        {  # a worker's old vault-wide grant: reads every certificate's private key
            "scope": vault,
            "roleDefinitionId": f"{roles}/4633458b-17de-408a-b874-0445c86b69e6",
            "principalId": worker,
            "principalType": "ServicePrincipal",
        },
        {  # per secret, as vault-access.bicep grants: not at or above the vault, so not listed by atScope()
            "scope": f"{vault}/secrets/{WATCHED}",
            "roleDefinitionId": f"{roles}/4633458b-17de-408a-b874-0445c86b69e6",
            "principalId": str(uuid.uuid4()),
            "principalType": "ServicePrincipal",
        },
        {  # an administrator: people are not certsync's to judge
            "scope": vault,
            "roleDefinitionId": f"{roles}/00482a5a-887f-4fb3-b363-3b7fe8e74483",
            "principalId": str(uuid.uuid4()),
            "principalType": "User",
        },
    ]
    finding = only(stack.findings())
    assert (finding.check, finding.severity, finding.object) == ("identity", "warning", f"kv: {worker}")
    assert finding.problem == (
        "holds Key Vault Secrets User on the whole vault: it can read every secret in the vault, every private key"
    )


# --- Event Grid ------------------------------------------------------------------------------------------------


def test_a_missing_event_subscription_is_found(stack):
    stack.arm.event_subscriptions.clear()
    finding = only(stack.findings())
    assert (finding.check, finding.object) == ("event-grid", "certsync-certificate-events")
    assert "does not exist" in finding.problem and "azd deploy" in finding.fix


def test_an_event_subscription_that_targets_another_function_or_drops_events_is_found(stack):
    stack.arm.add_event_subscription(
        stack.env["CERTSYNC_EVENT_SUBSCRIPTION_ID"],
        function="old_function",
        event_types=["Microsoft.KeyVault.CertificateNewVersionCreated"],
    )
    problems = sorted(f.problem for f in stack.findings() if f.check == "event-grid")
    assert len(problems) == 2
    assert problems[0].startswith("it delivers to /subscriptions/") and problems[0].endswith(
        "/functions/old_function, not the function"
    )
    assert (
        problems[1] == "it filters out Microsoft.KeyVault.CertificateExpired, Microsoft.KeyVault.CertificateNearExpiry"
    )


def test_an_event_subscription_that_delivers_to_another_function_app_is_found(stack):
    stack.env["FUNCTION_APP_ID"] = stack.arm.function_app_id.replace("func-certsync", "func-certsync-new")
    finding = only(stack.findings())
    assert finding.check == "event-grid" and finding.problem.endswith(
        "a function of another Function App than FUNCTION_APP_ID"
    )


def test_an_unset_event_subscription_id_is_a_warning(stack):
    del stack.env["CERTSYNC_EVENT_SUBSCRIPTION_ID"]
    finding = only(stack.findings())
    assert (finding.check, finding.severity) == ("event-grid", "warning")


# --- Automation and worker groups ------------------------------------------------------------------------------


def test_a_missing_automation_account_is_found(stack):
    stack.env["AUTOMATION_ACCOUNT_ID"] = stack.arm.account_id.replace("aa-certsync", "aa-gone1")
    found = [f for f in stack.findings() if f.check == "automation"]
    assert only(found).object == "aa-gone1" and "does not exist" in found[0].problem


def test_a_missing_worker_group_is_found(stack):
    stack.env["CERTSYNC_WATCHED_CERTIFICATES"] = f"{WATCHED}=hrw-edge"
    found = [f for f in stack.findings() if f.check == "worker-group"]
    assert only(found).object == "hrw-edge" and "does not exist" in found[0].problem


def test_a_worker_group_whose_workers_are_offline_is_found(stack):
    stack.arm.workers[GROUP] = {"EX01": format_time(stack.now - dt.timedelta(hours=3))}
    finding = only(stack.findings())
    assert (finding.check, finding.object) == ("worker-group", GROUP)
    assert finding.problem.startswith("no worker of the group is online (1 worker(s), last seen ")


def test_a_worker_group_without_workers_is_found(stack):
    stack.arm.workers[GROUP] = {}
    finding = only(stack.findings())
    assert (finding.check, finding.object) == ("worker-group", GROUP) and "has no workers" in finding.problem


def test_an_arm_refusal_is_a_finding_not_a_crash(stack):
    stack.arm.fail_next(403, count=10, method="GET")
    found = {f.check for f in stack.findings()}
    assert {"event-grid", "automation"} <= found


# --- inventories ---------------------------------------------------------------------------------------------------


def test_a_worker_group_without_an_inventory_is_found(stack):
    stack.env["INVENTORY_TABLE"] = f"inv{uuid.uuid4().hex[:16]}"  # an empty table
    finding = only(stack.findings())
    assert (finding.check, finding.object) == ("inventory", GROUP) and "certsync discover hrw-exchange" in finding.fix


def test_a_stale_inventory_is_found(stack):
    stack.store_inventory(age=dt.timedelta(hours=30))
    finding = only(stack.findings())
    assert (finding.check, finding.severity, finding.object) == ("inventory", "warning", GROUP)
    assert "30 h old" in finding.problem


def test_an_inventory_with_errors_is_found(stack):
    stack.store_inventory(errors=[{"where": "EX02", "message": "Get-ExchangeCertificate: access denied"}])
    finding = only(stack.findings())
    assert (finding.check, finding.object) == ("inventory", f"{GROUP}: EX02")
    assert "access denied" in finding.problem


# --- the logic alone, and the command line ----------------------------------------------------------------------


def test_findings_are_sorted_errors_first_and_each_has_a_fix():
    findings = check_deployment(
        Deployment(now=utc_now(), settings_problems=[("B", "b is bad"), ("A", "a is bad")], event_subscription_id="")
    )
    assert [(f.severity, f.check, f.object) for f in findings] == [
        ("error", "settings", "A"),
        ("error", "settings", "B"),
        ("warning", "event-grid", "CERTSYNC_EVENT_SUBSCRIPTION_ID"),
        ("warning", "identity", "CERTSYNC_WATCHED_CERTIFICATES"),
    ]
    assert all(f.fix for f in findings)


def _certsync(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": "/nonexistent"}
    return subprocess.run(
        [sys.executable, "-m", "shared.cli.main", *args], cwd=ROOT, env={**base, **env}, capture_output=True, text=True
    )


def test_the_command_with_nothing_configured_lists_the_missing_settings_and_exits_1():
    result = _certsync(["doctor", "--deployment"], {})
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for name in ("JobsStorage", "CERTSYNC_VAULTS", "AUTOMATION_ACCOUNT_ID"):
        assert f"settings      {name}: " in result.stdout


def test_doctor_needs_an_inventory_or_the_deployment_and_not_both():
    neither = _certsync(["doctor"], {})
    assert neither.returncode == 2
    assert neither.stderr.count("\n") == 1 and "--inventory FILE" in neither.stderr and "--deployment" in neither.stderr
    both = _certsync(["doctor", "--deployment", "--inventory", "x.json"], {})
    assert both.returncode == 2 and "not both" in both.stderr
