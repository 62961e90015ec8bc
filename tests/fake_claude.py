"""A fake Claude upstream that implements prompt caching as Anthropic and Bedrock document it.

Serves ``POST /v1/messages`` (Anthropic; SSE when ``stream``), Vertex's ``…/publishers/anthropic/
models/{model}:rawPredict`` and ``:streamRawPredict`` (the same body, model in the URL) and
``POST /model/{id}/converse`` (Bedrock Converse, whole answers). What it enforces and reports
(https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching,
https://docs.aws.amazon.com/bedrock/latest/userguide/prompt-caching.html):

- 400 for more than 4 breakpoints (a top-level ``cache_control`` counts as one), for a
  marker on a thinking block, an empty text block or a message object, for a ``cachePoint``
  that opens a list (it marks the block before it), for a TTL other than 5m/1h, and for a
  1h marker after a 5m one.
- The prefix is tools → system → messages, block by block (about 4 characters a token).
  A breakpoint writes the prefix that ends at its block when that prefix reaches the
  model's minimum; a later request reads the longest prefix written before that ends at
  one of its breakpoints or at most 20 blocks before one, while the entry lives (its TTL,
  refreshed by each read).
- Usage as the APIs report it: ``input_tokens`` excludes cache reads and writes;
  ``cache_read_input_tokens``, ``cache_creation_input_tokens`` and the 5m/1h split
  (Bedrock: ``cacheReadInputTokens``, ``cacheWriteInputTokens``, ``cacheDetails``).

The answer depends only on what the model would see (markers removed), so a session with
and without caching gets the same answers: a ``read_file`` tool call when tools are offered,
else a text that names a digest of the prompt.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from finopsd.providers.cache_points import min_cacheable_tokens

MAX_BREAKPOINTS: Final = 4
LOOKBACK: Final = 20
TTL_S: Final = {"5m": 300.0, "1h": 3600.0}


class Refused(Exception):
    """What the API answers 400 for."""


@dataclass
class Block:
    digest: str  # of this block and everything before it, markers removed
    tokens: int
    ttl: str | None  # a breakpoint's TTL, None when the block is not one


@dataclass
class Usage:
    total: int
    read: int = 0
    written: dict[str, int] = field(default_factory=lambda: {"5m": 0, "1h": 0})

    @property
    def fresh(self) -> int:
        return self.total - self.read - sum(self.written.values())


def _tokens(value: Any) -> int:
    return max(1, len(json.dumps(value, sort_keys=True)) // 4)


def _ttl(marker: Any, where: str) -> str:
    if not isinstance(marker, dict) or marker.get("type", "ephemeral") not in ("ephemeral", "default"):
        raise Refused(f"{where}: cache_control.type must be 'ephemeral'")
    ttl = marker.get("ttl", "5m")
    if ttl not in TTL_S:
        raise Refused(f"{where}: cache_control.ttl must be '5m' or '1h'")
    return str(ttl)


class PromptCache:
    """Prefix entries by digest → expiry; ``charge`` applies one request's breakpoints."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.entries: dict[str, tuple[float, str]] = {}

    def charge(self, blocks: list[Block], model: str) -> Usage:
        points = [i for i, b in enumerate(blocks) if b.ttl]
        if len(points) > MAX_BREAKPOINTS:
            raise Refused(f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {len(points)}.")
        ttls = [blocks[i].ttl for i in points]
        if "5m" in ttls and "1h" in ttls[ttls.index("5m"):]:
            raise Refused("a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block")
        cumulative, running = [], 0
        for b in blocks:
            running += b.tokens
            cumulative.append(running)
        usage = Usage(total=running)
        now = self.clock()
        hit = -1
        for bp in reversed(points):  # the last breakpoint first, each with its 20-block lookback
            for j in range(bp, max(bp - LOOKBACK, -1), -1):
                entry = self.entries.get(blocks[j].digest)
                if entry and entry[0] > now:
                    hit = j
                    break
            if hit >= 0:
                break
        if hit >= 0:
            usage.read = cumulative[hit]
            ttl = self.entries[blocks[hit].digest][1]
            self.entries[blocks[hit].digest] = (now + TTL_S[ttl], ttl)  # a read refreshes the entry
        minimum = min_cacheable_tokens(model)
        start = usage.read
        for bp in points:
            if bp <= hit or cumulative[bp] < minimum:
                continue  # already read, or too short to cache
            ttl = blocks[bp].ttl or "5m"
            usage.written[ttl] += cumulative[bp] - start
            start = cumulative[bp]
            self.entries[blocks[bp].digest] = (now + TTL_S[ttl], ttl)
        return usage


def _chain(items: list[tuple[Any, str | None]]) -> list[Block]:
    out, digest = [], hashlib.sha256()
    for value, ttl in items:
        digest.update(json.dumps(value, sort_keys=True).encode())
        out.append(Block(digest.copy().hexdigest(), _tokens(value), ttl))
    return out


# --- Messages API --------------------------------------------------------------------------


def _without(block: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in block.items() if k != key}


def messages_blocks(body: dict[str, Any]) -> list[Block]:
    """The prefix of a Messages body, each block with its marker's TTL; 400s for misplaced markers."""
    items: list[tuple[Any, str | None]] = []

    def add(block: Any, where: str, role: str | None = None) -> None:
        if not isinstance(block, dict):
            raise Refused(f"{where}: must be an object")
        ttl = _ttl(block["cache_control"], where) if "cache_control" in block else None
        if ttl and block.get("type") in ("thinking", "redacted_thinking"):
            raise Refused(f"{where}: thinking blocks cannot be cached directly")
        if ttl and block.get("type") == "text" and not block.get("text"):
            raise Refused(f"{where}: cache_control cannot be set for empty text blocks")
        inner = block.get("content") if block.get("type") == "tool_result" else None
        if isinstance(inner, list):  # a tool_result's text and image blocks may carry markers of their own
            items.append(({"role": role, **_without(_without(block, "cache_control"), "content")}, None))
            for k, part in enumerate(inner):
                add(part, f"{where}.content.{k}", role)
            items[-1] = (items[-1][0], items[-1][1] or ttl)
            return
        items.append(({"role": role, **_without(block, "cache_control")} if role else _without(block, "cache_control"),
                      ttl))

    for i, tool in enumerate(body.get("tools") or ()):
        add(tool, f"tools.{i}")
    system = body.get("system")
    for i, block in enumerate([{"type": "text", "text": system}] if isinstance(system, str) else system or ()):
        add(block, f"system.{i}")
    for i, msg in enumerate(body.get("messages") or ()):
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
            raise Refused(f"messages.{i}: role must be user or assistant")
        if "cache_control" in msg:
            raise Refused(f"messages.{i}.cache_control: Extra inputs are not permitted")
        content = msg.get("content")
        for k, block in enumerate([{"type": "text", "text": content}] if isinstance(content, str) else content or ()):
            add(block, f"messages.{i}.content.{k}", msg["role"])
    if "cache_control" in body:  # automatic caching: a breakpoint on the last cacheable block
        ttl = _ttl(body["cache_control"], "cache_control")
        last = next((k for k in range(len(items) - 1, -1, -1)
                     if not (isinstance(items[k][0], dict) and items[k][0].get("type") in ("thinking", "redacted_thinking"))), None)
        if last is not None and items[last][1] is None:
            items[last] = (items[last][0], ttl)
    return _chain(items)


def seen_by_model(body: Any) -> Any:
    """The body with every marker removed: what the model sees."""
    if isinstance(body, dict):
        return {k: seen_by_model(v) for k, v in body.items() if k != "cache_control" and k != "stream"}
    if isinstance(body, list):
        return [seen_by_model(v) for v in body if not (isinstance(v, dict) and "cachePoint" in v)]
    return body


def _answer(body: dict[str, Any], tool_names: list[str]) -> tuple[str, dict[str, Any] | None]:
    """A text naming a digest of what the model sees, and a tool call when tools are offered."""
    digest = hashlib.sha256(json.dumps(seen_by_model(body), sort_keys=True).encode()).hexdigest()[:12]
    if tool_names:
        turn = sum(1 for m in body.get("messages") or () if isinstance(m, dict) and m.get("role") == "assistant")
        return f"Reading file {turn} ({digest}).", {"id": f"toolu_{digest}", "name": tool_names[0],
                                                     "input": {"path": f"src/module_{turn}.py"}}
    return f"answer {digest}", None


class FakeClaude:
    """The app, the cache it keeps, and every request body it accepted or refused."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.cache = PromptCache(clock)
        self.bodies: list[dict[str, Any]] = []
        self.refusals: list[str] = []
        self.url = ""
        self.app = web.Application()
        self.app.router.add_post("/v1/messages", self.messages)
        self.app.router.add_post("/v1/projects/{project}/locations/{location}/publishers/anthropic/models/{model_verb}",
                                 self.messages)
        self.app.router.add_post("/model/{model_id}/converse", self.converse)

    def refuse(self, message: str) -> web.Response:
        self.refusals.append(message)
        return web.json_response({"type": "error", "error": {"type": "invalid_request_error", "message": message}},
                                 status=400)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        model = str(body.get("model") or request.match_info.get("model_verb", "").partition(":")[0])
        try:
            usage = self.cache.charge(messages_blocks(body), model)
        except Refused as e:
            return self.refuse(str(e))
        text, call = _answer(body, [t.get("name") for t in body.get("tools") or () if isinstance(t, dict)])
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        if call:
            content.append({"type": "tool_use", **call})
        output = _tokens(content)
        wire_usage = {
            "input_tokens": usage.fresh, "cache_read_input_tokens": usage.read,
            "cache_creation_input_tokens": sum(usage.written.values()),
            "cache_creation": {"ephemeral_5m_input_tokens": usage.written["5m"],
                               "ephemeral_1h_input_tokens": usage.written["1h"]},
        }
        message = {"id": f"msg_{len(self.bodies):04d}", "type": "message", "role": "assistant", "model": model,
                   "content": content, "stop_reason": "tool_use" if call else "end_turn", "stop_sequence": None,
                   "usage": {**wire_usage, "output_tokens": output}}
        if not body.get("stream"):
            return web.json_response(message)
        return await self._stream(request, message, wire_usage, output)

    async def _stream(self, request: web.Request, message: dict[str, Any], usage: dict[str, Any],
                      output: int) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def send(event: str, data: dict[str, Any]) -> None:
            await resp.write(f"event: {event}\ndata: {json.dumps({'type': event, **data})}\n\n".encode())

        await send("message_start", {"message": {**message, "content": [], "stop_reason": None,
                                                 "usage": {**usage, "output_tokens": 1}}})
        for i, block in enumerate(message["content"]):
            if block["type"] == "text":
                await send("content_block_start", {"index": i, "content_block": {"type": "text", "text": ""}})
                await send("content_block_delta", {"index": i, "delta": {"type": "text_delta", "text": block["text"]}})
            else:
                await send("content_block_start", {"index": i, "content_block": {**block, "input": {}}})
                await send("content_block_delta", {"index": i, "delta": {
                    "type": "input_json_delta", "partial_json": json.dumps(block["input"])}})
            await send("content_block_stop", {"index": i})
        await send("message_delta", {"delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                     "usage": {"output_tokens": output}})
        await send("message_stop", {})
        await resp.write_eof()
        return resp

    async def converse(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        model = request.match_info["model_id"]
        try:
            usage = self.cache.charge(converse_blocks(body), model)
        except Refused as e:
            return self.refuse(str(e))
        text, _ = _answer(body, [])
        details = [{"ttl": ttl, "inputTokens": n} for ttl, n in usage.written.items() if n]
        return web.json_response({
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": "end_turn",
            "usage": {"inputTokens": usage.fresh, "outputTokens": 5, "totalTokens": usage.total + 5,
                      "cacheReadInputTokens": usage.read, "cacheWriteInputTokens": sum(usage.written.values()),
                      **({"cacheDetails": details} if details else {})},
            "metrics": {"latencyMs": 1},
        })


def converse_blocks(body: dict[str, Any]) -> list[Block]:
    """The prefix of a Converse body; a cachePoint marks the block before it."""
    items: list[tuple[Any, str | None]] = []

    def add_list(blocks: Any, where: str, role: str | None = None) -> None:
        for k, block in enumerate(blocks or ()):
            if isinstance(block, dict) and "cachePoint" in block:
                if not items or k == 0:
                    raise Refused(f"{where}.{k}: a cachePoint must follow the content it marks")
                items[-1] = (items[-1][0], _ttl(block["cachePoint"], f"{where}.{k}"))
            else:
                items.append(({"role": role, **block} if role else block, None))

    add_list((body.get("toolConfig") or {}).get("tools"), "toolConfig.tools")
    add_list(body.get("system"), "system")
    for i, msg in enumerate(body.get("messages") or ()):
        add_list(msg.get("content"), f"messages.{i}.content", msg.get("role"))
    return _chain(items)
