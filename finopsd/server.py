"""Running the app: bind, banner, SIGTERM drain, SIGHUP reload."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from finopsd.app import build_app
from finopsd.appkeys import RUNTIME
from finopsd.config import Config, ConfigError

log = logging.getLogger(__name__)


def banner(config: Config, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}"
    providers = ", ".join(sorted(config.providers)) or "none (set OPENAI_API_KEY, ANTHROPIC_API_KEY, … or use --config)"
    return (
        f"finopsd listening on {base}\n"
        f"  Roo Code Base URL: {base}/openai\n"
        f"  providers: {providers}\n"
        f"  config: {config.source}"
    )


async def serve(config: Config, loader: Callable[[], Config] | None, say: Callable[[str], None]) -> None:
    """Serve until SIGTERM/SIGINT; ``loader`` re-reads the config on SIGHUP (None: no file to reload)."""
    app = build_app(config)
    # handler_cancellation: a client that hangs up cancels its upstream call at once
    runner = web.AppRunner(
        app,
        handle_signals=False,
        handler_cancellation=True,
        shutdown_timeout=config.server.drain_timeout_s,
        access_log=None,  # every exchange is logged to SQLite; per-request log lines cost throughput
    )
    await runner.setup()
    site = web.TCPSite(runner, config.server.host, config.server.port)
    await site.start()
    host, port = runner.addresses[0][:2]
    say(banner(config, host, port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: reload(app, loader))
    try:
        await stop.wait()
        log.info("stopping: draining in-flight requests (up to %g s)", config.server.drain_timeout_s)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await runner.cleanup()


def reload(app: web.Application, loader: Callable[[], Config] | None) -> None:
    """Swap in a new config; an invalid one keeps the old and logs why."""
    if loader is None:
        log.warning("SIGHUP: no config file to reload (running on the embedded default)")
        return
    try:
        new = loader()
    except ConfigError as e:
        log.error("SIGHUP: config not reloaded, keeping the old one: %s", e)
        return
    rt = app[RUNTIME]
    old = rt.config
    if (new.server.host, new.server.port, new.storage.path) != (old.server.host, old.server.port, old.storage.path):
        log.warning("SIGHUP: server address and storage path changes need a restart")
    rt.config = new
    log.info("SIGHUP: config reloaded from %s (%d providers)", new.source, len(new.providers))


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run the server's coroutine on uvloop when it is installed (``pip install finopsd[fast]``)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)
