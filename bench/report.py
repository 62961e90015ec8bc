"""Numbers → the Markdown table and one verdict line per target of issue 9.

"Added" figures subtract the fake upstream measured directly in the same
scenario of the same run, so the load driver's own latency cancels out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

FAKE, FLOOR, FINOPSD = "fake-direct", "floor", "finopsd"

# the targets of issue 9
MIN_THROUGHPUT_RATIO = 0.65
MAX_ADDED_P50_OVER_FLOOR_MS = 0.15
MAX_ADDED_TTFT_OVER_FLOOR_MS = 0.15
MAX_CPU_RATIO = 1.5
MAX_IDLE_RSS_MB = 60.0


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of unsorted values; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Cell:
    """One target in one scenario, pooled over its slices."""

    target: str
    driver: str = "aiohttp"
    n: int = 0
    errors: int = 0
    error_sample: str | None = None
    elapsed: float = 0.0
    cpu_ms: float | None = None  # the target process's CPU over the slices (None: no pid to read)
    driver_cpu_s: float | None = None
    rss_mb: float | None = None
    lat: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)

    def add(self, result: dict[str, Any], cpu_delta_ms: float | None) -> None:
        self.n += result["n"]
        self.errors += result["errors"]
        self.error_sample = self.error_sample or result.get("error_sample")
        self.elapsed += result["elapsed"]
        self.lat += result.get("lat", [])
        self.ttft += result.get("ttft", [])
        if cpu_delta_ms is not None:
            self.cpu_ms = (self.cpu_ms or 0.0) + cpu_delta_ms
        if result.get("cpu_s") is not None:
            self.driver_cpu_s = (self.driver_cpu_s or 0.0) + result["cpu_s"]

    def summary(self) -> dict[str, Any]:
        return {
            "target": self.target, "driver": self.driver, "requests": self.n, "errors": self.errors,
            "error_sample": self.error_sample,
            "rps": self.n / self.elapsed if self.elapsed else None,
            "p50_ms": percentile(self.lat, 50), "p99_ms": percentile(self.lat, 99),
            "ttft_p50_ms": percentile(self.ttft, 50),
            "cpu_ms_per_req": self.cpu_ms / self.n if self.cpu_ms is not None and self.n else None,
            # share of one core the target's process used while loaded: ~100% means it was the bottleneck
            "cpu_busy": self.cpu_ms / (self.elapsed * 1000) if self.cpu_ms is not None and self.elapsed else None,
            "driver_cpu_share": self.driver_cpu_s / self.elapsed if self.driver_cpu_s and self.elapsed else None,
            "rss_mb": self.rss_mb,
        }


def scenario_rows(name: str, concurrency: int, cells: dict[str, Cell]) -> list[dict[str, Any]]:
    """Summaries with the added p50 / TTFT against the fake measured directly."""
    base = cells[FAKE].summary() if FAKE in cells else {}
    rows = []
    for cell in cells.values():
        row = {"scenario": name, "concurrency": concurrency, **cell.summary()}
        row["added_p50_ms"] = _minus(row["p50_ms"], base.get("p50_ms")) if cell.target != FAKE else None
        row["added_ttft_ms"] = _minus(row["ttft_p50_ms"], base.get("ttft_p50_ms")) if cell.target != FAKE else None
        rows.append(row)
    return rows


def _minus(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| scenario | conc | target | driver | requests | errors | rps | p50 ms | p99 ms | added p50 ms "
            "| TTFT p50 ms | added TTFT ms | CPU ms/req | CPU busy | RSS MB |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['concurrency']} | {r['target']} | {r['driver']} | {r['requests']} "
            f"| {r['errors']} | {fmt(r['rps'], 0)} | {fmt(r['p50_ms'], 3)} | {fmt(r['p99_ms'], 3)} "
            f"| {fmt(r['added_p50_ms'], 3)} | {fmt(r['ttft_p50_ms'], 3)} | {fmt(r['added_ttft_ms'], 3)} "
            f"| {fmt(r['cpu_ms_per_req'], 3)} | {_pct(r['cpu_busy'])} | {fmt(r['rss_mb'], 1)} |"
        )
    return "\n".join(lines)


def _find(rows: list[dict[str, Any]], scenario: str, concurrency: int, target: str) -> dict[str, Any] | None:
    return next((r for r in rows if (r["scenario"], r["concurrency"], r["target"]) == (scenario, concurrency,
                                                                                        target)), None)


def _at_most(label: str, value: float | None, limit: float | None, unit: str, detail: str) -> dict[str, Any]:
    if value is None or limit is None:
        return {"target": label, "met": None, "line": f"{label}: not measured"}
    met = value <= limit
    verdict = "met" if met else f"MISSED by {value - limit:.3f}{unit}"
    return {"target": label, "met": met, "value": value, "limit": limit,
            "line": f"{label}: {verdict} ({detail})"}


def _at_least(label: str, value: float | None, limit: float | None, unit: str, detail: str) -> dict[str, Any]:
    if value is None or limit is None:
        return {"target": label, "met": None, "line": f"{label}: not measured"}
    met = value >= limit
    verdict = "met" if met else f"MISSED by {limit - value:.1f}{unit}"
    return {"target": label, "met": met, "value": value, "limit": limit,
            "line": f"{label}: {verdict} ({detail})"}


def verdicts(rows: list[dict[str, Any]], idle_rss_mb: float | None, high: int) -> list[dict[str, Any]]:
    """The issue's targets for finopsd against the floor of the same run."""
    out = []
    for scenario in ("non-stream", "stream"):
        floor, ours = _find(rows, scenario, high, FLOOR), _find(rows, scenario, high, FINOPSD)
        if floor and ours and floor["rps"] and ours["rps"] is not None:
            ratio = ours["rps"] / floor["rps"]
            out.append(_at_least(f"{scenario} throughput at c={high} ≥ {MIN_THROUGHPUT_RATIO:.0%} of floor",
                                 100 * ratio, 100 * MIN_THROUGHPUT_RATIO, " percentage points",
                                 f"{ours['rps']:,.0f} vs {floor['rps']:,.0f} rps = {ratio:.0%}"))
    for scenario in ("non-stream", "stream"):
        floor, ours = _find(rows, scenario, 1, FLOOR), _find(rows, scenario, 1, FINOPSD)
        if floor and ours:
            limit = None if floor["added_p50_ms"] is None else floor["added_p50_ms"] + MAX_ADDED_P50_OVER_FLOOR_MS
            out.append(_at_most(f"{scenario} added p50 at c=1 ≤ floor + {MAX_ADDED_P50_OVER_FLOOR_MS} ms",
                                ours["added_p50_ms"], limit, " ms",
                                f"{fmt(ours['added_p50_ms'], 3)} vs floor {fmt(floor['added_p50_ms'], 3)} ms"))
    floor, ours = _find(rows, "stream", 1, FLOOR), _find(rows, "stream", 1, FINOPSD)
    if floor and ours:
        limit = None if floor["added_ttft_ms"] is None else floor["added_ttft_ms"] + MAX_ADDED_TTFT_OVER_FLOOR_MS
        out.append(_at_most(f"TTFT added at c=1 ≤ floor + {MAX_ADDED_TTFT_OVER_FLOOR_MS} ms", ours["added_ttft_ms"],
                            limit, " ms",
                            f"{fmt(ours['added_ttft_ms'], 3)} vs floor {fmt(floor['added_ttft_ms'], 3)} ms"))
    for scenario in ("non-stream", "stream"):
        floor, ours = _find(rows, scenario, high, FLOOR), _find(rows, scenario, high, FINOPSD)
        if floor and ours:
            limit = None if floor["cpu_ms_per_req"] is None else floor["cpu_ms_per_req"] * MAX_CPU_RATIO
            ratio = (ours["cpu_ms_per_req"] / floor["cpu_ms_per_req"]
                     if ours["cpu_ms_per_req"] and floor["cpu_ms_per_req"] else None)
            out.append(_at_most(f"{scenario} CPU/request at c={high} ≤ {MAX_CPU_RATIO}× floor",
                                ours["cpu_ms_per_req"], limit, " ms",
                                f"{fmt(ours['cpu_ms_per_req'], 3)} vs floor {fmt(floor['cpu_ms_per_req'], 3)} ms"
                                f" = {fmt(ratio, 2)}×"))
    out.append(_at_most(f"idle RSS ≤ {MAX_IDLE_RSS_MB:.0f} MB", idle_rss_mb, MAX_IDLE_RSS_MB, " MB",
                        f"{fmt(idle_rss_mb, 1)} MB"))
    return out


