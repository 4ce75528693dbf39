"""Discovery: the read-only runbook that reads what Exchange has (`certsync.inventory/1`, spec
exchange-inventory §1), started and tracked through the Automation port, its result kept per worker group.

- `Discovery.start(worker_group)` starts the discovery runbook (DISCOVERY_RUNBOOK, default
  Get-CertsyncInventory) on the worker group. The job's name is derived from the worker group and the hour
  (`discovery_job_name`), so a retry, a second click or a second reconciliation in the same hour finds the
  job it started instead of starting another. With a tracking queue, a `certsync.discovery-track/1`
  message follows the job (`Discovery.track`, on TRACKING_QUEUE next to remediation's messages).
- `Discovery.poll` looks at the job once; when it has ended, its last Output line is read, checked to be
  an inventory-shaped JSON object (`check_inventory`) and by the `validate` seam (the full validation of
  `shared.exchange.inventory` once it is wired in), and stored in the `InventoryStore`: the latest
  inventory per worker group, with its collection time and its `errors`.
- `Discovery.run` starts and waits (the CLI), `import_inventory` stores a file an admin saved by hand.
- Once a job's inventory is stored, `on_stored` lets the pipeline plan the versions that waited for it.
- `InventoryRecord` and the `InventoryStore` port are `shared.pipeline.inventories`' (the pipeline reads them).

Audited under the partition `discovery/<worker group>`: discovery-started, discovery-result (stored),
discovery-failed (the job failed, ended without a usable inventory, or could not be read); a failure is
also notified. Inventories carry no secrets (the runbook reads certificate metadata, never keys).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.errors import CertsyncError
from shared.pipeline.audit import AuditEntry, AuditLog
from shared.pipeline.inventories import (
    DEFAULT_MAX_AGE,
    InventoryError,
    InventoryRecord,
    InventoryStore,
    audit_partition,
    parse_time_or_none,
)
from shared.pipeline.process import LogNotifier, Notice, Notifier
from shared.remediation.automation import FAILED_STATES, Automation, AutomationError, AutomationJob
from shared.remediation.context import RemediationSettings, error_text, one_line, poll_delay, retry_delay
from shared.remediation.messages import MessageQueue
from shared.times import Clock, format_time, utc_now

log = logging.getLogger("certsync")

INVENTORY_SCHEMA = "certsync.inventory/1"
TRACK_SCHEMA = "certsync.discovery-track/1"
DEFAULT_DISCOVERY_RUNBOOK = "Get-CertsyncInventory"
JOB_BUCKET = dt.timedelta(hours=1)  # one discovery job per worker group and hour
LIST_KEYS = ("servers", "certificates", "send_connectors", "receive_connectors")
OBJECT_KEYS = ("hybrid_configuration", "exo")  # an object, or null
EXO_KEYS = ("inbound_connectors", "outbound_connectors", "accepted_domains")
INVENTORY_KEYS = (*LIST_KEYS, *OBJECT_KEYS, "errors")
_WORKER_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._()-]{0,127}$")

Validate = Callable[[dict[str, Any]], object]


def check_worker_group(name: str, what: str = "worker group") -> str:
    """A Hybrid Runbook Worker group name as Automation allows it (letters, digits, . _ - ( ) and spaces)."""
    if not isinstance(name, str) or not _WORKER_GROUP.match(name.strip()):
        raise CertsyncError(
            f"{what} {name!r}: not a Hybrid Runbook Worker group name; give the group's name as the"
            " Automation account lists it (letters, digits, . _ - and spaces)"
        )
    return name.strip()


def discovery_job_name(worker_group: str, at: dt.datetime, bucket: dt.timedelta = JOB_BUCKET) -> str:
    """The Automation job name (a GUID) for discovering `worker_group` in the time bucket holding `at`:
    the same within one bucket, so a retry finds the job instead of starting a second one."""
    seconds = int(bucket.total_seconds())
    if seconds <= 0:
        raise CertsyncError(f"discovery job bucket {bucket}: give a positive duration")
    slot = int(at.astimezone(dt.timezone.utc).timestamp()) // seconds
    digest = hashlib.sha256(f"certsync-discovery\n{worker_group.strip().lower()}\n{seconds}\n{slot}".encode())
    return str(uuid.UUID(hex=digest.hexdigest()[:32]))


def check_inventory(data: object, where: str) -> dict[str, Any]:
    """`data` if it is shaped like certsync.inventory/1 (a JSON object with the document's keys, lists
    where lists belong); else an `InventoryError` naming `where` and the key. A single object where a
    list belongs (how ConvertTo-Json writes a one-element list) is taken as that list. The full check
    (properties, values) is `shared.exchange.inventory`'s, passed in as `validate`."""
    if not isinstance(data, dict):
        raise InventoryError(f"{where}: not a JSON object; give the certsync.inventory/1 document")
    schema = data.get("schema")
    if schema is not None and schema != INVENTORY_SCHEMA:
        raise InventoryError(f"{where}: schema {schema!r} is not {INVENTORY_SCHEMA}")
    if not any(key in data for key in INVENTORY_KEYS):
        raise InventoryError(
            f"{where}: none of the inventory's keys ({', '.join(INVENTORY_KEYS)}); is this an inventory?"
        )
    document = dict(data)
    for key in (*LIST_KEYS, "errors"):
        document[key] = _objects(document.get(key), f"{where}: {key}")
    for key in OBJECT_KEYS:
        value = document.get(key)
        if value is not None and not isinstance(value, dict):
            raise InventoryError(f"{where}: {key} is not an object or null")
    if isinstance(document.get("exo"), dict):
        exo = dict(document["exo"])
        for key in EXO_KEYS:
            exo[key] = _objects(exo.get(key), f"{where}: exo.{key}")
        document["exo"] = exo
    for key in ("worker_group", "collected_at"):
        if key in document and document[key] is not None and not isinstance(document[key], str):
            raise InventoryError(f"{where}: {key} is not a string")
    if document.get("collected_at") and parse_time_or_none(document["collected_at"]) is None:
        raise InventoryError(f"{where}: collected_at {document['collected_at']!r} is not an ISO 8601 time")
    return document


