"""The daily reconciliation: what Key Vault holds, checked against what certsync did and what Exchange reported.

Key Vault events are not a complete trigger (`spec/exchange-azure-facts.md` §1 fact 10): they fire only
for versions created after the subscription existed, NearExpiry fires once, at 30 days, and events go
missing. So once a day `Reconciler.run(now)` takes, in every allowed vault, every certificate that has
targets, and looks at its latest enabled version for:

- `unprocessed`: no audit entry shows the pipeline settled this version (`SETTLED_KINDS`: a plan, a
  block, a queued or duplicate job, a runbook job). It is run through the pipeline as a synthesized
  CertificateNewVersionCreated event `reconcile-<version>`; the job claim keeps that idempotent.
- `expiry`: in its warning or critical window (fractions of the certificate's own lifetime, with day
  floors and caps: `shared.validation.lifetime`, `PipelineSettings.expiry`), or expired.
- `drift`: the last runbook inventory (the newest `job-result` entry whose certsync.result/1 carries an
  `inventory`) against Key Vault: a connector whose TlsCertificateName does not select the version's
  certificate, a target server without the version's thumbprint, or with it in a status other than
  Valid. Without an inventory the drift state is `unknown`; while the version's own job is queued or
  running (for up to `PENDING_GRACE`) it is `pending`. Neither is a finding.
- `failed`: anything that stopped the check of one certificate (Key Vault refusing it, malformed
  `certsync-*` tags, no enabled version). The other certificates are still checked.

Which certificates have targets: those with a `certsync-*` tag on their latest enabled version, and
those with their own entry in the targets file. The file's `"*"` entry only supplies defaults, as in
`shared.pipeline.targets.resolve_targets`, so it alone targets nothing: a vault's unrelated certificates (web
servers, other apps) are not reconciled, and their secrets are not even read.

Notified once per change of state. The `StateStore` remembers each tracked finding's last state per
certificate (`<vault>/<name>`): `unprocessed` (the version id), `expiry` ("ok", "warning", "critical",
"expired"), `drift` ("ok" or "drift:<hash of what drifted>"), `failed` ("ok" or the failure's kind). A
state that differs from the remembered one is notified (Notice kinds `unprocessed`, `expiry-warning`,
`drift`, `failed`), audited as `reconcile-finding`, and remembered; a problem that clears (a renewal,
connectors fixed) is notified once as `resolved`. `unprocessed` is handled in the run that finds it,
so it has no `resolved`; `pending`/`unknown` drift changes nothing remembered. A notice that could not
be sent leaves the state as it was, so the next run tries again.

Each run also writes one status snapshot (certsync.status/1) per certificate for the status page, with
a fresh assessment, the last remediation on each server, and every finding, including those that are
not notified: `blocked` (the version's plan was blocked), `assessment` (not Valid now), `remediation`
(a server's last job failed or rolled back).

With a `DiscoveryStarter` (the Function App wires `shared.remediation.discovery.Discovery` when
AUTOMATION_ACCOUNT_ID is set), each run then starts the read-only discovery of every worker group the
checked certificates' targets name, so the stored inventory is at most a day old.

`StateStore` is the port: `shared.adapters.local.sqlite.SqliteStateStore` is the local backend (`certsync
reconcile`), `shared.adapters.azure.tables.TableStateStore` the Azure one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import gc
import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict

from shared.errors import CertsyncError, StorageError
from shared.notify.notices import DEFAULT_DIGEST_LIMIT, DigestNotifier
from shared.pipeline.audit import SETTLED_KINDS, AuditEntry, AuditLog, batched, buffered, partition
from shared.pipeline.events import KeyVaultEvent
from shared.pipeline.jobs import job_id
from shared.pipeline.policy import check_policy
from shared.pipeline.process import Notice, Notifier, Pipeline, PipelineSettings, version_event
from shared.pipeline.sources import CertificateSource, SourceError, StoredVersion, one_pass
from shared.pipeline.targets import TAG_PREFIX, Targets, TargetsError, TargetsFile, resolve_targets
from shared.reconciliation.snapshot import (
    FINDING_SEVERITIES,
    SNAPSHOT_SCHEMA,
    ServerOutcome,
    SnapshotFinding,
    SnapshotForecast,
    StatusSnapshot,
)
from shared.times import format_time, parse_time
from shared.validation.assessment import VALID, Assessment, assess
from shared.validation.hierarchies import forecast_for
from shared.validation.lifetime import CRITICAL, EXPIRED, ExpiryThresholds
from shared.validation.revocation import FetchCache
from shared.x509.tls_certificate_name import TlsCertificateName

log = logging.getLogger("certsync")

OK = "ok"
# How long the latest version's own job counts as under way before its absence of a result is drift.
PENDING_GRACE = dt.timedelta(days=1)
CONNECTOR_KINDS = ("send-connector", "receive-connector", "hybrid-configuration", "exo-inbound-connector")
# Certificates whose state and audit writes share one transaction (stores that batch: `batched`).
BATCH = 500
# The state that remembers a Valid assessment of the latest version (`_Run._remembered_assessment`).
ASSESSED = "assessed"
# Tracked findings and the Notice kind each is announced with.
NOTICE_KINDS = {"unprocessed": "unprocessed", "expiry": "expiry-warning", "drift": "drift", "failed": "failed"}


# --- findings and the report ---------------------------------------------------------------------


class FindingDetails(TypedDict, total=False):
    """A finding's facts, by code (JSON-ready; also in its notice and its `reconcile-finding` entry)."""

    outcome: str | None  # unprocessed: what the pipeline made of the version (None: not run)
    job_id: str | None  # unprocessed: the job it queued
    correlation_id: str  # unprocessed: the pipeline run's
    not_after: str  # expiry
    days_left: float  # expiry
    expiry_state: str  # expiry
    drift: list[str]  # drift: what drifted, one line each
    inventory_job_id: str | None  # drift: the job whose runbook inventory was compared
    error: str  # failed: the failure's kind


class _NoticeFacts(TypedDict):
    finding: str  # the finding's code
    state: str  # the new state (OK when resolved)
    previous: str | None  # the remembered state
    severity: str  # a notice severity: the finding's, or "good" when resolved


class ReconcileNoticeDetails(_NoticeFacts, FindingDetails):
    """`Notice.details` of a reconciliation notice, and the details of its `reconcile-finding` audit entry."""


class ProcessedVersion(TypedDict):
    """An unprocessed version the reconciliation ran through the pipeline (`ReconcileReport.processed`)."""

    vault: str
    certificate: str
    version: str
    outcome: str
    job_id: str | None
    correlation_id: str


