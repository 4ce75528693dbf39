"""The event pipeline: a Key Vault event in, an audited outcome out.

event received -> ignored (other type, vault not allowed) | rejected (malformed)
  -> certificate version and the previous enabled one from the source
  -> targets (tags and/or the targets file) -> assessment -> plan
  -> blocked (not Valid, or no targets) | nothing to change | job queued | duplicate

Every step leaves an audit entry with the event's correlation id. Failures that asking again may fix
(Key Vault unavailable or forbidding, a malformed event) raise after being audited, so Event Grid
retries them and finally dead-letters them: an event is never dropped silently. The same code runs
in the Function and in `certsync process`; only the adapters differ (`shared.wiring`).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from shared.assessment import Assessment, TrustStore, assess
from shared.audit import AuditEntry, AuditLog, partition
from shared.events import NEW_VERSION, EventError, KeyVaultEvent, require_certificate_fields
from shared.fetch import Fetcher
from shared.jobs import Job, JobQueue, job_id
from shared.plan import Plan, build_plan
from shared.revocation import FetchCache
from shared.sources import CertificateSource, SourceError, StoredVersion
from shared.targets import Targets, TargetsError, TargetsFile, resolve_targets
from shared.tls_certificate_name import diff_certificates

log = logging.getLogger("certsync")


@dataclass(frozen=True)
class Notice:
    """Something a person should hear about (the webhook notifiers of issue 6 format it)."""

    kind: str  # blocked, queued, expiry-warning, failed (see shared.notify for the full list)
    certificate: str
    vault: str
    version: str
    correlation_id: str
    summary: str
    details: dict = field(default_factory=dict)  # JSON-ready facts for formatters (diff, steps, findings)


class Notifier(Protocol):
    def notify(self, notice: Notice) -> None: ...


class LogNotifier:
    """Notices as structured log records on the `certsync` logger (Application Insights in Azure)."""

    def notify(self, notice: Notice) -> None:
        level = logging.INFO if notice.kind == "queued" else logging.WARNING
        log.log(
            level,
            "%s %s: %s",
            notice.kind,
            notice.certificate,
            notice.summary,
            extra={
                "certsync.kind": notice.kind,
                "certsync.certificate": notice.certificate,
                "certsync.vault": notice.vault,
                "certsync.version": notice.version,
                "certsync.correlation_id": notice.correlation_id,
            },
        )


@dataclass(frozen=True)
class PipelineSettings:
    vaults: tuple[str, ...] = ()  # allowed vault names (lower-case); empty admits any (local use only)
    trust: TrustStore | None = None  # None: Mozilla's roots
    revocation: str = "hard"
    allow_hosts: tuple[str, ...] = ()
    expiry_warning_days: int = 30
    at: dt.datetime | None = None  # assess at this time instead of now (demo, tests)


@dataclass
class Outcome:
    outcome: str  # ignored, blocked, nothing-to-change, queued, duplicate, expiry-warning
    correlation_id: str
    event: KeyVaultEvent
    reason: str = ""
    new: StoredVersion | None = None
    previous: StoredVersion | None = None
    assessment: Assessment | None = None
    plan: Plan | None = None
    targets: Targets | None = None
    job: Job | None = None

    def to_dict(self) -> dict:
        diff = None
        if self.new is not None and self.previous is not None:
            d = diff_certificates(self.previous.bundle.leaf, self.new.bundle.leaf)
            diff = {
                "change": d.change,
                "old": str(d.old),
                "new": str(d.new),
                "dns_names_added": list(d.dns_names_added),
                "dns_names_removed": list(d.dns_names_removed),
            }
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "correlation_id": self.correlation_id,
            "event": self.event.to_dict(),
            "diff": diff,
            "assessment": self.assessment.to_dict() if self.assessment else None,
            "plan": self.plan.to_dict() if self.plan else None,
            "job_id": self.job.job_id if self.job else None,
        }


@dataclass
class Pipeline:
    sources: Callable[[str], CertificateSource]  # vault name -> its certificate source
    jobs: JobQueue
    audit: AuditLog
    settings: PipelineSettings = field(default_factory=PipelineSettings)
    targets_file: TargetsFile | None = None
    notifier: Notifier = field(default_factory=LogNotifier)
    cache: FetchCache = field(default_factory=FetchCache)  # CRLs and OCSP answers, kept across events

    def process(self, event: KeyVaultEvent) -> Outcome:
        """Run one event through; raises (after auditing) when Event Grid should deliver it again."""
        run = _Run(self, event, uuid.uuid4().hex)
        return run.go()


@dataclass
class _Run:
    pipeline: Pipeline
    event: KeyVaultEvent
    correlation_id: str

    def go(self) -> Outcome:
        event = self.event
        self._audit(
            "event-received",
            f"{event.short_type} for {event.vault}/{event.name} version {event.version}",
            {"event": event.to_dict()},
        )
        if not event.is_certificate_event:
            return self._ignore(f"event type {event.event_type} is not a certificate event certsync handles")
        allowed = self.pipeline.settings.vaults
        if allowed and event.vault.lower() not in allowed:
            return self._ignore(f"vault {event.vault or '(none)'} is not on the allow-list ({', '.join(allowed)})")
        try:
            require_certificate_fields(event, f"event {event.event_id}")
        except EventError as exc:
            self._audit("event-rejected", str(exc), {})
            raise
        queued_as = job_id(event.vault, event.name, event.version)
        if event.event_type == NEW_VERSION and self.pipeline.jobs.queued(event.vault, queued_as):
            self._audit(
                "duplicate", f"job {queued_as} was queued before; this delivery changes nothing", {"job_id": queued_as}
            )
            return Outcome("duplicate", self.correlation_id, event, reason=f"job {queued_as} already queued")
        try:
            source = self.pipeline.sources(event.vault)
            new = source.get(event.name, event.version)
            previous = source.previous(event.name, event.version) if event.event_type == NEW_VERSION else None
        except SourceError as exc:
            retry = "Event Grid will deliver it again" if exc.transient else "it will be dead-lettered after retries"
            self._audit("event-failed", f"{exc} ({retry})", {"error": exc.kind, "transient": exc.transient})
            self._notify("failed", str(exc))
            raise
        outcome = Outcome("", self.correlation_id, event, new=new, previous=previous)
        targets_error = None
        try:
            outcome.targets = resolve_targets(new.name, tags=new.tags, file=self.pipeline.targets_file)
        except TargetsError as exc:
            targets_error = str(exc)
        outcome.assessment = self._assess(new, outcome.targets)
        if event.event_type != NEW_VERSION:
            return self._expiry(outcome)
        if targets_error is not None:
            return self._block(outcome, f"no usable targets: {targets_error}")
        outcome.plan = build_plan(new, previous, outcome.assessment, outcome.targets)
        plan = outcome.plan
        self._audit("plan", plan.summary, {"plan": _without_der(plan.to_dict())})
        if plan.blocked:
            return self._block(outcome, plan.body["blocked"])
        if plan.nothing_to_change:
            outcome.outcome, outcome.reason = "nothing-to-change", plan.summary
            return outcome
        job = Job(
            vault=new.vault,
            certificate=new.name,
            version=new.version,
            secret_id=new.secret_id,
            thumbprint=new.thumbprint,
            correlation_id=self.correlation_id,
            plan=plan.to_dict(),
        )
        outcome.job = job
        if self.pipeline.jobs.enqueue(job):
            self._audit(
                "job-queued",
                f"job {job.job_id} queued for worker group {plan.body['worker_group']}",
                {"job_id": job.job_id, "thumbprint": job.thumbprint, "secret_id": job.secret_id},
            )
            self._notify("queued", plan.summary)
            outcome.outcome, outcome.reason = "queued", plan.summary
        else:
            self._audit(
                "duplicate",
                f"job {job.job_id} was queued before; this delivery changes nothing",
                {"job_id": job.job_id},
            )
            outcome.outcome, outcome.reason = "duplicate", f"job {job.job_id} already queued"
        return outcome

    def _assess(self, new: StoredVersion, targets: Targets | None) -> Assessment:
        settings = self.pipeline.settings
        assessment = assess(
            new.bundle,
            hosts=targets.hosts if targets else (),
            trust=settings.trust,
            at=settings.at,
            revocation=settings.revocation,
            fetcher=Fetcher(allow=settings.allow_hosts),
            cache=self.pipeline.cache,
            expiry_warning_days=settings.expiry_warning_days,
        )
        details = assessment.to_dict()
        self._audit(
            "assessment", f"{assessment.status}: {len(assessment.findings)} finding(s)", {"assessment": details}
        )
        return assessment

    def _expiry(self, outcome: Outcome) -> Outcome:
        leaf = outcome.new.bundle.leaf
        now = self.pipeline.settings.at or dt.datetime.now(dt.timezone.utc)
        days = (leaf.not_after - now).total_seconds() / 86400
        when = f"expired {-days:.0f} day(s) ago" if days < 0 else f"expires in {days:.0f} day(s)"
        summary = f"{outcome.new.name} version {outcome.new.version} {when}; renew it in Key Vault"
        self._audit("expiry-warning", summary, {"not_after": leaf.not_after.isoformat(), "days_left": round(days, 1)})
        self._notify("expiry-warning", summary)
        outcome.outcome, outcome.reason = "expiry-warning", summary
        return outcome

    def _block(self, outcome: Outcome, reason: str) -> Outcome:
        self._audit("blocked", f"not queued: {reason}", {"reason": reason})
        self._notify("blocked", reason)
        outcome.outcome, outcome.reason = "blocked", reason
        return outcome

    def _ignore(self, reason: str) -> Outcome:
        self._audit("event-ignored", reason, {})
        return Outcome("ignored", self.correlation_id, self.event, reason=reason)

    def _audit(self, kind: str, summary: str, details: dict) -> None:
        event = self.event
        self.pipeline.audit.record(
            AuditEntry(
                certificate=partition(event.name),
                kind=kind,
                correlation_id=self.correlation_id,
                summary=summary,
                vault=event.vault,
                version=event.version,
                event_id=event.event_id,
                details=details,
            )
        )

    def _notify(self, kind: str, summary: str) -> None:
        event = self.event
        self.pipeline.notifier.notify(
            Notice(kind, event.name, event.vault, event.version, self.correlation_id, summary)
        )


def _without_der(plan: dict) -> dict:
    """The plan for the audit trail: intermediates by thumbprint and subject (their DER is in the job)."""
    certificate = dict(plan["certificate"])
    certificate["intermediates"] = [
        {k: v for k, v in c.items() if k != "der_base64"} for c in certificate["intermediates"]
    ]
    return {**plan, "certificate": certificate}
