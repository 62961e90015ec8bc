"""Providers that cache on their own: their cached-token usage is read and priced on every route.

DeepSeek reports reads as ``prompt_cache_hit_tokens``, Moonshot as a top-level ``cached_tokens``,
OpenAI, Groq, xAI and Gemini's OpenAI endpoint as ``prompt_tokens_details.cached_tokens``,
OpenRouter writes as ``prompt_tokens_details.cache_write_tokens``; Gemini's native API as
``cachedContentTokenCount``. Each route hands the client the count in its own dialect.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from finopsd.pricing import Pricer, cache_reads, cache_writes
from finopsd.providers.gemini import usage_from_metadata
from tests.fakes import FakeUpstream, Reply
from tests.logrows import last_row

PRICER = Pricer({}, {})
DEEPSEEK_USAGE = {"prompt_tokens": 12000, "completion_tokens": 50, "total_tokens": 12050,
                  "prompt_cache_hit_tokens": 11520, "prompt_cache_miss_tokens": 480}


def completion(usage: dict[str, Any]) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "deepseek-chat",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "done"}, "finish_reason": "stop"}],
            "usage": usage}


def stream_frames(usage: dict[str, Any]) -> list[bytes]:
    chunks = [{"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "deepseek-chat",
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": "done"}, "finish_reason": "stop"}]},
              {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "deepseek-chat", "choices": [],
               "usage": usage}]
    return [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]


@pytest.fixture
async def gw(make_gateway: Any, fake_openai: FakeUpstream) -> Any:
    return await make_gateway(
        f"providers:\n"
        f"  deepseek: {{base_url: {fake_openai.url}, keys: [{{value: sk-ds}}], models: [deepseek-chat]}}\n")


@pytest.mark.parametrize("usage", [
    {"prompt_tokens": 100, "prompt_tokens_details": {"cached_tokens": 64}},  # OpenAI, Groq, xAI
    {"prompt_tokens": 100, "prompt_cache_hit_tokens": 64, "prompt_cache_miss_tokens": 36},  # DeepSeek
    {"prompt_tokens": 100, "cached_tokens": 64},  # Moonshot
    {"prompt_tokens": 100, "cache_read_input_tokens": 64, "cache_creation_input_tokens": 0},  # Anthropic-style
])
def test_cache_reads_are_found_under_every_providers_name(usage: dict[str, Any]) -> None:
    assert cache_reads(usage) == 64


def test_cache_writes_of_openrouter_and_gemini_implicit_reads() -> None:
    assert cache_writes({"prompt_tokens": 100, "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 90}}) == 90
    gemini = usage_from_metadata({"promptTokenCount": 5000, "cachedContentTokenCount": 4096, "candidatesTokenCount": 10})
    assert cache_reads(gemini) == 4096
    full = PRICER.price("gemini", "gemini-2.5-flash", {**gemini, "prompt_tokens_details": {}})[0]
    assert PRICER.price("gemini", "gemini-2.5-flash", gemini)[0] < full  # implicit cache reads at their rate


@pytest.mark.parametrize("stream", [False, True])
async def test_deepseek_cache_hits_priced_on_the_chat_route(gw: Any, fake_openai: FakeUpstream, stream: bool) -> None:
    if stream:
        fake_openai.add(Reply(frames=stream_frames(DEEPSEEK_USAGE)))
    else:
        fake_openai.answer_json(completion(DEEPSEEK_USAGE))
    async with openai.AsyncOpenAI(base_url=str(gw.make_url("/openai")), api_key="k", max_retries=0) as client:
        if stream:
            async for _ in await client.chat.completions.create(
                    model="deepseek/deepseek-chat", messages=[{"role": "user", "content": "hi"}], stream=True):
                pass
        else:
            await client.chat.completions.create(model="deepseek/deepseek-chat",
                                                 messages=[{"role": "user", "content": "hi"}])
    row = await last_row(gw)
    assert row["cached_tokens"] == 11520
    assert row["cost_usd"] == pytest.approx(PRICER.price("deepseek", "deepseek-chat", {
        "prompt_tokens": 12000, "completion_tokens": 50, "prompt_tokens_details": {"cached_tokens": 11520}})[0])
    assert row["cost_without_cache_usd"] == pytest.approx(PRICER.price("deepseek", "deepseek-chat", {
        "prompt_tokens": 12000, "completion_tokens": 50})[0])
    assert row["cost_without_cache_usd"] > 2 * row["cost_usd"]


async def test_deepseek_cache_hits_reach_claude_code_as_cache_reads(gw: Any, fake_openai: FakeUpstream) -> None:
    fake_openai.add(Reply(frames=stream_frames(DEEPSEEK_USAGE)))
    async with anthropic.AsyncAnthropic(base_url=str(gw.make_url("/anthropic")), api_key="k", max_retries=0) as client:
        async with client.messages.stream(model="deepseek/deepseek-chat", max_tokens=64,
                                          messages=[{"role": "user", "content": "hi"}]) as stream:
            final = await stream.get_final_message()
    assert final.usage.cache_read_input_tokens == 11520 and final.usage.input_tokens == 480
    assert (await last_row(gw))["cached_tokens"] == 11520


async def test_deepseek_cache_hits_reach_codex_as_cached_input_tokens(gw: Any, fake_openai: FakeUpstream) -> None:
    fake_openai.answer_json(completion(DEEPSEEK_USAGE))
    async with openai.AsyncOpenAI(base_url=str(gw.make_url("/openai/v1")), api_key="k", max_retries=0) as client:
        response = await client.responses.create(model="deepseek/deepseek-chat", input="hi", store=False)
    assert response.usage is not None and response.usage.input_tokens_details.cached_tokens == 11520
    assert (await last_row(gw))["cost_without_cache_usd"] > (await last_row(gw))["cost_usd"]
