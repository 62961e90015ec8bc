"""What the log stores answer, the same on SQLite and PostgreSQL: ``LogReads``, which both inherit.

Every method reads through ``self._read`` (a ``finopsd.log.sql.Db``): rows, sessions,
search, usage, spend, alerts and stored responses, with the few SQL words the engines
spell differently asked of its dialect. The small changes outside the log's batches (a
stored response, an alert claimed or sent) go through ``Db.change``: on SQLite the
writer's connection, on PostgreSQL the pool, each one statement that is its own
transaction (an alert's claim is ``on conflict do nothing``: two instances claiming the
same alert agree on one).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any, Final

from finopsd.log import search as searching
from finopsd.log import sessionviews
from finopsd.log.content import ANSWER, POS, SKELETON, TOOLS, join_request, unpack
from finopsd.log.schema import MESSAGE_REFS_SQL, shown
from finopsd.log.search import SUMMARY_SQL, summary
from finopsd.log.sql import Db, marks
from finopsd.log.text import _dumps
from finopsd.reports import series as usage_series

__all__ = ["LogReads", "USAGE_GROUPS"]

USAGE_GROUPS: Final = {"key": "key_name", "team": "team", "model": "model", "provider": "provider",
                       "session": "session", "user": '"user"', "project": "project", "tag": "tag.value",
                       "day": None}  # fmt: skip
OWNED: Final = "id = ? and key_name is not distinct from ? and team is not distinct from ?"


class LogReads:
    """The read side of a log store (and its few changes outside the batches)."""

    _read: Db

    async def spend_since(self, since_ts: float) -> list[tuple[str | None, str | None, float, float]]:
        """(key_name, team, time, cost_usd) since ``since_ts``: whole days from the roll-up that
        pruning keeps, today per minute (every budget window starts on a whole minute, UTC).

        Today's rows that retention already pruned (``retention_days`` under a day) count at
        midnight: what the roll-up holds for today beyond the rows still there."""
        d = self._read.dialect
        today = math.floor(time.time() / 86400) * 86400
        days = await self._read.fetch(
            "select nullif(key_name, ''), nullif(team, ''), day, cost_usd from spend_by_day where day >= ?",
            (math.floor(since_ts / 86400) * 86400,),
        )
        minutes = await self._read.fetch(
            f"select key_name, team, {d.whole('ts', 60)} * 60.0 as minute, {d.total_of('cost_usd')} from requests"
            " where ts >= ? and cost_usd > 0 and (key_name is not null or team is not null)"
            " group by key_name, team, minute",
            (max(since_ts, today),),
        )
        # a day whose roll-up an odd stored cost made infinite is left out, as that cost is
        days = [r for r in days if shown(r[3]) is not None]
        minutes = [r for r in minutes if shown(r[3]) is not None]
        kept: dict[tuple[Any, Any], float] = {}
        for key_name, team, _, usd in minutes:
            kept[(key_name, team)] = kept.get((key_name, team), 0.0) + usd
        spend = [(r[0], r[1], float(r[2]), float(r[3])) for r in days if r[2] < today]
        if since_ts <= today:  # else the minutes above start later than midnight: no residue to find
            for key_name, team, _, usd in (r for r in days if r[2] >= today):
                pruned = usd - kept.get((key_name, team), 0.0)
                if pruned > 1e-9:  # the roll-up and the rows were summed in different orders
                    spend.append((key_name, team, today, pruned))
        return spend + [(r[0], r[1], float(r[2]), float(r[3])) for r in minutes]

    async def usage_by(self, by: str, since: float | None = None, until: float | None = None) -> list[dict[str, Any]]:
        """Requests, tokens and cost per key, team, model, provider, session, user, project or tag
        (a request with two tags counts under each), costliest first; or per UTC day
        (``YYYY-MM-DD``), oldest first."""
        d = self._read.dialect
        column = USAGE_GROUPS[by] or d.whole("ts", 86400)  # a fixed column name, never user text
        shown_as = {"session": "(select session_id from sessions s where s.id = requests.session)",
                    "day": d.day(f"{column} * 86400")}.get(by, column)
        order = "1" if by == "day" else "7 desc, 2 desc"  # days in order; else the costliest first
        # each tag of the request's JSON list as a row of its own; untagged requests under null
        source = d.each_tag("requests") if by == "tag" else "requests"
        span = (since if since is not None else 0.0, until if until is not None else math.inf)
        sums = ", ".join(d.total_of(c) for c in ("prompt_tokens", "completion_tokens", "cached_tokens",
                                                 "reasoning_tokens", "cost_usd"))
        flagged = ", ".join(d.count_if(f"coalesce(cost_flags, '') like '%{flag}%'")
                            for flag in ("unpriced", "estimated"))
        uncached = d.total_of("coalesce(cost_without_cache_usd, cost_usd)")
        rows = await self._read.fetch(f"select {shown_as}, count(*), {sums}, {flagged}, {uncached} from {source}"
                                      f" where ts >= ? and ts < ? group by {column} order by {order}", span)
        return [{by: r[0], "requests": r[1], "prompt_tokens": int(r[2]), "completion_tokens": int(r[3]),
                 "cached_tokens": int(r[4]), "reasoning_tokens": int(r[5]), "cost_usd": float(r[6]),
                 "cost_without_cache_usd": float(r[9]), "cache_savings_usd": float(r[9]) - float(r[6]),
                 "unpriced": int(r[7]), "estimated": int(r[8])} for r in rows]

    # ------------------------------------------------------------------ stored responses

    async def save_response(self, response_id: str, owner: tuple[str | None, str | None],
                            body: dict[str, Any]) -> None:
        """Keep a Responses-API answer with its conversation (``store: true``), for its owner
        (key name, team) alone."""
        await self._read.change(
            "insert into stored_responses (id, created, body, key_name, team) values (?, ?, ?, ?, ?)"
            " on conflict (id) do update set created = excluded.created, body = excluded.body,"
            " key_name = excluded.key_name, team = excluded.team",
            (response_id, time.time(), _dumps(body), *owner))

    async def load_response(self, response_id: str, owner: tuple[str | None, str | None]) -> dict[str, Any] | None:
        rows = await self._read.fetch(f"select body from stored_responses where {OWNED}", (response_id, *owner))
        return json.loads(rows[0][0]) if rows else None

    async def delete_response(self, response_id: str, owner: tuple[str | None, str | None]) -> bool:
        count, _ = await self._read.change(f"delete from stored_responses where {OWNED}", (response_id, *owner))
        return count > 0

    # ------------------------------------------------------------------ requests and sessions

    async def get(self, request_id: str) -> dict[str, Any] | None:
        """One row with its conversation, shaped like the dict given to ``submit``."""
        db = self._read
        rows = await db.fetch(
            f"select {SUMMARY_SQL}, r.attempts, r.n_messages from requests r where r.request_id = ?", (request_id,))
        if not rows:
            return None
        row = rows[0]
        item = summary(row)
        item["attempts"] = json.loads(row["attempts"]) if row["attempts"] else []
        refs = [tuple(r) for r in await db.fetch(MESSAGE_REFS_SQL, (row["id"],))]
        parts = {r[0]: r[1] for r in await db.fetch(
            "select pos, content from request_content where request = ? and pos < 0", (row["id"],))}
        ids = sorted({c for _, c in refs} | set(parts.values()))
        pieces = await db.fetch(f"select id, size, body from content where id in ({marks(ids)})", ids) if ids else []
        item["request"], item["response"] = await asyncio.to_thread(_rebuild, pieces, refs, parts, row["n_messages"])
        return item

    async def search(self, **filters: Any) -> dict[str, Any]:
        """A page of summaries, newest first (or by relevance with ``q``), and totals for the filter.

        Filters: ``q`` (FTS5 syntax; what FTS5 rejects is searched as a literal phrase; on
        PostgreSQL the same syntax, see ``finopsd.log.pg.query``), ``provider``, ``model``,
        ``key``, ``team``, ``status`` ("ok", "error" or "client_closed"; ``error_rate`` counts
        only "error"), ``stream``, ``since``, ``until``, ``min_cost``, ``min_latency_ms``;
        ``limit``, ``cursor`` (the previous page's ``next_cursor``), ``order`` ("newest" or
        "relevance": weighted bm25 or ts_rank, pages can shift if rows are added between
        requests), ``with_totals``. Totals do not depend on the cursor: a caller paging on can
        pass ``with_totals=False`` and keep the first page's (``totals`` is then None). Items
        carry ``session_id`` and ``turn``.
        """
        return await searching.search(self._read, **filters)

    async def sessions(self, **filters: Any) -> dict[str, Any]:
        """A page of sessions, newest-active first (see SESSIONS_CONTRACT / sessionviews)."""
        return await sessionviews.sessions(self._read, **filters)

    async def session(self, session_id: str) -> dict[str, Any] | None:
        """One session with its turns in order, each with only what it added."""
        return await sessionviews.session(self._read, session_id)

    async def usage(self, span: usage_series.Window, group_by: str, filters: dict[str, str],
                    metrics: tuple[str, ...] = usage_series.METRICS) -> dict[str, Any]:
        """The /api/usage series from the roll-ups (``finopsd.reports.series``)."""
        return await usage_series.usage(self._read, span, group_by, filters, metrics)

    # ------------------------------------------------------------------ alerts (finopsd.alerts)

    async def claim_alert(self, kind: str, subject: str, window: str, threshold: float, message: str) -> int | None:
        """Record an alert as pending; its id, or None when it was claimed before (then it is not sent again)."""
        _, rows = await self._read.change(
            'insert into alerts (ts, kind, subject, "window", threshold, message, status)'
            " values (?, ?, ?, ?, ?, ?, 'pending') on conflict do nothing returning id",
            (time.time(), kind, subject, window, threshold, message))
        return int(rows[0][0]) if rows else None

    async def alert_sent(self, alert_id: int, status: str, attempts: int, error: str | None) -> None:
        await self._read.change("update alerts set status = ?, attempts = ?, last_error = ? where id = ?",
                                (status, attempts, error, alert_id))

    async def alerts(self, limit: int = 50, status: str | None = None) -> list[dict[str, Any]]:
        """The newest alerts first (``status``: only those, e.g. 'pending')."""
        where, params = (" where status = ?", [status]) if status is not None else ("", [])
        rows = await self._read.fetch(
            'select id, ts, kind, subject, "window", threshold, message, status, attempts, last_error from alerts'
            f"{where} order by ts desc, id desc limit ?", [*params, limit])
        return [dict(r) for r in rows]

    async def provider_errors(self, since: float) -> list[tuple[str, int, int]]:
        """(provider, requests, errors) since ``since``: the error-rate alert's window."""
        errors = self._read.dialect.count_if("status = 'error'")
        rows = await self._read.fetch(f"select provider, count(*), {errors} from requests"
                                      " where ts >= ? and provider is not null group by provider", (since,))
        return [(r[0], int(r[1]), int(r[2])) for r in rows]


def _rebuild(
    pieces: list[Any], refs: list[tuple[int, int]], parts: dict[int, int], n_messages: int | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    values = {p[0]: unpack(p[1], p[2]) for p in pieces}
    answer = values.get(parts.get(POS[ANSWER], -1))
    if POS[SKELETON] not in parts:
        return None, answer
    messages = [values[c] for _, c in refs] if n_messages is not None else None
    tools = values[parts[POS[TOOLS]]] if POS[TOOLS] in parts else None
    return join_request(values[parts[POS[SKELETON]]], messages, tools), answer
