"""Is the deployment healthy? The checks of `certsync doctor --deployment`, over ports.

One call, `check_deployment`, looks at everything a renewal passes through and returns findings, each
naming the object, what is wrong and the fix:

- settings: the problems `shared.settings.problems` found (given, as this layer does not read settings);
- Key Vault: each vault answers a listing of its certificates (reachability and the Reader role);
- identity: which watched certificates' secrets the identity can read, and whether it can read secrets of
  certificates it does not watch (least privilege, infra/modules/vault-access.bicep);
- Event Grid: the subscription exists, delivers the certificate events and targets the function;
- Automation: the account exists, each worker group exists and has a worker seen recently;
- inventories: each worker group has one, fresh and without errors.

The ports are small: `VaultProbe` (one vault, data plane), `DeploymentArm` (ARM GETs) and the pipeline's
`InventoryStore`. The Azure implementations live in `shared.adapters.azure.deployment`; tests run them
against the local Key Vault and ARM fakes and Azurite.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.errors import CertsyncError
from shared.pipeline.events import CERTIFICATE_EVENTS
from shared.pipeline.inventories import InventoryStore
from shared.times import format_time, parse_time

SCHEMA = "certsync.deployment-health/1"
EVENT_FUNCTION = "keyvault_certificate_events"
WORKER_SEEN_WITHIN = dt.timedelta(hours=1)  # Hybrid workers report every few minutes
SEVERITIES = ("error", "warning")


@dataclass(frozen=True)
class Finding:
    """One thing wrong with the deployment: `check` is the area, `object` what it is about."""

    check: str  # settings, keyvault, identity, event-grid, automation, worker-group, inventory
    severity: str  # error or warning
    object: str
    problem: str
    fix: str

    def to_dict(self) -> dict[str, str]:
        return {
            "check": self.check,
            "severity": self.severity,
            "object": self.object,
            "problem": self.problem,
            "fix": self.fix,
        }


class VaultProbe(Protocol):
    """What one identity can do in one vault."""

    vault: str

    def certificate_names(self) -> list[str]:
        """The vault's certificates; raises `CertsyncError` when the vault cannot be listed."""
        ...

    def can_read_secret(self, name: str) -> bool:
        """Whether the identity can read the value of the secret behind certificate `name` (403: False);
        raises `CertsyncError` for anything else. The value is never kept."""
        ...


class DeploymentArm(Protocol):
    """ARM reads: each answers the resource's JSON, or None when it does not exist."""

    def automation_account(self) -> Mapping[str, Any] | None: ...

    def worker_group(self, name: str) -> Mapping[str, Any] | None: ...

    def workers(self, group: str) -> list[Mapping[str, Any]]: ...

    def event_subscription(self, resource_id: str) -> Mapping[str, Any] | None: ...

    def key_vault(self, resource_group: str, name: str) -> Mapping[str, Any] | None:
        """The vault's control-plane resource (api-version 2026-02-01), in the Automation account's
        subscription."""
        ...

    def vault_secret_readers(self, resource_group: str, name: str) -> list[Mapping[str, str]]:
        """Role assignments on the vault or above it whose role reads secret values ({role, principalId,
        principalType, scope})."""
        ...


@dataclass
class Deployment:
    """What to check. Unset parts (None, empty) are reported as findings where they are needed."""

    now: dt.datetime
    settings_problems: Sequence[tuple[str, str]] = ()  # (setting, one-line message with the fix)
    vaults: Sequence[VaultProbe] = ()
    watched: Mapping[str, str] = field(default_factory=dict)  # certificate (lower-case) -> worker group
    arm: DeploymentArm | None = None
    automation_account_id: str = ""
    event_subscription_id: str = ""
    vault_resource_group: str = ""  # KEY_VAULT_RESOURCE_GROUP: where the vaults' RBAC setting is read
    function_app_id: str = ""  # FUNCTION_APP_ID: the app the subscription must deliver to
    inventories: InventoryStore | None = None
    inventory_max_age: dt.timedelta = dt.timedelta(hours=24)
    default_worker_group: str = "hrw-exchange"
    # What the identity could reach, filled in by `check_deployment`: vault -> {"certificates": names it
    # could list, "readable_secrets": the certificates whose secret it could read}.
    reach: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    @property
    def worker_groups(self) -> list[str]:
        return sorted(set(self.watched.values()) or {self.default_worker_group})


