"""Where certificate versions come from: the port, and the local backend (a directory).

`CertificateSource` is what the pipeline needs from Key Vault: one version's public certificates (leaf
and chain, never the private key), the previous enabled version for the diff, and the certificate's
tags; the daily reconciliation also lists the vault's certificates and takes each one's latest
enabled version. `shared.adapters.azure.keyvault.KeyVaultSource` reads a real vault; `DirectoryVault` reads a folder
laid out like one, for `certsync process --vault-dir`, `certsync reconcile` and the demo.

Directory layout: `DIR/<certificate name>/<version>.<pem|cer|der|crt|p7b|pfx>`, one file per version,
plus an optional `DIR/<certificate name>/certificate.json`:
`{"tags": {"name": "value"}, "disabled": ["<version>"], "created": {"<version>": "<ISO 8601>"}}`.
Versions are ordered by `created`, else by the leaf's notBefore, then by version id.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from shared.errors import CertificateInputError, CertsyncError
from shared.times import parse_time
from shared.x509.certificate import CertificateBundle
from shared.x509.containers import load_certificate_file

_EXTENSIONS = (".pem", ".cer", ".der", ".crt", ".p7b", ".pfx")
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


def check_object_name(name: str, what: str = "certificate name") -> str:
    """A Key Vault object name or version id, or CertsyncError naming it."""
    if not _OBJECT_NAME.match(name or ""):
        raise CertsyncError(f"{what} {name!r}: Key Vault names are 1-127 letters, digits and dashes")
    return name


class DirectoryVault:
    """A directory laid out like a vault (see the module docstring); `vault` names it in results."""

    def __init__(self, root: str | Path, vault: str, vault_url: str | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise CertsyncError(f"{self.root}: no such directory; give --vault-dir a folder of certificate folders")
        self.vault = vault
        self.vault_url = (vault_url or f"https://{vault}.vault.azure.net").rstrip("/")
        self._cache: dict[str, tuple[tuple, list[StoredVersion]]] = {}

    def get(self, name: str, version: str) -> StoredVersion:
        versions = self._versions(name)
        for stored in versions:
            if stored.version.lower() == version.lower():
                return stored
        raise SourceError(f"{self.root / name}: has no version {version!r}", "not-found")

    def previous(self, name: str, version: str) -> StoredVersion | None:
        versions = self._versions(name)
        index = next((i for i, v in enumerate(versions) if v.version.lower() == version.lower()), None)
        if index is None:
            raise SourceError(f"{self.root / name}: has no version {version!r}", "not-found")
        return next((v for v in reversed(versions[:index]) if v.enabled), None)

    def names(self) -> list[str]:
        """The certificate folders; folders whose name Key Vault could not hold are not certificates."""
        try:
            folders = [p.name for p in self.root.iterdir() if p.is_dir() and _OBJECT_NAME.match(p.name)]
        except OSError as exc:
            raise SourceError(f"{self.root}: cannot list the vault directory ({exc.strerror})", "unavailable") from None
        return sorted(folders, key=str.lower)

    def latest(self, name: str) -> StoredVersion | None:
        return next((v for v in reversed(self._versions(name)) if v.enabled), None)

    def tags(self, name: str) -> dict[str, str]:
        latest = self.latest(name)
        return dict(latest.tags) if latest is not None else {}

    def _versions(self, name: str) -> list[StoredVersion]:
        """Every version, oldest first; re-read only when a file in the folder changed."""
        check_object_name(name)
        folder = self.root / name
        if not folder.is_dir():
            raise SourceError(f"{folder}: no such certificate folder", "not-found")
        stamp = tuple((p.name, st.st_mtime_ns, st.st_size) for p in sorted(folder.iterdir()) if (st := p.stat()))
        cached = self._cache.get(name.lower())
        if cached is not None and cached[0] == stamp:
            return cached[1]
        versions = self._read_versions(name, folder)
        self._cache[name.lower()] = (stamp, versions)
        return versions

    def _read_versions(self, name: str, folder: Path) -> list[StoredVersion]:
        meta = self._meta(folder)
        created = meta.get("created", {})
        disabled = {str(v).lower() for v in meta.get("disabled", [])}
        tags = {str(k): str(v) for k, v in meta.get("tags", {}).items()}
        found = []
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in _EXTENSIONS or not path.is_file():
                continue
            version = path.stem
            try:
                bundle = load_certificate_file(str(path))
            except CertificateInputError as exc:
                raise SourceError(str(exc), "bad-content") from None
            when = created.get(version)
            stamp = _parse_created(when, folder) if when else None
            found.append(
                StoredVersion(
                    vault=self.vault,
                    name=name,
                    version=version,
                    bundle=bundle,
                    secret_id=f"{self.vault_url}/secrets/{name}/{version}",
                    enabled=version.lower() not in disabled,
                    created=stamp,
                    tags=tags,
                )
            )
        found.sort(key=lambda v: (v.created or v.bundle.leaf.not_before, v.version))
        return found

    @staticmethod
    def _meta(folder: Path) -> dict:
        path = folder / "certificate.json"
        if not path.exists():
            return {}
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SourceError(f"{path}: not readable JSON ({exc}); fix or remove it", "bad-content") from None
        if not isinstance(meta, dict):
            raise SourceError(f"{path}: must be a JSON object with tags, disabled, created", "bad-content")
        return meta


def _parse_created(text: str, folder: Path) -> dt.datetime:
    try:
        stamp = parse_time(str(text))
    except ValueError:
        stamp = None
    if stamp is None:
        raise SourceError(f"{folder}/certificate.json: created {text!r} is not ISO 8601", "bad-content")
    return stamp
