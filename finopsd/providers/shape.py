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

from finopsd.errors import GatewayError, UpstreamError

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
    except GatewayError:
        raise
    except SHAPE_ERRORS as e:
        log.warning("%s: could not read the upstream answer (%s: %s)", provider, type(e).__name__, e)
        raise BadShape(provider, f"{type(e).__name__} while reading it") from None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _object_or_null(value: Any, provider: str, where: str) -> dict[str, Any] | None:
    if value is not None and not isinstance(value, dict):
        raise BadShape(provider, f"{where} is {_kind(value)}, not an object")
    return value


def _list_or_null(value: Any, provider: str, where: str) -> list[Any]:
    if value is not None and not isinstance(value, list):
        raise BadShape(provider, f"{where} is {_kind(value)}, not a list")
    return value or []


def _tool_calls(calls: Any, provider: str, where: str) -> None:
    for i, call in enumerate(_list_or_null(calls, provider, f"{where}.tool_calls")):
        at = f"{where}.tool_calls[{i}]"
        if not isinstance(call, dict):
            raise BadShape(provider, f"{at} is {_kind(call)}, not an object")
        _object_or_null(call.get("function"), provider, f"{at}.function")
        index = call.get("index")
        if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
            raise BadShape(provider, f"{at}.index is {_kind(index)}, not an integer")


def _choices(body: dict[str, Any], provider: str, field: str) -> None:
    for i, choice in enumerate(_list_or_null(body.get("choices"), provider, "choices")):
        if not isinstance(choice, dict):
            raise BadShape(provider, f"choices[{i}] is {_kind(choice)}, not an object")
        part = _object_or_null(choice.get(field), provider, f"choices[{i}].{field}")
        if part is not None:
            _tool_calls(part.get("tool_calls"), provider, f"choices[{i}].{field}")
    _object_or_null(body.get("usage"), provider, "usage")


def check_completion(body: dict[str, Any], provider: str) -> dict[str, Any]:
    """A ``chat.completion`` (or legacy completion) body, or a 502 naming what is wrong."""
    _choices(body, provider, "message")
    return body


def check_chunk(chunk: dict[str, Any], provider: str) -> dict[str, Any]:
    """A ``chat.completion.chunk``, or a 502 naming what is wrong."""
    _choices(chunk, provider, "delta")
    return chunk
