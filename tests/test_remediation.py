"""Remediation jobs end to end on real components: the Automation client against the HTTPS fake ARM, the
jobs and tracking queues and the audit table in Azurite, the STARTTLS probe against loopback sockets.

Delays: the default schedule is checked once against Azurite's visibility (a message sent with a delay is
not receivable); the flows then run with zero delays so that every follow-up message is receivable at once.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from azure.core.exceptions import ResourceNotFoundError

from shared.errors import CertsyncError
from shared.notify.signing import new_secret, parse_secrets, sign
from shared.notify.webhooks import notice_facts
from shared.pipeline.audit import AuditEntry
from shared.pipeline.jobs import RemediationRequest
from shared.pipeline.process import Notice
from shared.remediation.context import RemediationSettings, poll_delay, retry_delay
from shared.remediation.messages import (
    MessageError,
    ResultError,
    TrackMessage,
    callback_url,
    check_no_secrets,
    kept_certificates,
    name_mismatches,
    parse_job_message,
    parse_result,
    parse_track_message,
    plan_base64,
    plan_from_base64,
    result_from_output,
    server_outcomes,
)
from shared.remediation.service import Remediation
from shared.wiring import remediation_from_env
from tests.automation_params import string_parameters
from tests.chains import issue, make_name, pem_of
from tests.fakes.arm import API_VERSION, FakeArm
from tests.smtp import SmtpTlsServer

NAME = "exch-hybrid-smtp"
VAULT = "contoso-kv"
CALLBACK_BASE = "https://certsync-test.azurewebsites.net"
INTERMEDIATE = issue(make_name("R11", "Contoso"), kind="ec", ca=True, path_length=0)
FAST = {"first_poll": 0, "poll_cap": 0, "retry_base": 0}


def make_job(
    version: str = "6aa99e8a0ea145e287007d4e46fb1787",
    *,
    probe: list[str] | None = None,
    thumbprint: str = "1514218ACD2571E7AA8E4920F2EBBE430A5D1996",
    **plan,
) -> RemediationRequest:
    """A job as the pipeline queues it: a certsync.plan/1 body with public certificates only."""
    body = {
        "schema": "certsync.plan/1",
        "certificate": {
            "vault": VAULT,
            "name": NAME,
            "version": version,
            "secret_id": f"https://{VAULT}.vault.azure.net/secrets/{NAME}/{version}",
            "thumbprint": thumbprint,
            "tls_certificate_name": "<I>CN=R11, O=Contoso<S>CN=mail.contoso.com",
            "not_after": "2027-02-24T17:46:43Z",
            "intermediates": [
                {
                    "thumbprint": "5E44ABD5BDE8651B8E18C866E84BBD82FC6F34A8",
                    "subject": "CN=R11, O=Contoso",
                    "der_base64": base64.b64encode(INTERMEDIATE.der).decode(),
                }
            ],
        },
        "previous": {"version": "4dfc", "thumbprint": "0CB6", "tls_certificate_name": "<I>CN=R10<S>CN=mail"},
        "change": "issuer_changed",
        "connector_update_required": True,
        "nothing_to_change": False,
        "assessment_status": "Valid",
        "blocked": None,
        "worker_group": "hrw-exchange",
        "servers": ["EX01", "EX02"],
        "summary": "Issuer changed: import on EX01, EX02, then set TlsCertificateName on 1 object(s).",
        "steps": [
            {"n": 1, "phase": "stage", "action": "import-certificate", "server": "EX01", "object": "My"},
            {"n": 2, "phase": "stage", "action": "import-certificate", "server": "EX02", "object": "My"},
            {"n": 3, "phase": "switch", "action": "set-send-connector", "server": None, "object": "Outbound"},
        ],
        **({"probe": probe} if probe is not None else {}),
        **plan,
    }
    return RemediationRequest(
        vault=VAULT,
        certificate=NAME,
        version=version,
        secret_id=body["certificate"]["secret_id"],
        thumbprint=thumbprint,
        correlation_id=uuid.uuid4().hex,
        plan=body,
    )


def result_for(job: RemediationRequest, status: str = "succeeded", *, failed_on: str | None = None, **changes) -> dict:
    steps = [
        {
            "n": n,
            "action": "import-certificate",
            "server": server,
            "object": "Cert:\\LocalMachine\\My",
            "before": "absent",
            "after": "present",
            "outcome": "failed" if server == failed_on else "done",
            "message": "",
        }
        for n, server in enumerate(["EX01", "EX02"], 1)
    ]
    return {
        "schema": "certsync.result/1",
        "job_id": job.job_id,
        "correlation_id": job.correlation_id,
        "certificate": {"vault": VAULT, "name": NAME, "version": job.version, "thumbprint": job.thumbprint},
        "status": status,
        "error": None if status == "succeeded" else "Import-PfxCertificate failed on EX02",
        "worker": "HRW01",
        "started": "2026-11-26T08:01:00Z",
        "finished": "2026-11-26T08:03:00Z",
        "steps": steps,
        "inventory": [
            {
                "server": None,
                "kind": "send-connector",
                "object": "Outbound to Office 365",
                "tls_certificate_name": "<I>CN=R11, O=Contoso<S>CN=mail.contoso.com",
                "thumbprint": None,
                "status": None,
                "services": None,
            }
        ],
        **changes,
    }


def output_for(job: RemediationRequest, **result) -> str:
    return "Importing on EX01\r\nImporting on EX02\r\n" + json.dumps(result_for(job, **result)) + "\r\n\r\n"


class Notices(list):
    """The notifier port's in-memory backend: the notices, in order."""

    def notify(self, notice: Notice) -> None:
        self.append(notice)

    def kinds(self) -> list[str]:
        return [n.kind for n in self]


@dataclass
class Setup:
    env: dict[str, str]
    remediation: Remediation
    arm: FakeArm
    notices: Notices
    connection_string: str
    secret: str

    def fast(self, **settings) -> Setup:
        """Delays of zero (follow-up messages are receivable at once), or other settings."""
        self.remediation.settings = dataclasses.replace(self.remediation.settings, **(FAST | settings))
        return self

    def queue(self, name: str):
        from azure.storage.queue import QueueClient, TextBase64DecodePolicy

        return QueueClient.from_connection_string(
            self.connection_string, name, message_decode_policy=TextBase64DecodePolicy()
        )

    def take(self, name: str) -> list[str]:
        """Receive every visible message of queue `name` and delete it, as the Functions host does."""
        queue = self.queue(name)
        try:
            messages = list(queue.receive_messages(max_messages=32, visibility_timeout=30))
        except ResourceNotFoundError:
            return []
        for message in messages:
            queue.delete_message(message)
        return [m.content for m in messages]

    def count(self, name: str) -> int:
        """Messages in the queue, visible or not."""
        try:
            return self.queue(name).get_queue_properties().approximate_message_count
        except ResourceNotFoundError:
            return 0

    @property
    def jobs_queue(self) -> str:
        return self.env["REMEDIATION_QUEUE"]

    @property
    def tracking_queue(self) -> str:
        return self.env["TRACKING_QUEUE"]

    def history(self) -> list[AuditEntry]:
        return list(self.remediation.audit.history(NAME))

    def kinds(self) -> list[str]:
        return [e.kind for e in self.history()]

    def entries(self, kind: str) -> list[AuditEntry]:
        return [e for e in self.history() if e.kind == kind]

    def puts(self) -> list[tuple[str, str, dict, bytes]]:
        return [r for r in self.arm.requests if r[0] == "PUT"]

    def track_until_done(self, limit: int = 20) -> list:
        """Deliver tracking messages until none is left; the outcomes, in order."""
        outcomes = []
        for _ in range(limit):
            messages = self.take(self.tracking_queue)
            if not messages:
                return outcomes
            for text in messages:
                outcomes.append(self.remediation.track(text))
        raise AssertionError(f"still tracking after {limit} rounds: {[o.outcome for o in outcomes]}")

    def result_notice(self):
        """The last job-result notice (a job that ended without a result is followed by its job-decision)."""
        return [n for n in self.notices if n.kind == "job-result"][-1]

    def post_result(self, job_id: str, body: bytes, *, secret: str | None = None, at=None, headers=None):
        keys = parse_secrets(secret or self.secret, "test")
        signed = sign(keys, f"{job_id}-result", body, at=at) if headers is None else headers
        return self.remediation.accept_result(job_id, signed, body)


