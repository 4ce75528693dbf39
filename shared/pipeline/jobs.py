"""Remediation requests: the `certsync.job/1` message the Hybrid Runbook Worker side acts on, and the
queue it waits in.

A `RemediationRequest` carries the plan (its `certsync.plan/2` document, `shared.pipeline.process.plan_document`,
passed through unchanged to the runbook) and the certificate's identifiers (vault, name, version, Key Vault
secret id, thumbprint), never key material: the runbook fetches the PFX from Key Vault with its own
identity. There is one request per (vault, certificate, version), however often Event Grid delivers
the event: its `job_id` is derived from that triple, and every `RemediationQueue` backend refuses a
second one. The same id names the Azure Automation job's `JobId` parameter and the runbook's `certsync.result/1`.

`RemediationQueue` is the port; `shared.adapters.local.outbox.OutboxQueue` writes request JSON files to a
directory (the local default); `shared.adapters.azure.queues.StorageRemediationQueue` sends to the Azure
Storage queue REMEDIATION_QUEUE.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict

PlanDocument = dict[str, Any]  # certsync.plan/2 (exchange-inventory.md §3)
# The plans a job may carry: the pipeline queues plan/2; plan/1 jobs queued before the upgrade still run.
PLAN_SCHEMAS = ("certsync.plan/1", "certsync.plan/2")

JOB_SCHEMA = "certsync.job/1"  # the schema of a remediation request (its name on the wire predates the type's)


# What certsync lets an Automation job's parameters weigh, as JSON text (names plus quoted values). The
# Jobs - Create reference states no limit; 512 KiB is taken as the bound until a documented one is known
# (docs/remediation.md, "Parameter transport").
MAX_PARAMETERS_BYTES = 512 * 1024
PARAMETERS_OVERHEAD = 1024  # the other job parameters (ids, the callback URL) and the JSON around them


def plan_base64(plan: dict[str, Any]) -> str:
    """The plan as it travels to the runbook (its PlanBase64 parameter): base64 of its canonical UTF-8 JSON
    text (sorted keys, no spaces). Base64 holds no quote, brace or escape, so no JSON decoding on the way
    can change it."""
    text = json.dumps(plan, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def job_id(vault: str, name: str, version: str) -> str:
    """Deterministic: the same (vault, certificate, version) always gives the same id."""
    key = f"{vault.lower()}/{name.lower()}/{version.lower()}".encode()
    return hashlib.sha256(key).hexdigest()[:32]


def follow_up_id(of: str, follow_up: str) -> str:
    """The job id of follow-up `follow_up` ("roll-back-1") of job `of`: deterministic, so it is queued once."""
    return hashlib.sha256(f"{of}/{follow_up}".encode()).hexdigest()[:32]


class _RemediationRequestDocumentBase(TypedDict):
    schema: str
    job_id: str
    correlation_id: str
    vault: str
    certificate: str
    version: str
    secret_id: str
    thumbprint: str
    plan: PlanDocument


class RemediationRequestDocument(_RemediationRequestDocumentBase, total=False):
    """The `certsync.job/1` message as JSON."""

    attempt: int  # transient start failures so far, when remediation re-enqueues it (absent at 0)
    follow_up: str  # a follow-up of the version's job ("roll-back-1", "resume-1"): its own job id


@dataclass(frozen=True)
class RemediationRequest:
    """The `certsync.job/1` queue message: deploy this certificate version by this plan."""

    vault: str
    certificate: str
    version: str
    secret_id: str
    thumbprint: str
    correlation_id: str
    plan: PlanDocument
    # A follow-up job certsync queued after the version's job ended without a result (the journal's
    # decision: "roll-back-1", "resume-1"): it has its own job id, derived from the version's and this.
    follow_up: str = ""

    @property
    def job_id(self) -> str:
        return follow_up_id(self.of, self.follow_up) if self.follow_up else self.of

    @property
    def of(self) -> str:
        """The version's own job id (the job a follow-up follows)."""
        return job_id(self.vault, self.certificate, self.version)

    def to_dict(self) -> RemediationRequestDocument:
        extra: RemediationRequestDocument = {"follow_up": self.follow_up} if self.follow_up else {}  # type: ignore[typeddict-item]
        return extra | {
            "schema": JOB_SCHEMA,
            "job_id": self.job_id,
            "correlation_id": self.correlation_id,
            "vault": self.vault,
            "certificate": self.certificate,
            "version": self.version,
            "secret_id": self.secret_id,
            "thumbprint": self.thumbprint,
            "plan": self.plan,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


class RemediationQueue(Protocol):
    def enqueue(self, request: RemediationRequest) -> bool:
        """Queue the request; False (and nothing sent) when a request with its job id was queued before."""
        ...

    def queued(self, vault: str, job_id: str) -> bool:
        """Whether the request with this job id was queued already (a redelivered event then stops early)."""
        ...
