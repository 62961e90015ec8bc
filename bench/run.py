"""One command: finopsd against the floor (a bare aiohttp relay) and the fake upstream, in one run.

    .venv/bin/python -m bench.run                 # 4 scenarios × 10 s per target, table + verdicts
    .venv/bin/python -m bench.run --quick         # 2 s per scenario: a smoke run
    .venv/bin/python -m bench.run --vs http://127.0.0.1:4000/v1 --vs-pid 1234 --fake-port 9009

Starts the fake upstream, the floor and ``finopsd serve --port 0`` (SQLite log in a
temp dir) as separate processes, then runs each scenario (non-stream and stream, at
concurrency 1 and 32) against every target in interleaved slices, reading each
gateway's CPU time and RSS from /proc around every slice. Method: bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import report
from bench.agents import run_agents, verdicts as agent_verdicts
from bench.load import CLIENT_MODEL, HIGH, SCENARIOS, Load, Target, run_scenario, write_config
from bench.procs import Background, Child, Children, Pinning, machine, memory_mb
from bench.profile import profile_finopsd
from bench.report import FAKE, FINOPSD, FLOOR

PY = sys.executable
IDLE_SETTLE_S = 1.0
QUIET_PROBE_S = 2.0
QUIET_SHARE = 0.05  # other processes' share of the machine below which it counts as quiet


async def wait_quiet(budget_s: float, ours: list[int]) -> float:
    """Wait, at most ``budget_s``, until other processes leave the machine quiet; their last share."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    while True:
        probe = Background(ours)
        await asyncio.sleep(QUIET_PROBE_S)
        share = probe.share()
        if share["other"] + share["steal"] < QUIET_SHARE or loop.time() + QUIET_PROBE_S > deadline:
            return share["other"] + share["steal"]


def logged_rows(db: Path) -> int | None:
    with contextlib.suppress(sqlite3.Error):
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
            return int(conn.execute("select count(*) from requests").fetchone()[0])
    return None


def vs_url(base: str) -> str:
    base = base.rstrip("/")
    return base if base.endswith("/chat/completions") else base + "/chat/completions"


