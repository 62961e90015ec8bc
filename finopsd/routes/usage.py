"""``/usage`` and ``/api/usage``: cost, tokens, latency and errors over time, from the roll-ups.

    GET /api/usage   the series behind every chart, as JSON
    GET /usage       the same as a page of inline SVG charts, top-N tables and budget burn-down

Query (both): ``range`` (24h | 7d | 30d | custom; default 7d), ``since``/``until`` (with
custom: ISO 8601 or epoch seconds), ``grain`` (hour | day; default hour up to two days),
``group_by`` (team | key | model | provider; default team), ``team``/``key``/``model``/
``provider`` (only that one), and for the API ``metric`` (comma-separated; default all).
Buckets are whole UTC hours or days, so a range starts at the start of its first bucket.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from finopsd import access
from finopsd.appkeys import GOVERNANCE, LOGSTORE
from finopsd.errors import BadRequest
from finopsd.reports.burn import RECENT_S, burn_down
from finopsd.reports.page import render_usage
from finopsd.reports.series import GROUPS, METRICS, Window, window
from finopsd.routes.logs import PAGE_HEADERS, parse_time
from finopsd.spend import iso

__all__ = ["add_routes", "parse_usage"]

MAX_FILTER = 200  # characters of a team, key, model or provider name
MAX_ALERTS = 20  # the newest alerts fired, with how their delivery went


def parse_usage(query: Mapping[str, str]) -> tuple[Window, str, dict[str, str], tuple[str, ...]]:
    """(buckets, group_by, filters, metrics) from the query; BadRequest names the bad parameter."""
    since = parse_time(query["since"], "since") if query.get("since") else None
    until = parse_time(query["until"], "until") if query.get("until") else None
    try:
        span = window(query.get("range") or "7d", since, until, query.get("grain") or None)
    except ValueError as e:
        raise BadRequest(str(e), param="range") from None
    group_by = query.get("group_by") or "team"
    if group_by not in GROUPS:
        raise BadRequest(f"group_by must be one of {', '.join(GROUPS)}, got {group_by[:40]!r}", param="group_by")
    filters = {}
    for name in GROUPS:
        value = query.get(name, "")
        if len(value) > MAX_FILTER:
            raise BadRequest(f"{name} is longer than {MAX_FILTER} characters", param=name)
        if value:
            filters[name] = value
    metrics = tuple(m.strip() for m in (query.get("metric") or "").split(",") if m.strip()) or METRICS
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise BadRequest(f"metric must be among {', '.join(METRICS)}; unknown: {unknown[0][:40]!r}", param="metric")
    return span, group_by, filters, metrics


async def usage_answer(request: web.Request, metrics: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The series for the query, plus each budget's burn-down; times as epoch seconds."""
    span, group_by, filters, asked = parse_usage(request.query)
    store, gov = request.app[LOGSTORE], request.app[GOVERNANCE]
    body = await store.usage(span, group_by, filters, metrics or asked)
    await gov.sync()
    now = gov.clock()
    recent = window("custom", now - RECENT_S, now, "day", now=now)  # whole days: up to 8 of them
    spent = {(scope, g["name"]): g["totals"]["cost_usd"] for scope in ("key", "team")
             for g in (await store.usage(recent, scope, {}, ("cost_usd",)))["groups"]}
    body["budgets"] = burn_down(gov.report(), spent, now - recent.since, now)
    body["alerts"] = [{**a, "ts": iso(a["ts"])} for a in await store.alerts(limit=MAX_ALERTS)]
    return body


@access.admin
async def api_usage(request: web.Request) -> web.Response:
    body = await usage_answer(request)
    body["since"], body["until"] = iso(body["since"]), iso(body["until"])
    body["buckets"] = [iso(b) for b in body["buckets"]]
    return web.json_response(body, headers={"Cache-Control": "no-store"})


@access.admin_page
async def usage_page(request: web.Request) -> web.Response:
    try:
        body = await usage_answer(request, METRICS)
    except BadRequest as e:  # the form stays, filled as sent, so the person can fix the field
        return web.Response(text=render_usage(request.query, None, error=e.message), status=400,
                            content_type="text/html", headers=PAGE_HEADERS)
    return web.Response(text=render_usage(request.query, body), content_type="text/html", headers=PAGE_HEADERS)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/usage", usage_page)
    router.add_get("/api/usage", api_usage)
