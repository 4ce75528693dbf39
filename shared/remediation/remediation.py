"""Remediation on premises: start one Azure Automation job per plan, track it to its end, take its result.

Three entry points, one per function in `functions/remediation.py`:

- `Remediation.start(text)`: a `certsync.job/1` message from REMEDIATION_QUEUE becomes one Automation job
  (`PUT .../jobs/{jobName}`, jobName = the job id as a GUID, so a redelivered message finds the job it
  started instead of starting a second one), then a `certsync.track/1` message goes to TRACKING_QUEUE.
- `Remediation.track(text)`: a `certsync.track/1` message polls the job; until it is terminal the message is
  sent again with a growing visibility delay; at the end the runbook's result (its last Output line,
  `certsync.result/1`) is audited and people are told, then the STARTTLS probe checks what the servers serve.
- `Remediation.accept_result(job_id, headers, body)`: the runbook's own POST of the same result
  (Standard Webhooks HMAC over the raw body), an alternative to waiting for the poll.

Failures of Azure Automation are handled here rather than by the Functions host: a transient one (5xx, 429,
no connection) re-sends the message with a backoff delay and an attempt count, then moves it to the poison
queue; a permanent one (4xx) is audited and notified with a hint and not retried. Each entry point then
returns normally, so the host deletes the message it delivered. Only a failure to write to Storage (or a
bug) raises, and then the host's own retries and poison queue apply; starting is idempotent, so a retry
by the host is safe.

Job parameters, queue messages, audit rows and log records carry identifiers and public certificates only:
never a function key, a webhook secret or key material (`check_no_secrets`).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from shared.adapters.azure.automation import AutomationError, AutomationJob, job_name
from shared.adapters.azure.storage import MAX_VISIBILITY_SECONDS
from shared.errors import CertsyncError
from shared.notify.signing import SignatureError, verify
from shared.pipeline.audit import AuditEntry, AuditLog, partition
from shared.pipeline.jobs import JOB_SCHEMA, Job
from shared.pipeline.jobs import job_id as derive_job_id
from shared.pipeline.process import LogNotifier, Notice, Notifier
from shared.validation.probe import ProbeResult, probe

if TYPE_CHECKING:
    from shared.validation.assessment import TrustStore

log = logging.getLogger("certsync")

TRACK_SCHEMA = "certsync.track/1"
RESULT_SCHEMA = "certsync.result/1"
DEFAULT_RUNBOOK = "Invoke-CertsyncRemediation"
RESULT_STATUSES = ("succeeded", "failed", "rolled-back", "what-if")
FAILED_STATES = ("Failed", "Stopped", "Suspended")
CALLBACK_BODY_LIMIT = 1024 * 1024
ERROR_TEXT_LIMIT = 4000  # characters of runbook error text kept in an audit row
_JOB_ID = re.compile(r"[0-9a-f]{32}")


# --- settings and delays ---------------------------------------------------------------------------


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


def callback_url(base: str, job_id: str) -> str:
    """`<base>/api/jobs/<job id>/result`; the base is a bare https origin (the key is never part of it)."""
    try:
        parts = urlsplit(base.strip())
        host = parts.hostname
    except ValueError:
        host = None
    loopback = host in ("localhost", "127.0.0.1")  # `func start` serves plain http
    if (
        not host
        or parts.scheme not in (("https", "http") if loopback else ("https",))
        or parts.username
        or parts.password
        or parts.query
        or parts.fragment
        or parts.path.strip("/")
    ):
        raise CertsyncError(
            "CERTSYNC_CALLBACK_URL: give the app's https origin only, e.g. https://<app>.azurewebsites.net"
            " (no path, no query, no key)"
        )
    return f"{base.strip().rstrip('/')}/api/jobs/{job_id}/result"


# --- ports ---------------------------------------------------------------------------------------


class Automation(Protocol):
    """What remediation needs of Azure Automation (`shared.adapters.azure.automation.AutomationClient`)."""

    def start_job(self, name: str, runbook: str, parameters: Mapping[str, str], run_on: str) -> AutomationJob: ...

    def get_job(self, name: str) -> AutomationJob: ...

    def output(self, name: str) -> str: ...

    def error_streams(self, name: str) -> list[str]: ...


class MessageQueue(Protocol):
    """A queue messages are sent to, each visible after `delay` seconds
    (`shared.adapters.azure.storage.StorageMessageQueue`)."""

    name: str

    def send(self, text: str, delay: int = 0) -> None: ...


# --- messages ------------------------------------------------------------------------------------


class MessageError(CertsyncError):
    """A queue message that is not what the function reads; `certificate` names its partition when known."""

    def __init__(self, message: str, certificate: str | None = None, job_id: str = "") -> None:
        super().__init__(message)
        self.certificate = certificate
        self.job_id = job_id


class ResultError(CertsyncError):
    """A runbook result that is not one `certsync.result/1` object for this job."""


@dataclass(frozen=True)
class JobMessage:
    """A `certsync.job/1` message as read from REMEDIATION_QUEUE; `attempt` counts transient start failures."""

    job: Job
    attempt: int = 0

    def to_json(self, attempt: int) -> str:
        """The message with its transient-failure count (no `attempt` key at 0: as the pipeline queued it)."""
        body = self.job.to_dict()
        if attempt:
            body["attempt"] = attempt
        return json.dumps(body, sort_keys=True, separators=(",", ":"))


def parse_job_message(text: str) -> JobMessage:
    """A `certsync.job/1` message, checked; raises `MessageError` naming what is wrong."""
    data = _json_object(text, "job message")
    certificate = data.get("certificate") if isinstance(data.get("certificate"), str) else None
    given_id = data.get("job_id") if isinstance(data.get("job_id"), str) else ""
    what = f"job message {given_id or '(no job_id)'}"

    def fail(problem: str) -> MessageError:
        return MessageError(f"{what}: {problem}; it is not retried", certificate, given_id)

    if data.get("schema") != JOB_SCHEMA:
        raise fail(f"schema is {data.get('schema')!r}, not {JOB_SCHEMA}")
    for key in ("job_id", "correlation_id", "vault", "certificate", "version", "secret_id", "thumbprint"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise fail(f"{key} is missing or not a string")
    plan = data.get("plan")
    if not isinstance(plan, dict) or plan.get("schema") != "certsync.plan/1":
        raise fail("plan is missing or not a certsync.plan/1 object")
    if not isinstance(plan.get("worker_group"), str) or not plan["worker_group"].strip():
        raise fail("plan.worker_group is empty; set worker_group for this certificate in the targets")
    if not isinstance(plan.get("steps"), list) or not isinstance(plan.get("certificate"), dict):
        raise fail("plan.steps or plan.certificate is missing")
    attempt = data.get("attempt", 0)
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 0:
        raise fail("attempt is not a whole number")
    job = Job(
        vault=data["vault"],
        certificate=data["certificate"],
        version=data["version"],
        secret_id=data["secret_id"],
        thumbprint=data["thumbprint"],
        correlation_id=data["correlation_id"],
        plan=plan,
    )
    if job.job_id != given_id:
        raise fail("job_id does not match its vault, certificate and version")
    return JobMessage(job, attempt)


@dataclass(frozen=True)
class TrackMessage:
    """`certsync.track/1`: what the tracker needs to poll one Automation job and report on it."""

    job_id: str
    automation_job: str
    vault: str
    certificate: str
    version: str
    thumbprint: str
    correlation_id: str
    started_at: dt.datetime
    servers: tuple[str, ...] = ()
    probe: tuple[str, ...] = ()
    polls: int = 0
    failures: int = 0  # consecutive transient failures
    last_status: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {
                "schema": TRACK_SCHEMA,
                "job_id": self.job_id,
                "automation_job": self.automation_job,
                "vault": self.vault,
                "certificate": self.certificate,
                "version": self.version,
                "thumbprint": self.thumbprint,
                "correlation_id": self.correlation_id,
                "servers": list(self.servers),
                "probe": list(self.probe),
                "polls": self.polls,
                "failures": self.failures,
                "started_at": _iso(self.started_at),
                "last_status": self.last_status,
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    def next(self, **changes: Any) -> TrackMessage:
        return dataclasses.replace(self, **changes)


def parse_track_message(text: str) -> TrackMessage:
    """A `certsync.track/1` message, checked; raises `MessageError` naming what is wrong."""
    data = _json_object(text, "tracking message")
    certificate = data.get("certificate") if isinstance(data.get("certificate"), str) else None
    given_id = data.get("job_id") if isinstance(data.get("job_id"), str) else ""

    def fail(problem: str) -> MessageError:
        return MessageError(f"tracking message {given_id or '(no job_id)'}: {problem}", certificate, given_id)

    if data.get("schema") != TRACK_SCHEMA:
        raise fail(f"schema is {data.get('schema')!r}, not {TRACK_SCHEMA}")
    texts = ("job_id", "automation_job", "vault", "certificate", "version", "thumbprint", "correlation_id")
    for key in texts:
        if not isinstance(data.get(key), str) or not data[key]:
            raise fail(f"{key} is missing or not a string")
    counts = {key: data.get(key, 0) for key in ("polls", "failures")}
    if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in counts.values()):
        raise fail("polls or failures is not a whole number")
    lists = {key: data.get(key) or [] for key in ("servers", "probe")}
    if any(not isinstance(v, list) or not all(isinstance(i, str) for i in v) for v in lists.values()):
        raise fail("servers or probe is not a list of strings")
    try:
        started = dt.datetime.fromisoformat(str(data.get("started_at", "")).replace("Z", "+00:00"))
    except ValueError:
        raise fail("started_at is not an ISO 8601 time") from None
    if started.tzinfo is None:
        raise fail("started_at has no time zone")
    return TrackMessage(
        **{key: data[key] for key in texts},
        started_at=started,
        servers=tuple(lists["servers"]),
        probe=tuple(lists["probe"]),
        last_status=str(data.get("last_status") or ""),
        **counts,
    )


def parse_result(data: object, job_id: str) -> dict:
    """A `certsync.result/1` object for job `job_id`, checked; raises `ResultError`."""
    if not isinstance(data, dict):
        raise ResultError("the result is not a JSON object")
    if data.get("schema") != RESULT_SCHEMA:
        raise ResultError(f"the result's schema is {data.get('schema')!r}, not {RESULT_SCHEMA}")
    if data.get("job_id") != job_id:
        raise ResultError(f"the result is for job {str(data.get('job_id'))[:40]!r}, not {job_id}")
    if data.get("status") not in RESULT_STATUSES:
        raise ResultError(f"the result's status {str(data.get('status'))[:40]!r} is not one of {RESULT_STATUSES}")
    certificate = data.get("certificate")
    if not isinstance(certificate, dict) or not all(
        isinstance(certificate.get(k), str) for k in ("vault", "name", "version")
    ):
        raise ResultError("the result's certificate needs vault, name and version")
    for key in ("steps", "inventory"):
        items = data.get(key, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ResultError(f"the result's {key} is not a list of objects")
    return data


def result_from_output(output: str, job_id: str) -> tuple[dict | None, str]:
    """The result on the last non-empty line of a job's Output stream, or (None, why there is none)."""
    lines = [line.strip().lstrip("\ufeff") for line in output.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return None, "the job wrote no Output, so there is no certsync.result/1 line"
    try:
        return parse_result(json.loads(lines[-1]), job_id), ""
    except json.JSONDecodeError:
        return None, "the job's last Output line is not JSON, so there is no certsync.result/1 result"
    except ResultError as exc:
        return None, f"the job's last Output line is not a usable certsync.result/1 result: {exc}"


def job_parameters(job: Job, callback_base: str = "") -> dict[str, str]:
    """The Automation job's parameters: all strings, public data only (the runbook fetches the PFX itself)."""
    return {
        "PlanJson": json.dumps(job.plan, sort_keys=True, separators=(",", ":")),
        "CorrelationId": job.correlation_id,
        "JobId": job.job_id,
        "CallbackUrl": callback_url(callback_base, job.job_id) if callback_base else "",
    }


_SECRET_SHAPES = (
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    (re.compile(r"whsec_"), "a webhook signing secret"),
    (re.compile(r"[?&](code|sig|sv)=", re.IGNORECASE), "a key or SAS token in a URL"),
    (re.compile(r"AccountKey=|SharedAccessSignature=", re.IGNORECASE), "a storage account key"),
    (re.compile(r"x-functions-key", re.IGNORECASE), "a function key header"),
    (
        re.compile(r'"(password|passphrase|pfx|pfx_base64|private_?key|client_?secret|secret_value)"\s*:', re.I),
        "a password, PFX or private key field",
    ),
)


def check_no_secrets(parameters: Mapping[str, str], secrets: Sequence[bytes] = ()) -> None:
    """Refuse parameters that look like they carry a secret: Automation shows job input to anyone who can
    read the job. Raises `CertsyncError` naming the parameter and the kind of secret, never the value."""
    known = [base64.b64encode(key).decode() for key in secrets]
    for name, value in parameters.items():
        if not isinstance(value, str):
            raise CertsyncError(f"job parameter {name} is not a string")
        for shape, what in _SECRET_SHAPES:
            if shape.search(value):
                raise CertsyncError(f"job parameter {name} would carry {what}; no job was started")
        if any(k in value for k in known):
            raise CertsyncError(f"job parameter {name} would carry the callback secret; no job was started")


def server_outcomes(result: dict | None, servers: Sequence[str], automation_status: str) -> list[dict]:
    """Per server: "failed" if a step on it failed, else "rolled-back" or "succeeded" after the overall
    status (contracts.md); the overall status itself otherwise; "unknown" without a result."""
    names = list(dict.fromkeys([*servers, *(s.get("server") for s in (result or {}).get("steps", []))]))
    names = [n for n in names if isinstance(n, str) and n]
    outcomes = []
    for server in names:
        if result is None:
            outcome = "failed" if automation_status in FAILED_STATES else "unknown"
        elif any(s.get("server") == server and s.get("outcome") == "failed" for s in result.get("steps", [])):
            outcome = "failed"
        else:
            outcome = result["status"]
        outcomes.append({"server": server, "outcome": outcome})
    return outcomes


# --- outcomes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartOutcome:
    outcome: str  # started, found, retry, poisoned, rejected
    job_id: str
    reason: str
    automation_job: str = ""
    attempt: int = 0
    delay: int = 0  # seconds until the next message (tracking or retry) becomes visible


@dataclass(frozen=True)
class TrackOutcome:
    outcome: str  # polling, recorded, recorded-errors, already-recorded, probed, retry, poisoned, rejected, gave-up
    job_id: str
    reason: str
    status: str = ""  # the Automation job status seen
    delay: int = 0
    result: dict | None = None
    probe: list[dict] | None = None


@dataclass(frozen=True)
class CallbackResponse:
    status_code: int
    body: dict


@dataclass(frozen=True)
class _Subject:
    """Whom entries and notices are about: one certificate version and its job."""

    job_id: str
    certificate: str
    vault: str = ""
    version: str = ""
    correlation_id: str = ""


# --- the service ---------------------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class Remediation:
    """Starts, tracks and receives the results of remediation jobs (see the module docstring)."""

    automation: Automation
    audit: AuditLog
    jobs: MessageQueue  # REMEDIATION_QUEUE: a start that failed transiently is sent here again
    jobs_poison: MessageQueue  # <REMEDIATION_QUEUE>-poison, the queue the Functions host poisons into
    tracking: MessageQueue  # TRACKING_QUEUE
    tracking_poison: MessageQueue  # <TRACKING_QUEUE>-poison
    settings: RemediationSettings = field(default_factory=RemediationSettings)
    notifier: Notifier = field(default_factory=LogNotifier)
    clock: Callable[[], dt.datetime] = _now

    # start

    def start(self, message_text: str) -> StartOutcome:
        """Start the Automation job of one `certsync.job/1` message (or find the one it started before)."""
        try:
            message = parse_job_message(message_text)
        except MessageError as exc:
            subject = _Subject(exc.job_id, partition(exc.certificate))
            self._rejected(subject, str(exc), status=None, code="InvalidMessage")
            return StartOutcome("rejected", exc.job_id, str(exc))
        job, attempt = message.job, message.attempt
        subject = _Subject(job.job_id, job.certificate, job.vault, job.version, job.correlation_id)
        name = job_name(job.job_id)
        try:
            parameters = job_parameters(job, self.settings.callback_base)
            check_no_secrets(parameters, self.settings.callback_secrets)
        except CertsyncError as exc:
            reason = f"job {job.job_id}: {exc}"
            self._rejected(subject, reason, status=None, code="UnsafeParameters")
            return StartOutcome("rejected", job.job_id, reason, name, attempt)
        run_on = job.plan["worker_group"]
        try:
            started = self.automation.start_job(name, self.settings.runbook, parameters, run_on=run_on)
        except AutomationError as exc:
            if exc.transient:
                return self._start_again(message, subject, name, exc)
            reason = f"job {job.job_id} not started: {exc}"
            self._rejected(subject, reason, status=exc.status, code=exc.code)
            return StartOutcome("rejected", job.job_id, reason, name, attempt)

        how = "created" if started.created else "found (started by an earlier delivery; not started again)"
        summary = f"Automation job {name} {how}: runbook {self.settings.runbook} on worker group {run_on}"
        self._record(
            subject,
            "job-started",
            summary,
            {"job_id": job.job_id, "automation_job": name, "run_on": run_on, "attempt": attempt},
        )
        self._notify(subject, "job-started", summary, {"job_id": job.job_id, "automation_job": name, "run_on": run_on})
        endpoints = job.plan.get("probe") or []
        track = TrackMessage(
            job_id=job.job_id,
            automation_job=name,
            vault=job.vault,
            certificate=job.certificate,
            version=job.version,
            thumbprint=job.thumbprint,
            correlation_id=job.correlation_id,
            started_at=self.clock(),
            servers=tuple(s for s in job.plan.get("servers") or [] if isinstance(s, str)),
            probe=tuple(p for p in endpoints if isinstance(p, str)) if isinstance(endpoints, list) else (),
            last_status=started.status or "",
        )
        delay = poll_delay(0, self.settings)
        self.tracking.send(track.to_json(), delay)
        self._log(subject, "job %s: Automation job %s %s; first poll in %d s", job.job_id, name, how, delay)
        return StartOutcome("started" if started.created else "found", job.job_id, summary, name, attempt, delay)

    def _start_again(self, message: JobMessage, subject: _Subject, name: str, exc: AutomationError) -> StartOutcome:
        attempt = message.attempt
        job_id = message.job.job_id
        if attempt + 1 >= self.settings.start_attempts:
            # Without the attempt counter: moved back to the queue, the message starts over.
            self.jobs_poison.send(message.to_json(attempt=0))
            reason = (
                f"job {job_id} not started after {attempt + 1} attempts ({exc}); the message is in"
                f" {self.jobs_poison.name}: move it back to {self.jobs.name} once Automation answers"
            )
            self._record(subject, "job-poisoned", reason, {"job_id": job_id, "stage": "start", "attempts": attempt + 1})
            self._notify(subject, "job-poisoned", reason, {"job_id": job_id, "stage": "start"})
            return StartOutcome("poisoned", job_id, reason, name, attempt)
        delay = retry_delay(attempt, exc.retry_after, self.settings)
        self.jobs.send(message.to_json(attempt=attempt + 1), delay)
        reason = f"job {job_id}: start attempt {attempt + 1} failed ({exc}); trying again in {delay} s"
        self._record(
            subject,
            "job-retry",
            reason,
            {"job_id": job_id, "stage": "start", "status": exc.status, "attempt": attempt + 1, "delay_seconds": delay},
        )
        return StartOutcome("retry", job_id, reason, name, attempt + 1, delay)

    # track

    def track(self, message_text: str) -> TrackOutcome:
        """Poll the job of one `certsync.track/1` message; report it when it has ended."""
        try:
            track = parse_track_message(message_text)
        except MessageError as exc:
            self._rejected(
                _Subject(exc.job_id, partition(exc.certificate)), str(exc), status=None, code="InvalidMessage"
            )
            return TrackOutcome("rejected", exc.job_id, str(exc))
        subject = _Subject(track.job_id, track.certificate, track.vault, track.version, track.correlation_id)
        history = self.audit.history(track.certificate)
        recorded = _entries(history, "job-result", track.job_id)
        follow_up = self._follow_up(track, recorded[-1], history) if recorded else None
        if recorded and follow_up is None:
            reason = f"job {track.job_id}: its result was recorded already (via {_via(recorded[-1])}); tracking stops"
            self._log(subject, "%s", reason)
            return TrackOutcome("already-recorded", track.job_id, reason)
        if self.clock() - track.started_at > self.settings.give_up_after:
            return self._give_up(track, subject, recorded=bool(recorded))

        try:
            job = self.automation.get_job(track.automation_job)
        except AutomationError as exc:
            if exc.transient:
                return self._poll_again(track, subject, exc)
            reason = f"job {track.job_id}: cannot read Automation job {track.automation_job}: {exc}; tracking stops"
            self._rejected(subject, reason, status=exc.status, code=exc.code)
            return TrackOutcome("rejected", track.job_id, reason)

        if not job.terminal:
            if job.status != track.last_status:
                self._record(
                    subject,
                    "job-status",
                    f"Automation job {track.automation_job} is {job.status}",
                    {"job_id": track.job_id, "automation_job": track.automation_job, "status": job.status},
                )
            following = track.next(polls=track.polls + 1, failures=0, last_status=job.status)
            delay = poll_delay(following.polls, self.settings)
            self.tracking.send(following.to_json(), delay)
            return TrackOutcome("polling", track.job_id, f"{job.status}; next poll in {delay} s", job.status, delay)

        if follow_up == "probe":  # the callback brought the result; the poll only waited for the job to end
            probes = self._probe(track, subject) if job.status == "Completed" else None
            return TrackOutcome("probed", track.job_id, "result recorded by the callback", job.status, probe=probes)
        if follow_up == "errors":  # the callback reported a failure; the job's own errors complete the story
            return self._record_job_errors(track, subject, job)

        try:
            output = self.automation.output(track.automation_job)
            streams = self.automation.error_streams(track.automation_job) if job.status in FAILED_STATES else []
        except AutomationError as exc:
            if exc.transient:
                return self._poll_again(track, subject, exc)
            result, errors = None, [f"cannot read the job's output: {exc}"]
        else:
            result, problem = result_from_output(output, track.job_id)
            errors = [problem] if problem else []
            if job.status in FAILED_STATES:
                errors = [*(e for e in (job.exception, *streams) if e), *errors]
        error = _error_text(errors)
        # The callback may have recorded the result while we read the output.
        if _entries(self.audit.history(track.certificate), "job-result", track.job_id):
            return TrackOutcome("already-recorded", track.job_id, "the callback recorded the result meanwhile")
        self._record_result(subject, track.automation_job, job.status, result, error, "poll", track.servers)
        probes = None
        if job.status == "Completed" and result is not None and result["status"] == "succeeded":
            probes = self._probe(track, subject)
        return TrackOutcome("recorded", track.job_id, error or job.status, job.status, result=result, probe=probes)

    def _poll_again(self, track: TrackMessage, subject: _Subject, exc: AutomationError) -> TrackOutcome:
        failures = track.failures + 1
        if failures >= self.settings.poll_failures:
            self.tracking_poison.send(track.next(failures=0).to_json())
            reason = (
                f"job {track.job_id}: Automation job {track.automation_job} could not be read {failures} times in a"
                f" row ({exc}); the tracking message is in {self.tracking_poison.name}: move it back to"
                f" {self.tracking.name} to track the job again"
            )
            self._record(
                subject, "job-poisoned", reason, {"job_id": track.job_id, "stage": "poll", "attempts": failures}
            )
            self._notify(subject, "job-poisoned", reason, {"job_id": track.job_id, "stage": "poll"})
            return TrackOutcome("poisoned", track.job_id, reason)
        delay = retry_delay(failures - 1, exc.retry_after, self.settings)
        self.tracking.send(track.next(failures=failures).to_json(), delay)
        reason = f"job {track.job_id}: poll failed ({exc}); polling again in {delay} s"
        self._record(
            subject,
            "job-retry",
            reason,
            {
                "job_id": track.job_id,
                "stage": "poll",
                "status": exc.status,
                "attempt": failures,
                "delay_seconds": delay,
            },
        )
        return TrackOutcome("retry", track.job_id, reason, delay=delay)

    def _give_up(self, track: TrackMessage, subject: _Subject, *, recorded: bool) -> TrackOutcome:
        hours = self.settings.give_up_after.total_seconds() / 3600
        reason = (
            f"job {track.job_id}: Automation job {track.automation_job} did not end within {hours:g} h (last status"
            f" {track.last_status or 'unknown'}); certsync stopped tracking it: check the job in the Automation account"
        )
        if recorded:  # only the probe was pending: the result itself is in the trail
            self._log(subject, "%s", reason)
        else:
            self._record_result(subject, track.automation_job, "Unknown", None, reason, "poll", track.servers)
        return TrackOutcome("gave-up", track.job_id, reason, track.last_status)

    def _follow_up(self, track: TrackMessage, result_entry: AuditEntry, history: list[AuditEntry]) -> str | None:
        """What a result the callback recorded leaves to the poll, once the job has ended: "probe" the
        servers after a success, record the job's own "errors" after a failure, or nothing."""
        details = result_entry.details
        if details.get("via") != "callback":
            return None
        status = (details.get("result") or {}).get("status")
        if status == "succeeded" and track.probe and not _entries(history, "probe", track.job_id):
            return "probe"
        ended = [e for e in _entries(history, "job-status", track.job_id) if e.details.get("ended")]
        if status in ("failed", "rolled-back") and not ended:
            return "errors"
        return None

    def _record_job_errors(self, track: TrackMessage, subject: _Subject, job: AutomationJob) -> TrackOutcome:
        """The Automation job of a failure the callback reported has ended: its exception and Error streams."""
        try:
            streams = self.automation.error_streams(track.automation_job) if job.status in FAILED_STATES else []
        except AutomationError as exc:
            if exc.transient:
                return self._poll_again(track, subject, exc)
            streams = [f"cannot read the job's Error streams: {exc}"]
        error = _error_text([e for e in (job.exception, *streams) if e])
        self._record(
            subject,
            "job-status",
            f"Automation job {track.automation_job} ended {job.status}" + (f": {error}" if error else ""),
            {
                "job_id": track.job_id,
                "automation_job": track.automation_job,
                "status": job.status,
                "error": error,
                "ended": True,
            },
        )
        return TrackOutcome("recorded-errors", track.job_id, error or job.status, job.status)

    def _probe(self, track: TrackMessage, subject: _Subject) -> list[dict]:
        """STARTTLS-probe each endpoint of the plan; audited, and notified when one is not right."""
        if not track.probe:
            return []
        results, bad, servers = [], [], []
        for endpoint in track.probe:
            try:
                # Guarded: endpoints come from targets and Key Vault tags, so only global addresses, or
                # HOST:PORT entries of CERTSYNC_ALLOW_HOSTS, are connected to (shared.validation.fetch's rules).
                outcome = probe(
                    endpoint,
                    expected_thumbprint=track.thumbprint,
                    trust=self.settings.trust,
                    timeout=self.settings.probe_timeout,
                    guarded=True,
                    allow_hosts=self.settings.allow_hosts,
                )
            except CertsyncError as exc:  # a malformed endpoint: reported like a failed probe
                results.append({"endpoint": endpoint, "ok": False, "error": str(exc)})
                bad.append(results[-1])
                servers.append({"server": endpoint, "outcome": str(exc)})
                continue
            results.append(outcome.to_dict())
            servers.append({"server": outcome.endpoint, "outcome": _probe_outcome(outcome, track.thumbprint)})
            if not outcome.passed:  # the new certificate, its intermediates, and Valid as served
                bad.append(results[-1])
        summary = (
            f"probe after job {track.job_id}: every endpoint serves certificate {track.thumbprint} with its chain"
            if not bad
            else f"probe after job {track.job_id}: {len(bad)} of {len(results)} endpoint(s) do not serve certificate"
            f" {track.thumbprint} with its intermediates, Valid ({', '.join(str(r.get('endpoint')) for r in bad)})"
        )
        self._record(subject, "probe", summary, {"job_id": track.job_id, "endpoints": results})
        if bad:
            details = {"job_id": track.job_id, "thumbprint": track.thumbprint, "servers": servers, "endpoints": results}
            self._notify(subject, "probe", summary, details)
        return results

    # callback

    def accept_result(self, job_id: str, headers: Mapping[str, str], body: bytes) -> CallbackResponse:
        """The runbook's POSTed result: checked (signature, schema, job) and audited once."""
        safe_id = job_id if _JOB_ID.fullmatch(job_id or "") else "(malformed id)"
        if not self.settings.callback_secrets:
            log.warning("result callback for job %s refused: CERTSYNC_CALLBACK_SECRET is not set", safe_id)
            return CallbackResponse(503, {"error": "the result callback is not configured (CERTSYNC_CALLBACK_SECRET)"})
        if len(body) > CALLBACK_BODY_LIMIT:
            return CallbackResponse(413, {"error": f"the result is larger than {CALLBACK_BODY_LIMIT} bytes"})
        try:
            verify(self.settings.callback_secrets, headers, body, at=self.clock())
        except SignatureError as exc:
            # Unauthenticated: nothing is written (it could name any certificate), only this warning.
            log.warning("result callback for job %s refused: %s", safe_id, exc, extra={"certsync.job_id": safe_id})
            return CallbackResponse(401, {"error": f"signature rejected: {exc}"})
        if safe_id != job_id:
            return CallbackResponse(400, {"error": "the job id in the URL is not 32 lower-case hex digits"})
        try:
            result = parse_result(json.loads(body), job_id)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return CallbackResponse(400, {"error": "the body is not JSON"})
        except ResultError as exc:
            return CallbackResponse(400, {"error": str(exc)})
        certificate = result["certificate"]
        if derive_job_id(certificate["vault"], certificate["name"], certificate["version"]) != job_id:
            return CallbackResponse(400, {"error": "the result's certificate (vault, name, version) is not this job's"})
        history = self.audit.history(certificate["name"])
        started = _entries(history, "job-started", job_id)
        if not started:
            return CallbackResponse(
                404, {"error": f"no job {job_id} was started for certificate {certificate['name']}"}
            )
        if _entries(history, "job-result", job_id):
            return CallbackResponse(200, {"accepted": True, "recorded": False})
        latest = started[-1]
        subject = _Subject(job_id, certificate["name"], latest.vault, latest.version, latest.correlation_id)
        automation_job = latest.details.get("automation_job") or job_name(job_id)
        servers = _servers_of(history, job_id)
        # The runbook posts before its job ends: Automation reports it Running at this point.
        self._record_result(subject, automation_job, "Running", result, "", "callback", servers)
        return CallbackResponse(200, {"accepted": True, "recorded": True})

    # audit and notices

    def _record_result(
        self,
        subject: _Subject,
        automation_job: str,
        status: str,
        result: dict | None,
        error: str,
        via: str,
        servers: Sequence[str],
    ) -> None:
        outcome = result["status"] if result is not None else "no result"
        summary = _one_line(
            f"job {subject.job_id}: Automation job {automation_job} {status}, runbook {outcome}"
            + (f": {result['error']}" if result is not None and result.get("error") else "")
            + (f"; {error}" if error else ""),
            400,
        )
        self._record(
            subject,
            "job-result",
            summary,
            {
                "job_id": subject.job_id,
                "automation_job": automation_job,
                "status": status,
                "result": result,
                "error": error,
                "via": via,
            },
        )
        self._notify(
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
                "error": error or (result or {}).get("error") or "",
                "via": via,
            },
        )

    def _rejected(self, subject: _Subject, reason: str, *, status: int | None, code: str | None) -> None:
        self._record(subject, "job-rejected", reason, {"job_id": subject.job_id, "status": status, "code": code})
        self._notify(subject, "job-rejected", reason, {"job_id": subject.job_id, "status": status, "code": code})
        log.error("%s", reason, extra=_extra(subject))

    def _record(self, subject: _Subject, kind: str, summary: str, details: dict) -> None:
        self.audit.record(
            AuditEntry(
                certificate=partition(subject.certificate),
                kind=kind,
                correlation_id=subject.correlation_id,
                summary=_one_line(summary, 1000),
                at=self.clock(),
                vault=subject.vault,
                version=subject.version,
                details=details,
            )
        )

    def _notify(self, subject: _Subject, kind: str, summary: str, details: dict) -> None:
        notice = Notice(
            kind,
            subject.certificate,
            subject.vault,
            subject.version,
            subject.correlation_id,
            _one_line(summary, 1000),
            details,
        )
        try:
            self.notifier.notify(notice)
        except CertsyncError as exc:  # the audit entry is written; a lost notice must not undo the work
            log.warning("notice %s for job %s not delivered: %s", kind, subject.job_id, exc, extra=_extra(subject))

    def _log(self, subject: _Subject, message: str, *args: object) -> None:
        log.info(message, *args, extra=_extra(subject))


