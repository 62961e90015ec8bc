"""One request's journey: created by the route, filled by hooks and the relay, logged once."""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from finopsd.caching import CachingConfig
from finopsd.usage import clean_usage

if TYPE_CHECKING:
    from finopsd.state import Hold


# Our own generator, not the module's: the log writer makes session ids in its thread, and
# the global one is another program's to seed (hypothesis checks that nothing else draws from it)
_IDS: Final = random.Random()


def new_request_id() -> str:
    """A UUIDv7: time-ordered, so ids sort by arrival and make a keyset for paging."""
    ms = time.time_ns() // 1_000_000
    # not os.urandom: it releases the GIL and then waits for it behind the log writer's thread
    rand = _IDS.getrandbits(80)
    rand_a, rand_b = (rand >> 68) & 0xFFF, rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=(ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b))


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "arguments": "".join(self.arguments)}


@dataclass
class Transcript:
    """What the assistant said, accumulated from chunks or taken from a whole response."""

    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None  # set through set_usage: bounded numbers only

    def set_usage(self, usage: Any) -> None:
        """Keep the upstream's usage, each number bounded (``finopsd.usage``), for the log and pricing."""
        cleaned = clean_usage(usage)
        if cleaned:
            self.usage = cleaned

    def add_message(self, message: dict[str, Any]) -> None:
        """Fold a non-stream ``choices[0].message`` (its shape checked by ``providers.shape``) into the transcript."""
        if isinstance(message.get("content"), str):
            self.content.append(message["content"])
        if isinstance(message.get("reasoning_content"), str):
            self.reasoning.append(message["reasoning_content"])
        for call in message.get("tool_calls") or ():
            fn = call.get("function") or {}
            self.tool_calls.append(
                ToolCall(str(call.get("id", "")), str(fn.get("name", "")), [str(fn.get("arguments", ""))])
            )

    def as_dict(self) -> dict[str, Any]:
        return {
            "content": "".join(self.content),
            "reasoning": "".join(self.reasoning),
            "tool_calls": [c.as_dict() for c in self.tool_calls],
        }


@dataclass
class Exchange:
    """Everything the log row and the post-hooks need about one request.

    A route creates it once the body is valid; from then on the request gets exactly one log row.
    """

    id: str
    route: str
    client_ip: str | None = None
    user_agent: str | None = None
    started: float = field(default_factory=time.time)
    t0: float = field(default_factory=time.perf_counter)
    model: str | None = None  # as the client wrote it
    stream: bool = False
    request: dict[str, Any] | None = None  # canonical request
    provider: str | None = None
    upstream_model: str | None = None
    upstream_key_name: str | None = None
    key_name: str | None = None
    team: str | None = None
    # attribution inside a key (finopsd.attribution): the client's headers or the key's pins
    user: str | None = None
    project: str | None = None
    tags: tuple[str, ...] = ()
    allowed_models: tuple[str, ...] | None = None  # the key's ``models`` globs: what fallbacks may reach
    status_code: int | None = None
    status: str = "ok"
    error_type: str | None = None
    error_message: str | None = None
    ttft_ms: float | None = None
    duration_ms: float | None = None
    # seconds spent waiting on the upstream (calls, answers, retry backoff): the rest of
    # ``duration_ms`` is the gateway's own overhead (finopsd.metrics)
    upstream_s: float = 0.0
    # (start, end) perf_counter times of each attempt's upstream call, beside ``attempts``
    # (kept off the log row): the trace's child spans (finopsd.otel)
    attempt_times: list[tuple[float, float]] = field(default_factory=list)
    cost_usd: float | None = None
    cost_without_cache_usd: float | None = None  # the same tokens with no cache read or write
    cost_flags: str | None = None
    # the caller's key and team ``caching`` settings (set by governance), most specific first
    caching: tuple[CachingConfig, ...] = ()
    attempts: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    transcript: Transcript = field(default_factory=Transcript)
    # governance: USD held against the key's and team's budgets while in flight (a finopsd.state.Hold)
    reservation: Hold | None = None
    # for the log's sessions (finopsd.log.sessions): the client's own session id, the
    # Responses API chain, and the body's size (the log queue is bounded in bytes)
    session_hint: str | None = None
    previous_response_id: str | None = None
    response_id: str | None = None
    body_bytes: int = 0

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.t0) * 1000

    def mark_first_token(self) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = self.elapsed_ms()

    def fail(self, status_code: int, error_type: str, message: str, status: str = "error") -> None:
        self.status_code, self.error_type, self.error_message, self.status = status_code, error_type, message, status
