"""/usage and /api/usage latency over a large log: ``python -m bench.usage [--rows 1000000]``.

Rows go straight into ``requests`` with one INSERT per row in big transactions (the
writer's content and session work would take an hour at 1M rows and is not what is
measured), so m009's trigger keeps the roll-ups exactly as it does at run time; the
fill's rate with and without that trigger (the table's indexes and the spend trigger
both times) is printed too: the trigger's cost per logged request.
The traffic: 30 days, 40 keys in 10 teams, each key on 2 of 8 models (4 providers),
10% errors, lognormal latencies. The issue's target: /usage under 200 ms at 1M rows.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import tempfile
import time
from pathlib import Path


from bench.pages import serving
from bench.search import timed
from finopsd.log.store import LogStore

MODELS = [(p, f"{p}/model-{i}") for i, p in enumerate(["openai", "anthropic", "groq", "gemini"] * 2)]
COLUMNS = ("request_id", "ts", "duration_ms", "ttft_ms", "provider", "model", "key_name", "team", "status",
           "status_code", "error_type", "stream", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd",
           "cost_without_cache_usd", "session", "turn")  # fmt: skip
INSERT = f"insert into requests ({', '.join(COLUMNS)}) values ({', '.join('?' * len(COLUMNS))})"


def rows(n: int, start: int, now: float, seed: int) -> list[tuple[object, ...]]:
    pick = random.Random(0)  # the same keys in every batch
    keys = [(f"key-{k}", f"team-{k % 10}", pick.sample(MODELS, 2)) for k in range(40)]
    rng = random.Random(seed)
    out = []
    for i in range(start, start + n):
        key, team, models = rng.choice(keys)
        provider, model = rng.choice(models)
        failed = rng.random() < 0.1
        stream = rng.random() < 0.8
        cost = rng.uniform(0, 0.05)
        out.append((f"bench-{i}", now - rng.uniform(0, 30 * 86400), rng.lognormvariate(7, 0.8),
                    rng.lognormvariate(6, 0.7) if stream else None, provider, model, key, team,
                    "error" if failed else "ok", 502 if failed else 200, "upstream_error" if failed else None,
                    int(stream), rng.randint(100, 60_000), rng.randint(10, 3000), rng.randint(0, 40_000), cost,
                    cost * 2, i // 50, i % 50))  # fmt: skip
    return out


def _insert(path: str, count: int, now: float) -> float:
    """Rows per second, inserting ``count`` rows in transactions of 50,000."""
    db = sqlite3.connect(path, isolation_level=None)
    started, step = time.perf_counter(), 50_000
    for offset in range(0, count, step):
        db.execute("begin")
        db.executemany(INSERT, rows(min(step, count - offset), offset, now, offset))
        db.execute("commit")
    db.close()
    return count / (time.perf_counter() - started)


async def fill(path: str, count: int, scratch: str) -> None:
    now = time.time()
    # the trigger's cost: a sample into the same schema with the roll-up trigger dropped
    await (await LogStore.open(scratch)).close()
    with sqlite3.connect(scratch) as db:
        db.execute("drop trigger requests_usage")
    sample = min(count, 50_000)
    bare = _insert(scratch, sample, now)
    kept = _insert(path, count, now)
    with sqlite3.connect(path) as db:
        sizes = {t: db.execute(f"select count(*) from {t}").fetchone()[0]
                 for t in ("usage_dims", "usage_rollup", "usage_latency", "usage_errors")}  # fmt: skip
    print(f"fill: {bare:,.0f} rows/s without the roll-up trigger ({sample:,} rows), {kept:,.0f} rows/s with it"
          f" ({1e6 / kept - 1e6 / bare:.0f} us more per row); roll-up rows: {sizes}\n")


async def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--db", type=Path, help="database to fill (or reuse, when it has rows)")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = str(args.db or Path(tmp) / "usage.db")
        await (await LogStore.open(db)).close()  # migrated
        with sqlite3.connect(db) as conn:
            logged = conn.execute("select count(*) from requests").fetchone()[0]
        if not logged:
            await fill(db, args.rows, str(Path(tmp) / "scratch.db"))
            logged = args.rows
        async with serving(db) as (_, get):
            print(f"| GET ({logged:,} requests over 30 days) | p50 ms | p95 ms |")
            print("| --- | --- | --- |")
            for path in ("/usage", "/usage?range=30d&group_by=team", "/usage?range=24h&group_by=model",
                         "/usage?range=7d&grain=hour&group_by=key", "/api/usage?range=30d&group_by=team",
                         "/api/usage?range=7d&group_by=model&team=team-3",
                         "/api/usage?range=30d&group_by=key&metric=cost_usd"):
                await timed(path, lambda: get(path), args.repeat)  # noqa: B023


if __name__ == "__main__":
    asyncio.run(main())
