"""The ``/logs`` requests view (filter form, totals, one table row per request, the pager)
and what both views share: the form, the view tabs, links that keep the filters.

Templates are ``string.Template`` files in ``templates/``; every value put into
one is either escaped here or built here from escaped parts, so no template
ever receives raw row text. (A template engine would buy loops and
autoescaping; two pages do not need a dependency for that.)
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from html import escape
from string import Template
from typing import Any, Final
from urllib.parse import quote, urlencode

from finopsd.web import TEMPLATES_DIR
from finopsd.web.items import fmt_cost, fmt_ms, fmt_tokens

__all__ = [
    "FORM_FIELDS", "TURNS_PER_PAGE", "esc", "filter_form", "list_fields", "page_url", "render_list",
    "render_not_found", "render_page", "session_href", "template", "views_nav",
]  # fmt: skip

# The filters the form round-trips, in form order; ``view``, ``cursor`` and ``limit`` ride along in links.
FORM_FIELDS: Final = (
    "q", "provider", "model", "key", "team", "status", "stream", "since", "until", "min_cost",
    "min_latency_ms", "order", "user", "project", "tag",
)  # fmt: skip
# What a session can be filtered by (a request-level knob such as `stream` cannot say which task).
SESSION_FIELDS: Final = ("q", "provider", "model", "key", "team", "status", "since", "until", "min_cost")
STATUSES: Final = (("", "any status"), ("ok", "ok"), ("error", "error"), ("client_closed", "client closed"))
SESSION_STATUSES: Final = (("", "any status"), ("ok", "ok"), ("error", "with errors"), ("running", "running"))
STREAMS: Final = (("", "stream or not"), ("true", "streamed"), ("false", "not streamed"))
ORDERS: Final = (("newest", "newest first"), ("relevance", "best match first"))


@functools.cache
def template(name: str) -> Template:
    return Template((TEMPLATES_DIR / name).read_text(encoding="utf-8"))


WHERE: Final = '<span class="where">request logs</span>'


def render_page(main: str, *, title: str, header: str = WHERE, main_attrs: str = "", script: str = "") -> str:
    """``main`` inside the one layout every page shares (``page.html``). Every argument is HTML
    already: ``title`` escaped, the rest built from escaped parts; ``script`` names a static file."""
    tag = f'<script src="/static/{script}" defer></script>' if script else ""
    return template("page.html").substitute(title=title, header=header, main_attrs=main_attrs, main=main, script=tag)


def esc(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def page_url(query: Mapping[str, str], **changes: str | None) -> str:
    """``/logs`` with the current filters, minus empty ones, plus ``changes`` (None removes a key)."""
    params = {k: v for k, v in query.items() if k in (*FORM_FIELDS, "view", "limit", "cursor") and v}
    for k, v in changes.items():
        if v is None:
            params.pop(k, None)
        else:
            params[k] = v
    return "/logs" + (f"?{urlencode(params)}" if params else "")


TURNS_PER_PAGE: Final = 100  # a task's timeline shows this many turns per page (a page of 60 Roo turns: ~380 KB)


def session_href(session_id: str, turn: int | None = None) -> str:
    """A session's timeline, at ``turn`` (on the page that holds it)."""
    href = "/logs/sessions/" + quote(session_id, safe="")
    if turn and turn > TURNS_PER_PAGE:
        href += f"?after={(turn - 1) // TURNS_PER_PAGE * TURNS_PER_PAGE}"
    return href + (f"#turn-{turn}" if turn else "")


def views_nav(query: Mapping[str, str], sessions: bool) -> str:
    """The two views as tabs; each link keeps the filters that both views understand."""
    links = []
    for label, is_sessions in (("Sessions", True), ("Requests", False)):
        statuses = SESSION_STATUSES if is_sessions else STATUSES
        keep = {k: v for k, v in query.items() if k in SESSION_FIELDS and v
                and (k != "status" or v in dict(statuses))}  # fmt: skip
        if not is_sessions:
            keep = {"view": "requests", **keep}
        href = "/logs" + (f"?{urlencode(keep)}" if keep else "")
        current = ' class="on" aria-current="page"' if is_sessions == sessions else ""
        links.append(f'<a href="{esc(href)}"{current}>{label}</a>')
    return f'<nav class="views">{"".join(links)}</nav>'


