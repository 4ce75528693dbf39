"""The one place that chooses adapters: Azure (Key Vault, Storage queue, Table storage) in the Function
App, local ones (a directory or a real vault, an outbox directory, SQLite) for `certsync process`.

The Function App's settings are read once per composition (`shared.settings.load`) and each layer gets
values built from them here; no layer reads the environment. The `*_from_env` functions take a settings
mapping (tests, the CLI), the `azure_*` ones the process environment.

The Azure SDKs are imported only when an Azure adapter is built, so neither the CLI nor the Function
App's cold start pays for clients an invocation does not use.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from shared.errors import CertsyncError
from shared.pipeline.audit import AuditLog, check_limit, lower_bound
from shared.pipeline.process import Notifier, Outcome, Pipeline, PipelineSettings
from shared.pipeline.sources import CertificateSource
from shared.pipeline.targets import TargetsFile, load_targets_file
from shared.settings import (
    PipelineValues,
    Settings,
    StorageConnection,
    load,
    notify_values,
    storage_connection,
    value,
)
from shared.times import utc_now
from shared.validation.assessment import TrustStore
from shared.validation.lifetime import ExpiryThresholds

if TYPE_CHECKING:
    from shared.adapters.azure.automation import AutomationClient
    from shared.adapters.azure.storage import StorageSettings
    from shared.notify.status_page import StatusAnswer
    from shared.notify.webhooks import PoisonQueue, WebhookChannel
    from shared.reconciliation.reconcile import Reconciler, StateStore
    from shared.reconciliation.snapshot import StatusSnapshot
    from shared.remediation.discovery import (
        Discovery,
        DiscoveryOutcome,
        DiscoverySettings,
        InventoryRecord,
        InventoryStore,
        Validate,
    )
    from shared.remediation.service import Remediation

T = TypeVar("T")


def local_pipeline(
    *,
    vault_dir: str | None = None,
    vault_url: str | None = None,
    targets: str | None = None,
    outbox: str = "certsync-outbox",
    audit: str = "certsync-audit.sqlite",
    settings: PipelineSettings | None = None,
    env: Mapping[str, str] | None = None,
    inventory: str | None = None,
    inventory_store: str = "certsync-inventory.sqlite",
) -> Pipeline:
    """`certsync process`: certificates from a directory (one folder per certificate) or a real vault,
    jobs as plan files in `outbox`, the audit trail in the SQLite file `audit`, the Exchange inventory
    from the file `inventory` when given, else from the SQLite store `inventory_store` that `certsync
    discover` fills (no discovery is started locally: a version without one waits, and its message says
    what to run). Notices go to the
    webhooks the environment names (the Function App's settings, `CERTSYNC_*_WEBHOOK_URL`), else to
    the log; a delivery that fails is in the audit trail (there is no poison queue locally). Only those
    settings and AZURE_CLIENT_ID (for `vault_url`) are read from `env` (default: the process environment)."""
    from shared.adapters.local.outbox import OutboxQueue
    from shared.adapters.local.sqlite import SqliteAuditLog
    from shared.adapters.local.vault_directory import DirectoryVault

    if (vault_dir is None) == (vault_url is None):
        raise CertsyncError("give exactly one of --vault-dir DIR or --vault-url URL")
    settings = settings or PipelineSettings()
    sources: Callable[[str], CertificateSource]
    if vault_dir is not None:
        root = Path(vault_dir)
        if not root.is_dir():
            raise CertsyncError(f"{vault_dir}: no such directory; give --vault-dir a folder of certificate folders")
        sources = functools.cache(lambda vault: DirectoryVault(root, vault))
    else:
        from shared.adapters.azure.keyvault import KeyVaultSource

        source = KeyVaultSource(str(vault_url), client_id=value("AZURE_CLIENT_ID", env))
        sources = lambda _vault: source  # noqa: E731 - one vault, whatever the event calls it
    audit_log = SqliteAuditLog(audit)
    return Pipeline(
        sources=sources,
        jobs=OutboxQueue(outbox),
        audit=audit_log,
        settings=settings,
        targets_file=load_targets_file(targets) if targets else None,
        notifier=notifier_from_env(env, audit_log),
        inventories=_local_inventories(inventory, inventory_store),
    )


def local_source(
    *, vault_dir: str | None = None, vault_url: str | None = None, env: Mapping[str, str] | None = None
) -> CertificateSource:
    """One vault for a command: a vault directory, or a real vault (AZURE_CLIENT_ID from `env`)."""
    from shared.adapters.local.vault_directory import DirectoryVault

    if (vault_dir is None) == (vault_url is None):
        raise CertsyncError("give exactly one of --vault-dir DIR or --vault-url URL")
    if vault_dir is not None:
        root = Path(vault_dir)
        if not root.is_dir():
            raise CertsyncError(f"{vault_dir}: no such directory; give --vault-dir a folder of certificate folders")
        return DirectoryVault(root, root.resolve().name or "vault")
    from shared.adapters.azure.keyvault import KeyVaultSource

    return KeyVaultSource(str(vault_url), client_id=value("AZURE_CLIENT_ID", env))


def _local_inventories(inventory: str | None, store: str) -> InventoryStore | None:
    """The file given, else the store when `certsync discover` made one (None: every version waits; no
    empty store file is left behind)."""
    if inventory is None:
        return local_inventory_store(store) if Path(store).exists() else None
    from shared.adapters.local.inventory_file import FileInventoryStore

    return FileInventoryStore(inventory, validate=inventory_validator())


def local_audit(path: str) -> AuditLog:
    from shared.adapters.local.sqlite import SqliteAuditLog

    return SqliteAuditLog.existing(path)


# --- settings into values ----------------------------------------------------------------------------


def settings_from_env(env: Mapping[str, str] | None = None) -> PipelineSettings:
    """The Function App's pipeline settings (documented in README, defined in local.settings.json.example)."""
    return pipeline_settings(load(env))


def pipeline_settings(settings: Settings) -> PipelineSettings:
    """The pipeline's `PipelineSettings`: CERTSYNC_VAULTS (required), the trust file read now."""
    settings.require("CERTSYNC_VAULTS")
    values = settings.pipeline
    return PipelineSettings(
        vaults=values.vaults,
        trust=_trust(settings),
        revocation=values.revocation,
        allow_hosts=values.allow_hosts,
        crl_max_mb=values.crl_max_mb,
        expiry=expiry_thresholds(values),
        prestage_intermediates=values.prestage_intermediates,
        inventory_max_age=dt.timedelta(hours=settings.remediation.inventory_max_age_hours),
        require_accepted_domain=values.require_accepted_domain,
        fetch_connect_timeout=values.fetch_connect_timeout,
        fetch_read_timeout=values.fetch_read_timeout,
        fetch_deadline=values.fetch_deadline,
        block_notice_after=dt.timedelta(hours=values.block_notice_hours),
        approval_required=values.approval_required,
        maintenance_windows=dict(values.maintenance_windows),
        exo_tenant=values.exo_tenant,
        restart_transport=values.restart_transport,
    )


def expiry_thresholds(values: PipelineValues) -> ExpiryThresholds:
    """CERTSYNC_EXPIRY_*: warning and critical windows as fractions of each certificate's lifetime."""
    try:
        return ExpiryThresholds(
            warning_fraction=values.expiry_warning_fraction,
            critical_fraction=values.expiry_critical_fraction,
            warning_floor_days=values.expiry_warning_floor_days,
            critical_floor_days=values.expiry_critical_floor_days,
            warning_cap_days=values.expiry_days,
            critical_cap_days=values.expiry_critical_days,
        )
    except CertsyncError as exc:
        raise CertsyncError(f"CERTSYNC_EXPIRY_*: {exc}") from None


def _trust(settings: Settings) -> TrustStore | None:
    """CERTSYNC_TRUST_FILE: the roots to trust instead of Mozilla's (None: Mozilla's)."""
    path = settings.pipeline.trust_file
    return _from_file("CERTSYNC_TRUST_FILE", path, TrustStore.from_file) if path else None


def _targets(settings: Settings) -> TargetsFile | None:
    path = settings.pipeline.targets_file
    return _from_file("CERTSYNC_TARGETS_FILE", path, load_targets_file) if path else None


def _from_file(setting: str, path: str, read: Callable[[str], T]) -> T:
    """`read(path)`, its error (which names the file) prefixed with the setting that named it."""
    try:
        return read(path)
    except CertsyncError as exc:
        exc.args = (f"{setting}: {exc}",)
        raise


def storage_from_env(env: Mapping[str, str] | None = None, connection: str = "JobsStorage") -> StorageSettings:
    """The Storage adapter settings of the connection `connection` in `env` (`shared.settings.storage_connection`)."""
    return _storage(storage_connection(env, connection))


def _storage(connection: StorageConnection) -> StorageSettings:
    from shared.adapters.azure.storage import StorageSettings

    return StorageSettings(
        connection=connection.name,
        connection_string=connection.connection_string,
        queue_service_uri=connection.queue_service_uri,
        table_service_uri=connection.table_service_uri,
        client_id=connection.client_id,
    )


def channels_from_env(env: Mapping[str, str] | None = None, **options: Any) -> list[WebhookChannel]:
    """The webhooks configured in `env` (none is fine); `options` go to each `WebhookChannel`."""
    from shared.notify.webhooks import webhook_channels

    notify = notify_values(env)
    return webhook_channels(notify.webhook_urls, notify.webhook_secrets, **options)


def notifier_from_env(
    env: Mapping[str, str] | None, audit: AuditLog | None, poison: PoisonQueue | None = None, **options: Any
) -> Notifier:
    """`FanoutNotifier` over the webhooks configured in `env`, failed deliveries on `poison` and in `audit`;
    only `LogNotifier` when no webhook is set. `options` go to each `WebhookChannel`."""
    from shared.notify.webhooks import webhook_notifier

    return webhook_notifier(channels_from_env(env, **options), audit, poison)


# --- the Function App ----------------------------------------------------------------------------------


def pipeline_from_env(
    env: Mapping[str, str] | None,
    *,
    keyvault_options: Mapping[str, Any] | None = None,
    automation_options: Mapping[str, Any] | None = None,
) -> Pipeline:
    """`pipeline_from_settings` for the settings in `env`."""
    return pipeline_from_settings(load(env), keyvault_options=keyvault_options, automation_options=automation_options)


def pipeline_from_settings(
    settings: Settings,
    *,
    keyvault_options: Mapping[str, Any] | None = None,
    automation_options: Mapping[str, Any] | None = None,
) -> Pipeline:
    """The Function App's pipeline: Key Vault, the jobs queue and the audit table of `JobsStorage`; the
    inventories of INVENTORY_TABLE, and with AUTOMATION_ACCOUNT_ID the discovery it starts when one is
    missing or stale (`automation_options` go to its Automation client).

    A vault's URL is `https://<name>.<CERTSYNC_VAULT_DNS_SUFFIX>` unless `CERTSYNC_VAULT_URLS` maps the
    name (`name=https://...,name=...`, e.g. a private endpoint's host). `keyvault_options` go to the
    Key Vault clients (transport settings, a credential)."""
    from shared.adapters.azure.keyvault import KeyVaultSource
    from shared.adapters.azure.queues import StorageRemediationQueue

    values = pipeline_settings(settings)
    storage = _storage(settings.jobs_storage())
    targets = _targets(settings)
    options = {"client_id": settings.azure_client_id, **(keyvault_options or {})}

    def source(vault: str) -> CertificateSource:
        return KeyVaultSource(settings.pipeline.vault_url(vault), name=vault, **options)

    audit = _audit_table(settings, storage)  # one credential
    pipeline = Pipeline(
        sources=functools.cache(source),
        jobs=StorageRemediationQueue(
            storage.queue_client(settings.names.remediation_queue),
            storage.table_client(settings.names.claims_table),
        ),
        audit=audit,
        settings=values,
        targets_file=targets,
        notifier=_notifier(settings, storage, audit),  # Teams, Slack, the signed webhook; logs only when none is set
        inventories=_inventory_table(settings),
    )
    if "AUTOMATION_ACCOUNT_ID" not in settings.unset:  # without Automation, versions wait for an inventory
        pipeline.discovery = _DiscoveryOnDemand(
            lambda: discovery_from_settings(
                settings,
                audit=audit,
                notifier=pipeline.notifier,
                automation_options=automation_options,
                pipeline=pipeline,
            )
        )
    return pipeline


class _DiscoveryOnDemand:
    """The pipeline's discovery starter, built on its first use (most events find a fresh inventory)."""

    def __init__(self, build: Callable[[], Discovery]) -> None:
        self._build = functools.cache(build)

    def start(self, worker_group: str) -> DiscoveryOutcome:
        return self._build().start(worker_group)


def audit_from_env(env: Mapping[str, str] | None) -> AuditLog:
    settings = load(env)
    return _audit_table(settings, _storage(settings.jobs_storage()))


def _audit_table(settings: Settings, storage: StorageSettings) -> AuditLog:
    """The audit table AUDIT_TABLE (default certsyncaudit) of `JobsStorage`."""
    from shared.adapters.azure.tables import TableAuditLog

    return TableAuditLog(storage.table_client(settings.names.audit_table))


def _notifier(settings: Settings, storage: StorageSettings, audit: AuditLog) -> Notifier:
    """The configured webhooks, undeliverable notices on the NOTIFY_POISON_QUEUE queue of `JobsStorage` and
    in `audit`."""
    from shared.adapters.azure.queues import StorageMessageQueue
    from shared.notify.webhooks import webhook_channels, webhook_notifier

    notify = settings.notify
    poison = StorageMessageQueue(storage.queue_client(settings.names.notify_poison_queue))
    return webhook_notifier(webhook_channels(notify.webhook_urls, notify.webhook_secrets), audit, poison)


@functools.cache
def azure_pipeline() -> Pipeline:
    """One pipeline per Functions worker process (clients and the CRL cache are reused across events)."""
    return pipeline_from_settings(load())


@functools.cache
def azure_audit() -> AuditLog:
    return audit_from_env(None)


HTTP_HISTORY_LIMIT = 1000  # entries per answer of the history function, at most and by default


def history_query(params: Mapping[str, str]) -> dict[str, Any]:
    """The history function's query string as `read_page` keywords: `limit` (1 to 1000, default 1000),
    `since` (ISO 8601) and `after` (the continuation of a previous answer). Bad values raise a one-line
    `CertsyncError` naming the parameter."""
    from shared.times import parse_time

    text = params.get("limit", "").strip()
    limit = int(text) if text.isdecimal() else (0 if text else HTTP_HISTORY_LIMIT)
    if not 1 <= limit <= HTTP_HISTORY_LIMIT:
        raise CertsyncError(f"limit {text[:20]!r}: give a whole number from 1 to {HTTP_HISTORY_LIMIT}")
    since_text = params.get("since")
    try:
        since = parse_time(since_text) if since_text is not None else None
    except ValueError:
        since = None
    if since_text is not None and since is None:
        raise CertsyncError(f"since {since_text[:40]!r}: not an ISO 8601 time; write e.g. 2027-01-31T08:00Z")
    after = params.get("after") or None
    check_limit(limit)
    lower_bound(since, after)  # a continuation certsync did not hand out is refused here, before any read
    return {"limit": limit, "since": since, "after": after}


def reconciler_from_env(
    env: Mapping[str, str] | None,
    *,
    pipeline: Pipeline | None = None,
    notifier: Notifier | None = None,
    keyvault_options: Mapping[str, Any] | None = None,
) -> Reconciler:
    """The Function App's daily reconciliation: the pipeline's vaults (CERTSYNC_VAULTS), sources, audit
    trail, targets and assessment settings (`pipeline` defaults to `pipeline_from_settings`), its notifier
    unless `notifier` is given, and the state table STATE_TABLE of `JobsStorage`."""
    settings = load(env)
    if pipeline is None:
        pipeline = pipeline_from_settings(settings, keyvault_options=keyvault_options)
    notifier = notifier if notifier is not None else pipeline.notifier
    discovery = None
    if "AUTOMATION_ACCOUNT_ID" not in settings.unset:  # without Automation there is nothing to discover with
        discovery = discovery_from_settings(settings, audit=pipeline.audit, notifier=notifier, pipeline=pipeline)
    reconciler = _reconciler(pipeline, pipeline.settings.vaults, _state_store(settings), notifier, discovery)
    reconciler.digest_limit = settings.notify.digest_limit
    return reconciler


def _reconciler(
    pipeline: Pipeline,
    vaults: tuple[str, ...],
    state: StateStore,
    notifier: Notifier,
    discovery: Discovery | None = None,
) -> Reconciler:
    """A reconciler on `pipeline`'s sources, audit trail, targets and assessment settings."""
    from shared.reconciliation.reconcile import Reconciler

    return Reconciler(
        sources=pipeline.sources,
        vaults=vaults,
        audit=pipeline.audit,
        state=state,
        notifier=notifier,
        pipeline=pipeline,
        targets_file=pipeline.targets_file,
        settings=pipeline.settings,
        discovery=discovery,
    )


def state_store_from_env(env: Mapping[str, str] | None) -> StateStore:
    """Finding states and status snapshots: the table STATE_TABLE (default certsyncstate) of `JobsStorage`."""
    return _state_store(load(env))


def _state_store(settings: Settings) -> StateStore:
    from shared.adapters.azure.tables import TableStateStore

    return TableStateStore(_storage(settings.jobs_storage()).table_client(settings.names.state_table))


@functools.cache
def azure_reconciler() -> Reconciler:
    """One reconciler per worker process, on the worker's pipeline (Key Vault clients, the CRL cache)."""
    return reconciler_from_env(None, pipeline=azure_pipeline())


@functools.cache
def azure_state_store() -> StateStore:
    return state_store_from_env(None)


def azure_snapshots() -> list[StatusSnapshot]:
    """The certsync.status/1 snapshots the last reconciliation wrote, sorted by certificate (the status page)."""
    return azure_state_store().snapshots()


def status_answer(params: Mapping[str, str]) -> StatusAnswer:
    """`GET /api/status`: the status page (or JSON) the query `params` ask for, of `azure_snapshots` and
    each worker group's inventory (`azure_inventories`, stale after CERTSYNC_INVENTORY_MAX_AGE_HOURS), as
    of now."""
    import datetime as dt

    from shared.notify.status_page import status_answer as answer

    max_age = dt.timedelta(hours=load().remediation.inventory_max_age_hours)
    return answer(params, azure_snapshots, utc_now(), inventories=azure_inventories, max_age=max_age)


def process_event(envelope: Mapping[str, Any], what: str) -> Outcome:
    """An Event Grid delivery (`envelope`, as on the wire; `what` names it in errors) through the worker's
    pipeline (`Pipeline.receive`: an envelope it cannot read is audited as `event-rejected`, then raised)."""
    return azure_pipeline().receive(envelope, what)


def local_vault_name(vault_dir: str | None, vault_url: str | None, vault: str | None) -> str:
    """The vault a local command works on, as the events name it: the Key Vault URL's host, or for a vault
    directory `vault` (default: the directory's name)."""
    from shared.adapters.azure.keyvault import vault_name
    from shared.pipeline.sources import check_object_name

    if vault_url is not None:
        if vault is not None:
            raise CertsyncError("--vault names a --vault-dir vault; with --vault-url the URL names the vault")
        return vault_name(vault_url)
    return check_object_name(vault or Path(vault_dir or ".").resolve().name, "vault name").lower()


def local_reconciler(
    *,
    vault_dir: str | None = None,
    vault_url: str | None = None,
    vault: str | None = None,
    targets: str | None = None,
    outbox: str = "certsync-outbox",
    audit: str = "certsync-audit.sqlite",
    state: str = "certsync-state.sqlite",
    settings: PipelineSettings | None = None,
    workers: int | None = None,
    inventory_store: str = "certsync-inventory.sqlite",
) -> Reconciler:
    """`certsync reconcile`: `local_pipeline`'s adapters, states and snapshots in the SQLite file `state`.
    The vault is named by the URL's host, or for a directory by `vault` (default: the directory's name);
    it must be the vault name the events carried, or versions they settled look unprocessed.

    A vault directory of `POOL_MIN` certificates or more is checked in `workers` processes (default: one
    per core), each with its own reconciler from these arguments; 1 checks in this process."""
    from shared.adapters.local.sqlite import SqliteStateStore

    pipeline = local_pipeline(
        vault_dir=vault_dir,
        vault_url=vault_url,
        targets=targets,
        outbox=outbox,
        audit=audit,
        settings=settings,
        inventory_store=inventory_store,
    )
    name = local_vault_name(vault_dir, vault_url, vault)
    reconciler = _reconciler(pipeline, (name,), SqliteStateStore(state), pipeline.notifier)
    if vault_dir is not None:  # CPU-bound: parsing and assessing; against Key Vault the work is I/O
        reconciler.workers = workers if workers is not None else (os.cpu_count() or 1)
        reconciler.replica = functools.partial(
            local_reconciler,
            vault_dir=vault_dir,
            vault=vault,
            targets=targets,
            outbox=outbox,
            audit=audit,
            state=state,
            settings=settings,
            workers=1,
            inventory_store=inventory_store,
        )
    return reconciler


def automation_from_env(
    env: Mapping[str, str] | None, credential: Any = None, **client_kwargs: Any
) -> AutomationClient:
    """`automation_client` for the settings in `env`."""
    return automation_client(load(env), credential, **client_kwargs)


def automation_client(settings: Settings, credential: Any = None, **client_kwargs: Any) -> AutomationClient:
    """The Automation client the settings describe: AUTOMATION_ACCOUNT_ID (required) and CERTSYNC_ARM_ENDPOINT;
    `credential` defaults to the Function's managed identity (AZURE_CLIENT_ID's, when set)."""
    from shared.adapters.azure.automation import AutomationClient

    settings.require("AUTOMATION_ACCOUNT_ID")
    values = settings.remediation
    return AutomationClient(
        values.automation_account_id,
        credential,
        endpoint=values.arm_endpoint,
        **{"client_id": settings.azure_client_id, **client_kwargs},
    )


def remediation_from_env(
    env: Mapping[str, str] | None,
    *,
    audit: AuditLog | None = None,
    notifier: Notifier | None = None,
    automation_options: Mapping[str, Any] | None = None,
) -> Remediation:
    """`remediation_from_settings` for the settings in `env`."""
    return remediation_from_settings(load(env), audit=audit, notifier=notifier, automation_options=automation_options)


def remediation_from_settings(
    settings: Settings,
    *,
    audit: AuditLog | None = None,
    notifier: Notifier | None = None,
    automation_options: Mapping[str, Any] | None = None,
) -> Remediation:
    """The Function App's remediation: Azure Automation (AUTOMATION_ACCOUNT_ID), the jobs and tracking
    queues of `JobsStorage` (each with its `-poison` queue) and the audit table. `automation_options` go to
    `automation_client` (a credential, transport settings); `notifier` defaults to the configured
    webhooks (`_notifier`)."""
    from shared.adapters.azure.queues import StorageMessageQueue
    from shared.remediation.context import RemediationSettings
    from shared.remediation.service import Remediation

    storage = _storage(settings.jobs_storage())
    values = settings.remediation
    remediation = RemediationSettings(
        runbook=values.runbook,
        callback_base=values.callback_url,
        callback_secrets=values.callback_secrets,
        allow_hosts=settings.pipeline.allow_hosts,
        trust=_trust(settings),
        probe_timeout=values.probe_timeout,
    )
    if audit is None:
        audit = _audit_table(settings, storage)
    names = settings.names
    return Remediation(
        automation=automation_client(settings, **dict(automation_options or {})),
        audit=audit,
        jobs=StorageMessageQueue(storage.queue_client(names.remediation_queue)),
        jobs_poison=StorageMessageQueue(storage.queue_client(f"{names.remediation_queue}-poison")),
        tracking=StorageMessageQueue(storage.queue_client(names.tracking_queue)),
        tracking_poison=StorageMessageQueue(storage.queue_client(f"{names.tracking_queue}-poison")),
        settings=remediation,
        notifier=notifier if notifier is not None else _notifier(settings, storage, audit),
    )


@functools.cache
def azure_remediation() -> Remediation:
    """One remediation service per Functions worker process (the ARM session and token are reused)."""
    return remediation_from_settings(load())


# --- discovery ---------------------------------------------------------------------------------------


def inventory_validator() -> Validate:
    """The full certsync.inventory/1 check every stored inventory passes (`shared.exchange.inventory`)."""
    from shared.exchange.inventory import read_inventory

    return read_inventory


def _discovery_settings(settings: Settings) -> DiscoverySettings:

    from shared.remediation.discovery import DiscoverySettings

    values = settings.remediation
    return DiscoverySettings(
        runbook=values.discovery_runbook, max_age=dt.timedelta(hours=values.inventory_max_age_hours)
    )


def inventory_store_from_env(env: Mapping[str, str] | None) -> InventoryStore:
    """The latest inventory per worker group: the table INVENTORY_TABLE (default certsyncinventory) of
    `JobsStorage`."""
    return _inventory_table(load(env))


def _inventory_table(settings: Settings) -> InventoryStore:
    from shared.adapters.azure.tables import TableInventoryStore

    return TableInventoryStore(_storage(settings.jobs_storage()).table_client(settings.names.inventory_table))


def discovery_from_env(
    env: Mapping[str, str] | None,
    *,
    audit: AuditLog | None = None,
    notifier: Notifier | None = None,
    automation_options: Mapping[str, Any] | None = None,
) -> Discovery:
    """`discovery_from_settings` for the settings in `env`."""
    return discovery_from_settings(load(env), audit=audit, notifier=notifier, automation_options=automation_options)


def discovery_from_settings(
    settings: Settings,
    *,
    audit: AuditLog | None = None,
    notifier: Notifier | None = None,
    automation_options: Mapping[str, Any] | None = None,
    pipeline: Pipeline | None = None,
) -> Discovery:
    """The Function App's discovery: DISCOVERY_RUNBOOK on Azure Automation (AUTOMATION_ACCOUNT_ID), its jobs
    followed on TRACKING_QUEUE, inventories in INVENTORY_TABLE, entries in the audit table. Each stored
    inventory lets `pipeline` plan the versions waiting for it (`Pipeline.resume`)."""
    from shared.adapters.azure.queues import StorageMessageQueue
    from shared.remediation.discovery import Discovery

    storage = _storage(settings.jobs_storage())
    if audit is None:
        audit = _audit_table(settings, storage)
    return Discovery(
        automation=automation_client(settings, **dict(automation_options or {})),
        store=_inventory_table(settings),
        audit=audit,
        settings=_discovery_settings(settings),
        notifier=notifier if notifier is not None else _notifier(settings, storage, audit),
        tracking=StorageMessageQueue(storage.queue_client(settings.names.tracking_queue)),
        validate=inventory_validator(),
        on_stored=(lambda record: pipeline.resume(record.worker_group)) if pipeline is not None else None,
    )


def local_discovery(
    *,
    inventory: str,
    audit: str,
    env: Mapping[str, str] | None = None,
    automation_options: Mapping[str, Any] | None = None,
) -> Discovery:
    """`certsync discover`: Azure Automation as the Function App's settings in `env` name it
    (AUTOMATION_ACCOUNT_ID, CERTSYNC_ARM_ENDPOINT, DISCOVERY_RUNBOOK), inventories in the SQLite file
    `inventory`, the audit trail in the SQLite file `audit`; the command itself waits for the job."""
    from shared.adapters.local.sqlite import SqliteAuditLog
    from shared.remediation.discovery import Discovery

    settings = load(env)
    audit_log = SqliteAuditLog(audit)
    return Discovery(
        automation=automation_client(settings, **dict(automation_options or {})),
        store=local_inventory_store(inventory),
        audit=audit_log,
        settings=_discovery_settings(settings),
        notifier=notifier_from_env(env, audit_log),
        validate=inventory_validator(),
    )


def local_inventory_store(path: str) -> InventoryStore:
    from shared.adapters.local.sqlite import SqliteInventoryStore

    return SqliteInventoryStore(path)


@functools.cache
def azure_discovery() -> Discovery:
    """One discovery service per Functions worker process (the ARM session and token are reused); the
    inventories it stores are planned from by the Function App's pipeline."""
    settings = load()
    pipeline = azure_pipeline()
    return discovery_from_settings(settings, audit=pipeline.audit, notifier=pipeline.notifier, pipeline=pipeline)


@functools.cache
def azure_inventory_store() -> InventoryStore:
    return inventory_store_from_env(None)


def azure_inventories() -> list[InventoryRecord]:
    """Every worker group's latest inventory (the status page)."""
    return azure_inventory_store().all()


def start_discovery(worker_group: str) -> DiscoveryOutcome:
    """`POST /api/discover/{worker_group}`: start (or find, within the hour) its discovery job."""
    return azure_discovery().start(worker_group)
