"""The /logs pages' latency over HTTP, on the database ``bench.search`` fills: ``python -m bench.pages``.

Where ``bench.search`` times the store's queries, this times what a browser waits for:
the app (``build_app``, served on 127.0.0.1 by aiohttp) answering the sessions view, its
2 s live refresh (``totals=false``), a search, a filter, the requests view, one task's
timeline and its live poll (``?after=N``), and ``/api/sessions``. The issue's target:
the sessions page under 100 ms at 100,000 requests in 2,000 sessions (the defaults).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

from bench.search import fill, parse_args, timed
from finopsd import config as cfg
from finopsd.app import build_app
from finopsd.log.store import LogStore


@contextlib.asynccontextmanager
async def serving(db: str) -> AsyncIterator[tuple[aiohttp.ClientSession, Callable[[str], Awaitable[bytes]]]]:
    """The app over ``db`` on 127.0.0.1, a client session to it, and a GET that wants a 200."""
    server = TestServer(build_app(cfg.parse(f"storage: {{path: '{db}'}}\n", env={})), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession(str(server.make_url("/"))) as http:

            async def get(path: str) -> bytes:
                async with http.get(path) as resp:
                    assert resp.status == 200, (path, resp.status, await resp.text())
                    return await resp.read()

            yield http, get
    finally:
        await server.close()


async def main() -> None:
    args = parse_args(__doc__ or "")
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "pages.db"
        store = await LogStore.open(str(db), max_queue=50_000)
        try:
            await fill(store, args.rows, args.turns)
        finally:
            await store.close()
        async with serving(str(db)) as (http, get):
            async with http.get("/api/sessions", params={"limit": "1"}) as resp:
                newest = (await resp.json())["items"][0]
            timeline = f"/logs/sessions/{newest['id']}"
            print(f"| GET ({args.rows:,} requests, {args.rows // args.turns:,} sessions) | p50 ms | p95 ms |")
            print("| --- | --- | --- |")
            for label, path in (
                ("/logs (sessions view)", "/logs"), ("/logs?totals=false (its live refresh)", "/logs?totals=false"),
                ("/logs?q=zebra", "/logs?q=zebra"), ("/logs?key=k7", "/logs?key=k7"),
                ("/logs?view=requests", "/logs?view=requests"), ("/api/sessions", "/api/sessions"),
                (f"timeline ({newest['turns']} turns)", timeline),
                ("timeline live poll (?after=N)", f"{timeline}?after={newest['turns']}"),
            ):  # fmt: skip
                await timed(label, lambda: get(path), args.repeat)  # noqa: B023


if __name__ == "__main__":
    asyncio.run(main())
