"""The Azure Storage backends against a real Azurite: the audit table, the jobs queue and its claims,
the connection settings, and what a failure says."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.data.tables import TableClient
from azure.storage.queue import QueueClient

from shared.adapters.azure.queues import CLAIM_LEASE, StorageMessageQueue, StorageRemediationQueue
from shared.adapters.azure.storage import CUT_MARKER, QUEUE_MESSAGE_LIMIT, table_key
from shared.adapters.azure.tables import TableAuditLog
from shared.errors import CertsyncError, StorageError
from shared.pipeline.audit import AuditEntry
from shared.pipeline.jobs import RemediationRequest
from shared.remediation.messages import MAX_VISIBILITY_SECONDS
from shared.wiring import storage_from_env
from tests.azurite import ACCOUNT_KEY, Azurite

ROOT = Path(__file__).resolve().parent.parent
T0 = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc)


def queue_name() -> str:
    """Queue names: 3-63 lower-case letters, digits and dashes."""
    return f"jobs-{uuid.uuid4().hex[:20]}"


def table_name(prefix: str = "t") -> str:
    """Table names: 3-63 letters and digits, starting with a letter."""
    return f"{prefix}{uuid.uuid4().hex[:20]}"


def entry(certificate: str, kind: str = "assessment", minutes: int = 0, **fields) -> AuditEntry:
    return AuditEntry(
        certificate=certificate,
        kind=kind,
        correlation_id=fields.pop("correlation_id", "corr-1"),
        summary=fields.pop("summary", f"{kind} of {certificate}"),
        at=T0 + dt.timedelta(minutes=minutes),
        **fields,
    )


def job(plan: dict | None = None, version: str = "0123456789abcdef0123456789abcdef") -> RemediationRequest:
    return RemediationRequest(
        vault="Contoso-KV",
        certificate="mail-contoso-com",
        version=version,
        secret_id=f"https://contoso-kv.vault.azure.net/secrets/mail-contoso-com/{version}",
        thumbprint="AB" * 20,
        correlation_id="corr-42",
        plan=plan if plan is not None else {"connectors": ["Outbound to Office 365"]},
    )


@pytest.fixture
def settings(azurite: Azurite):
    return storage_from_env({"JobsStorage": azurite.connection_string})


@pytest.fixture
def audit_table(settings) -> TableClient:
    return settings.table_client(table_name("audit"))


@dataclass
class JobsUnderTest:
    jobs: StorageRemediationQueue
    queue: QueueClient  # the same queue, without the base64 decode policy: the raw message text
    claims: TableClient
    settings: object

    def another_instance(self, **options) -> StorageRemediationQueue:
        """A second worker process's view of the same queue and claims table (`options`: owner, lease, clock)."""
        return StorageRemediationQueue(
            self.settings.queue_client(self.queue.queue_name),
            self.settings.table_client(self.claims.table_name),
            **options,
        )

    def raw_messages(self) -> list[str]:
        return [message.content for message in self.queue.peek_messages(max_messages=32)]


@pytest.fixture
def under_test(settings, azurite: Azurite) -> JobsUnderTest:
    queue, claims = queue_name(), table_name("claims")
    return JobsUnderTest(
        jobs=StorageRemediationQueue(settings.queue_client(queue), settings.table_client(claims)),
        queue=QueueClient.from_connection_string(azurite.connection_string, queue),
        claims=settings.table_client(claims),
        settings=settings,
    )


# --- the module ----------------------------------------------------------------------------------


