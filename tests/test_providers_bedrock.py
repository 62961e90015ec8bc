"""Bedrock adapter: OpenAI chat ↔ Converse / ConverseStream, SigV4 over the encoded model path.

Stream fixtures under tests/fixtures/bedrock/ list the documented ConverseStream events (with the
``p`` padding field Bedrock adds) one per line; ``encode`` turns them into the AWS binary event
stream (prelude with total and headers length and CRC32, string headers, payload, message CRC32),
and ``play`` feeds that to the adapter's decoder in awkward slices, as the network would.
"""

from __future__ import annotations

import binascii
import json
import struct
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from finopsd.chunks import StreamNormaliser
from finopsd.config import ProviderConfig
from finopsd.errors import BadRequest, GatewayError, UpstreamError
from finopsd.exchange import Transcript
from finopsd.providers.base import Target
from finopsd.providers.bedrock import BedrockAdapter
from finopsd.sse import EventTooLarge
from finopsd.upstream import send

FIXTURES = Path(__file__).parent / "fixtures" / "bedrock"
ADAPTER = BedrockAdapter()
ARN = "arn:aws:bedrock:eu-west-1:123456789012:application-inference-profile/fm16bt65tzgx"
SONNET = "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"
KEY_ID, SECRET, TOKEN = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "IQoJb3JpZ2luX2VjEXAMPLE"
TOOLS: list[dict[str, Any]] = [{"type": "function", "function": {
    "name": "read_file", "description": "Read a file", "strict": True,
    "parameters": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                   "properties": {"path": {"type": "string"}}, "required": ["path"], "additionalProperties": False}}}]
TOOL_TURN: list[dict[str, Any]] = [
    {"role": "user", "content": "Compare the configs"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "tooluse_A1", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a.yaml"}'}},
        {"id": "tooluse_B2", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "b.yaml"}'}},
    ]},
    {"role": "tool", "tool_call_id": "tooluse_A1", "content": "port: 80"},
    {"role": "tool", "tool_call_id": "tooluse_B2", "content": "port: 443"},
    {"role": "user", "content": "<environment_details>cwd: /repo</environment_details>"},
]


def provider(base_url: str = "", **kw: Any) -> ProviderConfig:
    fields: dict[str, Any] = {"region": "eu-west-1", "access_key_id": KEY_ID, "secret_access_key": SECRET,
                              "session_token": TOKEN, **kw}
    return ProviderConfig(name="bedrock", type="bedrock", base_url=base_url, **fields)


def target(model: str = SONNET, key: str | None = None, **kw: Any) -> Target:
    return Target(provider(**kw), model, key, "bedrock-0" if key else None)


def body_of(req: dict[str, Any], model: str = SONNET) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(ADAPTER.build_request(target(model), req, stream=False).body)
    return parsed


# --- the AWS event-stream encoding, written from the documented format -------------------------


def _header(name: str, value: str) -> bytes:
    raw = value.encode()
    return bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(raw)) + raw  # 7: string


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    head = b"".join(_header(k, v) for k, v in headers.items())
    prelude = struct.pack(">II", 12 + len(head) + len(payload) + 4, len(head))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    body = prelude + head + payload
    return body + struct.pack(">I", binascii.crc32(body))


def encode(name: str) -> bytes:
    out = b""
    for line in (FIXTURES / name).read_text().splitlines():
        item = json.loads(line)
        payload = json.dumps(item["payload"]).encode()
        if "exception" in item:
            headers = {":exception-type": item["exception"], ":content-type": "application/json",
                       ":message-type": "exception"}
        else:
            headers = {":event-type": item["event"], ":content-type": "application/json", ":message-type": "event"}
        out += encode_message(headers, payload)
    return out


def play(raw: bytes, cuts: tuple[int, ...] = (1, 3, 11, 12, 13, 57, 200)) -> list[dict[str, Any]]:
    """Decode ``raw`` in slices of cycling, awkward sizes (inside preludes, headers and CRCs)."""
    decoder, state = ADAPTER.new_decoder(), ADAPTER.new_stream(target())
    chunks: list[dict[str, Any]] = []
    pos, i = 0, 0
    while pos < len(raw):
        size = cuts[i % len(cuts)]
        for event, data in decoder.feed(raw[pos : pos + size]):
            chunks.extend(ADAPTER.parse_event(state, event, data))
        pos, i = pos + size, i + 1
    for event, data in decoder.close():
        chunks.extend(ADAPTER.parse_event(state, event, data))
    return chunks + ADAPTER.finish_stream(state)


def deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks if c["choices"]]


def recompute_signature(url: str, headers: dict[str, str], body: bytes) -> tuple[str, str]:
    """(canonical request, signature) botocore derives for these bytes and the headers the
    Authorization header names as signed (a server sees more: Host, Content-Length, User-Agent)."""
    names = headers["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    signed = {k: v for k, v in headers.items() if k.lower() in names and k.lower() != "host"}
    request = AWSRequest(method="POST", url=url, data=body, headers=signed)
    request.context["timestamp"] = headers["X-Amz-Date"]
    auth = SigV4Auth(Credentials(KEY_ID, SECRET, TOKEN), "bedrock", "eu-west-1")
    canonical = auth.canonical_request(request)
    return canonical, auth.signature(auth.string_to_sign(request, canonical), request)


# --- URL and auth ------------------------------------------------------------------------------


def test_arn_model_id_is_one_encoded_path_segment_and_signed_as_such() -> None:
    call = ADAPTER.build_request(target(ARN), {"messages": [{"role": "user", "content": "hi"}]}, stream=True)
    encoded = "arn%3Aaws%3Abedrock%3Aeu-west-1%3A123456789012%3Aapplication-inference-profile%2Ffm16bt65tzgx"
    assert call.url == f"https://bedrock-runtime.eu-west-1.amazonaws.com/model/{encoded}/converse-stream"
    assert call.encoded is True
    auth = call.headers["Authorization"]
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={KEY_ID}/")
    assert "/eu-west-1/bedrock/aws4_request" in auth
    assert "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token" in auth
    assert call.headers["X-Amz-Security-Token"] == TOKEN
    canonical, signature = recompute_signature(call.url, call.headers, call.body)
    # SigV4 for every service but S3 encodes each path segment twice in the canonical request
    assert canonical.splitlines()[1] == f"/model/{encoded.replace('%', '%25')}/converse-stream"
    assert auth.endswith(f"Signature={signature}")


def test_bedrock_api_key_is_sent_as_bearer_without_signing() -> None:
    call = ADAPTER.build_request(target(key="ABSKQmVkcm9ja0FQSUtleS1leGFtcGxl"),
                                 {"messages": [{"role": "user", "content": "hi"}]}, stream=False)
    assert call.headers["Authorization"] == "Bearer ABSKQmVkcm9ja0FQSUtleS1leGFtcGxl"
    assert "X-Amz-Date" not in call.headers
    assert call.url.endswith("/model/eu.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse")


def test_missing_credentials_and_region_are_config_errors_naming_the_fix() -> None:
    req = {"messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(GatewayError, match="access_key_id"):
        ADAPTER.build_request(target(access_key_id=None), req, stream=False)
    with pytest.raises(GatewayError, match="region"):
        ADAPTER.build_request(target(key="k", region=None), req, stream=False)


async def test_fake_upstream_sees_the_signed_encoded_path_unchanged(aiohttp_server: Any) -> None:
    seen: dict[str, Any] = {}

    async def converse_stream(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        url = f"http://{request.host}{request.raw_path}"
        _, expected = recompute_signature(url, dict(request.headers), body)
        seen.update(raw_path=request.raw_path, ok=request.headers["Authorization"].endswith(f"Signature={expected}"))
        resp = web.StreamResponse(headers={"Content-Type": "application/vnd.amazon.eventstream"})
        await resp.prepare(request)
        await resp.write(encode("reasoning_then_text.jsonl"))
        return resp

    app = web.Application()
    app.router.add_post("/model/{model}/converse-stream", converse_stream)
    server = await aiohttp_server(app)
    prov = provider(base_url=str(server.make_url("")).rstrip("/"))
    call = ADAPTER.build_request(Target(prov, ARN), {"messages": [{"role": "user", "content": "hi"}]}, stream=True)
    async with aiohttp.ClientSession() as session:
        upstream = await send(session, prov, call)
        raw = await upstream.read()
    assert seen["raw_path"] == "/model/" + call.url.split("/model/")[1]
    assert seen["ok"] is True
    assert "".join(d.get("content", "") for d in deltas(play(raw))) == "Renames the retry option and adds a test."


# --- request mapping ---------------------------------------------------------------------------


def test_system_and_developer_messages_become_system_blocks() -> None:
    body = body_of({"messages": [{"role": "system", "content": "Be terse."},
                                 {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
                                 {"role": "user", "content": "hi"}, {"role": "user", "content": "there"}]})
    assert body["system"] == [{"text": "Be terse."}, {"text": "Use tools."}]
    assert body["messages"] == [{"role": "user", "content": [{"text": "hi"}, {"text": "there"}]}]


def test_two_turn_tool_history_maps_to_tool_use_then_results_in_one_user_turn() -> None:
    body = body_of({"messages": TOOL_TURN, "tools": TOOLS, "tool_choice": "auto"})
    assistant, user = body["messages"][1], body["messages"][2]
    assert assistant == {"role": "assistant", "content": [
        {"toolUse": {"toolUseId": "tooluse_A1", "name": "read_file", "input": {"path": "a.yaml"}}},
        {"toolUse": {"toolUseId": "tooluse_B2", "name": "read_file", "input": {"path": "b.yaml"}}}]}
    assert user == {"role": "user", "content": [
        {"toolResult": {"toolUseId": "tooluse_A1", "content": [{"text": "port: 80"}]}},
        {"toolResult": {"toolUseId": "tooluse_B2", "content": [{"text": "port: 443"}]}},
        {"text": "<environment_details>cwd: /repo</environment_details>"}]}
    spec = body["toolConfig"]["tools"][0]["toolSpec"]
    assert spec["name"] == "read_file" and spec["description"] == "Read a file"
    assert "$schema" not in spec["inputSchema"]["json"] and spec["inputSchema"]["json"]["required"] == ["path"]
    assert body["toolConfig"]["toolChoice"] == {"auto": {}}


def test_tool_config_is_synthesised_from_history_when_the_request_has_no_tools() -> None:
    body = body_of({"messages": TOOL_TURN})
    assert body["toolConfig"] == {"tools": [{"toolSpec": {
        "name": "read_file", "inputSchema": {"json": {"type": "object", "properties": {}}}}}]}


def test_tool_choice_none_omits_tools_unless_the_history_needs_them() -> None:
    plain = body_of({"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS, "tool_choice": "none"})
    assert "toolConfig" not in plain
    looped = body_of({"messages": TOOL_TURN, "tools": TOOLS, "tool_choice": "none"})
    assert [t["toolSpec"]["name"] for t in looped["toolConfig"]["tools"]] == ["read_file"]
    assert "toolChoice" not in looped["toolConfig"]


@pytest.mark.parametrize(("choice", "expected"), [
    ("required", {"any": {}}),
    ({"type": "function", "function": {"name": "read_file"}}, {"tool": {"name": "read_file"}}),
])
def test_forced_tool_choice_maps_to_any_or_tool(choice: Any, expected: dict[str, Any]) -> None:
    body = body_of({"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS, "tool_choice": choice})
    assert body["toolConfig"]["toolChoice"] == expected


def test_orphan_tool_result_becomes_text_and_missing_result_is_reported() -> None:
    messages = [TOOL_TURN[0], TOOL_TURN[1], TOOL_TURN[2],
                {"role": "tool", "tool_call_id": "call_gone", "content": "stale"}]
    content = body_of({"messages": messages})["messages"][2]["content"]
    assert content[0] == {"toolResult": {"toolUseId": "tooluse_A1", "content": [{"text": "port: 80"}]}}
    assert content[1]["toolResult"]["toolUseId"] == "tooluse_B2"
    assert "no result" in content[1]["toolResult"]["content"][0]["text"]
    assert content[2] == {"text": "[result of tool call call_gone]\nstale"}


def test_inference_config_takes_limits_sampling_and_stops() -> None:
    body = body_of({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 900,
                    "temperature": 0, "top_p": 0.9, "stop": ["\n\nHuman:", ""]})
    assert body["inferenceConfig"] == {"maxTokens": 900, "temperature": 0, "topP": 0.9,
                                       "stopSequences": ["\n\nHuman:"]}


def test_data_url_images_become_bytes_and_http_links_are_refused() -> None:
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    body = body_of({"messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, part]}]})
    assert body["messages"][0]["content"][1] == {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}}
    with pytest.raises(BadRequest, match="data: URLs"):
        body_of({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]})


def test_cache_control_marks_become_cache_points() -> None:
    eph = {"type": "ephemeral"}
    body = body_of({"messages": [
        {"role": "system", "content": "Big stable prompt", "cache_control": eph},
        {"role": "user", "content": [{"type": "text", "text": "task", "cache_control": eph}], "cache_control": eph}]})
    assert body["system"] == [{"text": "Big stable prompt"}, {"cachePoint": {"type": "default"}}]
    # a part and its message both marked: one cache point, not two in a row
    assert body["messages"][0]["content"] == [{"text": "task"}, {"cachePoint": {"type": "default"}}]


def test_reasoning_effort_sets_a_thinking_budget_on_claude_4_5() -> None:
    body = body_of({"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "medium",
                    "temperature": 0, "max_tokens": 4000})
    assert body["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 8192}}
    assert body["inferenceConfig"] == {"maxTokens": 8192 + 4000}  # temperature dropped


def test_reasoning_effort_is_adaptive_on_claude_4_6_and_ignored_elsewhere() -> None:
    req = {"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "high"}
    assert body_of(req, "global.anthropic.claude-opus-4-6-v1")["additionalModelRequestFields"] == {
        "thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}}
    assert "additionalModelRequestFields" not in body_of(req, "meta.llama3-3-70b-instruct-v1:0")
    assert "additionalModelRequestFields" not in body_of(req, ARN)
    assert "additionalModelRequestFields" not in body_of({**req, "messages": TOOL_TURN[:2]})


# --- non-stream response -----------------------------------------------------------------------


def test_converse_response_maps_text_tool_calls_reasoning_and_usage() -> None:
    answer = {"output": {"message": {"role": "assistant", "content": [
        {"reasoningContent": {"reasoningText": {"text": "Need both files.", "signature": "sig"}}},
        {"text": "Reading both."},
        {"toolUse": {"toolUseId": "tooluse_1", "name": "read_file", "input": {"path": "a.yaml"}}},
        {"toolUse": {"toolUseId": "tooluse_2", "name": "read_file", "input": {"path": "b.yaml"}}}]}},
        "stopReason": "tool_use", "metrics": {"latencyMs": 900},
        "usage": {"inputTokens": 100, "outputTokens": 40, "totalTokens": 2140,
                  "cacheReadInputTokens": 2000, "cacheWriteInputTokens": 0}}
    done = ADAPTER.parse_response(target(), json.dumps(answer).encode())
    choice = done["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Reading both."
    assert choice["message"]["reasoning_content"] == "Need both files."
    assert [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in choice["message"]["tool_calls"]] == [
        ("tooluse_1", "read_file", {"path": "a.yaml"}), ("tooluse_2", "read_file", {"path": "b.yaml"})]
    assert done["usage"]["prompt_tokens"] == 2100 and done["usage"]["total_tokens"] == 2140
    assert done["usage"]["prompt_tokens_details"] == {"cached_tokens": 2000, "cache_creation_tokens": 0}


@pytest.mark.parametrize(("stop", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
    ("guardrail_intervened", "content_filter"), ("content_filtered", "content_filter"),
])
def test_stop_reasons_map_to_openai_finish_reasons(stop: str, finish: str) -> None:
    answer = {"output": {"message": {"role": "assistant", "content": [{"text": "x"}]}}, "stopReason": stop}
    assert ADAPTER.parse_response(target(), json.dumps(answer).encode())["choices"][0]["finish_reason"] == finish


# --- stream ------------------------------------------------------------------------------------


def test_parallel_tool_calls_count_from_zero_with_ids_names_and_exact_arguments() -> None:
    chunks = play(encode("parallel_tool_calls.jsonl"))
    calls = [c for d in deltas(chunks) for c in d.get("tool_calls", [])]
    firsts = [c for c in calls if "id" in c]
    assert [(c["index"], c["id"], c["function"]["name"]) for c in firsts] == [
        (0, "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "read_file"), (1, "tooluse_3fJq9m0aT0uVYtq2r1Xw8g", "read_file")]
    args = {i: "".join(c["function"]["arguments"] for c in calls if c["index"] == i) for i in (0, 1)}
    assert args == {0: '{"path": "config/base.yaml"}', 1: '{"path": "config/prod.yaml", "limit": 200}'}
    assert "".join(d.get("content", "") for d in deltas(chunks)) == "I'll read both config files to compare them."
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 1203 + 10240 + 512
    assert chunks[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": 10240, "cache_creation_tokens": 512}


def test_stream_passes_the_normaliser_unchanged() -> None:
    transcript = Transcript()
    fixer = StreamNormaliser(transcript, include_usage=True)
    assert not any(fixer.fix(c)[1] for c in play(encode("parallel_tool_calls.jsonl")))
    assert [(t.name, "".join(t.arguments)) for t in transcript.tool_calls][1] == (
        "read_file", '{"path": "config/prod.yaml", "limit": 200}')
    assert transcript.usage is not None and transcript.usage["completion_tokens"] == 96


def test_reasoning_deltas_become_reasoning_content_and_signatures_are_dropped() -> None:
    ds = deltas(play(encode("reasoning_then_text.jsonl"), cuts=(5,)))
    assert "".join(d.get("reasoning_content", "") for d in ds) == "The user wants a one-line summary of the diff."
    assert "".join(d.get("content", "") for d in ds) == "Renames the retry option and adds a test."
    assert ds[0]["role"] == "assistant"


def test_tool_call_without_input_gets_empty_object_arguments() -> None:
    raw = b"".join(encode_message({":event-type": ev, ":message-type": "event"}, json.dumps(p).encode()) for ev, p in [
        ("contentBlockStart", {"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "t1", "name": "list_files"}}}),
        ("contentBlockStop", {"contentBlockIndex": 0}), ("messageStop", {"stopReason": "tool_use"})])
    calls = [c for d in deltas(play(raw)) for c in d.get("tool_calls", [])]
    assert "".join(c["function"]["arguments"] for c in calls) == "{}"


@pytest.mark.parametrize(("exception", "status"), [
    ("throttlingException", 429), ("serviceUnavailableException", 503), ("validationException", 400),
    ("modelStreamErrorException", 502), ("internalServerException", 500),
])
def test_in_stream_exceptions_raise_with_mapped_status(exception: str, status: int) -> None:
    raw = encode_message({":exception-type": exception, ":message-type": "exception"},
                         b'{"message":"something went wrong"}')
    with pytest.raises(UpstreamError) as info:
        play(raw)
    assert info.value.status == status and "something went wrong" in info.value.message


def test_exception_after_text_keeps_the_text_already_decoded() -> None:
    decoder, state = ADAPTER.new_decoder(), ADAPTER.new_stream(target())
    got: list[dict[str, Any]] = []
    with pytest.raises(UpstreamError) as info:
        for event, data in decoder.feed(encode("throttled_midstream.jsonl")):
            got.extend(ADAPTER.parse_event(state, event, data))
    assert info.value.status == 429 and "Too many tokens" in info.value.message
    assert "".join(d.get("content", "") for d in deltas(got)) == "Here is the plan"


def test_corrupt_event_stream_is_an_upstream_error() -> None:
    raw = bytearray(encode("reasoning_then_text.jsonl"))
    raw[20] ^= 0xFF  # inside the first message's headers: its CRC no longer matches
    with pytest.raises(UpstreamError, match="corrupt event stream"):
        ADAPTER.new_decoder().feed(bytes(raw))


def test_an_event_past_max_event_is_refused() -> None:
    raw = encode_message({":event-type": "contentBlockDelta", ":message-type": "event"}, b"x" * 2048)
    assert ADAPTER.new_decoder(4096).feed(raw)
    with pytest.raises(EventTooLarge):  # the relay makes it upstream_event_too_large
        ADAPTER.new_decoder(1024).feed(raw)


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "body", "expected", "etype"), [
    (400, b'{"message":"The model returned the following errors: messages: text content blocks must be non-empty"}',
     400, "invalid_request_error"),
    (403, b'{"Message":"User is not authorized to perform: bedrock:InvokeModel"}', 403, "permission_error"),
    (424, b'{"message":"Model returned error"}', 502, "server_error"),
    (429, b'{"message":"Too many requests, please wait before trying again."}', 429, "rate_limit_error"),
])
def test_error_bodies_map_by_status(status: int, body: bytes, expected: int, etype: str) -> None:
    err = ADAPTER.parse_error(status, body)
    assert (err.status, err.type) == (expected, etype)
    assert err.message.startswith("bedrock: ") and json.loads(body).popitem()[1] in err.message
