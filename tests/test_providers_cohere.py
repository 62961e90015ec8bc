"""Cohere adapter: pure translation, OpenAI chat ↔ Chat API v2, no network.

Stream fixtures under tests/fixtures/cohere/ follow the documented v2 event stream (the tool-use
example of docs.cohere.com/v2/docs/tool-use-streaming: a tool plan, two parallel get_weather
calls, message-end with TOOL_CALL; a reasoning model's thinking then text with citations; a
message-end with ERROR), one ``event:``/``data:`` pair per event.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from finopsd.chunks import StreamNormaliser
from finopsd.config import ProviderConfig
from finopsd.errors import GatewayError, UpstreamError, UpstreamTimeout
from finopsd.exchange import Transcript
from finopsd.providers.base import Target
from finopsd.providers.cohere import CohereAdapter
from finopsd.sse import SSEDecoder

FIXTURES = Path(__file__).parent / "fixtures" / "cohere"
ADAPTER = CohereAdapter()
MODEL = "command-a-03-2025"
WEATHER: list[dict[str, Any]] = [{"type": "function", "function": {
    "name": "get_weather", "description": "Gets the weather of a given location", "strict": True,
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}]
TOOL_TURN: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a weather bot."},
    {"role": "user", "content": "What's the weather in Madrid and Brasilia?"},
    {"role": "assistant", "content": "I will search for the weather in Madrid and Brasilia.", "tool_calls": [
        {"id": "get_weather_p1t92w7gfgq7", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"location": "Madrid"}'}},
        {"id": "get_weather_ay6nmvjgp9vn", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"location": "Brasilia"}'}}]},
    {"role": "tool", "tool_call_id": "get_weather_p1t92w7gfgq7", "content": '{"temperature": "24C"}'},
    {"role": "tool", "tool_call_id": "get_weather_ay6nmvjgp9vn", "content": '{"temperature": "28C"}'},
]


def target(model: str = MODEL, key: str | None = "co-test-key") -> Target:
    provider = ProviderConfig(name="cohere", type="cohere", base_url="https://api.cohere.com",
                              headers={"X-Client-Name": "finopsd"})
    return Target(provider, model, key, "cohere-0" if key else None)


def body_of(req: dict[str, Any], model: str = MODEL, stream: bool = False) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(ADAPTER.build_request(target(model), req, stream=stream).body)
    return parsed


def play(name: str, piece: int = 31) -> list[dict[str, Any]]:
    """Feed a fixture through the SSE decoder in odd-sized reads, then the adapter's EOF hook."""
    raw = (FIXTURES / name).read_bytes()
    decoder, state = SSEDecoder(), ADAPTER.new_stream(target())
    chunks: list[dict[str, Any]] = []
    for i in range(0, len(raw), piece):
        for event, data in decoder.feed(raw[i : i + piece]):
            chunks.extend(ADAPTER.parse_event(state, event, data))
    for event, data in decoder.close():
        chunks.extend(ADAPTER.parse_event(state, event, data))
    return chunks + ADAPTER.finish_stream(state)


def deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks if c["choices"]]


# --- request -----------------------------------------------------------------------------------


def test_request_goes_to_v2_chat_with_bearer_key_and_provider_headers() -> None:
    call = ADAPTER.build_request(target(), {"messages": [{"role": "user", "content": "hi"}]}, stream=True)
    assert call.url == "https://api.cohere.com/v2/chat"
    assert call.headers["Authorization"] == "Bearer co-test-key"
    assert call.headers["X-Client-Name"] == "finopsd" and call.headers["Accept"] == "text/event-stream"
    assert json.loads(call.body) == {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}


def test_two_turn_tool_history_maps_plan_calls_and_results() -> None:
    body = body_of({"messages": TOOL_TURN, "tools": WEATHER})
    assert body["messages"][0] == {"role": "system", "content": "You are a weather bot."}
    assert body["messages"][2] == {"role": "assistant",
                                   "tool_plan": "I will search for the weather in Madrid and Brasilia.",
                                   "tool_calls": TOOL_TURN[2]["tool_calls"]}
    assert body["messages"][3:] == [
        {"role": "tool", "tool_call_id": "get_weather_p1t92w7gfgq7", "content": '{"temperature": "24C"}'},
        {"role": "tool", "tool_call_id": "get_weather_ay6nmvjgp9vn", "content": '{"temperature": "28C"}'}]
    assert body["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Gets the weather of a given location",
        "parameters": WEATHER[0]["function"]["parameters"]}}]
    assert body["strict_tools"] is True


