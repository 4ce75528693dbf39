"""Which notices go out (shared/notify/notices.py): at most one per (certificate, version, outcome), a
`webhook-id` that stays the same for a retry and a redelivery, a digest instead of a storm, every notice
within its webhook's limits whatever the input size, and no internal state names. Deliveries go to real
HTTP receivers on loopback; the dedupe records are in SQLite and in Azure Tables (Azurite)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import threading
import uuid
from collections.abc import Iterator

import pytest

import shared.wiring
from shared.adapters.azure.tables import TableAuditLog
from shared.adapters.local.sqlite import SqliteAuditLog
from shared.notify.notices import (
    DIGEST_KIND,
    DigestNotifier,
    OnceNotifier,
    digest_notice,
    notice_id,
    notice_key,
    notice_outcome,
)
from shared.notify.signing import new_secret, parse_secrets
from shared.notify.webhooks import (
    GENERIC_PAYLOAD_LIMIT,
    SLACK_BLOCK_LIMIT,
    SLACK_FIELD_LIMIT,
    SLACK_FIELDS_PER_SECTION,
    SLACK_HEADER_LIMIT,
    SLACK_TEXT_LIMIT,
    TEAMS_MESSAGE_LIMIT,
    FanoutNotifier,
    WebhookChannel,
    encode,
    generic_payload,
    slack_message,
    teams_message,
    webhook_notifier,
)
from shared.pipeline.events import parse_event
from shared.pipeline.process import LogNotifier, Notice
from shared.pipeline.sources import SourceError
from shared.wiring import pipeline_from_env, storage_from_env
from tests import test_functions_pipeline, test_pipeline, test_reconcile
from tests.receivers import WebhookReceiver

renewal = test_pipeline.renewal  # two versions, R10 -> R11, in a vault directory; SQLite audit
deployment = test_functions_pipeline.deployment  # the Function on Azurite and the Key Vault test server
world = test_reconcile.world  # a vault directory with a renewal, targets and an inventory, for reconciliation
AT = dt.datetime(2026, 11, 26, 8, 0, tzinfo=dt.timezone.utc)
HUGE = 40_000


class Recording(list):
    """A notifier that keeps what it is given (stands for the webhooks where only the count matters)."""

    def notify(self, notice: Notice) -> None:
        self.append(notice)


def notice(kind: str = "blocked", version: str = "v2", correlation: str = "corr-1", **details) -> Notice:
    return Notice(kind, "exch-hybrid-smtp", "contoso-kv", version, correlation, f"{kind} happened", details)


@pytest.fixture
def secret() -> str:
    return new_secret()


@pytest.fixture
def signed_receiver(secret) -> Iterator[WebhookReceiver]:
    with WebhookReceiver([secret]) as server:
        yield server


def generic(receiver: WebhookReceiver, secret: str, **options) -> WebhookChannel:
    options.setdefault("sleep", lambda seconds: None)
    return WebhookChannel("generic", receiver.url, parse_secrets(secret, "CERTSYNC_WEBHOOK_SECRET"), **options)


# --- the identity of a notice ----------------------------------------------------------------------


def test_a_redelivery_has_the_same_webhook_id_and_key_whatever_its_correlation_id_and_wording():
    first = notice(correlation="delivery-1")
    again = dataclasses.replace(first, correlation_id="delivery-2", summary="blocked (said differently)")
    assert notice_id(first) == notice_id(again) and notice_key(first) == notice_key(again)
    assert notice_id(first).startswith("msg_") and len(notice_id(first)) == 28


def test_another_version_or_outcome_is_another_notice():
    ids = {notice_id(n) for n in (notice(), notice(version="v3"), notice("queued"), notice("failed"))}
    assert len(ids) == 4
    # names are case-insensitive in Key Vault: one certificate, one notice
    upper = dataclasses.replace(notice(), certificate="EXCH-HYBRID-SMTP", vault="Contoso-KV", version="V2")
    assert notice_id(upper) == notice_id(notice())


@pytest.mark.parametrize(
    ("made", "outcome"),
    [
        (notice("queued"), "queued"),
        (notice("expiry-warning", expired=True), "expiry-warning:expired"),
        (notice("expiry-warning", expired=False), "expiry-warning:near"),
        (notice("expiry-warning", finding="expiry", state="14", previous="30"), "expiry-warning:expiry:14"),
        (notice("resolved", finding="drift", state="ok", previous="drift:ab12"), "resolved:drift:drift:ab12"),
        (notice("job-result", job_id="j1", status="succeeded"), "job-result:j1"),
        (notice("job-result"), "job-result"),
        (notice("discovery-failed", version="", correlation="job-7"), "discovery-failed:job-7"),
    ],
)
def test_the_outcome_tells_apart_what_one_version_can_be_told_more_than_once(made, outcome):
    assert notice_outcome(made) == outcome


def test_a_key_stays_short_for_a_huge_name():
    huge = dataclasses.replace(notice(), certificate="c" * HUGE, version="v" * HUGE)
    assert len(notice_key(huge)) < 64 and len(notice_id(huge)) == 28


# --- once per (certificate, version, outcome) ------------------------------------------------------


def test_a_blocked_version_delivered_again_and_again_is_notified_once(renewal, signed_receiver, secret):
    """The issue's storm: "Blocked" at every redelivery, each time with a new webhook-id."""
    pipeline = renewal.pipeline(targets=None)  # no usable targets: blocked
    pipeline.notifier = webhook_notifier([generic(signed_receiver, secret)], pipeline.audit, None)
    outcomes = [pipeline.process(parse_event(test_pipeline.event("v2"))) for _ in range(3)]
    assert [o.outcome for o in outcomes] == ["blocked"] * 3 and len({o.correlation_id for o in outcomes}) == 3
    [request] = signed_receiver.received
    assert request.verified and request.json["type"] == "certsync.blocked"
    history = renewal.history()
    assert [e.kind for e in history].count("blocked") == 3  # every delivery is audited
    [notified] = [e for e in history if e.kind == "notified"]
    assert notified.details["notice_id"] == request.headers["webhook-id"] and notified.details["outcome"] == "blocked"


