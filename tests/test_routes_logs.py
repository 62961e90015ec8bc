"""/logs and /api/logs end to end: search, filters, paging, totals, pages, access, escaping, no secrets."""

from __future__ import annotations

import asyncio
import html
import json
import time
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient, make_mocked_request

from finopsd import access
from finopsd import config as cfg
from finopsd.app import build_app
from finopsd.appkeys import LOGSTORE
from finopsd.errors import GatewayError
from finopsd.log.store import LogStore
from tests.conftest import gateway_yaml
from tests.logrows import stored_bytes
from tests.fakes import FakeUpstream
from tests.test_routes_openai import MSGS, TOOLS

pytestmark = pytest.mark.usefixtures("log_backend")  # every test on SQLite and on PostgreSQL

CHAT = "/openai/chat/completions"
NOW = time.time()

# A second agent turn: the model's two calls, their results, then the model's answer.
TOOL_TURN: list[Any] = [
    *MSGS,
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_read_1", "type": "function",
         "function": {"name": "read_file", "arguments": '{"path": "src/main.py"}'}},
        {"id": "call_list_2", "type": "function",
         "function": {"name": "list_files", "arguments": '{"path": "tests", "recursive": true}'}},
    ]},
    {"role": "tool", "tool_call_id": "call_read_1", "content": "def main():\n    print('quokka')\n"},
    {"role": "tool", "tool_call_id": "call_list_2", "content": "tests/test_main.py"},
]  # fmt: skip
ANSWER: dict[str, Any] = {
    "id": "chatcmpl-9", "object": "chat.completion", "created": 1764000000, "model": "gpt-5",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "main.py prints quokka; one test file exists."}}],
    "usage": {"prompt_tokens": 210, "completion_tokens": 12, "total_tokens": 222},
}  # fmt: skip


def row(rid: str, **fields: Any) -> dict[str, Any]:
    """A log row as the recorder submits it."""
    out: dict[str, Any] = {
        "id": rid, "ts": NOW - 600, "duration_ms": 900.0, "ttft_ms": 200.0, "route": "chat",
        "provider": "openai", "model": "openai/gpt-5", "upstream_model": "gpt-5", "key_name": "roo",
        "team": "platform", "client_ip": "127.0.0.1", "user_agent": "RooCode/3.30", "status_code": 200,
        "status": "ok", "error_type": None, "error_message": None, "stream": True, "finish_reason": "stop",
        "prompt_tokens": 100, "completion_tokens": 10, "cached_tokens": 0, "reasoning_tokens": 0,
        "cost_usd": 0.001, "cost_flags": None, "upstream_key_name": "openai-0", "attempts": [],
        "request": {"model": "gpt-5", "messages": [{"role": "user", "content": "hello there"}]},
        "response": {"content": "hi", "reasoning": "", "tool_calls": []},
    }  # fmt: skip
    out.update(fields)
    return out


def said(prompt: str, answer: str = "ok") -> dict[str, Any]:
    return {
        "request": {"model": "gpt-5", "messages": [{"role": "user", "content": prompt}]},
        "response": {"content": answer, "reasoning": "", "tool_calls": []},
    }


async def seed(gw: TestClient, rows: list[dict[str, Any]]) -> LogStore:
    store = gw.server.app[LOGSTORE]
    for r in rows:
        store.submit(r)
    await store.flush()
    return store


async def api(gw: TestClient, expect: int = 200, **params: Any) -> Any:
    resp = await gw.get("/api/logs", params={k: str(v) for k, v in params.items()})
    body = await resp.json()
    assert resp.status == expect, body
    return body


async def api_sessions(gw: TestClient, **params: Any) -> Any:
    resp = await gw.get("/api/sessions", params={k: str(v) for k, v in params.items()})
    assert resp.status == 200
    return await resp.json()


async def ids(gw: TestClient, **params: Any) -> list[str]:
    return [item["id"] for item in (await api(gw, limit=500, **params))["items"]]


