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
from typing import Any

from shared.assessment import POLICIES, TrustStore
from shared.audit import AuditLog, SqliteAuditLog
from shared.exceptions import CertsyncError
from shared.fetch import parse_allow_entry
from shared.jobs import OutboxQueue
from shared.pipeline import Pipeline, PipelineSettings
from shared.sources import CertificateSource, DirectoryVault
from shared.targets import load_targets_file

DEFAULT_QUEUE = "certsync-jobs"
DEFAULT_AUDIT_TABLE = "certsyncaudit"
DEFAULT_CLAIMS_TABLE = "certsyncjobs"
DEFAULT_VAULT_DNS_SUFFIX = "vault.azure.net"


def local_pipeline(
    *,
    vault_dir: str | None = None,
    vault_url: str | None = None,
    targets: str | None = None,
    outbox: str = "certsync-outbox",
    audit: str = "certsync-audit.sqlite",
    settings: PipelineSettings | None = None,
) -> Pipeline:
    """`certsync process`: certificates from a directory (one folder per certificate) or a real vault,
    jobs as plan files in `outbox`, the audit trail in the SQLite file `audit`."""
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
        from shared.keyvault import KeyVaultSource

        source = KeyVaultSource(vault_url)
        sources = lambda _vault: source  # noqa: E731 - one vault, whatever the event calls it
    return Pipeline(
        sources=sources,
        jobs=OutboxQueue(outbox),
        audit=SqliteAuditLog(audit),
        settings=settings,
        targets_file=load_targets_file(targets) if targets else None,
    )


def local_audit(path: str) -> AuditLog:
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
    allow_hosts = tuple(h.strip() for h in env.get("CERTSYNC_ALLOW_HOSTS", "").split(",") if h.strip())
    for entry in allow_hosts:
        parse_allow_entry(entry)
    days_text = env.get("CERTSYNC_EXPIRY_DAYS", "30").strip()
    if not days_text.isdigit():
        raise CertsyncError(f"CERTSYNC_EXPIRY_DAYS={days_text!r}: give a whole number of days")
    trust_file = env.get("CERTSYNC_TRUST_FILE", "").strip()
    return PipelineSettings(
        vaults=vaults,
        trust=TrustStore.from_file(trust_file) if trust_file else None,
        revocation=revocation,
        allow_hosts=allow_hosts,
        expiry_warning_days=int(days_text),
    )


def pipeline_from_env(env: Mapping[str, str], *, keyvault_options: Mapping[str, Any] | None = None) -> Pipeline:
    """The Function App's pipeline: Key Vault, the jobs queue and the audit table of `JobsStorage`.

    A vault's URL is `https://<name>.<CERTSYNC_VAULT_DNS_SUFFIX>` unless `CERTSYNC_VAULT_URLS` maps the
    name (`name=https://...,name=...`, e.g. a private endpoint's host). `keyvault_options` go to the
    Key Vault clients (transport settings)."""
    from shared.keyvault import KeyVaultSource
    from shared.storage import StorageJobQueue, TableAuditLog, storage_settings

    settings = settings_from_env(env)
    storage = storage_settings(env, "JobsStorage")
    suffix = env.get("CERTSYNC_VAULT_DNS_SUFFIX", DEFAULT_VAULT_DNS_SUFFIX).strip().lstrip(".")
    urls = _vault_urls(env.get("CERTSYNC_VAULT_URLS", ""))
    targets = env.get("CERTSYNC_TARGETS_FILE", "").strip()
    options = dict(keyvault_options or {})

    def source(vault: str) -> CertificateSource:
        return KeyVaultSource(urls.get(vault) or f"https://{vault}.{suffix}", name=vault, **options)

    return Pipeline(
        sources=functools.cache(source),
        jobs=StorageJobQueue(
            storage.queue_client(env.get("REMEDIATION_QUEUE", DEFAULT_QUEUE)),
            storage.table_client(env.get("JOB_CLAIMS_TABLE", DEFAULT_CLAIMS_TABLE)),
        ),
        audit=TableAuditLog(storage.table_client(env.get("AUDIT_TABLE", DEFAULT_AUDIT_TABLE))),  # one credential
        settings=settings,
        targets_file=load_targets_file(targets) if targets else None,
    )


def audit_from_env(env: Mapping[str, str]) -> AuditLog:
    from shared.storage import TableAuditLog, storage_settings

    storage = storage_settings(env, "JobsStorage")
    return TableAuditLog(storage.table_client(env.get("AUDIT_TABLE", DEFAULT_AUDIT_TABLE)))


@functools.cache
def azure_pipeline() -> Pipeline:
    """One pipeline per Functions worker process (clients and the CRL cache are reused across events)."""
    return pipeline_from_env(os.environ)


@functools.cache
def azure_audit() -> AuditLog:
    return audit_from_env(os.environ)


def _vault_urls(text: str) -> dict[str, str]:
    urls = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, url = item.partition("=")
        if not sep or not name.strip() or not url.strip().startswith("https://"):
            raise CertsyncError(f"CERTSYNC_VAULT_URLS item {item!r}: write name=https://host, comma-separated")
        urls[name.strip().lower()] = url.strip()
    return urls
