"""The local job queue: remediation jobs as `<job id>.json` plan files in a directory (`OutboxQueue`),
for `certsync process` and the demo; the runbook can be run by hand on a plan file."""

from __future__ import annotations

import os
from pathlib import Path

from shared.errors import CertsyncError
from shared.pipeline.jobs import Job


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
