"""The load side: what a request looks like, how it is sent, and one scenario's slices.

A scenario runs every target in interleaved slices (order rotated each round, so
drift lands on all alike), reading each target's CPU time from /proc around every
slice, after a short settle so work a slice left queued (finopsd's log writer
flushes every 100 ms) still counts as that slice's.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import report
from bench.procs import Child, Children, Pinning, cpu_ms, memory_mb
from bench.report import Cell
from bench.wrk import run_wrk, slice_seconds, write_script

LOW, HIGH = 1, 32
SCENARIOS = (("non-stream", False, LOW), ("stream", True, LOW), ("non-stream", False, HIGH), ("stream", True, HIGH))
SLICE_TARGET_S = 2.0  # a scenario's time per target is cut into slices of about this, interleaved
SETTLE_S = 0.3  # after a slice, before reading CPU: finopsd's log writer flushes every 100 ms
CLIENT_MODEL = "openai/gpt-4.1-mini"
CLIENT_HEADERS = {"Authorization": "Bearer sk-bench-client"}


@dataclass
class Target:
    name: str
    url: str  # the chat-completions URL
    model: str
    pid: int | None  # whose CPU and RSS to read (None: unknown, e.g. --vs without --vs-pid)


def request_body(model: str, stream: bool, body_kb: float) -> str:
    """A coding agent's turn: a long system prompt, tools, one earlier tool call and its result."""
    tool = {"type": "function", "function": {
        "name": "read_file", "description": "Read a file of the workspace; returns numbered lines.",
        "parameters": {"type": "object", "properties": {
            "path": {"type": "string", "description": "Path relative to the workspace root"},
            "start_line": {"type": "integer"}, "end_line": {"type": "integer"}},
            "required": ["path"], "additionalProperties": False}}}
    run = {"type": "function", "function": {
        "name": "execute_command", "description": "Run a shell command in the workspace.",
        "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}}
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": ""},
            {"role": "user", "content": "The test tests/test_blocks.py::test_nested fails. Find out why and fix it."},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function", "function": {
                "name": "execute_command", "arguments": "{\"command\": \"pytest tests/test_blocks.py -x -q\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1",
             "content": "F\nE   AssertionError: assert ['a', ['b']] == ['a', ['b', 'c']]\n1 failed in 0.12s"},
            {"role": "user", "content": "<environment_details>\n# Current Working Directory\n/home/dev/parser\n"
                                        "</environment_details>"},
        ],
        "tools": [tool, run], "tool_choice": "auto", "temperature": 0, "max_tokens": 4096, "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    rule = "- Prefer small, reviewable edits; read a file before changing it and run the tests after.\n"
    missing = int(body_kb * 1024) - len(json.dumps(body))
    body["messages"][0]["content"] = "You are a senior software engineer working in the user's repository.\n" + \
        rule * max(0, missing // len(rule))
    return json.dumps(body)


def write_config(workdir: Path, fake_url: str, log_content: bool = True) -> Path:
    path = workdir / "finopsd.yaml"
    path.write_text(
        "server: {host: 127.0.0.1, port: 0}\n"
        f"storage: {{path: {json.dumps(str(workdir / 'finops.db'))}}}\n"
        f"logs: {{content: {'true' if log_content else 'false'}}}\n"
        "metrics: {public: true}\n"  # the agent scenario reads the event loop's lag
        "providers:\n"
        "  openai:\n"
        f"    base_url: {fake_url}/v1\n"
        "    keys: [{name: bench, value: sk-bench-upstream}]\n"
        "    models: [gpt-4.1-mini]\n"
    )
    return path


class Load:
    """Sends load: the aiohttp driver process, or wrk for concurrency > 1 when present."""

    def __init__(self, children: Children, driver: Child, wrk: str | None, pins: Pinning) -> None:
        self.children, self.driver, self.wrk, self.pins = children, driver, wrk, pins
        self.scripts: dict[tuple[str, bool], Path] = {}

    def uses_wrk(self, concurrency: int) -> bool:
        return self.wrk is not None and concurrency > 1

    async def run(self, target: Target, stream: bool, concurrency: int, seconds: float, body_kb: float,
                  record: bool = True) -> dict[str, Any]:
        body = request_body(target.model, stream, body_kb)
        if self.uses_wrk(concurrency) and record:
            assert self.wrk is not None
            key = (target.name, stream)
            if key not in self.scripts:
                self.scripts[key] = write_script(self.children.workdir, f"{target.name}-{int(stream)}", body,
                                                 CLIENT_HEADERS)
            return await run_wrk(self.children, self.wrk, self.scripts[key], target.url, concurrency,
                                 slice_seconds(seconds), self.pins.cpus("load", split=True))
        return await self.command({"url": target.url, "body": body, "headers": CLIENT_HEADERS, "stream": stream,
                                   "concurrency": concurrency, "duration": seconds, "record": record})

    async def command(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """One command to the aiohttp driver, and its answer (bench/driver.py)."""
        proc = self.driver.proc
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await proc.stdin.drain()
        line = await asyncio.wait_for(proc.stdout.readline(), float(cmd["duration"]) + 120)
        if not line:
            raise RuntimeError(f"the driver exited:\n{self.driver.tail()}")
        return dict(json.loads(line))


def _cpu(target: Target) -> float | None:
    return cpu_ms(target.pid) if target.pid else None


async def run_scenario(load: Load, targets: list[Target], name: str, stream: bool, concurrency: int,
                       duration: float, warmup: float, body_kb: float) -> list[dict[str, Any]]:
    slices = max(1, int(duration // SLICE_TARGET_S))
    seconds = duration / slices
    driver = "wrk" if load.uses_wrk(concurrency) else "aiohttp"
    cells = {t.name: Cell(t.name, driver=driver) for t in targets}
    for t in targets:  # warm-up: connections, pools, caches; not recorded
        await load.run(t, stream, concurrency, warmup, body_kb, record=False)
    for i in range(slices):
        shift = i % len(targets)  # rotate the order so no target always follows the same one
        for t in targets[shift:] + targets[:shift]:
            before = _cpu(t)
            result = await load.run(t, stream, concurrency, seconds, body_kb)
            await asyncio.sleep(SETTLE_S)
            after = _cpu(t)
            cells[t.name].add(result, None if before is None or after is None else after - before)
    for t in targets:
        if t.pid:
            cells[t.name].rss_mb = memory_mb(t.pid)["rss"]
    return report.scenario_rows(name, concurrency, cells)
