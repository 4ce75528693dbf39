"""The Exchange runbook (infra/runbooks/Invoke-CertsyncRemediation.ps1) as far as it can be checked without
PowerShell, which cannot be installed here (spec: local-stack §5).

- A syntax gate: the runbook and every tests/runbook/*.ps1 parse with the tree-sitter PowerShell grammar
  with no ERROR or MISSING node; deliberately broken snippets (and PowerShell 7-only syntax, which the
  grammar rejects) are flagged, so the gate can fail.
- Project lints read from the parse tree: one Write-Output, no Write-Host, no PowerShell 7-only commands or
  parameters, ConvertTo-Json always with -Depth, no secret in a parameter name or in anything logged or
  thrown, the result record's fields, no case-sensitive comparison anywhere (Exchange matches
  TlsCertificateName ignoring case; every comparison goes through one helper).
- The result line: the fixtures in tests/fixtures/runbook/ (written as Windows PowerShell 5.1's
  ConvertTo-Json -Compress writes them, for tests/fixtures/runbook/plan-two-server.json) match
  certsync.result/1 and the tracker parses them.

The runbook's contract with shared/pipeline/contract.py (parameters, handlers, journal, RBAC role, no
decision on certificate content) is tests/test_runbook_contract.py. The behaviour itself (every handler,
compare-and-set, rollback order, journal resume) is covered by the Pester tests in tests/runbook/, which
need Windows PowerShell and are not run here.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
import tree_sitter
import tree_sitter_powershell

from shared.notify.signing import parse_secrets, signature
from shared.pipeline import contract
from shared.pipeline.contract import JOB_PARAMETERS
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

LOCAL_PARAMETERS = ("PlanFile", "LoadOnly")
# Outcomes in certsync.result/1 steps[] (a journal "conflict" is "failed" there).
OUTCOMES = tuple(o for o in contract.OUTCOMES if o != "conflict")
RESULT_KEYS = (
    "schema", "job_id", "correlation_id", "certificate", "status", "error",
    "worker", "started", "finished", "steps", "inventory", "server_names", "kept",
)  # fmt: skip
SERVER_NAME_KEYS = ("server", "subject", "issuer", "expected", "matches")
KEPT_KEYS = ("server", "thumbprint", "reason")
# PowerShell's case-sensitive operators: -ceq, -cne, -clike, -cmatch, -ccontains, -cin, -creplace, -csplit ...
CASE_SENSITIVE_OPERATOR = re.compile(
    r"-c(eq|ne|gt|ge|lt|le|like|notlike|match|notmatch|contains|notcontains|in|notin|replace|split)", re.I
)
CERTIFICATE_KEYS = ("vault", "name", "version", "thumbprint")
STEP_KEYS = ("n", "action", "server", "object", "before", "after", "outcome", "message")
# Commands and parameters that exist only in PowerShell 6/7; the worker runs Windows PowerShell 5.1.
PS7_COMMANDS = {"get-error", "join-string", "test-json", "convertfrom-markdown", "get-uptime"}
PS7_PARAMETERS = {
    "-parallel", "-ashashtable", "-skipcertificatecheck", "-noproxy", "-responseheadersvariable",
    "-statuscodevariable", "-skiphttperrorcheck", "-asarray", "-enumsasstrings", "-skipheadervalidation",
}  # fmt: skip
PS7_VARIABLES = {"$psstyle", "$iswindows", "$islinux", "$ismacos", "$iscoreclr"}
# The runbook's variables that hold a secret while it runs: they may never reach a log stream, an
# exception message, a journal entry or the Output stream.
SECRET_VARIABLES = {"$accesstoken", "$challengekey", "$secret", "$signing"}
SECRET_MEMBERS = {"pfx", "signing", "access_token", "key", "secrets"}
LOGGING_COMMANDS = {
    "write-verbose", "write-warning", "write-information", "write-output", "write-error", "write-debug",
    "write-progress", "write-host", "write-certsynclog", "write-certsyncjournal", "echo", "write",
}  # fmt: skip
# Commands the runbook may call besides its own functions and the Exchange cmdlets (which the Pester
# fake must stand in for): Windows PowerShell 5.1 built-ins, remoting, and the Edge server's
# RemoteExchange.ps1 (Connect-ExchangeServer). A new command has to be added here on purpose.
WINDOWS_POWERSHELL_51 = {
    "add-member", "convertfrom-json", "convertto-json", "foreach-object", "get-command", "get-service",
    "import-module", "import-pssession", "invoke-restmethod", "invoke-webrequest", "join-path", "new-item",
    "new-object", "new-pssession", "remove-pssession", "resolve-path", "restart-service", "sort-object",
    "start-sleep", "test-path", "where-object", "write-output", "write-verbose", "write-warning",
}  # fmt: skip
WORKER_COMMANDS = {"connect-exchangeserver"}
# The parameters Microsoft documents for the Exchange cmdlets the runbook calls (office-docs-powershell
# syntax sections, only the ones that matter here; EXO cmdlets carry the runbook's "Certsync" prefix).
EXCHANGE_PARAMETERS = {
    "get-exchangecertificate": {"thumbprint", "identity", "server", "domaincontroller", "domainname"},
    "import-exchangecertificate": {
        "filedata", "filename", "friendlyname", "password", "privatekeyexportable", "server",
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
    "get-queue": {"identity", "server", "filter"},
    "connect-exchangeonline": {"managedidentity", "organization", "prefix", "showbanner"},
    "disconnect-exchangeonline": set(),
    "get-certsyncinboundconnector": {"identity"},
    "set-certsyncinboundconnector": {"identity", "tlssendercertificatename"},
    "validate-certsyncoutboundconnector": {"identity", "recipients"},
}  # fmt: skip
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


@cache
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


def called(node: tree_sitter.Node) -> list[str]:
    """The commands `node` calls, lower case, in source order."""
    return [name for name, _ in commands(node)]


def example_plan() -> dict:
    return json.loads((FIXTURES / "plan-two-server.json").read_text())


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


def test_no_parameter_name_looks_like_a_secret():
    # Azure Automation records job parameters; a secret must never be one.
    secretive = re.compile(r"password|secret|key|token|credential|pfx", re.IGNORECASE)
    assert [name for name in script_parameters() if secretive.search(name)] == []


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


def test_the_statuses_are_the_results():
    statuses = set()
    for node in walk(runbook_tree().root_node):
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
    [server_name] = hash_literals(functions()["Invoke-CertsyncCheckName"])
    assert hash_keys(server_name) == list(SERVER_NAME_KEYS)
    kept = [h for h in hash_literals(functions()["Invoke-CertsyncPlan"]) if "thumbprint" in hash_keys(h)]
    assert [hash_keys(h) for h in kept] == [list(KEPT_KEYS)]


def test_every_command_is_the_runbooks_own_a_known_built_in_or_faked_for_pester():
    own = {name.lower() for name in functions()}
    called_names = {name for name, _ in commands(runbook_tree().root_node) if not name.startswith(("$", "&", ".", "("))}
    fake = parse((PESTER / "FakeExchange.ps1").read_bytes())
    faked = set()
    for node in walk(fake.root_node):
        if node.type == "function_statement":
            name = text(next(c for c in node.children if c.type == "function_name")).lower()
            faked.add(name.removeprefix("global:"))
    exchange = called_names - own - WINDOWS_POWERSHELL_51 - WORKER_COMMANDS
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


# --- safety rules: the name Exchange matches -----------------------------------------------------------------


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


def test_values_are_compared_by_one_helper_that_ignores_case():
    helper = functions()["Test-CertsyncSame"]
    assert "OrdinalIgnoreCase" in text(helper)
    for name in ("Invoke-CertsyncCompareAndSet", "Invoke-CertsyncCheck", "Restore-CertsyncInternalTransport"):
        assert "test-certsyncsame" in called(functions()[name]), name


def test_exchanges_own_rendering_of_the_name_is_compared_with_the_plans_before_any_switch():
    # The planner puts check-name on each staged server before the switch phase; the handler compares
    # Exchange's "<I>" + Issuer + "<S>" + Subject with the step's value and records both for the notice.
    plan = example_plan()
    phases = [s["phase"] for s in plan["steps"]]
    checks = [i for i, s in enumerate(plan["steps"]) if s["action"] == "check-name"]
    assert checks and max(checks) < phases.index("switch")
    handler = functions()["Invoke-CertsyncCheckName"]
    assert "invoke-certsynccheck" in called(handler)
    assert "'<I>{0}<S>{1}' -f $found.Issuer, $found.Subject" in text(handler)


def test_a_failed_retire_step_keeps_the_certificate_and_rolls_nothing_back():
    # Exchange refuses to remove a certificate a connector still uses; that is "kept", not a rollback.
    run = text(functions()["Invoke-CertsyncPlan"])
    retire = run[run.index("if ($step.phase -eq 'retire')") :]
    retire = retire[: retire.index("$failure = ")]
    assert "$Context.Kept.Add" in retire and "'kept: '" in retire and "continue" in retire


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
        assert isinstance(step["n"], int) and step["action"] in contract.ACTIONS
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
    assert data["inventory"] == []  # discovery reads the inventory; the executor reports none
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
    assert [(s["n"], s["action"], s["server"], s["object"]) for s in result["steps"]] == [
        (n, s["action"], s["server"], s["object"]) for n, s in enumerate(plan["steps"], 1)
    ]
    assert result["certificate"]["thumbprint"] == plan["certificate"]["thumbprint"]
    assert {s["outcome"] for s in result["steps"]} == {"done"}


def test_per_server_outcomes_follow_from_the_result():
    rolled_back = json.loads((FIXTURES / "result-rolled-back.json").read_text())
    assert server_outcomes(rolled_back, ["EX01", "EX02"], "Failed") == [
        {"server": "EX01", "outcome": "rolled-back"},
        {"server": "EX02", "outcome": "failed"},
    ]
    succeeded = json.loads((FIXTURES / "result-succeeded.json").read_text())
    assert {o["outcome"] for o in server_outcomes(succeeded, ["EX01", "EX02"], "Completed")} == {"succeeded"}


def test_a_rollback_is_reported_step_by_step_newest_first():
    result = json.loads((FIXTURES / "result-rolled-back.json").read_text())
    plan = example_plan()["steps"]
    undo = [s for s in result["steps"] if s["message"].startswith("rollback: ")]
    # Connector values first (newest first), then services, imports and intermediates, then the
    # internal transport certificate on every server with an enable-services step.
    assert [s["n"] for s in undo[:-2]] == sorted({s["n"] for s in undo[:-2]}, reverse=True)
    assert [s["action"] for s in undo[-2:]] == ["enable-services", "enable-services"]
    assert {s["action"] for s in undo} >= {"remove-certificate", "remove-intermediate", "set-receive-connector"}
    for step in undo:
        if step["action"].startswith("set-"):
            planned = plan[step["n"] - 1]
            assert (step["before"], step["after"]) == (planned["value"], planned["previous"])


def test_a_name_mismatch_switches_nothing_rolls_staging_back_and_names_both_strings():
    result = json.loads((FIXTURES / "result-name-mismatch.json").read_text())
    assert result["status"] == "rolled-back"
    assert name_mismatches(result) == [
        'EX01: Exchange renders "<I>C=US, O=Let\'s Encrypt, CN=R11<S>CN=mail.contoso.com",'
        ' certsync has "<I>CN=R11, O=Let\'s Encrypt, C=US<S>CN=mail.contoso.com"'
    ]
    outcomes = {(s["action"], s["server"], s["message"].startswith("rollback")): s["outcome"] for s in result["steps"]}
    assert outcomes[("import-certificate", "EX01", False)] == "rolled-back"
    assert outcomes[("remove-certificate", "EX01", True)] == "rolled-back"
    assert {o for (action, _, _), o in outcomes.items() if action.startswith("set-")} == {"skipped"}


def test_kept_certificates_read_from_the_result():
    result = json.loads((FIXTURES / "result-succeeded.json").read_text())
    assert kept_certificates(result) == []
    result["kept"] = [{"server": "EX01", "thumbprint": "AB", "reason": "Exchange refused"}]
    assert kept_certificates(result) == ["AB on EX01: Exchange refused"]
