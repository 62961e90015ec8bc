"""The usage roll-ups (m009; PostgreSQL's p002) equal sums over the raw rows: after inserts, a
restart, pruning, and when an older database is upgraded; percentiles from their bins stay
within 9%. On both backends where the test is about the roll-ups, not SQLite's migrations."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any

import pytest

from finopsd.log import schema
from finopsd.log.store import LogStore
from finopsd.reports.series import window
from tests.logdb import open_store, query
from tests.test_logstore import make_row

NOW = time.time()
TEAMS = ("platform", "research", None)
MODELS = (("anthropic", "anthropic/claude-sonnet-4-5"), ("openai", "openai/gpt-5"), ("groq", "groq/llama-3.3"))
COLUMNS = ("team", "key_name", "model", "provider")


def traffic(n: int, seed: int, days: float = 5) -> list[dict[str, Any]]:
    """n rows spread over the last ``days`` days: teams, keys, models, errors, odd latencies."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        team = rng.choice(TEAMS)
        provider, model = rng.choice(MODELS)
        failed = rng.random() < 0.15
        stream = rng.random() < 0.7
        rows.append(make_row(
            f"s{seed}-{i}", ts=NOW - rng.uniform(0, days * 86400), team=team,
            key_name=f"{team or 'solo'}-{rng.randint(1, 2)}" if rng.random() < 0.9 else None,
            provider=provider, model=model, status="error" if failed else rng.choice(("ok", "ok", "client_closed")),
            error_type=rng.choice(("upstream_error", "rate_limited")) if failed else None,
            duration_ms=rng.lognormvariate(7, 1), ttft_ms=rng.lognormvariate(5.5, 0.8) if stream else None,
            stream=stream, prompt_tokens=rng.randint(0, 50_000), cached_tokens=rng.randint(0, 10_000),
            completion_tokens=rng.randint(0, 4000), cost_usd=round(rng.uniform(0, 0.2), 6),
            cost_without_cache_usd=round(rng.uniform(0.2, 0.4), 6) if rng.random() < 0.8 else None,
            request={"messages": [{"role": "user", "content": f"task {seed}-{i}"}]},
        ))  # fmt: skip
    return rows


def raw_sums(rows: list[dict[str, Any]], step: int) -> dict[tuple[Any, ...], list[float]]:
    """What the roll-up should hold, computed in Python from the rows themselves."""
    out: dict[tuple[Any, ...], list[float]] = {}
    for r in rows:
        key = (step, math.floor(r["ts"] / step) * step, *((r[c] or "") for c in COLUMNS))
        sums = out.setdefault(key, [0.0] * 8)
        cost = r["cost_usd"]
        for j, v in enumerate((1, r["status"] == "error", r["status"] == "client_closed", r["prompt_tokens"],
                               r["cached_tokens"], r["completion_tokens"], cost,
                               r["cost_without_cache_usd"] if r["cost_without_cache_usd"] is not None else cost)):
            sums[j] += v
    return out


def rollup(backend: dict[str, Any], step: int) -> dict[tuple[Any, ...], list[float]]:
    return {tuple(r[:6]): list(r[6:]) for r in query(
        backend, "select grain, bucket, team, key_name, model, provider, requests, errors, client_closed,"
        " prompt_tokens, cached_tokens, completion_tokens, cost_usd, cost_without_cache_usd from usage_rollup"
        " join usage_dims on usage_dims.id = dims where grain = ?", (step,))}