@dataclass(frozen=True)
class ReconcileFinding:
    """One thing the reconciliation found about one certificate (not an assessment's `Finding`)."""

    vault: str
    certificate: str
    code: str  # unprocessed, expiry, drift, failed (tracked); blocked, assessment, remediation
    state: str  # what the state store remembers for tracked codes, e.g. "14", "drift:1a2b...", "forbidden"
    severity: str  # one of FINDING_SEVERITIES
    summary: str  # one line
    version: str = ""
    changed: bool = False  # differs from the last run's state: notified and audited in this run
    details: FindingDetails = field(default_factory=lambda: FindingDetails())

    def to_dict(self) -> dict[str, Any]:
        return {
            "vault": self.vault,
            "certificate": self.certificate,
            "version": self.version,
            "code": self.code,
            "state": self.state,
            "severity": self.severity,
            "summary": self.summary,
            "changed": self.changed,
            "details": self.details,
        }


@dataclass
class ReconcileReport:
    run_id: str  # the correlation id of this run's notices and audit entries
    checked_at: dt.datetime
    vaults: tuple[str, ...]
    certificates: list[str] = field(default_factory=list)  # "<vault>/<name>" of each certificate checked
    findings: list[ReconcileFinding] = field(default_factory=list)  # current findings, changed or not
    resolved: list[ReconcileFinding] = field(default_factory=list)  # problems that cleared in this run
    processed: list[ProcessedVersion] = field(default_factory=list)  # unprocessed versions run through the pipeline
    failures: list[str] = field(default_factory=list)  # one line each: what could not be checked or sent
    discoveries: list[str] = field(default_factory=list)  # worker groups whose discovery was started (or found)
    notices: list[Notice] = field(default_factory=list, repr=False)  # a pool worker's, sent by the parent

    @property
    def notified(self) -> int:
        return sum(1 for f in self.findings if f.changed) + len(self.resolved)

    def summary(self) -> str:
        return (
            f"reconciled {len(self.certificates)} certificate(s) in {len(self.vaults)} vault(s): "
            f"{len(self.findings)} finding(s), {self.notified} change(s) notified, "
            f"{len(self.processed)} version(s) processed, {len(self.failures)} failure(s)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "checked_at": format_time(self.checked_at, timespec="seconds"),
            "vaults": list(self.vaults),
            "certificates": list(self.certificates),
            "findings": [f.to_dict() for f in self.findings],
            "resolved": [f.to_dict() for f in self.resolved],
            "processed": list(self.processed),
            "failures": list(self.failures),
            "discoveries": list(self.discoveries),
            "summary": self.summary(),
        }


# --- the ports ---------------------------------------------------------------------------------


class DiscoveryStarter(Protocol):
    """Starts the read-only discovery of a worker group (`shared.remediation.discovery.Discovery`); a
    failure is a CertsyncError whose message names the group and what to do."""

    def start(self, worker_group: str) -> object: ...


class StateStore(Protocol):
    """Finding states and status snapshots. `certificate` is the key `<vault>/<name>`, lower-case, so
    one name in two vaults keeps two sets of states."""

    def get(self, certificate: str, finding: str) -> str | None: ...

    def states(self) -> dict[tuple[str, str], str]:
        """Every remembered state, by (certificate key, finding), in one read (a run reads them once)."""
        ...

    def put(self, certificate: str, finding: str, state: str, at: dt.datetime) -> None: ...

    def put_snapshot(self, snapshot: StatusSnapshot) -> None:
        """Store (replace) the certsync.status/1 snapshot of (snapshot["vault"], snapshot["certificate"])."""
        ...

    def snapshots(self) -> list[StatusSnapshot]:
        """Every snapshot, sorted by certificate (then vault)."""
        ...

    def snapshot_keys(self) -> set[str]:
        """The certificate keys (`certificate_key`) of every stored snapshot, without reading the snapshots."""
        ...

    def snapshot(self, vault: str, certificate: str) -> StatusSnapshot | None:
        """The snapshot of one certificate, or None."""
        ...

    def delete_snapshot(self, vault: str, certificate: str) -> None:
        """Forget a certificate that no longer exists or no longer has targets."""
        ...


def certificate_key(vault: str, name: str) -> str:
    return f"{vault}/{name}".lower()


def fit_snapshot(snapshot: StatusSnapshot, fits: Callable[[str], bool]) -> str:
    """The snapshot's JSON, shortened until `fits` (a store's size limit, e.g. a Table string property)
    takes it: long summaries cut, then servers and findings beyond the first ones dropped, then both
    emptied; `truncated` says so."""

    text = json.dumps(snapshot, sort_keys=True, ensure_ascii=False)
    if fits(text):
        return text
    for servers, findings, summary in ((None, None, 300), (100, 50, 200), (0, 0, 0)):
        shortened = snapshot.copy()
        shortened["truncated"] = True
        shortened["servers"] = list(snapshot.get("servers", []))[:servers]
        shortened["proof"] = list(snapshot.get("proof", []))[:servers]
        kept = list(snapshot.get("findings", []))[:findings]
        shortened["findings"] = [{**f, "summary": str(f.get("summary", ""))[:summary]} for f in kept]
        text = json.dumps(shortened, sort_keys=True, ensure_ascii=False)
        if fits(text):
            return text
    raise CertsyncError(f"status snapshot of {snapshot.get('certificate')}: too large to store even shortened")


# --- progress: the port -------------------------------------------------------------------------


class Progress(Protocol):
    """Where a run reports how far it got (`certsync reconcile` draws it on a terminal's stderr)."""

    def add_total(self, count: int) -> None:
        """`count` more certificates to check (a vault's, once it is listed)."""
        ...

    def advance(self, count: int) -> None:
        """`count` more certificates checked."""
        ...

    def close(self) -> None:
        """The run ended."""
        ...


class _NoProgress:
    def add_total(self, count: int) -> None:
        pass

    def advance(self, count: int) -> None:
        pass

    def close(self) -> None:
        pass


NO_PROGRESS: Progress = _NoProgress()


# --- the reconciler ------------------------------------------------------------------------------


