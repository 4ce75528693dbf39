"""The local remediation queue: remediation requests as `<job id>.json` files in a directory (`OutboxQueue`),
for `certsync process` and the demo; the runbook can be run by hand on the plan in one."""

from __future__ import annotations

import os
from pathlib import Path

from shared.errors import CertsyncError
from shared.pipeline.jobs import RemediationRequest


class OutboxQueue:
    """Remediation requests as `<job id>.json` files in a directory; a second one with the same id is refused."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CertsyncError(
                f"{self.directory}: cannot create the outbox ({exc.strerror}); check the path"
            ) from None

    def path_for(self, request: RemediationRequest) -> Path:
        return self.directory / f"{request.job_id}.json"

    def queued(self, vault: str, job_id: str) -> bool:
        return (self.directory / f"{job_id}.json").exists()

    def enqueue(self, request: RemediationRequest) -> bool:
        final = self.path_for(request)
        temporary = final.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(request.to_json() + "\n", encoding="utf-8")  # compact: `python -m json.tool` reads it
        try:
            os.link(temporary, final)  # atomic, and fails if the request is already there
        except FileExistsError:
            return False
        finally:
            temporary.unlink(missing_ok=True)
        return True
