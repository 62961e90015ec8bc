"""The request log: SQLite in WAL mode, each piece of content once, one writer fed by a queue.

Handlers call ``submit(row)`` (a ``put_nowait``, never an ``await`` on SQLite); the
queue and its batches are ``intake``'s, shared with the PostgreSQL store; each batch is
written in one transaction on the writer's own connection (``writer``). Past the queue's
bounds ``wait_for_room`` holds new requests back until the writer catches up. Readers
use a second, query-only connection, so a slow search never holds up the writer (WAL
lets both run).

The schema and its migrations live in ``schema``; content addressing in ``content``;
the session rule in ``sessions``; request search in ``search``, session pages in
``sessionviews``; retention in ``retention``.

``new_request_id()`` gives UUIDv7 strings (36 characters, time-ordered to the
millisecond); it lives in ``finopsd.exchange`` and is re-exported here so there is one
implementation. Paging never relies on it: the keyset is ``(ts, id)``.

References:
- FTS5 (contentless tables and their 'delete' command, query syntax, bm25()):
  https://www.sqlite.org/fts5.html
- auto_vacuum / incremental_vacuum / journal_mode / synchronous:
  https://www.sqlite.org/pragma.html
- WAL: https://www.sqlite.org/wal.html ; row values in keyset comparisons:
  https://www.sqlite.org/rowvalue.html
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import aiosqlite

from finopsd.exchange import new_request_id
from finopsd.log import search as searching
from finopsd.log import sessionviews
from finopsd.reports import series as usage_series
from finopsd.log.content import ANSWER, POS, SKELETON, TOOLS, join_request, unpack
from finopsd.log.retention import prune_step
from finopsd.log.schema import MESSAGE_REFS_SQL, MIGRATIONS, migrate, shown, total_of
from finopsd.log.search import SUMMARY_SQL, summary
from finopsd.log.text import _dumps, prompt_text, response_text
from finopsd.log.dialect import SQLite
from finopsd.log.intake import Intake
from finopsd.log.writer import Writer

__all__ = ["LogStore", "MIGRATIONS", "migrate", "new_request_id", "prompt_text", "response_text"]

log = logging.getLogger(__name__)

USAGE_GROUPS: Final = {"key": "key_name", "team": "team", "model": "model", "provider": "provider",
                       "session": "session", "user": "user", "project": "project", "tag": "tag.value",
                       "day": "cast(ts / 86400 as integer)"}  # fmt: skip
WRITER_CACHE_KB: Final = 8 * 1024
READER_CACHE_KB: Final = 16 * 1024


def _open_writer(path: str) -> tuple[sqlite3.Connection, list[str]]:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        # auto_vacuum only takes effect if set before the first table is created.
        db.execute("pragma auto_vacuum = incremental")
        db.execute("pragma journal_mode = wal")
        db.execute("pragma synchronous = normal")  # durable at checkpoints; a process crash loses nothing
        db.execute("pragma busy_timeout = 5000")
        db.execute(f"pragma cache_size = -{WRITER_CACHE_KB}")  # the hash and session lookups stay in memory
        applied = migrate(db)
        if "m007_content_and_sessions" in applied:
            db.executescript("pragma incremental_vacuum")  # give back what the old text took
    except BaseException:
        db.close()
        raise
    return db, applied


class LogStore(Intake):
    """Owns the database file: a writer connection (migrations, batches, prune) and a reader."""

    def __init__(
        self, writer: sqlite3.Connection, reader: aiosqlite.Connection, batch_rows: int, flush_ms: int,
        max_queue: int, max_queue_bytes: int, scrub: Callable[[Any], Any] | None,
    ) -> None:  # fmt: skip
        self._db = writer
        self._reader = reader
        super().__init__(Writer(SQLite(writer), scrub), batch_rows, flush_ms, max_queue, max_queue_bytes)

    @classmethod
    async def open(
        cls, path: str, *, batch_rows: int = 500, flush_ms: int = 100, max_queue: int = 10_000,
        max_queue_bytes: int = 8 << 20, scrub: Callable[[Any], Any] | None = None,
    ) -> LogStore:  # fmt: skip
        """Open (or create) the log database at ``path``, migrate it, and start the writer;
        ``scrub`` (``Scrubber.value``) takes secrets out of what rows store."""
        writer, applied = await asyncio.to_thread(_open_writer, path)
        if applied:
            log.info("log database %s: applied %s", path, ", ".join(applied))
        reader: aiosqlite.Connection | None = None
        try:
            reader = await aiosqlite.connect(path, isolation_level=None)
            await reader.execute("pragma query_only = 1")
            await reader.execute("pragma busy_timeout = 5000")
            # A text match looks up each matching piece's requests: at 100,000 requests SQLite's
            # default 2 MB cache makes that 3x slower (bench/search.py). Allocated as pages are read.
            await reader.execute(f"pragma cache_size = -{READER_CACHE_KB}")
            reader.row_factory = sqlite3.Row
        except BaseException:
            writer.close()
            if reader is not None:
                await reader.close()
            raise
        return cls(writer, reader, batch_rows, flush_ms, max_queue, max_queue_bytes, scrub)

    async def _close_connections(self) -> None:
        await self._reader.close()
        await asyncio.to_thread(self._db.close)  # the last close checkpoints the WAL

    # ------------------------------------------------------------------ retention

    async def prune(self, retention_days: float) -> int:
        """Delete whole sessions last active more than ``retention_days`` ago, with the content
        nothing else refers to; give the pages back; return how many requests went."""
        if retention_days < 0:
            raise ValueError("retention_days must be >= 0")
        cutoff = time.time() - retention_days * 86_400
        deleted = 0
        while True:
            count, sessions = await self._on_writer(prune_step, self._db, cutoff)
            for sid in sessions:
                self._writer.drop(sid)
            deleted += count
            if not sessions:
                break
        if deleted:
            # executescript steps the pragma to the end; execute() stops after its first
            # step, which frees a single page.
            await self._on_writer(self._db.executescript, "pragma incremental_vacuum")
        return deleted

    # ------------------------------------------------------------------ reading

    async def spend_since(self, since_ts: float) -> list[tuple[str | None, str | None, float, float]]:
        """(key_name, team, time, cost_usd) since ``since_ts``: whole days from the roll-up that
        pruning keeps, today per minute (every budget window starts on a whole minute, UTC).

        Today's rows that retention already pruned (``retention_days`` under a day) count at
        midnight: what the roll-up holds for today beyond the rows still there."""
        today = math.floor(time.time() / 86400) * 86400
        days = await self._reader.execute_fetchall(
            "select nullif(key_name, ''), nullif(team, ''), day, cost_usd from spend_by_day where day >= ?",
            (math.floor(since_ts / 86400) * 86400,),
        )
        minutes = await self._reader.execute_fetchall(
            f"select key_name, team, cast(ts / 60 as integer) * 60.0 as minute, {total_of('cost_usd')} from requests"
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
        column = USAGE_GROUPS[by]  # a fixed column name, never user text
        shown_as = {"session": "(select session_id from sessions s where s.id = requests.session)",
                    "day": "date(cast(ts / 86400 as integer) * 86400, 'unixepoch')"}.get(by, column)
        order = "1" if by == "day" else "7 desc, 2 desc"  # days in order; else the costliest first
        # each tag of the request's JSON list as a row of its own; untagged requests under null
        source = ("requests left join json_each(iif(json_valid(requests.tags), requests.tags, null)) tag"
                  if by == "tag" else "requests")
        span = (since if since is not None else 0.0, until if until is not None else math.inf)
        rows = await self._reader.execute_fetchall(
            f"select {shown_as}, count(*), {total_of('prompt_tokens')}, {total_of('completion_tokens')},"
            f" {total_of('cached_tokens')}, {total_of('reasoning_tokens')}, {total_of('cost_usd')},"
            " total(instr(coalesce(cost_flags, ''), 'unpriced') > 0),"
            " total(instr(coalesce(cost_flags, ''), 'estimated') > 0),"
            f" {total_of('coalesce(cost_without_cache_usd, cost_usd)')}"
            f" from {source} where ts >= ? and ts < ? group by {column} order by {order}", span)
        return [{by: r[0], "requests": r[1], "prompt_tokens": int(r[2]), "completion_tokens": int(r[3]),
                 "cached_tokens": int(r[4]), "reasoning_tokens": int(r[5]), "cost_usd": float(r[6]),
                 "cost_without_cache_usd": float(r[9]), "cache_savings_usd": float(r[9]) - float(r[6]),
                 "unpriced": int(r[7]), "estimated": int(r[8])} for r in rows]

    async def save_response(self, response_id: str, owner: tuple[str | None, str | None],
                            body: dict[str, Any]) -> None:
        """Keep a Responses-API answer with its conversation (``store: true``), for its owner
        (key name, team) alone."""
        await self._on_writer(
            self._db.execute,
            "insert or replace into stored_responses (id, created, body, key_name, team) values (?, ?, ?, ?, ?)",
            (response_id, time.time(), _dumps(body), *owner))

    async def load_response(self, response_id: str, owner: tuple[str | None, str | None]) -> dict[str, Any] | None:
        rows = list(await self._reader.execute_fetchall(
            "select body from stored_responses where id = ? and key_name is ? and team is ?", (response_id, *owner)))
        return json.loads(rows[0][0]) if rows else None

    async def delete_response(self, response_id: str, owner: tuple[str | None, str | None]) -> bool:
        cursor = await self._on_writer(
            self._db.execute, "delete from stored_responses where id = ? and key_name is ? and team is ?",
            (response_id, *owner))
        return bool(cursor.rowcount > 0)

    async def get(self, request_id: str) -> dict[str, Any] | None:
        """One row with its conversation, shaped like the dict given to ``submit``."""
        rows = await self._reader.execute_fetchall(
            f"select {SUMMARY_SQL}, r.attempts, r.n_messages from requests r where r.request_id = ?", (request_id,))
        row = next(iter(rows), None)
        if row is None:
            return None
        item = summary(row)
        item["attempts"] = json.loads(row["attempts"]) if row["attempts"] else []
        refs = [tuple(r) for r in await self._reader.execute_fetchall(MESSAGE_REFS_SQL, (row["id"],))]
        parts = {r[0]: r[1] for r in await self._reader.execute_fetchall(
            "select pos, content from request_content where request = ? and pos < 0", (row["id"],))}
        ids = sorted({c for _, c in refs} | set(parts.values()))
        pieces = list(await self._reader.execute_fetchall(
            f"select id, size, body from content where id in ({', '.join('?' * len(ids))})", ids))
        item["request"], item["response"] = await asyncio.to_thread(
            _rebuild, pieces, refs, parts, row["n_messages"])
        return item

    async def search(self, **filters: Any) -> dict[str, Any]:
        """A page of summaries, newest first (or by relevance with ``q``), and totals for the filter.

        Filters: ``q`` (FTS5 syntax; what FTS5 rejects is searched as a literal phrase),
        ``provider``, ``model``, ``key``, ``team``, ``status`` ("ok", "error" or
        "client_closed"; ``error_rate`` counts only "error"), ``stream``, ``since``,
        ``until``, ``min_cost``, ``min_latency_ms``; ``limit``, ``cursor`` (the previous
        page's ``next_cursor``), ``order`` ("newest" or "relevance": weighted bm25, pages
        can shift if rows are added between requests), ``with_totals``. Totals do not
        depend on the cursor: a caller paging on can pass ``with_totals=False`` and keep
        the first page's (``totals`` is then None). Items carry ``session_id`` and ``turn``.
        """
        return await searching.search(self._reader, **filters)

    async def sessions(self, **filters: Any) -> dict[str, Any]:
        """A page of sessions, newest-active first (see SESSIONS_CONTRACT / sessionviews)."""
        return await sessionviews.sessions(self._reader, **filters)

    async def usage(self, span: usage_series.Window, group_by: str, filters: dict[str, str],
                    metrics: tuple[str, ...] = usage_series.METRICS) -> dict[str, Any]:
        """The /api/usage series from the roll-ups (``finopsd.reports.series``)."""
        return await usage_series.usage(self._reader, span, group_by, filters, metrics)

    # ------------------------------------------------------------------ alerts (finopsd.alerts)

    async def claim_alert(self, kind: str, subject: str, window: str, threshold: float, message: str) -> int | None:
        """Record an alert as pending; its id, or None when it was claimed before (then it is not sent again)."""
        cursor = await self._on_writer(
            self._db.execute, "insert into alerts (ts, kind, subject, window, threshold, message, status)"
            " values (?, ?, ?, ?, ?, ?, 'pending') on conflict do nothing",
            (time.time(), kind, subject, window, threshold, message))
        return cursor.lastrowid if cursor.rowcount == 1 else None

    async def alert_sent(self, alert_id: int, status: str, attempts: int, error: str | None) -> None:
        await self._on_writer(self._db.execute, "update alerts set status = ?, attempts = ?, last_error = ?"
                              " where id = ?", (status, attempts, error, alert_id))

    async def alerts(self, limit: int = 50, status: str | None = None) -> list[dict[str, Any]]:
        """The newest alerts first (``status``: only those, e.g. 'pending')."""
        rows = await self._reader.execute_fetchall(
            "select id, ts, kind, subject, window, threshold, message, status, attempts, last_error from alerts"
            " where ? is null or status = ? order by ts desc, id desc limit ?", (status, status, limit))
        return [dict(r) for r in rows]

    async def provider_errors(self, since: float) -> list[tuple[str, int, int]]:
        """(provider, requests, errors) since ``since``: the error-rate alert's window."""
        rows = await self._reader.execute_fetchall(
            "select provider, count(*), total(status = 'error') from requests where ts >= ? and provider is not null"
            " group by provider", (since,))
        return [(r[0], int(r[1]), int(r[2])) for r in rows]

    async def session(self, session_id: str) -> dict[str, Any] | None:
        """One session with its turns in order, each with only what it added."""
        return await sessionviews.session(self._reader, session_id)


def _rebuild(
    pieces: list[sqlite3.Row], refs: list[tuple[int, int]], parts: dict[int, int], n_messages: int | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    values = {p[0]: unpack(p[1], p[2]) for p in pieces}
    answer = values.get(parts.get(POS[ANSWER], -1))
    if POS[SKELETON] not in parts:
        return None, answer
    messages = [values[c] for _, c in refs] if n_messages is not None else None
    tools = values[parts[POS[TOOLS]]] if POS[TOOLS] in parts else None
    return join_request(values[parts[POS[SKELETON]]], messages, tools), answer