def test_importing_shared_storage_imports_no_azure_sdk():
    probe = (
        "import json, sys\n"
        "import shared.adapters.azure.storage, shared.wiring\n"
        "before = sorted(m for m in sys.modules if m.split('.')[0] == 'azure')\n"
        "settings = shared.wiring.storage_from_env({'JobsStorage': 'UseDevelopmentStorage=true'})\n"
        "settings.queue_client('q')\n"
        "after = sorted(m for m in sys.modules if m.split('.')[0] == 'azure')\n"
        "print(json.dumps([before, after]))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    before, after = json.loads(result.stdout)
    assert before == []
    # The probe can see an SDK import: making a client does import the queue SDK.
    assert "azure.storage.queue" in after
    assert "azure.data.tables" not in after and "azure.identity" not in after


# --- audit ---------------------------------------------------------------------------------------


def test_audit_history_is_oldest_first_with_details(audit_table):
    log = TableAuditLog(audit_table)
    later = entry("web", "plan", minutes=2, details={"targets": ["edge-1", "edge-2"], "nested": {"n": 1}})
    first = entry("web", "event-received", minutes=0, vault="contoso-kv", version="v1", event_id="evt-1")
    middle = entry("web", "assessment", minutes=1, details={"status": "valid", "ü": "ünïcode"})
    for item in (later, first, middle):
        log.record(item)

    history = list(log.history("web"))

    assert history == [first, middle, later]
    assert history[2].details == {"targets": ["edge-1", "edge-2"], "nested": {"n": 1}}


def test_audit_entries_in_the_same_instant_keep_a_stable_order(audit_table):
    log = TableAuditLog(audit_table)
    same = [entry("web", "assessment", minutes=0, entry_id=f"{i:032x}") for i in (3, 1, 2)]
    for item in same:
        log.record(item)
    assert [e.entry_id for e in log.history("web")] == [f"{i:032x}" for i in (1, 2, 3)]


def test_audit_stores_the_entry_fields_as_table_properties(audit_table):
    item = entry("web", "plan", vault="contoso-kv", version="v7", event_id="evt-9", details={"a": [1, 2]})
    TableAuditLog(audit_table).record(item)

    [row] = audit_table.query_entities("PartitionKey eq @pk", parameters={"pk": "web"})

    assert row["RowKey"] == item.row_key
    assert json.loads(row["details"]) == {"a": [1, 2]}
    assert {k: row[k] for k in ("certificate", "kind", "at", "vault", "version", "event_id", "summary")} == {
        k: v for k, v in item.to_dict().items() if k not in ("details", "correlation_id")
    }
    assert row["correlation_id"] == "corr-1"
    assert "details_truncated" not in row


def test_audit_partitions_are_per_certificate(audit_table):
    log = TableAuditLog(audit_table)
    log.record(entry("web-a", minutes=0))
    log.record(entry("web-b", minutes=1))
    log.record(entry("web-a", minutes=2))

    assert [e.at for e in log.history("web-a")] == [T0, T0 + dt.timedelta(minutes=2)]
    assert [e.certificate for e in log.history("web-b")] == ["web-b"]
    assert list(log.history("web")) == []


def test_audit_partition_ignores_case(audit_table):
    log = TableAuditLog(audit_table)
    log.record(entry("Mail-Contoso", minutes=0))
    log.record(entry("mail-contoso", minutes=1))

    assert len(list(log.history("MAIL-CONTOSO"))) == 2
    assert [row["PartitionKey"] for row in audit_table.list_entities()] == ["mail-contoso", "mail-contoso"]


def test_audit_names_with_characters_table_keys_refuse_are_still_recorded_apart(audit_table):
    log = TableAuditLog(audit_table)
    log.record(entry("a/b#c?d\\e", minutes=0))
    log.record(entry("a%2Fb#c?d\\e", minutes=1))  # what a naive escape of the first would collide with

    assert [e.certificate for e in log.history("a/b#c?d\\e")] == ["a/b#c?d\\e"]
    assert [e.certificate for e in log.history("a%2Fb#c?d\\e")] == ["a%2Fb#c?d\\e"]


def test_audit_history_before_anything_was_recorded_is_empty(settings):
    assert list(TableAuditLog(settings.table_client(table_name("never"))).history("web")) == []


def test_audit_details_too_large_for_a_table_property_are_stored_cut_and_flagged(audit_table):
    details = {"findings": ["x" * 1000 for _ in range(40)]}  # about 41 KB of JSON, more than 32 Ki characters
    full = json.dumps(details, sort_keys=True, ensure_ascii=False)
    log = TableAuditLog(audit_table)
    log.record(entry("web", "assessment", details=details))

    [row] = audit_table.list_entities()
    assert row["details_truncated"] is True
    assert len(row["details"]) == 32 * 1024 and full.startswith(row["details"])
    [read] = log.history("web")
    assert read.details == {"details_truncated": True, "details_json": row["details"]}


def test_audit_truncation_counts_utf16_and_never_splits_a_surrogate_pair(audit_table):
    details = {"emoji": "😀" * 20000}  # 40 000 code points, 80 000 UTF-16 code units
    TableAuditLog(audit_table).record(entry("web", details=details))

    [row] = audit_table.list_entities()
    stored = row["details"]
    assert row["details_truncated"] is True
    assert len(stored.encode("utf-16-le")) <= 64 * 1024
    assert stored.endswith("😀") and json.dumps(details, ensure_ascii=False).startswith(stored)


def test_audit_details_exactly_at_the_limit_are_stored_whole(audit_table):
    padding = 32 * 1024 - len(json.dumps({"pad": ""}, ensure_ascii=False))
    details = {"pad": "y" * padding}
    log = TableAuditLog(audit_table)
    log.record(entry("web", details=details))

    [row] = audit_table.list_entities()
    assert len(row["details"]) == 32 * 1024 and "details_truncated" not in row
    assert next(log.history("web")).details == details


def test_audit_table_is_created_once_per_instance(audit_table, monkeypatch):
    calls = []
    create = audit_table.create_table
    monkeypatch.setattr(audit_table, "create_table", lambda: calls.append(1) or create())
    log = TableAuditLog(audit_table)
    log.record(entry("web", minutes=0))
    log.record(entry("web", minutes=1))
    assert calls == [1]
    assert len(list(log.history("web"))) == 2


def test_audit_record_into_an_existing_table(settings):
    name = table_name("existing")
    settings.table_client(name).create_table()
    log = TableAuditLog(settings.table_client(name))
    log.record(entry("web"))
    assert len(list(log.history("web"))) == 1


# --- jobs ----------------------------------------------------------------------------------------


def test_first_enqueue_sends_one_base64_message_with_the_job(under_test: JobsUnderTest):
    the_job = job()

    assert under_test.jobs.enqueue(the_job) is True

    [raw] = under_test.raw_messages()
    assert base64.b64decode(raw, validate=True).decode("utf-8") == the_job.to_json()
    assert json.loads(base64.b64decode(raw))["job_id"] == the_job.job_id


def test_enqueue_marks_the_claim_queued_with_the_message_id(under_test: JobsUnderTest):
    the_job = job()
    under_test.jobs.enqueue(the_job)

    claim = under_test.claims.get_entity("contoso-kv", the_job.job_id)
    [message] = under_test.queue.receive_messages(visibility_timeout=30)
    assert claim["state"] == "queued"
    assert claim["message_id"] == message.id
    assert (claim["certificate"], claim["version"], claim["correlation_id"]) == (
        "mail-contoso-com",
        the_job.version,
        "corr-42",
    )


def test_a_duplicate_is_refused_and_sends_nothing(under_test: JobsUnderTest):
    assert under_test.jobs.enqueue(job()) is True

    assert under_test.jobs.enqueue(job()) is False
    assert under_test.another_instance().enqueue(job()) is False  # another worker, same claims table

    assert len(under_test.raw_messages()) == 1
    assert under_test.queue.get_queue_properties().approximate_message_count == 1


def test_another_version_is_another_job(under_test: JobsUnderTest):
    assert under_test.jobs.enqueue(job(version="a" * 32)) is True
    assert under_test.jobs.enqueue(job(version="b" * 32)) is True
    assert len(under_test.raw_messages()) == 2


def _crash_between_claim_and_send(under_test: JobsUnderTest, monkeypatch, **options) -> StorageRemediationQueue:
    crashing = under_test.another_instance(**options)

    def crash(*args, **kwargs):
        raise SystemExit("worker recycled between claim and send")

    monkeypatch.setattr(crashing._queue, "send_message", crash)
    with pytest.raises(SystemExit):
        crashing.enqueue(job())
    assert under_test.claims.get_entity("contoso-kv", job().job_id)["state"] == "pending"
    assert under_test.raw_messages() == []
    return crashing


def test_a_claim_carries_its_owner_and_lease(under_test: JobsUnderTest, monkeypatch):
    crashing = _crash_between_claim_and_send(under_test, monkeypatch, owner="fn-instance-a", clock=lambda: T0)

    claim = under_test.claims.get_entity("contoso-kv", job().job_id)
    assert claim["owner"] == "fn-instance-a" == crashing.owner
    assert claim["lease_until"] == T0 + CLAIM_LEASE


def test_a_claim_under_a_live_lease_is_not_taken_over(under_test: JobsUnderTest, monkeypatch):
    _crash_between_claim_and_send(under_test, monkeypatch, owner="a", clock=lambda: T0)

    just_before = under_test.another_instance(owner="b", clock=lambda: T0 + CLAIM_LEASE - dt.timedelta(seconds=1))
    assert just_before.enqueue(job()) is False

    assert under_test.raw_messages() == []
    claim = under_test.claims.get_entity("contoso-kv", job().job_id)
    assert (claim["state"], claim["owner"]) == ("pending", "a")


def test_a_claim_whose_lease_has_ended_is_taken_over_and_sent(under_test: JobsUnderTest, monkeypatch):
    _crash_between_claim_and_send(under_test, monkeypatch, owner="a", clock=lambda: T0)

    later = under_test.another_instance(owner="b", clock=lambda: T0 + CLAIM_LEASE)
    assert later.enqueue(job()) is True

    [raw] = under_test.raw_messages()
    assert base64.b64decode(raw).decode() == job().to_json()
    claim = under_test.claims.get_entity("contoso-kv", job().job_id)
    assert (claim["state"], claim["owner"]) == ("queued", "b")
    assert claim["lease_until"] == T0 + 2 * CLAIM_LEASE
    assert later.enqueue(job()) is False and under_test.jobs.enqueue(job()) is False
    assert len(under_test.raw_messages()) == 1


def test_two_instances_taking_over_one_expired_claim_send_it_once(under_test: JobsUnderTest, monkeypatch):
    """Both read the expired claim; B's takeover lands first, so A's write (conditional on the ETag it
    read) fails and A sends nothing."""
    _crash_between_claim_and_send(under_test, monkeypatch, owner="a", clock=lambda: T0)
    later = T0 + CLAIM_LEASE + dt.timedelta(minutes=1)
    first, second = (under_test.another_instance(owner=o, clock=lambda: later) for o in ("b", "c"))
    read = second._claims.get_entity
    outcomes = []

    def read_then_let_the_other_instance_run(*args, **kwargs):
        found = read(*args, **kwargs)
        outcomes.append(first.enqueue(job()))
        return found

    monkeypatch.setattr(second._claims, "get_entity", read_then_let_the_other_instance_run)
    outcomes.append(second.enqueue(job()))

    assert outcomes == [True, False]
    assert len(under_test.raw_messages()) == 1
    claim = under_test.claims.get_entity("contoso-kv", job().job_id)
    assert (claim["state"], claim["owner"]) == ("queued", "b")


def test_a_pending_claim_from_before_leases_is_taken_over(under_test: JobsUnderTest):
    under_test.claims.create_table()
    under_test.claims.create_entity({"PartitionKey": "contoso-kv", "RowKey": job().job_id, "state": "pending"})

    assert under_test.jobs.enqueue(job()) is True

    assert len(under_test.raw_messages()) == 1
    claim = under_test.claims.get_entity("contoso-kv", job().job_id)
    assert (claim["state"], claim["owner"]) == ("queued", under_test.jobs.owner)


def test_a_claim_removed_between_create_and_read_is_made_again(under_test: JobsUnderTest, monkeypatch):
    _crash_between_claim_and_send(under_test, monkeypatch, clock=lambda: T0)
    read = under_test.jobs._claims.get_entity

    def removed_just_before(*args, **kwargs):
        under_test.claims.delete_entity("contoso-kv", job().job_id)
        return read(*args, **kwargs)

    monkeypatch.setattr(under_test.jobs._claims, "get_entity", removed_just_before)
    assert under_test.jobs.enqueue(job()) is True
    assert len(under_test.raw_messages()) == 1


def test_a_claim_that_exists_but_cannot_be_read_is_never_sent(under_test: JobsUnderTest, monkeypatch):
    from azure.core.exceptions import ResourceNotFoundError

    _crash_between_claim_and_send(under_test, monkeypatch, clock=lambda: T0)

    def not_found(*args, **kwargs):
        raise ResourceNotFoundError("gone")

    monkeypatch.setattr(under_test.jobs._claims, "get_entity", not_found)
    assert under_test.jobs.enqueue(job()) is False
    assert under_test.raw_messages() == []


@pytest.mark.parametrize("step", ["send", "mark-queued"])
def test_a_second_instance_delivering_mid_enqueue_sends_nothing(under_test: JobsUnderTest, monkeypatch, step):
    """The interleavings that doubled jobs: instance B's delivery arrives while A is between its claim and
    its send, or between its send and marking the claim queued."""
    a, b = under_test.another_instance(owner="a"), under_test.another_instance(owner="b")
    client, method = (a._queue, "send_message") if step == "send" else (a._claims, "update_entity")
    original = getattr(client, method)
    seen = []

    def let_b_run_first(*args, **kwargs):
        seen.append(b.enqueue(job()))
        return original(*args, **kwargs)

    monkeypatch.setattr(client, method, let_b_run_first)
    assert a.enqueue(job()) is True

    assert seen == [False]
    assert len(under_test.raw_messages()) == 1
    assert under_test.claims.get_entity("contoso-kv", job().job_id)["state"] == "queued"


def test_a_claim_that_cannot_be_marked_queued_still_counts_as_queued(under_test: JobsUnderTest, monkeypatch, caplog):
    def fail(*args, **kwargs):
        raise ServiceRequestError("connection reset")

    monkeypatch.setattr(under_test.jobs._claims, "update_entity", fail)
    with caplog.at_level(logging.WARNING, logger="certsync.storage"):
        assert under_test.jobs.enqueue(job()) is True

    assert len(under_test.raw_messages()) == 1
    assert under_test.claims.get_entity("contoso-kv", job().job_id)["state"] == "pending"
    assert any("claim stays pending" in record.getMessage() for record in caplog.records)


def _job_of_encoded_size(size: int) -> RemediationRequest:
    """A job whose message is `size` bytes once base64-encoded (size a multiple of 4)."""
    base = len(job(plan={"pad": ""}).to_json().encode())
    return job(plan={"pad": "z" * (size // 4 * 3 - base)})


def test_a_job_exactly_at_the_message_limit_is_sent(under_test: JobsUnderTest):
    the_job = _job_of_encoded_size(QUEUE_MESSAGE_LIMIT)
    assert len(base64.b64encode(the_job.to_json().encode())) == QUEUE_MESSAGE_LIMIT

    assert under_test.jobs.enqueue(the_job) is True
    [raw] = under_test.raw_messages()
    assert len(raw) == QUEUE_MESSAGE_LIMIT


def test_an_oversized_job_is_refused_naming_the_certificate_and_leaves_no_claim(under_test: JobsUnderTest):
    the_job = _job_of_encoded_size(QUEUE_MESSAGE_LIMIT + 4)
    under_test.queue.create_queue()
    under_test.claims.create_table()

    with pytest.raises(CertsyncError, match=r"certificate mail-contoso-com .*plan is too large.*65540 bytes"):
        under_test.jobs.enqueue(the_job)

    assert under_test.raw_messages() == []
    assert list(under_test.claims.list_entities()) == []


def test_a_queue_client_without_base64_encoding_is_refused(azurite: Azurite, settings):
    plain = QueueClient.from_connection_string(azurite.connection_string, queue_name())
    with pytest.raises(ValueError, match="TextBase64EncodePolicy"):
        StorageRemediationQueue(plain, settings.table_client(table_name()))


def test_enqueue_logs_identifiers_never_the_message(under_test: JobsUnderTest, caplog):
    the_job = job(plan={"connectors": ["a-very-recognisable-connector-name"]})
    with caplog.at_level(logging.DEBUG):
        under_test.jobs.enqueue(the_job)
        under_test.jobs.enqueue(the_job)

    ours = [record for record in caplog.records if record.name == "certsync.storage"]
    assert [record.getMessage() for record in ours] == ["job queued", "job already queued; not sent again"]
    assert ours[0].__dict__["certsync.job_id"] == the_job.job_id
    everything = " ".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    assert "a-very-recognisable-connector-name" not in everything
    assert base64.b64encode(the_job.to_json().encode()).decode()[:40] not in everything


# --- other messages ------------------------------------------------------------------------------


def test_a_message_queue_is_made_on_first_send_and_holds_the_text_base64(azurite: Azurite, settings):
    name = queue_name()
    queue = StorageMessageQueue(settings.queue_client(name))
    queue.send('{"schema":"x/1","n":1}')
    queue.send('{"schema":"x/1","n":2}')

    raw = QueueClient.from_connection_string(azurite.connection_string, name)
    contents = [base64.b64decode(m.content).decode() for m in raw.peek_messages(max_messages=32)]
    assert queue.name == name and contents == ['{"schema":"x/1","n":1}', '{"schema":"x/1","n":2}']


def test_a_delayed_message_is_not_visible_yet(azurite: Azurite, settings):
    name = queue_name()
    StorageMessageQueue(settings.queue_client(name)).send("{}", delay=MAX_VISIBILITY_SECONDS + 3600)  # capped

    raw = QueueClient.from_connection_string(azurite.connection_string, name)
    assert raw.peek_messages() == [] and raw.get_queue_properties().approximate_message_count == 1


def test_a_message_over_the_limit_is_refused_naming_the_queue(settings):
    name = queue_name()
    text = "x" * (QUEUE_MESSAGE_LIMIT // 4 * 3 + 1)
    with pytest.raises(CertsyncError, match=rf"^queue {name}: a message of 65540 bytes \(encoded\) is over"):
        StorageMessageQueue(settings.queue_client(name)).send(text)
    StorageMessageQueue(settings.queue_client(name)).send(text[:-1])  # exactly at the limit: sent


def test_a_message_queue_failure_is_a_storage_error_naming_the_queue(azurite: Azurite):
    wrong_key = base64.b64encode(b"not the key" * 6).decode()
    settings = storage_from_env({"JobsStorage": azurite.connection_string.replace(ACCOUNT_KEY, wrong_key)})
    name = queue_name()
    with pytest.raises(StorageError, match=rf"^queue {name}: Azure Storage answered HTTP 403") as raised:
        StorageMessageQueue(settings.queue_client(name, retry_total=0)).send("{}")
    assert wrong_key not in str(raised.value) and "\n" not in str(raised.value)


def test_table_keys_escape_what_table_storage_refuses_and_stay_distinct():
    assert table_key("contoso-kv/mail") == "contoso-kv%2Fmail"
    assert table_key("a%2Fb") == "a%252Fb" != table_key("a/b")
    assert table_key("plain-name_1.x") == "plain-name_1.x"


# --- failures ------------------------------------------------------------------------------------


def test_a_wrong_account_key_is_a_one_line_storage_error_without_the_key(azurite: Azurite):
    wrong_key = base64.b64encode(b"not the key" * 6).decode()
    settings = storage_from_env({"JobsStorage": azurite.connection_string.replace(ACCOUNT_KEY, wrong_key)})
    jobs = StorageRemediationQueue(settings.queue_client(queue_name()), settings.table_client(table_name("claims")))

    with pytest.raises(StorageError) as raised:
        jobs.enqueue(job())

    message = str(raised.value)
    assert re.match(r"claims table claims\w+: Azure Storage answered HTTP 403 \(Authorization\w+\); check the", message)
    assert "\n" not in message and wrong_key not in message and "AccountKey" not in message


def test_an_audit_table_that_is_not_there_to_reach_is_a_storage_error(azurite: Azurite):
    unreachable = azurite.connection_string.replace(f":{azurite.table_port}/", ":1/")
    log = TableAuditLog(storage_from_env({"JobsStorage": unreachable}).table_client("audit", retry_total=0))

    with pytest.raises(StorageError, match=r"^audit table audit: cannot reach 127\.0\.0\.1:1 \(ServiceRequestError\)"):
        log.record(entry("web"))


def test_a_queue_refusing_the_message_is_a_storage_error_naming_the_queue(under_test: JobsUnderTest):
    under_test.jobs.enqueue(job(version="c" * 32))  # creates the queue and claims table
    under_test.queue.delete_queue()

    with pytest.raises(StorageError, match=rf"^queue {under_test.queue.queue_name}: .*HTTP 404 \(QueueNotFound\)"):
        under_test.jobs.enqueue(job(version="d" * 32))
    assert under_test.claims.get_entity("contoso-kv", job(version="d" * 32).job_id)["state"] == "pending"


def test_an_identity_without_a_token_is_a_storage_error_saying_to_check_it(monkeypatch):
    import azure.identity
    from azure.identity import CredentialUnavailableError

    class NoIdentity:
        def get_token(self, *scopes, **kwargs):
            raise CredentialUnavailableError("ManagedIdentityCredential: no managed identity endpoint found")

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", NoIdentity)
    settings = storage_from_env({"JobsStorage__tableServiceUri": "https://127.0.0.1:1"})
    log = TableAuditLog(settings.table_client("audit", retry_total=0))

    with pytest.raises(StorageError) as raised:
        list(log.history("web"))
    assert str(raised.value) == (
        "audit table audit: CredentialUnavailableError before 127.0.0.1:1 answered; check the managed identity"
    )


# --- settings ------------------------------------------------------------------------------------


class RecordingCredential:
    made: ClassVar[list[RecordingCredential]] = []

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs
        RecordingCredential.made.append(self)

    def get_token(self, *scopes, **kwargs):
        raise AssertionError("no token is needed to build a client")


@pytest.fixture
def credentials(monkeypatch):
    import azure.identity

    RecordingCredential.made = []
    monkeypatch.setattr(azure.identity, "ManagedIdentityCredential", type("MI", (RecordingCredential,), {}))
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", type("Default", (RecordingCredential,), {}))
    return RecordingCredential.made


def test_settings_from_a_connection_string_make_base64_queue_clients(azurite: Azurite, settings):
    name = queue_name()
    queue = settings.queue_client(name)
    queue.create_queue()
    queue.send_message("hi")

    [raw] = QueueClient.from_connection_string(azurite.connection_string, name).peek_messages()
    assert raw.content == "aGk="
    assert queue.peek_messages()[0].content == "hi"


def test_settings_for_development_storage_point_at_the_default_azurite_ports():
    settings = storage_from_env({"JobsStorage": "UseDevelopmentStorage=true"})
    assert settings.queue_client("jobs").url == "http://127.0.0.1:10001/devstoreaccount1/jobs"
    assert settings.table_client("audit").url.startswith("http://127.0.0.1:10002/devstoreaccount1")


def test_settings_with_service_uris_and_a_client_id_use_that_managed_identity(credentials):
    settings = storage_from_env(
        {
            "JobsStorage__queueServiceUri": "https://contoso.queue.core.windows.net",
            "JobsStorage__tableServiceUri": "https://contoso.table.core.windows.net",
            "JobsStorage__clientId": "11111111-2222-3333-4444-555555555555",
        }
    )
    queue, table = settings.queue_client("jobs"), settings.table_client("audit")

    assert queue.url == "https://contoso.queue.core.windows.net/jobs"
    assert table.url == "https://contoso.table.core.windows.net"
    [credential] = credentials
    assert type(credential).__name__ == "MI"
    assert credential.kwargs == {"client_id": "11111111-2222-3333-4444-555555555555"}
    assert queue.credential is credential and table.credential is credential


def test_settings_with_service_uris_alone_use_the_default_credential_once(credentials):
    settings = storage_from_env(
        {
            "jobsstorage__QUEUESERVICEURI": "https://contoso.queue.core.windows.net",  # the host ignores case
            "JobsStorage__tableServiceUri": "https://contoso.table.core.windows.net",
        }
    )
    settings.queue_client("jobs")
    settings.table_client("audit")
    settings.table_client("claims")

    assert [type(c).__name__ for c in credentials] == ["Default"]
    assert credentials[0].kwargs == {}


def test_settings_connection_string_wins_over_service_uris(credentials):
    settings = storage_from_env(
        {
            "Other": "UseDevelopmentStorage=true",
            "Other__queueServiceUri": "https://contoso.queue.core.windows.net",
        },
        connection="Other",
    )
    assert settings.queue_client("jobs").url.startswith("http://127.0.0.1:10001/")
    assert credentials == []


@pytest.mark.parametrize("env", [{}, {"JobsStorage": ""}, {"JobsStorage": "   "}, {"AzureWebJobsStorage": "x"}])
def test_settings_missing_name_what_to_define(env):
    with pytest.raises(CertsyncError) as raised:
        storage_from_env(env)
    message = str(raised.value)
    assert message.startswith("JobsStorage is not set: define JobsStorage ")
    assert "JobsStorage__queueServiceUri" in message and "JobsStorage__tableServiceUri" in message
    assert "\n" not in message


def test_settings_with_only_a_queue_uri_say_which_table_setting_is_missing(credentials):
    settings = storage_from_env({"Audit__queueServiceUri": "https://contoso.queue.core.windows.net"}, "Audit")
    settings.queue_client("jobs")
    with pytest.raises(CertsyncError, match=r"^Audit__tableServiceUri is not set: define it"):
        settings.table_client("audit")


def test_settings_never_show_the_connection_string(azurite: Azurite, settings):
    assert ACCOUNT_KEY not in repr(settings) and ACCOUNT_KEY not in str(settings)


def test_every_audit_field_fits_a_table_property_whatever_the_input(audit_table):
    url = "http://crl.example/" + "a" * 40_000  # a 40,000-character CRL URL quoted in a blocked summary
    log = TableAuditLog(audit_table)
    log.record(entry("web", "blocked", summary=f"not queued: CRL {url} unreachable", version="v" * 40_000))
    [row] = audit_table.list_entities()
    for field in ("summary", "version"):
        assert len(row[field].encode("utf-16-le")) <= 64 * 1024
        assert row[field].endswith(CUT_MARKER)
    assert row["summary"].startswith("not queued: CRL http://crl.example/aaa")
    [read] = log.history("web")
    assert read.summary == row["summary"] and read.kind == "blocked"


def test_a_lone_surrogate_is_stored_as_a_replacement_character(audit_table):
    log = TableAuditLog(audit_table)
    log.record(entry("web", summary="bad \udc80 name", details={"name": "x\ud800"}))
    [read] = log.history("web")
    assert read.summary == "bad \ufffd name" and read.details == {"name": "x\ufffd"}


def test_every_audit_row_is_also_a_certsync_audit_trace_for_the_workbook_and_alerts(audit_table, caplog):
    # Azure Monitor cannot query Table storage: the workbook (infra/workbooks/certsync-audit.json) and the
    # alerts (infra/modules/alerts.bicep) read these records' certsync.audit.* dimensions in AppTraces.
    log = TableAuditLog(audit_table)
    result = entry("web", "job-result", minutes=1, vault="contoso-kv", version="v2", details={"status": "failed"})
    caplog.set_level("INFO", logger="certsync.audit")

    log.record(entry("web", "event-received", vault="contoso-kv", version="v2"))
    assert log.record_once(result, "job-1") is True
    assert log.record_once(result, "job-1") is False  # not written: not logged either

    records = [r for r in caplog.records if r.name == "certsync.audit"]
    assert [getattr(r, "certsync.audit.kind") for r in records] == ["event-received", "job-result"]
    last = records[-1].__dict__
    assert last["certsync.audit.certificate"] == "web" and last["certsync.audit.status"] == "failed"
    assert last["certsync.audit.vault"] == "contoso-kv" and last["certsync.audit.version"] == "v2"
    assert last["certsync.audit.correlation_id"] == result.correlation_id
    assert getattr(records[0], "certsync.audit.status") == ""  # no status in its details
