"""The Event Grid and history functions on their Azure adapters: events decoded by the azure-functions
library's own converter, the real Key Vault SDK clients against the local HTTPS Key Vault test server,
the jobs queue and the audit tables in Azurite, CRLs on loopback. What the host would see: a settled
event returns, an unsettled one raises (Event Grid retries it, then dead-letters it)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import socket
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func
import pytest
from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter

import shared.settings
import shared.wiring
from functions.pipeline import certificate_history, envelope, keyvault_certificate_events
from shared.adapters.azure.tables import TableAuditLog
from shared.errors import CertsyncError, StorageError
from shared.pipeline.audit import AuditEntry
from shared.pipeline.process import rejected_partition
from shared.pipeline.sources import SourceError
from shared.wiring import audit_from_env, pipeline_from_env, storage_from_env
from tests.azurite import Azurite, queued_json
from tests.chains import MAIL_HOSTS, Issued, renewal_pki, unprotected_pfx
from tests.fakes.keyvault import FakeKeyVault
from tests.inventories import SEND, exchange, keep
from tests.servers import HttpServer

NAME = "exch-hybrid-smtp"
T0 = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc)
VAULT = "contoso-kv"
HOSTS = MAIL_HOSTS


def app_settings(
    azurite: Azurite,
    keyvault: FakeKeyVault,
    http_server: HttpServer,
    tmp_path: Path,
    root: Issued,
    certificates: dict[str, dict],
) -> dict[str, str]:
    """The Function App's settings for a deployment on loopback: Storage in Azurite (a queue and tables of
    its own), vault `VAULT` at the Key Vault fake, `root` as the only trust anchor and `certificates` as
    the targets file (both written to `tmp_path`), CRLs on `http_server` let through the SSRF guard."""
    (tmp_path / "root.pem").write_bytes(root.pem)
    targets = {"schema": "certsync.targets/1", "certificates": certificates}
    (tmp_path / "targets.json").write_text(json.dumps(targets))
    suffix = uuid.uuid4().hex[:8]
    return {
        "JobsStorage": azurite.connection_string,
        "REMEDIATION_QUEUE": f"jobs-{suffix}",
        "AUDIT_TABLE": f"audit{suffix}",
        "JOB_CLAIMS_TABLE": f"claims{suffix}",
        "STATE_TABLE": f"state{suffix}",
        "INVENTORY_TABLE": f"inventory{suffix}",
        "CERTSYNC_VAULTS": VAULT,
        "CERTSYNC_VAULT_URLS": f"{VAULT}={keyvault.vault_url}",
        "CERTSYNC_TARGETS_FILE": str(tmp_path / "targets.json"),
        "CERTSYNC_TRUST_FILE": str(tmp_path / "root.pem"),
        "CERTSYNC_ALLOW_HOSTS": f"127.0.0.1:{http_server.port}",
    }


@dataclass
class Deployment:
    env: dict
    pipeline: object
    keyvault: object
    versions: list[str]
    connection_string: str
    first: Issued  # the first version's leaf: what Exchange uses before the renewal

    def deliver(self, version: str, *, schema: str = "EventGrid", vault: str = VAULT, **data_changes) -> None:
        data = {
            "Id": f"https://{vault}.vault.azure.net/certificates/{NAME}/{version}",
            "VaultName": vault,
            "ObjectType": "Certificate",
            "ObjectName": NAME,
            "Version": version,
            "NBF": 1777622400,
            "EXP": 1809158400,
        } | data_changes
        data = {k: v for k, v in data.items() if v is not None}
        source = f"/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/{vault}"
        kind = "Microsoft.KeyVault.CertificateNewVersionCreated"
        if schema == "CloudEvents":
            body = {
                "specversion": "1.0",
                "id": str(uuid.uuid4()),
                "source": source,
                "type": kind,
                "subject": NAME,
                "time": "2026-11-26T08:00:00Z",
                "data": data,
            }
        else:
            body = {
                "id": str(uuid.uuid4()),
                "topic": source,
                "subject": NAME,
                "eventType": kind,
                "eventTime": "2026-11-26T08:00:00.1234567Z",
                "data": data,
                "dataVersion": "1",
                "metadataVersion": "1",
            }
        self.deliver_raw(body)

    def deliver_raw(self, body: dict) -> None:
        """`body` as Event Grid posts it, decoded by the library's converter, through the trigger."""
        event = EventGridEventInConverter.decode(meta.Datum(json.dumps(body), "json"), trigger_metadata={})
        keyvault_certificate_events(event)

    def messages(self) -> list[dict]:
        return queued_json(self.connection_string, self.env["REMEDIATION_QUEUE"])

    def history(self, name: str = NAME) -> tuple[int, dict]:
        request = func.HttpRequest(
            "GET", f"/api/certificates/{name}/history", headers={}, params={}, route_params={"name": name}, body=b""
        )
        response = certificate_history(request)
        return response.status_code, json.loads(response.get_body())

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.history()[1]["entries"]]


