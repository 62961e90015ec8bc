"""Reading sessions: the newest-active page with filters and totals, and one session's turns.

Shapes are those of /work/shared SESSIONS_CONTRACT: ``SessionSummary`` and ``Turn``
dicts. A session's totals are kept on its ``sessions`` row by the writer, so a page
reads one narrow row per session; a filter on provider, model or team means "at
least one of its requests matches" and reads the requests' indexes.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Final

from finopsd.errors import BadRequest
from finopsd.log.content import ANSWER, POS, unpack
from finopsd.log.search import MAX_LIMIT, matched_requests, parse, snippets_for, where_sql
from finopsd.log.sql import Db, Dialect, marks

RUNNING_S: Final = 120  # a session whose last request ended this recently (without error) is "running"
STATUSES: Final = ("ok", "error", "running")
SESSION_SQL: Final = (
    "s.id, s.session_id, s.source, s.key_name, s.team, s.ts, s.last_ts, s.turns, s.errors, s.prompt_tokens,"
    " s.completion_tokens, s.cached_tokens, s.cost_usd, s.models, s.first_words, s.cost_without_cache_usd"
)
TURN_SQL: Final = (
    "r.id, r.request_id, r.turn, r.ts, r.route, r.provider, r.model, r.status, r.status_code, r.stream,"
    " r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.cost_usd, r.duration_ms, r.ttft_ms,"
    " r.error_type, r.error_message"
)


def added_to_session(d: Dialect) -> str:
    return ("exists (select 1 from requests r join request_content rc on rc.request = r.id where r.session = s.id"
            f" and +rc.content in ({d.matched}))")


class InvalidQuery(BadRequest, ValueError):
    """A bad cursor or filter value: a 400 through the routes, a ValueError to other callers."""


def _usage(prompt: Any, completion: Any, cached: Any) -> dict[str, int]:
    p, c, k = int(prompt or 0), int(completion or 0), int(cached or 0)
    return {"prompt_tokens": p, "completion_tokens": c, "cached_tokens": k, "total_tokens": p + c}


def summary(row: Any, now: float) -> dict[str, Any]:
    status = "error" if row["errors"] else "running" if now - row["last_ts"] < RUNNING_S else "ok"
    models = json.loads(row["models"]) if row["models"] else []
    return {
        "id": row["session_id"], "ts": row["ts"], "last_ts": row["last_ts"], "key": row["key_name"],
        "team": row["team"], "first_words": row["first_words"], "models": models, "turns": row["turns"],
        "errors": row["errors"], "usage": _usage(row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]),
        "cost_usd": float(row["cost_usd"]), "cost_without_cache_usd": float(row["cost_without_cache_usd"]),
        "cache_savings_usd": float(row["cost_without_cache_usd"]) - float(row["cost_usd"]),
        "duration_ms": (row["last_ts"] - row["ts"]) * 1000, "status": status,
        "source": row["source"], "match": None,
    }  # fmt: skip


def _cursor(cursor: str) -> tuple[float, int]:
    try:
        key, rowid = cursor[1:].split("~")
        value, number = float(key), int(rowid)
    except ValueError:
        raise InvalidQuery("invalid cursor", param="cursor") from None
    if cursor[:1] != "s" or value != value or abs(number) >= 1 << 63:
        raise InvalidQuery("invalid cursor", param="cursor")
    return value, number


async def sessions(
    db: Db, *, provider: str | None = None, model: str | None = None, key: str | None = None,
    team: str | None = None, status: str | None = None, since: float | None = None, until: float | None = None,
    q: str | None = None, min_cost: float | None = None, cursor: str | None = None, limit: int = 50,
    with_totals: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Sessions newest-active first (keyset on last_ts), filtered; totals over the filter on request."""
    now, d = time.time(), db.dialect
    limit = max(1, min(int(limit), MAX_LIMIT))
    after = _cursor(cursor) if cursor else None
    where: list[str] = []
    params: list[Any] = []
    if key not in (None, ""):
        where.append("s.key_name = ?")  # a session never spans keys
        params.append(key)
    for column, value in (("provider", provider), ("model", model), ("team", team)):
        if value not in (None, ""):
            where.append(f"s.id in (select r.session from requests r where r.{column} = ?)")
            params.append(value)
    if status not in (None, ""):
        if status not in STATUSES:
            raise InvalidQuery(f"status must be one of {', '.join(STATUSES)}", param="status")
        where.append({"error": "s.errors > 0", "running": "s.errors = 0 and s.last_ts >= ?",
                      "ok": "s.errors = 0 and s.last_ts < ?"}[status])  # fmt: skip
        params += [] if status == "error" else [now - RUNNING_S]
    for clause, number in (("s.last_ts >= ?", since), ("s.last_ts < ?", until), ("s.cost_usd >= ?", min_cost)):
        if number is not None:
            where.append(clause)
            params.append(float(number))
    match: str | None = None
    text = q if q is not None and q.strip() else None
    if text is not None:
        parsed = await parse(db, text)
        if parsed is None:
            return {"items": [], "next_cursor": None, "totals": _totals(None) if with_totals else None}
        match, selective = parsed
        counted = d.member("s.id", f"select r.session from requests r where {d.member('r.id', matched_requests(d))}")
        # as in search(): a broad match walks the sessions in page order and tests each
        page_where, page_params = [*where, counted if selective else added_to_session(d)], [*params, match]
        where, params = [*where, counted], [*params, match]
    else:
        page_where, page_params = list(where), list(params)
    totals = None
    if with_totals:
        sums = ", ".join(d.total(f"s.{c}") for c in ("turns", "prompt_tokens", "completion_tokens", "cached_tokens",
                                                          "cost_usd", "cost_without_cache_usd"))
        totals = _totals((await db.fetch(f"select count(*), {sums} from sessions s{where_sql(where)}", params))[0])
    if after:
        page_where.append("(s.last_ts, s.id) < (?, ?)")
        page_params += list(after)
    rows = await db.fetch(
        f"select {SESSION_SQL} from sessions s{where_sql(page_where)} order by s.last_ts desc, s.id desc limit ?",
        [*page_params, limit + 1])
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = f"s{rows[-1]['last_ts']!r}~{rows[-1]['id']}"
    items = [summary(row, now) for row in rows]
    if match is not None and rows:
        await _add_matches(db, match, text or "", rows, items)
    return {"items": items, "next_cursor": next_cursor, "totals": totals}


