"""HTTP: run a blocked version again, or approve one (`shared.pipeline.blocks`), as `certsync retry` and
`certsync approve` do; and the timer that runs the versions due again.

- `POST /api/certificates/{name}/retry` (function key): the body, optional, is `{"version": ..., "vault":
  ...}`; without a version, the newest blocked or waiting version of the certificate.
- `POST /api/certificates/{name}/versions/{version}/approve` (function key): the body is `{"reason":
  "...", "vault": ...}`; refused (409) for a certificate that is expired, not yet valid, or blocked for a
  reason no approval overrides.

Who asked is the caller's principal as App Service Authentication (Entra sign-in) passes it
(`x-ms-client-principal-name`), else "function key". Each answers the pipeline's outcome as JSON (200),
or one line of JSON `{"error": ...}`: 400 for a bad request, 409 refused, 503 when Key Vault or Storage
cannot be used now. `retry_due_versions` runs every 5 minutes: transient blocks whose backoff has passed,
plans whose maintenance window has opened.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import azure.functions as func

from shared.times import utc_now

if TYPE_CHECKING:
    from shared.pipeline.process import Outcome

bp = func.Blueprint()
log = logging.getLogger("certsync")
clock = utc_now  # tests replace it
MAX_BODY_BYTES = 64 * 1024
PRINCIPAL_HEADER = "x-ms-client-principal-name"


@bp.function_name("retry_version")
@bp.route(route="certificates/{name}/retry", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def retry_version(req: func.HttpRequest) -> func.HttpResponse:
    from shared.wiring import azure_pipeline

    def run(body: dict) -> Outcome:
        version = _text(body, "version") or None
        return azure_pipeline().retry(req.route_params.get("name", ""), version, by=_caller(req), vault=_vault(body))

    return _answer(req, run)


@bp.function_name("approve_version")
@bp.route(route="certificates/{name}/versions/{version}/approve", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def approve_version(req: func.HttpRequest) -> func.HttpResponse:
    from shared.wiring import azure_pipeline

    def run(body: dict) -> Outcome:
        params = req.route_params
        reason = _text(body, "reason")
        return azure_pipeline().approve(
            params.get("name", ""), params.get("version", ""), reason, by=_caller(req), vault=_vault(body)
        )

    return _answer(req, run)


@bp.function_name("retry_due_versions")
@bp.timer_trigger(schedule="0 */5 * * * *", arg_name="timer", run_on_startup=False, use_monitor=True)
def retry_due_versions(timer: func.TimerRequest) -> None:
    from shared.wiring import azure_reconciler

    report = azure_reconciler().retry_due(clock())
    if report.processed or report.failures:
        log.log(
            logging.WARNING if report.failures else logging.INFO,
            "versions due again: %d run (%s)%s",
            len(report.processed),
            ", ".join(f"{p['certificate']}/{p['version']}: {p['outcome']}" for p in report.processed[:20]),
            f"; {'; '.join(report.failures)}" if report.failures else "",
        )


def _answer(req: func.HttpRequest, run: Callable[[dict], Outcome]) -> func.HttpResponse:
    from shared.errors import CertsyncError
    from shared.pipeline.sources import SourceError

    body = req.get_body()
    if len(body) > MAX_BODY_BYTES:
        return _json({"error": "request body: larger than 64 KiB; send a small JSON object"}, 413)
    try:
        parsed = json.loads(body or b"{}")
    except (ValueError, RecursionError):
        return _json({"error": 'request body: not JSON; send e.g. {"reason": "private CA, checked by PKI team"}'}, 400)
    if not isinstance(parsed, dict):
        return _json({"error": "request body: send a JSON object"}, 400)
    try:
        outcome = run(parsed)
    except SourceError as exc:
        return _json({"error": str(exc)}, 503 if exc.transient else 404 if exc.kind == "not-found" else 400)
    except CertsyncError as exc:
        status = 409 if ": refused" in str(exc) else 503 if getattr(exc, "transient", False) else 400
        return _json({"error": str(exc)}, status)
    return _json(outcome.to_dict(), 200)


def _text(body: dict, key: str) -> str:
    from shared.errors import CertsyncError

    value = body.get(key, "")
    if not isinstance(value, str):
        raise CertsyncError(f"request body: {key} must be text")
    return value


def _vault(body: dict) -> str | None:
    return _text(body, "vault") or None


def _caller(req: func.HttpRequest) -> str:
    """Who asked: the Entra principal App Service Authentication signed in, else the function key."""
    return (req.headers.get(PRINCIPAL_HEADER) or "").strip()[:200] or "function key"


def _json(payload: dict, status: int) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(payload), status_code=status, mimetype="application/json")
