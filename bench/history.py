"""What `certsync history` costs over a long audit trail, in SQLite and in Azure Tables (Azurite), beside
a floor measured in the same run.

Setup (not timed): N entries (default 100,000) of one certificate, a second apart, cycling through the
pipeline's kinds with details of realistic size (an event, an assessment of a three-certificate chain, a
plan, a queued job: 0.3-1.2 KB of JSON each), written the way each backend stores them: SQLite rows as
`SqliteAuditLog.record` writes them (bulk-inserted in one transaction), Table entities as
`TableAuditLog.record` writes them (in batches of 100, one partition) to an Azurite started the way
tests/azurite.py starts it (in memory, loopback). Entries of a second certificate are interleaved in both
stores, so the reads must select a partition.

Each contender is a child process (the venv's python, started fresh: interpreter and imports included)
with stdout to /dev/null; the figures are its wall time, its CPU time (user + system: what a busy
machine's load does not inflate as much) and peak RSS (`wait4`'s ru_maxrss):
- sqlite: `certsync history NAME --audit FILE` (the text listing), and with `--json`;
- sqlite_tail: `--since` the last 100 entries' time with `--limit 100` (one indexed range read);
- sqlite_floor: a bare `SELECT row_key, body` of the same rows in key order, each body written out;
- tables: `TableAuditLog.history` of the partition, each entry written as `certsync history` prints it;
- tables_tail: the same `--since` the last 100 entries' time, `limit=100`; tables_page: the first page of
  1,000 (what the history function answers at once; its `next` link fetches the following page);
- tables_floor: the SDK's `TableClient.query_entities` of the same partition (1,000 per page), each
  entity written as JSON.
Contenders run interleaved (ABCDEF, ABCDEF, ...) for R rounds; figures are medians. ratio = contender / floor.
The target of issue 19 is ≤ 1 s and ≤ 300 MiB for 100,000 rows.

Prints figures, never pass/fail, and the load average; the last line is the headline as key=value:
`rows=`, `sqlite_s=`, `sqlite_cpu_s=`, `sqlite_mib=`, `sqlite_json_s=`, `sqlite_json_mib=`,
`sqlite_tail_s=`, `sqlite_floor_s=`, `sqlite_floor_mib=`, `sqlite_ratio=`, `sqlite_json_ratio=`, `tables_s=`,
`tables_cpu_s=`, `tables_mib=`, `tables_floor_s=`, `tables_floor_mib=`, `tables_ratio=`, `tables_tail_s=`,
`tables_page_s=`, `tables_page_mib=`.
Run: `make bench` or `.venv/bin/python bench/history.py [--rows N] [--rounds R] [--quick]`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `shared` and `tests` without relying on the editable install

from shared.adapters.azure.storage import fit_table_string, table_key  # noqa: E402
from shared.adapters.local.sqlite import SqliteAuditLog  # noqa: E402
from shared.pipeline.audit import AuditEntry, partition  # noqa: E402
from tests.azurite import Azurite  # noqa: E402

NAME = "exch-hybrid-smtp"
OTHER = "exch-internal"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
TAIL = 100
PAGE = 1000  # what GET /api/certificates/{name}/history answers at most at once

# The children: each prints what `certsync history` would, to stdout (/dev/null).
SQLITE_FLOOR = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
out = sys.stdout
for row_key, body in db.execute(
    "SELECT row_key, body FROM audit WHERE partition = ? ORDER BY row_key", (sys.argv[2],)
):
    out.write(body + "\\n")
"""
TABLES_HISTORY = """
import sys
from shared.times import parse_time
from shared.wiring import audit_from_env
audit = audit_from_env({"JobsStorage": sys.argv[1], "AUDIT_TABLE": sys.argv[2]})
out = sys.stdout
since = parse_time(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] else None
limit = int(sys.argv[5]) if len(sys.argv) > 5 else None
for entry in audit.history(sys.argv[3], since=since, limit=limit):
    item = entry.to_dict()
    out.write(f"{item['at'][:19]}Z  {item['kind']:<15} {entry.correlation_id[:8]}  {entry.summary}\\n")
"""
TABLES_FLOOR = """
import json, sys
from azure.data.tables import TableClient
table = TableClient.from_connection_string(sys.argv[1], sys.argv[2])
out = sys.stdout
for entity in table.query_entities("PartitionKey eq @pk", parameters={"pk": sys.argv[3]}, results_per_page=1000):
    out.write(json.dumps(entity) + "\\n")
"""