async def tool_turn(gw: TestClient, fake: FakeUpstream) -> str:
    """One real exchange through the gateway: tool calls, their results, the answer."""
    fake.answer_json(ANSWER)
    resp = await gw.post(CHAT, json={"model": "openai/gpt-5", "messages": TOOL_TURN, "tools": TOOLS})
    assert resp.status == 200
    await resp.read()
    return resp.headers["x-request-id"]


# ---------------------------------------------------------------- the API


async def test_a_request_appears_within_a_second_without_a_flush(
    gateway: TestClient, fake_openai: FakeUpstream
) -> None:
    fake_openai.play("openai/parallel_tool_calls.sse")
    resp = await gateway.post(CHAT, json={"model": "openai/gpt-5", "messages": MSGS, "tools": TOOLS, "stream": True})
    await resp.read()
    rid = resp.headers["x-request-id"]
    async with asyncio.timeout(1):  # the promise: on /logs within a second
        while rid not in await ids(gateway):
            await asyncio.sleep(0.05)


async def test_api_item_carries_the_documented_fields(gateway: TestClient, fake_openai: FakeUpstream) -> None:
    rid = await tool_turn(gateway, fake_openai)
    await gateway.server.app[LOGSTORE].flush()
    body = await api(gateway)
    assert set(body) == {"items", "next_cursor", "totals"} and body["next_cursor"] is None
    (item,) = body["items"]
    assert {"id", "time", "provider", "model", "key", "team", "status", "duration_ms", "ttft_ms", "usage",
            "cost_usd", "error"} <= set(item)  # fmt: skip
    assert item["id"] == rid and item["provider"] == "openai" and item["model"] == "openai/gpt-5"
    assert item["status"] == "ok" and item["error"] is None and item["stream"] is False
    assert item["time"].endswith("Z") and abs(item["ts"] - time.time()) < 60
    assert item["usage"]["prompt_tokens"] == 210 and item["usage"]["total_tokens"] == 222
    assert body["totals"]["requests"] == 1 and body["totals"]["prompt_tokens"] == 210


async def test_api_detail_answers_the_full_conversation(gateway: TestClient, fake_openai: FakeUpstream) -> None:
    rid = await tool_turn(gateway, fake_openai)
    await gateway.server.app[LOGSTORE].flush()
    resp = await gateway.get(f"/api/logs/{rid}")
    item = await resp.json()
    assert resp.status == 200 and item["id"] == rid
    turns = item["conversation"]
    assert [t["role"] for t in turns] == ["system", "user", "assistant", "tool", "tool", "assistant"]
    assert [c["function"]["name"] for c in turns[2]["tool_calls"]] == ["read_file", "list_files"]
    assert turns[-1] == {"role": "assistant", "content": ANSWER["choices"][0]["message"]["content"], "final": True}
    assert item["request"]["messages"] == TOOL_TURN and item["response"]["content"].startswith("main.py")


async def test_unknown_id_is_404_on_api_and_page(gateway: TestClient) -> None:
    resp = await gateway.get("/api/logs/no-such-id")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "log_not_found"
    resp = await gateway.get("/logs/no-such-id")
    assert resp.status == 404 and "No such request" in await resp.text()


async def test_every_word_of_the_conversation_is_findable(gateway: TestClient, fake_openai: FakeUpstream) -> None:
    rid = await tool_turn(gateway, fake_openai)
    await gateway.server.app[LOGSTORE].flush()
    # system prompt, user turn, a tool name, tool arguments, a tool result, the answer
    for word in ("Roo", "tests", "list_files", "recursive", "quokka", "exists"):
        assert await ids(gateway, q=word) == [rid], word
    assert await ids(gateway, q="wombat") == []


async def test_fts_operators_work_through_the_api(gateway: TestClient) -> None:
    await seed(gateway, [
        row("r1", **said("alpha beta")), row("r2", **said("alpha gamma")), row("r3", **said("delta")),
    ])  # fmt: skip
    assert await ids(gateway, q="alpha AND beta") == ["r1"]
    assert set(await ids(gateway, q="alpha OR delta")) == {"r1", "r2", "r3"}
    assert await ids(gateway, q="alpha NOT beta") == ["r2"]
    assert await ids(gateway, q='"alpha gamma"') == ["r2"]
    assert set(await ids(gateway, q="alph*")) == {"r1", "r2"}
    assert await ids(gateway, q="NEAR(alpha gamma, 2)") == ["r2"]
    assert set(await ids(gateway, q="prompt_text:alpha")) == {"r1", "r2"}


