"""Azure Storage backends: the audit trail in Table storage (`TableAuditLog`), remediation jobs on a
Storage queue (`StorageJobQueue`), any other JSON message on a Storage queue (`StorageMessageQueue`),
plus `storage_settings`, which reads a Functions-style connection.

Other modules' Storage adapters (e.g. `shared.reconciliation.reconcile.TableStateStore`) use the public helpers here,
so that every Storage adapter reports errors, makes its table or queue, and escapes Table keys one way:
`storage_errors`, `create_if_missing`, `table_key`, `table_string_fits`.

The Azure SDKs are imported inside the functions that need them, never at module import: the HTTP and
Event Grid handlers that do not touch Storage should not pay for azure.storage.queue, azure.data.tables
or azure.identity at cold start.

Every SDK failure becomes a `StorageError`: one line naming the queue or table, the HTTP status and the
service's error code; never a request body, a connection string or a key.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shared.errors import CertsyncError
from shared.pipeline.audit import AuditEntry, partition
from shared.pipeline.jobs import Job
from shared.remediation.messages import MAX_VISIBILITY_SECONDS

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.data.tables import TableClient
    from azure.storage.queue import QueueClient

log = logging.getLogger(__name__)

# A queue message, as sent (after base64), is at most 64 KiB.
QUEUE_MESSAGE_LIMIT = 64 * 1024
# A Table string property is UTF-16 and at most 64 KiB: 32 Ki code units.
TABLE_STRING_LIMIT = 64 * 1024

# Characters Table storage refuses in PartitionKey and RowKey: / \ # ? and the control characters.
# Key Vault names never contain them; a malformed event's name might, and must still be recordable.
_KEY_UNSAFE = re.compile(r"[/\\#?%\x00-\x1f\x7f-\x9f]")


class StorageError(CertsyncError):
    """Azure Storage refused or could not be reached; the message names the queue or table."""


# --- settings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StorageSettings:
    """One Functions-style Storage connection: a connection string, or service URIs and an identity.

    `queue_client` sends base64-encoded messages, as the Functions host's queue bindings expect by
    default (host.json `extensions.queues.messageEncoding`). Keyword options go to the SDK clients
    (e.g. `retry_total=0`)."""

    connection: str  # the setting's name, for messages
    connection_string: str = field(default="", repr=False)  # may hold an account key
    queue_service_uri: str = ""
    table_service_uri: str = ""
    client_id: str = ""  # a user-assigned managed identity; empty means DefaultAzureCredential

    def queue_client(self, queue_name: str, **options: Any) -> QueueClient:
        from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

        options = {
            "message_encode_policy": TextBase64EncodePolicy(),
            "message_decode_policy": TextBase64DecodePolicy(),
            **options,
        }
        if self.connection_string:
            return QueueClient.from_connection_string(self.connection_string, queue_name, **options)
        uri = self._require(self.queue_service_uri, "queueServiceUri")
        return QueueClient(uri, queue_name, credential=self.credential, **options)

    def table_client(self, table_name: str, **options: Any) -> TableClient:
        from azure.data.tables import TableClient

        if self.connection_string:
            return TableClient.from_connection_string(self.connection_string, table_name, **options)
        uri = self._require(self.table_service_uri, "tableServiceUri")
        return TableClient(uri, table_name, credential=self.credential, **options)

    @cached_property
    def credential(self) -> TokenCredential:
        """The identity for service-URI connections, made once per settings object."""
        if self.client_id:
            from azure.identity import ManagedIdentityCredential

            return ManagedIdentityCredential(client_id=self.client_id)
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()

    def _require(self, value: str, suffix: str) -> str:
        if not value:
            raise CertsyncError(
                f"{self.connection}__{suffix} is not set: define it (or {self.connection} as a connection string)"
            )
        return value


def storage_settings(env: Mapping[str, str], connection: str = "JobsStorage") -> StorageSettings:
    """Read the connection named `connection` from app settings, as the Functions host does.

    `env[connection]` is a connection string (`UseDevelopmentStorage=true` for Azurite); otherwise
    `<connection>__queueServiceUri` and/or `<connection>__tableServiceUri` name the services and the
    app's managed identity signs in (`<connection>__clientId` for a user-assigned one). Names are
    matched case-insensitively, like the host's configuration; a connection string wins."""
    settings = {name.lower(): value.strip() for name, value in env.items() if value and value.strip()}

    def setting(suffix: str = "") -> str:
        return settings.get(f"{connection}__{suffix}".lower() if suffix else connection.lower(), "")

    result = StorageSettings(
        connection=connection,
        connection_string=setting(),
        queue_service_uri=setting("queueServiceUri"),
        table_service_uri=setting("tableServiceUri"),
        client_id=setting("clientId"),
    )
    if not (result.connection_string or result.queue_service_uri or result.table_service_uri):
        raise CertsyncError(
            f"{connection} is not set: define {connection} (a connection string, UseDevelopmentStorage=true locally)"
            f" or {connection}__queueServiceUri and {connection}__tableServiceUri (managed identity)"
        )
    return result


# --- errors --------------------------------------------------------------------------------------

_HINTS = {
    400: "the request was refused as invalid",
    401: "check the account key or the identity",
    403: "check the account key, or the identity's data roles (Storage Queue Data Contributor,"
    " Storage Table Data Contributor)",
    404: "check the account and the name",
    409: "it conflicts with the current state; retry",
    413: "the request is too large",
}


