"""The request log: migrations, the writer, search, pagination, totals, retention."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest

from finopsd.log import search as logsearch
from finopsd.errors import BadRequest
from finopsd.log.schema import SCALARS
from finopsd.log.store import MIGRATIONS, LogStore, migrate, new_request_id, prompt_text, response_text
from finopsd.scrub import Scrubber
from tests.logdb import open_store, query

NOW = time.time()


def make_row(request_id: str, **fields: Any) -> dict[str, Any]:
    """A row as the relay submits it: every key present."""
    row: dict[str, Any] = {
        "id": request_id, "ts": NOW - 60, "duration_ms": 1200.0, "ttft_ms": 300.0, "route": "chat",
        "provider": "anthropic", "model": "anthropic/claude-sonnet-4-5", "upstream_model": "claude-sonnet-4-5",
        "key_name": "ci-bot", "team": "platform", "client_ip": "127.0.0.1", "user_agent": "roo-code/3.2",
        "status_code": 200, "status": "ok", "error_type": None, "error_message": None, "stream": True,
        "finish_reason": "stop", "prompt_tokens": 100, "completion_tokens": 20, "cached_tokens": 0,
        "reasoning_tokens": 0, "cost_usd": 0.001, "cost_without_cache_usd": 0.001, "cost_flags": None,
        "upstream_key_name": "primary", "attempts": [{"provider": "anthropic", "status": 200, "ms": 1190.0}],
        "request": {"messages": [{"role": "user", "content": "hello"}], "temperature": 0},
        "response": {"content": "hi", "reasoning": "", "tool_calls": []},
    }  # fmt: skip
    row.update(fields)
    return row


def chat(prompt: str, answer: str = "ok", **fields: Any) -> dict[str, Any]:
    return {
        "request": {"messages": [{"role": "user", "content": prompt}]},
        "response": {"content": answer, "reasoning": "", "tool_calls": []},
        **fields,
    }


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "data" / "logs.db")  # parent does not exist yet: open() creates it


@pytest.fixture
async def store(log_backend: dict[str, Any]) -> Any:
    s = await open_store(log_backend, flush_ms=5)
    yield s
    await s.close()


@pytest.fixture(params=["by-id", "index-walk"])
def match_strategy(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a text search both ways: few matches (looked up by id) and many (index walk)."""
    if request.param == "index-walk":
        monkeypatch.setattr(logsearch, "SELECTIVE", 1)
    return str(request.param)


