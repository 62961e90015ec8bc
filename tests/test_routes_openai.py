"""End to end: the openai SDK → finopsd → a fake OpenAI-compatible upstream."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient

from tests.fakes import FakeUpstream, fixture_frames

MSGS: list[Any] = [
    {"role": "system", "content": "You are Roo.", "cache_control": {"type": "ephemeral"}},
    {"role": "user", "content": "Read src/main.py and list tests."},
]
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name} tool",
            "strict": True,
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
                "additionalProperties": False,
            },
        },
    }
    for name in ("read_file", "list_files", "attempt_completion")
]


def tool_calls_of(chunks: list[Any]) -> dict[int, dict[str, str]]:
    """Reassemble streamed tool calls by index, as Roo Code does."""
    calls: dict[int, dict[str, str]] = {}
    for c in chunks:
        for choice in c.choices:
            for tc in choice.delta.tool_calls or ():
                call = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                if tc.id:
                    call["id"] = call["id"] or tc.id
                if tc.function and tc.function.name:
                    call["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    call["arguments"] += tc.function.arguments
    return calls


def first_deltas(chunks: list[Any]) -> list[Any]:
    seen: set[int] = set()
    out = []
    for c in chunks:
        for choice in c.choices:
            for tc in choice.delta.tool_calls or ():
                if tc.index not in seen:
                    seen.add(tc.index)
                    out.append(tc)
    return out


async def collect(stream: Any) -> list[Any]:
    return [chunk async for chunk in stream]


async def test_stream_parallel_tool_calls_arrive_intact(
    openai_client: openai.AsyncOpenAI, fake_openai: FakeUpstream
) -> None:
    fake_openai.play("openai/parallel_tool_calls.sse")
    stream = await openai_client.chat.completions.create(
        model="openai/gpt-5", messages=MSGS, tools=TOOLS, stream=True,
        stream_options={"include_usage": True}, tool_choice="auto", parallel_tool_calls=True,
    )
    chunks = await collect(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert tool_calls_of(chunks) == {
        0: {"id": "call_read_1", "name": "read_file", "arguments": '{"path": "src/main.py"}'},
        1: {"id": "call_list_2", "name": "list_files", "arguments": '{"path": "tests", "recursive": true}'},
    }
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == 1024
    assert {c.model for c in chunks} == {"openai/gpt-5"}
    # the upstream got the model without prefix, our key, the client's fields untouched
    sent = fake_openai.last
    assert sent.path == "/v1/chat/completions"
    assert sent.body["model"] == "gpt-5"
    assert sent.headers["Authorization"] == "Bearer sk-upstream-openai-secret"
    assert sent.body["messages"] == MSGS and sent.body["tools"] == TOOLS
    assert sent.body["parallel_tool_calls"] is True


async def test_each_first_tool_delta_has_index_id_type_and_name(
    openai_client: openai.AsyncOpenAI, fake_openai: FakeUpstream
) -> None:
    fake_openai.play("openai/tool_call_quirks.sse")
    stream = await openai_client.chat.completions.create(
        model="groq/llama-3.3-70b-versatile", messages=MSGS, tools=TOOLS, stream=True
    )
    chunks = await collect(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    (first,) = first_deltas(chunks)
    assert first.index == 0 and first.id and first.id.startswith("call_")
    assert first.type == "function" and first.function.name == "attempt_completion"
    # the trailing repeat of the whole call is dropped, so the arguments stay valid JSON
    calls = tool_calls_of(chunks)
    assert json.loads(calls[0]["arguments"]) == {"result": "done"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_usage_chunk_only_when_asked(openai_client: openai.AsyncOpenAI, fake_openai: FakeUpstream) -> None:
    fake_openai.play("openai/text_stream.sse")
    chunks = await collect(
        await openai_client.chat.completions.create(model="groq/llama-3.3-70b-versatile", messages=MSGS, stream=True)
    )
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello, world"
    # the upstream was still asked for usage
    assert fake_openai.last.body["stream_options"] == {"include_usage": True}


async def test_unchanged_chunks_pass_through_with_only_the_model_renamed(
    gateway: TestClient, fake_openai: FakeUpstream
) -> None:
    fake_openai.play("openai/text_stream.sse")
    resp = await gateway.post(
        "/v1/chat/completions",
        json={"model": "groq/llama-3.3-70b-versatile", "messages": MSGS, "stream": True,
              "stream_options": {"include_usage": True}},
    )
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    body = await resp.read()
    expected = b"".join(fixture_frames("openai/text_stream.sse")).replace(
        b'"model":"llama-3.3-70b-versatile"', b'"model":"groq/llama-3.3-70b-versatile"'
    )
    assert body == expected


async def test_non_stream_passes_body_with_model_rewritten(
    openai_client: openai.AsyncOpenAI, fake_openai: FakeUpstream
) -> None:
    fake_openai.answer_json({
        "id": "chatcmpl-9", "object": "chat.completion", "created": 1, "model": "gpt-5-2025-08-07",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None,
            "tool_calls": [{"id": "call_a", "type": "function",
                            "function": {"name": "read_file", "arguments": "{\"path\":\"a\"}"}}]}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
        "system_fingerprint": "fp_x",
    })
    result = await openai_client.chat.completions.create(model="openai/gpt-5", messages=MSGS, tools=TOOLS)
    assert result.model == "openai/gpt-5"
    assert result.choices[0].message.tool_calls[0].function.arguments == '{"path":"a"}'
    assert result.system_fingerprint == "fp_x"
    assert result.usage.total_tokens == 12


@pytest.mark.parametrize("prefix", ["/openai", "/openai/v1", "/v1"])
async def test_all_three_prefixes_route_chat_and_models(
    gateway: TestClient, fake_openai: FakeUpstream, prefix: str
) -> None:
    fake_openai.answer_json({"id": "x", "object": "chat.completion", "model": "gpt-5", "choices": []})
    resp = await gateway.post(f"{prefix}/chat/completions", json={"model": "openai/gpt-5", "messages": MSGS})
    assert resp.status == 200 and (await resp.json())["model"] == "openai/gpt-5"
    models = await (await gateway.get(f"{prefix}/models")).json()
    assert {m["id"] for m in models["data"]} == {"openai/gpt-5", "groq/llama-3.3-70b-versatile"}


async def test_models_with_trailing_slash_base_url(gateway: TestClient) -> None:
    resp = await gateway.get("/openai//models")
    assert resp.status == 200 and (await resp.json())["object"] == "list"


async def test_models_listed_by_the_sdk(openai_client: openai.AsyncOpenAI) -> None:
    ids = [m.id async for m in openai_client.models.list()]
    assert sorted(ids) == ["groq/llama-3.3-70b-versatile", "openai/gpt-5"]


async def test_unknown_request_fields_reach_the_upstream(
    gateway: TestClient, fake_openai: FakeUpstream
) -> None:
    fake_openai.answer_json({"id": "x", "object": "chat.completion", "model": "m", "choices": []})
    await gateway.post("/openai/chat/completions", json={
        "model": "openai/gpt-5", "messages": MSGS, "reasoning_effort": "high", "x_vendor": {"a": 1},
        "max_completion_tokens": 9})
    body = fake_openai.last.body
    assert body["reasoning_effort"] == "high" and body["x_vendor"] == {"a": 1}
    assert body["max_completion_tokens"] == 9


async def test_model_with_more_slashes_keeps_the_rest(
    make_gateway: Any, fake_openai: FakeUpstream
) -> None:
    gw = await make_gateway(f"providers:\n  openrouter: {{base_url: {fake_openai.url}}}\n")
    fake_openai.answer_json({"id": "x", "object": "chat.completion", "model": "m", "choices": []})
    resp = await gw.post("/openai/chat/completions",
                         json={"model": "openrouter/meta-llama/llama-3.3-70b", "messages": MSGS})
    assert resp.status == 200
    assert fake_openai.last.body["model"] == "meta-llama/llama-3.3-70b"
    assert "Authorization" not in fake_openai.last.headers  # keyless provider, client key not forwarded


async def test_bare_name_goes_through_alias(make_gateway: Any, fake_openai: FakeUpstream) -> None:
    gw = await make_gateway(
        f"providers:\n  openai: {{base_url: {fake_openai.url}}}\n  groq: {{base_url: {fake_openai.url}}}\n"
        "aliases:\n  fast: groq/llama-3.3-70b-versatile\n"
    )
    fake_openai.answer_json({"id": "x", "object": "chat.completion", "model": "m", "choices": []})
    resp = await gw.post("/openai/chat/completions", json={"model": "fast", "messages": MSGS})
    assert resp.status == 200 and (await resp.json())["model"] == "fast"
    assert fake_openai.last.body["model"] == "llama-3.3-70b-versatile"
    resp = await gw.post("/openai/chat/completions", json={"model": "gpt-5", "messages": MSGS})
    err = (await resp.json())["error"]
    assert resp.status == 400 and "groq, openai" in err["message"] and err["param"] == "model"


async def test_bare_name_with_one_provider_goes_there(make_gateway: Any, fake_openai: FakeUpstream) -> None:
    gw = await make_gateway(f"providers:\n  vllm: {{base_url: {fake_openai.url}, models: [qwen3-coder]}}\n")
    fake_openai.answer_json({"id": "x", "object": "chat.completion", "model": "m", "choices": []})
    resp = await gw.post("/openai/chat/completions", json={"model": "qwen3-coder", "messages": MSGS})
    assert resp.status == 200 and fake_openai.last.body["model"] == "qwen3-coder"


async def test_chunks_flow_before_upstream_finishes(
    openai_client: openai.AsyncOpenAI, fake_openai: FakeUpstream
) -> None:
    gate = asyncio.Event()
    fake_openai.play("openai/parallel_tool_calls.sse", hold_before=5, until=gate)
    chunks = []
    async with asyncio.timeout(10):  # a hang guard, not a speed claim
        stream = await openai_client.chat.completions.create(
            model="openai/gpt-5", messages=MSGS, tools=TOOLS, stream=True)
        async for chunk in stream:
            chunks.append(chunk)
            gate.set()
    assert len(tool_calls_of(chunks)) == 2


async def test_embeddings_and_completions_pass_through(
    openai_client: openai.AsyncOpenAI, fake_openai: FakeUpstream
) -> None:
    fake_openai.answer_json({"object": "list", "model": "text-embedding-3-small",
                             "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -0.25]}],
                             "usage": {"prompt_tokens": 2, "total_tokens": 2}})
    emb = await openai_client.embeddings.create(model="openai/text-embedding-3-small", input="hi",
                                                encoding_format="float")
    assert emb.data[0].embedding == [0.5, -0.25] and emb.model == "openai/text-embedding-3-small"
    assert fake_openai.last.path == "/v1/embeddings" and fake_openai.last.body["model"] == "text-embedding-3-small"
    fake_openai.answer_json({"id": "c", "object": "text_completion", "created": 1, "model": "gpt-3.5-turbo-instruct",
                             "choices": [{"index": 0, "text": "42", "finish_reason": "stop", "logprobs": None}]})
    comp = await openai_client.completions.create(model="openai/gpt-3.5-turbo-instruct", prompt="6*7=")
    assert comp.choices[0].text == "42" and fake_openai.last.path == "/v1/completions"
