"""Issue 17's "renewals that never deploy": what is deployed is the baseline, transient blocks retry
themselves, permanent ones wait for a new version or a person (retry, approve), the approval gate and the
maintenance windows. On the pipeline's local adapters (vault directory, outbox, SQLite) and real CRLs on
loopback, as tests/test_pipeline.py."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from cryptography import x509

from shared.pipeline.audit import AuditEntry
from shared.pipeline.events import parse_event
from shared.x509.certificate import Certificate
from tests.chains import make_crl, pem_of
from tests.exchange_model import ExchangeOrg
from tests.inventories import exchange, tls_name
from tests.test_pipeline import NAME, NOW, VAULT, Renewal, event, local_options
from tests.test_pipeline import renewal as renewal_fixture

renewal = renewal_fixture  # the fixture: v1 (R10) deployed, v2 (R11) in the vault, CRLs on loopback

CREATED = {"v1": "2026-08-01T00:00:00Z", "v2": "2026-11-20T00:00:00Z", "v3": "2026-11-25T00:00:00Z"}


def revoke(renewal: Renewal, *issued) -> None:
    """R11's CRL lists these certificates as revoked (key compromise, two hours ago)."""
    when = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)
    revoked = [(i.cert.serial_number, x509.ReasonFlags.key_compromise, when) for i in issued]
    renewal.server.route("/R11.crl", body=make_crl(renewal.inter_b, revoked))


def third_version(renewal: Renewal):
    """v3: another mail.contoso.com certificate from R11, created after v2."""
    v3 = renewal.leaf(renewal.inter_b)
    renewal.add_version("v3", pem_of([v3, renewal.inter_b]))
    (renewal.vault_dir / NAME / "certificate.json").write_text(json.dumps({"created": CREATED}))
    return v3


def facts(issued, intermediate) -> dict:
    """The facts of a PFX the Exchange model can import."""
    cert, inter = Certificate.from_der(issued.der), Certificate.from_der(intermediate.der)
    return {
        "thumbprint": cert.thumbprint,
        "subject": str(cert.subject),
        "issuer": str(cert.issuer),
        "dns_names": list(cert.dns_names),
        "intermediates": [{"thumbprint": inter.thumbprint, "subject": str(inter.subject)}],
        "not_before": "2026-01-01T00:00:00Z",
        "not_after": "2027-01-01T00:00:00Z",
        "exportable": True,
    }


def succeeded(renewal: Renewal, version: str) -> None:
    """The audit trail shows that the job of `version` succeeded (the runbook's certsync.result/1)."""
    renewal.pipeline().audit.record(
        AuditEntry(
            certificate=NAME,
            kind="job-result",
            correlation_id="c0",
            summary="job done",
            vault=VAULT,
            version=version,
            details={"job_id": "j", "status": "Completed", "result": {"status": "succeeded", "steps": []}},
        )
    )


@pytest.mark.parametrize("job_history", [False, True], ids=["inventory", "last-succeeded-job"])
def test_a_blocked_version_is_never_the_next_versions_baseline(renewal, job_history):
    """v1 is deployed; v2 is blocked (revoked) and never deployed; v3's plan must replace v1: its
    compare-and-set expects v1's values, and the plan applied to the Exchange model switches everything.
    The old code took v2 (the previous Key Vault version) as the old certificate, found it on no server
    and switched nothing."""
    if job_history:
        succeeded(renewal, "v1")
    revoke(renewal, renewal.new)
    assert renewal.pipeline().process(parse_event(event("v2"))).outcome == "blocked"
    v3 = third_version(renewal)
    outcome = renewal.pipeline().process(parse_event(event("v3")))
    assert outcome.outcome == "queued", outcome.reason
    if job_history:  # the renewal's diff is against it too (with the inventory alone, no version is known)
        assert outcome.previous.version == "v1"
    plan = outcome.plan_document
    old, new = tls_name(renewal.old), tls_name(v3)
    assert plan["old_certificates"] == [Certificate.from_der(renewal.old.der).thumbprint]
    switches = [(s["previous"], s["value"]) for s in plan["steps"] if s["phase"] == "switch"]
    assert len(switches) == 4 and set(switches) == {(old, new)}
    org = ExchangeOrg(
        exchange(renewal.old),
        intermediates={"EX01": set(), "EX02": set()},
        importable={facts(v3, renewal.inter_b)["thumbprint"]: facts(v3, renewal.inter_b)},
    )
    org.apply_plan(plan)  # raises StaleWrite if a compare-and-set expected a value Exchange does not hold
    values = {c["TlsCertificateName"] for c in org.inventory["receive_connectors"] + org.inventory["send_connectors"]}
    assert values == {new} and org.inventory["hybrid_configuration"]["TlsCertificateName"] == new
    assert org.violations() == []


