"""Fuzzing what upstreams answer, on every adapter, whole and streamed.

A fake upstream answers each request with a valid answer of that protocol in which
hypothesis replaced one part (a field, an event, a number) with other JSON, or with
bytes that are not JSON at all. Whatever it says, the client gets its answer or a 502
(in-band once the stream began, and the stream still ends), never a 500, and the
request is logged once with bounded numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finopsd.usage import MAX_TOKENS
from finopsd.sse import SSEDecoder
from tests.fakes import FIXTURES
from tests.live import LiveGateway, live_gateway
from tests.test_providers_bedrock import encode_message

Event = tuple[str | None, Any]


def sse_events(name: str) -> list[Event]:
    """A fixture's frames as (event name, parsed data), read with the gateway's own SSE decoder."""
    decoder = SSEDecoder()
    frames = decoder.feed((FIXTURES / name).read_bytes()) + decoder.close()
    return [(event, json.loads(data) if data.startswith("{") else data) for event, data in frames]


def bedrock_events(name: str) -> list[Event]:
    return [(json.loads(line)["event"], json.loads(line)["payload"])
            for line in (FIXTURES / name).read_text().splitlines()]


def fixture_json(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


CHAT = {"id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-5", "choices": [{
    "index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "ok", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a"}'}}]}}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12,
              "prompt_tokens_details": {"cached_tokens": 4}}}
OPENAI_STREAM = sse_events("openai/parallel_tool_calls.sse")
ANTHROPIC = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "stop_reason": "tool_use",
             "content": [{"type": "thinking", "thinking": "hm"}, {"type": "text", "text": "ok"},
                         {"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": {"path": "a"}}],
             "usage": {"input_tokens": 10, "output_tokens": 2, "cache_read_input_tokens": 3}}
GEMINI_STREAM = sse_events("gemini/parallel_calls.sse")
RESPONSES_STREAM = sse_events("openai/responses_function_call.sse")
PREDICTION = fixture_json("replicate/prediction_succeeded.json")

# protocol → (route, model, whole answer, stream events, how a stream is framed)
PROTOCOLS: dict[str, tuple[str, str, Any, list[Event], str]] = {
    "openai": ("/openai/chat/completions", "openai/gpt-5", CHAT, OPENAI_STREAM, "sse"),
    "mistral": ("/openai/chat/completions", "mistral/mistral-large", CHAT, OPENAI_STREAM, "sse"),
    "azure": ("/openai/chat/completions", "azure/gpt-5-prod", CHAT, OPENAI_STREAM, "sse"),
    "anthropic": ("/openai/chat/completions", "anthropic/claude-sonnet-4-5", ANTHROPIC,
                  sse_events("anthropic/tool_use_two_calls.sse"), "sse"),
    "vertex-claude": ("/openai/chat/completions", "vertex/claude-sonnet-4-5@20250929", ANTHROPIC,
                      sse_events("anthropic/thinking_then_text.sse"), "sse"),
    "gemini": ("/openai/chat/completions", "gemini/gemini-2.5-flash", GEMINI_STREAM[-1][1], GEMINI_STREAM, "sse"),
    "vertex-gemini": ("/openai/chat/completions", "vertex/gemini-2.5-flash", GEMINI_STREAM[-1][1],
                      sse_events("gemini/text_stream.sse"), "sse"),
    "cohere": ("/openai/chat/completions", "cohere/command-a", {
        "id": "co1", "finish_reason": "TOOL_CALL", "message": {
            "role": "assistant", "tool_plan": "plan", "content": [{"type": "text", "text": "ok"}],
            "tool_calls": [{"id": "t1", "type": "function",
                            "function": {"name": "read_file", "arguments": '{"path": "a"}'}}]},
        "usage": {"billed_units": {"input_tokens": 3, "output_tokens": 2}, "tokens": {"input_tokens": 9}}},
        sse_events("cohere/parallel_tool_calls.sse"), "sse"),
    "bedrock": ("/openai/chat/completions", "bedrock/anthropic.claude-sonnet-4-5", {
        "output": {"message": {"role": "assistant", "content": [
            {"reasoningContent": {"reasoningText": {"text": "hm", "signature": "s"}}}, {"text": "ok"},
            {"toolUse": {"toolUseId": "tu1", "name": "read_file", "input": {"path": "a"}}}]}},
        "stopReason": "tool_use", "usage": {"inputTokens": 5, "outputTokens": 2, "totalTokens": 7}},
        bedrock_events("bedrock/parallel_tool_calls.jsonl"), "eventstream"),
    "replicate": ("/openai/chat/completions", "replicate/meta/meta-llama-3-70b-instruct", PREDICTION,
                  sse_events("replicate/stream_text.sse"), "sse"),
    "responses": ("/openai/v1/responses", "openai/gpt-5", RESPONSES_STREAM[-1][1]["response"], RESPONSES_STREAM,
                  "sse"),
}

ODD = st.sampled_from([None, "", "x", -1, 0, 1.5, 10**23, -(10**23), 1e308, True, [], {}, [1], {"a": 1},
                       "[DONE]", {"type": "error", "error": "x"}])
JSON = st.recursive(
    ODD | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def paths(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from paths(child, (*at, key))


def replaced(value: Any, at: tuple[Any, ...], new: Any) -> Any:
    if not at:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[at[0]] = replaced(value[at[0]], at[1:], new)
    return copy


@st.composite
def mutated(draw: st.DrawFn, value: Any) -> Any:
    """``value`` with one to three of its parts (the whole included) replaced by other JSON."""
    for _ in range(draw(st.integers(1, 3))):
        value = replaced(value, draw(st.sampled_from(list(paths(value)))), draw(JSON))
    return value


def sse(events: list[Event]) -> list[bytes]:
    out = []
    for event, data in events:
        head = f"event: {event}\n" if event else ""
        text = data if isinstance(data, str) else json.dumps(data)
        out.append(f"{head}data: {text}\n\n".encode())
    return out


def eventstream(events: list[Event]) -> list[bytes]:
    return [encode_message({":event-type": str(e), ":content-type": "application/json", ":message-type": "event"},
                           json.dumps(data).encode()) for e, data in events]


@st.composite
def answers(draw: st.DrawFn) -> tuple[str, bool, bytes | None, list[bytes]]:
    """(protocol, stream?, whole body, stream frames) for one call."""
    protocol = draw(st.sampled_from(sorted(PROTOCOLS)))
    _, _, whole, events, framing = PROTOCOLS[protocol]
    stream = draw(st.booleans())
    garbage = draw(st.booleans()) and draw(st.integers(0, 9)) == 0  # now and then, bytes that are not JSON
    if not stream or protocol == "replicate":
        body = draw(st.binary(max_size=60)) if garbage else json.dumps(draw(mutated(whole))).encode()
        if protocol == "replicate" and stream:  # the first answer names the stream to read
            body = json.dumps({**PREDICTION, "status": "starting", "urls": {"stream": "/stream/x"}}).encode()
        if not stream:
            return protocol, False, body, []
    else:
        body = None
    i = draw(st.integers(0, len(events) - 1))
    events = [*events[:i], (events[i][0], draw(mutated(events[i][1]))), *events[i + 1:]]
    if draw(st.booleans()):  # cut the stream short
        events = events[: draw(st.integers(0, len(events)))]
    frames = (eventstream if framing == "eventstream" else sse)(events)
    if garbage:
        frames.insert(draw(st.integers(0, len(frames))), draw(st.binary(max_size=40)))
    return protocol, True, body, frames


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    yield from live_gateway(tmp_path_factory)


# the dialect a client asks in: each translates the canonical answer its own way
DIALECTS = {"chat": "/openai/chat/completions", "messages": "/anthropic/v1/messages", "responses": "/v1/responses",
            "genai": "/genai/v1beta/models/{model}:{method}"}


def call(live: LiveGateway, protocol: str, dialect: str, stream: bool) -> tuple[int, bytes]:
    route, model, _, _, _ = PROTOCOLS[protocol]
    route = route if protocol == "responses" else DIALECTS[dialect]
    if route.startswith("/genai/"):  # the model in the path; native to gemini, translated for the rest
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        contents = [{"role": "user", "parts": [{"text": "hi"}]}]
        body = json.dumps({"contents": contents}).encode()
        return live.request("POST", route.format(model=model, method=method), body)
    body: dict[str, Any] = {"model": model, "stream": stream}
    if route.endswith("/responses"):
        body["input"] = "hi"
    else:
        body.update(messages=[{"role": "user", "content": "hi"}], max_tokens=100)
        if route.endswith("/completions"):
            body["stream_options"] = {"include_usage": True}
    return live.request("POST", route, json.dumps(body).encode())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(answer=answers(), dialect=st.sampled_from(sorted(DIALECTS)))
def test_no_upstream_answer_gets_a_500_or_loses_its_row(
    live: LiveGateway, answer: tuple[str, bool, bytes | None, list[bytes]], dialect: str
) -> None:
    protocol, stream, body, frames = answer
    live.script.body, live.script.frames = body, frames
    live.script.content_type = "application/vnd.amazon.eventstream" if protocol == "bedrock" else "text/event-stream"
    before = live.rows_logged()
    status, raw = call(live, protocol, dialect, stream)
    assert status != 500 and b"internal error in the gateway" not in raw, (protocol, status, raw[:400])
    if status >= 400:  # in the dialect's error shape (OpenAI's, Anthropic's and Google's all have error.message)
        error = json.loads(raw)["error"]
        assert isinstance(error["message"], str) and error["message"]
    elif stream and dialect == "chat" and protocol != "responses":
        # the stream ends as a stream does: [DONE] after the answer, or one error event
        assert raw.endswith(b"data: [DONE]\n\n") or b'data: {"error"' in raw.rsplit(b"\n\n", 2)[-2], raw[-300:]
    assert live.rows_logged() - before == 1
    newest = newest_logged(live)  # as /api/logs shows it: valid JSON, bounded numbers
    assert all(n is None or 0 <= n <= 2 * MAX_TOKENS for n in newest["usage"].values()), newest["usage"]
    assert newest["cost_usd"] is None or math.isfinite(newest["cost_usd"])


def newest_logged(live: LiveGateway) -> dict[str, Any]:
    def refuse(name: str) -> None:
        raise ValueError(name)

    status, raw = live.request("GET", "/api/logs?limit=1")
    assert status == 200
    item: dict[str, Any] = json.loads(raw, parse_constant=refuse)["items"][0]
    return item
