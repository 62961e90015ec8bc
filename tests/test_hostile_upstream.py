"""A hostile client or upstream: model ids aimed at other URL paths, follow-up URLs off the
provider's origin, and our own keys echoed back on every dialect, streamed or not."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient

from finopsd.appkeys import LOGSTORE
from tests.fakes import FIXTURES, FakeUpstream, Reply
from tests.test_governance import key_line

MSGS: list[Any] = [{"role": "user", "content": "Say hello."}]
SECRETS = {
    "gemini": "AIza-gemini-upstream-secret", "vertex": "ya29.vertex-upstream-secret",
    "azure": "az-upstream-secret-0001", "replicate": "r8_replicate-upstream-secret",
}
VK = "sk-fo-url-tests-000000000001"

# each reaches another model, project or endpoint when pasted into a URL path unescaped; all
# pass the key's glob `*/gemini-2.5-flash*`, as the attack needs
ESCAPES = ["gemini-2.5-flash/../gemini-2.5-pro", "gemini-2.5-flash/%2e%2e/gemini-2.5-pro",
           "gemini-2.5-flash%2F..%2Fgemini-2.5-pro", "gemini-2.5-flash/../../../../projects/other/x",
           "gemini-2.5-flash:countTokens", "gemini-2.5-flash?alt=sse#", "gemini-2.5-flash/x", "gemini-2.5-flash/..",
           "gemini-2.5-flash 2", "gemini-2.5-flash\\..\\x", "gemini-2.5-flash\n"]
# and, for a key with every model, names that are a dot segment themselves
DOTS = ["..", ".", ".hidden", "%2e%2e", "../x"]
OPEN_VK = "sk-fo-url-tests-open-000002"


def providers_yaml(url: str) -> str:
    return f"""
auth: {{required: true}}
virtual_keys:
{key_line("globbed", VK, models="['*/gemini-2.5-flash*', 'replicate/meta/*']")}{key_line("open", OPEN_VK)}
providers:
  gemini: {{type: gemini, base_url: '{url}/v1beta', keys: [{{value: {SECRETS['gemini']}}}]}}
  vertex: {{type: vertex, base_url: '{url}', project: proj-1, location: us-east5,
           keys: [{{value: {SECRETS['vertex']}}}]}}
  azure: {{type: azure, base_url: '{url}/openai', api_version: '2024-10-21', keys: [{{value: {SECRETS['azure']}}}]}}
  replicate: {{type: replicate, base_url: '{url}/v1', keys: [{{value: {SECRETS['replicate']}}}]}}
"""


@pytest.fixture
async def gw(make_gateway: Any, fake_anthropic: FakeUpstream) -> TestClient:
    return await make_gateway(providers_yaml(fake_anthropic.url))


@pytest.mark.parametrize("provider", ["gemini", "vertex", "azure"])
async def test_model_ids_that_leave_their_url_segment_are_400_and_never_sent(
    gw: TestClient, fake_anthropic: FakeUpstream, provider: str
) -> None:
    for key, models in ((VK, ESCAPES), (OPEN_VK, DOTS)):
        async with openai.AsyncOpenAI(base_url=str(gw.make_url("/openai")), api_key=key, max_retries=0) as client:
            for model in models:
                for stream in (False, True):
                    with pytest.raises(openai.BadRequestError) as info:
                        await client.chat.completions.create(model=f"{provider}/{model}", messages=MSGS,
                                                             stream=stream)
                    assert info.value.code == "invalid_model", (model, info.value)
    assert fake_anthropic.requests == []


async def test_replicate_owner_and_name_are_single_segments(gw: TestClient, fake_anthropic: FakeUpstream) -> None:
    async with openai.AsyncOpenAI(base_url=str(gw.make_url("/openai")), api_key=OPEN_VK, max_retries=0) as client:
        for model in ("meta/..", "../x", "meta/%2e%2e", "meta/x?y", "meta/x#y", "meta/.x"):
            with pytest.raises(openai.BadRequestError):
                await client.chat.completions.create(model=f"replicate/{model}", messages=MSGS)
    assert fake_anthropic.requests == []


async def test_a_plain_model_id_still_reaches_its_url(gw: TestClient, fake_anthropic: FakeUpstream) -> None:
    fake_anthropic.play("gemini/parallel_calls.sse")
    async with openai.AsyncOpenAI(base_url=str(gw.make_url("/openai")), api_key=VK, max_retries=0) as client:
        stream = await client.chat.completions.create(model="gemini/gemini-2.5-flash-001", messages=MSGS, stream=True)
        assert [c async for c in stream]
    assert fake_anthropic.last.path == "/v1beta/models/gemini-2.5-flash-001:streamGenerateContent"


@pytest.mark.parametrize("which", ["stream", "get"])
async def test_replicate_follow_up_urls_off_its_origin_are_not_fetched(
    gw: TestClient, fake_anthropic: FakeUpstream, fake_openai: FakeUpstream, which: str
) -> None:
    prediction = json.loads((FIXTURES / "replicate/prediction_starting.json").read_text())
    elsewhere = fake_openai.url.replace("/v1", "/steal")  # another origin: another port
    prediction["urls"] = {"stream": f"{elsewhere}/s", "get": f"{elsewhere}/g", "cancel": f"{elsewhere}/c"}
    fake_anthropic.answer_json(prediction, status=201)
    async with openai.AsyncOpenAI(base_url=str(gw.make_url("/openai")), api_key=VK, max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="replicate/meta/meta-llama-3-70b-instruct", messages=MSGS,
                                                 stream=which == "stream")
    assert info.value.status_code == 502 and "origin" in info.value.message
    assert fake_openai.requests == []  # the token never went there


# --- our keys echoed back --------------------------------------------------------------------


OPENAI_KEY, GROQ_KEY, ANTHROPIC_KEY = "sk-upstream-openai-secret", "sk-groq-literal-secret", "sk-ant-echo-secret-0001"
ALL_SECRETS = (OPENAI_KEY, GROQ_KEY, ANTHROPIC_KEY)


def chat_frames(echo: str) -> list[bytes]:
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "gpt-5",
             "choices": [{"index": 0, "delta": {"role": "assistant", "content": f"your key is {echo}. "},
                          "finish_reason": None}]}
    error = {"error": {"message": f"Incorrect API key provided: Bearer {echo}", "type": "invalid_request_error"}}
    return [f"data: {json.dumps(chunk)}\n\n".encode(), f"data: {json.dumps(error)}\n\n".encode()]


def anthropic_frames(echo: str) -> list[bytes]:
    frames = (FIXTURES / "anthropic/error_overloaded.sse").read_text().replace(
        '"message":"Overloaded"', f'"message":"invalid x-api-key {echo}"').replace("Let me check", f"key {echo}")
    return [f.encode() + b"\n\n" for f in frames.split("\n\n") if f.strip()]


@pytest.fixture
async def echo_gw(make_gateway: Any, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream) -> TestClient:
    return await make_gateway(f"""
