"""Building canonical ``chat.completion`` and ``chat.completion.chunk`` dicts, shared by the adapters.

Every adapter that does not speak OpenAI chat ends the same way: text, thoughts, tool calls, a
finish reason and usage become one ``chat.completion``, or a stream of chunks kept by a
per-request ``StreamState``. What differs per protocol (where those pieces are in the upstream
answer, its finish reasons, its usage fields) stays in the adapter; what is the same lives here,
with the small readers the translations in both directions share: of wire data (JSON bodies,
data: URLs, tool-call arguments) and of the canonical request (token limit, stops, text).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

from finopsd.errors import UpstreamError
from finopsd.jsonwire import loads

__all__ = [
    "StreamState",
    "arguments_json",
    "as_object",
    "assistant_message",
    "chat_completion",
    "completion_id",
    "content_text",
    "data_url_parts",
    "is_number",
    "load_object",
    "parse_arguments",
    "requested_max_tokens",
    "requested_stops",
    "tool_call",
]


# --- reading wire data ---------------------------------------------------------------------


def as_object(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (wire data is checked, not trusted)."""
    return value if isinstance(value, dict) else {}


def is_number(value: Any) -> bool:
    """True for a JSON number (``True`` is an int to Python, not a number to JSON)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def load_object(data: bytes | str, provider: str, *, first_of_list: bool = False) -> dict[str, Any]:
    """An upstream JSON body or event → its object; anything else is the upstream's fault (502).

    ``first_of_list``: Google sometimes wraps a body (an error, mostly) in a one-item list.
    """
    try:
        parsed = loads(data)
    except ValueError:
        raise UpstreamError(f"{provider}: upstream sent invalid JSON") from None
    if first_of_list and isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    if not isinstance(parsed, dict):
        raise UpstreamError(f"{provider}: upstream sent an unexpected body")
    return parsed


def data_url_parts(url: str) -> tuple[str, str]:
    """``data:image/png;base64,xxx`` → (media type, base64 data); percent-encoded data is re-encoded.

    Upstreams that take inline bytes (Anthropic, Gemini, Bedrock) all want base64.
    """
    head, _, data = url[5:].partition(",")
    media, _, encoding = head.partition(";")
    if encoding != "base64":
        data = base64.b64encode(unquote_to_bytes(data)).decode()
    return media, data


def parse_arguments(arguments: Any) -> dict[str, Any]:
    """Tool-call arguments (a JSON string) → an object; bad JSON is kept, so the model sees its mistake.

    Chat carries arguments as a string, while Anthropic ``input``, Gemini ``args`` and Converse
    ``input`` must be objects.
    """
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        parsed = loads(arguments)
    except ValueError:
        return {"arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


# --- reading the canonical request ----------------------------------------------------------


def trim_prefill(messages: list[dict[str, Any]]) -> None:
    """A final assistant turn (a prefill) may not end in whitespace: Claude answers 400.

    Serves the Anthropic and Bedrock shapes alike: both are ``{"role", "content": [blocks]}``
    and only a text block has a ``text`` key.
    """
    last = messages[-1] if messages else None
    if last is None or last["role"] != "assistant" or "text" not in last["content"][-1]:
        return
    text = last["content"][-1]["text"].rstrip()
    if text:
        last["content"][-1]["text"] = text
    else:
        del last["content"][-1]
        if not last["content"]:
            messages.pop()


def requested_max_tokens(req: dict[str, Any]) -> int | None:
    """The output limit asked for (``max_completion_tokens`` first, as OpenAI reads them), if valid."""
    for name in ("max_completion_tokens", "max_tokens"):
        limit = req.get(name)
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            return limit
    return None


def content_text(content: Any, sep: str = "") -> str:
    """Text of a message content: the string, or its text parts joined by ``sep`` (others dropped)."""
    if isinstance(content, str):
        return content
    parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"] \
        if isinstance(content, list) else []
    return sep.join(t for t in parts if isinstance(t, str))


def requested_stops(req: dict[str, Any]) -> list[str]:
    """``stop`` (a string or a list) as a list of its non-empty strings."""
    stop = req.get("stop")
    return [s for s in ([stop] if isinstance(stop, str) else stop or ()) if isinstance(s, str) and s]


# --- building chat.completion --------------------------------------------------------------


def completion_id(upstream_id: Any = None) -> str:
    """Our ``chatcmpl-`` id: the upstream's own id when it has one, else a random one."""
    return "chatcmpl-" + str(upstream_id or secrets.token_hex(12))


