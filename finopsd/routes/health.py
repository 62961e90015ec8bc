"""``GET /healthz``: liveness plus which providers are configured."""

from __future__ import annotations

from aiohttp import web

from finopsd import __version__
from finopsd import access
from finopsd.appkeys import RUNTIME


@access.public
async def healthz(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    return web.json_response(
        {
            "status": "ok",
            "version": __version__,
            "providers": sorted(rt.config.providers),
            "parked_keys": rt.keys.status(),
        }
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/healthz", healthz)
