"""Key Vault certificate events, read once at the edge into a typed value.

Event Grid delivers Key Vault events in the Event Grid schema (`eventType`, `topic`, `eventTime`) or
the CloudEvents 1.0 schema (`type`, `source`, `time`, `specversion`). The `data` field names are
PascalCase in Microsoft's example (`Id`, `VaultName`, `ObjectName`, `Version`, `NBF`, `EXP`) and
camelCase in its property table, and the example even has a stray blank in `"ObjectName "`; so keys
are matched case-insensitively after trimming, values are trimmed, and NBF/EXP may be numbers or
numeric strings. Unknown fields are ignored.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import SupportsFloat, TypedDict
from urllib.parse import SplitResult, urlsplit

from shared.errors import CertsyncError
from shared.times import parse_time

NEW_VERSION = "Microsoft.KeyVault.CertificateNewVersionCreated"
NEAR_EXPIRY = "Microsoft.KeyVault.CertificateNearExpiry"
EXPIRED = "Microsoft.KeyVault.CertificateExpired"
CERTIFICATE_EVENTS = (NEW_VERSION, NEAR_EXPIRY, EXPIRED)

MAX_EVENT_BYTES = 1024 * 1024


class EventError(CertsyncError):
    """An event that is not a Key Vault event certsync can read; the message says what is missing.

    Delivering the same event again cannot fix it (`transient` is False): the Function acknowledges it
    after its `event-rejected` audit entry, so Event Grid does not retry it for 24 hours."""

    transient = False


class EventDocument(TypedDict):
    """`KeyVaultEvent.to_dict()`: the event as certsync read it (in `certsync process --json` and the audit trail)."""

    event_id: str
    event_type: str
    schema: str
    topic: str
    subject: str
    event_time: str | None
    id: str
    vault: str
    object_type: str
    name: str
    version: str
    nbf: str | None
    exp: str | None


@dataclass(frozen=True)
class KeyVaultEvent:
    event_id: str
    event_type: str
    schema: str  # "EventGrid" or "CloudEvents"
    topic: str  # the vault's resource id
    subject: str
    event_time: dt.datetime | None
    object_id: str  # the certificate URL with version
    vault: str
    object_type: str
    name: str
    version: str
    not_before: dt.datetime | None
    expires: dt.datetime | None

    @property
    def is_certificate_event(self) -> bool:
        return self.event_type in CERTIFICATE_EVENTS

    @property
    def short_type(self) -> str:
        return self.event_type.rsplit(".", 1)[-1]

    def to_dict(self) -> EventDocument:
        def stamp(value: dt.datetime | None) -> str | None:
            return value.isoformat().replace("+00:00", "Z") if value else None

        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "schema": self.schema,
            "topic": self.topic,
            "subject": self.subject,
            "event_time": stamp(self.event_time),
            "id": self.object_id,
            "vault": self.vault,
            "object_type": self.object_type,
            "name": self.name,
            "version": self.version,
            "nbf": stamp(self.not_before),
            "exp": stamp(self.expires),
        }


def event_from_dict(document: Mapping[str, object], source: str = "event") -> KeyVaultEvent:
    """The event `KeyVaultEvent.to_dict()` wrote (the audit trail's copy, a waiting version's)."""
    try:

        def when(key: str) -> dt.datetime | None:
            value = document.get(key)
            return parse_time(str(value)) if value else None

        return KeyVaultEvent(
            event_id=str(document["event_id"]),
            event_type=str(document["event_type"]),
            schema=str(document.get("schema") or "EventGrid"),
            topic=str(document.get("topic") or ""),
            subject=str(document.get("subject") or ""),
            event_time=when("event_time"),
            object_id=str(document.get("id") or ""),
            vault=str(document["vault"]),
            object_type=str(document.get("object_type") or ""),
            name=str(document["name"]),
            version=str(document["version"]),
            not_before=when("nbf"),
            expires=when("exp"),
        )
    except (KeyError, ValueError) as exc:
        raise EventError(f"{source}: not an event certsync recorded ({exc}); it is skipped") from None


def parse_event_json(text: str | bytes, source: str = "event") -> list[KeyVaultEvent]:
    """Events from JSON text: one event object, or an array of them (Event Grid posts arrays)."""
    if len(text) > MAX_EVENT_BYTES:
        raise EventError(f"{source}: larger than 1 MiB, which no Key Vault event is")
    try:
        body = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EventError(f"{source}: not JSON ({exc}); give an Event Grid or CloudEvents event") from None
    except RecursionError:
        raise EventError(
            f"{source}: JSON nested too deeply for an event; give an Event Grid or CloudEvents event"
        ) from None
    items = body if isinstance(body, list) else [body]
    if not items:
        raise EventError(f"{source}: an empty array; give at least one event")
    return [parse_event(item, f"{source}[{i}]" if isinstance(body, list) else source) for i, item in enumerate(items)]


def parse_event(envelope: object, source: str = "event") -> KeyVaultEvent:
    """One event envelope (a dict) in either schema."""
    if not isinstance(envelope, Mapping):
        raise EventError(f"{source}: not a JSON object; give an Event Grid or CloudEvents event")
    env = _folded(envelope)
    cloud = "specversion" in env
    event_type = _text(env.get("type" if cloud else "eventtype"))
    if not event_type:
        field = "type" if cloud else "eventType"
        raise EventError(f"{source}: has no {field}; give an Event Grid or CloudEvents event")
    event_id = _text(env.get("id"))
    if not event_id:
        raise EventError(f"{source}: has no id; every Event Grid event has one")
    data = env.get("data")
    if isinstance(data, str):  # some senders put the data object in as a JSON string
        try:
            data = json.loads(data)
        except (ValueError, RecursionError):
            raise EventError(f"{source}: data is a string that is not JSON an event holds") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise EventError(f"{source}: data is not an object")
    fields = _folded(data)
    object_id = _text(fields.get("id"))
    name = _text(fields.get("objectname")) or _text(env.get("subject"))
    version = _text(fields.get("version"))
    vault = _text(fields.get("vaultname")) or _vault_from_url(object_id, source)
    if not version and object_id:
        version = _version_from_url(object_id, source)
    return KeyVaultEvent(
        event_id=event_id,
        event_type=event_type,
        schema="CloudEvents" if cloud else "EventGrid",
        topic=_text(env.get("source" if cloud else "topic")),
        subject=_text(env.get("subject")),
        event_time=_time(env.get("time" if cloud else "eventtime"), source, "event time"),
        object_id=object_id,
        vault=vault.lower(),
        object_type=_text(fields.get("objecttype")),
        name=name,
        version=version,
        not_before=_unix(fields.get("nbf"), source, "NBF"),
        expires=_unix(fields.get("exp"), source, "EXP"),
    )


def require_certificate_fields(event: KeyVaultEvent, source: str = "event") -> None:
    """A certificate event must name the vault, the certificate and the version."""
    missing = [label for label, value in (("VaultName", event.vault), ("ObjectName", event.name)) if not value]
    if not event.version:
        missing.append("Version")
    if missing:
        raise EventError(f"{source}: {event.short_type} event {event.event_id} has no {', '.join(missing)} in data")


def _folded(mapping: Mapping) -> dict:
    return {str(k).strip().lower(): v for k, v in mapping.items()}


def _text(value: object) -> str:
    """A string field trimmed, with lone surrogates (JSON's "\\ud800", which no store can encode) as U+FFFD."""
    return clean_text(value.strip()) if isinstance(value, str) else ""


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD: JSON can carry one ("\\udc80"), but UTF-8 and
    UTF-16 cannot encode it, so it would fail every audit write. (A Python str holds pairs as one code point.)"""
    return _LONE_SURROGATE.sub("\ufffd", text)


def _unix(value: object, source: str, label: str) -> dt.datetime | None:
    if value is None or value == "":
        return None
    try:
        if isinstance(value, str):
            seconds = float(value.strip())
        elif isinstance(value, SupportsFloat):
            seconds = float(value)
        else:
            raise TypeError(type(value).__name__)
        return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        raise EventError(f"{source}: {label} {_shown(value)} is not Unix seconds") from None


def _time(value: object, source: str, label: str) -> dt.datetime | None:
    try:
        return parse_time(_text(value))
    except ValueError:
        raise EventError(f"{source}: {label} {_shown(value)} is not ISO 8601") from None


def _shown(value: object) -> str:
    """A value for a message: its repr, cut at 80 characters."""
    text = repr(value) if isinstance(value, str | int | float) else type(value).__name__
    return text if len(text) <= 80 else text[:80] + "..."


def _vault_from_url(url: str, source: str) -> str:
    host = _split(url, source).hostname or "" if url else ""
    return host.split(".", 1)[0] if host else ""


def _version_from_url(url: str, source: str) -> str:
    parts = [p for p in _split(url, source).path.split("/") if p]
    return parts[2] if len(parts) >= 3 else ""


def _split(url: str, source: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        parts.hostname  # noqa: B018 - an unbalanced or bad IPv6 literal raises only here
    except ValueError as exc:
        raise EventError(
            f"{source}: data.Id {_shown(url)} is not a URL ({exc}); give the certificate's Key Vault URL"
        ) from None
    return parts