@contextlib.contextmanager
def storage_errors(what: str, client: QueueClient | TableClient) -> Iterator[None]:
    """Azure SDK exceptions raised inside the block become one-line `StorageError`s about `what` (e.g.
    "queue jobs", "state table certsyncstate"): the HTTP status, the service's error code and a hint,
    or the host `client` talks to when there was no answer; never a request body, a key or a SAS token."""
    from azure.core.exceptions import (
        AzureError,
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    host = _host(client)
    try:
        yield
    except HttpResponseError as exc:
        status = exc.status_code
        code = (exc.response.headers.get("x-ms-error-code") if exc.response is not None else None) or "no error code"
        if status is None:  # no answer to report, e.g. a credential that could not get a token
            hint = "; check the managed identity" if isinstance(exc, ClientAuthenticationError) else ""
            raise StorageError(f"{what}: {type(exc).__name__} before {host} answered{hint}") from None
        hint = _HINTS.get(status, "Azure Storage is unavailable; retry later" if status >= 500 else "")
        raise StorageError(
            f"{what}: Azure Storage answered HTTP {status} ({code})" + (f"; {hint}" if hint else "")
        ) from None
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise StorageError(
            f"{what}: cannot reach {host} ({type(exc).__name__}); check the endpoint and the network"
        ) from None
    except AzureError as exc:
        raise StorageError(f"{what}: {type(exc).__name__} talking to {host}") from None


def table_key(value: str) -> str:
    """`value` made safe as a PartitionKey or RowKey: the characters Table storage refuses (/ \\ # ? and
    control characters) and % are %XX-escaped, so distinct values stay distinct keys."""
    return _KEY_UNSAFE.sub(lambda match: f"%{ord(match.group()):02X}", value)


def table_string_fits(text: str) -> bool:
    """Whether `text` fits one Table string property (64 KiB as UTF-16)."""
    return len(text.encode("utf-16-le")) <= TABLE_STRING_LIMIT


def _fit_table_string(text: str) -> tuple[str, bool]:
    """`text` cut to what a Table string property holds, and whether it was cut."""
    if table_string_fits(text):
        return text, False
    # errors="ignore" drops half of a surrogate pair split at the cut.
    return text.encode("utf-16-le")[:TABLE_STRING_LIMIT].decode("utf-16-le", errors="ignore"), True


def _host(client: QueueClient | TableClient) -> str:
    """The service's host:port, for messages (a client's URL may carry a SAS token in its query)."""
    return urlsplit(client.url).netloc


def create_if_missing(create: Callable[[], object]) -> None:
    """Call `create` (e.g. `table_client.create_table`, `queue_client.create_queue`); one that exists
    already is fine. Call it inside `storage_errors` for any other failure."""
    from azure.core.exceptions import ResourceExistsError

    with contextlib.suppress(ResourceExistsError):
        create()


# --- audit ---------------------------------------------------------------------------------------


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
        details, truncated = _fit_table_string(
            json.dumps(properties.pop("details"), sort_keys=True, ensure_ascii=False)
        )
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


# --- jobs ----------------------------------------------------------------------------------------


class StorageJobQueue:
    """Remediation jobs on an Azure Storage queue, one per job id however often it is enqueued.

    A claims table remembers each job (PartitionKey: the vault, lower-case; RowKey: the job id). The
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
                "StorageJobQueue needs a QueueClient with message_encode_policy=TextBase64EncodePolicy()"
                " (the Functions host's default encoding); make it with StorageSettings.queue_client"
            )
        self._queue = queue_client
        self._claims = claims_table_client
        self._queue_what = f"queue {queue_client.queue_name}"
        self._claims_what = f"claims table {claims_table_client.table_name}"
        self._created = False

    def enqueue(self, job: Job) -> bool:
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        body = job.to_json()
        size = _base64_size(body)
        if size > QUEUE_MESSAGE_LIMIT:
            raise CertsyncError(
                f"certificate {job.certificate} (vault {job.vault}, version {job.version}): the remediation plan is"
                f" too large for a queue message ({size} bytes encoded, the limit is {QUEUE_MESSAGE_LIMIT});"
                " reduce the plan's targets"
            )
        key = {"PartitionKey": table_key(job.vault.lower()), "RowKey": job.job_id}
        ids = {"certsync.vault": job.vault, "certsync.certificate": job.certificate, "certsync.job_id": job.job_id}
        self._create_once()

        with storage_errors(self._claims_what, self._claims):
            try:
                self._claims.create_entity(
                    {
                        **key,
                        "state": "pending",
                        "certificate": job.certificate,
                        "version": job.version,
                        "correlation_id": job.correlation_id,
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
        """Whether the claim for this job says "queued" (a "pending" one is not: its send may be lost)."""
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
        size = _base64_size(text)
        if size > QUEUE_MESSAGE_LIMIT:
            raise CertsyncError(
                f"queue {self.name}: a message of {size} bytes (encoded) is over the {QUEUE_MESSAGE_LIMIT} limit"
            )
        with storage_errors(f"queue {self.name}", self._queue):
            if not self._created:
                create_if_missing(self._queue.create_queue)
                self._created = True
            self._queue.send_message(text, visibility_timeout=max(0, min(delay, MAX_VISIBILITY_SECONDS)) or None)


def _base64_size(text: str) -> int:
    """The length of `text` once TextBase64EncodePolicy has encoded it (UTF-8, then base64)."""
    return 4 * -(-len(text.encode("utf-8")) // 3)
