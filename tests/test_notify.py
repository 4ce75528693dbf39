"""Notifications: the Teams, Slack and Standard Webhooks formats and their limits; delivery to real
receivers on loopback that verify signatures with the independent `standardwebhooks` library and
answer 500, 429 and 400; failed deliveries on the poison queue (Azurite) and in the audit trail; the
pipeline's renewal notice arriving with its diff. No webhook URL or secret may appear in anything
certsync writes."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import socket
import ssl
import uuid
from pathlib import Path

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from shared.adapters.azure.queues import StorageMessageQueue
from shared.adapters.local.sqlite import SqliteAuditLog
from shared.errors import CertsyncError
from shared.notify.notices import OnceNotifier
from shared.notify.signing import new_secret, parse_secrets
from shared.notify.webhooks import (
    GENERIC_PAYLOAD_LIMIT,
    SLACK_BLOCK_LIMIT,
    TEAMS_MESSAGE_LIMIT,
    FanoutNotifier,
    WebhookChannel,
    encode,
    generic_payload,
    notice_facts,
    notice_id,
    slack_message,
    teams_message,
)
from shared.pipeline.events import parse_event
from shared.pipeline.process import LogNotifier, Notice
from shared.settings import value
from shared.wiring import channels_from_env, notifier_from_env, storage_from_env
from tests import test_pipeline
from tests.azurite import ACCOUNT_KEY, queued_json
from tests.receivers import WebhookReceiver

renewal = test_pipeline.renewal  # the pipeline tests' fixture: two versions, R10 -> R11

AT = dt.datetime(2026, 11, 26, 8, 0, tzinfo=dt.timezone.utc)
OLD = "<I>CN=R10, O=Contoso, C=US<S>CN=mail.contoso.com, C=US"
NEW = "<I>CN=R11, O=Contoso, C=US<S>CN=mail.contoso.com, C=US"


def notice(kind: str = "queued", summary: str = "Renewal seen: issuer changed (R10 -> R11).", **details) -> Notice:
    return Notice(kind, "exch-hybrid-smtp", "contoso-kv", "v2", "corr-7", summary, details)


def renewal_notice() -> Notice:
    return notice(
        change="issuer_changed",
        previous_version="v1",
        old=OLD,
        new=NEW,
        dns_names_added=["smtp.contoso.com"],
        dns_names_removed=[],
        assessment_status="Valid",
        job_id="ab" * 16,
    )


def job_result(servers: int, status: str = "failed") -> Notice:
    rows = [{"server": f"EX{n:04d}", "outcome": "failed" if n == 2 else "succeeded"} for n in range(1, servers + 1)]
    return notice("job-result", f"The runbook finished: {status}", status=status, servers=rows, error="EX0002: boom")


class Sleeps(list):
    """The channels' sleep: records each requested pause instead of waiting (the receivers are real)."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def generic_channel(receiver: WebhookReceiver, *secrets: str, **options) -> WebhookChannel:
    keys = parse_secrets(" ".join(secrets), "CERTSYNC_WEBHOOK_SECRET")
    return WebhookChannel("generic", receiver.url, keys, **options)


@pytest.fixture
def receiver():
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def secret() -> str:
    return new_secret()


@pytest.fixture
def signed_receiver(secret):
    with WebhookReceiver([secret]) as server:
        yield server


# --- formats -------------------------------------------------------------------------------------


def test_teams_message_is_the_workflows_envelope_around_an_adaptive_card_1_4():
    message = teams_message(renewal_notice())
    assert set(message) == {"type", "attachments"} and message["type"] == "message"
    [attachment] = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["contentUrl"] is None
    card = attachment["content"]
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    title, summary, factset = card["body"]
    assert title["type"] == "TextBlock" and title["text"] == "Renewal queued for deployment: exch-hybrid-smtp"
    assert summary["text"].startswith("Renewal seen: issuer changed (R10 -> R11)")
    facts = {f["title"]: f["value"] for f in factset["facts"]}
    assert facts["Certificate"] == "exch-hybrid-smtp" and facts["Vault"] == "contoso-kv" and facts["Version"] == "v2"
    assert facts["TlsCertificateName"] == f"{OLD} -> {NEW}"
    assert facts["Change"] == "issuer changed" and facts["DNS names added"] == "smtp.contoso.com"
    assert factset["facts"][-1] == {"title": "Correlation id", "value": "corr-7"}
    assert "DNS names removed" not in facts  # empty lists are not facts


