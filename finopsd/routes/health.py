"""``GET /healthz``: liveness plus which providers are configured, parked keys, the live state."""

from __future__ import annotations

from aiohttp import web

from finopsd import __version__
from finopsd import access
from finopsd.appkeys import RUNTIME, STATE


@access.public
async def healthz(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    return web.json_response(
        {
            "status": "ok",
            "version": __version__,
            "providers": sorted(rt.config.providers),
            "parked_keys": rt.keys.status(),
            "state": request.app[STATE].health(),  # Redis reachable, or this instance on its own counters
        }
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/healthz", healthz)
