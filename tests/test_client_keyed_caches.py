"""What the gateway remembers about client-chosen names is bounded (model names reach the
pricing caches, genai-prices' own lookup caches, per-model rates)."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import aiohttp
from aiohttp import web

from finopsd.appkeys import LOGSTORE
from tests.conftest import gateway_yaml
from tests.test_routes_openai import MSGS

OK = {"id": "x", "object": "chat.completion", "model": "m",
      "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
      "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}
NAME_CHARS = 100_000
NAMES = 200  # 20 MB of distinct names; an unbounded cache keeps each one (twice, before the fix)


async def _answer(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response(OK)  # and remembers nothing, unlike tests.fakes


async def test_distinct_model_names_from_clients_do_not_grow_memory(make_gateway: Any, aiohttp_server: Any) -> None:
    upstream = web.Application()
    upstream.router.add_post("/v1/chat/completions", _answer)
    base = (await aiohttp_server(upstream)).make_url("/v1")
    # a known provider (priced by genai-prices' openai data) and a custom one (looked up by name alone)
    gw = await make_gateway(gateway_yaml(str(base), f"  mylab: {{type: openai, base_url: '{base}'}}\n"))
    url = str(gw.make_url("/openai/chat/completions"))
    async with aiohttp.ClientSession() as s:  # not the test client: it keeps every response

        async def ask(i: int) -> None:
            model = f"{'openai' if i % 2 else 'mylab'}/gpt-4o-{i}-" + "x" * NAME_CHARS
            async with s.post(url, json={"model": model, "messages": MSGS}) as r:
                assert r.status == 200
                await r.read()

        for i in range(20):  # warm up: imports, pools, price data
            await ask(i)
        gc.collect()
        tracemalloc.start()
        try:
            for i in range(NAMES):
                await ask(1000 + i)
            await gw.server.app[LOGSTORE].flush()
            gc.collect()
            grown, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert grown < 12 * 1024 * 1024, f"{grown / 1e6:.0f} MB kept after {NAMES} distinct model names"
