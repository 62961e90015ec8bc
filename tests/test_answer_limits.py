"""Hostile upstream answers are bounded: decoded size (gzip bombs, endless streams) and SSE line length.

Each case runs against an OpenAI-protocol and an Anthropic-protocol provider, both with
small limits; the fake streams without end, so a gateway without the bound hangs (and
the hang guard fails the test) instead of finishing.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from finopsd.sse import EventTooLarge, SSEDecoder
from tests.fakes import fixture_frames
from tests.logrows import last_row
from tests.test_routes_openai import MSGS

LIMITS = "max_answer_mb: 1, max_stream_mb: 2, max_event_mb: 0.25"
FIRST = {  # a valid first event per protocol, so the client has its 200 before the trouble starts
    "openai": fixture_frames("openai/text_stream.sse")[0],
    "anthropic": fixture_frames("anthropic/thinking_then_text.sse")[0],
}
PIECE = 64 * 1024


class Hostile:
    """An upstream whose answers never end; ``left`` is set once the gateway hung up."""

    def __init__(self) -> None:
        self.left = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_post("/{protocol}/{mode}/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        protocol, mode = request.match_info["protocol"], request.match_info["mode"]
        body = await request.json()
        stream = bool(body.get("stream"))
        headers = {"Content-Type": "text/event-stream" if stream else "application/json"}
        if mode == "bomb":
            headers["Content-Encoding"] = "gzip"
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        gzip = zlib.compressobj(9, zlib.DEFLATED, 31)
        try:
            if stream and mode != "line_first":
                await resp.write(FIRST[protocol] if mode != "bomb" else gzip.compress(FIRST[protocol]))
            if mode in ("line", "line_first"):
                await resp.write(b"data: ")
            for _ in range(100_000):  # ~6 GB decoded: far past any limit, never reached with one
                if mode == "bomb":  # zeros (or one event, again and again) compress ~1000:1
                    plain = FIRST[protocol] * (PIECE // len(FIRST[protocol])) if stream else bytes(PIECE)
                    await resp.write(gzip.compress(plain) + gzip.flush(zlib.Z_SYNC_FLUSH))
                elif mode in ("line", "line_first"):
                    await resp.write(b"x" * PIECE)
                else:  # "events": valid, small, endless
                    await resp.write(FIRST[protocol] * 64)
                await asyncio.sleep(0)
        except (ConnectionError, asyncio.CancelledError):
            self.left.set()
            raise
        return resp


@pytest.fixture
async def hostile_gateway(aiohttp_server: Any, make_gateway: Any) -> tuple[TestClient, Hostile]:
    hostile = Hostile()
    server = await aiohttp_server(hostile.app)
    gw = await make_gateway("providers:\n" + "".join(
        f"  {protocol}-{mode}: {{type: {protocol}, base_url: '{server.make_url(f'/{protocol}/{mode}')}"
        f"{'/v1' if protocol == 'openai' else ''}', keys: [{{value: k}}], {LIMITS}}}\n"
        for protocol in FIRST for mode in ("bomb", "line", "line_first", "events")))
    return gw, hostile


def _body(protocol: str, mode: str, stream: bool) -> dict[str, Any]:
    return {"model": f"{protocol}-{mode}/m", "messages": MSGS, "stream": stream, "max_tokens": 100}


def _error_event(raw: bytes) -> dict[str, Any]:
    events = [f for f in raw.split(b"\n\n") if f.strip()]
    assert len(events) >= 2, raw[:300]  # the first event went out, then the error
    data = events[-1].split(b"data: ", 1)[1]
    return json.loads(data)["error"]


@pytest.mark.parametrize("protocol", list(FIRST))
async def test_gzip_bomb_answer_is_a_502_at_the_cap(hostile_gateway: Any, protocol: str) -> None:
    gw, hostile = hostile_gateway
    async with asyncio.timeout(30):  # a hang guard: without a cap this inflates for ever
        resp = await gw.post("/openai/chat/completions", json=_body(protocol, "bomb", False))
        assert resp.status == 502
        error = (await resp.json())["error"]
        assert error["code"] == "upstream_answer_too_large" and "1 MB" in error["message"]
        await hostile.left.wait()
    row = await last_row(gw)
    assert row["status_code"] == 502 and row["error_type"] == "upstream_error"


@pytest.mark.parametrize("protocol", list(FIRST))
@pytest.mark.parametrize("mode", ["bomb", "events"])
async def test_endless_stream_ends_with_an_error_event_at_the_cap(
    hostile_gateway: Any, protocol: str, mode: str
) -> None:
    gw, hostile = hostile_gateway
    async with asyncio.timeout(30):
        resp = await gw.post("/openai/chat/completions", json=_body(protocol, mode, True))
        assert resp.status == 200
        error = _error_event(await resp.read())
        assert error["code"] == "upstream_answer_too_large"
        await hostile.left.wait()
    assert (await last_row(gw))["status"] == "error"


@pytest.mark.parametrize("protocol", list(FIRST))
async def test_sse_line_without_end_is_cut_at_max_event_mb(hostile_gateway: Any, protocol: str) -> None:
    gw, hostile = hostile_gateway
    async with asyncio.timeout(30):
        resp = await gw.post("/openai/chat/completions", json=_body(protocol, "line", True))
        error = _error_event(await resp.read())
        assert error["code"] == "upstream_event_too_large" and "0.25 MB" in error["message"]
        await hostile.left.wait()
        # before any event reached the client, the same limit is a plain 502
        resp = await gw.post("/openai/chat/completions", json=_body(protocol, "line_first", True))
        assert resp.status == 502
        assert (await resp.json())["error"]["code"] == "upstream_event_too_large"


def test_a_long_line_in_small_reads_decodes_whole() -> None:
    payload = "y" * (3 * 1024 * 1024)
    raw = f"event: big\r\ndata: {payload}\r\rdata: next\n\n".encode()
    decoder = SSEDecoder(max_event=4 * 1024 * 1024)
    cr = raw.index(b"\r\r") + 1  # a read ends on the first \r of two: it might have been half of \r\n
    cuts = sorted({*range(0, len(raw), 1000), cr, len(raw)})
    frames = [f for a, b in zip(cuts, cuts[1:]) for f in decoder.feed(raw[a:b])]
    assert frames == [("big", payload), (None, "next")]  # a lone \r ends a line, also at a read's edge
    with pytest.raises(EventTooLarge):
        SSEDecoder(max_event=1024).feed(b"data: " + b"z" * 2000)