# --- transient blocks retry themselves -----------------------------------------------------------------


class Notices:
    """A Notifier that keeps every notice (the webhook notifiers are tested in test_notify)."""

    def __init__(self) -> None:
        self.notices: list = []

    def notify(self, notice) -> None:
        self.notices.append(notice)

    def kinds(self) -> list[str]:
        return [n.kind for n in self.notices]


def at(renewal: Renewal, when: dt.datetime, notices: Notices | None = None, **settings):
    """A fresh pipeline (as a new Functions instance would be) whose clock says `when`."""
    pipeline = renewal.pipeline(**settings)
    pipeline.clock = lambda: when
    if notices is not None:
        pipeline.notifier = notices
    return pipeline


def pending(renewal: Renewal) -> list[AuditEntry]:
    from shared.pipeline.process import PENDING_PARTITION

    return list(renewal.pipeline().audit.history(PENDING_PARTITION))


def test_a_crl_outage_is_a_transient_block_that_retries_with_backoff_and_deploys_when_it_clears(renewal):
    """Issue 17: one CRL outage at renewal time and the version never deployed (a block was forever).
    Now it is retried with backoff, told to people only past the notice window, then deployed."""
    notices = Notices()
    renewal.server.route("/R11.crl", status=500)
    first = at(renewal, NOW, notices).process(parse_event(event("v2")))
    assert (first.outcome, first.assessment.status) == ("blocked", "RevocationCheckFailure")
    blocked = renewal.history()[-1]
    assert blocked.kind == "blocked" and blocked.details["transient"] is True
    assert blocked.details["code"] == "revocation" and blocked.details["attempt"] == 1
    assert blocked.details["retry_at"] == "2026-11-26T08:05:00Z" and blocked.details["notified"] is False
    assert notices.kinds() == []  # a transient block is not a notice yet
    assert [e.version for e in pending(renewal)] == ["v2"]

    assert at(renewal, NOW + dt.timedelta(minutes=4)).retry_due(NOW + dt.timedelta(minutes=4)) == []
    later = NOW + dt.timedelta(minutes=6)
    [second] = at(renewal, later, notices).retry_due(later)
    assert second.outcome == "blocked"
    assert renewal.history()[-1].details["attempt"] == 2
    assert renewal.history()[-1].details["retry_at"] == "2026-11-26T08:16:00Z"  # 10 minutes: doubled
    assert notices.kinds() == []

    seven_hours = NOW + dt.timedelta(hours=7)  # past CERTSYNC_BLOCK_NOTICE_HOURS (6)
    [third] = at(renewal, seven_hours, notices).retry_due(seven_hours)
    assert third.outcome == "blocked" and notices.kinds() == ["blocked"]
    assert "blocked for 7 h; certsync keeps trying" in notices.notices[0].summary
    eight_hours = seven_hours + dt.timedelta(hours=1)
    at(renewal, eight_hours, notices).retry_due(eight_hours)
    assert notices.kinds() == ["blocked"]  # told once

    renewal.server.route("/R11.crl", body=make_crl(renewal.inter_b, []))  # the CA's CRL is back
    nine_hours = eight_hours + dt.timedelta(hours=1)
    [done] = at(renewal, nine_hours, notices).retry_due(nine_hours)
    assert done.outcome == "queued" and len(renewal.jobs()) == 1
    assert notices.kinds() == ["blocked", "unblocked", "queued"]
    assert at(renewal, nine_hours + dt.timedelta(hours=3)).retry_due(nine_hours + dt.timedelta(hours=3)) == []


