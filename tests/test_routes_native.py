"""Native-protocol providers end to end: the openai SDK streams a two-turn tool conversation
through /openai/chat/completions against a fake speaking each provider's wire format."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient

from finopsd.appkeys import LOGSTORE
from tests.fakes import FIXTURES, FakeUpstream, Reply
from tests.test_routes_openai import MSGS, TOOLS, tool_calls_of


@pytest.fixture
def fake(fake_anthropic: FakeUpstream) -> FakeUpstream:
    return fake_anthropic  # a fake at its root URL, standing in for each provider in turn


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
    results = [{"role": "tool", "tool_call_id": c["id"], "content": f"result of {c['name']} {c['arguments']}"}
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


def bedrock_events(*events: tuple[str, dict[str, Any]]) -> bytes:
    from tests.test_providers_bedrock import encode_message

    return b"".join(
        encode_message({":event-type": name, ":content-type": "application/json", ":message-type": "event"},
                       json.dumps(payload).encode())
        for name, payload in events
    )


async def test_bedrock_two_turn_tool_conversation_signed(make_gateway: Any, fake: FakeUpstream) -> None:
    from tests.test_providers_bedrock import encode

    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    gw = await make_gateway(
        f"providers:\n  bedrock: {{base_url: '{fake.url}', region: us-east-1,"
        " access_key_id: AKIDEXAMPLE, secret_access_key: wJalrXUtnFEMI-secret}\n")
    stream_type = "application/vnd.amazon.eventstream"
    fake.add(Reply(frames=[encode("parallel_tool_calls.jsonl")], content_type=stream_type))
    fake.add(Reply(content_type=stream_type, frames=[bedrock_events(
        ("messageStart", {"role": "assistant"}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "They differ in limits."}}),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        ("messageStop", {"stopReason": "end_turn"}),
        ("metadata", {"usage": {"inputTokens": 900, "outputTokens": 7, "totalTokens": 907}, "metrics": {}}),
    )]))
    async with await client_for(gw) as client:
        first = await turn(client, f"bedrock/{arn}", MSGS)
        calls = tool_calls_of(first)
        assert sorted(calls) == [0, 1] and all(c["id"] and c["name"] for c in calls.values())
        assert first[-1].usage is not None and first[-1].usage.completion_tokens > 0
        sent = fake.last
        assert sent.path.endswith("/converse-stream") and "inference-profile" in sent.path
        assert sent.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
        second = await turn(client, f"bedrock/{arn}", second_turn(first))
    assert "".join(c.choices[0].delta.content or "" for c in second if c.choices) == "They differ in limits."
    body = fake.last.body
    assert "toolConfig" in body
    results = [b["toolResult"] for m in body["messages"] for b in m["content"] if "toolResult" in b]
    assert [r["toolUseId"] for r in results] == [calls[0]["id"], calls[1]["id"]]
    assert (900, 7) in await logged_usage(gw)


COHERE_ANSWER = (
    b'event: message-start\ndata: {"type":"message-start","id":"m2","delta":{"message":{"role":"assistant"}}}\n\n'
    b'event: content-start\ndata: {"type":"content-start","index":0,"delta":{"message":{"content":'
    b'{"type":"text","text":""}}}}\n\n'
    b'event: content-delta\ndata: {"type":"content-delta","index":0,"delta":{"message":{"content":'
    b'{"text":"Found two matches."}}}}\n\n'
    b'event: content-end\ndata: {"type":"content-end","index":0}\n\n'
    b'event: message-end\ndata: {"type":"message-end","delta":{"finish_reason":"COMPLETE","usage":'
    b'{"billed_units":{"input_tokens":321,"output_tokens":4},"tokens":{"input_tokens":400,"output_tokens":4}}}}\n\n'
)


async def test_cohere_two_turn_tool_conversation(make_gateway: Any, fake: FakeUpstream) -> None:
    gw = await make_gateway(f"providers:\n  cohere: {{base_url: '{fake.url}', keys: [{{value: co-secret}}]}}\n")
    fake.play("cohere/parallel_tool_calls.sse")
    fake.add(Reply(frames=[COHERE_ANSWER]))
    async with await client_for(gw) as client:
        first = await turn(client, "cohere/command-a-03-2025", MSGS)
        calls = tool_calls_of(first)
        assert sorted(calls) == [0, 1] and all(c["id"] and c["name"] for c in calls.values())
        assert fake.last.path == "/v2/chat" and fake.last.headers["Authorization"] == "Bearer co-secret"
        second = await turn(client, "cohere/command-a-03-2025", second_turn(first))
    assert "".join(c.choices[0].delta.content or "" for c in second if c.choices) == "Found two matches."
    sent = fake.last.body["messages"]
    assert [m["tool_call_id"] for m in sent if m["role"] == "tool"] == [calls[0]["id"], calls[1]["id"]]
    assert (321, 4) in await logged_usage(gw)


async def test_replicate_streams_text_and_refuses_tools(make_gateway: Any, fake: FakeUpstream) -> None:
    gw = await make_gateway(f"providers:\n  replicate: {{base_url: '{fake.url}/v1', keys: [{{value: r8-secret}}]}}\n")
    prediction = json.loads((FIXTURES / "replicate/prediction_starting.json").read_text())
    prediction["urls"]["stream"] = f"{fake.url}/stream/abc"
    fake.answer_json(prediction, status=201)
    fake.play("replicate/stream_text.sse")
    async with await client_for(gw) as client:
        stream = await client.chat.completions.create(
            model="replicate/meta/meta-llama-3-70b-instruct", messages=MSGS, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text.startswith("Here is a haiku:") and "chestnut" in text
        assert fake.requests[0].path == "/v1/models/meta/meta-llama-3-70b-instruct/predictions"
        assert fake.last.path == "/stream/abc" and fake.last.headers["Authorization"] == "Bearer r8-secret"
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(
                model="replicate/meta/meta-llama-3-70b-instruct", messages=MSGS, tools=TOOLS)
    assert "tool" in info.value.message


async def test_vertex_gemini_and_claude_two_turn_tool_conversations(make_gateway: Any, fake: FakeUpstream) -> None:
    # a key in `keys` is used as a ready OAuth access token (the service-account path is tested in
    # test_providers_vertex.py against a fake token endpoint)
    gw = await make_gateway(
        f"providers:\n  vertex: {{base_url: '{fake.url}', project: proj-1, location: us-east5,"
        " keys: [{value: ya29.token-secret}]}\n")
    fake.play("gemini/parallel_calls.sse")
    fake.add(Reply(frames=[GEMINI_ANSWER]))
    fake.play("anthropic/tool_use_two_calls.sse")
    fake.play("anthropic/thinking_then_text.sse")
    base = "/v1/projects/proj-1/locations/us-east5/publishers"
    async with await client_for(gw) as client:
        first = await turn(client, "vertex/gemini-3-pro-preview", MSGS)
        assert fake.last.path == f"{base}/google/models/gemini-3-pro-preview:streamGenerateContent"
        assert fake.last.headers["Authorization"] == "Bearer ya29.token-secret"
        second = await turn(client, "vertex/gemini-3-pro-preview", second_turn(first))
        assert "".join(c.choices[0].delta.content or "" for c in second if c.choices).startswith("base.yaml")
        claude = await turn(client, "vertex/claude-sonnet-4-5@20250929", MSGS)
        calls = tool_calls_of(claude)
        assert [c["id"] for _, c in sorted(calls.items())] == [
            "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "toolu_01Wj4Kd8cE7Gf2hYv9QaZm3N"]
        assert fake.last.path == f"{base}/anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict"
        assert fake.last.body["anthropic_version"] == "vertex-2023-10-16" and "model" not in fake.last.body
        await turn(client, "vertex/claude-sonnet-4-5@20250929", second_turn(claude))
    results = [b for m in fake.last.body["messages"] for b in m["content"] if b.get("type") == "tool_result"]
    assert [r["tool_use_id"] for r in results] == [calls[0]["id"], calls[1]["id"]]


async def test_mistral_gets_nine_character_tool_ids(make_gateway: Any, fake: FakeUpstream) -> None:
    gw = await make_gateway(f"providers:\n  mistral: {{base_url: '{fake.url}/v1', keys: [{{value: m-secret}}]}}\n")
    fake.answer_json({"id": "x", "object": "chat.completion", "model": "mistral-large-latest", "choices": []})
    history = [*MSGS,
               {"role": "assistant", "content": "", "tool_calls": [
                   {"id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
                    "function": {"name": "read_file", "arguments": "{}"}},
                   {"id": "Ab3dE6gH9", "type": "function", "function": {"name": "read_file", "arguments": "{}"}}]},
               {"role": "tool", "tool_call_id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "content": "x"},
               {"role": "tool", "tool_call_id": "Ab3dE6gH9", "content": "y"}]
    async with await client_for(gw) as client:
        await client.chat.completions.create(model="mistral/mistral-large-latest", messages=history)
    sent = fake.last.body["messages"]
    ids = [c["id"] for c in sent[2]["tool_calls"]]
    assert all(len(i) == 9 and i.isalnum() for i in ids) and ids[1] == "Ab3dE6gH9"
    assert [m["tool_call_id"] for m in sent[3:]] == ids


@pytest.mark.parametrize(("extra", "path", "query"), [
    ("", "/openai/v1/chat/completions", {}),
    (", api_version: '2024-10-21'", "/openai/deployments/gpt-5-prod/chat/completions", {"api-version": "2024-10-21"}),
])
async def test_azure_v1_and_deployment_urls_use_api_key_header(
    make_gateway: Any, fake: FakeUpstream, extra: str, path: str, query: dict[str, str]
) -> None:
    base = f"{fake.url}/openai/v1" if not extra else f"{fake.url}/openai"
    gw = await make_gateway(
        f"providers:\n  azure: {{base_url: '{base}', keys: [{{value: az-secret}}]{extra}, models: [gpt-5-prod]}}\n")
    fake.play("openai/parallel_tool_calls.sse")
    async with await client_for(gw) as client:
        calls = tool_calls_of(await turn(client, "azure/gpt-5-prod", MSGS))
    assert calls[1]["name"] == "list_files"
    assert fake.last.path == path and fake.last.query == query
    assert fake.last.headers["api-key"] == "az-secret" and "Authorization" not in fake.last.headers
