"""The ``finopsd`` command: check, serve as a real process, SIGHUP reload, SIGTERM drain."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
from click.testing import CliRunner

from finopsd import __version__
from finopsd.cli import main
from tests.fakes import FakeUpstream, Reply, fixture_frames
from tests.test_routes_openai import MSGS


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_check_lists_providers_models_and_aliases(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "providers:\n  groq: {keys: [{name: team-a, value: gsk-secret}], models: [llama-3.3-70b-versatile]}\n"
        "  vllm: {base_url: 'http://gpu:8000/v1'}\naliases: {fast: groq/llama-3.3-70b-versatile}\n"
    )
    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "groq  type=openai" in result.output and "keys=team-a" in result.output
    assert "llama-3.3-70b-versatile" in result.output and "fast -> groq/" in result.output
    assert "gsk-secret" not in result.output


def test_check_shows_the_shared_engines_without_their_passwords(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    pg = "storage: {url: 'postgresql://finops:pg-pass-0123456@db.internal/finops'}\n"
    path.write_text(pg)
    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "storage: postgresql://finops:***@db.internal/finops" in result.output
    assert "state: in this process" in result.output
    assert "warning: no state.redis_url: rate limits and budgets count per instance" in result.output
    assert "warning: no server.admin_token" in result.output
    path.write_text(pg + "state: {redis_url: 'redis://:redis-pass-0123456@cache.internal:6379/0'}\n"
                    "server: {admin_token: admin-token-0123456}\n")
    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "state: redis://:***@cache.internal:6379/0" in result.output and "warning" not in result.output
    assert "pass-0123456" not in result.output and "admin-token-0123456" not in result.output


def test_check_reports_errors_with_line_and_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("providers:\n  groq:\n    kyes: []\n")
    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert result.exit_code == 1
    assert f"{path}:3: providers.groq.kyes: unknown key" in result.output


async def test_serve_without_config_uses_embedded_default(daemon_for: Any, tmp_path: Path) -> None:
    d = await daemon_for(None, {"GROQ_API_KEY": "gsk-test"})
    assert d.url.startswith("http://127.0.0.1:")
    async with aiohttp.ClientSession() as s, s.get(d.url + "/healthz") as r:
        assert (await r.json())["providers"] == ["groq"]
    d.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(d.proc.wait(), 20) == 0


async def test_sighup_reloads_config_and_keeps_old_on_error(
    daemon_for: Any, tmp_path: Path, fake_openai: FakeUpstream
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"providers:\n  openai: {{base_url: '{fake_openai.url}', models: [gpt-5]}}\n")
    d = await daemon_for(path)

    async def providers() -> list[str]:
        async with aiohttp.ClientSession() as s, s.get(d.url + "/healthz") as r:
            return list((await r.json())["providers"])

    assert await providers() == ["openai"]
    path.write_text(path.read_text() + f"  groq: {{base_url: '{fake_openai.url}'}}\n")
    d.proc.send_signal(signal.SIGHUP)
    async with asyncio.timeout(10):
        await d.read_stderr_until("config reloaded")
    assert await providers() == ["groq", "openai"]
    path.write_text("providers:\n  groq:\n    kyes: []\n")
    d.proc.send_signal(signal.SIGHUP)
    async with asyncio.timeout(10):
        await d.read_stderr_until("keeping the old one")
    assert any(":3: providers.groq.kyes: unknown key" in line for line in d.stderr)
    assert await providers() == ["groq", "openai"]


async def test_sigterm_lets_inflight_stream_finish(
    daemon_for: Any, tmp_path: Path, fake_openai: FakeUpstream
) -> None:
    gate = asyncio.Event()
    fake_openai.add(Reply(frames=fixture_frames("openai/text_stream.sse"), hold_before=2, until=gate))
    path = tmp_path / "c.yaml"
    path.write_text(f"providers:\n  openai: {{base_url: '{fake_openai.url}', models: [gpt-5]}}\n")
    d = await daemon_for(path)
    async with aiohttp.ClientSession() as s:
        async with s.post(d.url + "/openai/chat/completions",
                          json={"model": "openai/gpt-5", "messages": MSGS, "stream": True}) as r:
            first = await r.content.readline()
            assert b"chat.completion.chunk" in first
            d.proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                await d.read_stderr_until("draining")
            gate.set()
            rest = await r.read()
    assert rest.rstrip().endswith(b"data: [DONE]")
    assert await asyncio.wait_for(d.proc.wait(), 20) == 0
