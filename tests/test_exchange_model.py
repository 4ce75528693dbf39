"""The Exchange model's own behaviour: its match rule, each refusal, compare-and-set, exact rollback, the
mail-flow violations it finds, and a hand-written plan/2 that renews a two-server organisation."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.exchange_model import (
    CheckFailed,
    ExchangeOrg,
    Refused,
    StaleWrite,
    covers,
    parse_x500,
    render_services,
    selects,
    services,
)
from tests.topologies import Topology, topologies

R10 = "CN=R10, O=Let's Encrypt, C=US"
R11 = "CN=R11, O=Let's Encrypt, C=US"
SUBJECT = "CN=mail.contoso.com"
OLD_NAME = f"<I>{R10}<S>{SUBJECT}"
NEW_NAME = f"<I>{R11}<S>{SUBJECT}"
OLD, NEW, SELF1, SELF2 = "A" * 40, "B" * 40, "1" * 40, "2" * 40
CA_R10, CA_R11 = "C" * 40, "D" * 40
NEW_FACTS = {
    "thumbprint": NEW,
    "subject": SUBJECT,
    "issuer": R11,
    "tls_certificate_name": NEW_NAME,
    "dns_names": ["mail.contoso.com"],
    "intermediates": [{"thumbprint": CA_R11, "subject": R11}],
    "not_before": "2026-01-10T00:00:00Z",
    "not_after": "2026-04-10T00:00:00Z",
    "exportable": True,
}


def cert(server: str, thumbprint: str, subject: str, issuer: str, services: str = "SMTP") -> dict[str, Any]:
    return {
        "Server": server,
        "Thumbprint": thumbprint,
        "Subject": subject,
        "Issuer": issuer,
        "Services": services,
        "Status": "Valid",
        "NotBefore": "2025-06-01T00:00:00Z",
        "NotAfter": "2026-06-01T00:00:00Z",
        "CertificateDomains": ["mail.contoso.com"],
        "HasPrivateKey": True,
        "PrivateKeyExportable": True,
        "IsSelfSigned": subject == issuer,
    }


def two_servers() -> ExchangeOrg:
    """EX01 sends to Exchange Online, EX01 and EX02 receive; the R10 certificate on both."""
    inventory = {
        "servers": [
            {"Name": "EX01", "IsEdgeServer": False, "InternalTransportCertificateThumbprint": SELF1},
            {"Name": "EX02", "IsEdgeServer": False, "InternalTransportCertificateThumbprint": SELF2},
        ],
        "certificates": [
            cert("EX01", SELF1, "CN=EX01", "CN=EX01", "IIS, SMTP"),
            cert("EX01", OLD, SUBJECT, R10, "IIS, SMTP"),
            cert("EX02", SELF2, "CN=EX02", "CN=EX02", "IIS, SMTP"),
            cert("EX02", OLD, SUBJECT, R10),
        ],
        "send_connectors": [
            {
                "Identity": "Outbound to Office 365",
                "SourceTransportServers": ["EX01"],
                "TlsCertificateName": OLD_NAME,
                "CloudServicesMailEnabled": True,
            }
        ],
        "receive_connectors": [
            {"Identity": "EX01\\Default Frontend EX01", "Server": "EX01", "TlsCertificateName": OLD_NAME},
            {"Identity": "EX02\\Default Frontend EX02", "Server": "EX02", "TlsCertificateName": OLD_NAME},
        ],
        "hybrid_configuration": {
            "SendingTransportServers": ["EX01"],
            "ReceivingTransportServers": ["ex01.corp.contoso.com", "EX02"],
            "EdgeTransportServers": [],
            "TlsCertificateName": OLD_NAME,
        },
        "exo": {
            "inbound_connectors": [
                {
                    "Identity": "Inbound from contoso",
                    "ConnectorType": "OnPremises",
                    "TlsSenderCertificateName": "mail.contoso.com",
                    "Enabled": True,
                }
            ]
        },
        "errors": [],
    }
    return ExchangeOrg(inventory, intermediates={"EX01": {CA_R10}, "EX02": {CA_R10}}, importable={NEW: NEW_FACTS})


def step(action: str, server: str | None, obj: str, previous: Any = None, value: Any = None, **extra: Any) -> dict:
    phase = {"remove-certificate": "retire"}.get(action, "switch" if action.startswith("set-") else "stage")
    prop = {"enable-services": "Services", "set-exo-inbound-connector": "TlsSenderCertificateName"}.get(action)
    if action.startswith("set-") and prop is None:
        prop = "TlsCertificateName"
    return {
        "phase": phase,
        "action": action,
        "server": server,
        "object": obj,
        "property": prop,
        "previous": previous,
        "value": value,
        **extra,
    }


def stage(server: str, services_: list[str]) -> list[dict]:
    return [
        step("install-intermediate", server, CA_R11, value=CA_R11, subject=R11),
        step("import-certificate", server, NEW, value=NEW),
        step("enable-services", server, NEW, "None", services_),
        step("check-name", server, NEW, value=NEW_NAME),
        step("check-status", server, NEW, value="Valid"),
    ]


RENEWAL_PLAN = {
    "schema": "certsync.plan/2",
    "certificate": {"thumbprint": NEW, "tls_certificate_name": NEW_NAME},
    "servers": ["EX01", "EX02"],
    "blocked": None,
    "warnings": [],
    "steps": [
        *stage("EX01", ["IIS", "SMTP"]),
        *stage("EX02", ["SMTP"]),
        step("set-send-connector", None, "Outbound to Office 365", OLD_NAME, NEW_NAME),
        step("set-receive-connector", "EX01", "EX01\\Default Frontend EX01", OLD_NAME, NEW_NAME),
        step("set-receive-connector", "EX02", "EX02\\Default Frontend EX02", OLD_NAME, NEW_NAME),
        step("set-hybrid-configuration", None, "Hybrid Configuration", OLD_NAME, NEW_NAME),
        step("remove-certificate", "EX01", OLD),
        step("remove-certificate", "EX02", OLD),
    ],
    "kept": [],
}


# --- the match rule ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        OLD_NAME,
        OLD_NAME.lower(),
        "<i>CN=R10,O=Let's Encrypt;C=US<s> CN = mail.contoso.com ",
        f"<S>{SUBJECT}",
        f"<s>{SUBJECT.upper()}",
    ],
)
def test_a_name_selects_the_certificate_ignoring_case_blanks_and_separators(name: str) -> None:
    assert selects(name, cert("EX01", OLD, SUBJECT, R10))


@pytest.mark.parametrize(
    "name",
    [
        f"<I>O=Let's Encrypt, CN=R10, C=US<S>{SUBJECT}",  # RDN order matters
        f"<I>CN=R10, O=Let's  Encrypt, C=US<S>{SUBJECT}",  # inner spacing matters
        NEW_NAME,  # another issuer
        f"<I>{R10}<S>CN=smtp.contoso.com",
        f"<I>{R10}",  # no subject: not a TlsCertificateName
        "CN=mail.contoso.com",
        "<S>CN",  # an AVA without "="
        "",
        None,
    ],
)
def test_a_name_does_not_select_another_certificate(name: str | None) -> None:
    assert not selects(name, cert("EX01", OLD, SUBJECT, R10))


def test_quoted_values_and_st_read_as_exchange_reads_them() -> None:
    windows = 'CN=mail.contoso.com, O="Contoso, Ltd.", S=Washington, C=US'
    assert parse_x500(windows) == parse_x500('cn=MAIL.contoso.com;O = "Contoso, Ltd." ; ST=Washington,C=US')
    assert parse_x500('CN="say ""hi"""') == ((("CN", 'say "hi"'),),)
    assert parse_x500("CN=a + OU=b") == ((("CN", "a"), ("OU", "b")),)


