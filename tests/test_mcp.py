"""The MCP gateway end to end: the official ``mcp`` client against ``/mcp``, real upstream servers.

Upstreams are real processes the tests start: a stdio server and a Streamable HTTP one
written with the SDK (``tests/mcp_servers``), the same server over the deprecated
HTTP+SSE transport, and ``@modelcontextprotocol/server-everything`` from npm (installed
into ``.cache/npm`` on first use; Node is required, see ``scripts/test``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from aiohttp.test_utils import TestClient
from click.testing import CliRunner
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from finopsd import cli
from finopsd import config as cfg
from finopsd.mcp_upstream import MCP_HUB
from finopsd.routes import mcp as mcp_route

ROOT = Path(__file__).resolve().parent.parent
NPM_PREFIX = ROOT / ".cache" / "npm"
EVERYTHING = NPM_PREFIX / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
UPSTREAM_TOKEN = "test-upstream-token"  # tests/mcp_servers/http_echo.py wants it
KEYS = {"ROO_KEY": "sk-fo-roo-test", "ALL_KEY": "sk-fo-all-test", "SLOW_KEY": "sk-fo-slow-test"}
GatewayFactory = Callable[..., Awaitable[TestClient]]


# --- upstream servers ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HttpServer:
    """``tests/mcp_servers/http_echo.py`` in a subprocess; killed and restarted on cue."""

    def __init__(self, name: str, sse: bool = False) -> None:
        self.name, self.sse, self.port = name, sse, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{'sse' if self.sse else 'mcp'}"

    def start(self) -> None:
        args = [sys.executable, "-m", "tests.mcp_servers.http_echo", str(self.port), self.name]
        self.proc = subprocess.Popen(args + (["sse"] if self.sse else []), cwd=ROOT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"the test MCP server on port {self.port} did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="module")
def remote() -> Iterator[HttpServer]:
    server = HttpServer("remote")
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def everything() -> Path:
    """server-everything from npm, installed once into the project's cache dir."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("Node.js and npm are needed for the server-everything test: apt-get install nodejs npm"
                    " (scripts/test installs them)")
    if not EVERYTHING.exists():
        subprocess.run(["npm", "install", "--prefix", str(NPM_PREFIX), "--no-audit", "--no-fund",
                        "@modelcontextprotocol/server-everything"], check=True, cwd=ROOT, timeout=300)
    return EVERYTHING


STDIO = f"{{command: {sys.executable}, args: [-m, tests.mcp_servers.stdio_echo, local], cwd: {ROOT}}}"


def gateway_yaml(servers: str, extra: str = "") -> str:
    return f"""
mcp:
  health_interval_s: 0.5
  servers:
{servers}
virtual_keys:
  - {{name: platform-roo, key: env:ROO_KEY, mcp_tools: ["local-*", "remote-echo"]}}
  - {{name: all-tools, key: env:ALL_KEY}}
  - {{name: slow, key: env:SLOW_KEY, rate_limit: {{requests_per_minute: 1}}}}
{extra}
"""


def two_servers(remote: HttpServer) -> str:
    return (f"    local: {STDIO}\n"
            f"    remote: {{url: {remote.url}, headers: {{Authorization: 'Bearer {UPSTREAM_TOKEN}'}}}}\n")


@pytest.fixture
def keys_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
async def gateway(make_gateway: GatewayFactory, remote: HttpServer, keys_env: None) -> TestClient:
    return await make_gateway(gateway_yaml(two_servers(remote)))


@asynccontextmanager
async def mcp_client(gateway: TestClient, key: str | None = KEYS["ALL_KEY"], mode: str = "auto",
                     **headers: str) -> AsyncIterator[Client]:
    """The official client, connected to the gateway's /mcp with a virtual key."""
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60)) as http:
        async with Client(streamable_http_client(str(gateway.make_url("/mcp")), http_client=http),
                          mode=mode) as client:
            yield client


async def names(client: Client) -> list[str]:
    return sorted(t.name for t in (await client.list_tools()).tools)


async def rows(gateway: TestClient, **query: str) -> list[dict[str, Any]]:
    """The gateway's log rows (flushed first), newest first."""
    await gateway.app[cfg_logstore_key()].flush()
    resp = await gateway.get("/api/logs", params=query)
    assert resp.status == 200, await resp.text()
    return list((await resp.json())["items"])


def cfg_logstore_key() -> Any:
    from finopsd.appkeys import LOGSTORE

    return LOGSTORE


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):  # a hang guard, not a speed claim
        while not await check():
            await asyncio.sleep(0.05)


# --- the "done when" ---------------------------------------------------------------


async def test_client_lists_and_calls_tools_of_two_servers(gateway: TestClient) -> None:
    async with mcp_client(gateway) as client:
        assert client.protocol_version == "2026-07-28"
        listed = await names(client)
        assert {"local-echo", "local-add", "remote-echo", "remote-add"} <= set(listed)
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert tools["remote-echo"].description == "Echo the text back, from remote."
        assert tools["local-add"].input_schema["properties"].keys() == {"a", "b"}
        local = await client.call_tool("local-echo", {"text": "hello"})
        remote = await client.call_tool("remote-add", {"a": 2, "b": 40})
    assert local.content[0].text == "local echo: hello" and not local.is_error
    assert remote.content[0].text == "42" and remote.structured_content == {"result": 42}