def test_the_notice_window_is_a_setting(renewal):
    notices = Notices()
    renewal.server.route("/R11.crl", status=500)
    at(renewal, NOW, notices, block_notice_after=dt.timedelta(0)).process(parse_event(event("v2")))
    assert notices.kinds() == ["blocked"] and renewal.history()[-1].details["notified"] is True


def test_a_permanent_block_is_told_at_once_and_waits_for_a_person(renewal):
    notices = Notices()
    revoke(renewal, renewal.new)
    outcome = at(renewal, NOW, notices).process(parse_event(event("v2")))
    assert outcome.outcome == "blocked" and notices.kinds() == ["blocked"]
    details = renewal.history()[-1].details
    assert (details["transient"], details["overridable"], details["code"]) == (False, False, "certificate-status")
    assert pending(renewal) == []
    much_later = NOW + dt.timedelta(days=3)
    assert at(renewal, much_later).retry_due(much_later) == []  # never retried by itself
    again = renewal.pipeline().retry(NAME, by="alice", vault=VAULT)  # the newest blocked version: v2
    assert again.outcome == "blocked" and again.event.version == "v2"
    requested = [e for e in renewal.history() if e.kind == "retry-requested"]
    assert [(e.version, e.details["by"]) for e in requested] == [("v2", "alice")]


def test_retry_runs_the_version_now_whatever_its_backoff(renewal):
    renewal.server.route("/R11.crl", status=500)
    assert at(renewal, NOW).process(parse_event(event("v2"))).outcome == "blocked"
    renewal.server.route("/R11.crl", body=make_crl(renewal.inter_b, []))
    assert at(renewal, NOW).retry_due(NOW) == []  # not due for 5 minutes
    outcome = at(renewal, NOW).retry(NAME, "v2", by="bob", vault=VAULT)
    assert outcome.outcome == "queued" and len(renewal.jobs()) == 1
    later = NOW + dt.timedelta(hours=1)
    assert at(renewal, later).retry_due(later) == []  # the version got further: its pending retry is stale


def test_retry_without_a_blocked_version_says_so(renewal):
    from shared.errors import CertsyncError

    with pytest.raises(CertsyncError, match="has no blocked or waiting version; give the version"):
        renewal.pipeline().retry(NAME, by="alice", vault=VAULT)
    with pytest.raises(CertsyncError, match="name the vault with --vault"):
        renewal.pipeline().retry(NAME, by="alice")
    with pytest.raises(CertsyncError, match="not on the allow-list"):
        renewal.pipeline(vaults=("other-kv",)).retry(NAME, by="alice", vault=VAULT)
    with pytest.raises(CertsyncError, match="version 'v 2'"):
        renewal.pipeline().retry(NAME, "v 2", by="alice", vault=VAULT)


# --- approve ---------------------------------------------------------------------------------------------


def other_trust(renewal: Renewal):
    from shared.validation.assessment import TrustStore
    from tests.chains import issue, make_name

    stranger = issue(make_name("Someone Else's Root"), kind="ec", ca=True)
    return TrustStore.from_certificates([Certificate.from_der(stranger.der)], "test")


def test_an_untrusted_private_ca_is_blocked_until_a_person_approves_it(renewal):
    untrusted = renewal.pipeline(trust=other_trust(renewal)).process(parse_event(event("v2")))
    assert (untrusted.outcome, untrusted.assessment.status) == ("blocked", "Untrusted")
    assert renewal.history()[-1].details["overridable"] is True
    outcome = renewal.pipeline(trust=other_trust(renewal)).approve(
        NAME, "v2", "private CA;\nroot deployed by GPO", by="alice@contoso.com", vault=VAULT
    )
    assert outcome.outcome == "queued" and len(renewal.jobs()) == 1
    [approved] = [e for e in renewal.history() if e.kind == "approved"]
    assert approved.details == {"by": "alice@contoso.com", "reason": "private CA; root deployed by GPO"}
    assert approved.version == "v2" and approved.at is not None


