"""Usage numbers from upstreams are bounded before the log, pricing and budgets see them (issue 21,
items 8 and 19): an out-of-range count is clamped and logged with its row and its batch-mates;
no stored value breaks /logs, /api/logs or ``finopsd usage``; every usage chunk on the OpenAI
chat route carries Roo Code's top-level cache fields when the gateway knows them."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient
from click.testing import CliRunner

from finopsd.appkeys import LOGSTORE
from finopsd.cli import main
from finopsd.usage import MAX_TOKENS
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream, Reply, fixture_frames
from tests.logrows import logged_rows

MSGS = [{"role": "user", "content": "hi"}]
BIG = "99999999999999999999999"


def strict_json(text: str) -> Any:
    """What a client's parser accepts: no NaN or Infinity."""
    def refuse(name: str) -> None:
        raise ValueError(name)
    return json.loads(text, parse_constant=refuse)


def completion_bytes(usage: str) -> bytes:
    return (b'{"id":"c1","object":"chat.completion","model":"gpt-5","choices":[{"index":0,'
            b'"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":' + usage.encode() + b"}")


def usage_frames(usage: str) -> list[bytes]:
    return [
        b'data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-5","choices":[{"index":0,'
        b'"delta":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}\n\n',
        b'data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-5","choices":[],"usage":'
        + usage.encode() + b"}\n\n",
        b"data: [DONE]\n\n",
    ]


async def check_pages(gw: TestClient) -> None:
    """Every view of the log answers, in valid JSON where it is JSON."""
    page = strict_json(await (await gw.get("/api/logs")).text())
    assert page["totals"]["requests"] >= 1
    for item in page["items"]:
        strict_json(await (await gw.get(f"/api/logs/{item['id']}")).text())
        assert (await gw.get(f"/logs/{item['id']}")).status == 200
    assert (await gw.get("/logs")).status == 200
    assert (await gw.get("/api/keys")).status == 200


async def usage_cli(config_path: Path, *args: str) -> Any:
    """``finopsd usage`` in all three formats (in a thread: the command runs its own event loop)."""
    def run(*fmt: str) -> str:
        result = CliRunner().invoke(main, ["usage", "--config", str(config_path), "--since", "0", *args, *fmt])
        assert result.exit_code == 0, result.output
        return result.output

    await asyncio.to_thread(run)
    await asyncio.to_thread(run, "--csv")
    return strict_json(await asyncio.to_thread(run, "--json"))


async def test_an_out_of_range_count_is_clamped_and_logged_with_its_batch_mates(
    gateway: TestClient, fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    n = 31
    for i in range(n):
        usage = f'{{"prompt_tokens":{BIG if i == 7 else 10},"completion_tokens":2,"total_tokens":12}}'
        fake_openai.add(Reply(json=None, frames=[completion_bytes(usage)], content_type="application/json"))
    async with openai.AsyncOpenAI(base_url=str(gateway.make_url("/openai")), api_key="vk", max_retries=0) as client:
        answers = await asyncio.gather(*[client.chat.completions.create(model="openai/gpt-5", messages=MSGS)
                                         for _ in range(n)])
    assert all(a.choices[0].message.content == "ok" for a in answers)
    rows = await logged_rows(gateway)
    assert len(rows) == n and all(r["status"] == "ok" for r in rows)
    prompts = sorted(r["prompt_tokens"] for r in rows)
    assert prompts == [10] * (n - 1) + [MAX_TOKENS]
    await check_pages(gateway)
    totals = strict_json(await (await gateway.get("/api/logs")).text())["totals"]
    assert totals["requests"] == n and totals["prompt_tokens"] == 10 * (n - 1) + MAX_TOKENS
    report = await usage_cli(tmp_path / "config.yaml")
    assert sum(r["prompt_tokens"] for r in report["rows"]) == 10 * (n - 1) + MAX_TOKENS


@pytest.mark.parametrize("usage", [
    f'{{"prompt_tokens":{BIG},"completion_tokens":-{BIG},"total_tokens":1.5e308}}',
    '{"prompt_tokens":"many","completion_tokens":[3],"total_tokens":true,"prompt_tokens_details":{"cached_tokens":-1}}',
    '{"prompt_tokens":1e308,"completion_tokens":{"n":1},"prompt_tokens_details":"x",'
    '"completion_tokens_details":{"reasoning_tokens":1e300}}',
])
async def test_odd_usage_in_a_stream_is_bounded_on_every_dialect(
    gateway: TestClient, fake_openai: FakeUpstream, tmp_path: Path, usage: str
) -> None:
    fake_openai.add(Reply(frames=usage_frames(usage)))
    chat = await gateway.post("/openai/chat/completions", json={
        "model": "openai/gpt-5", "messages": MSGS, "stream": True, "stream_options": {"include_usage": True}})
    assert chat.status == 200 and (await chat.text()).endswith("data: [DONE]\n\n")
    anthropic = await gateway.post("/anthropic/v1/messages", json={
        "model": "openai/gpt-5", "max_tokens": 10, "messages": MSGS, "stream": True})
    assert anthropic.status == 200 and "message_stop" in await anthropic.text()
    responses = await gateway.post("/openai/v1/responses", json={"model": "groq/llama-3.3-70b-versatile",
                                                                 "input": "hi", "stream": True})
    assert responses.status == 200 and "response.completed" in await responses.text()
    rows = await logged_rows(gateway)
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)
    for row in rows:
        for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens"):
            assert row[name] is None or 0 <= row[name] <= MAX_TOKENS
        assert row["cost_usd"] is None or 0 <= row["cost_usd"] < 1e12
    await check_pages(gateway)
    await usage_cli(tmp_path / "config.yaml")


