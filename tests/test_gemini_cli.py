"""The real Gemini CLI (``@google/gemini-cli`` from npm) runs a tool-using task through /genai.

Its base URL is the gateway's ``/genai`` and its key a team's virtual key. Each upstream is a fake
agent model in its provider's wire format: asked with tools, it calls ``read_file`` on the file the
prompt names; given the result, it answers with the code word it read. So the task can only
finish if the call went out, Gemini CLI ran the tool, and the result came back matched to its call.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.logrows import logged_rows
from tests.npm_tools import ROOT, npm_tool

VERSION = "0.61.0"
NPM_PREFIX = ROOT / ".cache" / "npm-gemini-cli"
GEMINI = NPM_PREFIX / "node_modules" / ".bin" / "gemini"
TEAM_KEY = "vk-team-gemini-cli"
CODE_WORD = "tangerine-42"
PROMPT = "Read the file notes.txt in the current directory and tell me the code word in it."


@pytest.fixture(scope="module")
def gemini_cli() -> Path:
    """Gemini CLI from npm, installed once into the project's cache dir."""
    return npm_tool(NPM_PREFIX, f"@google/gemini-cli@{VERSION}", GEMINI, "the Gemini CLI test")


# --- fake agent models, one per wire format --------------------------------------------------

class Agent:
    """What the fakes share: the file to read, and what they were asked."""

    def __init__(self, workspace: Path) -> None:
        self.path = str(workspace / "notes.txt")
        self.seen: list[dict[str, Any]] = []

    def answer(self, result: str) -> str:
        found = re.search(r"[a-z]+-\d+", result)
        return f"The code word is {found.group(0) if found else 'not there'}."


def read_file_args(params: dict[str, Any], path: str) -> dict[str, Any]:
    """Arguments for the client's own read_file tool, whatever it names its path parameter."""
    props = params.get("properties") or {}
    name = next((p for p in props if "path" in p), "file_path")
    return {name: path}


def gemini_app(agent: Agent) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        agent.seen.append(body)
        last = (body.get("contents") or [{}])[-1].get("parts") or []
        results = [p["functionResponse"] for p in last if "functionResponse" in p]
        decls = [d for t in body.get("tools") or () for d in t.get("functionDeclarations") or ()]
        read = next((d for d in decls if d["name"] == "read_file"), None)
        if results:
            parts = [{"text": agent.answer(json.dumps(results))}]
        elif read is not None:
            schema = read.get("parametersJsonSchema") or read.get("parameters") or {}
            parts = [{"functionCall": {"name": "read_file", "args": read_file_args(schema, agent.path)},
                      "thoughtSignature": "c2lnbmVkLWJ5LWZha2U="}]
        else:  # Gemini CLI's own helper calls (next speaker, routing): a JSON answer
            parts = [{"text": json.dumps({"reasoning": "done", "next_speaker": "user", "model_choice": "flash"})}]
        event = {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
                 "usageMetadata": {"promptTokenCount": 1200, "candidatesTokenCount": 20, "totalTokenCount": 1220},
                 "modelVersion": "gemini-2.5-pro"}
        if ":countTokens" in request.path:
            return web.json_response({"totalTokens": 1200})
        if ":streamGenerateContent" not in request.path:
            return web.json_response(event)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: " + json.dumps(event).encode() + b"\r\n\r\n")
        return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def openai_app(agent: Agent) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        agent.seen.append(body)
        messages = body["messages"]
        tools = {t["function"]["name"]: t["function"] for t in body.get("tools") or ()}
        if messages[-1]["role"] == "tool":
            delta: dict[str, Any] = {"role": "assistant", "content": agent.answer(messages[-1]["content"])}
            finish = "stop"
        elif "read_file" in tools:
            args = read_file_args(tools["read_file"].get("parameters") or {}, agent.path)
            delta = {"role": "assistant", "tool_calls": [{"index": 0, "id": "call_fake_1", "type": "function",
                     "function": {"name": "read_file", "arguments": json.dumps(args)}}]}
            finish = "tool_calls"
        else:
            delta, finish = {"role": "assistant", "content": '{"next_speaker": "user", "reasoning": "done"}'}, "stop"
        usage = {"prompt_tokens": 900, "completion_tokens": 15, "total_tokens": 915}
        if not body.get("stream"):
            message = {k: v for k, v in delta.items() if k != "index"}
            return web.json_response({"id": "chatcmpl-fake", "object": "chat.completion", "model": "gpt-5", "choices": [
                {"index": 0, "message": message, "finish_reason": finish}], "usage": usage})
        chunks = [{"choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
                  {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}, {"choices": [], "usage": usage}]
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for chunk in chunks:
            await resp.write(b"data: " + json.dumps({"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                                                     "model": "gpt-5", **chunk}).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    return app


def anthropic_app(agent: Agent) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        agent.seen.append(body)
        last = body["messages"][-1]["content"]
        results = [b for b in last if isinstance(b, dict) and b.get("type") == "tool_result"] \
            if isinstance(last, list) else []
        tools = {t["name"]: t for t in body.get("tools") or ()}
        if results:
            block: dict[str, Any] = {"type": "text", "text": agent.answer(json.dumps(results))}
        elif "read_file" in tools:
            block = {"type": "tool_use", "id": "toolu_fake_1", "name": "read_file",
                     "input": read_file_args(tools["read_file"]["input_schema"], agent.path)}
        else:
            block = {"type": "text", "text": '{"next_speaker": "user", "reasoning": "done"}'}
        stop = "tool_use" if block["type"] == "tool_use" else "end_turn"
        message = {"id": "msg_fake", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
                   "content": [block], "stop_reason": stop, "stop_sequence": None,
                   "usage": {"input_tokens": 800, "output_tokens": 12}}
        if not body.get("stream"):
            return web.json_response(message)
        start = {**message, "content": [], "stop_reason": None}
        empty = {"type": "text", "text": ""} if block["type"] == "text" else {**block, "input": {}}
        delta = {"type": "text_delta", "text": block["text"]} if block["type"] == "text" else {
            "type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        events = [("message_start", {"type": "message_start", "message": start}),
                  ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": empty}),
                  ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
                  ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                  ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop},
                                     "usage": {"output_tokens": 12}}),
                  ("message_stop", {"type": "message_stop"})]
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for name, data in events:
            await resp.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        return resp

    app = web.Application()
    app.router.add_post("/v1/messages", handle)
    return app


# --- the task ---------------------------------------------------------------------------------

@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    work = tmp_path / "project"
    work.mkdir()
    (work / "notes.txt").write_text(f"Meeting notes.\nThe code word is {CODE_WORD}.\n")
    home = tmp_path / "home"
    (home / ".gemini").mkdir(parents=True)
    # no telemetry, no update checks, no prompts: this machine has no network but loopback
    (home / ".gemini" / "settings.json").write_text(json.dumps({
        "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": False}},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
        "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
    }))
    return work