def _objects(value: object, what: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise InventoryError(f"{what} is not a list of objects")
    return list(value)


def parse_inventory(text: str, where: str) -> dict[str, Any]:
    """The inventory on the last non-empty line of `text` (a job's Output), or the whole of `text` when
    it is one JSON document over several lines (a file saved with ConvertTo-Json)."""
    text = text.lstrip("\ufeff")
    lines = [line.strip().lstrip("\ufeff") for line in text.splitlines() if line.strip()]
    if not lines:
        raise InventoryError(f"{where}: empty; there is no certsync.inventory/1 document")
    for candidate in (text, lines[-1]):
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        return check_inventory(data, where)
    raise InventoryError(f"{where}: not JSON; there is no certsync.inventory/1 document")


def make_record(
    document: dict[str, Any],
    worker_group: str,
    *,
    where: str,
    now: dt.datetime,
    collected_fallback: dt.datetime,
    source: str,
    automation_job: str = "",
    validate: Validate | None = None,
) -> InventoryRecord:
    """The record for a checked document: the worker group must match the document's own (if it names
    one), `validate` must accept it; `collected_at` is the document's, else `collected_fallback`."""
    named = document.get("worker_group")
    if named and str(named).strip().lower() != worker_group.strip().lower():
        raise InventoryError(
            f"{where}: the inventory is of worker group {named!r}, not {worker_group!r}; store it under its own group"
        )
    if validate is not None:
        try:
            validate(document)
        except CertsyncError as exc:
            raise InventoryError(f"{where}: {exc}") from None
    collected = parse_time_or_none(document.get("collected_at") or "") or collected_fallback
    if collected.tzinfo is None:
        collected = collected.replace(tzinfo=dt.timezone.utc)
    return InventoryRecord(worker_group, collected, now, document, source, automation_job)


def import_inventory(
    store: InventoryStore,
    text: str,
    worker_group: str,
    *,
    where: str,
    now: dt.datetime,
    collected_fallback: dt.datetime,
    validate: Validate | None = None,
) -> InventoryRecord:
    """Store an inventory an admin saved by hand (`certsync discover --import`)."""
    worker_group = check_worker_group(worker_group, "--worker-group")
    document = parse_inventory(text, where)
    record = make_record(
        document,
        worker_group,
        where=where,
        now=now,
        collected_fallback=collected_fallback,
        source="import",
        validate=validate,
    )
    store.put(record)
    return record


# --- the job ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiscoverySettings:
    """How discovery runs; delays come from `timing` (remediation's poll and retry delays)."""

    runbook: str = DEFAULT_DISCOVERY_RUNBOOK  # DISCOVERY_RUNBOOK
    max_age: dt.timedelta = DEFAULT_MAX_AGE  # CERTSYNC_INVENTORY_MAX_AGE_HOURS
    bucket: dt.timedelta = JOB_BUCKET
    give_up_after: dt.timedelta = dt.timedelta(hours=6)
    poll_failures: int = 6
    timing: RemediationSettings = field(default_factory=RemediationSettings)


@dataclass(frozen=True)
class DiscoveryOutcome:
    """What a start, a poll or a tracking message did."""

    outcome: str  # started, found, running, stored, failed, malformed, retry, gave-up, rejected
    worker_group: str
    automation_job: str
    reason: str
    status: str = ""  # the Automation job's status, when seen
    record: InventoryRecord | None = None
    delay: int = 0

    @property
    def ok(self) -> bool:
        return self.outcome in ("started", "found", "running", "stored", "retry")

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "worker_group": self.worker_group,
            "automation_job": self.automation_job,
            "status": self.status,
            "reason": self.reason,
            "inventory": self.record.meta() if self.record is not None else None,
        }


