"""The one HTTP call to a provider: timeouts and error mapping."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiohttp
from yarl import URL

from finopsd.errors import GatewayError, UpstreamError, UpstreamTimeout
from finopsd.providers.base import UpstreamRequest

if TYPE_CHECKING:
    from finopsd.config import ProviderConfig

async def send(
    session: aiohttp.ClientSession, provider: ProviderConfig, call: UpstreamRequest
) -> aiohttp.ClientResponse:
    """Make the call and wait for response headers, mapping failures to 502 / 504."""
    t = provider.timeouts
    url: str | URL = URL(call.url, encoded=True) if call.encoded else call.url
    try:
        async with asyncio.timeout(t.connect + t.first_byte):
            return await session.request(
                call.method,
                url,
                headers=call.headers,
                data=call.body if call.method != "GET" else None,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=t.connect),
                auto_decompress=True,
            )
    except TimeoutError:
        raise UpstreamTimeout(
            f"{provider.name}: no response within {t.connect + t.first_byte:g} s", code="upstream_timeout"
        ) from None
    except aiohttp.ClientError as e:
        raise UpstreamError(f"{provider.name} is unreachable: {_reason(e)}", code="upstream_unreachable") from None


def _reason(e: aiohttp.ClientError) -> str:
    """A short cause without URLs or headers (they could carry a key in a query string)."""
    if isinstance(e, aiohttp.ClientConnectorError):
        return f"cannot connect ({e.os_error.strerror or type(e.os_error).__name__})"
    if isinstance(e, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    return type(e).__name__


def read_error(provider: ProviderConfig, exc: BaseException) -> GatewayError:
    """An error while reading an upstream body or stream."""
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(
            f"{provider.name}: no data for {provider.timeouts.idle:g} s", code="upstream_idle_timeout"
        )
    return UpstreamError(f"{provider.name}: the connection broke mid-response", code="upstream_disconnected")


RETRY_AFTER = ("Retry-After", "retry-after-ms")


def error_headers(resp: aiohttp.ClientResponse) -> dict[str, str]:
    """Upstream headers a client needs to act on an error (rate limits)."""
    return {h: resp.headers[h] for h in RETRY_AFTER if h in resp.headers}
