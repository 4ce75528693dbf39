"""The planner (`exchange-inventory.md` §2 and §3): each rule, each block with its one-line fix, and the
planning defects of issue 15, on inventories built here around certificates made at test time."""

from __future__ import annotations

import base64
import dataclasses
import json

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from shared.errors import CertsyncError
from shared.exchange.inventory import parse_inventory
from shared.exchange.match import name_of
from shared.pipeline.planner import (
    PLAN2_SCHEMA,
    KnownCertificate,
    NewCertificate,
    PlanIntermediate,
    new_certificate,
    plan_certificate,
    plan_from_inventory,
)
from shared.pipeline.sources import StoredVersion
from shared.pipeline.targets import parse_targets_json, resolve_targets
from shared.validation.assessment import TrustStore, assess
from shared.x509.certificate import Certificate, CertificateBundle
from tests.chains import Issued, issue, make_name

HOSTS = ("mail.contoso.com", "autodiscover.contoso.com")
INTERNAL = {"EX01": "A1" * 20, "EX02": "A2" * 20, "EX03": "A3" * 20, "EDGE01": "AE" * 20}


@dataclasses.dataclass
class Pki:
    root: Issued
    r10: Issued
    r11: Issued
    old: Issued
    new: Issued

    def leaf(self, subject: x509.Name, hosts=HOSTS, inter: Issued | None = None) -> Issued:
        return issue(
            subject,
            issuer=inter or self.r11,
            dns_names=hosts,
        )


@pytest.fixture(scope="module")
def pki() -> Pki:
    root = issue(make_name("Planner Root", "certsync tests"), ca=True, path_length=1)
    r10, r11 = (issue(make_name(cn, "Let's Encrypt"), issuer=root, ca=True, path_length=0) for cn in ("R10", "R11"))
    old = issue(make_name("mail.contoso.com", None, None), issuer=r10, dns_names=HOSTS)
    new = issue(make_name("mail.contoso.com", None, None), issuer=r11, dns_names=HOSTS)
    return Pki(root, r10, r11, old, new)


def cert(c: Issued) -> Certificate:
    return Certificate.from_der(c.der)


def value_of(c: Issued) -> str:
    parsed = cert(c)
    return f"<I>{parsed.issuer}<S>{parsed.subject}"


def installed(server: str, c: Issued, services: str = "IIS, SMTP", status: str = "Valid") -> dict:
    parsed = cert(c)
    return {
        "Server": server,
        "Thumbprint": parsed.thumbprint,
        "Subject": str(parsed.subject),
        "Issuer": str(parsed.issuer),
        "Services": services,
        "Status": status,
        "CertificateDomains": list(parsed.dns_names),
    }


def server(name: str, role: str = "Mailbox") -> dict:
    return {
        "Name": name,
        "ServerRole": role,
        "IsEdgeServer": role == "Edge",
        "InternalTransportCertificateThumbprint": INTERNAL[name],
    }


def world(pki: Pki, **sections) -> dict:
    old = value_of(pki.old)
    base = {
        "servers": [server("EX01"), server("EX02")],
        "certificates": [installed("EX01", pki.old, "IMAP, POP, IIS, SMTP"), installed("EX02", pki.old)],
        "send_connectors": [
            {
                "Identity": "Outbound to Office 365",
                "SourceTransportServers": ["EX01", "EX02"],
                "TlsCertificateName": old,
            }
        ],
        "receive_connectors": [
            {"Identity": f"{s}\\Default Frontend {s}", "TlsCertificateName": old} for s in ("EX01", "EX02")
        ],
        "hybrid_configuration": {
            "SendingTransportServers": ["EX01", "EX02"],
            "ReceivingTransportServers": ["EX01", "EX02"],
            "TlsCertificateName": old,
        },
        "exo": {
            "inbound_connectors": [
                {
                    "Identity": "Inbound from x",
                    "ConnectorType": "OnPremises",
                    "TlsSenderCertificateName": "mail.contoso.com",
                }
            ],
            "outbound_connectors": [
                {
                    "Identity": "Outbound to x",
                    "ConnectorType": "OnPremises",
                    "TlsSettings": "DomainValidation",
                    "TlsDomain": "mail.contoso.com",
                }
            ],
            "accepted_domains": [{"DomainName": "contoso.com"}],
        },
        "errors": [],
    }
    return base | sections


