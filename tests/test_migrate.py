"""``finopsd migrate --to postgresql://…``: a SQLite log, populated through the gateway, moves to
PostgreSQL with every row, session, roll-up, key and alert intact.

The log is made the way users make one: agent tasks (threaded by the prefix rule and by a
session header), streams, an upstream error, a stored Responses answer, a key made through
the admin API, an alert; part of it is then pruned as retention would, so the roll-ups hold
history the requests no longer do. ``finopsd migrate`` runs as a child process, then a
gateway on the PostgreSQL database answers every API question as the SQLite one did.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import openai
import psycopg
import pytest
from aiohttp.test_utils import TestClient

from finopsd.appkeys import LOGSTORE
from tests.conftest import GatewayFactory
from tests.fakes import FakeUpstream
from tests.test_governance import governed, key_line
from tests.test_routes_sessions import ROO_KEY, run_task, sdk

KEYS = key_line("roo", ROO_KEY, team="web")
TEAMS = "{web: {budgets: [{usd: 100, period: month}]}}"


def yaml_for(fake: FakeUpstream, storage: str) -> str:
    return governed(fake.url, KEYS, TEAMS, extra=f"storage: {storage}\n")


async def populate(gw: TestClient, fake: FakeUpstream) -> str:
    """Make the log; the id of the stored Responses answer."""
    await run_task(gw, fake, ROO_KEY, "Fix the flaky test in tests/test_io.py",
                   ["def test_io():\n    assert read() == 'quokka'\n", "def read():\n    return 'wombat'\n"],
                   "Fixed: read() now returns quokka.")  # fmt: skip
    await run_task(gw, fake, ROO_KEY, "Summarise the README, café au lait", [], "It is a gateway.",
                   headers={"x-finops-session-id": "summary-task"})
    fake.play("openai/text_stream.sse")
    async with sdk(gw, ROO_KEY) as client:
        async for _ in await client.chat.completions.create(
                model="openai/gpt-5", messages=[{"role": "user", "content": "stream a haiku"}], stream=True,
                stream_options={"include_usage": True}):
            pass
        fake.answer_json({"error": {"message": "upstream is down"}}, status=500)
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="openai/gpt-5", messages=[{"role": "user", "content": "x"}])
        fake.answer_json({"id": "c1", "object": "chat.completion", "model": "gpt-5", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})
        stored = await client.responses.create(model="groq/llama-3.3-70b-versatile", input="Capital of France?",
                                               store=True)  # a chat upstream: the gateway stores it
    resp = await gw.post("/api/keys", json={"name": "made-live", "team": "web", "budgets": [{"usd": 5, "period": "day"}]})
    assert resp.status == 201, await resp.text()
    store = gw.server.app[LOGSTORE]
    assert await store.claim_alert("budget", "team:web", "2026-12", 0.5, "team web passed 50% of its budget")
    await store.flush()
    return stored.id


def age_first_task(path: Path) -> None:
    """The first task's rows, as if written 40 days ago, so that retention (30 days) prunes them."""
    with sqlite3.connect(path) as db:
        old = time.time() - 40 * 86400
        db.execute("update requests set ts = ? where session = (select min(id) from sessions)", (old,))
        db.execute("update sessions set ts = ?, last_ts = ? where id = (select min(id) from sessions)", (old, old))


async def migrate(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "finopsd", "migrate", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                                                env={**os.environ, **(env or {})})
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def answers(gw: TestClient, response_id: str, now: float) -> dict[str, Any]:
    """What the API says about the whole log: every row and session, listed and one by one
    (the usage charts and budgets as at ``now``)."""
    async def get(path: str, **params: Any) -> Any:
        resp = await gw.get(path, params={k: str(v) for k, v in params.items()})
        assert resp.status == 200, (path, await resp.text())
        return await resp.json()

    logs = await get("/api/logs", limit=500)
    sessions = await get("/api/sessions", limit=500)
    span = {"range": "custom", "since": int(now - 60 * 86400), "until": int(now + 3600), "grain": "day"}
    keys = await get("/api/keys")
    async with sdk(gw, ROO_KEY) as client:
        stored = (await client.responses.retrieve(response_id)).model_dump()
    return {
        "logs": logs,
        "rows": {i["id"]: await get(f"/api/logs/{i['id']}") for i in logs["items"]},
        "sessions": sessions,
        "session": {s["id"]: await get(f"/api/sessions/{s['id']}") for s in sessions["items"]},
        "usage": {by: without_pace(await get("/api/usage", group_by=by, **span)) for by in ("team", "key", "model")},
        "search": {q: sorted(i["id"] for i in (await get("/api/logs", q=q, limit=500))["items"])
                   for q in ("haiku", "cafe", "gateway", "quokka")},  # words of an answer and of a prompt
        "keys": [{k: v for k, v in key.items() if k != "rate"} for key in keys["keys"]],
        "teams": keys["teams"],
        "audit": await get("/api/audit"),
        "alerts": await gw.server.app[LOGSTORE].alerts(),
        "stored_response": stored,
    }


