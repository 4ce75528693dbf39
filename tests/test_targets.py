"""Targets from the targets file and Key Vault tags: every rule, the merge order and the exact messages.

Each invalid input is checked against the whole message, so a test fails if the rule goes, and also if
the message stops naming the file or tag, the field, or the remedy.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from shared.pipeline.targets import (
    SCHEMA,
    Targets,
    TargetsError,
    load_targets_file,
    parse_targets_json,
    resolve_targets,
    targets_from_tags,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "targets.json"
CERT = "exch-hybrid-smtp"
SEND = "Outbound to Office 365 - 0b9d5c6e-3f51-4d2b-9a70-2f1c8e4b7a10"
INBOUND = "Inbound from 0b9d5c6e-3f51-4d2b-9a70-2f1c8e4b7a10"
BASE = {"worker_group": "hrw-exchange", "servers": ["EX01", "EX02"]}

AT = f"targets.json: certificates.{CERT}"
KEYS = (
    "worker_group, servers, send_connectors, receive_connectors, hybrid_configuration, hosts, "
    "exo_inbound_connector, allow_status, probe"
)
TAG_LIST = (
    "certsync-worker-group, certsync-servers, certsync-send-connectors, certsync-receive-connectors, "
    "certsync-hybrid, certsync-hosts, certsync-exo-inbound-connector, certsync-allow-status, certsync-probe"
)
NOT_NETBIOS = "is not a server's NetBIOS name (1-15 letters, digits, hyphens)"
CONTROL_REMEDY = "remove it (Exchange identities cannot contain line breaks, tabs or NUL)"
NOT_RECEIVE = 'is not SERVER\\Name; give the server and the connector name, e.g. "EX01\\Default Frontend EX01"'
TOO_LONG = (
    "is 65 characters; Exchange connector names have at most 64; "
    "copy the name from Get-SendConnector, Get-ReceiveConnector or Get-InboundConnector"
)
NOT_HOST = (
    "is not a DNS host name; give a name like mail.contoso.com or *.contoso.com (A-labels, xn--, for non-ASCII names)"
)
STATUSES = "Untrusted, RevocationCheckFailure"
NO_TARGETS = (
    "no targets; tag the certificate (certsync-worker-group, certsync-servers, ...) "
    "or add it to the targets file (docs/targets.md)"
)


def document(certificates: object = None, **top: object) -> str:
    """A targets file's text: by default one valid entry for CERT."""
    doc = {"schema": SCHEMA, "certificates": {CERT: BASE} if certificates is None else certificates, **top}
    return json.dumps(doc)


def with_entry(**fields: object) -> str:
    """A targets file whose CERT entry is BASE with `fields` added or replaced."""
    return document({CERT: {**BASE, **fields}})


def parse(text: str):
    return parse_targets_json(text, "targets.json")


