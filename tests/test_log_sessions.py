"""Agent sessions through the real gateway: threading, content stored once, exact bodies, search by turn."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from aiohttp.test_utils import TestClient

from finopsd.appkeys import LOGSTORE, RUNTIME
from finopsd.log import search as log_search
from tests.conftest import GatewayFactory, gateway_yaml
from tests.fakes import FakeUpstream
from tests.logdb import query
from tests.test_governance import governed, key_line
from tests.test_logstore import m006_database, make_row
from tests.test_routes_logs import ANSWER
from tests.test_routes_openai import TOOLS

CHAT = "/openai/chat/completions"
ROO, KILO = "sk-fo-roo-000000000000000001", "sk-fo-kilo-00000000000000002"
SYSTEM = "You are Roo, a coding agent. " + "Rules: be careful with files. " * 200  # ~6 KB, resent every turn
CACHE = {"type": "ephemeral"}


def roo_turns(task: str, turns: int) -> list[dict[str, Any]]:
    """The request bodies a Roo-style agent sends: its whole history each time, tool results
    and environment details appended, cache_control moved to the newest two user messages."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM, "cache_control": CACHE},
        {"role": "user", "content": [{"type": "text", "text": f"<task>{task}</task>"}]},
    ]
    bodies = []
    for turn in range(turns):
        users = [m for m in messages if m["role"] == "user"]
        for m in users:
            for part in m["content"]:
                part.pop("cache_control", None)
        for m in users[-2:]:
            m["content"][-1]["cache_control"] = CACHE
        bodies.append({"model": "openai/gpt-5", "messages": copy.deepcopy(messages), "tools": TOOLS,
                       "stream": True, "stream_options": {"include_usage": True}, "temperature": 0})
        messages += [
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_read_1", "type": "function",
                 "function": {"name": "read_file", "arguments": '{"path": "src/main.py"}'}},
                {"id": "call_list_2", "type": "function",
                 "function": {"name": "list_files", "arguments": '{"path": "tests", "recursive": true}'}}]},
            {"role": "tool", "tool_call_id": "call_read_1", "content": f"turn {turn} result: okapi{turn} " * 40},
            {"role": "tool", "tool_call_id": "call_list_2", "content": "tests/test_main.py"},
            {"role": "user", "content": [{"type": "text", "text": f"<environment_details>step {turn}"}]},
        ]  # fmt: skip
    return bodies


async def send(gw: TestClient, fake: FakeUpstream, body: dict[str, Any], headers: dict[str, str] | None = None) -> str:
    fake.play("openai/parallel_tool_calls.sse")
    resp = await gw.post(CHAT, json=body, headers=headers or {})
    assert resp.status == 200, await resp.text()
    await resp.read()
    return resp.headers["x-request-id"]


async def api(gw: TestClient, path: str) -> Any:
    resp = await gw.get(path)
    assert resp.status == 200, await resp.text()
    return await resp.json()


def logged(gw: TestClient, sql: str) -> Any:
    """The one value ``sql`` reads from the gateway's log database, either backend."""
    storage = gw.server.app[RUNTIME].config.storage
    ((value,),) = query({"path": storage.path, "url": storage.url}, sql)
    return value


async def test_a_roo_task_is_one_session_stored_once_and_rebuilt_exactly(
    log_backend: dict[str, Any], gateway: TestClient, fake_openai: FakeUpstream
) -> None:
    bodies = roo_turns("fix the okapi bug", 6)
    ids = [await send(gateway, fake_openai, body) for body in bodies]
    store = gateway.server.app[LOGSTORE]
    await store.flush()
    # /api/logs/{id}: the request exactly as sent, key order included
    for rid, body in zip(ids, bodies):
        item = await api(gateway, f"/api/logs/{rid}")
        assert json.dumps(item["request"]) == json.dumps(body)
        assert item["response"]["tool_calls"][0]["name"] == "read_file"
    page = await store.sessions(with_totals=True)
    (summary,) = page["items"]
    assert summary["turns"] == 6 and summary["source"] == "prefix" and summary["models"] == ["openai/gpt-5"]
    assert summary["first_words"] == "<task>fix the okapi bug</task>"
    assert summary["usage"]["prompt_tokens"] == 6 * 1520 and summary["status"] == "running"
    assert page["totals"]["sessions"] == 1 and page["totals"]["requests"] == 6
    items = (await store.search(limit=10))["items"]
    assert {i["session_id"] for i in items} == {summary["id"]}
    assert sorted(i["turn"] for i in items) == [1, 2, 3, 4, 5, 6]
    # the system prompt once, the tools list once, each distinct message once
    assert logged(gateway, "select count(*) from content where kind = 'tools'") == 1
    assert logged(gateway, "select count(*) from content where kind = 'message' and size > 5000") == 1
    stored = logged(gateway, "select sum(length(body)) from content")
    sent = sum(len(json.dumps(b)) for b in bodies)
    assert stored < sent / 4  # whole bodies resent six times, kept once (and deflated)


