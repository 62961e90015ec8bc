"""Gemini API ↔ canonical chat translation, without a network (the wire shapes are the SDK's own)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from finopsd.dialects.genai import genai_to_chat, json_schema, reasoning_effort
from finopsd.dialects.genai_answer import ChatToGenaiStream, chat_to_genai, error_body, usage_metadata
from finopsd.errors import BadRequest
from tests.fakes import FIXTURES


def chat(body: dict[str, Any], stream: bool = False) -> dict[str, Any]:
    return genai_to_chat(body, stream=stream)[0]


def test_contents_roles_and_system_instruction() -> None:
    req = chat({
        "systemInstruction": {"role": "user", "parts": [{"text": "Be brief."}, {"text": "Use tools."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [{"text": "thinking…", "thought": True}, {"text": "Hello."}]},
            "and then?",
        ],
    })
    assert req["messages"] == [
        {"role": "system", "content": "Be brief.\n\nUse tools."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello.", "reasoning_content": "thinking…"},
        {"role": "user", "content": "and then?"},
    ]


def test_calls_without_ids_get_stable_ids_matched_by_name_in_order() -> None:
    contents = [
        {"role": "user", "parts": [{"text": "read both"}]},
        {"role": "model", "parts": [
            {"functionCall": {"name": "read_file", "args": {"path": "a"}}, "thoughtSignature": "c2ln"},
            {"functionCall": {"name": "read_file", "args": {"path": "b"}}},
            {"functionCall": {"name": "glob", "args": {"pattern": "*"}}}]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "glob", "response": {"output": "a b"}}},
            {"functionResponse": {"name": "read_file", "response": {"output": "A"}}},
            {"functionResponse": {"name": "read_file", "response": {"error": "no such file"}}}]},
    ]
    first = chat({"contents": contents})["messages"]
    again = chat({"contents": contents})["messages"]
    assert first == again  # the same history gives the same ids every turn
    calls = first[1]["tool_calls"]
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("read_file", {"path": "a"}), ("read_file", {"path": "b"}), ("glob", {"pattern": "*"})]
    assert len({c["id"] for c in calls}) == 3 and first[1]["content"] is None
    by_id = {c["id"]: c["function"]["name"] for c in calls}
    results = [(by_id[m["tool_call_id"]], m["content"]) for m in first[2:]]
    assert results == [("glob", "a b"), ("read_file", "A"), ("read_file", "Error: no such file")]
    assert [m["tool_call_id"] for m in first[2:]] == [calls[2]["id"], calls[0]["id"], calls[1]["id"]]


def test_function_response_ids_win_and_orphans_become_text() -> None:
    messages = chat({"contents": [
        {"role": "model", "parts": [{"functionCall": {"id": "c1", "name": "f", "args": {}}},
                                    {"functionCall": {"id": "c2", "name": "f", "args": {}}}]},
        {"role": "user", "parts": [
            {"functionResponse": {"id": "c2", "name": "f", "response": {"n": 2}}},
            {"functionResponse": {"id": "c1", "name": "f", "response": {"output": "one"}}},
            {"functionResponse": {"id": "gone", "name": "g", "response": {"output": "late"}}}]},
    ]})["messages"]
    assert [m["tool_call_id"] for m in messages[1:3]] == ["c2", "c1"]
    assert messages[1]["content"] == '{"n": 2}'
    assert messages[3] == {"role": "user", "content": "[result of g]\nlate"}


def test_images_pdfs_audio_and_snake_case_fields() -> None:
    messages = chat({"contents": [{"role": "user", "parts": [
        {"text": "what is this?"},
        {"inline_data": {"mime_type": "image/png", "data": "iVBOR"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBER"}},
        {"inlineData": {"mimeType": "audio/wav", "data": "UklG"}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.jpg"}},
    ]}]})["messages"]
    assert messages[0]["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBER"}},
        {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]


def test_notes_are_few_and_short_whatever_the_client_sends() -> None:
    parts = [{"inlineData": {"mimeType": f"video/{i}" + "x" * 10_000, "data": "AA"}} for i in range(500)]
    _, notes = genai_to_chat({"contents": [{"role": "user", "parts": parts}]}, stream=False)
    assert len(notes) == 20 and max(map(len, notes)) < 120


def test_google_file_uris_and_built_in_tools_are_dropped_with_notes() -> None:
    req, notes = genai_to_chat({
        "contents": [{"role": "user", "parts": [
            {"text": "x"}, {"fileData": {"mimeType": "video/mp4", "fileUri": "files/abc"}}]}],
        "tools": [{"googleSearch": {}}, {"code_execution": {}},
                  {"functionDeclarations": [{"name": "f", "parameters": {"type": "OBJECT"}}]}],
        "cachedContent": "cachedContents/1",
    }, stream=False)
    assert [t["function"]["name"] for t in req["tools"]] == ["f"]
    assert notes == ["fileData part dropped: only Google can read its file URIs",
                     "built-in tool googleSearch dropped: only Gemini runs it",
                     "built-in tool codeExecution dropped: only Gemini runs it",
                     "cachedContent dropped: it means something to Gemini only"]


def test_openapi_schemas_become_json_schema() -> None:
    schema = {"type": "OBJECT", "propertyOrdering": ["a"], "required": ["a"], "properties": {
        "a": {"type": "STRING", "nullable": True, "enum": ["x", "y"]},
        "list_of_things": {"type": "ARRAY", "max_items": 3, "items": {"type": "INTEGER", "format": "int32"}},
        "choice": {"any_of": [{"type": "NUMBER"}, {"type": "BOOLEAN"}]}}}
    assert json_schema(schema) == {"type": "object", "required": ["a"], "properties": {
        "a": {"type": ["string", "null"], "enum": ["x", "y"]},
        "list_of_things": {"type": "array", "maxItems": 3, "items": {"type": "integer", "format": "int32"}},
        "choice": {"anyOf": [{"type": "number"}, {"type": "boolean"}]}}}
    deep: dict[str, Any] = {"type": "OBJECT"}
    for _ in range(100):
        deep = {"type": "ARRAY", "items": deep}
    with pytest.raises(BadRequest):
        json_schema(deep)


def test_tool_declarations_prefer_json_schema_and_tool_config_maps() -> None:
    decls = [{"name": "a", "description": "A",
              "parametersJsonSchema": {"type": "object", "additionalProperties": False}},
             {"name": "b", "parameters": {"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}}}},
             {"name": "c"}]
    req = chat({"contents": [], "tools": [{"functionDeclarations": decls}],
                "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["b"]}}})
    assert [t["function"]["parameters"] for t in req["tools"]] == [
        {"type": "object", "additionalProperties": False},
        {"type": "object", "properties": {"n": {"type": "integer"}}},
        {"type": "object", "properties": {}}]
    assert req["tools"][0]["function"]["description"] == "A"
    assert req["tool_choice"] == {"type": "function", "function": {"name": "b"}}
    for mode, choice in (("ANY", "required"), ("NONE", "none"), ("AUTO", "auto")):
        body = {"contents": [], "tools": [{"functionDeclarations": decls}],
                "tool_config": {"function_calling_config": {"mode": mode}}}
        assert chat(body)["tool_choice"] == choice


def test_generation_config() -> None:
    req = chat({"contents": [], "generationConfig": {
        "temperature": 0.2, "topP": 0.9, "topK": 40, "maxOutputTokens": 512, "seed": 7,
        "stopSequences": ["a", "b", "c", "d", "e"], "responseMimeType": "application/json",
        "responseSchema": {"type": "OBJECT", "properties": {"x": {"type": "STRING"}}},
        "thinkingConfig": {"thinkingBudget": 24576, "includeThoughts": True}}}, stream=True)
    assert req == {"messages": [], "temperature": 0.2, "top_p": 0.9, "seed": 7, "max_tokens": 512,
                   "stop": ["a", "b", "c", "d"], "reasoning_effort": "high",
                   "response_format": {"type": "json_schema", "json_schema": {"name": "response", "schema": {
                       "type": "object", "properties": {"x": {"type": "string"}}}}},
                   "stream": True, "stream_options": {"include_usage": True}}
    assert chat({"contents": [], "generationConfig": {"responseMimeType": "application/json"}})[
        "response_format"] == {"type": "json_object"}


@pytest.mark.parametrize(("thinking", "effort"), [
    ({"thinkingLevel": "HIGH"}, "high"), ({"thinking_level": "low"}, "low"), ({"thinkingLevel": "MINIMAL"}, "minimal"),
    ({"thinkingBudget": 0}, None), ({"thinkingBudget": -1}, "medium"), ({"thinkingBudget": 512}, "low"),
    ({"thinkingBudget": 8192}, "medium"), ({"thinkingBudget": 8193}, "high"), ({"includeThoughts": True}, None),
    (None, None)])
def test_thinking_config_to_effort(thinking: Any, effort: str | None) -> None:
    assert reasoning_effort(thinking) == effort


def test_gemini_cli_request_translates_whole() -> None:
    body = json.loads((FIXTURES / "genai" / "gemini_cli_request.json").read_text())
    req, notes = genai_to_chat(body, stream=True)
    assert notes == []
    assert [m["role"] for m in req["messages"]] == ["system", "user"]
    assert len(req["tools"]) == 16 and req["reasoning_effort"] == "medium" and req["top_p"] == 0.95


# --- answers ------------------------------------------------------------------------------------

USAGE = {"prompt_tokens": 100, "completion_tokens": 30, "total_tokens": 130,
         "prompt_tokens_details": {"cached_tokens": 60}, "completion_tokens_details": {"reasoning_tokens": 10}}


def test_usage_metadata_counts_thoughts_apart_and_the_cache_in_the_prompt() -> None:
    assert usage_metadata(USAGE) == {"promptTokenCount": 100, "candidatesTokenCount": 20, "totalTokenCount": 130,
                                     "thoughtsTokenCount": 10, "cachedContentTokenCount": 60}
    assert usage_metadata(None) == {"promptTokenCount": 0, "candidatesTokenCount": 0, "totalTokenCount": 0}


def test_whole_answer_with_calls_and_thoughts() -> None:
    completion = {"id": "chatcmpl-abc", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Reading.", "reasoning_content": "hmm",
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "read_file", "arguments": '{"path": "a"}'}}]}}], "usage": USAGE}
    out = chat_to_genai(completion, "openai/gpt-5", thoughts=True)
    assert out["candidates"][0]["content"]["parts"] == [
        {"text": "hmm", "thought": True}, {"text": "Reading."},
        {"functionCall": {"id": "call_1", "name": "read_file", "args": {"path": "a"}}}]
    assert out["candidates"][0]["finishReason"] == "STOP" and out["responseId"] == "abc"
    assert out["modelVersion"] == "openai/gpt-5" and out["usageMetadata"]["promptTokenCount"] == 100
    hidden = chat_to_genai(completion, "m", thoughts=False)["candidates"][0]["content"]["parts"]
    assert {"text": "hmm", "thought": True} not in hidden
    length = {"choices": [{"message": {"content": "cut"}, "finish_reason": "length"}]}
    assert chat_to_genai(length, "m", thoughts=False)["candidates"][0]["finishReason"] == "MAX_TOKENS"


def delta(d: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": d, "finish_reason": finish}]}


def test_stream_text_at_once_calls_whole_at_the_finish_then_usage() -> None:
    s = ChatToGenaiStream("anthropic/claude", thoughts=True)
    events = [e for chunk in [
        delta({"role": "assistant"}), delta({"reasoning_content": "plan"}), delta({"content": "Reading "}),
        delta({"tool_calls": [{"index": 0, "id": "t1", "function": {"name": "read_file", "arguments": ""}}]}),
        delta({"tool_calls": [{"index": 0, "function": {"arguments": '{"pa'}}]}),
        delta({"tool_calls": [{"index": 1, "id": "t2", "function": {"name": "glob", "arguments": '{"pattern"'}}]}),
        delta({"tool_calls": [{"index": 0, "function": {"arguments": 'th": "a"}'}}]}),
        delta({"tool_calls": [{"index": 1, "function": {"arguments": ': "*"}'}}]}),
        delta({}, "tool_calls"), {"choices": [], "usage": USAGE}] for e in s.feed(chunk)] + s.finish()
    parts = [e["candidates"][0]["content"]["parts"] for e in events if "candidates" in e]
    assert parts[:2] == [[{"text": "plan", "thought": True}], [{"text": "Reading "}]]
    assert parts[2] == [{"functionCall": {"id": "t1", "name": "read_file", "args": {"path": "a"}}},
                        {"functionCall": {"id": "t2", "name": "glob", "args": {"pattern": "*"}}}]
    assert events[2]["candidates"][0]["finishReason"] == "STOP"
    assert events[-1] == {"usageMetadata": usage_metadata(USAGE), "modelVersion": "anthropic/claude",
                          "responseId": s.id}
    assert len({e["responseId"] for e in events}) == 1 and s.finish() == []


def test_a_stream_cut_before_its_finish_still_ends_with_a_finish_reason() -> None:
    s = ChatToGenaiStream("m", thoughts=False)
    assert [e["candidates"][0]["content"]["parts"] for e in s.feed(delta({"content": "par"}))] == [[{"text": "par"}]]
    last = s.finish()
    assert last[0]["candidates"][0]["finishReason"] == "STOP" and last[0]["usageMetadata"]["totalTokenCount"] == 0


def test_error_bodies_use_google_status_names() -> None:
    assert error_body(429, "slow down") == {"error": {"code": 429, "message": "slow down",
                                                      "status": "RESOURCE_EXHAUSTED"}}
    codes = (400, 401, 402, 403, 404, 418, 502, 503, 504, 599)
    statuses = {code: error_body(code, "")["error"]["status"] for code in codes}
    assert statuses == {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 402: "RESOURCE_EXHAUSTED",
                        403: "PERMISSION_DENIED", 404: "NOT_FOUND", 418: "FAILED_PRECONDITION", 502: "UNAVAILABLE",
                        503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED", 599: "INTERNAL"}


# --- hostile input: whatever JSON arrives, a clear 400 or a request, never a crash ------------------

FIELDS = st.sampled_from(["role", "parts", "text", "functionCall", "function_response", "inlineData", "mimeType",
                          "data", "name", "args", "id", "response", "type", "properties", "items", "nullable",
                          "thought", "fileData", "fileUri"]) | st.text(max_size=6)


def nested(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(FIELDS, inner, max_size=4)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
                    nested, max_leaves=16)
BODY = st.fixed_dictionaries({}, optional={
    "contents": st.lists(JSON, max_size=4) | JSON, "systemInstruction": JSON, "tools": st.lists(JSON, max_size=3),
    "toolConfig": JSON, "generationConfig": JSON | st.fixed_dictionaries({}, optional={
        "thinkingConfig": JSON, "responseSchema": JSON, "stopSequences": JSON, "maxOutputTokens": JSON}),
})


@settings(max_examples=300, deadline=None)
@given(body=BODY, stream=st.booleans())
def test_any_request_body_translates_or_is_a_bad_request(body: dict[str, Any], stream: bool) -> None:
    try:
        req, notes = genai_to_chat(body, stream=stream)
    except BadRequest:
        return
    json.dumps(req)
    assert all(m["role"] in ("system", "user", "assistant", "tool") for m in req["messages"])
    assert all(isinstance(n, str) for n in notes)


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(JSON, max_size=6))
def test_any_chunk_stream_gives_responses_ending_with_usage(chunks: list[Any]) -> None:
    s = ChatToGenaiStream("m", thoughts=True)
    for chunk in chunks:
        for event in s.feed(chunk if isinstance(chunk, dict) else {}):
            json.dumps(event)
    assert "usageMetadata" in s.finish()[-1]


def test_error_bodies_keep_an_upstream_canonical_status_and_say_when_to_retry() -> None:
    assert error_body(400, "m", "failed_precondition")["error"]["status"] == "FAILED_PRECONDITION"
    assert error_body(400, "m", "invalid_request_error")["error"]["status"] == "INVALID_ARGUMENT"
    assert error_body(429, "m", "rate_limit_error", "7")["error"]["details"] == [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]
    assert "details" not in error_body(429, "m", None, "soon")["error"]