def make_setup(azurite, arm: FakeArm, **env_changes: str) -> Setup:
    suffix = uuid.uuid4().hex[:8]
    secret = new_secret()
    env = {
        "JobsStorage": azurite.connection_string,
        "REMEDIATION_QUEUE": f"jobs-{suffix}",
        "TRACKING_QUEUE": f"tracking-{suffix}",
        "AUDIT_TABLE": f"audit{suffix}",
        "CERTSYNC_CALLBACK_URL": CALLBACK_BASE,
        "CERTSYNC_CALLBACK_SECRET": secret,
        **arm.env,
        **env_changes,
    }
    notices = Notices()
    remediation = remediation_from_env(
        env, notifier=notices, automation_options={"credential": arm.credential, **arm.client_kwargs}
    )
    return Setup(env, remediation, arm, notices, azurite.connection_string, secret)


@pytest.fixture
def setup(azurite, arm) -> Setup:
    return make_setup(azurite, arm)


# --- the schedule --------------------------------------------------------------------------------


def test_poll_and_retry_schedules():
    settings = RemediationSettings()
    assert [poll_delay(n, settings) for n in range(7)] == [60, 60, 120, 240, 300, 300, 300]
    assert [retry_delay(n, None, settings) for n in range(7)] == [30, 60, 120, 240, 480, 900, 900]
    assert retry_delay(0, 95.2, settings) == 96  # never sooner than Retry-After
    assert retry_delay(5, 10, settings) == 900
    assert retry_delay(0, 30 * 86400, settings) == 7 * 86400  # the most a queue message can wait


def test_callback_url_is_built_from_the_bare_origin_only():
    assert callback_url(CALLBACK_BASE + "/", "ab" * 16) == f"{CALLBACK_BASE}/api/jobs/{'ab' * 16}/result"
    assert callback_url("http://localhost:7071", "0" * 32) == "http://localhost:7071/api/jobs/" + "0" * 32 + "/result"
    for bad in (f"{CALLBACK_BASE}/api?code=abc", "http://certsync.example.com", f"{CALLBACK_BASE}/x", "nonsense"):
        with pytest.raises(CertsyncError, match="CERTSYNC_CALLBACK_URL"):
            callback_url(bad, "0" * 32)


# --- start and track -----------------------------------------------------------------------------


def test_a_job_is_started_once_tracked_to_completion_and_its_result_audited(setup):
    job = make_job()
    setup.fast()
    setup.arm.script(["New", "Running", "Running", "Completed"], output=output_for(job))

    started = setup.remediation.start(job.to_json())

    assert (started.outcome, started.automation_job) == ("started", str(uuid.UUID(hex=job.job_id)))
    [(_, path, query, body)] = setup.puts()
    assert path == f"{setup.arm.account_id}/jobs/{uuid.UUID(hex=job.job_id)}"
    assert query == {"api-version": API_VERSION}
    properties = json.loads(body)["properties"]
    assert properties["runbook"] == {"name": "Invoke-CertsyncRemediation"}
    assert properties["runOn"] == "hrw-exchange"
    received = string_parameters(json.loads(body))  # what the runbook's [string] parameters hold
    assert received == {
        "PlanBase64": plan_base64(job.plan),
        "CorrelationId": job.correlation_id,
        "JobId": job.job_id,
        "CallbackUrl": f"{CALLBACK_BASE}/api/jobs/{job.job_id}/result",
    }
    assert plan_from_base64(received["PlanBase64"]) == job.plan
    assert setup.secret not in body.decode() and "code=" not in body.decode()

    outcomes = setup.track_until_done()

    assert [o.outcome for o in outcomes] == ["polling", "polling", "polling", "recorded"]
    assert [o.status for o in outcomes] == ["New", "Running", "Running", "Completed"]
    assert setup.kinds() == ["job-started", "job-status", "job-result"]  # Running recorded once
    started_entry, status_entry, result_entry = setup.history()
    assert started_entry.details == {
        "job_id": job.job_id,
        "automation_job": started.automation_job,
        "run_on": "hrw-exchange",
        "attempt": 0,
    }
    assert "created" in started_entry.summary
    assert status_entry.details["status"] == "Running"
    assert result_entry.details == {
        "job_id": job.job_id,
        "automation_job": started.automation_job,
        "status": "Completed",
        "result": result_for(job),
        "error": "",
        "via": "poll",
        "proof": [],  # the result has no proof steps
    }
    assert result_entry.details["result"]["steps"][0]["after"] == "present"
    assert result_entry.details["result"]["inventory"][0]["kind"] == "send-connector"
    assert {e.correlation_id for e in setup.history()} == {job.correlation_id}
    assert (result_entry.vault, result_entry.version) == (VAULT, job.version)

    assert setup.notices.kinds() == ["job-started", "job-result"]
    notice = setup.notices[-1]
    assert notice.details["servers"] == [
        {"server": "EX01", "outcome": "succeeded"},
        {"server": "EX02", "outcome": "succeeded"},
    ]
    assert (notice.details["status"], notice.details["automation_status"]) == ("succeeded", "Completed")
    assert notice.severity == "good"
    assert setup.count(setup.tracking_queue) == 0 and setup.count(setup.jobs_queue) == 0


