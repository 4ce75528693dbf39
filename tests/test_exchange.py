"""The Exchange model: the inventory as discovery writes it and as an admin saves it by hand, Exchange's
match rule, and the mail-flow prediction behind `certsync doctor`."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from shared.errors import CertsyncError
from shared.exchange.inventory import InventoryError, load_inventory, parse_inventory, server_key
from shared.exchange.mailflow import (
    EXO_NOT_ATTRIBUTED,
    RECEIVE_NOT_FOUND,
    SEND_NOT_FOUND,
    covers,
    doctor_document,
    is_accepted,
    predict,
    worst_is_warning_or_worse,
)
from shared.exchange.match import name_of, selects
from shared.x509.certificate import Certificate
from tests.chains import issue, make_name

LE_R11 = "CN=R11, O=Let's Encrypt, C=US"
VALUE = f"<I>{LE_R11}<S>CN=mail.contoso.com"
THUMB = "CB7A7EA2F0CE4CB1BBA12BCEE1C24E1D4C8BFE0B"


def certificate(server="EX01", services="IIS, SMTP", status="Valid", subject="CN=mail.contoso.com", **extra):
    return {
        "Server": server,
        "Thumbprint": extra.pop("Thumbprint", THUMB),
        "Subject": subject,
        "Issuer": extra.pop("Issuer", LE_R11),
        "Services": services,
        "Status": status,
        "NotBefore": "2026-11-20T00:00:00Z",
        "NotAfter": "2027-02-18T00:00:00Z",
        "CertificateDomains": ["mail.contoso.com", "autodiscover.contoso.com"],
        "HasPrivateKey": True,
        "PrivateKeyExportable": False,
        "IsSelfSigned": False,
        **extra,
    }


def document(**sections):
    base = {
        "servers": [{"Name": "EX01", "ServerRole": "Mailbox", "AdminDisplayVersion": "Version 15.2 (Build 1544.4)"}],
        "certificates": [certificate()],
        "send_connectors": [
            {
                "Identity": "Outbound to Office 365",
                "SourceTransportServers": ["EX01"],
                "TlsCertificateName": VALUE,
                "AddressSpaces": ["SMTP:*;1"],
                "Enabled": True,
            }
        ],
        "receive_connectors": [
            {
                "Identity": "EX01\\Default Frontend EX01",
                "Server": "EX01",
                "Bindings": ["0.0.0.0:25", "[::]:25"],
                "TlsCertificateName": VALUE,
            }
        ],
        "hybrid_configuration": {
            "SendingTransportServers": ["EX01"],
            "ReceivingTransportServers": ["EX01"],
            "EdgeTransportServers": [],
            "TlsCertificateName": VALUE,
        },
        "exo": None,
        "errors": [],
    }
    return base | sections


def parse(**sections):
    return parse_inventory(json.dumps(document(**sections)), "inventory.json")


# --- the inventory ------------------------------------------------------------------------------------


def test_a_discovery_document_reads_into_typed_values():
    inv = parse(schema="certsync.inventory/1", collected_at="2026-11-30T06:00:12Z", worker_group="hrw-exchange")
    assert inv.collected_at == dt.datetime(2026, 11, 30, 6, 0, 12, tzinfo=dt.timezone.utc)
    assert inv.worker_group == "hrw-exchange" and inv.servers[0].name == "EX01"
    cert = inv.certificates[0]
    assert cert.services == ("IIS", "SMTP") and cert.usable and cert.thumbprint == THUMB
    assert inv.send_connectors[0].source_servers == ("EX01",)
    assert inv.receive_connectors_on("ex01")[0].bindings == ("0.0.0.0:25", "[::]:25")
    assert inv.hybrid_configuration is not None and inv.hybrid_configuration.servers == ("EX01",)


def test_a_hand_saved_inventory_is_accepted_as_convertto_json_writes_it():
    """No schema, single objects for one-item arrays, the {value, Count} wrapping, numeric and string enum
    flags, /Date()/ times, property names in any case, FQDNs and AD objects for servers, unknown keys."""
    inv = parse_inventory(
        json.dumps(
            {
                "servers": {
                    "name": "ex01.corp.contoso.com",
                    "serverrole": "Mailbox, ClientAccess",
                    "Site": {"Name": "Default-First-Site-Name", "DistinguishedName": "CN=..."},
                    "PSComputerName": "ex01",
                },
                "certificates": {
                    "value": [
                        certificate(services=24, NotAfter="/Date(1802908800000)/"),
                        certificate(Thumbprint="A" * 40, services="IMAP, pop, None"),
                    ],
                    "Count": 2,
                },
                "send_connectors": {
                    "Identity": "Outbound",
                    "SourceTransportServers": {"Name": "EX01"},
                    "TlsCertificateName": {"CertificateIssuer": LE_R11, "CertificateSubject": "CN=mail.contoso.com"},
                    "RequireTLS": "True",
                },
                "receive_connectors": {"Identity": "EX01\\Default Frontend EX01", "TlsCertificateName": ""},
                "hybrid_configuration": [{"SendingTransportServers": "EX01.corp.contoso.com"}],
            }
        ),
        "saved.json",
    )
    assert inv.servers[0].name == "EX01" and inv.servers[0].site == "Default-First-Site-Name"
    assert inv.servers[0].roles == ("Mailbox", "ClientAccess") and not inv.servers[0].is_edge
    assert inv.certificates[0].services == ("IIS", "SMTP")
    assert inv.certificates[0].not_after == dt.datetime(2027, 2, 18, tzinfo=dt.timezone.utc)
    assert inv.certificates[1].services == ("IMAP", "POP") and inv.certificates[1].thumbprint == "A" * 40
    assert inv.send_connectors[0].tls_certificate_name == VALUE and inv.send_connectors[0].require_tls
    assert inv.receive_connectors[0].server == "EX01" and inv.receive_connectors[0].tls_certificate_name is None
    assert inv.hybrid_configuration is not None and inv.hybrid_configuration.sending_servers == ("EX01",)
    assert inv.exo is None and inv.errors == ()


def test_utf16_and_bom_files_as_windows_powershell_writes_them(tmp_path):
    text = json.dumps(document())
    for encoding in ("utf-16", "utf-8-sig"):
        path = tmp_path / f"{encoding}.json"
        path.write_bytes(text.encode(encoding))
        assert load_inventory(str(path)).servers[0].name == "EX01"


def test_server_names_compare_ignoring_case_and_an_fqdn_is_its_first_label():
    assert server_key("ex01.corp.contoso.com") == server_key("EX01") == "EX01"
    inv = parse(errors=[{"where": "ex01.corp.contoso.com", "message": "WinRM"}])
    assert inv.server("Ex01") is not None and inv.unread("EX01") is not None
    assert inv.organisation_errors == ()
    inv = parse(errors=[{"where": "Get-SendConnector", "message": "access denied"}])
    assert [e.where for e in inv.organisation_errors] == ["Get-SendConnector"]


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        (
            {
                "send_connectors": [
                    {"Identity": "a", "SourceTransportServers": ["EX01"]},
                    {"Identity": "b", "SourceTransportServers": 7},
                ]
            },
            "inventory.json: send_connectors[1].SourceTransportServers: expected a list of server names",
        ),
        ({"servers": "EX01"}, "inventory.json: servers: expected a list of objects (found text)"),
        ({"servers": [{"Name": "EX01"}, {"Name": "ex01"}]}, "servers: a server is listed twice"),
        ({"certificates": [certificate(Thumbprint="xyz")]}, "certificates[0].Thumbprint: expected a 40-digit hex"),
        ({"certificates": [certificate(services="SMTP, Fax")]}, "certificates[0].Services: 'Fax' is not an Exchange"),
        ({"certificates": [certificate(services=512)]}, "certificates[0].Services: 512 is not a combination"),
        ({"certificates": [certificate(NotAfter="next week")]}, "certificates[0].NotAfter: expected an ISO 8601"),
        ({"certificates": [certificate(HasPrivateKey="yes")]}, "certificates[0].HasPrivateKey: expected true or false"),
        ({"certificates": [certificate(subject='CN="unterminated')]}, "certificates[0].Subject: not a name"),
        ({"certificates": [certificate(Issuer=None)]}, "certificates[0].Issuer: missing; expected text"),
        ({"certificates": [certificate(Server="EX 01")]}, "certificates[0].Server: 'EX 01' is not a server name"),
        (
            {"send_connectors": [{"Identity": "a", "TlsCertificateName": "CN=mail.contoso.com"}]},
            "send_connectors[0].TlsCertificateName: not a TlsCertificateName",
        ),
        (
            {"send_connectors": [{"Identity": "a", "TlsCertificateName": 5}]},
            "send_connectors[0].TlsCertificateName: expected '<I>issuer<S>subject' or null",
        ),
        (
            {"send_connectors": [{"Identity": "a", "TlsCertificateName": {"CertificateIssuer": "x"}}]},
            "send_connectors[0].TlsCertificateName: expected",
        ),
        (
            {"receive_connectors": [{"Identity": "EX02\\Default Frontend EX02", "Server": "EX01"}]},
            "receive_connectors[0].Identity: 'EX02\\\\Default Frontend EX02' names another server",
        ),
        (
            {"receive_connectors": [{"Identity": "EX01\\x", "Bindings": [25]}]},
            "receive_connectors[0].Bindings: expected a list",
        ),
        ({"receive_connectors": ["x"]}, "receive_connectors[0]: expected an object (found text)"),
        ({"servers": [{"Name": "EX01", "ServerRole": 64}]}, "servers[0].ServerRole: expected the string form"),
        ({"servers": [{"Name": "EX01", "Fqdn": 3}]}, "servers[0].Fqdn: expected text (found a number)"),
        ({"hybrid_configuration": "yes"}, "hybrid_configuration: expected an object or null (found text)"),
        ({"exo": []}, "exo: expected an object or null (found a list)"),
        ({"schema": "certsync.inventory/2"}, "schema: 'certsync.inventory/2' is not 'certsync.inventory/1'"),
        ({"collected_at": 12}, "collected_at: expected an ISO 8601 time"),
    ],
)
def test_a_malformed_inventory_is_one_line_naming_the_file_and_field(sections, expected):
    with pytest.raises(InventoryError) as caught:
        parse(**sections)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("inventory.json: ")
    assert expected in message, message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"[]", "expected a JSON object with servers"),
        (b"{", r"not JSON \(line 1"),
        (b"\xff\xfe\x00\xd8", "not UTF-8 or UTF-16 text"),
        (b"\xc3\x28", "not UTF-8 or UTF-16 text"),
    ],
)
def test_what_is_not_an_inventory_at_all(data, expected):
    with pytest.raises(InventoryError, match=expected):
        parse_inventory(data, "inventory.json")


def test_a_missing_or_unreadable_file_is_named(tmp_path):
    with pytest.raises(CertsyncError, match=r"missing\.json: no such file"):
        load_inventory(str(tmp_path / "missing.json"))
    with pytest.raises(CertsyncError, match="cannot be read"):
        load_inventory(str(tmp_path))


# --- the match rule -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def r11_leaf() -> Certificate:
    inter = issue(make_name("R11", "Let's Encrypt"), ca=True)
    leaf = issue(make_name("mail.contoso.com", None, None), issuer=inter, dns_names=["mail.contoso.com"])
    return Certificate.from_der(leaf.der)


@pytest.mark.parametrize(
    ("value", "selected"),
    [
        (VALUE, True),
        ("<i>cn=r11, o=LET'S ENCRYPT, c=us<s>cn=MAIL.contoso.com", True),  # case is ignored, tags too
        ("<I>CN=R11,O=Let's Encrypt,C=US<S>CN=mail.contoso.com", True),  # blanks around separators are not kept
        ("<I>CN=R11; O=Let's Encrypt; C=US<S>CN=mail.contoso.com", True),  # ';' separates RDNs too
        ("<S>CN=mail.contoso.com", True),  # no <I>: every certificate with that subject
        ("<I>C=US, O=Let's Encrypt, CN=R11<S>CN=mail.contoso.com", False),  # RDN order matters
        ("<I>CN=R11, O=Let's  Encrypt, C=US<S>CN=mail.contoso.com", False),  # inner spacing matters
        ("<I>CN=R10, O=Let's Encrypt, C=US<S>CN=mail.contoso.com", False),
        ("<S>CN=smtp.contoso.com", False),
    ],
)
def test_the_match_rule_as_exchange_applies_it(r11_leaf, value, selected):
    assert selects(value, r11_leaf) is selected
    assert selects(value, name_of("CN=mail.contoso.com", LE_R11)) is selected  # a server's own rendering


def test_a_name_windows_could_not_have_printed_is_refused_with_both_texts():
    with pytest.raises(CertsyncError, match="'CN=\"x' issued by"):
        name_of('CN="x', LE_R11)


# --- mail-flow prediction -----------------------------------------------------------------------------


def test_a_healthy_organisation_has_no_finding():
    findings = predict(parse())
    assert findings == [] and not worst_is_warning_or_worse(findings)
    assert doctor_document(findings) == {"schema": "certsync.doctor/1", "findings": []}


def test_a_connector_whose_certificate_is_gone_gets_the_454_and_the_renewed_name_as_fix():
    other = certificate(Issuer="CN=R10, O=Let's Encrypt, C=US")
    findings = predict(parse(certificates=[other]))
    kinds = {(f.kind, f.error) for f in findings}
    assert (
        ("send", SEND_NOT_FOUND) in kinds
        and ("receive", RECEIVE_NOT_FOUND) in kinds
        and ("hybrid", SEND_NOT_FOUND) in kinds
    )
    send = next(f for f in findings if f.kind == "send")
    assert send.server == "EX01" and send.severity == "error" and send.tls_certificate_name == VALUE
    assert "Set-SendConnector 'Outbound to Office 365' -TlsCertificateName '<I>CN=R10" in send.fix
    assert set(send.to_dict()) == {"server", "object", "kind", "tls_certificate_name", "severity", "error", "fix"}
    assert worst_is_warning_or_worse(findings)


@pytest.mark.parametrize(
    ("cert", "fix"),
    [
        (certificate(services="IIS"), f"Enable-ExchangeCertificate -Server EX01 -Thumbprint {THUMB} -Services SMTP"),
        (certificate(status="RevocationCheckFailure"), "reach the CRL"),
        (certificate(status="Untrusted"), "install the intermediates"),
        (certificate(status="PendingRequest"), "Status PendingRequest"),
        (certificate(subject="CN=other.contoso.com"), "import and enable for SMTP a certificate"),
    ],
)
def test_each_way_a_selected_certificate_fails_has_its_fix(cert, fix):
    findings = predict(parse(certificates=[cert]))
    assert findings and all(f.severity == "error" for f in findings)
    assert fix in findings[0].fix


def test_unread_servers_unknown_servers_duplicates_and_expiry():
    inv = parse(
        errors=[{"where": "EX01", "message": "WinRM"}, {"where": "Get-HybridConfiguration", "message": "denied"}]
    )
    findings = predict(inv)
    assert [(f.server, f.severity) for f in findings] == [("EX01", "warning"), (None, "warning")]
    lost = parse(send_connectors=[{"Identity": "x", "SourceTransportServers": ["EX09"], "TlsCertificateName": VALUE}])
    assert any("EX09 is not in the inventory" in f.error for f in predict(lost))
    twice = parse(certificates=[certificate(), certificate(Thumbprint="B" * 40)])
    assert {f.severity for f in predict(twice)} == {"info"} and not worst_is_warning_or_worse(predict(twice))
    soon = predict(parse(collected_at="2027-02-08T00:00:00Z"))  # 10 of 90 days left: under 15% of its lifetime
    assert [f.kind for f in soon] == ["certificate"] and "expires in 10 day(s)" in soon[0].error
    assert predict(parse(collected_at="2027-02-01T00:00:00Z")) == []  # 17 days: routine for a 90-day certificate
    assert predict(parse(), at=dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)) == []


def test_exchange_online_inbound_connector_and_accepted_domains():
    exo = {
        "inbound_connectors": [
            {
                "Identity": "Inbound from x",
                "ConnectorType": "OnPremises",
                "TlsSenderCertificateName": "mail.fabrikam.com",
            },
            {"Identity": "Partner", "ConnectorType": "Partner", "TlsSenderCertificateName": "mx.fabrikam.com"},
        ],
        "accepted_domains": [{"DomainName": "contoso.com", "DomainType": "Authoritative"}],
    }
    findings = predict(parse(exo=exo))
    assert [(f.kind, f.severity, f.error) for f in findings] == [
        ("exo", "error", EXO_NOT_ATTRIBUTED),
        ("exo", "warning", "mail.fabrikam.com is not an accepted domain (MC1226222: the connector may stop working)"),
    ]
    exo["inbound_connectors"][0]["TlsSenderCertificateName"] = "*.contoso.com"
    assert predict(parse(exo=exo)) == []
    no_hybrid = predict(parse(exo=exo, hybrid_configuration=None))
    assert no_hybrid == []


def test_covers_and_accepted_domains():
    assert covers(("mail.contoso.com",), "MAIL.contoso.com")
    assert covers(("*.contoso.com",), "mail.contoso.com")
    assert covers(("mail.contoso.com",), "*.contoso.com") and covers(("*.contoso.com",), "*.contoso.com")
    assert not covers(("mail.contoso.com",), "smtp.contoso.com")
    assert is_accepted("mail.contoso.com", ["contoso.com"]) and is_accepted("*.contoso.com", ["*.contoso.com"])
    assert not is_accepted("contoso.com.evil.net", ["contoso.com"]) and not is_accepted(
        "notcontoso.com", ["contoso.com"]
    )
