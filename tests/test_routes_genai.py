"""The Gemini API route end to end, with the real google-genai SDK as the client.

google-genai → /genai → the gemini provider (native passthrough: the body and the events go
through as they are) and → OpenAI-protocol and Anthropic providers (translated both ways),
against fakes speaking each provider's wire format.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from google import genai
from google.genai import errors, types

from tests.fakes import FIXTURES, FakeUpstream, Reply
from tests.logrows import last_row, logged_rows

GEMINI_KEY = "AIza-upstream-gemini-secret"
PRICING = ("pricing:\n  gemini/*: {input: 2, output: 12}\n  openai/gpt-5: {input: 1.25, output: 10}\n"
           "  anthropic/*: {input: 3, output: 15}\n")
TOOLS = [types.Tool(function_declarations=[
    types.FunctionDeclaration(name="read_file", description="Read a file", parameters_json_schema={
        "type": "object", "properties": {"path": {"type": "string"}, "limit": {"type": "integer"}},
        "required": ["path"]}),
    types.FunctionDeclaration(name="list_files", description="List files", parameters_json_schema={
        "type": "object", "properties": {"path": {"type": "string"}, "recursive": {"type": "boolean"}}}),
])]
ASK = "compare config/base.yaml and config/prod.yaml"


def gemini_cli_body() -> dict[str, Any]:
    """A first turn shaped as Gemini CLI 0.61 sends it to gemini-2.5-pro: a 24 kB system instruction,
    16 function declarations in ``parametersJsonSchema``, ``thinkingBudget`` 8192 with thoughts."""
    return json.loads((FIXTURES / "genai" / "gemini_cli_request.json").read_text())


@pytest.fixture
async def fake_gemini(aiohttp_server: Any) -> FakeUpstream:
    fake = FakeUpstream()
    fake.url = str((await aiohttp_server(fake.app)).make_url(""))
    return fake


def config_yaml(gemini: FakeUpstream, openai: FakeUpstream, anthropic: FakeUpstream, extra: str = "") -> str:
    return (
        "providers:\n"
        f"  gemini: {{base_url: '{gemini.url}/v1beta', keys: [{{value: {GEMINI_KEY}}}],"
        " models: [gemini-3-pro-preview, gemini-2.5-flash]}\n"
        f"  openai: {{base_url: '{openai.url}', keys: [{{value: sk-oai-upstream}}], models: [gpt-5]}}\n"
        f"  anthropic: {{base_url: '{anthropic.url}', keys: [{{value: sk-ant-upstream}}],"
        " models: [claude-sonnet-4-6]}\n"
        "gemini:\n  model_map: {gemini-2.5-flash-lite: openai/gpt-5}\n" + PRICING + extra
    )


@pytest.fixture
async def gw(make_gateway: Any, fake_gemini: FakeUpstream, fake_openai: FakeUpstream,
             fake_anthropic: FakeUpstream) -> TestClient:
    return await make_gateway(config_yaml(fake_gemini, fake_openai, fake_anthropic))


def sdk(gateway: TestClient, key: str = "vk-gemini-cli") -> genai.Client:
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=str(gateway.make_url("/genai"))))


@pytest.fixture
async def client(gw: TestClient) -> AsyncIterator[genai.Client]:
    c = sdk(gw)
    yield c
    await c.aio.aclose()


async def stream_turn(client: genai.Client, model: str, contents: Any,
                      config: types.GenerateContentConfig | None = None) -> list[types.GenerateContentResponse]:
    config = config or types.GenerateContentConfig(tools=TOOLS)
    return [r async for r in await client.aio.models.generate_content_stream(
        model=model, contents=contents, config=config)]


def parts_of(responses: list[types.GenerateContentResponse]) -> list[types.Part]:
    return [p for r in responses if r.candidates for p in r.candidates[0].content.parts or []]


def calls_of(responses: list[types.GenerateContentResponse]) -> list[types.FunctionCall]:
    return [p.function_call for p in parts_of(responses) if p.function_call]


def text_of(responses: list[types.GenerateContentResponse]) -> str:
    return "".join(p.text for p in parts_of(responses) if p.text and not p.thought)


def finish_reasons(responses: list[types.GenerateContentResponse]) -> list[Any]:
    return [r.candidates[0].finish_reason for r in responses if r.candidates and r.candidates[0].finish_reason]


def data_lines(raw: bytes) -> list[bytes]:
    """The ``data:`` payloads of an SSE body, whatever its line endings."""
    return [line[6:] for line in raw.replace(b"\r\n", b"\n").split(b"\n") if line.startswith(b"data: ")]


def next_turn(first: list[types.GenerateContentResponse], ask: str = ASK) -> list[types.Content]:
    """What a client sends back: its question, the model's calls, one functionResponse per call."""
    calls = calls_of(first)
    return [
        types.Content(role="user", parts=[types.Part(text=ask)]),
        types.Content(role="model", parts=[types.Part(function_call=c) for c in calls]),
        types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
            id=c.id, name=c.name, response={"output": f"contents of {c.args['path']}"})) for c in calls]),
    ]


