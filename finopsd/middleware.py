"""Middlewares, one job each: request id, in-flight tracking, secrets scrubbed, errors as JSON,
UTF-8 headers, CORS preflight, the request body; headers on prepare."""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from finopsd.appkeys import RUNTIME
from finopsd.errors import BadRequest, GatewayError, error_type_for_status
from finopsd.exchange import new_request_id

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorShape = Callable[[GatewayError], dict[str, Any]]

# routes of another dialect set this request key so errors come back in that dialect's shape
ERROR_SHAPE: web.RequestKey[ErrorShape] = web.RequestKey("error_shape")
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)


@web.middleware
async def request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[REQUEST_ID] = new_request_id()
    return await handler(request)


@web.middleware
async def scrub_secrets(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Secrets out of every whole answer, errors included (streams scrub each write: ``relay``, /mcp)."""
    response = await handler(request)
    if isinstance(response, web.Response) and isinstance(response.body, bytes) and response.body:
        response.body = request.app[RUNTIME].scrubber.bytes(response.body)
    return response


@web.middleware
async def in_flight(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Track the handler and its connection: SIGTERM waits for (then cuts) these handlers,
    and the connection cap never closes a connection with a request under way."""
    rt = request.app[RUNTIME]
    task, conn = request.task, request.protocol
    rt.inflight.add(task)
    rt.busy.add(conn)
    try:
        return await handler(request)
    finally:
        rt.inflight.discard(task)
        rt.busy.discard(conn)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as e:
        return _json_error(request, e)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        message = e.text if e.text and not e.text.startswith(f"{e.status}:") else e.reason
        if e.status == 413:
            message = f"request body is larger than the limit of {request.app[RUNTIME].config.server.max_body_mb:g} MB"
        err = GatewayError(message, status=e.status, type=error_type_for_status(e.status))
        if e.status == 405:
            err.headers["Allow"] = e.headers.get("Allow", "")
        return _json_error(request, err)
    except Exception:
        log.exception("unhandled error in request %s", request.get(REQUEST_ID))
        return _json_error(request, GatewayError("internal error in the gateway"))


def _json_error(request: web.Request, err: GatewayError) -> web.Response:
    shape: ErrorShape = request.get(ERROR_SHAPE) or GatewayError.body
    return web.json_response(shape(err), status=err.status, headers=err.headers)


@web.middleware
async def utf8_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse header values that are not UTF-8: aiohttp hands them on surrogate-escaped, and
    nothing later (a key digest, the log row, a header sent upstream) could encode them."""
    for value in request.headers.values():
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                raise GatewayError("request header values must be UTF-8", status=400,
                                   type="invalid_request_error", code="invalid_header") from None
    return await handler(request)


@web.middleware
async def cors_preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer CORS preflights here, before auth or routing (browsers send no key with them)."""
    origin = request.headers.get("Origin")
    wanted = request.headers.get("Access-Control-Request-Method")
    if request.method != "OPTIONS" or not origin or not wanted:
        return await handler(request)
    cors = request.app[RUNTIME].config.server.cors
    if not _origin_allowed(cors.allowed_origins, origin):
        raise GatewayError(f"origin {origin} is not allowed", status=403, type="cors_error")
    asked = [h.strip() for h in request.headers.get("Access-Control-Request-Headers", "").split(",") if h.strip()]
    allowed = {h.lower() for h in cors.allowed_headers}
    refused = [h for h in asked if h.lower() not in allowed and "*" not in allowed]
    if refused:
        raise GatewayError(f"header(s) not allowed by CORS: {', '.join(refused)}", status=403, type="cors_error")
    if wanted.upper() not in {m.upper() for m in cors.allowed_methods} and "*" not in cors.allowed_methods:
        raise GatewayError(f"method {wanted} is not allowed by CORS", status=403, type="cors_error")
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Origin": origin if "*" not in cors.allowed_origins else "*",
            "Access-Control-Allow-Methods": ", ".join(cors.allowed_methods),
            "Access-Control-Allow-Headers": ", ".join(asked) if asked else ", ".join(cors.allowed_headers),
            "Access-Control-Max-Age": str(cors.max_age),
            "Vary": "Origin",
        },
    )


