"""One batch of log rows: planned in memory, then written with a few multi-row statements.

The writer's thread shares the GIL with a busy event loop. Every sqlite3 call (and
every row of an ``executemany``) lets go of the GIL and may then wait a switch
interval (5 ms) to get it back, so under load a batch costs what its number of calls
costs: nine calls a row held the writer to ~250 rows/s beside a loop answering
~2,300. Here the per-row work (threading into sessions, finding what is new, packing
pieces) runs against memory: ids are assigned from ``max(id) + 1`` at the batch's
start (PostgreSQL: a block from each table's sequence), what rows look up (a client's
session id, a previous response, the sessions a fingerprint names, whether a piece is
stored) is asked once for the whole batch, and each table then takes one statement.
How each of those is said to the database is its ``dialect``'s (``finopsd.log.dialect``,
``finopsd.log.pg.dialect``); the planning here is the same for both.

A row's plan is built aside and merged only once complete: a row that fails to plan
leaves nothing behind. ``Writer`` wraps ``flush`` in a savepoint and writes the batch
row by row if it fails.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from finopsd.exchange import new_request_id
from finopsd.log.content import ANSWER, MESSAGE, POS, SKELETON, TOOLS, pack, split_request, unpack, without_images
from finopsd.log.dialect import CANDIDATES, NEW_SESSION, SESSION_COLUMNS, SQLite
from finopsd.log.schema import REQUEST_COLUMNS, SCALARS
from finopsd.log.sessions import PREFIX_IDLE_S, extends, fingerprint, first_words, new_from, prefixes
from finopsd.log.text import _dumps, preview_of

if TYPE_CHECKING:
    from finopsd.log.writer import Writer


# a session's list of models is kept in memory and rewritten on every turn: bounded, since
# a client names its models (a task that tries more is still logged, row by row)
MAX_MODELS: Final = 16
MAX_DURATION_MS: Final = 86_400_000
MODEL_CHARS: Final = 200
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


def _plain(key: Any) -> bool:
    """A key SQLite gives back as it was bound (text affinity turns a number into text)."""
    return key is None or isinstance(key, str)


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
    fingerprint: bytes | None = None  # the session's, which the prefix rule looks it up by
    last_ts: float = 0.0


@dataclass
class Piece:
    """A piece of content new to the batch; ``id`` is a placeholder (-1, -2, ...) until the flush."""

    id: int
    digest: bytes
    kind: str
    size: int
    body: bytes
    stored: Any  # the value as it reads back, for the index


class Batch:
    """Rows planned against memory and written by ``flush``; not thread-safe, one per write."""

    def __init__(self, writer: Writer, rows: list[dict[str, Any]]) -> None:
        self.writer = writer
        self.sql = writer.sql
        self.size = len(rows)
        self.request_ids = self.sql.reserve("requests", self.size)  # one a row
        self.session_ids: Sequence[int] = ()  # reserved when the first new session is planned
        self.new_requests = self.new_sessions = 0
        self.threads: dict[int, Thread] = {}  # sessions the batch touched, as they are after it
        self.marked: dict[bytes, set[int]] = {}  # fingerprint -> sessions in self.threads
        self.pending: dict[bytes, int] = {}  # digest -> placeholder id of a piece in self.pieces
        self.pieces: list[Piece] = []
        self.sessions: list[tuple[Any, ...]] = []
        self.requests: list[tuple[Any, ...]] = []
        self.parts: list[tuple[int, int, int]] = []
        self.previews: list[tuple[str, str]] = []
        self.deltas: dict[int, list[Any]] = {}
        self.responses: dict[tuple[str, Any], int] = {}  # this batch's own response ids
        self.failed = 0
        self.degraded = 0
        self.held: set[int] = set()  # sessions checked against the database in this batch
        self.gone: set[int] = set()  # of those, the ones no longer there
        self._prefetch(rows)

    # ------------------------------------------------------------------ lookups, once per batch

    def _prefetch(self, rows: list[dict[str, Any]]) -> None:
        """What the rows will look up, read in one statement per kind. A row that looks up
        something else (its scrubbed values may differ), or whose lookup could not be made
        here (a value SQLite cannot bind), asks for it alone: it then fails alone."""
        self.marks_of: dict[int, tuple[Any, bytes | None]] = {}  # id(messages) -> (key, fingerprint)
        self.hints: dict[tuple[str, Any], int | None] = {}  # -> the lowest session id stored for it
        self.stored_responses: dict[tuple[str, Any], int | None] = {}  # -> the session of its lowest row
        # fingerprint -> (the oldest last_ts asked for, its sessions from then on: id, last_ts)
        self.candidates: dict[bytes, tuple[float, list[tuple[int, float]]]] = {}
        hints: set[tuple[str, Any]] = set()
        responses: set[tuple[str, Any]] = set()
        marks: set[bytes] = set()
        floor = time.time()
        for row in rows:
            ts = row.get("ts")
            if _count(ts) and -INT64 <= ts < INT64:
                floor = min(floor, ts)
            key, hint, previous = row.get("key_name"), row.get("session_hint"), row.get("previous_response_id")
            if not _plain(key):
                continue
            if isinstance(hint, str) and hint:
                hints.add((hint, key))
                continue
            if isinstance(previous, str) and previous:
                responses.add((previous, key))
            request = row.get("request")
            messages = request.get("messages") if isinstance(request, dict) else None
            if not isinstance(messages, list):
                continue
            try:
                mark = fingerprint(key, messages)
            except Exception:  # noqa: BLE001 - too deep to hash: its row's own lookup fails or skips it
                continue
            self.marks_of[id(messages)] = (key, mark)  # the rows, and so their lists, outlive the batch
            if mark is not None:
                marks.add(mark)
        self.floor = floor - PREFIX_IDLE_S
        asks = (
            (self.hints, hints, "select client_session_id, key_name, id from sessions"
             " where client_session_id in ({}) order by id"),
            (self.stored_responses, responses, "select response_id, key_name, session from requests"
             " where response_id in ({}) order by id"),
        )  # fmt: skip
        for found, asked, sql in asks:
            try:
                got: dict[tuple[str, Any], int | None] = {}
                for value, key, sid in self.sql.select_in(sql, sorted({v for v, _ in asked})):
                    got.setdefault((value, key), sid)
            except Exception:  # noqa: BLE001 - see above
                continue
            found.update(got)
            for pair in asked:
                found.setdefault(pair, None)
        sessions: dict[bytes, list[tuple[int, float]]] = {m: [] for m in marks}
        try:
            for mark, sid, last_ts in self.sql.candidates(sorted(marks), self.floor):
                sessions[mark].append((sid, last_ts))
        except Exception as e:  # noqa: BLE001 - see above
            if self.sql.transient(e):
                raise
        else:
            self.candidates.update((m, (self.floor, found)) for m, found in sessions.items())
        if self.sql.shared:  # in one statement, in id order: two instances lock them in the same order
            found_ids = {*self.hints.values(), *self.stored_responses.values()}
            found_ids.update(sid for _, listed in self.candidates.values() for sid, _ in listed)
            self._hold(sorted(s for s in found_ids if s is not None))

    def _hold(self, sids: list[int]) -> None:
        """Lock sessions another instance may write too, and forget what the writer remembers
        of those it did write since (or deleted: retention, since the lookup)."""
        held = self.sql.hold(sids)
        for sid in sids:
            self.held.add(sid)
            cached = self.writer.threads.get(sid)
            if sid not in held:
                self.gone.add(sid)
            if cached is not None and (sid not in held or cached.last_request != held[sid]):
                self.writer.drop(sid)

    def _hint_session(self, hint: str, key: Any) -> int | None:
        if (hint, key) not in self.hints:
            found = self.sql.execute("select id from sessions where client_session_id = ?"
                                     " and key_name is not distinct from ? order by id limit 1", (hint, key)).fetchone()
            self.hints[(hint, key)] = found[0] if found else None
        return self.hints[(hint, key)]

    def _response_session(self, previous: str, key: Any) -> int | None:
        if (previous, key) not in self.stored_responses:
            found = self.sql.execute("select session from requests where response_id = ? and key_name is not"
                                     " distinct from ? order by id limit 1", (previous, key)).fetchone()
            self.stored_responses[(previous, key)] = found[0] if found else None
        stored = self.stored_responses[(previous, key)]  # stored rows come first: their ids are lower
        return stored if stored is not None else self.responses.get((previous, key))

    def _candidates(self, mark: bytes, ts: float) -> list[int]:
        """What ``fingerprint = ? and last_ts >= ts - 1 day order by last_ts desc limit 4`` gives,
        with the batch's own sessions as they are now."""
        floor = ts - PREFIX_IDLE_S
        asked = self.candidates.get(mark)
        if asked is None or floor < asked[0]:
            asked = (min(floor, self.floor), [(sid, last) for _, sid, last in self.sql.candidates(
                [mark], min(floor, self.floor))])  # fmt: skip
            self.candidates[mark] = asked
        found = {sid: last for sid, last in asked[1] if sid not in self.threads}
        for sid in self.marked.get(mark, ()):
            found[sid] = self.threads[sid].last_ts
        ranked = sorted(((last, sid) for sid, last in found.items() if last >= floor), reverse=True)
        return [sid for _, sid in ranked[:CANDIDATES]]

    def _thread(self, sid: int) -> Thread | None:
        thread = self.threads.get(sid)
        if thread is not None:
            return thread
        if self.sql.shared and sid not in self.held:
            self._hold([sid])
        return None if sid in self.gone else self.writer.thread(sid)

    def _find(self, row: dict[str, Any], msgs: list[Any], key: Any,
              ts: float) -> tuple[Thread | None, str, Any, tuple[int, int] | None]:
        """(the session's thread or None, how it was found, the fingerprint a new session gets,
        ``prefixes`` of the thread's messages when the prefix rule found it)."""
        hint = row.get("session_hint")
        if isinstance(hint, str) and hint:
            sid = self._hint_session(hint, key)
            return (self._thread(sid) if sid is not None else None), "header", None, None
        previous = row.get("previous_response_id")
        if isinstance(previous, str) and previous:
            sid = self._response_session(previous, key)
            thread = self._thread(sid) if sid is not None else None
            if thread is not None:
                return thread, "response_chain", None, None
        key = key if isinstance(key, str) else None
        known = self.marks_of.get(id(msgs))
        mark = known[1] if known is not None and known[0] == key else fingerprint(key, msgs)
        if mark is not None:
            for sid in self._candidates(mark, ts):
                thread = self._thread(sid)
                shared = extends(thread.messages, msgs) if thread is not None else None
                if shared is not None:
                    return thread, "prefix", mark, shared
        return None, "new", mark, None

    # ------------------------------------------------------------------ one row

    def add(self, row: dict[str, Any], strict: bool) -> None:
        """Plan one row; if it raises, the batch is as it was."""
        scrub = self.writer.scrub
        request = row.get("request") if isinstance(row.get("request"), dict) else None
        # everything but the conversation, which is scrubbed piece by piece as it is stored
        row = {**scrub({k: v for k, v in row.items() if k != "request"}), "request": request}
        store_text = strict and request is not None and row.get("content", True) is not False
        skeleton, messages, tools = split_request(request) if request is not None else ({}, None, None)
        # the second try threads by header only: messages too deep to compare or hash fail the first
        msgs = (messages or []) if strict else []
        values = [_scalar(k, row.get(k), strict) for k in SCALARS]
        if not _count(values[0]):
            values[0] = time.time()  # ts is the keyset; a row without a usable one still gets logged
        scalars = dict(zip(SCALARS, values))
        ts, key = float(scalars["ts"]), scalars["key_name"]

        thread, source, mark, shared = self._find(row, msgs, key, ts)
        session = None
        if thread is None:
            hint = row.get("session_hint") if source == "header" else None
            if len(self.session_ids) == self.new_sessions:  # at most one a row: once per batch on SQLite
                self.session_ids, self.new_sessions = self.sql.reserve("sessions", self.size), 0
            session = (self.session_ids[self.new_sessions], new_request_id(), source, hint, key, scalars["team"], mark,
                       scalars["ts"], scalars["ts"], scrub(first_words(msgs)) if store_text else None)  # fmt: skip
            claimed = self.sql.claim(session) if hint is not None else None
            # another instance's, threaded into as any other
            found = self._thread(claimed) if claimed is not None and claimed != session[0] else None
            thread = found or Thread(claimed or session[0], source, fingerprint=mark, last_ts=ts)
            if claimed is not None:  # stored already: by this row (its id is taken) or by another instance
                self.new_sessions += claimed == session[0]
                self.hints[(hint, key)] = claimed
                session = None
        old = thread.messages
        exact, loose = shared or prefixes(old, msgs)
        reuse = min(exact, len(thread.content_ids))  # the stored prefix this request shares
        turn = thread.turns + 1
        rid = self.request_ids[self.new_requests]
        images = bool(row.get("images", True))
        attempts = row.get("attempts") or []
        if not strict:
            attempts = [*attempts, {"note": "log: conversation or unstorable values dropped"}]
        response_id = _scalar("response_id", row.get("response_id"), strict)
        request_row = (
            rid, str(row["id"]), *values, _dumps(attempts), thread.rowid, turn,
            thread.last_request if reuse else None, reuse, new_from(old, msgs, loose) if old else 0,
            len(messages) if store_text and messages is not None else None, response_id,
            *(_scalar(c, row.get(c), strict) for c in self.writer.late),
        )  # fmt: skip
        new: dict[bytes, Piece] = {}
        ids: list[int] = []
        parts: list[tuple[int, int, int]] = []
        tools_id: int | None = None
        preview = None
        if store_text and request is not None:
            ids = thread.content_ids[:reuse] + [
                self._piece(new, MESSAGE, without_images(m) if images else m) for m in msgs[reuse:]]
            parts = [(rid, pos, ids[pos]) for pos in range(reuse, len(msgs))]
            body = without_images(skeleton) if images else skeleton
            parts.append((rid, POS[SKELETON], self._piece(new, SKELETON, body)))
            if tools is not None:
                tools_id = thread.tools_id if thread.tools_id is not None and tools == thread.tools else (
                    self._piece(new, TOOLS, tools))
                parts.append((rid, POS[TOOLS], tools_id))
            if isinstance(row.get("response"), dict):
                parts.append((rid, POS[ANSWER], self._piece(new, ANSWER, row["response"])))
            preview = scrub(preview_of(request))
        models = thread.models
        model = scalars["model"][:MODEL_CHARS] if isinstance(scalars["model"], str) else None
        if model is not None and model not in models and len(models) < MAX_MODELS:
            models = [*models, model]
        source = thread.source if thread.source != "new" else source
        # a session ends when its last request did; a duration past a day is an odd value, not a request
        end = ts + min(_count(scalars["duration_ms"]), MAX_DURATION_MS) / 1000
        cost = _count(scalars["cost_usd"])
        uncached = scalars["cost_without_cache_usd"]
        uncached = scalars["cost_usd"] if uncached is None else uncached
        delta = [ts, end, turn, int(scalars["status"] == "error"), _count(scalars["prompt_tokens"]),
                 _count(scalars["completion_tokens"]), _count(scalars["cached_tokens"]), cost, _count(uncached),
                 _dumps(models), source, rid]  # fmt: skip
        size = row.get("body_bytes")
        after = Thread(thread.rowid, source, turn, rid, msgs, ids, tools, tools_id, models,
                       size if isinstance(size, int) else 0, thread.fingerprint, max(thread.last_ts, end))  # fmt: skip

        # planned: nothing below can fail
        self.new_requests += 1
        if session is not None:
            self.new_sessions += 1
            self.sessions.append(session)
            if session[3] is not None:
                self.hints[(session[3], key)] = after.rowid
        for piece in new.values():
            self.pending[piece.digest] = piece.id
            self.pieces.append(piece)
        self.requests.append(request_row)
        self.parts.extend(parts)
        if preview is not None:
            self.previews.append((str(row["id"]), preview))
        if isinstance(response_id, str):
            self.responses.setdefault((response_id, key), after.rowid)
        old_delta = self.deltas.get(after.rowid)
        if old_delta is None:
            self.deltas[after.rowid] = delta
        else:
            old_delta[0], old_delta[1] = min(old_delta[0], ts), max(old_delta[1], end)
            for i in range(3, 9):
                old_delta[i] += delta[i]
            old_delta[2], old_delta[9:] = turn, delta[9:]
        self.threads.pop(after.rowid, None)
        self.threads[after.rowid] = after  # in order of last use, for the session cache
        if after.fingerprint is not None:
            self.marked.setdefault(after.fingerprint, set()).add(after.rowid)
        if not strict:
            self.degraded += 1

    def _piece(self, new: dict[bytes, Piece], kind: str, value: Any) -> int:
        digest, size, body, stored = pack(kind, value, self.writer.scrubber)
        known = self.pending.get(digest)
        if known is not None:
            return known
        piece = new.get(digest)
        if piece is None:
            piece = new[digest] = Piece(-(len(self.pieces) + len(new) + 1), digest, kind, size, body, stored)
        return piece.id

    # ------------------------------------------------------------------ the writes

    def flush(self) -> None:
        """Write every planned row: one statement per table (per 512 rows)."""
        stored = self.sql.stored_pieces([p.digest for p in self.pieces])
        missing = [p for p in self.pieces if p.digest not in stored]
        fresh = dict(zip((p.digest for p in missing), self.sql.reserve("content", len(missing)) if missing else ()))
        # a piece another instance stored since the lookup above keeps that instance's id
        fresh.update(self.sql.insert_content([(fresh[p.digest], p.digest, p.kind, p.size, p.body, p.stored)
                                              for p in missing]))  # fmt: skip
        stored.update(fresh)
        ids = [stored[p.digest] for p in self.pieces]  # placeholder -k is ids[k - 1]

        def real(cid: int) -> int:
            return ids[-cid - 1] if cid < 0 else cid

        self.sql.insert("sessions", (*SESSION_COLUMNS, *NEW_SESSION),
                        [(*s, *NEW_SESSION.values()) for s in self.sessions])
        self.sql.insert("requests", ("id", *REQUEST_COLUMNS, *self.writer.late), self.requests)
        self.sql.insert("request_content", ("request", "pos", "content"),
                        [(r, pos, real(c)) for r, pos, c in self.parts])  # fmt: skip
        self.sql.insert("request_previews", ("request_id", "preview"), self.previews, replace=True)
        self.sql.update_sessions([(sid, *d) for sid, d in self.deltas.items()])
        for thread in self.threads.values():
            thread.content_ids = [real(c) for c in thread.content_ids]
            thread.tools_id = None if thread.tools_id is None else real(thread.tools_id)


def load_thread(db: SQLite, sid: int) -> Thread:
    """A session's newest request, read back from the database (after a restart or an eviction)."""
    source, turns, last, models, mark, last_ts = db.execute(
        "select source, turns, last_request, models, fingerprint, last_ts from sessions where id = ?", (sid,)
    ).fetchone()
    thread = Thread(sid, source, turns, last, models=_json_list(models), fingerprint=mark, last_ts=last_ts)
    if last is None:
        return thread
    (count,) = db.execute("select n_messages from requests where id = ?", (last,)).fetchone()
    refs = db.execute(db.message_refs, (last,)).fetchall()
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


def content_values(db: SQLite, ids: set[int]) -> dict[int, Any]:
    return {cid: unpack(size, body)
            for cid, size, body in db.select_in("select id, size, body from content where id in ({})", list(ids))}


def _json_list(text: str | None) -> list[str]:
    value = json.loads(text) if text else []
    return value if isinstance(value, list) else []
