"""``/mcp``: the tools of the configured MCP servers, over MCP's Streamable HTTP transport.

One endpoint serves both eras of the protocol, as a "dual-era" server may:

- **2026-07-28** (a POST whose ``MCP-Protocol-Version`` header names it, or whose body
  carries the per-request ``_meta`` envelope): stateless. One JSON-RPC request per POST,
  its ``_meta`` checked against the ``MCP-Protocol-Version``/``Mcp-Method``/``Mcp-Name``
  (and ``Mcp-Param-*``) headers, ``server/discover``, results tagged ``resultType``.
- **2025-11-25, 2025-06-18, 2025-03-26** (the ``initialize`` handshake): ``initialize``
  issues an ``Mcp-Session-Id`` bound to the caller's key; later POSTs must carry it (400
  without, 404 once unknown or ended); ``DELETE`` ends it; ``ping``; batches on 2025-03-26
  only (2025-06-18 removed them). ``GET`` is 405: the gateway sends nothing unasked.

Every POST authenticates with a virtual key as the other routes do (``Authorization:
Bearer`` or ``x-api-key``; refused with 401 when ``auth.required``), and a key sees and
calls only the tools its ``mcp_tools`` globs match. Tools are named ``server-tool``.

A request answers as JSON, or, when it is still running after ``SSE_AFTER_S``, as an SSE
stream of keep-alive comments ended by the response (the client accepted both). Errors
follow the tools spec: an unknown method, an unknown or refused tool and bad params are
JSON-RPC errors; a tool that ran and failed, or whose server is down, died mid-call or
timed out, is a result with ``isError`` so the model sees what happened.

Each ``tools/call`` is one ``Exchange`` (route ``mcp``, provider = server, model = the
exposed tool name) run through the hooks, so it is logged beside the chat requests.

References: https://modelcontextprotocol.io/specification/2026-07-28/basic/transports/streamable-http,
https://modelcontextprotocol.io/specification/2026-07-28/basic/versioning,
https://modelcontextprotocol.io/specification/2025-11-25/basic/transports,
https://modelcontextprotocol.io/specification/2025-11-25/basic/lifecycle,
https://modelcontextprotocol.io/specification/2025-11-25/server/tools
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from aiohttp import web
from yarl import URL

from finopsd import __version__
from finopsd import access
from finopsd.admin import is_loopback
from finopsd.appkeys import RUNTIME
from finopsd.errors import GatewayError, error_type_for_status
from finopsd.exchange import Exchange, ToolCall, new_request_id
from finopsd.jsonwire import loads
from finopsd.mcp_upstream import MCP_HUB, Upstream, UpstreamFailure, UpstreamRpcError
from finopsd.middleware import REQUEST_ID
from finopsd.relay import run_exchange

if TYPE_CHECKING:
    from finopsd.config import VirtualKey

__all__ = ["MCP_SESSIONS", "Sessions", "add_routes", "may_call", "result_text"]

log = logging.getLogger(__name__)

PATH: Final = "/mcp"
MODERN: Final = ("2026-07-28",)
HANDSHAKE: Final = ("2025-11-25", "2025-06-18", "2025-03-26")  # newest first: initialize's counter-offer
BATCHES: Final = ("2025-03-26",)
VERSION_HEADER: Final = "MCP-Protocol-Version"
SESSION_HEADER: Final = "Mcp-Session-Id"
META_VERSION: Final = "io.modelcontextprotocol/protocolVersion"
META_CAPABILITIES: Final = "io.modelcontextprotocol/clientCapabilities"
META_SERVER_INFO: Final = "io.modelcontextprotocol/serverInfo"
SERVER_INFO: Final = {"name": "finopsd", "version": __version__}
INSTRUCTIONS: Final = "The tools of the MCP servers configured in finopsd, each named <server>-<tool>."

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = -32700, -32600, -32601, -32602, -32603
HEADER_MISMATCH, UNSUPPORTED_VERSION = -32020, -32022
GATEWAY_REFUSED: Final = -32010  # implementation-defined range: the key or its limits refused; data.status says why
# 2026-07-28 maps these codes to HTTP statuses; every other error answers 200
MODERN_STATUS: Final = {PARSE_ERROR: 400, INVALID_REQUEST: 400, INVALID_PARAMS: 400, HEADER_MISMATCH: 400,
                        UNSUPPORTED_VERSION: 400, METHOD_NOT_FOUND: 404}
NAMED_BY: Final = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}  # → Mcp-Name

SSE_AFTER_S = 10.0  # a request still running after this answers as SSE, with a keep-alive this often
SSE_HEADERS: Final = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class RpcError(GatewayError):
    """A JSON-RPC error for the client; ``status`` and ``type`` are what the log row records."""

    def __init__(self, code: int, message: str, data: Any = None, *, status: int = 400) -> None:
        super().__init__(message, status=status,
                         type="upstream_error" if status >= 500 else error_type_for_status(status))
        self.rpc_code, self.data = code, data

    def body(self) -> dict[str, Any]:
        return {"code": self.rpc_code, "message": self.message,
                **({"data": self.data} if self.data is not None else {})}


class Caller(NamedTuple):
    key: VirtualKey | None  # None: anonymous (only when auth is not required)
    version: str  # the request's protocol version, or its session's


@dataclass
class Session:
    version: str  # negotiated at initialize
    key_name: str | None  # the key that opened it; no other key may use it
    seen: float = field(default_factory=time.monotonic)


class Sessions:
    """Handshake-era sessions: ids from ``secrets``, dropped after an idle hour or when too many."""

    IDLE_S: Final = 3600.0
    MAX: Final = 10_000

    def __init__(self) -> None:
        self._by_id: dict[str, Session] = {}  # insertion order: the oldest come first

    def open(self, version: str, key_name: str | None) -> str:
        now = time.monotonic()
        for sid, oldest in list(self._by_id.items()):  # least recently used first
            if now - oldest.seen <= self.IDLE_S and len(self._by_id) < self.MAX:
                break
            del self._by_id[sid]
        sid = secrets.token_urlsafe(24)  # visible ASCII, as the spec asks of a session id
        self._by_id[sid] = Session(version, key_name, now)
        return sid

    def get(self, sid: str) -> Session | None:
        session = self._by_id.get(sid)
        if session is None or time.monotonic() - session.seen > self.IDLE_S:
            self._by_id.pop(sid, None)
            return None
        session.seen = time.monotonic()
        self._by_id[sid] = self._by_id.pop(sid)  # most recently used last: evicted last
        return session

    def end(self, sid: str) -> None:
        self._by_id.pop(sid, None)


MCP_SESSIONS: Final = web.AppKey("mcp_sessions", Sessions)


def may_call(key: VirtualKey | None, exposed: str) -> bool:
    """Whether a key's ``mcp_tools`` globs let it see and call a tool (absent: every tool)."""
    return key is None or key.mcp_tools is None or any(fnmatch.fnmatchcase(exposed, p) for p in key.mcp_tools)


