"""Anthropic both ways, end to end with the real SDKs.

openai SDK → /openai → anthropic provider (fake Messages API);
anthropic SDK → /anthropic → anthropic provider (native passthrough) and → an OpenAI-compatible provider.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest
from aiohttp.test_utils import TestClient

from tests.fakes import FakeUpstream, fixture_frames
from tests.test_routes_openai import MSGS, TOOLS, tool_calls_of
from tests.logrows import last_row

ANT_TOOLS: list[Any] = [
    {"name": "read_file", "description": "Read a file",
     "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}},
    {"name": "list_files", "description": "List files",
     "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}},
]
MESSAGE = {
    "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Reading."},
                {"type": "tool_use", "id": "toolu_01A", "name": "read_file", "input": {"path": "a.py"}}],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 50,
              "cache_creation_input_tokens": 10},
}


@pytest.fixture
async def both(make_gateway: Any, fake_anthropic: FakeUpstream, fake_openai: FakeUpstream) -> TestClient:
    return await make_gateway(
        f"providers:\n"
        f"  anthropic: {{base_url: '{fake_anthropic.url}', keys: [{{value: sk-ant-upstream-secret}}],"
        f" models: [claude-sonnet-4-6]}}\n"
        f"  openai: {{base_url: {fake_openai.url}, keys: [{{value: sk-oai}}], models: [gpt-5]}}\n"
        "anthropic:\n  model_map: {claude-haiku-4-5-20251001: openai/gpt-5}\n"
    )


@pytest.fixture
async def ant_client(both: TestClient) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=str(both.make_url("/anthropic")), api_key="vk-claude-code", max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def oai_client(both: TestClient) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=str(both.make_url("/openai")), api_key="vk", max_retries=0) as client:
        yield client


# --- openai SDK → anthropic provider -------------------------------------------------

async def test_openai_sdk_streams_tool_calls_from_anthropic(
    both: TestClient, oai_client: openai.AsyncOpenAI, fake_anthropic: FakeUpstream
) -> None:
    fake_anthropic.play("anthropic/tool_use_two_calls.sse")
    stream = await oai_client.chat.completions.create(
        model="anthropic/claude-sonnet-4-5-20250929", messages=MSGS, tools=TOOLS, stream=True,
        stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    calls = tool_calls_of(chunks)
    assert sorted(calls) == [0, 1]
    assert calls[0]["id"] == "toolu_01T1x1fJ34qAmk2tNTrN7Up6" and calls[0]["name"] == "read_file"
    assert json.loads(calls[0]["arguments"]) == {"path": "config/base.yaml"}
    assert json.loads(calls[1]["arguments"])["path"] == "config/prod.yaml"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens == 412 + 10240 and usage.completion_tokens == 118
    assert usage.prompt_tokens_details.cached_tokens == 10240
    sent = fake_anthropic.last
    assert sent.path == "/v1/messages" and sent.headers["x-api-key"] == "sk-ant-upstream-secret"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.body["model"] == "claude-sonnet-4-5-20250929" and sent.body["stream"] is True
    assert sent.body["system"][0]["text"] == "You are Roo."
    assert [t["name"] for t in sent.body["tools"]] == ["read_file", "list_files", "attempt_completion"]
    row = await last_row(both)
    assert row["provider"] == "anthropic" and row["cached_tokens"] == 10240
    assert [c["name"] for c in row["response"]["tool_calls"]] == ["read_file", "read_file"]


async def test_openai_sdk_non_stream_from_anthropic(
    oai_client: openai.AsyncOpenAI, fake_anthropic: FakeUpstream
) -> None:
    fake_anthropic.answer_json(MESSAGE)
    result = await oai_client.chat.completions.create(
        model="anthropic/claude-sonnet-4-5-20250929", messages=MSGS, tools=TOOLS)
    msg = result.choices[0].message
    assert msg.content == "Reading." and msg.tool_calls[0].id == "toolu_01A"
    assert json.loads(msg.tool_calls[0].function.arguments) == {"path": "a.py"}
    assert result.choices[0].finish_reason == "tool_calls" and result.model == "anthropic/claude-sonnet-4-5-20250929"


async def test_thinking_becomes_reasoning_content(oai_client: openai.AsyncOpenAI, fake_anthropic: FakeUpstream) -> None:
    fake_anthropic.play("anthropic/thinking_then_text.sse")
    stream = await oai_client.chat.completions.create(
        model="anthropic/claude-sonnet-4-5-20250929", messages=MSGS, stream=True, reasoning_effort="low")
    chunks = [c async for c in stream]
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert reasoning and text


async def test_anthropic_429_keeps_retry_after_and_529_becomes_503(
    oai_client: openai.AsyncOpenAI, fake_anthropic: FakeUpstream
) -> None:
    fake_anthropic.answer_json({"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}},
                               status=429, headers={"retry-after": "12"})
    with pytest.raises(openai.RateLimitError) as info:
        await oai_client.chat.completions.create(model="anthropic/claude-sonnet-4-5-20250929", messages=MSGS)
    assert info.value.response.headers["retry-after"] == "12"
    fake_anthropic.answer_json({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
                               status=529)
    with pytest.raises(openai.InternalServerError) as info5:
        await oai_client.chat.completions.create(model="anthropic/claude-sonnet-4-5-20250929", messages=MSGS)
    assert info5.value.status_code == 503


async def test_error_event_mid_stream_reaches_openai_client(
    both: TestClient, oai_client: openai.AsyncOpenAI, fake_anthropic: FakeUpstream
) -> None:
    fake_anthropic.play("anthropic/error_overloaded.sse")
    stream = await oai_client.chat.completions.create(
        model="anthropic/claude-sonnet-4-5-20250929", messages=MSGS, stream=True)
    with pytest.raises(openai.APIError) as info:
        async for _ in stream:
            pass
    assert "Overloaded" in info.value.message
    row = await last_row(both)
    # the upstream billed the prompt before it failed: the row counts what message_start reported
    assert row["status"] == "error" and row["prompt_tokens"] == 2210
    assert "estimated" not in (row["cost_flags"] or "")


# --- anthropic SDK → /anthropic → anthropic provider (native) ----------------------------

async def test_claude_code_stream_passes_through_natively(
    both: TestClient, ant_client: anthropic.AsyncAnthropic, fake_anthropic: FakeUpstream
) -> None:
    fake_anthropic.play("anthropic/tool_use_two_calls.sse")
    async with ant_client.messages.stream(
        model="claude-sonnet-4-6", max_tokens=128000, tools=ANT_TOOLS,
        system=[{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "compare the configs"}],
        extra_headers={"anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14"},
        extra_query={"beta": "true"},
        extra_body={"context_management": {"edits": []}, "metadata": {"user_id": "u1"}},
    ) as stream:
        final = await stream.get_final_message()
    tools = [b for b in final.content if b.type == "tool_use"]
    assert [t.id for t in tools] == ["toolu_01T1x1fJ34qAmk2tNTrN7Up6", "toolu_01Wj4Kd8cE7Gf2hYv9QaZm3N"]
    assert tools[0].input == {"path": "config/base.yaml"} and final.stop_reason == "tool_use"
    sent = fake_anthropic.last
    assert sent.query == {"beta": "true"} and sent.headers["anthropic-beta"].startswith("claude-code-20250219")
    assert sent.headers["x-api-key"] == "sk-ant-upstream-secret"  # the client's key is not forwarded
    assert sent.body["context_management"] == {"edits": []} and sent.body["max_tokens"] == 128000
    row = await last_row(both)
    assert row["route"] == "messages" and row["prompt_tokens"] == 412 + 10240


async def test_native_stream_bytes_are_identical(both: TestClient, fake_anthropic: FakeUpstream) -> None:
    fake_anthropic.play("anthropic/tool_use_two_calls.sse")
    resp = await both.post("/anthropic/v1/messages", json={
        "model": "claude-sonnet-4-6", "max_tokens": 100, "stream": True,
        "messages": [{"role": "user", "content": "hi"}]})
    assert await resp.read() == b"".join(fixture_frames("anthropic/tool_use_two_calls.sse"))


async def test_native_non_stream(ant_client: anthropic.AsyncAnthropic, fake_anthropic: FakeUpstream) -> None:
    fake_anthropic.answer_json(MESSAGE)
    msg = await ant_client.messages.create(
        model="anthropic/claude-sonnet-4-6", max_tokens=50, messages=[{"role": "user", "content": "x"}])
    assert msg.content[1].type == "tool_use" and msg.content[1].input == {"path": "a.py"}


# --- anthropic SDK → /anthropic → OpenAI-compatible provider (translated) ----------------

async def test_claude_code_through_an_openai_model(
    both: TestClient, ant_client: anthropic.AsyncAnthropic, fake_openai: FakeUpstream
) -> None:
    fake_openai.play("openai/parallel_tool_calls.sse")
    async with ant_client.messages.stream(
        model="openai/gpt-5", max_tokens=4096, tools=ANT_TOOLS,
        system="You are Claude Code.",
        messages=[{"role": "user", "content": "read main"}],
        extra_body={"thinking": {"type": "adaptive"}, "output_config": {"effort": "medium"},
                    "context_management": {"edits": []}, "metadata": {"user_id": "u1"}},
    ) as stream:
        final = await stream.get_final_message()
    tools = [b for b in final.content if b.type == "tool_use"]
    assert [(t.id, t.name) for t in tools] == [("call_read_1", "read_file"), ("call_list_2", "list_files")]
    assert tools[0].input == {"path": "src/main.py"} and tools[1].input == {"path": "tests", "recursive": True}
    assert final.stop_reason == "tool_use" and final.usage.output_tokens == 41
    sent = fake_openai.last.body
    assert sent["model"] == "gpt-5" and sent["messages"][0] == {"role": "system", "content": "You are Claude Code."}
    assert "context_management" not in sent and "thinking" not in sent and "output_config" not in sent
    assert sent["tools"][0]["function"]["name"] == "read_file"


async def test_tool_result_turn_translates_for_openai(
    ant_client: anthropic.AsyncAnthropic, fake_openai: FakeUpstream
) -> None:
    fake_openai.answer_json({"id": "c", "object": "chat.completion", "model": "gpt-5", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "It prints 1."}, "finish_reason": "stop"}]})
    msg = await ant_client.messages.create(
        model="claude-haiku-4-5-20251001", max_tokens=100, tools=ANT_TOOLS,  # mapped to openai/gpt-5
        messages=[
            {"role": "user", "content": "read a.py"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_9", "name": "read_file",
                                               "input": {"path": "a.py"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "print(1)"}]},
        ],
    )
    sent = fake_openai.last.body
    assert sent["model"] == "gpt-5"
    assert sent["messages"][1]["tool_calls"][0]["id"] == "toolu_9"
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "toolu_9", "content": "print(1)"}
    assert msg.content[0].type == "text" and msg.content[0].text == "It prints 1."
    assert msg.stop_reason == "end_turn"


async def test_errors_on_the_anthropic_route_use_anthropic_shape(ant_client: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        await ant_client.messages.create(model="nope/x", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert info.value.body["type"] == "error"  # type: ignore[index]
    assert info.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "nope" in info.value.body["error"]["message"]  # type: ignore[index]


async def test_count_tokens_native_and_estimated(
    ant_client: anthropic.AsyncAnthropic, fake_anthropic: FakeUpstream
) -> None:
    fake_anthropic.answer_json({"input_tokens": 77})
    native = await ant_client.messages.count_tokens(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hello"}])
    assert native.input_tokens == 77 and fake_anthropic.last.path == "/v1/messages/count_tokens"
    estimated = await ant_client.messages.count_tokens(
        model="openai/gpt-5", messages=[{"role": "user", "content": "hello " * 100}])
    assert 100 < estimated.input_tokens < 300


async def test_anthropic_models_list(ant_client: anthropic.AsyncAnthropic) -> None:
    ids = [m.id async for m in ant_client.models.list()]
    assert ids == ["anthropic/claude-sonnet-4-6", "openai/gpt-5"]
