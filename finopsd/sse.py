"""Server-sent events at the byte level: an incremental decoder and the frame writer.

Only this module knows SSE framing. Upstream reads split frames anywhere, so the
decoder keeps the unfinished line between ``feed`` calls: as a list of pieces,
joined once when its line ends, so a long line costs linear time, not quadratic.
A line, or an event's data lines together, longer than ``max_event`` bytes raise
``EventTooLarge`` (a hostile upstream could otherwise grow one without end).
"""

from __future__ import annotations

from finopsd.jsonwire import dumps
from typing import Any

DEFAULT_MAX_EVENT = 8 * 1024 * 1024


class EventTooLarge(ValueError):
    """An SSE line or event beyond the decoder's ``max_event`` bytes."""


class SSEDecoder:
    """Feed bytes, get complete ``(event, data)`` frames; ``event`` is None when unnamed."""

    __slots__ = ("_tail", "_tail_len", "_event", "_data", "_data_len", "max_event")

    def __init__(self, max_event: int = DEFAULT_MAX_EVENT) -> None:
        self._tail: list[bytes] = []  # the unfinished line, in the pieces it came in
        self._tail_len = 0
        self._event: str | None = None
        self._data: list[str] = []
        self._data_len = 0
        self.max_event = max_event

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        if b"\n" not in chunk and b"\r" not in chunk and not (self._tail and self._tail[-1].endswith(b"\r")):
            self._tail.append(chunk)
            self._tail_len += len(chunk)
            if self._tail_len > self.max_event:
                raise EventTooLarge(f"an event line is longer than {self.max_event} bytes")
            return []
        buf = b"".join(self._tail) + chunk if self._tail else chunk
        if b"\r" in buf:
            # a lone trailing \r may be the first half of \r\n: keep it for the next read
            keep_cr = buf.endswith(b"\r")
            if keep_cr:
                buf = buf[:-1]
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if keep_cr:
                buf += b"\r"
        *lines, tail = buf.split(b"\n")
        self._tail, self._tail_len = ([tail], len(tail)) if tail else ([], 0)
        frames: list[tuple[str | None, str]] = []
        for raw in lines:
            if not raw:
                if self._data:
                    frames.append((self._event, "\n".join(self._data)))
                self._event, self._data, self._data_len = None, [], 0
                continue
            if len(raw) > self.max_event:
                raise EventTooLarge(f"an event line is longer than {self.max_event} bytes")
            line = raw.decode("utf-8", "replace")
            if line[0] == ":":
                continue
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "data":
                self._data.append(value)
                self._data_len += len(value) + 1
                if self._data_len > self.max_event:
                    raise EventTooLarge(f"an event is longer than {self.max_event} bytes")
            elif name == "event":
                self._event = value
        if self._tail_len > self.max_event:
            raise EventTooLarge(f"an event line is longer than {self.max_event} bytes")
        return frames

    def close(self) -> list[tuple[str | None, str]]:
        """Flush a last frame that the upstream ended without a blank line."""
        pending = b"".join(self._tail).strip()
        frames = self.feed(b"\n\n") if (pending or self._data) else []
        self._tail, self._tail_len = [], 0
        return frames


def frame(data: Any, event: str | None = None) -> bytes:
    """One SSE frame; dicts are JSON-encoded compactly."""
    body = data.encode() if isinstance(data, str) else dumps(data)
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + body + b"\n\n"


DONE: bytes = b"data: [DONE]\n\n"
