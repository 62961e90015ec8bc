"""Anthropic Messages in (Claude Code), OpenAI chat out: for routing such clients to non-Anthropic upstreams.

References (the wire format is taken from these):
- https://docs.anthropic.com/en/api/messages — request body, content blocks, tools, ``tool_choice``,
  ``thinking``, ``metadata``, the Message response and ``stop_reason`` values
- https://docs.anthropic.com/en/docs/build-with-claude/streaming — the event order a client
  expects: ``message_start``; per block ``content_block_start``, deltas, ``content_block_stop``;
  ``message_delta`` (stop_reason, cumulative usage); ``message_stop``
- https://docs.anthropic.com/en/api/errors — error types per HTTP status
- https://docs.anthropic.com/en/docs/build-with-claude/effort — ``output_config.effort``

``messages_to_chat`` builds the canonical request, ``chat_to_message`` and ``ChatToMessagesStream``
turn the canonical answer back. Anthropic-only request fields (``cache_control``,
``context_management``, ``container``, ``mcp_servers``, server tools) are dropped: OpenAI-style
upstreams reject unknown keys or tool types they do not serve.
"""

from __future__ import annotations

import secrets
from typing import Any, Final

from finopsd.pricing import cache_reads, cache_writes
from finopsd.providers.canonical import (
    arguments_json,
    as_object,
    assistant_message,
    parse_arguments,
    tool_call,
)
from finopsd.usage import token_count

Event = tuple[str, dict[str, Any]]

# output_config.effort → reasoning_effort; xhigh and max become high, the top level that
# OpenAI-compatible upstreams widely accept
EFFORTS: Final = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
STOP_REASONS: Final = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
OPENAI_MAX_STOPS: Final = 4  # OpenAI rejects more than four stop sequences


def _effort_for_budget(budget: Any) -> str:
    """Manual thinking's ``budget_tokens`` → an effort level (the API minimum budget is 1024)."""
    if not isinstance(budget, int) or budget < 4096:
        return "low"
    return "medium" if budget < 16384 else "high"


def _joined_text(content: Any) -> str:
    """Text of a string or of text blocks, blocks separated by a blank line."""
    if isinstance(content, str):
        return content
    texts = []
    for block in content if isinstance(content, list) else ():
        if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
    return "\n\n".join(t for t in texts if t)


def _image_part(block: dict[str, Any]) -> dict[str, Any] | None:
    source = block.get("source")
    if not isinstance(source, dict):
        return None
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        url = f"data:{source.get('media_type') or 'image/png'};base64,{source['data']}"
    elif source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        return None  # file ids live in Anthropic's Files API: nothing another upstream can read
    return {"type": "image_url", "image_url": {"url": url}}


def _document_part(block: dict[str, Any]) -> dict[str, Any] | None:
    source = block.get("source")
    if not isinstance(source, dict):
        return None
    if source.get("type") == "base64" and source.get("media_type") == "application/pdf":
        file: dict[str, Any] = {"file_data": f"data:application/pdf;base64,{source.get('data', '')}"}
        if isinstance(block.get("title"), str):
            file["filename"] = block["title"]
        return {"type": "file", "file": file}
    if source.get("type") == "text" and isinstance(source.get("data"), str):
        return {"type": "text", "text": source["data"]}
    return None


def _user_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    # text-only content goes as a string: some OpenAI-compatible servers take no part lists
    if all(p["type"] == "text" for p in parts):
        return "\n\n".join(p["text"] for p in parts)
    return parts


def _tool_message(block: dict[str, Any], images: list[dict[str, Any]]) -> dict[str, Any]:
    """A tool_result block → a tool message; its images go to ``images`` (tool messages take text only)."""
    content = block.get("content")
    if isinstance(content, list):
        for item in content:
            if isinstance(item, dict) and item.get("type") == "image":
                part = _image_part(item)
                if part:
                    images.append(part)
    text = _joined_text(content)
    if block.get("is_error"):
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": str(block.get("tool_use_id") or ""), "content": text}


