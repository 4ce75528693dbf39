"""The Automation port: what remediation needs of Azure Automation, and the types it speaks in.

`Automation` is implemented over ARM REST by `shared.adapters.azure.automation.AutomationClient`; the job
(`AutomationJob`), the failure (`AutomationError`, transient or not), the job states that end a job
(`TERMINAL`, of which `FAILED_STATES` are failures) and the deterministic job name (`job_name`) live here,
on the layer's side, so that remediation never imports an adapter.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from shared.errors import CertsyncError

# Suspended is terminal for us: the job waits for a human (e.g. after three worker restarts).
TERMINAL = frozenset({"Completed", "Failed", "Stopped", "Suspended"})
FAILED_STATES = ("Failed", "Stopped", "Suspended")

_CERTSYNC_JOB_ID = re.compile(r"^[0-9a-fA-F]{32}$")


class AutomationError(CertsyncError):
    """Azure Automation refused a call or could not be reached.

    `transient` says whether trying again later may succeed (then `retry_after` holds the seconds the
    server asked for, if it did); `status` is the HTTP status (None when no answer came) and `code`
    ARM's error code (or a code of ours: ConnectionError, Timeout, CredentialUnavailable, ...)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "",
        transient: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.transient = transient
        self.retry_after = retry_after


@dataclass(frozen=True)
class AutomationJob:
    """One Automation job as ARM reported it. Times are ARM's ISO 8601 strings (None until set)."""

    name: str
    job_id: str
    status: str
    status_details: str
    exception: str | None
    run_on: str
    runbook: str
    start_time: str | None
    end_time: str | None
    created: bool = False  # True when the call that returned this job created it

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def job_name(certsync_job_id: str) -> str:
    """The Automation job name for a certsync job id (32 hex digits): the id as a GUID, so the same
    plan always maps to the same Automation job."""
    if not isinstance(certsync_job_id, str) or not _CERTSYNC_JOB_ID.match(certsync_job_id):
        raise CertsyncError(
            f"{certsync_job_id!r} is not a certsync job id (32 hex digits); the job message is malformed"
        )
    return str(uuid.UUID(hex=certsync_job_id))


class Automation(Protocol):
    """What remediation needs of Azure Automation (`shared.adapters.azure.automation.AutomationClient`).
    Every failure is an `AutomationError`."""

    def start_job(self, name: str, runbook: str, parameters: Mapping[str, str], run_on: str) -> AutomationJob: ...

    def get_job(self, name: str) -> AutomationJob: ...

    def output(self, name: str) -> str: ...

    def error_streams(self, name: str) -> list[str]: ...
