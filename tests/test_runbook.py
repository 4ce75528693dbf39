"""The Exchange runbook (infra/runbooks/Invoke-CertsyncRemediation.ps1) as far as it can be checked without
PowerShell, which cannot be installed here (spec: local-stack §5).

- A syntax gate: the runbook and every tests/runbook/*.ps1 parse with the tree-sitter PowerShell grammar
  with no ERROR or MISSING node; deliberately broken snippets (and PowerShell 7-only syntax, which the
  grammar rejects) are flagged, so the gate can fail.
- Project lints read from the parse tree: the Automation parameters match what shared/remediation/messages.py
  sends, every action shared/pipeline/planner.py can plan (certsync.plan/2, spec exchange-inventory.md §3)
  and every certsync.plan/1 action (queued before the upgrade; still run) has exactly one handler and
  unknown actions throw, one Write-Output,
  no Write-Host, no PowerShell 7-only commands or parameters, ConvertTo-Json always with -Depth, no
  secret in a parameter name or in anything logged or thrown, the result record's fields.
- Safety rules read from the tree: no case-sensitive comparison anywhere (Exchange matches TlsCertificateName
  ignoring case; every comparison of such values goes through one helper), Exchange's own rendering of the
  name is checked on each server before any switch (with staging rolled back on a mismatch), and retire
  keeps a certificate that still serves another service, is the internal transport certificate or is still
  selected by a connector.
- The result line: the fixtures in tests/fixtures/runbook/ (written as Windows PowerShell 5.1's
  ConvertTo-Json -Compress writes them) match certsync.result/1 and the tracker parses them.

The behaviour itself (idempotency, rollback, -WhatIf, the internal transport certificate, retire) is
covered by the Pester tests in tests/runbook/, which need Windows PowerShell and are not run here.
"""

from __future__ import annotations

import ast
import base64
import datetime as dt
import inspect
import itertools
import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
import tree_sitter
import tree_sitter_powershell

import shared.pipeline.planner
from shared.notify.signing import parse_secrets, signature
from shared.pipeline.contract import ACTIONS, JOB_PARAMETERS
from shared.pipeline.jobs import RemediationRequest
from shared.remediation.messages import (
    RESULT_STATUSES,
    job_parameters,
    kept_certificates,
    name_mismatches,
    parse_result,
    result_from_output,
    server_outcomes,
)

ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = ROOT / "infra" / "runbooks" / "Invoke-CertsyncRemediation.ps1"
PESTER = ROOT / "tests" / "runbook"
FIXTURES = ROOT / "tests" / "fixtures" / "runbook"
POWERSHELL = tree_sitter.Language(tree_sitter_powershell.language())

