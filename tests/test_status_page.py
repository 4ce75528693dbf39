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
import urllib.parse
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
from shared.notify.status_page import (
    CONTENT_SECURITY_POLICY,
    PAGE_SIZE,
    RECONCILE_FUNCTION,
    PageQuery,
    QueryError,
    render_status_page,
)
from shared.reconciliation.snapshot import SNAPSHOT_SCHEMA
from shared.remediation.discovery import InventoryRecord
from tests.fleet import fleet_snapshots
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


def table_rows(page: Node) -> list[Node]:
    """The certificate table's body rows."""
    found = page.all("table", "list")
    return found[0].one("tbody").all("tr") if found else []


def listed(page: Node) -> list[str]:
    """The names in the certificate table, in its order."""
    return [words(r.one("th")) for r in table_rows(page)]


def row(page: Node, name: str) -> dict[str, str]:
    """One table row by certificate name: column header -> cell text."""
    heads = [words(h) for h in page.one("table", "list").one("thead").all("th")]
    shown = next(r for r in table_rows(page) if words(r.one("th")) == name)
    cells = [c for c in shown.children if isinstance(c, Node)]
    return {h.rstrip(" ▲▼"): words(c) for h, c in zip(heads, cells, strict=True)}


def selected(data: list[dict], name: str, now: dt.datetime = ANCHOR, **query: object) -> Node:
    """The page with certificate `name` (of `data`) selected: its card."""
    vault = next(s.get("vault", "") for s in data if s["certificate"] == name)
    page = dom(render_status_page(data, now, query=PageQuery(certificate=f"{vault}/{name}", **query)))  # type: ignore[arg-type]
    return page.one("section", "cert")


def facts(shown: Node) -> dict[str, str]:
    return {words(d.one("dt")): words(d.one("dd")) for d in shown.one("dl", "facts").all("div")}


def certs_heading(page: Node) -> Node:
    return next(h for h in page.all("h2") if h.attrs.get("id") == "certs-h")


def query_of(href: str) -> dict[str, str]:
    assert href.startswith("?"), href
    return dict(urllib.parse.parse_qsl(href[1:], strict_parsing=bool(href[1:])))


def assert_inert(page: Node) -> None:
    """Nothing that runs or loads: no script, embedded content, event handlers, outside URLs or keys; the
    one form submits by GET to the page itself."""
    for node in page.iter():
        assert node.tag not in {"script", "img", "iframe", "object", "embed", "marquee", "base"}, node.tag
        for name, value in node.attrs.items():
            assert not name.startswith("on"), (node.tag, name)
            assert name not in {"src", "srcset", "style", "action", "formaction"}, (node.tag, name)
            if name == "href":
                assert value.startswith(("#", "?")) or value == "data:,", value
                assert "code" not in (query_of(value) if value.startswith("?") else {}), value
        if node.tag == "form":
            assert node.attrs["method"] == "get"


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


def test_every_certificate_is_a_row_with_its_state_vault_issuer_expiry_servers_and_connectors():
    page = dom(render_status_page(snapshots(), ANCHOR))
    assert listed(page) == NAMES
    assert row(page, "exch-hybrid-smtp")["Servers"] == "EX01, EX02"
    relay = row(page, "exch-legacy-relay")
    assert relay["State"] == "CRITICAL" and relay["Expires"].startswith("expired 3 days ago")
    assert relay["Connectors"] == "unknown (no runbook inventory yet)"
    assert row(page, "autodiscover-web")["Issuer"] == "R11"
    assert row(page, "autodiscover-web")["Expires"] == "10 days left 2026-12-06"
    assert row(page, "exch-smtp-eu")["Connectors"] == "DRIFT from Key Vault"
    heading = next(h for h in page.all("h2") if h.attrs.get("id") == "certs-h")
    assert words(heading) == "Certificates (1–5 of 5)"
    assert not page.all("section", "cert")  # no card until one is selected
    assert "Timeline of" not in words(page)


def test_the_selected_certificate_shows_its_card_with_tls_name_status_servers_and_findings():
    data = snapshots()
    for snapshot_data in FIXTURE_DATA["snapshots"]:
        shown = selected(data, snapshot_data["certificate"])
        assert words(shown.one("h2")) == snapshot_data["certificate"]
        assert shown.one("code", "tls").text() == snapshot_data["tls_certificate_name"]
        assert facts(shown)["Assessment"] == snapshot_data["status"]
        assert words(shown.one("span", "badge")) == snapshot_data["attention"].upper()
        rows = shown.one("div", "servers").all("tr")[1:]
        assert [words(r.one("th")) for r in rows] == [s["server"] for s in snapshot_data["servers"]]
        found = [words(li) for li in shown.one("div", "findings").all("li")]
        assert len(found) == len(snapshot_data["findings"])
        assert all(f["summary"] in line for f, line in zip(snapshot_data["findings"], found, strict=True))
    smtp = selected(data, "exch-hybrid-smtp")
    outcomes = {words(r.one("th")): words(r.one("span", "chip")) for r in smtp.one("div", "servers").all("tr")[1:]}
    assert outcomes == {"EX01": "SUCCEEDED", "EX02": "FAILED"}
    assert "2026-11-25 22:43 UTC (9 h ago)" in words(smtp.one("div", "servers").all("tr")[2])
    assert words(selected(data, "exch-hybrid-edge").one("span", "days")) == "200 days left"
    assert facts(selected(data, "exch-smtp-eu"))["Connectors"] == "DRIFT from Key Vault"
    relay = selected(data, "exch-legacy-relay")
    assert facts(relay)["Thumbprint"] == "7B6A5F4E3D2C1B0A9F8E7D6C5B4A3F2E1D0C9B8A"
    relay_rows = [[words(c) for c in r.children if isinstance(c, Node)] for r in relay.one("div", "servers").all("tr")]
    assert relay_rows[0] == ["Server", "Outcome", "When", "Job"] and relay_rows[2] == ["EX02", "NEVER", "—", "—"]
    assert words(selected(data, "exch-hybrid-edge").one("div", "findings").one("p")) == "No findings."


