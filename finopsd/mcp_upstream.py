"""Connections to the upstream MCP servers that ``/mcp`` fronts: one supervisor task each.

A supervisor owns its server's connection: it enters the official SDK client
(``mcp.Client`` over stdio, Streamable HTTP or the deprecated HTTP+SSE transport)
and leaves it in the same task, as anyio's cancel scopes require. Handlers call
tools on the open client from their own tasks; the SDK's session serves
concurrent requests, and a handler that goes away cancels only its own call.

A supervisor lists the server's tools on connect, again on
``notifications/tools/list_changed`` (handshake-era servers send it unasked;
2026-07-28 servers only on a ``subscriptions/listen`` stream, which it opens),
and every ``mcp.health_interval_s`` as the health check. A failed check, a
connection the transport reports broken, or a call that finds it closed makes
the supervisor reconnect with exponential backoff; meanwhile the server shows
as down (``status()``) and its tools leave ``tools/list``. One server failing
never touches another, nor the gateway.

References (read 2026): the SDK's ``mcp.Client``, ``mcp.client.stdio``,
``mcp.client.streamable_http``, ``mcp.client.sse`` (mcp 2.3); the protocol:
https://modelcontextprotocol.io/specification/2026-07-28/basic/versioning and
https://modelcontextprotocol.io/specification/2025-11-25/server/tools
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from finopsd import __version__
from finopsd.appkeys import RUNTIME

if TYPE_CHECKING:
    from mcp import Client

    from finopsd.config import McpConfig, McpServerConfig

__all__ = ["MCP_HUB", "McpHub", "Upstream", "UpstreamFailure", "UpstreamRpcError", "open_mcp_upstreams", "probe"]

log = logging.getLogger(__name__)

BACKOFF_FIRST_S: Final = 0.5
BACKOFF_MAX_S: Final = 30.0
STEADY_S: Final = 10.0  # a connection that lived this long was not a crash loop: backoff starts over
STARTUP_WAIT_S: Final = 5.0  # the gateway serves after this even while slow servers still connect
STOP_GRACE_S: Final = 10.0  # closing: the SDK gives a stdio server 2 s to exit, then terminates it
LIST_PAGES_MAX: Final = 100  # a paginator that never ends cannot hang a refresh
SSE_READ_TIMEOUT_S: Final = 300.0


class UpstreamFailure(Exception):
    """A call that could not complete upstream: the server is down, died mid-call, or timed out."""

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.timeout = timeout


class UpstreamRpcError(Exception):
    """The upstream answered with a JSON-RPC error; it goes back to the client as it came."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.data = code, message, data


class _Lost(Exception):
    """The connection is gone (found by a call or the health check): reconnect."""