def test_the_tracking_message_waits_a_minute_by_default(setup):
    job = make_job(probe=["mail.contoso.com:25"])
    outcome = setup.remediation.start(job.to_json())
    assert (outcome.outcome, outcome.delay) == ("started", 60)
    assert setup.count(setup.tracking_queue) == 1
    assert setup.take(setup.tracking_queue) == []  # not visible yet

    setup.fast()
    job2 = make_job("0" * 32, probe=["mail.contoso.com:25"])
    setup.remediation.start(job2.to_json())
    [text] = setup.take(setup.tracking_queue)
    message = json.loads(text)
    assert message == {
        "schema": "certsync.track/1",
        "job_id": job2.job_id,
        "automation_job": str(uuid.UUID(hex=job2.job_id)),
        "vault": VAULT,
        "certificate": NAME,
        "version": job2.version,
        "thumbprint": job2.thumbprint,
        "correlation_id": job2.correlation_id,
        "servers": ["EX01", "EX02"],
        "probe": ["mail.contoso.com:25"],
        "polls": 0,
        "failures": 0,
        "started_at": message["started_at"],
        "last_status": "New",
    }
    assert dt.datetime.fromisoformat(message["started_at"].replace("Z", "+00:00")).tzinfo is not None


def test_a_redelivered_start_message_finds_the_job_instead_of_starting_another(setup):
    job = make_job()
    setup.fast()
    first = setup.remediation.start(job.to_json())
    again = setup.remediation.start(job.to_json())
    assert (first.outcome, again.outcome) == ("started", "found")
    assert len(setup.arm.jobs) == 1 and len(setup.puts()) == 1
    created, found = setup.entries("job-started")
    assert "created" in created.summary and "found" in found.summary and "not started again" in found.summary


def test_throttling_is_retried_later_and_never_sooner_than_retry_after(setup):
    job = make_job()
    # More failures than the client's own quick retries, so the start as a whole fails.
    setup.arm.fail_next(429, count=10, retry_after=2)
    outcome = setup.remediation.start(job.to_json())
    assert (outcome.outcome, outcome.attempt, outcome.delay) == ("retry", 1, 30)  # the backoff exceeds Retry-After
    assert setup.count(setup.jobs_queue) == 1 and setup.take(setup.jobs_queue) == []  # held back
    [retry] = setup.entries("job-retry")
    assert retry.details == {"job_id": job.job_id, "stage": "start", "status": 429, "attempt": 1, "delay_seconds": 30}
    assert setup.arm.jobs == {} and setup.notices.kinds() == []

    setup.fast()  # no backoff of our own: Automation's Retry-After alone sets the delay
    outcome = setup.remediation.start(job.to_json())
    assert (outcome.outcome, outcome.delay) == ("retry", 2)
    assert setup.entries("job-retry")[-1].details["delay_seconds"] == 2


def test_server_errors_are_retried_with_a_counted_attempt_then_poisoned(setup):
    job = make_job()
    setup.fast()
    setup.arm.fail_next(500, count=100)
    text, outcomes = job.to_json(), []
    for _ in range(10):
        outcomes.append(setup.remediation.start(text))
        messages = setup.take(setup.jobs_queue)
        if not messages:
            break
        [text] = messages
        assert json.loads(text)["attempt"] == outcomes[-1].attempt  # the message carries its count
    assert [o.outcome for o in outcomes] == ["retry"] * 5 + ["poisoned"]
    assert [o.attempt for o in outcomes[:5]] == [1, 2, 3, 4, 5]
    [poisoned] = setup.take(setup.jobs_queue + "-poison")
    assert json.loads(poisoned) == job.to_dict()  # without its counter: moved back, it starts over
    assert setup.kinds() == ["job-retry"] * 5 + ["job-poisoned"]
    assert setup.entries("job-poisoned")[0].details == {"job_id": job.job_id, "stage": "start", "attempts": 6}
    assert "-poison" in setup.notices[-1].summary and setup.notices.kinds() == ["job-poisoned"]
    assert setup.arm.jobs == {}


@pytest.mark.parametrize(
    ("failure", "hint", "code"),
    [
        ({"status": 403}, "Automation Job Operator", "AuthorizationFailed"),
        ({"runbook": "Invoke-NoSuchRunbook"}, "publish runbook Invoke-NoSuchRunbook", "NotFound"),
    ],
)
def test_refusals_are_rejected_with_a_hint_and_not_retried(setup, failure, hint, code):
    job = make_job()
    if "status" in failure:
        setup.arm.fail_next(failure["status"])
    else:
        setup.remediation.settings = dataclasses.replace(setup.remediation.settings, runbook=failure["runbook"])
    outcome = setup.remediation.start(job.to_json())
    assert outcome.outcome == "rejected" and hint in outcome.reason and "\n" not in outcome.reason
    [rejected] = setup.entries("job-rejected")
    assert rejected.details == {"job_id": job.job_id, "status": 403 if "status" in failure else 404, "code": code}
    assert hint in rejected.summary
    assert setup.notices.kinds() == ["job-rejected"] and hint in setup.notices[0].summary
    assert setup.notices[0].severity == "critical"
    assert setup.count(setup.jobs_queue) == 0 and setup.count(setup.jobs_queue + "-poison") == 0
    assert setup.count(setup.tracking_queue) == 0 and setup.arm.jobs == {}


@pytest.mark.parametrize(
    ("text", "partition", "words"),
    [
        ("{not json", "-", "not JSON"),
        ('["a list"]', "-", "not a JSON object"),
        (json.dumps({"schema": "certsync.job/2", "certificate": NAME}), NAME, "not certsync.job/1"),
    ],
)
def test_malformed_job_messages_are_rejected_under_their_certificate(setup, text, partition, words):
    outcome = setup.remediation.start(text)
    assert outcome.outcome == "rejected" and words in outcome.reason
    [entry] = setup.remediation.audit.history(partition)
    assert entry.kind == "job-rejected" and entry.details["code"] == "InvalidMessage"
    assert setup.arm.requests == [] and setup.notices.kinds() == ["job-rejected"]


def test_a_job_message_whose_id_does_not_match_its_certificate_is_rejected(setup):
    data = make_job().to_dict() | {"job_id": "f" * 32}
    outcome = setup.remediation.start(json.dumps(data))
    assert outcome.outcome == "rejected" and "does not match" in outcome.reason
    assert setup.kinds() == ["job-rejected"] and setup.arm.requests == []


def test_a_plan_carrying_a_private_key_is_never_sent_to_automation(setup):
    job = make_job(notes="-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----")
    outcome = setup.remediation.start(job.to_json())
    assert outcome.outcome == "rejected" and "PlanBase64 would carry a private key" in outcome.reason
    assert setup.entries("job-rejected")[0].details["code"] == "UnsafeParameters"
    assert setup.puts() == [] and "MIIB" not in json.dumps([e.to_dict() for e in setup.history()])


def test_secret_shapes_are_refused_in_parameters():
    secret = new_secret()
    keys = parse_secrets(secret, "test")
    check_no_secrets({"PlanJson": '{"thumbprint":"AB"}', "CallbackUrl": f"{CALLBACK_BASE}/api/jobs/x/result"})
    for value in (
        secret,
        "https://x.azurewebsites.net/api/jobs/1/result?code=abc",
        "https://a.blob.core.windows.net/c?sv=2024&sig=abc",
        '{"password": "x"}',
        "DefaultEndpointsProtocol=https;AccountKey=abc",
    ):
        with pytest.raises(CertsyncError, match="no job was started"):
            check_no_secrets({"PlanJson": value}, keys)
    with pytest.raises(CertsyncError, match="callback secret"):
        check_no_secrets({"PlanJson": base64.b64encode(keys[0]).decode()}, keys)


