"""`certsync reconcile` on several certificates, listed in no particular order: one table, worst first, then by
certificate and check, and one line at the end that counts what the table holds. `--json` is the report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CERTSYNC = str(Path(sys.executable).with_name("certsync"))
RANK = ("FAILURE", "CRITICAL", "ERROR", "WARNING", "INFO", "RESOLVED", "PROCESSED")


def test_reconcile_prints_one_sorted_table_and_a_summary(tmp_path):
    # zeta and mid expire in 8 days, alpha expired: created in that order, so no listing sorts them for us
    for name, source in (("zeta", "mail-2026-11.pem"), ("alpha", "mail-2026-08.pem"), ("mid", "mail-2026-11.pem")):
        (tmp_path / "vault" / name).mkdir(parents=True)
        shutil.copy(REPO / "examples" / source, tmp_path / "vault" / name / "v1.pem")
        tags = {"tags": {"certsync-worker-group": "hrw-exchange"}}
        (tmp_path / "vault" / name / "certificate.json").write_text(json.dumps(tags))
    argv = [CERTSYNC, "reconcile", "--vault-dir", "vault", "--vault", "kv", "--at", "2027-02-10", "--revocation", "off"]
    argv += ["--trust", str(REPO / "examples" / "demo-root.pem")]
    env = {k: v for k, v in os.environ.items() if k != "CERTSYNC_DEBUG"}
    result = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 1, result.stderr
    header, *table, summary = result.stdout.splitlines()
    assert header.split() == ["SEVERITY", "CERTIFICATE", "CHECK", "STATE", "DETAIL"]
    rows = [line.split()[:3] for line in table]
    assert rows == sorted(rows, key=lambda row: (RANK.index(row[0]), row[1], row[2]))
    assert rows[0] == ["CRITICAL", "alpha", "assessment"] and rows[-1] == ["PROCESSED", "zeta", "processed"]
    column = header.index("CHECK")
    assert all(line[column - 2 : column] == "  " and line[column] != " " for line in table)  # aligned columns
    severities = [row[0] for row in rows]
    new = sum(1 for line in table if "(new)" in line)
    assert summary == (
        f"3 certificate(s) in kv as of 2027-02-10T00:00:00Z: {severities.count('CRITICAL')} critical, "
        f"{severities.count('WARNING')} warning ({new} new); 3 processed."
    )

    again = subprocess.run([*argv, "--json"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    report = json.loads(again.stdout)
    assert report["certificates"] == ["kv/alpha", "kv/mid", "kv/zeta"] and "summary" in report
