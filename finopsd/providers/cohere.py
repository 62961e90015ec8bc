"""Cohere Chat API v2: OpenAI chat requests as ``/v2/chat`` bodies, answers back as chat chunks.

References (the wire format is taken from these):
- https://docs.cohere.com/reference/chat — request body (``messages``, ``tools``, ``tool_choice``
  ``REQUIRED``/``NONE``, ``max_tokens``, ``temperature``, ``p`` in [0.01, 0.99], ``k``,
  ``stop_sequences`` (up to 5), ``seed``, penalties, ``response_format``, ``thinking``), the
  response (``message.content``/``tool_plan``/``tool_calls``, ``finish_reason`` COMPLETE,
  STOP_SEQUENCE, MAX_TOKENS, TOOL_CALL, ERROR, TIMEOUT, ``usage.billed_units``/``tokens``)
- https://docs.cohere.com/reference/chat-stream and https://docs.cohere.com/v2/docs/streaming —
  the SSE events message-start, content-start/delta/end, tool-plan-delta, tool-call-start/delta/
  end, citation-start/end, message-end; every event names itself in its JSON ``type``
- https://docs.cohere.com/docs/tool-use and https://docs.cohere.com/v2/docs/tool-use-streaming —
  assistant turns carry ``tool_plan`` and ``tool_calls``; tool results are ``role: tool``
  messages with ``tool_call_id``; tools use OpenAI's JSON shape (``type: function``, ``function:
  {name, description, parameters}``)
- https://docs.cohere.com/docs/reasoning — ``thinking: {type, token_budget}``; thinking content
  blocks (``type: thinking``)

The tool plan ("I will look up the weather in Madrid and Brasilia.") is sent to clients as
``content``, not ``reasoning_content``: it is text the model addresses to the user, agents show
content and echo it back in the assistant turn, and the request side turns the text of an assistant
turn with tool calls back into ``tool_plan``, so the plan survives the round trip. Thinking blocks of
reasoning models are ``reasoning_content``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from finopsd.errors import GatewayError, UpstreamError, UpstreamTimeout
from finopsd.providers.base import BaseAdapter, Target, UpstreamRequest, upstream_error
from finopsd.providers.canonical import (
    StreamState,
    as_object,
    chat_completion,
    content_text,
    completion_id,
    is_number,
    load_object,
    requested_max_tokens,
    requested_stops,
    tool_call,
)
from finopsd.usage import token_count

FINISH_REASONS: Final = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
}
MAX_STOP_SEQUENCES: Final = 5
# reasoning_effort → thinking token budget for Cohere's reasoning models
THINKING_BUDGETS: Final = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 24576}


# --- request --------------------------------------------------------------------------------


def _user_content(content: Any) -> str | list[dict[str, Any]]:
    """User content: a string, or text and image_url parts (Cohere's vision models take OpenAI's shape)."""
    if not isinstance(content, list):
        return content if isinstance(content, str) else ""
    parts: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif part.get("type") == "image_url" and part.get("image_url"):
            image = part["image_url"]
            parts.append({"type": "image_url", "image_url": image if isinstance(image, dict) else {"url": image}})
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)  # the plain form every model accepts
    return parts


def _call_of(call: dict[str, Any]) -> dict[str, Any]:
    """A chat tool call as Cohere takes and gives it: OpenAI's shape, arguments never empty."""
    fn = as_object(call.get("function"))
    args = fn.get("arguments")
    return tool_call(call.get("id"), fn.get("name"), args if isinstance(args, str) and args else "{}")


def _assistant(msg: dict[str, Any]) -> dict[str, Any] | None:
    text = content_text(msg.get("content"))
    calls = [_call_of(call) for call in msg.get("tool_calls") or () if isinstance(call, dict)]
    out: dict[str, Any] = {"role": "assistant"}
    if calls:
        out["tool_calls"] = calls
        if text.strip():
            out["tool_plan"] = text  # the text beside tool calls is the plan (see module docstring)
    elif text:
        out["content"] = text
    else:
        return None  # an empty assistant turn says nothing, and Cohere refuses empty content
    return out