def test_the_selected_certificates_timeline_marks_its_remediations_check_today_and_expiry():
    smtp = selected(snapshots(), "exch-hybrid-smtp")
    svg = smtp.one("svg", "timeline")
    assert words(svg.all("title")[0]) == "Timeline of exch-hybrid-smtp"
    events = {words(g.one("title")): g for g in svg.all("g", "event")}
    assert sorted(events) == [
        "EX01: SUCCEEDED 2026-11-25T22:41:09Z",
        "EX02: FAILED 2026-11-25T22:43:52Z",
        "checked 2026-11-26T06:00:12Z",
    ]
    shapes = {t.split(":")[0]: g.one(None, "shape").classes for t, g in events.items()}
    assert "s-ok" in shapes["EX01"] and "s-critical" in shapes["EX02"]
    xs = {t.split(":")[0].split(" ")[0]: _x(g.one(None, "shape")) for t, g in events.items()}
    today = float(svg.one("line", "today").attrs["x1"])
    expiry = float(svg.one("line", "expiry-line").attrs["x1"])
    assert xs["EX01"] <= xs["EX02"] <= xs["checked"] < today < expiry  # minutes apart on a 2-month axis
    far = selected([snapshot(not_after="2028-01-01T00:00:00Z")], "exch-hybrid-edge").one("svg", "timeline")
    assert far.one("text", "expired-label").attrs["text-anchor"] == "end"  # at the right edge, written leftwards
    assert words(svg.one("text", "expired-label")) == "expires 2027-01-06"


def _x(shape: Node) -> float:
    if shape.tag == "circle":
        return float(shape.attrs["cx"])
    if shape.tag == "rect":
        return float(shape.attrs["x"]) + 5
    return float(re.match(r"M([\d.]+) ", shape.attrs["d"]).group(1))  # the diamond's and triangle's apex


def test_rows_are_sorted_worst_first_then_soonest_expiry_then_name():
    shuffled = list(reversed(snapshots()))
    extra = snapshot(certificate="aaa-also-ok", not_after="2027-06-14T23:59:59Z")  # same expiry as edge
    unknown = snapshot(certificate="zzz-unknown", attention="surprise", not_after="2027-12-01T00:00:00Z")
    page = dom(render_status_page([*shuffled, extra, unknown], ANCHOR))
    assert listed(page) == [*NAMES[:4], "zzz-unknown", "aaa-also-ok", NAMES[4]]
    assert row(page, "zzz-unknown")["State"] == "UNKNOWN"


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("name", ["autodiscover-web", "exch-hybrid-edge", "exch-hybrid-smtp", "exch-legacy-relay", "exch-smtp-eu"]),
        ("-name", ["exch-smtp-eu", "exch-legacy-relay", "exch-hybrid-smtp", "exch-hybrid-edge", "autodiscover-web"]),
        ("expiry", ["exch-legacy-relay", "autodiscover-web", "exch-hybrid-smtp", "exch-smtp-eu", "exch-hybrid-edge"]),
        ("-attention", list(reversed(NAMES))),
    ],
)
def test_sort_orders_the_table_by_a_column_either_way(sort, expected):
    page = dom(render_status_page(snapshots(), ANCHOR, query=PageQuery.parse({"sort": sort})))
    assert listed(page) == expected


def test_sort_by_issuer_vault_and_server_ties_by_name():
    data = [
        snapshot(certificate="c", vault="v2", tls_certificate_name="<I>CN=B CA<S>CN=c", servers=[]),
        snapshot(
            certificate="a",
            vault="v1",
            tls_certificate_name="<I>CN=B CA<S>CN=a",
            servers=[{"server": "EX09", "outcome": "succeeded", "at": None, "job_id": None}],
        ),
        snapshot(
            certificate="b",
            vault="v3",
            tls_certificate_name="no issuer here",
            servers=[{"server": "EX01", "outcome": "succeeded", "at": None, "job_id": None}],
        ),
    ]
    order = {
        s: listed(dom(render_status_page(data, ANCHOR, query=PageQuery.parse({"sort": s}))))
        for s in ("issuer", "vault", "server")
    }
    assert order == {"issuer": ["b", "a", "c"], "vault": ["a", "c", "b"], "server": ["b", "a", "c"]}


