"""The local certificate source: a directory laid out like a vault (`DirectoryVault`), for
`certsync process --vault-dir`, `certsync reconcile` and the demo.

Directory layout: `DIR/<certificate name>/<version>.<pem|cer|der|crt|p7b|pfx>`, one file per version,
plus an optional `DIR/<certificate name>/certificate.json`:
`{"tags": {"name": "value"}, "disabled": ["<version>"], "created": {"<version>": "<ISO 8601>"}}`.
Versions are ordered by `created`, else by the leaf's notBefore, then by version id.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from shared.errors import CertificateInputError, CertsyncError
from shared.pipeline.sources import SourceError, StoredVersion, check_object_name, is_object_name
from shared.times import parse_time
from shared.x509.containers import load_certificate_file

_EXTENSIONS = (".pem", ".cer", ".der", ".crt", ".p7b", ".pfx")


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
            folders = [p.name for p in self.root.iterdir() if p.is_dir() and is_object_name(p.name)]
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
