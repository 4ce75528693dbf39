"""A TEMPORARY reference planner: spec §2 (`/work/shared/spec/exchange-inventory.md`) turned into a
`certsync.plan/2` document (§3), so that the property harness (`tests/test_planner_properties.py`) runs
before the real planner lands.

The integrator replaces it with `shared.pipeline.planner` (one line: `plan_for` in
test_planner_properties.py) and deletes this file. It is an oracle for the harness only: it reads the
documents as dicts, uses the model's own match rule (`tests.exchange_model`), and covers what generated
topologies exercise. Not covered (the real planner's job, with its own tests): the assessment of the new
certificate (`certsync check`), targets files, `--old`, accepted-domain enforcement by setting, worker
groups on Edge servers (every Edge step here is `manual`).

Its one reading of a point the spec leaves open: Exchange refuses to remove a certificate a send
connector's TlsCertificateName still selects (`exchange-azure-facts.md` §1.5, win-acme #1754), even when
a renewed copy with the same names is installed. So when a renewal keeps the names, the old copy on a
send connector's source servers goes to `kept`, although §2.5 says "never leave two behind on purpose".
"""

from __future__ import annotations

from typing import Any

from tests.exchange_model import DNS_NAME, covers, first_cn, render_services, selects, services

PLAN_SCHEMA = "certsync.plan/2"


def _step(phase: str, action: str, server: str | None, obj: str, prop: str | None, previous: Any, value: Any) -> dict:
    return {
        "phase": phase,
        "action": action,
        "server": server,
        "object": obj,
        "property": prop,
        "previous": previous,
        "value": value,
    }


def _short(name: str) -> str:
    return name.split(".")[0].upper()


