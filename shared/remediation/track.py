"""Track: a `certsync.track/1` message polls one Automation job until it ends, then its result is taken.

Until the job is terminal the message is sent again with a growing visibility delay (job-status is audited
when the status changed). At the end the runbook's result (its last Output line, `certsync.result/1`; with
the job's exception and Error streams after a failure) is audited and notified as job-result, and after a
success the STARTTLS probe checks what the servers serve (`shared.remediation.proof`).

When the callback recorded the result first, tracking stops, unless it still has something to add once
the job ends: the probe after a success, or the job's own errors after a failure (`_follow_up`). After
`give_up_after` it gives up, saying so. A transient failure to read the job re-sends the message with a
backoff delay, then moves it to the poison queue; a permanent one is rejected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared.pipeline.audit import AuditEntry, partition
from shared.pipeline.jobs import RemediationRequest
from shared.remediation.automation import FAILED_STATES, AutomationError, AutomationJob
from shared.remediation.context import (
    RemediationContext,
    Subject,
    entries,
    error_text,
    log_info,
    plan_of,
    poll_delay,
    retry_delay,
)
from shared.remediation.journal import (
    NEEDS_PERSON,
    RESUME,
    ROLL_BACK,
    Decision,
    JournalEntry,
    JournalError,
    decide,
    stored_entries,
)
from shared.remediation.messages import (
    JobMessage,
    MessageError,
    RunbookResult,
    TrackMessage,
    parse_track_message,
    result_from_output,
)
from shared.remediation.proof import prove


@dataclass(frozen=True)
class TrackOutcome:
    """What `track_job` did with one message."""

    outcome: str  # polling, recorded, recorded-errors, already-recorded, probed, retry, poisoned, rejected, gave-up
    job_id: str
    reason: str
    status: str = ""  # the Automation job status seen
    delay: int = 0
    result: RunbookResult | None = None
    probe: list[dict[str, Any]] | None = None


def track_job(context: RemediationContext, message_text: str) -> TrackOutcome:
    """Poll the job of one `certsync.track/1` message; report it when it has ended."""
    try:
        track = parse_track_message(message_text)
    except MessageError as exc:
        subject = Subject(exc.job_id, partition(exc.certificate))
        context.rejected(subject, str(exc), status=None, code="InvalidMessage")
        return TrackOutcome("rejected", exc.job_id, str(exc))
    subject = Subject(track.job_id, track.certificate, track.vault, track.version, track.correlation_id)
    history = list(context.audit.history(track.certificate))
    recorded = entries(history, "job-result", track.job_id)
    follow_up = _follow_up(track, recorded[-1], history) if recorded else None
    if recorded and follow_up is None:
        via = str(recorded[-1].details.get("via") or "?")
        reason = f"job {track.job_id}: its result was recorded already (via {via}); tracking stops"
        log_info(subject, "%s", reason)
        return TrackOutcome("already-recorded", track.job_id, reason)
    if context.clock() - track.started_at > context.settings.give_up_after:
        return _give_up(context, track, subject, recorded=bool(recorded))

    try:
        job = context.automation.get_job(track.automation_job)
    except AutomationError as exc:
        if exc.transient:
            return _poll_again(context, track, subject, exc)
        reason = f"job {track.job_id}: cannot read Automation job {track.automation_job}: {exc}; tracking stops"
        context.rejected(subject, reason, status=exc.status, code=exc.code)
        return TrackOutcome("rejected", track.job_id, reason)

    if not job.terminal:
        if job.status != track.last_status:
            context.record(
                subject,
                "job-status",
                f"Automation job {track.automation_job} is {job.status}",
                {"job_id": track.job_id, "automation_job": track.automation_job, "status": job.status},
            )
        following = track.next(polls=track.polls + 1, failures=0, last_status=job.status)
        delay = poll_delay(following.polls, context.settings)
        context.tracking.send(following.to_json(), delay)
        return TrackOutcome("polling", track.job_id, f"{job.status}; next poll in {delay} s", job.status, delay)

    if follow_up == "probe":  # the callback brought the result; the poll only waited for the job to end
        probes = prove(context, track, subject) if job.status == "Completed" else None
        return TrackOutcome("probed", track.job_id, "result recorded by the callback", job.status, probe=probes)
    if follow_up == "errors":  # the callback reported a failure; the job's own errors complete the story
        return _record_job_errors(context, track, subject, job)
    return _record_end(context, track, subject, job)


def _record_end(context: RemediationContext, track: TrackMessage, subject: Subject, job: AutomationJob) -> TrackOutcome:
    """The job has ended and nothing is recorded: its result from the Output (and errors), then the probe."""
    try:
        output = context.automation.output(track.automation_job)
        streams = context.automation.error_streams(track.automation_job) if job.status in FAILED_STATES else []
    except AutomationError as exc:
        if exc.transient:
            return _poll_again(context, track, subject, exc)
        result, errors = None, [f"cannot read the job's output: {exc}"]
    else:
        result, problem = result_from_output(output, track.job_id)
        errors = [problem] if problem else []
        if job.status in FAILED_STATES:
            errors = [*(e for e in (job.exception, *streams) if e), *errors]
    error = error_text(errors)
    # The callback may have recorded the result while we read the output.
    if entries(context.audit.history(track.certificate), "job-result", track.job_id):
        return TrackOutcome("already-recorded", track.job_id, "the callback recorded the result meanwhile")
    if not context.record_result(subject, track.automation_job, job.status, result, error, "poll", track.servers):
        return TrackOutcome("already-recorded", track.job_id, "another instance recorded the result meanwhile")
    probes = None
    if job.status == "Completed" and result is not None and result["status"] == "succeeded":
        probes = prove(context, track, subject)
    if result is None:
        decide_from_journal(context, track, subject, job.status)
    return TrackOutcome("recorded", track.job_id, error or job.status, job.status, result=result, probe=probes)


MAX_FOLLOW_UPS = 3  # follow-up jobs of one version's job; after that the decision is someone's


def decide_from_journal(context: RemediationContext, track: TrackMessage, subject: Subject, status: str) -> Decision:
    """A job that ended without a result: what the journal of the version's job and its follow-ups (the
    `job-journal` rows the callback stored) says to do. Audited and notified as `job-decision`; a resume or
    roll-back is queued as a follow-up job (its own job id) on the remediation queue."""
    history = list(context.audit.history(track.certificate))
    started = entries(history, "job-started", track.job_id)
    of = next((str(e.details["of"]) for e in started if e.details.get("of")), track.job_id)
    follow_ups = [e for e in history if e.kind == "job-started" and e.details.get("of") == of]
    jobs = list(dict.fromkeys([of, *(str(e.details.get("job_id")) for e in follow_ups)]))
    plan = plan_of(history, of)
    try:
        journal = _merged(history, jobs)
    except JournalError as exc:
        journal, problem = [], str(exc)
    else:
        problem = ""
    names = [str(e.details.get("follow_up")) for e in follow_ups]
    resumes = sum(1 for n in names if n.startswith(RESUME))
    if plan is None:
        decision = Decision(NEEDS_PERSON, f"the plan of job {of} is not in the audit trail")
    elif problem:
        decision = Decision(NEEDS_PERSON, f"the job's journal cannot be read: {problem}")
    else:
        decision = decide(plan, journal, status, resumes=resumes)
    queued = ""
    if decision.kind in (RESUME, ROLL_BACK) and decision.plan is not None and plan is not None:
        if len(set(names)) >= MAX_FOLLOW_UPS:
            decision = Decision(
                NEEDS_PERSON, f"{decision.reason}; {len(set(names))} follow-up jobs ran already, so none is queued"
            )
        else:
            queued = _queue_follow_up(context, track, plan, decision, names)
    summary = f"job {track.job_id} ended {status} without a result; its journal says {decision.kind}: {decision.reason}"
    if queued:
        summary += f"; follow-up job {queued} queued"
    details: dict[str, Any] = {
        "job_id": track.job_id,
        "of": of,
        "decision": decision.kind,
        "reason": decision.reason,
        "entries": len(journal),
        "follow_up_job": queued,
        "steps": (decision.plan or {}).get("steps", []) if decision.kind == ROLL_BACK else [],
    }
    context.record(subject, "job-decision", summary, details)
    context.notify(subject, "job-decision", summary, {k: v for k, v in details.items() if k != "steps"})
    return decision


def _merged(history: Sequence[AuditEntry], jobs: Sequence[str]) -> list[JournalEntry]:
    """The journal entries of the version's job and its follow-ups, in the order they ran, numbered anew."""
    merged: list[JournalEntry] = []
    for job in jobs:
        merged += stored_entries(history, job)
    return [dataclasses.replace(e, seq=i) for i, e in enumerate(merged)]


