"""The Azure Automation client (`shared.adapters.azure.automation`) against the loopback ARM (`tests.fakes.arm`), and
the fake's own contract checks, so that both can be trusted by the remediation tests."""

from __future__ import annotations

import email.utils
import http.client
import json
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.azure.automation import API_VERSION, ROLE_HINT, AutomationClient
from shared.errors import CertsyncError
from shared.remediation.automation import TERMINAL, AutomationError, AutomationJob, job_name
from shared.wiring import automation_from_env
from tests.fakes.arm import FakeArm
from tests.fakes.keyvault import StaticTokenCredential
from tests.servers import LoopbackTls

RUNBOOK = "Invoke-CertsyncRemediation"
GROUP = "hrw-exchange"
CERTSYNC_JOB = "5f2b8c1e9a7d4e3f8b6a1c2d3e4f5a6b"
NAME = job_name(CERTSYNC_JOB)
PARAMETERS = {
    "PlanBase64": "eyJzY2hlbWEiOiJjZXJ0c3luYy5wbGFuLzIifQ==",
    "CorrelationId": "corr-7d1f0c2b",
    "JobId": CERTSYNC_JOB,
    "CallbackUrl": "",
}


def client_for(arm: FakeArm, **options: Any) -> AutomationClient:
    return AutomationClient(arm.account_id, arm.credential, endpoint=arm.endpoint, **arm.client_kwargs, **options)


@pytest.fixture
def client(arm: FakeArm) -> AutomationClient:
    with client_for(arm) as made:
        yield made


def start(client: AutomationClient, name: str = NAME, **overrides: Any) -> AutomationJob:
    arguments = {"runbook": RUNBOOK, "parameters": PARAMETERS, "run_on": GROUP} | overrides
    return client.start_job(name, **arguments)


def poll_until_terminal(client: AutomationClient, name: str = NAME, limit: int = 10) -> list[str]:
    seen = []
    for _ in range(limit):
        job = client.get_job(name)
        seen.append(job.status)
        if job.terminal:
            return seen
    raise AssertionError(f"no terminal state after {limit} polls: {seen}")


def raw(
    arm: FakeArm,
    method: str,
    path: str,
    *,
    query: str = f"api-version={API_VERSION}",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    token: bool = True,
) -> tuple[int, dict[str, Any] | str]:
    """One request to the fake without our client, for its contract checks."""
    context = ssl.create_default_context(cafile=str(arm.tls.ca_pem))
    connection = http.client.HTTPSConnection("127.0.0.1", arm.port, context=context, timeout=10)
    sent = dict(headers or {})
    if token:
        sent["Authorization"] = f"Bearer {arm.credential.token}"
    if body is not None:
        sent.setdefault("Content-Type", "application/json")
    try:
        connection.request(method, f"{path}?{query}" if query else path, body=body, headers=sent)
        response = connection.getresponse()
        payload = response.read().decode()
    finally:
        connection.close()
    try:
        return response.status, json.loads(payload)
    except ValueError:
        return response.status, payload


def put_body(runbook: str = RUNBOOK, parameters: Any = None, run_on: Any = GROUP) -> bytes:
    properties = {"runbook": {"name": runbook}, "parameters": PARAMETERS if parameters is None else parameters}
    if run_on is not None:
        properties["runOn"] = run_on
    return json.dumps({"properties": properties}).encode()


# --- job names -----------------------------------------------------------------------------------


def test_job_name_is_the_certsync_job_id_as_a_guid() -> None:
    assert job_name(CERTSYNC_JOB) == "5f2b8c1e-9a7d-4e3f-8b6a-1c2d3e4f5a6b"
    assert job_name(CERTSYNC_JOB.upper()) == job_name(CERTSYNC_JOB)  # one Automation job whatever the case


@pytest.mark.parametrize("bad", ["", "5f2b8c1e", CERTSYNC_JOB + "00", "5f2b8c1e-9a7d-4e3f-8b6a-1c2d3e4f5a6b", "z" * 32])
def test_job_name_refuses_what_is_not_a_certsync_job_id(bad: str) -> None:
    with pytest.raises(CertsyncError, match="not a certsync job id"):
        job_name(bad)


# --- starting ------------------------------------------------------------------------------------


