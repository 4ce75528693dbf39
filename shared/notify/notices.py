"""Which notices go out: at most one per (certificate, version, outcome), and a digest instead of a storm.

- `notice_outcome` names what a notice says happened to its version ("blocked", "queued",
  "expiry-warning:14", "job-result:<job id>" ...); `notice_key` and `notice_id` are derived from the
  certificate, the version and that outcome only, never from a delivery's correlation id, so a redelivered
  event, a second reconciliation pass or a retried webhook call carries the same key and the same
  Standard Webhooks `webhook-id`.
- `OnceNotifier` records a `notified` audit entry under the notice's key with `AuditLog.record_once`
  (one transaction in SQLite and in Azure Tables) before it sends: of two instances racing with the same
  notice, exactly one sends it, and a notice already sent is not sent again. A store that fails raises, so
  the caller's work is retried (and the notice with it); the notice is never sent unrecorded.
- `DigestNotifier` holds the notices of one reconciliation pass; `flush` sends them one by one when at
  most `limit` are due (not notified before), else one digest notice that lists them all (sorted, with
  counts per outcome). The dedupe records still mark each (version, outcome) as notified.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.pipeline.audit import AuditEntry, AuditLog, partition
from shared.pipeline.process import NOTICE_SEVERITIES, Notice, Notifier

log = logging.getLogger("certsync.notify")

DIGEST_KIND = "digest"
DEFAULT_DIGEST_LIMIT = 10  # CERTSYNC_NOTICE_DIGEST_LIMIT
_ITEM_SUMMARY_LIMIT = 300  # one digest line's summary, in characters


def notice_outcome(notice: Notice) -> str:
    """What the notice says happened to its version, as one short key: the kind, refined where one version
    can have several of that kind (each expiry threshold, each job, each reconciliation state), and, for a
    notice about no version, its correlation id (one discovery job, one reconciliation run)."""
    details = notice.details
    kind = notice.kind
    finding, state, previous = details.get("finding"), details.get("state"), details.get("previous")
    if isinstance(finding, str) and isinstance(state, str):  # a reconciliation state change
        if kind == "resolved":
            return f"resolved:{finding}:{previous or ''}"
        return f"{kind}:{finding}:{state}"
    if kind == "expiry-warning":
        return "expiry-warning:expired" if details.get("expired") else "expiry-warning:near"
    job = details.get("job_id")
    if kind.startswith("job-") or kind == "probe":
        return f"{kind}:{job}" if isinstance(job, str) and job else kind
    if not notice.version:
        return f"{kind}:{notice.correlation_id}"
    return kind


def _identity(notice: Notice) -> bytes:
    parts = (partition(notice.certificate), notice.vault.strip().lower(), notice.version.strip().lower())
    return "\x1f".join((*parts, notice_outcome(notice))).encode("utf-8", "surrogatepass")


def notice_key(notice: Notice) -> str:
    """The `AuditLog.record_once` key of a notice: bounded whatever the names (a Table RowKey holds 1 KiB)."""
    return "notice/" + hashlib.sha256(_identity(notice)).hexdigest()[:32]


def notice_id(notice: Notice) -> str:
    """The `webhook-id` (Standard Webhooks' idempotency key): the same for every attempt and every re-send of
    one (certificate, version, outcome); a digest's is derived from the notices it lists."""
    if notice.kind == DIGEST_KIND:
        items = notice.details.get("items")
        listed = sorted(
            "\x1f".join(str(item.get(k) or "") for k in ("certificate", "vault", "version", "kind")).lower()
            for item in (items if isinstance(items, list) else [])
            if isinstance(item, dict)
        )
        return "msg_" + hashlib.sha256("\x1e".join(listed).encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return "msg_" + hashlib.sha256(_identity(notice)).hexdigest()[:24]


def notice_entry(notice: Notice, kind: str, summary: str, details: dict[str, Any]) -> AuditEntry:
    """An audit entry about a notice (sent, not delivered), on its certificate's trail under its ids."""
    return AuditEntry(
        certificate=partition(notice.certificate),
        kind=kind,
        correlation_id=notice.correlation_id,
        summary=summary,
        vault=notice.vault,
        version=notice.version,
        details=details,
    )


class Claimer(Protocol):
    def claim(self, notice: Notice) -> bool: ...


@dataclass
class OnceNotifier:
    """A `Notifier` that sends each (certificate, version, outcome) once: `claim` records it, then `inner`
    sends it. Digests are not claimed (the notices they list are)."""

    inner: Notifier
    audit: AuditLog

    def claim(self, notice: Notice) -> bool:
        """Record that `notice` is being sent; False when it (its key) was recorded before."""
        entry = notice_entry(
            notice,
            "notified",
            f"{notice.kind} notice {notice_id(notice)} sent",
            {"notice_kind": notice.kind, "notice_id": notice_id(notice), "outcome": notice_outcome(notice)},
        )
        if self.audit.record_once(entry, notice_key(notice)):
            return True
        log.info(
            "%s notice for %s version %s was sent before; not sent again",
            notice.kind,
            notice.certificate,
            notice.version,
            extra={"certsync.notice_id": notice_id(notice), "certsync.kind": notice.kind},
        )
        return False

    def notify(self, notice: Notice) -> None:
        if notice.kind == DIGEST_KIND or self.claim(notice):
            self.inner.notify(notice)


@dataclass
class DigestNotifier:
    """Holds notices until `flush`: then each one when at most `limit` are due, else one digest."""

    target: Notifier
    limit: int = DEFAULT_DIGEST_LIMIT
    correlation_id: str = ""
    defer: bool = True  # False: `hold` runs its callback at once
    pending: list[Notice] = field(default_factory=list)
    _after: list[Callable[[], None]] = field(default_factory=list)

    def notify(self, notice: Notice) -> None:
        self.pending.append(notice)

    def hold(self, notice: Notice, sent: Callable[[], None]) -> None:
        """Hold `notice`; call `sent` once it went out (a state to remember only when people were told)."""
        self.pending.append(notice)
        if self.defer:
            self._after.append(sent)
        else:
            sent()

    def flush(self) -> int:
        """Send what is held, then call the `hold` callbacks; the number of notices (listed in a digest or
        sent alone) that went out. A failure raises before any callback is called."""
        held, self.pending = self.pending, []
        after, self._after = self._after, []
        target = self.target
        if isinstance(target, OnceNotifier):
            due, sender = [n for n in held if target.claim(n)], target.inner
        else:
            due, sender = held, target
        if len(due) <= self.limit:
            for notice in due:
                sender.notify(notice)
        else:
            sender.notify(digest_notice(due, self.correlation_id or "digest"))
        for sent in after:
            sent()
        return len(due)


_RANK = {severity: rank for rank, severity in enumerate(reversed(NOTICE_SEVERITIES))}


def digest_notice(notices: Sequence[Notice], correlation_id: str) -> Notice:
    """One notice listing `notices`: the most urgent first, then by certificate and version; counts per kind."""
    ordered = sorted(notices, key=lambda n: (_RANK[n.severity], partition(n.certificate), n.version, n.kind))
    counts = Counter(n.kind for n in notices)
    worst = ordered[0].severity if ordered else "info"
    items: list[dict[str, Any]] = [
        {
            "kind": n.kind,
            "severity": n.severity,
            "certificate": n.certificate,
            "vault": n.vault,
            "version": n.version,
            "summary": _clip(" ".join(n.summary.split()), _ITEM_SUMMARY_LIMIT),
        }
        for n in ordered
    ]
    shown = ", ".join(f"{count} {kind}" for kind, count in sorted(counts.items()))
    return Notice(
        DIGEST_KIND,
        "",
        "",
        "",
        correlation_id,
        f"{len(notices)} notices in one digest ({shown})",
        {
            "severity": worst,
            "count": len(notices),
            "counts": dict(sorted(counts.items())),
            "items": items,
        },
    )


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
