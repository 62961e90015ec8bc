"""Config section ``mcp``: the upstream MCP servers whose tools ``/mcp`` serves."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final, Mapping

from finopsd.yamldoc import Doc, Reader


MCP_TRANSPORTS: Final = ("stdio", "streamable_http", "sse")


@dataclass(frozen=True, repr=False)
class McpServerConfig:
    """An upstream MCP server; its tools are exposed at ``/mcp`` as ``{name}-{tool}``."""

    name: str
    transport: str  # one of MCP_TRANSPORTS
    command: str | None = None  # stdio
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)  # values may be secrets (env:NAME)
    cwd: str | None = None
    url: str | None = None  # streamable_http, sse
    headers: Mapping[str, str] = field(default_factory=dict)  # values may be secrets (env:NAME)
    timeout_s: float = 60  # connecting, and each tool call

    def __repr__(self) -> str:  # env and header values never reach a log line
        return f"McpServerConfig(name={self.name!r}, transport={self.transport!r})"


@dataclass(frozen=True)
class McpConfig:
    servers: Mapping[str, McpServerConfig] = field(default_factory=dict)
    health_interval_s: float = 30  # how often a quiet connection is checked (its tool list refetched)


# --- mcp: upstream MCP servers -------------------------------------------------------

_MCP_SERVER_NAME: Final = re.compile(r"[A-Za-z0-9_]+")
_MCP_SERVER_KEYS: Final = {"command", "args", "env", "cwd", "url", "headers", "transport", "timeout_s"}


def _secrets(doc: Doc, data: Any, path: str, env: Mapping[str, str]) -> dict[str, str]:
    """A mapping of strings whose values may be ``env:NAME`` references."""
    r = Reader(doc, data, path, set(data) if isinstance(data, dict) else set())
    return {k: r.secret(k, env) or "" for k in r.data}


def _mcp_server(doc: Doc, name: str, data: Any, env: Mapping[str, str]) -> McpServerConfig:
    path = f"mcp.servers.{name}"
    if not _MCP_SERVER_NAME.fullmatch(name):
        # a "-" would make ``{server}-{tool}`` ambiguous to split
        raise doc.error(path, "a server name may hold only letters, digits and _"
                        " (tools are exposed as <server>-<tool>)")
    r = Reader(doc, data, path, _MCP_SERVER_KEYS)
    command, url = r.get("command", str), r.get("url", str)
    if (command is None) == (url is None):
        raise doc.error(path, "needs exactly one of `command` (a stdio server) and `url` (an HTTP server)")
    transport = r.get("transport", str, "stdio" if command is not None else "streamable_http")
    if transport not in MCP_TRANSPORTS:
        raise doc.error(r.sub("transport"), f"must be one of {', '.join(MCP_TRANSPORTS)}")
    if (transport == "stdio") != (command is not None):
        needs = "stdio needs `command`" if transport == "stdio" else f"{transport} needs `url`"
        raise doc.error(r.sub("transport"), needs)
    if url is not None and not url.startswith(("http://", "https://")):
        raise doc.error(r.sub("url"), "must be an http:// or https:// URL")
    for key in ("args", "env", "cwd") if url is not None else ("headers",):
        if key in r.data:
            raise doc.error(r.sub(key), f"applies to {'`command`' if url is not None else '`url`'} servers only")
    return McpServerConfig(
        name=name,
        transport=transport,
        command=command,
        args=r.strings("args", ()) or (),
        env=_secrets(doc, r.data.get("env"), r.sub("env"), env),
        cwd=r.get("cwd", str),
        url=url,
        headers=_secrets(doc, r.data.get("headers"), r.sub("headers"), env),
        timeout_s=r.number("timeout_s", McpServerConfig.timeout_s, minimum=0.001),
    )


def mcp_section(doc: Doc, data: Any, env: Mapping[str, str]) -> McpConfig:
    r = Reader(doc, data, "mcp", {"servers", "health_interval_s"})
    servers = r.data.get("servers")
    sv = Reader(doc, servers, "mcp.servers", set(servers) if isinstance(servers, dict) else set())
    return McpConfig(
        servers={name: _mcp_server(doc, str(name), sv.data[name], env) for name in sv.data},
        health_interval_s=r.number("health_interval_s", McpConfig.health_interval_s, minimum=0.01),
    )


