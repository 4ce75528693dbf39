"""Notifications: a `Notice` as a Teams card, a Slack message or a signed Standard Webhooks payload,
delivered with bounded retries; a delivery that still fails goes to a poison queue and the audit trail.

Three layers, each usable alone:
- formatters, pure functions of a notice: `teams_message` (a Workflows webhook's `message` envelope
  around an Adaptive Card 1.4), `slack_message` (`text` plus `blocks`), `generic_payload`
  (`{"type": "certsync.<kind>", "timestamp", "data"}`), each kept inside its platform's limits;
- `WebhookChannel`: posts one formatted notice to one URL. 429 waits for Retry-After, 5xx, 408 and
  network errors back off (0.5 s, 1 s, 2 s ...), other answers are final; at most `attempts` tries;
- `FanoutNotifier`: the pipeline's `Notifier`. It logs every notice, sends it to every channel, and
  turns a failed delivery into a poison-queue message and a `notification-failed` audit entry. It never
  raises: Teams being down must not fail an event.

Webhook URLs carry their credential (Teams' `sig=`, Slack's token path), so they are secrets like the
generic webhook's signing keys: messages, logs, audit entries and poison messages name the setting
(`CERTSYNC_TEAMS_WEBHOOK_URL`), never the URL.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import logging
import re
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from shared.errors import CertsyncError
from shared.notify.notices import DIGEST_KIND, OnceNotifier, notice_entry, notice_id
from shared.notify.signing import sign
from shared.pipeline.audit import AuditLog
from shared.pipeline.process import LogNotifier, Notice, Notifier
from shared.times import format_time, retry_after_seconds

log = logging.getLogger("certsync.notify")

CHANNELS = ("teams", "slack", "generic")
URL_SETTINGS = {
    "teams": "CERTSYNC_TEAMS_WEBHOOK_URL",
    "slack": "CERTSYNC_SLACK_WEBHOOK_URL",
    "generic": "CERTSYNC_WEBHOOK_URL",
}
SECRET_SETTING = "CERTSYNC_WEBHOOK_SECRET"
POISON_SCHEMA = "certsync.notify-poison/1"
_LABELS = {"teams": "Teams webhook", "slack": "Slack webhook", "generic": "generic webhook"}

# Platform limits (local-stack spec §6). Teams caps a message at about 28 KB; the card is kept 2 KB
# under that because the Workflow wraps it before posting.
TEAMS_MESSAGE_LIMIT = 28 * 1024
_TEAMS_BUDGET = TEAMS_MESSAGE_LIMIT - 2 * 1024
SLACK_HEADER_LIMIT = 150
SLACK_TEXT_LIMIT = 3000
SLACK_FIELD_LIMIT = 2000
SLACK_FIELDS_PER_SECTION = 10
SLACK_BLOCK_LIMIT = 50
GENERIC_PAYLOAD_LIMIT = 20 * 1024  # Standard Webhooks recommends payloads under 20 KB
_VALUE_LIMIT = 1000  # one fact's value, in characters
_SUMMARY_LIMIT = 3000  # a summary in a card or a cut generic payload
_NAME_LIMIT = 200  # a certificate, vault or version name in a title, a label or a cut generic payload
_LABEL_LIMIT = 100  # a fact's label

# Plain http is for tests and demos on this machine only; a real webhook is https.
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_ANSWER_LIMIT = 4096  # bytes of a webhook's answer read (enough for an error code)
_ERROR_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,63}")


# --- formatting ----------------------------------------------------------------------------------


def notice_title(notice: Notice) -> str:
    """One line saying what happened to which certificate."""
    name = _clip(notice.certificate or "(no certificate)", _NAME_LIMIT)
    details = notice.details
    if notice.kind == DIGEST_KIND:
        return f"certsync digest: {_number(details.get('count')):.0f} notices"
    if notice.kind == "job-result":
        return f"Remediation {details.get('status') or 'finished'}: {name}"
    if notice.kind == "expiry-warning":
        days = details.get("days_left")
        if details.get("expired") or details.get("expiry_state") == "expired" or _number(days) < 0:
            return f"Expired: {name}"
        if isinstance(days, int | float):
            return f"Expires in {days:.0f} day(s): {name}"
        return f"Expires soon: {name}"
    template = _TITLES.get(notice.kind)
    return template.format(name) if template else f"{notice.kind}: {name}"


_TITLES = {
    "renewal": "Renewal seen: {}",
    "queued": "Renewal queued for deployment: {}",
    "blocked": "Renewal blocked: {}",
    "unblocked": "No longer blocked: {}",
    "awaiting-approval": "Renewal waiting for approval: {}",
    "job-decision": "Remediation ended without a result: {}",
    "job-started": "Remediation started: {}",
    "job-rejected": "Remediation rejected by Azure Automation: {}",
    "job-poisoned": "Remediation abandoned after retries: {}",
    "probe": "STARTTLS probe after remediation: {}",
    "drift": "Drift between Key Vault and Exchange: {}",
    "unprocessed": "Version never processed: {}",
    "failed": "Could not process: {}",
    "resolved": "Resolved: {}",
}

# details keys shown with a label, in this order; other scalar details follow under their own names.
_LABELLED = {
    "previous_version": "Previous version",
    "change": "Change",
    "dns_names_added": "DNS names added",
    "dns_names_removed": "DNS names removed",
    "assessment_status": "Assessment",
    "status": "Status",
    "reason": "Reason",
    "error": "Error",
    "days_left": "Days left",
    "not_after": "Expires",
    "job_id": "Job",
    "worker_group": "Worker group",
    "thumbprint": "Thumbprint",
    "outcome": "Outcome",
}
# details whose value is one of certsync's own codes (issuer_changed, waiting-for-inventory): shown as words
_WORDED = frozenset({"change", "outcome"})
# Shown in their own way (TlsCertificateName, servers, findings) or not at all (big structures and flags
# already said by the title).
# `state`, `previous`, `finding` and `expiry_state` are reconciliation's internal state names (an expiry
# state is a threshold, "7"); the correlation id is the notice's own, shown once, last.
_SPECIAL = frozenset(
    {
        "old",
        "new",
        "servers",
        "findings",
        "severity",
        "expired",
        "summary",
        "state",
        "previous",
        "finding",
        "expiry_state",
        "correlation_id",
        "issuer_change",
        "renewal_due",
    }
)


# Reconciliation's remembered states: never in a notice (the finding code and the summary say it in words).
_INTERNAL = frozenset({"state", "previous", "expiry_state"})


def notice_facts(notice: Notice) -> list[tuple[str, str]]:
    """The notice as (label, value) pairs for cards: certificate, vault, version, the TlsCertificateName
    (old -> new when a renewal changed it), per-server outcomes, findings, the other details; the
    correlation id always comes last."""
    details = notice.details
    if notice.kind == DIGEST_KIND:
        return _digest_facts(notice)
    facts = [("Certificate", _clip(notice.certificate, _VALUE_LIMIT)), ("Vault", _clip(notice.vault, _VALUE_LIMIT))]
    if notice.version:
        facts.append(("Version", _clip(notice.version, _VALUE_LIMIT)))
    old, new = details.get("old"), details.get("new")
    if new:
        facts.append(("TlsCertificateName", f"{old} -> {new}" if old and old != new else str(new)))
    elif old:
        facts.append(("TlsCertificateName (before)", str(old)))
    for key, label in _LABELLED.items():
        value = details.get(key)
        if key in _WORDED and isinstance(value, str):
            value = value.replace("_", " ").replace("-", " ")
        text = _fact_text(value)
        if text:
            facts.append((label, text))
    change = details.get("issuer_change")  # what the table of CA hierarchies makes of a new issuer
    if isinstance(change, Mapping) and change.get("explanation"):
        said = "" if change.get("expected") is True else "FLAGGED: "
        facts.append(("Issuer change", _clip(said + str(change["explanation"]), _VALUE_LIMIT)))
    servers = details.get("servers")
    if isinstance(servers, list) and servers and all(isinstance(s, Mapping) for s in servers):
        for entry in servers:  # per-server outcomes of a job result
            outcome = entry.get("outcome") or entry.get("status") or "?"
            label = _clip(str(entry.get("server") or "(all servers)"), _LABEL_LIMIT)
            facts.append((label, _clip(str(outcome), _VALUE_LIMIT)))
    elif text := _fact_text(servers):
        facts.append(("Servers", text))
    findings = details.get("findings")
    if isinstance(findings, list):
        for finding in findings:
            if isinstance(finding, Mapping):
                what = finding.get("summary") or finding.get("code") or ""
                severity = _clip(str(finding.get("severity") or "info"), 20)
                facts.append((f"Finding ({severity})", _clip(str(what), _VALUE_LIMIT)))
    for key, value in details.items():
        if key in _LABELLED or key in _SPECIAL:
            continue
        if text := _fact_text(value):
            facts.append((_clip(key.replace("_", " ").capitalize(), _LABEL_LIMIT), text))
    facts.append(("Correlation id", _clip(notice.correlation_id, _NAME_LIMIT)))
    return [(label, value) for label, value in facts if value]


# How a digest counts each kind of notice it lists.
_DIGEST_LABELS = {
    "renewal": "Renewals seen",
    "queued": "Queued for deployment",
    "blocked": "Blocked",
    "unblocked": "No longer blocked",
    "awaiting-approval": "Waiting for approval",
    "job-decision": "Remediations ended without a result",
    "failed": "Could not process",
    "expiry-warning": "Expiry warnings",
    "drift": "Drift",
    "unprocessed": "Never processed",
    "resolved": "Resolved",
    "job-result": "Remediation results",
    "job-started": "Remediations started",
    "job-rejected": "Remediations rejected",
    "job-poisoned": "Remediations abandoned",
    "probe": "Probes",
}


def _digest_label(kind: str) -> str:
    return _DIGEST_LABELS.get(kind) or _clip(kind.replace("-", " ").replace("_", " ").capitalize(), _LABEL_LIMIT)


def _digest_facts(notice: Notice) -> list[tuple[str, str]]:
    """A digest as facts: the count of each kind, then one line per notice it lists (the most urgent first),
    the correlation id last."""
    details = notice.details
    facts: list[tuple[str, str]] = []
    counts = details.get("counts")
    if isinstance(counts, Mapping):
        facts.extend((_digest_label(str(kind)), f"{_number(count):.0f}") for kind, count in counts.items())
    items = details.get("items")
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping):
            continue
        kind = str(item.get("kind") or "")
        title = _TITLES.get(kind, _digest_label(kind) + ": {}").format("").rstrip(": ")
        version = str(item.get("version") or "")
        what = f"{title} (version {version})" if version else title
        summary = " ".join(str(item.get("summary") or "").split())
        label = _clip(str(item.get("certificate") or "(no certificate)"), _LABEL_LIMIT)
        facts.append((label, _clip(f"{what}: {summary}" if summary else what, _VALUE_LIMIT)))
    facts.append(("Correlation id", _clip(notice.correlation_id, _NAME_LIMIT)))
    return [(label, value) for label, value in facts if value]


def teams_message(notice: Notice) -> dict:
    """A Teams Workflows webhook body: the `message` envelope around one Adaptive Card 1.4 (a bare card
    or a newer version is refused by the Workflow). Facts that would take the message over Teams' size
    limit are left out, and the card says how many."""
    facts = notice_facts(notice)
    *head, last = facts
    message = _teams_card(notice, facts, 0)
    if _size(message) <= _TEAMS_BUDGET:
        return message
    low, high = 0, len(head)  # the most facts (in order, the correlation id kept) that fit
    while low < high:
        middle = (low + high + 1) // 2
        if _size(_teams_card(notice, [*head[:middle], last], len(head) - middle)) <= _TEAMS_BUDGET:
            low = middle
        else:
            high = middle - 1
    message = _teams_card(notice, [*head[:low], last], len(head) - low)
    if _size(message) > _TEAMS_BUDGET:  # the summary alone is too big (every character escaped, 4 UTF-8 bytes)
        message = _teams_card(notice, [last], len(head), summary_limit=_VALUE_LIMIT)
    return message


_TEAMS_COLOURS = {"critical": "attention", "warning": "warning", "good": "good", "info": "accent"}


def _teams_card(
    notice: Notice, facts: Sequence[tuple[str, str]], left_out: int, *, summary_limit: int = _SUMMARY_LIMIT
) -> dict:
    body: list[dict] = [
        {
            "type": "TextBlock",
            "text": _teams_text(_clip(notice_title(notice), 2 * _NAME_LIMIT)),
            "size": "Medium",
            "weight": "Bolder",
            "color": _TEAMS_COLOURS[notice.severity],
            "wrap": True,
        },
        {"type": "TextBlock", "text": _teams_text(_clip(notice.summary, summary_limit) or notice.kind), "wrap": True},
        {
            "type": "FactSet",
            "facts": [{"title": _teams_text(label), "value": _teams_text(value)} for label, value in facts],
        },
    ]
    if left_out:
        body.append(
            {
                "type": "TextBlock",
                "text": f"{left_out} more fact(s) left out to fit Teams' message size limit;"
                " the audit trail has them (look up the correlation id).",
                "isSubtle": True,
                "wrap": True,
            }
        )
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": body,
                },
            }
        ],
    }


_SLACK_EMOJI = {
    "critical": ":red_circle:",
    "warning": ":warning:",
    "good": ":white_check_mark:",
    "info": ":information_source:",
}


def slack_message(notice: Notice) -> dict:
    """A Slack incoming-webhook body: `text` (the notification fallback) and `blocks`: a header, the
    summary, the facts as fields (10 to a section), and a context line; within Slack's limits (header
    150, section text 3000, field 2000 characters, 50 blocks).

    What comes from a certificate, Key Vault or a server is never read as mrkdwn: the header, summary and
    fields are `plain_text` (so `*` in `*.contoso.com`, `_`, `~`, `<!channel>` and `<url|text>` show as
    typed), and the `text` fallback is sent with `mrkdwn: false` and `& < >` escaped, so it cannot
    link or mention either."""
    severity = notice.severity
    title = notice_title(notice)
    *facts, _correlation = notice_facts(notice)
    fields = [_clip(f"{label}\n{value}", SLACK_FIELD_LIMIT) for label, value in facts]
    sections = [
        {
            "type": "section",
            "fields": [_plain(text) for text in fields[i : i + SLACK_FIELDS_PER_SECTION]],
        }
        for i in range(0, len(fields), SLACK_FIELDS_PER_SECTION)
    ]
    room = SLACK_BLOCK_LIMIT - 3  # besides the header, the summary and the context
    context = f"certsync · {severity} · {notice.kind} · correlation id {notice.correlation_id}"
    if len(sections) > room:
        left_out = sum(len(s["fields"]) for s in sections[room:])
        sections = sections[:room]
        context += f" · {left_out} more fact(s) left out (Slack's block limit); the audit trail has them"
    blocks = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _clip(f"{_SLACK_EMOJI[severity]} {title}", SLACK_HEADER_LIMIT),
                "emoji": True,
            },
        },
        {"type": "section", "text": _plain(_clip(notice.summary or title, SLACK_TEXT_LIMIT))},
        *sections,
        {"type": "context", "elements": [_plain(_clip(context, SLACK_TEXT_LIMIT))]},
    ]
    text = _mrkdwn(f"[{severity}] {title}: {notice.summary}", SLACK_TEXT_LIMIT)
    return {"text": text, "mrkdwn": False, "blocks": blocks}


def _plain(text: str) -> dict:
    """A Slack plain_text object: shown as typed, no formatting, links, mentions or emoji codes."""
    return {"type": "plain_text", "text": text, "emoji": False}


# The Adaptive Card markdown subset Teams renders: **bold**, _italic_, [links](url), and "- " / "1. " lists at
# the start of a line. A backslash before a character shows it as typed (escaping `[` and `]` is enough to
# stop a link).
_TEAMS_MARKDOWN = frozenset("\\*_[]")
_TEAMS_LIST = re.compile(r"^(\s*)([-+]|\d+\.)(?=\s)", re.MULTILINE)


def _teams_text(text: str) -> str:
    """`text` for a TextBlock or FactSet: every markdown character escaped, so a wildcard's `*` stays, and
    a crafted subject cannot make bold text, a link or a list."""
    escaped = "".join("\\" + c if c in _TEAMS_MARKDOWN else c for c in text)
    return _TEAMS_LIST.sub(_unlist, escaped)


def _unlist(match: re.Match[str]) -> str:
    indent, marker = match.group(1), match.group(2)
    return indent + (marker[:-1] + "\\." if marker.endswith(".") else "\\" + marker)


def generic_payload(notice: Notice, at: dt.datetime) -> dict:
    """The Standard Webhooks payload `{"type": "certsync.<kind>", "timestamp", "data"}`, under 20 KB
    once encoded: details too big are cut (long strings and lists shortened, then dropped) and
    `data.details_truncated` says so."""
    data: dict[str, Any] = {
        "id": notice_id(notice),
        "kind": notice.kind,
        "severity": notice.severity,
        "title": notice_title(notice),
        "certificate": notice.certificate,
        "vault": notice.vault,
        "version": notice.version,
        "correlation_id": notice.correlation_id,
        "summary": notice.summary,
        "details": {k: v for k, v in notice.details.items() if k not in _INTERNAL},
    }
    payload = {"type": f"certsync.{notice.kind}", "timestamp": format_time(at, timespec="seconds"), "data": data}
    if _size(payload) < GENERIC_PAYLOAD_LIMIT:
        return payload
    for key in ("title", "certificate", "vault", "version", "correlation_id"):
        data[key] = _clip(data[key], _NAME_LIMIT)
    data["summary"] = _clip(notice.summary, _SUMMARY_LIMIT)
    data["details_truncated"] = True
    data["details"] = _shrink(data["details"])
    if _size(payload) >= GENERIC_PAYLOAD_LIMIT:
        data["details"] = {}
    if _size(payload) >= GENERIC_PAYLOAD_LIMIT:  # the summary alone is too big (escaped or 4-byte characters)
        data["summary"] = _clip(notice.summary, _VALUE_LIMIT // 2)
    return payload


def encode(payload: dict) -> bytes:
    """Compact UTF-8 JSON: the exact bytes sent (and signed)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _size(payload: dict) -> int:
    return len(encode(payload))


