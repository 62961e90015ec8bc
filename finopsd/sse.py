"""Server-sent events at the byte level: an incremental decoder and the frame writer.

Only this module knows SSE framing. Upstream reads split frames anywhere, so the
decoder keeps the unfinished tail between ``feed`` calls.
"""

from __future__ import annotations

from finopsd.jsonwire import dumps
from typing import Any


class SSEDecoder:
    """Feed bytes, get complete ``(event, data)`` frames; ``event`` is None when unnamed."""

    __slots__ = ("_buf", "_event", "_data")

    def __init__(self) -> None:
        self._buf = b""
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        buf = self._buf + chunk
        if b"\r" in buf:
            # a lone trailing \r may be the first half of \r\n: keep it for the next read
            keep_cr = buf.endswith(b"\r")
            if keep_cr:
                buf = buf[:-1]
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if keep_cr:
                buf += b"\r"
        *lines, self._buf = buf.split(b"\n")
        frames: list[tuple[str | None, str]] = []
        for raw in lines:
            if not raw:
                if self._data:
                    frames.append((self._event, "\n".join(self._data)))
                self._event, self._data = None, []
                continue
            line = raw.decode("utf-8", "replace")
            if line[0] == ":":
                continue
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value
        return frames

    def close(self) -> list[tuple[str | None, str]]:
        """Flush a last frame that the upstream ended without a blank line."""
        frames = self.feed(b"\n\n") if (self._buf.strip() or self._data) else []
        self._buf = b""
        return frames


def frame(data: Any, event: str | None = None) -> bytes:
    """One SSE frame; dicts are JSON-encoded compactly."""
    body = data.encode() if isinstance(data, str) else dumps(data)
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + body + b"\n\n"


DONE: bytes = b"data: [DONE]\n\n"
