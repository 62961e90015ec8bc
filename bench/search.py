"""Log search and sessions-page latency over many synthetic rows: ``python -m bench.search``.

Fills a database (once; reuse it with ``--db``) with agent sessions shaped like the
gateway's (``--rows`` requests in sessions of ``--turns``; each turn resends the
history and adds a tool result and an answer of Zipf-distributed words; 5 providers,
50 keys, 5% errors), then runs each query ``--repeat`` times and prints p50 / p95.
The issue's targets: p95 < 100 ms for search and for the sessions page at 100,000
requests in 2,000 sessions (the defaults). Filling them takes about a minute on 2 cores.
``--url postgresql://...`` runs the same on a PostgreSQL log (an empty database, or one
this bench filled before).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import statistics
import tempfile
import time
from pathlib import Path
from collections.abc import Iterator
from typing import Any

from finopsd.exchange import new_request_id
from finopsd.log.pg.store import PgLogStore
from finopsd.log.store import LogStore

VOCAB = [f"w{i}" for i in range(20_000)]
WEIGHTS = list(itertools.accumulate(1 / (i + 1) for i in range(len(VOCAB))))
PROVIDERS = ["anthropic", "openai", "groq", "gemini", "bedrock"]

SESSION_QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("sessions: newest page", {}),
    ("sessions: page with totals", {"with_totals": True}),
    ("sessions: key filter", {"key": "k7"}),
    ("sessions: provider filter", {"provider": "groq", "with_totals": True}),
    ("sessions: status=error", {"status": "error"}),
    ("sessions: rare word", {"q": "zebra"}),
    ("sessions: word in 10% of turns", {"q": "mango"}),
]
QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("newest page, no filter", {}),
    ("provider filter", {"provider": "groq"}),
    ("status=error", {"status": "error"}),
    ("team + key", {"team": "t3", "key": "k7"}),
    ("rare word (1 row in 1000)", {"q": "zebra"}),
    ("word in 10% of rows", {"q": "mango"}),
    ("common word", {"q": "w1"}),
    ("phrase", {"q": '"w1 w2"'}),
    ("prefix", {"q": "w12*"}),
    ("hostile input", {"q": 'NEAR( "unbalanced * ) OR'}),
    ("common word, later page without totals", {"q": "w1", "with_totals": False}),
]


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(VOCAB, cum_weights=WEIGHTS, k=n))


def synthetic_rows(rows: int, turns: int, t0: float) -> Iterator[dict[str, Any]]:
    """Sessions of ``turns`` requests, interleaved as concurrent agents' would be."""
    rng = random.Random(7)
    system = {"role": "system", "content": "You are a coding agent. " + words(rng, 400)}
    live: dict[int, list[dict[str, Any]]] = {}
    for i in range(rows):
        s = i % 40 + 40 * (i // (40 * turns))  # 40 agents at a time, each task `turns` requests long
        history = live.setdefault(s, [system, {"role": "user", "content": f"task {s}: " + words(rng, 30)}])
        tool = words(rng, rng.randint(100, 600)) + (" zebra" if i % 1000 == 0 else "") + (
            " mango" if i % 10 == 0 else "")
        failed = rng.random() < 0.05
        yield {
            "id": new_request_id(), "ts": t0 + i * 0.5, "duration_ms": rng.uniform(100, 30_000), "ttft_ms": 200.0,
            "route": "chat", "provider": PROVIDERS[s % 5], "model": f"m{s % 20}", "upstream_model": "u",
            "key_name": f"k{s % 50}", "team": f"t{s % 5}", "client_ip": "127.0.0.1", "user_agent": "bench",
            "status_code": 500 if failed else 200, "status": "error" if failed else "ok", "error_type": None,
            "error_message": None, "stream": True, "finish_reason": "stop",
            "prompt_tokens": rng.randint(100, 50_000), "completion_tokens": rng.randint(1, 2000),
            "cached_tokens": 0, "reasoning_tokens": 0, "cost_usd": rng.uniform(0, 0.5), "cost_flags": None,
            "upstream_key_name": "uk", "attempts": [], "images": False,
            "request": {"messages": list(history)},
            "response": {"content": words(rng, rng.randint(20, 120)), "reasoning": "", "tool_calls": []},
        }  # fmt: skip
        history += [{"role": "assistant", "content": "calling a tool"}, {"role": "tool", "content": tool}]
        if len(history) >= 2 + 2 * turns:
            del live[s]


async def fill(store: LogStore, rows: int, turns: int) -> None:
    have = (await store.search(limit=1))["totals"]["requests"]
    if have:
        return
    started = time.perf_counter()
    for i, row in enumerate(synthetic_rows(rows, turns, time.time() - rows * 0.5)):
        store.submit(row)
        if i % 500 == 0:
            await store.wait_for_room()
            await asyncio.sleep(0)
    await store.flush()
    print(f"filled {rows} requests in {time.perf_counter() - started:.0f} s")


async def timed(label: str, call: Any, repeat: int) -> None:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    p95 = statistics.quantiles(times, n=20)[-1] if len(times) > 1 else times[0]
    print(f"| {label} | {statistics.median(times):.1f} | {p95:.1f} |", flush=True)


def parse_args(doc: str, url: bool = False) -> argparse.Namespace:
    """The options this bench and bench.pages share: how big a log, where, how many timings."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--turns", type=int, default=50, help="requests per session (default 50: 2,000 sessions)")
    ap.add_argument("--db", type=Path, help="database to fill or reuse (default: a temporary one)")
    if url:
        ap.add_argument("--url", help="a PostgreSQL log to fill or reuse instead (storage.url)")
    ap.add_argument("--repeat", type=int, default=20)
    return ap.parse_args()


async def main() -> None:
    args = parse_args(__doc__ or "", url=True)
    with tempfile.TemporaryDirectory() as tmp:
        store: Any = (await PgLogStore.open(args.url, max_queue=50_000) if args.url else
                      await LogStore.open(str(args.db or Path(tmp) / "search.db"), max_queue=50_000))
        try:
            await fill(store, args.rows, args.turns)
            print(f"| query ({args.rows:,} requests, {args.rows // args.turns:,} sessions) | p50 ms | p95 ms |")
            print("| --- | --- | --- |")
            for label, query in QUERIES:
                await timed(label, lambda: store.search(**query), args.repeat)  # noqa: B023
            for label, query in SESSION_QUERIES:
                await timed(label, lambda: store.sessions(**query), args.repeat)  # noqa: B023
        finally:
            await store.close()


if __name__ == "__main__":
    asyncio.run(main())