HOSTILE = [
    '"unbalanced', "(open", "close)", "NEAR(", "NEAR(a b", "*", "**", "AND", "OR OR", "NOT", "-", "^", ":",
    "col:x", "prompt_text:", '""', "'", "\\", "a\x00b", "日本語のテキスト", "ünïcödé 🙂", "%", "+-*/()",
    "x" * 10_000, "lorem ipsum dolor sit amet " * 400, "(" * 5000, '"' * 3001,
]  # fmt: skip


@pytest.mark.parametrize("q", HOSTILE, ids=lambda q: repr(q[:12]) + (f"…{len(q)}" if len(q) > 12 else ""))
async def test_hostile_search_input_never_answers_500(gateway: TestClient, q: str) -> None:
    await seed(gateway, [row("r1", **said("plain text with a (paren and a \"quote"))])
    body = await api(gateway, q=q)
    assert isinstance(body["items"], list) and body["totals"]["requests"] == len(body["items"])
    for view in ("requests", "sessions"):
        page = await gateway.get("/logs", params={"q": q, "view": view})
        assert page.status == 200 and 'id="rows"' in await page.text(), view


async def test_unicode_search_folds_diacritics_and_finds_the_row(gateway: TestClient) -> None:
    await seed(gateway, [row("r1", **said("ünïcödé café")), row("r2", **said("plain"))])
    assert await ids(gateway, q="unicode") == ["r1"]
    assert await ids(gateway, q="ünïcödé") == ["r1"]
    assert await ids(gateway, q='"unbalanced café') == []  # retried as a phrase: parses, finds nothing


async def test_operator_like_input_is_retried_as_a_literal_phrase(gateway: TestClient) -> None:
    await seed(gateway, [row("r1", **said("call foo(bar) now")), row("r2", **said("foo only"))])
    assert await ids(gateway, q="foo(bar") == ["r1"]  # bad FTS syntax: searched as the phrase "foo bar"


# ---------------------------------------------------------------- filters, paging, totals


def varied_rows() -> list[dict[str, Any]]:
    return [
        row("a", ts=NOW - 50, provider="openai", model="openai/gpt-5", key_name="roo", team="web",
            cost_usd=0.5, duration_ms=4000.0, stream=True),
        row("b", ts=NOW - 40, provider="groq", model="groq/llama", key_name="cline", team="web",
            cost_usd=0.01, duration_ms=300.0, stream=False),
        row("c", ts=NOW - 30, provider="groq", model="groq/llama", key_name="roo", team="data", status="error",
            status_code=502, error_type="upstream_error", error_message="bad gateway", cost_usd=None,
            prompt_tokens=None, completion_tokens=None),
        row("d", ts=NOW - 20, provider="anthropic", model="anthropic/claude", key_name="cc", team="data",
            status="client_closed", cost_usd=0.2, duration_ms=12000.0),
    ]  # fmt: skip


@pytest.mark.parametrize(("params", "expected"), [
    ({"provider": "groq"}, ["c", "b"]),
    ({"model": "openai/gpt-5"}, ["a"]),
    ({"key": "roo"}, ["c", "a"]),
    ({"team": "data"}, ["d", "c"]),
    ({"status": "error"}, ["c"]),
    ({"status": "client_closed"}, ["d"]),
    ({"status": "ok"}, ["b", "a"]),
    ({"stream": "false"}, ["b"]),
    ({"stream": "true"}, ["d", "c", "a"]),
    ({"min_cost": "0.2"}, ["d", "a"]),
    ({"min_latency_ms": "1000"}, ["d", "a"]),
    ({"provider": "groq", "key": "roo"}, ["c"]),
    ({"since": str(NOW - 35)}, ["d", "c"]),
    ({"until": str(NOW - 35)}, ["b", "a"]),
    ({"provider": "", "team": "", "status": ""}, ["d", "c", "b", "a"]),  # empty form fields mean "any"
])  # fmt: skip
async def test_filters_narrow_the_list_newest_first(
    gateway: TestClient, params: dict[str, str], expected: list[str]
) -> None:
    await seed(gateway, varied_rows())
    assert await ids(gateway, **params) == expected