def check_deployment(deployment: Deployment) -> list[Finding]:
    """Every finding, sorted by severity, area and object."""
    findings = [
        Finding("settings", "error", name, message, _settings_fix(name))
        for name, message in deployment.settings_problems
    ]
    findings += _check_vaults(deployment)
    findings += _check_vault_permission_model(deployment)
    findings += _check_event_grid(deployment)
    findings += _check_automation(deployment)
    findings += _check_inventories(deployment)
    return sorted(findings, key=lambda f: (SEVERITIES.index(f.severity), f.check, f.object, f.problem))


def document(findings: Sequence[Finding], deployment: Deployment) -> dict[str, Any]:
    """The `--json` answer."""
    return {
        "schema": SCHEMA,
        "checked_at": format_time(deployment.now, "seconds"),
        "healthy": not findings,
        "findings": [f.to_dict() for f in findings],
        "reach": deployment.reach,
    }


def _settings_fix(name: str) -> str:
    return f"set {name} in the Function App's settings (locally: the environment); README, Settings"


# --- Key Vault and identity -----------------------------------------------------------------------------


def _check_vaults(deployment: Deployment) -> list[Finding]:
    findings: list[Finding] = []
    if not deployment.watched:
        findings.append(
            Finding(
                "identity",
                "warning",
                "CERTSYNC_WATCHED_CERTIFICATES",
                "no watched certificates are declared, so what the identity may read cannot be judged",
                "set CERTSYNC_WATCHED_CERTIFICATES to NAME=WORKER_GROUP pairs (as for azd), comma-separated",
            )
        )
    seen: set[str] = set()
    listed_all = True
    for probe in deployment.vaults:
        try:
            names = probe.certificate_names()
        except CertsyncError as exc:
            listed_all = False
            findings.append(
                Finding(
                    "keyvault",
                    "error",
                    probe.vault,
                    f"cannot list the vault's certificates: {exc}",
                    f"check CERTSYNC_VAULTS and the vault's network access, and grant the identity Key Vault "
                    f"Reader on {probe.vault}",
                )
            )
            continue
        reach = deployment.reach.setdefault(probe.vault, {"certificates": list(names), "readable_secrets": []})
        for name in names:
            key = name.lower()
            seen.add(key)
            found = _check_secret(probe, name, key in deployment.watched, bool(deployment.watched), reach)
            findings += found
    if deployment.vaults and listed_all:  # a vault that did not answer may hold them
        for missing in sorted(set(deployment.watched) - seen):
            findings.append(
                Finding(
                    "identity",
                    "warning",
                    missing,
                    "watched, but no vault of CERTSYNC_VAULTS lists this certificate",
                    "fix the name in CERTSYNC_WATCHED_CERTIFICATES, or add its vault to CERTSYNC_VAULTS",
                )
            )
    return findings


def _check_secret(
    probe: VaultProbe, name: str, watched: bool, judged: bool, reach: dict[str, list[str]]
) -> list[Finding]:
    try:
        readable = probe.can_read_secret(name)
        if readable:
            reach["readable_secrets"].append(name)
    except CertsyncError as exc:
        return [
            Finding(
                "keyvault",
                "error",
                f"{probe.vault}/{name}",
                f"reading the certificate's secret failed: {exc}",
                "check the vault's health and network access, then run certsync doctor --deployment again",
            )
        ]
    if watched and not readable:
        return [
            Finding(
                "identity",
                "error",
                f"{probe.vault}/{name}",
                "watched, but the identity cannot read the certificate's secret (403), so no chain can be read",
                "grant Key Vault Secrets User on this secret: add it to CERTSYNC_WATCHED_CERTIFICATES in azd "
                "and run azd provision (infra/modules/vault-access.bicep)",
            )
        ]
    if judged and not watched and readable:
        return [
            Finding(
                "identity",
                "warning",
                f"{probe.vault}/{name}",
                "the identity can read this certificate's secret (its private key), but it is not watched",
                "remove the vault-wide Key Vault Secrets User or Certificate User role and grant per secret "
                "(infra/modules/vault-access.bicep), or add the certificate to CERTSYNC_WATCHED_CERTIFICATES",
            )
        ]
    return []


