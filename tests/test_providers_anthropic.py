"""Anthropic adapter: pure translation, OpenAI chat ↔ Messages API, no network.

Stream fixtures under tests/fixtures/anthropic/ follow the documented event flow (message_start,
content blocks, ping, message_delta with cumulative usage, message_stop, in-band error events).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from finopsd.chunks import StreamNormaliser
from finopsd.config import ProviderConfig
from finopsd.errors import GatewayError
from finopsd.exchange import Transcript
from finopsd.providers.anthropic import ANTHROPIC_VERSION, DEFAULT_MAX_TOKENS, AnthropicAdapter
from finopsd.providers.base import Target
from finopsd.sse import SSEDecoder

FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"
ADAPTER = AnthropicAdapter()
SONNET = "claude-sonnet-4-5-20250929"
EPHEMERAL = {"type": "ephemeral"}
TOOLS = [{"type": "function", "function": {
    "name": "read_file", "description": "Read a file", "strict": True,
    "parameters": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                   "properties": {"path": {"type": "string"}}, "required": ["path"], "additionalProperties": False}}}]
TOOL_TURN = [
    {"role": "user", "content": "Compare the configs"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "toolu_01A", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a.yaml"}'}},
        {"id": "toolu_01B", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "b.yaml"}'}},
    ]},
    {"role": "tool", "tool_call_id": "toolu_01A", "content": "port: 80"},
    {"role": "tool", "tool_call_id": "toolu_01B", "content": "port: 443"},
]


def target(model: str = SONNET, key: str | None = "sk-ant-test") -> Target:
    provider = ProviderConfig(name="anthropic", type="anthropic", base_url="https://api.anthropic.com",
                              headers={"anthropic-beta": "context-1m-2025-08-07"})
    return Target(provider, model, key, "anthropic-0" if key else None)


def body_of(req: dict[str, Any], model: str = SONNET, stream: bool = False) -> dict[str, Any]:
    return ADAPTER.messages_body(target(model), req, stream=stream)


def play(name: str, piece: int = 29) -> tuple[list[dict[str, Any]], Any]:
    """Feed a fixture through the SSE decoder in odd-sized reads, as the network would."""
    raw = (FIXTURES / name).read_bytes()
    decoder, state = SSEDecoder(), ADAPTER.new_stream(target())
    chunks: list[dict[str, Any]] = []
    for i in range(0, len(raw), piece):
        for event, data in decoder.feed(raw[i : i + piece]):
            chunks.extend(ADAPTER.parse_event(state, event, data))
    for event, data in decoder.close():
        chunks.extend(ADAPTER.parse_event(state, event, data))
    return chunks, state


def deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks if c["choices"]]


def tool_calls(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [tc for d in deltas(chunks) for tc in d.get("tool_calls", [])]


def reassemble(chunks: list[dict[str, Any]]) -> dict[int, dict[str, str]]:
    calls: dict[int, dict[str, str]] = {}
    for tc in tool_calls(chunks):
        call = calls.setdefault(tc["index"], {"id": "", "name": "", "arguments": ""})
        call["id"] = tc.get("id") or call["id"]
        call["name"] = tc["function"].get("name") or call["name"]
        call["arguments"] += tc["function"].get("arguments", "")
    return calls


def finishes(chunks: list[dict[str, Any]]) -> list[str]:
    return [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]


# --- the HTTP call ---------------------------------------------------------------------------


def test_request_goes_to_v1_messages_with_key_version_and_provider_headers() -> None:
    call = ADAPTER.build_request(target(), {"messages": [{"role": "user", "content": "hi"}]}, stream=True)
    assert call.url == "https://api.anthropic.com/v1/messages"
    assert call.headers["x-api-key"] == "sk-ant-test"
    assert call.headers["anthropic-version"] == ANTHROPIC_VERSION == "2023-06-01"
    assert call.headers["content-type"] == "application/json"
    assert call.headers["anthropic-beta"] == "context-1m-2025-08-07"
    body = json.loads(call.body)
    assert body["model"] == SONNET and body["stream"] is True
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


def test_keyless_target_sends_no_api_key_header() -> None:
    call = ADAPTER.build_request(target(key=None), {"messages": [{"role": "user", "content": "hi"}]}, stream=False)
    assert "x-api-key" not in call.headers
    assert json.loads(call.body)["stream"] is False


# --- request mapping -------------------------------------------------------------------------


def test_system_and_developer_messages_become_system_blocks_keeping_cache_control() -> None:
    body = body_of({"messages": [
        {"role": "system", "content": [{"type": "text", "text": "You are Roo.", "cache_control": EPHEMERAL}]},
        {"role": "developer", "content": "Answer in English."},
        {"role": "user", "content": "hi"},
    ]})
    assert body["system"] == [
        {"type": "text", "text": "You are Roo.", "cache_control": EPHEMERAL},
        {"type": "text", "text": "Answer in English."},
    ]
    assert [m["role"] for m in body["messages"]] == ["user"]


def test_message_level_cache_control_marks_the_last_block() -> None:
    body = body_of({"messages": [{"role": "system", "content": "S", "cache_control": EPHEMERAL},
                                 {"role": "user", "content": "hi"}]})
    assert body["system"] == [{"type": "text", "text": "S", "cache_control": EPHEMERAL}]


def test_parallel_tool_results_merge_into_one_user_turn_with_the_following_text() -> None:
    msgs = [*TOOL_TURN, {"role": "user", "content": [
        {"type": "text", "text": "<environment_details>cwd</environment_details>", "cache_control": EPHEMERAL}]}]
    body = body_of({"messages": msgs, "tools": TOOLS})
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assistant, results = body["messages"][1], body["messages"][2]
    # Roo's content "" is not sent as an empty text block
    assert assistant["content"] == [
        {"type": "tool_use", "id": "toolu_01A", "name": "read_file", "input": {"path": "a.yaml"}},
        {"type": "tool_use", "id": "toolu_01B", "name": "read_file", "input": {"path": "b.yaml"}},
    ]
    assert results["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "port: 80"},
        {"type": "tool_result", "tool_use_id": "toolu_01B", "content": "port: 443"},
        {"type": "text", "text": "<environment_details>cwd</environment_details>", "cache_control": EPHEMERAL},
    ]


def test_null_content_and_bad_json_arguments_are_tolerated() -> None:
    body = body_of({"messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "run", "arguments": '{"cmd": "ls'}},
            {"id": "c2", "type": "function", "function": {"name": "noop", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "a.txt"},
        {"role": "tool", "tool_call_id": "c2", "content": ""},
    ]})
    uses = body["messages"][1]["content"]
    assert uses[0]["input"] == {"arguments": '{"cmd": "ls'}
    assert uses[1]["input"] == {}
    assert body["messages"][2]["content"][1] == {"type": "tool_result", "tool_use_id": "c2"}


def test_foreign_tool_ids_are_made_valid_on_both_sides() -> None:
    body = body_of({"messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "functions.read_file:0", "type": "function", "function": {"name": "read_file", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "functions.read_file:0", "content": "ok"},
    ]})
    assert body["messages"][1]["content"][0]["id"] == "functions_read_file_0"
    assert body["messages"][2]["content"][0]["tool_use_id"] == "functions_read_file_0"


def test_unanswered_tool_use_gets_an_error_result_and_orphan_result_becomes_text() -> None:
    body = body_of({"messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "toolu_keep", "type": "function", "function": {"name": "a", "arguments": "{}"}},
            {"id": "toolu_lost", "type": "function", "function": {"name": "b", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "toolu_keep", "content": "done"},
        {"role": "tool", "tool_call_id": "toolu_condensed_away", "content": "old output"},
    ]})
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_keep", "content": "done"},
        {"type": "tool_result", "tool_use_id": "toolu_lost", "is_error": True,
         "content": "no result was recorded for this tool call"},
        {"type": "text", "text": "[result of tool call toolu_condensed_away]\nold output"},
    ]


def test_images_map_data_urls_to_base64_and_https_to_url_sources() -> None:
    body = body_of({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What differs?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/b.jpg"}, "cache_control": EPHEMERAL},
    ]}]})
    assert body["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/b.jpg"}, "cache_control": EPHEMERAL},
    ]


def test_consecutive_user_messages_merge_and_empty_text_is_dropped() -> None:
    body = body_of({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": ""},
                                 {"role": "user", "content": "b"}]})
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]


def test_prefilled_assistant_turn_loses_trailing_whitespace() -> None:
    body = body_of({"messages": [{"role": "user", "content": "JSON please"},
                                 {"role": "assistant", "content": "{\n  "}]})
    assert body["messages"][-1]["content"] == [{"type": "text", "text": "{"}]


def test_tools_map_to_input_schema_without_strict_or_schema_tag() -> None:
    body = body_of({"messages": [{"role": "user", "content": "hi"}], "tools": [
        *TOOLS, {"type": "function", "function": {"name": "list_files"}}]})
    assert body["tools"] == [
        {"name": "read_file", "description": "Read a file", "input_schema": {
            "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"],
            "additionalProperties": False}},
        {"name": "list_files", "input_schema": {"type": "object", "properties": {}}},
    ]


@pytest.mark.parametrize(("choice", "parallel", "expected"), [
    ("auto", None, {"type": "auto"}),
    ("none", False, {"type": "none"}),
    ("required", None, {"type": "any"}),
    ({"type": "function", "function": {"name": "read_file"}}, None, {"type": "tool", "name": "read_file"}),
    ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
    (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    (None, True, None),
])
def test_tool_choice_and_parallel_tool_calls(choice: Any, parallel: Any, expected: dict[str, Any] | None) -> None:
    req: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS}
    if choice is not None:
        req["tool_choice"] = choice
    if parallel is not None:
        req["parallel_tool_calls"] = parallel
    assert body_of(req).get("tool_choice") == expected


def test_tool_choice_is_not_sent_without_tools() -> None:
    assert "tool_choice" not in body_of({"messages": [{"role": "user", "content": "hi"}], "tool_choice": "required"})


def test_sampling_stop_user_and_limits_map_and_openai_only_fields_drop() -> None:
    body = body_of({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 1024,
                    "max_tokens": 99, "temperature": 0, "top_p": 0.9, "stop": ["\n", "END"], "user": "team-a",
                    "n": 1, "seed": 7, "logprobs": True, "stream_options": {"include_usage": True},
                    "presence_penalty": 0.5})
    assert body["max_tokens"] == 1024
    assert body["temperature"] == 0 and body["top_p"] == 0.9
    assert body["stop_sequences"] == ["END"]  # whitespace-only sequences are rejected upstream
    assert body["metadata"] == {"user_id": "team-a"}
    assert not {"n", "seed", "logprobs", "stream_options", "presence_penalty", "max_completion_tokens"} & set(body)


def test_max_tokens_default_is_documented_constant_and_claude_3_gets_its_cap() -> None:
    assert body_of({"messages": [{"role": "user", "content": "hi"}]})["max_tokens"] == DEFAULT_MAX_TOKENS == 8192
    old = body_of({"messages": [{"role": "user", "content": "hi"}]}, model="claude-3-haiku-20240307")
    assert old["max_tokens"] == 4096


def test_json_schema_response_format_becomes_output_config_format() -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    body = body_of({"messages": [{"role": "user", "content": "hi"}],
                    "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}})
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


# --- thinking --------------------------------------------------------------------------------


def test_reasoning_effort_enables_thinking_budget_and_drops_temperature() -> None:
    body = body_of({"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "high",
                    "temperature": 0, "top_p": 0.5})
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 16384}
    assert body["max_tokens"] > body["thinking"]["budget_tokens"]
    assert "temperature" not in body and "top_p" not in body


def test_small_max_tokens_is_raised_above_the_thinking_budget() -> None:
    body = body_of({"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "low", "max_tokens": 1000})
    assert body["thinking"]["budget_tokens"] == 2048
    assert body["max_tokens"] == 2048 + 1000


def test_adaptive_models_get_adaptive_thinking_with_effort() -> None:
    for model in ("claude-opus-4-7", "claude-sonnet-4-6", "claude-mythos-preview"):
        body = body_of({"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "medium",
                        "max_tokens": 1000}, model=model)
        assert body["thinking"] == {"type": "adaptive"}, model
        assert body["output_config"] == {"effort": "medium"}
        assert body["max_tokens"] == 1000


def test_no_thinking_for_none_effort_forced_tools_or_an_unsigned_tool_loop() -> None:
    plain = {"messages": [{"role": "user", "content": "hi"}]}
    assert "thinking" not in body_of({**plain, "reasoning_effort": "none"})
    forced = {**plain, "tools": TOOLS, "tool_choice": "required", "reasoning_effort": "high", "temperature": 0.2}
    assert "thinking" not in body_of(forced) and body_of(forced)["temperature"] == 0.2
    # OpenAI chat cannot echo the signed thinking block the last tool turn would need
    assert "thinking" not in body_of({"messages": TOOL_TURN, "tools": TOOLS, "reasoning_effort": "high"})
    answered = [*TOOL_TURN, {"role": "assistant", "content": "Ports differ."}, {"role": "user", "content": "Fix it"}]
    assert body_of({"messages": answered, "tools": TOOLS, "reasoning_effort": "high"})["thinking"]["type"] == "enabled"


# --- non-stream response ---------------------------------------------------------------------


def test_message_response_maps_text_thinking_tools_and_cached_usage() -> None:
    message = {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "model": SONNET,
        "content": [
            {"type": "thinking", "thinking": "Both files first.", "signature": "EqQBCg=="},
            {"type": "redacted_thinking", "data": "EmwKAhgB"},
            {"type": "text", "text": "Reading both."},
            {"type": "tool_use", "id": "toolu_01A", "name": "read_file", "input": {"path": "a.yaml"}},
            {"type": "tool_use", "id": "toolu_01B", "name": "list_files", "input": {}},
        ],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 50, "cache_creation_input_tokens": 200, "cache_read_input_tokens": 1000,
                  "output_tokens": 75,
                  "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 0}},
    }
    out = ADAPTER.parse_response(target(), json.dumps(message).encode())
    assert out["object"] == "chat.completion" and out["id"] == "chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL"
    msg = out["choices"][0]["message"]
    assert msg["content"] == "Reading both." and msg["reasoning_content"] == "Both files first."
    assert [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in msg["tool_calls"]] == [
        ("toolu_01A", "read_file", {"path": "a.yaml"}), ("toolu_01B", "list_files", {})]
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    usage = out["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (1250, 75, 1325)
    assert usage["prompt_tokens_details"]["cached_tokens"] == 1000
    assert usage["prompt_tokens_details"]["cache_creation_tokens"] == 200
    assert usage["prompt_tokens_details"]["ephemeral_5m_input_tokens"] == 200


@pytest.mark.parametrize(("stop", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("refusal", "content_filter"),
    ("pause_turn", "stop"), ("model_context_window_exceeded", "length"),
])
def test_stop_reasons_map_to_finish_reasons(stop: str, finish: str) -> None:
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": SONNET,
               "content": [{"type": "text", "text": "x"}], "stop_reason": stop,
               "usage": {"input_tokens": 1, "output_tokens": 1}}
    assert ADAPTER.parse_response(target(), json.dumps(message).encode())["choices"][0]["finish_reason"] == finish


# --- streams ---------------------------------------------------------------------------------


def test_parallel_tool_calls_count_from_zero_with_anthropic_ids_and_exact_arguments() -> None:
    chunks, _ = play("tool_use_two_calls.sse")
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(d.get("content", "") for d in deltas(chunks)) == "I'll read both config files to compare them."
    firsts = [tc for tc in tool_calls(chunks) if "id" in tc]
    assert [(tc["index"], tc["id"], tc["type"], tc["function"]["name"]) for tc in firsts] == [
        (0, "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "function", "read_file"),
        (1, "toolu_01Wj4Kd8cE7Gf2hYv9QaZm3N", "function", "read_file")]
    calls = reassemble(chunks)
    assert calls[0]["arguments"] == '{"path": "config/base.yaml"}'
    assert calls[1]["arguments"] == '{"path": "config/prod.yaml", "limit": 200}'
    assert finishes(chunks) == ["tool_calls"]


def test_stream_usage_is_one_chunk_with_cache_reads_counted_in_prompt() -> None:
    chunks, state = play("tool_use_two_calls.sse")
    usage_chunks = [c for c in chunks if c.get("usage")]
    assert len(usage_chunks) == 1 and usage_chunks[0]["choices"] == [] and usage_chunks[-1] is chunks[-1]
    usage = usage_chunks[0]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (10652, 118, 10770)
    assert usage["prompt_tokens_details"] == {"cached_tokens": 10240, "cache_creation_tokens": 0,
                                              "ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}
    assert ADAPTER.finish_stream(state) == []  # message_stop already sent it


def test_thinking_streams_as_reasoning_content_and_signatures_are_dropped() -> None:
    chunks, _ = play("thinking_then_text.sse", piece=11)
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas(chunks))
    assert reasoning.startswith("The user wants the GCD") and reasoning.endswith("147 = 7 × 21 + 0")
    assert "EqQBCg" not in json.dumps(chunks)
    text = "".join(d.get("content", "") for d in deltas(chunks))
    assert text == "The greatest common divisor of 1071 and 462 is **21**."
    assert finishes(chunks) == ["stop"]
    usage = chunks[-1]["usage"]
    assert usage["prompt_tokens"] == 86 + 1530 and usage["completion_tokens"] == 97
    assert usage["prompt_tokens_details"]["cache_creation_tokens"] == 1530
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 64}


def test_in_band_overloaded_error_raises_503_after_earlier_text() -> None:
    raw = (FIXTURES / "error_overloaded.sse").read_bytes()
    decoder, state = SSEDecoder(), ADAPTER.new_stream(target())
    seen: list[dict[str, Any]] = []
    with pytest.raises(GatewayError) as info:
        for event, data in decoder.feed(raw):
            seen.extend(ADAPTER.parse_event(state, event, data))
    assert "".join(d.get("content", "") for d in deltas(seen)) == "Let me check"
    assert info.value.status == 503 and info.value.type == "overloaded_error"
    assert "Overloaded" in info.value.message


@pytest.mark.parametrize(("etype", "status"), [("rate_limit_error", 429), ("api_error", 500), ("mystery", 502)])
def test_in_band_error_types_map_to_statuses(etype: str, status: int) -> None:
    state = ADAPTER.new_stream(target())
    with pytest.raises(GatewayError) as info:
        ADAPTER.parse_event(state, "error", json.dumps({"type": "error", "error": {"type": etype, "message": "m"}}))
    assert info.value.status == status


def test_tool_without_input_gets_empty_object_arguments_and_ping_is_ignored() -> None:
    state = ADAPTER.new_stream(target())
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "msg_2", "model": SONNET,
                                              "usage": {"input_tokens": 9, "output_tokens": 1}}},
        {"type": "ping"},
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "tool_use", "id": "toolu_x", "name": "list_files", "input": {}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": ""}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 12}},
        {"type": "message_stop"},
    ]
    chunks = [c for ev in events for c in ADAPTER.parse_event(state, ev["type"], json.dumps(ev))]
    assert reassemble(chunks) == {0: {"id": "toolu_x", "name": "list_files", "arguments": "{}"}}
    assert chunks[-1]["usage"]["prompt_tokens"] == 9 and chunks[-1]["usage"]["completion_tokens"] == 12


def test_cut_stream_still_reports_usage_at_eof_without_inventing_a_finish() -> None:
    state = ADAPTER.new_stream(target())
    start = {"type": "message_start", "message": {"id": "msg_3", "usage": {"input_tokens": 40, "output_tokens": 1}}}
    chunks = ADAPTER.parse_event(state, "message_start", json.dumps(start))
    tail = ADAPTER.finish_stream(state)
    assert finishes(chunks + tail) == []
    assert tail[0]["choices"] == [] and tail[0]["usage"]["prompt_tokens"] == 40
    assert ADAPTER.finish_stream(state) == []


def test_stream_passes_the_relay_normaliser_unchanged_in_meaning() -> None:
    chunks, _ = play("tool_use_two_calls.sse")
    transcript = Transcript()
    fixer = StreamNormaliser(transcript, include_usage=True)
    out = [fixed for c in chunks for fixed, _ in [fixer.fix(c)] if fixed is not None]
    assert [c.as_dict() for c in transcript.tool_calls] == [
        {"id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "read_file", "arguments": '{"path": "config/base.yaml"}'},
        {"id": "toolu_01Wj4Kd8cE7Gf2hYv9QaZm3N", "name": "read_file",
         "arguments": '{"path": "config/prod.yaml", "limit": 200}'}]
    assert transcript.finish_reason == "tool_calls" and transcript.usage is not None
    assert out[-1]["choices"] == []


# --- errors ----------------------------------------------------------------------------------


def test_error_bodies_keep_anthropic_type_and_529_becomes_503_overloaded() -> None:
    body = json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}).encode()
    err = ADAPTER.parse_error(529, body)
    assert (err.status, err.type, err.message) == (503, "overloaded_error", "Overloaded")
    limited = json.dumps({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}).encode()
    err = ADAPTER.parse_error(429, limited)
    assert (err.status, err.type) == (429, "rate_limit_error")
    bad = json.dumps({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: too big"}})
    assert ADAPTER.parse_error(400, bad.encode()).message == "max_tokens: too big"


def test_error_body_in_a_200_response_raises() -> None:
    body = json.dumps({"type": "error", "error": {"type": "api_error", "message": "Internal"}}).encode()
    with pytest.raises(GatewayError) as info:
        ADAPTER.parse_response(target(), body)
    assert info.value.status == 500
