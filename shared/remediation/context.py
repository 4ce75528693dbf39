"""What start, track and callback share: the settings and delays, the ports, and how they write to the audit
trail and tell people.

`RemediationContext` holds the ports (Automation, the audit log, the four queues, the notifier) and the
clock; `shared.remediation.start`, `.track`, `.callback` and `.proof` take it as their first argument and
write through its helpers: `record` (one audit entry), `notify` (one notice; a lost notice is logged, never
raised), `rejected` (a permanent failure: both, and an error log) and `record_result` (the runbook's result,
audited and notified the same way whether the poll or the callback brought it).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.errors import CertsyncError
from shared.pipeline.audit import AuditEntry, AuditLog, partition
from shared.pipeline.jobs import job_id as derive_job_id
from shared.pipeline.process import LogNotifier, Notice, Notifier
from shared.remediation.automation import Automation
from shared.remediation.messages import (
    MAX_VISIBILITY_SECONDS,
    MessageQueue,
    RunbookResult,
    callback_url,
    kept_certificates,
    name_mismatches,
    proof_results,
    server_outcomes,
)
from shared.times import Clock, utc_now

if TYPE_CHECKING:
    from shared.validation.assessment import TrustStore

log = logging.getLogger("certsync")

DEFAULT_RUNBOOK = "Invoke-CertsyncRemediation"
ERROR_TEXT_LIMIT = 4000  # characters of runbook error text kept in an audit row


@dataclass(frozen=True)
class RemediationSettings:
    """How jobs are started and tracked. Delays are in seconds; tests shorten them."""

    runbook: str = DEFAULT_RUNBOOK
    callback_base: str = ""  # CERTSYNC_CALLBACK_URL: https://<app>.azurewebsites.net, no key
    callback_secrets: tuple[bytes, ...] = field(default=(), repr=False)  # CERTSYNC_CALLBACK_SECRET, parsed
    allow_hosts: tuple[str, ...] = ()  # CERTSYNC_ALLOW_HOSTS: private probe endpoints the SSRF guard admits
    trust: TrustStore | None = None  # CERTSYNC_TRUST_FILE, for the probe's assessment (None: Mozilla's roots)
    probe_timeout: float = 15.0
    start_attempts: int = 6  # transient start failures before the job message is poisoned
    poll_failures: int = 6  # consecutive transient poll failures before the tracking message is poisoned
    retry_base: int = 30
    retry_cap: int = 900
    first_poll: int = 60
    poll_cap: int = 300
    give_up_after: dt.timedelta = dt.timedelta(hours=24)

    def __post_init__(self) -> None:
        if self.callback_base:
            callback_url(self.callback_base, "0" * 32)  # fails early, naming the setting


def retry_delay(attempt: int, retry_after: float | None, settings: RemediationSettings) -> int:
    """Seconds before attempt `attempt + 1`: `retry_base * 2**attempt` capped at `retry_cap`, and never
    sooner than Automation's Retry-After."""
    backoff = min(settings.retry_base * 2 ** min(attempt, 30), settings.retry_cap)
    return int(min(max(math.ceil(retry_after or 0), backoff), MAX_VISIBILITY_SECONDS))


def poll_delay(polls: int, settings: RemediationSettings) -> int:
    """Seconds before the next poll once `polls` polls were made: 60, 60, 120, 240, then 300 (defaults)."""
    return int(min(settings.first_poll * 2 ** min(max(polls - 1, 0), 30), settings.poll_cap))


@dataclass(frozen=True)
class Subject:
    """Whom entries and notices are about: one certificate version and its job."""

    job_id: str
    certificate: str
    vault: str = ""
    version: str = ""
    correlation_id: str = ""

    def log_extra(self) -> dict[str, str]:
        """The fields every log record about this job carries."""
        return {
            "certsync.job_id": self.job_id,
            "certsync.certificate": self.certificate,
            "certsync.vault": self.vault,
            "certsync.correlation_id": self.correlation_id,
        }