@dataclass(frozen=True)
class TrackDiscovery:
    """The `certsync.discovery-track/1` message that follows one discovery job on TRACKING_QUEUE."""

    worker_group: str
    automation_job: str
    started_at: dt.datetime
    polls: int = 0
    failures: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "schema": TRACK_SCHEMA,
                "worker_group": self.worker_group,
                "automation_job": self.automation_job,
                "started_at": format_time(self.started_at, "seconds"),
                "polls": self.polls,
                "failures": self.failures,
            }
        )


def is_discovery_message(text: str) -> bool:
    """Whether a TRACKING_QUEUE message is discovery's (else it is remediation's certsync.track/1)."""
    return f'"{TRACK_SCHEMA}"' in text[:200]


def parse_track_discovery(text: str) -> TrackDiscovery:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise CertsyncError("discovery tracking message: not JSON; it is not retried") from None
    if not isinstance(data, dict) or data.get("schema") != TRACK_SCHEMA:
        raise CertsyncError(f"discovery tracking message: not {TRACK_SCHEMA}; it is not retried")
    started = parse_time_or_none(str(data.get("started_at") or ""))
    polls, failures = data.get("polls", 0), data.get("failures", 0)
    if started is None or not isinstance(polls, int) or not isinstance(failures, int):
        raise CertsyncError("discovery tracking message: started_at, polls or failures malformed; it is not retried")
    name = str(data.get("automation_job") or "")
    try:
        uuid.UUID(name)
    except ValueError:
        raise CertsyncError(f"discovery tracking message: automation_job {name!r} is not a GUID") from None
    return TrackDiscovery(check_worker_group(str(data.get("worker_group") or "")), name, started, polls, failures)


