"""Budget and error-rate alerts end to end: traffic through the openai SDK spends a key's
budget; a local webhook receiver (a real aiohttp server) gets exactly one POST per
threshold and target, none again after a restart in the same window; a failing receiver
is retried while the gateway keeps serving; the target URL (a secret) shows nowhere."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from finopsd import config as cfg
from finopsd.appkeys import LOGSTORE
from tests.conftest import GatewayFactory
from tests.fakes import FakeUpstream
from tests.test_governance import ALPHA, ask, governed, key_line

pytestmark = pytest.mark.usefixtures("log_backend")  # every test on SQLite and on PostgreSQL

SECRET_PATH = "/hooks/T000-secret-token-XYZ"


class Receiver:
    """A webhook target: records each POST; answers 500 to the first ``failures`` of them."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, Any]] = []
        self.failures = 0
        self.app = web.Application()
        self.app.router.add_post("/{tail:.*}", self.handle)
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.failures > 0:
            self.failures -= 1
            return web.Response(status=500, text="down")
        self.posts.append((request.path, body))
        return web.Response(text="ok")

    async def wait_for(self, count: int) -> None:
        for _ in range(400):  # 20 s at most: the watcher checks every 50 ms
            if len(self.posts) >= count:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{len(self.posts)} posts, wanted {count}: {self.posts}")


@pytest.fixture
async def receiver(aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch) -> Receiver:
    r = Receiver()
    r.url = str((await aiohttp_server(r.app)).make_url(""))
    monkeypatch.setenv("HOOK_URL", r.url.rstrip("/") + SECRET_PATH)
    return r


def alerting(fake: FakeUpstream, receiver: Receiver, extra: str = "") -> str:
    keys = key_line("alpha", ALPHA, team="platform", budgets="[{usd: 0.03, period: day}]")
    tool = receiver.url.rstrip("/") + "/json"
    alerts = ("alerts:\n  targets:\n    - {name: chat, url: env:HOOK_URL, format: slack}\n"
              f"    - {{name: tool, url: '{tool}', format: json}}\n"
              f"  check_interval_s: 0.05\n  retry_base_s: 0.05\n{extra}")
    return governed(fake.url, keys, "{platform: {}}", extra=alerts)


async def spend(gw: TestClient, fake: FakeUpstream) -> None:
    fake.play("openai/text_stream.sse")
    await ask(gw, ALPHA)  # $0.018 of the $0.03 a day


def thresholds(receiver: Receiver) -> list[tuple[str, float]]:
    return sorted((path, body["threshold"]) for path, body in receiver.posts if path == "/json")


async def test_one_post_per_threshold_and_target_and_none_after_a_restart(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    gw = await make_gateway(alerting(fake_openai, receiver))
    await spend(gw, fake_openai)  # 60%: the 50% threshold
    await receiver.wait_for(2)
    assert thresholds(receiver) == [("/json", 50.0)]
    slack = [body for path, body in receiver.posts if path == SECRET_PATH]
    assert len(slack) == 1 and set(slack[0]) == {"text"} and "key alpha has spent 60% of its day budget" in slack[0]["text"]
    await spend(gw, fake_openai)  # 120%: 80 and 100 at once
    await receiver.wait_for(6)
    await asyncio.sleep(0.5)  # ten more checks: nothing fires twice
    assert thresholds(receiver) == [("/json", 50.0), ("/json", 80.0), ("/json", 100.0)]
    assert len(receiver.posts) == 6
    body = dict(receiver.posts[-1][1]) if receiver.posts[-1][0] == "/json" else dict(receiver.posts[-2][1])
    assert body["source"] == "finopsd" and body["kind"] == "budget" and body["subject"] == "key alpha day"

    # shown on /usage and in /api/usage, delivered; the secret URL nowhere
    api = await (await gw.get("/api/usage")).json()
    assert sorted(a["threshold"] for a in api["alerts"]) == [50.0, 80.0, 100.0]
    assert {a["status"] for a in api["alerts"]} == {"sent"}
    page = await (await gw.get("/usage")).text()
    assert page.count("<tr data-alert=") == 3
    await gw.close()

    # a restart in the same window: spend is rebuilt from the log, the claims are in it too
    gw = await make_gateway(alerting(fake_openai, receiver))
    await gw.get("/healthz")
    await asyncio.sleep(0.5)
    assert len(receiver.posts) == 6
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("finopsd"))
    for text in (page, str(api), ours):  # (the receiver's own access log does show its path)
        assert "secret-token" not in text


async def test_a_failing_target_is_retried_and_the_gateway_keeps_serving(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream, receiver: Receiver
) -> None:
    receiver.failures = 3
    gw = await make_gateway(alerting(fake_openai, receiver))
    await spend(gw, fake_openai)
    fake_openai.play("openai/text_stream.sse")
    chunks = await ask(gw, ALPHA)  # served while the target was failing
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    await receiver.wait_for(6)
    await asyncio.sleep(0.3)
    assert len(receiver.posts) == 6  # each threshold and target once, after the retries
    store = gw.server.app[LOGSTORE]
    alerts = await store.alerts()
    assert {a["status"] for a in alerts} == {"sent"} and sum(a["attempts"] for a in alerts) == 6 + 3


async def test_a_provider_error_rate_fires_once_per_window(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream, receiver: Receiver
) -> None:
    gw = await make_gateway(alerting(fake_openai, receiver, "  provider_error_rate: 0.5\n  min_requests: 2\n"
                                                           "  budget_thresholds: [1000]\n"))
    for _ in range(3):
        fake_openai.answer_json({"error": {"message": "overloaded", "type": "server_error"}}, status=400)
        with pytest.raises(openai.BadRequestError):
            await ask(gw, ALPHA)
    await receiver.wait_for(2)
    await asyncio.sleep(0.3)
    assert len(receiver.posts) == 2
    body = next(b for path, b in receiver.posts if path == "/json")
    assert body["kind"] == "provider_error_rate" and body["subject"] == "openai" and body["threshold"] == 0.5
    assert "failed in the last 5 minutes" in body["message"]


@pytest.mark.parametrize("section, where", [
    ("{targets: [{url: ftp://x}]}", "alerts.targets[0].url"),
    ("{targets: [{url: 'http://x', format: discord}]}", "alerts.targets[0].format"),
    ("{budget_thresholds: [0]}", "alerts.budget_thresholds[0]"),
    ("{provider_error_rate: 2}", "alerts.provider_error_rate"),
    ("{targets: [{url: env:NOT_SET_ANYWHERE}]}", "alerts.targets[0].url"),
])  # fmt: skip
def test_bad_alert_config_names_the_key(section: str, where: str) -> None:
    with pytest.raises(cfg.ConfigError) as info:
        cfg.parse(f"alerts: {section}\n", env={})
    assert where in str(info.value)
