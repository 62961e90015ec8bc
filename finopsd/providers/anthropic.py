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

import base64
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote_to_bytes

from finopsd.errors import GatewayError, UpstreamError
from finopsd.providers.base import BaseAdapter, Target, UpstreamRequest, upstream_error

ANTHROPIC_VERSION: Final = "2023-06-01"
# max_tokens is required by Anthropic and optional in OpenAI chat. 8192 is the output cap of the
# Claude 3.5 models and below every later model's, and ample for one agent step; the Claude 3
# models (claude-3-haiku-…) cap output at 4096.
DEFAULT_MAX_TOKENS: Final = 8192
_CLAUDE_3: Final = re.compile(r"claude-3-(?:haiku|sonnet|opus)")
# reasoning_effort → budget_tokens for models that take a fixed budget (the API minimum is 1024).
# With the default answer room added (see _apply_thinking) the largest stays under 32000, the
# output cap of Opus 4 and 4.1.
THINKING_BUDGETS: Final = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 20480}
# reasoning_effort → output_config.effort for adaptive-thinking models
_EFFORTS: Final = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh"}
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
# claude-opus-4-6, claude-sonnet-4-6-v1, claude-opus-4-20250514 (minor absent: a date follows)
_VERSION: Final = re.compile(r"claude-([a-z]+)-(\d+)(?:-(\d{1,2}))?(?!\d)")


def _obj(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (wire data is checked, not trusted)."""
    return value if isinstance(value, dict) else {}


# --- request: OpenAI chat messages → Anthropic system + messages ----------------------------


# tool_use ids must match ^[a-zA-Z0-9_-]+$; ids from other providers ("functions.read:0") do not
_BAD_ID_CHARS: Final = re.compile(r"[^a-zA-Z0-9_-]")


def _tool_id(value: Any) -> str:
    return _BAD_ID_CHARS.sub("_", str(value or "")) or "toolu_missing"


def _with_cache(block: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    if isinstance(source.get("cache_control"), dict):
        block["cache_control"] = source["cache_control"]
    return block


def data_url_parts(url: str) -> tuple[str, str]:
    """``data:image/png;base64,xxx`` → (media type, base64 data); percent-encoded data is re-encoded."""
    head, _, data = url[5:].partition(",")
    media, _, encoding = head.partition(";")
    if encoding != "base64":
        data = base64.b64encode(unquote_to_bytes(data)).decode()
    return media, data


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    """A user/tool/system content (string or parts) → text, image and document blocks (empty text dropped)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str) and part["text"]:
            blocks.append(_with_cache({"type": "text", "text": part["text"]}, part))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url:
                continue
            if url.startswith("data:"):
                media, data = data_url_parts(url)
                source = {"type": "base64", "media_type": media or "image/png", "data": data}
            else:
                source = {"type": "url", "url": url}
            blocks.append(_with_cache({"type": "image", "source": source}, part))
        elif kind == "file" and isinstance(part.get("file"), dict):
            data_url = part["file"].get("file_data")
            if isinstance(data_url, str) and data_url.startswith("data:application/pdf"):
                _, data = data_url_parts(data_url)
                source = {"type": "base64", "media_type": "application/pdf", "data": data}
                blocks.append(_with_cache({"type": "document", "source": source}, part))
    return blocks


