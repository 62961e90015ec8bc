"""Gauges read at scrape time from where the state already lives: the log store, the budgets."""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from finopsd.appkeys import GOVERNANCE, LOGSTORE, RUNTIME, STATE

BUDGET_LABELS = ("scope", "name", "period")


class StateCollector(Collector):
    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        store = self.app.get(LOGSTORE)
        if store is not None:
            yield GaugeMetricFamily("finopsd_log_queue_rows", "Log rows waiting for the writer",
                                    value=store.queued_rows)
            yield CounterMetricFamily("finopsd_log_rows_failed", "Log rows the writer could not write at all",
                                      value=store.failed_rows)
            yield CounterMetricFamily("finopsd_log_rows_degraded",
                                      "Log rows written without their conversation or some values",
                                      value=store.degraded_rows)
            yield CounterMetricFamily("finopsd_log_rows_dropped",
                                      "Log rows never written: the queue was full (PostgreSQL unreachable)",
                                      value=store.dropped_rows)
            yield CounterMetricFamily("finopsd_log_rows_stripped",
                                      "Log rows queued without their conversation: the queue was past its bytes bound",
                                      value=store.stripped_rows)
            yield GaugeMetricFamily("finopsd_log_database_up", "1 while the log database takes writes, else 0",
                                    value=int(store.database_up))
        live = self.app[STATE].metrics()
        if "redis_up" in live:
            yield GaugeMetricFamily("finopsd_state_redis_up", "1 while Redis answers; 0: limits and budgets "
                                    "are this instance's own", value=live["redis_up"])
            yield CounterMetricFamily("finopsd_state_redis_fallbacks", "Times this instance lost Redis and "
                                      "fell back to its own counters", value=live["fallbacks"])
        yield from self._budgets()

    def _budgets(self) -> Iterator[Metric]:
        """Spend and limit of every budget of a team, and of a key when ``metrics.per_key``."""
        spent = GaugeMetricFamily("finopsd_budget_spent_usd", "Spend in the budget's current window, in USD",
                                  labels=BUDGET_LABELS)
        limit = GaugeMetricFamily("finopsd_budget_limit_usd", "The budget, in USD", labels=BUDGET_LABELS)
        report = self.app[GOVERNANCE].report()
        owners = [("team", team) for team in report["teams"]]
        if self.app[RUNTIME].config.metrics.per_key:
            owners += [("key", key) for key in report["keys"]]
        for scope, owner in owners:
            for budget in owner["budgets"]:
                labels = [scope, owner["name"], budget["period"]]
                spent.add_metric(labels, budget["spent_usd"])
                limit.add_metric(labels, budget["usd"])
        yield spent
        yield limit
