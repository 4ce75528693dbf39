"""The executor runbook against its contract (shared/pipeline/contract.py), read from its parse tree.

- The param block is exactly `JOB_PARAMETERS` plus the local-only switches; the plan arrives as base64 of its
  UTF-8 JSON (checked through a model of Azure Automation's parameter decoding).
- One dispatch table holds exactly `ACTIONS`, one handler function each, and nothing calls a handler by name.
- Every write of a handler is a compare-and-set (its cmdlet sits in the -Write block of
  Invoke-CertsyncCompareAndSet); no handler branches on certificate content.
- Every Exchange cmdlet and parameter a handler uses is in the RBAC role block of docs/runbook.md, and the
  runbook's own check for missing cmdlets asks for exactly those.
- No snap-in anywhere; Exchange through a Kerberos remote session.
- The journal entry has the contract's fields, schema, events and outcomes; the plan schema, the required
  status and the accepted content types are the contract's.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from pathlib import Path

import pytest
import tree_sitter

from shared.pipeline import contract
from tests.test_runbook import (
    COMMON_PARAMETERS,
    EXCHANGE_PARAMETERS,
    FIXTURES,
    LOCAL_PARAMETERS,
    ROOT,
    RUNBOOK,
    WINDOWS_POWERSHELL_51,
    commands,
    functions,
    hash_keys,
    hash_literals,
    parameters_of,
    parse,
    runbook_tree,
    script_parameters,
    text,
    unquote,
    walk,
)

DISCOVERY = ROOT / "infra" / "runbooks" / "Get-CertsyncInventory.ps1"
DOCS = ROOT / "docs" / "runbook.md"
JOURNAL_FIELDS = (
    "schema", "job", "seq", "n", "action", "server", "object", "property",
    "event", "outcome", "before", "after", "message", "at", "rollback",
)  # fmt: skip
# Exchange Online's cmdlets (prefix "Certsync") are granted in Exchange Online, not by the on-premises role.
EXCHANGE_ONLINE = {
    "connect-exchangeonline",
    "disconnect-exchangeonline",
    "get-certsyncinboundconnector",
    "set-certsyncinboundconnector",
    "validate-certsyncoutboundconnector",
}
WRITE_VERBS = ("set-", "import-", "enable-", "remove-", "add-", "new-", "disable-")
CONTENT = re.compile(r"subject|issuer|x509", re.IGNORECASE)
PATTERN_OPERATORS = {"-match", "-notmatch", "-like", "-notlike", "-imatch", "-ilike", "-inotmatch", "-inotlike"}


def handlers() -> dict[str, str]:
    """Get-CertsyncHandlers' table: action -> function name."""
    [table] = hash_literals(functions()["Get-CertsyncHandlers"])
    body = next(c for c in table.children if c.type == "hash_literal_body")
    found = {}
    for entry in body.children:
        if entry.type == "hash_entry":
            key = next(c for c in entry.children if c.type == "key_expression")
            found[unquote(text(key))] = unquote(text(entry.children[-1]).strip())
    return found


def contract_values() -> dict[str, object]:
    """Get-CertsyncContract's hashtable, as Python values."""
    [table] = hash_literals(functions()["Get-CertsyncContract"])
    body = next(c for c in table.children if c.type == "hash_literal_body")
    values: dict[str, object] = {}
    for entry in body.children:
        if entry.type == "hash_entry":
            key = unquote(text(next(c for c in entry.children if c.type == "key_expression")))
            value = next(c for c in entry.children if c.type not in ("key_expression", "=", ";"))
            strings = [unquote(text(n)) for n in walk(value) if n.type == "string_literal"]
            values[key] = tuple(strings) if text(value).strip().startswith("@(") else strings[0]
    return values


def own_calls(node: tree_sitter.Node) -> set[str]:
    names = {name.lower(): name for name in functions()}
    return {names[n] for n, _ in commands(node) if n in names}


