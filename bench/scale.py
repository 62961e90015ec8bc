"""Scale-out throughput: 1, 2 and 3 finopsd instances on one PostgreSQL and one Redis.

    .venv/bin/python -m bench.scale                 # ~2 min: every setup, 10 s each, table + paper scaling
    .venv/bin/python -m bench.scale --duration 4    # a smoke run

Starts the fake upstream (bench/fake_upstream.py), a throwaway PostgreSQL and Redis
(tests/servers.py: Debian's postgresql and redis-server), then for each setup a fresh
database, N ``finopsd serve`` processes on it and one aiohttp driver (bench/driver.py) per instance, which together keep
``--concurrency`` streamed requests in flight (split evenly over the instances), as a load
balancer would. Every request carries a virtual key with a team budget and a rate limit, so
each one takes the governance path: check-and-reserve, rate window, release and charge.
CPU per request is read from /proc for each side: the instances, every PostgreSQL process
(backends, and what the postmaster reaped), redis-server. Setups, in order: one instance on
SQLite with in-process state (today's default, the baseline), one on PostgreSQL with
in-process state, then 1, 2 and 3 on PostgreSQL + Redis. Nothing is pinned: on this box the
instances, the databases and the load share the same CPUs, so the throughput column shows
what the machine gives (``busy``: the share of all CPUs in use), and the CPU columns what
each side would need on machines of its own. Then ``--alone`` seconds of one request at a
time against the first instance: what the engines add to a request without queueing.
``--traffic agents`` sends growing agent tasks instead of one turn over and over (bench/agents.py's
scenario: new content every turn, as the log's database really gets it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import report
from bench.load import CLIENT_HEADERS, CLIENT_MODEL, Load, request_body
from bench.procs import Children, Pinning, cpu_ms, machine, machine_busy_ms

PY = sys.executable
SETTLE_S = 1.0  # after the load, before reading CPU and counting rows: the writers flush their batches
AGENT_TASKS = {"system_kb": 26, "tool_kb": 9.5, "max_kb": 400}  # as bench/agents.py's scenario


@dataclass(frozen=True)
class Setup:
    name: str
    instances: int
    postgres: bool
    redis: bool


SETUPS = (
    Setup("sqlite, local state", 1, False, False),
    Setup("postgresql, local state", 1, True, False),
    Setup("postgresql + redis", 1, True, True),
    Setup("postgresql + redis", 2, True, True),
    Setup("postgresql + redis", 3, True, True),
)


def config_text(workdir: Path, fake_url: str, setup: Setup, pg_url: str, redis_url: str) -> str:
    key = hashlib.sha256(CLIENT_HEADERS["Authorization"].removeprefix("Bearer ").encode()).hexdigest()
    storage = f"{{url: '{pg_url}'}}" if setup.postgres else f"{{path: '{workdir / 'finops.db'}'}}"
    return (
        f"server: {{host: 127.0.0.1, port: 0}}\nstorage: {storage}\n"
        + (f"state: {{redis_url: '{redis_url}'}}\n" if setup.redis else "")
        + "metrics: {public: true}\n"
        "providers:\n  openai:\n"
        f"    base_url: {fake_url}/v1\n    keys: [{{name: bench, value: sk-bench-upstream}}]\n"
        "    models: [gpt-4.1-mini]\n"
        "auth: {required: true}\n"
        # limits far above the load: every request is checked and charged, none refused
        "teams: {bench: {budgets: [{usd: 1000000, period: day}], rate_limit: {requests_per_minute: 10000000}}}\n"
        f"virtual_keys:\n  - {{name: bench, key_sha256: '{key}', team: bench,"
        " rate_limit: {requests_per_minute: 10000000}}\n"
    )


def tree_cpu_ms(root: int) -> float:
    """CPU of ``root`` (with what it reaped) and of its live children: PostgreSQL's backends."""
    with open(f"/proc/{root}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    total = sum(int(v) for v in fields[11:15]) * 1000 / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == root:
                        total += cpu_ms(int(entry))
    return total


def logged_rows(pg_url: str) -> int:
    import psycopg

    with psycopg.connect(pg_url) as conn:
        return int(conn.execute("select count(*) from requests").fetchone()[0])  # type: ignore[index]


async def settled_rows(pg_url: str) -> int:
    """The log's rows once the writers have caught up (no new row for a second; 30 s at most)."""
    rows, deadline = logged_rows(pg_url), time.monotonic() + 30
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        now = logged_rows(pg_url)
        if now == rows:
            break
        rows = now
    return rows


async def run_setup(children: Children, loads: list[Load], fake_url: str, setup: Setup, servers: Any,
                    args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    pg_url = servers.database(f"bench_{setup.instances}_{int(setup.postgres)}{int(setup.redis)}")
    config = workdir / f"{setup.instances}-{int(setup.postgres)}{int(setup.redis)}.yaml"
    config.write_text(config_text(workdir, fake_url, setup, pg_url, servers.redis_url))
    instances = [await children.server(f"finopsd-{setup.instances}-{i}", [
        PY, "-m", "finopsd", "serve", "--config", str(config), "--port", "0"], None) for i in range(setup.instances)]
    try:
        body = request_body(CLIENT_MODEL, True, args.body_kb)
        split = [args.concurrency // setup.instances + (i < args.concurrency % setup.instances)
                 for i in range(setup.instances)]

        def command(i: int, url: str, c: int, seconds: float, record: bool) -> dict[str, Any]:
            if args.traffic == "agents":  # growing tasks: each turn resends the history and adds ~10 KB
                return {**AGENT_TASKS, "agents": c, "url": url, "model": CLIENT_MODEL, "headers": CLIENT_HEADERS,
                        "duration": seconds, "seed": (i + 10 * setup.instances) * 100_000}
            return {"url": url, "body": body, "headers": CLIENT_HEADERS, "stream": True, "concurrency": c,
                    "duration": seconds, "record": record}

        async def drive(seconds: float, record: bool) -> list[dict[str, Any]]:
            return list(await asyncio.gather(*(
                load.command(command(i, f"{gw.url}/openai/chat/completions", c, seconds, record))
                for i, (load, gw, c) in enumerate(zip(loads, instances, split)))))

        await drive(args.warmup, False)
        await asyncio.sleep(SETTLE_S)
        cpu = {"finopsd": lambda: sum(cpu_ms(gw.pid) for gw in instances), "redis": lambda: cpu_ms(servers.redis_pid),
               "postgresql": lambda: tree_cpu_ms(servers.postmaster_pid)}
        before = {side: read() for side, read in cpu.items()}
        rows0 = logged_rows(pg_url) if setup.postgres else 0
        busy0, started = machine_busy_ms()[0], time.perf_counter()
        results = await drive(args.duration, True)
        elapsed = time.perf_counter() - started
        busy = (machine_busy_ms()[0] - busy0) / (elapsed * 1000 * (os.cpu_count() or 1))
        await asyncio.sleep(SETTLE_S)
        used = {side: read() - before[side] for side, read in cpu.items()}
        rows = await settled_rows(pg_url) - rows0 if setup.postgres else None
        # one request at a time: what the engines add to a request's latency, without queueing
        alone = await loads[0].command({"url": f"{instances[0].url}/openai/chat/completions", "body": body,
                                        "headers": CLIENT_HEADERS, "stream": True, "concurrency": 1,
                                        "duration": args.alone, "record": True})
        n = sum(r["n"] for r in results)
        lat = sorted(x for r in results for x in r["lat"])
        return {
            "setup": setup.name, "instances": setup.instances, "requests": n,
            "errors": sum(r["errors"] for r in results),
            "error_sample": next((r["error_sample"] for r in results if r["error_sample"]), None),
            "rps": n / elapsed, "p50_ms": report.percentile(lat, 50), "p99_ms": report.percentile(lat, 99),
            "alone_p50_ms": report.percentile(sorted(alone["lat"]), 50), "machine_busy": busy,
            **{f"{side}_ms_per_req": ms / n if n else None for side, ms in used.items()},
            "rows_per_request": None if rows is None else rows / n,  # 1.00: every request answered was logged
        }
    finally:
        for gw in instances:
            gw.proc.terminate()
        for gw in instances:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gw.proc.wait(), 30)


class Servers:
    """A throwaway PostgreSQL cluster and redis-server (tests/servers.py), in the run's directory."""

    def __init__(self, workdir: Path) -> None:
        from tests.servers import PgCluster, RedisServer

        (workdir / "redis").mkdir()
        self.pg, self.redis = PgCluster(workdir / "pg"), RedisServer(workdir / "redis")
        self.redis_url = self.redis.url

    def database(self, name: str) -> str:
        self.pg.sql(f"create database {name}")
        return self.pg.url(name)

    @property
    def postmaster_pid(self) -> int:
        return int((self.pg.data / "postmaster.pid").read_text().split()[0])

    @property
    def redis_pid(self) -> int:
        assert self.redis.proc is not None
        return self.redis.proc.pid

    def stop(self) -> None:
        self.redis.stop()
        if self.pg.running:
            self.pg.stop("immediate")


def paper(rows: list[dict[str, Any]]) -> list[str]:
    """What the CPU per request of each side gives on machines of their own."""
    one = next(r for r in rows if r["setup"] == "postgresql + redis" and r["instances"] == 1)
    local = next(r for r in rows if r["setup"] == "postgresql, local state")
    gw, pg, rd = one["finopsd_ms_per_req"], one["postgresql_ms_per_req"], one["redis_ms_per_req"]
    per_core = 1000 / gw
    return [
        f"Redis-backed limits against in-process ones: {gw - local['finopsd_ms_per_req']:+.2f} ms of the instance's"
        f" CPU a request, {one['alone_p50_ms'] - local['alone_p50_ms']:+.2f} ms on a lone request's p50",
        f"one instance (one core) serves at most ~{per_core:,.0f} req/s of this stream ({gw:.2f} ms CPU a request)",
        f"PostgreSQL needs {pg:.2f} ms CPU a request: ~{1000 / pg:,.0f} req/s per database core, so one 4-core"
        f" database keeps up with ~{4000 / pg / per_core:,.0f} instance cores",
        f"Redis needs {rd:.3f} ms CPU a request (single-threaded): ~{1000 / rd:,.0f} req/s,"
        f" ~{1000 / rd / per_core:,.0f} instance cores",
        f"so M machines of k cores give ~min(M·k·{per_core:,.0f}, {4000 / pg:,.0f} per 4 database cores,"
        f" {1000 / rd:,.0f}) req/s",
    ]


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (f"{'setup':<26} {'inst':>4} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'c=1 p50':>7} {'busy':>5}"
            f" {'finopsd':>8} {'postgres':>9} {'redis':>7} {'rows/req':>8} {'errors':>6}")
    print(head + "\n" + " " * 63 + "(CPU ms per request)")
    for r in rows:
        print(f"{r['setup']:<26} {r['instances']:>4} {r['rps']:>7.0f} {report.fmt(r['p50_ms'], 1):>7}"
              f" {report.fmt(r['p99_ms'], 1):>7} {report.fmt(r['alone_p50_ms']):>7} {r['machine_busy']:>5.0%}"
              f" {report.fmt(r['finopsd_ms_per_req']):>8}"
              f" {report.fmt(r['postgresql_ms_per_req']):>9} {report.fmt(r['redis_ms_per_req'], 3):>7}"
              f" {report.fmt(r['rows_per_request']):>8} {r['errors']:>6}")


async def bench(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="finopsd-scale-"))
    os.chmod(workdir, 0o755)  # the postgres user runs the throwaway cluster in it
    children = Children(workdir)
    servers = None
    try:
        servers = await asyncio.to_thread(Servers, workdir)
        fake = await children.server("fake", [PY, "-m", "bench.fake_upstream", "--port", "0", "--chunks",
                                              str(args.chunks)], None)
        drivers = [await children.spawn(f"driver-{i}", [PY, "-m", "bench.driver"], None, stdin=True,
                                        stdout_pipe=True) for i in range(max(s.instances for s in SETUPS))]
        pins = Pinning.for_machine(False)
        loads = [Load(children, d, None, pins) for d in drivers]
        info = machine()
        print(f"# finopsd scale-out — {info['nproc']} CPUs ({info['cpu_model']}), commit {info['commit'] or '?'};"
              f" {args.traffic} streams, {args.concurrency} in flight, {args.duration:g} s per setup", flush=True)
        rows = []
        for setup in SETUPS:
            row = await run_setup(children, loads, fake.url, setup, servers, args, workdir)
            rows.append(row)
            print(f"  {setup.name} × {setup.instances}: {row['rps']:.0f} req/s", flush=True)
        print()
        print_table(rows)
        print()
        for line in paper(rows):
            print(f"- {line}")
        if args.json:
            Path(args.json).write_text(json.dumps({"machine": info, "params": vars(args), "rows": rows}, indent=2))
        return 0 if not any(r["errors"] for r in rows) else 1
    finally:
        await children.stop_all()
        if servers is not None:
            servers.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load per setup (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="unrecorded seconds per setup (default 2)")
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight over all instances")
    p.add_argument("--traffic", choices=("repeat", "agents"), default="repeat",
                   help="repeat: one 8 KB turn over and over (its content is stored once: the gateway's and"
                   " the engines' cost per request); agents: growing agent tasks, new content every turn"
                   " (what the log's database really writes)")
    p.add_argument("--alone", type=float, default=3.0, help="seconds of one request at a time, per setup")
    p.add_argument("--chunks", type=int, default=20, help="content chunks per stream (default 20)")
    p.add_argument("--body-kb", type=float, default=8.0, help="request body size in KB (default 8)")
    p.add_argument("--json", metavar="FILE", help="also write every number to FILE")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        sys.exit(asyncio.run(bench(args)))
    except KeyboardInterrupt:
        sys.exit(130)
    except RuntimeError as e:  # a server that would not start: the message names it and its log
        print(f"bench failed: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
