"""The local SQLite backends: the audit trail (`SqliteAuditLog`, for `certsync process` and `certsync
history`) and the reconciliation's finding states and status snapshots (`SqliteStateStore`, for `certsync
reconcile`) and the latest inventory per worker group (`SqliteInventoryStore`, for `certsync discover`), each in
one file opened through `SqliteFile`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

from shared.errors import CertsyncError
from shared.pipeline.audit import HISTORY_PAGE, AuditEntry, check_limit, lower_bound, partition
from shared.pipeline.inventories import InventoryRecord
from shared.reconciliation.snapshot import StatusSnapshot, by_certificate
from shared.times import format_time

_WRITES = frozenset({"INSERT", "UPDATE", "DELETE", "REPLAC"})  # a statement's first six characters


class SqliteFile:
    """One SQLite file of a local backend (created on first use); one statement at a time across threads.

    Each statement is its own transaction, except inside `batch()`: one transaction for all of them."""

    def __init__(self, path: str | Path, schema: str, what: str) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Reconcile's pool workers write to one file from several processes: wait for the lock.
            self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
            # WAL with NORMAL sync: a write survives a crash of the process, and does not wait for the
            # disk (a power cut may lose the last writes; the Azure backends are the durable ones).
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(schema)
        except (OSError, sqlite3.Error) as exc:
            raise CertsyncError(f"{self.path}: cannot open the {what} database ({exc}); check the path") from None
        self._lock = threading.RLock()
        self._depth = 0  # nested batches: the outermost commits
        self._held: list[tuple[str, tuple]] = []  # writes held by `buffered`, oldest first
        self._buffering = 0  # nested `buffered` blocks: the outermost sends what is left

    def execute(self, sql: str, params: tuple = ()) -> list[tuple]:
        """The statement's rows (none for a write). Inside `buffered`, a write is held until the next read."""
        with self._lock:
            if self._buffering and sql.lstrip()[:6].upper() in _WRITES:
                self._held.append((sql, params))
                return []
            self._send_held()
            return self._db.execute(sql, params).fetchall()

    @contextlib.contextmanager
    def buffered(self) -> Iterator[None]:
        """Writes inside are held, then written in one short transaction when this file is next read (so
        every read sees them) or when the block ends: the write lock is taken only while they are written,
        never while the caller computes, so processes writing to one file do not wait on each other's work.
        Reconcile's pool workers use it (an Azure Tables store holds its writes the same way)."""
        with self._lock:
            self._buffering += 1
            try:
                yield
            finally:
                self._buffering -= 1
                if self._buffering == 0:
                    self._send_held()

    def _send_held(self) -> None:
        """Write the held writes in one transaction; when that fails, one by one, so that the good ones are
        written as they would have been without holding them, and the first failure is raised."""
        if not self._held:  # every statement asks: the common answer costs nothing
            return
        held, self._held = self._held, []
        if self._depth == 0 and self._all_at_once(held):
            return
        for sql, params in held:  # inside a batch (its transaction), or after the one transaction failed
            self._db.execute(sql, params)

    def _all_at_once(self, statements: list[tuple[str, tuple]]) -> bool:
        """The statements in one transaction; False (nothing written) when SQLite refused one of them."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:
            return False
        try:
            for sql, params in statements:
                self._db.execute(sql, params)
        except sqlite3.Error:
            self._db.execute("ROLLBACK")
            return False
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return True

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Callable[[str, tuple], int]]:
        """All or nothing: the block gets an `execute(sql, params)` that answers how many rows it changed;
        the writes are kept when the block ends and undone when it raises. Inside `batch` it is a savepoint
        of the batch's transaction; outside, BEGIN IMMEDIATE takes the file's write lock at once, so
        processes on one file take turns."""
        with self._lock:
            self._send_held()
            outer = self._depth == 0
            self._db.execute("BEGIN IMMEDIATE" if outer else "SAVEPOINT once")
            try:
                yield lambda sql, params: self._db.execute(sql, params).rowcount
            except BaseException:
                self._db.execute("ROLLBACK" if outer else "ROLLBACK TO once")
                if not outer:
                    self._db.execute("RELEASE once")
                raise
            self._db.execute("COMMIT" if outer else "RELEASE once")

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction for every statement inside (this thread's; others wait), committed at the end,
        also when the block raises: what was written stays written, as without the batch."""
        with self._lock:
            self._send_held()
            self._depth += 1
            try:
                if self._depth == 1:
                    self._db.execute("BEGIN")
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()


