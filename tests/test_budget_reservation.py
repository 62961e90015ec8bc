"""Budget overshoot under concurrency is bounded: each admitted request reserves its worst case.

The issue's case: a $1/day budget and 50 parallel $2 streams (which spent $100 before).
The fake upstream holds every stream it got until all 50 requests were either refused
or reached it, so every admission decision is made while the others are in flight.
The bound (README, governance): spend stays under the budget plus one request's estimate.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from finopsd.appkeys import GOVERNANCE, LOGSTORE
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream, Reply, fixture_frames
from tests.test_governance import key_line
from tests.test_routes_openai import MSGS

KEYS = ("sk-fo-reserve-one-0000000001", "sk-fo-reserve-two-0000000002")
BUDGET = 1.0
OUTPUT = 2000  # tokens; at $1,000 per million output tokens a request costs $2
CONFIG = (
    "pricing:\n  openai/gpt-5: {input: 0, output: 1000}\n"
    "teams:\n  squad: {budgets: [{usd: 1, period: day}]}\n"
    f"virtual_keys:\n{key_line('one', KEYS[0], team='squad')}{key_line('two', KEYS[1], team='squad')}"
)
CHUNK = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-5"}
FRAMES = [
    b"data: " + json.dumps({**CHUNK, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}}]}).encode(),
    b"data: " + json.dumps({**CHUNK, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}).encode(),
    b"data: " + json.dumps({**CHUNK, "choices": [], "usage": {
        "prompt_tokens": 10, "completion_tokens": OUTPUT, "total_tokens": OUTPUT + 10}}).encode(),
    b"data: [DONE]",
]
RESPONSES_FRAMES = [f.replace(b'"output_tokens":30,', f'"output_tokens":{OUTPUT},'.encode()).rstrip()
                    for f in fixture_frames("openai/responses_function_call.sse")]  # the native Responses stream
ROUTES = {  # the output limit, in each dialect's own field
    "/openai/chat/completions": {"model": "openai/gpt-5", "messages": MSGS, "max_tokens": OUTPUT},
    "/anthropic/v1/messages": {"model": "openai/gpt-5", "messages": MSGS, "max_tokens": OUTPUT},
    "/openai/v1/responses": {"model": "openai/gpt-5", "input": "hi", "max_output_tokens": OUTPUT},
}


@pytest.fixture
async def gw(make_gateway: Any, fake_openai: FakeUpstream) -> TestClient:
    return await make_gateway(gateway_yaml(fake_openai.url, CONFIG))


async def _fifty_parallel(gw: TestClient, fake_openai: FakeUpstream, route: str, body: dict[str, Any]) -> list[int]:
    gate = asyncio.Event()
    frames = RESPONSES_FRAMES if route.endswith("/responses") else FRAMES
    fake_openai.add(Reply(frames=[f + b"\n\n" for f in frames], hold_before=1, until=gate))
    statuses: list[int] = []
    refusals: list[str] = []

    async def one(i: int) -> None:
        async with gw.post(route, json={**body, "stream": True},
                           headers={"Authorization": f"Bearer {KEYS[i % 2]}"}) as resp:
            statuses.append(resp.status)
            answer = await resp.read()
            if resp.status == 402:
                refusals.append(json.loads(answer)["error"]["message"])

    tasks = [asyncio.create_task(one(i)) for i in range(50)]
    async with asyncio.timeout(30):  # a hang guard
        while statuses.count(402) + len(fake_openai.requests) < 50:
            await asyncio.sleep(0.01)
        gate.set()
        await asyncio.gather(*tasks)
    # while one ran, the others were told what held the budget
    told = [m for m in refusals if "team 'squad' has spent $0.00 and requests in flight hold $" in m]
    assert len(told) == len(refusals), refusals[:1]
    return statuses


@pytest.mark.parametrize("route", list(ROUTES))
async def test_fifty_parallel_streams_overshoot_a_budget_by_at_most_one_estimate(
    gw: TestClient, fake_openai: FakeUpstream, route: str
) -> None:
    statuses = await _fifty_parallel(gw, fake_openai, route, ROUTES[route])
    assert statuses.count(200) == 1 and statuses.count(402) == 49
    store = gw.server.app[LOGSTORE]
    await store.flush()
    spent = (await store.search(team="squad"))["totals"]["cost_usd"]
    assert spent == pytest.approx(2.0, abs=0.01)  # the one admitted, charged its real cost
    assert spent <= BUDGET + 2.0  # the documented bound: budget + one request's estimate
    assert not gw.server.app[GOVERNANCE].state.reserved  # every reservation was released


async def test_a_request_without_an_output_limit_reserves_the_default(
    gw: TestClient, fake_openai: FakeUpstream
) -> None:
    body = {"model": "openai/gpt-5", "messages": MSGS}
    statuses = await _fifty_parallel(gw, fake_openai, "/openai/chat/completions", body)
    assert statuses.count(200) == 1
    async with gw.post("/openai/chat/completions", json=body,
                       headers={"Authorization": f"Bearer {KEYS[0]}"}) as resp:
        assert resp.status == 402  # $2 spent of $1


async def test_a_refused_or_failed_request_releases_its_reservation(
    gw: TestClient, fake_openai: FakeUpstream
) -> None:
    fake_openai.answer_json({"error": {"message": "nope"}}, status=400)
    async with aiohttp.ClientSession() as s:
        for _ in range(3):  # each would hold $2 of the $1 for ever if the failure kept it
            async with s.post(gw.make_url("/openai/chat/completions"), json=ROUTES["/openai/chat/completions"],
                              headers={"Authorization": f"Bearer {KEYS[0]}"}) as resp:
                assert resp.status == 400
    assert not gw.server.app[GOVERNANCE].state.reserved