def test_approval_never_overrides_revocation_or_expiry(renewal):
    from shared.errors import CertsyncError

    revoke(renewal, renewal.new)
    assert renewal.pipeline().process(parse_event(event("v2"))).outcome == "blocked"
    with pytest.raises(CertsyncError, match="approve exch-hybrid-smtp version v2: refused, no approval overrides"):
        renewal.pipeline().approve(NAME, "v2", "please", by="alice", vault=VAULT)
    expired = renewal.leaf(renewal.inter_b, not_after=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1))
    renewal.add_version("v9", pem_of([expired, renewal.inter_b]))
    with pytest.raises(CertsyncError, match=r"version v9: refused, the certificate expired .*renew it in Key Vault"):
        renewal.pipeline().approve(NAME, "v9", "please", by="alice", vault=VAULT)
    future = renewal.leaf(renewal.inter_b, not_before=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2))
    renewal.add_version("v8", pem_of([future, renewal.inter_b]))
    with pytest.raises(CertsyncError, match="version v8: refused, the certificate is not valid before"):
        renewal.pipeline().approve(NAME, "v8", "please", by="alice", vault=VAULT)
    with pytest.raises(CertsyncError, match="give the reason with --reason"):
        renewal.pipeline().approve(NAME, "v2", " \n ", by="alice", vault=VAULT)
    assert [e for e in renewal.history() if e.kind == "approved"] == []


def test_the_approval_gate_holds_every_plan_until_it_is_approved(renewal):
    notices = Notices()
    held = at(renewal, NOW, notices, approval_required=True).process(parse_event(event("v2")))
    assert held.outcome == "awaiting-approval" and renewal.jobs() == []
    assert "certsync approve exch-hybrid-smtp v2 --reason" in held.reason
    assert notices.kinds() == ["awaiting-approval"]
    again = at(renewal, NOW, approval_required=True).process(parse_event(event("v2")))
    assert again.outcome == "awaiting-approval"  # a redelivery does not pass the gate
    approved = at(renewal, NOW, approval_required=True).approve(NAME, "v2", "CHG0042", by="alice", vault=VAULT)
    assert approved.outcome == "queued" and len(renewal.jobs()) == 1


# --- maintenance windows ---------------------------------------------------------------------------------


def test_a_plan_outside_its_maintenance_window_waits_and_is_queued_when_it_opens(renewal):
    from shared.pipeline.windows import parse_windows

    windows = parse_windows('{"HRW-Exchange": ["Sat 22:00-Sun 04:00"]}')
    outcome = at(renewal, NOW, maintenance_windows=windows).process(parse_event(event("v2")))  # a Thursday
    assert outcome.outcome == "waiting-for-window" and renewal.jobs() == []
    assert "queued at 2026-11-28T22:00:00Z" in outcome.reason
    assert renewal.history()[-1].details["opens_at"] == "2026-11-28T22:00:00Z"
    friday = dt.datetime(2026, 11, 27, 23, 0, tzinfo=dt.timezone.utc)
    assert at(renewal, friday, maintenance_windows=windows).retry_due(friday) == []
    saturday = dt.datetime(2026, 11, 28, 22, 5, tzinfo=dt.timezone.utc)
    renewal.store(exchange(renewal.old), collected=saturday - dt.timedelta(hours=1))  # the daily discovery
    [queued] = at(renewal, saturday, maintenance_windows=windows).retry_due(saturday)
    assert queued.outcome == "queued" and len(renewal.jobs()) == 1


def test_a_worker_group_without_windows_is_changed_at_any_time(renewal):
    from shared.pipeline.windows import parse_windows

    windows = parse_windows('{"another-group": ["Sat 22:00-Sun 04:00"]}')
    assert at(renewal, NOW, maintenance_windows=windows).process(parse_event(event("v2"))).outcome == "queued"


# --- the command line and the HTTP functions -----------------------------------------------------------


def cli(renewal: Renewal, capsys, *arguments: str, trust=None) -> tuple[int, str, str]:
    from shared.cli.main import main

    fresh = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)  # the CLI's clock is the real one
    renewal.store(exchange(renewal.old), collected=fresh)
    options = local_options(renewal, trust)
    code = main([*arguments, *options, "--vault", VAULT, "--inventory-store", str(renewal.inventory_path)])
    out, err = capsys.readouterr()
    return code, out, err


