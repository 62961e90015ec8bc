"""Plain text of requests and answers, for the full-text index."""

from __future__ import annotations

import functools
import html
import json
import re
import unicodedata
from typing import Any, Final

# snippet() brackets hits with these; flattened text never contains them, so after
# HTML-escaping they can only be our own marks.
_MARK_OPEN: Final = "\x02"
_MARK_CLOSE: Final = "\x03"
_NO_MARKS: Final = str.maketrans("", "", _MARK_OPEN + _MARK_CLOSE)


def _dumps(value: Any) -> str:
    # default=str: a stray non-JSON value must not cost the whole row.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _collect(content: Any, out: list[str]) -> None:
    """Searchable strings of a message content: a string, or parts in any dialect we accept."""
    if isinstance(content, str):
        out.append(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict):
                # text / refusal (OpenAI), thinking and tool_use name (Anthropic),
                # function_call arguments and outputs (Responses items).
                for key in ("text", "refusal", "thinking", "name", "arguments", "output"):
                    if isinstance(part.get(key), str):
                        out.append(part[key])
                if isinstance(part.get("input"), dict):
                    out.append(_dumps(part["input"]))
                _collect(part.get("content"), out)  # tool_result blocks, Responses messages


def _items(value: Any) -> list[Any]:
    """A list field as sent; anything else (a client's malformed body is logged too) as empty."""
    return value if isinstance(value, list) else []


def prompt_text(request: dict[str, Any] | None) -> str | None:
    """Plain text of a request for the index: messages, tool calls, and tool names."""
    if not isinstance(request, dict):
        return None
    out: list[str] = []
    _collect(request.get("system"), out)
    for message in _items(request.get("messages")):
        if not isinstance(message, dict):
            continue
        _collect(message.get("content"), out)
        for call in _items(message.get("tool_calls")):
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                _collect([fn], out)
    _collect(request.get("prompt"), out)  # legacy completions
    _collect(request.get("input"), out)  # embeddings, Responses
    if isinstance(request.get("tool"), str):  # an MCP tools/call row
        out += [request["tool"], _dumps(request.get("arguments"))]
    # Tool names only: the descriptions are the same long boilerplate in every request.
    for tool in _items(request.get("tools")):
        if isinstance(tool, dict):
            spec = tool.get("function") if isinstance(tool.get("function"), dict) else tool
            if isinstance(spec.get("name"), str):
                out.append(spec["name"])
    return "\n".join(out).translate(_NO_MARKS) or None


def response_text(response: dict[str, Any] | None) -> str | None:
    """Plain text of a transcript: content, reasoning, tool call names and arguments."""
    if not isinstance(response, dict):
        return None
    out: list[str] = []
    for key in ("content", "reasoning"):
        if isinstance(response.get(key), str):
            out.append(response[key])
    _collect([c for c in response.get("tool_calls") or () if isinstance(c, dict)], out)
    return "\n".join(s for s in out if s).translate(_NO_MARKS) or None


PREVIEW_CHARS: Final = 140
WHITESPACE: Final = re.compile(r"\s+")


def as_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's turns; embeddings and legacy completions become one user turn."""
    raw = request.get("messages")
    messages = [m for m in raw if isinstance(m, dict)] if isinstance(raw, list) else []
    system = request.get("system")  # a non-canonical body that kept Anthropic's top-level system
    if system and not any(m.get("role") in ("system", "developer") for m in messages):
        messages.insert(0, {"role": "system", "content": system})
    if not messages:
        for field in ("prompt", "input"):
            value = request.get(field)
            if isinstance(value, str | list) and value:
                messages.append({"role": "user", "content": value})
                break
    return messages


def text_of(content: Any) -> str:
    """The readable text of a message content: a string, or its text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p if isinstance(p, str) else p.get("text") for p in content if isinstance(p, str | dict)]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def preview_of(request: Any) -> str | None:
    """The first words of the newest user turn.

    Not the first words of the prompt text: for a coding agent that is the same system
    prompt in every row. The newest user turn is what the person (or the agent loop)
    just asked, which is what tells one row from the next.
    """
    if not isinstance(request, dict):
        return None
    for message in reversed(as_messages(request)):
        if message.get("role") == "user":
            # a bounded slice first: a user turn can be a 100 kB paste
            text = WHITESPACE.sub(" ", text_of(message.get("content"))[: PREVIEW_CHARS * 8]).strip()
            if text:
                return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1].rstrip() + "…"
    return None


# ---------------------------------------------------------------------------- snippets
# The index is contentless (the text is stored compressed, once), so FTS5's snippet()
# has nothing to read: the matched piece is decoded and its hits found here, folded the
# way the index's tokenizer folds them (case, diacritics).

_TOKEN: Final = re.compile(r"[^\W_]+(\*?)")
_WORD: Final = re.compile(r"[^\W_]+")
_OPERATORS: Final = frozenset({"AND", "OR", "NOT", "NEAR"})
SNIPPET_BEFORE: Final = 60
SNIPPET_CHARS: Final = 200
SNIPPET_SCAN: Final = 200_000  # hits are looked for in this much of a piece


@functools.lru_cache(maxsize=4096)
def _fold_char(c: str) -> str:
    base = "".join(x for x in unicodedata.normalize("NFKD", c) if not unicodedata.combining(x)) or c
    return base.lower()[:1] or c


def fold(text: str) -> str:
    """Lower case without diacritics, one character for each of ``text``'s (positions line up)."""
    return text.lower() if text.isascii() else "".join(map(_fold_char, text))


def index_words(text: str | None) -> str:
    """The words FTS5's unicode61 tokenizer sees in ``text``, folded and space-separated: what
    PostgreSQL's ``content.tsv`` indexes, so that ``os.path.join`` or ``gpt-5`` split as in SQLite."""
    return " ".join(_WORD.findall(fold(text))) if text else ""


def _hit_pattern(q: str) -> re.Pattern[str] | None:
    words = []
    for m in _TOKEN.finditer(q):
        word = m.group(0).rstrip("*")
        if word in _OPERATORS:
            continue
        words.append(re.escape(fold(word)) + (r"[^\W_]*" if m.group(1) else r"(?![^\W_])"))
    return re.compile(r"(?<![^\W_])(?:" + "|".join(words) + ")") if words else None


def snippet(text: str, q: str) -> str:
    """HTML-safe fragment of ``text`` around the first hit of ``q``, hits in ``<mark>``."""
    text = text.translate(_NO_MARKS)[:SNIPPET_SCAN]
    pattern = _hit_pattern(q)
    hits = list(pattern.finditer(fold(text))) if pattern else []
    start = max(0, hits[0].start() - SNIPPET_BEFORE) if hits else 0
    end = min(len(text), start + SNIPPET_CHARS)
    out, at = [], start
    for hit in hits:
        if hit.start() < at or hit.end() > end:
            continue
        out += [html.escape(text[at:hit.start()]), "<mark>", html.escape(text[hit.start():hit.end()]), "</mark>"]
        at = hit.end()
    out.append(html.escape(text[at:end]))
    return ("…" if start else "") + "".join(out).strip() + ("…" if end < len(text) else "")
