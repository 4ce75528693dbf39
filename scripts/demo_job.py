"""`make demo` step 13: the job file certsync queued for the Hybrid Runbook Worker, summarised: its identifiers,
the plan and the inventory it was made from, the intermediate (a public certificate), and no key material.

    python scripts/demo_job.py OUTBOX
"""

from __future__ import annotations

import base64
import collections
import json
import pathlib
import sys

KEY_WORDS = ("PRIVATE KEY", "ENCRYPTED", "pfx", "pkcs12", "password", "private")


def main(outbox: str) -> None:
    jobs = sorted(pathlib.Path(outbox).glob("*.json"))
    if len(jobs) != 1:
        sys.exit(f"demo: expected one job file after two deliveries, found {len(jobs)}")
    text = jobs[0].read_text(encoding="utf-8")
    job = json.loads(text)
    plan = job["plan"]
    print(f"{jobs[0]}  (the only job file after two deliveries)")
    for key in ("schema", "job_id", "correlation_id", "vault", "certificate", "version", "secret_id", "thumbprint"):
        print(f"  {key:<15} {job[key]}")
    print(
        f"  plan            {plan['schema']}: assessment {plan['assessment_status']}, "
        f"worker group {plan['worker_group']}, servers {', '.join(plan['servers'])}"
    )
    inventory = plan["inventory"]
    print(
        f"  made from       the inventory of {inventory['worker_group']} collected {inventory['collected_at']} "
        f"(sha256 {inventory['sha256'][:12]}...)"
    )
    phases = collections.Counter(step["phase"] for step in plan["steps"])
    print("  steps           " + ", ".join(f"{n} {phase}" for phase, n in phases.items()))
    for inter in plan["certificate"]["intermediates"]:
        size = len(base64.b64decode(inter["der_base64"]))
        print(f"  intermediate    {inter['subject']} ({inter['thumbprint'][:8]}: the public certificate, {size} bytes)")
    found = [word for word in KEY_WORDS if word.lower() in text.lower()]
    if found:
        sys.exit(f"demo: the job file mentions {', '.join(found)}")
    print("  key material    none: the runbook reads the PFX from Key Vault (secret_id) with its own identity")


if __name__ == "__main__":
    main(sys.argv[1])
