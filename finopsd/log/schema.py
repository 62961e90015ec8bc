"""The log database's schema: numbered migrations, applied once each, in order.

A migration is a function ``mNNN_what`` registered with ``@migration``; ``migrate()``
runs each one not yet recorded in ``_migrations``, inside ``begin immediate … commit``
so its DDL and bookkeeping row land together. The list is append-only: a mistake
gets a new migration. ``requests_fts`` is an external-content FTS5 index over
``requests`` kept current by triggers, keyed by an explicit ``id integer primary key``
because implicit rowids may change on VACUUM.

Migrations are plain functions on a ``sqlite3`` connection, run in a worker thread:
m007 rewrites the whole log through the same code the writer uses, and that code is
synchronous so that a batch never crosses the event loop row by row.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Final


log = logging.getLogger(__name__)

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append(fn)
    return fn


# Scalar columns, named as in the row dict (the row's ``id`` is stored as ``request_id``).
SCALARS: Final = (
    "ts", "duration_ms", "ttft_ms", "route", "provider", "model", "upstream_model",
    "key_name", "team", "client_ip", "user_agent", "status_code", "status",
    "error_type", "error_message", "stream", "finish_reason", "prompt_tokens",
    "completion_tokens", "cached_tokens", "reasoning_tokens", "cost_usd", "cost_flags",
    "upstream_key_name", "cost_without_cache_usd",
)  # fmt: skip
# The number columns. A value out of range there (inf, or text: older versions could store
# either from an upstream's usage) is read as null and left out of sums, never a crash.
NUMBERS: Final = frozenset({"ts", "duration_ms", "ttft_ms", "status_code", "prompt_tokens", "completion_tokens",
                            "cached_tokens", "reasoning_tokens", "cost_usd", "cost_without_cache_usd"})
_BOUND: Final = 1e18


def total_of(column: str) -> str:
    """SQL for ``total(column)`` over its in-range values only."""
    return f"total(iif(abs({column}) < {_BOUND:g}, {column}, null))"


def shown(value: Any) -> Any:
    """A number column's value as read, or None when it is out of range."""
    if isinstance(value, int) or isinstance(value, float) and math.isfinite(value) and abs(value) < _BOUND:
        return value
    return None


@migration
def m001_requests(db: sqlite3.Connection) -> None:
    # The large text columns come last: an aggregate over the small ones then stops
    # reading a record before its overflow pages.
    db.execute(
        """
        create table requests (
            id integer primary key,
            request_id text not null unique,
            ts real not null,
            duration_ms real, ttft_ms real,
            route text, provider text, model text, upstream_model text,
            key_name text, team text, client_ip text, user_agent text,
            status_code integer, status text, error_type text, error_message text,
            stream integer, finish_reason text,
            prompt_tokens integer, completion_tokens integer,
            cached_tokens integer, reasoning_tokens integer,
            cost_usd real, cost_flags text, upstream_key_name text,
            attempts text,
            prompt_text text, response_text text,
            request_json text, response_json text
        )
        """
    )
    # The newest-first page walks this index backwards with no sort; the columns after
    # (ts, id) make it covering for the totals, so they never touch the wide table rows.
    db.execute(
        "create index requests_ts on requests(ts desc, id desc,"
        " status, prompt_tokens, completion_tokens, cost_usd)"
    )
    # Each filter index continues with (ts, id), so a filtered page is read in page
    # order, and carries the totals' columns, so filtered totals stay inside it.
    for column in ("provider", "model", "key_name", "team", "status"):
        db.execute(
            f"create index requests_{column} on requests({column}, ts desc, id desc,"
            " status, prompt_tokens, completion_tokens, cost_usd)"
        )