@pytest.mark.parametrize(
    ("made", "colour"),
    [
        (notice("blocked", reason="the assessment is Revoked"), "attention"),
        (notice("expiry-warning", days_left=20.4), "warning"),
        (notice("expiry-warning", days_left=6.5), "attention"),
        (job_result(2, "succeeded"), "good"),
        (job_result(2, "failed"), "attention"),
        (notice("queued"), "accent"),
    ],
)
def test_the_teams_title_is_coloured_by_severity(made, colour):
    title = teams_message(made)["attachments"][0]["content"]["body"][0]
    assert title["color"] == colour and title["weight"] == "Bolder"


def test_a_job_result_lists_each_servers_outcome():
    facts = dict(notice_facts(job_result(3)))
    assert (facts["EX0001"], facts["EX0002"], facts["EX0003"]) == ("succeeded", "failed", "succeeded")
    assert facts["Status"] == "failed" and facts["Error"] == "EX0002: boom"


def test_a_teams_card_too_big_keeps_under_the_limit_and_says_facts_were_left_out():
    made = job_result(3000)
    message = teams_message(made)
    size = len(encode(message))
    assert size <= TEAMS_MESSAGE_LIMIT - 1024
    body = message["attachments"][0]["content"]["body"]
    facts = body[2]["facts"]
    assert facts[-1] == {"title": "Correlation id", "value": "corr-7"}
    assert 100 < len(facts) < 3000
    assert body[-1]["text"].startswith(f"{len(notice_facts(made)) - len(facts)} more fact(s) left out")
    # the most facts that fit: one more would not
    assert size > TEAMS_MESSAGE_LIMIT - 2 * 1024 - 200


def test_slack_message_has_text_and_blocks_and_never_reads_certificate_text_as_mrkdwn():
    made = notice("blocked", "Not deployed: <I>CN=R11 & Co<S>CN=mail > x", reason="issuer <I>R11 & co")
    message = slack_message(made)
    assert set(message) == {"text", "mrkdwn", "blocks"} and message["mrkdwn"] is False
    assert (
        message["text"]
        == "[critical] Renewal blocked: exch-hybrid-smtp: Not deployed: &lt;I&gt;CN=R11 &amp; Co&lt;S&gt;CN=mail &gt; x"
    )
    header, summary, *fields, context = message["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": ":red_circle: Renewal blocked: exch-hybrid-smtp", "emoji": True},
    }
    assert summary["text"] == {
        "type": "plain_text",
        "text": "Not deployed: <I>CN=R11 & Co<S>CN=mail > x",
        "emoji": False,
    }
    texts = [f["text"] for section in fields for f in section["fields"]]
    assert "Reason\nissuer <I>R11 & co" in texts
    assert {f["type"] for section in fields for f in section["fields"]} == {"plain_text"}
    assert context["type"] == "context" and "corr-7" in context["elements"][0]["text"]
    assert "mrkdwn" not in json.dumps(message["blocks"])


def test_slack_message_stays_within_slacks_limits():
    long = notice(
        "job-result",
        "x&" * 4000,
        status="failed",
        servers=[{"server": f"EX{n}", "outcome": "failed"} for n in range(900)],
    )
    message = slack_message(long)
    blocks = message["blocks"]
    assert len(blocks) == SLACK_BLOCK_LIMIT  # every block Slack allows is used, no more
    assert len(blocks[0]["text"]["text"]) <= 150
    summary = blocks[1]["text"]["text"]
    assert len(summary) <= 3000 and summary.endswith("…") and summary[-2] in "x;"  # no entity cut in half
    assert len(message["text"]) <= 3000
    for section in blocks[2:-1]:
        assert len(section["fields"]) <= 10
        assert all(len(f["text"]) <= 2000 for f in section["fields"])
    assert "more fact(s) left out" in blocks[-1]["elements"][0]["text"]


def test_generic_payload_is_standard_webhooks_shaped_and_compact():
    made = renewal_notice()
    payload = generic_payload(made, AT)
    assert payload["type"] == "certsync.queued" and payload["timestamp"] == "2026-11-26T08:00:00Z"
    data = payload["data"]
    assert data["id"] == notice_id(made) and data["severity"] == "info"
    assert data["details"]["old"] == OLD and data["details"]["new"] == NEW
    body = encode(payload)
    assert len(body) < GENERIC_PAYLOAD_LIMIT
    assert body == json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False).encode()  # minified