async def fill(store: LogStore, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        store.submit(row)
    await store.flush()


async def ids_for(store: LogStore, **kwargs: Any) -> set[str]:
    page = await store.search(limit=500, **kwargs)
    return {item["id"] for item in page["items"]}


# ---------------------------------------------------------------- migrations


async def test_blank_database_gets_tables_columns_and_fts_index(db_path: str) -> None:
    await (await LogStore.open(db_path)).close()
    with sqlite3.connect(db_path) as db:
        names = {r[0] for r in db.execute("select name from sqlite_master where type in ('table', 'trigger')")}
        columns = {r[1] for r in db.execute("pragma table_info(requests)")}
        pk = [r[1] for r in db.execute("pragma table_info(requests)") if r[5]]
        fts_sql = db.execute("select sql from sqlite_master where name = 'content_fts'").fetchone()[0]
        applied = [r[0] for r in db.execute("select name from _migrations order by rowid")]
        team_index = {r[2] for r in db.execute("pragma index_info(requests_team)")}
        pragmas = [db.execute(f"pragma {p}").fetchone()[0] for p in ("journal_mode", "auto_vacuum")]
    assert {"requests", "content", "content_fts", "request_content", "sessions", "_migrations",
            "requests_spend", "requests_preview_ad", "requests_usage", "usage_rollup", "usage_latency"} <= names
    assert not {"requests_fts", "requests_m001", "requests_ai"} & names  # the whole-text index is gone
    assert pk == ["id"]  # explicit integer key: the references must survive VACUUM
    assert {"request_id", "attempts", "session", "turn", "parent", "prefix_len", "new_from"} <= columns
    assert not {"prompt_text", "request_json", "response_json"} & columns
    assert {f for f in make_row("x") if f not in ("id", "request", "response", "attempts")} <= columns
    assert "content=''" in fts_sql
    assert applied == [fn.__name__ for fn in MIGRATIONS] == [
        "m001_requests", "m002_requests_fts", "m003_covering_indexes", "m004_stored_responses",
        "m005_spend_by_day", "m006_request_previews", "m007_content_and_sessions",
        "m008_stored_response_owner", "m009_attribution", "m010_dashboard_keys", "m011_usage_rollups",
        "m012_alerts"]
    assert {"stored_responses", "dashboard_keys", "dashboard_teams", "audit"} <= names
    assert {"key_name", "ts", "id", "cost_usd", "session", "cost_without_cache_usd"} <= team_index  # a second filter and the totals stay in it
    assert pragmas == ["wal", 2]  # 2 = incremental


async def test_reopen_does_not_rerun_migrations(db_path: str) -> None:
    first = await LogStore.open(db_path)
    await first.close()
    with sqlite3.connect(db_path) as db:
        before = db.execute("select name, applied_at from _migrations").fetchall()
    second = await LogStore.open(db_path)
    await second.close()
    with sqlite3.connect(db_path, isolation_level=None) as db:
        assert migrate(db) == []
        after = db.execute("select name, applied_at from _migrations").fetchall()
    assert after == before


def m006_database(path: str, rows: list[dict[str, Any]]) -> None:
    """A log as m001-m006 wrote it: each request whole, in request_json and again as prompt_text."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path, isolation_level=None) as db:
        db.execute("pragma auto_vacuum = incremental")
        db.execute("create table _migrations (name text primary key, applied_at real not null)")
        for fn in MIGRATIONS[:6]:
            fn(db)
            db.execute("insert into _migrations values (?, 0)", (fn.__name__,))
        for row in rows:
            scalars = [c for c in SCALARS if c != "cost_without_cache_usd"]  # added with m007
            db.execute(
                f"insert into requests (request_id, {', '.join(scalars)}, attempts, prompt_text, response_text,"
                f" request_json, response_json) values ({', '.join('?' * (len(scalars) + 6))})",
                (row["id"], *[int(v) if isinstance(v, bool) else v for v in (row[c] for c in scalars)],
                 json.dumps(row["attempts"]), prompt_text(row["request"]), response_text(row["response"]),
                 json.dumps(row["request"]), json.dumps(row["response"])),
            )  # fmt: skip
    with sqlite3.connect(path) as db:
        db.execute("pragma wal_checkpoint")


async def test_upgrade_from_m006_keeps_every_row_searchable_and_threaded(
    db_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    history: list[Any] = [{"role": "system", "content": "You are Roo. " * 300}]
    rows = []
    for turn in range(8):  # one agent task, its history resent each turn
        history = [*history, {"role": "user", "content": f"step {turn} walrus{turn}"}]
        request = {"model": "gpt-5", "messages": list(history), "stream": True}
        rows.append(make_row(f"t{turn}", ts=NOW - 100 + turn, request=request, cost_without_cache_usd=None,
                             response={"content": f"done {turn}", "reasoning": "", "tool_calls": []}))
        history.append({"role": "assistant", "content": f"done {turn}"})
    rows.append(make_row("other", key_name="someone-else", ts=NOW, cost_without_cache_usd=None,
                         **chat("unrelated narwhal")))
    rows.append(make_row("quiet", ts=NOW, request=None, response=None, cost_without_cache_usd=None))
    m006_database(db_path, rows)  # m006 had no cost_without_cache_usd: it comes back unknown
    with sqlite3.connect(db_path) as db:
        spend_before = db.execute("select * from spend_by_day order by 1, 2, 3").fetchall()
    store = await LogStore.open(db_path)
    try:
        assert "m007_content_and_sessions" in caplog.text and "requests rewritten" in caplog.text
        for row in rows:
            got = await store.get(row["id"])
            assert got is not None
            assert {k: got[k] for k in row} == row  # every field back, the conversation exactly
        assert await ids_for(store, q="walrus5") == {"t5"}
        assert (await store.get("t5"))["preview"] == "step 5 walrus5"  # type: ignore[index]
        assert await ids_for(store, q="narwhal") == {"other"}
        page = await store.sessions(with_totals=True)
        assert sorted(i["turns"] for i in page["items"]) == [1, 1, 8]  # "quiet" has no text: its own session
        assert page["totals"]["requests"] == len(rows)
    finally:
        await store.close()
    with sqlite3.connect(db_path) as db:
        assert db.execute("select * from spend_by_day order by 1, 2, 3").fetchall() == spend_before
        assert db.execute("select count(*) from content where kind = 'message' and size > 3000").fetchone()[0] == 1


async def test_upgrade_from_m006_adds_cost_without_cache_and_old_rows_count_at_their_cost(db_path: str) -> None:
    m006_database(db_path, [make_row("old", ts=NOW, cost_usd=0.5)])
    store = await LogStore.open(db_path)
    try:
        store.submit(make_row("new", ts=NOW, cost_usd=0.1, cost_without_cache_usd=0.4))
        await store.flush()
        assert (await store.get("old"))["cost_without_cache_usd"] is None  # unknown, not "no savings"
        totals = (await store.search())["totals"]
        assert totals["cost_without_cache_usd"] == pytest.approx(0.9)
        assert totals["cache_savings_usd"] == pytest.approx(0.3)
    finally:
        await store.close()


# ---------------------------------------------------------------- writing


UNATTRIBUTED = {"user": None, "project": None, "tags": []}  # no x-finops-* headers (finopsd.attribution)


async def test_submit_flush_get_roundtrip(store: LogStore) -> None:
    request = {
        "messages": [
            {"role": "system", "content": "You are Roo."},
            {"role": "user", "content": [{"type": "text", "text": "read main.py"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": '{"path":"main.py"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "print('hi')"},
        ],
        "tools": [{"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}],
        "max_tokens": 512,
    }  # fmt: skip
    response = {"content": "It prints hi.", "reasoning": "look at the file",
                "tool_calls": [{"id": "call_2", "name": "write_file", "arguments": '{"path":"out.txt"}'}]}  # fmt: skip
    row = make_row(new_request_id(), request=request, response=response, stream=False, cost_usd=None)
    store.submit(row)
    await store.flush()
    got = await store.get(row["id"])
    # every field back, JSON columns decoded, stream a bool again, plus the newest user turn's first words
    assert got == {**row, "preview": "read main.py", "session_id": got["session_id"], "turn": 1, **UNATTRIBUTED}
    assert await store.get("no-such-id") is None
    quiet = make_row("no-content", request=None, response=None)  # content logging off
    await fill(store, [quiet])
    assert await store.get("no-content") == {**quiet, "preview": None, "session_id": ANY, "turn": 1, **UNATTRIBUTED}
    assert (await store.search(q="hello"))["totals"]["requests"] == 0


async def test_pieces_orjson_would_write_otherwise_are_stored_as_the_stdlib_writes_them(store: LogStore) -> None:
    """Pieces go through orjson (the fast extra) except where it would change what is stored:
    an integer past 64 bits, a key that is not a string, a datetime keep the stdlib's form."""
    odd = {"role": "user", "content": "count the stars", "n": 2**70, 7: "seven"}
    request = {"messages": [odd, {"role": "user", "content": "plain turn"}], "sent": datetime(2026, 1, 1, tzinfo=UTC)}
    row = make_row(new_request_id(), request=request)
    await fill(store, [row])
    got = await store.get(row["id"])
    assert got is not None
    assert got["request"] == {
        "messages": [{"role": "user", "content": "count the stars", "n": 2**70, "7": "seven"},
                     {"role": "user", "content": "plain turn"}],
        "sent": "2026-01-01 00:00:00+00:00",
    }  # fmt: skip
    assert (await store.search(q="stars"))["totals"]["requests"] == 1
    assert (await store.search(q="plain"))["totals"]["requests"] == 1


async def test_new_request_ids_sort_by_time() -> None:
    first = new_request_id()
    await asyncio.sleep(0.002)
    second = new_request_id()
    assert len(first) == 36 and first[14] == "7"  # UUIDv7
    assert first < second


def test_prompt_text_holds_messages_tool_calls_and_tool_names_only() -> None:
    request = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "alpha"}]},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "grep_search", "arguments": '{"q":"beta"}'}}]},
            {"role": "tool", "tool_call_id": "c", "content": "gamma\x02"},
        ],
        "tools": [{"type": "function", "function": {"name": "list_dir", "description": "boilerplate"}}],
    }  # fmt: skip
    text = prompt_text(request)
    assert text is not None
    assert all(word in text for word in ("alpha", "grep_search", '{"q":"beta"}', "gamma", "list_dir"))
    assert "boilerplate" not in text and "\x02" not in text  # marks are reserved for snippets
    assert response_text({"content": "", "reasoning": "", "tool_calls": [{"name": "a", "arguments": "{}"}]}) == "a\n{}"
    assert prompt_text(None) is None and response_text(None) is None