def test_the_search_finds_name_issuer_thumbprint_and_servers_from_the_inventory():
    def found(q: str, inventories=()) -> list[str]:
        return listed(dom(render_status_page(snapshots(), ANCHOR, query=PageQuery(q=q), inventories=inventories)))

    assert found("SMTP") == ["exch-hybrid-smtp", "exch-smtp-eu"]  # case-insensitive, in the name
    assert found("let's encrypt") == ["autodiscover-web"]  # in the issuer
    assert found("7b6a5f4e") == ["exch-legacy-relay"]  # in the thumbprint
    assert found("EX02") == ["exch-legacy-relay", "exch-hybrid-smtp", "exch-hybrid-edge"]  # a remediation target
    edge = FIXTURE_DATA["snapshots"][0]["thumbprint"]
    record = InventoryRecord(
        "hrw-exchange",
        ANCHOR,
        ANCHOR,
        {
            "certificates": [
                {"Server": "EXEDGE7", "Thumbprint": edge.lower()},
                {"Server": "", "Thumbprint": "AB"},
                "not a certificate",
            ],
            "errors": [],
        },
    )
    assert found("exedge7", [record]) == ["exch-hybrid-edge"]  # deployed there, says the inventory
    page = dom(render_status_page(snapshots(), ANCHOR, inventories=[record]))
    assert row(page, "exch-hybrid-edge")["Servers"] == "EX01, EX02, EXEDGE7"
    assert found("EXEDGE7", "inventory table unreadable") == []
    nothing = dom(render_status_page(snapshots(), ANCHOR, query=PageQuery(q="no such thing")))
    assert words(nothing.one("p", "none")).startswith("No certificate matches.") and not table_rows(nothing)
    assert "none of 5 match" in words(certs_heading(nothing))


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"state": "critical"}, ["exch-legacy-relay", "exch-hybrid-smtp"]),
        ({"state": "WARNING", "expires": "30"}, ["autodiscover-web"]),
        ({"expires": "expired"}, ["exch-legacy-relay"]),
        ({"expires": "7"}, ["exch-legacy-relay"]),
        ({"expires": "90"}, ["exch-legacy-relay", "exch-hybrid-smtp", "autodiscover-web", "exch-smtp-eu"]),
        ({"expires": "unknown"}, []),
        ({"state": "ok", "q": "edge"}, ["exch-hybrid-edge"]),
    ],
)
def test_state_and_expiry_filters_narrow_the_table(params, expected):
    page = dom(render_status_page(snapshots(), ANCHOR, query=PageQuery.parse(params)))
    assert listed(page) == expected


def test_an_unknown_expiry_is_its_own_filter():
    data = [snapshot(certificate="nowhen", not_after=None, days_left=None), snapshot()]
    page = dom(render_status_page(data, ANCHOR, query=PageQuery.parse({"expires": "unknown"})))
    assert listed(page) == ["nowhen"]
    assert "1 certificate of unknown expiry" in words(page.one("ul", "legend"))


def test_pages_of_100_with_links_that_keep_the_query_and_never_the_key():
    data = fleet_snapshots(250, ANCHOR)
    first = dom(render_status_page(data, ANCHOR))
    assert len(table_rows(first)) == PAGE_SIZE == 100
    pager = first.one("nav", "pager")
    assert [words(a) for a in pager.all("a")] == ["1", "2", "3", "next ›"]
    assert pager.all("a")[0].attrs["aria-current"] == "page"
    query = PageQuery.parse({"q": "mail-0", "sort": "-expiry", "state": "ok", "page": "2"})
    second = dom(render_status_page(data, ANCHOR, query=query))
    links = {words(a): query_of(a.attrs["href"]) for a in second.one("nav", "pager").all("a")}
    assert links["‹ previous"] == {"q": "mail-0", "sort": "-expiry", "state": "ok"}
    matching = int(re.search(r"of (\d+) matching", words(certs_heading(second))).group(1))
    assert len(table_rows(second)) == min(PAGE_SIZE, matching - PAGE_SIZE)
    everything = [n for p in (1, 2, 3) for n in listed(dom(render_status_page(data, ANCHOR, query=PageQuery(page=p))))]
    assert len(everything) == len(set(everything)) == 250
    last = dom(render_status_page(data, ANCHOR, query=PageQuery(page=3)))
    assert len(table_rows(last)) == 50 and "next ›" not in words(last.one("nav", "pager"))
    # the columns' headers sort, and say which way; a certificate link keeps the page it was on
    heads = {words(th).rstrip(" ▲▼"): th for th in second.one("table", "list").one("thead").all("th")}
    assert heads["Expires"].attrs["aria-sort"] == "descending"
    assert query_of(heads["Expires"].one("a").attrs["href"]) == {"q": "mail-0", "state": "ok", "sort": "expiry"}
    assert query_of(heads["Vault"].one("a").attrs["href"]) == {"q": "mail-0", "state": "ok", "sort": "vault"}
    name = listed(second)[0]
    link = query_of(table_rows(second)[0].one("th").one("a").attrs["href"])
    assert link["page"] == "2" and link["certificate"].endswith("/" + name)
    assert_inert(second)


def test_the_pager_skips_to_first_and_last_with_a_gap():
    data = fleet_snapshots(1000, ANCHOR)
    page = dom(render_status_page(data, ANCHOR, query=PageQuery(page=5)))
    assert [words(a) for a in page.one("nav", "pager").all(None) if a.tag in ("a", "span")] == [
        "‹ previous",
        "1",
        "…",
        "3",
        "4",
        "5",
        "6",
        "7",
        "…",
        "10",
        "next ›",
    ]


def test_the_form_submits_the_query_back_to_the_page_with_the_current_values():
    page = dom(
        render_status_page(snapshots(), ANCHOR, query=PageQuery.parse({"q": '"><x', "state": "ok", "sort": "-name"}))
    )
    form = page.one("form", "filters")
    assert form.attrs["method"] == "get" and "action" not in form.attrs
    assert form.one("input").attrs["value"] == '"><x' and form.one("input").attrs["name"] == "q"
    chosen = {
        s.attrs["name"]: [o.attrs["value"] for o in s.all("option") if "selected" in o.attrs]
        for s in form.all("select")
    }
    assert chosen == {"state": ["ok"], "expires": [""], "sort": ["-name"]}
    assert words(form.one("button")) == "Show"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"state": "bad"}, "state='bad': use one of critical, warning, unknown, ok (or leave it empty for all)"),
        ({"expires": "soon"}, "expires='soon': use one of expired, 7, 30, 90, unknown (or leave it empty for all)"),
        (
            {"sort": "colour"},
            "sort='colour': use one of attention, name, vault, issuer, expiry, server, with a leading - to reverse",
        ),
        ({"page": "0"}, "page='0': use a page number from 1"),
        ({"page": "two"}, "page='two': use a page number from 1"),
        ({"page": "١"}, "page='١': use a page number from 1"),
        ({"q": "x" * 201}, "q: 201 characters; search with at most 200"),
        ({"certificate": "no-vault"}, "certificate='no-vault': name it as vault/name, as the table's links do"),
        (
            {"colour": "red"},
            "colour: not a parameter of the status page; use format, q, state, expires, sort, page, certificate",
        ),
    ],
)
def test_every_parameter_is_validated_with_one_line_naming_it(params, message):
    with pytest.raises(QueryError) as caught:
        PageQuery.parse(params)
    assert str(caught.value) == message and caught.value.status == 400