def test_generic_payload_too_big_is_cut_below_20kb_and_says_so():
    made = notice("probe", "probe", endpoints=[{"host": f"mx{n}.contoso.com", "served": "x" * 500} for n in range(200)])
    payload = generic_payload(made, AT)
    assert len(encode(payload)) < GENERIC_PAYLOAD_LIMIT
    assert payload["data"]["details_truncated"] is True
    assert len(payload["data"]["details"]["endpoints"]) == 20


def test_an_unknown_kind_still_formats():
    made = notice("reconcile-summary", "3 certificates checked", checked=3, names=["a", "b"], nested={"x": 1})
    facts = dict(notice_facts(made))
    assert facts["Checked"] == "3" and facts["Names"] == "a, b" and "Nested" not in facts
    assert teams_message(made)["attachments"][0]["content"]["body"][0]["text"] == "reconcile-summary: exch-hybrid-smtp"
    assert generic_payload(made, AT)["type"] == "certsync.reconcile-summary"
    assert slack_message(made)["blocks"][0]["text"]["text"].endswith("reconcile-summary: exch-hybrid-smtp")


@pytest.mark.parametrize(
    ("made", "severity"),
    [
        (notice("renewal"), "info"),
        (notice("queued"), "info"),
        (notice("job-started"), "info"),
        (notice("blocked"), "critical"),
        (notice("job-rejected"), "critical"),
        (notice("job-poisoned"), "critical"),
        (notice("job-result", status="succeeded"), "good"),
        (notice("job-result", status="rolled-back"), "critical"),
        (notice("probe"), "warning"),
        (notice("expiry-warning", days_left=29.0), "warning"),
        (notice("expiry-warning", days_left=7.0), "critical"),
        (notice("expiry-warning", days_left=-2.0, expired=True), "critical"),
        (notice("expiry-warning", expiry_state="expired"), "critical"),
        (notice("drift"), "warning"),
        (notice("unprocessed"), "warning"),
        (notice("failed"), "warning"),
        (notice("drift", severity="critical"), "critical"),
    ],
)
def test_severity_follows_the_kind_and_its_details(made, severity):
    assert made.severity == severity


def test_the_webhook_id_is_stable_per_notice_and_differs_between_notices():
    assert notice_id(renewal_notice()) == notice_id(renewal_notice())
    assert notice_id(notice("queued")) != notice_id(notice("blocked"))
    assert notice_id(notice("queued")).startswith("msg_") and len(notice_id(notice("queued"))) == 28


# --- delivery to real receivers ------------------------------------------------------------------


def test_the_generic_webhook_is_verified_by_the_independent_library(signed_receiver, secret):
    made = renewal_notice()
    result = generic_channel(signed_receiver, secret).deliver(made)
    assert (result.delivered, result.status, result.attempts) == (True, 200, 1)
    [request] = signed_receiver.received
    assert request.verified and request.headers["webhook-id"] == notice_id(made)
    assert request.headers["Content-Type"].startswith("application/json")
    payload = Webhook(secret).verify(request.body, dict(request.headers))  # raises unless it verifies
    assert payload["type"] == "certsync.queued" and payload["data"]["details"]["new"] == NEW


def test_rotation_signs_with_every_secret_and_a_receiver_with_the_old_one_verifies(secret):
    newer = new_secret()
    with WebhookReceiver([secret]) as old_only, WebhookReceiver([new_secret()]) as stranger:
        assert generic_channel(old_only, newer, secret).deliver(notice()).delivered
        [request] = old_only.received
        signatures = request.headers["webhook-signature"].split()
        assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
        assert request.verified_by == (0,)
        assert Webhook(newer).verify(request.body, dict(request.headers))
        generic_channel(stranger, newer, secret).deliver(notice())
        [refused] = stranger.received
        assert refused.verified is False and refused.error == "No matching signature found"


def test_a_tampered_body_fails_verification(signed_receiver, secret):
    generic_channel(signed_receiver, secret).deliver(renewal_notice())
    [request] = signed_receiver.received
    tampered = request.body.replace(b"issuer_changed", b"unchanged")
    assert tampered != request.body
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(secret).verify(tampered, dict(request.headers))


