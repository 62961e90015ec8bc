"""Serving a bench server until it is killed; kept tiny so the floor imports nothing more."""

from __future__ import annotations

import asyncio

from aiohttp import web


async def serve_until_killed(app: web.Application, host: str, port: int, what: str) -> None:
    """Run a bench server (fake upstream, floor) and print where it listens, for ``run.py`` to read."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound = runner.addresses[0]
    print(f"{what} listening on http://{bound[0]}:{bound[1]}", flush=True)
    try:
        await asyncio.Event().wait()  # until killed
    finally:
        await runner.cleanup()
