"""The status page: its HTML (structure, order, escaping, empty and stale states), the HTTP function
that serves it (headers, JSON, 503, binding), and the page as real headless Chromium renders it from a
real loopback HTTP server, DOM and screenshot. The screenshot is kept at .artifacts/status-page.png
for reviewers to open."""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import azure.functions as func
import pytest

import functions.status
import shared.wiring
from functions.status import status_page
from shared.errors import CertsyncError
from shared.notify.status_page import CONTENT_SECURITY_POLICY, RECONCILE_FUNCTION, render_status_page
from shared.reconciliation.snapshot import SNAPSHOT_SCHEMA
from shared.remediation.discovery import InventoryRecord
from tests.servers import HttpServer
from tests.test_function_app import FUNCTIONS

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "status" / "snapshots.json"
ARTIFACTS = ROOT / ".artifacts"
CHROMIUM = "/usr/bin/chromium"
NAMES = ["exch-legacy-relay", "exch-hybrid-smtp", "autodiscover-web", "exch-smtp-eu", "exch-hybrid-edge"]


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


FIXTURE_DATA = json.loads(FIXTURE.read_text())
ANCHOR = parse_time(FIXTURE_DATA["now"])  # the fixture's times are written as seen at this moment


def snapshots(now: dt.datetime = ANCHOR) -> list[dict]:
    """The fixture's snapshots with every time moved so that `now` sits where the fixture's "now" does."""
    shift = now - ANCHOR
    moved = copy.deepcopy(FIXTURE_DATA["snapshots"])
    for snapshot in moved:
        for item in [snapshot, *snapshot["servers"]]:
            for key in ("not_after", "checked_at", "at"):
                if item.get(key):
                    item[key] = (parse_time(item[key]) + shift).strftime("%Y-%m-%dT%H:%M:%SZ")
    return moved


def snapshot(**changes: object) -> dict:
    base = copy.deepcopy(FIXTURE_DATA["snapshots"][0])  # exch-hybrid-edge, ok
    return base | changes


