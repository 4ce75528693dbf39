"""Preflight: a plan is checked against the runbook's contract (`shared.pipeline.contract`) before it is queued,
so that certsync never queues a job that cannot succeed.

`preflight(plan, version, allow_status)` answers the first problem as a `Refusal` (a reason and a one-line
fix), or None. It checks what the runbook would otherwise find only on the worker, after a job was started:

- the certificate's form: the Key Vault secret's content type is one the runbook imports
  (`ACCEPTED_CONTENT_TYPES`: a PFX; a PEM secret is refused with the policy change that fixes it), and the
  secret carries the private key (a policy `exportable: false` leaves it out);
- the status gates agree: the plan's assessment status is `REQUIRED_STATUS`, or one the targets'
  `allow_status` names (only assessment statuses the servers can still read as Valid are accepted there,
  `shared.pipeline.targets.ALLOWED_STATUSES`), and every `check-status` step demands `REQUIRED_STATUS`;
- the plan's shape: `certsync.plan/2`, not blocked, a worker group, every step's action one the runbook has
  a handler for (`ACTIONS`), an Exchange Online step carrying its tenant;
- its size: the plan must fit an Automation job's parameters (`MAX_PARAMETERS_BYTES`) as PlanBase64.

A Key Vault version's facts are known only from Key Vault (`StoredVersion.content_type`, `key_exportable`);
a certificate directory (the local store) has no secret, so those two checks pass there unknown.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from shared.pipeline.contract import ACCEPTED_CONTENT_TYPES, ACTIONS, PLAN_SCHEMA, REQUIRED_STATUS
from shared.pipeline.jobs import MAX_PARAMETERS_BYTES, PARAMETERS_OVERHEAD, plan_base64
from shared.pipeline.sources import StoredVersion
from shared.pipeline.targets import ALLOWED_STATUSES

PEM_CONTENT_TYPE = "application/x-pem-file"
# Actions that write to Exchange Online: each step names its tenant, one connection per tenant. (A
# `test-outbound` step carries the tenant when there is one: Validate-OutboundConnector runs only then.)
EXO_ACTIONS = frozenset({"set-exo-inbound-connector"})


@dataclass(frozen=True)
class Refusal:
    """Why a plan is not queued, and the one thing to do about it."""

    reason: str
    fix: str

    def __str__(self) -> str:
        return f"{self.reason}; fix: {self.fix}"


def preflight(
    plan: Mapping[str, Any], version: StoredVersion | None = None, allow_status: Collection[str] = ()
) -> Refusal | None:
    """The first reason the runbook would refuse `plan` (for the Key Vault `version` it deploys), or None."""
    for check in (_shape, _steps, _size):
        refusal = check(plan)
        if refusal is not None:
            return refusal
    if version is not None:
        refusal = _form(version)
        if refusal is not None:
            return refusal
    return _status(plan, allow_status)


def _shape(plan: Mapping[str, Any]) -> Refusal | None:
    if plan.get("schema") != PLAN_SCHEMA:
        return Refusal(f"the plan is {plan.get('schema')!r}, not {PLAN_SCHEMA}", "plan it again with this certsync")
    blocked = plan.get("blocked")
    if blocked:
        reason = blocked.get("reason", "blocked") if isinstance(blocked, Mapping) else str(blocked)
        fix = blocked.get("fix", "see the plan") if isinstance(blocked, Mapping) else "see the plan"
        return Refusal(f"the plan is blocked ({reason})", str(fix))
    if not isinstance(plan.get("worker_group"), str) or not plan["worker_group"].strip():
        return Refusal("the plan names no worker group", "set worker_group for this certificate in the targets")
    if not isinstance(plan.get("steps"), list):
        return Refusal("the plan has no list of steps", "plan it again with this certsync")
    return None


def _steps(plan: Mapping[str, Any]) -> Refusal | None:
    for n, step in enumerate(plan["steps"], 1):
        if not isinstance(step, Mapping):
            return Refusal(f"step {n} of the plan is not an object", "plan it again with this certsync")
        action = step.get("action")
        if action not in ACTIONS:
            return Refusal(
                f"step {n} of the plan asks for {str(action)[:60]!r}, which the runbook has no handler for",
                "plan it again with this certsync, or update the runbook to the one this certsync ships",
            )
        if action in EXO_ACTIONS and not str(step.get("tenant") or "").strip():
            return Refusal(
                f"step {n} ({action} {str(step.get('object'))[:80]!r}) names no Exchange Online tenant",
                "set CERTSYNC_EXO_TENANT_ID (or discover with the tenant), then plan again",
            )
        if action == "check-status" and step.get("value") != REQUIRED_STATUS:
            return Refusal(
                f"step {n} checks for status {step.get('value')!r}, but the runbook accepts only {REQUIRED_STATUS}",
                "plan it again with this certsync",
            )
    return None


def _size(plan: Mapping[str, Any]) -> Refusal | None:
    size = len(plan_base64(dict(plan))) + PARAMETERS_OVERHEAD
    if size > MAX_PARAMETERS_BYTES:
        return Refusal(
            f"the plan makes {size} bytes of job parameters, more than the {MAX_PARAMETERS_BYTES} an Automation "
            "job takes",
            "narrow it (fewer servers or connectors in the targets), then plan again",
        )
    return None


def _form(version: StoredVersion) -> Refusal | None:
    where = f"Key Vault {version.vault}: certificate {version.name} version {version.version}"
    content_type = (version.content_type or "").lower()
    if version.content_type is not None and content_type not in ACCEPTED_CONTENT_TYPES:
        what = "a PEM secret" if content_type == PEM_CONTENT_TYPE else f"a secret of type {content_type or 'none'!r}"
        return Refusal(
            f"{where} is {what}, and the runbook imports only a PFX ({', '.join(ACCEPTED_CONTENT_TYPES)})",
            "set the Key Vault certificate policy's contentType to application/x-pkcs12, then renew",
        )
    if version.key_exportable is False:
        return Refusal(
            f"{where} has a key that cannot be exported, so the import on the servers would have no private key",
            "create the certificate with exportable: true",
        )
    return None


def _status(plan: Mapping[str, Any], allow_status: Collection[str]) -> Refusal | None:
    status = plan.get("assessment_status", REQUIRED_STATUS)
    if status == REQUIRED_STATUS:
        return None
    if status in allow_status and status in ALLOWED_STATUSES:
        return None
    return Refusal(
        f"the certificate is {status}, and the runbook imports only a certificate the servers read as "
        f"{REQUIRED_STATUS}",
        "run certsync check on it and fix what it reports"
        + (f" (allow_status may name only {', '.join(ALLOWED_STATUSES)})" if status not in ALLOWED_STATUSES else ""),
    )