@pytest.fixture
def deployment(azurite, keyvault, http_server, tmp_path: Path, monkeypatch) -> Deployment:
    pki = renewal_pki(http_server)
    versions = []
    leaves = [pki.leaf(inter) for inter in (pki.inter_a, pki.inter_b)]
    for leaf, inter in zip(leaves, (pki.inter_a, pki.inter_b), strict=True):
        data = unprotected_pfx(leaf, inter)
        versions.append(keyvault.add_version(NAME, data, tags={"certsync-servers": "EX01"}))
    target = {
        "worker_group": "hrw-exchange",
        "servers": ["EX01"],
        "send_connectors": [SEND],
        "hosts": HOSTS,
    }
    env = app_settings(azurite, keyvault, http_server, tmp_path, pki.root, {NAME: target})
    options = {"credential": keyvault.credential, **keyvault.client_kwargs}
    pipeline = pipeline_from_env(env, keyvault_options=options)
    # Exchange uses the first version on EX01, read just now (INVENTORY_TABLE on Azurite)
    keep(pipeline.inventories, exchange(leaves[0], servers=("EX01",)), collected=dt.datetime.now(dt.timezone.utc))
    monkeypatch.setattr(shared.wiring, "azure_pipeline", lambda: pipeline)
    monkeypatch.setattr(shared.wiring, "azure_audit", lambda: pipeline.audit)
    return Deployment(env, pipeline, keyvault, versions, azurite.connection_string, leaves[0])


def test_a_new_version_event_queues_one_job_and_the_trail_is_served(deployment):
    deployment.deliver(deployment.versions[1])
    [job] = deployment.messages()
    assert job["version"] == deployment.versions[1] and job["vault"] == VAULT
    plan = job["plan"]
    assert plan["schema"] == "certsync.plan/2" and plan["servers"] == ["EX01"] and plan["blocked"] is None
    assert plan["inventory"]["worker_group"] == "hrw-exchange"
    assert {s["action"] for s in plan["steps"] if s["phase"] == "switch"} == {
        "set-send-connector",
        "set-receive-connector",
        "set-hybrid-configuration",
    }
    assert job["secret_id"].endswith(f"/secrets/{NAME}/{deployment.versions[1]}")
    status, body = deployment.history()
    assert status == 200 and body["certificate"] == NAME
    assert [e["kind"] for e in body["entries"]] == ["event-received", "assessment", "plan", "job-queued"]
    assert len({e["correlation_id"] for e in body["entries"]}) == 1
    assert body["entries"][1]["details"]["assessment"]["status"] == "Valid"


def test_the_cloudevents_schema_is_processed_the_same(deployment):
    deployment.deliver(deployment.versions[1], schema="CloudEvents")
    assert [m["version"] for m in deployment.messages()] == [deployment.versions[1]]


def test_duplicate_delivery_sends_one_message(deployment):
    for _ in range(3):
        deployment.deliver(deployment.versions[1])
    assert len(deployment.messages()) == 1
    assert deployment.kinds().count("duplicate") == 2


def test_an_event_from_a_vault_off_the_allow_list_is_acknowledged_and_audited(deployment):
    deployment.deliver(deployment.versions[1], vault="other-kv")  # returns: Event Grid is done with it
    assert deployment.messages() == []
    assert deployment.kinds() == ["event-received", "event-ignored"]