def load_warnings(rows: list[dict[str, Any]], high: int) -> list[str]:
    """Signs that the load side, not the gateway, set a number (2 cores are tight)."""
    notes = []
    for scenario in ("non-stream", "stream"):
        fake, floor = _find(rows, scenario, high, FAKE), _find(rows, scenario, high, FLOOR)
        if fake and floor and fake["rps"] and floor["rps"] and fake["rps"] < 1.25 * floor["rps"]:
            notes.append(f"{scenario} c={high}: the fake alone ran only {fake['rps'] / floor['rps']:.2f}× the "
                         "floor's rps, so the load side (driver + fake) may cap the floor: the throughput "
                         "ratio then flatters finopsd")
    for r in rows:
        busy = r.get("cpu_busy")
        if r["concurrency"] == high and r["target"] in (FLOOR, FINOPSD) and busy is not None and busy < 0.85:
            notes.append(f"{r['scenario']} c={high} {r['target']}: its process was busy only {busy:.0%} of the "
                         "time: something else (the load side, waits) limited its throughput")
        if r["errors"]:
            notes.append(f"{r['scenario']} c={r['concurrency']} {r['target']}: {r['errors']} errors, "
                         f"e.g. {r['error_sample']}")
        share = r.get("driver_cpu_share")
        if share is not None and share > 0.9:
            notes.append(f"{r['scenario']} c={r['concurrency']} {r['target']}: the aiohttp driver used "
                         f"{share:.0%} of a core: it may be the bottleneck")
    return notes
