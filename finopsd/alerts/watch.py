"""The alert watcher: a background task that looks at spend and error rates every
``alerts.check_interval_s`` and fires what crossed a threshold, never on a request's path.

Budget alerts: each key's and team's budget, at each of ``budget_thresholds`` percent,
once per budget window. Error-rate alerts: a provider whose share of failed requests over
the last 5 minutes reaches ``provider_error_rate`` (with at least ``min_requests``), once
per 5-minute window. Each alert is claimed in the log database first (``alerts``, unique
per kind, subject, window and threshold), so a restart in the same window does not fire it
again; one claimed but not yet delivered when the process stopped is sent at the next start.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from typing import Any, Final

from aiohttp import web

from finopsd.alerts.notify import deliver
from finopsd.appkeys import GOVERNANCE, LOGSTORE, RUNTIME
from finopsd.spend import iso, usd_text, window_start

__all__ = ["watch_alerts"]

log = logging.getLogger(__name__)
ERROR_WINDOW_S: Final = 300
MAX_SENDING: Final = 4  # deliveries at once; the rest wait their turn


class Watcher:
    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.sending: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(MAX_SENDING)

    @property
    def config(self) -> Any:
        return self.app[RUNTIME].config.alerts  # the current one: SIGHUP may change it

    async def check(self) -> None:
        if not self.config.targets:
            return  # nothing to tell; a reload (SIGHUP) may add a target
        store, gov = self.app[LOGSTORE], self.app[GOVERNANCE]
        await gov.sync()
        now, report = gov.clock(), gov.report()
        claims = []
        for scope, owner in [("key", k) for k in report["keys"]] + [("team", t) for t in report["teams"]]:
            for b in owner["budgets"]:
                start = window_start(b["period"], now)
                for threshold in self.config.budget_thresholds:
                    if b["percent"] >= threshold:
                        claims.append(("budget", f"{scope} {owner['name']} {b['period']}",
                                       iso(start) if b["period"] != "total" else "total", threshold,
                                       f"{scope} {owner['name']} has spent {b['percent']:g}% of its {b['period']}"
                                       f" budget ({usd_text(b['spent_usd'])} of {usd_text(b['usd'])}), past the"
                                       f" {threshold:g}% alert; it resets {b['resets_at'] or 'never'}"))
        rate = self.config.provider_error_rate
        if rate is not None:
            window = iso(math.floor(now / ERROR_WINDOW_S) * ERROR_WINDOW_S)
            for provider, requests, errors in await store.provider_errors(now - ERROR_WINDOW_S):
                if requests >= self.config.min_requests and errors / requests >= rate:
                    claims.append(("provider_error_rate", provider, window, rate,
                                   f"provider {provider}: {errors} of {requests} requests failed in the last 5"
                                   f" minutes ({100 * errors / requests:.0f}%, alert at {100 * rate:g}%)"))
        for kind, subject, window, threshold, message in claims:
            alert_id = await store.claim_alert(kind, subject, window, threshold, message)
            if alert_id is not None:
                log.warning("alert: %s", message)
                self.send({"id": alert_id, "kind": kind, "subject": subject, "window": window,
                           "threshold": threshold, "message": message})  # fmt: skip

    def send(self, alert: dict[str, Any]) -> None:
        task = asyncio.create_task(self._send(alert), name=f"alert-{alert['id']}")
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    async def _send(self, alert: dict[str, Any]) -> None:
        if not self.config.targets:
            return  # stays pending: sent at a start with a target
        async with self.slots:
            status, attempts, error = await deliver(self.app[RUNTIME].session, self.config, alert)
        await self.app[LOGSTORE].alert_sent(alert["id"], status, attempts, error)

    async def run(self) -> None:
        for alert in await self.app[LOGSTORE].alerts(limit=100, status="pending"):
            self.send(alert)  # claimed before the last stop, never delivered
        while True:
            try:
                await self.check()
            except Exception:  # a bad moment (a locked database) must not end the watcher
                log.exception("alert check failed; trying again in %ss", self.config.check_interval_s)
            await asyncio.sleep(self.config.check_interval_s)


async def watch_alerts(app: web.Application) -> AsyncIterator[None]:
    """Run the watcher while the app serves; it checks only while the config names a target."""
    watcher = Watcher(app)
    task = asyncio.create_task(watcher.run(), name="alert-watcher")
    yield
    for t in (task, *watcher.sending):
        t.cancel()
    await asyncio.gather(task, *watcher.sending, return_exceptions=True)
