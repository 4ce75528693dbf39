"""Azure Storage queue backends: remediation requests, one per job id however often enqueued
(`StorageRemediationQueue`, with its claims table), and any other JSON message (`StorageMessageQueue`: remediation's
re-enqueued starts, tracking messages, the poison queues, undeliverable notifications).

Messages are base64-encoded as the Functions host's queue bindings read them; bodies are never logged.
The Azure SDKs are imported inside the methods that need them, never at module import.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import uuid
from typing import TYPE_CHECKING

from shared.adapters.azure.storage import (
    QUEUE_MESSAGE_LIMIT,
    base64_size,
    create_if_missing,
    storage_errors,
    table_key,
)
from shared.errors import CertsyncError, StorageError
from shared.pipeline.jobs import RemediationRequest
from shared.remediation.messages import MAX_VISIBILITY_SECONDS
from shared.times import Clock, utc_now

if TYPE_CHECKING:
    from azure.data.tables import TableClient
    from azure.storage.queue import QueueClient

log = logging.getLogger("certsync.storage")

# How long a "pending" claim belongs to the instance that made it: longer than one send takes, however
# slow, so another instance takes a claim over only from one that stopped.
CLAIM_LEASE = dt.timedelta(minutes=5)


def instance_name() -> str:
    """This process, as a claim's owner: the host name (a Functions instance's own), the process id and a
    random part (two queues in one process are two owners)."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


# --- remediation requests -----------------------------------------------------------------------