def test_certsync_retry_runs_the_newest_blocked_version_again(renewal, capsys):
    renewal.server.route("/R11.crl", status=500)
    assert renewal.pipeline().process(parse_event(event("v2"))).outcome == "blocked"
    code, out, _ = cli(renewal, capsys, "retry", NAME)
    assert code == 1 and out.startswith("Outcome: BLOCKED (the new certificate is RevocationCheckFailure")
    renewal.server.route("/R11.crl", body=make_crl(renewal.inter_b, []))
    code, out, _ = cli(renewal, capsys, "retry", NAME, "v2", "--by", "ops-oncall")
    assert code == 0 and "Outcome: QUEUED" in out and f"Job: {renewal.outbox}/" in out
    requested = [e.details["by"] for e in renewal.history() if e.kind == "retry-requested"]
    assert requested[-1] == "ops-oncall" and len(requested) == 2 and requested[0]  # the signed-in user first


def test_certsync_approve_records_who_and_why_and_refuses_in_one_line(renewal, capsys):
    from cryptography.hazmat.primitives import serialization

    from tests.chains import issue, make_name

    stranger = issue(make_name("Someone Else's Root"), kind="ec", ca=True)
    pem = stranger.cert.public_bytes(serialization.Encoding.PEM)
    assert renewal.pipeline(trust=other_trust(renewal)).process(parse_event(event("v2"))).outcome == "blocked"
    code, out, err = cli(renewal, capsys, "approve", NAME, "v2", "--reason", "private CA", "--json", trust=pem)
    assert code == 0 and json.loads(out)["outcome"] == "queued" and err == ""
    [approved] = [e for e in renewal.history() if e.kind == "approved"]
    assert approved.details["reason"] == "private CA" and approved.details["by"]
    expired = renewal.leaf(renewal.inter_b, not_after=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1))
    renewal.add_version("v9", pem_of([expired, renewal.inter_b]))
    code, out, err = cli(renewal, capsys, "approve", NAME, "v9", "--reason", "x")
    assert code == 2 and out == "" and err.count("\n") == 1 and "refused, the certificate expired" in err
    assert "Traceback" not in err


def test_the_retry_and_approve_commands_show_examples():
    from shared.cli.main import _parser

    for command in ("retry", "approve"):
        parser = _parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
        assert parser.epilog.count("certsync " + command) >= 2


def request(path: str, route: dict, body: bytes = b"", principal: str | None = None):
    import azure.functions as func

    headers = {"x-ms-client-principal-name": principal} if principal else {}
    return func.HttpRequest("POST", path, headers=headers, params={}, route_params=route, body=body)


def test_the_http_functions_retry_and_approve_as_the_cli_does(renewal, monkeypatch):
    import shared.wiring
    from functions.blocks import approve_version, retry_version

    monkeypatch.setattr(
        shared.wiring, "azure_pipeline", lambda: renewal.pipeline(trust=other_trust(renewal), vaults=(VAULT,))
    )
    assert renewal.pipeline(trust=other_trust(renewal)).process(parse_event(event("v2"))).outcome == "blocked"
    retried = retry_version(request(f"/api/certificates/{NAME}/retry", {"name": NAME}))
    assert retried.status_code == 200 and json.loads(retried.get_body())["outcome"] == "blocked"
    body = json.dumps({"reason": "private CA, checked by PKI"}).encode()
    route = {"name": NAME, "version": "v2"}
    approved = approve_version(request("/api/.../approve", route, body, principal="alice@contoso.com"))
    assert approved.status_code == 200 and json.loads(approved.get_body())["outcome"] == "queued"
    [entry] = [e for e in renewal.history() if e.kind == "approved"]
    assert entry.details == {"by": "alice@contoso.com", "reason": "private CA, checked by PKI"}
    requested = [e for e in renewal.history() if e.kind == "retry-requested"]
    assert [e.details["by"] for e in requested] == ["function key"]