def plan(pki: Pki, inventory: dict, new: Issued | None = None, *, chain=None, targets=None, at=None, **options):
    new = new or pki.new
    bundle = CertificateBundle(cert(new), tuple(cert(c) for c in (chain if chain is not None else [pki.r11])))
    trust = TrustStore.from_certificates([cert(pki.root)], "test root")
    assessment = assess(bundle, trust=trust, at=at, revocation="off", offline=True)
    inv = parse_inventory(json.dumps(inventory), "inventory.json")
    result = plan_from_inventory(bundle, assessment, inv, targets=targets, **options)
    document = result.to_dict()
    assert json.loads(json.dumps(document)) == document
    return document


def targets(entry: dict):
    text = json.dumps({"schema": "certsync.targets/1", "certificates": {"mail": {"worker_group": "hrw"} | entry}})
    return resolve_targets("mail", file=parse_targets_json(text, "targets.json"))


def actions(document, phase=None):
    return [(s["action"], s["server"], s["object"]) for s in document["steps"] if phase in (None, s["phase"])]


# --- the document and the happy path ---------------------------------------------------------------


def test_a_renewal_that_changes_the_issuer_is_staged_switched_verified_and_retired(pki):
    doc = plan(pki, world(pki))
    new, old = cert(pki.new), cert(pki.old)
    assert list(doc)[:7] == ["schema", "certificate", "servers", "blocked", "warnings", "steps", "kept"]
    assert doc["schema"] == PLAN2_SCHEMA and doc["blocked"] is None and doc["kept"] == []
    r11 = cert(pki.r11)
    assert doc["certificate"] == {
        "thumbprint": new.thumbprint,
        "tls_certificate_name": value_of(pki.new),
        "not_after": new.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
        # the runbook installs the intermediates from here (no Key Vault identifiers: a file was planned)
        "intermediates": [
            {
                "thumbprint": r11.thumbprint,
                "subject": str(r11.subject),
                "der_base64": base64.b64encode(r11.der).decode(),
            }
        ],
    }
    assert doc["servers"] == ["EX01", "EX02"] and doc["old_certificates"] == [old.thumbprint]
    assert [s["phase"] for s in doc["steps"]] == sorted(
        (s["phase"] for s in doc["steps"]), key=["stage", "switch", "verify", "retire"].index
    )
    for step in doc["steps"]:
        assert set(step) >= {"phase", "action", "server", "object", "property", "previous", "value"}
    stage = actions(doc, "stage")
    assert stage[:5] == [
        ("install-intermediate", "EX01", cert(pki.r11).thumbprint),
        ("import-certificate", "EX01", new.thumbprint),
        ("enable-services", "EX01", new.thumbprint),
        ("check-status", "EX01", new.thumbprint),
        ("check-name", "EX01", new.thumbprint),
    ]
    enable = [s for s in doc["steps"] if s["action"] == "enable-services"]
    # every service the old one had on that server, SMTP always; the internal transport certificate kept
    assert [(s["server"], s["property"], s["value"]) for s in enable] == [
        ("EX01", "Services", ["IMAP", "POP", "IIS", "SMTP"]),
        ("EX02", "Services", ["IIS", "SMTP"]),
    ]
    assert enable[0]["internal_transport_certificate"] == INTERNAL["EX01"] and enable[0]["previous"] == []
    switch = [s for s in doc["steps"] if s["phase"] == "switch"]
    assert [(s["action"], s["server"], s["object"]) for s in switch] == [
        ("set-send-connector", None, "Outbound to Office 365"),
        ("set-receive-connector", "EX01", "EX01\\Default Frontend EX01"),
        ("set-receive-connector", "EX02", "EX02\\Default Frontend EX02"),
        ("set-hybrid-configuration", None, "Hybrid Configuration"),
    ]
    assert all(s["property"] == "TlsCertificateName" and s["previous"] == value_of(pki.old) for s in switch)
    assert all(s["value"] == value_of(pki.new) for s in switch)
    assert actions(doc, "verify") == [
        ("check-status", "EX01", new.thumbprint),
        ("check-status", "EX02", new.thumbprint),
    ]
    assert actions(doc, "retire") == [
        ("remove-certificate", "EX01", old.thumbprint),
        ("remove-certificate", "EX02", old.thumbprint),
    ]
    assert doc["warnings"] == [] and doc["conflicts"] == []


def test_same_issuer_and_subject_switches_nothing_and_an_installed_new_certificate_is_not_imported(pki):
    same = issue(make_name("mail.contoso.com", None, None), issuer=pki.r10, dns_names=HOSTS)
    inventory = world(pki)
    inventory["certificates"].append(installed("EX01", same, "IMAP, POP, IIS, SMTP"))
    doc = plan(pki, inventory, same, chain=[pki.r10])
    assert actions(doc, "switch") == []
    assert ("import-certificate", "EX01", cert(same).thumbprint) not in actions(doc)
    assert ("enable-services", "EX01", cert(same).thumbprint) not in actions(doc)  # it has them all already
    assert ("import-certificate", "EX02", cert(same).thumbprint) in actions(doc)


