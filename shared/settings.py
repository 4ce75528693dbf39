"""Every environment variable certsync reads: the registry (`REGISTRY`), and `load`, which reads, types and
validates them once into a frozen `Settings`.

No other module reads the environment (tests/test_infra.py scans for it): `shared.wiring` loads `Settings`
and hands each layer values (a `PipelineSettings`, the webhook URLs and secrets, a Storage connection), and
the CLI asks `debug` whether CERTSYNC_DEBUG is on. The one exception is the CLI's `--password-env VAR`,
whose variable name the user chooses.

Per setting the registry holds its name, default (as README's settings table writes it), what needs it when
it is required, whether it is a secret, who reads it (`app`: the Function App's code; `host`: only the
Functions host, in a binding; `cli`: the command line), a one-line description and its parser. A blank
value is the default. A bad value raises a one-line `CertsyncError` that starts with the variable's name,
says what is wrong and what to do; a secret's value (webhook URLs carry their credential) is never echoed.
A required setting that is unset is reported when something needs it (`Settings.require`), so the CLI and
a Function that does not use it still run.

The `JobsStorage` connection is read as the Functions host reads connections: `JobsStorage` (a connection
string) or `JobsStorage__queueServiceUri`, `__tableServiceUri`, `__clientId`, `__credential` (identity-based),
names matched case-insensitively.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.errors import CertsyncError

Scope = Literal["app", "host", "cli"]
Parser = Callable[[str, str], Any]  # (value, setting name) -> typed value; raises CertsyncError

JOBS_STORAGE = "JobsStorage"
_CONNECTION_FORMS = ("queueServiceUri", "tableServiceUri", "clientId", "credential")
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Azure Storage names: queues 3-63 lower-case letters, digits and single hyphens; tables 3-63 letters and
# digits, starting with a letter. A triggered queue's `-poison` queue must fit too, hence 56 for those.
_QUEUE = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?!-))*[a-z0-9]")
_TABLE = re.compile(r"[A-Za-z][A-Za-z0-9]{2,62}")
_RUNBOOK = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,62}")
_DNS_SUFFIX = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_KEY_VAULT_REFERENCE = "@Microsoft.KeyVault("


# --- parsers: (value, name) -> typed value --------------------------------------------------------


def _text(value: str, name: str) -> str:
    return value


def _bad(name: str, value: str, problem: str, secret: bool = False) -> CertsyncError:
    shown = name if secret else f"{name}={value!r}"
    return CertsyncError(f"{shown}: {problem}")


def _queue(limit: int = 63) -> Parser:
    def parse(value: str, name: str) -> str:
        if not (3 <= len(value) <= limit and _QUEUE.fullmatch(value)):
            raise _bad(name, value, f"not a queue name; use 3 to {limit} lower-case letters, digits and single hyphens")
        return value

    return parse


def _table(value: str, name: str) -> str:
    if not _TABLE.fullmatch(value):
        raise _bad(name, value, "not a table name; use 3 to 63 letters and digits, starting with a letter")
    return value


def _guid(value: str, name: str) -> str:
    if value and not _GUID.fullmatch(value):
        raise _bad(name, value, "not a client id; give the managed identity's client id (a GUID), or leave it empty")
    return value


def _tenant(value: str, name: str) -> str:
    if value and not _GUID.fullmatch(value):
        raise _bad(name, value, "not a tenant id; give the Microsoft 365 tenant's id (a GUID), or leave it empty")
    return value.lower()


def _names_list(value: str, name: str) -> tuple[str, ...]:
    return tuple(v.strip().lower() for v in value.split(",") if v.strip())


def _revocation(value: str, name: str) -> str:
    from shared.validation.assessment import POLICIES

    policy = value.lower()
    if policy not in POLICIES:
        raise _bad(name, policy, f"use one of {', '.join(POLICIES)}")
    return policy


def _whole(fix: str, low: int = 0, high: int | None = None) -> Parser:
    """A parser of a whole number from `low` to `high` (no limit when None); `fix` says what to give instead."""

    def parse(value: str, name: str) -> int:
        if not value.isdigit() or int(value) < low or (high is not None and int(value) > high):
            raise _bad(name, value, fix)
        return int(value)

    return parse


_days = _whole("give a whole number of days")
_positive_days = _whole("give a whole number of days above 0", 1)
_hours = _whole("give a whole number of hours above 0", 1)
_digest_limit = _whole("give the most notices sent one by one in a reconciliation run, 1 to 1000", 1, 1000)
_crl_max_mb = _whole("give the largest CRL to download in whole MiB, 1 to 1024", 1, 1024)


def _above_zero(fix: str, high: float, *, inclusive: bool = True) -> Parser:
    """A parser of a number above 0 and at most `high` (below it, not `inclusive`); `fix` says what to give."""

    def parse(value: str, name: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = 0.0
        if not (0 < number <= high if inclusive else 0 < number < high):
            raise _bad(name, value, fix)
        return number

    return parse


_fraction = _above_zero("give a fraction of the lifetime between 0 and 1, e.g. 0.15", 1, inclusive=False)
_fetch_seconds = _above_zero("give seconds, above 0 and at most 600 (e.g. 2.5)", 600)
_probe_timeout = _above_zero("give seconds per probe, above 0 and at most 120", 120)


def _maintenance_windows(value: str, name: str) -> dict[str, tuple[Any, ...]]:
    from shared.pipeline.windows import parse_windows

    return parse_windows(value, name)


def _allow_hosts(value: str, name: str) -> tuple[str, ...]:
    from shared.validation.fetch import parse_allow_entry

    entries = tuple(h.strip() for h in value.split(",") if h.strip())
    for entry in entries:
        try:
            parse_allow_entry(entry)
        except CertsyncError:
            raise CertsyncError(
                f"{name} item {entry!r} (as for --allow-host): give HOST or HOST:PORT, comma-separated,"
                " e.g. crl.corp.local,10.0.0.5:8080"
            ) from None
    return entries


def _dns_suffix(value: str, name: str) -> str:
    suffix = value.lstrip(".")
    if not _DNS_SUFFIX.fullmatch(suffix):
        raise _bad(name, value, "not a DNS suffix; give the vaults' domain, e.g. vault.azure.net")
    return suffix


def _vault_urls(value: str, name: str) -> dict[str, str]:
    urls = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        vault, sep, url = item.partition("=")
        if not sep or not vault.strip() or not url.strip().startswith("https://"):
            raise CertsyncError(f"{name} item {item!r}: write name=https://host, comma-separated")
        urls[vault.strip().lower()] = url.strip()
    return urls


def _account_id(value: str, name: str) -> str:
    from shared.adapters.azure.automation import parse_account_id

    return parse_account_id(value, name).resource_id if value else ""


def _arm_endpoint(value: str, name: str) -> str:
    from shared.adapters.azure.automation import check_endpoint

    return check_endpoint(value, name)


def _runbook(value: str, name: str) -> str:
    if not _RUNBOOK.fullmatch(value):
        raise _bad(name, value, "not a runbook name; use up to 63 letters, digits, - and _, starting with a letter")
    return value


def _callback_url(value: str, name: str) -> str:
    from shared.remediation.messages import callback_url

    if value:
        callback_url(value, "0" * 32)  # its message names CERTSYNC_CALLBACK_URL and what to give
    return value


def _resolved(value: str, name: str) -> None:
    if value.startswith(_KEY_VAULT_REFERENCE):
        raise CertsyncError(
            f"{name} is an unresolved Key Vault reference: give the Function App's identity the"
            " Key Vault Secrets User role on that vault and check the secret exists"
        )


def _secrets(value: str, name: str) -> tuple[bytes, ...]:
    from shared.notify.signing import parse_secrets

    _resolved(value, name)
    return parse_secrets(value, name)  # its messages name the setting, never a secret


def _webhook_url(value: str, name: str) -> str:
    from shared.notify.webhooks import _split_url

    if value:
        _resolved(value, name)
        _split_url(value, name)  # its messages name the setting, never the URL
    return value


def _resource_id(provider_path: str, fix: str) -> Parser:
    """A parser of an optional Azure resource id, /subscriptions/<id>/resourceGroups/<group>/providers/ then
    `provider_path` (a regular expression), kept without blanks and a trailing /; `fix` names its form."""
    pattern = re.compile(
        r"/subscriptions/[0-9a-fA-F-]{36}/resourceGroups/[-\w.()]{1,90}/providers/" + provider_path, re.IGNORECASE
    )

    def parse(value: str, name: str) -> str:
        trimmed = value.strip().rstrip("/")
        if value and not pattern.fullmatch(trimmed):
            raise _bad(name, value, fix)
        return trimmed

    return parse


_site_id = _resource_id(
    r"Microsoft\.Web/sites/[-\w]{2,60}",
    "not a Function App id; give /subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.Web/sites/<app>",
)
_event_subscription = _resource_id(
    r"Microsoft\.EventGrid/systemTopics/[-\w]{3,128}/eventSubscriptions/[-\w]{3,64}",
    "not an event subscription id; give /subscriptions/<id>/resourceGroups/<group>/providers/"
    "Microsoft.EventGrid/systemTopics/<topic>/eventSubscriptions/<name>",
)


def _worker_group(value: str, name: str) -> str:
    if not _RUNBOOK.fullmatch(value):
        raise _bad(name, value, "not a worker group name; use letters, digits, - and _ (e.g. hrw-exchange)")
    return value


def _resource_group(value: str, name: str) -> str:
    if value and not re.fullmatch(r"[-\w.()]{1,90}", value):
        raise _bad(name, value, "not a resource group name; use up to 90 letters, digits, -, _, ., ( and )")
    return value


def _watched(value: str, name: str) -> dict[str, str]:
    """NAME or NAME=WORKER_GROUP, comma-separated (as azd's CERTSYNC_WATCHED_CERTIFICATES): name -> group
    ("" for the default group)."""
    from shared.pipeline.sources import check_object_name

    watched: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        certificate, _, group = (part.strip() for part in item.partition("="))
        try:
            check_object_name(certificate)
            if group:
                _worker_group(group, name)
        except CertsyncError:
            raise CertsyncError(
                f"{name} item {item!r}: write NAME or NAME=WORKER_GROUP, comma-separated, e.g. exch-smtp=hrw-exchange"
            ) from None
        watched[certificate.lower()] = group
    return watched


def _flag(value: str, name: str) -> bool:
    return bool(value)


def _bool(value: str, name: str) -> bool:
    words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    if value.strip().lower() not in words:
        raise _bad(name, value, "write true or false")
    return words[value.strip().lower()]


# --- the registry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One environment variable. `default` is the text README shows ("" for none); `required` ones name what
    needs them (`required_for`, "" for everything) and what to do when unset (`missing`); `parse` types and checks a
    value (None: taken as text, never refused)."""

    name: str
    description: str
    default: str = ""
    required: bool = False
    required_for: str = ""  # what needs it, when not everything does
    missing: str = ""
    secret: bool = False
    scope: Scope = "app"
    parse: Parser | None = None

    @property
    def validated(self) -> bool:
        return self.parse is not None

    def value(self, env: Mapping[str, str]) -> Any:
        """This setting's typed value in `env` (blank: the default)."""
        text = _lookup(env, self.name).strip() or self.default
        return (self.parse or _text)(text, self.name)


_STORAGE_MISSING = (
    f"define {JOBS_STORAGE} (a connection string, UseDevelopmentStorage=true locally)"
    f" or {JOBS_STORAGE}__queueServiceUri and {JOBS_STORAGE}__tableServiceUri (managed identity)"
)

REGISTRY: tuple[Setting, ...] = (
    # Storage: the JobsStorage connection and the queues and tables in it.
    Setting(
        JOBS_STORAGE,
        "the storage account of the queues and tables: a connection string (may hold an account key)",
        required=True,
        missing=_STORAGE_MISSING,
        secret=True,
    ),
    Setting(f"{JOBS_STORAGE}__queueServiceUri", "identity-based JobsStorage: the queue service's URI"),
    Setting(f"{JOBS_STORAGE}__tableServiceUri", "identity-based JobsStorage: the table service's URI"),
    Setting(f"{JOBS_STORAGE}__clientId", "identity-based JobsStorage: the user-assigned identity", parse=_guid),
    Setting(f"{JOBS_STORAGE}__credential", "identity-based JobsStorage: `managedidentity` (the Functions host's)"),
    Setting("REMEDIATION_QUEUE", "the remediation jobs queue", "certsync-jobs", parse=_queue(56)),
    Setting("TRACKING_QUEUE", "the remediation poll messages", "certsync-tracking", parse=_queue(56)),
    Setting("NOTIFY_POISON_QUEUE", "notices whose delivery failed", "certsync-notify-poison", parse=_queue()),
    Setting("AUDIT_TABLE", "the audit trail", "certsyncaudit", parse=_table),
    Setting("JOB_CLAIMS_TABLE", "the job claims", "certsyncjobs", parse=_table),
    Setting("STATE_TABLE", "the reconciliation's finding states and status snapshots", "certsyncstate", parse=_table),
    Setting("INVENTORY_TABLE", "the latest Exchange inventory per worker group", "certsyncinventory", parse=_table),
    # The pipeline and the reconciliation.
    Setting(
        "CERTSYNC_VAULTS",
        "the Key Vault names to act on, comma-separated",
        required=True,
        missing="set it to the comma-separated Key Vault names to act on",
        parse=_names_list,
    ),
    Setting("CERTSYNC_TARGETS_FILE", "the targets file (docs/targets.md)"),
    Setting("CERTSYNC_REVOCATION", "the revocation policy: hard, soft or off", "hard", parse=_revocation),
    Setting("CERTSYNC_ALLOW_HOSTS", "private CRL/OCSP/AIA/probe hosts the fetch guard admits", parse=_allow_hosts),
    Setting("CERTSYNC_CRL_MAX_MB", "the largest CRL downloaded, in MiB", "64", parse=_crl_max_mb),
    Setting(
        "CERTSYNC_FETCH_CONNECT_TIMEOUT", "seconds to connect to a CRL, OCSP or AIA server", "3", parse=_fetch_seconds
    ),
    Setting(
        "CERTSYNC_FETCH_READ_TIMEOUT", "seconds a CRL, OCSP or AIA server may stay silent", "10", parse=_fetch_seconds
    ),
    Setting(
        "CERTSYNC_FETCH_DEADLINE",
        "seconds for one CRL, OCSP or AIA document, retries included",
        "20",
        parse=_fetch_seconds,
    ),
    Setting(
        "CERTSYNC_BLOCK_NOTICE_HOURS",
        "hours a transient block (revocation unreachable, inventory unusable) lasts before people are told",
        "6",
        parse=_hours,
    ),
    Setting(
        "CERTSYNC_APPROVAL_REQUIRED",
        "true: every plan waits for certsync approve (or POST .../approve) before its job is queued",
        "false",
        parse=_bool,
    ),
    Setting(
        "CERTSYNC_MAINTENANCE_WINDOWS",
        'when each worker group may be changed, JSON: {"group": ["Sat 22:00-Sun 04:00"]} (UTC)',
        parse=_maintenance_windows,
    ),
    Setting(
        "CERTSYNC_EXPIRY_DAYS",
        "the longest expiry warning window, in days (a long-lived certificate warns this far ahead)",
        "30",
        parse=_days,
    ),
    Setting(
        "CERTSYNC_EXPIRY_WARNING_FRACTION",
        "warn when less than this fraction of a certificate's own lifetime is left",
        "0.15",
        parse=_fraction,
    ),
    Setting(
        "CERTSYNC_EXPIRY_CRITICAL_FRACTION",
        "critical when less than this fraction of its lifetime is left",
        "0.05",
        parse=_fraction,
    ),
    Setting("CERTSYNC_EXPIRY_CRITICAL_DAYS", "the longest critical window, in days", "7", parse=_positive_days),
    Setting("CERTSYNC_EXPIRY_WARNING_FLOOR_DAYS", "the shortest warning window, in days", "3", parse=_positive_days),
    Setting("CERTSYNC_EXPIRY_CRITICAL_FLOOR_DAYS", "the shortest critical window, in days", "1", parse=_positive_days),
    Setting(
        "CERTSYNC_PRESTAGE_INTERMEDIATES",
        "every plan also installs the intermediates the next renewal may bring (the hierarchy forecast)",
        "false",
        parse=_bool,
    ),
    Setting(
        "CERTSYNC_REQUIRE_ACCEPTED_DOMAIN",
        "block a plan whose certificate names are not accepted domains in Exchange Online (else a warning)",
        "false",
        parse=_bool,
    ),
    Setting(
        "CERTSYNC_EXO_TENANT_ID",
        "the Exchange Online tenant id a plan's Exchange Online steps connect to, when the inventory names none",
        parse=_tenant,
    ),
    Setting(
        "CERTSYNC_RESTART_TRANSPORT",
        "true: a plan restarts the transport services whose connectors it switched, before the proof",
        "false",
        parse=_bool,
    ),
    Setting("CERTSYNC_TRUST_FILE", "the roots to trust instead of Mozilla's"),
    Setting(
        "CERTSYNC_VAULT_DNS_SUFFIX", "a vault's URL is https://<name>.<suffix>", "vault.azure.net", parse=_dns_suffix
    ),
    Setting("CERTSYNC_VAULT_URLS", "name=https://host pairs overriding a vault's URL", parse=_vault_urls),
    Setting("AZURE_CLIENT_ID", "the user-assigned managed identity for Key Vault and ARM", parse=_guid),
    Setting("RECONCILE_SCHEDULE", "when the reconciliation runs (NCRONTAB, UTC)", "0 0 6 * * *", scope="host"),
    # Remediation.
    Setting(
        "AUTOMATION_ACCOUNT_ID",
        "the Automation account's ARM resource id",
        required=True,
        required_for="remediation",
        missing=(
            "set it to the Automation account's resource id (/subscriptions/<subscription>/resourceGroups/<group>/"
            "providers/Microsoft.Automation/automationAccounts/<account>)"
        ),
        parse=_account_id,
    ),
    Setting("AUTOMATION_RUNBOOK", "the runbook each job runs", "Invoke-CertsyncRemediation", parse=_runbook),
    Setting("DISCOVERY_RUNBOOK", "the read-only discovery runbook", "Get-CertsyncInventory", parse=_runbook),
    Setting("CERTSYNC_INVENTORY_MAX_AGE_HOURS", "hours before an inventory counts as stale", "24", parse=_hours),
    Setting("CERTSYNC_ARM_ENDPOINT", "ARM (sovereign clouds)", "https://management.azure.com", parse=_arm_endpoint),
    Setting("CERTSYNC_CALLBACK_URL", "the app's base URL for the runbook's result callback", parse=_callback_url),
    Setting("CERTSYNC_CALLBACK_SECRET", "the callback's whsec_ secret(s)", secret=True, parse=_secrets),
    Setting("CERTSYNC_PROBE_TIMEOUT", "seconds per STARTTLS probe", "15", parse=_probe_timeout),
    # Notifications.
    Setting("CERTSYNC_TEAMS_WEBHOOK_URL", "the Teams Workflows webhook URL", secret=True, parse=_webhook_url),
    Setting("CERTSYNC_SLACK_WEBHOOK_URL", "the Slack incoming-webhook URL", secret=True, parse=_webhook_url),
    Setting("CERTSYNC_WEBHOOK_URL", "the generic signed webhook's URL", secret=True, parse=_webhook_url),
    Setting("CERTSYNC_WEBHOOK_SECRET", "the generic webhook's whsec_ secret(s)", secret=True, parse=_secrets),
    Setting(
        "CERTSYNC_NOTICE_DIGEST_LIMIT",
        "more notices than this due in one reconciliation run go out as one digest",
        "10",
        parse=_digest_limit,
    ),
    # The command line.
    Setting("CERTSYNC_DEBUG", "any value: show a traceback for an internal error", scope="cli", parse=_flag),
    # `certsync doctor --deployment` (named as azd's environment, so `azd env get-values` gives them).
    Setting(
        "CERTSYNC_WATCHED_CERTIFICATES",
        "the certificates the deployment watches, NAME or NAME=WORKER_GROUP, comma-separated",
        scope="cli",
        parse=_watched,
    ),
    Setting(
        "HYBRID_WORKER_GROUP",
        "the worker group of a watched certificate without one",
        "hrw-exchange",
        scope="cli",
        parse=_worker_group,
    ),
    Setting(
        "FUNCTION_APP_ID",
        "the Function App's resource id: the Event Grid subscription must deliver to it",
        scope="cli",
        parse=_site_id,
    ),
    Setting(
        "KEY_VAULT_RESOURCE_GROUP",
        "the vaults' resource group, for doctor --deployment's check of their permission model",
        scope="cli",
        parse=_resource_group,
    ),
    Setting(
        "CERTSYNC_EVENT_SUBSCRIPTION_ID",
        "the Event Grid subscription's resource id, for doctor --deployment",
        scope="cli",
        parse=_event_subscription,
    ),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in REGISTRY}
WEBHOOK_URLS = {
    "teams": "CERTSYNC_TEAMS_WEBHOOK_URL",
    "slack": "CERTSYNC_SLACK_WEBHOOK_URL",
    "generic": "CERTSYNC_WEBHOOK_URL",
}


def _lookup(env: Mapping[str, str], name: str) -> str:
    """`env[name]`, or "" when unset; a connection's names are matched case-insensitively, like the host."""
    if name.split("__")[0].lower() == JOBS_STORAGE.lower() or "__" in name:
        wanted = name.lower()
        return next((v or "" for k, v in env.items() if k.lower() == wanted and (v or "").strip()), "")
    return env.get(name) or ""


# --- the values -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StorageConnection:
    """A Functions-style Storage connection: a connection string, or service URIs and an identity."""

    name: str  # the setting's name, for messages
    connection_string: str = field(default="", repr=False)  # may hold an account key
    queue_service_uri: str = ""
    table_service_uri: str = ""
    client_id: str = ""  # a user-assigned managed identity; empty means DefaultAzureCredential


@dataclass(frozen=True)
class StorageNames:
    """The queues and tables in `JobsStorage`."""

    remediation_queue: str
    tracking_queue: str
    notify_poison_queue: str
    audit_table: str
    claims_table: str
    state_table: str
    inventory_table: str = "certsyncinventory"


@dataclass(frozen=True)
class PipelineValues:
    """The pipeline's and reconciliation's settings; `vaults` is empty when CERTSYNC_VAULTS is unset."""

    vaults: tuple[str, ...]
    targets_file: str
    revocation: str
    allow_hosts: tuple[str, ...]
    crl_max_mb: int
    expiry_days: int
    trust_file: str
    vault_dns_suffix: str
    vault_urls: Mapping[str, str]
    require_accepted_domain: bool = False  # the planner's rule 4 (exchange-inventory.md §2)
    fetch_connect_timeout: float = 3.0
    fetch_read_timeout: float = 10.0
    fetch_deadline: float = 20.0  # one document, retries included
    block_notice_hours: int = 6
    approval_required: bool = False
    maintenance_windows: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)  # group -> its Windows
    exo_tenant: str = ""  # CERTSYNC_EXO_TENANT_ID
    restart_transport: bool = False  # CERTSYNC_RESTART_TRANSPORT
    expiry_warning_fraction: float = 0.15
    expiry_critical_fraction: float = 0.05
    expiry_critical_days: int = 7
    expiry_warning_floor_days: int = 3
    expiry_critical_floor_days: int = 1
    prestage_intermediates: bool = False

    def vault_url(self, vault: str) -> str:
        return self.vault_urls.get(vault) or f"https://{vault}.{self.vault_dns_suffix}"