def _fact_text(value: object) -> str:
    """A detail as fact text; empty for what is not shown as a fact (None, empty, nested structures)."""
    if value is None or isinstance(value, Mapping):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        if not value or not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in value):
            return ""
        return _clip(", ".join(str(v) for v in value), _VALUE_LIMIT)
    return _clip(" ".join(str(value).split()), _VALUE_LIMIT)  # one line


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _mrkdwn(text: str, limit: int, *, escaped: bool = False) -> str:
    """`text` escaped for Slack mrkdwn and cut to `limit` characters without splitting an entity."""
    text = text if escaped else _escape(text)
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&")
    if amp >= 0 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def _shrink(value: object, depth: int = 0) -> object:
    """`value` with long strings, long lists and deep nesting cut (for the generic payload's limit)."""
    if depth > 4:
        return "…"
    if isinstance(value, str):
        return _clip(value, 200)
    if isinstance(value, Mapping):
        return {str(k): _shrink(v, depth + 1) for k, v in list(value.items())[:40]}
    if isinstance(value, list | tuple):
        return [_shrink(v, depth + 1) for v in value[:20]]
    return value


# --- delivery ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """How one notice fared on one channel. `error` is one line that names the setting, never the URL."""

    channel: str
    delivered: bool
    status: int | None  # the last HTTP status, None when no answer came
    attempts: int
    error: str = ""
    waits: tuple[float, ...] = ()  # the pauses between attempts, in seconds