def test_start_job_puts_the_documented_request_once(arm: FakeArm, client: AutomationClient) -> None:
    job = start(client)

    assert job.created and job.status == "New" and job.name == NAME
    assert job.runbook == RUNBOOK and job.run_on == GROUP
    uuid.UUID(job.job_id)
    job_path = f"{arm.account_id}/jobs/{NAME}"
    assert [(method, path, query) for method, path, query, _ in arm.requests] == [
        ("GET", job_path, {"api-version": API_VERSION}),
        ("PUT", job_path, {"api-version": API_VERSION}),
    ]
    body = json.loads(arm.requests[1][3])
    # each value a JSON string literal: Automation decodes values as JSON (tests/test_parameter_transport.py)
    sent = {key: json.dumps(value) for key, value in PARAMETERS.items()}
    assert body == {"properties": {"runbook": {"name": RUNBOOK}, "parameters": sent, "runOn": GROUP}}
    put = arm.http_requests[1]
    assert put.headers["Content-Type"].startswith("application/json")
    request_ids = [request.headers["x-ms-client-request-id"] for request in arm.http_requests]
    assert len(set(request_ids)) == 2 and all(uuid.UUID(value) for value in request_ids)
    assert arm.jobs[NAME]["parameters"] == sent
    assert arm.jobs[NAME]["runOn"] == GROUP and arm.jobs[NAME]["runbook"] == RUNBOOK


def test_the_token_is_asked_for_the_endpoints_default_scope(arm: FakeArm, client: AutomationClient) -> None:
    client.get_job(start(client).name)
    assert {scopes for scopes, _ in arm.credential.calls} == {(f"{arm.endpoint}/.default",)}


def test_starting_again_returns_the_existing_job_without_a_second_put(arm: FakeArm, client: AutomationClient) -> None:
    first = start(client)
    again = start(client)

    assert not again.created and again.job_id == first.job_id
    assert [method for method, *_ in arm.requests] == ["GET", "PUT", "GET"]
    assert list(arm.jobs) == [NAME]


def test_a_create_race_ends_with_the_other_callers_job(arm: FakeArm, client: AutomationClient) -> None:
    winner = start(client_for(arm))
    # Our read happened before the other caller's PUT: it saw no job, so we PUT and get 409.
    arm.fail_next(404, method="GET", code="ResourceNotFound", message=f"The job '{NAME}' was not found.")

    job = start(client)

    assert not job.created and job.job_id == winner.job_id
    assert [method for method, *_ in arm.requests][-3:] == ["GET", "PUT", "GET"]
    assert len(arm.jobs) == 1


def test_a_404_for_the_account_stops_start_job_before_the_put(arm: FakeArm) -> None:
    other = arm.account_id.replace("aa-certsync", "aa-elsewhere")
    client = AutomationClient(other, arm.credential, endpoint=arm.endpoint, **arm.client_kwargs)
    with client, pytest.raises(AutomationError) as caught:
        start(client)
    assert caught.value.status == 404 and not caught.value.transient
    assert "AUTOMATION_ACCOUNT_ID" in str(caught.value) and "aa-elsewhere" in str(caught.value)
    assert [method for method, *_ in arm.requests] == ["GET"]
    assert arm.jobs == {}


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"parameters": {"PlanJson": {"not": "a string"}}}, "must all be strings"),
        ({"run_on": ""}, "worker_group"),
        ({"runbook": ""}, "AUTOMATION_RUNBOOK"),
    ],
)
def test_start_job_refuses_bad_input_without_calling_arm(
    arm: FakeArm, client: AutomationClient, overrides: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(AutomationError, match=fragment) as caught:
        start(client, **overrides)
    assert not caught.value.transient
    assert arm.requests == []


def test_job_names_are_checked_before_they_reach_a_url(arm: FakeArm, client: AutomationClient) -> None:
    with pytest.raises(AutomationError, match="not an Automation job name"):
        client.get_job("../../jobs")
    assert arm.requests == []


# --- tracking ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("states", "exception"),
    [
        (["New", "Activating", "Running", "Completed"], None),
        (["New", "Running", "Failed"], "Set-SendConnector : The operation couldn't be performed"),
        (["New", "Running", "Suspended"], "The job was evicted and subsequently reached a Suspended state"),
        (["New", "Running", "Stopped"], None),
    ],
)
def test_polling_follows_the_job_to_its_terminal_state(
    arm: FakeArm, client: AutomationClient, states: list[str], exception: str | None
) -> None:
    arm.script(states, exception=exception)
    start(client)

    assert poll_until_terminal(client) == states
    job = client.get_job(NAME)
    assert job.status == states[-1] and job.status in TERMINAL
    assert job.exception == exception
    assert job.start_time is not None and job.end_time is not None


