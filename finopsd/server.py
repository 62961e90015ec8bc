"""Running the app: bind, banner, SIGTERM drain, SIGHUP reload.

The drain fits in ``server.drain_timeout_s`` all told. On SIGTERM the gateway stops
listening and closes idle connections; requests under way get the drain time less a
reserve (a fifth of it, at least 1 s, at most half) to finish. Those still running then
are cut: a stream ends with one error event (code ``server_shutdown``), a request not
yet answered gets a 503, and each one's log row says so. The reserve's rest goes to
flushing the log and closing the app; what still runs at the deadline is abandoned.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from finopsd.app import build_app
from finopsd.appkeys import LOGSTORE, RUNTIME
from finopsd.config import Config, ConfigError
from finopsd.connections import CappedSite, connection_cap, raise_open_files_limit
from finopsd.scrub import LogScrub

log = logging.getLogger(__name__)

GC_YOUNG = 10_000  # the collector's first threshold while serving (see _serve)


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
    cap = connection_cap(config.server.max_connections, raise_open_files_limit())
    app = build_app(config)
    scrub_logs = LogScrub(lambda: app[RUNTIME].scrubber)
    handlers = logging.getLogger().handlers
    for handler in handlers:
        handler.addFilter(scrub_logs)
    try:
        await _serve(app, config, loader, say, cap)
    finally:
        for handler in handlers:
            handler.removeFilter(scrub_logs)


async def _serve(app: web.Application, config: Config, loader: Callable[[], Config] | None,
                 say: Callable[[str], None], cap: int) -> None:
    # handler_cancellation: a client that hangs up cancels its upstream call at once
    runner = web.AppRunner(
        app,
        handle_signals=False,
        handler_cancellation=True,
        shutdown_timeout=CLEANUP_GRACE_S,  # drain() has ended every request it knows of by then
        access_log=None,  # every exchange is logged to SQLite; per-request log lines cost throughput
    )
    await runner.setup()
    site = CappedSite(runner, config.server.host, config.server.port, cap, app[RUNTIME].busy)
    await site.start()
    # what start-up made (modules, config, catalogs) lives as long as the process; frozen out of the
    # collector's reach, a full collection walks only what came after: measured under agent traffic,
    # the 25-50 ms stalls of the event loop (about one a second) were these collections
    gc.freeze()
    # and the young generation collected every GC_YOUNG net allocations instead of 700: a request's
    # parsed body (a few hundred containers) outlives several collections at 700, each of which
    # then walks it again. Measured under agent traffic (#19): the collector's time per 20 s of load
    # fell from ~480 ms to ~60 ms, and no full collection ran (at 700: nine of 5-10 ms each)
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
    host, port = runner.addresses[0][:2]
    say(banner(config, host, port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: reload(app, loader))
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await drain(runner, app, app[RUNTIME].config.server.drain_timeout_s)


CLEANUP_GRACE_S = 0.2


def cut_reserve(budget: float) -> float:
    """The part of the drain kept for cutting what still runs and flushing the log."""
    return min(budget / 2, max(1.0, budget / 5))


async def drain(runner: web.AppRunner, app: web.Application, budget: float) -> None:
    """Stop taking requests, let those under way finish, cut the rest, flush the log: within ``budget`` s."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + budget
    cut_at = deadline - cut_reserve(budget)
    rt = app[RUNTIME]
    log.info("stopping: draining %d in-flight requests (up to %g s)", len(rt.inflight), budget)
    for site in list(runner.sites):
        await site.stop()  # no new connections
    if runner.server is not None:
        runner.server.pre_shutdown()  # idle keep-alive connections close now, busy ones after their answer
    if rt.inflight:
        await asyncio.wait(set(rt.inflight), timeout=max(0.0, cut_at - loop.time()))
    if rt.inflight:
        log.warning("stopping: cutting %d requests still running after %.1f s", len(rt.inflight),
                    loop.time() - started)
        rt.stopping = True
        for task in rt.inflight:
            task.cancel()
        await asyncio.wait(set(rt.inflight), timeout=max(0.0, (cut_at + deadline) / 2 - loop.time()))
    try:
        async with asyncio.timeout_at(deadline):
            if LOGSTORE in app:
                await app[LOGSTORE].flush()  # first, so a slow close below cannot cost rows
            await runner.cleanup()
    except TimeoutError:
        log.error("stopping: drain_timeout_s (%g s) ran out before the app closed", budget)
    log.info("stopped after %.1f s", loop.time() - started)


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
    clash = rt.dashboard.conflict_message(new) if rt.dashboard is not None else None
    if clash is not None:  # the dashboard's keys are never dropped by a reload
        log.error("SIGHUP: config not reloaded, keeping the old one: %s", clash)
        return
    if rt.dashboard is not None:
        rt.dashboard.note_reload(old, new)
    if _restart_only(new) != _restart_only(old):
        log.warning("SIGHUP: changes to the server address, connection and body limits and the storage path"
                    " need a restart")
    rt.config = new
    log.info("SIGHUP: config reloaded from %s (%d providers)", new.source, len(new.providers))


def _restart_only(c: Config) -> tuple[object, ...]:
    """Settings read once, when the app is built and the socket bound."""
    s = c.server
    return s.host, s.port, s.max_body_mb, s.keepalive_timeout_s, s.max_connections, c.storage.path


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run the server's coroutine on uvloop when it is installed (``pip install finopsd[fast]``)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)
