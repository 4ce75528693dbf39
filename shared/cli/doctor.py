"""`certsync doctor`: what is broken in mail flow right now, predicted from a saved Exchange inventory;
with `--policies`, what in each certificate's Key Vault issuance policy will fail Exchange or the
renewal schedule (`shared.pipeline.policy`), read from a vault or a vault directory.

Exit 0 with no finding of severity warning or worse, 1 with one, 2 on bad input. `--json` prints
`certsync.doctor/1` (`exchange-inventory.md` §4); policy findings have `kind` "policy", `object`
"<vault>/<certificate>", `server` null and their `code`. `--deployment` checks the whole deployment instead
(`shared/cli/doctor_deployment.py`).
"""

from __future__ import annotations

import argparse
from typing import Any

from shared.cli.common import EXIT_FINDING, EXIT_OK, counted, parse_at, print_json, print_rows, visible
from shared.errors import CertsyncError

EPILOG = """examples:
  certsync doctor --inventory inventory.json --at 2027-01-31
  certsync doctor --policies --vault-url https://contoso-kv.vault.azure.net --inventory inventory.json
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
    doctor.add_argument(
        "--inventory",
        metavar="FILE",
        help="the Exchange inventory (JSON); with --policies, the servers' Exchange builds for ECDSA keys",
    )
    doctor.add_argument(
        "--policies",
        action="store_true",
        help="check each certificate's Key Vault issuance policy instead (with --vault-url or --vault-dir)",
    )
    doctor.add_argument("--vault-url", metavar="URL", help="--policies: the vault (AZURE_CLIENT_ID for its identity)")
    doctor.add_argument("--vault-dir", metavar="DIR", help="--policies: a vault directory (DIR/<name>/policy.json)")
    doctor.add_argument(
        "--name", action="append", default=[], metavar="NAME", help="--policies: only this certificate (repeatable)"
    )
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
    if args.policies:
        return run_policies(args)
    from shared.exchange.inventory import load_inventory
    from shared.exchange.mailflow import doctor_document, predict, worst_is_warning_or_worse

    if args.inventory is None:
        raise CertsyncError(
            "give --inventory FILE (or --policies with --vault-url or --vault-dir, or --deployment for the whole"
            " deployment)"
        )
    if args.vault_url or args.vault_dir or args.name:
        raise CertsyncError("--vault-url, --vault-dir and --name go with --policies")
    inventory = load_inventory(args.inventory)
    findings = predict(inventory, parse_at(args.at) if args.at else None)
    if args.json:
        print_json(doctor_document(findings))
    else:
        print_findings([f.to_dict() for f in findings], len(inventory.servers))
    return EXIT_FINDING if worst_is_warning_or_worse(findings) else EXIT_OK


def print_findings(findings: list[dict[str, Any]], servers: int, *, what: str = "") -> None:
    """A table of the findings, worst first, then by server, kind and object; under each the error Exchange
    would log and the fix; then one line that counts them (`what` names what was checked, when not servers)."""
    if not findings:
        if what:
            print(f"No findings in {what}.")
        else:
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
    where = f"in {what}" if what else f"on {servers} server(s)"
    print_rows(
        ("SEVERITY", "SERVER", "KIND", "OBJECT" if what else "CONNECTOR"),
        rows,
        f"{len(findings)} finding(s) {where}: {counts}.",
        notes,
    )


def run_policies(args: argparse.Namespace) -> int:
    """`certsync doctor --policies`: each certificate's issuance policy, checked against the lifetime of its
    current certificate and (with --inventory) the servers' Exchange builds."""
    from shared.exchange.inventory import load_inventory
    from shared.pipeline.policy import check_policy
    from shared.wiring import local_source

    source = local_source(vault_dir=args.vault_dir, vault_url=args.vault_url)
    inventory = load_inventory(args.inventory) if args.inventory else None
    names = args.name or source.names()
    findings: list[dict[str, Any]] = []
    unchecked = []
    for name in names:
        latest = source.latest(name)
        if latest is None or latest.policy is None:
            unchecked.append(name)
            continue
        leaf = latest.bundle.leaf
        for finding in check_policy(
            f"{latest.vault}/{latest.name}",
            latest.policy,
            lifetime=leaf.not_after - leaf.not_before,
            inventory=inventory,
        ):
            findings.append(
                {
                    "server": None,
                    "object": finding.certificate,
                    "kind": "policy",
                    "tls_certificate_name": None,
                    "severity": finding.severity,
                    "error": finding.message,
                    "fix": finding.fix,
                    "code": finding.code,
                }
            )
    order = {"error": 0, "warning": 1, "info": 2}
    findings.sort(key=lambda f: (order[f["severity"]], f["object"].lower(), f["code"]))
    if args.json:
        from shared.exchange.mailflow import DOCTOR_SCHEMA

        print_json({"schema": DOCTOR_SCHEMA, "findings": findings, "unchecked": unchecked})
    else:
        print_findings(findings, 0, what=f"{len(names) - len(unchecked)} certificate polic(ies)")
        if unchecked:
            print(visible(f"No policy to check for: {', '.join(unchecked)}"))
    return EXIT_FINDING if any(f["severity"] in ("error", "warning") for f in findings) else EXIT_OK