@dataclass
class Reconciler:
    """The daily check; `run(now)` takes the clock as a parameter so that tests control it."""

    sources: Callable[[str], CertificateSource]  # vault name -> its certificate source
    vaults: tuple[str, ...]
    audit: AuditLog
    state: StateStore
    notifier: Notifier
    pipeline: Pipeline | None = None  # None: unprocessed versions are reported, not processed
    targets_file: TargetsFile | None = None
    settings: PipelineSettings = field(default_factory=PipelineSettings)  # trust, revocation, allow_hosts
    cache: FetchCache | None = None  # None: the pipeline's (CRLs and OCSP answers are shared)
    progress: Progress = field(default_factory=lambda: NO_PROGRESS)  # certificates checked, e.g. on a terminal
    discovery: DiscoveryStarter | None = None  # refreshes the inventory of each worker group the targets name
    # Processes for a vault of at least `POOL_MIN` certificates: each builds its own reconciler with
    # `replica` (own store connections, trust store and caches; inherited through fork, never pickled)
    # once, then checks batches of certificates; the parent merges their reports in name order.
    workers: int = 1
    replica: Callable[[], Reconciler] | None = None
    # More notices than this due in one run go out as one digest (CERTSYNC_NOTICE_DIGEST_LIMIT).
    digest_limit: int = DEFAULT_DIGEST_LIMIT

    def __post_init__(self) -> None:
        if self.cache is None:
            self.cache = self.pipeline.cache if self.pipeline is not None else FetchCache()

    def run(self, now: dt.datetime) -> ReconcileReport:
        """Check every certificate with targets in every vault; never raises for one certificate's failure."""
        now = now.astimezone(dt.timezone.utc) if now.tzinfo else now.replace(tzinfo=dt.timezone.utc)
        report = ReconcileReport(uuid.uuid4().hex, now, tuple(self.vaults))
        # The run's notices (its own and those of the versions it runs through the pipeline) are held and
        # sent at the end: one by one, or as one digest when more than `digest_limit` are due.
        digest = DigestNotifier(self.notifier, self.digest_limit, report.run_id)
        sending, self.notifier = self.notifier, digest
        try:
            self._retry_due(now, report, digest)
            run = _Run(self, self._pipeline_at(now, digest), now, report, self.progress)
            try:
                for vault in self.vaults:
                    run.vault(vault)
                run.discover()
            finally:
                run._batches.close()
                self.progress.close()
        finally:
            self.notifier = sending
            try:
                digest.flush()
            except Exception as exc:  # their states are not remembered: the next run notifies again
                log.error("reconciliation notices not sent: %s", _reason(exc))
                report.failures.append(f"the run's notices were not sent: {_reason(exc)}")
        return report

    def retry_due(self, now: dt.datetime) -> ReconcileReport:
        """Only the versions due again: transient blocks whose backoff has passed, plans whose maintenance
        window has opened (`Pipeline.retry_due`). The Function runs this every 5 minutes; `run` does it too."""
        now = now.astimezone(dt.timezone.utc) if now.tzinfo else now.replace(tzinfo=dt.timezone.utc)
        report = ReconcileReport(uuid.uuid4().hex, now, tuple(self.vaults))
        self._retry_due(now, report)
        return report

    def _retry_due(self, now: dt.datetime, report: ReconcileReport, notifier: Notifier | None = None) -> None:
        pipeline = self._pipeline_at(now, notifier)
        if pipeline is None:
            return
        try:
            outcomes = pipeline.retry_due(now)
        except CertsyncError as exc:  # the trail could not be read: the next run tries again
            report.failures.append(f"versions due again: {_reason(exc)}")
            return
        for outcome in outcomes:
            event = outcome.event
            report.processed.append(
                ProcessedVersion(
                    vault=event.vault,
                    certificate=event.name,
                    version=event.version,
                    outcome=outcome.outcome,
                    job_id=outcome.request.job_id if outcome.request is not None else None,
                    correlation_id=outcome.correlation_id,
                )
            )

    def _pipeline_at(self, now: dt.datetime, notifier: Notifier | None = None) -> Pipeline | None:
        """The pipeline, assessing at the same instant as the reconciliation (notifying `notifier`)."""
        if self.pipeline is None:
            return None
        settings = dataclasses.replace(self.pipeline.settings, at=now)
        return dataclasses.replace(self.pipeline, settings=settings, notifier=notifier or self.pipeline.notifier)


# --- the process pool: workers check batches of certificates -------------------------------------

# A vault with fewer certificates is checked in-process: starting the pool costs more than it saves.
POOL_MIN = 2000
# Certificates per pool task: small enough that the workers end together (the last task runs alone), large
# enough that a task's fixed costs (its histories query, its report sent back) stay small.
POOL_TASK = 200
_worker: Reconciler | None = None  # a pool worker's own reconciler, built once by `_start_worker`
_worker_listed: set[str] = set()  # the vaults this worker listed (a pool lives for one run)
# A pool worker's finding states, read once per run and kept current by its own writes (each batch's
# certificates are checked by one worker, so no other process changes the states it reads).
_worker_states: dict[tuple[str, str], str] | None = None


def _start_worker(replica: Callable[[], Reconciler]) -> None:
    global _worker, _worker_states
    # What the worker inherited stays out of the cyclic collector: never scanned again, and its pages,
    # shared with the parent until written, are not copied by the collector's bookkeeping. A worker
    # allocates many short-lived objects and few cycles: its youngest generation is collected every
    # 20,000 allocations, not 700 (3% of its time at 10,000 certificates).
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)
    _worker = replica()
    _worker_states = None
    _worker_listed.clear()


def _check_batch(task: tuple[str, str, dt.datetime, list[str]]) -> tuple[ReconcileReport, set[str]]:
    """In a worker: check these certificates of the vault; the report part and the keys it saw."""
    run_id, vault, now, names = task
    reconciler = _worker
    assert reconciler is not None, "_start_worker runs first"
    report = ReconcileReport(run_id, now, (vault,))
    global _worker_states
    # Never flushed here: the parent sends what its workers held (a worker remembers states as it goes).
    held = DigestNotifier(reconciler.notifier, defer=False)
    sending, reconciler.notifier = reconciler.notifier, held
    try:
        run = _Run(reconciler, reconciler._pipeline_at(now, held), now, report, batch_writes=False)
        if _worker_states is None:
            _worker_states = reconciler.state.states()
        run._states = _worker_states
        source = reconciler.sources(vault)
        if vault not in _worker_listed:  # a fresh listing, once per run: the vault directory
            source.names()  # checks each folder once from here on
            _worker_listed.add(vault)
        try:
            seen = run.certificates(vault, source, names)
        finally:
            run._batches.close()
    finally:
        reconciler.notifier = sending
    report.notices.extend(held.pending)
    return report, seen


def _pool_context() -> Any:
    """Fork (workers inherit the replica factory and the imported modules); None where there is none."""
    import multiprocessing

    try:
        return multiprocessing.get_context("fork")
    except ValueError:  # pragma: no cover - Windows: no fork
        return None


@dataclass
class _Checked:
    """What one certificate's check gathered, for its findings and its snapshot."""

    vault: str
    latest: StoredVersion
    targets: Targets
    entries: list[AuditEntry]
    assessment: Assessment
    findings: list[ReconcileFinding] = field(default_factory=list)
    drift: str = "unknown"


