"""Live state shared by every instance through Redis (``state.redis_url``).

Each admission is one script run (every rate window and budget of the key and its team
checked, the request counted and its hold added, atomically), and so is each settlement
(hold released, cost and tokens charged): one round trip each. The scripts are in
``lua.py``; times are the instances' own clocks (keep them in NTP sync).

- **Holds expire**: a request's hold is scored by ``now + hold_ttl`` (the longest upstream
  ``timeouts.total`` plus a minute), so an instance killed with -9 frees the budget it held
  once its requests could no longer be running.
- **Missing counters** (first start, a new window, a Redis that restarted empty) are summed
  from the request log (``Governance._sums``) and set only where still missing (SET NX), so
  instances that rebuild at once agree; the charge that found one missing is added after.
- **Redis away** (refused, reset, or slower than ``OP_TIMEOUT_S``): this instance falls back
  to its ``LocalState``, which mirrors what it last saw in Redis (spend per counter, its own
  last minute of requests and tokens), says so (/healthz, /metrics, one log line), and
  probes every ``WATCH_S``. Back: if it is the same Redis (same ``run_id``), the spend this
  instance charged meanwhile is added to it; a restarted Redis has lost every counter, which
  are rebuilt from the log (that holds those charges too).
- The views this process serves (/api/keys, /metrics, alerts, parked keys for the router)
  are refreshed from Redis every ``WATCH_S``, and at once by this instance's own requests.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import quote

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from finopsd.config import redact_text, redact_url
from finopsd.spend import Counter, iso, window_end, window_start
from finopsd.state import BudgetRefusal, Charge, Hold, Limits, Owner, RateRefusal, Rebuild
from finopsd.state import lua
from finopsd.state.local import LocalState

if TYPE_CHECKING:
    from finopsd.config import Config

__all__ = ["RedisState"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S: Final = 0.25  # loopback or LAN: Redis answers in well under a millisecond
OP_TIMEOUT_S: Final = 0.25  # what a request waits on Redis at most, once, before the fallback
WATCH_S: Final = 1.0
MAX_CONNECTIONS: Final = 64  # requests queue for one beyond that (within OP_TIMEOUT_S)
TOTAL_TTL_S: Final = 30 * 86400  # a total budget's counter, renewed by each charge
MAX_VIEW_OWNERS: Final = 1000  # rate-limited keys and teams whose minute the views refresh
PREFIX: Final = "finops:"
Spec = dict[str, Any]
T = TypeVar("T")


async def to_the_end(aw: Awaitable[T]) -> tuple[T, bool]:
    """``aw``'s result, awaited to its end even if the caller is cancelled meanwhile, and whether it was.

    aiohttp cancels a handler whose client hung up, which may come while a hook waits on Redis
    (a client that read its last byte and left, during the post-hooks): an admission or a charge
    cut half-way would lose a hold or a charge. The cancellation is absorbed here and passed on by
    the caller where it should be. Bounded: each round trip is (``OP_TIMEOUT_S``).
    """
    task = asyncio.ensure_future(aw)
    cancelled = False
    while True:
        try:
            return await asyncio.shield(task), cancelled
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            cancelled = True
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()


def _part(name: str) -> str:
    return quote(name, safe="")  # a name with ':' cannot reach into another key


def spend_key(counter: Counter, start: float) -> str:
    scope, name, period = counter
    return f"{PREFIX}spend:{scope}:{_part(name)}:{period}:{int(start)}"


@functools.lru_cache(maxsize=4096)  # the same few owners on every request
def owner_keys(owner: Owner) -> tuple[str, ...]:
    """Requests and tokens of its last minute, and its holds: each a zset and its total."""
    rate, held = f"{PREFIX}rate:{owner[0]}:{_part(owner[1])}", f"{PREFIX}held:{owner[0]}:{_part(owner[1])}"
    return (f"{rate}:req", f"{rate}:req:n", f"{rate}:tok", f"{rate}:tok:n", held, f"{held}:n")


def parked_key(provider: str, key: str) -> str:
    return f"{PREFIX}parked:{_part(provider)}:{_part(key)}"


def spend_ttl(period: str, start: float, now: float) -> int:
    """A window's counter lives an hour past its end (views near the boundary); ``total`` 30 days."""
    end = window_end(period, start)
    return TOTAL_TTL_S if end is None else max(math.ceil(end - now), 0) + 3600


