"""OpenAI chat answers → Gemini API answers: a GenerateContentResponse, or its stream of them.

References: https://ai.google.dev/api/generate-content#v1beta.GenerateContentResponse (candidates,
FinishReason, UsageMetadata), https://ai.google.dev/api/generate-content#method:-models.streamgeneratecontent,
and Google's error model (https://cloud.google.com/apis/design/errors: ``code``, ``message``,
``status``).

A stream sends text and thoughts as they come, one GenerateContentResponse each. Function calls
go out whole (Gemini sends ``args`` as an object, never as fragments) once the upstream has
finished them, together with ``finishReason``; the usage follows in a last response of its own
(OpenAI-style upstreams count tokens after the finish). Gemini CLI needs exactly that: a finish
reason, and text or a call.
"""

from __future__ import annotations

import secrets
from typing import Any, Final

from finopsd.pricing import cache_reads
from finopsd.providers.canonical import as_object, parse_arguments
from finopsd.usage import token_count

FINISH_REASONS: Final = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "function_call": "STOP",
                         "content_filter": "SAFETY"}
STATUSES: Final = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 402: "RESOURCE_EXHAUSTED", 403: "PERMISSION_DENIED",
    404: "NOT_FOUND", 405: "UNIMPLEMENTED", 408: "DEADLINE_EXCEEDED", 409: "ABORTED", 413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 501: "UNIMPLEMENTED", 502: "UNAVAILABLE",
    503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}


# Google's canonical error codes (google.rpc.Code): an upstream Gemini error keeps its own
CANONICAL: Final = frozenset({
    "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "UNAUTHENTICATED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
    "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
})


def error_body(status: int, message: str, name: str | None = None,
               retry_after: str | None = None) -> dict[str, Any]:
    """Google's error shape, with the canonical status name clients switch on (``name`` when it is one).

    ``retry_after`` (seconds) becomes a ``RetryInfo`` detail: Gemini CLI waits that long before it retries.
    """
    if name is None or name.upper() not in CANONICAL:
        name = STATUSES.get(status) or ("INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
    error: dict[str, Any] = {"code": status, "message": message, "status": name.upper()}
    if retry_after and retry_after.isdigit():
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after}s"}]
    return {"error": error}


def usage_metadata(usage: Any) -> dict[str, int]:
    """OpenAI usage → UsageMetadata, where candidates exclude thoughts and the prompt includes the cache."""
    u = as_object(usage)
    prompt, completion = token_count(u.get("prompt_tokens")), token_count(u.get("completion_tokens"))
    thoughts = min(token_count(as_object(u.get("completion_tokens_details")).get("reasoning_tokens")), completion)
    cached = cache_reads(u)  # under any provider's names
    meta = {"promptTokenCount": prompt, "candidatesTokenCount": max(completion - thoughts, 0),
            "totalTokenCount": prompt + completion}
    if thoughts:
        meta["thoughtsTokenCount"] = thoughts
    if cached:
        meta["cachedContentTokenCount"] = cached
    return meta


def finish_reason(finish: Any) -> str:
    return FINISH_REASONS.get(finish, "STOP") if isinstance(finish, str) else "STOP"


def function_call(call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    """A functionCall part; the id goes with it, so the client echoes it in its functionResponse."""
    return {"functionCall": {"id": str(call_id or "call_" + secrets.token_hex(12)), "name": str(name or ""),
                             "args": parse_arguments(arguments)}}


def response(parts: list[dict[str, Any]], model: str, response_id: str, *, finish: str | None = None,
             usage: Any = None) -> dict[str, Any]:
    """One GenerateContentResponse of one candidate."""
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    out: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        out["usageMetadata"] = usage_metadata(usage)
    out["modelVersion"] = model
    out["responseId"] = response_id
    return out


def _response_id(chat_id: Any) -> str:
    return str(chat_id).removeprefix("chatcmpl-") if chat_id else secrets.token_hex(12)


def chat_to_genai(resp: dict[str, Any], model: str, *, thoughts: bool) -> dict[str, Any]:
    """A ``chat.completion`` → a GenerateContentResponse (thought parts only when the client asked)."""
    choices = resp.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = as_object(choice.get("message"))
    parts: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if thoughts and isinstance(reasoning, str) and reasoning:
        parts.append({"text": reasoning, "thought": True})
    text = message.get("content")
    text = text if isinstance(text, str) else "".join(
        str(p.get("text", "")) for p in text if isinstance(p, dict) and p.get("type") == "text") \
        if isinstance(text, list) else ""
    if text:
        parts.append({"text": text})
    for call in message.get("tool_calls") if isinstance(message.get("tool_calls"), list) else ():
        if isinstance(call, dict):
            fn = as_object(call.get("function"))
            parts.append(function_call(call.get("id"), fn.get("name"), fn.get("arguments")))
    return response(parts or [{"text": ""}], model, _response_id(resp.get("id")),
                    finish=finish_reason(choice.get("finish_reason")), usage=resp.get("usage") or {})


class ChatToGenaiStream:
    """Canonical chunks in, GenerateContentResponses out (see the module docstring for the order)."""

    __slots__ = ("model", "thoughts", "id", "_calls", "_finish", "_usage", "_done")

    def __init__(self, model: str, *, thoughts: bool) -> None:
        self.model = model
        self.thoughts = thoughts
        self.id = secrets.token_hex(12)
        self._calls: dict[Any, list[Any]] = {}  # upstream index → [id, name, argument fragments]
        self._finish: str | None = None  # Gemini's finish reason, once the upstream's came
        self._usage: Any = None
        self._done = False

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """One canonical chunk → the responses it makes (text and thoughts at once; calls at the finish)."""
        if self._done:
            return []
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        delta = as_object(choice.get("delta"))
        parts: list[dict[str, Any]] = []
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if self.thoughts and isinstance(reasoning, str) and reasoning:
            parts.append({"text": reasoning, "thought": True})
        if isinstance(delta.get("content"), str) and delta["content"]:
            parts.append({"text": delta["content"]})
        calls = delta.get("tool_calls")
        for pos, call in enumerate(calls if isinstance(calls, list) else ()):
            if isinstance(call, dict):
                self._add_call(call, pos)
        out = [response(parts, self.model, self.id)] if parts else []
        if choice.get("finish_reason") and self._finish is None:
            self._finish = finish_reason(choice["finish_reason"])
            out.append(self._last_parts())
        return out

    def _add_call(self, call: dict[str, Any], pos: int) -> None:
        fn = as_object(call.get("function"))
        key = call.get("index")
        key = key if isinstance(key, (int, str)) else pos
        known = self._calls.setdefault(key, [call.get("id"), fn.get("name"), []])
        if isinstance(fn.get("arguments"), str):
            known[2].append(fn["arguments"])

    def _last_parts(self, usage: Any = None) -> dict[str, Any]:
        parts = [function_call(i, n, "".join(args)) for i, n, args in self._calls.values()]
        return response(parts or [{"text": ""}], self.model, self.id, finish=self._finish, usage=usage)

    def finish(self) -> list[dict[str, Any]]:
        """At the end: the usage (once); with the calls and finish reason if the upstream never finished."""
        if self._done:
            return []
        self._done = True
        if self._finish is None:
            self._finish = "STOP"
            return [self._last_parts(self._usage or {})]
        return [{"usageMetadata": usage_metadata(self._usage), "modelVersion": self.model, "responseId": self.id}]
