"""The one place that chooses adapters: Azure (Key Vault, Storage queue, Table storage) in the Function
App, local ones (a directory or a real vault, an outbox directory, SQLite) for `certsync process`.

The Azure SDKs are imported only when an Azure adapter is built, so neither the CLI nor the Function
App's cold start pays for clients an invocation does not use.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.errors import CertsyncError
from shared.pipeline.audit import AuditLog
from shared.pipeline.process import Notifier, Outcome, Pipeline, PipelineSettings
from shared.pipeline.sources import CertificateSource
from shared.pipeline.targets import load_targets_file
from shared.times import utc_now
from shared.validation.assessment import POLICIES, TrustStore
from shared.validation.fetch import parse_allow_entry

if TYPE_CHECKING:
    from shared.adapters.azure.storage import StorageSettings
    from shared.notify.status_page import StatusAnswer
    from shared.reconciliation.reconcile import Reconciler, StateStore
    from shared.reconciliation.snapshot import StatusSnapshot
    from shared.remediation.service import Remediation

DEFAULT_QUEUE = "certsync-jobs"
DEFAULT_AUDIT_TABLE = "certsyncaudit"
DEFAULT_CLAIMS_TABLE = "certsyncjobs"
DEFAULT_TRACKING_QUEUE = "certsync-tracking"
DEFAULT_VAULT_DNS_SUFFIX = "vault.azure.net"
DEFAULT_STATE_TABLE = "certsyncstate"


def local_pipeline(
    *,
    vault_dir: str | None = None,
    vault_url: str | None = None,
    targets: str | None = None,
    outbox: str = "certsync-outbox",
    audit: str = "certsync-audit.sqlite",
    settings: PipelineSettings | None = None,
    env: Mapping[str, str] | None = None,
) -> Pipeline:
    """`certsync process`: certificates from a directory (one folder per certificate) or a real vault,
    jobs as plan files in `outbox`, the audit trail in the SQLite file `audit`. Notices go to the
    webhooks the environment names (the Function App's settings, `CERTSYNC_*_WEBHOOK_URL`), else to
    the log; a delivery that fails is in the audit trail (there is no poison queue locally)."""
    from shared.adapters.local.outbox import OutboxQueue
    from shared.adapters.local.sqlite import SqliteAuditLog
    from shared.adapters.local.vault_directory import DirectoryVault
    from shared.notify.webhooks import notifier_from_env

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

        source = KeyVaultSource(vault_url)
        sources = lambda _vault: source  # noqa: E731 - one vault, whatever the event calls it
    audit_log = SqliteAuditLog(audit)
    return Pipeline(
        sources=sources,
        jobs=OutboxQueue(outbox),
        audit=audit_log,
        settings=settings,
        targets_file=load_targets_file(targets) if targets else None,
        notifier=notifier_from_env(os.environ if env is None else env, audit_log),
    )


def local_audit(path: str) -> AuditLog:
    from shared.adapters.local.sqlite import SqliteAuditLog

    if not Path(path).exists():
        raise CertsyncError(f"{path}: no audit trail here yet; run certsync process first, or give --audit FILE")
    return SqliteAuditLog(path)


def settings_from_env(env: Mapping[str, str]) -> PipelineSettings:
    """The Function App's pipeline settings (documented in README, defined in local.settings.json.example)."""
    vaults = tuple(v.strip().lower() for v in env.get("CERTSYNC_VAULTS", "").split(",") if v.strip())
    if not vaults:
        raise CertsyncError("CERTSYNC_VAULTS is not set; set it to the comma-separated Key Vault names to act on")
    revocation = env.get("CERTSYNC_REVOCATION", "hard").strip().lower()
    if revocation not in POLICIES:
        raise CertsyncError(f"CERTSYNC_REVOCATION={revocation!r}: use one of {', '.join(POLICIES)}")
    days_text = env.get("CERTSYNC_EXPIRY_DAYS", "30").strip()
    if not days_text.isdigit():
        raise CertsyncError(f"CERTSYNC_EXPIRY_DAYS={days_text!r}: give a whole number of days")
    return PipelineSettings(
        vaults=vaults,
        trust=_trust_from_env(env),
        revocation=revocation,
        allow_hosts=_allow_hosts_from_env(env),
        expiry_warning_days=int(days_text),
    )


def _allow_hosts_from_env(env: Mapping[str, str]) -> tuple[str, ...]:
    """CERTSYNC_ALLOW_HOSTS: the private hosts certificate URLs may reach, each entry checked now."""
    allow_hosts = tuple(h.strip() for h in env.get("CERTSYNC_ALLOW_HOSTS", "").split(",") if h.strip())
    for entry in allow_hosts:
        parse_allow_entry(entry)
    return allow_hosts


def _trust_from_env(env: Mapping[str, str]) -> TrustStore | None:
    """CERTSYNC_TRUST_FILE: the roots to trust instead of Mozilla's (None: Mozilla's)."""
    trust_file = env.get("CERTSYNC_TRUST_FILE", "").strip()
    return TrustStore.from_file(trust_file) if trust_file else None


def pipeline_from_env(env: Mapping[str, str], *, keyvault_options: Mapping[str, Any] | None = None) -> Pipeline:
    """The Function App's pipeline: Key Vault, the jobs queue and the audit table of `JobsStorage`.

    A vault's URL is `https://<name>.<CERTSYNC_VAULT_DNS_SUFFIX>` unless `CERTSYNC_VAULT_URLS` maps the
    name (`name=https://...,name=...`, e.g. a private endpoint's host). `keyvault_options` go to the
    Key Vault clients (transport settings)."""
    from shared.adapters.azure.keyvault import KeyVaultSource
    from shared.adapters.azure.queues import StorageRemediationQueue
    from shared.adapters.azure.storage import storage_settings

    settings = settings_from_env(env)
    storage = storage_settings(env, "JobsStorage")
    suffix = env.get("CERTSYNC_VAULT_DNS_SUFFIX", DEFAULT_VAULT_DNS_SUFFIX).strip().lstrip(".")
    urls = _vault_urls(env.get("CERTSYNC_VAULT_URLS", ""))
    targets = env.get("CERTSYNC_TARGETS_FILE", "").strip()
    options = dict(keyvault_options or {})

    def source(vault: str) -> CertificateSource:
        return KeyVaultSource(urls.get(vault) or f"https://{vault}.{suffix}", name=vault, **options)

    audit = _audit_table(env, storage)  # one credential
    return Pipeline(
        sources=functools.cache(source),
        jobs=StorageRemediationQueue(
            storage.queue_client(env.get("REMEDIATION_QUEUE", DEFAULT_QUEUE)),
            storage.table_client(env.get("JOB_CLAIMS_TABLE", DEFAULT_CLAIMS_TABLE)),
        ),
        audit=audit,
        settings=settings,
        targets_file=load_targets_file(targets) if targets else None,
        notifier=_notifier(env, storage, audit),  # Teams, Slack, the signed webhook; logs only when none is set
    )


def audit_from_env(env: Mapping[str, str]) -> AuditLog:
    from shared.adapters.azure.storage import storage_settings

    return _audit_table(env, storage_settings(env, "JobsStorage"))


def _audit_table(env: Mapping[str, str], storage: StorageSettings) -> AuditLog:
    """The audit table AUDIT_TABLE (default certsyncaudit) of `JobsStorage`."""
    from shared.adapters.azure.tables import TableAuditLog

    return TableAuditLog(storage.table_client(env.get("AUDIT_TABLE", DEFAULT_AUDIT_TABLE)))


def _notifier(env: Mapping[str, str], storage: StorageSettings, audit: AuditLog) -> Notifier:
    """The webhooks of `env` (`shared.notify.webhooks.notifier_from_env`), undeliverable notices on the
    NOTIFY_POISON_QUEUE queue of `JobsStorage` and in `audit`."""
    from shared.adapters.azure.queues import StorageMessageQueue
    from shared.notify.webhooks import notifier_from_env, poison_queue_name

    return notifier_from_env(env, audit, StorageMessageQueue(storage.queue_client(poison_queue_name(env))))


@functools.cache
def azure_pipeline() -> Pipeline:
    """One pipeline per Functions worker process (clients and the CRL cache are reused across events)."""
    return pipeline_from_env(os.environ)


@functools.cache
def azure_audit() -> AuditLog:
    return audit_from_env(os.environ)


def reconciler_from_env(
    env: Mapping[str, str],
    *,
    pipeline: Pipeline | None = None,
    notifier: Notifier | None = None,
    keyvault_options: Mapping[str, Any] | None = None,
) -> Reconciler:
    """The Function App's daily reconciliation: the pipeline's vaults (CERTSYNC_VAULTS), sources, audit
    trail, targets and assessment settings (`pipeline` defaults to `pipeline_from_env`), its notifier
    unless `notifier` is given, and the state table STATE_TABLE of `JobsStorage`."""
    if pipeline is None:
        pipeline = pipeline_from_env(env, keyvault_options=keyvault_options)
    return _reconciler(
        pipeline,
        pipeline.settings.vaults,
        state_store_from_env(env),
        notifier if notifier is not None else pipeline.notifier,
    )


def _reconciler(pipeline: Pipeline, vaults: tuple[str, ...], state: StateStore, notifier: Notifier) -> Reconciler:
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
    )


