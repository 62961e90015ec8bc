"""Reading what the gateway under test logged, after flushing its writer."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from finopsd.appkeys import LOGSTORE


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
