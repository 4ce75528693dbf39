"""The plan reaches the runbook intact: the exact Jobs - Create body the Automation adapter sends, through a
model of Automation's parameter decoding (`tests.automation_params`), gives the runbook's [string]
parameters the plan certsync queued (issue 16, "Parameter transport")."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from shared.adapters.azure.automation import AutomationClient
from shared.errors import CertsyncError
from shared.pipeline.contract import JOB_PARAMETERS
from shared.pipeline.jobs import RemediationRequest
from shared.remediation.automation import job_name
from shared.remediation.messages import (
    MAX_PARAMETERS_BYTES,
    check_no_secrets,
    job_parameters,
    plan_base64,
    plan_from_base64,
)
from tests.automation_params import ConversionError, decode, string_parameters
from tests.fakes.arm import FakeArm

GROUP = "hrw-exchange"


def request(plan: dict[str, Any], correlation: str = "c0ffee") -> RemediationRequest:
    return RemediationRequest(
        "contoso-kv",
        "exch-hybrid-smtp",
        "v2",
        "https://contoso-kv.vault.azure.net/secrets/x/v2",
        "AB",
        correlation,
        plan,
    )


PLAN = {
    "schema": "certsync.plan/2",
    "worker_group": GROUP,
    "certificate": {
        "thumbprint": "AB" * 20,
        "tls_certificate_name": '<I>CN=R11, O="Contoso, Ltd."<S>CN=mail.contoso.com',
    },
    "servers": ["EX01"],
    "steps": [
        {
            "phase": "switch",
            "action": "set-send-connector",
            "server": None,
            "object": "Outbound to Office 365 – Zürich",  # non-ASCII, an en dash
            "property": "TlsCertificateName",
            "previous": "<I>CN=R10<S>CN=mail.contoso.com",
            "value": '<I>CN=R11, O="Contoso, Ltd."<S>CN=mail.contoso.com',
            "manual": False,
        }
    ],
    "warnings": ['a \\ backslash and a "quote"'],
}


def sent_body(arm: FakeArm, parameters: dict[str, str]) -> dict[str, Any]:
    """Start the job with the real adapter; the PUT body exactly as ARM received it."""
    with AutomationClient(arm.account_id, arm.credential, endpoint=arm.endpoint, **arm.client_kwargs) as client:
        client.start_job(job_name("5f2b8c1e9a7d4e3f8b6a1c2d3e4f5a6b"), "Invoke-CertsyncRemediation", parameters, GROUP)
    [body] = [body for method, _, _, body in arm.requests if method == "PUT"]
    return json.loads(body)


def test_the_runbook_receives_the_plan_queued_through_automations_decoding(arm: FakeArm) -> None:
    job = request(PLAN, correlation="12345678901234567890")  # all digits: JSON would make it a number
    parameters = job_parameters(job, "https://certsync.azurewebsites.net")
    assert tuple(parameters) == JOB_PARAMETERS

    received = string_parameters(sent_body(arm, parameters))

    assert received == parameters
    assert plan_from_base64(received["PlanBase64"]) == PLAN
    assert received["CorrelationId"] == "12345678901234567890"


def test_plan_json_as_a_parameter_would_reach_the_runbook_as_an_object() -> None:
    # The old transport: the plan's JSON text as a value. Automation decodes it, and [string] gets no plan.
    old = {"properties": {"parameters": {"PlanJson": json.dumps(PLAN)}}}
    assert string_parameters(old)["PlanJson"] == "System.Collections.Hashtable"
    with pytest.raises(ConversionError, match="Conversion from JSON failed"):
        decode("eyJzY2hlbWEiOiJjZXJ0c3luYy5wbGFuLzIifQ==")  # a bare value that is not JSON


def test_plan_base64_is_the_canonical_utf8_json_text() -> None:
    text = base64.b64decode(plan_base64(PLAN)).decode("utf-8")
    assert text == json.dumps(PLAN, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert "Zürich" in text


@pytest.mark.parametrize(
    "value", ["not base64!", base64.b64encode(b"[1, 2]").decode(), base64.b64encode(b"\xff").decode()]
)
def test_a_plan_base64_that_is_not_a_plan_is_refused(value: str) -> None:
    with pytest.raises(CertsyncError, match="PlanBase64"):
        plan_from_base64(value)


def test_a_plan_too_large_for_an_automation_job_is_refused_in_one_line() -> None:
    steps = [dict(PLAN["steps"][0], object=f"connector {i:05d}") for i in range(4000)]
    job = request(dict(PLAN, steps=steps))
    with pytest.raises(CertsyncError) as raised:
        job_parameters(job)
    message = str(raised.value)
    assert "\n" not in message and f"more than the {MAX_PARAMETERS_BYTES}" in message and "exch-hybrid-smtp" in message


def test_a_secret_hidden_in_the_base64_plan_is_still_refused() -> None:
    job = request(dict(PLAN, notes="-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----"))
    with pytest.raises(CertsyncError, match="PlanBase64 would carry a private key"):
        check_no_secrets(job_parameters(job))