class StorageRemediationQueue:
    """Remediation requests on an Azure Storage queue (REMEDIATION_QUEUE), one per job id however often
    one is enqueued, by however many Function instances at once.

    A claims table remembers each request (PartitionKey: the vault, lower-case; RowKey: the job id). The
    claim is made before the message is sent ("pending", with this instance's `owner` and a lease that
    ends `lease` from now) and marked "queued" with the message id after:
    - a claim already "queued" means a duplicate delivery: nothing is sent, `enqueue` returns False;
    - a claim still "pending" under a lease that has not ended belongs to an instance that is sending it
      now: nothing is sent here, `enqueue` returns False;
    - a claim still "pending" whose lease has ended was left by an instance that stopped between claim
      and send: it is taken over (owner and lease rewritten) by a write conditional on the claim's ETag,
      and the message sent; when another instance took it over first, the write fails and nothing is sent.
    Marking the claim "queued" is conditional on the ETag this instance's own claim write returned. If
    it fails after the send, the job still counts as queued (True, with a warning): the claim stays
    "pending", so at worst a delivery after the lease ends sends a duplicate the runbook drops.

    `queue_client` must encode messages as base64 (what the Functions host reads by default); use
    `StorageSettings.queue_client`. `owner` names this instance in the claim (for people reading the
    table); `clock` is the time leases are measured by. Message bodies are never logged."""

    def __init__(
        self,
        queue_client: QueueClient,
        claims_table_client: TableClient,
        *,
        owner: str = "",
        lease: dt.timedelta = CLAIM_LEASE,
        clock: Clock = utc_now,
    ) -> None:
        from azure.storage.queue import TextBase64EncodePolicy

        # The SDK keeps the policy in a private attribute; checked so a plain-text client fails here,
        # not in the runbook that cannot decode its messages.
        if not isinstance(getattr(queue_client, "_message_encode_policy", None), TextBase64EncodePolicy):
            raise ValueError(
                "StorageRemediationQueue needs a QueueClient with message_encode_policy=TextBase64EncodePolicy()"
                " (the Functions host's default encoding); make it with StorageSettings.queue_client"
            )
        self._queue = queue_client
        self._claims = claims_table_client
        self._queue_what = f"queue {queue_client.queue_name}"
        self._claims_what = f"claims table {claims_table_client.table_name}"
        self._created = False
        self.owner = owner or instance_name()
        self.lease = lease
        self._clock = clock

    def enqueue(self, request: RemediationRequest) -> bool:
        from azure.core import MatchConditions
        from azure.data.tables import UpdateMode

        body = request.to_json()
        size = base64_size(body)
        if size > QUEUE_MESSAGE_LIMIT:
            raise CertsyncError(
                f"certificate {request.certificate} (vault {request.vault}, version {request.version}): the remediation"
                f" plan is too large for a queue message ({size} bytes encoded, the limit is {QUEUE_MESSAGE_LIMIT});"
                " reduce the plan's targets"
            )
        key = {"PartitionKey": table_key(request.vault.lower()), "RowKey": request.job_id}
        ids = {
            "certsync.vault": request.vault,
            "certsync.certificate": request.certificate,
            "certsync.job_id": request.job_id,
        }
        self._create_once()

        with storage_errors(self._claims_what, self._claims):
            etag = self._claim(request, key, ids)
        if etag is None:
            return False

        with storage_errors(self._queue_what, self._queue):
            message = self._queue.send_message(body)
        ids["certsync.message_id"] = message.id
        try:
            with storage_errors(self._claims_what, self._claims):
                self._claims.update_entity(
                    {**key, "state": "queued", "message_id": message.id},
                    mode=UpdateMode.MERGE,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        except StorageError as exc:
            log.warning("job queued, but its claim stays pending: %s", exc, extra=ids)
        else:
            log.info("job queued", extra=ids)
        return True

    def _claim(self, request: RemediationRequest, key: dict[str, str], ids: dict[str, str]) -> str | None:
        """Claim the job for this instance: the ETag of the claim written, or None when it is queued already
        or another instance holds it (a live lease, or a takeover that won the race)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        now = self._clock()
        claim = {
            **key,
            "state": "pending",
            "owner": self.owner,
            "lease_until": now + self.lease,
            "certificate": request.certificate,
            "version": request.version,
            "correlation_id": request.correlation_id,
        }
        for _ in range(2):  # a second round only when the claim was removed between create and read
            try:
                return str(self._claims.create_entity(claim)["etag"])
            except ResourceExistsError:
                pass
            try:
                found = self._claims.get_entity(key["PartitionKey"], key["RowKey"])
            except ResourceNotFoundError:
                continue
            if found.get("state") == "queued":
                log.info("job already queued; not sent again", extra=ids)
                return None
            lease_until = found.get("lease_until")
            if isinstance(lease_until, dt.datetime) and lease_until > now:
                log.info("job claimed by %s until %s; not sent here", found.get("owner"), lease_until, extra=ids)
                return None
            try:
                written = self._claims.update_entity(
                    claim,
                    mode=UpdateMode.REPLACE,
                    etag=found.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            except (ResourceModifiedError, ResourceNotFoundError):
                log.info("job's expired claim was taken over by another instance; not sent here", extra=ids)
                return None
            log.warning(
                "job claimed by %s was never marked queued and its lease has ended; sending it again",
                found.get("owner") or "an earlier version",
                extra=ids,
            )
            return str(written["etag"])
        log.info("job's claim keeps disappearing; not sent here", extra=ids)
        return None

    def queued(self, vault: str, job_id: str) -> bool:
        """Whether the claim for this job id says "queued" (a "pending" one is not: its send may be lost)."""
        from azure.core.exceptions import ResourceNotFoundError

        self._create_once()
        with storage_errors(self._claims_what, self._claims):
            try:
                claim = self._claims.get_entity(table_key(vault.lower()), job_id)
            except ResourceNotFoundError:
                return False
        return claim.get("state") == "queued"

    def _create_once(self) -> None:
        if self._created:
            return
        with storage_errors(self._claims_what, self._claims):
            create_if_missing(self._claims.create_table)
        with storage_errors(self._queue_what, self._queue):
            create_if_missing(self._queue.create_queue)
        self._created = True


# --- other messages ------------------------------------------------------------------------------


class StorageMessageQueue:
    """JSON text on an Azure Storage queue, base64-encoded like the Functions host reads it; the queue is
    made on first send. Used for remediation's re-enqueued starts, tracking messages and both poison
    queues, and for undeliverable notifications.

    `queue_client` comes from `StorageSettings.queue_client`. Message bodies are never logged; a message
    over the 64 KiB limit is refused with a `CertsyncError`, a Storage failure is a one-line
    `StorageError` naming the queue."""

    def __init__(self, queue_client: QueueClient) -> None:
        self._queue = queue_client
        self.name: str = queue_client.queue_name
        self._created = False

    def send(self, text: str, delay: int = 0) -> None:
        """Send `text`, visible after `delay` seconds (at most `MAX_VISIBILITY_SECONDS`; 0 at once)."""
        size = base64_size(text)
        if size > QUEUE_MESSAGE_LIMIT:
            raise CertsyncError(
                f"queue {self.name}: a message of {size} bytes (encoded) is over the {QUEUE_MESSAGE_LIMIT} limit"
            )
        with storage_errors(f"queue {self.name}", self._queue):
            if not self._created:
                create_if_missing(self._queue.create_queue)
                self._created = True
            self._queue.send_message(text, visibility_timeout=max(0, min(delay, MAX_VISIBILITY_SECONDS)) or None)