def test_a_page_past_the_last_and_an_unknown_certificate_are_refused():
    with pytest.raises(QueryError, match=r"^page=2: past the last page, 1 \(of 100 each\); use 1 to 1$"):
        render_status_page(snapshots(), ANCHOR, query=PageQuery(page=2))
    with pytest.raises(QueryError, match=r"^certificate='kv/nope': no status snapshot") as caught:
        render_status_page(snapshots(), ANCHOR, query=PageQuery(certificate="kv/nope"))
    assert caught.value.status == 404


def test_the_summary_counts_certificates_by_attention():
    page = dom(render_status_page(snapshots(), ANCHOR))
    tiles = [words(t) for t in page.one("ul", "tiles").all("li")]
    assert tiles == ["2 CRITICAL", "2 WARNING", "1 OK"]  # no UNKNOWN tile when there are none
    assert words(page.one("p", "headline")) == "2 certificates need action now."
    assert words(page.one("head").one("title")).startswith("2 critical, 2 warning")
    meta = [(words(d.one("dt")), words(d.one("dd"))) for d in page.one("dl", "meta").all("div")]
    assert meta == [("Generated", "2026-11-26 08:00 UTC"), ("Oldest check", "2026-11-26 06:00 UTC (2 h ago)")]
    assert not page.all(None, "banner")
    # the counts are the fleet's, whatever the table shows
    filtered = dom(render_status_page(snapshots(), ANCHOR, query=PageQuery(state="ok")))
    assert [words(t) for t in filtered.one("ul", "tiles").all("li")] == tiles

    calm = dom(render_status_page([snapshot()], ANCHOR))
    assert words(calm.one("p", "headline")) == "All 1 certificate is OK."
    assert words(calm.one("head").one("title")).startswith("all OK")
    assert [words(t) for t in calm.one("ul", "tiles").all("li")] == ["0 CRITICAL", "0 WARNING", "1 OK"]
    assert [t.classes >= {"quiet"} for t in calm.one("ul", "tiles").all("li")] == [True, True, False]
    picked = dom(render_status_page([snapshot()], ANCHOR, query=PageQuery(certificate="contoso-kv/exch-hybrid-edge")))
    assert words(picked.one("head").one("title")).startswith("exch-hybrid-edge · all OK")


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
    later = ANCHOR + dt.timedelta(days=5)
    page = dom(render_status_page(snapshots(), later))
    assert row(page, "autodiscover-web")["Expires"].startswith("5 days left")
    assert row(page, "exch-legacy-relay")["Expires"].startswith("expired 8 days ago")
    hours = dom(render_status_page([snapshot(not_after="2026-11-26T13:30:00Z")], ANCHOR))
    assert row(hours, "exch-hybrid-edge")["Expires"].startswith("expires in 5 h")
    assert words(selected(snapshots(), "autodiscover-web", later).one("span", "days")) == "5 days left"


def fleet_bars(page: Node) -> dict[str, dict[str, int]]:
    """The fleet picture's bars: tooltip week -> {what: count}, read from each segment's title."""
    found: dict[str, dict[str, int]] = {}
    for seg in page.one("svg", "fleet").all("rect", "seg"):
        when, _, what = words(seg.one("title")).partition(": ")
        count, _, kind = what.partition(" ")
        found.setdefault(when, {})[kind] = int(count)
    return found


def test_the_fleet_picture_counts_expiries_per_week_by_state_and_renewals_by_outcome():
    page = dom(render_status_page(snapshots(), ANCHOR))  # ANCHOR is Thursday 2026-11-26
    svg = page.one("svg", "fleet")
    assert svg.attrs["role"] == "img" and words(svg.all("title")[0]) == "Expiries and renewals per week"
    assert fleet_bars(page) == {
        "before the week of 2026-09-28": {"SUCCEEDED": 2},
        "the week of 2026-11-02": {"SUCCEEDED": 2},
        "the week of 2026-11-09": {"SUCCEEDED": 1, "ROLLED BACK": 1},
        # Monday 23rd: exch-legacy-relay expired; EX01 and EX02 of exch-hybrid-smtp on Wednesday 25th
        "the week of 2026-11-23": {"CRITICAL expiring": 1, "SUCCEEDED": 1, "FAILED": 1},
        "the week of 2026-11-30": {"WARNING expiring": 1},  # autodiscover-web, Sunday 6 December
        "the week of 2027-01-04": {"CRITICAL expiring": 1},
        "the week of 2027-02-08": {"WARNING expiring": 1},
        "after the week of 2027-05-17": {"OK expiring": 1},
    }
    today = float(svg.one("line", "today").attrs["x1"])
    this_week = next(r for r in svg.all("rect", "seg") if words(r.one("title")).startswith("the week of 2026-11-23"))
    assert float(this_week.attrs["x"]) < today < float(this_week.attrs["x"]) + float(this_week.attrs["width"])
    # stacked: the renewals below the line, succeeded then failed downwards
    week = [s for s in svg.all("rect", "seg") if words(s.one("title")).startswith("the week of 2026-11-23")]
    assert [sorted(s.classes) for s in week] == [
        ["s-critical", "seg"],
        ["renewal", "s-ok", "seg"],
        ["renewal", "s-critical", "seg"],
    ]
    assert float(week[0].attrs["y"]) < float(week[1].attrs["y"]) < float(week[2].attrs["y"])
    labels = [words(t) for t in svg.all("text", "tick-label")]
    assert labels[0] == "earlier" and "this week" in labels and labels[-2:] == ["later", "today"]
    legend = [words(li) for li in page.one("ul", "legend").all("li")]
    assert legend[:4] == ["CRITICAL", "WARNING", "UNKNOWN", "OK"] and "renewal SUCCEEDED" in legend