def test_a_500_is_retried_after_a_backoff_and_then_delivered(signed_receiver, secret):
    signed_receiver.answer(500, body=b"upstream failure")
    sleeps = Sleeps()
    result = generic_channel(signed_receiver, secret, sleep=sleeps).deliver(notice())
    assert (result.delivered, result.attempts, result.waits) == (True, 2, (0.5,))
    assert sleeps == [0.5]
    first, second = signed_receiver.received
    assert (first.status, second.status) == (500, 200)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]  # the receiver can dedupe
    assert first.verified and second.verified


def test_a_429_waits_at_least_retry_after_then_delivers(receiver):
    receiver.answer(429, headers={"Retry-After": "2"}, body=b"rate_limited")
    sleeps = Sleeps()
    result = WebhookChannel("slack", receiver.url, sleep=sleeps).deliver(notice())
    assert result.delivered and result.attempts == 2
    assert sleeps[0] >= 2 and result.waits == tuple(sleeps)
    assert [r.status for r in receiver.received] == [429, 200]


def test_retry_after_longer_than_max_wait_is_capped(receiver):
    receiver.answer(429, headers={"Retry-After": "3600"})
    sleeps = Sleeps()
    assert WebhookChannel("teams", receiver.url, sleep=sleeps, max_wait=30).deliver(notice()).delivered
    assert sleeps == [30]


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, b"invalid_payload"), (403, b"action_prohibited"), (404, b"no_service"), (410, b"channel_is_archived")],
)
def test_permanent_refusals_are_not_retried(receiver, status, code):
    receiver.answer(status, body=code)
    sleeps = Sleeps()
    result = WebhookChannel("slack", receiver.url, sleep=sleeps).deliver(notice())
    assert (result.delivered, result.status, result.attempts) == (False, status, 1)
    assert sleeps == [] and len(receiver.received) == 1
    assert result.error == (
        f"the Slack webhook (CERTSYNC_SLACK_WEBHOOK_URL) answered HTTP {status} ({code.decode()});"
        " not retried: check the webhook and CERTSYNC_SLACK_WEBHOOK_URL"
    )


def test_retries_are_bounded_with_exponential_backoff(receiver):
    receiver.answer(503, times=10)
    sleeps = Sleeps()
    result = WebhookChannel("teams", receiver.url, sleep=sleeps).deliver(notice())
    assert (result.delivered, result.status, result.attempts) == (False, 503, 4)
    assert sleeps == [0.5, 1, 2] and len(receiver.received) == 4
    assert result.error.endswith("gave up after 4 attempt(s)")


def test_a_closed_port_is_retried_and_reported_without_the_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/services/T0/B0/secret-token-123"
    sleeps = Sleeps()
    result = WebhookChannel("slack", url, sleep=sleeps, attempts=2).deliver(notice())
    assert not result.delivered and result.status is None and sleeps == [0.5]
    assert result.error.startswith("the Slack webhook (CERTSYNC_SLACK_WEBHOOK_URL): ConnectionRefusedError")
    assert "secret-token-123" not in result.error and str(port) not in result.error


def test_https_receivers_are_verified_against_the_ca(keyvault_tls, secret):
    with WebhookReceiver([secret], tls=keyvault_tls) as tls_receiver:
        assert tls_receiver.url.startswith("https://")
        trusted = ssl.create_default_context(cafile=str(keyvault_tls.ca_pem))
        assert generic_channel(tls_receiver, secret, ssl_context=trusted).deliver(notice()).delivered
        assert tls_receiver.received[0].verified
        result = generic_channel(tls_receiver, secret, attempts=1).deliver(notice())  # the system's CAs only
        assert not result.delivered and "TLS certificate not trusted" in result.error
        assert len(tls_receiver.received) == 1  # the handshake failed: no request reached it


def test_teams_and_slack_receivers_get_their_formats(receiver):
    with WebhookReceiver(status=202, body=b"") as teams:
        results = FanoutNotifier(
            [WebhookChannel("teams", teams.url), WebhookChannel("slack", receiver.url)]
        ).deliver_all(renewal_notice())
        assert [(r.channel, r.delivered, r.status) for r in results] == [("teams", True, 202), ("slack", True, 200)]
        card = teams.received[0].json
        assert card["attachments"][0]["content"]["version"] == "1.4"
        assert set(receiver.received[0].json) == {"text", "mrkdwn", "blocks"}


