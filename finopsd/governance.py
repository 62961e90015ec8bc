"""Governance: who is calling, which models they may use, rate limits and USD budgets.

The hook sits second in ``Runtime.hooks``, behind the logging hook, so every
refusal is still logged. ``pre`` admits or refuses, in this order:

    401  no key, an unknown key (when ``auth.required``), an expired or disabled key
    403  the key's ``models`` globs match neither the model as the client wrote it nor
         the provider/model it resolves to (request ``fallbacks`` are checked too)
    429  the key's or its team's requests or tokens in the last 60 s reached the limit
    402  a budget of the key or its team is spent in its current calendar window (UTC)

``post`` prices what the exchange used (the upstream's usage, else an estimate from
the transcript flagged ``estimated``), writes ``cost_usd``/``cost_flags`` on the
exchange for its log row (and ``cost_without_cache_usd``, the same tokens priced as if
nothing were cached), and charges the key and its team. ``pre`` also hands the key's
and team's ``caching`` settings to the exchange (automatic prompt caching).

Keys are looked up by their SHA-256 digest in a dict (one lookup, however many keys:
the file's and the dashboard's, ``Runtime.effective``); the presented key is hashed
first, so the lookup's timing says nothing about the secret, and the plaintext presented
is never stored or logged.

Budgets are checked before a request and charged after it, when its usage is
known. An admitted request reserves what it may cost: its prompt (about 4
characters a token) plus its output limit (``max_completion_tokens``,
``max_tokens`` or ``max_output_tokens``; ``DEFAULT_OUTPUT_TOKENS`` when it names
none), times ``n``, at the price of the dearest model it may reach (fallbacks
included). A request is admitted only while spend plus reservations is below the
budget, and its reservation is released when it ends, whatever happened, as its
real cost is charged. So the overshoot is at most the estimate of the last request
admitted, plus what requests cost beyond their estimates (a prompt that tokenizes
denser than 4 characters a token, or an upstream that ignores the output limit).

The counters (rate windows, spend per budget window, holds) live in ``finopsd.state``:
in this process, or shared by every instance through Redis, where each admission and each
charge is one atomic step (so the bound above holds across instances, with "the last
request admitted" read as "the requests in flight on all of them").

Spend is rebuilt from the request log at startup. A new config (SIGHUP) is applied
on the next request: counters that still exist keep their spend, counters for new
budgets are rebuilt from the log, and charges wait while that happens so none is
counted twice or lost.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import hmac
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

from aiohttp import web

from finopsd.appkeys import GOVERNANCE, LOGSTORE
from finopsd.errors import GatewayError
from finopsd.exchange import Exchange
from finopsd.pricing import Pricer, cache_reads, cache_writes
from finopsd.router import NATIVE_NAMES, permits, plan, resolve_model
from finopsd.spend import Counter, estimate_usage, iso, usd_text, window_end, window_start
from finopsd.state import BudgetRefusal, Charge, Limits, LiveState, RateRefusal
from finopsd.state.local import LocalState

if TYPE_CHECKING:
    from finopsd.config import Budget, Config, RateLimit, VirtualKey
    from finopsd.runtime import Runtime

__all__ = ["PRESENTED_KEY", "Governance", "find_key", "index_keys", "new_virtual_key", "offline_report", "open_governance",
           "presented_key"]

log = logging.getLogger(__name__)

KEY_HEADERS: Final = ("x-api-key", "api-key", "x-goog-api-key")  # besides Authorization: Bearer
# a key a dialect route found outside the headers (the Gemini API's ``?key=``): it wins
PRESENTED_KEY: web.RequestKey[str] = web.RequestKey("presented_key", str)
DEFAULT_OUTPUT_TOKENS: Final = 4096  # reserved for a request that names no output limit
OUTPUT_LIMITS: Final = ("max_completion_tokens", "max_tokens", "max_output_tokens")
MAX_CHOICES: Final = 128
WWW_AUTHENTICATE: Final = {"WWW-Authenticate": 'Bearer realm="finopsd"'}


class SpendSource(Protocol):
    """What governance reads from the request log (``LogStore``)."""

    async def flush(self) -> None: ...

    async def spend_since(self, since_ts: float) -> list[tuple[str | None, str | None, float, float]]: ...


# --- keys ------------------------------------------------------------------------------


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key from ``Authorization: Bearer``, ``x-api-key``, ``api-key`` or ``x-goog-api-key``, first found."""
    scheme, _, value = headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    for name in KEY_HEADERS:
        value = headers.get(name, "").strip()
        if value:
            return value
    return None


