"""A batch written at once leaves the database a row at a time would: same ids, sessions, pieces, index."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from finopsd.log.store import LogStore
from tests.test_log_sessions import roo_turns
from tests.test_logstore import make_row

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


async def write(path: Path, rows: list[dict[str, Any]], one_by_one: bool) -> tuple[int, int]:
    store = await LogStore.open(str(path), flush_ms=10_000)  # a flush is the only thing that ends a batch
    for row in rows:
        store.submit(row)
        if one_by_one:
            await store.flush()
    await store.flush()
    counts = store.failed_rows, store.degraded_rows
    await store.close()
    return counts


def dump(path: Path) -> dict[str, Any]:
    with sqlite3.connect(path) as db:
        session_columns = [r[1] for r in db.execute("pragma table_info(sessions)") if r[1] != "session_id"]
        return {
            "requests": db.execute("select * from requests order by id").fetchall(),
            "sessions": db.execute(f"select {', '.join(session_columns)} from sessions order by id").fetchall(),
            "content": db.execute("select * from content order by id").fetchall(),
            "request_content": db.execute("select * from request_content order by request, pos").fetchall(),
            "previews": db.execute("select * from request_previews order by request_id").fetchall(),
            "spend": db.execute("select * from spend_by_day order by day, key_name, team").fetchall(),
            "index": {term: db.execute("select rowid from content_fts where content_fts match ? order by rowid",
                                       (term,)).fetchall() for term in ("okapi1", "task", "kilo", "read_file")},
        }  # fmt: skip


async def test_a_batch_writes_what_one_row_at_a_time_writes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = mixed_rows()
    assert await write(tmp_path / "batch.db", rows, one_by_one=False) == (0, 1)
    assert "row by row" not in caplog.text  # written as one batch (the huge row planned without its values)
    assert await write(tmp_path / "rows.db", rows, one_by_one=True) == (0, 1)
    batch, single = dump(tmp_path / "batch.db"), dump(tmp_path / "rows.db")
    assert batch == single
    # and the threading both share is the one the session rule describes
    with sqlite3.connect(tmp_path / "batch.db") as db:
        sessions = sorted(db.execute("select source, turns from sessions").fetchall())
    assert sessions == [("header", 3), ("new", 1), ("new", 1), ("prefix", 3), ("prefix", 4), ("response_chain", 2)]

async def test_a_batch_with_a_row_sqlite_refuses_falls_back_to_one_row_at_a_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = mixed_rows()
    rows.insert(6, dict(rows[2]))  # a duplicate id: the batch statement fails, then only that row
    assert await write(tmp_path / "batch.db", rows, one_by_one=False) == (1, 1)
    assert "log batch of 15 rows: SQLITE_CONSTRAINT_UNIQUE; writing it row by row" in caplog.text
    assert await write(tmp_path / "rows.db", rows, one_by_one=True) == (1, 1)
    assert dump(tmp_path / "batch.db") == dump(tmp_path / "rows.db")


async def test_a_time_sqlite_cannot_hold_costs_its_row_its_values_not_the_batch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = mixed_rows()[:3]
    rows.insert(1, make_row("far", ts=-(10**30), request=rows[0]["request"]))  # past 64 bits
    assert await write(tmp_path / "batch.db", rows, one_by_one=False) == (0, 1)
    assert "row by row" not in caplog.text
    with sqlite3.connect(tmp_path / "batch.db") as db:
        got = db.execute("select request_id, ts > 0, n_messages from requests order by id").fetchall()
    assert got == [("r00-a", 1, 2), ("far", 1, None), ("r01-b", 1, 2), ("r02-kilo", 1, 1)]
