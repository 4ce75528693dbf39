"""The read-only status page: the daily reconciliation's status snapshots (`certsync.status/1`), one per
certificate, as an HTML document an admin opens in a browser, fast at 10,000 certificates.

What needs attention shows at a glance: counts by attention and a stale-data warning at the top, then an
SVG picture of the fleet (expiries per week, coloured by state, and the renewals deployed per week), then
one table of the certificates, filtered, searched, sorted and paged on the server from the query string
(`PageQuery`: `?q=&state=&expires=&sort=&page=`, pages of `PAGE_SIZE`), then each Hybrid worker group's
Exchange inventory (discovery): when it was collected, what it could not read, STALE when older than
CERTSYNC_INVENTORY_MAX_AGE_HOURS. `?certificate=vault/name` adds that certificate's card above the
table: its TlsCertificateName, status, findings, last remediation on each server and its own timeline.
A certificate's servers are its remediation targets and, when an inventory exists, every server whose
Get-ExchangeCertificate lists its thumbprint. Colour is never the only signal: every state is also a
word (and in the pictures a marker shape or a tooltip). Light and dark (`prefers-color-scheme`).

The page runs no script and loads nothing: inline CSS and SVG only, under a Content-Security-Policy that
forbids everything else (its one form submits to the page itself, by GET). Its links carry the query
only, never the function key: the key goes in the `x-functions-key` header, and a request with `code` in
its query string is refused (README, "Status page"). Snapshot values come from certificates and Key
Vault tags, i.e. from whoever can write to the vault, so each one is HTML-escaped exactly where it is
written out (`_e`), and query values are URL-encoded (`PageQuery.href`). Rendering is linear in the
number of certificates (plus one sort) and writes out only the page asked for.

Pure: no Azure SDK and no azure.functions; `status_answer` is what `functions/status.py` serves.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import math
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from shared.errors import CertsyncError
from shared.pipeline.inventories import DEFAULT_MAX_AGE, InventoryRecord
from shared.reconciliation.snapshot import FINDING_SEVERITIES, SNAPSHOT_SCHEMA, SnapshotFinding, StatusSnapshot
from shared.times import format_time, parse_time

# The page's policy, in its <meta> and (with frame-ancestors, which only works as a header) in the response.
# form-action 'self': the filter form submits (GET) to the page itself and nowhere else.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'self'"
)
PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY + "; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    # Nothing on the page links out; a URL of the page carries nothing secret, but it is no one else's business.
    "Referrer-Policy": "no-referrer",
}

# Reconciliation runs daily; two hours of slack before its data is called stale.
STALE_AFTER = dt.timedelta(hours=26)
# Worst first: the order of the summary and of the default sort.
ATTENTIONS = ("critical", "warning", "unknown", "ok")
RECONCILE_FUNCTION = "reconcile_daily"  # the timer function in functions/reconcile.py

PAGE_SIZE = 100
MAX_PAGE = 100_000
MAX_SEARCH = 200  # characters of ?q=
# ?sort= (a leading "-" reverses): the table's columns.
SORTS = {
    "attention": "worst first",
    "name": "name",
    "vault": "vault",
    "issuer": "issuer",
    "expiry": "expiry",
    "server": "server",
}
# ?expires=: which certificates by expiry.
EXPIRES = {
    "expired": "already expired",
    "7": "within 7 days",
    "30": "within 30 days",
    "90": "within 90 days",
    "unknown": "expiry unknown",
}
PARAMETERS = ("format", "q", "state", "expires", "sort", "page", "certificate")
KEY_PARAMETER = "code"  # the Functions host's function key in a query string: refused here

# The fleet picture: weeks before and after this one, each a bar; earlier and later ones in an end bar.
WEEKS_BACK = 8
WEEKS_AHEAD = 26

_OUTCOMES = {
    "succeeded": ("ok", "SUCCEEDED"),
    "failed": ("critical", "FAILED"),
    "rolled-back": ("warning", "ROLLED BACK"),
    "pending": ("pending", "PENDING"),
    "never": ("unknown", "NEVER"),
}
_DRIFT = {
    "ok": ("in step with Key Vault", "good"),
    "drift": ("DRIFT from Key Vault", "bad"),
    "pending": ("job under way", "good"),
    "unknown": ("unknown (no runbook inventory yet)", "good"),
}


class QueryError(CertsyncError):
    """A query-string parameter the page cannot use; the one-line message names it and says what to do."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PageQuery:
    """What the query string asks for: search `q` (in name, vault, TlsCertificateName, thumbprint and
    servers), `state` (an attention), `expires` (an EXPIRES key), `sort` (a SORTS key, `descending`),
    `page` (from 1) and the selected `certificate` ("vault/name")."""

    q: str = ""
    state: str = ""
    expires: str = ""
    sort: str = "attention"
    descending: bool = False
    page: int = 1
    certificate: str = ""

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> PageQuery:
        """The query of `params` (format is the caller's); QueryError naming the first bad parameter."""
        if KEY_PARAMETER in params:
            raise QueryError(
                "code: the function key is in the URL, where browser history and proxy logs keep it; send it in "
                "the x-functions-key header instead (README, Status page), and rotate the key"
            )
        for name in params:
            if name not in PARAMETERS:
                raise QueryError(f"{name}: not a parameter of the status page; use {', '.join(PARAMETERS)}")
        q = " ".join(str(params.get("q") or "").split())
        if len(q) > MAX_SEARCH:
            raise QueryError(f"q: {len(q)} characters; search with at most {MAX_SEARCH}")
        state = str(params.get("state") or "").strip().lower()
        if state and state not in ATTENTIONS:
            raise QueryError(f"state={state!r}: use one of {', '.join(ATTENTIONS)} (or leave it empty for all)")
        expires = str(params.get("expires") or "").strip().lower()
        if expires and expires not in EXPIRES:
            raise QueryError(f"expires={expires!r}: use one of {', '.join(EXPIRES)} (or leave it empty for all)")
        sort = str(params.get("sort") or "attention").strip().lower()
        descending = sort.startswith("-")
        if sort.lstrip("-") not in SORTS:
            raise QueryError(f"sort={sort!r}: use one of {', '.join(SORTS)}, with a leading - to reverse")
        text = str(params.get("page") or "1").strip()
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_PAGE:
            raise QueryError(f"page={text[:20]!r}: use a page number from 1")
        certificate = str(params.get("certificate") or "").strip()
        if certificate and "/" not in certificate:
            raise QueryError(f"certificate={certificate[:100]!r}: name it as vault/name, as the table's links do")
        return cls(q, state, expires, sort.lstrip("-"), descending, int(text), certificate)

    @property
    def sort_value(self) -> str:
        return ("-" if self.descending else "") + self.sort

    def href(self, **changes: object) -> str:
        """A link to this page with `changes` (fields of PageQuery), carrying only what is not a default;
        HTML-escaped, ready for an attribute."""
        query = replace(self, **changes)  # type: ignore[arg-type]
        pairs = [
            ("q", query.q),
            ("state", query.state),
            ("expires", query.expires),
            ("sort", "" if query.sort_value == "attention" else query.sort_value),
            ("page", "" if query.page == 1 else str(query.page)),
            ("certificate", query.certificate),
        ]
        return _e("?" + urllib.parse.urlencode([(k, v) for k, v in pairs if v]))


@dataclass(frozen=True)
class ServerRemediation:
    server: str
    outcome: str
    at: dt.datetime | None
    job_id: str


@dataclass(frozen=True)
class ProofRow:
    """One proof step of the last job on one server (snapshot `proof`): a transport restart, a STARTTLS
    probe of a receive connector's binding, or a test of mail to Exchange Online."""

    server: str
    check: str
    target: str
    outcome: str
    message: str


