"""Database bytes per byte of new content as an agent session grows: ``python -m bench.growth``.

One Roo-style task (``--system-kb`` system prompt, ``--tool-kb`` of tool result per
turn, the model's tool call each turn) sent through the log store the way the
recorder submits it: every request carries the whole history so far. After every
``--every`` turns the WAL is checkpointed and the file sizes are compared with the
content that was new (the JSON of the messages and answers added since the previous
turn). Also prints the writer's CPU per turn, which must not grow with the history.
The issue's target: <= 3x the new content after a checkpoint, flat as turns grow.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
from pathlib import Path
from collections.abc import Iterator
from typing import Any

from bench.agent_traffic import TOOLS, system_prompt, task

from finopsd.exchange import new_request_id
from finopsd.log.store import LogStore

def agent_rows(turns: int, system_kb: float, tool_kb: float, seed: int = 1) -> Iterator[tuple[dict[str, Any], int]]:
    """(row as the recorder submits it, bytes of new content) per turn of one growing task."""
    for turn, (messages, answer, new) in zip(range(turns), task(seed, system_prompt(system_kb), tool_kb)):
        row = {
            "id": new_request_id(), "ts": time.time(), "duration_ms": 800.0, "ttft_ms": 200.0, "route": "chat",
            "provider": "openai", "model": "openai/gpt-5", "upstream_model": "gpt-5", "key_name": "bench",
            "team": "t", "client_ip": "127.0.0.1", "user_agent": "RooCode/3.52", "status_code": 200,
            "status": "ok", "error_type": None, "error_message": None, "stream": True,
            "finish_reason": "tool_calls", "prompt_tokens": 1000 + 100 * turn, "completion_tokens": 50,
            "cached_tokens": 0, "reasoning_tokens": 0, "cost_usd": 0.01, "cost_flags": None,
            "upstream_key_name": "k", "attempts": [], "images": False, "body_bytes": 0,
            "request": {"model": "openai/gpt-5", "messages": messages, "tools": TOOLS, "stream": True},
            "response": answer,
        }  # fmt: skip
        yield row, new


def disk_bytes(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        conn.execute("pragma wal_checkpoint(truncate)")
    wal = db.with_name(db.name + "-wal")
    return db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=60)
    ap.add_argument("--system-kb", type=float, default=30)
    ap.add_argument("--tool-kb", type=float, default=4)
    ap.add_argument("--every", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "growth.db"
        store = await LogStore.open(str(db))
        empty = disk_bytes(db)
        new_total = sent_total = 0
        cpu_turns: list[float] = []
        print("| turns | request KB | new content KB | database KB (after checkpoint) | ratio | writer CPU ms/turn |")
        print("| --- | --- | --- | --- | --- | --- |")
        try:
            for turn, (row, new) in enumerate(agent_rows(args.turns, args.system_kb, args.tool_kb), 1):
                new_total += new
                size = len(json.dumps(row["request"]))
                sent_total += size
                cpu = time.process_time()
                store.submit(row)
                await store.flush()
                cpu_turns.append((time.process_time() - cpu) * 1000)
                if turn % args.every == 0 or turn == args.turns:
                    used = disk_bytes(db) - empty
                    recent = cpu_turns[-args.every:]
                    print(f"| {turn} | {size / 1024:.0f} | {new_total / 1024:.0f} | {used / 1024:.0f} |"
                          f" {used / new_total:.2f}x | {sum(recent) / len(recent):.1f} |", flush=True)
        finally:
            await store.close()
        print(f"\nsent {sent_total / 1e6:.1f} MB of request bodies for {new_total / 1e6:.2f} MB of new content"
              f" (an empty database is {empty / 1024:.0f} KB, not counted)")


if __name__ == "__main__":
    asyncio.run(main())
