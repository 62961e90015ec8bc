"""The log writer's work, run in a worker thread on its own sqlite3 connection.

Per row it threads the request into a session, finds how much of its message list the
session's previous request already stored (Python equality on the parsed messages:
no re-encoding of the history), and encodes, hashes, compresses and indexes only the
rest. What it remembers of each recent session (its newest messages and their content
ids) is a bounded cache; a session it forgot is read back from the database.

Each row is written inside its own savepoint: a row that fails is rolled back alone
and retried once without its conversation and with the values SQLite cannot hold
(integers past 64 bits, infinities) cleared; only if that fails too is it lost, and
counted. The batch around it commits either way.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from finopsd.exchange import new_request_id
from finopsd.log.content import (
    ANSWER, MESSAGE, POS, SKELETON, TOOLS, index_text, pack, split_request, unpack, without_images,
)  # fmt: skip
from finopsd.log.schema import LATE_COLUMNS, MESSAGE_REFS_SQL, REQUEST_COLUMNS, SCALARS
from finopsd.log.sessions import PREFIX_IDLE_S, common_prefix, extends, fingerprint, first_words, new_from, same_message
from finopsd.log.text import _dumps, preview_of

log = logging.getLogger(__name__)

INSERT_REQUEST: Final = (
    f"insert into requests ({', '.join(REQUEST_COLUMNS)}) values ({', '.join('?' * len(REQUEST_COLUMNS))})"
)
CACHE_SESSIONS: Final = 256
# a session's list of models is kept in memory and rewritten on every turn: bounded, since
# a client names its models (a task that tries more is still logged, row by row)
MAX_MODELS: Final = 16
MAX_DURATION_MS: Final = 86_400_000
MODEL_CHARS: Final = 200
CACHE_BYTES: Final = 12 << 20
INT64: Final = 1 << 63


class Unstorable(ValueError):
    """A value SQLite cannot hold as given."""


def _scalar(name: str, value: Any, strict: bool) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        if -INT64 <= value < INT64:
            return value
    elif isinstance(value, float):
        if math.isfinite(value):
            return value
    elif value is None or isinstance(value, str):
        return value
    else:
        return str(value)  # binds whatever the caller put there instead of failing the row
    if strict:
        raise Unstorable(name)
    return None


def _count(value: Any) -> Any:
    """A number column's value for a sum: 0 unless a finite number (text and inf can reach a row)."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else 0


@dataclass
class Thread:
    """What the writer remembers of a session's newest request."""

    rowid: int
    source: str
    turns: int = 0
    last_request: int | None = None
    messages: list[Any] = field(default_factory=list)
    content_ids: list[int] = field(default_factory=list)  # parallel to messages when the text was stored
    tools: list[Any] | None = None
    tools_id: int | None = None
    models: list[str] = field(default_factory=list)
    size: int = 0


def _as_is(value: Any) -> Any:
    return value