@pytest.mark.parametrize(
    ("state", "result"),
    [("Failed", "rolled-back"), ("Stopped", None), ("Suspended", None)],
)
def test_failed_stopped_and_suspended_jobs_are_reported_with_the_runbook_error(setup, state, result):
    job = make_job()
    setup.fast()
    output = output_for(job, status=result, failed_on="EX02") if result else "Importing on EX01\n"
    setup.arm.script(
        ["Running", state],
        output=output,
        exception="Set-SendConnector : Access is denied.",
        error_streams=["Import-PfxCertificate: the key set does not exist on EX02", "rolled back 1 connector"],
    )
    setup.remediation.start(job.to_json())
    *_, last = setup.track_until_done()
    assert (last.outcome, last.status) == ("recorded", state)
    [entry] = setup.entries("job-result")
    details = entry.details
    assert details["status"] == state and details["via"] == "poll"
    assert "Set-SendConnector : Access is denied." in details["error"]
    assert "the key set does not exist on EX02" in details["error"] and "rolled back 1 connector" in details["error"]
    [notice] = [n for n in setup.notices if n.kind == "job-result"]
    assert notice.severity == "critical"
    if result:
        assert details["result"]["status"] == "rolled-back"
        assert notice.details["servers"] == [
            {"server": "EX01", "outcome": "rolled-back"},
            {"server": "EX02", "outcome": "failed"},
        ]
    else:
        assert details["result"] is None and "not JSON" in details["error"]
        assert {s["outcome"] for s in notice.details["servers"]} == {"failed"}
    assert setup.kinds().count("probe") == 0


def test_a_garbled_last_output_line_gives_a_null_result_with_a_clear_error(setup):
    job = make_job()
    setup.fast()
    setup.arm.script(["Completed"], output='Done.\n{"schema": "certsync.result/1", "job_id": \n')
    setup.remediation.start(job.to_json())
    setup.track_until_done()
    [entry] = setup.entries("job-result")
    assert entry.details["result"] is None and entry.details["status"] == "Completed"
    assert entry.details["error"] == "the job's last Output line is not JSON, so there is no certsync.result/1 result"
    assert setup.result_notice().details["servers"] == [
        {"server": "EX01", "outcome": "unknown"},
        {"server": "EX02", "outcome": "unknown"},
    ]


def test_result_parsing_is_tolerant_but_strict_about_whose_result_it_is():
    job = make_job()
    assert result_from_output("", job.job_id) == (
        None,
        "the job wrote no Output, so there is no certsync.result/1 line",
    )
    other = json.dumps(result_for(make_job("1" * 32)))
    result, error = result_from_output(other, job.job_id)
    assert result is None and f"not {job.job_id}" in error
    result, error = result_from_output("\ufeff" + json.dumps(result_for(job)) + "\n  \n", job.job_id)
    assert result == result_for(job) and error == ""
    with pytest.raises(CertsyncError, match="status"):
        parse_result(result_for(job, status="partly"), job.job_id)
    assert server_outcomes(result_for(job, status="what-if"), ["EX01"], "Completed") == [
        {"server": "EX01", "outcome": "what-if"},
        {"server": "EX02", "outcome": "what-if"},
    ]


NEW_NAME = "<I>CN=R11, O=Contoso<S>CN=mail.contoso.com"
SERVER_NAMES = [
    {"server": "EX01", "subject": "CN=mail.contoso.com", "issuer": "O=Contoso, CN=R11", "expected": NEW_NAME},
    {"server": "EX02", "subject": "cn=MAIL.contoso.com", "issuer": "CN=R11, O=Contoso", "expected": NEW_NAME},
]
SERVER_NAMES[0]["matches"], SERVER_NAMES[1]["matches"] = False, True  # case ignored, as Exchange does


def test_a_name_exchange_renders_differently_is_audited_and_noticed_with_both_strings(setup):
    # The runbook compared each server's own Subject/Issuer with certsync's string (case ignored: EX02
    # matches), switched nothing and rolled staging back; the poll records it and the notice shows both.
    job = make_job()
    setup.fast()
    output = output_for(job, status="rolled-back", failed_on="EX01", server_names=SERVER_NAMES, kept=[])
    setup.arm.script(["Running", "Failed"], output=output, exception="certsync rolled-back: On EX01 ...")
    setup.remediation.start(job.to_json())
    setup.track_until_done()

    [entry] = setup.entries("job-result")
    assert entry.details["result"]["server_names"] == SERVER_NAMES
    notice = setup.notices[-1]
    assert notice.kind == "job-result" and notice.severity == "critical"
    assert notice.details["name_mismatch"] == [
        "EX01: Exchange renders '<I>O=Contoso, CN=R11<S>CN=mail.contoso.com',"
        " certsync has '<I>CN=R11, O=Contoso<S>CN=mail.contoso.com'"
    ]
    assert notice.details["kept_certificates"] == []
    facts = dict(notice_facts(notice))
    assert "<I>O=Contoso, CN=R11<S>CN=mail.contoso.com" in facts["Name mismatch"]
    assert NEW_NAME in facts["Name mismatch"] and "Kept certificates" not in facts


def test_old_certificates_the_runbook_kept_are_in_the_notice_with_the_reason(setup):
    job = make_job()
    setup.fast()
    setup.remediation.start(job.to_json())
    reason = "it still serves IIS on EX01, which the new certificate is not enabled for there"
    kept = [{"server": "EX01", "thumbprint": "0CB65935AF474E04D10597A12E9538959901A4C8", "reason": reason}]
    body = json.dumps(result_for(job, server_names=SERVER_NAMES[1:], kept=kept)).encode()
    assert setup.post_result(job.job_id, body).status_code == 200

    [entry] = setup.entries("job-result")
    assert entry.details["result"]["kept"] == kept
    notice = setup.notices[-1]
    assert notice.details["kept_certificates"] == [f"0CB65935AF474E04D10597A12E9538959901A4C8 on EX01: {reason}"]
    assert notice.details["name_mismatch"] == [] and notice.severity == "good"
    assert reason in dict(notice_facts(notice))["Kept certificates"]


@pytest.mark.parametrize("key", ["server_names", "kept"])
def test_server_names_and_kept_must_be_lists_of_objects_and_may_be_absent(key):
    job = make_job()
    with pytest.raises(ResultError, match=f"result's {key} is not a list of objects"):
        parse_result(result_for(job, **{key: ["EX01"]}), job.job_id)
    older = result_for(job)  # a runbook from before the name check: neither key
    assert name_mismatches(parse_result(older, job.job_id)) == kept_certificates(older) == []
    assert name_mismatches(None) == kept_certificates(None) == []


