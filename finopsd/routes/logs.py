"""``/logs`` and ``/api/logs``, ``/api/sessions``: the request log as HTML pages and as JSON.

    GET /logs                  sessions view (the default): one row per agent task
    GET /logs?view=requests    requests view: filters, search, totals, newest first
    GET /logs/sessions/{id}    one task as a timeline of turns (``after=N``: only turns past N)
    GET /logs/{id}             one exchange as a conversation
    GET /api/sessions          {"items", "next_cursor", "totals"}: sessions for the filters
    GET /api/sessions/{id}     {"session", "turns"}
    GET /api/logs              {"items", "next_cursor", "totals"} for the same filters
    GET /api/logs/{id}         one item with the full conversation
    GET /static/…              the pages' CSS and JS

Filters (page and API alike): ``q`` (FTS5 syntax; input FTS5 rejects is searched as a
literal phrase by the store), ``provider``, ``model``, ``key``, ``team``, ``status``
(requests: ok | error | client_closed; sessions: ok | error | running), ``since``/``until``
(ISO 8601 or epoch seconds; a time without a zone is UTC), ``min_cost`` (USD), ``limit``
(1-500), ``cursor`` (the previous ``next_cursor``). Requests only: ``stream`` (true |
false), ``min_latency_ms``, ``order`` (newest | relevance), ``user``, ``project``, ``tag``
(attribution: ``finopsd.attribution``); a session filter means "the
session has a request that matches", so these request-level knobs are refused there
with a 400 rather than silently ignored. Both APIs take ``totals=false`` (skip the
totals: live tail polls every 2 s and shows none); /api/logs also ``preview=true`` (add
the first words of the newest user turn to each item; costs one row read per item).

All of them need the admin token when one is set, else a loopback client, and refuse
cross-site fetches and DNS-rebound host names (``finopsd.admin``). Pages answer
``Cache-Control: no-store`` and a strict CSP: they show conversations, and no row text
may ever run as script.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web

from finopsd import access
from finopsd.appkeys import LOGSTORE, RUNTIME
from finopsd.errors import BadRequest, NotFound
from finopsd.log.store import LogStore
from finopsd.web import STATIC_DIR
from finopsd.web.detail import render_detail
from finopsd.web.items import detail_item, session_detail, session_item, summary_item
from finopsd.web.pages import render_list, render_not_found
from finopsd.web.sessions import render_sessions
from finopsd.web.timeline import render_session

__all__ = ["add_routes", "parse_filters", "parse_time", "search_items", "session_items"]

MAX_LIMIT: Final = 500
DEFAULT_LIMIT: Final = 50
STATUSES: Final = ("ok", "error", "client_closed")
SESSION_STATUSES: Final = ("ok", "error", "running")
# per request, not per session
REQUEST_ONLY: Final = ("stream", "min_latency_ms", "order", "user", "project", "tag")
VIEWS: Final = ("sessions", "requests")
_EPOCH: Final = re.compile(r"[+-]?[0-9]{1,20}(\.[0-9]{1,20})?")
_DIGITS: Final = re.compile(r"[0-9]{1,6}")  # ASCII only: "²".isdigit() is true and int("²") fails
TRUE: Final = ("true", "1", "yes", "on")
FALSE: Final = ("false", "0", "no", "off")

PAGE_HEADERS: Final = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # self-hosted CSS and JS only: a prompt that smuggled markup past escaping still could
    # not run a script, load a remote image (a beacon), or be framed
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}


# ---------------------------------------------------------------- query parameters


def parse_time(value: str, param: str) -> float:
    """ISO 8601 (``2026-01-31``, ``2026-01-31T09:00Z``, with an offset) or epoch seconds."""
    text = value.strip()
    try:
        if _EPOCH.fullmatch(text):
            return float(text)
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)  # the pages show UTC, so a bare time means UTC
        return moment.timestamp()
    except (ValueError, OverflowError):
        raise BadRequest(
            f"{param} must be an ISO 8601 time (2026-01-31T09:00Z) or epoch seconds, got {value[:40]!r}",
            param=param,
        ) from None


def _number(value: str, param: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise BadRequest(f"{param} must be a number >= 0, got {value[:40]!r}", param=param)
    return number


def parse_flag(query: Mapping[str, str], param: str, default: bool | None) -> bool | None:
    value = query.get(param, "").strip().lower()
    if not value:
        return default
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise BadRequest(f"{param} must be true or false, got {value[:40]!r}", param=param)


def parse_filters(query: Mapping[str, str], *, sessions: bool = False) -> dict[str, Any]:
    """Query parameters as ``LogStore.search`` (or, with ``sessions``, ``LogStore.sessions``)
    keywords; a clear 400 for any bad value.

    An empty parameter means "any" (an HTML form sends every field, filled or not).
    """
    kw: dict[str, Any] = {"limit": DEFAULT_LIMIT}
    q = query.get("q", "")
    if q.strip():
        kw["q"] = q
    for param in ("provider", "model", "key", "team", "cursor", "user", "project", "tag"):
        if query.get(param):
            kw[param] = query[param]
    statuses = SESSION_STATUSES if sessions else STATUSES
    status = query.get("status", "")
    if status:
        if status not in statuses:
            raise BadRequest(f"status must be one of {', '.join(statuses)}, got {status[:40]!r}", param="status")
        kw["status"] = status
    for param in ("since", "until"):
        if query.get(param, "").strip():
            kw[param] = parse_time(query[param], param)
    if query.get("min_cost", "").strip():
        kw["min_cost"] = _number(query["min_cost"].strip(), "min_cost")
    if query.get("limit", "").strip():
        limit = query["limit"].strip()
        if not _DIGITS.fullmatch(limit) or not 1 <= int(limit) <= MAX_LIMIT:
            raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit[:40]!r}", param="limit")
        kw["limit"] = int(limit)
    if sessions:
        for param in REQUEST_ONLY:
            if query.get(param, "").strip():
                raise BadRequest(f"{param} filters requests, not sessions: use /api/logs", param=param)
        return kw
    stream = parse_flag(query, "stream", None)
    if stream is not None:
        kw["stream"] = stream
    if query.get("min_latency_ms", "").strip():
        kw["min_latency_ms"] = _number(query["min_latency_ms"].strip(), "min_latency_ms")
    order = query.get("order", "") or "newest"
    if order not in ("newest", "relevance"):
        raise BadRequest(f"order must be newest or relevance, got {order[:40]!r}", param="order")
    kw["order"] = order
    return kw


async def search_items(
    store: LogStore, kw: dict[str, Any], *, totals: bool = True, previews: bool = False
) -> dict[str, Any]:
    """A page as the API answers it; the page, the API and the CLI all come through here."""
    page = await store.search(**kw, with_totals=totals)
    items = [summary_item(row) for row in page["items"]]
    if not previews:
        for item in items:
            item.pop("preview", None)
    return {"items": items, "next_cursor": page["next_cursor"], "totals": page["totals"]}


async def session_items(store: LogStore, kw: dict[str, Any], *, totals: bool = True) -> dict[str, Any]:
    """A page of sessions as ``/api/sessions`` answers it (page, API and CLI alike)."""
    try:
        page = await store.sessions(**kw, with_totals=totals)
    except BadRequest:
        raise  # the store's own 400, naming its parameter
    except ValueError:  # the contract's word for a cursor the store did not make
        raise BadRequest("invalid cursor", param="cursor") from None
    items = [session_item(s) for s in page["items"]]
    return {"items": items, "next_cursor": page["next_cursor"], "totals": page["totals"]}


# ---------------------------------------------------------------- handlers


def _json(body: Any) -> web.Response:
    return web.json_response(body, headers={"Cache-Control": "no-store"})


@access.admin
async def api_logs(request: web.Request) -> web.Response:
    kw = parse_filters(request.query)
    totals = parse_flag(request.query, "totals", True)
    previews = parse_flag(request.query, "preview", False)
    return _json(await search_items(request.app[LOGSTORE], kw, totals=bool(totals), previews=bool(previews)))


@access.admin
async def api_log(request: web.Request) -> web.Response:
    row = await request.app[LOGSTORE].get(request.match_info["id"])
    if row is None:
        raise NotFound(f"no log row with id {request.match_info['id'][:80]!r}", param="id", code="log_not_found")
    return _json(detail_item(row))


@access.admin
async def api_sessions(request: web.Request) -> web.Response:
    kw = parse_filters(request.query, sessions=True)
    totals = parse_flag(request.query, "totals", True)
    return _json(await session_items(request.app[LOGSTORE], kw, totals=bool(totals)))


@access.admin
async def api_session(request: web.Request) -> web.Response:
    body = await request.app[LOGSTORE].session(request.match_info["id"])
    if body is None:
        raise NotFound(f"no session with id {request.match_info['id'][:80]!r}", param="id",
                       code="session_not_found")  # fmt: skip
    return _json(session_detail(body))


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", headers=PAGE_HEADERS)


@access.admin_page
async def logs_page(request: web.Request) -> web.Response:
    providers = sorted(request.app[RUNTIME].config.providers)
    view = request.query.get("view") or "sessions"
    render = render_sessions if view == "sessions" else render_list
    try:
        if view not in VIEWS:
            raise BadRequest(f"view must be sessions or requests, got {view[:40]!r}", param="view")
        kw = parse_filters(request.query, sessions=view == "sessions")
    except BadRequest as e:
        # the form stays, filled as sent, so the person can fix the field
        return _html(render(request.query, None, providers, error=e.message), status=400)
    store = request.app[LOGSTORE]
    try:
        if view == "sessions":
            # the live page asks for totals only every few refreshes (sessions.js)
            page = await session_items(store, kw, totals=bool(parse_flag(request.query, "totals", True)))
        else:
            page = await search_items(store, kw, previews="q" not in kw)
    except BadRequest as e:  # a cursor the store did not make
        return _html(render(request.query, None, providers, error=e.message), status=400)
    return _html(render(request.query, page, providers))


@access.admin_page
async def session_page(request: web.Request) -> web.Response:
    session_id = request.match_info["id"]
    after = request.query.get("after", "").strip()
    if after and not _DIGITS.fullmatch(after):
        raise BadRequest(f"after must be a turn number, got {after[:40]!r}", param="after")
    body = await request.app[LOGSTORE].session(session_id)
    if body is None:
        return _html(render_not_found(session_id, what="session"), status=404)
    return _html(render_session(session_detail(body), after=int(after or 0)))


@access.admin_page
async def log_page(request: web.Request) -> web.Response:
    request_id = request.match_info["id"]
    row = await request.app[LOGSTORE].get(request_id)
    if row is None:
        return _html(render_not_found(request_id), status=404)
    return _html(render_detail(detail_item(row)))


# The pages' few small CSS, JS and SVG files, read once: no file is opened per request (a
# client that hangs up mid-send leaves no open file behind), and no name reaches the disk.
STATIC_TYPES: Final = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
STATIC_FILES: Final = {p.name: (p.read_bytes(), STATIC_TYPES[p.suffix])
                       for p in sorted(STATIC_DIR.iterdir()) if p.suffix in STATIC_TYPES}


@access.public  # no secrets in CSS or JS: the login page may use them too
async def static_file(request: web.Request) -> web.Response:
    found = STATIC_FILES.get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    body, content_type = found
    return web.Response(body=body, content_type=content_type, headers={"Cache-Control": "max-age=3600"})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/logs", logs_page)
    router.add_get("/logs/sessions/{id}", session_page)
    router.add_get("/logs/{id}", log_page)
    router.add_get("/api/logs", api_logs)
    router.add_get("/api/logs/{id}", api_log)
    router.add_get("/api/sessions", api_sessions)
    router.add_get("/api/sessions/{id}", api_session)
    router.add_get("/static/{name}", static_file)
