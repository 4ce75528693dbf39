"""The public CA hierarchies Exchange admins meet, as a small dated table, and what it says about a renewal.

A renewal that changes the issuer changes the `<I>` part of every TlsCertificateName that names the
certificate, and needs intermediates the servers may not have. This table lets certsync say *why* the
issuer changed ("Let's Encrypt rotated R12 -> YR1, expected") or flag a change it cannot explain, and
forecast which issuers (so which `<I>` strings and intermediates) a certificate's next renewal may bring.

Each `Generation` is one CA's set of issuing intermediates under one root, with the dates it issues from
(`issuing_from`, `issuing_until`), the date the row was last checked (`as_of`) and its sources. Issuers
are recognised by the organization and common name of the certificate's issuer (`C`, `OU`, `L`, `ST` do
not matter), or, for CAs that rotate intermediates by name (GlobalSign Atlas, quarterly), by a pattern.
Where certsync ships an issuer's certificate (`chain`: the intermediate and any cross-sign a Windows
server needs to reach a root it already trusts), it can be pre-staged on the servers before a renewal
brings it (`CERTSYNC_PRESTAGE_INTERMEDIATES`).

Facts are dated: a CA may add or rotate intermediates after `as_of`. An issuer the table does not know is
"not in certsync's table", never an error.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shared.errors import CertsyncError
from shared.x509.certificate import Certificate
from shared.x509.containers import certificates_in
from shared.x509.parsed import MalformedCertificate, to_x509
from shared.x509.x500 import COMMON_NAME, X500Name, fold_case

ORGANIZATION = "2.5.4.10"
ACTIVE, BACKUP, RETIRED = "active", "backup", "retired"


@dataclass(frozen=True)
class KnownIssuer:
    """One issuing CA: its subject as Windows prints it, key type, and where certsync ships it, the PEM
    certificates a server needs for it (the intermediate first, then any cross-sign)."""

    subject: str
    key: str  # "RSA" | "ECDSA"
    status: str = ACTIVE  # active | backup (held in reserve) | retired
    chain: tuple[str, ...] = ()

    @property
    def common_name(self) -> str:
        return X500Name.parse(self.subject).first(COMMON_NAME) or self.subject

    @property
    def issuer_string(self) -> str:
        """The `<I>` part of a TlsCertificateName for a certificate this CA issues."""
        return "<I>" + self.subject


@dataclass(frozen=True)
class Generation:
    ca: str  # the CA as people know it: "Let's Encrypt"
    name: str  # "Generation Y", "G2"
    organizations: tuple[str, ...]  # the issuers' O= values
    issuers: tuple[KnownIssuer, ...]
    root: str
    as_of: dt.date
    sources: tuple[str, ...]
    issuing_from: dt.date | None = None
    issuing_until: dt.date | None = None  # None: still issuing (as of `as_of`)
    pattern: str | None = None  # an issuer CN pattern for CAs that rotate by name
    note: str = ""

    def issues_at(self, at: dt.date) -> bool:
        started = self.issuing_from is None or self.issuing_from <= at
        return started and (self.issuing_until is None or at < self.issuing_until)

    def is_current_or_next(self, at: dt.date) -> bool:
        """Issuing at `at`, or announced to start later."""
        return self.issuing_until is None or at < self.issuing_until


@dataclass(frozen=True)
class Identified:
    generation: Generation
    issuer: KnownIssuer | None  # None: recognised by its CA's organization or pattern only

    @property
    def label(self) -> str:
        name = self.issuer.common_name if self.issuer else "an issuer"
        return f"{self.generation.ca} {name} ({self.generation.name})"


@dataclass(frozen=True)
class IssuerChange:
    """What a renewal's issuer change means: `expected` when the table explains it."""

    old: str
    new: str
    expected: bool
    explanation: str

    def to_dict(self) -> dict[str, object]:
        return {"old": self.old, "new": self.new, "expected": self.expected, "explanation": self.explanation}


@dataclass(frozen=True)
class Forecast:
    """The issuers a certificate's CA may use at its next renewal, and the `<I>` strings they bring."""

    ca: str | None
    issuers: tuple[KnownIssuer, ...]
    as_of: dt.date | None
    note: str = ""
    unknown: bool = field(default=False)

    @property
    def issuer_strings(self) -> tuple[str, ...]:
        return tuple(i.issuer_string for i in self.issuers)

    @property
    def prestageable(self) -> tuple[KnownIssuer, ...]:
        return tuple(i for i in self.issuers if i.chain)

    def to_dict(self) -> dict[str, object]:
        return {
            "ca": self.ca,
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "issuers": [i.subject for i in self.issuers],
            "issuer_strings": list(self.issuer_strings),
            "prestageable": [i.subject for i in self.prestageable],
            "note": self.note,
        }


