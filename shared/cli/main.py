"""`certsync`, the admin's command line.

Exit codes: 0 all is well; 1 a finding (Exchange would reject the value, the connectors must change,
the value does not select the certificate); 2 bad input, with one line on stderr naming the object
and what to do. Kept light on imports so that it starts fast: `cryptography` loads only for PKCS#12.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from typing import TYPE_CHECKING

from shared import __version__
from shared.cli import blocks, discover, doctor, plan
from shared.cli.common import EXIT_BAD_INPUT, EXIT_FINDING, EXIT_INTERNAL, EXIT_OK, counted, examples, print_rows
from shared.cli.common import load_bundle as _load
from shared.cli.common import parse_at as _parse_time
from shared.cli.common import print_json as _print_json
from shared.cli.common import print_table as _print_table
from shared.cli.common import visible as _visible
from shared.errors import CertsyncError

if TYPE_CHECKING:
    from shared.pipeline.process import Outcome
    from shared.reconciliation.reconcile import ReconcileReport
    from shared.validation.lifetime import ExpiryThresholds

AUDIT_DEFAULT = "certsync-audit.sqlite"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.error(_unknown_arguments(unknown))
    try:
        return args.run(args)
    except CertsyncError as exc:
        _error(str(exc))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. `| head`); nothing more to say
        return EXIT_OK
    except Exception as exc:  # a bug, not bad input: still no traceback unless asked for
        if isinstance(exc, ModuleNotFoundError) and (exc.name or "").startswith("azure"):
            _error(  # `make demo`'s venv has no Azure SDK; --vault-url and the Azure stores need it
                f"the Azure SDK ({exc.name}) is not installed here: `make test` or `pipx install exchange-certsync` "
                "installs it; --vault-dir works without it"
            )
            return EXIT_BAD_INPUT
        from shared.settings import debug

        if debug():
            raise
        _error(f"internal error ({type(exc).__name__}: {exc}); set CERTSYNC_DEBUG=1 for details and report it")
        return EXIT_INTERNAL


_OPTION_SPELLING = re.compile(r"--[a-z][a-z0-9]*(?:-[a-z0-9]+){0,4}")


def _unknown_arguments(unknown: list[str]) -> str:
    """The error for arguments argparse did not recognise, naming only what is spelled like an option
    (`--pasword`): whatever follows a misspelled option may be its value, a password, even when it starts
    with `-`, so nothing else is shown, not even its length."""
    names = [a.split("=", 1)[0] for a in unknown]
    shown = list(dict.fromkeys(n for n in names if _OPTION_SPELLING.fullmatch(n)))
    hidden = len(unknown) - sum(1 for n in names if n in shown)
    what = " ".join(shown) or "an argument"
    more = f" and {hidden} more argument(s)" if shown and hidden else ""
    return f"unrecognized arguments: {what}{more} (values not shown); see certsync --help"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="certsync",
        description="Keep Exchange Hybrid TLS connectors in step with certificate renewals.",
        allow_abbrev=False,  # `--password` must never be read as `--password-env`
    )
    parser.add_argument("--version", action="version", version=f"certsync {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    discover.register(commands)

    name = commands.add_parser(
        "name",
        allow_abbrev=False,
        help="print a certificate's TlsCertificateName",
        **examples(
            "certsync name examples/mail-2026-11.pem",
            "certsync name --powershell examples/mail-2026-11.pem",
            "certsync name mail.pfx --password-env PFX_PASSWORD --json",
        ),
    )
    name.add_argument("file", metavar="FILE", help="PEM, DER, PKCS#7 (.p7b) or PKCS#12 (.pfx) file")
    _password_option(name)
    output = name.add_mutually_exclusive_group()
    output.add_argument(
        "--powershell",
        action="store_true",
        help="print only the value, quoted for Windows PowerShell 5.1 in ASCII (paste after -TlsCertificateName)",
    )
    output.add_argument("--json", action="store_true", help="print machine-readable JSON")
    name.set_defaults(run=_cmd_name)

    diff = commands.add_parser(
        "diff",
        allow_abbrev=False,
        help="what a renewal changes for the connectors (exit 1 if they must change)",
        **examples(
            "certsync diff examples/mail-2026-08.pem examples/mail-2026-11.pem",
            "certsync diff --json examples/mail-2026-08.pem examples/mail-2026-11.pem",
        ),
    )
    diff.add_argument("old", metavar="OLD", help="the certificate the connectors use now")
    diff.add_argument("new", metavar="NEW", help="the renewed certificate")
    _password_option(diff)
    _json_option(diff)
    diff.set_defaults(run=_cmd_diff)

    parse = commands.add_parser(
        "parse",
        allow_abbrev=False,
        help="check a TlsCertificateName copied from Get-SendConnector",
        **examples(
            'certsync parse "<I>CN=R10, O=Let\'s Encrypt, C=US<S>CN=mail.contoso.com" --cert examples/mail-2026-11.pem',
            'certsync parse "<I>CN=R11, O=Let\'s Encrypt, C=US<S>CN=mail.contoso.com" --json',
        ),
    )
    parse.add_argument("value", metavar="STRING", help="e.g. '<I>CN=R11, O=Contoso, C=US<S>CN=mail.contoso.com'")
    parse.add_argument("--cert", metavar="FILE", help="also check that the value selects this certificate")
    _password_option(parse)
    _json_option(parse)
    parse.set_defaults(run=_cmd_parse)

    check = commands.add_parser(
        "check",
        allow_abbrev=False,
        help="assess a certificate the way Exchange will see it (exit 1 unless Valid)",
        **examples(
            "certsync check examples/mail-2026-11.pem --trust examples/demo-root.pem --host mail.contoso.com "
            "--at 2026-12-01 --revocation off",
            "certsync check mail.pfx --password-env PFX_PASSWORD --host mail.contoso.com --host smtp.contoso.com",
            "certsync check mail.pem --revocation soft --json",
        ),
    )
    check.add_argument("file", metavar="FILE", help="the certificate with its chain: PEM, DER, PKCS#7 or PKCS#12")
    _password_option(check)
    check.add_argument(
        "--host", action="append", default=[], metavar="NAME", help="a host name the certificate must cover (repeat)"
    )
    check.add_argument("--at", metavar="ISO8601", help="assess at this time instead of now (e.g. 2027-01-31T00:00Z)")
    check.add_argument(
        "--revocation",
        choices=("hard", "soft", "off"),
        default="hard",
        help="hard: no revocation evidence is RevocationCheckFailure (default); soft: a warning; off: not checked",
    )
    check.add_argument("--trust", metavar="FILE", help="trust exactly the roots in FILE instead of Mozilla's")
    check.add_argument("--crl", action="append", default=[], metavar="FILE", help="a CRL to use (repeat)")
    check.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="let fetches reach this host (and port), e.g. a private PKI's CRL server (repeat)",
    )
    _crl_cap_option(check)
    check.add_argument(
        "--expiry-days",
        type=int,
        default=30,
        metavar="N",
        help="warn at most N days before expiry (default 30); shorter lifetimes warn at 15%% of their lifetime",
    )
    _json_option(check)
    check.set_defaults(run=_cmd_check)

    process = commands.add_parser(
        "process",
        allow_abbrev=False,
        help="run a Key Vault event through the pipeline locally (exit 1 if blocked or expiring)",
        **examples(
            "certsync process event.json --vault-dir vault --targets targets.json --inventory inventory.json "
            "--trust demo-root.pem --revocation off",
            "certsync process event.json --vault-url https://contoso-kv.vault.azure.net --targets targets.json",
            "certsync process event.json --vault-dir vault --inventory-store certsync-inventory.sqlite --json",
        ),
    )
    process.add_argument("event", metavar="EVENT.json", help="an Event Grid or CloudEvents Key Vault event (or array)")
    where = process.add_mutually_exclusive_group(required=True)
    where.add_argument("--vault-dir", metavar="DIR", help="certificates from DIR/<name>/<version>.pem|.pfx|...")
    where.add_argument("--vault-url", metavar="URL", help="certificates from a real Key Vault (Azure sign-in)")
    process.add_argument("--targets", metavar="FILE", help="the targets file (docs/targets.md); tags also count")
    inventory = process.add_mutually_exclusive_group()
    inventory.add_argument(
        "--inventory",
        metavar="FILE",
        help="plan from this certsync.inventory/1 file (whatever the worker group) instead of the inventory store",
    )
    inventory.add_argument(
        "--inventory-store",
        metavar="FILE",
        default=discover.INVENTORY_DEFAULT,
        help=f"the inventory store that certsync discover fills (SQLite; default {discover.INVENTORY_DEFAULT})",
    )
    process.add_argument("--outbox", metavar="DIR", default="certsync-outbox", help="where job files go")
    process.add_argument("--audit", metavar="FILE", default=AUDIT_DEFAULT, help="the audit trail (SQLite)")
    process.add_argument("--at", metavar="ISO8601", help="assess at this time instead of now")
    process.add_argument("--revocation", choices=("hard", "soft", "off"), default="hard", help="as for check")
    process.add_argument("--trust", metavar="FILE", help="trust exactly the roots in FILE instead of Mozilla's")
    process.add_argument(
        "--allow-host", action="append", default=[], metavar="HOST[:PORT]", help="as for check (repeat)"
    )
    _crl_cap_option(process)
    process.add_argument(
        "--expiry-days",
        type=int,
        default=30,
        metavar="N",
        help="warn at most N days before expiry (default 30); shorter lifetimes warn at 15%% of their lifetime",
    )
    _json_option(process)
    process.set_defaults(run=_cmd_process)

    history = commands.add_parser(
        "history",
        allow_abbrev=False,
        help="a certificate's audit trail, oldest first",
        **examples(
            "certsync history exch-hybrid-smtp --audit certsync-audit.sqlite",
            "certsync history exch-hybrid-smtp --since 2027-01-31 --limit 50",
            "certsync history exch-hybrid-smtp --json",
        ),
    )
    history.add_argument("name", metavar="NAME", help="the Key Vault certificate name")
    history.add_argument("--audit", metavar="FILE", default=AUDIT_DEFAULT, help="the audit trail (SQLite)")
    history.add_argument("--since", metavar="TIME", help="only entries at or after TIME (ISO 8601, UTC if no offset)")
    history.add_argument("--limit", metavar="N", help="at most N entries (the oldest N from --since)")
    _json_option(history)
    history.set_defaults(run=_cmd_history)

    reconcile = commands.add_parser(
        "reconcile",
        allow_abbrev=False,
        help="the daily reconciliation, once: unprocessed versions, expiry, drift (exit 1 on findings)",
        **examples(
            "certsync reconcile --vault-dir vault --vault contoso-kv --targets targets.json --trust demo-root.pem "
            "--revocation off",
            "certsync reconcile --vault-url https://contoso-kv.vault.azure.net --targets targets.json",
            "certsync reconcile --vault-dir vault --at 2027-01-31 --json",
        ),
    )
    where = reconcile.add_mutually_exclusive_group(required=True)
    where.add_argument("--vault-dir", metavar="DIR", help="certificates from DIR/<name>/<version>.pem|.pfx|...")
    where.add_argument("--vault-url", metavar="URL", help="certificates from a real Key Vault (Azure sign-in)")
    reconcile.add_argument(
        "--vault", metavar="NAME", help="the vault name the events carried, for --vault-dir (default: DIR's name)"
    )
    reconcile.add_argument("--targets", metavar="FILE", help="the targets file (docs/targets.md); tags also count")
    reconcile.add_argument("--outbox", metavar="DIR", default="certsync-outbox", help="where job files go")
    reconcile.add_argument(
        "--inventory-store",
        metavar="FILE",
        default=discover.INVENTORY_DEFAULT,
        help=f"the inventory store that certsync discover fills (SQLite; default {discover.INVENTORY_DEFAULT})",
    )
    reconcile.add_argument("--audit", metavar="FILE", default=AUDIT_DEFAULT, help="the audit trail (SQLite)")
    reconcile.add_argument(
        "--state", metavar="FILE", default="certsync-state.sqlite", help="finding states and snapshots (SQLite)"
    )
    reconcile.add_argument("--at", metavar="ISO8601", help="reconcile as of this time instead of now")
    reconcile.add_argument("--revocation", choices=("hard", "soft", "off"), default="hard", help="as for check")
    reconcile.add_argument("--trust", metavar="FILE", help="trust exactly the roots in FILE instead of Mozilla's")
    reconcile.add_argument(
        "--allow-host", action="append", default=[], metavar="HOST[:PORT]", help="as for check (repeat)"
    )
    _crl_cap_option(reconcile)
    _json_option(reconcile)
    reconcile.set_defaults(run=_cmd_reconcile)

    probe = commands.add_parser(
        "probe",
        allow_abbrev=False,
        help="connect over SMTP STARTTLS and assess the certificate served (exit 1 unless it is right)",
        **examples(
            "certsync probe mail.contoso.com --expect-file mail-2026-11.pem",
            "certsync probe 203.0.113.25:25 --servername mail.contoso.com "
            "--expect 6D9AFCAD551C8DC5DBEC667DD7A1C359118BF440",
            "certsync probe mail.contoso.com --revocation hard --json",
        ),
    )
    probe.add_argument("endpoint", metavar="HOST[:PORT]", help="the SMTP server, port 25 unless given")
    expect = probe.add_mutually_exclusive_group()
    expect.add_argument("--expect", metavar="THUMBPRINT", help="the thumbprint the server should serve now")
    expect.add_argument("--expect-file", metavar="CERT", help="the certificate the server should serve now")
    _password_option(probe)  # for an --expect-file that is a PFX
    probe.add_argument("--trust", metavar="FILE", help="trust exactly the roots in FILE instead of Mozilla's")
    probe.add_argument("--at", metavar="ISO8601", help="assess at this time instead of now")
    probe.add_argument(
        "--revocation",
        choices=("hard", "soft", "off"),
        default="soft",
        help="as for check, but soft by default so that a probe never waits on a CRL",
    )
    probe.add_argument("--allow-host", action="append", default=[], metavar="HOST[:PORT]", help="as for check (repeat)")
    probe.add_argument("--timeout", type=float, default=15.0, metavar="S", help="give up after S seconds (15)")
    probe.add_argument("--servername", metavar="NAME", help="SNI, and the name the certificate must cover")
    _json_option(probe)
    probe.set_defaults(run=_cmd_probe)

    plan.register(commands)
    doctor.register(commands)
    blocks.register(commands)
    return parser


def _password_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-env",
        metavar="VAR",
        help="name of an environment variable holding the PKCS#12 password (never the password itself)",
    )
    parser.add_argument("--password", "--pass", nargs="?", action=_RefusePassword, help=argparse.SUPPRESS)


class _RefusePassword(argparse.Action):
    """A password on the command line ends up in shell history and process lists: refuse it, unechoed."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        parser.error(
            "passwords are not taken on the command line; put the PKCS#12 password in an environment "
            "variable and pass its name with --password-env"
        )