def error_of(call, *args, **kwargs) -> str:
    with pytest.raises(TargetsError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message  # one line, whatever the input held
    return message


# --------------------------------------------------------------------------------------------------
# The example and the documentation


def test_the_example_file_loads_and_resolves_to_its_entry():
    targets = resolve_targets(CERT, file=load_targets_file(str(EXAMPLE)))
    assert targets == Targets(
        certificate=CERT,
        worker_group="hrw-exchange",
        servers=("EX01", "EX02"),
        send_connectors=(SEND,),
        receive_connectors=("EX01\\Default Frontend EX01", "EX02\\Default Frontend EX02"),
        hybrid_configuration=True,
        hosts=("mail.contoso.com", "autodiscover.contoso.com"),
        exo_inbound_connector=INBOUND,
        allow_status=(),
        sources=(str(EXAMPLE),),
        probe=("mail.contoso.com:25", "autodiscover.contoso.com:25"),  # the hosts, on port 25
    )


def test_the_documented_example_is_the_example_file():
    docs = (ROOT / "docs" / "targets.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)```", docs, flags=re.S)
    assert [json.loads(block) for block in blocks] == [json.loads(EXAMPLE.read_text(encoding="utf-8"))]


def test_the_documented_error_examples_are_what_the_code_says():
    docs = (ROOT / "docs" / "targets.md").read_text(encoding="utf-8")
    produced = [
        error_of(parse, with_entry(server=["EX01"])),
        error_of(parse, with_entry(servers=["EX01", "ex02.contoso.com"])),
        error_of(resolve_targets, CERT, tags={"certsync-hybrid": "yes"}),
        error_of(resolve_targets, CERT),
    ]
    for message in produced:
        assert message in docs


# --------------------------------------------------------------------------------------------------
# The file: syntax and schema


def test_a_json_syntax_error_gives_line_and_column():
    text = (
        '{\n  "schema": "certsync.targets/1",\n  "certificates": {\n'
        '    "a": {"servers": ["EX01"] "worker_group": "g"}\n'  # line 4: the comma after ["EX01"] is missing
        "  }\n}\n"
    )
    assert error_of(parse, text) == (
        "targets.json: not valid JSON at line 4, column 31 (Expecting ',' delimiter); fix the syntax there"
    )


INVALID_FILES = [
    pytest.param(
        "[]",
        (
            'targets.json: the top level is an array; it must be an object with "schema" and "certificates" '
            "(docs/targets.md)"
        ),
        id="top-level-array",
    ),
    pytest.param(
        document(certs={}),
        'targets.json: unknown key "certs"; the keys are schema, certificates',
        id="top-level-unknown-key",
    ),
    pytest.param(
        '{"certificates": {}}',
        'targets.json: "schema" is missing; add "schema": "certsync.targets/1" at the top',
        id="schema-missing",
    ),
    pytest.param(
        document(schema="certsync.targets/2"),
        'targets.json: schema is "certsync.targets/2"; this certsync reads "certsync.targets/1"',
        id="schema-other-version",
    ),
    pytest.param(
        document(schema=1),
        'targets.json: schema is 1; this certsync reads "certsync.targets/1"',
        id="schema-number",
    ),
    pytest.param(
        '{"schema": "certsync.targets/1"}',
        'targets.json: "certificates" is missing; it must be an object of certificate name -> entry',
        id="certificates-missing",
    ),
    pytest.param(
        document([]),
        'targets.json: "certificates" is an array; it must be an object of certificate name -> entry',
        id="certificates-array",
    ),
    pytest.param(
        document({"exch hybrid": BASE}),
        (
            "targets.json: certificates: certificate name 'exch hybrid': Key Vault names are 1-127 letters, "
            'digits and dashes; use the certificate\'s Key Vault name, or "*" for defaults'
        ),
        id="name-not-key-vault",
    ),
    pytest.param(
        document({"Exch-Hybrid-SMTP": BASE, CERT: BASE}),
        (
            'targets.json: certificates: "Exch-Hybrid-SMTP" and "exch-hybrid-smtp" are the same certificate '
            "(names ignore case); merge the two entries"
        ),
        id="names-differ-in-case-only",
    ),
    pytest.param(
        '{"schema": "certsync.targets/1", "certificates": {"a": {}, "a": {}}}',
        'targets.json: certificates: key "a" appears twice; keep one',
        id="certificate-twice",
    ),
    pytest.param(
        document({CERT: []}),
        f"{AT}: is an array; it must be an object of targets (docs/targets.md)",
        id="entry-array",
    ),
    pytest.param(
        with_entry(server=["EX01"]),
        f'{AT}: unknown key "server" (did you mean "servers"?); the keys are {KEYS}',
        id="unknown-key-close-to-one",
    ),
    pytest.param(with_entry(colour="blue"), f'{AT}: unknown key "colour"; the keys are {KEYS}', id="unknown-key"),
    pytest.param(
        '{"schema": "certsync.targets/1", "certificates": {"a": {"servers": ["EX01"], "servers": ["EX02"]}}}',
        'targets.json: certificates.a: key "servers" appears twice; keep one',
        id="key-twice",
    ),
    pytest.param(
        with_entry(worker_group=3),
        f"{AT}.worker_group: is a number; it must be a string",
        id="worker-group-number",
    ),
    pytest.param(
        with_entry(servers="EX01"),
        f'{AT}.servers: is a string; it must be an array of strings, e.g. ["a", "b"]',
        id="servers-string",
    ),
    pytest.param(
        with_entry(hosts={"a": 1}),
        f'{AT}.hosts: is an object; it must be an array of strings, e.g. ["a", "b"]',
        id="hosts-object",
    ),
    pytest.param(
        with_entry(servers=["EX01", 2]),
        f"{AT}.servers[1]: is a number; it must be a string",
        id="servers-item-number",
    ),
    pytest.param(
        with_entry(send_connectors=[None]),
        f"{AT}.send_connectors[0]: is null; it must be a string",
        id="send-connector-null",
    ),
    pytest.param(
        with_entry(hybrid_configuration="true"),
        f"{AT}.hybrid_configuration: is a string; it must be true or false",
        id="hybrid-string",
    ),
    pytest.param(
        with_entry(hybrid_configuration=1),
        f"{AT}.hybrid_configuration: is a number; it must be true or false",
        id="hybrid-number",
    ),
    pytest.param(
        with_entry(exo_inbound_connector=5),
        f"{AT}.exo_inbound_connector: is a number; it must be a string or null",
        id="exo-number",
    ),
    pytest.param(
        with_entry(worker_group=None),
        f"{AT}.worker_group: is null; it must be a string",
        id="worker-group-null",
    ),
    pytest.param(
        with_entry(worker_group="  "),
        f"{AT}.worker_group: the value is empty; give a value or leave the field out",
        id="worker-group-blank",
    ),
    pytest.param(
        with_entry(hosts=[""]),
        f"{AT}.hosts[0]: the value is empty; give a value or leave the field out",
        id="host-empty",
    ),
    pytest.param(
        with_entry(worker_group="hrw\nexchange"),
        f'{AT}.worker_group: "hrw\\nexchange" contains the control character U+000A; {CONTROL_REMEDY}',
        id="line-feed",
    ),
    pytest.param(
        with_entry(send_connectors=["Outbound\r"]),
        f'{AT}.send_connectors[0]: "Outbound\\r" contains the control character U+000D; {CONTROL_REMEDY}',
        id="carriage-return",
    ),
    pytest.param(
        with_entry(exo_inbound_connector="Inbound\tfrom"),
        (f'{AT}.exo_inbound_connector: "Inbound\\tfrom" contains the control character U+0009; {CONTROL_REMEDY}'),
        id="tab",
    ),
    pytest.param(
        with_entry(servers=["EX01\u0000"]),
        f'{AT}.servers[0]: "EX01\\u0000" contains the control character U+0000; {CONTROL_REMEDY}',
        id="nul",
    ),
    pytest.param(
        with_entry(worker_group="hrw\u001b[31m"),
        f'{AT}.worker_group: "hrw\\u001b[31m" contains the control character U+001B; {CONTROL_REMEDY}',
        id="escape",
    ),
    pytest.param(
        with_entry(servers=["EX 01"]),
        f'{AT}.servers[0]: "EX 01" {NOT_NETBIOS}; give its short name, e.g. EX01',
        id="server-with-space",
    ),
    pytest.param(
        with_entry(servers=["EXCHANGESERVER01"]),
        f'{AT}.servers[0]: "EXCHANGESERVER01" {NOT_NETBIOS}; give its short name, e.g. EX01',
        id="server-16-characters",
    ),
    pytest.param(
        with_entry(servers=["EX01", "ex02.contoso.com"]),
        f'{AT}.servers[1]: "ex02.contoso.com" {NOT_NETBIOS}; give the short name (EX02), not the FQDN',
        id="server-fqdn",
    ),
    pytest.param(
        with_entry(send_connectors=["x" * 65]),
        f'{AT}.send_connectors[0]: "{"x" * 65}" {TOO_LONG}',
        id="send-connector-65",
    ),
    pytest.param(
        with_entry(exo_inbound_connector="y" * 65),
        f'{AT}.exo_inbound_connector: "{"y" * 65}" {TOO_LONG}',
        id="exo-connector-65",
    ),
    pytest.param(
        with_entry(receive_connectors=["EX01\\" + "z" * 65]),
        f'{AT}.receive_connectors[0]: "{"z" * 65}" {TOO_LONG}',
        id="receive-connector-65",
    ),
    pytest.param(
        with_entry(receive_connectors=["Default Frontend EX01"]),
        f'{AT}.receive_connectors[0]: "Default Frontend EX01" {NOT_RECEIVE}',
        id="receive-without-server",
    ),
    pytest.param(
        with_entry(receive_connectors=["EX01\\Front\\end"]),
        f'{AT}.receive_connectors[0]: "EX01\\Front\\end" {NOT_RECEIVE}',
        id="receive-two-backslashes",
    ),
    pytest.param(
        with_entry(receive_connectors=["EX01\\ "]),
        f'{AT}.receive_connectors[0]: "EX01\\" {NOT_RECEIVE}',
        id="receive-without-name",
    ),
    pytest.param(
        with_entry(receive_connectors=["\\Default Frontend EX01"]),
        f'{AT}.receive_connectors[0]: "\\Default Frontend EX01" {NOT_RECEIVE}',
        id="receive-empty-server",
    ),
    pytest.param(
        with_entry(receive_connectors=["EX 01\\Default Frontend"]),
        (
            f'{AT}.receive_connectors[0]: in "EX 01\\Default Frontend", "EX 01" {NOT_NETBIOS}; give its short '
            "name, e.g. EX01"
        ),
        id="receive-bad-server",
    ),
    pytest.param(
        with_entry(receive_connectors=["EX03\\Default Frontend EX03"]),
        (
            f'{AT}.receive_connectors: "EX03\\Default Frontend EX03" is on EX03, which is not among the '
            f"servers (EX01, EX02, from {AT}.servers); add EX03 to the servers or remove the connector"
        ),
        id="receive-on-other-server",
    ),
    pytest.param(
        document({"*": {"servers": ["EX01"]}, CERT: {"receive_connectors": ["ex02\\Default Frontend EX02"]}}),
        (
            f'{AT}.receive_connectors: "EX02\\Default Frontend EX02" is on EX02, which is not among the '
            "servers (EX01, from targets.json: certificates.*.servers); add EX02 to the servers or remove "
            "the connector"
        ),
        id="receive-on-server-not-in-default",
    ),
    pytest.param(
        document({"*": {"servers": ["EX01"], "receive_connectors": ["EX02\\Default Frontend EX02"]}}),
        (
            'targets.json: certificates.*.receive_connectors: "EX02\\Default Frontend EX02" is on EX02, '
            "which is not among the servers (EX01, from targets.json: certificates.*.servers); add EX02 to "
            "the servers or remove the connector"
        ),
        id="receive-in-default-entry",
    ),
    pytest.param(
        with_entry(hosts=["mail_in.contoso.com"]),
        f'{AT}.hosts[0]: "mail_in.contoso.com" {NOT_HOST}',
        id="host-underscore",
    ),
    pytest.param(
        with_entry(hosts=["mail..contoso.com"]),
        f'{AT}.hosts[0]: "mail..contoso.com" {NOT_HOST}',
        id="host-empty-label",
    ),
    pytest.param(
        with_entry(hosts=["mail.contoso.com."]),
        f'{AT}.hosts[0]: "mail.contoso.com." {NOT_HOST}',
        id="host-trailing-dot",
    ),
    pytest.param(
        with_entry(hosts=["m*.contoso.com"]),
        f'{AT}.hosts[0]: "m*.contoso.com" {NOT_HOST}',
        id="host-partial-wildcard",
    ),
    pytest.param(with_entry(hosts=["mail.*.com"]), f'{AT}.hosts[0]: "mail.*.com" {NOT_HOST}', id="host-inner-wildcard"),
    pytest.param(
        with_entry(hosts=["*.com"]),
        f'{AT}.hosts[0]: "*.com" is a wildcard over a top-level domain; give *.<domain>, e.g. *.contoso.com',
        id="host-wildcard-tld",
    ),
    pytest.param(
        with_entry(allow_status=["Valid"]),
        f'{AT}.allow_status[0]: "Valid" is always allowed; list only statuses besides it: {STATUSES}',
        id="status-valid",
    ),
    pytest.param(
        with_entry(allow_status=["PendingRequest"]),
        f'{AT}.allow_status[0]: "PendingRequest" is not a status a plan may be queued under; use {STATUSES}',
        id="status-unknown",
    ),
]


@pytest.mark.parametrize(("text", "message"), INVALID_FILES)
def test_an_invalid_file_is_refused_naming_file_field_and_remedy(text, message):
    assert error_of(parse, text) == message


# --------------------------------------------------------------------------------------------------
# The file on disk


def test_load_reports_a_missing_file(tmp_path):
    path = str(tmp_path / "targets.json")
    assert error_of(load_targets_file, path) == f"{path}: no such targets file; check the path (docs/targets.md)"


def test_load_reports_an_unreadable_path(tmp_path):
    assert error_of(load_targets_file, str(tmp_path)).startswith(f"{tmp_path}: cannot read the targets file (")


def test_load_refuses_utf16_which_windows_powershell_writes(tmp_path):
    path = tmp_path / "targets.json"
    path.write_bytes(EXAMPLE.read_text(encoding="utf-8").encode("utf-16"))
    assert error_of(load_targets_file, str(path)) == (
        f"{path}: is UTF-16 text; save it as UTF-8 (Set-Content -Encoding UTF8)"
    )


def test_load_refuses_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / "targets.json"
    path.write_bytes(b'{"schema": "\xe9"}')
    assert error_of(load_targets_file, str(path)) == f"{path}: byte 12 is not UTF-8; save the file as UTF-8"


def test_load_accepts_a_utf8_byte_order_mark(tmp_path):
    path = tmp_path / "targets.json"
    path.write_bytes(b"\xef\xbb\xbf" + EXAMPLE.read_bytes())
    assert load_targets_file(str(path)).for_certificate(CERT)["servers"] == ("EX01", "EX02")


def test_load_names_the_file_in_schema_errors(tmp_path):
    path = tmp_path / "targets.json"
    path.write_text(with_entry(servers=["EX 01"]), encoding="utf-8")
    assert error_of(load_targets_file, str(path)).startswith(f"{path}: certificates.{CERT}.servers[0]: ")


# --------------------------------------------------------------------------------------------------
# The file: what valid entries become


def test_values_are_trimmed_and_normalised():
    entry = parse(
        with_entry(
            worker_group="  hrw-exchange ",
            servers=[" ex01", "EX02 ", "Ex01"],
            send_connectors=[f" {SEND} ", SEND.upper()],
            receive_connectors=["ex01\\Default Frontend EX01", "EX01\\default frontend ex01"],
            hosts=["Mail.Contoso.COM", "mail.contoso.com", "*.Contoso.com"],
            exo_inbound_connector=f" {INBOUND}",
            allow_status=["revocationcheckfailure", "Untrusted", "RevocationCheckFailure"],
        )
    ).for_certificate(CERT)
    assert entry == {
        "worker_group": "hrw-exchange",
        "servers": ("EX01", "EX02"),  # upper-cased, unique, order kept
        "send_connectors": (SEND,),
        "receive_connectors": ("EX01\\Default Frontend EX01",),  # server upper-cased, name as written
        "hosts": ("mail.contoso.com", "*.contoso.com"),
        "exo_inbound_connector": INBOUND,
        "allow_status": ("RevocationCheckFailure", "Untrusted"),  # spelled as Get-ExchangeCertificate does
    }


@pytest.mark.parametrize("status", ["Untrusted", "RevocationCheckFailure"])
def test_each_allowed_status_is_accepted(status):
    assert parse(with_entry(allow_status=[status])).for_certificate(CERT)["allow_status"] == (status,)


@pytest.mark.parametrize("status", ["Invalid", "dateinvalid", "Revoked"])
def test_a_status_exchange_itself_shows_is_refused_because_the_runbook_demands_valid(status):
    # Before issue 16 these were accepted, and a plan queued under them failed at the runbook's Valid check.
    with pytest.raises(TargetsError, match="status Exchange itself shows, and the runbook imports only a Valid"):
        parse(with_entry(allow_status=[status]))


def test_connector_names_of_64_characters_are_accepted():
    name = "n" * 64
    entry = parse(with_entry(send_connectors=[name], receive_connectors=[f"EX01\\{name}"], exo_inbound_connector=name))
    assert entry.for_certificate(CERT)["receive_connectors"] == (f"EX01\\{name}",)


def test_a_15_character_server_name_is_accepted():
    assert parse(with_entry(servers=["EXCHANGESERVER1"])).for_certificate(CERT)["servers"] == ("EXCHANGESERVER1",)


def test_exo_inbound_connector_may_be_null_and_lists_may_be_empty():
    targets = resolve_targets(
        CERT, file=parse(with_entry(exo_inbound_connector=None, send_connectors=[], hosts=[], allow_status=[]))
    )
    assert (targets.exo_inbound_connector, targets.send_connectors, targets.hosts, targets.allow_status) == (
        None,
        (),
        (),
        (),
    )


def test_for_certificate_matches_names_ignoring_case_and_merges_the_default_under_the_entry():
    file = parse(
        document({"*": {"worker_group": "hrw-default", "hosts": ["mail.contoso.com"]}, "Exch-Hybrid-SMTP": BASE})
    )
    assert file.for_certificate("EXCH-HYBRID-SMTP") == {
        "worker_group": "hrw-exchange",
        "hosts": ("mail.contoso.com",),
        "servers": ("EX01", "EX02"),
    }
    assert file.for_certificate("*") == {"worker_group": "hrw-default", "hosts": ("mail.contoso.com",)}
    assert file.for_certificate("other-cert") is None


# --------------------------------------------------------------------------------------------------
# Tags


def test_tags_give_every_field():
    entry = targets_from_tags(
        {
            "certsync-worker-group": "hrw-exchange",
            "certsync-servers": "ex01, EX02",
            "certsync-send-connectors": f"{SEND}; To partners, EU",
            "certsync-receive-connectors": "EX01\\Default Frontend EX01;EX02\\Client Frontend EX02",
            "certsync-hybrid": "FALSE",
            "certsync-hosts": "Mail.Contoso.com,*.contoso.com",
            "certsync-exo-inbound-connector": INBOUND,
            "certsync-allow-status": "RevocationCheckFailure, untrusted",
        }
    )
    assert entry == {
        "worker_group": "hrw-exchange",
        "servers": ("EX01", "EX02"),
        "send_connectors": (SEND, "To partners, EU"),  # semicolons separate: names may hold commas
        "receive_connectors": ("EX01\\Default Frontend EX01", "EX02\\Client Frontend EX02"),
        "hybrid_configuration": False,
        "hosts": ("mail.contoso.com", "*.contoso.com"),
        "exo_inbound_connector": INBOUND,
        "allow_status": ("RevocationCheckFailure", "Untrusted"),
    }


def test_tag_names_ignore_case_and_other_tags_are_ignored():
    tags = {"CertSync-Hybrid": "True", "Environment": "prod", "certsyncish": "x", "owner": "mail-team"}
    assert targets_from_tags(tags) == {"hybrid_configuration": True}


def test_empty_tag_values_clear_lists_and_the_exo_connector():
    entry = targets_from_tags(
        {"certsync-hosts": "", "certsync-send-connectors": " ", "certsync-exo-inbound-connector": ""}
    )
    assert entry == {"hosts": (), "send_connectors": (), "exo_inbound_connector": None}


def test_a_256_character_tag_value_is_accepted():
    value = ",".join(f"EX{n:02}" for n in range(51)) + ",E"  # 51 * 5 + 1 = 256 characters
    assert len(value) == 256
    assert len(targets_from_tags({"certsync-servers": value})["servers"]) == 52


def test_a_tag_error_without_a_certificate_names_only_the_tag():
    assert error_of(targets_from_tags, {"certsync-hybrid": "maybe"}) == (
        'tag certsync-hybrid: "maybe" is not true or false; set it to true or false'
    )


TAG = f"on {CERT}"
INVALID_TAGS = [
    pytest.param(
        {"certsync-server": "EX01"},
        (
            f"tag certsync-server {TAG}: not a certsync tag (did you mean certsync-servers?); rename or "
            f"remove it (tags: {TAG_LIST})"
        ),
        id="unknown-close-to-one",
    ),
    pytest.param(
        {"CERTSYNC-COLOUR": "blue"},
        f"tag certsync-colour {TAG}: not a certsync tag; rename or remove it (tags: {TAG_LIST})",
        id="unknown",
    ),
    pytest.param(
        {"certsync-hybrid": "true", "CERTSYNC-HYBRID": "false"},
        (f"tag certsync-hybrid {TAG}: given twice (certsync-hybrid, CERTSYNC-HYBRID; tag names ignore case); keep one"),
        id="same-tag-twice",
    ),
    pytest.param(
        {"certsync-hybrid": "yes"},
        f'tag certsync-hybrid {TAG}: "yes" is not true or false; set it to true or false',
        id="hybrid-yes",
    ),
    pytest.param(
        {"certsync-hybrid": ""},
        f'tag certsync-hybrid {TAG}: "" is not true or false; set it to true or false',
        id="hybrid-empty",
    ),
    pytest.param(
        {"certsync-hybrid": True},
        f"tag certsync-hybrid {TAG}: the value is bool, not text; Key Vault tag values are text",
        id="value-not-text",
    ),
    pytest.param(
        {"certsync-send-connectors": ";".join([SEND] * 5)},
        (
            f"tag certsync-send-connectors {TAG}: the value is 309 characters, more than the 256 a Key Vault "
            "tag holds; move this field to the targets file (docs/targets.md)"
        ),
        id="value-over-256",
    ),
    pytest.param(
        {"certsync-servers": "EX01,,EX02"},
        f'tag certsync-servers {TAG}: "EX01,,EX02" has an empty item; separate the items with single commas',
        id="empty-item",
    ),
    pytest.param(
        {"certsync-servers": "EX01,EX02,"},
        f'tag certsync-servers {TAG}: "EX01,EX02," has an empty item; separate the items with single commas',
        id="trailing-comma",
    ),
    pytest.param(
        {"certsync-send-connectors": "A;;B"},
        (f'tag certsync-send-connectors {TAG}: "A;;B" has an empty item; separate the items with single semicolons'),
        id="empty-item-semicolons",
    ),
    pytest.param(
        {"certsync-servers": "EX01,EX 02"},
        f'tag certsync-servers {TAG}: "EX 02" {NOT_NETBIOS}; give its short name, e.g. EX01',
        id="server",
    ),
    pytest.param(
        {"certsync-receive-connectors": "Default Frontend EX01"},
        f'tag certsync-receive-connectors {TAG}: "Default Frontend EX01" {NOT_RECEIVE}',
        id="receive-connector",
    ),
    pytest.param(
        {"certsync-send-connectors": "s" * 65},
        f'tag certsync-send-connectors {TAG}: "{"s" * 65}" {TOO_LONG}',
        id="send-connector-65",
    ),
    pytest.param(
        {"certsync-hosts": "mail.contoso.com,*.com"},
        (
            f'tag certsync-hosts {TAG}: "*.com" is a wildcard over a top-level domain; give *.<domain>, e.g. '
            "*.contoso.com"
        ),
        id="host",
    ),
    pytest.param(
        {"certsync-allow-status": "Valid"},
        (f'tag certsync-allow-status {TAG}: "Valid" is always allowed; list only statuses besides it: {STATUSES}'),
        id="status",
    ),
    pytest.param(
        {"certsync-worker-group": "hrw\u0000"},
        (f'tag certsync-worker-group {TAG}: "hrw\\u0000" contains the control character U+0000; {CONTROL_REMEDY}'),
        id="control-character",
    ),
    pytest.param(
        {"certsync-worker-group": " "},
        f"tag certsync-worker-group {TAG}: the value is empty; give a value or leave the field out",
        id="worker-group-empty",
    ),
    pytest.param(
        {
            "certsync-worker-group": "hrw",
            "certsync-servers": "EX01",
            "certsync-receive-connectors": "EX02\\Default Frontend EX02",
        },
        (
            f'tag certsync-receive-connectors {TAG}: "EX02\\Default Frontend EX02" is on EX02, which is not '
            f"among the servers (EX01, from tag certsync-servers {TAG}); add EX02 to the servers or remove "
            "the connector"
        ),
        id="receive-on-other-server",
    ),
]


@pytest.mark.parametrize(("tags", "message"), INVALID_TAGS)
def test_an_invalid_tag_is_refused_naming_tag_certificate_and_remedy(tags, message):
    assert error_of(resolve_targets, CERT, tags=tags) == message


# --------------------------------------------------------------------------------------------------
# Merging


def test_tags_replace_the_entry_which_replaces_the_default():
    file = parse(
        document(
            {
                "*": {"worker_group": "hrw-default", "hosts": ["default.contoso.com"], "allow_status": ["Untrusted"]},
                CERT: {**BASE, "hosts": ["mail.contoso.com"], "send_connectors": [SEND]},
            }
        )
    )
    targets = resolve_targets(CERT, file=file, tags={"certsync-servers": "EX03", "certsync-hybrid": "false"})
    assert targets.worker_group == "hrw-exchange"  # entry over default
    assert targets.hosts == ("mail.contoso.com",)  # entry over default
    assert targets.allow_status == ("Untrusted",)  # default, nothing above it
    assert targets.send_connectors == (SEND,)  # entry
    assert targets.servers == ("EX03",)  # tag over entry: replaced whole, not added to
    assert targets.receive_connectors == ()  # none listed: the inventory's, not narrowed
    assert targets.hybrid_configuration is False  # tag
    assert targets.sources == ("targets.json", "tags")


def test_the_default_entry_applies_under_tags_when_the_file_has_no_entry():
    file = parse(document({"*": {"worker_group": "hrw-default"}}))
    targets = resolve_targets("other-cert", file=file, tags={"certsync-servers": "EX01"})
    assert (targets.worker_group, targets.servers, targets.sources) == (
        "hrw-default",
        ("EX01",),
        ("targets.json", "tags"),
    )


def test_only_what_contributed_is_listed_in_sources():
    assert resolve_targets(CERT, file=parse(document())).sources == ("targets.json",)
    tags = {"certsync-worker-group": "hrw", "certsync-servers": "EX01"}
    assert resolve_targets(CERT, tags=tags, file=parse(document({"other-cert": BASE}))).sources == ("tags",)
    assert resolve_targets(CERT, tags=tags).sources == ("tags",)


def test_names_match_ignoring_case():
    file = parse(document({"Exch-Hybrid-SMTP": BASE}))
    targets = resolve_targets("EXCH-HYBRID-SMTP", file=file, tags={"CERTSYNC-HOSTS": "mail.contoso.com"})
    assert (targets.servers, targets.hosts) == (("EX01", "EX02"), ("mail.contoso.com",))
    assert targets.certificate == "EXCH-HYBRID-SMTP"


def test_defaults_when_only_the_required_fields_are_given():
    """Only the worker group is required: servers and connectors come from the inventory (issue 15)."""
    targets = resolve_targets(CERT, tags={"certsync-worker-group": "hrw-exchange"})
    assert targets == Targets(
        certificate=CERT,
        worker_group="hrw-exchange",
        servers=(),
        send_connectors=(),
        receive_connectors=(),
        hybrid_configuration=True,
        hosts=(),
        exo_inbound_connector=None,
        allow_status=(),
        sources=("tags",),
    )


def test_given_receive_connectors_replace_the_default_ones():
    tags = {
        "certsync-worker-group": "g",
        "certsync-servers": "EX01,EX02",
        "certsync-receive-connectors": "EX02\\Inbound",
    }
    assert resolve_targets(CERT, tags=tags).receive_connectors == ("EX02\\Inbound",)


def test_a_tag_can_clear_what_the_file_sets():
    file = parse(with_entry(hosts=["mail.contoso.com"], exo_inbound_connector=INBOUND))
    targets = resolve_targets(CERT, file=file, tags={"certsync-hosts": "", "certsync-exo-inbound-connector": ""})
    assert (targets.hosts, targets.exo_inbound_connector) == ((), None)


# --------------------------------------------------------------------------------------------------
# probe: the STARTTLS endpoints checked after a remediation


def test_probe_defaults_to_each_host_on_port_25_skipping_wildcards():
    file = parse(with_entry(hosts=["Mail.Contoso.com", "*.contoso.com", "autodiscover.contoso.com"]))
    assert resolve_targets(CERT, file=file).probe == ("mail.contoso.com:25", "autodiscover.contoso.com:25")
    assert resolve_targets(CERT, file=parse(with_entry())).probe == ()  # no hosts: nothing to probe


def test_probe_endpoints_from_the_file_and_tags_are_normalised_and_an_empty_list_turns_probing_off():
    file = parse(with_entry(hosts=["mail.contoso.com"], probe=[" EX01.corp.contoso.com ", "10.0.0.5:2525"]))
    assert resolve_targets(CERT, file=file).probe == ("ex01.corp.contoso.com:25", "10.0.0.5:2525")
    tags = {"certsync-probe": "mail.contoso.com:587, [2001:db8::1], mail.contoso.com:587"}
    assert resolve_targets(CERT, file=file, tags=tags).probe == ("mail.contoso.com:587", "[2001:db8::1]:25")
    assert resolve_targets(CERT, file=parse(with_entry(hosts=["mail.contoso.com"], probe=[]))).probe == ()
    assert resolve_targets(CERT, file=file, tags={"certsync-probe": ""}).probe == ()


PROBE_REMEDY = (
    "give e.g. mail.contoso.com or mail.contoso.com:25 ([2001:db8::1]:25 for IPv6); port 25 when none is given"
)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(
            lambda: parse(with_entry(probe=["mail.contoso.com:99999"])),
            f'{AT}.probe[0]: "mail.contoso.com:99999" is not HOST or HOST:PORT; {PROBE_REMEDY}',
            id="file-port",
        ),
        pytest.param(
            lambda: parse(with_entry(probe="mail.contoso.com")),
            f'{AT}.probe: is a string; it must be an array of strings, e.g. ["a", "b"]',
            id="file-not-a-list",
        ),
        pytest.param(
            lambda: targets_from_tags({"certsync-probe": "mail.contoso.com,*.contoso.com"}, source=CERT),
            f'tag certsync-probe on {CERT}: "*.contoso.com" is not HOST or HOST:PORT; {PROBE_REMEDY}',
            id="tag-wildcard",
        ),
    ],
)
def test_bad_probe_endpoints_name_the_file_or_tag(call, message):
    assert error_of(call) == message