STANDALONE_PARAMETERS = ("PlanFile", "PfxPath", "ExoOrganization", "SkipExchangeOnline", "LoadOnly")
OUTCOMES = ("done", "already", "skipped", "failed", "rolled-back", "would-do")
RESULT_KEYS = (
    "schema", "job_id", "correlation_id", "certificate", "status", "error",
    "worker", "started", "finished", "steps", "inventory", "server_names", "kept",
)  # fmt: skip
SERVER_NAME_KEYS = ("server", "subject", "issuer", "expected", "matches")
KEPT_KEYS = ("server", "thumbprint", "reason")
# certsync.plan/2's actions (spec exchange-inventory.md §3); the planner that writes them is another branch.
# certsync.plan/1's actions: the pipeline no longer plans them, but jobs queued before the upgrade still run.
PLAN1_ACTIONS = (
    "install-intermediate", "import-certificate", "enable-smtp", "check-status", "set-send-connector",
    "set-receive-connector", "set-hybrid-configuration", "set-exo-inbound-connector", "verify-certificate",
    "verify-connectors", "retire-certificate",
)  # fmt: skip
PLAN2_ACTIONS = (
    "install-intermediate", "import-certificate", "enable-services", "check-name", "set-send-connector",
    "set-receive-connector", "set-hybrid-configuration", "set-exo-inbound-connector", "check-status",
    "remove-certificate",
)  # fmt: skip
# PowerShell's case-sensitive operators: -ceq, -cne, -clike, -cmatch, -ccontains, -cin, -creplace, -csplit ...
CASE_SENSITIVE_OPERATOR = re.compile(
    r"-c(eq|ne|gt|ge|lt|le|like|notlike|match|notmatch|contains|notcontains|in|notin|replace|split)", re.I
)
CERTIFICATE_KEYS = ("vault", "name", "version", "thumbprint")
STEP_KEYS = ("n", "action", "server", "object", "before", "after", "outcome", "message")
INVENTORY_KEYS = ("server", "kind", "object", "tls_certificate_name", "thumbprint", "status", "services")
INVENTORY_KINDS = (
    "send-connector",
    "receive-connector",
    "hybrid-configuration",
    "exo-inbound-connector",
    "certificate",
)
# Commands and parameters that exist only in PowerShell 6/7; the worker runs Windows PowerShell 5.1.
PS7_COMMANDS = {"get-error", "join-string", "test-json", "convertfrom-markdown", "get-uptime"}
PS7_PARAMETERS = {
    "-parallel", "-ashashtable", "-skipcertificatecheck", "-noproxy", "-responseheadersvariable",
    "-statuscodevariable", "-skiphttperrorcheck", "-asarray", "-enumsasstrings", "-skipheadervalidation",
}  # fmt: skip
PS7_VARIABLES = {"$psstyle", "$iswindows", "$islinux", "$ismacos", "$iscoreclr"}
# The runbook's variables that hold a secret while it runs: they may never reach a log stream, an
# exception message or the Output stream.
SECRET_VARIABLES = {"$accesstoken", "$challengekey", "$secret", "$functionkey", "$signingsecrets", "$password"}
SECRET_MEMBERS = {"pfx", "bytes", "access_token"}
LOGGING_COMMANDS = {
    "write-verbose", "write-warning", "write-information", "write-output", "write-error", "write-debug",
    "write-progress", "write-host", "write-certsynclog", "set-certsyncstepoutcome", "echo", "write",
}  # fmt: skip
# Commands the runbook may call besides its own functions and the Exchange cmdlets (which the Pester
# fake must stand in for): Windows PowerShell 5.1 built-ins, the Automation asset cmdlets on the worker,
# and RemoteExchange.ps1's Connect-ExchangeServer. A new command has to be added here on purpose.
WINDOWS_POWERSHELL_51 = {
    "add-pssnapin", "convertfrom-json", "convertto-json", "foreach-object", "get-command", "get-variable",
    "import-module", "invoke-restmethod", "invoke-webrequest", "join-path", "new-object", "read-host",
    "resolve-path", "test-path", "where-object", "write-information", "write-output", "write-verbose",
    "write-warning",
}  # fmt: skip
WORKER_COMMANDS = {"get-automationvariable", "connect-exchangeserver"}
# The parameters Microsoft documents for the Exchange cmdlets the runbook calls (office-docs-powershell
# syntax sections, only the ones that matter here; EXO cmdlets carry the runbook's "Certsync" prefix).
EXCHANGE_PARAMETERS = {
    "get-exchangecertificate": {"thumbprint", "identity", "server", "domaincontroller", "domainname"},
    "import-exchangecertificate": {
        "filedata",
        "filename",
        "friendlyname",
        "password",
        "privatekeyexportable",
        "server",
    },
    "enable-exchangecertificate": {"thumbprint", "identity", "services", "force", "donotrequiressl", "server"},
    "remove-exchangecertificate": {"thumbprint", "identity", "server"},
    "get-transportservice": {"identity", "domaincontroller"},
    "get-sendconnector": {"identity"},
    "set-sendconnector": {"identity", "tlscertificatename"},
    "get-receiveconnector": {"identity", "server"},
    "set-receiveconnector": {"identity", "tlscertificatename"},
    "get-hybridconfiguration": {"domaincontroller"},
    "set-hybridconfiguration": {"tlscertificatename"},
    "connect-exchangeonline": {"managedidentity", "organization", "prefix", "showbanner"},
    "disconnect-exchangeonline": set(),
    "get-certsyncinboundconnector": {"identity"},
    "set-certsyncinboundconnector": {"identity", "tlssendercertificatename"},
}
COMMON_PARAMETERS = {"erroraction", "warningaction", "verbose", "confirm", "whatif", "informationaction"}


# --- the parse tree ------------------------------------------------------------------------------------


def parse(source: bytes) -> tree_sitter.Tree:
    return tree_sitter.Parser(POWERSHELL).parse(source)


def walk(node: tree_sitter.Node) -> Iterator[tree_sitter.Node]:
    yield node
    for child in node.children:
        yield from walk(child)


def problems(tree: tree_sitter.Tree) -> list[str]:
    """Every ERROR or MISSING node, as `line:column text`."""
    found = []
    for node in walk(tree.root_node):
        if node.type == "ERROR" or node.is_missing:
            line, column = node.start_point
            kind = f"missing {node.type}" if node.is_missing else "error"
            found.append(f"{line + 1}:{column + 1} {kind} {node.text.decode(errors='replace')[:60]!r}")
    return found


def text(node: tree_sitter.Node) -> str:
    return node.text.decode()


def unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


@cache
def runbook_tree() -> tree_sitter.Tree:
    return parse(RUNBOOK.read_bytes())


def functions() -> dict[str, tree_sitter.Node]:
    """The runbook's top-level functions by name."""
    found = {}
    for node in walk(runbook_tree().root_node):
        if node.type == "function_statement":
            name = next(c for c in node.children if c.type == "function_name")
            found[text(name)] = node
    return found


def commands(node: tree_sitter.Node) -> Iterator[tuple[str, tree_sitter.Node]]:
    """(lower-case command name, command node) for every command under `node`."""
    for child in walk(node):
        if child.type == "command":
            name = child.child_by_field_name("command_name") or next(
                (c for c in child.children if c.type == "command_name"), None
            )
            if name is not None:
                yield text(name).lower(), child


