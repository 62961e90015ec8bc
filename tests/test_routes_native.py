"""Native-protocol providers end to end: the openai SDK streams a two-turn tool conversation
through /openai/chat/completions against a fake speaking each provider's wire format."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient

from finopsd.appkeys import LOGSTORE
from tests.fakes import FakeUpstream, Reply
from tests.test_routes_openai import MSGS, TOOLS, tool_calls_of


@pytest.fixture
async def fake(aiohttp_server: Any) -> FakeUpstream:
    upstream = FakeUpstream()
    upstream.url = str((await aiohttp_server(upstream.app)).make_url(""))
    return upstream


async def client_for(gw: TestClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(gw.make_url("/openai")), api_key="vk", max_retries=0)


async def turn(client: openai.AsyncOpenAI, model: str, messages: list[Any]) -> list[Any]:
    stream = await client.chat.completions.create(
        model=model, messages=messages, tools=TOOLS, stream=True, stream_options={"include_usage": True})
    return [c async for c in stream]


def second_turn(chunks: list[Any]) -> list[Any]:
    """The history a client sends back: the assistant's tool calls and one result per call."""
    calls = tool_calls_of(chunks)
    assistant = {"role": "assistant", "content": "", "tool_calls": [
        {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
        for _, c in sorted(calls.items())]}
    results = [{"role": "tool", "tool_call_id": c["id"], "content": f"contents of {json.loads(c['arguments'])['path']}"}
               for _, c in sorted(calls.items())]
    return [*MSGS, assistant, *results]


async def logged_usage(gw: TestClient) -> list[tuple[int | None, int | None]]:
    store = gw.server.app[LOGSTORE]
    await store.flush()
    items = (await store.search())["items"]
    return [(i["prompt_tokens"], i["completion_tokens"]) for i in items]


GEMINI_ANSWER = (
    b'data: {"candidates":[{"content":{"parts":[{"text":"base.yaml sets 200; prod.yaml overrides it."}],'
    b'"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":2600,'
    b'"candidatesTokenCount":12,"totalTokenCount":2612},"modelVersion":"gemini-3-pro-preview"}\r\n\r\n'
)


async def test_gemini_two_turn_tool_conversation(make_gateway: Any, fake: FakeUpstream) -> None:
    gw = await make_gateway(
        f"providers:\n  gemini: {{base_url: '{fake.url}/v1beta', keys: [{{value: g-key-secret}}]}}\n")
    fake.play("gemini/parallel_calls.sse")
    fake.add(Reply(frames=[GEMINI_ANSWER]))
    async with await client_for(gw) as client:
        first = await turn(client, "gemini/gemini-3-pro-preview", MSGS)
        calls = tool_calls_of(first)
        assert [c["name"] for _, c in sorted(calls.items())] == ["read_file", "read_file"]
        assert json.loads(calls[1]["arguments"]) == {"path": "config/prod.yaml", "limit": 200}
        assert all(c["id"] for c in calls.values()) and calls[0]["id"] != calls[1]["id"]
        assert [c.choices[0].finish_reason for c in first if c.choices and c.choices[0].finish_reason] == [
            "tool_calls"]
        assert first[-1].usage.prompt_tokens == 2210 and first[-1].usage.completion_tokens == 46 + 190
        sent1 = fake.last
        assert sent1.path == "/v1beta/models/gemini-3-pro-preview:streamGenerateContent"
        assert sent1.query == {"alt": "sse"} and sent1.headers["x-goog-api-key"] == "g-key-secret"

        second = await turn(client, "gemini/gemini-3-pro-preview", second_turn(first))
    text = "".join(c.choices[0].delta.content or "" for c in second if c.choices)
    assert text == "base.yaml sets 200; prod.yaml overrides it."
    contents = fake.last.body["contents"]
    model_turn = next(c for c in contents if c["role"] == "model")
    assert model_turn["parts"][0]["functionCall"]["args"] == {"path": "config/base.yaml"}
    assert model_turn["parts"][0]["thoughtSignature"].startswith("CiQBBTeNzABjT1wAyjZgQFjLtFX6")
    responses = [p["functionResponse"] for c in contents for p in c["parts"] if "functionResponse" in p]
    assert [r["name"] for r in responses] == ["read_file", "read_file"]
    assert (2600, 12) in await logged_usage(gw)
