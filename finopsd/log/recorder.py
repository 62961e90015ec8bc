"""The logging hook: every exchange becomes one row in the log store.

It is the first hook, so its ``post`` runs last and sees what every other hook
did (the key and team governance attributed, the cost it charged) and is still
called when a later hook refuses the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from finopsd.appkeys import LOGSTORE, RUNTIME
from finopsd.exchange import Exchange
from finopsd.log.store import LogStore
from finopsd.runtime import Runtime

# base64 images would bloat every row; the log keeps their type and size
DATA_URL = re.compile(r"data:([\w/+.-]+);base64,[A-Za-z0-9+/=\s]{256,}")


def _shrink(match: re.Match[str]) -> str:
    return f"data:{match.group(1)};base64,[{len(match.group(0))} bytes not logged]"


def _without_images(value: Any) -> Any:
    if isinstance(value, str):
        return DATA_URL.sub(_shrink, value) if "base64," in value else value
    if isinstance(value, list):
        return [_without_images(v) for v in value]
    if isinstance(value, dict):
        return {k: _without_images(v) for k, v in value.items()}
    return value


def _detail(usage: dict[str, Any] | None, group: str, name: str) -> int | None:
    details = (usage or {}).get(group)
    value = details.get(name) if isinstance(details, dict) else None
    return value if isinstance(value, int) else None


def row_of(ex: Exchange, content: bool) -> dict[str, Any]:
    usage = ex.transcript.usage if isinstance(ex.transcript.usage, dict) else None
    return {
        "id": ex.id,
        "ts": ex.started,
        "duration_ms": ex.duration_ms,
        "ttft_ms": ex.ttft_ms,
        "route": ex.route,
        "provider": ex.provider,
        "model": ex.model,
        "upstream_model": ex.upstream_model,
        "key_name": ex.key_name,
        "team": ex.team,
        "client_ip": ex.client_ip,
        "user_agent": ex.user_agent,
        "status_code": ex.status_code,
        "status": ex.status,
        "error_type": ex.error_type,
        "error_message": ex.error_message,
        "stream": ex.stream,
        "finish_reason": ex.transcript.finish_reason,
        "prompt_tokens": (usage or {}).get("prompt_tokens"),
        "completion_tokens": (usage or {}).get("completion_tokens"),
        "cached_tokens": _detail(usage, "prompt_tokens_details", "cached_tokens"),
        "reasoning_tokens": _detail(usage, "completion_tokens_details", "reasoning_tokens"),
        "cost_usd": ex.cost_usd,
        "cost_flags": ex.cost_flags,
        "upstream_key_name": ex.upstream_key_name,
        "attempts": ex.attempts + ([{"note": n} for n in ex.notes]),
        "request": None if not content or ex.request is None else (
            _without_images(ex.request) if ex.images else ex.request),
        "response": ex.transcript.as_dict() if content else None,
    }


class RecordHook:
    """Slows intake while the log queue is full (rows are never dropped); logs in ``post``."""

    def __init__(self, runtime: Runtime, store: LogStore) -> None:
        self.runtime = runtime
        self.store = store

    async def pre(self, ex: Exchange, request: web.Request) -> None:
        await self.store.wait_for_room()

    async def post(self, ex: Exchange) -> None:
        self.store.submit(row_of(ex, self.runtime.config.logs.content))


async def open_logstore(app: web.Application) -> AsyncIterator[None]:
    """Open the database before serving; close (draining every queued row) after the last handler."""
    rt = app[RUNTIME]
    store = await LogStore.open(rt.config.storage.path)
    app[LOGSTORE] = store
    rt.hooks = (RecordHook(rt, store), *rt.hooks)
    try:
        yield
    finally:
        await store.close()


PRUNE_EVERY_S = 3600


async def prune_old_rows(app: web.Application) -> AsyncIterator[None]:
    """Enforce ``logs.retention_days`` at startup and hourly; a prune under way finishes before shutdown."""
    rt, store = app[RUNTIME], app[LOGSTORE]
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            await store.prune(rt.config.logs.retention_days)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PRUNE_EVERY_S)

    task = asyncio.create_task(loop(), name="logstore-retention")
    yield
    stop.set()
    await task
