"""Live state behind one interface: rate windows, budget counters, parked upstream keys.

Governance and the router talk to a ``LiveState`` only. Two implementations:

- ``local.LocalState``: in this process (what ``finopsd serve`` uses with no config);
- ``redis.RedisState`` (``state.redis_url``): shared by every instance through Redis, each
  check-and-update one Lua script, with the local state as its fallback while Redis is away.

The contract, the same for both:

- ``admit`` checks the rate windows of every owner (a key, then its team), then their
  budgets (spent + held by requests in flight below the limit), and only when all pass
  counts the request and holds ``estimate`` USD against the owners with budgets: one
  atomic step, so two instances cannot both take the last room.
- ``settle`` releases a hold and charges the real cost and tokens: one atomic step.
- ``track`` names the budget counters in force (config and SIGHUP); counters it has not
  seen are summed from the request log through ``rebuild``.
- the views (``spent``, ``rate_used``, ``parking``) never wait: they read what this
  process last saw.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from finopsd.spend import Counter

if TYPE_CHECKING:
    from finopsd.config import Config
    from finopsd.state.parking import Parking

__all__ = ["BudgetRefusal", "Charge", "Hold", "Limits", "LiveState", "RateRefusal", "Rebuild", "open_state",
           "run_state"]

Owner = tuple[str, str]  # (scope, name): ("key", "alpha") or ("team", "platform")
# counters → (window start, USD spent in it), summed from the request log
Rebuild = Callable[[set[Counter], float], Awaitable[dict[Counter, tuple[float, float]]]]


@dataclass(frozen=True, slots=True)
class Limits:
    """What one owner is held to: requests and tokens per minute, budgets as (period, USD)."""

    scope: str
    name: str
    rpm: int | None = None
    tpm: int | None = None
    budgets: tuple[tuple[str, float], ...] = ()

    @property
    def owner(self) -> Owner:
        return (self.scope, self.name)


@dataclass(frozen=True, slots=True)
class Hold:
    """USD a request in flight holds against its owners' budgets until it settles."""

    usd: float
    owners: tuple[Owner, ...]
    member: str  # its unique id where it is kept
    shared: bool  # held in Redis (else in this process: admitted while Redis was away)


@dataclass(frozen=True, slots=True)
class Charge:
    """What a finished request cost, charged to its key and team."""

    owners: tuple[Owner, ...]
    at: float
    usd: float
    tokens: int


@dataclass(frozen=True, slots=True)
class RateRefusal:
    limits: Limits
    kind: str  # "requests" or "tokens": the limit reached
    requests: float  # used in the last minute
    tokens: float
    wait: float  # seconds until there is room again


@dataclass(frozen=True, slots=True)
class BudgetRefusal:
    limits: Limits
    period: str
    usd: float  # the budget
    spent: float
    held: float  # by the owner's requests in flight


class LiveState(Protocol):
    backend: str
    parking: Parking

    async def track(self, counters: set[Counter], now: float, rebuild: Rebuild) -> None: ...

    async def admit(self, owners: Sequence[Limits], now: float, estimate: float,
                    hold_ttl: float) -> Hold | RateRefusal | BudgetRefusal | None: ...

    async def settle(self, hold: Hold | None, charge: Charge | None) -> None: ...

    async def park(self, provider: str, key: str, seconds: float, why: str) -> None: ...

    def spent(self, counter: Counter, now: float) -> float: ...

    def rate_used(self, scope: str, name: str, now: float) -> tuple[float, float]: ...

    def health(self) -> dict[str, Any]: ...

    def metrics(self) -> dict[str, float]: ...

    async def open(self, current: Callable[[], Config]) -> None: ...

    async def close(self) -> None: ...


def open_state(config: Config) -> LiveState:
    """Redis-backed state when ``state.redis_url`` is set, else this process's own."""
    if config.state.redis_url:
        from finopsd.state.redis import RedisState

        return RedisState(config.state.redis_url)
    from finopsd.state.local import LocalState

    return LocalState()


async def run_state(app: web.Application) -> AsyncIterator[None]:
    """Connect (Redis: never blocks startup; an unreachable one starts on local counters)."""
    from finopsd.appkeys import RUNTIME, STATE

    state, runtime = app[STATE], app[RUNTIME]
    await state.open(lambda: runtime.effective)
    try:
        yield
    finally:
        await state.close()