class Writer:
    """Owns the write connection's session cache and failure counts; not thread-safe (one caller at a time).

    ``scrub`` takes secrets out of what is stored (``Scrubber.value``). It runs here, in the
    worker thread, on the row's own fields and on each new piece only: a whole conversation
    scrubbed per request would cost the event loop time that grows with the history."""

    def __init__(self, db: sqlite3.Connection, scrub: Callable[[Any], Any] | None = None) -> None:
        self.db = db
        self.scrub = scrub or _as_is
        self.threads: OrderedDict[int, Thread] = OrderedDict()
        self.cached_bytes = 0
        columns = {r[1] for r in db.execute("pragma table_info(requests)")}
        self.late = [c for c in LATE_COLUMNS if c in columns]  # none while m007 rewrites old logs
        self.insert_request = INSERT_REQUEST if not self.late else (
            f"insert into requests ({', '.join((*REQUEST_COLUMNS, *self.late))})"
            f" values ({', '.join('?' * (len(REQUEST_COLUMNS) + len(self.late)))})")
        self.failed = 0  # rows lost: not even their metadata could be written
        self.degraded = 0  # rows written without their conversation or some values

    # ------------------------------------------------------------------ batches

    def write(self, rows: list[dict[str, Any]]) -> None:
        """One transaction for the batch, one savepoint per row."""
        self.db.execute("begin immediate")
        try:
            for row in rows:
                self.write_row(row)
            self.db.execute("commit")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("rollback")
            self.forget()  # the cache may name rows that were just rolled back
            raise

    def forget(self) -> None:
        self.threads.clear()
        self.cached_bytes = 0

    def write_row(self, row: dict[str, Any]) -> None:
        """Write one row inside the caller's transaction; never raises for a bad row."""
        for strict in (True, False):
            self.db.execute("savepoint one_row")
            try:
                thread = self._insert(row, strict)
            except Exception as e:  # noqa: BLE001 - whatever one row holds, the batch goes on
                self.db.execute("rollback to one_row")
                self.db.execute("release one_row")
                if strict:
                    log.warning("log row %s: %s; writing it without its conversation", row.get("id"), _err(e))
                    continue
                self.failed += 1
                log.error("log row %s not written (%s)", row.get("id"), _err(e))
                return
            self.db.execute("release one_row")
            if not strict:
                self.degraded += 1
            self._remember(thread)
            return

    # ------------------------------------------------------------------ one row

    def _insert(self, row: dict[str, Any], strict: bool) -> Thread:
        request = row.get("request") if isinstance(row.get("request"), dict) else None
        # everything but the conversation, which is scrubbed piece by piece as it is stored
        row = {**self.scrub({k: v for k, v in row.items() if k != "request"}), "request": request}
        store_text = strict and request is not None and row.get("content", True) is not False
        skeleton, messages, tools = split_request(request) if request is not None else ({}, None, None)
        # the second try threads by header only: messages too deep to compare or hash fail the first
        msgs = (messages or []) if strict else []
        values = [_scalar(k, row.get(k), strict) for k in SCALARS]
        if not _count(values[0]):
            values[0] = time.time()  # ts is the keyset; a row without a usable one still gets logged
        scalars = dict(zip(SCALARS, values))
        ts, key = float(scalars["ts"]), scalars["key_name"]

        thread, source = self._find(row, msgs, key, ts)
        if thread is None:
            thread = self._new_session(row, msgs, scalars, source, store_text)
        old = thread.messages
        exact = common_prefix(old, msgs, operator.eq)
        loose = exact + common_prefix(old[exact:], msgs[exact:], same_message)
        reuse = min(exact, len(thread.content_ids))  # the stored prefix this request shares
        turn = thread.turns + 1
        images = bool(row.get("images", True))
        attempts = row.get("attempts") or []
        if not strict:
            attempts = [*attempts, {"note": "log: conversation or unstorable values dropped"}]
        cur = self.db.execute(self.insert_request, (
            str(row["id"]), *values, _dumps(attempts), thread.rowid, turn,
            thread.last_request if reuse else None, reuse, new_from(old, msgs, loose) if old else 0,
            len(messages) if store_text and messages is not None else None,
            _scalar("response_id", row.get("response_id"), strict),
            *(_scalar(c, row.get(c), strict) for c in self.late),
        ))  # fmt: skip
        rid = int(cur.lastrowid or 0)
        ids: list[int] = []
        tools_id: int | None = None
        if store_text and request is not None:
            ids = thread.content_ids[:reuse] + [
                self._content(MESSAGE, without_images(m) if images else m) for m in msgs[reuse:]]
            parts = [(rid, pos, ids[pos]) for pos in range(reuse, len(msgs))]
            body = without_images(skeleton) if images else skeleton
            parts.append((rid, POS[SKELETON], self._content(SKELETON, body)))
            if tools is not None:
                tools_id = thread.tools_id if thread.tools_id is not None and tools == thread.tools else (
                    self._content(TOOLS, tools))
                parts.append((rid, POS[TOOLS], tools_id))
            if isinstance(row.get("response"), dict):
                parts.append((rid, POS[ANSWER], self._content(ANSWER, row["response"])))
            self.db.executemany("insert into request_content (request, pos, content) values (?, ?, ?)", parts)
            preview = self.scrub(preview_of(request))
            if preview is not None:
                self.db.execute("insert or replace into request_previews (request_id, preview) values (?, ?)",
                                (str(row["id"]), preview))
        models = thread.models
        model = scalars["model"][:MODEL_CHARS] if isinstance(scalars["model"], str) else None
        if model is not None and model not in models and len(models) < MAX_MODELS:
            models = [*models, model]
        source = thread.source if thread.source != "new" else source
        # a session ends when its last request did; a duration past a day is an odd value, not a request
        end = ts + min(_count(scalars["duration_ms"]), MAX_DURATION_MS) / 1000
        self.db.execute(
            "update sessions set ts = min(ts, ?), last_ts = max(last_ts, ?), turns = ?, errors = errors + ?,"
            " prompt_tokens = prompt_tokens + ?, completion_tokens = completion_tokens + ?,"
            " cached_tokens = cached_tokens + ?, cost_usd = cost_usd + ?, cost_without_cache_usd ="
            " cost_without_cache_usd + ?, models = ?, source = ?, last_request = ?"
            " where id = ?",
            (ts, end, turn, int(scalars["status"] == "error"), _count(scalars["prompt_tokens"]),
             _count(scalars["completion_tokens"]), _count(scalars["cached_tokens"]), _count(scalars["cost_usd"]),
             _count(scalars["cost_usd"] if scalars["cost_without_cache_usd"] is None else scalars["cost_without_cache_usd"]),
             _dumps(models), source, rid, thread.rowid),
        )  # fmt: skip
        size = row.get("body_bytes")
        return Thread(thread.rowid, source, turn, rid, msgs, ids, tools, tools_id, models,
                      size if isinstance(size, int) else 0)  # fmt: skip

    def _find(self, row: dict[str, Any], msgs: list[Any], key: Any, ts: float) -> tuple[Thread | None, str]:
        hint = row.get("session_hint")
        if isinstance(hint, str) and hint:
            found = self.db.execute(
                "select id from sessions where client_session_id = ? and key_name is ?", (hint, key)).fetchone()
            return (self._thread(found[0]) if found else None), "header"
        previous = row.get("previous_response_id")
        if isinstance(previous, str) and previous:
            found = self.db.execute(
                "select session from requests where response_id = ? and key_name is ?", (previous, key)).fetchone()
            if found:
                return self._thread(found[0]), "response_chain"
        mark = fingerprint(key if isinstance(key, str) else None, msgs)
        if mark is not None:
            candidates = self.db.execute(
                "select id from sessions where fingerprint = ? and last_ts >= ? order by last_ts desc limit 4",
                (mark, ts - PREFIX_IDLE_S),
            ).fetchall()
            for (sid,) in candidates:
                thread = self._thread(sid)
                if extends(thread.messages, msgs):
                    return thread, "prefix"
        return None, "new"

    def _new_session(
        self, row: dict[str, Any], msgs: list[Any], scalars: dict[str, Any], source: str, store_text: bool
    ) -> Thread:
        hint = row.get("session_hint") if source == "header" else None
        key = scalars["key_name"]
        mark = None if hint else fingerprint(key if isinstance(key, str) else None, msgs)
        cur = self.db.execute(
            "insert into sessions (session_id, source, client_session_id, key_name, team, fingerprint, ts, last_ts,"
            " turns, errors, prompt_tokens, completion_tokens, cached_tokens, cost_usd, models, first_words)"
            " values (?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0, 0, 0, 0, '[]', ?)",
            (new_request_id(), source, hint, key, scalars["team"], mark, scalars["ts"], scalars["ts"],
             self.scrub(first_words(msgs)) if store_text else None),
        )  # fmt: skip
        return Thread(int(cur.lastrowid or 0), source)

    def _content(self, kind: str, value: Any) -> int:
        digest, size, body, stored = pack(kind, self.scrub(value))
        found = self.db.execute("select id from content where hash = ?", (digest,)).fetchone()
        if found:
            return int(found[0])
        cur = self.db.execute("insert into content (hash, kind, size, body) values (?, ?, ?, ?)",
                              (digest, kind, size, body))
        cid = int(cur.lastrowid or 0)
        prompt, answer = index_text(kind, stored)
        if prompt or answer:
            self.db.execute("insert into content_fts (rowid, prompt_text, response_text) values (?, ?, ?)",
                            (cid, prompt, answer))
        return cid

    # ------------------------------------------------------------------ the session cache

    def _thread(self, sid: int) -> Thread:
        thread = self.threads.get(sid)
        if thread is not None:
            self.threads.move_to_end(sid)
            return thread
        thread = load_thread(self.db, sid)
        self._remember(thread)
        return thread

    def _remember(self, thread: Thread) -> None:
        old = self.threads.pop(thread.rowid, None)
        if old is not None:
            self.cached_bytes -= old.size
        self.threads[thread.rowid] = thread
        self.cached_bytes += thread.size
        while len(self.threads) > CACHE_SESSIONS or (self.cached_bytes > CACHE_BYTES and len(self.threads) > 1):
            _, evicted = self.threads.popitem(last=False)
            self.cached_bytes -= evicted.size


