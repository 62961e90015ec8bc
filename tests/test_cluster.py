"""Three ``finopsd serve`` processes on one PostgreSQL and one Redis behave as one gateway.

The test is the load balancer: it sends each request to the instance it picks (round robin
unless it says otherwise), with the real openai client, to a fake upstream in this process.
Every request costs a known amount: gpt-5's output is priced at $500 per million tokens and
each answer reports 2000 completion tokens, so a request costs (and, asking for at most 2000
tokens, reserves) $1.00.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import openai
import pytest

from tests.cluster import Cluster, ClusterFactory, Instance, cluster  # noqa: F401  (the fixture)
from tests.fakes import FakeUpstream, Reply
from tests.test_budget_reservation import FRAMES, OUTPUT
from tests.test_governance import key_line

AGENT, LIMITED = "sk-fo-cluster-agent-00000001", "sk-fo-cluster-limit-00000002"
SYSTEM = "You are a coding agent. Use the tools; answer briefly."


def config(fake: FakeUpstream, teams: str = "{web: {}}", keys: str = "") -> str:
    keys = keys or key_line("agent", AGENT, team="web")
    return f"""
auth: {{required: true}}
providers:
  openai: {{base_url: '{fake.url}', keys: [{{value: sk-upstream-cluster-secret}}], models: [gpt-5]}}
pricing:
  openai/gpt-5: {{input: 0, output: 500}}
