"""The event pipeline: a Key Vault event in, an audited outcome out.

event received -> ignored (other type, vault not allowed) | rejected (malformed)
  -> certificate version and the previous enabled one from the source
  -> targets (tags and/or the targets file: the worker group, and what narrows or adds) -> assessment
  -> the latest inventory of the worker group: missing or older than the max age -> discovery started,
     waiting-for-inventory (planned by `Pipeline.resume` once discovery stores it)
  -> the certsync.plan/2 of `shared.pipeline.planner`, recording the inventory it was made from
  -> blocked (not Valid, no targets, the planner's blocks) | nothing to change | job queued | duplicate

Every step leaves an audit entry with the event's correlation id. Failures raise after being audited:
the Function lets Event Grid retry those asking again may fix (Key Vault unavailable or forbidding) and
acknowledges those it cannot (a malformed event, `EventError`; a version Key Vault does not have), so an
event is never dropped silently. `Pipeline.receive` takes the envelope as delivered: an event that
cannot be read is audited as `event-rejected` too, under its certificate's partition when it names a
usable one, else under `rejected/<sha256 of the body>` (`rejected_partition`). The same code runs
in the Function and in `certsync process`; only the adapters differ (`shared.wiring`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict

from shared.errors import CertsyncError, StorageError
from shared.exchange.inventory import Inventory, read_inventory
from shared.exchange.inventory import InventoryError as InventoryDocumentError
from shared.pipeline.audit import (
    SETTLED_KINDS,
    ApprovalDetails,
    AuditDetails,
    AuditEntry,
    AuditLog,
    BlockedDetails,
    DuplicateDetails,
    HoldDetails,
    JobQueuedDetails,
    NoDetails,
    SourceFailureDetails,
    WaitingDetails,
    partition,
)
from shared.pipeline.blocks import (
    NEVER_OVERRIDDEN,
    NOTICE_AFTER,
    OVERRIDABLE_STATUSES,
    Block,
    BlockState,
    approval,
    blocked_versions,
    details_time,
    last_outcome,
    retry_delay,
    status_block,
)
from shared.pipeline.events import (
    NEAR_EXPIRY,
    NEW_VERSION,
    EventError,
    KeyVaultEvent,
    clean_text,
    event_from_dict,
    parse_event,
    require_certificate_fields,
)
from shared.pipeline.inventories import (
    DEFAULT_MAX_AGE,
    DiscoveryStarter,
    InventoryRecord,
    InventoryStore,
    audit_partition,
)
from shared.pipeline.jobs import RemediationQueue, RemediationRequest, job_id
from shared.pipeline.planner import InventoryPlan, plan_from_inventory
from shared.pipeline.preflight import preflight
from shared.pipeline.sources import (
    CertificateSource,
    SourceError,
    StoredVersion,
    check_object_name,
    is_object_name,
)
from shared.pipeline.targets import Targets, TargetsError, TargetsFile, resolve_targets
from shared.pipeline.windows import Window, next_open
from shared.times import Clock, format_time, utc_now
from shared.validation.assessment import Assessment, TrustStore, assess
from shared.validation.fetch import CRL_MAX_MB, Fetcher, FetchLimits
from shared.validation.hierarchies import explain_issuer_change
from shared.validation.lifetime import OK as LIFETIME_OK
from shared.validation.lifetime import ExpiryThresholds
from shared.validation.revocation import FetchCache
from shared.x509.tls_certificate_name import TlsCertificateName, diff_certificates
from shared.x509.x500 import X500Name

log = logging.getLogger("certsync")

# Where a version due to be run again waits (a transient block, a maintenance window): `Pipeline.retry_due`
# reads this one partition, not every certificate's.
PENDING_PARTITION = "pending/versions"


# How much a notice needs attention, least first (see `Notice.severity`). Not the severities of a
# reconciliation finding (`shared.reconciliation.snapshot.FINDING_SEVERITIES`), which have no "good".
NOTICE_SEVERITIES = ("info", "good", "warning", "critical")
_KIND_SEVERITY = {
    "renewal": "info",  # a renewal seen that needs no job (nothing to change)
    "queued": "info",
    "job-started": "info",
    "blocked": "critical",
    "unblocked": "good",  # a transient block that was notified has cleared
    "awaiting-approval": "warning",
    "job-rejected": "critical",
    "job-poisoned": "critical",
    "job-decision": "critical",  # a job ended without a result: someone should know what happens next
    "probe": "warning",
    "drift": "warning",
    "unprocessed": "warning",
    "failed": "warning",
}
_LOG_LEVEL = {"info": logging.INFO, "good": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}


class _RenewalDetailsBase(TypedDict):
    change: str  # first_version, same_certificate, or the TlsCertificateName diff's change
    previous_version: str | None
    old: str | None  # the previous version's TlsCertificateName
    new: str
    dns_names_added: list[str]
    dns_names_removed: list[str]
    thumbprint: str
    not_after: str


class RenewalDetails(_RenewalDetailsBase, total=False):
    """`Notice.details` of the kinds renewal, queued (with `job_id`) and blocked (with `reason`); with
    `issuer_change` when the issuer changed: what the table of CA hierarchies makes of it."""

    issuer_change: dict[str, Any]

    assessment_status: str
    worker_group: str
    servers: list[str]
    job_id: str
    reason: str


class ExpiryDetails(TypedDict):
    """The audit entry `expiry-warning`'s details."""

    not_after: str  # ISO 8601 with +00:00
    days_left: float


class ExpiryNoticeDetails(ExpiryDetails):
    """`Notice.details` of an expiry-warning from a NearExpiry or Expired event: `expiry_state` by the
    certificate's lifetime, `renewal_due` when a NearExpiry is routine for it (an info notice)."""

    expired: bool
    thumbprint: str
    expiry_state: str
    renewal_due: bool