@pytest.mark.parametrize(
    ("route", "body", "status", "message"),
    [
        ({"name": NAME, "version": "v2"}, b"{", 400, "not JSON"),
        ({"name": NAME, "version": "v2"}, b"[]", 400, "send a JSON object"),
        ({"name": NAME, "version": "v2"}, b'{"reason": 7}', 400, "reason must be text"),
        ({"name": NAME, "version": "v2"}, b"{}", 400, "give the reason"),
        ({"name": NAME, "version": "nope"}, b'{"reason": "x"}', 404, "nope"),
        ({"name": NAME, "version": "v9"}, b'{"reason": "x"}', 409, "refused, the certificate expired"),
        ({"name": NAME, "version": "v2"}, b"x" * 70000, 413, "larger than 64 KiB"),
    ],
)
def test_the_http_approve_answers_one_line_of_json_errors(renewal, monkeypatch, route, body, status, message):
    import shared.wiring
    from functions.blocks import approve_version

    expired = renewal.leaf(renewal.inter_b, not_after=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1))
    renewal.add_version("v9", pem_of([expired, renewal.inter_b]))
    monkeypatch.setattr(shared.wiring, "azure_pipeline", lambda: renewal.pipeline(vaults=(VAULT,)))
    answer = approve_version(request("/api/.../approve", route, body))
    error = json.loads(answer.get_body())
    assert answer.status_code == status and list(error) == ["error"] and message in error["error"]
    assert "\n" not in error["error"]


def test_the_timer_runs_the_versions_due_again(renewal, monkeypatch, caplog):
    import functions.blocks
    import shared.wiring
    from shared.reconciliation.reconcile import Reconciler

    now = dt.datetime.now(dt.timezone.utc)  # the reconciler assesses at its run's time
    renewal.store(exchange(renewal.old), collected=now - dt.timedelta(hours=1))
    renewal.server.route("/R11.crl", status=500)
    assert at(renewal, now).process(parse_event(event("v2"))).outcome == "blocked"
    renewal.server.route("/R11.crl", body=make_crl(renewal.inter_b, []))
    later = now + dt.timedelta(minutes=6)
    pipeline = at(renewal, later)
    reconciler = Reconciler(
        sources=pipeline.sources,
        vaults=(VAULT,),
        audit=pipeline.audit,
        state=None,
        notifier=Notices(),
        pipeline=pipeline,  # type: ignore[arg-type]
    )
    monkeypatch.setattr(shared.wiring, "azure_reconciler", lambda: reconciler)
    monkeypatch.setattr(functions.blocks, "clock", lambda: later)
    caplog.set_level("INFO", "certsync")
    functions.blocks.retry_due_versions(None)
    assert len(renewal.jobs()) == 1
    assert f"versions due again: 1 run ({NAME}/v2: queued)" in caplog.text


def test_a_transient_block_is_not_retried_once_a_newer_version_exists(renewal):
    renewal.server.route("/R11.crl", status=500)
    assert at(renewal, NOW).process(parse_event(event("v2"))).outcome == "blocked"
    renewal.server.route("/R11.crl", body=make_crl(renewal.inter_b, []))
    third_version(renewal)  # v3 replaces v2: deploying v2 later would go backwards
    later = NOW + dt.timedelta(hours=1)
    assert at(renewal, later).retry_due(later) == []
    assert renewal.jobs() == []


def test_a_server_discovery_could_not_read_is_a_transient_block(renewal):
    document = exchange(renewal.old)
    document["certificates"] = [c for c in document["certificates"] if c["Server"] != "EX02"]
    document["errors"] = [{"where": "EX02", "message": "Get-ExchangeCertificate -Server EX02: RPC unavailable"}]
    renewal.store(document)
    outcome = at(renewal, NOW).process(parse_event(event("v2")))
    assert outcome.outcome == "blocked" and "discovery could not read EX02" in outcome.reason
    details = renewal.history()[-1].details
    assert (details["code"], details["transient"], details["overridable"]) == ("inventory", True, False)


def test_a_stored_inventory_that_cannot_be_read_is_a_transient_block(renewal):
    renewal.store({**exchange(renewal.old), "servers": "not a list"})
    outcome = at(renewal, NOW).process(parse_event(event("v2")))
    assert outcome.outcome == "blocked"
    assert renewal.history()[-1].details["code"] == "inventory" and renewal.history()[-1].details["transient"]


def test_no_targets_is_a_permanent_block(renewal):
    assert renewal.pipeline(targets=None).process(parse_event(event("v2"))).outcome == "blocked"
    details = renewal.history()[-1].details
    assert (details["code"], details["transient"], details["overridable"]) == ("targets", False, False)


