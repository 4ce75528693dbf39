"""What `certsync reconcile` costs at fleet scale, beside its floor, measured in the same run.

For each size (1,000 and 10,000 certificates; `--quick`: 200 and 1,000) it builds a vault directory of
N certificates x 3 versions (PEM: leaf + intermediate; one EC root and intermediate, one reused leaf
key, so building 30,000 certificates takes seconds), each with `certsync-*` tags and `created` times in
its certificate.json, a trust file holding the root, then, each in a fresh child process (peak RSS is the
child's `ru_maxrss`):

- first: `local_reconciler(...).run(at)` on empty audit and state files: every latest version is
  unprocessed, so each goes through the pipeline (assessment, plan, job file, audit entries);
- daily: the same again, nothing new: every version is settled, every state already remembered;
- floor: parse every latest leaf (`Certificate.from_der`) and verify its one signature with the
  issuer's key (cryptography) -- the least any reconciliation must do per certificate.

Memory is the process tree's: a thread of the child reads the proportional set size (PSS, from
/proc/PID/smaps_rollup: each page shared by n processes counts 1/n, so the forked pool's inherited pages
count once) of the child and of its pool's workers every 250 ms; `mem` is the largest sum seen. `rss bound`
is the sum of peak RSS (the child's plus each worker at the largest worker's peak), which counts every
shared page once per process: an upper bound, shown beside it.

Revocation is off (the leaves carry no CRL distribution point; CRL costs are bench/assess.py's).
Prints a table and, on its last line, `key=value` pairs: wall and CPU seconds, peak memory (MiB, PSS) and
the RSS bound, per-certificate microseconds of the first and the daily run at each size, the floor's, the ratio of
each run to the floor, and `flat` = per-certificate cost at the largest size / at the smallest (daily).
Run: `make bench` or `.venv/bin/python bench/scale.py [--quick] [--sizes 1000,10000]`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

from shared.cli.progress import on_stderr  # noqa: E402

AT = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
VERSIONS = 3
# Certificates per worker group (one Exchange organisation each): an MSP's fleet is many organisations of a
# few mail certificates each. A plan reads its whole organisation's inventory, so a larger group costs more
# per certificate: `--group-size 100` measures that case.
GROUP_SIZE = 10


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bench"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


def _ca(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(AT - dt.timedelta(days=3650))
        .not_valid_after(AT + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(signer, hashes.SHA256())
    )


def build_vault(folder: Path, count: int, group_size: int = GROUP_SIZE) -> Path:
    """N certificate folders x 3 versions under `folder`/vault; the trust file is `folder`/root.pem."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    inter_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    root = _ca("Bench Root", root_key, "Bench Root", root_key)
    inter = _ca("Bench Issuing CA", inter_key, "Bench Root", root_key)
    (folder / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    inter_pem = inter.public_bytes(serialization.Encoding.PEM)
    vault = folder / "vault"
    vault.mkdir()
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(inter_key.public_key())
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    usage = x509.KeyUsage(True, False, True, False, False, False, False, False, False)
    groups: dict[str, list[tuple[str, x509.Certificate]]] = {}
    progress = on_stderr(f"building {count} certificates", total=count)  # a bar only on a terminal
    for i in range(count):
        name = f"mail-{i:05d}"
        host = f"{name}.bench.example"
        cert_folder = vault / name
        cert_folder.mkdir()
        created = {}
        for v in range(VERSIONS):
            start = AT - dt.timedelta(days=90 * (VERSIONS - v))
            leaf = (
                x509.CertificateBuilder()
                .subject_name(_name(host))
                .issuer_name(inter.subject)
                .public_key(leaf_key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(start)
                .not_valid_after(start + dt.timedelta(days=365))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(usage, critical=True)
                .add_extension(eku, critical=False)
                .add_extension(aki, critical=False)
                .sign(inter_key, hashes.SHA256())
            )
            if v == VERSIONS - 2:  # the version Exchange has today; the latest replaces it
                groups.setdefault(f"hrw-bench-{i // group_size:04d}", []).append((name, leaf))
            version = f"v{v}{i:05d}"
            (cert_folder / f"{version}.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + inter_pem)
            created[version] = (start).strftime("%Y-%m-%dT%H:%M:%SZ")
        meta = {
            "tags": {
                "certsync-worker-group": f"hrw-bench-{i // group_size:04d}",
                "certsync-hosts": host,
            },
            "created": created,
        }
        (cert_folder / "certificate.json").write_text(json.dumps(meta))
        progress.advance(1)
    progress.close()
    (folder / "inventories.json").write_text(json.dumps([_inventory(g, certs) for g, certs in groups.items()]))
    return vault


def _inventory(group: str, deployed: list[tuple[str, x509.Certificate]]) -> dict:
    """A certsync.inventory/1 of `group`: two Mailbox servers; each certificate's deployed version on both,
    named by its own send connector and a receive connector per server (certsync.inventory/1, spec §1)."""
    servers = ("EX01", "EX02")
    certificates, send, receive = [], [], []
    for name, leaf in deployed:
        subject, issuer = leaf.subject.rfc4514_string(), leaf.issuer.rfc4514_string()
        # Windows prints the last RDN first, as RFC 4514 does: "CN=..., O=Bench"
        subject = ", ".join(subject.split(","))
        issuer = ", ".join(issuer.split(","))
        value = f"<I>{issuer}<S>{subject}"
        thumbprint = hashlib.sha1(leaf.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
        for server in servers:
            certificates.append(
                {"Server": server, "Thumbprint": thumbprint, "Subject": subject, "Issuer": issuer,
                 "Services": "SMTP", "Status": "Valid", "CertificateDomains": [f"{name}.bench.example"]}
            )  # fmt: skip
            receive.append({"Identity": f"{server}\\{name}", "Server": server, "TlsCertificateName": value})
        send.append({"Identity": f"To {name}", "SourceTransportServers": list(servers), "TlsCertificateName": value})
    return {
        "schema": "certsync.inventory/1",
        "worker_group": group,
        "collected_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "servers": [
            {"Name": s, "ServerRole": "Mailbox", "IsEdgeServer": False,
             "InternalTransportCertificateThumbprint": f"{n:02d}" * 20}
            for n, s in enumerate(servers)
        ],
        "certificates": certificates,
        "send_connectors": send,
        "receive_connectors": receive,
        "hybrid_configuration": None,
        "exo": None,
        "errors": [],
    }  # fmt: skip


def keep_inventories(folder: Path) -> None:
    """Store every worker group's inventory as `certsync discover --import` would (not measured)."""
    from shared.pipeline.inventories import InventoryRecord
    from shared.wiring import local_inventory_store

    store = local_inventory_store(str(folder / "inventory.sqlite"))
    for document in json.loads((folder / "inventories.json").read_text()):
        when = dt.datetime.now(dt.timezone.utc)
        store.put(InventoryRecord(document["worker_group"], when, when, document, "import"))


# --- the child: one measured thing, figures as JSON on stdout ---------------------------------------


def _pss_kib(pid: int) -> int:
    """The process's proportional set size in KiB (0 once it has ended)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as listed:
                found += [int(p) for p in listed.read().split()]
    return found


class _PeakMemory(threading.Thread):
    """The largest PSS sum of this process and its children, sampled every 250 ms until `stop`."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_kib = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        me = os.getpid()
        while not self._stop_event.wait(0.25):
            total = _pss_kib(me) + sum(_pss_kib(child) for child in _children(me))
            self.peak_kib = max(self.peak_kib, total)

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return self.peak_kib / 1024


def child(kind: str, folder: Path) -> None:
    memory = _PeakMemory()
    if Path("/proc/self/smaps_rollup").exists():
        memory.start()
    start_cpu = time.process_time()
    start = time.perf_counter()
    if kind == "floor":
        from cryptography.hazmat.primitives.asymmetric import ec as _ec

        from shared.x509.certificate import Certificate

        inter = None
        folders = sorted((folder / "vault").iterdir())
        for cert_folder in folders:
            latest = max(p for p in cert_folder.iterdir() if p.suffix == ".pem")
            pem = latest.read_bytes()
            leaf_pem, _, rest = pem.partition(b"-----END CERTIFICATE-----")
            leaf_x = x509.load_pem_x509_certificate(leaf_pem + b"-----END CERTIFICATE-----\n")
            Certificate.from_der(leaf_x.public_bytes(serialization.Encoding.DER))
            if inter is None:
                inter = x509.load_pem_x509_certificate(rest.strip() + b"\n")
            key = inter.public_key()
            assert isinstance(key, _ec.EllipticCurvePublicKey)
            key.verify(leaf_x.signature, leaf_x.tbs_certificate_bytes, _ec.ECDSA(hashes.SHA256()))
        count = len(folders)
    else:
        from shared.pipeline.process import PipelineSettings
        from shared.validation.assessment import TrustStore
        from shared.wiring import local_reconciler

        settings = PipelineSettings(trust=TrustStore.from_file(str(folder / "root.pem")), revocation="off")
        reconciler = local_reconciler(
            vault_dir=str(folder / "vault"),
            vault="bench",
            outbox=str(folder / "outbox"),
            audit=str(folder / "audit.sqlite"),
            state=str(folder / "state.sqlite"),
            inventory_store=str(folder / "inventory.sqlite"),
            settings=settings,
            workers=int(os.environ["BENCH_WORKERS"]) if os.environ.get("BENCH_WORKERS") else None,
        )
        report = reconciler.run(AT)
        count = len(report.certificates)
        if report.failures:
            raise SystemExit(f"reconcile failed: {report.failures[:3]}")
    wall = time.perf_counter() - start
    mem = memory.stop() if memory.is_alive() else 0.0
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)  # the reconcile pool's workers, once they ended
    cpu = time.process_time() - start_cpu + workers.ru_utime + workers.ru_stime
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    worker_rss = workers.ru_maxrss / 1024  # the largest worker's peak
    pool = (os.cpu_count() or 1) if worker_rss else 0
    total = rss + pool * worker_rss  # at most: each worker at the largest one's peak
    print(
        json.dumps(
            {
                "wall": wall,
                "cpu": cpu,
                "mem": mem or total,  # no /proc: the bound
                "rss": total,
                "parent_rss": rss,
                "worker_rss": worker_rss,
                "count": count,
            }
        )
    )


# Linux carries a process's RSS high-water mark across fork and exec, so a child started from this process
# (which built the vault) would report at least this process's RSS as its own peak. A bare `python -S`
# forks the child instead, so its peak starts from the launcher's few MiB.
LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def measure(kind: str, folder: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-S", "-c", LAUNCHER, sys.executable, __file__, "--child", kind, str(folder)]
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{kind} in {folder} failed:\n{out.stderr[-2000:]}")
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 and 1,000 certificates")
    parser.add_argument("--sizes", help="comma-separated certificate counts")
    parser.add_argument("--group-size", type=int, help=f"certificates per worker group (default {GROUP_SIZE})")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    group_size = args.group_size or GROUP_SIZE
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([200, 1000] if args.quick else [1000, 10000])
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    headline: dict[str, str] = {}
    print(f"cores={os.cpu_count()} load={os.getloadavg()[0]:.2f} dir={base} group_size={group_size}")
    print(
        f"{'size':>6} {'run':<6} {'wall s':>8} {'cpu s':>8} {'mem MiB':>8} {'rss bound':>9} {'us/cert':>9}"
        f" {'x floor':>8}"
    )
    per_cert: dict[tuple[int, str], float] = {}
    for size in sizes:
        with tempfile.TemporaryDirectory(dir=base, prefix="certsync-scale-") as tmp:
            folder = Path(tmp)
            started = time.perf_counter()
            build_vault(folder, size, group_size)
            keep_inventories(folder)
            print(f"built {size} x {VERSIONS} versions in {time.perf_counter() - started:.1f} s")
            results = {kind: measure(kind, folder) for kind in ("floor", "first", "daily")}
        floor_us = results["floor"]["wall"] / size * 1e6
        for kind in ("floor", "first", "daily"):
            r = results[kind]
            us = r["wall"] / size * 1e6
            per_cert[(size, kind)] = us
            ratio = us / floor_us
            print(
                f"{size:>6} {kind:<6} {r['wall']:>8.2f} {r['cpu']:>8.2f} {r['mem']:>8.0f} {r['rss']:>9.0f} {us:>9.0f}"
                f" {ratio:>8.1f}"
            )
            tag = f"{kind}_{size // 1000}k" if size >= 1000 else f"{kind}_{size}"
            headline[f"{tag}_wall_s"] = f"{r['wall']:.2f}"
            headline[f"{tag}_cpu_s"] = f"{r['cpu']:.2f}"
            headline[f"{tag}_mem_mib"] = f"{r['mem']:.0f}"
            headline[f"{tag}_rss_bound_mib"] = f"{r['rss']:.0f}"
            headline[f"{tag}_us_per_cert"] = f"{us:.0f}"
            if kind != "floor":
                headline[f"{tag}_x_floor"] = f"{ratio:.1f}"
    small, large = min(sizes), max(sizes)
    for kind in ("first", "daily"):
        headline[f"{kind}_flat"] = f"{per_cert[(large, kind)] / per_cert[(small, kind)]:.2f}"
    print(" ".join(f"{k}={v}" for k, v in headline.items()))


if __name__ == "__main__":
    main()
