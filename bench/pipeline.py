"""What the event pipeline costs per event, beside its floor, and what the Function App's cold import
costs, beside a bare `import azure.functions`, measured in the same run.

1. Events per second through `Pipeline.process` on the local adapters, caches warm. The renewal of
   tests/test_pipeline.py: an EC root, intermediates R10 and R11 (CRL from the root), the old leaf
   under R10 and the new one under R11 (CRLs from their issuers), all CRLs served on a loopback
   `tests.servers.HttpServer`; a `DirectoryVault`, an `OutboxQueue`, a `SqliteAuditLog` and a targets
   file, all in a temporary directory. One certificate folder per event (cert-0000, ...: v1 = old,
   v2 = new, certificate.json), since `DirectoryVault` reads every version of a certificate on each
   call: N versions in one folder would measure that scan, growing with N. One pipeline and its
   `FetchCache`, warmed by a first event (the only CRL fetches; a later fetch stops the bench).
   - queued: each sample pushes N distinct `CertificateNewVersionCreated` events (version v2 of N
     certificates), each queueing its own job; the events are parsed beforehand (parse_event is the
     Function's work, not the pipeline's). Figure: events / second.
   - duplicate: the same N events delivered again; each ends "duplicate", no job. (The pipeline asks
     the queue before reading the source, so a redelivery skips the assessment: compare with floor.)
   - floor: `assess()` of the same bundle, hosts, trust store and allow-list with the same warm
     cache, N times: the assessment every event needs whatever the adapters. x floor = time per
     event / time per assessment: what the pipeline adds around it (source reads, targets, plan, job
     file, four audit entries).
   Samples are interleaved in a rotating order; the figure is the median over rounds. It runs twice:
   in the system's temporary directory, then in /dev/shm (tmpfs) where there is one. SQLite commits
   each audit entry on its own, so on a disk the flushes (fsync) dominate and vary with the disk and
   its load; the tmpfs run shows what the pipeline costs in CPU.
2. Cold import in a fresh interpreter (the venv's python, cwd = the repository, bytecode cached),
   measured first, before the pipeline leaves the disk busy: `import function_app` beside
   `import azure.functions`, timed with perf_counter inside the process, runs interleaved after one
   warm-up each; medians. import_ratio = function_app / azure.functions (the target is 1.5 at most:
   the Azure SDKs and cryptography are imported on first use). The same processes report which heavy
   modules `import function_app` left in sys.modules; for any, `python -X importtime` names the chain
   of imports that pulled it in.

Prints figures and ratios, never pass/fail, and the load average (on a busy machine the wall times
scatter; the import table adds each side's fastest run). The last line is the headline:
`import_ratio=` (medians), `events_per_s=`, `import_ratio_min=` (fastest runs), `duplicate_per_s=`,
`assess_per_s=`, `pipeline_ratio=` (in the temporary directory), `events_per_s_ram=`,
`pipeline_ratio_ram=` (on tmpfs), `function_app_import_ms=`, `azure_functions_import_ms=`,
`heavy_modules=`, `event_cpu_ms_pem=`, `event_cpu_ms_pfx=` (CPU ms per queued event, the new version stored
as PEM, then as a PFX with the empty password as Key Vault exports it; on tmpfs; the target is 2 ms) and
`assess_cpu_ms=` (the floor's CPU per assessment).
Run: `make bench` or `.venv/bin/python bench/pipeline.py [--quick]`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `shared` and `tests` without relying on the editable install

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.serialization import pkcs12  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID  # noqa: E402

from shared.adapters.local.outbox import OutboxQueue  # noqa: E402
from shared.adapters.local.sqlite import SqliteAuditLog  # noqa: E402
from shared.adapters.local.vault_directory import DirectoryVault  # noqa: E402
from shared.pipeline.events import parse_event  # noqa: E402
from shared.pipeline.process import Pipeline, PipelineSettings  # noqa: E402
from shared.pipeline.targets import load_targets_file  # noqa: E402
from shared.times import utc_now  # noqa: E402
from shared.validation.assessment import TrustStore, assess  # noqa: E402
from shared.validation.fetch import Fetcher  # noqa: E402
from shared.wiring import local_inventory_store  # noqa: E402
from shared.x509.certificate import Certificate  # noqa: E402
from shared.x509.containers import load_certificate_file  # noqa: E402
from tests import test_pipeline  # noqa: E402
from tests.chains import issue, make_crl, make_name, pem_of  # noqa: E402
from tests.inventories import exchange, keep  # noqa: E402
from tests.servers import HttpServer  # noqa: E402

VAULT = "contoso-kv"
HOSTS = ["mail.contoso.com", "autodiscover.contoso.com"]
SEND = "Outbound to Office 365 - 0b9d5c6e-3f51-4d2b-9a70-2f1c8e4b7a10"
RAM_DIR = "/dev/shm"  # tmpfs on Linux: the same pipeline without the disk's flushes
HEAVY = ("cryptography", "azure.storage", "azure.data", "azure.keyvault", "azure.identity")
IMPORT_PROBE = (
    "import time, sys; t = time.perf_counter(); import {module}; d = time.perf_counter() - t; "
    "print(d); print(','.join(h for h in {heavy!r} if h in sys.modules))"
)


# --- 1. events per second ----------------------------------------------------------------------------


def event(name: str, version: str) -> dict:
    """A Key Vault CertificateNewVersionCreated event in the Event Grid schema (as in the tests)."""
    return test_pipeline.event(version, vault=VAULT, name=name, event_id=f"evt-{name}-{version}")


class Renewal:
    """The renewal of tests/test_pipeline.py, with `count` certificate folders (names cert-0000...)."""

    def __init__(self, server: HttpServer, work: Path, count: int, container: str = "pem") -> None:
        root = issue(make_name("Contoso Demo Root", "Contoso"), kind="ec", ca=True, path_length=1)
        inters = []
        for cn in ("R10", "R11"):
            inter = issue(
                make_name(cn, "Contoso"),
                issuer=root,
                kind="ec",
                ca=True,
                path_length=0,
                crl_urls=[server.url("/root.crl")],
            )
            inters.append(inter)
            server.route(f"/{cn}.crl", body=make_crl(inter))
        server.route("/root.crl", body=make_crl(root))
        old, new = (
            issue(
                make_name("mail.contoso.com"),
                issuer=inter,
                kind="ec",
                dns_names=HOSTS,
                eku=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
                crl_urls=[server.url(f"/{cn}.crl")],
            )
            for inter, cn in zip(inters, ("R10", "R11"), strict=True)
        )
        self.server = server
        self.names = [f"cert-{i:04d}" for i in range(count)]
        self.vault_dir = work / "vault"
        old_pem, new_pem = pem_of([old, inters[0]]), pem_of([new, inters[1]])
        new_file, new_bytes = "v2.pem", new_pem
        if container == "pfx":  # as Key Vault exports it: key, leaf and chain, the empty password, a MAC
            new_file = "v2.pfx"
            new_bytes = pkcs12.serialize_key_and_certificates(
                b"mail", new.key, new.cert, [inters[1].cert], serialization.NoEncryption()
            )
        meta = json.dumps({"created": {"v1": "2026-08-01T00:00:00Z", "v2": "2026-11-20T00:00:00Z"}})
        for name in self.names:
            folder = self.vault_dir / name
            folder.mkdir(parents=True)
            (folder / "v1.pem").write_bytes(old_pem)
            (folder / new_file).write_bytes(new_bytes)
            (folder / "certificate.json").write_text(meta)
        entry = {
            "worker_group": "hrw-exchange",
            "servers": ["EX01", "EX02"],
            "send_connectors": [SEND],
            "hybrid_configuration": True,
            "hosts": HOSTS,
        }
        targets = work / "targets.json"
        targets.write_text(
            json.dumps({"schema": "certsync.targets/1", "certificates": dict.fromkeys(self.names, entry)})
        )
        self.trust = TrustStore.from_certificates([Certificate.from_der(root.der)], "bench")
        self.allow = (f"127.0.0.1:{server.port}",)
        self.outbox = work / "outbox"
        # Exchange as discovery found it: the old certificate on EX01 and EX02, every connector naming it
        inventories = local_inventory_store(str(work / "inventory.sqlite"))
        keep(inventories, exchange(old), collected=utc_now())
        self.pipeline = Pipeline(
            sources=lambda vault: DirectoryVault(self.vault_dir, vault),  # as tests/test_pipeline.py
            jobs=OutboxQueue(self.outbox),
            audit=SqliteAuditLog(work / "audit.sqlite"),
            settings=PipelineSettings(trust=self.trust, allow_hosts=self.allow),
            targets_file=load_targets_file(str(targets)),
            inventories=inventories,
        )
        self.bundle = load_certificate_file(str(self.vault_dir / self.names[0] / new_file))

    def assess_once(self) -> None:
        result = assess(
            self.bundle, hosts=HOSTS, trust=self.trust, fetcher=Fetcher(allow=self.allow), cache=self.pipeline.cache
        )
        if result.status != "Valid":
            raise AssertionError(result.to_dict())


def _timed(fn: Callable[[], int], cpu: list[float] | None = None) -> float:
    """Items per second of one call of `fn` (which returns how many items it did); with `cpu`, the CPU
    time per item in ms (this process's, all threads: the loopback server is idle once the cache is warm)
    is appended to it."""
    gc.collect()
    start, start_cpu = time.perf_counter_ns(), time.process_time_ns()
    items = fn()
    elapsed, elapsed_cpu = time.perf_counter_ns() - start, time.process_time_ns() - start_cpu
    if cpu is not None:
        cpu.append(elapsed_cpu / items / 1e6)
    return items * 1e9 / elapsed


def measure_pipeline(rounds: int, per_round: int, directory: str | None = None, container: str = "pem") -> dict:
    """Median events/s for queued, duplicate and the assess() floor, and the median CPU ms per queued
    event and per assessment; the work directory under `directory` (the system's temporary directory
    when None); the new versions stored as `container` ("pem", or "pfx" as Key Vault exports them)."""
    with (
        tempfile.TemporaryDirectory(prefix="certsync-bench-pipeline-", dir=directory) as tmp,
        HttpServer() as server,
    ):
        work = Path(tmp)
        renewal = Renewal(server, work, 1 + rounds * per_round, container)
        pipeline = renewal.pipeline
        events = [parse_event(event(name, "v2")) for name in renewal.names]
        warm, batches = events[0], [events[1 + r * per_round : 1 + (r + 1) * per_round] for r in range(rounds)]

        first = pipeline.process(warm)  # fetches the CRLs the new chain needs (root's, R11's) into the cache
        if first.outcome != "queued":
            raise SystemExit(f"bench: the warm-up event ended {first.outcome}: {first.reason}")
        fetched = len(server.requests)
        if pipeline.process(warm).outcome != "duplicate":  # the redelivery path, warmed once too
            raise SystemExit("bench: a redelivered warm-up event was not a duplicate")
        renewal.assess_once()

        def queued(batch: list) -> Callable[[], int]:
            def run() -> int:
                for ev in batch:
                    outcome = pipeline.process(ev)
                    if outcome.outcome != "queued":
                        raise SystemExit(f"bench: {ev.name} ended {outcome.outcome}: {outcome.reason}")
                return len(batch)

            return run

        def duplicate(batch: list) -> Callable[[], int]:
            def run() -> int:
                for ev in batch:
                    outcome = pipeline.process(ev)
                    if outcome.outcome != "duplicate":
                        raise SystemExit(f"bench: {ev.name} again ended {outcome.outcome}: {outcome.reason}")
                return len(batch)

            return run

        def floor() -> int:
            for _ in range(per_round):
                renewal.assess_once()
            return per_round

        samples: dict[str, list[float]] = {"queued": [], "duplicate": [], "assess": []}
        cpu: dict[str, list[float]] = {"queued": [], "duplicate": [], "assess": []}
        # A batch's duplicates must follow its first delivery; the floor takes turns around them.
        orders = (
            ("assess", "queued", "duplicate"),
            ("queued", "assess", "duplicate"),
            ("queued", "duplicate", "assess"),
        )
        for r, batch in enumerate(batches):
            cases = {"assess": floor, "queued": queued(batch), "duplicate": duplicate(batch)}
            for key in orders[r % len(orders)]:
                samples[key].append(_timed(cases[key], cpu[key]))
        if len(server.requests) != fetched:
            raise SystemExit("bench: the warm cache fetched again")
        jobs = len(list(renewal.outbox.glob("*.json")))
        if jobs != 1 + rounds * per_round:
            raise SystemExit(f"bench: {jobs} job files, expected {1 + rounds * per_round}")
        result = {key: statistics.median(values) for key, values in samples.items()}
        result["queued_cpu_ms"] = statistics.median(cpu["queued"])
        result["assess_cpu_ms"] = statistics.median(cpu["assess"])
        result["crl_fetches"] = fetched
        result["fs"] = _filesystem(work)
        return result


def _filesystem(path: Path) -> str:
    """The type of the file system holding `path` (from /proc/mounts; "?" elsewhere)."""
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "?"
    resolved = str(path.resolve())
    best = max(
        (m for m in mounts if len(m) > 2 and (resolved == m[1] or resolved.startswith(m[1].rstrip("/") + "/"))),
        key=lambda m: len(m[1]),
        default=None,
    )
    return best[2] if best else "?"


# --- 2. cold import ----------------------------------------------------------------------------------


def venv_python() -> str:
    candidate = ROOT / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def venv_label(python: str) -> str:
    path = Path(python)
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def _import_once(python: str, module: str) -> tuple[float, list[str]]:
    code = IMPORT_PROBE.format(module=module, heavy=HEAVY)
    done = subprocess.run([python, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench: import {module} failed: {done.stderr.strip()}")
    seconds, heavy = done.stdout.splitlines()[-2:]
    return float(seconds), [h for h in heavy.split(",") if h]


def measure_imports(runs: int) -> dict[str, object]:
    python = venv_python()
    modules = ("function_app", "azure.functions")
    for module in modules:  # warm-up: bytecode and page cache
        _import_once(python, module)
    times: dict[str, list[float]] = {m: [] for m in modules}
    heavy: set[str] = set()
    for r in range(runs):
        for module in modules[r % 2 :] + modules[: r % 2]:
            seconds, found = _import_once(python, module)
            times[module].append(seconds)
            if module == "function_app":
                heavy.update(found)
    return {
        "function_app_ms": statistics.median(times["function_app"]) * 1e3,
        "azure_functions_ms": statistics.median(times["azure.functions"]) * 1e3,
        "function_app_min_ms": min(times["function_app"]) * 1e3,
        "azure_functions_min_ms": min(times["azure.functions"]) * 1e3,
        "heavy": sorted(heavy),
        "python": python,
    }


def import_chain(python: str, module: str, target: str) -> list[str]:
    """The imports leading from `module` to the first import of `target` (outermost first), from
    `python -X importtime`; empty when it is not imported."""
    done = subprocess.run(
        [python, "-X", "importtime", "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    rows = []  # (depth, name) in the order importtime prints them: children before their parent
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        field = line.rsplit("|", 1)[1]
        name = field.strip()
        if name == "imported package":
            continue
        rows.append(((len(field) - len(field.lstrip(" ")) - 1) // 2, name))
    hits = [i for i, (_, name) in enumerate(rows) if name == target]  # the package itself, else a submodule
    hits = hits or [i for i, (_, name) in enumerate(rows) if name.startswith(target + ".")]
    if hits:
        depth, name = rows[hits[0]]
        chain = [name]
        for later_depth, later_name in rows[hits[0] + 1 :]:  # the enclosing imports follow, shallower
            if later_depth < depth:
                chain.append(later_name)
                depth = later_depth
        return chain[::-1]
    return []


# --- report ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer rounds, events and imports")
    args = parser.parse_args(argv)
    rounds, per_round, runs = (3, 20, 5) if args.quick else (9, 50, 9)

    imports = measure_imports(runs)  # first: before the pipeline leaves dirty pages for the disk to write
    disk = measure_pipeline(rounds, per_round)
    in_ram = measure_pipeline(rounds, per_round, RAM_DIR) if Path(RAM_DIR).is_dir() else None
    cpu_dir = RAM_DIR if Path(RAM_DIR).is_dir() else None
    pem_cpu = in_ram or measure_pipeline(rounds, per_round, cpu_dir)
    pfx_cpu = measure_pipeline(rounds, per_round, cpu_dir, "pfx")

    import_ratio = imports["function_app_ms"] / imports["azure_functions_ms"]
    heavy = imports["heavy"]
    print(
        f"certsync bench/pipeline.py{' --quick' if args.quick else ''}: Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (others' work inflates and scatters the times)"
    )
    print(
        f"pipeline, local adapters, warm CRL cache ({disk['crl_fetches']} CRL fetches, all in warm-up): "
        f"{rounds} rounds of {per_round} events, medians"
    )
    print(f"{'':<56}{'per s':>9}{'µs each':>10}{'x floor':>9}")
    runs_shown = [(f"work directory in {tempfile.gettempdir()} ({disk['fs']})", disk)]
    if in_ram is not None:
        runs_shown.append((f"work directory in {RAM_DIR} ({in_ram['fs']}): no disk flushes", in_ram))
    for label, p in runs_shown:
        print(label)
        rows = (
            ("  queued: Pipeline.process, a new version, job queued", "queued"),
            ("  duplicate: the same event again, no job", "duplicate"),
            ("  floor: assess() of the same bundle, same warm cache", "assess"),
        )
        for text, key in rows:
            print(f"{text:<56}{p[key]:>9,.0f}{1e6 / p[key]:>10.0f}{p['assess'] / p[key]:>9.2f}")
    print("  x floor = time per event / time per assessment, each against the floor measured beside it")
    print(f"CPU per queued event (process time, medians, work directory in {cpu_dir or tempfile.gettempdir()}):")
    for label, p in (
        ("  new version stored as PEM", pem_cpu),
        ("  new version stored as PFX (Key Vault's export)", pfx_cpu),
    ):
        print(f"{label:<56}{p['queued_cpu_ms']:>6.2f} ms  (floor: assess() {p['assess_cpu_ms']:.2f} ms)")
    print("  target: at most 2 ms per event")
    print()
    min_ratio = imports["function_app_min_ms"] / imports["azure_functions_min_ms"]
    print(f"cold import in a fresh {venv_label(imports['python'])}, {runs} interleaved runs")
    print(f"{'':<56}{'median':>9}{'ratio':>8}{'min':>9}{'ratio':>8}")
    print(
        f"{'import function_app':<56}{imports['function_app_ms']:>6.1f} ms{import_ratio:>8.2f}"
        f"{imports['function_app_min_ms']:>6.1f} ms{min_ratio:>8.2f}"
    )
    print(
        f"{'import azure.functions':<56}{imports['azure_functions_ms']:>6.1f} ms{'1.00':>8}"
        f"{imports['azure_functions_min_ms']:>6.1f} ms{'1.00':>8}"
    )
    print(
        f"  ratio = function_app / azure.functions (target: at most 1.50); medians differ by "
        f"{imports['function_app_ms'] - imports['azure_functions_ms']:+.1f} ms"
    )
    if heavy:
        print(f"  heavy modules imported by function_app: {', '.join(heavy)}")
        for module in heavy:
            chain = import_chain(imports["python"], "function_app", module)
            print(f"    {module}: {' -> '.join(chain) if chain else '(chain not found)'}")
    else:
        print(f"  heavy modules imported by function_app: none (checked {', '.join(HEAVY)})")
    print()
    ram = ""
    if in_ram is not None:
        ram = f"events_per_s_ram={in_ram['queued']:.0f} pipeline_ratio_ram={in_ram['assess'] / in_ram['queued']:.2f} "
    print(
        f"import_ratio={import_ratio:.2f} events_per_s={disk['queued']:.0f} import_ratio_min={min_ratio:.2f} "
        f"duplicate_per_s={disk['duplicate']:.0f} "
        f"assess_per_s={disk['assess']:.0f} pipeline_ratio={disk['assess'] / disk['queued']:.2f} {ram}"
        f"function_app_import_ms={imports['function_app_ms']:.1f} "
        f"azure_functions_import_ms={imports['azure_functions_ms']:.1f} heavy_modules={','.join(heavy) or 'none'} "
        f"event_cpu_ms_pem={pem_cpu['queued_cpu_ms']:.2f} event_cpu_ms_pfx={pfx_cpu['queued_cpu_ms']:.2f} "
        f"assess_cpu_ms={pem_cpu['assess_cpu_ms']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
