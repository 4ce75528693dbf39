"""Journal decisions (`shared.remediation.journal`) with a worker restart simulated after every entry of a
realistic plan, the decisions executed by the Python Exchange model, and the invariants checked after each:
the organisation is never left half-switched, no staged certificate or intermediate that was absent before
stays, and the internal transport certificate is unchanged on every server."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Mapping
from typing import Any

import pytest

from shared.pipeline.contract import JOURNAL_SCHEMA
from shared.remediation.journal import (
    COMPLETE,
    NEEDS_PERSON,
    RESUME,
    ROLL_BACK,
    ROLLED_BACK,
    JournalEntry,
    JournalError,
    decide,
    parse_entries,
    parse_journal,
    parse_journal_lines,
    rollback_plan,
)
from tests.exchange_model import CheckFailed, ExchangeOrg, StaleWrite, StepFailed
from tests.test_planner_properties import a_renewal, plan_of
from tests.topologies import Topology

JOB = "5f2b8c1e9a7d4e3f8b6a1c2d3e4f5a6b"
CHECKS = frozenset({"check-status", "check-name", "probe-receive-connector", "test-outbound", "restart-transport"})


class Runbook:
    """The executor as the model sees it: per step an intent (with what it read), the step, an outcome."""

    def __init__(self, org: ExchangeOrg, journal: list[dict[str, Any]]) -> None:
        self.org, self.journal = org, journal

    def write(self, n: int, step: Mapping[str, Any], event: str, rollback: bool, **fields: Any) -> None:
        self.journal.append(
            {
                "schema": JOURNAL_SCHEMA,
                "job": JOB,
                "seq": len(self.journal),
                "n": n,
                "action": step["action"],
                "server": step.get("server"),
                "object": step.get("object"),
                "property": step.get("property"),
                "event": event,
                "outcome": None,
                "before": None,
                "after": None,
                "message": "",
                "at": "2026-12-03T10:00:00Z",
                "rollback": rollback,
            }
            | fields
        )

    def read(self, step: Mapping[str, Any]) -> Any:
        action = step["action"]
        # "present" / "absent", as the runbook's Get-CertsyncPresence reads a certificate or an intermediate
        if action == "import-certificate":
            return "present" if self.org.certificate(step["server"], step["object"]) is not None else "absent"
        if action in ("install-intermediate", "remove-intermediate"):
            held = step["object"].upper() in self.org.intermediates.get(step["server"].upper(), set())
            return "present" if held else "absent"
        if action.startswith("set-"):
            collection = {
                "set-send-connector": "send_connectors",
                "set-receive-connector": "receive_connectors",
                "set-exo-inbound-connector": "inbound_connectors",
            }.get(action)
            target = (
                self.org.inventory["hybrid_configuration"]
                if collection is None
                else self.org._connector(collection, step["object"])
            )
            return target.get("TlsSenderCertificateName" if "exo" in action else "TlsCertificateName")
        return None

    def run(self, plan: Mapping[str, Any], *, rollback: bool = False, crash_at: int | None = None, write_first=False):
        """Run `plan`; with `crash_at`, the worker dies once the journal holds that many entries (after an
        intent: the step's write made when `write_first`, else not)."""
        for n, step in enumerate(plan["steps"], 1):
            if crash_at is not None and len(self.journal) >= crash_at:
                return
            self.write(n, step, "intent", rollback, before=self.read(step))
            if crash_at is not None and len(self.journal) >= crash_at:
                if write_first:
                    with contextlib.suppress(StepFailed):
                        self.org.apply(step)
                return
            done = len(self.org.journal)
            try:
                self.org.apply(step)
            except StaleWrite as exc:
                self.write(n, step, "outcome", rollback, outcome="conflict", message=str(exc))
                return
            except (CheckFailed, StepFailed) as exc:
                self.write(n, step, "outcome", rollback, outcome="failed", message=str(exc))
                return
            changed = len(self.org.journal) > done
            outcome = "done" if changed or step["action"] in CHECKS else "already"
            self.write(n, step, "outcome", rollback, outcome=outcome, after=self.read(step))


def entries(journal: list[dict[str, Any]]) -> list[JournalEntry]:
    return parse_entries(copy.deepcopy(journal), JOB)


def switch_state(org: ExchangeOrg, plan: Mapping[str, Any]) -> set[str]:
    """For each switch write of the plan: "new" where the object holds its value, "old" where it holds
    its previous, "other" otherwise."""
    states = set()
    runbook = Runbook(org, [])
    for step in plan["steps"]:
        if step["phase"] == "switch":
            current = runbook.read(step)
            states.add("new" if current == step["value"] else "old" if current == step["previous"] else "other")
    return states


def internal_transport(org: ExchangeOrg) -> dict[str, str | None]:
    return {s["Name"]: s.get("InternalTransportCertificateThumbprint") for s in org.inventory["servers"]}


def staged_absent_before(topology: Topology, plan: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    org = topology.org()
    absent = []
    for step in plan["steps"]:
        if step["action"] == "import-certificate" and org.certificate(step["server"], step["object"]) is None:
            absent.append(("certificate", step["server"], step["object"]))
        if step["action"] == "install-intermediate" and step["object"].upper() not in org.intermediates.get(
            step["server"].upper(), set()
        ):
            absent.append(("intermediate", step["server"], step["object"]))
    return absent


def still_there(org: ExchangeOrg, item: tuple[str, str, str]) -> bool:
    kind, server, thumbprint = item
    if kind == "certificate":
        return org.certificate(server, thumbprint) is not None
    return thumbprint.upper() in org.intermediates.get(server.upper(), set())


@pytest.fixture(scope="module")
def renewal() -> Topology:
    return a_renewal(renewal="new-issuer")


def settle(topology: Topology, plan: dict[str, Any], crash_at: int, write_first: bool) -> tuple[str, ExchangeOrg]:
    """Crash the worker at `crash_at`, decide, run what was decided (until a final decision), check the
    invariants; the final decision and the organisation."""
    org = topology.org()
    internal = internal_transport(org)
    journal: list[dict[str, Any]] = []
    Runbook(org, journal).run(plan, crash_at=crash_at, write_first=write_first)
    status = "Suspended"
    for _ in range(4):
        decision = decide(plan, entries(journal), status, resumes=sum(1 for e in journal if e.get("resumed")))
        if decision.kind in (COMPLETE, ROLLED_BACK, NEEDS_PERSON):
            break
        assert decision.plan is not None
        if decision.kind == RESUME:
            Runbook(org, journal).run(decision.plan)
        else:
            assert decision.kind == ROLL_BACK
            Runbook(org, journal).run(decision.plan, rollback=True)
        status = "Completed"
    else:
        raise AssertionError(f"no final decision after crashing at entry {crash_at}: {decision}")
    where = f"crash at entry {crash_at} ({'after' if write_first else 'before'} the write): {decision.kind}"
    assert internal_transport(org) == internal, where
    states = switch_state(org, plan)
    assert len(states) <= 1 and "other" not in states, f"{where}: half-switched {states}"
    if decision.kind == ROLLED_BACK:
        assert states <= {"old"}, where
        left = [i for i in staged_absent_before(topology, plan) if still_there(org, i)]
        assert not left, f"{where}: staged items left behind {left}"
        assert not org.violations(), f"{where}: {org.violations()}"
    if decision.kind == COMPLETE:
        assert states <= {"new"}, where
        assert not org.violations(), f"{where}: {org.violations()}"
    return decision.kind, org


def test_a_worker_restart_after_every_entry_settles_with_the_invariants_holding(renewal: Topology) -> None:
    plan = plan_of(renewal)
    assert plan["blocked"] is None
    full: list[dict[str, Any]] = []
    Runbook(renewal.org(), full).run(plan)
    assert len(full) == 2 * len(plan["steps"])
    seen = {}
    for crash_at in range(0, len(full) + 1):
        for write_first in (False, True) if crash_at % 2 else (False,):
            seen[(crash_at, write_first)] = settle(renewal, plan, crash_at, write_first)[0]
    kinds = set(seen.values())
    assert {ROLLED_BACK, COMPLETE} <= kinds, seen
    assert seen[(len(full), False)] == COMPLETE
    assert seen[(0, False)] == NEEDS_PERSON  # nothing was done: nothing to undo, someone looks at why


def test_a_conflict_rolls_back_and_the_rollback_is_exact(renewal: Topology) -> None:
    plan = plan_of(renewal)
    org = renewal.org()
    before = org.snapshot()
    journal: list[dict[str, Any]] = []
    # someone changes the hybrid configuration between discovery and the job
    org.inventory["hybrid_configuration"]["TlsCertificateName"] = "<I>CN=Someone<S>CN=mail.contoso.com"
    Runbook(org, journal).run(plan)
    assert journal[-1]["outcome"] == "conflict"
    decision = decide(plan, entries(journal), "Completed")
    assert decision.kind == ROLL_BACK and "conflict" in decision.reason
    Runbook(org, journal).run(decision.plan, rollback=True)
    assert decide(plan, entries(journal), "Completed").kind == ROLLED_BACK
    org.inventory["hybrid_configuration"]["TlsCertificateName"] = before[0]["hybrid_configuration"][
        "TlsCertificateName"
    ]
    assert org.snapshot()[0]["send_connectors"] == before[0]["send_connectors"]
    assert org.snapshot()[0]["certificates"] == before[0]["certificates"]
    assert org.snapshot()[1] == before[1]


def test_a_rollback_that_meets_someone_elses_value_needs_a_person(renewal: Topology) -> None:
    plan = plan_of(renewal)
    org = renewal.org()
    journal: list[dict[str, Any]] = []
    switch = next(n for n, s in enumerate(plan["steps"], 1) if s["action"] == "set-send-connector")
    Runbook(org, journal).run(plan, crash_at=2 * switch)
    decision = decide(plan, entries(journal), "Failed")
    assert decision.kind == ROLL_BACK
    connector = org._connector("send_connectors", plan["steps"][switch - 1]["object"])
    connector["TlsCertificateName"] = "<I>CN=Admin<S>CN=mail.contoso.com"  # someone wrote meanwhile
    Runbook(org, journal).run(decision.plan, rollback=True)
    final = decide(plan, entries(journal), "Completed")
    assert final.kind == NEEDS_PERSON and "rollback step 1" in final.reason and "conflict" in final.reason


def test_the_rollback_plan_reverses_writes_and_removes_only_what_was_absent(renewal: Topology) -> None:
    plan = plan_of(renewal)
    journal: list[dict[str, Any]] = []
    verify = next(n for n, s in enumerate(plan["steps"], 1) if s["phase"] == "verify")
    Runbook(renewal.org(), journal).run(plan, crash_at=2 * (verify - 1))
    undo = rollback_plan(plan, entries(journal))
    writes = [s for s in plan["steps"] if s["phase"] == "switch"]
    inverses = [s for s in undo["steps"] if s["action"].startswith("set-")]
    assert [(s["object"], s["previous"], s["value"]) for s in inverses] == [
        (s["object"], s["value"], s["previous"]) for s in reversed(writes)
    ]
    assert [s["n"] for s in undo["steps"]] == list(range(1, len(undo["steps"]) + 1))
    removed = {
        (s["server"], s["object"])
        for s in undo["steps"]
        if s["action"] in ("remove-certificate", "remove-intermediate")
    }
    assert removed == {(server, thumbprint) for _, server, thumbprint in staged_absent_before(renewal, plan)}
    assert undo["rollback"] is True and all(s["phase"] == "rollback" for s in undo["steps"])


def test_a_stop_in_the_retire_phase_resumes_once_then_needs_a_person(renewal: Topology) -> None:
    plan = plan_of(renewal)
    retire = next(n for n, s in enumerate(plan["steps"], 1) if s["phase"] == "retire")
    journal: list[dict[str, Any]] = []
    Runbook(renewal.org(), journal).run(plan, crash_at=2 * retire - 1)
    assert decide(plan, entries(journal), "Suspended").kind == RESUME
    assert decide(plan, entries(journal), "Suspended", resumes=1).kind == NEEDS_PERSON
    assert decide(plan, entries(journal), "Stopped").kind == NEEDS_PERSON


def test_the_journal_is_checked_in_one_line_per_problem() -> None:
    good = {
        "schema": JOURNAL_SCHEMA,
        "job": JOB,
        "seq": 0,
        "n": 1,
        "action": "import-certificate",
        "event": "intent",
        "before": False,
    }
    assert parse_journal({"schema": JOURNAL_SCHEMA, "job_id": JOB, "entries": [good, good]}, JOB)[0].before is False
    assert len(parse_journal_lines(json.dumps(good) + "\n\n" + json.dumps(good | {"seq": 1}), JOB)) == 2
    for body, words in (
        ([], "not a JSON object"),
        ({"schema": "x", "job_id": JOB, "entries": []}, "schema is 'x'"),
        ({"schema": JOURNAL_SCHEMA, "job_id": "other", "entries": []}, "for job 'other'"),
        ({"schema": JOURNAL_SCHEMA, "job_id": JOB, "entries": {}}, "no list of entries"),
        ({"schema": JOURNAL_SCHEMA, "job_id": JOB, "entries": [1]}, "entry 0 of job"),
        ({"schema": JOURNAL_SCHEMA, "job_id": JOB, "entries": [good | {"job": "x"}]}, "it is for job 'x'"),
        ({"schema": JOURNAL_SCHEMA, "job_id": JOB, "entries": [good | {"schema": 1}]}, "schema is '1'"),
        ({"schema": JOURNAL_SCHEMA, "job_id": JOB, "entries": [good | {"seq": -1}]}, "seq is not a whole number"),
        ({"schema": JOURNAL_SCHEMA, "job_id": JOB, "entries": [good | {"n": 0}]}, "n is not a whole number from 1"),
        (
            {"schema": JOURNAL_SCHEMA, "job_id": JOB, "entries": [good | {"action": "rm -rf"}]},
            "not one of the runbook's",
        ),
        ({"schema": JOURNAL_SCHEMA, "job_id": JOB, "entries": [good | {"event": "x"}]}, "not intent or outcome"),
        (
            {"schema": JOURNAL_SCHEMA, "job_id": JOB, "entries": [good | {"event": "outcome", "outcome": "ok"}]},
            "outcome 'ok'",
        ),
        ({"schema": JOURNAL_SCHEMA, "job_id": JOB, "entries": [good | {"rollback": "yes"}]}, "rollback is not"),
        ({"schema": JOURNAL_SCHEMA, "job_id": JOB, "entries": [good | {"server": 1}]}, "server is not a string"),
        ({"schema": JOURNAL_SCHEMA, "job_id": JOB, "entries": [good, good | {"n": 2}]}, "seq 0 is used twice"),
    ):
        with pytest.raises(JournalError) as raised:
            parse_journal(body, JOB)
        assert words in str(raised.value) and "\n" not in str(raised.value), (words, str(raised.value))
    with pytest.raises(JournalError, match="line 2 of job"):
        parse_journal_lines(json.dumps(good) + "\n{", JOB)
