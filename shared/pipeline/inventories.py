"""The latest Exchange inventory per worker group, as the pipeline and discovery share it.

`InventoryRecord` is one stored `certsync.inventory/1` document with its collection time;
`InventoryStore` is the port that keeps the latest per worker group (`SqliteInventoryStore` locally,
`TableInventoryStore` in Azure, `FileInventoryStore` for `certsync process --inventory FILE`).
`DiscoveryStarter` is the port the pipeline starts a discovery through when the inventory of a worker
group is missing or older than the max age (`shared.remediation.discovery.Discovery` is one). They live
here, below remediation, because the pipeline plans from them and discovery stores into them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.errors import CertsyncError
from shared.times import format_time, parse_time

DEFAULT_MAX_AGE = dt.timedelta(hours=24)  # CERTSYNC_INVENTORY_MAX_AGE_HOURS


class InventoryError(CertsyncError):
    """A text that is not a usable certsync.inventory/1 document; the message says where and why."""


@dataclass(frozen=True)
class InventoryRecord:
    """The latest inventory of one worker group, as stored: `inventory` is the document itself."""

    worker_group: str
    collected_at: dt.datetime  # when the runbook (or the admin) read Exchange
    stored_at: dt.datetime
    inventory: dict[str, Any] = field(repr=False)
    source: str = "runbook"  # runbook or import
    automation_job: str = ""

    @property
    def errors(self) -> list[dict[str, str]]:
        """The inventory's `errors`: each server or cmdlet discovery could not read ({where, message})."""
        found = self.inventory.get("errors") or []
        return [
            {"where": str(e.get("where") or "?"), "message": str(e.get("message") or "")}
            for e in found
            if isinstance(e, Mapping)
        ]

    def age(self, now: dt.datetime) -> dt.timedelta:
        return now - self.collected_at

    def stale(self, now: dt.datetime, max_age: dt.timedelta) -> bool:
        return self.age(now) > max_age

    def meta(self) -> dict[str, Any]:
        """Everything but the document, JSON-ready (what stores keep beside it and the CLI prints)."""
        return {
            "worker_group": self.worker_group,
            "collected_at": format_time(self.collected_at, "seconds"),
            "stored_at": format_time(self.stored_at, "seconds"),
            "source": self.source,
            "automation_job": self.automation_job,
            "errors": self.errors,
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], inventory: dict[str, Any]) -> InventoryRecord:
        """The record a store wrote with `meta()` beside the document."""
        collected = parse_time_or_none(str(meta.get("collected_at") or ""))
        stored = parse_time_or_none(str(meta.get("stored_at") or ""))
        if collected is None or stored is None:
            raise InventoryError(f"stored inventory of {meta.get('worker_group')!r}: no valid times; discover again")
        return cls(
            worker_group=str(meta.get("worker_group") or ""),
            collected_at=collected,
            stored_at=stored,
            inventory=inventory,
            source=str(meta.get("source") or "runbook"),
            automation_job=str(meta.get("automation_job") or ""),
        )


class InventoryStore(Protocol):
    """The latest inventory per worker group (names compared ignoring case): `SqliteInventoryStore`
    locally, `TableInventoryStore` in Azure (INVENTORY_TABLE). Failures are one-line CertsyncErrors."""

    def put(self, record: InventoryRecord) -> None: ...

    def get(self, worker_group: str) -> InventoryRecord | None: ...

    def all(self) -> list[InventoryRecord]:
        """Every worker group's latest inventory, sorted by worker group."""
        ...


class DiscoveryStarter(Protocol):
    """Starts (or finds, when one runs already) the discovery of a worker group; raises a CertsyncError
    (an `AutomationError`, with `transient`) when it cannot."""

    def start(self, worker_group: str) -> object: ...


def audit_partition(worker_group: str) -> str:
    """Where discovery's audit entries of `worker_group` are (`certsync history discovery/<group>`), and
    the versions waiting for its inventory."""
    return f"discovery/{worker_group.strip().lower()}"


def parse_time_or_none(text: str) -> dt.datetime | None:
    """An ISO 8601 time, or None when blank or not one (each caller words its own error)."""
    try:
        return parse_time(text)
    except ValueError:
        return None
