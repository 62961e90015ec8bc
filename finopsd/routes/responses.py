"""The Responses API dialect, for Codex CLI and ``client.responses.create``.

``POST /openai/v1/responses`` (also ``/openai/responses`` and ``/v1/responses``).
To an OpenAI or Azure provider the body goes through natively and the upstream's
events come back as they are (read on the way for the log). To any other provider
the request becomes a canonical chat request and the answer comes back as
Responses events. ``store: true`` keeps translated answers in SQLite, so
``previous_response_id`` and ``GET``/``DELETE …/responses/{id}`` work on every
provider; for native providers OpenAI keeps them itself.

A stored response belongs to the key (and team) that made it: ``GET``, ``DELETE`` and
``previous_response_id`` with any other key, or none, answer 404 as if it did not exist.
When storing fails after the answer (a full disk), the client still gets the answer it was
charged for; the log row notes that it was not stored, and a later reference to it is a 404.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web

from finopsd import access
from finopsd.appkeys import LOGSTORE, RUNTIME
from finopsd.dialects.responses import ChatToResponsesStream, chat_to_response, new_response_id, responses_to_chat
from finopsd.errors import BadRequest, GatewayError, NotFound
from finopsd.exchange import Exchange
from finopsd.providers.openai_responses import ResponsesAdapter
from finopsd.relay import Leg, RawEmitter, relay, run_exchange
from finopsd.router import split_model
from finopsd.routes.inbound import new_exchange, optional, read_json, require
from finopsd.sse import frame

log = logging.getLogger(__name__)

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


Owner = tuple[str | None, str | None]  # (key name, team) of a stored response


def _caller_owner(request: web.Request) -> Owner:
    key = request[access.CALLER]
    return (key.name, key.team) if key is not None else (None, None)


async def _history(request: web.Request, body: dict[str, Any], owner: Owner) -> dict[str, Any]:
    """With ``previous_response_id``: the stored conversation's items, then this request's input."""
    previous = body.get("previous_response_id")
    if previous is None:
        return body
    stored = await request.app[LOGSTORE].load_response(previous, owner)
    if stored is None:
        raise NotFound(f"no stored response {previous[:80]!r} (was it created with store: true?)",
                       param="previous_response_id", code="previous_response_not_found")
    current = body.get("input")
    items = [{"role": "user", "content": current}] if isinstance(current, str) else list(current or [])
    return {**body, "input": [*stored["conversation"], *items],
            "instructions": body.get("instructions", stored.get("instructions"))}


@access.exchange
async def create(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    model = require(body, "model", str, "a string such as provider/model")
    stream = bool(optional(body, "stream", bool, "true or false"))
    optional(body, "previous_response_id", str, "a string")
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
    ex = new_exchange(request, "responses", model, stream)
    ex.request = responses_to_chat(body)[0]  # replaced by the whole conversation once the key is admitted
    return await run_exchange(request, ex, lambda: _translated(request, ex, body, model))


async def _translated(request: web.Request, ex: Exchange, body: dict[str, Any], model: str) -> web.StreamResponse:
    """After the hooks admitted the key: its stored history, the relay, then storing the answer."""
    owner = (ex.key_name, ex.team)
    full = await _history(request, body, owner)
    chat, notes = responses_to_chat(full)
    chat["model"] = model
    ex.request, ex.notes = chat, notes
    kept: list[dict[str, Any]] = []
    emitter = ResponsesEmitter(body, model, kept.append)

    async def store() -> None:
        if not kept or body.get("store", True) is False:
            return
        conversation = full["input"] if isinstance(full["input"], list) else [
            {"role": "user", "content": full["input"]}]
        try:
            await request.app[LOGSTORE].save_response(emitter.id, owner, {
                "response": kept[-1], "instructions": full.get("instructions"),
                "conversation": [*conversation, *kept[-1].get("output", [])],
            })
        except Exception as e:  # the answer is the client's: a full disk must not turn it into a 500
            log.warning("request %s: response %s not stored: %s", ex.id, emitter.id, e)
            ex.notes.append(f"store: the response was not stored ({type(e).__name__}: {e})")

    return await relay(request, ex, Leg(chat, emitter, before_end=store))


@access.key()
async def retrieve(request: web.Request) -> web.Response:
    stored = await request.app[LOGSTORE].load_response(request.match_info["id"], _caller_owner(request))
    if stored is None:
        raise NotFound(f"no stored response {request.match_info['id'][:80]!r}", param="id")
    return web.json_response(stored["response"])


@access.key()
async def delete(request: web.Request) -> web.Response:
    response_id = request.match_info["id"]
    if not await request.app[LOGSTORE].delete_response(response_id, _caller_owner(request)):
        raise NotFound(f"no stored response {response_id[:80]!r}", param="id")
    return web.json_response({"id": response_id, "object": "response", "deleted": True})


def add_routes(router: web.UrlDispatcher) -> None:
    for prefix in ("/openai/v1", "/openai", "/v1"):
        router.add_post(f"{prefix}/responses", create)
        router.add_get(f"{prefix}/responses/{{id}}", retrieve)
        router.add_delete(f"{prefix}/responses/{{id}}", delete)
