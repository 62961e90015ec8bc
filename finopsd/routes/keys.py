"""``/keys`` and ``/api/keys``: virtual keys and teams with their spend, budgets and rates.

    GET /keys        HTML: one row per key and per team, a bar per budget (spend / amount,
                     % used, when it resets), the current rate against its limit
    GET /api/keys    the same as JSON: {"time", "auth_required", "keys": [...], "teams": [...]}

Both need the admin token when one is set, else a loopback client, and refuse
cross-site fetches, as ``/logs`` does (``finopsd.admin``). Keys are shown by name only: neither
the key nor its digest is ever sent.
"""

from __future__ import annotations

from html import escape
from typing import Any

from aiohttp import web

from finopsd import access
from finopsd.admin import csrf_token
from finopsd.appkeys import GOVERNANCE, RUNTIME
from finopsd.routes.logs import PAGE_HEADERS
from finopsd.spend import usd_text
from finopsd.web.keyforms import PAGE_SIZE, audit_table, edit_form, new_forms, row_actions

__all__ = ["add_routes", "render_keys"]


def _esc(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _budgets(budgets: list[dict[str, Any]]) -> str:
    if not budgets:
        return '<span class="muted">no budget</span>'
    lines = []
    for b in budgets:
        resets = f"resets {b['resets_at']}" if b["resets_at"] else "never resets"
        # <meter> draws the bar without inline styles, which the pages' CSP forbids
        lines.append(
            f'<div class="budget"><meter min="0" max="100" low="80" high="95" optimum="0"'
            f' value="{min(b["percent"], 100):g}">{b["percent"]:g}%</meter>'
            f' {usd_text(b["spent_usd"])} of {usd_text(b["usd"])} / {_esc(b["period"])}'
            f' <b>{b["percent"]:g}%</b> <span class="muted">{_esc(resets)}</span></div>'
        )
    return "".join(lines)


def _until(expires: str | None) -> str:
    return f'<br><span class="muted">until {_esc(expires)}</span>' if expires else ""


def _rate(rate: dict[str, Any]) -> str:
    parts = []
    for used, limit, unit in (("requests_last_minute", "requests_per_minute", "req"),
                              ("tokens_last_minute", "tokens_per_minute", "tok")):
        cap = f" / {rate[limit]:,}" if rate[limit] is not None else ""
        parts.append(f"{rate[used]:,}{cap} {unit}/min")
    return "<br>".join(parts)


def render_keys(report: dict[str, Any], csrf: str = "", audit: list[dict[str, Any]] | None = None,
                page: int = 0) -> str:
    """The /keys page: every value escaped here; only names, never keys or digests."""
    keys = report["keys"][page * PAGE_SIZE:(page + 1) * PAGE_SIZE]
    key_rows = "".join(
        f'<tr data-name="{_esc(k["name"])}"><td><b>{_esc(k["name"])}</b>{_about(k)}</td>'
        f"<td>{_esc(k['team'] or '—')}</td>"
        f'<td class="status-{_esc(k["status"])}">{_esc(k["status"])}'
        f"{_until(k['expires'])}</td>"
        f"<td>{_esc(', '.join(k['models']) if k['models'] is not None else 'all models')}</td>"
        f"<td>{_budgets(k['budgets'])}</td><td>{_rate(k['rate'])}</td>"
        f"<td>{edit_form('key', k)}{row_actions('key', k)}</td></tr>"
        for k in keys
    ) or '<tr><td colspan="7" class="muted">no virtual keys configured</td></tr>'
    team_rows = "".join(
        f'<tr data-name="{_esc(t["name"])}"><td><b>{_esc(t["name"])}</b>{_about(t)}</td>'
        f"<td>{_esc(', '.join(t['keys']) or '—')}</td>"
        f"<td>{_budgets(t['budgets'])}</td><td>{_rate(t['rate'])}</td>"
        f"<td>{edit_form('team', t)}{row_actions('team', t)}</td></tr>"
        for t in report["teams"]
    ) or '<tr><td colspan="5" class="muted">no teams configured</td></tr>'
    auth = "every request needs a key" if report["auth_required"] else "keys are optional"
    pages = _pager(len(report["keys"]), page)
    editor = new_forms() if csrf else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><meta name="referrer" content="no-referrer">
<meta name="csrf-token" content="{_esc(csrf)}">
<title>keys · finopsd</title><link rel="stylesheet" href="/static/logs.css">
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml"></head>
<body><header><a class="brand" href="/logs">finopsd</a> <span class="where">virtual keys</span>
<nav class="site"><a href="/logs">logs</a> <a href="/usage">usage</a> <a href="/keys">keys</a></nav></header><main>
<p class="totals">{_esc(auth)}; spend as of {_esc(report['time'])} (UTC calendar windows)</p>
{editor}
<h2>Keys</h2>
<table class="rows keys"><thead><tr><th>key</th><th>team</th><th>status</th><th>models</th>
<th>budgets</th><th>rate</th><th>change</th></tr></thead><tbody>{key_rows}</tbody></table>{pages}
<h2>Teams</h2>
<table class="rows teams"><thead><tr><th>team</th><th>keys</th><th>budgets</th><th>rate</th><th>change</th></tr></thead>
<tbody>{team_rows}</tbody></table>
{audit_table(audit) if audit is not None else ""}
</main><script src="/static/keys.js"></script></body></html>"""


def _about(item: dict[str, Any]) -> str:
    parts = [p for p in (item.get("description"), item.get("owner") and f"owner: {item['owner']}") if p]
    return f'<br><span class="muted">{_esc(" · ".join(parts))}</span>' if parts else ""


def _pager(total: int, page: int) -> str:
    if total <= PAGE_SIZE:
        return ""
    last = (total - 1) // PAGE_SIZE
    links = [f'<a href="/keys?page={p}">{label}</a>' for p, label in ((page - 1, "← newer"), (page + 1, "older →"))
             if 0 <= p <= last]
    return f'<p class="pager">keys {page * PAGE_SIZE + 1}–{min(total, (page + 1) * PAGE_SIZE)} of {total:,} ' \
        f'{" ".join(links)}</p>'


def annotated_report(request: web.Request) -> dict[str, Any]:
    """``Governance.report()`` with where each key and team lives, its version, description and owner."""
    gov, store = request.app[GOVERNANCE], request.app[RUNTIME].dashboard
    report = gov.report()
    config = gov.config
    entries = {("key", k.name): k for k in config.virtual_keys} | {("team", t.name): t for t in config.teams.values()}
    for kind in ("key", "team"):
        for item in report[f"{kind}s"]:
            entry = entries[(kind, item["name"])]
            row = store.rows.get((kind, item["name"])) if store is not None else None
            item.update(source=entry.source, version=row["version"] if row else None,
                        description=entry.description, owner=entry.owner)
    return report


@access.admin
async def api_keys(request: web.Request) -> web.Response:
    await request.app[GOVERNANCE].sync()
    return web.json_response(annotated_report(request), headers={"Cache-Control": "no-store"})


@access.admin_page
async def keys_page(request: web.Request) -> web.Response:
    await request.app[GOVERNANCE].sync()
    store = request.app[RUNTIME].dashboard
    try:
        page = max(0, int(request.query.get("page", "0")))
    except ValueError:
        page = 0
    audit = await store.audit(50) if store is not None else None
    text = render_keys(annotated_report(request), csrf_token(request), audit, min(page, 10**6))
    return web.Response(text=text, content_type="text/html", headers=PAGE_HEADERS)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/keys", keys_page)
    router.add_get("/api/keys", api_keys)
