"""``build_app(config)``: wiring only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from finopsd import access, admin, attribution, catalog, governance, keystore, mcp_upstream, openapi, otel
from finopsd.alerts.watch import watch_alerts
from finopsd.log import recorder
from finopsd.metrics import endpoint as metrics
from finopsd.appkeys import CONFIG, GOVERNANCE, RUNTIME, STATE
from finopsd.config import Config
from finopsd.forwarded import forwarded
from finopsd.middleware import (
    INFLATE_SLOTS, cors_preflight, errors_as_json, in_flight, on_prepare, request_body, request_id, scrub_secrets,
    utf8_headers,
)
from finopsd.routes import anthropic, genai, health, openai, responses
from finopsd.routes import logs
from finopsd.routes import keyadmin, keys
from finopsd.routes import mcp
from finopsd.routes import usage
from finopsd.router import KeyPool
from finopsd.runtime import Runtime
from finopsd.state import open_state, run_state

MB = 1024 * 1024


def build_app(config: Config) -> web.Application:
    app = web.Application(
        # bodies are bounded and inflated before any key check; authenticate last: CORS preflights
        # carry no key, and its refusals become JSON errors. ``forwarded`` hands on a clone of the
        # request (aiohttp's way to change remote and scheme) that has the request id: the
        # response's on_prepare may be given the original
        middlewares=[request_id, in_flight, forwarded, scrub_secrets, errors_as_json, utf8_headers, cors_preflight,
                     request_body, access.authenticate],
        client_max_size=int(config.server.max_body_mb * MB),
        handler_args={
            "max_line_size": 64 * 1024,  # a /logs?q= search may hold 10 kB of pasted text
            # also closes a connection whose request headers have not all come by then
            "keepalive_timeout": config.server.keepalive_timeout_s,
            "auto_decompress": False,  # request_body inflates, bounded and off the event loop
        },
    )
    app[CONFIG] = config
    app[INFLATE_SLOTS] = asyncio.Semaphore(2)
    app[STATE] = open_state(config)  # in this process, or shared through Redis
    app[RUNTIME] = Runtime(config, keys=KeyPool(app[STATE]))
    app[GOVERNANCE] = governance.Governance(config, app[RUNTIME], state=app[STATE])
    app[admin.THROTTLE] = admin.Throttle()
    app[admin.CSRF_SECRET] = admin.csrf_secret(config.server.admin_token)
    # open_logstore puts the logging hook first; metrics before governance, to count what it
    # charged; attribution before it, so a bad x-finops-* header is refused before it counts
    app[otel.TRACING] = otel.TracingHook()  # after governance's post too: spans carry the cost
    app[RUNTIME].hooks = (metrics.install(app), app[otel.TRACING], attribution.AttributionHook(app[RUNTIME]),
                          app[GOVERNANCE])
    app.on_response_prepare.append(on_prepare)
    # cleanup runs in reverse: the log store closes last, after draining every row
    # first: it migrates the file too, and a name both it and the config define stops startup here
    app.cleanup_ctx.append(keystore.open_keystore)
    app.cleanup_ctx.append(recorder.open_logstore)
    app.cleanup_ctx.append(metrics.count_log_batches)
    app.cleanup_ctx.append(otel.open_tracing)  # spans of the last exchanges flushed before the log closes
    app.cleanup_ctx.append(run_state)  # Redis connected (or its fallback announced) before spend is rebuilt
    app.cleanup_ctx.append(governance.open_governance)  # spend rebuilt from the log before serving
    app.cleanup_ctx.append(recorder.prune_old_rows)
    app.cleanup_ctx.append(upstream_session)  # the one pooled ClientSession
    app.cleanup_ctx.append(watch_alerts)  # budget and error-rate alerts, sent on that session
    app.cleanup_ctx.append(catalog.discover_models)  # best effort, never blocks startup
    app.cleanup_ctx.append(mcp_upstream.open_mcp_upstreams)  # closed before the log store: calls get logged
    app[mcp.MCP_SESSIONS] = mcp.Sessions()
    openai.add_routes(app.router)
    anthropic.add_routes(app.router)
    responses.add_routes(app.router)
    genai.add_routes(app.router)
    health.add_routes(app.router)
    admin.add_routes(app.router)
    openapi.add_routes(app.router)
    logs.add_routes(app.router)
    keys.add_routes(app.router)
    keyadmin.add_routes(app.router)
    mcp.add_routes(app.router)
    metrics.add_routes(app.router)
    usage.add_routes(app.router)
    return app


async def upstream_session(app: web.Application) -> AsyncIterator[None]:
    # no total timeout here: each call sets its own from the provider's timeouts
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300)
    # no cookie jar: cookies an upstream sets would pile up and reach other clients' calls
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None), auto_decompress=True,
        cookie_jar=aiohttp.DummyCookieJar(),
    ) as session:
        app[RUNTIME].session = session
        yield