# --- native: the gemini provider ------------------------------------------------------------

async def test_native_stream_keeps_every_field_and_thought_signatures(
    gw: TestClient, client: genai.Client, fake_gemini: FakeUpstream
) -> None:
    fake_gemini.play("gemini/parallel_calls.sse")
    config = types.GenerateContentConfig(
        system_instruction="You are Gemini CLI.", tools=[*TOOLS, types.Tool(google_search=types.GoogleSearch())],
        tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="AUTO")),
        thinking_config=types.ThinkingConfig(include_thoughts=True, thinking_level="HIGH"),
        safety_settings=[types.SafetySetting(category="HARM_CATEGORY_HARASSMENT", threshold="BLOCK_NONE")],
        response_mime_type="text/plain", temperature=1, top_k=64, cached_content="cachedContents/abc")
    responses = await stream_turn(client, "gemini-3-pro-preview", ASK, config)
    calls = calls_of(responses)
    assert [(c.name, c.args["path"]) for c in calls] == [("read_file", "config/base.yaml"),
                                                          ("read_file", "config/prod.yaml")]
    signed = [p for p in parts_of(responses) if p.thought_signature]
    assert len(signed) == 1 and signed[0].function_call.args["path"] == "config/base.yaml"
    assert responses[-1].usage_metadata.prompt_token_count == 2210
    sent = fake_gemini.last
    assert sent.path == "/v1beta/models/gemini-3-pro-preview:streamGenerateContent" and sent.query == {"alt": "sse"}
    assert sent.headers["x-goog-api-key"] == GEMINI_KEY  # ours, not the client's
    assert sent.body["generationConfig"]["thinkingConfig"] == {"include_thoughts": True, "thinking_level": "HIGH"}
    assert sent.body["generationConfig"]["topK"] == 64 and sent.body["cachedContent"] == "cachedContents/abc"
    assert {"googleSearch": {}} in sent.body["tools"] and sent.body["safetySettings"][0]["threshold"] == "BLOCK_NONE"
    assert sent.body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    row = await last_row(gw)
    assert (row["route"], row["provider"], row["model"]) == ("genai", "gemini", "gemini-3-pro-preview")
    assert row["prompt_tokens"] == 2210 and row["cost_usd"] > 0
    assert [c["name"] for c in row["response"]["tool_calls"]] == ["read_file", "read_file"]
    assert row["request"]["messages"][0] == {"role": "system", "content": "You are Gemini CLI."}


async def test_native_sse_bytes_are_the_upstreams(gw: TestClient, fake_gemini: FakeUpstream) -> None:
    fake_gemini.play("gemini/parallel_calls.sse")
    resp = await gw.post("/genai/v1beta/models/gemini-3-pro-preview:streamGenerateContent?alt=sse",
                         json=gemini_cli_body(), headers={"x-goog-api-key": "vk"})
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    fixture = (FIXTURES / "gemini" / "parallel_calls.sse").read_bytes()  # Gemini's CRLF framing
    assert await resp.read() == fixture and len(data_lines(fixture)) == 3
    assert fake_gemini.last.body == gemini_cli_body()  # the client's body, as it came