# --- a small DOM from html.parser ----------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter()

    def all(self, tag: str | None = None, cls: str | None = None) -> list[Node]:
        return [n for n in self.iter() if (tag is None or n.tag == tag) and (cls is None or cls in n.classes)]

    def one(self, tag: str | None = None, cls: str | None = None) -> Node:
        found = self.all(tag, cls)
        assert len(found) == 1, (tag, cls, len(found))
        return found[0]


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def dom(document: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(document)
    builder.close()
    return builder.root


def words(node: Node) -> str:
    return re.sub(r"\s+", " ", node.text()).strip()


def cards(page: Node) -> list[Node]:
    return page.all("li", "cert")


def card(page: Node, name: str) -> Node:
    return next(c for c in cards(page) if words(c.one("h3")) == name)


def facts(shown: Node) -> dict[str, str]:
    return {words(d.one("dt")): words(d.one("dd")) for d in shown.one("dl", "facts").all("div")}


def markers(page: Node) -> list[Node]:
    return page.one("svg", "timeline").all("g", "marker")


def marker_x(marker: Node) -> float:
    shape = marker.one(None, "shape")
    if shape.tag == "circle":
        return float(shape.attrs["cx"])
    return float(re.match(r"M([\d.]+) ", shape.attrs["d"]).group(1))  # the diamond's and triangle's apex


def assert_inert(page: Node) -> None:
    """Nothing that runs or loads: no script, embedded content, event handlers, or outside URLs."""
    for node in page.iter():
        assert node.tag not in {"script", "img", "iframe", "object", "embed", "marquee", "form", "base"}, node.tag
        for name, value in node.attrs.items():
            assert not name.startswith("on"), (node.tag, name)
            assert name not in {"src", "srcset", "style", "action"}, (node.tag, name)
            if name == "href":
                assert value.startswith("#") or value == "data:,", value


# --- the page ------------------------------------------------------------------------------------


def test_the_page_is_one_self_contained_document_under_a_strict_csp():
    document = render_status_page(snapshots(), ANCHOR)
    page = dom(document)
    csp = next(m for m in page.all("meta") if m.attrs.get("http-equiv") == "Content-Security-Policy")
    assert csp.attrs["content"] == CONTENT_SECURITY_POLICY
    assert CONTENT_SECURITY_POLICY.startswith("default-src 'none'; style-src 'unsafe-inline'; img-src data:")
    assert_inert(page)
    assert page.one("link").attrs == {"rel": "icon", "href": "data:,"}  # no favicon request to the Function
    css = page.one("style").text()
    assert "url(" not in css and "@import" not in css
    assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", document)
    assert page.one("html").attrs["lang"] == "en"
    assert "viewport" in {m.attrs.get("name") for m in page.all("meta")}


def test_every_certificate_shows_its_name_tls_certificate_name_status_expiry_servers_and_findings():
    page = dom(render_status_page(snapshots(), ANCHOR))
    assert [words(c.one("h3")) for c in cards(page)] == NAMES
    for data in FIXTURE_DATA["snapshots"]:
        shown = card(page, data["certificate"])
        assert shown.one("code", "tls").text() == data["tls_certificate_name"]
        assert facts(shown)["Assessment"] == data["status"]
        assert words(shown.one("span", "badge")) == data["attention"].upper()
        assert data["vault"] in words(shown.one("span", "vault"))
        rows = shown.all("tr")[1:]
        assert [words(r.one("th")) for r in rows] == [s["server"] for s in data["servers"]]
        found = [words(li) for li in shown.one("div", "findings").all("li")]
        assert [f["summary"] in line for f, line in zip(data["findings"], found, strict=False)] == [True] * len(
            data["findings"]
        )
        assert len(found) == len(data["findings"])
    smtp = card(page, "exch-hybrid-smtp")
    outcomes = {words(r.one("th")): words(r.one("span", "chip")) for r in smtp.all("tr")[1:]}
    assert outcomes == {"EX01": "SUCCEEDED", "EX02": "FAILED"}
    assert "2026-11-25 22:43 UTC (9 h ago)" in words(smtp.all("tr")[2])
    assert words(card(page, "exch-legacy-relay").one("span", "days")) == "expired 3 days ago"
    assert words(card(page, "autodiscover-web").one("span", "days")) == "10 days left"
    assert words(card(page, "exch-hybrid-edge").one("span", "days")) == "200 days left"
    assert facts(card(page, "exch-smtp-eu"))["Connectors"] == "DRIFT from Key Vault"
    assert facts(card(page, "exch-hybrid-edge"))["Connectors"] == "in step with Key Vault"
    assert facts(card(page, "exch-legacy-relay"))["Connectors"] == "unknown (no runbook inventory yet)"
    assert facts(card(page, "exch-legacy-relay"))["Thumbprint"] == "7B6A5F4E3D2C1B0A9F8E7D6C5B4A3F2E1D0C9B8A"
    relay_rows = [
        [words(cell) for cell in r.children if isinstance(cell, Node)]
        for r in card(page, "exch-legacy-relay").all("tr")
    ]
    assert relay_rows[0] == ["Server", "Outcome", "When", "Job"]
    assert relay_rows[2] == ["EX02", "NEVER", "—", "—"]
    assert words(card(page, "exch-hybrid-edge").one("div", "findings").one("p")) == "No findings."


def test_cards_are_sorted_worst_first_then_soonest_expiry_then_name():
    shuffled = list(reversed(snapshots()))
    extra = snapshot(certificate="aaa-also-ok", not_after="2027-06-14T23:59:59Z")  # same expiry as edge
    unknown = snapshot(certificate="zzz-unknown", attention="surprise", not_after="2027-12-01T00:00:00Z")
    page = dom(render_status_page([*shuffled, extra, unknown], ANCHOR))
    assert [words(c.one("h3")) for c in cards(page)] == [*NAMES[:4], "zzz-unknown", "aaa-also-ok", NAMES[4]]
    assert words(card(page, "zzz-unknown").one("span", "badge")) == "UNKNOWN"


def test_the_summary_counts_certificates_by_attention():
    page = dom(render_status_page(snapshots(), ANCHOR))
    tiles = [words(t) for t in page.one("ul", "tiles").all("li")]
    assert tiles == ["2 CRITICAL", "2 WARNING", "1 OK"]  # no UNKNOWN tile when there are none
    assert words(page.one("p", "headline")) == "2 certificates need action now."
    assert words(page.one("head").one("title")).startswith("2 critical, 2 warning")
    meta = [(words(d.one("dt")), words(d.one("dd"))) for d in page.one("dl", "meta").all("div")]
    assert meta == [("Generated", "2026-11-26 08:00 UTC"), ("Oldest check", "2026-11-26 06:00 UTC (2 h ago)")]
    assert not page.all(None, "banner")

    calm = dom(render_status_page([snapshot()], ANCHOR))
    assert words(calm.one("p", "headline")) == "All 1 certificate is OK."
    assert [words(t) for t in calm.one("ul", "tiles").all("li")] == ["0 CRITICAL", "0 WARNING", "1 OK"]
    assert [t.classes >= {"quiet"} for t in calm.one("ul", "tiles").all("li")] == [True, True, False]


@pytest.mark.parametrize(
    ("hours_later", "stale"),
    [(0, False), (23, False), (25, True), (24 * 9, True)],  # the oldest check is 2 h before ANCHOR
)
def test_data_older_than_26_hours_is_flagged_stale(hours_later, stale):
    page = dom(render_status_page(snapshots(), ANCHOR + dt.timedelta(hours=hours_later)))
    banners = page.all("p", "banner")
    assert bool(banners) == stale
    if stale:
        assert banners[0].attrs["role"] == "alert"
        text = words(banners[0])
        assert text.startswith("STALE DATA: the oldest snapshot was checked ")
        assert "RECONCILE_SCHEDULE" in text and "reconcile_daily function" in text


def test_a_snapshot_without_a_check_time_makes_the_data_stale():
    page = dom(render_status_page([snapshot(checked_at=None)], ANCHOR))
    assert "some snapshots carry no valid check time" in words(page.one("p", "banner"))


def test_days_to_expiry_count_from_the_page_time_not_from_the_check():
    page = dom(render_status_page(snapshots(), ANCHOR + dt.timedelta(days=5)))
    assert words(card(page, "autodiscover-web").one("span", "days")) == "5 days left"
    assert words(card(page, "exch-legacy-relay").one("span", "days")) == "expired 8 days ago"
    hours = dom(render_status_page([snapshot(not_after="2026-11-26T13:30:00Z")], ANCHOR))
    assert words(hours.one("span", "days")) == "expires in 5 h"


def test_the_timeline_has_one_marker_per_certificate_coloured_and_shaped_by_state():
    page = dom(render_status_page(snapshots(), ANCHOR))
    svg = page.one("svg", "timeline")
    assert svg.attrs["role"] == "img" and svg.all("title")[0].text() == "Expiry timeline"
    found = markers(page)
    assert sorted(m.attrs["data-certificate"] for m in found) == sorted(NAMES)
    by_name = {m.attrs["data-certificate"]: m for m in found}
    shapes = {name: (m.one(None, "shape").tag, m.classes - {"marker"}) for name, m in by_name.items()}
    assert shapes["exch-legacy-relay"] == ("path", {"s-critical"})
    assert shapes["autodiscover-web"] == ("path", {"s-warning"})
    assert shapes["exch-hybrid-edge"] == ("circle", {"s-ok"})
    for name, m in by_name.items():
        assert words(m.one("text")).startswith(name + " · ")
        assert m.one("title").text().startswith(name)
    # on the axis, in order of expiry; the expired one left of "today"
    today = float(svg.one("line", "today").attrs["x1"])
    xs = {name: marker_x(m) for name, m in by_name.items()}
    assert xs["exch-legacy-relay"] < today
    ordered = ["autodiscover-web", "exch-hybrid-smtp", "exch-smtp-eu", "exch-hybrid-edge"]
    assert [xs[n] for n in ordered] == sorted(xs[n] for n in ordered) and xs["autodiscover-web"] > today
    labels = [words(t) for t in svg.all("text", "tick-label")]
    assert labels[:2] == ["EXPIRED", "today"] and "90 d" in labels and "180 d" in labels
    assert "365 d" not in labels  # the axis ends at the furthest expiry (200 days)


def test_the_timeline_spans_at_least_90_and_at_most_400_days():
    near = dom(render_status_page([snapshot(not_after="2026-12-20T00:00:00Z")], ANCHOR))
    labels = [words(t) for t in near.one("svg", "timeline").all("text", "tick-label")]
    assert labels[-1] == "90 d" and "7 d" in labels
    far = [snapshot(not_after="2029-01-01T00:00:00Z"), snapshot(certificate="b", not_after="2027-01-01T00:00:00Z")]
    page = dom(render_status_page(far, ANCHOR))
    svg = page.one("svg", "timeline")
    assert [words(t) for t in svg.all("text", "tick-label")][-1] == "365 d"
    right_edge = max(float(line.attrs["x1"]) for line in svg.all("line", "tick"))
    xs = {m.attrs["data-certificate"]: marker_x(m) for m in markers(page)}
    assert xs["exch-hybrid-edge"] > right_edge  # pinned at the end of the 400-day axis
    assert "766 d" in words(svg)  # but labelled with its real distance


def test_colour_is_never_the_only_signal():
    page = dom(render_status_page(snapshots(), ANCHOR))
    for shown in cards(page):
        state = next(c for c in shown.classes if c.startswith("s-"))[2:]
        assert words(shown.one("span", "badge")) == state.upper()
    legend = [words(li) for li in page.one("ul", "legend").all("li")]
    assert legend[:4] == ["CRITICAL", "WARNING", "UNKNOWN", "OK"]
    for chip in page.all("span", "chip") + page.all("span", "sev"):
        assert words(chip).isupper() and words(chip)


HOSTILE_NAME = '"><img src=x onerror=alert(1)>'
HOSTILE_SUBJECT = "<I>CN=Evil CA<S>CN=<script>alert(1)</script>"


def hostile_snapshots() -> list[dict]:
    data = snapshot(
        certificate=HOSTILE_NAME,
        vault="<iframe src=//evil.example>",
        tls_certificate_name=HOSTILE_SUBJECT,
        status="<svg onload=alert(2)>",
        thumbprint="' onmouseover='alert(3)",
        version="</code><marquee>v</marquee>",
        attention="critical",
    )
    data["servers"] = [{"server": "<b onclick=alert(4)>EX01</b>", "outcome": "failed", "at": None, "job_id": '"x'}]
    data["findings"] = [
        {"code": "<i>x</i>", "severity": "<critical>", "summary": "</li></ul><script>alert(5)</script>"}
    ]
    return [data]


def test_values_from_certificates_and_tags_render_as_text_never_as_markup():
    document = render_status_page(hostile_snapshots(), ANCHOR)
    page = dom(document)
    assert_inert(page)
    assert not page.all("b", None)[1:]  # only the page's own <b> (around the vault name)
    assert page.one("b").text() == "<iframe src=//evil.example>"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in document
    shown = cards(page)[0]
    assert words(shown.one("h3")) == HOSTILE_NAME
    assert shown.one("code", "tls").text() == HOSTILE_SUBJECT
    assert facts(shown)["Assessment"] == "<svg onload=alert(2)>"
    assert words(shown.all("tr")[0].all("th")[0]) == "Server"
    assert words(shown.all("tr")[1].one("th")) == "<b onclick=alert(4)>EX01</b>"
    assert "</li></ul><script>alert(5)</script>" in words(shown.one("div", "findings"))
    assert markers(page)[0].attrs["data-certificate"] == HOSTILE_NAME
    assert words(markers(page)[0].one("text")).startswith(HOSTILE_NAME)
    assert page.all("svg")[0].all("title")[0].text() == "Expiry timeline"


def test_snapshots_read_leniently_show_what_they_can():
    odd = [
        {"schema": SNAPSHOT_SCHEMA, "certificate": "bare"},
        {"schema": "certsync.status/9", "certificate": "future", "attention": "ok", "servers": "nope", "findings": [1]},
        snapshot(certificate="bad-times", not_after="soon", checked_at="yesterday", days_left="x", truncated=True),
    ]
    page = dom(render_status_page([*odd, "not a snapshot", None], ANCHOR))
    assert [words(c.one("span", "badge")) for c in cards(page)] == ["UNKNOWN", "UNKNOWN", "OK"]
    future = card(page, "future")
    assert "snapshot schema certsync.status/9 is not certsync.status/1" in words(future.one("div", "findings"))
    assert words(card(page, "bare").one("span", "days")) == "expiry unknown"
    assert words(card(page, "bare").one("code", "tls")) == "unknown"
    assert "No servers recorded." in words(card(page, "bare"))
    assert len(markers(page)) == 3
    assert "Connectors" not in facts(card(page, "bare"))  # written by reconciliation, but not in every snapshot
    assert facts(card(page, "bad-times"))["Note"].startswith("shortened to fit storage")
    assert facts(card(page, "bad-times"))["Checked"] == "unknown"


def test_the_empty_state_says_reconciliation_has_not_run_and_how_to_run_it():
    page = dom(render_status_page([], ANCHOR))
    empty = page.one("section", "empty")
    text = words(empty)
    assert words(empty.one("h2")) == "Reconciliation has not run yet"
    assert "RECONCILE_SCHEDULE" in text and "Test/Run" in text and "/admin/functions/reconcile_daily" in text
    assert not page.all("svg") and not cards(page)
    assert words(page.one("p", "headline")) == "No status yet."
    assert_inert(page)


# --- the inventories -----------------------------------------------------------------------------


def inventories(now: dt.datetime) -> list[InventoryRecord]:
    """Two worker groups: one read an hour ago with a server it could not read, one read two days ago."""
    errors = [{"where": "EX02", "message": "Get-ExchangeCertificate: The RPC server is <unavailable>."}]
    return [
        InventoryRecord("hrw-edge", now - dt.timedelta(days=2), now, {"servers": [], "errors": []}),
        InventoryRecord("hrw-exchange", now - dt.timedelta(hours=1), now, {"servers": [], "errors": errors}),
    ]


def inventory_rows(page) -> dict[str, list[str]]:
    section = next(s for s in page.all("section") if s.attrs.get("aria-labelledby") == "inv-h")
    return {words(r.one("th")): [words(c) for c in r.all("td")] for r in section.one("tbody").all("tr")}


def test_each_worker_groups_inventory_shows_its_age_its_errors_and_stale_past_the_max_age():
    page = dom(render_status_page(snapshots(), ANCHOR, inventories=inventories(ANCHOR), max_age=dt.timedelta(hours=24)))
    rows = inventory_rows(page)
    assert rows["hrw-exchange"][0] == "CURRENT" and "(60 min ago)" in rows["hrw-exchange"][1]
    assert rows["hrw-exchange"][3].startswith(
        "1 NOT READ EX02: Get-ExchangeCertificate: The RPC server is <unavailable>."
    )
    assert rows["hrw-edge"][0] == "STALE" and "(2 days ago)" in rows["hrw-edge"][1] and rows["hrw-edge"][3] == "none"
    wider = render_status_page([], ANCHOR, inventories=inventories(ANCHOR), max_age=dt.timedelta(hours=72))
    assert inventory_rows(dom(wider))["hrw-edge"][0] == "CURRENT"
    assert_inert(page)


def test_inventories_that_cannot_be_read_are_said_so_and_the_page_still_serves(monkeypatch):
    def unreadable() -> list:
        raise CertsyncError("inventory table certsyncinventory: 403 AuthorizationPermissionMismatch")

    monkeypatch.setattr(shared.wiring, "azure_snapshots", lambda: snapshots(dt.datetime.now(dt.timezone.utc)))
    monkeypatch.setattr(shared.wiring, "azure_inventories", unreadable)
    response = get()
    assert response.status_code == 200
    assert "the inventories could not be read: inventory table certsyncinventory: 403" in response.get_body().decode()
    as_json = json.loads(get({"format": "json"}).get_body())
    assert as_json["inventories_error"].startswith("inventory table certsyncinventory")


def test_format_json_carries_each_inventorys_age_and_staleness(stored):
    as_json = json.loads(get({"format": "json"}).get_body())
    by_group = {i["worker_group"]: i for i in as_json["inventories"]}
    assert by_group["hrw-edge"]["stale"] is True and by_group["hrw-edge"]["age_hours"] == pytest.approx(48, abs=0.2)
    assert by_group["hrw-exchange"]["stale"] is False and by_group["hrw-exchange"]["errors"][0]["where"] == "EX02"


# --- the function --------------------------------------------------------------------------------

EXPECTED_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY + "; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def get(params: dict[str, str] | None = None) -> func.HttpResponse:
    request = func.HttpRequest("GET", "/api/status", headers={}, params=params or {}, body=b"")
    return status_page(request)


@pytest.fixture
def stored(monkeypatch) -> list[dict]:
    """`shared.wiring.azure_snapshots` answering with the fixture (times moved to the real now)."""
    data = snapshots(dt.datetime.now(dt.timezone.utc))
    monkeypatch.setattr(shared.wiring, "azure_snapshots", lambda: copy.deepcopy(data))
    monkeypatch.setattr(shared.wiring, "azure_inventories", lambda: inventories(dt.datetime.now(dt.timezone.utc)))
    return data


def test_the_binding_is_a_function_key_get_route_named_status():
    function = next(f for f in FUNCTIONS if f.get_function_name() == "status_page")
    bindings = json.loads(function.get_function_json())["bindings"]
    assert next(b for b in bindings if b["direction"] == "IN") == {
        "direction": "IN",
        "type": "httpTrigger",
        "name": "req",
        "methods": ["GET"],
        "authLevel": "FUNCTION",
        "route": "status",
    }


def test_the_pages_name_the_reconciliation_function_the_app_really_has():
    function = next(f for f in FUNCTIONS if f.get_function_name() == RECONCILE_FUNCTION)
    assert json.loads(function.get_function_json())["bindings"][0]["type"] == "timerTrigger"


def test_the_function_serves_the_page_with_security_headers(stored):
    response = get()
    assert response.status_code == 200
    assert dict(response.headers) == EXPECTED_HEADERS
    page = dom(response.get_body().decode())
    assert [words(c.one("h3")) for c in cards(page)] == NAMES
    assert words(card(page, "autodiscover-web").one("span", "days")) == "10 days left"


def test_format_json_returns_the_snapshots_worst_first(stored):
    response = get({"format": "json"})
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    body = json.loads(response.get_body())
    assert [s["certificate"] for s in body["snapshots"]] == NAMES
    assert sorted(body["snapshots"], key=lambda s: s["certificate"]) == sorted(stored, key=lambda s: s["certificate"])
    assert parse_time(body["generated_at"]) <= dt.datetime.now(dt.timezone.utc)


def test_an_unknown_format_is_a_400(stored):
    response = get({"format": "xml"})
    assert response.status_code == 400
    assert json.loads(response.get_body()) == {"error": "format='xml': use format=html (the default) or format=json"}


def test_unreachable_storage_is_a_503_page_naming_the_setting(monkeypatch):
    def broken() -> list[dict]:
        raise CertsyncError("JobsStorage is not set; set it to the <storage> connection string")

    monkeypatch.setattr(shared.wiring, "azure_snapshots", broken)
    response = get()
    assert response.status_code == 503
    assert dict(response.headers) == EXPECTED_HEADERS
    page = dom(response.get_body().decode())
    assert_inert(page)
    text = words(page.one("section", "empty"))
    assert "JobsStorage is not set; set it to the <storage> connection string" in text
    assert "STATE_TABLE" in text
    as_json = get({"format": "json"})
    assert as_json.status_code == 503
    assert json.loads(as_json.get_body())["error"].startswith("JobsStorage is not set")


@pytest.fixture
def state_table(monkeypatch) -> Iterator[str]:
    """The app settings of a fresh STATE_TABLE in Azurite, with the wiring's cached store dropped around
    the test. Yields the table's name."""
    table = "statuspage" + uuid.uuid4().hex[:12]
    monkeypatch.setenv("STATE_TABLE", table)
    monkeypatch.setenv("INVENTORY_TABLE", "inv" + uuid.uuid4().hex[:12])
    shared.wiring.azure_state_store.cache_clear()
    shared.wiring.azure_inventory_store.cache_clear()
    yield table
    shared.wiring.azure_state_store.cache_clear()
    shared.wiring.azure_inventory_store.cache_clear()


def test_on_azurite_the_page_shows_what_reconciliation_stored(azurite, state_table, monkeypatch):
    monkeypatch.setenv("JobsStorage", azurite.connection_string)
    store = shared.wiring.state_store_from_env(os.environ)
    for data in snapshots(dt.datetime.now(dt.timezone.utc)):
        store.put_snapshot(data)
    response = get()
    assert response.status_code == 200
    page = dom(response.get_body().decode())
    assert [words(c.one("h3")) for c in cards(page)] == NAMES
    assert words(card(page, "autodiscover-web").one("span", "days")) == "10 days left"
    assert not page.all("p", "banner")
    as_json = json.loads(get({"format": "json"}).get_body())
    assert [s["certificate"] for s in as_json["snapshots"]] == NAMES


def test_on_azurite_before_the_first_run_the_page_says_so(azurite, state_table, monkeypatch):
    monkeypatch.setenv("JobsStorage", azurite.connection_string)
    response = get()
    assert response.status_code == 200
    page = dom(response.get_body().decode())
    assert words(page.one("section", "empty").one("h2")) == "Reconciliation has not run yet"
    assert "No inventory yet" in words(page.one("p", "muted"))


def test_without_the_storage_setting_the_page_is_a_503_naming_it(state_table, monkeypatch):
    for name in [n for n in os.environ if n.lower().startswith("jobsstorage")]:
        monkeypatch.delenv(name)
    response = get()
    assert response.status_code == 503
    text = words(dom(response.get_body().decode()).one("section", "empty"))
    assert "JobsStorage is not set: define JobsStorage" in text


def test_the_module_imports_no_azure_sdk_and_reads_snapshots_at_call_time():
    assert not hasattr(functions.status, "azure_snapshots")  # looked up on shared.wiring per request
    probe = "import sys, functions.status; print(sorted(m for m in sys.modules if m.startswith(('azure.core', 'azure.data', 'azure.storage', 'shared.'))))"  # noqa: E501
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --- in real headless Chromium -------------------------------------------------------------------


@pytest.fixture
def chromium() -> str:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"{CHROMIUM} is missing: the status page is tested in Debian's headless Chromium; "
            "`make test` installs it (apt-get install chromium)",
            pytrace=False,
        )
    return CHROMIUM


