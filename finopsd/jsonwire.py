"""JSON on the wire: orjson when installed (the ``fast`` extra), else the stdlib.

Every streamed chunk is parsed once for the transcript and the tool-call repairs,
and every upstream body is serialised once; orjson does both several times faster.

``loads`` is the one parser for JSON from clients and upstreams, and both paths accept
the same documents: at most ``MAX_DEPTH`` levels of nesting (orjson reads 1,024 levels
but writes only 254, the stdlib recurses until ``RecursionError``), no ``NaN`` or
``Infinity``, no number that overflows a double (``1e400``), no lone surrogate in a
string. Anything else raises ``ValueError``. Integers beyond 64 bits are read as floats
by orjson and as ints by the stdlib; the usage reader clamps both. ``dumps`` gives
compact UTF-8 bytes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, Final

MAX_DEPTH: Final = 128  # far deeper than any tool schema; well below what orjson can write back
# from this size on a document is walked for its depth without counting its brackets first: an
# agent's 400 KB body has a few hundred containers, which the walk visits in ~30 us, while two
# counts of its bytes took ~230 us
COUNT_BELOW: Final = 16 * 1024
TOO_DEEP: Final = f"JSON nested deeper than {MAX_DEPTH} levels"

_parse: Callable[[str | bytes], Any]
dumps: Callable[[Any], bytes]
try:
    import orjson

    dumps = orjson.dumps

    def _parse(data: str | bytes) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as e:
            if str(e).startswith("depth limit"):  # past orjson's own 1,024 levels
                raise ValueError(TOO_DEEP) from None
            raise
except ImportError:  # the pure-Python path stays complete
    import json

    _SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")  # an escape that may decode to half a surrogate pair

    def _finite(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"number {text[:40]} is out of range")
        return value

    def _no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON value")

    def _parse(data: str | bytes) -> Any:
        if isinstance(data, bytes):
            data = data.decode()  # UTF-8 only, as orjson reads (json.loads would guess UTF-16 or 32)
        try:
            value = json.loads(data, parse_float=_finite, parse_constant=_no_constant)
        except RecursionError:
            raise ValueError(TOO_DEEP) from None
        if _SURROGATE.search(data):
            dumps(value)  # UnicodeEncodeError (a ValueError) if a surrogate stayed unpaired
        return value

    def dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def loads(data: str | bytes) -> Any:
    """Parse client or upstream JSON; ``ValueError`` for anything the gateway could not write back."""
    value = _parse(data)
    # a document shorter than two characters a level, or with fewer brackets than the limit,
    # cannot nest deeper: stream chunks skip the walk, and most of them the count
    if (len(data) > 2 * MAX_DEPTH and (len(data) >= COUNT_BELOW or _brackets(data) > MAX_DEPTH)
            and not _depth_within(value, MAX_DEPTH)):
        raise ValueError(TOO_DEEP)
    return value


def _brackets(data: str | bytes) -> int:
    return data.count("[") + data.count("{") if isinstance(data, str) else data.count(b"[") + data.count(b"{")


def _depth_within(value: Any, limit: int) -> bool:
    """True when ``value`` nests at most ``limit`` containers deep (one level per pass, no recursion).

    ``value`` is what a parser made, so exact types suffice: ``type() in`` a set costs half of
    ``isinstance`` with a tuple, ~30 us instead of ~60 for an agent's 400 KB body."""
    level = [value] if type(value) in _CONTAINERS else []
    for _ in range(limit):
        if not level:
            return True
        level = [c for v in level for c in (v.values() if type(v) is dict else v) if type(c) in _CONTAINERS]
    return not level


_CONTAINERS: Final = frozenset({dict, list})
