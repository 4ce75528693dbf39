"""`certsync plan`: the certsync.plan/2 a new certificate gets on a saved Exchange inventory, offline.

Exit 0 when the plan can run, 1 when it is blocked (the reason and its one-line fix are printed), 2 on
unusable input. `--json` prints the plan document (`exchange-inventory.md` §3) in both the 0 and 1 cases.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from shared.cli.common import (
    EXIT_FINDING,
    EXIT_OK,
    counted,
    load_bundle,
    parse_at,
    print_json,
    print_rows,
    print_table,
    visible,
)

EPILOG = r"""examples:
  certsync plan mail-2026-11.pem --inventory inventory.json --trust root.pem
  certsync plan mail-2026-11.pfx --password-env PFX_PASSWORD --inventory inventory.json \
      --old 3F7A91F5C78FBC5E86109A7904B0ED4812B72908
  certsync plan mail-2026-11.pem --inventory inventory.json --targets targets.json --name exch-hybrid-smtp \
      --revocation soft --json > plan.json
"""


def register(commands: Any) -> None:
    """Add `plan` to the `certsync` sub-commands."""
    plan = commands.add_parser(
        "plan",
        allow_abbrev=False,
        help="plan a new certificate on a saved Exchange inventory (exit 1 if blocked)",
        description="Plan the change to a new certificate from what Exchange reported (certsync.inventory/1).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    plan.add_argument("file", metavar="CERT", help="the new certificate with its chain: PEM, DER, PKCS#7 or PKCS#12")
    plan.add_argument("--inventory", required=True, metavar="FILE", help="the Exchange inventory (JSON)")
    plan.add_argument("--targets", metavar="FILE", help="a targets file that narrows or adds (docs/targets.md)")
    plan.add_argument(
        "--name", metavar="NAME", help="the certificate's entry in the targets file (default: CERT's file name stem)"
    )
    plan.add_argument(
        "--old", action="append", default=[], metavar="THUMBPRINT", help="an old certificate to replace (repeat)"
    )
    plan.add_argument(
        "--edge-worker",
        action="append",
        default=[],
        metavar="SERVER",
        help="an Edge server that has its own Hybrid worker group (its steps are not manual; repeat)",
    )
    plan.add_argument("--password-env", metavar="VAR", help="environment variable holding the PKCS#12 password")
    plan.add_argument("--at", metavar="ISO8601", help="assess at this time instead of now")
    plan.add_argument("--revocation", choices=("hard", "soft", "off"), default="hard", help="as for check")
    plan.add_argument("--trust", metavar="FILE", help="trust exactly the roots in FILE instead of Mozilla's")
    plan.add_argument("--crl", action="append", default=[], metavar="FILE", help="a CRL to use (repeat)")
    plan.add_argument("--allow-host", action="append", default=[], metavar="HOST[:PORT]", help="as for check")
    plan.add_argument("--offline", action="store_true", help="fetch nothing (AIA, CRL, OCSP use only what is given)")
    plan.add_argument("--json", action="store_true", help="print the certsync.plan/2 document")
    plan.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from shared.exchange.inventory import load_inventory
    from shared.pipeline.planner import plan_from_inventory
    from shared.pipeline.targets import load_targets_file, resolve_targets
    from shared.settings import value
    from shared.validation.assessment import TrustStore, assess
    from shared.validation.fetch import Fetcher
    from shared.validation.revocation import load_crl_file

    inventory = load_inventory(args.inventory)
    targets = None
    if args.targets:
        name = args.name or os.path.basename(args.file).rsplit(".", 1)[0]
        targets = resolve_targets(name, file=load_targets_file(args.targets))
    bundle = load_bundle(args.file, args.password_env)
    assessment = assess(
        bundle,
        hosts=targets.hosts if targets else (),
        trust=TrustStore.from_file(args.trust) if args.trust else None,
        at=parse_at(args.at) if args.at else None,
        revocation=args.revocation,
        crls=[load_crl_file(path) for path in args.crl],
        fetcher=Fetcher(allow=args.allow_host),
        offline=args.offline,
    )
    plan = plan_from_inventory(
        bundle,
        assessment,
        inventory,
        targets=targets,
        old_thumbprints=args.old,
        require_accepted_domain=value("CERTSYNC_REQUIRE_ACCEPTED_DOMAIN"),
        edge_workers=args.edge_worker,
    )
    document = plan.to_dict()
    if args.json:
        print_json(document)
    else:
        print_plan(document, assessment.status)
    return EXIT_OK if plan.blocked is None else EXIT_FINDING


def print_plan(document: dict[str, Any], status: str) -> None:
    """The plan for people: a summary table, then the steps, kept certificates, warnings and conflicts."""
    certificate = document["certificate"]
    blocked = document["blocked"]
    rows = [
        ("Certificate", f"{certificate['thumbprint']} ({status})"),
        ("TlsCertificateName", certificate["tls_certificate_name"]),
        ("Old", ", ".join(document["old_certificates"]) or "(none found)"),
        ("Servers", ", ".join(document["servers"]) or "(none)"),
        ("Plan", "READY" if blocked is None else f"BLOCKED: {blocked['reason']}"),
    ]
    if blocked is not None:
        rows.append(("Fix", blocked["fix"]))
    print_table(rows)
    print_plan_body(document)
    print(visible(plan_summary(document)))


def print_plan_body(document: dict[str, Any]) -> None:
    """A plan/2's steps as a table in the order they run, then kept certificates (by server), warnings and
    conflicts, one line each (also `certsync process`)."""
    rows = []
    for n, step in enumerate(document["steps"], 1):
        value = step["value"]
        shown = ", ".join(value) if isinstance(value, list) else ("" if value is None else str(value))
        change = shown
        if step["previous"] is not None:
            previous = step["previous"]
            before = ", ".join(previous) if isinstance(previous, list) else str(previous)
            change = f"{before or '(none)'} -> {shown}"
        if step["property"]:
            change = f"{step['property']}: {change}"
        manual = " (manual)" if step["manual"] else ""
        rows.append((f"{n:>2}", step["phase"], step["server"] or "", step["action"] + manual, step["object"], change))
    print_rows(("#", "PHASE", "SERVER", "ACTION", "OBJECT", "CHANGE"), rows, None)
    for kept in sorted(document["kept"], key=lambda k: (k["server"], k["thumbprint"])):
        print(visible(f"Kept     {kept['server']} {kept['thumbprint']}: {kept['reason']}"))
    for warning in document["warnings"]:
        print(visible(f"Warning  {warning}"))
    for conflict in document["conflicts"]:
        print(visible(f"Conflict {conflict}"))


def plan_summary(document: dict[str, Any]) -> str:
    """One line: ready or blocked, the steps by phase, on which servers, what is kept, warned about, in conflict."""
    phases: dict[str, int] = {}
    for step in document["steps"]:
        phases[step["phase"]] = phases.get(step["phase"], 0) + 1
    verdict = "READY" if document["blocked"] is None else "BLOCKED"
    steps = f"{len(document['steps'])} step(s)" + (f" ({counted(phases)})" if phases else "")
    servers = ", ".join(document["servers"]) or "no server"
    more = counted(
        {
            "kept": len(document["kept"]),
            "warning(s)": len(document["warnings"]),
            "conflict(s)": len(document["conflicts"]),
        }
    )
    return f"Plan {verdict}: {steps} on {servers}" + (f"; {more}" if more != "nothing" else "") + "."