def entries(count: int, name: str, start: dt.datetime) -> list[AuditEntry]:
    thumb = "3f" * 20
    chain = [
        {
            "subject": f"CN={cn}, O=Contoso, C=US",
            "issuer": "CN=Contoso Root, O=Contoso, C=US",
            "thumbprint": thumb.upper(),
            "not_after": "2027-01-31T00:00:00Z",
            "status": "Valid",
        }
        for cn in ("mail.contoso.com", "Contoso R11", "Contoso Root")
    ]
    details: list[dict] = [
        {"event": {"id": "evt-1", "event_type": "Microsoft.KeyVault.CertificateNewVersionCreated", "vault": "kv"}},
        {"assessment": {"status": "Valid", "problems": [], "chain": chain, "hosts": ["mail.contoso.com"]}},
        {"plan": {"change": "issuer_changed", "servers": ["EX01", "EX02"], "connectors": ["Outbound to Office 365"]}},
        {"job_id": uuid.UUID(int=7).hex, "thumbprint": thumb.upper(), "secret_id": "https://kv/secrets/x/v"},
    ]
    kinds = ("event-received", "assessment", "plan", "job-queued")
    return [
        AuditEntry(
            certificate=name,
            kind=kinds[i % 4],
            correlation_id=uuid.UUID(int=i // 4).hex,
            summary=f"{kinds[i % 4]} for version v{i // 4} of {name}",
            at=start + dt.timedelta(seconds=i),
            vault="contoso-kv",
            version=f"{i // 4:032x}",
            event_id=f"evt-{i // 4}",
            details=details[i % 4],
            entry_id=uuid.UUID(int=i).hex,
        )
        for i in range(count)
    ]


def fill_sqlite(path: Path, rows: list[AuditEntry]) -> None:
    """The rows `SqliteAuditLog.record` writes, in one transaction (the bench's setup, not its subject)."""
    SqliteAuditLog(path).close()  # the schema, as the backend makes it
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO audit (partition, row_key, body) VALUES (?, ?, ?)",
            ((partition(e.certificate), e.row_key, json.dumps(e.to_dict(), sort_keys=True)) for e in rows),
        )
    db.close()


def fill_table(connection_string: str, table: str, rows: list[AuditEntry]) -> None:
    """The entities `TableAuditLog.record` writes, in batches of 100 of one partition."""
    from azure.data.tables import TableClient

    client = TableClient.from_connection_string(connection_string, table)
    client.create_table()
    batch: list = []
    for e in rows:
        properties = e.to_dict()
        details, _ = fit_table_string(json.dumps(properties.pop("details"), sort_keys=True, ensure_ascii=False))
        entity = {"PartitionKey": table_key(partition(e.certificate)), "RowKey": e.row_key, **properties}
        batch.append(("create", {**entity, "details": details}))
        if len(batch) == 100 or batch[0][1]["PartitionKey"] != entity["PartitionKey"]:
            client.submit_transaction(batch)
            batch = []
    if batch:
        client.submit_transaction(batch)


