"""Key Vault events as the Functions host hands them over: the JSON fixtures decoded by the azure-functions
library's own Event Grid converter, turned back into their envelope by the trigger, read by
`shared.pipeline.events`. Both schemas, both spellings of the data fields, and every malformed shape."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import azure.functions as func
import pytest
from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter

from functions.pipeline import envelope
from shared.pipeline.events import (
    EXPIRED,
    NEAR_EXPIRY,
    NEW_VERSION,
    EventError,
    parse_event,
    parse_event_json,
    require_certificate_fields,
)
from shared.times import parse_time

FIXTURES = Path(__file__).parent / "fixtures" / "events"
VERSION = "0123456789abcdef0123456789abcdef"


def delivered(name: str) -> func.EventGridEvent | func.CloudEvent:
    """What the trigger receives for the fixture, decoded as the worker decodes it."""
    text = (FIXTURES / name).read_text()
    return EventGridEventInConverter.decode(meta.Datum(text, "json"), trigger_metadata={})


@pytest.mark.parametrize(
    ("fixture", "schema", "event_type", "library_type"),
    [
        ("eventgrid-new-version.json", "EventGrid", NEW_VERSION, func.EventGridEvent),
        ("eventgrid-near-expiry.json", "EventGrid", NEAR_EXPIRY, func.EventGridEvent),
        ("eventgrid-expired.json", "EventGrid", EXPIRED, func.EventGridEvent),
        ("cloudevents-new-version.json", "CloudEvents", NEW_VERSION, func.CloudEvent),
    ],
)
def test_fixtures_through_the_library_converter_read_the_same(fixture, schema, event_type, library_type):
    received = delivered(fixture)
    assert isinstance(received, library_type)
    event = parse_event(envelope(received))
    assert (event.schema, event.event_type) == (schema, event_type)
    assert (event.vault, event.name, event.version) == ("contoso-kv", "exch-hybrid-smtp", VERSION)
    assert event.object_id.endswith(f"/certificates/exch-hybrid-smtp/{VERSION}")
    assert event.topic.endswith("/vaults/contoso-kv")
    assert event.not_before == dt.datetime(2026, 5, 1, 8, 0, tzinfo=dt.timezone.utc)
    assert event.expires == dt.datetime.fromtimestamp(1809158400, dt.timezone.utc)
    assert event.is_certificate_event
    require_certificate_fields(event)
    # the envelope the trigger rebuilds reads exactly as the raw fixture does
    assert parse_event(json.loads((FIXTURES / fixture).read_text())).to_dict() == event.to_dict()


def test_the_event_time_keeps_microseconds_of_event_grids_seven_digits():
    event = parse_event(envelope(delivered("eventgrid-new-version.json")))
    assert event.event_time == dt.datetime(2026, 5, 1, 8, 0, 0, 123456, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-05-01T08:00:00.1234567Z", dt.datetime(2026, 5, 1, 8, 0, 0, 123456, tzinfo=dt.timezone.utc)),
        ("2026-05-01T08:00:00z", dt.datetime(2026, 5, 1, 8, tzinfo=dt.timezone.utc)),
        ("2026-05-01T08:00:00", dt.datetime(2026, 5, 1, 8, tzinfo=dt.timezone.utc)),  # no offset: UTC
        ("2026-05-01", dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc)),
        (" 2026-05-01T10:00:00.5+02:00 ", dt.datetime(2026, 5, 1, 8, 0, 0, 500000, tzinfo=dt.timezone.utc)),
        # the offset after 7 digits is kept (it was once read as more fractional digits and dropped)
        ("2026-05-01T10:00:00.1234567+02:00", dt.datetime(2026, 5, 1, 8, 0, 0, 123456, tzinfo=dt.timezone.utc)),
        ("  ", None),
    ],
)
def test_iso_times_are_read_as_azure_writes_them(text, expected):
    parsed = parse_time(text)
    assert parsed == expected
    assert parsed is None or parsed.tzinfo is not None


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01T00:00:00Z", "2026-05-01T25:00:00Z"])
def test_text_that_is_not_an_iso_time_is_a_value_error(text):
    with pytest.raises(ValueError):
        parse_time(text)


def test_a_secret_event_is_read_but_is_not_a_certificate_event():
    event = parse_event(envelope(delivered("eventgrid-secret-new-version.json")))
    assert event.event_type == "Microsoft.KeyVault.SecretNewVersionCreated"
    assert not event.is_certificate_event


def test_an_array_of_events_as_event_grid_posts_them():
    items = [
        json.loads((FIXTURES / name).read_text()) for name in ("eventgrid-new-version.json", "eventgrid-expired.json")
    ]
    events = parse_event_json(json.dumps(items), "batch.json")
    assert [e.event_type for e in events] == [NEW_VERSION, EXPIRED]


def test_vault_and_version_fall_back_to_the_object_url():
    raw = json.loads((FIXTURES / "eventgrid-new-version.json").read_text())
    del raw["data"]["VaultName"], raw["data"]["Version"]
    event = parse_event(raw)
    assert (event.vault, event.version) == ("contoso-kv", VERSION)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        ("[]", "an empty array"),
        ("42", "not a JSON object"),
        ('{"id": "x", "data": {}}', "has no eventType"),
        ('{"specversion": "1.0", "id": "x"}', "has no type"),
        ('{"eventType": "Microsoft.KeyVault.CertificateExpired"}', "has no id"),
        ('{"id": "x", "eventType": "t", "data": [1]}', "data is not an object"),
        ('{"id": "x", "eventType": "t", "data": "{nope"}', "data is a string that is not JSON"),
        ('{"id": "x", "eventType": "t", "data": {"NBF": "soon"}}', "NBF 'soon' is not Unix seconds"),
        ('{"id": "x", "eventType": "t", "eventTime": "yesterday"}', "is not ISO 8601"),
    ],
)
def test_malformed_events_get_one_line_naming_the_problem(text, message):
    with pytest.raises(EventError) as caught:
        parse_event_json(text, "event.json")
    assert message in str(caught.value) and str(caught.value).startswith("event.json")
    assert "\n" not in str(caught.value)


def test_a_certificate_event_without_name_or_version_is_refused_by_name():
    raw = {"id": "e1", "eventType": NEW_VERSION, "data": {"VaultName": "kv"}}
    with pytest.raises(EventError, match="has no ObjectName, Version in data"):
        require_certificate_fields(parse_event(raw), "event e1")


def test_an_oversized_body_is_refused_before_parsing():
    with pytest.raises(EventError, match="larger than 1 MiB"):
        parse_event_json(" " * (1024 * 1024 + 1), "big.json")


def test_json_nested_deeper_than_python_recurses_is_a_one_line_event_error():
    deep = '{"id": "x", "eventType": "t", "data": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(EventError, match="nested too deeply") as caught:
        parse_event_json(deep, "event.json")
    assert "\n" not in str(caught.value)
    nested_string = {"id": "x", "eventType": "t", "data": "[" * 100_000 + "]" * 100_000}
    with pytest.raises(EventError, match="data is a string that is not JSON"):
        parse_event(nested_string, "event")


@pytest.mark.parametrize("url", ["https://[::1/certificates/web/v1", "https://[not-v6]/certificates/web/v1"])
def test_a_bad_ipv6_literal_in_the_object_url_names_data_id(url):
    raw = {"id": "e1", "eventType": NEW_VERSION, "data": {"Id": url, "ObjectName": "web"}}
    with pytest.raises(EventError, match=r"event e1: data.Id .* is not a URL") as caught:
        parse_event(raw, "event e1")
    assert "\n" not in str(caught.value)


def test_lone_surrogates_become_replacement_characters_so_every_store_can_encode_them():
    text = '{"id": "e\\ud800", "eventType": "t", "subject": "\\udc80web", "data": {"ObjectName": "a\\udfffb"}}'
    event = parse_event_json(text, "event.json")[0]
    assert (event.event_id, event.subject, event.name) == ("e\ufffd", "\ufffdweb", "a\ufffdb")
    json.dumps(event.to_dict(), ensure_ascii=False).encode("utf-8")  # would raise UnicodeEncodeError before
    pair = parse_event_json('{"id": "\\ud83d\\ude00", "eventType": "t"}', "event.json")[0]
    assert pair.event_id == "😀"  # a pair is one code point, kept