@dataclass(frozen=True)
class CertificateStatus:
    """One snapshot, read leniently: it comes from Table storage, and a page that shows what it can
    beats one that fails. A missing or unknown attention is shown as "unknown"."""

    name: str
    vault: str
    version: str
    thumbprint: str
    tls_certificate_name: str
    status: str
    not_after: dt.datetime | None
    days_left: float | None  # relative to the page's `now`, not to checked_at
    attention: str
    checked_at: dt.datetime | None
    servers: tuple[ServerRemediation, ...]
    findings: tuple[SnapshotFinding, ...]
    drift: str = ""  # ok | drift | pending | unknown, when the snapshot says
    truncated: bool = False  # shortened to fit a Table property: some servers or findings left out
    deployed_on: tuple[str, ...] = ()  # servers whose inventory lists the thumbprint
    proof: tuple[ProofRow, ...] = ()  # the last job's proof steps, per server
    forecast_ca: str = ""  # the CA the next renewal comes from, when certsync's table knows it
    forecast: tuple[str, ...] = ()  # the `<I>` strings the next renewal may bring
    forecast_note: str = ""
    windows: tuple[float, float] = (30.0, 7.0)  # warning and critical, days before expiry (by its lifetime)
    snapshot: Mapping = field(default_factory=dict, repr=False, compare=False)  # as read, for JSON

    @classmethod
    def from_snapshot(
        cls, snapshot: Mapping[str, object], now: dt.datetime, deployed: Mapping[str, tuple[str, ...]] | None = None
    ) -> CertificateStatus:
        """The snapshot as seen at `now`; `deployed` maps an upper-case thumbprint to the servers that
        have it (`deployed_servers`)."""
        not_after = _when(snapshot.get("not_after"))
        checked_at = _when(snapshot.get("checked_at"))
        days_left: float | None
        if not_after is not None:
            days_left = (not_after - now).total_seconds() / 86400
        else:
            days_left = _number(snapshot.get("days_left"))
        attention = _text(snapshot.get("attention")).lower()
        findings = [
            SnapshotFinding(
                code=_text(f.get("code")), severity=_text(f.get("severity")).lower(), summary=_text(f.get("summary"))
            )
            for f in _dicts(snapshot.get("findings"))
        ]
        schema = _text(snapshot.get("schema"))
        if schema != SNAPSHOT_SCHEMA:
            attention = "unknown"
            findings.append(
                SnapshotFinding(
                    code="schema",
                    severity="warning",
                    summary=f"snapshot schema {schema or '(none)'} is not {SNAPSHOT_SCHEMA}",
                )
            )
        thumbprint = _text(snapshot.get("thumbprint"))
        return cls(
            name=_text(snapshot.get("certificate")) or "(unnamed certificate)",
            vault=_text(snapshot.get("vault")),
            version=_text(snapshot.get("version")),
            thumbprint=thumbprint,
            tls_certificate_name=_text(snapshot.get("tls_certificate_name")),
            status=_text(snapshot.get("status")),
            not_after=not_after,
            days_left=days_left,
            attention=attention if attention in ATTENTIONS else "unknown",
            checked_at=checked_at,
            servers=tuple(
                ServerRemediation(
                    _text(s.get("server")) or "(all)",
                    _text(s.get("outcome")).lower() or "never",
                    _when(s.get("at")),
                    _text(s.get("job_id")),
                )
                for s in _dicts(snapshot.get("servers"))
            ),
            findings=tuple(findings),
            drift=_text(snapshot.get("drift")).lower(),
            truncated=snapshot.get("truncated") is True,
            deployed_on=(deployed or {}).get(thumbprint.upper(), ()) if thumbprint else (),
            proof=tuple(
                ProofRow(
                    _text(p.get("server")) or "(all)",
                    _text(p.get("check")),
                    _text(p.get("target")),
                    _text(p.get("outcome")).lower() or "unknown",
                    _text(p.get("message")),
                )
                for p in _dicts(snapshot.get("proof"))
            ),
            forecast_ca=_text(_forecast_of(snapshot).get("ca")),
            forecast=tuple(_text(s) for s in _list(_forecast_of(snapshot).get("issuer_strings")) if _text(s)),
            forecast_note=_text(_forecast_of(snapshot).get("note")),
            windows=_windows(snapshot.get("expiry_windows")),
            snapshot=snapshot,
        )

    @property
    def key(self) -> str:
        """What ?certificate= names it by: vault/name."""
        return f"{self.vault}/{self.name}"

    @property
    def issuer(self) -> str:
        """The issuer part of the TlsCertificateName ("" when there is none)."""
        tls = self.tls_certificate_name
        return tls[3:].partition("<S>")[0] if tls.startswith("<I>") and "<S>" in tls else ""

    @functools.cached_property
    def server_names(self) -> tuple[str, ...]:
        """Its remediation targets and the servers the inventory finds it on, sorted, once each."""
        named = {s.server for s in self.servers if s.server != "(all)"} | set(self.deployed_on)
        return tuple(sorted(named, key=str.lower))

    @functools.cached_property
    def haystack(self) -> str:
        """What ?q= searches, folded."""
        fields = (self.name, self.vault, self.tls_certificate_name, self.thumbprint, *self.server_names)
        return "\n".join(fields).casefold()

    def sort_key(self) -> tuple:
        soonest = self.days_left if self.days_left is not None else math.inf
        return (ATTENTIONS.index(self.attention), soonest, self.name.lower(), self.vault.lower())


def _by(sort: str) -> Callable[[CertificateStatus], tuple]:
    """The key of a SORTS column; ties by name then vault."""
    if sort == "attention":
        return CertificateStatus.sort_key

    def key(c: CertificateStatus) -> tuple:
        tie = (c.name.lower(), c.vault.lower())
        if sort == "expiry":
            return (c.days_left if c.days_left is not None else math.inf, *tie)
        if sort == "issuer":
            return (c.issuer.lower(), *tie)
        if sort == "server":
            return (c.server_names[0].lower() if c.server_names else "\uffff", *tie)
        if sort == "vault":
            return (c.vault.lower(), c.name.lower())
        return tie

    return key


def deployed_servers(inventories: Sequence[InventoryRecord] | str) -> dict[str, tuple[str, ...]]:
    """Upper-case thumbprint -> the servers whose Get-ExchangeCertificate lists it, from every worker
    group's inventory (none when they could not be read)."""
    found: dict[str, set[str]] = {}
    if isinstance(inventories, str):
        return {}
    for record in inventories:
        for entry in _dicts(record.inventory.get("certificates")):
            thumbprint, server = _text(entry.get("Thumbprint")).upper(), _text(entry.get("Server"))
            if thumbprint and server:
                found.setdefault(thumbprint, set()).add(server)
    return {t: tuple(sorted(s, key=str.lower)) for t, s in found.items()}


def read_certificates(
    snapshots: Iterable[object], now: dt.datetime, inventories: Sequence[InventoryRecord] | str = ()
) -> list[CertificateStatus]:
    """Every snapshot (non-mappings skipped) as a CertificateStatus at `now`, worst first, then soonest."""
    now = _utc(now)
    deployed = deployed_servers(inventories)
    certificates = [CertificateStatus.from_snapshot(s, now, deployed) for s in snapshots if isinstance(s, Mapping)]
    certificates.sort(key=CertificateStatus.sort_key)
    return certificates


def _expires_in(days: float | None, expires: str) -> bool:
    if not expires:
        return True
    if expires == "unknown":
        return days is None
    if days is None:
        return False
    return days < 0 if expires == "expired" else days < int(expires)


def select(certificates: Sequence[CertificateStatus], query: PageQuery) -> list[CertificateStatus]:
    """The certificates `query` matches (state, expires, search), in its sort order; one pass and a sort."""
    needle = query.q.casefold()
    chosen = [
        c
        for c in certificates
        if (not query.state or c.attention == query.state)
        and _expires_in(c.days_left, query.expires)
        and (not needle or needle in c.haystack)
    ]
    if query.sort != "attention" or query.descending:
        chosen.sort(key=_by(query.sort), reverse=query.descending)
    return chosen


@dataclass(frozen=True)
class PageView:
    """One page of the table: `rows` of `matching` certificates (of `total`), page `page` of `pages`, and
    the `selected` certificate when ?certificate= names one."""

    query: PageQuery
    rows: list[CertificateStatus]
    matching: int
    total: int
    pages: int
    selected: CertificateStatus | None

    @property
    def first(self) -> int:
        """The 1-based position of the first row among the matching ones."""
        return (self.query.page - 1) * PAGE_SIZE + 1


