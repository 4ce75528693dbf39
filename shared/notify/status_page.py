"""The read-only status page: the daily reconciliation's status snapshots (`certsync.status/1`), one per
certificate, as a single self-contained HTML document an admin opens in a browser.

What needs attention shows at a glance: counts by attention and a stale-data warning at the top, an SVG
timeline of expiries, then one card per certificate (worst first, then soonest expiry) with its
TlsCertificateName, assessment status, days to expiry, the last remediation on each server and its
findings, then each Hybrid worker group's Exchange inventory (discovery): when it was collected, the
servers and cmdlets it could not read, and STALE when older than CERTSYNC_INVENTORY_MAX_AGE_HOURS. Colour
is never the only signal: every state is also a word and a marker shape.

The page runs no script and loads nothing: inline CSS and SVG only, under a Content-Security-Policy that
forbids everything else. Snapshot values come from certificates and Key Vault tags, i.e. from whoever can
write to the vault, so each one is HTML-escaped exactly where it is written out (`_e`).

Pure: no Azure SDK and no azure.functions; `status_answer` is what `functions/status.py` serves.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from shared.errors import CertsyncError
from shared.pipeline.inventories import DEFAULT_MAX_AGE, InventoryRecord
from shared.reconciliation.snapshot import FINDING_SEVERITIES, SNAPSHOT_SCHEMA, SnapshotFinding, StatusSnapshot
from shared.times import format_time, parse_time

# The page's policy, in its <meta> and (with frame-ancestors, which only works as a header) in the response.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
)
PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY + "; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    # The page is opened with ?code=<function key>; nothing on it links out, and nothing may carry the key.
    "Referrer-Policy": "no-referrer",
}

# Reconciliation runs daily; two hours of slack before its data is called stale.
STALE_AFTER = dt.timedelta(hours=26)
# Worst first: the order of the summary and of the cards.
ATTENTIONS = ("critical", "warning", "unknown", "ok")
RECONCILE_FUNCTION = "reconcile_daily"  # the timer function in functions/reconcile.py

TIMELINE_MIN_DAYS = 90
TIMELINE_MAX_DAYS = 400
TIMELINE_TICKS = (7, 14, 30, 60, 90, 180, 270, 365)

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


@dataclass(frozen=True)
class ServerRemediation:
    server: str
    outcome: str
    at: dt.datetime | None
    job_id: str


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

    @classmethod
    def from_snapshot(cls, snapshot: StatusSnapshot, now: dt.datetime) -> CertificateStatus:
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
        return cls(
            name=_text(snapshot.get("certificate")) or "(unnamed certificate)",
            vault=_text(snapshot.get("vault")),
            version=_text(snapshot.get("version")),
            thumbprint=_text(snapshot.get("thumbprint")),
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
        )

    def sort_key(self) -> tuple:
        soonest = self.days_left if self.days_left is not None else math.inf
        return (ATTENTIONS.index(self.attention), soonest, self.name.lower(), self.vault.lower())


def sorted_snapshots(snapshots: Iterable[StatusSnapshot], now: dt.datetime) -> list[StatusSnapshot]:
    """The snapshots in the page's order: worst attention first, then soonest expiry, then name."""
    kept = [s for s in snapshots if isinstance(s, Mapping)]
    return sorted(kept, key=lambda s: CertificateStatus.from_snapshot(s, now).sort_key())