def messages_to_cohere(messages: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for msg in messages if isinstance(messages, list) else ():
        if not isinstance(msg, dict):
            continue
        role = msg.get("role")
        if role in ("system", "developer"):
            text = content_text(msg.get("content"))
            if text:
                out.append({"role": "system", "content": text})
        elif role == "assistant":
            turn = _assistant(msg)
            if turn is not None:
                out.append(turn)
        elif role == "tool":
            # an empty result is refused; say so rather than drop the answer to a call
            content = content_text(msg.get("content")) or "(empty)"
            out.append({"role": "tool", "tool_call_id": str(msg.get("tool_call_id") or ""), "content": content})
        else:
            out.append({"role": "user", "content": _user_content(msg.get("content"))})
    return out


def _tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for tool in tools if isinstance(tools, list) else ():
        fn = as_object(tool.get("function")) if isinstance(tool, dict) else {}
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            continue
        entry: dict[str, Any] = {"name": fn["name"]}
        if isinstance(fn.get("description"), str) and fn["description"]:
            entry["description"] = fn["description"]
        params = fn.get("parameters")
        entry["parameters"] = params if isinstance(params, dict) and params else {"type": "object", "properties": {}}
        out.append({"type": "function", "function": entry})
    return out


def chat_body(model: str, req: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": messages_to_cohere(req.get("messages")), "stream": stream}
    tools = _tools(req.get("tools"))
    choice = req.get("tool_choice")
    if tools:
        body["tools"] = tools
        if choice == "required" or (isinstance(choice, dict) and choice.get("type") == "function"):
            # Cohere cannot name the tool to call: REQUIRED is the nearest promise
            body["tool_choice"] = "REQUIRED"
        elif choice == "none":
            body["tool_choice"] = "NONE"
        if any(as_object(t.get("function")).get("strict") for t in req.get("tools") or () if isinstance(t, dict)):
            body["strict_tools"] = True
    limit = requested_max_tokens(req)
    if limit is not None:
        body["max_tokens"] = limit
    if is_number(req.get("temperature")):
        body["temperature"] = req["temperature"]
    if is_number(req.get("top_p")):
        body["p"] = min(max(float(req["top_p"]), 0.01), 0.99)  # Cohere's documented bounds
    for key in ("seed", "frequency_penalty", "presence_penalty"):
        if is_number(req.get(key)):
            body[key] = req[key]
    stops = requested_stops(req)
    if stops:
        body["stop_sequences"] = stops[:MAX_STOP_SEQUENCES]
    fmt = as_object(req.get("response_format"))
    if fmt.get("type") == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif fmt.get("type") == "json_schema" and isinstance(as_object(fmt.get("json_schema")).get("schema"), dict):
        body["response_format"] = {"type": "json_object", "json_schema": fmt["json_schema"]["schema"]}
    effort = req.get("reasoning_effort")
    if isinstance(effort, str) and "reasoning" in model:  # only reasoning models take `thinking`
        if effort == "none":
            body["thinking"] = {"type": "disabled"}
        elif effort in THINKING_BUDGETS:
            body["thinking"] = {"type": "enabled", "token_budget": THINKING_BUDGETS[effort]}
    return body


# --- response -------------------------------------------------------------------------------


def usage_to_openai(u: dict[str, Any]) -> dict[str, Any]:
    """Cohere usage → OpenAI usage: billed units (what is charged), else raw tokens."""
    billed, tokens = as_object(u.get("billed_units")), as_object(u.get("tokens"))
    source = billed if billed.get("input_tokens") is not None or billed.get("output_tokens") is not None else tokens
    prompt = token_count(source.get("input_tokens"))
    completion = token_count(source.get("output_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": token_count(u.get("cached_tokens"))},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def finish_reason(reason: Any, has_calls: bool, provider: str) -> str:
    """Cohere's finish reason → OpenAI's; ERROR and TIMEOUT raise (the answer is not whole)."""
    if reason == "TIMEOUT":
        raise UpstreamTimeout(f"{provider}: the model timed out", code="upstream_timeout")
    if isinstance(reason, str) and reason.startswith("ERROR"):
        raise UpstreamError(f"{provider}: the model stopped with an error ({reason})", code=reason.lower())
    mapped = FINISH_REASONS.get(reason, "stop") if isinstance(reason, str) else "stop"
    return "tool_calls" if has_calls and mapped == "stop" else mapped


def completion_from_chat(body: dict[str, Any], model: str, provider: str) -> dict[str, Any]:
    msg = as_object(body.get("message"))
    text: list[str] = []
    thoughts: list[str] = []
    for block in msg.get("content") or ():
        if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
            text.append(block["text"])
        elif isinstance(block, dict) and block.get("type") == "thinking" and isinstance(block.get("thinking"), str):
            thoughts.append(block["thinking"])
    plan: str = msg["tool_plan"] if isinstance(msg.get("tool_plan"), str) else ""
    calls = [_call_of(as_object(call)) for call in msg.get("tool_calls") or ()]
    usage = body.get("usage")
    return chat_completion(
        upstream_id=body.get("id"), model=model, content=plan + "".join(text), thoughts=thoughts, calls=calls,
        finish=finish_reason(body.get("finish_reason"), bool(calls), provider),
        usage=usage_to_openai(usage) if isinstance(usage, dict) else None,
    )


@dataclass(slots=True)
class CohereStream(StreamState):
    """Cohere's tool-call index → our call index in ``tools``; usage; a finish that failed."""

    usage: dict[str, Any] | None = None
    error: GatewayError | None = None  # a failed message-end, raised once its usage is recorded

    def openai_usage(self) -> dict[str, Any] | None:
        return None if self.usage is None else usage_to_openai(self.usage)

    def finish(self) -> list[dict[str, Any]]:
        """At EOF: usage still owed, or the error a failed message-end announced."""
        if self.error is not None:
            raise self.error
        return self.usage_chunk()


def _message(ev: dict[str, Any]) -> dict[str, Any]:
    return as_object(as_object(ev.get("delta")).get("message"))


def _tool_call(s: CohereStream, ev: dict[str, Any], start: bool) -> list[dict[str, Any]]:
    call = as_object(_message(ev).get("tool_calls"))  # one object per event, not a list, in the stream
    fn = as_object(call.get("function"))
    args = fn.get("arguments") if isinstance(fn.get("arguments"), str) else ""
    index = ev.get("index", 0)
    if start:
        return [s.start_call(index, call.get("id"), fn.get("name"), args)]
    return s.call_arguments(index, args)


def stream_event(s: CohereStream, event: str | None, data: str) -> list[dict[str, Any]]:
    """One SSE frame → canonical chunks."""
    if s.error is not None:
        raise s.error
    if not data.strip() or data.strip() == "[DONE]":
        return []
    ev = load_object(data, s.provider)
    kind = ev.get("type") or event
    if kind in ("content-delta", "content-start"):  # a start may already carry text
        content = as_object(_message(ev).get("content"))
        if isinstance(content.get("text"), str) and content["text"]:
            return [s.chunk({"content": content["text"]})]
        if isinstance(content.get("thinking"), str) and content["thinking"]:
            return [s.chunk({"reasoning_content": content["thinking"]})]
        return []
    if kind == "tool-plan-delta":
        plan = _message(ev).get("tool_plan")
        return [s.chunk({"content": plan})] if isinstance(plan, str) and plan else []
    if kind == "tool-call-start":
        return _tool_call(s, ev, start=True)
    if kind == "tool-call-delta":
        return _tool_call(s, ev, start=False)
    if kind == "tool-call-end":
        # a call without parameters: end_call gives clients parseable arguments
        return s.end_call(ev.get("index", 0))
    if kind == "message-start":
        if ev.get("id"):
            s.id = completion_id(ev["id"])
        return [s.chunk({"content": ""})]
    if kind == "message-end":
        delta = as_object(ev.get("delta"))
        if isinstance(delta.get("usage"), dict):
            s.usage = delta["usage"]
        if s.finished:
            return s.usage_chunk()
        s.finished = True
        try:
            out = [s.chunk({}, finish_reason(delta.get("finish_reason"), s.calls > 0, s.provider))]
        except GatewayError as e:
            # the tokens were spent all the same: hand over the usage now, raise at the next
            # frame or at EOF (a raise here would drop the usage with the frame)
            s.error = e
            return s.usage_chunk()
        return out + s.usage_chunk()
    if "message" in ev and "type" not in ev:  # an error object in place of an event
        raise upstream_error(500, data.encode(), s.provider)
    return []  # content-end, citations, debug events


class CohereAdapter(BaseAdapter):
    """``POST {base_url}/v2/chat`` with a Bearer key."""

    def build_request(self, target: Target, req: dict[str, Any], *, stream: bool) -> UpstreamRequest:
        headers = {"Content-Type": "application/json", **target.provider.headers}
        if stream:
            headers["Accept"] = "text/event-stream"
        if target.api_key:
            headers["Authorization"] = f"Bearer {target.api_key}"
        body = json.dumps(chat_body(target.model, req, stream=stream), ensure_ascii=False).encode()
        return UpstreamRequest(f"{target.provider.base_url}/v2/chat", headers, body)

    def parse_response(self, target: Target, body: bytes) -> dict[str, Any]:
        return completion_from_chat(load_object(body, target.provider.name), target.model, target.provider.name)

    def new_stream(self, target: Target) -> CohereStream:
        return CohereStream(target.provider.name, target.model)

    def parse_event(self, state: CohereStream, event: str | None, data: str) -> list[dict[str, Any]]:
        return stream_event(state, event, data)

    def finish_stream(self, state: CohereStream) -> list[dict[str, Any]]:
        return state.finish()

    def parse_error(self, status: int, body: bytes) -> GatewayError:
        return upstream_error(status, body, "cohere")