def test_transient_poll_failures_back_off_then_poison_the_tracking_message(setup):
    job = make_job()
    setup.fast()
    setup.remediation.start(job.to_json())
    setup.arm.fail_next(503, count=100, method="GET")
    outcomes = setup.track_until_done()
    assert [o.outcome for o in outcomes] == ["retry"] * 5 + ["poisoned"]
    [poisoned] = setup.take(setup.tracking_queue + "-poison")
    assert json.loads(poisoned)["job_id"] == job.job_id and json.loads(poisoned)["failures"] == 0
    retries = setup.entries("job-retry")
    assert [r.details["attempt"] for r in retries] == [1, 2, 3, 4, 5]
    assert {r.details["stage"] for r in retries} == {"poll"} and {r.details["status"] for r in retries} == {503}
    assert setup.entries("job-poisoned")[0].details == {"job_id": job.job_id, "stage": "poll", "attempts": 6}


def test_a_job_that_vanished_stops_tracking_with_a_rejection(setup):
    job = make_job()
    setup.fast()
    setup.remediation.start(job.to_json())
    setup.arm.jobs.clear()  # Automation keeps jobs 30 days
    [outcome] = setup.track_until_done()
    assert outcome.outcome == "rejected" and "does not exist" in outcome.reason
    assert setup.entries("job-rejected")[0].details["status"] == 404


def test_tracking_gives_up_after_a_day_with_an_unknown_result(setup):
    job = make_job()
    setup.fast()
    now = dt.datetime(2026, 11, 26, 8, 0, tzinfo=dt.timezone.utc)
    setup.remediation.clock = lambda: now
    setup.arm.script(["Running"])
    setup.remediation.start(job.to_json())
    [text] = setup.take(setup.tracking_queue)
    assert setup.remediation.track(text).outcome == "polling"
    [text] = setup.take(setup.tracking_queue)
    now += dt.timedelta(hours=24, minutes=1)
    outcome = setup.remediation.track(text)
    assert outcome.outcome == "gave-up"
    [entry] = setup.entries("job-result")
    assert entry.details["status"] == "Unknown" and entry.details["result"] is None
    assert "did not end within 24 h (last status Running)" in entry.details["error"]
    assert "check the job in the Automation account" in setup.notices[-1].summary
    assert setup.count(setup.tracking_queue) == 0


def test_a_garbled_tracking_message_is_rejected(setup):
    outcome = setup.remediation.track(json.dumps({"schema": "certsync.track/1", "certificate": NAME}))
    assert outcome.outcome == "rejected" and "job_id is missing" in outcome.reason
    assert setup.kinds() == ["job-rejected"] and setup.arm.requests == []


@pytest.mark.parametrize(
    ("change", "plan_change", "words"),
    [
        ({"correlation_id": " "}, {}, "correlation_id is missing or not a string"),
        ({"plan": "a plan"}, {}, "plan is missing or not a certsync.plan/1 or certsync.plan/2 object"),
        ({}, {"schema": "certsync.plan/3"}, "plan is missing or not a certsync.plan/1 or certsync.plan/2 object"),
        ({}, {"worker_group": " "}, "plan.worker_group is empty; set worker_group"),
        ({}, {"steps": None}, "plan.steps or plan.certificate is missing"),
        ({"attempt": True}, {}, "attempt is not a whole number"),
        ({"attempt": -1}, {}, "attempt is not a whole number"),
    ],
)
def test_a_job_message_names_what_it_lacks_and_its_job(change, plan_change, words):
    job = make_job()
    data = job.to_dict() | change
    if plan_change:
        data["plan"] = data["plan"] | plan_change
    with pytest.raises(MessageError) as info:
        parse_job_message(json.dumps(data))
    assert str(info.value) == f"job message {job.job_id}: {words}" + str(info.value).split(words, 1)[1]
    assert str(info.value).endswith("; it is not retried")
    assert (info.value.certificate, info.value.job_id) == (NAME, job.job_id)


def a_track_message(**changes) -> str:
    job = make_job()
    message = TrackMessage(
        job_id=job.job_id,
        automation_job=str(uuid.UUID(hex=job.job_id)),
        vault=VAULT,
        certificate=NAME,
        version=job.version,
        thumbprint=job.thumbprint,
        correlation_id=job.correlation_id,
        started_at=dt.datetime(2026, 11, 26, 8, 0, 1, 250000, tzinfo=dt.timezone.utc),
        servers=("EX01",),
    )
    return json.dumps(json.loads(message.to_json()) | changes)


def test_a_tracking_message_reads_back_as_written_with_its_time_in_utc():
    text = a_track_message()
    message = parse_track_message(text)
    assert message.to_json() == text.replace(" ", "")
    assert json.loads(text)["started_at"] == "2026-11-26T08:00:01.250000Z"
    offset = parse_track_message(a_track_message(started_at="2026-11-26T09:00:01.25+01:00"))
    assert offset.started_at == message.started_at
    assert json.loads(offset.to_json())["started_at"] == "2026-11-26T08:00:01.250000Z"


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"schema": "certsync.track/2"}, "schema is 'certsync.track/2', not certsync.track/1"),
        ({"polls": -1}, "polls or failures is not a whole number"),
        ({"failures": False}, "polls or failures is not a whole number"),
        ({"servers": "EX01"}, "servers or probe is not a list of strings"),
        ({"probe": [25]}, "servers or probe is not a list of strings"),
        ({"started_at": "yesterday"}, "started_at is not an ISO 8601 time"),
        ({"started_at": ""}, "started_at is not an ISO 8601 time"),
    ],
)
def test_a_tracking_message_names_what_is_wrong_with_it(changes, words):
    text = a_track_message(**changes)
    with pytest.raises(MessageError) as info:
        parse_track_message(text)
    job_id = json.loads(text)["job_id"]
    assert str(info.value) == f"tracking message {job_id}: {words}"
    assert (info.value.certificate, info.value.job_id) == (NAME, job_id)


@pytest.mark.parametrize("status", [503, 403])
def test_an_output_that_cannot_be_read_is_read_again_later_or_recorded_as_the_error(setup, status):
    job = make_job()
    setup.fast()
    setup.arm.script(["Completed"], output=output_for(job))
    setup.remediation.start(job.to_json())
    setup.arm.fail_next(status, path_suffix="/output")
    [text] = setup.take(setup.tracking_queue)
    first = setup.remediation.track(text)
    if status == 503:
        assert (first.outcome, first.delay) == ("retry", 0)
        [retry] = setup.entries("job-retry")
        assert (retry.details["stage"], retry.details["status"]) == ("poll", 503)
        [again] = setup.track_until_done()
        assert (again.outcome, again.result) == ("recorded", result_for(job))
        assert setup.kinds() == ["job-started", "job-retry", "job-result"]
    else:
        assert (first.outcome, first.status, first.result) == ("recorded", "Completed", None)
        [entry] = setup.entries("job-result")
        assert entry.details["error"].startswith("cannot read the job's output: Automation account")
        assert "Automation Job Operator" in entry.details["error"] and entry.details["result"] is None
        assert setup.result_notice().details["status"] == "no-result"