async def test_native_stream_without_alt_is_one_json_array(gw: TestClient, fake_gemini: FakeUpstream) -> None:
    fake_gemini.play("gemini/text_stream.sse")
    resp = await gw.post("/genai/v1/models/gemini-2.5-flash:streamGenerateContent", json={
        "contents": [{"role": "user", "parts": [{"text": "what does parse_config do?"}]}]})
    assert resp.headers["Content-Type"].startswith("application/json")
    events = json.loads(await resp.read())
    expected = [json.loads(d) for d in data_lines((FIXTURES / "gemini" / "text_stream.sse").read_bytes())]
    assert events == expected and fake_gemini.last.query == {"alt": "sse"}
    row = await last_row(gw)
    assert row["response"]["content"].startswith("The `parse_config` function") and row["cached_tokens"] == 1024


async def test_native_non_stream(gw: TestClient, client: genai.Client, fake_gemini: FakeUpstream) -> None:
    answer = {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "list_files", "args": {"path": "src"}}, "thoughtSignature": "c2lnbmVk"}]},
        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 50, "candidatesTokenCount": 7, "totalTokenCount": 57},
        "modelVersion": "gemini-2.5-flash", "responseId": "r-1"}
    fake_gemini.answer_json(answer)
    result = await client.aio.models.generate_content(model="gemini/gemini-2.5-flash", contents="list src",
                                                       config=types.GenerateContentConfig(tools=TOOLS))
    part = result.candidates[0].content.parts[0]
    assert part.function_call.args == {"path": "src"} and part.thought_signature == b"signed"
    assert fake_gemini.last.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    row = await last_row(gw)
    assert row["prompt_tokens"] == 50 and row["completion_tokens"] == 7 and not row["stream"]


async def test_native_error_mid_stream_reaches_the_sdk(gw: TestClient, client: genai.Client,
                                                       fake_gemini: FakeUpstream) -> None:
    fake_gemini.play("gemini/error_midstream.sse")
    with pytest.raises(errors.ServerError) as info:
        await stream_turn(client, "gemini-2.5-flash", "hi")
    assert info.value.code == 503 and info.value.status == "UNAVAILABLE" and "overloaded" in info.value.message
    row = await last_row(gw)
    assert row["status"] == "error" and "overloaded" in row["error_message"]
    assert row["response"]["content"] == "Let me check"


async def test_native_upstream_error_keeps_status_in_google_shape(client: genai.Client,
                                                                  fake_gemini: FakeUpstream) -> None:
    fake_gemini.answer_json({"error": {"code": 400, "message": "User location is not supported for the API use.",
                                       "status": "FAILED_PRECONDITION"}}, status=400)
    with pytest.raises(errors.ClientError) as info:
        await client.aio.models.generate_content(model="gemini-2.5-flash", contents="x")
    assert info.value.code == 400 and info.value.status == "FAILED_PRECONDITION"
    assert "User location is not supported" in info.value.message


# --- translated: OpenAI-protocol and Anthropic providers ---------------------------------------

async def first_turn(client: genai.Client, fake: FakeUpstream, fixture: str,
                     model: str) -> tuple[list[types.GenerateContentResponse], list[types.FunctionCall]]:
    fake.play(fixture)
    first = await stream_turn(client, model, ASK)
    return first, calls_of(first)


async def test_two_turn_parallel_calls_through_an_openai_model(
    gw: TestClient, client: genai.Client, fake_openai: FakeUpstream
) -> None:
    first, calls = await first_turn(client, fake_openai, "openai/parallel_tool_calls.sse", "openai/gpt-5")
    assert [(c.id, c.name) for c in calls] == [("call_read_1", "read_file"), ("call_list_2", "list_files")]
    assert calls[0].args == {"path": "src/main.py"} and calls[1].args == {"path": "tests", "recursive": True}
    assert finish_reasons(first) == [types.FinishReason.STOP]
    assert first[-1].usage_metadata.total_token_count > 0
    sent = fake_openai.last.body
    assert sent["model"] == "gpt-5" and sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert [t["function"]["name"] for t in sent["tools"]] == ["read_file", "list_files"]
    assert sent["tools"][0]["function"]["parameters"]["required"] == ["path"]

    fake_openai.answer_json({"id": "c2", "object": "chat.completion", "model": "gpt-5", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "prod overrides log_level."},
         "finish_reason": "stop"}], "usage": {"prompt_tokens": 90, "completion_tokens": 6, "total_tokens": 96}})
    second = await client.aio.models.generate_content(model="openai/gpt-5", contents=next_turn(first),
                                                       config=types.GenerateContentConfig(tools=TOOLS))
    assert second.text == "prod overrides log_level." and second.usage_metadata.prompt_token_count == 90
    messages = fake_openai.last.body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool"]
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["call_read_1", "call_list_2"]
    assert [(m["tool_call_id"], m["content"]) for m in messages[2:]] == [
        ("call_read_1", "contents of src/main.py"), ("call_list_2", "contents of tests")]
    rows = await logged_rows(gw)
    assert [r["provider"] for r in rows] == ["openai", "openai"] and all(r["cost_usd"] > 0 for r in rows)


