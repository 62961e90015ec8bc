"""Behind a load balancer: the client's address and scheme as the balancer saw them.

Only a peer listed in ``server.trusted_proxies`` is believed. From it, the client is the
right-most ``X-Forwarded-For`` address that is not itself a trusted proxy (each proxy
appends the address it saw, so what stands left of that can be made up by the client),
and the scheme is the balancer's last ``X-Forwarded-Proto``. A header a trusted proxy sent
but that names no address makes the client ``unknown``: never the proxy's own (often
loopback) address, which the admin pages would trust. With no trusted proxies (the
default) the headers are ignored: anyone could send them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address

from aiohttp import web

from finopsd.appkeys import RUNTIME
from finopsd.config import IPNetwork

UNKNOWN = "unknown"
MAX_HOPS = 32  # addresses of one header looked at; a longer list is a client's padding


def _trusted(address: str | None, proxies: Sequence[IPNetwork]) -> bool:
    try:
        ip = ip_address(address or "")
    except ValueError:
        return False
    return _listed(ip, proxies)


def _listed(ip: IPv4Address | IPv6Address, proxies: Sequence[IPNetwork]) -> bool:
    return any(ip in net for net in proxies)


def client_address(header: str, proxies: Sequence[IPNetwork]) -> str:
    """The client a trusted proxy's X-Forwarded-For names."""
    hops = [h.strip() for h in header.split(",")][-MAX_HOPS:]
    for hop in reversed(hops):
        try:
            ip = ip_address(hop)
        except ValueError:
            return UNKNOWN
        if not _listed(ip, proxies):
            return str(ip)
    return UNKNOWN


@web.middleware
async def forwarded(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                    ) -> web.StreamResponse:  # fmt: skip
    proxies = request.app[RUNTIME].config.server.trusted_proxies
    if not proxies or not _trusted(request.remote, proxies):
        return await handler(request)
    proto = request.headers.get("X-Forwarded-Proto", "").rpartition(",")[2].strip().lower()
    header = request.headers.get("X-Forwarded-For")
    remote = request.remote if header is None else client_address(header, proxies)
    scheme = proto if proto in ("http", "https") else request.scheme
    return await handler(request.clone(remote=remote, scheme=scheme))