def state_store_from_env(env: Mapping[str, str]) -> StateStore:
    """Finding states and status snapshots: the table STATE_TABLE (default certsyncstate) of `JobsStorage`."""
    from shared.adapters.azure.storage import storage_settings
    from shared.adapters.azure.tables import TableStateStore

    table = env.get("STATE_TABLE", "").strip() or DEFAULT_STATE_TABLE
    return TableStateStore(storage_settings(env, "JobsStorage").table_client(table))


@functools.cache
def azure_reconciler() -> Reconciler:
    """One reconciler per worker process, on the worker's pipeline (Key Vault clients, the CRL cache)."""
    return reconciler_from_env(os.environ, pipeline=azure_pipeline())


@functools.cache
def azure_state_store() -> StateStore:
    return state_store_from_env(os.environ)


def azure_snapshots() -> list[StatusSnapshot]:
    """The certsync.status/1 snapshots the last reconciliation wrote, sorted by certificate (the status page)."""
    return azure_state_store().snapshots()


def status_answer(wanted: str | None) -> StatusAnswer:
    """`GET /api/status`: the status page (or JSON, `wanted`) of `azure_snapshots`, as of now."""
    from shared.notify.status_page import status_answer as answer

    return answer(wanted, azure_snapshots, utc_now())


def process_event(envelope: Mapping[str, Any], what: str) -> Outcome:
    """An Event Grid delivery (`envelope`, as on the wire; `what` names it in errors) through the worker's
    pipeline."""
    from shared.pipeline.events import parse_event

    return azure_pipeline().process(parse_event(envelope, what))


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
) -> Reconciler:
    """`certsync reconcile`: `local_pipeline`'s adapters, states and snapshots in the SQLite file `state`.
    The vault is named by the URL's host, or for a directory by `vault` (default: the directory's name);
    it must be the vault name the events carried, or versions they settled look unprocessed."""
    from shared.adapters.azure.keyvault import vault_name
    from shared.adapters.local.sqlite import SqliteStateStore
    from shared.pipeline.sources import check_object_name

    pipeline = local_pipeline(
        vault_dir=vault_dir, vault_url=vault_url, targets=targets, outbox=outbox, audit=audit, settings=settings
    )
    if vault_url is not None:
        if vault is not None:
            raise CertsyncError("--vault names a --vault-dir vault; with --vault-url the URL names the vault")
        name = vault_name(vault_url)
    else:
        name = check_object_name(vault or Path(vault_dir or ".").resolve().name, "vault name").lower()
    return _reconciler(pipeline, (name,), SqliteStateStore(state), pipeline.notifier)