class RedisState:
    """Rate windows, budget counters, holds and parked keys in Redis; ``local`` when it is away."""

    backend = "redis"

    def __init__(self, url: str) -> None:
        self.url = url
        self.local = LocalState()
        self.parking = self.local.parking
        self.redis: aioredis.Redis | None = None
        self.up = False
        self.error: str | None = "not connected yet"
        self.since = time.time()
        self.fallbacks = 0  # times this instance fell back to its own counters
        self.resyncing = False
        self.run_id: str | None = None  # of the Redis seen last: another one has lost every counter
        self.tracked: set[Counter] = set()
        self.periods: dict[Owner, set[str]] = {}
        self.rebuild: Rebuild | None = None
        # (counter, window start) → USD this instance charged while Redis was away
        self.deltas: dict[tuple[Counter, float], float] = {}
        self.rates: dict[Owner, tuple[float, float]] = {}  # the minute's requests and tokens, as last read
        self.metered: set[Owner] = set()  # owners with a token limit: their tokens go to Redis
        self.config: Callable[[], Config] | None = None
        self._ids = itertools.count()
        self._id = secrets.token_hex(4)  # this instance's members differ from another's
        self._restoring = asyncio.Lock()
        self._watch: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- connection

    async def open(self, current: Callable[[], Config]) -> None:
        """Connect and start the watch; an unreachable Redis leaves this instance on local counters.
        ``current``: the config in force, whose keys, teams and provider keys the views show."""
        self.config = current
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url, max_connections=MAX_CONNECTIONS, timeout=OP_TIMEOUT_S, decode_responses=True,
            socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=OP_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),  # a script retried after a lost reply could run twice
        )
        self.redis = aioredis.Redis.from_pool(pool)  # closes the pool with it
        self.scripts = {name: self.redis.register_script(getattr(lua, name))
                        for name in ("ADMIT", "SETTLE", "RESTORE", "LOOK")}
        if await self._connect():
            log.info("state: shared through Redis at %s", redact_url(self.url))
        else:
            log.warning("state: Redis at %s unreachable (%s): limits and budgets use this instance's own "
                        "counters until it answers", redact_url(self.url), self.error)
        self._watch = asyncio.create_task(self._watch_loop(), name="finopsd-state-watch")

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        if self.redis is not None:
            await self.redis.aclose()

    def _text(self, e: BaseException) -> str:
        return redact_text(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__, self.url)

    def _lost(self, e: BaseException) -> None:
        self.error = self._text(e)
        if self.up:
            self.up, self.since = False, time.time()
            self.fallbacks += 1
            log.warning("state: Redis at %s unreachable (%s): falling back to this instance's own counters",
                        redact_url(self.url), self.error)

    async def _connect(self) -> bool:
        """PING and read which Redis this is; True when it answered."""
        assert self.redis is not None
        try:
            async with asyncio.timeout(OP_TIMEOUT_S * 2):
                info = await self.redis.info("server")
        except (RedisError, OSError, TimeoutError) as e:
            self.error = self._text(e)
            return False
        restarted = self.run_id is not None and info.get("run_id") != self.run_id
        self.run_id = info.get("run_id")
        self.up, self.error, self.since = True, None, time.time()
        if restarted:
            self.deltas.clear()  # its counters are gone: the log has these charges, rebuilt below
        return True

    async def _call(self, script: str, keys: list[str], spec: Spec) -> Any:
        """Run a script; None when Redis is away (from then on until the watch sees it back)."""
        if not self.up or self.redis is None:
            return None
        try:
            async with asyncio.timeout(OP_TIMEOUT_S):
                return await self.scripts[script](keys=keys, args=[json.dumps(spec)])
        except (RedisError, OSError, TimeoutError) as e:
            self._lost(e)
            return None

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(WATCH_S)
            try:
                if self.up:
                    await self._look()
                elif await self._connect():
                    self.resyncing = True  # requests use Redis already; /healthz says ok once it is done
                    try:
                        await self._resync()
                    finally:
                        self.resyncing = False
                    if self.up:  # else lost again meanwhile, and said so
                        log.warning("state: Redis at %s answers again: counters re-synced, limits shared again",
                                    redact_url(self.url))
            except Exception:  # the watch must outlive any one surprise
                log.exception("state: watching Redis failed")

    async def _resync(self) -> None:
        """Add what this instance charged while Redis was away, then rebuild what Redis lost."""
        deltas, self.deltas = self.deltas, {}
        now = time.time()
        current = [(c, start, usd) for (c, start), usd in deltas.items() if start == window_start(c[2], now)]
        if current:
            spec = {"now": now, "hold": "", "held": 0, "charged": 0, "event": "", "tokens": 0,
                    "costs": [usd for _, _, usd in current],
                    "ttls": [spend_ttl(c[2], start, now) for c, start, _ in current]}
            if await self._call("SETTLE", [spend_key(c, start) for c, start, _ in current], spec) is None:
                for c, start, usd in current:  # away again: kept for the next time
                    self.deltas[(c, start)] = self.deltas.get((c, start), 0.0) + usd
                return
        await self._restore(self.tracked, now)  # only those missing are set

    # ---------------------------------------------------------------- counters in force

    async def track(self, counters: set[Counter], now: float, rebuild: Rebuild) -> None:
        self.rebuild = rebuild
        for counter in self.local.ledger.tracked - counters:
            self.local.ledger.drop(counter)
        new = counters - self.tracked
        self.tracked = set(counters)
        self.periods = {}
        for scope, name, period in counters:
            self.periods.setdefault((scope, name), set()).add(period)
        await self._restore(new, now)

    async def _restore(self, counters: Iterable[Counter], now: float) -> None:
        """Sum ``counters`` missing in Redis from the log and set them where still missing (NX)."""
        counters = list(counters)
        if not counters or self.rebuild is None:
            return
        async with self._restoring:  # one rebuild at a time: the others then find them set
            keys = {c: spend_key(c, window_start(c[2], now)) for c in counters}
            if self.up:
                seen = await self._look_spend(keys, now)
                counters = [c for c in counters if c not in seen]
                if not counters:
                    return
            sums = await self.rebuild(set(counters), now)
            for c, (start, usd) in sums.items():  # what a fallback starts from, should Redis go now
                self.local.ledger.install(c, start, usd)
            spec = {"values": [repr(sums[c][1]) for c in counters],
                    "ttls": [spend_ttl(c[2], sums[c][0], now) for c in counters]}
            reply = await self._call("RESTORE", [keys[c] for c in counters], spec)
            if reply is not None:
                self._mirror(zip(counters, reply), now)

    async def _look_spend(self, keys: dict[Counter, str], now: float) -> dict[Counter, float]:
        """The counters Redis has, with their spend (mirrored here too)."""
        reply = await self._call("LOOK", list(keys.values()), {"now": now, "counters": len(keys), "owners": 0})
        found = [(c, v) for c, v in zip(keys, reply or ()) if v != ""]
        self._mirror(found, now)
        return {c: float(v) for c, v in found}

    def _mirror(self, values: Iterable[tuple[Counter, str]], now: float) -> None:
        """Keep what Redis said a counter holds. Spend only grows within a window, so the larger
        wins: a look that was under way as a charge landed cannot take the charge back."""
        ledger = self.local.ledger
        for counter, value in values:
            if value not in ("", None):
                known = ledger.spent(counter, now) if counter in ledger.tracked else 0.0
                ledger.install(counter, window_start(counter[2], now), max(known, float(value)))

    # ---------------------------------------------------------------- admit and settle

    async def admit(self, owners: Sequence[Limits], now: float, estimate: float,
                    hold_ttl: float) -> Hold | RateRefusal | BudgetRefusal | None:
        self.metered.update(o.owner for o in owners if o.tpm is not None)
        if all(o.rpm is None and o.tpm is None and not o.budgets for o in owners):
            self.local.count(owners, now)  # nothing to share: no round trip, no task
            return None
        verdict, cancelled = await to_the_end(self._admit(owners, now, estimate, hold_ttl))
        if cancelled:  # the client left meanwhile: what it holds goes, and so does the request
            if isinstance(verdict, Hold):
                await self.settle(verdict, None)  # a local hold if Redis was away
            raise asyncio.CancelledError
        return verdict

    async def _admit(self, owners: Sequence[Limits], now: float, estimate: float,
                     hold_ttl: float) -> Hold | RateRefusal | BudgetRefusal | None:
        member = f"{self._id}:{next(self._ids)}"
        keys: list[str] = []
        counters: list[Counter] = []
        at: dict[int, Counter] = {}  # a spend counter's place in KEYS (from 1, as Lua counts)
        for o in owners:
            keys += owner_keys(o.owner)
            for period, _ in o.budgets:
                counters.append((o.scope, o.name, period))
                keys.append(spend_key(counters[-1], window_start(period, now)))
                at[len(keys)] = counters[-1]
        spec = {"now": now, "usd": estimate, "ttl": hold_ttl, "hold": f"{member}|{estimate!r}", "event": member,
                "owners": [{"rpm": -1 if o.rpm is None else o.rpm, "tpm": -1 if o.tpm is None else o.tpm,
                            "limits": [usd for _, usd in o.budgets]} for o in owners]}
        for _ in range(2):  # again once the counters Redis lacked are rebuilt
            reply = await self._call("ADMIT", keys, spec)
            if reply is None:
                break
            if reply[0] == "missing":
                await self._restore([at[int(i)] for i in reply[1:]], now)
                continue
            return self._verdict(reply, owners, counters, now, estimate, member)
        return await self.local.admit(owners, now, estimate, hold_ttl)  # Redis away: this instance decides

    def _verdict(self, reply: list[Any], owners: Sequence[Limits], counters: list[Counter], now: float,
                 estimate: float, member: str) -> Hold | RateRefusal | BudgetRefusal | None:
        kind = reply[0]
        if kind == "rate":
            return RateRefusal(owners[int(reply[1]) - 1], reply[2], float(reply[3]), float(reply[4]), float(reply[5]))
        if kind == "budget":
            o = owners[int(reply[1]) - 1]
            period, usd = o.budgets[int(reply[2]) - 1]
            return BudgetRefusal(o, period, usd, float(reply[3]), float(reply[4]))
        values = iter(reply[1:])
        spent = []
        for o in owners:
            next(values)  # its holds
            spent += [next(values) for _ in o.budgets]
        self._mirror(zip(counters, spent), now)
        self.local.count(owners, now)  # this instance's own minute, for a fallback
        holders = tuple(o.owner for o in owners if o.budgets)
        if estimate <= 0 or not holders:
            return None
        return Hold(estimate, holders, f"{member}|{estimate!r}", shared=True)

    def _charged(self, charge: Charge) -> list[tuple[Counter, float]]:
        return [((scope, name, period), window_start(period, charge.at))
                for scope, name in charge.owners for period in sorted(self.periods.get((scope, name), ()))]

    async def settle(self, hold: Hold | None, charge: Charge | None) -> None:
        if hold is not None and not hold.shared:
            self.local.release(hold)  # admitted while Redis was away
            hold = None
        if hold is None and charge is None:
            return
        counters = self._charged(charge) if charge is not None else []
        if hold is None and not counters and charge is not None and not self.metered.intersection(charge.owners):
            self.local.charge(charge)  # no budget, no token limit: nothing to share
            return
        await to_the_end(self._settle(hold, charge, counters))  # a client leaving now takes nothing off the books

    async def _settle(self, hold: Hold | None, charge: Charge | None,
                      counters: list[tuple[Counter, float]]) -> None:
        """One round trip: ``hold`` (shared) released, ``charge`` added to ``counters``."""
        keys = [k for owner in (hold.owners if hold else ()) for k in owner_keys(owner)[4:]]
        keys += [k for owner in (charge.owners if charge else ()) for k in owner_keys(owner)[2:4]]
        keys += [spend_key(c, start) for c, start in counters]
        now = charge.at if charge is not None else time.time()
        spec = {"now": now, "hold": hold.member if hold else "", "held": len(hold.owners) if hold else 0,
                "charged": len(charge.owners) if charge else 0, "event": f"{self._id}:{next(self._ids)}|"
                f"{charge.tokens if charge else 0}", "tokens": charge.tokens if charge else 0,
                "costs": [charge.usd if charge else 0.0] * len(counters),
                "ttls": [spend_ttl(c[2], start, now) for c, start in counters]}
        reply = await self._call("SETTLE", keys, spec)
        if charge is None:
            return  # a shared hold that could not be released expires by itself
        if reply is None:
            self.local.charge(charge)  # Redis away: charged here, added to Redis when it is back
            for c, start in counters:
                self.deltas[(c, start)] = self.deltas.get((c, start), 0.0) + charge.usd
            return
        for scope, name in charge.owners:
            self.local.meter((scope, name)).tokens.add(charge.at, charge.tokens)
        self._mirror(((c, v) for (c, _), v in zip(counters, reply)), now)
        missing = [(c, start) for (c, start), v in zip(counters, reply) if v == ""]
        if missing:  # rebuilt from the log (which does not hold this request yet), then charged
            await self._restore([c for c, _ in missing], now)
            spec.update(hold="", held=0, charged=0, tokens=0, costs=[charge.usd] * len(missing),
                        ttls=[spend_ttl(c[2], start, now) for c, start in missing])
            reply = await self._call("SETTLE", [spend_key(c, start) for c, start in missing], spec)
            self._mirror(zip([c for c, _ in missing], reply or ()), now)

    async def park(self, provider: str, key: str, seconds: float, why: str) -> None:
        self.parking.put(provider, key, seconds, why)
        if not self.up or self.redis is None:
            return
        try:
            async with asyncio.timeout(OP_TIMEOUT_S):
                await self.redis.set(parked_key(provider, key), why[:200], px=max(1, int(seconds * 1000)))
        except (RedisError, OSError, TimeoutError) as e:
            self._lost(e)

    # ---------------------------------------------------------------- views

    async def _look(self) -> None:
        """Refresh the views: spend of the counters in force, every owner's minute, parked keys."""
        now = time.time()
        config = self.config() if self.config else None
        owners: list[Owner] = []
        pairs: list[tuple[str, str]] = []
        if config is not None:  # the minute of those with a rate limit: the others show this instance's
            limited = [("key", k.name, k.rate_limit) for k in config.virtual_keys]
            limited += [("team", t.name, t.rate_limit) for t in config.teams.values()]
            owners = [(scope, name) for scope, name, r in limited
                      if r.requests_per_minute is not None or r.tokens_per_minute is not None][:MAX_VIEW_OWNERS]
            pairs = [(p.name, k.name) for p in config.providers.values() if len(p.keys) > 1 for k in p.keys]
        counters = sorted(self.tracked)
        keys = [spend_key(c, window_start(c[2], now)) for c in counters]
        keys += [k for owner in owners for k in owner_keys(owner)[:4]]
        keys += [parked_key(p, k) for p, k in pairs]
        reply = await self._call("LOOK", keys, {"now": now, "counters": len(counters), "owners": len(owners)})
        if reply is None:
            return
        self._mirror(zip(counters, reply), now)
        missing = [c for c, v in zip(counters, reply) if v == ""]
        rest = reply[len(counters):]
        self.rates = {owner: (float(rest[2 * i]), float(rest[2 * i + 1])) for i, owner in enumerate(owners)}
        parked = rest[2 * len(owners):]
        for i, (provider, key) in enumerate(pairs):
            why, ms = parked[2 * i], int(parked[2 * i + 1])
            if why and ms > 0:
                self.parking.parked[(provider, key)] = (self.parking.clock() + ms / 1000, why)
        if missing:
            await self._restore(missing, now)  # a Redis restarted between two looks

    def spent(self, counter: Counter, now: float) -> float:
        return self.local.spent(counter, now)

    def rate_used(self, scope: str, name: str, now: float) -> tuple[float, float]:
        seen = self.rates.get((scope, name)) if self.up else None
        return seen if seen is not None else self.local.rate_used(scope, name, now)

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": self.backend, "ok": self.ok, "url": redact_url(self.url),
                               "since": iso(self.since), "fallbacks": self.fallbacks}
        if not self.ok:
            out["error"] = self.error or "re-syncing"
            out["note"] = "limits and budgets are this instance's own until Redis answers"
        return out

    def metrics(self) -> dict[str, float]:
        return {"redis_up": 1.0 if self.ok else 0.0, "fallbacks": float(self.fallbacks)}

    @property
    def ok(self) -> bool:
        """Redis answers and holds what this instance charged while it was away."""
        return self.up and not self.resyncing
