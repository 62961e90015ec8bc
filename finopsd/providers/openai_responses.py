"""OpenAI's Responses API as an upstream protocol, for the native passthrough of ``/responses``.

Reference: https://platform.openai.com/docs/api-reference/responses (create, the Response
object) and https://platform.openai.com/docs/api-reference/responses-streaming (events).

The client's body goes upstream as sent (model renamed) and the answer comes back as the
upstream's own bytes; this adapter only reads it into canonical chunks, so the log gets
the text, the function calls and the usage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from finopsd.errors import UpstreamError
from finopsd.jsonwire import loads
from finopsd.providers.base import Target, UpstreamRequest
from finopsd.providers.openai_compat import OpenAIAdapter


def usage_to_chat(usage: Any) -> dict[str, Any] | None:
    """Responses usage → OpenAI chat usage."""
    if not isinstance(usage, dict):
        return None
    details_in = usage.get("input_tokens_details") or {}
    details_out = usage.get("output_tokens_details") or {}
    return {
        "prompt_tokens": usage.get("input_tokens", 0),
        "completion_tokens": usage.get("output_tokens", 0),
        "total_tokens": usage.get("total_tokens", 0),
        "prompt_tokens_details": {"cached_tokens": details_in.get("cached_tokens", 0)},
        "completion_tokens_details": {"reasoning_tokens": details_out.get("reasoning_tokens", 0)},
    }


def _finish(response: dict[str, Any], calls: bool) -> str:
    if response.get("status") == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        return "content_filter" if reason == "content_filter" else "length"
    return "tool_calls" if calls else "stop"


@dataclass
class ResponsesStream:
    calls: dict[str, int] = field(default_factory=dict)  # output item id → our tool-call index


def _chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> dict[str, Any]:
    chunk: dict[str, Any] = {"object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage is not None:
        chunk["usage"] = usage
    return chunk


class ResponsesAdapter(OpenAIAdapter):
    """``POST {base_url}/responses``: passthrough, read for the transcript."""

    passthrough = False  # the dialect's own events are relayed raw by the route's emitter

    def build_request(self, target: Target, req: dict[str, Any], *, stream: bool) -> UpstreamRequest:
        headers = {"Content-Type": "application/json", **target.provider.headers, **self.auth_headers(target)}
        body = json.dumps({**req, "model": target.model}).encode()
        return UpstreamRequest(self.url(target, "responses"), headers, body)

    def parse_response(self, target: Target, body: bytes) -> dict[str, Any]:
        response = super().parse_response(target, body)
        text: list[str] = []
        calls = []
        for item in response.get("output") or ():
            if not isinstance(item, dict):
                continue
            if item.get("type") == "message":
                text += [p.get("text", "") for p in item.get("content") or () if isinstance(p, dict)]
            elif item.get("type") == "function_call":
                calls.append({"id": item.get("call_id"), "type": "function",
                              "function": {"name": item.get("name"), "arguments": item.get("arguments", "")}})
        message: dict[str, Any] = {"role": "assistant", "content": "".join(text)}
        if calls:
            message["tool_calls"] = calls
        return {"object": "chat.completion", "model": response.get("model"), "usage": usage_to_chat(
            response.get("usage")), "choices": [{"index": 0, "message": message,
                                                 "finish_reason": _finish(response, bool(calls))}]}

    def new_stream(self, target: Target) -> ResponsesStream:
        return ResponsesStream()

    def parse_event(self, state: ResponsesStream, event: str | None, data: str) -> list[dict[str, Any]]:
        try:
            ev = loads(data)
        except ValueError:
            raise UpstreamError("openai: upstream sent an invalid Responses event") from None
        kind = ev.get("type") if isinstance(ev, dict) else None
        if kind == "response.output_text.delta":
            return [_chunk({"content": ev.get("delta", "")})]
        if kind == "response.reasoning_summary_text.delta":
            return [_chunk({"reasoning_content": ev.get("delta", "")})]
        if kind == "response.output_item.added" and (ev.get("item") or {}).get("type") == "function_call":
            item = ev["item"]
            index = state.calls[str(item.get("id"))] = len(state.calls)
            return [_chunk({"tool_calls": [{"index": index, "id": item.get("call_id"), "type": "function",
                                            "function": {"name": item.get("name"), "arguments": ""}}]})]
        if kind == "response.function_call_arguments.delta" and str(ev.get("item_id")) in state.calls:
            index = state.calls[str(ev["item_id"])]
            return [_chunk({"tool_calls": [{"index": index, "function": {"arguments": ev.get("delta", "")}}]})]
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            response = ev.get("response") or {}
            return [_chunk({}, _finish(response, bool(state.calls)), usage_to_chat(response.get("usage")))]
        return []
