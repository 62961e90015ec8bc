"""Bad input gets a clear 4xx and upstream nonsense a 502, never a 500: each class through HTTP.

The classes (issue 21, item 16): JSON nested deeper than the gateway can write back, on every
route that reads JSON; invalid UTF-8 in the login form; Host headers no URL can hold; query
parameters of the wrong kind; upstream answers of the wrong shape, on every adapter (each
gets a 502 naming what was wrong, and a log row). tests/test_fuzz.py explores the same
classes with generated input.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anthropic
import openai
import pytest
from aiohttp.test_utils import TestClient

from finopsd.jsonwire import MAX_DEPTH
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream, Reply
from tests.logrows import logged_rows
from tests.test_routes_native import bedrock_events

JSON_ROUTES = (
    "/openai/chat/completions", "/v1/embeddings", "/openai/completions", "/openai/v1/responses",
    "/anthropic/v1/messages", "/anthropic/v1/messages/count_tokens", "/mcp",
    "/genai/v1beta/models/openai/gpt-5:streamGenerateContent", "/genai/v1beta/models/openai/gpt-5:countTokens",
)


def nested(depth: int, pad_kb: int = 0) -> bytes:
    """A valid request whose ``metadata`` nests ``depth`` lists deep, after ``pad_kb`` KB of prompt."""
    prompt = b"hi" + b" words" * (pad_kb * 1024 // 6)
    head = (b'{"model": "openai/gpt-5", "input": "hi", "max_tokens": 5, "messages": [{"role": "user", "content": "'
            + prompt + b'"}],')
    return head + b'"jsonrpc": "2.0", "id": 1, "method": "ping", "metadata": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(("depth", "pad_kb"), [(MAX_DEPTH + 1, 0), (300, 0), (1100, 0), (100_000, 0),
                                           (MAX_DEPTH + 1, 400)])  # an agent-sized body: walked, not counted
async def test_json_nested_too_deep_is_a_400_on_every_route(gateway: TestClient, depth: int, pad_kb: int) -> None:
    for path in JSON_ROUTES:
        resp = await gateway.post(path, data=nested(depth, pad_kb), headers={
            "Content-Type": "application/json", "Accept": "application/json, text/event-stream"})
        assert resp.status == 400, (path, depth, await resp.text())
        body = await resp.json()
        assert "nested" in json.dumps(body) or "not JSON" in json.dumps(body), (path, body)
    assert await logged_rows(gateway) == []  # refused before routing: no exchange, no row


@pytest.mark.parametrize("pad_kb", [0, 400])
async def test_json_at_the_depth_limit_is_accepted(gateway: TestClient, fake_openai: FakeUpstream,
                                                   pad_kb: int) -> None:
    fake_openai.answer_json({"id": "x", "object": "chat.completion", "model": "gpt-5", "choices": []})
    resp = await gateway.post("/openai/chat/completions", data=nested(MAX_DEPTH - 1, pad_kb),
                              headers={"Content-Type": "application/json"})
    assert resp.status == 200, await resp.text()
    assert fake_openai.last.body["metadata"] is not None


async def test_invalid_utf8_in_the_login_form_is_a_4xx(make_gateway: Any, fake_openai: FakeUpstream) -> None:
    gw = await make_gateway(gateway_yaml(fake_openai.url, "server: {admin_token: s3cret-admin}\n"))
    for body in (b"token=%ff%fe&next=/logs", b"token=\xff\xfe&next=%c3%28", b"next=/logs&token=\xc3"):
        resp = await gw.post("/login", data=body, headers={"Content-Type": "application/x-www-form-urlencoded"},
                             allow_redirects=False)
        assert 400 <= resp.status < 500, (body, resp.status)
    resp = await gw.post("/login", data=b"\xff" * 10, headers={"Content-Type": "multipart/form-data; boundary=x"},
                         allow_redirects=False)
    assert 400 <= resp.status < 500


@pytest.mark.parametrize("host", ["::1", "a, b", "[::1", "exa mple", "%zz", "[::1]:x", "h:99999999", "é.example"])
async def test_odd_host_headers_on_admin_pages_are_refused_not_crashed(gateway: TestClient, host: str) -> None:
    for path in ("/logs", "/api/logs", "/keys", "/api/keys", "/logs/x", "/api/logs/x", "/api/mcp/servers"):
        resp = await gateway.get(path, headers={"Host": host}, allow_redirects=False)
        assert resp.status < 500, (path, host, await resp.text())


async def raw_request(gw: TestClient, head: bytes, body: bytes = b"") -> bytes:
    """Bytes on the wire as a client may send them (the SDKs would have encoded the headers)."""
    reader, writer = await asyncio.open_connection(gw.server.host, gw.server.port)
    writer.write(head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


@pytest.mark.parametrize(("head", "body"), [
    (b"GET /openai/models HTTP/1.1\r\nHost: x\r\nx-api-key: \x80\xff\r\n", b""),
    (b"POST /openai/chat/completions HTTP/1.1\r\nHost: x\r\nUser-Agent: Roo\xffCode\r\n"
     b"Content-Type: application/json\r\n", b'{"model": "openai/gpt-5", "messages": []}'),
    (b"POST /anthropic/v1/messages HTTP/1.1\r\nHost: x\r\nanthropic-beta: a\xc3\r\n",
     b'{"model": "openai/gpt-5", "max_tokens": 5, "messages": []}'),
    (b"GET /api/logs HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: finopsd_admin=\xfe\r\n", b""),
])
async def test_header_values_that_are_not_utf8_are_a_400(gateway: TestClient, head: bytes, body: bytes) -> None:
    answer = await raw_request(gateway, head, body)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"UTF-8" in answer
    assert await logged_rows(gateway) == []


@pytest.mark.parametrize("query", [
    "limit=²", "limit=١٢", "limit=1e3", "limit=99999999999999999999999", "cursor=t1.0~99999999999999999999999",
    "cursor=t1e400~1", "cursor=r-1.5~-99999999999999999999", "cursor=t1.0~" + "9" * 5000, "since=9" + "9" * 400,
    "until=0001-01-01T00:00+01:00", "since=9999-12-31T23:59:59-23:59", "min_cost=1e999", "min_latency_ms=-0",
    "q=%ff%fe", "q=%00", "model=%ed%a0%80", "order=%ff", "stream=%c3", "totals=x", "preview=2",
])
async def test_odd_query_parameters_are_a_400_or_an_answer(
    gateway: TestClient, fake_openai: FakeUpstream, query: str
) -> None:
    fake_openai.answer_json({"id": "x", "object": "chat.completion", "model": "gpt-5", "choices": []})
    for _ in range(2):  # rows to page through: an empty log answers before reading the cursor
        await ask(gateway, "openai/gpt-5", stream=False)
    assert len(await logged_rows(gateway)) == 2
    for path in ("/api/logs", "/logs"):
        resp = await gateway.get(f"{path}?{query}")
        assert resp.status in (200, 400), (path, query, resp.status, await resp.text())
    resp = await gateway.get(f"/api/logs?{query}")
    if resp.status == 400:
        assert (await resp.json())["error"]["message"]


# --- upstream answers of the wrong shape, on every adapter ------------------------------------------

CHAT_SHAPES = [
    {"choices": "oops"},
    {"choices": ["oops"]},
    {"choices": [{"message": "oops"}]},
    {"choices": [{"message": {"role": "assistant", "tool_calls": "oops"}}]},
    {"choices": [{"message": {"role": "assistant", "tool_calls": ["a", "b"]}}]},
    {"choices": [{"message": {"tool_calls": [{"function": "f"}]}}]},
    {"choices": [{"message": {"role": "assistant", "content": 5}}]},
    {"choices": [], "usage": "lots"},
]
CHUNK_SHAPES = [
    {"choices": "oops"},
    {"choices": [7]},
    {"choices": [{"delta": "oops"}]},
    {"choices": [{"delta": {"tool_calls": "oops"}}]},
    {"choices": [{"delta": {"tool_calls": ["a"]}}]},
    {"choices": [{"delta": {"tool_calls": [{"index": "0", "function": {"name": "f"}}]}}]},
    {"choices": [{"delta": {"tool_calls": [{"index": [0]}]}}]},
    {"choices": [{"delta": {"content": {"text": "x"}}}]},
    {"choices": [], "usage": [1, 2]},
]


def sse(*payloads: Any) -> list[bytes]:
    return [b"data: " + json.dumps(p).encode() + b"\n\n" for p in payloads]


async def ask(gw: TestClient, model: str, *, stream: bool) -> tuple[int, str]:
    """Call the chat route with the openai SDK; the HTTP status (or 200 and the in-band error)."""
    async with openai.AsyncOpenAI(base_url=str(gw.make_url("/openai")), api_key="vk", max_retries=0) as client:
        try:
            if not stream:
                await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
                return 200, ""
            chunks = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], stream=True,
                stream_options={"include_usage": True})
            async for _ in chunks:
                pass
            return 200, ""
        except openai.APIStatusError as e:
            return e.status_code, e.message
        except openai.APIError as e:  # an in-band error event after the stream began
            return 200, e.message


async def test_openai_protocol_answers_of_the_wrong_shape_are_502_with_a_row(
    gateway: TestClient, fake_openai: FakeUpstream
) -> None:
    for shape in CHAT_SHAPES:
        fake_openai.replies[:] = [Reply(json={"id": "x", "object": "chat.completion", **shape},
                                        content_type="application/json")]
        status, message = await ask(gateway, "openai/gpt-5", stream=False)
        assert status == 502 and "unexpected shape" in message, (shape, status, message)
    for shape in CHUNK_SHAPES:
        fake_openai.replies[:] = [Reply(frames=sse({"id": "x", "object": "chat.completion.chunk", **shape}))]
        status, message = await ask(gateway, "openai/gpt-5", stream=True)
        assert status == 502 and "unexpected shape" in message, (shape, status, message)
    rows = await logged_rows(gateway)
    assert len(rows) == len(CHAT_SHAPES) + len(CHUNK_SHAPES)
    assert all(r["status"] == "error" and r["status_code"] == 502 for r in rows)


async def test_wrong_shapes_are_502_on_the_messages_route_too(gateway: TestClient, fake_openai: FakeUpstream) -> None:
    # the Messages dialect reads the canonical answer itself: a content of the wrong type must not crash it
    async with anthropic.AsyncAnthropic(base_url=str(gateway.make_url("/anthropic")), api_key="vk",
                                        max_retries=0) as client:
        for shape in CHAT_SHAPES:
            fake_openai.replies[:] = [Reply(json={"id": "x", "object": "chat.completion", **shape},
                                            content_type="application/json")]
            with pytest.raises(anthropic.APIStatusError) as refused:
                await client.messages.create(model="openai/gpt-5", max_tokens=64,
                                             messages=[{"role": "user", "content": "hi"}])
            assert refused.value.status_code == 502, (shape, refused.value.message)


def gemini_answer(candidate: Any) -> dict[str, Any]:
    return {"candidates": [candidate], "usageMetadata": {"promptTokenCount": "many"}}


# (provider config, model, non-stream bodies, stream replies) of each native protocol
NATIVE: dict[str, tuple[str, str, list[Any], list[Reply]]] = {
    "anthropic": ("anthropic: {base_url: '{url}', keys: [{value: a-key}]}", "anthropic/claude-sonnet-4-5", [
        {"type": "message", "content": "oops", "usage": {"input_tokens": "ten"}},
        {"type": "message", "content": [{"type": "tool_use", "input": 5}], "usage": [1]},
        {"type": "message", "content": [], "usage": {"input_tokens": {"n": 1}}, "stop_reason": ["x"]},
    ], [
        Reply(frames=sse({"type": "content_block_start", "index": "zero", "content_block": {"type": "tool_use"}})),
        Reply(frames=sse({"type": "message_start", "message": "oops"}, {"type": "message_delta", "usage": "x"},
                         {"type": "message_stop"})),
        Reply(frames=sse({"type": "content_block_delta", "index": [1], "delta": {"type": "input_json_delta",
                                                                                 "partial_json": "{"}})),
    ]),
    "gemini": ("gemini: {base_url: '{url}/v1beta', keys: [{value: g-key}]}", "gemini/gemini-2.5-flash", [
        gemini_answer("oops"), gemini_answer({"content": "oops"}), gemini_answer({"content": {"parts": "x"}}),
        {"candidates": "oops"},
    ], [
        Reply(frames=sse(gemini_answer({"content": {"parts": [{"functionCall": "f"}]}}))),
        Reply(frames=sse({"candidates": [{"content": {"parts": [{"text": 5}]}, "finishReason": 3}]})),
    ]),
    "cohere": ("cohere: {base_url: '{url}', keys: [{value: c-key}]}", "cohere/command-a", [
        {"message": "oops"}, {"message": {"content": "x", "tool_calls": "y"}, "usage": "z"},
        {"message": {"content": [7]}, "finish_reason": 5, "usage": {"tokens": "x"}},
    ], [
        Reply(frames=[b"event: message-start\ndata: " + json.dumps({"type": "message-start", "delta": "x"}).encode()
                      + b"\n\n"]),
        Reply(frames=sse({"type": "tool-call-start", "index": "a", "delta": {"message": {"tool_calls": "x"}}})),
        Reply(frames=sse({"type": "message-end", "delta": {"usage": "x", "finish_reason": 1}})),
    ]),
    "bedrock": ("bedrock: {base_url: '{url}', region: us-east-1, keys: [{value: b-key}]}", "bedrock/anthropic.claude",
                [{"output": "oops"}, {"output": {"message": {"content": "x"}}, "usage": "y"},
                 {"output": {"message": {"content": [{"toolUse": "x"}]}}, "stopReason": 5}], [
        Reply(content_type="application/vnd.amazon.eventstream", frames=[bedrock_events(
            ("contentBlockStart", {"contentBlockIndex": "a", "start": {"toolUse": "x"}}))]),
        Reply(content_type="application/vnd.amazon.eventstream", frames=[bedrock_events(
            ("contentBlockDelta", {"contentBlockIndex": 0, "delta": "x"}), ("metadata", {"usage": "x"}))]),
    ]),
}


@pytest.mark.parametrize("protocol", sorted(NATIVE))
async def test_native_answers_of_the_wrong_shape_are_502_or_an_answer_never_500(
    make_gateway: Any, fake_anthropic: FakeUpstream, protocol: str
) -> None:
    provider, model, bodies, replies = NATIVE[protocol]
    gw = await make_gateway("providers:\n  " + provider.replace("{url}", fake_anthropic.url) + "\n")
    for body in bodies:
        fake_anthropic.replies[:] = [Reply(json=body, content_type="application/json")]
        status, message = await ask(gw, model, stream=False)
        assert status in (200, 502), (body, status, message)
        assert status == 200 or "unexpected" in message or "invalid" in message, message
    for reply in replies:
        fake_anthropic.replies[:] = [reply]
        status, message = await ask(gw, model, stream=True)
        assert status in (200, 502), (reply.frames, status, message)
    rows = await logged_rows(gw)
    assert len(rows) == len(bodies) + len(replies)
    assert all(r["status_code"] in (200, 502) for r in rows)
