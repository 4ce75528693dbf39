"""The Functions app as the host sees it: its bindings, its settings files, and the HTTP function."""

import ast
import json
import re
from pathlib import Path

import azure.functions as func
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

import function_app
from shared.x509.containers import load_certificates
from shared.x509.reports import name_report
from tests.chains import issue

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "fixtures" / "tls-certificate-name"


# The host indexes the app once; get_functions() is not idempotent (a second call reports every
# function as a duplicate), so the tests index it once too.
FUNCTIONS = function_app.app.get_functions()


def functions_by_name():
    return {f.get_function_name(): f for f in FUNCTIONS}


def test_app_registers_the_expected_functions_with_unique_names():
    assert set(functions_by_name()) == {
        "tls_certificate_name",
        "keyvault_certificate_events",
        "certificate_history",
        "start_remediation_job",
        "track_remediation_job",
        "remediation_result",
        "reconcile_daily",
        "status_page",
        "start_discovery",
        "retry_version",
        "approve_version",
        "retry_due_versions",
    }


def test_name_function_binding_is_a_function_key_post_route():
    bindings = json.loads(functions_by_name()["tls_certificate_name"].get_function_json())["bindings"]
    trigger = next(b for b in bindings if b["direction"] == "IN")
    assert trigger == {
        "direction": "IN",
        "type": "httpTrigger",
        "name": "req",
        "methods": ["POST"],
        "authLevel": "FUNCTION",
        "route": "tls-certificate-name",
    }


def test_function_app_module_only_creates_the_app_and_registers_blueprints():
    tree = ast.parse((ROOT / "function_app.py").read_text())
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["app"]:
            continue
        assert isinstance(node, ast.Expr), ast.dump(node)
        call = node.value
        assert isinstance(call, ast.Call) and call.func.attr in {"register_functions", "register_blueprint"}


def test_host_json_pins_the_extension_bundle_and_opentelemetry():
    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"] == {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"}
    assert host["telemetryMode"] == "OpenTelemetry"


def test_local_settings_example_defines_every_connection_the_bindings_use():
    values = json.loads((ROOT / "local.settings.json.example").read_text())["Values"]
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    for function in FUNCTIONS:
        for binding in json.loads(function.get_function_json())["bindings"]:
            if "connection" in binding:
                assert binding["connection"] in values, (function.get_function_name(), binding)
            for placeholder in re.findall(r"%(\w+)%", json.dumps(binding)):
                assert placeholder in values, (function.get_function_name(), placeholder)


def test_requirements_are_pinned_and_cryptography_is_at_least_50():
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"not pinned: {line}"
            pins[name.lower()] = version
    assert int(pins["cryptography"].split(".")[0]) >= 50
    assert "azure-functions" in pins and "azure-functions-worker" not in pins


def call(body: bytes) -> func.HttpResponse:
    request = func.HttpRequest("POST", "/api/tls-certificate-name", headers={}, params={}, body=body)
    return functions_by_name()["tls_certificate_name"].get_user_function()(request)


def test_posting_a_pem_returns_the_same_report_as_the_cli():
    pem = (VECTORS / "godaddy_g2_dv.pem").read_bytes()
    response = call(pem)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = json.loads(response.get_body())
    assert body == name_report(load_certificates(pem))
    assert body["tls_certificate_name"].startswith("<I>CN=Go Daddy Secure Certificate Authority - G2, OU=")


def test_posting_der_works_too():
    pem = (VECTORS / "letsencrypt_r11.pem").read_bytes()
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    response = call(der)
    assert response.status_code == 200
    assert json.loads(response.get_body())["subject"] == "CN=mail.contoso.com"


def test_posting_a_pfx_is_refused_without_opening_it():
    leaf = issue("mail.contoso.com")
    pfx = pkcs12.serialize_key_and_certificates(b"x", leaf.key, leaf.cert, None, serialization.NoEncryption())
    response = call(pfx)
    assert response.status_code == 400
    error = json.loads(response.get_body())["error"]
    assert "PKCS#12" in error and "public certificate" in error and "\n" not in error


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"", 400, "is empty"),
        (b"hello, not a certificate", 400, "is not a certificate"),
        (b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", 400, "no certificate"),
        (b"0" * (1024 * 1024 + 1), 413, "larger than 1 MiB"),
    ],
)
def test_bad_bodies_get_a_one_line_error(body, status, words):
    response = call(body)
    assert response.status_code == status
    error = json.loads(response.get_body())["error"]
    assert words in error and error.startswith("request body") and "\n" not in error


def test_the_event_grid_trigger_takes_key_vault_events():
    function = functions_by_name()["keyvault_certificate_events"]
    bindings = json.loads(function.get_function_json())["bindings"]
    assert bindings == [{"direction": "IN", "type": "eventGridTrigger", "name": "event"}]
    assert function.get_settings_dict("retry_policy") is None  # Event Grid retries; a host retry would not


def test_the_history_function_is_a_function_key_get_route():
    bindings = json.loads(functions_by_name()["certificate_history"].get_function_json())["bindings"]
    trigger = next(b for b in bindings if b["direction"] == "IN")
    assert trigger == {
        "direction": "IN",
        "type": "httpTrigger",
        "name": "req",
        "methods": ["GET"],
        "authLevel": "FUNCTION",
        "route": "certificates/{name}/history",
    }