async def test_close_drains_the_queue(log_backend: dict[str, Any]) -> None:
    store = await open_store(log_backend, batch_rows=50, flush_ms=10_000)
    for i in range(500):
        store.submit(make_row(f"r{i}"))
    await store.close()
    with pytest.raises(RuntimeError):
        store.submit(make_row("late"))
    reopened = await open_store(log_backend)
    try:
        assert (await reopened.search())["totals"]["requests"] == 500
    finally:
        await reopened.close()


async def test_wait_for_room_blocks_when_full_and_releases_after_writer_catches_up(db_path: str) -> None:
    store = await LogStore.open(db_path, batch_rows=2, flush_ms=1, max_queue=5)
    try:
        await asyncio.wait_for(store.wait_for_room(), 5)  # empty queue: at once
        async with store._write_lock:  # stall the writer, as a slow disk would
            for i in range(20):
                store.submit(make_row(f"r{i}"))
            waiter = asyncio.create_task(store.wait_for_room())
            await asyncio.sleep(0.05)
            assert not waiter.done()
        await asyncio.wait_for(waiter, 10)
        await store.flush()
        assert (await store.search())["totals"]["requests"] == 20  # slowed, nothing dropped
    finally:
        await store.close()


async def test_the_queue_is_bounded_in_bytes_of_request_body(db_path: str) -> None:
    store = await LogStore.open(db_path, flush_ms=1, max_queue=10_000, max_queue_bytes=1_000_000)
    try:
        async with store._write_lock:  # stall the writer
            for i in range(3):
                store.submit(make_row(f"big{i}", body_bytes=400_000))
            waiter = asyncio.create_task(store.wait_for_room())
            await asyncio.sleep(0.05)
            assert not waiter.done()  # 1.2 MB of bodies queued: intake waits, with only 3 rows
        await asyncio.wait_for(waiter, 10)
        await store.flush()
        assert (await store.search())["totals"]["requests"] == 3
    finally:
        await store.close()