@migration
def m002_requests_fts(db: sqlite3.Connection) -> None:
    db.execute(
        """
        create virtual table requests_fts using fts5(
            prompt_text, response_text,
            content='requests', content_rowid='id',
            tokenize='unicode61 remove_diacritics 2'
        )
        """
    )
    # External content: FTS5 cannot see changes to `requests`, so triggers tell it. A
    # 'delete' must pass the old values, which is what the index tokenises to remove.
    db.execute(
        """
        create trigger requests_ai after insert on requests begin
            insert into requests_fts(rowid, prompt_text, response_text)
            values (new.id, new.prompt_text, new.response_text);
        end
        """
    )
    db.execute(
        """
        create trigger requests_ad after delete on requests begin
            insert into requests_fts(requests_fts, rowid, prompt_text, response_text)
            values ('delete', old.id, old.prompt_text, old.response_text);
        end
        """
    )
    db.execute(
        """
        create trigger requests_au after update of prompt_text, response_text on requests begin
            insert into requests_fts(requests_fts, rowid, prompt_text, response_text)
            values ('delete', old.id, old.prompt_text, old.response_text);
            insert into requests_fts(rowid, prompt_text, response_text)
            values (new.id, new.prompt_text, new.response_text);
        end
        """
    )
    # Rows logged before this migration get indexed too.
    db.execute("insert into requests_fts(requests_fts) values ('rebuild')")


@migration
def m003_covering_indexes(db: sqlite3.Connection) -> None:
    # m001's indexes covered the totals but no second filter: team and key together read
    # every row of the team from the wide table (0.8 s at 1M rows; 17 ms after this).
    # Now every index is (lead column, ts, id) plus every column a filter or the totals
    # read, so only a page's own rows are read from the table. The cost is a narrow
    # copy of each row per index, small next to the conversation text.
    # Literal lists, not shared constants: a migration must not change after it shipped.
    covered = ("status", "prompt_tokens", "completion_tokens", "cost_usd", "provider", "model", "key_name",
               "team", "stream", "duration_ms")  # fmt: skip
    for lead in ("ts", "provider", "model", "key_name", "team", "status"):
        keys = "ts desc, id desc" if lead == "ts" else f"{lead}, ts desc, id desc"
        rest = ", ".join(c for c in covered if c != lead)
        db.execute(f"drop index if exists requests_{lead}")
        db.execute(f"create index requests_{lead} on requests({keys}, {rest})")


@migration
def m004_stored_responses(db: sqlite3.Connection) -> None:
    # Responses API `store: true`: the conversation so far, so `previous_response_id` works on any provider
    db.execute(
        "create table stored_responses (id text primary key, created real not null, body text not null)"
    )


@migration
def m005_spend_by_day(db: sqlite3.Connection) -> None:
    # Budgets are rebuilt from spend at startup, and pruning old requests (logs.retention_days)
    # must not forget a month's or a total budget's spend: a daily roll-up that pruning never touches.
    db.execute(
        "create table spend_by_day (day real not null, key_name text not null, team text not null,"
        " cost_usd real not null, primary key (day, key_name, team))"
    )
    db.execute(
        "create trigger requests_spend after insert on requests when new.cost_usd > 0 and"
        " (new.key_name is not null or new.team is not null) begin insert into spend_by_day values"
        " (cast(new.ts / 86400 as integer) * 86400.0, coalesce(new.key_name, ''), coalesce(new.team, ''),"
        " new.cost_usd) on conflict do update set cost_usd = cost_usd + excluded.cost_usd; end"
    )
    db.execute(
        "insert into spend_by_day select cast(ts / 86400 as integer) * 86400.0, coalesce(key_name, ''),"
        " coalesce(team, ''), total(cost_usd) from requests where cost_usd > 0 and"
        " (key_name is not null or team is not null) group by 1, 2, 3"
    )


@migration
def m006_request_previews(db: sqlite3.Connection) -> None:
    # The list's "first words of the prompt", written with the row: reading them out of
    # request_json took one full row read and JSON parse per listed row. A table of its own,
    # because a column after the large text columns would be read through their overflow pages.
    db.execute("create table request_previews (request_id text primary key, preview text not null)")
    db.execute(
        "create trigger requests_preview_ad after delete on requests begin"
        " delete from request_previews where request_id = old.request_id; end"
    )


