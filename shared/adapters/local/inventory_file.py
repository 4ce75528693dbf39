"""One inventory file as an `InventoryStore` (`certsync process --inventory FILE`): the admin's saved
certsync.inventory/1 answers for whichever worker group the certificate's targets name (a file that names
another worker group is refused). Its collection time is the document's `collected_at`, else the file's
modification time, so the pipeline's max age applies to it as to a stored one. Read-only."""

from __future__ import annotations

import datetime as dt
import os

from shared.errors import CertsyncError
from shared.exchange.inventory import decode_inventory
from shared.pipeline.inventories import InventoryRecord
from shared.remediation.discovery import Validate, make_record, parse_inventory
from shared.times import Clock, utc_now

MAX_BYTES = 64 * 2**20


class FileInventoryStore:
    def __init__(self, path: str, *, validate: Validate | None = None, clock: Clock = utc_now) -> None:
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_BYTES + 1)
            modified = dt.datetime.fromtimestamp(os.stat(path).st_mtime, dt.timezone.utc)
        except OSError as exc:
            raise CertsyncError(
                f"{path}: cannot read it ({exc.strerror}); give --inventory an inventory JSON file"
            ) from None
        if len(data) > MAX_BYTES:
            raise CertsyncError(f"{path}: larger than 64 MiB; is this an inventory?")
        self.path = path
        self._document = parse_inventory(decode_inventory(data, path), path)
        self._modified = modified
        self._validate = validate
        self._clock = clock

    def get(self, worker_group: str) -> InventoryRecord:
        return make_record(
            self._document,
            worker_group,
            where=self.path,
            now=self._clock(),
            collected_fallback=self._modified,
            source="file",
            validate=self._validate,
        )

    def put(self, record: InventoryRecord) -> None:
        raise CertsyncError(f"{self.path}: an inventory file given with --inventory is read, never written")

    def all(self) -> list[InventoryRecord]:
        named = str(self._document.get("worker_group") or "")
        return [self.get(named)] if named else []
