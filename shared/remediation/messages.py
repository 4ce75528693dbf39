"""What crosses remediation's boundaries, as data: the queue messages, the job parameters, the runbook's result.

- `certsync.job/1` (`JobMessage`, `parse_job_message`): a plan the pipeline queued on REMEDIATION_QUEUE,
  with the count of transient start failures.
- `certsync.track/1` (`TrackMessage`, `parse_track_message`): what the tracker needs to poll one
  Automation job, sent to TRACKING_QUEUE with a visibility delay (`MessageQueue`, at most
  `MAX_VISIBILITY_SECONDS`).
- The Automation job's parameters (`job_parameters`, with `callback_url`), refused when one looks like it
  carries a secret (`check_no_secrets`): Automation shows job input to anyone who can read the job.
- `certsync.result/1` (`RunbookResult`, `parse_result`, `result_from_output`): what the runbook reports, on
  its last Output line or POSTed to the callback, and what it means per server (`server_outcomes`), with
  Exchange's own rendering of the name where it differs from certsync's (`name_mismatches`) and the old
  certificates the runbook kept (`kept_certificates`), in words for notices.

Parsing raises `MessageError` (a message the function does not read) or `ResultError` (a result that is not
this job's `certsync.result/1`), each one line naming what is wrong.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict, cast
from urllib.parse import urlsplit

from shared.errors import CertsyncError
from shared.pipeline.contract import JOB_PARAMETERS
from shared.pipeline.jobs import JOB_SCHEMA, MAX_PARAMETERS_BYTES, PLAN_SCHEMAS, RemediationRequest, plan_base64
from shared.remediation.automation import FAILED_STATES
from shared.times import format_time, parse_time

TRACK_SCHEMA = "certsync.track/1"
_FOLLOW_UP = re.compile(r"(roll-back|resume)-[1-9][0-9]?")

RESULT_SCHEMA = "certsync.result/1"
RESULT_STATUSES = ("succeeded", "failed", "rolled-back", "what-if")
MAX_VISIBILITY_SECONDS = 7 * 24 * 3600  # the longest a queue message can stay invisible (Azure Storage's limit)


class MessageQueue(Protocol):
    """A queue messages are sent to, each visible after `delay` seconds (0 to `MAX_VISIBILITY_SECONDS`)
    (`shared.adapters.azure.storage.StorageMessageQueue`)."""

    name: str

    def send(self, text: str, delay: int = 0) -> None: ...


class MessageError(CertsyncError):
    """A queue message that is not what the function reads; `certificate` names its partition when known."""

    def __init__(self, message: str, certificate: str | None = None, job_id: str = "") -> None:
        super().__init__(message)
        self.certificate = certificate
        self.job_id = job_id


class ResultError(CertsyncError):
    """A runbook result that is not one `certsync.result/1` object for this job."""


# --- certsync.job/1 --------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobMessage:
    """A `certsync.job/1` message as read from REMEDIATION_QUEUE; `attempt` counts transient start failures."""

    job: RemediationRequest
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
    given = data.get("job_id")
    given_id = given if isinstance(given, str) else ""
    what = f"job message {given_id or '(no job_id)'}"

    def fail(problem: str) -> MessageError:
        return MessageError(f"{what}: {problem}; it is not retried", certificate, given_id)

    if data.get("schema") != JOB_SCHEMA:
        raise fail(f"schema is {data.get('schema')!r}, not {JOB_SCHEMA}")
    for key in ("job_id", "correlation_id", "vault", "certificate", "version", "secret_id", "thumbprint"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise fail(f"{key} is missing or not a string")
    plan = data.get("plan")
    if not isinstance(plan, dict) or plan.get("schema") not in PLAN_SCHEMAS:
        raise fail(f"plan is missing or not a {' or '.join(PLAN_SCHEMAS)} object")
    if not isinstance(plan.get("worker_group"), str) or not plan["worker_group"].strip():
        raise fail("plan.worker_group is empty; set worker_group for this certificate in the targets")
    if not isinstance(plan.get("steps"), list) or not isinstance(plan.get("certificate"), dict):
        raise fail("plan.steps or plan.certificate is missing")
    attempt = data.get("attempt", 0)
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 0:
        raise fail("attempt is not a whole number")
    follow_up = data.get("follow_up", "")
    if not isinstance(follow_up, str) or (follow_up and not _FOLLOW_UP.fullmatch(follow_up)):
        raise fail("follow_up is not a follow-up name such as roll-back-1")
    job = RemediationRequest(
        vault=data["vault"],
        certificate=data["certificate"],
        version=data["version"],
        secret_id=data["secret_id"],
        thumbprint=data["thumbprint"],
        correlation_id=data["correlation_id"],
        plan=plan,  # its shape is checked above, the runbook checks the rest
        follow_up=follow_up,
    )
    if job.job_id != given_id:
        raise fail("job_id does not match its vault, certificate and version")
    return JobMessage(job, attempt)


# --- certsync.track/1 ------------------------------------------------------------------------------


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
                "started_at": format_time(self.started_at),
                "last_status": self.last_status,
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    def next(self, **changes: Any) -> TrackMessage:
        """The message to send next: this one with `changes`."""
        return dataclasses.replace(self, **changes)


def parse_track_message(text: str) -> TrackMessage:
    """A `certsync.track/1` message, checked; raises `MessageError` naming what is wrong."""
    data = _json_object(text, "tracking message")
    certificate = data.get("certificate") if isinstance(data.get("certificate"), str) else None
    given = data.get("job_id")
    given_id = given if isinstance(given, str) else ""

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
        started = parse_time(str(data.get("started_at", "")))
    except ValueError:
        started = None
    if started is None:
        raise fail("started_at is not an ISO 8601 time")
    return TrackMessage(
        **{key: data[key] for key in texts},
        started_at=started,
        servers=tuple(lists["servers"]),
        probe=tuple(lists["probe"]),
        last_status=str(data.get("last_status") or ""),
        **counts,
    )


# --- job parameters --------------------------------------------------------------------------------


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


def plan_from_base64(value: str) -> dict[str, Any]:
    """The plan `shared.pipeline.jobs.plan_base64` encoded, decoded as the runbook decodes its PlanBase64;
    `CertsyncError` if it is not one."""
    try:
        plan = json.loads(base64.b64decode(value, validate=True).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise CertsyncError("PlanBase64 is not base64 of UTF-8 JSON text") from None
    if not isinstance(plan, dict):
        raise CertsyncError("PlanBase64 does not hold a JSON object")
    return plan


def job_parameters(job: RemediationRequest, callback_base: str = "") -> dict[str, str]:
    """The Automation job's parameters (`contract.JOB_PARAMETERS`): all strings, public data only (the runbook
    fetches the PFX itself). Refused with a one-line `CertsyncError` when they would exceed
    `MAX_PARAMETERS_BYTES`."""
    parameters = dict(
        zip(
            JOB_PARAMETERS,
            (
                plan_base64(job.plan),
                job.correlation_id,
                job.job_id,
                callback_url(callback_base, job.job_id) if callback_base else "",
            ),
            strict=True,
        )
    )
    size = sum(len(json.dumps(v).encode()) + len(k) for k, v in parameters.items())
    if size > MAX_PARAMETERS_BYTES:
        raise CertsyncError(
            f"job {job.job_id}: the plan for {job.certificate} makes {size} bytes of job parameters, more than the"
            f" {MAX_PARAMETERS_BYTES} an Automation job takes; narrow it (fewer servers or connectors in the"
            " targets) and plan again"
        )
    return parameters


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
        if name == "PlanBase64":  # base64 hides every shape: look at the plan's own text too
            value = f"{value}\n{json.dumps(plan_from_base64(value), ensure_ascii=False)}"
        for shape, what in _SECRET_SHAPES:
            if shape.search(value):
                raise CertsyncError(f"job parameter {name} would carry {what}; no job was started")
        if any(k in value for k in known):
            raise CertsyncError(f"job parameter {name} would carry the callback secret; no job was started")


# --- certsync.result/1 -----------------------------------------------------------------------------


class ResultCertificate(TypedDict, total=False):
    """The certificate a result is about (vault, name and version are checked; contracts.md)."""

    vault: str
    name: str
    version: str
    thumbprint: str


class RunbookStep(TypedDict, total=False):
    """One step the runbook took (or would take): `outcome` is done, already, skipped, failed, rolled-back or
    would-do; `server` names the Exchange server it ran on."""

    n: int
    action: str
    server: str
    object: str
    before: Any
    after: Any
    outcome: str
    message: str


class ServerName(TypedDict):
    """Exchange's own rendering of the new certificate's name on one server (Get-ExchangeCertificate Subject
    and Issuer) and certsync's TlsCertificateName (`expected`); `matches` ignoring case, Exchange's rule."""

    server: str
    subject: str
    issuer: str
    expected: str
    matches: bool


class KeptCertificate(TypedDict):
    """An old certificate the runbook did not remove from a server, and why."""

    server: str
    thumbprint: str
    reason: str


class _ResultChecked(TypedDict):
    schema: str
    job_id: str
    status: str  # one of RESULT_STATUSES
    certificate: ResultCertificate


class RunbookResult(_ResultChecked, total=False):
    """A `certsync.result/1` object as `parse_result` admits it: the checked keys, then what the runbook
    may add (`steps`, `inventory`, `server_names` and `kept` are lists of objects when present; a runbook
    older than `server_names` and `kept` leaves them out)."""

    correlation_id: str
    error: str
    worker: str
    started: str
    finished: str
    steps: list[RunbookStep]
    inventory: list[dict[str, Any]]
    server_names: list[ServerName]
    kept: list[KeptCertificate]


class ServerOutcome(TypedDict):
    """What happened on (or what the probe found at) one server, in a phrase people read."""

    server: str
    outcome: str


def parse_result(data: object, job_id: str) -> RunbookResult:
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
    for key in ("steps", "inventory", "server_names", "kept"):
        items = data.get(key, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ResultError(f"the result's {key} is not a list of objects")
    return cast(RunbookResult, data)


def result_from_output(output: str, job_id: str) -> tuple[RunbookResult | None, str]:
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


def name_mismatches(result: RunbookResult | None) -> list[str]:
    """Each server whose own rendering of the name differs from certsync's, with both strings, in words."""
    found = []
    for entry in result.get("server_names", []) if result is not None else []:
        if entry.get("matches") is False:
            rendered = f"<I>{entry.get('issuer', '')}<S>{entry.get('subject', '')}"
            expected = entry.get("expected")
            found.append(f"{entry.get('server')}: Exchange renders {rendered!r}, certsync has {expected!r}")
    return found


