"""Keys and teams made through the admin API: live at once, kept across restarts and SIGHUP, audited."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from finopsd import config as cfg
from finopsd.app import build_app
from finopsd.appkeys import RUNTIME
from finopsd.server import reload
from finopsd.yamldoc import ConfigError
from finopsd.web.keyforms import PAGE_SIZE
from tests.conftest import GatewayFactory, gateway_yaml
from tests.fakes import FakeUpstream
from tests.test_governance import ALPHA, BRAVO, COST, PRICING, ask, governed, key_line, refused, rows, spent

OPEN = f"auth: {{required: true}}\n{PRICING}"  # no key in the file: every key comes from the API


async def new_key(gw: TestClient, **body: Any) -> tuple[str, dict[str, Any]]:
    resp = await gw.post("/api/keys", json=body)
    answer = await resp.json()
    assert resp.status == 201, answer
    assert resp.headers["ETag"] == '"v1"'
    return answer["secret"], answer


async def test_a_key_made_through_the_api_is_live_at_once_and_limited(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream
) -> None:
    fake_openai.play("openai/text_stream.sse")
    gw = await make_gateway(gateway_yaml(fake_openai.url, OPEN))
    secret, answer = await new_key(gw, name="roo-team", models=["openai/*"], owner="ana", description="Roo Code",
                                   rate_limit={"requests_per_minute": 2}, budgets=[{"usd": 1, "period": "day"}])
    assert secret.startswith("sk-fo-") and answer["key"]["source"] == "dashboard"
    assert answer["roo_code"] == {"provider": "OpenAI Compatible", "base_url": str(gw.make_url("/openai")),
                                  "api_key": secret, "model": "openai/gpt-5"}
    assert await ask(gw, secret)
    assert await ask(gw, secret)
    err = await refused(gw, secret)
    assert err.status_code == 429 and "2 requests per minute" in err.body["message"]
    assert (await refused(gw, secret, model="groq/llama-3.3-70b-versatile")).status_code in (403, 429)

    capped, _ = await new_key(gw, name="capped", budgets=[{"usd": 0.01, "period": "day"}])
    assert await ask(gw, capped)  # $0.018 spent: past the budget
    err = await refused(gw, capped)
    assert err.status_code == 402 and "$0.01 day budget" in err.body["message"]
    view = await (await gw.get("/api/keys/capped")).json()
    assert view["version"] == 1 and view["usage"]["budgets"][0]["spent_usd"] == pytest.approx(COST)
    resp = await gw.patch("/api/keys/capped", json={"budgets": [{"usd": 5, "period": "day"}]},
                          headers={"If-Match": '"v1"'})
    assert resp.status == 200 and resp.headers["ETag"] == '"v2"'
    assert await ask(gw, capped)  # the next request sees the new budget
    stale = await gw.patch("/api/keys/capped", json={"owner": "bo"}, headers={"If-Match": '"v1"'})
    assert stale.status == 409 and "changed since version 1" in (await stale.json())["error"]["message"]


async def test_rotate_keeps_name_and_spend_and_delete_revokes_but_keeps_rows(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream
) -> None:
    fake_openai.play("openai/text_stream.sse")
    gw = await make_gateway(governed(fake_openai.url, key_line("file-key", ALPHA)))
    old, _ = await new_key(gw, name="k", budgets=[{"usd": 5, "period": "month"}])
    await ask(gw, old)
    resp = await gw.post("/api/keys/k/rotate")
    new = (await resp.json())["secret"]
    assert resp.status == 200 and new != old
    assert (await refused(gw, old)).status_code == 401
    await ask(gw, new)
    assert spent(gw, "key", "k", "month") == pytest.approx(2 * COST)
    graced = (await (await gw.post("/api/keys/k/rotate", json={"grace_seconds": 600})).json())["secret"]
    await ask(gw, new)  # the previous secret still works during the grace period
    await ask(gw, graced)
    assert (await gw.delete("/api/keys/k")).status == 200
    assert (await refused(gw, graced)).status_code == 401
    assert (await gw.get("/api/keys/k")).status == 404
    assert sum(1 for r in await rows(gw) if r["key_name"] == "k") == 4  # still on /logs, under its name
    assert (await ask(gw, ALPHA))  # the file's key is untouched


async def test_dashboard_keys_survive_restart_and_sighup_and_a_clash_is_refused(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_openai.play("openai/text_stream.sse")
    yaml_text = governed(fake_openai.url, key_line("file-key", ALPHA))
    first = await make_gateway(yaml_text)
    secret, _ = await new_key(first, name="dash", budgets=[{"usd": 1, "period": "day"}])
    await ask(first, secret)
    await first.close()
    second = await make_gateway(yaml_text)
    await ask(second, secret)
    assert spent(second, "key", "dash", "day") == pytest.approx(2 * COST)
    path = tmp_path / "config.yaml"
    path.write_text(governed(fake_openai.url, key_line("file-key", ALPHA) + key_line("b", BRAVO)))
    reload(second.server.app, lambda: cfg.load(path))
    await ask(second, secret)  # a reload never drops the dashboard's keys
    await ask(second, BRAVO)
    caplog.set_level(logging.ERROR, logger="finopsd.server")
    clash = governed(fake_openai.url, key_line("file-key", ALPHA) + key_line("dash", "sk-fo-other-0000000009"))
    before = second.server.app[RUNTIME].config
    path.write_text(clash)
    reload(second.server.app, lambda: cfg.load(path))
    assert second.server.app[RUNTIME].config is before and "key 'dash' defined both in" in caplog.text
    audit = (await (await second.get("/api/audit")).json())["items"]
    assert [a["action"] for a in audit] == ["reload", "create"] and audit[0]["actor"] == "config reload"
    await second.close()
    runner = web.AppRunner(build_app(cfg.load(path)))
    with pytest.raises(ConfigError, match=r"key 'dash' defined both in .*config.yaml and in the database"):
        await runner.setup()  # the key store opens first: nothing else started, nothing to clean up


async def test_validation_names_the_field_and_config_entries_are_read_only(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream
) -> None:
    gw = await make_gateway(governed(fake_openai.url, key_line("file-key", ALPHA, team="t"), "{t: {}}"))
    for body, param in (({"name": "x", "budgets": [{"usd": -1, "period": "day"}]}, "budgets[0].usd"),
                        ({"name": "x", "rate_limit": {"requests_per_minute": "many"}},
                         "rate_limit.requests_per_minute"),
                        ({"name": "x", "team": "nope"}, "team"), ({"name": "x", "colour": "red"}, "colour"),
                        ({"name": "x", "key_sha256": "0" * 64}, "key_sha256"), ({"budgets": []}, "name")):
        resp = await gw.post("/api/keys", json=body)
        assert resp.status == 422 and (await resp.json())["error"]["param"] == param, body
    assert (await gw.post("/api/keys", data=b"[1")).status == 400
    huge = await gw.post("/api/keys", json={"name": "x", "description": "d" * 20_000})
    assert huge.status == 422 and (await huge.json())["error"]["code"] == "definition_too_large"
    assert (await gw.post("/api/keys", json={"name": "file-key"})).status == 409
    assert (await gw.patch("/api/keys/file-key", json={"enabled": False})).status == 409
    assert (await gw.patch("/api/keys/ghost", json={"enabled": False})).status == 404
    file_view = await (await gw.get("/api/keys/file-key")).json()
    assert file_view["source"] == "config" and file_view["team"] == "t"
    # teams: made, used by a key, not deletable while it has keys
    resp = await gw.post("/api/teams", json={"name": "data", "budgets": [{"usd": 3, "period": "week"}]})
    assert resp.status == 201 and (await resp.json())["version"] == 1
    await new_key(gw, name="d1", team="data")
    assert (await gw.delete("/api/teams/data")).status == 409
    teams = (await (await gw.get("/api/teams")).json())["teams"]
    assert [(t["name"], t["source"]) for t in teams] == [("t", "config"), ("data", "dashboard")]
    assert (await gw.patch("/api/keys/d1", json={"enabled": False})).status == 200
    assert (await gw.delete("/api/keys/d1")).status == 200
    assert (await gw.delete("/api/teams/data")).status == 200
    actions = [(a["action"], a["kind"], a["name"]) for a in (await (await gw.get("/api/audit")).json())["items"]]
    assert actions == [("delete", "team", "data"), ("delete", "key", "d1"), ("disable", "key", "d1"),
                       ("create", "key", "d1"), ("create", "team", "data")]


async def test_no_secret_in_the_database_audit_or_answers_after_create(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_openai.play("openai/text_stream.sse")
    db = tmp_path / "keys.db"
    gw = await make_gateway(governed(fake_openai.url, key_line("file-key", ALPHA),
                                     extra=f"storage: {{path: {db}}}\n"))
    secret, _ = await new_key(gw, name="s", owner="ops")
    await ask(gw, secret)
    rotated = (await (await gw.post("/api/keys/s/rotate")).json())["secret"]
    await gw.patch("/api/keys/s", json={"description": "edited"})
    texts = [await (await gw.get(p)).text() for p in ("/api/keys", "/api/keys/s", "/api/audit", "/keys",
                                                        "/api/logs")]
    await gw.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("keys.db*"))
    for s in (secret, rotated):
        assert s.encode() not in stored and all(s not in t for t in texts) and s not in caplog.text
    assert b"sk-fo-" not in stored


async def test_openapi_describes_the_admin_api(gateway: TestClient) -> None:
    paths = (await (await gateway.get("/openapi.json")).json())["paths"]
    assert set(paths["/api/keys"]) == {"get", "post"} and set(paths["/api/keys/{name}"]) == {"get", "patch", "delete"}
    assert "If-Match" in {p["name"] for p in paths["/api/keys/{name}"]["patch"]["parameters"]}
    assert {"/api/teams", "/api/teams/{name}", "/api/keys/{name}/rotate", "/api/audit"} <= set(paths)
    assert "422" in paths["/api/keys"]["post"]["responses"] and "409" in paths["/api/keys"]["post"]["responses"]


async def test_a_browser_change_needs_the_pages_token_and_its_own_origin(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream
) -> None:
    gw = await make_gateway(governed(fake_openai.url, key_line("file-key", ALPHA),
                                     extra="server: {admin_token: adm-csrf-1}\n"))
    login = await gw.post("/login", data={"token": "adm-csrf-1", "next": "/keys"}, allow_redirects=False)
    cookie = {"Cookie": f"finopsd_admin={login.cookies['finopsd_admin'].value}"}
    page = await (await gw.get("/keys", headers=cookie)).text()
    token = re.search(r'name="csrf-token" content="([0-9a-f]{64})"', page)[1]  # type: ignore[index]
    origin = f"http://{gw.host}:{gw.port}"
    for headers, code in (({}, "csrf_origin"), ({"Origin": origin}, "csrf_token"),
                          ({"Origin": "http://evil.example", "X-CSRF-Token": token}, "csrf_origin"),
                          ({"Origin": origin, "X-CSRF-Token": "0" * 64}, "csrf_token")):
        resp = await gw.post("/api/keys", json={"name": "x"}, headers={**cookie, **headers})
        assert resp.status == 403 and (await resp.json())["error"]["code"] == code, headers
    resp = await gw.post("/api/keys", json={"name": "x"}, headers={**cookie, "Origin": origin, "X-CSRF-Token": token})
    assert resp.status == 201
    audit = (await (await gw.get("/api/audit", headers=cookie)).json())["items"]
    assert audit[0]["actor"] == "admin session" and audit[0]["client_ip"] == "127.0.0.1"


async def test_the_keys_page_pages_and_a_loopback_browser_gets_the_editor(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream
) -> None:
    gw = await make_gateway(governed(fake_openai.url, key_line("file-key", ALPHA)))
    for i in range(PAGE_SIZE + 5):
        assert (await gw.post("/api/keys", json={"name": f"k{i:04d}"})).status == 201
    first = await (await gw.get("/keys")).text()
    second = await (await gw.get("/keys?page=1")).text()
    assert first.count('<tr data-name="k') == PAGE_SIZE - 1 and 'data-name="file-key"' in first
    assert second.count('<tr data-name="k') == 6 and "keys 201–206 of 206" in second
    assert 'id="new-key"' in first and re.search(r'name="csrf-token" content="[0-9a-f]{64}"', first)
    assert "config file (read-only)" in first and "k0000" in first and "k0204" in second


async def _until(check: Any) -> None:
    """Wait for another instance's watch to pick a change up (it polls every 0.5 s)."""
    for _ in range(200):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the other instance never saw the change")


