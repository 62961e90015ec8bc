"""Anthropic Messages API, request side: a canonical chat request → a ``/v1/messages`` body.

The references and the thinking rules are in ``finopsd.providers.anthropic``'s docstring; this
module holds the translation that makes the request (messages, tools, ``tool_choice``, stop
sequences, ``reasoning_effort`` → ``thinking``), the adapter the call and the answer.
"""

from __future__ import annotations

import re
from typing import Any, Final

from finopsd.providers.canonical import (
    as_object,
    data_url_parts,
    is_number,
    parse_arguments,
    requested_max_tokens,
    trim_prefill,
)

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
# claude-opus-4-6, claude-sonnet-4-6-v1, claude-opus-4-20250514 (minor absent: a date follows)
_VERSION: Final = re.compile(r"claude-([a-z]+)-(\d+)(?:-(\d{1,2}))?(?!\d)")


# --- messages: OpenAI chat messages → Anthropic system + messages ---------------------------


# tool_use ids must match ^[a-zA-Z0-9_-]+$; ids from other providers ("functions.read:0") do not
_BAD_ID_CHARS: Final = re.compile(r"[^a-zA-Z0-9_-]")


def _tool_id(value: Any) -> str:
    return _BAD_ID_CHARS.sub("_", str(value or "")) or "toolu_missing"


def _with_cache(block: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    if isinstance(source.get("cache_control"), dict):
        block["cache_control"] = source["cache_control"]
    return block


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


def _assistant_blocks(msg: dict[str, Any]) -> list[dict[str, Any]]:
    content = msg.get("content")
    # "" and null (Roo / Kilo tool turns) become no block: Anthropic rejects empty text blocks
    blocks = [b for b in _content_blocks(content) if b["type"] == "text"]
    for call in msg.get("tool_calls") or ():
        if not isinstance(call, dict):
            continue
        fn = as_object(call.get("function"))
        blocks.append({"type": "tool_use", "id": _tool_id(call.get("id")), "name": str(fn.get("name") or ""),
                       "input": parse_arguments(fn.get("arguments"))})
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
    trim_prefill(out)
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


# --- the whole body -------------------------------------------------------------------------


def default_max_tokens(model: str) -> int:
    """The ``max_tokens`` to send when the client gave none (Anthropic requires one)."""
    return 4096 if _CLAUDE_3.search(model) else DEFAULT_MAX_TOKENS


def messages_body(model: str, req: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    """The Messages body for a canonical chat request."""
    system, messages = messages_to_anthropic(req.get("messages"))
    limit = requested_max_tokens(req)
    max_given = limit is not None
    body: dict[str, Any] = {"model": model, "max_tokens": limit if limit is not None else default_max_tokens(model)}
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
        if is_number(value):
            body[key] = value
    user = req.get("user") or req.get("safety_identifier")
    if isinstance(user, str) and user:
        body["metadata"] = {"user_id": user}
    fmt = req.get("response_format")
    spec = fmt.get("json_schema") if isinstance(fmt, dict) and fmt.get("type") == "json_schema" else None
    if isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
        body["output_config"] = {"format": {"type": "json_schema", "schema": spec["schema"]}}
    _apply_thinking(body, model, req.get("reasoning_effort"), max_given)
    body["stream"] = stream
    return body