async def test_time_filters_accept_iso_8601_and_epoch_seconds(gateway: TestClient) -> None:
    await seed(gateway, [row("old", ts=1_767_225_600.0), row("new", ts=1_767_312_000.0)])  # 2026-01-01, 01-02 UTC
    assert await ids(gateway, since="2026-01-02") == ["new"]
    assert await ids(gateway, since="2026-01-01T12:00:00Z") == ["new"]
    assert await ids(gateway, until="2026-01-01T14:00+02:00") == ["old"]
    assert await ids(gateway, since="1767312000") == ["new"]
    assert await ids(gateway, since="1767225600.0", until="1767312000") == ["old"]


@pytest.mark.parametrize(("params", "param"), [
    ({"limit": "ten"}, "limit"), ({"limit": "0"}, "limit"), ({"limit": "501"}, "limit"), ({"limit": "-1"}, "limit"),
    ({"since": "yesterday"}, "since"), ({"until": "2026-13-01"}, "until"), ({"since": "1e999"}, "since"),
    ({"status": "broken"}, "status"), ({"stream": "maybe"}, "stream"), ({"min_cost": "-1"}, "min_cost"),
    ({"min_cost": "nan"}, "min_cost"), ({"min_latency_ms": "fast"}, "min_latency_ms"),
    ({"cursor": "garbage"}, "cursor"), ({"order": "oldest"}, "order"), ({"totals": "perhaps"}, "totals"),
])  # fmt: skip
async def test_bad_parameters_answer_400_naming_the_parameter(
    gateway: TestClient, params: dict[str, str], param: str
) -> None:
    body = await api(gateway, expect=400, **params)
    assert body["error"]["param"] == param and body["error"]["type"] == "invalid_request_error"
    assert param in body["error"]["message"]


async def test_bad_filter_on_the_page_keeps_the_form_and_says_why(gateway: TestClient) -> None:
    resp = await gateway.get("/logs", params={"since": "yesterday", "provider": "groq", "view": "requests"})
    text = await resp.text()
    assert resp.status == 400 and resp.content_type == "text/html"
    assert "since must be an ISO 8601 time" in text and 'name="provider" value="groq"' in text


async def test_keyset_pagination_walks_newest_first_without_gaps(gateway: TestClient) -> None:
    await seed(gateway, [row(f"r{i}", ts=NOW - 100 + i) for i in range(7)])
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        body = await api(gateway, **params)
        seen += [item["id"] for item in body["items"]]
        pages += 1
        assert body["totals"]["requests"] == (7 if pages == 1 else 8)  # for the filter, not the page
        if pages == 1:  # a row logged meanwhile must not shift the pages already walked
            await seed(gateway, [row("late", ts=NOW)])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"r{i}" for i in range(6, -1, -1)] and pages == 3


async def test_totals_follow_the_filter(gateway: TestClient) -> None:
    await seed(gateway, varied_rows())
    totals = (await api(gateway))["totals"]
    assert totals["requests"] == 4
    assert totals["prompt_tokens"] == 300 and totals["completion_tokens"] == 30
    assert totals["cost_usd"] == pytest.approx(0.71)
    assert totals["error_rate"] == pytest.approx(0.25)  # a client hanging up is not an error
    groq = (await api(gateway, provider="groq"))["totals"]
    assert groq["requests"] == 2 and groq["error_rate"] == pytest.approx(0.5) and groq["cost_usd"] == 0.01


async def test_tail_poll_skips_totals_and_adds_previews(gateway: TestClient) -> None:
    await seed(gateway, [row("r1", request={"messages": [
        {"role": "system", "content": "You are a long system prompt."},
        {"role": "user", "content": "Fix   the\nflaky test"},
        {"role": "assistant", "content": "Looking."},
        {"role": "tool", "tool_call_id": "x", "content": "output"},
    ]})])  # fmt: skip
    body = await api(gateway, totals="false", preview="true")
    assert body["totals"] is None
    assert body["items"][0]["preview"] == "Fix the flaky test"  # the newest user turn, not the system prompt


