"""x-finops-user / -project / -tags: validated, stored on the row, filtered, grouped, pinned by a key.

Through the real OpenAI SDK (its ``default_headers``, as an agent profile's custom headers
send them), the gateway's /api/logs and /logs, and the ``finopsd usage`` command.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient
from click.testing import CliRunner

from finopsd import config as cfg
from finopsd.appkeys import LOGSTORE
from finopsd.cli import main
from finopsd.yamldoc import ConfigError
from tests.conftest import GatewayFactory
from tests.fakes import FakeUpstream
from tests.test_governance import PRICING, key_line

TEAM_KEY, PINNED_KEY = "sk-fo-team-00000000000000001", "sk-fo-pinned-000000000000002"
MSGS: list[Any] = [{"role": "user", "content": "Say hello."}]


def config(fake_url: str, db: Path) -> str:
    return f"""
storage: {{path: {db}}}
providers:
  openai: {{base_url: {fake_url}, keys: [{{value: sk-upstream}}], models: [gpt-5]}}
auth: {{required: true}}
teams: {{web: {{}}}}
virtual_keys:
{key_line("team", TEAM_KEY, team="web")}
{key_line("ci", PINNED_KEY, team="web", user="ci-bot", project="release")}
{PRICING}
"""


@pytest.fixture
async def gw(make_gateway: GatewayFactory, fake_openai: FakeUpstream, tmp_path: Path) -> TestClient:
    fake_openai.play("openai/text_stream.sse")
    return await make_gateway(config(fake_openai.url, tmp_path / "gw.db"))


async def ask(gw: TestClient, key: str, **headers: str) -> None:
    async with openai.AsyncOpenAI(base_url=str(gw.make_url("/openai")), api_key=key, max_retries=0,
                                  default_headers=headers) as client:
        chunks = await client.chat.completions.create(model="openai/gpt-5", messages=MSGS, stream=True)
        assert [c async for c in chunks]


async def items(gw: TestClient, **query: str) -> list[dict[str, Any]]:
    await gw.server.app[LOGSTORE].flush()
    resp = await gw.get("/api/logs", params=query)
    assert resp.status == 200, await resp.text()
    return list((await resp.json())["items"])


async def test_headers_land_on_rows_and_filter_them(gw: TestClient) -> None:
    await ask(gw, TEAM_KEY, **{"x-finops-user": "alice@example.com", "x-finops-project": "web/checkout",
                               "x-finops-tags": "refactor, urgent,refactor"})
    await ask(gw, TEAM_KEY, **{"x-finops-user": "bob", "x-finops-tags": "docs"})
    await ask(gw, TEAM_KEY)
    newest_first = await items(gw)
    assert [(i["user"], i["project"], i["tags"]) for i in newest_first] == [
        (None, None, []), ("bob", None, ["docs"]), ("alice@example.com", "web/checkout", ["refactor", "urgent"])]
    assert [i["user"] for i in await items(gw, user="alice@example.com")] == ["alice@example.com"]
    assert [i["user"] for i in await items(gw, project="web/checkout")] == ["alice@example.com"]
    assert [i["user"] for i in await items(gw, tag="docs")] == ["bob"]
    assert await items(gw, tag="refac") == []  # a whole tag, not a substring
    page = await gw.get("/logs", params={"view": "requests", "user": "bob"})
    html = await page.text()
    assert page.status == 200 and "bob" in html and 'name="user" value="bob"' in html
    assert "alice@example.com" not in html
    sessions = await gw.get("/api/sessions", params={"user": "bob"})
    assert sessions.status == 400  # a request-level filter: refused on sessions, not ignored


async def test_a_keys_pins_win_over_the_headers(gw: TestClient) -> None:
    await ask(gw, PINNED_KEY, **{"x-finops-user": "mallory", "x-finops-project": "other", "x-finops-tags": "nightly"})
    (row,) = await items(gw)
    assert (row["key"], row["user"], row["project"], row["tags"]) == ("ci", "ci-bot", "release", ["nightly"])


@pytest.mark.parametrize(("header", "value", "says"), [
    ("x-finops-user", "a" * 129, "longer than 128"),
    ("x-finops-user", "-leading-dash", "starting with a letter"),
    ("x-finops-project", "drop table; --", "may hold letters"),
    ("x-finops-project", '"quoted"', "may hold letters"),
    ("x-finops-tags", ",".join(f"t{i}" for i in range(17)), "at most 16 tags"),
    ("x-finops-tags", "ok," + "x" * 65, "longer than 64"),
])
async def test_bad_values_are_a_clear_400(gw: TestClient, fake_openai: FakeUpstream, header: str, value: str,
                                          says: str) -> None:
    async with openai.AsyncOpenAI(base_url=str(gw.make_url("/openai")), api_key=TEAM_KEY, max_retries=0,
                                  default_headers={header: value}) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(model="openai/gpt-5", messages=MSGS)
    error = info.value.body
    assert error["param"] == header and error["code"] == "invalid_attribution" and says in error["message"]
    assert fake_openai.requests == []  # refused before the upstream


async def test_usage_groups_by_user_project_and_tag(gw: TestClient, tmp_path: Path) -> None:
    await ask(gw, TEAM_KEY, **{"x-finops-user": "alice", "x-finops-tags": "a,b"})
    await ask(gw, TEAM_KEY, **{"x-finops-user": "alice", "x-finops-project": "p1", "x-finops-tags": "b"})
    await ask(gw, PINNED_KEY)
    await gw.server.app[LOGSTORE].flush()
    cli_config = tmp_path / "cli.yaml"
    cli_config.write_text(f"storage: {{path: {tmp_path / 'gw.db'}}}\n")

    async def usage(by: str) -> dict[Any, int]:
        result = await asyncio.to_thread(CliRunner().invoke, main, [
            "usage", "--by", by, "--since", "2020-01-01", "--json", "--config", str(cli_config)])
        assert result.exit_code == 0, result.output
        return {r[by]: r["requests"] for r in json.loads(result.stdout)["rows"]}

    assert await usage("user") == {"alice": 2, "ci-bot": 1}
    assert await usage("project") == {None: 1, "p1": 1, "release": 1}
    assert await usage("tag") == {"a": 1, "b": 2, None: 1}  # a request counts under each of its tags
    text = await asyncio.to_thread(CliRunner().invoke, main, [
        "usage", "--by", "user", "--since", "2020-01-01", "--config", str(cli_config)])
    assert "alice" in text.output and "ci-bot" in text.output


def test_a_pinned_value_is_validated_in_the_config(tmp_path: Path) -> None:
    text = config("http://127.0.0.1:9/v1", tmp_path / "x.db").replace('user: ci-bot', 'user: "bad,name"')
    with pytest.raises(ConfigError, match="user"):
        cfg.parse(text, env={})