def test_merged_servers_are_checked_against_the_file_receive_connectors():
    file = parse(with_entry(receive_connectors=["EX01\\Default Frontend EX01"]))
    assert error_of(resolve_targets, CERT, file=file, tags={"certsync-servers": "EX03"}) == (
        f'{AT}.receive_connectors: "EX01\\Default Frontend EX01" is on EX01, which is not among the servers '
        f"(EX03, from tag certsync-servers on {CERT}); add EX01 to the servers or remove the connector"
    )


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        pytest.param({}, CERT, id="nothing"),
        pytest.param({"tags": {"Environment": "prod"}}, CERT, id="only-other-tags"),
        pytest.param({"file": "default-only"}, "other-cert", id="file-default-entry-alone"),
        pytest.param({"file": "example"}, "other-cert", id="file-without-its-entry"),
    ],
)
def test_a_certificate_with_neither_entry_nor_tags_has_no_targets(kwargs, name):
    files = {"default-only": document({"*": BASE}), "example": EXAMPLE.read_text(encoding="utf-8")}
    if "file" in kwargs:
        kwargs = {**kwargs, "file": parse(files[kwargs["file"]])}
    assert error_of(resolve_targets, name, **kwargs) == f"{name}: {NO_TARGETS}"


@pytest.mark.parametrize(
    ("tags", "file", "message"),
    [
        pytest.param(
            {"certsync-servers": "EX01"},
            None,
            (
                'no worker group; set the tag certsync-worker-group or "worker_group" in the targets file '
                "(docs/targets.md)"
            ),
            id="no-worker-group",
        ),
        pytest.param(
            {},
            document({CERT: {"servers": ["EX01"]}}),
            ('no worker group; set the tag certsync-worker-group or "worker_group" in targets.json (docs/targets.md)'),
            id="worker-group-missing-in-file",
        ),
    ],
)
def test_a_worker_group_is_required_after_merging(tags, file, message):
    kwargs = {"tags": tags, "file": parse(file) if file else None}
    assert error_of(resolve_targets, CERT, **kwargs) == f"{CERT}: {message}"