@dataclass
class _Run:
    reconciler: Reconciler
    pipeline: Pipeline | None
    now: dt.datetime
    report: ReconcileReport
    progress: Progress = field(default_factory=lambda: NO_PROGRESS)
    _states: dict[tuple[str, str], str] | None = None  # the state store's, read once per run
    _trust_token: str | None = None  # the trust inputs of `_assessment_token`, computed once per run
    # the current batch's histories, read at once, or why they could not be (each certificate fails with it)
    _histories: dict[str, list[AuditEntry]] | Exception = field(default_factory=dict)
    _batches: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    worker_groups: dict[str, str] = field(default_factory=dict)  # lower-case -> as the targets spell it

    def discover(self) -> None:
        """Start a discovery for each worker group the checked certificates' targets name (one failure
        does not stop the others; it is in the report's failures)."""
        discovery = self.reconciler.discovery
        if discovery is None:
            return
        for _, group in sorted(self.worker_groups.items()):
            try:
                discovery.start(group)
            except CertsyncError as exc:
                self.report.failures.append(f"discovery of worker group {group} not started: {exc}")
            else:
                self.report.discoveries.append(group)

    # Group state and audit writes into one transaction per BATCH certificates. A pool worker does not:
    # its transaction would hold the database's write lock while it computes, and another worker's
    # transaction that read before it wrote would be refused (SQLite: "database is locked"). It holds its
    # writes instead (`buffered`) and writes them in one short transaction when it next reads the store:
    # written one at a time, workers wait on each other's lock (a quarter of their time at 10,000).
    batch_writes: bool = True

    # one vault

    def vault(self, vault: str) -> None:
        vault_key = certificate_key(vault, "*")
        try:
            source = self.reconciler.sources(vault)
            names = source.names()
        except Exception as exc:  # one vault's failure must not stop the others
            self._failed(vault, "*", "", vault_key, exc)
            return
        self._clear_failure(vault, "*", vault_key)
        self.progress.add_total(len(names))
        context = _pool_context() if self.reconciler.workers > 1 and self.reconciler.replica else None
        if context is not None and len(names) >= POOL_MIN:
            seen = self._pooled(context, vault, names)
        else:
            seen = self.certificates(vault, source, names, progress=self.progress)
            self._commit()
        self._prune(vault, seen)

    def certificates(
        self, vault: str, source: CertificateSource, names: list[str], progress: Progress = NO_PROGRESS
    ) -> set[str]:
        """Check these certificates of the vault, in order; the keys of those whose snapshots stay."""
        seen: set[str] = set()
        batch = _Prefetched({}, {})
        with one_pass(source):  # the pipeline reads these versions as this pass found them
            for index, name in enumerate(names):
                if index % BATCH == 0:
                    self._commit()
                    self._read_histories(names[index : index + BATCH])
                    batch = self._prefetch(source, names[index : index + BATCH])
                progress.advance(1)
                key = certificate_key(vault, name)
                targeted: bool | None = None  # None: not known, the tags could not be read
                try:
                    targeted = self._has_targets(batch, name)
                    if targeted:
                        seen.add(key)
                        self.report.certificates.append(key)
                        self._certificate(vault, batch, name, key)
                except Exception as exc:  # one certificate's failure must not stop the others
                    seen.add(key)
                    self._failed(vault, name, "", key, exc)
                    self._failure_snapshot(vault, name, exc, create=bool(targeted))
        return seen

    def _pooled(self, context: Any, vault: str, names: list[str]) -> set[str]:
        """`certificates` over batches in the reconciler's worker processes, merged in name order (the
        report is the one an in-process run makes). This process writes nothing meanwhile."""
        self._batches.close()
        tasks = [
            (self.report.run_id, vault, self.now, names[i : i + POOL_TASK]) for i in range(0, len(names), POOL_TASK)
        ]
        seen: set[str] = set()
        workers = min(self.reconciler.workers, len(tasks))
        with context.Pool(workers, initializer=_start_worker, initargs=(self.reconciler.replica,)) as pool:
            for task, (part, part_seen) in zip(tasks, pool.imap(_check_batch, tasks), strict=True):
                self.report.certificates.extend(part.certificates)
                self.report.findings.extend(part.findings)
                self.report.resolved.extend(part.resolved)
                self.report.processed.extend(part.processed)
                self.report.failures.extend(part.failures)
                for notice in part.notices:  # into the run's digest
                    self.reconciler.notifier.notify(notice)
                seen |= part_seen
                self.progress.advance(len(task[3]))
        self._states = None  # the workers changed them
        return seen

    def _commit(self) -> None:
        """End the current batch of state and audit writes (one transaction each), start the next."""
        self._batches.close()
        self._batches = contextlib.ExitStack()
        group = batched if self.batch_writes else buffered
        self._batches.enter_context(group(self.reconciler.state))
        self._batches.enter_context(group(self.reconciler.audit))

    def _read_histories(self, names: list[str]) -> None:
        try:
            self._histories = self.reconciler.audit.histories(names)
        except Exception as exc:  # the audit trail is down: each certificate of the batch fails with it
            self._histories = exc

    def _prefetch(self, source: CertificateSource, names: list[str]) -> _Prefetched:
        """Read a batch's tags, then the latest versions of those with targets, each with one call on the
        source, so that a remote source overlaps the reads (Key Vault: `concurrency` at a time)."""
        file = self.reconciler.targets_file
        in_file = {name for name in names if file is not None and file.for_certificate(name) is not None}
        tags = source.tags_many([name for name in names if name not in in_file])
        wanted = [name for name in names if name in in_file or _tagged(tags.get(name))]
        return _Prefetched(tags, source.latest_many(wanted))

    def _has_targets(self, source: _Prefetched, name: str) -> bool:
        """An own entry in the targets file, or a `certsync-*` tag (malformed ones included: they are a
        finding, not a reason to skip). The `"*"` entry alone targets nothing."""
        file = self.reconciler.targets_file
        if file is not None and file.for_certificate(name) is not None:
            return True
        return _tagged(source.tags(name))

    # one certificate

    def _certificate(self, vault: str, source: _Prefetched, name: str, key: str) -> None:
        latest = source.latest(name)
        if latest is None:
            raise _NoEnabledVersion(
                f"Key Vault {vault}: certificate {name} has targets but no enabled version; enable one, or "
                "remove its targets"
            )
        targets = resolve_targets(latest.name, tags=latest.tags, file=self.reconciler.targets_file)
        if targets.worker_group:
            self.worker_groups.setdefault(targets.worker_group.lower(), targets.worker_group)
        entries = self._history(vault, latest.name)
        findings: list[ReconcileFinding] = []
        assessment: Assessment | None = None
        if not _settled(entries, latest.version):
            finding, assessment, audited = self._unprocessed(vault, latest, key, targets, entries)
            findings.append(finding)
            if audited is not None:  # it ran the version: with what it audited
                entries = [*entries, *audited]
            elif self.pipeline is not None:  # it failed: read what it audited
                entries = self._history(vault, latest.name, fresh=True)
        token = self._assessment_token(latest, targets)
        if assessment is None:
            assessment = self._remembered_assessment(latest, key, token) or self._assess(latest, targets)
        self._remember_assessment(key, token, assessment)
        checked = _Checked(vault, latest, targets, entries, assessment, findings)
        self._expiry(checked, key)
        self._drift(checked, key)
        self._untracked(checked)
        self._clear_failure(vault, latest.name, key, latest.version)
        self.report.findings.extend(checked.findings)
        self.reconciler.state.put_snapshot(self._snapshot(checked))

    def _history(self, vault: str, name: str, *, fresh: bool = False) -> list[AuditEntry]:
        """The certificate's entries in this vault: from the trail as read for the current batch of
        certificates, or, `fresh`, read again (after the pipeline wrote to it)."""
        entries: Iterable[AuditEntry]
        if fresh:
            entries = self.reconciler.audit.history(name)
        elif isinstance(self._histories, Exception):
            raise self._histories
        else:
            entries = self._histories.get(partition(name), [])
        return [e for e in entries if not e.vault or e.vault.lower() == vault.lower()]

    def _state(self, key: str, code: str) -> str | None:
        if self._states is None:
            self._states = self.reconciler.state.states()
        return self._states.get((key.lower(), code))

    # the remembered assessment: a daily run with nothing new does not assess again

    def _assessment_token(self, latest: StoredVersion, targets: Targets) -> str | None:
        """What a Valid assessment of this version depended on, hashed: the version and its leaf, the trust
        store's roots, the hosts, the settings. None when revocation is checked: a CRL or OCSP answer can
        change the status any day, so the version is assessed on every run."""
        settings = self.reconciler.settings
        if settings.revocation != "off":
            return None
        if self._trust_token is None:
            roots = sorted(root.thumbprint for root in settings.trust.roots) if settings.trust is not None else []
            self._trust_token = json.dumps([roots, list(settings.allow_hosts), repr(settings.expiry)])
        facts = [latest.version.lower(), latest.thumbprint, self._trust_token, sorted(targets.hosts)]
        return hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:24]

    def _remembered_assessment(self, latest: StoredVersion, key: str, token: str | None) -> Assessment | None:
        """The Valid assessment an earlier run remembered (state `assessed`: "<token> <valid until>"),
        while its inputs are the same (`token`) and no date in its path or warning window has passed;
        else None (assess again). Only its status and TlsCertificateName are used (snapshot, findings)."""
        remembered = self._state(key, ASSESSED)
        if token is None or remembered is None:
            return None
        kept, _, until = remembered.partition(" ")
        try:
            until_at = parse_time(until) if kept == token else None
        except ValueError:  # not as this code writes it: assess again, and remember it right
            until_at = None
        if until_at is None or self.now >= until_at:
            return None
        name = str(TlsCertificateName.from_certificate(latest.bundle.leaf))
        return Assessment(VALID, name, (), (), self.now, "off")

    def _remember_assessment(self, key: str, token: str | None, assessment: Assessment) -> None:
        """Remember a fresh Valid assessment until the first date that could change it: the leaf entering
        the expiry warning window, or a certificate of its path expiring."""
        if token is None or assessment.status != VALID or not assessment.path:
            return
        leaf = assessment.path[0].certificate
        until = min(
            self.reconciler.settings.expiry.warning_starts(leaf.not_before, leaf.not_after),
            *(entry.certificate.not_after for entry in assessment.path),
        )
        state = f"{token} {format_time(until, timespec='seconds')}"
        if self._state(key, ASSESSED) != state:
            self.reconciler.state.put(key, ASSESSED, state, self.now)
            if isinstance(self._states, dict):
                self._states[(key.lower(), ASSESSED)] = state

    def _assess(self, latest: StoredVersion, targets: Targets) -> Assessment:
        settings = self.reconciler.settings
        return assess(
            latest.bundle,
            hosts=targets.hosts,
            trust=settings.trust,
            at=self.now,
            revocation=settings.revocation,
            fetcher=settings.fetcher(),
            cache=self.reconciler.cache,
            expiry=settings.expiry,
        )

    def _unprocessed(
        self, vault: str, latest: StoredVersion, key: str, targets: Targets, entries: list[AuditEntry]
    ) -> tuple[ReconcileFinding, Assessment | None, list[AuditEntry] | None]:
        """The finding, the pipeline's assessment of the version when it is the one `_assess` would make
        (same instant, trust, revocation, hosts, warning days and cache): not assessed twice, and the entries
        the pipeline added to the certificate's `entries` (None when it did not run or failed)."""
        assessment = None
        audited = None
        what = f"{latest.name} version {latest.version} was never processed (no Key Vault event for it)"
        details = FindingDetails(outcome=None)
        severity = "warning"
        if self.pipeline is None:
            summary = f"{what}; deliver its event, or run the reconciliation with the pipeline"
        else:
            try:
                outcome = self.pipeline.process(_synthesized_event(vault, latest, self.now), history=entries)
            except Exception as exc:  # audited by the pipeline; the event is tried again tomorrow
                reason = _reason(exc)
                summary = f"{what}; running it through the pipeline failed: {reason}"
                self.report.failures.append(f"{key}: version {latest.version}: {reason}")
                details["outcome"] = "failed"
            else:
                audited = outcome.audited
                job = outcome.request.job_id if outcome.request is not None else None
                details = FindingDetails(outcome=outcome.outcome, job_id=job, correlation_id=outcome.correlation_id)
                if self._same_assessment(outcome.targets, targets):
                    assessment = outcome.assessment
                summary = f"{what}; reconciliation ran it: {outcome.outcome}" + (
                    f" ({outcome.reason})" if outcome.reason else ""
                )
                severity = "info" if outcome.outcome in ("queued", "duplicate", "nothing-to-change") else "warning"
                self.report.processed.append(
                    ProcessedVersion(
                        vault=vault,
                        certificate=latest.name,
                        version=latest.version,
                        outcome=outcome.outcome,
                        job_id=job,
                        correlation_id=outcome.correlation_id,
                    )
                )
        finding = self._track(
            vault, latest.name, key, "unprocessed", latest.version.lower(), severity, summary, latest.version, details
        )
        return finding, assessment, audited

    def _same_assessment(self, used: Targets | None, targets: Targets) -> bool:
        """Whether the pipeline assessed as `_assess` would: its settings (at = now) and cache, these hosts."""
        if self.pipeline is None or used is None or used.hosts != targets.hosts:
            return False
        ours, theirs = self.reconciler.settings, self.pipeline.settings
        return (
            self.pipeline.cache is self.reconciler.cache
            and theirs.trust is ours.trust
            and theirs.revocation == ours.revocation
            and theirs.allow_hosts == ours.allow_hosts
            and theirs.expiry == ours.expiry
            and theirs.at == self.now
        )

    def _expiry(self, checked: _Checked, key: str) -> None:
        latest = checked.latest
        not_after = latest.bundle.leaf.not_after
        days = (not_after - self.now).total_seconds() / 86400
        state = expiry_state(latest.bundle.leaf.not_before, not_after, self.now, self.reconciler.settings.expiry)
        if state == OK:
            summary = (
                f"{latest.name} version {latest.version} is valid until {format_time(not_after, timespec='seconds')}"
            )
            self._track(checked.vault, latest.name, key, "expiry", OK, "info", summary, latest.version)
            return
        when = f"expired {-days:.0f} day(s) ago" if days <= 0 else f"expires in {days:.0f} day(s)"
        summary = (
            f"{latest.name} version {latest.version} {when} ({format_time(not_after, timespec='seconds')}); "
            "renew it in Key Vault"
        )
        critical = state in (EXPIRED, CRITICAL)
        details = FindingDetails(
            not_after=format_time(not_after, timespec="seconds"), days_left=round(days, 1), expiry_state=state
        )
        checked.findings.append(
            self._track(
                checked.vault,
                latest.name,
                key,
                "expiry",
                state,
                "critical" if critical else "warning",
                summary,
                latest.version,
                details,
            )
        )

    def _drift(self, checked: _Checked, key: str) -> None:
        latest = checked.latest
        checked.drift, items, entry = drift_of(checked.entries, latest, checked.targets, checked.vault, self.now)
        if checked.drift in ("unknown", "pending"):
            return  # nothing known to compare: the remembered state stays as it was
        if checked.drift == OK:
            summary = f"{latest.name}: the last runbook inventory matches version {latest.version}"
            self._track(checked.vault, latest.name, key, "drift", OK, "info", summary, latest.version)
            return
        state = "drift:" + hashlib.sha256(json.dumps(sorted(items)).encode()).hexdigest()[:12]
        shown = "; ".join(items[:3]) + (f"; and {len(items) - 3} more" if len(items) > 3 else "")
        summary = f"{latest.name}: Exchange is not using version {latest.version} everywhere: {shown}"
        details = FindingDetails(drift=items, inventory_job_id=entry.details.get("job_id") if entry else None)
        checked.findings.append(
            self._track(checked.vault, latest.name, key, "drift", state, "critical", summary, latest.version, details)
        )

    def _untracked(self, checked: _Checked) -> None:
        """Findings for the status page that the reconciliation does not notify: a blocked plan and a failed
        job were notified where they happened; an assessment no longer Valid is shown, not announced daily
        (under hard revocation it follows the CRL servers' availability)."""
        latest, vault = checked.latest, checked.vault

        def add(code: str, severity: str, summary: str, state: str) -> None:
            checked.findings.append(
                ReconcileFinding(vault, latest.name, code, state, severity, summary, latest.version)
            )

        settled = [e for e in checked.entries if e.kind in SETTLED_KINDS and _same(e.version, latest.version)]
        last = settled[-1] if settled else None
        if last is not None and last.kind == "blocked":
            if last.details.get("transient"):  # retried by itself (shared.pipeline.blocks)
                add("blocked", "warning", f"version {latest.version} is retried: {last.summary}", "retrying")
            else:
                add("blocked", "critical", f"version {latest.version} was not queued: {last.summary}", "blocked")
        elif last is not None and last.kind in ("awaiting-approval", "waiting-for-window"):
            severity = "warning" if last.kind == "awaiting-approval" else "info"
            add(last.kind, severity, f"version {latest.version} waits: {last.summary}", last.kind)
        status = checked.assessment.status
        if status != VALID:
            errors = [f.message for f in checked.assessment.findings if f.severity == "error"]
            severity = "warning" if status in checked.targets.allow_status else "critical"
            summary = f"the assessment is {status} now" + (f": {errors[0]}" if errors else "")
            add("assessment", severity, summary, status)
        for server in server_outcomes(checked.entries, checked.targets.servers):
            if server["outcome"] in ("failed", "rolled-back"):
                summary = f"{server['server']}: the last remediation {server['outcome']} (job {server['job_id']})"
                add("remediation", "critical", summary, server["outcome"])

    # tracked states

    def _track(
        self,
        vault: str,
        name: str,
        key: str,
        code: str,
        state: str,
        severity: str,
        summary: str,
        version: str = "",
        details: FindingDetails | None = None,
    ) -> ReconcileFinding:
        """The finding, notified, audited and remembered when its state changed. Returns it either way."""
        store = self.reconciler.state
        previous = self._state(key, code)
        finding = ReconcileFinding(
            vault, name, code, state, severity, summary, version, False, FindingDetails(**(details or {}))
        )
        if state == (previous or OK):  # never seen counts as "ok": a first all-clear is not news
            return finding
        if state == OK:
            notice_kind = "resolved"
            finding = dataclasses.replace(finding, summary=f"resolved ({code}): {summary}")
        else:
            notice_kind = NOTICE_KINDS[code]
        notice_details: ReconcileNoticeDetails = {
            "finding": code,
            "state": state,
            "previous": previous,
            "severity": "good" if state == OK else severity,  # shared.notify.webhooks colours a resolved notice good
            **finding.details,
        }
        notice = Notice(notice_kind, name, vault, version, self.report.run_id, finding.summary, notice_details)

        def remember() -> None:
            self.reconciler.audit.record(
                AuditEntry(
                    certificate=partition(name) if name != "*" else "-",
                    kind="reconcile-finding",
                    correlation_id=self.report.run_id,
                    summary=finding.summary,
                    vault=vault,
                    version=version,
                    details=notice_details,
                )
            )
            store.put(key, code, state, self.now)
            if self._states is not None:
                self._states[(key.lower(), code)] = state

        notifier = self.reconciler.notifier
        try:
            if isinstance(notifier, DigestNotifier):
                notifier.hold(notice, remember)  # remembered once the run's notices are sent
            else:
                notifier.notify(notice)
                remember()
        except Exception as exc:  # not remembered: the next run notifies again
            log.error("reconciliation notice for %s not sent: %s", key, _reason(exc))
            self.report.failures.append(f"{key}: the {notice_kind} notice was not sent: {_reason(exc)}")
            return finding
        finding = dataclasses.replace(finding, changed=True)
        if state == OK:
            self.report.resolved.append(finding)
        return finding

    def _failed(self, vault: str, name: str, version: str, key: str, exc: BaseException) -> None:
        reason = _reason(exc)
        kind = _failure_kind(exc)
        where = f"Key Vault {vault}" if name == "*" else f"{vault}/{name}"
        log.warning("reconciliation of %s failed: %s", where, reason, exc_info=not isinstance(exc, CertsyncError))
        self.report.failures.append(f"{key}: {reason}")
        summary = f"{where} could not be checked: {reason}"
        try:
            finding = self._track(
                vault, name, key, "failed", kind, "critical", summary, version, FindingDetails(error=kind)
            )
        except Exception as again:  # the state store or the audit trail is down too: the log has it
            log.error("reconciliation could not record the failure of %s: %s", key, _reason(again))
            finding = ReconcileFinding(vault, name, "failed", kind, "critical", summary, version)
        self.report.findings.append(finding)

    def _clear_failure(self, vault: str, name: str, key: str, version: str = "") -> None:
        where = f"Key Vault {vault}: listing the certificates" if name == "*" else f"{vault}/{name}"
        self._track(vault, name, key, "failed", OK, "info", f"{where} is checked again", version)

    # snapshots

    def _snapshot(self, checked: _Checked) -> StatusSnapshot:
        latest = checked.latest
        leaf = latest.bundle.leaf
        days = (leaf.not_after - self.now).total_seconds() / 86400
        findings = [
            SnapshotFinding(code=f.code, severity=f.severity, summary=f.summary)
            for f in sorted(checked.findings, key=lambda f: -FINDING_SEVERITIES.index(f.severity))
        ]
        policy = self._policy_findings(latest)
        findings += policy
        forecast = forecast_for(leaf, self.now.date())
        windows = self.reconciler.settings.expiry.days(leaf.not_after - leaf.not_before)
        return {
            "expiry_windows": [round(windows[0], 2), round(windows[1], 2)],
            "forecast": SnapshotForecast(
                ca=forecast.ca,
                as_of=forecast.as_of.isoformat() if forecast.as_of else None,
                issuer_strings=list(forecast.issuer_strings),
                note=forecast.note,
            ),
            "schema": SNAPSHOT_SCHEMA,
            "certificate": latest.name,
            "vault": checked.vault,
            "version": latest.version,
            "thumbprint": latest.thumbprint,
            "tls_certificate_name": checked.assessment.tls_certificate_name,
            "status": checked.assessment.status,
            "not_after": format_time(leaf.not_after, timespec="seconds"),
            "days_left": round(days, 1),
            "expiry_state": expiry_state(leaf.not_before, leaf.not_after, self.now, self.reconciler.settings.expiry),
            "drift": checked.drift,
            "servers": server_outcomes(checked.entries, checked.targets.servers),
            "proof": last_proof(checked.entries),
            "findings": findings,
            "attention": max(
                [attention(checked.findings)] + ["warning" for f in policy if f["severity"] == "warning"],
                key=lambda a: (a != OK, FINDING_SEVERITIES.index(a) if a in FINDING_SEVERITIES else 0),
            ),
            "checked_at": format_time(self.now, timespec="seconds"),
        }

    def _policy_findings(self, latest: StoredVersion) -> list[SnapshotFinding]:
        """The issuance policy's problems (`certsync doctor --policies`), shown before the renewal they
        would break; not notified. A policy error is a warning here, a policy warning information."""
        if latest.policy is None:
            return []
        leaf = latest.bundle.leaf
        found = check_policy(
            f"{latest.vault}/{latest.name}",
            latest.policy,
            lifetime=leaf.not_after - leaf.not_before,
            expiry=self.reconciler.settings.expiry,
        )
        return [
            SnapshotFinding(
                code=f.code,
                severity="warning" if f.severity == "error" else "info",
                summary=f"Key Vault policy: {f.message}; fix: {f.fix}",
            )
            for f in found
        ]

    def _failure_snapshot(self, vault: str, name: str, exc: BaseException, *, create: bool) -> None:
        """The last good snapshot with the failure on top (the page shows what is known, and that the
        check failed), or, with `create` (it has targets), a bare one when it was never checked."""
        try:
            previous = self.reconciler.state.snapshot(vault, name)
            failed = SnapshotFinding(code="failed", severity="critical", summary=f"not checked: {_reason(exc)}")
            snapshot: StatusSnapshot
            if previous is not None:
                kept = [f for f in previous.get("findings", []) if f.get("code") != "failed"]
                snapshot = {**previous, "findings": [failed, *kept], "attention": "critical"}
            elif not create:
                return
            else:
                snapshot = {
                    "schema": SNAPSHOT_SCHEMA,
                    "certificate": name,
                    "vault": vault,
                    "version": None,
                    "thumbprint": None,
                    "tls_certificate_name": None,
                    "status": None,
                    "not_after": None,
                    "days_left": None,
                    "expiry_state": "unknown",
                    "drift": "unknown",
                    "servers": [],
                    "findings": [failed],
                    "attention": "critical",
                    "checked_at": format_time(self.now, timespec="seconds"),
                }
            self.reconciler.state.put_snapshot(snapshot)
        except Exception as again:
            log.error("status snapshot of %s/%s not written: %s", vault, name, _reason(again))

    def _prune(self, vault: str, seen: set[str]) -> None:
        """Snapshots of this vault's certificates that are gone or lost their targets (read by key only: a
        fleet's snapshots are tens of MiB of JSON)."""
        try:
            prefix = certificate_key(vault, "")
            for key in sorted(self.reconciler.state.snapshot_keys()):
                if key.startswith(prefix) and key not in seen:
                    self.reconciler.state.delete_snapshot(vault, key[len(prefix) :])
        except Exception as exc:
            log.error("stale status snapshots of %s not removed: %s", vault, _reason(exc))