def run_chromium(binary: str, profile: Path, *arguments: str) -> str:
    """Run headless Chromium once with a fresh profile; its whole process group dies on a timeout."""
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-proxy-server",  # straight to 127.0.0.1, whatever proxy the environment names
        f"--user-data-dir={profile}",
        *arguments,
    ]
    env = {**os.environ, "HOME": str(profile)}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True, text=True
    )
    try:
        stdout, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"chromium did not finish within 120 s: {' '.join(command)}")
    finally:
        with contextlib.suppress(ProcessLookupError):  # helpers it left behind are in its own process group
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, f"chromium exited with {process.returncode}:\n{stderr[-3000:]}"
    return stdout


def serve(server: HttpServer, response: func.HttpResponse) -> str:
    server.route("/api/status", body=response.get_body(), status=response.status_code, headers=dict(response.headers))
    return server.url("/api/status?code=not-a-real-key")


def test_chromium_renders_every_certificate_and_the_timeline(stored, chromium, http_server, tmp_path):
    url = serve(http_server, get())
    page = dom(run_chromium(chromium, tmp_path / "profile", "--dump-dom", url))
    assert [words(c.one("h3")) for c in cards(page)] == NAMES
    for data in stored:
        assert card(page, data["certificate"]).one("code", "tls").text() == data["tls_certificate_name"]
    assert [words(b) for b in page.all("span", "badge")].count("CRITICAL") == 2
    assert words(card(page, "exch-hybrid-smtp").all("tr")[2].one("span", "chip")) == "FAILED"
    assert words(card(page, "exch-smtp-eu").one("div", "findings").one("li")).startswith("WARNING drift EXEU02")
    svg = page.one("svg", "timeline")
    assert sorted(m.attrs["data-certificate"] for m in markers(page)) == sorted(NAMES)
    assert len(svg.all(None, "shape")) == len(NAMES)
    rows = inventory_rows(page)
    assert (rows["hrw-edge"][0], rows["hrw-exchange"][0]) == ("STALE", "CURRENT")
    assert "EX02: Get-ExchangeCertificate" in rows["hrw-exchange"][3]
    assert_inert(page)
    # it loaded nothing but the page itself (no favicon, fonts or anything else)
    assert [(r.method, r.path) for r in http_server.requests] == [("GET", "/api/status?code=not-a-real-key")]


