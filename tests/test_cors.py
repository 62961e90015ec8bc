"""CORS: preflights answered before routing and auth; actual responses carry the allow headers."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.fakes import FakeUpstream
from tests.test_routes_openai import MSGS

PREFLIGHT = {
    "Origin": "http://localhost:5173",
    "Access-Control-Request-Method": "POST",
}


async def test_preflight_with_default_headers_is_allowed(gateway: TestClient) -> None:
    headers = {**PREFLIGHT, "Access-Control-Request-Headers": "content-type, authorization, x-stainless-timeout"}
    resp = await gateway.options("/openai/chat/completions", headers=headers)
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    allowed = resp.headers["Access-Control-Allow-Headers"].lower()
    assert {"content-type", "authorization", "x-stainless-timeout"} <= {h.strip() for h in allowed.split(",")}


async def test_preflight_with_disallowed_header_is_refused(gateway: TestClient) -> None:
    headers = {**PREFLIGHT, "Access-Control-Request-Headers": "content-type, x-secret-thing"}
    resp = await gateway.options("/openai/chat/completions", headers=headers)
    assert resp.status == 403  # a non-2xx preflight fails in the browser
    assert "Access-Control-Allow-Headers" not in resp.headers
    assert "x-secret-thing" in (await resp.json())["error"]["message"]


async def test_origin_list_and_wildcard_headers(make_gateway: Any, fake_openai: FakeUpstream) -> None:
    gw = await make_gateway(
        "server:\n  cors:\n    allowed_origins: [https://app.example.com]\n    allowed_headers: ['*']\n"
        f"providers:\n  openai: {{base_url: {fake_openai.url}}}\n"
    )
    ok = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
          "Access-Control-Request-Headers": "x-anything"}
    resp = await gw.options("/openai/chat/completions", headers=ok)
    assert resp.status == 204 and resp.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert resp.headers["Access-Control-Allow-Headers"] == "x-anything"
    resp = await gw.options("/openai/chat/completions", headers={**ok, "Origin": "https://evil.example"})
    assert resp.status == 403
    # actual requests from an unlisted origin get no allow header
    resp = await gw.get("/openai/models", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_actual_requests_and_streams_carry_cors_headers(
    gateway: TestClient, fake_openai: FakeUpstream
) -> None:
    fake_openai.play("openai/text_stream.sse")
    resp = await gateway.post(
        "/openai/chat/completions",
        json={"model": "openai/gpt-5", "messages": MSGS, "stream": True},
        headers={"Origin": "http://localhost:5173"},
    )
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "x-request-id" in resp.headers["Access-Control-Expose-Headers"]
    await resp.read()
    resp = await gateway.post("/openai/chat/completions", data=b"{", headers={"Origin": "http://x"})
    assert resp.status == 400 and resp.headers["Access-Control-Allow-Origin"] == "*"
