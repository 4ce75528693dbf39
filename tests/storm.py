"""The fault-injection storm: many Event Grid deliveries, with duplicates and redeliveries, through TWO
Function App instances at once, while everything they depend on misbehaves. Used by tests/test_storm.py
(a small storm in `make test`) and bench/storm.py (the full one).

What runs, all real and on loopback:
- Azurite, persistent on disk, for the jobs queue, the claims and audit tables (and every other table);
  it is stopped and started again mid-run (`Azurite.restart`), so calls in flight fail and later ones
  find the data where it was;
- the HTTPS Key Vault test server, with the real SDK clients of each instance, answering a share of
  requests 503 or 429 and holding some answers (`FakeKeyVault.chaos`);
- a webhook receiver (generic, signed) that answers some requests 500 or 429;
- two pipelines built by `shared.wiring.pipeline_from_env`, each with its own SDK clients and claim owner,
  each on its own thread, taking deliveries from one shared Event Grid: a delivery that raises (the
  Function lets it raise when retrying may help) is delivered again later, with the same event id, as Event
  Grid does; one that returns (or is acknowledged as final) is done;
- then two remediation instances start and track every queued job (each job message delivered to both),
  against the ARM fake.

What is counted (`StormReport`): deliveries, those never settled (`lost`), jobs per version on the queue and
Automation jobs per version at the ARM fake (`duplicate_jobs`), `job-result` entries per job
(`duplicate_results`), notices per (certificate, version, outcome) that the receiver accepted
(`max_notices_per_outcome`), versions that should have a job and have none (`missing_jobs`), and deliveries
whose event id has no settling audit entry (`unaudited`).
"""

from __future__ import annotations

import datetime as dt
import json
import queue
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import CertsyncError
from shared.pipeline.audit import SETTLED_KINDS
from shared.pipeline.jobs import job_id
from shared.wiring import pipeline_from_env, remediation_from_env
from tests.automation_params import decode
from tests.azurite import Azurite
from tests.chains import renewal_pki, unprotected_pfx
from tests.fakes.arm import FakeArm
from tests.fakes.keyvault import FakeKeyVault
from tests.inventories import SEND, exchange, keep
from tests.receivers import WebhookReceiver
from tests.servers import HttpServer
from tests.test_functions_pipeline import HOSTS, VAULT, app_settings
from tests.test_pipeline import event

GROUP = "hrw-exchange"


@dataclass(frozen=True)
class StormPlan:
    versions: int = 12  # certificates, each with an old version Exchange uses and a new one delivered
    deliveries: int = 60  # Event Grid deliveries in all (at least one per version; the rest duplicates)
    expired: int = 2  # of the versions, how many are expired (blocked: never a job)
    keyvault_errors: float = 0.08  # share of Key Vault requests answered 503 or 429
    keyvault_slow: float = 0.03  # share of Key Vault requests held `slow_seconds`
    slow_seconds: float = 0.4
    webhook_failures: int = 6  # receiver answers: this many 500s and 429s, spread over the run
    restart_after: float = 0.4  # restart Azurite once this share of deliveries is done
    restart_pause: float = 3.0  # seconds Azurite is down
    instances: int = 2
    max_attempts: int = 40  # deliveries of one event before Event Grid gives up (dead-letter: lost)
    redelivery_delay: float = 0.05  # seconds before a failed delivery comes back (x1.5 each time, at most 1 s)
    seed: int = 17


