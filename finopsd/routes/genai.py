"""The Gemini API dialect, for Gemini CLI and the Google GenAI SDKs.

``GOOGLE_GEMINI_BASE_URL=http://HOST:PORT/genai`` → ``POST /genai/v1beta/models/{model}:generateContent``,
``:streamGenerateContent`` (SSE with ``?alt=sse``, else one JSON array that grows as it streams),
``:countTokens``, and ``GET /genai/v1beta/models[/{model}]``; ``v1`` likewise. The key comes as
``x-goog-api-key``, ``?key=`` or ``Authorization: Bearer``. To the ``gemini`` provider and Gemini
on Vertex the body goes through natively and the upstream's events come back as they are, read on
the way for the log and the bill. To any other provider the request is translated to the
canonical chat form and the answer back into GenerateContentResponses.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import aiohttp
from aiohttp import web

from finopsd import access
from finopsd.appkeys import GOVERNANCE, RUNTIME
from finopsd.dialects.genai import estimate_tokens, genai_to_chat, include_thoughts
from finopsd.dialects.genai_answer import ChatToGenaiStream, chat_to_genai, error_body
from finopsd.dialects.genai_native import STREAM_METHOD, NativeReader, is_native, model_resource, native_build
from finopsd.errors import BadRequest, GatewayError, NotFound, UpstreamError
from finopsd.exchange import Exchange
from finopsd.governance import presented_key
from finopsd.jsonwire import dumps
from finopsd.middleware import REQUEST_ID
from finopsd.relay import SSE_HEADERS, Leg, relay, run_exchange
from finopsd.router import adapter_for, open_upstream, resolve_model, split_model
from finopsd.routes.inbound import RAW_BODY, new_exchange, read_json
from finopsd.upstream import read_error

ROUTE: Final = "genai"
VERSIONS: Final = "v1beta|v1"
MAX_MODEL_CHARS: Final = 256
ARRAY_HEADERS: Final = {**SSE_HEADERS, "Content-Type": "application/json; charset=utf-8"}
MAX_COUNT_BODY: Final = 64 * 1024  # a countTokens answer is one small object


def genai_error(err: GatewayError) -> dict[str, Any]:
    return error_body(err.status, err.message, err.type, err.headers.get("Retry-After"))


class SseOut:
    """``?alt=sse``: one ``data:`` event per GenerateContentResponse, framed with CRLF as Gemini frames them
    (so a native stream goes out byte for byte as the upstream sent it)."""

    stream_headers: Final = SSE_HEADERS

    def item(self, payload: bytes) -> bytes:
        return b"data: " + payload + b"\r\n\r\n"

    def end(self) -> bytes:
        return b""

    def error(self, payload: bytes) -> bytes:
        return self.item(payload)


class ArrayOut:
    """No ``alt``: the responses as the elements of one JSON array, written as they come."""

    stream_headers: Final = ARRAY_HEADERS

    def __init__(self) -> None:
        self.started = False

    def item(self, payload: bytes) -> bytes:
        head = b",\r\n" if self.started else b"["
        self.started = True
        return head + payload

    def end(self) -> bytes:
        return b"]" if self.started else b"[]"

    def error(self, payload: bytes) -> bytes:
        return self.item(payload) + b"]"  # the stream ends with it


Out = SseOut | ArrayOut


class NativeEmitter:
    """The upstream's own responses (Gemini API to Gemini API), reframed only for a JSON-array client."""

    def __init__(self, out: Out) -> None:
        self.out = out
        self.stream_headers = out.stream_headers

    def whole(self, completion: dict[str, Any], raw: bytes, passthrough: bool) -> web.Response:
        return web.Response(body=raw, content_type="application/json")

    def frame(self, event: str | None, payload: str, chunks: list[tuple[dict[str, Any], bool]],
              passthrough: bool) -> bytes:
        return self.out.item(payload.encode()) if payload else b""

    def end(self) -> bytes:
        return self.out.end()

    def error_frame(self, err: GatewayError) -> bytes:
        return self.out.error(dumps(genai_error(err)))


class TranslatedEmitter:
    """Canonical chat answers → GenerateContentResponses."""

    def __init__(self, model: str, thoughts: bool, out: Out) -> None:
        self.model, self.thoughts, self.out = model, thoughts, out
        self.stream = ChatToGenaiStream(model, thoughts=thoughts)
        self.stream_headers = out.stream_headers

    def whole(self, completion: dict[str, Any], raw: bytes, passthrough: bool) -> web.Response:
        return web.json_response(chat_to_genai(completion, self.model, thoughts=self.thoughts))

    def frame(self, event: str | None, payload: str, chunks: list[tuple[dict[str, Any], bool]],
              passthrough: bool) -> bytes:
        return b"".join(self.out.item(dumps(r)) for chunk, _ in chunks for r in self.stream.feed(chunk))

    def end(self) -> bytes:
        return b"".join(self.out.item(dumps(r)) for r in self.stream.finish()) + self.out.end()

    def error_frame(self, err: GatewayError) -> bytes:
        return self.out.error(dumps(genai_error(err)))


