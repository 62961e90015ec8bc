"""The one core path: hooks around an adapter call, and the chunk loop.

``run_exchange`` runs the pre-hooks in order, the core, then the post-hooks of
every hook whose pre ran, in reverse, from ``finally`` (so a disconnect or an
upstream failure is still logged and charged). ``relay`` makes the upstream
call a ``Leg`` describes and answers through the leg's ``Emitter``: OpenAI's
dialect by default, another dialect's translator, or the upstream's own bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import aiohttp
from aiohttp import web

from finopsd.appkeys import RUNTIME
from finopsd.caching import with_auto_cache
from finopsd.chunks import StreamNormaliser, UsageTap
from finopsd.errors import BadRequest, GatewayError, UpstreamError
from finopsd.exchange import Exchange
from finopsd.providers.base import Adapter, Target, UpstreamRequest
from finopsd.providers.openai_compat import OpenAIAdapter
from finopsd.providers.shape import check_chunk, check_completion, parsed
from finopsd.router import can_fall_back, open_upstream, plan
from finopsd.sse import DONE, EventTooLarge, frame
from finopsd.upstream import answer_cap, answer_too_large, event_cap, event_too_large, read_body, read_error
from finopsd.usage import with_cache_fields

log = logging.getLogger(__name__)


class ClientGone(Exception):
    """A write found the client gone (before aiohttp's cancellation arrived)."""


class Hook(Protocol):
    """Around the core path: ``pre`` may refuse by raising GatewayError; ``post`` never raises."""

    async def pre(self, ex: Exchange, request: web.Request) -> None: ...

    async def post(self, ex: Exchange) -> None: ...


T = TypeVar("T")


async def run_exchange(
    request: web.Request, ex: Exchange, core: Callable[[], Awaitable[T]], *, model_for_hooks: bool = True
) -> T:
    """Pre-hooks, the core, then post-hooks from ``finally``: one log row whatever happens.

    ``model_for_hooks=False`` hides ``ex.model`` from the pre-hooks (an MCP tool name is
    checked against the key's ``mcp_tools`` by the core, not against its LLM ``models``).
    """
    hooks: tuple[Hook, ...] = request.app[RUNTIME].hooks
    ran: list[Hook] = []
    model = ex.model
    try:
        if not model_for_hooks:
            ex.model = None
        for hook in hooks:
            ran.append(hook)
            await hook.pre(ex, request)
        ex.model = model
        return await core()
    except GatewayError as e:
        ex.fail(e.status, e.type, e.message)
        raise
    except asyncio.CancelledError:
        if request.app[RUNTIME].stopping:  # the SIGTERM drain cut it: a 503, not a disconnect
            raise _cut_by_shutdown(ex) from None
        # aiohttp cancels the handler when its client disconnects (handler_cancellation=True),
        # which aborts the upstream call at once; the post-hooks below still log and charge
        ex.fail(499, "client_closed", "the client disconnected", status="client_closed")
        raise
    except BaseException as e:
        ex.fail(500, "server_error", type(e).__name__)
        raise
    finally:
        ex.model = model
        ex.duration_ms = ex.elapsed_ms()
        for hook in reversed(ran):
            try:
                await hook.post(ex)
            except Exception:
                log.exception("post-hook %s failed for request %s", type(hook).__name__, ex.id)


class Emitter(Protocol):
    """How a dialect answers: the whole response, or stream bytes for each upstream frame."""

    def whole(self, completion: dict[str, Any], raw: bytes, passthrough: bool) -> web.Response:
        """The whole answer; ``raw`` is the upstream body, already in the client's form when ``passthrough``."""
        ...

    def frame(self, event: str | None, payload: str, chunks: list[tuple[dict[str, Any], bool]],
              passthrough: bool) -> bytes:
        """Bytes for one upstream frame; ``chunks`` are its repaired canonical chunks, each with
        whether the repair changed it; ``passthrough``: unchanged chunks are the upstream's own form."""
        ...

    def end(self) -> bytes: ...

    def error_frame(self, err: GatewayError) -> bytes: ...

    # an emitter may set ``stream_headers`` for a stream that is not SSE (Gemini's JSON array)


class OpenAIEmitter:
    """Answers in OpenAI chat-completions form; unchanged upstream chunks go out as their own bytes."""

    __slots__ = ("model", "_patch")

    def __init__(self, model: str) -> None:
        self.model = model
        self._patch: tuple[str, str, str] | None = None

    def whole(self, completion: dict[str, Any], raw: bytes, passthrough: bool) -> web.Response:
        if _cache_fields_added(completion):
            passthrough = False
        if passthrough:  # the upstream's own body, with only the model renamed when found verbatim
            patched = self._patch_model(completion, raw.decode())
            if patched is not None:
                return web.Response(text=patched, content_type="application/json")
        completion["model"] = self.model
        return web.json_response(completion)

    def frame(self, event: str | None, payload: str, chunks: list[tuple[dict[str, Any], bool]],
              passthrough: bool) -> bytes:
        added = [_cache_fields_added(chunk) for chunk, _ in chunks]  # every chunk, for Roo Code
        if passthrough and len(chunks) == 1 and not chunks[0][1] and not added[0]:
            patched = self._patch_model(chunks[0][0], payload)
            if patched is not None:
                return b"data: " + patched.encode() + b"\n\n"
        out = b""
        for chunk, _ in chunks:
            chunk["model"] = self.model
            out += frame(chunk)
        return out

    def _patch_model(self, chunk: dict[str, Any], raw: str) -> str | None:
        """Swap the upstream model name in the raw JSON; None when it is not found verbatim."""
        upstream = chunk.get("model")
        if upstream == self.model or upstream is None:
            return raw
        if self._patch is None or self._patch[0] != upstream:
            self._patch = (upstream, f'"model":{json.dumps(upstream)}', f'"model":{json.dumps(self.model)}')
        old, new = self._patch[1], self._patch[2]
        if old in raw:
            return raw.replace(old, new, 1)
        spaced = old.replace(":", ": ", 1)
        return raw.replace(spaced, new, 1) if spaced in raw else None

    def end(self) -> bytes:
        return DONE

    def error_frame(self, err: GatewayError) -> bytes:
        return frame(err.body())


def _cache_fields_added(chunk: dict[str, Any]) -> bool:
    usage = chunk.get("usage")
    return isinstance(usage, dict) and with_cache_fields(usage)


class RawEmitter:
    """The upstream's own bytes, frame for frame (native passthrough); chunks only feed the transcript."""

    def __init__(self, error_frame: Callable[[GatewayError], bytes]) -> None:
        self._error_frame = error_frame  # in the dialect's own shape

    def whole(self, completion: dict[str, Any], raw: bytes, passthrough: bool) -> web.Response:
        return web.Response(body=raw, content_type="application/json")

    def frame(self, event: str | None, payload: str, chunks: list[tuple[dict[str, Any], bool]],
              passthrough: bool) -> bytes:
        if not payload:
            return b""
        head = f"event: {event}\n" if event else ""
        return f"{head}data: {payload}\n\n".encode()

    def end(self) -> bytes:
        return b""

    def error_frame(self, err: GatewayError) -> bytes:
        return self._error_frame(err)


SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}