@dataclass
class StormReport:
    deliveries: int = 0  # first deliveries (events and their duplicates), not counting redeliveries
    attempts: int = 0  # every delivery, redeliveries included
    lost: int = 0  # deliveries never settled within max_attempts
    unaudited: int = 0  # settled deliveries with no settling audit entry for their event id
    missing_jobs: int = 0  # non-expired versions without a job
    expired_jobs: int = 0  # expired versions with a job (must be 0)
    duplicate_jobs: int = 0  # extra queue messages or Automation jobs for one version
    duplicate_results: int = 0  # extra job-result entries for one job
    results: int = 0  # job-result entries
    max_notices_per_outcome: int = 0
    notices: int = 0  # accepted by the receiver (2xx), retries of one webhook-id counted once
    webhook_ids_per_outcome: int = 0  # the most distinct webhook-ids one (certificate, version, outcome) had
    keyvault_faults: dict[str, int] = field(default_factory=dict)
    webhook_faults: int = 0
    restarted: bool = False
    seconds: float = 0.0

    def line(self) -> str:
        """The figures as key=value (bench/storm.py prints it last)."""
        figures = {
            "deliveries": self.deliveries,
            "attempts": self.attempts,
            "lost": self.lost,
            "unaudited": self.unaudited,
            "missing_jobs": self.missing_jobs,
            "duplicate_jobs": self.duplicate_jobs,
            "duplicate_results": self.duplicate_results,
            "results": self.results,
            "max_notices_per_outcome": self.max_notices_per_outcome,
            "notices": self.notices,
            "keyvault_5xx": self.keyvault_faults.get("5xx", 0),
            "keyvault_429": self.keyvault_faults.get("429", 0),
            "keyvault_slow": self.keyvault_faults.get("slow", 0),
            "webhook_faults": self.webhook_faults,
            "azurite_restarted": int(self.restarted),
            "seconds": f"{self.seconds:.1f}",
        }
        return " ".join(f"{key}={value}" for key, value in figures.items())


@dataclass
class _Delivery:
    body: dict[str, Any]
    name: str
    version: str
    attempt: int = 0


