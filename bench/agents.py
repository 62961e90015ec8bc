"""The agent-session scenario: concurrent growing tasks, streamed tool-call answers, floor vs finopsd.

Each target gets ``agents`` workers for ``duration`` seconds; every worker runs tasks
whose bodies grow from ~30 KB to 400 KB (a long system prompt, then one ~9.5 KB tool
result a turn), as Roo Code's do (bench.agent_traffic). The floor relays the same
bodies. The targets take turns in slices of about 5 s (the order rotated each round), so
the machine's drift lands on both. For finopsd it also reads, from the database, how many
rows were committed during each slice and how long the rest took to land after it (the
rows a crash at the end would have lost; the next slice waits for them, so the writer's
backlog never runs beside another target's slice), and samples RSS every 0.5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from bench.load import CLIENT_HEADERS, CLIENT_MODEL, Load, Target
from bench.procs import cpu_ms, memory_mb
from bench.report import FINOPSD, FLOOR

DRAIN_WAIT_S = 60.0
SLICE_S = 5.0  # a target's time is cut into slices of about this, interleaved
SETTLE_S = 0.3  # after a slice of a target without a log to wait for
RSS_EVERY_S = 0.5
LAG = "finopsd_event_loop_lag_seconds"


async def loop_lag(target: Target) -> tuple[dict[str, float], float]:
    """finopsd's event loop lag histogram (cumulative count by bound) and its max since start."""
    async with aiohttp.ClientSession() as session:
        async with session.get(str(URL(target.url).origin() / "metrics")) as resp:
            text = await resp.text()
    buckets, top = {}, 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == LAG + "_bucket":
                buckets[s.labels["le"]] = s.value
            elif s.name == LAG + "_max_seconds":
                top = s.value
    return buckets, top


def lag_during(before: tuple[dict[str, float], float], after: tuple[dict[str, float], float]) -> dict[str, Any]:
    """The lag of one run: wake-ups per bucket (not cumulative) and its max in ms, exact when the
    max since start grew during the run, else the bound of the highest bucket it reached."""
    counts, below = {}, 0.0
    for bound, total in after[0].items():
        n = total - before[0].get(bound, 0.0)
        counts[bound] = int(n - below)
        below = n
    if after[1] > before[1]:
        top = after[1] * 1000
    else:
        reached = [float(b) for b, n in counts.items() if n and b != "+Inf"]
        top = max(reached, default=0.0) * 1000
    return {"lag_counts": counts, "lag_max_ms": top}


async def _sample_rss(pid: int, peak: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], memory_mb(pid)["rss"])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RSS_EVERY_S)


class Pool:
    """One target's figures, summed over its slices."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.n = self.errors = 0
        self.elapsed = self.sent_mb = self.cpu = 0.0
        self.lat: list[float] = []
        self.ttft: list[float] = []
        self.error_sample: str | None = None
        self.peak = memory_mb(target.pid)["rss"] if target.pid else 0.0
        self.lag_counts: dict[str, int] = {}
        self.lag_max = 0.0
        self.committed = self.behind = 0
        self.drain_s = 0.0

    def add(self, result: dict[str, Any], cpu: float) -> None:
        self.n += result["n"]
        self.errors += result["errors"]
        self.error_sample = self.error_sample or result["error_sample"]
        self.elapsed += result["elapsed"]
        self.sent_mb += result["sent_mb"]
        self.cpu += cpu
        self.lat += result["lat"]
        self.ttft += result["ttft"]


async def _slice(load: Load, pool: Pool, cmd: dict[str, Any], count_rows: Callable[[], int | None] | None) -> None:
    """One slice of one target's load, added to its pool."""
    target = pool.target
    assert target.pid is not None

    async def rows() -> int:
        return await asyncio.to_thread(lambda: (count_rows and count_rows()) or 0)

    before_rows = await rows() if count_rows else 0
    lag_before = await loop_lag(target) if count_rows else None
    peak, stop = [pool.peak], asyncio.Event()
    sampler = asyncio.create_task(_sample_rss(target.pid, peak, stop))
    cpu0 = cpu_ms(target.pid)
    result = await load.command(cmd)
    if lag_before is not None:
        lag = lag_during(lag_before, await loop_lag(target))
        for bound, n in lag["lag_counts"].items():
            pool.lag_counts[bound] = pool.lag_counts.get(bound, 0) + n
        pool.lag_max = max(pool.lag_max, lag["lag_max_ms"])
    if count_rows:
        # the writer's backlog is this slice's work: it lands before the next target's slice
        at_end = await rows()
        pool.committed += at_end - before_rows
        pool.behind = max(pool.behind, result["n"] - (at_end - before_rows))
        started = time.monotonic()
        while await rows() - before_rows < result["n"] and time.monotonic() - started < DRAIN_WAIT_S:
            await asyncio.sleep(0.1)
        pool.drain_s = max(pool.drain_s, time.monotonic() - started)
    else:
        await asyncio.sleep(SETTLE_S)
    pool.add(result, cpu_ms(target.pid) - cpu0)
    stop.set()
    await sampler
    pool.peak = peak[0]