# --- helpers -------------------------------------------------------------------------------------


def _json_object(text: str, what: str) -> dict:
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        raise MessageError(f"{what}: not JSON; it is not retried") from None
    if not isinstance(data, dict):
        raise MessageError(f"{what}: not a JSON object; it is not retried")
    return data


def _entries(history: Sequence[AuditEntry], kind: str, job_id: str) -> list[AuditEntry]:
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


def _servers_of(history: Sequence[AuditEntry], job_id: str) -> list[str]:
    """The plan's servers, from the plan entry the pipeline wrote before queuing this job (if any)."""
    for entry in reversed(history):
        plan = entry.details.get("plan") if entry.kind == "plan" else None
        if not isinstance(plan, dict):
            continue
        certificate = plan.get("certificate") or {}
        vault, name, version = (str(certificate.get(k, "")) for k in ("vault", "name", "version"))
        if derive_job_id(vault, name, version) == job_id:
            return [s for s in plan.get("servers") or [] if isinstance(s, str)]
    return []


def _via(entry: AuditEntry) -> str:
    return str(entry.details.get("via") or "?")


def _probe_outcome(result: ProbeResult, thumbprint: str) -> str:
    """One phrase per endpoint for people: what is wrong with what it serves, or that it is right."""
    if not result.ok:
        return str(result.error or "the probe failed")
    if result.is_expected is False:
        served = result.leaf.thumbprint if result.leaf else "nothing"
        return f"serves {served}, not the new certificate {thumbprint}"
    if result.intermediates_sent is False:
        return "serves the new certificate without its intermediates (install them in Cert:\\LocalMachine\\CA)"
    if result.assessment is not None and result.assessment.status != "Valid":
        return f"serves the new certificate with its chain, but it assesses {result.assessment.status}"
    return "serves the new certificate with its chain"


def _error_text(errors: Sequence[str]) -> str:
    return _one_line("; ".join(e for e in errors if e), ERROR_TEXT_LIMIT)


def _one_line(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _iso(at: dt.datetime) -> str:
    return at.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _extra(subject: _Subject) -> dict[str, str]:
    return {
        "certsync.job_id": subject.job_id,
        "certsync.certificate": subject.certificate,
        "certsync.vault": subject.vault,
        "certsync.correlation_id": subject.correlation_id,
    }
