"""Errors before the first byte get the right status and OpenAI's shape; after it, one error event."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient

from tests.fakes import FakeUpstream, Reply, fixture_frames
from tests.test_routes_openai import MSGS

CHAT = "/openai/chat/completions"


def assert_error_shape(body: dict[str, Any]) -> dict[str, Any]:
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    return err


@pytest.mark.parametrize(
    ("payload", "status", "param", "needle"),
    [
        (b"{not json", 400, None, "not valid JSON"),
        (b"", 400, None, "empty"),
        (b"[1, 2]", 400, None, "JSON object"),
        (json.dumps({"messages": MSGS}).encode(), 400, "model", "'model'"),
        (json.dumps({"model": 5, "messages": MSGS}).encode(), 400, "model", "must be a string"),
        (json.dumps({"model": "openai/gpt-5", "messages": "hi"}).encode(), 400, "messages", "list"),
        (json.dumps({"model": "openai/gpt-5", "messages": MSGS, "stream": "yes"}).encode(), 400, "stream", "true"),
        (json.dumps({"model": "nope/x", "messages": MSGS}).encode(), 400, "model", "configured providers: groq, openai"),
    ],
)
async def test_bad_requests_are_400_with_a_clear_message(
    gateway: TestClient, payload: bytes, status: int, param: str | None, needle: str
) -> None:
    resp = await gateway.post(CHAT, data=payload, headers={"Content-Type": "application/json"})
    assert resp.status == status
    err = assert_error_shape(await resp.json())
    assert needle in err["message"] and err["param"] == param
    assert resp.headers["x-request-id"]


async def test_unknown_path_is_404_and_wrong_method_405(gateway: TestClient) -> None:
    resp = await gateway.get("/openai/nothing-here")
    assert resp.status == 404 and assert_error_shape(await resp.json())["type"] == "not_found_error"
    resp = await gateway.delete(CHAT)
    assert resp.status == 405 and "POST" in resp.headers["Allow"]
    assert_error_shape(await resp.json())


async def test_oversized_body_is_413(make_gateway: Any, fake_openai: FakeUpstream) -> None:
    gw = await make_gateway(f"server: {{max_body_mb: 0.01}}\nproviders:\n  openai: {{base_url: {fake_openai.url}}}\n")
    big = {"model": "openai/gpt-5", "messages": [{"role": "user", "content": "x" * 20_000}]}
    resp = await gw.post(CHAT, json=big)
    assert resp.status == 413
    assert "0.01 MB" in assert_error_shape(await resp.json())["message"]
    assert fake_openai.requests == []


async def test_upstream_429_keeps_status_and_retry_after(
    openai_client: openai.AsyncOpenAI, fake_openai: FakeUpstream
) -> None:
    fake_openai.answer_json(
        {"error": {"message": "Rate limit reached for gpt-5", "type": "requests", "code": "rate_limit_exceeded"}},
        status=429, headers={"Retry-After": "7"},
    )
    with pytest.raises(openai.RateLimitError) as info:
        await openai_client.chat.completions.create(model="openai/gpt-5", messages=MSGS, stream=True)
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.body["message"] == "Rate limit reached for gpt-5"  # type: ignore[index]
    assert info.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]


async def test_upstream_500_keeps_status(gateway: TestClient, fake_openai: FakeUpstream) -> None:
    fake_openai.add(Reply(status=500, frames=[b"upstream exploded"], content_type="text/plain"))
    resp = await gateway.post(CHAT, json={"model": "openai/gpt-5", "messages": MSGS})
    assert resp.status == 500
    err = assert_error_shape(await resp.json())
    assert "upstream exploded" in err["message"] and err["type"] == "server_error"


async def test_unreachable_upstream_is_502_naming_provider_not_key(make_gateway: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    gw = await make_gateway(
        f"providers:\n  openai: {{base_url: 'http://127.0.0.1:{port}/v1', keys: [{{value: sk-never-shown}}]}}\n"
    )
    resp = await gw.post(CHAT, json={"model": "openai/gpt-5", "messages": MSGS})
    text = await resp.text()
    assert resp.status == 502 and "openai is unreachable" in text and "sk-never-shown" not in text


async def test_upstream_that_hangs_is_504(gateway: TestClient, fake_openai: FakeUpstream) -> None:
    fake_openai.add(Reply(hang=True))
    # groq's first_byte timeout is 2 s in the test config
    resp = await gateway.post(CHAT, json={"model": "groq/llama-3.3-70b-versatile", "messages": MSGS})
    assert resp.status == 504
    assert assert_error_shape(await resp.json())["code"] == "upstream_timeout"


async def test_stream_stalling_mid_way_gets_one_error_event(gateway: TestClient, fake_openai: FakeUpstream) -> None:
    never = asyncio.Event()
    fake_openai.play("openai/text_stream.sse", hold_before=2, until=never)
    resp = await gateway.post(CHAT, json={"model": "groq/llama-3.3-70b-versatile", "messages": MSGS, "stream": True})
    assert resp.status == 200
    frames = [f for f in (await resp.read()).split(b"\n\n") if f]
    assert json.loads(frames[-1][len(b"data: "):])["error"]["code"] == "upstream_idle_timeout"
    assert b"[DONE]" not in b"".join(frames)


async def test_error_event_mid_stream_is_relayed_once(
    openai_client: openai.AsyncOpenAI, fake_openai: FakeUpstream
) -> None:
    fake_openai.play("openai/error_midstream.sse")
    stream = await openai_client.chat.completions.create(model="openai/gpt-5", messages=MSGS, stream=True)
    got = []
    with pytest.raises(openai.APIError) as info:
        async for chunk in stream:
            got.append(chunk)
    assert got[0].choices[0].delta.content == "Partial"
    assert "error while processing" in info.value.message


async def test_upstream_cut_mid_stream_gets_error_event(gateway: TestClient, fake_openai: FakeUpstream) -> None:
    frames = fixture_frames("openai/text_stream.sse")
    fake_openai.add(Reply(frames=frames, cut_after=2))
    resp = await gateway.post(CHAT, json={"model": "openai/gpt-5", "messages": MSGS, "stream": True})
    body = await resp.read()
    last = [f for f in body.split(b"\n\n") if f][-1]
    assert json.loads(last[len(b"data: "):])["error"]["code"] == "upstream_disconnected"


async def test_client_disconnect_cancels_the_upstream(gateway: TestClient, fake_openai: FakeUpstream) -> None:
    never = asyncio.Event()
    fake_openai.play("openai/parallel_tool_calls.sse", hold_before=3, until=never)
    resp = await gateway.post(CHAT, json={"model": "openai/gpt-5", "messages": MSGS, "stream": True})
    await resp.content.readline()  # the first event has arrived
    resp.close()  # the client hangs up
    async with asyncio.timeout(5):
        await fake_openai.closed_early.wait()


async def test_an_upstream_echoing_our_key_never_shows_it(gateway: TestClient, fake_openai: FakeUpstream) -> None:
    fake_openai.answer_json(
        {"error": {"message": "Incorrect API key provided: sk-upstream-openai-secret.", "code": "invalid_api_key"}},
        status=401)
    resp = await gateway.post(CHAT, json={"model": "openai/gpt-5", "messages": MSGS})
    text = await resp.text()
    assert resp.status == 401 and "sk-upstream-openai-secret" not in text and "[secret]" in text