# ---------------------------------------------------------------- the pages


async def test_list_page_shows_rows_totals_and_round_trips_the_filters(gateway: TestClient) -> None:
    await seed(gateway, [row(f"r{i}", ts=NOW - 100 + i, **said(f"task number {i}")) for i in range(3)])
    resp = await gateway.get("/logs", params={"provider": "openai", "limit": "2", "status": "ok", "stream": "true",
                                              "view": "requests"})
    text = await resp.text()
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    assert text.index('data-id="r2"') < text.index('data-id="r1"') and 'data-id="r0"' not in text
    assert 'name="provider" value="openai"' in text and '<option value="ok" selected>' in text
    assert '<option value="true" selected>' in text and '<input type="hidden" name="limit" value="2">' in text
    assert "<b>3</b> requests" in text and "task number 2" in text
    older = html.unescape(text.split('rel="next" href="')[1].split('"')[0])
    query = parse_qs(urlsplit(older).query)
    assert query["provider"] == ["openai"] and query["limit"] == ["2"] and query["cursor"]
    assert query["view"] == ["requests"]
    page2 = await (await gateway.get(older)).text()
    assert 'data-id="r0"' in page2 and 'data-id="r2"' not in page2 and "← newest" in page2
    assert 'id="tail" disabled' in page2  # live tail only makes sense on the newest page


async def test_search_results_show_highlighted_snippets(gateway: TestClient) -> None:
    await seed(gateway, [row("r1", **said("please refactor the wombat module"))])
    text = await (await gateway.get("/logs", params={"q": "wombat", "view": "requests"})).text()
    assert "<mark>wombat</mark>" in text and 'value="wombat"' in text and "<th>match</th>" in text


async def test_detail_page_reads_as_a_conversation(gateway: TestClient, fake_openai: FakeUpstream) -> None:
    rid = await tool_turn(gateway, fake_openai)
    await gateway.server.app[LOGSTORE].flush()
    text = await (await gateway.get(f"/logs/{rid}")).text()
    for role in ("role-system", "role-user", "role-assistant", "role-tool"):
        assert f"msg {role}" in text, role
    assert 'calls <b class="tool-name">read_file</b>' in text
    assert "{\n  &quot;path&quot;: &quot;tests&quot;,\n  &quot;recursive&quot;: true\n}" in text  # pretty JSON
    assert 'tool result for <b class="tool-name">read_file</b>' in text and "print(&#x27;quokka&#x27;)" in text
    assert 'class="msg role-assistant final"' in text and "main.py prints quokka" in text
    assert "tools offered: <code>read_file</code>" in text
    assert '<details class="raw"><summary>Raw JSON</summary>' in text
    assert "210 prompt" in text and "openai-0" in text


async def test_detail_page_shows_errors_and_partial_answers(gateway: TestClient) -> None:
    await seed(gateway, [row("e1", status="error", status_code=502, error_type="upstream_error",
                             error_message="upstream closed the stream", finish_reason=None,
                             response={"content": "Half an ans", "reasoning": "", "tool_calls": []})])  # fmt: skip
    text = await (await gateway.get("/logs/e1")).text()
    assert '<div class="error" role="alert"><b>upstream_error</b> (502): upstream closed the stream' in text
    assert "answer (partial)" in text and "Half an ans" in text


async def test_content_off_rows_say_the_conversation_was_not_stored(gateway: TestClient) -> None:
    await seed(gateway, [row("r1", request=None, response=None)])
    text = await (await gateway.get("/logs/r1")).text()
    assert "was not stored" in text and "logs.content: false" in text
    item = await (await gateway.get("/api/logs/r1")).json()
    assert item["conversation"] is None and item["usage"]["prompt_tokens"] == 100