def remediation_from_env(
    env: Mapping[str, str],
    *,
    audit: AuditLog | None = None,
    notifier: Notifier | None = None,
    automation_options: Mapping[str, Any] | None = None,
) -> Remediation:
    """The Function App's remediation: Azure Automation (AUTOMATION_ACCOUNT_ID), the jobs and tracking
    queues of `JobsStorage` (each with its `-poison` queue) and the audit table. `automation_options` go to
    `automation_from_env` (a credential, transport settings); `notifier` defaults to the configured
    webhooks (`_notifier`)."""
    from shared.adapters.azure.automation import automation_from_env
    from shared.adapters.azure.queues import StorageMessageQueue
    from shared.adapters.azure.storage import storage_settings
    from shared.notify.signing import parse_secrets
    from shared.remediation.context import DEFAULT_RUNBOOK, RemediationSettings
    from shared.remediation.service import Remediation

    storage = storage_settings(env, "JobsStorage")
    jobs_queue = env.get("REMEDIATION_QUEUE", DEFAULT_QUEUE).strip() or DEFAULT_QUEUE
    tracking_queue = env.get("TRACKING_QUEUE", DEFAULT_TRACKING_QUEUE).strip() or DEFAULT_TRACKING_QUEUE
    timeout_text = env.get("CERTSYNC_PROBE_TIMEOUT", "15").strip() or "15"
    try:
        probe_timeout = float(timeout_text)
    except ValueError:
        probe_timeout = 0.0
    if not 0 < probe_timeout <= 120:
        raise CertsyncError(f"CERTSYNC_PROBE_TIMEOUT={timeout_text!r}: give seconds per probe, above 0 and at most 120")
    settings = RemediationSettings(
        runbook=env.get("AUTOMATION_RUNBOOK", "").strip() or DEFAULT_RUNBOOK,
        callback_base=env.get("CERTSYNC_CALLBACK_URL", "").strip(),
        callback_secrets=parse_secrets(env.get("CERTSYNC_CALLBACK_SECRET", ""), "CERTSYNC_CALLBACK_SECRET"),
        allow_hosts=_allow_hosts_from_env(env),
        trust=_trust_from_env(env),
        probe_timeout=probe_timeout,
    )
    if audit is None:
        audit = _audit_table(env, storage)
    return Remediation(
        automation=automation_from_env(env, **dict(automation_options or {})),
        audit=audit,
        jobs=StorageMessageQueue(storage.queue_client(jobs_queue)),
        jobs_poison=StorageMessageQueue(storage.queue_client(f"{jobs_queue}-poison")),
        tracking=StorageMessageQueue(storage.queue_client(tracking_queue)),
        tracking_poison=StorageMessageQueue(storage.queue_client(f"{tracking_queue}-poison")),
        settings=settings,
        notifier=notifier if notifier is not None else _notifier(env, storage, audit),
    )


@functools.cache
def azure_remediation() -> Remediation:
    """One remediation service per Functions worker process (the ARM session and token are reused)."""
    return remediation_from_env(os.environ)


def _vault_urls(text: str) -> dict[str, str]:
    urls = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, url = item.partition("=")
        if not sep or not name.strip() or not url.strip().startswith("https://"):
            raise CertsyncError(f"CERTSYNC_VAULT_URLS item {item!r}: write name=https://host, comma-separated")
        urls[name.strip().lower()] = url.strip()
    return urls
