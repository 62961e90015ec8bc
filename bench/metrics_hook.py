"""What the metrics hook costs an exchange: ``pre`` + ``post`` in microseconds, in-process.

    .venv/bin/python -m bench.metrics_hook            # 200,000 exchanges
    .venv/bin/python -m bench.metrics_hook -n 20000

The exchange is a finished streamed chat request with usage, a cost and one retried
attempt (the most the hook does for one request); ``/metrics`` scrapes are not on the
hot path and are timed separately.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiohttp import web
from prometheus_client import generate_latest

from finopsd import config as cfg
from finopsd.exchange import Exchange
from finopsd.metrics.families import Families
from finopsd.metrics.hook import MetricsHook
from finopsd.runtime import Runtime

CONFIG = """
providers:
  openai: {base_url: "http://127.0.0.1:9/v1", keys: [{value: sk-x}], models: [gpt-5, gpt-5-mini]}
teams: {t: {}}
"""


def finished(i: int) -> Exchange:
    ex = Exchange(id=str(i), route="chat", model="openai/gpt-5", stream=True, provider="openai",
                  upstream_model="gpt-5", team="t", status_code=200, ttft_ms=210.0, duration_ms=1500.0,
                  cost_usd=0.0123, upstream_s=1.4993)
    ex.transcript.set_usage({"prompt_tokens": 8000, "completion_tokens": 300,
                             "prompt_tokens_details": {"cached_tokens": 6000}})
    ex.attempts = [{"provider": "openai", "model": "gpt-5", "status": 500, "error": "boom"},
                   {"provider": "openai", "model": "gpt-5", "status": 200}]
    return ex


class NoHook:
    """What awaiting any hook's pre and post costs: the floor under the metrics hook."""

    async def pre(self, ex: Exchange, request: web.Request) -> None:
        pass

    async def post(self, ex: Exchange) -> None:
        pass


async def per_exchange(hook: MetricsHook | NoHook, exchanges: list[Exchange], n: int) -> float:
    request: web.Request = None  # type: ignore[assignment]  # the hook never reads it
    for ex in exchanges:  # warm: every series exists once
        await hook.pre(ex, request)
        await hook.post(ex)
    started = time.perf_counter()
    for i in range(n):
        ex = exchanges[i % len(exchanges)]
        await hook.pre(ex, request)
        await hook.post(ex)
    return (time.perf_counter() - started) / n * 1e6


async def run(n: int) -> None:
    families = Families()
    exchanges = [finished(i) for i in range(1000)]
    floor = await per_exchange(NoHook(), exchanges, n)
    per = await per_exchange(MetricsHook(families, Runtime(cfg.parse(CONFIG, env={}))), exchanges, n)
    started = time.perf_counter()
    body = generate_latest(families.registry)
    scrape_ms = (time.perf_counter() - started) * 1000
    print(f"metrics hook: {per:.2f} us per exchange (pre + post, {n} exchanges); a hook doing nothing: {floor:.2f} us")
    print(f"one /metrics body: {scrape_ms:.2f} ms, {len(body)} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200_000, help="exchanges to time (default 200,000)")
    asyncio.run(run(parser.parse_args().n))


if __name__ == "__main__":
    main()