# --- the certificates certsync ships for pre-staging (public CA certificates; see tests/fixtures/pki) --
# Let's Encrypt, https://letsencrypt.org/certs/gen-y/: YR1, YR2, YE1, YE2 (2025-09-03 - 2028-09-02) and
# Root YR cross-signed by ISRG Root X1 (2026-05-13 - 2032-09-02).
_YR1_PEM = (
    "-----BEGIN CERTIFICATE-----\n"
    "MIIE2zCCAsOgAwIBAgIRAKICU/FfJpHAXcHOE7m8yk4wDQYJKoZIhvcNAQELBQAw\n"
    "LjELMAkGA1UEBhMCVVMxDTALBgNVBAoTBElTUkcxEDAOBgNVBAMTB1Jvb3QgWVIw\n"
    "HhcNMjUwOTAzMDAwMDAwWhcNMjgwOTAyMjM1OTU5WjAzMQswCQYDVQQGEwJVUzEW\n"
    "MBQGA1UEChMNTGV0J3MgRW5jcnlwdDEMMAoGA1UEAxMDWVIxMIIBIjANBgkqhkiG\n"
    "9w0BAQEFAAOCAQ8AMIIBCgKCAQEAoVi8X2xCYgMXvJxNPKp/oF13UMgmPABB07VC\n"
    "LNDtoXmt9luEZNJSBV10VyT1Pz6LD8Zq1d2gc43WNl1AdRrj4sEnazbOiz0nPpmG\n"
    "Bp2hui49oZtDIY6wdKeZAi5BbNU20CH6RSBBMLSQ9cXrH8dxdv4PAJ45ssGML68U\n"
    "SE3BsjC2a6cAN9L5CgXVIQi5tfNiTPoFZZ3S0OlXqLmmtdV95udWAb5b6e/F49Di\n"
    "CsH0Y00Ag72BVIb1hzynmKe+X0mERBTtsb3BwmpV9ipeBjMLoR/D9cHxHQCWoi5l\n"
    "TmXwY015J5rGelz1nZjJuxc2kioaX29XJBnhMkP531rSdG5uMwIDAQABo4HuMIHr\n"
    "MA4GA1UdDwEB/wQEAwIBhjATBgNVHSUEDDAKBggrBgEFBQcDATASBgNVHRMBAf8E\n"
    "CDAGAQH/AgEAMB0GA1UdDgQWBBQfLzW+RhSCzUCxrnksVXj699Ro+zAfBgNVHSME\n"
    "GDAWgBTe51tg0CJtQCh9Pw0B/qS1UrRRlDAyBggrBgEFBQcBAQQmMCQwIgYIKwYB\n"
    "BQUHMAKGFmh0dHA6Ly95ci5pLmxlbmNyLm9yZy8wEwYDVR0gBAwwCjAIBgZngQwB\n"
    "AgEwJwYDVR0fBCAwHjAcoBqgGIYWaHR0cDovL3lyLmMubGVuY3Iub3JnLzANBgkq\n"
    "hkiG9w0BAQsFAAOCAgEA0+zvMq3kHig1ddTmmm+RibTr9/RpX7k4buanMMRqbV/y\n"
    "IvP82zAHN3mvaw+cASuVsdpd0ikjhr4hnhJQLQOzOp2ccKrsdGOAgo0vddeISFAq\n"
    "EWEV4lmUM3vFF796up+bSgmJ1u6RupDCMxDgF8M3eLvGuj6L0lu3zkQ0KuQLnKxL\n"
    "tB0oQqn1Idg5CuuGpMvQzk29Pa3D/qHurc0EIM9SxukQuJqq63lxsYyRQFU8yMBO\n"
    "hq1w5LbfaWNRrz1uklOfI/pYkAb2E2MTZrAMQkBIE2S8Jt1F8gRc96o/xOsrgvSk\n"
    "a84AisX6xq1lz1Z7jGvrnXc4TMcjxZTjiTaihcYI1JIXZiLtEMSCa5l3cu8YWd6z\n"
    "dLRQlqRdclVjuQfNHawRJ6GWlkK0QJosivTKwdBw3KxEtzGo8yMHERbsy57gP1UX\n"
    "HOMcmZYQC0gtyR3SxfenIM/MxC3Ia2Ypab/kQ/CTnlIn2KQ5JUC6NYrGCbhFN9bp\n"
    "5lKJStEwCUnLpntcrXk5XVDCNv/5RyWpRThkGOV7GetKkQ0qAY8hCzWK6oqnAhDZ\n"
    "cjlYVdWfqOw3DIOX6EDNBgAqHarRVxyF9QZdOaXSyPJ0ueD2BYJEBgaCGQ8rAaU/\n"
    "Qc123V5LTXDZW4CcsPBDyhy4v+c8hClAyw/IkJlfBqxB9D+/wvIMHgECZ4ptP6o=\n"
    "-----END CERTIFICATE-----\n"
)
_YR2_PEM = (
    "-----BEGIN CERTIFICATE-----\n"
    "MIIE2jCCAsKgAwIBAgIQTr0klH4k05SALYSlL9WzGTANBgkqhkiG9w0BAQsFADAu\n"
    "MQswCQYDVQQGEwJVUzENMAsGA1UEChMESVNSRzEQMA4GA1UEAxMHUm9vdCBZUjAe\n"
    "Fw0yNTA5MDMwMDAwMDBaFw0yODA5MDIyMzU5NTlaMDMxCzAJBgNVBAYTAlVTMRYw\n"
    "FAYDVQQKEw1MZXQncyBFbmNyeXB0MQwwCgYDVQQDEwNZUjIwggEiMA0GCSqGSIb3\n"
    "DQEBAQUAA4IBDwAwggEKAoIBAQDZ0LxwBppqh84luqMerV/eeL/fXQ7mLQQv1Lnp\n"
    "WKZbyvGpx6wh6AfnslAnF6ewTkcHA+gSOoBvm3Dfm06AuGiF+KRut4fAcowqnAQQ\n"
    "CW98+QPP/eOv/wug7Iyk4NkOxf2I6g2f55T6nJoOTLFcukeRq80JGQEYan+dPFr9\n"
    "OGUgQK2hGKgNkW87pappsOAuUJcroYhRt5uUis4qaZireiseu32gzDJNBAiKtsvd\n"
    "6HX4v25bpkRNcS/B/Gtc9kVbUpD+2PLPxdei3Tim55k4tfAEXwD2qyiPTxrTNq6l\n"
    "N+AMr5g2c1dNqkOTwjxeV6L5lpP1rGiYvLnRaPlOqyZRPW+5AgMBAAGjge4wgesw\n"
    "DgYDVR0PAQH/BAQDAgGGMBMGA1UdJQQMMAoGCCsGAQUFBwMBMBIGA1UdEwEB/wQI\n"
    "MAYBAf8CAQAwHQYDVR0OBBYEFEAVLSZ57TIgnt+ach3WMh+BDIEMMB8GA1UdIwQY\n"
    "MBaAFN7nW2DQIm1AKH0/DQH+pLVStFGUMDIGCCsGAQUFBwEBBCYwJDAiBggrBgEF\n"
    "BQcwAoYWaHR0cDovL3lyLmkubGVuY3Iub3JnLzATBgNVHSAEDDAKMAgGBmeBDAEC\n"
    "ATAnBgNVHR8EIDAeMBygGqAYhhZodHRwOi8veXIuYy5sZW5jci5vcmcvMA0GCSqG\n"
    "SIb3DQEBCwUAA4ICAQB0ZUQWZ9/Yn9COEpo+JfecMnB0h0vwDm/M66IqXqw3LoaL\n"
    "mx9lZvRTeDIS67PUeI3yCA2W6PKRD0/FE/G57lOmS+Xy5AaaL00ICGOqjNcCaMWW\n"
    "8o8nevHOd4i4lqgtznE/28QwlcdJyF8yBiWHpnyjhEpmNWJURgOCOg2xpwRMBCsj\n"
    "MScqYPtOhBeuYQvSwAEeTML2Ukh6uGuX4E14q65Ja8cdjF5bAldnP1eE4FBaAwsZ\n"
    "G2fOqqrKV03Y85Nw2btedP1AtliQuJZs/Jo/gXxXdc7LrH3McgnpnbTiAncX7yES\n"
    "hP6kzQejllqMCIt52HOjxDGWafS7Xw+DKwqmH+Eqy8dcbOuag/1AYlQoKNVK3F5q\n"
    "Hh6tEDiMqQcLIibGKteE6iHo4A/bIScbzrhXUYuism42ZYzmc48FMVIH3qy4L84E\n"
    "TdAH2gtxw0PAhvRVXp8HP7wfngpzsN/8xOTpeRSbM4+Qbc56G6+Bifmv6sk1ieQb\n"
    "NA3wJdl4DDUuQSV8hBgx6zoI1ZSGORprDFux7c6rhc77QZMSRrEgomBeklervEve\n"
    "86ylWmZ3WWHV6RLMi8xNvjd71r4EPIGgY7BZU/VPBkq+uA7Gb6mbJnFgV43uh3xy\n"
    "LRFgxIAphIukwTGSMZZR+AI+Qnp0BYTWovHXozOf3H8r6hozEoT02JHn0AeTfA==\n"
    "-----END CERTIFICATE-----\n"
)
_YE1_PEM = (
    "-----BEGIN CERTIFICATE-----\n"
    "MIICizCCAhGgAwIBAgIQXd1w3TH4AchcGGp6BLgK/jAKBggqhkjOPQQDAzAuMQsw\n"
    "CQYDVQQGEwJVUzENMAsGA1UEChMESVNSRzEQMA4GA1UEAxMHUm9vdCBZRTAeFw0y\n"
    "NTA5MDMwMDAwMDBaFw0yODA5MDIyMzU5NTlaMDMxCzAJBgNVBAYTAlVTMRYwFAYD\n"
    "VQQKEw1MZXQncyBFbmNyeXB0MQwwCgYDVQQDEwNZRTEwdjAQBgcqhkjOPQIBBgUr\n"
    "gQQAIgNiAAQHZVB1/mimla2hfSurylScjPMZaOJXLz/NnAc2sylm8WDyhU9Ccp+z\n"
    "ASQi5vSwGGJjSGklkD9fdPR8GpyDIOIjCEfrnbt/v+ZSEPLLEGbaM6EccDbN7p9x\n"
    "teIm2Avf+ryjge4wgeswDgYDVR0PAQH/BAQDAgGGMBMGA1UdJQQMMAoGCCsGAQUF\n"
    "BwMBMBIGA1UdEwEB/wQIMAYBAf8CAQAwHQYDVR0OBBYEFLsgykcL/tflnPmPCSqj\n"
    "jDdFsbzYMB8GA1UdIwQYMBaAFKPIJlqOoUzQNWP8myPIOq5W809WMDIGCCsGAQUF\n"
    "BwEBBCYwJDAiBggrBgEFBQcwAoYWaHR0cDovL3llLmkubGVuY3Iub3JnLzATBgNV\n"
    "HSAEDDAKMAgGBmeBDAECATAnBgNVHR8EIDAeMBygGqAYhhZodHRwOi8veWUuYy5s\n"
    "ZW5jci5vcmcvMAoGCCqGSM49BAMDA2gAMGUCMQDgjUEahFT/h3DRakqiPZpLvPgf\n"
    "Zwkt6K2EOMmh1nvEzl83eMLYcod4GCl3b0J1Nn0CMBNYmEQJb4CEG5WoOe7aRn/L\n"
    "VKu6saHmHEynI7ysIPd8zQsK1HdmhlHKlw9Z5GpGvA==\n"
    "-----END CERTIFICATE-----\n"
)
_YE2_PEM = (
    "-----BEGIN CERTIFICATE-----\n"
    "MIICjDCCAhGgAwIBAgIQTfOxXdbAeExQfNN7WObxFTAKBggqhkjOPQQDAzAuMQsw\n"
    "CQYDVQQGEwJVUzENMAsGA1UEChMESVNSRzEQMA4GA1UEAxMHUm9vdCBZRTAeFw0y\n"
    "NTA5MDMwMDAwMDBaFw0yODA5MDIyMzU5NTlaMDMxCzAJBgNVBAYTAlVTMRYwFAYD\n"
    "VQQKEw1MZXQncyBFbmNyeXB0MQwwCgYDVQQDEwNZRTIwdjAQBgcqhkjOPQIBBgUr\n"
    "gQQAIgNiAARxmrQzkdbEEL3MqXt3dJQttYc47axkdDTHud5TPqM2z5uSD5cmk0Wr\n"
    "HlWXvnlvqBLqiB34kluxIbmMyAiq3/YD6e80/vV259K8XQIdjFXloYOa0mIU71f7\n"
    "HQ09PvYDlw+jge4wgeswDgYDVR0PAQH/BAQDAgGGMBMGA1UdJQQMMAoGCCsGAQUF\n"
    "BwMBMBIGA1UdEwEB/wQIMAYBAf8CAQAwHQYDVR0OBBYEFLlZ8o7PIvCG0zdI/3YU\n"
    "GLqC2FWHMB8GA1UdIwQYMBaAFKPIJlqOoUzQNWP8myPIOq5W809WMDIGCCsGAQUF\n"
    "BwEBBCYwJDAiBggrBgEFBQcwAoYWaHR0cDovL3llLmkubGVuY3Iub3JnLzATBgNV\n"
    "HSAEDDAKMAgGBmeBDAECATAnBgNVHR8EIDAeMBygGqAYhhZodHRwOi8veWUuYy5s\n"
    "ZW5jci5vcmcvMAoGCCqGSM49BAMDA2kAMGYCMQDIcnw5dcZLN9ffynXnnkLD/itS\n"
    "JEycJPb3sRkzeqBowup7vOsAwaqoCnNn/jh9wycCMQCJM6CPlaOC4pQYYbJtVPYb\n"
    "DKrIb2EKk5NpOpE6/XttQYZV/3gilB9l+Cc/DOVwmyg=\n"
    "-----END CERTIFICATE-----\n"
)
_ROOT_YR_BY_X1_PEM = (
    "-----BEGIN CERTIFICATE-----\n"
    "MIIF9DCCA9ygAwIBAgIRAPJLbRf52a18scn+p4eCaZ8wDQYJKoZIhvcNAQELBQAw\n"
    "TzELMAkGA1UEBhMCVVMxKTAnBgNVBAoTIEludGVybmV0IFNlY3VyaXR5IFJlc2Vh\n"
    "cmNoIEdyb3VwMRUwEwYDVQQDEwxJU1JHIFJvb3QgWDEwHhcNMjYwNTEzMDAwMDAw\n"
    "WhcNMzIwOTAyMjM1OTU5WjAuMQswCQYDVQQGEwJVUzENMAsGA1UEChMESVNSRzEQ\n"
    "MA4GA1UEAxMHUm9vdCBZUjCCAiIwDQYJKoZIhvcNAQEBBQADggIPADCCAgoCggIB\n"
    "ANvGJnN78CTJdWL3+eGfsLN5TrNBJs+VH9hRXqRbwxu9sGNiB0BD1fcOxbSUQCJI\n"
    "M1xE13Db+5Cw1w0s0EBYsvuIP/6joF0w8cuImbgR1OGgYbSQ4OpzI+DG8SGuTlcE\n"
    "873OCS+kh3srlo6vl43M5OJg4Aeo1sfHp6kTJDoIiFBNJAY+OKfX/FUvYKuhjT+n\n"
    "o49lmqmupSBI5PkBQiqrEGtWU5uxU/cQWHGu8jSjFBznZqvbNPLMXMLFxCb3WTfr\n"
    "JBXXjqvWG+v4bjzxjjeAtOlU7qarRDvNOyAuQYLln904M+faKx8hnLCpJ15ZqaEg\n"
    "cNlY+9MMWcC5yvL2A2j3l9+2buggZX+dOE91zYmIdawTvSZuVvlbRrAlLxIB6pwM\n"
    "BjneXCjYQ8+3BCCjssbSNpZU3hTcBDdhfAlEDlYr6pEatnMdmDT5BqnKC92bd0Eh\n"
    "M1fbLHioLccLCuievT8ZkPhZrq7Mii7gNXAcUEAR8+lzYal+9zTg7C5DALyVOeG/\n"
    "CqfRAMn1KSHCR0NSA6P8tn/mGRlnCct5rtVCLnVySVpU6H1qGg3DgTOuskf8eahT\n"
    "MiYbI5ezPJmO5ertalskQ1utp74+eDy92PI4ftHKTbq9IWhH4YZKh3WnJEIt+oQv\n"
    "lYZbY8tpEroKrFB6PFGzrJIDRyts4HqvuH52RFj2zv/BAgMBAAGjgeswgegwDgYD\n"
    "VR0PAQH/BAQDAgEGMBMGA1UdJQQMMAoGCCsGAQUFBwMBMA8GA1UdEwEB/wQFMAMB\n"
    "Af8wHQYDVR0OBBYEFN7nW2DQIm1AKH0/DQH+pLVStFGUMB8GA1UdIwQYMBaAFHm0\n"
    "WeZ7tuXkAXOACIjIGlj26ZtuMDIGCCsGAQUFBwEBBCYwJDAiBggrBgEFBQcwAoYW\n"
    "aHR0cDovL3gxLmkubGVuY3Iub3JnLzATBgNVHSAEDDAKMAgGBmeBDAECATAnBgNV\n"
    "HR8EIDAeMBygGqAYhhZodHRwOi8veDEuYy5sZW5jci5vcmcvMA0GCSqGSIb3DQEB\n"
    "CwUAA4ICAQA8spSI95KKfn2W6GMmDpHBJSPaLbsS3W93cijJCRCYAc1fsJgL1FIL\n"
    "7C0C9ecPOdcwB2fi0Dk2p94j9iTJCxmt5CFSKLRWwnXT2MMSXexVxqoVB79BdWPx\n"
    "VXETkVme/qYSAuKVHh5Ps+5BixgmwS1JkjSAc+MfrUbNssVEEnH0aEiAh+rotXAV\n"
    "JSP/Ye7LJPEwD9DWG72vVWbhAcuOf5OLjz57Ctk7MgQHynZ7+PlHJtajroCaIbtC\n"
    "r6tcZZaAwUQm+jQyeWdV+2hv9deOYFmKeQyjjcSrN5Nadrw+L9DZJLbA1HqeNvLh\n"
    "BgqpP0fvJq2N6EtD574N6eMI7uMsJTnji2UDz9el5XLSv9fqJMuDQtYVb2oTNoKp\n"
    "oUqhxPVC0aq4eG5MESaIdn8b5ZGSSeAJLMHXljEdlNza+ncfkviXk1POLnnFdvx8\n"
    "/gk6M374WbLWFXw8N141B/Rl/tINGfl1TxOIiqtiMYkL02RSGb1kq34BL9NPP27z\n"
    "RGMuHGnzS3hFIrRTfKxrzUZ9RzQWzEG3K6fJ3r2nqSltkeytis9DIBoFY9VmVyjL\n"
    "M71DMi+y1+TRSJVClEMwvA4yL++7q9XZx5r5wBRWB4kQTKH5qyoZnDw7iiuh1lID\n"
    "yDFx8r7i9vIJU5HS3moZLkYWAOilMaV9N56A9Bgb6dNcHkvg3NoaYA==\n"
    "-----END CERTIFICATE-----\n"
)