def _reply(rid: Any, *, result: dict[str, Any] | None = None, error: RpcError | None = None) -> dict[str, Any]:
    if error is not None:
        return {"jsonrpc": "2.0", "id": rid, "error": error.body()}
    return {"jsonrpc": "2.0", "id": rid, "result": result}


def _refusal(status: int, code: int, message: str, headers: dict[str, str] | None = None,
             data: Any = None) -> web.Response:
    """An HTTP-level refusal, its body a JSON-RPC error without an id, as the transport spec allows."""
    return web.json_response(_reply(None, error=RpcError(code, message, data)), status=status, headers=headers)


# --- the endpoint ----------------------------------------------------------------------


def _origin_allowed(request: web.Request, origin: str) -> bool:
    """An origin named in ``server.cors.allowed_origins`` (``*`` does not count here), or a loopback page.

    The spec's MUST against DNS rebinding: a page on any site could otherwise drive the
    tools (a file system, a tracker) through a gateway on 127.0.0.1. MCP clients that are
    not browsers send no Origin.
    """
    if origin in request.app[RUNTIME].config.server.cors.allowed_origins:
        return True
    host = URL(origin).host if origin.startswith(("http://", "https://")) else None
    return host is not None and (host == "localhost" or is_loopback(host.strip("[]")))


def _refused_key(e: GatewayError) -> dict[str, Any]:
    """The access middleware's 401 for /mcp: a JSON-RPC error without an id."""
    return _reply(None, error=RpcError(GATEWAY_REFUSED, e.message, {"status": e.status, "code": e.code}))


