"""Where certificate versions come from: the port (`CertificateSource`), what it gives (`StoredVersion`),
how it fails (`SourceError`), and the Key Vault object-name rule every source and setting shares.

`CertificateSource` is what the pipeline needs from Key Vault: one version's public certificates (leaf
and chain, never the private key), the previous enabled version for the diff, and the certificate's
tags; the daily reconciliation also lists the vault's certificates and takes each one's latest
enabled version, a batch of names at a time (`tags_many`, `latest_many`: a remote source reads them
concurrently, `gather` runs the reads and keeps each name's result or error).
`shared.adapters.azure.keyvault.KeyVaultSource` reads a real vault;
`shared.adapters.local.vault_directory.DirectoryVault` reads a folder laid out like one, for
`certsync process --vault-dir`, `certsync reconcile` and the demo.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from shared.errors import CertsyncError
from shared.pipeline.policy import IssuancePolicy
from shared.x509.certificate import CertificateBundle

# Key Vault object names: 1-127 characters, letters, digits and dashes.
_OBJECT_NAME = re.compile(r"[0-9A-Za-z-]{1,127}\Z")


class SourceError(CertsyncError):
    """The certificate source could not give what was asked.

    `kind` is "not-found", "forbidden", "unavailable" or "bad-content"; `transient` says whether asking
    again later may succeed (the event is then retried rather than settled)."""

    def __init__(self, message: str, kind: str, transient: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.transient = transient


@dataclass(frozen=True)
class StoredVersion:
    """One version of a certificate as its store holds it: public certificates only."""

    vault: str
    name: str
    version: str
    bundle: CertificateBundle
    secret_id: str  # the Key Vault secret id (URL with version) the runbook reads the PFX from
    enabled: bool = True
    created: dt.datetime | None = None
    tags: dict[str, str] = field(default_factory=dict)
    # What the runbook will find in Key Vault (None where the store is no Key Vault, or the version is disabled):
    # the secret's content type, and whether the secret carries the private key (a policy `exportable: false`
    # leaves it out, and the import on the servers needs it).
    content_type: str | None = None
    key_exportable: bool | None = None
    policy: IssuancePolicy | None = None  # the certificate's issuance policy, when the store gave it

    @property
    def thumbprint(self) -> str:
        return self.bundle.leaf.thumbprint


class CertificateSource(Protocol):
    """The pipeline's and the reconciliation's view of Key Vault."""

    def get(self, name: str, version: str) -> StoredVersion:
        """The version, or SourceError."""
        ...

    def previous(self, name: str, version: str) -> StoredVersion | None:
        """The newest enabled version created before `version`, or None when there is none."""
        ...

    def names(self) -> list[str]:
        """Every certificate in the vault, enabled or not, sorted; the caller decides which matter."""
        ...

    def latest(self, name: str) -> StoredVersion | None:
        """The newest enabled version (by created time, then version id), or None when none is enabled."""
        ...

    def tags(self, name: str) -> dict[str, str]:
        """The tags of `latest(name)` ({} when no version is enabled), read without its secret: enough to
        tell whether certsync has targets for a certificate before reading anything else of it."""
        ...

    def tags_many(self, names: Sequence[str]) -> dict[str, dict[str, str] | Exception]:
        """`tags` of each name, keyed in the order given; a name whose read failed maps to its error."""
        ...

    def latest_many(self, names: Sequence[str]) -> dict[str, StoredVersion | Exception | None]:
        """`latest` of each name, keyed in the order given; a name whose read failed maps to its error."""
        ...


_T = TypeVar("_T")


def one_pass(source: object) -> contextlib.AbstractContextManager[None]:
    """`source.one_pass()` when the source can serve a whole reconciliation pass from one listing (the vault
    directory: the pipeline's reads of the versions the pass runs do not check their folders again), else a
    block that changes nothing (Key Vault answers each read as it is now)."""
    enter = getattr(source, "one_pass", None)
    return enter() if callable(enter) else contextlib.nullcontext()


def gather(names: Sequence[str], read: Callable[[str], _T], concurrency: int = 1) -> dict[str, _T | Exception]:
    """`read(name)` for each name, at most `concurrency` at a time (threads), keyed in the order given
    whatever order the reads finish in. One name's error is its result and stops no other read."""

    def attempt(name: str) -> _T | Exception:
        try:
            return read(name)
        except Exception as exc:  # the caller decides per name
            return exc

    unique = list(dict.fromkeys(names))
    if concurrency <= 1 or len(unique) <= 1:
        return {name: attempt(name) for name in unique}
    with ThreadPoolExecutor(min(concurrency, len(unique)), thread_name_prefix="certsync-source") as pool:
        return dict(zip(unique, pool.map(attempt, unique), strict=True))


def is_object_name(name: str) -> bool:
    """Whether Key Vault could hold an object (or version) called `name`."""
    return bool(_OBJECT_NAME.match(name or ""))


def check_object_name(name: str, what: str = "certificate name") -> str:
    """A Key Vault object name or version id, or CertsyncError naming it."""
    if not is_object_name(name):
        shown = repr(name) if len(name) <= 80 else repr(name[:80]) + "..."
        raise CertsyncError(f"{what} {shown}: Key Vault names are 1-127 letters, digits and dashes")
    return name
