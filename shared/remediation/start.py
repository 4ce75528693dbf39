"""Start: a `certsync.job/1` message from REMEDIATION_QUEUE becomes one Azure Automation job.

The job's name is the job id as a GUID (`job_name`), so a redelivered message finds the job it started
instead of starting a second one. Once the job exists, job-started is audited and notified and a
`certsync.track/1` message goes to TRACKING_QUEUE, visible at the first poll (`shared.remediation.track`
takes it from there).

A transient failure of Automation (5xx, 429, no connection) sends the message again with a backoff delay
and an attempt count, then moves it to the poison queue; a permanent one (4xx), a malformed message or
parameters that would carry a secret are rejected: audited, notified, not retried.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import CertsyncError
from shared.pipeline.audit import partition
from shared.remediation.automation import AutomationError, job_name
from shared.remediation.context import RemediationContext, Subject, log_info, poll_delay, retry_delay
from shared.remediation.messages import (
    JobMessage,
    MessageError,
    TrackMessage,
    check_no_secrets,
    job_parameters,
    parse_job_message,
)


@dataclass(frozen=True)
class StartOutcome:
    """What `start_job` did with one message."""

    outcome: str  # started, found, retry, poisoned, rejected
    job_id: str
    reason: str
    automation_job: str = ""
    attempt: int = 0
    delay: int = 0  # seconds until the next message (tracking or retry) becomes visible


def start_job(context: RemediationContext, message_text: str) -> StartOutcome:
    """Start the Automation job of one `certsync.job/1` message (or find the one it started before)."""
    settings = context.settings
    try:
        message = parse_job_message(message_text)
    except MessageError as exc:
        subject = Subject(exc.job_id, partition(exc.certificate))
        context.rejected(subject, str(exc), status=None, code="InvalidMessage")
        return StartOutcome("rejected", exc.job_id, str(exc))
    job, attempt = message.job, message.attempt
    subject = Subject(job.job_id, job.certificate, job.vault, job.version, job.correlation_id)
    name = job_name(job.job_id)
    try:
        parameters = job_parameters(job, settings.callback_base)
        check_no_secrets(parameters, settings.callback_secrets)
    except CertsyncError as exc:
        reason = f"job {job.job_id}: {exc}"
        context.rejected(subject, reason, status=None, code="UnsafeParameters")
        return StartOutcome("rejected", job.job_id, reason, name, attempt)
    run_on = job.plan["worker_group"]
    try:
        started = context.automation.start_job(name, settings.runbook, parameters, run_on=run_on)
    except AutomationError as exc:
        if exc.transient:
            return _start_again(context, message, subject, name, exc)
        reason = f"job {job.job_id} not started: {exc}"
        context.rejected(subject, reason, status=exc.status, code=exc.code)
        return StartOutcome("rejected", job.job_id, reason, name, attempt)

    how = "created" if started.created else "found (started by an earlier delivery; not started again)"
    summary = f"Automation job {name} {how}: runbook {settings.runbook} on worker group {run_on}"
    started_details = {"job_id": job.job_id, "automation_job": name, "run_on": run_on, "attempt": attempt}
    if job.follow_up:  # the callback and the tracker find the version's job by it
        started_details |= {"of": job.of, "follow_up": job.follow_up}
    context.record(subject, "job-started", summary, started_details)
    context.notify(subject, "job-started", summary, {"job_id": job.job_id, "automation_job": name, "run_on": run_on})
    endpoints = job.plan.get("probe") or []
    track = TrackMessage(
        job_id=job.job_id,
        automation_job=name,
        vault=job.vault,
        certificate=job.certificate,
        version=job.version,
        thumbprint=job.thumbprint,
        correlation_id=job.correlation_id,
        started_at=context.clock(),
        servers=tuple(s for s in job.plan.get("servers") or [] if isinstance(s, str)),
        probe=tuple(p for p in endpoints if isinstance(p, str)) if isinstance(endpoints, list) else (),
        last_status=started.status or "",
    )
    delay = poll_delay(0, settings)
    context.tracking.send(track.to_json(), delay)
    log_info(subject, "job %s: Automation job %s %s; first poll in %d s", job.job_id, name, how, delay)
    return StartOutcome("started" if started.created else "found", job.job_id, summary, name, attempt, delay)


def _start_again(
    context: RemediationContext, message: JobMessage, subject: Subject, name: str, exc: AutomationError
) -> StartOutcome:
    """After a transient failure: the message again, later, or to the poison queue after the last attempt."""
    attempt = message.attempt
    job_id = message.job.job_id
    if attempt + 1 >= context.settings.start_attempts:
        # Without the attempt counter: moved back to the queue, the message starts over.
        context.jobs_poison.send(message.to_json(attempt=0))
        reason = (
            f"job {job_id} not started after {attempt + 1} attempts ({exc}); the message is in"
            f" {context.jobs_poison.name}: move it back to {context.jobs.name} once Automation answers"
        )
        context.record(subject, "job-poisoned", reason, {"job_id": job_id, "stage": "start", "attempts": attempt + 1})
        context.notify(subject, "job-poisoned", reason, {"job_id": job_id, "stage": "start"})
        return StartOutcome("poisoned", job_id, reason, name, attempt)
    delay = retry_delay(attempt, exc.retry_after, context.settings)
    context.jobs.send(message.to_json(attempt=attempt + 1), delay)
    reason = f"job {job_id}: start attempt {attempt + 1} failed ({exc}); trying again in {delay} s"
    context.record(
        subject,
        "job-retry",
        reason,
        {"job_id": job_id, "stage": "start", "status": exc.status, "attempt": attempt + 1, "delay_seconds": delay},
    )
    return StartOutcome("retry", job_id, reason, name, attempt + 1, delay)