def test_a_malformed_event_is_acknowledged_after_its_audit_entry(deployment):
    deployment.deliver("x", Version=None, Id=f"https://{VAULT}.vault.azure.net/certificates/{NAME}")  # returns
    assert deployment.kinds() == ["event-received", "event-rejected"]
    assert "has no Version" in deployment.history()[1]["entries"][-1]["summary"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"id": "e1", "subject": "a/b", "data": {}}, "has no eventType"),
        (
            {"id": "e2", "eventType": "x", "subject": "a b", "data": {"Id": "https://[::1/certificates/a/b"}},
            "is not a URL",
        ),
        ({"id": "e3", "eventType": "x", "data": "[" * 50_000 + "]" * 50_000}, "data is a string that is not JSON"),
    ],
)
def test_an_unreadable_event_is_acknowledged_and_audited_under_a_synthetic_key(deployment, body, reason):
    deployment.deliver_raw(body)  # returns: Event Grid would only redeliver the same bytes for 24 h
    delivered = envelope(EventGridEventInConverter.decode(meta.Datum(json.dumps(body), "json"), trigger_metadata={}))
    [rejected] = deployment.pipeline.audit.history(rejected_partition(delivered))
    assert rejected.kind == "event-rejected" and reason in rejected.summary and rejected.event_id == body["id"]
    assert deployment.messages() == []


def test_storage_down_while_rejecting_still_raises_for_redelivery(deployment, monkeypatch):
    def down(entry):
        raise StorageError("audit table x: storage unreachable")

    monkeypatch.setattr(deployment.pipeline.audit, "record", down)
    with pytest.raises(StorageError):
        deployment.deliver_raw({"id": "e1", "data": {}})


@pytest.mark.parametrize(
    ("status", "code", "kind", "transient"),
    [
        (404, "SecretNotFound", "not-found", False),
        (403, "Forbidden", "forbidden", True),
        (500, "InternalError", "unavailable", True),
    ],
)
def test_key_vault_failures_are_audited_and_raised_only_when_asking_again_may_help(
    deployment, status, code, kind, transient
):
    deployment.keyvault.fail(f"/secrets/{NAME}", status, code)
    if transient:
        with pytest.raises(SourceError) as caught:
            deployment.deliver(deployment.versions[1])
        assert (caught.value.kind, caught.value.transient) == (kind, transient)
    else:
        deployment.deliver(deployment.versions[1])  # acknowledged: a version Key Vault does not have stays so
    _, body = deployment.history()
    failed = body["entries"][-1]
    assert failed["kind"] == "event-failed" and failed["details"] == {"error": kind, "transient": transient}
    assert VAULT in failed["summary"] and deployment.messages() == []
    deployment.keyvault.clear_failures()  # the retry Event Grid makes later goes through
    deployment.deliver(deployment.versions[1])
    assert len(deployment.messages()) == 1


def test_history_refuses_a_name_key_vault_cannot_hold(deployment):
    status, body = deployment.history("no_such name")
    assert status == 400 and "Key Vault names" in body["error"]


def test_settings_errors_name_the_setting(monkeypatch):
    with pytest.raises(CertsyncError, match="CERTSYNC_VAULTS is not set"):
        shared.wiring.settings_from_env({})
    with pytest.raises(CertsyncError, match="CERTSYNC_VAULT_URLS item"):
        shared.settings.load({"CERTSYNC_VAULT_URLS": "contoso-kv=http://plain"})


def test_queue_messages_are_base64_of_the_job_json(deployment):
    from azure.storage.queue import QueueClient

    deployment.deliver(deployment.versions[1])
    raw = QueueClient.from_connection_string(deployment.connection_string, deployment.env["REMEDIATION_QUEUE"])
    [message] = raw.peek_messages()
    assert json.loads(base64.b64decode(message.content))["schema"] == "certsync.job/1"


# --- the history function's pages ------------------------------------------------------------------


@pytest.fixture
def trail(azurite: Azurite, monkeypatch) -> TableAuditLog:
    """Ten entries of NAME a minute apart in an audit table of Azurite, served by the history function."""
    audit = audit_from_env({"JobsStorage": azurite.connection_string, "AUDIT_TABLE": f"audit{uuid.uuid4().hex[:8]}"})
    assert isinstance(audit, TableAuditLog)
    for i in range(10):
        at = T0 + dt.timedelta(minutes=i)
        audit.record(AuditEntry(NAME, "assessment", f"corr-{i}", f"entry {i}", at=at, details={"i": i}))
    monkeypatch.setattr(shared.wiring, "azure_audit", lambda: audit)
    return audit


