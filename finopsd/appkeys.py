"""Typed application state (aiohttp AppKeys): no module-level singletons."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    from finopsd.config import Config
    from finopsd.governance import Governance
    from finopsd.log.store import LogStore
    from finopsd.runtime import Runtime
    from finopsd.state import LiveState

CONFIG: web.AppKey[Config] = web.AppKey("config")
RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime")
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)
LOGSTORE: web.AppKey[LogStore] = web.AppKey("logstore")
GOVERNANCE: web.AppKey[Governance] = web.AppKey("governance")
STATE: web.AppKey[LiveState] = web.AppKey("state")  # rate windows, budget counters, parked keys