# --- the table ----------------------------------------------------------------------------------------

_LE_SOURCES = (
    "https://letsencrypt.org/certificates/ (updated 2026-01-08)",
    "https://letsencrypt.org/2024/03/12/new-intermediate-certificates/",
)


def _le(cn: str, key: str, status: str, chain: tuple[str, ...] = ()) -> KnownIssuer:
    return KnownIssuer(f"CN={cn}, O=Let's Encrypt, C=US", key, status, chain)


HIERARCHIES: tuple[Generation, ...] = (
    Generation(
        ca="Let's Encrypt",
        name="Generation X",
        organizations=("Let's Encrypt",),
        issuers=tuple(_le(f"R{n}", "RSA", RETIRED) for n in range(10, 15))
        + tuple(_le(f"E{n}", "ECDSA", RETIRED) for n in range(5, 10)),
        root="ISRG Root X1 (RSA), ISRG Root X2 (ECDSA)",
        as_of=dt.date(2026, 12, 3),
        sources=_LE_SOURCES,
        issuing_from=dt.date(2024, 6, 6),
        issuing_until=dt.date(2026, 7, 1),
        note="rotated among R10-R14 and E5-E9 from June 2024; retired in July 2026",
    ),
    Generation(
        ca="Let's Encrypt",
        name="Generation Y",
        organizations=("Let's Encrypt",),
        issuers=(
            _le("YR1", "RSA", ACTIVE, (_YR1_PEM, _ROOT_YR_BY_X1_PEM)),
            _le("YR2", "RSA", ACTIVE, (_YR2_PEM, _ROOT_YR_BY_X1_PEM)),
            _le("YR3", "RSA", BACKUP),
            _le("YE1", "ECDSA", ACTIVE, (_YE1_PEM,)),
            _le("YE2", "ECDSA", ACTIVE, (_YE2_PEM,)),
            _le("YE3", "ECDSA", BACKUP),
        ),
        root="Root YR (RSA) and Root YE (ECDSA), O=ISRG, generated 2025-09-03; until browsers trust them, "
        "Root YR is cross-signed by ISRG Root X1 (2026-05-13) and Root YE by ISRG Root X2: 4-certificate chains",
        as_of=dt.date(2026, 12, 3),
        sources=(
            *_LE_SOURCES,
            "https://letsencrypt.org/certs/gen-y/ (int-yr1.pem, int-yr2.pem, int-ye1.pem, int-ye2.pem, "
            "root-yr-by-x1.pem)",
        ),
        note="in rotation beside Generation X from late 2025, the only generation since July 2026; "
        "the ECDSA chain also needs Root YE cross-signed by ISRG Root X2, which certsync does not ship",
    ),
    Generation(
        ca="DigiCert",
        name="G1",
        organizations=("DigiCert Inc",),
        issuers=(
            KnownIssuer("CN=DigiCert TLS RSA SHA256 2020 CA1, O=DigiCert Inc, C=US", "RSA", RETIRED),
            KnownIssuer("CN=DigiCert SHA2 Secure Server CA, O=DigiCert Inc, C=US", "RSA", RETIRED),
            KnownIssuer("CN=DigiCert TLS Hybrid ECC SHA384 2020 CA1, O=DigiCert Inc, C=US", "ECDSA", RETIRED),
        ),
        root="DigiCert Global Root CA",
        as_of=dt.date(2026, 12, 3),
        sources=(
            "https://knowledge.digicert.com/general-information/digicert-root-and-intermediate-ca-certificate-updates-2023",
        ),
        issuing_until=dt.date(2023, 3, 8),
        note="DigiCert moved public TLS issuance from the G1 roots to G2/G3 in 2023",
    ),
    Generation(
        ca="DigiCert",
        name="G2/G3",
        organizations=("DigiCert Inc",),
        issuers=(
            KnownIssuer("CN=DigiCert Global G2 TLS RSA SHA256 2020 CA1, O=DigiCert Inc, C=US", "RSA"),
            KnownIssuer("CN=GeoTrust TLS RSA CA G1, OU=www.digicert.com, O=DigiCert Inc, C=US", "RSA"),
            KnownIssuer("CN=Thawte TLS RSA CA G1, OU=www.digicert.com, O=DigiCert Inc, C=US", "RSA"),
            KnownIssuer("CN=RapidSSL TLS RSA CA G1, OU=www.digicert.com, O=DigiCert Inc, C=US", "RSA"),
            KnownIssuer("CN=Encryption Everywhere DV TLS CA - G2, OU=www.digicert.com, O=DigiCert Inc, C=US", "RSA"),
            KnownIssuer("CN=DigiCert Global G3 TLS ECC SHA384 2020 CA1, O=DigiCert Inc, C=US", "ECDSA"),
        ),
        root="DigiCert Global Root G2 (RSA), DigiCert Global Root G3 (ECDSA); Exchange Online's own chain "
        "moved to DigiCert Global Root G2 (MC1224565)",
        as_of=dt.date(2026, 12, 3),
        sources=(
            "https://knowledge.digicert.com/general-information/digicert-root-and-intermediate-ca-certificate-updates-2023",
        ),
        issuing_from=dt.date(2023, 3, 8),
        pattern=r"(DigiCert|GeoTrust|Thawte|RapidSSL|Encryption Everywhere) .*",
    ),
    Generation(
        ca="DigiCert",
        name="G5",
        organizations=("DigiCert, Inc.",),
        issuers=(
            KnownIssuer('CN=DigiCert G5 TLS RSA4096 SHA384 2021 CA1, O="DigiCert, Inc.", C=US', "RSA"),
            KnownIssuer('CN=DigiCert G5 TLS ECC SHA384 2021 CA1, O="DigiCert, Inc.", C=US', "ECDSA"),
        ),
        root="DigiCert TLS RSA4096 Root G5 (also cross-signed by DigiCert Global Root G2: a 4-certificate chain "
        "where Windows lacks Root G5), DigiCert TLS ECC P384 Root G5",
        as_of=dt.date(2026, 12, 3),
        sources=("https://www.digicert.com/kb/digicert-root-certificates.htm",),
        pattern=r"DigiCert .*",
    ),
    Generation(
        ca="Sectigo",
        name="USERTrust (2018-2025)",
        organizations=("Sectigo Limited",),
        issuers=(
            KnownIssuer(
                "CN=Sectigo RSA Domain Validation Secure Server CA, O=Sectigo Limited, L=Salford, "
                "S=Greater Manchester, C=GB",
                "RSA",
                RETIRED,
            ),
            KnownIssuer(
                "CN=Sectigo RSA Organization Validation Secure Server CA, O=Sectigo Limited, L=Salford, "
                "S=Greater Manchester, C=GB",
                "RSA",
                RETIRED,
            ),
            KnownIssuer(
                "CN=Sectigo ECC Domain Validation Secure Server CA, O=Sectigo Limited, L=Salford, "
                "S=Greater Manchester, C=GB",
                "ECDSA",
                RETIRED,
            ),
        ),
        root="USERTrust RSA / ECC Certification Authority",
        as_of=dt.date(2026, 12, 3),
        sources=(
            "https://help.sectigostore.com/support/solutions/articles/22000293611-sectigo-public-root-and-intermediate-ca-migration-2025-",
        ),
        issuing_until=dt.date(2026, 1, 1),
        note="no re-issue under the older chains from 1 January 2026",
    ),
    Generation(
        ca="Sectigo",
        name="Public Server Authentication R36/E36",
        organizations=("Sectigo Limited",),
        issuers=tuple(
            KnownIssuer(f"CN=Sectigo Public Server Authentication CA {level} {gen}, O=Sectigo Limited, C=GB", key)
            for gen, key in (("R36", "RSA"), ("E36", "ECDSA"))
            for level in ("DV", "OV", "EV")
        ),
        root="Sectigo Public Server Authentication Root R46 / E46, cross-signed by USERTrust RSA / ECC "
        "Certification Authority (and AAA Certificate Services): 4-certificate chains",
        as_of=dt.date(2026, 12, 3),
        sources=(
            "https://www.sectigo.com/knowledge-base/detail/Sectigo-new-Public-Roots-and-Issuing-CAs-Hierarchy",
            "https://www.sectigo.com/knowledge-base/detail/sectigo-new-rsa-and-ecc-root-intermediate-certificates-2025",
        ),
        issuing_from=dt.date(2025, 1, 1),
        pattern=r"Sectigo Public Server Authentication .*",
    ),
    Generation(
        ca="GlobalSign",
        name="R3/R6/R46",
        organizations=("GlobalSign nv-sa",),
        issuers=(
            KnownIssuer("CN=GlobalSign GCC R3 DV TLS CA 2020, O=GlobalSign nv-sa, C=BE", "RSA"),
            KnownIssuer("CN=GlobalSign RSA OV SSL CA 2018, O=GlobalSign nv-sa, C=BE", "RSA"),
        ),
        root="GlobalSign Root R3, R6, R46 / E46",
        as_of=dt.date(2026, 12, 3),
        sources=("https://support.globalsign.com/ca-certificates/intermediate-certificates/",),
        pattern=r"(GlobalSign|AlphaSSL) .*",
        note="GlobalSign Atlas rotates its issuing CAs by name every quarter (\u2026 TLS CA 2026 Q1): a change "
        "among GlobalSign issuers is routine",
    ),
    Generation(
        ca="Entrust",
        name="Entrust (distrusted)",
        organizations=("Entrust, Inc.",),
        issuers=(
            KnownIssuer(
                'CN=Entrust Certification Authority - L1K, OU="(c) 2012 Entrust, Inc. - for authorized use only", '
                'OU=See www.entrust.net/legal-terms, O="Entrust, Inc.", C=US',
                "RSA",
                RETIRED,
            ),
        ),
        root="Entrust Root Certification Authority - G2",
        as_of=dt.date(2026, 12, 3),
        sources=(
            "https://www.entrust.com/tls-certificate-information-center",
            "https://groups.google.com/a/ccadb.org/g/public/c/tk2CV6Mc-xo (Sectigo and Entrust, 2025-06-24)",
        ),
        issuing_until=dt.date(2024, 11, 12),
        pattern=r"Entrust .*",
        note="Chrome distrusts Entrust TLS certificates issued after 11 November 2024 (Mozilla: 30 November); "
        "Entrust customers were moved to SSL.com, then Sectigo, which took over Entrust's customers in 2025",
    ),
    Generation(
        ca="SSL.com",
        name="SSL.com",
        organizations=("SSL Corporation",),
        issuers=(KnownIssuer("CN=SSL.com RSA SSL subCA, O=SSL Corporation, L=Houston, S=Texas, C=US", "RSA"),),
        root="SSL.com Root Certification Authority RSA / ECC",
        as_of=dt.date(2026, 12, 3),
        sources=("https://www.entrust.com/tls-certificate-information-center",),
        pattern=r"SSL\.com .*",
    ),
)
# When a CA's customers moved to another CA, a renewal from the one to the other is expected.
SUCCESSORS: dict[str, tuple[str, ...]] = {"Entrust": ("SSL.com", "Sectigo")}
TABLE_AS_OF = max(g.as_of for g in HIERARCHIES)


