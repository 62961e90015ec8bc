"""The floor: the least an aiohttp relay can do, measured in the same run as finopsd.

Parse the body, strip the ``provider/`` prefix from ``model``, forward over one
pooled session, relay the bytes. No auth, logging, retries or normalising: what
finopsd costs beyond this is the price of its features.

    python -m bench.floor --upstream http://127.0.0.1:PORT/v1 --port 0
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from bench.serving import serve_until_killed

SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)


def make_app(upstream: str) -> web.Application:
    url = upstream.rstrip("/") + "/chat/completions"

    async def chat(request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        body["model"] = body["model"].partition("/")[2] or body["model"]
        async with request.app[SESSION].post(
            url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        ) as up:
            if not body.get("stream"):
                return web.Response(body=await up.read(), status=up.status,
                                    content_type=up.content_type)
            resp = web.StreamResponse(status=up.status, headers={"Content-Type": up.headers["Content-Type"]})
            await resp.prepare(request)
            async for data in up.content.iter_any():
                await resp.write(data)
            await resp.write_eof()
            return resp

    async def session(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            app[SESSION] = s
            yield

    app = web.Application()
    app.cleanup_ctx.append(session)
    for path in ("/v1/chat/completions", "/openai/chat/completions"):
        app.router.add_post(path, chat)
    return app


async def main(upstream: str, host: str, port: int) -> None:
    await serve_until_killed(make_app(upstream), host, port, "floor")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--upstream", required=True, help="OpenAI base URL, e.g. http://127.0.0.1:9000/v1")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on stdout)")
    args = parser.parse_args()
    try:
        asyncio.run(main(args.upstream, args.host, args.port))
    except KeyboardInterrupt:
        pass
