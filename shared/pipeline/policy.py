"""The Key Vault issuance policy doctor: policies that will fail Exchange or the renewal schedule, found
before the renewal happens.

Key Vault issues and renews a certificate by its policy (`exchange-azure-facts.md`, Key Vault policy):
the key (type, size, curve, exportable), the secret's content type, the subject and SANs, the validity
and the lifetime actions (auto-renew at a lifetime percentage or a number of days before expiry).
`IssuancePolicy` is that policy as certsync reads it, from the Key Vault SDK (`shared.adapters.azure`)
or from a vault directory's `policy.json` in Key Vault's REST shape (`shared.adapters.local`).
`check_policy` reports, each with its fix:

- `policy-renews-late`: the auto-renew trigger leaves less of the lifetime than the expiry warning
  window (`shared.validation.lifetime`), or, for a lifetime of 100 days or less, less than 30% of it
  (a failed renewal then has no time to be retried); `policy-no-auto-renew`: Key Vault only emails;
- `policy-key-not-exportable`: the runbook imports a PFX with its key;
- `policy-content-type`: not one the runbook accepts (`contract.ACCEPTED_CONTENT_TYPES`);
- `policy-key`: a key Exchange cannot use (RSA under 2048 bits, a curve other than P-256/P-384), or
  ECDSA, which needs Exchange 2019 CU12+ / 2016 CU23+ (or Exchange SE) with ECC support enabled: an
  error for each server of the inventory below those builds, else a warning (ECC must be enabled);
- `policy-subject-empty`, `policy-cn-not-dns-name`: Exchange's TlsCertificateName cannot name the
  certificates the policy issues (`tls-certificate-name.md` §4).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.errors import CertsyncError, NameSyntaxError
from shared.exchange.inventory import Inventory
from shared.pipeline.contract import ACCEPTED_CONTENT_TYPES
from shared.validation.lifetime import ExpiryThresholds
from shared.x509.tls_certificate_name import is_exchange_host_name
from shared.x509.x500 import COMMON_NAME, X500Name

POLICY_SEVERITIES = ("info", "warning", "error")
_GOOD_CURVES = ("P-256", "P-384")
DAYS_PER_MONTH = 30.44
SHORT_LIFETIME_DAYS = 100  # the CA/B Forum maximum from 15 March 2027
RETRY_FRACTION = 0.3  # short lifetimes renew with about a third left (Let's Encrypt renews at two thirds)
# Exchange builds that can use an ECDSA certificate (with ECC support enabled): 2019 CU12, 2016 CU23.
_ECC_MINIMUM = {(15, 2): 1118, (15, 1): 2507}
_VERSION = re.compile(r"(?:Version\s+)?(\d+)\.(\d+)\s*(?:\(Build\s+(\d+)|\.(\d+))", re.IGNORECASE)


@dataclass(frozen=True)
class IssuancePolicy:
    """A certificate's Key Vault issuance policy, as far as the doctor needs it."""

    exportable: bool | None = None
    key_type: str | None = None  # RSA, RSA-HSM, EC, EC-HSM
    key_size: int | None = None
    curve: str | None = None
    content_type: str | None = None
    subject: str | None = None
    dns_names: tuple[str, ...] = ()
    validity_months: int | None = None
    lifetime_percentage: int | None = None  # the AutoRenew trigger, when it is a percentage
    days_before_expiry: int | None = None  # ... or a number of days
    auto_renew: bool = False  # an AutoRenew lifetime action (else Key Vault only emails, or nothing)
    issuer: str | None = None  # Self, Unknown, or the vault's issuer name

    @classmethod
    def from_document(cls, document: Mapping[str, Any], where: str) -> IssuancePolicy:
        """A policy in Key Vault's REST shape (`key_props`, `secret_props`, `x509_props`,
        `lifetime_actions`, `issuer`), as `GET /certificates/{name}/policy` returns it."""
        try:
            key = _mapping(document.get("key_props"))
            secret = _mapping(document.get("secret_props"))
            x509_props = _mapping(document.get("x509_props"))
            sans = _mapping(x509_props.get("sans"))
            trigger, auto_renew = None, False
            for item in document.get("lifetime_actions") or []:
                action = str(_mapping(_mapping(item).get("action")).get("action_type") or "")
                if action.lower() == "autorenew":
                    auto_renew, trigger = True, _mapping(_mapping(item).get("trigger"))
            trigger = trigger or {}
            return cls(
                exportable=_optional(key.get("exportable"), bool),
                key_type=_optional(key.get("kty"), str),
                key_size=_optional(key.get("key_size"), int),
                curve=_optional(key.get("crv"), str),
                content_type=_optional(secret.get("contentType"), str),
                subject=_optional(x509_props.get("subject"), str),
                dns_names=tuple(str(n) for n in sans.get("dns_names") or ()),
                validity_months=_optional(x509_props.get("validity_months"), int),
                lifetime_percentage=_optional(trigger.get("lifetime_percentage"), int),
                days_before_expiry=_optional(trigger.get("days_before_expiry"), int),
                auto_renew=auto_renew,
                issuer=_optional(_mapping(document.get("issuer")).get("name"), str),
            )
        except (TypeError, ValueError) as exc:
            raise CertsyncError(f"{where}: not a Key Vault certificate policy ({exc}); fix or remove it") from None