def _origin_allowed(allowed: tuple[str, ...], origin: str) -> bool:
    return "*" in allowed or origin in allowed


EXPOSED = "x-request-id, retry-after, x-ratelimit-limit-requests, x-ratelimit-remaining-requests, " \
    "x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, mcp-session-id"


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Headers every response carries, streams included: request id and CORS."""
    rid = request.get(REQUEST_ID)
    if rid:
        response.headers.setdefault("x-request-id", rid)
    origin = request.headers.get("Origin")
    if origin and "Access-Control-Allow-Origin" not in response.headers:
        cors = request.app[RUNTIME].config.server.cors
        if _origin_allowed(cors.allowed_origins, origin):
            response.headers["Access-Control-Allow-Origin"] = "*" if "*" in cors.allowed_origins else origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSED
            response.headers.add("Vary", "Origin")


# the app's threads for inflating request bodies: a flood of gzip bombs takes these, not the
# whole executor that the log writer shares
INFLATE_SLOTS: Final = web.AppKey("inflate_slots", asyncio.Semaphore)
MB: Final = 1024 * 1024
# Content-Encoding → zlib wbits ("deflate" is zlib-wrapped; raw deflate is told apart by its first byte)
WBITS: Final = {"gzip": 31, "x-gzip": 31, "deflate": 15}


@web.middleware
async def request_body(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Read the body within ``server.body_timeout_s``; inflate gzip or deflate in a thread,
    capped at ``server.max_body_mb`` of output, before any handler (and so any key check).

    The server parser runs with ``auto_decompress`` off, so aiohttp never inflates on the
    event loop (nor drains an unread bomb after the answer); ``client_max_size`` bounds
    the raw bytes, this middleware the inflated ones.
    """
    if not request.body_exists:
        return await handler(request)
    server = request.app[RUNTIME].config.server
    try:
        async with asyncio.timeout(server.body_timeout_s):
            raw = await request.read()
    except TimeoutError:
        raise GatewayError(f"the request body did not arrive within {server.body_timeout_s:g} s"
                           " (server.body_timeout_s)", status=408, type="invalid_request_error",
                           code="body_timeout") from None
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":
        if encoding not in WBITS:
            raise GatewayError(f"Content-Encoding {encoding[:40]!r} is not supported; send gzip, deflate or"
                               " none", status=415, type="invalid_request_error", code="unsupported_encoding")
        cap = int(server.max_body_mb * MB)
        async with request.app[INFLATE_SLOTS]:
            body = await asyncio.to_thread(inflate, raw, encoding, cap)
        if body is None:
            raise web.HTTPRequestEntityTooLarge(max_size=cap, actual_size=cap + 1)
        # aiohttp keeps a body it read here; every later read() (json, post) sees the inflated one
        request._read_bytes = body
    return await handler(request)


def inflate(raw: bytes, encoding: str, cap: int) -> bytes | None:
    """``raw`` decoded, or None past ``cap`` bytes; BadRequest when it is not valid (or is cut short)."""
    wbits = WBITS[encoding]
    if wbits == 15 and raw and raw[0] & 0x0F != 8:
        wbits = -15  # raw deflate, as some clients send it
    out = bytearray()
    rest = raw
    try:
        while rest:  # gzip allows several members one after the other
            d = zlib.decompressobj(wbits)
            out += d.decompress(rest, cap + 1 - len(out))
            if len(out) > cap:
                return None
            if not d.eof:
                raise BadRequest(f"the {encoding} request body is cut short", code="invalid_body_encoding")
            rest = d.unused_data
    except zlib.error:
        raise BadRequest(f"the request body is not valid {encoding}", code="invalid_body_encoding") from None
    return bytes(out)
