"""HTTP: the read-only status page (`GET /api/status`, function key in the `x-functions-key` header), for
an admin.

It serves `shared.wiring.status_answer`: the daily reconciliation's status snapshots rendered by
`shared.notify.status_page`, filtered, sorted and paged by the query string (`?q=&state=&expires=&sort=
&page=&certificate=`), or with `?format=json` that page's snapshots as JSON. A function key in the query
string (`?code=`) is refused with 400: send it in the header (README, "Status page"). Nothing is imported
until a request comes; the snapshots are read through `shared.wiring.azure_snapshots` (Table storage).
"""

from __future__ import annotations

import json

import azure.functions as func

bp = func.Blueprint()


@bp.function_name("status_page")
@bp.route(route="status", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def status_page(req: func.HttpRequest) -> func.HttpResponse:
    import shared.wiring
    from shared.notify.status_page import PAGE_HEADERS

    answer = shared.wiring.status_answer(dict(req.params))
    if answer.data is not None:
        headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
        return func.HttpResponse(
            json.dumps(answer.data), status_code=answer.status, headers=headers, mimetype="application/json"
        )
    return func.HttpResponse(
        answer.page, status_code=answer.status, headers=PAGE_HEADERS, mimetype="text/html", charset="utf-8"
    )
