"""The runbook's journal, and what certsync decides from it when a job ends without a result.

The runbook writes two entries per plan step, before and after it (`certsync.journal/1`, contract.py): an
"intent" carrying the state it read (`before`; for import-certificate and install-intermediate whether the
thumbprint was there), then an "outcome" (done, already, conflict, failed, skipped, rolled-back, would-do).
It keeps them in a file on the worker and posts them to the signed callback. After a worker restart
Automation runs the job again from the top, so one step may have several intents and outcomes: the later
ones (`seq`) win, and an intent left without an outcome means the step may have been written.

`decide(plan, entries, job_status)` answers one `Decision`:

- `complete`: every step ended done, already or skipped;
- `resume`: the organisation is switched and proven (stage, switch and verify all ended well), only the
  retire phase is unfinished: queue the same plan again (compare-and-set makes the done steps "already");
- `roll-back`: anything else that changed something: queue `rollback_plan(plan, entries)`, every write
  this job may have made undone in reverse order (previous and value swapped), the certificate and
  intermediates it staged removed where they were not there before, the internal transport certificate
  enabled again for SMTP where a step could have moved it. A rollback that was itself cut short is queued
  again (its steps are compare-and-set too);
- `rolled-back`: the rollback's entries (`rollback: true`) show every step ended;
- `needs-person`: a rollback step failed or met a value someone else wrote, a retire step failed after the
  organisation was proven, a job that ended before its first step, or a resume that did not finish.

Pure: values in, a value out. `parse_journal` and `parse_entries` check what the runbook sent (one-line
`JournalError`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.errors import CertsyncError
from shared.pipeline.contract import ACTIONS, JOURNAL_EVENTS, JOURNAL_SCHEMA, OUTCOMES

COMPLETE, RESUME, ROLL_BACK, ROLLED_BACK, NEEDS_PERSON = (
    "complete",
    "resume",
    "roll-back",
    "rolled-back",
    "needs-person",
)
DECISIONS = (COMPLETE, RESUME, ROLL_BACK, ROLLED_BACK, NEEDS_PERSON)
ENDED_WELL = frozenset({"done", "already", "skipped", "rolled-back", "would-do"})
STOPPED_BADLY = frozenset({"failed", "conflict"})
WRITES = frozenset(
    {"set-send-connector", "set-receive-connector", "set-hybrid-configuration", "set-exo-inbound-connector"}
)
STAGED = {"import-certificate": "remove-certificate", "install-intermediate": "remove-intermediate"}
MAX_ENTRIES = 10_000
ROW_CHARACTERS = 24_000  # the JSON of one job-journal audit row's entries (a Table string holds 32K characters)
VALUE_CHARACTERS = 2_000  # a `before` or `after` longer than this as JSON is stored cut


class JournalError(CertsyncError):
    """Journal entries that are not this job's `certsync.journal/1`."""


@dataclass(frozen=True)
class JournalEntry:
    """One line of the journal, checked."""

    seq: int
    n: int
    action: str
    event: str  # intent | outcome
    outcome: str | None
    server: str | None
    object: str
    before: Any
    after: Any
    message: str
    at: str
    rollback: bool

    def to_dict(self, job_id: str) -> dict[str, Any]:
        return {
            "schema": JOURNAL_SCHEMA,
            "job": job_id,
            "seq": self.seq,
            "n": self.n,
            "action": self.action,
            "server": self.server,
            "object": self.object,
            "event": self.event,
            "outcome": self.outcome,
            "before": self.before,
            "after": self.after,
            "message": self.message,
            "at": self.at,
            "rollback": self.rollback,
        }


@dataclass(frozen=True)
class Decision:
    """What to do about a job that ended without a result; `plan` is the plan to queue (resume, roll-back)."""

    kind: str  # one of DECISIONS
    reason: str
    plan: dict[str, Any] | None = None


def parse_journal(body: object, job_id: str) -> list[JournalEntry]:
    """The callback's `{"schema": "certsync.journal/1", "job_id": ..., "entries": [...]}`, checked."""
    if not isinstance(body, Mapping):
        raise JournalError("the journal is not a JSON object")
    if body.get("schema") != JOURNAL_SCHEMA:
        raise JournalError(f"the journal's schema is {str(body.get('schema'))[:40]!r}, not {JOURNAL_SCHEMA}")
    if body.get("job_id") != job_id:
        raise JournalError(f"the journal is for job {str(body.get('job_id'))[:40]!r}, not {job_id}")
    return parse_entries(body.get("entries"), job_id)


