"""`certsync doctor`: what is broken in mail flow right now, predicted from a saved Exchange inventory.

Exit 0 with no finding of severity warning or worse, 1 with one, 2 on bad input. `--json` prints
`certsync.doctor/1` (`exchange-inventory.md` §4). `--deployment` checks the whole deployment instead
(`shared/cli/doctor_deployment.py`).
"""

from __future__ import annotations

import argparse
from typing import Any

from shared.cli.common import EXIT_FINDING, EXIT_OK, parse_at, print_json, visible
from shared.errors import CertsyncError

EPILOG = """examples:
  certsync doctor --inventory inventory.json
  certsync doctor --inventory inventory.json --json | jq '.findings[] | select(.severity == "error")'
  certsync doctor --inventory inventory.json --at 2027-01-31
  certsync doctor --deployment --json
"""


def register(commands: Any) -> None:
    """Add `doctor` to the `certsync` sub-commands."""
    doctor = commands.add_parser(
        "doctor",
        allow_abbrev=False,
        help="predict mail-flow failures from a saved Exchange inventory (exit 1 on warnings or errors)",
        description="Which connectors would fail TLS today, with the error Exchange logs and the fix.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    doctor.add_argument("--inventory", metavar="FILE", help="the Exchange inventory (JSON)")
    doctor.add_argument(
        "--deployment",
        action="store_true",
        help="check the whole deployment instead: settings, Key Vault, identity, Event Grid, Automation, worker "
        "groups, inventories (shared/cli/doctor_deployment.py)",
    )
    doctor.add_argument(
        "--at", metavar="ISO8601", help="date expiry warnings from this time (default: when it was collected)"
    )
    doctor.add_argument("--json", action="store_true", help="print the certsync.doctor/1 document")
    doctor.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "deployment", False):
        from shared.cli.doctor_deployment import run_deployment

        if args.inventory:
            raise CertsyncError("give either --inventory FILE (mail flow) or --deployment, not both")
        return run_deployment(args)
    if not args.inventory:
        raise CertsyncError("doctor needs --inventory FILE (mail flow) or --deployment (the whole deployment)")
    from shared.exchange.inventory import load_inventory
    from shared.exchange.mailflow import doctor_document, predict, worst_is_warning_or_worse

    inventory = load_inventory(args.inventory)
    findings = predict(inventory, parse_at(args.at) if args.at else None)
    if args.json:
        print_json(doctor_document(findings))
    else:
        print_findings([f.to_dict() for f in findings], len(inventory.servers))
    return EXIT_FINDING if worst_is_warning_or_worse(findings) else EXIT_OK


def print_findings(findings: list[dict[str, Any]], servers: int) -> None:
    """Each finding: severity, where, the error Exchange would log, and the fix."""
    for finding in findings:
        where = f"{finding['server']} " if finding["server"] else ""
        print(visible(f"{finding['severity'].upper():<8} {where}{finding['kind']} {finding['object']}"))
        if finding["tls_certificate_name"]:
            print(visible(f"{'':<8} TlsCertificateName {finding['tls_certificate_name']}"))
        print(visible(f"{'':<8} Error: {finding['error']}"))
        print(visible(f"{'':<8} Fix: {finding['fix']}"))
    if not findings:
        print(f"No findings: every connector finds a valid certificate on its {servers} server(s).")
