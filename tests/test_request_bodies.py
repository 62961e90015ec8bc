"""Compressed request bodies: inflated off the event loop, capped at max_body_mb, before any key check.

Every route that reads a body gets the same treatment: 400 for a body that is not the
gzip or deflate it claims, 413 past the cap (also without a key), 415 for encodings
the gateway does not take; a valid compressed body works as if sent plain.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import signal
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream
from tests.test_governance import key_line
from tests.test_reliability import OK
from tests.test_routes_openai import MSGS

CHAT = {"model": "openai/gpt-5", "messages": MSGS}
ROUTES = {  # every route that reads a request body
    "/openai/chat/completions": CHAT,
    "/v1/embeddings": {"model": "openai/text-embedding-3-small", "input": "hi"},
    "/openai/completions": {"model": "openai/gpt-5", "prompt": "hi"},
    "/anthropic/v1/messages": {"model": "openai/gpt-5", "max_tokens": 10, "messages": MSGS},
    "/anthropic/v1/messages/count_tokens": {"model": "openai/gpt-5", "messages": MSGS},
    "/openai/v1/responses": {"model": "openai/gpt-5", "input": "hi"},
    "/mcp": {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
    "/login": None,  # a form
}
KEY = "sk-fo-bodies-test-key"


@pytest.fixture
async def gw(make_gateway: Any, fake_openai: FakeUpstream) -> TestClient:
    fake_openai.answer_json(OK)
    return await make_gateway(gateway_yaml(
        fake_openai.url, f"server: {{max_body_mb: 0.05}}\nvirtual_keys:\n{key_line('team', KEY)}"))


def _plain(route: str) -> bytes:
    body = ROUTES[route]
    return b"token=x&next=/logs" if body is None else json.dumps(body).encode()


@pytest.mark.parametrize("route", list(ROUTES))
async def test_invalid_gzip_is_400(gw: TestClient, route: str) -> None:
    broken = gzip.compress(_plain(route))[:-12] + b"garbage!garbage!"
    resp = await gw.post(route, data=broken, headers={"Content-Encoding": "gzip"})
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_body_encoding"


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_body_inflating_past_max_body_mb_is_413_before_the_key_check(
    gw: TestClient, route: str, encoding: str
) -> None:
    bomb = (gzip.compress if encoding == "gzip" else zlib.compress)(_plain(route) + b" " * 1_000_000)
    assert len(bomb) < 50_000  # the raw body is within the cap; only its inflated size is not
    resp = await gw.post(route, data=bomb, headers={"Content-Encoding": encoding})  # no key
    assert resp.status == 413
    assert "0.05 MB" in (await resp.json())["error"]["message"]


async def test_unsupported_encoding_is_415(gw: TestClient) -> None:
    resp = await gw.post("/openai/chat/completions", data=_plain("/openai/chat/completions"),
                         headers={"Content-Encoding": "br", "Authorization": f"Bearer {KEY}"})
    assert resp.status == 415 and (await resp.json())["error"]["code"] == "unsupported_encoding"


async def test_compressed_request_works_like_a_plain_one(gw: TestClient, fake_openai: FakeUpstream) -> None:
    async with openai.AsyncOpenAI(base_url=str(gw.make_url("/openai")), api_key=KEY, max_retries=0,
                                  default_headers={"Content-Encoding": "gzip"}) as client:
        # the SDK sends JSON as is; a transport hook gzips it as a proxy or a client library would
        client._client.event_hooks["request"] = [_gzip_request]
        answer = await client.chat.completions.create(model="openai/gpt-5", messages=MSGS)
    assert answer.choices[0].message.content == "ok"
    assert fake_openai.last.body["messages"] == MSGS


async def _gzip_request(request: Any) -> None:
    body = gzip.compress(request.read())
    request.stream = type(request.stream)(body)  # httpx.ByteStream
    request._content = body
    request.headers["Content-Length"] = str(len(body))


async def test_gzip_bombs_do_not_stall_other_requests(
    daemon_for: Any, tmp_path: Path, fake_openai: FakeUpstream
) -> None:
    """Each bomb inflates to 4 GB; the gateway stops at the cap, in a thread, so /healthz answers meanwhile."""
    member = gzip.compress(bytes(64 * 1024 * 1024))
    bomb = member * 64  # gzip allows members one after another: 4 GB inflated, ~4 MB sent
    path = tmp_path / "c.yaml"
    path.write_text(gateway_yaml(fake_openai.url, f"virtual_keys:\n{key_line('team', KEY)}"))
    d = await daemon_for(path, {"TEST_OPENAI_KEY": "sk-x"})
    async with aiohttp.ClientSession() as s:

        async def post_bomb() -> int:
            async with s.post(d.url + "/openai/chat/completions", data=io.BytesIO(bomb),
                              headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}) as r:
                return r.status

        bombs = [asyncio.create_task(post_bomb()) for _ in range(8)]
        async with asyncio.timeout(5):  # a hang guard: a stalled event loop answers nothing
            for _ in range(3):
                async with s.get(d.url + "/healthz") as r:
                    assert r.status == 200
        async with asyncio.timeout(60):
            assert await asyncio.gather(*bombs) == [413] * 8
    d.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(d.proc.wait(), 20) == 0