def parse_journal_lines(text: str, job_id: str) -> list[JournalEntry]:
    """The journal file on the worker: one JSON entry a line (blank lines ignored)."""
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError:
                raise JournalError(f"journal line {number} of job {job_id} is not JSON") from None
    return parse_entries(items, job_id)


def parse_entries(items: object, job_id: str) -> list[JournalEntry]:
    """Entries checked one by one and ordered by `seq`; an entry sent twice (the same `seq`) counts once."""
    if not isinstance(items, list):
        raise JournalError(f"the journal of job {job_id} has no list of entries")
    if len(items) > MAX_ENTRIES:
        raise JournalError(f"the journal of job {job_id} has {len(items)} entries, more than {MAX_ENTRIES}")
    found: dict[int, JournalEntry] = {}
    for index, item in enumerate(items):
        entry = _entry(item, job_id, index)
        if found.setdefault(entry.seq, entry) != entry:
            raise JournalError(f"journal entry {index} of job {job_id}: seq {entry.seq} is used twice, differently")
    return [found[seq] for seq in sorted(found)]


def _entry(item: object, job_id: str, index: int) -> JournalEntry:
    def fail(problem: str) -> JournalError:
        return JournalError(f"journal entry {index} of job {job_id}: {problem}")

    if not isinstance(item, Mapping):
        raise fail("not a JSON object")
    if item.get("schema") != JOURNAL_SCHEMA:
        raise fail(f"schema is {str(item.get('schema'))[:40]!r}, not {JOURNAL_SCHEMA}")
    if item.get("job") != job_id:
        raise fail(f"it is for job {str(item.get('job'))[:40]!r}")
    for key in ("seq", "n"):
        value = item.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "seq" else 1):
            raise fail(f"{key} is not a whole number" + (" from 1" if key == "n" else ""))
    if item.get("action") not in ACTIONS:
        raise fail(f"action {str(item.get('action'))[:60]!r} is not one of the runbook's")
    event = item.get("event")
    if event not in JOURNAL_EVENTS:
        raise fail(f"event {str(event)[:40]!r} is not intent or outcome")
    outcome = item.get("outcome")
    if event == "outcome" and outcome not in OUTCOMES:
        raise fail(f"outcome {str(outcome)[:40]!r} is not one of {', '.join(OUTCOMES)}")
    if not isinstance(item.get("rollback", False), bool):
        raise fail("rollback is not true or false")
    server = item.get("server")
    if server is not None and not isinstance(server, str):
        raise fail("server is not a string or null")
    return JournalEntry(
        seq=item["seq"],
        n=item["n"],
        action=item["action"],
        event=event,
        outcome=outcome if event == "outcome" else None,
        server=server,
        object=str(item.get("object") or ""),
        before=item.get("before"),
        after=item.get("after"),
        message=str(item.get("message") or "")[:500],
        at=str(item.get("at") or ""),
        rollback=bool(item.get("rollback", False)),
    )


# --- job-journal audit rows ------------------------------------------------------------------------