def test_the_fleet_picture_keeps_long_ago_and_far_ahead_in_its_end_bars():
    data = [snapshot(certificate=f"c{n}", not_after="2029-01-01T00:00:00Z") for n in range(30)]
    data.append(snapshot(certificate="old", not_after="2025-01-01T00:00:00Z"))
    data.append(snapshot(certificate="soon", not_after="2026-12-01T00:00:00Z"))
    bars = fleet_bars(dom(render_status_page(data, ANCHOR)))
    assert bars["before the week of 2026-09-28"]["OK expiring"] == 1
    assert bars["after the week of 2027-05-17"] == {"OK expiring": 30}
    svg = dom(render_status_page(data, ANCHOR)).one("svg", "fleet")
    tallest = max(float(r.attrs["height"]) for r in svg.all("rect", "seg"))
    assert tallest <= 150  # the end bar is cut at the top of the picture; its count says 30
    assert "30" in [words(t) for t in svg.all("text", "count")]


def test_colour_is_never_the_only_signal():
    page = dom(render_status_page(snapshots(), ANCHOR))
    for shown in table_rows(page):
        state = next(c for c in shown.classes if c.startswith("s-"))[2:]
        assert words(shown.one("span", "badge")) == state.upper()
    for seg in page.one("svg", "fleet").all("rect", "seg"):
        assert re.search(r"\d+ [A-Z ]+", words(seg.one("title")))
    smtp = selected(snapshots(), "exch-hybrid-smtp")
    for chip in smtp.all("span", "chip") + smtp.all("span", "sev"):
        assert words(chip).isupper() and words(chip)


def test_dark_mode_follows_the_system_and_the_page_uses_its_colours_everywhere():
    page = dom(render_status_page(snapshots(), ANCHOR))
    css = page.one("style").text()
    dark = css[css.index("@media (prefers-color-scheme:dark)") :]
    assert "--page:#0f1216" in dark and "--card:#181c22" in dark and "--ink:#e6e8eb" in dark
    assert "#fff}" not in css.replace("color:#fff}", "")  # backgrounds come from --card, not a fixed white
    assert next(m for m in page.all("meta") if m.attrs.get("name") == "color-scheme").attrs["content"] == "light dark"


HOSTILE_NAME = '"><img src=x onerror=alert(1)>'
HOSTILE_SUBJECT = "<I>CN=Evil CA<S>CN=<script>alert(1)</script>"
HOSTILE_VAULT = "<iframe src=//evil.example>"


def hostile_snapshots() -> list[dict]:
    data = snapshot(
        certificate=HOSTILE_NAME,
        vault=HOSTILE_VAULT,
        tls_certificate_name=HOSTILE_SUBJECT,
        status="<svg onload=alert(2)>",
        thumbprint="' onmouseover='alert(3)",
        version="</code><marquee>v</marquee>",
        attention="critical",
    )
    data["servers"] = [
        {"server": "<b onclick=alert(4)>EX01</b>", "outcome": "failed", "at": "2026-11-20T00:00:00Z", "job_id": '"x'}
    ]
    data["findings"] = [
        {"code": "<i>x</i>", "severity": "<critical>", "summary": "</li></ul><script>alert(5)</script>"}
    ]
    return [data]


def test_values_from_certificates_and_tags_render_as_text_never_as_markup():
    query = PageQuery(certificate=f"{HOSTILE_VAULT}/{HOSTILE_NAME}", q='"><script>')
    document = render_status_page(hostile_snapshots(), ANCHOR, query=query)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in document
    page = dom(document)
    assert_inert(page)
    assert [b.text() for b in page.all("b")] == [HOSTILE_VAULT]  # only the page's own <b> (around the vault)
    assert listed(page) == []  # the search matched nothing: the card still shows
    shown = page.one("section", "cert")
    assert words(shown.one("h2")) == HOSTILE_NAME
    assert shown.one("code", "tls").text() == HOSTILE_SUBJECT
    assert facts(shown)["Assessment"] == "<svg onload=alert(2)>"
    assert words(shown.one("div", "servers").all("tr")[1].one("th")) == "<b onclick=alert(4)>EX01</b>"
    assert "</li></ul><script>alert(5)</script>" in words(shown.one("div", "findings"))
    assert words(shown.one("svg", "timeline").all("title")[0]) == f"Timeline of {HOSTILE_NAME}"
    assert page.one("form").one("input").attrs["value"] == '"><script>'
    table = dom(render_status_page(hostile_snapshots(), ANCHOR))
    assert listed(table) == [HOSTILE_NAME] and row(table, HOSTILE_NAME)["Vault"] == HOSTILE_VAULT
    link = query_of(table_rows(table)[0].one("th").one("a").attrs["href"])
    assert link == {"certificate": f"{HOSTILE_VAULT}/{HOSTILE_NAME}"}  # URL-encoded, then read back whole
    assert_inert(table)