def _mapping(value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"expected an object, found {type(value).__name__}")
    return value


def _optional(value: Any, kind: type) -> Any:
    if value is None:
        return None
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{value!r} is not a whole number")
    if kind is bool and not isinstance(value, bool):
        raise ValueError(f"{value!r} is not true or false")
    if kind is str and not isinstance(value, str):
        raise ValueError(f"{value!r} is not text")
    return value


@dataclass(frozen=True)
class PolicyFinding:
    certificate: str  # <vault>/<name>
    code: str
    severity: str  # info | warning | error
    message: str
    fix: str

    def to_dict(self) -> dict[str, str]:
        return {
            "certificate": self.certificate,
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "fix": self.fix,
        }


def check_policy(
    certificate: str,
    policy: IssuancePolicy,
    *,
    lifetime: dt.timedelta | None = None,
    inventory: Inventory | None = None,
    expiry: ExpiryThresholds | None = None,
) -> list[PolicyFinding]:
    """What in `policy` will fail Exchange or the renewal schedule. `lifetime` is the current certificate's
    (else the policy's validity); `inventory` gives the servers' Exchange builds for an ECDSA key."""
    found: list[PolicyFinding] = []

    def add(code: str, severity: str, message: str, fix: str) -> None:
        found.append(PolicyFinding(certificate, code, severity, message, fix))

    _check_schedule(policy, lifetime, expiry or ExpiryThresholds(), add)
    if policy.exportable is False:
        add(
            "policy-key-not-exportable",
            "error",
            "the policy keeps the private key in the vault (exportable: false), and the import on the Exchange "
            "servers needs it",
            "set key_props.exportable to true in the certificate policy, then renew",
        )
    if policy.content_type is not None and policy.content_type.lower() not in ACCEPTED_CONTENT_TYPES:
        add(
            "policy-content-type",
            "error",
            f"the policy stores the certificate as {policy.content_type}, which the runbook cannot import "
            f"(it takes {', '.join(ACCEPTED_CONTENT_TYPES)})",
            "set secret_props.contentType to application/x-pkcs12 in the certificate policy, then renew",
        )
    _check_key(policy, inventory, add)
    _check_subject(policy, add)
    return found


def _check_schedule(policy: IssuancePolicy, lifetime: dt.timedelta | None, expiry: ExpiryThresholds, add: Any) -> None:
    if not policy.auto_renew:
        add(
            "policy-no-auto-renew",
            "warning",
            "the policy does not renew the certificate automatically (no AutoRenew lifetime action)",
            "add a lifetime action AutoRenew at 67% of the lifetime (or a third of it left)",
        )
        return
    days = lifetime.total_seconds() / 86400 if lifetime is not None else None
    if days is None and policy.validity_months:
        days = policy.validity_months * DAYS_PER_MONTH
    if not days:
        return
    if policy.lifetime_percentage is not None:
        left = days * (100 - policy.lifetime_percentage) / 100
        trigger = f"at {policy.lifetime_percentage}% of the lifetime"
    elif policy.days_before_expiry is not None:
        left = float(policy.days_before_expiry)
        trigger = f"{policy.days_before_expiry} days before expiry"
    else:
        return
    warning = expiry.days(dt.timedelta(days=days))[0]
    fix = "renew at 67% of the lifetime (lifetime_percentage 67), so a third of it is left to retry a failure"
    if left >= days:
        add(
            "policy-renews-late",
            "error",
            f"the auto-renew trigger ({trigger}) is longer than the {days:.0f}-day lifetime: every new version "
            "would be due for renewal at once",
            fix,
        )
    elif left <= warning:
        add(
            "policy-renews-late",
            "error",
            f"the auto-renew trigger ({trigger}) leaves {left:.1f} days of a {days:.0f}-day lifetime, inside the "
            f"{warning:.1f}-day expiry warning window: every renewal would come after the warning",
            fix,
        )
    elif days <= SHORT_LIFETIME_DAYS and left < days * RETRY_FRACTION:
        add(
            "policy-renews-late",
            "warning",
            f"the auto-renew trigger ({trigger}) leaves {left:.1f} days of a {days:.0f}-day lifetime, less than "
            f"{RETRY_FRACTION:.0%}: a failed renewal has little time to be retried",
            fix,
        )