@dataclass
class Discovery:
    """Starts and follows discovery jobs and stores what they found (see the module docstring)."""

    automation: Automation
    store: InventoryStore
    audit: AuditLog
    settings: DiscoverySettings = field(default_factory=DiscoverySettings)
    notifier: Notifier = field(default_factory=LogNotifier)
    tracking: MessageQueue | None = None  # TRACKING_QUEUE; None: the caller polls (the CLI)
    validate: Validate | None = None  # the full certsync.inventory/1 check (shared.exchange.inventory)
    clock: Clock = utc_now
    # Called with each inventory a job stored: the pipeline plans the versions waiting for it
    # (`Pipeline.resume`). A failure there is logged; the inventory stays stored.
    on_stored: Callable[[InventoryRecord], object] | None = None

    # starting

    def start(self, worker_group: str) -> DiscoveryOutcome:
        """Start (or find, within the hour) the discovery job of `worker_group`; an AutomationError
        (transient or not) is audited as discovery-failed and raised for the caller to report."""
        worker_group = check_worker_group(worker_group)
        now = self.clock()
        name = discovery_job_name(worker_group, now, self.settings.bucket)
        try:
            parameters = {"WorkerGroup": worker_group}
            job = self.automation.start_job(name, self.settings.runbook, parameters, run_on=worker_group)
        except AutomationError as exc:
            reason = f"discovery of {worker_group} not started: {exc}"
            self._failed(worker_group, name, reason, {"stage": "start", "status": exc.status, "code": exc.code})
            raise
        how = "created" if job.created else "found (started earlier this hour; not started again)"
        summary = f"discovery job {name} {how}: runbook {self.settings.runbook} on worker group {worker_group}"
        if job.created:
            self._record(worker_group, "discovery-started", summary, {"automation_job": name, "run_on": worker_group})
        delay = 0
        if self.tracking is not None and job.created:
            delay = poll_delay(0, self.settings.timing)
            self.tracking.send(TrackDiscovery(worker_group, name, now).to_json(), delay)
        log.info("%s", summary)
        return DiscoveryOutcome(
            "started" if job.created else "found", worker_group, name, summary, job.status, delay=delay
        )

    # following

    def poll(self, worker_group: str, automation_job: str) -> DiscoveryOutcome:
        """One look at the job: "running" until it ends, then its inventory stored (or why not)."""
        job = self.automation.get_job(automation_job)
        if not job.terminal:
            return DiscoveryOutcome("running", worker_group, automation_job, f"job is {job.status}", job.status)
        return self._ended(worker_group, job)

    def track(self, message_text: str) -> DiscoveryOutcome:
        """A `certsync.discovery-track/1` message from TRACKING_QUEUE: poll, then send it again later
        while the job runs (or after a transient failure), give up after `give_up_after`."""
        try:
            track = parse_track_discovery(message_text)
        except CertsyncError as exc:
            log.error("%s", exc)
            return DiscoveryOutcome("rejected", "", "", str(exc))
        queue = self.tracking
        if self.clock() - track.started_at > self.settings.give_up_after:
            hours = self.settings.give_up_after.total_seconds() / 3600
            reason = (
                f"discovery job {track.automation_job} of {track.worker_group} did not end within {hours:g} h;"
                " certsync stopped following it: check the job in the Automation account"
            )
            self._failed(track.worker_group, track.automation_job, reason, {"stage": "poll"})
            return DiscoveryOutcome("gave-up", track.worker_group, track.automation_job, reason)
        try:
            outcome = self.poll(track.worker_group, track.automation_job)
        except AutomationError as exc:
            if not exc.transient or track.failures + 1 >= self.settings.poll_failures:
                reason = f"discovery job {track.automation_job} of {track.worker_group} cannot be read: {exc}"
                self._failed(track.worker_group, track.automation_job, reason, {"stage": "poll", "status": exc.status})
                return DiscoveryOutcome("failed", track.worker_group, track.automation_job, reason)
            delay = retry_delay(track.failures, exc.retry_after, self.settings.timing)
            if queue is not None:
                following = TrackDiscovery(
                    track.worker_group, track.automation_job, track.started_at, track.polls, track.failures + 1
                )
                queue.send(following.to_json(), delay)
            reason = f"poll failed ({exc}); polling again in {delay} s"
            return DiscoveryOutcome("retry", track.worker_group, track.automation_job, reason, delay=delay)
        if outcome.outcome == "running" and queue is not None:
            delay = poll_delay(track.polls + 1, self.settings.timing)
            following = TrackDiscovery(track.worker_group, track.automation_job, track.started_at, track.polls + 1)
            queue.send(following.to_json(), delay)
            return DiscoveryOutcome(
                "running", outcome.worker_group, outcome.automation_job, outcome.reason, outcome.status, delay=delay
            )
        return outcome

    def run(
        self, worker_group: str, timeout: float, *, interval: float = 10.0, sleep: Callable[[float], None] = time.sleep
    ) -> DiscoveryOutcome:
        """Start the job and wait for it up to `timeout` seconds (the CLI); "running" when it did not end."""
        started = self.start(worker_group)
        deadline = time.monotonic() + timeout
        while True:
            outcome = self.poll(started.worker_group, started.automation_job)
            if outcome.outcome != "running" or time.monotonic() >= deadline:
                return outcome
            sleep(max(0.0, min(interval, deadline - time.monotonic())))

    # ending

    def _ended(self, worker_group: str, job: AutomationJob) -> DiscoveryOutcome:
        name = job.name
        where = f"discovery job {name} of {worker_group}"
        try:
            output = self.automation.output(name)
            streams = self.automation.error_streams(name) if job.status in FAILED_STATES else []
        except AutomationError as exc:
            if exc.transient:
                raise
            reason = f"{where}: {job.status}, but its output cannot be read: {exc}"
            self._failed(worker_group, name, reason, {"stage": "output", "status": job.status})
            return DiscoveryOutcome("failed", worker_group, name, reason, job.status)
        if job.status in FAILED_STATES:
            why = error_text([e for e in (job.exception, *streams) if e]) or "no error text"
            reason = f"{where} {job.status}: {why}"
            self._failed(worker_group, name, reason, {"stage": "job", "status": job.status})
            return DiscoveryOutcome("failed", worker_group, name, reason, job.status)
        now = self.clock()
        ended = parse_time_or_none(job.end_time or "") or now
        try:
            document = parse_inventory(output, f"{where} Output")
            record = make_record(
                document,
                worker_group,
                where=f"{where} Output",
                now=now,
                collected_fallback=ended,
                source="runbook",
                automation_job=name,
                validate=self.validate,
            )
        except InventoryError as exc:
            reason = one_line(str(exc), 1000)
            self._failed(worker_group, name, reason, {"stage": "inventory", "status": job.status}, kind="malformed")
            return DiscoveryOutcome("malformed", worker_group, name, reason, job.status)
        self.store.put(record)
        errors = record.errors
        summary = (
            f"inventory of {worker_group} stored (collected {format_time(record.collected_at, 'seconds')}): "
            f"{len(document['servers'])} server(s), {len(document['send_connectors'])} send connector(s), "
            f"{len(errors)} error(s)"
            + (": " + "; ".join(f"{e['where']}: {e['message']}" for e in errors[:3]) if errors else "")
        )
        self._record(
            worker_group,
            "discovery-result",
            summary,
            {"automation_job": name, "status": job.status, **record.meta()},
        )
        if self.on_stored is not None:
            try:
                self.on_stored(record)
            except CertsyncError as exc:
                log.error(
                    "inventory of %s stored, but the versions waiting for it were not planned: %s", worker_group, exc
                )
        return DiscoveryOutcome("stored", worker_group, name, summary, job.status, record)

    # the audit trail and notices

    def _record(self, worker_group: str, kind: str, summary: str, details: dict[str, Any]) -> None:
        self.audit.record(
            AuditEntry(
                certificate=audit_partition(worker_group),
                kind=kind,
                correlation_id=str(details.get("automation_job") or ""),
                summary=one_line(summary, 1000),
                at=self.clock(),
                details={"worker_group": worker_group, **details},
            )
        )

    def _failed(self, worker_group: str, name: str, reason: str, details: dict[str, Any], kind: str = "failed") -> None:
        facts = {"automation_job": name, "reason": kind, **details, "error": one_line(reason, 1000)}
        self._record(worker_group, "discovery-failed", reason, facts)
        notice = Notice("discovery-failed", audit_partition(worker_group), "", "", name, one_line(reason, 1000), facts)
        try:
            self.notifier.notify(notice)
        except CertsyncError as exc:  # audited already; a lost notice must not hide the failure
            log.warning("notice discovery-failed for %s not delivered: %s", worker_group, exc)
        log.error("%s", reason)