class SqliteAuditLog:
    """The audit trail in one SQLite file (created on first use); safe across threads of one process.
    `history` reads `page_size` rows per query."""

    def __init__(self, path: str | Path, *, page_size: int = HISTORY_PAGE) -> None:
        self.page_size = page_size
        self._db = SqliteFile(
            path,
            "CREATE TABLE IF NOT EXISTS audit (partition TEXT NOT NULL, row_key TEXT NOT NULL, body TEXT NOT NULL,"
            " PRIMARY KEY (partition, row_key));"
            " CREATE TABLE IF NOT EXISTS audit_once (partition TEXT NOT NULL, once_key TEXT NOT NULL,"
            " row_key TEXT NOT NULL, PRIMARY KEY (partition, once_key));",
            "audit",
        )
        self.path = self._db.path

    @classmethod
    def existing(cls, path: str | Path, *, page_size: int = HISTORY_PAGE) -> SqliteAuditLog:
        """The audit trail a `certsync process` already wrote to `path` (for reading: never creates one)."""
        if not Path(path).exists():
            raise CertsyncError(f"{path}: no audit trail here yet; run certsync process first, or give --audit FILE")
        return cls(path, page_size=page_size)

    def record(self, entry: AuditEntry) -> None:
        body = json.dumps(entry.to_dict(), sort_keys=True)
        self._db.execute(
            "INSERT INTO audit (partition, row_key, body) VALUES (?, ?, ?)",
            (partition(entry.certificate), entry.row_key, body),
        )

    def record_once(self, entry: AuditEntry, key: str) -> bool:
        """`AuditLog.record_once`: the key's row and the entry in one transaction (a savepoint, so also
        inside `batch`); a key recorded before (by any process on the file) leaves both unwritten."""
        key_row = (partition(entry.certificate), key, entry.row_key)
        body = json.dumps(entry.to_dict(), sort_keys=True)
        with self._db.transaction() as execute:
            if not execute("INSERT OR IGNORE INTO audit_once (partition, once_key, row_key) VALUES (?, ?, ?)", key_row):
                return False
            execute(
                "INSERT INTO audit (partition, row_key, body) VALUES (?, ?, ?)",
                (partition(entry.certificate), entry.row_key, body),
            )
        return True

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Record the entries written inside in one transaction (`shared.pipeline.audit.batched`)."""
        return self._db.batch()

    def buffered(self) -> contextlib.AbstractContextManager[None]:
        """Hold the entries written inside until the trail is next read (`SqliteFile.buffered`)."""
        return self._db.buffered()

    def history(
        self,
        certificate: str,
        *,
        since: dt.datetime | None = None,
        after: str | None = None,
        limit: int | None = None,
    ) -> Iterator[AuditEntry]:
        """Pages by keyset on the primary key (partition, row_key): each page one indexed range query, so
        a page costs the same at the start and at the end of 100,000 entries, and the lock is held per page."""
        check_limit(limit)
        return self._pages(partition(certificate), lower_bound(since, after), limit)

    def _pages(self, key: str, bound: str, limit: int | None) -> Iterator[AuditEntry]:
        left = limit
        while left is None or left > 0:
            size = self.page_size if left is None else min(left, self.page_size)
            rows = self._db.execute(
                "SELECT row_key, body FROM audit WHERE partition = ? AND row_key > ? ORDER BY row_key LIMIT ?",
                (key, bound, size),
            )
            for row_key, body in rows:
                yield AuditEntry.from_stored(row_key, json.loads(body))
            if len(rows) < size:
                return
            bound = rows[-1][0]
            left = None if left is None else left - size

    def histories(self, certificates: Collection[str]) -> dict[str, list[AuditEntry]]:
        """The certificates' entries by partition, oldest first, in one range query."""
        wanted = {partition(c) for c in certificates}
        if not wanted:
            return {}
        found: dict[str, list[AuditEntry]] = {}
        rows = self._db.execute(
            "SELECT partition, row_key, body FROM audit WHERE partition BETWEEN ? AND ? ORDER BY partition, row_key",
            (min(wanted), max(wanted)),
        )
        for part, row_key, body in rows:
            if part in wanted:
                found.setdefault(part, []).append(AuditEntry.from_stored(row_key, json.loads(body)))
        return found

    def close(self) -> None:
        self._db.close()


