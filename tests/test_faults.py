"""Upstreams that misbehave: trickled bytes, broken SSE, invalid JSON; model discovery that fails."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import openai
from aiohttp.test_utils import TestClient

from finopsd.appkeys import LOGSTORE, RUNTIME
from tests.fakes import FakeUpstream, Reply, fixture_frames
from tests.test_routes_openai import MSGS, TOOLS, tool_calls_of

CHAT = "/openai/chat/completions"


async def test_stream_trickled_byte_by_byte_is_reassembled(
    openai_client: openai.AsyncOpenAI, fake_openai: FakeUpstream
) -> None:
    raw = b"".join(fixture_frames("openai/parallel_tool_calls.sse")).replace(b"\n\n", b"\r\n\r\n")
    fake_openai.add(Reply(frames=[raw[i:i + 1] for i in range(len(raw))]))
    stream = await openai_client.chat.completions.create(
        model="openai/gpt-5", messages=MSGS, tools=TOOLS, stream=True)
    calls = tool_calls_of([c async for c in stream])
    assert calls[1]["arguments"] == '{"path": "tests", "recursive": true}'


async def test_invalid_json_event_becomes_one_error_event(gateway: TestClient, fake_openai: FakeUpstream) -> None:
    frames = fixture_frames("openai/text_stream.sse")
    fake_openai.add(Reply(frames=[frames[0], frames[1], b"data: {\"choices\": [ broken\n\n", frames[2]]))
    resp = await gateway.post(CHAT, json={"model": "openai/gpt-5", "messages": MSGS, "stream": True})
    events = [f for f in (await resp.read()).split(b"\n\n") if f]
    assert b"Hello" in events[1]
    error = json.loads(events[-1][6:])["error"]
    assert "invalid stream event" in error["message"] and len(events) == 3


async def test_non_sse_garbage_with_200_is_an_error_not_a_hang(
    gateway: TestClient, fake_openai: FakeUpstream
) -> None:
    fake_openai.add(Reply(frames=[b"<html>proxy error</html>"], content_type="text/html"))
    async with asyncio.timeout(5):
        resp = await gateway.post(CHAT, json={"model": "openai/gpt-5", "messages": MSGS, "stream": True})
    # no event ever came, so nothing was sent yet: a clear 502 instead of an empty stream
    assert resp.status == 502
    assert "ended without any event (text/html" in (await resp.json())["error"]["message"]


async def test_non_stream_invalid_json_is_502(gateway: TestClient, fake_openai: FakeUpstream) -> None:
    fake_openai.add(Reply(frames=[b"{not json"], content_type="application/json"))
    resp = await gateway.post(CHAT, json={"model": "openai/gpt-5", "messages": MSGS})
    assert resp.status == 502 and "invalid JSON" in (await resp.json())["error"]["message"]
    store = gateway.server.app[LOGSTORE]
    await store.flush()
    assert (await store.search())["totals"]["requests"] == 1


async def test_models_are_discovered_when_the_config_lists_none(
    make_gateway: Any, fake_openai: FakeUpstream
) -> None:
    gw = await make_gateway(f"providers:\n  vllm: {{base_url: {fake_openai.url}}}\n")
    async with asyncio.timeout(5):
        while not gw.server.app[RUNTIME].discovered:
            await asyncio.sleep(0.01)
    ids = [m["id"] for m in (await (await gw.get("/openai/models")).json())["data"]]
    assert ids == ["vllm/fake-model-a", "vllm/fake-model-b"] and fake_openai.models_asked == 1


async def test_failed_discovery_never_blocks(make_gateway: Any) -> None:
    gw = await make_gateway("providers:\n  vllm: {base_url: 'http://127.0.0.1:9/v1'}\n")
    resp = await gw.get("/openai/models")
    assert resp.status == 200 and (await resp.json())["data"] == []


async def test_client_leaving_before_upstream_headers_cancels_and_logs(
    gateway: TestClient, fake_openai: FakeUpstream
) -> None:
    fake_openai.add(Reply(hang=True))
    for stream in (True, False):
        task = asyncio.create_task(gateway.post(CHAT, json={"model": "openai/gpt-5", "messages": MSGS,
                                                            "stream": stream}))
        while len(fake_openai.requests) < (1 if stream else 2):
            await asyncio.sleep(0.01)
        task.cancel()  # the client gives up while the upstream has not answered
        with contextlib.suppress(asyncio.CancelledError):
            await task
    store = gateway.server.app[LOGSTORE]
    async with asyncio.timeout(5):
        while (await store.search(status="client_closed"))["totals"]["requests"] < 2:
            await store.flush()
            await asyncio.sleep(0.02)