Build = Callable[[Adapter, Target], UpstreamRequest]


@dataclass
class Leg:
    """What one exchange sends upstream and how its answer comes back."""

    req: dict[str, Any]  # its "model" picks the targets; "fallbacks" is removed before sending
    emitter: Emitter
    build: Build | None = None  # default: the adapter's chat translation of ``req``
    chat: bool = True  # repair chat chunks (else only record usage: legacy completions)
    fallbacks: bool = True  # False when ``req`` only makes sense to one provider (native passthrough)
    model: str | None = None  # what picks the targets when ``req["model"]`` is the client's own name
    adapter: Adapter | None = None  # another protocol than the provider's own (native passthrough)
    # awaited once the answer is whole, before its last bytes go out: a Responses `store: true`
    # answer is stored before the client can send the next turn's previous_response_id
    before_end: Callable[[], Awaitable[None]] | None = None


def openai_endpoint(endpoint: str, req: dict[str, Any]) -> Build:
    """Forward an OpenAI endpoint body as is (embeddings, completions): OpenAI-protocol providers only."""

    def build(adapter: Adapter, target: Target) -> UpstreamRequest:
        if isinstance(adapter, OpenAIAdapter):
            return adapter.build_passthrough(target, endpoint, req)
        raise BadRequest(f"provider {target.provider.name!r} does not serve /{endpoint}", param="model")

    return build


