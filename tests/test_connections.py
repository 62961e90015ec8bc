"""Client connections are bounded: keep-alive and header and body read timeouts, and a cap on
how many are open, so idle or slow connections never keep real requests out."""

from __future__ import annotations

import asyncio
import resource
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream, Reply, fixture_frames
from tests.test_reliability import OK
from tests.test_routes_openai import MSGS

QUICK = "server: {keepalive_timeout_s: 0.3, body_timeout_s: 0.3}\n"


async def _connect(gw: TestClient) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(gw.server.host, gw.server.port)


@pytest.mark.parametrize("sent", [b"", b"POST /openai/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: applic"],
                         ids=["nothing", "headers_never_finished"])
async def test_a_connection_without_a_whole_request_is_closed(
    make_gateway: Any, fake_openai: FakeUpstream, sent: bytes
) -> None:
    gw = await make_gateway(gateway_yaml(fake_openai.url, QUICK))
    reader, writer = await _connect(gw)
    writer.write(sent)
    async with asyncio.timeout(10):  # a hang guard; before, such a connection stayed an hour
        assert await reader.read() == b""
    writer.close()


async def test_a_body_that_never_finishes_is_408(make_gateway: Any, fake_openai: FakeUpstream) -> None:
    gw = await make_gateway(gateway_yaml(fake_openai.url, QUICK))
    reader, writer = await _connect(gw)
    writer.write(b"POST /openai/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n{\"model\": ")
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    writer.close()


async def test_an_idle_kept_alive_connection_is_closed_after_keepalive_timeout(
    make_gateway: Any, fake_openai: FakeUpstream
) -> None:
    gw = await make_gateway(gateway_yaml(fake_openai.url, QUICK))
    reader, writer = await _connect(gw)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(10):
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        while await reader.read(65536):
            pass  # the rest of the answer, then the close
    writer.close()


def _room_for(n: int) -> None:
    """Raise this process's soft open-files limit so it can hold ``n`` client sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = n + 256
    if soft < wanted:
        assert hard == resource.RLIM_INFINITY or hard >= wanted, f"hard open files limit {hard} < {wanted}"
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def test_1100_idle_connections_do_not_starve_healthz_or_chat(
    daemon_for: Any, tmp_path: Path, fake_openai: FakeUpstream
) -> None:
    """The shipped unit's old limit: 1,024 descriptors, and more idle connections than that."""
    _room_for(1100)
    fake_openai.answer_json(OK)
    path = tmp_path / "c.yaml"
    path.write_text(gateway_yaml(fake_openai.url))
    d = await daemon_for(path, {"TEST_OPENAI_KEY": "sk-x"}, open_files=1024)
    host, port = d.url.removeprefix("http://").rsplit(":", 1)
    idle = []
    try:
        async with asyncio.timeout(60):
            for _ in range(1100):
                idle.append(await asyncio.open_connection(host, int(port)))
        async with asyncio.timeout(10), aiohttp.ClientSession() as s:  # a hang guard
            async with s.get(d.url + "/healthz") as r:
                assert r.status == 200
            async with s.post(d.url + "/openai/chat/completions", json={"model": "openai/gpt-5", "messages": MSGS}) as r:
                assert r.status == 200
                assert (await r.json())["choices"][0]["message"]["content"] == "ok"
    finally:
        for _, writer in idle:
            writer.close()
    d.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(d.proc.wait(), 20) == 0


async def test_at_the_cap_with_every_connection_busy_a_new_one_gets_503(
    daemon_for: Any, tmp_path: Path, fake_openai: FakeUpstream
) -> None:
    gate = asyncio.Event()
    fake_openai.add(Reply(frames=fixture_frames("openai/text_stream.sse"), hold_before=2, until=gate))
    path = tmp_path / "c.yaml"
    path.write_text(gateway_yaml(fake_openai.url, "server: {max_connections: 3}\n"))
    d = await daemon_for(path, {"TEST_OPENAI_KEY": "sk-x"})
    body = {"model": "openai/gpt-5", "messages": MSGS, "stream": True}
    async with asyncio.timeout(20):
        sessions = [aiohttp.ClientSession() for _ in range(4)]
        try:
            streams = [await s.post(d.url + "/openai/chat/completions", json=body) for s in sessions[:3]]
            for r in streams:
                assert b"chat.completion.chunk" in await r.content.readline()
            async with sessions[3].get(d.url + "/healthz") as r:
                assert r.status == 503
                error = (await r.json())["error"]
            assert error["code"] == "too_many_connections" and "max_connections" in error["message"]
            gate.set()
            for r in streams:
                assert (await r.read()).rstrip().endswith(b"data: [DONE]")
        finally:
            for s in sessions:
                await s.close()
    d.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(d.proc.wait(), 20) == 0