# Linux carries the RSS high-water mark across fork and exec, so a child forked straight from this (large)
# process would report at least this process's RSS. A bare `python -S` (a few MiB, less than any
# contender) forks it instead and reports its rusage on the file descriptor it is given.
LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
report = (os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime, usage.ru_maxrss)
os.write(int(sys.argv[1]), " ".join(map(str, report)).encode())
"""


def child(args: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MiB) of one child process, stdout to
    /dev/null."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    read, write = os.pipe()
    with open(os.devnull, "wb") as sink:
        started = time.perf_counter()
        process = subprocess.run(
            [sys.executable, "-S", "-c", LAUNCHER, str(write), *args],
            stdout=sink,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=env,
            pass_fds=(write,),
        )
        wall = time.perf_counter() - started
    os.close(write)
    with os.fdopen(read) as report:
        code, cpu, rss = report.read().split()
    if int(code) or process.returncode:
        errors = process.stderr.decode(errors="replace").strip()[-500:]
        raise SystemExit(f"{' '.join(args[:4])}... exited {code}: {errors}")
    return wall, float(cpu), int(rss) / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="10,000 rows, one round")
    args = parser.parse_args(argv)
    rows, rounds = (10_000, 1) if args.quick else (args.rows, args.rounds)
    python = sys.executable
    certsync = str(Path(python).with_name("certsync"))
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; {rows} rows, {rounds} round(s)")

    mine = entries(rows, NAME, T0)
    theirs = entries(rows // 10, OTHER, T0)
    since = mine[-TAIL].to_dict()["at"]
    with tempfile.TemporaryDirectory(prefix="certsync-bench-history-") as work, Azurite() as azurite:
        audit = Path(work) / "audit.sqlite"
        started = time.perf_counter()
        fill_sqlite(audit, mine + theirs)
        table = f"audit{uuid.uuid4().hex[:12]}"
        fill_table(azurite.connection_string, table, mine + theirs)
        print(f"setup: {len(mine) + len(theirs)} rows in each store in {time.perf_counter() - started:.1f} s")
        cs, pk = azurite.connection_string, table_key(partition(NAME))
        contenders = {
            "sqlite": [certsync, "history", NAME, "--audit", str(audit)],
            "sqlite_json": [certsync, "history", NAME, "--audit", str(audit), "--json"],
            "sqlite_tail": [certsync, "history", NAME, "--audit", str(audit), "--since", since, "--limit", str(TAIL)],
            "sqlite_floor": [python, "-c", SQLITE_FLOOR, str(audit), partition(NAME)],
            "tables": [python, "-c", TABLES_HISTORY, cs, table, NAME],
            "tables_tail": [python, "-c", TABLES_HISTORY, cs, table, NAME, since, str(TAIL)],
            "tables_page": [python, "-c", TABLES_HISTORY, cs, table, NAME, "", str(PAGE)],
            "tables_floor": [python, "-c", TABLES_FLOOR, cs, table, pk],
        }
        samples: dict[str, list[tuple[float, float, float]]] = {k: [] for k in contenders}
        for _ in range(rounds):
            for key, command in contenders.items():
                samples[key].append(child(command))

    figures: dict[str, float] = {}
    print(f"{'contender':<14} {'wall s':>8} {'cpu s':>8} {'peak MiB':>9}")
    for key, runs in samples.items():
        wall, cpu, rss = (statistics.median(run[i] for run in runs) for i in range(3))
        figures[f"{key}_s"], figures[f"{key}_cpu_s"], figures[f"{key}_mib"] = wall, cpu, rss
        print(f"{key:<14} {wall:>8.3f} {cpu:>8.3f} {rss:>9.1f}")
    head = {
        "rows": rows,
        "sqlite_s": f"{figures['sqlite_s']:.3f}",
        "sqlite_cpu_s": f"{figures['sqlite_cpu_s']:.3f}",
        "sqlite_mib": f"{figures['sqlite_mib']:.0f}",
        "sqlite_json_s": f"{figures['sqlite_json_s']:.3f}",
        "sqlite_json_mib": f"{figures['sqlite_json_mib']:.0f}",
        "sqlite_tail_s": f"{figures['sqlite_tail_s']:.3f}",
        "sqlite_floor_s": f"{figures['sqlite_floor_s']:.3f}",
        "sqlite_floor_mib": f"{figures['sqlite_floor_mib']:.0f}",
        "sqlite_ratio": f"{figures['sqlite_s'] / figures['sqlite_floor_s']:.2f}",
        "sqlite_json_ratio": f"{figures['sqlite_json_s'] / figures['sqlite_floor_s']:.2f}",
        "tables_s": f"{figures['tables_s']:.3f}",
        "tables_cpu_s": f"{figures['tables_cpu_s']:.3f}",
        "tables_mib": f"{figures['tables_mib']:.0f}",
        "tables_floor_s": f"{figures['tables_floor_s']:.3f}",
        "tables_floor_mib": f"{figures['tables_floor_mib']:.0f}",
        "tables_ratio": f"{figures['tables_s'] / figures['tables_floor_s']:.2f}",
        "tables_tail_s": f"{figures['tables_tail_s']:.3f}",
        "tables_page_s": f"{figures['tables_page_s']:.3f}",
        "tables_page_mib": f"{figures['tables_page_mib']:.0f}",
    }
    print(" ".join(f"{k}={v}" for k, v in head.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
