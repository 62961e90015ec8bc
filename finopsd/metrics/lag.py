"""The event loop's lag: how late a periodic wake-up runs, the cost of whatever held the loop.

Every ``EVERY_S`` a task asks to be woken and measures how much later than asked it ran.
Work that holds the loop in one piece (a JSON parse of a 400 KB body, a log batch's
encoding) delays that wake-up, and every stream on the box, by about its length, so the
histogram shows how often such stalls happen and the max the longest since start. A
stall shorter than ``EVERY_S`` may fall between two wake-ups and be seen shorter.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Final

from aiohttp import web

from finopsd.metrics.families import Families

EVERY_S: Final = 0.01  # 100 wake-ups a second: ~0.1% of a core


async def watch(families: Families, every: float = EVERY_S) -> None:
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + every
        await asyncio.sleep(every)
        late = max(0.0, loop.time() - due)
        families.loop_lag.observe((), late)
        if late > families.loop_lag_max:
            families.loop_lag_max = late


def watcher(families: Families) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context that runs ``watch`` while the app serves."""

    async def run(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(watch(families))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return run
