"""Per-request cost of the live state: in-process against Redis. ``python -m bench.state``.

    .venv/bin/python -m bench.state                       # 5,000 requests at concurrency 1 and 32
    .venv/bin/python -m bench.state --requests 20000 --redis-url redis://127.0.0.1:6379/0

What one request costs governance's state: one ``admit`` (the key's and its team's rate
windows and day and month budgets checked, the request counted, its hold added) and one
``settle`` (hold released, cost and tokens charged), as ``Governance.pre``/``post`` call
them. Without ``--redis-url`` it starts a throwaway ``redis-server`` (Debian's package) on a
loopback port. Prints µs per request (concurrency 1: the latency a request gains; 32:
the event loop's cost per request when many are in flight) for both backends, and the
floor: two bare PINGs per request on the same client.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from finopsd.config import redact_url
from finopsd.spend import Counter
from finopsd.state import Charge, Hold, Limits, LiveState
from finopsd.state.local import LocalState
from finopsd.state.redis import RedisState

OWNERS = (
    Limits("key", "bench-key", rpm=10**9, tpm=10**12, budgets=(("day", 10**9), ("month", 10**9))),
    Limits("team", "bench-team", rpm=10**9, budgets=(("day", 10**9),)),
)
COUNTERS: set[Counter] = {(o.scope, o.name, p) for o in OWNERS for p, _ in o.budgets}


@contextmanager
def redis_server() -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server not found: apt-get install redis-server, or pass --redis-url")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as root:
        proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", root, "--save", "",
                                 "--appendonly", "no"], stdout=subprocess.DEVNULL)
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.kill()
            proc.wait()


async def no_log(counters: set[Counter], now: float) -> dict[Counter, tuple[float, float]]:
    return {c: (0.0, 0.0) for c in counters}  # an empty request log


async def one_request(state: LiveState) -> None:
    now = time.time()
    hold = await state.admit(OWNERS, now, 0.05, 960.0)
    assert hold is None or isinstance(hold, Hold), hold  # the limits are out of reach
    await state.settle(hold, Charge((("key", "bench-key"), ("team", "bench-team")), now, 0.012, 1500))


async def per_request_us(state: LiveState, requests: int, concurrency: int) -> float:
    queue = iter(range(requests))

    async def worker() -> None:
        for _ in queue:
            await one_request(state)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.perf_counter() - started) / requests * 1e6


async def two_pings_us(state: RedisState, requests: int, concurrency: int) -> float:
    """The floor: two bare round trips per request on the same client."""
    assert state.redis is not None
    queue = iter(range(requests))

    async def worker() -> None:
        for _ in queue:
            await state.redis.ping()  # type: ignore[union-attr]
            await state.redis.ping()  # type: ignore[union-attr]

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.perf_counter() - started) / requests * 1e6


async def measure(url: str, requests: int, levels: list[int]) -> None:
    local, shared = LocalState(), RedisState(url)
    await shared.open(lambda: None)  # type: ignore[arg-type,return-value]  # no views to refresh
    try:
        assert shared.up, shared.error
        for state in (local, shared):
            await state.track(COUNTERS, time.time(), no_log)
            await per_request_us(state, min(requests, 500), 4)  # warm: scripts loaded, pools filled
        print(f"live state per request (admit + settle), {requests} requests; Redis at {redact_url(url)}")
        print(f"{'concurrency':>12} {'in-process µs':>14} {'Redis µs':>10} {'added µs':>10} {'2 PINGs µs':>11}")
        for level in levels:
            ours = await per_request_us(local, requests, level)
            theirs = await per_request_us(shared, requests, level)
            floor = await two_pings_us(shared, requests, level)
            print(f"{level:>12} {ours:>14.1f} {theirs:>10.1f} {theirs - ours:>10.1f} {floor:>11.1f}")
    finally:
        await shared.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", default="1,32", help="comma-separated levels (default 1,32)")
    parser.add_argument("--redis-url", help="an existing Redis (default: start a throwaway redis-server)")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    if args.redis_url:
        asyncio.run(measure(args.redis_url, args.requests, levels))
        return
    with redis_server() as url:
        asyncio.run(measure(url, args.requests, levels))


if __name__ == "__main__":
    main()