# m007's requests table: the scalars, then how the row sits in its session and which
# stored pieces rebuild its body. Literal, like every migration's DDL.
REQUEST_COLUMNS: Final = (
    "request_id", *SCALARS, "attempts", "session", "turn", "parent", "prefix_len", "new_from", "n_messages",
    "response_id",
)
# (pos, content) of a request's messages: its own rows (pos >= prefix_len), then its
# parent's below that, and so on up the chain (each request stores only what it added).
MESSAGE_REFS_SQL: Final = """
with recursive chain(id, lim) as (
    select id, n_messages from requests where id = ?
    union all
    -- SQLite's min(c.lim, r.prefix_len), null when either is, spelled so PostgreSQL reads it too
    select r.parent, case when c.lim <= r.prefix_len then c.lim when r.prefix_len < c.lim then r.prefix_len end
    from chain c join requests r on r.id = c.id
    where r.parent is not null
)
select rc.pos, rc.content from chain c join request_content rc on rc.request = c.id
where rc.pos >= 0 and rc.pos < c.lim order by rc.pos
"""


@migration
def m007_content_and_sessions(db: sqlite3.Connection) -> None:
    # Agents resend their whole history every turn: each message, tools list and body
    # skeleton is now stored once by hash (``content``), indexed once (``content_fts``),
    # and referenced by each request that added it (``request_content``); requests are
    # threaded into ``sessions``. Every existing row is rewritten that way (finopsd.log.upgrade).
    from finopsd.log.upgrade import rewrite_requests  # the writer's code, which imports this module

    db.execute(
        "create table content (id integer primary key, hash blob not null unique, kind text not null,"
        " size integer not null, body blob not null)"
    )
    # Contentless: the text lives (compressed) in ``content``; snippets are made in Python.
    db.execute(
        "create virtual table content_fts using fts5(prompt_text, response_text, content='',"
        " tokenize='unicode61 remove_diacritics 2')"
    )
    db.execute(
        """
        create table sessions (
            id integer primary key,
            session_id text not null unique,
            source text not null,
            client_session_id text, key_name text, team text, fingerprint blob,
            ts real not null, last_ts real not null,
            turns integer not null, errors integer not null,
            prompt_tokens integer not null, completion_tokens integer not null, cached_tokens integer not null,
            cost_usd real not null, models text not null, first_words text,
            -- the same turns with nothing read from or written to a prompt cache (issue #18)
            cost_without_cache_usd real not null default 0,
            last_request integer
        )
        """
    )
    db.execute("create index sessions_last on sessions(last_ts desc, id desc)")
    db.execute("create index sessions_client on sessions(client_session_id, key_name)"
               " where client_session_id is not null")
    db.execute("create index sessions_fingerprint on sessions(fingerprint, last_ts) where fingerprint is not null")
    db.execute(
        "create table request_content (request integer not null, pos integer not null, content integer not null,"
        " primary key (request, pos)) without rowid"
    )
    db.execute("create index request_content_content on request_content(content)")
    # The old table and its index go; the new one takes its name before the rows move,
    # so the writer's code writes it as it will at run time.
    for trigger in ("requests_ai", "requests_ad", "requests_au", "requests_spend", "requests_preview_ad"):
        db.execute(f"drop trigger if exists {trigger}")
    db.execute("drop table requests_fts")
    db.execute("alter table requests rename to requests_m001")
    db.execute(
        """
        create table requests (
            id integer primary key,
            request_id text not null unique,
            ts real not null,
            duration_ms real, ttft_ms real,
            route text, provider text, model text, upstream_model text,
            key_name text, team text, client_ip text, user_agent text,
            status_code integer, status text, error_type text, error_message text,
            stream integer, finish_reason text,
            prompt_tokens integer, completion_tokens integer,
            cached_tokens integer, reasoning_tokens integer,
            cost_usd real, cost_flags text, upstream_key_name text,
            -- what the request would have cost with nothing cached (issue #18); null before
            cost_without_cache_usd real,
            attempts text,
            session integer not null, turn integer not null,
            parent integer, prefix_len integer, new_from integer, n_messages integer,
            response_id text
        )
        """
    )
    rewrite_requests(db, "requests_m001")
    db.execute("drop table requests_m001")
    covered = ("status", "prompt_tokens", "completion_tokens", "cost_usd", "provider", "model", "key_name",
               "team", "stream", "duration_ms", "session", "cost_without_cache_usd")  # fmt: skip
    for lead in ("ts", "provider", "model", "key_name", "team", "status"):
        keys = "ts desc, id desc" if lead == "ts" else f"{lead}, ts desc, id desc"
        rest = ", ".join(c for c in covered if c != lead)
        db.execute(f"create index requests_{lead} on requests({keys}, {rest})")
    db.execute("create index requests_session on requests(session, turn)")
    db.execute("create index requests_response on requests(response_id) where response_id is not null")
    # as in m005 and m006, now on the new table (created after the rewrite: its spend is already rolled up)
    db.execute(
        "create trigger requests_spend after insert on requests when new.cost_usd > 0 and"
        " (new.key_name is not null or new.team is not null) begin insert into spend_by_day values"
        " (cast(new.ts / 86400 as integer) * 86400.0, coalesce(new.key_name, ''), coalesce(new.team, ''),"
        " new.cost_usd) on conflict do update set cost_usd = cost_usd + excluded.cost_usd; end"
    )
    db.execute(
        "create trigger requests_preview_ad after delete on requests begin"
        " delete from request_previews where request_id = old.request_id; end"
    )


