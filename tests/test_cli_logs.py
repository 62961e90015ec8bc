"""``finopsd logs search|tail|sessions`` and ``finopsd usage --by session``: read the gateway's SQLite file directly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from finopsd.appkeys import LOGSTORE
from finopsd.cli import main
from finopsd.log.store import LogStore
from tests.test_governance import governed
from tests.test_routes_logs import row, said
from tests.test_routes_sessions import CLINE_KEY, KEYS, ROO_KEY, run_task

NOW = time.time()


def write_rows(db: Path, rows: list[dict[str, Any]]) -> None:
    async def go() -> None:
        store = await LogStore.open(str(db))
        for r in rows:
            store.submit(r)
        await store.close()  # drains the queue

    asyncio.run(go())


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"storage: {{path: {tmp_path / 'logs.db'}}}\n")
    return path


@pytest.fixture
def db(config: Path, tmp_path: Path) -> Path:
    path = tmp_path / "logs.db"
    write_rows(path, [
        row("r-old", ts=NOW - 300, **said("alpha in the oldest task", "done")),
        row("r-groq", ts=NOW - 200, provider="groq", model="groq/llama", **said("alpha on groq")),
        row("r-new", ts=NOW - 100, status="error", status_code=502, error_type="upstream_error",
            error_message="bad gateway", **said("beta only", "fails")),
    ])  # fmt: skip
    return path


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_search_prints_matching_rows_newest_first_with_the_match_marked(config: Path, db: Path) -> None:
    result = run("logs", "search", "alpha", "--config", str(config))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and "r-groq" in lines[0] and "r-old" in lines[1]
    assert "[alpha] on groq" in lines[0] and "groq/llama" in lines[0] and "roo/platform" in lines[0]
    assert "2 matching requests" in result.stderr


def test_search_filters_by_provider_and_model_and_limits(config: Path, db: Path) -> None:
    by_provider = run("logs", "search", "alpha", "--provider", "openai", "--config", str(config))
    assert "r-old" in by_provider.stdout and "r-groq" not in by_provider.stdout
    by_model = run("logs", "search", "alpha", "--model", "groq/llama", "--config", str(config))
    assert "r-groq" in by_model.stdout and "r-old" not in by_model.stdout
    limited = run("logs", "search", "alpha", "--limit", "1", "--config", str(config))
    assert len(limited.stdout.splitlines()) == 1 and "raise --limit" in limited.stderr


def test_search_json_is_the_api_answer(config: Path, db: Path) -> None:
    result = run("logs", "search", "beta OR fails", "--json", "--config", str(config))
    body = json.loads(result.stdout)
    assert set(body) == {"items", "next_cursor", "totals"}
    (item,) = body["items"]
    assert item["id"] == "r-new" and item["error"] == {"type": "upstream_error", "message": "bad gateway"}
    assert "<mark>beta</mark>" in item["snippet"] and body["totals"]["error_rate"] == 1.0


@pytest.mark.parametrize("text", ['"unbalanced', "NEAR(", "*", "(a OR", "日本語"])
def test_search_survives_hostile_input(config: Path, db: Path, text: str) -> None:
    result = run("logs", "search", text, "--config", str(config))
    assert result.exit_code == 0 and "matching requests" in result.stderr


def test_search_without_a_log_file_says_so_and_creates_nothing(config: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["logs", "search", "x", "--config", str(config)])
    assert result.exit_code == 1 and "no request log at" in result.output
    assert not (tmp_path / "logs.db").exists()


def test_tail_without_follow_prints_the_newest_oldest_first(config: Path, db: Path) -> None:
    result = run("logs", "tail", "--no-follow", "-n", "2", "--config", str(config))
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and "r-groq" in lines[0] and "r-new" in lines[1]
    assert "error 502" in lines[1] and lines[1].endswith("beta only")  # the first words of the prompt
    as_json = run("logs", "tail", "--no-follow", "-n", "1", "--json", "--config", str(config))
    assert json.loads(as_json.stdout)["id"] == "r-new"


async def test_tail_follows_new_rows_until_interrupted(config: Path, db: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "finopsd", "logs", "tail", "-n", "1", "--interval", "0.1", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(20):  # a hang guard, not a speed claim
            assert b"r-new" in await proc.stdout.readline()
            # the gateway meanwhile logs one request that just began and one long stream
            # that began a minute ago: both are new to the tail
            store = await LogStore.open(str(db))
            store.submit(row("r-live", ts=time.time(), **said("gamma arrives")))
            store.submit(row("r-long", ts=time.time() - 60, **said("a long stream ends")))
            await store.close()
            got = [await proc.stdout.readline(), await proc.stdout.readline()]
        assert any(b"r-live" in line and b"gamma arrives" in line for line in got), got
        assert any(b"r-long" in line for line in got)
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# ---------------------------------------------------------------- sessions, read from what a gateway logged


@pytest.fixture
async def logged_tasks(make_gateway: Any, fake_openai: Any, tmp_path: Path) -> tuple[Any, Path, list[Any]]:
    """A gateway that logged two agent tasks (three turns for roo, one for cline) to gw.db."""
    db = tmp_path / "gw.db"
    gw = await make_gateway(governed(fake_openai.url, KEYS, "{web: {}, data: {}}",
                                     extra=f"storage: {{path: {db}}}\n"))  # fmt: skip
    roo = await run_task(gw, fake_openai, ROO_KEY, "Fix the flaky test", ["assert read() == 'quokka'", "ok"], "done")
    cline = await run_task(gw, fake_openai, CLINE_KEY, "Summarise the README", [], "a gateway")
    await gw.server.app[LOGSTORE].flush()
    config = tmp_path / "cli.yaml"
    config.write_text(f"storage: {{path: {db}}}\n")
    return gw, config, [roo, cline]


async def cli(*args: str) -> Any:
    # the command runs its own event loop (asyncio.run), so off this test's loop
    return await asyncio.to_thread(run, *args)


async def test_logs_sessions_lists_tasks_newest_active_first(logged_tasks: tuple[Any, Path, list[Any]]) -> None:
    _, config, _ = logged_tasks
    result = await cli("logs", "sessions", "--config", str(config))
    assert result.exit_code == 0, result.output
    cline, roo = result.stdout.splitlines()
    assert "cline/data" in cline and "1 turn " in cline and cline.endswith("Summarise the README")
    assert "roo/web" in roo and "3 turns" in roo and "600 → 30" in roo and "$0.6600" in roo
    assert "running" in roo and "openai/gpt-5" in roo and roo.endswith("Fix the flaky test")
    assert "2 sessions, 4 requests, $0.7800" in result.stderr


async def test_logs_sessions_filters_and_search_name_the_turn(logged_tasks: tuple[Any, Path, list[Any]]) -> None:
    _, config, _ = logged_tasks
    hit = await cli("logs", "sessions", "--search", "quokka", "--config", str(config))
    (line,) = hit.stdout.splitlines()
    assert "roo/web" in line and "  turn 2: " in line and "[quokka]" in line.split("  turn 2: ")[1]
    for args, count in ((("--key", "cline"), 1), (("--team", "web"), 1), (("--status", "error"), 0),
                        (("--min-cost", "0.5"), 1), (("--until", "2020-01-01"), 0), (("--limit", "1"), 1)):
        result = await cli("logs", "sessions", *args, "--config", str(config))
        assert result.exit_code == 0 and len(result.stdout.splitlines()) == count, args
    bad = await asyncio.to_thread(CliRunner().invoke, main, ["logs", "sessions", "--since", "soon", "--config",
                                                             str(config)])  # fmt: skip
    assert bad.exit_code == 2 and "--since must be an ISO 8601 time" in bad.output


async def test_logs_sessions_json_is_the_api_answer(logged_tasks: tuple[Any, Path, list[Any]]) -> None:
    gw, config, _ = logged_tasks
    result = await cli("logs", "sessions", "--key", "roo", "--json", "--config", str(config))
    body = json.loads(result.stdout)
    api = await (await gw.get("/api/sessions", params={"key": "roo", "limit": "20"})).json()
    assert body == api and body["items"][0]["turns"] == 3


async def test_usage_by_session_sums_each_task(logged_tasks: tuple[Any, Path, list[Any]]) -> None:
    gw, config, _ = logged_tasks
    sessions = {s["key"]: s for s in (await (await gw.get("/api/sessions")).json())["items"]}
    result = await cli("usage", "--by", "session", "--since", "2020-01-01", "--json", "--config", str(config))
    rows = {r["session"]: r for r in json.loads(result.stdout)["rows"]}
    roo = rows[sessions["roo"]["id"]]
    assert roo["requests"] == 3 and roo["prompt_tokens"] == 600 and roo["cost_usd"] == pytest.approx(0.66)
    assert rows[sessions["cline"]["id"]]["requests"] == 1 and len(rows) == 2
    text = await cli("usage", "--by", "session", "--since", "2020-01-01", "--config", str(config))
    first, second = text.stdout.splitlines()[2:4]
    assert first.startswith(sessions["roo"]["id"]) and second.startswith(sessions["cline"]["id"])  # costliest first
    assert text.stdout.splitlines()[-1].split()[:2] == ["total", "4"]


def test_usage_by_day_has_one_row_per_utc_day_oldest_first(config: Path, tmp_path: Path) -> None:
    midnight = NOW // 86400 * 86400
    write_rows(tmp_path / "logs.db", [
        row("d2-a", ts=midnight - 2 * 86400 + 10, cost_usd=0.5, **said("two days ago")),
        row("d2-b", ts=midnight - 86400 - 10, cost_usd=0.25, **said("two days ago, last second")),
        row("d0", ts=midnight + 5, cost_usd=1.0, **said("today")),
    ])  # fmt: skip
    result = run("usage", "--by", "day", "--since", str(midnight - 3 * 86400), "--json", "--config", str(config))
    days = [(r["day"], r["requests"], r["cost_usd"]) for r in json.loads(result.stdout)["rows"]]
    day = [time.strftime("%Y-%m-%d", time.gmtime(midnight - n * 86400)) for n in (2, 0)]
    assert days == [(day[0], 2, 0.75), (day[1], 1, 1.0)]
    text = run("usage", "--by", "day", "--since", str(midnight - 3 * 86400), "--config", str(config)).stdout
    assert [line.split()[0] for line in text.splitlines()[2:]] == [*day, "total"]
