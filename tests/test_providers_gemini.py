"""Gemini adapter: pure translation, OpenAI chat ↔ generateContent, no network.

Stream fixtures under tests/fixtures/gemini/ follow the documented ``streamGenerateContent?alt=sse``
shape: one GenerateContentResponse per ``data:`` line, CRLF framing, cumulative usageMetadata.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from finopsd.chunks import StreamNormaliser
from finopsd.config import ProviderConfig
from finopsd.errors import GatewayError
from finopsd.exchange import Transcript
from finopsd.providers.base import Target
from finopsd.providers.gemini import SKIP_SIGNATURE, GeminiAdapter, decode_call_id, encode_call_id
from finopsd.sse import SSEDecoder

FIXTURES = Path(__file__).parent / "fixtures" / "gemini"
BASE = "https://generativelanguage.googleapis.com/v1beta"
ADAPTER = GeminiAdapter()
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file from the workspace",
            "strict": True,
            "parameters": {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "limit": {"type": "integer", "exclusiveMinimum": 0},
                    "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
                },
                "required": ["path"],
                "additionalProperties": False,
            },
        },
    }
]


def target(model: str = "gemini-2.5-flash", key: str | None = "AIza-test-key") -> Target:
    provider = ProviderConfig(name="gemini", type="gemini", base_url=BASE, headers={"x-extra": "1"})
    return Target(provider, model, key, "gemini-0" if key else None)


def body_of(req: dict[str, Any], model: str = "gemini-2.5-flash", stream: bool = False) -> dict[str, Any]:
    call = ADAPTER.build_request(target(model), req, stream=stream)
    parsed: dict[str, Any] = json.loads(call.body)
    return parsed


def play(name: str, model: str = "gemini-2.5-flash", piece: int = 37) -> list[dict[str, Any]]:
    """Feed a fixture through the SSE decoder in odd-sized reads, as the network would."""
    raw = (FIXTURES / name).read_bytes()
    decoder, state = SSEDecoder(), ADAPTER.new_stream(target(model))
    chunks: list[dict[str, Any]] = []
    for i in range(0, len(raw), piece):
        for event, data in decoder.feed(raw[i : i + piece]):
            chunks.extend(ADAPTER.parse_event(state, event, data))
    for event, data in decoder.close():
        chunks.extend(ADAPTER.parse_event(state, event, data))
    return chunks


def deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks if c["choices"]]


def tool_calls(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [tc for d in deltas(chunks) for tc in d.get("tool_calls", [])]


def finishes(chunks: list[dict[str, Any]]) -> list[str]:
    return [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]


# --- request ---------------------------------------------------------------------------------


def test_url_key_header_and_stream_verb() -> None:
    call = ADAPTER.build_request(target(), {"messages": [{"role": "user", "content": "hi"}]}, stream=True)
    assert call.url == f"{BASE}/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert call.headers["x-goog-api-key"] == "AIza-test-key"
    assert call.headers["x-extra"] == "1"
    assert "AIza-test-key" not in repr(call)
    whole = ADAPTER.build_request(target(), {"messages": [{"role": "user", "content": "hi"}]}, stream=False)
    assert whole.url == f"{BASE}/models/gemini-2.5-flash:generateContent"
    assert "model" not in json.loads(whole.body) and "stream" not in json.loads(whole.body)


def test_system_and_developer_messages_become_system_instruction() -> None:
    body = body_of({"messages": [
        {"role": "system", "content": "You are Roo, a coding agent."},
        {"role": "developer", "content": [{"type": "text", "text": "Prefer small diffs."}]},
        {"role": "user", "content": "hello"},
    ]})
    assert body["systemInstruction"] == {"parts": [{"text": "You are Roo, a coding agent."}, {"text": "Prefer small diffs."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "hello"}]}]


def test_assistant_turns_get_role_model_and_empty_turns_are_dropped() -> None:
    body = body_of({"messages": [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "assistant", "content": None},
        {"role": "user", "content": ""},
        {"role": "user", "content": "c"},
    ]})
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "a"}]},
        {"role": "model", "parts": [{"text": "b"}]},
        {"role": "user", "parts": [{"text": "c"}]},
    ]


def test_data_url_image_is_inline_and_https_image_is_file_data_with_guessed_type() -> None:
    body = body_of({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what changed?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/shots/after.webp?v=2", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/render"}},
    ]}]})
    assert body["contents"][0]["parts"] == [
        {"text": "what changed?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/shots/after.webp?v=2"}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/render"}},
    ]


def test_tools_keep_json_schema_in_parameters_json_schema() -> None:
    body = body_of({"messages": [{"role": "user", "content": "x"}], "tools": TOOLS})
    (decl,) = body["tools"][0]["functionDeclarations"]
    assert decl["name"] == "read_file" and decl["description"] == "Read a file from the workspace"
    assert "parameters" not in decl and "strict" not in decl
    schema = decl["parametersJsonSchema"]
    assert "$schema" not in schema
    # keywords the OpenAPI-subset `parameters` would reject reach the JSON-schema field intact
    assert schema["additionalProperties"] is False
    assert schema["properties"]["limit"]["exclusiveMinimum"] == 0
    assert schema["properties"]["tags"]["uniqueItems"] is True


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        ({"type": "function", "function": {"name": "read_file"}}, {"mode": "ANY", "allowedFunctionNames": ["read_file"]}),
    ],
)
def test_tool_choice_maps_to_function_calling_config(choice: Any, config: dict[str, Any]) -> None:
    body = body_of({"messages": [{"role": "user", "content": "x"}], "tools": TOOLS, "tool_choice": choice})
    assert body["toolConfig"] == {"functionCallingConfig": config}


def test_generation_config_maps_sampling_limits_stop_and_json_schema() -> None:
    body = body_of({
        "messages": [{"role": "user", "content": "x"}],
        "temperature": 0.2, "top_p": 0.9, "max_tokens": 100, "max_completion_tokens": 2048, "stop": "END",
        "seed": 7, "n": 1,
        "response_format": {"type": "json_schema", "json_schema": {"name": "plan", "strict": True, "schema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object", "properties": {"steps": {"type": "array", "items": {"type": "string"}}},
            "additionalProperties": False}}},
    })
    assert body["generationConfig"] == {
        "temperature": 0.2, "topP": 0.9, "seed": 7, "maxOutputTokens": 2048, "stopSequences": ["END"],
        "responseMimeType": "application/json",
        "responseJsonSchema": {"type": "object", "properties": {"steps": {"type": "array", "items": {"type": "string"}}},
                               "additionalProperties": False},
    }


@pytest.mark.parametrize(
    ("model", "effort", "thinking"),
    [
        ("gemini-3-pro-preview", "low", {"thinkingLevel": "low", "includeThoughts": True}),
        ("gemini-3-flash-preview", "xhigh", {"thinkingLevel": "high", "includeThoughts": True}),
        ("gemini-3-flash-preview", "none", {"thinkingLevel": "minimal", "includeThoughts": False}),
        ("gemini-2.5-flash", "medium", {"thinkingBudget": 8192, "includeThoughts": True}),
        ("gemini-2.5-flash", "none", {"thinkingBudget": 0}),
        ("gemini-2.5-pro", "none", {"thinkingBudget": 128}),
        ("gemini-2.0-flash", "high", None),
        ("gemma-3-27b-it", "high", None),
    ],
)
def test_reasoning_effort_maps_to_thinking_level_or_budget(model: str, effort: str, thinking: Any) -> None:
    body = body_of({"messages": [{"role": "user", "content": "x"}], "reasoning_effort": effort}, model=model)
    assert body.get("generationConfig", {}).get("thinkingConfig") == thinking


def test_consecutive_tool_results_merge_into_one_user_turn_with_function_names() -> None:
    body = body_of({"messages": [
        {"role": "user", "content": "compare the configs"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a.yaml"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "list_dir", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "call_b", "content": '{"entries": ["a.yaml", "b.yaml"]}'},
        {"role": "tool", "tool_call_id": "call_a", "content": [{"type": "text", "text": "log_level: info"}]},
    ]})
    model_turn, results = body["contents"][1], body["contents"][2]
    assert model_turn == {"role": "model", "parts": [
        {"functionCall": {"name": "read_file", "args": {"path": "a.yaml"}}},
        {"functionCall": {"name": "list_dir", "args": {}}},
    ]}
    assert results == {"role": "user", "parts": [
        {"functionResponse": {"name": "list_dir", "response": {"entries": ["a.yaml", "b.yaml"]}}},
        {"functionResponse": {"name": "read_file", "response": {"output": "log_level: info"}}},
    ]}
    assert len(body["contents"]) == 3


def test_tool_result_for_a_call_cut_from_history_becomes_text() -> None:
    body = body_of({"messages": [
        {"role": "user", "content": "go on"},
        {"role": "tool", "tool_call_id": "call_gone", "content": "done"},
    ]})
    assert body["contents"] == [{"role": "user", "parts": [
        {"text": "go on"}, {"text": "[result of tool call call_gone]\ndone"},
    ]}]


def test_unsigned_calls_get_the_documented_bypass_only_on_models_that_validate() -> None:
    history = {"messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "toolu_01", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a"}'}},
            {"id": "toolu_02", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "b"}'}},
        ]},
        {"role": "tool", "tool_call_id": "toolu_01", "content": "A"},
        {"role": "tool", "tool_call_id": "toolu_02", "content": "B"},
    ]}
    g3 = body_of(history, model="gemini-3-pro-preview")["contents"][1]["parts"]
    assert g3[0]["thoughtSignature"] == SKIP_SIGNATURE
    assert "thoughtSignature" not in g3[1]  # only the first call of a step is checked
    g25 = body_of(history, model="gemini-2.5-pro")["contents"][1]["parts"]
    assert all("thoughtSignature" not in p for p in g25)


# --- signatures through the client round trip -----------------------------------------------


@pytest.mark.parametrize("signature", ["CiQBcsjafE+/9w==", "a", "x" * 5000, "EjQK\nMg=="])
def test_call_id_round_trips_signature_with_anthropic_safe_characters(signature: str) -> None:
    call_id = encode_call_id("call_7f3a", signature)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", call_id)  # Claude Code / Anthropic tool_use id pattern
    assert decode_call_id(call_id) == ("call_7f3a", signature)
    assert encode_call_id("call_7f3a", None) == "call_7f3a"
    assert decode_call_id("call_7f3a") == ("call_7f3a", None)


def test_two_turn_tool_use_restores_signature_and_function_names() -> None:
    chunks = play("parallel_calls.sse", model="gemini-3-pro-preview")
    calls = tool_calls(chunks)
    signature = json.loads((FIXTURES / "parallel_calls.sse").read_text().split("data: ")[3])[
        "candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    # the client stores the calls as it got them and echoes them back with the results
    history = [
        {"role": "user", "content": "Compare base and prod config"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": c["id"], "type": "function", "function": c["function"]} for c in calls]},
        {"role": "tool", "tool_call_id": calls[1]["id"], "content": "log_level: warn"},
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "log_level: info"},
    ]
    body = body_of({"messages": history, "tools": TOOLS}, model="gemini-3-pro-preview")
    first, second = body["contents"][1]["parts"]
    assert first == {"functionCall": {"name": "read_file", "args": {"path": "config/base.yaml"}},
                     "thoughtSignature": signature}
    assert second == {"functionCall": {"name": "read_file", "args": {"path": "config/prod.yaml", "limit": 200}}}
    assert [p["functionResponse"]["name"] for p in body["contents"][2]["parts"]] == ["read_file", "read_file"]
    assert [p["functionResponse"]["response"] for p in body["contents"][2]["parts"]] == [
        {"output": "log_level: warn"}, {"output": "log_level: info"}]
    assert body["contents"][2]["role"] == "user"


# --- stream ------------------------------------------------------------------------------------


def test_text_split_over_events_streams_content_then_finish_then_one_usage_chunk() -> None:
    chunks = play("text_stream.sse")
    assert deltas(chunks)[0]["role"] == "assistant"
    text = "".join(d.get("content", "") for d in deltas(chunks))
    assert text == ("The `parse_config` function reads the YAML file and validates every key,"
                    " raising `ConfigError` with the line number.")
    assert finishes(chunks) == ["stop"]
    usage_chunks = [c for c in chunks if not c["choices"]]
    assert len(usage_chunks) == 1 and chunks[-1] is usage_chunks[0]
    assert usage_chunks[0]["usage"] == {
        "prompt_tokens": 1432, "completion_tokens": 27 + 212, "total_tokens": 1432 + 239,
        "prompt_tokens_details": {"cached_tokens": 1024},
        "completion_tokens_details": {"reasoning_tokens": 212},
    }
    assert {c["id"] for c in chunks} == {"chatcmpl-mR8ZaJ3kBYqvz7IPhL2w4Qg"}
    assert {c["model"] for c in chunks} == {"gemini-2.5-flash"}


def test_parallel_tool_calls_count_from_zero_and_finish_with_tool_calls() -> None:
    chunks = play("parallel_calls.sse", model="gemini-3-pro-preview")
    calls = tool_calls(chunks)
    assert [c["index"] for c in calls] == [0, 1]
    assert [c["function"]["name"] for c in calls] == ["read_file", "read_file"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [
        {"path": "config/base.yaml"}, {"path": "config/prod.yaml", "limit": 200}]
    assert all(c["type"] == "function" and c["id"] for c in calls)
    assert decode_call_id(calls[0]["id"])[1] is not None  # the signature rides on the first call
    assert decode_call_id(calls[1]["id"])[1] is None
    assert finishes(chunks) == ["tool_calls"]


def test_thought_parts_stream_as_reasoning_content() -> None:
    chunks = play("parallel_calls.sse", model="gemini-3-pro-preview")
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas(chunks))
    assert reasoning.startswith("**Locating the config files**") and reasoning.endswith("parallel is fastest.")
    assert not any(d.get("content") for d in deltas(chunks))
    (usage,) = [c["usage"] for c in chunks if not c["choices"]]
    assert usage["completion_tokens"] == 46 + 190 and usage["completion_tokens_details"]["reasoning_tokens"] == 190


def test_empty_text_part_carrying_a_signature_adds_no_delta() -> None:
    chunks = play("text_signature_last.sse", model="gemini-3-pro-preview")
    contents = [d["content"] for d in deltas(chunks) if "content" in d]
    assert contents == ["Both files set `log_level`; prod overrides it to `warn`."]
    assert finishes(chunks) == ["stop"]


def test_chunks_pass_the_relay_normaliser_unchanged() -> None:
    transcript = Transcript()
    normaliser = StreamNormaliser(transcript, include_usage=True)
    changed = [normaliser.fix(c)[1] for c in play("parallel_calls.sse", model="gemini-3-pro-preview")]
    assert not any(changed)
    assert [(t.name, "".join(t.arguments)) for t in transcript.tool_calls] == [
        ("read_file", '{"path": "config/base.yaml"}'), ("read_file", '{"path": "config/prod.yaml", "limit": 200}')]
    assert transcript.finish_reason == "tool_calls"


def test_error_event_mid_stream_raises_with_upstream_status() -> None:
    with pytest.raises(GatewayError) as info:
        play("error_midstream.sse")
    assert info.value.status == 503
    assert info.value.type == "unavailable"
    assert "overloaded" in info.value.message


def test_blocked_prompt_is_a_400_content_filter_error() -> None:
    state = ADAPTER.new_stream(target())
    data = json.dumps({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                       "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}})
    with pytest.raises(GatewayError) as info:
        ADAPTER.parse_event(state, None, data)
    assert (info.value.status, info.value.code) == (400, "content_filter")
    assert "PROHIBITED_CONTENT" in info.value.message


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
     ("BLOCKLIST", "content_filter"), ("PROHIBITED_CONTENT", "content_filter"), ("SPII", "content_filter"),
     ("MALFORMED_FUNCTION_CALL", "stop")],
)
def test_finish_reasons_map_to_openai(reason: str, expected: str) -> None:
    state = ADAPTER.new_stream(target())
    data = json.dumps({"candidates": [{"content": {"parts": [{"text": "x"}], "role": "model"}, "finishReason": reason}]})
    assert finishes(ADAPTER.parse_event(state, None, data)) == [expected]


def test_usage_that_changes_after_finish_is_sent_again_for_billing() -> None:
    state = ADAPTER.new_stream(target())
    done = {"candidates": [{"content": {"parts": [{"text": "ok"}], "role": "model"}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 1}}
    first = ADAPTER.parse_event(state, None, json.dumps(done))
    late = ADAPTER.parse_event(state, None, json.dumps({"usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 2}}))
    same = ADAPTER.parse_event(state, None, json.dumps({"usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 2}}))
    assert [c["usage"]["completion_tokens"] for c in first + late if not c["choices"]] == [1, 2]
    assert same == []


def test_stream_cut_before_finish_reason_closes_with_usage_at_eof() -> None:
    state = ADAPTER.new_stream(target())
    first = (FIXTURES / "text_stream.sse").read_bytes().decode().split("\r\n\r\n")[0].removeprefix("data: ")
    assert finishes(ADAPTER.parse_event(state, None, first)) == []
    closing = ADAPTER.finish_stream(state)
    assert finishes(closing) == ["stop"]
    assert closing[-1]["choices"] == [] and closing[-1]["usage"]["completion_tokens"] == 5
    assert ADAPTER.finish_stream(state) == []


# --- whole responses and errors ----------------------------------------------------------------


def test_non_stream_response_with_text_thoughts_and_calls() -> None:
    body = {
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "Checking the tests first.", "thought": True},
            {"text": "I'll run the tests."},
            {"functionCall": {"id": "fc_1", "name": "run", "args": {"cmd": "pytest -q"}}, "thoughtSignature": "Q2lR=="},
        ]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 20, "thoughtsTokenCount": 30,
                          "cachedContentTokenCount": 64, "totalTokenCount": 150},
        "modelVersion": "gemini-3-pro-preview", "responseId": "r1",
    }
    out = ADAPTER.parse_response(target("gemini-3-pro-preview"), json.dumps(body).encode())
    choice = out["choices"][0]
    assert out["object"] == "chat.completion" and out["id"] == "chatcmpl-r1"
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I'll run the tests."
    assert choice["message"]["reasoning_content"] == "Checking the tests first."
    (call,) = choice["message"]["tool_calls"]
    assert decode_call_id(call["id"]) == ("fc_1", "Q2lR==")
    assert json.loads(call["function"]["arguments"]) == {"cmd": "pytest -q"}
    assert out["usage"]["completion_tokens"] == 50 and out["usage"]["prompt_tokens_details"]["cached_tokens"] == 64


def test_error_body_wrapped_in_a_list_keeps_status_and_message() -> None:
    body = json.dumps([{"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).",
                                  "status": "RESOURCE_EXHAUSTED"}}]).encode()
    err = ADAPTER.parse_error(429, body)
    assert err.status == 429 and err.type == "resource_exhausted"
    assert err.message.startswith("Resource has been exhausted")


def test_invalid_json_body_is_an_upstream_error() -> None:
    with pytest.raises(GatewayError) as info:
        ADAPTER.parse_response(target(), b"<html>502</html>")
    assert info.value.status == 502