HOSTILE = "**urgent** _now_ [click here](https://evil.example/x) <!channel> <@U024BE7LH> ~gone~ `code`"
WILDCARD_NEW = "<I>CN=R11, O=Contoso, C=US<S>CN=*.contoso.com"


def hostile_notice() -> Notice:
    return Notice(
        "blocked",
        "exch-*-smtp_[x](https://evil.example)",
        "contoso-kv",
        "v2",
        "corr-7",
        f"Blocked: {HOSTILE}\n- a list item\n1. a numbered one",
        {"old": OLD, "new": WILDCARD_NEW, "reason": HOSTILE},
    )


def _teams_texts(card: dict) -> list[str]:
    body = card["attachments"][0]["content"]["body"]
    texts = [block["text"] for block in body if block["type"] == "TextBlock"]
    for block in body:
        if block["type"] == "FactSet":
            texts += [text for fact in block["facts"] for text in (fact["title"], fact["value"])]
    return texts


def _unescaped(text: str, characters: str) -> list[str]:
    """The markdown characters in `text` not preceded by a backslash."""
    return [c for i, c in enumerate(text) if c in characters and (i == 0 or text[i - 1] != "\\")]


def test_a_hostile_subject_reaches_teams_and_slack_as_text_not_formatting(receiver):
    with WebhookReceiver(status=202, body=b"") as teams:
        results = FanoutNotifier(
            [WebhookChannel("teams", teams.url), WebhookChannel("slack", receiver.url)]
        ).deliver_all(hostile_notice())
        assert [r.delivered for r in results] == [True, True]
        card = teams.received[0].json
        slack = receiver.received[0].json
    texts = _teams_texts(card)
    for text in texts:  # no bold, italic, link or list can be made: every markdown character is escaped
        assert _unescaped(text.replace("\\\\", ""), "*_[]") == [], text
        assert not any(line.lstrip().startswith(("- ", "+ ", "1. ")) for line in text.split("\n")), text
    facts = dict(zip(texts[2::2], texts[3::2], strict=True))
    assert facts["TlsCertificateName"].endswith("CN=\\*.contoso.com")  # the wildcard's * is kept, as typed
    assert facts["Reason"].startswith("\\*\\*urgent\\*\\* \\_now\\_ \\[click here\\](https://evil.example/x)")
    assert "\\- a list item" in texts[1] and "1\\. a numbered one" in texts[1]
    # Slack: everything from the notice is plain_text (no mrkdwn, links or mentions), the fallback escaped
    assert slack["mrkdwn"] is False
    assert "<" not in slack["text"] and "&lt;!channel&gt;" in slack["text"]
    elements = [slack["blocks"][1]["text"]] + [f for block in slack["blocks"][2:-1] for f in block["fields"]]
    elements += slack["blocks"][-1]["elements"]
    assert {e["type"] for e in elements} == {"plain_text"} and not any(e["emoji"] for e in elements)
    fields = [e["text"] for e in elements]
    assert f"Reason\n{HOSTILE}" in fields and f"TlsCertificateName\n{OLD} -> {WILDCARD_NEW}" in fields


def test_a_card_shows_the_correlation_id_once_and_no_internal_state_names():
    reconcile_notice = notice(
        "expiry-warning",
        "The certificate expires in 6 days.",
        finding="expiry",
        state="7",
        previous="30",
        expiry_state="7",
        days_left=6.2,
        not_after="2026-12-02T08:00:00Z",
        correlation_id="run-1",
    )
    facts = teams_message(reconcile_notice)["attachments"][0]["content"]["body"][2]["facts"]
    titles = [f["title"] for f in facts]
    assert titles.count("Correlation id") == 1 and facts[-1]["value"] == "corr-7"
    assert not {"State", "Previous", "Finding", "Expiry state"} & set(titles)
    assert "7" not in [f["value"] for f in facts]
    slack = json.dumps(slack_message(reconcile_notice))
    assert "State" not in slack and "run-1" not in slack


# --- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://hooks.example.com/services/T/B/tok3n", "CERTSYNC_SLACK_WEBHOOK_URL must be an https:// URL"),
        ("ftp://hooks.example.com/tok3n", "CERTSYNC_SLACK_WEBHOOK_URL is not an http(s) URL"),
        ("https://user:tok3n@hooks.example.com/", "CERTSYNC_SLACK_WEBHOOK_URL must not carry a user name"),
        ("https://hooks.example.com:99999/tok3n", "CERTSYNC_SLACK_WEBHOOK_URL is not a valid URL"),
    ],
)
def test_a_bad_webhook_url_is_a_one_line_error_naming_the_setting_not_the_url(url, message):
    with pytest.raises(CertsyncError) as caught:
        WebhookChannel("slack", url)
    text = str(caught.value)
    assert text.startswith(message) and "tok3n" not in text and "\n" not in text


