"""Live state in this process: what one ``finopsd serve`` keeps, and Redis's fallback.

Nothing here awaits between a check and the update that follows it, so on one event
loop an admission cannot interleave with another's.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from finopsd.spend import Counter, Ledger, SlidingWindow
from finopsd.state import BudgetRefusal, Charge, Hold, Limits, Owner, RateRefusal, Rebuild
from finopsd.state.parking import Parking

if TYPE_CHECKING:
    from finopsd.config import Config

__all__ = ["LocalState", "Meter"]


class Meter:
    __slots__ = ("requests", "tokens")

    def __init__(self) -> None:
        self.requests = SlidingWindow()
        self.tokens = SlidingWindow()


class LocalState:
    """Spend per budget window (``Ledger``), a minute's requests and tokens per owner, holds."""

    backend = "local"

    def __init__(self) -> None:
        self.ledger = Ledger()
        self.meters: dict[Owner, Meter] = {}
        # owner → [USD held by its requests in flight, how many]
        self.reserved: dict[Owner, list[float]] = {}
        self.parking = Parking()
        self._ids = itertools.count()

    def meter(self, owner: Owner) -> Meter:
        meter = self.meters.get(owner)
        if meter is None:
            meter = self.meters[owner] = Meter()
        return meter

    # ---------------------------------------------------------------- counters in force

    async def track(self, counters: set[Counter], now: float, rebuild: Rebuild) -> None:
        """Keep the spend of counters still in force, drop the others, sum new ones from the log."""
        for counter in self.ledger.tracked - counters:
            self.ledger.drop(counter)
        for counter, (start, usd) in (await rebuild(counters - self.ledger.tracked, now)).items():
            self.ledger.install(counter, start, usd)

    # ---------------------------------------------------------------- admit and settle

    def check(self, owners: Sequence[Limits], now: float) -> RateRefusal | BudgetRefusal | None:
        """The first limit an owner reached: rate limits of every owner first, then budgets."""
        for o in owners:
            if o.rpm is None and o.tpm is None:
                continue
            meter = self.meter(o.owner)
            requests, tokens = meter.requests.used(now), meter.tokens.used(now)
            if o.rpm is not None and requests >= o.rpm:
                return RateRefusal(o, "requests", requests, tokens, meter.requests.wait(now, o.rpm))
            if o.tpm is not None and tokens >= o.tpm:
                return RateRefusal(o, "tokens", requests, tokens, meter.tokens.wait(now, o.tpm))
        for o in owners:
            held = self.reserved.get(o.owner, (0.0, 0))[0]
            for period, usd in o.budgets:
                spent = self.ledger.spent((o.scope, o.name, period), now)
                if spent + held >= usd:
                    return BudgetRefusal(o, period, usd, spent, held)
        return None

    def count(self, owners: Sequence[Limits], now: float) -> None:
        """An admitted request counts in its owners' minute from now."""
        for o in owners:
            self.meter(o.owner).requests.add(now, 1)

    def hold(self, owners: Sequence[Limits], usd: float) -> Hold | None:
        holders = tuple(o.owner for o in owners if o.budgets)
        if usd <= 0 or not holders:
            return None
        for owner in holders:
            held = self.reserved.setdefault(owner, [0.0, 0])
            held[0] += usd
            held[1] += 1
        return Hold(usd, holders, f"local:{next(self._ids)}", shared=False)

    async def admit(self, owners: Sequence[Limits], now: float, estimate: float,
                    hold_ttl: float) -> Hold | RateRefusal | BudgetRefusal | None:
        refusal = self.check(owners, now)
        if refusal is not None:
            return refusal
        self.count(owners, now)
        return self.hold(owners, estimate)  # a process that dies takes its holds along: no TTL

    def release(self, hold: Hold) -> None:
        for owner in hold.owners:
            held = self.reserved.get(owner)
            if held is None:
                continue
            held[0] -= hold.usd
            held[1] -= 1
            if held[1] <= 0:
                del self.reserved[owner]  # and with it any float drift

    def charge(self, charge: Charge) -> None:
        for scope, name in charge.owners:
            self.ledger.charge(scope, name, charge.at, charge.usd)
            self.meter((scope, name)).tokens.add(charge.at, charge.tokens)

    async def settle(self, hold: Hold | None, charge: Charge | None) -> None:
        if hold is not None:
            self.release(hold)
        if charge is not None:
            self.charge(charge)

    async def park(self, provider: str, key: str, seconds: float, why: str) -> None:
        self.parking.put(provider, key, seconds, why)

    # ---------------------------------------------------------------- views

    def spent(self, counter: Counter, now: float) -> float:
        return self.ledger.spent(counter, now)

    def rate_used(self, scope: str, name: str, now: float) -> tuple[float, float]:
        meter = self.meters.get((scope, name))
        return (meter.requests.used(now), meter.tokens.used(now)) if meter else (0.0, 0.0)

    def health(self) -> dict[str, Any]:
        return {"backend": self.backend, "ok": True}

    def metrics(self) -> dict[str, float]:
        return {}

    async def open(self, current: Callable[[], Config]) -> None:
        return None

    async def close(self) -> None:
        return None
