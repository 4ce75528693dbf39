"""Remediation jobs: the message the Hybrid Runbook Worker side acts on, and where it is queued.

A job carries the plan and the certificate's identifiers (vault, name, version, Key Vault secret id,
thumbprint), never key material: the runbook fetches the PFX from Key Vault with its own identity.
There is one job per (vault, certificate, version), however often Event Grid delivers the event:
`Job.job_id` is derived from that triple, and every `JobQueue` backend refuses a second one.

`JobQueue` is the port; `OutboxQueue` writes plan JSON files to a directory (the local default);
`shared.adapters.azure.storage.StorageJobQueue` sends to an Azure Storage queue.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from shared.errors import CertsyncError

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


class OutboxQueue:
    """Jobs as `<job id>.json` plan files in a directory; a second job with the same id is refused."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CertsyncError(
                f"{self.directory}: cannot create the outbox ({exc.strerror}); check the path"
            ) from None

    def path_for(self, job: Job) -> Path:
        return self.directory / f"{job.job_id}.json"

    def queued(self, vault: str, job_id: str) -> bool:
        return (self.directory / f"{job_id}.json").exists()

    def enqueue(self, job: Job) -> bool:
        final = self.path_for(job)
        temporary = final.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(job.to_json() + "\n", encoding="utf-8")  # compact: `python -m json.tool` reads it
        try:
            os.link(temporary, final)  # atomic, and fails if the job is already there
        except FileExistsError:
            return False
        finally:
            temporary.unlink(missing_ok=True)
        return True
