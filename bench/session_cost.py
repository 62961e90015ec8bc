"""Session cost with and without automatic prompt caching (issue #18).

One Roo-Code-shaped task (tests/agent_sessions.py: a 30 KB system prompt, 13 tools, and every
turn a tool call, a file read back and an ``<environment_details>`` message, so the prompt
grows each turn) is sent through finopsd to a fake Anthropic that caches as the API documents
(tests/fake_claude.py), twice: with finopsd's defaults (breakpoints placed by the gateway) and
with ``caching: {auto: false}``. Both runs are priced from finopsd's own log rows with the
bundled genai-prices data for ``claude-sonnet-4-5``; input cost is a row's cost minus its
output tokens' cost. Target: at least 70% lower input cost, with the same answers.

    .venv/bin/python -m bench.session_cost              # 60 turns
    .venv/bin/python -m bench.session_cost --turns 20 --json out.json
    .venv/bin/python -m bench.session_cost --ttl 1h     # the gateway's breakpoints with a 1-hour TTL

Exit status 0 when the target is met, 1 when it is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import openai
from aiohttp import web

from finopsd import config as cfg
from finopsd.app import build_app
from finopsd.appkeys import LOGSTORE
from finopsd.pricing import Pricer
from tests.agent_sessions import roo_session
from tests.fake_claude import FakeClaude

MODEL = "claude-sonnet-4-5"
TARGET_REDUCTION = 0.70


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def run_session(fake_url: str, turns: int, ttl: str | None, data: Path) -> dict[str, Any]:
    """One session through a fresh finopsd (``ttl`` None: auto caching off); answers and each turn's cost."""
    caching = f"{{ttl: {ttl}}}" if ttl else "{auto: false}"
    config = cfg.parse(
        f"storage: {{path: {data / ('on.db' if ttl else 'off.db')}}}\n"
        f"providers:\n  anthropic: {{base_url: '{fake_url}', keys: [{{value: sk-bench}}], models: [{MODEL}],"
        f" caching: {caching}}}\n", "bench-config.yaml")
    app = build_app(config)
    runner, url = await _serve(app)
    try:
        async with openai.AsyncOpenAI(base_url=f"{url}/openai", api_key="bench", max_retries=0) as client:
            answers = await roo_session(client, f"anthropic/{MODEL}", turns)
        store = app[LOGSTORE]
        await store.flush()
        rows = [await store.get(item["id"]) for item in (await store.search(limit=500))["items"]]
    finally:
        await runner.cleanup()
    rows.reverse()  # oldest first
    pricer = Pricer({}, {})
    turn_costs = []
    for row in rows:
        output = pricer.price("anthropic", MODEL, {"prompt_tokens": 0, "completion_tokens": row["completion_tokens"]})[0]
        turn_costs.append({"prompt_tokens": row["prompt_tokens"], "cached_tokens": row["cached_tokens"],
                           "input_usd": row["cost_usd"] - output, "cost_usd": row["cost_usd"],
                           "cost_without_cache_usd": row["cost_without_cache_usd"]})
    return {"answers": [(text, calls) for text, calls, _ in answers], "turns": turn_costs}


async def measure(turns: int, ttl: str) -> dict[str, Any]:
    fake = FakeClaude()
    fake_runner, fake_url = await _serve(fake.app)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            on = await run_session(fake_url, turns, ttl, Path(tmp))
            fake.cache.entries.clear()  # the second run starts cold too (it writes nothing anyway)
            off = await run_session(fake_url, turns, None, Path(tmp))
    finally:
        await fake_runner.cleanup()
    with_cache = sum(t["input_usd"] for t in on["turns"])
    without = sum(t["input_usd"] for t in off["turns"])
    reduction = 1 - with_cache / without if without else 0.0
    return {
        "model": MODEL, "turns": turns, "ttl": ttl, "refusals": fake.refusals,
        "prompt_tokens": sum(t["prompt_tokens"] for t in on["turns"]),
        "cached_tokens": sum(t["cached_tokens"] or 0 for t in on["turns"]),
        "input_usd_with_auto_caching": with_cache, "input_usd_without": without, "reduction": reduction,
        "logged_savings_usd": sum(t["cost_without_cache_usd"] - t["cost_usd"] for t in on["turns"]),
        "same_answers": on["answers"] == off["answers"],
        "met": reduction >= TARGET_REDUCTION and on["answers"] == off["answers"] and not fake.refusals,
        "per_turn": [{"turn": i + 1, "prompt_tokens": a["prompt_tokens"], "cached_tokens": a["cached_tokens"],
                      "input_usd_with": round(a["input_usd"], 6), "input_usd_without": round(b["input_usd"], 6)}
                     for i, (a, b) in enumerate(zip(on["turns"], off["turns"]))],
    }


def report(result: dict[str, Any]) -> str:
    lines = [f"session cost: {result['turns']} Roo-Code-shaped turns to anthropic/{result['model']} (fake Anthropic"
             f" with documented prompt caching, TTL {result['ttl']}), priced with genai-prices' bundled data", "",
             f"{'turn':>5} {'prompt tok':>11} {'cached tok':>11} {'input $ with':>13} {'input $ without':>16}"]
    shown = [t for t in result["per_turn"] if t["turn"] in (1, 2, 3) or t["turn"] % 10 == 0]
    lines += [f"{t['turn']:>5} {t['prompt_tokens']:>11,} {t['cached_tokens'] or 0:>11,} {t['input_usd_with']:>13.4f}"
              f" {t['input_usd_without']:>16.4f}" for t in shown]
    lines += ["",
              f"prompt tokens sent     {result['prompt_tokens']:,} ({result['cached_tokens']:,} read from cache)",
              f"input cost, auto cache ${result['input_usd_with_auto_caching']:.4f}",
              f"input cost, without    ${result['input_usd_without']:.4f}",
              f"reduction              {result['reduction'] * 100:.1f}% (target >= {TARGET_REDUCTION * 100:.0f}%)",
              f"savings on the rows    ${result['logged_savings_usd']:.4f} (cost_without_cache_usd - cost_usd)",
              f"same answers           {'yes' if result['same_answers'] else 'NO'}",
              f"upstream refusals      {len(result['refusals'])}",
              f"verdict                {'met' if result['met'] else 'MISSED'}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=60)
    parser.add_argument("--ttl", choices=("5m", "1h"), default="5m", help="caching.ttl for the run with caching")
    parser.add_argument("--json", dest="json_path", help="write every number here as JSON")
    args = parser.parse_args()
    result = asyncio.run(measure(args.turns, args.ttl))
    print(report(result))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=2))
    sys.exit(0 if result["met"] else 1)


if __name__ == "__main__":
    main()