# --- reading the table -------------------------------------------------------------------------------


def _compiled(generation: Generation) -> re.Pattern[str] | None:
    return re.compile(generation.pattern, re.IGNORECASE) if generation.pattern else None


def identify(issuer: X500Name | None) -> Identified | None:
    """The generation (and issuer, when listed) a certificate's issuer name belongs to, or None."""
    if issuer is None:
        return None
    return _identify(issuer)


@functools.lru_cache(maxsize=1024)  # every assessment asks; a fleet has a few issuers
def _identify(issuer: X500Name) -> Identified | None:
    organization = fold_case(issuer.first(ORGANIZATION) or "")
    common_name = fold_case(issuer.first(COMMON_NAME) or "")
    if not common_name:
        return None
    by_pattern: Identified | None = None
    for generation in HIERARCHIES:
        if organization not in {fold_case(o) for o in generation.organizations}:
            continue
        for known in generation.issuers:
            if fold_case(known.common_name) == common_name:
                return Identified(generation, known)
        pattern = _compiled(generation)
        if by_pattern is None and pattern is not None and pattern.fullmatch(issuer.first(COMMON_NAME) or ""):
            by_pattern = Identified(generation, None)
    return by_pattern


def _common_name(name: X500Name) -> str:
    return name.first(COMMON_NAME) or str(name) or "(empty)"


