"""The results of `name`, `diff` and `parse` as plain JSON-ready dicts.

The CLI prints them (as a table or as JSON) and the HTTP function returns them, so every surface
says the same thing in the same words.
"""

from __future__ import annotations

from typing import Any

from shared.errors import NameSyntaxError
from shared.times import format_time
from shared.x509.certificate import Certificate, CertificateBundle
from shared.x509.tls_certificate_name import TlsCertificateName, diff_certificates

# PowerShell treats these as single quotes too, so each must be doubled inside a '…' literal.
_PS_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"


def powershell_literal(text: str) -> str:
    """`text` as a PowerShell single-quoted string, safe to paste after -TlsCertificateName."""
    return "'" + "".join(ch * 2 if ch in _PS_SINGLE_QUOTES else ch for ch in text) + "'"


def powershell_argument(text: str) -> str:
    """`text` as a Windows PowerShell 5.1 argument in printable ASCII only (`certsync name --powershell`).

    A plain single-quoted literal when `text` is printable ASCII (`$`, backticks and commas are literal
    inside single quotes; a quote is doubled). Otherwise literals joined by `+`, with `[char]0xNNNN` for each
    other UTF-16 code unit, in parentheses, beginning with a literal so that `+` joins strings: PowerShell
    5.1 reads a script without a byte-order mark in the ANSI code page, where `é` in a literal becomes `Ã©`
    and the connector would select no certificate; ASCII reads the same in every code page and console."""
    parts: list[str] = []
    run: list[str] = []
    for ch in text:
        if " " <= ch <= "~":
            run.append("''" if ch == "'" else ch)
            continue
        if run or not parts:
            parts.append("'" + "".join(run) + "'")
            run = []
        data = ch.encode("utf-16-be")
        parts += [f"[char]0x{data[i] << 8 | data[i + 1]:04X}" for i in range(0, len(data), 2)]
    if run or not parts:
        parts.append("'" + "".join(run) + "'")
    return parts[0] if len(parts) == 1 else "(" + " + ".join(parts) + ")"


def name_report(bundle: CertificateBundle) -> dict[str, Any]:
    """What `certsync name` reports about the leaf of a bundle."""
    leaf = bundle.leaf
    report = certificate_report(leaf)
    report["chain"] = [{"subject": str(c.subject), "thumbprint": c.thumbprint} for c in bundle.chain]
    return report


def certificate_report(cert: Certificate) -> dict[str, Any]:
    name = TlsCertificateName.from_certificate(cert)
    text = str(name)
    problems = name.problems()
    return {
        "issuer": str(cert.issuer),
        "subject": str(cert.subject),
        "tls_certificate_name": text,
        "thumbprint": cert.thumbprint,
        "serial": cert.serial,
        "not_before": format_time(cert.not_before, timespec="seconds"),
        "not_after": format_time(cert.not_after, timespec="seconds"),
        "dns_names": list(cert.dns_names),
        "exchange_accepts": not problems,
        "problems": problems,
        "powershell_literal": powershell_literal(text),
    }


def diff_report(old: CertificateBundle, new: CertificateBundle) -> dict[str, Any]:
    """What `certsync diff` reports: the change and whether the connectors must follow it."""
    diff = diff_certificates(old.leaf, new.leaf)
    return {
        "change": diff.change,
        "issuer_changed": diff.issuer_changed,
        "subject_changed": diff.subject_changed,
        "connector_update_required": diff.connector_update_required,
        "differs_only_in_case": diff.differs_only_in_case,
        "dns_names_added": list(diff.dns_names_added),
        "dns_names_removed": list(diff.dns_names_removed),
        "old": certificate_report(old.leaf),
        "new": certificate_report(new.leaf),
    }


def parse_report(text: str, cert: CertificateBundle | None = None) -> dict[str, Any]:
    """What `certsync parse` reports about a TlsCertificateName copied from a connector."""
    report: dict[str, Any] = {
        "input": text,
        "exchange_accepts": False,
        "issuer": None,
        "subject": None,
        "canonical": None,
    }
    try:
        name = TlsCertificateName.parse(text, strict=False)
    except NameSyntaxError as exc:
        report["problems"] = [str(exc)]
        return report
    problems = name.problems()
    report.update(
        exchange_accepts=not problems,
        issuer=None if name.issuer is None else str(name.issuer),
        subject=str(name.subject),
        canonical=str(name),
        problems=problems,
    )
    if cert is not None:
        leaf_name = TlsCertificateName.from_certificate(cert.leaf)
        report["certificate"] = {"thumbprint": cert.leaf.thumbprint, "tls_certificate_name": str(leaf_name)}
        report["selects_certificate"] = name.matches(leaf_name)
    return report
