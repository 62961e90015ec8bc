"""The log on PostgreSQL, where SQLite has nothing alike: migrations raced by several instances,
two instances writing one session, a server that goes away under load and comes back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import CliRunner

from finopsd.appkeys import LOGSTORE
from finopsd.cli import main
from finopsd.log.pg.schema import MIGRATIONS
from finopsd.log.pg.store import PgLogStore
from tests.conftest import GatewayFactory, gateway_yaml
from tests.fakes import FakeUpstream
from tests.logdb import query
from tests.test_governance import ALPHA, ask, governed, key_line
from tests.servers import PG_PASSWORD, PgCluster
from tests.test_log_sessions import roo_turns
from tests.test_logstore import make_row
from tests.test_metrics import samples, value
from tests.test_routes_logs import ANSWER
from tests.test_routes_openai import MSGS

WAIT_S = 60  # what a condition below may take on a loaded machine; never asserted on


async def until(condition: Callable[[], Any], what: str) -> None:
    """Wait for ``condition()`` (polled), failing after WAIT_S with ``what``."""
    async with asyncio.timeout(WAIT_S):
        while not condition():
            await asyncio.sleep(0.05)
    assert condition(), what


async def test_three_instances_starting_together_migrate_once(postgres_url: str) -> None:
    stores = await asyncio.gather(*(PgLogStore.open(postgres_url) for _ in range(3)))
    for store in stores:
        await store.close()
    applied = query({"url": postgres_url}, "select name from _migrations order by name")
    assert applied == [(fn.__name__,) for fn in MIGRATIONS]


async def test_two_instances_writing_one_session_agree_on_it(postgres_url: str) -> None:
    """Turns of one agent task reach two instances in turn (a load balancer's round robin):
    each finds the session the other started, by the client's session id or by the prefix
    rule, and one that remembers an older turn reads the newer one back."""
    backend = {"url": postgres_url}
    a, b = [await PgLogStore.open(postgres_url, flush_ms=10_000) for _ in range(2)]
    try:
        for task, hint in (("prefix task", None), ("header task", "task-7")):
            bodies = roo_turns(task, 6)
            for i, body in enumerate(bodies):
                store = (a, b)[i % 2]
                store.submit(make_row(f"{hint or 'p'}-{i}", ts=1e9 + i, request=body, session_hint=hint))
                await store.flush()
            rows = [await a.get(f"{hint or 'p'}-{i}") for i in range(6)]
            assert [r["request"] for r in rows if r] == bodies  # each rebuilt exactly, whichever wrote it
        # both at once: the same new client session id claimed by two instances
        for name, store in (("both-a", a), ("both-b", b)):
            store.submit(make_row(name, session_hint="task-8"))
        await asyncio.gather(a.flush(), b.flush())
        sessions = (await b.sessions(with_totals=True))["items"]
        assert sorted((s["source"], s["turns"]) for s in sessions) == [("header", 2), ("header", 6), ("prefix", 6)]
        turns = query(backend, "select s.source, r.turn from requests r join sessions s on s.id = r.session"
                               " where r.request_id not like 'both-%' order by r.id")  # fmt: skip
        assert turns == [("prefix", t) for t in range(1, 7)] + [("header", t) for t in range(1, 7)]
        # each turn after the first stored only what it added, over the other instance's pieces
        assert query(backend, "select count(*) from requests where turn > 1 and parent is null") == [(0,)]
        assert a.failed_rows == b.failed_rows == 0
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("stop", ["fast", "immediate"])  # a clean shutdown, a crash
async def test_requests_answer_while_postgresql_is_down_and_their_rows_land_when_it_returns(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream, pg_cluster: PgCluster, postgres_url: str, stop: str
) -> None:
    """Four clients keep asking while the server is stopped and started again under them."""
    gw = await make_gateway(gateway_yaml(fake_openai.url, f"storage: {{url: '{postgres_url}'}}"))
    store = gw.server.app[LOGSTORE]
    fake_openai.answer_json(ANSWER)  # the last reply repeats: every request gets it
    answered: list[str] = []
    running = True
    async with openai.AsyncOpenAI(base_url=str(gw.make_url("/openai")), api_key="x", max_retries=0) as client:

        async def agent(n: int) -> None:
            while running:  # anything but a 200 raises, and fails the test below
                raw = await client.chat.completions.with_raw_response.create(
                    model="openai/gpt-5", messages=[*MSGS, {"role": "user", "content": f"agent {n}"}])
                answered.append(raw.headers["x-request-id"])

        agents = [asyncio.create_task(agent(n)) for n in range(4)]
        await until(lambda: len(answered) >= 20, "20 requests answered")
        await store.flush()
        # the test cluster runs with synchronous_commit off: without this a crash loses the last commits
        await asyncio.to_thread(pg_cluster.sql, "checkpoint")
        await asyncio.to_thread(pg_cluster.stop, stop)
        stopped_at = len(answered)
        await until(lambda: not store.database_up, "the writer noticed")
        await until(lambda: len(answered) >= stopped_at + 100, "100 more requests answered, the server away")
        down = samples(await (await gw.get("/metrics")).text())
        assert value(down, "finopsd_log_database_up") == 0 and value(down, "finopsd_log_queue_rows") > 0
        page = await gw.get("/api/logs")
        assert page.status == 503 and "postgresql" not in (await page.text()).lower()  # no URL, no password
        await asyncio.to_thread(pg_cluster.start)
        await until(lambda: store.database_up, "the writer reconnected")
        started_at = len(answered)
        await until(lambda: len(answered) >= started_at + 20, "20 more requests answered")
        running = False
        await asyncio.gather(*agents)
    await store.flush()
    logged = [r[0] for r in query({"url": postgres_url}, "select request_id from requests")]
    assert sorted(logged) == sorted(answered)  # each once
    assert (await store.search(with_totals=True))["totals"]["requests"] == len(answered)
    assert (store.failed_rows, store.dropped_rows, store.stripped_rows) == (0, 0, 0)
    up = samples(await (await gw.get("/metrics")).text())
    assert value(up, "finopsd_log_database_up") == 1
    assert value(up, "finopsd_log_rows_written_total") == len(answered)


async def test_past_its_bounds_the_queue_keeps_metadata_then_drops_and_counts(
    postgres_url: str, pg_cluster: PgCluster
) -> None:
    store = await PgLogStore.open(postgres_url, flush_ms=1, max_queue=10, max_queue_bytes=20_000)
    try:
        await asyncio.to_thread(pg_cluster.stop)
        store.submit(make_row("first", body_bytes=100))
        await store.flush()  # the writer holds "first" and retries it; the queue is empty behind it
        # "first" counts until written: 3 more fit whole, 7 more (to 10 rows) without their conversation
        for i in range(14):
            store.submit(make_row(f"r{i}", body_bytes=5_000, session_hint="s"))
        assert (store.stripped_rows, store.dropped_rows) == (7, 4)
        await store.flush()  # returns: the database is known to be away
        await store.wait_for_room()  # never holds a request back, however full
        await asyncio.to_thread(pg_cluster.start)
        await until(lambda: store.database_up and store.queued_rows == 0, "the queued rows were written")
        await store.flush()
        kept = {r[0]: r[1] for r in query({"url": postgres_url},
                                          "select r.request_id, r.n_messages from requests r")}  # fmt: skip
        assert kept == {"first": 1, **{f"r{i}": 1 for i in range(3)}, **{f"r{i}": None for i in range(3, 10)}}
        stripped = await store.get("r5")
        assert stripped is not None and stripped["request"] is None and stripped["cost_usd"] == 0.001
        assert "bytes bound" in stripped["attempts"][-1]["note"]
    finally:
        await store.close()


async def test_close_gives_up_on_a_database_that_stays_away_and_counts_the_rows(
    postgres_url: str, pg_cluster: PgCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("finopsd.log.intake.CLOSE_WAIT_S", 0.5)
    store = await PgLogStore.open(postgres_url, flush_ms=1)
    await asyncio.to_thread(pg_cluster.stop)
    for i in range(3):
        store.submit(make_row(f"r{i}"))
    await store.close()  # returns: a stopping gateway is not held hostage
    assert store.dropped_rows == 3


async def test_a_wrong_password_or_a_stopped_server_stops_the_start_and_the_error_hides_the_password(
    postgres_url: str, pg_cluster: PgCluster
) -> None:
    wrong = postgres_url.replace(PG_PASSWORD, "not-the-password")
    with pytest.raises(RuntimeError) as refused:
        await PgLogStore.open(wrong)
    assert "not-the-password" not in str(refused.value) and "finops:***@" in str(refused.value)
    await asyncio.to_thread(pg_cluster.stop)
    with pytest.raises(RuntimeError) as down:
        await PgLogStore.open(postgres_url)
    assert PG_PASSWORD not in str(down.value) and "finops:***@" in str(down.value)


async def test_values_postgresql_cannot_hold_as_given_cost_nothing_but_themselves(postgres_url: str) -> None:
    """What an odd upstream or client puts in a row (text for a number, NUL characters) is
    stored as near as PostgreSQL's types go; the row and its conversation are kept."""
    store = await PgLogStore.open(postgres_url)
    try:
        store.submit(make_row("odd", prompt_tokens="12", completion_tokens=2.6, cost_usd="n/a",
                              error_message="bad\x00byte", user_agent="\x00", session_hint="s\x00",
                              request={"messages": [{"role": "user", "content": "nul \x00 inside"}]}))
        await store.flush()
        row = await store.get("odd")
        assert row is not None and (store.failed_rows, store.degraded_rows) == (0, 0)
        assert (row["prompt_tokens"], row["completion_tokens"], row["cost_usd"]) == (12, 3, None)
        assert row["error_message"] == "bad\ufffdbyte"
        assert row["request"] == {"messages": [{"role": "user", "content": "nul \x00 inside"}]}  # JSON keeps it
        assert [i["id"] for i in (await store.search(q="inside"))["items"]] == ["odd"]
    finally:
        await store.close()


async def test_the_cli_reads_spend_and_logs_from_postgresql(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream, postgres_url: str, tmp_path: Path
) -> None:
    """``finopsd keys list`` and ``finopsd logs search`` open the log ``storage.url`` names (no file there)."""
    fake_openai.play("openai/text_stream.sse")
    config = tmp_path / "config.yaml"
    config.write_text(governed(fake_openai.url, key_line("alpha", ALPHA, budgets="[{usd: 5, period: day}]"),
                               extra=f"storage: {{path: {tmp_path / 'none.db'}, url: '{postgres_url}'}}\n"))
    gw = await make_gateway(config.read_text())
    await ask(gw, ALPHA)
    await gw.server.app[LOGSTORE].flush()
    listed = await asyncio.to_thread(CliRunner().invoke, main, ["keys", "list", "--json", "--config", str(config)])
    assert listed.exit_code == 0, listed.output
    (alpha,) = json.loads(listed.output)["keys"]
    assert alpha["budgets"][0]["spent_usd"] > 0
    found = await asyncio.to_thread(CliRunner().invoke, main, ["logs", "search", "Hello", "--json", "--config",
                                                               str(config)])  # fmt: skip
    assert found.exit_code == 0, found.output
    assert len(json.loads(found.output)["items"]) == 1
    assert not (tmp_path / "none.db").exists()