def query_key(request: web.Request) -> str | None:
    """``?key=``, the Gemini API's third place for the key, when no header carries one."""
    key = request.query.get("key", "").strip()
    return key if key and not presented_key(request.headers) else None


genai_exchange: Final = access.dialect_exchange(genai_error, query_key)
genai_key: Final = access.key(genai_error, query_key)


def _model(request: web.Request) -> str:
    model = request.match_info["model"].removeprefix("models/")
    if not model or len(model) > MAX_MODEL_CHARS or not model.isprintable() or any(c.isspace() for c in model):
        raise BadRequest(f"invalid model name {model[:80]!r}", param="model", code="invalid_model")
    return model


async def _generate(request: web.Request, stream: bool) -> web.StreamResponse:
    model = _model(request)
    body = await read_json(request)
    if not isinstance(body.get("contents"), (list, str)):
        raise BadRequest("'contents' must be a list of Content objects", param="contents")
    config = request.app[RUNTIME].config
    target_model = resolve_model(config, model, ROUTE)
    chat, notes = genai_to_chat(body, stream=stream)
    chat["model"] = target_model
    ex = new_exchange(request, ROUTE, model, stream)
    ex.request = chat
    out: Out = SseOut() if request.query.get("alt") == "sse" else ArrayOut()

    def leg() -> Leg:
        provider, upstream_model = split_model(config, target_model)  # 400 for an unknown provider
        if is_native(provider, upstream_model):
            method = STREAM_METHOD if stream else "generateContent"
            return Leg(body, NativeEmitter(out), build=native_build(request[RAW_BODY], method), fallbacks=False,
                       model=target_model, adapter=NativeReader(adapter_for(provider)))
        ex.notes = notes  # built-in tools and the like are dropped only on the way to another provider
        return Leg(chat, TranslatedEmitter(model, include_thoughts(body), out))

    return await run_exchange(request, ex, lambda: relay(request, ex, leg()))


@genai_exchange
async def generate_content(request: web.Request) -> web.StreamResponse:
    return await _generate(request, stream=False)


@genai_exchange
async def stream_generate_content(request: web.Request) -> web.StreamResponse:
    return await _generate(request, stream=True)


@genai_key
async def count_tokens(request: web.Request) -> web.Response:
    """Native count for Gemini providers; an estimate (about 4 characters a token) for others.

    Free at Google, so not logged or charged; the key must still pass for the model."""
    model = _model(request)
    body = await read_json(request)
    rt = request.app[RUNTIME]
    target_model = resolve_model(rt.config, model, ROUTE)
    request.app[GOVERNANCE].check_model(request[access.CALLER], model, target_model)
    provider, upstream_model = split_model(rt.config, target_model)
    if not is_native(provider, upstream_model):
        inner = body.get("generateContentRequest")
        return web.json_response({"totalTokens": estimate_tokens(inner if isinstance(inner, dict) else body)})
    scratch = Exchange(id=request[REQUEST_ID], route=ROUTE)  # for the router's attempt list; no log row
    upstream, _, _ = await open_upstream(rt.session, rt.keys, scratch, provider, upstream_model,
                                         native_build(request[RAW_BODY], "countTokens"))
    answer = b""
    try:
        async with upstream, asyncio.timeout(provider.timeouts.total):
            async for piece in upstream.content.iter_any():
                answer += piece
                if len(answer) > MAX_COUNT_BODY:
                    raise UpstreamError(f"{provider.name}: countTokens answered more than {MAX_COUNT_BODY} bytes")
    except (TimeoutError, aiohttp.ClientError) as e:
        raise read_error(provider, e) from None
    return web.Response(body=answer, content_type="application/json")


def _visible(request: web.Request) -> list[tuple[str, str]]:
    return request.app[GOVERNANCE].visible_models(request[access.CALLER], request.app[RUNTIME].models())


@genai_key
async def list_models(request: web.Request) -> web.Response:
    return web.json_response({"models": [model_resource(f"{p}/{m}", p) for p, m in _visible(request)]})


@genai_key
async def get_model(request: web.Request) -> web.Response:
    model = _model(request)
    config = request.app[RUNTIME].config
    provider, upstream_model = split_model(config, resolve_model(config, model, ROUTE))
    if (provider.name, upstream_model) not in _visible(request):
        raise NotFound(f"model {model[:80]!r} is not served here (or not to this key)", code="model_not_found")
    return web.json_response(model_resource(model, provider.name))


@genai_key
async def not_found(request: web.Request) -> web.Response:
    raise NotFound("no such Gemini API method here (generateContent, streamGenerateContent and countTokens are "
                   "served; see GET /genai/v1beta/models)", code="not_found")


def add_routes(router: web.UrlDispatcher) -> None:
    base = f"/genai/{{version:{VERSIONS}}}/models"
    model = base + "/{model:[^:]+}"  # provider/model may hold slashes; the method follows the last ':'
    router.add_get(base, list_models)
    router.add_post(model + ":generateContent", generate_content)
    router.add_post(model + ":streamGenerateContent", stream_generate_content)
    router.add_post(model + ":countTokens", count_tokens)
    router.add_get(model, get_model)
    for add in (router.add_get, router.add_post):  # the rest of /genai: a 404 in Google's shape
        add("/genai/{tail:.*}", not_found)
