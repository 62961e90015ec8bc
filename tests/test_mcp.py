"""The MCP gateway end to end: the official ``mcp`` clients against ``/mcp``, real upstream servers.

Clients: the Python SDK in both protocol eras, and the TypeScript SDK that Roo Code uses.
Upstreams are real processes the tests start: a stdio server and a Streamable HTTP one
written with the SDK (``tests/mcp_servers``), the same server over the deprecated
HTTP+SSE transport, a handshake-era stdio server written without the SDK, and
``@modelcontextprotocol/server-everything`` from npm (installed into ``.cache/npm`` on
first use; Node is required, see ``scripts/test``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
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
from finopsd.appkeys import LOGSTORE, RUNTIME
from finopsd.mcp_upstream import MCP_HUB, McpHub
from finopsd.routes import mcp as mcp_route
from tests.npm_tools import npm_tool

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
    return npm_tool(NPM_PREFIX, "@modelcontextprotocol/server-everything", EVERYTHING, "the server-everything test")


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
    """The gateway's log rows as /api/logs lists them (the writer flushed first), newest first."""
    await gateway.app[LOGSTORE].flush()
    resp = await gateway.get("/api/logs", params=query)
    assert resp.status == 200, await resp.text()
    return list((await resp.json())["items"])


async def detail(gateway: TestClient, row_id: str) -> dict[str, Any]:
    resp = await gateway.get(f"/api/logs/{row_id}")
    assert resp.status == 200
    return dict(await resp.json())


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


async def test_each_tool_call_is_a_searchable_log_row(gateway: TestClient) -> None:
    async with mcp_client(gateway, KEYS["ROO_KEY"]) as client:
        await client.call_tool("local-echo", {"text": "quarterly spend report"})
        await client.call_tool("remote-echo", {"text": "zebra"})
    local, = await rows(gateway, model="local-echo")
    assert (local["route"], local["provider"], local["upstream_model"]) == ("mcp", "local", "echo")
    assert (local["key"], local["status"], local["status_code"]) == ("platform-roo", "ok", 200)
    assert local["duration_ms"] > 0 and local["cost_usd"] is None
    row = await detail(gateway, local["id"])
    assert row["request"] == {"tool": "local-echo", "arguments": {"text": "quarterly spend report"}}
    assert row["response"]["content"] == "local echo: quarterly spend report"
    # full-text search finds a call by its arguments and by its result, beside chat requests
    found = await rows(gateway, q="zebra")
    assert [r["model"] for r in found] == ["remote-echo"]
    assert [r["model"] for r in await rows(gateway, q="quarterly")] == ["local-echo"]
    page = await gateway.get(f"/logs/{local['id']}")
    assert page.status == 200 and "local-echo" in await page.text()


async def test_key_sees_and_calls_only_its_mcp_tools(gateway: TestClient) -> None:
    async with mcp_client(gateway, KEYS["ROO_KEY"]) as client:  # mcp_tools: ["local-*", "remote-echo"]
        listed = await names(client)
        assert "remote-echo" in listed and "local-add" in listed
        assert "remote-add" not in listed and not any(n.startswith("remote-") and n != "remote-echo" for n in listed)
        with pytest.raises(MCPError) as refused:
            await client.call_tool("remote-add", {"a": 1, "b": 2})
    assert refused.value.error.code == -32602 and "not allowed for key 'platform-roo'" in refused.value.error.message
    row, = await rows(gateway, model="remote-add")
    assert (row["status"], row["status_code"], row["key"]) == ("error", 403, "platform-roo")
    async with mcp_client(gateway, KEYS["ALL_KEY"]) as client:  # no mcp_tools: every tool
        assert "remote-add" in await names(client)


async def test_missing_or_unknown_key_is_refused_with_401(gateway: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer sk-fo-wrong"}):
        resp = await gateway.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                  headers={"Accept": "application/json, text/event-stream", **headers})
        assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
        body = await resp.json()
        assert body["id"] is None and body["error"]["data"]["status"] == 401
    async with mcp_client(gateway, None, **{"x-api-key": KEYS["ALL_KEY"]}) as client:  # the other header
        assert "local-echo" in await names(client)