def tool_input(arguments: Any) -> dict[str, Any]:
    """Tool-call arguments (a JSON string) → the ``input`` object; bad JSON is kept for the model to see."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return {"arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def _assistant_blocks(msg: dict[str, Any]) -> list[dict[str, Any]]:
    content = msg.get("content")
    # "" and null (Roo / Kilo tool turns) become no block: Anthropic rejects empty text blocks
    blocks = [b for b in _content_blocks(content) if b["type"] == "text"]
    for call in msg.get("tool_calls") or ():
        if not isinstance(call, dict):
            continue
        fn = _obj(call.get("function"))
        blocks.append({"type": "tool_use", "id": _tool_id(call.get("id")), "name": str(fn.get("name") or ""),
                       "input": tool_input(fn.get("arguments"))})
    return blocks


def _tool_result(msg: dict[str, Any]) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": _tool_id(msg.get("tool_call_id"))}
    content = msg.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    else:
        parts = [b for b in _content_blocks(content) if b["type"] in ("text", "image")]
        if parts:
            block["content"] = parts
    return block


def _push(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Append a turn, merging into the previous one of the same role (Anthropic wants alternation)."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def _orphan_result(block: dict[str, Any]) -> list[dict[str, Any]]:
    """A tool_result whose call is gone, as plain content the model can still read."""
    head = f"[result of tool call {block['tool_use_id']}]"
    content = block.get("content", "")
    if isinstance(content, str):
        return [{"type": "text", "text": f"{head}\n{content}"}]
    return [{"type": "text", "text": head}, *content]  # text and image blocks, kept as they are


def _pair_tool_results(messages: list[dict[str, Any]]) -> None:
    """Make every tool_use answered in the next turn and every tool_result answer one.

    Anthropic answers 400 for a tool_use without a tool_result right after it ("tool_use ids were
    found without tool_result blocks immediately after") and for a tool_result whose call is not
    in the previous turn (left by a client's context condensing). The first gets an error result,
    the second becomes text; tool results go first in their turn, as the API requires.
    """
    for i, msg in enumerate(messages):
        if msg["role"] != "user":
            continue
        prev = messages[i - 1] if i and messages[i - 1]["role"] == "assistant" else None
        asked = [b["id"] for b in prev["content"] if b.get("type") == "tool_use"] if prev else []
        results, rest = [], []
        for block in msg["content"]:
            if block.get("type") != "tool_result":
                rest.append(block)
            elif block["tool_use_id"] in asked:
                results.append(block)
            else:
                rest.extend(_orphan_result(block))
        answered = {b["tool_use_id"] for b in results}
        missing = [{"type": "tool_result", "tool_use_id": cid, "is_error": True,
                    "content": "no result was recorded for this tool call"} for cid in asked if cid not in answered]
        msg["content"] = results + missing + rest


def _trim_prefill(messages: list[dict[str, Any]]) -> None:
    """A final assistant turn (a prefill) may not end in whitespace: Anthropic answers 400."""
    last = messages[-1] if messages else None
    if last is None or last["role"] != "assistant" or last["content"][-1]["type"] != "text":
        return
    text = last["content"][-1]["text"].rstrip()
    if text:
        last["content"][-1]["text"] = text
    else:
        del last["content"][-1]
        if not last["content"]:
            messages.pop()


def messages_to_anthropic(messages: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """OpenAI messages → (system blocks, Anthropic messages)."""
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for msg in messages if isinstance(messages, list) else ():
        if not isinstance(msg, dict):
            continue
        role = msg.get("role")
        turn: str | None = "user"  # None: the system prompt
        if role in ("system", "developer"):
            blocks, turn = [b for b in _content_blocks(msg.get("content")) if b["type"] == "text"], None
        elif role == "assistant":
            blocks, turn = _assistant_blocks(msg), "assistant"
        elif role == "tool":
            blocks = [_tool_result(msg)]
        else:
            blocks = _content_blocks(msg.get("content"))
        if blocks and isinstance(msg.get("cache_control"), dict):
            blocks[-1]["cache_control"] = msg["cache_control"]  # message-level marker: its last block
        if turn is None:
            system.extend(blocks)
        else:
            _push(out, turn, blocks)
    _pair_tool_results(out)
    _trim_prefill(out)
    return system, out


def tools_to_anthropic(tools: Any) -> list[dict[str, Any]]:
    out = []
    for tool in tools if isinstance(tools, list) else ():
        fn = tool.get("function") if isinstance(tool, dict) and tool.get("type", "function") == "function" else None
        if not isinstance(fn, dict) or not fn.get("name"):
            continue
        params = fn.get("parameters")
        schema = params if isinstance(params, dict) and params else {"type": "object", "properties": {}}
        entry: dict[str, Any] = {"name": fn["name"]}
        if fn.get("description"):
            entry["description"] = fn["description"]
        # OpenAI's `strict` is dropped: Anthropic's strict mode is model-dependent and rejects
        # schemas OpenAI accepts, and agents (Roo) set it on every tool
        entry["input_schema"] = {k: v for k, v in schema.items() if k != "$schema"}
        out.append(_with_cache(entry, tool))
    return out


def tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice == "none":
        return {"type": "none"}  # disable_parallel_tool_use does not apply to "none"
    if choice == "required":
        out: dict[str, Any] = {"type": "any"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict) and choice["function"].get("name"):
        out = {"type": "tool", "name": choice["function"]["name"]}
    elif choice == "auto" or parallel is False:
        out = {"type": "auto"}
    else:
        return None
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out

def _stop_sequences(stop: Any) -> list[str]:
    items = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    # Anthropic answers 400 "each stop sequence must contain non-whitespace" (OpenAI allows "\n")
    return [s for s in items if isinstance(s, str) and s.strip()]


# --- thinking: reasoning_effort → thinking, within the API's rules -------------------------


def _adaptive_thinking(model: str) -> bool:
    """True for models that take ``thinking: {type: adaptive}`` (4.6 and later, Mythos/Fable)."""
    m = _VERSION.search(model)
    if m is None:
        return "mythos" in model or "fable" in model
    if m.group(1) in ("mythos", "fable"):
        return True
    return (int(m.group(2)), int(m.group(3) or 0)) >= (4, 6)


def _forces_tool(choice: dict[str, Any] | None) -> bool:
    return choice is not None and choice.get("type") in ("any", "tool")


def _tool_loop_without_thinking(messages: list[dict[str, Any]]) -> bool:
    """True when the last assistant turn has tool_use but no thinking block to start it."""
    for msg in reversed(messages):
        if msg["role"] == "assistant":
            blocks = msg["content"]
            has_tool = any(b.get("type") == "tool_use" for b in blocks)
            return has_tool and blocks[0].get("type") not in ("thinking", "redacted_thinking")
    return False


def _apply_thinking(body: dict[str, Any], model: str, effort: Any, max_given: bool) -> None:
    """reasoning_effort → ``thinking`` (and sampling limits), when the request allows it."""
    if not isinstance(effort, str) or effort == "none" or effort not in THINKING_BUDGETS:
        return
    if _forces_tool(body.get("tool_choice")) or _tool_loop_without_thinking(body["messages"]):
        return
    if _adaptive_thinking(model):
        body["thinking"] = {"type": "adaptive"}
        body.setdefault("output_config", {})["effort"] = _EFFORTS[effort]
    else:
        budget = THINKING_BUDGETS[effort]
        if budget >= body["max_tokens"]:
            # thinking counts toward max_tokens: keep the answer's room on top of the budget
            room = min(body["max_tokens"], DEFAULT_MAX_TOKENS) if max_given else DEFAULT_MAX_TOKENS
            body["max_tokens"] = budget + room
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    body.pop("temperature", None)
    body.pop("top_k", None)
    if isinstance(body.get("top_p"), (int, float)) and body["top_p"] < 0.95:
        del body["top_p"]



# --- response: Anthropic Message / events → chat completion and chunks -------------------


def usage_to_openai(u: dict[str, Any]) -> dict[str, Any]:
    """Anthropic usage → OpenAI usage; input_tokens excludes cache reads and writes, so add them."""
    fresh = int(u.get("input_tokens") or 0)
    read = int(u.get("cache_read_input_tokens") or 0)
    written = int(u.get("cache_creation_input_tokens") or 0)
    output = int(u.get("output_tokens") or 0)
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
        "completion_tokens_details": {"reasoning_tokens": int(thinking or 0)},
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
    try:
        parsed = json.loads(data)
    except ValueError:
        raise UpstreamError(f"{provider}: upstream sent invalid JSON") from None
    if not isinstance(parsed, dict):
        raise UpstreamError(f"{provider}: upstream sent an unexpected body")
    if parsed.get("type") == "error":
        raise error_from_event(parsed.get("error"), provider)
    return parsed


def _tool_call(block: dict[str, Any]) -> dict[str, Any]:
    args = block.get("input")
    return {
        "id": str(block.get("id") or ""),
        "type": "function",
        "function": {"name": str(block.get("name") or ""), "arguments": json.dumps(args if args is not None else {})},
    }


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
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    completion: dict[str, Any] = {
        "id": "chatcmpl-" + str(msg.get("id") or secrets.token_hex(12)),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": msg.get("model") or model,
        "choices": [{"index": 0, "message": message,
                     "finish_reason": finish_reason(msg.get("stop_reason"), bool(calls))}],
    }
    if isinstance(msg.get("usage"), dict):
        completion["usage"] = usage_to_openai(msg["usage"])
    return completion


@dataclass(slots=True)
class AnthropicStream:
    """Per-request stream state: our tool-call counter, open tool blocks, usage so far."""

    provider: str
    model: str
    id: str
    created: int
    calls: int = 0
    tools: dict[int, int] = field(default_factory=dict)  # Anthropic block index → our call index
    args_seen: set[int] = field(default_factory=set)  # block indexes that got input fragments
    usage: dict[str, Any] = field(default_factory=dict)  # message_start usage, updated by message_delta
    started: bool = False
    finished: bool = False
    usage_sent: bool = False

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        if not self.started:
            self.started = True
            delta = {"role": "assistant", **delta}
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def usage_chunk(self) -> list[dict[str, Any]]:
        if self.usage_sent or not self.usage:
            return []
        self.usage_sent = True
        return [{"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                 "choices": [], "usage": usage_to_openai(self.usage)}]


def _block_start(s: AnthropicStream, ev: dict[str, Any]) -> list[dict[str, Any]]:
    block = ev.get("content_block")
    if not isinstance(block, dict):
        return []
    kind = block.get("type")
    if kind == "tool_use":
        index = s.calls
        s.calls += 1
        s.tools[int(ev.get("index", -1))] = index
        call = {"index": index, **_tool_call(block)}
        call["function"]["arguments"] = ""  # the input arrives as input_json_delta fragments
        return [s.chunk({"tool_calls": [call]})]
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
        block = int(ev.get("index", -1))
        if block not in s.tools:
            return []  # input of a server tool (web search): not ours to report
        s.args_seen.add(block)
        call = {"index": s.tools[block], "function": {"arguments": delta["partial_json"]}}
        return [s.chunk({"tool_calls": [call]})]
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
        block = int(ev.get("index", -1))
        if block in s.tools and block not in s.args_seen:
            # a tool without parameters streams no input: give clients parseable arguments
            s.args_seen.add(block)
            return [s.chunk({"tool_calls": [{"index": s.tools[block], "function": {"arguments": "{}"}}]})]
        return []
    if kind == "message_start":
        msg = _obj(ev.get("message"))
        if msg.get("id"):
            s.id = "chatcmpl-" + str(msg["id"])
        if msg.get("model"):
            s.model = str(msg["model"])
        if isinstance(msg.get("usage"), dict):
            s.usage.update(msg["usage"])
        return [s.chunk({"content": ""})]
    if kind == "message_delta":
        if isinstance(ev.get("usage"), dict):  # cumulative: later values replace earlier ones
            s.usage.update({k: v for k, v in ev["usage"].items() if v is not None})
        delta = _obj(ev.get("delta"))
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
        system, messages = messages_to_anthropic(req.get("messages"))
        limit = req.get("max_completion_tokens") or req.get("max_tokens")
        max_given = isinstance(limit, int) and not isinstance(limit, bool) and limit > 0
        default = 4096 if _CLAUDE_3.search(target.model) else DEFAULT_MAX_TOKENS
        body: dict[str, Any] = {"model": target.model, "max_tokens": limit if max_given else default}
        if system:
            body["system"] = system
        body["messages"] = messages
        tools = tools_to_anthropic(req.get("tools"))
        if tools:
            body["tools"] = tools
            choice = tool_choice(req.get("tool_choice"), req.get("parallel_tool_calls"))
            if choice:
                body["tool_choice"] = choice
        stops = _stop_sequences(req.get("stop"))
        if stops:
            body["stop_sequences"] = stops
        for key in ("temperature", "top_p", "top_k"):
            value = req.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                body[key] = value
        user = req.get("user") or req.get("safety_identifier")
        if isinstance(user, str) and user:
            body["metadata"] = {"user_id": user}
        fmt = req.get("response_format")
        spec = fmt.get("json_schema") if isinstance(fmt, dict) and fmt.get("type") == "json_schema" else None
        if isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
            body["output_config"] = {"format": {"type": "json_schema", "schema": spec["schema"]}}
        _apply_thinking(body, target.model, req.get("reasoning_effort"), max_given)
        body["stream"] = stream
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
        stream_id = "chatcmpl-" + secrets.token_hex(12)  # replaced by the message id at message_start
        return AnthropicStream(target.provider.name, target.model, stream_id, int(time.time()))

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

