"""A real gateway and a real fake upstream on their own loop in a thread, for sync hypothesis tests.

The fake upstream answers every request with its ``script`` (a JSON body, a stream, or both
for Replicate, whose stream is fetched from the ``/stream`` path its first answer names),
so a fuzz test sets the upstream's next answer before each call.
"""

from __future__ import annotations

import asyncio
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import settings

from finopsd import config as cfg
from finopsd.app import build_app
from finopsd.appkeys import LOGSTORE
from tests.fakes import fixture_frames

# CI explores the same examples every run (a red build must mean a regression, not a new
# random draw); a developer's run explores new ones and keeps failures in .hypothesis/
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@dataclass
class Script:
    """The fake upstream's next answer: ``body`` (JSON bytes) and/or stream ``frames``.

    Neither: an OpenAI-protocol answer in the form asked for (a stream, or a whole completion).
    """

    body: bytes | None = None
    frames: list[bytes] | None = None
    content_type: str = "text/event-stream"


COMPLETION = b'{"id":"x","object":"chat.completion","model":"gpt-5","choices":[]}'


def providers_yaml(url: str) -> str:
    """One provider of every protocol, all at the fake upstream."""
    return f"""providers:
  openai: {{base_url: '{url}/v1', models: [gpt-5]}}
  groq: {{base_url: '{url}/v1', models: [x]}}
  mistral: {{base_url: '{url}/v1', keys: [{{value: m-key}}]}}
  azure: {{base_url: '{url}/openai', api_version: '2024-10-21', keys: [{{value: az-key}}]}}
  anthropic: {{base_url: '{url}', keys: [{{value: a-key}}]}}
  gemini: {{base_url: '{url}/v1beta', keys: [{{value: g-key}}]}}
  vertex: {{base_url: '{url}', project: p1, location: us-east5, keys: [{{value: ya29.t}}]}}
  cohere: {{base_url: '{url}', keys: [{{value: c-key}}]}}
  bedrock: {{base_url: '{url}', region: us-east-1, keys: [{{value: b-key}}]}}
  replicate: {{base_url: '{url}/v1', keys: [{{value: r8-key}}]}}
"""


class LiveGateway:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self.upstream_url = ""
        self.script = Script()
        self.app: web.Application | None = None
        self.runners: list[web.AppRunner] = []
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        """Whatever the script says, for any path and method."""
        raw = await request.read()
        script = self.script
        frames = script.frames
        if frames is None and script.body is None:  # the OpenAI protocol, as asked
            if b'"stream":true' not in raw.replace(b" ", b""):
                return web.Response(body=COMPLETION, content_type="application/json")
            frames = fixture_frames("openai/text_stream.sse")
        if script.body is not None and not request.path.startswith("/stream"):
            return web.Response(body=script.body, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": script.content_type})
        await resp.prepare(request)
        for frame in frames or ():
            await resp.write(frame)
        return resp

    async def _serve(self, app: web.Application) -> str:
        runner = web.AppRunner(app, handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    async def start(self, db: Path, extra_yaml: str) -> None:
        fake = web.Application()
        fake.router.add_route("*", "/{tail:.*}", self._answer)
        self.upstream_url = await self._serve(fake)
        config = cfg.parse(f"storage: {{path: '{db}'}}\nserver: {{max_body_mb: 1}}\n{extra_yaml}"
                           + providers_yaml(self.upstream_url), env={})
        self.app = build_app(config)
        self.url = await self._serve(self.app)

    def rows_logged(self) -> int:
        assert self.app is not None
        store = self.app[LOGSTORE]

        async def count() -> int:
            await store.flush()
            return int((await store.search())["totals"]["requests"])

        return int(self.call(count()))

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()


def live_gateway(tmp_path_factory: pytest.TempPathFactory, extra_yaml: str = "") -> Iterator[LiveGateway]:
    """The body of a module-scoped fixture: start both servers, yield, stop them."""
    live = LiveGateway()
    live.thread.start()
    live.call(live.start(Path(tmp_path_factory.mktemp("fuzz")) / "f.db", extra_yaml))
    yield live

    async def stop() -> None:
        for runner in reversed(live.runners):
            await runner.cleanup()

    live.call(stop())
    live.loop.call_soon_threadsafe(live.loop.stop)
    live.thread.join(5)
    live.loop.close()
