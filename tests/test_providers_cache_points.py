"""Where the gateway puts prompt-cache breakpoints (pure translation, no network)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from finopsd.caching import CachingConfig, auto_cache_ttl
from finopsd.config import ProviderConfig
from finopsd.providers.anthropic import AnthropicAdapter
from finopsd.providers.base import Target
from finopsd.providers.bedrock import BedrockAdapter
from finopsd.providers.bedrock import usage_to_openai as bedrock_usage
from finopsd.providers.cache_points import min_cacheable_tokens, place_converse, place_messages
from finopsd.providers.vertex import VertexAdapter
from tests.fake_claude import seen_by_model

SYSTEM = "You are a careful coding agent. Follow the rules below.\n" + "Rule: keep changes small. " * 600
TOOLS = [{"type": "function", "function": {"name": f"tool_{i}", "description": "does a thing " * 10,
                                           "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}
         for i in range(13)]


def history(turns: int) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Fix the parser."}]
    for i in range(turns):
        msgs += [{"role": "assistant", "content": "", "tool_calls": [
                     {"id": f"call_{i}", "type": "function", "function": {"name": "tool_0", "arguments": "{}"}}]},
                 {"role": "tool", "tool_call_id": f"call_{i}", "content": f"contents of file {i}"},
                 {"role": "user", "content": "<environment_details>cwd: /src</environment_details>"}]
    return msgs


def anthropic_target(model: str = "claude-sonnet-4-5", ttl: str | None = "5m") -> Target:
    return Target(ProviderConfig(name="anthropic", type="anthropic", base_url="http://x"), model, cache_ttl=ttl)


def markers(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = [(k, i) for k in ("tools", "system") for i, b in enumerate(body.get(k) or ())
                                  if "cache_control" in b]
    out += [("messages", i, j, b["type"]) for i, m in enumerate(body["messages"]) for j, b in enumerate(m["content"])
            if "cache_control" in b]
    return out


def test_minimum_cacheable_lengths_follow_anthropics_table() -> None:
    assert min_cacheable_tokens("claude-sonnet-4-5-20250929") == 1024
    assert min_cacheable_tokens("us.anthropic.claude-sonnet-4-5-20250929-v1:0") == 1024
    assert min_cacheable_tokens("claude-opus-4-5") == 4096
    assert min_cacheable_tokens("claude-opus-4-1@20250805") == 1024
    assert min_cacheable_tokens("claude-haiku-4-5-20251001") == 4096
    assert min_cacheable_tokens("claude-3-5-haiku-20241022") == 2048
    assert min_cacheable_tokens("claude-3-haiku-20240307") == 2048
    assert min_cacheable_tokens("claude-3-7-sonnet-20250219") == 1024
    assert min_cacheable_tokens("claude-opus-5") == 512


def test_marks_the_system_prompt_the_previous_user_turn_and_the_last_message() -> None:
    call = AnthropicAdapter().build_request(anthropic_target(), {"messages": history(3), "tools": TOOLS}, stream=True)
    body = json.loads(call.body)
    # messages: user, (assistant, user) x 3 → the previous user turn is 4, the last is 6
    assert markers(body) == [("system", 0), ("messages", 4, 1, "text"), ("messages", 6, 1, "text")]
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}


def test_the_body_differs_only_by_the_markers() -> None:
    req = {"messages": history(2), "tools": TOOLS}
    off = json.loads(AnthropicAdapter().build_request(anthropic_target(ttl=None), req, stream=False).body)
    on = json.loads(AnthropicAdapter().build_request(anthropic_target(), req, stream=False).body)
    assert markers(off) == []
    assert seen_by_model(on) == seen_by_model(off) and on != off


def test_a_request_with_its_own_markers_is_left_alone() -> None:
    msgs = history(2)
    msgs[0] = {"role": "system", "content": [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}]}
    body = json.loads(AnthropicAdapter().build_request(anthropic_target(), {"messages": msgs}, stream=False).body)
    assert markers(body) == [("system", 0)]
    auto = {"model": "claude-sonnet-4-5", "cache_control": {"type": "ephemeral"}, "system": SYSTEM,
            "messages": [{"role": "user", "content": "hi"}]}  # top-level automatic caching
    assert place_messages(auto, "claude-sonnet-4-5", "5m") == 0 and auto["system"] == SYSTEM


def test_a_prompt_under_the_models_minimum_gets_no_marker() -> None:
    body = {"system": "Be brief.", "messages": [{"role": "user", "content": "hi"}]}
    assert place_messages(body, "claude-sonnet-4-5", "5m") == 0
    assert body == {"system": "Be brief.", "messages": [{"role": "user", "content": "hi"}]}  # untouched
    medium = {"system": "x" * 6000, "messages": [{"role": "user", "content": "hi"}]}  # ~1500 tokens
    assert place_messages(medium, "claude-opus-4-5", "5m") == 0  # Opus 4.5 caches from 4096 tokens
    assert place_messages(medium, "claude-sonnet-4-5", "5m") == 2


def test_native_string_content_becomes_the_one_block_that_carries_the_marker() -> None:
    body = {"system": SYSTEM, "messages": [{"role": "user", "content": "hello"}]}
    assert place_messages(body, "claude-sonnet-4-5", "1h") == 2
    assert body["system"] == [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "hello", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]


def test_thinking_blocks_and_empty_text_never_carry_a_marker() -> None:
    body = {"system": SYSTEM, "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "text", "text": "ok"},
                                          {"type": "thinking", "thinking": "hm", "signature": "s"}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "x"},
                                     {"type": "text", "text": ""}]},
    ]}
    place_messages(body, "claude-sonnet-4-5", "5m")
    assert "cache_control" in body["messages"][2]["content"][0]  # the tool_result, not the empty text
    assert "cache_control" not in body["messages"][2]["content"][1]
    assert all("cache_control" not in b for b in body["messages"][1]["content"])


def test_tools_carry_the_prefix_marker_when_there_is_no_system_prompt() -> None:
    tools = [{"name": f"t{i}", "input_schema": {"type": "object", "description": "y" * 400}} for i in range(20)]
    body = {"tools": tools, "messages": [{"role": "user", "content": "go"}]}
    place_messages(body, "claude-sonnet-4-5", "5m")
    assert "cache_control" in tools[-1] and all("cache_control" not in t for t in tools[:-1])


def test_vertex_claude_gets_the_same_markers() -> None:
    provider = ProviderConfig(name="vertex", type="vertex", base_url="", project="p", location="us-east5")
    target = Target(provider, "claude-sonnet-4-5@20250929", "ya29.token", cache_ttl="5m")
    body = json.loads(VertexAdapter().build_request(target, {"messages": history(1), "tools": TOOLS}, stream=True).body)
    assert markers(body) == [("system", 0), ("messages", 0, 0, "text"), ("messages", 2, 1, "text")]


def converse_points(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = [("system", i) for i, b in enumerate(body.get("system") or ()) if "cachePoint" in b]
    out += [("messages", i, j, b["cachePoint"].get("ttl")) for i, m in enumerate(body["messages"])
            for j, b in enumerate(m["content"]) if "cachePoint" in b]
    return out


def test_bedrock_claude_gets_cache_points_after_the_prefix_and_the_latest_turns() -> None:
    provider = ProviderConfig(name="bedrock", type="bedrock", base_url="http://x", region="us-east-1")
    model = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    call = BedrockAdapter().build_request(Target(provider, model, "ABSK-key", cache_ttl="1h"),
                                          {"messages": history(2), "tools": TOOLS}, stream=False)
    body = json.loads(call.body)
    points = converse_points(body)
    assert points[0] == ("system", 1)  # after the system text block
    assert [p[:2] for p in points[1:]] == [("messages", 2), ("messages", 4)]
    assert body["system"][1] == {"cachePoint": {"type": "default", "ttl": "1h"}}


def test_bedrock_usage_keeps_the_1h_share_of_cache_writes_for_pricing() -> None:
    usage = bedrock_usage({"inputTokens": 10, "outputTokens": 5, "cacheReadInputTokens": 0, "cacheWriteInputTokens": 300,
                           "cacheDetails": [{"ttl": "1h", "inputTokens": 200}, {"ttl": "5m", "inputTokens": 100}]})
    assert usage["prompt_tokens"] == 310
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0, "cache_creation_tokens": 300,
                                              "ephemeral_1h_input_tokens": 200}


def test_bedrock_1h_only_on_claude_4_5_and_later_and_no_points_for_other_models() -> None:
    old = {"system": [{"text": SYSTEM}], "messages": [{"role": "user", "content": [{"text": "hi"}]}]}
    place_converse(old, "anthropic.claude-3-7-sonnet-20250219-v1:0", "1h")
    assert old["system"][-1] == {"cachePoint": {"type": "default"}}  # the default 5m
    nova = {"system": [{"text": SYSTEM}], "messages": [{"role": "user", "content": [{"text": "hi"}]}]}
    assert place_converse(nova, "amazon.nova-pro-v1:0", "5m") == 0
    mine = {"system": [{"text": SYSTEM}, {"cachePoint": {"type": "default"}}],
            "messages": [{"role": "user", "content": [{"text": "hi"}]}]}
    assert place_converse(mine, "anthropic.claude-sonnet-4-5", "5m") == 0


@pytest.mark.parametrize(("provider", "scopes", "ttl"), [
    (CachingConfig(), (), "5m"),
    (CachingConfig(ttl="1h"), (), "1h"),
    (CachingConfig(ttl="1h"), (CachingConfig(ttl="5m"),), "5m"),  # the key's wins
    (CachingConfig(), (CachingConfig(), CachingConfig(ttl="1h")), "1h"),  # the team's, when the key says none
    (CachingConfig(auto=False), (), None),
    (CachingConfig(), (CachingConfig(), CachingConfig(auto=False)), None),  # a team opting out
])
def test_auto_cache_ttl_merges_provider_key_and_team(provider: CachingConfig, scopes: tuple[CachingConfig, ...],
                                                     ttl: str | None) -> None:
    assert auto_cache_ttl(provider, scopes) == ttl


def test_a_deeply_nested_body_is_sized_without_recursing_into_it() -> None:
    deep: Any = "x"
    for _ in range(5000):
        deep = {"content": [deep]}
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "extra": deep}]}]}
    assert place_messages(body, "claude-sonnet-4-5", "5m") == 1  # counted as big enough; no RecursionError
