"""m007's data move: every request logged whole (m001-m006) rewritten as content-addressed pieces.

Rows are read oldest first and go through the writer's own row code, so they are
threaded into sessions by the same prefix rule as live traffic (old rows carry no
session headers) and each message is stored and indexed once. It runs inside m007's
transaction, before the gateway opens its port: a crash half-way leaves the old
schema untouched, and the next start begins again. Progress is logged every 5 s.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from typing import Any, Final

from finopsd.log.schema import SCALARS
from finopsd.log.dialect import SQLite
from finopsd.log.writer import Writer

log = logging.getLogger(__name__)

BATCH: Final = 200
PROGRESS_EVERY_S: Final = 5.0


def _loads(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None  # a row the old writer stored as text it could not encode


def rewrite_requests(db: sqlite3.Connection, old: str) -> int:
    """Move every row of table ``old`` into ``requests``; return how many moved."""
    (total,) = db.execute(f"select count(*) from {old}").fetchone()
    writer = Writer(SQLite(db))
    # a column added with m007 (cost_without_cache_usd) reads as null from the old table
    present = {r[1] for r in db.execute(f"pragma table_info({old})")}
    columns = ", ".join(c if c in present else f"null as {c}"
                        for c in ("id", "request_id", *SCALARS, "attempts", "request_json", "response_json"))
    moved, started, shown = 0, time.monotonic(), time.monotonic()
    after: tuple[float, int] = (float("-inf"), -1)
    while True:
        rows = db.execute(
            f"select {columns} from {old} where (ts, id) > (?, ?) order by ts, id limit ?", (*after, BATCH)
        ).fetchall()
        if not rows:
            break
        batch: list[dict[str, Any]] = []
        for r in rows:
            row: dict[str, Any] = dict(zip(("id", *SCALARS), r[1:-3]))
            row["stream"] = None if row["stream"] is None else bool(row["stream"])
            row["attempts"] = _loads(r[-3]) or []
            row["request"], row["response"] = _loads(r[-2]), _loads(r[-1])
            row["images"] = False  # the old writer already replaced them
            batch.append(row)
        writer.write_rows(batch)
        moved += len(rows)
        after = (rows[-1][2], rows[-1][0])
        if time.monotonic() - shown >= PROGRESS_EVERY_S:
            shown = time.monotonic()
            rate = moved / max(shown - started, 1e-9)
            log.info("log migration: %d of %d requests rewritten (%.0f%%, %.0f/s, about %.0f s left)",
                     moved, total, 100 * moved / max(total, 1), rate, (total - moved) / max(rate, 1e-9))
    if total:
        log.info("log migration: %d requests rewritten in %.1f s", moved, time.monotonic() - started)
    return moved