def describe(exc: BaseException) -> str:
    """One line for an error, looking inside the exception groups anyio raises."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip()
    if isinstance(exc, _Lost):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def wire(model: Any) -> dict[str, Any]:
    """An SDK model in its JSON wire form."""
    out: dict[str, Any] = model.model_dump(by_alias=True, mode="json", exclude_none=True)
    return out


class Upstream:
    """One configured MCP server: its connection's supervisor, its tools and its state."""

    def __init__(self, config: McpServerConfig, health_interval_s: float) -> None:
        self.config = config
        self.health_interval_s = health_interval_s
        self.state = "connecting"  # connecting | up | down | stopped
        self.since = time.time()
        self.last_error: str | None = None
        self.tools: list[dict[str, Any]] = []  # as the server lists them (wire form)
        self.protocol_version: str | None = None
        self.server_info: dict[str, Any] | None = None
        self.connects = 0
        self._client: Client | None = None
        self._stop = asyncio.Event()
        self._lost = asyncio.Event()
        self._refresh = asyncio.Event()
        self._attempted = asyncio.Event()  # the first connection attempt has ended, either way
        self._connecting = False
        self._task: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- lifetime

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=f"mcp-upstream-{self.config.name}")

    async def first_attempt(self) -> None:
        await self._attempted.wait()

    async def stop(self) -> None:
        """Close the connection (a stdio server's process ends with it) and end the supervisor."""
        self._stop.set()
        if self._task is None:
            return
        if self._connecting:  # a connect attempt does not watch for the stop: cut it short
            self._task.cancel()
        done, _ = await asyncio.wait({self._task}, timeout=STOP_GRACE_S)
        if not done:
            self._task.cancel()
            await asyncio.wait({self._task})
        self._set_state("stopped")

    async def _supervise(self) -> None:
        delay = BACKOFF_FIRST_S
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                await self._connect_and_serve()
            except Exception as e:  # anyio raises transport failures as exception groups
                self.last_error = describe(e)
                log.warning("MCP server %s: %s", self.config.name, self.last_error)
            finally:
                self._client = None
                self._attempted.set()
            if self._stop.is_set():
                break
            self._set_state("down")
            if time.monotonic() - began >= STEADY_S:
                delay = BACKOFF_FIRST_S
            log.info("MCP server %s: reconnecting in %.1f s", self.config.name, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def _connect_and_serve(self) -> None:
        # the SDK is imported on first use: it costs ~30 MB, and most gateways configure no MCP server
        import mcp_types as types
        from mcp import Client
        from mcp_types.version import MODERN_PROTOCOL_VERSIONS

        cfg = self.config
        async with AsyncExitStack() as stack:
            self._connecting = True
            try:
                async with asyncio.timeout(cfg.timeout_s):
                    client = await stack.enter_async_context(Client(
                        await self._transport(stack), cache=None, message_handler=self._on_message,
                        client_info=types.Implementation(name="finopsd", version=__version__)))
                    tools = await self._list_tools(client)
            finally:
                self._connecting = False
            self._lost.clear()
            self._refresh.clear()
            self._client, self.tools = client, tools
            self.protocol_version = client.protocol_version
            self.server_info = wire(client.server_info) if client.server_info is not None else None
            self.connects += 1
            self.last_error = None
            self._set_state("up")
            self._attempted.set()
            log.info("MCP server %s: up (%s, %d tools)", cfg.name, self.protocol_version, len(tools))
            listener = None
            caps = client.server_capabilities.tools
            if self.protocol_version in MODERN_PROTOCOL_VERSIONS and caps is not None and caps.list_changed:
                listener = asyncio.create_task(self._listen(client), name=f"mcp-listen-{cfg.name}")
            try:
                await self._serve(client)
            finally:
                if listener is not None:
                    listener.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await listener

    async def _serve(self, client: Client) -> None:
        """Wait for a stop, a lost connection, a list change, or the health check's turn."""
        while True:
            wake = [asyncio.create_task(e.wait()) for e in (self._stop, self._lost, self._refresh)]
            try:
                await asyncio.wait(wake, timeout=self.health_interval_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in wake:
                    t.cancel()
            if self._stop.is_set():
                return
            if self._lost.is_set():
                raise _Lost("the connection closed")
            self._refresh.clear()
            try:
                async with asyncio.timeout(self.config.timeout_s):
                    self.tools = await self._list_tools(client)
            except TimeoutError:
                raise _Lost(f"health check: no tools/list answer within {self.config.timeout_s:g} s") from None

    async def _listen(self, client: Client) -> None:
        """2026-07-28: list changes come only on a subscriptions/listen stream the client opens."""
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                async for _ in subscription:
                    self._refresh.set()
        except Exception as e:  # no stream: the health check still refreshes the list
            log.info("MCP server %s: no list-change stream (%s)", self.config.name, describe(e))

    async def _on_message(self, message: Any) -> None:
        import mcp_types as types

        if isinstance(message, types.ToolListChangedNotification):
            self._refresh.set()
        elif isinstance(message, Exception):
            log.debug("MCP server %s: transport reported %s", self.config.name, describe(message))

    async def _transport(self, stack: AsyncExitStack) -> Any:
        import httpx2
        from mcp import StdioServerParameters
        from mcp.client.sse import sse_client
        from mcp.client.streamable_http import streamable_http_client

        cfg = self.config
        if cfg.transport == "stdio":
            assert cfg.command is not None
            # the SDK passes only a safe default environment (PATH, HOME, …) plus ``env``
            return StdioServerParameters(command=cfg.command, args=list(cfg.args), env=dict(cfg.env) or None,
                                         cwd=cfg.cwd)
        assert cfg.url is not None
        if cfg.transport == "sse":
            return sse_client(cfg.url, headers=dict(cfg.headers), timeout=cfg.timeout_s,
                              sse_read_timeout=max(SSE_READ_TIMEOUT_S, cfg.timeout_s))
        timeout = httpx2.Timeout(cfg.timeout_s, read=max(SSE_READ_TIMEOUT_S, cfg.timeout_s))
        http = await stack.enter_async_context(httpx2.AsyncClient(headers=dict(cfg.headers), timeout=timeout))
        return streamable_http_client(cfg.url, http_client=http)

    @staticmethod
    async def _list_tools(client: Client) -> list[dict[str, Any]]:
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(LIST_PAGES_MAX):
            page = await client.list_tools(cursor=cursor)
            tools += [wire(t) for t in page.tools]
            cursor = page.next_cursor
            if cursor is None:
                break
        return tools

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state, self.since = state, time.time()

    # ---------------------------------------------------------------- use

    def has_tool(self, name: str) -> bool:
        return any(t.get("name") == name for t in self.tools)

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """The upstream's ``CallToolResult`` (wire form); its tool errors come back as ``isError``."""
        cfg, client = self.config, self._client
        if client is None or self.state != "up":
            why = f": {self.last_error}" if self.last_error else ""
            raise UpstreamFailure(f"MCP server {cfg.name!r} is {self.state}{why}")
        from mcp.shared.exceptions import MCPError
        from mcp_types import CONNECTION_CLOSED

        try:
            async with asyncio.timeout(cfg.timeout_s):
                result = await client.call_tool(name, arguments)
        except TimeoutError:
            raise UpstreamFailure(f"MCP server {cfg.name!r} did not answer within {cfg.timeout_s:g} s",
                                  timeout=True) from None
        except MCPError as e:
            if e.error.code == CONNECTION_CLOSED:
                if self._client is client:  # not a late answer from a connection already replaced
                    self._lost.set()  # reconnect now rather than at the next health check
                raise UpstreamFailure(f"MCP server {cfg.name!r} closed the connection during the call") from None
            raise UpstreamRpcError(e.error.code, e.error.message, e.error.data) from None
        except Exception as e:  # a transport failure, or a result the SDK could not accept
            raise UpstreamFailure(f"MCP server {cfg.name!r}: {describe(e)}") from None
        return wire(result)

    def status(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "name": cfg.name,
            "transport": cfg.transport,
            "state": self.state,
            "since": self.since,
            "last_error": self.last_error,
            "protocol_version": self.protocol_version,
            "server_info": self.server_info,
            "connects": self.connects,
            "tools": [{"name": t.get("name"), "description": t.get("description")} for t in self.tools],
        }


class McpHub:
    """The upstreams of one app, kept in step with the config (a SIGHUP may change ``mcp``)."""

    def __init__(self, config: McpConfig) -> None:
        self.config = config
        self.upstreams: dict[str, Upstream] = {}
        self._retiring: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        for name, server in self.config.servers.items():
            self._add(name, server)

    def _add(self, name: str, server: McpServerConfig) -> None:
        upstream = Upstream(server, self.config.health_interval_s)
        self.upstreams[name] = upstream
        upstream.start()

    def sync(self, config: McpConfig) -> None:
        """Apply a reloaded ``mcp`` section: changed servers reconnect, others keep their connection."""
        if config is self.config or config == self.config:
            self.config = config
            return
        interval_changed = config.health_interval_s != self.config.health_interval_s
        self.config = config
        for name in list(self.upstreams):
            if interval_changed or self.upstreams[name].config != config.servers.get(name):
                self._retire(self.upstreams.pop(name))
        for name, server in config.servers.items():
            if name not in self.upstreams:
                self._add(name, server)

    def _retire(self, upstream: Upstream) -> None:
        task = asyncio.create_task(upstream.stop(), name=f"mcp-retire-{upstream.config.name}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def wait_started(self, timeout: float) -> None:
        """Until every server's first attempt ended, or ``timeout``: slow ones keep connecting after."""
        waits = [u.first_attempt() for u in self.upstreams.values()]
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), timeout)

    async def stop(self) -> None:
        await asyncio.gather(*(u.stop() for u in self.upstreams.values()), *self._retiring)

    def split(self, exposed: str) -> tuple[Upstream, str] | None:
        """``server-tool`` → the server's upstream and the tool's own name (server names hold no ``-``)."""
        server, dash, tool = exposed.partition("-")
        upstream = self.upstreams.get(server)
        return (upstream, tool) if upstream is not None and dash and tool else None

    def exposed_tools(self) -> list[dict[str, Any]]:
        """Every tool of every server that is up, named ``server-tool``, otherwise as listed upstream."""
        out = []
        for name, upstream in self.upstreams.items():
            if upstream.state != "up":
                continue
            for tool in upstream.tools:
                out.append({**tool, "name": f"{name}-{tool.get('name')}"})
        return out

    def status(self) -> list[dict[str, Any]]:
        return [u.status() for u in self.upstreams.values()]


MCP_HUB: Final = web.AppKey("mcp_hub", McpHub)


async def open_mcp_upstreams(app: web.Application) -> AsyncIterator[None]:
    """Connect to every configured MCP server before serving (waiting a few seconds at most)."""
    hub = McpHub(app[RUNTIME].config.mcp)
    app[MCP_HUB] = hub
    hub.start()
    await hub.wait_started(STARTUP_WAIT_S)
    try:
        yield
    finally:
        await hub.stop()


async def probe(config: McpConfig) -> list[dict[str, Any]]:
    """Connect to each server once, list its tools, and disconnect (``finopsd mcp list``)."""
    hub = McpHub(config)
    hub.start()
    try:
        await asyncio.gather(*(
            asyncio.wait_for(u.first_attempt(), u.config.timeout_s + 1) for u in hub.upstreams.values()
        ), return_exceptions=True)
        return hub.status()
    finally:
        await hub.stop()
