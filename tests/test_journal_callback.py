"""The journal through the signed callback (`certsync.journal/1` at /api/jobs/{job_id}/result), stored as
`job-journal` audit rows, and the tracker's decision when the job ends without a result (`job-decision`)."""

from __future__ import annotations

import json
from typing import Any

from shared.pipeline.audit import AuditEntry
from shared.pipeline.contract import JOURNAL_SCHEMA
from shared.reconciliation.reconcile import last_proof
from shared.remediation.journal import ROW_CHARACTERS, journal_rows, parse_entries
from tests import test_remediation
from tests.test_remediation import NAME, VAULT, Setup, make_job, result_for

setup = test_remediation.setup  # the remediation tests' fixture: Azurite, the ARM fake, a callback secret
OLD = "<I>CN=R10<S>CN=mail.contoso.com"
NEW = "<I>CN=R11<S>CN=mail.contoso.com"
THUMBPRINT = "1514218ACD2571E7AA8E4920F2EBBE430A5D1996"
FRONT_END, OUTBOUND = "MSExchangeFrontEndTransport", "Outbound to Office 365"
STEPS = [
    {"phase": "stage", "action": "import-certificate", "server": "EX01", "object": THUMBPRINT, "value": "My"},
    {
        "phase": "switch",
        "action": "set-send-connector",
        "server": None,
        "object": "Outbound to Office 365",
        "property": "TlsCertificateName",
        "previous": OLD,
        "value": NEW,
    },
    {"phase": "verify", "action": "check-status", "server": "EX01", "object": THUMBPRINT, "value": "Valid"},
]


def entry(job_id: str, seq: int, n: int, event: str, **fields: Any) -> dict[str, Any]:
    step = STEPS[n - 1]
    return {
        "schema": JOURNAL_SCHEMA,
        "job": job_id,
        "seq": seq,
        "n": n,
        "action": step["action"],
        "server": step["server"],
        "object": step["object"],
        "event": event,
        "at": "2026-12-03T10:00:00Z",
        "rollback": False,
    } | fields


def journal_body(job, items: list[dict[str, Any]], **changes: Any) -> bytes:
    certificate = {"vault": VAULT, "name": NAME, "version": job.version}
    return json.dumps(
        {"schema": JOURNAL_SCHEMA, "job_id": job.job_id, "certificate": certificate, "entries": items} | changes
    ).encode()


def started(setup: Setup, **script: Any):
    job = make_job(schema="certsync.plan/2", steps=STEPS)
    setup.fast()
    # the plan as the pipeline audits it before queueing (the tracker reads it back)
    setup.remediation.audit.record(
        AuditEntry(
            NAME, "plan", job.correlation_id, "plan", vault=VAULT, version=job.version, details={"plan": job.plan}
        )
    )
    setup.arm.script(["Running", "Failed"], output="Importing on EX01\n", exception="worker lost", **script)
    setup.remediation.start(job.to_json())
    return job


def test_a_half_done_job_is_stored_from_the_callback_and_decided_roll_back(setup: Setup) -> None:
    job = started(setup)
    items = [
        entry(job.job_id, 0, 1, "intent", before=False),
        entry(job.job_id, 1, 1, "outcome", outcome="done", after=True),
        entry(job.job_id, 2, 2, "intent", before=OLD),
        entry(job.job_id, 3, 2, "outcome", outcome="done", after=NEW),
        entry(job.job_id, 4, 3, "intent"),
    ]
    first = setup.post_result(job.job_id, journal_body(job, items[:3]))
    again = setup.post_result(job.job_id, journal_body(job, items))  # the runbook re-sends: stored once
    assert (first.status_code, first.body, again.body) == (
        200,
        {"accepted": True, "stored": 3},
        {"accepted": True, "stored": 2},
    )
    assert [e.details["entries"][0]["seq"] for e in setup.entries("job-journal")] == [0, 3]

    setup.track_until_done()

    [decision] = setup.entries("job-decision")
    assert decision.details["decision"] == "roll-back" and decision.details["entries"] == 5
    undo = decision.details["steps"]
    assert [(s["action"], s["object"], s.get("previous"), s.get("value")) for s in undo] == [
        ("set-send-connector", "Outbound to Office 365", NEW, OLD),
        ("remove-certificate", THUMBPRINT, None, None),
    ]
    notice = setup.notices[-1]
    assert notice.kind == "job-decision" and notice.severity == "critical" and "roll-back" in notice.summary


def test_a_job_without_a_journal_needs_a_person(setup: Setup) -> None:
    job = started(setup)
    setup.track_until_done()
    [decision] = setup.entries("job-decision")
    assert decision.details["decision"] == "needs-person" and "before its first step" in decision.details["reason"]
    assert job.job_id in decision.summary


def test_a_journal_that_is_not_this_jobs_is_refused_and_nothing_is_stored(setup: Setup) -> None:
    job = started(setup)
    good = [entry(job.job_id, 0, 1, "intent", before=False)]
    cases = [
        (
            journal_body(job, good, certificate={"vault": VAULT, "name": NAME, "version": "other"}),
            400,
            "not this job's",
        ),
        (journal_body(job, good, certificate=None), 400, "needs vault, name and version"),
        (journal_body(job, [good[0] | {"action": "format-c"}]), 400, "not one of the runbook's"),
        (journal_body(job, [good[0] | {"message": "-----BEGIN PRIVATE KEY-----"}]), 400, "would carry a private key"),
        (journal_body(job, good, job_id="0" * 32), 400, "not " + job.job_id),
    ]
    for body, status, words in cases:
        answer = setup.post_result(job.job_id, body)
        assert answer.status_code == status and words in answer.body["error"], (words, answer.body)
    unsigned = setup.post_result(job.job_id, journal_body(job, good), headers={})
    assert unsigned.status_code == 401
    other = make_job("0" * 32)
    answer = setup.post_result(other.job_id, journal_body(other, [entry(other.job_id, 0, 1, "intent")]))
    assert answer.status_code == 404
    assert setup.entries("job-journal") == []


