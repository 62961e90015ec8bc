"""How a log row and a session read: as API items, as a conversation, as table cells and terminal lines.

The store's rows keep column names (``key_name``, ``prompt_tokens``…); the API
answers in the issue's shape (``key``, ``time``, ``usage``, ``error``) so that
clients never depend on the schema. The page, the API and the CLI all shape rows
here, so the three cannot drift apart.

Nothing here reads keys: rows hold a virtual key's *name* and an upstream key's
*name*, never a value (the recorder never had one to give).
"""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime
from typing import Any, Final

from finopsd.jsonwire import loads
from finopsd.log.text import WHITESPACE, as_messages

__all__ = [
    "conversation_of", "detail_item", "fmt_cost", "fmt_duration", "fmt_ms", "fmt_tokens", "iso_time",
    "reply_message", "safe_snippet", "session_detail", "session_item", "session_line", "summary_item",
    "terminal_line",
]  # fmt: skip

# The store escapes the snippet's text and adds only <mark>…</mark>; anything else that
# looks like a tag is escaped again, so a store bug can never become markup on the page.
_NOT_MARK: Final = re.compile(r"<(?!/?mark>)")


def iso_time(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with milliseconds (``2026-01-31T12:00:00.123Z``)."""
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):  # a time an odd stored value put past year 9999
        return None


def safe_snippet(snippet: str | None) -> str | None:
    return None if snippet is None else _NOT_MARK.sub("&lt;", snippet)


def _usage(row: dict[str, Any]) -> dict[str, int | None]:
    prompt, completion = row.get("prompt_tokens"), row.get("completion_tokens")
    total = prompt + completion if isinstance(prompt, int) and isinstance(completion, int) else None
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
        "cached_tokens": row.get("cached_tokens"),
        "reasoning_tokens": row.get("reasoning_tokens"),
    }


def summary_item(row: dict[str, Any]) -> dict[str, Any]:
    """A ``LogStore.search`` summary as an ``/api/logs`` item."""
    error = None
    if row.get("error_type") or row.get("error_message"):
        error = {"type": row.get("error_type"), "message": row.get("error_message")}
    item = {
        "id": row["id"],
        "time": iso_time(row.get("ts")),
        "ts": row.get("ts"),
        "route": row.get("route"),
        "provider": row.get("provider"),
        "model": row.get("model"),
        "upstream_model": row.get("upstream_model"),
        "key": row.get("key_name"),
        "team": row.get("team"),
        "user": row.get("user"),
        "project": row.get("project"),
        "tags": row.get("tags") or [],
        "status": row.get("status"),
        "status_code": row.get("status_code"),
        "stream": row.get("stream"),
        "finish_reason": row.get("finish_reason"),
        "duration_ms": row.get("duration_ms"),
        "ttft_ms": row.get("ttft_ms"),
        "usage": _usage(row),
        "cost_usd": row.get("cost_usd"),
        "cost_without_cache_usd": row.get("cost_without_cache_usd"),
        "cache_savings_usd": savings_of(row),
        "cost_flags": row.get("cost_flags"),
        "error": error,
        "upstream_key": row.get("upstream_key_name"),
        "client_ip": row.get("client_ip"),
        "user_agent": row.get("user_agent"),
        "session_id": row.get("session_id"),
        "turn": row.get("turn"),
    }
    if "snippet" in row:
        item["snippet"] = safe_snippet(row["snippet"])
    if "preview" in row:
        item["preview"] = row["preview"]
    return item


def savings_of(row: dict[str, Any]) -> float | None:
    """What prompt caching saved on a row (negative when a cache write cost more than it saved yet)."""
    cost, uncached = row.get("cost_usd"), row.get("cost_without_cache_usd")
    return None if cost is None or uncached is None else uncached - cost


def detail_item(row: dict[str, Any]) -> dict[str, Any]:
    """A ``LogStore.get`` row as ``/api/logs/{id}``: the summary plus the whole exchange."""
    item = summary_item(row)
    request, response = row.get("request"), row.get("response")
    item["attempts"] = row.get("attempts") or []
    item["request"] = request
    item["response"] = response
    item["conversation"] = conversation_of(request, response)
    return item


def session_item(summary: dict[str, Any]) -> dict[str, Any]:
    """A ``LogStore.sessions`` summary as an ``/api/sessions`` item: the store's fields plus ISO times."""
    item = {"id": summary["id"], "time": iso_time(summary.get("ts")), "last_time": iso_time(summary.get("last_ts")),
            **{k: v for k, v in summary.items() if k != "id"}}  # fmt: skip
    match = summary.get("match")
    if isinstance(match, dict):
        item["match"] = {**match, "snippet": safe_snippet(match.get("snippet"))}
    return item


def session_detail(body: dict[str, Any]) -> dict[str, Any]:
    """``LogStore.session`` as ``/api/sessions/{id}``: the summary, then each turn with its ISO time."""
    turns = [{"time": iso_time(t.get("ts")), **t} for t in body["turns"]]
    return {"session": session_item(body["session"]), "turns": turns}


# ---------------------------------------------------------------- the conversation


def reply_message(response: dict[str, Any]) -> dict[str, Any] | None:
    """The transcript as an OpenAI assistant message; None when the upstream said nothing."""
    calls = [c for c in response.get("tool_calls") or () if isinstance(c, dict)]
    content, reasoning = response.get("content") or "", response.get("reasoning") or ""
    if not (content or reasoning or calls):
        return None
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = [
            {"id": c.get("id"), "type": "function",
             "function": {"name": c.get("name"), "arguments": c.get("arguments", "")}}
            for c in calls
        ]  # fmt: skip
    return message


def conversation_of(request: Any, response: Any) -> list[dict[str, Any]] | None:
    """Every turn as OpenAI messages, the gateway's answer last (marked ``"final": true``).

    None when the row keeps no content (``logs.content: false``).
    """
    if not isinstance(request, dict) and not isinstance(response, dict):
        return None
    turns = as_messages(request) if isinstance(request, dict) else []
    reply = reply_message(response) if isinstance(response, dict) else None
    if reply is not None:
        turns.append({**reply, "final": True})
    return turns


def pretty_json(arguments: Any) -> str:
    """Tool arguments indented when they are JSON; as sent when not (a model's broken JSON stays visible)."""
    value = arguments
    if isinstance(arguments, str):
        try:
            value = loads(arguments)
        except ValueError:
            return arguments
    return json.dumps(value, indent=2, ensure_ascii=False)


# ---------------------------------------------------------------- numbers as people read them


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "—"
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def fmt_duration(ms: float | None) -> str:
    """A task's length: ms and s as ``fmt_ms``, then minutes, then hours."""
    if ms is None or ms < 60_000:
        return fmt_ms(ms)
    seconds = round(ms / 1000)
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def fmt_cost(usd: float | None) -> str:
    if usd is None:
        return "—"
    return f"${usd:.2f}" if usd >= 1 else f"${usd:.4f}" if usd >= 0.0001 or usd == 0 else f"${usd:.6f}"


def fmt_tokens(usage: dict[str, Any]) -> str:
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if prompt is None and completion is None:
        return "—"
    return f"{prompt if prompt is not None else '?'} → {completion if completion is not None else '?'}"


def _unmark(snippet: str, bold: bool) -> str:
    if bold:
        snippet = snippet.replace("<mark>", "\x1b[1m").replace("</mark>", "\x1b[22m")
    else:
        snippet = snippet.replace("<mark>", "[").replace("</mark>", "]")
    return html.unescape(snippet)


def terminal_line(item: dict[str, Any], *, bold: bool = False) -> str:
    """One row for ``finopsd logs``: time, status, model, latency, tokens, cost, id, then the text."""
    time_text = (item.get("time") or "")[:19].replace("T", " ")
    status = item.get("status") or "?"
    if item.get("status_code") and status != "ok":
        status = f"{status} {item['status_code']}"
    text = _unmark(item["snippet"], bold) if item.get("snippet") else item.get("preview") or ""
    who = "/".join(str(x) for x in (item.get("key"), item.get("team")) if x)
    cells = [time_text, f"{status:<9}", f"{item.get('model') or '?'}", fmt_ms(item.get("duration_ms")),
             fmt_tokens(item.get("usage") or {}), fmt_cost(item.get("cost_usd")), item["id"]]  # fmt: skip
    if who:
        cells.insert(2, who)
    line = "  ".join(cells)
    return f"{line}  {WHITESPACE.sub(' ', text).strip()}" if text else line


def session_line(item: dict[str, Any], *, bold: bool = False) -> str:
    """One session for ``finopsd logs sessions``: start, status, who, models, turns, tokens, cost,
    length, id, then the first words (or, for a search, the turn and snippet that matched)."""
    status = item.get("status") or "?"
    if item.get("errors"):
        status = f"{status} ({item['errors']})"  # how many of its requests failed
    who = "/".join(str(x) for x in (item.get("key"), item.get("team")) if x) or "-"
    turns = item.get("turns") or 0
    cells = [(item.get("time") or "")[:19].replace("T", " "), f"{status:<9}", who,
             ",".join(item.get("models") or ()) or "?", f"{turns} turn{'' if turns == 1 else 's'}",
             fmt_tokens(item.get("usage") or {}), fmt_cost(item.get("cost_usd")),
             fmt_duration(item.get("duration_ms")), item["id"]]  # fmt: skip
    match = item.get("match")
    if isinstance(match, dict) and match.get("snippet"):
        text = f"turn {match.get('turn')}: {_unmark(match['snippet'], bold)}"
    else:
        text = item.get("first_words") or ""
    line = "  ".join(cells)
    return f"{line}  {WHITESPACE.sub(' ', text).strip()}" if text else line
