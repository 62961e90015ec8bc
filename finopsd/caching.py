"""Automatic prompt caching: whether the gateway places cache breakpoints for a request, and with which TTL.

Anthropic, and Claude on Bedrock and Vertex, cache a prompt prefix only where the request
marks one (``cache_control``, Bedrock ``cachePoint``). When a request carries no marker of
its own, the provider adapter places them (``finopsd.providers.cache_points``) with the TTL
chosen here; ``None`` places none. Providers that cache on their own (OpenAI, DeepSeek,
Gemini, Groq, xAI…) need no markers and ignore the setting.

The ``caching`` section may appear on a provider, a virtual key and a team:

    caching: {auto: true, ttl: 5m}    # defaults; auto: false anywhere turns it off

A request is cached automatically when none of its provider, key and team says
``auto: false``. The TTL is the key's, else the team's, else the provider's, else ``5m``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final

from finopsd.yamldoc import Doc, Reader

if TYPE_CHECKING:
    from finopsd.exchange import Exchange
    from finopsd.providers.base import Target

__all__ = ["CachingConfig", "DEFAULT_TTL", "TTLS", "caching_section", "auto_cache_ttl", "with_auto_cache"]

TTLS: Final = ("5m", "1h")
DEFAULT_TTL: Final = "5m"


@dataclass(frozen=True)
class CachingConfig:
    auto: bool = True
    ttl: str | None = None  # None: the next scope's, finally DEFAULT_TTL


def caching_section(doc: Doc, data: object, path: str) -> CachingConfig:
    r = Reader(doc, data, path, {"auto", "ttl"})
    ttl = r.get("ttl", str)
    if ttl is not None and ttl not in TTLS:
        raise doc.error(r.sub("ttl"), f"must be one of {', '.join(TTLS)}")
    return CachingConfig(auto=r.get("auto", bool, True), ttl=ttl)


def auto_cache_ttl(provider: CachingConfig, scopes: tuple[CachingConfig, ...]) -> str | None:
    """The TTL of gateway-placed breakpoints; None when a scope turned automatic caching off.

    ``scopes`` are the caller's key and team settings, most specific first.
    """
    if not provider.auto or not all(s.auto for s in scopes):
        return None
    return next((s.ttl for s in scopes if s.ttl), None) or provider.ttl or DEFAULT_TTL


def with_auto_cache(target: Target, ex: Exchange) -> Target:
    """The target, told whether (and how long) to cache this exchange's prompt automatically."""
    return replace(target, cache_ttl=auto_cache_ttl(target.provider.caching, ex.caching))
