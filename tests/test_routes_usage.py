"""/api/usage and /usage end to end: traffic through the openai SDK (two teams, two
providers, an upstream error) plus a week of older rows written by the log's own writer;
the answers are compared with sums over the raw rows. Chromium draws the page."""

from __future__ import annotations

import math
import re
import sqlite3
import time
from decimal import Decimal
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient

from finopsd.appkeys import LOGSTORE, RUNTIME
from tests.conftest import GatewayFactory
from tests.fakes import FakeUpstream
from tests.test_browser_logs import ARTIFACTS, browser, open_page  # noqa: F401 - browser is a fixture
from tests.test_governance import ALPHA, BRAVO, ask, governed, key_line
from tests.test_logstore import make_row

pytestmark = pytest.mark.usefixtures("log_backend")  # every test on SQLite and on PostgreSQL

DAY = 86400


@pytest.fixture
async def usage_gw(make_gateway: GatewayFactory, fake_openai: FakeUpstream) -> TestClient:
    keys = (key_line("alpha", ALPHA, team="platform", budgets="[{usd: 0.1, period: month}]")
            + key_line("bravo", BRAVO, team="research"))
    gw = await make_gateway(governed(fake_openai.url, keys, "{platform: {budgets: [{usd: 1, period: total}]},"
                                                           " research: {budgets: [{usd: 0.05, period: day}]}}"))
    for _ in range(3):
        fake_openai.play("openai/text_stream.sse")
        await ask(gw, ALPHA)
    for _ in range(2):
        fake_openai.play("openai/text_stream.sse")
        await ask(gw, BRAVO, "groq/llama-3.3-70b-versatile")
    fake_openai.answer_json({"error": {"message": "bad thing", "type": "invalid_request_error"}}, status=400)
    with pytest.raises(openai.BadRequestError):
        await ask(gw, BRAVO)
    # six days of older traffic, written by the same writer (and so the same trigger)
    store = gw.server.app[LOGSTORE]
    now = time.time()
    for day in range(1, 7):
        for i, (team, key, model, provider) in enumerate([
            ("platform", "alpha", "openai/gpt-5", "openai"), ("research", "bravo", "groq/llama-3.3-70b-versatile", "groq"),
            ("research", "bravo", "openai/gpt-5", "openai"), (None, None, "openai/gpt-5", "openai"),
        ]):
            store.submit(make_row(f"old-{day}-{i}", ts=now - day * DAY + i * 60, team=team, key_name=key,
                                  model=model, provider=provider, cost_usd=0.01 * day * (i + 1),
                                  duration_ms=100.0 * (i + 1), status="error" if i == 3 else "ok",
                                  error_type="upstream_error" if i == 3 else None))  # fmt: skip
    await store.flush()
    return gw