async def test_handshake_era_client_gets_a_session_bound_to_its_key(gateway: TestClient) -> None:
    async with mcp_client(gateway, KEYS["ROO_KEY"], mode="legacy") as client:
        assert client.protocol_version == "2025-11-25"
        assert "remote-add" not in await names(client)
        result = await client.call_tool("local-add", {"a": 1, "b": 2})
        assert result.content[0].text == "3"
    init = await post(gateway, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}})
    assert (await init.json())["result"]["protocolVersion"] == "2025-06-18"
    sid = init.headers["Mcp-Session-Id"]
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    ok = await post(gateway, listing, **{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"})
    assert "resultType" not in (await ok.json())["result"]  # a 2026 field stays off handshake-era results
    ping = await post(gateway, {"jsonrpc": "2.0", "id": 3, "method": "ping"}, **{"Mcp-Session-Id": sid})
    assert (await ping.json())["result"] == {}
    other_key = await post(gateway, listing, key=KEYS["ALL_KEY"], **{"Mcp-Session-Id": sid})
    assert other_key.status == 404  # a session is only its own key's
    assert (await post(gateway, listing)).status == 400  # no session id
    ended = await gateway.delete("/mcp", headers={"Authorization": f"Bearer {KEYS['ROO_KEY']}", "Mcp-Session-Id": sid})
    assert ended.status == 200
    assert (await post(gateway, listing, **{"Mcp-Session-Id": sid})).status == 404


async def post(gateway: TestClient, body: Any, key: str = KEYS["ROO_KEY"], **headers: str) -> Any:
    return await gateway.post("/mcp", data=json.dumps(body), headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream", **headers})


async def test_batches_only_on_protocol_2025_03_26(gateway: TestClient) -> None:
    sids = {}
    for version in ("2025-03-26", "2025-11-25"):
        init = await post(gateway, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}})
        sids[version] = init.headers["Mcp-Session-Id"]
    batch = [{"jsonrpc": "2.0", "method": "notifications/initialized"},
             {"jsonrpc": "2.0", "id": 1, "method": "ping"},
             {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "local-echo",
                                                                             "arguments": {"text": "b"}}}]
    old = await post(gateway, batch, **{"Mcp-Session-Id": sids["2025-03-26"]})
    replies = {r["id"]: r for r in await old.json()}
    assert replies[1]["result"] == {} and replies[2]["result"]["content"][0]["text"] == "local echo: b"
    new = await post(gateway, batch, **{"Mcp-Session-Id": sids["2025-11-25"], "MCP-Protocol-Version": "2025-11-25"})
    assert new.status == 400 and (await new.json())["error"]["code"] == -32600


async def test_modern_requests_are_checked_against_their_headers(gateway: TestClient) -> None:
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "local-echo", "arguments": {"text": "x"}, "_meta": meta}}
    base = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call"}
    ok = await post(gateway, call, **base, **{"Mcp-Name": "local-echo"})
    body = await ok.json()
    assert ok.status == 200 and body["result"]["resultType"] == "complete"
    assert body["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "finopsd"
    mismatch = await post(gateway, call, **base, **{"Mcp-Name": "local-add"})
    assert mismatch.status == 400 and (await mismatch.json())["error"]["code"] == -32020
    encoded = await post(gateway, call, **base, **{"Mcp-Name": "=?base64?bG9jYWwtZWNobw==?="})
    assert encoded.status == 200  # the header's base64 form, decoded before comparing
    old = await post(gateway, {**call, "params": {**call["params"], "_meta": {
        **meta, "io.modelcontextprotocol/protocolVersion": "2099-01-01"}}},
        **{**base, "MCP-Protocol-Version": "2099-01-01", "Mcp-Name": "local-echo"})
    error = (await old.json())["error"]
    assert old.status == 400 and error["code"] == -32022 and "2026-07-28" in error["data"]["supported"]
    unknown = await post(gateway, {"jsonrpc": "2.0", "id": 8, "method": "prompts/list", "params": {"_meta": meta}},
                         **{**base, "Mcp-Method": "prompts/list"})
    assert unknown.status == 404 and (await unknown.json())["error"]["code"] == -32601
    assert (await gateway.get("/mcp")).status == 405


async def test_tool_errors_are_results_and_unknown_tools_are_protocol_errors(gateway: TestClient) -> None:
    async with mcp_client(gateway) as client:
        failed = await client.call_tool("local-fail", {"reason": "disk full"})
        with pytest.raises(MCPError) as unknown:
            await client.call_tool("local-nope", {})
        with pytest.raises(MCPError) as no_server:
            await client.call_tool("nowhere-echo", {})
    assert failed.is_error and failed.content[0].type == "text"
    assert unknown.value.error.code == -32602 and no_server.value.error.code == -32602
    row, = await rows(gateway, model="local-fail")
    assert (row["status"], row["error"]["type"]) == ("error", "tool_error")


async def test_long_call_answers_as_sse_with_keepalives(gateway: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mcp_route, "SSE_AFTER_S", 0.1)
    async with mcp_client(gateway) as client:  # the official client reads the stream
        result = await client.call_tool("local-sleep", {"seconds": 0.35})
    assert result.content[0].text == "slept 0.35"
    init = await post(gateway, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}})
    resp = await post(gateway, {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
        "name": "local-sleep", "arguments": {"seconds": 0.35}}}, **{"Mcp-Session-Id": init.headers["Mcp-Session-Id"]})
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    text = await resp.text()
    assert text.startswith(": keep-alive\n\n") and text.count(": keep-alive") >= 2
    event = [line for line in text.splitlines() if line.startswith("data: ")]
    assert json.loads(event[-1][6:])["result"]["content"][0]["text"] == "slept 0.35"