def _check_vault_permission_model(deployment: Deployment) -> list[Finding]:
    """Per-secret roles grant nothing on a vault that still uses access policies."""
    arm, group = deployment.arm, deployment.vault_resource_group
    if arm is None or not group:
        return []
    findings = []
    for probe in deployment.vaults:
        try:
            vault = arm.key_vault(group, probe.vault)
        except CertsyncError as exc:
            findings.append(
                Finding("keyvault", "error", probe.vault, f"cannot read it in ARM: {exc}", _reader_fix(group))
            )
            continue
        if vault is None:
            findings.append(
                Finding(
                    "keyvault",
                    "warning",
                    probe.vault,
                    f"not found in resource group {group}, so its permission model was not checked",
                    "set KEY_VAULT_RESOURCE_GROUP to the vault's resource group",
                )
            )
            continue
        if (vault.get("properties") or {}).get("enableRbacAuthorization") is not True:
            findings.append(
                Finding(
                    "keyvault",
                    "error",
                    probe.vault,
                    "the vault uses access policies, so the Key Vault roles certsync is granted do nothing",
                    f"switch it to Azure RBAC: az keyvault update --name {probe.vault} "
                    "--enable-rbac-authorization true (after granting the roles; infra/README.md)",
                )
            )
        findings += _vault_wide_readers(arm, group, probe.vault)
    return findings


def _vault_wide_readers(arm: DeploymentArm, group: str, vault: str) -> list[Finding]:
    """Applications and managed identities that read every secret of the vault: a role that reads secret
    values, held on the vault or above it, instead of per secret."""
    try:
        readers = arm.vault_secret_readers(group, vault)
    except CertsyncError as exc:
        return [Finding("identity", "error", vault, f"cannot list its role assignments: {exc}", _reader_fix(group))]
    findings = []
    for reader in readers:
        if reader.get("principalType") != "ServicePrincipal":
            continue  # people (administrators) are not certsync's to judge
        where = (
            "the whole vault"
            if reader["scope"].lower().rstrip("/").endswith(f"/vaults/{vault.lower()}")
            else reader["scope"]
        )
        findings.append(
            Finding(
                "identity",
                "warning",
                f"{vault}: {reader['principalId']}",
                f"holds {reader['role']} on {where}: it can read every secret in the vault, every private key",
                "remove that assignment and grant Key Vault Secrets User per secret (infra/modules/vault-access.bicep)",
            )
        )
    return findings


# --- Event Grid -----------------------------------------------------------------------------------------


def _check_event_grid(deployment: Deployment) -> list[Finding]:
    where = deployment.event_subscription_id
    if not where:
        return [
            Finding(
                "event-grid",
                "warning",
                "CERTSYNC_EVENT_SUBSCRIPTION_ID",
                "not set, so the Event Grid subscription was not checked",
                "set it to the subscription's resource id (azd env get-values prints it)",
            )
        ]
    if deployment.arm is None:
        return []  # the missing AUTOMATION_ACCOUNT_ID (the ARM connection) is a settings finding
    try:
        subscription = deployment.arm.event_subscription(where)
    except CertsyncError as exc:
        return [Finding("event-grid", "error", _last(where), f"cannot read it: {exc}", _reader_fix(where))]
    if subscription is None:
        return [
            Finding(
                "event-grid",
                "error",
                _last(where),
                "the Event Grid subscription does not exist: no certificate event reaches the Function",
                "run azd deploy (its postdeploy hook creates it), or fix CERTSYNC_EVENT_SUBSCRIPTION_ID",
            )
        ]
    props = subscription.get("properties") or {}
    problems = []
    destination = props.get("destination") or {}
    target = str((destination.get("properties") or {}).get("resourceId") or "")
    if destination.get("endpointType") != "AzureFunction" or not target.lower().endswith(
        f"/functions/{EVENT_FUNCTION}"
    ):
        problems.append(f"it delivers to {target or destination.get('endpointType') or 'nothing'}, not the function")
    elif deployment.function_app_id and not target.lower().startswith(deployment.function_app_id.lower() + "/"):
        problems.append(f"it delivers to {target}, a function of another Function App than FUNCTION_APP_ID")
    types = set((props.get("filter") or {}).get("includedEventTypes") or [])
    missing = sorted(set(CERTIFICATE_EVENTS) - types) if types else []
    if missing:
        problems.append(f"it filters out {', '.join(missing)}")
    state = props.get("provisioningState")
    if state and state != "Succeeded":
        problems.append(f"its provisioning state is {state}")
    return [
        Finding(
            "event-grid",
            "error",
            _last(where),
            problem,
            f"run azd deploy to put back infra/modules/event-subscription.bicep (function {EVENT_FUNCTION})",
        )
        for problem in problems
    ]