def backoff_seconds(attempt: int) -> float:
    """The pause after failed attempt `attempt` (1-based): 0.5 s, 1 s, 2 s, 4 s ..."""
    return 0.5 * 2 ** (attempt - 1)


class WebhookChannel:
    """One webhook: Teams (Workflows), Slack (incoming webhook) or generic (Standard Webhooks, signed
    with every secret in `secrets` so a receiver holding any of them verifies it).

    `deliver` formats a notice once and posts it, up to `attempts` times: a 429 waits for Retry-After
    (capped at `max_wait` seconds), 5xx, 408, timeouts and connection errors back off; other answers
    (400, 403, 404, 410: a wrong or deleted webhook) are final. `sleep` and `ssl_context` are seams for
    tests; `timeout` bounds each connect and read."""

    def __init__(
        self,
        kind: str,
        url: str,
        secrets: Sequence[bytes] = (),
        *,
        timeout: float = 10.0,
        attempts: int = 4,
        max_wait: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if kind not in CHANNELS:
            raise ValueError(f"webhook channel kind {kind!r}: use one of {', '.join(CHANNELS)}")
        self.kind = kind
        self.setting = URL_SETTINGS[kind]
        self.what = f"the {_LABELS[kind]} ({self.setting})"
        self._scheme, self._host, self._port, self._target = _split_url(url, self.setting)
        if kind == "teams" and self._host.endswith(("webhook.office.com", "outlook.office.com")):
            log.warning(
                "%s is an Office 365 connector URL; Microsoft retired those connectors: create a Teams Workflows"
                " webhook instead (README, Notifications)",
                self.setting,
            )
        self._keys = tuple(secrets)
        if kind == "generic" and not self._keys:
            raise CertsyncError(
                f"{SECRET_SETTING} is not set: {self.setting} needs it to sign the webhook;"
                " set it to one or more whsec_ secrets (space separated, the new one first)"
            )
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.max_wait = max_wait
        self._sleep = sleep
        self._ssl_context = ssl_context

    def __repr__(self) -> str:
        return f"WebhookChannel({self.kind!r}, <{self.setting}>)"  # never the URL

    def body(self, notice: Notice, at: dt.datetime | None = None) -> bytes:
        """The bytes this channel sends for `notice`."""
        if self.kind == "teams":
            return encode(teams_message(notice))
        if self.kind == "slack":
            return encode(slack_message(notice))
        return encode(generic_payload(notice, at or dt.datetime.now(dt.timezone.utc)))

    def deliver(self, notice: Notice) -> Delivery:
        body = self.body(notice)
        message_id = notice_id(notice)
        ids = {"certsync.channel": self.kind, "certsync.notice_id": message_id, "certsync.kind": notice.kind}
        waits: list[float] = []
        status: int | None = None
        error = ""
        for attempt in range(1, self.attempts + 1):
            headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "certsync"}
            if self.kind == "generic":
                headers.update(sign(self._keys, message_id, body))  # a fresh timestamp per attempt
            try:
                status, retry_after, answer = self._post(body, headers)
            except (OSError, http.client.HTTPException) as exc:
                status, error, wait = (
                    None,
                    f"{self.what}: {_network_error(exc, self.timeout)}",
                    backoff_seconds(attempt),
                )
            else:
                if 200 <= status < 300:
                    log.info(
                        "%s notification %s delivered",
                        self.kind,
                        notice.kind,
                        extra=ids | {"certsync.attempts": attempt},
                    )
                    return Delivery(self.kind, True, status, attempt, "", tuple(waits))
                code = _error_code(answer)
                error = f"{self.what} answered HTTP {status}" + (f" ({code})" if code else "")
                if status == 429:
                    asked = retry_after_seconds(retry_after, dt.datetime.now(dt.timezone.utc))
                    wait = backoff_seconds(attempt) if asked is None else asked
                elif status >= 500 or status == 408:
                    wait = backoff_seconds(attempt)
                else:
                    final = f"{error}; not retried: check the webhook and {self.setting}"
                    return Delivery(self.kind, False, status, attempt, final, tuple(waits))
            if attempt == self.attempts:
                break
            wait = min(wait, self.max_wait)
            log.info("%s; retrying in %.1f s (attempt %d of %d)", error, wait, attempt, self.attempts, extra=ids)
            waits.append(wait)
            self._sleep(wait)
        final = f"{error}; gave up after {self.attempts} attempt(s)"
        return Delivery(self.kind, False, status, self.attempts, final, tuple(waits))

    def _post(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, str | None, bytes]:
        """One POST: (status, Retry-After, the start of the answer). No redirects, no proxies."""
        connection: http.client.HTTPConnection
        if self._scheme == "https":
            context = self._ssl_context or ssl.create_default_context()
            connection = http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout, context=context)
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        try:
            connection.request("POST", self._target, body=body, headers=dict(headers))
            response = connection.getresponse()
            answer = response.read(_ANSWER_LIMIT)
            return response.status, response.getheader("Retry-After"), answer
        finally:
            connection.close()