class _NoEnabledVersion(CertsyncError):
    """A certificate with targets whose versions are all disabled."""


# --- pure helpers --------------------------------------------------------------------------------


@dataclass
class _Prefetched:
    """One batch's tags and latest versions as `_Run._prefetch` read them; a read's error is raised where
    the certificate is checked, as if it had been read there."""

    _tags: Mapping[str, dict[str, str] | Exception]
    _latest: Mapping[str, StoredVersion | Exception | None]

    def tags(self, name: str) -> dict[str, str]:
        value = self._tags[name]
        if isinstance(value, Exception):
            raise value
        return value

    def latest(self, name: str) -> StoredVersion | None:
        value = self._latest[name]
        if isinstance(value, Exception):
            raise value
        return value


def _tagged(tags: Mapping[str, str] | Exception | None) -> bool:
    """Whether these tags give targets (a `certsync-*` tag); False for a read that failed."""
    if tags is None or isinstance(tags, Exception):
        return False
    return any(str(tag).strip().lower().startswith(TAG_PREFIX) for tag in tags)


def expiry_state(
    not_before: dt.datetime, not_after: dt.datetime, now: dt.datetime, thresholds: ExpiryThresholds | None = None
) -> str:
    """ "ok", "warning", "critical" or "expired": where `now` is in the certificate's own lifetime."""
    return (thresholds or ExpiryThresholds()).state(not_before, not_after, now)


