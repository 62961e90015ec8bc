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
from finopsd.appkeys import GOVERNANCE
from finopsd.routes.logs import PAGE_HEADERS
from finopsd.spend import usd_text

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


def render_keys(report: dict[str, Any]) -> str:
    """The /keys page: every value escaped here; only names, never keys or digests."""
    key_rows = "".join(
        f"<tr><td><b>{_esc(k['name'])}</b></td><td>{_esc(k['team'] or '—')}</td>"
        f'<td class="status-{_esc(k["status"])}">{_esc(k["status"])}'
        f"{_until(k['expires'])}</td>"
        f"<td>{_esc(', '.join(k['models']) if k['models'] is not None else 'all models')}</td>"
        f"<td>{_budgets(k['budgets'])}</td><td>{_rate(k['rate'])}</td></tr>"
        for k in report["keys"]
    ) or '<tr><td colspan="6" class="muted">no virtual keys configured</td></tr>'
    team_rows = "".join(
        f"<tr><td><b>{_esc(t['name'])}</b></td><td>{_esc(', '.join(t['keys']) or '—')}</td>"
        f"<td>{_budgets(t['budgets'])}</td><td>{_rate(t['rate'])}</td></tr>"
        for t in report["teams"]
    ) or '<tr><td colspan="4" class="muted">no teams configured</td></tr>'
    auth = "every request needs a key" if report["auth_required"] else "keys are optional"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><meta name="referrer" content="no-referrer">
<title>keys · finopsd</title><link rel="stylesheet" href="/static/logs.css">
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml"></head>
<body><header><a class="brand" href="/logs">finopsd</a> <span class="where">virtual keys</span>
<nav class="site"><a href="/logs">logs</a> <a href="/usage">usage</a> <a href="/keys">keys</a></nav></header><main>
<p class="totals">{_esc(auth)}; spend as of {_esc(report['time'])} (UTC calendar windows)</p>
<h2>Keys</h2>
<table class="rows keys"><thead><tr><th>key</th><th>team</th><th>status</th><th>models</th>
<th>budgets</th><th>rate</th></tr></thead><tbody>{key_rows}</tbody></table>
<h2>Teams</h2>
<table class="rows teams"><thead><tr><th>team</th><th>keys</th><th>budgets</th><th>rate</th></tr></thead>
<tbody>{team_rows}</tbody></table>
</main></body></html>"""


@access.admin
async def api_keys(request: web.Request) -> web.Response:
    gov = request.app[GOVERNANCE]
    await gov.sync()
    return web.json_response(gov.report(), headers={"Cache-Control": "no-store"})


@access.admin_page
async def keys_page(request: web.Request) -> web.Response:
    gov = request.app[GOVERNANCE]
    await gov.sync()
    return web.Response(text=render_keys(gov.report()), content_type="text/html", headers=PAGE_HEADERS)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/keys", keys_page)
    router.add_get("/api/keys", api_keys)