async def test_a_batch_takes_at_most_a_quarter_of_the_queue_bytes_so_intake_flows_while_it_is_written(
    db_path: str,
) -> None:
    """The queue counts a batch's bodies until it commits: a batch as big as the bound would hold
    every new request back for as long as it takes to write."""
    store = await LogStore.open(db_path, flush_ms=50, max_queue_bytes=1_000_000)
    batches: list[int] = []
    store.on_batch = lambda rows, _seconds: batches.append(rows)
    try:
        async with store._write_lock:  # the rows all wait, then go as the writer takes them
            for i in range(10):
                store.submit(make_row(f"r{i}", body_bytes=100_000))
        await store.flush()
        await asyncio.wait_for(store.wait_for_room(), 1)
    finally:
        await store.close()
    assert sum(batches) == 10
    assert max(batches) == 3  # 250 KB: the third 100 KB row reaches it


@pytest.mark.parametrize("odd", [None, 'pa"ss\\word-0002', "tab\tkey-0003"])
async def test_secrets_leave_no_form_in_any_piece_even_json_inside_json(db_path: str, odd: str | None) -> None:
    """Plain secrets (as API keys are) are looked for in each piece's JSON text, the others in its
    strings: either way none is stored, also inside a tool call's arguments (JSON in JSON)."""
    plain = "sk-plain-secret-0001"
    scrubber = Scrubber([plain, odd])
    secrets = [plain, *([odd] if odd else [])]
    args = json.dumps({"token": secrets[-1]})
    request = {"model": plain, "messages": [
        {"role": "user", "content": " and ".join(secrets)},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "login", "arguments": args}}]}],
        "tools": [{"type": "function", "function": {"name": "login", "description": secrets[-1]}}]}
    store = await LogStore.open(db_path, scrubber=lambda: scrubber)
    try:
        store.submit(make_row("r", request=request, error_message=f"upstream said {secrets[-1]}",
                              response={"content": secrets[-1], "reasoning": "", "tool_calls": [
                                  {"id": "c2", "name": "login", "arguments": args}]}))
        await store.flush()
        back = await store.get("r")
    finally:
        await store.close()
    assert json.dumps(back).count("[secret]") >= 8
    assert scrubber.value(back) is back  # no string holds any form of any secret
    assert "[secret]" in back["request"]["messages"][1]["tool_calls"][0]["function"]["arguments"]