async def test_row_text_is_escaped_everywhere(gateway: TestClient) -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    await seed(gateway, [row("x1", model=evil, key_name=evil, error_message=evil, status="error",
                             error_type=evil, request={"messages": [{"role": evil, "content": evil}]},
                             response={"content": evil, "reasoning": evil,
                                       "tool_calls": [{"id": evil, "name": evil, "arguments": evil}]})])  # fmt: skip
    pages = [await gateway.get("/logs", params={"view": "requests"}),
             await gateway.get("/logs", params={"q": "script", "view": "requests"}),
             await gateway.get("/logs/x1")]  # fmt: skip
    for resp in pages:
        text = await resp.text()
        assert "<script>alert" not in text and "<img src=x" not in text
        assert "&lt;script&gt;alert" in text
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    snippet = (await api(gateway, q="script"))["items"][0]["snippet"]
    assert "&lt;<mark>script</mark>&gt;" in snippet and "<script" not in snippet


async def test_static_assets_are_served(gateway: TestClient) -> None:
    css, js = await gateway.get("/static/logs.css"), await gateway.get("/static/logs.js")
    assert css.status == 200 and "table.rows" in await css.text()
    assert js.status == 200 and "/api/logs?" in await js.text()
    live = await gateway.get("/static/sessions.js")
    assert live.status == 200 and "DOMParser" in await live.text()
    assert css.content_type == "text/css" and js.content_type == "text/javascript"
    for name in ("nope.css", "..%2Fpages.py", "%2e%2e%2f__init__.py", "logs.css%00"):  # only the shipped files
        assert (await gateway.get(f"/static/{name}")).status == 404, name


# ---------------------------------------------------------------- access


async def test_admin_token_guards_pages_and_api(make_gateway: Any, fake_openai: FakeUpstream) -> None:
    gw = await make_gateway(gateway_yaml(fake_openai.url, "server: {admin_token: adm-tok-789}"))
    await seed(gw, [row("r1")])
    for path in ("/api/logs", "/api/logs/r1", "/api/sessions", "/api/sessions/s1"):
        resp = await gw.get(path)
        assert resp.status == 401 and (await resp.json())["error"]["code"] == "admin_token_required"
        ok = await gw.get(path, headers={"Authorization": "Bearer adm-tok-789"})
        assert ok.status == (404 if path == "/api/sessions/s1" else 200), path
    for path in ("/logs", "/logs/r1", "/logs?q=x", "/logs?view=requests", "/logs/sessions/s1"):
        resp = await gw.get(path, allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"].startswith("/login?next=/logs")
    resp = await gw.post("/login", data={"token": "adm-tok-789", "next": "/logs/r1"}, allow_redirects=False)
    assert resp.status == 303 and "HttpOnly" in resp.headers["Set-Cookie"]
    assert (await gw.get("/logs/r1")).status == 200  # the session cookie
    assert (await gw.get("/api/logs")).status == 200
    assert (await gw.get("/api/sessions")).status == 200


def test_without_a_token_only_loopback_clients_get_in() -> None:
    app = build_app(cfg.parse("{}", env={}))
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        ("10.1.2.3", 40000) if name == "peername" else default)  # fmt: skip
    async def through_access(path: str) -> None:
        request = make_mocked_request("GET", path, app=app, transport=transport)
        match = await app.router.resolve(request)
        match.add_app(app)
        request._match_info = match  # as aiohttp routes it, so the access middleware sees the mark
        await access.authenticate(request, match.handler)

    for path in ("/api/logs", "/logs", "/api/sessions", "/logs/sessions/s"):
        with pytest.raises(GatewayError) as refused:
            asyncio.run(through_access(path))
        assert refused.value.status == 403 and refused.value.code == "admin_loopback_only"


