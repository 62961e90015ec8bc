"""Which models each provider offers: its config list, or its upstream /models asked once at startup."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from finopsd.appkeys import RUNTIME
from finopsd.errors import GatewayError
from finopsd.router import adapter_for, pick_key
from finopsd.providers.openai_compat import OpenAIAdapter
from finopsd.runtime import Runtime
from finopsd.upstream import read_body

log = logging.getLogger(__name__)

DISCOVERY_TIMEOUT_S = 5
MAX_DISCOVERED = 10_000  # an upstream's list is bounded like any answer: so many ids, so long each
MAX_MODEL_ID = 256


async def discover_models(app: web.Application) -> AsyncIterator[None]:
    """Ask OpenAI-protocol providers without a model list for theirs, in the background."""
    task = asyncio.create_task(_discover_all(app[RUNTIME]))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _discover_all(rt: Runtime) -> None:
    names = [n for n, p in rt.config.providers.items() if p.models is None and p.type in ("openai", "azure", "mistral")]
    await asyncio.gather(*(_discover(rt, n) for n in names))


async def _discover(rt: Runtime, name: str) -> None:
    provider = rt.config.providers[name]
    adapter = adapter_for(provider)
    assert isinstance(adapter, OpenAIAdapter)
    target = pick_key(provider, "")
    try:
        async with rt.session.get(
            adapter.url(target, "models"),
            headers={**provider.headers, **adapter.auth_headers(target)},
            timeout=aiohttp.ClientTimeout(total=DISCOVERY_TIMEOUT_S),
        ) as resp:
            body = json.loads(await read_body(provider, resp)) if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError, GatewayError) as e:
        log.info("model discovery for %s failed: %s", name, type(e).__name__)
        return
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, list):
        ids = (m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str))
        rt.discovered[name] = tuple(i for i in ids if len(i) <= MAX_MODEL_ID)[:MAX_DISCOVERED]
        log.info("discovered %d models at %s", len(rt.discovered[name]), name)
