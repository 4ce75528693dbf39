"""Azure Table storage backends: the audit trail (`TableAuditLog`) and the daily reconciliation's finding
states and status snapshots (`TableStateStore`). Errors are one-line `StorageError`s naming the table.

The Azure SDKs are imported inside the methods that need them, never at module import.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from shared.adapters.azure.storage import (
    create_if_missing,
    fit_table_string,
    storage_errors,
    table_key,
    table_string_fits,
)
from shared.pipeline.audit import HISTORY_PAGE, AuditEntry, check_limit, lower_bound, partition
from shared.reconciliation.reconcile import certificate_key, fit_snapshot
from shared.reconciliation.snapshot import StatusSnapshot, by_certificate
from shared.times import format_time

if TYPE_CHECKING:
    from azure.data.tables import TableClient


# --- the audit trail ---------------------------------------------------------------------------------------


class TableAuditLog:
    """The audit trail in one Azure Table: a partition per certificate, a row per entry in time order.

    Properties are the fields of `AuditEntry.to_dict()`, `details` as JSON text. Details whose JSON does
    not fit a Table string property (64 KiB as UTF-16) are stored cut, with `details_truncated=True`;
    `history` then gives `{"details_truncated": True, "details_json": <the cut text>}` as details.
    `history` asks for `page_size` entities per page (the service answers at most 1,000)."""

    def __init__(self, table_client: TableClient, *, page_size: int = HISTORY_PAGE) -> None:
        self.page_size = page_size
        self._table = table_client
        self._what = f"audit table {table_client.table_name}"
        self._created = False

    def record(self, entry: AuditEntry) -> None:
        properties = entry.to_dict()
        details, truncated = fit_table_string(json.dumps(properties.pop("details"), sort_keys=True, ensure_ascii=False))
        entity: dict[str, Any] = {
            "PartitionKey": table_key(partition(entry.certificate)),
            "RowKey": entry.row_key,
            **properties,
            "details": details,
        }
        if truncated:
            entity["details_truncated"] = True
        with storage_errors(self._what, self._table):
            if not self._created:
                create_if_missing(self._table.create_table)
                self._created = True
            self._table.create_entity(entity)

    def history(
        self,
        certificate: str,
        *,
        since: dt.datetime | None = None,
        after: str | None = None,
        limit: int | None = None,
    ) -> Iterator[AuditEntry]:
        """One partition query, `RowKey gt` the lower bound, fetched a page (`results_per_page`) at a time
        as the caller iterates; the service returns a partition in RowKey order."""
        check_limit(limit)
        return self._pages(table_key(partition(certificate)), lower_bound(since, after), limit)

    def _pages(self, key: str, bound: str, limit: int | None) -> Iterator[AuditEntry]:
        from azure.core.exceptions import ResourceNotFoundError

        query, parameters = "PartitionKey eq @pk", {"pk": key}
        if bound:
            query, parameters = query + " and RowKey gt @after", {**parameters, "after": bound}
        left = limit
        with storage_errors(self._what, self._table):
            pages = self._table.query_entities(
                query, parameters=parameters, results_per_page=min(limit or self.page_size, self.page_size)
            ).by_page()
        while True:
            with storage_errors(self._what, self._table):
                try:
                    rows = list(next(pages))
                except (StopIteration, ResourceNotFoundError):  # the end, or no table yet: nothing recorded
                    return
            for row in rows[:left]:
                yield AuditEntry.from_stored(row["RowKey"], _entry_dict(row))
            if left is not None:
                left -= len(rows)
                if left <= 0:
                    return


def _entry_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    data = dict(row)
    text = data.get("details") or "{}"
    if data.get("details_truncated"):
        data["details"] = {"details_truncated": True, "details_json": text}
    else:
        data["details"] = json.loads(text)
    return data


# --- the reconciliation's state ---------------------------------------------------------------


_SNAPSHOT_PARTITION = "snapshot"  # certificate keys hold a "/", escaped in keys, so never this


class TableStateStore:
    """States and snapshots in one Azure Table (STATE_TABLE, default certsyncstate).

    A state is a row (PartitionKey: the certificate key; RowKey: the finding) with `state` and `at`. A
    snapshot is a row in the partition `snapshot` (RowKey: the certificate key) holding its JSON in one
    string property; a snapshot too large for a property (64 KiB as UTF-16) is stored shortened
    (`fit_snapshot`), still valid JSON. Errors are one-line `StorageError`s naming the table."""

    def __init__(self, table_client: TableClient) -> None:
        self._table = table_client
        self._what = f"state table {table_client.table_name}"
        self._created = False

    def get(self, certificate: str, finding: str) -> str | None:
        from azure.core.exceptions import ResourceNotFoundError

        with storage_errors(self._what, self._table):
            try:
                row = self._table.get_entity(table_key(certificate.lower()), table_key(finding))
            except ResourceNotFoundError:  # no such row, or no table yet: nothing remembered
                return None
        return row.get("state")

    def put(self, certificate: str, finding: str, state: str, at: dt.datetime) -> None:
        self._upsert(
            {
                "PartitionKey": table_key(certificate.lower()),
                "RowKey": table_key(finding),
                "state": state,
                "at": format_time(at, timespec="seconds"),
            }
        )

    def put_snapshot(self, snapshot: StatusSnapshot) -> None:
        key = certificate_key(snapshot["vault"], snapshot["certificate"])
        self._upsert(
            {
                "PartitionKey": _SNAPSHOT_PARTITION,
                "RowKey": table_key(key),
                "certificate": str(snapshot["certificate"]),
                "vault": str(snapshot["vault"]),
                "snapshot": fit_snapshot(snapshot, table_string_fits),
            }
        )

    def snapshots(self) -> list[StatusSnapshot]:
        from azure.core.exceptions import ResourceNotFoundError

        with storage_errors(self._what, self._table):
            try:
                rows = list(self._table.query_entities("PartitionKey eq @pk", parameters={"pk": _SNAPSHOT_PARTITION}))
            except ResourceNotFoundError:  # no table yet: no run has written one
                return []
        return by_certificate(json.loads(row["snapshot"]) for row in rows)

    def delete_snapshot(self, vault: str, certificate: str) -> None:
        with storage_errors(self._what, self._table):
            self._table.delete_entity(_SNAPSHOT_PARTITION, table_key(certificate_key(vault, certificate)))

    def _upsert(self, entity: dict[str, Any]) -> None:
        from azure.data.tables import UpdateMode

        with storage_errors(self._what, self._table):
            if not self._created:
                create_if_missing(self._table.create_table)
                self._created = True
            self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)