def _split_url(url: str, setting: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path?query) of a webhook URL; https, or http to this machine only."""
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname or "", parts.port
    except ValueError:
        raise CertsyncError(f"{setting} is not a valid URL; set it to the webhook's https:// address") from None
    if not host or parts.scheme not in ("https", "http"):
        raise CertsyncError(f"{setting} is not an http(s) URL; set it to the webhook's https:// address")
    if parts.scheme == "http" and host not in _LOOPBACK_HOSTS:
        raise CertsyncError(
            f"{setting} must be an https:// URL (plain http is accepted for 127.0.0.1 and localhost only)"
        )
    if parts.username or parts.password:
        raise CertsyncError(f"{setting} must not carry a user name or password")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80), target


def _error_code(answer: bytes) -> str:
    """An error code from a webhook's answer (Slack: `invalid_payload`; JSON: error.code), else ""."""
    text = answer.decode("utf-8", "replace").strip()
    if _ERROR_CODE.fullmatch(text):
        return text
    try:
        data = json.loads(text)
    except ValueError:
        return ""
    if isinstance(data, dict):
        inner = data.get("error")
        code = inner.get("code") if isinstance(inner, dict) else data.get("code") or inner
        if isinstance(code, str) and _ERROR_CODE.fullmatch(code):
            return code
    return ""