def test_error_streams_that_cannot_be_read_after_a_reported_failure_are_recorded_as_such(setup):
    job = make_job()
    setup.fast()
    setup.arm.script(["Failed"], output=output_for(job), exception="Set-SendConnector : Access is denied.")
    setup.remediation.start(job.to_json())
    body = json.dumps(result_for(job, "failed", failed_on="EX02")).encode()
    assert setup.post_result(job.job_id, body).status_code == 200
    setup.arm.fail_next(403, path_suffix="/streams")
    [outcome] = setup.track_until_done()
    assert outcome.outcome == "recorded-errors"
    ended = setup.entries("job-status")[-1].details
    assert ended["error"].startswith("Set-SendConnector : Access is denied.; cannot read the job's Error streams:")
    assert ended["ended"] is True and ended["status"] == "Failed"


def test_a_notice_that_cannot_be_delivered_leaves_the_audit_entry_and_a_warning(setup, caplog):
    class Unreachable(Notices):
        def notify(self, notice: Notice) -> None:
            raise CertsyncError("webhook https://hooks.example.com answered 503")

    setup.remediation.notifier = Unreachable()
    job = make_job()
    with caplog.at_level(logging.WARNING, logger="certsync"):
        outcome = setup.remediation.start(job.to_json())
    assert outcome.outcome == "started" and setup.kinds() == ["job-started"]
    [record] = [r for r in caplog.records if "not delivered" in r.getMessage()]
    assert record.getMessage() == (
        f"notice job-started for job {job.job_id} not delivered: webhook https://hooks.example.com answered 503"
    )


# --- the probe -----------------------------------------------------------------------------------


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback socket that listens but never accepts: a connection attempt would be queued on it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        sock.setblocking(False)
        yield sock


def test_after_a_successful_job_each_endpoint_is_probed_and_a_failure_audited(azurite, arm, closed_port):
    endpoint = f"127.0.0.1:{closed_port}"
    setup = make_setup(azurite, arm, CERTSYNC_ALLOW_HOSTS=endpoint, CERTSYNC_PROBE_TIMEOUT="5").fast()
    job = make_job(probe=[endpoint])
    setup.arm.script(["Completed"], output=output_for(job))
    setup.remediation.start(job.to_json())
    [outcome] = setup.track_until_done()
    assert outcome.outcome == "recorded"
    assert setup.kinds() == ["job-started", "job-result", "probe"]
    [probe] = setup.entries("probe")
    [served] = probe.details["endpoints"]
    assert probe.details["job_id"] == job.job_id
    assert served["endpoint"] == endpoint and served["ok"] is False and "connection refused" in served["error"]
    assert served["expected_thumbprint"] == job.thumbprint
    assert setup.notices.kinds() == ["job-started", "job-result", "probe"]
    notice = setup.notices[-1]
    assert notice.details["endpoints"] == probe.details["endpoints"] and notice.severity == "warning"
    [server] = notice.details["servers"]
    assert server["server"] == endpoint and "connection refused" in server["outcome"]


def test_the_probe_reports_a_server_that_omits_the_intermediate_and_is_quiet_once_it_sends_it(azurite, arm, tmp_path):
    root = issue(make_name("Remediation Test Root", "Contoso"), ca=True, path_length=1)
    r11 = issue(make_name("R11", "Contoso"), issuer=root, ca=True, path_length=0)
    leaf = issue(make_name("mail.contoso.com", "Contoso"), issuer=r11, dns_names=["mail.contoso.com"])
    for name, data in {"leaf.pem": leaf.pem, "full.pem": pem_of([leaf, r11]), "key.pem": leaf.key_pem}.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "root.pem").write_bytes(root.pem)
    thumbprint = hashlib.sha1(leaf.der).hexdigest().upper()
    with SmtpTlsServer(tmp_path / "leaf.pem", tmp_path / "key.pem") as server:
        setup = make_setup(
            azurite, arm, CERTSYNC_ALLOW_HOSTS=server.endpoint, CERTSYNC_TRUST_FILE=str(tmp_path / "root.pem")
        ).fast()
        half = make_job("1" * 32, probe=[server.endpoint], thumbprint=thumbprint)
        setup.arm.script(["Completed"], output=output_for(half))
        setup.remediation.start(half.to_json())
        setup.track_until_done()
        server.present(tmp_path / "full.pem", tmp_path / "key.pem")
        done = make_job("2" * 32, probe=[server.endpoint], thumbprint=thumbprint)
        setup.arm.script(["Completed"], output=output_for(done))
        setup.remediation.start(done.to_json())
        setup.track_until_done()
    first, second = (e.details["endpoints"][0] for e in setup.entries("probe"))
    assert (first["ok"], first["is_expected"], first["intermediates_sent"]) == (True, True, False)
    assert (second["ok"], second["is_expected"], second["intermediates_sent"]) == (True, True, True)
    assert second["assessment"]["status"] == "Valid"
    [notice] = [n for n in setup.notices if n.kind == "probe"]  # only the first one needs attention
    assert notice.details["job_id"] == half.job_id
    assert "without its intermediates" in notice.details["servers"][0]["outcome"]
    assert "PRIVATE KEY" not in json.dumps([e.to_dict() for e in setup.history()])