def assert_rollup_matches(backend: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    for step in (3600, 86400):
        expected, got = raw_sums(rows, step), rollup(backend, step)
        assert got.keys() == expected.keys()
        for key, sums in expected.items():
            assert got[key][:6] == [int(v) for v in sums[:6]], key
            assert got[key][6:] == pytest.approx(sums[6:], abs=1e-9), key
    errors = dict(query(backend, "select error_type, sum(n) from usage_errors where grain = 86400 group by 1"))
    counts = query(backend, "select " + ", ".join(f"sum({m}{k})" for m in "lt" for k in range(80))
                   + " from usage_latency where grain = 3600")[0]
    latency = [("latency", sum(counts[:80])), ("ttft", sum(counts[80:]))]
    assert errors == {t: sum(r["error_type"] == t for r in rows if r["status"] == "error")
                      for t in {r["error_type"] for r in rows if r["status"] == "error"}}
    assert dict(latency) == {"latency": len(rows), "ttft": sum(r["ttft_ms"] is not None for r in rows)}


async def fill(store: LogStore, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        store.submit(row)
    await store.flush()


async def test_rollups_equal_raw_sums_after_inserts_restart_and_pruning(log_backend: dict[str, Any]) -> None:
    first, second = traffic(300, 1), traffic(200, 2)
    store = await open_store(log_backend, flush_ms=5)
    await fill(store, first)
    await store.close()
    assert_rollup_matches(log_backend, first)

    store = await open_store(log_backend, flush_ms=5)  # a restart: the trigger goes on where it was
    await fill(store, second)
    assert_rollup_matches(log_backend, first + second)
    # retention deletes whole sessions (here: every session idle for two days); the roll-ups keep them
    pruned = await store.prune(2)
    assert pruned > 0
    assert query(log_backend, "select count(*) from requests")[0][0] == len(first) + len(second) - pruned
    assert_rollup_matches(log_backend, first + second)
    third = traffic(50, 3, days=1)
    await fill(store, third)
    assert_rollup_matches(log_backend, first + second + third)

    # and the API over them gives the same totals as the rows
    answer = await store.usage(window("30d", None, None, None), "team", {})
    every = first + second + third
    assert answer["all"]["totals"]["requests"] == len(every)
    assert answer["all"]["totals"]["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in every), abs=1e-6)
    by_team = {g["name"]: g["totals"]["prompt_tokens"] for g in answer["groups"]}
    assert by_team == {t or "(none)": sum(r["prompt_tokens"] for r in every if r["team"] == t) for t in TEAMS}
    await store.close()


async def test_upgrade_rolls_up_what_is_already_logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "logs.db")
    rows = traffic(150, 4)
    upto = schema.MIGRATIONS.index(schema.m011_usage_rollups)
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:upto])
    store = await LogStore.open(path, flush_ms=5)
    await fill(store, rows)
    await store.close()
    monkeypatch.undo()
    store = await LogStore.open(path, flush_ms=5)
    await store.close()
    assert_rollup_matches({"path": path}, rows)


async def test_percentiles_from_bins_are_within_nine_percent(log_backend: dict[str, Any]) -> None:
    rows = traffic(400, 5, days=0.5)
    store = await open_store(log_backend, flush_ms=5)
    await fill(store, rows)
    answer = await store.usage(window("24h", None, None, None), "model", {})
    await store.close()
    for group in answer["groups"]:
        mine = [r for r in rows if r["model"] == group["name"]]
        for metric, column in (("latency", "duration_ms"), ("ttft", "ttft_ms")):
            values = sorted(r[column] for r in mine if r[column] is not None)
            for q, label in ((0.5, "p50"), (0.95, "p95")):
                exact = values[max(1, math.ceil(q * len(values))) - 1]  # nearest rank, as the bins count it
                estimate = group["totals"][f"{metric}_{label}_ms"]
                assert exact / 2 ** (1 / 8) <= estimate * 1.0001 and estimate <= exact * 2 ** (1 / 8) * 1.0001


async def test_past_a_hundred_groups_the_cheapest_are_summed_as_other(log_backend: dict[str, Any]) -> None:
    store = await open_store(log_backend, flush_ms=5)
    await fill(store, [make_row(f"k{i}", key_name=f"key-{i:03d}", cost_usd=0.001 * (i + 1), ts=NOW - 60)
                       for i in range(120)])
    answer = await store.usage(window("24h", None, None, None), "key", {}, ("requests", "cost_usd"))
    await store.close()
    names = [g["name"] for g in answer["groups"]]
    assert len(names) == 101 and names[0] == "key-119" and names[-1] == "(other)"
    other = answer["groups"][-1]["totals"]
    assert other["requests"] == 20 and other["cost_usd"] == pytest.approx(0.001 * sum(range(1, 21)))
    assert answer["all"]["totals"]["requests"] == 120