def explain_issuer_change(old: X500Name | None, new: X500Name | None) -> IssuerChange | None:
    """Why a renewal's issuer changed, from the table; None when it did not change."""
    if old is None or new is None or old.matches(new):
        return None
    before, after = identify(old), identify(new)
    old_cn, new_cn = _common_name(old), _common_name(new)
    if before is not None and after is not None:
        ca_before, ca_after = before.generation.ca, after.generation.ca
        if ca_before == ca_after:
            if before.generation == after.generation:
                text = f"{ca_after} rotated {old_cn} -> {new_cn} within {after.generation.name}, expected"
            else:
                text = (
                    f"{ca_after} rotated {old_cn} -> {new_cn} ({before.generation.name} -> "
                    f"{after.generation.name}), expected"
                )
            return IssuerChange(str(old), str(new), True, text)
        if ca_after in SUCCESSORS.get(ca_before, ()):
            text = f"{ca_before}'s certificates are now issued by {ca_after} ({old_cn} -> {new_cn}), expected"
            return IssuerChange(str(old), str(new), True, _with_note(text, before.generation))
    said = {
        "before": f"{before.generation.ca} ({old_cn})" if before else f"{old_cn} (not in certsync's table)",
        "after": f"{after.generation.ca} ({new_cn})" if after else f"{new_cn} (not in certsync's table)",
    }
    text = (
        f"the issuer changed from {said['before']} to {said['after']}, which certsync's table of CA "
        f"hierarchies (as of {TABLE_AS_OF.isoformat()}) does not explain: confirm the certificate was ordered "
        "from the intended CA, and that every server trusts the new chain"
    )
    return IssuerChange(str(old), str(new), False, text)