def _check_key(policy: IssuancePolicy, inventory: Inventory | None, add: Any) -> None:
    kty = (policy.key_type or "").upper()
    fix = "use an RSA key of 2048 bits or more (key_props.kty RSA, key_size 2048) and renew"
    if kty.startswith("RSA"):
        if policy.key_size is not None and policy.key_size < 2048:
            add(
                "policy-key",
                "error",
                f"the policy's RSA key is {policy.key_size} bits; Exchange and Exchange Online need at least 2048",
                fix,
            )
        return
    if not kty.startswith("EC"):
        if kty:
            add("policy-key", "error", f"the policy's key type {policy.key_type} cannot sign TLS handshakes", fix)
        return
    if policy.curve is not None and policy.curve.upper() not in _GOOD_CURVES:
        add(
            "policy-key",
            "error",
            f"the policy's curve {policy.curve} is not usable for TLS by Exchange (P-256 or P-384 only)",
            fix,
        )
        return
    old = [s for s in (inventory.servers if inventory else ()) if not _ecc_capable(s.version)]
    if old:
        shown = ", ".join(f"{s.name} ({s.version or 'version unknown'})" for s in old)
        add(
            "policy-key",
            "error",
            f"the policy issues ECDSA keys, which {shown} cannot use: ECDSA needs Exchange 2019 CU12 or later, "
            "2016 CU23 or later, or Exchange SE, with ECC support enabled",
            f"update those servers, or {fix}",
        )
    else:
        checked = "every server of the inventory runs a build that can" if inventory else "give --inventory to check"
        add(
            "policy-key",
            "warning",
            f"the policy issues ECDSA keys: Exchange uses them only on 2019 CU12+ / 2016 CU23+ / SE with ECC "
            f"support enabled (a setting override the inventory does not show; {checked})",
            f"confirm ECC support is enabled on every server (Get-SettingOverride), or {fix}",
        )


def _ecc_capable(version: str) -> bool:
    """Whether an AdminDisplayVersion ("Version 15.2 (Build 1544.4)") is 2019 CU12+ or 2016 CU23+."""
    match = _VERSION.search(version or "")
    if match is None:
        return False
    major, minor = int(match.group(1)), int(match.group(2))
    build = int(match.group(3) or match.group(4))
    needed = _ECC_MINIMUM.get((major, minor))
    return (needed is not None and build >= needed) or (major, minor) > (15, 2)


def _check_subject(policy: IssuancePolicy, add: Any) -> None:
    fix = (
        "set the policy's subject to CN=<the mail host name> (x509_props.subject); for an ACME issuer, request "
        "a profile that includes a CN (Let's Encrypt 'classic', not 'shortlived' or 'tlsserver')"
    )
    if policy.subject is None:
        return
    try:
        name = X500Name.parse(policy.subject) if policy.subject.strip() else None
    except NameSyntaxError as exc:
        add("policy-subject-empty", "error", f"the policy's subject {policy.subject!r} cannot be read ({exc})", fix)
        return
    cn = name.first(COMMON_NAME) if name is not None else None
    if cn is None:
        what = "is empty" if name is None or not name.rdns else f"{policy.subject!r} has no CN"
        add(
            "policy-subject-empty",
            "error",
            f"the policy's subject {what}: the certificates it issues cannot be named by Exchange's "
            "TlsCertificateName (<S>)",
            fix,
        )
    elif not is_exchange_host_name(cn):
        add(
            "policy-cn-not-dns-name",
            "error",
            f"the policy's subject CN {cn!r} is not a DNS host name, so Exchange refuses the TlsCertificateName",
            fix,
        )


def worst(findings: Sequence[PolicyFinding]) -> str | None:
    return max((f.severity for f in findings), key=POLICY_SEVERITIES.index, default=None)
