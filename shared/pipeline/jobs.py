"""Remediation jobs: the message the Hybrid Runbook Worker side acts on, and where it is queued.

A job carries the plan and the certificate's identifiers (vault, name, version, Key Vault secret id,
thumbprint), never key material: the runbook fetches the PFX from Key Vault with its own identity.
There is one job per (vault, certificate, version), however often Event Grid delivers the event:
`Job.job_id` is derived from that triple, and every `JobQueue` backend refuses a second one.

`JobQueue` is the port; `shared.adapters.local.outbox.OutboxQueue` writes plan JSON files to a directory
(the local default); `shared.adapters.azure.queues.StorageJobQueue` sends to an Azure Storage queue.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Protocol

JOB_SCHEMA = "certsync.job/1"


def job_id(vault: str, name: str, version: str) -> str:
    """Deterministic: the same (vault, certificate, version) always gives the same id."""
    key = f"{vault.lower()}/{name.lower()}/{version.lower()}".encode()
    return hashlib.sha256(key).hexdigest()[:32]


@dataclass(frozen=True)
class Job:
    vault: str
    certificate: str
    version: str
    secret_id: str
    thumbprint: str
    correlation_id: str
    plan: dict

    @property
    def job_id(self) -> str:
        return job_id(self.vault, self.certificate, self.version)

    def to_dict(self) -> dict:
        return {
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


class JobQueue(Protocol):
    def enqueue(self, job: Job) -> bool:
        """Queue the job; False (and nothing sent) when this job was queued before."""
        ...

    def queued(self, vault: str, job_id: str) -> bool:
        """Whether the job with this id was queued already (a redelivered event then stops early)."""
        ...