def test_a_running_job_is_not_terminal_and_has_no_end_time(arm: FakeArm, client: AutomationClient) -> None:
    arm.script(["Running"])
    start(client)
    job = client.get_job(NAME)
    assert job.status == "Running" and not job.terminal
    assert job.start_time is not None and job.end_time is None


def test_stop_job_moves_a_running_job_to_stopped(arm: FakeArm, client: AutomationClient) -> None:
    arm.script(["New", "Running"])
    start(client)
    assert client.get_job(NAME).status == "New"

    client.stop_job(NAME)

    assert poll_until_terminal(client) == ["Stopping", "Stopped"]
    assert ("POST", f"{arm.account_id}/jobs/{NAME}/stop") in [(m, p) for m, p, *_ in arm.requests]


def test_output_is_the_output_stream_text(arm: FakeArm, client: AutomationClient) -> None:
    result = json.dumps({"schema": "certsync.result/1", "job_id": CERTSYNC_JOB, "status": "succeeded"})
    arm.script(["Completed"], output=f"Importing certificate on EX01\n{result}\n")
    start(client)

    text = client.output(NAME)

    assert text.splitlines()[-1] == result
    assert arm.http_requests[-1].headers["Accept"] == "text/plain"


def test_error_streams_reads_every_page_and_each_full_record(arm: FakeArm, client: AutomationClient) -> None:
    errors = [
        f"Error {n}: Set-ReceiveConnector failed on EX0{n} because the certificate is not valid" for n in range(5)
    ]
    arm.script(["Failed"], output="a line of output\nanother line\n", error_streams=errors, exception="failed")
    start(client)

    assert client.error_streams(NAME) == errors

    lists = [query for method, path, query, _ in arm.requests if path.endswith("/streams")]
    assert len(lists) == 3  # 5 records, 2 a page
    assert all(query["$filter"] == "properties/streamType eq 'Error'" for query in lists)
    assert [query.get("$skipToken") for query in lists] == [None, "2", "4"]
    records = [path for _, path, _, _ in arm.requests if "/streams/" in path]
    assert len(records) == 5  # the list only had summaries (40 characters), each record was read


def test_error_streams_of_a_clean_job_are_empty(arm: FakeArm, client: AutomationClient) -> None:
    arm.script(["Completed"], output="done\n")
    start(client)
    assert client.error_streams(NAME) == []


# --- failures ------------------------------------------------------------------------------------


def test_throttling_is_transient_with_the_servers_retry_after(arm: FakeArm, client: AutomationClient) -> None:
    arm.fail_next(429, retry_after=17)
    with pytest.raises(AutomationError) as caught:
        start(client)
    error = caught.value
    assert error.transient and error.status == 429 and error.code == "TooManyRequests"
    assert error.retry_after == 17
    assert "will retry after 17s" in str(error)
    assert len(arm.requests) == 1  # no retries inside the client
    assert arm.jobs == {}


def test_retry_after_as_an_http_date(arm: FakeArm, client: AutomationClient) -> None:
    later = email.utils.formatdate(time.time() + 3600, usegmt=True)
    arm.fail_next(503, retry_after=later)
    with pytest.raises(AutomationError) as caught:
        client.get_job(NAME)
    assert caught.value.transient and caught.value.status == 503
    assert caught.value.retry_after is not None and 3000 < caught.value.retry_after <= 3600


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_transient(arm: FakeArm, client: AutomationClient, status: int) -> None:
    arm.fail_next(status, method="PUT")
    with pytest.raises(AutomationError) as caught:
        start(client)
    assert caught.value.transient and caught.value.status == status and caught.value.retry_after is None
    assert [method for method, *_ in arm.requests] == ["GET", "PUT"]
    assert arm.jobs == {}
    assert start(client).created  # the next attempt goes through


def test_forbidden_is_permanent_and_names_the_role(arm: FakeArm, client: AutomationClient) -> None:
    arm.fail_next(403, method="PUT")
    with pytest.raises(AutomationError) as caught:
        start(client)
    error = caught.value
    assert not error.transient and error.status == 403 and error.code == "AuthorizationFailed"
    assert ROLE_HINT in str(error) and "Automation Job Operator" in str(error)


def test_an_unknown_runbook_is_permanent_and_says_publish_it(arm: FakeArm, client: AutomationClient) -> None:
    with pytest.raises(AutomationError) as caught:
        start(client, runbook="Invoke-Missing")
    assert not caught.value.transient and caught.value.status == 404
    assert "publish runbook Invoke-Missing in Automation account aa-certsync" in str(caught.value)


