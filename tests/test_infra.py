"""The deployment as far as it can be checked without Azure: infra/**/*.bicep, azure.yaml, the parameters
file and the azd hooks, against the code they deploy.

No Bicep compiler, ARM what-if or pwsh can run here (no network to Azure; spec: local-stack §5), so:
- every Bicep file must parse with the tree-sitter Bicep grammar, with no ERROR or MISSING node (a
  syntax gate; it knows nothing of types or resource schemas);
- the facts the app relies on are read from the parse trees and compared with the code: the bindings
  (`function_app.app.get_functions()`, via tests.test_function_app), the settings shared/*.py and
  functions/*.py read (their ASTs), the role registry (shared/adapters/azure/permissions.py), the event types
  (shared/pipeline/events.py) and local.settings.json.example;
- module wiring is checked like a compiler would: the files exist, the params passed are declared and
  the required ones are passed, the outputs read exist.
Regular expressions are used only where a tree does not help: shell hook scripts (no shell grammar
here), `<module>.outputs.<name>` references (the grammar mis-nests member access after a ternary), and
role names inside the code's message strings.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
import tree_sitter
import tree_sitter_bicep
import tree_sitter_powershell
import yaml

from shared.adapters.azure import permissions
from shared.errors import CertsyncError
from shared.pipeline.events import CERTIFICATE_EVENTS
from shared.settings import JOBS_STORAGE, REGISTRY
from tests.test_function_app import FUNCTIONS

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
MODULES = INFRA / "modules"
HOOKS = INFRA / "hooks"
BICEP = tree_sitter.Language(tree_sitter_bicep.language())
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# Flex Consumption app settings Microsoft documents as deprecated ("Flex Consumption plan deprecations"
# in the Functions app settings reference): the runtime and scale live in functionAppConfig instead.
FLEX_DEPRECATED_SETTINGS = frozenset(
    {
        "ENABLE_ORYX_BUILD", "FUNCTIONS_EXTENSION_VERSION", "FUNCTIONS_WORKER_RUNTIME",
        "FUNCTIONS_WORKER_RUNTIME_VERSION", "FUNCTIONS_MAX_HTTP_CONCURRENCY", "FUNCTIONS_WORKER_PROCESS_COUNT",
        "FUNCTIONS_WORKER_DYNAMIC_CONCURRENCY_ENABLED", "SCM_DO_BUILD_DURING_DEPLOYMENT",
        "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "WEBSITE_CONTENTOVERVNET", "WEBSITE_CONTENTSHARE",
        "WEBSITE_DNS_SERVER", "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT", "WEBSITE_NODE_DEFAULT_VERSION",
        "WEBSITE_RUN_FROM_PACKAGE", "WEBSITE_SKIP_CONTENTSHARE_VALIDATION", "WEBSITE_VNET_ROUTE_ALL",
    }
)  # fmt: skip
# ...and the site properties deprecated there.
FLEX_DEPRECATED_SITE_CONFIG = frozenset(
    {
        "alwaysOn", "containerSize", "ftpsState", "isReserved", "javaVersion", "linuxFxVersion",
        "netFrameworkVersion", "powerShellVersion", "functionAppScaleLimit", "preWarmedInstanceCount",
        "use32BitWorkerProcess", "vnetRouteAllEnabled", "vnetContentShareEnabled", "vnetImagePullEnabled",
        "windowsFxVersion",
    }
)  # fmt: skip
# Read by the Functions host and the Python worker in Azure, not by certsync's code, and meaningless
# locally (there is no Application Insights resource to send to): Bicep only.
HOST_ONLY_SETTINGS = {
    "APPLICATIONINSIGHTS_CONNECTION_STRING": None,
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true",
    "PYTHON_APPLICATIONINSIGHTS_LOGGER_NAME": "certsync",
    # Application Insights takes Entra-only ingestion (disableLocalAuth): sign in as the user-assigned identity.
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": None,
}
# The Functions host's own storage connection (no binding names it).
HOST_CONNECTION = "AzureWebJobsStorage"
# How the Bicep passes each principal's id to a role assignment (registry principal -> Bicep param).
PRINCIPAL_PARAMS = {
    "functionPrincipalId": permissions.FUNCTION,
    "grant.principalId": permissions.HYBRID_WORKER,  # vault-access.bicep's loop over (secret, worker) grants
    "eventGridPrincipalId": permissions.EVENT_GRID,
}
# Environment variables azd itself gives every hook (the rest must be main.bicep outputs).
AZD_HOOK_VARIABLES = {"AZURE_ENV_NAME", "AZURE_SUBSCRIPTION_ID"}


# --- the tree-sitter syntax gate -------------------------------------------------------------------


def parse_bicep(source: bytes) -> tree_sitter.Tree:
    return tree_sitter.Parser(BICEP).parse(source)


def syntax_errors(tree: tree_sitter.Tree) -> list[str]:
    """`line:column node` for every ERROR and MISSING node (both mean the grammar could not parse it)."""
    found = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            row, column = node.start_point
            found.append(f"{row + 1}:{column + 1} {'MISSING ' + node.type if node.is_missing else 'ERROR'}")
        stack.extend(node.children)
    return sorted(found)


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def test_the_infra_has_the_files_azd_and_the_hooks_use():
    names = {p.relative_to(INFRA).as_posix() for p in bicep_files()}
    assert {
        "main.bicep",
        "modules/function-app.bicep",
        "modules/storage.bicep",
        "modules/automation.bicep",
        "modules/event-grid.bicep",
        "modules/event-subscription.bicep",
        "modules/vault-access.bicep",
    } <= names


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: p.relative_to(INFRA).as_posix())
def test_every_bicep_file_parses_without_errors(path):
    tree = parse_bicep(path.read_bytes())
    assert tree.root_node.type == "infrastructure"
    assert syntax_errors(tree) == [], path


@pytest.mark.parametrize(
    "snippet",
    [
        "resource st 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n  name: 'x'\n",  # no closing brace
        "param name string = 'unterminated\n",
        "var x = [\n  'a'\n  'b',,\n]\n",
        "@description('x'\n param p string\n",
        "resource 'Microsoft.Web/sites@2024-04-01' = {\n  name: 'x'\n}\n",  # no symbolic name
        "module m = {\n  name: 'm'\n}\n",  # no path
    ],
)
def test_the_syntax_gate_flags_broken_bicep(snippet):
    assert syntax_errors(parse_bicep(snippet.encode())) != []


# --- reading facts out of Bicep trees --------------------------------------------------------------


def text(node: tree_sitter.Node) -> str:
    return node.text.decode()


def string_value(node: tree_sitter.Node | None) -> str | None:
    """The value of a string literal without interpolation; None for anything else."""
    if node is None or node.type != "string" or any(c.type == "interpolation" for c in node.children):
        return None
    return "".join(text(c) for c in node.children if c.type == "string_content")


def property_key(node: tree_sitter.Node) -> str:
    key = node.named_children[0]
    return string_value(key) if key.type == "string" else text(key)


def properties(obj: tree_sitter.Node) -> dict[str, tree_sitter.Node]:
    """An object's properties, key -> value node."""
    assert obj.type == "object", text(obj)[:80]
    return {property_key(p): p.named_children[-1] for p in obj.named_children if p.type == "object_property"}


def lookup(obj: tree_sitter.Node, dotted: str) -> tree_sitter.Node | None:
    node: tree_sitter.Node | None = obj
    for key in dotted.split("."):
        if node is None or node.type != "object":
            return None
        node = properties(node).get(key)
    return node


def literal(obj: tree_sitter.Node, dotted: str) -> object:
    """A string, number or bool literal at `dotted` in `obj`."""
    node = lookup(obj, dotted)
    assert node is not None, f"{dotted} is not set"
    if node.type == "string":
        value = string_value(node)
        assert value is not None, f"{dotted} is not a plain string: {text(node)}"
        return value
    if node.type == "number":
        return int(text(node))
    if node.type == "boolean":
        return text(node) == "true"
    raise AssertionError(f"{dotted} is not a literal: {text(node)}")


def strings(node: tree_sitter.Node) -> list[str]:
    """The plain string literals of an array."""
    assert node.type == "array", text(node)[:80]
    values = [string_value(c) for c in node.named_children if c.type != "comment"]
    assert None not in values, text(node)
    return values  # type: ignore[return-value]


def walk(node: tree_sitter.Node):
    yield node
    for child in node.children:
        yield from walk(child)