def test_the_probe_names_a_malformed_endpoint_an_expired_chain_and_another_certificate(azurite, arm, tmp_path):
    root = issue(make_name("Remediation Test Root", "Contoso"), ca=True, path_length=1)
    r11 = issue(make_name("R11", "Contoso"), issuer=root, ca=True, path_length=0)
    now = dt.datetime.now(dt.timezone.utc)
    leaf = issue(
        make_name("mail.contoso.com", "Contoso"),
        issuer=r11,
        dns_names=["mail.contoso.com"],
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    (tmp_path / "full.pem").write_bytes(pem_of([leaf, r11]))
    (tmp_path / "key.pem").write_bytes(leaf.key_pem)
    (tmp_path / "root.pem").write_bytes(root.pem)
    thumbprint = hashlib.sha1(leaf.der).hexdigest().upper()
    with SmtpTlsServer(tmp_path / "full.pem", tmp_path / "key.pem") as server:
        setup = make_setup(
            azurite, arm, CERTSYNC_ALLOW_HOSTS=server.endpoint, CERTSYNC_TRUST_FILE=str(tmp_path / "root.pem")
        ).fast()
        expired = make_job("1" * 32, probe=["mail.contoso.com:0", server.endpoint], thumbprint=thumbprint)
        setup.arm.script(["Completed"], output=output_for(expired))
        setup.remediation.start(expired.to_json())
        setup.track_until_done()
        other = make_job("2" * 32, probe=[server.endpoint])  # expects another thumbprint than the one served
        setup.arm.script(["Completed"], output=output_for(other))
        setup.remediation.start(other.to_json())
        setup.track_until_done()
    first, second = setup.entries("probe")
    malformed, chain = first.details["endpoints"]
    assert malformed["ok"] is False and "the port is not a number from 1 to 65535" in malformed["error"]
    assert chain["ok"] and chain["is_expected"] and chain["intermediates_sent"]
    assert chain["assessment"]["status"] != "Valid"
    assert "2 of 2 endpoint(s) do not serve certificate" in first.summary
    one, two = [n for n in setup.notices if n.kind == "probe"]
    assert one.details["servers"] == [
        {"server": "mail.contoso.com:0", "outcome": malformed["error"]},
        {
            "server": server.endpoint,
            "outcome": "serves the new certificate with its chain, but it assesses " + chain["assessment"]["status"],
        },
    ]
    assert second.details["endpoints"][0]["is_expected"] is False
    assert two.details["servers"] == [
        {"server": server.endpoint, "outcome": f"serves {thumbprint}, not the new certificate {other.thumbprint}"}
    ]


def test_the_probe_guard_refuses_a_loopback_endpoint_that_is_not_allow_listed(setup, listener):
    endpoint = f"127.0.0.1:{listener.getsockname()[1]}"
    setup.fast()
    job = make_job(probe=[endpoint])
    setup.arm.script(["Completed"], output=output_for(job))
    setup.remediation.start(job.to_json())
    setup.track_until_done()
    [served] = setup.entries("probe")[0].details["endpoints"]
    assert served["ok"] is False and "CERTSYNC_ALLOW_HOSTS" in served["error"]
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody connected


def test_no_probe_after_a_failed_runbook(azurite, arm, closed_port):
    endpoint = f"127.0.0.1:{closed_port}"
    setup = make_setup(azurite, arm, CERTSYNC_ALLOW_HOSTS=endpoint).fast()
    job = make_job(probe=[endpoint])
    setup.arm.script(["Completed"], output=output_for(job, status="rolled-back", failed_on="EX02"))
    setup.remediation.start(job.to_json())
    setup.track_until_done()
    assert setup.kinds() == ["job-started", "job-result"]


# --- the callback --------------------------------------------------------------------------------


def test_a_signed_result_is_accepted_and_recorded_once(setup):
    job = make_job()
    setup.fast()
    setup.remediation.start(job.to_json())
    body = json.dumps(result_for(job)).encode()
    first = setup.post_result(job.job_id, body)
    second = setup.post_result(job.job_id, body)
    assert (first.status_code, first.body) == (200, {"accepted": True, "recorded": True})
    assert (second.status_code, second.body) == (200, {"accepted": True, "recorded": False})
    [entry] = setup.entries("job-result")
    assert entry.details["via"] == "callback" and entry.details["result"] == result_for(job)
    assert entry.details["automation_job"] == str(uuid.UUID(hex=job.job_id))
    assert (entry.vault, entry.version, entry.correlation_id) == (VAULT, job.version, job.correlation_id)
    notice = setup.notices[-1]
    assert notice.kind == "job-result" and notice.details["via"] == "callback"
    assert notice.details["servers"] == [
        {"server": "EX01", "outcome": "succeeded"},
        {"server": "EX02", "outcome": "succeeded"},
    ]


def test_tracking_stops_without_a_second_result_once_the_callback_recorded_one(setup):
    job = make_job()
    setup.fast()
    setup.arm.script(["Running", "Completed"], output=output_for(job))
    setup.remediation.start(job.to_json())
    assert setup.post_result(job.job_id, json.dumps(result_for(job)).encode()).status_code == 200
    [outcome] = setup.track_until_done()
    assert outcome.outcome == "already-recorded"
    assert setup.kinds() == ["job-started", "job-result"]
    assert setup.count(setup.tracking_queue) == 0


def test_after_a_callback_the_poll_still_probes_once_the_job_completed(azurite, arm, closed_port):
    endpoint = f"127.0.0.1:{closed_port}"
    setup = make_setup(azurite, arm, CERTSYNC_ALLOW_HOSTS=endpoint).fast()
    job = make_job(probe=[endpoint])
    setup.arm.script(["Running", "Running", "Completed"], output=output_for(job))
    setup.remediation.start(job.to_json())
    assert setup.post_result(job.job_id, json.dumps(result_for(job)).encode()).status_code == 200
    outcomes = setup.track_until_done()
    assert [o.outcome for o in outcomes] == ["polling", "polling", "probed"]
    assert setup.kinds() == ["job-started", "job-result", "job-status", "probe"]


def test_after_a_failure_reported_by_callback_the_poll_records_the_jobs_own_errors_once(azurite, arm):
    setup = make_setup(azurite, arm).fast()
    job = make_job()
    setup.arm.script(
        ["Running", "Failed"],
        output=output_for(job),
        exception="Import-ExchangeCertificate : The certificate is not valid",
        error_streams=["Enable-ExchangeCertificate failed on EX02"],
    )
    setup.remediation.start(job.to_json())
    body = json.dumps(result_for(job, "failed", failed_on="EX02")).encode()
    assert setup.post_result(job.job_id, body).status_code == 200
    outcomes, last = [], None
    while messages := setup.take(setup.tracking_queue):
        for last in messages:
            outcomes.append(setup.remediation.track(last))
    assert [o.outcome for o in outcomes] == ["polling", "recorded-errors"]
    assert setup.kinds() == ["job-started", "job-result", "job-status", "job-status"]
    ended = setup.entries("job-status")[-1]
    assert ended.details["ended"] and ended.details["status"] == "Failed"
    assert "The certificate is not valid" in ended.details["error"]
    assert "Enable-ExchangeCertificate failed on EX02" in ended.details["error"]
    # The same tracking message delivered again changes nothing: the errors are recorded once.
    assert setup.remediation.track(last).outcome == "already-recorded"
    assert len(setup.entries("job-status")) == 2


@pytest.mark.parametrize("problem", ["tampered", "stale", "missing", "wrong-secret"])
def test_bad_signatures_are_refused_and_nothing_is_written(setup, caplog, problem):
    job = make_job()
    setup.remediation.start(job.to_json())
    body = json.dumps(result_for(job)).encode()
    before = setup.kinds()
    other = new_secret()
    with caplog.at_level(logging.WARNING, logger="certsync"):
        if problem == "tampered":
            headers = sign(parse_secrets(setup.secret, "t"), f"{job.job_id}-result", body)
            response = setup.post_result(job.job_id, body.replace(b"succeeded", b"rolled-back"), headers=headers)
        elif problem == "stale":
            ten_minutes_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=10)
            response = setup.post_result(job.job_id, body, at=ten_minutes_ago)
        elif problem == "missing":
            response = setup.post_result(job.job_id, body, headers={"content-type": "application/json"})
        else:
            response = setup.post_result(job.job_id, body, secret=other)
    assert response.status_code == 401 and response.body["error"].startswith("signature rejected")
    assert setup.kinds() == before
    [record] = [r for r in caplog.records if "refused" in r.getMessage()]
    assert job.job_id in record.getMessage()
    for secret in (setup.secret, other):
        assert secret not in caplog.text and secret[6:] not in caplog.text


def test_a_rotated_secret_still_verifies(azurite, arm):
    old, new = new_secret(), new_secret()
    setup = make_setup(azurite, arm, CERTSYNC_CALLBACK_SECRET=f"{new} {old}").fast()
    job = make_job()
    setup.remediation.start(job.to_json())
    response = setup.post_result(job.job_id, json.dumps(result_for(job)).encode(), secret=old)
    assert response.status_code == 200 and setup.kinds() == ["job-started", "job-result"]


def test_a_result_over_a_megabyte_is_refused_before_its_signature_is_checked(setup):
    job = make_job()
    setup.remediation.start(job.to_json())
    response = setup.post_result(job.job_id, b" " * (1024 * 1024 + 1), headers={})
    assert (response.status_code, response.body) == (413, {"error": "the result is larger than 1048576 bytes"})
    assert setup.kinds() == ["job-started"]


