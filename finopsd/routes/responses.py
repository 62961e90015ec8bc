"""The Responses API dialect, for Codex CLI and ``client.responses.create``.

``POST /openai/v1/responses`` (also ``/openai/responses`` and ``/v1/responses``).
To an OpenAI or Azure provider the body goes through natively and the upstream's
events come back as they are (read on the way for the log). To any other provider
the request becomes a canonical chat request and the answer comes back as
Responses events. ``store: true`` keeps translated answers in SQLite, so
``previous_response_id`` and ``GET``/``DELETE …/responses/{id}`` work on every
provider; for native providers OpenAI keeps them itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web

from finopsd.appkeys import LOGSTORE, RUNTIME
from finopsd.dialects.responses import ChatToResponsesStream, chat_to_response, new_response_id, responses_to_chat
from finopsd.errors import BadRequest, GatewayError, NotFound
from finopsd.providers.openai_responses import ResponsesAdapter
from finopsd.relay import Leg, RawEmitter, relay, run_exchange
from finopsd.router import split_model
from finopsd.routes.inbound import new_exchange, optional, read_json, require
from finopsd.sse import frame

RESPONSES_ADAPTER: Final = ResponsesAdapter()
Event = tuple[str, dict[str, Any]]


def _frames(events: list[Event]) -> bytes:
    return b"".join(frame(data, event=name) for name, data in events)


class ResponsesEmitter:
    """Canonical chat answers → a Response object, or Responses events; hands the final one on."""

    def __init__(self, body: dict[str, Any], model: str, on_final: Callable[[dict[str, Any]], None]) -> None:
        self.id, self.created = new_response_id(), time.time()
        self.body, self.model, self.on_final = body, model, on_final
        self.stream = ChatToResponsesStream(response_id=self.id, model=model, created_at=self.created, request=body)
        self.started = False

    def whole(self, completion: dict[str, Any], raw: bytes, passthrough: bool) -> web.Response:
        response = chat_to_response(completion, response_id=self.id, model=self.model, created_at=self.created,
                                    request=self.body)
        self.on_final(response)
        return web.json_response(response)

    def _start(self) -> list[Event]:
        if self.started:
            return []
        self.started = True
        return self.stream.start()

    def frame(self, event: str | None, payload: str, chunks: list[tuple[dict[str, Any], bool]],
              passthrough: bool) -> bytes:
        events = self._start()
        for chunk, _ in chunks:
            events += self.stream.feed(chunk)
        return _frames(events)

    def end(self) -> bytes:
        events = self._start() + self.stream.finish()
        self.on_final(self.stream.response)
        return _frames(events)

    def error_frame(self, err: GatewayError) -> bytes:
        return _frames(self._start() + self.stream.fail(err.message, err.code))


def _error_frame(err: GatewayError) -> bytes:
    """An ``error`` event, as the Responses stream carries one."""
    return frame({"type": "error", "code": err.code or err.type, "message": err.message, "param": err.param,
                  "sequence_number": 0}, event="error")


async def _history(request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
    """With ``previous_response_id``: the stored conversation's items, then this request's input."""
    previous = body.get("previous_response_id")
    if previous is None:
        return body
    if not isinstance(previous, str):
        raise BadRequest("'previous_response_id' must be a string", param="previous_response_id")
    stored = await request.app[LOGSTORE].load_response(previous)
    if stored is None:
        raise NotFound(f"no stored response {previous[:80]!r} (was it created with store: true?)",
                       param="previous_response_id", code="previous_response_not_found")
    current = body.get("input")
    items = [{"role": "user", "content": current}] if isinstance(current, str) else list(current or [])
    return {**body, "input": [*stored["conversation"], *items],
            "instructions": body.get("instructions", stored.get("instructions"))}


async def create(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    model = require(body, "model", str, "a string such as provider/model")
    stream = bool(optional(body, "stream", bool, "true or false"))
    if not isinstance(body.get("input"), (str, list)):
        raise BadRequest("'input' must be a string or a list of items", param="input")
    config = request.app[RUNTIME].config
    provider, _ = split_model(config, model)
    # OpenAI and Azure serve the Responses API themselves; other OpenAI-protocol servers
    # (groq, vllm, …) mostly serve chat only, so they get the translation
    if provider.name == "openai" or provider.type == "azure":
        ex = new_exchange(request, "responses", model, stream)
        ex.request = responses_to_chat(body)[0]  # for the log: it reads chat messages
        leg = Leg(body, RawEmitter(_error_frame), adapter=RESPONSES_ADAPTER, fallbacks=False)
        return await run_exchange(request, ex, lambda: relay(request, ex, leg))
    full = await _history(request, body)
    chat, notes = responses_to_chat(full)
    chat["model"] = model
    ex = new_exchange(request, "responses", model, stream)
    ex.request, ex.notes = chat, notes
    kept: list[dict[str, Any]] = []
    emitter = ResponsesEmitter(body, model, kept.append)
    # the log threads a previous_response_id chain into one session
    ex.previous_response_id, ex.response_id = body.get("previous_response_id"), emitter.id
    response = await run_exchange(request, ex, lambda: relay(request, ex, Leg(chat, emitter)))
    if kept and body.get("store", True) is not False:
        conversation = full["input"] if isinstance(full["input"], list) else [
            {"role": "user", "content": full["input"]}]
        await request.app[LOGSTORE].save_response(emitter.id, {
            "response": kept[-1], "instructions": full.get("instructions"),
            "conversation": [*conversation, *kept[-1].get("output", [])],
        })
    return response


async def retrieve(request: web.Request) -> web.Response:
    stored = await request.app[LOGSTORE].load_response(request.match_info["id"])
    if stored is None:
        raise NotFound(f"no stored response {request.match_info['id'][:80]!r}", param="id")
    return web.json_response(stored["response"])


async def delete(request: web.Request) -> web.Response:
    response_id = request.match_info["id"]
    if not await request.app[LOGSTORE].delete_response(response_id):
        raise NotFound(f"no stored response {response_id[:80]!r}", param="id")
    return web.json_response({"id": response_id, "object": "response", "deleted": True})


def add_routes(router: web.UrlDispatcher) -> None:
    for prefix in ("/openai/v1", "/openai", "/v1"):
        router.add_post(f"{prefix}/responses", create)
        router.add_get(f"{prefix}/responses/{{id}}", retrieve)
        router.add_delete(f"{prefix}/responses/{{id}}", delete)
