"""``/keys``, ``/api/keys`` and the CLI's ``keys`` and ``usage`` commands."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from click.testing import CliRunner

from finopsd import config as cfg
from finopsd.cli import main
from finopsd.governance import find_key, index_keys
from finopsd.log.store import LogStore
from finopsd.spend import iso, window_end, window_start
from tests.conftest import GatewayFactory
from tests.fakes import FakeUpstream
from tests.test_governance import ALPHA, BRAVO, ask, governed, key_line

TEAMS = "{platform: {budgets: [{usd: 0.05, period: day}], rate_limit: {requests_per_minute: 600}}}"


async def keys_gateway(make_gateway: GatewayFactory, fake_openai: FakeUpstream, extra: str = "") -> TestClient:
    fake_openai.play("openai/text_stream.sse")
    keys = (key_line("alpha", ALPHA, team="platform", budgets="[{usd: 0.1, period: week}, {usd: 0.02, period: day}]",
                     rate_limit="{requests_per_minute: 60, tokens_per_minute: 200000}")
            + key_line('"<b>bravo</b>"', BRAVO, models='["groq/*"]', expires="2099-01-01"))
    return await make_gateway(governed(fake_openai.url, keys, TEAMS, extra=extra))


async def test_api_keys_shows_spend_per_budget_percent_reset_and_rate(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream
) -> None:
    gw = await keys_gateway(make_gateway, fake_openai)
    await ask(gw, ALPHA)
    body = await (await gw.get("/api/keys")).json()
    alpha, bravo = body["keys"]
    assert (alpha["name"], alpha["team"], alpha["status"]) == ("alpha", "platform", "active")
    now = time.time()
    assert alpha["budgets"] == [
        {"period": "week", "usd": 0.1, "spent_usd": 0.018, "percent": 18.0,
         "resets_at": iso(window_end("week", window_start("week", now)))},
        {"period": "day", "usd": 0.02, "spent_usd": 0.018, "percent": 90.0,
         "resets_at": iso(window_end("day", window_start("day", now)))},
    ]  # fmt: skip
    assert alpha["rate"] == {"requests_per_minute": 60, "tokens_per_minute": 200000,
                             "requests_last_minute": 1, "tokens_last_minute": 15}
    assert bravo["models"] == ["groq/*"] and bravo["expires"] == "2099-01-01T00:00:00Z"
    (team,) = body["teams"]
    assert team["keys"] == ["alpha"] and team["budgets"][0]["spent_usd"] == 0.018
    assert team["rate"]["requests_last_minute"] == 1
    text = json.dumps(body)
    assert ALPHA not in text and hashlib.sha256(ALPHA.encode()).hexdigest() not in text


async def test_keys_page_draws_a_bar_per_budget_and_escapes_names(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream
) -> None:
    gw = await keys_gateway(make_gateway, fake_openai)
    await ask(gw, ALPHA)
    resp = await gw.get("/keys")
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
    page = await resp.text()
    assert page.count("<meter") == 3  # alpha's two budgets and the team's
    assert 'value="90"' in page and "$0.018 of $0.02 / day" in page
    assert "&lt;b&gt;bravo&lt;/b&gt;" in page and "<b>bravo</b>" not in page
    assert "1 / 60 req/min" in page


async def test_keys_pages_need_the_admin_token_when_set(make_gateway: GatewayFactory, fake_openai: FakeUpstream) -> None:
    gw = await keys_gateway(make_gateway, fake_openai, extra="server: {admin_token: adm-secret-1}\n")
    resp = await gw.get("/api/keys")
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "admin_token_required"
    # a virtual key is not an admin token
    assert (await gw.get("/api/keys", headers={"Authorization": f"Bearer {ALPHA}"})).status == 401
    assert (await gw.get("/api/keys", headers={"Authorization": "Bearer adm-secret-1"})).status == 200
    resp = await gw.get("/keys", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/login?next=/keys"


async def test_api_keys_refuses_cross_site_fetches(make_gateway: GatewayFactory, fake_openai: FakeUpstream) -> None:
    gw = await keys_gateway(make_gateway, fake_openai)
    resp = await gw.get("/api/keys", headers={"Sec-Fetch-Site": "cross-site"})
    assert resp.status == 403


# --- CLI --------------------------------------------------------------------------------


def test_keys_new_prints_the_key_once_and_yaml_that_loads(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["keys", "new", "--name", "platform-roo", "--team", "platform", "--yaml"])
    assert result.exit_code == 0, result.output
    key = result.output.split("key (shown once): ")[1].split()[0]
    assert result.output.count(key) == 1
    digest = hashlib.sha256(key.encode()).hexdigest()
    snippet = result.output.split("virtual_keys:\n")[1].split("\n\n")[0]
    config = cfg.parse(f"teams: {{platform: {{}}}}\nvirtual_keys:\n{snippet}\n", env={})
    assert config.virtual_keys[0].key_sha256 == digest and config.virtual_keys[0].team == "platform"
    assert find_key(index_keys(config.virtual_keys), key, 0) is config.virtual_keys[0]
    # the env form is printed too; it hashes the same key
    assert "key: env:PLATFORM_ROO_KEY" in result.output
    env_form = cfg.parse("virtual_keys: [{name: r, key: env:PLATFORM_ROO_KEY}]", env={"PLATFORM_ROO_KEY": key})
    assert env_form.virtual_keys[0].key_sha256 == digest


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "gov.yaml"
    keys = (key_line("alpha", ALPHA, team="platform", budgets="[{usd: 1, period: day}]")
            + key_line("bravo", BRAVO, team="platform"))
    path.write_text(f"storage: {{path: {tmp_path / 'log.db'}}}\nproviders: {{openai: {{keys: [{{value: sk-x}}]}}}}\n"
                    f"teams: {{platform: {{budgets: [{{usd: 4, period: month}}]}}}}\nvirtual_keys:\n{keys}")
    return path


def seed(db: Path, rows: list[dict[str, Any]]) -> None:
    async def run() -> None:
        store = await LogStore.open(str(db))
        for i, row in enumerate(rows):
            store.submit({"id": f"r{i}", "ts": time.time() - i, "status": "ok", "stream": True, **row})
        await store.close()

    asyncio.run(run())


SEED = [
    {"key_name": "alpha", "team": "platform", "provider": "openai", "model": "openai/gpt-5", "prompt_tokens": 100,
     "completion_tokens": 10, "cost_usd": 0.25},
    {"key_name": "alpha", "team": "platform", "provider": "openai", "model": "openai/gpt-5", "prompt_tokens": 100,
     "completion_tokens": 10, "cost_usd": 0.25, "cost_flags": "estimated"},
    {"key_name": "bravo", "team": "platform", "provider": "vllm", "model": "vllm/qwen3-coder", "prompt_tokens": 50,
     "completion_tokens": 5, "cost_usd": 0.0, "cost_flags": "unpriced"},
]  # fmt: skip


def test_keys_list_reads_spend_from_the_log(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    seed(tmp_path / "log.db", SEED)
    result = CliRunner().invoke(main, ["keys", "list", "--config", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("key alpha") and "$0.5000 / $1.00 day  50.0%  resets " in lines[0]
    assert "rate: 2 req/min, 220 tok/min" in lines[1]  # both rows are under a minute old
    assert any(line.startswith("team platform") and "$0.5000 / $4.00 month  12.5%" in line for line in lines)
    data = json.loads(CliRunner().invoke(main, ["keys", "list", "--config", str(path), "--json"]).output)
    assert data["keys"][1]["budgets"] == [] and data["keys"][1]["rate"]["requests_last_minute"] == 1


def test_keys_list_without_a_log_shows_untouched_budgets(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["keys", "list", "--config", str(write_config(tmp_path))])
    assert result.exit_code == 0 and "$0.0000 / $1.00 day  0.0%" in result.output
    assert not (tmp_path / "log.db").exists()


def test_usage_groups_by_key_team_model_and_provider(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    seed(tmp_path / "log.db", SEED)
    run = CliRunner().invoke
    by_key = json.loads(run(main, ["usage", "--config", str(path), "--json"]).output)
    assert by_key["by"] == "key"
    assert [(r["key"], r["requests"], r["cost_usd"], r["estimated"], r["unpriced"]) for r in by_key["rows"]] == [
        ("alpha", 2, 0.5, 1, 0), ("bravo", 1, 0.0, 0, 1)]
    by_team = json.loads(run(main, ["usage", "--config", str(path), "--by", "team", "--json"]).output)
    assert [(r["team"], r["requests"], r["prompt_tokens"]) for r in by_team["rows"]] == [("platform", 3, 250)]
    by_model = run(main, ["usage", "--config", str(path), "--by", "model", "--csv"]).output
    table = list(csv.reader(io.StringIO(by_model)))
    assert table[0][:2] == ["model", "requests"] and table[1][:2] == ["openai/gpt-5", "2"]
    text = run(main, ["usage", "--config", str(path), "--by", "provider"]).output
    assert "openai" in text and "1 unpriced" in text and text.splitlines()[-1].startswith("total")
    future = run(main, ["usage", "--config", str(path), "--since", "2999-01-01", "--json"]).output
    assert json.loads(future)["rows"] == []
    bad = run(main, ["usage", "--config", str(path), "--since", "last tuesday"])
    assert bad.exit_code == 2 and "--since" in bad.output