# --- Automation and the worker groups -------------------------------------------------------------------


def _check_automation(deployment: Deployment) -> list[Finding]:
    arm = deployment.arm
    if arm is None:
        return []
    account = _last(deployment.automation_account_id) or "the Automation account"
    try:
        if arm.automation_account() is None:
            return [
                Finding(
                    "automation",
                    "error",
                    account,
                    "the Automation account does not exist: no remediation or discovery job can start",
                    "fix AUTOMATION_ACCOUNT_ID, or run azd provision",
                )
            ]
    except CertsyncError as exc:
        return [Finding("automation", "error", account, f"cannot read it: {exc}", _reader_fix(account))]
    findings = []
    for group in deployment.worker_groups:
        findings += _check_worker_group(arm, group, deployment.now)
    return findings


def _check_worker_group(arm: DeploymentArm, group: str, now: dt.datetime) -> list[Finding]:
    try:
        if arm.worker_group(group) is None:
            return [
                Finding(
                    "worker-group",
                    "error",
                    group,
                    "the Hybrid Runbook Worker group does not exist",
                    "create it (azd provision creates HYBRID_WORKER_GROUP) or fix the group in "
                    "CERTSYNC_WATCHED_CERTIFICATES",
                )
            ]
        workers = arm.workers(group)
    except CertsyncError as exc:
        return [Finding("worker-group", "error", group, f"cannot read it: {exc}", _reader_fix(group))]
    if not workers:
        return [
            Finding(
                "worker-group",
                "error",
                group,
                "the worker group has no workers: jobs sent to it never start",
                "join the Exchange servers to the group (infra/README.md, On-premises prerequisites)",
            )
        ]
    seen = [_seen(w) for w in workers]
    latest = max((s for s in seen if s is not None), default=None)
    if latest is None or now - latest > WORKER_SEEN_WITHIN:
        when = f"last seen {format_time(latest, 'seconds')}" if latest else "never seen"
        return [
            Finding(
                "worker-group",
                "error",
                group,
                f"no worker of the group is online ({len(workers)} worker(s), {when})",
                "start the Exchange servers' Hybrid Worker extension and check their outbound access to Azure",
            )
        ]
    return []


def _seen(worker: Mapping[str, Any]) -> dt.datetime | None:
    text = str((worker.get("properties") or {}).get("lastSeenDateTime") or "")
    try:
        return parse_time(text) if text else None
    except (CertsyncError, ValueError):
        return None


# --- inventories ------------------------------------------------------------------------------------------


def _check_inventories(deployment: Deployment) -> list[Finding]:
    store = deployment.inventories
    if store is None:
        return []
    try:
        records = {r.worker_group.lower(): r for r in store.all()}
    except CertsyncError as exc:
        return [Finding("inventory", "error", "INVENTORY_TABLE", f"cannot read the inventories: {exc}", _storage_fix())]
    findings = []
    for group in deployment.worker_groups:
        record = records.get(group.lower())
        if record is None:
            findings.append(
                Finding(
                    "inventory",
                    "error",
                    group,
                    "no Exchange inventory of this worker group: plans wait for one",
                    f"run certsync discover {group} (or check the discovery runbook's jobs)",
                )
            )
            continue
        if record.stale(deployment.now, deployment.inventory_max_age):
            hours = int(record.age(deployment.now).total_seconds() // 3600)
            findings.append(
                Finding(
                    "inventory",
                    "warning",
                    group,
                    f"the inventory is {hours} h old (collected {format_time(record.collected_at, 'seconds')}), "
                    f"older than CERTSYNC_INVENTORY_MAX_AGE_HOURS",
                    f"run certsync discover {group}; check the discovery runbook's last jobs",
                )
            )
        for error in record.errors:
            findings.append(
                Finding(
                    "inventory",
                    "warning",
                    f"{group}: {error['where']}",
                    f"discovery could not read it: {error['message']}",
                    "fix the server's access for the worker's account (Exchange RBAC), then run discovery again",
                )
            )
    return findings


def _storage_fix() -> str:
    return "check JobsStorage and the identity's Storage Table Data Contributor role"


def _reader_fix(what: str) -> str:
    return f"grant the identity Reader on {what}, or check CERTSYNC_ARM_ENDPOINT and AZURE_CLIENT_ID"


def _last(resource_id: str) -> str:
    return resource_id.rstrip("/").rsplit("/", 1)[-1]