def page_view(certificates: Sequence[CertificateStatus], query: PageQuery) -> PageView:
    """The page `query` asks for; QueryError (404) for a certificate that is not there, (400) for a page
    past the last."""
    chosen = select(certificates, query)
    pages = max(1, math.ceil(len(chosen) / PAGE_SIZE))
    if query.page > pages:
        raise QueryError(f"page={query.page}: past the last page, {pages} (of {PAGE_SIZE} each); use 1 to {pages}")
    selected = None
    if query.certificate:
        selected = next((c for c in certificates if c.key == query.certificate), None)
        if selected is None:
            raise QueryError(
                f"certificate={query.certificate[:100]!r}: no status snapshot of that vault/name; pick one from the "
                "table",
                404,
            )
    start = (query.page - 1) * PAGE_SIZE
    return PageView(query, chosen[start : start + PAGE_SIZE], len(chosen), len(certificates), pages, selected)


def render_status_page(
    snapshots: Sequence[StatusSnapshot],
    now: dt.datetime,
    *,
    title: str = "certsync status",
    inventories: Sequence[InventoryRecord] | str = (),
    max_age: dt.timedelta = DEFAULT_MAX_AGE,
    query: PageQuery = PageQuery(),
) -> str:
    """The page `query` asks for (the first page of all by default) of `snapshots` (certsync.status/1
    dicts) as seen at `now` (timezone-aware), with the worker groups' `inventories` (or the text of why
    they could not be read), stale after `max_age`. QueryError when the query names a page or
    certificate that is not there."""
    now = _utc(now)
    certificates = read_certificates(snapshots, now, inventories)
    return _page(certificates, page_view(certificates, query), now, title, inventories, max_age)


def _page(
    certificates: list[CertificateStatus],
    view: PageView,
    now: dt.datetime,
    title: str,
    inventories: Sequence[InventoryRecord] | str,
    max_age: dt.timedelta,
) -> str:
    counts = dict.fromkeys(ATTENTIONS, 0)
    for cert in certificates:
        counts[cert.attention] += 1
    if not certificates:
        tab = title
    elif counts["critical"] or counts["warning"]:
        tab = f"{counts['critical']} critical, {counts['warning']} warning · {title}"
    else:
        tab = f"all OK · {title}"
    if view.selected is not None:
        tab = f"{view.selected.name} · {tab}"
    body = [_summary(certificates, counts, now, title)]
    if certificates:
        body.append(_fleet(certificates, now))
        if view.selected is not None:
            body.append(_selected(view, now))
        body.append(_table(view))
    else:
        body.append(_empty_state())
    body.append(_inventories(inventories, now, max_age))
    body.append(
        '<footer class="foot"><p>Read-only. The data comes from the daily reconciliation (snapshot schema '
        f"{_e(SNAPSHOT_SCHEMA)}); add <code>format=json</code> to the query string to get this page of it as "
        "JSON.</p></footer>"
    )
    return _document(tab, "\n".join(body))


def render_unavailable_page(message: str, now: dt.datetime, *, title: str = "certsync status") -> str:
    """The page served with 503 when the snapshots cannot be read (the message names the setting)."""
    body = (
        f'<header class="top"><h1>{_e(title)}</h1></header>'
        '<section class="panel empty" role="alert"><h2>Status unavailable</h2>'
        f"<p>The status snapshots could not be read: {_e(message)}</p>"
        "<p>They are read from the table named by the <code>STATE_TABLE</code> setting (default "
        "<code>certsyncstate</code>) in the storage account of the <code>JobsStorage</code> connection; check "
        "that setting and that the Function App's identity may read the table.</p>"
        f'<p class="muted">{_time(now)}</p></section>'
    )
    return _document(f"unavailable · {title}", body)


def render_query_error_page(error: QueryError, *, title: str = "certsync status") -> str:
    """The page served with 400 (or 404) for a query the page cannot answer, with a way back."""
    heading = "No such certificate" if error.status == 404 else "That query cannot be shown"
    body = (
        f'<header class="top"><h1>{_e(title)}</h1></header>'
        f'<section class="panel empty" role="alert"><h2>{heading}</h2><p class="error">{_e(str(error))}</p>'
        '<p><a href="?">Back to the status page</a></p></section>'
    )
    return _document(f"{heading.lower()} · {title}", body)


@dataclass(frozen=True)
class StatusAnswer:
    """What `GET /api/status` answers: `data` as JSON when set, else `page` (HTML, with PAGE_HEADERS)."""

    status: int
    page: str = ""
    data: dict | None = None


def status_answer(
    params: Mapping[str, str],
    snapshots: Callable[[], list[StatusSnapshot]],
    now: dt.datetime,
    *,
    inventories: Callable[[], list[InventoryRecord]] | None = None,
    max_age: dt.timedelta = DEFAULT_MAX_AGE,
) -> StatusAnswer:
    """The answer to a request with query `params`: in format html (the default) the page `PageQuery`
    asks for, in format json that page's snapshots with the counts and the worker groups' inventories.
    400 for a parameter it cannot use (404 for an unknown ?certificate=), as a page or as {"error": ...};
    503 when `snapshots()` raises a CertsyncError (the message names the setting). Inventories that cannot
    be read are said so on the page (and as `inventories_error` in JSON), not a 503."""
    wanted = str(params.get("format") or "html").strip().lower()
    if wanted not in ("html", "json"):
        return StatusAnswer(400, data={"error": f"format={wanted!r}: use format=html (the default) or format=json"})
    try:
        query = PageQuery.parse(params)
    except QueryError as exc:
        return _refused(exc, wanted)
    try:
        found = snapshots()
    except CertsyncError as exc:  # storage unreachable or misconfigured
        if wanted == "json":
            return StatusAnswer(503, data={"error": str(exc)})
        return StatusAnswer(503, page=render_unavailable_page(str(exc), now))
    records: list[InventoryRecord] | str = []
    if inventories is not None:
        try:
            records = inventories()
        except CertsyncError as exc:
            records = str(exc)
    now = _utc(now)
    certificates = read_certificates(found, now, records)
    try:
        view = page_view(certificates, query)
    except QueryError as exc:
        return _refused(exc, wanted)
    if wanted == "json":
        shown = [view.selected] if view.selected is not None else view.rows
        data: dict = {
            "generated_at": format_time(now, "seconds"),
            "total": view.total,
            "matching": view.matching,
            "page": query.page,
            "pages": view.pages,
            "page_size": PAGE_SIZE,
            "snapshots": [c.snapshot for c in shown],
        }
        if isinstance(records, str):
            data["inventories_error"] = records
        else:
            data["inventories"] = [inventory_status(r, now, max_age) for r in records]
        return StatusAnswer(200, data=data)
    return StatusAnswer(200, page=_page(certificates, view, now, "certsync status", records, max_age))


def _refused(error: QueryError, wanted: str) -> StatusAnswer:
    if wanted == "json":
        return StatusAnswer(error.status, data={"error": str(error)})
    return StatusAnswer(error.status, page=render_query_error_page(error))


def inventory_status(record: InventoryRecord, now: dt.datetime, max_age: dt.timedelta) -> dict:
    """One worker group's inventory as the JSON answer shows it: when, how old, stale or not, its errors."""
    return {
        **record.meta(),
        "age_hours": round(record.age(_utc(now)).total_seconds() / 3600, 1),
        "stale": record.stale(_utc(now), max_age),
    }


# --- sections ---------------------------------------------------------------------------------------


