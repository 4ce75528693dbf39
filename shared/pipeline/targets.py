"""Targets: which Exchange objects a Key Vault certificate serves, and which worker group acts on them.

They come from the certificate's Key Vault tags (`certsync-*`), from a targets file (JSON, schema
`certsync.targets/1`), or both; `docs/targets.md` is the reference. `resolve_targets` merges, lowest
first: the file's `"*"` entry, the file's entry for the certificate, then the tags (a field given by a
tag replaces the file's value). Only the worker group is required: the servers and connectors come from
the Exchange inventory (`shared.pipeline.planner`); servers listed here are added to the plan, connectors
listed here narrow which ones are written, and one the inventory disagrees with is a reported conflict.

Everything is validated on the way in, and every error is one line naming the file and field, or the
tag, with what to do. Pure: no I/O beyond reading the file named to `load_targets_file`.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from shared.errors import CertsyncError
from shared.pipeline.sources import check_object_name
from shared.validation.assessment import DATE_INVALID, INVALID, REVOCATION_CHECK_FAILURE, REVOKED, UNTRUSTED, VALID
from shared.validation.endpoints import format_endpoint
from shared.validation.probe import parse_endpoint
from shared.x509.tls_certificate_name import is_exchange_host_name

SCHEMA = "certsync.targets/1"
DEFAULT_ENTRY = "*"
TAG_PREFIX = "certsync-"

# The entry keys, in the order documents and `Targets.to_dict()` list them.
FIELDS = (
    "worker_group",
    "servers",
    "send_connectors",
    "receive_connectors",
    "hybrid_configuration",
    "hosts",
    "exo_inbound_connector",
    "allow_status",
    "probe",
)
TAGS = {
    "certsync-worker-group": "worker_group",
    "certsync-servers": "servers",
    "certsync-send-connectors": "send_connectors",
    "certsync-receive-connectors": "receive_connectors",
    "certsync-hybrid": "hybrid_configuration",
    "certsync-hosts": "hosts",
    "certsync-exo-inbound-connector": "exo_inbound_connector",
    "certsync-allow-status": "allow_status",
    "certsync-probe": "probe",
}
_TAG_OF = {field: tag for tag, field in TAGS.items()}
# Connector names may contain commas, so their tags separate items with semicolons.
_TAG_SEPARATOR = {
    "servers": ",",
    "send_connectors": ";",
    "receive_connectors": ";",
    "hosts": ",",
    "allow_status": ",",
    "probe": ",",
}
# Statuses (Get-ExchangeCertificate's words) under which a plan may still be queued besides Valid: only the
# assessment's own, which the servers can still read as Valid (certsync could not reach the CRL or OCSP
# responder, or does not trust a root the servers trust). The runbook demands Valid on every server
# (`contract.REQUIRED_STATUS`), so a status Exchange itself would show (Invalid, DateInvalid, Revoked) can
# never deploy: `allow_status` refuses it at load rather than queue a job that cannot succeed.
ALLOWED_STATUSES = (UNTRUSTED, REVOCATION_CHECK_FAILURE)
EXCHANGE_STATUSES = (INVALID, DATE_INVALID, REVOKED)

# Exchange documents 64 characters for receive connector names (New-/Set-ReceiveConnector -Name) and for
# Exchange Online connector names (New-InboundConnector -Name). New-SendConnector states no limit, but a
# send connector is an Active Directory object named by its cn, which AD caps at 64 characters too.
MAX_CONNECTOR_NAME = 64
MAX_TAG_VALUE = 256  # Key Vault tag values hold at most 256 characters
# NetBIOS computer names: at most 15 characters; Exchange servers use letters, digits and hyphens.
_NETBIOS = re.compile(r"[A-Za-z0-9-]{1,15}\Z")


class TargetsError(CertsyncError):
    """Targets that cannot be used: names the file and field, or the tag, what is wrong and what to do."""


@dataclass(frozen=True)
class Targets:
    """What one certificate serves, resolved and validated; `sources` says where the values came from."""

    certificate: str
    worker_group: str
    servers: tuple[str, ...]
    send_connectors: tuple[str, ...]
    receive_connectors: tuple[str, ...]
    hybrid_configuration: bool
    hosts: tuple[str, ...]
    exo_inbound_connector: str | None
    allow_status: tuple[str, ...]
    sources: tuple[str, ...]
    probe: tuple[str, ...] = ()  # HOST:PORT endpoints to probe over STARTTLS after a remediation

    def to_dict(self) -> dict:
        """The entry as the targets file writes it (`FIELDS`); the certificate name is the entry's key."""
        return {
            "worker_group": self.worker_group,
            "servers": list(self.servers),
            "send_connectors": list(self.send_connectors),
            "receive_connectors": list(self.receive_connectors),
            "hybrid_configuration": self.hybrid_configuration,
            "hosts": list(self.hosts),
            "exo_inbound_connector": self.exo_inbound_connector,
            "allow_status": list(self.allow_status),
            "probe": list(self.probe),
        }