def test_snapshots_read_leniently_show_what_they_can():
    odd = [
        {"schema": SNAPSHOT_SCHEMA, "certificate": "bare"},
        {"schema": "certsync.status/9", "certificate": "future", "attention": "ok", "servers": "nope", "findings": [1]},
        snapshot(certificate="bad-times", not_after="soon", checked_at="yesterday", days_left="x", truncated=True),
    ]
    data = [*odd, "not a snapshot", None]
    page = dom(render_status_page(data, ANCHOR))  # type: ignore[arg-type]
    assert [row(page, n)["State"] for n in listed(page)] == ["UNKNOWN", "UNKNOWN", "OK"]
    assert row(page, "bare")["Expires"] == "expiry unknown" and row(page, "bare")["Issuer"] == "unknown"
    assert row(page, "bare")["Servers"] == "none"
    future = selected(odd, "future")
    assert "snapshot schema certsync.status/9 is not certsync.status/1" in words(future.one("div", "findings"))
    bare = selected(odd, "bare")
    assert words(bare.one("code", "tls")) == "unknown"
    assert "No servers recorded." in words(bare)
    assert "Connectors" not in facts(bare)  # written by reconciliation, but not in every snapshot
    assert facts(selected(odd, "bad-times"))["Note"].startswith("shortened to fit storage")
    assert facts(selected(odd, "bad-times"))["Checked"] == "unknown"


def test_the_empty_state_says_reconciliation_has_not_run_and_how_to_run_it():
    page = dom(render_status_page([], ANCHOR))
    empty = page.one("section", "empty")
    text = words(empty)
    assert words(empty.one("h2")) == "Reconciliation has not run yet"
    assert "RECONCILE_SCHEDULE" in text and "Test/Run" in text and "/admin/functions/reconcile_daily" in text
    assert not page.all("svg") and not table_rows(page)
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
    assert listed(page) == NAMES
    assert row(page, "autodiscover-web")["Expires"].startswith("10 days left")


def test_the_function_reads_the_query_string(stored):
    page = dom(get({"state": "critical", "certificate": "contoso-kv/exch-hybrid-smtp"}).get_body().decode())
    assert listed(page) == ["exch-legacy-relay", "exch-hybrid-smtp"]
    assert words(page.one("section", "cert").one("h2")) == "exch-hybrid-smtp"


def test_format_json_returns_the_page_of_snapshots_worst_first(stored):
    response = get({"format": "json"})
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    body = json.loads(response.get_body())
    assert [s["certificate"] for s in body["snapshots"]] == NAMES
    assert sorted(body["snapshots"], key=lambda s: s["certificate"]) == sorted(stored, key=lambda s: s["certificate"])
    assert parse_time(body["generated_at"]) <= dt.datetime.now(dt.timezone.utc)
    assert (body["total"], body["matching"], body["page"], body["pages"], body["page_size"]) == (5, 5, 1, 1, 100)
    narrowed = json.loads(get({"format": "json", "q": "smtp", "sort": "-name"}).get_body())
    assert [s["certificate"] for s in narrowed["snapshots"]] == ["exch-smtp-eu", "exch-hybrid-smtp"]
    assert narrowed["matching"] == 2
    one = json.loads(get({"format": "json", "certificate": "contoso-kv/autodiscover-web"}).get_body())
    assert [s["certificate"] for s in one["snapshots"]] == ["autodiscover-web"]


def test_format_json_pages_a_large_fleet(monkeypatch):
    data = fleet_snapshots(230, dt.datetime.now(dt.timezone.utc))
    monkeypatch.setattr(shared.wiring, "azure_snapshots", lambda: data)
    monkeypatch.setattr(shared.wiring, "azure_inventories", lambda: [])
    pages = [json.loads(get({"format": "json", "page": str(n)}).get_body()) for n in (1, 2, 3)]
    assert [len(p["snapshots"]) for p in pages] == [100, 100, 30] and pages[0]["pages"] == 3
    assert len({s["certificate"] for p in pages for s in p["snapshots"]}) == 230


def test_a_function_key_in_the_url_is_refused_before_anything_is_read(monkeypatch):
    def unread() -> list:
        raise AssertionError("the snapshots were read")

    monkeypatch.setattr(shared.wiring, "azure_snapshots", unread)
    response = get({"code": "not-a-real-key"})
    assert response.status_code == 400 and dict(response.headers) == EXPECTED_HEADERS
    page = dom(response.get_body().decode())
    assert_inert(page)
    text = words(page.one("p", "error"))
    assert text.startswith("code: the function key is in the URL") and "x-functions-key header" in text
    assert "not-a-real-key" not in response.get_body().decode()
    as_json = get({"format": "json", "code": "not-a-real-key"})
    assert as_json.status_code == 400 and json.loads(as_json.get_body())["error"].startswith("code: the function key")


@pytest.mark.parametrize(
    ("params", "status", "start"),
    [
        ({"state": "purple"}, 400, "state='purple': use one of"),
        ({"page": "9"}, 400, "page=9: past the last page, 1"),
        ({"certificate": "contoso-kv/nope"}, 404, "certificate='contoso-kv/nope': no status snapshot"),
    ],
)
def test_a_query_the_page_cannot_answer_is_a_one_line_400_or_404_in_either_format(stored, params, status, start):
    response = get(params)
    assert response.status_code == status and dict(response.headers) == EXPECTED_HEADERS
    page = dom(response.get_body().decode())
    assert words(page.one("p", "error")).startswith(start)
    assert page.one("section", "empty").one("a").attrs["href"] == "?"
    assert_inert(page)
    as_json = get({**params, "format": "json"})
    assert as_json.status_code == status and json.loads(as_json.get_body())["error"].startswith(start)


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
    assert listed(page) == NAMES
    assert row(page, "autodiscover-web")["Expires"].startswith("10 days left")
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