async def test_rate_limited_key_gets_a_jsonrpc_refusal_that_is_logged(gateway: TestClient) -> None:
    async with mcp_client(gateway, KEYS["SLOW_KEY"]) as client:  # requests_per_minute: 1
        await client.call_tool("local-echo", {"text": "first"})
        with pytest.raises(MCPError) as limited:
            await client.call_tool("local-echo", {"text": "second"})
    assert limited.value.error.code == -32010 and limited.value.error.data["status"] == 429
    assert "rate limit" in limited.value.error.message
    statuses = [r["status_code"] for r in await rows(gateway, key="slow")]
    assert statuses == [429, 200]


async def test_browser_pages_from_other_sites_are_refused(gateway: TestClient) -> None:
    listing = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
    rebound = await post(gateway, listing, Origin="http://attacker.example")  # DNS rebinding to 127.0.0.1
    assert rebound.status == 403 and "attacker.example" in (await rebound.json())["error"]["message"]
    assert (await post(gateway, listing, Origin="http://localhost:5173")).status == 200
    assert (await post(gateway, listing)).status == 200  # non-browser clients send no Origin


async def test_client_that_hangs_up_mid_call_stops_it_and_is_logged(gateway: TestClient) -> None:
    init = await post(gateway, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}})
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "local-sleep", "arguments": {"seconds": 30}}}
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await post(gateway, call, **{"Mcp-Session-Id": init.headers["Mcp-Session-Id"]})

    async def logged() -> bool:
        return bool(await rows(gateway, model="local-sleep"))

    await until(logged)
    row, = await rows(gateway, model="local-sleep")
    assert (row["status"], row["status_code"]) == ("client_closed", 499) and row["duration_ms"] < 5000


# --- upstream failures -------------------------------------------------------------------


async def test_upstream_crash_mid_call_is_a_tool_error_then_it_reconnects(
        make_gateway: GatewayFactory, remote: HttpServer, keys_env: None) -> None:
    gateway = await make_gateway(gateway_yaml(two_servers(remote)))
    local = gateway.app[MCP_HUB].upstreams["local"]
    async with mcp_client(gateway) as client:
        crashed = await client.call_tool("local-crash", {})
        assert crashed.is_error and "closed the connection during the call" in crashed.content[0].text
        # the other server never noticed
        assert (await client.call_tool("remote-echo", {"text": "still"})).content[0].text == "remote echo: still"

        async def back() -> bool:
            return local.state == "up" and local.connects == 2

        await until(back)
        assert (await client.call_tool("local-echo", {"text": "again"})).content[0].text == "local echo: again"
    row, = await rows(gateway, model="local-crash")
    assert (row["status"], row["status_code"], row["error"]["type"]) == ("error", 502, "upstream_error")