async def test_bad_row_is_logged_by_id_and_the_writer_goes_on(
    store: LogStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="finopsd.log.store")
    await fill(store, [make_row("dup", **chat("secret-one"))])
    await fill(store, [make_row("a", **chat("fine")), make_row("dup", **chat("secret-two")), make_row("b")])
    await fill(store, [make_row("c", request={"messages": [], "odd": {1, 2}})])  # not JSON: stored as text
    assert await ids_for(store) == {"dup", "a", "b", "c"}
    assert "dup" in caplog.text
    assert "secret" not in caplog.text


# ---------------------------------------------------------------- search

CORPUS = [
    make_row("k8s", ts=NOW - 50, **chat("deploy the kubernetes cluster", "Deployment finished")),
    make_row("tests", ts=NOW - 40, request={"messages": [{"role": "user", "content": "fix the failing unit test"}]},
             response={"content": "it passes now", "reasoning": "",
                       "tool_calls": [{"id": "t1", "name": "run_tests", "arguments": '{"path": "tests/test_x.py"}'}]}),
    make_row("haiku", ts=NOW - 30, **chat("write a haiku about autumn leaves", "crimson leaves falling")),
    make_row("pods", ts=NOW - 20, **chat("kubernetes pods crash on gpt-4 calls", "check the logs")),
    make_row("cafe", ts=NOW - 10, **chat("a <b>café</b> & \"bar\" with unbalanced quotes", "sure")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("kubernetes", {"k8s", "pods"}),
        ("KUBERNETES", {"k8s", "pods"}),
        ('"autumn leaves"', {"haiku"}),
        ('"leaves autumn"', set()),
        ("deploy*", {"k8s"}),
        ("kube*", {"k8s", "pods"}),
        ("kubernetes AND crash", {"pods"}),
        ("haiku OR pods", {"haiku", "pods"}),
        ("kubernetes NOT crash", {"k8s"}),
        ("run_tests", {"tests"}),  # a tool name in the response
        ("test_x", {"tests"}),  # tool arguments
        ("cafe", {"cafe"}),  # diacritics folded
        ("gpt-4", {"pods"}),  # not FTS5 syntax: found as a literal phrase
        ('"unbalanced', {"cafe"}),
        ("   ", {"k8s", "tests", "haiku", "pods", "cafe"}),  # blank: no text filter
    ],
)
async def test_search_syntax(store: LogStore, match_strategy: str, q: str, expected: set[str]) -> None:
    await fill(store, CORPUS)
    assert await ids_for(store, q=q) == expected
    assert await ids_for(store, q=q, order="relevance") == expected


HOSTILE = [
    '"unbalanced', "((x", "x)", "NEAR(", "NEAR(a b, -5)", "*", "-", ":", "a:b", "prompt_text:", "AND", "NOT",
    "OR x", "x AND", "^", "+", "{", "\\", "'; drop table requests; --", "日本語のテキスト", "🔥 émoji", "\x00",
    "x" * 10_000, "(" * 5_000, '"' * 999, " OR ".join(["w"] * 2_000), "requests_fts", "rank",
]  # fmt: skip