mcp_key: Final = access.key(shape=_refused_key)


async def _admit(request: web.Request) -> VirtualKey | None | web.Response:
    """The caller's key (None: anonymous; the access middleware refused the rest), or the refusal."""
    origin = request.headers.get("Origin")
    if origin is not None and not _origin_allowed(request, origin):
        return _refusal(403, INVALID_REQUEST, f"origin {origin[:100]} is not allowed to use /mcp"
                        " (list it in server.cors.allowed_origins)")
    request.app[MCP_HUB].sync(request.app[RUNTIME].config.mcp)  # a SIGHUP may have changed `mcp`
    return request[access.CALLER]


@mcp_key
async def post(request: web.Request) -> web.StreamResponse:
    key = await _admit(request)
    if isinstance(key, web.Response):
        return key
    accept = request.headers.get("Accept", "*/*")
    if not any(t in accept for t in ("application/json", "*/*", "application/*")):
        return _refusal(406, INVALID_REQUEST, "Accept must list application/json and text/event-stream")
    sse_ok = any(t in accept for t in ("text/event-stream", "*/*", "text/*"))
    try:
        body = loads(await request.read())
    except ValueError:
        return _refusal(400, PARSE_ERROR, "Parse error: the body is not JSON")
    version = request.headers.get(VERSION_HEADER)
    modern_meta = isinstance(body, dict) and isinstance(body.get("params"), dict) and isinstance(
        body["params"].get("_meta"), dict) and META_VERSION in body["params"]["_meta"]
    if (version is not None and version not in HANDSHAKE) or (
            version is None and modern_meta and SESSION_HEADER not in request.headers):
        return await _modern(request, key, body, sse_ok)
    return await _handshake_era(request, key, body, sse_ok)


async def _modern(request: web.Request, key: VirtualKey | None, body: Any, sse_ok: bool) -> web.StreamResponse:
    """2026-07-28: one request per POST, validated against its headers, no session."""
    if not isinstance(body, dict) or not isinstance(body.get("method"), str):
        return _refusal(400, INVALID_REQUEST, "the body must be one JSON-RPC request or notification object")
    if "id" not in body:  # no client notification means anything on this wire: acknowledge it
        requested = request.headers.get(VERSION_HEADER, "")
        if requested not in MODERN:
            return _refusal(400, UNSUPPORTED_VERSION, "Unsupported protocol version", data=_unsupported(requested))
        return web.Response(status=202)
    rid = body["id"]
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        return _refusal(400, INVALID_REQUEST, "id must be a string or an integer")
    try:
        version = _check_envelope(request, body)
    except RpcError as e:
        return web.json_response(_reply(rid, error=e), status=MODERN_STATUS.get(e.rpc_code, 400))
    return await _answer(request, Caller(key, version), [body], sse_ok, batch=False)


def _unsupported(requested: Any) -> dict[str, Any]:
    return {"supported": [*MODERN, *HANDSHAKE], "requested": requested}


def _check_envelope(request: web.Request, body: dict[str, Any]) -> str:
    from mcp.shared.inbound import decode_header_value  # the SDK loads only once /mcp is used

    """The 2026-07-28 ladder: the ``_meta`` envelope, then headers against body, then the version."""
    params = body.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(meta, dict) or META_VERSION not in meta or META_CAPABILITIES not in meta:
        raise RpcError(INVALID_PARAMS, f"params._meta must carry {META_VERSION!r} and {META_CAPABILITIES!r}")
    assert isinstance(params, dict)
    for name in (VERSION_HEADER, "Mcp-Method", "Mcp-Name"):
        if len(request.headers.getall(name, [])) > 1:  # first-copy and last-copy readers would disagree
            raise RpcError(HEADER_MISMATCH, f"{name} header appears more than once")
    version = meta[META_VERSION]
    if request.headers.get(VERSION_HEADER) != version:
        raise RpcError(HEADER_MISMATCH, f"{VERSION_HEADER} header does not match params._meta's protocol version")
    method = body["method"]
    if request.headers.get("Mcp-Method") != method:
        raise RpcError(HEADER_MISMATCH, "Mcp-Method header does not match the request's method")
    named_by = NAMED_BY.get(method)
    named = params.get(named_by) if named_by else None
    if named is not None and decode_header_value(request.headers.get("Mcp-Name")) != named:
        raise RpcError(HEADER_MISMATCH, f"Mcp-Name header does not match params.{named_by}")
    if version not in MODERN:
        raise RpcError(UNSUPPORTED_VERSION, "Unsupported protocol version", _unsupported(version))
    return str(version)


