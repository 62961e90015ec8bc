"""The series behind /usage and /api/usage, read from the roll-ups that m009's trigger keeps.

Every number comes from ``usage_rollup``, ``usage_errors`` and ``usage_latency`` (per hour
or per day, per team x key x model x provider), never from the request log, so an answer
costs the same at a thousand logged requests as at a million: it reads (buckets x
combinations) rows. Percentiles come from the fixed log-spaced latency bins: each is the
geometric middle of the bin holding the wanted rank, within -8%/+9% of the true value.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any, Final

from finopsd.log.sql import Db

__all__ = ["GRAINS", "GROUPS", "METRICS", "NONE", "Window", "percentile", "usage", "window"]

GRAINS: Final = {"hour": 3600, "day": 86400}
GROUPS: Final = {"team": "team", "key": "key_name", "model": "model", "provider": "provider"}
RANGES: Final = {"24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
SUMS: Final = ("requests", "errors", "client_closed", "prompt_tokens", "cached_tokens", "completion_tokens",
               "cost_usd", "cost_without_cache_usd")  # fmt: skip
PERCENTILES: Final = ("latency_p50_ms", "latency_p95_ms", "ttft_p50_ms", "ttft_p95_ms")
METRICS: Final = (*SUMS, "error_rate", *PERCENTILES)
MAX_BUCKETS: Final = 800  # a month of hours and some: a chart wider than this is unreadable anyway
MAX_GROUPS: Final = 100  # past this many series the rest are summed as OTHER
NONE: Final = "(none)"  # a row without a team (or key, model, provider)
OTHER: Final = "(other)"
_BIN_STEP: Final = 4  # m009: bin k holds [2**(k/4), 2**((k+1)/4)) ms
_BINS: Final = 80  # per metric: l0..l79 (latency), t0..t79 (time to first token)
BIN_SUMS: Final = ", ".join(f"sum(u.{m}{k})" for m in "lt" for k in range(_BINS))
DIMS: Final = "join usage_dims d on d.id = u.dims"


class Window:
    """A span of whole buckets, UTC: [since, until) in steps of ``grain`` seconds."""

    def __init__(self, since: float, until: float, grain: str) -> None:
        step = GRAINS[grain]
        self.grain, self.step = grain, step
        self.since = math.floor(since / step) * step
        self.until = max(math.ceil(until / step) * step, self.since + step)
        self.buckets = list(range(self.since, self.until, step))


def window(range_name: str, since: float | None, until: float | None, grain: str | None,
           now: float | None = None) -> Window:  # fmt: skip
    """The buckets for ``range`` (24h, 7d, 30d, or custom with ``since``/``until``).

    ``grain`` defaults to hours up to two days and to days past that. Raises ValueError
    with a message meant for the caller."""
    now = time.time() if now is None else now
    if range_name == "custom":
        if since is None:
            raise ValueError("range=custom needs since (and optionally until)")
        until = now if until is None else until
    elif range_name in RANGES:
        if since is not None or until is not None:
            raise ValueError("since and until go with range=custom")
        until = now
        # a day range ends with today and starts at a midnight, so it has whole days
        since = now - RANGES[range_name] if range_name == "24h" else (
            math.floor(now / 86400) * 86400 - RANGES[range_name] + 86400)
    else:
        raise ValueError(f"range must be one of 24h, 7d, 30d, custom, got {range_name[:20]!r}")
    if not until > since:
        raise ValueError("until must be later than since")
    if grain is None:
        grain = "hour" if until - since <= 2 * 86400 else "day"
    elif grain not in GRAINS:
        raise ValueError(f"grain must be hour or day, got {grain[:20]!r}")
    span = Window(since, until, grain)
    if len(span.buckets) > MAX_BUCKETS:
        raise ValueError(f"that range has {len(span.buckets)} {grain}s; at most {MAX_BUCKETS} (use grain=day)")
    return span


def percentile(bins: dict[int, int], q: float) -> float | None:
    """The q-quantile (0 < q <= 1) of a histogram {bin: count}, at its bin's geometric middle, in ms."""
    count = sum(bins.values())
    if not count:
        return None
    rank, seen = max(1, math.ceil(q * count)), 0
    for k in sorted(bins):
        seen += bins[k]
        if seen >= rank:
            return round(2 ** ((k + 0.5) / _BIN_STEP), 2)
    return None  # unreachable: the counts add up to count


def _where(span: Window, filters: dict[str, str]) -> tuple[str, list[Any]]:
    clauses, params = ["u.grain = ?", "u.bucket >= ?", "u.bucket < ?"], [span.step, span.since, span.until]
    for name, value in filters.items():
        clauses.append(f"d.{GROUPS[name]} = ?")  # a fixed column name, never user text
        params.append("" if value == NONE else value)
    return " and ".join(clauses), params


def _name(value: str) -> str:
    return value or NONE