@dataclass(frozen=True)
class NotifyValues:
    """The webhooks: kind (teams, slack, generic) -> URL for those set, and the generic one's keys."""

    webhook_urls: Mapping[str, str] = field(default_factory=dict, repr=False)  # URLs carry their credential
    webhook_secrets: tuple[bytes, ...] = field(default=(), repr=False)
    digest_limit: int = 10  # CERTSYNC_NOTICE_DIGEST_LIMIT


@dataclass(frozen=True)
class RemediationValues:
    """Remediation's settings; `automation_account_id` is empty when AUTOMATION_ACCOUNT_ID is unset."""

    automation_account_id: str
    arm_endpoint: str
    runbook: str
    callback_url: str
    callback_secrets: tuple[bytes, ...] = field(repr=False)
    probe_timeout: float
    discovery_runbook: str = "Get-CertsyncInventory"
    inventory_max_age_hours: int = 24


@dataclass(frozen=True)
class Settings:
    """Every setting of the Function App, read and checked once (`load`)."""

    storage: StorageConnection | None
    names: StorageNames
    pipeline: PipelineValues
    notify: NotifyValues
    remediation: RemediationValues
    azure_client_id: str
    unset: frozenset[str] = frozenset()  # required settings that are not set

    def require(self, *names: str) -> None:
        """Raise the one-line error for the first of `names` that is required and unset."""
        for name in names:
            if name in self.unset:
                raise missing_error(BY_NAME[name])

    def jobs_storage(self) -> StorageConnection:
        """The `JobsStorage` connection, or the error that says how to define it."""
        if self.storage is None:
            raise missing_error(BY_NAME[JOBS_STORAGE])
        return self.storage