async def relay(request: web.Request, ex: Exchange, leg: Leg) -> web.StreamResponse:
    """Send the leg to its provider (retries and fallbacks before the first byte) and answer."""
    rt = request.app[RUNTIME]
    req = leg.req
    fallbacks = req.pop("fallbacks", None)  # ours, not the upstream's; its shape was checked by the route
    targets = plan(rt.config, leg.model or str(req["model"]), fallbacks if leg.fallbacks else [], ex.allowed_models)

    def chat_build(adapter: Adapter, target: Target) -> UpstreamRequest:
        return adapter.build_request(with_auto_cache(target, ex), req, stream=ex.stream)

    for i, (provider, model) in enumerate(targets):
        ex.provider, ex.upstream_model = provider.name, model
        try:
            upstream, adapter, target = await open_upstream(
                rt.session, rt.keys, ex, provider, model, leg.build or chat_build, leg.adapter, rt.scrubber
            )
        except GatewayError as e:
            if i + 1 < len(targets) and can_fall_back(e):
                log.info("request %s: %s/%s failed (%s), falling back", ex.id, provider.name, model, e.status)
                continue
            raise
        ex.upstream_key_name = target.key_name
        return await _answer(request, ex, leg, upstream, adapter, target)
    raise AssertionError("plan() always yields a target")


async def _answer(
    request: web.Request, ex: Exchange, leg: Leg, upstream: aiohttp.ClientResponse, adapter: Adapter,
    target: Target,
) -> web.StreamResponse:
    """Relay an open 2xx upstream answer: whole, or as a stream with errors in-band."""
    response: web.StreamResponse | None = None
    try:
        async with upstream:
            if not ex.stream:
                waited = time.perf_counter()
                body = await read_body(target.provider, upstream)
                ex.upstream_s += time.perf_counter() - waited
                whole = _whole(ex, adapter, target, body, leg.emitter)
                if leg.before_end is not None:
                    await leg.before_end()
                return whole
            response = web.StreamResponse(headers=getattr(leg.emitter, "stream_headers", SSE_HEADERS))
            try:
                await _stream(request, ex, leg, adapter, target, upstream, response)
            except BaseException:
                upstream.close()  # drop the connection: the upstream must see us leave
                raise
            return response
    except GatewayError as e:
        if response is None or not response.prepared:
            raise
        ex.fail(e.status, e.type, e.message)
        try:
            await _send(request, ex, response, leg.emitter.error_frame(e))
        except ClientGone:
            ex.status = "client_closed"
        return response
    except ClientGone:
        ex.fail(499, "client_closed", "the client disconnected", status="client_closed")
        assert response is not None
        return response
    except asyncio.CancelledError:
        if response is None or not response.prepared or not request.app[RUNTIME].stopping:
            raise
        err = _cut_by_shutdown(ex)  # the stream began: its end is one error event
        try:
            await _send(request, ex, response, leg.emitter.error_frame(err))
        except ClientGone:
            pass
        return response


def _cut_by_shutdown(ex: Exchange) -> GatewayError:
    """The error of an exchange the SIGTERM drain cut; the cancellation is handled here."""
    err = GatewayError("the gateway is shutting down: the request was cut before it finished",
                       status=503, type="server_error", code="server_shutdown")
    ex.fail(err.status, "server_shutdown", err.message)
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    return err


def _whole(ex: Exchange, adapter: Adapter, target: Target, body: bytes, emitter: Emitter) -> web.Response:
    name = target.provider.name
    completion = check_completion(parsed(name, adapter.parse_response, target, body), name)
    ex.mark_first_token()
    choices = completion.get("choices") or [{}]
    ex.transcript.add_message(choices[0].get("message") or {})
    ex.transcript.finish_reason = choices[0].get("finish_reason")
    ex.transcript.set_usage(completion.get("usage"))
    ex.status_code = 200
    return emitter.whole(completion, body, getattr(adapter, "passthrough", False))


