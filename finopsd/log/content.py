"""Content-addressed pieces of a logged request, each stored once.

A request is split into its messages, its tools list, the rest of its body (the
"skeleton": model, temperature, ... with ``messages`` and ``tools`` set to null where
they were lists, so the key order survives) and the answer. Each piece is JSON,
addressed by a BLAKE2b-128 hash of its kind and bytes: a piece already in the
``content`` table is referenced, not written again.

Bodies of 1 KiB or more are deflated with zlib when that saves at least 10%: stdlib
(no new dependency), the same format as SQLite's sqlar, so ``sqlar_uncompress(body,
size)`` reads any body in the ``sqlite3`` shell (a body is compressed exactly when
``length(body) < size``). Level 1: on the code agents send it keeps 3.2x of level 6's
3.9x at 2.5x the speed (~230 MB/s), and the writer's thread shares a core with the event
loop, so its CPU per new piece is what a busy gateway feels (#19).

Pieces are encoded with orjson when it is installed (the ``fast`` extra: ~13x the
stdlib's speed on a 10 KB tool result) and read back by the same library; a value orjson
will not take as the stdlib would (a big integer, a datetime, a key that is not a string)
goes the stdlib's way. Both write the same compact JSON for what requests hold (strings,
integers, lists, objects), so a piece hashes alike either way; where they differ (a float's
exponent) an equal piece is at worst stored twice.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from finopsd.log.text import _dumps, prompt_text, response_text

if TYPE_CHECKING:
    from finopsd.scrub import Scrubber

try:
    import orjson
except ImportError:  # the stdlib alone is complete
    orjson = None  # type: ignore[assignment]

MESSAGE: Final = "message"
TOOLS: Final = "tools"
SKELETON: Final = "request"
ANSWER: Final = "answer"
# request_content.pos: messages count from 0; the other pieces have fixed negative slots
POS: Final = {SKELETON: -1, TOOLS: -2, ANSWER: -3}
COMPRESS_FROM: Final = 1024
ZLIB_LEVEL: Final = 1


# what orjson would write otherwise than the stdlib's ``_dumps``: left to the stdlib
_AS_STDLIB: Final = (
    orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS
) if orjson is not None else 0


def _encode(value: Any) -> tuple[bytes, Callable[[bytes], Any]]:
    """The piece's JSON bytes, and the parser that reads them back."""
    if orjson is not None:
        try:
            return orjson.dumps(value, option=_AS_STDLIB), orjson.loads
        except TypeError:  # orjson.JSONEncodeError: big integers, other types, non-string keys, depth
            pass
    return _dumps(value).encode(), json.loads


def encode(value: Any) -> bytes:
    """The JSON text a piece of ``value`` would be stored as."""
    return _encode(value)[0]


def pack(kind: str, value: Any, scrubber: Scrubber | None = None) -> tuple[bytes, int, bytes, Any]:
    """(hash, size, stored body, the value as it will read back) for one piece, with ``scrubber``'s
    secrets taken out: the value is walked only when its JSON text may hold one."""
    data, parse = _encode(value)
    if scrubber is not None and scrubber.may_hold(data):
        data, parse = _encode(scrubber.value(value))
    digest = hashlib.blake2b(data, digest_size=16, person=kind.encode()).digest()
    body = data
    if len(data) >= COMPRESS_FROM:
        packed = zlib.compress(data, ZLIB_LEVEL)
        if len(packed) * 10 < len(data) * 9:
            body = packed
    # What the parser gives back: a value the encoder stringified (default=str) reads
    # back as a string, and the index must be built from what a delete will re-read.
    return digest, len(data), body, parse(data)


def unpack(size: int, body: bytes) -> Any:
    return json.loads(body if len(body) == size else zlib.decompress(body))


def index_text(kind: str, value: Any) -> tuple[str | None, str | None]:
    """The (prompt_text, response_text) the FTS index holds for one piece."""
    if kind == ANSWER:
        return None, response_text(value)
    if kind == MESSAGE:
        return prompt_text({"messages": [value]}), None
    if kind == TOOLS:
        return prompt_text({"tools": value}), None
    return prompt_text(value if isinstance(value, dict) else None), None


def split_request(request: dict[str, Any]) -> tuple[dict[str, Any], list[Any] | None, list[Any] | None]:
    """The skeleton, the messages and the tools of a request (None where not a list)."""
    skeleton = dict(request)
    messages, tools = request.get("messages"), request.get("tools")
    messages = messages if isinstance(messages, list) else None
    tools = tools if isinstance(tools, list) else None
    if messages is not None:
        skeleton["messages"] = None
    if tools is not None:
        skeleton["tools"] = None
    return skeleton, messages, tools


def join_request(skeleton: dict[str, Any], messages: list[Any] | None, tools: list[Any] | None) -> dict[str, Any]:
    """The request as the client sent it: assigning a key that exists keeps its place."""
    if messages is not None:
        skeleton["messages"] = messages
    if tools is not None:
        skeleton["tools"] = tools
    return skeleton


# base64 images would bloat the log; it keeps their type and size
DATA_URL: Final = re.compile(r"data:([\w/+.-]+);base64,[A-Za-z0-9+/=\s]{256,}")


def _shrink(match: re.Match[str]) -> str:
    return f"data:{match.group(1)};base64,[{len(match.group(0))} bytes not logged]"


def without_images(value: Any) -> Any:
    if isinstance(value, str):
        return DATA_URL.sub(_shrink, value) if "base64," in value else value
    if isinstance(value, list):
        return [without_images(v) for v in value]
    if isinstance(value, dict):
        return {k: without_images(v) for k, v in value.items()}
    return value