def _crl_cap_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--crl-max-mb",
        type=_crl_megabytes,
        default=64,
        metavar="N",
        help="refuse to download a CRL larger than N MiB (default 64; CERTSYNC_CRL_MAX_MB in the app)",
    )


def _crl_megabytes(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1024:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of MiB from 1 to 1024")
    return int(text)


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def _cmd_name(args: argparse.Namespace) -> int:
    from shared.x509.reports import name_report, powershell_argument

    report = name_report(_load(args.file, args.password_env))
    if args.json:
        _print_json(report)
    elif args.powershell:
        print(powershell_argument(report["tls_certificate_name"]))
    else:
        _print_table([*_certificate_rows(report), ("Chain", _chain_text(report["chain"]))])
        _print_problems(report["problems"])
    return EXIT_OK if report["exchange_accepts"] else EXIT_FINDING


def _cmd_diff(args: argparse.Namespace) -> int:
    from shared.validation.hierarchies import explain_issuer_change
    from shared.x509.reports import diff_report

    old_bundle, new_bundle = _load(args.old, args.password_env), _load(args.new, args.password_env)
    report = diff_report(old_bundle, new_bundle)
    try:
        explained = explain_issuer_change(old_bundle.leaf.issuer, new_bundle.leaf.issuer)
    except CertsyncError:  # an undecodable issuer: diff_report has said what it can
        explained = None
    report["issuer_change"] = explained.to_dict() if explained is not None else None
    old, new = report["old"], report["new"]
    if args.json:
        _print_json(report)
    else:
        rows = [("Old", old["tls_certificate_name"]), ("New", new["tls_certificate_name"]), ("", "")]
        rows.append(_change_row("Issuer", old["issuer"], new["issuer"], report["issuer_changed"]))
        rows.append(_change_row("Subject", old["subject"], new["subject"], report["subject_changed"]))
        if explained is not None:
            rows.append(("Why", explained.explanation if explained.expected else "FLAGGED: " + explained.explanation))
        added = ["+" + n for n in report["dns_names_added"]]
        removed = ["-" + n for n in report["dns_names_removed"]]
        rows.append(("DNS names", " ".join(added + removed) or "unchanged"))
        rows.append(("Thumbprint", f"{old['thumbprint']} -> {new['thumbprint']}"))
        if report["connector_update_required"]:
            verdict = (
                "UPDATE REQUIRED: set TlsCertificateName on the send connectors, the receive connectors "
                f"and the hybrid configuration to {new['powershell_literal']}"
            )
        elif report["differs_only_in_case"]:
            verdict = "no change needed (the strings differ only in case, which Exchange ignores)"
        else:
            verdict = "no change needed: the connectors will pick up the renewed certificate by name"
        rows.append(("Connectors", verdict))
        _print_table(rows)
        _print_problems(new["problems"])
    finding = report["connector_update_required"] or not new["exchange_accepts"]
    return EXIT_FINDING if finding else EXIT_OK


def _cmd_parse(args: argparse.Namespace) -> int:
    from shared.x509.reports import parse_report

    bundle = _load(args.cert, args.password_env) if args.cert else None
    report = parse_report(args.value, bundle)
    if args.json:
        _print_json(report)
    else:
        rows = []
        if report["subject"] is not None:
            rows += [("Issuer", "(none: matches any issuer)" if report["issuer"] is None else report["issuer"])]
            rows += [("Subject", report["subject"]), ("Stored as", report["canonical"])]
        if "selects_certificate" in report:
            cert = report["certificate"]
            selects = report["selects_certificate"]
            verdict = "yes" if selects else f"NO: the certificate is {cert['tls_certificate_name']}"
            rows.append(("Selects " + cert["thumbprint"][:8], verdict))
        _print_table(rows)
        if report["exchange_accepts"]:
            print("Exchange accepts this value.")
        _print_problems(report["problems"])
    ok = report["exchange_accepts"] and report.get("selects_certificate", True)
    return EXIT_OK if ok else EXIT_FINDING


def _cmd_check(args: argparse.Namespace) -> int:
    from shared.validation.assessment import VALID, TrustStore, assess
    from shared.validation.fetch import Fetcher, FetchLimits
    from shared.validation.revocation import load_crl_file

    at = _parse_time(args.at) if args.at else None
    fetcher = Fetcher(allow=args.allow_host, limits=FetchLimits.with_crl_cap(args.crl_max_mb))
    trust = TrustStore.from_file(args.trust) if args.trust else None
    crls = [load_crl_file(path) for path in args.crl]
    bundle = _load(args.file, args.password_env)
    result = assess(
        bundle,
        hosts=args.host,
        trust=trust,
        at=at,
        revocation=args.revocation,
        crls=crls,
        fetcher=fetcher,
        expiry=_expiry(args.expiry_days),
    )
    if args.json:
        _print_json(result.to_dict())
    else:
        rows = [
            ("Status", result.status),
            ("TlsCertificateName", result.tls_certificate_name),
            ("Checked at", f"{result.to_dict()['at']} (revocation {result.revocation_policy})"),
        ]
        for n, entry in enumerate(result.path, 1):
            item = entry.to_dict()
            text = f"{n}. {item['subject']}  [{item['thumbprint'][:8]}, {entry.source}, until {item['not_after'][:10]}]"
            rows.append(("Path" if n == 1 else "", text))
        _print_table(rows)
        for finding in result.findings:
            print(f"{finding.severity.upper():<8} {finding.code}: {_visible(finding.message)}")
            print(f"{'':<8} Fix: {_visible(finding.remedy)}")
        if not result.findings:
            print("No findings.")
    return EXIT_OK if result.status == VALID else EXIT_FINDING


def _expiry(days: int) -> ExpiryThresholds:
    """--expiry-days N: the longest warning window; the rest are the lifetime-fraction defaults."""
    from shared.validation.lifetime import ExpiryThresholds

    if days <= 0:
        raise CertsyncError(f"--expiry-days {days}: give a whole number of days above 0")
    return ExpiryThresholds(warning_cap_days=days, critical_cap_days=min(7, days))


def _cmd_process(args: argparse.Namespace) -> int:
    from shared.pipeline.events import parse_event_json
    from shared.pipeline.process import PipelineSettings
    from shared.validation.assessment import TrustStore
    from shared.wiring import local_pipeline

    try:
        with open(args.event, "rb") as handle:
            text = handle.read(2 * 1024 * 1024)
    except OSError as exc:
        raise CertsyncError(f"{args.event}: cannot be read ({exc.strerror}); check the path") from None
    events = parse_event_json(text, args.event)
    import logging

    logging.getLogger("certsync").addHandler(logging.NullHandler())  # notices: the outcome lines say it all
    settings = PipelineSettings(
        vaults=(),
        trust=TrustStore.from_file(args.trust) if args.trust else None,
        revocation=args.revocation,
        allow_hosts=tuple(args.allow_host),
        crl_max_mb=args.crl_max_mb,
        at=_parse_time(args.at) if args.at else None,
        expiry=_expiry(args.expiry_days),
    )
    pipeline = local_pipeline(
        vault_dir=args.vault_dir,
        vault_url=args.vault_url,
        targets=args.targets,
        outbox=args.outbox,
        audit=args.audit,
        settings=settings,
        inventory=args.inventory,
        inventory_store=args.inventory_store,
    )
    outcomes = [pipeline.process(event) for event in events]
    if args.json:
        _print_json([o.to_dict() for o in outcomes] if len(outcomes) > 1 else outcomes[0].to_dict())
    else:
        for outcome in outcomes:
            _print_outcome(outcome, args.outbox)
    attention = ("blocked", "expiry-warning", "waiting-for-inventory")  # each needs someone to act
    worst = EXIT_FINDING if any(o.outcome in attention for o in outcomes) else EXIT_OK
    return worst


def _print_outcome(outcome: Outcome, outbox: str) -> None:
    report = outcome.to_dict()
    event = report["event"]
    rows = [("Event", f"{event['event_type'].rsplit('.', 1)[-1]} {event['vault']}/{event['name']} {event['version']}")]
    diff = report["diff"]
    if diff:
        rows += [("Old", diff["old"]), ("New", diff["new"]), ("Change", diff["change"].replace("_", " "))]
        if diff["dns_names_added"] or diff["dns_names_removed"]:
            dns = [f"+{n}" for n in diff["dns_names_added"]] + [f"-{n}" for n in diff["dns_names_removed"]]
            rows.append(("DNS names", " ".join(dns)))
    elif outcome.new is not None:
        rows.append(("New", report["assessment"]["tls_certificate_name"] if report["assessment"] else ""))
    assessment = report["assessment"]
    if assessment:
        rows.append(("Assessment", f"{assessment['status']} ({len(assessment['findings'])} finding(s))"))
    _print_table(rows)
    for finding in (assessment or {}).get("findings", []):
        print(f"  {finding['severity'].upper():<8} {finding['code']}: {_visible(finding['message'])}")
    document = outcome.plan_document
    if document is not None:
        inventory = document["inventory"]
        print(f"Plan: {_visible(document['summary'])}")
        print(f"Inventory: {inventory['worker_group']}, collected {inventory['collected_at']}")
        plan.print_plan_body(document)
    print(f"Outcome: {outcome.outcome.upper()}" + (f" ({_visible(outcome.reason)})" if outcome.reason else ""))
    if outcome.request is not None and outcome.outcome == "queued":
        print(f"Job: {outbox}/{outcome.request.job_id}.json")


def _cmd_reconcile(args: argparse.Namespace) -> int:
    from shared.pipeline.process import PipelineSettings
    from shared.validation.assessment import TrustStore
    from shared.wiring import local_reconciler

    at = _parse_time(args.at) if args.at else dt.datetime.now(dt.timezone.utc)
    import logging

    logging.getLogger("certsync").addHandler(logging.NullHandler())  # notices: the findings below say it all
    settings = PipelineSettings(
        trust=TrustStore.from_file(args.trust) if args.trust else None,
        revocation=args.revocation,
        allow_hosts=tuple(args.allow_host),
        crl_max_mb=args.crl_max_mb,
    )
    reconciler = local_reconciler(
        vault_dir=args.vault_dir,
        vault_url=args.vault_url,
        vault=args.vault,
        targets=args.targets,
        outbox=args.outbox,
        audit=args.audit,
        state=args.state,
        settings=settings,
        inventory_store=args.inventory_store,
    )
    from shared.cli.progress import on_stderr

    reconciler.progress = on_stderr("reconciling")
    report = reconciler.run(at)
    if args.json:
        _print_json(report.to_dict())
    else:
        _print_reconcile_report(report, args.outbox)
    return EXIT_FINDING if report.findings or report.failures else EXIT_OK


# the order of reconcile's rows: what failed, then findings from the worst, then what it resolved and processed
_RECONCILE_ORDER = ("FAILURE", "CRITICAL", "ERROR", "WARNING", "INFO", "RESOLVED", "PROCESSED")


def _print_reconcile_report(report: ReconcileReport, outbox: str) -> None:
    """One row a finding, resolved finding, processed version or failure, worst first, then by certificate and
    check; then one line that counts them."""
    rows = [
        (f.severity.upper(), f.certificate, f.code, f.state + (" (new)" if f.changed else ""), f.summary)
        for f in report.findings
    ]
    rows += [("RESOLVED", f.certificate, f.code, "resolved", f.summary) for f in report.resolved]
    for item in report.processed:
        job = f" (job {outbox}/{item['job_id']}.json)" if item.get("job_id") else ""
        rows.append(("PROCESSED", item["certificate"], "processed", item["version"], item["outcome"] + job))
    rows += [("FAILURE", "", "", "", failure) for failure in report.failures]
    rank = {what: n for n, what in enumerate(_RECONCILE_ORDER)}
    rows.sort(key=lambda row: (rank.get(row[0], len(rank)), row[1], row[2]))
    severities = [f.severity for f in report.findings]
    counts = {s: severities.count(s) for s in ("critical", "error", "warning", "info")}
    new = sum(1 for f in report.findings if f.changed)
    found = counted(counts) + (f" ({new} new)" if new else "") if severities else "no findings"
    more = counted(
        {"resolved": len(report.resolved), "processed": len(report.processed), "failure(s)": len(report.failures)}
    )
    checked = report.to_dict()["checked_at"]
    summary = f"{len(report.certificates)} certificate(s) in {', '.join(report.vaults)} as of {checked}: {found}"
    tail = f"; {more}" if more != "nothing" else ""
    print_rows(("SEVERITY", "CERTIFICATE", "CHECK", "STATE", "DETAIL"), rows, f"{summary}{tail}.")


def _cmd_history(args: argparse.Namespace) -> int:
    """Streamed: entries are printed as the audit log reads them, a page at a time, so memory stays flat
    however long the trail. --json is one JSON array with one entry per line. The SQLite backend is
    imported on its own, not through shared.wiring, which would import the whole pipeline first."""
    import json

    from shared.adapters.local.sqlite import SqliteAuditLog

    since = _parse_time(args.since, "--since") if args.since is not None else None
    limit = _parse_count(args.limit, "--limit") if args.limit is not None else None
    audit = SqliteAuditLog.existing(args.audit)
    entries = audit.history(args.name, since=since, limit=limit)
    out = sys.stdout
    if args.json:
        separator = "[\n"
        for entry in entries:
            out.write(separator + json.dumps(entry.to_dict()))
            separator = ",\n"
        out.write("[]\n" if separator == "[\n" else "\n]\n")
        return EXIT_OK
    from shared.pipeline.audit import KINDS

    # a table whose widths are known before the first row: the trail is printed as it is read
    width = max(len(kind) for kind in KINDS)
    kinds: dict[str, int] = {}  # entries of each kind, for the summary: memory as flat as the stream's
    first = last = ""
    for entry in entries:
        at = entry.at.astimezone(dt.timezone.utc).isoformat(timespec="seconds")[:19] + "Z"
        if not kinds:
            out.write(f"{'TIME (UTC)':<20}  {'KIND':<{width}}  DELIVERY  SUMMARY\n")
            first = at
        last = at
        kinds[entry.kind] = kinds.get(entry.kind, 0) + 1
        out.write(f"{at}  {entry.kind:<{width}}  {entry.correlation_id[:8]:<8}  {_visible(entry.summary)}\n")
    if not kinds:
        out.write(f"No audit entries for {args.name}" + (f" since {args.since}" if since else "") + ".\n")
        return EXIT_OK
    total = sum(kinds.values())
    span = f"at {first}" if first == last else f"from {first} to {last}"
    out.write(f"{total} entr{'y' if total == 1 else 'ies'} for {args.name} {span}: {counted(kinds)}.\n")
    return EXIT_OK


def _cmd_probe(args: argparse.Namespace) -> int:
    from shared.validation.assessment import TrustStore
    from shared.validation.fetch import Fetcher
    from shared.validation.probe import probe

    expected = args.expect or (_load(args.expect_file, args.password_env).leaf.thumbprint if args.expect_file else None)
    result = probe(
        args.endpoint,
        expected_thumbprint=expected,
        trust=TrustStore.from_file(args.trust) if args.trust else None,
        at=_parse_time(args.at) if args.at else None,
        revocation=args.revocation,
        timeout=args.timeout,
        server_name=args.servername,
        fetcher=Fetcher(allow=args.allow_host),
    )
    if not result.ok:
        raise CertsyncError(result.error or f"{result.endpoint}: the probe failed")
    if args.json:
        _print_json(result.to_dict())
        return EXIT_OK if result.passed else EXIT_FINDING
    assessment = result.assessment
    assert assessment is not None  # an ok probe always has one
    rows = [
        ("Endpoint", result.endpoint),
        ("Banner", result.banner or ""),
        ("TLS", f"{result.tls_version}, {result.cipher}"),
    ]
    for n, cert in enumerate(result.to_dict()["chain"], 1):
        rows.append(("Served chain" if n == 1 else "", f"{n}. {cert['subject']}  [until {cert['not_after'][:10]}]"))
        rows.append(("", f"   issued by {cert['issuer']}; thumbprint {cert['thumbprint']}"))
    rows.append(("TlsCertificateName", assessment.tls_certificate_name))
    if result.is_expected is None:
        rows.append(("New certificate", "not checked (give --expect or --expect-file)"))
    else:
        rows.append(("New certificate", "yes" if result.is_expected else f"NO: expected {result.expected_thumbprint}"))
    sent = {True: "yes", False: "NO: the server does not send the intermediate its chain needs", None: "unknown"}
    rows.append(("Intermediates sent", sent[result.intermediates_sent]))
    rows.append(("Status", f"{assessment.status} (revocation {assessment.revocation_policy})"))
    _print_table(rows)
    if result.intermediates_sent is False:
        print(
            "Fix: install the intermediate certificate into the server's intermediate store "
            "(Cert:\\LocalMachine\\CA), then restart the Microsoft Exchange Transport service"
        )
    for finding in assessment.findings:
        print(f"{finding.severity.upper():<8} {finding.code}: {_visible(finding.message)}")
        print(f"{'':<8} Fix: {_visible(finding.remedy)}")
    return EXIT_OK if result.passed else EXIT_FINDING


def _parse_count(text: str, option: str) -> int:
    count = int(text) if text.strip().isdecimal() else 0
    if count < 1:
        raise CertsyncError(f"{option} {text!r}: give a whole number, 1 or more")
    return count


def _certificate_rows(report: dict) -> list[tuple[str, str]]:
    from shared.x509.reports import powershell_argument

    return [
        ("TlsCertificateName", report["tls_certificate_name"]),
        ("Issuer", report["issuer"]),
        ("Subject", report["subject"]),
        ("Thumbprint", report["thumbprint"]),
        ("Serial", report["serial"]),
        ("Valid", f"{report['not_before']} to {report['not_after']}"),
        ("DNS names", ", ".join(report["dns_names"]) or "(none)"),
        ("PowerShell", powershell_argument(report["tls_certificate_name"])),
    ]


def _chain_text(chain: list[dict]) -> str:
    if not chain:
        return "(no issuing certificates in the file)"
    return "; ".join(f"{c['subject']} ({c['thumbprint'][:8]})" for c in chain)


def _change_row(label: str, old: str, new: str, changed: bool) -> tuple[str, str]:
    return (label, f"CHANGED: {old}  ->  {new}" if changed else "unchanged")


def _print_problems(problems: list[str]) -> None:
    for problem in problems:
        print(f"Problem: {_visible(problem)}")


def _error(message: str) -> None:
    print(f"certsync: error: {_visible(message)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
