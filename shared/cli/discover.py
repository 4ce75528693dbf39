"""`certsync discover`: read what Exchange has, through the read-only discovery runbook, into the local
inventory store; or `--import` an inventory an admin saved by hand.

    certsync discover hrw-exchange [--json]          start Get-CertsyncInventory on the group, wait, store
    certsync discover --import inv.json --worker-group hrw-exchange

The first form needs the Function App's Automation settings in the environment (AUTOMATION_ACCOUNT_ID,
CERTSYNC_ARM_ENDPOINT, DISCOVERY_RUNBOOK) and an Azure sign-in that may start jobs (Automation Job
Operator). Exit codes: 0 stored, every server read; 1 stored with servers or cmdlets it could not read,
or the job failed, wrote no usable inventory or did not end within --timeout; 2 bad input.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path
from typing import Any

from shared.cli.common import examples
from shared.cli.common import visible as _visible
from shared.errors import CertsyncError

INVENTORY_DEFAULT = "certsync-inventory.sqlite"
AUDIT_DEFAULT = "certsync-audit.sqlite"  # the same file as `certsync process` and `certsync history`
MAX_IMPORT_BYTES = 64 * 1024 * 1024


def register(commands: Any) -> None:
    """Add `discover` to the `certsync` sub-commands (`commands`, argparse's subparsers)."""
    discover = commands.add_parser(
        "discover",
        allow_abbrev=False,
        help="read the Exchange inventory of a Hybrid worker group (read-only runbook), or --import one",
        **examples(
            "certsync discover --import inventory.json --worker-group hrw-exchange",
            "certsync discover hrw-exchange",
            "certsync discover hrw-exchange --timeout 1800 --json",
        ),
    )
    discover.add_argument("worker_group", nargs="?", metavar="WORKER_GROUP", help="the Hybrid Runbook Worker group")
    discover.add_argument(
        "--import", dest="import_file", metavar="FILE", help="store this certsync.inventory/1 JSON file instead"
    )
    discover.add_argument("--worker-group", dest="import_group", metavar="G", help="the group an --import belongs to")
    discover.add_argument(
        "--inventory",
        default=INVENTORY_DEFAULT,
        metavar="FILE",
        help="the inventory store (SQLite)",
    )
    discover.add_argument("--audit", default=AUDIT_DEFAULT, metavar="FILE", help="the audit trail (SQLite)")
    discover.add_argument("--timeout", type=float, default=900.0, metavar="SECONDS", help="how long to wait (900)")
    discover.add_argument("--poll-interval", type=float, default=10.0, metavar="SECONDS", help="between polls (10)")
    discover.add_argument("--json", action="store_true", help="print the outcome as JSON")
    discover.set_defaults(run=run_discover)


def run_discover(args: argparse.Namespace) -> int:
    import shared.wiring
    from shared.times import utc_now

    if args.import_file is not None:
        if args.worker_group is not None:
            raise CertsyncError("give either WORKER_GROUP (run discovery) or --import FILE --worker-group G, not both")
        if not args.import_group:
            raise CertsyncError("--import needs --worker-group G: the Hybrid worker group the inventory belongs to")
        return _import(args, shared.wiring.local_inventory_store(args.inventory), utc_now())
    if args.import_group is not None:
        raise CertsyncError("--worker-group goes with --import; to run discovery give the group as WORKER_GROUP")
    if not args.worker_group:
        raise CertsyncError("give WORKER_GROUP (the Hybrid Runbook Worker group), or --import FILE --worker-group G")
    if args.timeout <= 0 or args.poll_interval <= 0:
        raise CertsyncError("--timeout and --poll-interval: give a number of seconds above 0")
    discovery = shared.wiring.local_discovery(inventory=args.inventory, audit=args.audit)
    from shared.cli.progress import on_stderr

    waited = on_stderr(f"waiting for discovery on {args.worker_group}", unit="s", total=round(args.timeout))

    started, shown = time.monotonic(), 0

    def sleep(seconds: float) -> None:
        nonlocal shown
        time.sleep(seconds)
        now = int(time.monotonic() - started)  # whole seconds waited, so far
        waited.advance(now - shown)
        shown = now

    try:
        outcome = discovery.run(args.worker_group, args.timeout, interval=args.poll_interval, sleep=sleep)
    finally:
        waited.close()
    if outcome.outcome == "running":
        outcome = type(outcome)(
            "timed-out",
            outcome.worker_group,
            outcome.automation_job,
            f"the job is still {outcome.status or 'running'} after {args.timeout:g} s; run the same command again"
            " within the hour to pick up its result (the job is not started twice)",
            outcome.status,
        )
    data = outcome.to_dict()
    if args.json:
        import json

        print(json.dumps(data, indent=2))
    else:
        print(f"Worker group   {outcome.worker_group}")
        print(f"Automation job {outcome.automation_job} ({outcome.status or 'unknown'})")
        print(f"Outcome        {outcome.outcome}: {_visible(outcome.reason)}")
        if outcome.record is not None:
            _print_errors(outcome.record.errors)
    if outcome.outcome != "stored":
        return 1
    return 1 if outcome.record is not None and outcome.record.errors else 0


def _import(args: argparse.Namespace, store: Any, now: dt.datetime) -> int:
    from shared.remediation.discovery import import_inventory

    path = Path(args.import_file)
    try:
        if path.stat().st_size > MAX_IMPORT_BYTES:
            raise CertsyncError(f"{path}: larger than 64 MiB; is this an inventory?")
        raw = path.read_bytes()
        mtime = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc)
    except OSError as exc:
        raise CertsyncError(f"{path}: cannot read it ({exc.strerror}); give the inventory JSON file") from None
    from shared.exchange.inventory import decode_inventory

    text = decode_inventory(raw, str(path))
    import shared.wiring

    record = import_inventory(
        store,
        text,
        args.import_group,
        where=str(path),
        now=now,
        collected_fallback=mtime,
        validate=shared.wiring.inventory_validator(),
    )
    if args.json:
        import json

        print(json.dumps({"outcome": "stored", **record.meta()}, indent=2))
    else:
        print(f"Stored the inventory of {record.worker_group} from {path} in {args.inventory}")
        print(f"Collected      {record.collected_at.strftime('%Y-%m-%d %H:%M:%S')} UTC")
        _print_errors(record.errors)
    return 1 if record.errors else 0


def _print_errors(errors: list[dict[str, str]]) -> None:
    if not errors:
        print("Not read       nothing: every server and cmdlet answered")
        return
    for error in errors:
        print(f"Not read       {_visible(error['where'])}: {_visible(error['message'])}")