async def test_api_refuses_cross_site_browser_fetches(gateway: TestClient) -> None:
    # CORS would let any origin read an answer; a page the admin visits must not read the log
    for site, status in (("cross-site", 403), ("same-site", 403), ("same-origin", 200), ("none", 200)):
        for path in ("/api/logs", "/api/sessions"):
            resp = await gateway.get(path, headers={"Sec-Fetch-Site": site, "Origin": "https://evil.example"})
            assert resp.status == status, (site, path)
    page = await gateway.get("/logs", headers={"Sec-Fetch-Site": "cross-site"})
    assert page.status == 200  # following a link is fine: a navigation's answer is not readable cross-site
    for path in ("/logs", "/logs?view=requests", "/logs/sessions/s1", "/logs/r1"):
        # a page's HTML is readable too when fetched (the CORS answer allows any origin)
        fetched = await gateway.get(path, headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors",
                                                   "Origin": "https://evil.example"})  # fmt: skip
        assert fetched.status == 403 and "same-origin" in await fetched.text(), path
        link = await gateway.get(path, headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"})
        assert link.status in (200, 404), path
    own = await gateway.get("/logs", headers={"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"})
    assert own.status == 200  # the live page's own refresh


async def test_without_a_token_a_rebound_host_name_is_refused(make_gateway: Any, fake_openai: FakeUpstream) -> None:
    gw = await make_gateway(gateway_yaml(fake_openai.url))
    for path in ("/api/logs", "/logs", "/api/sessions", "/logs/sessions/s1"):
        resp = await gw.get(path, headers={"Host": "attacker.example:8080"})
        assert resp.status == 403 and "loopback host names" in await resp.text()
    for host in ("localhost:8080", "127.0.0.1", "[::1]:8080", "app.localhost"):
        assert (await gw.get("/api/logs", headers={"Host": host})).status == 200, host
    guarded = await make_gateway(gateway_yaml(fake_openai.url, "server: {admin_token: adm-tok-789}"))
    resp = await guarded.get("/api/logs", headers={"Host": "gw.example", "Authorization": "Bearer adm-tok-789"})
    assert resp.status == 200  # with a token, any host name may be used


# ---------------------------------------------------------------- secrets


async def test_provider_and_virtual_keys_never_reach_the_database_or_any_answer(
    make_gateway: Any, fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    provider_key, virtual_key = "sk-leak-canary-123", "vk-leak-canary-456"
    db = tmp_path / "leak.db"
    gw = await make_gateway(
        f"storage: {{path: {db}}}\nproviders:\n  openai:\n    base_url: {fake_openai.url}\n"
        f"    keys: [{{value: {provider_key}}}]\n    models: [gpt-5]\n"
    )
    auth = {"Authorization": f"Bearer {virtual_key}"}
    fake_openai.play("openai/parallel_tool_calls.sse")
    fake_openai.answer_json(ANSWER)
    fake_openai.answer_json({"error": {"message": "rate limited", "type": "rate_limit_error"}}, status=429)
    for body in ({"messages": MSGS, "tools": TOOLS, "stream": True}, {"messages": TOOL_TURN}, {"messages": MSGS}):
        resp = await gw.post(CHAT, json={"model": "openai/gpt-5", **body}, headers=auth)
        await resp.read()
    assert fake_openai.requests[0].headers["Authorization"] == f"Bearer {provider_key}"  # the canary was used
    store = gw.server.app[LOGSTORE]
    await store.flush()
    listing = await api(gw, limit=500)
    assert len(listing["items"]) == 3
    answers = [json.dumps(listing)]
    for item in listing["items"]:
        for path in (f"/api/logs/{item['id']}", f"/logs/{item['id']}"):
            answers.append(await (await gw.get(path, headers=auth)).text())
    for params in ({}, {"q": "Roo"}, {"q": "leak"}, {"status": "error"}):
        for view in ("requests", "sessions"):
            answers.append(await (await gw.get("/logs", params={**params, "view": view}, headers=auth)).text())
        answers.append(await (await gw.get("/api/logs", params={**params, "preview": "true"})).text())
        answers.append(await (await gw.get("/api/sessions", params=params)).text())
    sessions = (await api_sessions(gw))["items"]
    assert sessions and sum(s["turns"] for s in sessions) == 3
    for session in sessions:
        for path in (f"/api/sessions/{session['id']}", f"/logs/sessions/{session['id']}"):
            answers.append(await (await gw.get(path, headers=auth)).text())
    stored = stored_bytes(gw)
    assert b"src/main.py" in stored  # the check reads real content, not an empty file
    for secret in (provider_key, virtual_key):
        assert secret.encode() not in stored, f"{secret} is in the database file"
        for text in answers:
            assert secret not in text