def parameters_of(command: tree_sitter.Node) -> list[str]:
    return [text(c).split(":")[0].lower() for c in walk(command) if c.type == "command_parameter"]


def attributes(node: tree_sitter.Node, name: str) -> list[tree_sitter.Node]:
    """Attributes like `[name(...)]` under `node`."""
    found = []
    for child in walk(node):
        if child.type == "attribute":
            named = next((c for c in child.children if c.type == "attribute_name"), None)
            if named is not None and text(named).lower() == name.lower():
                found.append(child)
    return found


def hash_keys(node: tree_sitter.Node) -> list[str]:
    """The keys of a hash literal, in order (only its own entries, not nested ones)."""
    body = next(c for c in node.children if c.type == "hash_literal_body")
    keys = []
    for entry in body.children:
        if entry.type == "hash_entry":
            key = next(c for c in entry.children if c.type == "key_expression")
            keys.append(unquote(text(key)))
    return keys


def hash_literals(node: tree_sitter.Node) -> list[tree_sitter.Node]:
    return [n for n in walk(node) if n.type == "hash_literal_expression"]


def script_parameters() -> list[str]:
    root = runbook_tree().root_node
    block = next(c for c in root.children if c.type == "param_block")
    names = []
    for parameter in walk(block):
        if parameter.type == "script_parameter":
            variable = next(c for c in parameter.children if c.type == "variable")
            names.append(text(variable).lstrip("$"))
    return names


# --- the plan's actions ----------------------------------------------------------------------------------


