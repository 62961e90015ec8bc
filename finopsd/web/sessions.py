"""The ``/logs`` sessions view (the default): one row per agent task, newest-active first.

A row is a task as a person thinks of it: when it started, whose key, what the user
first asked, which models, how many turns, tokens, cost, how long, and whether any turn
failed or it is still running. A search names the turn where the text first appeared.
Every value from a row is escaped here (``pages.esc``); the snippet comes escaped from
the store with ``<mark>`` only, and ``items.safe_snippet`` has checked that.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from finopsd.web.items import fmt_cost, fmt_duration, fmt_tokens
from finopsd.web.pages import (
    esc, filter_form, list_fields, render_page, saved_cell, saved_total, session_href, template, views_nav,
)

__all__ = ["render_sessions", "session_row", "status_badge"]

STATUS_TITLES: Final = {"running": "a request ended less than 2 minutes ago", "error": "a request failed"}


def status_badge(status: str | None, title: str = "", code: int | None = None) -> str:
    """``ok``, ``error 502``, ``running``… coloured by the status alone."""
    shown = status or "?"
    title_attr = f' title="{esc(title)}"' if title else ""
    return f'<span class="st st-{esc(shown)}"{title_attr}>{esc(shown)}{f" {esc(code)}" if code else ""}</span>'


def session_row(item: dict[str, Any]) -> str:
    """One ``<tr>``; ``sessions.js`` swaps in the server's rows when it refreshes, so there is one renderer."""
    href = esc(session_href(str(item["id"])))
    usage = item.get("usage") or {}
    who = " / ".join(esc(x) for x in (item.get("key"), item.get("team")) if x) or '<span class="muted">—</span>'
    match = item.get("match")
    if isinstance(match, dict) and match.get("snippet") is not None:
        turn = match.get("turn") if isinstance(match.get("turn"), int) else None
        text = (f'<a href="{esc(session_href(str(item["id"]), turn))}"><span class="turn-no">turn {turn or "?"}</span>'
                f' {match["snippet"]}</a>')  # fmt: skip
    else:
        words = esc(item.get("first_words") or "") or '<span class="muted">(no text)</span>'
        text = f'<a href="{href}">{words}</a>'
    turns, errors = item.get("turns") or 0, item.get("errors") or 0
    status_title = f"{errors} of {turns} requests failed" if errors else STATUS_TITLES.get(item.get("status") or "", "")
    tokens_title = f"cached {usage.get('cached_tokens') or 0}, total {usage.get('total_tokens') or 0}"
    models = ", ".join(esc(m) for m in item.get("models") or ()) or '<span class="muted">?</span>'
    return (
        f'<tr data-id="{esc(item["id"])}" data-status="{esc(item.get("status"))}">'
        f'<td class="time"><a href="{href}">{esc((item.get("time") or "")[:19].replace("T", " "))}</a></td>'
        f'<td>{who}</td><td class="prompt">{text}</td><td class="models">{models}</td>'
        f'<td class="num">{turns:,}</td>'
        f'<td class="num" title="{esc(tokens_title)}">{esc(fmt_tokens(usage))}</td>'
        f'<td class="num">{esc(fmt_cost(item.get("cost_usd")))}{saved_cell(item.get("cache_savings_usd"))}</td>'
        f'<td class="num">{esc(fmt_duration(item.get("duration_ms")))}</td>'
        f"<td>{status_badge(item.get('status'), status_title)}</td></tr>"
    )


def totals_html(totals: dict[str, Any] | None) -> str:
    if not totals:
        return ""
    n, requests = totals["sessions"], totals["requests"]
    return (
        f"<b>{n:,}</b> session{'' if n == 1 else 's'} · <b>{requests:,}</b> request{'' if requests == 1 else 's'} · "
        f"<b>{totals['prompt_tokens']:,}</b> prompt + <b>{totals['completion_tokens']:,}</b> completion tokens · "
        f"<b>{esc(fmt_cost(totals['cost_usd']))}</b>" + saved_total(totals)
    )


def render_sessions(
    query: Mapping[str, str],
    page: dict[str, Any] | None,
    providers: Iterable[str],
    error: str | None = None,
) -> str:
    """The whole sessions view. ``page`` is the ``/api/sessions`` answer, None on a bad filter."""
    live = not query.get("cursor") and error is None
    main = template("sessions.html").substitute(
        **list_fields(query, page, error, noun="sessions"),
        views=views_nav(query, sessions=True),
        form=filter_form(query, providers, sessions=True),
        totals=totals_html(page.get("totals") if page else None),
        live="1" if live else "",
        live_state=" checked" if live else " disabled",
        text_header="match" if query.get("q", "").strip() else "first words",
        rows="\n".join(session_row(item) for item in page["items"]) if page else "",
    )
    return render_page(main, title="Sessions", script="sessions.js")
