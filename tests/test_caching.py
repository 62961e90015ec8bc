"""Automatic prompt caching end to end: agent sessions through the real routes to a fake Claude
that caches as Anthropic and Bedrock document it (tests/fake_claude.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from aiohttp.test_utils import TestClient
from click.testing import CliRunner

from finopsd.cli import main
from finopsd.pricing import Pricer
from tests.agent_sessions import SYSTEM_PROMPT, codex_session, roo_session
from tests.fake_claude import FakeClaude, PromptCache, Refused, converse_blocks, messages_blocks, seen_by_model
from tests.logrows import logged_rows

MODEL = "claude-sonnet-4-5"
PRICER = Pricer({}, {})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def claude(aiohttp_server: Any, clock: Clock) -> FakeClaude:
    fake = FakeClaude(clock)
    fake.url = str((await aiohttp_server(fake.app)).make_url(""))
    return fake


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def config(fake: FakeClaude, provider_caching: str = "{}", key_caching: str = "{}", team_caching: str = "{}") -> str:
    return f"""
providers:
  anthropic: {{base_url: '{fake.url}', keys: [{{value: sk-ant-upstream}}], models: [{MODEL}], caching: {provider_caching}}}
  bedrock: {{base_url: '{fake.url}', region: us-east-1, keys: [{{value: ABSK-bedrock-key}}]}}
  vertex: {{base_url: '{fake.url}', project: acme, location: us-east5, keys: [{{value: ya29.vertex-token}}]}}
auth: {{required: true}}
teams:
  web: {{}}
  batch: {{caching: {team_caching}}}
virtual_keys:
  - {{name: roo, key_sha256: "{sha('vk-roo')}", team: web}}
  - {{name: plain, key_sha256: "{sha('vk-plain')}", team: web, caching: {key_caching}}}
  - {{name: nightly, key_sha256: "{sha('vk-nightly')}", team: batch}}
