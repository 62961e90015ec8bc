"""The aiohttp load driver: a separate process, so its CPU never counts as the gateway's.

It reads one JSON command per stdin line and answers one JSON line on stdout:

    {"url": ..., "body": "<request JSON>", "headers": {...}, "stream": true,
     "concurrency": 32, "duration": 2.0, "record": true}
    -> {"n": completed requests, "errors": ..., "error_sample": ..., "elapsed": s,
        "lat": [ms, ...], "ttft": [ms, ...], "cpu_s": driver CPU seconds}

``concurrency`` workers loop until ``duration`` is up, each sending one request at a
time over keep-alive connections (one session per URL, kept across commands so a
target's connections stay warm between slices). A request started before the end
finishes and counts. Latency is from send to the last byte; TTFT (streams) is to
the first ``data:`` line. The process stays up between commands so its start-up
(importing aiohttp) is paid once.

An agent-session command sends growing conversations instead of one body:

    {"agents": 8, "url": ..., "model": ..., "headers": {...}, "duration": 60,
     "system_kb": 26, "tool_kb": 9.5, "max_kb": 400, "seed": 0}
    -> the same answer, plus "sent_mb"

Each of ``agents`` workers runs one task after another: every turn resends the whole
history plus one tool result (bench.agent_traffic), streamed, until the body would
pass ``max_kb``; then it starts a new task.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiohttp

from bench.agent_traffic import GrowingBody, system_prompt

MAX_REQUEST_S = 30  # one request that takes longer is an error, not a hang
MAX_WAIT_FOR_DONE_S = MAX_REQUEST_S + 5


class Tally:
    __slots__ = ("lat", "ttft", "errors", "error_sample")

    def __init__(self) -> None:
        self.lat: list[float] = []
        self.ttft: list[float] = []
        self.errors = 0
        self.error_sample: str | None = None

    def fail(self, why: str) -> None:
        self.errors += 1
        if self.error_sample is None:
            self.error_sample = why[:300]


async def one(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str],
              stream: bool, tally: Tally) -> None:
    clock = time.perf_counter
    t0 = clock()
    ttft = None
    async with session.post(url, data=body, headers=headers) as resp:
        if resp.status != 200:
            tally.fail(f"HTTP {resp.status}: {(await resp.read())[:200]!r}")
            return
        if stream:
            content = resp.content
            for _ in range(10_000):  # bounded: headers of a stream never run this long
                line = await content.readline()
                if not line or line.startswith(b"data:"):
                    break
            ttft = clock() - t0
            rest = await content.read()
            if b"data: [DONE]" not in rest:
                tally.fail(f"stream ended without [DONE]: {rest[-200:]!r}")
                return
        else:
            data = await resp.read()
            if not data.startswith(b"{") or b'"choices"' not in data:
                tally.fail(f"not a chat completion: {data[:200]!r}")
                return
    tally.lat.append((clock() - t0) * 1000)
    if ttft is not None:
        tally.ttft.append(ttft * 1000)


async def worker(session: aiohttp.ClientSession, cmd: dict[str, Any], body: bytes, deadline: float,
                 tally: Tally) -> None:
    headers = {"Content-Type": "application/json", **cmd.get("headers", {})}
    while time.perf_counter() < deadline:
        try:
            async with asyncio.timeout(MAX_REQUEST_S):
                await one(session, cmd["url"], body, headers, bool(cmd["stream"]), tally)
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            tally.fail(f"{type(e).__name__}: {e}")
            await asyncio.sleep(0.01)  # a refused connection must not spin


async def agent(session: aiohttp.ClientSession, cmd: dict[str, Any], seed: int, system: str, deadline: float,
                tally: Tally, sent: list[int]) -> None:
    headers = {"Content-Type": "application/json", **cmd.get("headers", {})}
    limit = float(cmd["max_kb"]) * 1024
    while time.perf_counter() < deadline:
        task = GrowingBody(cmd["model"], seed, system, float(cmd["tool_kb"]))
        seed += 1_000  # the next task of this worker: new first words, so a new session
        while time.perf_counter() < deadline and len(body := task.next()) <= limit:
            sent[0] += len(body)
            try:
                async with asyncio.timeout(MAX_REQUEST_S):
                    await one(session, cmd["url"], body, headers, True, tally)
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                tally.fail(f"{type(e).__name__}: {e}")
                await asyncio.sleep(0.01)


async def run(sessions: dict[str, aiohttp.ClientSession], cmd: dict[str, Any]) -> dict[str, Any]:
    url = cmd["url"]
    session = sessions.get(url)
    if session is None:
        # limit=0: the workers alone bound the connections; no pool queueing inside the driver
        session = sessions[url] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
        )
    tally = Tally()
    sent = [0]
    cpu0, t0 = time.process_time(), time.perf_counter()
    deadline = t0 + float(cmd["duration"])
    if "agents" in cmd:
        system = system_prompt(float(cmd["system_kb"]))
        tasks = [asyncio.create_task(agent(session, cmd, int(cmd.get("seed", 0)) + i, system, deadline, tally, sent))
                 for i in range(int(cmd["agents"]))]
    else:
        body = cmd["body"].encode()
        tasks = [asyncio.create_task(worker(session, cmd, body, deadline, tally))
                 for _ in range(int(cmd["concurrency"]))]
    done, pending = await asyncio.wait(tasks, timeout=float(cmd["duration"]) + MAX_WAIT_FOR_DONE_S)
    for task in pending:
        task.cancel()
    for task in done:
        if task.exception() is not None:
            tally.fail(f"worker crashed: {task.exception()!r}")
    elapsed = time.perf_counter() - t0
    out: dict[str, Any] = {
        "n": len(tally.lat), "errors": tally.errors, "error_sample": tally.error_sample,
        "elapsed": elapsed, "cpu_s": time.process_time() - cpu0, "sent_mb": sent[0] / 1e6,
    }
    if cmd.get("record", True):
        out["lat"] = [round(x, 4) for x in tally.lat]
        out["ttft"] = [round(x, 4) for x in tally.ttft]
    return out


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    sessions: dict[str, aiohttp.ClientSession] = {}
    try:
        while True:
            line = await reader.readline()
            if not line:
                return  # the orchestrator went away
            result = await run(sessions, json.loads(line))
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()
    finally:
        for session in sessions.values():
            await session.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