def get_history(params: dict[str, str], url: str = f"/api/certificates/{NAME}/history") -> tuple[int, dict]:
    request = func.HttpRequest("GET", url, headers={}, params=params, route_params={"name": NAME}, body=b"")
    response = certificate_history(request)
    return response.status_code, json.loads(response.get_body())


def test_history_pages_follow_next_links_to_every_entry_once(trail):
    status, body = get_history({"limit": "4"})
    seen = [e["details"]["i"] for e in body["entries"]]
    pages = 1
    while "next" in body:
        url = urlsplit(body["next"])
        assert url.path == f"/api/certificates/{NAME}/history" and not url.netloc
        status, body = get_history(dict(parse_qsl(url.query)), body["next"])
        assert status == 200
        seen += [e["details"]["i"] for e in body["entries"]]
        pages += 1
    assert seen == list(range(10)) and pages == 3


def test_history_since_selects_from_that_time_and_without_limit_all_fit(trail):
    status, body = get_history({"since": "2026-11-26T12:07:00Z"})
    assert status == 200 and [e["details"]["i"] for e in body["entries"]] == [7, 8, 9]
    assert "next" not in body
    _, everything = get_history({})
    assert len(everything["entries"]) == 10 and "next" not in everything


def test_a_page_that_ends_exactly_at_the_last_entry_has_no_next(trail):
    _, body = get_history({"limit": "10"})
    assert len(body["entries"]) == 10 and "next" not in body


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"limit": "0"}, "limit '0': give a whole number from 1 to 1000"),
        ({"limit": "1001"}, "limit '1001'"),
        ({"limit": "many"}, "limit 'many'"),
        ({"since": "yesterday"}, "since 'yesterday': not an ISO 8601 time"),
        ({"after": "not-a-token"}, "continuation 'not-a-token'"),
    ],
)
def test_history_refuses_a_malformed_parameter_naming_it(trail, params, words):
    status, body = get_history(params)
    assert status == 400 and words in body["error"]


def test_history_a_store_failure_is_503_naming_the_table(azurite, monkeypatch):
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    table_port = urlsplit(azurite.connection_string.split("TableEndpoint=")[1].split(";")[0]).port
    dead = storage_from_env({"JobsStorage": azurite.connection_string.replace(f":{table_port}/", f":{port}/")})
    audit = TableAuditLog(dead.table_client("auditgone", retry_total=0))
    monkeypatch.setattr(shared.wiring, "azure_audit", lambda: audit)
    status, body = get_history({"limit": "5"})
    assert status == 503 and "audit table auditgone" in body["error"]


def test_without_an_inventory_the_function_starts_discovery_and_plans_once_it_is_stored(
    deployment, keyvault_tls, monkeypatch
):
    """The Function App's wiring end to end: no inventory of the worker group -> the discovery runbook is
    started on the ARM fake and the version waits; the job's inventory stored -> the version is queued."""
    from tests.fakes.arm import FakeArm

    with FakeArm(keyvault_tls, runbooks=("Get-CertsyncInventory",), worker_groups=("hrw-exchange",)) as arm:
        suffix = uuid.uuid4().hex[:8]
        env = deployment.env | arm.env | {"TRACKING_QUEUE": f"tracking-{suffix}", "INVENTORY_TABLE": f"inv{suffix}"}
        pipeline = pipeline_from_env(
            env,
            keyvault_options={"credential": deployment.keyvault.credential, **deployment.keyvault.client_kwargs},
            automation_options={"credential": arm.credential, **arm.client_kwargs},
        )
        monkeypatch.setattr(shared.wiring, "azure_pipeline", lambda: pipeline)
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        arm.script(["Completed"], output=json.dumps(exchange(deployment.first, servers=("EX01",), collected_at=now)))
        deployment.deliver(deployment.versions[1])
        assert deployment.messages() == [] and deployment.kinds()[-1] == "waiting-for-inventory"
        [job] = {m.group(1) for p in arm.paths() if (m := re.search(r"/jobs/([0-9a-f-]{36})", p))}
        discovery = pipeline.discovery._build()  # the discovery the pipeline started, as the tracker polls it
        assert discovery.poll("hrw-exchange", job).outcome == "stored"
        [queued] = deployment.messages()
        assert queued["version"] == deployment.versions[1]
        assert queued["plan"]["inventory"]["worker_group"] == "hrw-exchange"


