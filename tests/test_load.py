"""Load and process faults: many open streams, a stalled client, SIGTERM / SIGHUP / kill -9 under load."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from finopsd.appkeys import LOGSTORE
from tests.fakes import FakeUpstream, Reply
from tests.test_routes_openai import MSGS

CHAT = "/openai/chat/completions"
BODY = {"model": "openai/gpt-5", "messages": MSGS, "stream": True}


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def hold_streams(url: str, n: int, opened: asyncio.Event, release: asyncio.Event) -> list[bytes]:
    """Open n streams, signal once every one has its first event, then read them to the end."""
    seen = 0

    async def one(session: aiohttp.ClientSession) -> bytes:
        nonlocal seen
        async with session.post(url, json=BODY) as resp:
            first = await resp.content.readline()
            seen += 1
            if seen == n:
                opened.set()
            await release.wait()
            return first + await resp.read()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        return await asyncio.gather(*(one(session) for _ in range(n)))


async def test_a_thousand_open_streams_without_errors_or_leaks(
    gateway: TestClient, fake_openai: FakeUpstream
) -> None:
    gate = asyncio.Event()
    fake_openai.play("openai/text_stream.sse", hold_before=2, until=gate)
    url = str(gateway.make_url(CHAT))
    fds = []
    for n in (1000, 300):  # the second round reuses pooled upstream connections
        gate.clear()
        opened = asyncio.Event()
        task = asyncio.create_task(hold_streams(url, n, opened, gate))
        async with asyncio.timeout(60):
            await opened.wait()
            gate.set()
            bodies = await task
        assert all(b.rstrip().endswith(b"data: [DONE]") for b in bodies)
        fds.append(open_fds())
    assert fds[1] <= fds[0] + 20, fds
    store = gateway.server.app[LOGSTORE]
    await store.flush()
    totals = (await store.search(status="ok"))["totals"]
    assert totals["requests"] == 1300


async def test_a_stalled_client_does_not_make_the_gateway_buffer(
    gateway: TestClient, fake_openai: FakeUpstream
) -> None:
    piece = {"id": "c", "object": "chat.completion.chunk", "model": "gpt-5",
             "choices": [{"index": 0, "delta": {"content": "x" * 32_000}, "finish_reason": None}]}
    frame = b"data: " + json.dumps(piece).encode() + b"\n\n"
    total = 64 * 1024 * 1024
    fake_openai.add(Reply(frames=[frame] * (total // len(frame))))
    resp = await gateway.post(CHAT, json=BODY)
    await resp.content.readline()
    await asyncio.sleep(1.0)  # the client reads nothing for a while
    stalled_at = fake_openai.sent_bytes
    assert stalled_at < total / 4, stalled_at  # backpressure reached the upstream
    got = len(await resp.read())
    assert got > total * 0.9 and fake_openai.sent_bytes > total * 0.9


async def test_sigterm_with_a_hundred_streams_in_flight_logs_them_all(
    daemon_for: Any, tmp_path: Path, fake_openai: FakeUpstream
) -> None:
    gate = asyncio.Event()
    fake_openai.play("openai/text_stream.sse", hold_before=2, until=gate)
    db = tmp_path / "load.db"
    path = tmp_path / "c.yaml"
    path.write_text(f"storage: {{path: '{db}'}}\nproviders:\n  openai: {{base_url: '{fake_openai.url}'}}\n")
    d = await daemon_for(path)
    opened = asyncio.Event()
    release = asyncio.Event()
    task = asyncio.create_task(hold_streams(d.url + CHAT, 100, opened, release))
    async with asyncio.timeout(30):
        await opened.wait()
        d.proc.send_signal(signal.SIGTERM)
        await d.read_stderr_until("draining")
        gate.set()
        release.set()
        bodies = await task
        assert await d.proc.wait() == 0
    assert all(b.rstrip().endswith(b"data: [DONE]") for b in bodies)
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*), sum(status = 'ok') from requests").fetchone() == (100, 100)


async def test_sighup_under_load_keeps_streams_flowing(
    daemon_for: Any, tmp_path: Path, fake_openai: FakeUpstream
) -> None:
    gate = asyncio.Event()
    fake_openai.play("openai/text_stream.sse", hold_before=2, until=gate)
    path = tmp_path / "c.yaml"
    path.write_text(f"storage: {{path: '{tmp_path / 'h.db'}'}}\nproviders:\n  openai: {{base_url: '{fake_openai.url}'}}\n")
    d = await daemon_for(path)
    opened, release = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(hold_streams(d.url + CHAT, 50, opened, release))
    async with asyncio.timeout(30):
        await opened.wait()
        path.write_text(path.read_text() + f"  groq: {{base_url: '{fake_openai.url}'}}\n")
        d.proc.send_signal(signal.SIGHUP)
        await d.read_stderr_until("config reloaded")
        gate.set()
        release.set()
        bodies = await task
    assert all(b.rstrip().endswith(b"data: [DONE]") for b in bodies)


async def test_kill_9_under_load_leaves_a_database_that_opens_clean(
    daemon_for: Any, tmp_path: Path, fake_openai: FakeUpstream
) -> None:
    fake_openai.play("openai/text_stream.sse")
    db = tmp_path / "crash.db"
    path = tmp_path / "c.yaml"
    path.write_text(f"storage: {{path: '{db}'}}\nproviders:\n  openai: {{base_url: '{fake_openai.url}'}}\n")
    d = await daemon_for(path)

    async def traffic() -> None:
        async with aiohttp.ClientSession() as s:
            while True:
                try:
                    async with s.post(d.url + CHAT, json=BODY) as r:
                        await r.read()
                except aiohttp.ClientError:
                    return

    workers = [asyncio.create_task(traffic()) for _ in range(8)]
    await asyncio.sleep(1.0)
    d.proc.kill()
    await d.proc.wait()
    await asyncio.gather(*workers)
    with sqlite3.connect(db) as conn:
        assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
        before = conn.execute("select count(*) from requests").fetchone()[0]
    assert before > 0
    d2 = await daemon_for(path)  # restarts on the same database
    async with aiohttp.ClientSession() as s, s.post(d2.url + CHAT, json=BODY) as r:
        assert r.status == 200 and (await r.read()).rstrip().endswith(b"[DONE]")
    d2.proc.send_signal(signal.SIGTERM)
    assert await d2.proc.wait() == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from requests").fetchone()[0] == before + 1
