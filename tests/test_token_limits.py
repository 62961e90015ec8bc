"""A token limit that is not positive is treated as absent on every route (issue 21, item 18).

Roo Code sends ``max_completion_tokens: -1`` when "include max output tokens" is on and the
model has no custom info; OpenAI-protocol upstreams refuse it, Anthropic requires a limit.
"""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest
from aiohttp.test_utils import TestClient

from finopsd.providers.anthropic_request import DEFAULT_MAX_TOKENS
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream

MSGS = [{"role": "user", "content": "hi"}]
COMPLETION = {"id": "x", "object": "chat.completion", "model": "gpt-5", "created": 0,
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}
LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


@pytest.fixture
async def gw(make_gateway: Any, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream) -> TestClient:
    return await make_gateway(gateway_yaml(fake_openai.url, (
        f"  anthropic: {{base_url: '{fake_anthropic.url}', keys: [{{value: a-key}}]}}\n"
        f"  gemini: {{base_url: '{fake_anthropic.url}/v1beta', keys: [{{value: g-key}}]}}\n")))


@pytest.mark.parametrize("limit", [-1, 0, -0.5])
async def test_openai_chat_forwards_no_non_positive_limit(
    gw: TestClient, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream, limit: float
) -> None:
    fake_openai.answer_json(COMPLETION)
    async with openai.AsyncOpenAI(base_url=str(gw.make_url("/openai")), api_key="vk", max_retries=0) as client:
        await client.chat.completions.create(model="openai/gpt-5", messages=MSGS,  # type: ignore[arg-type]
                                             max_completion_tokens=limit, max_tokens=limit)  # type: ignore[arg-type]
        assert not set(LIMITS) & set(fake_openai.last.body)
        fake_anthropic.play("anthropic/thinking_then_text.sse")
        stream = await client.chat.completions.create(model="anthropic/claude-sonnet-4-5", messages=MSGS,
                                                      max_completion_tokens=limit, stream=True)  # type: ignore
        [c async for c in stream]
        assert fake_anthropic.last.body["max_tokens"] == DEFAULT_MAX_TOKENS
        fake_anthropic.replies[:] = []
        fake_anthropic.play("gemini/text_stream.sse")
        stream = await client.chat.completions.create(model="gemini/gemini-2.5-flash", messages=MSGS,
                                                      max_completion_tokens=limit, stream=True)  # type: ignore
        [c async for c in stream]
        assert "maxOutputTokens" not in fake_anthropic.last.body.get("generationConfig", {})
        await client.completions.create(model="openai/gpt-5", prompt="hi", max_tokens=limit)  # type: ignore
        assert "max_tokens" not in fake_openai.last.body


async def test_anthropic_messages_route_treats_minus_one_as_absent(
    gw: TestClient, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream
) -> None:
    fake_anthropic.play("anthropic/thinking_then_text.sse")
    fake_openai.answer_json(COMPLETION)
    async with anthropic.AsyncAnthropic(base_url=str(gw.make_url("/anthropic")), api_key="vk",
                                        max_retries=0) as client:
        async with client.messages.stream(model="anthropic/claude-sonnet-4-5", max_tokens=-1,
                                          messages=MSGS) as stream:  # type: ignore[arg-type]
            await stream.get_final_message()
        assert fake_anthropic.last.body["max_tokens"] == DEFAULT_MAX_TOKENS  # native: Anthropic requires one
        await client.messages.create(model="openai/gpt-5", max_tokens=0, messages=MSGS)  # type: ignore[arg-type]
    assert not set(LIMITS) & set(fake_openai.last.body)


async def test_responses_route_treats_zero_as_absent(gw: TestClient, fake_openai: FakeUpstream) -> None:
    fake_openai.answer_json(COMPLETION)
    async with openai.AsyncOpenAI(base_url=str(gw.make_url("/openai")), api_key="vk", max_retries=0) as client:
        answer = await client.responses.create(model="groq/llama-3.3-70b-versatile", input="hi", max_output_tokens=0)
        assert answer.output_text == "ok"
        assert not set(LIMITS) & set(fake_openai.last.body)
        fake_openai.replies[:] = []
        fake_openai.play("openai/responses_function_call.sse")
        await client.responses.create(model="openai/gpt-5", input="hi", max_output_tokens=-1, stream=True)
        assert "max_output_tokens" not in fake_openai.last.body
