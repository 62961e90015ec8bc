"""Child processes of a bench run, and what /proc says about them.

Each server runs in its own process with stdout and stderr in a log file (a pipe
nobody reads would fill and stall it); readiness is the "listening on URL" line
it prints once bound. CPU time is utime + stime of /proc/<pid>/stat (every thread,
exited ones included: aiosqlite's writer thread counts as the gateway's), RSS is
VmRSS of /proc/<pid>/status.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

READY_TIMEOUT_S = 30
STOP_TIMEOUT_S = 5
LISTENING = re.compile(r"listening on (http://\S+)")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1


def cpu_ms(pid: int) -> float:
    """CPU time (user + system, all threads) the process has used, in ms."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # the command name may hold spaces: split after it
    return (int(fields[11]) + int(fields[12])) * 1000 / CLK_TCK


def machine_busy_ms() -> tuple[float, float]:
    """(busy, steal) CPU ms of the whole machine since boot, all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq + steal) * 1000 / CLK_TCK, steal * 1000 / CLK_TCK


def own_cpu_ms() -> float:
    """This process and its reaped children (wrk runs, py-spy), in ms."""
    t = os.times()
    return (t.user + t.system + t.children_user + t.children_system) * 1000


class Background:
    """How much CPU processes other than the bench's used over a stretch: a busy machine skews numbers."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.t0 = time.monotonic()
        self.busy0, self.steal0 = machine_busy_ms()
        self.ours0 = self._ours()

    def _ours(self) -> float:
        total = own_cpu_ms()
        for pid in self.pids:
            with contextlib.suppress(OSError):
                total += cpu_ms(pid)
        return total

    def share(self) -> dict[str, float]:
        """Other processes' CPU and the hypervisor's steal, as shares of the machine's capacity."""
        capacity = (time.monotonic() - self.t0) * 1000 * len(os.sched_getaffinity(0))
        busy, steal = machine_busy_ms()
        other = (busy - self.busy0) - (self._ours() - self.ours0) - (steal - self.steal0)
        return {"other": max(0.0, other) / capacity, "steal": (steal - self.steal0) / capacity}


def start_time(pid: int) -> int:
    """Clock ticks after boot at which the process started: with the pid, it names one process."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) in MB."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) / 1024
    return {"rss": out.get("VmRSS", 0.0), "peak": out.get("VmHWM", 0.0)}


@dataclass
class Pinning:
    """Which CPUs the gateway under test and the load side (fake upstream, driver, wrk) run on.

    Split (concurrency > 1): the gateway gets the first CPU to itself, the load side the
    others, so the gateway's throughput is not set by how the scheduler mixes them.
    Not split (concurrency 1): every process may use every CPU. On a VM, pinning the two
    ends of a request chain to different vCPUs turns every hop into a wake-up of an idle
    vCPU, which costs more, and varies more, than the 0.15 ms the targets resolve.
    """

    everything: set[int]
    gateway: set[int] | None = None  # None: no split possible (one CPU) or turned off
    load: set[int] | None = None

    @classmethod
    def for_machine(cls, enabled: bool) -> Pinning:
        cpus = sorted(os.sched_getaffinity(0))
        if not enabled or len(cpus) < 2:
            return cls(set(cpus))
        return cls(set(cpus), {cpus[0]}, set(cpus[1:]))

    def cpus(self, role: str, split: bool) -> set[int] | None:
        """CPUs for a new process of ``role`` ("gateway" or "load"); None: leave it alone."""
        if not split or self.gateway is None:
            return None
        return self.gateway if role == "gateway" else self.load

    def apply(self, gateways: list[int], load: list[int], split: bool) -> None:
        """Re-pin running processes (every thread of each) for the next scenario."""
        for pids, role in ((gateways, "gateway"), (load, "load")):
            cpus = self.cpus(role, split) or self.everything
            for pid in pids:
                pin_all_threads(pid, cpus)


def pin_all_threads(pid: int, cpus: set[int]) -> None:
    # threads inherit their creator's affinity, so pinning every thread now covers later ones
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(tid), cpus)


@dataclass
class Child:
    name: str
    proc: asyncio.subprocess.Process
    log: Path
    url: str = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


@dataclass
class Children:
    """Every process a run started; ``stop_all`` ends each of them, by its own pid."""

    workdir: Path
    started: list[Child] = field(default_factory=list)
    # grandchildren started through another tool (py-spy): (pid, start time), so a reused pid is left alone
    adopted: list[tuple[int, int]] = field(default_factory=list)

    def adopt(self, pid: int) -> None:
        self.adopted.append((pid, start_time(pid)))

    async def spawn(self, name: str, args: list[str], cpus: set[int] | None, *, stdin: bool = False,
                    stdout_pipe: bool = False, env: dict[str, str] | None = None) -> Child:
        log = self.workdir / f"{name}.log"
        logf = open(log, "wb")
        pre = _child_setup(cpus)
        try:
            proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else logf,
                stderr=logf,
                preexec_fn=pre,
                env={**os.environ, **(env or {})},
                limit=1 << 26,  # the driver answers with one long JSON line per slice
                cwd=Path(__file__).resolve().parent.parent,
            )
        finally:
            logf.close()
        child = Child(name, proc, log)
        self.started.append(child)
        return child

    async def server(self, name: str, args: list[str], cpus: set[int] | None,
                     env: dict[str, str] | None = None) -> Child:
        """Start a server and wait (bounded) for its "listening on URL" line and a TCP accept."""
        child = await self.spawn(name, args, cpus, env=env)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_S
        while loop.time() < deadline:
            if child.proc.returncode is not None:
                raise RuntimeError(f"{name} exited with {child.proc.returncode}:\n{child.tail()}")
            match = LISTENING.search(child.log.read_text(errors="replace"))
            if match:
                child.url = match.group(1)
                await _wait_accepting(child.url, deadline - loop.time())
                return child
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{name} did not report its address within {READY_TIMEOUT_S} s:\n{child.tail()}")

    async def stop_all(self) -> None:
        for pid, started in self.adopted:
            with contextlib.suppress(OSError):
                if start_time(pid) == started:
                    os.kill(pid, signal.SIGKILL)
        for child in reversed(self.started):
            proc = child.proc
            if proc.returncode is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


def _child_setup(cpus: set[int] | None) -> Callable[[], None]:
    libc = ctypes.CDLL(None, use_errno=True)

    def setup() -> None:
        # a bench killed with SIGKILL must not leave servers behind: the kernel ends them with it
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


async def _wait_accepting(url: str, budget: float) -> None:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(budget, 1.0)
    while True:
        try:
            _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
            writer.close()
            await writer.wait_closed()
            return
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=5, cwd=Path(__file__).resolve().parent.parent).stdout.strip()
    wrk = shutil.which("wrk")
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "kernel": platform.release(),
        "wrk": wrk or "",
        "commit": commit,
        "executable": sys.executable,
    }