def test_only_objects_that_select_the_old_certificate_switch_never_a_partner_connector(pki):
    partner = issue(make_name("relay.contoso.com", "Contoso Ltd"), issuer=pki.r10, dns_names=["relay.contoso.com"])
    inventory = world(pki)
    inventory["certificates"].append(installed("EX01", partner, "SMTP"))
    inventory["send_connectors"].append(
        {"Identity": "Partner - Fabrikam", "SourceTransportServers": ["EX01"], "TlsCertificateName": value_of(partner)}
    )
    inventory["receive_connectors"].append({"Identity": "EX01\\Partner", "TlsCertificateName": value_of(partner)})
    doc = plan(pki, inventory)
    assert "Partner - Fabrikam" not in {o for _, _, o in actions(doc)} and "EX01\\Partner" not in str(actions(doc))
    assert cert(partner).thumbprint not in str(doc["steps"]) and doc["blocked"] is None


def test_a_value_without_issuer_that_still_selects_the_new_certificate_is_left_alone(pki):
    inventory = world(
        pki,
        send_connectors=[
            {"Identity": "Outbound", "SourceTransportServers": ["EX01"], "TlsCertificateName": "<S>CN=mail.contoso.com"}
        ],
    )
    doc = plan(pki, inventory)
    assert ("set-send-connector", None, "Outbound") not in actions(doc)
    assert doc["blocked"] is None


# --- rule 1: the servers -----------------------------------------------------------------------------


def test_servers_come_from_the_hybrid_configuration_and_connectors_not_from_the_targets(pki):
    """Issue 15: a server sending hybrid mail but missing from the targets file is still planned."""
    inventory = world(pki, servers=[server("EX01"), server("EX02"), server("EX03")])
    inventory["certificates"].append(installed("EX03", pki.old, "SMTP"))
    inventory["send_connectors"].append(
        {
            "Identity": "Scoped London",
            "SourceTransportServers": ["ex03.corp.contoso.com"],
            "TlsCertificateName": value_of(pki.old),
        }
    )
    doc = plan(
        pki,
        inventory,
        targets=targets({"servers": ["EX01"], "send_connectors": ["Outbound to Office 365", "Scoped London"]}),
    )
    assert doc["servers"] == ["EX01", "EX02", "EX03"] and doc["blocked"] is None
    assert ("import-certificate", "EX03", cert(pki.new).thumbprint) in actions(doc)
    assert ("set-send-connector", None, "Scoped London") in actions(doc)


def test_targets_add_servers_and_narrow_connectors_with_every_disagreement_reported(pki):
    inventory = world(pki, servers=[server("EX01"), server("EX02"), server("EX03")])
    doc = plan(
        pki,
        inventory,
        targets=targets(
            {
                "servers": ["EX01", "EX03"],
                "send_connectors": ["Outbound to Office 365", "Gone Connector"],
                "receive_connectors": ["EX01\\Default Frontend EX01"],
                "hybrid_configuration": False,
                "exo_inbound_connector": "Inbound from nowhere",
            }
        ),
    )
    assert doc["servers"] == ["EX01", "EX02", "EX03"]
    assert ("set-receive-connector", "EX02", "EX02\\Default Frontend EX02") not in actions(doc)
    assert ("set-hybrid-configuration", None, "Hybrid Configuration") not in actions(doc)
    assert doc["conflicts"] == [
        "send connector 'Gone Connector' is in the targets but not in the inventory",
        "Exchange Online inbound connector 'Inbound from nowhere' is in the targets but not in the inventory",
    ]
    assert any("EX02\\\\Default Frontend EX02" in w and "not in the targets" in w for w in doc["warnings"])
    assert any("targets exclude it" in w for w in doc["warnings"])
    kept = {(k["server"], k["reason"]) for k in doc["kept"]}
    assert (
        "EX02",
        "receive connector 'EX02\\\\Default Frontend EX02' still selects it after the switch "
        "(it is not in the targets)",
    ) in kept
    assert doc["blocked"] is None


def test_a_listed_connector_that_names_another_certificate_is_a_conflict_not_a_write(pki):
    inventory = world(pki)
    inventory["send_connectors"].append(
        {"Identity": "Partner", "SourceTransportServers": ["EX01"], "TlsCertificateName": "<S>CN=relay.contoso.com"}
    )
    doc = plan(pki, inventory, targets=targets({"servers": ["EX01"], "send_connectors": ["partner"]}))
    assert doc["conflicts"] == [
        "send connector 'partner' is in the targets but selects another certificate "
        "(<S>CN=relay.contoso.com); left as is"
    ]
    assert "Partner" not in {o for _, _, o in actions(doc, "switch")}


