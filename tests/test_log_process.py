"""The log writer's own process: killed, signalled or orphaned, no row is lost or written twice.

A real ``finopsd serve`` (its writer process a child of it) answers the openai client
against the fake upstream; the rows are read from the SQLite file afterwards.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import openai

from finopsd.log.store import LogStore
from finopsd.scrub import Scrubber
from tests.fakes import FakeUpstream, Reply
from tests.test_cluster import answer
from tests.test_logstore import make_row


def children(pid: int) -> list[int]:
    found: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            found += [int(c) for c in f.read().split()]
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def gone(pid: int, within_s: float) -> bool:
    for _ in range(int(within_s / 0.05)):
        if not alive(pid):
            return True
        await asyncio.sleep(0.05)
    return False


async def start(daemon_for: Any, tmp_path: Path, fake: FakeUpstream) -> tuple[Any, Path, int]:
    """A gateway on its own log; (the daemon, its log file, its writer process's pid)."""
    fake.add(Reply(json=answer()))
    db = tmp_path / "log.db"
    config = tmp_path / "c.yaml"
    config.write_text(f"storage: {{path: '{db}'}}\nproviders:\n"
                      f"  openai: {{base_url: '{fake.url}', keys: [{{value: sk-upstream-key}}]}}\n")
    d = await daemon_for(config)
    async with asyncio.timeout(10):
        while not children(d.proc.pid):
            await asyncio.sleep(0.02)
    [writer] = children(d.proc.pid)
    return d, db, writer


async def ask(client: openai.AsyncOpenAI, text: str) -> str:
    raw = await client.chat.completions.with_raw_response.create(
        model="openai/gpt-5", messages=[{"role": "user", "content": text}])
    return str(raw.headers["x-request-id"])


def logged(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("select request_id from requests")]


async def test_a_killed_writer_process_is_replaced_and_every_row_lands_once(
    daemon_for: Any, tmp_path: Path, fake_openai: FakeUpstream
) -> None:
    d, db, writer = await start(daemon_for, tmp_path, fake_openai)
    ids: list[str] = []
    async with openai.AsyncOpenAI(base_url=d.url + "/openai", api_key="none", max_retries=0) as client:

        async def agent(n: int) -> None:
            for i in range(40):
                ids.append(await ask(client, f"task {n} turn {i}"))

        load = asyncio.gather(*(agent(n) for n in range(4)))
        while len(ids) < 30:
            await asyncio.sleep(0.005)
        os.kill(writer, signal.SIGKILL)  # as the OOM killer would, mid-load
        await load
    async with aiohttp.ClientSession() as s, s.get(d.url + "/metrics") as r:
        assert "finopsd_log_writer_restarts_total 1.0" in await r.text()
    d.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(d.proc.wait(), 20) == 0
    rows = logged(db)
    assert len(rows) == len(set(rows)) == 160  # none lost, none twice
    assert set(rows) == set(ids)
    assert b"log writer process exited (status -9); starting a new one" in await d.proc.stderr.read()


async def test_sigterm_to_the_whole_group_drains_every_row_through_the_writer(
    daemon_for: Any, tmp_path: Path, fake_openai: FakeUpstream
) -> None:
    """systemd stops a unit by sending SIGTERM to every process in it: the writer process waits
    for the gateway to drain its queue into it, then both exit."""
    d, db, writer = await start(daemon_for, tmp_path, fake_openai)
    async with openai.AsyncOpenAI(base_url=d.url + "/openai", api_key="none", max_retries=0) as client:
        ids = [await ask(client, f"turn {i}") for i in range(20)]
    for pid in (writer, d.proc.pid):
        os.kill(pid, signal.SIGTERM)
    assert await asyncio.wait_for(d.proc.wait(), 20) == 0
    assert await gone(writer, 5)
    assert sorted(logged(db)) == sorted(ids)


async def test_the_writer_process_ends_when_the_gateway_is_killed(
    daemon_for: Any, tmp_path: Path, fake_openai: FakeUpstream
) -> None:
    d, _, writer = await start(daemon_for, tmp_path, fake_openai)
    d.proc.kill()
    await d.proc.wait()
    assert await gone(writer, 5)  # no orphan holding the database file


async def test_a_secret_learned_after_start_is_scrubbed_by_the_writer_process(tmp_path: Path) -> None:
    scrubber = Scrubber(["sk-configured-secret"])
    store = await LogStore.open(str(tmp_path / "log.db"), scrubber=lambda: scrubber)
    try:
        store.submit(make_row("before", request={"messages": [{"role": "user", "content": "sk-configured-secret"}]}))
        await store.flush()  # the process has started with the configured secret
        scrubber.learn("ya29.token-fetched-at-run-time")  # as a Vertex token is
        store.submit(make_row("after", request={"messages": [
            {"role": "user", "content": "echo ya29.token-fetched-at-run-time and sk-configured-secret"}]}))
        await store.flush()
        before, after = await store.get("before"), await store.get("after")
    finally:
        await store.close()
    assert before is not None and after is not None
    assert before["request"]["messages"][0]["content"] == "[secret]"
    assert after["request"]["messages"][0]["content"] == "echo [secret] and [secret]"