async def test_two_turn_parallel_calls_through_an_anthropic_model(
    gw: TestClient, client: genai.Client, fake_anthropic: FakeUpstream
) -> None:
    first, calls = await first_turn(client, fake_anthropic, "anthropic/tool_use_two_calls.sse",
                                    "anthropic/claude-sonnet-4-6")
    assert [c.id for c in calls] == ["toolu_01T1x1fJ34qAmk2tNTrN7Up6", "toolu_01Wj4Kd8cE7Gf2hYv9QaZm3N"]
    assert [c.args["path"] for c in calls] == ["config/base.yaml", "config/prod.yaml"]
    assert first[-1].usage_metadata.prompt_token_count == 412 + 10240
    assert first[-1].usage_metadata.cached_content_token_count == 10240
    fake_anthropic.play("anthropic/thinking_then_text.sse")
    second = await stream_turn(client, "anthropic/claude-sonnet-4-6", next_turn(first), types.GenerateContentConfig(
        tools=TOOLS, thinking_config=types.ThinkingConfig(include_thoughts=True, thinking_budget=4096)))
    assert text_of(second) and any(p.thought for p in parts_of(second))
    sent = fake_anthropic.last.body
    results = sent["messages"][2]["content"]
    assert [(b["type"], b["tool_use_id"]) for b in results] == [("tool_result", calls[0].id),
                                                                ("tool_result", calls[1].id)]
    row = await last_row(gw)
    assert row["provider"] == "anthropic" and row["response"]["reasoning"]


async def test_gemini_cli_body_translates_for_openai(gw: TestClient, fake_openai: FakeUpstream) -> None:
    fake_openai.play("openai/text_stream.sse")
    body = gemini_cli_body()
    body["tools"].append({"googleSearch": {}})
    resp = await gw.post("/genai/v1beta/models/gemini-2.5-flash-lite:streamGenerateContent?alt=sse", json=body,
                         headers={"x-goog-api-key": "vk"})  # mapped to openai/gpt-5 by gemini.model_map
    events = [json.loads(line[6:]) for line in (await resp.text()).splitlines() if line.startswith("data: ")]
    assert events[-2]["candidates"][0]["finishReason"] == "STOP" and "usageMetadata" in events[-1]
    assert "".join(p.get("text", "") for e in events[:-1] for p in e["candidates"][0]["content"]["parts"])
    sent = fake_openai.last.body
    assert sent["model"] == "gpt-5" and sent["reasoning_effort"] == "medium"
    assert sent["temperature"] == 1 and sent["top_p"] == 0.95 and "top_k" not in sent
    assert sent["messages"][0]["role"] == "system" and len(sent["messages"][0]["content"]) > 20_000
    assert [m["role"] for m in sent["messages"][1:]] == ["user"]
    assert len(sent["tools"]) == 16 and sent["tools"][2]["function"]["name"] == "read_file"
    row = await last_row(gw)
    assert row["model"] == "gemini-2.5-flash-lite" and row["provider"] == "openai"
    assert {"note": "built-in tool googleSearch dropped: only Gemini runs it"} in row["attempts"]