async def _stream(
    request: web.Request, ex: Exchange, leg: Leg, adapter: Adapter, target: Target,
    upstream: aiohttp.ClientResponse, response: web.StreamResponse,
) -> None:
    opts = leg.req.get("stream_options")
    include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
    fixer = (StreamNormaliser if leg.chat else UsageTap)(ex.transcript, include_usage=include_usage)
    name = target.provider.name
    emitter = leg.emitter
    provider = target.provider
    decoder = adapter.new_decoder(event_cap(provider))
    state = adapter.new_stream(target)
    passthrough = getattr(adapter, "passthrough", False)
    timeouts = provider.timeouts
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeouts.total
    content = upstream.content
    left = answer_cap(provider, stream=True)  # decoded bytes the stream may still bring
    try:
        async with asyncio.timeout(None) as idle:
            while True:
                idle.reschedule(min(loop.time() + timeouts.idle, deadline))
                waited = time.perf_counter()
                data = await content.readany()
                ex.upstream_s += time.perf_counter() - waited
                left -= len(data)
                if left < 0:
                    raise answer_too_large(provider, stream=True)
                out: list[bytes] = []
                try:
                    for event, payload in decoder.feed(data) if data else decoder.close():
                        piece = emitter.frame(event, payload, _repair(fixer, name, parsed(
                            name, adapter.parse_event, state, event, payload)), passthrough)
                        if piece:
                            out.append(piece)
                    if not data:  # chunks the adapter still owes, e.g. usage of a cut stream
                        owed = _repair(fixer, name, parsed(name, adapter.finish_stream, state))
                        if owed:
                            out.append(emitter.frame(None, "", owed, False))
                finally:  # what came before an in-band error still reaches the client first
                    if out:
                        await _send(request, ex, response, b"".join(out))
                if not data:
                    break
    except EventTooLarge:
        _keep_usage(fixer, name, adapter, state)
        raise event_too_large(provider) from None
    except (TimeoutError, aiohttp.ClientError) as e:
        _keep_usage(fixer, name, adapter, state)
        raise read_error(provider, e) from None
    except (GatewayError, ClientGone):  # an in-band error event, a cap, the client gone
        _keep_usage(fixer, name, adapter, state)
        raise
    if not response.prepared:  # a 200 with no event at all (an HTML proxy page, an empty body)
        kind = upstream.headers.get("Content-Type", "no content type")
        raise UpstreamError(f"{target.provider.name}: the stream ended without any event ({kind})",
                            code="upstream_empty_stream")
    tail = emitter.end()
    if leg.before_end is not None:
        await leg.before_end()
    await _send(request, ex, response, tail)
    try:
        await response.write_eof()
    except ConnectionResetError:
        raise ClientGone() from None


def _keep_usage(fixer: StreamNormaliser | UsageTap, name: str, adapter: Adapter, state: Any) -> None:
    """A stream that ends in an error still bills what the upstream reported of it (a prompt's
    tokens arrive first): the adapter's pending usage goes into the transcript."""
    with contextlib.suppress(GatewayError):  # a state the error left unreadable: the estimate stands
        _repair(fixer, name, parsed(name, adapter.finish_stream, state))


def _repair(fixer: StreamNormaliser | UsageTap, provider: str,
            chunks: list[dict[str, Any]]) -> list[tuple[dict[str, Any], bool]]:
    out = []
    for chunk in chunks:
        repaired, changed = fixer.fix(check_chunk(chunk, provider))
        if repaired is not None:
            out.append((repaired, changed))
    return out


async def _send(request: web.Request, ex: Exchange, response: web.StreamResponse, data: bytes) -> None:
    """Write to the client, preparing the response on the first write (so earlier errors keep their status)."""
    try:
        if not response.prepared:
            ex.status_code = 200
            await response.prepare(request)
        ex.mark_first_token()
        await response.write(request.app[RUNTIME].scrubber.bytes(data))  # an upstream may echo our key in-band
    except ConnectionResetError:
        raise ClientGone() from None