async def test_down_server_leaves_the_list_and_comes_back(make_gateway: GatewayFactory, keys_env: None) -> None:
    server = HttpServer("flaky")
    server.start()
    try:
        servers = (f"    flaky: {{url: {server.url}, headers: {{Authorization: 'Bearer {UPSTREAM_TOKEN}'}}}}\n"
                   f"    broken: {{command: /nonexistent/mcp-server}}\n")
        gateway = await make_gateway(gateway_yaml(servers))
        hub = gateway.app[MCP_HUB]
        broken = hub.upstreams["broken"]
        assert broken.state == "down" and broken.last_error
        async with mcp_client(gateway) as client:
            assert "flaky-echo" in await names(client)
            server.kill()

            async def gone() -> bool:
                return "flaky-echo" not in await names(client)

            await until(gone)  # the health check found it down
            down = await client.call_tool("flaky-echo", {"text": "x"})
            assert down.is_error and "flaky" in down.content[0].text
            server.start()  # same port: the supervisor's next attempt finds it

            async def back() -> bool:
                return "flaky-echo" in await names(client)

            await until(back)
            assert (await client.call_tool("flaky-echo", {"text": "y"})).content[0].text == "flaky echo: y"
        status = await gateway.get("/api/mcp/servers")
        states = {s["name"]: s for s in (await status.json())["servers"]}
        assert states["flaky"]["state"] == "up" and states["flaky"]["connects"] == 2
        assert states["broken"]["state"] == "down" and states["broken"]["tools"] == []
    finally:
        server.kill()


async def test_tool_list_changes_upstream_reach_tools_list(make_gateway: GatewayFactory, keys_env: None) -> None:
    # no health check in this test's time: only the servers' announcements can refresh the lists
    servers = (f"    local: {STDIO}\n"
               f"    old: {{command: {sys.executable}, args: [-m, tests.mcp_servers.legacy_stdio], cwd: {ROOT}}}\n")
    gateway = await make_gateway(gateway_yaml(servers).replace("health_interval_s: 0.5", "health_interval_s: 600"))
    assert gateway.app[MCP_HUB].upstreams["old"].protocol_version == "2025-11-25"
    async with mcp_client(gateway) as client:
        assert not {"local-extra", "old-extra"} & set(await names(client))
        await client.call_tool("local-grow", {})  # 2026-07-28: on the subscriptions/listen stream
        await client.call_tool("old-grow", {})  # 2025-11-25: sent unasked

        async def grown() -> bool:
            return {"local-extra", "old-extra"} <= set(await names(client))

        await until(grown, timeout=10)
        assert (await client.call_tool("old-extra", {})).content[0].text == "extra"


async def test_reloaded_config_reconnects_only_what_changed(make_gateway: GatewayFactory, remote: HttpServer,
                                                            keys_env: None) -> None:
    gateway = await make_gateway(gateway_yaml(f"    local: {STDIO}\n"))
    hub, rt = gateway.app[MCP_HUB], gateway.app[RUNTIME]
    local = hub.upstreams["local"]
    reloaded = cfg.parse(gateway_yaml(two_servers(remote)), env=KEYS)
    rt.config = dataclasses.replace(rt.config, mcp=reloaded.mcp)  # what SIGHUP does
    async with mcp_client(gateway) as client:

        async def both() -> bool:
            return {"local-echo", "remote-echo"} <= set(await names(client))

        await until(both)
    assert hub.upstreams["local"] is local and local.connects == 1  # unchanged: kept its connection


async def test_stopping_cuts_a_hanging_connect_short() -> None:
    config = cfg.parse("mcp: {servers: {hang: {command: sleep, args: ['60'], timeout_s: 30}}}", env={})
    hub = McpHub(config.mcp)
    hub.start()
    await hub.wait_started(0.3)
    assert hub.upstreams["hang"].state == "connecting"
    async with asyncio.timeout(8):  # not the 30 s connect timeout
        await hub.stop()
    assert hub.upstreams["hang"].state == "stopped"


# --- more upstreams: the deprecated SSE transport, server-everything from npm -------------


async def test_sse_and_npm_everything_upstreams(make_gateway: GatewayFactory, everything: Path,
                                                keys_env: None) -> None:
    legacy = HttpServer("legacy", sse=True)
    legacy.start()
    try:
        servers = (f"    legacy: {{url: {legacy.url}, transport: sse,"
                   f" headers: {{Authorization: 'Bearer {UPSTREAM_TOKEN}'}}}}\n"
                   f"    everything: {{command: node, args: [{everything}, stdio]}}\n")
        gateway = await make_gateway(gateway_yaml(servers))
        hub = gateway.app[MCP_HUB]
        assert hub.upstreams["everything"].protocol_version == "2025-11-25"  # the TypeScript SDK's server
        async with mcp_client(gateway) as client:
            listed = await names(client)
            assert {"legacy-echo", "everything-echo", "everything-get-sum"} <= set(listed)
            echoed = await client.call_tool("everything-echo", {"message": "from npm"})
            summed = await client.call_tool("everything-get-sum", {"a": 2, "b": 3})
            legacy_echo = await client.call_tool("legacy-echo", {"text": "over sse"})
            image = await client.call_tool("everything-get-tiny-image", {})
        assert echoed.content[0].text == "Echo: from npm"
        assert any(block.type == "image" for block in image.content)
        row, = await rows(gateway, model="everything-get-tiny-image")
        logged = (await detail(gateway, row["id"]))["response"]["content"]
        assert "[image image/png]" in logged and len(logged) < 500  # named in the log, not inlined
        assert "5" in summed.content[0].text
        assert legacy_echo.content[0].text == "legacy echo: over sse"
    finally:
        legacy.kill()