async def test_non_finite_values_stored_by_an_older_version_never_break_the_views(
    gateway: TestClient, tmp_path: Path
) -> None:
    store = gateway.server.app[LOGSTORE]
    for i, value in enumerate((float("inf"), float("-inf"), "lots", 1e300)):
        store.submit({"id": f"old-{i}", "ts": time.time(), "route": "chat", "provider": "openai", "model": "gpt-5",
                      "status": "ok", "status_code": 200, "prompt_tokens": value, "completion_tokens": value,
                      "cached_tokens": value, "reasoning_tokens": value, "cost_usd": value,
                      "duration_ms": value, "ttft_ms": value, "key_name": "k"})
    rows = await logged_rows(gateway)
    assert len(rows) == 4
    await check_pages(gateway)
    for by in ("key", "model"):
        await usage_cli(tmp_path / "config.yaml", "--by", by)


# --- Roo Code's cache fields (item 19) -------------------------------------------------------------

CACHED_USAGE = '{"prompt_tokens":2000,"completion_tokens":5,"total_tokens":2005,' \
               '"prompt_tokens_details":{"cached_tokens":1536,"audio_tokens":0}}'


async def test_passthrough_usage_chunk_gets_top_level_cache_fields(
    openai_client: openai.AsyncOpenAI, fake_openai: FakeUpstream
) -> None:
    fake_openai.add(Reply(frames=usage_frames(CACHED_USAGE)))
    stream = await openai_client.chat.completions.create(
        model="openai/gpt-5", messages=MSGS, stream=True, stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 1536
    extra = usage.model_extra or {}
    assert extra.get("cache_read_input_tokens") == 1536 and "cache_creation_input_tokens" not in extra


async def test_non_stream_usage_gets_top_level_cache_fields(
    openai_client: openai.AsyncOpenAI, fake_openai: FakeUpstream
) -> None:
    fake_openai.add(Reply(frames=[completion_bytes(CACHED_USAGE)], content_type="application/json"))
    answer = await openai_client.chat.completions.create(model="openai/gpt-5", messages=MSGS)
    assert answer.usage is not None and (answer.usage.model_extra or {}).get("cache_read_input_tokens") == 1536
    assert answer.model == "openai/gpt-5"


@pytest.mark.parametrize("usage", [CACHED_USAGE, CACHED_USAGE.replace("1536", "0")])
async def test_chunks_that_need_no_change_stay_byte_identical(
    gateway: TestClient, fake_openai: FakeUpstream, usage: str
) -> None:
    frames = fixture_frames("openai/text_stream.sse")[:-2] + usage_frames(usage)[1:]
    fake_openai.add(Reply(frames=frames))
    resp = await gateway.post("/openai/chat/completions", json={
        "model": "groq/llama-3.3-70b-versatile", "messages": MSGS, "stream": True,
        "stream_options": {"include_usage": True}})
    sent = (await resp.read()).split(b"\n\n")
    hits = "1536" in usage
    for frame in frames:  # the usage chunk changes only to add the cache hits
        expect_same = b'"usage"' not in frame or not hits
        renamed = re.sub(rb'"model":"[^"]*"', b'"model":"groq/llama-3.3-70b-versatile"', frame).rstrip(b"\n")
        assert (renamed in sent) == expect_same, frame
    usage_out = json.loads(sent[-3][len(b"data: "):])["usage"]
    assert usage_out.get("cache_read_input_tokens") == (1536 if hits else None)


async def test_translated_stream_usage_also_carries_them(
    make_gateway: Any, fake_anthropic: FakeUpstream, fake_openai: FakeUpstream
) -> None:
    gw = await make_gateway(gateway_yaml(fake_openai.url, f"  gemini: {{base_url: '{fake_anthropic.url}/v1beta',"
                                                          " keys: [{value: g-key}]}\n"))
    fake_anthropic.add(Reply(frames=[
        b'data: {"candidates":[{"content":{"parts":[{"text":"ok"}],"role":"model"},"finishReason":"STOP"}],'
        b'"usageMetadata":{"promptTokenCount":900,"candidatesTokenCount":3,"cachedContentTokenCount":600}}\r\n\r\n']))
    async with openai.AsyncOpenAI(base_url=str(gw.make_url("/openai")), api_key="vk", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="gemini/gemini-2.5-flash", messages=MSGS, stream=True, stream_options={"include_usage": True})
        chunks = [c async for c in stream]
    usage = chunks[-1].usage
    assert usage is not None and (usage.model_extra or {}).get("cache_read_input_tokens") == 600


async def test_every_logged_count_is_a_bounded_int(gateway: TestClient, fake_openai: FakeUpstream) -> None:
    fake_openai.add(Reply(frames=usage_frames(
        '{"prompt_tokens":{"n":1},"completion_tokens":"7","total_tokens":[1],'
        '"prompt_tokens_details":{"cached_tokens":{"x":1}},"completion_tokens_details":{"reasoning_tokens":2.7}}')))
    resp = await gateway.post("/openai/chat/completions", json={"model": "openai/gpt-5", "messages": MSGS,
                                                                "stream": True})
    assert resp.status == 200
    row = (await logged_rows(gateway))[0]
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"], row["reasoning_tokens"]) == (
        None, None, None, 2)