def test_empty_assistant_text_beside_tool_calls_sends_no_plan_and_empty_results_say_so() -> None:
    msgs = [{"role": "user", "content": "ls"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "list_files", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "c1", "content": ""}]
    body = body_of({"messages": msgs})
    assert body["messages"][1] == {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "list_files", "arguments": "{}"}}]}
    assert body["messages"][2]["content"] == "(empty)"


@pytest.mark.parametrize(("choice", "expected"), [
    ("required", "REQUIRED"), ("none", "NONE"), ({"type": "function", "function": {"name": "get_weather"}}, "REQUIRED"),
])
def test_tool_choice_maps_to_required_or_none(choice: Any, expected: str) -> None:
    assert body_of({"messages": [{"role": "user", "content": "hi"}], "tools": WEATHER,
                    "tool_choice": choice})["tool_choice"] == expected


def test_auto_tool_choice_is_left_to_the_model() -> None:
    assert "tool_choice" not in body_of({"messages": [{"role": "user", "content": "hi"}], "tools": WEATHER,
                                         "tool_choice": "auto"})


def test_sampling_limits_and_stops_use_cohere_names_and_bounds() -> None:
    body = body_of({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 300,
                    "temperature": 0.2, "top_p": 1.0, "seed": 7, "stop": ["a", "b", "c", "d", "e", "f"]})
    assert (body["max_tokens"], body["temperature"], body["p"], body["seed"]) == (300, 0.2, 0.99, 7)
    assert body["stop_sequences"] == ["a", "b", "c", "d", "e"]


