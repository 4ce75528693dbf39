"""The local certificate source: a directory laid out like a vault (`DirectoryVault`), for
`certsync process --vault-dir`, `certsync reconcile` and the demo.

Directory layout: `DIR/<certificate name>/<version>.<pem|cer|der|crt|p7b|pfx>`, one file per version,
plus an optional `DIR/<certificate name>/certificate.json`:
`{"tags": {"name": "value"}, "disabled": ["<version>"], "created": {"<version>": "<ISO 8601>"}}`, and an
optional `DIR/<certificate name>/policy.json`: the certificate's issuance policy in Key Vault's REST shape
(`key_props`, `secret_props`, `x509_props`, `lifetime_actions`, `issuer`), as `az keyvault certificate
policy show` or `GET /certificates/{name}/policy` print it (`certsync doctor --policies` reads it).
Versions are ordered by `created`, else by the leaf's notBefore, then by version id.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.errors import CertificateInputError, CertsyncError
from shared.pipeline.policy import IssuancePolicy
from shared.pipeline.sources import SourceError, StoredVersion, check_object_name, gather, is_object_name
from shared.times import parse_time
from shared.x509.containers import load_certificate_file

_EXTENSIONS = (".pem", ".cer", ".der", ".crt", ".p7b", ".pfx")


@dataclass(frozen=True, slots=True)
class _Listed:
    """One version file as the folder lists it, before it is parsed."""

    version: str
    path: str
    enabled: bool
    created: dt.datetime | None


@dataclass(slots=True)
class _Folder:
    """A certificate folder's listing and certificate.json, valid while `stamp` (each file's name, mtime
    and size, as one string) is."""

    stamp: str
    tags: dict[str, str]
    listed: list[_Listed]  # file order; `ordered` sorts them
    ordered: list[_Listed] | None = None
    listing: int = 0  # the `names()` listing it was last checked in
    policy: IssuancePolicy | None = None


class DirectoryVault:
    """A directory laid out like a vault (see the module docstring); `vault` names it in results.

    Reading is as lazy as a fleet needs: `tags` reads certificate.json only, `latest` parses only the
    newest enabled version when every version has a `created` time (otherwise every version is parsed
    once to order them by notBefore), and parsed versions and folder listings are kept in LRUs
    (`PARSED_KEPT`, `FOLDERS_KEPT`), not all of them. A folder is re-read only when a file in it changed;
    `get` and `previous` (the event path) check it on each call, `tags` and `latest` (the reconciliation,
    after `names()`) once per listing: each `names()` starts a new one, so a run checks each folder once,
    not once per call. Inside `one_pass()` (the reconciliation's, on its own thread), `get` and `previous`
    too take a folder as this listing found it: the versions a reconciliation runs through the pipeline
    are read as the reconciliation saw them, without checking the folder twice more each."""

    # At least a reconciliation batch (`reconcile.BATCH`, 500): the batch's latest versions are read
    # ahead (`latest_many`), then each is read again by the pipeline's `get`, which must find it here.
    PARSED_KEPT = 1024
    # Folders whose listing is kept: a batch's, each read several times (tags, latest, get, previous);
    # a fleet's 10,000 would hold tens of MiB. An evicted folder is listed again when next read.
    FOLDERS_KEPT = 2048

    def __init__(self, root: str | Path, vault: str, vault_url: str | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise CertsyncError(f"{self.root}: no such directory; give --vault-dir a folder of certificate folders")
        self.vault = vault
        self.vault_url = (vault_url or f"https://{vault}.vault.azure.net").rstrip("/")
        self._folders: OrderedDict[str, _Folder] = OrderedDict()
        self._parsed: OrderedDict[tuple[str, str, str], StoredVersion] = OrderedDict()
        self._listing = 0  # bumped by each names()
        self._pass = threading.local()  # `depth`: the calling thread is inside `one_pass()`

    @contextlib.contextmanager
    def one_pass(self) -> Iterator[None]:
        """Inside, on this thread, `get` and `previous` check a folder only when this listing has not."""
        self._pass.depth = getattr(self._pass, "depth", 0) + 1
        try:
            yield
        finally:
            self._pass.depth -= 1

    def _recheck(self) -> bool:
        return not getattr(self._pass, "depth", 0)

    def get(self, name: str, version: str) -> StoredVersion:
        folder, ordered = self._ordered(name, recheck=self._recheck())
        for listed in ordered:
            if listed.version.lower() == version.lower():
                return self._stored(name, listed, folder)
        raise SourceError(f"{self.root / name}: has no version {version!r}", "not-found")

    def previous(self, name: str, version: str) -> StoredVersion | None:
        folder, ordered = self._ordered(name, recheck=self._recheck())
        index = next((i for i, v in enumerate(ordered) if v.version.lower() == version.lower()), None)
        if index is None:
            raise SourceError(f"{self.root / name}: has no version {version!r}", "not-found")
        listed = next((v for v in reversed(ordered[:index]) if v.enabled), None)
        return self._stored(name, listed, folder) if listed is not None else None

    def names(self) -> list[str]:
        """The certificate folders; folders whose name Key Vault could not hold are not certificates."""
        try:
            with os.scandir(self.root) as entries:
                folders = [e.name for e in entries if e.is_dir() and is_object_name(e.name)]
        except OSError as exc:
            raise SourceError(f"{self.root}: cannot list the vault directory ({exc.strerror})", "unavailable") from None
        self._listing += 1
        return sorted(folders, key=str.lower)

    def latest(self, name: str) -> StoredVersion | None:
        folder, ordered = self._ordered(name, recheck=False)
        listed = next((v for v in reversed(ordered) if v.enabled), None)
        return self._stored(name, listed, folder) if listed is not None else None

    def tags(self, name: str) -> dict[str, str]:
        folder = self._folder(name, recheck=False)
        return dict(folder.tags) if any(v.enabled for v in folder.listed) else {}

    def tags_many(self, names: Sequence[str]) -> dict[str, dict[str, str] | Exception]:
        return gather(names, self.tags)  # local files: one after another

    def latest_many(self, names: Sequence[str]) -> dict[str, StoredVersion | Exception | None]:
        return gather(names, self.latest)

    def _folder(self, name: str, *, recheck: bool = True) -> _Folder:
        """The folder's listing and metadata; re-read only when a file in it changed. Without `recheck`,
        a folder already checked since the last `names()` is not checked again."""
        try:
            check_object_name(name)
        except CertsyncError as exc:  # no folder can be that certificate: as Key Vault answers such a name
            raise SourceError(f"{self.root}: {exc}", "not-found") from None
        key = name.lower()
        cached = self._folders.get(key)
        if cached is not None:
            self._folders.move_to_end(key)
            if not recheck and self._listing and cached.listing == self._listing:
                return cached
        path = self.root / name
        try:
            with os.scandir(path) as scan:
                entries = sorted(scan, key=lambda e: e.name)
                stamp = "/".join(f"{e.name}:{(st := e.stat()).st_mtime_ns}:{st.st_size}" for e in entries)
        except (FileNotFoundError, NotADirectoryError):
            raise SourceError(f"{path}: no such certificate folder", "not-found") from None
        if cached is not None and cached.stamp == stamp:
            cached.listing = self._listing
            return cached
        present = {e.name for e in entries}  # the listing says which metadata files there are: no failed opens
        meta = self._meta(path) if "certificate.json" in present else {}
        created = meta.get("created", {})
        disabled = {str(v).lower() for v in meta.get("disabled", [])}
        listed = []
        for entry in entries:
            stem, suffix = os.path.splitext(entry.name)
            if suffix.lower() not in _EXTENSIONS or not entry.is_file():
                continue
            when = created.get(stem)
            listed.append(
                _Listed(
                    version=stem,
                    path=entry.path,
                    enabled=stem.lower() not in disabled,
                    created=_parse_created(when, path) if when else None,
                )
            )
        folder = _Folder(
            stamp,
            {str(k): str(v) for k, v in meta.get("tags", {}).items()},
            listed,
            listing=self._listing,
            policy=self._policy(path) if "policy.json" in present else None,
        )
        self._folders[key] = folder
        while len(self._folders) > self.FOLDERS_KEPT:
            self._folders.popitem(last=False)
        return folder

    def _ordered(self, name: str, *, recheck: bool = True) -> tuple[_Folder, list[_Listed]]:
        """The folder and every version, oldest first: by `created`, else by the leaf's notBefore (parsed
        for it), then id."""
        folder = self._folder(name, recheck=recheck)
        if folder.ordered is None:
            folder.ordered = sorted(
                folder.listed,
                key=lambda v: (v.created or self._stored(name, v, folder).bundle.leaf.not_before, v.version),
            )
        return folder, folder.ordered

    def _stored(self, name: str, listed: _Listed, folder: _Folder) -> StoredVersion:
        """The parsed version, from the LRU while its folder (the file, certificate.json) is unchanged."""
        key = (name.lower(), folder.stamp, listed.version)
        stored = self._parsed.get(key)
        if stored is not None:
            self._parsed.move_to_end(key)
            return stored
        try:
            bundle = load_certificate_file(listed.path)
        except CertificateInputError as exc:
            raise SourceError(str(exc), "bad-content") from None
        stored = StoredVersion(
            vault=self.vault,
            name=name,
            version=listed.version,
            bundle=bundle,
            secret_id=f"{self.vault_url}/secrets/{name}/{listed.version}",
            enabled=listed.enabled,
            created=listed.created,
            tags=dict(folder.tags),
            policy=folder.policy,
        )
        self._parsed[key] = stored
        while len(self._parsed) > self.PARSED_KEPT:
            self._parsed.popitem(last=False)
        return stored

    @staticmethod
    def _policy(folder: Path) -> IssuancePolicy | None:
        path = folder / "policy.json"
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise SourceError(f"{path}: not readable JSON ({exc}); fix or remove it", "bad-content") from None
        if not isinstance(document, dict):
            raise SourceError(f"{path}: must be a JSON object (a Key Vault certificate policy)", "bad-content")
        try:
            return IssuancePolicy.from_document(document, str(path))
        except CertsyncError as exc:
            raise SourceError(str(exc), "bad-content") from None

    @staticmethod
    def _meta(folder: Path) -> dict:
        path = folder / "certificate.json"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise SourceError(f"{path}: not readable ({exc.strerror}); fix or remove it", "bad-content") from None
        try:
            meta = json.loads(text)
        except ValueError as exc:
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