# --- two Function instances: one job per version ---------------------------------------------------------


@pytest.mark.parametrize("step", ["send", "mark-queued"])
def test_two_instances_delivering_one_version_queue_one_job(deployment, monkeypatch, step):
    """Two compositions of the Function App's wiring (two instances) on one Azurite. Event Grid delivers the
    version to instance A, and again to instance B while A is between claiming the job and sending it, or
    between sending it and marking the claim queued: the interleavings that queued 5 of 190 versions twice.
    B finds A's live claim: not settled yet, it raises (audited, transient) so that Event Grid delivers it
    again, and that later delivery is a duplicate. One job is queued; acknowledging B's delivery as a
    duplicate would lose the job when A stops before sending it (the storm found this)."""
    a = deployment.pipeline
    b = pipeline_from_env(
        deployment.env,
        keyvault_options={"credential": deployment.keyvault.credential, **deployment.keyvault.client_kwargs},
    )
    assert a.jobs.owner != b.jobs.owner
    client, method = (a.jobs._queue, "send_message") if step == "send" else (a.jobs._claims, "update_entity")
    original = getattr(client, method)

    def deliver_to_b_first(*args, **kwargs):
        monkeypatch.setattr(shared.wiring, "azure_pipeline", lambda: b)
        try:
            with pytest.raises(StorageError, match="being queued by another instance"):
                deployment.deliver(deployment.versions[1])
        finally:
            monkeypatch.setattr(shared.wiring, "azure_pipeline", lambda: a)
        return original(*args, **kwargs)

    monkeypatch.setattr(client, method, deliver_to_b_first)
    deployment.deliver(deployment.versions[1])
    monkeypatch.setattr(client, method, original)
    monkeypatch.setattr(shared.wiring, "azure_pipeline", lambda: b)
    deployment.deliver(deployment.versions[1])  # Event Grid's redelivery of B's
    monkeypatch.setattr(shared.wiring, "azure_pipeline", lambda: a)

    [job] = deployment.messages()
    assert job["version"] == deployment.versions[1]
    kinds = deployment.kinds()
    assert kinds.count("job-queued") == 1 and kinds.count("duplicate") == 1
    assert kinds.count("event-failed") == 1
    # Delivered again later, to either instance: still one job.
    deployment.deliver(deployment.versions[1])
    monkeypatch.setattr(shared.wiring, "azure_pipeline", lambda: b)
    deployment.deliver(deployment.versions[1])
    assert len(deployment.messages()) == 1
    assert deployment.kinds().count("job-queued") == 1


def test_a_job_whose_send_failed_is_not_lost_to_a_delivery_during_the_claims_lease(deployment, monkeypatch):
    """Instance A claims the job, then its send fails (storage went away) and its delivery raises. Event
    Grid's redelivery reaches B while A's claim is still pending under its lease: B must not settle it as a
    duplicate (that acknowledged the event and the job was never sent); it raises too, and the redelivery
    after the lease ends sends the one job. The storm (tests/storm.py) found this."""
    a = deployment.pipeline
    b = pipeline_from_env(
        deployment.env,
        keyvault_options={"credential": deployment.keyvault.credential, **deployment.keyvault.client_kwargs},
    )
    b.jobs.lease = a.jobs.lease = dt.timedelta(seconds=1)

    def storage_gone(*args, **kwargs):
        from azure.core.exceptions import ServiceRequestError

        raise ServiceRequestError("connection refused")

    monkeypatch.setattr(a.jobs._queue, "send_message", storage_gone)
    with pytest.raises(StorageError):
        deployment.deliver(deployment.versions[1])
    monkeypatch.setattr(shared.wiring, "azure_pipeline", lambda: b)
    with pytest.raises(StorageError, match="being queued by another instance"):
        deployment.deliver(deployment.versions[1])  # within A's lease
    assert deployment.messages() == [] and "duplicate" not in deployment.kinds()
    deadline = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1.2)
    while dt.datetime.now(dt.timezone.utc) < deadline:  # the lease runs out (a wait, not a timed assertion)
        threading.Event().wait(0.1)
    deployment.deliver(deployment.versions[1])
    [job] = deployment.messages()
    assert job["version"] == deployment.versions[1] and deployment.kinds().count("job-queued") == 1
