"""A cheap fake OpenAI upstream: canned chat completions, whole or streamed.

``POST /v1/chat/completions`` answers a canned ``chat.completion`` or an SSE stream
shaped like OpenAI's (https://platform.openai.com/docs/api-reference/chat/streaming):
a first chunk with ``role``, ``--chunks`` content chunks, one tool call whose
arguments are split over several deltas (the first delta carries index, id, type,
name and ``arguments: ""``), a ``finish_reason: "tool_calls"`` chunk, the usage
chunk (``choices: []``) and ``data: [DONE]``. Every chunk carries ``"usage": null``
as OpenAI's do when ``stream_options.include_usage`` is set (the bench always sets it).

Everything is encoded once at startup so the fake spends as little CPU as possible:
it shares a core with the load driver, and its cost is not the gateway's.
``--delay-ms`` sleeps between chunks (0: each chunk is still its own write).

    python -m bench.fake_upstream --port 0 --chunks 20 --delay-ms 0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from aiohttp import web

from bench.serving import serve_until_killed

UPSTREAM_MODEL = "gpt-4.1-mini-2025-04-14"  # a dated snapshot, as OpenAI answers: gateways rename it
COMPLETION_ID = "chatcmpl-BENCHb7Qz1x9JcV3mKpR2sT4uW6yA8"
CALL_ID = "call_Xq2Wd7fLpR9sT3vB5nM1kJ8h"
FINGERPRINT = "fp_6f2eabb9a5"
WORDS = ("Let", " me", " read", " the", " file", " first", " to", " see", " how", " the", " parser",
         " handles", " nested", " blocks", ",", " then", " I", " will", " patch", " it", ".")
# a read_file call, cut where real models cut: inside strings and between keys
ARG_PIECES = ('{"', 'path', '": "src/', 'parser/blocks', '.py", "', 'start_line": 1', '20}')
USAGE = {
    "prompt_tokens": 1843, "completion_tokens": 64, "total_tokens": 1907,
    "prompt_tokens_details": {"cached_tokens": 1536, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                  "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
}
SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}


def _chunk(created: int, delta: dict[str, Any] | None, finish: str | None = None,
           usage: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {
        "id": COMPLETION_ID, "object": "chat.completion.chunk", "created": created, "model": UPSTREAM_MODEL,
        "service_tier": "default", "system_fingerprint": FINGERPRINT,
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
    }
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def stream_frames(chunks: int, created: int) -> list[bytes]:
    """The SSE frames of one streamed answer, in order: role, content, split tool call, finish, usage, [DONE]."""
    frames = [_chunk(created, {"role": "assistant", "content": "", "refusal": None})]
    frames += [_chunk(created, {"content": WORDS[i % len(WORDS)]}) for i in range(chunks)]
    frames.append(_chunk(created, {"tool_calls": [{"index": 0, "id": CALL_ID, "type": "function",
                                                    "function": {"name": "read_file", "arguments": ""}}]}))
    frames += [_chunk(created, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
               for piece in ARG_PIECES]
    frames.append(_chunk(created, {}, "tool_calls"))
    frames.append(_chunk(created, None, usage=USAGE))
    frames.append(b"data: [DONE]\n\n")
    return frames


def whole_body(chunks: int, created: int) -> bytes:
    text = "".join(WORDS[i % len(WORDS)] for i in range(chunks))
    body = {
        "id": COMPLETION_ID, "object": "chat.completion", "created": created, "model": UPSTREAM_MODEL,
        "service_tier": "default", "system_fingerprint": FINGERPRINT,
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant", "content": text, "refusal": None, "annotations": [],
                "tool_calls": [{"id": CALL_ID, "type": "function",
                                "function": {"name": "read_file", "arguments": "".join(ARG_PIECES)}}],
            },
            "logprobs": None, "finish_reason": "tool_calls",
        }],
        "usage": USAGE,
    }
    return json.dumps(body, indent=2).encode()  # OpenAI pretty-prints whole responses


def make_app(chunks: int, delay_ms: float) -> web.Application:
    created = int(time.time())
    frames = stream_frames(chunks, created)
    whole = whole_body(chunks, created)
    delay = delay_ms / 1000

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        # a substring test instead of json.loads: the fake must stay cheap; both spellings gateways write
        if b'"stream": true' not in body and b'"stream":true' not in body:
            return web.Response(body=whole, content_type="application/json")
        resp = web.StreamResponse(headers=SSE_HEADERS)
        await resp.prepare(request)
        for data in frames:
            await resp.write(data)
            if delay:
                await asyncio.sleep(delay)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def main(host: str, port: int, chunks: int, delay_ms: float) -> None:
    await serve_until_killed(make_app(chunks, delay_ms), host, port, "fake upstream")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per stream (default 20)")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="sleep between stream chunks (default 0)")
    args = parser.parse_args()
    try:
        asyncio.run(main(args.host, args.port, args.chunks, args.delay_ms))
    except KeyboardInterrupt:
        pass
