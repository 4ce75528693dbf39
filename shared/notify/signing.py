"""Standard Webhooks v1 signatures (https://www.standardwebhooks.com, spec 1.0.0): HMAC-SHA256 over
`"{id}.{timestamp}.{body}"`, sent as `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<b64>`.

One scheme for everything certsync signs or checks: the generic webhook it sends, and the result the
runbook posts back. Secrets are `whsec_<base64>`; several may be configured at once so a secret can be
rotated: `sign` signs with each (the receiver accepts any), `verify` accepts a signature by any.
Secrets never appear in messages or exceptions.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping, Sequence

from shared.errors import CertsyncError

PREFIX = "whsec_"
TOLERANCE = dt.timedelta(minutes=5)  # the spec's replay window


class SignatureError(CertsyncError):
    """A missing, stale or wrong signature. The message names what was wrong, never a secret."""


def parse_secrets(text: str, setting: str) -> tuple[bytes, ...]:
    """Secrets from a setting: `whsec_...` values separated by spaces or commas (new one first)."""
    keys = []
    for item in text.replace(",", " ").split():
        if not item.startswith(PREFIX):
            raise CertsyncError(f"{setting}: each secret must start with {PREFIX} (see README, signed webhooks)")
        try:
            key = base64.b64decode(item[len(PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raise CertsyncError(f"{setting}: a secret is not valid base64 after {PREFIX}") from None
        if not 24 <= len(key) <= 64:
            raise CertsyncError(f"{setting}: a secret must hold 24 to 64 random bytes (it holds {len(key)})")
        keys.append(key)
    return tuple(keys)


def new_secret(size: int = 32) -> str:
    import secrets

    return PREFIX + base64.b64encode(secrets.token_bytes(size)).decode()


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def sign(keys: Sequence[bytes], message_id: str, body: bytes, at: dt.datetime | None = None) -> dict[str, str]:
    """The three headers for `body`, signed with every key (rotation: receivers accept any)."""
    if not keys:
        raise CertsyncError("no signing secret configured")
    timestamp = int((at or dt.datetime.now(dt.timezone.utc)).timestamp())
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(key, message_id, timestamp, body) for key in keys),
    }


def verify(keys: Sequence[bytes], headers: Mapping[str, str], body: bytes, at: dt.datetime | None = None) -> str:
    """Check the headers against `body`; returns the webhook id, raises `SignatureError` otherwise."""
    lowered = {k.lower(): v for k, v in headers.items()}
    message_id = lowered.get("webhook-id", "")
    stamp = lowered.get("webhook-timestamp", "")
    offered = lowered.get("webhook-signature", "")
    if not (message_id and stamp and offered):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature header")
    if not stamp.isdigit():
        raise SignatureError("webhook-timestamp is not a Unix time in seconds")
    now = at or dt.datetime.now(dt.timezone.utc)
    sent = dt.datetime.fromtimestamp(int(stamp), dt.timezone.utc)
    if abs(now - sent) > TOLERANCE:
        raise SignatureError("webhook-timestamp is more than 5 minutes from now; the request is stale or replayed")
    candidates = [part for part in offered.split() if part.startswith("v1,")]
    for key in keys:
        expected = signature(key, message_id, int(stamp), body)
        if any(hmac.compare_digest(expected, candidate) for candidate in candidates):
            return message_id
    raise SignatureError("no webhook-signature matches the body with a configured secret")
