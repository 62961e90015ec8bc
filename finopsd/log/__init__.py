"""The request log: SQLite (``store``, the default) or PostgreSQL (``pg``, with ``storage.url``), one interface."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from finopsd.config import Config
    from finopsd.log.pg.store import PgLogStore
    from finopsd.log.store import LogStore
    from finopsd.scrub import Scrubber


async def open_log(config: Config, *, scrubber: Callable[[], Scrubber] | None = None) -> LogStore | PgLogStore:
    """The log ``config.storage`` names, migrated and with its writer started: PostgreSQL when
    ``storage.url`` is set, else the SQLite file at ``storage.path``. Callers use the methods
    both have and never ask which it is."""
    # imported here: each pulls in its driver, and the schema modules import this package
    if config.storage.url:
        from finopsd.log.pg.store import PgLogStore

        return await PgLogStore.open(config.storage.url, scrubber=scrubber)
    from finopsd.log.store import LogStore

    return await LogStore.open(config.storage.path, scrubber=scrubber)
