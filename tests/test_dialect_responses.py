"""Inbound Responses dialect: Codex CLI requests → canonical chat, chat answers → Responses objects/events.

Request fixtures follow what Codex CLI 0.16x sends (CLIENTS.md): instructions, developer and user
messages, function tools beside ``namespace`` and ``web_search`` tools, ``store: false``,
``include: ["reasoning.encrypted_content"]``, ``reasoning: {summary: "auto"}``, ``prompt_cache_key``.
Every emitted event is parsed with the ``openai`` SDK's own types and fed to its stream
accumulator, as ``client.responses.stream`` would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from finopsd.dialects.responses import (
    ChatToResponsesStream,
    chat_to_response,
    new_response_id,
    responses_to_chat,
)
from finopsd.errors import BadRequest

FIXTURES = Path(__file__).parent / "fixtures" / "responses"
EVENT = TypeAdapter(ResponseStreamEvent)
CREATED_AT = 1760000000


def fixture(name: str) -> Any:
    path = FIXTURES / name
    if name.endswith(".jsonl"):
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return json.loads(path.read_text())


def parse_events(events: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """Each event through JSON and the SDK's types; sequence numbers must count up from 0."""
    parsed = []
    for n, (name, data) in enumerate(events):
        assert data["type"] == name and data["sequence_number"] == n
        parsed.append(EVENT.validate_python(json.loads(json.dumps(data))))
    return parsed