def _totals(row: Any) -> dict[str, Any]:
    count, requests, prompt, completion, cached, cost, uncached = row or (0, 0, 0, 0, 0, 0, 0)
    return {"sessions": int(count), "requests": int(requests), "prompt_tokens": int(prompt),
            "completion_tokens": int(completion), "cached_tokens": int(cached),
            "total_tokens": int(prompt) + int(completion), "cost_usd": float(cost),
            "cost_without_cache_usd": float(uncached), "cache_savings_usd": float(uncached) - float(cost)}  # fmt: skip


async def _add_matches(db: Db, match: str, q: str, rows: list[Any], items: list[dict[str, Any]]) -> None:
    """Each session's first turn that added matching text, with a snippet of it."""
    ids = [row["id"] for row in rows]
    hits = await db.fetch(
        f"select r.session, r.id, r.request_id, r.turn from requests r where r.session in"
        f" ({marks(ids)}) and {db.dialect.member('r.id', matched_requests(db.dialect))} order by r.session, r.turn",
        [*ids, match])  # fmt: skip
    first: dict[int, Any] = {}
    for hit in hits:
        first.setdefault(hit["session"], hit)
    snippets = await snippets_for(db, match, q, [h["id"] for h in first.values()])
    for row, item in zip(rows, items):
        hit = first.get(row["id"])
        if hit is not None:
            item["match"] = {"request_id": hit["request_id"], "turn": hit["turn"],
                             "snippet": snippets.get(hit["id"], "")}  # fmt: skip


async def session(db: Db, session_id: str) -> dict[str, Any] | None:
    """The session's summary and its turns, each with the messages it added and its answer."""
    rows = await db.fetch(f"select {SESSION_SQL} from sessions s where s.session_id = ?", (session_id,))
    if not rows:
        return None
    head = rows[0]
    turns = await db.fetch(f"select {TURN_SQL} from requests r where r.session = ? order by r.turn, r.id",
                           (head["id"],))
    # Only what each request added: its messages from new_from on, and its answer.
    pieces = await db.fetch(
        "select rc.request, rc.pos, c.size, c.body from requests r join request_content rc on rc.request = r.id"
        " join content c on c.id = rc.content where r.session = ? and (rc.pos >= r.new_from or rc.pos = ?)"
        " order by rc.request, rc.pos", (head["id"], POS[ANSWER]))
    return await asyncio.to_thread(_session, head, turns, pieces, time.time())


def _session(head: Any, turns: list[Any], pieces: list[Any], now: float) -> dict[str, Any]:
    added: dict[int, list[Any]] = {}
    answers: dict[int, Any] = {}
    for request, pos, size, body in pieces:
        value = unpack(size, body)
        if pos == POS[ANSWER]:
            answers[request] = value
        else:
            added.setdefault(request, []).append(value)
    out = []
    for t in turns:
        answer = answers.get(t["id"]) if isinstance(answers.get(t["id"]), dict) else {}
        error = None
        if t["error_type"] is not None or t["error_message"] is not None:
            error = {"type": t["error_type"] or "error", "message": t["error_message"] or ""}
        out.append({
            "turn": t["turn"], "request_id": t["request_id"], "ts": t["ts"], "route": t["route"],
            "provider": t["provider"], "model": t["model"], "status": t["status"], "status_code": t["status_code"],
            "stream": bool(t["stream"]), "new_messages": added.get(t["id"], []),
            "answer": {"content": answer.get("content") or None, "reasoning": answer.get("reasoning") or None,
                       "tool_calls": answer.get("tool_calls") or []},
            "usage": _usage(t["prompt_tokens"], t["completion_tokens"], t["cached_tokens"]),
            "cost_usd": t["cost_usd"], "duration_ms": t["duration_ms"], "ttft_ms": t["ttft_ms"], "error": error,
        })  # fmt: skip
    return {"session": summary(head, now), "turns": out}