def raw(gw: TestClient, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """``sql`` (``?`` placeholders, SQL both engines read) straight on the log database."""
    storage = gw.server.app[RUNTIME].config.storage
    if storage.url:
        import psycopg

        with psycopg.connect(storage.url) as pg:
            return [tuple(float(v) if isinstance(v, Decimal) else v for v in r)
                    for r in pg.execute(sql.replace("?", "%s"), params).fetchall()]  # type: ignore[arg-type]
    with sqlite3.connect(storage.path) as db:
        return db.execute(sql, params).fetchall()


TOTAL_COST = "coalesce(sum(cost_usd), 0)"


async def get_usage(gw: TestClient, query: str) -> dict[str, Any]:
    resp = await gw.get(f"/api/usage?{query}")
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def test_api_usage_totals_equal_sums_over_the_log(usage_gw: TestClient) -> None:
    body = await get_usage(usage_gw, "range=7d&group_by=team")
    assert body["grain"] == "day" and len(body["buckets"]) == 7 and body["buckets"][0].endswith("T00:00:00Z")
    since = math.floor(time.time() / DAY) * DAY - 6 * DAY
    expected = {(team or "(none)"): (n, cost, errors) for team, n, cost, errors in raw(
        usage_gw, f"select team, count(*), {TOTAL_COST}, sum(case when status = 'error' then 1 else 0 end)"
        " from requests where ts >= ? group by team", since)}
    got = {g["name"]: (g["totals"]["requests"], g["totals"]["cost_usd"], g["totals"]["errors"]) for g in body["groups"]}
    assert got.keys() == expected.keys() == {"platform", "research", "(none)"}
    for team, (n, cost, errors) in expected.items():
        assert got[team][0] == n and got[team][1] == pytest.approx(cost, abs=1e-6) and got[team][2] == errors
    # each group's series adds up to its total, and the groups to "all"
    for g in body["groups"]:
        assert sum(g["series"]["requests"]) == g["totals"]["requests"]
    assert body["all"]["totals"]["requests"] == sum(e[0] for e in expected.values())
    assert body["all"]["error_types"] == dict(raw(
        usage_gw, "select error_type, count(*) from requests where status = 'error' group by 1 order by 2 desc"))

    # by model for one team, hourly for the last day: only today's SDK traffic and yesterday's tail
    day = await get_usage(usage_gw, "range=24h&group_by=model&team=research&metric=requests,cost_usd")
    assert day["grain"] == "hour" and day["metrics"] == ["requests", "cost_usd"]
    assert set(day["groups"][0]["totals"]) == {"requests", "cost_usd"}
    rows = dict((m, n) for m, n in raw(usage_gw, "select model, count(*) from requests where team = 'research'"
                                       " and ts >= ? group by model", math.floor((time.time() - DAY) / 3600) * 3600))
    assert {g["name"]: g["totals"]["requests"] for g in day["groups"]} == rows

    # the budgets: alpha spent what its three requests cost, research's day budget has a projection
    budgets = {(b["scope"], b["name"], b["period"]): b for b in body["budgets"]}
    assert set(budgets) == {("key", "alpha", "month"), ("team", "platform", "total"), ("team", "research", "day")}
    alpha_cost = raw(usage_gw, f"select {TOTAL_COST} from requests where key_name = 'alpha' and ts > ?",
                     time.time() - 600)[0][0]
    assert budgets[("key", "alpha", "month")]["spent_usd"] == pytest.approx(alpha_cost, abs=1e-6) and alpha_cost > 0
    assert budgets[("team", "platform", "total")]["usd_per_day"] > 0  # the last seven days' average


@pytest.mark.parametrize("query, param", [
    ("range=1y", "range"), ("range=custom", "range"), ("range=7d&since=2026-01-01", "range"),
    ("range=custom&since=2020-01-01&grain=hour", "range"), ("group_by=session", "group_by"),
    ("metric=cost", "metric"), ("range=custom&since=yesterday", "since"), ("team=" + "x" * 300, "team"),
])  # fmt: skip
async def test_bad_queries_are_400_naming_the_parameter(usage_gw: TestClient, query: str, param: str) -> None:
    resp = await usage_gw.get(f"/api/usage?{query}")
    assert resp.status == 400
    assert (await resp.json())["error"]["param"] == param
    page = await usage_gw.get(f"/usage?{query}")
    assert page.status == 400 and 'role="alert"' in await page.text()


async def test_usage_is_in_openapi_and_every_page_links_to_it(usage_gw: TestClient) -> None:
    doc = await (await usage_gw.get("/openapi.json")).json()
    assert doc["paths"]["/api/usage"]["get"]["security"] == [{"bearer": []}]
    for path in ("/logs", "/logs?view=requests", "/keys", "/usage"):
        assert '<a href="/usage">usage</a>' in await (await usage_gw.get(path)).text()


def dollars(text: str) -> float:
    return float(re.sub(r"[$,]", "", text))


async def test_usage_page_in_chromium_shows_the_totals_of_the_api_and_the_log(
    usage_gw: TestClient, browser: Any  # noqa: F811 - the fixture
) -> None:
    page, problems = await open_page(browser)
    for query, shot in (("range=7d&group_by=team", "usage-7d-team"), ("range=30d&group_by=model", "usage-30d-model"),
                        ("range=24h&group_by=provider", "usage-24h-provider")):
        api = await get_usage(usage_gw, query)
        await page.goto(str(usage_gw.make_url(f"/usage?{query}")))
        await page.locator("svg.chart[data-chart=cost]").wait_for()
        # the stacked bars add up to the API's total cost, and so do the total line's points
        bars = await page.eval_on_selector_all(
            "svg[data-chart=cost] rect[data-value]", "els => els.map(e => Number(e.dataset.value))")
        points = await page.eval_on_selector_all(
            "svg[data-chart=cost] circle[data-total]", "els => els.map(e => Number(e.dataset.total))")
        total = api["all"]["totals"]["cost_usd"]
        assert sum(bars) == pytest.approx(total, abs=1e-6) and sum(points) == pytest.approx(total, abs=1e-6)
        assert len(points) == len(api["buckets"])
        # the cost table's footer shows the same total, in dollars; each row links to /logs with its filter
        foot = await page.inner_text("table[data-table=cost] tfoot td[data-metric=cost_usd], "
                                     "table[data-table=cost] tfoot th[data-metric=cost_usd]")
        assert dollars(foot) == pytest.approx(total, abs=0.005)
        links = await page.eval_on_selector_all("table[data-table=cost] tbody a", "els => els.map(e => e.href)")
        named = [g["name"] for g in api["groups"] if not g["name"].startswith("(")]
        assert len(links) == len(named[:10]) and all("/logs?view=requests" in link for link in links)
        # requests bars add up as well; the axes carry units; hovering shows a value
        reqs = await page.eval_on_selector_all(
            "svg[data-chart=requests] rect[data-value]", "els => els.map(e => Number(e.dataset.value))")
        assert sum(reqs) == api["all"]["totals"]["requests"]
        assert "USD" in await page.eval_on_selector("svg[data-chart=cost]", "e => e.textContent")
        assert "milliseconds" in await page.eval_on_selector("svg[data-chart=latency]", "e => e.textContent")
        title = await page.eval_on_selector("svg[data-chart=cost] rect[data-value] title", "e => e.textContent")
        assert re.search(r": \$[0-9.,]+$", title)
        await page.screenshot(path=str(ARTIFACTS / f"{shot}.png"), full_page=True)

    # against the raw log: the 30-day cost equals the sum over every row
    thirty = await get_usage(usage_gw, "range=30d")
    assert thirty["all"]["totals"]["cost_usd"] == pytest.approx(raw(usage_gw, f"select {TOTAL_COST} from requests")[0][0])
    # the burn-down table names every budget
    await page.goto(str(usage_gw.make_url("/usage")))
    assert await page.locator("table.budgets tbody tr[data-budget]").count() == 3
    assert problems == []  # no CSP refusal, no script error