async def _handshake_era(request: web.Request, key: VirtualKey | None, body: Any, sse_ok: bool
                         ) -> web.StreamResponse:
    """2025-03-26 … 2025-11-25: ``initialize`` opens a session that later requests name."""
    batch = isinstance(body, list)
    messages = body if batch else [body]
    if not messages or not all(isinstance(m, dict) for m in messages):
        return _refusal(400, INVALID_REQUEST, "the body must be a JSON-RPC message (or, on 2025-03-26, a batch)")
    if any(m.get("method") == "initialize" for m in messages):
        if batch:
            return _refusal(400, INVALID_REQUEST, "initialize must not be part of a batch")
        return _initialize(request, key, messages[0])
    sid = request.headers.get(SESSION_HEADER)
    if not sid:
        return _refusal(400, INVALID_REQUEST, f"{SESSION_HEADER} header required: send initialize first")
    session = request.app[MCP_SESSIONS].get(sid)
    if session is None or session.key_name != (key.name if key else None):
        return _refusal(404, INVALID_REQUEST, "session not found: it ended or expired; send initialize again")
    requested = request.headers.get(VERSION_HEADER)
    if requested is not None and requested != session.version:
        return _refusal(400, UNSUPPORTED_VERSION, f"{VERSION_HEADER} {requested!r} is not this session's"
                        f" negotiated version {session.version!r}", data=_unsupported(requested))
    if batch and session.version not in BATCHES:
        return _refusal(400, INVALID_REQUEST, f"JSON-RPC batches are not part of protocol {session.version}")
    requests = [m for m in messages if isinstance(m.get("method"), str) and "id" in m]
    if not requests:  # notifications (initialized, cancelled) and responses: nothing to answer
        return web.Response(status=202)
    return await _answer(request, Caller(key, session.version), requests, sse_ok, batch=batch)


def _initialize(request: web.Request, key: VirtualKey | None, msg: dict[str, Any]) -> web.Response:
    if "id" not in msg:
        return _refusal(400, INVALID_REQUEST, "initialize is a request: it needs an id")
    params = msg.get("params") if isinstance(msg.get("params"), dict) else {}
    requested = params.get("protocolVersion")
    version = requested if requested in HANDSHAKE else HANDSHAKE[0]  # else our newest: the client decides
    sid = request.app[MCP_SESSIONS].open(version, key.name if key else None)
    result = {"protocolVersion": version, "capabilities": {"tools": {"listChanged": False}},
              "serverInfo": SERVER_INFO, "instructions": INSTRUCTIONS}
    return web.json_response(_reply(msg["id"], result=result), headers={SESSION_HEADER: sid})


@mcp_key
async def delete(request: web.Request) -> web.StreamResponse:
    """End a handshake-era session (2026-07-28 has none to end: 405, as that revision says)."""
    key = await _admit(request)
    if isinstance(key, web.Response):
        return key
    sid = request.headers.get(SESSION_HEADER)
    if not sid:
        return _refusal(405, INVALID_REQUEST, "no session to end", {"Allow": "POST, DELETE"})
    sessions = request.app[MCP_SESSIONS]
    session = sessions.get(sid)
    if session is None or session.key_name != (key.name if key else None):
        return _refusal(404, INVALID_REQUEST, "session not found")
    sessions.end(sid)
    return web.Response(status=200)


@access.public  # a 405 that reaches nothing
async def get(request: web.Request) -> web.StreamResponse:
    # no server-initiated stream: the gateway neither sends requests nor announces list changes
    return _refusal(405, INVALID_REQUEST, "this endpoint offers no GET stream; POST requests to it",
                    {"Allow": "POST, DELETE"})


@access.admin
async def servers(request: web.Request) -> web.Response:
    """``GET /api/mcp/servers`` (admin): each upstream's state, last error and tools."""
    return web.json_response({"servers": request.app[MCP_HUB].status()})


