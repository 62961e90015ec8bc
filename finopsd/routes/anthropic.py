"""The Anthropic Messages dialect, for Claude Code and the Anthropic SDKs.

``ANTHROPIC_BASE_URL=http://HOST:PORT/anthropic`` → ``POST /anthropic/v1/messages``.
To an Anthropic provider the body is forwarded natively (every field and
``anthropic-beta`` header; stream bytes relayed as they come, read on the way
for the log). To any other provider it is translated to the canonical chat
request, and the answer back into Messages events, so Claude Code works with
any model.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from finopsd import access
from finopsd.appkeys import GOVERNANCE, RUNTIME
from finopsd.caching import auto_cache_ttl
from finopsd.dialects.anthropic_messages import ChatToMessagesStream, chat_to_message, error_body, messages_to_chat
from finopsd.errors import GatewayError
from finopsd.middleware import ERROR_SHAPE
from finopsd.providers.anthropic_request import default_max_tokens
from finopsd.providers.base import Adapter, Target, UpstreamRequest
from finopsd.providers.cache_points import place_messages
from finopsd.relay import Leg, RawEmitter, relay, run_exchange
from finopsd.router import adapter_for, resolve_model, split_model
from finopsd.routes.inbound import new_exchange, optional, read_json, require
from finopsd.sse import frame
from finopsd.upstream import send

API_VERSION = "2023-06-01"
# what a request may carry on to an Anthropic upstream besides the body
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")


def anthropic_error(err: GatewayError) -> dict[str, Any]:
    return error_body(err.status, err.message)


def anthropic_error_frame(err: GatewayError) -> bytes:
    return frame(anthropic_error(err), event="error")


class TranslatedEmitter:
    """Canonical chat answers → Messages responses and events."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.stream = ChatToMessagesStream(model)

    def whole(self, completion: dict[str, Any], raw: bytes, passthrough: bool) -> web.Response:
        return web.json_response(chat_to_message(completion, self.model))

    def frame(self, event: str | None, payload: str, chunks: list[tuple[dict[str, Any], bool]],
              passthrough: bool) -> bytes:
        return b"".join(frame(data, event=name) for chunk, _ in chunks for name, data in self.stream.feed(chunk))

    def end(self) -> bytes:
        return b"".join(frame(data, event=name) for name, data in self.stream.finish())

    def error_frame(self, err: GatewayError) -> bytes:
        return anthropic_error_frame(err)


def native_build(request: web.Request, body: dict[str, Any], path: str) -> Any:
    """Forward the client's Messages body to an Anthropic upstream with our key."""

    def build(adapter: Adapter, target: Target) -> UpstreamRequest:
        headers = {"Content-Type": "application/json", "anthropic-version": API_VERSION, **target.provider.headers}
        for name in FORWARDED_HEADERS:
            if name in request.headers:
                headers[name] = request.headers[name]
        if target.api_key:
            headers["x-api-key"] = target.api_key
        query = f"?{request.query_string}" if request.query_string else ""
        payload = json.dumps({**body, "model": target.model}).encode()
        return UpstreamRequest(f"{target.provider.base_url}{path}{query}", headers, payload)

    return build


@access.exchange
async def messages(request: web.Request) -> web.StreamResponse:
    request[ERROR_SHAPE] = anthropic_error
    body = await read_json(request)
    model = require(body, "model", str, "a string such as provider/model or a Claude model name")
    require(body, "messages", list, "a list of messages")
    stream = bool(optional(body, "stream", bool, "true or false"))
    optional(body, "max_tokens", int, "an integer")
    config = request.app[RUNTIME].config
    ex = new_exchange(request, "messages", model, stream)
    chat = messages_to_chat(body)
    ex.request = chat
    target_model = resolve_model(config, model)

    def leg() -> Leg:
        provider, upstream_model = split_model(config, target_model)  # 400 for an unknown provider comes from here
        if provider.type == "anthropic":
            # a limit dropped as non-positive (read_json) is one Anthropic still requires
            body.setdefault("max_tokens", default_max_tokens(upstream_model))
            # after governance's pre-hook, which put the key's and team's caching settings on ex
            place_messages(body, upstream_model, auto_cache_ttl(provider.caching, ex.caching))
            build = native_build(request, body, "/v1/messages")
            return Leg(body, RawEmitter(anthropic_error_frame), build=build, fallbacks=False, model=target_model)
        chat["model"] = target_model
        return Leg(chat, TranslatedEmitter(model))

    return await run_exchange(request, ex, lambda: relay(request, ex, leg()))


@access.key(shape=anthropic_error)
async def count_tokens(request: web.Request) -> web.Response:
    """Native count for Anthropic providers; an estimate (about 4 characters a token) for others.

    Free at Anthropic, so not logged or charged; the key must still pass for the model."""
    body = await read_json(request)
    model = require(body, "model", str, "a string")
    rt = request.app[RUNTIME]
    target_model = resolve_model(rt.config, model)
    request.app[GOVERNANCE].check_model(request[access.CALLER], model, target_model)
    provider, upstream_model = split_model(rt.config, target_model)
    if provider.type != "anthropic":
        text = json.dumps([body.get("system"), body.get("messages"), body.get("tools")])
        return web.json_response({"input_tokens": max(1, len(text) // 4)})
    target = rt.keys.pick(provider, upstream_model) or Target(provider, upstream_model)
    call = native_build(request, body, "/v1/messages/count_tokens")(adapter_for(provider), target)
    async with await send(rt.session, provider, call) as upstream:
        return web.Response(body=await upstream.read(), status=upstream.status, content_type="application/json")


@access.key(shape=anthropic_error)
async def list_models(request: web.Request) -> web.Response:
    pairs = request.app[GOVERNANCE].visible_models(request[access.CALLER], request.app[RUNTIME].models())
    data = [
        {"type": "model", "id": f"{provider}/{model}", "display_name": f"{model} ({provider})",
         "created_at": "1970-01-01T00:00:00Z"}
        for provider, model in pairs
    ]
    return web.json_response({
        "data": data, "has_more": False,
        "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None,
    })


def add_routes(router: web.UrlDispatcher) -> None:
    for prefix in ("/anthropic/v1", "/anthropic"):
        router.add_post(f"{prefix}/messages", messages)
        router.add_post(f"{prefix}/messages/count_tokens", count_tokens)
        router.add_get(f"{prefix}/models", list_models)