@migration
def m008_stored_response_owner(db: sqlite3.Connection) -> None:
    # a stored response belongs to the key and team that made it; rows from before have no
    # owner, so only an anonymous caller (auth off) still reaches them
    db.execute("alter table stored_responses add column key_name text")
    db.execute("alter table stored_responses add column team text")


# Request columns added after m007 (whose rewrite of old logs runs the writer on a table
# without them): the writer fills those the table has. Named as in the row dict.
LATE_COLUMNS: Final = ("user", "project", "tags")


@migration
def m009_attribution(db: sqlite3.Connection) -> None:
    # who and what a request was for inside its key (finopsd.attribution); tags as a JSON list
    db.execute("alter table requests add column user text")
    db.execute("alter table requests add column project text")
    db.execute("alter table requests add column tags text")
    db.execute("create index requests_user on requests(user, ts)")
    db.execute("create index requests_project on requests(project, ts)")


@migration
def m010_dashboard_keys(db: sqlite3.Connection) -> None:
    # keys and teams made through /api/keys and /api/teams (finopsd/keystore.py): the definition
    # as the config file would hold it, as JSON; a key only as its SHA-256; ``version`` answers If-Match
    db.execute("""create table dashboard_keys (name text primary key, key_sha256 text not null unique,
        previous_sha256 text, previous_until real, definition text not null, version integer not null,
        created_at real not null, updated_at real not null)""")
    db.execute("""create table dashboard_teams (name text primary key, definition text not null,
        version integer not null, created_at real not null, updated_at real not null)""")
    # every change to a key or team; ``before``/``after`` are definitions, never a secret or digest
    db.execute("""create table audit (id integer primary key, ts real not null, actor text not null,
        client_ip text, action text not null, kind text not null, name text not null, before text, after text)""")
    db.execute("create index audit_ts on audit (ts)")


