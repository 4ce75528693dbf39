"""The `certsync.status/1` status snapshot: the contract between the daily reconciliation, which writes one
per certificate (`shared.reconciliation.reconcile`), the state stores that keep it (`StateStore`), and the
status page that renders it (`shared.notify.status_page`).

A snapshot is stored and served as JSON, so it is a TypedDict: what is written is exactly what is read
back. Readers still read leniently (a stored snapshot may be shortened, `truncated`, or come from an
older version); `by_certificate` is the order the stores list them in.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypedDict

SNAPSHOT_SCHEMA = "certsync.status/1"

# How much a reconciliation finding needs attention, least first. Not the severities of a notice
# (`shared.pipeline.process.NOTICE_SEVERITIES`, which add "good" for a success).
FINDING_SEVERITIES = ("info", "warning", "critical")


class SnapshotFinding(TypedDict):
    """One finding as the status page shows it."""

    code: str  # unprocessed, expiry, drift, failed, blocked, assessment, remediation (page-side: schema)
    severity: str  # one of FINDING_SEVERITIES
    summary: str


class ServerOutcome(TypedDict):
    """A target server's last remediation."""

    server: str
    outcome: str  # succeeded | failed | rolled-back | pending | never
    at: str | None  # ISO 8601 of the audit entry that decided it
    job_id: str | None
    thumbprint: str | None


class _StatusSnapshotBase(TypedDict):
    schema: str  # SNAPSHOT_SCHEMA
    certificate: str  # the certificate's name in Key Vault
    vault: str
    version: str | None  # None: never checked successfully (a failure snapshot)
    thumbprint: str | None
    tls_certificate_name: str | None
    status: str | None  # the assessment's status
    not_after: str | None
    days_left: float | None  # at checked_at
    expiry_state: str  # "ok", "warning", "critical" (fractions of its lifetime), "expired" or "unknown"
    drift: str  # ok | drift | pending | unknown
    servers: list[ServerOutcome]
    findings: list[SnapshotFinding]  # worst first
    attention: str  # critical | warning | ok: the worst finding severity (info is no cause)
    checked_at: str


class SnapshotForecast(TypedDict):
    """The issuers the next renewal may bring (`shared.validation.hierarchies.forecast`)."""

    ca: str | None  # None: the issuer is not in certsync's table
    as_of: str | None  # the table's date for that CA
    issuer_strings: list[str]  # the `<I>` parts of the TlsCertificateName they would give
    note: str


class StatusSnapshot(_StatusSnapshotBase, total=False):
    """`certsync.status/1`: one certificate's state for the status page."""

    forecast: SnapshotForecast
    expiry_windows: list[float]  # [warning, critical] days before notAfter, by the certificate's lifetime

    truncated: bool  # set (True) when a store shortened it to fit (`fit_snapshot`)
    proof: list[dict[str, Any]]  # the last job's proof steps per server (server, check, target, outcome, ...)


def by_certificate(snapshots: Iterable[StatusSnapshot]) -> list[StatusSnapshot]:
    """Snapshots in the order `StateStore.snapshots` gives them: by certificate, then vault."""
    return sorted(snapshots, key=lambda s: (str(s.get("certificate", "")).lower(), str(s.get("vault", "")).lower()))