async def test_translated_json_array_stream(gw: TestClient, fake_openai: FakeUpstream) -> None:
    fake_openai.play("openai/parallel_tool_calls.sse")
    resp = await gw.post("/genai/v1beta/models/openai/gpt-5:streamGenerateContent", json={
        "contents": [{"role": "user", "parts": [{"text": "read main"}]}]})
    events = json.loads(await resp.read())
    parts = events[-2]["candidates"][0]["content"]["parts"]
    assert [p["functionCall"]["name"] for p in parts] == ["read_file", "list_files"]
    assert events[-1]["usageMetadata"]["totalTokenCount"] > 0


# --- keys, governance and errors ------------------------------------------------------------------

def keyed_yaml(base: str) -> str:
    import hashlib

    def sha(k: str) -> str:
        return hashlib.sha256(k.encode()).hexdigest()
    return base + (
        "virtual_keys:\n"
        f"  - {{name: cli, key_sha256: '{sha('vk-team-cli')}', team: core}}\n"
        f"  - {{name: narrow, key_sha256: '{sha('vk-narrow')}', models: ['openai/*']}}\n"
        f"  - {{name: broke, key_sha256: '{sha('vk-broke')}', budgets: [{{period: total, usd: 0}}]}}\n"
        f"  - {{name: slow, key_sha256: '{sha('vk-slow')}', rate_limit: {{requests_per_minute: 1}}}}\n"
        "teams:\n  core: {}\n"
    )


@pytest.fixture
async def keyed(make_gateway: Any, fake_gemini: FakeUpstream, fake_openai: FakeUpstream,
                fake_anthropic: FakeUpstream) -> TestClient:
    return await make_gateway(keyed_yaml(config_yaml(fake_gemini, fake_openai, fake_anthropic)))


async def test_the_key_comes_from_header_query_or_bearer(keyed: TestClient, fake_gemini: FakeUpstream) -> None:
    fake_gemini.play("gemini/text_stream.sse")
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    url = "/genai/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    for extra, headers in (("", {"x-goog-api-key": "vk-team-cli"}), ("&key=vk-team-cli", {}),
                           ("", {"Authorization": "Bearer vk-team-cli"})):
        resp = await keyed.post(url + extra, json=body, headers=headers)
        assert resp.status == 200, await resp.text()
        await resp.read()
        assert fake_gemini.last.query == {"alt": "sse"} and fake_gemini.last.headers["x-goog-api-key"] == GEMINI_KEY
    rows = await logged_rows(keyed)
    assert [(r["key_name"], r["team"]) for r in rows] == [("cli", "core")] * 3
    assert "vk-team-cli" not in json.dumps(rows)
    denied = await keyed.post(url, json=body)
    assert denied.status == 401
    assert (await denied.json())["error"]["status"] == "UNAUTHENTICATED"


async def test_governance_refusals_in_google_shape(keyed: TestClient, fake_openai: FakeUpstream) -> None:
    fake_openai.answer_json({"id": "c", "object": "chat.completion", "model": "gpt-5", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]})
    expected = {"vk-nobody": (401, "UNAUTHENTICATED"), "vk-narrow": (403, "PERMISSION_DENIED"),
                "vk-broke": (402, "RESOURCE_EXHAUSTED")}
    for key, (code, status) in expected.items():
        c = sdk(keyed, key)
        with pytest.raises(errors.ClientError) as info:
            await c.aio.models.generate_content(model="gemini-2.5-flash", contents="x")
        await c.aio.aclose()
        assert (info.value.code, info.value.status) == (code, status), key
    slow = sdk(keyed, "vk-slow")
    await slow.aio.models.generate_content(model="openai/gpt-5", contents="x")
    with pytest.raises(errors.ClientError) as limited:
        await slow.aio.models.generate_content(model="openai/gpt-5", contents="x")
    await slow.aio.aclose()
    assert (limited.value.code, limited.value.status) == (429, "RESOURCE_EXHAUSTED")
    assert "requests per minute" in limited.value.message
    retry = limited.value.details["error"]["details"][0]  # Gemini CLI reads when to retry from here
    assert retry["@type"].endswith("google.rpc.RetryInfo") and retry["retryDelay"].endswith("s")


