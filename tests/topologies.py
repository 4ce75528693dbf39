"""Hypothesis strategies for realistic Exchange hybrid organisations and a certificate renewal.

`topologies()` draws a `Topology`: a working organisation (the spec §4 invariants hold before the
renewal) as a `certsync.inventory/1` document (`/work/shared/spec/exchange-inventory.md` §1), with

- 1 to 6 servers: Mailbox servers, and Edge servers that the hybrid configuration may name;
- the hybrid certificate on the hybrid servers, with IIS/POP/IMAP beside SMTP on some, also on servers
  outside the hybrid set (serving IIS only), and sometimes older copies with the same names (expired, or
  still valid);
- each server's self-signed internal transport certificate, or (an admin answered "Yes" to the prompt)
  the hybrid certificate itself as the internal transport certificate;
- a partner send connector naming a certificate of its own, and connectors without a TlsCertificateName;
- connector values written as `<I>…<S>…`, as `<S>…` alone, or in another case;
- Exchange Online connectors (the OnPremises inbound connector's TlsSenderCertificateName, an outbound
  connector with DomainValidation) and accepted domains, or none;
- sometimes a server discovery could not read (an `errors` entry; its certificates missing from the
  discovered document, though the organisation still has them);

and the renewal: the new certificate's facts (`Topology.new`: thumbprint, Windows's `subject` and
`issuer`, `tls_certificate_name`, `dns_names`, the chain's `intermediates`, dates, `exportable`) with the
same names, a new issuer, a new subject, or a DNS name dropped.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from tests.exchange_model import ExchangeOrg, render_services

ISSUERS = (
    "CN=R10, O=Let's Encrypt, C=US",
    "CN=R11, O=Let's Encrypt, C=US",
    "CN=E6, O=Let's Encrypt, C=US",
    "CN=DigiCert Global G2 TLS RSA SHA256 2020 CA1, O=DigiCert Inc, C=US",
    "CN=Sectigo Public Server Authentication CA DV R36, O=Sectigo Limited, C=GB",
    "CN=GeoTrust TLS RSA CA G1, OU=www.digicert.com, O=DigiCert Inc, C=US",
)
PARTNER_ISSUER = "CN=DigiCert Global G2 TLS RSA SHA256 2020 CA1, O=DigiCert Inc, C=US"
DOMAINS = ("contoso.com", "fabrikam.net")
HOSTS = ("mail", "smtp", "hybrid")
RENEWALS = ("same-names", "new-issuer", "new-subject", "san-dropped")
EXTRA_SERVICES = ("IIS", "POP", "IMAP")


def thumbprint(label: str) -> str:
    """A stable, unique 40-hex thumbprint for a label."""
    return hashlib.sha1(label.encode()).hexdigest().upper()


def subject_for(cn: str, organisation: bool) -> str:
    """A DV subject, or an OV one (its O quoted, as Windows quotes a value with a comma)."""
    return f'CN={cn}, O="Contoso, Ltd.", L=Redmond, S=Washington, C=US' if organisation else f"CN={cn}"


def tls_name(issuer: str, subject: str) -> str:
    return f"<I>{issuer}<S>{subject}"


@dataclass
class Topology:
    """A generated organisation: its truth (`inventory`), the intermediates each server's
    LocalMachine\\CA holds, the server discovery could not read, and the renewal (`new`)."""

    inventory: dict[str, Any]
    intermediates: dict[str, set[str]]
    new: dict[str, Any]
    renewal: str
    unreadable: list[str] = field(default_factory=list)

    def discovered(self) -> dict[str, Any]:
        """The inventory document discovery returns: an unreadable server's certificates are missing and
        an `errors` entry names it."""
        document = copy.deepcopy(self.inventory)
        lost = {s.casefold() for s in self.unreadable}
        document["certificates"] = [c for c in document["certificates"] if c["Server"].casefold() not in lost]
        document["errors"] = [
            {"where": s, "message": f"Get-ExchangeCertificate -Server {s}: The RPC server is unavailable."}
            for s in self.unreadable
        ]
        return document

    def org(self) -> ExchangeOrg:
        """The organisation as the model holds it, with the new certificate ready to import."""
        return ExchangeOrg(
            self.inventory, intermediates=self.intermediates, importable={self.new["thumbprint"]: self.new}
        )


def _certificate(server: str, label: str, subject: str, issuer: str, **facts: Any) -> dict[str, Any]:
    return {
        "Server": server,
        "Thumbprint": thumbprint(label),
        "Subject": subject,
        "Issuer": issuer,
        "Services": facts.get("services", "SMTP"),
        "Status": facts.get("status", "Valid"),
        "NotBefore": facts.get("not_before", "2025-06-01T00:00:00Z"),
        "NotAfter": facts.get("not_after", "2026-06-01T00:00:00Z"),
        "CertificateDomains": facts.get("domains", []),
        "HasPrivateKey": True,
        "PrivateKeyExportable": facts.get("exportable", True),
        "IsSelfSigned": issuer == subject,
    }


def _variant(draw: st.DrawFn, issuer: str, subject: str) -> str:
    """A connector's value for the certificate: as certsync writes it, `<S>` alone, or in another case."""
    style = draw(st.sampled_from(("exact", "exact", "subject-only", "lower")))
    if style == "subject-only":
        return f"<S>{subject}"
    if style == "lower":
        return tls_name(issuer.lower(), subject.upper())
    return tls_name(issuer, subject)


