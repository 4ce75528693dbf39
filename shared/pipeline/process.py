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

from shared.pipeline.audit import AuditEntry, AuditLog, partition
from shared.pipeline.events import NEW_VERSION, EventError, KeyVaultEvent, require_certificate_fields
from shared.pipeline.jobs import Job, JobQueue, job_id
from shared.pipeline.plan import Plan, build_plan
from shared.pipeline.sources import CertificateSource, SourceError, StoredVersion
from shared.pipeline.targets import Targets, TargetsError, TargetsFile, resolve_targets
from shared.times import format_time
from shared.validation.assessment import Assessment, TrustStore, assess
from shared.validation.fetch import Fetcher
from shared.validation.revocation import FetchCache
from shared.x509.tls_certificate_name import TlsCertificateName, diff_certificates
from shared.x509.x500 import X500Name

log = logging.getLogger("certsync")


# How much a notice of each kind needs attention (see `Notice.severity` for the kinds that depend on details).
SEVERITIES = ("info", "good", "warning", "critical")
_KIND_SEVERITY = {
    "renewal": "info",  # a renewal seen that needs no job (nothing to change)
    "queued": "info",
    "job-started": "info",
    "blocked": "critical",
    "job-rejected": "critical",
    "job-poisoned": "critical",
    "probe": "warning",
    "drift": "warning",
    "unprocessed": "warning",
    "failed": "warning",
}
_LOG_LEVEL = {"info": logging.INFO, "good": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}


@dataclass(frozen=True)
class Notice:
    """Something a person should hear about; `shared.notify.webhooks` formats it for Teams, Slack and webhooks."""

    kind: str  # renewal, queued, blocked, job-*, probe, expiry-warning, drift, unprocessed, failed
    certificate: str
    vault: str
    version: str
    correlation_id: str
    summary: str
    details: dict = field(default_factory=dict)  # JSON-ready facts for formatters (diff, servers, findings)

    @property
    def severity(self) -> str:
        """info, good, warning or critical. `details["severity"]` wins when it names one of them."""
        details = self.details
        if details.get("severity") in SEVERITIES:
            return details["severity"]
        if self.kind == "job-result":
            status = str(details.get("status") or "").lower()
            return "good" if status == "succeeded" else "info" if status == "what-if" else "critical"
        if self.kind == "expiry-warning":
            days = details.get("days_left")
            soon = isinstance(days, int | float) and days <= 7
            return "critical" if soon or details.get("expiry_state") in ("7", "expired") else "warning"
        return _KIND_SEVERITY.get(self.kind, "warning")


class Notifier(Protocol):
    def notify(self, notice: Notice) -> None: ...


class LogNotifier:
    """Notices as structured log records on the `certsync` logger (Application Insights in Azure)."""

    def notify(self, notice: Notice) -> None:
        log.log(
            _LOG_LEVEL[notice.severity],
            "%s %s: %s",
            notice.kind,
            notice.certificate,
            notice.summary,
            extra={
                "certsync.kind": notice.kind,
                "certsync.severity": notice.severity,
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
            self._notify("failed", str(exc), {"error": exc.kind, "transient": exc.transient})
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
            headline, details = _renewal(outcome)
            self._notify("renewal", f"{headline}. {plan.summary}", details)
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
            headline, details = _renewal(outcome)
            self._notify("queued", f"{headline}. {plan.summary}", details | {"job_id": job.job_id})
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
        facts = {"not_after": leaf.not_after.isoformat(), "days_left": round(days, 1)}
        self._audit("expiry-warning", summary, facts)
        self._notify("expiry-warning", summary, facts | {"expired": days < 0, "thumbprint": outcome.new.thumbprint})
        outcome.outcome, outcome.reason = "expiry-warning", summary
        return outcome

    def _block(self, outcome: Outcome, reason: str) -> Outcome:
        self._audit("blocked", f"not queued: {reason}", {"reason": reason})
        headline, details = _renewal(outcome)  # only renewals are blocked: expiry events never plan
        self._notify("blocked", f"{headline}. Not deployed: {reason}", details | {"reason": reason})
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

    def _notify(self, kind: str, summary: str, details: dict | None = None) -> None:
        event = self.event
        self.pipeline.notifier.notify(
            Notice(kind, event.name, event.vault, event.version, self.correlation_id, summary, details or {})
        )


def _renewal(outcome: Outcome) -> tuple[str, dict]:
    """A renewal for people: a headline ("Renewal seen: issuer changed (R10 -> R11)") and the diff, so each
    renewal is one notice (queued, blocked, or renewal when nothing changes) that says what changed."""
    new, previous = outcome.new, outcome.previous
    leaf = new.bundle.leaf
    diff = diff_certificates(previous.bundle.leaf, leaf) if previous is not None else None
    if diff is None:
        change = "first_version"
    elif previous.thumbprint == new.thumbprint:
        change = "same_certificate"
    else:
        change = diff.change
    details: dict = {
        "change": change,
        "previous_version": previous.version if previous is not None else None,
        "old": str(diff.old) if diff is not None else None,
        "new": str(TlsCertificateName.from_certificate(leaf)),
        "dns_names_added": list(diff.dns_names_added) if diff is not None else [],
        "dns_names_removed": list(diff.dns_names_removed) if diff is not None else [],
        "thumbprint": new.thumbprint,
        "not_after": format_time(leaf.not_after, timespec="seconds"),
    }
    if outcome.assessment is not None:
        details["assessment_status"] = outcome.assessment.status
    if outcome.plan is not None:
        details["worker_group"] = outcome.plan.body["worker_group"]
        details["servers"] = list(outcome.plan.body["servers"])
    moves = []  # (which name, old common name, new common name)
    if diff is not None and change != "same_certificate":
        if diff.issuer_changed:
            moves.append(("issuer", _common_name(diff.old.issuer), _common_name(diff.new.issuer)))
        if diff.subject_changed:
            moves.append(("subject", _common_name(diff.old.subject), _common_name(diff.new.subject)))
    # "issuer changed (R10 -> R11)"; the part is named only when both changed
    said = "; ".join(f"{which} {a} -> {b}" if len(moves) > 1 else f"{a} -> {b}" for which, a, b in moves)
    headline = "Renewal seen: " + change.replace("_", " ") + (f" ({said})" if said else "")
    return headline, details


def _common_name(name: X500Name | None) -> str:
    if name is None:
        return "(none)"
    return name.first("2.5.4.3") or str(name) or "(empty)"


def _without_der(plan: dict) -> dict:
    """The plan for the audit trail: intermediates by thumbprint and subject (their DER is in the job)."""
    certificate = dict(plan["certificate"])
    certificate["intermediates"] = [
        {k: v for k, v in c.items() if k != "der_base64"} for c in certificate["intermediates"]
    ]
    return {**plan, "certificate": certificate}
