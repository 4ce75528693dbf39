"""Azure Table storage backends: the audit trail (`TableAuditLog`) and the daily reconciliation's finding
states and status snapshots (`TableStateStore`), and the latest Exchange inventory per worker group
(`TableInventoryStore`, chunked). Errors are one-line `StorageError`s naming the table.

The Azure SDKs are imported inside the methods that need them, never at module import.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import re
import uuid
from collections.abc import Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from shared.adapters.azure.storage import (
    CUT_MARKER,
    create_if_missing,
    fit_table_string,
    storage_errors,
    table_key,
    table_string_fits,
)
from shared.errors import StorageError
from shared.pipeline.audit import HISTORY_PAGE, AuditEntry, check_limit, lower_bound, partition
from shared.pipeline.inventories import InventoryRecord
from shared.reconciliation.reconcile import certificate_key, fit_snapshot
from shared.reconciliation.snapshot import StatusSnapshot, by_certificate
from shared.times import format_time

if TYPE_CHECKING:
    from azure.data.tables import TableClient

# Every audit row is also one record of this logger: the Functions worker exports the `certsync` loggers to
# Application Insights, where infra/workbooks/certsync-audit.json and the alerts in infra/modules/alerts.bicep
# query them (Azure Monitor cannot query Table storage). Identifiers and statuses only, never details.
audit_log = logging.getLogger("certsync.audit")


def log_audit_entry(entry: AuditEntry) -> None:
    """One `certsync.audit` record for `entry`, its fields as `certsync.audit.*` custom dimensions."""
    status = entry.details.get("status") if isinstance(entry.details, Mapping) else None
    audit_log.info(
        "%s %s: %s",
        entry.certificate,
        entry.kind,
        entry.summary,
        extra={
            "certsync.audit.certificate": entry.certificate,
            "certsync.audit.kind": entry.kind,
            "certsync.audit.correlation_id": entry.correlation_id,
            "certsync.audit.vault": entry.vault,
            "certsync.audit.version": entry.version,
            "certsync.audit.status": status if isinstance(status, str) else "",
        },
    )


# --- batch transactions ------------------------------------------------------------------------------------

# A Table transaction holds up to 100 operations on one partition, 4 MiB in all; keep well under the size.
TRANSACTION_OPERATIONS = 100
TRANSACTION_BYTES = 3 * 1024 * 1024


class _Batcher:
    """Writes to one table, sent at once or, inside `batch()`, gathered and sent as transactions per
    partition (`submit_transaction`, up to 100 operations each) when the outermost block ends, or
    before a read (`flush`: a store reads its own writes). Within a batch the last write to a row wins.
    The table is created on the first write."""

    def __init__(self, table_client: TableClient, what: str) -> None:
        self._table = table_client
        self._what = what
        self._created = False
        self._depth = 0
        self._pending: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}

    def write(self, operation: str, entity: dict[str, Any]) -> None:
        """`operation`: "create", "upsert" (replace) or "delete"."""
        if self._depth:
            self._pending[(entity["PartitionKey"], entity["RowKey"])] = (operation, entity)
            return
        self._send([(operation, entity)])

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.flush()

    def flush(self) -> None:
        """Send what the batch gathered so far."""
        pending, self._pending = self._pending, {}
        if pending:
            self._flush(list(pending.values()))

    def _flush(self, operations: list[tuple[str, dict[str, Any]]]) -> None:
        by_partition: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for operation, entity in operations:
            by_partition.setdefault(entity["PartitionKey"], []).append((operation, entity))
        for group in by_partition.values():
            chunk: list[tuple[str, dict[str, Any]]] = []
            size = 0
            for item in group:
                item_size = len(json.dumps(item[1], default=str))
                if chunk and (len(chunk) == TRANSACTION_OPERATIONS or size + item_size > TRANSACTION_BYTES):
                    self._send(chunk)
                    chunk, size = [], 0
                chunk.append(item)
                size += item_size
            if chunk:
                self._send(chunk)

    def send_now(self, operations: list[tuple[str, dict[str, Any]]]) -> None:
        """`operations` (creates) as one transaction now, the table made first; the SDK's exceptions are the
        caller's to handle (inside `storage_errors`)."""
        if not self._created:
            create_if_missing(self._table.create_table)
            self._created = True
        self._table.submit_transaction(operations)

    def _send(self, operations: list[tuple[str, dict[str, Any]]]) -> None:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.data.tables import UpdateMode

        with storage_errors(self._what, self._table):
            if not self._created and any(op != "delete" for op, _ in operations):
                create_if_missing(self._table.create_table)
                self._created = True
            if len(operations) > 1:
                self._table.submit_transaction(
                    [
                        (op, entity, {"mode": UpdateMode.REPLACE}) if op == "upsert" else (op, entity)
                        for op, entity in operations
                    ]
                )
                return
            operation, entity = operations[0]
            if operation == "create":
                self._table.create_entity(entity)
            elif operation == "upsert":
                self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)
            else:
                with contextlib.suppress(ResourceNotFoundError):
                    self._table.delete_entity(entity["PartitionKey"], entity["RowKey"])