def serve(server: HttpServer) -> None:
    """`/api/status` on the loopback server answered by the real function, from the request's query string."""

    def handler(method: str, path: str, headers: object, body: bytes) -> tuple[int, dict, bytes]:
        query = urllib.parse.urlsplit(path).query
        response = get(dict(urllib.parse.parse_qsl(query, keep_blank_values=True)))
        return response.status_code, dict(response.headers), response.get_body()

    server.route("/api/status", handler=handler)


def test_chromium_renders_the_table_and_the_selected_certificate(stored, chromium, http_server, tmp_path):
    serve(http_server)
    url = http_server.url("/api/status?certificate=contoso-kv%2Fexch-hybrid-smtp&sort=name")
    page = dom(run_chromium(chromium, tmp_path / "profile", "--dump-dom", url))
    assert listed(page) == sorted(NAMES)
    for data in stored:
        assert row(page, data["certificate"])["State"] == data["attention"].upper()
    shown = page.one("section", "cert")
    assert words(shown.one("h2")) == "exch-hybrid-smtp"
    assert shown.one("code", "tls").text() == stored[2]["tls_certificate_name"]
    assert words(shown.one("div", "servers").all("tr")[2].one("span", "chip")) == "FAILED"
    assert len(shown.one("svg", "timeline").all("g", "event")) == 3
    assert len(page.one("svg", "fleet").all("rect", "seg")) >= 5
    rows = inventory_rows(page)
    assert (rows["hrw-edge"][0], rows["hrw-exchange"][0]) == ("STALE", "CURRENT")
    assert "EX02: Get-ExchangeCertificate" in rows["hrw-exchange"][3]
    assert_inert(page)
    # it loaded nothing but the page itself (no favicon, fonts or anything else), and no key in any URL
    assert [(r.method, r.path) for r in http_server.requests] == [
        ("GET", "/api/status?certificate=contoso-kv%2Fexch-hybrid-smtp&sort=name")
    ]


@pytest.mark.parametrize("count", [10, 10_000])
def test_chromium_renders_a_fleet_a_page_at_a_time(count, chromium, http_server, tmp_path, monkeypatch):
    now = dt.datetime.now(dt.timezone.utc)
    data = fleet_snapshots(count, now)
    monkeypatch.setattr(shared.wiring, "azure_snapshots", lambda: data)
    monkeypatch.setattr(shared.wiring, "azure_inventories", lambda: [])
    serve(http_server)
    page = dom(run_chromium(chromium, tmp_path / "profile", "--dump-dom", http_server.url("/api/status")))
    assert sum(int(words(t).split()[0]) for t in page.one("ul", "tiles").all("li")) == count
    assert len(table_rows(page)) == min(count, PAGE_SIZE)
    assert words(certs_heading(page)) == f"Certificates (1–{min(count, PAGE_SIZE)} of {count:,})"
    states = [row(page, n)["State"] for n in listed(page)]
    assert states == sorted(states, key=["CRITICAL", "WARNING", "UNKNOWN", "OK"].index)
    expiring = sum(
        int(words(s.one("title")).rsplit(": ", 1)[1].split()[0])
        for s in page.one("svg", "fleet").all("rect", "seg")
        if words(s.one("title")).endswith("expiring")
    )
    assert expiring == count  # every certificate is in the picture, whatever page the table is on
    assert_inert(page)
    if count == PAGE_SIZE * 100:
        assert [words(a) for a in page.one("nav", "pager").all("a")] == ["1", "2", "3", "100", "next ›"]
        url = http_server.url("/api/status?q=EX07&expires=90&sort=-expiry&page=2")
        second = dom(run_chromium(chromium, tmp_path / "profile2", "--dump-dom", url))
        shown = listed(second)
        assert 0 < len(shown) <= PAGE_SIZE
        by_name = {s["certificate"]: s for s in data}
        assert all(any(o["server"] == "EX07" for o in by_name[n]["servers"]) for n in shown)
        after = [parse_time(by_name[n]["not_after"]) for n in shown]
        assert after == sorted(after, reverse=True) and max(after) < now + dt.timedelta(days=90)
        shot = tmp_path / "status-10k.png"
        run_chromium(
            chromium,
            tmp_path / "profile3",
            f"--screenshot={shot}",
            "--window-size=1280,1600",
            http_server.url("/api/status"),
        )
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copyfile(shot, ARTIFACTS / "status-page-10k.png")  # for reviewers to open
        colours = colour_counts(shot)
        for hex_colour in ("f3f4f6", "b3261e", "f0a202", "1b6e35"):
            assert colours.get(bytes.fromhex(hex_colour), 0) > 200, f"#{hex_colour} is (almost) missing"
    else:
        assert not page.all("nav", "pager")


def test_chromium_keeps_hostile_values_as_text(chromium, http_server, tmp_path, monkeypatch):
    monkeypatch.setattr(shared.wiring, "azure_snapshots", hostile_snapshots)
    monkeypatch.setattr(shared.wiring, "azure_inventories", lambda: [])
    serve(http_server)
    query = urllib.parse.urlencode({"certificate": f"{HOSTILE_VAULT}/{HOSTILE_NAME}"})
    page = dom(run_chromium(chromium, tmp_path / "profile", "--dump-dom", http_server.url("/api/status?" + query)))
    assert_inert(page)
    assert listed(page) == [HOSTILE_NAME]
    shown = page.one("section", "cert")
    assert words(shown.one("h2")) == HOSTILE_NAME
    assert shown.one("code", "tls").text() == HOSTILE_SUBJECT
    assert len(page.all("svg")) == 2  # the fleet picture and the certificate's timeline, none injected


