"""``finopsd serve`` as a real child process, for signal and crash tests."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest


class Daemon:
    """``finopsd serve`` as a child process on a free port."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str) -> None:
        self.proc, self.url = proc, url
        self.stderr: list[str] = []

    async def read_stderr_until(self, needle: str) -> None:
        assert self.proc.stderr is not None
        while not any(needle in line for line in self.stderr):
            line = await self.proc.stderr.readline()
            if not line:
                raise AssertionError(f"{needle!r} never logged; got {self.stderr}")
            self.stderr.append(line.decode())


@pytest.fixture
async def daemon_for(tmp_path: Path) -> AsyncIterator[Any]:
    procs: list[asyncio.subprocess.Process] = []

    async def start(config_path: Path | None, env: dict[str, str] | None = None,
                    open_files: int | None = None) -> Daemon:
        """``open_files``: the child's RLIMIT_NOFILE, soft and hard (as a unit's LimitNOFILE sets it)."""
        args = [sys.executable, "-m", "finopsd", "serve", "--port", "0"]
        if config_path:
            args += ["--config", str(config_path)]
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **(env or {})},
            preexec_fn=None if open_files is None else lambda: resource.setrlimit(
                resource.RLIMIT_NOFILE, (open_files, open_files)),
        )
        procs.append(proc)
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            line = (await proc.stdout.readline()).decode()
        match = re.search(r"listening on (http://\S+)", line)
        assert match, line
        return Daemon(proc, match.group(1))

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


