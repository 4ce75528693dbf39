"""The reconciliation timer function on its Azure adapters: the real Key Vault SDK clients against the local
HTTPS Key Vault, the audit and state tables and the jobs queue in Azurite, CRLs on loopback, and a clock
the test sets (`functions.reconcile.clock`). The function is called as the host calls it, with a
`func.TimerRequest`; its binding is checked in the app's own function.json."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import azure.functions as func
import pytest
from azure.functions import meta
from azure.functions.timer import TimerRequestConverter

import functions.reconcile
import shared.wiring
from functions.reconcile import reconcile_daily
from shared.errors import CertsyncError
from shared.reconciliation.reconcile import Reconciler
from shared.wiring import reconciler_from_env, state_store_from_env
from tests.azurite import queued_json
from tests.chains import renewal_pki, unprotected_pfx
from tests.inventories import exchange, keep
from tests.test_functions_pipeline import app_settings
from tests.test_reconcile import RecordingNotifier

NAME = "exch-hybrid-smtp"
LOCKED = "exch-locked"


@dataclass
class Deployment:
    env: dict
    reconciler: Reconciler
    notifier: RecordingNotifier
    keyvault: object
    connection_string: str
    secrets: list[str]  # what must never leave Key Vault: the PFX (base64) and key bodies
    expires: dt.datetime
    now: dt.datetime

    def tick(self, when: dt.datetime, monkeypatch, *, past_due: bool = False) -> None:
        """One invocation, its TimerRequest decoded by the library's converter from what the host sends."""
        monkeypatch.setattr(functions.reconcile, "clock", lambda: when)
        info = {
            "Schedule": {"AdjustForDST": True},
            "ScheduleStatus": {
                "Last": "0001-01-01T00:00:00",
                "Next": when.isoformat(),
                "LastUpdated": when.isoformat(),
            },
            "IsPastDue": past_due,
        }
        timer = TimerRequestConverter.decode(meta.Datum(json.dumps(info), "json"), trigger_metadata={})
        assert isinstance(timer, func.TimerRequest) and timer.past_due is past_due
        reconcile_daily(timer)

    def messages(self) -> list[dict]:
        return queued_json(self.connection_string, self.env["REMEDIATION_QUEUE"])

    def kinds(self, *only: str) -> list[str]:
        return [n.kind for n in self.notifier.notices if not only or n.kind in only]


@pytest.fixture
def deployment(azurite, keyvault, http_server, tmp_path: Path, monkeypatch) -> Deployment:
    now = dt.datetime.now(dt.timezone.utc)
    pki = renewal_pki(http_server, crl_next_update=now + dt.timedelta(days=400))
    secrets, leaves = [], []
    for inter, days in ((pki.inter_a, 300), (pki.inter_b, 20)):
        # one-year certificates: the newest, with 20 days left, is in its warning window (the 30-day cap)
        leaf = pki.leaf(inter, not_before=now + dt.timedelta(days=days - 365), not_after=now + dt.timedelta(days=days))
        leaves.append(leaf)
        data = unprotected_pfx(leaf, inter)
        secrets += [base64.b64encode(data).decode(), leaf.key_pem.split(b"-----")[2].strip().decode()[:64]]
        keyvault.add_version(NAME, data, tags={"certsync-servers": "EX01"})
    r11_leaf, r11_pfx = leaf, data  # the newest version's
    keyvault.add_version(LOCKED, r11_pfx, tags={"certsync-worker-group": "hrw-exchange", "certsync-servers": "EX02"})
    keyvault.add_version("other-web", r11_pfx)  # no certsync tag: never read beyond its version listing
    keyvault.fail(f"/secrets/{LOCKED}", 403, "Forbidden", inner_code="ForbiddenByRbac")
    target = {"worker_group": "hrw-exchange", "servers": ["EX01"], "send_connectors": ["Outbound"]}
    env = app_settings(azurite, keyvault, http_server, tmp_path, pki.root, {NAME: target})
    env["RECONCILE_SCHEDULE"] = "0 0 6 * * *"
    notifier = RecordingNotifier()
    options = {"credential": keyvault.credential, **keyvault.client_kwargs}
    reconciler = reconciler_from_env(env, notifier=notifier, keyvault_options=options)
    # Exchange uses the first version on EX01, read just now (INVENTORY_TABLE on Azurite)
    keep(reconciler.pipeline.inventories, exchange(leaves[0], servers=("EX01",)), collected=now)
    monkeypatch.setattr(shared.wiring, "azure_reconciler", lambda: reconciler)
    return Deployment(
        env, reconciler, notifier, keyvault, azurite.connection_string, secrets, r11_leaf.cert.not_valid_after_utc, now
    )


