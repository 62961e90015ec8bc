"""Governance end to end (the openai SDK → finopsd → a fake upstream) and its counters.

Every request here costs a known amount: ``pricing`` sets gpt-5 and groq models to
$1000 / $2000 per MTok, and ``text_stream.sse`` reports 12 prompt and 3 completion
tokens, so one streamed request costs (12 × 1000 + 3 × 2000) / 1e6 = $0.018.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient

from finopsd import config as cfg
from finopsd.appkeys import LOGSTORE, RUNTIME
from finopsd.config import VirtualKey
from finopsd.appkeys import GOVERNANCE
from finopsd.governance import find_key, index_keys, presented_key
from finopsd.spend import Ledger, SlidingWindow, estimate_usage, window_end, window_start
from tests.conftest import GatewayFactory, gateway_yaml
from tests.fakes import FakeUpstream, fixture_frames

COST = 0.018
MSGS: list[Any] = [{"role": "user", "content": "Say hello."}]
ALPHA, BRAVO, SOLO = "sk-fo-alpha-0000000000000001", "sk-fo-bravo-0000000000000002", "sk-fo-solo-00000000000003"
EXPIRED, DISABLED = "sk-fo-expired-000000000004", "sk-fo-disabled-00000000005"
PRICING = "pricing:\n  openai/gpt-5: {input: 1000, output: 2000}\n  groq/*: {input: 1000, output: 2000}\n"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def governed(fake_url: str, keys: str, teams: str = "{}", auth: str = "true", extra: str = "") -> str:
    return gateway_yaml(fake_url, f"auth: {{required: {auth}}}\nteams: {teams}\nvirtual_keys:\n{keys}\n{PRICING}{extra}")


def key_line(name: str, key: str, **fields: str) -> str:
    more = "".join(f", {k}: {v}" for k, v in fields.items())
    return f'  - {{name: {name}, key_sha256: "{sha(key)}"{more}}}\n'


@asynccontextmanager
async def sdk(gw: TestClient, key: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=str(gw.make_url("/openai")), api_key=key, max_retries=0) as client:
        yield client


async def ask(gw: TestClient, key: str, model: str = "openai/gpt-5", **kw: Any) -> list[Any]:
    async with sdk(gw, key) as client:
        stream = await client.chat.completions.create(
            model=model, messages=MSGS, stream=True, stream_options={"include_usage": True}, **kw)
        return [chunk async for chunk in stream]


async def refused(gw: TestClient, key: str, model: str = "openai/gpt-5", **kw: Any) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as info:
        await ask(gw, key, model, **kw)
    return info.value


async def rows(gw: TestClient) -> list[dict[str, Any]]:
    store = gw.server.app[LOGSTORE]
    await store.flush()
    return (await store.search(limit=500))["items"]


def spent(gw: TestClient, scope: str, name: str, period: str) -> float:
    gov = gw.server.app[GOVERNANCE]
    return gov.state.spent((scope, name, period), gov.clock())


@pytest.fixture
async def team_gw(make_gateway: GatewayFactory, fake_openai: FakeUpstream) -> TestClient:
    """Two keys in team platform (its budget $0.05 a day), a solo key limited to groq/* and gpt-5."""
    fake_openai.play("openai/text_stream.sse")
    keys = (key_line("alpha", ALPHA, team="platform") + key_line("bravo", BRAVO, team="platform")
            + key_line("solo", SOLO, models='["groq/*", openai/gpt-5]')
            + key_line("old", EXPIRED, expires="2020-01-01") + key_line("paused", DISABLED, enabled="false"))
    return await make_gateway(governed(fake_openai.url, keys, "{platform: {budgets: [{usd: 0.05, period: day}]}}"))


# --- 401 -------------------------------------------------------------------------------


async def test_missing_key_is_401_with_www_authenticate(team_gw: TestClient) -> None:
    # the SDK insists on a key, so this client sends none
    resp = await team_gw.post("/openai/chat/completions", json={"model": "openai/gpt-5", "messages": MSGS})
    assert resp.status == 401
    body = (await resp.json())["error"]
    assert body["code"] == "missing_api_key" and "Authorization: Bearer" in body["message"]
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_unknown_key_is_401(team_gw: TestClient, fake_openai: FakeUpstream) -> None:
    err = await refused(team_gw, "sk-fo-not-a-key")
    assert err.status_code == 401
    assert err.body == {"message": "invalid API key", "type": "authentication_error", "param": None,
                        "code": "invalid_api_key"}
    assert fake_openai.requests == []  # refused before the upstream was called


async def test_expired_and_disabled_keys_are_401_and_named_on_the_log_row(team_gw: TestClient) -> None:
    err = await refused(team_gw, EXPIRED)
    assert err.status_code == 401 and err.body["code"] == "key_expired"
    assert "'old' expired at 2020-01-01T00:00:00Z" in err.body["message"]
    err = await refused(team_gw, DISABLED)
    assert err.status_code == 401 and err.body["code"] == "key_disabled"
    logged = {(r["key_name"], r["status_code"]) for r in await rows(team_gw)}
    assert logged == {("old", 401), ("paused", 401)}


async def test_key_is_read_from_x_api_key_and_api_key_headers(team_gw: TestClient) -> None:
    for header in ("x-api-key", "api-key"):
        resp = await team_gw.post("/openai/chat/completions", headers={header: SOLO},
                                  json={"model": "openai/gpt-5", "messages": MSGS, "stream": True})
        assert resp.status == 200 and b"Hello" in await resp.read()
    assert {r["key_name"] for r in await rows(team_gw)} == {"solo"}
    assert presented_key({"Authorization": "bearer  k1 ", "x-api-key": "k2"}) == "k1"
    assert presented_key({"Authorization": "Basic abc", "api-key": "k3"}) == "k3"
    assert presented_key({"Authorization": "Bearer "}) is None


async def test_anthropic_route_refuses_with_its_own_error_shape(team_gw: TestClient) -> None:
    resp = await team_gw.post("/anthropic/v1/messages", headers={"x-api-key": "sk-nope"},
                              json={"model": "openai/gpt-5", "max_tokens": 10, "messages": MSGS})
    assert resp.status == 401
    body = await resp.json()
    assert body["type"] == "error" and body["error"]["message"] == "invalid API key"


def test_key_lookup_is_by_digest_and_a_rotated_secret_lasts_its_grace() -> None:
    keys = [VirtualKey(name=f"k{i}", key_sha256=sha(f"key-{i}")) for i in range(5)]
    keys.append(VirtualKey(name="r", key_sha256=sha("new"), previous_sha256=sha("old"), previous_until=100.0))
    index = index_keys(keys)
    assert find_key(index, "key-3", 0) is keys[3]
    assert find_key(index, "key-9", 0) is None
    assert find_key(index, "old", 99) is find_key(index, "new", 200) is keys[5]
    assert find_key(index, "old", 100) is None


# --- 403 and /models -------------------------------------------------------------------


async def test_model_globs_allow_and_forbid(team_gw: TestClient) -> None:
    assert await ask(team_gw, SOLO, "groq/llama-3.3-70b-versatile")  # groq/*
    assert await ask(team_gw, SOLO, "openai/gpt-5")  # exact
    assert {r["model"] for r in await rows(team_gw)} == {"groq/llama-3.3-70b-versatile", "openai/gpt-5"}


async def test_forbidden_model_is_403_naming_what_the_key_may_use(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream
) -> None:
    fake_openai.play("openai/text_stream.sse")
    gw = await make_gateway(governed(fake_openai.url, key_line("solo", SOLO, models='["groq/*"]')))
    err = await refused(gw, SOLO, "openai/gpt-5")
    assert err.status_code == 403 and isinstance(err, openai.PermissionDeniedError)
    assert err.body["code"] == "model_not_allowed"
    assert err.body["message"] == "key 'solo' may not use model 'openai/gpt-5'; it may use: groq/*"
    # a fallback the key may not use is refused too, before anything is sent
    err = await refused(gw, SOLO, "groq/llama-3.3-70b-versatile", extra_body={"fallbacks": ["openai/gpt-5"]})
    assert err.status_code == 403 and fake_openai.requests == []


async def test_aliases_are_checked_as_the_model_they_name(make_gateway: GatewayFactory, fake_openai: FakeUpstream) -> None:
    fake_openai.play("openai/text_stream.sse")
    yaml_text = governed(fake_openai.url, key_line("solo", SOLO, models='["groq/*"]'),
                         extra="aliases: {fast: groq/llama-3.3-70b-versatile, smart: openai/gpt-5}\n")
    gw = await make_gateway(yaml_text)
    assert await ask(gw, SOLO, "fast")
    assert (await refused(gw, SOLO, "smart")).status_code == 403


async def test_models_lists_only_what_the_key_may_use(team_gw: TestClient) -> None:
    async with sdk(team_gw, SOLO) as client:
        assert sorted(m.id for m in (await client.models.list()).data) == [
            "groq/llama-3.3-70b-versatile", "openai/gpt-5"]
    async with sdk(team_gw, ALPHA) as client:  # no models list: everything
        assert len((await client.models.list()).data) == 2
    async with sdk(team_gw, "sk-wrong") as client:
        with pytest.raises(openai.AuthenticationError):
            await client.models.list()


async def test_models_filtered_by_glob(make_gateway: GatewayFactory, fake_openai: FakeUpstream) -> None:
    gw = await make_gateway(governed(fake_openai.url, key_line("g", SOLO, models='["groq/*"]')))
    async with sdk(gw, SOLO) as client:
        assert [m.id for m in (await client.models.list()).data] == ["groq/llama-3.3-70b-versatile"]


# --- 429 -------------------------------------------------------------------------------


async def test_request_rate_limit_is_429_with_retry_after_and_ratelimit_headers(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream
) -> None:
    fake_openai.play("openai/text_stream.sse")
    gw = await make_gateway(governed(fake_openai.url, key_line("a", ALPHA, rate_limit="{requests_per_minute: 2}")))
    now = [1_800_000_000.0]
    gw.server.app[GOVERNANCE].clock = lambda: now[0]
    await ask(gw, ALPHA)
    now[0] += 10
    await ask(gw, ALPHA)
    now[0] += 5
    err = await refused(gw, ALPHA)
    assert err.status_code == 429 and isinstance(err, openai.RateLimitError)
    assert err.body["code"] == "rate_limit_exceeded"
    assert "key 'a': 2 requests per minute" in err.body["message"]
    h = err.response.headers
    assert h["Retry-After"] == "45"  # the first request leaves the window 60 s after it came
    assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("2", "0")
    now[0] += 45
    assert await ask(gw, ALPHA)


async def test_token_rate_limit_counts_tokens_used(make_gateway: GatewayFactory, fake_openai: FakeUpstream) -> None:
    fake_openai.play("openai/text_stream.sse")  # 15 tokens a request
    gw = await make_gateway(governed(fake_openai.url, key_line("a", ALPHA, rate_limit="{tokens_per_minute: 20}")))
    await ask(gw, ALPHA)
    await ask(gw, ALPHA)  # 15 < 20: admitted; now 30 used
    err = await refused(gw, ALPHA)
    assert err.status_code == 429 and "20 tokens per minute (used 30)" in err.body["message"]
    h = err.response.headers
    assert (h["x-ratelimit-limit-tokens"], h["x-ratelimit-remaining-tokens"]) == ("20", "0")
    assert 1 <= int(h["Retry-After"]) <= 60


async def test_team_rate_limit_is_shared_by_its_keys(make_gateway: GatewayFactory, fake_openai: FakeUpstream) -> None:
    fake_openai.play("openai/text_stream.sse")
    keys = key_line("alpha", ALPHA, team="t") + key_line("bravo", BRAVO, team="t")
    gw = await make_gateway(governed(fake_openai.url, keys, "{t: {rate_limit: {requests_per_minute: 3}}}"))
    await ask(gw, ALPHA)
    await ask(gw, BRAVO)
    await ask(gw, ALPHA)
    err = await refused(gw, BRAVO)
    assert err.status_code == 429 and "team 't': 3 requests per minute" in err.body["message"]
    assert err.response.headers["x-ratelimit-limit-requests"] == "3"


# --- 402 -------------------------------------------------------------------------------


async def test_spent_budget_is_402_naming_budget_amount_spend_and_reset(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream
) -> None:
    fake_openai.play("openai/text_stream.sse")
    gw = await make_gateway(governed(fake_openai.url, key_line("a", ALPHA, budgets="[{usd: 0.03, period: day}]")))
    await ask(gw, ALPHA)
    await ask(gw, ALPHA)  # $0.018 < $0.03 before it: admitted
    err = await refused(gw, ALPHA)
    assert err.status_code == 402 and err.body["code"] == "budget_exceeded"
    assert err.body["type"] == "insufficient_quota"
    tomorrow = datetime.fromtimestamp(window_end("day", window_start("day", datetime.now(UTC).timestamp())), UTC)
    assert err.body["message"] == (f"budget exceeded: key 'a' has spent $0.036 of its $0.03 day budget; "
                                   f"it resets at {tomorrow:%Y-%m-%dT%H:%M:%SZ}")
    assert spent(gw, "key", "a", "day") == pytest.approx(2 * COST)


async def test_team_budget_is_shared_by_two_keys(team_gw: TestClient) -> None:
    for key in (ALPHA, BRAVO, ALPHA):  # 3 × $0.018 = $0.054 ≥ $0.05
        await ask(team_gw, key)
    err = await refused(team_gw, BRAVO)
    assert err.status_code == 402 and "team 'platform' has spent $0.054 of its $0.05 day budget" in err.body["message"]
    assert spent(team_gw, "team", "platform", "day") == pytest.approx(3 * COST)
    assert await ask(team_gw, SOLO)  # a key outside the team is unaffected


async def test_budget_resets_at_its_period_boundary(make_gateway: GatewayFactory, fake_openai: FakeUpstream) -> None:
    fake_openai.play("openai/text_stream.sse")
    gw = await make_gateway(governed(fake_openai.url, key_line("a", ALPHA, budgets="[{usd: 0.02, period: day}]")))
    gov = gw.server.app[GOVERNANCE]
    now = [datetime(2030, 3, 31, 23, 59, 30, tzinfo=UTC).timestamp()]
    gov.clock = lambda: now[0]
    await ask(gw, ALPHA)
    await ask(gw, ALPHA)
    err = await refused(gw, ALPHA)
    assert "it resets at 2030-04-01T00:00:00Z" in err.body["message"]
    now[0] = datetime(2030, 3, 31, 23, 59, 59, tzinfo=UTC).timestamp()
    assert (await refused(gw, ALPHA)).status_code == 402
    now[0] = datetime(2030, 4, 1, 0, 0, 0, tzinfo=UTC).timestamp()
    assert await ask(gw, ALPHA)
    assert spent(gw, "key", "a", "day") == pytest.approx(COST)


async def test_spend_survives_a_restart(make_gateway: GatewayFactory, fake_openai: FakeUpstream) -> None:
    fake_openai.play("openai/text_stream.sse")
    yaml_text = governed(fake_openai.url, key_line("a", ALPHA, team="t", budgets="[{usd: 0.03, period: month}]"),
                         "{t: {budgets: [{usd: 10, period: total}]}}")
    first = await make_gateway(yaml_text)
    await ask(first, ALPHA)
    await ask(first, ALPHA)
    await first.close()  # drains the log
    second = await make_gateway(yaml_text)
    assert spent(second, "key", "a", "month") == pytest.approx(2 * COST)
    assert spent(second, "team", "t", "total") == pytest.approx(2 * COST)
    assert (await refused(second, ALPHA)).status_code == 402


async def test_month_and_total_budgets_keep_spend_that_retention_pruned(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Budgets outlive logs.retention_days: the daily spend roll-up is never pruned, so no warning either."""
    caplog.set_level(logging.WARNING, logger="finopsd.governance")
    fake_openai.play("openai/text_stream.sse")
    db = tmp_path / "kept.db"
    yaml_text = governed(fake_openai.url, key_line("a", ALPHA, team="t", budgets="[{usd: 0.03, period: month}]"),
                         "{t: {budgets: [{usd: 10, period: total}]}}",
                         extra=f"storage: {{path: {db}}}\nlogs: {{retention_days: 0}}\n")
    first = await make_gateway(yaml_text)
    await ask(first, ALPHA)
    await ask(first, ALPHA)
    store = first.server.app[LOGSTORE]
    await store.flush()
    assert await store.prune(0) == 2  # what the hourly pruning does with retention_days 0: every row goes
    assert await rows(first) == []
    await first.close()
    second = await make_gateway(yaml_text)  # spend rebuilt from the log without its rows
    assert spent(second, "key", "a", "month") == pytest.approx(2 * COST)
    assert spent(second, "team", "t", "total") == pytest.approx(2 * COST)
    assert (await refused(second, ALPHA)).status_code == 402
    assert [r.getMessage() for r in caplog.records if "retention" in r.getMessage()] == []


async def test_fifty_concurrent_requests_at_the_budget_edge(make_gateway: GatewayFactory, fake_openai: FakeUpstream) -> None:
    """Every admitted request is charged exactly once; none is admitted once the spend reached the budget;
    one admitted near the edge reserves its worst case, which keeps the others out while it runs."""
    frames = fixture_frames("openai/text_stream.sse")
    from tests.fakes import Reply

    fake_openai.add(Reply(frames=frames, delay_s=0.05))
    gw = await make_gateway(governed(fake_openai.url, key_line("a", ALPHA, budgets="[{usd: 0.1, period: day}]")))
    await ask(gw, ALPHA)
    await ask(gw, ALPHA)
    await ask(gw, ALPHA)
    await ask(gw, ALPHA)  # $0.072 of $0.1: room for one more, then the edge

    async def one() -> int:
        try:
            await ask(gw, ALPHA)
            return 200
        except openai.APIStatusError as e:
            return e.status_code

    statuses = await asyncio.gather(*(one() for _ in range(50)))
    assert set(statuses) <= {200, 402} and 200 in statuses
    ok = statuses.count(200)
    logged = [r for r in await rows(gw) if r["status"] == "ok"]
    assert len(logged) == 4 + ok
    charged = spent(gw, "key", "a", "day")
    assert charged == pytest.approx(sum(r["cost_usd"] for r in logged))  # no lost or double charge
    assert charged == pytest.approx((4 + ok) * COST)
    assert ok == 1
    await ask(gw, ALPHA)  # $0.09 spent, nothing in flight: room for one more
    assert (await refused(gw, ALPHA)).status_code == 402


# --- what gets charged -----------------------------------------------------------------


async def test_stream_usage_is_priced_logged_and_charged(team_gw: TestClient) -> None:
    await ask(team_gw, ALPHA)
    (row,) = await rows(team_gw)
    assert (row["key_name"], row["team"]) == ("alpha", "platform")
    assert row["cost_usd"] == pytest.approx(COST) and row["cost_flags"] is None
    assert spent(team_gw, "team", "platform", "day") == pytest.approx(COST)


async def test_non_stream_usage_is_charged(team_gw: TestClient, fake_openai: FakeUpstream) -> None:
    fake_openai.replies.clear()
    fake_openai.answer_json({
        "id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-5",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
    })  # fmt: skip
    async with sdk(team_gw, ALPHA) as client:
        done = await client.chat.completions.create(model="openai/gpt-5", messages=MSGS)
    assert done.usage is not None and done.usage.total_tokens == 120
    (row,) = await rows(team_gw)
    assert row["cost_usd"] == pytest.approx((100 * 1000 + 20 * 2000) / 1e6)
    assert spent(team_gw, "team", "platform", "day") == pytest.approx(0.14)


async def test_client_disconnect_is_charged_an_estimate_flagged_estimated(
    team_gw: TestClient, fake_openai: FakeUpstream
) -> None:
    never = asyncio.Event()
    fake_openai.replies.clear()
    fake_openai.play("openai/text_stream.sse", hold_before=3, until=never)  # "Hello", ", world", then hangs
    async with sdk(team_gw, ALPHA) as client:
        stream = await client.chat.completions.create(model="openai/gpt-5", messages=MSGS, stream=True)
        first = [await stream.__anext__(), await stream.__anext__()]
        await stream.close()
    assert first[1].choices[0].delta.content == "Hello"
    async with asyncio.timeout(5):
        await fake_openai.closed_early.wait()
        while not (found := await rows(team_gw)):
            await asyncio.sleep(0.02)
    (row,) = found
    assert row["status"] == "client_closed" and row["cost_flags"] == "estimated"
    # "Say hello." is 10 characters → 3 tokens; "Hello, world" 12 → 3 tokens
    assert (row["prompt_tokens"], row["completion_tokens"]) == (3, 3)
    assert row["cost_usd"] == pytest.approx((3 * 1000 + 3 * 2000) / 1e6)
    assert spent(team_gw, "key", "alpha", "day") == 0.0  # alpha has no budget counter
    assert spent(team_gw, "team", "platform", "day") == pytest.approx(row["cost_usd"])


async def test_disconnect_after_upstream_usage_uses_the_real_usage(team_gw: TestClient, fake_openai: FakeUpstream) -> None:
    never = asyncio.Event()
    fake_openai.replies.clear()
    fake_openai.play("openai/text_stream.sse", hold_before=5, until=never)  # everything but [DONE]
    async with sdk(team_gw, ALPHA) as client:
        stream = await client.chat.completions.create(model="openai/gpt-5", messages=MSGS, stream=True,
                                                      stream_options={"include_usage": True})
        async for chunk in stream:
            if chunk.usage is not None:
                break
        await stream.close()
    async with asyncio.timeout(5):
        while not (found := await rows(team_gw)):
            await asyncio.sleep(0.02)
    (row,) = found
    assert row["cost_flags"] is None and row["cost_usd"] == pytest.approx(COST)


async def test_upstream_error_before_answering_costs_nothing(team_gw: TestClient, fake_openai: FakeUpstream) -> None:
    fake_openai.replies.clear()
    fake_openai.answer_json({"error": {"message": "overloaded", "type": "server_error"}}, status=500)
    assert (await refused(team_gw, ALPHA)).status_code == 500
    (row,) = await rows(team_gw)
    assert row["cost_usd"] is None and row["key_name"] == "alpha"
    assert spent(team_gw, "team", "platform", "day") == 0.0


async def test_unpriced_model_costs_zero_and_is_flagged(make_gateway: GatewayFactory, fake_openai: FakeUpstream) -> None:
    fake_openai.play("openai/text_stream.sse")
    yaml_text = gateway_yaml(fake_openai.url).replace("models: [gpt-5]", "models: [gpt-5, house-model]")
    gw = await make_gateway(yaml_text)
    await ask(gw, "any-key-while-none-are-configured", "openai/house-model")
    (row,) = await rows(gw)
    assert row["cost_usd"] == 0.0 and row["cost_flags"] == "unpriced" and row["key_name"] is None


async def test_startup_warns_about_configured_models_without_a_price(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="finopsd.governance")
    await make_gateway(gateway_yaml(fake_openai.url).replace("models: [gpt-5]", "models: [gpt-5, house-model]"))
    warned = [r.getMessage() for r in caplog.records if "no price" in r.getMessage()]
    assert warned == ["no price for openai/house-model: its requests cost 0 and are marked unpriced"
                      " (add it under `pricing:`)"]


# --- auth optional, SIGHUP --------------------------------------------------------------


async def test_optional_auth_admits_anonymous_and_still_limits_known_keys(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream
) -> None:
    fake_openai.play("openai/text_stream.sse")
    gw = await make_gateway(governed(fake_openai.url, key_line("a", ALPHA, budgets="[{usd: 0.01, period: day}]"),
                                     auth="false"))
    await ask(gw, "whatever")
    resp = await gw.post("/openai/chat/completions", json={"model": "openai/gpt-5", "messages": MSGS, "stream": True})
    assert resp.status == 200 and b"[DONE]" in await resp.read()
    await ask(gw, ALPHA)
    assert (await refused(gw, ALPHA)).status_code == 402
    names = sorted(str(r["key_name"]) for r in await rows(gw))
    assert names == ["None", "None", "a", "a"]


async def test_sighup_applies_new_keys_and_limits_keeping_spend(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream
) -> None:
    fake_openai.play("openai/text_stream.sse")
    old = governed(fake_openai.url, key_line("a", ALPHA, budgets="[{usd: 1, period: day}]"))
    gw = await make_gateway(old)
    await ask(gw, ALPHA)
    await ask(gw, ALPHA)
    assert (await refused(gw, BRAVO)).status_code == 401
    new = governed(fake_openai.url, key_line("a", ALPHA, budgets="[{usd: 0.03, period: day}, {usd: 5, period: week}]")
                   + key_line("b", BRAVO))
    gw.server.app[RUNTIME].config = cfg.parse(new, env={"TEST_OPENAI_KEY": "sk-upstream-openai-secret"})
    err = await refused(gw, ALPHA)  # the day's $0.036 was kept and now exceeds the lowered budget
    assert err.status_code == 402 and "$0.036 of its $0.03 day budget" in err.body["message"]
    assert spent(gw, "key", "a", "week") == pytest.approx(2 * COST)  # a new budget: rebuilt from the log
    assert await ask(gw, BRAVO)


async def test_no_plaintext_key_in_database_logs_or_pages(
    team_gw: TestClient, fake_openai: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await ask(team_gw, ALPHA)
    await refused(team_gw, EXPIRED)
    await refused(team_gw, "sk-fo-unknown-key-99999")
    await ask(team_gw, SOLO, "groq/llama-3.3-70b-versatile")
    store = team_gw.server.app[LOGSTORE]
    await store.flush()
    pages = [await (await team_gw.get(path)).text() for path in ("/logs", "/api/logs", "/keys", "/api/keys")]
    for row in (await store.search(limit=50))["items"]:
        pages.append(await (await team_gw.get(f"/api/logs/{row['id']}")).text())
    db_path = team_gw.server.app[RUNTIME].config.storage.path
    blobs = [Path(p).read_bytes() for p in (db_path, db_path + "-wal") if Path(p).exists()]
    for secret in (ALPHA, EXPIRED, SOLO, "sk-fo-unknown-key-99999"):
        assert not any(secret.encode() in b for b in blobs)
        assert all(secret not in page for page in pages)
        assert secret not in caplog.text
    assert "alpha" in pages[3]  # the pages did render the keys, by name


# --- counters --------------------------------------------------------------------------


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("period", "moment", "start", "end"), [
    ("minute", "2030-05-15T10:20:30", "2030-05-15T10:20:00", "2030-05-15T10:21:00"),
    ("hour", "2030-05-15T10:20:30", "2030-05-15T10:00:00", "2030-05-15T11:00:00"),
    ("day", "2030-05-15T10:20:30", "2030-05-15T00:00:00", "2030-05-16T00:00:00"),
    ("week", "2030-05-15T10:20:30", "2030-05-13T00:00:00", "2030-05-20T00:00:00"),  # Wednesday → Monday
    ("week", "2030-05-13T00:00:00", "2030-05-13T00:00:00", "2030-05-20T00:00:00"),
    ("month", "2030-02-28T23:59:59", "2030-02-01T00:00:00", "2030-03-01T00:00:00"),
    ("month", "2030-12-31T12:00:00", "2030-12-01T00:00:00", "2031-01-01T00:00:00"),
])  # fmt: skip
def test_budget_windows_are_calendar_aligned_in_utc(period: str, moment: str, start: str, end: str) -> None:
    assert window_start(period, at(moment)) == at(start)
    assert window_end(period, at(start)) == at(end)


def test_total_window_never_resets() -> None:
    assert window_start("total", at("2030-05-15T10:20:30")) == 0.0 and window_end("total", 0.0) is None


def test_ledger_rolls_to_a_new_window_and_ignores_charges_for_closed_ones() -> None:
    ledger = Ledger()
    counter = ("key", "a", "day")
    ledger.install(counter, window_start("day", at("2030-01-01T12:00:00")), 1.0)
    ledger.charge("key", "a", at("2030-01-01T13:00:00"), 0.5)
    assert ledger.spent(counter, at("2030-01-01T23:59:59")) == 1.5
    assert ledger.spent(counter, at("2030-01-02T00:00:00")) == 0.0
    ledger.charge("key", "a", at("2030-01-02T00:00:01"), 0.25)
    ledger.charge("key", "a", at("2030-01-01T23:00:00"), 9.0)  # late, for a closed day
    assert ledger.spent(counter, at("2030-01-02T08:00:00")) == 0.25
    ledger.charge("key", "untracked", at("2030-01-02T08:00:00"), 1.0)
    assert ledger.tracked == {counter}


def test_sliding_window_says_when_room_comes_back() -> None:
    w = SlidingWindow()
    w.add(100.0, 10)
    w.add(130.0, 10)
    assert w.used(150.0) == 20
    assert w.wait(150.0, 20) == pytest.approx(10.0)  # the first leaves at 160
    assert w.wait(150.0, 5) == pytest.approx(40.0)  # both must leave
    assert w.used(160.0) == 10 and w.used(190.0) == 0


def test_estimate_counts_prompt_and_answer_text_at_four_characters_a_token() -> None:
    request = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "x" * 40}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}],
        "tools": [{"type": "function", "function": {"name": "read_file", "parameters": {}}}]}
    usage = estimate_usage(request, ["y" * 9], ["z" * 8], [{"id": "c", "name": "read_file", "arguments": "{}"}])
    assert usage["prompt_tokens"] == 13  # 40 + len("read_file") = 49 chars
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 2
    assert usage["completion_tokens"] == 5 + 2  # 9 + 9 + 2 characters said, 8 thought (each rounded up)
