"""Every exchange that reaches the router becomes exactly one log row, whatever happens to it."""

from __future__ import annotations

import asyncio
import random
import string
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient

from finopsd.appkeys import LOGSTORE
from tests.fakes import FakeUpstream
from tests.test_routes_openai import MSGS, TOOLS
from tests.logrows import logged_rows

CHAT = "/openai/chat/completions"
pytestmark = pytest.mark.usefixtures("log_backend")  # every test on SQLite and on PostgreSQL


async def test_streamed_tool_turn_is_logged_with_transcript_and_usage(
    gateway: TestClient, openai_client: openai.AsyncOpenAI, fake_openai: FakeUpstream
) -> None:
    fake_openai.play("openai/parallel_tool_calls.sse")
    stream = await openai_client.chat.completions.create(
        model="openai/gpt-5", messages=MSGS, tools=TOOLS, stream=True, stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    (row,) = await logged_rows(gateway)
    assert row["id"] == stream.response.headers["x-request-id"]
    assert len(chunks) > 3
    assert row["provider"] == "openai" and row["model"] == "openai/gpt-5" and row["upstream_model"] == "gpt-5"
    assert row["status"] == "ok" and row["status_code"] == 200 and row["stream"] is True
    assert row["finish_reason"] == "tool_calls"
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (1520, 41, 1024)
    assert row["response"]["tool_calls"] == [
        {"id": "call_read_1", "name": "read_file", "arguments": '{"path": "src/main.py"}'},
        {"id": "call_list_2", "name": "list_files", "arguments": '{"path": "tests", "recursive": true}'},
    ]
    assert row["request"]["messages"] == MSGS
    assert row["ttft_ms"] is not None and row["duration_ms"] >= row["ttft_ms"]
    assert row["upstream_key_name"] == "openai-0"


async def test_request_id_header_names_the_row(gateway: TestClient, fake_openai: FakeUpstream) -> None:
    fake_openai.answer_json({"id": "x", "object": "chat.completion", "model": "gpt-5", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]})
    resp = await gateway.post(CHAT, json={"model": "openai/gpt-5", "messages": MSGS})
    (row,) = await logged_rows(gateway)
    assert row["id"] == resp.headers["x-request-id"]
    assert row["response"]["content"] == "hi"


async def test_upstream_error_is_logged_once(gateway: TestClient, fake_openai: FakeUpstream) -> None:
    fake_openai.answer_json({"error": {"message": "bad key upstream", "type": "invalid_request_error"}}, status=401)
    resp = await gateway.post(CHAT, json={"model": "openai/gpt-5", "messages": MSGS})
    assert resp.status == 401
    (row,) = await logged_rows(gateway)
    assert row["status"] == "error" and row["status_code"] == 401
    assert "bad key upstream" in row["error_message"]


async def test_client_disconnect_mid_stream_is_logged_with_partial_transcript(
    gateway: TestClient, fake_openai: FakeUpstream
) -> None:
    never = asyncio.Event()
    fake_openai.play("openai/parallel_tool_calls.sse", hold_before=3, until=never)
    resp = await gateway.post(CHAT, json={"model": "openai/gpt-5", "messages": MSGS, "stream": True})
    await resp.content.readline()
    resp.close()
    async with asyncio.timeout(5):
        await fake_openai.closed_early.wait()
        while not (found := await logged_rows(gateway)):
            await asyncio.sleep(0.02)
    (row,) = found
    assert row["status"] == "client_closed"
    assert row["response"]["tool_calls"][0]["name"] == "read_file"


async def test_bad_json_never_reaches_the_router_and_is_not_logged(gateway: TestClient) -> None:
    resp = await gateway.post(CHAT, data=b"{")
    assert resp.status == 400
    assert await logged_rows(gateway) == []


async def test_a_made_up_model_name_of_thousands_of_characters_is_logged(gateway: TestClient) -> None:
    # random letters: nothing for PostgreSQL to compress into its index entries
    name = "openai/" + "".join(random.choice(string.ascii_letters) for _ in range(6000))
    resp = await gateway.post(CHAT, json={"model": name, "messages": MSGS})
    assert resp.status == 404
    (row,) = await logged_rows(gateway)
    assert row["status_code"] == 404 and name.startswith(row["model"]) and len(row["model"]) >= 400
    assert gateway.server.app[LOGSTORE].failed_rows == 0


async def test_content_off_keeps_no_conversation(make_gateway: Any, fake_openai: FakeUpstream) -> None:
    gw = await make_gateway(f"logs: {{content: false}}\nproviders:\n  openai: {{base_url: {fake_openai.url}}}\n")
    fake_openai.play("openai/text_stream.sse")
    resp = await gw.post(CHAT, json={"model": "openai/gpt-5", "messages": MSGS, "stream": True})
    await resp.read()
    (row,) = await logged_rows(gw)
    assert row["request"] is None and row["response"] is None
    assert row["completion_tokens"] == 3
    assert await logged_rows(gw, q="Hello") == []


async def test_search_finds_words_of_the_conversation(gateway: TestClient, fake_openai: FakeUpstream) -> None:
    fake_openai.play("openai/text_stream.sse")
    resp = await gateway.post(CHAT, json={"model": "openai/gpt-5", "messages": MSGS, "stream": True})
    await resp.read()
    assert len(await logged_rows(gateway, q="world")) == 1  # from the answer
    assert len(await logged_rows(gateway, q="src/main.py")) == 1  # from the prompt
    assert await logged_rows(gateway, q="absent-word") == []


@pytest.mark.parametrize("big", [300, 3000])
async def test_images_are_logged_as_a_placeholder(gateway: TestClient, fake_openai: FakeUpstream, big: int) -> None:
    fake_openai.answer_json({"id": "x", "object": "chat.completion", "model": "gpt-5", "choices": []})
    url = "data:image/png;base64," + "A" * big
    msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]
    await gateway.post(CHAT, json={"model": "openai/gpt-5", "messages": msgs})
    (row,) = await logged_rows(gateway)
    logged = row["request"]["messages"][0]["content"][0]["image_url"]["url"]
    assert logged.startswith("data:image/png;base64,[") and "AAAA" not in logged
    assert fake_openai.last.body["messages"][0]["content"][0]["image_url"]["url"] == url


async def test_an_image_in_a_later_turn_of_a_big_conversation_is_a_placeholder(
    gateway: TestClient, fake_openai: FakeUpstream
) -> None:
    """The writer finds images in each new message (no scan of the whole body on the loop)."""
    fake_openai.answer_json({"id": "x", "object": "chat.completion", "model": "gpt-5", "choices": []})
    history: list[dict[str, Any]] = [{"role": "system", "content": "rules " * 60_000},
                                      {"role": "user", "content": "look at the screenshot next"}]
    await gateway.post(CHAT, json={"model": "openai/gpt-5", "messages": history})
    url = "data:image/jpeg;base64," + "B" * 5000
    history += [{"role": "assistant", "content": "send it"},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]
    await gateway.post(CHAT, json={"model": "openai/gpt-5", "messages": history})
    first, second = sorted(await logged_rows(gateway), key=lambda r: r["ts"])
    logged = second["request"]["messages"][3]["content"][0]["image_url"]["url"]
    assert logged.startswith("data:image/jpeg;base64,[") and "BBBB" not in logged
    assert second["session_id"] == first["session_id"]  # the same conversation, the prefix reused
    assert fake_openai.last.body["messages"][3]["content"][0]["image_url"]["url"] == url