# ---------------------------------------------------------------- the filter form


def _input(name: str, value: str, label: str, kind: str = "text", extra: str = "") -> str:
    return (
        f'<label>{esc(label)} <input type="{kind}" name="{name}" value="{esc(value)}"{extra}></label>'
    )


def _select(name: str, value: str, options: Iterable[tuple[str, str]], label: str) -> str:
    opts = "".join(
        f'<option value="{esc(v)}"{" selected" if v == value else ""}>{esc(text)}</option>' for v, text in options
    )
    return f'<label>{esc(label)} <select name="{name}">{opts}</select></label>'


def filter_form(query: Mapping[str, str], providers: Iterable[str], sessions: bool = False) -> str:
    """The search box and filters; the sessions view leaves out what only a request has."""
    v = {name: query.get(name, "") for name in FORM_FIELDS}
    hidden = f'<input type="hidden" name="limit" value="{esc(query["limit"])}">' if query.get("limit") else ""
    if not sessions:
        hidden += '<input type="hidden" name="view" value="requests">'
    choices = "".join(f'<option value="{esc(p)}">' for p in providers)
    per_request = "" if sessions else (
        _select("stream", v["stream"], STREAMS, "stream")
        + _input("min_latency_ms", v["min_latency_ms"], "min ms", "number", ' min="0" step="any" size="6"')
        + _select("order", v["order"] or "newest", ORDERS, "order")
        + _input("user", v["user"], "user", extra=' size="10"')
        + _input("project", v["project"], "project", extra=' size="10"')
        + _input("tag", v["tag"], "tag", extra=' size="8"')
    )
    return (
        '<form id="filters" class="filters" method="get" action="/logs">'
        '<div class="search"><input type="search" name="q" aria-label="search the conversations"'
        f' value="{esc(v["q"])}" placeholder="search conversations: words, &quot;a phrase&quot;, prefix*,'
        ' a OR b, NEAR(a b)"><button type="submit">Search</button>'
        f' <a href="{"/logs" if sessions else "/logs?view=requests"}">clear</a></div>'
        '<div class="fields">'
        + _input("provider", v["provider"], "provider", extra=' list="providers" size="10"')
        + f'<datalist id="providers">{choices}</datalist>'
        + _input("model", v["model"], "model", extra=' size="18"')
        + _input("key", v["key"], "key", extra=' size="10"')
        + _input("team", v["team"], "team", extra=' size="10"')
        + _select("status", v["status"], SESSION_STATUSES if sessions else STATUSES, "status")
        + _input("since", v["since"], "since", extra=' size="16" placeholder="2026-01-31T09:00Z"')
        + _input("until", v["until"], "until", extra=' size="16" placeholder="ISO 8601 or epoch s"')
        + _input("min_cost", v["min_cost"], "min $", "number", ' min="0" step="any" size="6"')
        + per_request
        + hidden
        + "</div></form>"
    )


# ---------------------------------------------------------------- rows and totals


def _status_cell(item: dict[str, Any]) -> str:
    status = item.get("status") or "?"
    error = item.get("error") or {}
    title = " — ".join(str(x) for x in (error.get("type"), error.get("message")) if x)
    code = f" {item['status_code']}" if item.get("status_code") and status != "ok" else ""
    title_attr = f' title="{esc(title)}"' if title else ""
    return f'<span class="st st-{esc(status)}"{title_attr}>{esc(status)}{esc(code)}</span>'