async def test_a_turn_shows_only_what_it_added(log_backend: dict[str, Any], gateway: TestClient, fake_openai: FakeUpstream) -> None:
    bodies = roo_turns("rename okapi", 3)
    ids = [await send(gateway, fake_openai, body) for body in bodies]
    store = gateway.server.app[LOGSTORE]
    await store.flush()
    sid = (await store.sessions())["items"][0]["id"]
    got = await store.session(sid)
    assert got is not None and [t["request_id"] for t in got["turns"]] == ids
    first, second, third = got["turns"]
    assert first["new_messages"] == bodies[0]["messages"]  # the whole list, system prompt included
    # the previous answer (assistant + tool calls) is not repeated; its tool results and the user turn are
    assert [m["role"] for m in second["new_messages"]] == ["tool", "tool", "user"]
    assert second["new_messages"] == bodies[1]["messages"][3:]
    assert "okapi1" in third["new_messages"][0]["content"]
    assert first["answer"]["tool_calls"][1] == {
        "id": "call_list_2", "name": "list_files", "arguments": '{"path": "tests", "recursive": true}'}
    assert first["usage"] == {"prompt_tokens": 1520, "completion_tokens": 41, "cached_tokens": 1024,
                              "total_tokens": 1561}  # fmt: skip
    assert await store.session("no-such-session") is None


@pytest.mark.parametrize("broad", [False, True], ids=["by-id", "walk"])
async def test_search_names_the_session_and_the_turn_where_text_first_appeared(
    log_backend: dict[str, Any], gateway: TestClient, fake_openai: FakeUpstream, monkeypatch: pytest.MonkeyPatch, broad: bool
) -> None:
    if broad:
        monkeypatch.setattr(log_search, "SELECTIVE", 1)  # as if the word were in most requests
    for body in roo_turns("tidy the okapi module", 4):
        await send(gateway, fake_openai, body)
    await send(gateway, fake_openai, roo_turns("unrelated zebra work", 1)[0])
    store = gateway.server.app[LOGSTORE]
    await store.flush()
    page = await store.sessions(q="okapi2")
    (hit,) = page["items"]
    assert hit["match"]["turn"] == 4  # the tool result of turn 3's calls arrives in turn 4's request
    assert "<mark>okapi2</mark>" in hit["match"]["snippet"]
    requests = await store.search(q="okapi2")
    assert [i["turn"] for i in requests["items"]] == [4]
    assert len((await store.sessions())["items"]) == 2
    assert (await store.sessions(q="zebra"))["items"][0]["turns"] == 1


@pytest.mark.parametrize("header", ["x-finops-session-id", "X-Claude-Code-Session-Id", "x-session-id", "session-id"])
async def test_a_client_session_header_threads_even_when_the_history_changes(
    log_backend: dict[str, Any], gateway: TestClient, fake_openai: FakeUpstream, header: str
) -> None:
    bodies = roo_turns("condense me", 3)
    bodies[2]["messages"] = [bodies[2]["messages"][0], {"role": "user", "content": "summary of the task so far"}]
    for body in bodies:
        await send(gateway, fake_openai, body, {header: "task-42"})
    await send(gateway, fake_openai, bodies[0], {header: "task-43"})
    store = gateway.server.app[LOGSTORE]
    await store.flush()
    items = (await store.sessions())["items"]
    assert sorted(i["turns"] for i in items) == [1, 3] and {i["source"] for i in items} == {"header"}
    three = next(i for i in items if i["turns"] == 3)
    turns = (await store.session(three["id"]))["turns"]  # type: ignore[index]
    assert turns[2]["new_messages"] == [{"role": "user", "content": "summary of the task so far"}]
    rebuilt = await store.get(turns[2]["request_id"])
    assert rebuilt is not None and rebuilt["request"] == bodies[2]