def test_old_certificates_from_the_command_line_or_key_vault_versions(pki):
    old = cert(pki.old)
    doc = plan(pki, world(pki), old_thumbprints=[old.thumbprint.lower(), "F" * 40])
    assert doc["old_certificates"] == [old.thumbprint]
    assert f"the old certificate {'F' * 40} is on no server of the inventory" in doc["warnings"]
    doc = plan(pki, world(pki), previous_versions=[old])
    assert doc["old_certificates"] == [old.thumbprint] and len(actions(doc, "retire")) == 2


def test_a_same_name_certificate_nothing_selects_is_reported_not_retired(pki):
    spare = issue(make_name("mail.contoso.com", "Old CA"), issuer=pki.r10, dns_names=HOSTS)
    inventory = world(pki)
    inventory["certificates"].append(installed("EX02", spare, "IIS"))
    doc = plan(pki, inventory)
    assert cert(spare).thumbprint not in str(actions(doc))
    assert any(cert(spare).thumbprint in w and "no connector selects" in w for w in doc["warnings"])


# --- rule 4: Exchange Online -------------------------------------------------------------------------


def test_the_inbound_connector_changes_only_when_the_new_certificate_does_not_cover_it(pki):
    new_host = pki.leaf(make_name("smtp.contoso.com", None, None), hosts=("smtp.contoso.com",))
    inventory = world(pki)
    inventory["exo"]["outbound_connectors"] = []
    doc = plan(pki, inventory, new_host, old_thumbprints=[cert(pki.old).thumbprint])
    exo = [s for s in doc["steps"] if s["action"] == "set-exo-inbound-connector"]
    assert [(s["server"], s["object"], s["property"], s["previous"], s["value"]) for s in exo] == [
        (None, "Inbound from x", "TlsSenderCertificateName", "mail.contoso.com", "smtp.contoso.com")
    ]
    inventory["exo"]["inbound_connectors"][0]["TlsSenderCertificateName"] = "*.contoso.com"  # still covers
    doc = plan(pki, inventory, new_host, old_thumbprints=[cert(pki.old).thumbprint])
    assert not [s for s in doc["steps"] if s["action"] == "set-exo-inbound-connector"]


def test_an_exchange_online_change_carries_its_tenant_and_is_blocked_without_one(pki):
    new_host = pki.leaf(make_name("smtp.contoso.com", None, None), hosts=("smtp.contoso.com",))
    inventory = world(pki)
    inventory["exo"]["outbound_connectors"] = []
    old = [cert(pki.old).thumbprint]
    doc = plan(pki, inventory, new_host, old_thumbprints=old)
    assert "no tenant id" in doc["blocked"]["reason"] and "CERTSYNC_EXO_TENANT_ID" in doc["blocked"]["fix"]
    tenant = "1f2e3d4c-5b6a-4789-8a9b-0c1d2e3f4a5b"
    doc = plan(pki, inventory, new_host, old_thumbprints=old, exo_tenant=tenant)
    [exo] = [s for s in doc["steps"] if s["action"] == "set-exo-inbound-connector"]
    assert doc["blocked"] is None and exo["tenant"] == tenant
    inventory["exo"]["TenantId"] = "aaaaaaaa-5b6a-4789-8a9b-0c1d2e3f4a5b"  # what discovery connected to wins
    doc = plan(pki, inventory, new_host, old_thumbprints=old, exo_tenant=tenant)
    assert [s["tenant"] for s in doc["steps"] if s["action"] == "set-exo-inbound-connector"] == [
        "aaaaaaaa-5b6a-4789-8a9b-0c1d2e3f4a5b"
    ]


def proof_world(pki: Pki) -> dict:
    inventory = world(pki, servers=[server("EX01") | {"Fqdn": "ex01.corp.contoso.com"}, server("EX02")])
    for connector in inventory["receive_connectors"]:
        connector |= {"TransportRole": "FrontendTransport", "Bindings": ["0.0.0.0:25", "[::]:25", "10.0.0.5:2525"]}
    inventory["send_connectors"][0] |= {
        "CloudServicesMailEnabled": True,
        "SmartHosts": ["contoso-com.mail.protection.outlook.com"],
    }
    inventory["exo"]["TenantId"] = "1f2e3d4c-5b6a-4789-8a9b-0c1d2e3f4a5b"
    return inventory