def _untable_key(key: str) -> str:
    """The value `table_key` escaped."""
    return re.sub(r"%([0-9A-F]{2})", lambda match: chr(int(match.group(1), 16)), key)


# --- the audit trail ---------------------------------------------------------------------------------------

# The RowKey prefix of `record_once`'s key rows: "~" sorts after the digits every entry's RowKey starts with.
ONCE_PREFIX = "~once~"


class TableAuditLog:
    """The audit trail in one Azure Table: a partition per certificate, a row per entry in time order.

    Properties are the fields of `AuditEntry.to_dict()`, `details` as JSON text. A text field too long for
    a Table string property (a summary quoting a 40,000-character URL) is stored cut, ending in
    `CUT_MARKER`, so every entry fits whatever the input; lone surrogates are stored as U+FFFD. Details whose JSON does
    not fit a Table string property (64 KiB as UTF-16) are stored cut, with `details_truncated=True`;
    `history` then gives `{"details_truncated": True, "details_json": <the cut text>}` as details.
    `history` asks for `page_size` entities per page (the service answers at most 1,000)."""

    def __init__(self, table_client: TableClient, *, page_size: int = HISTORY_PAGE) -> None:
        self.page_size = page_size
        self._table = table_client
        self._what = f"audit table {table_client.table_name}"
        self._writes = _Batcher(table_client, self._what)

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Record the entries written inside as one transaction per certificate (partition), at the end."""
        return self._writes.batch()

    def record(self, entry: AuditEntry) -> None:
        self._writes.write("create", _audit_entity(entry))
        log_audit_entry(entry)

    def record_once(self, entry: AuditEntry, key: str) -> bool:
        """`AuditLog.record_once`: a row for the key (RowKey `~once~<key>`, after every entry's key, so
        history never reads it) and the entry created in one transaction on the certificate's partition;
        a key recorded before fails it with EntityAlreadyExists, and neither is written. What a `batch`
        gathered is sent first."""
        from azure.data.tables import TableTransactionError

        entity = _audit_entity(entry)
        marker = {
            "PartitionKey": entity["PartitionKey"],
            "RowKey": ONCE_PREFIX + table_key(key),
            "entry": entry.row_key,
        }
        self._writes.flush()
        with storage_errors(self._what, self._table):
            try:
                self._writes.send_now([("create", marker), ("create", entity)])
            except TableTransactionError as exc:
                # The key's row (operation 0) exists; anything else is a failure (a StorageError).
                if getattr(exc, "error_code", None) != "EntityAlreadyExists" or exc.index != 0:
                    raise
                return False
        log_audit_entry(entry)
        return True

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

        self._writes.flush()
        query, parameters = "PartitionKey eq @pk and RowKey lt @once", {"pk": key, "once": ONCE_PREFIX}
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

    def histories(self, certificates: Collection[str]) -> dict[str, list[AuditEntry]]:
        """The certificates' entries by partition, oldest first, in one query over a range of partitions."""
        from azure.core.exceptions import ResourceNotFoundError

        keys = {table_key(partition(c)): partition(c) for c in certificates}
        if not keys:
            return {}
        self._writes.flush()
        with storage_errors(self._what, self._table):
            try:
                rows = list(
                    self._table.query_entities(
                        "PartitionKey ge @first and PartitionKey le @last and RowKey lt @once",
                        parameters={"first": min(keys), "last": max(keys), "once": ONCE_PREFIX},
                    )
                )
            except ResourceNotFoundError:  # no table yet: nothing was ever recorded
                return {}
        rows.sort(key=lambda row: (row["PartitionKey"], row["RowKey"]))
        found: dict[str, list[AuditEntry]] = {}
        for row in rows:
            if row["PartitionKey"] in keys:
                entry = AuditEntry.from_stored(row["RowKey"], _entry_dict(row))
                found.setdefault(keys[row["PartitionKey"]], []).append(entry)
        return found