def reachable(name: str) -> set[str]:
    """A function and every runbook function it calls, transitively."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(own_calls(functions()[current]) - seen)
    return seen


def handler_closure() -> set[str]:
    found: set[str] = set()
    for function in handlers().values():
        found |= reachable(function)
    return found


def exchange_calls(names: set[str]) -> dict[str, set[str]]:
    """On-premises Exchange cmdlets called in these functions -> the parameters passed (splatted
    `@parameters` from Get-CertsyncServerParameters is -Server)."""
    own = {n.lower() for n in functions()}
    used: dict[str, set[str]] = {}
    for function in names:
        for name, node in commands(functions()[function]):
            if name in own or name in WINDOWS_POWERSHELL_51 or name in EXCHANGE_ONLINE or not name[:1].isalpha():
                continue
            passed = {p.lstrip("-") for p in parameters_of(node)} - COMMON_PARAMETERS
            if "@parameters" in text(node):
                passed.add("server")
            used.setdefault(name, set()).update(passed)
    return used


def documented_role() -> dict[str, set[str]]:
    """docs/runbook.md's RBAC block: cmdlet (lower case) -> its parameters (lower case)."""
    source = DOCS.read_text()
    block = re.search(r"```powershell\n(# certsync: the minimum custom RBAC role.*?)```", source, re.S)
    assert block, "docs/runbook.md has no RBAC role block"
    tree = parse(block.group(1).encode())
    [outer] = [
        n for n in walk(tree.root_node) if n.type == "hash_literal_expression" and "Get-ExchangeCertificate" in text(n)
    ][:1]
    role: dict[str, set[str]] = {}
    for entry in walk(outer):
        if entry.type != "hash_entry":
            continue
        key = unquote(text(next(c for c in entry.children if c.type == "key_expression")))
        value = entry.children[-1]
        if re.fullmatch(r"[A-Z][a-z]+-[A-Za-z]+", key) and "@{" not in text(value):  # a cmdlet, not a parent role
            role[key.lower()] = {unquote(text(n)).lower() for n in walk(value) if n.type == "string_literal"}
    return role


def test_the_param_block_is_the_job_parameters_plus_local_switches():
    assert script_parameters() == [*contract.JOB_PARAMETERS, *LOCAL_PARAMETERS]


def test_the_plan_reaches_the_runbook_intact_as_base64_through_automations_decoding():
    # Azure Automation decodes a parameter value that parses as JSON (azure-powershell issue 7977); the
    # runbook's base64 -> UTF-8 -> ConvertFrom-Json then reads the plan byte for byte.
    plan = json.loads((FIXTURES / "plan-two-server.json").read_text())
    text_sent = json.dumps(plan, separators=(",", ":"), ensure_ascii=False)

    def automation(value: str) -> object:
        try:
            return json.loads(value)
        except ValueError:
            return value

    assert not isinstance(automation(text_sent), str)  # why JSON text cannot be the parameter
    encoded = base64.b64encode(text_sent.encode()).decode()
    received = automation(encoded)
    assert isinstance(received, str) and json.loads(base64.b64decode(received).decode("utf-8")) == plan
    read = text(functions()["Read-CertsyncPlan"])
    assert "UTF8.GetString([System.Convert]::FromBase64String($Encoded))" in read
    assert read.index("FromBase64String") < read.index("ConvertFrom-Json")


def test_the_dispatch_table_holds_exactly_the_contracts_actions_one_handler_each():
    table = handlers()
    assert sorted(table) == sorted(contract.ACTIONS) and len(table) == len(contract.ACTIONS)
    assert len(set(table.values())) == len(table)
    for action, function in table.items():
        assert function in functions(), (action, function)
        params = [text(n).lower() for n in walk(functions()[function]) if n.type == "variable"][:2]
        assert params == ["$context", "$step"], function
    # Nothing calls a handler by name: the table is the only dispatch.
    called = {name for name, _ in commands(runbook_tree().root_node)}
    assert called & {f.lower() for f in table.values()} == set()
    dispatches = [
        n for n in walk(runbook_tree().root_node) if n.type == "command" and "(Get-CertsyncHandlers)[" in text(n)
    ]
    assert len(dispatches) == 2  # the step loop and the rollback


def test_every_handler_writes_only_through_compare_and_set():
    for action, function in handlers().items():
        node = functions()[function]
        writes = [(n, c) for n, c in commands(node) if n.startswith(WRITE_VERBS) and n != "add-member"]
        guarded = []
        for _name, call in commands(node):
            if _name != "invoke-certsynccompareandset":
                continue
            elements = next(c for c in call.children if c.type == "command_elements").children
            for parameter, argument in zip(elements, elements[2:], strict=False):
                if parameter.type == "command_parameter" and text(parameter).lower() == "-write":
                    guarded.append(argument)
        for name, call in writes:
            inside = any(g.start_byte <= call.start_byte < g.end_byte for g in guarded)
            assert inside, f"{action}: {name} outside a compare-and-set -Write block"
        if action not in (
            "check-status",
            "check-name",
            "probe-receive-connector",
            "test-outbound",
            "restart-transport",
        ):
            assert guarded, f"{action} writes nothing through compare-and-set"