# `Notice.details` as the pipeline writes them (a failed notice's: `SourceFailureDetails`). Other senders
# (remediation, reconciliation) bring their own shapes; formatters read any JSON-ready mapping.
PipelineNoticeDetails = RenewalDetails | ExpiryNoticeDetails | SourceFailureDetails


@dataclass(frozen=True)
class Notice:
    """Something a person should hear about; `shared.notify.webhooks` formats it for Teams, Slack and webhooks."""

    kind: str  # renewal, queued, blocked, job-*, probe, expiry-warning, drift, unprocessed, failed
    certificate: str
    vault: str
    version: str
    correlation_id: str
    summary: str
    details: Mapping[str, Any] = field(default_factory=dict)  # JSON-ready facts for formatters (diff, servers, ...)

    @property
    def severity(self) -> str:
        """One of NOTICE_SEVERITIES. `details["severity"]` wins when it names one of them."""
        details = self.details
        severity = details.get("severity")
        if isinstance(severity, str) and severity in NOTICE_SEVERITIES:
            return severity
        if self.kind == "job-result":
            status = str(details.get("status") or "").lower()
            return "good" if status == "succeeded" else "info" if status == "what-if" else "critical"
        change = details.get("issuer_change")
        if self.kind in ("renewal", "queued") and isinstance(change, Mapping) and change.get("expected") is False:
            return "warning"  # an issuer change the table of CA hierarchies does not explain
        if self.kind == "expiry-warning":
            days = details.get("days_left")
            soon = isinstance(days, int | float) and days <= 7
            if details.get("renewal_due"):  # a NearExpiry that the certificate's lifetime says is routine
                return "info"
            return "critical" if soon or details.get("expiry_state") in ("critical", "expired") else "warning"
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
    crl_max_mb: int = CRL_MAX_MB  # CERTSYNC_CRL_MAX_MB
    expiry: ExpiryThresholds = field(
        default_factory=ExpiryThresholds
    )  # CERTSYNC_EXPIRY_*: warning and critical by lifetime
    prestage_intermediates: bool = False  # CERTSYNC_PRESTAGE_INTERMEDIATES: the forecast's, in every plan
    at: dt.datetime | None = None  # assess at this time instead of now (demo, tests)
    inventory_max_age: dt.timedelta = DEFAULT_MAX_AGE  # CERTSYNC_INVENTORY_MAX_AGE_HOURS
    require_accepted_domain: bool = False  # CERTSYNC_REQUIRE_ACCEPTED_DOMAIN
    fetch_connect_timeout: float = 3.0  # CERTSYNC_FETCH_CONNECT_TIMEOUT
    fetch_read_timeout: float = 10.0  # CERTSYNC_FETCH_READ_TIMEOUT
    fetch_deadline: float = 20.0  # CERTSYNC_FETCH_DEADLINE: one document, retries included
    block_notice_after: dt.timedelta = NOTICE_AFTER  # CERTSYNC_BLOCK_NOTICE_HOURS
    approval_required: bool = False  # CERTSYNC_APPROVAL_REQUIRED: every plan waits for `certsync approve`
    maintenance_windows: Mapping[str, tuple[Window, ...]] = field(default_factory=dict)  # by worker group
    exo_tenant: str = ""  # CERTSYNC_EXO_TENANT_ID: when the inventory names no tenant
    restart_transport: bool = False  # CERTSYNC_RESTART_TRANSPORT

    def fetcher(self) -> Fetcher:
        """A Fetcher for one assessment: the allow-list, the CRL cap and the timeouts."""
        limits = FetchLimits.with_crl_cap(
            self.crl_max_mb,
            connect_timeout=self.fetch_connect_timeout,
            read_timeout=self.fetch_read_timeout,
            document_deadline=self.fetch_deadline,
        )
        return Fetcher(allow=self.allow_hosts, limits=limits)


@dataclass
class Outcome:
    # ignored, blocked, nothing-to-change, queued, duplicate, expiry-warning, waiting-for-inventory,
    # awaiting-approval, waiting-for-window
    outcome: str
    correlation_id: str
    event: KeyVaultEvent
    reason: str = ""
    new: StoredVersion | None = None
    previous: StoredVersion | None = None
    assessment: Assessment | None = None
    plan: InventoryPlan | None = None
    plan_document: dict[str, Any] | None = None  # the certsync.plan/2 as queued, without intermediates' DER
    targets: Targets | None = None
    inventory: InventoryRecord | None = None  # what the plan was made from
    request: RemediationRequest | None = None  # what was queued (or found queued before)
    audited: list[AuditEntry] = field(default_factory=list, repr=False)  # this run's entries for the certificate

    def to_dict(self) -> dict[str, Any]:
        diff = None
        if self.new is not None and self.previous is not None:
            d = diff_certificates(self.previous.bundle.leaf, self.new.bundle.leaf)
            explained = explain_issuer_change(d.old.issuer, d.new.issuer)
            diff = {
                "change": d.change,
                "issuer_change": explained.to_dict() if explained is not None else None,
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
            "plan": self.plan_document,
            "job_id": self.request.job_id if self.request else None,
        }