def plan_actions() -> set[str]:
    """Every action shared/pipeline/planner.py can put in a plan: the second argument of each
    `self.step(phase, action, ...)`, a constant or one of the values of the `actions` table it indexes."""
    tree = ast.parse(inspect.getsource(shared.pipeline.planner))
    tables = {
        target.id: node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    actions = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "step":
            _phase, action = node.args[:2]
            if isinstance(action, ast.Subscript) and isinstance(action.value, ast.Name):
                actions.update(ast.literal_eval(tables[action.value.id]).values())
            else:
                assert isinstance(action, ast.Constant) and isinstance(action.value, str), ast.dump(node)
                actions.add(action.value)
    return actions


def all_actions() -> set[str]:
    """What the runbook runs: certsync.plan/1's actions and certsync.plan/2's."""
    return set(PLAN1_ACTIONS) | plan_actions()


def dispatch() -> dict[str, tree_sitter.Node]:
    """Invoke-CertsyncStep's switch clauses by condition (each condition once, asserted)."""
    [switch] = [n for n in walk(functions()["Invoke-CertsyncStep"]) if n.type == "switch_statement"]
    clauses = [n for n in walk(switch) if n.type == "switch_clause"]
    conditions = [
        unquote(text(next(c for c in clause.children if c.type == "switch_clause_condition"))) for clause in clauses
    ]
    assert len(conditions) == len(set(conditions)), conditions
    return dict(zip(conditions, clauses, strict=True))


def called(node: tree_sitter.Node) -> list[str]:
    """The commands `node` calls, lower case, in source order."""
    return [name for name, _ in commands(node)]


def example_plan() -> dict:
    return json.loads((FIXTURES / "job-issuer-changed.json").read_text())["plan"]


# --- the syntax gate -------------------------------------------------------------------------------------


def powershell_files() -> list[Path]:
    return [RUNBOOK, *sorted(PESTER.glob("*.ps1"))]


@pytest.mark.parametrize("path", powershell_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_powershell_file_parses_without_errors(path):
    assert problems(parse(path.read_bytes())) == []


def test_the_pester_tests_and_their_fake_are_there():
    names = {p.name for p in PESTER.glob("*.ps1")}
    assert {"Invoke-CertsyncRemediation.Tests.ps1", "FakeExchange.ps1"} <= names


@pytest.mark.parametrize(
    "snippet",
    [
        "function Broken {\n    if ($true) { 'x' }\n",  # a missing closing brace
        "$value = 'unterminated\n",
        "$x = @{ a = 1\n",
        "$fallback = $value ?? 'default'\n",  # PowerShell 7: null coalescing
        "$size = $big ? 1 : 2\n",  # PowerShell 7: ternary
        "$length = $maybe?.Length\n",  # PowerShell 7: null-conditional member access
    ],
    ids=["missing-brace", "unterminated-string", "unclosed-hash", "null-coalescing", "ternary", "null-conditional"],
)
def test_the_gate_flags_broken_and_powershell_7_syntax(snippet):
    assert problems(parse(snippet.encode())) != []


# "$server: ..." in a double-quoted string is a PowerShell parse error ("':' was not followed by a valid
# variable name character"; write "${server}:") that the tree-sitter grammar accepts: checked separately.
SCOPED_VARIABLE_WITHOUT_NAME = re.compile(r"(?<!`)\$(?!\{)[A-Za-z_][A-Za-z0-9_]*:(?![A-Za-z0-9_{])")


def colon_after_variable(tree: tree_sitter.Tree) -> list[str]:
    strings = [
        n for n in walk(tree.root_node) if n.type in ("expandable_string_literal", "expandable_here_string_literal")
    ]
    return [text(n) for n in strings if SCOPED_VARIABLE_WITHOUT_NAME.search(text(n))]


@pytest.mark.parametrize("path", powershell_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_variable_is_followed_by_a_colon_in_a_double_quoted_string(path):
    assert colon_after_variable(parse(path.read_bytes())) == []


def test_the_colon_check_flags_what_powershell_rejects():
    assert colon_after_variable(parse(b'$a = "on $server: failed"\n'))
    assert not colon_after_variable(parse(b'$a = "on ${server}: failed, $env:COMPUTERNAME, $($x.y): z"\n'))


def test_the_gate_accepts_what_the_runbook_relies_on():
    sample = (
        "[CmdletBinding(SupportsShouldProcess = $true)]\nparam([string]$A = '', [switch]$B)\n"
        "$h = [ordered]@{ a = 1; 'b-c' = @(1) }\n"
        "$c = [System.Security.Cryptography.X509Certificates.X509Certificate2]::new([byte[]]@(1))\n"
        "try { throw 'x' } catch [System.Net.WebException] { $r = $_.Exception.Response } finally { }\n"
        # (the grammar wants switch clauses on lines of their own, as the runbook writes them)
        "switch ([string]$a) {\n    'x' { 1 }\n    default { throw \"no $($a.b)\" }\n}\n"
    )
    assert problems(parse(sample.encode())) == []


# --- lints over the tree ---------------------------------------------------------------------------------


def test_the_script_supports_whatif():
    root = runbook_tree().root_node
    block = next(c for c in root.children if c.type == "param_block")
    [binding] = attributes(block, "CmdletBinding")
    assert re.fullmatch(r"\[CmdletBinding\(\s*SupportsShouldProcess\s*=\s*\$true\s*\)\]", text(binding))


def test_the_parameters_are_the_automation_job_contract_plus_standalone_switches():
    job = RemediationRequest(
        "contoso-kv", "exch-hybrid-smtp", "v2", "https://contoso-kv.vault.azure.net/secrets/x/v2", "AB", "c", {}
    )
    automation = list(job_parameters(job, "https://certsync.azurewebsites.net"))
    assert automation == list(JOB_PARAMETERS)


@pytest.mark.xfail(strict=True, reason="the runbook takes PlanBase64 once branch exec16's runbook is merged")
def test_the_runbook_takes_the_contracts_job_parameters():
    assert script_parameters() == [*JOB_PARAMETERS, *STANDALONE_PARAMETERS]


@pytest.mark.xfail(strict=True, reason="the proof actions get handlers in branch exec16's runbook")
def test_the_runbook_has_a_handler_for_every_action_the_planner_writes():
    assert plan_actions() <= set(dispatch())


def test_no_parameter_name_looks_like_a_secret():
    # Azure Automation records job parameters; a secret must never be one (PfxPath is a path, standalone).
    secretive = re.compile(r"password|secret|key|token|credential|pfx(?!path)", re.IGNORECASE)
    assert [name for name in script_parameters() if secretive.search(name)] == []


def test_every_action_of_both_plan_schemas_has_exactly_one_handler_and_unknown_actions_throw():
    assert {step["action"] for step in example_plan()["steps"]} <= set(PLAN1_ACTIONS)  # a real plan/1 job
    # the collection sees every action the planner writes, and the planner writes only the contract's actions
    assert set(PLAN2_ACTIONS) <= plan_actions() <= set(ACTIONS)
    clauses = dispatch()
    assert sorted(c for c in clauses if c != "default") == sorted(all_actions())
    for action in PLAN2_ACTIONS:  # each plan/2 action: one clause that calls one of the runbook's handlers
        handlers = [name for name in called(clauses[action]) if name.startswith("invoke-certsync")]
        assert len(handlers) == 1, (action, handlers)
        assert handlers[0] in {name.lower() for name in functions()}, action
    assert any(n.type == "flow_control_statement" and text(n).startswith("throw") for n in walk(clauses["default"]))


def test_the_plan_is_checked_against_its_schemas_actions_before_anything_runs():
    listed = functions()["Get-CertsyncActions"]
    arrays = [n for n in walk(listed) if n.type == "array_expression"]
    by_array = [[unquote(text(n)) for n in walk(array) if n.type == "string_literal"] for array in arrays]
    [plan2, plan1] = by_array  # the certsync.plan/2 list under `if ($Schema -eq 'certsync.plan/2')`, then plan/1
    assert sorted(plan2) == sorted(PLAN2_ACTIONS) == sorted(plan_actions())  # the spec's, all the planner's
    assert sorted(plan1) == sorted(PLAN1_ACTIONS)
    assert "'certsync.plan/2'" in {text(n) for n in walk(listed) if n.type == "string_literal"}
    check = functions()["ConvertFrom-CertsyncPlan"]
    [call] = [node for name, node in commands(check) if name == "get-certsyncactions"]
    assert re.search(r"-Schema\s+\$schema", text(call))


def test_no_write_host_and_exactly_one_write_output_in_main():
    names = [(name, node) for name, node in commands(runbook_tree().root_node)]
    assert [name for name, _ in names if name in {"write-host", "echo", "write"}] == []
    outputs = [node for name, node in names if name == "write-output"]
    assert len(outputs) == 1
    main = functions()["Invoke-CertsyncMain"]
    assert main.start_byte <= outputs[0].start_byte < main.end_byte


def test_loading_the_functions_runs_nothing():
    # Pester dot-sources the runbook with -LoadOnly: the only top-level code besides the functions is
    # the guarded entry point, so loading has no side effect.
    root = runbook_tree().root_node
    statements = next(c for c in root.children if c.type == "statement_list").children
    others = [s for s in statements if s.type not in ("function_statement", "comment")]
    assert len(others) == 1 and others[0].type == "if_statement"
    condition = others[0].children[2]
    assert re.fullmatch(r"-not\s+\$LoadOnly", text(condition))
    assert "invoke-certsyncmain" in {name for name, _ in commands(others[0])}


def test_no_powershell_7_only_constructs():
    for path in powershell_files():
        tree = parse(path.read_bytes())
        nodes = list(walk(tree.root_node))
        assert [text(n) for n in nodes if n.type == "pipeline_chain_tail"] == [], f"{path.name}: && or ||"
        assert {text(n).lower() for n in nodes if n.type == "command_parameter"} & PS7_PARAMETERS == set(), path.name
        assert {text(n).lower() for n in nodes if n.type == "variable"} & PS7_VARIABLES == set(), path.name
        assert {name for name, _ in commands(tree.root_node)} & PS7_COMMANDS == set(), path.name
    # The lints are not vacuous: the grammar gives PowerShell 7's constructs the node types looked for.
    sample = list(walk(parse(b"Get-Uptime -Parallel $IsWindows && Test-Json\n").root_node))
    assert [n.type for n in sample if n.type == "pipeline_chain_tail"] == ["pipeline_chain_tail"]
    assert {text(n).lower() for n in sample if n.type == "command_parameter"} & PS7_PARAMETERS == {"-parallel"}
    assert {text(n).lower() for n in sample if n.type == "variable"} & PS7_VARIABLES == {"$iswindows"}
    assert {name for name, _ in commands(parse(b"Get-Uptime\n").root_node)} & PS7_COMMANDS == {"get-uptime"}


def test_convertto_json_always_names_its_depth():
    for path in powershell_files():
        for name, node in commands(parse(path.read_bytes()).root_node):
            if name == "convertto-json":
                assert "-depth" in parameters_of(node), f"{path.name}: {text(node)[:80]}"


def test_secrets_never_reach_a_log_stream_an_exception_or_the_output():
    tree = runbook_tree()
    used = {text(n).lower() for n in walk(tree.root_node) if n.type == "variable"}
    assert used >= SECRET_VARIABLES  # the lint below is not vacuous
    reported: list[tree_sitter.Node] = [node for name, node in commands(tree.root_node) if name in LOGGING_COMMANDS]
    reported += [n for n in walk(tree.root_node) if n.type == "flow_control_statement" and text(n).startswith("throw")]
    for node in reported:
        variables = {text(n).lower() for n in walk(node) if n.type == "variable"}
        members = {text(n).lower() for n in walk(node) if n.type == "member_name"}
        assert variables & SECRET_VARIABLES == set(), text(node)[:120]
        assert members & SECRET_MEMBERS == set(), text(node)[:120]


def test_step_outcomes_and_statuses_are_the_contracts():
    tree = runbook_tree()
    outcome = functions()["Set-CertsyncStepOutcome"]
    [validate] = attributes(outcome, "ValidateSet")
    assert [unquote(text(n)) for n in walk(validate) if n.type == "string_literal"] == list(OUTCOMES)
    for name, node in commands(tree.root_node):
        if name != "set-certsyncstepoutcome":
            continue
        elements = [c for c in walk(node) if c.type in ("command_parameter", "string_literal")]
        for element, following in itertools.pairwise(elements):
            if text(element).lower() == "-outcome" and following.type == "string_literal":
                assert unquote(text(following)) in OUTCOMES
    statuses = set()
    for node in walk(tree.root_node):
        if node.type == "assignment_expression" and re.fullmatch(r"\$Context\.Status", text(node.children[0]).strip()):
            value = text(node.children[-1]).strip()
            if value.startswith("'"):
                statuses.add(unquote(value))
    assert statuses == set(RESULT_STATUSES)


def test_the_result_record_has_exactly_the_contract_fields():
    result = hash_literals(functions()["ConvertTo-CertsyncResultJson"])
    assert hash_keys(result[0]) == list(RESULT_KEYS)
    assert hash_keys(result[1]) == list(CERTIFICATE_KEYS)
    [step] = hash_literals(functions()["New-CertsyncStepRecord"])
    assert hash_keys(step) == list(STEP_KEYS)
    [inventory] = hash_literals(functions()["Add-CertsyncInventory"])
    assert hash_keys(inventory) == list(INVENTORY_KEYS)
    [server_name] = hash_literals(functions()["Test-CertsyncServerName"])
    assert hash_keys(server_name) == list(SERVER_NAME_KEYS)
    [kept] = hash_literals(functions()["Add-CertsyncKept"])
    assert hash_keys(kept) == list(KEPT_KEYS)
    kinds = {unquote(text(n)) for n in walk(runbook_tree().root_node) if n.type == "string_literal"}
    assert set(INVENTORY_KINDS) <= kinds


def test_every_command_is_the_runbooks_own_a_known_built_in_or_faked_for_pester():
    own = {name.lower() for name in functions()}
    called = {name for name, _ in commands(runbook_tree().root_node) if not name.startswith("$")}  # `. $path`
    fake = parse((PESTER / "FakeExchange.ps1").read_bytes())
    faked = set()
    for node in walk(fake.root_node):
        if node.type == "function_statement":
            name = text(next(c for c in node.children if c.type == "function_name")).lower()
            faked.add(name.removeprefix("global:"))
    exchange = called - own - WINDOWS_POWERSHELL_51 - WORKER_COMMANDS
    assert {"get-exchangecertificate", "enable-exchangecertificate", "set-sendconnector"} <= exchange
    assert exchange <= faked, (
        f"neither built in nor faked in tests/runbook/FakeExchange.ps1: {sorted(exchange - faked)}"
    )


def test_exchange_cmdlets_get_only_documented_parameters():
    seen = set()
    for name, node in commands(runbook_tree().root_node):
        if name in EXCHANGE_PARAMETERS:
            seen.add(name)
            passed = {p.lstrip("-") for p in parameters_of(node)}
            assert passed <= EXCHANGE_PARAMETERS[name] | COMMON_PARAMETERS, f"{name}: {sorted(passed)}"
    assert seen == set(EXCHANGE_PARAMETERS)


# --- safety rules: the name Exchange matches, retire ---------------------------------------------------------


def case_sensitive_comparisons(tree: tree_sitter.Tree) -> list[str]:
    """Case-sensitive operators and ordinal (case-sensitive) string comparisons, as `line: text`."""
    found = []
    for node in walk(tree.root_node):
        line = node.start_point[0] + 1
        if node.type == "comparison_operator" and CASE_SENSITIVE_OPERATOR.fullmatch(text(node)):
            found.append(f"{line}: {text(node)}")
        elif node.child_count == 0 and text(node) == "Ordinal":  # [StringComparison]::Ordinal, not OrdinalIgnoreCase
            found.append(f"{line}: StringComparison Ordinal")
        elif node.child_count == 0 and text(node).lower() in ("compareordinal", "ceq"):
            found.append(f"{line}: {text(node)}")
    return found


def test_no_comparison_in_the_runbook_is_case_sensitive():
    # Exchange finds a connector's certificate by its <I><S> texts ignoring case (tls-certificate-name.md §4):
    # a case-sensitive compare reports a value as "unknown" that Exchange treats as the same, or fails a
    # read-back that Exchange would accept. The lint can fail: it flags what it looks for.
    assert case_sensitive_comparisons(runbook_tree()) == []
    sample = parse(
        b"$a -ceq $b\n$a -CNE $b\n$a -clike 'x*'\n[string]::Equals($a, $b, [System.StringComparison]::Ordinal)\n"
    )
    assert len(case_sensitive_comparisons(sample)) == 4
    allowed = parse(b"$a -eq $b\n[string]::Equals($a, $b, [System.StringComparison]::OrdinalIgnoreCase)\n")
    assert case_sensitive_comparisons(allowed) == []


def test_tls_certificate_names_are_compared_by_one_helper_that_ignores_case():
    helper = functions()["Test-CertsyncSameTlsName"]
    assert "OrdinalIgnoreCase" in text(helper)
    for name in (
        "Invoke-CertsyncSetTlsName",  # already set? the value it replaces? the read-back
        "Invoke-CertsyncVerifyConnectors",
        "Test-CertsyncPhase",  # the switch phase's read-back
        "Undo-CertsyncChanges",  # the rollback's read-back
        "Test-CertsyncTlsNameSelects",  # retire: which connectors select a certificate
        "Test-CertsyncServerName",  # Exchange's rendering against certsync's string
    ):
        assert "test-certsyncsametlsname" in called(functions()[name]), name
    assert "test-certsynctlsnameselects" in called(functions()["Find-CertsyncTlsNameReferences"])


def test_exchanges_own_rendering_of_the_name_is_checked_on_each_server_before_any_switch():
    # plan/2's check-name step, and for every plan the check after the stage phase (plan/1 has no check-name).
    assert called(dispatch()["check-name"]) == ["invoke-certsynccheckname"]
    assert "test-certsyncservername" in called(functions()["Invoke-CertsyncCheckName"])
    compare = called(functions()["Test-CertsyncServerName"])
    assert {"get-certsyncexchangecertificate", "get-certsynccertificatetlsname", "test-certsyncsametlsname"} <= set(
        compare
    )
    phase = functions()["Test-CertsyncPhase"]
    assert "test-certsyncservername" in called(phase)
    assert {"'check-status'", "'check-name'"} <= {text(n) for n in walk(phase) if n.type == "string_literal"}
    # The plan runs the phase check whenever the phase changes, so after stage and before the first switch.
    run = functions()["Invoke-CertsyncPlan"]
    assert called(run).index("invoke-certsyncphasecheck") < called(run).index("invoke-certsyncstep")
    # A mismatch fails with both strings and rolls staging back (the certificate the name check refused
    # is removed again and the services it took are given back).
    assert "undo-certsyncstaging" in called(run)
    undo = called(functions()["Undo-CertsyncStaging"])
    assert {"remove-exchangecertificate", "enable-exchangecertificate"} <= set(undo)
    mismatch = text(functions()["Get-CertsyncNameMismatch"])
    assert all(f"$Entry['{key}']" in mismatch for key in ("server", "issuer", "subject", "expected"))


def test_retire_keeps_what_still_serves_is_internal_or_is_still_selected():
    # Removing a certificate that still serves IIS, POP or IMAP breaks OWA and mail clients; the internal
    # transport certificate breaks mail between servers; one a connector selects, that connector.
    clauses = dispatch()
    assert (
        called(clauses["retire-certificate"])
        == called(clauses["remove-certificate"])
        == ["invoke-certsyncretirecertificate"]
    )
    retire = functions()["Invoke-CertsyncRetireCertificate"]
    calls = called(retire)
    removal = calls.index("remove-exchangecertificate")
    before = calls[:removal]
    assert "get-certsyncinternaltransportthumbprint" in before
    assert before.count("get-certsyncservices") >= 2  # the old certificate's services and the new one's
    assert "find-certsynctlsnamereferences" in before
    assert before.count("add-certsynckept") >= 3  # each rule keeps, with its reason
    assert calls.count("remove-exchangecertificate") == 1
    # What retire does not remove is "kept", never a bare skip.
    for name, node in commands(retire):
        if name == "set-certsyncstepoutcome":
            assert "'skipped'" not in text(node)
    assert "'skipped'" in text(functions()["Add-CertsyncKept"]) and "kept: " in text(functions()["Add-CertsyncKept"])
    # SMTP is the connectors' business (the references rule); every other service keeps the certificate.
    assert re.search(r"\$_ -ne 'SMTP' -and \$newServices -notcontains \$_", text(retire))


def test_the_callback_signature_vector_of_the_pester_tests_is_shared_signing():
    # The Pester test pins New-CertsyncWebhookHeaders to this vector; here it is checked against the
    # Python implementation the callback function verifies with.
    tests = (PESTER / "Invoke-CertsyncRemediation.Tests.ps1").read_text()
    secret = re.search(r"SigningSecret = '(whsec_[^']+)'", tests).group(1)
    expected = re.search(r"Should -BeExactly '(v1,[^']+)'", tests).group(1)
    [key] = parse_secrets(secret, "test")
    body = b'{"schema":"certsync.result/1","status":"succeeded"}'
    assert signature(key, "a7d33d27f549da6ee5b954d7079b8535-result", 1767225600, body) == expected
    assert base64.b64decode(secret[len("whsec_") :]) == key


# --- the result line -------------------------------------------------------------------------------------


def check_result(data: dict) -> None:
    """certsync.result/1 as contracts.md defines it, strictly (the tracker's parse_result is lenient)."""
    assert list(data) == list(RESULT_KEYS)
    assert data["schema"] == "certsync.result/1"
    assert re.fullmatch(r"[0-9a-f]{32}", data["job_id"])
    assert isinstance(data["correlation_id"], str) and data["correlation_id"]
    assert list(data["certificate"]) == list(CERTIFICATE_KEYS)
    assert all(isinstance(v, str) for v in data["certificate"].values())
    assert data["status"] in RESULT_STATUSES
    if data["status"] == "succeeded":
        assert data["error"] is None
    elif data["status"] in ("failed", "rolled-back"):
        assert isinstance(data["error"], str) and data["error"] and "\n" not in data["error"]
    for key in ("started", "finished"):
        assert dt.datetime.strptime(data[key], "%Y-%m-%dT%H:%M:%SZ")
    assert data["started"] <= data["finished"]
    assert isinstance(data["worker"], str) and data["worker"]
    for step in data["steps"]:
        assert list(step) == list(STEP_KEYS)
        assert isinstance(step["n"], int) and step["action"] in all_actions()
        assert step["server"] is None or isinstance(step["server"], str)
        assert step["outcome"] in OUTCOMES
        assert all(step[k] is None or isinstance(step[k], str) for k in ("object", "before", "after", "message"))
        assert "\n" not in step["message"]
    outcomes = {step["outcome"] for step in data["steps"]}
    if data["status"] == "rolled-back":
        assert {"failed", "rolled-back"} <= outcomes
    if data["status"] == "what-if":
        assert outcomes <= {"would-do", "already", "failed", "skipped"}
    if data["status"] == "succeeded":
        assert "failed" not in outcomes and "rolled-back" not in outcomes
    for item in data["inventory"]:
        assert list(item) == list(INVENTORY_KEYS)
        assert item["kind"] in INVENTORY_KINDS
        assert all(v is None or isinstance(v, str) for v in item.values())
    for entry in data["server_names"]:
        assert list(entry) == list(SERVER_NAME_KEYS)
        assert isinstance(entry["matches"], bool)
        assert all(isinstance(entry[k], str) for k in ("server", "subject", "issuer", "expected"))
    if any(not entry["matches"] for entry in data["server_names"]):
        assert data["status"] in ("failed", "rolled-back", "what-if")
        assert not any(s["action"].startswith("set-") and s["outcome"] == "done" for s in data["steps"])
    for entry in data["kept"]:
        assert list(entry) == list(KEPT_KEYS) and all(isinstance(v, str) and v for v in entry.values())
        assert any(s["outcome"] == "skipped" and s["message"].startswith("kept: ") for s in data["steps"])


def result_fixtures() -> list[Path]:
    return sorted(FIXTURES.glob("result-*.json"))


@pytest.mark.parametrize("path", result_fixtures(), ids=lambda p: p.stem)
def test_each_result_fixture_is_one_line_of_certsync_result(path):
    raw = path.read_text()
    assert raw.endswith("\n") and raw.count("\n") == 1
    # Windows PowerShell 5.1's ConvertTo-Json escapes < > & ' (\u003c ...): the fixtures do too, so the
    # tracker is tested against the bytes the runbook really writes.
    assert not set("<>'") & set(raw)
    data = json.loads(raw)
    check_result(data)
    assert parse_result(data, data["job_id"]) is data
    output = "certsync job ...\r\n" + raw.replace("\n", "\r\n") + "\r\n"
    assert result_from_output(output, data["job_id"]) == (data, "")


def test_the_fixtures_cover_every_status():
    statuses = {json.loads(p.read_text())["status"] for p in result_fixtures()}
    assert statuses == set(RESULT_STATUSES)


def test_the_succeeded_fixture_follows_the_example_plan_step_by_step():
    plan = example_plan()
    result = json.loads((FIXTURES / "result-succeeded.json").read_text())
    assert [(s["n"], s["action"], s["server"]) for s in result["steps"]] == [
        (s["n"], s["action"], s["server"]) for s in plan["steps"]
    ]
    assert result["certificate"]["thumbprint"] == plan["certificate"]["thumbprint"]
    switched = {s["object"]: s["value"] for s in plan["steps"] if s["phase"] == "switch"}
    connectors = {i["object"]: i["tls_certificate_name"] for i in result["inventory"] if i["kind"] != "certificate"}
    assert connectors == switched


def test_per_server_outcomes_follow_from_the_result():
    rolled_back = json.loads((FIXTURES / "result-rolled-back.json").read_text())
    assert server_outcomes(rolled_back, ["EX01", "EX02"], "Failed") == [
        {"server": "EX01", "outcome": "rolled-back"},
        {"server": "EX02", "outcome": "failed"},
    ]
    succeeded = json.loads((FIXTURES / "result-succeeded.json").read_text())
    assert {o["outcome"] for o in server_outcomes(succeeded, ["EX01", "EX02"], "Completed")} == {"succeeded"}


def test_a_name_mismatch_switches_nothing_rolls_staging_back_and_names_both_strings():
    result = json.loads((FIXTURES / "result-name-mismatch.json").read_text())
    assert result["status"] == "rolled-back"
    assert name_mismatches(result) == [
        'EX01: Exchange renders "<I>C=US, O=Let\'s Encrypt, CN=R11<S>CN=mail.contoso.com",'
        ' certsync has "<I>CN=R11, O=Let\'s Encrypt, C=US<S>CN=mail.contoso.com"'
    ]
    outcomes = {(s["action"], s["server"]): s["outcome"] for s in result["steps"]}
    assert outcomes[("import-certificate", "EX01")] == outcomes[("import-certificate", "EX02")] == "rolled-back"
    assert {o for (action, _), o in outcomes.items() if action.startswith("set-")} == {"skipped"}
    assert "Exchange renders" in result["error"] and "certsync's" in result["error"]


def test_the_old_certificate_serving_iis_is_kept_on_a_successful_run():
    # The example plan (certsync.plan/1) enables only SMTP on the new certificate; the old one also serves
    # IIS on both servers (tests/runbook/FakeExchange.ps1), so retire keeps it and says why.
    result = json.loads((FIXTURES / "result-succeeded.json").read_text())
    retired = [s for s in result["steps"] if s["action"] == "retire-certificate"]
    assert {(s["outcome"], s["after"]) for s in retired} == {("skipped", "present")}
    assert [k["server"] for k in result["kept"]] == ["EX01", "EX02"]
    assert all("serves IIS" in line for line in kept_certificates(result))
