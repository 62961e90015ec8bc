"""A batch written at once leaves the database a row at a time would: same ids, sessions, pieces, index."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from finopsd.log.schema import REQUEST_COLUMNS
from finopsd.log.pg.query import tsquery
from tests.logdb import open_store, query
from tests.test_log_sessions import roo_turns
from tests.test_logstore import make_row

TABLES = ("content", "sessions", "requests", "request_content", "request_previews", "spend_by_day", "usage_dims",
          "usage_rollup", "usage_errors", "usage_latency")  # fmt: skip
TERMS = ("okapi1", "task", "kilo", "read_file")
REQUESTS = ("id", *REQUEST_COLUMNS, '"user"', "project", "tags")
SESSIONS = ("id", "source", "client_session_id", "key_name", "team", "fingerprint", "ts", "last_ts", "turns", "errors",
            "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd", "models", "first_words",
            "cost_without_cache_usd", "last_request")  # fmt: skip

ANSWER = {"content": "", "reasoning": "", "tool_calls": [
    {"id": "call_read_1", "type": "function", "function": {"name": "read_file", "arguments": "{}"}}]}  # fmt: skip


def mixed_rows() -> list[dict[str, Any]]:
    """Two tasks threaded by prefix, one by header, a Responses chain, a row without content,
    one with values SQLite cannot hold; interleaved as concurrent clients send them."""
    now = time.time() - 100
    a, b = roo_turns("task a", 4), roo_turns("task b", 3)
    kilo = [{"model": "m", "messages": [{"role": "user", "content": f"kilo step {i}"}]} for i in range(3)]
    order: list[tuple[str, dict[str, Any]]] = [
        ("a", a[0]), ("b", b[0]), ("kilo", kilo[0]), ("a", a[1]), ("chain", {}), ("b", b[1]), ("kilo", kilo[1]),
        ("a", a[2]), ("chained", {}), ("b", b[2]), ("a", a[3]), ("kilo", kilo[2]), ("bare", {}), ("huge", {}),
    ]  # fmt: skip
    rows = []
    for i, (kind, body) in enumerate(order):
        row = make_row(f"r{i:02d}-{kind}", ts=now + i, request=body, response=ANSWER, cost_usd=0.001 * (i + 1))
        if kind == "kilo":
            row["session_hint"] = "kilo-task-1"
        elif kind == "chain":
            row.update(route="responses", response_id="resp_1", request={"input": "first", "model": "m"})
        elif kind == "chained":
            row.update(route="responses", previous_response_id="resp_1", request={"input": "then", "model": "m"})
        elif kind == "bare":
            row.update(content=False, request={"messages": [{"role": "user", "content": "not kept"}]})
        elif kind == "huge":
            row.update(prompt_tokens=10**23, cost_usd=float("inf"), request=a[1])
        rows.append(row)
    return rows


async def write(backend: dict[str, Any], rows: list[dict[str, Any]], one_by_one: bool) -> tuple[int, int]:
    """Write ``rows`` into an empty log (what an earlier call wrote is wiped first)."""
    if backend.get("url"):
        if query(backend, "select to_regclass('content')") != [(None,)]:
            query(backend, f"truncate {', '.join(TABLES)} restart identity")
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(backend["path"] + suffix).unlink(missing_ok=True)
    store = await open_store(backend, flush_ms=10_000)  # a flush is the only thing that ends a batch
    for row in rows:
        store.submit(row)
        if one_by_one:
            await store.flush()
    await store.flush()
    counts = store.failed_rows, store.degraded_rows
    await store.close()
    return counts


def dump(backend: dict[str, Any]) -> dict[str, Any]:
    """Every table the writer fills, with ids renumbered densely (PostgreSQL's sequences skip
    the ids a failed attempt took)."""
    if backend.get("url"):  # the same terms, through the tsquery a search makes of them
        index = "select id from content where tsv @@ to_tsquery('simple', ?) order by id"
        terms = {t: tsquery(t) for t in TERMS}
    else:
        index, terms = "select rowid from content_fts where content_fts match ? order by rowid", {t: t for t in TERMS}
    requests = query(backend, f"select {', '.join(REQUESTS)} from requests order by id")
    # by start: on PostgreSQL a session claimed by its client's id in a batch that then failed keeps that id
    sessions = query(backend, f"select {', '.join(SESSIONS)} from sessions order by ts, id")
    content = query(backend, "select id, hash, kind, size, body from content order by id")
    rid, sid, cid = ({old[0]: new for new, old in enumerate(rows, 1)} for rows in (requests, sessions, content))

    def renumber(row: tuple[Any, ...], columns: tuple[str, ...], ids: dict[str, dict[Any, int]]) -> tuple[Any, ...]:
        return tuple(ids[c].get(v, v) if c in ids else v for c, v in zip(columns, row))

    return {
        "requests": [renumber(r, REQUESTS, {"id": rid, "session": sid, "parent": rid}) for r in requests],
        "sessions": [renumber(r, SESSIONS, {"id": sid, "last_request": rid}) for r in sessions],
        "content": [(cid[r[0]], *r[1:]) for r in content],
        "request_content": [(rid[r], pos, cid[c]) for r, pos, c in query(
            backend, "select request, pos, content from request_content order by request, pos")],
        "previews": query(backend, "select * from request_previews order by request_id"),
        "spend": query(backend, "select * from spend_by_day order by day, key_name, team"),
        "index": {term: [cid[r[0]] for r in query(backend, index, (terms[term],))] for term in TERMS},
    }


async def test_a_batch_writes_what_one_row_at_a_time_writes(
    log_backend: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    rows = mixed_rows()
    assert await write(log_backend, rows, one_by_one=False) == (0, 1)
    assert "row by row" not in caplog.text  # written as one batch (the huge row planned without its values)
    batch = dump(log_backend)
    assert await write(log_backend, rows, one_by_one=True) == (0, 1)
    assert batch == dump(log_backend)
    # and the threading both share is the one the session rule describes
    sessions = sorted(query(log_backend, "select source, turns from sessions"))
    assert sessions == [("header", 3), ("new", 1), ("new", 1), ("prefix", 3), ("prefix", 4), ("response_chain", 2)]
    assert all(batch["index"].values())  # each term found somewhere


async def test_a_batch_with_a_row_the_database_refuses_falls_back_to_one_row_at_a_time(
    log_backend: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    rows = mixed_rows()
    rows.insert(6, dict(rows[2]))  # a duplicate id: the batch statement fails, then only that row
    assert await write(log_backend, rows, one_by_one=False) == (1, 1)
    refused = "UniqueViolation (23505)" if log_backend.get("url") else "SQLITE_CONSTRAINT_UNIQUE"
    assert f"log batch of 15 rows: {refused}; writing it row by row" in caplog.text
    batch = dump(log_backend)
    assert await write(log_backend, rows, one_by_one=True) == (1, 1)
    assert batch == dump(log_backend)


async def test_a_time_the_database_cannot_hold_costs_its_row_its_values_not_the_batch(
    log_backend: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    rows = mixed_rows()[:3]
    rows.insert(1, make_row("far", ts=-(10**30), request=rows[0]["request"]))  # past 64 bits
    assert await write(log_backend, rows, one_by_one=False) == (0, 1)
    assert "row by row" not in caplog.text
    got = query(log_backend, "select request_id, ts > 0, n_messages from requests order by id")
    assert [(r, bool(positive), n) for r, positive, n in got] == [
        ("r00-a", True, 2), ("far", True, None), ("r01-b", True, 2), ("r02-kilo", True, 1)]
