"""Finding requests: filters, full-text matches, keyset pages, totals, snippets.

A text query matches the pieces of content the index holds (each message, tools list,
request body and answer, once each: FTS5's ``content_fts`` on SQLite, ``content.tsv`` on
PostgreSQL, the query's text made a tsquery by ``finopsd.log.pg.query``), and through
``request_content`` the requests
that *added* a matching piece: a word said in turn 3 of a session finds turn 3, not
every later request that resent it as history (the sessions view names the turn).
Several terms must occur in one piece (one message, or one answer) to match together.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Iterable
from typing import Any, Final

from finopsd.errors import BadRequest
from finopsd.log.content import index_text, unpack
from finopsd.log.schema import LATE_COLUMNS, NUMBERS, SCALARS, shown
from finopsd.log.sql import Db, Dialect, fts_literal, marks
from finopsd.log.text import snippet

log = logging.getLogger(__name__)

# columns quoted: ``user`` is a reserved word in PostgreSQL
SUMMARY_SQL: Final = "r.id, r.request_id, " + ", ".join(f'r."{c}"' for c in (*SCALARS, *LATE_COLUMNS)) + (
    ", (select preview from request_previews p where p.request_id = r.request_id) as preview"
    ", (select session_id from sessions s where s.id = r.session) as session_id, r.turn")
TOTALS: Final = ("r.prompt_tokens", "r.completion_tokens", "r.cost_usd",
                  "coalesce(r.cost_without_cache_usd, r.cost_usd)")  # fmt: skip
MAX_LIMIT: Final = 500
SELECTIVE: Final = 5_000  # fewer matching pieces than this: look requests up by id (see search())


def totals_sql(d: Dialect, bounded: bool = False) -> str:
    """The totals' columns; ``bounded``: over in-range values only, about twice the work, so
    only when an odd value an older version stored made a plain sum infinite."""
    tokens, completion, cost, uncached = (d.total_of(c) if bounded else d.total(c) for c in TOTALS)
    errors = d.count_if("r.status = 'error'")
    return f"count(*), {tokens}, {completion}, {cost}, {errors}, {uncached}"


def matched_requests(d: Dialect) -> str:
    """The requests that added a piece matching one ``?``."""
    return f"select rc.request from request_content rc where {d.member('rc.content', d.matched)}"


def added_match(d: Dialect) -> str:
    """For a broad match, a page walks requests newest first and tests each one's few pieces
    against the set of matches (the ``+`` keeps SQLite from probing the index of every match
    instead: 6 s against 80 ms for a word in every request, at 100,000 requests)."""
    return f"exists (select 1 from request_content rc where rc.request = r.id and +rc.content in ({d.matched}))"


def summary(row: Any) -> dict[str, Any]:
    item = {k: shown(row[k]) if k in NUMBERS else row[k] for k in SCALARS}
    item["id"] = row["request_id"]
    item["preview"] = row["preview"]
    item["stream"] = None if row["stream"] is None else bool(row["stream"])
    item["session_id"] = row["session_id"]
    item["turn"] = row["turn"]
    item["user"], item["project"] = row["user"], row["project"]
    item["tags"] = _tags(row["tags"])
    return item


def _tags(stored: Any) -> list[str]:
    try:
        tags = json.loads(stored) if isinstance(stored, str) else []
    except ValueError:
        return []
    return [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []


def encode_cursor(kind: str, key: float, rowid: int) -> str:
    return f"{kind}{key!r}~{rowid}"


def decode_cursor(cursor: str, kind: str) -> tuple[float, int]:
    try:
        key, rowid = cursor[1:].split("~")
        value, number = float(key), int(rowid)
    except ValueError:
        raise BadRequest("invalid cursor", param="cursor") from None
    if cursor[:1] != kind or not math.isfinite(value) or abs(number) >= 1 << 63:
        raise BadRequest("invalid cursor for this order", param="cursor")
    return value, number


def filters(
    d: Dialect, provider: str | None, model: str | None, key: str | None, team: str | None, status: str | None,
    stream: bool | None, since: float | None, until: float | None,
    min_cost: float | None, min_latency_ms: float | None,
    user: str | None = None, project: str | None = None, tag: str | None = None,
) -> tuple[list[str], list[Any]]:  # fmt: skip
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("provider", provider), ("model", model), ("key_name", key), ("team", team),
                          ("status", status), ("user", user), ("project", project)):  # fmt: skip
        if value not in (None, ""):  # an empty form field means "any"
            where.append(f'r."{column}" = ?')
            params.append(value)
    if tag not in (None, ""):
        where.append(d.has_tag("r.tags"))
        params.append(tag)
    for clause, number in (("r.ts >= ?", since), ("r.ts < ?", until), ("r.cost_usd >= ?", min_cost),
                           ("r.duration_ms >= ?", min_latency_ms)):  # fmt: skip
        if number is not None:
            where.append(clause)
            params.append(float(number))
    if stream is not None:
        where.append("r.stream = ?")
        params.append(int(stream))
    return where, params


def where_sql(where: list[str]) -> str:
    return " where " + " and ".join(where) if where else ""


def expressions(d: Dialect, text: str) -> list[str]:
    """What to try as the engine's query for ``text``: FTS5 takes it as typed, else as a literal
    phrase; PostgreSQL takes the tsquery ``finopsd.log.pg.query`` makes of it (the literal
    phrase's where FTS5 would reject it). Empty when it can match nothing."""
    if d.name == "sqlite":
        return [text, fts_literal(text)]
    from finopsd.log.pg import query  # PostgreSQL only

    try:
        tsquery = query.tsquery(text)
    except query.QuerySyntaxError:
        tsquery = query.literal(text)
    return [tsquery] if tsquery is not None else []


async def parse(db: Db, text: str) -> tuple[str, bool] | None:
    """The engine's query for ``text`` (see ``expressions``) and whether it matches fewer than
    SELECTIVE pieces; None if no form parses."""
    failure: BaseException | None = None
    for expression in expressions(db.dialect, text):
        try:
            rows = await db.fetch(f"select count(*) from ({db.dialect.matched} limit ?) m", (expression, SELECTIVE))
        except db.dialect.bad_query as e:  # the literal phrase is next
            failure = e
            continue
        return expression, rows[0][0] < SELECTIVE
    if failure is not None:
        log.warning("log search failed even as a literal phrase (%s)",
                    getattr(failure, "sqlite_errorname", None) or type(failure).__name__)
    return None


async def search(
    db: Db, *, q: str | None = None, provider: str | None = None, model: str | None = None,
    key: str | None = None, team: str | None = None, status: str | None = None,
    stream: bool | None = None, since: float | None = None, until: float | None = None,
    min_cost: float | None = None, min_latency_ms: float | None = None,
    limit: int = 50, cursor: str | None = None, order: str = "newest", with_totals: bool = True,
    user: str | None = None, project: str | None = None, tag: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """See ``LogStore.search``."""
    if order not in ("newest", "relevance"):
        raise BadRequest("order must be 'newest' or 'relevance'", param="order")
    limit = max(1, min(int(limit), MAX_LIMIT))
    text = q if q is not None and q.strip() else None
    by_rank = order == "relevance" and text is not None
    after = decode_cursor(cursor, "r" if by_rank else "t") if cursor else None
    d = db.dialect
    where, params = filters(d, provider, model, key, team, status, stream, since, until, min_cost, min_latency_ms,
                            user, project, tag)
    matched, matched_params = list(where), list(params)
    counted, counted_params = list(where), list(params)
    match: str | None = None
    if text is not None:
        parsed = await parse(db, text)
        if parsed is None:
            return {"items": [], "next_cursor": None, "totals": totals_dict((0, 0, 0, 0, 0, 0))}
        match, selective = parsed
        # Few matches: fetch those requests by id and sort them. Many: walk the
        # requests in page order and test each (ADDED_MATCH). Totals read every match
        # either way, and looking them up by id is the faster way to do that.
        matched.append(d.member("r.id", matched_requests(d)) if selective else added_match(d))
        matched_params.append(match)
        counted.append(d.member("r.id", matched_requests(d)))
        counted_params.append(match)
    totals: dict[str, Any] | None = None
    if with_totals:
        for bounded in (False, True):  # the page's WHERE without the cursor
            row = (await db.fetch(f"select {totals_sql(d, bounded)} from requests r{where_sql(counted)}",
                                  counted_params))[0]
            if all(shown(v) is not None for v in row):
                break
        totals = totals_dict(row)
        if totals["requests"] == 0:
            return {"items": [], "next_cursor": None, "totals": totals}
    if by_rank and match is not None:
        page, next_cursor = await _page_by_rank(db, where, params, match, limit, after)
    else:
        page, next_cursor = await _page_by_time(db, matched, matched_params, limit, after)
    items = [summary(row) for row in page]
    snippets = await snippets_for(db, match, text or "", [row["id"] for row in page]) if match else {}
    for item, row in zip(items, page):
        item["snippet"] = snippets.get(row["id"])
    return {"items": items, "next_cursor": next_cursor, "totals": totals}


async def _page_by_time(
    db: Db, where: list[str], params: list[Any], limit: int, after: tuple[float, int] | None
) -> tuple[list[Any], str | None]:
    where, params = list(where), list(params)
    if after:
        where.append("(r.ts, r.id) < (?, ?)")  # keyset: resumes inside the index, no OFFSET
        params.extend(after)
    rows = await db.fetch(
        f"select {SUMMARY_SQL} from requests r{where_sql(where)} order by r.ts desc, r.id desc limit ?",
        [*params, limit + 1],
    )
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor("t", last["ts"], last["id"])


async def _page_by_rank(
    db: Db, where: list[str], params: list[Any], match: str, limit: int,
    after: tuple[float, int] | None,
) -> tuple[list[Any], str | None]:  # fmt: skip
    # A request's score is its best piece's; the filters arrive as a set of ids read
    # from their indexes (a join would look up every match's row).
    inner, inner_params = "", []
    if where:
        inner = f" where +rc.request in (select r.id from requests r{where_sql(where)})"
        inner_params = params
    outer, outer_params = "", []
    if after:
        outer = " where (score, id) > (?, ?)"  # bm25: lower is better, so ascending
        outer_params = list(after)
    ranked = await db.fetch(
        # materialized: bm25() only works in the query that reads the FTS table itself
        f"with f as materialized ({db.dialect.ranked})"
        f" select * from (select rc.request as id, min(f.score) as score from f"
        f" join request_content rc on rc.content = f.rowid{inner} group by rc.request) s{outer}"
        " order by score, id limit ?",
        [match, *inner_params, *outer_params, limit + 1],
    )  # fmt: skip
    ids = [row["id"] for row in ranked[:limit]]
    if not ids:
        return [], None
    rows = await db.fetch(f"select {SUMMARY_SQL} from requests r where r.id in ({marks(ids)})", ids)
    by_id = {row["id"]: row for row in rows}
    page = [by_id[i] for i in ids if i in by_id]
    if len(ranked) <= limit:
        return page, None
    last = ranked[limit - 1]
    return page, encode_cursor("r", last["score"], last["id"])


async def snippets_for(db: Db, match: str, q: str, requests: list[int]) -> dict[int, str]:
    """A highlighted fragment of the first matching piece each of these requests added."""
    if not requests:
        return {}
    refs = await db.fetch(
        f"select request, content from request_content where request in ({marks(requests)})"
        " order by request, pos < 0, pos", requests)
    if not refs:
        return {}
    ids = sorted({r[1] for r in refs})
    # A rowid range lets FTS5 evaluate the query once over the range; the `+` keeps the
    # list a filter on it, not a lookup per id.
    rowid, plain = db.dialect.rowid, db.dialect.unindexed
    hits = {r[0] for r in await db.fetch(
        f"{db.dialect.matched} and {rowid} between ? and ? and {plain}{rowid} in ({marks(ids)})",
        [match, ids[0], ids[-1], *ids])}  # fmt: skip
    first: dict[int, int] = {}
    for request, content in refs:
        if content in hits:
            first.setdefault(request, content)
    wanted = sorted(set(first.values()))
    if not wanted:
        return {}
    pieces = await db.fetch(f"select id, kind, size, body from content where id in ({marks(wanted)})", wanted)
    texts = await asyncio.to_thread(_snippets, pieces, q)
    return {request: texts[content] for request, content in first.items() if content in texts}


def _snippets(pieces: Iterable[Any], q: str) -> dict[int, str]:
    out = {}
    for cid, kind, size, body in pieces:
        prompt, answer = index_text(kind, unpack(size, body))
        out[cid] = snippet("\n".join(t for t in (prompt, answer) if t), q)
    return out


def totals_dict(row: Iterable[Any]) -> dict[str, Any]:
    count, prompt, completion, cost, errors, uncached = row
    return {
        "requests": int(count),
        "prompt_tokens": int(prompt),
        "completion_tokens": int(completion),
        "cost_usd": float(cost),
        "cost_without_cache_usd": float(uncached),
        "cache_savings_usd": float(uncached) - float(cost),
        "error_rate": (errors / count) if count else 0.0,
    }
