"""The full fault-injection storm (issue 17): 1,000 Event Grid deliveries for 200 versions (10 of them
expired), duplicates and redeliveries, two pipeline instances on their own threads and SDK clients, Key
Vault answering 8% 503/429 and 3% slow, the webhook answering 500/429, Azurite stopped for 3 s mid-run;
then two remediation instances start and track every job. The driver is tests/storm.py (the test suite
runs a small storm of 60 deliveries).

Prints the figures as key=value on its last line: deliveries, lost, duplicate_jobs, duplicate_results,
max_notices_per_outcome, seconds (and more). Exits 1 when anything was lost or doubled.

    .venv/bin/python bench/storm.py [--deliveries 1000] [--versions 200] [--expired 10] [--pause 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.notify.signing import new_secret
from tests.azurite import Azurite
from tests.fakes.arm import FakeArm
from tests.fakes.keyvault import FakeKeyVault
from tests.receivers import WebhookReceiver
from tests.servers import HttpServer, LoopbackTls
from tests.storm import Storm, StormPlan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=1000)
    parser.add_argument("--versions", type=int, default=200)
    parser.add_argument("--expired", type=int, default=10)
    parser.add_argument("--pause", type=float, default=3.0, help="seconds Azurite is down")
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args(argv)
    plan = StormPlan(
        versions=args.versions,
        deliveries=args.deliveries,
        expired=args.expired,
        restart_pause=args.pause,
        webhook_failures=20,
        seed=args.seed,
    )
    secret = new_secret()
    with tempfile.TemporaryDirectory(prefix="certsync-storm-") as directory:
        root = Path(directory)
        tls = LoopbackTls.create(root / "tls")
        azurite = Azurite(persistent=True).start()
        try:
            with (
                FakeKeyVault(tls) as keyvault,
                FakeArm(tls) as arm,
                HttpServer() as http_server,
                WebhookReceiver([secret]) as receiver,
            ):
                storm = Storm(
                    plan,
                    azurite=azurite,
                    keyvault=keyvault,
                    arm=arm,
                    http_server=http_server,
                    receiver=receiver,
                    secret=secret,
                    directory=root,
                )
                report = storm.run()
        finally:
            azurite.stop()
    print(
        f"storm: {report.deliveries} deliveries ({report.attempts} with redeliveries) for {plan.versions} versions,"
        f" {plan.instances} instances; Key Vault faults {report.keyvault_faults}, {report.webhook_faults} webhook"
        f" faults, Azurite restarted: {report.restarted}"
    )
    print(report.line())
    bad = report.lost or report.duplicate_jobs or report.duplicate_results or report.missing_jobs
    return 1 if bad or report.max_notices_per_outcome > 1 or report.unaudited else 0


if __name__ == "__main__":
    sys.exit(main())
