"""The OpenAI dialect: chat completions, models, embeddings, completions.

Every route answers identically under ``/openai``, ``/openai/v1`` and ``/v1``
(Roo Code calls the forms without ``/v1``), and tolerates a doubled slash from
a Base URL typed with a trailing ``/``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from finopsd import access
from finopsd.appkeys import GOVERNANCE, RUNTIME
from finopsd.relay import Leg, OpenAIEmitter, openai_endpoint, relay, run_exchange
from finopsd.routes.inbound import check_fallbacks, new_exchange, optional, read_json, require

PREFIXES = ("/openai", "/openai/v1", "/v1")


@access.exchange
async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    model = require(body, "model", str, "a string such as provider/model")
    require(body, "messages", list, "a list of messages")
    stream = bool(optional(body, "stream", bool, "true or false"))
    optional(body, "tools", list, "a list of tools")
    optional(body, "stream_options", dict, "an object")
    check_fallbacks(body)
    ex = new_exchange(request, "chat", model, stream)
    ex.request = body
    return await run_exchange(request, ex, lambda: relay(request, ex, Leg(body, OpenAIEmitter(model))))


def passthrough(endpoint: str, route: str) -> Any:
    """Embeddings and legacy completions: OpenAI-protocol providers only, body forwarded as is."""

    @access.exchange
    async def handler(request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        model = require(body, "model", str, "a string such as provider/model")
        stream = bool(optional(body, "stream", bool, "true or false"))
        check_fallbacks(body)
        ex = new_exchange(request, route, model, stream)
        ex.request = body
        leg = Leg(body, OpenAIEmitter(model), build=openai_endpoint(endpoint, body), chat=False)
        return await run_exchange(request, ex, lambda: relay(request, ex, leg))

    return handler


@access.key()
async def list_models(request: web.Request) -> web.Response:
    pairs = request.app[GOVERNANCE].visible_models(request[access.CALLER], request.app[RUNTIME].models())
    data = [
        {"id": f"{provider}/{model}", "object": "model", "created": 0, "owned_by": provider}
        for provider, model in pairs
    ]
    return web.json_response({"object": "list", "data": data})


def add_routes(router: web.UrlDispatcher) -> None:
    embeddings = passthrough("embeddings", "embeddings")
    completions = passthrough("completions", "completions")
    for prefix in PREFIXES:
        for p in (prefix, prefix + "/"):  # "/openai/" + "/models" from a Base URL with a trailing slash
            router.add_post(f"{p}/chat/completions", chat_completions)
            router.add_get(f"{p}/models", list_models)
            router.add_post(f"{p}/embeddings", embeddings)
            router.add_post(f"{p}/completions", completions)
