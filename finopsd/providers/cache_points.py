"""Prompt-cache breakpoints for Claude, placed by the gateway when a request carries none.

Claude caches a prompt prefix only up to a marked block: ``cache_control`` on the Messages
API (Anthropic, Vertex) and a ``cachePoint`` block on Bedrock Converse. Agents that know a
model only as "OpenAI Compatible" (Roo Code, Kilo Code, Cline, Codex through a translation)
send no markers, so every turn pays full price for the same system prompt and history.

The rules these placements follow (https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching,
https://docs.aws.amazon.com/bedrock/latest/userguide/prompt-caching.html):
- The prefix is tools, then system, then messages; a marker caches everything up to and
  including its block. At most 4 markers a request.
- Markers go on tool definitions, system text blocks and message content blocks (text,
  image, document, tool_use, tool_result…), never on thinking blocks or empty text.
- A cache read happens where a marker (or a block up to 20 before it) ends a prefix that an
  earlier request wrote; a prefix shorter than the model's minimum is not cached at all.
- TTL ``5m`` (default) or ``1h``; on Bedrock ``1h`` only for Claude 4.5 and later.

Where the gateway puts them, when a request has none (at most 3): the end of the stable
prefix (the last system block, else the last tool), the end of the previous user turn
(what the previous request wrote at its last marker: an exact read, whatever the 20-block
lookback), and the end of the last message (written now, read by the next turn). A marker
whose prefix is under the model's minimum (estimated at 4 characters a token) is skipped.
Nothing else in the body changes, except that a string ``content`` or ``system`` becomes
the one text block that can carry the marker.
"""

from __future__ import annotations

import re
from typing import Any, Final

__all__ = ["converse_ttl", "messages_have_markers", "min_cacheable_tokens", "place_converse", "place_messages"]

CHARS_PER_TOKEN: Final = 4
MAX_DEPTH: Final = 64  # JSON nesting the size estimate follows
UNMARKABLE: Final = frozenset({"thinking", "redacted_thinking"})
# claude-sonnet-4-5…, claude-opus-4-20250514, claude-3-5-haiku…, claude-3-haiku…, us.anthropic.claude-…
_NEW: Final = re.compile(r"claude-(haiku|sonnet|opus|mythos|fable)-(\d+)(?:-(\d{1,2}))?(?!\d)")
_OLD: Final = re.compile(r"claude-(\d)-(?:(\d)-)?(haiku|sonnet|opus)")


def _version(model: str) -> tuple[str, int, int] | None:
    """(family, major, minor) of a Claude model id; None when the id does not say."""
    m = _NEW.search(model)
    if m:
        return m.group(1), int(m.group(2)), int(m.group(3) or 0)
    m = _OLD.search(model)
    if m:
        return m.group(3), int(m.group(1)), int(m.group(2) or 0)
    return None


def min_cacheable_tokens(model: str) -> int:
    """The shortest prefix the model caches (Anthropic's table; Bedrock's is the same)."""
    v = _version(model)
    if v is None:
        return 1024
    family, major, minor = v
    if family in ("mythos", "fable") or (family == "opus" and major >= 5):
        return 512
    if family == "haiku":
        return 2048 if major < 4 else 4096
    if family == "opus" and (major, minor) in ((4, 5), (4, 6), (4, 7)):
        return 4096
    return 1024


def _chars(value: Any, budget: int, depth: int = 0) -> int:
    """About the JSON length of ``value``, counted only until ``budget`` (a 30 MB body costs no more)."""
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return 6  # a number, true, null
    if depth > MAX_DEPTH:
        return budget  # a hostile nesting: big enough, and no deeper recursion
    total = 2
    for key, item in items:
        total += (len(key) + 4 if isinstance(key, str) else 1) + _chars(item, budget - total, depth + 1)
        if total >= budget:
            break
    return total


def _size(value: Any, minimum: int) -> int:
    """Tokens in ``value`` (4 characters a token), exact enough below ``minimum`` tokens."""
    return _chars(value, minimum * CHARS_PER_TOKEN) // CHARS_PER_TOKEN


# --- Messages API (Anthropic, Vertex) -------------------------------------------------------


def _has_cache_control(blocks: Any, nested: bool = False) -> bool:
    """A marker on a block, or on a block inside one (a tool_result's text and images)."""
    if not isinstance(blocks, list):
        return False
    for block in blocks:
        if isinstance(block, dict) and ("cache_control" in block
                                        or (not nested and _has_cache_control(block.get("content"), True))):
            return True
    return False


def messages_have_markers(body: dict[str, Any]) -> bool:
    """True when the client marked anything: top-level automatic caching, tools, system or messages."""
    if "cache_control" in body or _has_cache_control(body.get("tools")) or _has_cache_control(body.get("system")):
        return True
    return any(isinstance(m, dict) and _has_cache_control(m.get("content")) for m in body.get("messages") or ())


