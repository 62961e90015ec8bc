"""``finopsd logs search`` and ``finopsd logs tail``: read the gateway's SQLite file directly."""

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

from finopsd.cli import main
from finopsd.log.store import LogStore
from tests.test_routes_logs import row, said

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