def test_journal_rows_fit_a_table_entity_and_long_values_are_cut() -> None:
    job_id = "ab" * 16
    items = [
        entry(job_id, seq, 2, "intent", before="x" * 5000 if seq == 0 else OLD, message="m" * 600) for seq in range(200)
    ]
    rows = journal_rows(parse_entries(items, job_id), job_id)
    assert len(rows) > 1
    assert all(len(json.dumps(details)) <= ROW_CHARACTERS + 200 for _, details in rows)
    stored = [e for _, details in rows for e in details["entries"]]
    assert [e["seq"] for e in stored] == list(range(200))
    assert stored[0]["before"] == {"cut": json.dumps("x" * 5000)[:2000]} and len(stored[1]["message"]) == 500


def test_the_proof_steps_of_a_result_are_kept_per_server_in_the_audit_and_the_snapshot(setup: Setup) -> None:
    job = make_job()
    setup.fast()
    result = result_for(job)
    result["steps"] += [
        {
            "n": 7,
            "action": "restart-transport",
            "server": "EX01",
            "object": "MSExchangeFrontEndTransport",
            "outcome": "done",
        },
        {
            "n": 8,
            "action": "probe-receive-connector",
            "server": "EX01",
            "object": "EX01\\Default Frontend EX01",
            "after": "ex01.contoso.com:25",
            "outcome": "failed",
            "message": "the old certificate was served",
        },
        {"n": 9, "action": "test-outbound", "server": "EX01", "object": OUTBOUND, "outcome": "done"},
    ]
    setup.remediation.start(job.to_json())
    assert setup.post_result(job.job_id, json.dumps(result).encode()).status_code == 200
    [entry] = setup.entries("job-result")
    assert entry.details["proof"] == [
        {
            "server": "EX01",
            "check": "restart-transport",
            "target": "MSExchangeFrontEndTransport",
            "outcome": "done",
            "message": "",
        },
        {
            "server": "EX01",
            "check": "probe-receive-connector",
            "target": "ex01.contoso.com:25",
            "outcome": "failed",
            "message": "the old certificate was served",
        },
        {
            "server": "EX01",
            "check": "test-outbound",
            "target": "Outbound to Office 365",
            "outcome": "done",
            "message": "",
        },
    ]
    assert setup.notices[-1].details["proof"] == entry.details["proof"]
    shown = last_proof(setup.history())
    assert [(p["check"], p["job_id"]) for p in shown] == [(p["check"], job.job_id) for p in entry.details["proof"]]
    assert last_proof([]) == []


def test_a_roll_back_is_queued_as_a_follow_up_job_that_runs_and_settles(setup: Setup) -> None:
    job = started(setup)
    half = [
        entry(job.job_id, 0, 1, "intent", before=False),
        entry(job.job_id, 1, 1, "outcome", outcome="done", after=True),
        entry(job.job_id, 2, 2, "intent", before=OLD),
    ]
    setup.post_result(job.job_id, journal_body(job, half))
    setup.arm.script(["Running", "Failed"], output="", exception="worker lost again")  # the follow-up's run
    setup.track_until_done()

    [decision] = setup.entries("job-decision")
    follow = decision.details["follow_up_job"]
    assert decision.details["decision"] == "roll-back" and follow and follow != job.job_id
    [text] = setup.take(setup.jobs_queue)
    message = json.loads(text)
    assert (message["job_id"], message["follow_up"], message["version"]) == (follow, "roll-back-1", job.version)
    assert [s["action"] for s in message["plan"]["steps"]] == ["set-send-connector", "remove-certificate"]

    started_again = setup.remediation.start(text)  # a second Automation job, under the follow-up's own name
    assert started_again.outcome == "started" and started_again.job_id == follow
    [first_put, second_put] = setup.puts()
    assert first_put[1] != second_put[1]
    [entry_started] = [e for e in setup.entries("job-started") if e.details["job_id"] == follow]
    assert entry_started.details["of"] == job.job_id

    undo = message["plan"]["steps"]
    rollback_entries = []
    for n, step in enumerate(undo, 1):
        base = {"schema": JOURNAL_SCHEMA, "job": follow, "n": n, "action": step["action"], "rollback": True}
        rollback_entries += [
            base | {"seq": 2 * n - 2, "event": "intent", "object": step["object"], "server": step["server"]},
            base
            | {
                "seq": 2 * n - 1,
                "event": "outcome",
                "outcome": "done",
                "object": step["object"],
                "server": step["server"],
            },
        ]
    certificate = {"vault": VAULT, "name": NAME, "version": job.version}
    body = {"schema": JOURNAL_SCHEMA, "job_id": follow, "certificate": certificate, "entries": rollback_entries}
    answer = setup.post_result(follow, json.dumps(body).encode())
    assert answer.body == {"accepted": True, "stored": 4}
    setup.track_until_done()

    decisions = setup.entries("job-decision")
    assert [d.details["decision"] for d in decisions] == ["roll-back", "rolled-back"]
    assert decisions[-1].details["of"] == job.job_id and decisions[-1].details["follow_up_job"] == ""
    assert setup.count(setup.jobs_queue) == 0
