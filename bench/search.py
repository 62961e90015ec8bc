"""Log search latency over many synthetic rows: ``python -m bench.search --rows 1000000``.

Fills a database (once; reuse it with ``--db``) with rows shaped like the gateway's
(Zipf-distributed words, 5 providers, 50 keys, 5% errors), then runs each query
``--repeat`` times and prints p50 / p95 per query. The issue's target: p95 < 100 ms.
Filling 1M rows takes about 5 minutes on 2 cores.
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
from typing import Any

from finopsd.exchange import new_request_id
from finopsd.log.store import LogStore

VOCAB = [f"w{i}" for i in range(20_000)]
WEIGHTS = list(itertools.accumulate(1 / (i + 1) for i in range(len(VOCAB))))
PROVIDERS = ["anthropic", "openai", "groq", "gemini", "bedrock"]

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


def synthetic_row(rng: random.Random, i: int, t0: float) -> dict[str, Any]:
    prompt = words(rng, rng.randint(100, 600))
    if i % 1000 == 0:
        prompt += " zebra"
    if i % 10 == 0:
        prompt += " mango"
    failed = rng.random() < 0.05
    return {
        "id": new_request_id(), "ts": t0 + i * 0.5, "duration_ms": rng.uniform(100, 30_000), "ttft_ms": 200.0,
        "route": "chat", "provider": rng.choice(PROVIDERS), "model": f"m{rng.randint(0, 20)}",
        "upstream_model": "u", "key_name": f"k{rng.randint(0, 50)}", "team": f"t{rng.randint(0, 5)}",
        "client_ip": "127.0.0.1", "user_agent": "bench", "status_code": 500 if failed else 200,
        "status": "error" if failed else "ok", "error_type": None, "error_message": None, "stream": True,
        "finish_reason": "stop", "prompt_tokens": rng.randint(100, 50_000), "completion_tokens": rng.randint(1, 2000),
        "cached_tokens": 0, "reasoning_tokens": 0, "cost_usd": rng.uniform(0, 0.5), "cost_flags": None,
        "upstream_key_name": "uk", "attempts": [],
        "request": {"messages": [{"role": "system", "content": "You are helpful."},
                                 {"role": "user", "content": prompt}]},
        "response": {"content": words(rng, rng.randint(20, 120)), "reasoning": "", "tool_calls": []},
    }


async def fill(store: LogStore, rows: int) -> None:
    have = (await store.search(limit=1))["totals"]["requests"]
    rng = random.Random(7)
    t0 = time.time() - rows * 0.5
    started = time.perf_counter()
    for i in range(have, rows):
        store.submit(synthetic_row(rng, i, t0))
        if i % 2000 == 0:
            await store.wait_for_room()
            await asyncio.sleep(0)
    await store.flush()
    if rows > have:
        print(f"filled {rows - have} rows in {time.perf_counter() - started:.0f} s")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--db", type=Path, help="database to fill or reuse (default: a temporary one)")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = await LogStore.open(str(args.db or Path(tmp) / "search.db"), max_queue=50_000)
        try:
            await fill(store, args.rows)
            print(f"| query ({args.rows:,} rows) | p50 ms | p95 ms |\n| --- | --- | --- |")
            for label, query in QUERIES:
                times = []
                for _ in range(args.repeat):
                    started = time.perf_counter()
                    await store.search(**query)
                    times.append((time.perf_counter() - started) * 1000)
                p95 = statistics.quantiles(times, n=20)[-1] if len(times) > 1 else times[0]
                print(f"| {label} | {statistics.median(times):.1f} | {p95:.1f} |")
        finally:
            await store.close()


if __name__ == "__main__":
    asyncio.run(main())
