"""`certsync retry` and `certsync approve`: a blocked version, run again now or approved by a person.

    certsync retry exch-hybrid-smtp [VERSION] --vault-dir vault --targets targets.json
    certsync approve exch-hybrid-smtp VERSION --reason "private CA, checked by PKI" --vault-dir vault

Both use `certsync process`'s local adapters (the vault directory or a real vault, the outbox, the SQLite
audit trail and inventory store) and `shared.pipeline.process.Pipeline.retry`/`approve`; the Function App
has the same as `POST /api/certificates/{name}/retry` and `.../versions/{version}/approve`. Who asked is
`--by`, else the signed-in user. Exit codes: 0 the version was queued (or needs no change), 1 it is still
blocked or waiting, 2 bad input or refused (an expired or not yet valid certificate, a block no approval
overrides), with one line on stderr.
"""

from __future__ import annotations

import argparse
import getpass
from typing import Any

from shared.cli.common import EXIT_FINDING, EXIT_OK, parse_at, print_json, visible

AUDIT_DEFAULT = "certsync-audit.sqlite"  # the same file as `certsync process` and `certsync history`
INVENTORY_DEFAULT = "certsync-inventory.sqlite"

RETRY_EPILOG = r"""examples:
  certsync retry exch-hybrid-smtp 8f1c2a9e4b7d4c0e9a6b3f5d2e1c0b9a --vault-dir vault --targets targets.json
  certsync retry exch-hybrid-smtp --vault-url https://contoso-kv.vault.azure.net
  certsync retry exch-hybrid-smtp 8f1c2a9e4b7d4c0e9a6b3f5d2e1c0b9a --vault-dir vault --vault contoso-kv --json
"""
APPROVE_EPILOG = r"""examples:
  certsync approve exch-hybrid-smtp 8f1c2a9e4b7d4c0e9a6b3f5d2e1c0b9a --reason "private CA, root deployed by GPO" \
      --vault-dir vault --targets targets.json
  certsync approve exch-hybrid-smtp 8f1c2a9e4b7d4c0e9a6b3f5d2e1c0b9a --reason "change CHG0042 approved" \
      --by alice@contoso.com --vault-url https://contoso-kv.vault.azure.net
"""


def register(commands: Any) -> None:
    """Add `retry` and `approve` to the `certsync` sub-commands."""
    retry = commands.add_parser(
        "retry",
        allow_abbrev=False,
        help="run a blocked or waiting version through the pipeline again now (exit 1 if still blocked)",
        description="Run a version again now, whatever its backoff: the newest blocked or waiting one by default.",
        epilog=RETRY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    retry.add_argument("name", metavar="CERT", help="the Key Vault certificate name")
    retry.add_argument("version", nargs="?", metavar="VERSION", help="the version (default: the newest blocked one)")
    _options(retry)
    retry.set_defaults(run=run_retry)

    approve = commands.add_parser(
        "approve",
        allow_abbrev=False,
        help="approve a version: past the approval gate, or a status a person may accept (never expiry)",
        description=(
            "Approve a version (audited with who, when and why), then run it again. Refused for a certificate"
            " that is expired or not yet valid, or blocked for a reason no approval overrides."
        ),
        epilog=APPROVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    approve.add_argument("name", metavar="CERT", help="the Key Vault certificate name")
    approve.add_argument("version", metavar="VERSION", help="the version to approve")
    approve.add_argument("--reason", required=True, metavar="TEXT", help="why (kept in the audit trail)")
    _options(approve)
    approve.set_defaults(run=run_approve)


def _options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--vault-dir", metavar="DIR", help="certificates from DIR/<name>/<version>.pem|.pfx|...")
    where.add_argument("--vault-url", metavar="URL", help="certificates from a real Key Vault (Azure sign-in)")
    parser.add_argument("--vault", metavar="NAME", help="the vault name the events carried (default: DIR's name)")
    parser.add_argument("--by", metavar="NAME", help="who asks (default: the signed-in user)")
    parser.add_argument("--targets", metavar="FILE", help="the targets file (docs/targets.md); tags also count")
    parser.add_argument(
        "--inventory-store",
        metavar="FILE",
        default=INVENTORY_DEFAULT,
        help=f"the inventory store that certsync discover fills (SQLite; default {INVENTORY_DEFAULT})",
    )
    parser.add_argument("--outbox", metavar="DIR", default="certsync-outbox", help="where job files go")
    parser.add_argument("--audit", metavar="FILE", default=AUDIT_DEFAULT, help="the audit trail (SQLite)")
    parser.add_argument("--at", metavar="ISO8601", help="assess at this time instead of now")
    parser.add_argument("--revocation", choices=("hard", "soft", "off"), default="hard", help="as for check")
    parser.add_argument("--trust", metavar="FILE", help="trust exactly the roots in FILE instead of Mozilla's")
    parser.add_argument("--allow-host", action="append", default=[], metavar="HOST[:PORT]", help="as for check")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")


def run_retry(args: argparse.Namespace) -> int:
    pipeline, vault = _pipeline(args)
    return _report(args, pipeline.retry(args.name, args.version, by=_who(args), vault=vault))


def run_approve(args: argparse.Namespace) -> int:
    pipeline, vault = _pipeline(args)
    return _report(args, pipeline.approve(args.name, args.version, args.reason, by=_who(args), vault=vault))


def _who(args: argparse.Namespace) -> str:
    if args.by:
        return str(args.by)
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no user name in this environment
        return "unknown"


def _pipeline(args: argparse.Namespace) -> tuple[Any, str]:
    import logging

    from shared.pipeline.process import PipelineSettings
    from shared.validation.assessment import TrustStore
    from shared.wiring import local_pipeline, local_vault_name

    logging.getLogger("certsync").addHandler(logging.NullHandler())  # notices: the outcome line says it all
    vault = local_vault_name(args.vault_dir, args.vault_url, args.vault)
    settings = PipelineSettings(
        trust=TrustStore.from_file(args.trust) if args.trust else None,
        revocation=args.revocation,
        allow_hosts=tuple(args.allow_host),
        at=parse_at(args.at) if args.at else None,
    )
    pipeline = local_pipeline(
        vault_dir=args.vault_dir,
        vault_url=args.vault_url,
        targets=args.targets,
        outbox=args.outbox,
        audit=args.audit,
        settings=settings,
        inventory_store=args.inventory_store,
    )
    return pipeline, vault


def _report(args: argparse.Namespace, outcome: Any) -> int:
    if args.json:
        print_json(outcome.to_dict())
    else:
        print(f"Outcome: {outcome.outcome.upper()}" + (f" ({visible(outcome.reason)})" if outcome.reason else ""))
        if outcome.request is not None and outcome.outcome == "queued":
            print(f"Job: {args.outbox}/{outcome.request.job_id}.json")
    return EXIT_OK if outcome.outcome in ("queued", "nothing-to-change", "duplicate") else EXIT_FINDING