PROOF_ACTIONS = ("restart-transport", "probe-receive-connector", "test-outbound")


class ProofResult(TypedDict):
    """One proof step the runbook ran on one server: a transport restart, a STARTTLS probe of a receive
    connector's binding, or a test of mail to Exchange Online."""

    server: str
    check: str  # the plan action
    target: str  # the connector, the binding or the service
    outcome: str
    message: str


def proof_results(result: RunbookResult | None) -> list[ProofResult]:
    """The proof steps of a result, per server, in the order the runbook ran them (the last 50)."""
    found: list[ProofResult] = []
    for step in result.get("steps", []) if result is not None else []:
        if step.get("action") not in PROOF_ACTIONS:
            continue
        target = step.get("after") if step.get("action") == "probe-receive-connector" else None
        found.append(
            {
                "server": str(step.get("server") or "(all)")[:64],
                "check": str(step.get("action")),
                "target": str(target or step.get("object") or "")[:200],
                "outcome": str(step.get("outcome") or "unknown")[:20],
                "message": str(step.get("message") or "")[:300],
            }
        )
    return found[-50:]


def kept_certificates(result: RunbookResult | None) -> list[str]:
    """Each old certificate the runbook kept on a server, and why, in words."""
    return [
        f"{entry.get('thumbprint')} on {entry.get('server')}: {entry.get('reason')}"
        for entry in (result.get("kept", []) if result is not None else [])
    ]


def server_outcomes(
    result: RunbookResult | None, servers: Sequence[str], automation_status: str
) -> list[ServerOutcome]:
    """Per server: "failed" if a step on it failed, else "rolled-back" or "succeeded" after the overall
    status (contracts.md); the overall status itself otherwise; "unknown" without a result."""
    steps = result.get("steps", []) if result is not None else []
    names = list(dict.fromkeys([*servers, *(s.get("server") for s in steps)]))
    outcomes: list[ServerOutcome] = []
    for server in names:
        if not isinstance(server, str) or not server:
            continue
        if result is None:
            outcome = "failed" if automation_status in FAILED_STATES else "unknown"
        elif any(s.get("server") == server and s.get("outcome") == "failed" for s in steps):
            outcome = "failed"
        else:
            outcome = result["status"]
        outcomes.append({"server": server, "outcome": outcome})
    return outcomes


def _json_object(text: str, what: str) -> dict:
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        raise MessageError(f"{what}: not JSON; it is not retried") from None
    if not isinstance(data, dict):
        raise MessageError(f"{what}: not a JSON object; it is not retried")
    return data