def test_the_proof_probes_each_switched_binding_and_tests_mail_to_exchange_online(pki):
    doc = plan(pki, proof_world(pki))
    new = cert(pki.new).thumbprint
    verify = [(s["action"], s["server"], s["object"], s["value"]) for s in doc["steps"] if s["phase"] == "verify"]
    assert verify == [
        ("check-status", "EX01", new, "Valid"),
        ("probe-receive-connector", "EX01", "EX01\\Default Frontend EX01", "ex01.corp.contoso.com:25"),
        ("probe-receive-connector", "EX01", "EX01\\Default Frontend EX01", "10.0.0.5:2525"),
        ("check-status", "EX02", new, "Valid"),
        ("probe-receive-connector", "EX02", "EX02\\Default Frontend EX02", "ex02:25"),  # no Fqdn: the name
        ("probe-receive-connector", "EX02", "EX02\\Default Frontend EX02", "10.0.0.5:2525"),
        ("test-outbound", "EX01", "Outbound to Office 365", None),
    ]
    [outbound] = [s for s in doc["steps"] if s["action"] == "test-outbound"]
    assert outbound["tenant"] == "1f2e3d4c-5b6a-4789-8a9b-0c1d2e3f4a5b"


def test_transport_is_restarted_only_when_the_setting_asks_and_only_the_services_switched(pki):
    assert not [s for s in plan(pki, proof_world(pki))["steps"] if s["action"] == "restart-transport"]
    doc = plan(pki, proof_world(pki), restart_transport=True)
    restarts = [(s["server"], s["object"]) for s in doc["steps"] if s["action"] == "restart-transport"]
    # Frontend receive connectors live in the Front End Transport service, send connectors in Transport
    assert restarts == [
        ("EX01", "MSExchangeFrontEndTransport"),
        ("EX01", "MSExchangeTransport"),
        ("EX02", "MSExchangeFrontEndTransport"),
        ("EX02", "MSExchangeTransport"),
    ]
    first_check = next(
        i for i, s in enumerate(doc["steps"]) if s["phase"] == "verify" and s["action"] == "check-status"
    )
    assert doc["steps"][first_check - 1]["action"] == "restart-transport"  # before the proof reads anything


def test_a_name_outside_the_accepted_domains_warns_or_blocks_as_the_setting_asks(pki):
    inventory = world(pki)
    inventory["exo"]["accepted_domains"] = [{"DomainName": "fabrikam.com"}]
    doc = plan(pki, inventory)
    assert doc["blocked"] is None
    assert any("mail.contoso.com is not an accepted domain" in w for w in doc["warnings"])
    doc = plan(pki, inventory, require_accepted_domain=True)
    assert doc["blocked"]["reason"].startswith("mail.contoso.com is not an accepted domain")
    assert "New-AcceptedDomain" in doc["blocked"]["fix"]


def test_exchange_online_not_read_is_a_warning(pki):
    doc = plan(pki, world(pki, exo=None))
    assert doc["blocked"] is None and any("Exchange Online was not read" in w for w in doc["warnings"])


# --- rule 5: retire ----------------------------------------------------------------------------------


def test_retire_keeps_what_something_still_needs_with_the_reason(pki):
    """Issue 15: never remove a certificate that serves a service the new one does not take over, the internal
    transport certificate, or one a connector still selects."""
    inventory = world(pki, servers=[server("EX01"), server("EX02"), server("EX03")])
    inventory["certificates"] = [
        installed("EX01", pki.old, "IIS, SMTP, Federation"),
        installed("EX02", pki.old, "IMAP, POP, IIS, SMTP"),
        installed("EX03", pki.old, "IIS"),
    ]
    inventory["servers"][1]["InternalTransportCertificateThumbprint"] = cert(pki.old).thumbprint
    doc = plan(pki, inventory)
    thumb = cert(pki.old).thumbprint
    assert doc["kept"] == [
        {
            "server": "EX01",
            "thumbprint": thumb,
            "reason": "it serves Federation, which certsync does not move to the new certificate",
        },
        {"server": "EX02", "thumbprint": thumb, "reason": "it is EX02's internal transport certificate"},
        {
            "server": "EX03",
            "thumbprint": thumb,
            "reason": "EX03 is not one of the servers this plan installs the new certificate on",
        },
    ]
    assert actions(doc, "retire") == []
    enable = {s["server"]: s["value"] for s in doc["steps"] if s["action"] == "enable-services"}
    assert enable == {"EX01": ["IIS", "SMTP"], "EX02": ["IMAP", "POP", "IIS", "SMTP"]}  # IIS/POP/IMAP move first