def load_thread(db: sqlite3.Connection, sid: int) -> Thread:
    """A session's newest request, read back from the database (after a restart or an eviction)."""
    source, turns, last, models = db.execute(
        "select source, turns, last_request, models from sessions where id = ?", (sid,)).fetchone()
    thread = Thread(sid, source, turns, last, models=_json_list(models))
    if last is None:
        return thread
    (count,) = db.execute("select n_messages from requests where id = ?", (last,)).fetchone()
    refs = db.execute(MESSAGE_REFS_SQL, (last,)).fetchall()
    if count is None or [pos for pos, _ in refs] != list(range(count)):
        return thread  # no stored text: the prefix rule cannot match it
    bodies = content_values(db, {cid for _, cid in refs})
    thread.messages = [bodies[cid] for _, cid in refs]
    thread.content_ids = [cid for _, cid in refs]
    tools = db.execute("select content from request_content where request = ? and pos = ?",
                       (last, POS[TOOLS])).fetchone()
    if tools:
        thread.tools_id = int(tools[0])
        thread.tools = content_values(db, {thread.tools_id})[thread.tools_id]
    return thread


def content_values(db: sqlite3.Connection, ids: set[int]) -> dict[int, Any]:
    out: dict[int, Any] = {}
    pending = list(ids)
    while pending:
        chunk, pending = pending[:500], pending[500:]
        for cid, size, body in db.execute(
            f"select id, size, body from content where id in ({', '.join('?' * len(chunk))})", chunk
        ):
            out[cid] = unpack(size, body)
    return out


def _json_list(text: str | None) -> list[str]:
    value = json.loads(text) if text else []
    return value if isinstance(value, list) else []


def _err(e: BaseException) -> str:
    # SQLite's error name (SQLITE_CONSTRAINT_UNIQUE…) carries no row content.
    return getattr(e, "sqlite_errorname", None) or type(e).__name__