def test_no_handler_branches_on_certificate_content():
    closure = handler_closure()
    for function in closure:
        node = functions()[function]
        operators = {text(n).lower() for n in walk(node) if n.type == "comparison_operator"}
        assert not operators & PATTERN_OPERATORS, (function, operators & PATTERN_OPERATORS)
        conditions = [n for n in walk(node) if n.type in ("if_statement", "switch_statement", "while_statement")]
        conditions = [c.child_by_field_name("condition") or c.children[2] for c in conditions]
        conditions += [call for name, call in commands(node) if name == "where-object"]
        for condition in conditions:
            assert not CONTENT.search(text(condition)), (function, text(condition)[:120])
    # Subject and Issuer are read in one place: check-name, which composes Exchange's rendering to
    # compare it with the plan's value (and report both).
    readers = {
        name
        for name, node in functions().items()
        if any(n.type == "member_name" and text(n).lower() in ("subject", "issuer") for n in walk(node))
    }
    assert readers == {"Invoke-CertsyncCheckName"}
    # The lint can fail: it flags what it looks for.
    sample = parse(b"if ($c.Subject -match 'CN=') { 1 }\n$x | Where-Object { $_.Issuer -like '*R11*' }\n")
    flagged = [
        n for n in walk(sample.root_node) if n.type == "comparison_operator" and text(n).lower() in PATTERN_OPERATORS
    ]
    assert len(flagged) == 2


def test_every_cmdlet_and_parameter_a_handler_uses_is_in_the_documented_role():
    role = documented_role()
    used = exchange_calls(handler_closure())
    assert {"set-sendconnector", "enable-exchangecertificate", "get-queue"} <= set(used)
    for cmdlet, parameters in used.items():
        assert cmdlet in role, f"{cmdlet} is not in docs/runbook.md's RBAC role"
        assert parameters <= role[cmdlet], f"{cmdlet}: {sorted(parameters - role[cmdlet])} not in the role"
        assert parameters <= EXCHANGE_PARAMETERS[cmdlet]
    # The runtime check of missing cmdlets asks for exactly the role's cmdlets.
    check = functions()["Assert-CertsyncCmdlets"]
    needed = {unquote(text(n)).lower() for n in walk(check) if n.type == "string_literal" and "-" in text(n)}
    assert needed == set(role)
    assert contract_values()["Role"] in DOCS.read_text()


def test_the_role_lint_can_fail():
    role = documented_role()
    assert "set-sendconnector" in role and "tlscertificatename" in role["set-sendconnector"]
    assert "force" not in role["set-sendconnector"]


@pytest.mark.parametrize("path", [RUNBOOK, DISCOVERY], ids=lambda p: p.name)
def test_no_snap_in_anywhere(path):
    tree = parse(path.read_bytes())
    assert "add-pssnapin" not in {name for name, _ in commands(tree.root_node)}
    assert "pssnapin" not in path.read_text().lower().replace("no snap-in", "")


def test_exchange_is_reached_through_a_kerberos_remote_session():
    connect = functions()["Connect-CertsyncExchange"]
    [session] = [call for name, call in commands(connect) if name == "new-pssession"]
    assert re.search(r"-ConfigurationName 'Microsoft\.Exchange'", text(session))
    assert re.search(r"-ConnectionUri \('http://\{0\}/PowerShell/'", text(session))
    assert re.search(r"-Authentication Kerberos", text(session))


