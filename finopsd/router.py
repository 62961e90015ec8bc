"""``provider/model`` → provider config, adapter and upstream key; retries and fallbacks.

An attempt is one upstream call. Within a target, a key answered 401/403 is
parked and the next key tried; 429 moves to another key (the limited one parked
for its Retry-After); 5xx, connection errors and timeouts retry with jittered
exponential backoff up to ``max_retries``. When a target is spent, the next
fallback is tried. All of it happens before the first byte reaches the client.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import aiohttp

from finopsd.deps import adapter_class
from finopsd.errors import BadRequest, GatewayError
from finopsd.exchange import Exchange
from finopsd.providers.base import Adapter, BaseAdapter, Target, UpstreamRequest
from finopsd.providers.shape import parsed
from finopsd.scrub import Scrubber
from finopsd.state.local import LocalState
from finopsd.upstream import error_headers, read_body, send

if TYPE_CHECKING:
    from finopsd.config import Config, ProviderConfig
    from finopsd.state import LiveState

log = logging.getLogger(__name__)

_adapters: dict[str, Adapter] = {}


def adapter_for(provider: ProviderConfig) -> Adapter:
    adapter = _adapters.get(provider.type)
    if adapter is None:
        adapter = _adapters[provider.type] = adapter_class(provider.type)()  # config admits only known types
    return adapter


def split_model(config: Config, model: str) -> tuple[ProviderConfig, str]:
    """Resolve a client's model name to its provider and the name the upstream expects.

    ``provider/rest`` picks the provider (``rest`` may hold more slashes); a bare name goes
    through ``aliases``, then to the only configured provider if there is exactly one.
    """
    name = config.aliases.get(model, model)
    prefix, slash, rest = name.partition("/")
    if slash and prefix in config.providers and rest:
        return config.providers[prefix], rest
    if not slash and len(config.providers) == 1:
        (provider,) = config.providers.values()
        return provider, name
    configured = ", ".join(sorted(config.providers)) or "none"
    if slash:
        raise BadRequest(
            f"unknown provider {prefix!r} in model {model!r}; configured providers: {configured}",
            param="model",
            code="unknown_provider",
        )
    raise BadRequest(
        f"model {model!r} names no provider; write it as provider/model (configured providers: {configured})",
        param="model",
        code="model_not_found",
    )


# per dialect route: its config model map, the provider types that serve its bare model names
# natively (the first configured wins, a provider named like the type first), their name prefixes
NATIVE_NAMES: Final = {
    "messages": ("anthropic_model_map", ("anthropic",), ("claude",)),
    "genai": ("gemini_model_map", ("gemini", "vertex"), ("gemini", "gemma", "learnlm")),
}


def resolve_model(config: Config, model: str, route: str = "messages") -> str:
    """The provider/model a request of a dialect route (Anthropic ``messages``, Gemini ``genai``) goes to.

    The route's model map first (Claude Code's or Gemini CLI's default names to any model), then
    ``provider/model`` or an alias, then a bare Claude (or Gemini) name → that family's provider.
    """
    map_field, types, prefixes = NATIVE_NAMES[route]
    model_map: Mapping[str, str] = getattr(config, map_field)
    if model in model_map:
        return model_map[model]
    prefix, slash, _ = model.partition("/")
    if (slash and prefix in config.providers) or model in config.aliases:
        return model
    if model.startswith(prefixes):
        for kind in types:
            native = [n for n, p in config.providers.items() if p.type == kind]
            if native:
                return f"{kind if kind in native else native[0]}/{model}"
    return model


def permits(globs: tuple[str, ...] | None, config: Config, name: str) -> bool:
    """Whether a key's ``models`` globs pass a model name: as written, its alias target, or the
    provider/model it resolves to (so an alias cannot slip past a glob)."""
    if globs is None:
        return True
    provider, model = split_model(config, name)
    names = (name, config.aliases.get(name, name), f"{provider.name}/{model}")
    return any(fnmatch.fnmatchcase(n, p) for n in names for p in globs)


def plan(config: Config, model: str, requested: list[str] | None,
         allowed: tuple[str, ...] | None = None) -> list[tuple[ProviderConfig, str]]:
    """The primary target, then the request's ``fallbacks``, else the config's for that model;
    a fallback the key's globs (``allowed``) do not pass is left out, never tried."""
    fallbacks = requested if requested is not None else config.fallbacks.get(model, ())
    names = [model, *(f for f in fallbacks if permits(allowed, config, f))]
    return [split_model(config, name) for name in names]


# the longest Retry-After worth waiting for when no other key can take the request
MAX_RETRY_AFTER_S: Final = 10.0
PARK_AUTH_FAILURE_S: Final = 300.0


