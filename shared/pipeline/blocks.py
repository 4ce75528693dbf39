"""Why a version is blocked and what happens next.

Every block is classified where it is made (`Block`, audited in the `blocked` entry's details):

- *transient*: asking again later may clear it. Revocation could not be checked (a CRL or OCSP server
  unreachable, slow or failing: RevocationCheckFailure), the stored inventory cannot be used or discovery
  could not read a server the plan needs. The version is retried with exponential backoff
  (`retry_delay`: 5 min doubling to 2 h) until it clears, then deployed as usual. People hear of it only
  when it outlasts the notice window (CERTSYNC_BLOCK_NOTICE_HOURS, 6 h), once, and again when it clears.
  (Key Vault answering 5xx or 429 and Automation answering 429 or 5xx are transient too, but they are
  not blocks: the event is raised for Event Grid to deliver again, and remediation retries the job.)
- *permanent*: expired or not yet valid, revoked, untrusted, wrong host, no CN, a key that cannot be
  exported, no targets, and the planner's other blocks. These wait for a new version or a person:
  `certsync retry` runs the version again now, `certsync approve` lets a person accept a certificate
  status the targets do not allow (e.g. Untrusted for a private CA), never an expired, not yet valid or
  revoked certificate (`overridable`).

The state of a version (attempts, when it was first blocked, whether people were told) is read from
its audit trail (`BlockState.of`), so every instance and every retry sees the same, and a new instance
needs nothing but the trail. Approvals are `approved` entries (`approval`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from shared.pipeline.audit import AuditEntry
from shared.times import parse_time
from shared.validation.assessment import DATE_INVALID, INVALID, REVOCATION_CHECK_FAILURE, REVOKED, UNTRUSTED

BACKOFF_FIRST = dt.timedelta(minutes=5)
BACKOFF_MAX = dt.timedelta(hours=2)
NOTICE_AFTER = dt.timedelta(hours=6)  # CERTSYNC_BLOCK_NOTICE_HOURS
# Assessment statuses a person may approve past; never DateInvalid (expired, not yet valid) or Revoked.
OVERRIDABLE_STATUSES = (UNTRUSTED, INVALID)
NEVER_OVERRIDDEN = (DATE_INVALID, REVOKED)
# Entries that end a version's run: the newest of them says where the version stands.
OUTCOME_KINDS = ("blocked", "job-queued", "duplicate", "awaiting-approval", "waiting-for-window", "plan")


@dataclass(frozen=True)
class Block:
    """A block and its class: `code` says what kind of block it is (certificate-status, revocation,
    inventory, targets, discovery, plan), `transient` whether it clears by itself, `overridable` whether
    a person may approve past it."""

    reason: str
    code: str
    transient: bool = False
    overridable: bool = False


def status_block(reason: str, status: str) -> Block:
    """A block because the assessment's status is not allowed: revocation that could not be checked is
    transient; Untrusted and Invalid are permanent and a person may approve them; the rest is permanent."""
    if status == REVOCATION_CHECK_FAILURE:
        return Block(reason, "revocation", transient=True)
    return Block(reason, "certificate-status", overridable=status in OVERRIDABLE_STATUSES)


def retry_delay(attempt: int) -> dt.timedelta:
    """How long after its `attempt`-th transient block (1, 2, ...) a version is tried again."""
    return min(BACKOFF_FIRST * 2 ** max(0, min(attempt - 1, 16)), BACKOFF_MAX)


@dataclass(frozen=True)
class BlockState:
    """A version's transient blocks in a row, as its audit trail shows them."""

    attempts: int = 0  # transient blocks since the version last got further
    first_at: dt.datetime | None = None  # when the first of them was recorded
    notified: bool = False  # people were told it outlasted the notice window

    @classmethod
    def of(cls, entries: Iterable[AuditEntry], version: str) -> BlockState:
        """From the version's entries (oldest first): its transient blocks since its last other outcome."""
        state = cls()
        for entry in entries:
            if entry.version.lower() != version.lower() or entry.kind not in OUTCOME_KINDS or entry.kind == "plan":
                continue
            details = entry.details
            if entry.kind == "blocked" and details.get("transient"):
                state = BlockState(
                    state.attempts + 1,
                    state.first_at or details_time(details.get("first_blocked_at")) or entry.at,
                    state.notified or bool(details.get("notified")),
                )
            else:
                state = cls()
        return state


def approval(entries: Iterable[AuditEntry], version: str) -> AuditEntry | None:
    """The newest `approved` entry of `version`, or None."""
    found = None
    for entry in entries:
        if entry.kind == "approved" and entry.version.lower() == version.lower():
            found = entry
    return found


def last_outcome(entries: Iterable[AuditEntry], version: str) -> AuditEntry | None:
    """The newest entry that ended a run of `version` (a block, a job, a wait), or None."""
    found = None
    for entry in entries:
        if entry.kind in OUTCOME_KINDS and entry.kind != "plan" and entry.version.lower() == version.lower():
            found = entry
    return found


def blocked_versions(entries: Iterable[AuditEntry]) -> dict[str, AuditEntry]:
    """Version (lower case) -> its last outcome, for the versions whose last outcome is a block or a wait."""
    last: dict[str, AuditEntry] = {}
    for entry in entries:
        if entry.kind in OUTCOME_KINDS and entry.kind != "plan" and entry.version:
            last[entry.version.lower()] = entry
    return {v: e for v, e in last.items() if e.kind in ("blocked", "awaiting-approval", "waiting-for-window")}


def details_time(value: object) -> dt.datetime | None:
    """A time an entry's details carry (as the pipeline's clock read it), or None."""
    try:
        return parse_time(value) if isinstance(value, str) else None
    except ValueError:
        return None