def test_the_timer_binding_reads_its_schedule_from_the_setting():
    from tests.test_function_app import FUNCTIONS

    [function] = [f for f in FUNCTIONS if f.get_function_name() == "reconcile_daily"]
    assert json.loads(function.get_function_json())["bindings"] == [
        {
            "direction": "IN",
            "type": "timerTrigger",
            "name": "timer",
            "schedule": "%RECONCILE_SCHEDULE%",
            "runOnStartup": False,
            "useMonitor": True,
        }
    ]
    settings = json.loads((Path(__file__).parent.parent / "local.settings.json.example").read_text())["Values"]
    assert settings["RECONCILE_SCHEDULE"] == "0 0 6 * * *" and settings["STATE_TABLE"] == "certsyncstate"


def test_the_daily_run_processes_warns_isolates_a_failure_and_repeats_nothing(deployment, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="certsync")
    deployment.tick(deployment.now, monkeypatch)

    [job] = deployment.messages()
    assert job["certificate"] == NAME and job["plan"]["old_certificates"] != []  # the newest version, queued
    # the run's notices, the queued renewal it ran through the pipeline among them, go out together at its end
    assert sorted(deployment.kinds()) == ["expiry-warning", "failed", "queued", "unprocessed"]
    failed = next(n for n in deployment.notifier.notices if n.kind == "failed")
    assert failed.certificate == LOCKED and failed.details["state"] == "forbidden"
    assert "403 Forbidden/ForbiddenByRbac" in failed.summary and "\n" not in failed.summary
    expiry = next(n for n in deployment.notifier.notices if n.kind == "expiry-warning")
    assert expiry.certificate == NAME and expiry.details["state"] == "warning"
    snapshots = {s["certificate"]: s for s in state_store_from_env(deployment.env).snapshots()}
    assert set(snapshots) == {NAME, LOCKED}  # other-web has no targets
    assert snapshots[NAME]["expiry_state"] == "warning" and snapshots[NAME]["attention"] == "warning"
    assert snapshots[NAME]["servers"][0]["outcome"] == "pending"
    assert snapshots[LOCKED]["attention"] == "critical" and snapshots[LOCKED]["findings"][0]["code"] == "failed"
    assert not [r.path for r in deployment.keyvault.requests if r.path.startswith("/secrets/other-web")]
    [summary] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reconciled ")]
    assert summary.startswith("reconciled 2 certificate(s) in 1 vault(s)") and "1 failure(s)" in summary

    deployment.tick(deployment.now + dt.timedelta(hours=1), monkeypatch)
    deployment.tick(deployment.now + dt.timedelta(days=1), monkeypatch, past_due=True)
    assert len(deployment.kinds()) == 4 and len(deployment.messages()) == 1  # nothing repeated, nothing resent
    assert any("running late" in r.getMessage() for r in caplog.records)  # the past-due invocation said so

    deployment.tick(deployment.expires - dt.timedelta(days=6), monkeypatch)
    states = [n.details["state"] for n in deployment.notifier.notices if n.kind == "expiry-warning"]
    assert states == ["warning", "critical"]

    deployment.keyvault.clear_failures()
    deployment.tick(deployment.expires - dt.timedelta(days=5), monkeypatch)
    resolved = [n for n in deployment.notifier.notices if n.kind == "resolved"]
    assert [(n.certificate, n.details["finding"]) for n in resolved] == [(LOCKED, "failed")]


def test_nothing_secret_reaches_the_queue_tables_or_notices(deployment, monkeypatch):
    deployment.tick(deployment.now, monkeypatch)
    audit = deployment.reconciler.audit
    stored = json.dumps(
        [
            state_store_from_env(deployment.env).snapshots(),
            [e.to_dict() for name in (NAME, LOCKED) for e in audit.history(name)],
            [n.__dict__ for n in deployment.notifier.notices],
            deployment.messages(),
        ]
    )
    assert NAME in stored and "reconcile-finding" in stored  # the scan saw real content
    assert [s for s in deployment.secrets if s in stored] == []


def test_the_status_page_reads_the_snapshots_through_wiring(deployment, monkeypatch):
    deployment.tick(deployment.now, monkeypatch)
    for name, value in deployment.env.items():
        monkeypatch.setenv(name, value)
    shared.wiring.azure_state_store.cache_clear()
    try:
        snapshots = shared.wiring.azure_snapshots()
    finally:
        shared.wiring.azure_state_store.cache_clear()
    assert [s["certificate"] for s in snapshots] == sorted([NAME, LOCKED])
    assert all(s["schema"] == "certsync.status/1" for s in snapshots)


def test_a_missing_setting_fails_the_invocation_with_one_line():
    with pytest.raises(CertsyncError, match="CERTSYNC_VAULTS is not set"):
        reconciler_from_env({"JobsStorage": "UseDevelopmentStorage=true"})


def test_importing_the_function_module_loads_no_azure_sdk():
    import subprocess
    import sys

    code = (
        "import sys, functions.reconcile\n"
        "print(sorted(m for m in sys.modules if m.startswith(('azure.core', 'azure.data', 'azure.storage',"
        " 'azure.keyvault', 'azure.identity', 'shared.reconciliation.reconcile'))))\n"
    )
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
