"""Azure Storage queue backends: remediation requests, one per job id however often enqueued
(`StorageRemediationQueue`, with its claims table), and any other JSON message (`StorageMessageQueue`: remediation's
re-enqueued starts, tracking messages, the poison queues, undeliverable notifications).

Messages are base64-encoded as the Functions host's queue bindings read them; bodies are never logged.
The Azure SDKs are imported inside the methods that need them, never at module import.
"""

from __future__ import annotations

import logging
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

if TYPE_CHECKING:
    from azure.data.tables import TableClient
    from azure.storage.queue import QueueClient

log = logging.getLogger("certsync.storage")


# --- remediation requests -----------------------------------------------------------------------


class StorageRemediationQueue:
    """Remediation requests on an Azure Storage queue (REMEDIATION_QUEUE), one per job id however often
    one is enqueued.

    A claims table remembers each request (PartitionKey: the vault, lower-case; RowKey: the job id). The
    claim is made before the message is sent ("pending") and marked "queued" with the message id after:
    - a claim already "queued" means a duplicate delivery: nothing is sent, `enqueue` returns False;
    - a claim still "pending" means an earlier attempt stopped between claim and send: the message is
      sent (again, perhaps), and the Automation side deduplicates by its deterministic job name.
    If marking the claim "queued" fails after the send, the job still counts as queued (True, with a
    warning): the claim stays "pending", so at worst a later delivery sends a duplicate the runbook drops.

    `queue_client` must encode messages as base64 (what the Functions host reads by default); use
    `StorageSettings.queue_client`. Message bodies are never logged."""

    def __init__(self, queue_client: QueueClient, claims_table_client: TableClient) -> None:
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

    def enqueue(self, request: RemediationRequest) -> bool:
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
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
            try:
                self._claims.create_entity(
                    {
                        **key,
                        "state": "pending",
                        "certificate": request.certificate,
                        "version": request.version,
                        "correlation_id": request.correlation_id,
                    }
                )
            except ResourceExistsError:
                try:
                    state = self._claims.get_entity(key["PartitionKey"], key["RowKey"]).get("state")
                except ResourceNotFoundError:  # removed in between: treat like an unfinished claim
                    state = None
                if state == "queued":
                    log.info("job already queued; not sent again", extra=ids)
                    return False
                log.warning("job claimed before but never marked queued; sending it again", extra=ids)

        with storage_errors(self._queue_what, self._queue):
            message = self._queue.send_message(body)
        ids["certsync.message_id"] = message.id
        try:
            with storage_errors(self._claims_what, self._claims):
                self._claims.update_entity({**key, "state": "queued", "message_id": message.id}, mode=UpdateMode.MERGE)
        except StorageError as exc:
            log.warning("job queued, but its claim stays pending: %s", exc, extra=ids)
        else:
            log.info("job queued", extra=ids)
        return True

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
