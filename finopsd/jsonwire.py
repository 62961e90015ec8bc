"""Parsing JSON off the wire: orjson when installed (the ``fast`` extra), else the stdlib.

Every streamed chunk is parsed once for the transcript and the tool-call repairs;
orjson does that several times faster. Both raise ``ValueError`` on bad input
(orjson also for integers beyond 64 bits, which no LLM API uses).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

loads: Callable[[str | bytes], Any]
try:
    import orjson

    loads = orjson.loads
except ImportError:  # the pure-Python path stays complete
    import json

    loads = json.loads
