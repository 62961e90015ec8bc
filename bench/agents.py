"""The agent-session scenario: concurrent growing tasks, streamed tool-call answers, floor vs finopsd.

Each target gets ``agents`` workers for ``duration`` seconds; every worker runs tasks
whose bodies grow from ~30 KB to 400 KB (a long system prompt, then one ~9.5 KB tool
result a turn), as Roo Code's do (bench.agent_traffic). The floor relays the same
bodies. For finopsd it also reads, from the database, how many rows were committed
during the run and how long the rest took to land after it (the rows a crash at the
end would have lost), and samples RSS every 0.5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from bench.load import CLIENT_HEADERS, CLIENT_MODEL, Load, Target
from bench.procs import cpu_ms, memory_mb
from bench.report import FINOPSD

DRAIN_WAIT_S = 60.0
RSS_EVERY_S = 0.5


async def _sample_rss(pid: int, peak: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], memory_mb(pid)["rss"])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RSS_EVERY_S)


async def run_agents(load: Load, targets: list[Target], count_rows: Callable[[], int | None], agents: int,
                     duration: float, idle_rss: dict[str, float]) -> list[dict[str, Any]]:
    """One line of figures per target."""

    async def _rows() -> int:
        return await asyncio.to_thread(lambda: count_rows() or 0)

    out = []
    for seed, target in enumerate(targets):
        assert target.pid is not None
        before_rows = await _rows() if target.name == FINOPSD else 0
        peak, stop = [memory_mb(target.pid)["rss"]], asyncio.Event()
        sampler = asyncio.create_task(_sample_rss(target.pid, peak, stop))
        cpu0 = cpu_ms(target.pid)
        cmd = {"agents": agents, "url": target.url, "model": CLIENT_MODEL, "headers": CLIENT_HEADERS,
               "duration": duration, "system_kb": 26, "tool_kb": 9.5, "max_kb": 400, "seed": seed * 100_000}
        result = await load.command(cmd)
        cpu = cpu_ms(target.pid) - cpu0
        row: dict[str, Any] = {
            "target": target.name, "agents": agents, "requests": result["n"], "errors": result["errors"],
            "error_sample": result["error_sample"], "rps": result["n"] / result["elapsed"],
            "sent_mb_s": result["sent_mb"] / result["elapsed"], "cpu_ms_per_request": cpu / max(result["n"], 1),
            "idle_rss_mb": idle_rss.get(target.name), "lat_p50_ms": _pct(result["lat"], 0.5),
            "lat_p95_ms": _pct(result["lat"], 0.95),
        }  # fmt: skip
        if target.name == FINOPSD:
            at_end = await _rows()
            row["rows_per_s"] = (at_end - before_rows) / result["elapsed"]
            behind, started = result["n"] - (at_end - before_rows), time.monotonic()
            while await _rows() - before_rows < result["n"] and time.monotonic() - started < DRAIN_WAIT_S:
                await asyncio.sleep(0.1)
            row["rows_behind_at_end"] = behind
            row["drain_s"] = time.monotonic() - started
        stop.set()
        await sampler
        row["peak_rss_mb"] = peak[0]
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
            f" bodies), p50 {r['lat_p50_ms'] or 0:.0f} ms, p95 {r['lat_p95_ms'] or 0:.0f} ms,"
            f" {r['cpu_ms_per_request']:.1f} ms CPU/request, RSS idle {r['idle_rss_mb'] or 0:.0f} MB"
            f" peak {r['peak_rss_mb']:.0f} MB, {r['errors']} errors")  # fmt: skip
    if "rows_per_s" in r:
        text += (f"; log rows committed {r['rows_per_s']:.1f}/s, {r['rows_behind_at_end']} not yet written"
                 f" at the end, all written {r['drain_s']:.2f} s later")
    return text


def verdicts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets for the writer under agent traffic."""
    out = []
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