@dataclass
class Resource:
    symbol: str
    type: str  # with the API version: Microsoft.Web/sites@2024-04-01
    body: tree_sitter.Node  # the object
    condition: tree_sitter.Node | None
    existing: bool
    declaration: tree_sitter.Node

    @property
    def arm_type(self) -> str:
        return self.type.partition("@")[0]

    def leading_comments(self) -> str:
        """The comment lines directly above the declaration (no blank line between), joined."""
        lines = []
        row = self.declaration.start_point[0] - 1
        node = self.declaration.prev_sibling
        while node is not None and node.type == "comment" and node.end_point[0] == row:
            lines.insert(0, text(node).removeprefix("//").strip())
            row = node.start_point[0] - 1
            node = node.prev_sibling
        return " ".join(lines)


@dataclass
class Module:
    symbol: str
    path: Path
    body: tree_sitter.Node
    reference: str = ""  # as written: 'modules/x.bicep' or 'br/public:avm/res/...:<version>'

    @property
    def registry(self) -> bool:
        return self.reference.startswith("br/") or self.reference.startswith("br:")


@dataclass
class BicepFile:
    path: Path
    tree: tree_sitter.Tree
    params: dict[str, bool] = field(default_factory=dict)  # name -> has a default
    variables: dict[str, tree_sitter.Node] = field(default_factory=dict)
    resources: list[Resource] = field(default_factory=list)
    modules: list[Module] = field(default_factory=list)
    outputs: set[str] = field(default_factory=set)

    @property
    def source(self) -> str:
        return self.tree.root_node.text.decode()

    def resource(self, symbol: str) -> Resource:
        return next(r for r in self.resources if r.symbol == symbol)

    def resources_of(self, arm_type: str) -> list[Resource]:
        return [r for r in self.resources if r.arm_type == arm_type]


def _body(declaration: tree_sitter.Node) -> tuple[tree_sitter.Node, tree_sitter.Node | None]:
    value = declaration.named_children[-1]
    if value.type == "if_statement":
        return value.named_children[-1], value.named_children[0]
    if value.type == "for_statement":
        return value.named_children[-1], None
    return value, None


@cache
def bicep(relative: str) -> BicepFile:
    path = INFRA / relative
    tree = parse_bicep(path.read_bytes())
    assert syntax_errors(tree) == [], path
    parsed = BicepFile(path, tree)
    for node in tree.root_node.named_children:
        children = node.named_children
        if node.type == "parameter_declaration":
            parsed.params[text(children[0])] = any(c.type == "=" for c in node.children)
        elif node.type == "variable_declaration":
            parsed.variables[text(children[0])] = children[-1]
        elif node.type == "output_declaration":
            parsed.outputs.add(text(children[0]))
        elif node.type == "resource_declaration":
            body, condition = _body(node)
            existing = any(c.type == "existing" for c in node.children)
            parsed.resources.append(
                Resource(text(children[0]), string_value(children[1]), body, condition, existing, node)
            )
        elif node.type == "module_declaration":
            body, _ = _body(node)
            reference = string_value(children[1]) or ""
            parsed.modules.append(Module(text(children[0]), path.parent / reference, body, reference))
    return parsed


def all_bicep() -> list[BicepFile]:
    return [bicep(p.relative_to(INFRA).as_posix()) for p in bicep_files()]


def app_settings() -> dict[str, tree_sitter.Node]:
    """The Function App's app settings (the sites/config 'appsettings' resource), name -> value node."""
    found = [
        r
        for f in all_bicep()
        for r in f.resources_of("Microsoft.Web/sites/config")
        if literal(r.body, "name") == "appsettings"
    ]
    assert len(found) == 1, "exactly one appsettings resource"
    return properties(lookup(found[0].body, "properties"))


def local_settings() -> dict[str, str]:
    return json.loads((ROOT / "local.settings.json.example").read_text())["Values"]


# --- what the code needs ---------------------------------------------------------------------------


def bindings() -> list[tuple[str, dict]]:
    return [(f.get_function_name(), b) for f in FUNCTIONS for b in json.loads(f.get_function_json())["bindings"]]


def binding_connections() -> set[str]:
    return {b["connection"] for _, b in bindings() if b.get("connection")}


def binding_placeholders() -> set[str]:
    return {name for _, b in bindings() for name in re.findall(r"%(\w+)%", json.dumps(b))}


ENVIRONMENT_READERS = ("shared/settings.py",)  # the registry; and the CLI's --password-env, below