def test_domains_are_covered_by_names_and_wildcards_one_label_deep() -> None:
    assert covers(["Mail.Contoso.com"], "mail.contoso.com")
    assert covers(["*.contoso.com"], "mail.contoso.com")
    assert covers(["mail.contoso.com"], "*.contoso.com")
    assert not covers(["*.contoso.com"], "a.mail.contoso.com")
    assert not covers(["mail.contoso.com"], "*.fabrikam.net")
    assert not covers(["contoso.com"], "*.contoso.com")


def test_services_read_and_print_in_exchanges_order() -> None:
    assert services("IIS, SMTP") == {"IIS", "SMTP"} == services(["SMTP", "IIS"])
    assert services("None") == services(None) == frozenset()
    assert render_services({"SMTP", "IMAP", "IIS", "POP"}) == "IMAP, POP, IIS, SMTP"
    assert render_services(set()) == "None"


# --- applying steps ----------------------------------------------------------------------------------


def test_the_hand_written_renewal_leaves_the_two_server_org_healthy() -> None:
    org = two_servers()
    assert org.violations() == [] and org.exo_violations() == []
    org.apply_plan(RENEWAL_PLAN)
    assert org.violations() == [] and org.exo_violations() == []
    assert [c["Thumbprint"] for c in org.inventory["certificates"]] == [SELF1, SELF2, NEW, NEW]
    ex01 = org.certificate("EX01", NEW)
    assert ex01 is not None and ex01["Services"] == "IIS, SMTP" and ex01["Status"] == "Valid"
    assert org.server("EX01")["InternalTransportCertificateThumbprint"] == SELF1  # enable-services left it
    assert org.inventory["hybrid_configuration"]["TlsCertificateName"] == NEW_NAME