def arguments_json(value: Any) -> str:
    """A tool's input object → the JSON string chat carries (no input: ``{}``)."""
    return json.dumps(value if value is not None else {})


def tool_call(call_id: Any, name: Any, arguments: str) -> dict[str, Any]:
    """One whole chat tool call; a missing id or name becomes ``""``."""
    return {"id": str(call_id or ""), "type": "function",
            "function": {"name": str(name or ""), "arguments": arguments}}


def assistant_message(content: str, calls: list[dict[str, Any]], thoughts: list[str]) -> dict[str, Any]:
    """An assistant chat message; content is null beside tool calls when there is no text."""
    message: dict[str, Any] = {"role": "assistant", "content": content or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    return message


def chat_completion(*, upstream_id: Any, model: str, content: str, thoughts: list[str],
                    calls: list[dict[str, Any]], finish: str, usage: dict[str, Any] | None) -> dict[str, Any]:
    """A whole answer → ``chat.completion`` (``usage`` already OpenAI usage, or None if none came)."""
    completion: dict[str, Any] = {
        "id": completion_id(upstream_id),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": assistant_message(content, calls, thoughts), "finish_reason": finish}],
    }
    if usage is not None:
        completion["usage"] = usage
    return completion


# --- building chat.completion.chunk --------------------------------------------------------


def _now() -> int:
    return int(time.time())


@dataclass(slots=True)
class StreamState:
    """Per-request stream state: our ids, our tool-call counter, what went out once already.

    Our counter numbers tool calls 0, 1, 2… as they start, whatever the upstream's block
    indexes are; ``tools`` maps an upstream block key to our index for protocols that stream a
    call as start, argument fragments and stop (Anthropic, Bedrock, Cohere). A subclass adds
    its protocol's usage and overrides ``openai_usage``.
    """

    provider: str
    model: str
    id: str = field(default_factory=completion_id)  # replaced by the upstream's id where it gives one
    created: int = field(default_factory=_now)
    calls: int = 0
    tools: dict[Any, int] = field(default_factory=dict)  # upstream block key → our call index
    args_seen: set[Any] = field(default_factory=set)  # block keys that got argument fragments
    started: bool = False  # the first chunk (which carries the role) went out
    finished: bool = False  # the finish chunk went out
    usage_sent: bool = False

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        """One chunk of choice 0; the first of the stream also says ``role: assistant``."""
        if not self.started:
            self.started = True
            delta = {"role": "assistant", **delta}
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def usage_only(self, usage: dict[str, Any]) -> dict[str, Any]:
        """The chunk with no choices that carries ``usage`` (OpenAI's ``include_usage`` shape)."""
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [], "usage": usage}

    def openai_usage(self) -> dict[str, Any] | None:
        """The usage seen so far as OpenAI usage; None while there is none (the default)."""
        return None

    def usage_chunk(self) -> list[dict[str, Any]]:
        """The usage chunk the first time there is usage, then nothing: a request is charged once."""
        if self.usage_sent:
            return []
        usage = self.openai_usage()
        if usage is None:
            return []
        self.usage_sent = True
        return [self.usage_only(usage)]

    def start_call(self, key: Any, call_id: Any, name: Any, arguments: str = "") -> dict[str, Any]:
        """A tool call's first chunk (id, name, our index), remembered under the upstream's ``key``."""
        index, self.calls = self.calls, self.calls + 1
        self.tools[key] = index
        if arguments:
            self.args_seen.add(key)
        return self.chunk({"tool_calls": [{"index": index, **tool_call(call_id, name, arguments)}]})

    def call_arguments(self, key: Any, fragment: Any) -> list[dict[str, Any]]:
        """An argument fragment for the call started under ``key``; none for blocks that are not calls."""
        if not fragment or key not in self.tools:
            return []
        self.args_seen.add(key)
        return [self.chunk({"tool_calls": [{"index": self.tools[key], "function": {"arguments": fragment}}]})]

    def end_call(self, key: Any) -> list[dict[str, Any]]:
        """At a call's stop: ``{}`` for a call that streamed no arguments, so clients can parse them."""
        if key not in self.tools or key in self.args_seen:
            return []
        self.args_seen.add(key)
        return [self.chunk({"tool_calls": [{"index": self.tools[key], "function": {"arguments": "{}"}}]})]