def _with_note(text: str, generation: Generation) -> str:
    return f"{text} ({generation.note})" if generation.note else text


def forecast(issuer: X500Name | None, key: str | None = None, at: dt.date | None = None) -> Forecast:
    """The issuers the certificate's CA may use at its next renewal (on or after `at`): the issuers of its
    CA's generations that issue then (its successors' when the CA no longer issues), of the same key type
    (`key`: "RSA" or "ECDSA"; None for both), backups included, retired ones not."""
    at = at or dt.date.today()
    found = identify(issuer)
    if found is None:
        return Forecast(None, (), None, "the issuer is not in certsync's table of CA hierarchies", unknown=True)
    cas: tuple[str, ...] = (found.generation.ca,)
    current = [g for g in HIERARCHIES if g.ca in cas and g.is_current_or_next(at)]
    if not current:
        cas = SUCCESSORS.get(found.generation.ca, ())
        current = [g for g in HIERARCHIES if g.ca in cas and g.is_current_or_next(at)]
    issuers = tuple(i for g in current for i in g.issuers if i.status != RETIRED and (key is None or i.key == key))
    notes = [g.note for g in current if g.note]
    patterned = [g for g in current if g.pattern and not any(i in issuers for i in g.issuers)]
    if patterned:
        notes.append("also issuers not listed in the table, named like its pattern")
    as_of = max((g.as_of for g in current), default=found.generation.as_of)
    return Forecast(
        " / ".join(dict.fromkeys(g.ca for g in current)) or found.generation.ca, issuers, as_of, "; ".join(notes)
    )