async def test_typescript_sdk_client_as_roo_code_uses_it(gateway: TestClient, everything: Path) -> None:
    # the SDK Roo Code connects with, from server-everything's own dependencies
    proc = await asyncio.create_subprocess_exec(
        "node", str(ROOT / "tests" / "mcp_servers" / "ts_sdk_client.cjs"), str(gateway.make_url("/mcp")),
        KEYS["ROO_KEY"], stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_PATH": str(NPM_PREFIX / "node_modules")})
    async with asyncio.timeout(20):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    seen = json.loads(out)
    assert seen["protocol"] in ("2025-11-25", "2026-07-28") and "remote-add" not in seen["tools"]
    assert {"local-echo", "remote-echo"} <= set(seen["tools"])
    assert seen["result"]["content"][0]["text"] == "local echo: from node"
    assert seen["refused"]["code"] == -32602


# --- config and CLI ------------------------------------------------------------------------


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("mcp: {servers: {a-b: {command: x}}}", "mcp.servers.a-b: a server name may hold only letters"),
    ("mcp: {servers: {a: {command: x, url: 'http://h/mcp'}}}", "needs exactly one of `command`"),
    ("mcp: {servers: {a: {url: 'http://h/mcp', transport: stdio}}}", "mcp.servers.a.transport: stdio needs"),
    ("mcp:\n  servers:\n    a:\n      url: http://h/mcp\n      env: {A: b}", "config.yaml:5: mcp.servers.a.env"),
    ("mcp: {servers: {a: {url: 'http://h/mcp', headers: {A: 'env:NOPE'}}}}", "NOPE is not set"),
    ("virtual_keys: [{name: k, key: env:K, mcp_tools: fs-*}]", "virtual_keys[0].mcp_tools: must be a list"),
])
def test_mcp_config_errors_name_the_line_and_key(yaml_text: str, message: str) -> None:
    with pytest.raises(cfg.ConfigError) as err:
        cfg.parse(yaml_text, env={"K": "x"})
    assert message in str(err.value)


def test_mcp_config_infers_transports_and_resolves_secrets() -> None:
    config = cfg.parse("""
mcp:
  servers:
    fs:      {command: npx, args: ["-y", "@modelcontextprotocol/server-filesystem", "/srv/share"], env: {}}
    tracker: {url: https://mcp.example.com/mcp, headers: {Authorization: env:TRACKER_TOKEN}}
    legacy:  {url: http://127.0.0.1:7001/sse, transport: sse}
virtual_keys:
  - {name: platform-roo, key: env:K, mcp_tools: ["fs-*", "tracker-create_issue"]}
""", env={"TRACKER_TOKEN": "Bearer secret-token", "K": "sk-x"})
    servers = config.mcp.servers
    assert [servers[n].transport for n in ("fs", "tracker", "legacy")] == ["stdio", "streamable_http", "sse"]
    assert servers["tracker"].headers == {"Authorization": "Bearer secret-token"}
    assert "secret-token" not in repr(config)
    assert config.virtual_keys[0].mcp_tools == ("fs-*", "tracker-create_issue")


def test_mcp_list_command_shows_state_and_tools(remote: HttpServer, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"""
mcp:
  servers:
    remote: {{url: {remote.url}, headers: {{Authorization: 'Bearer {UPSTREAM_TOKEN}'}}}}
    broken: {{command: /nonexistent/mcp-server, timeout_s: 5}}
""")
    result = CliRunner().invoke(cli.main, ["mcp", "list", "--config", str(path)])
    assert result.exit_code == 1, result.output  # a server is down
    assert "remote  up" in result.output and "remote-echo" in result.output
    assert "broken  down" in result.output
    as_json = CliRunner().invoke(cli.main, ["mcp", "list", "--config", str(path), "--json"])
    servers = {s["name"]: s for s in json.loads(as_json.output)["servers"]}
    assert "echo" in [t["name"] for t in servers["remote"]["tools"]]
