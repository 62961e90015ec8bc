"""JSON on the wire: orjson when installed (the ``fast`` extra), else the stdlib.

Every streamed chunk is parsed once for the transcript and the tool-call repairs,
and every upstream body is serialised once; orjson does both several times faster.
``loads`` raises ``ValueError`` on bad input either way (orjson also for integers
beyond 64 bits, which no LLM API uses); ``dumps`` gives compact UTF-8 bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

loads: Callable[[str | bytes], Any]
dumps: Callable[[Any], bytes]
try:
    import orjson

    loads, dumps = orjson.loads, orjson.dumps
except ImportError:  # the pure-Python path stays complete
    import json

    loads = json.loads

    def dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