# --- answering -------------------------------------------------------------------------


async def _answer(request: web.Request, caller: Caller, msgs: list[dict[str, Any]], sse_ok: bool, *,
                  batch: bool) -> web.StreamResponse:
    """JSON; or, for one request still running after ``SSE_AFTER_S``, SSE with keep-alives."""
    modern = caller.version in MODERN
    if batch:
        replies = await asyncio.gather(*(_dispatch(request, caller, m, new_request_id()) for m in msgs))
        return web.json_response(list(replies))
    task = asyncio.create_task(_dispatch(request, caller, msgs[0], request[REQUEST_ID]))
    response = web.StreamResponse(headers=SSE_HEADERS)
    try:
        await asyncio.wait({task}, timeout=SSE_AFTER_S if sse_ok else None)
        if task.done():
            reply = task.result()
            code = reply.get("error", {}).get("code")
            return web.json_response(reply, status=MODERN_STATUS.get(code, 200) if modern else 200)
        await response.prepare(request)
        while not task.done():
            await response.write(b": keep-alive\n\n")  # a comment: proxies see traffic, clients ignore it
            await asyncio.wait({task}, timeout=SSE_AFTER_S)
        reply = json.dumps(task.result()).encode()
        await response.write(b"event: message\ndata: " + request.app[RUNTIME].scrubber.bytes(reply) + b"\n\n")
        await response.write_eof()
        return response
    except ConnectionResetError:  # the client left mid-stream: ``finally`` stops the call
        return response
    finally:
        if not task.done():  # the client left: stop the call; its log row says client_closed
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _dispatch(request: web.Request, caller: Caller, msg: dict[str, Any], ex_id: str) -> dict[str, Any]:
    rid, method, params = msg.get("id"), msg.get("method"), msg.get("params")
    try:
        if params is not None and not isinstance(params, dict):
            raise RpcError(INVALID_PARAMS, "params must be an object")
        result = await _method(request, caller, str(method), params or {}, rid, ex_id)
    except RpcError as e:
        return _reply(rid, error=e)
    except Exception:
        log.exception("MCP request %s: %s failed", ex_id, method)
        return _reply(rid, error=RpcError(INTERNAL_ERROR, "internal error in the gateway"))
    if caller.version in MODERN:
        result.setdefault("resultType", "complete")
        result["_meta"] = {**(result.get("_meta") or {}), META_SERVER_INFO: SERVER_INFO}
    else:
        result.pop("resultType", None)  # a 2026 field: strict handshake-era peers reject extra keys
    return _reply(rid, result=result)


async def _method(request: web.Request, caller: Caller, method: str, params: dict[str, Any], rid: Any,
                  ex_id: str) -> dict[str, Any]:
    key, modern = caller.key, caller.version in MODERN
    if method == "ping" and not modern:  # removed in 2026-07-28
        return {}
    if method == "server/discover" and modern:
        return {"supportedVersions": [*MODERN, *HANDSHAKE], "capabilities": {"tools": {"listChanged": False}},
                "instructions": INSTRUCTIONS, "ttlMs": 0, "cacheScope": "private"}
    if method == "tools/list":
        if params.get("cursor") is not None:
            raise RpcError(INVALID_PARAMS, "invalid cursor: this server lists every tool on one page")
        tools = [t for t in request.app[MCP_HUB].exposed_tools() if may_call(key, t["name"])]
        # the list depends on the caller's key: no shared cache may serve it to another
        return {"tools": tools, **({"ttlMs": 0, "cacheScope": "private"} if modern else {})}
    if method == "tools/call":
        return await _call_tool(request, caller, params, rid, ex_id)
    raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}", status=404)


# --- tools/call ------------------------------------------------------------------------