def test_chromium_keeps_hostile_values_as_text(chromium, http_server, tmp_path, monkeypatch):
    monkeypatch.setattr(shared.wiring, "azure_snapshots", hostile_snapshots)
    url = serve(http_server, get())
    page = dom(run_chromium(chromium, tmp_path / "profile", "--dump-dom", url))
    assert_inert(page)
    shown = cards(page)[0]
    assert words(shown.one("h3")) == HOSTILE_NAME
    assert shown.one("code", "tls").text() == HOSTILE_SUBJECT
    assert len(page.all("svg")) == 1 + 4  # the timeline and the legend's four shapes, none injected


def test_chromium_screenshot_is_a_full_coloured_png(stored, chromium, http_server, tmp_path):
    url = serve(http_server, get())
    shot = tmp_path / "status-page.png"
    run_chromium(chromium, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,1600", url)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "status-page.png")  # for reviewers to open
    width, height, pixels = decode_png(shot.read_bytes())
    assert (width, height) == (1280, 1600)
    colours = {}
    for row in pixels:
        for x in range(0, len(row), 3):
            colour = row[x : x + 3]
            colours[colour] = colours.get(colour, 0) + 1
    assert len(colours) > 50, "the screenshot is (nearly) a single colour"
    # the page's own colours, so its inline CSS was applied under the CSP: page, critical, warning, ok
    for hex_colour in ("f3f4f6", "b3261e", "f0a202", "1b6e35"):
        assert colours.get(bytes.fromhex(hex_colour), 0) > 200, f"#{hex_colour} is (almost) missing"


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB rows of an 8-bit, non-interlaced RGB(A) PNG (stdlib only)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, chunks = 8, []
    header = b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        assert zlib.crc32(kind + body) == struct.unpack(">I", data[position + 8 + length : position + 12 + length])[0]
        position += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, (depth, colour_type, interlace)
    bpp = 3 if colour_type == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(b"".join(chunks))
    assert len(raw) == height * (stride + 1)
    previous = bytearray(stride)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:  # Sub
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif kind == 2:  # Up
            line = bytearray((a + b) & 255 for a, b in zip(line, previous, strict=True))
        elif kind == 3:  # Average
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 255
        elif kind == 4:  # Paeth
            for i in range(stride):
                a, c = (line[i - bpp], previous[i - bpp]) if i >= bpp else (0, 0)
                b = previous[i]
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        else:
            assert kind == 0, f"unknown PNG filter {kind}"
        rows.append(bytes(line if bpp == 3 else b"".join(line[i : i + 3] for i in range(0, stride, 4))))
        previous = line
    return width, height, rows