@pytest.fixture
async def gateway(make_gateway: Any, aiohttp_server: Any, workspace: Path) -> tuple[TestClient, dict[str, Agent]]:
    agents = {name: Agent(workspace) for name in ("gemini", "openai", "anthropic")}
    gemini = await aiohttp_server(gemini_app(agents["gemini"]))
    oai = await aiohttp_server(openai_app(agents["openai"]))
    ant = await aiohttp_server(anthropic_app(agents["anthropic"]))
    sha = hashlib.sha256(TEAM_KEY.encode()).hexdigest()
    gw = await make_gateway(
        "providers:\n"
        f"  gemini: {{base_url: '{gemini.make_url('/v1beta')}', keys: [{{value: AIza-upstream}}]}}\n"
        f"  openai: {{base_url: '{oai.make_url('/v1')}', keys: [{{value: sk-upstream}}], models: [gpt-5]}}\n"
        f"  anthropic: {{base_url: '{ant.make_url('')}', keys: [{{value: sk-ant-upstream}}]}}\n"
        "pricing:\n  gemini/*: {input: 1.25, output: 10}\n  openai/*: {input: 1.25, output: 10}\n"
        "  anthropic/*: {input: 3, output: 15}\n"
        f"virtual_keys:\n  - {{name: cli, key_sha256: '{sha}', team: platform}}\n"
        "teams:\n  platform: {}\n")
    return gw, agents


async def run_gemini(cli: Path, gw: TestClient, workspace: Path, model: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI", "GOOGLE"))}
    env.update(HOME=str(workspace.parent / "home"), GOOGLE_GEMINI_BASE_URL=str(gw.make_url("/genai")),
               GEMINI_API_KEY=TEAM_KEY, NO_COLOR="1", CI="1", NO_PROXY="127.0.0.1,localhost")
    proc = await asyncio.create_subprocess_exec(
        str(cli), "--model", model, "--yolo", "--prompt", PROMPT, cwd=workspace, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
    try:
        async with asyncio.timeout(240):  # a hang guard: Node starts slowly on a busy machine
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, f"gemini exited {proc.returncode}:\n{out.decode()}\n{err.decode()[-3000:]}"
    return out.decode()


@pytest.mark.parametrize(("model", "provider"), [
    ("gemini-2.5-pro", "gemini"), ("openai/gpt-5", "openai"), ("anthropic/claude-sonnet-4-6", "anthropic")])
async def test_gemini_cli_completes_a_tool_task(
    gemini_cli: Path, gateway: tuple[TestClient, dict[str, Agent]], workspace: Path, model: str, provider: str
) -> None:
    gw, agents = gateway
    out = await run_gemini(gemini_cli, gw, workspace, model)
    assert CODE_WORD in out, out
    asked = agents[provider].seen
    assert len(asked) >= 2  # the call, then the answer from the tool's result
    rows = [r for r in await logged_rows(gw) if r["provider"] == provider]
    assert rows and all(r["route"] == "genai" and r["key_name"] == "cli" and r["team"] == "platform" for r in rows)
    assert all(r["cost_usd"] and r["cost_usd"] > 0 for r in rows)
    assert any(c["name"] == "read_file" for r in rows for c in r["response"]["tool_calls"])
    listed = await (await gw.get("/api/logs", params={"provider": provider})).json()  # what /logs shows
    assert len(listed["items"]) == len(rows) and listed["totals"]["cost_usd"] > 0