async def _call_tool(request: web.Request, caller: Caller, params: dict[str, Any], rid: Any, ex_id: str
                     ) -> dict[str, Any]:
    from mcp.shared.inbound import validate_mcp_param_headers

    name, arguments = params.get("name"), params.get("arguments")
    if not isinstance(name, str) or not name:
        raise RpcError(INVALID_PARAMS, "tools/call needs params.name, a tool name")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise RpcError(INVALID_PARAMS, "params.arguments must be an object")
    hub = request.app[MCP_HUB]
    found = hub.split(name)
    if caller.version in MODERN and found is not None:
        schema = next((t.get("inputSchema") for t in found[0].tools if t.get("name") == found[1]), None)
        rejection = validate_mcp_param_headers(schema, arguments, request.headers) if schema else None
        if rejection is not None:
            raise RpcError(HEADER_MISMATCH, rejection.message)
    ex = Exchange(id=ex_id, route="mcp", client_ip=request.remote, user_agent=request.headers.get("User-Agent"),
                  model=name, request={"tool": name, "arguments": arguments})
    # the call as a tool call in the transcript: /logs finds a row by tool name and arguments
    ex.transcript.tool_calls.append(ToolCall(str(rid), name, [json.dumps(arguments, ensure_ascii=False)]))
    if found is not None:
        ex.provider, ex.upstream_model = found[0].config.name, found[1]
    return await _run_logged(request, ex, lambda: _invoke(caller.key, found, name, arguments, ex))


async def _invoke(key: VirtualKey | None, found: tuple[Upstream, str] | None, name: str,
                  arguments: dict[str, Any], ex: Exchange) -> dict[str, Any]:
    if not may_call(key, name):
        assert key is not None
        raise RpcError(INVALID_PARAMS, f"tool {name!r} is not allowed for key {key.name!r}", status=403)
    if found is None or (found[0].state == "up" and not found[0].has_tool(found[1])):
        raise RpcError(INVALID_PARAMS, f"Unknown tool: {name}", status=404)
    upstream, tool = found
    try:
        result = await upstream.call_tool(tool, arguments)
    except UpstreamFailure as e:  # the model should see it: a result, flagged as an error
        ex.fail(504 if e.timeout else 502, "timeout_error" if e.timeout else "upstream_error", e.message)
        ex.transcript.content.append(e.message)
        return {"content": [{"type": "text", "text": e.message}], "isError": True}
    except UpstreamRpcError as e:  # as the upstream said it; the log row tells whose fault it was
        status = 400 if e.code in (INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND) else 502
        raise RpcError(e.code, e.message, e.data, status=status) from None
    meta = result.get("_meta")
    if isinstance(meta, dict):  # the upstream's self-description is not ours to pass on
        meta.pop(META_SERVER_INFO, None)
        if not meta:
            del result["_meta"]
    text = result_text(result)
    ex.transcript.content.append(text)
    ex.status_code = 200
    if result.get("isError"):
        ex.status, ex.error_type, ex.error_message = "error", "tool_error", text[:1000]
    return result


def result_text(result: dict[str, Any]) -> str:
    """A tool result as text for the log: text blocks whole, other blocks named, not inlined."""
    parts: list[str] = []
    for block in result.get("content") or ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        resource = block.get("resource") if isinstance(block.get("resource"), dict) else {}
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
        elif kind == "resource" and isinstance(resource.get("text"), str):
            parts.append(resource["text"])
        else:  # images, audio, links: named, not inlined
            where = block.get("mimeType") or block.get("uri") or resource.get("uri")
            parts.append(f"[{kind} {where}]" if where else f"[{kind}]")
    if not parts and result.get("structuredContent") is not None:
        parts.append(json.dumps(result["structuredContent"], ensure_ascii=False))
    return "\n".join(parts)


async def _run_logged(request: web.Request, ex: Exchange, core: Callable[[], Awaitable[dict[str, Any]]]
                      ) -> dict[str, Any]:
    """``relay.run_exchange`` for a tool call: a refusal by a hook becomes a JSON-RPC error."""
    try:
        return await run_exchange(request, ex, core, model_for_hooks=False)
    except RpcError:
        raise
    except GatewayError as e:
        data = {"status": e.status, "type": e.type, "code": e.code}
        if "Retry-After" in e.headers:
            data["retry_after"] = e.headers["Retry-After"]
        raise RpcError(GATEWAY_REFUSED, e.message, data, status=e.status) from None


def add_routes(router: web.UrlDispatcher) -> None:
    for path in (PATH, PATH + "/"):
        router.add_post(path, post)
        router.add_delete(path, delete)
        router.add_get(path, get)
    router.add_get("/api/mcp/servers", servers)