@dataclass
class Pipeline:
    sources: Callable[[str], CertificateSource]  # vault name -> its certificate source
    jobs: RemediationQueue  # where remediation requests are queued
    audit: AuditLog
    settings: PipelineSettings = field(default_factory=PipelineSettings)
    targets_file: TargetsFile | None = None
    notifier: Notifier = field(default_factory=LogNotifier)
    cache: FetchCache = field(default_factory=FetchCache)  # CRLs and OCSP answers, kept across events
    inventories: InventoryStore | None = None  # the latest inventory per worker group; None: always waits
    discovery: DiscoveryStarter | None = None  # None: the admin imports an inventory (the message says how)
    clock: Clock = utc_now  # an inventory's age is measured against it
    # Stored inventories as read and hashed, by the record's identity: a fleet's plans share a few
    # inventories, and reading one (validation, names) costs more than planning on it.
    decoded: _DecodedInventories = field(default_factory=lambda: _DecodedInventories(), repr=False, compare=False)

    def process(self, event: KeyVaultEvent, *, history: Sequence[AuditEntry] | None = None) -> Outcome:
        """Run one event through; raises (after auditing) when Event Grid should deliver it again.

        `history`: the certificate's entries in the event's vault as the caller has just read them (the
        reconciliation reads a few hundred certificates' at once); None: read here. The outcome's `audited`
        holds the entries this run added to it, so the caller need not read the trail again."""
        run = _Run(self, event, uuid.uuid4().hex, None if history is None else list(history))
        outcome = run.go()
        outcome.audited = run.audited
        return outcome

    def receive(self, envelope: object, what: str = "event") -> Outcome:
        """One delivery as on the wire (`what` names it in errors): read, then `process`. An envelope that is
        not a Key Vault event certsync can read raises `EventError` after its `event-rejected` entry."""
        try:
            event = parse_event(envelope, what)
        except EventError as exc:
            _reject(self.audit, envelope, str(exc))
            raise
        return self.process(event)

    def resume(self, worker_group: str) -> list[Outcome]:
        """Plan the versions waiting for `worker_group`'s inventory, now that discovery stored one.

        The waiting versions are the `waiting-for-inventory` entries in the audit partition
        `discovery/<group>`; a version is run again only when nothing settled it since it began to wait
        (a plan, a block or a duplicate in its own partition), and the queue refuses a second job for it,
        so a repeated call (a second discovery, a redelivered tracking message) queues nothing twice. A
        version whose run fails stays waiting for the next inventory; the others still run."""
        latest: dict[tuple[str, str, str], AuditEntry] = {}
        for entry in self.audit.history(audit_partition(worker_group)):
            if entry.kind == "waiting-for-inventory":
                name = str(entry.details.get("certificate") or "")
                latest[(entry.vault.lower(), partition(name), entry.version.lower())] = entry
        outcomes = []
        for (vault, name, version), entry in latest.items():
            settled = any(
                later.kind in SETTLED_KINDS and later.at >= entry.at
                for later in self.audit.history(name)
                if later.vault.lower() == vault and later.version.lower() == version
            )
            if settled:
                continue
            try:
                event = event_from_dict(entry.details.get("event") or {}, f"waiting version {name}/{version}")
                outcomes.append(self.process(event))
            except CertsyncError as exc:
                log.warning("waiting version %s/%s of %s not planned yet: %s", name, version, worker_group, exc)
        return outcomes

    def retry_due(self, now: dt.datetime, horizon: dt.timedelta = dt.timedelta(days=8)) -> list[Outcome]:
        """Run again the versions whose transient block's backoff has passed, or whose maintenance window
        has opened: the newest entry of each version under `PENDING_PARTITION` (written in the last
        `horizon`), when its `retry_at` is due and it is still the version's last outcome (nothing queued,
        approved or blocked it since). One version's failure stops no other."""
        latest: dict[tuple[str, str, str], AuditEntry] = {}
        for entry in self.audit.history(PENDING_PARTITION, since=now - horizon):
            name = str(entry.details.get("certificate") or "")
            latest[(entry.vault.lower(), partition(name), entry.version.lower())] = entry
        outcomes = []
        for (vault, name, version), entry in latest.items():
            retry_at = details_time(entry.details.get("retry_at"))
            if retry_at is None or retry_at > now:
                continue
            try:
                # only the entries since it was written (its own block is recorded just before it): a short read
                since = entry.at - dt.timedelta(seconds=30)
                history = [e for e in self.audit.history(name, since=since) if not e.vault or e.vault.lower() == vault]
                last = last_outcome(history, version)
                if last is None or last.correlation_id != entry.correlation_id:
                    continue  # something happened to the version since: not this retry's business
                newest = self.sources(entry.vault or vault).latest(str(entry.details.get("certificate") or name))
                if newest is not None and newest.version.lower() != version:
                    log.info("pending version %s/%s not run again: %s is newer", name, version, newest.version)
                    continue  # a newer version replaces it: never deploy an older one after it
                event = event_from_dict(entry.details.get("event") or {}, f"pending version {name}/{version}")
                outcomes.append(self.process(event))
            except CertsyncError as exc:
                log.warning("pending version %s/%s not run again yet: %s", name, version, exc)
        return outcomes

    def retry(self, name: str, version: str | None = None, *, by: str, vault: str | None = None) -> Outcome:
        """`certsync retry`: run a version again now, whatever its backoff (audited `retry-requested` with
        who asked). Without `version`, the newest version of the certificate that is blocked or waiting."""
        vault = self._vault(vault)
        if version is None:
            waiting = blocked_versions(self._history(vault, name))
            if not waiting:
                raise CertsyncError(
                    f"certificate {name} in {vault} has no blocked or waiting version; give the version to run again"
                )
            version = max(waiting.values(), key=lambda e: e.at).version
        stored = self._version(vault, name, version)
        self._record(stored, "retry-requested", f"{by} asked to run version {stored.version} again now", by, "")
        return self.process(version_event(vault, stored, self.clock(), f"retry-{uuid.uuid4().hex}"))

    def approve(self, name: str, version: str, reason: str, *, by: str, vault: str | None = None) -> Outcome:
        """`certsync approve`: a person accepts a version (audited `approved`: who, when, why), then it is
        run again. It passes the approval gate and a block a person may override (an Untrusted or Invalid
        status); it never passes expiry or revocation, and is refused for a certificate that is expired,
        not yet valid, or blocked for a reason no approval overrides."""
        reason = " ".join(clean_text(reason or "").split())
        if not reason:
            raise CertsyncError("approve: give the reason with --reason TEXT (it is kept in the audit trail)")
        vault = self._vault(vault)
        stored = self._version(vault, name, version)
        leaf = stored.bundle.leaf
        now = self.settings.at or utc_now()  # as the assessment sees it
        what = f"approve {name} version {stored.version}"
        if leaf.not_after <= now:
            expired = format_time(leaf.not_after, "seconds")
            raise CertsyncError(f"{what}: refused, the certificate expired {expired}; renew it in Key Vault")
        if leaf.not_before > now:
            raise CertsyncError(
                f"{what}: refused, the certificate is not valid before {format_time(leaf.not_before, 'seconds')};"
                " approve it then, or fix the clock of whoever issued it"
            )
        last = last_outcome(self._history(vault, name), stored.version)
        if last is not None and last.kind == "blocked":
            details = last.details
            if not details.get("transient") and not details.get("overridable"):
                why = str(details.get("reason") or last.summary)[:300]
                raise CertsyncError(f"{what}: refused, no approval overrides its block ({why}); fix that, or renew it")
        self._record(stored, "approved", f"approved by {by}: {reason[:500]}", by, reason[:2000])
        return self.process(version_event(vault, stored, self.clock(), f"approve-{uuid.uuid4().hex}"))

    def _vault(self, vault: str | None) -> str:
        vaults = self.settings.vaults
        if vault:
            if vaults and vault.lower() not in vaults:
                raise CertsyncError(f"vault {vault} is not on the allow-list ({', '.join(vaults)})")
            return vault
        if len(vaults) == 1:
            return vaults[0]
        raise CertsyncError(f"name the vault with --vault ({', '.join(vaults) or 'any vault name'})")

    def _version(self, vault: str, name: str, version: str) -> StoredVersion:
        check_object_name(name, "certificate name")
        check_object_name(version, "version")
        return self.sources(vault).get(name, version)

    def _history(self, vault: str, name: str) -> list[AuditEntry]:
        return [e for e in self.audit.history(partition(name)) if not e.vault or e.vault.lower() == vault.lower()]

    def _record(self, stored: StoredVersion, kind: str, summary: str, by: str, reason: str) -> None:
        who = " ".join(clean_text(by or "").split())[:200] or "unknown"
        self.audit.record(
            AuditEntry(
                certificate=partition(stored.name),
                kind=kind,
                correlation_id=uuid.uuid4().hex,
                summary=summary,
                vault=stored.vault,
                version=stored.version,
                details=ApprovalDetails(by=who, reason=reason),
            )
        )


