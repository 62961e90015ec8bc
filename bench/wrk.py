"""Throughput with wrk (Debian's ``wrk`` package) when it is installed.

wrk is C: at concurrency 32 it needs a fraction of the CPU the aiohttp driver
needs, so the core it shares with the fake upstream is less likely to cap the
floor's number. Its Lua ``done`` hook prints the run summary and the raw latency
histogram (``latency(i)`` gives value and count, in microseconds: wrk's SCRIPTING
notes), so slices of one target can be pooled before taking percentiles.
wrk measures to the last byte; it has no notion of a first token.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from bench.procs import Children

SCRIPT = """\
local f = assert(io.open(%(body)s, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
%(headers)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("S %%d %%d %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout))
  for i = 1, #latency do
    local value, count = latency(i)
    io.write(string.format("H %%d %%d\\n", value, count))
  end
end
"""


def lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string with only ASCII escapes is a valid Lua string literal


def write_script(workdir: Path, name: str, body: str, headers: dict[str, str]) -> Path:
    body_path = workdir / f"{name}.body.json"
    body_path.write_text(body)
    lines = "\n".join(f"wrk.headers[{lua_string(k)}] = {lua_string(v)}"
                      for k, v in {"Content-Type": "application/json", **headers}.items())
    script = workdir / f"{name}.lua"
    script.write_text(SCRIPT % {"body": lua_string(str(body_path)), "headers": lines})
    return script


def slice_seconds(duration: float) -> int:
    return max(1, round(duration))  # wrk takes whole seconds


async def run_wrk(children: Children, wrk: str, script: Path, url: str, concurrency: int, seconds: int,
                  cpus: set[int] | None) -> dict[str, Any]:
    """One wrk run; the result has the aiohttp driver's keys (``lat`` expanded from the histogram)."""
    args = [wrk, "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "30s", "-s", str(script), url]
    child = await children.spawn(f"wrk-{script.stem}", args, cpus, stdout_pipe=True)
    assert child.proc.stdout is not None
    out, _ = await asyncio.wait_for(child.proc.communicate(), seconds + 40)
    if child.proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {child.proc.returncode}: {child.tail()}")
    return parse(out.decode())


def parse(text: str) -> dict[str, Any]:
    requests = duration_us = 0
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    lat: list[float] = []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "S" and len(parts) == 8:
            requests, duration_us = int(parts[1]), int(parts[2])
            errors = dict(zip(errors, map(int, parts[3:])))
        elif parts[0] == "H" and len(parts) == 3:
            lat.extend([int(parts[1]) / 1000] * int(parts[2]))
    if not duration_us:
        raise RuntimeError(f"wrk printed no summary: {text[-500:]!r}")
    bad = sum(errors.values())
    sample = ", ".join(f"{k} {v}" for k, v in errors.items() if v) or None
    # wrk counts non-2xx answers as requests too; its histogram holds every answered request
    return {"n": requests - errors["status"], "errors": bad, "error_sample": sample,
            "elapsed": duration_us / 1e6, "lat": lat, "ttft": [], "cpu_s": None}
