"""What is broken right now? Mail flow predicted from an inventory (`exchange-inventory.md` §4).

For each send connector, each of its SourceTransportServers must hold a certificate the connector's
TlsCertificateName selects that is Valid and enabled for SMTP; for each receive connector, its server
must; the hybrid configuration's name must select one on each of its servers; the Exchange Online
inbound connector's TlsSenderCertificateName must be covered by what the sending servers present.
Each failure is a `certsync.doctor/1` finding with the error Exchange would log and the fix.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from shared.exchange.inventory import (
    EXO_ROOT_NAME,
    EXO_ROOT_THUMBPRINT,
    HYBRID_CONFIGURATION,
    InstalledCertificate,
    Inventory,
    server_key,
)
from shared.exchange.match import read_value
from shared.validation.assessment import host_matches
from shared.validation.lifetime import OK, ExpiryThresholds

DOCTOR_SCHEMA = "certsync.doctor/1"
SEVERITIES = ("error", "warning", "info")
EXPIRY = ExpiryThresholds()  # by the certificate's own lifetime (the defaults of CERTSYNC_EXPIRY_*)

SEND_NOT_FOUND = "454 4.7.5 The certificate specified in TlsCertificateName of the SendConnector could not be found."
RECEIVE_NOT_FOUND = "TLS negotiation failed with error NoCredentials"
EXO_NOT_ATTRIBUTED = "550 5.7.64 TenantAttribution; Relay Access Denied"
EXO_ROOT_MISSING = (
    f"Cert:\\LocalMachine\\Root lacks {EXO_ROOT_NAME} ({EXO_ROOT_THUMBPRINT}), the root of Exchange Online's "
    "certificates since MC1224565: TLS with Exchange Online fails (the remote certificate is not trusted)"
)
EXO_ROOT_URL = "https://cacerts.digicert.com/DigiCertGlobalRootG2.crt"


# What to do about a selected certificate whose Status is not Valid, in Get-ExchangeCertificate's words.
_STATUS_FIX = {
    "RevocationCheckFailure": "let {server} reach the CRL of {thumbprint}'s issuers (proxy or firewall), "
    "then check Get-ExchangeCertificate -Server {server} -Thumbprint {thumbprint} shows Valid",
    "DateInvalid": "{thumbprint} on {server} has expired or is not valid yet: renew it, then run certsync plan",
    "Revoked": "{thumbprint} on {server} is revoked: issue a new certificate, then run certsync plan",
    "Untrusted": "install the intermediates of {thumbprint} into Cert:\\LocalMachine\\CA on {server}",
    "Invalid": "{thumbprint} on {server} is not usable (Status {status}): run certsync check on it and fix it",
}


@dataclass(frozen=True)
class MailFlowFinding:
    server: str | None
    object: str
    kind: str  # send | receive | hybrid | exo | certificate
    tls_certificate_name: str | None
    severity: str  # error | warning | info
    error: str
    fix: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "object": self.object,
            "kind": self.kind,
            "tls_certificate_name": self.tls_certificate_name,
            "severity": self.severity,
            "error": self.error,
            "fix": self.fix,
        }


def doctor_document(findings: list[MailFlowFinding]) -> dict[str, Any]:
    return {"schema": DOCTOR_SCHEMA, "findings": [f.to_dict() for f in findings]}


def predict(inventory: Inventory, at: dt.datetime | None = None) -> list[MailFlowFinding]:
    """Every predicted failure, worst first; `at` (default: the inventory's collection time) dates expiry."""
    found: list[MailFlowFinding] = []
    organisation = inventory.organisation_errors
    for error in inventory.errors:
        found.append(
            MailFlowFinding(
                server=None if error in organisation else server_key(error.where),
                object=error.where,
                kind="certificate",
                tls_certificate_name=None,
                severity="warning",
                error=f"discovery could not read {error.where}: {error.message}",
                fix="make it readable from the Hybrid worker, then run discovery again",
            )
        )
    for connector in inventory.send_connectors:
        if connector.enabled and connector.tls_certificate_name:
            for server in connector.source_servers:
                found += _check(inventory, server, connector.identity, "send", connector.tls_certificate_name)
    for receive in inventory.receive_connectors:
        if receive.enabled and receive.tls_certificate_name:
            found += _check(inventory, receive.server, receive.identity, "receive", receive.tls_certificate_name)
    hybrid = inventory.hybrid_configuration
    if hybrid is not None and hybrid.tls_certificate_name:
        for server in hybrid.servers:
            found += _check(inventory, server, HYBRID_CONFIGURATION, "hybrid", hybrid.tls_certificate_name)
    found += _exchange_online(inventory)
    found += _exo_root(inventory)
    found += _expiring(inventory, at or inventory.collected_at)
    order = {s: n for n, s in enumerate(SEVERITIES)}
    return sorted(found, key=lambda f: order[f.severity])


def worst_is_warning_or_worse(findings: list[MailFlowFinding]) -> bool:
    return any(f.severity in ("error", "warning") for f in findings)


def _check(inventory: Inventory, server: str, identity: str, kind: str, value: str) -> list[MailFlowFinding]:
    if inventory.unread(server) is not None:
        return []  # reported once, as the discovery error
    name = read_value(value)
    selected = [c for c in inventory.certificates_on(server) if name.matches(c.name)]
    usable = [c for c in selected if c.usable]
    error = SEND_NOT_FOUND if kind in ("send", "hybrid") else RECEIVE_NOT_FOUND
    setter = {"send": "Set-SendConnector", "receive": "Set-ReceiveConnector", "hybrid": "Set-HybridConfiguration"}
    if usable:
        if len(usable) > 1:
            thumbs = ", ".join(c.thumbprint for c in usable)
            return [
                _finding(
                    server,
                    identity,
                    kind,
                    value,
                    "info",
                    f"{len(usable)} valid certificates match: {thumbs}",
                    "Exchange picks one of them; remove the superseded one (Remove-ExchangeCertificate) "
                    "once nothing else uses it",
                )
            ]
        return []
    if inventory.server(server) is None:
        return [
            _finding(
                server,
                identity,
                kind,
                value,
                "warning",
                f"{server} is not in the inventory",
                f"run discovery again, or remove {server} from {identity}",
            )
        ]
    if selected:
        cert = selected[0]
        if cert.status != "Valid":
            fix = _STATUS_FIX.get(cert.status, _STATUS_FIX["Invalid"]).format(
                server=server, thumbprint=cert.thumbprint, status=cert.status
            )
        else:
            fix = f"Enable-ExchangeCertificate -Server {server} -Thumbprint {cert.thumbprint} -Services SMTP"
        return [_finding(server, identity, kind, value, "error", error, fix)]
    candidates = [c for c in inventory.certificates_on(server) if c.usable and name.subject.matches(c.name.subject)]
    if candidates:
        fix = f"{setter[kind]} '{identity}' -TlsCertificateName '{candidates[0].name}' (certsync plan does this)"
    else:
        fix = f"import and enable for SMTP a certificate that {value!r} selects on {server} (certsync plan does this)"
    return [_finding(server, identity, kind, value, "error", error, fix)]


def _exchange_online(inventory: Inventory) -> list[MailFlowFinding]:
    exo = inventory.exo
    if exo is None:
        return []
    found = []
    hybrid = inventory.hybrid_configuration
    senders = hybrid.sending_servers + hybrid.edge_servers if hybrid else ()
    if not senders:
        senders = tuple(
            dict.fromkeys(
                s for c in inventory.send_connectors if c.cloud_services_mail_enabled for s in c.source_servers
            )
        )
    presented = [c for s in senders for c in inventory.certificates_on(s) if c.usable]
    accepted = [d.domain_name for d in exo.accepted_domains]
    for connector in exo.inbound_connectors:
        value = connector.tls_sender_certificate_name
        if connector.connector_type.lower() != "onpremises" or not connector.enabled or not value:
            continue
        if presented and not any(covers(c.domains + _first_cn(c), value) for c in presented):
            found.append(
                _finding(
                    None,
                    connector.identity,
                    "exo",
                    value,
                    "error",
                    EXO_NOT_ATTRIBUTED,
                    f"Set-InboundConnector '{connector.identity}' -TlsSenderCertificateName <a name the "
                    "on-premises certificate holds> (certsync plan does this)",
                )
            )
        if accepted and not is_accepted(value, accepted):
            found.append(
                _finding(
                    None,
                    connector.identity,
                    "exo",
                    value,
                    "warning",
                    f"{value} is not an accepted domain (MC1226222: the connector may stop working)",
                    f"New-AcceptedDomain for the domain of {value}, or use a certificate in an accepted domain",
                )
            )
    return found


def _exo_root(inventory: Inventory) -> list[MailFlowFinding]:
    """Servers whose root store lacks DigiCert Global Root G2: an error on those that exchange mail with
    Exchange Online (the hybrid configuration's servers, else the sources of cloud send connectors and the
    servers of cloud receive connectors), a warning on the others. Not recorded (None) says nothing."""
    hybrid = inventory.hybrid_configuration
    facing = set(hybrid.servers) if hybrid else set()
    if not facing:
        facing = {s for c in inventory.send_connectors if c.cloud_services_mail_enabled for s in c.source_servers}
        facing |= {c.server for c in inventory.receive_connectors if c.cloud_services_mail_enabled}
    found = []
    for server in inventory.servers:
        if server.has_exo_root is not False:
            continue
        found.append(
            _finding(
                server.name,
                server.name,
                "certificate",
                None,
                "error" if server.name in {server_key(s) for s in facing} else "warning",
                EXO_ROOT_MISSING,
                f"import {EXO_ROOT_NAME} ({EXO_ROOT_URL}) on {server.name}: Import-Certificate -FilePath "
                "DigiCertGlobalRootG2.crt -CertStoreLocation Cert:\\LocalMachine\\Root (or let Windows "
                "Update's root certificate update reach it), then run discovery again",
            )
        )
    return found


def _expiring(inventory: Inventory, at: dt.datetime | None) -> list[MailFlowFinding]:
    if at is None:
        return []
    values = [c.tls_certificate_name for c in inventory.send_connectors if c.tls_certificate_name]
    values += [c.tls_certificate_name for c in inventory.receive_connectors if c.tls_certificate_name]
    hybrid = inventory.hybrid_configuration
    if hybrid and hybrid.tls_certificate_name:
        values.append(hybrid.tls_certificate_name)
    names = [read_value(v) for v in dict.fromkeys(values)]
    found = []
    for cert in inventory.certificates:
        if cert.usable and cert.not_after and any(n.matches(cert.name) for n in names):
            left = (cert.not_after - at).days
            started = cert.not_before or cert.not_after - dt.timedelta(days=365)  # not read: a year's window
            if EXPIRY.state(started, cert.not_after, at) != OK:
                found.append(
                    _finding(
                        cert.server,
                        cert.thumbprint,
                        "certificate",
                        str(cert.name),
                        "warning",
                        f"the certificate expires in {left} day(s), on {cert.not_after:%Y-%m-%d}",
                        "renew it in Key Vault; certsync plans the change when the new version appears",
                    )
                )
    return found


def covers(names: tuple[str, ...], value: str) -> bool:
    """Whether a certificate with these DNS names answers to `value` (a host name, or a `*.` wildcard that
    any name of the certificate falls under, as Exchange Online matches TlsSenderCertificateName)."""
    if value.startswith("*."):
        return any(host_matches(value, name.removeprefix("*.")) or name.lower() == value.lower() for name in names)
    return any(host_matches(name, value) for name in names)


def is_accepted(name: str, accepted: list[str]) -> bool:
    """Whether a DNS name is an accepted domain or a subdomain of one (wildcards read as their domain)."""
    host = name.lower().removeprefix("*.").rstrip(".")
    for domain in accepted:
        domain = domain.lower().removeprefix("*.").rstrip(".")
        if host == domain or host.endswith("." + domain):
            return True
    return False


def _first_cn(cert: InstalledCertificate) -> tuple[str, ...]:
    cn = cert.name.first_cn_as_exchange_reads_it()
    return (cn,) if cn else ()


def _finding(
    server: str | None, identity: str, kind: str, value: str | None, severity: str, error: str, fix: str
) -> MailFlowFinding:
    return MailFlowFinding(server, identity, kind, value, severity, error, fix)
