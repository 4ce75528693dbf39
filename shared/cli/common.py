"""What every `certsync` command shares: exit codes, reading a certificate file, `--at`, and printing
(tables with control characters escaped, JSON). Each command module (main.py's, plan.py, doctor.py)
imports these, so there is one way to do each."""

from __future__ import annotations

import argparse
import datetime as dt
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from shared.errors import CertsyncError

if TYPE_CHECKING:
    from shared.x509.certificate import CertificateBundle

EXIT_OK, EXIT_FINDING, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


def examples(*commands: str) -> dict[str, Any]:
    """`add_parser` keywords that end a command's `--help` with these examples, one `certsync ...` a line."""
    return {
        "epilog": "examples:\n" + "".join(f"  {command}\n" for command in commands),
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }


def load_bundle(path: str, password_env: str | None) -> CertificateBundle:
    """A certificate file (PEM, DER, PKCS#7, PKCS#12), its PFX password from the variable --password-env names."""
    from shared.x509.containers import load_certificate_file  # lazily: keeps start-up light

    password = None
    if password_env:
        if password_env not in os.environ:  # the name is not echoed: it may be a mistyped password
            raise CertsyncError(
                f"{path}: the environment variable named by --password-env is not set; "
                "set it to the PKCS#12 password, and pass its name (not the password)"
            )
        password = os.environ[password_env].encode("utf-8")
    return load_certificate_file(path, password)


def parse_at(text: str, option: str = "--at") -> dt.datetime:
    """A time option's value (`--at`, `--since`); a one-line error naming the option when it is not ISO 8601."""
    from shared.times import parse_time

    try:
        stamp = parse_time(text)
    except ValueError:
        stamp = None
    if stamp is None:
        raise CertsyncError(f"{option} {text!r}: not an ISO 8601 time; write e.g. 2027-01-31 or 2027-01-31T08:00Z")
    return stamp


def print_table(rows: list[tuple[str, str]]) -> None:
    """Label/value rows, labels padded to one width."""
    width = max((len(label) for label, _ in rows), default=0)
    for label, value in rows:
        print(f"{label:<{width}}  {visible(value)}".rstrip())


def print_rows(
    header: tuple[str, ...],
    rows: Sequence[tuple[str, ...]],
    summary: str | None,
    notes: Sequence[Sequence[str]] | None = None,
) -> None:
    """A table for people: the header, then `rows` in the order given (each command sorts its own), every
    column but the last padded to its widest cell, each row followed by its `notes` (indented lines), then
    `summary`, one line. Without rows, only the summary."""
    if rows:
        cells = [tuple(visible(cell) for cell in row) for row in rows]
        widths = [max(len(row[n]) for row in [header, *cells]) for n in range(len(header) - 1)]
        for n, row in enumerate([header, *cells]):
            print("  ".join([*(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)), row[-1]]).rstrip())
            for note in notes[n - 1] if notes and n else ():
                print(visible(f"    {note}"))
    if summary is not None:
        print(visible(summary))


def counted(counts: dict[str, int]) -> str:
    """`{"critical": 1, "warning": 0, "info": 3}` as `1 critical, 3 info`: the counts above zero, in order."""
    return ", ".join(f"{n} {what}" for what, n in counts.items() if n) or "nothing"


def visible(text: str) -> str:
    """Control characters shown escaped, so a terminal cannot be garbled by a certificate's name."""
    if text.isprintable() or all(ch >= " " and ch != "\x7f" for ch in text):  # isprintable: the fast, usual case
        return text
    return "".join(ch if ch >= " " and ch != "\x7f" else repr(ch)[1:-1] for ch in text)


def print_json(report: object) -> None:
    """JSON-ready data (a dict, or a list of them), indented, keys in the order they were written."""
    import json  # here, not at import: `certsync name` stays light

    print(json.dumps(report, indent=2))