def attention(findings: Iterable[ReconcileFinding]) -> str:
    """The worst severity among the findings: "critical", "warning", else "ok" (info is no cause)."""
    worst = max((FINDING_SEVERITIES.index(f.severity) for f in findings), default=0)
    return FINDING_SEVERITIES[worst] if worst else OK


def _same(a: str, b: str) -> bool:
    return a.lower() == b.lower()


def _settled(entries: Iterable[AuditEntry], version: str) -> bool:
    return any(e.kind in SETTLED_KINDS and _same(e.version, version) for e in entries)


def _synthesized_event(vault: str, latest: StoredVersion, now: dt.datetime) -> KeyVaultEvent:
    """The CertificateNewVersionCreated event Key Vault would have sent for the version."""
    return version_event(vault, latest, now, f"reconcile-{latest.version}")


def drift_of(
    entries: list[AuditEntry], latest: StoredVersion, targets: Targets, vault: str, now: dt.datetime
) -> tuple[str, list[str], AuditEntry | None]:
    """("ok" | "drift" | "unknown" | "pending", what drifted (one line each), the job-result entry used).

    Pending: the latest version's own job was queued or started less than `PENDING_GRACE` ago and has
    no result yet, so an older inventory is expected to differ."""
    own_job = job_id(vault, latest.name, latest.version)
    results = [e for e in entries if e.kind == "job-result"]
    if not any(e.details.get("job_id") == own_job for e in results):
        started = [
            e for e in entries if e.kind in ("job-queued", "job-started") and (e.details.get("job_id") == own_job)
        ]
        if started and now - started[-1].at < PENDING_GRACE:
            return "pending", [], None
    for entry in reversed(results):
        result = entry.details.get("result")
        inventory = result.get("inventory") if isinstance(result, dict) else None
        if isinstance(inventory, list):
            items = _inventory_drift([i for i in inventory if isinstance(i, dict)], latest, targets)
            return ("drift" if items else OK), items, entry
    return "unknown", [], None


