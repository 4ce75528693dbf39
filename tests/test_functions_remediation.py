"""The remediation functions as the host calls them: their bindings, queue messages received from Azurite
and handed over as the host does (base64 decoded), the HTTPS fake ARM behind the Automation client, and the
result callback as an `HttpRequest` carrying the function key."""

from __future__ import annotations

import json
import logging
import secrets
import socket
import uuid

import azure.functions as func
import pytest

import shared.wiring
from functions.remediation import remediation_result, start_remediation_job, track_remediation_job
from shared.adapters.azure.queues import StorageMessageQueue
from shared.errors import StorageError
from shared.notify.signing import parse_secrets, sign
from tests.test_function_app import FUNCTIONS
from tests.test_remediation import NAME, Setup, make_job, make_setup, output_for, result_for

FUNCTION_KEY = secrets.token_urlsafe(30)


def bindings(name: str) -> list[dict]:
    [function] = [f for f in FUNCTIONS if f.get_function_name() == name]
    return json.loads(function.get_function_json())["bindings"]


def test_the_queue_functions_are_triggered_by_the_jobs_and_tracking_queues():
    for name, queue in (("start_remediation_job", "REMEDIATION_QUEUE"), ("track_remediation_job", "TRACKING_QUEUE")):
        assert bindings(name) == [
            {
                "direction": "IN",
                "type": "queueTrigger",
                "name": "msg",
                "queueName": f"%{queue}%",
                "connection": "JobsStorage",
            }
        ]


def test_the_result_callback_is_a_function_key_post_route():
    trigger = next(b for b in bindings("remediation_result") if b["direction"] == "IN")
    assert trigger == {
        "direction": "IN",
        "type": "httpTrigger",
        "name": "req",
        "methods": ["POST"],
        "authLevel": "FUNCTION",
        "route": "jobs/{job_id}/result",
    }


@pytest.fixture
def deployment(azurite, arm, monkeypatch) -> Setup:
    setup = make_setup(azurite, arm).fast()
    monkeypatch.setattr(shared.wiring, "azure_remediation", lambda: setup.remediation)
    return setup


def deliver(setup: Setup, queue: str, function) -> int:
    """Hand every visible message of `queue` to `function` as the host does; how many there were."""
    delivered = 0
    for _ in range(20):
        texts = setup.take(queue)
        if not texts:
            return delivered
        for text in texts:
            function(func.QueueMessage(id=str(uuid.uuid4()), body=text.encode()))
            delivered += 1
    raise AssertionError(f"{queue} never drained")


