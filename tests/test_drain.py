"""SIGTERM: the whole drain fits in ``server.drain_timeout_s``; what it cuts says so, to the client and in its row.

A real ``finopsd serve`` child process, with requests whose upstream never finishes:
an OpenAI stream, a stream on the Anthropic route and a request not yet answered.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp

from tests.fakes import FakeUpstream, Reply, fixture_frames
from tests.test_routes_openai import MSGS

DRAIN_S = 3


async def test_sigterm_cuts_what_outlives_the_drain_with_an_error_and_a_row_saying_so(
    daemon_for: Any, tmp_path: Path, fake_openai: FakeUpstream
) -> None:
    never = asyncio.Event()
    fake_openai.add(Reply(frames=fixture_frames("openai/text_stream.sse"), hold_before=2, until=never))
    fake_openai.key_replies["Bearer sk-hang"] = Reply(hang=True)
    db = tmp_path / "drain.db"
    path = tmp_path / "c.yaml"
    path.write_text(
        f"server: {{drain_timeout_s: {DRAIN_S}}}\nstorage: {{path: '{db}'}}\nproviders:\n"
        f"  openai: {{base_url: '{fake_openai.url}', keys: [{{value: sk-stream}}]}}\n"
        f"  groq: {{base_url: '{fake_openai.url}', keys: [{{value: sk-hang}}]}}\n")
    d = await daemon_for(path)
    async with aiohttp.ClientSession() as s:
        chat = await s.post(d.url + "/openai/chat/completions",
                            json={"model": "openai/gpt-5", "messages": MSGS, "stream": True})
        messages = await s.post(d.url + "/anthropic/v1/messages",
                                json={"model": "openai/gpt-5", "max_tokens": 50, "messages": MSGS, "stream": True})
        assert b"chat.completion.chunk" in await chat.content.readline()
        assert b"message_start" in await messages.content.readline()
        whole = asyncio.create_task(s.post(d.url + "/openai/chat/completions",
                                           json={"model": "groq/llama", "messages": MSGS}))
        while len(fake_openai.requests) < 3:
            await asyncio.sleep(0.02)
        d.proc.send_signal(signal.SIGTERM)
        # a hang guard: the drain's own bound, plus the interpreter's start and exit
        async with asyncio.timeout(DRAIN_S + 3):
            chat_rest, messages_rest = await chat.read(), await messages.read()
            refused = await whole
            assert await d.proc.wait() == 0
        assert refused.status == 503
        assert (await refused.json())["error"]["code"] == "server_shutdown"
    last = [f for f in chat_rest.split(b"\n\n") if f.strip()][-1]
    assert json.loads(last.removeprefix(b"data: "))["error"]["code"] == "server_shutdown"
    last = [f for f in messages_rest.split(b"\n\n") if f.strip()][-1]
    assert last.startswith(b"event: error\n") and b"shutting down" in last
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select route, stream, status, status_code, error_type from requests").fetchall()
    assert sorted(rows) == sorted([
        ("chat", 1, "error", 503, "server_shutdown"),
        ("messages", 1, "error", 503, "server_shutdown"),
        ("chat", 0, "error", 503, "server_shutdown"),
    ])
