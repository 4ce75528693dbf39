"""Callback: the runbook's own POST of its `certsync.result/1` to /api/jobs/{job_id}/result, an alternative
to waiting for the poll.

The body is checked before anything is written: its size, its Standard Webhooks signature (HMAC with
CERTSYNC_CALLBACK_SECRET over the raw body; an unauthenticated body is only logged, it could name any
certificate), the job id in the URL, the result's schema and that its certificate is this job's. A result
for a job that was started and has none yet is audited and notified as job-result (via callback); a second
one is accepted and not recorded again.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.errors import CertsyncError
from shared.notify.signing import SignatureError, verify
from shared.pipeline.audit import AuditEntry
from shared.pipeline.contract import JOURNAL_SCHEMA
from shared.pipeline.jobs import job_id as derive_job_id
from shared.remediation.automation import job_name
from shared.remediation.context import RemediationContext, Subject, entries, servers_of
from shared.remediation.context import entries as entries_of
from shared.remediation.journal import JournalError, journal_rows, parse_journal, stored_entries
from shared.remediation.messages import ResultError, check_no_secrets, parse_result

log = logging.getLogger("certsync")

CALLBACK_BODY_LIMIT = 1024 * 1024
_JOB_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class CallbackResponse:
    """The HTTP answer to the runbook: a status code and a JSON body."""

    status_code: int
    body: dict[str, Any]


def accept_result(
    context: RemediationContext, job_id: str, headers: Mapping[str, str], body: bytes
) -> CallbackResponse:
    """The runbook's POSTed result: checked (signature, schema, job) and audited once."""
    settings = context.settings
    safe_id = job_id if _JOB_ID.fullmatch(job_id or "") else "(malformed id)"
    if not settings.callback_secrets:
        log.warning("result callback for job %s refused: CERTSYNC_CALLBACK_SECRET is not set", safe_id)
        return CallbackResponse(503, {"error": "the result callback is not configured (CERTSYNC_CALLBACK_SECRET)"})
    if len(body) > CALLBACK_BODY_LIMIT:
        return CallbackResponse(413, {"error": f"the result is larger than {CALLBACK_BODY_LIMIT} bytes"})
    try:
        verify(settings.callback_secrets, headers, body, at=context.clock())
    except SignatureError as exc:
        # Unauthenticated: nothing is written (it could name any certificate), only this warning.
        log.warning("result callback for job %s refused: %s", safe_id, exc, extra={"certsync.job_id": safe_id})
        return CallbackResponse(401, {"error": f"signature rejected: {exc}"})
    if safe_id != job_id:
        return CallbackResponse(400, {"error": "the job id in the URL is not 32 lower-case hex digits"})
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return CallbackResponse(400, {"error": "the body is not JSON"})
    if isinstance(data, dict) and data.get("schema") == JOURNAL_SCHEMA:
        return accept_journal(context, job_id, data)
    try:
        result = parse_result(data, job_id)
    except ResultError as exc:
        return CallbackResponse(400, {"error": str(exc)})
    certificate = result["certificate"]
    history = list(context.audit.history(certificate["name"]))
    if not _is_this_jobs(history, certificate, job_id):
        return CallbackResponse(400, {"error": "the result's certificate (vault, name, version) is not this job's"})
    started = entries(history, "job-started", job_id)
    if not started:
        return CallbackResponse(404, {"error": f"no job {job_id} was started for certificate {certificate['name']}"})
    if entries(history, "job-result", job_id):
        return CallbackResponse(200, {"accepted": True, "recorded": False})
    latest = started[-1]
    subject = Subject(job_id, certificate["name"], latest.vault, latest.version, latest.correlation_id)
    automation_job = latest.details.get("automation_job") or job_name(job_id)
    servers = servers_of(history, job_id)
    # The runbook posts before its job ends: Automation reports it Running at this point.
    recorded = context.record_result(subject, automation_job, "Running", result, "", "callback", servers)
    return CallbackResponse(200, {"accepted": True, "recorded": recorded})


def accept_journal(context: RemediationContext, job_id: str, data: dict[str, Any]) -> CallbackResponse:
    """The runbook's journal entries (`certsync.journal/1`, signed like a result): checked, and the ones not
    stored before audited as `job-journal` rows, each cut to fit a Table entity. The body names the job's
    certificate (vault, name, version), which must be this job's, so the rows land in its partition."""
    certificate = data.get("certificate")
    if not isinstance(certificate, dict) or not all(
        isinstance(certificate.get(k), str) for k in ("vault", "name", "version")
    ):
        return CallbackResponse(400, {"error": "the journal's certificate needs vault, name and version"})
    history = list(context.audit.history(certificate["name"]))
    if not _is_this_jobs(history, certificate, job_id):
        return CallbackResponse(400, {"error": "the journal's certificate (vault, name, version) is not this job's"})
    try:
        entries = parse_journal(data, job_id)
        check_no_secrets({"journal": json.dumps(data.get("entries"), ensure_ascii=False)})
    except (JournalError, CertsyncError) as exc:
        return CallbackResponse(400, {"error": str(exc)})
    started = entries_of(history, "job-started", job_id)
    if not started:
        return CallbackResponse(404, {"error": f"no job {job_id} was started for certificate {certificate['name']}"})
    latest = started[-1]
    subject = Subject(job_id, certificate["name"], latest.vault, latest.version, latest.correlation_id)
    known = {e.seq for e in stored_entries(history, job_id)}
    new = [e for e in entries if e.seq not in known]
    for summary, details in journal_rows(new, job_id):
        context.record(subject, "job-journal", summary, details)
    return CallbackResponse(200, {"accepted": True, "stored": len(new)})


def _is_this_jobs(history: list[AuditEntry], certificate: Mapping[str, Any], job_id: str) -> bool:
    """Whether `certificate` (vault, name, version) is job `job_id`'s: the version's own job, or a follow-up
    certsync started for it (its job-started entry names the version's job as `of`)."""
    of = derive_job_id(str(certificate["vault"]), str(certificate["name"]), str(certificate["version"]))
    if of == job_id:
        return True
    return any(e.details.get("of") == of for e in entries(history, "job-started", job_id))