def index_keys(keys: Iterable[VirtualKey]) -> dict[str, VirtualKey]:
    """Digest → key, with a rotated key's old digest while its grace period lasts."""
    index = {k.previous_sha256: k for k in keys if k.previous_sha256}
    index.update((k.key_sha256, k) for k in keys)
    return index


def find_key(index: Mapping[str, VirtualKey], presented: str, now: float) -> VirtualKey | None:
    digest = hashlib.sha256(presented.encode()).hexdigest()
    key = index.get(digest)
    if key is None or hmac.compare_digest(key.key_sha256, digest):
        return key
    return key if key.previous_until is not None and now < key.previous_until else None  # grace over


def may_use(key: VirtualKey, names: Iterable[str]) -> bool:
    return key.models is None or any(fnmatch.fnmatchcase(n, p) for n in names for p in key.models)


def _refuse(status: int, type_: str, code: str, message: str, headers: dict[str, str] | None = None) -> GatewayError:
    return GatewayError(message, status=status, type=type_, code=code, headers=headers)


def limits(scope: str, name: str, rate: RateLimit, budgets: Iterable[Budget]) -> Limits:
    return Limits(scope, name, rate.requests_per_minute, rate.tokens_per_minute,
                  tuple((b.period, b.usd) for b in budgets))


HOLD_GRACE_S: Final = 60.0


def hold_ttl(config: Config) -> float:
    """How long a request's hold may outlive it in shared state (a process killed with -9 never
    releases it): the longest any one upstream call may take (``timeouts.total``), plus a grace."""
    return max((p.timeouts.total for p in config.providers.values()), default=900.0) + HOLD_GRACE_S


# --- the hook --------------------------------------------------------------------------


