"""Azure Table storage backends: the audit trail (`TableAuditLog`) and the daily reconciliation's finding
states and status snapshots (`TableStateStore`), and the latest Exchange inventory per worker group
(`TableInventoryStore`, chunked). Errors are one-line `StorageError`s naming the table.

The Azure SDKs are imported inside the methods that need them, never at module import.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared.adapters.azure.storage import (
    create_if_missing,
    fit_table_string,
    storage_errors,
    table_key,
    table_string_fits,
)
from shared.errors import StorageError
from shared.pipeline.audit import AuditEntry, partition
from shared.pipeline.inventories import InventoryRecord
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
    `history` then gives `{"details_truncated": True, "details_json": <the cut text>}` as details."""

    def __init__(self, table_client: TableClient) -> None:
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

    def history(self, certificate: str) -> list[AuditEntry]:
        from azure.core.exceptions import ResourceNotFoundError

        with storage_errors(self._what, self._table):
            try:
                rows = list(
                    self._table.query_entities(
                        "PartitionKey eq @pk", parameters={"pk": table_key(partition(certificate))}
                    )
                )
            except ResourceNotFoundError:  # no table yet: nothing was ever recorded
                return []
        rows.sort(key=lambda row: row["RowKey"])
        return [AuditEntry.from_stored(row["RowKey"], _entry_dict(row)) for row in rows]


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


# --- the latest inventory per worker group ----------------------------------------------------------


_META_ROW = "meta"
CHUNK_CHARS = 16_000  # code points per property: at most 64 000 bytes as UTF-16, under the 64 KiB limit
CHUNKS_PER_ROW = 12  # 12 properties of at most 64 000 bytes stay under an entity's 1 MiB


class TableInventoryStore:
    """The latest inventory per worker group in one Azure Table (INVENTORY_TABLE, default certsyncinventory).

    A worker group is a partition (its lower-case name). An inventory's JSON is far larger than one string
    property holds (64 KiB), so it is cut into `CHUNK_CHARS`-character pieces, `CHUNKS_PER_ROW` properties
    (`p00`, `p01`, ...) to a row `chunk-<generation>-<nnnnn>`. The row `meta` says which generation is the
    current one and is written last, so a reader never sees half an inventory; the previous generation's
    rows are deleted afterwards. Errors are one-line `StorageError`s naming the table."""

    def __init__(self, table_client: TableClient) -> None:
        self._table = table_client
        self._what = f"inventory table {table_client.table_name}"
        self._created = False

    def put(self, record: InventoryRecord) -> None:
        from azure.data.tables import UpdateMode

        key = table_key(record.worker_group.lower())
        text = json.dumps(record.inventory, ensure_ascii=False)
        pieces = [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)] or [""]
        generation = uuid.uuid4().hex
        previous = self._meta(key)
        with storage_errors(self._what, self._table):
            if not self._created:
                create_if_missing(self._table.create_table)
                self._created = True
            rows = 0
            for start in range(0, len(pieces), CHUNKS_PER_ROW):
                entity: dict[str, Any] = {"PartitionKey": key, "RowKey": _chunk_row(generation, rows)}
                for index, piece in enumerate(pieces[start : start + CHUNKS_PER_ROW]):
                    entity[f"p{index:02d}"] = piece
                self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)
                rows += 1
            meta = {
                "PartitionKey": key,
                "RowKey": _META_ROW,
                "meta": json.dumps(record.meta(), sort_keys=True, ensure_ascii=False),
                "generation": generation,
                "rows": rows,
                "chars": len(text),
            }
            self._table.upsert_entity(meta, mode=UpdateMode.REPLACE)
            if previous is not None:
                for row in self._chunks(key, str(previous.get("generation") or "")):
                    self._table.delete_entity(key, row["RowKey"])

    def get(self, worker_group: str) -> InventoryRecord | None:
        key = table_key(worker_group.lower())
        meta = self._meta(key)
        return self._record(meta) if meta is not None else None

    def all(self) -> list[InventoryRecord]:
        from azure.core.exceptions import ResourceNotFoundError

        with storage_errors(self._what, self._table):
            try:
                metas = list(self._table.query_entities("RowKey eq @row", parameters={"row": _META_ROW}))
            except ResourceNotFoundError:  # no table yet: nothing discovered
                return []
        metas.sort(key=lambda row: row["PartitionKey"])
        return [self._record(meta) for meta in metas]

    def _meta(self, key: str) -> Mapping[str, Any] | None:
        from azure.core.exceptions import ResourceNotFoundError

        with storage_errors(self._what, self._table):
            try:
                return self._table.get_entity(key, _META_ROW)
            except ResourceNotFoundError:  # no such group, or no table yet
                return None

    def _chunks(self, key: str, generation: str) -> list[Mapping[str, Any]]:
        with storage_errors(self._what, self._table):
            rows = list(
                self._table.query_entities(
                    "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                    parameters={"pk": key, "lo": f"chunk-{generation}-", "hi": f"chunk-{generation}."},
                )
            )
        return sorted(rows, key=lambda row: row["RowKey"])

    def _record(self, meta: Mapping[str, Any]) -> InventoryRecord:
        key = str(meta["PartitionKey"])
        rows = self._chunks(key, str(meta.get("generation") or ""))
        text = "".join(
            str(row[f"p{index:02d}"]) for row in rows for index in range(CHUNKS_PER_ROW) if f"p{index:02d}" in row
        )
        if len(rows) != meta.get("rows") or len(text) != meta.get("chars"):
            raise StorageError(
                f"{self._what}: the inventory of {key} is incomplete ({len(rows)} of {meta.get('rows')} rows);"
                " run discovery again"
            )
        return InventoryRecord.from_meta(json.loads(str(meta["meta"])), json.loads(text))


def _chunk_row(generation: str, row: int) -> str:
    return f"chunk-{generation}-{row:05d}"