async def usage(db: Db, span: Window, group_by: str, filters: dict[str, str],
                metrics: Iterable[str] = METRICS) -> dict[str, Any]:  # fmt: skip
    """Per group: each metric per bucket (``series``) and over the whole span (``totals``),
    the error types, and the same for all groups together (``all``)."""
    column = GROUPS[group_by]
    where, params = _where(span, filters)
    index = {b: i for i, b in enumerate(span.buckets)}
    n = len(span.buckets)
    parts: dict[str, Parts] = {}

    def part(name: str) -> Parts:
        name = _name(name)
        if name not in parts:
            parts[name] = Parts(n)
        return parts[name]

    for row in await db.fetch(
            f"select u.bucket, d.{column}, {', '.join(f'sum(u.{c})' for c in SUMS)} from usage_rollup u {DIMS}"
            f" where {where} group by 1, 2", params):
        sums = part(row[1]).sums
        for j in range(len(SUMS)):
            sums[j][index[row[0]]] += row[2 + j]
    wanted = [m for m in METRICS if m in set(metrics)]
    binned = [] if not set(wanted) & set(PERCENTILES) else await db.fetch(
        f"select u.bucket, d.{column}, {BIN_SUMS} from usage_latency u {DIMS} where {where} group by 1, 2", params)
    for row in binned:
        hist = part(row[1]).hist
        for m, metric in enumerate(("latency", "ttft")):
            counts = row[2 + m * _BINS: 2 + (m + 1) * _BINS]
            hist[metric][index[row[0]]] = {k: c for k, c in enumerate(counts) if c}
    for row in await db.fetch(
            f"select d.{column}, u.error_type, sum(u.n) from usage_errors u {DIMS} where {where} group by 1, 2",
            params):
        part(row[0]).errors[row[1]] = row[2]

    # the costliest groups first; past MAX_GROUPS the rest fold into one
    cost = SUMS.index("cost_usd")
    order = sorted(parts, key=lambda g: (-sum(parts[g].sums[cost]), -sum(parts[g].sums[0]), g))
    if len(order) > MAX_GROUPS:
        rest = Parts(n)
        for name in order[MAX_GROUPS:]:
            rest.add(parts.pop(name))
        order, parts[OTHER] = [*order[:MAX_GROUPS], OTHER], rest
    every = Parts(n)
    for name in order:
        every.add(parts[name])
    return {
        "grain": span.grain, "since": span.since, "until": span.until, "buckets": span.buckets,
        "group_by": group_by, "filters": filters, "metrics": wanted,
        "groups": [_group(name, parts[name], wanted) for name in order], "all": _group(None, every, wanted),
    }  # fmt: skip


class Parts:
    """One group's numbers per bucket: the sums (in SUMS order), latency bins, error counts."""

    def __init__(self, n: int) -> None:
        self.sums = [[0.0] * n for _ in SUMS]
        self.hist: dict[str, list[dict[int, int]]] = {m: [{} for _ in range(n)] for m in ("latency", "ttft")}
        self.errors: dict[str, int] = {}

    def add(self, other: Parts) -> None:
        for mine, theirs in zip(self.sums, other.sums):
            for i, v in enumerate(theirs):
                mine[i] += v
        for metric, per in other.hist.items():
            for into, bins in zip(self.hist[metric], per):
                for k, c in bins.items():
                    into[k] = into.get(k, 0) + c
        for kind, c in other.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + c


def _number(metric: str, value: float) -> float | int:
    return round(value, 6) if metric.endswith("_usd") else int(value)


def _group(name: str | None, part: Parts, wanted: list[str]) -> dict[str, Any]:
    sums, hist, errors = part.sums, part.hist, part.errors
    series: dict[str, list[Any]] = {}
    totals: dict[str, Any] = {}
    for j, metric in enumerate(SUMS):
        series[metric] = [_number(metric, v) for v in sums[j]]
        totals[metric] = _number(metric, sum(sums[j]))
    requests, failed = sums[0], sums[1]
    series["error_rate"] = [round(e / r, 4) if r else None for e, r in zip(failed, requests)]
    totals["error_rate"] = round(sum(failed) / sum(requests), 4) if sum(requests) else None
    for metric in ("latency", "ttft"):
        per = hist[metric]
        whole: dict[int, int] = {}
        for bins in per:
            for k, c in bins.items():
                whole[k] = whole.get(k, 0) + c
        for q, label in ((0.5, "p50"), (0.95, "p95")):
            series[f"{metric}_{label}_ms"] = [percentile(bins, q) for bins in per]
            totals[f"{metric}_{label}_ms"] = percentile(whole, q)
    out: dict[str, Any] = {} if name is None else {"name": name}
    out["totals"] = {m: totals[m] for m in wanted}
    out["series"] = {m: series[m] for m in wanted}
    out["error_types"] = dict(sorted(errors.items(), key=lambda kv: -kv[1]))
    return out