@pytest.mark.parametrize("stop_after", range(len(RENEWAL_PLAN["steps"]) + 1))
def test_rollback_after_each_step_restores_the_org_exactly(stop_after: int) -> None:
    org = two_servers()
    before = org.snapshot()
    org.apply_plan(RENEWAL_PLAN, stop_after=stop_after)
    assert stop_after == 0 or org.snapshot() != before or not org.journal
    org.rollback()
    assert org.snapshot() == before
    assert org.journal == [] and org.applied == []


def test_applying_a_step_twice_is_a_no_op_the_second_time() -> None:
    org = two_servers()
    org.apply_plan(RENEWAL_PLAN)
    after = org.snapshot()
    journalled = len(org.journal)
    org.apply_plan(RENEWAL_PLAN)  # every write finds its value already there, whatever `previous` says
    assert org.snapshot() == after and len(org.journal) == journalled


def test_a_write_with_a_stale_previous_is_refused_and_changes_nothing() -> None:
    org = two_servers()
    before = org.snapshot()
    with pytest.raises(StaleWrite, match="expected"):
        org.apply(step("set-send-connector", None, "Outbound to Office 365", NEW_NAME.lower(), "<S>CN=x.contoso.com"))
    with pytest.raises(StaleWrite):
        org.apply(step("set-hybrid-configuration", None, "Hybrid Configuration", None, NEW_NAME))
    with pytest.raises(StaleWrite):
        org.apply(step("set-exo-inbound-connector", None, "Inbound from contoso", "*.contoso.com", "smtp.contoso.com"))
    org.apply(step("import-certificate", "EX02", NEW, value=NEW))
    with pytest.raises(StaleWrite):
        org.apply(step("enable-services", "EX02", NEW, "IIS", ["SMTP"]))
    org.rollback()
    assert org.snapshot() == before


def test_exchange_refuses_to_remove_a_certificate_a_send_connector_references() -> None:
    org = two_servers()
    with pytest.raises(Refused, match="Outbound to Office 365"):
        org.apply(step("remove-certificate", "EX01", OLD))
    org.apply(step("remove-certificate", "EX02", OLD))  # EX02 is not a source of the send connector
    assert org.certificate("EX02", OLD) is None


def with_twin(services: list[str] | None) -> ExchangeOrg:
    """two_servers() with a renewed copy of OLD (same names, issuer R10) imported on EX01, SMTP-enabled
    when `services` says so."""
    org = two_servers()
    twin = {**NEW_FACTS, "thumbprint": "E" * 40, "issuer": R10, "intermediates": [{"thumbprint": CA_R10}]}
    org.importable["E" * 40] = twin
    org.apply(step("import-certificate", "EX01", "E" * 40))
    if services:
        org.apply(step("enable-services", "EX01", "E" * 40, "None", services))
    return org


def test_exchange_lets_a_certificate_go_when_a_valid_smtp_copy_with_its_names_stays_beside_it() -> None:
    # Exchange's refusal reads "would break the mail flow": with a Valid, SMTP-enabled certificate the send
    # connector also selects on EX01, removing OLD breaks nothing (the integrator's reading; unverified).
    org = with_twin(["IIS", "SMTP"])
    assert org.send_references("EX01", OLD) == ["Outbound to Office 365"]
    assert org.removal_refused_by("EX01", OLD) == []
    before = org.snapshot()
    org.apply(step("remove-certificate", "EX01", OLD))
    assert org.certificate("EX01", OLD) is None and org.violations() == []
    org.journal.pop()()  # the removal's own undo puts it back where it was
    assert org.snapshot() == before