async def test_bad_requests_in_google_shape(gw: TestClient, client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as info:
        await client.aio.models.generate_content(model="nope/x", contents="x")
    assert (info.value.code, info.value.status) == (400, "INVALID_ARGUMENT") and "nope" in info.value.message
    for path in ("/genai/v1beta/models/gemini/..%2F..%2Fkeys:generateContent",
                 "/genai/v1beta/models/gemini/a%3Fkey%3Dx:generateContent"):
        resp = await gw.post(path, json={"contents": []})
        err = (await resp.json())["error"]
        assert resp.status == 400 and err["status"] == "INVALID_ARGUMENT" and "model" in err["message"], path
    resp = await gw.post("/genai/v1beta/models/gemini-2.5-flash:embedContent", json={})
    assert resp.status == 404 and (await resp.json())["error"]["status"] == "NOT_FOUND"
    resp = await gw.post("/genai/v1beta/models/gemini-2.5-flash:generateContent", data=b"{nope")
    assert resp.status == 400 and (await resp.json())["error"]["code"] == 400


# --- countTokens and models --------------------------------------------------------------------------

async def test_count_tokens_native_and_estimated(client: genai.Client, fake_gemini: FakeUpstream) -> None:
    fake_gemini.answer_json({"totalTokens": 31, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 31}]})
    native = await client.aio.models.count_tokens(model="gemini-2.5-flash", contents="hello there")
    assert native.total_tokens == 31 and fake_gemini.last.path == "/v1beta/models/gemini-2.5-flash:countTokens"
    assert fake_gemini.last.headers["x-goog-api-key"] == GEMINI_KEY
    estimated = await client.aio.models.count_tokens(model="openai/gpt-5", contents="hello " * 100)
    assert 100 < estimated.total_tokens < 300


async def test_models_list_and_get(client: genai.Client) -> None:
    names = [m.name async for m in await client.aio.models.list()]
    assert names == ["models/gemini/gemini-3-pro-preview", "models/gemini/gemini-2.5-flash", "models/openai/gpt-5",
                     "models/anthropic/claude-sonnet-4-6"]
    model = await client.aio.models.get(model="openai/gpt-5")
    assert model.name == "models/openai/gpt-5" and "generateContent" in model.supported_actions
    with pytest.raises(errors.ClientError) as info:
        await client.aio.models.get(model="openai/gpt-4")
    assert info.value.code == 404


# --- Vertex, streaming contract -----------------------------------------------------------------------

async def test_vertex_gemini_is_native_and_vertex_claude_translated(
    make_gateway: Any, fake_gemini: FakeUpstream
) -> None:
    gw = await make_gateway(
        f"providers:\n  vertex: {{base_url: '{fake_gemini.url}', project: acme-ml, location: us-east5,"
        " keys: [{value: ya29.static-token}], models: [gemini-2.5-flash, claude-sonnet-4-6]}\n")
    fake_gemini.play("gemini/text_stream.sse")
    client = sdk(gw)
    try:
        responses = await stream_turn(client, "gemini-2.5-flash", "what does parse_config do?")
        assert text_of(responses).startswith("The `parse_config` function")
        sent = fake_gemini.last
        assert sent.path == ("/v1/projects/acme-ml/locations/us-east5/publishers/google/models/"
                             "gemini-2.5-flash:streamGenerateContent") and sent.query == {"alt": "sse"}
        assert sent.headers["Authorization"] == "Bearer ya29.static-token" and "x-goog-api-key" not in sent.headers
        fake_gemini.play("anthropic/tool_use_two_calls.sse")
        calls = calls_of(await stream_turn(client, "vertex/claude-sonnet-4-6", ASK))
        assert [c.args["path"] for c in calls] == ["config/base.yaml", "config/prod.yaml"]
        assert fake_gemini.last.path.endswith("/publishers/anthropic/models/claude-sonnet-4-6:streamRawPredict")
    finally:
        await client.aio.aclose()
    rows = await logged_rows(gw)
    assert [r["provider"] for r in rows] == ["vertex", "vertex"]


async def test_native_events_flow_before_the_upstream_finishes(
    gw: TestClient, client: genai.Client, fake_gemini: FakeUpstream
) -> None:
    gate = asyncio.Event()
    frames = [f"data: {d.decode()}\r\n\r\n".encode()
              for d in data_lines((FIXTURES / "gemini" / "text_stream.sse").read_bytes())]
    fake_gemini.add(Reply(frames=frames, hold_before=2, until=gate))
    seen: list[str] = []
    async with asyncio.timeout(10):  # a hang guard, not a speed claim
        async for r in await client.aio.models.generate_content_stream(model="gemini-2.5-flash", contents="x"):
            seen.append(r.text or "")
            gate.set()
    assert seen[0] == "The `parse_config` function" and len(seen) == 3