def test_settings_make_the_channels_and_refuse_an_unsigned_generic_webhook(secret):
    env = {
        "CERTSYNC_TEAMS_WEBHOOK_URL": "https://prod-01.westeurope.logic.azure.com/workflows/x?sig=abc",
        "CERTSYNC_SLACK_WEBHOOK_URL": " https://hooks.slack.com/services/T0/B0/xyz ",
        "CERTSYNC_WEBHOOK_URL": "https://hooks.contoso.com/certsync",
        "CERTSYNC_WEBHOOK_SECRET": f"{secret} {new_secret()}",
    }
    assert [c.kind for c in channels_from_env(env)] == ["teams", "slack", "generic"]
    assert "sig=abc" not in repr(channels_from_env(env))
    with pytest.raises(CertsyncError, match=r"^CERTSYNC_WEBHOOK_SECRET is not set: CERTSYNC_WEBHOOK_URL needs it"):
        channels_from_env({"CERTSYNC_WEBHOOK_URL": "https://hooks.contoso.com/certsync"})
    with pytest.raises(CertsyncError, match=r"^CERTSYNC_WEBHOOK_SECRET: each secret must start with whsec_"):
        channels_from_env({"CERTSYNC_WEBHOOK_URL": "https://h.contoso.com/", "CERTSYNC_WEBHOOK_SECRET": "hunter2"})
    reference = "@Microsoft.KeyVault(SecretUri=https://contoso-kv.vault.azure.net/secrets/teams-url/)"
    with pytest.raises(CertsyncError, match=r"^CERTSYNC_TEAMS_WEBHOOK_URL is an unresolved Key Vault reference"):
        channels_from_env({"CERTSYNC_TEAMS_WEBHOOK_URL": reference})


def test_no_webhook_configured_means_logs_only(azurite):
    notifier = notifier_from_env({"JobsStorage": azurite.connection_string}, None)
    assert isinstance(notifier, LogNotifier)


def test_the_function_apps_pipeline_gets_the_notifier_from_its_settings(azurite, receiver, tmp_path):
    from shared.wiring import pipeline_from_env

    env = {"JobsStorage": azurite.connection_string, "CERTSYNC_VAULTS": "contoso-kv"}
    assert isinstance(pipeline_from_env(env).notifier, LogNotifier)
    pipeline = pipeline_from_env(env | {"CERTSYNC_TEAMS_WEBHOOK_URL": receiver.url})
    assert isinstance(pipeline.notifier, OnceNotifier)  # each (certificate, version, outcome) sent once
    assert pipeline.notifier.audit is pipeline.audit
    fanout = pipeline.notifier.inner
    assert isinstance(fanout, FanoutNotifier)
    assert [c.kind for c in fanout.channels] == ["teams"]
    assert fanout.audit is pipeline.audit
    assert isinstance(fanout.poison, StorageMessageQueue)  # built by the wiring, passed in
    assert fanout.poison.name == "certsync-notify-poison"
    renamed = pipeline_from_env(env | {"CERTSYNC_TEAMS_WEBHOOK_URL": receiver.url, "NOTIFY_POISON_QUEUE": "mine"})
    assert isinstance(renamed.notifier, OnceNotifier) and renamed.notifier.inner.poison.name == "mine"


# --- failed deliveries ---------------------------------------------------------------------------