def test_an_unknown_worker_group_is_permanent_and_says_create_it(arm: FakeArm, client: AutomationClient) -> None:
    with pytest.raises(AutomationError) as caught:
        start(client, run_on="hrw-missing")
    assert not caught.value.transient and caught.value.status == 400
    assert "create hybrid worker group hrw-missing or fix worker_group in the targets" in str(caught.value)


def test_a_missing_job_is_permanent(client: AutomationClient) -> None:
    with pytest.raises(AutomationError) as caught:
        client.get_job(NAME)
    assert caught.value.status == 404 and not caught.value.transient
    assert NAME in str(caught.value)


def test_a_token_arm_does_not_accept_is_401_and_permanent(arm: FakeArm) -> None:
    wrong = StaticTokenCredential("not-the-fakes-token")
    client = AutomationClient(arm.account_id, wrong, endpoint=arm.endpoint, **arm.client_kwargs)
    with client, pytest.raises(AutomationError) as caught:
        client.get_job(NAME)
    assert caught.value.status == 401 and not caught.value.transient
    assert "AZURE_CLIENT_ID" in str(caught.value)
    assert "not-the-fakes-token" not in str(caught.value)


def test_an_endpoint_that_is_down_is_transient(keyvault_tls: LoopbackTls) -> None:
    with FakeArm(keyvault_tls) as arm:
        client = client_for(arm)
    with client, pytest.raises(AutomationError) as caught:
        client.get_job(NAME)
    assert caught.value.transient and caught.value.status is None and caught.value.code == "ConnectionError"
    assert "Connection refused" in str(caught.value)


def test_an_untrusted_certificate_is_a_connection_error(arm: FakeArm) -> None:
    client = AutomationClient(arm.account_id, arm.credential, endpoint=arm.endpoint)  # no test CA
    with client, pytest.raises(AutomationError) as caught:
        client.get_job(NAME)
    assert caught.value.code == "ConnectionError" and "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert arm.requests == []  # the token never left the client


def test_no_answer_in_time_is_transient(arm: FakeArm) -> None:
    arm.delay_next(30)
    with client_for(arm, timeout=0.5) as client, pytest.raises(AutomationError) as caught:
        client.get_job(NAME)
    assert caught.value.transient and caught.value.code == "Timeout"


def test_errors_never_carry_the_token_or_the_parameters(arm: FakeArm, client: AutomationClient) -> None:
    plan = PARAMETERS["PlanBase64"]
    # An ARM message that echoes the input must not carry it into our message.
    arm.fail_next(400, method="PUT", code="BadRequest", message=f"Invalid parameter value {plan} for PlanBase64.")
    arm.fail_next(403, method="PUT")
    arm.fail_next(429, method="PUT", retry_after=1)
    messages = []
    for _ in range(3):
        with pytest.raises(AutomationError) as caught:
            start(client)
        messages.append(str(caught.value))
    for message in messages:
        assert arm.credential.token not in message
        assert plan not in message and PARAMETERS["CorrelationId"] not in message
        assert "\n" not in message
    assert "<parameter>" in messages[0]


# --- settings ------------------------------------------------------------------------------------


def test_automation_from_env_talks_to_the_configured_account(arm: FakeArm) -> None:
    with automation_from_env(arm.env, arm.credential, **arm.client_kwargs) as client:
        assert start(client).created
    assert client.endpoint == arm.endpoint and client.account_id == arm.account_id


@pytest.mark.parametrize(
    "value",
    [
        "",
        "aa-certsync",
        "/subscriptions/not-a-guid/resourceGroups/rg/providers/Microsoft.Automation/automationAccounts/aa-certsync",
        "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Web/sites/app1",
        "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Automation/"
        "automationAccounts/aa-certsync/jobs/x",
    ],
)
def test_automation_from_env_names_a_bad_account_setting(value: str) -> None:
    with pytest.raises(CertsyncError, match="AUTOMATION_ACCOUNT_ID") as caught:
        automation_from_env({"AUTOMATION_ACCOUNT_ID": value}, StaticTokenCredential("t"))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("endpoint", ["http://management.azure.com", "https://management.azure.com/some/path", "nope"])
def test_automation_from_env_names_a_bad_endpoint_setting(arm: FakeArm, endpoint: str) -> None:
    settings = {"AUTOMATION_ACCOUNT_ID": arm.account_id, "CERTSYNC_ARM_ENDPOINT": endpoint}
    with pytest.raises(CertsyncError, match="CERTSYNC_ARM_ENDPOINT"):
        automation_from_env(settings, StaticTokenCredential("t"))


