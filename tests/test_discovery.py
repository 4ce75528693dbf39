"""Discovery (shared/remediation/discovery.py): the read-only inventory runbook started and followed through
the Automation client against the HTTPS fake ARM, inventories stored in Table storage on Azurite (chunked)
and in SQLite, the HTTP function, the tracking queue, `certsync discover` (through a real process for
`--import`), and the reconciliation's hook."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import azure.functions as func
import pytest

import shared.wiring
from functions.discovery import start_discovery
from functions.remediation import track_remediation_job
from shared.adapters.azure.tables import CHUNK_CHARS, CHUNKS_PER_ROW, TableInventoryStore
from shared.adapters.local.sqlite import SqliteAuditLog, SqliteInventoryStore
from shared.cli.main import main
from shared.errors import CertsyncError, StorageError
from shared.remediation.automation import AutomationError
from shared.remediation.discovery import (
    INVENTORY_SCHEMA,
    Discovery,
    InventoryError,
    InventoryRecord,
    TrackDiscovery,
    audit_partition,
    check_inventory,
    check_worker_group,
    discovery_job_name,
    import_inventory,
    is_discovery_message,
    parse_inventory,
    parse_track_discovery,
)
from shared.wiring import discovery_from_env
from tests.automation_params import string_parameters
from tests.fakes.arm import FakeArm
from tests.test_remediation import FAST, Notices

ROOT = Path(__file__).resolve().parent.parent
GROUP = "hrw-exchange"
RUNBOOKS = ("Invoke-CertsyncRemediation", "Get-CertsyncInventory")
AT = dt.datetime(2026, 11, 26, 8, 0, tzinfo=dt.timezone.utc)


def inventory(**changes) -> dict:
    """A certsync.inventory/1 document as the runbook writes it (one of each kind)."""
    name = "<I>CN=R10, O=Let's Encrypt, C=US<S>CN=mail.contoso.com"
    return {
        "schema": INVENTORY_SCHEMA,
        "collected_at": "2026-11-26T07:59:00Z",
        "worker_group": GROUP,
        "servers": [
            {"Name": "EX01", "Fqdn": "ex01.contoso.local", "ServerRole": "Mailbox", "IsEdgeServer": False,
             "InternalTransportCertificateThumbprint": "5E1F" + "0" * 36},
        ],
        "certificates": [
            {"Server": "EX01", "Thumbprint": "0CB65935AF474E04D10597A12E9538959901A4C8",
             "Subject": "CN=mail.contoso.com", "Issuer": "CN=R10, O=Let's Encrypt, C=US", "Services": "IIS, SMTP",
             "Status": "Valid"},
        ],
        "send_connectors": [{"Identity": "Outbound to Office 365", "SourceTransportServers": ["EX01"],
                             "TlsCertificateName": name}],
        "receive_connectors": [{"Identity": "EX01\\Default Frontend EX01", "Server": "EX01",
                                "TlsCertificateName": name}],
        "hybrid_configuration": {"TlsCertificateName": name, "SendingTransportServers": ["EX01"]},
        "exo": None,
        "errors": [],
        **changes,
    }  # fmt: skip


@pytest.fixture
def arm(keyvault_tls):
    with FakeArm(keyvault_tls, runbooks=RUNBOOKS, worker_groups=(GROUP, "hrw-edge")) as fake:
        yield fake


@dataclasses.dataclass
class Setup:
    env: dict[str, str]
    discovery: Discovery
    notices: Notices
    arm: FakeArm
    connection_string: str

    def entries(self, group: str = GROUP) -> list:
        return list(self.discovery.audit.history(audit_partition(group)))

    def kinds(self, group: str = GROUP) -> list[str]:
        return [e.kind for e in self.entries(group)]

    def take(self) -> list[str]:
        from azure.storage.queue import QueueClient, TextBase64DecodePolicy

        queue = QueueClient.from_connection_string(
            self.connection_string, self.env["TRACKING_QUEUE"], message_decode_policy=TextBase64DecodePolicy()
        )
        messages = list(queue.receive_messages(max_messages=32, visibility_timeout=30))
        for message in messages:
            queue.delete_message(message)
        return [m.content for m in messages]


@pytest.fixture
def setup(azurite, arm) -> Setup:
    suffix = uuid.uuid4().hex[:8]
    env = {
        "JobsStorage": azurite.connection_string,
        "TRACKING_QUEUE": f"tracking-{suffix}",
        "AUDIT_TABLE": f"audit{suffix}",
        "INVENTORY_TABLE": f"inventory{suffix}",
        **arm.env,
    }
    notices = Notices()
    discovery = discovery_from_env(
        env, notifier=notices, automation_options={"credential": arm.credential, **arm.client_kwargs}
    )
    discovery.settings = dataclasses.replace(
        discovery.settings, timing=dataclasses.replace(discovery.settings.timing, **FAST)
    )
    return Setup(env, discovery, notices, arm, azurite.connection_string)


# --- the document and the job name ---------------------------------------------------------------------


def test_the_job_name_is_the_same_within_the_hour_and_differs_across_hours_and_groups():
    first = discovery_job_name(GROUP, AT)
    assert first == discovery_job_name(GROUP.upper(), AT + dt.timedelta(minutes=59))
    assert first != discovery_job_name(GROUP, AT + dt.timedelta(hours=1))
    assert first != discovery_job_name("hrw-edge", AT)
    assert str(uuid.UUID(first)) == first
    with pytest.raises(CertsyncError, match="positive duration"):
        discovery_job_name(GROUP, AT, dt.timedelta(0))


@pytest.mark.parametrize("name", ["", " ", "a/b", "x" * 200, "grp;rm"])
def test_a_worker_group_name_automation_would_not_have_is_refused(name):
    with pytest.raises(CertsyncError, match="not a Hybrid Runbook Worker group name"):
        check_worker_group(name)


def test_a_hand_saved_inventory_without_schema_and_with_single_objects_is_taken():
    document = check_inventory({"servers": {"Name": "EX01"}, "exo": {"accepted_domains": {"DomainName": "x"}}}, "f")
    assert document["servers"] == [{"Name": "EX01"}] and document["send_connectors"] == []
    assert document["exo"]["accepted_domains"] == [{"DomainName": "x"}] and document["exo"]["inbound_connectors"] == []
    assert check_inventory(inventory(), "f")["hybrid_configuration"]["SendingTransportServers"] == ["EX01"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "f: not a JSON object"),
        ({"schema": "certsync.result/1", "servers": []}, "schema 'certsync.result/1' is not certsync.inventory/1"),
        ({"steps": []}, "none of the inventory's keys"),
        ({"servers": ["EX01"]}, "f: servers is not a list of objects"),
        ({"servers": "EX01"}, "f: servers is not a list of objects"),
        ({"hybrid_configuration": []}, "hybrid_configuration is not an object or null"),
        ({"exo": {"inbound_connectors": [1]}}, "exo.inbound_connectors is not a list of objects"),
        ({"servers": [], "worker_group": 3}, "worker_group is not a string"),
        ({"servers": [], "collected_at": "yesterday"}, "collected_at 'yesterday' is not an ISO 8601 time"),
    ],
)
def test_a_document_not_shaped_like_an_inventory_is_refused_naming_the_key(data, message):
    with pytest.raises(InventoryError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        check_inventory(data, "f")
    assert "\n" not in str(caught.value)


def test_the_inventory_is_the_last_output_line_or_a_whole_multiline_file():
    line = json.dumps(inventory())
    assert parse_inventory(f"Reading EX01\r\n\ufeff{line}\r\n\r\n", "job")["worker_group"] == GROUP
    assert parse_inventory(json.dumps(inventory(), indent=4), "file")["servers"][0]["Name"] == "EX01"
    with pytest.raises(InventoryError, match="job: empty"):
        parse_inventory(" \r\n", "job")
    with pytest.raises(InventoryError, match="job: not JSON"):
        parse_inventory("WARNING: something\n{oops", "job")


# --- the job, on the fake ARM and Azurite ---------------------------------------------------------------


def test_a_start_is_idempotent_within_the_hour(setup):
    first = setup.discovery.start(GROUP)
    again = setup.discovery.start(GROUP)
    assert (first.outcome, again.outcome) == ("started", "found")
    assert first.automation_job == again.automation_job == discovery_job_name(GROUP, dt.datetime.now(dt.timezone.utc))
    puts = [r for r in setup.arm.requests if r[0] == "PUT"]
    assert len(puts) == 1
    body = json.loads(puts[0][3])
    assert body["properties"]["runbook"]["name"] == "Get-CertsyncInventory"
    assert body["properties"]["runOn"] == GROUP
    # what the runbook's [string] parameter receives once Automation decoded the value as JSON
    assert string_parameters(body) == {"WorkerGroup": GROUP}
    assert setup.kinds() == ["discovery-started"]
    assert [json.loads(m)["schema"] for m in setup.take()] == ["certsync.discovery-track/1"]


def test_a_completed_job_is_tracked_until_its_inventory_is_stored(setup):
    setup.arm.script(["New", "Running", "Completed"], output="Reading EX01\n" + json.dumps(inventory()) + "\n")
    setup.discovery.start(GROUP)
    outcomes = []
    for _ in range(10):
        messages = setup.take()
        if not messages:
            break
        assert all(is_discovery_message(m) for m in messages)
        outcomes += [setup.discovery.track(m).outcome for m in messages]
    assert outcomes == ["running", "running", "stored"]
    record = setup.discovery.store.get(GROUP.upper())
    assert record is not None and record.inventory["servers"][0]["Name"] == "EX01"
    assert record.collected_at == dt.datetime(2026, 11, 26, 7, 59, tzinfo=dt.timezone.utc)
    assert record.source == "runbook" and record.errors == []
    assert setup.kinds() == ["discovery-started", "discovery-result"]
    assert "1 server(s), 1 send connector(s), 0 error(s)" in setup.entries()[-1].summary
    assert setup.notices.kinds() == []


def test_servers_discovery_could_not_read_are_kept_with_the_inventory(setup):
    errors = [{"where": "EX02", "message": "Get-ExchangeCertificate: The RPC server is unavailable."}]
    setup.arm.script(["Completed"], output=json.dumps(inventory(errors=errors)))
    started = setup.discovery.start(GROUP)
    outcome = setup.discovery.poll(GROUP, started.automation_job)
    assert outcome.outcome == "stored" and outcome.record is not None
    assert outcome.record.errors == errors
    assert "EX02: Get-ExchangeCertificate" in setup.entries()[-1].summary
    assert setup.entries()[-1].details["errors"] == errors


def test_a_failed_job_is_audited_and_notified_with_its_errors(setup):
    setup.arm.script(["Failed"], exception="The Exchange Management Shell is not available on HRW01",
                     error_streams=["Get-ExchangeServer: access denied"])  # fmt: skip
    started = setup.discovery.start(GROUP)
    outcome = setup.discovery.poll(GROUP, started.automation_job)
    assert outcome.outcome == "failed" and outcome.status == "Failed"
    assert "Management Shell is not available" in outcome.reason and "access denied" in outcome.reason
    [entry] = [e for e in setup.entries() if e.kind == "discovery-failed"]
    assert entry.details["stage"] == "job" and entry.details["worker_group"] == GROUP
    assert setup.notices.kinds() == ["discovery-failed"]
    assert setup.notices[0].certificate == "discovery/hrw-exchange"
    assert setup.discovery.store.get(GROUP) is None


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ("", "Output: empty"),
        ("Get-ExchangeServer : The term is not recognized\r\n", "Output: not JSON"),
        (json.dumps({"schema": "certsync.result/1", "status": "failed"}), "is not certsync.inventory/1"),
        (json.dumps(inventory(worker_group="hrw-edge")), "is of worker group 'hrw-edge', not 'hrw-exchange'"),
        (json.dumps(inventory(servers="EX01")), "servers is not a list of objects"),
    ],
)
def test_a_malformed_output_is_audited_with_a_one_line_reason_and_nothing_stored(setup, output, reason):
    setup.arm.script(["Completed"], output=output)
    started = setup.discovery.start(GROUP)
    outcome = setup.discovery.poll(GROUP, started.automation_job)
    assert outcome.outcome == "malformed" and reason in outcome.reason and "\n" not in outcome.reason
    [entry] = [e for e in setup.entries() if e.kind == "discovery-failed"]
    assert entry.details["reason"] == "malformed" and reason in entry.summary
    assert setup.notices.kinds() == ["discovery-failed"]
    assert setup.discovery.store.get(GROUP) is None


def test_the_validation_seam_refuses_what_the_full_check_refuses(setup):
    def validate(document: dict) -> object:
        if any(c.get("Status") != "Valid" for c in document["certificates"]):
            raise CertsyncError("certificates[0].Status: not a certificate status")
        return document

    setup.discovery.validate = validate
    bad = inventory()
    bad["certificates"][0]["Status"] = 7
    setup.arm.script(["Completed"], output=json.dumps(bad))
    started = setup.discovery.start(GROUP)
    outcome = setup.discovery.poll(GROUP, started.automation_job)
    assert outcome.outcome == "malformed" and outcome.reason.endswith(
        "certificates[0].Status: not a certificate status"
    )


def test_a_start_automation_refuses_is_audited_and_raised(setup):
    with pytest.raises(AutomationError) as caught:
        setup.discovery.start("hrw-unknown")
    assert caught.value.status == 400 and not caught.value.transient
    assert setup.kinds("hrw-unknown") == ["discovery-failed"]
    assert setup.notices.kinds() == ["discovery-failed"]


def test_tracking_retries_a_transient_failure_and_stops_on_a_permanent_one(setup):
    setup.arm.script(["Running"])
    started = setup.discovery.start(GROUP)
    [message] = setup.take()
    setup.arm.fail_next(503, method="GET")
    assert setup.discovery.track(message).outcome == "retry"
    [again] = setup.take()
    assert json.loads(again)["failures"] == 1
    setup.arm.fail_next(403, method="GET")
    outcome = setup.discovery.track(again)
    assert outcome.outcome == "failed" and "cannot be read" in outcome.reason
    assert setup.take() == [] and setup.kinds()[-1] == "discovery-failed"
    assert started.automation_job in outcome.reason


def test_tracking_gives_up_after_its_time_and_says_so(setup):
    setup.discovery.start(GROUP)
    [message] = setup.take()
    setup.discovery.clock = lambda: dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=7)
    outcome = setup.discovery.track(message)
    assert outcome.outcome == "gave-up" and "did not end within 6 h" in outcome.reason
    assert setup.kinds()[-1] == "discovery-failed"


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        json.dumps({"schema": "certsync.track/1"}),
        json.dumps({"schema": "certsync.discovery-track/1", "worker_group": GROUP, "automation_job": "x",
                    "started_at": "2026-11-26T08:00:00Z"}),
        json.dumps({"schema": "certsync.discovery-track/1", "worker_group": GROUP, "started_at": "soon"}),
    ],
)  # fmt: skip
def test_a_malformed_tracking_message_is_rejected_not_retried(setup, text):
    assert setup.discovery.track(text).outcome == "rejected"
    with pytest.raises(CertsyncError, match=r"it is not retried|is not a GUID"):
        parse_track_discovery(text)


def test_a_tracking_message_round_trips():
    message = TrackDiscovery(GROUP, str(uuid.uuid4()), AT, polls=3, failures=1)
    assert parse_track_discovery(message.to_json()) == message
    assert is_discovery_message(message.to_json()) and not is_discovery_message('{"schema": "certsync.track/1"}')


def test_the_tracking_function_hands_discovery_messages_to_discovery(setup, monkeypatch):
    monkeypatch.setattr(shared.wiring, "azure_discovery", lambda: setup.discovery)
    monkeypatch.setattr(shared.wiring, "azure_remediation", lambda: pytest.fail("remediation got a discovery message"))
    setup.arm.script(["Completed"], output=json.dumps(inventory()))
    setup.discovery.start(GROUP)
    [text] = setup.take()
    track_remediation_job(func.QueueMessage(id="m1", body=text.encode()))
    assert setup.discovery.store.get(GROUP) is not None


# --- the HTTP function ------------------------------------------------------------------------------------


def post(group: str) -> func.HttpResponse:
    request = func.HttpRequest(
        "POST", f"/api/discover/{group}", headers={}, params={}, route_params={"worker_group": group}, body=b""
    )
    return start_discovery(request)


def test_the_http_function_starts_discovery_once_per_hour(setup, monkeypatch):
    monkeypatch.setattr(shared.wiring, "azure_discovery", lambda: setup.discovery)
    first, again = post(GROUP), post(GROUP)
    assert (first.status_code, again.status_code) == (202, 202)
    assert [json.loads(r.get_body())["outcome"] for r in (first, again)] == ["started", "found"]
    assert json.loads(first.get_body())["automation_job"] == json.loads(again.get_body())["automation_job"]


def test_the_http_function_answers_400_for_a_bad_name_and_502_or_503_when_automation_refuses(setup, monkeypatch):
    monkeypatch.setattr(shared.wiring, "azure_discovery", lambda: setup.discovery)
    assert post("a;b").status_code == 400
    assert post("hrw-unknown").status_code == 502
    setup.arm.fail_next(503, count=6)
    response = post(GROUP)
    assert response.status_code == 503 and "error" in json.loads(response.get_body())


def test_the_http_function_names_a_missing_setting_with_503(monkeypatch):
    monkeypatch.setattr(shared.wiring, "azure_discovery", lambda: shared.wiring.discovery_from_env({}))
    response = post(GROUP)
    assert response.status_code == 503 and "JobsStorage is not set" in json.loads(response.get_body())["error"]


# --- the stores ---------------------------------------------------------------------------------------------


def large_inventory(servers: int = 1200) -> dict:
    """Far more than one Table property (64 KiB) and one entity (1 MiB) hold, with non-BMP text."""
    document = inventory()
    document["certificates"] = [
        {"Server": f"EX{i:03d}", "Thumbprint": f"{i:040X}", "Subject": f"CN=mail{i}.contoso.com, O=Ünïcødé 𝔘",
         "Issuer": "CN=R10, O=Let's Encrypt, C=US", "CertificateDomains": [f"d{j}.contoso.com" for j in range(40)]}
        for i in range(servers)
    ]  # fmt: skip
    return document


def table(azurite):
    from azure.data.tables import TableClient

    return TableClient.from_connection_string(azurite.connection_string, f"inv{uuid.uuid4().hex[:8]}")


def record(document: dict, group: str = GROUP, **changes) -> InventoryRecord:
    return InventoryRecord(group, AT - dt.timedelta(minutes=1), AT, document, **changes)


def test_a_large_inventory_round_trips_through_table_chunks_and_replaces_the_last(azurite):
    client = table(azurite)
    store = TableInventoryStore(client)
    assert store.get(GROUP) is None and store.all() == []
    big = large_inventory()
    size = len(json.dumps(big, ensure_ascii=False))
    assert size > 2 * CHUNK_CHARS * CHUNKS_PER_ROW  # at least three rows
    store.put(record(big))
    back = store.get(GROUP.upper())
    assert back is not None and back.inventory == big and back.collected_at == AT - dt.timedelta(minutes=1)
    rows = list(client.query_entities("PartitionKey eq @pk", parameters={"pk": GROUP}))
    assert len(rows) == 1 + -(-size // (CHUNK_CHARS * CHUNKS_PER_ROW))
    small = inventory(errors=[{"where": "EX02", "message": "unreachable"}])
    store.put(record(small, source="import"))
    store.put(record(inventory(), group="hrw-edge"))
    rows = list(client.query_entities("PartitionKey eq @pk", parameters={"pk": GROUP}))
    assert len(rows) == 2  # the earlier generation's chunks are gone
    assert [(r.worker_group, r.source, len(r.errors)) for r in store.all()] == [
        ("hrw-edge", "runbook", 0),
        (GROUP, "import", 1),
    ]


def test_a_table_inventory_with_a_missing_chunk_is_an_error_not_half_a_document(azurite):
    client = table(azurite)
    store = TableInventoryStore(client)
    store.put(record(large_inventory()))
    chunk = next(
        r for r in client.query_entities("PartitionKey eq @pk", parameters={"pk": GROUP}) if r["RowKey"] != "meta"
    )
    client.delete_entity(GROUP, chunk["RowKey"])
    with pytest.raises(StorageError, match=r"incomplete .* run discovery again"):
        store.get(GROUP)


def test_the_sqlite_store_keeps_the_latest_per_group(tmp_path):
    store = SqliteInventoryStore(tmp_path / "inventory.sqlite")
    big = large_inventory(50)
    store.put(record(big))
    store.put(record(inventory(), group="HRW-Edge"))
    store.put(record(inventory(errors=[{"where": "Get-SendConnector", "message": "denied"}])))
    assert store.get("hrw-exchange").errors == [{"where": "Get-SendConnector", "message": "denied"}]
    assert [r.worker_group for r in store.all()] == ["HRW-Edge", GROUP]
    assert store.get("nobody") is None
    store.close()


def test_a_stored_record_without_valid_times_says_to_discover_again():
    with pytest.raises(InventoryError, match="no valid times; discover again"):
        InventoryRecord.from_meta({"worker_group": GROUP, "collected_at": "x"}, {})


def test_an_import_checks_the_group_and_falls_back_to_the_file_time(tmp_path):
    store = SqliteInventoryStore(tmp_path / "inventory.sqlite")
    document = inventory()
    del document["collected_at"], document["schema"]
    stored = import_inventory(store, json.dumps(document), GROUP, where="inv.json", now=AT, collected_fallback=AT)
    assert stored.collected_at == AT and stored.source == "import"
    with pytest.raises(InventoryError, match=r"inv\.json: the inventory is of worker group"):
        import_inventory(store, json.dumps(document), "hrw-edge", where="inv.json", now=AT, collected_fallback=AT)


# --- the command line ----------------------------------------------------------------------------------------


def certsync(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOMATION_", "CERTSYNC_", "JobsStorage"))}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "shared.cli.main", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_discover_import_through_a_real_process(tmp_path):
    saved = tmp_path / "inventory.json"
    document = inventory(errors=[{"where": "EX02", "message": "Get-ExchangeCertificate: RPC"}])
    saved.write_text(json.dumps(document, indent=4), encoding="utf-16")  # PowerShell 5.1's Out-File default
    done = certsync("discover", "--import", str(saved), "--worker-group", GROUP, "--json", cwd=tmp_path)
    assert done.returncode == 1, done.stderr  # stored, with a server it could not read
    printed = json.loads(done.stdout)
    assert printed["outcome"] == "stored" and printed["errors"] == document["errors"]
    store = SqliteInventoryStore(tmp_path / "certsync-inventory.sqlite")
    assert store.get(GROUP).inventory["send_connectors"] == document["send_connectors"]
    saved.write_text(json.dumps(inventory()), encoding="utf-8")
    done = certsync("discover", "--import", str(saved), "--worker-group", GROUP, cwd=tmp_path)
    assert done.returncode == 0 and "every server and cmdlet answered" in done.stdout
    assert store.get(GROUP).errors == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--import", "missing.json", "--worker-group", GROUP], "missing.json: cannot read it"),
        (["--import", "bad.json", "--worker-group", GROUP], "bad.json: not JSON"),
        (["--import", "bad.json"], "--import needs --worker-group G"),
        ([GROUP, "--import", "bad.json"], "not both"),
        (["--worker-group", GROUP], "--worker-group goes with --import"),
        ([], "give WORKER_GROUP"),
        ([GROUP, "--timeout", "0"], "--timeout and --poll-interval"),
        ([GROUP], "AUTOMATION_ACCOUNT_ID is not set"),
    ],
)
def test_discover_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "bad.json").write_bytes(b"\xef\xbb\xbfWARNING: not json")
    done = certsync("discover", *args, cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def discover_through(arm: FakeArm, monkeypatch: pytest.MonkeyPatch) -> None:
    """`certsync discover` in this process reaches Automation at the loopback ARM (its settings and client)."""
    for name, value in arm.env.items():
        monkeypatch.setenv(name, value)
    local = shared.wiring.local_discovery

    def with_fake_arm(**kwargs):
        return local(**kwargs, automation_options={"credential": arm.credential, **arm.client_kwargs})

    monkeypatch.setattr(shared.wiring, "local_discovery", with_fake_arm)


def test_discover_runs_the_job_and_waits_for_it(arm, tmp_path, monkeypatch, capsys):
    discover_through(arm, monkeypatch)
    inventory_file, audit = str(tmp_path / "inv.sqlite"), str(tmp_path / "audit.sqlite")
    common = ["--inventory", inventory_file, "--audit", audit, "--poll-interval", "0.01"]
    arm.script(["New", "Running", "Completed"], output=json.dumps(inventory()))
    assert main(["discover", GROUP, "--json", *common]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["outcome"] == "stored" and printed["inventory"]["worker_group"] == GROUP
    kinds = [e.kind for e in SqliteAuditLog(audit).history(audit_partition(GROUP))]
    assert kinds == ["discovery-started", "discovery-result"]
    # Within the hour the same job is found again (not started twice); it is still Completed.
    assert main(["discover", GROUP, *common]) == 0
    assert "Outcome        stored" in capsys.readouterr().out
    assert len([r for r in arm.requests if r[0] == "PUT"]) == 1


def test_discover_says_when_the_job_did_not_end_in_time(arm, tmp_path, monkeypatch, capsys):
    for name, value in arm.env.items():
        monkeypatch.setenv(name, value)
    local = shared.wiring.local_discovery
    monkeypatch.setattr(
        shared.wiring,
        "local_discovery",
        lambda **kw: local(**kw, automation_options={"credential": arm.credential, **arm.client_kwargs}),
    )
    arm.script(["Running"])
    args = ["--inventory", str(tmp_path / "i.sqlite"), "--audit", str(tmp_path / "a.sqlite")]
    assert main(["discover", GROUP, "--timeout", "0.05", "--poll-interval", "0.01", *args]) == 1
    out = capsys.readouterr().out
    assert "timed-out" in out and "run the same command again within the hour" in out


def test_discover_import_in_process_prints_what_it_stored(tmp_path, capsys):
    saved = tmp_path / "inventory.json"
    saved.write_bytes(b"\xef\xbb\xbf" + json.dumps(inventory(errors=[{"where": "EX02", "message": "RPC"}])).encode())
    store = str(tmp_path / "inv.sqlite")
    assert main(["discover", "--import", str(saved), "--worker-group", GROUP, "--inventory", store]) == 1
    out = capsys.readouterr().out
    assert f"Stored the inventory of {GROUP}" in out and "Not read       EX02: RPC" in out
    saved.write_bytes(b"\xff\xfe" + "{}".encode("utf-16-le"))
    assert main(["discover", "--import", str(saved), "--worker-group", GROUP, "--inventory", store]) == 2
    assert "none of the inventory's keys" in capsys.readouterr().err
    saved.write_bytes(b"\x80\x81 not text")
    assert main(["discover", "--import", str(saved), "--worker-group", GROUP, "--inventory", store, "--json"]) == 2
    assert "not UTF-8 or UTF-16 text" in capsys.readouterr().err