def environment_reads(path: Path, source: str | None = None) -> list[str]:
    """Where `path` reads the environment: `os.environ` (or `environ` imported from os), `getenv`, and
    `env.get("NAME")` / `env["NAME"]` of an UPPER_CASE name (shared/pipeline/events.py reads its event
    envelope through a mapping also called `env`, by lower-case keys). The CLI's `--password-env VAR` reads
    a variable the user names (`os.environ[password_env]`, `password_env in os.environ`): allowed."""
    tree = ast.parse(path.read_text() if source is None else source, str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def password_env(node: ast.AST) -> bool:
        parent = parents.get(node)
        names = {n.id for n in ast.walk(parent) if isinstance(n, ast.Name)} if parent is not None else set()
        return isinstance(parent, (ast.Subscript, ast.Compare)) and "password_env" in names

    found = []
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and not password_env(node):
            found.append(f"{where} os.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [f"{where} from os import {a.name}" for a in node.names if a.name in ("environ", "getenv")]
        elif isinstance(node, (ast.Call, ast.Subscript)):
            target = node.func.value if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) else None
            key = node.args[0] if isinstance(node, ast.Call) and node.args else None
            if isinstance(node, ast.Subscript):
                target, key = node.value, node.slice
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") != "get":
                continue
            if (
                isinstance(target, ast.Name)
                and target.id in ("env", "environ", "environment")
                and isinstance(key, ast.Constant)
                and isinstance(key.value, str)
                and re.fullmatch(r"[A-Z][A-Za-z0-9_]*", key.value)
            ):
                found.append(f"{where} {target.id}[{key.value!r}]")
    return found


def test_no_module_but_settings_reads_the_environment():
    files = [*sorted((ROOT / "shared").rglob("*.py")), *sorted((ROOT / "functions").glob("*.py"))]
    files.append(ROOT / "function_app.py")
    reads = [
        read
        for path in files
        if path.relative_to(ROOT).as_posix() not in ENVIRONMENT_READERS
        for read in environment_reads(path)
    ]
    assert reads == [], "read the setting through shared.settings (its registry) instead"
    assert environment_reads(ROOT / "shared" / "settings.py"), "the scan sees the registry's own reads"


@pytest.mark.parametrize(
    "source",
    [
        "import os\nx = os.environ.get('CERTSYNC_VAULTS')\n",
        "import os\nx = os.getenv('X')\n",
        "from os import environ\n",
        "def f(env):\n    return env.get('CERTSYNC_VAULTS', '')\n",
        "def f(env):\n    return env['JobsStorage']\n",
        "import os\ndef f(password_env, other):\n    return os.environ[other]\n",
    ],
)
def test_the_environment_scan_flags_a_read(source, tmp_path):
    assert environment_reads(tmp_path / "m.py", source)


def test_the_environment_scan_allows_the_password_env_and_event_envelopes(tmp_path):
    source = (
        "import os\n"
        "def f(password_env, env):\n"
        "    if password_env not in os.environ:\n"
        "        return env.get('type')\n"
        "    return os.environ[password_env]\n"
    )
    assert environment_reads(tmp_path / "m.py", source) == []


@cache
def code_settings() -> tuple[frozenset[str], frozenset[str]]:
    """(settings, connections) the Function App reads, from the registry (shared/settings.py): the
    connections' `<name>__*` forms are checked with their connection."""
    app = [s.name for s in REGISTRY if s.scope in ("app", "host")]
    connections = frozenset(n for n in app if n == JOBS_STORAGE)
    return frozenset(n for n in app if "__" not in n and n not in connections), connections


def test_the_registry_names_what_the_code_reads():
    # Guards the registry side: a registry that listed nothing would make the contract tests below vacuous.
    settings, connections = code_settings()
    assert {"CERTSYNC_VAULTS", "REMEDIATION_QUEUE", "AUDIT_TABLE", "AZURE_CLIENT_ID"} <= settings
    assert "JobsStorage" in connections
    assert not any(name.islower() for name in settings)


# --- contract: settings and connections ------------------------------------------------------------


def _assert_connection_in_bicep(connection: str, settings: dict[str, tree_sitter.Node]) -> None:
    if connection in settings:
        value = text(settings[connection])
        assert "AccountKey" not in value, f"{connection} must not be a connection string with a key"
        return
    prefix = f"{connection}__"
    forms = {name.removeprefix(prefix) for name in settings if name.startswith(prefix)}
    assert forms, f"{connection}: no app setting {connection} or {prefix}* in the Bicep"
    assert string_value(settings[f"{prefix}credential"]) == "managedidentity", connection
    assert f"{prefix}clientId" in settings, f"{connection}: a user-assigned identity needs {prefix}clientId"
    assert forms & {"accountName", "queueServiceUri", "tableServiceUri", "blobServiceUri", "serviceUri"}, connection


def test_every_connection_the_bindings_and_code_use_is_defined_in_bicep_and_locally():
    settings = app_settings()
    local = local_settings()
    connections = binding_connections() | code_settings()[1] | {HOST_CONNECTION}
    assert "JobsStorage" in connections
    for connection in sorted(connections):
        _assert_connection_in_bicep(connection, settings)
        assert connection in local, f"{connection} missing from local.settings.json.example"


def test_every_binding_placeholder_is_defined_in_bicep_and_locally():
    settings = app_settings()
    local = local_settings()
    placeholders = binding_placeholders()
    assert "REMEDIATION_QUEUE" in placeholders  # the scan sees the queue trigger
    for name in sorted(placeholders):
        assert name in settings, f"%{name}% is used by a binding but is not an app setting in the Bicep"
        assert name in local, f"%{name}% is used by a binding but missing from local.settings.json.example"
        assert text(settings[name]) not in ("''", ""), f"%{name}% would be empty in Azure"


def test_every_setting_the_code_reads_is_defined_in_bicep_and_locally():
    settings = app_settings()
    local = local_settings()
    for name in sorted(code_settings()[0]):
        assert name in settings, f"the code reads {name} but the Bicep app settings do not define it"
        assert name in local, f"the code reads {name} but local.settings.json.example does not define it"


def test_no_bicep_app_setting_is_unknown_locally():
    # The other direction: a setting only the Bicep knows is either host-only (listed above, with the
    # reason) or an identity-based form of a connection whose local form is in the example.
    local = local_settings()
    for name in sorted(app_settings()):
        if name in HOST_ONLY_SETTINGS:
            continue
        base = name.split("__")[0]
        assert base in local, f"{name} is set in Azure but {base} is missing from local.settings.json.example"


def test_host_settings_are_identity_based_and_telemetry_goes_through_the_worker():
    settings = app_settings()
    assert HOST_CONNECTION not in settings, "AzureWebJobsStorage must be identity-based (no connection string)"
    assert string_value(settings["AzureWebJobsStorage__credential"]) == "managedidentity"
    assert "AzureWebJobsStorage__accountName" in settings
    for name, value in HOST_ONLY_SETTINGS.items():
        assert name in settings
        if value is not None:
            assert string_value(settings[name]) == value, name
    # One identity for everything: the same client id for the host, JobsStorage and the SDK clients.
    client_id_settings = ("AzureWebJobsStorage__clientId", "JobsStorage__clientId", "AZURE_CLIENT_ID")
    client_ids = {text(settings[n]) for n in client_id_settings}
    assert client_ids == {"identityClientId"}


def test_flex_consumption_takes_no_deprecated_settings_but_core_tools_gets_the_worker_runtime():
    settings = app_settings()
    assert set(settings) & FLEX_DEPRECATED_SETTINGS == set()
    site = bicep("modules/function-app.bicep").resources_of("Microsoft.Web/sites")[0]
    site_config = lookup(site.body, "properties.siteConfig")
    assert set(properties(site_config)) & FLEX_DEPRECATED_SITE_CONFIG == set()
    assert set(properties(lookup(site.body, "properties"))) & FLEX_DEPRECATED_SITE_CONFIG == set()
    # Locally the Core Tools host still needs the runtime as a setting.
    assert local_settings()["FUNCTIONS_WORKER_RUNTIME"] == "python"


def test_secrets_are_key_vault_references_resolved_with_the_user_assigned_identity():
    source = bicep("modules/function-app.bicep")
    settings = app_settings()
    secret_settings = ("CERTSYNC_TEAMS_WEBHOOK_URL", "CERTSYNC_SLACK_WEBHOOK_URL", "CERTSYNC_WEBHOOK_URL")
    for name in (*secret_settings, "CERTSYNC_WEBHOOK_SECRET"):
        variable = source.variables[text(settings[name])]
        assert variable.type == "ternary_expression", name  # empty when no secret is named
        assert "@Microsoft.KeyVault(SecretUri=" in text(variable), name
    callback = source.variables[text(settings["CERTSYNC_CALLBACK_SECRET"])]
    assert "@Microsoft.KeyVault(SecretUri=" in text(callback) and "certsync-callback-secret" in text(callback)
    site = source.resources_of("Microsoft.Web/sites")[0]
    assert text(lookup(site.body, "properties.keyVaultReferenceIdentity")) == "identityId"
    assert literal(site.body, "identity.type") == "UserAssigned"


def test_the_function_app_is_flex_consumption_python_3_11_deployed_with_its_identity():
    source = bicep("modules/function-app.bicep")
    plan = source.resources_of("Microsoft.Web/serverfarms")[0]
    assert (literal(plan.body, "sku.name"), literal(plan.body, "sku.tier")) == ("FC1", "FlexConsumption")
    site = source.resources_of("Microsoft.Web/sites")[0]
    assert literal(site.body, "kind") == "functionapp,linux"
    config = lookup(site.body, "properties.functionAppConfig")
    assert (literal(config, "runtime.name"), literal(config, "runtime.version")) == ("python", "3.11")
    assert literal(config, "deployment.storage.type") == "blobContainer"
    assert literal(config, "deployment.storage.authentication.type") == "UserAssignedIdentity"
    assert text(lookup(config, "deployment.storage.authentication.userAssignedIdentityResourceId")) == "identityId"
    assert lookup(config, "scaleAndConcurrency.maximumInstanceCount") is not None
    assert "'azd-service-name': 'api'" in text(lookup(site.body, "tags"))


# --- contract: storage ------------------------------------------------------------------------------


def test_storage_allows_no_shared_key_and_no_key_is_read_anywhere():
    account = bicep("modules/storage.bicep").resources_of("Microsoft.Storage/storageAccounts")[0]
    assert literal(account.body, "properties.allowSharedKeyAccess") is False
    assert literal(account.body, "properties.allowBlobPublicAccess") is False
    for parsed in all_bicep():
        for node in walk(parsed.tree.root_node):
            if node.type == "call_expression":
                callee = node.named_children[0]
                name = text(callee.named_children[-1] if callee.type == "member_expression" else callee)
                assert not name.lower().startswith(("listkeys", "listaccountsas", "listservicesas")), parsed.path
            if node.type == "string_content":
                assert not re.search(r"AccountKey=|SharedAccessSignature=|sig=", text(node)), parsed.path


def test_the_queues_and_tables_the_settings_name_exist():
    source = bicep("modules/storage.bicep")
    queues = set(strings(source.variables["queueNames"]))
    tables = set(strings(source.variables["tableNames"]))
    settings = app_settings()
    named_queues = {n: string_value(v) for n, v in settings.items() if n.endswith("_QUEUE")}
    named_tables = {n: string_value(v) for n, v in settings.items() if n.endswith("_TABLE")}
    assert {"REMEDIATION_QUEUE", "TRACKING_QUEUE", "NOTIFY_POISON_QUEUE"} <= set(named_queues)
    assert {"AUDIT_TABLE", "JOB_CLAIMS_TABLE", "STATE_TABLE"} <= set(named_tables)
    for name, queue in named_queues.items():
        assert queue in queues, f"{name}={queue} is not created in storage.bicep"
    for name, table in named_tables.items():
        assert table in tables, f"{name}={table} is not created in storage.bicep"
    # A queue trigger's messages go to <queue>-poison after maxDequeueCount failures.
    triggered = {re.fullmatch(r"%(\w+)%", b["queueName"])[1] for _, b in bindings() if b["type"] == "queueTrigger"}
    assert triggered, "the scan sees the queue triggers"
    for setting in triggered:
        assert f"{named_queues[setting]}-poison" in queues, setting
    container_type = "Microsoft.Storage/storageAccounts/blobServices/containers"
    containers = {text(lookup(r.body, "name")) for r in source.resources_of(container_type)}
    assert containers == {"deploymentContainerName", "deadLetterContainerName"}


# --- contract: roles ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    role_definition_id: str
    principal: str
    scope: str
    file: str
    symbol: str


def bicep_grants() -> list[Grant]:
    grants = []
    for parsed in all_bicep():
        for assignment in parsed.resources_of("Microsoft.Authorization/roleAssignments"):
            where = f"{parsed.path.name}:{assignment.symbol}"
            role_call = lookup(assignment.body, "properties.roleDefinitionId")
            ids = [string_value(a) for a in role_call.named_children[-1].named_children if a.type == "string"]
            guid = next((i for i in ids if i and GUID.match(i)), None)
            assert guid, f"{where}: roleDefinitionId must name the built-in role by its GUID"
            principal_param = text(lookup(assignment.body, "properties.principalId"))
            assert principal_param in PRINCIPAL_PARAMS, f"{where}: principalId {principal_param} is not known"
            assert literal(assignment.body, "properties.principalType") == "ServicePrincipal", where
            scope_text = text(lookup(assignment.body, "scope"))
            scope = parsed.resource(re.sub(r"\[\w+\]$", "", scope_text))
            # The assignment's name is derived from the same scope, principal and role (stable, unique).
            name = text(lookup(assignment.body, "name"))
            assert name == f"guid({scope_text}.id, {principal_param}, '{guid}')", where
            principal = PRINCIPAL_PARAMS[principal_param]
            grants.append(Grant(guid, principal, scope.arm_type, parsed.path.name, assignment.symbol))
    return grants


def test_the_role_registry_names_built_in_roles_by_guid():
    assert len(set(permissions.BUILT_IN_ROLES.values())) == len(permissions.BUILT_IN_ROLES)
    for name, guid in permissions.BUILT_IN_ROLES.items():
        assert GUID.match(guid), name
        assert permissions.role_name(guid.upper()) == name
    for assignment in permissions.ASSIGNMENTS:
        assert assignment.role_definition_id == permissions.BUILT_IN_ROLES[assignment.role]
        assert assignment.principal in permissions.PRINCIPALS
        assert assignment.reason and assignment.needed_by
    assert {a.role for a in permissions.assignments_for(permissions.FUNCTION)} >= {
        "Key Vault Reader", "Key Vault Secrets User", "Automation Job Operator",
        "Storage Queue Data Contributor", "Storage Table Data Contributor",
    }  # fmt: skip
    with pytest.raises(CertsyncError) as raised:
        permissions.role_definition_id("Owner")
    assert "\n" not in str(raised.value) and "Owner" in str(raised.value)
    with pytest.raises(CertsyncError):
        permissions.assignments_for("someone")


def test_the_bicep_assigns_exactly_the_roles_in_the_registry():
    grants = bicep_grants()
    assigned = {(g.role_definition_id, g.principal, g.scope) for g in grants}
    needed = {(a.role_definition_id, a.principal, a.scope) for a in permissions.ASSIGNMENTS}
    assert len(grants) == len(assigned), "a role is assigned twice"
    assert needed - assigned == set(), "roles the code needs but the Bicep does not assign"
    assert assigned - needed == set(), "role assignments in the Bicep that the registry does not explain"


def test_every_role_assignment_says_which_role_and_why():
    grants = {(g.file, g.symbol): g for g in bicep_grants()}
    for parsed in all_bicep():
        for assignment in parsed.resources_of("Microsoft.Authorization/roleAssignments"):
            grant = grants[(parsed.path.name, assignment.symbol)]
            comment = assignment.leading_comments()
            role = permissions.role_name(grant.role_definition_id)
            assert comment.startswith(f"{role} for"), f"{parsed.path.name}:{assignment.symbol}: {comment!r}"
            assert len(comment) > len(role) + 40, "the comment gives the reason"
            assert literal(assignment.body, "properties.description").startswith("certsync: ")


KEY_VAULT_DATA_ROLES = {"Key Vault Secrets User", "Key Vault Certificate User", "Key Vault Secrets Officer"}


def test_no_identity_can_read_every_secret_in_the_vault():
    # Least privilege (issue 20): on the vault itself only Key Vault Reader (list, public facts; no value);
    # every role that reads a secret's value is scoped to one secret.
    for grant in bicep_grants():
        role = permissions.role_name(grant.role_definition_id)
        if grant.scope == permissions.KEY_VAULT:
            assert role == "Key Vault Reader", f"{grant.file}:{grant.symbol}: {role} on the whole vault"
        if role in KEY_VAULT_DATA_ROLES:
            assert grant.scope == permissions.KEY_VAULT_SECRET, f"{grant.file}:{grant.symbol}"
    reader = [g for g in bicep_grants() if permissions.role_name(g.role_definition_id) == "Key Vault Reader"]
    assert [g.principal for g in reader] == [permissions.FUNCTION]  # workers never list the vault


def test_the_function_reads_only_the_secrets_of_watched_certificates_and_referenced_settings():
    access = bicep("modules/vault-access.bicep")
    assert access.params["watchedCertificates"] is True and access.params["functionSecretNames"] is True
    secrets = access.resource("functionSecret")
    assert secrets.existing and secrets.arm_type == permissions.KEY_VAULT_SECRET
    loop = secrets.declaration.named_children[-1]
    assert loop.type == "for_statement" and text(loop.named_children[1]) == "functionSecrets"
    assert text(access.variables["functionSecrets"]) == (
        "union(map(certificates, certificate => certificate.name), functionExtraSecrets)"
    )
    grant = access.resource("functionSecretsUser")
    assert text(lookup(grant.body, "scope")) == "functionSecret[i]"
    # main.bicep derives the referenced secrets from the notification and callback settings it references.
    main = bicep("main.bicep")
    referenced = text(main.variables["functionSecretNames"])
    for name in (
        "teamsWebhookSecretName",
        "slackWebhookSecretName",
        "webhookUrlSecretName",
        "webhookSigningSecretName",
    ):
        assert name in referenced
    assert "certsync-callback-secret" in referenced
    assert {"WATCHED_CERTIFICATES", "FUNCTION_SECRET_NAMES", "WORKER_SECRET_NAMES"} <= main.outputs


def test_each_worker_group_reads_only_its_own_certificates_secrets():
    # A job sent to a group runs on any of its workers: a grant per (certificate of the group, worker of the
    # group), none for another group's certificates, none until workers exist (an empty list).
    access = bicep("modules/vault-access.bicep")
    assert access.params["hybridWorkerPrincipalIds"] is True  # optional
    grants = text(access.variables["workerGrants"])
    assert "filter(workers, worker => worker.group == certificate.group)" in grants
    assert "{ secret: certificate.name, principalId: worker.principalId }" in grants
    for name in ("certificateEntries", "workerEntries"):
        assert "!empty(entry)" in text(access.variables[name]), name  # blanks never become grants
    workers = [r for r in access.resources_of("Microsoft.Authorization/roleAssignments") if "grant." in text(r.body)]
    assert [w.symbol for w in workers] == ["workerSecretsUser"]
    loop = workers[0].declaration.named_children[-1]
    assert loop.type == "for_statement" and text(loop.named_children[-2]) == "workerGrants"
    assert text(lookup(workers[0].body, "scope")) == "workerSecret[i]"
    assert text(lookup(access.resource("workerSecret").body, "name")) == "grant.secret"


def test_the_hooks_hand_the_watched_certificates_and_worker_groups_to_vault_access():
    for platform in ("posix", "windows"):
        hook = hook_scripts(platform)["postprovision"].read_text()
        for param in ("watchedCertificates", "hybridWorkerPrincipalIds", "defaultWorkerGroup", "functionSecretNames",
                      "workerSecretNames"):  # fmt: skip
            assert f"{param}=" in hook, (platform, param)
        # The roles grant nothing on an access-policy vault: the hook stops first (Key Vault RBAC).
        assert "properties.enableRbacAuthorization" in hook and "--enable-rbac-authorization true" in hook


def test_vault_roles_are_assigned_outside_main_bicep():
    # azd down deletes every resource group the main deployment put resources in; the vault's resource
    # group must never be one of them, so main.bicep only reads the vault (an `existing` reference).
    main = bicep("main.bicep")
    vault = main.resource("vault")
    assert vault.existing and vault.arm_type == "Microsoft.KeyVault/vaults"
    for module in main.modules:
        assert text(lookup(module.body, "scope")) == "rg", module.symbol
        assert module.path.name != "vault-access.bicep"
    assert [r for r in main.resources if not r.existing] == [main.resource("rg")]


def _role_names_in(text_: str) -> set[str]:
    # Built-in role names as the code's messages write them ("... Key Vault Secrets User role ...").
    pattern = (
        r"\b((?:Key Vault|Storage|Automation|Monitoring|Log Analytics)(?: [A-Z][a-z]+)*?"
        r" (?:User|Contributor|Owner|Operator|Reader|Officer|Publisher|Administrator))\b"
    )
    return set(re.findall(pattern, re.sub(r"\s+", " ", text_)))


def test_roles_named_in_the_codes_hints_are_in_the_registry():
    named: dict[str, set[str]] = {}
    for path in sorted((ROOT / "shared").rglob("*.py")):
        if path.name == "permissions.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for role in _role_names_in(node.value):
                    named.setdefault(role, set()).add(path.name)
    assert {"Key Vault Reader", "Key Vault Secrets User"} <= set(named), named  # the scan works
    unknown = {role: files for role, files in named.items() if role not in permissions.BUILT_IN_ROLES}
    assert unknown == {}, "roles named in hints but missing from shared/adapters/azure/permissions.py"


def test_the_role_name_pattern_finds_names_across_line_breaks():
    assert _role_names_in("needs the Key Vault Certificate User and Key\n    Vault Secrets User roles") == {
        "Key Vault Certificate User",
        "Key Vault Secrets User",
    }
    assert _role_names_in("check the Storage Queue Data Contributor role") == {"Storage Queue Data Contributor"}
    assert _role_names_in("the Automation account and the vault") == set()


# --- contract: Event Grid ------------------------------------------------------------------------------


def test_the_event_subscription_delivers_the_three_certificate_events_to_the_function():
    subscription = bicep("modules/event-subscription.bicep").resources_of(
        "Microsoft.EventGrid/systemTopics/eventSubscriptions"
    )[0]
    props = lookup(subscription.body, "properties")
    assert set(strings(lookup(props, "filter.includedEventTypes"))) == set(CERTIFICATE_EVENTS)
    assert len(strings(lookup(props, "filter.includedEventTypes"))) == 3
    assert literal(props, "eventDeliverySchema") == "EventGridSchema"
    assert literal(props, "retryPolicy.maxDeliveryAttempts") == 30
    assert literal(props, "retryPolicy.eventTimeToLiveInMinutes") == 1440
    assert literal(props, "destination.endpointType") == "AzureFunction"
    target = lookup(props, "destination.properties.resourceId")
    assert text(target.named_children[0].named_children[0]) == "functionAppId"
    function_name = text(target).split("/functions/")[1].rstrip("'")
    event_grid_functions = {
        f.get_function_name() for f in FUNCTIONS if f.get_trigger().get_binding_name() == "eventGridTrigger"
    }
    assert function_name in event_grid_functions
    dead_letter = lookup(props, "deadLetterWithResourceIdentity")
    assert literal(dead_letter, "identity.type") == "SystemAssigned"
    assert literal(dead_letter, "deadLetterDestination.endpointType") == "StorageBlob"


def test_the_system_topic_is_the_vaults_and_has_an_identity_for_dead_letters():
    module = bicep("modules/event-grid.bicep")
    [topic] = [m for m in module.modules if m.reference.startswith("br/public:avm/res/event-grid/system-topic:")]
    assert literal(topic.body, "params.topicType") == "Microsoft.KeyVault.vaults"
    assert text(lookup(topic.body, "params.source")) == "keyVaultId"
    assert text(lookup(topic.body, "params.location")) == "keyVaultLocation"
    assert literal(topic.body, "params.managedIdentities.systemAssigned") is True
    assert "output principalId string = systemTopic.outputs.systemAssignedMIPrincipalId ?? ''" in module.source
    # The identity that writes dead letters is the one granted on the dead-letter container.
    grant = next(g for g in bicep_grants() if g.principal == permissions.EVENT_GRID)
    assert grant.scope == "Microsoft.Storage/storageAccounts/blobServices/containers"


# --- contract: Automation and the runbook ---------------------------------------------------------------


def test_the_runbook_is_powershell_5_1_named_as_the_code_expects_and_its_content_exists():
    main = bicep("main.bicep")
    name = string_value(main.variables["runbookName"])
    from shared.remediation.context import DEFAULT_RUNBOOK

    assert name == DEFAULT_RUNBOOK
    runbook = bicep("modules/automation.bicep").resources_of("Microsoft.Automation/automationAccounts/runbooks")[0]
    assert literal(runbook.body, "properties.runbookType") == "PowerShell"
    assert (INFRA / "runbooks" / f"{name}.ps1").is_file(), "the runbook content the postprovision hook publishes"
    hook = (HOOKS / "postprovision.sh").read_text()
    assert 'runbook="$root/infra/runbooks/$AUTOMATION_RUNBOOK_NAME.ps1"' in hook
    assert "az automation runbook replace-content" in hook and "az automation runbook publish" in hook


def test_the_discovery_runbook_is_powershell_5_1_named_as_the_code_expects_and_published():
    main = bicep("main.bicep")
    name = string_value(main.variables["discoveryRunbookName"])
    from shared.remediation.discovery import DEFAULT_DISCOVERY_RUNBOOK
    from shared.settings import BY_NAME

    assert name == DEFAULT_DISCOVERY_RUNBOOK == BY_NAME["DISCOVERY_RUNBOOK"].default
    runbooks = bicep("modules/automation.bicep").resources_of("Microsoft.Automation/automationAccounts/runbooks")
    [discovery] = [r for r in runbooks if text(lookup(r.body, "name")) == "discoveryRunbookName"]
    assert literal(discovery.body, "properties.runbookType") == "PowerShell"
    assert (INFRA / "runbooks" / f"{name}.ps1").is_file()
    assert (
        "output AUTOMATION_DISCOVERY_RUNBOOK_NAME string = automation.outputs.discoveryRunbookName"
        in (INFRA / "main.bicep").read_text()
    )
    hook = (HOOKS / "postprovision.sh").read_text()
    assert 'discovery_file="$root/infra/runbooks/$discovery.ps1"' in hook
    assert hook.count("az automation runbook publish") == 2


def test_the_hybrid_worker_group_defaults_to_hrw_exchange():
    assert string_value(lookup_param_default("main.bicep", "hybridWorkerGroupName")) == "hrw-exchange"
    automation = bicep("modules/automation.bicep")
    group = automation.resources_of("Microsoft.Automation/automationAccounts/hybridRunbookWorkerGroups")[0]
    assert text(lookup(group.body, "name")) == "hybridWorkerGroupName"


def lookup_param_default(relative: str, name: str) -> tree_sitter.Node:
    for node in bicep(relative).tree.root_node.named_children:
        if node.type == "parameter_declaration" and text(node.named_children[0]) == name:
            return node.named_children[-1]
    raise AssertionError(f"{relative}: no param {name}")


# --- module wiring (what `bicep build` would catch) ----------------------------------------------------


def test_modules_exist_and_get_exactly_their_declared_params():
    for parsed in all_bicep():
        for module in parsed.modules:
            if module.registry:
                continue  # an Azure Verified Module: its params are checked by test_azure_verified_modules_*
            assert module.path.is_file(), module.path
            target = bicep(module.path.relative_to(INFRA).as_posix())
            given = set(properties(lookup(module.body, "params")))
            assert given - set(target.params) == set(), f"{module.symbol}: unknown params"
            required = {p for p, has_default in target.params.items() if not has_default}
            assert required - given == set(), f"{module.symbol}: required params not given"


def test_module_outputs_that_are_read_exist():
    main = bicep("main.bicep")
    modules = {m.symbol: bicep(m.path.relative_to(INFRA).as_posix()) for m in main.modules if not m.registry}
    source = re.sub(r"//[^\n]*", "", main.source)
    references = re.findall(r"\b(\w+)!?\.outputs\.(\w+)", source)
    assert references
    for symbol, output in references:
        assert output in modules[symbol].outputs, f"{symbol}.outputs.{output}"


def test_the_parameters_file_covers_main_bicep_with_azd_substitutions():
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    main = bicep("main.bicep")
    assert set(parameters) - set(main.params) == set(), "parameters main.bicep does not declare"
    required = {p for p, has_default in main.params.items() if not has_default}
    assert required - set(parameters) == set(), "required parameters azd would have to prompt for"
    assert parameters["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert parameters["location"]["value"] == "${AZURE_LOCATION}"
    for name, entry in parameters.items():
        assert re.fullmatch(r"\$\{[A-Z][A-Z0-9_]*(=[^}]*)?\}", entry["value"]), name


# --- azd: azure.yaml and the hooks ------------------------------------------------------------------


def hook_scripts(platform: str = "posix") -> dict[str, Path]:
    """Each azd hook's script: `posix` (sh) or `windows` (PowerShell)."""
    config = yaml.safe_load((ROOT / "azure.yaml").read_text())
    return {name: ROOT / hook[platform]["run"] for name, hook in config["hooks"].items()}


def test_azure_yaml_deploys_the_function_app_from_the_project_root():
    config = yaml.safe_load((ROOT / "azure.yaml").read_text())
    assert config["name"] == "certsync"
    assert config["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    assert config["services"] == {"api": {"project": ".", "language": "python", "host": "function"}}
    assert set(config["hooks"]) == {"postprovision", "postdeploy", "predown"}
    for name, hook in config["hooks"].items():
        assert set(hook) == {"posix", "windows"}, name  # every hook on both, so Windows admins can run azd
        assert hook["posix"]["shell"] == "sh" and hook["posix"]["continueOnError"] is False, name
        assert hook["windows"]["shell"] == "pwsh" and hook["windows"]["continueOnError"] is False, name
        assert hook["windows"]["run"] == hook["posix"]["run"].removesuffix(".sh") + ".ps1", name


@pytest.mark.parametrize("hook", ["postprovision", "postdeploy", "predown"])
def test_hook_scripts_exist_are_executable_and_parse(hook):
    path = hook_scripts()[hook]
    assert path.is_file() and os.access(path, os.X_OK), path
    # The real POSIX shell parses it (-n: read, do not execute); azure.yaml runs the hooks with `sh`.
    result = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "set -eu" in path.read_text()
    assert '. "$(dirname "$0")/common.sh"' in path.read_text(), "the shared require and root"


def test_the_hooks_shared_helper_parses():
    result = subprocess.run(["sh", "-n", str(HOOKS / "common.sh")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("hook", "missing", "via"),
    [
        ("postprovision", "AZURE_ENV_NAME", "azd provision or azd up"),
        ("postdeploy", "AZURE_ENV_NAME", "azd deploy or azd up"),
        ("predown", "AZURE_ENV_NAME", "azd down"),
        ("postdeploy", "SYSTEM_TOPIC_NAME", "azd deploy or azd up"),
    ],
)
def test_a_hook_run_outside_azd_names_the_missing_variable_and_exits_2(hook, missing, via, tmp_path):
    # Run for real with `sh`, with no Azure CLI on PATH: it must stop before calling one.
    env = {"PATH": "/usr/bin:/bin", "AZURE_ENV_NAME": "dev"}
    env.pop(missing, None)
    result = subprocess.run(
        ["sh", str(hook_scripts()[hook])], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == f"certsync {hook}: {missing} is not set; run this through azd ({via})\n"
    assert result.stdout == ""


def test_hooks_read_only_variables_main_bicep_outputs():
    outputs = bicep("main.bicep").outputs
    for hook, path in hook_scripts().items():
        script = path.read_text().replace("\\\n", " ")
        used = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]+)", script))
        for line in re.findall(r"^require (.+?)$", script, re.M):
            used |= set(re.findall(r"[A-Z][A-Z0-9_]+", line))
        assert used, hook
        assert used - outputs - AZD_HOOK_VARIABLES == set(), f"{hook} reads variables main.bicep does not output"


def test_hooks_deploy_the_standalone_modules_with_their_params():
    for hook, path in hook_scripts().items():
        script = path.read_text().replace("\\\n", " ")
        for command in re.findall(r"az stack group create .+", script):
            module = re.search(r'--template-file "\$root/infra/(modules/[\w-]+\.bicep)"', command)[1]
            target = bicep(module)
            given = set(re.findall(r"(\w+)=\"", command.split("--parameters", 1)[1].split("--", 1)[0]))
            required = {p for p, has_default in target.params.items() if not has_default}
            assert given <= set(target.params) and required <= given, (hook, module, given)
            assert "--action-on-unmanage deleteResources" in command and "--deny-settings-mode none" in command


def test_predown_deletes_both_stacks_the_other_hooks_create():
    created = set()
    for hook in ("postprovision", "postdeploy"):
        created |= set(re.findall(r'--name "(certsync-\$AZURE_ENV_NAME-[\w-]+)"', hook_scripts()[hook].read_text()))
    assert created == {"certsync-$AZURE_ENV_NAME-vault-access", "certsync-$AZURE_ENV_NAME-events"}
    predown = hook_scripts()["predown"].read_text()
    for stack in created:
        assert f'delete_stack "{stack}"' in predown


# --- docs -----------------------------------------------------------------------------------------------


def test_the_infra_readme_lists_every_role_assignment_and_says_nothing_was_deployed():
    readme = (INFRA / "README.md").read_text()
    for assignment in permissions.ASSIGNMENTS:
        assert assignment.role in readme and assignment.role_definition_id in readme, assignment.role
    assert "azd down --purge" in readme
    assert "nothing here has been deployed to azure" in readme.lower()


# --- Application Insights: Entra-only ingestion -----------------------------------------------------------


def test_application_insights_takes_entra_only_ingestion_with_the_functions_identity():
    monitoring = bicep("modules/monitoring.bicep")
    [component] = [m for m in monitoring.modules if m.reference.startswith("br/public:avm/res/insights/component:")]
    assert literal(component.body, "params.disableLocalAuth") is True
    # The identity that sends telemetry may publish it there, and the app says which identity that is.
    grant = next(
        g for g in bicep_grants() if permissions.role_name(g.role_definition_id) == "Monitoring Metrics Publisher"
    )
    assert (grant.principal, grant.scope) == (permissions.FUNCTION, "Microsoft.Insights/components")
    setting = text(app_settings()["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"])
    assert setting == "'ClientId=${identityClientId};Authorization=AAD'"
    # No instrumentation key anywhere: the connection string only locates the component.
    for parsed in all_bicep():
        assert "InstrumentationKey" not in re.sub(r"//[^\n]*", "", parsed.source), parsed.path


# --- azd hooks on Windows ----------------------------------------------------------------------------------

POWERSHELL = tree_sitter.Language(tree_sitter_powershell.language())


def powershell_errors(source: bytes) -> list[str]:
    tree = tree_sitter.Parser(POWERSHELL).parse(source)
    return syntax_errors(tree)


@pytest.mark.parametrize("path", sorted(HOOKS.glob("*.ps1")), ids=lambda p: p.name)
def test_every_powershell_hook_parses(path):
    # No pwsh here (spec: local-stack §5): the tree-sitter PowerShell grammar is the syntax gate.
    assert powershell_errors(path.read_bytes()) == [], path


def test_the_powershell_syntax_gate_flags_broken_scripts():
    assert powershell_errors(b"if ($x {\n  Write-Output 'a'\n") != []
    assert powershell_errors(b"function F {\n  param([string] $a\n}\n") != []


def test_every_sh_hook_has_a_powershell_twin_doing_the_same():
    # Same required variables, same deployment stacks and templates, same parameters, same az commands.
    assert {p.stem for p in HOOKS.glob("*.sh")} == {p.stem for p in HOOKS.glob("*.ps1")}
    for hook, sh_path in hook_scripts("posix").items():
        sh = sh_path.read_text().replace("\\\n", " ")
        ps = hook_scripts("windows")[hook].read_text().replace("`\n", " ")
        assert '. "$PSScriptRoot/common.ps1"' in ps, hook
        required_sh = {
            v for line in re.findall(r"^require (.+?)$", sh, re.M) for v in re.findall(r"[A-Z][A-Z0-9_]+", line)
        }
        required_ps = {
            v
            for call in re.findall(r"^Require '[^']+' @\((.*?)\)", ps, re.M | re.S)
            for v in re.findall(r"'([A-Z][A-Z0-9_]+)'", call)
        }
        assert required_sh and required_sh == required_ps, hook
        stacks_sh = {
            s.removeprefix("certsync-$AZURE_ENV_NAME") for s in re.findall(r"certsync-\$AZURE_ENV_NAME-[\w-]+", sh)
        }
        stacks_ps = {
            s.removeprefix("certsync-$env:AZURE_ENV_NAME")
            for s in re.findall(r"certsync-\$env:AZURE_ENV_NAME-[\w-]+", ps)
        }
        assert stacks_sh == stacks_ps, hook
        assert set(re.findall(r"infra/modules/[\w-]+\.bicep", sh)) == set(
            re.findall(r"infra/modules/[\w-]+\.bicep", ps)
        )
        stack_params_sh = set(re.findall(r"(\w+)=\"\$", " ".join(re.findall(r"--parameters (.+?) --", sh))))
        stack_params_ps = set(re.findall(r"\"(\w+)=\$", " ".join(re.findall(r"--parameters (.+?) --", ps))))
        assert stack_params_sh == stack_params_ps, hook
        commands = r"(?m)(?:^\s*|\$\(|\bif )az ((?:stack group|automation runbook|keyvault) \w+(?:-\w+)?)"
        ps_commands = r"(?:Invoke-Az|& az) ((?:stack group|automation runbook|keyvault) \w+(?:-\w+)?)"
        assert set(re.findall(commands, sh)) == set(re.findall(ps_commands, ps)) != set(), hook
        for line in re.findall(r"WriteLine\(\"certsync [^\"]+\"\)", ps):
            assert "\n" not in line
    common = (HOOKS / "common.ps1").read_text()
    assert "is not set; run this through azd ($Via)" in common and "exit 2" in common


def test_hooks_read_only_variables_main_bicep_outputs_on_windows_too():
    outputs = bicep("main.bicep").outputs
    for hook, path in hook_scripts("windows").items():
        script = path.read_text()
        used = set(re.findall(r"\$env:([A-Z][A-Z0-9_]+)", script)) | set(re.findall(r"'([A-Z][A-Z0-9_]{3,})'", script))
        assert used, hook
        assert used - outputs - AZD_HOOK_VARIABLES == set(), f"{hook} reads variables main.bicep does not output"


# --- Azure Verified Modules -----------------------------------------------------------------------------------

# Resource types with an Azure Verified Module (the AVM index, azure.github.io/Azure-Verified-Modules):
# a hand-written resource of one of these types must be listed in AVM_NOT_USED with the reason.
AVM_MODULES = {
    "Microsoft.OperationalInsights/workspaces": "avm/res/operational-insights/workspace",
    "Microsoft.Insights/components": "avm/res/insights/component",
    "Microsoft.ManagedIdentity/userAssignedIdentities": "avm/res/managed-identity/user-assigned-identity",
    "Microsoft.Storage/storageAccounts": "avm/res/storage/storage-account",
    "Microsoft.Web/sites": "avm/res/web/site",
    "Microsoft.Web/serverfarms": "avm/res/web/serverfarm",
    "Microsoft.Automation/automationAccounts": "avm/res/automation/automation-account",
    "Microsoft.EventGrid/systemTopics": "avm/res/event-grid/system-topic",
    "Microsoft.Insights/actionGroups": "avm/res/insights/action-group",
    "Microsoft.Insights/metricAlerts": "avm/res/insights/metric-alert",
    "Microsoft.Insights/scheduledQueryRules": "avm/res/insights/scheduled-query-rule",
    "Microsoft.Insights/workbooks": "avm/res/insights/workbook",
}
# file -> (types still hand-written there, why). Each is a contract the structure tests above read from the
# resource's own properties, or a shape no AVM module takes.
AVM_NOT_USED = {
    "modules/storage.bicep": (
        {"Microsoft.Storage/storageAccounts"},
        "the dead-letter role is scoped to one container resource, and the queue/table contract tests read"
        " the resources; the AVM module exposes neither as a symbol",
    ),
    "modules/function-app.bicep": (
        {"Microsoft.Web/sites", "Microsoft.Web/serverfarms"},
        "Flex Consumption functionAppConfig and the app settings contract are read from the site resource",
    ),
    "modules/automation.bicep": (
        {"Microsoft.Automation/automationAccounts"},
        "runbooks are declared without content (the hook publishes it), and the Job Operator role is"
        " checked on this account's symbol",
    ),
    "modules/alerts.bicep": (
        {
            "Microsoft.Insights/actionGroups",
            "Microsoft.Insights/metricAlerts",
            "Microsoft.Insights/scheduledQueryRules",
        },
        "each rule's query and threshold is checked by test_the_alerts_*",
    ),
    "modules/monitoring.bicep": ({"Microsoft.Insights/workbooks"}, "the workbook's serializedData is a checked file"),
}
AVM_REFERENCE = re.compile(r"^br/public:(avm/res/[a-z0-9-]+/[a-z0-9-]+):(\d+\.\d+\.\d+)$")


def test_azure_verified_modules_are_used_where_one_exists():
    hand_written: dict[str, set[str]] = {}
    for parsed in all_bicep():
        relative = parsed.path.relative_to(INFRA).as_posix()
        for resource in parsed.resources:
            if not resource.existing and resource.arm_type in AVM_MODULES:
                hand_written.setdefault(relative, set()).add(resource.arm_type)
    assert hand_written == {f: types for f, (types, _) in AVM_NOT_USED.items()}, "use the AVM module, or say why not"
    used = {m.reference for parsed in all_bicep() for m in parsed.modules if m.registry}
    assert {AVM_REFERENCE.match(r)[1] for r in used if AVM_REFERENCE.match(r)} >= {
        "avm/res/operational-insights/workspace",
        "avm/res/insights/component",
        "avm/res/managed-identity/user-assigned-identity",
        "avm/res/event-grid/system-topic",
    }


def test_azure_verified_modules_are_pinned_and_given_only_names_their_module_takes():
    # Pinned to an exact version (no `latest`, no range); each known module gets params it documents.
    documented = {
        "avm/res/operational-insights/workspace": {"name", "location", "tags", "dataRetention"},
        "avm/res/insights/component": {
            "name", "location", "tags", "kind", "applicationType", "workspaceResourceId", "disableLocalAuth",
        },
        "avm/res/managed-identity/user-assigned-identity": {"name", "location", "tags"},
        "avm/res/event-grid/system-topic": {"name", "location", "tags", "source", "topicType", "managedIdentities"},
    }  # fmt: skip
    outputs = {
        "avm/res/operational-insights/workspace": {"resourceId", "name"},
        "avm/res/insights/component": {"resourceId", "name", "connectionString"},
        "avm/res/managed-identity/user-assigned-identity": {"resourceId", "name", "clientId", "principalId"},
        "avm/res/event-grid/system-topic": {"resourceId", "name", "systemAssignedMIPrincipalId"},
    }
    for parsed in all_bicep():
        for module in (m for m in parsed.modules if m.registry):
            match = AVM_REFERENCE.match(module.reference)
            assert match, f"{parsed.path.name}:{module.symbol}: pin br/public:avm/res/<group>/<name>:<x.y.z>"
            assert set(properties(lookup(module.body, "params"))) <= documented[match[1]], module.symbol
            for read in re.findall(rf"\b{module.symbol}\.outputs\.(\w+)", parsed.source):
                assert read in outputs[match[1]], f"{module.symbol}.outputs.{read}"


# --- alerts and the workbook -----------------------------------------------------------------------------------


def alert_queries() -> dict[str, str]:
    alerts = bicep("modules/alerts.bicep")
    return {
        r.symbol: string_value(lookup(lookup(r.body, "properties.criteria.allOf").named_children[0], "query")) or ""
        for r in alerts.resources_of("Microsoft.Insights/scheduledQueryRules")
    }


def test_the_alerts_fire_on_dead_letters_poison_failed_jobs_and_a_missing_reconciliation():
    alerts = bicep("modules/alerts.bicep")
    [dead] = alerts.resources_of("Microsoft.Insights/metricAlerts")
    criterion = lookup(dead.body, "properties.criteria.allOf").named_children[0]
    assert literal(criterion, "metricName") == "DeadLetteredCount"
    assert literal(criterion, "metricNamespace") == "Microsoft.EventGrid/systemTopics"
    assert (literal(criterion, "operator"), literal(criterion, "threshold")) == ("GreaterThan", 0)
    assert text(lookup(dead.body, "properties.scopes").named_children[0]) == "systemTopicId"

    rules = {r.symbol: r for r in alerts.resources_of("Microsoft.Insights/scheduledQueryRules")}
    queries = alert_queries()
    assert set(rules) == {"poisonAlert", "jobFailedAlert", "reconciliationHeartbeatAlert"}
    assert '"-poison"' in queries["poisonAlert"] and '"job-poisoned"' in queries["poisonAlert"]
    assert '"JobLogs"' in queries["jobFailedAlert"] and '"Failed"' in queries["jobFailedAlert"]
    assert "ago(26h)" in queries["reconciliationHeartbeatAlert"]
    assert 'Properties["certsync.run_id"]' in queries["reconciliationHeartbeatAlert"]
    for symbol, rule in rules.items():
        criterion = lookup(rule.body, "properties.criteria.allOf").named_children[0]
        expected = ("LessThan", 1) if symbol == "reconciliationHeartbeatAlert" else ("GreaterThan", 0)
        assert (literal(criterion, "operator"), literal(criterion, "threshold")) == expected, symbol
        assert text(lookup(rule.body, "properties.actions.actionGroups")) == "actionGroups", symbol
        assert text(lookup(rule.body, "properties.scopes").named_children[0]) == "workspaceId", symbol
    assert "actionGroupId: id" in text(lookup(dead.body, "properties.actions"))
    main = bicep("main.bicep")
    assert "alerts" in {m.symbol for m in main.modules} and {"alertActionGroupIds", "alertEmail"} <= set(main.params)


def test_the_alerts_read_fields_the_code_writes():
    # The heartbeat's run id (functions/reconcile.py) and the audit dimensions (shared/adapters/azure/tables.py).
    from shared.pipeline.audit import KINDS

    assert '"certsync.run_id": report.run_id' in (ROOT / "functions" / "reconcile.py").read_text()
    written = set(re.findall(r'"(certsync\.audit\.\w+)"', (ROOT / "shared/adapters/azure/tables.py").read_text()))
    document = json.loads((INFRA / "workbooks" / "certsync-audit.json").read_text())
    workbook = [i["content"]["query"] for i in document["items"] if i["type"] == 3]
    for source in (*alert_queries().values(), *workbook):
        assert set(re.findall(r"certsync\.audit\.\w+", source)) <= written
        for kind in re.findall(r'"([a-z]+-[a-z-]+)"', source):
            if kind not in ("-poison",):
                assert kind in KINDS, kind


def test_the_workbook_has_a_timeline_failures_and_time_to_deploy():
    monitoring = bicep("modules/monitoring.bicep")
    [workbook] = monitoring.resources_of("Microsoft.Insights/workbooks")
    assert (
        text(lookup(workbook.body, "properties.serializedData"))
        == "loadTextContent('../workbooks/certsync-audit.json')"
    )
    document = json.loads((INFRA / "workbooks" / "certsync-audit.json").read_text())
    assert document["version"] == "Notebook/1.0"
    queries = {i["name"]: i["content"]["query"] for i in document["items"] if i["type"] == 3}
    assert set(queries) == {"timeline", "failures", "time-to-deploy"}
    assert "order by certificate asc, TimeGenerated asc" in queries["timeline"]
    assert '"{Certificate}"' in queries["timeline"]
    assert '"job-poisoned"' in queries["failures"] and 'status != "succeeded"' in queries["failures"]
    deploy = queries["time-to-deploy"]
    assert 'kind == "event-received"' in deploy and 'kind == "job-result" and status == "succeeded"' in deploy
    assert "datetime_diff" in deploy and "by certificate" in deploy
    for query in queries.values():
        assert query.startswith("AppTraces") and 'Properties["certsync.audit.kind"]' in query


# --- API versions (issue 18 item 10) --------------------------------------------------------------------------

# The oldest API version each resource type may use, and why. Key Vault: control-plane versions before
# 2026-02-01 retire on 27 February 2027, and 2026-02-01 makes RBAC the default
# (learn.microsoft.com/azure/key-vault/general/migrate-api-version). The others: the newest stable version
# in Microsoft's template reference (learn.microsoft.com/azure/templates/<type>) when this table was written
# (Dec 2026), or the oldest with a property we use.
MINIMUM_API_VERSIONS = {
    "Microsoft.KeyVault/vaults": "2026-02-01",  # retirement 2027-02-27; RBAC default
    "Microsoft.KeyVault/vaults/secrets": "2026-02-01",  # same provider, same retirement
    "Microsoft.Authorization/roleAssignments": "2022-04-01",  # newest stable
    "Microsoft.Resources/resourceGroups": "2024-03-01",
    "Microsoft.Storage/storageAccounts": "2025-01-01",
    "Microsoft.Storage/storageAccounts/blobServices": "2025-01-01",
    "Microsoft.Storage/storageAccounts/blobServices/containers": "2025-01-01",
    "Microsoft.Storage/storageAccounts/queueServices": "2025-01-01",
    "Microsoft.Storage/storageAccounts/queueServices/queues": "2025-01-01",
    "Microsoft.Storage/storageAccounts/tableServices": "2025-01-01",
    "Microsoft.Storage/storageAccounts/tableServices/tables": "2025-01-01",
    "Microsoft.Web/serverfarms": "2024-11-01",
    "Microsoft.Web/sites": "2024-11-01",  # functionAppConfig (Flex) since 2023-12-01
    "Microsoft.Web/sites/config": "2024-11-01",
    "Microsoft.EventGrid/systemTopics": "2025-02-15",
    "Microsoft.EventGrid/systemTopics/eventSubscriptions": "2025-02-15",  # deadLetterWithResourceIdentity
    "Microsoft.Automation/automationAccounts": "2024-10-23",
    "Microsoft.Automation/automationAccounts/runbooks": "2024-10-23",
    "Microsoft.Automation/automationAccounts/hybridRunbookWorkerGroups": "2024-10-23",
    "Microsoft.Automation/automationAccounts/variables": "2024-10-23",
    "Microsoft.Insights/components": "2020-02-02",  # newest stable
    "Microsoft.Insights/diagnosticSettings": "2021-05-01-preview",  # the only version with categories
    "Microsoft.Insights/actionGroups": "2023-01-01",
    "Microsoft.Insights/metricAlerts": "2018-03-01",  # newest stable
    "Microsoft.Insights/scheduledQueryRules": "2023-12-01",
    "Microsoft.Insights/workbooks": "2023-06-01",
}
# Automation jobs over ARM (shared/adapters/azure/automation.py): the same version as the Bicep's Automation
# resources, the newest stable one (the job contract of exchange-azure-facts §3.2 is unchanged).
MINIMUM_CODE_API_VERSIONS = {"automation jobs": "2024-10-23"}
# Key Vault's data plane is not retiring; the SDKs' default is at least the newest stable version (7.6).
MINIMUM_KEY_VAULT_DATA_PLANE = "7.6"


def bicep_api_versions() -> list[tuple[str, str, str]]:
    """(file:symbol, type, api version) of every resource declaration, `existing` ones included."""
    return [
        (f"{parsed.path.name}:{r.symbol}", r.arm_type, r.type.partition("@")[2])
        for parsed in all_bicep()
        for r in parsed.resources
    ]


def _version_key(version: str) -> tuple:
    date, _, preview = version.partition("-preview")
    return (date, preview == "" and "-preview" not in version)


def test_every_bicep_resource_uses_a_current_api_version():
    found = bicep_api_versions()
    assert len(found) > 30  # the scan sees the resources
    for where, arm_type, version in found:
        assert arm_type in MINIMUM_API_VERSIONS, f"{where}: {arm_type} has no minimum version in this table"
        minimum = MINIMUM_API_VERSIONS[arm_type]
        assert _version_key(version) >= _version_key(minimum), f"{where}: {arm_type}@{version} is older than {minimum}"
        if version.endswith("-preview"):
            assert version == minimum, f"{where}: a preview version only where no stable one has the feature"


def test_the_version_check_refuses_an_old_key_vault_version():
    assert _version_key("2023-07-01") < _version_key(MINIMUM_API_VERSIONS["Microsoft.KeyVault/vaults"])
    assert _version_key("2026-02-01") >= _version_key("2026-02-01")
    assert _version_key("2021-05-01-preview") < _version_key("2021-05-01")


def test_the_codes_api_versions_are_current():
    from azure.keyvault.certificates._shared.client_base import DEFAULT_VERSION as certificates_default
    from azure.keyvault.secrets._shared.client_base import DEFAULT_VERSION as secrets_default

    from shared.adapters.azure import automation

    assert MINIMUM_CODE_API_VERSIONS["automation jobs"] <= automation.API_VERSION
    for default in (certificates_default.value, secrets_default.value):
        # 7.x, or the newer date-shaped versions, which sort after every 7.x.
        assert default[0] == "2" or tuple(map(int, default.split("."))) >= (7, 6), default
    # The code leaves the data-plane version to the pinned SDK (no api_version= anywhere in shared/).
    for path in (ROOT / "shared").rglob("*.py"):
        assert "api_version=" not in path.read_text(), path
    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line)
    for package in ("azure-keyvault-certificates", "azure-keyvault-secrets"):
        assert tuple(map(int, pins[package].split("."))) >= (4, 12, 0), package


def test_azd_gives_doctor_deployment_the_settings_it_reads():
    # `azd env get-values` prints main.bicep's outputs (and what the admin set): the settings doctor
    # --deployment needs to find the deployment are among them, under the registry's names.
    outputs = bicep("main.bicep").outputs
    assert {
        "CERTSYNC_VAULTS",
        "AUTOMATION_ACCOUNT_ID",
        "CERTSYNC_EVENT_SUBSCRIPTION_ID",
        "HYBRID_WORKER_GROUP",
    } <= outputs
    assert {"JobsStorage__queueServiceUri", "JobsStorage__tableServiceUri"} <= outputs
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["watchedCertificates"]["value"] == "${CERTSYNC_WATCHED_CERTIFICATES=}"
    from shared.settings import BY_NAME

    assert {"KEY_VAULT_RESOURCE_GROUP", "FUNCTION_APP_ID"} <= outputs
    for name in (
        "CERTSYNC_WATCHED_CERTIFICATES",
        "CERTSYNC_EVENT_SUBSCRIPTION_ID",
        "HYBRID_WORKER_GROUP",
        "KEY_VAULT_RESOURCE_GROUP",
        "FUNCTION_APP_ID",
    ):
        assert BY_NAME[name].scope == "cli", name
    subscription = text(
        next(
            n
            for n in bicep("main.bicep").tree.root_node.named_children
            if n.type == "output_declaration" and text(n.named_children[0]) == "CERTSYNC_EVENT_SUBSCRIPTION_ID"
        )
    )
    name = string_value(lookup_param_default("modules/event-subscription.bicep", "name"))
    assert subscription.endswith(f"/eventSubscriptions/{name}'")
