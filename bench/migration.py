"""How fast an old log (m001-m006: every request whole) is rewritten at startup: ``python -m bench.migration``.

Builds an m006 database of ``--sessions`` Roo-style tasks of ``--turns`` turns as the
old writer stored them (request_json, prompt_text and its FTS5 index), then times
``LogStore.open`` on it, which runs m007. Prints the old and new sizes and the rate,
so the time for a bigger log can be read off.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
from pathlib import Path

from bench.growth import agent_rows
from finopsd.log.schema import MIGRATIONS, SCALARS
from finopsd.log.store import LogStore
from finopsd.log.text import prompt_text, response_text


def old_log(path: Path, sessions: int, turns: int) -> int:
    """Write the m006 database; return its rows."""
    old = [c for c in SCALARS if c != "cost_without_cache_usd"]  # m006 had every scalar but this one
    columns = ("request_id", *old, "attempts", "prompt_text", "response_text", "request_json", "response_json")
    n = 0
    with sqlite3.connect(path, isolation_level=None) as db:
        db.execute("pragma auto_vacuum = incremental")  # as LogStore.open has always made it
        db.execute("pragma journal_mode = wal")
        db.execute("create table _migrations (name text primary key, applied_at real not null)")
        for fn in MIGRATIONS[:6]:
            fn(db)
            db.execute("insert into _migrations values (?, 0)", (fn.__name__,))
        for s in range(sessions):
            db.execute("begin")
            for row, _ in agent_rows(turns, 30, 4, seed=s):
                db.execute(
                    f"insert into requests ({', '.join(columns)}) values ({', '.join('?' * len(columns))})",
                    (row["id"], *[int(v) if isinstance(v, bool) else v for v in (row.get(c) for c in old)],
                     "[]", prompt_text(row["request"]), response_text(row["response"]),
                     json.dumps(row["request"]), json.dumps(row["response"])),
                )  # fmt: skip
                n += 1
            db.execute("commit")
        db.execute("pragma wal_checkpoint(truncate)")
    return n


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--turns", type=int, default=60)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "old.db"
        rows = old_log(db, args.sessions, args.turns)
        before = db.stat().st_size
        started = time.perf_counter()
        store = await LogStore.open(str(db))
        took = time.perf_counter() - started
        await store.close()
        after = db.stat().st_size
        print(f"m006 log: {rows} requests in {args.sessions} sessions, {before / 1e6:.1f} MB")
        print(f"m007 rewrite at startup: {took:.1f} s ({rows / took:.0f} requests/s, {before / 1e6 / took:.1f} MB/s"
              f" of old log); the file is now {after / 1e6:.2f} MB")
        print(f"a 1 GB log of such sessions would take about {1e3 / (before / 1e6 / took):.0f} s")


if __name__ == "__main__":
    asyncio.run(main())
