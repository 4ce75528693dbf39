"""HTTP: start the read-only discovery of a worker group (`POST /api/discover/{worker_group}`, function key).

Answers 202 with the Automation job (started, or found when one was started for the group within the
hour); its inventory is stored once the job ends (followed on TRACKING_QUEUE). 400 for a name that is not
a worker group's, 503 when Automation or Storage cannot be used now (the message says which and why).
"""

from __future__ import annotations

import json
import logging

import azure.functions as func

bp = func.Blueprint()
log = logging.getLogger("certsync")


@bp.function_name("start_discovery")
@bp.route(route="discover/{worker_group}", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def start_discovery(req: func.HttpRequest) -> func.HttpResponse:
    from shared.errors import CertsyncError
    from shared.remediation.automation import AutomationError
    from shared.remediation.discovery import check_worker_group
    from shared.wiring import start_discovery as start

    try:
        worker_group = check_worker_group(req.route_params.get("worker_group", ""))
    except CertsyncError as exc:
        return _json({"error": str(exc)}, 400)
    try:
        outcome = start(worker_group)
    except AutomationError as exc:  # audited as discovery-failed by the service
        return _json({"error": str(exc)}, 503 if exc.transient or exc.status is None else 502)
    except CertsyncError as exc:  # a setting, or Storage
        log.error("discovery of %s not started: %s", worker_group, exc)
        return _json({"error": str(exc)}, 503)
    return _json(outcome.to_dict(), 202)


def _json(payload: dict, status: int) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(payload), status_code=status, mimetype="application/json")