def key_type_of(cert: Certificate) -> str | None:
    """ "RSA" or "ECDSA" for a certificate's key (a leaf's decides which intermediates its CA uses)."""
    try:
        key = to_x509(cert).public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm, MalformedCertificate):
        return None
    return (
        "RSA" if isinstance(key, rsa.RSAPublicKey) else "ECDSA" if isinstance(key, ec.EllipticCurvePublicKey) else None
    )


def forecast_for(cert: Certificate, at: dt.date | None = None) -> Forecast:
    """`forecast` for a certificate: its issuer and key type."""
    try:
        issuer = cert.issuer
    except CertsyncError:
        issuer = None
    return forecast(issuer, key_type_of(cert), at)


def prestage_certificates(cert: Certificate, at: dt.date | None = None) -> tuple[Certificate, ...]:
    """The CA certificates certsync ships for the issuers `cert`'s next renewal may bring (each
    intermediate, then the cross-sign it needs), once each, in that order."""
    found: dict[str, Certificate] = {}
    for issuer in forecast_for(cert, at).prestageable:
        for pem in issuer.chain:
            for ca in certificates_in(pem.encode(), issuer.subject):
                found.setdefault(ca.thumbprint, ca)
    return tuple(found.values())


def key_type(algorithm: str) -> str | None:
    """ "RSA" or "ECDSA" from a key kind as certsync names it ("rsa", "ec"), else None."""
    return {"rsa": "RSA", "ec": "ECDSA"}.get(algorithm.lower())


def generations(ca: str) -> Iterable[Generation]:
    return (g for g in HIERARCHIES if g.ca == ca)