async def test_a_client_that_hangs_up_leaves_one_row_and_closes_the_upstream(
    gw: TestClient, fake_gemini: FakeUpstream
) -> None:
    gate = asyncio.Event()
    frames = [f"data: {d.decode()}\r\n\r\n".encode()
              for d in data_lines((FIXTURES / "gemini" / "text_stream.sse").read_bytes())]
    fake_gemini.add(Reply(frames=frames, hold_before=1, until=gate))
    resp = await gw.post("/genai/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                         json={"contents": [{"role": "user", "parts": [{"text": "x"}]}]})
    assert (await resp.content.readline()).startswith(b"data: ")
    resp.close()
    async with asyncio.timeout(10):
        await fake_gemini.closed_early.wait()
        while not (rows := await logged_rows(gw)):
            await asyncio.sleep(0.05)
    assert len(rows) == 1 and rows[0]["status"] == "client_closed"


async def test_browser_preflight_allows_the_sdk_headers(gw: TestClient) -> None:
    resp = await gw.options("/genai/v1beta/models/gemini-2.5-flash:streamGenerateContent", headers={
        "Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, x-goog-api-key, x-goog-api-client"})
    assert resp.status == 204 and "x-goog-api-key" in resp.headers["Access-Control-Allow-Headers"]


async def test_count_tokens_and_models_need_the_key_and_say_nothing_before_it(keyed: TestClient) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    for method, path in (("POST", "/genai/v1beta/models/nope/x:countTokens"), ("GET", "/genai/v1beta/models"),
                         ("GET", "/genai/v1beta/models/nope/x")):
        resp = await keyed.request(method, path, json=body if method == "POST" else None)
        err = (await resp.json())["error"]
        assert (resp.status, err["status"]) == (401, "UNAUTHENTICATED") and "gemini" not in err["message"], path
    narrow = {"x-goog-api-key": "vk-narrow"}  # may use openai/* only
    resp = await keyed.post("/genai/v1beta/models/gemini-2.5-flash:countTokens", json=body, headers=narrow)
    assert resp.status == 403 and (await resp.json())["error"]["status"] == "PERMISSION_DENIED"
    listed = await (await keyed.get("/genai/v1beta/models", params={"key": "vk-narrow"})).json()
    assert [m["name"] for m in listed["models"]] == ["models/openai/gpt-5"]


async def test_an_error_mid_array_stream_is_its_last_element(gw: TestClient, fake_openai: FakeUpstream) -> None:
    fake_openai.play("openai/error_midstream.sse")
    resp = await gw.post("/genai/v1beta/models/openai/gpt-5:streamGenerateContent", json={
        "contents": [{"role": "user", "parts": [{"text": "go"}]}]})
    events = json.loads(await resp.read())  # still one well-formed JSON array
    assert resp.status == 200 and "candidates" in events[0]
    assert set(events[-1]) == {"error"} and events[-1]["error"]["code"] >= 400


async def test_a_blocked_prompt_reaches_a_native_client_as_gemini_answered(
    gw: TestClient, client: genai.Client, fake_gemini: FakeUpstream
) -> None:
    blocked = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
               "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}, "modelVersion": "gemini-2.5-flash"}
    fake_gemini.answer_json(blocked)
    result = await client.aio.models.generate_content(model="gemini-2.5-flash", contents="x")
    assert result.prompt_feedback.block_reason == types.BlockedReason.PROHIBITED_CONTENT
    fake_gemini.add(Reply(frames=[b"data: " + json.dumps(blocked).encode() + b"\r\n\r\n"]))
    streamed = await stream_turn(client, "gemini-2.5-flash", "x")
    assert streamed[0].prompt_feedback.block_reason == types.BlockedReason.PROHIBITED_CONTENT
    rows = await logged_rows(gw)
    assert [r["status"] for r in rows] == ["ok", "ok"] and rows[1]["finish_reason"] == "content_filter"