def _summary(certificates: list[CertificateStatus], counts: dict[str, int], now: dt.datetime, title: str) -> str:
    if not certificates:
        headline = "No status yet."
    elif counts["critical"]:
        headline = f"{_plural(counts['critical'], 'certificate needs', 'certificates need')} action now."
    elif counts["warning"]:
        headline = f"{_plural(counts['warning'], 'certificate needs', 'certificates need')} attention soon."
    elif counts["unknown"]:
        headline = f"{_plural(counts['unknown'], 'certificate has', 'certificates have')} an unknown state."
    else:
        headline = f"All {_plural(len(certificates), 'certificate is', 'certificates are')} OK."
    tiles = []
    for attention in ATTENTIONS:
        if attention == "unknown" and not counts["unknown"]:
            continue
        quiet = "" if counts[attention] else " quiet"
        tiles.append(
            f'<li class="tile s-{attention}{quiet}"><span class="n">{counts[attention]}</span> '
            f'<span class="label">{attention.upper()}</span></li>'
        )
    checked = [c.checked_at for c in certificates if c.checked_at is not None]
    oldest = min(checked) if checked else None
    meta = [f"<div><dt>Generated</dt><dd>{_time(now)}</dd></div>"]
    if certificates:
        seen = f"{_time(oldest)} ({_ago(now - oldest)})" if oldest else "unknown"
        meta.append(f"<div><dt>Oldest check</dt><dd>{seen}</dd></div>")
    parts = [
        f'<header class="top"><div class="title"><h1>{_e(title)}</h1>',
        f'<p class="headline">{_e(headline)}</p></div>',
        f'<ul class="tiles" aria-label="Certificates by attention">{"".join(tiles)}</ul>' if certificates else "",
        f'<dl class="meta">{"".join(meta)}</dl></header>',
    ]
    if certificates and (oldest is None or now - oldest > STALE_AFTER or len(checked) < len(certificates)):
        if oldest is None or len(checked) < len(certificates):
            why = "some snapshots carry no valid check time"
        else:
            why = f"the oldest snapshot was checked {_ago(now - oldest)}"
        parts.append(
            '<p class="banner" role="alert"><strong>STALE DATA:</strong> '
            f"{_e(why)}, more than {STALE_AFTER.total_seconds() / 3600:.0f} hours before this page. "
            "The daily reconciliation may not be running: check the "
            f"<code>{_e(RECONCILE_FUNCTION)}</code> function's invocations and "
            "<code>RECONCILE_SCHEDULE</code>.</p>"
        )
    return "".join(parts)