def journal_rows(entries: Sequence[JournalEntry], job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """`entries` as the (summary, details) of `job-journal` audit rows, in order, each small enough for a
    Table entity (`ROW_CHARACTERS`); a long `before` or `after` is cut (`VALUE_CHARACTERS`)."""
    rows: list[tuple[str, dict[str, Any]]] = []
    batch: list[dict[str, Any]] = []
    size = 0

    def flush() -> None:
        if batch:
            first, last = batch[0]["seq"], batch[-1]["seq"]
            summary = f"job {job_id}: journal entries {first} to {last} ({len(batch)})"
            rows.append((summary, {"job_id": job_id, "entries": list(batch)}))
            batch.clear()

    for entry in entries:
        item = entry.to_dict(job_id)
        del item["schema"], item["job"]
        for key in ("before", "after"):
            text = json.dumps(item[key], ensure_ascii=False)
            if len(text) > VALUE_CHARACTERS:
                item[key] = {"cut": text[:VALUE_CHARACTERS]}
        length = len(json.dumps(item, ensure_ascii=False)) + 2
        if batch and size + length > ROW_CHARACTERS:
            flush()
            size = 0
        batch.append(item)
        size += length
    flush()
    return rows


def stored_entries(history: Iterable[Any], job_id: str) -> list[JournalEntry]:
    """The journal entries of job `job_id` kept in `job-journal` audit rows (`AuditEntry`s), by `seq`."""
    items = []
    for row in history:
        details = row.details if row.kind == "job-journal" else {}
        if details.get("job_id") == job_id and isinstance(details.get("entries"), list):
            items += [{**e, "schema": JOURNAL_SCHEMA, "job": job_id} for e in details["entries"] if isinstance(e, dict)]
    found = {e["seq"]: e for e in items if isinstance(e.get("seq"), int)}
    return parse_entries([found[k] for k in sorted(found)], job_id)


# --- what each step went through ---------------------------------------------------------------------


@dataclass
class _Step:
    first_before: Any = None
    touched: bool = False  # an intent was written: the runbook reached the step
    maybe_written: bool = False  # done, or an intent left without its outcome
    last: str | None = None  # the last outcome
    message: str = ""


def _steps(entries: Iterable[JournalEntry]) -> dict[int, _Step]:
    steps: dict[int, _Step] = {}
    pending: dict[int, bool] = {}
    for entry in entries:
        step = steps.setdefault(entry.n, _Step())
        if entry.event == "intent":
            if not step.touched:
                step.first_before = entry.before
            step.touched = True
            if pending.get(entry.n):  # the intent before this one never got its outcome
                step.maybe_written = True
            pending[entry.n] = True
        else:
            pending[entry.n] = False
            step.last, step.message = entry.outcome, entry.message
            if entry.outcome == "done":
                step.maybe_written = True
    for n, open_intent in pending.items():
        if open_intent:
            steps[n].maybe_written = True
            steps[n].last = None  # interrupted: whatever an earlier run said, this one did not finish
    return steps


def _was_present(before: Any) -> bool | None:
    """An import/install intent's `before`: whether the thumbprint was there ("present"/"absent" as the
    runbook writes it, true/false, or {"present": ...})."""
    if isinstance(before, bool):
        return before
    if before in ("present", "absent"):
        return before == "present"
    if isinstance(before, Mapping) and isinstance(before.get("present"), bool):
        return bool(before["present"])
    return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.casefold() == b.casefold()
    return bool(a == b)


def rollback_plan(plan: Mapping[str, Any], entries: Sequence[JournalEntry]) -> dict[str, Any]:
    """The plan that undoes what the job (its forward `entries`) may have done, newest first.

    Raises `JournalError` when something it did cannot be undone by a plan: a removed certificate."""
    forward = _steps(e for e in entries if not e.rollback)
    plan_steps = list(plan.get("steps") or [])
    undo: list[dict[str, Any]] = []
    for n in range(len(plan_steps), 0, -1):
        step, seen = plan_steps[n - 1], forward.get(n)
        if seen is None or not seen.touched:
            continue
        action = step.get("action")
        base = {"phase": "rollback", "server": step.get("server"), "object": step.get("object"), "rollback_of": n}
        if action in WRITES and seen.maybe_written and not _same(seen.first_before, step.get("value")):
            inverse = {**base, "action": action, "property": step.get("property")}
            inverse |= {
                "previous": step.get("value"),
                "value": step.get("previous"),
                "manual": step.get("manual", False),
            }
            if "tenant" in step:
                inverse["tenant"] = step["tenant"]
            undo.append(inverse)
        elif action in STAGED and _was_present(seen.first_before) is False:
            undo.append({**base, "action": STAGED[action], "property": None, "previous": None, "value": None})
        elif action == "enable-services" and seen.maybe_written and step.get("internal_transport_certificate"):
            # Enable-ExchangeCertificate may have made the new certificate the internal transport one:
            # enabling the original for SMTP again (compare-and-set on its thumbprint) puts it back.
            internal = step["internal_transport_certificate"]
            undo.append(
                {
                    **base,
                    "action": "enable-services",
                    "object": internal,
                    "property": "Services",
                    "previous": None,
                    "value": ["SMTP"],
                    "internal_transport_certificate": internal,
                }
            )
        elif action == "remove-certificate" and seen.maybe_written:
            raise JournalError(
                f"step {n} removed certificate {step.get('object')} from {step.get('server')}, which no plan can "
                "bring back"
            )
    for i, step in enumerate(undo, 1):
        step["n"] = i
    summary = f"Roll back {len(undo)} step(s) of the plan, newest first."
    return {**plan, "steps": undo, "kept": [], "rollback": True, "summary": summary}


# --- the decision ------------------------------------------------------------------------------------


def decide(plan: Mapping[str, Any], entries: Sequence[JournalEntry], job_status: str, *, resumes: int = 0) -> Decision:
    """What to do about a job of `plan` that ended (`job_status`, as Automation says) without a result."""
    steps = list(plan.get("steps") or [])
    forward = [e for e in entries if not e.rollback]
    back = [e for e in entries if e.rollback]
    if back:
        return _after_rollback(plan, forward, back)
    seen = _steps(forward)
    if steps and all((seen.get(n) or _Step()).last in ENDED_WELL for n in range(1, len(steps) + 1)):
        return Decision(COMPLETE, f"every one of the {len(steps)} steps ended done or already")
    if not any(s.touched for s in seen.values()):
        return Decision(
            NEEDS_PERSON,
            f"the job ended {job_status} before its first step; nothing was changed: see the job's errors",
        )
    proven = all(
        (seen.get(n) or _Step()).last in ENDED_WELL for n, s in enumerate(steps, 1) if s.get("phase") != "retire"
    )
    if proven:
        failed = [n for n, s in seen.items() if s.last in STOPPED_BADLY]
        if failed:
            n = failed[0]
            return Decision(
                NEEDS_PERSON,
                f"the organisation is switched and proven, but step {n} ({_describe(steps[n - 1])}) "
                f"{seen[n].last}: {seen[n].message or 'no message'}; remove the certificate by hand, or keep it",
            )
        if resumes >= 1 or job_status == "Stopped":
            return Decision(
                NEEDS_PERSON,
                f"the organisation is switched and proven; retiring the old certificate did not finish (job "
                f"{job_status}); remove it by hand, or keep it",
            )
        return Decision(
            RESUME, "the organisation is switched and proven; the retire phase did not finish: run it again", dict(plan)
        )
    try:
        undo = rollback_plan(plan, forward)
    except JournalError as exc:
        return Decision(NEEDS_PERSON, f"the job stopped half-way and {exc}")
    stopped = next((n for n, s in seen.items() if s.last in STOPPED_BADLY), None)
    where = (
        f"step {stopped} ({_describe(steps[stopped - 1])}) {seen[stopped].last}"
        if stopped is not None and stopped <= len(steps)
        else f"the job ended {job_status} before the switch was proven"
    )
    if not undo["steps"]:
        return Decision(ROLLED_BACK, f"{where}; nothing this job changed needs undoing")
    return Decision(ROLL_BACK, f"{where}: undo its {len(undo['steps'])} change(s), newest first", undo)


def _after_rollback(plan: Mapping[str, Any], forward: list[JournalEntry], back: list[JournalEntry]) -> Decision:
    try:
        undo = rollback_plan(plan, forward)
    except JournalError as exc:
        return Decision(NEEDS_PERSON, f"the rollback cannot be complete: {exc}")
    seen = _steps(back)
    bad = next((n for n, s in sorted(seen.items()) if s.last in STOPPED_BADLY), None)
    if bad is not None:
        what = _describe(undo["steps"][bad - 1]) if bad <= len(undo["steps"]) else f"step {bad}"
        return Decision(
            NEEDS_PERSON,
            f"rollback step {bad} ({what}) {seen[bad].last}: {seen[bad].message or 'no message'}; "
            "the organisation may be half-switched: compare it with the plan and set it by hand",
        )
    if all((seen.get(n) or _Step()).last in ENDED_WELL for n in range(1, len(undo["steps"]) + 1)):
        return Decision(ROLLED_BACK, f"every one of the {len(undo['steps'])} rollback steps ended")
    return Decision(ROLL_BACK, "the rollback did not finish: run it again", undo)


def _describe(step: Mapping[str, Any]) -> str:
    where = f" on {step['server']}" if step.get("server") else ""
    return f"{step.get('action')} {str(step.get('object'))[:80]}{where}"