def row_html(item: dict[str, Any]) -> str:
    """One ``<tr>``; ``logs.js`` builds the same cells for rows that live tail adds."""
    rid = esc(item["id"])
    href = "/logs/" + esc(quote(str(item["id"]), safe=""))
    usage = item.get("usage") or {}
    who = " / ".join(esc(x) for x in (item.get("key"), item.get("team"), item.get("user"), item.get("project"))
                     if x) or '<span class="muted">—</span>'
    what = f"{esc(item.get('provider') or '?')} / {esc(item.get('upstream_model') or item.get('model') or '?')}"
    if item.get("snippet"):
        text = item["snippet"]  # escaped by the store, <mark> only (items.safe_snippet checked)
    else:
        text = esc(item.get("preview") or "")
    tokens_title = f"cached {usage.get('cached_tokens') or 0}, reasoning {usage.get('reasoning_tokens') or 0}"
    return (
        f'<tr data-id="{rid}" data-ts="{esc(item.get("ts"))}">'
        f'<td class="time"><a href="{href}">{esc((item.get("time") or "")[:19].replace("T", " "))}</a></td>'
        f"<td>{who}</td><td>{what}</td><td>{_status_cell(item)}</td>"
        f'<td class="num">{fmt_ms(item.get("duration_ms"))}</td><td class="num">{fmt_ms(item.get("ttft_ms"))}</td>'
        f'<td class="num" title="{esc(tokens_title)}">{esc(fmt_tokens(usage))}</td>'
        f'<td class="num">{esc(fmt_cost(item.get("cost_usd")))}{saved_cell(item.get("cache_savings_usd"))}</td>'
        f'<td class="prompt"><a href="{href}">{text or "<span class=muted>(no text)</span>"}</a></td></tr>'
    )


def saved_cell(usd: float | None) -> str:
    """What prompt caching saved on a row, under its cost (nothing when it saved nothing)."""
    if not usd or abs(usd) < 5e-7:
        return ""
    word = "saved" if usd > 0 else "cache write"
    return f'<br><small class="saved">{word} {esc(fmt_cost(abs(usd)))}</small>'


def saved_total(totals: dict[str, Any]) -> str:
    saved = totals.get("cache_savings_usd") or 0.0
    return f" (<b>{esc(fmt_cost(saved))}</b> saved by prompt caching)" if saved > 0 else ""


def totals_html(totals: dict[str, Any] | None) -> str:
    if not totals:
        return ""
    return (
        f"<b>{totals['requests']:,}</b> request{'' if totals['requests'] == 1 else 's'} · "
        f"<b>{totals['prompt_tokens']:,}</b> prompt + <b>{totals['completion_tokens']:,}</b> completion tokens · "
        f"<b>{esc(fmt_cost(totals['cost_usd']))}</b>"
        + saved_total(totals)
        + f" · <b>{totals['error_rate'] * 100:.1f} %</b> errors"
    )


def list_fields(
    query: Mapping[str, str], page: dict[str, Any] | None, error: str | None, *, noun: str,
    next_label: str = "Older →",
) -> dict[str, str]:  # fmt: skip
    """What both list views put around their rows: the error, the pager, the empty notice."""
    pager = ""
    if query.get("cursor"):
        pager += f'<a href="{esc(page_url(query, cursor=None))}">← newest</a> '
    if page and page.get("next_cursor"):
        pager += f'<a rel="next" href="{esc(page_url(query, cursor=page["next_cursor"]))}">{next_label}</a> '
    empty = ""
    if not (page and page["items"]) and error is None:
        empty = f'<p class="empty" id="empty">No {noun} match these filters.</p>'
    return {"error": f'<p class="error" role="alert">{esc(error)}</p>' if error else "", "pager": pager,
            "empty": empty}  # fmt: skip


def render_list(
    query: Mapping[str, str],
    page: dict[str, Any] | None,
    providers: Iterable[str],
    error: str | None = None,
) -> str:
    """The requests view. ``page`` is the API answer (items shaped by ``items``), None on a bad filter."""
    by_rank = query.get("order") == "relevance" and bool(query.get("q", "").strip())
    tail = not query.get("cursor") and not by_rank and error is None
    main = template("logs.html").substitute(
        **list_fields(query, page, error, noun="requests", next_label="More matches →" if by_rank else "Older →"),
        views=views_nav(query, sessions=False),
        form=filter_form(query, providers),
        totals=totals_html(page.get("totals") if page else None),
        tail="1" if tail else "",
        tail_disabled="" if tail else " disabled",
        text_header="match" if query.get("q", "").strip() else "prompt",
        rows="\n".join(row_html(item) for item in page["items"]) if page else "",
    )
    return render_page(main, title="Request logs", script="logs.js")


def render_not_found(wanted_id: str, what: str = "request") -> str:
    rows = "Log rows" if what == "request" else "Sessions"
    main = template("notfound.html").substitute(id=esc(wanted_id), what=esc(what), rows=rows)
    return render_page(main, title="Not found", header='<a href="/logs">← all sessions</a>')
