"""Weighted keys, key parking, retries with backoff, fallbacks — all before the first byte."""

from __future__ import annotations

import json
from typing import Any

import openai

from tests.fakes import FakeUpstream, Reply, fixture_frames
from tests.test_routes_openai import MSGS
from tests.logrows import last_row

CHAT = "/openai/chat/completions"
OK = {"id": "x", "object": "chat.completion", "model": "m",
      "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}


def two_keys(url: str, extra: str = "") -> str:
    return (
        "providers:\n  openai:\n"
        f"    base_url: {url}\n"
        "    keys: [{name: first, value: sk-first, weight: 1}, {name: second, value: sk-second, weight: 1}]\n"
        "    max_retries: 2\n    retry_backoff_ms: 1\n" + extra
    )


async def test_key_failing_auth_is_parked_and_the_other_used(make_gateway: Any, fake_openai: FakeUpstream) -> None:
    gw = await make_gateway(two_keys(fake_openai.url))
    fake_openai.answer_json(OK)
    fake_openai.key_replies["Bearer sk-first"] = Reply(status=401, json={"error": {"message": "revoked"}})
    for _ in range(6):
        resp = await gw.post(CHAT, json={"model": "openai/gpt-5", "messages": MSGS})
        assert resp.status == 200
    used = [r.headers["Authorization"] for r in fake_openai.requests]
    assert used.count("Bearer sk-first") <= 1  # parked after its first 401
    health = await (await gw.get("/healthz")).json()
    if "Bearer sk-first" in used:
        assert "first" in health["parked_keys"]["openai"]
        row = await last_row(gw)
        assert row["upstream_key_name"] == "second"


async def test_429_moves_to_another_key(make_gateway: Any, fake_openai: FakeUpstream) -> None:
    gw = await make_gateway(two_keys(fake_openai.url))
    fake_openai.answer_json(OK)
    fake_openai.key_replies["Bearer sk-first"] = Reply(
        status=429, json={"error": {"message": "slow down"}}, headers={"Retry-After": "30"})
    fake_openai.key_replies["Bearer sk-second"] = Reply(status=200, json=OK)
    resp = await gw.post(CHAT, json={"model": "openai/gpt-5", "messages": MSGS})
    assert resp.status == 200
    assert (await last_row(gw))["upstream_key_name"] == "second"


async def test_429_on_the_only_key_waits_retry_after_then_succeeds(
    make_gateway: Any, fake_openai: FakeUpstream
) -> None:
    gw = await make_gateway(
        f"providers:\n  openai: {{base_url: {fake_openai.url}, keys: [{{value: k}}], max_retries: 1}}\n")
    fake_openai.answer_json({"error": {"message": "later"}}, status=429, headers={"retry-after-ms": "50"})
    fake_openai.answer_json(OK)
    resp = await gw.post(CHAT, json={"model": "openai/gpt-5", "messages": MSGS})
    assert resp.status == 200 and len(fake_openai.requests) == 2


async def test_500_then_success_is_retried(make_gateway: Any, fake_openai: FakeUpstream) -> None:
    gw = await make_gateway(two_keys(fake_openai.url))
    fake_openai.add(Reply(status=500, frames=[b"boom"], content_type="text/plain"))
    fake_openai.add(Reply(status=503, json={"error": {"message": "overloaded"}}))
    fake_openai.answer_json(OK)
    resp = await gw.post(CHAT, json={"model": "openai/gpt-5", "messages": MSGS})
    assert resp.status == 200 and len(fake_openai.requests) == 3
    row = await last_row(gw)
    assert [a["status"] for a in row["attempts"]] == [500, 503, 200]


async def test_retries_exhausted_keeps_the_last_status(make_gateway: Any, fake_openai: FakeUpstream) -> None:
    gw = await make_gateway(two_keys(fake_openai.url))
    fake_openai.answer_json({"error": {"message": "down"}}, status=502)
    resp = await gw.post(CHAT, json={"model": "openai/gpt-5", "messages": MSGS})
    assert resp.status == 502 and len(fake_openai.requests) == 3  # 1 + max_retries


async def test_client_errors_are_not_retried(make_gateway: Any, fake_openai: FakeUpstream) -> None:
    gw = await make_gateway(two_keys(
        fake_openai.url, f"  groq: {{base_url: {fake_openai.url}}}\nfallbacks:\n  openai/gpt-5: [groq/llama]\n"))
    fake_openai.answer_json({"error": {"message": "context too long", "param": "messages"}}, status=400)
    resp = await gw.post(CHAT, json={"model": "openai/gpt-5", "messages": MSGS})
    assert resp.status == 400 and len(fake_openai.requests) == 1
    assert (await resp.json())["error"]["param"] == "messages"


async def test_request_fallbacks_are_tried_in_order_and_stripped(
    make_gateway: Any, fake_openai: FakeUpstream, aiohttp_server: Any
) -> None:
    backup = FakeUpstream()
    backup.url = str((await aiohttp_server(backup.app)).make_url("/v1"))
    gw = await make_gateway(
        f"providers:\n  openai: {{base_url: {fake_openai.url}, models: [gpt-5]}}\n"
        f"  groq: {{base_url: {backup.url}, models: [llama]}}\n"
    )
    fake_openai.answer_json({"error": {"message": "outage"}}, status=503)
    backup.play("openai/text_stream.sse")
    async with openai.AsyncOpenAI(base_url=str(gw.make_url("/openai")), api_key="k", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="openai/gpt-5", messages=MSGS, stream=True, extra_body={"fallbacks": ["groq/llama"]})
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Hello, world"
    assert "fallbacks" not in backup.last.body and backup.last.body["model"] == "llama"
    row = await last_row(gw)
    assert row["provider"] == "groq" and [a["provider"] for a in row["attempts"]] == ["openai", "groq"]


async def test_config_fallbacks_apply_to_an_alias(
    make_gateway: Any, fake_openai: FakeUpstream, aiohttp_server: Any
) -> None:
    backup = FakeUpstream()
    backup.url = str((await aiohttp_server(backup.app)).make_url("/v1"))
    fake_openai.add(Reply(hang=True))
    backup.answer_json(OK)
    # a short first-byte timeout, so the hanging primary fails fast
    gw2 = await make_gateway(
        f"providers:\n  openai: {{base_url: {fake_openai.url}, timeouts: {{connect: 1, first_byte: 0.3}}}}\n"
        f"  groq: {{base_url: {backup.url}}}\n"
        "aliases:\n  smart: openai/gpt-5\nfallbacks:\n  smart: [groq/llama]\n"
    )
    resp = await gw2.post(CHAT, json={"model": "smart", "messages": MSGS})
    assert resp.status == 200 and (await resp.json())["model"] == "smart"
    assert [a["status"] for a in (await last_row(gw2))["attempts"]] == [504, 200]


async def test_no_retry_once_streaming_began(make_gateway: Any, fake_openai: FakeUpstream) -> None:
    gw = await make_gateway(two_keys(fake_openai.url))
    fake_openai.add(Reply(frames=fixture_frames("openai/text_stream.sse"), cut_after=2))
    resp = await gw.post(CHAT, json={"model": "openai/gpt-5", "messages": MSGS, "stream": True})
    frames = [f for f in (await resp.read()).split(b"\n\n") if f]
    assert json.loads(frames[-1][6:])["error"]["code"] == "upstream_disconnected"
    assert len(fake_openai.requests) == 1
