"""The writer's statements on SQLite: what ``Batch`` and ``Writer`` ask the database, and only that.

The planning (``batch``) is the same on every backend; a dialect says how ids are
allocated, how a set of values is looked up, how rows are inserted, and how the
sessions a batch touches are held. ``finopsd.log.pg.dialect`` is PostgreSQL's.

SQLite has one writer (``begin immediate`` holds the file's write lock), so ids are
``max(id) + 1`` on, nothing needs holding, and a statement binds at most
``SQLITE_LIMIT_VARIABLE_NUMBER`` values: rows go in chunks padded with null rows to a
power of two, so that few statement shapes are ever prepared.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

from finopsd.log.content import index_text
from finopsd.log.schema import MESSAGE_REFS_SQL

MAX_CHUNK: Final = 512  # rows per statement; a batch is 500 rows, a few pieces each
CANDIDATES: Final = 4  # sessions of one fingerprint the prefix rule compares, last active first
CANDIDATES_SQL: Final = (
    f"select * from (select fingerprint, id, last_ts from sessions where fingerprint = ? and last_ts >= ?"
    f" order by last_ts desc limit {CANDIDATES}) c"
)
SESSION_COLUMNS: Final = ("id", "session_id", "source", "client_session_id", "key_name", "team", "fingerprint",
                          "ts", "last_ts", "first_words")  # fmt: skip
# what a new session starts from; the batch's sums are then added (DELTA_COLUMNS)
NEW_SESSION: Final = {"turns": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0,
                      "cost_usd": 0, "models": "[]"}  # fmt: skip
# the batch's sums per session; a session it created starts from the inserted zeros
DELTA_COLUMNS: Final = ("id", "ts", "last_ts", "turns", "errors", "prompt_tokens", "completion_tokens", "cached_tokens",
                        "cost_usd", "cost_without_cache_usd", "models", "source", "last_request")  # fmt: skip
SESSION_SET: Final = (
    "ts = {least}(sessions.ts, v.ts), last_ts = {greatest}(sessions.last_ts, v.last_ts),"
    " turns = v.turns, errors = sessions.errors + v.errors, prompt_tokens = sessions.prompt_tokens +"
    " v.prompt_tokens, completion_tokens = sessions.completion_tokens + v.completion_tokens,"
    " cached_tokens = sessions.cached_tokens + v.cached_tokens, cost_usd = sessions.cost_usd + v.cost_usd,"
    " cost_without_cache_usd = sessions.cost_without_cache_usd + v.cost_without_cache_usd,"
    " models = v.models, source = v.source, last_request = v.last_request"
)


class SQLite:
    """One connection's statements; ``db`` is the writer's sqlite3 connection."""

    shared = False  # no other writer: what the writer remembers stays true
    message_refs = MESSAGE_REFS_SQL

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.max_vars = db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self.db.execute(sql, args)

    def begin(self) -> None:
        self.db.execute("begin immediate")  # the write lock first: nobody else takes these ids

    def in_transaction(self) -> bool:
        return self.db.in_transaction

    def columns(self, table: str) -> set[str]:
        return {r[1] for r in self.db.execute(f"pragma table_info({table})")}

    def connected(self) -> bool:
        return True

    def transient(self, e: BaseException) -> bool:
        """Whether the batch should be written again later as it is (the database went away,
        or the transaction lost a conflict with another writer)."""
        return False

    def lasting(self, e: BaseException) -> bool:
        """Of those, whether to try for as long as it takes (the database is gone or unwell),
        not a few times (a conflict)."""
        return False

    def reserve(self, table: str, n: int) -> Sequence[int]:
        """``n`` ids for new rows of ``table`` (asked once per table and batch)."""
        (last,) = self.db.execute(f"select max(id) from {table}").fetchone()
        return range((last or 0) + 1, (last or 0) + 1 + n)

    def select_in(self, sql: str, values: list[Any]) -> Iterator[tuple[Any, ...]]:
        """Rows of ``sql`` whose ``{}`` is ``column in (values)``-style: ``in ({})``."""
        for n, args in self.chunks([(v,) for v in values], 1):
            yield from self.db.execute(sql.format(", ".join(["?"] * n)), args)

    def candidates(self, marks: list[bytes], floor: float) -> Iterator[tuple[bytes, int, float]]:
        """(fingerprint, session id, last_ts) of the newest CANDIDATES sessions of each mark active since floor."""
        step = 250  # two arguments each, and at most 500 selects in one compound
        for start in range(0, len(marks), step):
            chunk = marks[start:start + step]
            n = shape(len(chunk))
            args = [v for m in chunk for v in (m, floor)] + [None, None] * (n - len(chunk))
            yield from self.db.execute(" union all ".join([CANDIDATES_SQL] * n), args)

    def stored_pieces(self, digests: list[bytes]) -> dict[bytes, int]:
        """The ids of the pieces already stored, by hash."""
        return dict(self.select_in("select hash, id from content where hash in ({})", digests))

    def hold(self, sids: Iterable[int]) -> dict[int, int | None]:
        """Lock these sessions until the batch commits; their stored last_request (none here: one writer)."""
        return {}

    def claim(self, session: tuple[Any, ...]) -> int | None:
        """Insert a new session named by a client's session id now, or find the one that has it:
        its id; None when it is inserted with the batch (here, where no other writer can race)."""
        return None

    def insert(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]], replace: bool = False) -> None:
        if not rows:
            return
        head = f"insert {'or replace ' if replace else ''}into {table} ({', '.join(columns)})"
        width = len(rows[0])
        for n, args in self.chunks(rows, width):
            # the padding rows are all null; the first column never is
            self.db.execute(
                f"{head} select * from (values {', '.join([marks(width)] * n)}) where column1 is not null", args)

    def insert_content(self, rows: list[tuple[int, bytes, str, int, bytes, Any]]) -> dict[bytes, int]:
        """Insert new pieces (id, hash, kind, size, body, value) and index them; the hashes another
        writer stored first, with their ids (none here)."""
        self.insert("content", ("id", "hash", "kind", "size", "body"), [r[:5] for r in rows])
        index = [(r[0], *index_text(r[2], r[5])) for r in rows]
        self.insert("content_fts", ("rowid", "prompt_text", "response_text"), [r for r in index if r[1] or r[2]])
        return {}

    def update_sessions(self, rows: list[tuple[Any, ...]]) -> None:
        width = len(DELTA_COLUMNS)
        for n, args in self.chunks(rows, width):
            self.db.execute(
                f"with v({', '.join(DELTA_COLUMNS)}) as (values {', '.join([marks(width)] * n)}) update sessions set"
                f" {SESSION_SET.format(least='min', greatest='max')} from v where sessions.id = v.id", args)

    def chunks(self, rows: list[tuple[Any, ...]], width: int) -> Iterator[tuple[int, list[Any]]]:
        """(row count, flat arguments) per statement, padded with null rows to a power of two."""
        step = min(MAX_CHUNK, 1 << ((self.max_vars // width).bit_length() - 1))
        for start in range(0, len(rows), step):
            chunk = rows[start:start + step]
            n = shape(len(chunk))
            yield n, [v for r in chunk for v in r] + [None] * (width * (n - len(chunk)))

    def error_name(self, e: BaseException) -> str:
        # SQLite's error name (SQLITE_CONSTRAINT_UNIQUE…) carries no row content.
        return getattr(e, "sqlite_errorname", None) or type(e).__name__


def shape(n: int) -> int:
    """The next power of two: a statement per table for any batch, and few shapes to prepare."""
    return 1 << (n - 1).bit_length()


def marks(width: int) -> str:
    return f"({', '.join(['?'] * width)})"
