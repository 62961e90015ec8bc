"""The canonical shapes the relay relies on, checked on whatever an adapter hands it.

OpenAI-protocol upstreams' bodies and chunks reach the relay as they came; the other
adapters build theirs from upstream data. Either way an answer whose ``choices`` is a
string, whose ``message`` or ``delta`` is not an object, or whose tool calls are not
objects is the upstream's fault: a 502 that says what was wrong (and a log row), never
a crash in the chunk loop. An adapter's translation that trips over such data (a
``TypeError`` on a field of the wrong type) is turned into the same 502 by ``parsed``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from finopsd.errors import UpstreamError

__all__ = ["check_chunk", "check_completion", "parsed"]

log = logging.getLogger(__name__)

T = TypeVar("T")
# what translation code raises on data of a shape it did not expect
SHAPE_ERRORS = (TypeError, ValueError, LookupError, AttributeError, ArithmeticError)


class BadShape(UpstreamError):
    def __init__(self, provider: str, what: str) -> None:
        super().__init__(f"{provider}: upstream answer has an unexpected shape: {what}", code="upstream_bad_response")


def parsed(provider: str, parse: Callable[..., T], *args: Any) -> T:
    """``parse(*args)``, with a translation that fails on the upstream's data made a 502."""
    try:
        return parse(*args)
    except SHAPE_ERRORS as e:  # a GatewayError (the adapter's own verdict) passes through
        # the exception's text may quote the upstream's body: only its type is logged
        log.warning("%s: could not read the upstream answer (%s)", provider, type(e).__name__)
        raise BadShape(provider, f"a field of the wrong type or value ({type(e).__name__})") from None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _wrong(provider: str, where: str, value: Any, wanted: str) -> BadShape:
    return BadShape(provider, f"{where} is {_kind(value)}, not {wanted}")


def _choices(body: dict[str, Any], provider: str, field: str) -> None:
    """Checks in the common case are isinstance tests only; the message is built on failure."""
    choices = body.get("choices")
    if choices is not None:
        if type(choices) is not list:
            raise _wrong(provider, "choices", choices, "a list")
        for i, choice in enumerate(choices):
            if type(choice) is not dict:
                raise _wrong(provider, f"choices[{i}]", choice, "an object")
            part = choice.get(field)
            if part is None:
                continue
            if type(part) is not dict:
                raise _wrong(provider, f"choices[{i}].{field}", part, "an object")
            content = part.get("content")
            if content is not None and type(content) is not str and type(content) is not list:
                raise _wrong(provider, f"choices[{i}].{field}.content", content, "a string or a list")
            calls = part.get("tool_calls")
            if calls is not None:
                _tool_calls(calls, provider, f"choices[{i}].{field}.tool_calls")
    usage = body.get("usage")
    if usage is not None and type(usage) is not dict:
        raise _wrong(provider, "usage", usage, "an object")


def _tool_calls(calls: Any, provider: str, where: str) -> None:
    if type(calls) is not list:
        raise _wrong(provider, where, calls, "a list")
    for i, call in enumerate(calls):
        if type(call) is not dict:
            raise _wrong(provider, f"{where}[{i}]", call, "an object")
        fn, index = call.get("function"), call.get("index")
        if fn is not None and type(fn) is not dict:
            raise _wrong(provider, f"{where}[{i}].function", fn, "an object")
        if index is not None and type(index) is not int:
            raise _wrong(provider, f"{where}[{i}].index", index, "an integer")


def check_completion(body: dict[str, Any], provider: str) -> dict[str, Any]:
    """A ``chat.completion`` (or legacy completion) body, or a 502 naming what is wrong."""
    _choices(body, provider, "message")
    return body


def check_chunk(chunk: dict[str, Any], provider: str) -> dict[str, Any]:
    """A ``chat.completion.chunk``, or a 502 naming what is wrong."""
    _choices(chunk, provider, "delta")
    return chunk