class TargetsFile:
    """A parsed, validated targets file: one partial entry per certificate name, plus the `"*"` default."""

    def __init__(self, path: str, entries: dict[str, tuple[str, dict]]) -> None:
        self.path = path
        self._entries = entries  # lower-cased name -> (name as written, validated partial entry)

    def __repr__(self) -> str:
        return f"TargetsFile({self.path!r}, {len(self._entries)} entries)"

    def for_certificate(self, name: str) -> dict | None:
        """The certificate's entry (name matched ignoring case) with the `"*"` entry merged under it, or
        None when the file has no entry for it. `for_certificate("*")` is the default entry alone."""
        own = self._entries.get(name.lower())
        if own is None:
            return None
        if name == DEFAULT_ENTRY:
            return dict(own[1])
        return {**self._default(), **own[1]}

    def _default(self) -> dict:
        return dict(self._entries[DEFAULT_ENTRY][1]) if DEFAULT_ENTRY in self._entries else {}

    def _own(self, name: str) -> tuple[str, dict] | None:
        return self._entries.get(name.lower())


# --------------------------------------------------------------------------------------------------
# Loading the file


def load_targets_file(path: str) -> TargetsFile:
    """Read and validate a targets file; TargetsError when it is unreadable, not JSON, or off-schema."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise TargetsError(f"{path}: no such targets file; check the path (docs/targets.md)") from None
    except OSError as exc:
        raise TargetsError(f"{path}: cannot read the targets file ({exc.strerror}); check the path") from None
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        # What Windows PowerShell 5.1's Out-File and `>` write by default.
        raise TargetsError(f"{path}: is UTF-16 text; save it as UTF-8 (Set-Content -Encoding UTF8)")
    try:
        text = data.decode("utf-8")  # a byte-order mark is dropped by parse_targets_json
    except UnicodeDecodeError as exc:
        raise TargetsError(f"{path}: byte {exc.start} is not UTF-8; save the file as UTF-8") from None
    return parse_targets_json(text, path)


def parse_targets_json(text: str, source: str) -> TargetsFile:
    """Validate the text of a targets file; `source` names it in error messages and `TargetsFile.path`."""
    try:
        document = json.loads(text.removeprefix("\ufeff"), object_pairs_hook=_JsonObject)
    except json.JSONDecodeError as exc:
        raise TargetsError(
            f"{source}: not valid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg}); fix the syntax there"
        ) from None
    except RecursionError:
        raise TargetsError(f"{source}: JSON nested too deeply for a targets file (docs/targets.md)") from None
    if not isinstance(document, dict):
        raise TargetsError(
            f'{source}: the top level is {_json_type(document)}; it must be an object with "schema" and '
            '"certificates" (docs/targets.md)'
        )
    _check_keys(document, ("schema", "certificates"), source)
    if "schema" not in document:
        raise TargetsError(f'{source}: "schema" is missing; add "schema": "{SCHEMA}" at the top')
    if document["schema"] != SCHEMA:
        raise TargetsError(f'{source}: schema is {_show(document["schema"])}; this certsync reads "{SCHEMA}"')
    certificates = document.get("certificates")
    if not isinstance(certificates, dict):
        what = "missing" if certificates is None else _json_type(certificates)
        raise TargetsError(f'{source}: "certificates" is {what}; it must be an object of certificate name -> entry')
    _check_duplicates(certificates, f"{source}: certificates")
    entries: dict[str, tuple[str, dict]] = {}
    for name, body in certificates.items():
        if name != DEFAULT_ENTRY:
            try:
                check_object_name(name)
            except CertsyncError as exc:
                raise TargetsError(
                    f'{source}: certificates: {exc}; use the certificate\'s Key Vault name, or "*" for defaults'
                ) from None
        if name.lower() in entries:
            raise TargetsError(
                f"{source}: certificates: {_show(entries[name.lower()][0])} and {_show(name)} are the same "
                "certificate (names ignore case); merge the two entries"
            )
        where = f"{source}: certificates.{name}"
        if not isinstance(body, dict):
            raise TargetsError(f"{where}: is {_json_type(body)}; it must be an object of targets (docs/targets.md)")
        entries[name.lower()] = (name, _entry_from_json(body, where))
    # A receive connector must sit on one of the servers: checked here for each entry with the "*" entry
    # under it, and again after tags are merged in `resolve_targets`.
    default_name, default = entries.get(DEFAULT_ENTRY, (DEFAULT_ENTRY, {}))
    for name, entry in entries.values():
        merged = {**default, **entry}
        origin = {key: f"{source}: certificates.{name if key in entry else default_name}.{key}" for key in merged}
        if "servers" in merged and "receive_connectors" in merged:
            _check_receive_servers(merged, origin["receive_connectors"], origin["servers"])
    return TargetsFile(source, entries)


class _JsonObject(dict):
    """A JSON object that remembers keys given more than once (json keeps only the last silently)."""

    def __init__(self, pairs: list[tuple[str, object]]) -> None:
        super().__init__(pairs)
        self.duplicates: list[str] = []
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                self.duplicates.append(key)
            seen.add(key)


def _check_duplicates(obj: dict, where: str) -> None:
    for key in getattr(obj, "duplicates", ()):
        raise TargetsError(f"{where}: key {_show(key)} appears twice; keep one")


def _check_keys(obj: dict, allowed: Iterable[str], where: str) -> None:
    _check_duplicates(obj, where)
    allowed = tuple(allowed)
    for key in obj:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {_show(close[0])}?)" if close else ""
            raise TargetsError(f"{where}: unknown key {_show(key)}{hint}; the keys are {', '.join(allowed)}")


def _entry_from_json(body: dict, where: str) -> dict:
    _check_keys(body, FIELDS, where)
    entry: dict = {}
    for key, value in body.items():
        at = f"{where}.{key}"
        if key == "hybrid_configuration":
            if not isinstance(value, bool):
                raise TargetsError(f"{at}: is {_json_type(value)}; it must be true or false")
            entry[key] = value
        elif key in _TAG_SEPARATOR:
            if not isinstance(value, list):
                raise TargetsError(f'{at}: is {_json_type(value)}; it must be an array of strings, e.g. ["a", "b"]')
            items = []
            for index, item in enumerate(value):
                if not isinstance(item, str):
                    raise TargetsError(f"{at}[{index}]: is {_json_type(item)}; it must be a string")
                items.append((f"{at}[{index}]", item))
            entry[key] = _normalise_list(key, items)
        elif key == "exo_inbound_connector" and value is None:
            entry[key] = None
        else:
            if not isinstance(value, str):
                nullable = " or null" if key == "exo_inbound_connector" else ""
                raise TargetsError(f"{at}: is {_json_type(value)}; it must be a string{nullable}")
            entry[key] = _normalise_one(key, value, at)
    return entry


# --------------------------------------------------------------------------------------------------
# Tags


def targets_from_tags(tags: dict[str, str], source: str = "tags") -> dict:
    """The validated partial entry that a certificate's `certsync-*` tags give (tag names ignore case;
    other tags are ignored). `source` says what carries the tags, usually the certificate's name: errors
    read "tag certsync-hybrid on exch-hybrid-smtp: ...".

    A list tag with an empty value is an empty list; an empty `certsync-exo-inbound-connector` is none."""
    on = "" if source == "tags" else f" on {source}"
    seen: dict[str, str] = {}
    entry: dict = {}
    for raw_name, value in tags.items():
        name = str(raw_name).strip().lower()
        if not name.startswith(TAG_PREFIX):
            continue
        at = f"tag {name}{on}"
        if name not in TAGS:
            # Compared without the prefix, which every candidate shares.
            suffixes = [tag.removeprefix(TAG_PREFIX) for tag in TAGS]
            close = difflib.get_close_matches(name.removeprefix(TAG_PREFIX), suffixes, n=1)
            hint = f" (did you mean {TAG_PREFIX}{close[0]}?)" if close else ""
            raise TargetsError(f"{at}: not a certsync tag{hint}; rename or remove it (tags: {', '.join(TAGS)})")
        if name in seen:
            raise TargetsError(f"{at}: given twice ({seen[name]}, {raw_name}; tag names ignore case); keep one")
        seen[name] = str(raw_name)
        if not isinstance(value, str):
            raise TargetsError(f"{at}: the value is {type(value).__name__}, not text; Key Vault tag values are text")
        if len(value) > MAX_TAG_VALUE:
            raise TargetsError(
                f"{at}: the value is {len(value)} characters, more than the {MAX_TAG_VALUE} a Key Vault tag "
                "holds; move this field to the targets file (docs/targets.md)"
            )
        field = TAGS[name]
        entry[field] = _field_from_tag(field, value, at)
    return entry


def _field_from_tag(field: str, value: str, at: str) -> object:
    if field == "hybrid_configuration":
        word = value.strip().lower()
        if word not in ("true", "false"):
            raise TargetsError(f"{at}: {_show(value)} is not true or false; set it to true or false")
        return word == "true"
    if field == "exo_inbound_connector" and not value.strip():
        return None
    if field not in _TAG_SEPARATOR:
        return _normalise_one(field, value, at)
    if not value.strip():
        return ()
    separator = _TAG_SEPARATOR[field]
    items = value.split(separator)
    if any(not item.strip() for item in items):
        noun = "commas" if separator == "," else "semicolons"
        raise TargetsError(f"{at}: {_show(value)} has an empty item; separate the items with single {noun}")
    return _normalise_list(field, [(at, item) for item in items])


# --------------------------------------------------------------------------------------------------
# Merging


def resolve_targets(name: str, *, tags: dict[str, str] | None = None, file: TargetsFile | None = None) -> Targets:
    """The certificate's targets: the file's `"*"` entry, then its own entry, then its tags, each field
    replacing the one before. TargetsError when nothing targets it or the merged result is incomplete."""
    try:
        check_object_name(name)
    except CertsyncError as exc:
        raise TargetsError(f"{exc}; give the certificate's Key Vault name") from None
    tag_entry = _tag_entry(tags or {}, name)
    own = file._own(name) if file is not None else None
    if own is None and not tag_entry:
        raise TargetsError(
            f"{name}: no targets; tag the certificate (certsync-worker-group, certsync-servers, ...) "
            "or add it to the targets file (docs/targets.md)"
        )
    merged: dict = {}
    origin: dict[str, str] = {}  # field -> where its value came from, for error messages
    sources: list[str] = []
    layers: list[tuple[str, str, dict]] = []
    if file is not None:
        layers.append((file.path, f"{file.path}: certificates.{DEFAULT_ENTRY}", file._default()))
        if own is not None:
            layers.append((file.path, f"{file.path}: certificates.{own[0]}", own[1]))
    layers.append(("tags", "", tag_entry))
    for source, where, entry in layers:
        for key, value in entry.items():
            merged[key] = value
            origin[key] = f"tag {_TAG_OF[key]} on {name}" if source == "tags" else f"{where}.{key}"
        if entry and source not in sources:
            sources.append(source)
    in_file = f"in {file.path}" if file is not None else "in the targets file"
    if not merged.get("worker_group"):  # the servers and connectors come from the inventory
        raise TargetsError(
            f'{name}: no worker group; set the tag {_TAG_OF["worker_group"]} or "worker_group" {in_file} '
            "(docs/targets.md)"
        )
    servers = merged.get("servers", ())
    hosts = merged.get("hosts", ())
    if "probe" in merged:
        probe = merged["probe"]
    else:  # each host on port 25, as Exchange Online connects; a wildcard names no server to connect to
        probe = tuple(_probe_endpoint(host) for host in hosts if not host.startswith("*."))
    receive = merged.get("receive_connectors", ())  # none listed: the planner narrows nothing
    if receive and servers:
        _check_receive_servers(merged, origin["receive_connectors"], origin["servers"])
    return Targets(
        certificate=name,
        worker_group=merged["worker_group"],
        servers=servers,
        send_connectors=merged.get("send_connectors", ()),
        receive_connectors=receive,
        hybrid_configuration=merged.get("hybrid_configuration", True),
        hosts=hosts,
        exo_inbound_connector=merged.get("exo_inbound_connector"),
        allow_status=merged.get("allow_status", ()),
        sources=tuple(sources),
        probe=probe,
    )


def _tag_entry(tags: dict[str, str], source: str) -> dict:
    """`targets_from_tags`, read once per (certificate, tags): a reconciliation resolves each certificate's
    targets, then the pipeline resolves them again for the version it runs."""
    key = (source, tuple(tags.items()))
    try:
        hash(key)
    except TypeError:  # a value that is not text: the check says so
        return targets_from_tags(tags, source=source)
    return dict(_cached_tag_entry(key))


@functools.lru_cache(maxsize=1024)
def _cached_tag_entry(key: tuple[str, tuple[tuple[str, str], ...]]) -> dict:
    return targets_from_tags(dict(key[1]), source=key[0])


def _check_receive_servers(entry: dict, where: str, servers_from: str) -> None:
    """Each receive connector must sit on one of the entry's servers."""
    servers = entry["servers"]
    for connector in entry["receive_connectors"]:
        server = connector.partition("\\")[0]
        if server not in servers:
            listed = ", ".join(servers) or "none"
            raise TargetsError(
                f"{where}: {_show(connector)} is on {server}, which is not among the servers ({listed}, from "
                f"{servers_from}); add {server} to the servers or remove the connector"
            )