@dataclass
class _Run:
    pipeline: Pipeline
    event: KeyVaultEvent
    correlation_id: str
    known: list[AuditEntry] | None = None  # the certificate's entries before this run, as the caller read them
    audited: list[AuditEntry] = field(default_factory=list)  # recorded in the certificate's partition
    _history: list[AuditEntry] | None = None

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
            self._audit("event-rejected", str(exc), NoDetails())
            raise
        queued_as = job_id(event.vault, event.name, event.version)
        if event.event_type == NEW_VERSION and self.pipeline.jobs.queued(event.vault, queued_as):
            self._audit(
                "duplicate",
                f"job {queued_as} was queued before; this delivery changes nothing",
                DuplicateDetails(job_id=queued_as),
            )
            return Outcome("duplicate", self.correlation_id, event, reason=f"job {queued_as} already queued")
        try:
            source = self.pipeline.sources(event.vault)
            new = source.get(event.name, event.version)
            previous = source.previous(event.name, event.version) if event.event_type == NEW_VERSION else None
        except SourceError as exc:
            retry = "Event Grid will deliver it again" if exc.transient else "it will be dead-lettered after retries"
            self._audit(
                "event-failed", f"{exc} ({retry})", SourceFailureDetails(error=exc.kind, transient=exc.transient)
            )
            if not exc.transient:  # a transient failure is retried by Event Grid; people hear of it only if final
                self._notify("failed", str(exc), SourceFailureDetails(error=exc.kind, transient=False))
            raise
        outcome = Outcome("", self.correlation_id, event, new=new, previous=previous)
        targets: Targets | None = None
        targets_error = ""
        try:
            targets = resolve_targets(new.name, tags=new.tags, file=self.pipeline.targets_file)
        except TargetsError as exc:
            targets_error = str(exc)
        outcome.targets = targets
        outcome.assessment = self._assess(new, targets)
        if event.event_type != NEW_VERSION:
            return self._expiry(outcome, new)
        if targets is None:
            return self._block(outcome, new, Block(f"no usable targets: {targets_error}", "targets"))
        record = self._fresh_inventory(targets.worker_group)
        if isinstance(record, str):
            return self._wait(outcome, new, targets.worker_group, record)
        outcome.inventory = record
        try:
            inventory, digest = self.pipeline.decoded.get(record)
        except InventoryDocumentError as exc:
            reason = f"{exc}; run discovery of {record.worker_group} again"
            return self._block(outcome, new, Block(reason, "inventory", transient=True))
        baseline = self._baseline(source, new, previous, {c.thumbprint for c in inventory.certificates})
        if baseline:  # the renewal's diff, too, is against what is deployed
            outcome.previous = baseline[0]
        approved = approval(self.history(), new.version)
        status = outcome.assessment.status
        if approved is not None and status not in targets.allow_status and status in OVERRIDABLE_STATUSES:
            # a person accepted this status for this version (never expiry or revocation: NEVER_OVERRIDDEN)
            targets = dataclasses.replace(targets, allow_status=(*targets.allow_status, status))
        plan = plan_from_inventory(
            new.bundle,
            outcome.assessment,
            inventory,
            targets=targets,
            previous_versions=[v.bundle.leaf for v in baseline],
            require_accepted_domain=self.pipeline.settings.require_accepted_domain,
            version=new,  # the Key Vault identity the runbook fetches the PFX by
            exo_tenant=self.pipeline.settings.exo_tenant or None,
            restart_transport=self.pipeline.settings.restart_transport,
            prestage=self.pipeline.settings.prestage_intermediates,
        )
        outcome.plan = plan
        document = plan_document(plan, outcome.assessment, targets, record, digest)
        outcome.plan_document = without_der(document)
        summary = document["summary"]
        self._audit("plan", summary, {"plan": outcome.plan_document})  # the DER is in the request
        if plan.blocked is not None:
            return self._block(outcome, new, _plan_block(plan, outcome.assessment))
        if document["nothing_to_change"]:
            self._cleared(new)
            headline, details = _renewal(outcome, new)
            self._notify("renewal", f"{headline}. {summary}", details)
            outcome.outcome, outcome.reason = "nothing-to-change", summary
            return outcome
        refusal = preflight(document, new, targets.allow_status)
        if refusal is not None:  # the runbook would refuse it: never queue a job that cannot succeed
            return self._block(outcome, new, Block(f"the runbook would refuse this plan: {refusal}", "contract"))
        if self.pipeline.settings.approval_required and approved is None:
            return self._await_approval(outcome, new, targets.worker_group, summary)
        windows = self.pipeline.settings.maintenance_windows.get(targets.worker_group.lower(), ())
        now = self._now()
        opens = next_open(windows, now)
        if opens > now:
            return self._wait_for_window(outcome, new, targets.worker_group, opens, windows)
        request = RemediationRequest(
            vault=new.vault,
            certificate=new.name,
            version=new.version,
            secret_id=new.secret_id,
            thumbprint=new.thumbprint,
            correlation_id=self.correlation_id,
            plan=document,
        )
        outcome.request = request
        self._cleared(new)
        if self.pipeline.jobs.enqueue(request):
            self._audit(
                "job-queued",
                f"job {request.job_id} queued for worker group {targets.worker_group}",
                JobQueuedDetails(job_id=request.job_id, thumbprint=request.thumbprint, secret_id=request.secret_id),
            )
            headline, details = _renewal(outcome, new)
            details["job_id"] = request.job_id
            self._notify("queued", f"{headline}. {summary}", details)
            outcome.outcome, outcome.reason = "queued", summary
        elif not self.pipeline.jobs.queued(new.vault, request.job_id):
            # Another instance holds the claim and has not sent the job yet (or stopped before it did): not
            # settled here. Raised, so Event Grid delivers it again: by then it is queued (a duplicate), or
            # the claim's lease has ended and that delivery sends it. Acknowledging it could lose the job.
            reason = f"job {request.job_id} is being queued by another instance; Event Grid will deliver it again"
            self._audit("event-failed", reason, SourceFailureDetails(error="claimed", transient=True))
            raise StorageError(reason)
        else:
            self._audit(
                "duplicate",
                f"job {request.job_id} was queued before; this delivery changes nothing",
                DuplicateDetails(job_id=request.job_id),
            )
            outcome.outcome, outcome.reason = "duplicate", f"job {request.job_id} already queued"
        return outcome

    def history(self) -> list[AuditEntry]:
        """The certificate's audit entries in this vault, read once per run."""
        if self._history is None and self.known is not None:  # as a read now would find them
            self._history = [*self.known, *self.audited]
        if self._history is None:
            vault = self.event.vault.lower()
            entries = self.pipeline.audit.history(partition(self.event.name))
            self._history = [e for e in entries if not e.vault or e.vault.lower() == vault]
        return self._history

    def _baseline(
        self, source: CertificateSource, new: StoredVersion, previous: StoredVersion | None, installed: set[str]
    ) -> list[StoredVersion]:
        """What is deployed, which the plan replaces: the version of the last job that succeeded for this
        certificate (`deployed_version`) and the previous Key Vault version, each only when the inventory
        shows it on a server. A Key Vault version that was never deployed (blocked, say) is not in the
        inventory, so it is never the baseline. When neither is there, the planner takes what the
        connectors select today for the certificate's names (the inventory alone)."""
        candidates: list[StoredVersion] = []
        deployed = deployed_version(self.history(), exclude=new.version)
        if deployed is not None:
            try:
                candidates.append(source.get(new.name, deployed))
            except SourceError as exc:  # deleted or unreadable since: the inventory decides
                log.info("%s: the deployed version %s is not readable (%s)", new.name, deployed, exc)
        if previous is not None:
            candidates.append(previous)
        found = {v.thumbprint: v for v in candidates if v.thumbprint in installed and v.thumbprint != new.thumbprint}
        return list(found.values())

    def _fresh_inventory(self, worker_group: str) -> InventoryRecord | str:
        """The worker group's latest inventory when it is no older than the max age, else why not."""
        store = self.pipeline.inventories
        record = store.get(worker_group) if store is not None else None
        max_age = self.pipeline.settings.inventory_max_age
        if record is not None and not record.stale(self.pipeline.clock(), max_age):
            return record
        if record is None:
            return f"no inventory of worker group {worker_group} yet"
        hours = record.age(self.pipeline.clock()).total_seconds() / 3600
        return (
            f"the inventory of worker group {worker_group} is {hours:.0f} h old (collected "
            f"{format_time(record.collected_at, 'seconds')}), older than the {max_age.total_seconds() / 3600:g} h"
            " CERTSYNC_INVENTORY_MAX_AGE_HOURS allows"
        )

    def _wait(self, outcome: Outcome, new: StoredVersion, worker_group: str, why: str) -> Outcome:
        """No fresh inventory: start discovery and let the version wait (audited; no notice, so a batch of
        renewals waiting on one discovery is not a storm). `Pipeline.resume` plans it once it is stored."""
        starter = self.pipeline.discovery
        if starter is None:
            reason = (
                f"{why}; import one with: certsync discover --import FILE --worker-group {worker_group}"
                " (or give certsync process --inventory FILE), then process this event again"
            )
        else:
            try:
                starter.start(worker_group)
            except CertsyncError as exc:
                failed = f"{why}, and discovery of {worker_group} could not be started: {exc}"
                if getattr(exc, "transient", False):
                    details = SourceFailureDetails(error="discovery", transient=True)
                    self._audit("event-failed", f"{failed} (Event Grid will deliver it again)", details)
                    raise
                return self._block(outcome, new, Block(failed, "discovery"))
            reason = f"{why}; discovery of {worker_group} started: this version is planned once its inventory is stored"
        waiting = WaitingDetails(worker_group=worker_group, certificate=new.name, event=self.event.to_dict())
        self._audit("waiting-for-inventory", reason, waiting)
        self._audit("waiting-for-inventory", reason, waiting, where=audit_partition(worker_group))
        log.info("%s version %s waits: %s", new.name, new.version, reason)
        outcome.outcome, outcome.reason = "waiting-for-inventory", reason
        return outcome

    def _assess(self, new: StoredVersion, targets: Targets | None) -> Assessment:
        settings = self.pipeline.settings
        assessment = assess(
            new.bundle,
            hosts=targets.hosts if targets else (),
            trust=settings.trust,
            at=settings.at,
            revocation=settings.revocation,
            fetcher=settings.fetcher(),
            cache=self.pipeline.cache,
            expiry=settings.expiry,
        )
        self._audit(
            "assessment",
            f"{assessment.status}: {len(assessment.findings)} finding(s)",
            {"assessment": assessment.to_dict()},
        )
        return assessment

    def _expiry(self, outcome: Outcome, new: StoredVersion) -> Outcome:
        """NearExpiry or Expired. Key Vault's NearExpiry fires 30 days before expiry whatever the lifetime, so
        it is read against the certificate's own lifetime (`PipelineSettings.expiry`): for a short-lived
        certificate that is not yet in its warning window it is "renewal due per policy", an info notice."""
        leaf = new.bundle.leaf
        now = self.pipeline.settings.at or dt.datetime.now(dt.timezone.utc)
        days = (leaf.not_after - now).total_seconds() / 86400
        expiry = self.pipeline.settings.expiry
        state = expiry.state(leaf.not_before, leaf.not_after, now)
        renewal_due = self.event.event_type == NEAR_EXPIRY and state == LIFETIME_OK
        when = f"expired {-days:.0f} day(s) ago" if days < 0 else f"expires in {days:.0f} day(s)"
        if renewal_due:
            meaning = expiry.near_expiry_meaning(leaf.not_before, leaf.not_after, now)
            summary = (
                f"{new.name} version {new.version} {when}: {meaning}; Key Vault renews it by its policy "
                "(renew it in Key Vault if it does not)"
            )
        else:
            summary = f"{new.name} version {new.version} {when}; renew it in Key Vault"
        facts = ExpiryDetails(not_after=leaf.not_after.isoformat(), days_left=round(days, 1))
        self._audit("expiry-warning", summary, facts)
        details = ExpiryNoticeDetails(
            **facts, expired=days < 0, thumbprint=new.thumbprint, expiry_state=state, renewal_due=renewal_due
        )
        self._notify("expiry-warning", summary, details)
        outcome.outcome, outcome.reason = "expiry-warning", summary
        return outcome

    def _block(self, outcome: Outcome, new: StoredVersion, block: Block) -> Outcome:
        """A block, classified (`shared.pipeline.blocks`). A permanent one is notified now and waits for a
        new version or a person. A transient one is tried again after its backoff (an entry under
        `PENDING_PARTITION` says when) and notified only once it outlasts the notice window."""
        reason = block.reason
        details = BlockedDetails(
            reason=reason, code=block.code, transient=block.transient, overridable=block.overridable
        )
        notify = True
        if block.transient:
            now = self._now()
            state = BlockState.of(self.history(), new.version)
            first = state.first_at or now
            retry_at = now + retry_delay(state.attempts + 1)
            notify = not state.notified and now - first >= self.pipeline.settings.block_notice_after
            details["attempt"] = state.attempts + 1
            details["first_blocked_at"] = format_time(first, "seconds")
            details["retry_at"] = format_time(retry_at, "seconds")
            details["notified"] = state.notified or notify
            summary = f"not queued yet (attempt {state.attempts + 1}, tried again at {details['retry_at']}): {reason}"
        else:
            summary = f"not queued: {reason}"
        self._audit("blocked", summary, details)
        if block.transient:
            pending = BlockedDetails(**details, certificate=new.name, event=self.event.to_dict())
            self._audit("blocked", summary, pending, where=PENDING_PARTITION)
        if notify:
            headline, notice = _renewal(outcome, new)  # only renewals are blocked: expiry events never plan
            notice["reason"] = reason
            if block.transient:
                hours = (self._now() - first).total_seconds() / 3600
                reason = f"{reason} (blocked for {hours:.0f} h; certsync keeps trying)"
            self._notify("blocked", f"{headline}. Not deployed: {reason}", notice)
        outcome.outcome, outcome.reason = "blocked", block.reason
        return outcome

    def _cleared(self, new: StoredVersion) -> None:
        """The version got past its transient blocks: when people were told of them, tell them it cleared."""
        state = BlockState.of(self.history(), new.version)
        if state.notified:
            self._notify(
                "unblocked",
                f"{new.name} version {new.version} is no longer blocked; it is being deployed",
                {"severity": "good", "attempts": state.attempts},  # type: ignore[arg-type]
            )

    def _await_approval(self, outcome: Outcome, new: StoredVersion, worker_group: str, summary: str) -> Outcome:
        reason = (
            f"CERTSYNC_APPROVAL_REQUIRED: the plan waits for approval; approve it with: certsync approve "
            f"{new.name} {new.version} --reason TEXT (or POST /api/certificates/{new.name}/versions/"
            f"{new.version}/approve)"
        )
        self._audit("awaiting-approval", reason, HoldDetails(worker_group=worker_group, certificate=new.name))
        headline, details = _renewal(outcome, new)
        details["reason"] = reason
        self._notify("awaiting-approval", f"{headline}. {summary} Waiting for approval.", details)
        outcome.outcome, outcome.reason = "awaiting-approval", reason
        return outcome

    def _wait_for_window(
        self, outcome: Outcome, new: StoredVersion, worker_group: str, opens: dt.datetime, windows: tuple[Window, ...]
    ) -> Outcome:
        """Outside the worker group's maintenance windows: audited (no notice), and under
        `PENDING_PARTITION` so that `Pipeline.retry_due` queues it once the next window opens."""
        when = format_time(opens, "seconds")
        written = ", ".join(dict.fromkeys(w.text for w in windows))
        reason = f"outside the maintenance windows of worker group {worker_group} ({written}); queued at {when}"
        details = HoldDetails(worker_group=worker_group, certificate=new.name, opens_at=when, retry_at=when)
        self._audit("waiting-for-window", reason, details)
        pending = HoldDetails(**details, event=self.event.to_dict())
        self._audit("waiting-for-window", reason, pending, where=PENDING_PARTITION)
        log.info("%s version %s waits: %s", new.name, new.version, reason)
        outcome.outcome, outcome.reason = "waiting-for-window", reason
        return outcome

    def _now(self) -> dt.datetime:
        return self.pipeline.settings.at or self.pipeline.clock()

    def _ignore(self, reason: str) -> Outcome:
        self._audit("event-ignored", reason, NoDetails())
        return Outcome("ignored", self.correlation_id, self.event, reason=reason)

    def _audit(
        self, kind: str, summary: str, details: AuditDetails | ExpiryDetails, *, where: str | None = None
    ) -> None:
        event = self.event
        name = event.name
        key = partition(name) if not name or is_object_name(name) else rejected_partition(name)
        entry = AuditEntry(
            certificate=where or key,
            kind=kind,
            correlation_id=self.correlation_id,
            summary=summary,
            vault=event.vault,
            version=event.version,
            event_id=event.event_id,
            details=details,
        )
        self.pipeline.audit.record(entry)
        if where is None:
            self.audited.append(entry)

    def _notify(self, kind: str, summary: str, details: PipelineNoticeDetails) -> None:
        event = self.event
        self.pipeline.notifier.notify(
            Notice(kind, event.name, event.vault, event.version, self.correlation_id, summary, details)
        )