teams: {teams}
virtual_keys:
{keys}"""


def answer(text: str = "done") -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1764000000, "model": "gpt-5",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": OUTPUT, "total_tokens": OUTPUT + 10}}


def stream(**kw: Any) -> Reply:
    return Reply(frames=[f + b"\n\n" for f in FRAMES], **kw)


async def ask(instance: Instance, key: str = AGENT, messages: list[Any] | None = None,
              headers: dict[str, str] | None = None) -> str:
    """One whole (non-streamed) chat request; its request id."""
    async with instance.client(key) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="openai/gpt-5", messages=messages or [{"role": "user", "content": "hi"}],
            max_tokens=OUTPUT, extra_headers=headers or {})
    assert raw.parse().choices[0].message.content
    return str(raw.headers["x-request-id"])


async def streamed(instance: Instance, key: str = AGENT) -> tuple[int, str | None]:
    """One streamed chat request read to its end: (status, request id)."""
    async with instance.client(key) as client:
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model="openai/gpt-5", messages=[{"role": "user", "content": "hi"}], max_tokens=OUTPUT,
                stream=True, stream_options={"include_usage": True})
        except openai.APIStatusError as e:
            return e.status_code, None
        async for _ in raw.parse():
            pass
    return 200, str(raw.headers["x-request-id"])


async def six_streams(gw: Cluster, fake: FakeUpstream) -> list[str]:
    """Six whole streams, two to each instance, and once they are in the log; their request ids."""
    fake.add(stream())
    done = [rid for i in range(6) for _, rid in [await streamed(gw[i])] if rid is not None]
    assert len(done) == 6
    await logged(gw[0], 6)
    return done


async def hold_a_stream_on_each(gw: Cluster, fake: FakeUpstream) -> tuple[asyncio.Event, list[Any]]:
    """One stream in flight on each instance, held by the fake mid-answer until the event is set."""
    gate, before = asyncio.Event(), len(fake.requests)
    fake.add(stream(hold_before=1, until=gate))
    held = [asyncio.create_task(streamed(instance)) for instance in gw.instances]
    async with asyncio.timeout(20):
        while len(fake.requests) < before + len(gw):
            await asyncio.sleep(0.02)
    return gate, held


async def logged(instance: Instance, at_least: int, **filters: Any) -> dict[str, Any]:
    """/api/logs once it lists ``at_least`` rows (the writers batch in the background)."""
    async with asyncio.timeout(20):
        while True:
            body: dict[str, Any] = await instance.get("/api/logs", limit=500, **filters)
            # totals are read before the page, so a row committed between the two is in one only
            if len(body["items"]) >= at_least and body["totals"]["requests"] >= at_least:
                return body
            await asyncio.sleep(0.1)


async def test_requests_spread_over_three_instances_are_one_log_and_one_session(
    cluster: ClusterFactory, fake_openai: FakeUpstream
) -> None:
    gw = await cluster(config(fake_openai))
    # an agent that names its task: every turn to the next instance
    fake_openai.answer_json(answer())
    header = {"x-finops-session-id": "task-across-instances"}
    ids = [await ask(gw[i], headers=header) for i in range(6)]
    # an agent threaded by the prefix rule (Roo Code resends its history): each turn goes to
    # the next instance once the one before is in the shared log
    messages: list[Any] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Fix the test"}]
    prefix_ids = []
    for n in range(4):
        if prefix_ids:
            await logged(gw[n], len(ids) + len(prefix_ids))
        prefix_ids.append(await ask(gw[n], messages=messages))
        messages += [{"role": "assistant", "content": "done"}, {"role": "user", "content": f"and now step {n}"}]
    for instance in gw.instances:  # each answers for all of them
        body = await logged(instance, 10)
        assert sorted(i["id"] for i in body["items"]) == sorted(ids + prefix_ids)
        assert body["totals"]["cost_usd"] == pytest.approx(10.0)
        sessions = (await instance.get("/api/sessions", key="agent"))["items"]
        assert sorted((s["source"], s["turns"]) for s in sessions) == [("header", 6), ("prefix", 4)]
        for s in sessions:
            turns = (await instance.get(f"/api/sessions/{s['id']}"))["turns"]
            assert [t["turn"] for t in turns] == list(range(1, s["turns"] + 1))
            if s["source"] == "prefix":  # each turn was written before the next was sent
                assert [t["request_id"] for t in turns] == prefix_ids
            else:  # numbered as the instances wrote them: a fake answers faster than a batch is written
                assert sorted(t["request_id"] for t in turns) == sorted(ids)


async def test_a_key_made_on_one_instance_is_live_on_every_instance(
    cluster: ClusterFactory, fake_openai: FakeUpstream
) -> None:
    admin = {"Authorization": "Bearer adm-cluster-token-0001"}
    gw = await cluster(config(fake_openai) + "server: {admin_token: adm-cluster-token-0001}\n")
    fake_openai.answer_json(answer())
    async with aiohttp.ClientSession(headers=admin) as s:
        async with s.post(f"{gw[0].url}/api/keys", json={"name": "made-live", "team": "web"}) as resp:
            made = await resp.json()
            assert resp.status == 201, made
        for instance in gw.instances:  # the others poll the key store: the key arrives there within a second or so
            assert await until_answered(instance, made["secret"], 200)
        async with s.patch(f"{gw[1].url}/api/keys/made-live", json={"enabled": False}) as resp:
            assert resp.status == 200, await resp.text()
    for instance in gw.instances:
        assert await until_answered(instance, made["secret"], 401)
    # a browser: logged in and served /keys by one instance, its change posted (by the balancer) to another
    async with aiohttp.ClientSession() as browser:
        async with browser.post(f"{gw[0].url}/login", data={"token": "adm-cluster-token-0001", "next": "/keys"},
                                allow_redirects=False) as resp:
            cookie = {"Cookie": f"finopsd_admin={resp.cookies['finopsd_admin'].value}"}
        async with browser.get(f"{gw[0].url}/keys", headers=cookie) as resp:
            token = re.search(r'name="csrf-token" content="([0-9a-f]{64})"', await resp.text())[1]  # type: ignore[index]
        async with browser.post(f"{gw[2].url}/api/keys", json={"name": "from-the-page"},
                                headers={**cookie, "Origin": gw[2].url, "X-CSRF-Token": token}) as resp:
            assert resp.status == 201, await resp.text()


async def until_answered(instance: Instance, key: str, status: int) -> bool:
    """Ask with ``key`` until the instance answers ``status`` (a hang guard bounds the wait)."""
    async with asyncio.timeout(20):
        while True:
            try:
                await ask(instance, key)
                got = 200
            except openai.APIStatusError as e:
                got = e.status_code
            if got == status:
                return True
            await asyncio.sleep(0.1)


async def test_a_team_budget_with_room_for_ten_admits_ten_across_three_instances(
    cluster: ClusterFactory, fake_openai: FakeUpstream
) -> None:
    gw = await cluster(config(fake_openai, teams="{web: {budgets: [{usd: 10, period: day}]}}"))
    gate = asyncio.Event()
    fake_openai.add(stream(hold_before=1, until=gate))
    tasks = [asyncio.create_task(streamed(gw[i])) for i in range(30)]
    async with asyncio.timeout(30):  # a hang guard: every request was refused or reached upstream
        while sum(t.done() for t in tasks) + len(fake_openai.requests) < 30:
            await asyncio.sleep(0.02)
        admitted_in_flight = len(fake_openai.requests)
        gate.set()
        statuses = [status for status, _ in await asyncio.gather(*tasks)]
    # each admitted request held its $1 worst case in Redis while in flight: ten fit, from any instance
    assert admitted_in_flight == statuses.count(200) == 10 and statuses.count(402) == 20
    for instance in gw.instances:  # spent now, everywhere
        assert (await streamed(instance))[0] == 402
    assert (await logged(gw[0], 10, status="ok"))["totals"]["cost_usd"] == pytest.approx(10.0)


async def test_a_per_key_rate_limit_holds_across_instances(
    cluster: ClusterFactory, fake_openai: FakeUpstream
) -> None:
    keys = key_line("agent", AGENT, team="web") + key_line(
        "limited", LIMITED, team="web", rate_limit="{requests_per_minute: 6}")
    gw = await cluster(config(fake_openai, keys=keys))
    fake_openai.answer_json(answer())
    statuses = []
    for i in range(12):  # four to each instance: each alone would admit all of them
        try:
            await ask(gw[i], LIMITED)
            statuses.append(200)
        except openai.RateLimitError as e:
            statuses.append(e.status_code)
            assert e.response.headers["x-ratelimit-limit-requests"] == "6"
    assert statuses == [200] * 6 + [429] * 6
    assert await ask(gw[0], AGENT)  # another key of the team is not limited by it


async def test_kill_9_of_one_instance_mid_stream_loses_only_its_in_flight_rows(
    cluster: ClusterFactory, fake_openai: FakeUpstream
) -> None:
    gw = await cluster(config(fake_openai))
    done = await six_streams(gw, fake_openai)  # written: a row still queued in memory is in flight too
    gate, held = await hold_a_stream_on_each(gw, fake_openai)
    victim = gw[1]
    await victim.kill()
    gate.set()
    results = await asyncio.gather(*held, return_exceptions=True)
    assert isinstance(results[1], openai.APIConnectionError), results[1]  # the stream cut by the kill
    survivors = [r[1] for k, r in enumerate(results) if k != 1 and not isinstance(r, BaseException)]
    assert len(survivors) == 2  # the other instances' streams were not disturbed
    fake_openai.add(stream())
    after = [rid for i in (0, 2) for status, rid in [await streamed(gw[i])] if status == 200]
    every = done + survivors + after
    for instance in (gw[0], gw[2]):
        body = await logged(instance, len(every))
        assert sorted(i["id"] for i in body["items"]) == sorted(every)  # all but the one cut by the kill


async def test_redis_restarted_mid_load_recovers_the_budget_counters(
    cluster: ClusterFactory, fake_openai: FakeUpstream, redis_server: Any
) -> None:
    gw = await cluster(config(fake_openai, teams="{web: {budgets: [{usd: 10, period: day}]}}"))
    await six_streams(gw, fake_openai)  # $6 of $10
    # Redis goes away with a stream in flight on each instance; they still answer, from local counters
    gate, held = await hold_a_stream_on_each(gw, fake_openai)
    redis_server.stop()
    gate.set()
    assert [status for status, _ in await asyncio.gather(*held)] == [200] * 3  # $9 now
    await logged(gw[0], 9)
    for instance in gw.instances:
        await until_state(instance, ok=False)
        metrics = await instance.get("/metrics")
        assert "finopsd_state_redis_up 0" in metrics
    redis_server.start()  # empty: its counters are gone and are rebuilt from the log
    for instance in gw.instances:
        await until_state(instance, ok=True)
    fake_openai.add(stream())
    later = [(await streamed(gw[i]))[0] for i in range(6)]
    assert later == [200] + [402] * 5  # the $10th dollar, then no more on any instance
    assert (await logged(gw[0], 10, status="ok"))["totals"]["cost_usd"] == pytest.approx(10.0)
    for instance in gw.instances:  # each instance's view of Redis (refreshed every second) has it all
        await until_spent(instance, 10.0)
    redis_server.restart()  # a crash and a restart, quicker than any instance notices: empty again
    for instance in gw.instances:
        assert (await streamed(instance))[0] == 402  # from what it saw, then from the log once Redis is back
    for instance in gw.instances:
        await until_state(instance, ok=True)
        assert (await streamed(instance))[0] == 402


async def until_spent(instance: Instance, usd: float) -> None:
    """/api/keys once it shows team web's budget spent to ``usd``."""
    async with asyncio.timeout(20):
        while [b["spent_usd"] for t in (await instance.get("/api/keys"))["teams"] if t["name"] == "web"
               for b in t["budgets"]] != [pytest.approx(usd)]:
            await asyncio.sleep(0.1)


async def until_state(instance: Instance, ok: bool) -> dict[str, Any]:
    """/healthz once it says the shared state is (or is not) reachable."""
    async with asyncio.timeout(30):
        while True:
            health: dict[str, Any] = await instance.get("/healthz")
            state = health["state"]
            assert state["backend"] == "redis", state
            if state["ok"] is ok:
                return health
            await asyncio.sleep(0.1)