# --------------------------------------------------------------------------------------------------
# Values


class _Invalid(Exception):
    """A value that fails a rule: `problem` and `remedy`; the caller adds where it was found."""

    def __init__(self, problem: str, remedy: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.remedy = remedy


def _normalise_one(field: str, value: str, at: str) -> str:
    try:
        return _CHECKS[field](value)
    except _Invalid as exc:
        raise TargetsError(f"{at}: {exc.problem}; {exc.remedy}") from None


def _normalise_list(field: str, items: list[tuple[str, str]]) -> tuple[str, ...]:
    """Each item checked, then duplicates dropped (ignoring case), first occurrence kept."""
    kept: dict[str, str] = {}
    for at, item in items:
        value = _normalise_one(field, item, at)
        kept.setdefault(value.casefold(), value)
    return tuple(kept.values())


def _text(value: str) -> str:
    """Trimmed and non-empty, with no control character anywhere (not even a trailing line break)."""
    for char in value:
        if unicodedata.category(char) == "Cc":
            raise _Invalid(
                f"{_show(value)} contains the control character U+{ord(char):04X}",
                "remove it (Exchange identities cannot contain line breaks, tabs or NUL)",
            )
    text = value.strip()
    if not text:
        raise _Invalid("the value is empty", "give a value or leave the field out")
    return text


def _server(value: str) -> str:
    text = _text(value)
    if not _NETBIOS.match(text):
        remedy = "give its short name, e.g. EX01"
        if "." in text:
            remedy = f"give the short name ({text.split('.')[0].upper()}), not the FQDN"
        raise _Invalid(f"{_show(text)} is not a server's NetBIOS name (1-15 letters, digits, hyphens)", remedy)
    return text.upper()


def _connector_name(value: str) -> str:
    text = _text(value)
    if len(text) > MAX_CONNECTOR_NAME:
        raise _Invalid(
            f"{_show(text)} is {len(text)} characters; Exchange connector names have at most {MAX_CONNECTOR_NAME}",
            "copy the name from Get-SendConnector, Get-ReceiveConnector or Get-InboundConnector",
        )
    return text


def _receive_connector(value: str) -> str:
    text = _text(value)
    server, backslash, name = text.partition("\\")
    if not backslash or not server.strip() or not name.strip() or "\\" in name:
        raise _Invalid(
            f"{_show(text)} is not SERVER\\Name",
            'give the server and the connector name, e.g. "EX01\\Default Frontend EX01"',
        )
    try:
        server = _server(server)
    except _Invalid as exc:
        raise _Invalid(f"in {_show(text)}, {exc.problem}", exc.remedy) from None
    return f"{server}\\{_connector_name(name)}"


def _host(value: str) -> str:
    host = _text(value).lower()
    if not is_exchange_host_name(host):
        raise _Invalid(
            f"{_show(host)} is not a DNS host name",
            "give a name like mail.contoso.com or *.contoso.com (A-labels, xn--, for non-ASCII names)",
        )
    if host.startswith("*.") and "." not in host[2:]:
        raise _Invalid(f"{_show(host)} is a wildcard over a top-level domain", "give *.<domain>, e.g. *.contoso.com")
    return host


_STATUS_BY_FOLDED = {status.lower(): status for status in ALLOWED_STATUSES}


def _status(value: str) -> str:
    text = _text(value)
    if text.lower() == VALID.lower():
        raise _Invalid('"Valid" is always allowed', f"list only statuses besides it: {', '.join(ALLOWED_STATUSES)}")
    exchange = next((s for s in EXCHANGE_STATUSES if s.lower() == text.lower()), None)
    if exchange is not None:
        raise _Invalid(
            f'"{exchange}" is a status Exchange itself shows, and the runbook imports only a Valid certificate',
            f"fix the certificate (certsync check), or list only {', '.join(ALLOWED_STATUSES)}",
        )
    if text.lower() not in _STATUS_BY_FOLDED:
        raise _Invalid(
            f"{_show(text)} is not a status a plan may be queued under", f"use {', '.join(ALLOWED_STATUSES)}"
        )
    return _STATUS_BY_FOLDED[text.lower()]


@functools.lru_cache(maxsize=4096)  # a fleet's targets name the same few hosts thousands of times
def _probe_endpoint(value: str) -> str:
    text = _text(value)
    try:
        host, port = parse_endpoint(text)
    except CertsyncError:
        raise _Invalid(
            f"{_show(text)} is not HOST or HOST:PORT",
            "give e.g. mail.contoso.com or mail.contoso.com:25 ([2001:db8::1]:25 for IPv6); port 25 when none is given",
        ) from None
    return format_endpoint(host, port)


_CHECKS: dict[str, Callable[[str], str]] = {
    "worker_group": _text,
    "servers": _server,
    "send_connectors": _connector_name,
    "receive_connectors": _receive_connector,
    "hosts": _host,
    "exo_inbound_connector": _connector_name,
    "allow_status": _status,
    "probe": _probe_endpoint,
}


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _show(value: object) -> str:
    """A value quoted for a one-line message. Control characters are escaped so they show and cannot break
    the line; backslashes stay single, as in an Exchange identity (EX01\\Default Frontend EX01)."""
    if not isinstance(value, str):
        return json.dumps(value)
    text = "".join(
        _ESCAPES.get(char, f"\\u{ord(char):04x}") if unicodedata.category(char) == "Cc" else char for char in value
    )
    return f'"{text}"' if len(text) <= 100 else f'"{text[:96]}..."'


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
