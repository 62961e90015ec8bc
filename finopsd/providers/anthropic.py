"""Anthropic Messages API: OpenAI chat requests as ``/v1/messages`` bodies, answers back as chat chunks.

References (the wire format is taken from these):
- https://docs.anthropic.com/en/api/messages — request body, content blocks, ``tool_choice``,
  ``metadata``, ``stop_reason`` values, usage fields
- https://docs.anthropic.com/en/docs/build-with-claude/streaming — event flow
  (``message_start``, ``content_block_start/delta/stop``, ``message_delta``, ``message_stop``,
  ``ping``, ``error``); ``input_json_delta`` fragments; cumulative usage in ``message_delta``
- https://docs.anthropic.com/en/api/errors — ``{"type": "error", "error": {"type", "message"}}``,
  529 ``overloaded_error``
- https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking — ``budget_tokens`` ≥ 1024
  and < ``max_tokens``; no ``temperature``/``top_k`` and only ``top_p`` ≥ 0.95 with thinking; no
  forced tool use with thinking; the last assistant turn of a tool loop must start with its
  (signed) thinking block
- https://docs.anthropic.com/en/docs/build-with-claude/adaptive-thinking — ``thinking: {type:
  adaptive}`` plus ``output_config.effort``: the only mode on Opus 4.7 and later, and the
  replacement for ``budget_tokens`` (deprecated) on the 4.6 models

OpenAI chat cannot carry Anthropic's thinking signatures back, so a request whose last assistant
turn holds tool calls is sent without thinking: that is the documented way to avoid the 400
("To avoid this requirement, disable thinking"). The first turn after each user message thinks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

from finopsd.errors import GatewayError, UpstreamError
from finopsd.providers.anthropic_request import DEFAULT_MAX_TOKENS, messages_body
from finopsd.providers.base import BaseAdapter, Target, UpstreamRequest, upstream_error
from finopsd.providers.cache_points import place_messages
from finopsd.providers.canonical import (
    StreamState,
    arguments_json,
    as_object,
    chat_completion,
    completion_id,
    load_object,
    tool_call,
)
from finopsd.usage import token_count

# DEFAULT_MAX_TOKENS is the request side's (anthropic_request), named here too for its readers
__all__ = [
    "ANTHROPIC_VERSION",
    "DEFAULT_MAX_TOKENS",
    "ERROR_STATUS",
    "FINISH_REASONS",
    "AnthropicAdapter",
    "AnthropicStream",
    "completion_from_message",
    "error_from_event",
    "finish_reason",
    "finish_stream",
    "stream_event",
    "usage_to_openai",
]

ANTHROPIC_VERSION: Final = "2023-06-01"
FINISH_REASONS: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",  # a server tool paused the turn; for a chat client the answer so far is it
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# error type → the HTTP status a client should see (in-band stream errors carry no status)
ERROR_STATUS: Final = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 503,  # Anthropic's 529 is not a status OpenAI clients know to retry
    "timeout_error": 504,
}


# --- response: Anthropic Message / events → chat completion and chunks -------------------


def usage_to_openai(u: dict[str, Any]) -> dict[str, Any]:
    """Anthropic usage → OpenAI usage; input_tokens excludes cache reads and writes, so add them."""
    fresh = token_count(u.get("input_tokens"))
    read = token_count(u.get("cache_read_input_tokens"))
    written = token_count(u.get("cache_creation_input_tokens"))
    output = token_count(u.get("output_tokens"))
    details = u.get("output_tokens_details")
    thinking = details.get("thinking_tokens") if isinstance(details, dict) else None
    prompt_details: dict[str, Any] = {"cached_tokens": read, "cache_creation_tokens": written}
    ttl = u.get("cache_creation")
    if isinstance(ttl, dict):  # 1h cache writes cost more than 5m ones: pricing needs the split
        for key in ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"):
            if isinstance(ttl.get(key), int):
                prompt_details[key] = ttl[key]
    return {
        "prompt_tokens": fresh + read + written,
        "completion_tokens": output,
        "total_tokens": fresh + read + written + output,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {"reasoning_tokens": token_count(thinking)},
        # Roo Code reads these top-level names (CLIENTS.md) to show cache hits
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": written,
    }


def finish_reason(stop_reason: Any, has_calls: bool) -> str:
    reason = FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"
    return "tool_calls" if has_calls and reason == "stop" else reason


def error_from_event(err: Any, provider: str) -> UpstreamError:
    """An Anthropic error object (in a stream or a body) → the error the client gets."""
    etype = err.get("type") if isinstance(err, dict) else None
    message = err.get("message") if isinstance(err, dict) else None
    etype = etype if isinstance(etype, str) else None
    return UpstreamError(
        f"{provider}: {message if isinstance(message, str) and message else 'upstream stream error'}",
        status=ERROR_STATUS.get(etype or "", 502),
        type=etype or "upstream_error",
    )


def _load(data: bytes | str, provider: str) -> dict[str, Any]:
    parsed = load_object(data, provider)
    if parsed.get("type") == "error":
        raise error_from_event(parsed.get("error"), provider)
    return parsed


def _tool_call(block: dict[str, Any]) -> dict[str, Any]:
    return tool_call(block.get("id"), block.get("name"), arguments_json(block.get("input")))


def completion_from_message(msg: dict[str, Any], model: str) -> dict[str, Any]:
    """A whole Message → ``chat.completion``."""
    text: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in msg.get("content") or ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            text.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thoughts.append(block["thinking"])
        elif kind == "tool_use":
            calls.append(_tool_call(block))
        # redacted_thinking, server_tool_use and server tool results have no chat equivalent
    usage = msg.get("usage")
    return chat_completion(
        upstream_id=msg.get("id"), model=msg.get("model") or model, content="".join(text), thoughts=thoughts,
        calls=calls, finish=finish_reason(msg.get("stop_reason"), bool(calls)),
        usage=usage_to_openai(usage) if isinstance(usage, dict) else None,
    )


@dataclass(slots=True)
class AnthropicStream(StreamState):
    """Anthropic block index → our call index in ``tools``; usage from message_start and message_delta."""

    usage: dict[str, Any] = field(default_factory=dict)  # message_start usage, updated by message_delta

    def openai_usage(self) -> dict[str, Any] | None:
        return usage_to_openai(self.usage) if self.usage else None


def _block_start(s: AnthropicStream, ev: dict[str, Any]) -> list[dict[str, Any]]:
    block = ev.get("content_block")
    if not isinstance(block, dict):
        return []
    kind = block.get("type")
    if kind == "tool_use":
        # the input arrives as input_json_delta fragments
        return [s.start_call(int(ev.get("index", -1)), block.get("id"), block.get("name"))]
    if kind == "text" and block.get("text"):
        return [s.chunk({"content": block["text"]})]
    if kind == "thinking" and block.get("thinking"):
        return [s.chunk({"reasoning_content": block["thinking"]})]
    return []  # empty text/thinking starts, redacted_thinking, server tools


def _block_delta(s: AnthropicStream, ev: dict[str, Any]) -> list[dict[str, Any]]:
    delta = ev.get("delta")
    if not isinstance(delta, dict):
        return []
    kind = delta.get("type")
    if kind == "text_delta" and delta.get("text"):
        return [s.chunk({"content": delta["text"]})]
    if kind == "thinking_delta" and delta.get("thinking"):
        return [s.chunk({"reasoning_content": delta["thinking"]})]
    if kind == "input_json_delta" and delta.get("partial_json"):
        # none for a block that is not one of our calls: the input of a server tool (web search)
        return s.call_arguments(int(ev.get("index", -1)), delta["partial_json"])
    return []  # signature_delta, citations_delta


def stream_event(s: AnthropicStream, event: str | None, data: str) -> list[dict[str, Any]]:
    """One SSE frame → canonical chunks."""
    if not data.strip():
        return []
    ev = _load(data, s.provider)  # raises for an in-band error event
    kind = ev.get("type") or event
    if kind == "content_block_delta":
        return _block_delta(s, ev)
    if kind == "content_block_start":
        return _block_start(s, ev)
    if kind == "content_block_stop":
        # a tool without parameters streams no input: end_call gives clients parseable arguments
        return s.end_call(int(ev.get("index", -1)))
    if kind == "message_start":
        msg = as_object(ev.get("message"))
        if msg.get("id"):
            s.id = completion_id(msg["id"])
        if msg.get("model"):
            s.model = str(msg["model"])
        if isinstance(msg.get("usage"), dict):
            s.usage.update(msg["usage"])
        return [s.chunk({"content": ""})]
    if kind == "message_delta":
        if isinstance(ev.get("usage"), dict):  # cumulative: later values replace earlier ones
            s.usage.update({k: v for k, v in ev["usage"].items() if v is not None})
        delta = as_object(ev.get("delta"))
        if delta.get("stop_reason") and not s.finished:
            s.finished = True
            return [s.chunk({}, finish_reason(delta["stop_reason"], s.calls > 0))]
        return []
    if kind == "message_stop":
        out: list[dict[str, Any]] = []
        if not s.finished and s.started:  # a message_delta without stop_reason (not seen, but cheap)
            s.finished = True
            out.append(s.chunk({}, "tool_calls" if s.calls else "stop"))
        return out + s.usage_chunk()
    return []  # ping, and event types added later


def finish_stream(s: AnthropicStream) -> list[dict[str, Any]]:
    """At upstream EOF: the usage chunk if ``message_stop`` never came (a cut stream is still charged).

    No finish_reason is made up here: a stream cut before ``message_delta`` did not finish.
    """
    return s.usage_chunk()


class AnthropicAdapter(BaseAdapter):
    """``POST {base_url}/v1/messages`` with ``x-api-key`` and ``anthropic-version`` headers."""

    def messages_body(self, target: Target, req: dict[str, Any], *, stream: bool) -> dict[str, Any]:
        """The Messages body for a canonical chat request; Vertex reuses it (drops model, adds version)."""
        body = messages_body(target.model, req, stream=stream)
        place_messages(body, target.model, target.cache_ttl)
        return body

    def build_request(self, target: Target, req: dict[str, Any], *, stream: bool) -> UpstreamRequest:
        headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION,
                   **target.provider.headers}
        if target.api_key:
            headers["x-api-key"] = target.api_key
        body = json.dumps(self.messages_body(target, req, stream=stream), ensure_ascii=False).encode()
        return UpstreamRequest(f"{target.provider.base_url}/v1/messages", headers, body)

    def parse_response(self, target: Target, body: bytes) -> dict[str, Any]:
        return completion_from_message(_load(body, target.provider.name), target.model)

    def new_stream(self, target: Target) -> AnthropicStream:
        return AnthropicStream(target.provider.name, target.model)  # id: the message's, at message_start

    def parse_event(self, state: AnthropicStream, event: str | None, data: str) -> list[dict[str, Any]]:
        return stream_event(state, event, data)

    def finish_stream(self, state: AnthropicStream) -> list[dict[str, Any]]:
        """At upstream EOF: the usage chunk when the stream was cut before ``message_stop``."""
        return finish_stream(state)

    def parse_error(self, status: int, body: bytes) -> GatewayError:
        err = upstream_error(status, body)
        if status == 529:  # overloaded: clients retry 503, most do not know 529
            err.status, err.type = 503, "overloaded_error"
        return err
