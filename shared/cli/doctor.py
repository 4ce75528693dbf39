"""`certsync doctor`: what is broken in mail flow right now, predicted from a saved Exchange inventory.

Exit 0 with no finding of severity warning or worse, 1 with one, 2 on bad input. `--json` prints
`certsync.doctor/1` (`exchange-inventory.md` §4).
"""

from __future__ import annotations

import argparse
from typing import Any

from shared.cli.common import EXIT_FINDING, EXIT_OK, counted, parse_at, print_json, print_rows

EPILOG = """examples:
  certsync doctor --inventory inventory.json
  certsync doctor --inventory inventory.json --json | jq '.findings[] | select(.severity == "error")'
  certsync doctor --inventory inventory.json --at 2027-01-31
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
    doctor.add_argument("--inventory", required=True, metavar="FILE", help="the Exchange inventory (JSON)")
    doctor.add_argument(
        "--at", metavar="ISO8601", help="date expiry warnings from this time (default: when it was collected)"
    )
    doctor.add_argument("--json", action="store_true", help="print the certsync.doctor/1 document")
    doctor.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
    """A table of the findings, worst first, then by server, kind and connector; under each the error Exchange
    would log and the fix; then one line that counts them."""
    if not findings:
        print(f"No findings: every connector finds a valid certificate on its {servers} server(s).")
        return
    order = {"error": 0, "warning": 1, "info": 2}
    ordered = sorted(findings, key=lambda f: (order.get(f["severity"], 3), f["server"] or "", f["kind"], f["object"]))
    rows = [(f["severity"].upper(), f["server"] or "", f["kind"], f["object"]) for f in ordered]
    notes = [
        ([f"TlsCertificateName {f['tls_certificate_name']}"] if f["tls_certificate_name"] else [])
        + [f"Error: {f['error']}", f"Fix: {f['fix']}"]
        for f in ordered
    ]
    severities = [f["severity"] for f in findings]
    counts = counted({s: severities.count(s) for s in ("error", "warning", "info")})
    summary = f"{len(findings)} finding(s) on {servers} server(s): {counts}."
    print_rows(("SEVERITY", "SERVER", "KIND", "CONNECTOR"), rows, summary, notes)