@dataclass
class KeyPool:
    """Which upstream keys are parked (failed auth or rate-limited), until when: kept in ``state``
    (this process's, or shared through Redis), read here without waiting."""

    state: LiveState = field(default_factory=LocalState)

    def pick(self, provider: ProviderConfig, model: str, avoid: set[str] = frozenset()) -> Target | None:  # type: ignore[assignment]
        """A weighted random choice among usable keys; None when every key is parked or avoided."""
        if not provider.keys:
            return Target(provider, model)
        parking = self.state.parking
        now = parking.clock()
        usable = [k for k in provider.keys if k.name not in avoid and parking.until(provider.name, k.name) <= now]
        if not usable:
            return None
        key = usable[0] if len(usable) == 1 else random.choices(usable, weights=[k.weight for k in usable])[0]
        return Target(provider, model, key.value, key.name)

    async def park(self, target: Target, seconds: float, why: str) -> None:
        if target.key_name is None:
            return
        log.warning("parking key %s of %s for %.0f s: %s", target.key_name, target.provider.name, seconds, why)
        await self.state.park(target.provider.name, target.key_name, seconds, why)

    def status(self) -> dict[str, dict[str, str]]:
        """Parked keys per provider, with the reason (for /healthz)."""
        return self.state.parking.status()


def pick_key(provider: ProviderConfig, model: str) -> Target:
    """Any key of the provider, ignoring parking (model discovery)."""
    return KeyPool().pick(provider, model) or Target(provider, model)


def _retry_after(headers: dict[str, str]) -> float | None:
    try:
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000
        return float(headers["Retry-After"]) if "Retry-After" in headers else None
    except ValueError:
        return None


def has_followup(adapter: Adapter) -> bool:
    return type(adapter).followup is not BaseAdapter.followup


async def open_upstream(
    session: aiohttp.ClientSession,
    keys: KeyPool,
    ex: Exchange,
    provider: ProviderConfig,
    model: str,
    build: Callable[[Adapter, Target], UpstreamRequest],
    adapter: Adapter | None = None,
    scrubber: Scrubber | None = None,
) -> tuple[aiohttp.ClientResponse, Adapter, Target]:
    """Try one target until it answers 2xx (returned open) or its retries are spent (raises)."""
    adapter = adapter or adapter_for(provider)
    tried_keys: set[str] = set()
    retries = 0
    while True:
        picked = keys.pick(provider, model, tried_keys)
        if picked is None:
            raise GatewayError(
                f"{provider.name}: every key is parked (failed auth or rate limited)",
                status=503, type="upstream_unavailable", code="keys_parked",
            )
        target = await adapter.prepare(picked)
        if scrubber is not None:
            scrubber.learn(target.api_key)  # a token fetched just now (Vertex) is a secret too
        attempt: dict[str, object] = {"provider": provider.name, "model": model, "key": target.key_name}
        ex.attempts.append(attempt)
        sent = 0.0
        try:
            outgoing = build(adapter, target)
            sent = time.perf_counter()  # from here on the time is the upstream's, not ours
            upstream = await send(session, provider, outgoing)
            if upstream.status < 400 and has_followup(adapter):
                async with upstream:
                    first = await read_body(provider, upstream)
                follow = parsed(provider.name, lambda: adapter.followup(target, first, stream=ex.stream))
                if follow is not None:
                    upstream = await send(session, provider, follow)
                else:
                    upstream = _Replay(first)  # type: ignore[assignment]
            attempt["status"] = upstream.status
            if upstream.status < 400:
                return upstream, adapter, target
            async with upstream:
                err = parsed(provider.name, adapter.parse_error, upstream.status,
                             await read_body(provider, upstream, error=True))
                err.headers.update(error_headers(upstream))  # an echoed key is scrubbed on the way out (scrub.py)
        except GatewayError as e:
            err = e
            attempt["status"] = e.status
        finally:
            done = time.perf_counter()
            if sent:
                ex.upstream_s += done - sent
            ex.attempt_times.append((sent or done, done))
        attempt["error"] = err.message
        status = err.status
        if status in (401, 403) and len(provider.keys) > 1:
            await keys.park(target, PARK_AUTH_FAILURE_S, f"upstream answered {status}")
            tried_keys.add(target.key_name or "")
            continue
        if status == 429:
            wait = _retry_after(err.headers)
            if target.key_name and len(provider.keys) > 1:
                await keys.park(target, wait or 1.0, "rate limited (429)")
                tried_keys.add(target.key_name)
                if len(tried_keys) < len(provider.keys):
                    continue
            if retries < provider.max_retries and wait is not None and wait <= MAX_RETRY_AFTER_S:
                retries += 1
                tried_keys.clear()
                ex.upstream_s += wait
                await asyncio.sleep(wait)
                continue
            raise err
        if (status >= 500 or status in (408, 409)) and retries < provider.max_retries:
            delay = provider.retry_backoff_ms / 1000 * (2**retries) * random.uniform(0.5, 1.5)
            retries += 1
            ex.upstream_s += delay
            await asyncio.sleep(delay)
            continue
        raise err


class _Replay:
    """A finished first answer that is itself the result (a follow-up was not needed)."""

    status = 200

    def __init__(self, body: bytes) -> None:
        self.content = _Once(body)

    async def __aenter__(self) -> _Replay:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def close(self) -> None:
        return None


class _Once:
    """A body already read, handed out by ``readany`` as a stream would."""

    def __init__(self, body: bytes) -> None:
        self._body: bytes | None = body

    async def readany(self) -> bytes:
        body, self._body = self._body or b"", None
        return body


def can_fall_back(err: GatewayError) -> bool:
    """Another target may succeed: the failure was the provider's, not the request's."""
    return err.status >= 500 or err.status in (401, 403, 404, 408, 429)