def _inventory_drift(inventory: list[dict], latest: StoredVersion, targets: Targets) -> list[str]:
    leaf = latest.bundle.leaf
    current = TlsCertificateName.from_certificate(leaf)
    thumbprint = leaf.thumbprint.upper()
    drift = []
    for item in inventory:
        kind = item.get("kind")
        if kind not in CONNECTOR_KINDS:
            continue
        where = f"{kind} {item.get('object')}" + (f" on {item['server']}" if item.get("server") else "")
        value = item.get("tls_certificate_name")
        if not isinstance(value, str) or not value.strip():
            drift.append(f"{where} has no TlsCertificateName")
        elif kind == "exo-inbound-connector" and "<S>" not in value.upper():
            if not _domain_selects(value, leaf.subject.first("2.5.4.3"), leaf.dns_names):
                drift.append(f"{where} expects certificate domain {value}")
        else:
            try:
                selects = TlsCertificateName.parse(value, strict=False).selects(leaf)
            except CertsyncError:
                selects = False
            if not selects:
                drift.append(f"{where} uses {value}, not {current}")
    certificates = [i for i in inventory if i.get("kind") == "certificate"]
    for server in targets.servers:
        held = [
            i
            for i in certificates
            if str(i.get("server") or "").upper() == server
            and str(i.get("thumbprint") or i.get("object") or "").upper() == thumbprint
        ]
        if not held:
            drift.append(f"{server} does not have certificate {thumbprint}")
        elif not any(i.get("status") == VALID for i in held):
            drift.append(f"{server} has certificate {thumbprint} with status {held[0].get('status')}")
    return drift


