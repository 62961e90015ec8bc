"""Sessions end to end: agent tasks sent through the gateway (the openai SDK → finopsd → a fake
upstream), then read back from /api/sessions, /logs (the sessions view) and /logs/sessions/{id}.

Every request here has a known cost: ``pricing`` sets gpt-5 to $1000 / $2000 per MTok, and
turn n of a task reports 100·n prompt and 10 completion tokens, so it costs 0.1·n + 0.02 USD.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai
import pytest
from aiohttp.test_utils import TestClient

from finopsd.appkeys import LOGSTORE
from finopsd.web.items import fmt_duration
from finopsd.web.pages import TURNS_PER_PAGE
from tests.conftest import GatewayFactory
from tests.fakes import FakeUpstream
from tests.test_governance import governed, key_line
from tests.test_routes_anthropic import ANT_TOOLS, MESSAGE
from tests.test_routes_openai import TOOLS

pytestmark = pytest.mark.usefixtures("log_backend")  # every test on SQLite and on PostgreSQL

ROO_KEY, CLINE_KEY = "sk-fo-roo-000000000000000001", "sk-fo-cline-0000000000000002"
KEYS = key_line("roo", ROO_KEY, team="web") + key_line("cline", CLINE_KEY, team="data")
SYSTEM = "You are Roo, a coding agent. Use the tools; answer briefly."


def turn_cost(n: int) -> float:
    return (100 * n * 1000 + 10 * 2000) / 1e6


def tool_answer(n: int, path: str) -> dict[str, Any]:
    call = {"id": f"call_{n}", "type": "function",
            "function": {"name": "read_file", "arguments": json.dumps({"path": path})}}  # fmt: skip
    return {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": 1764000000, "model": "gpt-5",
            "choices": [{"index": 0, "finish_reason": "tool_calls",
                         "message": {"role": "assistant", "content": None, "tool_calls": [call]}}],
            "usage": {"prompt_tokens": 100 * n, "completion_tokens": 10, "total_tokens": 100 * n + 10}}  # fmt: skip


def text_answer(n: int, text: str) -> dict[str, Any]:
    return {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": 1764000000, "model": "gpt-5",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 100 * n, "completion_tokens": 10, "total_tokens": 100 * n + 10}}  # fmt: skip


@dataclass
class Task:
    """What one agent task sent: its request ids, in order, and the history it ended with."""

    ids: list[str] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)


@asynccontextmanager
async def sdk(gw: TestClient, key: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=str(gw.make_url("/openai")), api_key=key, max_retries=0) as client:
        yield client


async def run_task(
    gw: TestClient, fake: FakeUpstream, key: str, ask: str, outputs: list[str], final: str,
    *, headers: dict[str, str] | None = None, model: str = "openai/gpt-5",
) -> Task:  # fmt: skip
    """A Roo-style task: each turn resends the whole history, the model's last answer and the
    tool's result appended; one tool call per output, then the final answer."""
    task = Task(messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": ask}])
    async with sdk(gw, key) as client:
        for n in range(1, len(outputs) + 2):
            done = n == len(outputs) + 1
            fake.answer_json(text_answer(n, final) if done else tool_answer(n, f"src/file{n}.py"))
            raw = await client.chat.completions.with_raw_response.create(
                model=model, messages=task.messages, tools=TOOLS, extra_headers=headers or {})  # type: ignore[arg-type]
            task.ids.append(raw.headers["x-request-id"])
            message = raw.parse().choices[0].message
            if done:
                task.messages.append({"role": "assistant", "content": message.content})
                break
            calls = [c.model_dump(exclude_none=True) for c in message.tool_calls or ()]
            task.messages.append({"role": "assistant", "content": message.content, "tool_calls": calls})
            task.messages.append({"role": "tool", "tool_call_id": calls[0]["id"], "content": outputs[n - 1]})
    return task


async def api(gw: TestClient, path: str = "/api/sessions", expect: int = 200, **params: Any) -> Any:
    await gw.server.app[LOGSTORE].flush()
    resp = await gw.get(path, params={k: str(v) for k, v in params.items()})
    body = await resp.json()
    assert resp.status == expect, body
    return body


async def page(gw: TestClient, path: str = "/logs", expect: int = 200, **params: Any) -> str:
    await gw.server.app[LOGSTORE].flush()
    resp = await gw.get(path, params={k: str(v) for k, v in params.items()})
    text = await resp.text()
    assert resp.status == expect, text[:500]
    assert resp.content_type == "text/html" and resp.headers["Cache-Control"] == "no-store"
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    return text


async def session_of(gw: TestClient, key: str) -> str:
    """The id of the (one) session of this key."""
    (sid,) = [s["id"] for s in (await api(gw, key=key))["items"]]
    return str(sid)


@pytest.fixture
async def gw(make_gateway: GatewayFactory, fake_openai: FakeUpstream) -> TestClient:
    return await make_gateway(governed(fake_openai.url, KEYS, "{web: {}, data: {}}"))


@pytest.fixture
async def two_tasks(gw: TestClient, fake_openai: FakeUpstream) -> tuple[Task, Task]:
    """Roo fixes a test in three turns; then Cline, on another team, asks something in one."""
    roo = await run_task(gw, fake_openai, ROO_KEY, "Fix the flaky test in tests/test_io.py",
                         ["def test_io():\n    assert read() == 'quokka'\n", "def read():\n    return 'wombat'\n"],
                         "Fixed: read() now returns quokka.")  # fmt: skip
    cline = await run_task(gw, fake_openai, CLINE_KEY, "Summarise the README", [], "It is a gateway.")
    return roo, cline


# ---------------------------------------------------------------- /api/sessions


async def test_an_agent_task_is_one_session_with_its_turns_tokens_and_cost(
    gw: TestClient, two_tasks: tuple[Task, Task]
) -> None:
    roo, cline = two_tasks
    body = await api(gw)
    assert set(body) == {"items", "next_cursor", "totals"} and body["next_cursor"] is None
    assert len(body["items"]) == 2
    newest, older = body["items"]  # newest-active first
    assert newest["key"] == "cline" and newest["team"] == "data" and newest["turns"] == 1
    assert older["key"] == "roo" and older["team"] == "web"
    assert older["first_words"] == "Fix the flaky test in tests/test_io.py"
    assert older["models"] == ["openai/gpt-5"] and older["turns"] == 3 and older["errors"] == 0
    assert older["usage"]["prompt_tokens"] == 100 + 200 + 300 and older["usage"]["completion_tokens"] == 30
    assert older["usage"]["total_tokens"] == 630
    assert older["cost_usd"] == pytest.approx(turn_cost(1) + turn_cost(2) + turn_cost(3))
    assert older["status"] == "running"  # its last request ended moments ago
    assert older["source"] == "prefix"  # no session id sent: threaded by the prefix rule
    assert older["ts"] <= older["last_ts"] and older["duration_ms"] == pytest.approx(
        (older["last_ts"] - older["ts"]) * 1000, abs=1)
    assert older["time"].endswith("Z") and abs(older["ts"] - time.time()) < 60
    assert older["match"] is None
    totals = body["totals"]
    assert totals["sessions"] == 2 and totals["requests"] == 4
    assert totals["prompt_tokens"] == 700 and totals["completion_tokens"] == 40
    assert totals["cost_usd"] == pytest.approx(sum(turn_cost(n) for n in (1, 2, 3, 1)))


async def test_a_session_answers_its_turns_each_with_only_what_was_new(
    gw: TestClient, two_tasks: tuple[Task, Task]
) -> None:
    roo, _ = two_tasks
    sid = await session_of(gw, "roo")
    body = await api(gw, f"/api/sessions/{sid}")
    assert body["session"]["id"] == sid and body["session"]["turns"] == 3
    turns = body["turns"]
    assert [t["turn"] for t in turns] == [1, 2, 3] and [t["request_id"] for t in turns] == roo.ids
    first, second, last = turns
    # turn 1: the system prompt and the ask; later turns: only the tool's result
    assert [(m["role"], m["content"]) for m in first["new_messages"]] == [
        ("system", SYSTEM), ("user", "Fix the flaky test in tests/test_io.py")]
    assert [m["role"] for m in second["new_messages"]] == ["tool"]
    assert second["new_messages"][0]["content"].endswith("'quokka'\n")
    assert [m["role"] for m in last["new_messages"]] == ["tool"] and "wombat" in last["new_messages"][0]["content"]
    assert first["answer"]["tool_calls"] == [
        {"id": "call_1", "name": "read_file", "arguments": '{"path": "src/file1.py"}'}]
    assert last["answer"]["content"] == "Fixed: read() now returns quokka." and last["answer"]["tool_calls"] == []
    assert second["usage"]["prompt_tokens"] == 200 and second["cost_usd"] == pytest.approx(turn_cost(2))
    assert all(t["status"] == "ok" and t["status_code"] == 200 and t["error"] is None for t in turns)
    assert all(t["model"] == "openai/gpt-5" and t["provider"] == "openai" and t["route"] for t in turns)
    assert all(t["duration_ms"] is not None and t["time"].endswith("Z") for t in turns)
    assert turns[0]["ts"] <= turns[1]["ts"] <= turns[2]["ts"]


async def test_a_request_row_names_its_session_and_turn(gw: TestClient, two_tasks: tuple[Task, Task]) -> None:
    roo, _ = two_tasks
    sid = await session_of(gw, "roo")
    item = await api(gw, f"/api/logs/{roo.ids[1]}")
    assert item["session_id"] == sid and item["turn"] == 2
    listed = {i["id"]: i for i in (await api(gw, "/api/logs"))["items"]}
    assert listed[roo.ids[2]]["session_id"] == sid and listed[roo.ids[2]]["turn"] == 3
    detail = await page(gw, f"/logs/{roo.ids[1]}")
    assert f'href="/logs/sessions/{sid}#turn-2"' in detail and "its session (turn 2)" in detail


async def test_a_client_session_id_header_groups_unrelated_requests(
    gw: TestClient, fake_openai: FakeUpstream
) -> None:
    for ask in ("first question", "an unrelated second question"):
        await run_task(gw, fake_openai, ROO_KEY, ask, [], "ok", headers={"x-finops-session-id": "task-42"})
    await run_task(gw, fake_openai, ROO_KEY, "a third, without the header", [], "ok")
    items = (await api(gw))["items"]
    assert sorted(s["turns"] for s in items) == [1, 2]
    grouped = next(s for s in items if s["turns"] == 2)
    assert grouped["source"] == "header" and grouped["first_words"] == "first question"


async def test_a_failed_turn_marks_the_session_as_error(gw: TestClient, fake_openai: FakeUpstream) -> None:
    task = await run_task(gw, fake_openai, ROO_KEY, "Refactor the parser", [], "done")
    fake_openai.answer_json({"error": {"message": "context too long", "type": "invalid_request_error"}}, status=400)
    async with sdk(gw, ROO_KEY) as client:
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(
                model="openai/gpt-5", messages=[*task.messages, {"role": "user", "content": "and the lexer"}])  # type: ignore[arg-type]
    (session,) = (await api(gw))["items"]
    assert session["turns"] == 2 and session["errors"] == 1 and session["status"] == "error"
    turns = (await api(gw, f"/api/sessions/{session['id']}"))["turns"]
    assert turns[1]["status"] == "error" and turns[1]["status_code"] == 400
    assert turns[1]["error"]["message"] and turns[1]["new_messages"][-1]["content"] == "and the lexer"
    assert [s["id"] for s in (await api(gw, status="error"))["items"]] == [session["id"]]
    assert (await api(gw, status="running"))["items"] == []
    failed = (await page(gw, f"/logs/sessions/{session['id']}")).split('id="turn-2"')[1]
    assert '<span class="st st-error">error 400</span>' in failed and '<div class="error" role="alert">' in failed
    assert "1 of 2 requests failed" in await page(gw)  # the list's status tooltip


@pytest.mark.parametrize(("params", "keys"), [
    ({"key": "roo"}, ["roo"]),
    ({"team": "data"}, ["cline"]),
    ({"provider": "openai"}, ["cline", "roo"]),
    ({"provider": "groq"}, []),
    ({"model": "openai/gpt-5"}, ["cline", "roo"]),
    ({"status": "running"}, ["cline", "roo"]),
    ({"status": "error"}, []),
    ({"min_cost": "0.5"}, ["roo"]),  # roo's three turns cost 0.66, cline's one 0.12
    ({"until": "2020-01-01"}, []),
    ({"since": "2020-01-01T00:00Z"}, ["cline", "roo"]),
    ({"key": "", "team": "", "status": ""}, ["cline", "roo"]),  # empty form fields mean "any"
])  # fmt: skip
async def test_filters_pick_sessions_with_a_matching_request(
    gw: TestClient, two_tasks: tuple[Task, Task], params: dict[str, str], keys: list[str]
) -> None:
    body = await api(gw, **params)
    assert [s["key"] for s in body["items"]] == keys
    assert body["totals"]["sessions"] == len(keys)


async def test_search_names_the_session_and_the_turn_where_the_text_first_appeared(
    gw: TestClient, two_tasks: tuple[Task, Task]
) -> None:
    roo, _ = two_tasks
    # "quokka" first came in the tool result that turn 2 sent (it recurs in every later turn)
    (hit,) = (await api(gw, q="quokka"))["items"]
    assert hit["key"] == "roo" and hit["match"]["turn"] == 2 and hit["match"]["request_id"] == roo.ids[1]
    assert "<mark>quokka</mark>" in hit["match"]["snippet"]
    # "wombat" first came in turn 3; the system prompt's words in turn 1 of both tasks
    assert [h["match"]["turn"] for h in (await api(gw, q="wombat"))["items"]] == [3]
    assert sorted(h["match"]["turn"] for h in (await api(gw, q="coding agent"))["items"]) == [1, 1]
    assert (await api(gw, q="armadillo"))["items"] == []


@pytest.mark.parametrize("q", ['"unbalanced', "NEAR(", "*", "(a OR", "日本語", "<script>", "x" * 5000])
async def test_hostile_search_input_never_answers_500(gw: TestClient, two_tasks: tuple[Task, Task], q: str) -> None:
    body = await api(gw, q=q)
    assert isinstance(body["items"], list)
    assert 'id="rows"' in await page(gw, q=q)


async def test_cursor_pages_walk_sessions_newest_first_without_gaps(
    gw: TestClient, fake_openai: FakeUpstream
) -> None:
    for i in range(5):
        await run_task(gw, fake_openai, ROO_KEY, f"task number {i}", [], "ok",
                       headers={"x-finops-session-id": f"paging-{i}"})  # fmt: skip
    seen: list[str] = []
    cursor = None
    while True:
        body = await api(gw, limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [s["first_words"] for s in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"task number {i}" for i in range(4, -1, -1)]
    assert (await api(gw, totals="false"))["totals"] is None


@pytest.mark.parametrize(("params", "param"), [
    ({"status": "client_closed"}, "status"), ({"stream": "true"}, "stream"), ({"order": "relevance"}, "order"),
    ({"min_latency_ms": "5"}, "min_latency_ms"), ({"limit": "0"}, "limit"), ({"limit": "501"}, "limit"),
    ({"since": "yesterday"}, "since"), ({"min_cost": "-1"}, "min_cost"), ({"cursor": "garbage"}, "cursor"),
    ({"totals": "perhaps"}, "totals"),
])  # fmt: skip
async def test_bad_parameters_answer_400_naming_the_parameter(
    gw: TestClient, two_tasks: tuple[Task, Task], params: dict[str, str], param: str
) -> None:
    body = await api(gw, expect=400, **params)
    assert body["error"]["param"] == param and param in body["error"]["message"]


async def test_unknown_session_is_404_on_api_and_page(gw: TestClient) -> None:
    body = await api(gw, "/api/sessions/no-such-session", expect=404)
    assert body["error"]["code"] == "session_not_found"
    text = await page(gw, "/logs/sessions/no-such-session", expect=404)
    assert "No such session" in text and "no-such-session" in text


async def test_openapi_describes_the_session_endpoints(gw: TestClient) -> None:
    doc = await (await gw.get("/openapi.json")).json()
    for path in ("/api/sessions", "/api/sessions/{id}"):
        assert doc["paths"][path]["get"]["security"] == [{"bearer": []}], path
    names = {p["name"] for p in doc["paths"]["/api/sessions"]["get"]["parameters"]}
    assert {"q", "key", "team", "status", "since", "until", "min_cost", "cursor", "limit", "totals"} <= names


# ---------------------------------------------------------------- the pages


async def test_logs_opens_on_the_sessions_view(gw: TestClient, two_tasks: tuple[Task, Task]) -> None:
    sessions = {s["key"]: s for s in (await api(gw))["items"]}
    text = await page(gw)
    assert '<a href="/logs" class="on" aria-current="page">Sessions</a>' in text
    assert '<a href="/logs?view=requests">Requests</a>' in text
    assert text.index(f'data-id="{sessions["cline"]["id"]}"') < text.index(f'data-id="{sessions["roo"]["id"]}"')
    row = text.split(f'data-id="{sessions["roo"]["id"]}"')[1].split("</tr>")[0]
    assert "Fix the flaky test in tests/test_io.py" in row and "roo / web" in row and "openai/gpt-5" in row
    assert '<td class="num">3</td>' in row and "600 → 30" in row and "$0.6600" in row
    assert 'class="st st-running"' in row and f'href="/logs/sessions/{sessions["roo"]["id"]}"' in row
    assert "<b>2</b> sessions · <b>4</b> requests" in text
    assert 'data-live="1"' in text and 'id="live" checked' in text
    assert 'name="stream"' not in text and 'name="order"' not in text  # request-level knobs stay in that view
    assert '<p class="totals" id="totals"></p>' in await page(gw, totals="false")  # how the live page polls


async def test_sessions_view_search_links_to_the_turn(gw: TestClient, two_tasks: tuple[Task, Task]) -> None:
    sid = await session_of(gw, "roo")
    text = await page(gw, q="quokka", key="roo")
    assert f'href="/logs/sessions/{sid}#turn-2"><span class="turn-no">turn 2</span>' in text
    assert "<mark>quokka</mark>" in text and "<th>match</th>" in text
    # the tabs keep the search and the filters both views share
    assert '<a href="/logs?view=requests&amp;q=quokka&amp;key=roo">Requests</a>' in text


async def test_sessions_view_pages_and_round_trips_its_filters(gw: TestClient, fake_openai: FakeUpstream) -> None:
    for i in range(3):
        await run_task(gw, fake_openai, ROO_KEY, f"task number {i}", [], "ok",
                       headers={"x-finops-session-id": f"paging-{i}"})  # fmt: skip
    text = await page(gw, limit=2, status="running", team="web")
    assert "task number 2" in text and "task number 1" in text and "task number 0" not in text
    assert '<option value="running" selected>' in text and 'name="team" value="web"' in text
    assert '<a href="/logs?view=requests&amp;team=web">Requests</a>' in text  # no request is "running"
    older = html.unescape(text.split('rel="next" href="')[1].split('"')[0])
    page2 = await page(gw, older)
    assert "task number 0" in page2 and "task number 2" not in page2 and "← newest" in page2
    assert 'id="live" disabled' in page2 and 'data-live=""' in page2  # live only on the newest page


async def test_a_bad_filter_keeps_the_sessions_form_and_says_why(gw: TestClient) -> None:
    text = await page(gw, expect=400, since="yesterday", key="roo")
    assert "since must be an ISO 8601 time" in text and 'name="key" value="roo"' in text
    assert "status must be one of" in await page(gw, expect=400, status="client_closed")
    assert "view must be sessions or requests" in await page(gw, expect=400, view="tables")


async def test_session_page_is_a_timeline_of_what_each_turn_added(
    gw: TestClient, two_tasks: tuple[Task, Task]
) -> None:
    roo, _ = two_tasks
    sid = await session_of(gw, "roo")
    text = await page(gw, f"/logs/sessions/{sid}")
    assert "<h1>Fix the flaky test in tests/test_io.py</h1>" in text
    turns = {n: text.split(f'id="turn-{n}"')[1].split("</section>")[0] for n in (1, 2, 3)}
    assert text.count(SYSTEM) == 1 and SYSTEM in turns[1]  # the system prompt once, in turn 1
    assert "msg role-user" in turns[1] and "msg role-user" not in turns[2]
    assert 'tool result for <b class="tool-name">read_file</b>' in turns[2] and "&#x27;quokka&#x27;" in turns[2]
    assert 'calls <b class="tool-name">read_file</b>' in turns[1] and "src/file1.py" in turns[1]
    assert "Fixed: read() now returns quokka." in turns[3] and 'class="msg role-assistant final"' in turns[3]
    for n, rid in enumerate(roo.ids, 1):
        assert f'<a class="request-link" href="/logs/{rid}">request detail →</a>' in turns[n]
        assert f"{100 * n} → 10 tokens" in turns[n] and f"${turn_cost(n):.4f}" in turns[n]
    assert "threaded by" in text and "roo / web" in text and "$0.6600" in text
    assert 'data-running="1" data-last-turn="3"' in text and "/static/sessions.js" in text
    only_new = await page(gw, f"/logs/sessions/{sid}", after=2)  # what the live page fetches
    assert 'id="turn-3"' in only_new and 'id="turn-2"' not in only_new and 'id="facts"' in only_new


async def test_row_text_is_escaped_on_the_session_pages(gw: TestClient, fake_openai: FakeUpstream) -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    await run_task(gw, fake_openai, ROO_KEY, f"please {evil}", [evil], evil, headers={"x-finops-session-id": evil})
    sid = (await api(gw))["items"][0]["id"]
    found = await page(gw, q="script")
    for text in (await page(gw), found, await page(gw, f"/logs/sessions/{sid}")):
        assert "<script>alert" not in text and "<img src=x" not in text
        assert "&lt;script&gt;alert" in text or text is found
    assert "&lt;<mark>script</mark>&gt;alert" in found
    hit = (await api(gw, q="script"))["items"][0]
    assert "<script" not in hit["match"]["snippet"] and "<mark>script</mark>" in hit["match"]["snippet"]


async def test_without_content_a_session_keeps_turns_tokens_and_cost(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream
) -> None:
    gw = await make_gateway(governed(fake_openai.url, KEYS, "{web: {}, data: {}}", extra="logs: {content: false}\n"))
    await run_task(gw, fake_openai, ROO_KEY, "secret plans", ["tool output"], "done",
                   headers={"x-finops-session-id": "quiet-task"})  # fmt: skip
    (session,) = (await api(gw))["items"]
    assert session["turns"] == 2 and session["cost_usd"] == pytest.approx(turn_cost(1) + turn_cost(2))
    turns = (await api(gw, f"/api/sessions/{session['id']}"))["turns"]
    assert all(t["new_messages"] == [] and t["answer"]["content"] is None for t in turns)
    text = await page(gw, f"/logs/sessions/{session['id']}")
    assert "was not stored" in text and "secret plans" not in text and "No answer was received" not in text



async def test_a_long_task_pages_its_timeline_and_links_a_hit_to_its_page(
    gw: TestClient, fake_openai: FakeUpstream
) -> None:
    fake_openai.answer_json(text_answer(1, "ok"))
    headers = {"Authorization": f"Bearer {ROO_KEY}", "x-finops-session-id": "long-task"}
    for n in range(1, TURNS_PER_PAGE + 2):
        words = "the last turn mentions an axolotl" if n == TURNS_PER_PAGE + 1 else f"step {n}"
        resp = await gw.post("/openai/chat/completions", headers=headers,
                             json={"model": "openai/gpt-5", "messages": [{"role": "user", "content": words}]})
        assert resp.status == 200, await resp.text()
    sid = await session_of(gw, "roo")
    first = await page(gw, f"/logs/sessions/{sid}")
    assert 'id="turn-1"' in first and f'id="turn-{TURNS_PER_PAGE}"' in first
    assert f'id="turn-{TURNS_PER_PAGE + 1}"' not in first and 'data-running=""' in first  # not the newest turns
    later = html.unescape(first.split('rel="next" href="')[1].split('"')[0])
    assert later == f"/logs/sessions/{sid}?after={TURNS_PER_PAGE}"
    last = await page(gw, later)
    assert f'id="turn-{TURNS_PER_PAGE + 1}"' in last and 'id="turn-1"' not in last and "axolotl" in last
    assert "← earlier turns" in last and 'data-running="1"' in last
    hit = await page(gw, q="axolotl")
    assert f'href="/logs/sessions/{sid}?after={TURNS_PER_PAGE}#turn-{TURNS_PER_PAGE + 1}"' in hit


async def test_a_claude_code_task_reads_as_a_timeline(make_gateway: GatewayFactory, fake_anthropic: FakeUpstream) -> None:
    """The Anthropic dialect (native to an Anthropic upstream) threads by Claude Code's session header,
    and its tool_use / tool_result blocks read on the timeline as calls and the results under them."""
    gw = await make_gateway(f"providers:\n  anthropic: {{base_url: '{fake_anthropic.url}',"
                            " keys: [{value: sk-ant-upstream}], models: [claude-sonnet-4-6]}\n")  # fmt: skip
    fake_anthropic.answer_json(MESSAGE)
    fake_anthropic.answer_json({**MESSAGE, "content": [{"type": "text", "text": "a.py prints a capybara."}],
                                "stop_reason": "end_turn"})  # fmt: skip
    history: list[Any] = [{"role": "user", "content": "What does a.py print?"}]
    async with anthropic.AsyncAnthropic(base_url=str(gw.make_url("/anthropic")), api_key="vk", max_retries=0,
                                        default_headers={"X-Claude-Code-Session-Id": "cc-7"}) as client:  # fmt: skip
        first = await client.messages.create(model="claude-sonnet-4-6", max_tokens=100, messages=history,
                                             tools=ANT_TOOLS)  # type: ignore[arg-type]
        history += [{"role": "assistant", "content": [b.model_dump() for b in first.content]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01A",
                                                  "content": "print('capybara')"}]}]  # fmt: skip
        await client.messages.create(model="claude-sonnet-4-6", max_tokens=100, messages=history, tools=ANT_TOOLS)  # type: ignore[arg-type]
    (session,) = (await api(gw))["items"]
    assert session["turns"] == 2 and session["source"] == "header"
    assert session["first_words"] == "What does a.py print?"
    text = await page(gw, f"/logs/sessions/{session['id']}")
    turn1, turn2 = (text.split(f'id="turn-{n}"')[1].split("</section>")[0] for n in (1, 2))
    assert 'calls <b class="tool-name">read_file</b>' in turn1 and "Reading." in turn1
    assert 'tool result for <b class="tool-name">read_file</b>' in turn2 and "capybara" in turn2
    assert "What does a.py print?" not in turn2 and "a.py prints a capybara." in turn2