@migration
def m011_usage_rollups(db: sqlite3.Connection) -> None:
    # /usage and /api/usage read these, never the log: per hour and per day (``grain`` in
    # seconds, ``bucket`` the UTC start) and per combination of (team, key, model, provider)
    # (``usage_dims``, '' for none; rows name it by its integer id, which keeps them small),
    # kept by a trigger as each row is inserted. Pruning deletes requests and never touches
    # these, so the charts keep history past logs.retention_days. Latency and time to first
    # token go into fixed log-spaced bins: bin k holds [2**(k/4), 2**((k+1)/4)) ms (bin 0
    # everything under 2**(1/4) ms, bin 79 everything from 2**(79/4) ms = 880 s), so a
    # percentile read at its bin's geometric middle is within a factor 2**(1/8) (-8%/+9%).
    db.execute(
        "create table usage_dims (id integer primary key, team text not null, key_name text not null,"
        " model text not null, provider text not null, unique (team, key_name, model, provider))"
    )
    db.execute(
        "create table usage_rollup (grain integer not null, bucket integer not null, dims integer not null,"
        " requests integer not null, errors integer not null, client_closed integer not null,"
        " prompt_tokens integer not null, cached_tokens integer not null, completion_tokens integer not null,"
        " cost_usd real not null, cost_without_cache_usd real not null, primary key (grain, bucket, dims))"
        " without rowid"
    )
    db.execute(
        "create table usage_errors (grain integer not null, bucket integer not null, dims integer not null,"
        " error_type text not null, n integer not null, primary key (grain, bucket, dims, error_type)) without rowid"
    )
    # one row per bucket and combination, a column per bin (l0..l79 latency, t0..t79 time to
    # first token): one upsert a request, and a month of them read as a few thousand rows
    bins = ", ".join(f"{m}{k} integer not null" for m in "lt" for k in range(80))
    db.execute(
        "create table usage_latency (grain integer not null, bucket integer not null, dims integer not null,"
        f" {bins}, primary key (grain, bucket, dims)) without rowid"
    )

    def num(column: str) -> str:  # out-of-range values (inf, text from old versions) count as 0, as in total_of
        return f"iif(abs({column}) < 1e18, {column}, 0)"

    def bin_of(column: str, lo: int = 0, hi: int = 80) -> str:
        # a binary search over the bins' lower edges: 7 comparisons a value, not up to 79
        if hi - lo == 1:
            return str(lo)
        mid = (lo + hi) // 2
        return (f"case when {column} < {2 ** (mid / 4)!r} then {bin_of(column, lo, mid)}"
                f" else {bin_of(column, mid, hi)} end")

    def binned(r: str) -> str:  # a value out of range (or none) has no bin
        return ", ".join(f"iif(abs({r}{c}) < 1e18, {bin_of(f'{r}{c}')}, null) as {name}"
                         for c, name in (("duration_ms", "bl"), ("ttft_ms", "bt")))

    def dims_of(r: str) -> str:
        return (f"coalesce({r}.team, ''), coalesce({r}.key_name, ''), coalesce({r}.model, ''),"
                f" coalesce({r}.provider, '')")

    # One SELECT each, used twice: by the trigger over ``new`` (agg = the value itself) and by
    # the backfill over the table (agg = total, grouped by the key columns).
    def selects(r: str, agg: Callable[[str], str]) -> list[tuple[str, str, str, str]]:
        head = f"g, cast({r}.ts / g as integer) * g, d.id"
        error, closed = f"{r}.status = 'error'", f"{r}.status = 'client_closed'"
        out = [(
            "usage_rollup",
            f"{head}, {agg('1')}, {agg(error)}, {agg(closed)}, {agg(num(f'{r}.prompt_tokens'))},"
            f" {agg(num(f'{r}.cached_tokens'))}, {agg(num(f'{r}.completion_tokens'))}, {agg(num(f'{r}.cost_usd'))},"
            f" {agg(num(f'coalesce({r}.cost_without_cache_usd, {r}.cost_usd)'))}", "true",
            "requests = requests + excluded.requests, errors = errors + excluded.errors,"
            " client_closed = client_closed + excluded.client_closed,"
            " prompt_tokens = prompt_tokens + excluded.prompt_tokens,"
            " cached_tokens = cached_tokens + excluded.cached_tokens,"
            " completion_tokens = completion_tokens + excluded.completion_tokens,"
            " cost_usd = cost_usd + excluded.cost_usd,"
            " cost_without_cache_usd = cost_without_cache_usd + excluded.cost_without_cache_usd",
        ), (
            "usage_errors",
            f"{head}, coalesce({r}.error_type, 'error'), {agg('1')}", error,
            "n = n + excluded.n",
        )]
        # each bin column counts the rows whose value falls in it (``binned``: their bins, once each)
        counts = ", ".join(agg(f"coalesce({b} = {k}, 0)") for b in ("binned.bl", "binned.bt") for k in range(80))
        out.append(("usage_latency", f"{head}, {counts}", "true",
                    ", ".join(f"{m}{k} = {m}{k} + excluded.{m}{k}" for m in "lt" for k in range(80))))
        return out

    grains = "(select 3600 as g union all select 86400)"
    # the row's combination, found by the unique index (made first if it is new)
    one = ("(select id from usage_dims where (team, key_name, model, provider) ="
           f" ({dims_of('new')})) d")
    body = "; ".join(
        [f"insert into usage_dims (team, key_name, model, provider) values ({dims_of('new')}) on conflict do nothing"]
        + [f"insert into {table} select {cols} from {grains} join {one}"
           + (f" join (select {binned('new.')}) binned" if table == "usage_latency" else "")
           + f" where {where} on conflict do update set {update}"
           for table, cols, where, update in selects("new", str)])
    db.execute(f"create trigger requests_usage after insert on requests begin {body}; end")
    # what is logged already (what retention kept of it)
    db.execute(f"insert into usage_dims (team, key_name, model, provider) select distinct {dims_of('r')}"
               " from requests r")
    every = f"usage_dims d on (d.team, d.key_name, d.model, d.provider) = ({dims_of('r')})"
    for table, cols, where, _ in selects("r", lambda e: f"total({e})"):
        cols = cols.replace("binned.", "r.")
        keys = "1, 2, 3, 4" if table == "usage_errors" else "1, 2, 3"
        db.execute(f"insert into {table} select {cols} from {grains}"
                   f" join (select *, {binned('')} from requests) r join {every} where {where} group by {keys}")