def test_a_kept_certificate_with_the_same_name_as_the_new_one_is_a_warning(pki):
    same = issue(make_name("mail.contoso.com", None, None), issuer=pki.r10, dns_names=HOSTS)
    inventory = world(pki)
    inventory["certificates"][0]["Services"] = "SMTP, UM"
    doc = plan(pki, inventory, same, chain=[pki.r10])
    assert doc["kept"][0]["server"] == "EX01"
    assert any("beside the new certificate with the same TlsCertificateName" in w for w in doc["warnings"])


# --- rule 6: Edge ------------------------------------------------------------------------------------


def test_edge_steps_are_manual_unless_a_worker_group_runs_there(pki):
    old = value_of(pki.old)
    inventory = world(
        pki,
        servers=[server("EX01"), server("EDGE01", "Edge")],
        certificates=[installed("EDGE01", pki.old, "SMTP")],
        send_connectors=[
            {"Identity": "Outbound to Office 365", "SourceTransportServers": ["EDGE01"], "TlsCertificateName": old}
        ],
        receive_connectors=[
            {"Identity": "EDGE01\\Default internal receive connector EDGE01", "TlsCertificateName": old}
        ],
        hybrid_configuration={"EdgeTransportServers": ["EDGE01"], "TlsCertificateName": old},
    )
    doc = plan(pki, inventory)
    assert doc["servers"] == ["EDGE01"]
    on_edge = [s for s in doc["steps"] if s["server"] == "EDGE01"]
    assert on_edge and all(s["manual"] for s in on_edge)
    assert not any(s["manual"] for s in doc["steps"] if s["server"] is None)
    assert any(w.startswith("manual: run the runbook on the Edge server EDGE01") for w in doc["warnings"])
    enable = next(s for s in on_edge if s["action"] == "enable-services")
    assert enable["internal_transport_certificate"] == INTERNAL["EDGE01"]
    doc = plan(pki, inventory, edge_workers=["edge01"])
    assert not any(s["manual"] for s in doc["steps"]) and not any("manual" in w for w in doc["warnings"])


# --- rule 7: blocks ----------------------------------------------------------------------------------


def test_an_empty_subject_blocks(pki):
    empty = issue(x509.Name([]), issuer=pki.r11, dns_names=HOSTS)
    doc = plan(pki, world(pki), empty)
    assert "empty subject" in doc["blocked"]["reason"]
    assert (
        "Let's Encrypt 'classic'" in doc["blocked"]["fix"] and "Key Vault certificate policy" in doc["blocked"]["fix"]
    )