def _user_messages(content: Any) -> list[dict[str, Any]]:
    """One user turn → tool messages first (they must follow the assistant's calls), then the rest."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        part: dict[str, Any] | None = None
        if kind == "tool_result":
            tools.append(_tool_message(block, parts))
        elif kind == "text" and isinstance(block.get("text"), str) and block["text"]:
            part = {"type": "text", "text": block["text"]}
        elif kind == "image":
            part = _image_part(block)
        elif kind == "document":
            part = _document_part(block)
        if part:
            parts.append(part)
    return tools + ([{"role": "user", "content": _user_content(parts)}] if parts else [])


def _assistant_message(content: Any) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str) and block["text"]:
            texts.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str) and block["thinking"]:
            thoughts.append(block["thinking"])
        elif kind == "tool_use":
            calls.append(tool_call(block.get("id"), block.get("name"), arguments_json(block.get("input"))))
        # redacted_thinking and server tool blocks have no meaning to another provider
    return assistant_message("\n\n".join(texts), calls, thoughts)


def _tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for tool in tools if isinstance(tools, list) else ():
        if not isinstance(tool, dict) or tool.get("type") not in (None, "custom"):
            continue  # server tools (web_search_20250305, bash_20250124, …) run at Anthropic only
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or not tool.get("name"):
            continue
        fn: dict[str, Any] = {"name": tool["name"]}
        if isinstance(tool.get("description"), str):
            fn["description"] = tool["description"]
        fn["parameters"] = schema
        out.append({"type": "function", "function": fn})
    return out


def _apply_tool_choice(choice: Any, req: dict[str, Any]) -> None:
    """``tool_choice`` and ``disable_parallel_tool_use`` → ``tool_choice``/``parallel_tool_calls`` on ``req``."""
    if not isinstance(choice, dict):
        return
    kind = choice.get("type")
    if kind == "auto":
        req["tool_choice"] = "auto"
    elif kind == "any":
        req["tool_choice"] = "required"
    elif kind == "none":
        req["tool_choice"] = "none"
    elif kind == "tool" and choice.get("name"):
        req["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    if choice.get("disable_parallel_tool_use") and kind != "none":
        req["parallel_tool_calls"] = False


def _reasoning_effort(body: dict[str, Any]) -> str | None:
    thinking = as_object(body.get("thinking"))
    kind = thinking.get("type")
    if kind == "disabled":
        return None
    config = body.get("output_config")
    effort = config.get("effort") if isinstance(config, dict) else None
    if isinstance(effort, str) and effort in EFFORTS:
        return EFFORTS[effort]
    if kind == "enabled":
        return _effort_for_budget(thinking.get("budget_tokens"))
    if kind == "adaptive":
        return "high"  # Anthropic's documented default effort
    return None


def messages_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A Messages request → the canonical OpenAI chat request."""
    messages: list[dict[str, Any]] = []
    system = _joined_text(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for msg in body.get("messages") or ():
        if not isinstance(msg, dict):
            continue
        role = msg.get("role")
        if role == "system":  # Claude Code puts some system text inside `messages`
            text = _joined_text(msg.get("content"))
            if text:
                messages.append({"role": "system", "content": text})
        elif role == "assistant":
            messages.append(_assistant_message(msg.get("content")))
        else:
            messages.extend(_user_messages(msg.get("content")))
    req: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    tools = _tools(body.get("tools"))
    if tools:
        req["tools"] = tools
        _apply_tool_choice(body.get("tool_choice"), req)
    if isinstance(body.get("max_tokens"), int):
        req["max_tokens"] = body["max_tokens"]
    stops = [s for s in body.get("stop_sequences") or () if isinstance(s, str)]
    if stops:
        req["stop"] = stops[:OPENAI_MAX_STOPS]
    for key in ("temperature", "top_p"):
        if isinstance(body.get(key), (int, float)) and not isinstance(body[key], bool):
            req[key] = body[key]
    effort = _reasoning_effort(body)
    if effort:
        req["reasoning_effort"] = effort
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        req["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"]}}
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str) and metadata["user_id"]:
        req["user"] = metadata["user_id"]
    if body.get("stream"):
        req["stream"] = True
        # message_delta needs the token counts, so always ask for the usage chunk
        req["stream_options"] = {"include_usage": True}
    return req


# --- answers: chat.completion and chunks → Message and events ------------------------------


def stop_reason(finish: Any, has_tools: bool) -> str:
    reason = STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"
    return "tool_use" if has_tools and reason == "end_turn" else reason


def usage_to_anthropic(usage: Any) -> dict[str, int]:
    """OpenAI usage → Anthropic usage, where input_tokens excludes cache reads and writes."""
    u = usage if isinstance(usage, dict) else {}
    read, written = cache_reads(u), cache_writes(u)  # under any provider's names (DeepSeek, OpenRouter…)
    prompt = token_count(u.get("prompt_tokens"))
    return {
        "input_tokens": max(prompt - read - written, 0),
        "output_tokens": token_count(u.get("completion_tokens")),
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": written,
    }


def _message_id(chat_id: Any) -> str:
    base = str(chat_id).removeprefix("chatcmpl-") if chat_id else secrets.token_hex(12)
    return "msg_" + base


