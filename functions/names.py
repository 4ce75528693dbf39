"""HTTP: the TlsCertificateName of a posted public certificate, for scripts and portals.

`POST /api/tls-certificate-name` with a PEM, DER or PKCS#7 body returns what `certsync name --json`
prints. A PKCS#12 body is refused: a private key has no business in this request.
"""

from __future__ import annotations

import json

import azure.functions as func

from shared.errors import CertsyncError
from shared.x509.containers import load_certificates
from shared.x509.reports import name_report

bp = func.Blueprint()

MAX_BODY_BYTES = 1024 * 1024


@bp.function_name("tls_certificate_name")
@bp.route(route="tls-certificate-name", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def tls_certificate_name(req: func.HttpRequest) -> func.HttpResponse:
    body = req.get_body()
    if len(body) > MAX_BODY_BYTES:
        return _json({"error": "request body: larger than 1 MiB; post one certificate and its chain"}, 413)
    try:
        report = name_report(load_certificates(body, source="request body", accept_pkcs12=False))
    except CertsyncError as exc:
        return _json({"error": str(exc)}, 400)
    return _json(report, 200)


def _json(payload: dict, status: int) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(payload), status_code=status, mimetype="application/json")