def test_a_delivery_that_still_fails_is_poisoned_and_audited_without_the_url(azurite, receiver, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    queue = f"notify-poison-{uuid.uuid4().hex[:12]}"
    env = {
        "JobsStorage": azurite.connection_string,
        "NOTIFY_POISON_QUEUE": queue,
        "CERTSYNC_TEAMS_WEBHOOK_URL": receiver.url,
    }
    audit = SqliteAuditLog(tmp_path / "audit.sqlite")
    sleeps = Sleeps()
    poison = StorageMessageQueue(storage_from_env(env).queue_client(value("NOTIFY_POISON_QUEUE", env)))
    notifier = notifier_from_env(env, audit, poison, sleep=sleeps)
    receiver.answer(500, times=4, body=b"flow failed")
    made = job_result(2)
    notifier.notify(made)
    assert len(receiver.received) == 4 and sleeps == [0.5, 1, 2]

    [message] = queued_json(azurite.connection_string, queue)
    assert message["schema"] == "certsync.notify-poison/1" and message["channel"] == "teams"
    assert (message["status"], message["attempts"]) == (500, 4)
    assert message["notice_id"] == notice_id(made)
    assert (
        message["notice"]["kind"] == "job-result" and message["notice"]["details"]["servers"][1]["outcome"] == "failed"
    )
    assert message["error"] == (
        "the Teams webhook (CERTSYNC_TEAMS_WEBHOOK_URL) answered HTTP 500; gave up after 4 attempt(s)"
    )

    [entry] = [e for e in audit.history("exch-hybrid-smtp") if e.kind == "notification-failed"]
    assert entry.correlation_id == "corr-7" and entry.vault == "contoso-kv" and entry.version == "v2"
    assert entry.details == {
        "channel": "teams",
        "notice_kind": "job-result",
        "notice_id": notice_id(made),
        "status": 500,
        "attempts": 4,
        "error": message["error"],
        "poisoned": True,
    }
    assert any(r.levelno == logging.WARNING and "not delivered" in r.getMessage() for r in caplog.records)
    written = json.dumps(message) + json.dumps(entry.to_dict()) + caplog.text
    written += json.dumps([{k: str(v) for k, v in vars(r).items()} for r in caplog.records])
    for leak in (receiver.url, receiver.token, receiver.query, receiver.path):
        assert leak not in written


def test_when_the_poison_queue_fails_too_the_error_is_logged_with_the_notice_id(azurite, receiver, tmp_path, caplog):
    wrong_key = base64.b64encode(b"not the key" * 6).decode()
    settings = storage_from_env({"JobsStorage": azurite.connection_string.replace(ACCOUNT_KEY, wrong_key)})
    poison = StorageMessageQueue(settings.queue_client("notify-poison", retry_total=0))
    audit = SqliteAuditLog(tmp_path / "audit.sqlite")
    receiver.answer(410, body=b"channel_is_archived")
    made = notice("drift", "EX01's send connector names R10")
    FanoutNotifier([WebhookChannel("slack", receiver.url)], audit, poison).notify(made)
    [failure] = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "certsync.notify"]
    assert notice_id(made) in failure.getMessage() and "HTTP 403" in failure.getMessage()
    [entry] = audit.history("exch-hybrid-smtp")
    assert entry.kind == "notification-failed" and entry.details["poisoned"] is False
    assert "channel_is_archived" in entry.summary
    assert receiver.token not in caplog.text + json.dumps(entry.to_dict())


def test_a_notice_that_cannot_be_sent_never_raises_into_the_pipeline(signed_receiver, secret, tmp_path):
    audit = SqliteAuditLog(tmp_path / "audit.sqlite")
    broken = notice("drift", "cannot be encoded", raw=b"\x00bytes")  # not JSON: the payload cannot be encoded
    results = FanoutNotifier([generic_channel(signed_receiver, secret)], audit).deliver_all(broken)
    assert [(r.delivered, r.attempts) for r in results] == [(False, 0)]
    assert results[0].error == "the generic webhook (CERTSYNC_WEBHOOK_URL): TypeError while sending"
    assert signed_receiver.received == []
    [entry] = audit.history("exch-hybrid-smtp")
    assert entry.kind == "notification-failed" and entry.details["error"] == results[0].error


# --- the pipeline --------------------------------------------------------------------------------