def chat_to_message(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """A ``chat.completion`` → a Messages response."""
    choices = resp.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = as_object(choice.get("message"))
    content: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.get("content")
    text = text if isinstance(text, str) else "".join(
        p.get("text", "") for p in text or () if isinstance(p, dict) and p.get("type") == "text")
    if text:
        content.append({"type": "text", "text": text})
    calls = [c for c in message.get("tool_calls") or () if isinstance(c, dict)]
    for call in calls:
        fn = as_object(call.get("function"))
        content.append({"type": "tool_use", "id": str(call.get("id") or "toolu_" + secrets.token_hex(12)),
                        "name": str(fn.get("name") or ""), "input": parse_arguments(fn.get("arguments"))})
    return {
        "id": _message_id(resp.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason"), bool(calls)),
        "stop_sequence": None,
        "usage": usage_to_anthropic(resp.get("usage")),
    }


class ChatToMessagesStream:
    """Canonical chunks in, Messages stream events out, in the order the streaming docs give.

    Blocks are sequential: a block closes when the kind changes or a new tool call starts. A
    fragment for a tool call whose block already closed cannot be sent any more and is dropped
    (OpenAI-style upstreams stream calls one after another, so this does not happen in practice).
    """

    __slots__ = ("model", "id", "_started", "_done", "_index", "_open", "_tools", "_finish", "_usage")

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = "msg_" + secrets.token_hex(12)
        self._started = False
        self._done = False
        self._index = -1  # index of the last block started
        self._open: tuple[str, Any] | None = None  # ("text" | "thinking" | "tool_use", tool key)
        self._tools: set[Any] = set()  # tool-call keys (upstream index) already given a block
        self._finish: Any = None
        self._usage: Any = None

    def _start(self) -> list[Event]:
        if self._started:
            return []
        self._started = True
        message: dict[str, Any] = {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _close(self) -> list[Event]:
        if self._open is None:
            return []
        self._open = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self._index})]

    def _begin(self, kind: str, block: dict[str, Any], key: Any = None) -> list[Event]:
        out = self._close()
        self._index += 1
        self._open = (kind, key)
        return out + [("content_block_start", {"type": "content_block_start", "index": self._index,
                                               "content_block": block})]

    def _delta(self, delta: dict[str, Any]) -> Event:
        return ("content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta})

    def _text(self, kind: str, text: str) -> list[Event]:
        out: list[Event] = []
        if self._open is None or self._open[0] != kind:
            block = {"type": "thinking", "thinking": "", "signature": ""} if kind == "thinking" else {
                "type": "text", "text": ""}
            out = self._begin(kind, block)
        delta = {"type": "thinking_delta", "thinking": text} if kind == "thinking" else {
            "type": "text_delta", "text": text}
        return out + [self._delta(delta)]

    def _tool_call(self, call: dict[str, Any], pos: int) -> list[Event]:
        key = call.get("index", pos)
        fn = as_object(call.get("function"))
        out: list[Event] = []
        if key not in self._tools:
            self._tools.add(key)
            block = {"type": "tool_use", "id": str(call.get("id") or "toolu_" + secrets.token_hex(12)),
                     "name": str(fn.get("name") or ""), "input": {}}
            out = self._begin("tool_use", block, key)
        elif self._open != ("tool_use", key):
            return []  # its block is closed (see the class docstring)
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            out.append(self._delta({"type": "input_json_delta", "partial_json": args}))
        return out

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        """One canonical chunk → the events it adds (message_start comes with the first)."""
        if self._done:
            return []
        out = self._start()
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        delta = as_object(choice.get("delta"))
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            out += self._text("thinking", reasoning)
        if isinstance(delta.get("content"), str) and delta["content"]:
            out += self._text("text", delta["content"])
        for pos, call in enumerate(delta.get("tool_calls") or ()):
            if isinstance(call, dict):
                out += self._tool_call(call, pos)
        if choice.get("finish_reason"):
            self._finish = choice["finish_reason"]
            out += self._close()
        return out

    def finish(self) -> list[Event]:
        """The closing events: the open block's stop, message_delta, message_stop (once)."""
        if self._done:
            return []
        self._done = True
        out = self._start() + self._close()
        usage = usage_to_anthropic(self._usage)
        delta = {"stop_reason": stop_reason(self._finish, bool(self._tools)), "stop_sequence": None}
        out.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        out.append(("message_stop", {"type": "message_stop"}))
        return out


def error_body(status: int, message: str) -> dict[str, Any]:
    """The Anthropic error shape, with the error type clients expect for ``status``."""
    etype = ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": etype, "message": message}}