@pytest.mark.parametrize(
    ("subject", "words", "fix"),
    [
        (x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Contoso")]), "has no CN", "Let's Encrypt 'classic'"),
        (make_name("Contoso Mail Server", None, None), "is not a DNS name", "the subject's first CN"),
    ],
)
def test_a_subject_exchange_cannot_name_blocks(pki, subject, words, fix):
    doc = plan(pki, world(pki), pki.leaf(subject), old_thumbprints=[cert(pki.old).thumbprint])
    assert words in doc["blocked"]["reason"]
    assert fix in doc["blocked"]["fix"]


def test_no_exportable_key_blocks(pki):
    doc = plan(pki, world(pki), key_exportable=False)
    assert "private key cannot be exported" in doc["blocked"]["reason"] and "exportable: true" in doc["blocked"]["fix"]


def test_a_certificate_that_is_not_valid_blocks_unless_the_targets_allow_its_status(pki):
    doc = plan(pki, world(pki), chain=[])  # the intermediate is missing: Untrusted
    assert doc["blocked"]["reason"].startswith("the new certificate is Untrusted (")
    assert "certsync check" in doc["blocked"]["fix"]
    allowed = plan(pki, world(pki), chain=[], targets=targets({"servers": ["EX01"], "allow_status": ["Untrusted"]}))
    assert allowed["blocked"] is None
    assert {k["reason"] for k in allowed["kept"]} == {"the new certificate is Untrusted, not Valid"}


def test_an_unreadable_server_in_the_plan_blocks_and_one_outside_it_warns(pki):
    inventory = world(
        pki,
        errors=[
            {"where": "EX02", "message": "WinRM cannot complete the operation"},
            {"where": "EX09", "message": "offline"},
        ],
    )
    doc = plan(pki, inventory)
    assert doc["blocked"] == {
        "reason": "discovery could not read EX02 (WinRM cannot complete the operation), which this plan needs",
        "fix": "make EX02 reachable from the Hybrid worker, then run discovery again",
    }
    assert "discovery could not read EX09 (offline); not in this plan" in doc["warnings"]


def test_an_unread_server_whose_connector_names_the_certificate_blocks_by_name_not_as_nothing_to_plan(pki):
    # Found by the property tests: EX02 could not be read, so its copy of the old certificate is missing
    # from the inventory; its send connector still names it. The plan used to block as "nothing to plan
    # on" with a fix (--old) that cannot help; an unread server is never taken as empty.
    inventory = world(
        pki,
        servers=[server("EX01"), server("EX02")],
        certificates=[installed("EX01", pki.r10, "IIS, SMTP")],
        send_connectors=[
            {
                "Identity": "Outbound to Office 365",
                "SourceTransportServers": ["EX02"],
                "TlsCertificateName": value_of(pki.old),
            }
        ],
        receive_connectors=[],
        hybrid_configuration=None,
        errors=[{"where": "EX02", "message": "The RPC server is unavailable."}],
    )
    doc = plan(pki, inventory)
    assert doc["servers"] == ["EX02"]
    assert doc["blocked"] == {
        "reason": "discovery could not read EX02 (The RPC server is unavailable.), which this plan needs",
        "fix": "make EX02 reachable from the Hybrid worker, then run discovery again",
    }
    # a connector naming another host's certificate does not pull the unread server in
    inventory["send_connectors"][0]["TlsCertificateName"] = "<S>CN=relay.fabrikam.net"
    assert "nothing to plan on" in plan(pki, inventory)["blocked"]["reason"]


def test_a_failed_organisation_wide_cmdlet_blocks(pki):
    doc = plan(pki, world(pki, errors=[{"where": "Get-SendConnector", "message": "access denied"}]))
    assert doc["blocked"]["reason"].startswith("Get-SendConnector failed during discovery (access denied)")


def test_a_server_missing_from_the_inventory_blocks(pki):
    inventory = world(pki)
    inventory["hybrid_configuration"]["SendingTransportServers"].append("EX07")
    doc = plan(pki, inventory)
    assert doc["blocked"]["reason"] == "EX07 is in this plan but not among the inventory's servers"


def test_nothing_to_plan_on_blocks(pki):
    doc = plan(pki, world(pki, hybrid_configuration=None, send_connectors=[], receive_connectors=[]))
    assert "nothing to plan on" in doc["blocked"]["reason"] and "--old" in doc["blocked"]["fix"]


def test_a_server_left_without_a_valid_certificate_blocks(pki):
    inventory = world(pki)
    inventory["certificates"][1]["Status"] = "DateInvalid"  # EX02's old certificate has expired
    doc = plan(
        pki, inventory, targets=targets({"servers": ["EX01"], "receive_connectors": ["EX01\\Default Frontend EX01"]})
    )
    assert doc["blocked"]["reason"].startswith(
        "EX02 would be left with no valid certificate for receive connector 'EX02\\\\Default Frontend EX02'"
    )


def test_the_servers_own_rendering_must_agree_with_certsyncs(pki):
    inventory = world(pki)
    wrong = installed("EX01", pki.new)
    wrong["Issuer"] = "CN=R11, O=Lets Encrypt, C=US"
    inventory["certificates"].append(wrong)
    doc = plan(pki, inventory)
    assert doc["blocked"]["reason"] == (
        f"EX01 shows the Issuer of {cert(pki.new).thumbprint} as 'CN=R11, O=Lets Encrypt, C=US', "
        'but certsync renders "CN=R11, O=Let\'s Encrypt, C=US"'
    )


def test_an_outbound_connector_validating_a_name_the_new_certificate_lacks_blocks(pki):
    inventory = world(pki)
    inventory["exo"]["outbound_connectors"][0]["TlsDomain"] = "hybrid.contoso.com"
    doc = plan(pki, inventory)
    assert "validates TlsDomain hybrid.contoso.com" in doc["blocked"]["reason"]
    assert "Set-OutboundConnector 'Outbound to x'" in doc["blocked"]["fix"]


def test_every_block_is_listed_the_first_as_blocked_the_rest_as_warnings(pki):
    doc = plan(pki, world(pki, errors=[{"where": "Get-SendConnector", "message": "denied"}]), key_exportable=False)
    assert "private key" in doc["blocked"]["reason"]
    assert any(w.startswith("also blocked: Get-SendConnector failed") for w in doc["warnings"])


# --- the facts the planner decides from --------------------------------------------------------------


def stored(pki: Pki, c: Issued) -> StoredVersion:
    bundle = CertificateBundle(cert(c), (cert(pki.r11),))
    return StoredVersion(
        vault="kv-contoso",
        name="mail",
        version="0f3c5d2e9a8b4c7d",
        bundle=bundle,
        secret_id="https://kv-contoso.vault.azure.net/secrets/mail/0f3c5d2e9a8b4c7d",
    )


def test_the_key_vault_version_goes_into_the_plans_certificate_for_the_runbook(pki):
    version = stored(pki, pki.new)
    doc = plan(pki, world(pki), version=version)
    assert {k: doc["certificate"][k] for k in ("vault", "name", "version", "secret_id")} == {
        "vault": "kv-contoso",
        "name": "mail",
        "version": "0f3c5d2e9a8b4c7d",
        "secret_id": "https://kv-contoso.vault.azure.net/secrets/mail/0f3c5d2e9a8b4c7d",
    }
    assert list(doc["certificate"])[:2] == ["thumbprint", "tls_certificate_name"]


def test_a_key_vault_version_of_another_certificate_is_refused(pki):
    bundle = CertificateBundle(cert(pki.new), (cert(pki.r11),))
    assessment = assess(bundle, trust=TrustStore.from_certificates([cert(pki.root)], "root"), revocation="off")
    with pytest.raises(
        CertsyncError, match=r"^Key Vault version mail/0f3c5d2e9a8b4c7d is certificate [0-9A-F]{40}, not"
    ):
        new_certificate(bundle, assessment, stored(pki, pki.old))


def test_the_facts_say_what_the_assessment_and_the_container_say(pki):
    root = TrustStore.from_certificates([cert(pki.root)], "root")
    bundle = CertificateBundle(cert(pki.new), (cert(pki.r11),), container="pkcs12", has_private_key=False)
    facts = new_certificate(bundle, assess(bundle, trust=root, revocation="off"), key_exportable=True)
    assert facts.key_exportable is False  # a PFX without its key cannot be imported, whatever the policy says
    assert facts.dns_names == HOSTS and facts.status == "Valid" and facts.error_codes == ()
    assert [i.thumbprint for i in facts.intermediates] == [cert(pki.r11).thumbprint]
    untrusted = assess(bundle, trust=TrustStore.from_certificates([cert(pki.r10)], "other"), revocation="off")
    facts = new_certificate(CertificateBundle(cert(pki.new), ()), untrusted)
    assert facts.status != "Valid" and facts.error_codes and facts.key_exportable is None


def test_plan_certificate_plans_from_facts_as_plan_from_inventory_does_from_a_bundle(pki):
    new, old = cert(pki.new), cert(pki.old)
    facts = NewCertificate(
        thumbprint=new.thumbprint,
        tls_name=name_of(str(new.subject), str(new.issuer)),
        dns_names=HOSTS,
        intermediates=(PlanIntermediate(cert(pki.r11).thumbprint, str(cert(pki.r11).subject), "AAAA"),),
    )
    inventory = parse_inventory(json.dumps(world(pki)), "inventory.json")
    by_facts = plan_certificate(facts, inventory).to_dict()
    by_bundle = plan(pki, world(pki))
    assert by_facts["steps"] == by_bundle["steps"] and by_facts["kept"] == by_bundle["kept"] == []
    assert by_facts["certificate"] == {
        "thumbprint": new.thumbprint,
        "tls_certificate_name": value_of(pki.new),
        "intermediates": [
            {"thumbprint": cert(pki.r11).thumbprint, "subject": str(cert(pki.r11).subject), "der_base64": "AAAA"}
        ],
    }
    # earlier Key Vault versions, as facts, name the old certificate and are cross-checked like the new one
    earlier = KnownCertificate.from_certificate(old)
    assert plan_certificate(facts, inventory, previous_versions=[earlier]).old_certificates == (old.thumbprint,)
    wrong = world(pki)
    wrong["certificates"][0]["Subject"] = "CN=mail.contoso.com, O=Contoso"
    blocked = plan_certificate(facts, parse_inventory(json.dumps(wrong), "x"), previous_versions=[earlier]).blocked
    assert blocked is not None and blocked.reason.startswith(f"EX01 shows the Subject of {old.thumbprint}")


def test_each_connector_value_is_parsed_once_however_many_plans_read_it(pki: Pki, monkeypatch):
    """A fleet's plans match every connector value of their organisation against the old and the new
    certificate: each distinct text is parsed once (issue 19: 2,200 parses per plan at 100 certificates)."""
    from shared.exchange import match
    from shared.x509.tls_certificate_name import TlsCertificateName

    real = TlsCertificateName.parse
    parsed: list[str] = []

    def counting(text: str, *, strict: bool = True) -> TlsCertificateName:
        parsed.append(text)
        return real(text, strict=strict)

    match.read_value.cache_clear()
    monkeypatch.setattr(TlsCertificateName, "parse", staticmethod(counting))
    first, second = plan(pki, world(pki)), plan(pki, world(pki))

    assert first["steps"] == second["steps"] and first["blocked"] is None
    assert parsed and len(parsed) == len(set(parsed))  # the old value, once, for all four objects and both plans