def missing_error(setting: Setting) -> CertsyncError:
    separator = ":" if setting.name == JOBS_STORAGE else ";"
    return CertsyncError(f"{setting.name} is not set{separator} {setting.missing}")


def environment(env: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """`env`, or the process environment when None."""
    return os.environ if env is None else env


def value(name: str, env: Mapping[str, str] | None = None) -> Any:
    """One registered setting's typed value (`env` defaults to the process environment)."""
    return BY_NAME[name].value(environment(env))


def storage_connection(env: Mapping[str, str] | None = None, name: str = JOBS_STORAGE) -> StorageConnection:
    """The Storage connection `name` (default `JobsStorage`), read as the Functions host reads connections:
    `name` is a connection string (`UseDevelopmentStorage=true` for Azurite); otherwise
    `<name>__queueServiceUri` and/or `<name>__tableServiceUri` name the services and the app's managed
    identity signs in (`<name>__clientId` for a user-assigned one). A connection string wins."""
    found = _connection(environment(env), name)
    if found is None:
        if name == JOBS_STORAGE:
            raise missing_error(BY_NAME[JOBS_STORAGE])
        raise CertsyncError(
            f"{name} is not set: define {name} (a connection string, UseDevelopmentStorage=true locally)"
            f" or {name}__queueServiceUri and {name}__tableServiceUri (managed identity)"
        )
    return found


def _connection(env: Mapping[str, str], name: str) -> StorageConnection | None:
    def form(suffix: str = "") -> str:
        return _lookup(env, f"{name}__{suffix}" if suffix else name).strip()

    client_id = form("clientId")
    if client_id:
        _guid(client_id, f"{name}__clientId")
    found = StorageConnection(
        name=name,
        connection_string=form(),
        queue_service_uri=form("queueServiceUri"),
        table_service_uri=form("tableServiceUri"),
        client_id=client_id,
    )
    if not (found.connection_string or found.queue_service_uri or found.table_service_uri):
        return None
    return found


def notify_values(env: Mapping[str, str] | None = None) -> NotifyValues:
    """The webhooks set in `env` (none is fine). The generic webhook's secret is read only when its URL is."""
    env = environment(env)
    urls = {kind: value(name, env) for kind, name in WEBHOOK_URLS.items() if _lookup(env, name).strip()}
    secrets = value("CERTSYNC_WEBHOOK_SECRET", env) if "generic" in urls else ()
    digest_limit = value("CERTSYNC_NOTICE_DIGEST_LIMIT", env)
    return NotifyValues(webhook_urls=urls, webhook_secrets=secrets, digest_limit=digest_limit)


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Every Function App setting of `env` (default: the process environment), typed and checked; the first
    bad value raises. Required settings that are unset are listed in `unset` (see `Settings.require`)."""
    env = environment(env)
    unset = frozenset(
        s.name for s in REGISTRY if s.required and s.name != JOBS_STORAGE and not _lookup(env, s.name).strip()
    )
    return Settings(
        storage=_connection(env, JOBS_STORAGE),
        names=StorageNames(
            remediation_queue=value("REMEDIATION_QUEUE", env),
            tracking_queue=value("TRACKING_QUEUE", env),
            notify_poison_queue=value("NOTIFY_POISON_QUEUE", env),
            audit_table=value("AUDIT_TABLE", env),
            claims_table=value("JOB_CLAIMS_TABLE", env),
            state_table=value("STATE_TABLE", env),
            inventory_table=value("INVENTORY_TABLE", env),
        ),
        pipeline=PipelineValues(
            vaults=value("CERTSYNC_VAULTS", env),
            targets_file=value("CERTSYNC_TARGETS_FILE", env),
            revocation=value("CERTSYNC_REVOCATION", env),
            allow_hosts=value("CERTSYNC_ALLOW_HOSTS", env),
            crl_max_mb=value("CERTSYNC_CRL_MAX_MB", env),
            expiry_days=value("CERTSYNC_EXPIRY_DAYS", env),
            trust_file=value("CERTSYNC_TRUST_FILE", env),
            vault_dns_suffix=value("CERTSYNC_VAULT_DNS_SUFFIX", env),
            vault_urls=value("CERTSYNC_VAULT_URLS", env),
            require_accepted_domain=value("CERTSYNC_REQUIRE_ACCEPTED_DOMAIN", env),
            fetch_connect_timeout=value("CERTSYNC_FETCH_CONNECT_TIMEOUT", env),
            fetch_read_timeout=value("CERTSYNC_FETCH_READ_TIMEOUT", env),
            fetch_deadline=value("CERTSYNC_FETCH_DEADLINE", env),
            block_notice_hours=value("CERTSYNC_BLOCK_NOTICE_HOURS", env),
            approval_required=value("CERTSYNC_APPROVAL_REQUIRED", env),
            maintenance_windows=value("CERTSYNC_MAINTENANCE_WINDOWS", env),
            exo_tenant=value("CERTSYNC_EXO_TENANT_ID", env) or "",
            restart_transport=value("CERTSYNC_RESTART_TRANSPORT", env),
            expiry_warning_fraction=value("CERTSYNC_EXPIRY_WARNING_FRACTION", env),
            expiry_critical_fraction=value("CERTSYNC_EXPIRY_CRITICAL_FRACTION", env),
            expiry_critical_days=value("CERTSYNC_EXPIRY_CRITICAL_DAYS", env),
            expiry_warning_floor_days=value("CERTSYNC_EXPIRY_WARNING_FLOOR_DAYS", env),
            expiry_critical_floor_days=value("CERTSYNC_EXPIRY_CRITICAL_FLOOR_DAYS", env),
            prestage_intermediates=value("CERTSYNC_PRESTAGE_INTERMEDIATES", env),
        ),
        notify=notify_values(env),
        remediation=RemediationValues(
            automation_account_id=value("AUTOMATION_ACCOUNT_ID", env),
            arm_endpoint=value("CERTSYNC_ARM_ENDPOINT", env),
            runbook=value("AUTOMATION_RUNBOOK", env),
            callback_url=value("CERTSYNC_CALLBACK_URL", env),
            callback_secrets=value("CERTSYNC_CALLBACK_SECRET", env),
            probe_timeout=value("CERTSYNC_PROBE_TIMEOUT", env),
            discovery_runbook=value("DISCOVERY_RUNBOOK", env),
            inventory_max_age_hours=value("CERTSYNC_INVENTORY_MAX_AGE_HOURS", env),
        ),
        azure_client_id=value("AZURE_CLIENT_ID", env),
        unset=unset,
    )


def problems(env: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """Every registered setting of `env` that is required and unset or has a bad value: (name, the one-line
    message with the fix), in registry order. Unlike `load`, it does not stop at the first."""
    env = environment(env)
    found = []
    for setting in REGISTRY:
        try:
            if setting.name == JOBS_STORAGE:
                if _connection(env, JOBS_STORAGE) is None:
                    raise missing_error(setting)
            elif setting.required and not _lookup(env, setting.name).strip():
                raise missing_error(setting)
            elif setting.validated:
                setting.value(env)
        except CertsyncError as exc:
            found.append((setting.name, str(exc)))
    return found


def debug(env: Mapping[str, str] | None = None) -> bool:
    """CERTSYNC_DEBUG: whether the CLI shows a traceback for an internal error (read on its own, so a bad
    Function App setting in the shell never hides one)."""
    return bool(value("CERTSYNC_DEBUG", env))