def test_a_renewal_arrives_as_one_signed_notice_with_the_diff(renewal, signed_receiver, secret, tmp_path: Path):
    pipeline = renewal.pipeline()
    pipeline.notifier = FanoutNotifier([generic_channel(signed_receiver, secret)], pipeline.audit)
    outcome = pipeline.process(parse_event(test_pipeline.event("v2")))
    assert outcome.outcome == "queued"
    [request] = signed_receiver.received  # one message for the renewal, not one per step
    assert request.verified
    payload = request.json
    assert payload["type"] == "certsync.queued"
    data = payload["data"]
    flagged = "which certsync's table of CA hierarchies does not explain: check it"  # a private CA's R10/R11
    assert data["summary"].startswith(f"Renewal seen: issuer changed (R10 -> R11), {flagged}. Stage on EX01, EX02, 4 ")
    assert data["severity"] == "warning" and data["details"]["issuer_change"]["expected"] is False
    assert data["correlation_id"] == outcome.correlation_id and data["version"] == "v2"
    details = data["details"]
    assert details["change"] == "issuer_changed" and details["previous_version"] == "v1"
    assert (
        (details["old"], details["new"])
        == (OLD, NEW)
        == (
            test_pipeline.tls_name(renewal.old),  # what the inventory's connectors select
            outcome.plan.tls_certificate_name,
        )
    )
    assert details["dns_names_added"] == [] and details["dns_names_removed"] == []
    assert details["assessment_status"] == "Valid" and details["job_id"] == outcome.request.job_id
    assert details["servers"] == ["EX01", "EX02"] and details["worker_group"] == "hrw-exchange"
    assert "der_base64" not in request.body.decode()


def test_a_blocked_renewal_and_a_repeated_certificate_are_notified_once_each(renewal, signed_receiver, secret):
    pipeline = renewal.pipeline(targets=None)
    pipeline.notifier = FanoutNotifier([generic_channel(signed_receiver, secret)], pipeline.audit)
    assert pipeline.process(parse_event(test_pipeline.event("v2"))).outcome == "blocked"
    renewal.add_version("v3", test_pipeline.pem_of([renewal.new, renewal.inter_b]))
    (renewal.vault_dir / test_pipeline.NAME / "certificate.json").write_text(
        json.dumps(
            {"created": {"v1": "2026-08-01T00:00:00Z", "v2": "2026-11-20T00:00:00Z", "v3": "2026-11-25T00:00:00Z"}}
        )
    )
    renewal.store(test_pipeline.exchange(renewal.new))  # v2 was deployed meanwhile
    pipeline = renewal.pipeline()
    pipeline.notifier = FanoutNotifier([generic_channel(signed_receiver, secret)], pipeline.audit)
    assert pipeline.process(parse_event(test_pipeline.event("v3"))).outcome == "nothing-to-change"
    blocked, repeated = (r.json for r in signed_receiver.received)
    assert blocked["type"] == "certsync.blocked" and blocked["data"]["severity"] == "critical"
    assert blocked["data"]["summary"].startswith(
        "Renewal seen: issuer changed (R10 -> R11), which certsync's table of CA hierarchies does not explain: "
        "check it. Not deployed: no usable targets"
    )
    assert blocked["data"]["details"]["change"] == "issuer_changed"
    assert repeated["type"] == "certsync.renewal" and repeated["data"]["details"]["change"] == "same_certificate"
    assert repeated["data"]["summary"].startswith("Renewal seen: same certificate. Nothing to change")


def test_an_expiry_event_notifies_with_the_days_left(renewal, signed_receiver, secret):
    pipeline = renewal.pipeline()
    pipeline.notifier = FanoutNotifier([generic_channel(signed_receiver, secret)], pipeline.audit)
    pipeline.process(parse_event(test_pipeline.event("v2", event_type="CertificateNearExpiry")))
    [request] = signed_receiver.received
    data = request.json["data"]
    assert request.json["type"] == "certsync.expiry-warning"
    assert isinstance(data["details"]["days_left"], float) and data["details"]["expired"] is False
    # the renewal's certificate has most of its lifetime left: Key Vault's NearExpiry is routine for it
    # (the reconciliation's state names never reach a payload: renewal_due says it)
    assert data["details"]["renewal_due"] is True and "expiry_state" not in data["details"]
    assert data["severity"] == "info" and "renewal due per policy" in data["summary"]


def test_a_renewal_card_says_why_the_issuer_changed_or_that_it_is_flagged():
    expected = {"old": "x", "new": "y", "expected": True, "explanation": "Let's Encrypt rotated R12 -> YR1 (...)"}
    facts = dict(notice_facts(notice(issuer_change=expected, renewal_due=False)))
    assert facts["Issuer change"] == "Let's Encrypt rotated R12 -> YR1 (...)" and "Renewal due" not in facts
    flagged = {**expected, "expected": False, "explanation": "the issuer changed from R12 to Fabrikam CA"}
    shown = notice("queued", issuer_change=flagged)
    assert dict(notice_facts(shown))["Issuer change"].startswith("FLAGGED: the issuer changed")
    assert shown.severity == "warning"
