"""Which session (agent task) a request belongs to, and what it added to it.

The rule, first match wins:

1. **header**: the client's own session id, from the first of ``x-finops-session-id``,
   ``X-Claude-Code-Session-Id`` (Claude Code), ``x-session-id`` (Kilo Code),
   ``session-id`` (Codex CLI). Scoped to the virtual key: the same id sent with another
   key is another session. Ids longer than 200 characters or with characters outside
   printable ASCII are ignored.
2. **response_chain**: a Responses API request whose ``previous_response_id`` names a
   response this gateway answered (and stored) for the same key joins that session.
3. **prefix**: otherwise, the same key's session, active in the last 24 hours, whose
   newest request's messages are a prefix of this request's (the way Roo Code and
   Cline resend their history). ``cache_control`` markers are ignored in the
   comparison: Roo Code moves them to the newest user messages every turn.
4. **new**: else a new session.

Limits: an agent that rewrites or condenses its history (Roo Code's "condense
context", Cline's context truncation), or edits an earlier message, starts a new
session unless it sends an id. Two tasks of one key that begin with the same first
messages and run side by side thread onto whichever session's history they extend,
so they can share a session until their histories differ. With ``logs.content:
false`` the prefix rule works from memory only, so such sessions split on a restart.
"""

from __future__ import annotations

import hashlib
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from finopsd.log.text import WHITESPACE, _dumps, text_of

SESSION_HEADERS: Final = ("x-finops-session-id", "x-claude-code-session-id", "x-session-id", "session-id")
MAX_SESSION_ID: Final = 200
PREFIX_IDLE_S: Final = 86_400  # the prefix rule looks back this far (whole sessions are pruned by last turn)
FIRST_WORDS: Final = 200
_PRINTABLE: Final = re.compile(r"[\x21-\x7e][\x20-\x7e]*")


def session_hint(headers: Mapping[str, str]) -> str | None:
    """The client's session id, if it sent a usable one."""
    for name in SESSION_HEADERS:
        value = headers.get(name, "").strip()
        if value and len(value) <= MAX_SESSION_ID and _PRINTABLE.fullmatch(value):
            return value
    return None


def _without_cache_control(message: Any) -> Any:
    if not isinstance(message, dict):
        return message
    out = {k: v for k, v in message.items() if k != "cache_control"}
    if isinstance(out.get("content"), list):
        out["content"] = [
            {k: v for k, v in p.items() if k != "cache_control"} if isinstance(p, dict) else p
            for p in out["content"]
        ]
    return out


def same_message(a: Any, b: Any) -> bool:
    """Equal, or equal once cache_control markers are ignored (checked only when unequal)."""
    return bool(a == b) or _without_cache_control(a) == _without_cache_control(b)


def common_prefix(old: list[Any], new: list[Any], equal: Callable[[Any, Any], bool]) -> int:
    n = min(len(old), len(new))
    i = 0
    while i < n and equal(old[i], new[i]):
        i += 1
    return i


def prefixes(old: list[Any], new: list[Any]) -> tuple[int, int]:
    """How many of ``old``'s first messages ``new`` repeats: exactly, and once cache_control markers are ignored."""
    exact = common_prefix(old, new, operator.eq)
    return exact, exact + common_prefix(old[exact:], new[exact:], same_message)


def extends(old: list[Any], new: list[Any]) -> tuple[int, int] | None:
    """``prefixes(old, new)`` if ``old`` is a non-empty prefix of ``new``, else None (checked from
    its last message first: the likely difference). The writer keeps the pair: the history is compared once a row."""
    if not old or len(old) > len(new) or not same_message(old[-1], new[len(old) - 1]):
        return None
    found = prefixes(old, new)
    return found if found[1] == len(old) else None


def new_from(old: list[Any], new: list[Any], loose: int) -> int:
    """Where this request's own messages start: after the history, and after the
    assistant message that repeats the previous answer."""
    if old and loose == len(old) and loose < len(new):
        following = new[loose]
        if isinstance(following, dict) and following.get("role") == "assistant":
            return loose + 1
    return loose


def fingerprint(key: str | None, messages: list[Any]) -> bytes | None:
    """A hash of the key and the messages up to the first user message: every request
    that extends a history shares its first messages, so this finds the candidates.
    The strings are hashed as they are (no JSON encoding of a 30 KB system prompt per request)."""
    if not messages:
        return None
    end = next((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"), 0)
    h = hashlib.blake2b(digest_size=16)
    _feed(h, [key, [_without_cache_control(m) for m in messages[: end + 1]]])
    return h.digest()


def _feed(h: Any, value: Any) -> None:
    """Hash a JSON-like value: a type tag, a length where the next field's end would be ambiguous."""
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        h.update(b"s%d:" % len(data))
        h.update(data)
    elif isinstance(value, dict):
        h.update(b"d%d:" % len(value))
        for k, v in value.items():
            _feed(h, str(k))
            _feed(h, v)
    elif isinstance(value, list):
        h.update(b"l%d:" % len(value))
        for v in value:
            _feed(h, v)
    else:
        h.update(b"v" + _dumps(value).encode() + b";")


def first_words(messages: list[Any]) -> str | None:
    """The first user message's text, whitespace collapsed, at most 200 characters."""
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            text = WHITESPACE.sub(" ", text_of(message.get("content"))[: FIRST_WORDS * 8]).strip()
            if text:
                return text if len(text) <= FIRST_WORDS else text[: FIRST_WORDS - 1].rstrip() + "…"
    return None