def test_response_format_json_schema_becomes_json_object_with_schema() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    body = body_of({"messages": [{"role": "user", "content": "hi"}],
                    "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}})
    assert body["response_format"] == {"type": "json_object", "json_schema": schema}


def test_images_keep_openai_part_shape_and_text_only_parts_collapse_to_a_string() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    body = body_of({"messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, image]},
                                 {"role": "assistant", "content": "A cat."},
                                 {"role": "user", "content": [{"type": "text", "text": "sure?"}]}]})
    assert body["messages"][0]["content"] == [{"type": "text", "text": "what?"}, image]
    assert body["messages"][2]["content"] == "sure?"


def test_reasoning_effort_sets_thinking_only_on_reasoning_models() -> None:
    req = {"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "low"}
    assert body_of(req, "command-a-reasoning-08-2025")["thinking"] == {"type": "enabled", "token_budget": 2048}
    assert body_of({**req, "reasoning_effort": "none"}, "command-a-reasoning-08-2025")["thinking"] == {"type": "disabled"}
    assert "thinking" not in body_of(req)


# --- non-stream response -----------------------------------------------------------------------


def test_response_with_plan_and_parallel_calls_maps_to_content_and_tool_calls() -> None:
    answer = {"id": "fba98ad3", "finish_reason": "TOOL_CALL", "message": {
        "role": "assistant", "tool_plan": "I will search for the weather in Madrid and Brasilia.",
        "tool_calls": TOOL_TURN[2]["tool_calls"]},
        "usage": {"billed_units": {"input_tokens": 37, "output_tokens": 28},
                  "tokens": {"input_tokens": 913, "output_tokens": 83}}}
    done = ADAPTER.parse_response(target(), json.dumps(answer).encode())
    choice = done["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I will search for the weather in Madrid and Brasilia."
    assert [(c["id"], c["function"]["arguments"]) for c in choice["message"]["tool_calls"]] == [
        ("get_weather_p1t92w7gfgq7", '{"location": "Madrid"}'), ("get_weather_ay6nmvjgp9vn", '{"location": "Brasilia"}')]
    assert (done["usage"]["prompt_tokens"], done["usage"]["completion_tokens"]) == (37, 28)
    assert done["id"] == "chatcmpl-fba98ad3"


def test_usage_falls_back_to_tokens_without_billed_units() -> None:
    answer = {"id": "x", "finish_reason": "MAX_TOKENS",
              "message": {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm"},
                                                           {"type": "text", "text": "cut"}]},
              "usage": {"tokens": {"input_tokens": 50, "output_tokens": 10}}}
    done = ADAPTER.parse_response(target(), json.dumps(answer).encode())
    assert done["choices"][0]["finish_reason"] == "length"
    assert done["choices"][0]["message"]["reasoning_content"] == "hm"
    assert done["usage"]["total_tokens"] == 60


@pytest.mark.parametrize(("reason", "error"), [("ERROR", UpstreamError), ("TIMEOUT", UpstreamTimeout)])
def test_failed_finish_reasons_raise(reason: str, error: type[GatewayError]) -> None:
    answer = {"id": "x", "finish_reason": reason, "message": {"role": "assistant", "content": []}}
    with pytest.raises(error):
        ADAPTER.parse_response(target(), json.dumps(answer).encode())


# --- stream ------------------------------------------------------------------------------------


def test_parallel_tool_calls_count_from_zero_with_ids_names_and_exact_arguments() -> None:
    chunks = play("parallel_tool_calls.sse")
    calls = [c for d in deltas(chunks) for c in d.get("tool_calls", [])]
    assert [(c["index"], c["id"], c["function"]["name"]) for c in calls if "id" in c] == [
        (0, "get_weather_p1t92w7gfgq7", "get_weather"), (1, "get_weather_ay6nmvjgp9vn", "get_weather")]
    args = {i: "".join(c["function"]["arguments"] for c in calls if c["index"] == i) for i in (0, 1)}
    assert {i: json.loads(a) for i, a in args.items()} == {0: {"location": "Madrid"}, 1: {"location": "Brasilia"}}
    assert args[0] == '{\n    "location": "Madrid"\n}'
    assert "".join(d.get("content", "") for d in deltas(chunks)) == "I will search for the weather in Madrid and Brasilia."
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 37


def test_stream_passes_the_normaliser_unchanged() -> None:
    transcript = Transcript()
    fixer = StreamNormaliser(transcript, include_usage=True)
    assert not any(fixer.fix(c)[1] for c in play("parallel_tool_calls.sse", piece=7))
    assert [t.id for t in transcript.tool_calls] == ["get_weather_p1t92w7gfgq7", "get_weather_ay6nmvjgp9vn"]
    assert transcript.finish_reason == "tool_calls"


def test_thinking_goes_to_reasoning_content_and_text_to_content_with_crlf_framing() -> None:
    chunks = play("thinking_then_text.sse", piece=13)
    ds = deltas(chunks)
    assert "".join(d.get("reasoning_content", "") for d in ds) == "Both tool results are in; compare them."
    assert "".join(d.get("content", "") for d in ds) == "It is currently 24°C in Madrid and 28°C in Brasilia."
    assert chunks[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] == 512
    assert chunks[0]["id"] == "chatcmpl-e8f9afc1-0888-46f0-a9ed-eb0e5a51e17f"


def test_error_finish_hands_over_usage_then_raises_at_eof() -> None:
    decoder, state = SSEDecoder(), ADAPTER.new_stream(target())
    chunks: list[dict[str, Any]] = []
    for event, data in decoder.feed((FIXTURES / "error_finish.sse").read_bytes()):
        chunks.extend(ADAPTER.parse_event(state, event, data))
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2
    assert "".join(d.get("content", "") for d in deltas(chunks)) == "Partial answer"
    with pytest.raises(UpstreamError, match="ERROR"):
        ADAPTER.finish_stream(state)


def test_tool_call_without_arguments_gets_empty_object() -> None:
    state = ADAPTER.new_stream(target())
    start = {"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": {
        "id": "list_files_x1", "type": "function", "function": {"name": "list_files", "arguments": ""}}}}}
    chunks = ADAPTER.parse_event(state, None, json.dumps(start))
    chunks += ADAPTER.parse_event(state, None, json.dumps({"type": "tool-call-end", "index": 0}))
    calls = [c for d in deltas(chunks) for c in d.get("tool_calls", [])]
    assert "".join(c["function"]["arguments"] for c in calls) == "{}"


def test_error_bodies_keep_status_and_message() -> None:
    err = ADAPTER.parse_error(429, b'{"id":"5b3a","message":"You are using a Trial key, which is limited to 10 API calls / minute."}')
    assert (err.status, err.type) == (429, "rate_limit_error")
    assert "Trial key" in err.message