class Governance:
    """The governance hook; its counters (spend per budget window, rate windows, holds) live in ``state``."""

    def __init__(self, config: Config, runtime: Runtime | None = None, clock: Callable[[], float] = time.time,
                 state: LiveState | None = None) -> None:
        self.runtime = runtime  # when set, its config (swapped on SIGHUP) is the one in force
        self.config = config
        self.by_digest = index_keys(config.virtual_keys)
        self.clock = clock
        self.pricer = Pricer(config.pricing, config.providers)
        self.state: LiveState = state or LocalState()
        self.hold_ttl = hold_ttl(config)
        self.store: SpendSource | None = None
        self._lock = asyncio.Lock()  # held while counters are rebuilt; charges wait for it

    # ---------------------------------------------------------------- config and counters

    @staticmethod
    def counters_for(config: Config) -> set[Counter]:
        counters: set[Counter] = set()
        for key in config.virtual_keys:
            counters.update(("key", key.name, b.period) for b in key.budgets)
        for team in config.teams.values():
            counters.update(("team", team.name, b.period) for b in team.budgets)
        return counters

    async def start(self, store: SpendSource | None) -> None:
        """Rebuild every budget counter from the log (at startup, before serving)."""
        self.store = store
        async with self._lock:
            await self.state.track(self.counters_for(self.config), self.clock(), self._sums)

    async def sync(self) -> None:
        """Apply the runtime's config if it changed (SIGHUP), keeping the spend of every counter still in use."""
        if self.runtime is None or self.runtime.effective is self.config:
            return
        async with self._lock:
            config = self.runtime.effective
            if config is self.config:
                return  # another request applied it while this one waited
            if (config.pricing, config.providers) != (self.config.pricing, self.config.providers):
                self.pricer = Pricer(config.pricing, config.providers)
            await self.state.track(self.counters_for(config), self.clock(), self._sums)
            # only now: until the new counters hold their spend, requests wait at the lock above
            self.config, self.by_digest, self.hold_ttl = config, index_keys(config.virtual_keys), hold_ttl(config)
            log.info("governance: %d keys, %d teams in force", len(config.virtual_keys), len(config.teams))

    async def _sums(self, counters: set[Counter], now: float) -> dict[Counter, tuple[float, float]]:
        """Each counter's window start and the log's spend in it (at start and SIGHUP the caller holds
        the lock, so no charge of this process races it; the state calls it too when Redis lost counters)."""
        if not counters:
            return {}
        starts = {c: window_start(c[2], now) for c in counters}
        sums = dict.fromkeys(counters, 0.0)
        if self.store is not None:
            await self.store.flush()  # every row charged so far is in the table
            by_owner: dict[tuple[str, str], list[Counter]] = {}
            for c in counters:
                by_owner.setdefault((c[0], c[1]), []).append(c)
            for key_name, team, ts, usd in await self.store.spend_since(min(starts.values())):
                for owner in (("key", key_name), ("team", team)):
                    for c in by_owner.get(owner, ()):  # type: ignore[arg-type]
                        if ts >= starts[c]:
                            sums[c] += usd
        return {c: (starts[c], sums[c]) for c in counters}

    def warn_about_config(self) -> None:
        """Startup warning: configured models without a price.

        Budgets longer than logs.retention_days need no warning: spend is rebuilt from the
        daily roll-up (m005), which pruning never touches.
        """
        config = self.config
        pairs = [(n, m) for n, p in config.providers.items() for m in (p.models or ())]
        for name in self.pricer.unpriced(pairs):
            log.warning("no price for %s: its requests cost 0 and are marked unpriced (add it under `pricing:`)",
                        name)

    # ---------------------------------------------------------------- pre

    def identify(self, headers: Mapping[str, str],
                 presented: str | None = None) -> tuple[str | None, VirtualKey | None]:
        """The key presented (``presented``, else from the headers), and the configured key it is (or None)."""
        presented = presented or presented_key(headers)
        return presented, find_key(self.by_digest, presented, self.clock()) if presented else None

    def admit_key(self, presented: str | None, key: VirtualKey | None, now: float) -> VirtualKey | None:
        """The caller's key; None for an anonymous caller (only when auth is optional); else 401."""
        if key is None:
            if not self.config.auth_required:
                return None  # unknown keys are anonymous too: they get no key's limits
            if presented is None:
                raise _refuse(401, "authentication_error", "missing_api_key",
                              "missing API key: send your virtual key as Authorization: Bearer <key>"
                              " (or in x-api-key or api-key)", dict(WWW_AUTHENTICATE))
            raise _refuse(401, "authentication_error", "invalid_api_key", "invalid API key",
                          dict(WWW_AUTHENTICATE))
        if not key.enabled:
            raise _refuse(401, "authentication_error", "key_disabled", f"API key {key.name!r} is disabled",
                          dict(WWW_AUTHENTICATE))
        if key.expires is not None and now >= key.expires:
            raise _refuse(401, "authentication_error", "key_expired",
                          f"API key {key.name!r} expired at {iso(key.expires)}", dict(WWW_AUTHENTICATE))
        return key

    def _check_models(self, key: VirtualKey, ex: Exchange) -> None:
        """403 unless the model and every request fallback pass the key's globs; the router
        leaves out config fallbacks they do not pass (``ex.allowed_models``)."""
        ex.allowed_models = key.models
        if key.models is None or ex.model is None:
            return
        names = [ex.model]
        fallbacks = (ex.request or {}).get("fallbacks") if ex.route not in NATIVE_NAMES else None
        if isinstance(fallbacks, list):
            names += [f for f in fallbacks if isinstance(f, str)]
        for name in names:
            if ex.route in NATIVE_NAMES and name == ex.model:
                # Claude Code's and Gemini CLI's names, mapped as their routes map them
                self.check_model(key, name, resolve_model(self.config, name, ex.route))
            else:
                self.check_model(key, name)

    def check_model(self, key: VirtualKey | None, name: str, resolved: str | None = None) -> None:
        """403 unless ``name`` as written, or the provider/model it resolves to, passes the key's globs
        (``resolved``: where the route sends a name the router cannot split, Claude Code's or Gemini CLI's)."""
        if key is None or key.models is None:
            return
        if not may_use(key, (name,)) and not permits(key.models, self.config, resolved or name):
            raise _refuse(403, "permission_error", "model_not_allowed",
                          f"key {key.name!r} may not use model {name!r}; it may use: {', '.join(key.models)}")

    @staticmethod
    def _rate_error(r: RateRefusal) -> GatewayError:
        o = r.limits
        if r.kind == "requests":
            what = f"{o.rpm} requests per minute"
        else:
            what = f"{o.tpm} tokens per minute (used {int(r.tokens)})"
        retry = max(1, math.ceil(r.wait))
        headers = {"Retry-After": str(retry)}
        if o.rpm is not None:
            headers["x-ratelimit-limit-requests"] = str(o.rpm)
            headers["x-ratelimit-remaining-requests"] = str(max(o.rpm - int(r.requests), 0))
        if o.tpm is not None:
            headers["x-ratelimit-limit-tokens"] = str(o.tpm)
            headers["x-ratelimit-remaining-tokens"] = str(max(o.tpm - int(r.tokens), 0))
        return _refuse(429, "rate_limit_error", "rate_limit_exceeded",
                       f"rate limit reached for {o.scope} {o.name!r}: {what}; retry in {retry} s", headers)

    @staticmethod
    def _budget_error(r: BudgetRefusal, now: float) -> GatewayError:
        o = r.limits
        end = window_end(r.period, window_start(r.period, now))
        resets = f"it resets at {iso(end)}" if end is not None else "a total budget does not reset"
        held = f" and requests in flight hold {usd_text(r.held)}" if r.held else ""
        return _refuse(402, "insufficient_quota", "budget_exceeded",
                       f"budget exceeded: {o.scope} {o.name!r} has spent {usd_text(r.spent)}{held} of its"
                       f" {usd_text(r.usd)} {r.period} budget; {resets}")

    def estimate_cost(self, ex: Exchange) -> float:
        """The most ``ex`` may cost (see the module doc); 0 when no model it may reach is priced."""
        req = ex.request or {}
        limits = (req.get(f) for f in OUTPUT_LIMITS)
        output = next((v for v in limits if isinstance(v, int) and not isinstance(v, bool) and v > 0),
                      DEFAULT_OUTPUT_TOKENS)
        n = req.get("n")
        choices = min(n, MAX_CHOICES) if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
        prompt = estimate_usage(req, (), (), ())["prompt_tokens"]
        usage = {"prompt_tokens": prompt, "completion_tokens": output * choices}
        model = ex.model or ""
        fallbacks = req.get("fallbacks") if ex.route != "messages" else None
        try:
            targets = plan(self.config, resolve_model(self.config, model) if ex.route == "messages" else model,
                           [f for f in fallbacks if isinstance(f, str)] if isinstance(fallbacks, list) else None)
        except GatewayError:
            return 0.0  # a model no provider serves: the router refuses it
        return max(self.pricer.price(p.name, m, usage)[0] for p, m in targets)

    async def pre(self, ex: Exchange, request: web.Request) -> None:
        await self.sync()
        now = self.clock()
        presented, key = self.identify(request.headers, request.get(PRESENTED_KEY))
        if key is not None:  # named on the log row, also when refused below
            ex.key_name, ex.team = key.name, key.team
        key = self.admit_key(presented, key, now)
        if key is None:
            return
        self._check_models(key, ex)
        team = self.config.teams.get(key.team) if key.team else None
        ex.caching = (key.caching,) if team is None else (key.caching, team.caching)
        owners = [limits("key", key.name, key.rate_limit, key.budgets)]
        if team is not None:
            owners.append(limits("team", team.name, team.rate_limit, team.budgets))
        # what it may cost, held against the budgets while it runs (an MCP tool call costs nothing)
        estimate = self.estimate_cost(ex) if ex.route != "mcp" and any(o.budgets for o in owners) else 0.0
        verdict = await self.state.admit(owners, now, estimate, self.hold_ttl)
        if isinstance(verdict, RateRefusal):
            raise self._rate_error(verdict)
        if isinstance(verdict, BudgetRefusal):
            raise self._budget_error(verdict, now)
        ex.reservation = verdict

    # ---------------------------------------------------------------- post

    async def post(self, ex: Exchange) -> None:
        hold, ex.reservation = ex.reservation, None
        # released as the real cost, if any, is charged: one step
        await self.state.settle(hold, await self._charge(ex))

    async def _charge(self, ex: Exchange) -> Charge | None:
        """Price what ``ex`` used (its log row shows it) and what to charge its key and team."""
        if ex.provider is None or ex.route == "mcp":
            return None  # refused before routing, or an MCP tool call: no tokens to price
        usage = ex.transcript.usage if isinstance(ex.transcript.usage, dict) else None
        flags: set[str] = set()
        if usage is None:
            if ex.ttft_ms is None and ex.status != "client_closed":
                return None  # the upstream failed before answering: nothing was generated
            t = ex.transcript
            usage = estimate_usage(ex.request, t.content, t.reasoning, [c.as_dict() for c in t.tool_calls])
            ex.transcript.usage = usage  # the log row shows the estimate, flagged below
            flags.add("estimated")
        cost, price_flags = self.pricer.price(ex.provider, ex.upstream_model or "", usage, at=ex.started)
        ex.cost_usd = cost
        ex.cost_without_cache_usd = (
            self.pricer.cost_without_cache(ex.provider, ex.upstream_model or "", usage, at=ex.started)
            if cache_reads(usage) or cache_writes(usage) else cost)
        ex.cost_flags = ",".join(sorted(flags | price_flags)) or None
        if ex.key_name is None and ex.team is None:
            return None
        if self._lock.locked():
            async with self._lock:  # counters are being rebuilt from the log: charge after
                pass
        tokens = usage.get("total_tokens")
        if not isinstance(tokens, int):
            tokens = int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
        owners = tuple((scope, name) for scope, name in (("key", ex.key_name), ("team", ex.team)) if name is not None)
        return Charge(owners, self.clock(), cost, tokens)

    # ---------------------------------------------------------------- views

    async def caller(self, headers: Mapping[str, str], presented: str | None = None) -> VirtualKey | None:
        """The admitted caller's key (None: anonymous, only when auth is optional); else 401."""
        await self.sync()
        return self.admit_key(*self.identify(headers, presented), self.clock())

    @staticmethod
    def visible_models(key: VirtualKey | None, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The (provider, model) pairs the key may use (all of them for an anonymous caller)."""
        return pairs if key is None else [(p, m) for p, m in pairs if may_use(key, (f"{p}/{m}",))]

    def _budget_views(self, scope: str, name: str, budgets: Iterable[Budget], now: float) -> list[dict[str, Any]]:
        views = []
        for b in budgets:
            spent = self.state.spent((scope, name, b.period), now)
            views.append({
                "period": b.period, "usd": b.usd, "spent_usd": round(spent, 6),
                "percent": round(100 * spent / b.usd, 1) if b.usd else (100.0 if spent else 0.0),
                "resets_at": iso(window_end(b.period, window_start(b.period, now))),
            })  # fmt: skip
        return views

    def _rate_view(self, scope: str, name: str, limit: RateLimit, now: float) -> dict[str, Any]:
        requests, tokens = self.state.rate_used(scope, name, now)
        return {
            "requests_per_minute": limit.requests_per_minute,
            "tokens_per_minute": limit.tokens_per_minute,
            "requests_last_minute": int(requests),
            "tokens_last_minute": int(tokens),
        }

    def report(self) -> dict[str, Any]:
        """Keys and teams with spend per budget, % used, reset time and current rate (``/api/keys``)."""
        now, config = self.clock(), self.config
        keys = []
        for key in config.virtual_keys:
            status = "disabled" if not key.enabled else (
                "expired" if key.expires is not None and now >= key.expires else "active")
            keys.append({
                "name": key.name, "team": key.team, "status": status, "expires": iso(key.expires),
                "models": list(key.models) if key.models is not None else None,
                "budgets": self._budget_views("key", key.name, key.budgets, now),
                "rate": self._rate_view("key", key.name, key.rate_limit, now),
            })  # fmt: skip
        teams = [
            {
                "name": team.name,
                "keys": [k.name for k in config.virtual_keys if k.team == team.name],
                "budgets": self._budget_views("team", team.name, team.budgets, now),
                "rate": self._rate_view("team", team.name, team.rate_limit, now),
            }
            for team in config.teams.values()
        ]
        return {"time": iso(now), "auth_required": config.auth_required, "keys": keys, "teams": teams}


KEY_PREFIX: Final = "sk-fo-"


def new_virtual_key() -> tuple[str, str]:
    """A fresh key (256 random bits) and its SHA-256 digest, the only form the config keeps."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hashlib.sha256(key.encode()).hexdigest()


class LogReader(SpendSource, Protocol):
    async def search(self, **kw: Any) -> dict[str, Any]: ...


async def offline_report(config: Config, store: LogReader | None) -> dict[str, Any]:
    """``report()`` for a process that serves nothing (``finopsd keys list``): spend and the
    last minute's requests and tokens come from the log."""
    gov = Governance(config)
    await gov.start(store)
    report = gov.report()
    if store is None:
        return report
    since = gov.clock() - 60
    for item, scope in [(k, "key") for k in report["keys"]] + [(t, "team") for t in report["teams"]]:
        totals = (await store.search(**{scope: item["name"]}, since=since, limit=1))["totals"]
        item["rate"]["requests_last_minute"] = int(totals["requests"])
        item["rate"]["tokens_last_minute"] = int(totals["prompt_tokens"] + totals["completion_tokens"])
    return report




async def open_governance(app: web.Application) -> AsyncIterator[None]:
    """Rebuild spend from the request log before serving (after the log store opened)."""
    gov = app[GOVERNANCE]
    await gov.start(app[LOGSTORE])
    gov.warn_about_config()
    yield