class Storm:
    """One storm's world; `run()` blows it and returns the report."""

    def __init__(
        self,
        plan: StormPlan,
        *,
        azurite: Azurite,
        keyvault: FakeKeyVault,
        arm: FakeArm,
        http_server: HttpServer,
        receiver: WebhookReceiver,
        secret: str,
        directory: Path,
    ) -> None:
        self.plan = plan
        self.azurite = azurite
        self.keyvault = keyvault
        self.arm = arm
        self.receiver = receiver
        self.random = random.Random(plan.seed)
        pki = renewal_pki(http_server)
        old, new = pki.leaf(pki.inter_a), pki.leaf(pki.inter_b)
        now = dt.datetime.now(dt.timezone.utc)
        expired = pki.leaf(pki.inter_b, not_before=now - dt.timedelta(days=90), not_after=now - dt.timedelta(days=1))
        old_pfx, new_pfx, expired_pfx = (unprotected_pfx(leaf, inter) for leaf, inter in (
            (old, pki.inter_a), (new, pki.inter_b), (expired, pki.inter_b)
        ))  # fmt: skip
        target = {"worker_group": GROUP, "servers": ["EX01"], "send_connectors": [SEND], "hosts": HOSTS}
        self.versions: list[tuple[str, str, bool]] = []  # (certificate, new version, expired)
        for n in range(plan.versions):
            name = f"storm-{n:04d}"
            keyvault.add_version(name, old_pfx, tags={"certsync-servers": "EX01"})
            is_expired = n < plan.expired
            version = keyvault.add_version(
                name, expired_pfx if is_expired else new_pfx, tags={"certsync-servers": "EX01"}
            )
            self.versions.append((name, version, is_expired))
        certificates = {name: target for name, _, _ in self.versions}
        self.env = app_settings(azurite, keyvault, http_server, directory, pki.root, certificates) | {
            "TRACKING_QUEUE": f"tracking-{uuid.uuid4().hex[:8]}",
            "CERTSYNC_WEBHOOK_URL": receiver.url,
            "CERTSYNC_WEBHOOK_SECRET": secret,
            "CERTSYNC_CALLBACK_URL": "https://certsync-storm.azurewebsites.net",
            "CERTSYNC_CALLBACK_SECRET": secret,
            **arm.env,
        }
        self.keyvault_options = {"credential": keyvault.credential, **keyvault.client_kwargs}
        self.pipelines = [self._pipeline() for _ in range(plan.instances)]
        keep(self.pipelines[0].inventories, exchange(old, servers=("EX01",), group=GROUP), group=GROUP, collected=now)
        self._settled: dict[str, str] = {}  # event id -> how its last delivery ended
        self._lock = threading.Lock()

    def _pipeline(self):
        pipeline = pipeline_from_env(self.env, keyvault_options=self.keyvault_options)
        pipeline.jobs.lease = dt.timedelta(seconds=2)  # a claim left pending by a failed send is taken over soon
        return pipeline

    # the storm

    def schedule(self) -> list[_Delivery]:
        """Each version's event once, then duplicates (the same event id) up to `deliveries`, shuffled."""
        events = [(name, version, self._event(name, version)) for name, version, _ in self.versions]
        chosen = list(events) + [self.random.choice(events) for _ in range(max(0, self.plan.deliveries - len(events)))]
        self.random.shuffle(chosen)
        return [_Delivery(json.loads(json.dumps(body)), name, version) for name, version, body in chosen]

    def _event(self, name: str, version: str) -> dict[str, Any]:
        return event(version, vault=VAULT, name=name, event_id=str(uuid.UUID(int=self.random.getrandbits(128))))

    def run(self) -> StormReport:
        plan = self.plan
        report = StormReport()
        started = time.monotonic()
        deliveries = self.schedule()
        report.deliveries = len(deliveries)
        grid: queue.Queue[_Delivery | None] = queue.Queue()
        for delivery in deliveries:
            grid.put(delivery)
        outstanding = [len(deliveries)]
        done = threading.Event()
        restart_at = int(len(deliveries) * plan.restart_after)
        self.keyvault.chaos(plan.keyvault_errors, slow_rate=plan.keyvault_slow, slow_seconds=plan.slow_seconds)
        self._script_webhook(plan.webhook_failures // 2)
        finished = [0]

        def settle(delivery: _Delivery, how: str) -> None:
            with self._lock:
                self._settled[delivery.body["id"]] = how
                outstanding[0] -= 1
                finished[0] += 1
                if outstanding[0] == 0:
                    done.set()

        def instance(index: int) -> None:
            pipeline = self.pipelines[index]
            while not done.is_set():
                try:
                    delivery = grid.get(timeout=0.1)
                except queue.Empty:
                    continue
                if delivery is None:
                    return
                with self._lock:
                    report.attempts += 1
                delivery.attempt += 1
                try:
                    pipeline.receive(delivery.body, f"event {delivery.body['id']}")
                except CertsyncError as exc:
                    if not getattr(exc, "transient", True):  # acknowledged: it can never succeed
                        settle(delivery, "acknowledged")
                        continue
                    if delivery.attempt >= plan.max_attempts:
                        settle(delivery, "lost")
                        continue
                    threading.Timer(_backoff(plan, delivery), grid.put, (delivery,)).start()
                    continue
                except Exception:
                    if delivery.attempt >= plan.max_attempts:
                        settle(delivery, "lost")
                        continue
                    threading.Timer(_backoff(plan, delivery), grid.put, (delivery,)).start()
                    continue
                settle(delivery, "settled")

        threads = [threading.Thread(target=instance, args=(i,), name=f"storm-{i}") for i in range(plan.instances)]
        for thread in threads:
            thread.start()
        if plan.restart_after < 1:
            while not done.is_set() and finished[0] < restart_at:
                time.sleep(0.02)
            if not done.is_set():
                self.azurite.restart(plan.restart_pause)
                report.restarted = True
                self._script_webhook(plan.webhook_failures - plan.webhook_failures // 2)
        done.wait(timeout=600)
        for _ in threads:
            grid.put(None)
        for thread in threads:
            thread.join(timeout=60)
        self.keyvault.chaos()
        report.keyvault_faults = dict(self.keyvault.chaos_answers)
        report.lost = sum(1 for how in self._settled.values() if how == "lost") + outstanding[0]
        self._remediate(report)
        self._count(report)
        report.seconds = time.monotonic() - started
        return report

    def _script_webhook(self, count: int) -> None:
        for n in range(count):
            if n % 2:
                self.receiver.answer(429, headers={"Retry-After": "0"})
            else:
                self.receiver.answer(500)

    # remediation: two instances start and track every job, each job message delivered to both

    def _remediate(self, report: StormReport) -> None:
        options = {"credential": self.arm.credential, **self.arm.client_kwargs}
        instances = [remediation_from_env(self.env, automation_options=options) for _ in range(2)]
        for remediation in instances:
            remediation.settings = _fast(remediation.settings)
        jobs = self._take(self.env["REMEDIATION_QUEUE"])
        self._jobs = [json.loads(text) for text in jobs]
        for text in jobs:
            for remediation in instances:
                remediation.start(text)
        for _ in range(10):
            tracking = self._take(self.env["TRACKING_QUEUE"])
            if not tracking:
                break
            for text in tracking:
                for remediation in instances:  # a redelivered tracking message, racing
                    remediation.track(text)

    def _take(self, name: str) -> list[str]:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.storage.queue import QueueClient, TextBase64DecodePolicy

        client = QueueClient.from_connection_string(
            self.azurite.connection_string, name, message_decode_policy=TextBase64DecodePolicy()
        )
        texts: list[str] = []
        try:
            while True:
                messages = list(client.receive_messages(max_messages=32, visibility_timeout=300))
                if not messages:
                    return texts
                for message in messages:
                    texts.append(message.content)
                    client.delete_message(message)
        except ResourceNotFoundError:
            return texts

    # the figures

    def _count(self, report: StormReport) -> None:
        audit = self.pipelines[0].audit
        queued = Counter((job["certificate"], job["version"]) for job in self._jobs)
        expected = {job_id(VAULT, name, version) for name, version, expired in self.versions if not expired}
        # as the runbook receives it: Automation decodes each value the adapter sent as a JSON string literal
        created = Counter(str(decode(job["parameters"].get("JobId", '""'))) for job in self.arm.jobs.values())
        report.duplicate_jobs = sum(n - 1 for n in queued.values() if n > 1) + sum(
            n - 1 for n in created.values() if n > 1
        )
        for name, version, expired in self.versions:
            has_job = queued[(name, version)] > 0
            if expired and has_job:
                report.expired_jobs += 1
            if not expired and not has_job:
                report.missing_jobs += 1
        results: Counter[str] = Counter()
        settled_events: set[str] = set()
        for name, _, _ in self.versions:
            for entry in audit.history(name):
                if entry.kind == "job-result":
                    results[str(entry.details.get("job_id"))] += 1
                if entry.kind in (*SETTLED_KINDS, "event-rejected", "event-ignored"):
                    settled_events.add(entry.event_id)
        report.results = sum(results.values())
        report.duplicate_results = sum(n - 1 for n in results.values() if n > 1)
        report.missing_jobs += len(expected - set(created))  # queued but never started at the ARM fake
        report.unaudited = sum(
            1 for event, how in self._settled.items() if how == "settled" and event not in settled_events
        )
        accepted: Counter[tuple[str, str, str]] = Counter()  # notices the receiver took (2xx) per outcome
        ids: dict[tuple[str, str, str], set[str]] = {}
        for request in self.receiver.received:
            payload = json.loads(request.body)
            data = payload.get("data", {})
            key = (str(data.get("certificate")), str(data.get("version")), str(payload.get("type")))
            ids.setdefault(key, set()).add(request.headers.get("webhook-id", ""))
            if 200 <= request.status < 300:
                accepted[key] += 1
            else:
                report.webhook_faults += 1
        report.notices = sum(accepted.values())
        report.max_notices_per_outcome = max(accepted.values(), default=0)
        report.webhook_ids_per_outcome = max((len(v) for v in ids.values()), default=0)


def _backoff(plan: StormPlan, delivery: _Delivery) -> float:
    """Event Grid's growing pause before a delivery comes back (compressed: seconds, not minutes)."""
    return min(plan.redelivery_delay * 1.5 ** (delivery.attempt - 1), 1.0)


def _fast(settings: Any) -> Any:
    import dataclasses

    return dataclasses.replace(settings, first_poll=0, poll_cap=0, retry_base=0)
