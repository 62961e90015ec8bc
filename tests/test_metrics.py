"""GET /metrics: parsed with prometheus-client's own parser, checked by promtool, and counted
against a known sequence of requests through the real OpenAI SDK and a fake upstream."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient
from mcp.shared.exceptions import MCPError
from prometheus_client.parser import text_string_to_metric_families

from finopsd.appkeys import LOGSTORE
from tests.conftest import GatewayFactory
from tests.fakes import FakeUpstream, Reply, fixture_frames
from tests.test_governance import PRICING, key_line, sha
from tests.test_mcp import KEYS, STDIO, gateway_yaml, mcp_client

KEY = "sk-fo-metrics-000000000000001"
TOKEN = "admin-token-for-metrics-test"
MSGS: list[Any] = [{"role": "user", "content": "Say hello."}]
CHAT = "/openai/chat/completions"


def config(fake_url: str, extra: str = "") -> str:
    return f"""
server: {{admin_token: {TOKEN}}}
providers:
  openai:
    base_url: {fake_url}
    keys: [{{value: sk-upstream-secret}}]
    models: [gpt-5]
    max_retries: 1
    retry_backoff_ms: 1
auth: {{required: true}}
teams: {{t: {{budgets: [{{usd: 5, period: day}}]}}}}
virtual_keys:
{key_line("alpha", KEY, team="t", rate_limit="{requests_per_minute: 3}", budgets="[{usd: 2, period: month}]")}
{PRICING}{extra}
"""


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by name and sorted labels."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], metric: str, /, **labels: str) -> float:
    """The sum over the samples of ``metric`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in found.items() if n == metric and set(labels.items()) <= set(ls))


async def scrape(gw: TestClient) -> str:
    resp = await gw.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain")
    return await resp.text()


async def stream(client: openai.AsyncOpenAI) -> list[Any]:
    chunks = await client.chat.completions.create(model="openai/gpt-5", messages=MSGS, stream=True,
                                                  stream_options={"include_usage": True})
    return [c async for c in chunks]


async def test_a_known_sequence_of_requests_gives_its_counters_and_histograms(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream
) -> None:
    gw = await make_gateway(config(fake_openai.url))
    never = asyncio.Event()
    fake_openai.play("openai/text_stream.sse")  # 1: ok
    fake_openai.answer_json({"error": {"message": "boom", "type": "server_error"}}, status=500)  # 2: a 500 ...
    fake_openai.play("openai/text_stream.sse")  # ... then the retry answers
    fake_openai.play("openai/text_stream.sse", hold_before=2, until=never)  # 3: the client leaves mid-stream
    async with openai.AsyncOpenAI(base_url=str(gw.make_url("/openai")), api_key=KEY, max_retries=0) as client:
        assert await stream(client)
        assert await stream(client)
        resp = await gw.post(CHAT, json={"model": "openai/gpt-5", "messages": MSGS, "stream": True},
                             headers={"Authorization": f"Bearer {KEY}"})
        await resp.content.readline()
        resp.close()
        async with asyncio.timeout(5):  # the disconnect's post-hooks run once aiohttp cancels the handler
            await fake_openai.closed_early.wait()
            while not value(samples(await scrape(gw)), "finopsd_requests_total", outcome="client_closed"):
                await asyncio.sleep(0.02)
        with pytest.raises(openai.RateLimitError):  # 4: the key's third request this minute was the last
            await stream(client)
    await gw.server.app[LOGSTORE].flush()
    text = await scrape(gw)
    found = samples(text)

    def requests(**labels: str) -> float:
        return value(found, "finopsd_requests_total", route="chat", **labels)

    assert requests() == 4
    assert requests(status_class="2xx", outcome="ok", provider="openai", model="openai/gpt-5", team="t") == 2
    assert requests(status_class="4xx", outcome="client_closed") == 1
    assert requests(status_class="4xx", outcome="error") == 1  # the 429, refused before any routing
    assert requests(key="alpha") == 0 and requests(key="") == 4  # key names only with metrics.per_key
    assert value(found, "finopsd_upstream_errors_total", provider="openai", type="server_error") == 1
    assert value(found, "finopsd_upstream_retries_total", provider="openai") == 1
    assert value(found, "finopsd_fallbacks_total") == 0
    # two whole answers reported usage (12 prompt, 3 completion tokens each); the cut stream's
    # was estimated by governance, as its log row shows: the metrics agree with the log
    rows = (await gw.server.app[LOGSTORE].search(limit=50))["items"]
    assert len(rows) == 4
    assert value(found, "finopsd_tokens_total", kind="prompt") == sum(r["prompt_tokens"] or 0 for r in rows) > 24
    assert value(found, "finopsd_tokens_total", kind="completion") == sum(r["completion_tokens"] or 0 for r in rows)
    assert value(found, "finopsd_cost_usd_total", team="t") == pytest.approx(sum(r["cost_usd"] or 0 for r in rows))
    assert value(found, "finopsd_cost_usd_total", team="t") > 2 * (12 * 1000 + 3 * 2000) / 1e6
    assert value(found, "finopsd_request_duration_seconds_count", route="chat") == 4
    assert value(found, "finopsd_time_to_first_token_seconds_count", route="chat") == 3  # not the 429
    assert value(found, "finopsd_overhead_seconds_count", route="chat") == 4
    overhead = value(found, "finopsd_overhead_seconds_sum", route="chat")
    assert 0 < overhead < value(found, "finopsd_request_duration_seconds_sum", route="chat")
    assert ("finopsd_overhead_seconds_bucket", (("le", "0.0001"), ("route", "chat"))) in found
    assert value(found, "finopsd_streams_in_flight") == 0 and value(found, "finopsd_requests_in_flight") == 0
    assert value(found, "finopsd_log_rows_written_total") == 4
    assert value(found, "finopsd_log_write_seconds_count") >= 1
    assert value(found, "finopsd_log_rows_failed_total") == 0
    assert value(found, "finopsd_log_queue_rows") == 0
    assert value(found, "finopsd_budget_limit_usd", scope="team", name="t", period="day") == 5
    assert value(found, "finopsd_budget_spent_usd", scope="team", name="t", period="day") > 0
    assert value(found, "finopsd_budget_limit_usd", scope="key") == 0  # key budgets only with per_key
    assert_promtool_passes(text)


def assert_promtool_passes(text: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: install Debian's prometheus package (scripts/test does, as root)"
    done = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


async def test_model_labels_stay_bounded_and_keys_are_named_only_when_asked(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream
) -> None:
    gw = await make_gateway(config(fake_openai.url, "metrics: {per_key: true}\n"))
    fake_openai.add(Reply(frames=fixture_frames("openai/text_stream.sse")))
    headers = {"Authorization": f"Bearer {KEY}"}
    for made_up in ("openai/gpt-made-up-1", "nobody/invented-2", "x" * 200):
        resp = await gw.post(CHAT, json={"model": made_up, "messages": MSGS}, headers=headers)
        assert resp.status != 500, await resp.text()  # upstream nonsense for the first: a 502
    text = await scrape(gw)
    found = samples(text)
    models = {dict(ls).get("model") for (n, ls) in found if n == "finopsd_requests_total"}
    assert models == {"other"}
    assert value(found, "finopsd_requests_total", key="alpha") == 3
    assert value(found, "finopsd_budget_limit_usd", scope="key", name="alpha", period="month") == 2
    assert "made-up" not in text and "invented" not in text
    assert_promtool_passes(text)


async def test_metrics_need_the_admin_token_unless_public(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream, aiohttp_client: Any
) -> None:
    closed = await make_gateway(config(fake_openai.url))
    assert (await closed.get("/metrics", headers={"Authorization": "Bearer wrong"})).status == 401
    assert (await closed.get("/metrics", headers={"Authorization": f"Bearer {KEY}"})).status == 401
    assert (await closed.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).status == 200


async def test_public_metrics_answer_without_the_token(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream
) -> None:
    gw = await make_gateway(config(fake_openai.url, "metrics: {public: true}\n"))
    resp = await gw.get("/metrics", headers={"Authorization": "Bearer wrong"})
    assert resp.status == 200
    assert "finopsd_requests_in_flight" in await resp.text()
    assert sha(KEY) not in await resp.text()


async def test_mcp_tool_calls_are_counted_by_server_and_outcome(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, key in KEYS.items():
        monkeypatch.setenv(name, key)
    gw = await make_gateway(gateway_yaml(f"    local: {STDIO}\n"))  # no admin token: loopback may scrape
    async with mcp_client(gw) as client:
        assert not (await client.call_tool("local-echo", {"text": "hi"})).is_error
        assert not (await client.call_tool("local-add", {"a": 1, "b": 2})).is_error
        assert (await client.call_tool("local-fail", {"reason": "disk full"})).is_error
        for unknown in ("local-nope", "nowhere-echo"):
            with pytest.raises(MCPError):
                await client.call_tool(unknown, {})
    resp = await gw.get("/metrics")
    assert resp.status == 200
    found = samples(await resp.text())
    assert value(found, "finopsd_mcp_tool_calls_total", server="local", outcome="ok") == 2
    assert value(found, "finopsd_mcp_tool_calls_total", server="local", outcome="tool_error") == 1
    assert value(found, "finopsd_mcp_tool_calls_total", server="local", outcome="refused") == 1
    assert value(found, "finopsd_mcp_tool_calls_total", server="other", outcome="refused") == 1
    assert value(found, "finopsd_requests_total", route="mcp", provider="local") == 4


async def test_event_loop_lag_is_exported_and_sees_a_stall(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream
) -> None:
    gw = await make_gateway(config(fake_openai.url))
    while not value(samples(await scrape(gw)), "finopsd_event_loop_lag_seconds_count"):
        await asyncio.sleep(0.01)  # the watcher's first wake-up
    time.sleep(0.05)  # the test shares the app's loop: this holds it in one piece
    await asyncio.sleep(0.03)  # the late wake-up is recorded
    text = await scrape(gw)
    found = samples(text)
    # the watcher was due within its 10 ms period of the stall's start, so it ran >= 40 ms late
    assert value(found, "finopsd_event_loop_lag_max_seconds") >= 0.04
    assert value(found, "finopsd_event_loop_lag_seconds_bucket", le="0.025") < value(
        found, "finopsd_event_loop_lag_seconds_bucket", le="+Inf")
    assert_promtool_passes(text)
