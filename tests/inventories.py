"""Exchange inventories (certsync.inventory/1) around certificates made at test time, for the tests that
run the pipeline: a hybrid organisation whose connectors select one deployed certificate."""

from __future__ import annotations

import datetime as dt

from shared.pipeline.inventories import InventoryRecord, InventoryStore
from shared.x509.certificate import Certificate
from tests.chains import Issued

GROUP = "hrw-exchange"
SEND = "Outbound to Office 365 - 0b9d5c6e-3f51-4d2b-9a70-2f1c8e4b7a10"

INTERNAL = {"EX01": "A1" * 20, "EX02": "A2" * 20, "EX03": "A3" * 20}


def tls_name(issued: Issued) -> str:
    cert = Certificate.from_der(issued.der)
    return f"<I>{cert.issuer}<S>{cert.subject}"


def exchange(deployed: Issued, servers=("EX01", "EX02"), senders=None, *, group: str = GROUP, **changes) -> dict:
    """A certsync.inventory/1 of a hybrid organisation whose connectors all select `deployed`, installed
    with IIS and SMTP on each of `servers`; the send connector's SourceTransportServers are `senders`
    (default: all of them), the hybrid configuration's the first two."""
    cert = Certificate.from_der(deployed.der)
    value = tls_name(deployed)
    return {
        "schema": "certsync.inventory/1",
        "worker_group": group,
        "collected_at": "2026-11-26T07:00:00Z",
        "servers": [
            {"Name": s, "ServerRole": "Mailbox", "IsEdgeServer": False,
             "InternalTransportCertificateThumbprint": INTERNAL[s]}
            for s in servers
        ],
        "certificates": [
            {"Server": s, "Thumbprint": cert.thumbprint, "Subject": str(cert.subject), "Issuer": str(cert.issuer),
             "Services": "IIS, SMTP", "Status": "Valid", "CertificateDomains": list(cert.dns_names)}
            for s in servers
        ],
        "send_connectors": [
            {"Identity": SEND, "SourceTransportServers": list(senders or servers), "TlsCertificateName": value}
        ],
        "receive_connectors": [
            {"Identity": f"{s}\\Default Frontend {s}", "Server": s, "TlsCertificateName": value} for s in servers
        ],
        "hybrid_configuration": {
            "SendingTransportServers": list(servers[:2]), "ReceivingTransportServers": list(servers[:2]),
            "TlsCertificateName": value,
        },
        "exo": None,
        "errors": [],
        **changes,
    }  # fmt: skip


def keep(
    store: InventoryStore, document: dict, *, group: str = GROUP, collected: dt.datetime | None = None
) -> InventoryRecord:
    """Keep `document` as the latest inventory of `group`, collected at `collected` (default: its own)."""
    when = collected or dt.datetime.fromisoformat(document["collected_at"].replace("Z", "+00:00"))
    record = InventoryRecord(group, when, when, {**document, "worker_group": group}, "import")
    store.put(record)
    return record