"""


@asynccontextmanager
async def sdk(gw: TestClient, key: str = "vk-roo") -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=str(gw.make_url("/openai")), api_key=key, max_retries=0) as client:
        yield client


def marked(body: dict[str, Any]) -> list[str]:
    """Where a Messages body carries cache_control: tools.N, system.N, messages.N.M."""
    out = [f"{k}.{i}" for k in ("tools", "system") for i, b in enumerate(body.get(k) or ()) if "cache_control" in b]
    out += [f"messages.{i}.{j}" for i, m in enumerate(body["messages"]) if isinstance(m["content"], list)
            for j, b in enumerate(m["content"]) if "cache_control" in b]
    return out


def cached(usage: Any) -> int:
    return int((usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0) or 0)


async def test_roo_code_session_pays_cached_prices_from_its_second_turn(
    make_gateway: Any, claude: FakeClaude, tmp_path: Path
) -> None:
    gw = await make_gateway(config(claude))
    async with sdk(gw) as client:
        turns = await roo_session(client, f"anthropic/{MODEL}", 4)
    assert claude.refusals == []
    assert all(calls and calls[0]["function"]["name"] == "read_file" for _, calls, _ in turns)
    # turn 1 writes the system prompt and the task; later turns also mark the previous user turn
    assert marked(claude.bodies[0]) == ["system.0", "messages.0.0"]
    assert marked(claude.bodies[3]) == ["system.0", "messages.4.1", "messages.6.1"]
    usages = [usage for _, _, usage in turns]
    assert cached(usages[0]) == 0 and usages[0].model_extra["cache_creation_input_tokens"] > 0
    for before, usage in zip(usages, usages[1:]):
        assert cached(usage) >= before.prompt_tokens  # everything the previous turn sent is read back
        assert usage.model_extra["cache_read_input_tokens"] == cached(usage)  # the names Roo reads
    rows = list(reversed(await logged_rows(gw)))
    assert [r["cached_tokens"] for r in rows] == [cached(u) for u in usages]
    assert rows[0]["cost_without_cache_usd"] < rows[0]["cost_usd"]  # the first write costs 1.25x
    for row in rows[1:]:
        assert row["cost_without_cache_usd"] > 2 * row["cost_usd"]
    listed = await (await gw.get("/api/logs")).json()
    assert all(item["cache_savings_usd"] > 0 for item in listed["items"][:3])
    total = listed["totals"]
    assert total["cache_savings_usd"] == pytest.approx(total["cost_without_cache_usd"] - total["cost_usd"])
    assert total["cache_savings_usd"] > total["cost_usd"]
    page = await (await gw.get("/logs?view=requests")).text()
    assert "saved by prompt caching" in page and page.count('class="saved">saved $') == 3
    (task,) = (await (await gw.get("/api/sessions")).json())["items"]  # every turn is one task
    assert task["turns"] == len(rows)
    assert task["cache_savings_usd"] == pytest.approx(total["cache_savings_usd"])
    sessions_page = await (await gw.get("/logs")).text()
    assert "saved by prompt caching" in sessions_page and sessions_page.count('class="saved">saved $') == 1
    timeline = await (await gw.get(f"/logs/sessions/{task['id']}")).text()
    assert f"(saved ${task['cache_savings_usd']:.4f} by prompt caching)" in timeline
    detail = await (await gw.get(f"/logs/{rows[-1]['id']}")).text()
    assert "without cache" in detail and "(saved $" in detail
    cli = await asyncio.to_thread(CliRunner().invoke, main, ["usage", "--config", str(tmp_path / "config.yaml"),
                                                             "--json"])
    (by_key,) = json.loads(cli.output)["rows"]
    assert by_key["key"] == "roo" and by_key["cache_savings_usd"] == pytest.approx(total["cache_savings_usd"])
    text = (await asyncio.to_thread(CliRunner().invoke, main, ["usage", "--config", str(tmp_path / "config.yaml")])).output
    assert "saved USD" in text and f"{total['cache_savings_usd']:.4f}" in text


async def test_the_upstream_body_differs_only_by_the_markers(make_gateway: Any, claude: FakeClaude,
                                                             aiohttp_server: Any, clock: Clock) -> None:
    plain = FakeClaude(clock)
    plain.url = str((await aiohttp_server(plain.app)).make_url(""))
    on, off = await make_gateway(config(claude)), await make_gateway(config(plain, provider_caching="{auto: false}"))
    async with sdk(on) as a, sdk(off) as b:
        answers_on = await roo_session(a, f"anthropic/{MODEL}", 3)
        answers_off = await roo_session(b, f"anthropic/{MODEL}", 3)
    assert [marked(body) for body in plain.bodies] == [[], [], []]
    assert [seen_by_model(body) for body in claude.bodies] == [seen_by_model(body) for body in plain.bodies]
    assert [(t, c) for t, c, _ in answers_on] == [(t, c) for t, c, _ in answers_off]  # same answers
    assert [cached(u) for _, _, u in answers_off] == [0, 0, 0]


async def test_claude_code_markers_are_left_as_the_client_sent_them(make_gateway: Any, claude: FakeClaude) -> None:
    gw = await make_gateway(config(claude))
    system = [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
              {"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}},
              {"type": "text", "text": "cwd: /src"}]
    messages: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "text", "text": "fix the bug"}]}]
    async with anthropic.AsyncAnthropic(base_url=str(gw.make_url("/anthropic")), api_key="vk-roo",
                                        max_retries=0) as client:
        for turn in range(3):
            sent = [dict(m) for m in messages]
            async with client.messages.stream(model=MODEL, max_tokens=1024, system=system,  # type: ignore[arg-type]
                                              messages=sent) as stream:
                final = await stream.get_final_message()
            got = claude.bodies[-1]
            assert got["system"] == system and got["messages"] == sent  # untouched: no gateway marker
            assert marked(got) == ["system.0", "system.1"]
            if turn:
                assert final.usage.cache_read_input_tokens and final.usage.cache_read_input_tokens > 0
            messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in final.content]},
                         {"role": "user", "content": [{"type": "text", "text": f"next step {turn}"}]}]
    assert claude.refusals == []


async def test_native_messages_without_markers_get_the_gateways(make_gateway: Any, claude: FakeClaude) -> None:
    gw = await make_gateway(config(claude))
    async with anthropic.AsyncAnthropic(base_url=str(gw.make_url("/anthropic")), api_key="vk-roo",
                                        max_retries=0) as client:
        for question in ("what does the parser do?", "and the lexer?"):
            await client.messages.create(model=f"anthropic/{MODEL}", max_tokens=256, system=SYSTEM_PROMPT,
                                         messages=[{"role": "user", "content": "summarise the repo"},
                                                   {"role": "assistant", "content": "It is a compiler."},
                                                   {"role": "user", "content": question}])
    assert marked(claude.bodies[1]) == ["system.0", "messages.0.0", "messages.2.0"]
    row = (await logged_rows(gw))[0]
    assert row["cached_tokens"] > 0 and row["cost_without_cache_usd"] > row["cost_usd"]


async def test_codex_session_translated_from_responses_reads_the_cache(make_gateway: Any, claude: FakeClaude) -> None:
    gw = await make_gateway(config(claude))
    async with sdk(gw) as client:
        usages = await codex_session(client, f"anthropic/{MODEL}", 3)
    assert claude.refusals == []
    assert [t["name"] for t in claude.bodies[0]["tools"]] == ["exec_command", "write_stdin"]  # web_search dropped
    assert marked(claude.bodies[2])[0] == "system.0" and len(marked(claude.bodies[2])) == 3
    assert usages[0].input_tokens_details.cached_tokens == 0
    assert all(u.input_tokens_details.cached_tokens > 0 for u in usages[1:])
    rows = await logged_rows(gw)
    assert all(r["route"] == "responses" for r in rows) and rows[0]["cost_without_cache_usd"] > rows[0]["cost_usd"]


@pytest.mark.parametrize(("key", "provider_caching", "key_caching", "team_caching", "markers"), [
    ("vk-plain", "{}", "{auto: false}", "{}", False),   # the key opted out
    ("vk-roo", "{}", "{auto: false}", "{}", True),      # ... its teammate did not
    ("vk-nightly", "{}", "{}", "{auto: false}", False),  # the team opted out
    ("vk-roo", "{auto: false}", "{}", "{}", False),     # the provider opted out
])
async def test_opt_out_by_key_team_and_provider(make_gateway: Any, claude: FakeClaude, key: str, provider_caching: str,
                                                key_caching: str, team_caching: str, markers: bool) -> None:
    gw = await make_gateway(config(claude, provider_caching, key_caching, team_caching))
    async with sdk(gw, key) as client:
        turns = await roo_session(client, f"anthropic/{MODEL}", 2)
    assert bool(marked(claude.bodies[1])) is markers
    assert (cached(turns[1][2]) > 0) is markers
    row = (await logged_rows(gw))[0]
    assert (row["cost_without_cache_usd"] > row["cost_usd"]) is markers


async def test_one_hour_ttl_survives_a_pause_the_default_does_not_and_costs_its_rate(
    make_gateway: Any, claude: FakeClaude, clock: Clock
) -> None:
    gw = await make_gateway(config(claude, key_caching="{ttl: 1h}"))
    async with sdk(gw, "vk-plain") as hour, sdk(gw, "vk-roo") as five:
        await roo_session(hour, f"anthropic/{MODEL}", 1)
        assert all(b["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
                   for b in claude.bodies[0]["system"] if "cache_control" in b)
        clock.now += 600  # ten minutes away from the keyboard
        again = await roo_session(hour, f"anthropic/{MODEL}", 1)
        assert cached(again[0][2]) > 0
        # the same system prompt: the 1h entry serves it; the default-TTL turns expire after 5 minutes
        await roo_session(five, f"anthropic/{MODEL}", 1, task="Write the changelog.")
        clock.now += 600
        later = await roo_session(five, f"anthropic/{MODEL}", 1, task="Write the changelog.")
        system_tokens = cached(later[0][2])
        assert 0 < system_tokens < later[0][2].prompt_tokens  # the task turn was written again
    first = list(reversed(await logged_rows(gw)))[0]
    written = {"prompt_tokens": first["prompt_tokens"], "completion_tokens": first["completion_tokens"],
               "prompt_tokens_details": {"cache_creation_tokens": first["prompt_tokens"],
                                         "ephemeral_1h_input_tokens": first["prompt_tokens"]}}
    assert first["cost_usd"] == pytest.approx(PRICER.price("anthropic", MODEL, written)[0])  # at the 1h rate
    at_5m = {**written, "prompt_tokens_details": {"cache_creation_tokens": first["prompt_tokens"]}}
    assert first["cost_usd"] > PRICER.price("anthropic", MODEL, at_5m)[0]


async def test_the_fake_refuses_what_the_api_refuses(make_gateway: Any, claude: FakeClaude) -> None:
    gw = await make_gateway(config(claude))
    mark = {"cache_control": {"type": "ephemeral"}}
    async with anthropic.AsyncAnthropic(base_url=str(gw.make_url("/anthropic")), api_key="vk-roo",
                                        max_retries=0) as client:
        with pytest.raises(anthropic.BadRequestError, match="maximum of 4 blocks"):
            await client.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": [
                {"type": "text", "text": f"part {i}", **mark} for i in range(5)]}])  # type: ignore[misc]
        with pytest.raises(anthropic.BadRequestError, match="empty text blocks"):
            await client.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": [
                {"type": "text", "text": "hi"}, {"type": "text", "text": "", **mark}]}])  # type: ignore[misc]
        with pytest.raises(anthropic.BadRequestError, match="must not come after"):
            await client.messages.create(model=MODEL, max_tokens=64, system=[
                {"type": "text", "text": "a", **mark},
                {"type": "text", "text": "b", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],  # type: ignore[list-item]
                messages=[{"role": "user", "content": "hi"}])
    assert len(claude.refusals) == 3
    rows = await logged_rows(gw)
    assert [r["status_code"] for r in rows] == [400, 400, 400]


async def test_a_short_prompt_is_sent_without_markers_and_caches_nothing(make_gateway: Any, claude: FakeClaude) -> None:
    gw = await make_gateway(config(claude))
    async with sdk(gw) as client:
        for _ in range(2):
            answer = await client.chat.completions.create(model=f"anthropic/{MODEL}",
                                                          messages=[{"role": "user", "content": "hi"}])
            assert cached(answer.usage) == 0
    assert [marked(b) for b in claude.bodies] == [[], []]


async def test_bedrock_claude_session_reads_its_cache_points(make_gateway: Any, claude: FakeClaude) -> None:
    gw = await make_gateway(config(claude))
    model = "bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    async with sdk(gw) as client:
        messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM_PROMPT},
                                          {"role": "user", "content": "explain the parser"}]
        usages = []
        for turn in range(3):
            answer = await client.chat.completions.create(model=model, messages=messages)  # type: ignore[arg-type]
            usages.append(answer.usage)
            messages += [{"role": "assistant", "content": answer.choices[0].message.content},
                         {"role": "user", "content": f"and part {turn}?"}]
    assert claude.refusals == []
    assert [b for b in claude.bodies[0]["system"] if "cachePoint" in b] == [{"cachePoint": {"type": "default"}}]
    assert cached(usages[0]) == 0 and all(cached(u) > 0 for u in usages[1:])
    row = (await logged_rows(gw))[0]
    assert row["provider"] == "bedrock" and row["cached_tokens"] == cached(usages[2])


async def test_vertex_claude_session_reads_the_cache_through_raw_predict(make_gateway: Any, claude: FakeClaude) -> None:
    gw = await make_gateway(config(claude))
    async with sdk(gw) as client:
        turns = await roo_session(client, "vertex/claude-sonnet-4-5@20250929", 3)
    assert claude.refusals == [] and "model" not in claude.bodies[0]
    assert marked(claude.bodies[2]) == ["system.0", "messages.2.1", "messages.4.1"]
    assert cached(turns[0][2]) == 0 and all(cached(usage) > 0 for _, _, usage in turns[1:])
    row = (await logged_rows(gw))[0]
    assert row["provider"] == "vertex" and row["cost_without_cache_usd"] > 2 * row["cost_usd"]


def test_the_fake_reads_only_prefixes_written_before_within_the_lookback(clock: Clock) -> None:
    cache = PromptCache(clock)
    mark = {"cache_control": {"type": "ephemeral"}}
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": [{"type": "text", "text": f"turn {i} " * 50}]}
             for i in range(30)]
    system = [{"type": "text", "text": SYSTEM_PROMPT}]

    def body(n: int, marked_at: int) -> dict[str, Any]:
        msgs = [dict(m, content=[dict(m["content"][0], **(mark if i == marked_at else {}))])
                for i, m in enumerate(turns[:n])]
        return {"system": system, "messages": msgs}

    first = cache.charge(messages_blocks(body(5, 4)), MODEL)
    assert first.read == 0 and first.written["5m"] == first.total  # nothing was written before
    near = cache.charge(messages_blocks(body(10, 9)), MODEL)  # 5 blocks on: found by the lookback
    assert near.read == first.total
    far = cache.charge(messages_blocks(body(30, 29)), MODEL)  # 20 more: beyond the lookback
    assert far.read == 0
    short = PromptCache(clock).charge(messages_blocks({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi", **mark}]}]}), MODEL)
    assert short.written == {"5m": 0, "1h": 0}  # under the minimum: not cached
    nested = messages_blocks({"messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "out", **mark}]}]}]})
    assert [b.ttl for b in nested] == [None, "5m"]  # a tool_result's own text may carry the marker
    with pytest.raises(Refused, match="Extra inputs"):
        messages_blocks({"messages": [{"role": "user", "content": "hi", **mark}]})
    with pytest.raises(Refused, match="thinking"):
        messages_blocks({"messages": [{"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hm", "signature": "s", **mark}]}]})
    with pytest.raises(Refused, match="must follow"):
        converse_blocks({"messages": [{"role": "user", "content": [{"cachePoint": {"type": "default"}}]}]})