async def test_without_an_id_a_condensed_history_starts_a_new_session(
    log_backend: dict[str, Any], gateway: TestClient, fake_openai: FakeUpstream
) -> None:
    bodies = roo_turns("condense me", 3)
    bodies[2]["messages"] = [bodies[2]["messages"][0], {"role": "user", "content": "summary so far"}]
    for body in bodies:
        await send(gateway, fake_openai, body)
    store = gateway.server.app[LOGSTORE]
    await store.flush()
    assert sorted(i["turns"] for i in (await store.sessions())["items"]) == [1, 2]


async def test_sessions_are_per_key_and_filter_like_requests(
    log_backend: dict[str, Any], make_gateway: GatewayFactory, fake_openai: FakeUpstream
) -> None:
    gw = await make_gateway(governed(fake_openai.url, key_line("roo", ROO, team="red") + key_line("kilo", KILO),
                                     teams="{red: {}}"))
    body = roo_turns("same first words", 1)[0]
    for key in (ROO, KILO):
        await send(gw, fake_openai, body, {"Authorization": f"Bearer {key}", "x-session-id": "shared-id"})
        await send(gw, fake_openai, body, {"Authorization": f"Bearer {key}"})
    store = gw.server.app[LOGSTORE]
    await store.flush()
    everything = await store.sessions(with_totals=True)
    assert everything["totals"]["sessions"] == 4  # header and prefix sessions, each per key
    assert {i["key"] for i in (await store.sessions(key="roo"))["items"]} == {"roo"}
    assert len((await store.sessions(team="red"))["items"]) == 2
    assert (await store.sessions(model="openai/nope"))["items"] == []
    assert len((await store.sessions(status="running"))["items"]) == 4
    assert (await store.sessions(status="error"))["items"] == []
    first = await store.sessions(limit=3)
    rest = await store.sessions(limit=3, cursor=first["next_cursor"])
    assert len(first["items"]) == 3 and len(rest["items"]) == 1 and rest["next_cursor"] is None
    assert {i["id"] for i in first["items"] + rest["items"]} == {i["id"] for i in everything["items"]}
    with pytest.raises(ValueError):
        await store.sessions(cursor="garbage")
    by_session = await store.usage_by("session")
    assert len(by_session) == 4 and all(r["requests"] == 1 for r in by_session)


async def test_claude_code_session_over_the_anthropic_route(
    log_backend: dict[str, Any], make_gateway: GatewayFactory, fake_openai: FakeUpstream
) -> None:
    gw = await make_gateway(gateway_yaml(fake_openai.url))
    async with anthropic.AsyncAnthropic(base_url=str(gw.make_url("/anthropic")), api_key="x", max_retries=0,
                                        default_headers={"X-Claude-Code-Session-Id": "cc-1"}) as client:
        for text in ("first question", "second question"):
            fake_openai.answer_json(ANSWER)
            await client.messages.create(model="openai/gpt-5", max_tokens=100,
                                         messages=[{"role": "user", "content": text}])
    store = gw.server.app[LOGSTORE]
    await store.flush()
    (one,) = (await store.sessions())["items"]
    assert one["turns"] == 2 and one["source"] == "header" and one["first_words"] == "first question"


async def test_a_previous_response_id_chain_is_one_session(
    log_backend: dict[str, Any], make_gateway: GatewayFactory, fake_openai: FakeUpstream
) -> None:
    gw = await make_gateway(gateway_yaml(fake_openai.url))
    async with openai.AsyncOpenAI(base_url=str(gw.make_url("/openai/v1")), api_key="x", max_retries=0) as client:
        fake_openai.answer_json(ANSWER)
        first = await client.responses.create(model="groq/llama-3.3-70b-versatile", input="start the walrus task")
        fake_openai.answer_json(ANSWER)
        await client.responses.create(model="groq/llama-3.3-70b-versatile", input="go on",
                                      previous_response_id=first.id)
        fake_openai.answer_json(ANSWER)
        await client.responses.create(model="groq/llama-3.3-70b-versatile", input="another task entirely")
    store = gw.server.app[LOGSTORE]
    await store.flush()
    items = (await store.sessions())["items"]
    assert sorted((i["turns"], i["source"]) for i in items) == [(1, "new"), (2, "response_chain")]


