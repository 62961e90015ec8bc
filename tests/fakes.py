"""Fake upstreams: real aiohttp servers that record requests and play scripted answers.

A script is a list of replies, the n-th for the n-th request (the last one repeats).
Replies speak the provider's wire format from fixture files; they can hold
events until a test says go, cut the connection mid-stream, or hang.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_frames(name: str) -> list[bytes]:
    """An .sse fixture split into frames, each with its blank-line terminator."""
    text = (FIXTURES / name).read_bytes()
    return [f + b"\n\n" for f in text.split(b"\n\n") if f.strip()]


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    frames: list[bytes] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "text/event-stream"
    hold_before: int | None = None  # frame index to wait at until ``until`` is set
    until: asyncio.Event | None = None
    cut_after: int | None = None  # drop the connection after this many frames
    hang: bool = False  # accept the request, never answer
    delay_s: float = 0


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


class FakeUpstream:
    """One fake provider; ``url`` is its base (set once the server runs)."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.replies: list[Reply] = []
        self.key_replies: dict[str, Reply] = {}  # Authorization value → a fixed reply for that key
        self.url = ""
        self.closed_early = asyncio.Event()  # the gateway dropped a stream before its end
        self.models = ["fake-model-a", "fake-model-b"]  # what GET …/models lists (model discovery)
        self.models_asked = 0
        self.sent_bytes = 0  # stream bytes written so far (shows backpressure)
        self.app = web.Application()
        self.app.router.add_get("/{prefix:.*}/models", self.list_models)
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    # scripting
    def play(self, name: str, **kw: Any) -> Reply:
        return self.add(Reply(frames=fixture_frames(name), **kw))

    def answer_json(self, body: Any, status: int = 200, **kw: Any) -> Reply:
        return self.add(Reply(status=status, json=body, content_type="application/json", **kw))

    def add(self, reply: Reply) -> Reply:
        self.replies.append(reply)
        return reply

    @property
    def last(self) -> Seen:
        return self.requests[-1]

    async def list_models(self, request: web.Request) -> web.Response:
        self.models_asked += 1
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        self.requests.append(Seen(request.method, request.path, dict(request.query), dict(request.headers), body))
        served = len(self.requests) - 1
        reply = self.replies[min(served, len(self.replies) - 1)] if self.replies else Reply(404)
        reply = self.key_replies.get(request.headers.get("Authorization", ""), reply)
        if reply.hang:
            await asyncio.sleep(3600)
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.json is not None or not reply.frames:
            return web.json_response(reply.json, status=reply.status, headers=reply.headers)
        resp = web.StreamResponse(status=reply.status, headers={"Content-Type": reply.content_type, **reply.headers})
        await resp.prepare(request)
        try:
            for i, chunk in enumerate(reply.frames):
                if reply.cut_after is not None and i >= reply.cut_after:
                    assert request.transport is not None
                    request.transport.close()
                    return resp
                if reply.hold_before == i and reply.until is not None:
                    await self._hold(request, reply.until)
                await resp.write(chunk)
                self.sent_bytes += len(chunk)
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            self.closed_early.set()
        except asyncio.CancelledError:  # the test server cancels handlers whose client left
            self.closed_early.set()
            raise
        return resp

    async def _hold(self, request: web.Request, until: asyncio.Event) -> None:
        """Wait for the test's go; notice meanwhile if the gateway hung up."""
        while not until.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                self.closed_early.set()
                raise ConnectionResetError("the gateway closed the stream")
            try:
                await asyncio.wait_for(until.wait(), 0.05)
            except TimeoutError:
                pass