@pytest.mark.parametrize("services", [None, ["IIS"]])
def test_exchange_refuses_the_removal_when_the_copy_beside_it_is_not_smtp_enabled(services) -> None:
    org = with_twin(services)
    before = org.snapshot()
    with pytest.raises(Refused, match="only certificate send connectors Outbound to Office 365 select there"):
        org.apply(step("remove-certificate", "EX01", OLD))
    assert org.snapshot() == before


def test_exchange_refuses_the_removal_when_the_copy_beside_it_is_not_valid() -> None:
    org = with_twin(["SMTP"])
    org.certificate("EX01", "E" * 40)["Status"] = "RevocationCheckFailure"
    with pytest.raises(Refused, match="would break the mail flow"):
        org.apply(step("remove-certificate", "EX01", OLD))


def test_a_renewal_with_other_names_does_not_let_the_old_certificate_go_before_the_switch() -> None:
    org = two_servers()
    org.apply(step("install-intermediate", "EX01", CA_R11, value="Cert:\\LocalMachine\\CA"))
    org.apply(step("import-certificate", "EX01", NEW))
    org.apply(step("enable-services", "EX01", NEW, "None", ["SMTP"]))
    assert org.certificate("EX01", NEW)["Status"] == "Valid"
    with pytest.raises(Refused, match="Outbound to Office 365"):
        org.apply(step("remove-certificate", "EX01", OLD))  # the connector still names R10's certificate


def test_exchange_refuses_to_remove_the_internal_transport_certificate() -> None:
    org = two_servers()
    with pytest.raises(Refused, match="internal transport"):
        org.apply(step("remove-certificate", "EX02", SELF2))


def test_removing_a_certificate_that_is_gone_is_a_no_op() -> None:
    org = two_servers()
    org.apply(step("remove-certificate", "EX02", "F" * 40))
    assert org.journal == []


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (
            step("set-send-connector", None, "Outbound to Office 365", OLD_NAME, f"<I>{R11}<S>CN=Contoso Mail"),
            Refused,
            "DNS",
        ),
        (step("set-send-connector", None, "Outbound to Office 365", OLD_NAME, f"<I>{R11}<S>O=Contoso"), Refused, "DNS"),
        (step("set-send-connector", None, "Nowhere", OLD_NAME, NEW_NAME), Refused, "no send connector"),
        (
            step("set-receive-connector", "EX01", "EX01\\Default Frontend EX01", OLD_NAME, NEW_NAME, property="Fqdn"),
            Refused,
            "cannot write",
        ),
        (step("import-certificate", "EX01", "F" * 40), Refused, "no certificate"),
        (step("import-certificate", "EX09", NEW), Refused, "not in the organisation"),
        (step("import-certificate", None, NEW), Refused, "needs a server"),
        (step("install-intermediate", "EX01", ""), Refused, "names no certificate"),
        (step("enable-services", "EX01", NEW, "None", ["SMTP"]), Refused, "not installed"),
        (step("check-name", "EX01", NEW, value=NEW_NAME), CheckFailed, "not installed"),
        (step("check-name", "EX01", OLD, value=NEW_NAME), CheckFailed, "Exchange shows"),
        (step("check-status", "EX01", NEW, value="Valid"), CheckFailed, "not installed"),
        (step("reboot-server", "EX01", "EX01"), Refused, "unknown action"),
    ],
)
def test_each_refusal_leaves_the_org_unchanged(bad: dict, error: type[Exception], message: str) -> None:
    org = two_servers()
    before = org.snapshot()
    with pytest.raises(error, match=message):
        org.apply(bad)
    assert org.snapshot() == before and org.journal == [] and org.applied == []


def test_set_hybrid_configuration_is_refused_without_one() -> None:
    org = two_servers()
    org.inventory["hybrid_configuration"] = None
    with pytest.raises(Refused, match="no hybrid configuration"):
        org.apply(step("set-hybrid-configuration", None, "Hybrid Configuration", OLD_NAME, NEW_NAME))