@pytest.mark.parametrize("q", HOSTILE, ids=range(len(HOSTILE)))
async def test_hostile_input_never_raises(store: LogStore, q: str) -> None:
    await fill(store, CORPUS)
    for order in ("newest", "relevance"):
        page = await store.search(q=q, order=order)
        assert page["totals"]["requests"] == len(page["items"]) <= len(CORPUS)
    assert (await store.search())["totals"]["requests"] == len(CORPUS)  # the table survived


async def test_snippet_marks_hits_and_escapes_the_text(store: LogStore) -> None:
    await fill(store, CORPUS)
    (item,) = (await store.search(q="bar"))["items"]
    assert "<mark>bar</mark>" in item["snippet"]
    assert "&lt;b&gt;" in item["snippet"] and "&amp;" in item["snippet"] and "<b>" not in item["snippet"]
    assert all(i["snippet"] is None for i in (await store.search())["items"])


async def test_relevance_weights_the_response_over_the_prompt(store: LogStore) -> None:
    await fill(store, [
        # Mirror images: only the column weights can tell them apart.
        make_row("in-prompt", ts=NOW - 1, **chat("otters swim fast", "yes indeed friend")),
        make_row("in-response", ts=NOW - 2, **chat("yes indeed friend", "otters swim fast")),
    ])  # fmt: skip
    page = await store.search(q="otters", order="relevance")
    assert [i["id"] for i in page["items"]] == ["in-response", "in-prompt"]
    newest = await store.search(q="otters")
    assert [i["id"] for i in newest["items"]] == ["in-prompt", "in-response"]


# ---------------------------------------------------------------- filters, paging, totals

FILTERED = [
    make_row("a", provider="openai", model="openai/gpt-5", key_name="k1", team="red", status="ok",
             stream=True, ts=NOW - 500, cost_usd=0.50, duration_ms=9000.0),
    make_row("b", provider="anthropic", model="anthropic/claude", key_name="k2", team="blue", status="error",
             status_code=529, stream=False, ts=NOW - 50, cost_usd=None, duration_ms=100.0),
    make_row("c", provider="anthropic", model="anthropic/claude", key_name="k1", team="blue",
             status="client_closed", stream=True, ts=NOW - 5, cost_usd=0.01, duration_ms=2000.0),
]  # fmt: skip


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"provider": "anthropic"}, {"b", "c"}),
        ({"model": "openai/gpt-5"}, {"a"}),
        ({"key": "k1"}, {"a", "c"}),
        ({"team": "blue"}, {"b", "c"}),
        ({"status": "error"}, {"b"}),
        ({"status": "ok"}, {"a"}),
        ({"stream": False}, {"b"}),
        ({"stream": True}, {"a", "c"}),
        ({"since": NOW - 100}, {"b", "c"}),
        ({"until": NOW - 100}, {"a"}),
        ({"min_cost": 0.05}, {"a"}),
        ({"min_latency_ms": 1000}, {"a", "c"}),
        ({"provider": "anthropic", "key": "k1", "stream": True}, {"c"}),
        ({"provider": ""}, {"a", "b", "c"}),  # an empty form field is no filter
    ],
)
async def test_each_filter(store: LogStore, match_strategy: str, filters: dict[str, Any], expected: set[str]) -> None:
    await fill(store, FILTERED)
    assert await ids_for(store, **filters) == expected
    # the answer: every row said it (the prompt is resent unchanged, so only the first row added it)
    assert await ids_for(store, q="hi", **filters) == expected