async def test_content_off_keeps_sessions_tokens_and_cost_but_no_text(
    log_backend: dict[str, Any], make_gateway: GatewayFactory, fake_openai: FakeUpstream
) -> None:
    priced = "logs: {content: false}\npricing:\n  openai/gpt-5: {input: 1000, output: 2000}"
    gw = await make_gateway(gateway_yaml(fake_openai.url, priced))
    for body in roo_turns("secret okapi plans", 3):
        await send(gw, fake_openai, body)
    store = gw.server.app[LOGSTORE]
    await store.flush()
    (one,) = (await store.sessions())["items"]
    assert one["turns"] == 3 and one["usage"]["prompt_tokens"] == 3 * 1520 and one["cost_usd"] > 0
    assert one["first_words"] is None
    turns = (await store.session(one["id"]))["turns"]  # type: ignore[index]
    assert all(t["new_messages"] == [] and t["answer"]["content"] is None for t in turns)
    assert logged(gw, "select count(*) from content") == 0
    assert logged(gw, "select count(*) from request_previews") == 0
    assert logged(gw, "select count(*) from sessions where first_words is not null") == 0
    await store.close()  # the WAL checkpointed into the file
    if not log_backend.get("url"):
        assert b"okapi" not in Path(gw.server.app[RUNTIME].config.storage.path).read_bytes()


async def test_a_poisoned_row_costs_only_its_own_text(log_backend: dict[str, Any], gateway: TestClient, fake_openai: FakeUpstream) -> None:
    store = gateway.server.app[LOGSTORE]
    rid = await send(gateway, fake_openai, roo_turns("fine task", 1)[0])
    await store.flush()
    good = await store.get(rid)
    assert good is not None
    rows = [dict(good, id=f"ok-{i}", session_hint=f"s{i}") for i in range(5)]
    rows.insert(2, dict(good, id="huge", prompt_tokens=10**23, cost_usd=float("inf"), session_hint="h"))
    rows.insert(4, dict(good, id=rid))  # a duplicate id: cannot be written at all
    for r in rows:
        store.submit(r)
    await store.flush()
    for i in range(5):
        assert (await store.get(f"ok-{i}")) is not None
    huge = await store.get("huge")
    assert huge is not None and huge["prompt_tokens"] is None and huge["cost_usd"] is None
    assert huge["request"] is None and "dropped" in huge["attempts"][-1]["note"]
    assert store.failed_rows == 1 and store.degraded_rows == 1
    page = await api(gateway, "/api/logs?totals=true")
    assert page["totals"]["requests"] == 7


async def test_an_old_database_is_served_after_the_upgrade(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    db = tmp_path / "data" / "finopsd" / "finops.db"  # where the config below keeps it (XDG_DATA_HOME)
    history = [{"role": "system", "content": "You are Roo. " * 100}, {"role": "user", "content": "find the gnu"},
               {"role": "assistant", "content": "said 0"}, {"role": "user", "content": "go on"}]
    rows = [make_row(f"old{i}", ts=time.time() - 300 + i, request={"messages": history[: 2 + 2 * i], "model": "m"},
                     response={"content": f"said {i}", "reasoning": "", "tool_calls": []}) for i in range(2)]
    m006_database(str(db), rows)
    gw = await make_gateway(gateway_yaml(fake_openai.url))
    for row in rows:
        item = await api(gw, f"/api/logs/{row['id']}")
        assert item["request"] == row["request"] and item["response"] == row["response"]
    found = await api(gw, "/api/logs?q=gnu")
    assert [i["id"] for i in found["items"]] == ["old0"]
    sessions = await gw.server.app[LOGSTORE].sessions()
    assert [s["turns"] for s in sessions["items"]] == [2]