def _domain_selects(value: str, common_name: str | None, dns_names: Iterable[str]) -> bool:
    """Whether Exchange Online's TlsSenderCertificateName `value` (a domain, maybe `*.domain`) covers
    the certificate's CN or one of its DNS names."""
    wanted = value.strip().lower().rstrip(".")
    names = {n.lower().rstrip(".") for n in (common_name, *dns_names) if n}
    if wanted in names:
        return True
    if wanted.startswith("*."):
        suffix = wanted[1:]
        return any(n.endswith(suffix) and "." not in n[: -len(suffix)] for n in names)
    return False


def last_proof(entries: list[AuditEntry]) -> list[dict[str, Any]]:
    """The proof steps (per server) of the newest job-result that has any: what the status page lists."""
    for entry in reversed(entries):
        proof = entry.details.get("proof") if entry.kind == "job-result" else None
        if isinstance(proof, list) and proof:
            at = format_time(entry.at, timespec="seconds")
            return [{**p, "at": at, "job_id": entry.details.get("job_id")} for p in proof if isinstance(p, dict)]
    return []


def server_outcomes(entries: list[AuditEntry], servers: Iterable[str]) -> list[ServerOutcome]:
    """Each server's last remediation (certsync.status/1 `servers`), newest audit entry first: a job
    result decides (per contracts: failed if a step on the server failed, else rolled-back, else
    succeeded); a queued or started job without a result after it is pending; else never."""
    jobs = [e for e in entries if e.kind in ("job-queued", "job-started", "job-result")]
    thumbprints = {e.details.get("job_id"): e.details.get("thumbprint") for e in jobs if e.kind == "job-queued"}
    outcomes = []
    for server in servers:
        row = ServerOutcome(server=server, outcome="never", at=None, job_id=None, thumbprint=None)
        for entry in reversed(jobs):
            job = entry.details.get("job_id")
            if entry.kind != "job-result":
                row.update(
                    {
                        "outcome": "pending",
                        "at": format_time(entry.at, timespec="seconds"),
                        "job_id": job,
                        "thumbprint": thumbprints.get(job),
                    }
                )
                break
            outcome = _server_outcome(entry.details, server)
            if outcome is None:
                continue
            result = entry.details.get("result")
            certificate = result.get("certificate") if isinstance(result, dict) else None
            thumbprint = certificate.get("thumbprint") if isinstance(certificate, dict) else None
            row.update(
                {
                    "outcome": outcome,
                    "at": format_time(entry.at, timespec="seconds"),
                    "job_id": job,
                    "thumbprint": thumbprint or thumbprints.get(job),
                }
            )
            break
        outcomes.append(row)
    return outcomes


def _server_outcome(details: Mapping[str, Any], server: str) -> str | None:
    """A server's outcome in one job-result entry; None when the job says nothing about it (what-if)."""
    result = details.get("result")
    if not isinstance(result, dict):
        return "failed"  # the runbook ended without its result line: nothing is known to have worked
    status = result.get("status")
    if status == "what-if":
        return None
    steps = result.get("steps")
    if not isinstance(steps, list):
        steps = []
    if any(
        isinstance(s, dict) and str(s.get("server") or "").upper() == server and s.get("outcome") == "failed"
        for s in steps
    ):
        return "failed"
    if status == "rolled-back":
        return "rolled-back"
    return "succeeded" if status == "succeeded" else "failed"


def _failure_kind(exc: BaseException) -> str:
    if isinstance(exc, SourceError):
        return exc.kind
    if isinstance(exc, TargetsError):
        return "targets"
    if isinstance(exc, _NoEnabledVersion):
        return "no-enabled-version"
    if isinstance(exc, StorageError):
        return "storage"
    return "bad-input" if isinstance(exc, CertsyncError) else "error"


def _reason(exc: BaseException) -> str:
    """One line for people: a CertsyncError's own message (written to be shown), else only the type,
    since an unexpected exception's text may quote anything."""
    if isinstance(exc, CertsyncError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"internal error ({type(exc).__name__}); see the Function's log"
