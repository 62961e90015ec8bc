"""The one HTTP call to a provider: timeouts, error mapping, and noticing a vanished client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from yarl import URL

from finopsd.errors import GatewayError, UpstreamError, UpstreamTimeout
from finopsd.providers.base import UpstreamRequest

if TYPE_CHECKING:
    from finopsd.config import ProviderConfig

# how often a waiting relay checks that its client is still connected
CLIENT_POLL_S = 0.25


class ClientGone(Exception):
    """The client disconnected while the relay waited on the upstream."""


@contextlib.asynccontextmanager
async def watch_client(request: web.Request) -> AsyncIterator[None]:
    """Cancel the handler when its client disconnects, and turn that into ``ClientGone``.

    aiohttp's handler cancellation stays off (any await could be the last); this
    guard covers only the upstream phase, so the upstream call is aborted at once
    while logging in ``finally`` is never interrupted.
    """
    task = asyncio.current_task()
    assert task is not None
    gone = False

    async def poll() -> None:
        nonlocal gone
        while True:
            await asyncio.sleep(CLIENT_POLL_S)
            transport = request.transport
            if transport is None or transport.is_closing():
                gone = True
                task.cancel()
                return

    watcher = asyncio.create_task(poll())
    try:
        yield
    except asyncio.CancelledError:
        if not gone:
            raise
        task.uncancel()
        raise ClientGone() from None
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


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