def rounded(value: Any) -> Any:
    """``value`` with every float rounded to 9 decimals."""
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def without_pace(usage: dict[str, Any]) -> dict[str, Any]:
    """The usage answer but the budgets' spend per day so far, which changes as the clock runs."""
    for budget in usage["budgets"]:
        del budget["usd_per_day"], budget["projected_run_out"]
    return usage


async def test_a_migrated_log_answers_every_row_and_session_as_the_sqlite_one_did(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream, tmp_path: Path, postgres_url: str
) -> None:
    db = tmp_path / "finops.db"
    gw = await make_gateway(yaml_for(fake_openai, f"{{path: '{db}'}}"))
    response_id = await populate(gw, fake_openai)
    await gw.close()
    age_first_task(db)
    pruned = await make_gateway(yaml_for(fake_openai, f"{{path: '{db}'}}") + "logs: {retention_days: 30}\n")
    await pruned.server.app[LOGSTORE].prune(30)
    now = time.time()
    before = await answers(pruned, response_id, now)
    assert len(before["rows"]) == 4 and len(before["session"]) == 4  # the first task (3 rows) was pruned
    assert before["usage"]["team"]["all"]["totals"]["requests"] == 7  # its roll-ups were not
    assert before["search"]["cafe"] and before["search"]["gateway"] and not before["search"]["quokka"]  # pruned
    await pruned.close()

    # as the README shows it: the config names the SQLite file, the URL comes from the environment
    status, out = await migrate("--config", str(tmp_path / "config.yaml"), "--to", "env:FINOPS_TEST_PG_URL",
                                env={"FINOPS_TEST_PG_URL": postgres_url})
    assert status == 0, out
    assert "requests: 4 of 4 rows" in out and "content:" in out and "usage_rollup:" in out
    assert "finops-test-pg-secret" not in out and "copied 4 requests in 4 sessions" in out

    on_pg = await make_gateway(yaml_for(fake_openai, f"{{url: '{postgres_url}'}}"))
    after = await answers(on_pg, response_id, now)
    for part in before:  # sums may differ in the last bits: SQLite's total() compensates rounding, PostgreSQL's sum() not
        assert rounded(after[part]) == rounded(before[part]), part
    # the gateway goes on from there: new ids follow the copied ones
    await run_task(on_pg, fake_openai, ROO_KEY, "One more task", [], "Done.")
    await on_pg.server.app[LOGSTORE].flush()
    assert len((await (await on_pg.get("/api/logs", params={"limit": "500"})).json())["items"]) == 5


async def test_migrate_refuses_a_database_that_holds_a_log(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream, tmp_path: Path, postgres_url: str
) -> None:
    db = tmp_path / "finops.db"
    gw = await make_gateway(yaml_for(fake_openai, f"{{path: '{db}'}}"))
    await run_task(gw, fake_openai, ROO_KEY, "A task", [], "Done.")
    await gw.server.app[LOGSTORE].flush()
    assert (await migrate("--from", str(db), "--to", postgres_url))[0] == 0
    status, out = await migrate("--from", str(db), "--to", postgres_url)
    assert status == 1 and "already holds a log (content, sessions, requests" in out, out
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("select count(*) from requests").fetchone() == (1,)  # nothing copied twice
    # a URL that is not PostgreSQL, or a wrong password: clear, and no password shown
    status, out = await migrate("--from", str(db), "--to", "mysql://u:p@h/db")
    assert status == 1 and "--to: must be a postgresql:// URL" in out
    wrong = postgres_url.replace("finops-test-pg-secret", "wrong-password-123")
    status, out = await migrate("--from", str(db), "--to", wrong)
    assert status == 1 and "password authentication failed" in out and "wrong-password-123" not in out, out
