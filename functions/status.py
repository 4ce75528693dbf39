"""HTTP: the read-only status page (`GET /api/status`, function key), for an admin's browser.

It renders the daily reconciliation's status snapshots (`shared.notify.status_page`); `?format=json` returns the
same snapshots as JSON. Nothing is imported until a request comes: the snapshots are read through
`shared.wiring.azure_snapshots` (Table storage), looked up on the module at call time.
"""

from __future__ import annotations

import json

import azure.functions as func

bp = func.Blueprint()


@bp.function_name("status_page")
@bp.route(route="status", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def status_page(req: func.HttpRequest) -> func.HttpResponse:
    import datetime as dt

    import shared.wiring
    from shared.errors import CertsyncError
    from shared.notify.status_page import PAGE_HEADERS, render_status_page, render_unavailable_page, sorted_snapshots

    wanted = (req.params.get("format") or "html").strip().lower()
    if wanted not in ("html", "json"):
        return _json({"error": f"format={wanted!r}: use format=html (the default) or format=json"}, 400)
    now = dt.datetime.now(dt.timezone.utc)
    try:
        snapshots = shared.wiring.azure_snapshots()
    except CertsyncError as exc:  # storage unreachable or misconfigured: the message names the setting
        if wanted == "json":
            return _json({"error": str(exc)}, 503)
        return _page(render_unavailable_page(str(exc), now), 503, PAGE_HEADERS)
    if wanted == "json":
        generated = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        return _json({"generated_at": generated, "snapshots": sorted_snapshots(snapshots, now)}, 200)
    return _page(render_status_page(snapshots, now), 200, PAGE_HEADERS)


def _page(body: str, status: int, headers: dict[str, str]) -> func.HttpResponse:
    return func.HttpResponse(body, status_code=status, headers=headers, mimetype="text/html", charset="utf-8")


def _json(payload: dict, status: int) -> func.HttpResponse:
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    return func.HttpResponse(json.dumps(payload), status_code=status, headers=headers, mimetype="application/json")