def _plan_block(plan: InventoryPlan, assessment: Assessment) -> Block:
    """The class of a plan's blocks: transient when every one of them is (revocation not checked, a
    server discovery could not read), overridable by a person when every one is (an Untrusted or
    Invalid status)."""
    first = plan.blocked
    assert first is not None
    reason = f"{first.reason}; fix: {first.fix}"
    classes = [
        status_block(reason, assessment.status)
        if b.code == "certificate-status"
        else Block(reason, b.code, b.transient)
        for b in plan.blocks or (first,)
    ]
    transient = all(c.transient for c in classes)
    overridable = not transient and all(c.overridable or c.transient for c in classes)
    return Block(reason, classes[0].code, transient, overridable and assessment.status not in NEVER_OVERRIDDEN)


def version_event(vault: str, version: StoredVersion, now: dt.datetime, event_id: str) -> KeyVaultEvent:
    """The CertificateNewVersionCreated event Key Vault would have sent for `version`: the reconciliation
    runs an unprocessed version with it, `retry` and `approve` a blocked one."""
    leaf = version.bundle.leaf
    return KeyVaultEvent(
        event_id=event_id,
        event_type=NEW_VERSION,
        schema="reconciliation",
        topic="",
        subject=version.name,
        event_time=now,
        object_id=version.secret_id.replace("/secrets/", "/certificates/", 1),
        vault=vault,
        object_type="Certificate",
        name=version.name,
        version=version.version,
        not_before=leaf.not_before,
        expires=leaf.not_after,
    )


