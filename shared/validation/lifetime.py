"""Expiry by the fraction of a certificate's own lifetime, not by fixed day counts.

Lifetimes are shrinking (200 days at most now, 100 from 15 March 2027, 47 from 2029: CA/B Forum SC-081v3;
Let's Encrypt's default goes to 64 days in February 2027 and 45 in 2028), so "30 days left" means
nothing by itself: for a 45-day certificate it is the normal time to renew, for a one-year certificate
it is late. A certificate warns when less than `warning_fraction` of its lifetime is left, and is
critical under `critical_fraction`; each threshold is at least its floor in days (a week-long
certificate still gets a day's notice) and at most its cap (a long-lived certificate warns 30 days and
7 days before expiry, as before). The defaults come from `shared.settings` (CERTSYNC_EXPIRY_*).

Key Vault's `CertificateNearExpiry` event fires once, 30 days before expiry, whatever the lifetime
(`exchange-azure-facts.md`): `near_expiry_meaning` says what it means for this certificate.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from shared.errors import CertsyncError

OK, WARNING, CRITICAL, EXPIRED = "ok", "warning", "critical", "expired"
EXPIRY_STATES = (OK, WARNING, CRITICAL, EXPIRED)
KEY_VAULT_NEAR_EXPIRY_DAYS = 30  # fixed by Key Vault


@dataclass(frozen=True)
class ExpiryThresholds:
    warning_fraction: float = 0.15
    critical_fraction: float = 0.05
    warning_floor_days: float = 3
    critical_floor_days: float = 1
    warning_cap_days: float = 30  # CERTSYNC_EXPIRY_DAYS
    critical_cap_days: float = 7

    def __post_init__(self) -> None:
        if not 0 < self.critical_fraction <= self.warning_fraction < 1:
            raise CertsyncError(
                f"expiry fractions warning {self.warning_fraction} and critical {self.critical_fraction}: "
                "give fractions of the lifetime between 0 and 1, critical not above warning"
            )
        days = (self.warning_floor_days, self.critical_floor_days, self.warning_cap_days, self.critical_cap_days)
        if any(d <= 0 for d in days):
            raise CertsyncError(f"expiry day floors and caps {days}: give numbers of days above 0")

    def days(self, lifetime: dt.timedelta) -> tuple[float, float]:
        """(warning, critical) thresholds in days before notAfter for a certificate of this lifetime."""
        life = max(lifetime.total_seconds() / 86400, 0.0)
        warning = min(max(self.warning_fraction * life, self.warning_floor_days), self.warning_cap_days)
        critical = min(max(self.critical_fraction * life, self.critical_floor_days), self.critical_cap_days)
        return warning, min(critical, warning)

    def state(self, not_before: dt.datetime, not_after: dt.datetime, at: dt.datetime) -> str:
        """ok, warning, critical or expired for a certificate valid from `not_before` to `not_after`, at `at`."""
        left = (not_after - at).total_seconds() / 86400
        if left <= 0:
            return EXPIRED
        warning, critical = self.days(not_after - not_before)
        if left <= critical:
            return CRITICAL
        return WARNING if left <= warning else OK

    def warning_starts(self, not_before: dt.datetime, not_after: dt.datetime) -> dt.datetime:
        """When the certificate enters its warning window."""
        return not_after - dt.timedelta(days=self.days(not_after - not_before)[0])

    def near_expiry_meaning(self, not_before: dt.datetime, not_after: dt.datetime, at: dt.datetime) -> str:
        """What Key Vault's NearExpiry (fixed at 30 days) means for this certificate, in one line."""
        life = (not_after - not_before).total_seconds() / 86400
        state = self.state(not_before, not_after, at)
        if state == OK:
            return (
                f"renewal due per policy: Key Vault's NearExpiry fires at {KEY_VAULT_NEAR_EXPIRY_DAYS} days "
                f"whatever the lifetime, and this certificate lives {life:.0f} days; not an alarm until "
                f"{self.days(not_after - not_before)[0]:.1f} days are left"
            )
        left = (not_after - at).total_seconds() / 86400
        if state == EXPIRED:
            return f"expired {-left:.0f} day(s) ago"
        return f"{state}: {left:.1f} day(s) of its {life:.0f}-day lifetime left"