@pytest.mark.parametrize(("ms", "shown"), [
    (None, "—"), (12.4, "12 ms"), (59_000.0, "59.00 s"), (61_000.0, "1 min 01 s"), (3_599_000.0, "59 min 59 s"),
    (3_600_000.0, "1 h 00 min"), (49_000_000.0, "13 h 36 min"),
])  # fmt: skip
def test_a_task_length_reads_in_the_unit_a_person_would_use(ms: float | None, shown: str) -> None:
    assert fmt_duration(ms) == shown


async def test_a_codex_task_reads_as_a_timeline(make_gateway: GatewayFactory, fake_openai: FakeUpstream) -> None:
    """The Responses API (translated for a chat upstream) threads by Codex's session-id header;
    its function_call_output items read as tool results under the calls they answer."""
    gw = await make_gateway(f"providers:\n  groq: {{base_url: {fake_openai.url}, keys: [{{value: gsk}}],"
                            " models: [llama]}\n")  # fmt: skip
    fake_openai.answer_json(tool_answer(1, "src/main.py"))
    fake_openai.answer_json(text_answer(2, "main.py prints a quokka."))
    async with openai.AsyncOpenAI(base_url=str(gw.make_url("/openai/v1")), api_key="vk", max_retries=0,
                                  default_headers={"session-id": "codex-1"}) as client:  # fmt: skip
        first = await client.responses.create(model="groq/llama", input="What does main.py print?",
                                              instructions="Be brief.", store=False)  # fmt: skip
        items: list[Any] = [{"role": "user", "content": "What does main.py print?"},
                            *(o.model_dump(exclude_none=True) for o in first.output),
                            {"type": "function_call_output", "call_id": "call_1", "output": "print('quokka')"}]
        await client.responses.create(model="groq/llama", input=items, instructions="Be brief.", store=False)
    (session,) = (await api(gw))["items"]
    assert session["turns"] == 2 and session["source"] == "header"
    turns = (await api(gw, f"/api/sessions/{session['id']}"))["turns"]
    assert [m["role"] for m in turns[1]["new_messages"]] == ["tool"] and turns[1]["route"] == "responses"
    text = await page(gw, f"/logs/sessions/{session['id']}")
    turn2 = text.split('id="turn-2"')[1].split("</section>")[0]
    assert 'tool result for <b class="tool-name">read_file</b>' in turn2 and "main.py prints a quokka." in turn2
