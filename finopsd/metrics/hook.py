"""The metrics hook: counts each exchange once, in ``post``, with labels bounded by the config.

It sits after the logging hook and before governance in ``Runtime.hooks``, so its ``post``
runs after governance charged the cost. A label value the config does not name (a model
the client made up, a team no longer configured) becomes ``other``: a hostile client
cannot grow the number of series.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from aiohttp import web

from finopsd.exchange import Exchange
from finopsd.log.recorder import token_counts
from finopsd.metrics.families import Families
from finopsd.runtime import Runtime

OTHER: Final = "other"
OUTCOMES: Final = frozenset({"ok", "error", "client_closed"})
TOKEN_KINDS: Final = (("prompt", "prompt_tokens"), ("cached", "cached_tokens"),
                      ("completion", "completion_tokens"), ("reasoning", "reasoning_tokens"))


def bounded(value: str | None, known: frozenset[str]) -> str:
    if value is None:
        return ""
    return value if value in known else OTHER


def error_type(status: object) -> str:
    """A failed attempt's type from its status alone: an upstream's own error text is unbounded."""
    if not isinstance(status, int):
        return "unknown"
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "auth"
    if status in (408, 504):
        return "timeout"
    if status == 502:
        return "bad_gateway"
    return "server_error" if status >= 500 else "client_error"


class Bounds:
    """The label values one config allows."""

    def __init__(self, runtime: Runtime) -> None:
        config = runtime.config
        self.providers = frozenset((*config.providers, *config.mcp.servers))
        self.models = frozenset((*(f"{p}/{m}" for p, m in runtime.models()), *config.aliases))
        self.teams = frozenset(config.teams)
        self.keys = frozenset(k.name for k in config.virtual_keys) if config.metrics.per_key else frozenset()
        self.mcp_servers = frozenset(config.mcp.servers)


class MetricsHook:
    def __init__(self, families: Families, runtime: Runtime) -> None:
        self.f = families
        self.runtime = runtime
        self._bounds: Bounds | None = None
        self._bounds_config: object = None
        self._bounds_models = -1

    def bounds(self) -> Bounds:
        rt = self.runtime
        # a SIGHUP swaps the config (compared by identity: a Config's == walks all of it);
        # model discovery fills ``discovered`` after startup
        models = sum(len(found) for found in rt.discovered.values())
        if self._bounds is None or self._bounds_config is not rt.config or self._bounds_models != models:
            self._bounds, self._bounds_config, self._bounds_models = Bounds(rt), rt.config, models
        return self._bounds

    async def pre(self, ex: Exchange, request: web.Request) -> None:
        self.f.in_flight += 1
        if ex.stream:
            self.f.streams += 1

    async def post(self, ex: Exchange) -> None:
        f, b = self.f, self.bounds()
        f.in_flight -= 1
        if ex.stream:
            f.streams -= 1
        provider = bounded(ex.provider, b.providers)
        named = f"{ex.provider}/{ex.upstream_model}" if ex.provider and ex.upstream_model else ex.model
        model = bounded(named, b.models)
        team = bounded(ex.team, b.teams)
        key = bounded(ex.key_name, b.keys) if b.keys else ""
        code = ex.status_code
        status_class = f"{code // 100}xx" if isinstance(code, int) and 100 <= code < 600 else ""
        outcome = ex.status if ex.status in OUTCOMES else OTHER
        f.requests.inc((ex.route, provider, model, status_class, outcome, team, key))
        if ex.transcript.usage:
            counts = token_counts(ex.transcript.usage)
            for kind, name in TOKEN_KINDS:
                n = counts[name]
                if n:
                    f.tokens.inc((provider, model, team, key, kind), n)
        if ex.cost_usd:
            f.cost.inc((provider, model, team, key), ex.cost_usd)
        total = (ex.duration_ms or 0.0) / 1000
        f.duration.observe((ex.route, provider), total)
        if ex.ttft_ms is not None:
            f.ttft.observe((ex.route, provider), ex.ttft_ms / 1000)
        f.overhead.observe((ex.route,), max(0.0, total - ex.upstream_s))
        if ex.attempts:
            self._attempts(ex.attempts, b)
        if ex.route == "mcp":  # a tool of no configured server counts under "other"
            server = ex.provider if ex.provider in b.mcp_servers else OTHER
            f.mcp_calls.inc((server, _mcp_outcome(ex)))

    def _attempts(self, attempts: Iterable[dict[str, Any]], b: Bounds) -> None:
        """Failed attempts by type; each failure followed by another attempt is a retry
        (same provider and model) or a fallback (another target)."""
        f = self.f
        previous: dict[str, Any] | None = None
        for attempt in attempts:
            if previous is not None:
                provider = bounded(previous.get("provider"), b.providers)
                same = (previous.get("provider"), previous.get("model")) == (attempt.get("provider"),
                                                                            attempt.get("model"))
                (f.retries if same else f.fallbacks).inc((provider,))
            if "error" in attempt:
                provider = bounded(attempt.get("provider"), b.providers)
                f.upstream_errors.inc((provider, error_type(attempt.get("status"))))
            previous = attempt


def _mcp_outcome(ex: Exchange) -> str:
    if ex.status == "ok":
        return "ok"
    if ex.error_type == "tool_error":
        return "tool_error"
    if ex.status == "client_closed":
        return "client_closed"
    code = ex.status_code
    return "upstream_error" if isinstance(code, int) and code >= 500 else "refused"