providers:
  openai: {{base_url: '{fake_openai.url}', keys: [{{value: env:TEST_OPENAI_KEY}}], models: [gpt-5]}}
  groq: {{base_url: '{fake_openai.url}', keys: [{{value: {GROQ_KEY}}}], models: [llama]}}
  anthropic: {{type: anthropic, base_url: '{fake_anthropic.url}', keys: [{{value: {ANTHROPIC_KEY}}}]}}
""")


async def raw(gw: TestClient, path: str, body: dict[str, Any]) -> bytes:
    resp = await gw.post(path, json=body)
    return await resp.read()


async def test_echoed_keys_never_leave_on_any_dialect_or_in_the_log(
    echo_gw: TestClient, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream
) -> None:
    fake_openai.key_replies = {f"Bearer {k}": Reply(frames=chat_frames(k)) for k in (OPENAI_KEY, GROQ_KEY)}
    fake_anthropic.add(Reply(frames=anthropic_frames(ANTHROPIC_KEY)))
    outputs = [
        await raw(echo_gw, "/openai/v1/chat/completions", {"model": "openai/gpt-5", "messages": MSGS, "stream": True}),
        await raw(echo_gw, "/openai/v1/chat/completions", {"model": "groq/llama", "messages": MSGS, "stream": True}),
        await raw(echo_gw, "/anthropic/v1/messages", {"model": "openai/gpt-5", "max_tokens": 9, "messages": MSGS,
                                                      "stream": True}),
        await raw(echo_gw, "/anthropic/v1/messages", {"model": "anthropic/claude-x", "max_tokens": 9,
                                                      "messages": MSGS, "stream": True}),
        await raw(echo_gw, "/openai/v1/responses", {"model": "groq/llama", "input": "hi", "stream": True}),
    ]
    for out in outputs:
        assert b"[secret]" in out, out  # the echo arrived, scrubbed
        assert not any(s.encode() in out for s in ALL_SECRETS), out
    store = echo_gw.server.app[LOGSTORE]
    await store.flush()
    items = (await store.search())["items"]
    assert len(items) == len(outputs) and all(i["status"] == "error" for i in items)
    assert any("[secret]" in (i["error_message"] or "") for i in items)
    pages = [await (await echo_gw.get(p)).read() for p in
             ("/logs", "/api/logs", *(f"/api/logs/{i['id']}" for i in items), *(f"/logs/{i['id']}" for i in items))]
    rows = [json.dumps(await store.get(i["id"])).encode() for i in items]
    for out in pages + rows:
        assert not any(s.encode() in out for s in ALL_SECRETS)


async def test_a_whole_answer_and_an_error_body_are_scrubbed(echo_gw: TestClient, fake_openai: FakeUpstream) -> None:
    answer = {"id": "c1", "object": "chat.completion", "created": 0, "model": "gpt-5", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": f"the key is {OPENAI_KEY}"}, "finish_reason": "stop"}]}
    fake_openai.answer_json(answer)
    fake_openai.answer_json({"error": {"message": f"bad key {json.dumps(OPENAI_KEY)}"}}, status=400)
    async with openai.AsyncOpenAI(base_url=str(echo_gw.make_url("/openai")), api_key="x", max_retries=0) as client:
        done = await client.chat.completions.create(model="openai/gpt-5", messages=MSGS)
        assert done.choices[0].message.content == "the key is [secret]"
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(model="openai/gpt-5", messages=MSGS)
    assert OPENAI_KEY not in info.value.response.text
