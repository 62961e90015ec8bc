"""Several ``finopsd serve`` child processes on one config: one gateway on PostgreSQL and Redis.

``cluster(yaml, n)`` writes the config (the test's ``storage.url`` and ``state.redis_url``
included) and starts ``n`` instances on free ports, as ``finopsd@.service`` runs them behind a
load balancer; the test plays the load balancer and picks the instance for each request.
Each child's output goes to a file (a pipe nobody reads would fill and stall a busy child),
so a test can read what an instance logged. Every child still running is killed at the end.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

LISTENING = re.compile(r"listening on (http://\S+)")


@dataclass
class Instance:
    """One ``finopsd serve`` child; ``url`` is its base (``http://127.0.0.1:PORT``)."""

    proc: asyncio.subprocess.Process
    url: str
    output: Path

    def logged(self) -> str:
        return self.output.read_text(errors="replace")

    @asynccontextmanager
    async def client(self, key: str) -> AsyncIterator[openai.AsyncOpenAI]:
        """The real openai client, pointed at this instance."""
        async with openai.AsyncOpenAI(base_url=f"{self.url}/openai", api_key=key, max_retries=0) as client:
            yield client

    async def get(self, path: str, **params: Any) -> Any:
        """GET a JSON route of this instance (admin routes are open to loopback without a token)."""
        async with aiohttp.ClientSession() as s, s.get(self.url + path, params=params) as resp:
            body = await resp.json(content_type=None) if resp.content_type == "application/json" else await resp.text()
            assert resp.status == 200, (path, resp.status, body)
            return body

    async def kill(self) -> None:
        """``kill -9``: no drain, no flush, nothing it held in memory survives."""
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()


@dataclass
class Cluster:
    instances: list[Instance] = field(default_factory=list)

    def __getitem__(self, i: int) -> Instance:
        return self.instances[i % len(self.instances)]

    def __len__(self) -> int:
        return len(self.instances)


ClusterFactory = Callable[..., Awaitable[Cluster]]


async def start_instance(config: Path, output: Path) -> Instance:
    with output.open("wb") as out:  # the child keeps its own descriptor
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "finopsd", "serve", "--config", str(config), "--port", "0",
            stdout=out, stderr=asyncio.subprocess.STDOUT, env=dict(os.environ))
    async with asyncio.timeout(60):  # three instances migrating one database at once wait for one another
        while not (match := LISTENING.search(output.read_text(errors="replace"))):
            if proc.returncode is not None:
                raise AssertionError(f"finopsd serve exited with {proc.returncode}:\n{output.read_text()}")
            await asyncio.sleep(0.05)
    return Instance(proc, match.group(1), output)


@pytest.fixture
async def cluster(tmp_path: Path, postgres_url: str, redis_server: Any) -> AsyncIterator[ClusterFactory]:
    """``await cluster(yaml, n=3)``: ``n`` instances of one config on the test's PostgreSQL and Redis."""
    started: list[Instance] = []

    async def start(yaml_text: str, n: int = 3) -> Cluster:
        config = tmp_path / "cluster.yaml"
        config.write_text(f"storage: {{url: '{postgres_url}'}}\nstate: {{redis_url: '{redis_server.url}'}}\n"
                          + yaml_text)
        instances = await asyncio.gather(*(
            start_instance(config, tmp_path / f"instance-{len(started) + i}.log") for i in range(n)))
        started.extend(instances)
        return Cluster(list(instances))

    yield start
    for instance in started:
        if instance.proc.returncode is None:
            instance.proc.terminate()  # a drain, so that nothing is left writing to the database
    for instance in started:
        try:
            async with asyncio.timeout(30):
                await instance.proc.wait()
        except TimeoutError:
            instance.proc.kill()
            await instance.proc.wait()