async def test_budgets_rebuilt_from_odd_stored_costs_stay_finite(
    make_gateway: Any, fake_openai: FakeUpstream
) -> None:
    digest = "a" * 64
    yaml = gateway_yaml(fake_openai.url, f"auth: {{required: false}}\nvirtual_keys:\n  - name: k\n"
                                         f"    key_sha256: '{digest}'\n    budgets: [{{usd: 10, period: total}}]\n")
    first = await make_gateway(yaml)
    store = first.server.app[LOGSTORE]
    # an older version's inf, today (read per minute) and two days ago (read from the daily roll-up),
    # beside real charges
    for i, (cost, age) in enumerate(((float("inf"), 0), (0.5, 0), (float("inf"), 2 * 86400), (0.25, 3 * 86400))):
        store.submit({"id": f"old-{i}", "ts": time.time() - age, "route": "chat", "provider": "openai",
                      "model": "gpt-5", "status": "ok", "status_code": 200, "cost_usd": cost, "key_name": "k"})
    await store.flush()
    second = await make_gateway(yaml)  # rebuilds spend from the same log at startup
    report = strict_json(await (await second.get("/api/keys")).text())
    budget = next(k for k in report["keys"] if k["name"] == "k")["budgets"][0]
    assert budget["spent_usd"] == 0.75
    assert (await second.get("/keys")).status == 200