def _audit_entity(entry: AuditEntry) -> dict[str, Any]:
    properties = entry.to_dict()
    details, truncated = fit_table_string(json.dumps(properties.pop("details"), sort_keys=True, ensure_ascii=False))
    entity: dict[str, Any] = {
        "PartitionKey": table_key(partition(entry.certificate)),
        "RowKey": entry.row_key,
        **{k: fit_table_string(v, CUT_MARKER)[0] if isinstance(v, str) else v for k, v in properties.items()},
        "details": details,
    }
    if truncated:
        entity["details_truncated"] = True
    return entity


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
        self._writes = _Batcher(table_client, self._what)

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Write the states and snapshots put inside as transactions per partition, at the end."""
        return self._writes.batch()

    def get(self, certificate: str, finding: str) -> str | None:
        from azure.core.exceptions import ResourceNotFoundError

        self._writes.flush()
        with storage_errors(self._what, self._table):
            try:
                row = self._table.get_entity(table_key(certificate.lower()), table_key(finding))
            except ResourceNotFoundError:  # no such row, or no table yet: nothing remembered
                return None
        return row.get("state")

    def states(self) -> dict[tuple[str, str], str]:
        """Every remembered state in one query (every partition but the snapshots')."""
        from azure.core.exceptions import ResourceNotFoundError

        self._writes.flush()
        with storage_errors(self._what, self._table):
            try:
                rows = list(
                    self._table.query_entities(
                        "PartitionKey ne @pk",
                        parameters={"pk": _SNAPSHOT_PARTITION},
                        select=["PartitionKey", "RowKey", "state"],
                    )
                )
            except ResourceNotFoundError:  # no table yet: nothing remembered
                return {}
        return {(_untable_key(r["PartitionKey"]), _untable_key(r["RowKey"])): r["state"] for r in rows}

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

        self._writes.flush()
        with storage_errors(self._what, self._table):
            try:
                rows = list(self._table.query_entities("PartitionKey eq @pk", parameters={"pk": _SNAPSHOT_PARTITION}))
            except ResourceNotFoundError:  # no table yet: no run has written one
                return []
        return by_certificate(json.loads(row["snapshot"]) for row in rows)

    def snapshot_keys(self) -> set[str]:
        from azure.core.exceptions import ResourceNotFoundError

        self._writes.flush()
        with storage_errors(self._what, self._table):
            try:
                rows = list(
                    self._table.query_entities(
                        "PartitionKey eq @pk", parameters={"pk": _SNAPSHOT_PARTITION}, select=["vault", "certificate"]
                    )
                )
            except ResourceNotFoundError:  # no table yet: no run has written one
                return set()
        return {certificate_key(str(row["vault"]), str(row["certificate"])) for row in rows}

    def snapshot(self, vault: str, certificate: str) -> StatusSnapshot | None:
        from azure.core.exceptions import ResourceNotFoundError

        self._writes.flush()
        with storage_errors(self._what, self._table):
            try:
                row = self._table.get_entity(_SNAPSHOT_PARTITION, table_key(certificate_key(vault, certificate)))
            except ResourceNotFoundError:  # no such row, or no table yet
                return None
        return json.loads(row["snapshot"])

    def delete_snapshot(self, vault: str, certificate: str) -> None:
        key = table_key(certificate_key(vault, certificate))
        self._writes.write("delete", {"PartitionKey": _SNAPSHOT_PARTITION, "RowKey": key})

    def _upsert(self, entity: dict[str, Any]) -> None:
        self._writes.write("upsert", entity)


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