def colour_counts(shot: Path) -> dict[bytes, int]:
    width, height, pixels = decode_png(shot.read_bytes())
    assert (width, height) == (1280, 1600)
    colours: dict[bytes, int] = {}
    for line in pixels:
        for x in range(0, len(line), 3):
            colour = line[x : x + 3]
            colours[colour] = colours.get(colour, 0) + 1
    assert len(colours) > 50, "the screenshot is (nearly) a single colour"
    return colours


def test_chromium_screenshot_is_a_full_coloured_png(stored, chromium, http_server, tmp_path):
    serve(http_server)
    shot = tmp_path / "status-page.png"
    url = http_server.url("/api/status?certificate=contoso-kv%2Fexch-hybrid-smtp")
    run_chromium(chromium, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,1600", url)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "status-page.png")  # for reviewers to open
    colours = colour_counts(shot)
    # the page's own colours, so its inline CSS was applied under the CSP: page, critical, warning, ok
    for hex_colour in ("f3f4f6", "b3261e", "f0a202", "1b6e35"):
        assert colours.get(bytes.fromhex(hex_colour), 0) > 200, f"#{hex_colour} is (almost) missing"
    assert colours.get(bytes.fromhex("0f1216"), 0) == 0  # not dark


def test_chromium_in_dark_mode_draws_the_dark_palette(stored, chromium, http_server, tmp_path):
    serve(http_server)
    shot = tmp_path / "status-dark.png"
    run_chromium(
        chromium,
        tmp_path / "profile",
        "--force-dark-mode",
        f"--screenshot={shot}",
        "--window-size=1280,1600",
        http_server.url("/api/status"),
    )
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "status-page-dark.png")
    colours = colour_counts(shot)
    for hex_colour in ("0f1216", "181c22", "ff6b60", "3fb868"):  # page, card, critical, ok
        assert colours.get(bytes.fromhex(hex_colour), 0) > 200, f"#{hex_colour} is (almost) missing"
    assert colours.get(bytes.fromhex("f3f4f6"), 0) == 0


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


def test_the_selected_certificate_lists_the_last_jobs_proof_per_server():
    data = snapshots()
    smtp = next(s for s in data if s["certificate"] == "exch-hybrid-smtp")
    smtp["proof"] = [
        {"server": "EX01", "check": "restart-transport", "target": "MSExchangeFrontEndTransport", "outcome": "done"},
        {"server": "EX01", "check": "probe-receive-connector", "target": "ex01.corp.contoso.com:25", "outcome": "done"},
        {
            "server": "EX02",
            "check": "probe-receive-connector",
            "target": "ex02:25",
            "outcome": "failed",
            "message": "<old>",
        },
        {"server": "EX01", "check": "test-outbound", "target": "Outbound to Office 365", "outcome": "skipped"},
    ]
    shown = selected(data, "exch-hybrid-smtp")
    rows = [[words(c) for c in r.children if isinstance(c, Node)] for r in shown.one("div", "proof").all("tr")]
    assert rows == [
        ["Server", "Check", "Target", "Outcome"],
        ["EX01", "transport restart", "MSExchangeFrontEndTransport", "PROVEN"],
        ["EX01", "STARTTLS probe", "ex01.corp.contoso.com:25", "PROVEN"],
        ["EX02", "STARTTLS probe", "ex02:25", "FAILED"],
        ["EX01", "mail to Exchange Online", "Outbound to Office 365", "SKIPPED"],
    ]
    assert "&lt;old&gt;" in render_status_page(
        data, ANCHOR, query=PageQuery(certificate=f"{smtp['vault']}/exch-hybrid-smtp")
    )
    assert selected(data, "exch-hybrid-edge").all("div", "proof") == []  # no proof: no list


def test_the_selected_certificate_shows_the_issuers_its_next_renewal_may_bring():
    forecast = {
        "ca": "Let's Encrypt",
        "as_of": "2026-12-03",
        "issuer_strings": ["<I>CN=YR1, O=Let's Encrypt, C=US", "<I>CN=YR2, O=Let's Encrypt, C=US"],
        "note": "the only generation since Generation X was retired in July 2026",
    }
    data = [snapshot(forecast=forecast)]
    name, vault = data[0]["certificate"], data[0]["vault"]
    page = dom(render_status_page(data, ANCHOR, query=PageQuery(certificate=f"{vault}/{name}")))
    shown = page.one("div", "forecast")
    assert "Let's Encrypt may issue it from one of these" in shown.text()
    assert [c.text() for c in shown.all("code")] == forecast["issuer_strings"]
    assert "retired in July 2026" in shown.text()
    bare = dom(
        render_status_page([snapshot(forecast="nonsense")], ANCHOR, query=PageQuery(certificate=f"{vault}/{name}"))
    )
    assert "no forecast" in bare.one("div", "forecast").text()


def test_the_timeline_draws_the_certificate_s_own_warning_and_critical_windows():
    data = [snapshot(expiry_windows=[6.75, 2.25])]  # a 45-day certificate
    name, vault = data[0]["certificate"], data[0]["vault"]
    page = render_status_page(data, ANCHOR, query=PageQuery(certificate=f"{vault}/{name}"))
    assert "(6.75 and 2.25 days before expiry, by its lifetime)" in page
    older = render_status_page([snapshot(expiry_windows="x")], ANCHOR, query=PageQuery(certificate=f"{vault}/{name}"))
    assert "(30 and 7 days before expiry, by its lifetime)" in older
