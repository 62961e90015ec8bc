"""``GET /metrics`` and the wiring: the families, the hook, the log store's batch reports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from finopsd import access
from finopsd.appkeys import LOGSTORE, RUNTIME
from finopsd.metrics import lag
from finopsd.metrics.families import Families
from finopsd.metrics.hook import MetricsHook
from finopsd.metrics.state import StateCollector

METRICS: Final = web.AppKey("metrics", Families)


def install(app: web.Application) -> MetricsHook:
    """Make the app's metric families; the hook they return goes into ``Runtime.hooks``."""
    families = app[METRICS] = Families()
    families.registry.register(StateCollector(app))
    app.cleanup_ctx.append(lag.watcher(families))
    return MetricsHook(families, app[RUNTIME])


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/metrics", metrics)


async def count_log_batches(app: web.Application) -> AsyncIterator[None]:
    """After the log store opens: its batches feed rows written and write latency."""
    families = app[METRICS]

    def on_batch(rows: int, seconds: float) -> None:
        families.log_written.inc((), rows)
        families.log_write.observe((), seconds)

    app[LOGSTORE].on_batch = on_batch
    yield


@access.admin_unless(lambda request: request.app[RUNTIME].config.metrics.public)
async def metrics(request: web.Request) -> web.Response:
    """The Prometheus text format (a scrape is a few hundred bounded series)."""
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