@dataclass
class RemediationContext:
    """The ports and settings of remediation, and how it writes what it did (see the module docstring)."""

    automation: Automation
    audit: AuditLog
    jobs: MessageQueue  # REMEDIATION_QUEUE: a start that failed transiently is sent here again
    jobs_poison: MessageQueue  # <REMEDIATION_QUEUE>-poison, the queue the Functions host poisons into
    tracking: MessageQueue  # TRACKING_QUEUE
    tracking_poison: MessageQueue  # <TRACKING_QUEUE>-poison
    settings: RemediationSettings = field(default_factory=RemediationSettings)
    notifier: Notifier = field(default_factory=LogNotifier)
    clock: Clock = utc_now

    def record(self, subject: Subject, kind: str, summary: str, details: dict[str, Any]) -> None:
        """One audit entry about `subject`."""
        self.audit.record(self._entry(subject, kind, summary, details))

    def _entry(self, subject: Subject, kind: str, summary: str, details: dict[str, Any]) -> AuditEntry:
        return AuditEntry(
            certificate=partition(subject.certificate),
            kind=kind,
            correlation_id=subject.correlation_id,
            summary=one_line(summary, 1000),
            at=self.clock(),
            vault=subject.vault,
            version=subject.version,
            details=details,
        )

    def notify(self, subject: Subject, kind: str, summary: str, details: dict[str, Any]) -> None:
        """One notice about `subject`; one that cannot be delivered is logged (the audit entry is written)."""
        notice = Notice(
            kind,
            subject.certificate,
            subject.vault,
            subject.version,
            subject.correlation_id,
            one_line(summary, 1000),
            details,
        )
        try:
            self.notifier.notify(notice)
        except CertsyncError as exc:  # the audit entry is written; a lost notice must not undo the work
            log.warning("notice %s for job %s not delivered: %s", kind, subject.job_id, exc, extra=subject.log_extra())

    def rejected(self, subject: Subject, reason: str, *, status: int | None, code: str | None) -> None:
        """A permanent failure: audited as job-rejected, notified and logged as an error."""
        self.record(subject, "job-rejected", reason, {"job_id": subject.job_id, "status": status, "code": code})
        self.notify(subject, "job-rejected", reason, {"job_id": subject.job_id, "status": status, "code": code})
        log.error("%s", reason, extra=subject.log_extra())

    def record_result(
        self,
        subject: Subject,
        automation_job: str,
        status: str,
        result: RunbookResult | None,
        error: str,
        via: str,
        servers: Sequence[str],
    ) -> bool:
        """The job's end as job-result, audited and notified once per job: Automation's `status`, the
        runbook's `result` (None when there is none, then `error` says why), `via` "poll" or "callback".
        False (nothing written, nobody told) when a job-result of this job was recorded before, also by
        another instance at the same moment: the entry is written with `AuditLog.record_once`."""
        outcome = result["status"] if result is not None else "no result"
        summary = one_line(
            f"job {subject.job_id}: Automation job {automation_job} {status}, runbook {outcome}"
            + (f": {result['error']}" if result is not None and result.get("error") else "")
            + (f"; {error}" if error else ""),
            400,
        )
        details = {
            "job_id": subject.job_id,
            "automation_job": automation_job,
            "status": status,
            "result": result,
            "error": error,
            "via": via,
            "proof": proof_results(result),  # per server: transport restarts, probes, mail to Exchange Online
        }
        if not self.audit.record_once(self._entry(subject, "job-result", summary, details), result_key(subject.job_id)):
            log_info(subject, "job %s: its result was recorded already; not recorded again", subject.job_id)
            return False
        self.notify(
            subject,
            "job-result",
            summary,
            {
                "job_id": subject.job_id,
                "automation_job": automation_job,
                # `status` is what people care about (Notice.severity reads it): the runbook's own status.
                "status": result["status"] if result is not None else "no-result",
                "automation_status": status,
                "servers": server_outcomes(result, servers, status),
                "steps": result.get("steps", []) if result is not None else [],
                "error": error or (result.get("error") if result is not None else "") or "",
                # Both strings per server when Exchange renders the name differently (nothing was switched).
                "name_mismatch": name_mismatches(result),
                "kept_certificates": kept_certificates(result),
                "proof": proof_results(result),
                "via": via,
            },
        )
        return True


def result_key(job_id: str) -> str:
    """The `AuditLog.record_once` key of a job's job-result: one per job, whoever brings it."""
    return f"job-result/{job_id}"


def log_info(subject: Subject, message: str, *args: object) -> None:
    """An info log record about `subject`'s job."""
    log.info(message, *args, extra=subject.log_extra())


def entries(history: Iterable[AuditEntry], kind: str, job_id: str) -> list[AuditEntry]:
    """Entries of `kind` about job `job_id` (also when the Table stored their details cut)."""
    found = []
    for entry in history:
        if entry.kind != kind:
            continue
        details = entry.details
        if details.get("job_id") == job_id or (
            details.get("details_truncated") and f'"job_id": "{job_id}"' in str(details.get("details_json", ""))
        ):
            found.append(entry)
    return found


def plan_of(history: Sequence[AuditEntry], job_id: str) -> dict[str, Any] | None:
    """The plan the pipeline audited before queuing this job (without the intermediates' DER), if any."""
    for entry in reversed(history):
        plan = entry.details.get("plan") if entry.kind == "plan" else None
        if not isinstance(plan, dict):
            continue
        certificate = plan.get("certificate") or {}
        vault, name, version = (str(certificate.get(k, "")) for k in ("vault", "name", "version"))
        if derive_job_id(vault, name, version) == job_id:
            return plan
    return None


def servers_of(history: Sequence[AuditEntry], job_id: str) -> list[str]:
    """The plan's servers, from the plan entry the pipeline wrote before queuing this job (if any)."""
    plan = plan_of(history, job_id)
    return [s for s in (plan or {}).get("servers") or [] if isinstance(s, str)]


def error_text(errors: Sequence[str]) -> str:
    """Error texts on one line, cut to `ERROR_TEXT_LIMIT` characters."""
    return one_line("; ".join(e for e in errors if e), ERROR_TEXT_LIMIT)


def one_line(text: str, limit: int) -> str:
    """`text` with its whitespace runs as single spaces, cut to `limit` characters (an ellipsis marks a cut)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
