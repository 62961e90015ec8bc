"""Live state shared through a real Redis (``state.redis_url``) by several gateways.

Each test runs one to three apps on one throwaway redis-server (tests/servers.py), called
with the openai SDK. ``storage.url`` names a PostgreSQL database, as the config requires
with Redis; each app also has its own ``storage.path``. Nothing here depends on whether the
apps share one log: a test that needs a rebuild to see every charge runs one app.

A client has its answer a moment before the post-hooks charge it, so a test that reads a
counter first waits for the apps to be ``idle``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from finopsd.appkeys import GOVERNANCE, RUNTIME
from finopsd.spend import window_start
from finopsd.providers.base import Target
from finopsd.state.redis import spend_key
from tests.conftest import GatewayFactory
from tests.fakes import FakeUpstream, Reply, fixture_frames
from tests.servers import REDIS_PASSWORD, RedisServer
from tests.test_governance import ALPHA, BRAVO, COST, governed, key_line, refused, rows, sdk, spent
from tests.test_governance import ask as ask_once
from tests.test_metrics import assert_promtool_passes
from tests.test_reliability import OK, two_keys
from tests.test_routes_openai import MSGS

Apps = Callable[..., Awaitable[list[TestClient]]]


@pytest.fixture
def apps(postgres_url: str, redis_server: RedisServer, make_gateway: GatewayFactory, fake_openai: FakeUpstream,
         tmp_path: Path) -> Apps:
    """``apps(n, keys, teams)``: n gateways on one Redis, each with its own log file. The servers
    come first, so they outlive the gateways (a database dropped under a gateway holds its close
    for the writer's 10 s)."""

    async def start(n: int, keys: str, teams: str = "{}", providers: str | None = None) -> list[TestClient]:
        out = []
        for i in range(n):
            shared = (f"storage: {{path: {tmp_path / f'log{i}.db'}, url: '{postgres_url}'}}\n"
                      f"state: {{redis_url: '{redis_server.url}'}}\n")
            if providers is None:
                text = governed(fake_openai.url, keys, teams, extra=shared)
            else:
                text = f"{providers}auth: {{required: true}}\nteams: {teams}\nvirtual_keys:\n{keys}\n{shared}"
            out.append(await make_gateway(text))
        return out

    return start


@pytest.fixture
async def direct(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A client of the test's own, to look at what the gateways left in Redis."""
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


async def until(check: Callable[[], Any]) -> None:
    """Wait for ``check()`` (or what it awaits) to be true; the watch looks at Redis every second."""
    async with asyncio.timeout(15):  # a hang guard
        while True:
            result = check()
            if await result if inspect.isawaitable(result) else result:
                return
            await asyncio.sleep(0.05)


async def idle(*gws: TestClient) -> None:
    """Until every request has run its hooks: the client has its answer before the charge lands."""
    await until(lambda: not any(gw.server.app[RUNTIME].inflight for gw in gws))


async def ask(gw: TestClient, key: str) -> list[Any]:
    """One request, then its post-hooks: its hold (its worst case, $8 here) is released only there."""
    chunks = await ask_once(gw, key)
    await idle(gw)
    return chunks


async def health(gw: TestClient) -> dict[str, Any]:
    return (await (await gw.get("/healthz")).json())["state"]


async def test_a_rate_limit_holds_across_two_instances(apps: Apps, fake_openai: FakeUpstream) -> None:
    fake_openai.play("openai/text_stream.sse")
    one, two = await apps(2, key_line("a", ALPHA, rate_limit="{requests_per_minute: 3}"))
    assert (await health(one))["ok"] is True
    await ask(one, ALPHA)
    await ask(two, ALPHA)
    await ask(one, ALPHA)
    err = await refused(two, ALPHA)
    assert err.status_code == 429 and "key 'a': 3 requests per minute" in err.body["message"]
    assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(err.response.headers["Retry-After"]) <= 60
    assert (await refused(one, ALPHA)).status_code == 429


async def test_a_team_budget_is_one_budget_across_three_instances(apps: Apps, fake_openai: FakeUpstream) -> None:
    """$0.05 a day has room for 3 requests of $0.018: the 4th is refused on whichever instance."""
    fake_openai.play("openai/text_stream.sse")
    gws = await apps(3, key_line("alpha", ALPHA, team="t") + key_line("bravo", BRAVO, team="t"),
                     "{t: {budgets: [{usd: 0.05, period: day}]}}")
    for gw, key in zip(gws, (ALPHA, BRAVO, ALPHA)):
        await ask(gw, key)
    await idle(*gws)  # charged (else the last one's hold is what refuses)
    for gw in gws:
        err = await refused(gw, BRAVO)
        assert err.status_code == 402 and "team 't' has spent $0.054 of its $0.05 day budget" in err.body["message"]
    for gw in gws:  # every instance's view shows the whole team's spend
        await until(lambda: spent(gw, "team", "t", "day") == pytest.approx(3 * COST))


async def test_parallel_requests_over_three_instances_admit_no_more_than_the_budget_allows(
    apps: Apps, fake_openai: FakeUpstream
) -> None:
    """30 streams at once, 10 per instance, each reserving $4 (2,000 tokens at $2,000 per MTok) of a
    $1 budget: exactly one is admitted, because the check and the hold are one script in Redis; the
    others learn what holds the budget."""
    gate = asyncio.Event()
    fake_openai.add(Reply(frames=fixture_frames("openai/text_stream.sse"), hold_before=1, until=gate))
    gws = await apps(3, key_line("alpha", ALPHA, team="squad"), "{squad: {budgets: [{usd: 1, period: day}]}}")
    statuses: list[int] = []
    messages: list[str] = []

    async def one(i: int) -> None:
        async with gws[i % 3].post("/openai/chat/completions", headers={"Authorization": f"Bearer {ALPHA}"},
                                   json={"model": "openai/gpt-5", "messages": MSGS, "stream": True,
                                         "max_tokens": 2000}) as resp:
            statuses.append(resp.status)
            body = await resp.read()
            if resp.status == 402:
                messages.append(json.loads(body)["error"]["message"])

    tasks = [asyncio.create_task(one(i)) for i in range(30)]
    async with asyncio.timeout(30):
        while statuses.count(402) + len(fake_openai.requests) < 30:
            await asyncio.sleep(0.01)
        gate.set()
        await asyncio.gather(*tasks)
    assert statuses.count(200) == 1 and statuses.count(402) == 29
    assert all("team 'squad' has spent $0.00 and requests in flight hold $4" in m for m in messages), messages[:1]
    await idle(*gws)
    for gw in gws:  # released: each instance admits again ($0.018 spent of $1)
        assert await ask(gw, ALPHA)
    await idle(*gws)
    await until(lambda: spent(gws[0], "team", "squad", "day") == pytest.approx(4 * COST))  # each view, in time


async def test_a_parked_upstream_key_is_avoided_by_the_other_instance(
    apps: Apps, fake_openai: FakeUpstream
) -> None:
    fake_openai.answer_json(OK)
    fake_openai.key_replies["Bearer sk-first"] = Reply(status=401, json={"error": {"message": "revoked"}})
    one, two = await apps(2, key_line("a", ALPHA), providers=two_keys(fake_openai.url))
    async with asyncio.timeout(15):
        while not any(r.headers["Authorization"] == "Bearer sk-first" for r in fake_openai.requests):
            resp = await one.post("/openai/chat/completions", json={"model": "openai/gpt-5", "messages": MSGS},
                                  headers={"Authorization": f"Bearer {ALPHA}"})
            assert resp.status == 200
    await until(lambda: _parked(two))
    seen = len(fake_openai.requests)
    for _ in range(6):
        resp = await two.post("/openai/chat/completions", json={"model": "openai/gpt-5", "messages": MSGS},
                              headers={"Authorization": f"Bearer {ALPHA}"})
        assert resp.status == 200
    assert {r.headers["Authorization"] for r in fake_openai.requests[seen:]} == {"Bearer sk-second"}


async def _parked(gw: TestClient) -> bool:
    return "first" in (await (await gw.get("/healthz")).json())["parked_keys"].get("openai", {})


async def test_redis_lost_mid_load_falls_back_then_recovers_its_counters(
    apps: Apps, fake_openai: FakeUpstream, redis_server: RedisServer, direct: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="finopsd.state")
    fake_openai.play("openai/text_stream.sse")
    (gw,) = await apps(1, key_line("a", ALPHA, team="t"), "{t: {budgets: [{usd: 10, period: day}]}}")
    counter = spend_key(("team", "t", "day"), window_start("day", time.time()))
    await ask(gw, ALPHA)
    await ask(gw, ALPHA)
    await idle(gw)
    assert float(await direct.get(counter)) == pytest.approx(2 * COST)
    redis_server.stop()
    await ask(gw, ALPHA)  # admitted by this instance's own counters
    state = await health(gw)
    assert state["backend"] == "redis" and state["ok"] is False and state["fallbacks"] == 1
    metrics = await (await gw.get("/metrics")).text()
    assert "finopsd_state_redis_up 0.0" in metrics and "finopsd_state_redis_fallbacks_total 1.0" in metrics
    assert_promtool_passes(metrics)
    await ask(gw, ALPHA)
    await idle(gw)
    assert spent(gw, "team", "t", "day") == pytest.approx(4 * COST)
    redis_server.start()  # empty: a Redis that crashed loses every counter
    await direct.connection_pool.disconnect()  # the test's own client, connected to the one before
    await until(lambda: _ok(gw))
    assert float(await direct.get(counter)) == pytest.approx(4 * COST)  # rebuilt from the log
    await ask(gw, ALPHA)
    await idle(gw)
    assert float(await direct.get(counter)) == pytest.approx(5 * COST)
    assert "finopsd_state_redis_up 1.0" in await (await gw.get("/metrics")).text()
    lines = [r.getMessage() for r in caplog.records if r.name == "finopsd.state.redis"]
    assert sum("falling back" in m for m in lines) == 1 and sum("answers again" in m for m in lines) == 1
    shown = json.dumps(await health(gw)) + metrics + "\n".join(lines)
    assert REDIS_PASSWORD not in shown and ":***@" in json.dumps(await health(gw))


async def _ok(gw: TestClient) -> bool:
    return bool((await health(gw))["ok"])


async def test_a_paused_redis_gets_the_charges_made_meanwhile(
    apps: Apps, fake_openai: FakeUpstream, redis_server: RedisServer, direct: aioredis.Redis
) -> None:
    """Redis unresponsive for a while, same server after: what this instance charged is added to it."""
    fake_openai.play("openai/text_stream.sse")
    one, two = await apps(2, key_line("a", ALPHA, budgets="[{usd: 10, period: day}]"))
    counter = spend_key(("key", "a", "day"), window_start("day", time.time()))
    await ask(one, ALPHA)
    await ask(two, ALPHA)
    await idle(one, two)
    await direct.execute_command("CLIENT", "PAUSE", "1500", "ALL")
    await ask(one, ALPHA)  # times out on Redis (a quarter second), then charged here
    await idle(one)
    assert (await health(one))["ok"] is False
    await until(lambda: _ok(one))
    assert float(await direct.get(counter)) == pytest.approx(3 * COST)
    await until(lambda: spent(two, "key", "a", "day") == pytest.approx(3 * COST))


async def test_while_redis_is_away_the_last_known_spend_still_limits(
    apps: Apps, fake_openai: FakeUpstream, redis_server: RedisServer
) -> None:
    """The fallback starts from what the instance last saw in Redis, not from zero."""
    fake_openai.play("openai/text_stream.sse")
    one, two = await apps(2, key_line("a", ALPHA, budgets="[{usd: 0.05, period: day}]"))
    await ask(one, ALPHA)
    await ask(two, ALPHA)
    await idle(one, two)
    await until(lambda: spent(one, "key", "a", "day") == pytest.approx(2 * COST))  # one's view has two's charge
    redis_server.stop()
    await ask(one, ALPHA)  # $0.036 of $0.05: admitted here
    await idle(one)
    err = await refused(one, ALPHA)
    assert err.status_code == 402 and "has spent $0.054 of its $0.05 day budget" in err.body["message"]
    redis_server.start()  # (what it then holds comes from the log: see the test above)
    await until(lambda: _ok(one))
    await until(lambda: _ok(two))


async def test_a_starting_instance_keeps_the_shared_spend_and_every_key_expires(
    apps: Apps, fake_openai: FakeUpstream, redis_server: RedisServer, direct: aioredis.Redis
) -> None:
    fake_openai.play("openai/text_stream.sse")
    keys = key_line("a", ALPHA, team="t", rate_limit="{requests_per_minute: 100, tokens_per_minute: 10000}",
                    budgets="[{usd: 5, period: day}, {usd: 50, period: month}]")
    teams = "{t: {budgets: [{usd: 9, period: total}], rate_limit: {requests_per_minute: 100}}}"
    (one,) = await apps(1, keys, teams)
    for _ in range(3):
        await ask(one, ALPHA)
    await idle(one)
    (two,) = await apps(1, keys, teams)  # its own log is empty: Redis's spend wins (SET NX)
    assert spent(two, "key", "a", "day") == pytest.approx(3 * COST)
    assert spent(two, "team", "t", "total") == pytest.approx(3 * COST)
    await two.server.app[RUNTIME].keys.park(Target(two.server.app[RUNTIME].config.providers["openai"], "gpt-5",
                                                   "sk-x", "main"), 30, "test")
    names = [k async for k in direct.scan_iter("*")]
    assert len(names) >= 10 and all(k.startswith("finops:") for k in names), names
    assert {k: await direct.ttl(k) for k in names if await direct.ttl(k) <= 0} == {}  # all bounded


async def test_a_client_that_hangs_up_mid_stream_is_charged_and_releases_its_hold(
    apps: Apps, fake_openai: FakeUpstream, redis_server: RedisServer, direct: aioredis.Redis
) -> None:
    """aiohttp cancels the handler of a client that left; its post-hooks still reach Redis whole."""
    never = asyncio.Event()
    fake_openai.play("openai/text_stream.sse", hold_before=3, until=never)
    (gw,) = await apps(1, key_line("a", ALPHA, budgets="[{usd: 5, period: day}]"))
    async with sdk(gw, ALPHA) as client:
        stream = await client.chat.completions.create(model="openai/gpt-5", messages=MSGS, stream=True)
        await stream.__anext__()
        await stream.__anext__()
        await stream.close()
    async with asyncio.timeout(5):
        await fake_openai.closed_early.wait()
    await idle(gw)
    (row,) = await rows(gw)
    assert row["status"] == "client_closed" and row["cost_usd"] > 0
    day = spend_key(("key", "a", "day"), window_start("day", time.time()))
    assert float(await direct.get(day)) == pytest.approx(row["cost_usd"])
    assert await direct.zcard("finops:held:key:a") == 0  # released


async def test_an_instance_starts_while_redis_is_down_and_joins_when_it_answers(
    apps: Apps, fake_openai: FakeUpstream, redis_server: RedisServer, direct: aioredis.Redis
) -> None:
    fake_openai.play("openai/text_stream.sse")
    redis_server.stop()
    (gw,) = await apps(1, key_line("a", ALPHA, budgets="[{usd: 5, period: day}]"))  # startup does not wait
    state = await health(gw)
    assert state["ok"] is False and "Connect" in state["error"] and state["fallbacks"] == 0  # never had it
    await ask(gw, ALPHA)  # on this instance's own counters
    await idle(gw)
    redis_server.start()
    await until(lambda: _ok(gw))
    day = spend_key(("key", "a", "day"), window_start("day", time.time()))
    await direct.connection_pool.disconnect()
    assert float(await direct.get(day)) == pytest.approx(COST)  # the spend made before Redis came is there now


async def test_holds_of_an_instance_killed_with_minus_9_lapse_after_their_ttl(
    apps: Apps, fake_openai: FakeUpstream, daemon_for: Any, tmp_path: Path
) -> None:
    """A real ``finopsd serve`` holds budget for a stream, dies by SIGKILL; its hold lapses in Redis."""
    gate = asyncio.Event()
    fake_openai.add(Reply(frames=fixture_frames("openai/text_stream.sse"), hold_before=1, until=gate))
    (gw,) = await apps(1, key_line("a", ALPHA, budgets="[{usd: 1, period: day}]"))
    config = tmp_path / "daemon.yaml"  # the same config, its own log file
    config.write_text((tmp_path / "config.yaml").read_text().replace("log0.db", "daemon.db"))
    daemon = await daemon_for(config)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{daemon.url}/openai/chat/completions", headers={"Authorization": f"Bearer {ALPHA}"},
                                json={"model": "openai/gpt-5", "messages": MSGS, "stream": True,
                                      "max_tokens": 2000}) as resp:
            assert resp.status == 200
            await until(lambda: len(fake_openai.requests) == 1)  # admitted: it holds $4 of the $1
            err = await refused(gw, ALPHA)
            assert "has spent $0.00 and requests in flight hold $4" in err.body["message"]
            daemon.proc.kill()
            await daemon.proc.wait()
    gate.set()
    assert (await refused(gw, ALPHA)).status_code == 402  # nobody released it
    gov = gw.server.app[GOVERNANCE]
    later = time.time() + gov.hold_ttl + 1
    gov.clock = lambda: later
    assert await ask(gw, ALPHA)  # lapsed
