"""The logging hook: every exchange becomes one row in the log store.

It is the first hook, so its ``post`` runs last and sees what every other hook
did (the key and team governance attributed, the cost it charged) and is still
called when a later hook refuses the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from finopsd.appkeys import LOGSTORE, RUNTIME
from finopsd.exchange import Exchange
from finopsd.log import open_log
from finopsd.log.sessions import session_hint
from finopsd.log.store import LogStore
from finopsd.pricing import cache_reads
from finopsd.routes.inbound import RAW_BODY
from finopsd.runtime import Runtime

def _detail(usage: dict[str, Any] | None, group: str, name: str) -> int | None:
    details = (usage or {}).get(group)
    value = details.get(name) if isinstance(details, dict) else None
    return value if isinstance(value, int) else None


def token_counts(usage: dict[str, Any] | None) -> dict[str, int | None]:
    """Prompt, completion, cached and reasoning tokens of an exchange's usage (None: not reported)."""
    return {
        "prompt_tokens": (usage or {}).get("prompt_tokens"),
        "completion_tokens": (usage or {}).get("completion_tokens"),
        # under any provider's name; unknown (None) when no name holds a count
        "cached_tokens": None if usage is None else (
            cache_reads(usage) or _detail(usage, "prompt_tokens_details", "cached_tokens")),
        "reasoning_tokens": _detail(usage, "completion_tokens_details", "reasoning_tokens"),
    }


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
        "user": ex.user,
        "project": ex.project,
        "tags": json.dumps(list(ex.tags)) if ex.tags else None,
        "client_ip": ex.client_ip,
        "user_agent": ex.user_agent,
        "status_code": ex.status_code,
        "status": ex.status,
        "error_type": ex.error_type,
        "error_message": ex.error_message,
        "stream": ex.stream,
        "finish_reason": ex.transcript.finish_reason,
        **token_counts(usage),
        "cost_usd": ex.cost_usd,
        "cost_without_cache_usd": ex.cost_without_cache_usd,
        "cost_flags": ex.cost_flags,
        "upstream_key_name": ex.upstream_key_name,
        "attempts": ex.attempts + ([{"note": n} for n in ex.notes]),
        # The writer threads the request by its messages even when content is off, and
        # then stores none of them; it replaces base64 images in what it stores (each new
        # message's strings are checked there: a scan of the whole body on the loop cost
        # ~0.25 ms at 400 KB).
        "request": ex.request,
        "content": content,
        "response": ex.transcript.as_dict() if content else None,
        "session_hint": ex.session_hint,
        "previous_response_id": ex.previous_response_id,
        "response_id": ex.response_id,
        "body_bytes": ex.body_bytes,
    }


class RecordHook:
    """Notes the client's session id and body size in ``pre`` and, on SQLite, slows intake while
    the log queue is past its bounds (rows are never dropped); logs the exchange in ``post``."""

    def __init__(self, runtime: Runtime, store: LogStore) -> None:
        self.runtime = runtime
        self.store = store

    async def pre(self, ex: Exchange, request: web.Request) -> None:
        ex.session_hint = session_hint(request.headers)
        ex.body_bytes = len(request.get(RAW_BODY, b""))
        await self.store.wait_for_room()

    async def post(self, ex: Exchange) -> None:
        # scrubbed by the writer, off the event loop and only in what is new (finopsd.log.writer)
        self.store.submit(row_of(ex, self.runtime.config.logs.content))


async def open_logstore(app: web.Application) -> AsyncIterator[None]:
    """Open the database before serving; close (draining every queued row) after the last handler."""
    rt = app[RUNTIME]
    store = await open_log(rt.config, scrubber=lambda: rt.scrubber)
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