def post(job_id: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    request = func.HttpRequest(
        "POST",
        f"/api/jobs/{job_id}/result",
        headers={"x-functions-key": FUNCTION_KEY, "content-type": "application/json", **headers},
        params={},
        route_params={"job_id": job_id},
        body=body,
    )
    response = remediation_result(request)
    assert response.mimetype == "application/json"
    return response.status_code, json.loads(response.get_body())


def test_a_queued_job_runs_through_the_functions_and_the_callback_is_idempotent(deployment, caplog):
    job = make_job()
    deployment.arm.script(["New", "Running", "Completed"], output=output_for(job))
    StorageMessageQueue(shared.wiring.storage_from_env(deployment.env).queue_client(deployment.jobs_queue)).send(
        job.to_json()
    )

    with caplog.at_level(logging.INFO):
        assert deliver(deployment, deployment.jobs_queue, start_remediation_job) == 1
        assert deliver(deployment, deployment.tracking_queue, track_remediation_job) == 3
        body = json.dumps(result_for(job)).encode()
        signed = sign(parse_secrets(deployment.secret, "t"), f"{job.job_id}-result", body)
        status, answer = post(job.job_id, body, {**signed, "Authorization": f"Bearer {FUNCTION_KEY}"})

    assert len(deployment.arm.jobs) == 1
    assert deployment.kinds() == ["job-started", "job-status", "job-result"]
    assert (status, answer) == (200, {"accepted": True, "recorded": False})  # the poll recorded it first
    assert [e.details["via"] for e in deployment.entries("job-result")] == ["poll"]
    rows = json.dumps([e.to_dict() for e in deployment.history()])
    for secret in (FUNCTION_KEY, deployment.secret):
        assert secret not in caplog.text and secret not in rows
    assert any("job message" in r.getMessage() and "started" in r.getMessage() for r in caplog.records)


def test_the_callback_function_refuses_a_bad_signature_with_401(deployment, caplog):
    job = make_job()
    deployment.remediation.start(job.to_json())
    body = json.dumps(result_for(job)).encode()
    signed = sign(parse_secrets(deployment.secret, "t"), f"{job.job_id}-result", body)
    with caplog.at_level(logging.WARNING):
        status, answer = post(job.job_id, body + b" ", signed)
    assert status == 401 and "signature" in answer["error"]
    assert "job-result" not in deployment.kinds()
    assert FUNCTION_KEY not in caplog.text and signed["webhook-signature"] not in caplog.text


def test_the_callback_function_signed_once_records_once(deployment):
    job = make_job()
    deployment.remediation.start(job.to_json())
    body = json.dumps(result_for(job)).encode()
    signed = sign(parse_secrets(deployment.secret, "t"), f"{job.job_id}-result", body)
    assert post(job.job_id, body, signed) == (200, {"accepted": True, "recorded": True})
    assert post(job.job_id, body, signed) == (200, {"accepted": True, "recorded": False})
    assert [e.details["via"] for e in deployment.entries("job-result")] == ["callback"]


def test_the_callback_function_answers_503_when_the_audit_table_is_unreachable(deployment, monkeypatch):
    from shared.adapters.azure.tables import TableAuditLog

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = shared.wiring.storage_from_env(
        {"JobsStorage": deployment.connection_string.replace(str(_table_port(deployment)), str(port))}
    )
    deployment.remediation.audit = TableAuditLog(dead.table_client("audit", retry_total=0))
    job = make_job()
    body = json.dumps(result_for(job)).encode()
    status, answer = post(job.job_id, body, sign(parse_secrets(deployment.secret, "t"), "x", body))
    assert status == 503 and "audit table audit" in answer["error"]


def test_a_message_that_is_not_utf8_is_rejected_and_not_retried(deployment):
    start_remediation_job(func.QueueMessage(id="m1", body=b"\xff\xfe{"))  # returns: the host deletes it
    [entry] = deployment.remediation.audit.history("-")
    assert entry.kind == "job-rejected" and "not JSON" in entry.summary
    assert deployment.arm.requests == []


def test_the_start_function_raises_when_the_tracking_message_cannot_be_sent(deployment):
    """Then the host retries the job message; the retry finds the job instead of starting another."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = shared.wiring.storage_from_env(
        {"JobsStorage": deployment.connection_string.replace(str(_queue_port(deployment)), str(port))}
    )
    working = deployment.remediation.tracking
    deployment.remediation.tracking = StorageMessageQueue(dead.queue_client(deployment.tracking_queue, retry_total=0))
    job = make_job()
    message = func.QueueMessage(id="m1", body=job.to_json().encode())
    with pytest.raises(StorageError, match=f"queue {deployment.tracking_queue}"):
        start_remediation_job(message)
    deployment.remediation.tracking = working
    start_remediation_job(message)
    assert len(deployment.arm.jobs) == 1
    assert [e.summary.split(":")[0] for e in deployment.entries("job-started")] == [
        f"Automation job {uuid.UUID(hex=job.job_id)} created",
        f"Automation job {uuid.UUID(hex=job.job_id)} found (started by an earlier delivery; not started again)",
    ]
    assert len(deployment.take(deployment.tracking_queue)) == 1
    assert NAME in next(deployment.remediation.audit.history(NAME)).certificate


def _queue_port(setup: Setup) -> int:
    return int(setup.connection_string.split("QueueEndpoint=http://127.0.0.1:")[1].split("/")[0])


def _table_port(setup: Setup) -> int:
    return int(setup.connection_string.split("TableEndpoint=http://127.0.0.1:")[1].split("/")[0])