def test_without_a_secret_the_callback_is_off(azurite, arm):
    setup = make_setup(azurite, arm, CERTSYNC_CALLBACK_SECRET="")
    response = setup.remediation.accept_result("a" * 32, {}, b"{}")
    assert response.status_code == 503 and "CERTSYNC_CALLBACK_SECRET" in response.body["error"]


@pytest.mark.parametrize(
    ("case", "status", "words"),
    [
        ("not-json", 400, "not JSON"),
        ("other-job", 400, "not " + "{job_id}"),
        ("wrong-certificate", 400, "is not this job's"),
        ("never-started", 404, "no job"),
        ("bad-id", 400, "32 lower-case hex"),
    ],
)
def test_results_that_are_not_this_jobs_are_refused(setup, case, status, words):
    job = make_job()
    if case != "never-started":
        setup.remediation.start(job.to_json())
    route_id = job.job_id
    body = json.dumps(result_for(job)).encode()
    if case == "not-json":
        body = b"<html>"
    elif case == "other-job":
        body = json.dumps(result_for(make_job("2" * 32))).encode()
    elif case == "wrong-certificate":
        result = result_for(job)
        result["certificate"]["version"] = "3" * 32
        body = json.dumps(result).encode()
    elif case == "bad-id":
        route_id = "../../etc"
    response = setup.post_result(route_id, body)
    assert response.status_code == status and words.format(job_id=job.job_id) in response.body["error"]
    assert "job-result" not in setup.kinds()


def test_no_secret_reaches_parameters_messages_audit_rows_or_logs(setup, caplog):
    job = make_job()
    setup.fast()
    setup.arm.script(["Running", "Completed"], output=output_for(job))
    keys = parse_secrets(setup.secret, "t")
    with caplog.at_level(logging.DEBUG):
        setup.remediation.start(job.to_json())
        body = json.dumps(result_for(job)).encode()
        tracking = setup.queue(setup.tracking_queue).peek_messages(max_messages=32)
        setup.post_result(job.job_id, body)
        setup.post_result(job.job_id, body, secret=new_secret())  # refused: logged
        setup.track_until_done()
    from azure.data.tables import TableClient

    rows = list(TableClient.from_connection_string(setup.connection_string, setup.env["AUDIT_TABLE"]).list_entities())
    everything = "\n".join(
        [
            caplog.text,
            json.dumps([str(r) for r in rows]),
            "\n".join(m.content for m in tracking),
            "\n".join(repr(r) for r in setup.arm.requests),
            repr(setup.notices),
        ]
    )
    assert rows and tracking and setup.arm.requests
    for secret in (setup.secret, setup.secret.removeprefix("whsec_"), base64.b64encode(keys[0]).decode()):
        assert secret not in everything
    assert setup.arm.credential.token not in caplog.text
    assert "whsec_" not in everything


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"CERTSYNC_PROBE_TIMEOUT": "soon"}, "CERTSYNC_PROBE_TIMEOUT='soon'"),
        ({"CERTSYNC_PROBE_TIMEOUT": "0"}, "CERTSYNC_PROBE_TIMEOUT='0'"),
        ({"CERTSYNC_CALLBACK_URL": f"{CALLBACK_BASE}/api/jobs?code=abc"}, "CERTSYNC_CALLBACK_URL"),
        ({"CERTSYNC_CALLBACK_SECRET": "hunter2"}, "CERTSYNC_CALLBACK_SECRET: each secret must start with whsec_"),
        ({"AUTOMATION_ACCOUNT_ID": ""}, "AUTOMATION_ACCOUNT_ID is not set"),
        ({"CERTSYNC_ALLOW_HOSTS": "mail.contoso.com:"}, "--allow-host"),
    ],
)
def test_settings_errors_name_the_setting_and_never_the_secret(azurite, arm, changes, words):
    with pytest.raises(CertsyncError) as caught:
        make_setup(azurite, arm, **changes)
    assert words in str(caught.value) and "\n" not in str(caught.value)
    assert "hunter2" not in str(caught.value) and "code=abc" not in str(caught.value)


# --- two instances: one job-result per job ---------------------------------------------------------


def _second_instance_between_check_and_write(setup: Setup, monkeypatch, act, *, at_read: int = 1) -> list:
    """Instance A's `at_read`-th read of the trail (its last check for a recorded job-result) happens, then
    instance B (`act`, another composition on the same Storage) runs to the end, then A goes on from what
    it read: B's write lands between A's check and A's write, the interleaving that recorded job-result
    twice. The list gets what `act` returned."""
    audit = setup.remediation.audit
    read = audit.history
    done: list = []
    reads = []

    def read_then_let_b_run(*args, **kwargs):
        seen = list(read(*args, **kwargs))
        reads.append(1)
        if len(reads) == at_read:
            done.append(act())
        return iter(seen)

    monkeypatch.setattr(audit, "history", read_then_let_b_run)
    return done


def _instance_b(setup: Setup, arm: FakeArm) -> Remediation:
    return remediation_from_env(
        setup.env, notifier=setup.notices, automation_options={"credential": arm.credential, **arm.client_kwargs}
    )


def test_a_callback_landing_between_the_polls_check_and_write_is_the_only_result(setup, monkeypatch):
    job = make_job()
    setup.fast()
    setup.arm.script(["Completed"], output=output_for(job))
    setup.remediation.start(job.to_json())
    [tracking] = setup.take(setup.tracking_queue)
    b = _instance_b(setup, setup.arm)
    body = json.dumps(result_for(job)).encode()
    keys = parse_secrets(setup.secret, "test")
    done = _second_instance_between_check_and_write(
        setup,
        monkeypatch,
        lambda: b.accept_result(job.job_id, sign(keys, f"{job.job_id}-result", body), body),
        at_read=2,  # track's first read finds nothing; its second, after reading the job's output, is the last
    )

    outcome = setup.remediation.track(tracking)

    assert [r.body for r in done] == [{"accepted": True, "recorded": True}]
    assert outcome.outcome == "already-recorded"
    [entry] = setup.entries("job-result")
    assert entry.details["via"] == "callback"
    assert setup.notices.kinds().count("job-result") == 1


def test_one_result_posted_to_two_instances_at_once_is_recorded_once(setup, monkeypatch):
    job = make_job()
    setup.fast()
    setup.remediation.start(job.to_json())
    b = _instance_b(setup, setup.arm)
    body = json.dumps(result_for(job)).encode()
    keys = parse_secrets(setup.secret, "test")
    done = _second_instance_between_check_and_write(
        setup, monkeypatch, lambda: b.accept_result(job.job_id, sign(keys, f"{job.job_id}-result", body), body)
    )

    first = setup.post_result(job.job_id, body)

    assert [r.body for r in done] == [{"accepted": True, "recorded": True}]
    assert first.body == {"accepted": True, "recorded": False}
    assert len(setup.entries("job-result")) == 1
    assert setup.notices.kinds().count("job-result") == 1
