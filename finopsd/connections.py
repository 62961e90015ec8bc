"""The listening socket: a cap on open client connections, and the file descriptors it needs.

Every client connection holds a descriptor, and while a request runs, usually a second
one to its upstream. The cap is ``server.max_connections``, lowered to what the
process's descriptor limit can hold (two per connection, ``FD_RESERVE`` kept for the
database, MCP servers and the like). At the cap a new connection takes the place of
the oldest idle one (no request under way: waiting between requests, or still sending
its headers); when every connection is busy it gets a 503 and is closed. So idle
connections, however many, never keep ``/healthz`` or a chat request out.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Collection
from typing import Final, cast

from aiohttp import web
from yarl import URL

log = logging.getLogger(__name__)

FD_RESERVE: Final = 64
FD_WANTED: Final = 65536  # the soft limit asked for at start-up (systemd's default soft limit is 1024)
REFUSAL_LINGER_S: Final = 1.0  # how long a refused client gets to read the 503 before the close

_BODY: Final = (b'{"error": {"message": "the gateway is at its connection limit (server.max_connections);'
                b' retry shortly", "type": "server_error", "param": null, "code": "too_many_connections"}}')
REFUSAL: Final = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                  b"Connection: close\r\nContent-Length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY)


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE towards the hard limit; return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FD_WANTED if hard == resource.RLIM_INFINITY else min(hard, FD_WANTED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open files limit from %d: %s", soft, e)
    return soft


def connection_cap(configured: int, open_files: int) -> int:
    """``configured``, lowered to what ``open_files`` descriptors can serve."""
    fits = max(1, (open_files - FD_RESERVE) // 2)
    if fits < configured:
        log.warning("server.max_connections lowered from %d to %d: the open files limit is %d"
                    " (raise LimitNOFILE)", configured, fits, open_files)
    return min(configured, fits)


class Refusal(asyncio.Protocol):
    """Answers 503 to a connection over the cap, lets the client read it, then closes."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes
        transport.write(REFUSAL)
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(REFUSAL_LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # the request is not read: it is refused whatever it says

    def eof_received(self) -> bool:
        return False  # the client read the answer and left: close

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()


class CappedSite(web.BaseSite):
    """A TCP site that holds at most ``cap`` client connections (see the module doc)."""

    __slots__ = ("_host", "_port", "_cap", "_busy")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, cap: int, busy: Collection[object]) -> None:
        super().__init__(runner)
        self._host, self._port, self._cap, self._busy = host, port, cap, busy

    @property
    def name(self) -> str:
        return str(URL.build(scheme="http", host=self._host, port=self._port))

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: self._protocol(server), self._host, self._port, backlog=1024, reuse_address=True)

    def _protocol(self, server: web.Server) -> asyncio.Protocol:
        # oldest first; one closed already is gone once its task ends (next loop turn)
        connections = [c for c in server.connections if c.transport is not None]
        if len(connections) >= self._cap:
            idle = next((c for c in connections if c not in self._busy), None)
            if idle is None:
                log.warning("connection refused: %d connections, all busy (server.max_connections)", self._cap)
                return Refusal()
            idle.force_close()  # as aiohttp's keep-alive timeout does
        return server()