def test_an_import_without_its_intermediate_is_untrusted_until_the_intermediate_arrives() -> None:
    org = two_servers()
    org.apply(step("import-certificate", "EX01", NEW))
    org.apply(step("enable-services", "EX01", NEW, "None", ["SMTP"]))
    with pytest.raises(CheckFailed, match="Untrusted"):
        org.apply(step("check-status", "EX01", NEW, value="Valid"))
    org.apply(step("install-intermediate", "EX01", CA_R11, value=CA_R11))
    org.apply(step("check-status", "EX01", NEW, value="Valid"))
    org.apply(step("install-intermediate", "EX01", CA_R11, value=CA_R11))  # already there: no-op
    assert len(org.journal) == 3


def test_enable_services_adds_and_never_takes_the_internal_transport_role() -> None:
    org = two_servers()
    org.apply(step("import-certificate", "EX02", NEW))
    org.apply(step("enable-services", "EX02", NEW, "None", ["SMTP", "POP"]))
    org.apply(step("enable-services", "EX02", NEW, "POP, SMTP", ["IIS"]))
    org.apply(step("enable-services", "EX02", NEW, "whatever", ["SMTP"]))  # already enabled: no-op
    certificate = org.certificate("EX02", NEW)
    assert certificate is not None and certificate["Services"] == "POP, IIS, SMTP"
    assert org.server("EX02")["InternalTransportCertificateThumbprint"] == SELF2


# --- violations --------------------------------------------------------------------------------------


def test_violations_find_each_kind_of_break() -> None:
    org = two_servers()
    ex01_old = org.certificate("EX01", OLD)
    ex02_old = org.certificate("EX02", OLD)
    assert ex01_old is not None and ex02_old is not None
    ex01_old["Status"] = "DateInvalid"  # EX01: the send connector, its receive connector and hybrid
    ex02_old["Services"] = "IIS"  # EX02: not SMTP-enabled
    found = {(v.kind, v.object, v.server) for v in org.violations()}
    assert found == {
        ("send", "Outbound to Office 365", "EX01"),
        ("receive", "EX01\\Default Frontend EX01", "EX01"),
        ("receive", "EX02\\Default Frontend EX02", "EX02"),
        ("hybrid", "Hybrid Configuration", "EX01"),
        ("hybrid", "Hybrid Configuration", "EX02"),
    }
    assert {v.error for v in org.violations()} == {
        "454 4.7.5 certificate not found",
        "TLS negotiation failed with error NoCredentials",
    }


def test_a_connector_naming_a_certificate_a_server_lacks_is_a_violation() -> None:
    org = two_servers()
    org.inventory["send_connectors"][0]["SourceTransportServers"].append("EX03.corp.contoso.com")
    assert [(v.kind, v.server) for v in org.violations()] == [("send", "EX03.CORP.CONTOSO.COM")]


def test_objects_without_a_name_are_not_violations() -> None:
    org = two_servers()
    for connector in org.inventory["send_connectors"] + org.inventory["receive_connectors"]:
        connector["TlsCertificateName"] = None
    org.inventory["hybrid_configuration"]["TlsCertificateName"] = None
    org.inventory["certificates"] = []
    assert org.violations() == [] and org.exo_violations() == []


def test_exchange_online_rejects_a_certificate_that_does_not_cover_its_inbound_connector() -> None:
    org = two_servers()
    inbound = org.inventory["exo"]["inbound_connectors"][0]
    inbound["TlsSenderCertificateName"] = "smtp.contoso.com"
    assert [(v.kind, v.server) for v in org.exo_violations()] == [("exo", "EX01")]
    inbound["Enabled"] = False
    assert org.exo_violations() == []


def test_the_model_keeps_its_own_copy_of_the_inventory() -> None:
    inventory = {"servers": [], "certificates": []}
    original = copy.deepcopy(inventory)
    org = ExchangeOrg(inventory)
    org.inventory["servers"].append({"Name": "EX01"})
    assert inventory == original


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topologies())
def test_generated_organisations_start_healthy_and_discovery_hides_unreadable_servers(topology: Topology) -> None:
    org = topology.org()
    assert org.violations() == [] and org.exo_violations() == []
    discovered = topology.discovered()
    assert [e["where"] for e in discovered["errors"]] == topology.unreadable
    held = {c["Server"] for c in discovered["certificates"]}
    assert not held & set(topology.unreadable)
