"""Responses API inbound, end to end with the openai SDK's ``responses`` resource.

To an OpenAI upstream: native passthrough. To a chat upstream and to Anthropic: translated.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient

from tests.fakes import FIXTURES, FakeUpstream, fixture_frames
from tests.logrows import last_row

pytestmark = pytest.mark.usefixtures("log_backend")  # every test on SQLite and on PostgreSQL

FUNCTION_TOOLS: list[Any] = [
    {"type": "function", "name": name, "description": f"{name} tool", "strict": False,
     "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}
    for name in ("read_file", "list_files")
]


@pytest.fixture
async def gw(make_gateway: Any, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream) -> TestClient:
    return await make_gateway(
        f"providers:\n"
        f"  openai: {{base_url: {fake_openai.url}, keys: [{{value: sk-oai-secret}}], models: [gpt-5]}}\n"
        f"  groq: {{base_url: {fake_openai.url}, keys: [{{value: gsk}}], models: [llama]}}\n"
        f"  anthropic: {{base_url: '{fake_anthropic.url}', keys: [{{value: sk-ant}}], models: [claude-sonnet-4-6]}}\n"
    )


@pytest.fixture
async def client(gw: TestClient) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=str(gw.make_url("/openai/v1")), api_key="vk-codex", max_retries=0) as c:
        yield c


def calls_of(response: Any) -> list[tuple[str, str, Any]]:
    return [(o.call_id, o.name, json.loads(o.arguments)) for o in response.output if o.type == "function_call"]


async def test_stream_function_calls_through_a_chat_upstream(
    gw: TestClient, client: openai.AsyncOpenAI, fake_openai: FakeUpstream
) -> None:
    fake_openai.play("openai/parallel_tool_calls.sse")
    async with client.responses.stream(
        model="groq/llama", input="Read main and list tests", tools=FUNCTION_TOOLS, instructions="Be brief.",
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    assert calls_of(final) == [("call_read_1", "read_file", {"path": "src/main.py"}),
                               ("call_list_2", "list_files", {"path": "tests", "recursive": True})]
    assert final.usage is not None and final.usage.input_tokens == 1520 and final.usage.output_tokens == 41
    assert final.usage.input_tokens_details.cached_tokens == 1024
    sent = fake_openai.last.body
    assert sent["model"] == "llama" and sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert [t["function"]["name"] for t in sent["tools"]] == ["read_file", "list_files"]
    row = await last_row(gw)
    assert row["route"] == "responses" and row["prompt_tokens"] == 1520


async def test_two_turn_tool_loop_with_function_call_output(
    client: openai.AsyncOpenAI, fake_openai: FakeUpstream
) -> None:
    fake_openai.play("openai/text_stream.sse")
    events = await client.responses.create(model="groq/llama", stream=True, tools=FUNCTION_TOOLS, input=[
        {"role": "user", "content": "read a.py"},
        {"type": "function_call", "call_id": "call_9", "name": "read_file", "arguments": '{"path": "a.py"}'},
        {"type": "function_call_output", "call_id": "call_9", "output": "print(1)"},
    ])
    text = "".join([e.delta async for e in events if e.type == "response.output_text.delta"])
    assert text == "Hello, world"
    messages = fake_openai.last.body["messages"]
    assert messages[1]["tool_calls"][0]["id"] == "call_9"
    assert messages[2] == {"role": "tool", "tool_call_id": "call_9", "content": "print(1)"}


async def test_codex_request_is_accepted_and_drops_unrunnable_tools(
    gw: TestClient, client: openai.AsyncOpenAI, fake_openai: FakeUpstream
) -> None:
    fake_openai.play("openai/parallel_tool_calls.sse")
    body = json.loads((FIXTURES / "responses/codex_first_turn.json").read_text())
    body["model"] = "groq/llama"
    resp = await gw.post("/openai/v1/responses", json=body, headers={"originator": "codex_exec"})
    assert resp.status == 200
    raw = (await resp.read()).decode()
    assert "event: response.completed" in raw and "response.function_call_arguments.done" in raw
    sent = fake_openai.last.body
    assert all(t["type"] == "function" for t in sent["tools"])
    assert not {"store", "include", "prompt_cache_key", "client_metadata"} & set(sent)
    notes = [a["note"] for a in (await last_row(gw))["attempts"] if "note" in a]
    assert any("web_search" in n for n in notes)


async def test_anthropic_upstream_translated_to_responses_events(
    client: openai.AsyncOpenAI, fake_anthropic: FakeUpstream
) -> None:
    fake_anthropic.play("anthropic/tool_use_two_calls.sse")
    async with client.responses.stream(model="anthropic/claude-sonnet-4-6", input="compare configs",
                                       tools=FUNCTION_TOOLS) as stream:
        final = await stream.get_final_response()
    assert [c[0] for c in calls_of(final)] == ["toolu_01T1x1fJ34qAmk2tNTrN7Up6", "toolu_01Wj4Kd8cE7Gf2hYv9QaZm3N"]
    assert calls_of(final)[0][2] == {"path": "config/base.yaml"}
    assert fake_anthropic.last.path == "/v1/messages"


async def test_openai_upstream_is_native_passthrough(
    gw: TestClient, client: openai.AsyncOpenAI, fake_openai: FakeUpstream
) -> None:
    fake_openai.play("openai/responses_function_call.sse")
    resp = await gw.post("/openai/v1/responses", json={
        "model": "openai/gpt-5", "stream": True, "input": "ls", "store": False,
        "include": ["reasoning.encrypted_content"], "tools": [{"type": "web_search"}, *FUNCTION_TOOLS]})
    assert await resp.read() == b"".join(fixture_frames("openai/responses_function_call.sse"))
    sent = fake_openai.last
    assert sent.path == "/v1/responses" and sent.headers["Authorization"] == "Bearer sk-oai-secret"
    assert sent.body["include"] == ["reasoning.encrypted_content"] and sent.body["model"] == "gpt-5"
    assert sent.body["tools"][0] == {"type": "web_search"}  # OpenAI runs its own hosted tools
    row = await last_row(gw)
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (3000, 30, 2048)
    assert row["response"]["tool_calls"] == [{"id": "call_exec_1", "name": "exec_command",
                                              "arguments": '{"cmd": "ls src"}'}]


async def test_store_and_previous_response_id_across_a_chat_provider(
    client: openai.AsyncOpenAI, fake_openai: FakeUpstream
) -> None:
    fake_openai.answer_json({"id": "c1", "object": "chat.completion", "model": "llama", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "The capital is Paris."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})
    first = await client.responses.create(model="groq/llama", input="Capital of France?", store=True)
    assert first.output_text == "The capital is Paris."
    second = await client.responses.create(model="groq/llama", input="And its population?",
                                           previous_response_id=first.id)
    messages = fake_openai.last.body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == "The capital is Paris." and messages[2]["content"] == "And its population?"
    fetched = await client.responses.retrieve(first.id)
    assert fetched.id == first.id and fetched.output_text == "The capital is Paris."
    await client.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(second.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="groq/llama", input="x", previous_response_id="resp_missing")


async def test_store_false_keeps_nothing(client: openai.AsyncOpenAI, fake_openai: FakeUpstream) -> None:
    fake_openai.answer_json({"id": "c1", "object": "chat.completion", "model": "llama", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]})
    response = await client.responses.create(model="groq/llama", input="hi", store=False)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)


async def test_upstream_failure_mid_stream_is_a_failed_event(
    client: openai.AsyncOpenAI, fake_openai: FakeUpstream
) -> None:
    fake_openai.play("openai/error_midstream.sse")
    events = await client.responses.create(model="groq/llama", input="hi", stream=True)
    kinds = []
    async for event in events:
        kinds.append(event.type)
        if event.type == "response.failed":
            assert "error while processing" in event.response.error.message
    assert kinds[-1] == "response.failed" and "response.output_text.delta" in kinds


async def test_bad_input_is_a_400(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.responses.create(model="groq/llama", input=[{"content": "no type or role"}])
    assert info.value.body["param"]  # type: ignore[index]