def _subset(draw: st.DrawFn, names: list[str], *, nonempty: bool) -> list[str]:
    chosen = [n for n in names if draw(st.booleans())]
    if nonempty and not chosen:
        chosen = [names[draw(st.integers(0, len(names) - 1))]]
    return chosen


@st.composite
def topologies(draw: st.DrawFn) -> Topology:
    """A working hybrid organisation and a renewal of its hybrid certificate."""
    mailboxes = [f"EX{i:02d}" for i in range(1, draw(st.integers(1, 6)) + 1)]
    edges = [f"EDGE{i:02d}" for i in range(1, draw(st.integers(0, min(2, 6 - len(mailboxes)))) + 1)]
    domain, host = draw(st.sampled_from(DOMAINS)), draw(st.sampled_from(HOSTS))
    fqdn, legacy = f"{host}.{domain}", f"legacy.{domain}"
    old_issuer = draw(st.sampled_from(ISSUERS))
    organisation = draw(st.booleans())
    old_subject = subject_for(fqdn, organisation)
    old_domains = [fqdn, f"autodiscover.{domain}", legacy]
    old_label = f"old:{old_issuer}:{old_subject}"

    servers, certificates, send, receive = [], [], [], []
    intermediates: dict[str, set[str]] = {}
    for name in mailboxes + edges:
        edge = name in edges
        servers.append(
            {
                "Name": name,
                "Fqdn": f"{name.lower()}.corp.{domain}" if not edge else f"{name.lower()}.dmz.{domain}",
                "ServerRole": "Edge" if edge else "Mailbox",
                "AdminDisplayVersion": "Version 15.2 (Build 1544.4)",
                "Site": None if edge else f"corp.{domain}/Configuration/Sites/Default-First-Site-Name",
                "IsEdgeServer": edge,
                "InternalTransportCertificateThumbprint": thumbprint(f"self:{name}"),
            }
        )
        certificates.append(
            _certificate(
                name,
                f"self:{name}",
                f"CN={name}",
                f"CN={name}",
                services="SMTP" if edge else "IIS, SMTP",
                not_after="2030-01-01T00:00:00Z",
            )
        )
        intermediates[name] = set()

    # The hybrid configuration (through Edge servers, or Mailbox servers sending and receiving).
    hybrid_present = draw(st.sampled_from((True, True, True, False)))
    via_edge = bool(edges) and draw(st.booleans())
    if via_edge:
        sending, receiving, edge_hybrid = [], [], list(edges)
        cloud_sources, receivers = list(edges), list(edges)
    else:
        sending = _subset(draw, mailboxes, nonempty=True)
        receiving = _subset(draw, mailboxes, nonempty=True)
        edge_hybrid, cloud_sources, receivers = [], list(sending), list(receiving)
    carriers = sorted(set(cloud_sources) | set(receivers))
    bystanders = [n for n in mailboxes if n not in carriers and draw(st.booleans())]  # IIS only

    for name in carriers + bystanders:
        extra = [s for s in EXTRA_SERVICES if draw(st.booleans())] if name in mailboxes else []
        service_set = {"IIS"} if name in bystanders else {"SMTP", *extra}
        certificates.append(
            _certificate(
                name, old_label, old_subject, old_issuer, services=render_services(service_set), domains=old_domains
            )
        )
        intermediates[name].add(thumbprint(f"ca:{old_issuer}"))
        duplicate = draw(st.sampled_from((None, None, None, "DateInvalid", "Valid")))
        if duplicate and name in carriers:
            certificates.append(
                _certificate(
                    name,
                    f"dup:{duplicate}:{old_label}",
                    old_subject,
                    old_issuer,
                    status=duplicate,
                    not_before="2024-06-01T00:00:00Z",
                    not_after="2025-06-01T00:00:00Z" if duplicate == "DateInvalid" else "2026-03-01T00:00:00Z",
                    domains=old_domains,
                )
            )
    # An admin who answered "Yes" to the overwrite prompt: the hybrid certificate is internal transport.
    if draw(st.integers(0, 9)) == 0:
        mailbox_carriers = [n for n in carriers if n in mailboxes]
        if mailbox_carriers:
            chosen = mailbox_carriers[draw(st.integers(0, len(mailbox_carriers) - 1))]
            servers[mailboxes.index(chosen)]["InternalTransportCertificateThumbprint"] = thumbprint(old_label)

    cloud_name = _variant(draw, old_issuer, old_subject)
    send.append(
        {
            "Identity": "Outbound to Office 365 - 6a6fb5a8-0c2e-4f1c-9d4f-3b0b1f0e1c7d",
            "SourceTransportServers": cloud_sources,
            "TlsCertificateName": cloud_name,
            "AddressSpaces": ["smtp:contoso.mail.onmicrosoft.com;1"],
            "SmartHosts": [],
            "RequireTLS": True,
            "TlsAuthLevel": "DomainValidation",
            "TlsDomain": "mail.protection.outlook.com",
            "CloudServicesMailEnabled": True,
            "Enabled": True,
            "IsScopedConnector": False,
        }
    )
    send.append(
        {
            "Identity": "Internet",
            "SourceTransportServers": list(mailboxes),
            "TlsCertificateName": None,
            "AddressSpaces": ["SMTP:*;1"],
            "SmartHosts": [],
            "RequireTLS": False,
            "TlsAuthLevel": None,
            "TlsDomain": None,
            "CloudServicesMailEnabled": False,
            "Enabled": True,
            "IsScopedConnector": False,
        }
    )
    if draw(st.booleans()):  # a partner connector naming a certificate of its own
        holders = _subset(draw, mailboxes, nonempty=True)
        partner_subject = f"CN=relay-partner.{domain}, O=Contoso Ltd, C=US"
        for name in holders:
            certificates.append(
                _certificate(name, "partner", partner_subject, PARTNER_ISSUER, domains=[f"relay-partner.{domain}"])
            )
            intermediates[name].add(thumbprint(f"ca:{PARTNER_ISSUER}"))
        send.append(
            {
                "Identity": "To Partner Fabrikam",
                "SourceTransportServers": holders,
                "TlsCertificateName": tls_name(PARTNER_ISSUER, partner_subject),
                "AddressSpaces": ["SMTP:partner.example;1"],
                "SmartHosts": ["mx.partner.example"],
                "RequireTLS": True,
                "TlsAuthLevel": "DomainValidation",
                "TlsDomain": "mx.partner.example",
                "CloudServicesMailEnabled": False,
                "Enabled": True,
                "IsScopedConnector": False,
            }
        )

    for name in mailboxes + edges:
        edge = name in edges
        identity = f"{name}\\Default internal receive connector {name}" if edge else f"{name}\\Default Frontend {name}"
        receive.append(
            {
                "Identity": identity,
                "Server": name,
                "TransportRole": "HubTransport" if edge else "FrontendTransport",
                "Bindings": ["0.0.0.0:25", "[::]:25"],
                "AuthMechanism": "Tls, Integrated, BasicAuth, BasicAuthRequireTLS, ExchangeServer",
                "TlsCertificateName": _variant(draw, old_issuer, old_subject) if name in receivers else None,
                "RemoteIPRanges": ["0.0.0.0-255.255.255.255"],
                "CloudServicesMailEnabled": name in receivers,
                "Enabled": True,
            }
        )

    hybrid = None
    if hybrid_present:
        hybrid = {
            "SendingTransportServers": sending,
            "ReceivingTransportServers": receiving,
            "EdgeTransportServers": edge_hybrid,
            "TlsCertificateName": _variant(draw, old_issuer, old_subject),
            "OnPremisesSmartHost": fqdn,
            "Domains": [domain],
            "Features": ["FreeBusy", "MoveMailbox", "Mailtips", "MessageTracking", "OwaRedirection", "SecureMail"],
        }

    exo = None
    if draw(st.sampled_from((True, True, False))):
        exo = {
            "inbound_connectors": [
                {
                    "Identity": "Inbound from 1f2e3d4c-5b6a-4789-8a9b-0c1d2e3f4a5b",
                    "ConnectorType": "OnPremises",
                    "TlsSenderCertificateName": draw(st.sampled_from((fqdn, f"*.{domain}", legacy, legacy))),
                    "RequireTls": True,
                    "RestrictDomainsToCertificate": False,
                    "Enabled": True,
                }
            ],
            "outbound_connectors": [
                {
                    "Identity": "Outbound to 1f2e3d4c-5b6a-4789-8a9b-0c1d2e3f4a5b",
                    "ConnectorType": "OnPremises",
                    "TlsSettings": "DomainValidation",
                    "TlsDomain": draw(st.sampled_from((fqdn, fqdn, f"*.{domain}", legacy))),
                    "SmartHosts": [fqdn],
                    "RecipientDomains": [domain],
                    "Enabled": True,
                }
            ],
            "accepted_domains": [{"DomainName": domain, "DomainType": "Authoritative"}],
            "TenantId": "1f2e3d4c-5b6a-4789-8a9b-0c1d2e3f4a5b",
        }

    inventory = {
        "schema": "certsync.inventory/1",
        "collected_at": "2026-01-15T06:00:00Z",
        "worker_group": "exchange-hybrid",
        "servers": servers,
        "certificates": certificates,
        "send_connectors": send,
        "receive_connectors": receive,
        "hybrid_configuration": hybrid,
        "exo": exo,
        "errors": [],
    }

    renewal = draw(st.sampled_from(RENEWALS))
    new_issuer, new_subject, new_domains = old_issuer, old_subject, list(old_domains)
    if renewal == "new-issuer":
        new_issuer = draw(st.sampled_from([i for i in ISSUERS if i != old_issuer]))
    elif renewal == "new-subject":
        other = draw(st.sampled_from([h for h in HOSTS if h != host]))
        new_subject = subject_for(draw(st.sampled_from((fqdn, f"{other}.{domain}"))), not organisation)
        new_domains = [f"{other}.{domain}", *old_domains]
    elif renewal == "san-dropped":
        new_domains = [fqdn, f"autodiscover.{domain}"]
    new = {
        "thumbprint": thumbprint(f"new:{renewal}:{new_issuer}:{new_subject}:{new_domains}"),
        "subject": new_subject,
        "issuer": new_issuer,
        "tls_certificate_name": tls_name(new_issuer, new_subject),
        "dns_names": new_domains,
        "intermediates": [{"thumbprint": thumbprint(f"ca:{new_issuer}"), "subject": new_issuer}],
        "not_before": "2026-01-10T00:00:00Z",
        "not_after": "2026-04-10T00:00:00Z",
        "exportable": True,
    }

    unreadable = []
    if draw(st.integers(0, 5)) == 0:
        everyone = mailboxes + edges
        unreadable = [everyone[draw(st.integers(0, len(everyone) - 1))]]
    return Topology(inventory, intermediates, new, renewal, unreadable)
