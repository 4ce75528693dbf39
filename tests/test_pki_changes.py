"""Issue 18 with real certificates: Let's Encrypt Generation Y (a 4-certificate chain through the Root YR
cross-sign, leaves without a subject), clientAuth, expiry by lifetime (`tests/fixtures/pki/PROVENANCE.md`)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.exchange.inventory import read_inventory
from shared.pipeline.planner import plan_from_inventory
from shared.times import format_time
from shared.validation.assessment import TrustStore, assess
from shared.validation.hierarchies import explain_issuer_change, forecast_for
from shared.validation.lifetime import CRITICAL, EXPIRED, OK, WARNING, ExpiryThresholds
from shared.x509.certificate import Certificate
from shared.x509.containers import certificates_in, load_certificates
from tests.chains import Issued, issue, make_name, pem_of
from tests.exchange_model import CheckFailed, ExchangeOrg
from tests.inventories import exchange

PKI = Path(__file__).parent / "fixtures" / "pki"
AT = dt.datetime(2026, 10, 2, 12, tzinfo=dt.timezone.utc)  # inside the test-site leaves' week


def real_chain(*files: str):
    return load_certificates(b"".join((PKI / f).read_bytes() for f in files), "Let's Encrypt Generation Y")


def test_a_real_generation_y_leaf_builds_the_4_certificate_chain_through_the_cross_sign() -> None:
    bundle = real_chain("le-valid-yr-leaf.pem", "le-yr1.pem", "le-root-yr-by-x1.pem")
    result = assess(bundle, trust=TrustStore.mozilla(), at=AT, revocation="off", offline=True)
    assert [str(e.certificate.subject.first("2.5.4.3")) for e in result.path[1:]] == [
        "YR1",
        "Root YR",
        "ISRG Root X1",
    ]
    assert [e.source for e in result.path] == ["delivered", "delivered", "delivered", "trust store"]
    assert [c.thumbprint for c in result.intermediates_to_install] == [
        e.certificate.thumbprint for e in result.path[1:3]
    ]


@pytest.mark.parametrize(
    ("leaf", "chain"), [("le-valid-yr-leaf.pem", "le-yr1.pem"), ("le-valid-ye-leaf.pem", "le-ye2.pem")]
)
def test_a_real_leaf_with_an_empty_subject_has_its_own_finding_with_the_fix(leaf: str, chain: str) -> None:
    result = assess(real_chain(leaf, chain, "le-root-yr-by-x1.pem"), at=AT, revocation="off", offline=True)
    [finding] = [f for f in result.findings if f.code == "subject-without-cn"]
    assert finding.severity == "error" and "subject is empty" in finding.message
    assert "'classic'" in finding.remedy and "Key Vault certificate policy" in finding.remedy
    assert "cn-not-dns-name" not in {f.code for f in result.findings}
    # YE2's chain needs Root YE cross-signed by ISRG Root X2, which is not among the fixtures: Untrusted
    assert result.status == ("Invalid" if "yr" in leaf else "Untrusted")


def test_a_real_generation_y_leaf_lacks_client_auth_and_says_what_is_known() -> None:
    result = assess(real_chain("le-valid-yr-leaf.pem", "le-yr1.pem", "le-root-yr-by-x1.pem"), at=AT, revocation="off")
    [finding] = [f for f in result.findings if f.code == "eku-no-client-auth"]
    assert finding.severity == "info" and "11 February 2026" in finding.message


@pytest.mark.parametrize(
    ("lifetime", "left", "state"),
    [
        (45, 30, OK),  # NearExpiry day for a 45-day certificate: renewal due, not an alarm
        (45, 6.5, WARNING),
        (45, 2, CRITICAL),
        (398, 31, OK),
        (398, 29, WARNING),
        (398, 7, CRITICAL),
        (7, 2.9, WARNING),
        (7, 0.9, CRITICAL),
        (45, -1, EXPIRED),
    ],
)
def test_expiry_states_follow_the_lifetime(lifetime: float, left: float, state: str) -> None:
    not_after = AT + dt.timedelta(days=left)
    assert ExpiryThresholds().state(not_after - dt.timedelta(days=lifetime), not_after, AT) == state


def test_near_expiry_means_renewal_due_for_a_short_certificate_and_a_warning_for_a_long_one() -> None:
    thresholds = ExpiryThresholds()
    not_after = AT + dt.timedelta(days=30)
    short = thresholds.near_expiry_meaning(not_after - dt.timedelta(days=45), not_after, AT)
    assert short.startswith("renewal due per policy") and "45 days" in short
    long = thresholds.near_expiry_meaning(not_after - dt.timedelta(days=398), not_after, AT)
    assert long.startswith("warning: 30.0 day(s) of its 398-day lifetime left")
    assert thresholds.near_expiry_meaning(AT - dt.timedelta(days=40), AT - dt.timedelta(days=1), AT).startswith(
        "expired"
    )
    assert thresholds.warning_starts(AT, AT + dt.timedelta(days=100)) == AT + dt.timedelta(days=85)


@pytest.mark.parametrize(
    "options",
    [
        {"warning_fraction": 0.1, "critical_fraction": 0.2},
        {"warning_fraction": 1.0},
        {"critical_fraction": 0},
        {"warning_floor_days": 0},
    ],
)
def test_bad_expiry_thresholds_are_refused_in_one_line(options: dict[str, float]) -> None:
    from shared.errors import CertsyncError

    with pytest.raises(CertsyncError, match="expiry"):
        ExpiryThresholds(**options)


# --- a renewal from Generation X to Generation Y, through the planner onto the model of Exchange ----------
# Generated CAs under the real names (no Generation Y leaf with a CN and a key exists to use): ISRG Root X1
# issues R12 and cross-signs Root YR, which issues YR1. The 4-certificate chain is leaf, YR1, Root YR
# (cross-signed), ISRG Root X1 in the trust store.


@dataclass
class GenerationY:
    x1: Issued
    r12: Issued
    root_yr: Issued
    yr1: Issued
    old: Issued
    new: Issued

    @property
    def trust(self) -> TrustStore:
        return TrustStore.from_certificates([Certificate.from_der(self.x1.der)], "ISRG Root X1 (generated)")

    def leaf(self, issuer: Issued) -> Issued:
        return issue(
            make_name("mail.contoso.com", None, None),
            issuer=issuer,
            kind="rsa",
            dns_names=["mail.contoso.com", "autodiscover.contoso.com"],
        )


@pytest.fixture(scope="module")
def generation_y() -> GenerationY:
    x1 = issue(make_name("ISRG Root X1", "Internet Security Research Group"), kind="rsa", ca=True)
    r12 = issue(make_name("R12", "Let's Encrypt"), issuer=x1, kind="rsa", ca=True, path_length=0)
    root_yr = issue(make_name("Root YR", "ISRG"), issuer=x1, kind="rsa", ca=True)  # the cross-sign
    yr1 = issue(make_name("YR1", "Let's Encrypt"), issuer=root_yr, kind="rsa", ca=True, path_length=0)
    world = GenerationY(x1, r12, root_yr, yr1, x1, x1)
    world.old, world.new = world.leaf(r12), world.leaf(yr1)
    return world


def facts(leaf: Issued, *chain: Issued) -> dict:
    cert = Certificate.from_der(leaf.der)
    return {
        "thumbprint": cert.thumbprint,
        "subject": str(cert.subject),
        "issuer": str(cert.issuer),
        "tls_certificate_name": f"<I>{cert.issuer}<S>{cert.subject}",
        "dns_names": list(cert.dns_names),
        "intermediates": [
            {"thumbprint": Certificate.from_der(c.der).thumbprint, "subject": str(Certificate.from_der(c.der).subject)}
            for c in chain
        ],
        "not_before": format_time(cert.not_before, timespec="seconds"),
        "not_after": format_time(cert.not_after, timespec="seconds"),
        "exportable": True,
    }


def test_a_renewal_from_generation_x_to_a_4_certificate_generation_y_chain_keeps_mail_flowing(generation_y):
    g = generation_y
    bundle = load_certificates(pem_of([g.new, g.yr1, g.root_yr]), "the Generation Y renewal")
    assessment = assess(bundle, hosts=["mail.contoso.com"], trust=g.trust, revocation="off", offline=True)
    assert assessment.status == "Valid" and len(assessment.path) == 4
    old = Certificate.from_der(g.old.der)
    plan = plan_from_inventory(bundle, assessment, read_inventory(exchange(g.old), "test"), previous_versions=[old])
    assert plan.blocked is None, plan.to_dict()
    cross_sign, yr1 = (Certificate.from_der(c.der).thumbprint for c in (g.root_yr, g.yr1))
    for server in ("EX01", "EX02"):  # YR1 and the Root YR cross-sign, on every server, before the import
        installs = [s.object for s in plan.steps if s.server == server and s.action == "install-intermediate"]
        assert installs == [yr1, cross_sign]
    new_name = "<I>CN=YR1, O=Let's Encrypt, C=US<S>CN=mail.contoso.com"
    assert plan.tls_certificate_name == new_name
    r12 = Certificate.from_der(g.r12.der).thumbprint
    org = ExchangeOrg(
        exchange(g.old),
        intermediates={"EX01": {r12}, "EX02": {r12}},
        importable={Certificate.from_der(g.new.der).thumbprint: facts(g.new, g.yr1, g.root_yr)},
    )
    org.apply_plan(plan.to_dict())
    assert org.violations() == [] and org.exo_violations() == []
    assert {c["TlsCertificateName"] for c in org.inventory["send_connectors"]} == {new_name}
    change = explain_issuer_change(old.issuer, Certificate.from_der(g.new.der).issuer)
    assert change is not None and change.expected
    assert change.explanation == "Let's Encrypt rotated R12 -> YR1 (Generation X -> Generation Y), expected"


def test_without_the_cross_sign_the_new_certificate_stays_untrusted_on_the_servers(generation_y):
    g = generation_y
    bundle = load_certificates(pem_of([g.new, g.yr1, g.root_yr]), "the Generation Y renewal")
    assessment = assess(bundle, trust=g.trust, revocation="off", offline=True)
    plan = plan_from_inventory(bundle, assessment, read_inventory(exchange(g.old), "test")).to_dict()
    cross_sign = Certificate.from_der(g.root_yr.der).thumbprint
    plan["steps"] = [s for s in plan["steps"] if s["object"] != cross_sign]  # what a 3-certificate planner did
    org = ExchangeOrg(exchange(g.old), importable={plan["certificate"]["thumbprint"]: facts(g.new, g.yr1, g.root_yr)})
    with pytest.raises(CheckFailed, match=r"Untrusted, not Valid"):
        org.apply_plan(plan)


def test_pre_staging_installs_the_forecast_generation_y_intermediates_with_a_generation_x_renewal(generation_y):
    g = generation_y
    older = g.leaf(g.r12)  # a Generation X renewal (R12 -> R12): pre-stage what the next one may bring
    bundle = load_certificates(pem_of([older, g.r12]), "a Generation X renewal")
    assessment = assess(bundle, trust=g.trust, revocation="off", offline=True)
    inventory = read_inventory(exchange(g.old), "test")
    plain = plan_from_inventory(bundle, assessment, inventory)
    staged = plan_from_inventory(bundle, assessment, inventory, prestage=True)
    real = {
        c.thumbprint: str(c.subject)
        for f in ("le-yr1.pem", "le-yr2.pem", "le-root-yr-by-x1.pem")
        for c in certificates_in((PKI / f).read_bytes(), f)
    }
    extra = [i for i in staged.to_dict()["certificate"]["intermediates"] if i.get("prestage")]
    assert {i["thumbprint"]: i["subject"] for i in extra} == real
    assert all(i["der_base64"] for i in extra)
    added = [s for s in staged.steps if s not in plain.steps]
    assert {s.action for s in added} == {"install-intermediate"} and {s.phase for s in added} == {"stage"}
    assert {s.object for s in added} == set(real) and {s.server for s in added} == {"EX01", "EX02"}
    forecast = forecast_for(Certificate.from_der(older.der), dt.date(2026, 12, 3))
    assert forecast.issuer_strings[:2] == ("<I>CN=YR1, O=Let's Encrypt, C=US", "<I>CN=YR2, O=Let's Encrypt, C=US")


class Notices(list):
    def notify(self, notice) -> None:
        self.append(notice)


def test_the_pipeline_queues_the_generation_y_renewal_with_both_intermediates_and_calls_it_expected(
    generation_y, tmp_path
):
    from shared.adapters.local.outbox import OutboxQueue
    from shared.adapters.local.sqlite import SqliteAuditLog, SqliteInventoryStore
    from shared.adapters.local.vault_directory import DirectoryVault
    from shared.pipeline.events import parse_event
    from shared.pipeline.process import Pipeline, PipelineSettings
    from shared.pipeline.targets import parse_targets_json
    from tests.inventories import keep
    from tests.test_pipeline import NAME, TARGETS, event

    g = generation_y
    folder = tmp_path / "vault" / NAME
    folder.mkdir(parents=True)
    (folder / "v1.pem").write_bytes(pem_of([g.old, g.r12]))
    (folder / "v2.pem").write_bytes(pem_of([g.new, g.yr1, g.root_yr]))  # as Let's Encrypt delivers it
    (folder / "certificate.json").write_text(
        '{"created": {"v1": "2026-06-01T00:00:00Z", "v2": "2026-11-20T00:00:00Z"}}'
    )
    inventories = SqliteInventoryStore(tmp_path / "inventory.sqlite")
    keep(inventories, exchange(g.old), collected=dt.datetime.now(dt.timezone.utc))
    notices = Notices()
    pipeline = Pipeline(
        sources=lambda vault: DirectoryVault(tmp_path / "vault", vault),
        jobs=OutboxQueue(tmp_path / "outbox"),
        audit=SqliteAuditLog(tmp_path / "audit.sqlite"),
        settings=PipelineSettings(trust=g.trust, revocation="off"),
        targets_file=parse_targets_json(json.dumps(TARGETS), "targets.json"),
        inventories=inventories,
        notifier=notices,
    )
    outcome = pipeline.process(parse_event(event("v2")))
    assert outcome.outcome == "queued", outcome.to_dict()
    [notice] = notices
    assert notice.severity == "info" and notice.details["issuer_change"]["expected"] is True
    assert notice.summary.startswith(
        "Renewal seen: issuer changed (R12 -> YR1): Let's Encrypt rotated R12 -> YR1 (Generation X -> Generation Y), "
        "expected. Stage on EX01, EX02"
    )
    assert outcome.to_dict()["diff"]["issuer_change"]["expected"] is True
    plan = outcome.request.plan
    intermediates = [i["subject"] for i in plan["certificate"]["intermediates"]]
    assert intermediates == ["CN=YR1, O=Let's Encrypt, C=US", "CN=Root YR, O=ISRG, C=US"]
    r12 = Certificate.from_der(g.r12.der).thumbprint
    org = ExchangeOrg(
        exchange(g.old),
        intermediates={"EX01": {r12}, "EX02": {r12}},
        importable={plan["certificate"]["thumbprint"]: facts(g.new, g.yr1, g.root_yr)},
    )
    org.apply_plan(plan)
    assert org.violations() == [] and org.exo_violations() == []


def test_the_plan_for_a_real_leaf_without_a_subject_blocks_with_the_fix(generation_y):
    bundle = real_chain("le-valid-yr-leaf.pem", "le-yr1.pem", "le-root-yr-by-x1.pem")
    assessment = assess(bundle, at=AT, revocation="off", offline=True)
    plan = plan_from_inventory(bundle, assessment, read_inventory(exchange(generation_y.old), "test"))
    assert plan.blocked is not None and "empty subject" in plan.blocked.reason
    assert "Let's Encrypt 'classic'" in plan.blocked.fix and "Key Vault certificate policy" in plan.blocked.fix
    assert [i.subject for i in plan.certificate.intermediates] == [
        "CN=YR1, O=Let's Encrypt, C=US",
        "CN=Root YR, O=ISRG, C=US",
    ]


@pytest.mark.parametrize(("lifetime", "severity", "renewal_due"), [(45, "info", True), (365, "warning", False)])
def test_key_vault_near_expiry_at_30_days_is_read_against_the_lifetime(
    generation_y, tmp_path, lifetime, severity, renewal_due
):
    from shared.adapters.local.outbox import OutboxQueue
    from shared.adapters.local.sqlite import SqliteAuditLog
    from shared.adapters.local.vault_directory import DirectoryVault
    from shared.pipeline.events import parse_event
    from shared.pipeline.process import Pipeline, PipelineSettings
    from tests.test_pipeline import NAME, event

    g = generation_y
    not_after = dt.datetime(2027, 6, 1, tzinfo=dt.timezone.utc)
    leaf = issue(
        make_name("mail.contoso.com", None, None),
        issuer=g.yr1,
        kind="rsa",
        dns_names=["mail.contoso.com"],
        not_before=not_after - dt.timedelta(days=lifetime),
        not_after=not_after,
    )
    folder = tmp_path / "vault" / NAME
    folder.mkdir(parents=True)
    (folder / "v2.pem").write_bytes(pem_of([leaf, g.yr1, g.root_yr]))
    notices = Notices()
    pipeline = Pipeline(
        sources=lambda vault: DirectoryVault(tmp_path / "vault", vault),
        jobs=OutboxQueue(tmp_path / "outbox"),
        audit=SqliteAuditLog(tmp_path / "audit.sqlite"),
        settings=PipelineSettings(trust=g.trust, revocation="off", at=not_after - dt.timedelta(days=30)),
        notifier=notices,
    )
    outcome = pipeline.process(parse_event(event("v2", event_type="CertificateNearExpiry")))
    [notice] = notices
    assert outcome.outcome == "expiry-warning" and notice.kind == "expiry-warning"
    assert notice.severity == severity and notice.details["renewal_due"] is renewal_due
    assert ("renewal due per policy" in notice.summary) is renewal_due
    assert notice.details["expiry_state"] == ("ok" if renewal_due else "warning")


def test_a_public_ca_s_certificate_with_client_auth_gets_the_dated_note(generation_y):
    from cryptography.x509.oid import ExtendedKeyUsageOID

    g = generation_y
    leaf = issue(
        make_name("mail.contoso.com", None, None),
        issuer=g.yr1,
        kind="rsa",
        dns_names=["mail.contoso.com"],
        eku=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    result = assess(load_certificates(pem_of([leaf, g.yr1, g.root_yr]), "t"), trust=g.trust, revocation="off")
    [note] = [f for f in result.findings if f.code == "client-auth-ending"]
    assert note.severity == "info" and result.status == "Valid"
    assert "1 March 2027" in note.message and "not confirmed" in note.message