def accumulate(parsed: list[Any]) -> Any:
    """The SDK's own stream accumulator: it raises on events out of order or items left open."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    out = []
    for event in parsed:
        out += state.handle_event(event)
    return out[-1].response


def run_stream(chunks: list[dict[str, Any]], request: dict[str, Any] | None = None,
               ) -> tuple[ChatToResponsesStream, list[tuple[str, dict[str, Any]]]]:
    stream = ChatToResponsesStream(response_id="resp_test", model="groq/openai/gpt-oss-120b",
                                   created_at=CREATED_AT, request=request or {})
    events = stream.start()
    for chunk in chunks:
        events += stream.feed(chunk)
    return stream, events + stream.finish()


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": CREATED_AT, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


# --- requests -------------------------------------------------------------------------------


def test_codex_first_turn_becomes_a_chat_request():
    req, notes = responses_to_chat(fixture("codex_first_turn.json"))
    assert [m["role"] for m in req["messages"]] == ["system", "system", "user", "user"]
    assert req["messages"][0]["content"].startswith("You are Codex")
    assert req["messages"][1]["content"].startswith("<permissions instructions>")
    # the AGENTS.md part and the environment part stay one user message, as Codex sent them
    agents = req["messages"][2]["content"]
    assert agents.startswith("# AGENTS.md") and "<cwd>/home/dev/shop" in agents
    assert req["messages"][3] == {"role": "user", "content": "What is in src/? Then show README.md."}
    assert [t["function"]["name"] for t in req["tools"]] == ["exec_command", "write_stdin", "update_plan"]
    assert req["tools"][0]["function"]["parameters"]["required"] == ["cmd"]
    assert req["tools"][0]["function"]["strict"] is False
    assert req["tool_choice"] == "auto" and req["parallel_tool_calls"] is True
    assert req["stream"] is True and req["stream_options"] == {"include_usage": True}
    assert req["model"] == "groq/openai/gpt-oss-120b"
    for dropped in ("store", "include", "prompt_cache_key", "client_metadata", "reasoning", "reasoning_effort"):
        assert dropped not in req
    assert any("'namespace' 'mcp__docs'" in n for n in notes)
    assert any("'web_search'" in n for n in notes)
    assert not any("store" in n or "include" in n or "prompt_cache_key" in n for n in notes)


def test_tool_loop_items_become_tool_calls_and_tool_messages_with_matching_ids():
    req, notes = responses_to_chat(fixture("codex_tool_loop.json"))
    tail = req["messages"][4:]
    assert [m["role"] for m in tail] == ["assistant", "tool", "tool"]
    # both calls join the assistant's text message that came right before them
    assert tail[0]["content"] == "Let me look."
    assert [c["id"] for c in tail[0]["tool_calls"]] == ["call_ls", "call_cat"]
    assert tail[0]["tool_calls"][0] == {"id": "call_ls", "type": "function",
                                        "function": {"name": "exec_command", "arguments": "{\"cmd\":\"ls src\"}"}}
    assert [m["tool_call_id"] for m in tail[1:]] == ["call_ls", "call_cat"]
    assert "cart.py" in tail[1]["content"]
    assert any("reasoning items dropped" in n for n in notes)


def test_consecutive_function_calls_without_text_form_one_assistant_message():
    req, _ = responses_to_chat({"model": "m", "input": [
        {"role": "user", "content": "go"},
        {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "b", "arguments": {"x": 1}},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "done"}]},
    ]})
    assistant = req["messages"][1]
    assert assistant["content"] is None
    assert [c["function"]["name"] for c in assistant["tool_calls"]] == ["a", "b"]
    assert assistant["tool_calls"][1]["function"]["arguments"] == '{"x": 1}'
    assert req["messages"][2:] == [{"role": "tool", "tool_call_id": "c1", "content": "ok"},
                                   {"role": "tool", "tool_call_id": "c2", "content": "done"}]


def test_string_input_becomes_one_user_message_after_instructions():
    # explicit nulls are "not given", as the SDK treats them: no notes for them
    req, notes = responses_to_chat({"model": "m", "input": "hi", "instructions": "Be brief.", "max_tool_calls": None})
    assert req["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert notes == [] and "stream" not in req


def test_images_by_url_are_kept_and_file_ids_dropped_with_a_note():
    req, notes = responses_to_chat({"model": "m", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"},
        {"type": "input_image", "file_id": "file-abc123", "detail": "auto"},
    ]}]})
    assert req["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
    ]
    assert any("file_id" in n for n in notes)


def test_tool_output_images_follow_the_tool_messages_as_a_user_message():
    req, _ = responses_to_chat({"model": "m", "input": [
        {"type": "function_call", "call_id": "c1", "name": "shot", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "shot", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": [
            {"type": "input_text", "text": "screenshot:"},
            {"type": "input_image", "image_url": "https://example.com/s.png"}]},
        {"type": "function_call_output", "call_id": "c2", "output": "none"},
    ]})
    assert [m["role"] for m in req["messages"]] == ["assistant", "tool", "tool", "user"]
    assert req["messages"][1]["content"] == "screenshot:"
    assert req["messages"][3]["content"] == [{"type": "image_url", "image_url": {"url": "https://example.com/s.png"}}]


def test_sampling_format_effort_and_tool_choice_map_to_chat_fields():
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    req, notes = responses_to_chat({
        "model": "m", "input": "x", "max_output_tokens": 900, "temperature": 0.2, "top_p": 0.9,
        "reasoning": {"effort": "high", "summary": "detailed"}, "safety_identifier": "user-7f3a",
        "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}],
        "tool_choice": {"type": "function", "name": "lookup"}, "parallel_tool_calls": False,
        "text": {"format": {"type": "json_schema", "name": "verdict", "schema": schema, "strict": True}},
        "top_logprobs": 3,
    })
    assert (req["max_tokens"], req["temperature"], req["top_p"]) == (900, 0.2, 0.9)
    assert req["reasoning_effort"] == "high" and req["user"] == "user-7f3a"
    assert req["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert req["parallel_tool_calls"] is False
    assert req["response_format"] == {"type": "json_schema",
                                      "json_schema": {"name": "verdict", "schema": schema, "strict": True}}
    assert notes == ["top_logprobs dropped: no chat equivalent"]


def test_json_object_format_and_user_field():
    req, _ = responses_to_chat({"model": "m", "input": "x", "user": "u1",
                                "text": {"format": {"type": "json_object"}}})
    assert req["response_format"] == {"type": "json_object"} and req["user"] == "u1"


def test_tool_choice_and_parallel_flag_are_dropped_when_no_function_tool_remains():
    req, notes = responses_to_chat({"model": "m", "input": "x", "tools": [{"type": "web_search"}],
                                    "tool_choice": "required", "parallel_tool_calls": True})
    assert "tools" not in req and "tool_choice" not in req and "parallel_tool_calls" not in req
    assert notes == ["tool type 'web_search' dropped: only function tools reach a chat upstream"]


def test_tool_choice_naming_a_dropped_tool_falls_back_to_the_default():
    req, notes = responses_to_chat({"model": "m", "input": "x", "tool_choice": {"type": "web_search_preview"},
                                    "tools": [{"type": "function", "name": "f"}, {"type": "web_search_preview"}]})
    assert "tool_choice" not in req and req["tools"] == [{"type": "function", "function": {"name": "f"}}]
    assert any("tool_choice 'web_search_preview' dropped" in n for n in notes)


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "m", "input": 42}, "input"),
    ({"model": "m", "input": [{"content": "no type, no role"}]}, "input[0].type"),
    ({"model": "m", "input": ["just a string"]}, "input[0]"),
    ({"model": "m", "input": [{"type": "message", "role": "robot", "content": "x"}]}, "input[0].role"),
    ({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    ({"model": "m", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
    ({"input": "x"}, "model"),
    ({"model": "m", "input": "x", "instructions": [{"role": "system", "content": "x"}]}, "instructions"),
    ({"model": "m", "input": "x", "max_output_tokens": -5}, "max_output_tokens"),
    ({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}, "text.format.schema"),
])
def test_bad_shapes_raise_bad_request_naming_the_param(body, param):
    with pytest.raises(BadRequest) as err:
        responses_to_chat(body)
    assert err.value.param == param and err.value.status == 400


# --- whole answers --------------------------------------------------------------------------


def test_chat_completion_becomes_a_response_the_sdk_accepts():
    request = fixture("codex_first_turn.json")
    completion = {
        "id": "chatcmpl-1", "object": "chat.completion", "created": CREATED_AT, "model": "gpt-oss-120b",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Listing.", "reasoning_content": "Need ls.",
            "tool_calls": [{"id": "call_ls", "type": "function",
                            "function": {"name": "exec_command", "arguments": "{\"cmd\":\"ls src\"}"}}]}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
                  "prompt_tokens_details": {"cached_tokens": 64, "cache_creation_tokens": 8},
                  "completion_tokens_details": {"reasoning_tokens": 5}},
    }
    resp_id = new_response_id()
    body = chat_to_response(completion, response_id=resp_id, model="groq/openai/gpt-oss-120b",
                            created_at=CREATED_AT, request=request)
    resp = Response.model_validate(json.loads(json.dumps(body)))
    assert resp.id == resp_id and resp_id.startswith("resp_") and resp.status == "completed"
    assert [o.type for o in resp.output] == ["reasoning", "message", "function_call"]
    assert resp.output[0].summary[0].text == "Need ls."
    assert resp.output_text == "Listing."
    call = resp.output[2]
    assert (call.call_id, call.name, call.status) == ("call_ls", "exec_command", "completed")
    assert call.id and call.id.startswith("fc_")
    assert resp.usage.input_tokens == 100 and resp.usage.input_tokens_details.cached_tokens == 64
    assert resp.usage.input_tokens_details.cache_write_tokens == 8
    assert resp.usage.output_tokens_details.reasoning_tokens == 5 and resp.usage.total_tokens == 120
    assert resp.instructions == request["instructions"] and len(resp.tools) == 5
    assert resp.parallel_tool_calls is True and resp.tool_choice == "auto"
    assert body["store"] is False and resp.reasoning.summary == "auto"
    assert resp.prompt_cache_key == request["prompt_cache_key"]


@pytest.mark.parametrize(("finish", "reason"), [("length", "max_output_tokens"),
                                                ("content_filter", "content_filter")])
def test_truncated_completion_becomes_an_incomplete_response(finish, reason):
    message = {"role": "assistant", "content": "Partial"}
    completion = {"choices": [{"index": 0, "finish_reason": finish, "message": message}]}
    body = chat_to_response(completion, response_id="resp_1", model="m", created_at=CREATED_AT,
                            request={"max_output_tokens": 16})
    resp = Response.model_validate(body)
    assert resp.status == "incomplete" and resp.incomplete_details.reason == reason
    assert resp.output[0].status == "incomplete" and resp.max_output_tokens == 16
    assert resp.completed_at is None and resp.usage is None


# --- streams --------------------------------------------------------------------------------


def test_text_stream_follows_the_documented_event_order():
    chunks = [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), chunk({"content": "lo"}),
              chunk({}, "stop")]
    stream, events = run_stream(chunks, {"instructions": "Be brief.", "store": False})
    assert [name for name, _ in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]
    parsed = parse_events(events)
    assert parsed[0].response.status == "in_progress" and parsed[0].response.output == []
    assert parsed[2].item.status == "in_progress" and parsed[8].item.status == "completed"
    assert {p.item_id for p in parsed[3:8]} == {parsed[2].item.id}
    assert parsed[6].text == "Hello"
    final = accumulate(parsed)
    assert final.output_text == "Hello" and final.status == "completed" and final.instructions == "Be brief."
    assert Response.model_validate(stream.response).output_text == "Hello"


def test_reasoning_then_text_gives_a_reasoning_item_before_the_message():
    stream, events = run_stream(fixture("chat_reasoning_text.jsonl"))
    parsed = parse_events(events)
    names = [name for name, _ in events]
    assert names[2:8] == ["response.output_item.added", "response.reasoning_summary_part.added",
                          "response.reasoning_summary_text.delta", "response.reasoning_summary_text.delta",
                          "response.reasoning_summary_text.done", "response.reasoning_summary_part.done"]
    assert names[8] == "response.output_item.done" and parsed[8].item.type == "reasoning"
    assert parsed[6].text == "The user wants the files in src."
    assert parsed[9].item.type == "message" and parsed[9].output_index == 1
    final = accumulate(parsed)
    assert [o.type for o in final.output] == ["reasoning", "message"]
    assert final.output[0].summary[0].text == "The user wants the files in src."
    assert final.output_text == "src/ holds app.py and cart.py."


def test_usage_chunk_fills_the_completed_response_usage():
    stream, events = run_stream(fixture("chat_reasoning_text.jsonl"))
    usage = parse_events(events)[-1].response.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (2310, 64, 2374)
    assert usage.input_tokens_details.cached_tokens == 2048
    assert usage.output_tokens_details.reasoning_tokens == 21
    assert stream.response["usage"]["input_tokens"] == 2310


def test_parallel_tool_calls_with_fragmented_arguments_become_two_function_call_items():
    stream, events = run_stream(fixture("chat_parallel_tools.jsonl"), fixture("codex_first_turn.json"))
    parsed = parse_events(events)
    added = [p for p in parsed if p.type == "response.output_item.added"]
    assert [(a.output_index, a.item.call_id, a.item.name, a.item.arguments) for a in added] == [
        (0, "call_ls", "exec_command", ""), (1, "call_cat", "exec_command", "")]
    deltas = [p for p in parsed if p.type == "response.function_call_arguments.delta"]
    assert [(d.output_index, d.item_id) for d in deltas] == [(0, added[0].item.id)] * 2 + [(1, added[1].item.id)] * 2
    done = [p for p in parsed if p.type == "response.function_call_arguments.done"]
    assert [json.loads(d.arguments) for d in done] == [{"cmd": "ls src"}, {"cmd": "cat README.md"}]
    assert [d.name for d in done] == ["exec_command", "exec_command"]  # kept as an extra field by the SDK
    final = accumulate(parsed)
    assert [(o.call_id, o.status) for o in final.output] == [("call_ls", "completed"), ("call_cat", "completed")]
    assert final.usage.output_tokens == 41


def test_streamed_tool_calls_round_trip_into_the_next_request():
    stream, _ = run_stream(fixture("chat_parallel_tools.jsonl"), fixture("codex_first_turn.json"))
    follow_up = fixture("codex_first_turn.json")
    follow_up["input"] += stream.response["output"] + [
        {"type": "function_call_output", "call_id": "call_ls", "output": "app.py\ncart.py"},
        {"type": "function_call_output", "call_id": "call_cat", "output": "# Shop"}]
    req, _ = responses_to_chat(follow_up)
    assistant, *tools = req["messages"][-3:]
    assert [c["id"] for c in assistant["tool_calls"]] == [t["tool_call_id"] for t in tools] == ["call_ls", "call_cat"]
    assert assistant["tool_calls"][1]["function"]["arguments"] == '{"cmd":"cat README.md"}'


def test_length_finish_ends_the_stream_with_response_incomplete():
    stream, events = run_stream([chunk({"content": "Partial"}), chunk({}, "length")])
    parsed = parse_events(events)
    assert parsed[-1].type == "response.incomplete"
    assert parsed[-1].response.incomplete_details.reason == "max_output_tokens"
    assert parsed[-2].item.status == "incomplete"
    assert stream.finish() == [] and stream.feed(chunk({"content": "late"})) == []


def test_fail_ends_the_stream_with_response_failed_and_the_error():
    stream = ChatToResponsesStream(response_id="resp_f", model="m", created_at=CREATED_AT, request={})
    events = stream.start() + stream.feed(chunk({"content": "Half"}))
    events += stream.fail("Rate limit reached. Please try again in 2s.", "rate_limit_exceeded")
    parsed = parse_events(events)
    failed = parsed[-1].response
    assert parsed[-1].type == "response.failed" and failed.status == "failed"
    assert (failed.error.code, failed.error.message) == ("rate_limit_exceeded",
                                                         "Rate limit reached. Please try again in 2s.")
    assert failed.output[0].status == "incomplete" and failed.output[0].content[0].text == "Half"
    assert stream.finish() == [] and stream.response["status"] == "failed"


def test_fail_before_any_chunk_still_starts_the_stream():
    stream = ChatToResponsesStream(response_id="resp_f", model="m", created_at=CREATED_AT, request={})
    names = [name for name, _ in stream.fail("upstream unreachable", None)]
    assert names == ["response.created", "response.in_progress", "response.failed"]
    assert stream.response["error"] == {"code": "server_error", "message": "upstream unreachable"}


def test_text_after_tool_calls_closes_them_and_opens_a_message():
    chunks = [chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{}"}}]}),
              chunk({"content": "Done."}), chunk({}, "tool_calls")]
    _, events = run_stream(chunks)
    parsed = parse_events(events)
    done = [p for p in parsed if p.type == "response.output_item.done"]
    assert [(d.output_index, d.item.type) for d in done] == [(0, "function_call"), (1, "message")]
    assert accumulate(parsed).output_text == "Done."


def test_response_property_mid_stream_is_a_valid_snapshot_in_progress():
    stream = ChatToResponsesStream(response_id="resp_p", model="m", created_at=CREATED_AT, request={})
    stream.feed(chunk({"content": "So far"}))
    snapshot = Response.model_validate(stream.response)
    assert snapshot.status == "in_progress" and snapshot.output[0].status == "in_progress"
    assert snapshot.output_text == "So far"