async def measure(load: Load, targets: list[Target], ours: tuple[list[int], list[int]], idle: dict[str, float],
                  db: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every scenario against every target; prints the table and the verdicts."""
    rows: list[dict[str, Any]] = []
    background: dict[str, dict[str, float]] = {}
    for name, stream, concurrency in SCENARIOS:
        load.pins.apply(*ours, split=concurrency > 1)
        if args.wait_quiet:
            busy = await wait_quiet(args.wait_quiet, ours[0] + ours[1][:-1])
            if busy >= QUIET_SHARE:
                print(f"  (the machine is still {busy:.0%} busy with other processes; measuring anyway)")
        watch = Background(ours[0] + ours[1][:-1])  # the orchestrator's own time is counted by Background
        rows += await run_scenario(load, targets, name, stream, concurrency, args.duration, args.warmup,
                                   args.body_kb)
        background[f"{name} c={concurrency}"] = other = watch.share()
        print(f"  {name} c={concurrency}: " + ", ".join(
            f"{r['target']} {report.fmt(r['rps'], 0)} rps" for r in rows[-len(targets):])
            + f" · other processes {other['other']:.0%}, steal {other['steal']:.0%} of the machine", flush=True)
    measured = sum(r["requests"] for r in rows if r["target"] == FINOPSD)
    logged = logged_rows(db)
    verdicts = report.verdicts(rows, idle[FINOPSD], HIGH)
    notes = report.load_warnings(rows, HIGH) + [
        f"{scenario}: other processes used {b['other']:.0%} of the machine (steal {b['steal']:.0%}): "
        "its numbers are disturbed" for scenario, b in background.items() if b["other"] + b["steal"] > 0.05]
    print()
    print(report.table(rows))
    print()
    print("idle RSS after start-up: " + ", ".join(f"{k} {v:.1f} MB" for k, v in idle.items()))
    print(f"finopsd log rows: {logged if logged is not None else '?'} for {measured} measured requests "
          "(plus warm-up)")
    for note in notes:
        print(f"note: {note}")
    print()
    for v in verdicts:
        print(f"- {v['line']}")
    return {"idle_rss_mb": idle, "log_rows": logged, "rows": rows, "verdicts": verdicts, "notes": notes,
            "background": background}


async def bench(args: argparse.Namespace) -> int:
    pins = Pinning.for_machine(not args.no_pin)
    workdir = Path(tempfile.mkdtemp(prefix="finopsd-bench-"))
    children = Children(workdir)
    wrk = None if args.driver == "aiohttp" else shutil.which("wrk")
    if args.driver == "wrk" and not wrk:
        raise SystemExit("--driver wrk: wrk is not installed (apt-get install wrk)")
    try:
        fake = await children.server("fake", [PY, "-m", "bench.fake_upstream", "--port", str(args.fake_port),
                                              "--chunks", str(args.chunks), "--delay-ms", str(args.delay_ms)], None)
        floor = await children.server("floor", [PY, "-m", "bench.floor", "--upstream", fake.url + "/v1"], None)
        config = write_config(workdir, fake.url, not args.no_log_content)
        gw = await children.server("finopsd", [PY, "-m", "finopsd", "serve", "--config", str(config),
                                               "--port", "0"], None)
        driver = await children.spawn("driver", [PY, "-m", "bench.driver"], None, stdin=True, stdout_pipe=True)
        # the orchestrator idles under load, but it too is kept off the gateway's CPU
        ours = ([floor.pid, gw.pid], [fake.pid, driver.pid, os.getpid()])
        load = Load(children, driver, wrk, pins)
        info = machine()
        print(f"# finopsd bench — {info['nproc']} CPUs ({info['cpu_model']}), Python {info['python']}, "
              f"aiohttp {info['aiohttp']}, commit {info['commit'] or '?'}")
        split = f"c>1: gateways on CPU {sorted(pins.gateway)}, load on {sorted(pins.load or ())}" \
            if pins.gateway else "off"
        print(f"fake {fake.url} · floor {floor.url} · finopsd {gw.url} · pinning {split} · driver: aiohttp"
              f"{' + wrk for c>1' if wrk else ''} · {args.duration:g} s per target per scenario", flush=True)
        out: dict[str, Any] = {"machine": info, "params": vars(args)}
        if not args.profile_only:
            await asyncio.sleep(IDLE_SETTLE_S)
            idle = {FLOOR: memory_mb(floor.pid)["rss"], FINOPSD: memory_mb(gw.pid)["rss"]}
            targets = [
                Target(FAKE, fake.url + "/v1/chat/completions", CLIENT_MODEL, fake.pid),
                Target(FLOOR, floor.url + "/v1/chat/completions", CLIENT_MODEL, floor.pid),
                Target(FINOPSD, gw.url + "/openai/chat/completions", CLIENT_MODEL, gw.pid),
            ]
            if args.vs:
                targets.append(Target("vs", vs_url(args.vs), args.vs_model, args.vs_pid))
                if args.vs_pid:
                    idle["vs"] = memory_mb(args.vs_pid)["rss"]
            if not args.agents_only:
                out.update(await measure(load, targets, ours, idle, workdir / "finops.db", args))
            if args.agents:
                print(f"\nagent sessions: {args.agents} concurrent tasks growing 30 -> 400 KB, streamed tool-call"
                      f" answers, {args.agents_duration:g} s per target", flush=True)
                load.pins.apply(*ours, split=True)
                db = workdir / "finops.db"
                out["agents"] = await run_agents(load, targets[1:3], {FINOPSD: lambda: logged_rows(db)}, args.agents,
                                                 args.agents_duration, idle)
                checks = agent_verdicts(out["agents"])
                out["verdicts"] = [*out.get("verdicts", ()), *checks]
                for v in checks:
                    print(f"- {v['line']}")
        if args.profile:
            print("\nprofiling finopsd (a second instance under py-spy) …", flush=True)
            load.pins.apply(*ours, split=True)
            out["profile"] = await profile_finopsd(
                children, load, fake.url, Path(args.profile).resolve(), seconds=args.duration, warmup=args.warmup,
                body_kb=args.body_kb, log_content=not args.no_log_content, gil=args.profile_gil)
            print(out["profile"])
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2))
        return 0 if all(v["met"] is not False for v in out.get("verdicts", ())) else 1
    except BaseException as e:
        if not isinstance(e, RuntimeError):  # a RuntimeError of ours already names the process and its log
            _report_crashes(children.started)
        raise
    finally:
        await children.stop_all()
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _report_crashes(started: list[Child]) -> None:
    for child in started:
        if child.proc.returncode not in (None, 0, -signal.SIGTERM, -signal.SIGINT):
            print(f"{child.name} exited with {child.proc.returncode}; its log ends:\n{child.tail()}", file=sys.stderr)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per target per scenario (default 10)")
    p.add_argument("--quick", action="store_true", help="2 s per scenario: a smoke run")
    p.add_argument("--json", metavar="FILE", help="also write every number to FILE")
    p.add_argument("--vs", metavar="URL", help="another OpenAI-compatible gateway (base URL, e.g. …/v1) "
                   "routing --vs-model to this run's fake upstream (see --fake-port)")
    p.add_argument("--vs-model", default=CLIENT_MODEL, help=f"model name sent to --vs (default {CLIENT_MODEL})")
    p.add_argument("--vs-pid", type=int, help="pid of the --vs gateway, for its CPU and RSS")
    p.add_argument("--fake-port", type=int, default=0, help="fixed port for the fake upstream (default: any)")
    p.add_argument("--chunks", type=int, default=20, help="content chunks per stream (default 20)")
    p.add_argument("--delay-ms", type=float, default=0.0, help="fake upstream's pause between chunks (default 0)")
    p.add_argument("--body-kb", type=float, default=8.0, help="request body size in KB (default 8)")
    p.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds per target per scenario")
    p.add_argument("--driver", choices=("auto", "aiohttp", "wrk"), default="auto",
                   help="load for c>1: wrk when installed (auto), or always the aiohttp driver")
    p.add_argument("--no-log-content", action="store_true",
                   help="finopsd with logs.content: false (rows keep usage, not the conversation)")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help="before each scenario, wait up to S seconds for other processes to leave the CPUs idle")
    p.add_argument("--no-pin", action="store_true", help="do not pin gateways and load to separate CPUs")
    p.add_argument("--profile", metavar="FILE", help="afterwards, profile finopsd under the stream c=32 load "
                   "with py-spy for --duration s; FILE gets the collapsed stacks")
    p.add_argument("--profile-gil", action="store_true", help="sample only the thread holding the GIL")
    p.add_argument("--profile-only", action="store_true", help="skip the scenarios (needs --profile)")
    p.add_argument("--agents", type=int, default=8, metavar="N",
                   help="the agent-session scenario with N concurrent growing tasks (default 8; 0 skips it)")
    p.add_argument("--agents-duration", type=float, default=60.0, metavar="S",
                   help="seconds per target of the agent-session scenario (default 60)")
    p.add_argument("--agents-only", action="store_true", help="run only the agent-session scenario")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, config, database)")
    args = p.parse_args(argv)
    if args.profile_only and not args.profile:
        p.error("--profile-only needs --profile FILE")
    if args.quick:
        args.duration, args.warmup, args.agents_duration = 2.0, 0.5, 5.0
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, _interrupt)  # like Ctrl-C: bench()'s finally stops every child it started
    try:
        sys.exit(asyncio.run(bench(args)))
    except KeyboardInterrupt:
        sys.exit(130)
    except RuntimeError as e:  # a server that would not start, a driver that died: the message says which
        print(f"bench failed: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
