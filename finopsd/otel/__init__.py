"""OpenTelemetry traces (the optional ``finopsd[otel]`` extra): one span per exchange.

The hook is always in ``Runtime.hooks`` and does nothing until ``open_tracing`` finds
``otel.endpoint`` in the config; only then is ``finopsd.otel.spans`` (and so the
opentelemetry SDK) imported. Spans are built in ``post`` from what the exchange already
recorded and handed to the SDK's batch processor, whose thread exports them: a slow or
unreachable collector never holds up a request (a full queue drops spans, not requests).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final

from aiohttp import web

from finopsd.appkeys import RUNTIME
from finopsd.exchange import Exchange

if TYPE_CHECKING:
    from finopsd.otel.spans import Spans

INSTALL_HINT: Final = "otel.endpoint is set but the OpenTelemetry SDK is missing: pip install 'finopsd[otel]'"


class TracingHook:
    def __init__(self) -> None:
        self.spans: Spans | None = None

    async def pre(self, ex: Exchange, request: web.Request) -> None:
        if self.spans is not None:
            self.spans.begin(ex, request.headers)

    async def post(self, ex: Exchange) -> None:
        if self.spans is not None:
            self.spans.end(ex)


TRACING: Final = web.AppKey("tracing", TracingHook)


async def open_tracing(app: web.Application) -> AsyncIterator[None]:
    """Start the exporter when ``otel.endpoint`` is set; flush what is queued at shutdown (bounded)."""
    rt, hook = app[RUNTIME], app[TRACING]
    if rt.config.otel.endpoint is None:
        yield
        return
    try:
        from finopsd.otel.spans import Spans
    except ImportError as e:
        raise RuntimeError(INSTALL_HINT) from e
    hook.spans = Spans(rt)
    try:
        yield
    finally:
        spans, hook.spans = hook.spans, None
        await spans.shutdown()
