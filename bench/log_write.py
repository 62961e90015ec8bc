"""Log rows written per second, SQLite and PostgreSQL: ``python -m bench.log_write [--url postgresql://…]``.

``--tasks`` Roo-style agent tasks of ``--turns`` turns each (``bench.growth``'s rows: every
request carries the whole history so far), interleaved turn by turn as concurrent agents
send them, submitted to the store at once; the time is until the last one is committed.
SQLite writes into a temp file; PostgreSQL (with ``--url``) into that database, which
should be empty (the rows stay: look at them, then drop the database).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.growth import agent_rows

from finopsd.log.pg.store import PgLogStore
from finopsd.log.store import LogStore


async def rate(store: Any, rows: list[dict[str, Any]]) -> float:
    started = time.perf_counter()
    for row in rows:
        store.submit(row)
    await store.flush()
    seconds = time.perf_counter() - started
    assert store.failed_rows == 0
    await store.close()
    return len(rows) / seconds


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--url", help="a PostgreSQL database to write into as well")
    args = parser.parse_args()
    tasks = [[row for row, _ in agent_rows(args.turns, 6, 2, seed=t)] for t in range(args.tasks)]
    rows = [task[turn] for turn in range(args.turns) for task in tasks]
    with tempfile.TemporaryDirectory() as tmp:
        print(f"sqlite: {await rate(await LogStore.open(str(Path(tmp) / 'bench.db')), rows):,.0f} rows/s")
    if args.url:
        print(f"postgresql: {await rate(await PgLogStore.open(args.url), rows):,.0f} rows/s")


if __name__ == "__main__":
    asyncio.run(main())