def render_status_page(
    snapshots: Sequence[StatusSnapshot],
    now: dt.datetime,
    *,
    title: str = "certsync status",
    inventories: Sequence[InventoryRecord] | str = (),
    max_age: dt.timedelta = DEFAULT_MAX_AGE,
) -> str:
    """The whole page for `snapshots` (certsync.status/1 dicts) as seen at `now` (timezone-aware), with the
    worker groups' `inventories` (or the text of why they could not be read), stale after `max_age`."""
    now = _utc(now)
    certificates = sorted(
        (CertificateStatus.from_snapshot(s, now) for s in snapshots if isinstance(s, Mapping)),
        key=CertificateStatus.sort_key,
    )
    counts = {a: sum(1 for c in certificates if c.attention == a) for a in ATTENTIONS}
    if not certificates:
        tab = title
    elif counts["critical"] or counts["warning"]:
        tab = f"{counts['critical']} critical, {counts['warning']} warning · {title}"
    else:
        tab = f"all OK · {title}"
    body = [_summary(certificates, counts, now, title)]
    if certificates:
        body.append(_timeline(certificates, now))
        body.append(_cards(certificates, now))
    else:
        body.append(_empty_state())
    body.append(_inventories(inventories, now, max_age))
    body.append(
        '<footer class="foot"><p>Read-only. The data comes from the daily reconciliation (snapshot schema '
        f"{_e(SNAPSHOT_SCHEMA)}); add <code>format=json</code> to the query string to get it as JSON.</p></footer>"
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


@dataclass(frozen=True)
class StatusAnswer:
    """What `GET /api/status` answers: `data` as JSON when set, else `page` (HTML, with PAGE_HEADERS)."""

    status: int
    page: str = ""
    data: dict | None = None


def status_answer(
    wanted: str | None,
    snapshots: Callable[[], list[StatusSnapshot]],
    now: dt.datetime,
    *,
    inventories: Callable[[], list[InventoryRecord]] | None = None,
    max_age: dt.timedelta = DEFAULT_MAX_AGE,
) -> StatusAnswer:
    """The answer to a request for the page in format `wanted` (html, the default, or json): the page or
    the sorted snapshots from `snapshots()`, with the worker groups' `inventories()`; 400 for another
    format, 503 when `snapshots()` raises a CertsyncError (the message names the setting). Inventories that
    cannot be read are said so on the page (and as `inventories_error` in JSON), not a 503."""
    wanted = (wanted or "html").strip().lower()
    if wanted not in ("html", "json"):
        return StatusAnswer(400, data={"error": f"format={wanted!r}: use format=html (the default) or format=json"})
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
    if wanted == "json":
        generated = format_time(now, "seconds")
        data: dict = {"generated_at": generated, "snapshots": sorted_snapshots(found, now)}
        if isinstance(records, str):
            data["inventories_error"] = records
        else:
            data["inventories"] = [inventory_status(r, now, max_age) for r in records]
        return StatusAnswer(200, data=data)
    return StatusAnswer(200, page=render_status_page(found, now, inventories=records, max_age=max_age))


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


def _timeline(certificates: list[CertificateStatus], now: dt.datetime) -> str:
    """One lane per certificate, soonest expiry on top: a marker at its not_after on a linear axis from now
    to now+N days (N = the furthest expiry, at least 90 and at most 400); expired ones sit in a red
    gutter left of "today"; expiries beyond N are pinned at the right edge."""
    known = [c.days_left for c in certificates if c.days_left is not None]
    span = max(TIMELINE_MIN_DAYS, min(TIMELINE_MAX_DAYS, math.ceil(max(known, default=0))))
    width, x0, x1, top, lane = 1000, 118, 968, 40, 30
    gutter = x0 - 14
    height = top + lane * len(certificates) + 12
    order = sorted(certificates, key=lambda c: (c.days_left if c.days_left is not None else math.inf, c.name))

    def x_of(days: float) -> float:
        return x0 + (x1 - x0) * min(max(days, 0.0), span) / span

    out = [
        f'<svg class="timeline" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        'aria-labelledby="tl-title tl-desc" xmlns="http://www.w3.org/2000/svg">',
        '<title id="tl-title">Expiry timeline</title>',
        f'<desc id="tl-desc">One marker per certificate at its expiry date, from today to {span} days ahead; '
        "expired certificates on the left. Shape and colour show the state.</desc>",
        f'<rect x="0" y="{top - 14}" width="{gutter}" height="{height - top + 14}" class="band-expired"/>',
        f'<text x="{gutter / 2}" y="{top - 20}" class="tick-label expired-label" text-anchor="middle">EXPIRED</text>',
        f'<rect x="{x0}" y="{top - 14}" width="{x_of(7) - x0:.1f}" height="{height - top + 14}" class="band-7"/>',
        f'<rect x="{x_of(7):.1f}" y="{top - 14}" width="{x_of(30) - x_of(7):.1f}" '
        f'height="{height - top + 14}" class="band-30"/>',
    ]
    last_label: float = x0
    out.append(f'<line x1="{x0}" y1="{top - 14}" x2="{x0}" y2="{height}" class="today"/>')
    out.append(f'<text x="{x0}" y="{top - 20}" class="tick-label" text-anchor="middle">today</text>')
    for day in (d for d in TIMELINE_TICKS if d <= span):
        x = x_of(day)
        out.append(f'<line x1="{x:.1f}" y1="{top - 14}" x2="{x:.1f}" y2="{height}" class="tick"/>')
        if x - last_label >= 34:  # near ticks on a long axis would print over each other
            out.append(f'<text x="{x:.1f}" y="{top - 20}" class="tick-label" text-anchor="middle">{day} d</text>')
            last_label = x
    for index, cert in enumerate(order):
        y = top + lane * index + lane / 2
        number = certificates.index(cert) + 1
        days = cert.days_left
        if days is None:
            x = x0
        elif days < 0:
            x = gutter / 2
        else:
            x = x_of(days)
        label = cert.name if len(cert.name) <= 40 else cert.name[:39] + "…"
        days_text = f" · {_days_short(days)}"
        right_side = x < x0 + (x1 - x0) * 0.62
        text_x = x + 13 if right_side else x - 13
        anchor = "start" if right_side else "end"
        if days is not None and days >= 0:
            # The lifetime bar stops short of a label written over it (a rough width: 8 per bold character).
            bar_end = x if right_side else max(x0, text_x - 8 * len(label) - 7.2 * len(days_text) - 8)
            out.append(f'<line x1="{x0}" y1="{y}" x2="{bar_end:.1f}" y2="{y}" class="bar s-{cert.attention}"/>')
        tooltip = f"{cert.name} ({cert.vault}): {cert.attention.upper()}, {_expiry_words(days)}"
        out.append(
            f'<a href="#c{number}"><g class="marker s-{cert.attention}" data-certificate="{_e(cert.name)}">'
            f"<title>{_e(tooltip)}</title>{_shape(cert.attention, x, y)}"
            f'<text x="{text_x:.1f}" y="{y + 4.5}" text-anchor="{anchor}" class="marker-label">{_e(label)}'
            f'<tspan class="marker-days">{_e(days_text)}</tspan></text></g></a>'
        )
    out.append("</svg>")
    legend = "".join(
        f'<li><svg viewBox="0 0 20 20" width="16" height="16" aria-hidden="true">{_shape(a, 10, 10)}</svg>'
        f"{a.upper()}</li>"
        for a in ATTENTIONS
    )
    return (
        '<section class="panel" aria-labelledby="timeline-h"><h2 id="timeline-h">Expiry timeline</h2>'
        f'<div class="timeline-wrap">{"".join(out)}</div>'
        f'<ul class="legend" aria-label="Legend">{legend}'
        '<li><span class="swatch band-7"></span>under 7 days</li>'
        '<li><span class="swatch band-30"></span>under 30 days</li></ul></section>'
    )


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
    return f'<circle {cls} cx="{x:.1f}" cy="{y:.1f}" r="5.5" fill="#fff" stroke-width="2.5"/>'


def _cards(certificates: list[CertificateStatus], now: dt.datetime) -> str:
    cards = []
    for number, cert in enumerate(certificates, start=1):
        cards.append(
            f'<li class="cert s-{cert.attention}" id="c{number}"><article aria-labelledby="c{number}-name">'
            f'<header class="cert-head"><span class="badge s-{cert.attention}">{cert.attention.upper()}</span>'
            f'<h3 id="c{number}-name" class="cert-name">{_e(cert.name)}</h3>'
            f'<span class="vault">vault <b>{_e(cert.vault or "?")}</b></span>'
            f'<span class="days s-{_expiry_class(cert.days_left)}">{_e(_expiry_words(cert.days_left))}</span></header>'
            f'<div class="tls-row"><span class="tls-label">TlsCertificateName</span>'
            f'<code class="tls">{_e(cert.tls_certificate_name or "unknown")}</code></div>'
            f'{_identity(cert)}<div class="cert-body">{_servers(cert, now)}{_findings(cert)}</div></article></li>'
        )
    return (
        '<section class="panel" aria-labelledby="certs-h"><h2 id="certs-h">Certificates '
        '<span class="muted">(worst first, then soonest expiry)</span></h2>'
        f'<ol class="certs">{"".join(cards)}</ol></section>'
    )


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
--muted:#59636e;--line:#d6dae0;--page:#f3f4f6;
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
.top{display:flex;flex-wrap:wrap;align-items:center;gap:16px 32px;background:#fff;border:1px solid var(--line);
border-radius:10px;padding:18px 22px;margin-bottom:16px}
.title{flex:1 1 260px}.headline{margin:0;font-size:17px;font-weight:600}
.tiles{display:flex;flex-wrap:wrap;gap:10px;list-style:none;margin:0;padding:0}
.tile{min-width:104px;padding:8px 14px;border-radius:8px;border:2px solid;text-align:center;line-height:1.15}
.tile .n{display:block;font-size:28px;font-weight:700}.tile .label{font-size:12px;font-weight:700;letter-spacing:.06em}
.tile.s-critical{background:var(--critical);border-color:var(--critical);color:#fff}
.tile.s-warning{background:var(--warning-bg);border-color:var(--warning-fill);color:var(--warning)}
.tile.s-ok{background:var(--ok-bg);border-color:var(--ok);color:var(--ok)}
.tile.s-unknown{background:var(--unknown-bg);border-color:var(--unknown);color:var(--unknown)}
.tile.quiet{background:#fff;border-color:var(--line);color:var(--muted)}
.meta{margin:0;display:grid;gap:4px;font-size:14px}.meta div{display:flex;gap:8px}
.meta dt{color:var(--muted);min-width:92px}.meta dd{margin:0}
.banner{background:var(--warning-bg);border:2px solid var(--warning-fill);color:#4d2f00;border-radius:8px;
padding:10px 14px;margin:0 0 16px}
.panel{background:#fff;border:1px solid var(--line);border-radius:10px;padding:18px 22px;margin-bottom:16px}
.timeline-wrap{overflow-x:auto}
svg.timeline{display:block;width:100%;min-width:680px;height:auto;font-size:13px}
.band-expired{fill:var(--critical-bg)}.band-7{fill:#fbe3e0;background:#fbe3e0}.band-30{fill:#fff4dc;background:#fff4dc}
.tick{stroke:#c3c9d1;stroke-dasharray:3 4}.today{stroke:var(--ink);stroke-width:1.5}
.tick-label{fill:var(--muted);font-size:12px}.expired-label{fill:var(--critical);font-weight:700}
.bar{stroke-width:4;stroke-linecap:round;opacity:.35}
.bar.s-critical{stroke:var(--critical)}.bar.s-warning{stroke:var(--warning-fill)}.bar.s-ok{stroke:var(--ok)}
.bar.s-unknown{stroke:var(--unknown)}
.shape.s-critical{fill:var(--critical)}.shape.s-warning{fill:var(--warning-fill);stroke:var(--warning);stroke-width:1}
.shape.s-ok{fill:var(--ok)}.shape.s-unknown{stroke:var(--unknown)}
.marker-label{fill:var(--ink);font-weight:600;paint-order:stroke;stroke:#fff;stroke-width:4px;stroke-linejoin:round}.marker-days{fill:var(--muted);font-weight:normal}
a:focus-visible .marker-label,a:hover .marker-label{text-decoration:underline}
.legend{display:flex;flex-wrap:wrap;gap:6px 18px;list-style:none;margin:10px 0 0;padding:0;font-size:13px;
color:var(--muted)}
.legend li{display:flex;align-items:center;gap:6px}
.swatch{display:inline-block;width:16px;height:12px;border:1px solid var(--line)}
.certs{list-style:none;margin:0;padding:0;display:grid;gap:14px}
.cert{border:1px solid var(--line);border-left:8px solid var(--unknown);border-radius:8px;padding:12px 16px;
background:#fff}
.cert.s-critical{border-left-color:var(--critical);background:linear-gradient(90deg,var(--critical-bg),#fff 40%)}
.cert.s-warning{border-left-color:var(--warning-fill);background:linear-gradient(90deg,var(--warning-bg),#fff 40%)}
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
.tls{flex:1 1 420px;min-width:0;background:#f6f8fa;border:1px solid var(--line);border-radius:6px;padding:5px 10px;
font-size:13.5px}
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
"""


def _document(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CONTENT_SECURITY_POLICY)}">'
        '<meta name="referrer" content="no-referrer">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
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


def _days_short(days: float | None) -> str:
    if days is None:
        return "?"
    if days < 0:
        return f"expired {int(-days)} d ago"
    return f"{int(days)} d"


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