def _inventories(records: Sequence[InventoryRecord] | str, now: dt.datetime, max_age: dt.timedelta) -> str:
    """Each worker group's latest inventory: collected when, STALE past `max_age`, what could not be read."""
    hours = f"{max_age.total_seconds() / 3600:g}"
    head = (
        '<section class="panel" aria-labelledby="inv-h"><h2 id="inv-h">Exchange inventory '
        f'<span class="muted">(per worker group; stale after {_e(hours)} h)</span></h2>'
    )
    if isinstance(records, str):
        return (
            f'{head}<p class="banner" role="alert"><strong>UNAVAILABLE:</strong> the inventories could not be read: '
            f"{_e(records)}. They are in the <code>INVENTORY_TABLE</code> table (default "
            "<code>certsyncinventory</code>).</p></section>"
        )
    if not records:
        return (
            f'{head}<p class="muted">No inventory yet. Discovery runs with the daily reconciliation for each worker '
            "group the targets name; to run it now: <code>certsync discover WORKER_GROUP</code> or "
            "<code>POST /api/discover/&lt;worker group&gt;</code>.</p></section>"
        )
    rows = []
    for record in records:
        stale = record.stale(_utc(now), max_age)
        state, word = ("warning", "STALE") if stale else ("ok", "CURRENT")
        errors = record.errors
        if errors:
            listed = "".join(f"<li><b>{_e(e['where'])}</b>: {_e(e['message'])}</li>" for e in errors)
            error_cell = (
                f'<span class="chip s-warning">{len(errors)} NOT READ</span> <ul class="inv-errors">{listed}</ul>'
            )
        else:
            error_cell = '<span class="muted">none</span>'
        rows.append(
            f'<tr class="inv s-{state}"><th scope="row">{_e(record.worker_group)}</th>'
            f'<td><span class="chip s-{state}">{word}</span></td>'
            f"<td>{_time(record.collected_at)} <span class='muted'>({_ago(record.age(_utc(now)))})</span></td>"
            f"<td>{_e(record.source)}</td><td>{error_cell}</td></tr>"
        )
    return (
        f'{head}<table><thead><tr><th scope="col">Worker group</th><th scope="col">State</th>'
        '<th scope="col">Collected</th><th scope="col">From</th><th scope="col">Not read</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _empty_state() -> str:
    return (
        '<section class="panel empty" aria-labelledby="empty-h"><h2 id="empty-h">Reconciliation has not run yet</h2>'
        "<p>There are no status snapshots yet: the daily reconciliation writes one per certificate with targets, "
        "into the <code>STATE_TABLE</code> table (default <code>certsyncstate</code>).</p>"
        "<p>It runs on <code>RECONCILE_SCHEDULE</code> (default <code>0 0 6 * * *</code>, 06:00 UTC). To run it now, "
        f"open the Function App in the Azure portal, then Functions, <code>{_e(RECONCILE_FUNCTION)}</code>, "
        "Code + Test, Test/Run; or send <code>POST https://&lt;app&gt;.azurewebsites.net/admin/functions/"
        f"{_e(RECONCILE_FUNCTION)}</code> with the master key in <code>x-functions-key</code> and the body "
        '<code>{"input": ""}</code>. Then reload this page.</p></section>'
    )


def _fleet(certificates: list[CertificateStatus], now: dt.datetime) -> str:
    """Expiries per week above the axis (stacked by attention) and renewals deployed per week below it
    (each server's last remediation, stacked by outcome), from WEEKS_BACK weeks ago to WEEKS_AHEAD ahead;
    the end bars hold everything earlier and later. One pass over the certificates."""
    weeks = WEEKS_BACK + WEEKS_AHEAD + 2  # + the "earlier" and "later" bars
    expiring = [dict.fromkeys(ATTENTIONS, 0) for _ in range(weeks)]
    renewed = [dict.fromkeys(("ok", "warning", "critical", "pending"), 0) for _ in range(weeks)]
    unknown_expiry = 0

    monday = (now - dt.timedelta(days=now.weekday())).date()
    week_start = dt.datetime.combine(monday, dt.time(0), tzinfo=dt.timezone.utc)  # weeks start on Monday, UTC

    def bucket(days: float) -> int:  # `days` from now
        weeks_from_monday = ((now - week_start).total_seconds() / 86400 + days) / 7
        return min(max(math.floor(weeks_from_monday) + WEEKS_BACK + 1, 0), weeks - 1)

    for cert in certificates:
        if cert.days_left is None:
            unknown_expiry += 1
        else:
            expiring[bucket(cert.days_left)][cert.attention] += 1
        for server in cert.servers:
            state = _OUTCOMES.get(server.outcome, ("unknown", ""))[0]
            if server.at is not None and state in renewed[0]:
                renewed[bucket((server.at - now).total_seconds() / 86400)][state] += 1
    width, x0, x1, top, up, down = 1000, 80, 992, 44, 150, 60
    axis = top + up
    height = axis + down + 34
    step = (x1 - x0) / weeks
    # Scaled to the busiest week in range: the end bars (everything earlier or later) may be cut off at the
    # top, their count written above them all the same.
    most_up = max((sum(b.values()) for b in expiring[1:-1]), default=0) or 1
    most_down = max((sum(b.values()) for b in renewed[1:-1]), default=0) or 1
    out = [
        f'<svg class="fleet" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        'aria-labelledby="fleet-title fleet-desc" xmlns="http://www.w3.org/2000/svg">',
        '<title id="fleet-title">Expiries and renewals per week</title>',
        f'<desc id="fleet-desc">Bars above the line: certificates expiring each week, from {WEEKS_BACK} weeks ago '
        f"to {WEEKS_AHEAD} weeks ahead, stacked by state; bars below it: renewals deployed to servers each week, "
        "stacked by outcome. The first bar holds everything earlier, the last everything later.</desc>",
        f'<text x="4" y="{axis - 6}" class="axis-label">expiring ▲</text>',
        f'<text x="4" y="{axis + 16}" class="axis-label">renewed ▼</text>',
    ]
    for index in range(weeks):
        x = x0 + index * step
        if index == 0:
            when, label = f"before the week of {monday - dt.timedelta(weeks=WEEKS_BACK)}", "earlier"
        elif index == weeks - 1:
            when, label = f"after the week of {monday + dt.timedelta(weeks=WEEKS_AHEAD - 1)}", "later"
        else:
            start = monday + dt.timedelta(weeks=index - WEEKS_BACK - 1)
            when, label = f"the week of {start}", ""
            if (index - WEEKS_BACK - 1) % 4 == 0 and 1 < index < weeks - 2:
                label = "this week" if start == monday else f"{start:%b} {start.day}"
        if label:
            anchor = "start" if index == 0 else "end" if index == weeks - 1 else "middle"
            lx = x if index == 0 else x + step if index == weeks - 1 else x + step / 2
            out.append(f'<text x="{lx:.1f}" y="{height - 6}" class="tick-label" text-anchor="{anchor}">{label}</text>')
        y = float(axis)
        for attention in reversed(ATTENTIONS):  # ok at the bottom, critical on top
            count = expiring[index][attention]
            if count:
                h = min(up * count / most_up, y - top)
                y -= h
                out.append(
                    f'<rect x="{x + 1.5:.1f}" y="{y:.1f}" width="{step - 3:.1f}" height="{h:.1f}" '
                    f'class="seg s-{attention}"><title>{when}: {count} {attention.upper()} expiring</title></rect>'
                )
        total = sum(expiring[index].values())
        if total:
            out.append(
                f'<text x="{x + step / 2:.1f}" y="{y - 3:.1f}" class="count" text-anchor="middle">{total}</text>'
            )
        y = axis + 1.0
        for state, count in renewed[index].items():
            if count:
                h = min(down * count / most_down, axis + 1.0 + down - y)
                word = {"ok": "SUCCEEDED", "warning": "ROLLED BACK", "critical": "FAILED", "pending": "PENDING"}[state]
                out.append(
                    f'<rect x="{x + 1.5:.1f}" y="{y:.1f}" width="{step - 3:.1f}" height="{h:.1f}" '
                    f'class="seg renewal s-{state}"><title>{when}: {count} {word}</title></rect>'
                )
                y += h
    now_x = x0 + (WEEKS_BACK + 1 + (now - week_start).total_seconds() / (7 * 86400)) * step
    out.append(f'<line x1="{x0}" y1="{axis}" x2="{x1}" y2="{axis}" class="axis"/>')
    out.append(f'<line x1="{now_x:.1f}" y1="20" x2="{now_x:.1f}" y2="{axis + down}" class="today"/>')
    out.append(f'<text x="{now_x:.1f}" y="14" class="tick-label" text-anchor="middle">today</text>')
    out.append("</svg>")
    legend = "".join(f'<li><span class="swatch s-{a}"></span>{a.upper()}</li>' for a in ATTENTIONS)
    renewal_legend = (
        '<li><span class="swatch renewal s-ok"></span>renewal SUCCEEDED</li>'
        '<li><span class="swatch renewal s-critical"></span>FAILED</li>'
        '<li><span class="swatch renewal s-warning"></span>ROLLED BACK</li>'
        '<li><span class="swatch renewal s-pending"></span>PENDING</li>'
    )
    note = f'<li class="muted">{_plural(unknown_expiry, "certificate", "certificates")} of unknown expiry</li>'
    return (
        '<section class="panel" aria-labelledby="fleet-h"><h2 id="fleet-h">Expiries and renewals per week '
        f'<span class="muted">({_plural(len(certificates), "certificate", "certificates")})</span></h2>'
        f'<div class="chart-wrap">{"".join(out)}</div>'
        f'<ul class="legend" aria-label="Legend">{legend}{renewal_legend}{note if unknown_expiry else ""}</ul>'
        "</section>"
    )


def _table(view: PageView) -> str:
    """The filter form, one page of the certificates as a table, and the page links."""
    query = view.query
    state_options = _options({"": "any state", **{a: a.upper() for a in ATTENTIONS}}, query.state)
    expires_options = _options({"": "any time", **EXPIRES}, query.expires)
    sorts: dict[str, str] = {}
    for key, label in SORTS.items():
        first, last = (
            ("worst", "best") if key == "attention" else ("soonest", "latest") if key == "expiry" else ("A", "Z")
        )
        sorts[key] = f"{label}, {first} first" if key != "attention" else label
        sorts["-" + key] = f"{label if key != 'attention' else 'state'}, {last} first"
    sort_options = _options(sorts, query.sort_value)
    form = (
        '<form class="filters" method="get" role="search" aria-label="Filter the certificates">'
        f'<label>Search <input type="search" name="q" value="{_e(query.q)}" maxlength="{MAX_SEARCH}" '
        'placeholder="name, issuer, server, thumbprint"></label>'
        f'<label>State <select name="state">{state_options}</select></label>'
        f'<label>Expires <select name="expires">{expires_options}</select></label>'
        f'<label>Sort <select name="sort">{sort_options}</select></label>'
        '<button type="submit">Show</button> <a class="clear" href="?">Clear</a></form>'
    )
    headers = []
    for key, label in (
        ("attention", "State"),
        ("name", "Certificate"),
        ("vault", "Vault"),
        ("issuer", "Issuer"),
        ("expiry", "Expires"),
        ("server", "Servers"),
    ):
        current = query.sort == key
        href = query.href(sort=key, descending=current and not query.descending, page=1)
        mark = (" ▼" if query.descending else " ▲") if current else ""
        sort_state = f' aria-sort="{"descending" if query.descending else "ascending"}"' if current else ""
        headers.append(f'<th scope="col"{sort_state}><a href="{href}">{label}{mark}</a></th>')
    headers.append('<th scope="col">Connectors</th>')
    rows = []
    for cert in view.rows:
        issuer = cert.issuer
        servers = cert.server_names
        shown_servers = ", ".join(servers[:4]) + (f" +{len(servers) - 4}" if len(servers) > 4 else "")
        drift = _DRIFT.get(cert.drift, (cert.drift or "—", "bad"))
        chosen = ' aria-current="true" class="chosen"' if view.selected is cert else ""
        expires = f"{_e(_expiry_words(cert.days_left))}"
        if cert.not_after is not None:
            expires += f' <span class="muted">{cert.not_after:%Y-%m-%d}</span>'
        rows.append(
            f'<tr class="row s-{cert.attention}"><td><span class="badge s-{cert.attention}">'
            f"{cert.attention.upper()}</span></td>"
            f'<th scope="row"><a{chosen} href="{query.href(certificate=cert.key)}">{_e(cert.name)}</a></th>'
            f"<td>{_e(cert.vault or '?')}</td>"
            f'<td class="issuer" title="{_e(issuer)}">{_e(_short_name(issuer) or "unknown")}</td>'
            f'<td class="days s-{_expiry_class(cert.days_left)}">{expires}</td>'
            f'<td class="srv">{_e(shown_servers) or "<span class=muted>none</span>"}</td>'
            f'<td><span class="status {drift[1]}">{_e(drift[0])}</span></td></tr>'
        )
    if view.matching:
        end = view.first + len(view.rows) - 1
        count = f"{view.first:,}–{end:,} of {view.matching:,}"
        if view.matching != view.total:
            count += f" matching (of {view.total:,})"
        listing = (
            f'<div class="table-wrap"><table class="list"><thead><tr>{"".join(headers)}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>{_pager(view)}"
        )
    else:
        count = f"none of {view.total:,} match"
        listing = '<p class="none">No certificate matches. <a href="?">Show all</a></p>'
    return (
        f'<section class="panel" aria-labelledby="certs-h"><h2 id="certs-h">Certificates '
        f'<span class="muted">({count})</span></h2>{form}{listing}</section>'
    )


def _pager(view: PageView) -> str:
    if view.pages == 1:
        return ""
    page, pages, query = view.query.page, view.pages, view.query
    numbers = sorted({1, pages, *range(max(1, page - 2), min(pages, page + 2) + 1)})
    links = []
    if page > 1:
        links.append(f'<a rel="prev" href="{query.href(page=page - 1)}">‹ previous</a>')
    previous = 0
    for number in numbers:
        if number - previous > 1:
            links.append('<span class="gap">…</span>')
        if number == page:
            links.append(f'<a aria-current="page" href="{query.href(page=number)}">{number}</a>')
        else:
            links.append(f'<a href="{query.href(page=number)}">{number}</a>')
        previous = number
    if page < pages:
        links.append(f'<a rel="next" href="{query.href(page=page + 1)}">next ›</a>')
    return f'<nav class="pager" aria-label="Pages">{"".join(links)}</nav>'


def _options(choices: Mapping[str, str], current: str) -> str:
    return "".join(
        f'<option value="{_e(value)}"{" selected" if value == current else ""}>{_e(label)}</option>'
        for value, label in choices.items()
    )


def _short_name(name: str) -> str:
    """The first attribute's value of a name as Windows prints it (CN=R11, O=... -> R11)."""
    first = name.split(", ", 1)[0]
    return first.partition("=")[2] or name


def _selected(view: PageView, now: dt.datetime) -> str:
    """The selected certificate's card and its own timeline, with a link back to the list."""
    cert = view.selected
    assert cert is not None
    close = view.query.href(certificate="")
    return (
        f'<section class="panel cert s-{cert.attention}" id="selected" aria-labelledby="selected-name">'
        f'<header class="cert-head"><span class="badge s-{cert.attention}">{cert.attention.upper()}</span>'
        f'<h2 id="selected-name" class="cert-name">{_e(cert.name)}</h2>'
        f'<span class="vault">vault <b>{_e(cert.vault or "?")}</b></span>'
        f'<span class="days s-{_expiry_class(cert.days_left)}">{_e(_expiry_words(cert.days_left))}</span>'
        f'<a class="close" href="{close}">close</a></header>'
        f'<div class="tls-row"><span class="tls-label">TlsCertificateName</span>'
        f'<code class="tls">{_e(cert.tls_certificate_name or "unknown")}</code></div>'
        f"{_identity(cert)}{_certificate_timeline(cert, now)}"
        f'<div class="cert-body">{_servers(cert, now)}{_proof(cert)}{_findings(cert)}{_forecast(cert)}</div></section>'
    )


_PROOF_CHECKS = {
    "probe-receive-connector": "STARTTLS probe",
    "test-outbound": "mail to Exchange Online",
    "restart-transport": "transport restart",
}
_PROOF_OUTCOMES = {"done": ("ok", "PROVEN"), "already": ("ok", "PROVEN"), "failed": ("critical", "FAILED")}


def _proof(cert: CertificateStatus) -> str:
    """The last job's proof per server: what was probed or tested there, and how it went."""
    if not cert.proof:
        return ""
    rows = []
    for row in cert.proof:
        state, word = _PROOF_OUTCOMES.get(row.outcome, ("unknown", row.outcome.upper()))
        title = f' title="{_e(row.message)}"' if row.message else ""
        rows.append(
            f'<tr><th scope="row">{_e(row.server)}</th><td>{_e(_PROOF_CHECKS.get(row.check, row.check))}</td>'
            f'<td><code>{_e(row.target)}</code></td><td><span class="chip s-{state}"{title}>{_e(word)}</span></td></tr>'
        )
    return (
        '<div class="proof"><h4>Proof (last job)</h4><table><thead><tr><th scope="col">Server</th>'
        '<th scope="col">Check</th><th scope="col">Target</th><th scope="col">Outcome</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _certificate_timeline(cert: CertificateStatus, now: dt.datetime) -> str:
    """One certificate's story on a time axis: each server's last remediation (shaped by outcome), the
    last check, today, its warning and critical windows before expiry (by its lifetime) and the expiry itself."""
    events: list[tuple[dt.datetime, str, str, str]] = []  # when, state, label, tooltip
    for server in cert.servers:
        if server.at is not None:
            state, word = _OUTCOMES.get(server.outcome, ("unknown", server.outcome.upper()))
            events.append((server.at, state, server.server, f"{server.server}: {word} {format_time(server.at)}"))
    if cert.checked_at is not None:
        events.append((cert.checked_at, "checked", "checked", f"checked {format_time(cert.checked_at)}"))
    stamps = [e[0] for e in events] + [now]
    if cert.not_after is not None:
        stamps.append(cert.not_after)
    start = min(min(stamps), now - dt.timedelta(days=14))
    end = max(max(stamps), now + dt.timedelta(days=30))
    pad = (end - start) * 0.04
    start, end = start - pad, end + pad
    width, x0, x1, axis = 1000, 20, 980, 70
    height = 120

    def x_of(at: dt.datetime) -> float:
        return x0 + (x1 - x0) * (at - start) / (end - start)

    out = [
        f'<svg class="timeline" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        'aria-labelledby="tl-title tl-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="tl-title">Timeline of {_e(cert.name)}</title>',
        '<desc id="tl-desc">Its last remediation on each server, its last check, today, its warning and '
        f"critical windows ({cert.windows[0]:g} and {cert.windows[1]:g} days before expiry, by its lifetime), "
        "and its expiry.</desc>",
    ]
    if cert.not_after is not None:
        for days, cls in ((cert.windows[0], "band-30"), (cert.windows[1], "band-7")):
            bx = x_of(max(start, cert.not_after - dt.timedelta(days=days)))
            out.append(
                f'<rect x="{bx:.1f}" y="20" width="{max(0.0, x_of(cert.not_after) - bx):.1f}" height="66" '
                f'class="{cls}"/>'
            )
        ex = x_of(cert.not_after)
        anchor = "end" if ex > x1 - 80 else "start" if ex < x0 + 80 else "middle"
        out.append(f'<line x1="{ex:.1f}" y1="16" x2="{ex:.1f}" y2="{axis + 16}" class="expiry-line"/>')
        out.append(
            f'<text x="{ex:.1f}" y="12" class="tick-label expired-label" text-anchor="{anchor}">'
            f"expires {cert.not_after:%Y-%m-%d}</text>"
        )
    out.append(f'<line x1="{x0}" y1="{axis}" x2="{x1}" y2="{axis}" class="axis"/>')
    tx = x_of(now)
    out.append(f'<line x1="{tx:.1f}" y1="24" x2="{tx:.1f}" y2="{axis + 16}" class="today"/>')
    out.append(f'<text x="{tx:.1f}" y="{axis + 32}" class="tick-label" text-anchor="middle">today</text>')
    for index, (at, state, label, tooltip) in enumerate(sorted(events, key=lambda e: e[0])):
        x, y = x_of(at), axis - 16 - 18 * (index % 2)
        shape = (
            f'<rect class="shape checked" x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" height="10"/>'
            if state == "checked"
            else _shape(state if state in ATTENTIONS else "unknown", x, y)
        )
        out.append(
            f'<g class="event"><title>{_e(tooltip)}</title>{shape}'
            f'<text x="{x + 10:.1f}" y="{y + 4:.1f}" class="event-label">{_e(label[:24])}</text></g>'
        )
    out.append("</svg>")
    return f'<div class="chart-wrap">{"".join(out)}</div>'


def _shape(attention: str, x: float, y: float) -> str:
    """A marker whose shape says the state too: diamond critical, triangle warning, circle ok, ring unknown."""
    cls = f'class="shape s-{attention}"'
    if attention == "critical":
        return (
            f'<path {cls} d="M{x:.1f} {y - 8:.1f} L{x + 8:.1f} {y:.1f} L{x:.1f} {y + 8:.1f} L{x - 8:.1f} {y:.1f} Z"/>'
        )
    if attention == "warning":
        return f'<path {cls} d="M{x:.1f} {y - 8:.1f} L{x + 8:.1f} {y + 6:.1f} L{x - 8:.1f} {y + 6:.1f} Z"/>'
    if attention == "ok":
        return f'<circle {cls} cx="{x:.1f}" cy="{y:.1f}" r="6.5"/>'
    return f'<circle {cls} cx="{x:.1f}" cy="{y:.1f}" r="5.5" stroke-width="2.5"/>'


def _identity(cert: CertificateStatus) -> str:
    status = cert.status or "unknown"
    status_class = "good" if status == "Valid" else "bad"
    rows = [
        ("Assessment", f'<span class="status {status_class}">{_e(status)}</span>'),
        ("Expires", _time(cert.not_after) if cert.not_after else "unknown"),
        ("Thumbprint", f'<code class="thumb">{_e(cert.thumbprint or "unknown")}</code>'),
        ("Version", f'<code class="thumb">{_e(cert.version or "unknown")}</code>'),
        ("Checked", _time(cert.checked_at) if cert.checked_at else "unknown"),
    ]
    if cert.drift:
        drift, drift_class = _DRIFT.get(cert.drift, (cert.drift, "bad"))
        rows.insert(1, ("Connectors", f'<span class="status {drift_class}">{_e(drift)}</span>'))
    if cert.truncated:
        rows.append(("Note", "shortened to fit storage: some servers or findings are not shown"))
    items = "".join(f"<div><dt>{label}</dt><dd>{value}</dd></div>" for label, value in rows)
    return f'<dl class="facts">{items}</dl>'


def _servers(cert: CertificateStatus, now: dt.datetime) -> str:
    if not cert.servers:
        return '<div class="servers"><h4>Last remediation</h4><p class="muted">No servers recorded.</p></div>'
    rows = []
    for server in cert.servers:
        state, word = _OUTCOMES.get(server.outcome, ("unknown", server.outcome.upper()))
        when = f"{_time(server.at)} <span class='muted'>({_ago(now - server.at)})</span>" if server.at else "—"
        job = f'<code title="{_e(server.job_id)}">{_e(server.job_id[:8])}</code>' if server.job_id else "—"
        rows.append(
            f'<tr><th scope="row">{_e(server.server)}</th><td><span class="chip s-{state}">{_e(word)}</span></td>'
            f'<td>{when}</td><td class="job">{job}</td></tr>'
        )
    return (
        '<div class="servers"><h4>Last remediation</h4><table><thead><tr><th scope="col">Server</th>'
        '<th scope="col">Outcome</th><th scope="col">When</th><th scope="col">Job</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _windows(value: object) -> tuple[float, float]:
    """A snapshot's [warning, critical] days (older snapshots have none: 30 and 7, as they were)."""
    numbers = [_number(v) for v in _list(value)]
    if len(numbers) == 2 and all(n is not None and 0 < n < 1000 for n in numbers):
        return float(numbers[0] or 30), float(numbers[1] or 7)
    return 30.0, 7.0


def _list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


def _forecast_of(snapshot: Mapping[str, object]) -> Mapping[str, object]:
    forecast = snapshot.get("forecast")
    return forecast if isinstance(forecast, Mapping) else {}


def _forecast(cert: CertificateStatus) -> str:
    """The issuers (so the `<I>` strings) the next renewal may bring, from certsync's table of CA hierarchies."""
    if not cert.forecast_ca:
        text = "The issuer is not in certsync's table of CA hierarchies: no forecast."
        return f'<div class="forecast"><h4>Next renewal</h4><p class="muted">{_e(text)}</p></div>'
    items = "".join(f'<li><code class="tls">{_e(s)}</code></li>' for s in cert.forecast)
    note = f'<p class="muted">{_e(cert.forecast_note)}</p>' if cert.forecast_note else ""
    return (
        f'<div class="forecast"><h4>Next renewal</h4><p>{_e(cert.forecast_ca)} may issue it from one of these '
        f"(the TlsCertificateName's &lt;I&gt; part):</p><ul>{items}</ul>{note}</div>"
    )


def _findings(cert: CertificateStatus) -> str:
    if not cert.findings:
        return '<div class="findings"><h4>Findings</h4><p class="muted">No findings.</p></div>'
    items = "".join(
        f'<li><span class="sev s-{_severity_class(f["severity"])}">{_e((f["severity"] or "?").upper())}</span> '
        f'<code class="code">{_e(f["code"])}</code> {_e(f["summary"])}</li>'
        for f in cert.findings
    )
    return f'<div class="findings"><h4>Findings</h4><ul>{items}</ul></div>'


# --- the document -----------------------------------------------------------------------------------

_CSS = """
:root{--critical:#b3261e;--critical-bg:#fdecea;--warning:#8a5300;--warning-fill:#f0a202;--warning-bg:#fff4dc;
--ok:#1b6e35;--ok-bg:#e6f4ea;--unknown:#5f6368;--unknown-bg:#eef0f2;--pending:#1f5fa8;--ink:#1f2328;
--muted:#59636e;--line:#d6dae0;--page:#f3f4f6;--card:#fff;--band-7:#fbe3e0;--band-30:#fff4dc;
--code-bg:#f6f8fa;
--link:#0b57b0;
--mono:ui-monospace,"Cascadia Mono",Consolas,"Liberation Mono","DejaVu Sans Mono",monospace}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;padding:24px clamp(10px,3vw,40px) 40px;background:var(--page);color:var(--ink);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans","DejaVu Sans",sans-serif}
main{max-width:1280px;margin:0 auto}
h1{font-size:26px;margin:0 0 2px}h2{font-size:18px;margin:0 0 12px}h4{font-size:13px;margin:0 0 6px;
text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
code{font-family:var(--mono);font-size:13px}
.muted{color:var(--muted);font-weight:normal}
.top{display:flex;flex-wrap:wrap;align-items:center;gap:16px 32px;background:var(--card);border:1px solid var(--line);
border-radius:10px;padding:18px 22px;margin-bottom:16px}
.title{flex:1 1 260px}.headline{margin:0;font-size:17px;font-weight:600}
.tiles{display:flex;flex-wrap:wrap;gap:10px;list-style:none;margin:0;padding:0}
.tile{min-width:104px;padding:8px 14px;border-radius:8px;border:2px solid;text-align:center;line-height:1.15}
.tile .n{display:block;font-size:28px;font-weight:700}.tile .label{font-size:12px;font-weight:700;letter-spacing:.06em}
.tile.s-critical{background:var(--critical);border-color:var(--critical);color:#fff}
.tile.s-warning{background:var(--warning-bg);border-color:var(--warning-fill);color:var(--warning)}
.tile.s-ok{background:var(--ok-bg);border-color:var(--ok);color:var(--ok)}
.tile.s-unknown{background:var(--unknown-bg);border-color:var(--unknown);color:var(--unknown)}
.tile.quiet{background:var(--card);border-color:var(--line);color:var(--muted)}
.meta{margin:0;display:grid;gap:4px;font-size:14px}.meta div{display:flex;gap:8px}
.meta dt{color:var(--muted);min-width:92px}.meta dd{margin:0}
.banner{background:var(--warning-bg);border:2px solid var(--warning-fill);color:#4d2f00;border-radius:8px;
padding:10px 14px;margin:0 0 16px}
.panel{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:18px 22px;margin-bottom:16px}
.band-expired{fill:var(--critical-bg)}.band-7{fill:var(--band-7)}.band-30{fill:var(--band-30)}
.tick{stroke:#c3c9d1;stroke-dasharray:3 4}.today{stroke:var(--ink);stroke-width:1.5}
.tick-label{fill:var(--muted);font-size:12px}.expired-label{fill:var(--critical);font-weight:700}
.shape.s-critical{fill:var(--critical)}.shape.s-warning{fill:var(--warning-fill);stroke:var(--warning);stroke-width:1}
.shape.s-ok{fill:var(--ok)}.shape.s-unknown{stroke:var(--unknown);fill:var(--card)}
.legend{display:flex;flex-wrap:wrap;gap:6px 18px;list-style:none;margin:10px 0 0;padding:0;font-size:13px;
color:var(--muted)}
.legend li{display:flex;align-items:center;gap:6px}
.swatch{display:inline-block;width:16px;height:12px;border:1px solid var(--line)}
.cert{border:1px solid var(--line);border-left:8px solid var(--unknown);border-radius:8px;padding:12px 16px;
background:var(--card)}
.cert.s-critical{border-left-color:var(--critical);
background:linear-gradient(90deg,var(--critical-bg),var(--card) 40%)}
.cert.s-warning{border-left-color:var(--warning-fill);
background:linear-gradient(90deg,var(--warning-bg),var(--card) 40%)}
.cert.s-ok{border-left-color:var(--ok)}
.cert-head{display:flex;flex-wrap:wrap;align-items:center;gap:6px 14px;margin-bottom:10px}
.cert-name{font-size:18px;margin:0;overflow-wrap:anywhere}
.vault{color:var(--muted);font-size:14px}
.days{margin-left:auto;font-weight:700;font-size:15px}
.days.s-critical{color:var(--critical)}.days.s-warning{color:var(--warning)}.days.s-ok{color:var(--ok)}
.days.s-unknown{color:var(--unknown)}
.badge,.chip,.sev{display:inline-block;border-radius:4px;font-size:12px;font-weight:700;letter-spacing:.05em;
padding:2px 8px;line-height:1.4;white-space:nowrap}
.badge{font-size:13px;padding:3px 10px}
.s-critical.badge,.s-critical.chip,.s-critical.sev{background:var(--critical);color:#fff}
.s-warning.badge,.s-warning.chip,.s-warning.sev{background:var(--warning-fill);color:#2b1a00}
.s-ok.badge,.s-ok.chip{background:var(--ok);color:#fff}
tr.inv.s-warning th{border-left:4px solid var(--warning-fill)}
.inv-errors{margin:4px 0 0;padding-left:18px;font-size:13px}
.s-unknown.badge,.s-unknown.chip,.s-unknown.sev{background:var(--unknown);color:#fff}
.s-pending.chip{background:var(--pending);color:#fff}.s-info.sev{background:#e3ebf6;color:#17406e}
.cert-body{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:14px 24px}
.tls-row{display:flex;flex-wrap:wrap;align-items:baseline;gap:4px 12px;margin-bottom:12px}
.tls-label{color:var(--muted);font-size:13px}
.facts{display:flex;flex-wrap:wrap;gap:4px 26px;margin:0 0 12px;font-size:14px}
.facts div{display:flex;gap:6px;align-items:baseline;min-width:0}
.facts dt{color:var(--muted);font-size:13px}.facts dd{margin:0;min-width:0}
.job code{color:var(--muted)}
.tls,.thumb{overflow-wrap:anywhere;word-break:break-word}
.tls{flex:1 1 420px;min-width:0;background:var(--code-bg);border:1px solid var(--line);border-radius:6px;
padding:5px 10px;font-size:13.5px}
.status.bad{color:var(--critical);font-weight:700}
td time{white-space:nowrap}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;padding:5px 8px 5px 0;border-bottom:1px solid var(--line);vertical-align:top}
thead th{font-size:12px;color:var(--muted);font-weight:600}
.findings ul{margin:0;padding:0;list-style:none;display:grid;gap:6px;font-size:14px}
.findings .code{color:var(--muted)}
.empty h2{font-size:20px}
.foot{color:var(--muted);font-size:13px;text-align:center}
@media (max-width:980px){.cert-body{grid-template-columns:minmax(0,1fr)}}
.servers,.findings{min-width:0}.servers{overflow-x:auto}
@media (max-width:560px){.days{margin-left:0}.panel{padding:14px 12px}.cert{padding:10px 10px 10px 12px}
td time{white-space:normal}
.tile{min-width:80px}}
a{color:var(--link)}
.chart-wrap{overflow-x:auto}
svg.fleet,svg.timeline{display:block;width:100%;min-width:680px;height:auto;font-size:13px}
.seg.s-critical{fill:var(--critical)}.seg.s-warning{fill:var(--warning-fill)}.seg.s-ok{fill:var(--ok)}
.seg.s-unknown{fill:var(--unknown)}.seg.s-pending{fill:var(--pending)}.seg.renewal{opacity:.75}
.axis{stroke:var(--ink);stroke-width:1}.axis-label{fill:var(--muted);font-size:12px}
.count{fill:var(--ink);font-size:10.5px}
.expiry-line{stroke:var(--critical);stroke-width:2}.shape.checked{fill:var(--pending)}
.event-label{fill:var(--ink);font-size:12px}
.swatch.s-critical{background:var(--critical)}.swatch.s-warning{background:var(--warning-fill)}
.swatch.s-ok{background:var(--ok)}.swatch.s-unknown{background:var(--unknown)}.swatch.s-pending{background:var(--pending)}
.swatch.renewal{opacity:.75}.swatch.band-7{background:var(--band-7)}.swatch.band-30{background:var(--band-30)}
.filters{display:flex;flex-wrap:wrap;align-items:end;gap:8px 14px;margin:0 0 12px;font-size:14px}
.filters label{display:flex;flex-direction:column;gap:2px;color:var(--muted);font-size:12px}
.filters input,.filters select,.filters button{font:inherit;font-size:14px;color:var(--ink);background:var(--card);
border:1px solid var(--line);border-radius:6px;padding:5px 8px}
.filters input{min-width:240px}.filters button{cursor:pointer;font-weight:600}
.table-wrap{overflow-x:auto}
table.list th,table.list td{padding:6px 10px 6px 0;vertical-align:middle}
table.list thead a{color:inherit;text-decoration:none}table.list thead a:hover{text-decoration:underline}
table.list tbody th{font-weight:600;overflow-wrap:anywhere}
table.list .issuer{max-width:220px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
table.list .srv{max-width:240px}
table.list .days{white-space:nowrap}table.list tbody th{min-width:7em}
a.chosen{font-weight:800}
.pager{display:flex;flex-wrap:wrap;gap:6px;margin-top:12px;align-items:center}
.pager a{padding:3px 10px;border:1px solid var(--line);border-radius:6px;text-decoration:none}
.pager a[aria-current]{background:var(--ink);color:var(--card);border-color:var(--ink)}
.pager .gap{color:var(--muted)}
.close{margin-left:8px;font-size:14px}
.error{font-family:var(--mono);font-size:14px}
@media (prefers-color-scheme:dark){
:root{--critical:#ff6b60;--critical-bg:#3a1614;--warning:#f5b53f;--warning-fill:#e39a06;--warning-bg:#33260a;
--ok:#3fb868;--ok-bg:#0f2a18;--unknown:#9aa3ad;--unknown-bg:#23272d;--pending:#5b9bea;--ink:#e6e8eb;--muted:#9da7b3;
--line:#343a42;--page:#0f1216;--card:#181c22;--band-7:#3a1a18;--band-30:#2e240e;--code-bg:#11151a;--link:#8ab4f8}
.tile.s-critical,.s-critical.badge,.s-critical.chip,.s-critical.sev,.s-ok.badge,.s-ok.chip,.s-unknown.badge,
.s-unknown.chip,.s-unknown.sev{color:#0f1216}
.banner{color:var(--warning)}.s-info.sev{background:#1d2c40;color:#b7cff0}
}
"""


def _document(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CONTENT_SECURITY_POLICY)}">'
        '<meta name="referrer" content="no-referrer">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="light dark">'
        '<meta name="robots" content="noindex">'
        '<link rel="icon" href="data:,">'  # no favicon request to the Function (it would need the key)
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n"
        f"<body><main>\n{body}\n</main></body></html>\n"
    )


# --- values -----------------------------------------------------------------------------------------


def _e(value: object) -> str:
    """Text or attribute value, escaped (quotes too, so it is safe inside "..." attributes)."""
    return html.escape(str(value), quote=True)


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def _number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _dicts(value: object) -> list[Mapping]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def _when(value: object) -> dt.datetime | None:
    """ISO 8601 (a trailing Z, 7 fractional digits as Azure writes them) or None."""
    if isinstance(value, str) and len(value) == 20 and value[-1] == "Z" and value[10] == "T":
        try:  # the common case, as `format_time(.., "seconds")` writes it: 10,000 of them per page
            return dt.datetime.fromisoformat(value[:-1]).replace(tzinfo=dt.timezone.utc)
        except ValueError:
            pass  # parse_time words it
    try:
        stamp = parse_time(_text(value))
    except ValueError:
        return None
    return _utc(stamp) if stamp else None


def _utc(stamp: dt.datetime) -> dt.datetime:
    return stamp.replace(tzinfo=dt.timezone.utc) if stamp.tzinfo is None else stamp.astimezone(dt.timezone.utc)


def _time(stamp: dt.datetime) -> str:
    stamp = _utc(stamp)
    return f'<time datetime="{stamp.strftime("%Y-%m-%dT%H:%M:%SZ")}">{stamp.strftime("%Y-%m-%d %H:%M")} UTC</time>'


def _ago(delta: dt.timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds < 0:
        return "in the future"
    if seconds < 90:
        return "just now"
    if seconds < 5400:
        return f"{round(seconds / 60)} min ago"
    if seconds < 2 * 86400:
        return f"{round(seconds / 3600)} h ago"
    return f"{int(seconds // 86400)} days ago"


def _expiry_words(days: float | None) -> str:
    if days is None:
        return "expiry unknown"
    if days < 0:
        ago = int(-days)
        return "expired today" if ago == 0 else f"expired {_plural(ago, 'day', 'days')} ago"
    if days < 1:
        return f"expires in {int(days * 24)} h"
    return f"{_plural(int(days), 'day', 'days')} left"


def _severity_class(severity: str) -> str:
    """A finding's severity as its marker's class; "unknown" for one the page does not know."""
    return severity if severity in FINDING_SEVERITIES else "unknown"


def _expiry_class(days: float | None) -> str:
    if days is None:
        return "unknown"
    if days < 7:
        return "critical"
    return "warning" if days < 30 else "ok"


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"