def _network_error(exc: BaseException, timeout: float) -> str:
    """A network failure in one line, without the URL (some exceptions quote it)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__} ({exc.strerror})"
    return type(exc).__name__


# --- failed deliveries ---------------------------------------------------------------------------


class PoisonQueue(Protocol):
    """Where undeliverable notifications go, as JSON text (`shared.adapters.azure.queues.StorageMessageQueue`)."""

    def send(self, text: str) -> None: ...


@dataclass
class FanoutNotifier:
    """The `Notifier` that logs a notice and sends it to every channel (concurrently).

    A delivery that fails after its retries becomes a message on `poison` (channel kind, error and the
    notice as the generic payload's data, never the URL) and a `notification-failed` audit entry; if
    the poison queue fails too, an error is logged with the notice id. Nothing here raises."""

    channels: Sequence[WebhookChannel]
    audit: AuditLog | None = None
    poison: PoisonQueue | None = None
    log_notifier: Notifier = field(default_factory=LogNotifier)

    def notify(self, notice: Notice) -> None:
        self.deliver_all(notice)

    def deliver_all(self, notice: Notice) -> list[Delivery]:
        """`notify`, returning how each channel fared."""
        try:
            self.log_notifier.notify(notice)
        except Exception as exc:  # logging must not stop the webhooks
            log.error("notice %s could not be logged: %s", notice_id(notice), type(exc).__name__)
        if not self.channels:
            return []
        if len(self.channels) == 1:
            results = [self._attempt(self.channels[0], notice)]
        else:
            with ThreadPoolExecutor(max_workers=len(self.channels), thread_name_prefix="certsync-notify") as pool:
                results = list(pool.map(lambda channel: self._attempt(channel, notice), self.channels))
        for result in results:
            if not result.delivered:
                self._give_up(notice, result)
        return results

    @staticmethod
    def _attempt(channel: WebhookChannel, notice: Notice) -> Delivery:
        try:
            return channel.deliver(notice)
        except Exception as exc:  # a formatter or client bug must not fail the event; type only (no URL)
            return Delivery(channel.kind, False, None, 0, f"{channel.what}: {type(exc).__name__} while sending")

    def _give_up(self, notice: Notice, result: Delivery) -> None:
        message_id = notice_id(notice)
        ids = {
            "certsync.channel": result.channel,
            "certsync.notice_id": message_id,
            "certsync.kind": notice.kind,
            "certsync.certificate": notice.certificate,
            "certsync.correlation_id": notice.correlation_id,
        }
        log.warning("%s notification %s not delivered: %s", result.channel, notice.kind, result.error, extra=ids)
        now = dt.datetime.now(dt.timezone.utc)
        poisoned = False
        if self.poison is not None:
            message = {
                "schema": POISON_SCHEMA,
                "channel": result.channel,
                "notice_id": message_id,
                "failed_at": format_time(now, timespec="seconds"),
                "status": result.status,
                "attempts": result.attempts,
                "error": result.error,
                "notice": generic_payload(notice, now)["data"],  # bounded, so it fits a queue message
            }
            try:
                self.poison.send(json.dumps(message, separators=(",", ":"), ensure_ascii=False))
                poisoned = True
            except Exception as exc:
                log.error(
                    "notification %s (%s, %s channel) is not on the poison queue either: %s",
                    message_id,
                    notice.kind,
                    result.channel,
                    _safe_error(exc),
                    extra=ids,
                )
        if self.audit is None:
            return
        try:
            self.audit.record(
                notice_entry(
                    notice,
                    "notification-failed",
                    f"{_LABELS[result.channel]} notification ({notice.kind}) not delivered: {result.error}",
                    {
                        "channel": result.channel,
                        "notice_kind": notice.kind,
                        "notice_id": message_id,
                        "status": result.status,
                        "attempts": result.attempts,
                        "error": result.error,
                        "poisoned": poisoned,
                    },
                )
            )
        except Exception as exc:
            log.error("notification %s failure could not be audited: %s", message_id, _safe_error(exc), extra=ids)


def _safe_error(exc: BaseException) -> str:
    """certsync's own errors are one safe line; anything else is reported by type only."""
    return str(exc) if isinstance(exc, CertsyncError) else type(exc).__name__


# --- settings ------------------------------------------------------------------------------------


def webhook_channels(urls: Mapping[str, str], secrets: Sequence[bytes] = (), **options: Any) -> list[WebhookChannel]:
    """One channel per configured webhook, in `CHANNELS` order: `urls` maps a kind to its URL (values
    `shared.wiring` takes from the settings), `secrets` sign the generic one; `options` go to each channel."""
    return [
        WebhookChannel(kind, urls[kind], secrets if kind == "generic" else (), **options)
        for kind in CHANNELS
        if urls.get(kind)
    ]


def webhook_notifier(
    channels: Sequence[WebhookChannel], audit: AuditLog | None, poison: PoisonQueue | None
) -> Notifier:
    """`FanoutNotifier` over `channels`, failed deliveries on `poison` (the Function App's is the
    NOTIFY_POISON_QUEUE queue, built by `shared.wiring`) and in `audit`; only `LogNotifier` when there is
    no channel. With an `audit` trail, each (certificate, version, outcome) is sent once (`OnceNotifier`)."""
    if not channels:
        return LogNotifier()
    fanout = FanoutNotifier(list(channels), audit, poison)
    return OnceNotifier(fanout, audit) if audit is not None else fanout