@pytest.mark.parametrize(
    ("tags", "file"),
    [
        pytest.param({"certsync-worker-group": "g"}, None, id="no-servers"),
        pytest.param({"certsync-servers": ""}, document(), id="servers-cleared-by-tag"),
        pytest.param({}, with_entry(servers=[]), id="servers-empty-in-file"),
    ],
)
def test_servers_are_not_required_the_inventory_names_them(tags, file):
    targets = resolve_targets(CERT, tags=tags, file=parse(file) if file else None)
    assert (targets.servers, targets.receive_connectors) == ((), ())


def test_resolve_refuses_a_name_key_vault_would_not_accept():
    assert error_of(resolve_targets, "exch hybrid", tags={"certsync-servers": "EX01"}) == (
        "certificate name 'exch hybrid': Key Vault names are 1-127 letters, digits and dashes; "
        "give the certificate's Key Vault name"
    )


# --------------------------------------------------------------------------------------------------
# to_dict


@pytest.mark.parametrize(
    ("file", "tags"),
    [
        pytest.param(EXAMPLE, {}, id="example"),
        pytest.param(EXAMPLE, {"certsync-exo-inbound-connector": "", "certsync-allow-status": "Untrusted"}, id="nulls"),
        pytest.param(None, {"certsync-worker-group": "g", "certsync-servers": "EX09"}, id="default-receive"),
        pytest.param(EXAMPLE, {"certsync-receive-connectors": "", "certsync-hybrid": "false"}, id="no-receive"),
    ],
)
def test_to_dict_round_trips_through_the_file_format(file, tags):
    targets = resolve_targets(CERT, file=load_targets_file(str(file)) if file else None, tags=tags)
    text = json.dumps({"schema": SCHEMA, "certificates": {targets.certificate: targets.to_dict()}})
    again = resolve_targets(CERT, file=parse_targets_json(text, "round-trip.json"))
    assert again == replace(targets, sources=("round-trip.json",))
    assert list(targets.to_dict()) == KEYS.split(", ")
