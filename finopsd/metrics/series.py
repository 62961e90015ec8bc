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

import aiosqlite

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


async def usage(reader: aiosqlite.Connection, span: Window, group_by: str, filters: dict[str, str],
                metrics: Iterable[str] = METRICS) -> dict[str, Any]:  # fmt: skip
    """Per group: each metric per bucket (``series``) and over the whole span (``totals``),
    the error types, and the same for all groups together (``all``)."""
    column = GROUPS[group_by]
    where, params = _where(span, filters)
    index = {b: i for i, b in enumerate(span.buckets)}
    n = len(span.buckets)
    sums: dict[str, list[list[float]]] = {}
    for row in await reader.execute_fetchall(
            f"select u.bucket, d.{column}, {', '.join(f'sum(u.{c})' for c in SUMS)} from usage_rollup u {DIMS}"
            f" where {where} group by 1, 2", params):
        per = sums.setdefault(_name(row[1]), [[0.0] * n for _ in SUMS])
        for j in range(len(SUMS)):
            per[j][index[row[0]]] += row[2 + j]
    hist: dict[str, dict[str, list[dict[int, int]]]] = {}
    wanted = [m for m in METRICS if m in set(metrics)]
    binned = [] if not set(wanted) & set(PERCENTILES) else await reader.execute_fetchall(
        f"select u.bucket, d.{column}, {BIN_SUMS} from usage_latency u {DIMS} where {where} group by 1, 2", params)
    for row in binned:
        per_metric = hist.setdefault(_name(row[1]), {})
        for m, metric in enumerate(("latency", "ttft")):
            counts = row[2 + m * _BINS: 2 + (m + 1) * _BINS]
            per_metric.setdefault(metric, [{} for _ in range(n)])[index[row[0]]] = {
                k: c for k, c in enumerate(counts) if c}
    errors: dict[str, dict[str, int]] = {}
    for row in await reader.execute_fetchall(
            f"select d.{column}, u.error_type, sum(u.n) from usage_errors u {DIMS} where {where} group by 1, 2",
            params):
        errors.setdefault(_name(row[0]), {})[row[1]] = row[2]

    # the costliest groups first; past MAX_GROUPS the rest fold into one
    order = sorted(sums, key=lambda g: (-sum(sums[g][SUMS.index("cost_usd")]), -sum(sums[g][0]), g))
    for extra in order[MAX_GROUPS:]:
        _fold(sums, hist, errors, extra, OTHER)
    order = order[:MAX_GROUPS] + ([OTHER] if len(order) > MAX_GROUPS else [])
    _fold_all = {"sums": [[sum(sums[g][j][i] for g in order) for i in range(n)] for j in range(len(SUMS))]}
    groups = [_group(g, sums[g], hist.get(g, {}), errors.get(g, {}), wanted) for g in order]
    every_hist: dict[str, list[dict[int, int]]] = {}
    for g in order:
        for metric, per in hist.get(g, {}).items():
            into = every_hist.setdefault(metric, [{} for _ in range(n)])
            for i, bins in enumerate(per):
                for k, c in bins.items():
                    into[i][k] = into[i].get(k, 0) + c
    every_errors: dict[str, int] = {}
    for g in order:
        for kind, c in errors.get(g, {}).items():
            every_errors[kind] = every_errors.get(kind, 0) + c
    return {
        "grain": span.grain, "since": span.since, "until": span.until, "buckets": span.buckets,
        "group_by": group_by, "filters": filters, "metrics": wanted,
        "groups": groups, "all": _group(None, _fold_all["sums"], every_hist, every_errors, wanted),
    }  # fmt: skip


def _fold(sums: dict[str, Any], hist: dict[str, Any], errors: dict[str, Any], src: str, dst: str) -> None:
    into = sums.setdefault(dst, [[0.0] * len(sums[src][0]) for _ in SUMS])
    for j, row in enumerate(sums.pop(src)):
        for i, v in enumerate(row):
            into[j][i] += v
    for metric, per in hist.pop(src, {}).items():
        target = hist.setdefault(dst, {}).setdefault(metric, [{} for _ in per])
        for i, bins in enumerate(per):
            for k, c in bins.items():
                target[i][k] = target[i].get(k, 0) + c
    for kind, c in errors.pop(src, {}).items():
        errors.setdefault(dst, {})[kind] = errors.get(dst, {}).get(kind, 0) + c


def _number(metric: str, value: float) -> float | int:
    return round(value, 6) if metric.endswith("_usd") else int(value)


def _group(name: str | None, sums: list[list[float]], hist: dict[str, list[dict[int, int]]],
           errors: dict[str, int], wanted: list[str]) -> dict[str, Any]:  # fmt: skip
    series: dict[str, list[Any]] = {}
    totals: dict[str, Any] = {}
    for j, metric in enumerate(SUMS):
        series[metric] = [_number(metric, v) for v in sums[j]]
        totals[metric] = _number(metric, sum(sums[j]))
    requests, failed = sums[0], sums[1]
    series["error_rate"] = [round(e / r, 4) if r else None for e, r in zip(failed, requests)]
    totals["error_rate"] = round(sum(failed) / sum(requests), 4) if sum(requests) else None
    for metric in ("latency", "ttft"):
        per = hist.get(metric, [{} for _ in requests])
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