def test_a_deployed_version_no_longer_in_the_vault_leaves_the_inventory_to_decide(renewal):
    succeeded(renewal, "vgone")  # its job succeeded, then the version was deleted
    outcome = renewal.pipeline().process(parse_event(event("v2")))
    assert outcome.outcome == "queued"
    assert outcome.plan_document["old_certificates"] == [Certificate.from_der(renewal.old.der).thumbprint]


def test_a_pending_entry_that_cannot_be_run_is_logged_and_the_others_still_run(renewal, caplog):
    from shared.pipeline.process import PENDING_PARTITION

    audit = renewal.pipeline().audit
    for where in (NAME, PENDING_PARTITION):
        details = {"reason": "x", "transient": True, "retry_at": "2026-11-26T08:00:00Z"}
        if where == PENDING_PARTITION:
            details |= {"certificate": NAME, "event": {"not": "an event"}}
        audit.record(
            AuditEntry(
                certificate=where,
                kind="blocked",
                correlation_id="c-broken",
                summary="x",
                vault=VAULT,
                version="v2",
                details=details,
            )
        )
    later = NOW + dt.timedelta(hours=1)
    assert at(renewal, later).retry_due(later) == []
    assert "pending version exch-hybrid-smtp/v2 not run again yet" in caplog.text


def test_certsync_retry_against_a_real_vault_url_names_the_vault_by_its_host(tmp_path, capsys):
    from shared.cli.main import main

    audit = str(tmp_path / "audit.sqlite")
    url = "https://contoso-kv.vault.azure.net"
    assert main(["retry", NAME, "--vault-url", url, "--vault", "other", "--audit", audit]) == 2
    assert "with --vault-url the URL names the vault" in capsys.readouterr().err
    assert main(["retry", NAME, "--vault-url", url, "--audit", audit, "--outbox", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"certificate {NAME} in contoso-kv has no blocked or waiting version" in err and err.count("\n") == 1


def reconciler_at(renewal: Renewal, when: dt.datetime, **settings):
    from shared.adapters.local.sqlite import SqliteStateStore
    from shared.reconciliation.reconcile import Reconciler

    pipeline = at(renewal, when, **settings)
    return Reconciler(
        sources=pipeline.sources,
        vaults=(VAULT,),
        audit=pipeline.audit,
        state=SqliteStateStore(str(renewal.vault_dir.parent / "state.sqlite")),
        notifier=Notices(),
        pipeline=pipeline,
        targets_file=pipeline.targets_file,
        settings=pipeline.settings,
    )


def findings(report, code: str) -> list:
    return [f for f in report.findings if f.code == code]


def test_the_daily_run_retries_what_is_due_and_shows_blocks_and_waits_on_the_status_page(renewal):
    now = dt.datetime.now(dt.timezone.utc)  # the reconciler assesses at its run's time
    renewal.store(exchange(renewal.old), collected=now - dt.timedelta(hours=1))
    renewal.server.route("/R11.crl", status=500)
    assert at(renewal, now).process(parse_event(event("v2"))).outcome == "blocked"
    report = reconciler_at(renewal, now).run(now)  # not due yet: shown as retrying, a warning
    [shown] = findings(report, "blocked")
    assert (shown.state, shown.severity) == ("retrying", "warning") and report.processed == []
    later = now + dt.timedelta(minutes=6)
    report = reconciler_at(renewal, later).run(later)  # due: run again, still blocked
    assert [p["outcome"] for p in report.processed] == ["blocked"]
    renewal.server.route("/R11.crl", body=make_crl(renewal.inter_b, []))
    much_later = later + dt.timedelta(hours=1)
    report = reconciler_at(renewal, much_later).run(much_later)
    assert [p["outcome"] for p in report.processed] == ["queued"] and findings(report, "blocked") == []


def test_a_version_awaiting_approval_is_shown_on_the_status_page(renewal):
    now = dt.datetime.now(dt.timezone.utc)
    renewal.store(exchange(renewal.old), collected=now - dt.timedelta(hours=1))
    assert at(renewal, now, approval_required=True).process(parse_event(event("v2"))).outcome == "awaiting-approval"
    report = reconciler_at(renewal, now, approval_required=True).run(now)
    [shown] = findings(report, "awaiting-approval")
    assert shown.severity == "warning" and "waits" in shown.summary and renewal.jobs() == []