def _markable(block: Any) -> bool:
    if not isinstance(block, dict) or block.get("type") in UNMARKABLE:
        return False
    return block.get("type") != "text" or bool(block.get("text"))


def _last_markable(blocks: list[Any]) -> dict[str, Any] | None:
    return next((b for b in reversed(blocks) if _markable(b)), None)


def _message_block(msg: dict[str, Any]) -> dict[str, Any] | None:
    """The block of a message that would carry its marker (a string content becomes a block)."""
    content = msg.get("content")
    if isinstance(content, str):
        if not content:
            return None
        msg["content"] = content = [{"type": "text", "text": content}]
    return _last_markable(content) if isinstance(content, list) else None


def _previous_user_turn(messages: list[Any]) -> int | None:
    """The index of the latest user message that an assistant message follows."""
    seen_assistant = False
    for i in range(len(messages) - 1, -1, -1):
        role = messages[i].get("role") if isinstance(messages[i], dict) else None
        if role == "assistant":
            seen_assistant = True
        elif role == "user" and seen_assistant:
            return i
    return None


def _turns_to_mark(messages: list[Any], prefix: int, minimum: int) -> list[dict[str, Any]]:
    """The previous user turn and the last message, each when its prefix reaches ``minimum`` tokens."""
    targets = {i for i in (_previous_user_turn(messages), len(messages) - 1) if i is not None and i >= 0}
    out = []
    for i, msg in enumerate(messages):
        if prefix < minimum:  # sizes only matter until the minimum is reached
            prefix += _size(msg, minimum - prefix)
        if i in targets and prefix >= minimum and isinstance(msg, dict):
            out.append(msg)
    return out


def place_messages(body: dict[str, Any], model: str, ttl: str | None) -> int:
    """Mark a Messages body's stable prefix and latest turns, unless the client marked any; the count placed."""
    if ttl is None or messages_have_markers(body):
        return 0
    marker: dict[str, Any] = {"type": "ephemeral"} if ttl == "5m" else {"type": "ephemeral", "ttl": ttl}
    minimum = min_cacheable_tokens(model)
    tools = body.get("tools") if isinstance(body.get("tools"), list) else []
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    prefix = _size(tools, minimum)
    prefix += _size(body.get("system") or [], minimum - prefix)
    placed = 0
    if prefix >= minimum:
        if isinstance(body.get("system"), str) and body["system"]:
            body["system"] = [{"type": "text", "text": body["system"]}]
        system = body.get("system") if isinstance(body.get("system"), list) else []
        stable = _last_markable(system) or _last_markable(tools)
        if stable is not None:
            stable["cache_control"] = dict(marker)
            placed += 1
    for msg in _turns_to_mark(messages, prefix, minimum):
        block = _message_block(msg)
        if block is not None:
            block["cache_control"] = dict(marker)
            placed += 1
    return placed


# --- Bedrock Converse -------------------------------------------------------------------------


def _has_cache_point(blocks: Any) -> bool:
    return isinstance(blocks, list) and any(isinstance(b, dict) and "cachePoint" in b for b in blocks)


def converse_ttl(model: str, ttl: str) -> str | None:
    """The ``ttl`` a Bedrock cachePoint may carry: 1h only on Claude 4.5 and later; None: the default 5m."""
    v = _version(model)
    return "1h" if ttl == "1h" and v is not None and (v[1], v[2]) >= (4, 5) else None


def place_converse(body: dict[str, Any], model: str, ttl: str | None) -> int:
    """cachePoint blocks after a Converse body's stable prefix and latest turns (Claude models only)."""
    if ttl is None or "claude" not in model:
        return 0
    tools = body.get("toolConfig", {}).get("tools") if isinstance(body.get("toolConfig"), dict) else None
    tools = tools if isinstance(tools, list) else []
    system = body.get("system") if isinstance(body.get("system"), list) else []
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    if (_has_cache_point(tools) or _has_cache_point(system)
            or any(_has_cache_point(m.get("content")) for m in messages if isinstance(m, dict))):
        return 0
    point: dict[str, Any] = {"type": "default"}
    if converse_ttl(model, ttl):
        point["ttl"] = "1h"
    minimum = min_cacheable_tokens(model)
    prefix = _size(tools, minimum)
    prefix += _size(system, minimum - prefix)
    placed = 0
    stable = system or tools
    if stable and prefix >= minimum:
        stable.append({"cachePoint": dict(point)})
        placed += 1
    for msg in _turns_to_mark(messages, prefix, minimum):
        content = msg.get("content")
        if isinstance(content, list) and content:
            content.append({"cachePoint": dict(point)})
            placed += 1
    return placed
