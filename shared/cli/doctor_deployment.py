"""`certsync doctor --deployment`: is the whole deployment healthy, from settings to the worker group.

It reads the Function App's settings from the environment (in Azure: the app's; from an admin's machine:
`azd env get-values` and the app settings exported), then checks with the identity it runs as
(AZURE_CLIENT_ID's managed identity, else `DefaultAzureCredential`: the admin's `az login`): each vault
of CERTSYNC_VAULTS, which watched certificates' secrets it can read and which others it can read too,
the Event Grid subscription, the Automation account and its worker groups, and the inventories in
JobsStorage. The logic is `shared.reconciliation.health`; this module only composes it.

Exit 0 when healthy, 1 with any finding; `--json` prints `certsync.deployment-health/1`.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Mapping
from typing import Any

from shared.cli.common import EXIT_FINDING, EXIT_OK, print_json, visible


def run_deployment(args: argparse.Namespace) -> int:
    from shared.times import utc_now

    return doctor_deployment(None, utc_now(), as_json=args.json)


def doctor_deployment(
    env: Mapping[str, str] | None,
    now: dt.datetime,
    *,
    as_json: bool = False,
    keyvault_credential: Any = None,
    arm_credential: Any = None,
    keyvault_options: Mapping[str, Any] | None = None,
    arm_options: Mapping[str, Any] | None = None,
) -> int:
    """Check the deployment `env` describes (None: the process environment), print, and return the exit
    code. The credentials and options reach the SDK clients (tests point them at the local fakes)."""
    from shared.reconciliation.health import check_deployment, document

    deployment = deployment_from_env(
        env,
        now,
        keyvault_credential=keyvault_credential,
        arm_credential=arm_credential,
        keyvault_options=keyvault_options,
        arm_options=arm_options,
    )
    findings = check_deployment(deployment)
    if as_json:
        print_json(document(findings, deployment))
    else:
        print_reach(deployment.reach)
        print_deployment_findings([f.to_dict() for f in findings])
    return EXIT_FINDING if findings else EXIT_OK


def deployment_from_env(
    env: Mapping[str, str] | None,
    now: dt.datetime,
    *,
    keyvault_credential: Any = None,
    arm_credential: Any = None,
    keyvault_options: Mapping[str, Any] | None = None,
    arm_options: Mapping[str, Any] | None = None,
) -> Any:
    """The `Deployment` to check: each part built only from settings that are good (a bad one is already a
    settings finding and its part is skipped)."""
    from shared import settings as registry
    from shared.reconciliation.health import Deployment

    env = registry.environment(env)
    problems = registry.problems(env)
    bad = {name for name, _ in problems}

    def good(name: str) -> Any:
        return None if name in bad else registry.value(name, env)

    group = good("HYBRID_WORKER_GROUP") or "hrw-exchange"
    watched = {name: g or group for name, g in (good("CERTSYNC_WATCHED_CERTIFICATES") or {}).items()}
    deployment = Deployment(
        now=now,
        settings_problems=problems,
        watched=watched,
        default_worker_group=group,
        event_subscription_id=good("CERTSYNC_EVENT_SUBSCRIPTION_ID") or "",
        automation_account_id=good("AUTOMATION_ACCOUNT_ID") or "",
        vault_resource_group=good("KEY_VAULT_RESOURCE_GROUP") or "",
        function_app_id=good("FUNCTION_APP_ID") or "",
    )
    client_id = good("AZURE_CLIENT_ID") or ""
    if not bad & {"CERTSYNC_VAULTS", "CERTSYNC_VAULT_DNS_SUFFIX", "CERTSYNC_VAULT_URLS", "AZURE_CLIENT_ID"}:
        from shared.adapters.azure.deployment import KeyVaultProbe

        suffix = registry.value("CERTSYNC_VAULT_DNS_SUFFIX", env)
        urls = registry.value("CERTSYNC_VAULT_URLS", env)
        deployment.vaults = [
            KeyVaultProbe(
                vault,
                urls.get(vault) or f"https://{vault}.{suffix}",
                keyvault_credential,
                client_id=client_id,
                **(keyvault_options or {}),
            )
            for vault in registry.value("CERTSYNC_VAULTS", env)
        ]
    if not bad & {"AUTOMATION_ACCOUNT_ID", "CERTSYNC_ARM_ENDPOINT", "AZURE_CLIENT_ID"}:
        from shared.adapters.azure.automation import AutomationClient
        from shared.adapters.azure.deployment import ArmDeployment

        automation = AutomationClient(
            registry.value("AUTOMATION_ACCOUNT_ID", env),
            arm_credential,
            endpoint=registry.value("CERTSYNC_ARM_ENDPOINT", env),
            client_id=client_id,
            **(arm_options or {}),
        )
        deployment.arm = ArmDeployment(automation)
    if not bad & {registry.JOBS_STORAGE, "JobsStorage__clientId", "INVENTORY_TABLE"}:
        import shared.wiring
        from shared.adapters.azure.tables import TableInventoryStore
        from shared.pipeline.inventories import DEFAULT_MAX_AGE

        storage = shared.wiring.storage_from_env(env)
        deployment.inventories = TableInventoryStore(storage.table_client(registry.value("INVENTORY_TABLE", env)))
        hours = good("CERTSYNC_INVENTORY_MAX_AGE_HOURS")
        deployment.inventory_max_age = dt.timedelta(hours=hours) if hours else DEFAULT_MAX_AGE
    return deployment


def print_reach(reach: Mapping[str, Mapping[str, list[str]]]) -> None:
    """What the identity could list and read, per vault, before the findings."""
    for vault, seen in sorted(reach.items()):
        readable = ", ".join(seen["readable_secrets"]) or "none"
        print(
            visible(
                f"Key Vault {vault}: {len(seen['certificates'])} certificate(s) listed; secrets readable: {readable}"
            )
        )


def print_deployment_findings(findings: list[dict[str, str]]) -> None:
    """A sorted table (severity, area, object, problem) with each fix under its row, then a summary line."""
    for finding in findings:
        print(
            visible(
                f"{finding['severity'].upper():<8} {finding['check']:<13} {finding['object']}: {finding['problem']}"
            )
        )
        print(visible(f"{'':<8} {'':<13} Fix: {finding['fix']}"))
    errors = sum(1 for f in findings if f["severity"] == "error")
    if findings:
        print(f"{len(findings)} finding(s), {errors} error(s): the deployment needs the fixes above.")
    else:
        print("Healthy: settings, Key Vault, identity, Event Grid, Automation, worker groups and inventories.")