def test_two_instances_on_one_sqlite_trail_send_a_notice_once(tmp_path):
    sent = Recording()
    a = OnceNotifier(sent, SqliteAuditLog(tmp_path / "audit.sqlite"))
    b = OnceNotifier(sent, SqliteAuditLog(tmp_path / "audit.sqlite"))
    a.notify(notice(correlation="a"))
    b.notify(notice(correlation="b"))
    b.notify(notice("queued", correlation="b"))
    assert [(n.kind, n.correlation_id) for n in sent] == [("blocked", "a"), ("queued", "b")]


def test_two_instances_racing_on_azure_tables_send_a_notice_once(azurite):
    env = {"JobsStorage": azurite.connection_string}
    table = f"audit{uuid.uuid4().hex[:10]}"
    sent = Recording()
    instances = [OnceNotifier(sent, TableAuditLog(storage_from_env(env).table_client(table))) for _ in range(2)]
    start = threading.Barrier(2)

    def deliver(instance: OnceNotifier, name: str) -> None:
        start.wait()
        for kind in ("blocked", "queued", "renewal"):
            instance.notify(notice(kind, correlation=name))

    threads = [threading.Thread(target=deliver, args=(i, f"i{n}")) for n, i in enumerate(instances)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(n.kind for n in sent) == ["blocked", "queued", "renewal"]
    kinds = [e.kind for e in instances[1].audit.history("exch-hybrid-smtp")]
    assert kinds.count("notified") == 3


def test_a_retried_delivery_keeps_its_webhook_id(renewal, signed_receiver, secret):
    """A receiver that answers 500, then 200, sees the same webhook-id twice; a redelivered event later
    sends nothing, and the id it would have carried is the same."""
    signed_receiver.answer(500)
    pipeline = renewal.pipeline(targets=None)
    pipeline.notifier = webhook_notifier([generic(signed_receiver, secret)], pipeline.audit, None)
    outcome = pipeline.process(parse_event(test_pipeline.event("v2")))
    first, second = signed_receiver.received
    assert (first.status, second.status) == (500, 200) and first.verified and second.verified
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.json["data"]["id"] == first.headers["webhook-id"]
    again = pipeline.process(parse_event(test_pipeline.event("v2")))
    assert again.correlation_id != outcome.correlation_id and len(signed_receiver.received) == 2
    redelivered = Notice("blocked", test_pipeline.NAME, test_pipeline.VAULT, "v2", again.correlation_id, "x")
    assert notice_id(redelivered) == first.headers["webhook-id"]


def test_a_transient_failure_that_later_succeeds_sends_no_could_not_process(
    deployment, signed_receiver, secret, monkeypatch
):
    """215 "Could not process" notices went out for Key Vault failures that later succeeded: a transient
    failure raises for Event Grid's retry and says nothing; only a final failure is notified, once."""
    env = deployment.env | {"CERTSYNC_WEBHOOK_URL": signed_receiver.url, "CERTSYNC_WEBHOOK_SECRET": secret}
    options = {"credential": deployment.keyvault.credential, **deployment.keyvault.client_kwargs}
    pipeline = pipeline_from_env(env, keyvault_options=options)
    monkeypatch.setattr(shared.wiring, "azure_pipeline", lambda: pipeline)
    deployment.keyvault.fail(f"/secrets/{test_functions_pipeline.NAME}", 503, "ServiceUnavailable")
    for _ in range(3):  # Event Grid's retries while Key Vault is down
        with pytest.raises(SourceError):
            deployment.deliver(deployment.versions[1])
    assert signed_receiver.received == []
    deployment.keyvault.clear_failures()
    deployment.deliver(deployment.versions[1])
    deployment.deliver(deployment.versions[1])  # and a duplicate delivery after it
    assert [r.json["type"] for r in signed_receiver.received] == ["certsync.queued"]
    deployment.keyvault.fail(f"/secrets/{test_functions_pipeline.NAME}", 404, "SecretNotFound")
    deployment.deliver(deployment.versions[0])  # a final failure: acknowledged and notified
    deployment.deliver(deployment.versions[0])
    assert [r.json["type"] for r in signed_receiver.received] == ["certsync.queued", "certsync.failed"]


# --- the digest ------------------------------------------------------------------------------------


def many(count: int, kind: str = "queued") -> list[Notice]:
    return [
        Notice(kind, f"cert-{n:03d}", "contoso-kv", f"v{n}", "run-1", f"{kind} for cert-{n:03d}") for n in range(count)
    ]


def test_at_most_the_limit_goes_out_one_by_one(tmp_path):
    sent = Recording()
    digest = DigestNotifier(OnceNotifier(sent, SqliteAuditLog(tmp_path / "a.sqlite")), limit=3, correlation_id="r")
    for made in many(3):
        digest.notify(made)
    assert digest.flush() == 3 and [n.kind for n in sent] == ["queued"] * 3


def test_more_than_the_limit_is_one_digest_and_each_is_still_marked_notified(tmp_path):
    sent = Recording()
    once = OnceNotifier(sent, SqliteAuditLog(tmp_path / "a.sqlite"))
    digest = DigestNotifier(once, limit=10, correlation_id="run-1")
    held = [*many(8, "blocked"), *many(5, "expiry-warning")[::-1]]
    for made in held:
        digest.notify(made)
    assert digest.flush() == 13
    [card] = sent
    assert card.kind == DIGEST_KIND and card.details["count"] == 13
    assert card.details["counts"] == {"blocked": 8, "expiry-warning": 5}
    items = card.details["items"]
    assert [i["kind"] for i in items] == ["blocked"] * 8 + ["expiry-warning"] * 5  # most urgent first
    assert [i["certificate"] for i in items[8:]] == sorted(i["certificate"] for i in items[8:])
    # each (version, outcome) is marked: sent again (a second pass, a redelivery), nothing goes out
    for made in held:
        once.notify(made)
    assert len(sent) == 1
    # a second pass with the same notices and two new: only the two are due, so they go out alone
    for made in [*held, *many(2, "drift")]:
        digest.notify(made)
    assert digest.flush() == 2 and [n.kind for n in sent[1:]] == ["drift", "drift"]


def test_a_digest_has_one_stable_webhook_id():
    a = digest_notice(many(20), "run-1")
    b = digest_notice(list(reversed(many(20))), "run-2")
    assert notice_id(a) == notice_id(b) != notice_id(digest_notice(many(21), "run-1"))


def test_a_digest_card_lists_and_counts_its_notices_on_every_channel():
    card = digest_notice([*many(3, "blocked"), *many(2, "queued")], "run-1")
    teams = json.dumps(teams_message(card))
    assert "certsync digest: 5 notices" in teams and "Blocked" in teams and "cert-002" in teams
    slack = slack_message(card)
    assert slack["blocks"][0]["text"]["text"].endswith("certsync digest: 5 notices")
    fields = [f["text"] for b in slack["blocks"] if b["type"] == "section" for f in b.get("fields", [])]
    assert "Blocked\n3" in fields and "Queued for deployment\n2" in fields
    assert any(f.startswith("cert-000\nRenewal blocked (version v0)") for f in fields)
    data = generic_payload(card, AT)["data"]
    assert data["kind"] == "digest" and data["details"]["count"] == 5 and len(data["details"]["items"]) == 5


def test_day_one_of_a_fleet_is_one_digest_card_and_the_next_pass_sends_nothing(world, signed_receiver, secret):
    """ "On day one, 120 certificates produce 271 cards": the reconciliation's notices, and those of the
    versions it runs through the pipeline, go out as one digest when more than the limit are due."""
    from tests.test_scale import _fleet

    _fleet(world, world.vault_dir, 12)
    reconciler = world.reconciler()
    notifier = webhook_notifier([generic(signed_receiver, secret)], reconciler.audit, None)
    reconciler.notifier = notifier
    assert reconciler.pipeline is not None
    reconciler.pipeline.notifier = notifier
    now = dt.datetime.now(dt.timezone.utc)
    report = reconciler.run(now)
    assert len(report.processed) == 13  # NAME and its 12 copies: each run through the pipeline
    [card] = signed_receiver.received
    assert card.verified and card.json["type"] == "certsync.digest"
    details = card.json["data"]["details"]
    assert details["count"] > 10 and details["counts"]["queued"] == 13 and details["counts"]["unprocessed"] == 13
    marked = [e for e in world.audit().history(test_pipeline.NAME + "-003") if e.kind == "notified"]
    assert sorted(e.details["notice_kind"] for e in marked) == ["queued", "unprocessed"]
    reconciler.run(now + dt.timedelta(days=1))  # nothing new is due
    outcome = reconciler.pipeline.process(parse_event(test_pipeline.event("v2")))  # Event Grid's late delivery
    assert outcome.outcome == "duplicate" and len(signed_receiver.received) == 1


# --- size limits, whatever the input ---------------------------------------------------------------


def huge_notices() -> list[Notice]:
    url = "http://crl.example/" + "a" * HUGE
    big = "ü" * HUGE  # two UTF-8 bytes each
    marks = "*_[]<>&" * (HUGE // 7)  # every one escaped on some platform
    return [
        Notice("blocked", "c" * HUGE, "v" * HUGE, "x" * HUGE, "k" * HUGE, f"revocation: {url}", {"reason": url}),
        Notice("queued", big, big, big, "corr", big, {"new": big, "old": big, "servers": [big] * 30}),
        Notice("failed", marks, marks, marks, marks, marks, {"error": marks, marks: marks}),
        Notice("drift", "n", "v", "1", "c", "s", {f"k{n}": "x" * 900 for n in range(400)}),
        Notice("job-result", "n", "v", "1", "c", "s", {"servers": [{"server": big, "outcome": big}] * 600}),
        digest_notice([dataclasses.replace(n, certificate=big, summary=url) for n in many(300)], "run"),
    ]


def slack_within_limits(message: dict) -> None:
    assert len(message["text"]) <= SLACK_TEXT_LIMIT
    blocks = message["blocks"]
    assert len(blocks) <= SLACK_BLOCK_LIMIT
    assert len(blocks[0]["text"]["text"]) <= SLACK_HEADER_LIMIT
    for block in blocks[1:]:
        if "text" in block:
            assert len(block["text"]["text"]) <= SLACK_TEXT_LIMIT
        fields = block.get("fields", [])
        assert len(fields) <= SLACK_FIELDS_PER_SECTION
        assert all(len(f["text"]) <= SLACK_FIELD_LIMIT for f in fields)
        assert all(len(e["text"]) <= SLACK_TEXT_LIMIT for e in block.get("elements", []))


@pytest.mark.parametrize("made", huge_notices(), ids=lambda n: n.kind)
def test_every_notice_fits_teams_slack_and_the_generic_webhook_whatever_its_size(made):
    teams = encode(teams_message(made))
    assert len(teams) <= TEAMS_MESSAGE_LIMIT - 2 * 1024
    slack_within_limits(slack_message(made))
    generic = encode(generic_payload(made, AT))
    assert len(generic) < GENERIC_PAYLOAD_LIMIT
    texts = [teams.decode(), generic.decode()]
    if made.kind != "drift":  # many facts of 900 characters each: Slack takes them whole, 10 to a section
        texts.append(json.dumps(slack_message(made), ensure_ascii=False))
    for text in texts:
        assert "…" in text or "left out" in text or "details_truncated" in text  # cut, and says so


def test_a_huge_notice_still_says_what_happened_to_which_certificate():
    made = huge_notices()[0]
    card = teams_message(made)["attachments"][0]["content"]["body"]
    assert card[0]["text"].startswith("Renewal blocked: ccc") and card[1]["text"].startswith("revocation: http")
    data = generic_payload(made, AT)["data"]
    assert data["title"].startswith("Renewal blocked: ccc") and data["details_truncated"] is True
    assert data["certificate"].endswith("…") and data["id"] == notice_id(made)


# --- no internal state names -------------------------------------------------------------------------


def every_outcome() -> list[Notice]:
    """A notice of every kind certsync sends, with the details its sender writes."""
    renewal_facts = {
        "change": "issuer_changed",
        "previous_version": "v1",
        "old": "<I>CN=R10<S>CN=mail.contoso.com",
        "new": "<I>CN=R11<S>CN=mail.contoso.com",
        "dns_names_added": [],
        "dns_names_removed": [],
        "thumbprint": "AB" * 20,
        "not_after": "2027-02-01T00:00:00+00:00",
        "assessment_status": "Valid",
        "worker_group": "hrw-exchange",
        "servers": ["EX01"],
    }
    reconcile = {"severity": "warning"}
    made = [
        notice("renewal", **{**renewal_facts, "change": "same_certificate"}),
        notice("queued", **renewal_facts, job_id="ab" * 16),
        notice("blocked", **renewal_facts, reason="not Valid: Revoked; fix: renew it"),
        notice("failed", error="not-found", transient=False),
        notice("expiry-warning", not_after="2026-12-01T00:00:00+00:00", days_left=5.0, expired=False, thumbprint="AB"),
        notice("job-started", job_id="j1", automation_job="a1", run_on="hrw-exchange"),
        notice("job-rejected", job_id="j1", status=403, code="AuthorizationFailed"),
        notice("job-poisoned", job_id="j1", stage="start"),
        notice(
            "job-result",
            job_id="j1",
            automation_job="a1",
            status="rolled-back",
            automation_status="Completed",
            servers=[{"server": "EX01", "outcome": "rolled-back"}],
            steps=[],
            error="",
            via="poll",
        ),
        notice("probe", job_id="j1", thumbprint="AB", servers=["EX01"], endpoints=[{"endpoint": "EX01:25"}]),
        notice(
            "unprocessed",
            finding="unprocessed",
            state="v2",
            previous=None,
            outcome="waiting-for-inventory",
            job_id=None,
            correlation_id="c2",
            **reconcile,
        ),
        notice(
            "unprocessed",
            finding="unprocessed",
            state="v2",
            previous="v1",
            outcome="nothing-to-change",
            **reconcile,
        ),
        notice(
            "expiry-warning",
            finding="expiry",
            state="7",
            previous="14",
            not_after="2026-12-01T00:00:00+00:00",
            days_left=6.5,
            expiry_state="7",
            severity="critical",
        ),
        notice("drift", finding="drift", state="drift:0123456789ab", previous="ok", drift=["EX01: no"], **reconcile),
        notice("failed", finding="failed", state="forbidden", previous="ok", error="forbidden", **reconcile),
        notice("resolved", finding="drift", state="ok", previous="drift:0123456789ab", severity="good"),
        Notice("discovery-failed", "discovery/hrw-exchange", "", "", "job-7", "discovery failed", {"reason": "failed"}),
        notice("unblocked", **renewal_facts, reason="the CRL answers again"),
        notice("awaiting-approval", **renewal_facts, reason="every plan waits for approval"),
        notice("job-decision", job_id="j1", decision="roll-back", reason="the worker restarted after step 3"),
    ]
    return [*made, digest_notice(made, "run-1")]


_INTERNAL = re.compile(
    r"\bstate\b|expiry.state|drift:[0-9a-f]{6}|\b[a-z]+_[a-z_]+\b|\b[a-z]+-for-[a-z]+\b|nothing-to-change|\bok\b",
    re.IGNORECASE,
)


def shown(message: object) -> Iterator[str]:
    """Every string a person sees in a Teams or Slack message (not the schema's own words)."""
    if isinstance(message, dict):
        for key, value in message.items():
            if key in ("text", "title", "value"):
                if isinstance(value, str):
                    yield value
                elif isinstance(value, dict):
                    yield from shown(value)
            elif key in ("body", "attachments", "content", "blocks", "facts", "fields", "elements"):
                yield from shown(value)
    elif isinstance(message, list):
        for item in message:
            yield from shown(item)


@pytest.mark.parametrize("made", every_outcome(), ids=lambda n: f"{n.kind}-{n.details.get('state', '')}")
def test_no_notice_shows_an_internal_state_name(made):
    for text in [*shown(teams_message(made)), *shown(slack_message(made))]:
        plain = re.sub(r":[a-z_]+:", "", text.replace("\\", ""))  # Slack's emoji codes are not words
        found = _INTERNAL.search(plain.replace("correlation id", "").replace("Correlation id", ""))
        assert found is None, f"{made.kind}: {found.group(0)!r} in {plain!r}"
    details = generic_payload(made, AT)["data"]["details"]
    assert not {"state", "previous", "expiry_state"} & set(details)


def test_every_kind_the_pipeline_notifies_has_words_of_its_own():
    from shared.notify.webhooks import _DIGEST_LABELS, _TITLES
    from shared.pipeline.process import _KIND_SEVERITY

    assert set(_KIND_SEVERITY) <= set(_TITLES) and set(_KIND_SEVERITY) <= set(_DIGEST_LABELS)


def test_log_notifier_only_is_not_deduplicated_in_the_trail(tmp_path):
    audit = SqliteAuditLog(tmp_path / "a.sqlite")
    assert isinstance(webhook_notifier([], audit, None), LogNotifier)
    notifier = webhook_notifier(
        [WebhookChannel("slack", "http://127.0.0.1:9/hook", attempts=1, timeout=0.5)], audit, None
    )
    assert isinstance(notifier, OnceNotifier) and isinstance(notifier.inner, FanoutNotifier)
