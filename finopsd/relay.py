"""The one core path: hooks around an adapter call, and the chunk loop.

``run_exchange`` runs the pre-hooks in order, the core, then the post-hooks of
every hook whose pre ran, in reverse, from ``finally`` (so a disconnect or an
upstream failure is still logged and charged). ``relay_chat`` does the upstream
call for a canonical chat request and answers in OpenAI's dialect; other
dialects pass their own ``Emitter``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from finopsd.appkeys import RUNTIME
from finopsd.chunks import StreamNormaliser, UsageTap
from finopsd.errors import BadRequest, GatewayError, UpstreamError
from finopsd.exchange import Exchange
from finopsd.providers.base import Adapter, Target, UpstreamRequest
from finopsd.providers.openai_compat import OpenAIAdapter
from finopsd.router import can_fall_back, open_upstream, plan
from finopsd.sse import DONE, frame
from finopsd.upstream import read_error

log = logging.getLogger(__name__)


class ClientGone(Exception):
    """A write found the client gone (before aiohttp's cancellation arrived)."""


class Hook(Protocol):
    """Around the core path: ``pre`` may refuse by raising GatewayError; ``post`` never raises."""

    async def pre(self, ex: Exchange, request: web.Request) -> None: ...

    async def post(self, ex: Exchange) -> None: ...


async def run_exchange(
    request: web.Request, ex: Exchange, core: Callable[[], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    hooks: tuple[Hook, ...] = request.app[RUNTIME].hooks
    ran: list[Hook] = []
    try:
        for hook in hooks:
            ran.append(hook)
            await hook.pre(ex, request)
        return await core()
    except GatewayError as e:
        ex.fail(e.status, e.type, e.message)
        raise
    except (asyncio.CancelledError, ClientGone):
        # aiohttp cancels the handler when its client disconnects (handler_cancellation=True),
        # which aborts the upstream call at once; the post-hooks below still log and charge
        ex.fail(499, "client_closed", "the client disconnected", status="client_closed")
        raise
    except BaseException as e:
        ex.fail(500, "server_error", type(e).__name__)
        raise
    finally:
        ex.duration_ms = ex.elapsed_ms()
        for hook in reversed(ran):
            try:
                await hook.post(ex)
            except Exception:
                log.exception("post-hook %s failed for request %s", type(hook).__name__, ex.id)


class Emitter(Protocol):
    """How a dialect answers: the whole response, or stream frames built from canonical chunks."""

    def whole(self, completion: dict[str, Any]) -> web.Response: ...

    def frames(self, chunk: dict[str, Any], raw: str | None) -> bytes: ...

    def end(self) -> bytes: ...

    def error_frame(self, err: GatewayError) -> bytes: ...


class OpenAIEmitter:
    """Answers in OpenAI chat-completions form; unchanged upstream chunks go out as their own bytes."""

    __slots__ = ("model", "_patch")

    def __init__(self, model: str) -> None:
        self.model = model
        self._patch: tuple[str, str, str] | None = None

    def whole(self, completion: dict[str, Any]) -> web.Response:
        completion["model"] = self.model
        return web.json_response(completion)

    def frames(self, chunk: dict[str, Any], raw: str | None) -> bytes:
        if raw is not None:
            patched = self._patch_model(chunk, raw)
            if patched is not None:
                return b"data: " + patched.encode() + b"\n\n"
        chunk["model"] = self.model
        return frame(chunk)

    def _patch_model(self, chunk: dict[str, Any], raw: str) -> str | None:
        """Swap the upstream model name in the raw JSON; None when it is not found verbatim."""
        upstream = chunk.get("model")
        if upstream == self.model or upstream is None:
            return raw
        if self._patch is None or self._patch[0] != upstream:
            name = json.dumps(upstream)
            self._patch = (upstream, f'"model":{name}', f'"model":{json.dumps(self.model)}')
        old, new = self._patch[1], self._patch[2]
        if old in raw:
            return raw.replace(old, new, 1)
        spaced = old.replace(":", ": ", 1)
        return raw.replace(spaced, new, 1) if spaced in raw else None

    def end(self) -> bytes:
        return DONE

    def error_frame(self, err: GatewayError) -> bytes:
        return frame(err.body())


SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


async def relay_chat(
    request: web.Request,
    ex: Exchange,
    req: dict[str, Any],
    emitter: Emitter,
    endpoint: str = "chat/completions",
) -> web.StreamResponse:
    """Send a canonical request to its provider and answer through ``emitter``.

    ``endpoint`` other than chat (embeddings, completions) is forwarded as is, to
    OpenAI-protocol providers only.
    """
    rt = request.app[RUNTIME]
    fallbacks = req.pop("fallbacks", None)  # ours, not the upstream's; its shape was checked by the route
    targets = plan(rt.config, str(req["model"]), fallbacks)

    def build(adapter: Adapter, target: Target) -> UpstreamRequest:
        if endpoint == "chat/completions":
            return adapter.build_request(target, req, stream=ex.stream)
        if isinstance(adapter, OpenAIAdapter):
            return adapter.build_passthrough(target, endpoint, req)
        raise BadRequest(f"provider {target.provider.name!r} does not serve /{endpoint}", param="model")

    for i, (provider, model) in enumerate(targets):
        ex.provider, ex.upstream_model = provider.name, model
        try:
            upstream, adapter, target = await open_upstream(rt.session, rt.keys, ex, provider, model, build)
        except GatewayError as e:
            if i + 1 < len(targets) and can_fall_back(e):
                log.info("request %s: %s/%s failed (%s), falling back", ex.id, provider.name, model, e.status)
                continue
            raise
        ex.upstream_key_name = target.key_name
        return await _answer(request, ex, req, emitter, endpoint, upstream, adapter, target)
    raise AssertionError("plan() always yields a target")


async def _answer(
    request: web.Request,
    ex: Exchange,
    req: dict[str, Any],
    emitter: Emitter,
    endpoint: str,
    upstream: aiohttp.ClientResponse,
    adapter: Adapter,
    target: Target,
) -> web.StreamResponse:
    """Relay an open 2xx upstream answer: whole, or as a stream with errors in-band."""
    response: web.StreamResponse | None = None
    try:
        async with upstream:
            if not ex.stream:
                return _whole(ex, adapter, target, await _read_body(target, upstream), emitter)
            response = web.StreamResponse(headers=SSE_HEADERS)
            chat = endpoint == "chat/completions"
            try:
                await _stream(request, ex, adapter, target, upstream, emitter, response, req, chat)
            except BaseException:
                upstream.close()  # drop the connection: the upstream must see us leave
                raise
            return response
    except GatewayError as e:
        if response is None or not response.prepared:
            raise
        ex.fail(e.status, e.type, e.message)
        await _send(request, ex, response, emitter.error_frame(e))
        return response


async def _read_body(target: Target, upstream: aiohttp.ClientResponse) -> bytes:
    try:
        async with asyncio.timeout(target.provider.timeouts.total):
            return await upstream.read()
    except (TimeoutError, aiohttp.ClientError) as e:
        raise read_error(target.provider, e) from None


def _whole(ex: Exchange, adapter: Adapter, target: Target, body: bytes, emitter: Emitter) -> web.Response:
    completion = adapter.parse_response(target, body)
    ex.mark_first_token()
    choices = completion.get("choices") or [{}]
    ex.transcript.add_message(choices[0].get("message") or {})
    ex.transcript.finish_reason = choices[0].get("finish_reason")
    ex.transcript.usage = completion.get("usage")
    ex.status_code = 200
    return emitter.whole(completion)


async def _stream(
    request: web.Request,
    ex: Exchange,
    adapter: Adapter,
    target: Target,
    upstream: aiohttp.ClientResponse,
    emitter: Emitter,
    response: web.StreamResponse,
    req: dict[str, Any],
    chat: bool,
) -> None:
    opts = req.get("stream_options")
    include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
    fixer = (StreamNormaliser if chat else UsageTap)(ex.transcript, include_usage=include_usage)
    decoder = adapter.new_decoder()
    state = adapter.new_stream(target)
    passthrough = getattr(adapter, "passthrough", False)
    timeouts = target.provider.timeouts
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeouts.total
    content = upstream.content
    try:
        async with asyncio.timeout(None) as idle:
            while True:
                idle.reschedule(min(loop.time() + timeouts.idle, deadline))
                data = await content.readany()
                frames = decoder.feed(data) if data else decoder.close()
                out: list[bytes] = []
                try:
                    for event, payload in frames:
                        for chunk in adapter.parse_event(state, event, payload):
                            fixed, changed = fixer.fix(chunk)
                            if fixed is not None:
                                out.append(emitter.frames(fixed, payload if passthrough and not changed else None))
                finally:  # what came before an in-band error still reaches the client first
                    if out:
                        await _send(request, ex, response, b"".join(out))
                if not data:
                    break
    except (TimeoutError, aiohttp.ClientError) as e:
        raise read_error(target.provider, e) from None
    if not response.prepared:  # a 200 with no event at all (an HTML proxy page, an empty body)
        kind = upstream.headers.get("Content-Type", "no content type")
        raise UpstreamError(f"{target.provider.name}: the stream ended without any event ({kind})",
                            code="upstream_empty_stream")
    await _send(request, ex, response, emitter.end())
    try:
        await response.write_eof()
    except ConnectionResetError:
        raise ClientGone() from None


async def _send(request: web.Request, ex: Exchange, response: web.StreamResponse, data: bytes) -> None:
    """Write to the client, preparing the response on the first write (so earlier errors keep their status)."""
    try:
        if not response.prepared:
            ex.status_code = 200
            await response.prepare(request)
        ex.mark_first_token()
        await response.write(data)
    except ConnectionResetError:
        raise ClientGone() from None
