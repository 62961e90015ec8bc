"""Inbound Anthropic Messages dialect: Claude Code's requests → canonical chat, chat answers → Messages.

Request fixtures follow what Claude Code 2.x sends (CLIENTS.md): system blocks with cache_control,
``{"role": "system"}`` entries in ``messages``, adaptive thinking with ``output_config.effort``,
``context_management``, ``metadata.user_id``, server tools beside custom ones.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from finopsd.dialects.anthropic_messages import (
    ChatToMessagesStream,
    chat_to_message,
    error_body,
    messages_to_chat,
)

EPHEMERAL = {"type": "ephemeral"}
READ_TOOL = {"name": "Read", "description": "Read a file", "input_schema": {
    "type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]},
    "cache_control": EPHEMERAL}
CLAUDE_CODE = {
    "model": "openai/gpt-5",
    "max_tokens": 32000,
    "stream": True,
    "system": [
        {"type": "text", "text": "You are Claude Code.", "cache_control": EPHEMERAL},
        {"type": "text", "text": "Use tools carefully."},
    ],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                                     {"type": "text", "text": "Read a.py", "cache_control": EPHEMERAL}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Read it first.", "signature": "EqQBCg=="},
            {"type": "redacted_thinking", "data": "EmwKAhgB"},
            {"type": "text", "text": "Reading."},
            {"type": "tool_use", "id": "toolu_01A", "name": "Read", "input": {"file_path": "a.py"}},
            {"type": "tool_use", "id": "toolu_01B", "name": "Read", "input": {"file_path": "b.py"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "print(1)"},
            {"type": "tool_result", "tool_use_id": "toolu_01B", "is_error": True,
             "content": [{"type": "text", "text": "File does not exist."}]},
            {"type": "text", "text": "Continue.", "cache_control": EPHEMERAL},
        ]},
        {"role": "system", "content": "Plan mode is off."},
    ],
    "tools": [READ_TOOL, {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
              {"type": "bash_20250124", "name": "bash"}],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "thinking": {"type": "adaptive", "display": "updates"},
    "output_config": {"effort": "medium"},
    "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
    "metadata": {"user_id": "user_4f2a_account_9c1e_session_77ab"},
    "temperature": 1,
}


# --- request: Messages → chat ----------------------------------------------------------------


def test_claude_code_request_maps_system_messages_tools_and_tool_results() -> None:
    req = messages_to_chat(CLAUDE_CODE)
    assert req["model"] == "openai/gpt-5" and req["max_tokens"] == 32000 and req["temperature"] == 1
    assert req["messages"] == [
        {"role": "system", "content": "You are Claude Code.\n\nUse tools carefully."},
        {"role": "user", "content": "<system-reminder>ctx</system-reminder>\n\nRead a.py"},
        {"role": "assistant", "content": "Reading.", "reasoning_content": "Read it first.", "tool_calls": [
            {"id": "toolu_01A", "type": "function", "function": {"name": "Read", "arguments": '{"file_path": "a.py"}'}},
            {"id": "toolu_01B", "type": "function", "function": {"name": "Read", "arguments": '{"file_path": "b.py"}'}},
        ]},
        {"role": "tool", "tool_call_id": "toolu_01A", "content": "print(1)"},
        {"role": "tool", "tool_call_id": "toolu_01B", "content": "Error: File does not exist."},
        {"role": "user", "content": "Continue."},
        {"role": "system", "content": "Plan mode is off."},
    ]


def test_anthropic_only_fields_and_server_tools_are_dropped() -> None:
    req = messages_to_chat(CLAUDE_CODE)
    assert req["tools"] == [{"type": "function", "function": {
        "name": "Read", "description": "Read a file", "parameters": READ_TOOL["input_schema"]}}]
    assert "cache_control" not in json.dumps(req)
    assert not {"context_management", "thinking", "output_config", "metadata", "system"} & set(req)


def test_tool_choice_effort_user_and_stream_usage_are_mapped() -> None:
    req = messages_to_chat(CLAUDE_CODE)
    assert req["tool_choice"] == "auto" and req["parallel_tool_calls"] is False
    assert req["reasoning_effort"] == "medium"
    assert req["user"] == "user_4f2a_account_9c1e_session_77ab"
    assert req["stream"] is True and req["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "any"}, "required"),
    ({"type": "none"}, "none"),
    ({"type": "tool", "name": "Read"}, {"type": "function", "function": {"name": "Read"}}),
])
def test_tool_choice_kinds(choice: dict[str, Any], expected: Any) -> None:
    req = messages_to_chat({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
                            "tools": [READ_TOOL], "tool_choice": choice})
    assert req["tool_choice"] == expected and "parallel_tool_calls" not in req


@pytest.mark.parametrize(("thinking", "config", "effort"), [
    ({"type": "enabled", "budget_tokens": 1024}, None, "low"),
    ({"type": "enabled", "budget_tokens": 10000}, None, "medium"),
    ({"type": "enabled", "budget_tokens": 32000}, None, "high"),
    ({"type": "adaptive"}, None, "high"),
    ({"type": "adaptive"}, {"effort": "max"}, "high"),
    ({"type": "adaptive"}, {"effort": "low"}, "low"),
    ({"type": "disabled"}, {"effort": "high"}, None),
    (None, None, None),
])
def test_thinking_and_effort_map_to_reasoning_effort(thinking: Any, config: Any, effort: str | None) -> None:
    body: dict[str, Any] = {"model": "m", "max_tokens": 64000, "messages": [{"role": "user", "content": "hi"}]}
    if thinking:
        body["thinking"] = thinking
    if config:
        body["output_config"] = config
    assert messages_to_chat(body).get("reasoning_effort") == effort


def test_images_in_user_turns_and_tool_results_become_image_url_parts() -> None:
    png = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    req = messages_to_chat({"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
                                     {"type": "text", "text": "and this screenshot:"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                      "content": [{"type": "text", "text": "shot.png"},
                                                  {"type": "image", "source": png}]}]},
    ]})
    assert req["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
        {"type": "text", "text": "and this screenshot:"}]
    # tool messages take text only: the image follows in a user message
    assert req["messages"][2] == {"role": "tool", "tool_call_id": "t1", "content": "shot.png"}
    assert req["messages"][3] == {"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}
    assert req["messages"][1]["content"] is None


def test_stop_sequences_and_json_schema_output_map() -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    req = messages_to_chat({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
                            "stop_sequences": ["a", "b", "c", "d", "e"], "top_p": 0.9, "top_k": 40,
                            "output_config": {"format": {"type": "json_schema", "schema": schema}}})
    assert req["stop"] == ["a", "b", "c", "d"]
    assert req["top_p"] == 0.9 and "top_k" not in req
    assert req["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    assert "stream" not in req


# --- response: chat.completion → Message ------------------------------------------------------


def test_chat_completion_becomes_message_with_thinking_text_and_tool_use() -> None:
    resp = {"id": "chatcmpl-abc", "object": "chat.completion", "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": "Reading.", "reasoning_content": "Need the file.",
                        "tool_calls": [
                            {"id": "call_1", "type": "function",
                             "function": {"name": "Read", "arguments": '{"file_path": "a.py"}'}},
                            {"id": "call_2", "type": "function",
                             "function": {"name": "Read", "arguments": '{"file_'}}]}}],
            "usage": {"prompt_tokens": 1200, "completion_tokens": 40, "total_tokens": 1240,
                      "prompt_tokens_details": {"cached_tokens": 1000}}}
    msg = chat_to_message(resp, "openai/gpt-5")
    assert msg["id"] == "msg_abc" and msg["type"] == "message" and msg["role"] == "assistant"
    assert msg["model"] == "openai/gpt-5"
    assert msg["content"] == [
        {"type": "thinking", "thinking": "Need the file.", "signature": ""},
        {"type": "text", "text": "Reading."},
        {"type": "tool_use", "id": "call_1", "name": "Read", "input": {"file_path": "a.py"}},
        {"type": "tool_use", "id": "call_2", "name": "Read", "input": {"arguments": '{"file_'}},
    ]
    assert msg["stop_reason"] == "tool_use" and msg["stop_sequence"] is None
    assert msg["usage"] == {"input_tokens": 200, "output_tokens": 40, "cache_read_input_tokens": 1000,
                            "cache_creation_input_tokens": 0}


@pytest.mark.parametrize(("finish", "stop"), [("stop", "end_turn"), ("length", "max_tokens"),
                                              ("content_filter", "refusal"), (None, "end_turn")])
def test_finish_reasons_map_to_stop_reasons(finish: Any, stop: str) -> None:
    resp = {"choices": [{"message": {"role": "assistant", "content": "x"}, "finish_reason": finish}]}
    assert chat_to_message(resp, "m")["stop_reason"] == stop


# --- stream: chunks → events -----------------------------------------------------------------


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, usage: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-5",
                           "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage:
        out["usage"] = usage
    return out


def run(chunks: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    stream = ChatToMessagesStream("openai/gpt-5")
    events = [e for c in chunks for e in stream.feed(c)] + stream.finish()
    assert stream.finish() == []  # closing is idempotent
    return events


def assert_valid_order(events: list[tuple[str, dict[str, Any]]]) -> None:
    """The order the streaming docs give; block indexes 0, 1, 2… each started once and stopped once."""
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert all(name == data["type"] for name, data in events)
    open_index, next_index = None, 0
    for name, data in events[1:-2]:
        if name == "content_block_start":
            assert open_index is None and data["index"] == next_index
            open_index, next_index = data["index"], next_index + 1
        else:
            assert data["index"] == open_index
            if name == "content_block_stop":
                open_index = None
    assert open_index is None


def test_reverse_stream_thinking_text_and_two_tool_calls_in_documented_order() -> None:
    events = run([
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "Need both "}), chunk({"reasoning_content": "files."}),
        chunk({"content": "Reading "}), chunk({"content": "them."}),
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                               "function": {"name": "Read", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"file_pa'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'th": "a.py"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                               "function": {"name": "Read", "arguments": '{"file_path":'}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": ' "b.py"}'}}]}),
        chunk({}, "tool_calls"),
        chunk(usage={"prompt_tokens": 900, "completion_tokens": 55, "prompt_tokens_details": {"cached_tokens": 512}}),
    ])
    assert_valid_order(events)
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert starts == [{"type": "thinking", "thinking": "", "signature": ""}, {"type": "text", "text": ""},
                      {"type": "tool_use", "id": "call_a", "name": "Read", "input": {}},
                      {"type": "tool_use", "id": "call_b", "name": "Read", "input": {}}]
    by_index: dict[int, str] = {}
    for name, data in events:
        if name == "content_block_delta":
            d = data["delta"]
            by_index[data["index"]] = by_index.get(data["index"], "") + (
                d.get("thinking") or d.get("text") or d.get("partial_json") or "")
    assert by_index == {0: "Need both files.", 1: "Reading them.",
                        2: '{"file_path": "a.py"}', 3: '{"file_path": "b.py"}'}
    assert [json.loads(by_index[i]) for i in (2, 3)] == [{"file_path": "a.py"}, {"file_path": "b.py"}]
    delta_event = events[-2][1]
    assert delta_event["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert delta_event["usage"] == {"input_tokens": 388, "output_tokens": 55, "cache_read_input_tokens": 512,
                                    "cache_creation_input_tokens": 0}
    start = events[0][1]["message"]
    assert start["role"] == "assistant" and start["content"] == [] and start["model"] == "openai/gpt-5"
    assert start["id"].startswith("msg_") and start["usage"] == {"input_tokens": 0, "output_tokens": 0}


def test_reverse_stream_with_only_tool_calls_and_no_usage_or_finish_is_still_valid() -> None:
    events = run([chunk({"role": "assistant", "tool_calls": [
        {"index": 0, "id": "call_x", "type": "function",
         "function": {"name": "Read", "arguments": '{"file_path": "c"}'}}]})])
    assert_valid_order(events)
    assert [n for n, _ in events] == ["message_start", "content_block_start", "content_block_delta",
                                      "content_block_stop", "message_delta", "message_stop"]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert events[-2][1]["usage"]["output_tokens"] == 0


def test_reverse_stream_with_nothing_at_all_still_opens_and_closes_the_message() -> None:
    events = run([])
    assert [n for n, _ in events] == ["message_start", "message_delta", "message_stop"]
    assert events[1][1]["delta"]["stop_reason"] == "end_turn"


def test_reverse_stream_text_after_a_tool_call_opens_a_new_block_and_length_maps() -> None:
    events = run([
        chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "Read", "arguments": "{}"}}]}),
        chunk({"content": "Also…"}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "late"}}]}),  # its block is closed
        chunk({}, "length"),
    ])
    assert_valid_order(events)
    assert "late" not in json.dumps(events)
    assert [d["content_block"]["type"] for n, d in events if n == "content_block_start"] == ["tool_use", "text"]
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "etype"), [
    (400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
    (404, "not_found_error"), (413, "request_too_large"), (429, "rate_limit_error"), (500, "api_error"),
    (502, "api_error"), (503, "overloaded_error"), (529, "overloaded_error"), (422, "invalid_request_error"),
])
def test_error_body_has_the_anthropic_shape_and_type_for_the_status(status: int, etype: str) -> None:
    assert error_body(status, "boom") == {"type": "error", "error": {"type": etype, "message": "boom"}}


def test_reverse_stream_is_accumulated_by_the_real_anthropic_sdk() -> None:
    """The SDK's own accumulator (what Claude Code's SDK runs) rebuilds a valid Message from our events."""
    from anthropic.lib.streaming._messages import accumulate_event  # private, but it is the SDK's parser
    from anthropic.types import Message

    events = run([
        chunk({"role": "assistant", "reasoning_content": "Think."}),
        chunk({"content": "Reading."}),
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                               "function": {"name": "Read", "arguments": '{"file_path": "a'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '.py"}'}}]}),
        chunk({}, "tool_calls"),
        chunk(usage={"prompt_tokens": 30, "completion_tokens": 9}),
    ])
    snapshot: Any = None
    bufs: dict[int, bytes] = {}
    for _, data in events:
        snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=bufs)  # type: ignore[arg-type]
    message = Message.model_validate(snapshot.to_dict())
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[2].input == {"file_path": "a.py"}  # type: ignore[union-attr]
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (30, 9)
