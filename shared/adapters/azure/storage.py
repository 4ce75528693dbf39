"""Azure Storage, what every Storage adapter shares: `StorageSettings` (a Functions-style connection, read
from the app settings by `shared.settings.storage_connection`),
the service's limits, and the helpers that make every adapter report errors, make its table or queue and
escape Table keys one way: `storage_errors`, `create_if_missing`, `table_key`, `table_string_fits`.
The adapters themselves are in `shared.adapters.azure.tables` (the audit trail, the reconciliation's
state) and `shared.adapters.azure.queues` (remediation jobs, other JSON messages).

The Azure SDKs are imported inside the functions that need them, never at module import: the HTTP and
Event Grid handlers that do not touch Storage should not pay for azure.storage.queue, azure.data.tables
or azure.identity at cold start.

Every SDK failure becomes a `StorageError`: one line naming the queue or table, the HTTP status and the
service's error code; never a request body, a connection string or a key.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shared.errors import CertsyncError, StorageError
from shared.pipeline.events import clean_text

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.data.tables import TableClient
    from azure.storage.queue import QueueClient

# A queue message, as sent (after base64), is at most 64 KiB.
QUEUE_MESSAGE_LIMIT = 64 * 1024
# A Table string property is UTF-16 and at most 64 KiB: 32 Ki code units.
TABLE_STRING_LIMIT = 64 * 1024

# Characters Table storage refuses in PartitionKey and RowKey: / \ # ? and the control characters.
# Key Vault names never contain them; a malformed event's name might, and must still be recordable.
_KEY_UNSAFE = re.compile(r"[/\\#?%\x00-\x1f\x7f-\x9f]")


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
        headers = getattr(exc.response, "headers", None) or {}  # the SDK types the response without them
        code = headers.get("x-ms-error-code") or "no error code"
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
    return len(text.encode("utf-16-le", "surrogatepass")) <= TABLE_STRING_LIMIT


CUT_MARKER = " [... cut: too long for one Table property]"


def fit_table_string(text: str, marker: str = "") -> tuple[str, bool]:
    """`text` cut to what a Table string property holds (ending in `marker` when cut), and whether it was
    cut. A lone surrogate, which no encoding can send, becomes U+FFFD."""
    text = clean_text(text)
    if table_string_fits(text):
        return text, False
    room = TABLE_STRING_LIMIT - len(marker.encode("utf-16-le"))
    # errors="ignore" drops half of a surrogate pair split at the cut.
    return text.encode("utf-16-le")[:room].decode("utf-16-le", errors="ignore") + marker, True


def _host(client: QueueClient | TableClient) -> str:
    """The service's host:port, for messages (a client's URL may carry a SAS token in its query)."""
    return urlsplit(client.url).netloc


def create_if_missing(create: Callable[[], object]) -> None:
    """Call `create` (e.g. `table_client.create_table`, `queue_client.create_queue`); one that exists
    already is fine. Call it inside `storage_errors` for any other failure."""
    from azure.core.exceptions import ResourceExistsError

    with contextlib.suppress(ResourceExistsError):
        create()


def base64_size(text: str) -> int:
    """The length of `text` once TextBase64EncodePolicy has encoded it (UTF-8, then base64)."""
    return 4 * -(-len(text.encode("utf-8")) // 3)
