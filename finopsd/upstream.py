"""The one HTTP call to a provider: timeouts, size caps and error mapping."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

import aiohttp
from yarl import URL

from finopsd.errors import GatewayError, UpstreamError, UpstreamTimeout
from finopsd.providers.base import UpstreamRequest

if TYPE_CHECKING:
    from finopsd.config import ProviderConfig

MB = 1024 * 1024
ERROR_BODY_MAX = 256 * 1024  # an error body is read for its message; the rest is dropped

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


def answer_cap(provider: ProviderConfig, stream: bool = False) -> int:
    """Decoded bytes a whole answer (body or stream) of ``provider`` may hold."""
    return int((provider.max_stream_mb if stream else provider.max_answer_mb) * MB)


def event_cap(provider: ProviderConfig) -> int:
    """Bytes one stream line or event of ``provider`` may hold."""
    return int(provider.max_event_mb * MB)


def answer_too_large(provider: ProviderConfig, stream: bool = False) -> UpstreamError:
    mb, name = (provider.max_stream_mb, "max_stream_mb") if stream else (provider.max_answer_mb, "max_answer_mb")
    return UpstreamError(f"{provider.name}: the answer is larger than its limit of {mb:g} MB ({name})",
                         code="upstream_answer_too_large")


def event_too_large(provider: ProviderConfig) -> UpstreamError:
    return UpstreamError(f"{provider.name}: a stream event is larger than its limit of {provider.max_event_mb:g} MB"
                         " (max_event_mb)", code="upstream_event_too_large")


class Body(Protocol):
    async def readany(self) -> bytes: ...


class Answer(Protocol):
    @property
    def content(self) -> Body: ...


async def read_body(provider: ProviderConfig, resp: Answer, *, error: bool = False) -> bytes:
    """An upstream body as it decodes, within the provider's ``total`` timeout and answer cap.

    Past the cap an answer fails with 502; an error body (``error=True``) is cut at
    ``ERROR_BODY_MAX`` instead, since only its message is wanted.
    """
    cap = ERROR_BODY_MAX if error else answer_cap(provider)
    body = bytearray()
    try:
        async with asyncio.timeout(provider.timeouts.total):
            while chunk := await resp.content.readany():
                body += chunk
                if len(body) > cap:
                    if error:
                        return bytes(body[:cap])
                    raise answer_too_large(provider)
    except (TimeoutError, aiohttp.ClientError) as e:
        raise read_error(provider, e) from None
    return bytes(body)