def deployed_version(entries: list[AuditEntry], exclude: str = "") -> str | None:
    """The version of the newest job whose runbook succeeded (a `job-result` with a succeeded
    certsync.result/1), other than `exclude`; None when no job of the certificate succeeded."""
    for entry in reversed(entries):
        if entry.kind != "job-result" or not entry.version or entry.version.lower() == exclude.lower():
            continue
        result = entry.details.get("result")
        if isinstance(result, Mapping) and result.get("status") == "succeeded":
            return entry.version
    return None


def rejected_partition(body: object) -> str:
    """The audit partition of an event that names no usable certificate: `rejected/<sha256>` of its body
    (`_canonical`: JSON with sorted keys, any depth)."""
    digest = hashlib.sha256(_canonical(body).encode("utf-8", "surrogatepass")).hexdigest()
    return f"rejected/{digest}"


def _canonical(value: object, depth: int = 0) -> str:
    """`value` as JSON with sorted keys, to any depth: levels past 64 are elided, so a hostile nesting
    cannot exhaust the stack."""
    if depth > 64:
        return '"..."'
    if isinstance(value, Mapping):
        items = sorted((str(k), v) for k, v in value.items())
        return "{" + ",".join(f"{json.dumps(k)}:{_canonical(v, depth + 1)}" for k, v in items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_canonical(v, depth + 1) for v in value) + "]"
    if isinstance(value, str | int | float | bool) or value is None:
        return json.dumps(value)
    return json.dumps(repr(value))