def _queue_follow_up(
    context: RemediationContext, track: TrackMessage, plan: dict[str, Any], decision: Decision, names: list[str]
) -> str:
    """The decision's plan as a follow-up `certsync.job/1` on the remediation queue; its job id."""
    assert decision.plan is not None
    number = sum(1 for n in names if n.startswith(decision.kind)) + 1
    certificate = plan.get("certificate") or {}
    request = RemediationRequest(
        vault=track.vault,
        certificate=track.certificate,
        version=track.version,
        secret_id=str(certificate.get("secret_id") or ""),
        thumbprint=track.thumbprint,
        correlation_id=track.correlation_id,
        plan=decision.plan,
        follow_up=f"{decision.kind}-{number}",
    )
    context.jobs.send(JobMessage(request).to_json(attempt=0))
    return request.job_id


def _poll_again(
    context: RemediationContext, track: TrackMessage, subject: Subject, exc: AutomationError
) -> TrackOutcome:
    """After a transient failure: poll again later, or to the poison queue after `poll_failures` in a row."""
    failures = track.failures + 1
    if failures >= context.settings.poll_failures:
        context.tracking_poison.send(track.next(failures=0).to_json())
        reason = (
            f"job {track.job_id}: Automation job {track.automation_job} could not be read {failures} times in a"
            f" row ({exc}); the tracking message is in {context.tracking_poison.name}: move it back to"
            f" {context.tracking.name} to track the job again"
        )
        context.record(subject, "job-poisoned", reason, {"job_id": track.job_id, "stage": "poll", "attempts": failures})
        context.notify(subject, "job-poisoned", reason, {"job_id": track.job_id, "stage": "poll"})
        return TrackOutcome("poisoned", track.job_id, reason)
    delay = retry_delay(failures - 1, exc.retry_after, context.settings)
    context.tracking.send(track.next(failures=failures).to_json(), delay)
    reason = f"job {track.job_id}: poll failed ({exc}); polling again in {delay} s"
    context.record(
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


def _give_up(context: RemediationContext, track: TrackMessage, subject: Subject, *, recorded: bool) -> TrackOutcome:
    hours = context.settings.give_up_after.total_seconds() / 3600
    reason = (
        f"job {track.job_id}: Automation job {track.automation_job} did not end within {hours:g} h (last status"
        f" {track.last_status or 'unknown'}); certsync stopped tracking it: check the job in the Automation account"
    )
    if recorded:  # only the probe was pending: the result itself is in the trail
        log_info(subject, "%s", reason)
    else:
        context.record_result(subject, track.automation_job, "Unknown", None, reason, "poll", track.servers)
    return TrackOutcome("gave-up", track.job_id, reason, track.last_status)


def _follow_up(track: TrackMessage, result_entry: AuditEntry, history: Sequence[AuditEntry]) -> str | None:
    """What a result the callback recorded leaves to the poll, once the job has ended: "probe" the
    servers after a success, record the job's own "errors" after a failure, or nothing."""
    details = result_entry.details
    if details.get("via") != "callback":
        return None
    status = (details.get("result") or {}).get("status")
    if status == "succeeded" and track.probe and not entries(history, "probe", track.job_id):
        return "probe"
    ended = [e for e in entries(history, "job-status", track.job_id) if e.details.get("ended")]
    if status in ("failed", "rolled-back") and not ended:
        return "errors"
    return None


def _record_job_errors(
    context: RemediationContext, track: TrackMessage, subject: Subject, job: AutomationJob
) -> TrackOutcome:
    """The Automation job of a failure the callback reported has ended: its exception and Error streams."""
    try:
        streams = context.automation.error_streams(track.automation_job) if job.status in FAILED_STATES else []
    except AutomationError as exc:
        if exc.transient:
            return _poll_again(context, track, subject, exc)
        streams = [f"cannot read the job's Error streams: {exc}"]
    error = error_text([e for e in (job.exception, *streams) if e])
    context.record(
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
