"""The ``/logs/sessions/{id}`` page: one agent task as a timeline of turns.

Each turn shows only what it added (the store's ``new_messages``: the system prompt and
first ask on turn 1, then the agent's tool results and the user's words), then the
model's answer and tool calls, with the turn's tokens, cost and latency and a link to
the request's own page. Messages render as on the request page (``detail.message_html``),
so a tool result is named after the call it answers, even one from an earlier turn.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote

from finopsd.web.detail import call_names_of, message_html
from finopsd.web.items import fmt_cost, fmt_duration, fmt_ms, fmt_tokens, reply_message
from finopsd.web.pages import TURNS_PER_PAGE, esc, render_page, template
from finopsd.web.sessions import STATUS_TITLES, status_badge

__all__ = ["render_session"]

TITLE_CHARS: Final = 80
SOURCES: Final = {
    "header": "the client's session id header",
    "prefix": "the prefix rule (each request extends the previous one)",
    "response_chain": "the Responses API's previous_response_id chain",
    "new": "its first request (nothing earlier matched)",
}


def _answer(turn: dict[str, Any]) -> dict[str, Any] | None:
    answer = turn.get("answer")
    reply = reply_message(answer) if isinstance(answer, dict) else None
    return None if reply is None else {**reply, "final": True}


def _facts(s: dict[str, Any]) -> str:
    usage = s.get("usage") or {}
    turns, errors = s.get("turns") or 0, s.get("errors") or 0
    rows = [
        ("started", (s.get("time") or "").replace("T", " ").replace("Z", " UTC")),
        ("last activity", (s.get("last_time") or "").replace("T", " ").replace("Z", " UTC")),
        ("duration", fmt_duration(s.get("duration_ms"))),
        ("key / team", " / ".join(str(x) for x in (s.get("key"), s.get("team")) if x) or "—"),
        ("models", ", ".join(s.get("models") or ()) or "—"),
        ("turns", f"{turns:,}" + (f" ({errors} failed)" if errors else "")),
        ("tokens", f"{usage.get('prompt_tokens') or 0:,} prompt ({usage.get('cached_tokens') or 0:,} cached)"
                   f" → {usage.get('completion_tokens') or 0:,} completion"),
        ("cost", fmt_cost(s.get("cost_usd")) + (
            f" (saved {fmt_cost(s['cache_savings_usd'])} by prompt caching)"
            if (s.get("cache_savings_usd") or 0) > 5e-7 else "")),
        ("threaded by", SOURCES.get(str(s.get("source")), str(s.get("source") or "—"))),
        ("session id", s.get("id")),
    ]
    cells = "".join(f'<div><dt>{esc(k)}</dt><dd class="fact-{esc(k.replace(" ", "-"))}">{esc(v)}</dd></div>'
                    for k, v in rows)  # fmt: skip
    status = status_badge(s.get("status"), STATUS_TITLES.get(str(s.get("status")), ""))
    return f'<dl class="facts">{cells}<div><dt>status</dt><dd class="fact-status">{status}</dd></div></dl>'


def _turn_head(turn: dict[str, Any]) -> str:
    n = int(turn.get("turn") or 0)
    usage = turn.get("usage") or {}
    rid = str(turn.get("request_id") or "")
    latency = fmt_ms(turn.get("duration_ms")) + (f" (TTFT {fmt_ms(turn['ttft_ms'])})" if turn.get("ttft_ms") else "")
    cached = usage.get("cached_tokens") or 0
    parts = [
        f'<a class="turn-no" href="#turn-{n}">turn {n}</a>',
        f'<span class="muted">{esc((turn.get("time") or "")[11:19])}</span>',
        esc(turn.get("model") or "?"),
        status_badge(turn.get("status"), code=turn.get("status_code") if turn.get("status") != "ok" else None),
        f'<span title="cached {cached:,}">{esc(fmt_tokens(usage))} tokens</span>',
        esc(fmt_cost(turn.get("cost_usd"))),
        esc(latency),
    ]
    link = f'<a class="request-link" href="/logs/{esc(quote(rid, safe=""))}">request detail →</a>'
    return f'<div class="turn-head">{" · ".join(parts)}{link}</div>'


def _turn(turn: dict[str, Any], call_names: dict[str, str], stored: bool) -> str:
    n = int(turn.get("turn") or 0)
    partial = turn.get("status") != "ok"
    body = [message_html(m, call_names, partial) for m in turn.get("new_messages") or () if isinstance(m, dict)]
    answer = _answer(turn)
    if answer is not None:
        body.append(message_html(answer, call_names, partial))
    elif stored:
        body.append('<p class="muted no-answer">No answer was received.</p>')
    error = turn.get("error")
    if isinstance(error, dict):
        body.append(f'<div class="error" role="alert"><b>{esc(error.get("type") or "error")}</b>:'
                    f' {esc(error.get("message") or "")}</div>')  # fmt: skip
    return f'<section class="turn" id="turn-{n}" data-turn="{n}">{_turn_head(turn)}{"".join(body)}</section>'


def _pager(session_id: str, after: int, end: int, more: bool) -> str:
    """Links to the earlier and later pages of turns (``end``: the last turn shown)."""
    base = "/logs/sessions/" + quote(session_id, safe="")
    links = []
    if after > 0:
        earlier = max(0, after - TURNS_PER_PAGE)
        links.append(f'<a href="{esc(base + (f"?after={earlier}" if earlier else ""))}">← earlier turns</a>')
    if more:
        links.append(f'<a rel="next" href="{esc(base + f"?after={end}")}">later turns →</a>')
    return f'<nav class="pager">{" ".join(links)}</nav>' if links else ""


def render_session(detail: dict[str, Any], after: int = 0) -> str:
    """The whole page for one ``items.session_detail``: TURNS_PER_PAGE turns after turn ``after``
    (how ``sessions.js`` also fetches what a running task added)."""
    session, turns = detail["session"], detail["turns"]
    answers = [a for a in map(_answer, turns) if a is not None]
    messages = [m for t in turns for m in t.get("new_messages") or () if isinstance(m, dict)]
    stored = bool(messages or answers)
    call_names = call_names_of([*messages, *answers])
    notice = "" if stored or not turns else (
        '<p class="muted">The conversation was not stored (<code>logs.content: false</code>):'
        " tokens, cost and timings only.</p>")  # fmt: skip
    first = " ".join(str(session.get("first_words") or "").split())
    title = first if len(first) <= TITLE_CHARS else first[: TITLE_CHARS - 1].rstrip() + "…"
    title = esc(title or f"session {session['id']}")
    later = [t for t in turns if int(t.get("turn") or 0) > after]
    shown = later[:TURNS_PER_PAGE]
    end = int(shown[-1].get("turn") or 0) if shown else after
    more = len(later) > len(shown)
    # live only where the newest turns are: a page of earlier turns stays as it is
    running = session.get("status") == "running" and not more
    main = template("session.html").substitute(
        title=title,
        facts=_facts(session),
        notice=notice,
        turns="\n".join(_turn(t, call_names, stored) for t in shown),
        pager=_pager(str(session["id"]), after, end, more),
        live_note="running: new turns appear as they are logged" if running else "",
    )
    return render_page(main, title=title,
                       header='<a href="/logs">← all sessions</a>', script="sessions.js",
                       main_attrs=f' class="detail timeline" data-running="{"1" if running else ""}"'
                       f' data-last-turn="{end}"')  # fmt: skip
