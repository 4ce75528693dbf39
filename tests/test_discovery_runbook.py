"""The discovery runbook (infra/runbooks/Get-CertsyncInventory.ps1) as far as it can be checked without
PowerShell (spec local-stack §5), read from its tree-sitter parse tree:

- it parses (the syntax gate of tests/test_runbook.py), and so do its Pester test and fake;
- it is read-only: besides its own functions, no command that changes something (Set-, New-, Remove-,
  Enable-, Import-, ...) is called, and no Exchange cmdlet but Get-;
- every property of spec exchange-inventory §1 is selected, under Exchange's own names, and the document
  has the spec's keys;
- errors are collected per server and per cmdlet, never by a catch that drops them;
- exactly one Write-Output, in the main function; no secret is read (no credential or Key Vault access);
- the Exchange cmdlets it calls are faked for Pester, with documented parameters.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest
import tree_sitter

from shared.remediation.discovery import EXO_KEYS, INVENTORY_KEYS, INVENTORY_SCHEMA
from tests.test_runbook import COMMON_PARAMETERS, commands, parameters_of, parse, problems, text, unquote, walk

ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = ROOT / "infra" / "runbooks" / "Get-CertsyncInventory.ps1"
PESTER = ROOT / "tests" / "runbook"

# Spec exchange-inventory §1: the properties kept, per kind, under Exchange's names.
SPEC_PROPERTIES = {
    "server": ["Name", "Fqdn", "ServerRole", "AdminDisplayVersion", "Site", "IsEdgeServer"],
    "certificate": [
        "Thumbprint", "Subject", "Issuer", "Services", "Status", "NotBefore", "NotAfter",
        "CertificateDomains", "HasPrivateKey", "PrivateKeyExportable", "IsSelfSigned",
    ],
    "send-connector": [
        "Identity", "SourceTransportServers", "TlsCertificateName", "AddressSpaces", "SmartHosts", "RequireTLS",
        "TlsAuthLevel", "TlsDomain", "CloudServicesMailEnabled", "Enabled", "IsScopedConnector",
    ],
    "receive-connector": [
        "Identity", "Server", "TransportRole", "Bindings", "AuthMechanism", "TlsCertificateName",
        "RemoteIPRanges", "CloudServicesMailEnabled", "Enabled",
    ],
    "hybrid-configuration": [
        "SendingTransportServers", "ReceivingTransportServers", "EdgeTransportServers", "TlsCertificateName",
        "OnPremisesSmartHost", "Domains", "Features",
    ],
    "exo-inbound-connector": [
        "Identity", "ConnectorType", "TlsSenderCertificateName", "RequireTls", "RestrictDomainsToCertificate",
        "Enabled",
    ],
    "exo-outbound-connector": [
        "Identity", "ConnectorType", "TlsSettings", "TlsDomain", "SmartHosts", "RecipientDomains", "Enabled",
    ],
    "accepted-domain": ["DomainName", "DomainType"],
}  # fmt: skip
# Verbs that change something; a read-only runbook calls none of them (its own functions aside).
WRITE_VERBS = (
    "set-", "new-", "remove-", "enable-", "disable-", "import-", "export-", "install-", "uninstall-", "clear-",
    "start-", "stop-", "restart-", "update-", "move-", "rename-", "add-", "invoke-", "send-", "out-", "register-",
)  # fmt: skip
# No changing command is allowed: not even Exchange's snap-in (it would bypass RBAC; issue 16).
ALLOWED: set[str] = set()
BUILT_INS = {
    "convertto-json", "foreach-object", "get-command", "get-variable", "join-path", "test-path",
    "where-object", "write-information", "write-output", "write-verbose", "write-warning",
}  # fmt: skip
WORKER_COMMANDS = {"get-automationvariable", "connect-exchangeserver"}
EXCHANGE_PARAMETERS = {
    "get-exchangeserver": set(),
    "get-transportservice": {"identity"},
    "get-exchangecertificate": {"server"},
    "get-sendconnector": set(),
    "get-receiveconnector": {"server"},
    "get-hybridconfiguration": set(),
    "connect-exchangeonline": {"managedidentity", "organization", "prefix", "showbanner"},
    "disconnect-exchangeonline": set(),
    "get-certsyncinboundconnector": set(),
    "get-certsyncoutboundconnector": set(),
    "get-certsyncaccepteddomain": set(),
}
SECRET_WORDS = ("password", "secret", "token", "credential", "pfx", "privatekey", "keyvault", "vault.azure")


@cache
def tree() -> tree_sitter.Tree:
    return parse(RUNBOOK.read_bytes())


def functions() -> dict[str, tree_sitter.Node]:
    found = {}
    for node in walk(tree().root_node):
        if node.type == "function_statement":
            name = next(c for c in node.children if c.type == "function_name")
            found[text(name)] = node
    return found


def called() -> set[str]:
    return {name for name, _ in commands(tree().root_node) if not name.startswith("$")}


def strings(node: tree_sitter.Node) -> list[str]:
    return [unquote(text(n)) for n in walk(node) if n.type in ("string_literal", "expandable_string_literal")]


@pytest.mark.parametrize(
    "path",
    [RUNBOOK, PESTER / "Get-CertsyncInventory.Tests.ps1", PESTER / "FakeExchangeInventory.ps1"],
    ids=lambda p: p.name,
)
def test_the_runbook_its_pester_test_and_fake_parse(path):
    assert problems(parse(path.read_bytes())) == []


def test_it_changes_nothing():
    own = {name.lower() for name in functions()}
    foreign = called() - own
    changing = {name for name in foreign if name.startswith(WRITE_VERBS)} - ALLOWED
    assert changing == set()
    exchange = foreign - BUILT_INS - WORKER_COMMANDS
    assert exchange == set(EXCHANGE_PARAMETERS)
    assert all(name.startswith(("get-", "connect-", "disconnect-")) for name in exchange)
    # The lint is not vacuous: a changing command in a parsed snippet is found.
    sample = {name for name, _ in commands(parse(b"Set-SendConnector -Identity x\nNew-Object int\n").root_node)}
    assert {name for name in sample if name.startswith(WRITE_VERBS)} == {"set-sendconnector", "new-object"}


def test_no_function_of_its_own_hides_a_change_behind_a_read_name():
    # Its own functions may be named with any verb, but none of them calls a changing command either
    # (checked above over the whole file); and none is named like an Exchange cmdlet it would shadow.
    assert {name.lower() for name in functions()} & set(EXCHANGE_PARAMETERS) == set()


def test_every_spec_property_is_selected_under_exchanges_name():
    properties = functions()["Get-CertsyncDiscoveryProperties"]
    switch = next(n for n in walk(properties) if n.type == "switch_statement")
    clauses = [n for n in walk(switch) if n.type == "switch_clause"]
    found = {}
    for clause in clauses:
        label, *rest = [n for n in walk(clause) if n.type == "string_literal"]
        found[unquote(text(label))] = [unquote(text(n)) for n in rest]
    assert found == SPEC_PROPERTIES
    # The per-server facts that are not a cmdlet's own property: the server of a certificate, the
    # internal transport certificate of a server.
    assert re.search(r"\bServer\s*=\s*\$Server\b", text(functions()["Read-CertsyncDiscoveryCertificates"]))
    assert "InternalTransportCertificateThumbprint" in strings(functions()["Read-CertsyncDiscoveryServers"])


def test_the_document_has_the_spec_keys():
    document = next(n for n in walk(functions()["ConvertTo-CertsyncDiscoveryJson"]) if n.type == "hash_literal_body")
    keys = [
        unquote(text(next(c for c in e.children if c.type == "key_expression")))
        for e in document.children
        if e.type == "hash_entry"
    ]
    assert keys == ["schema", "collected_at", "worker_group", *INVENTORY_KEYS]
    assert INVENTORY_SCHEMA in strings(document)
    exo = next(n for n in walk(functions()["Read-CertsyncDiscoveryExo"]) if n.type == "hash_literal_body")
    exo_keys = [
        unquote(text(next(c for c in e.children if c.type == "key_expression")))
        for e in exo.children
        if e.type == "hash_entry"
    ]
    assert exo_keys == list(EXO_KEYS)
    error = next(n for n in walk(functions()["Add-CertsyncDiscoveryError"]) if n.type == "hash_literal_body")
    assert [
        unquote(text(next(c for c in e.children if c.type == "key_expression")))
        for e in error.children
        if e.type == "hash_entry"
    ] == ["where", "message"]


def test_json_is_written_deep_enough_and_on_one_line():
    [(_, convert)] = [(n, c) for n, c in commands(tree().root_node) if n == "convertto-json"]
    assert {"-depth", "-compress"} <= set(parameters_of(convert))
    depth = re.search(r"-Depth\s+(\d+)", text(convert))
    assert depth is not None and int(depth.group(1)) >= 5  # document > exo > list > object > array


def test_every_read_that_can_fail_is_caught_and_recorded_per_server_or_cmdlet():
    exchange = set(EXCHANGE_PARAMETERS) - {"disconnect-exchangeonline"}
    for name, node in commands(tree().root_node):
        if name not in exchange:
            continue
        assert "-erroraction" in parameters_of(node), text(node)
        try_node = node.parent
        while try_node is not None and try_node.type != "try_statement":
            try_node = try_node.parent
        assert try_node is not None, f"{text(node)[:60]}: not inside try"
        catch = next(c for c in try_node.children if c.type == "catch_clauses")
        assert "add-certsyncdiscoveryerror" in {n for n, _ in commands(catch)}, f"{text(node)[:60]}: error dropped"
    # Per server: the calls that take a server name record the error under that name.
    for function in ("Read-CertsyncDiscoveryCertificates", "Read-CertsyncDiscoveryReceiveConnectors"):
        wheres = [text(c) for n, c in commands(functions()[function]) if n == "add-certsyncdiscoveryerror"]
        assert wheres and all(re.search(r"-Where \$(Server|name)\b", w) for w in wheres), wheres


def test_exactly_one_write_output_in_main_and_no_write_host():
    names = [(name, node) for name, node in commands(tree().root_node)]
    assert [n for n, _ in names if n in {"write-host", "echo", "write"}] == []
    outputs = [node for name, node in names if name == "write-output"]
    assert len(outputs) == 1
    main = functions()["Invoke-CertsyncDiscoveryMain"]
    assert main.start_byte <= outputs[0].start_byte < main.end_byte


def test_no_secret_is_read_or_written():
    source = re.sub(r"<#.*?#>", "", RUNBOOK.read_text().lower(), flags=re.S)
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("#"))
    # Whether a certificate has a private key, and whether it may be exported, are facts, not keys.
    code = code.replace("hasprivatekey", "").replace("privatekeyexportable", "")
    assert [w for w in SECRET_WORDS if w in code] == []
    assert "get-automationpscredential" not in called() and "invoke-restmethod" not in called()


def test_exchange_cmdlets_get_only_documented_parameters_and_are_faked_for_pester():
    for name, node in commands(tree().root_node):
        if name in EXCHANGE_PARAMETERS:
            passed = {p.lstrip("-") for p in parameters_of(node)}
            assert passed <= EXCHANGE_PARAMETERS[name] | COMMON_PARAMETERS, f"{name}: {sorted(passed)}"
    faked = set()
    for fake in ("FakeExchange.ps1", "FakeExchangeInventory.ps1"):
        for node in walk(parse((PESTER / fake).read_bytes()).root_node):
            if node.type == "function_statement":
                name = text(next(c for c in node.children if c.type == "function_name")).lower()
                faked.add(name.removeprefix("global:"))
    assert set(EXCHANGE_PARAMETERS) <= faked, sorted(set(EXCHANGE_PARAMETERS) - faked)


def test_loading_the_functions_runs_nothing():
    statements = next(c for c in tree().root_node.children if c.type == "statement_list").children
    others = [s for s in statements if s.type not in ("function_statement", "comment")]
    assert len(others) == 1 and others[0].type == "if_statement"
    assert re.fullmatch(r"-not\s+\$LoadOnly", text(others[0].children[2]))


def test_the_job_parameters_are_what_discovery_sends():
    block = next(c for c in tree().root_node.children if c.type == "param_block")
    names = [
        text(next(c for c in p.children if c.type == "variable")).lstrip("$")
        for p in walk(block)
        if p.type == "script_parameter"
    ]
    assert names == ["WorkerGroup", "ExoOrganization", "SkipExchangeOnline", "LoadOnly"]
