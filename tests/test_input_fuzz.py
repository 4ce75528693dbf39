"""hypothesis over certsync's input readers (issue 17): the real Key Vault event fixtures, targets files and
inventory files, mutated (values swapped for any JSON, keys dropped, deep nesting, lone surrogates, bad
IPv6 literals, 40,000-character strings, raw bytes cut and flipped), through `parse_event_json`, the
Event Grid function on a local pipeline (a vault directory, the SQLite audit trail, an outbox), the
targets reader and the inventory reader. Every input ends in a value or a one-line `CertsyncError`,
never another exception; every delivery the function gets leaves an audit entry and is acknowledged
(nothing here can succeed by asking again). The counts are printed."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shared.wiring
from functions.pipeline import keyvault_certificate_events
from shared.adapters.local.outbox import OutboxQueue
from shared.adapters.local.sqlite import SqliteAuditLog
from shared.adapters.local.vault_directory import DirectoryVault
from shared.errors import CertsyncError
from shared.exchange.inventory import parse_inventory
from shared.pipeline.events import parse_event_json
from shared.pipeline.process import Pipeline
from shared.pipeline.targets import parse_targets_json

ROOT = Path(__file__).resolve().parent.parent
EVENTS = sorted((ROOT / "tests" / "fixtures" / "events").glob("*.json"))
TARGETS = [
    ROOT / "examples" / "targets.json",
    *sorted((ROOT / "tests" / "fixtures" / "inventory").glob("*/targets.json")),
]
INVENTORIES = sorted((ROOT / "tests" / "fixtures" / "inventory").glob("*/inventory.json"))
COUNTS: dict[str, Counter[str]] = {
    "events": Counter(),
    "function": Counter(),
    "targets": Counter(),
    "inventories": Counter(),
}
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)

HOSTILE_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "a/b",
        "\ud800",
        "x\udc80y",
        "https://[::1/certificates/web/0123",
        "https://[not-v6]/certificates/web/0123",
        "https://kv.vault.azure.net/certificates/" + "a" * 40_000,
        "x" * 40_000,
        "1e400",
        "-1e20",
        "nan",
        "2026-13-45T99:99:99Z",
        "😀",
        "\x00\x1f",
        "Microsoft.KeyVault.CertificateNewVersionCreated",
        "1.0",
    ]
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | HOSTILE_STRINGS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def _paths(value: Any, at: tuple = ()) -> list[tuple]:
    found = [at]
    if len(at) > 20:  # inside a nesting a mutation made: no deeper
        return found
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*at, index))
    return found


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def mutated(draw: st.DrawFn, files: list[Path]) -> str:
    """A fixture's text after a few mutations of its JSON, or of its raw text."""
    text = draw(st.sampled_from(files)).read_text(encoding="utf-8-sig")
    document = json.loads(text)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(document)
        path = draw(st.sampled_from(paths))
        how = draw(st.sampled_from(["replace", "delete", "deep", "surrogate"]))
        if not path:
            if how == "replace":
                document = draw(JSON_VALUES)
            continue
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        key = path[-1]
        if how == "delete":
            del parent[key]
        elif how == "deep":
            parent[key] = _nested(draw(st.sampled_from([50, 5_000, 100_000])))
        elif how == "surrogate":
            parent[key] = draw(HOSTILE_STRINGS)
        else:
            parent[key] = draw(JSON_VALUES)
    try:
        result = json.dumps(document)
    except RecursionError:  # too deep for the encoder: send the text the way a hostile sender writes it
        result = "[" * 100_000 + "]" * 100_000
    if draw(st.booleans()):  # raw text: cut, or a character changed
        cut = draw(st.integers(0, len(result)))
        result = draw(st.sampled_from([result[:cut], result[:cut] + draw(st.characters()) + result[cut + 1 :]]))
    return result


def _outcome(counts: Counter[str], call: Any) -> None:
    try:
        call()
    except CertsyncError as exc:
        assert "\n" not in str(exc), str(exc)
        counts["CertsyncError"] += 1
    else:
        counts["read"] += 1


@FUZZ
@given(text=mutated(EVENTS))
def test_mutated_events_are_read_or_refused_with_a_certsync_error(text):
    _outcome(COUNTS["events"], lambda: parse_event_json(text, "event.json"))


@pytest.fixture(scope="module")
def local_function(tmp_path_factory):
    """The Event Grid function on a local pipeline: an empty vault directory, the SQLite audit trail."""
    directory = tmp_path_factory.mktemp("function-fuzz")
    (directory / "vault").mkdir()
    audit = SqliteAuditLog(directory / "audit.sqlite")
    pipeline = Pipeline(
        sources=lambda vault: DirectoryVault(directory / "vault", vault),
        jobs=OutboxQueue(directory / "outbox"),
        audit=audit,
    )
    patch = pytest.MonkeyPatch()
    patch.setattr(shared.wiring, "azure_pipeline", lambda: pipeline)
    yield directory / "audit.sqlite"
    patch.undo()


def _audit_rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("select count(*) from audit").fetchone()[0]


@FUZZ
@given(text=mutated(EVENTS))
def test_every_mutated_delivery_is_acknowledged_and_audited(local_function, text):
    counts = COUNTS["function"]
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):  # not JSON: Event Grid never delivers it
        counts["not JSON, never delivered"] += 1
        return
    before = _audit_rows(local_function)
    try:
        event = EventGridEventInConverter.decode(meta.Datum(json.dumps(body), "json"), trigger_metadata={})
    except Exception:  # the host's decoder refused it: through the pipeline's entry point, as another host would
        try:
            shared.wiring.process_event(body, "event")
        except CertsyncError as exc:
            assert getattr(exc, "transient", True) is False and "\n" not in str(exc)
            counts["process_event: refused"] += 1
        else:
            counts["process_event: settled"] += 1
    else:
        keyvault_certificate_events(event)  # returns: nothing here can succeed by asking again
        counts["function: acknowledged"] += 1
    assert _audit_rows(local_function) > before


@FUZZ
@given(text=mutated(TARGETS))
def test_mutated_targets_files_are_read_or_refused_with_a_certsync_error(text):
    _outcome(COUNTS["targets"], lambda: parse_targets_json(text, "targets.json"))


@FUZZ
@given(text=mutated(INVENTORIES), encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]))
def test_mutated_inventory_files_are_read_or_refused_with_a_certsync_error(text, encoding):
    data = text.encode(encoding, "surrogatepass")
    _outcome(COUNTS["inventories"], lambda: parse_inventory(data, "inventory.json"))


def test_zz_print_counts():
    for what, counts in COUNTS.items():
        print(
            f"\ninput fuzz, {what}: {sum(counts.values())} inputs, {dict(sorted(counts.items()))}, 0 other exceptions"
        )


def test_targets_and_inventory_files_nested_too_deeply_are_refused_in_one_line():
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(CertsyncError, match=r"targets\.json: JSON nested too deeply"):
        parse_targets_json(deep, "targets.json")
    with pytest.raises(CertsyncError, match=r"inventory\.json: JSON nested too deeply"):
        parse_inventory(deep.encode(), "inventory.json")
