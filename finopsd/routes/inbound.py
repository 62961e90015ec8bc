"""Reading a client's JSON body into a request dict, with clear 400s."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from finopsd.errors import BadRequest
from finopsd.jsonwire import loads
from finopsd.exchange import Exchange
from finopsd.middleware import REQUEST_ID
from finopsd.providers.canonical import is_number

# the body as received: its size for the log, and the bytes Gemini's native route forwards
RAW_BODY: web.RequestKey[bytes] = web.RequestKey("raw_body", bytes)
# output limits of every dialect; clients send 0 or -1 for "none" (Roo Code: -1), which
# upstreams refuse, so a limit that is not positive is treated as absent
TOKEN_LIMITS: Final = ("max_tokens", "max_completion_tokens", "max_output_tokens")


async def read_json(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, without non-positive token limits (413 comes from aiohttp's limit)."""
    raw = await request.read()
    request[RAW_BODY] = raw
    if not raw.strip():
        raise BadRequest("request body is empty; send a JSON object")
    try:
        body = loads(raw)
    except ValueError as e:
        raise BadRequest(f"request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_json")
    for name in TOKEN_LIMITS:
        if is_number(body.get(name)) and body[name] <= 0:
            del body[name]
    return body


def require(body: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = body.get(name)
    if value is None:
        raise BadRequest(f"missing required parameter: {name!r}", param=name, code="missing_required_parameter")
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise BadRequest(f"{name!r} must be {what}", param=name, code="invalid_type")
    return value


def optional(body: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    return None if body.get(name) is None else require(body, name, kind, what)


def check_fallbacks(body: dict[str, Any]) -> None:
    value = body.get("fallbacks")
    if value is not None and not (isinstance(value, list) and all(isinstance(f, str) for f in value)):
        raise BadRequest("'fallbacks' must be a list of provider/model names", param="fallbacks", code="invalid_type")


def new_exchange(request: web.Request, route: str, model: str, stream: bool) -> Exchange:
    peer = request.remote
    return Exchange(
        id=request[REQUEST_ID],
        route=route,
        client_ip=peer,
        user_agent=request.headers.get("User-Agent"),
        model=model,
        stream=stream,
    )
