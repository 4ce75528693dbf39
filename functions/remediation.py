"""Remediation jobs: start them (REMEDIATION_QUEUE), track them (TRACKING_QUEUE, which also carries the
discovery jobs' `certsync.discovery-track/1` messages), take the runbook's result (POST /api/jobs/{job_id}/result).

Each function decodes its trigger and calls `shared.remediation.service.Remediation`; the retry policy lives
there. A queue function returns normally whenever the message was settled (started, re-sent with a
delay, poisoned or rejected), so the host deletes it; it raises only when Storage could not take the
follow-up message (or on a bug), and then the host's own retries and `-poison` queue apply.

The service and the Azure SDKs are imported on first use, not at import: cold start stays close to a
bare `import azure.functions`.
"""

from __future__ import annotations

import json
import logging

import azure.functions as func

bp = func.Blueprint()
log = logging.getLogger("certsync")


@bp.function_name("start_remediation_job")
@bp.queue_trigger(arg_name="msg", queue_name="%REMEDIATION_QUEUE%", connection="JobsStorage")
def start_remediation_job(msg: func.QueueMessage) -> None:
    from shared.wiring import azure_remediation

    outcome = azure_remediation().start(_text(msg))
    log.info(
        "job message %s: %s",
        msg.id,
        outcome.outcome,
        extra={"certsync.job_id": outcome.job_id, "certsync.message_id": msg.id},
    )


@bp.function_name("track_remediation_job")
@bp.queue_trigger(arg_name="msg", queue_name="%TRACKING_QUEUE%", connection="JobsStorage")
def track_remediation_job(msg: func.QueueMessage) -> None:
    from shared.remediation.discovery import is_discovery_message
    from shared.wiring import azure_discovery, azure_remediation

    text = _text(msg)
    if is_discovery_message(text):  # discovery's jobs are followed on the same queue
        found = azure_discovery().track(text)
        log.info("discovery tracking message %s: %s (%s)", msg.id, found.outcome, found.worker_group)
        return
    outcome = azure_remediation().track(text)
    log.info(
        "tracking message %s: %s",
        msg.id,
        outcome.outcome,
        extra={"certsync.job_id": outcome.job_id, "certsync.message_id": msg.id},
    )


@bp.function_name("remediation_result")
@bp.route(route="jobs/{job_id}/result", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def remediation_result(req: func.HttpRequest) -> func.HttpResponse:
    from shared.errors import CertsyncError
    from shared.wiring import azure_remediation

    # Only the webhook-* headers are passed on: the function key and any Authorization stay here.
    headers = {k: v for k, v in req.headers.items() if k.lower().startswith("webhook-")}
    try:
        response = azure_remediation().accept_result(req.route_params.get("job_id", ""), headers, req.get_body())
    except CertsyncError as exc:  # storage unreachable or a setting wrong: the message names it
        log.error("result callback not taken: %s", exc)
        return _json({"error": str(exc)}, 503)
    return _json(response.body, response.status_code)


def _text(msg: func.QueueMessage) -> str:
    # Bytes that are not UTF-8 are kept visible (replaced), so the service rejects the message as not JSON.
    return msg.get_body().decode("utf-8", errors="replace")


def _json(payload: dict, status: int) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(payload), status_code=status, mimetype="application/json")