def plan(inventory: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The plan/2 document for deploying `new` (the facts `tests.topologies` describes) to `inventory`."""
    new_name = new["tls_certificate_name"]
    new_view = {"Subject": new["subject"], "Issuer": new["issuer"]}
    document: dict[str, Any] = {
        "schema": PLAN_SCHEMA,
        "certificate": {"thumbprint": new["thumbprint"], "tls_certificate_name": new_name},
        "servers": [],
        "blocked": None,
        "warnings": [],
        "steps": [],
        "kept": [],
    }

    def block(reason: str, fix: str) -> dict[str, Any]:
        document["blocked"] = {"reason": reason, "fix": fix}
        document["steps"] = []
        return document

    cn = first_cn(new["subject"])
    if not cn:
        return block("the new certificate has no CN: Exchange's <S> cannot name it", "issue it with a CN")
    if not DNS_NAME.match(cn):
        return block(f"the new certificate's first CN {cn!r} is not a DNS name", "issue it with a host name as CN")
    if not new.get("exportable", True):
        return block("the new certificate's private key is not exportable", "set exportable: true in its policy")

    hybrid = inventory.get("hybrid_configuration") or {}
    send = inventory.get("send_connectors") or []
    receive = inventory.get("receive_connectors") or []
    certificates = inventory.get("certificates") or []
    server_names = {s["Name"].upper() for s in inventory.get("servers") or []}
    edges = {s["Name"].upper() for s in inventory.get("servers") or [] if s.get("IsEdgeServer")}
    internal = {
        s["Name"].upper(): (s.get("InternalTransportCertificateThumbprint") or "").upper()
        for s in inventory.get("servers") or []
    }
    unreadable = set()
    for error in inventory.get("errors") or []:
        where = str(error.get("where"))
        if where.upper() in server_names:
            unreadable.add(where.upper())
        else:
            return block(f"discovery could not run {where}: {error.get('message')}", f"fix {where} and rediscover")

    # The old certificates: selected today by a connector or the hybrid configuration, and replaced by the
    # new one (first CN or a DNS name among the new certificate's DNS names).
    new_dns = {d.casefold() for d in new.get("dns_names") or []}
    names_in_use = [c.get("TlsCertificateName") for c in [*send, *receive]] + [hybrid.get("TlsCertificateName")]
    old = [
        c
        for c in certificates
        if c["Thumbprint"].upper() != new["thumbprint"].upper()
        and any(selects(n, c) for n in names_in_use)
        and ({(first_cn(c["Subject"]) or "").casefold(), *(d.casefold() for d in c.get("CertificateDomains") or [])})
        & new_dns
    ]

    def selects_old(name: str | None) -> bool:
        return any(selects(name, c) for c in old)

    servers = {
        _short(s)
        for s in [
            *(hybrid.get("SendingTransportServers") or []),
            *(hybrid.get("ReceivingTransportServers") or []),
            *(hybrid.get("EdgeTransportServers") or []),
        ]
    }
    for connector in send:
        if selects_old(connector.get("TlsCertificateName")):
            servers |= {_short(s) for s in connector.get("SourceTransportServers") or []}
    for connector in receive:
        if selects_old(connector.get("TlsCertificateName")):
            servers.add(_short(connector["Server"]))
    document["servers"] = sorted(servers)
    if servers & unreadable:
        names = ", ".join(sorted(servers & unreadable))
        return block(f"discovery could not read {names}, which the plan must change", f"fix access to {names}")
    for name in sorted(unreadable):
        document["warnings"].append(f"discovery could not read {name} (not in this plan)")

    # Exchange Online (§2.4).
    exo = inventory.get("exo") or {}
    exo_writes = []
    for outbound in exo.get("outbound_connectors") or []:
        domain = outbound.get("TlsDomain")
        if (
            outbound.get("ConnectorType") == "OnPremises"
            and outbound.get("TlsSettings") == "DomainValidation"
            and domain
            and not covers(new_dns, domain)
        ):
            return block(
                f"Exchange Online's outbound connector {outbound['Identity']} validates {domain}, which the new "
                "certificate does not cover",
                f"add {domain} to the certificate, or change the connector's TlsDomain",
            )
    for inbound in exo.get("inbound_connectors") or []:
        value = inbound.get("TlsSenderCertificateName")
        if inbound.get("ConnectorType") == "OnPremises" and value and not covers(new_dns, value):
            exo_writes.append(
                _step(
                    "switch",
                    "set-exo-inbound-connector",
                    None,
                    inbound["Identity"],
                    "TlsSenderCertificateName",
                    value,
                    cn,
                )
            )
    accepted = [d["DomainName"].casefold() for d in exo.get("accepted_domains") or []]
    if exo and not any(cn.casefold() == a or cn.casefold().endswith("." + a) for a in accepted):
        document["warnings"].append(f"{cn} is not an accepted domain of Exchange Online (MC1226222)")

    # Stage (§2.2).
    enabled: dict[str, frozenset[str]] = {}
    for server in sorted(servers):
        manual = {"manual": True} if server in edges else {}
        if manual:
            document["warnings"].append(f"{server}: manual: run the runbook on the Edge server")
        had = frozenset().union(*(services(c["Services"]) for c in old if _short(c["Server"]) == server))
        enabled[server] = had | {"SMTP"}
        for intermediate in new.get("intermediates") or []:
            document["steps"].append(
                _step(
                    "stage",
                    "install-intermediate",
                    server,
                    intermediate["thumbprint"],
                    None,
                    None,
                    intermediate["thumbprint"],
                )
                | {"subject": intermediate["subject"]}
                | manual
            )
        thumb = new["thumbprint"]
        document["steps"] += [
            _step("stage", "import-certificate", server, thumb, None, None, thumb) | manual,
            _step("stage", "enable-services", server, thumb, "Services", "None", sorted(enabled[server])) | manual,
            _step("stage", "check-name", server, thumb, None, None, new_name) | manual,
            _step("stage", "check-status", server, thumb, None, None, "Valid") | manual,
        ]

    # Switch (§2.3): objects that select an old certificate and would not select the new one.
    after: dict[int, str | None] = {}
    for connector in send:
        name = connector.get("TlsCertificateName")
        if selects_old(name) and not selects(name, new_view):
            after[id(connector)] = new_name
            document["steps"].append(
                _step("switch", "set-send-connector", None, connector["Identity"], "TlsCertificateName", name, new_name)
            )
    for connector in receive:
        name = connector.get("TlsCertificateName")
        if selects_old(name) and not selects(name, new_view):
            after[id(connector)] = new_name
            document["steps"].append(
                _step(
                    "switch",
                    "set-receive-connector",
                    _short(connector["Server"]),
                    connector["Identity"],
                    "TlsCertificateName",
                    name,
                    new_name,
                )
            )
    if hybrid and selects_old(hybrid.get("TlsCertificateName")) and not selects(hybrid["TlsCertificateName"], new_view):
        document["steps"].append(
            _step(
                "switch",
                "set-hybrid-configuration",
                None,
                "Hybrid Configuration",
                "TlsCertificateName",
                hybrid["TlsCertificateName"],
                new_name,
            )
        )
    document["steps"] += exo_writes

    # Retire (§2.5), judged on the names after the switch.
    for cert in old:
        server, thumb = _short(cert["Server"]), cert["Thumbprint"].upper()
        if server not in servers:
            continue
        reason = None
        on_server = [
            after.get(id(c), c.get("TlsCertificateName"))
            for c in send
            if server in {_short(s) for s in c.get("SourceTransportServers") or []}
        ]
        if internal.get(server) == thumb:
            reason = "it is the internal transport certificate"
        elif any(selects(n, cert) for n in on_server):
            reason = "a send connector still names it (Exchange refuses to remove it)"
        elif services(cert["Services"]) - enabled[server]:
            reason = "it serves " + render_services(services(cert["Services"]) - enabled[server])
        if reason:
            document["kept"].append({"server": server, "thumbprint": thumb, "reason": reason})
        else:
            document["steps"].append(
                _step("retire", "remove-certificate", server, thumb, None, None, None)
                | ({"manual": True} if server in edges else {})
            )
    return document
