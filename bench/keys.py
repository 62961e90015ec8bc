"""The key check with many keys: ``python -m bench.keys [--keys 10000]``.

Makes ``--keys`` dashboard keys through ``KeyStore`` (as ``POST /api/keys`` does) in a temp
database, then times, per call: ``Governance.identify`` for a known key and an unknown one
(a dict lookup by SHA-256 digest), the loop over every key it replaced (the earlier
``find_key``, kept here for comparison), loading the store at startup, the merge and index
rebuilt after a change, and the report plus one page of /keys. The lookup's time should not grow with the key count; the loop's does.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import tempfile
import time
from pathlib import Path
from typing import Any

from finopsd.config import parse
from finopsd.governance import Governance, index_keys
from finopsd.keystore import KeyStore
from finopsd.routes.keys import render_keys


def per_call_us(fn: Any, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


def loop_over_keys(keys: Any, presented: str) -> Any:
    digest = hashlib.sha256(presented.encode()).hexdigest()
    found = None
    for key in keys:
        if hmac.compare_digest(key.key_sha256, digest):
            found = key
    return found


async def main(count: int, calls: int) -> None:
    config = parse("auth: {required: true}\n", env={})
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "keys.db")
        store = await KeyStore.open(path)
        started = time.perf_counter()
        secrets = []
        for i in range(count):
            _, secret = await store.create("key", {"name": f"key-{i:05d}", "budgets": [{"usd": 10, "period": "day"}]},
                                           config, "bench", None)
            secrets.append(secret)
        made = time.perf_counter() - started
        await store.close()
        started = time.perf_counter()
        store = await KeyStore.open(path)
        loaded = time.perf_counter() - started
        merged = store.merged(config)
        gov = Governance(merged)
        known, unknown = secrets[count // 2], "sk-fo-not-a-key-000000000000000000"
        assert gov.identify({}, known)[1] is not None and gov.identify({}, unknown)[1] is None
        hit = per_call_us(lambda: gov.identify({}, known), calls)
        miss = per_call_us(lambda: gov.identify({}, unknown), calls)
        loop = per_call_us(lambda: loop_over_keys(merged.virtual_keys, known), max(10, calls // 100))
        started = time.perf_counter()
        index_keys(store.merged(config).virtual_keys)
        remerged = time.perf_counter() - started
        started = time.perf_counter()
        report = gov.report()
        for item in report["keys"]:
            item.update(source="dashboard", version=1, description=None, owner=None)
        page = render_keys(report, "t" * 64, [], page=0)
        rendered = time.perf_counter() - started
        await store.close()
    print(f"{count:,} dashboard keys: made in {made:.1f} s ({count / made:,.0f}/s, one transaction each)")
    print(f"  startup load of the store: {loaded * 1000:.0f} ms")
    print(f"  key check (digest lookup): {hit:.2f} µs known, {miss:.2f} µs unknown")
    print(f"  the loop over every key it replaced: {loop:.0f} µs")
    print(f"  a change taking effect (merge + digest index): {remerged * 1000:.1f} ms")
    print(f"  /keys report + one page ({len(page) // 1024} kB): {rendered * 1000:.0f} ms to render")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    asyncio.run(main(args.keys, args.calls))
