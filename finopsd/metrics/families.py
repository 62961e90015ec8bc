"""Every metric finopsd exports, on a registry of the app's own (tests run many apps).

The hot path updates plain numbers in dicts keyed by label tuples; prometheus-client
turns them into families only when scraped. Its own ``Counter.labels(...).inc()`` takes a
lock and checks the labels on every call, several times what an exchange should pay; all
updates here happen on the event loop's thread, so no lock is needed.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# latency as a coding agent sees it: from a fast cached answer to a long reasoning stream
LATENCY_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# the gateway's own time: fine enough to see 0.1 ms
OVERHEAD_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
WRITE_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)
# how late the event loop ran a wake-up: #19 wants nothing held longer than ~2 ms
LAG_BUCKETS: Final = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)

REQUEST_LABELS: Final = ("route", "provider", "model", "status_class", "outcome", "team", "key")
SPEND_LABELS: Final = ("provider", "model", "team", "key")

Labels = tuple[str, ...]


class Counter:
    __slots__ = ("name", "doc", "labels", "values")

    def __init__(self, name: str, doc: str, labels: Labels = ()) -> None:
        self.name, self.doc, self.labels = name, doc, labels
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels = (), n: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + n

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for labels, value in self.values.items():
            family.add_metric(labels, value)
        return family


class Histogram:
    __slots__ = ("name", "doc", "labels", "buckets", "counts", "sums")

    def __init__(self, name: str, doc: str, labels: Labels, buckets: tuple[float, ...]) -> None:
        self.name, self.doc, self.labels, self.buckets = name, doc, labels, buckets
        self.counts: dict[Labels, list[int]] = {}  # per bucket, not cumulative; the last is +Inf
        self.sums: dict[Labels, float] = {}

    def observe(self, labels: Labels, value: float) -> None:
        counts = self.counts.get(labels)
        if counts is None:
            counts = self.counts[labels] = [0] * (len(self.buckets) + 1)
            self.sums[labels] = 0.0
        counts[bisect_left(self.buckets, value)] += 1  # the first bucket whose bound is >= value
        self.sums[labels] += value

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        bounds = [*(floatToGoString(b) for b in self.buckets), "+Inf"]
        for labels, counts in self.counts.items():
            total, cumulative = 0, []
            for bound, n in zip(bounds, counts):
                total += n
                cumulative.append((bound, total))
            family.add_metric(labels, cumulative, self.sums[labels])
        return family


class Families(Collector):
    """The metrics of one app, and the registry that exposes them (with the state collector)."""

    def __init__(self) -> None:
        self.requests = Counter("finopsd_requests", "Exchanges handled, by how they ended", REQUEST_LABELS)
        self.tokens = Counter("finopsd_tokens",
                              "Tokens of the exchanges, by kind (as logged: estimated where an upstream reported none)",
                              (*SPEND_LABELS, "kind"))
        self.cost = Counter("finopsd_cost_usd", "Cost priced for the exchanges, in USD", SPEND_LABELS)
        self.duration = Histogram("finopsd_request_duration_seconds", "Total time of an exchange",
                                  ("route", "provider"), LATENCY_BUCKETS)
        self.ttft = Histogram("finopsd_time_to_first_token_seconds", "Time until the first byte of the answer",
                              ("route", "provider"), LATENCY_BUCKETS)
        self.overhead = Histogram("finopsd_overhead_seconds",
                                  "Time an exchange spent in finopsd itself: its total minus the upstream's time",
                                  ("route",), OVERHEAD_BUCKETS)
        self.upstream_errors = Counter("finopsd_upstream_errors", "Upstream attempts that failed, by type",
                                       ("provider", "type"))
        self.retries = Counter("finopsd_upstream_retries", "Attempts repeated on the same provider and model",
                               ("provider",))
        self.fallbacks = Counter("finopsd_fallbacks", "Times a provider's failure moved an exchange to the next target",
                                 ("provider",))
        self.mcp_calls = Counter("finopsd_mcp_tool_calls", "MCP tool calls, by upstream server and outcome",
                                 ("server", "outcome"))
        self.log_written = Counter("finopsd_log_rows_written", "Log rows committed to the store")
        self.log_write = Histogram("finopsd_log_write_seconds", "Time to write one batch of log rows", (),
                                   WRITE_BUCKETS)
        self.loop_lag = Histogram("finopsd_event_loop_lag_seconds",
                                  "How late the event loop ran a periodic wake-up (work holding the loop)", (),
                                  LAG_BUCKETS)
        self.loop_lag_max = 0.0  # the largest lag since start
        self.streams = 0  # streaming exchanges under way
        self.in_flight = 0  # exchanges under way
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        for metric in vars(self).values():
            if isinstance(metric, Counter | Histogram):
                yield metric.family()
        yield GaugeMetricFamily("finopsd_streams_in_flight", "Streaming exchanges under way", value=self.streams)
        yield GaugeMetricFamily("finopsd_requests_in_flight", "Exchanges under way", value=self.in_flight)
        yield GaugeMetricFamily("finopsd_event_loop_lag_max_seconds", "The largest event loop lag since start",
                                value=self.loop_lag_max)