@migration
def m012_alerts(db: sqlite3.Connection) -> None:
    # Each alert fired (a budget threshold in one window, a provider's error rate in one
    # 5-minute window), claimed here before it is sent: the unique key is what makes it fire
    # once, also across a restart. Kept small (a message, no URL: targets may be secrets).
    db.execute(
        "create table alerts (id integer primary key, ts real not null, kind text not null, subject text not null,"
        " window text not null, threshold real not null, message text not null, status text not null,"
        " attempts integer not null default 0, last_error text, unique (kind, subject, window, threshold))"
    )
    db.execute("create index alerts_ts on alerts(ts desc)")


def migrate(db: sqlite3.Connection) -> list[str]:
    """Apply every migration not yet recorded, each in its own transaction; return their names."""
    db.execute("create table if not exists _migrations (name text primary key, applied_at real not null)")
    done = {row[0] for row in db.execute("select name from _migrations")}
    applied: list[str] = []
    for fn in MIGRATIONS:
        name = fn.__name__
        if name in done:
            continue
        # `begin immediate` takes the write lock first, so a second process opening the
        # same file waits here and then sees the row below instead of migrating twice.
        db.execute("begin immediate")
        try:
            if not db.execute("select 1 from _migrations where name = ?", (name,)).fetchone():
                fn(db)
                db.execute("insert into _migrations (name, applied_at) values (?, ?)", (name, time.time()))
                applied.append(name)
            db.execute("commit")
        except BaseException:
            db.execute("rollback")
            raise
    return applied
