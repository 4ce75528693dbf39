"""The audit trail: one entry per thing that happened to a certificate, in one partition per certificate.

`AuditLog` is the port; `shared.adapters.local.sqlite.SqliteAuditLog` is the local backend (`certsync
process`, `certsync history`); `shared.adapters.azure.tables.TableAuditLog` writes Azure Table storage.
Entries carry identifiers, statuses and plans, never key material: the pipeline builds them from public
facts only.

Reads are paged and streamed: `AuditLog.history` yields entries oldest first as the caller iterates, a
page of `HISTORY_PAGE` rows per query, from an exclusive lower bound on the row key (`lower_bound`: a
`since` time, or a continuation token, the `row_key` of the last entry a reader saw). `read_page` is one
page for a caller that hands out continuations (the HTTP function).

`details` is JSON-ready; the TypedDicts below are its shape for the pipeline's kinds (`AuditDetails`).
Remediation and reconciliation entries carry their own (`ReconcileNoticeDetails` for `reconcile-finding`),
and a reader takes any mapping: entries written by older versions stay readable.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import uuid
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

from shared.errors import CertsyncError

if TYPE_CHECKING:
    from shared.pipeline.events import EventDocument

# What happened. Each entry's `kind` is one of these.
KINDS = (
    "event-received",
    "event-ignored",
    "event-rejected",  # malformed: acknowledged, never retried (partition rejected/<sha256> when it names none)
    "event-failed",  # the certificate source failed; Event Grid retries
    "duplicate",
    "assessment",
    "plan",
    "job-queued",
    "blocked",
    "expiry-warning",
    "waiting-for-inventory",  # no fresh inventory of the worker group: discovery started, planned when stored
    # blocked versions (shared/pipeline/blocks.py), in the certificate's partition and, while due for a
    # retry, under pending/versions
    "awaiting-approval",  # CERTSYNC_APPROVAL_REQUIRED: the plan waits for `certsync approve`
    "waiting-for-window",  # outside the worker group's maintenance window: queued when it opens
    "approved",  # a person approved the version (who, when, why)
    "retry-requested",  # a person asked for the version to be run again now (who)
    # remediation (shared/remediation/): the Automation job and what the runbook reported
    "job-started",  # the Automation job was created (or found, on a retry)
    "job-retry",  # Automation answered 5xx or 429: the start or the poll is tried again later
    "job-rejected",  # Automation answered 4xx: not retried; fix the setting or role the message names
    "job-poisoned",  # retries exhausted: the message is in the poison queue
    "job-status",  # a non-terminal status seen while tracking (only when it changes)
    "job-result",  # the terminal status and the runbook's result (steps, inventory)
    "probe",  # the STARTTLS probe after a remediation: what each endpoint serves
    "job-journal",  # journal entries the runbook posted (certsync.journal/1), a batch a row
    "job-decision",  # a job ended without a result: what its journal says to do (shared/remediation/journal.py)
    # discovery (shared/remediation/discovery.py), under the partition discovery/<worker group>
    "discovery-started",  # the read-only inventory runbook was started on a worker group
    "discovery-result",  # its certsync.inventory/1 document was stored (with its errors)
    "discovery-failed",  # the job failed, could not be read, or wrote no usable inventory
    # notifications and reconciliation (shared/notify/webhooks.py, shared/reconciliation/reconcile.py)
    "notified",  # a notice was sent: one per (certificate, version, outcome) (shared/notify/notices.py)
    "notification-failed",  # a webhook delivery that failed after its retries (also in the poison queue)
    "reconcile-finding",  # a finding of the daily reconciliation whose state changed
)


# Audit kinds that show the pipeline settled a version (its event, a reconciliation run, or a resumed wait got
# that far); a version with only `waiting-for-inventory` is not settled.
SETTLED_KINDS = (
    "plan",
    "blocked",
    "job-queued",
    "duplicate",
    "job-started",
    "job-result",
    "awaiting-approval",
    "waiting-for-window",
)


class NoDetails(TypedDict):
    """event-ignored, event-rejected: the summary says it all."""


class EventReceivedDetails(TypedDict):
    event: EventDocument


class AssessmentDetails(TypedDict):
    assessment: dict[str, Any]  # `Assessment.to_dict()`


class PlanDetails(TypedDict):
    plan: dict[str, Any]  # the certsync.plan/2 without the intermediates' DER (`process.without_der`)


class WaitingDetails(TypedDict):
    """waiting-for-inventory, in the certificate's partition and in `discovery/<group>` (where
    `Pipeline.resume` finds the event to run again)."""

    worker_group: str
    certificate: str
    event: EventDocument


class JobQueuedDetails(TypedDict):
    job_id: str
    thumbprint: str
    secret_id: str


class DuplicateDetails(TypedDict):
    job_id: str


class _BlockedReason(TypedDict):
    reason: str


class BlockedDetails(_BlockedReason, total=False):
    """blocked: why, and its class (`shared.pipeline.blocks`): a transient block carries its attempt and
    when it is tried again; `notified` says people were told it outlasted the notice window."""

    code: str
    transient: bool
    overridable: bool
    attempt: int
    first_blocked_at: str
    retry_at: str
    notified: bool
    certificate: str  # in pending/versions: the certificate and the event to run again
    event: EventDocument


class HoldDetails(TypedDict, total=False):
    """awaiting-approval, waiting-for-window (with `opens_at`); in pending/versions also the event."""

    worker_group: str
    certificate: str
    opens_at: str
    retry_at: str
    event: EventDocument


class ApprovalDetails(TypedDict):
    """approved and retry-requested: who (the CLI's user, the HTTP caller's principal), why."""

    by: str
    reason: str


class SourceFailureDetails(TypedDict):
    """event-failed (and the `failed` notice): the certificate source's error kind, and whether asking
    again may work."""

    error: str
    transient: bool


# The details of the pipeline's entries, by kind (expiry-warning: `shared.pipeline.process.ExpiryDetails`).
AuditDetails = (
    NoDetails
    | EventReceivedDetails
    | AssessmentDetails
    | PlanDetails
    | JobQueuedDetails
    | DuplicateDetails
    | BlockedDetails
    | SourceFailureDetails
    | WaitingDetails
    | HoldDetails
    | ApprovalDetails
)


@dataclass(frozen=True)
class AuditEntry:
    certificate: str  # the partition: the certificate name, lower-case ("-" when the event named none)
    kind: str
    correlation_id: str
    summary: str  # one line for people
    at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    vault: str = ""
    version: str = ""
    event_id: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)  # JSON-ready; see AuditDetails
    entry_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"audit kind {self.kind!r}")

    @property
    def row_key(self) -> str:
        """Sorts in time order within the partition (then by id, for entries in the same microsecond)."""
        return f"{self.at.astimezone(dt.timezone.utc).strftime('%Y%m%dT%H%M%S.%fZ')}-{self.entry_id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "certificate": self.certificate,
            "kind": self.kind,
            "at": self.at.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z"),
            "correlation_id": self.correlation_id,
            "vault": self.vault,
            "version": self.version,
            "event_id": self.event_id,
            "summary": self.summary,
            "details": self.details,
        }

    @classmethod
    def from_stored(cls, row_key: str, data: dict) -> AuditEntry:
        """An entry read back from a store that keeps it under `row_key` (the id is its last part)."""
        return cls.from_dict(data, row_key.rsplit("-", 1)[-1])

    @classmethod
    def from_dict(cls, data: dict, entry_id: str = "") -> AuditEntry:
        """The entry `to_dict` gave. Built without the frozen dataclass's `__init__` (a `__setattr__` call
        per field): a history of 100,000 entries builds 100,000 of these, and this is a third of the cost."""
        entry = object.__new__(cls)
        entry.__dict__.update(
            certificate=data["certificate"],
            kind=data["kind"],
            correlation_id=data.get("correlation_id", ""),
            summary=data.get("summary", ""),
            at=dt.datetime.fromisoformat(data["at"].replace("Z", "+00:00")),
            vault=data.get("vault", ""),
            version=data.get("version", ""),
            event_id=data.get("event_id", ""),
            details=data.get("details") or {},
            entry_id=entry_id or uuid.uuid4().hex,
        )
        entry.__post_init__()
        return entry


def partition(name: str | None) -> str:
    """Key Vault names are case-insensitive, so one certificate is one lower-case partition."""
    return (name or "-").strip().lower() or "-"


# Rows a backend reads per query (Azure Tables answers at most 1,000 per page).
HISTORY_PAGE = 1000

_ROW_KEY = re.compile(r"\d{8}T\d{6}\.\d{6}Z-[0-9A-Za-z]{1,64}")


def lower_bound(since: dt.datetime | None = None, after: str | None = None) -> str:
    """The row key every entry to read sorts after: entries at or after `since` and after the continuation
    `after` ("" for all). An entry at `since` has a key that starts with the time, so sorts after it."""
    bound = ""
    if since is not None:
        bound = since.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    if after is not None:
        if not _ROW_KEY.fullmatch(after):
            raise CertsyncError(f"continuation {after[:80]!r}: not one certsync handed out; start again without it")
        bound = max(bound, after)
    return bound


def check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise CertsyncError(f"limit {limit}: give a whole number of entries, 1 or more")


@dataclass(frozen=True)
class HistoryPage:
    entries: list[AuditEntry]
    after: str | None  # the continuation: pass it as `after` for the next page; None on the last page


def read_page(
    audit: AuditLog, certificate: str, *, limit: int, since: dt.datetime | None = None, after: str | None = None
) -> HistoryPage:
    """At most `limit` entries and the continuation when more follow. A full page asks for one entry
    after it, on its own (a Table page of `limit + 1` would fetch a second page of up to 1,000 to know)."""
    check_limit(limit)
    entries = list(audit.history(certificate, since=since, after=after, limit=limit))
    last = entries[-1].row_key if len(entries) == limit else None
    more = last is not None and next(audit.history(certificate, after=last, limit=1), None) is not None
    return HistoryPage(entries, last if more else None)


class AuditLog(Protocol):
    def record(self, entry: AuditEntry) -> None: ...

    def record_once(self, entry: AuditEntry, key: str) -> bool:
        """Record `entry` unless an entry was recorded under `key` (e.g. "job-result/<job id>") in its
        certificate's partition before: True when this call recorded it. The key and the entry are written
        in one transaction, so of two writers racing with one key exactly one records, and a writer that
        stops halfway leaves neither."""
        ...

    def history(
        self,
        certificate: str,
        *,
        since: dt.datetime | None = None,
        after: str | None = None,
        limit: int | None = None,
    ) -> Iterator[AuditEntry]:
        """The certificate's entries oldest first, read a page at a time as the caller iterates: those at
        or after `since`, after the continuation `after` (see `lower_bound`), at most `limit` (None: all).
        Bad arguments raise `CertsyncError` at the call; a store's errors as the caller iterates."""
        ...

    def histories(self, certificates: Collection[str]) -> dict[str, list[AuditEntry]]:
        """The entries of these certificates by partition (`partition` of the name), oldest first, in one
        read (a range of partitions): the daily reconciliation reads the trail once per few hundred
        certificates, not once per certificate. A certificate without entries has no key."""
        ...


def buffered(store: object) -> contextlib.AbstractContextManager[None]:
    """`store.buffered()` when the store holds writes until it is next read without holding its lock
    meanwhile (SQLite), else `batched(store)` (Azure Tables' batches already work that way): for writers
    that share the store with other processes (the reconciliation's pool workers)."""
    hold = getattr(store, "buffered", None)
    return hold() if callable(hold) else batched(store)


def batched(store: object) -> contextlib.AbstractContextManager[None]:
    """`store.batch()` when the store (an `AuditLog`, a `StateStore`) can group writes into one
    transaction, else a block that changes nothing: callers that write many entries (the reconciliation)
    wrap them in it, and a store without batching writes each one as it comes."""
    batch = getattr(store, "batch", None)
    return batch() if callable(batch) else contextlib.nullcontext()