def test_the_endpoint_defaults_to_public_azure_and_sets_the_token_scope(arm: FakeArm) -> None:
    client = automation_from_env({"AUTOMATION_ACCOUNT_ID": arm.account_id}, StaticTokenCredential("t"))
    with client:
        assert client.endpoint == "https://management.azure.com"
        assert client.scope == "https://management.azure.com/.default"


def test_importing_the_module_does_not_import_azure() -> None:
    code = (
        "import sys, shared.adapters.azure.automation; print(sorted(m for m in sys.modules if m.startswith('azure')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent
    )
    assert result.stdout.strip() == "[]"


# --- the fake's own contract checks ----------------------------------------------------------------


def test_fake_refuses_a_request_without_a_token(arm: FakeArm) -> None:
    status, body = raw(arm, "GET", f"{arm.account_id}/jobs/{NAME}", token=False)
    assert status == 401 and body["error"]["code"] == "AuthenticationFailed"


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("api-version=2019-06-01", "NoRegisteredProviderFound"),
        ("api-version=latest", "InvalidApiVersionParameter"),
        ("", "MissingApiVersionParameter"),
    ],
)
def test_fake_checks_the_api_version(arm: FakeArm, query: str, code: str) -> None:
    status, body = raw(arm, "PUT", f"{arm.account_id}/jobs/{NAME}", query=query, body=put_body())
    assert status == 400 and body["error"]["code"] == code
    assert arm.jobs == {}


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (put_body(runbook="Invoke-Other"), 404, "Runbook not found"),
        (put_body(parameters={"PlanJson": {"a": 1}}), 400, "string values"),
        (put_body(parameters=["PlanJson"]), 400, "string values"),
        (put_body(run_on="hrw-other"), 400, "hrw-other"),
        (b"not json", 400, "could not be deserialized"),
        (b'{"runbook": {"name": "Invoke-CertsyncRemediation"}}', 400, "properties"),
    ],
)
def test_fake_checks_the_create_body(arm: FakeArm, body: bytes, status: int, fragment: str) -> None:
    answer, document = raw(arm, "PUT", f"{arm.account_id}/jobs/{NAME}", body=body)
    assert answer == status and fragment in document["error"]["message"]
    assert arm.jobs == {}


def test_fake_wants_json_content(arm: FakeArm) -> None:
    status, body = raw(
        arm, "PUT", f"{arm.account_id}/jobs/{NAME}", body=put_body(), headers={"Content-Type": "text/plain"}
    )
    assert status == 415 and body["error"]["code"] == "UnsupportedMediaType"


def test_fake_creates_the_documented_resource_and_refuses_a_second_put(arm: FakeArm) -> None:
    status, resource = raw(arm, "PUT", f"{arm.account_id}/jobs/{NAME}", body=put_body())
    assert status == 201
    assert resource["id"] == f"{arm.account_id}/jobs/{NAME}" and resource["name"] == NAME
    assert resource["type"] == "Microsoft.Automation/AutomationAccounts/Jobs"
    properties = resource["properties"]
    assert properties["status"] == "New" and properties["provisioningState"] == "Processing"
    assert properties["runOn"] == GROUP and properties["runbook"] == {"name": RUNBOOK}
    assert properties["parameters"] == PARAMETERS and properties["startTime"] is None
    uuid.UUID(properties["jobId"])

    again, conflict = raw(arm, "PUT", f"{arm.account_id}/jobs/{NAME}", body=put_body())
    assert again == 409 and conflict["error"]["code"] == "Conflict"
    assert list(arm.jobs) == [NAME]


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/subscriptions/00000000-0000-0000-0000-0000000000ff/resourceGroups/rg-certsync", "SubscriptionNotFound"),
        (
            "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-other/providers/"
            "Microsoft.Automation/automationAccounts/aa-certsync/jobs/x",
            "ResourceGroupNotFound",
        ),
        ("{account}/jobs/" + NAME + "/nonsense", "ResourceNotFound"),
        ("{account}/runbooks/" + RUNBOOK, "ResourceNotFound"),
        ("{account}/jobs/" + NAME, "ResourceNotFound"),  # no such job yet
    ],
)
def test_fake_answers_unknown_paths_like_arm(arm: FakeArm, path: str, code: str) -> None:
    status, body = raw(arm, "GET", path.format(account=arm.account_id))
    assert status == 404 and body["error"]["code"] == code


def test_fake_paths_are_case_insensitive_up_to_the_account(arm: FakeArm, client: AutomationClient) -> None:
    start(client)
    status, body = raw(arm, "GET", f"{arm.account_id.lower()}/jobs/{NAME}")
    assert status == 200 and body["name"] == NAME
