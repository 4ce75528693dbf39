"""Event Grid: Key Vault certificate events into the pipeline; HTTP: a certificate's audit trail, paged.

The trigger accepts the Event Grid and the CloudEvents schema (the library hands us an `EventGridEvent`
or a `CloudEvent`), turns it back into its envelope and hands it to `shared.wiring.process_event`. An event the
pipeline settles (queued, blocked, ignored, duplicate) returns normally, and so does one that can never
succeed (malformed, `event-rejected`; a version Key Vault does not have): Event Grid is done with it. One
it cannot settle yet (Key Vault unavailable or forbidding, storage down) raises after its audit entry is
written, so Event Grid delivers it again and finally dead-letters it.

The pipeline and the Azure SDKs are imported on first use, not at import: cold start stays close to
a bare `import azure.functions`.
"""

from __future__ import annotations

import json
import logging

import azure.functions as func

bp = func.Blueprint()
log = logging.getLogger("certsync")


@bp.function_name("keyvault_certificate_events")
@bp.event_grid_trigger(arg_name="event")
def keyvault_certificate_events(event: func.EventGridEvent) -> None:
    from shared.errors import CertsyncError
    from shared.wiring import process_event

    try:
        outcome = process_event(envelope(event), f"event {event.id}")
    except CertsyncError as exc:
        if getattr(exc, "transient", True):
            log.error(
                "event %s not settled, Event Grid will retry: %s", event.id, exc, extra={"certsync.event_id": event.id}
            )
            raise
        log.warning(  # retrying cannot help: acknowledged, its audit entry says why
            "event %s acknowledged, it can never succeed: %s", event.id, exc, extra={"certsync.event_id": event.id}
        )
        return
    log.info(
        "event %s: %s",
        event.id,
        outcome.outcome,
        extra={"certsync.event_id": event.id, "certsync.correlation_id": outcome.correlation_id},
    )


def envelope(event: func.EventGridEvent | func.CloudEvent) -> dict:
    """The event as it was on the wire, in its own schema."""
    if isinstance(event, func.CloudEvent):
        return {
            "specversion": event.specversion,
            "id": event.id,
            "source": event.source,
            "type": event.type,
            "subject": event.subject,
            "time": event.time.isoformat() if event.time else None,
            "data": event.get_json(),
        }
    return {
        "id": event.id,
        "topic": event.topic,
        "subject": event.subject,
        "eventType": event.event_type,
        "eventTime": event.event_time.isoformat() if event.event_time else None,
        "dataVersion": event.data_version,
        "data": event.get_json(),
    }


@bp.function_name("certificate_history")
@bp.route(route="certificates/{name}/history", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def certificate_history(req: func.HttpRequest) -> func.HttpResponse:
    """Up to `limit` entries (default and most 1000) at or after `since`, oldest first; when more follow,
    `next` is this URL with `after` set to continue from the last entry returned."""
    from urllib.parse import urlencode, urlsplit, urlunsplit

    from shared.errors import CertsyncError
    from shared.pipeline.audit import read_page
    from shared.pipeline.sources import check_object_name
    from shared.wiring import azure_audit, history_query

    name = req.route_params.get("name", "")
    try:
        check_object_name(name)
        query = history_query(req.params)
    except CertsyncError as exc:
        return _json({"error": str(exc)}, 400)
    try:
        page = read_page(azure_audit(), name, **query)
    except CertsyncError as exc:  # storage unreachable or misconfigured: the message names the setting
        return _json({"error": str(exc)}, 503)
    payload: dict = {"certificate": name.lower(), "entries": [e.to_dict() for e in page.entries]}
    if page.after:
        url = urlsplit(req.url)
        payload["next"] = urlunsplit(("", "", url.path, urlencode({"limit": query["limit"], "after": page.after}), ""))
    return _json(payload, 200)


def _json(payload: dict, status: int) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(payload), status_code=status, mimetype="application/json")
