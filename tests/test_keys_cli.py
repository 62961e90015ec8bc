"""``finopsd keys new|edit|rotate|disable|delete|list``: through a running gateway, else on the database file."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from finopsd.cli import main
from tests.conftest import GatewayFactory, on_backend
from tests.logrows import stored_bytes
from tests.fakes import FakeUpstream
from tests.test_governance import ALPHA, ask, governed, key_line, refused

TOKEN = "adm-cli-token-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def secret_of(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output.split("key (shown once): ")[1].split()[0]


async def test_keys_commands_act_on_a_running_gateway_through_the_admin_api(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    fake_openai.play("openai/text_stream.sse")
    gw = await make_gateway(governed(fake_openai.url, key_line("file-key", ALPHA),
                                     extra=f"server: {{admin_token: {TOKEN}}}\n"))
    url = str(gw.make_url("")).rstrip("/")

    def cli(*args: str, token: str = TOKEN) -> Result:
        return CliRunner().invoke(main, ["keys", *args, "--url", url], env={"FINOPSD_ADMIN_TOKEN": token})

    refused_cli = await asyncio.to_thread(cli, "new", "--name", "x", token="wrong")
    assert refused_cli.exit_code != 0 and "401" in refused_cli.output
    made = await asyncio.to_thread(cli, "new", "--name", "cli-key", "--budget", "0.01/day", "--model", "openai/*")
    secret = secret_of(made)
    assert "via the api" in made.output and f"Base URL: {url}/openai" in made.output
    assert "Model:    openai/gpt-5" in made.output
    await ask(gw, secret)
    assert (await refused(gw, secret)).status_code == 402
    edited = await asyncio.to_thread(cli, "edit", "cli-key", "--budget", "5/day", "--owner", "ops")
    assert edited.exit_code == 0 and "version 2" in edited.output, edited.output
    await ask(gw, secret)
    new = secret_of(await asyncio.to_thread(cli, "rotate", "cli-key"))
    assert (await refused(gw, secret)).status_code == 401
    await ask(gw, new)
    assert (await asyncio.to_thread(cli, "disable", "cli-key")).exit_code == 0
    assert (await refused(gw, new)).body["code"] == "key_disabled"
    assert (await asyncio.to_thread(cli, "delete", "cli-key")).exit_code == 0
    assert (await refused(gw, new)).status_code == 401
    audit = (await (await gw.get("/api/audit", headers={"Authorization": f"Bearer {TOKEN}"})).json())["items"]
    assert [a["action"] for a in audit] == ["delete", "disable", "rotate", "edit", "create"]
    assert {a["actor"] for a in audit} == {"cli (admin token)"}


async def test_keys_commands_write_the_database_when_no_gateway_runs(
    log_backend: dict[str, Any], make_gateway: GatewayFactory, fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    fake_openai.play("openai/text_stream.sse")
    db = tmp_path / "offline.db"
    config = tmp_path / "config.yaml"
    yaml_text = on_backend(governed(fake_openai.url, key_line("file-key", ALPHA),
                                    extra=f"storage: {{path: {db}}}\nserver: {{port: {free_port()}}}\n"), log_backend)
    config.write_text(yaml_text)

    def cli(*args: str) -> Result:
        return CliRunner().invoke(main, ["keys", *args, "--config", str(config)])

    made = await asyncio.to_thread(cli, "new", "--name", "offline", "--budget", "5/month", "--rpm", "100")
    secret = secret_of(made)
    assert "via the database" in made.output
    edited = await asyncio.to_thread(cli, "edit", "offline", "--description", "made with no gateway")
    assert edited.exit_code == 0, edited.output
    assert (await asyncio.to_thread(cli, "new", "--name", "file-key")).exit_code != 0  # the file's name
    listed = await asyncio.to_thread(CliRunner().invoke, main, ["keys", "list", "--json", "--config", str(config)])
    assert [k["name"] for k in json.loads(listed.output)["keys"]] == ["file-key", "offline"]
    gw = await make_gateway(yaml_text)  # a gateway started later loads the key
    await ask(gw, secret)
    view = await (await gw.get("/api/keys/offline")).json()
    assert view["description"] == "made with no gateway" and view["rate_limit"] == {"requests_per_minute": 100}
    audit = (await (await gw.get("/api/audit")).json())["items"]
    assert [(a["action"], a["actor"], a["client_ip"]) for a in audit] == [("edit", "cli", None), ("create", "cli", None)]
    assert secret.encode() not in stored_bytes(gw)


def test_a_bad_budget_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["keys", "new", "--name", "x", "--budget", "lots"])
    assert result.exit_code == 2 and "USD/PERIOD" in result.output and "shown once" not in result.output