@pytest.mark.parametrize(("order", "q"), [("newest", None), ("newest", "needle"), ("relevance", "needle")])
async def test_keyset_pages_cover_every_row_once(store: LogStore, match_strategy: str, order: str, q: str | None) -> None:
    # 130 rows, ten to a timestamp: ties must be broken by id, not skipped or repeated.
    await fill(store, [make_row(f"r{i:03}", ts=NOW - i // 10, **chat(f"needle {i} {'x ' * (i % 7)}")) for i in range(130)])
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await store.search(q=q, order=order, limit=25, cursor=cursor, with_totals=cursor is None)
        seen += [item["id"] for item in page["items"]]
        pages += 1
        if cursor is None:
            assert page["totals"]["requests"] == 130
        else:
            assert page["totals"] is None  # later pages skip them
        if (cursor := page["next_cursor"]) is None:
            break
    assert pages == 6 and len(seen) == 130 and set(seen) == {f"r{i:03}" for i in range(130)}
    if order == "newest":  # ts descending, then the later insert first
        assert seen == [f"r{i:03}" for block in range(13) for i in reversed(range(block * 10, block * 10 + 10))]


async def test_bad_cursor_or_order_is_a_bad_request(store: LogStore) -> None:
    for kwargs in ({"cursor": "garbage"}, {"cursor": "tnan~1"}, {"cursor": "r1.0~1"}, {"order": "random"}):
        with pytest.raises(BadRequest):
            await store.search(**kwargs)


async def test_totals_follow_the_filter(store: LogStore, match_strategy: str) -> None:
    await fill(store, [
        make_row("a", prompt_tokens=100, completion_tokens=10, cost_usd=0.25, cost_without_cache_usd=1.0,
                 status="ok", **chat("apple pie")),
        make_row("b", prompt_tokens=200, completion_tokens=20, cost_usd=None, cost_without_cache_usd=None,
                 status="error", **chat("apple tart")),
        make_row("c", prompt_tokens=400, completion_tokens=40, cost_usd=0.5, cost_without_cache_usd=None,
                 status="ok", provider="openai"),  # logged before m007: counted at its cost
        make_row("d", prompt_tokens=None, completion_tokens=None, cost_usd=None, cost_without_cache_usd=None,
                 status="client_closed"),
    ])  # fmt: skip
    assert (await store.search())["totals"] == {
        "requests": 4, "prompt_tokens": 700, "completion_tokens": 70, "cost_usd": 0.75, "error_rate": 0.25,
        "cost_without_cache_usd": 1.5, "cache_savings_usd": 0.75,
    }  # fmt: skip
    assert (await store.search(q="apple"))["totals"] == {
        "requests": 2, "prompt_tokens": 300, "completion_tokens": 30, "cost_usd": 0.25, "error_rate": 0.5,
        "cost_without_cache_usd": 1.0, "cache_savings_usd": 0.75,
    }  # fmt: skip
    assert (await store.search(provider="openai"))["totals"]["cost_usd"] == 0.5
    assert (await store.search(q="apple", cursor="t1e99~1"))["totals"]["requests"] == 2  # cursor-free
    assert (await store.search(q="zzz"))["totals"] == {
        "requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0, "error_rate": 0.0,
        "cost_without_cache_usd": 0.0, "cache_savings_usd": 0.0,
    }  # fmt: skip


# ---------------------------------------------------------------- retention

# content no request refers to, and references to content that is gone
ORPHANS = (
    "select (select count(*) from content c where not exists"
    " (select 1 from request_content rc where rc.content = c.id))"
    " + (select count(*) from request_content rc where not exists (select 1 from content c where c.id = rc.content))"
    " + (select count(*) from request_content rc where not exists (select 1 from requests r where r.id = rc.request))"
    " + (select count(*) from requests r where not exists (select 1 from sessions s where s.id = r.session))"
)


async def test_prune_deletes_old_rows_their_index_entries_and_frees_pages(
    store: LogStore, log_backend: dict[str, Any]
) -> None:
    bulky = "fjord " * 20_000  # spills to overflow pages, so deleting frees some
    old = [make_row(f"old{i}", ts=NOW - 10 * 86_400, **chat(bulky)) for i in range(30)]
    await fill(store, old + [make_row(f"new{i}", **chat("fresh")) for i in range(3)])
    assert await store.prune(7) == 30
    assert await store.prune(7) == 0
    assert await ids_for(store) == {"new0", "new1", "new2"}
    assert await ids_for(store, q="fjord") == set()
    await store.close()
    assert query(log_backend, ORPHANS) == [(0,)]
    if not log_backend.get("url"):  # the file's own bookkeeping (PostgreSQL's index is a column of content)
        with sqlite3.connect(log_backend["path"]) as db:
            assert db.execute("pragma freelist_count").fetchone()[0] == 0  # incremental_vacuum gave them back
            db.execute("insert into content_fts(content_fts, rank) values ('integrity-check', 1)")  # raises if stale


async def test_spend_survives_pruning_through_the_daily_rollup(log_backend: dict[str, Any]) -> None:
    store = await open_store(log_backend)
    now = time.time()
    old = dict(make_row("old"), ts=now - 40 * 86400, key_name="k1", team="t1", cost_usd=2.5)
    new = dict(make_row("new"), ts=now, key_name="k1", team="t1", cost_usd=0.5)
    store.submit(old)
    store.submit(new)
    await store.flush()
    assert await store.prune(30) == 1
    spend = await store.spend_since(0)
    assert sum(r[3] for r in spend) == pytest.approx(3.0)
    assert {(r[0], r[1]) for r in spend} == {("k1", "t1")}
    by_key = await store.usage_by("key")
    assert by_key[0]["key"] == "k1" and by_key[0]["requests"] == 1  # the request rows themselves are pruned
    await store.close()


async def test_previews_are_written_with_rows_and_pruned_with_them(log_backend: dict[str, Any]) -> None:
    store = await open_store(log_backend)
    request = {"messages": [{"role": "system", "content": "long system prompt"},
                            {"role": "user", "content": "first   question"},
                            {"role": "assistant", "content": "answer"},
                            {"role": "user", "content": "x" * 500}]}
    store.submit(dict(make_row("p1"), ts=time.time() - 40 * 86400, request=request))
    store.submit(dict(make_row("p2"), request={"messages": [{"role": "user", "content": "first   question"}]}))
    await store.flush()
    previews = {i["id"]: i["preview"] for i in (await store.search())["items"]}
    assert previews["p2"] == "first question"
    assert len(previews["p1"]) == 140 and previews["p1"].endswith("…")
    await store.prune(30)
    assert query(log_backend, "select request_id from request_previews") == [("p2",)]
    await store.close()


async def test_retention_prunes_whole_sessions_and_only_content_nothing_else_uses(
    store: LogStore, log_backend: dict[str, Any]
) -> None:
    shared = {"role": "system", "content": "shared system prompt " * 100}
    old_day, recent = NOW - 40 * 86_400, NOW - 60

    def turn(rid: str, session: str, ts: float, *words: str) -> dict[str, Any]:
        messages = [shared, *({"role": "user", "content": w} for w in words)]
        return make_row(rid, ts=ts, session_hint=session, request={"messages": messages},
                        response={"content": f"answer {rid}", "reasoning": "", "tool_calls": []})

    await fill(store, [
        turn("gone1", "a", old_day, "ancient aardvark"), turn("gone2", "a", old_day + 5, "ancient aardvark", "more"),
        # began long ago, still going: kept whole
        turn("kept1", "b", old_day, "long badger"), turn("kept2", "b", recent, "long badger", "today"),
    ])  # fmt: skip
    assert await store.prune(30) == 2
    assert await ids_for(store) == {"kept1", "kept2"}
    assert await ids_for(store, q="aardvark") == set()
    assert await ids_for(store, q="shared") == {"kept1"}  # the shared prompt stays for the session that uses it
    kept = await store.get("kept2")
    assert kept is not None and kept["request"]["messages"][0] == shared
    await store.close()
    assert query(log_backend, ORPHANS) == [(0,)]
    assert query(log_backend, "select count(*) from sessions") == [(1,)]
    if not log_backend.get("url"):
        with sqlite3.connect(log_backend["path"]) as db:
            db.execute("insert into content_fts(content_fts, rank) values ('integrity-check', 1)")


async def test_a_conversation_too_deep_to_thread_is_logged_without_it(store: LogStore) -> None:
    deep: Any = "bottom"
    for _ in range(5_000):  # past Python's recursion limit, as a hostile body of nested lists can be
        deep = [deep]
    await fill(store, [make_row("deep", request={"messages": [{"role": "user", "content": deep}]}),
                       make_row("next", **chat("a normal request"))])
    got = await store.get("deep")
    assert got is not None and got["request"] is None and got["status"] == "ok"
    assert await ids_for(store) == {"deep", "next"}
    assert store.failed_rows == 0 and store.degraded_rows == 1
