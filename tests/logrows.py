"""Reading what the gateway under test logged, after flushing its writer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from finopsd.appkeys import LOGSTORE, RUNTIME


async def logged_rows(gateway: TestClient, **filters: Any) -> list[dict[str, Any]]:
    """Full rows (conversation included), newest first."""
    store = gateway.server.app[LOGSTORE]
    await store.flush()
    page = await store.search(limit=100, **filters)
    return [await store.get(item["id"]) for item in page["items"]]


async def last_row(gateway: TestClient) -> dict[str, Any]:
    rows = await logged_rows(gateway)
    assert rows, "nothing was logged"
    return rows[0]


def stored_bytes(gateway: TestClient) -> bytes:
    """Everything the log database holds, as stored: the SQLite files' bytes, or on PostgreSQL
    every value of every table (text as UTF-8, bytea as is)."""
    storage = gateway.server.app[RUNTIME].config.storage
    if not storage.url:
        path = Path(storage.path)
        files = [p for p in path.parent.iterdir() if p.name.startswith(path.name)]
        assert path in files
        return b"".join(p.read_bytes() for p in files)
    import psycopg

    out = []
    with psycopg.connect(storage.url) as db:
        tables = [r[0] for r in db.execute("select tablename from pg_tables where schemaname = 'public'")]
        for table in tables:
            for row in db.execute(f'select * from "{table}"'):  # noqa: S608 - names from the catalogue
                out += [v if isinstance(v, bytes) else str(v).encode() for v in row if v is not None]
    return b"\n".join(out)
