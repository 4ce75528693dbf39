"""A synthetic fleet of certsync.status/1 snapshots, for the status page's tests and bench/status_page.py:
`count` certificates across five vaults, six issuers and forty Exchange servers, expiries spread from
expired to a year ahead, remediations over the last weeks. Deterministic for a seed."""

from __future__ import annotations

import datetime as dt
import random

from shared.reconciliation.snapshot import SNAPSHOT_SCHEMA, StatusSnapshot
from shared.times import format_time

VAULTS = ("contoso-kv", "fabrikam-kv", "tailspin-kv", "northwind-kv", "woodgrove-kv")
ISSUERS = (
    "CN=R11, O=Let's Encrypt, C=US",
    "CN=DigiCert Global G2 TLS RSA SHA256 2020 CA1, O=DigiCert Inc, C=US",
    "CN=Sectigo RSA Domain Validation Secure Server CA, O=Sectigo Limited, L=Salford, S=Greater Manchester, C=GB",
    "CN=GlobalSign GCC R3 DV TLS CA 2020, O=GlobalSign nv-sa, C=BE",
    "CN=Contoso Issuing CA 02, DC=corp, DC=contoso, DC=com",
    "CN=E6, O=Let's Encrypt, C=US",
)
SERVERS = tuple(f"EX{n:02d}" for n in range(1, 41))


def fleet_snapshots(count: int, now: dt.datetime, seed: int = 19) -> list[StatusSnapshot]:
    """`count` snapshots as the daily reconciliation at `now` (minus two hours) would have written them."""
    rng = random.Random(seed)
    checked = format_time(now - dt.timedelta(hours=2), "seconds")
    found: list[StatusSnapshot] = []
    for number in range(1, count + 1):
        vault = VAULTS[number % len(VAULTS)]
        days = rng.choice((rng.uniform(-30, 0), *(rng.uniform(0, 60) for _ in range(3)), *(rng.uniform(60, 400),) * 6))
        not_after = now + dt.timedelta(days=days)
        servers = rng.sample(SERVERS, rng.randint(1, 3))
        outcomes = []
        for server in servers:
            outcome = rng.choices(("succeeded", "failed", "rolled-back", "pending", "never"), (80, 5, 3, 2, 10))[0]
            at = None if outcome == "never" else format_time(now - dt.timedelta(days=rng.uniform(0, 80)), "seconds")
            outcomes.append(
                {"server": server, "outcome": outcome, "at": at, "job_id": f"{number:08x}" * 4, "thumbprint": None}
            )
        drift = rng.choices(("ok", "drift", "pending", "unknown"), (85, 5, 3, 7))[0]
        findings = []
        if days < 0:
            findings.append({"code": "expiry", "severity": "critical", "summary": f"expired {int(-days)} days ago"})
        elif days < 7:
            findings.append({"code": "expiry", "severity": "critical", "summary": f"expires in {int(days)} days"})
        elif days < 30:
            findings.append({"code": "expiry", "severity": "warning", "summary": f"expires in {int(days)} days"})
        if drift == "drift":
            findings.append({"code": "drift", "severity": "warning", "summary": f"{servers[0]}: connector drift"})
        if any(o["outcome"] == "failed" for o in outcomes):
            findings.append({"code": "failed", "severity": "critical", "summary": "the last remediation failed"})
        worst = max((f["severity"] for f in findings), key=("info", "warning", "critical").index, default="ok")
        attention = "unknown" if number % 97 == 0 else worst
        issuer = ISSUERS[rng.randrange(len(ISSUERS))]
        found.append(
            {
                "schema": SNAPSHOT_SCHEMA,
                "certificate": f"mail-{number:05d}",
                "vault": vault,
                "version": f"{rng.getrandbits(128):032x}",
                "thumbprint": f"{rng.getrandbits(160):040X}",
                "tls_certificate_name": f"<I>{issuer}<S>CN=mail{number}.{vault.split('-')[0]}.com",
                "status": "Valid" if days >= 0 else "Expired",
                "not_after": format_time(not_after, "seconds"),
                "days_left": round(days, 2),
                "expiry_state": "ok",
                "drift": drift,
                "servers": outcomes,  # type: ignore[typeddict-item]
                "findings": findings,  # type: ignore[typeddict-item]
                "attention": attention,
                "checked_at": checked,
            }
        )
    return found