def test_the_journal_entry_has_the_contracts_fields_schema_events_and_outcomes():
    journal = functions()["Write-CertsyncJournal"]
    [entry] = [h for h in hash_literals(journal) if "seq" in hash_keys(h)]
    assert tuple(hash_keys(entry)) == JOURNAL_FIELDS
    assert "(Get-CertsyncContract).JournalSchema" in text(entry)
    assert contract_values()["JournalSchema"] == contract.JOURNAL_SCHEMA
    body = [h for h in hash_literals(journal) if "entries" in hash_keys(h)]
    assert [hash_keys(h) for h in body] == [["schema", "job_id", "certificate", "entries"]]
    kinds, outcomes = set(), set()
    for name, call in commands(runbook_tree().root_node):
        if name != "write-certsyncjournal":
            continue
        elements = [c for c in next(c for c in call.children if c.type == "command_elements").children]
        elements = [c for c in elements if c.type != "command_argument_sep"]
        for parameter, value in itertools.pairwise(elements):
            if not re.fullmatch(r"'[a-z-]+'", text(value)):
                continue
            if name == "write-certsyncjournal" and text(parameter).lower() == "-kind":
                kinds.add(unquote(text(value)))
            if name == "write-certsyncjournal" and text(parameter).lower() == "-outcome":
                outcomes.add(unquote(text(value)))
    assert kinds == set(contract.JOURNAL_EVENTS)
    outcomes |= set(re.findall(r"Outcome = '([a-z-]+)'", RUNBOOK.read_text()))
    assert outcomes <= set(contract.OUTCOMES)
    assert {"done", "already", "conflict", "failed", "would-do"} <= outcomes
    assert "certsync\\journal\\{0}.jsonl" in text(functions()["Get-CertsyncJournalPath"])


def test_the_plan_schema_the_required_status_and_the_content_types_are_the_contracts():
    values = contract_values()
    assert values["PlanSchema"] == contract.PLAN_SCHEMA
    assert values["RequiredStatus"] == contract.REQUIRED_STATUS
    assert values["ContentTypes"] == contract.ACCEPTED_CONTENT_TYPES
    assert "$schema -ne $contract.PlanSchema" in text(functions()["Read-CertsyncPlan"])
    assert "(Get-CertsyncContract).RequiredStatus" in text(functions()["Invoke-CertsyncCheckStatus"])
    assert "(Get-CertsyncContract).ContentTypes -notcontains" in text(functions()["Read-CertsyncPfx"])


def test_the_runbook_is_at_most_half_its_former_length():
    # Issue 16: "at most half its current length" (1,357 lines when the issue was filed).
    assert len(Path(RUNBOOK).read_text().splitlines()) <= 1357 // 2


def test_exchange_online_takes_the_tenant_from_each_step_never_from_the_worker():
    # One connection per tenant the plan names; no Automation variable or default organization to guess from.
    connect = functions()["Connect-CertsyncTenant"]
    assert "Get-CertsyncField $Step 'tenant'" in text(connect)
    [call] = [node for name, node in commands(connect) if name == "connect-exchangeonline"]
    assert re.search(r"-Organization \$tenant\b", text(call)) and "-ManagedIdentity" in text(call)
    assert "if ($Context.Tenant -eq $tenant) { return }" in text(connect)
    called = {name for name, _ in commands(runbook_tree().root_node)}
    assert "get-automationvariable" not in called
    for name in ("Invoke-CertsyncSetExoInboundConnector", "Invoke-CertsyncTestOutbound"):
        assert "connect-certsynctenant" in {n for n, _ in commands(functions()[name])}, name


def _planner_actions() -> set[str]:
    """Every action shared/pipeline/planner.py can put in a plan: the second argument of each
    `self.step(phase, action, ...)`, a constant or one of the values of a table it indexes."""
    import ast
    import inspect

    import shared.pipeline.planner

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
            action = node.args[1]
            if isinstance(action, ast.Subscript) and isinstance(action.value, ast.Name):
                actions.update(ast.literal_eval(tables[action.value.id]).values())
            else:
                assert isinstance(action, ast.Constant) and isinstance(action.value, str), ast.dump(node)
                actions.add(action.value)
    return actions


def test_every_action_the_planner_writes_is_the_contracts_and_so_has_a_handler():
    written = _planner_actions()
    assert {"install-intermediate", "import-certificate", "set-send-connector", "remove-certificate"} <= written
    assert {"restart-transport", "probe-receive-connector", "test-outbound"} <= written  # the proof
    assert written <= set(contract.ACTIONS)


def test_the_journal_callback_names_the_jobs_certificate_as_the_callback_requires():
    # shared/remediation/callback.py accept_journal files entries under the body's certificate (vault, name,
    # version): the runbook must send them, from the plan's certificate
    source = RUNBOOK.read_text(encoding="utf-8")
    send = next(line for line in source.splitlines() if "-journal-" in line and "Send-CertsyncCallback" in line)
    for key in ("vault", "name", "version"):
        assert f"{key} = [string](Get-CertsyncField $Context.Certificate '{key}')" in send
    # and the presence it journals for a staged certificate is what the journal decisions read
    assert "'absent' } else { 'present' }" in source or "'present' } else { 'absent' }" in source