async def test_two_instances_on_one_postgresql_share_every_key_change(
    postgres_url: str, make_gateway: GatewayFactory, fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    fake_openai.play("openai/text_stream.sse")
    on_pg = lambda name: gateway_yaml(fake_openai.url, f"storage: {{path: {tmp_path / name}, url: {postgres_url}}}\n"
                                      + OPEN)  # noqa: E731 - two machines: own files, one database
    a, b = await make_gateway(on_pg("a.db")), await make_gateway(on_pg("b.db"))
    secret, _ = await new_key(a, name="shared", budgets=[{"usd": 5, "period": "day"}])

    async def b_knows() -> bool:
        return (await b.get("/api/keys/shared")).status == 200

    await _until(b_knows)
    assert await ask(b, secret)  # made on A, used on B
    # an edit on B, then one on A naming the version B replaced: refused, even before A's watch ran
    assert (await b.patch("/api/keys/shared", json={"owner": "bo"}, headers={"If-Match": '"v1"'})).status == 200
    stale = await a.patch("/api/keys/shared", json={"owner": "ana"}, headers={"If-Match": '"v1"'})
    assert stale.status == 409 and "changed since version 1" in (await stale.json())["error"]["message"]
    # two edits at once without If-Match, one per instance: neither is lost
    done = await asyncio.gather(a.patch("/api/keys/shared", json={"description": "from A"}),
                                b.patch("/api/keys/shared", json={"rate_limit": {"requests_per_minute": 50}}))
    assert [r.status for r in done] == [200, 200]

    async def a_has_both() -> bool:
        return (await (await a.get("/api/keys/shared")).json())["version"] == 4

    await _until(a_has_both)
    view = await (await a.get("/api/keys/shared")).json()
    assert view["description"] == "from A" and view["owner"] == "bo"
    assert view["rate_limit"] == {"requests_per_minute": 50}
    # the same name made on both at once: one of them gets it
    made = await asyncio.gather(a.post("/api/keys", json={"name": "twice"}), b.post("/api/keys", json={"name": "twice"}))
    assert sorted(r.status for r in made) == [201, 409]
    # rotated on A: on B the old secret stops working and the new one works
    new = (await (await a.post("/api/keys/shared/rotate")).json())["secret"]

    async def b_rotated() -> bool:
        return (await (await b.get("/api/keys/shared")).json())["version"] == 5

    await _until(b_rotated)
    assert (await refused(b, secret)).status_code == 401
    assert await ask(b, new)
    # deleted on A: refused on B
    assert (await a.delete("/api/keys/shared")).status == 200

    async def b_forgot() -> bool:
        return (await b.get("/api/keys/shared")).status == 404

    await _until(b_forgot)
    assert (await refused(b, new)).status_code == 401
    actions = [e["action"] for e in (await (await b.get("/api/audit")).json())["items"]]
    assert actions == ["delete", "rotate", "create", "edit", "edit", "edit", "create"]


async def test_an_instance_does_not_read_every_key_again_for_its_own_change_but_does_for_another_writers(
    log_backend: Any, make_gateway: GatewayFactory, fake_openai: FakeUpstream
) -> None:
    gw = await make_gateway(gateway_yaml(fake_openai.url, OPEN))
    store = gw.server.app[RUNTIME].dashboard
    assert store is not None
    await new_key(gw, name="mine")
    after_create = store.generation
    await asyncio.sleep(3 * 0.5)  # three polls of the watch
    assert store.generation == after_create  # its own change was in memory: no reload
    # another writer (a second instance, the CLI) on the same tables: the watch reads them again
    other = await type(store).open(gw.server.app[RUNTIME].config.storage)
    try:
        await other.create("key", {"name": "theirs"}, gw.server.app[RUNTIME].config, "cli", None)
    finally:
        await other.close()

    async def reloaded() -> bool:
        return (await gw.get("/api/keys/theirs")).status == 200

    await _until(reloaded)
    assert store.generation == after_create + 1