async def run_agents(load: Load, targets: list[Target], count_rows: dict[str, Callable[[], int | None]],
                     agents: int, duration: float, idle_rss: dict[str, float]) -> list[dict[str, Any]]:
    """One line of figures per target. Each target's ``duration`` is cut into slices of about
    ``SLICE_S``, run round-robin with the order rotated each round (as the other scenarios are),
    so a neighbour's burst on the shared machine lands on every target alike. ``count_rows``
    names the targets that log (finopsd), and how to count their committed rows."""

    slices = max(1, round(duration / SLICE_S))
    pools = {t.name: Pool(t) for t in targets}
    for i in range(slices):
        shift = i % len(targets)
        for target in targets[shift:] + targets[:shift]:
            # every slice starts new tasks (new sessions): seeds differ per target and slice
            cmd = {"agents": agents, "url": target.url, "model": CLIENT_MODEL, "headers": CLIENT_HEADERS,
                   "duration": duration / slices, "system_kb": 26, "tool_kb": 9.5, "max_kb": 400,
                   "seed": (i * len(targets) + targets.index(target)) * 100_000}  # fmt: skip
            await _slice(load, pools[target.name], cmd, count_rows.get(target.name))
    out = []
    for target in targets:
        pool = pools[target.name]
        row: dict[str, Any] = {
            "target": target.name, "agents": agents, "slices": slices, "requests": pool.n, "errors": pool.errors,
            "error_sample": pool.error_sample, "rps": pool.n / pool.elapsed, "sent_mb_s": pool.sent_mb / pool.elapsed,
            "cpu_ms_per_request": pool.cpu / max(pool.n, 1), "idle_rss_mb": idle_rss.get(target.name),
            "lat_p50_ms": _pct(pool.lat, 0.5), "lat_p95_ms": _pct(pool.lat, 0.95),
            "lat_p99_ms": _pct(pool.lat, 0.99), "lat_max_ms": max(pool.lat, default=None),
            "ttft_p50_ms": _pct(pool.ttft, 0.5), "ttft_p99_ms": _pct(pool.ttft, 0.99), "peak_rss_mb": pool.peak,
        }  # fmt: skip
        if target.name in count_rows:
            row.update(lag_counts=pool.lag_counts, lag_max_ms=pool.lag_max, rows_per_s=pool.committed / pool.elapsed,
                       rows_behind_at_end=pool.behind, drain_s=pool.drain_s)  # fmt: skip
        out.append(row)
        print(_line(row), flush=True)
    return out


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _line(r: dict[str, Any]) -> str:
    text = (f"  agents x{r['agents']} -> {r['target']}: {r['rps']:.1f} req/s answered ({r['sent_mb_s']:.1f} MB/s of"
            f" bodies), p50 {r['lat_p50_ms'] or 0:.1f} ms, p95 {r['lat_p95_ms'] or 0:.1f} ms,"
            f" p99 {r['lat_p99_ms'] or 0:.1f} ms, max {r['lat_max_ms'] or 0:.1f} ms,"
            f" TTFT p50 {r['ttft_p50_ms'] or 0:.1f} ms p99 {r['ttft_p99_ms'] or 0:.1f} ms,"
            f" {r['cpu_ms_per_request']:.1f} ms CPU/request, RSS idle {r['idle_rss_mb'] or 0:.0f} MB"
            f" peak {r['peak_rss_mb']:.0f} MB, {r['errors']} errors")  # fmt: skip
    if "lag_max_ms" in r:
        slow = sum(n for bound, n in r["lag_counts"].items() if bound == "+Inf" or float(bound) > 0.002)
        text += (f"; event loop lag max {r['lag_max_ms']:.1f} ms, {slow} of"
                 f" {sum(r['lag_counts'].values())} wake-ups late > 2 ms")
    if "rows_per_s" in r:
        text += (f"; log rows committed {r['rows_per_s']:.1f}/s, {r['rows_behind_at_end']} not yet written"
                 f" at the end, all written {r['drain_s']:.2f} s later")
    return text


def verdicts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets under agent traffic: the writer's, and finopsd's latency over the floor's."""
    out = []
    by = {r["target"]: r for r in rows}
    if FINOPSD in by and FLOOR in by:
        gw, floor = by[FINOPSD], by[FLOOR]
        for key, name, bound in (("lat_p50_ms", "p50", 0.5), ("lat_p99_ms", "p99", 5.0),
                                 ("ttft_p99_ms", "TTFT p99", 5.0)):
            if gw[key] is not None and floor[key] is not None:
                added = gw[key] - floor[key]
                out.append({"met": added <= bound, "line": f"agents: {name} ≤ floor + {bound:g} ms:"
                            f" {'met' if added <= bound else 'MISSED'} ({added:+.1f} ms)"})
        if "lag_max_ms" in gw:
            lag = gw["lag_max_ms"]
            out.append({"met": lag <= 2.0, "line": f"agents: event loop lag max ≤ 2 ms:"
                        f" {'met' if lag <= 2 else 'MISSED'} ({lag:.1f} ms)"})
    for r in rows:
        if "rows_per_s" not in r:
            continue
        at_risk = r["rows_behind_at_end"] / max(r["rps"], 1e-9)
        rss = r["peak_rss_mb"] / max(r["idle_rss_mb"] or 1e-9, 1e-9)
        out += [
            {"met": at_risk <= 1.0, "line": f"agents: rows at risk when the load stopped ≤ ~1 s of requests:"
                                            f" {'met' if at_risk <= 1 else 'MISSED'} ({at_risk:.2f} s)"},
            {"met": rss <= 2.0, "line": f"agents: peak RSS ≤ 2× idle: {'met' if rss <= 2 else 'MISSED'}"
                                        f" ({r['peak_rss_mb']:.0f} MB = {rss:.2f}×)"},
        ]  # fmt: skip
    return out