class SqliteStateStore:
    """States and snapshots in one SQLite file (created on first use); safe across threads of one process."""

    def __init__(self, path: str | Path) -> None:
        self._db = SqliteFile(
            path,
            "CREATE TABLE IF NOT EXISTS finding_state (certificate TEXT NOT NULL, finding TEXT NOT NULL,"
            " state TEXT NOT NULL, at TEXT NOT NULL, PRIMARY KEY (certificate, finding));"
            " CREATE TABLE IF NOT EXISTS snapshot (certificate TEXT PRIMARY KEY, body TEXT NOT NULL);",
            "state",
        )
        self.path = self._db.path

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Write the states and snapshots put inside in one transaction."""
        return self._db.batch()

    def buffered(self) -> contextlib.AbstractContextManager[None]:
        """Hold the states and snapshots put inside until the store is next read (`SqliteFile.buffered`)."""
        return self._db.buffered()

    def get(self, certificate: str, finding: str) -> str | None:
        rows = self._db.execute(
            "SELECT state FROM finding_state WHERE certificate = ? AND finding = ?", (certificate.lower(), finding)
        )
        return rows[0][0] if rows else None

    def states(self) -> dict[tuple[str, str], str]:
        return {
            (c, f): state for c, f, state in self._db.execute("SELECT certificate, finding, state FROM finding_state")
        }

    def put(self, certificate: str, finding: str, state: str, at: dt.datetime) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO finding_state (certificate, finding, state, at) VALUES (?, ?, ?, ?)",
            (certificate.lower(), finding, state, format_time(at, timespec="seconds")),
        )

    def put_snapshot(self, snapshot: StatusSnapshot) -> None:
        from shared.reconciliation.reconcile import certificate_key  # here: `certsync history` never needs it

        key = certificate_key(snapshot["vault"], snapshot["certificate"])
        self._db.execute(
            "INSERT OR REPLACE INTO snapshot (certificate, body) VALUES (?, ?)",
            (key, json.dumps(snapshot, sort_keys=True)),
        )

    def snapshots(self) -> list[StatusSnapshot]:
        return by_certificate(json.loads(body) for (body,) in self._db.execute("SELECT body FROM snapshot"))

    def snapshot_keys(self) -> set[str]:
        return {key for (key,) in self._db.execute("SELECT certificate FROM snapshot")}

    def snapshot(self, vault: str, certificate: str) -> StatusSnapshot | None:
        from shared.reconciliation.reconcile import certificate_key

        rows = self._db.execute(
            "SELECT body FROM snapshot WHERE certificate = ?", (certificate_key(vault, certificate),)
        )
        return json.loads(rows[0][0]) if rows else None

    def delete_snapshot(self, vault: str, certificate: str) -> None:
        from shared.reconciliation.reconcile import certificate_key

        self._db.execute("DELETE FROM snapshot WHERE certificate = ?", (certificate_key(vault, certificate),))

    def close(self) -> None:
        self._db.close()


class SqliteInventoryStore:
    """The latest inventory per worker group in one SQLite file (`certsync discover`, `--import`)."""

    KEPT = 16  # decoded records kept, by worker group

    def __init__(self, path: str | Path) -> None:
        self._kept: dict[str, tuple[str, InventoryRecord]] = {}
        self._db = SqliteFile(
            path,
            "CREATE TABLE IF NOT EXISTS inventory (worker_group TEXT PRIMARY KEY, meta TEXT NOT NULL,"
            " body TEXT NOT NULL);",
            "inventory",
        )
        self.path = self._db.path

    def put(self, record: InventoryRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO inventory (worker_group, meta, body) VALUES (?, ?, ?)",
            (
                record.worker_group.lower(),
                json.dumps(record.meta(), sort_keys=True),
                json.dumps(record.inventory, ensure_ascii=False),
            ),
        )

    def get(self, worker_group: str) -> InventoryRecord | None:
        """The group's record; its document is decoded again only when the record changed (its meta: when
        collected and stored, by which job), since every event of the group asks for it."""
        group = worker_group.lower()
        kept = self._kept.get(group)
        rows = self._db.execute(  # the body only when the meta is not the kept record's
            "SELECT meta, CASE WHEN meta = ? THEN NULL ELSE body END FROM inventory WHERE worker_group = ?",
            (kept[0] if kept else None, group),
        )
        if not rows:
            return None
        meta, body = rows[0]
        if body is None and kept is not None:
            return kept[1]
        record = InventoryRecord.from_meta(json.loads(meta), json.loads(body))
        self._kept[group] = (meta, record)
        while len(self._kept) > self.KEPT:
            self._kept.pop(next(iter(self._kept)))
        return record

    def all(self) -> list[InventoryRecord]:
        rows = self._db.execute("SELECT meta, body FROM inventory ORDER BY worker_group")
        return [InventoryRecord.from_meta(json.loads(meta), json.loads(body)) for meta, body in rows]

    def close(self) -> None:
        self._db.close()