def _reject(audit: AuditLog, envelope: object, reason: str) -> None:
    """The `event-rejected` entry of an envelope `parse_event` refused: under the certificate it names
    when that is a usable name (data.ObjectName, else the subject), else under `rejected_partition`."""
    fields = {str(k).strip().lower(): v for k, v in envelope.items()} if isinstance(envelope, Mapping) else {}
    data = fields.get("data")
    named = (
        {str(k).strip().lower(): v for k, v in data.items()}.get("objectname") if isinstance(data, Mapping) else None
    )
    name = next(
        (n.strip() for n in (named, fields.get("subject")) if isinstance(n, str) and is_object_name(n.strip())), ""
    )
    event_id = fields.get("id")
    audit.record(
        AuditEntry(
            certificate=partition(name) if name else rejected_partition(envelope),
            kind="event-rejected",
            correlation_id=uuid.uuid4().hex,
            summary=reason,
            event_id=clean_text(event_id.strip())[:200] if isinstance(event_id, str) else "",
            details=NoDetails(),
        )
    )


def _renewal(outcome: Outcome, new: StoredVersion) -> tuple[str, RenewalDetails]:
    """A renewal for people: a headline ("Renewal seen: issuer changed (R10 -> R11)") and the diff, so each
    renewal is one notice (queued, blocked, or renewal when nothing changes) that says what changed."""
    previous = outcome.previous
    leaf = new.bundle.leaf
    diff = diff_certificates(previous.bundle.leaf, leaf) if previous is not None else None
    if previous is None or diff is None:
        change = "first_version"
    elif previous.thumbprint == new.thumbprint:
        change = "same_certificate"
    else:
        change = diff.change
    details: RenewalDetails = {
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
    if outcome.plan is not None and outcome.targets is not None:
        details["worker_group"] = outcome.targets.worker_group
        details["servers"] = list(outcome.plan.servers)
    moves = []  # (which name, old common name, new common name)
    explained = None
    if diff is not None and change != "same_certificate":
        if diff.issuer_changed:
            moves.append(("issuer", _common_name(diff.old.issuer), _common_name(diff.new.issuer)))
            explained = explain_issuer_change(diff.old.issuer, diff.new.issuer)
            if explained is not None:
                details["issuer_change"] = explained.to_dict()
        if diff.subject_changed:
            moves.append(("subject", _common_name(diff.old.subject), _common_name(diff.new.subject)))
    # "issuer changed (R10 -> R11)"; the part is named only when both changed
    said = "; ".join(f"{which} {a} -> {b}" if len(moves) > 1 else f"{a} -> {b}" for which, a, b in moves)
    headline = "Renewal seen: " + change.replace("_", " ") + (f" ({said})" if said else "")
    if explained is not None:
        headline += (
            f": {explained.explanation}"
            if explained.expected
            else ", which certsync's table of CA hierarchies does not explain: check it"
        )
    return headline, details


def _common_name(name: X500Name | None) -> str:
    if name is None:
        return "(none)"
    return name.first("2.5.4.3") or str(name) or "(empty)"


def plan_document(
    plan: InventoryPlan,
    assessment: Assessment,
    targets: Targets,
    record: InventoryRecord,
    inventory_sha256: str | None = None,
) -> dict[str, Any]:
    """The certsync.plan/2 the pipeline queues: the planner's document plus what the runbook and the
    remediation service need beside it (all additional fields, spec §3): the certificate's Key Vault
    identity and the intermediates' DER (the runbook fetches the PFX and installs the intermediates),
    the worker group, the probe endpoints, a summary, whether anything changes, and the inventory the
    plan was made from (`inventory_sha256`: its digest, when known). The certificate's Key Vault identity
    comes from the planner (`version=`)."""
    document = plan.to_dict()
    # What changes Exchange: not the checks, nor the intermediates alone (the runbook finds them there when
    # the certificate is already deployed and Valid: "already", never a reason to queue a job)
    writes = [s for s in plan.steps if not s.action.startswith("check-") and s.action != "install-intermediate"]
    document["worker_group"] = targets.worker_group
    document["probe"] = list(targets.probe)
    document["assessment_status"] = assessment.status
    document["nothing_to_change"] = plan.blocked is None and not writes
    document["summary"] = _plan_summary(plan, writes)
    document["inventory"] = {
        "worker_group": record.worker_group,
        "collected_at": format_time(record.collected_at, "seconds"),
        "sha256": inventory_sha256 or inventory_digest(record.inventory),
    }
    return document


def inventory_digest(document: dict[str, Any]) -> str:
    """The SHA-256 of an inventory document's canonical JSON: the plan names the inventory it was made from."""
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class _DecodedInventories:
    """The last few stored inventories as read (`read_inventory`) and hashed, by the record's identity
    (worker group, when collected and stored, by which job): a new discovery is a new record."""

    KEPT = 16

    def __init__(self) -> None:
        self._kept: OrderedDict[tuple, tuple[Inventory, str]] = OrderedDict()

    def get(self, record: InventoryRecord) -> tuple[Inventory, str]:
        key = (
            record.worker_group.lower(),
            record.collected_at,
            record.stored_at,
            record.source,
            record.automation_job,
        )
        found = self._kept.get(key)
        if found is None:
            inventory = read_inventory(record.inventory, f"the stored inventory of {record.worker_group}")
            found = (inventory, inventory_digest(record.inventory))
            self._kept[key] = found
            while len(self._kept) > self.KEPT:
                self._kept.popitem(last=False)
        self._kept.move_to_end(key)
        return found


def without_der(document: dict[str, Any]) -> dict[str, Any]:
    """The audit trail's copy of a plan document: the intermediates without their DER (the request has it)."""
    certificate = document["certificate"]
    intermediates = [{k: v for k, v in i.items() if k != "der_base64"} for i in certificate.get("intermediates", [])]
    return {**document, "certificate": {**certificate, "intermediates": intermediates}}


def _plan_summary(plan: InventoryPlan, writes: list[Any]) -> str:
    """One line for people: where, how many writes of each phase, and what needs a look."""
    servers = ", ".join(plan.servers) or "no server"
    if plan.blocked is not None:
        return f"BLOCKED ({plan.blocked.reason}). Fix: {plan.blocked.fix}"
    if not writes:
        return f"Nothing to change on {servers}: Exchange already uses this certificate."
    count = {phase: sum(1 for s in writes if s.phase == phase) for phase in ("stage", "switch", "retire")}
    text = (
        f"Stage on {servers}, {count['switch']} switch(es) of TlsCertificateName, "
        f"{count['retire']} old certificate(s) retired, {len(plan.kept)} kept"
    )
    if plan.conflicts:
        text += f"; {len(plan.conflicts)} conflict(s) with the targets (not written)"
    manual = sorted({s.server for s in plan.steps if s.manual and s.server})
    if manual:
        text += f"; manual steps on {', '.join(manual)}"
    return text + "."
