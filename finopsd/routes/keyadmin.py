"""The admin API for keys and teams made at runtime, and the audit trail of every change.

    POST   /api/keys                 {name, team, models, budgets, ...} → 201 {key, secret, roo_code}
    GET    /api/keys/{name}          the definition, its source (config | dashboard), version, status
    PATCH  /api/keys/{name}          the fields given; the rest stay
    POST   /api/keys/{name}/rotate   {grace_seconds} → a new secret, same name, limits and spend
    DELETE /api/keys/{name}          revoked at once; its spend and log rows stay, under its name
    POST/GET/PATCH/DELETE /api/teams[/{name}]   the same for teams (a team with keys is not deleted)
    GET    /api/audit                newest first: ?limit= (≤ 500), ?before= (an id) for the next page

All need the admin token (``finopsd.admin``). A change answers the entry's ``version`` and
``ETag``; sent back as ``If-Match``, a write made meanwhile by someone else makes it 409 instead
of being lost. Field errors are 422 naming the field (``param``); a body that is not a JSON
object is 400; an unknown name 404; a name the config file defines is read-only here (409).
The secret is in the answer to create and rotate only, never again.
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any, Final

from aiohttp import web

from finopsd import access
from finopsd.admin import COOKIE
from finopsd.appkeys import GOVERNANCE, RUNTIME
from finopsd.errors import BadRequest, GatewayError
from finopsd.keystore import KeyStore

__all__ = ["actor_of", "add_routes", "roo_code_profile"]

NO_STORE: Final = {"Cache-Control": "no-store"}
KINDS: Final = {"keys": "key", "teams": "team"}
MAX_ACTOR: Final = 64


def actor_of(request: web.Request) -> str:
    """Who made a change, for the audit trail: how they proved to be the admin, and the CLI's mark."""
    if request.headers.get("Authorization", "").startswith("Bearer "):
        who = "admin token"
    elif COOKIE in request.cookies:
        who = "admin session"
    else:
        who = "loopback"
    tool = request.headers.get("X-Finopsd-Actor", "")[:MAX_ACTOR]
    return f"{tool} ({who})" if tool.isidentifier() else who


def _store(request: web.Request) -> KeyStore:
    store = request.app[RUNTIME].dashboard
    if store is None:
        raise GatewayError("the key store is not open", status=503, type="server_error")
    return store


async def _body(request: web.Request, required: bool = True) -> dict[str, Any]:
    raw = await request.read()
    if not required and not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def if_match(request: web.Request) -> int | None:
    """The version an ``If-Match: "v3"`` names (None: no condition)."""
    value = request.headers.get("If-Match", "").strip().removeprefix("W/").strip('"')
    if not value or value == "*":
        return None
    try:
        return int(value.removeprefix("v"))
    except ValueError:
        raise BadRequest("If-Match must be an ETag this API answered (\"v3\")", param="If-Match") from None


def _headers(view: dict[str, Any]) -> dict[str, str]:
    return {**NO_STORE, "ETag": f'"v{view["version"]}"'} if view.get("version") is not None else dict(NO_STORE)


def _answer(view: dict[str, Any], status: int = 200, secret: str | None = None,
            request: web.Request | None = None) -> web.Response:
    body = view if secret is None or request is None else {
        "key": view, "secret": secret, "roo_code": roo_code_profile(request, view, secret)}
    return web.json_response(body, status=status, headers=_headers(view))


def roo_code_profile(request: web.Request, key: dict[str, Any], secret: str) -> dict[str, str]:
    """What to paste into a Roo Code "OpenAI Compatible" profile for a new key."""
    rt = request.app[RUNTIME]
    globs = key.get("models") or []
    model = next((g for g in globs if not any(c in g for c in "*?[")), "")
    if not model:
        allowed = request.app[GOVERNANCE].visible_models(None, rt.models())
        model = next((f"{p}/{m}" for p, m in allowed
                      if not globs or any(fnmatch.fnmatchcase(f"{p}/{m}", g) for g in globs)), "")
    return {"provider": "OpenAI Compatible", "base_url": f"{request.scheme}://{request.host}/openai",
            "api_key": secret, "model": model}


def _kind(request: web.Request) -> str:
    return KINDS[request.path.split("/")[2]]  # /api/keys… or /api/teams…


@access.admin
async def create(request: web.Request) -> web.Response:
    kind = _kind(request)
    view, secret = await _store(request).create(kind, await _body(request), request.app[RUNTIME].config,
                                                actor_of(request), request.remote)
    return _answer(view, 201, secret, request)


@access.admin
async def read(request: web.Request) -> web.Response:
    kind, name = _kind(request), request.match_info["name"]
    view = _store(request).view(kind, name, request.app[RUNTIME].config)
    gov = request.app[GOVERNANCE]
    await gov.sync()
    report = gov.report()
    found = next((e for e in report[f"{kind}s"] if e["name"] == name), None)
    if found is not None:  # status, spend per budget and rate, as /api/keys shows them
        view = {**view, "usage": {k: found[k] for k in ("status", "budgets", "rate", "keys") if k in found}}
    return _answer(view)


@access.admin
async def list_teams(request: web.Request) -> web.Response:
    store, config = _store(request), request.app[RUNTIME].config
    names = list(config.teams) + [n for n in store.teams if n not in config.teams]
    return web.json_response({"teams": [store.view("team", n, config) for n in names]}, headers=NO_STORE)


@access.admin
async def edit(request: web.Request) -> web.Response:
    kind, name = _kind(request), request.match_info["name"]
    patch = await _body(request)
    action = "disable" if patch == {"enabled": False} else ("enable" if patch == {"enabled": True} else "edit")
    view = await _store(request).update(kind, name, patch, request.app[RUNTIME].config, actor_of(request),
                                        request.remote, if_match(request), action)
    return _answer(view)


@access.admin
async def rotate(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    body = await _body(request, required=False)
    grace = body.get("grace_seconds", 0)
    if isinstance(grace, bool) or not isinstance(grace, (int, float)):
        raise GatewayError("grace_seconds: must be a number of seconds", status=422, type="invalid_request_error",
                           param="grace_seconds", code="invalid_field")
    view, secret = await _store(request).rotate(name, request.app[RUNTIME].config, actor_of(request),
                                                request.remote, float(grace), if_match(request))
    return _answer(view, 200, secret, request)


@access.admin
async def delete(request: web.Request) -> web.Response:
    kind, name = _kind(request), request.match_info["name"]
    await _store(request).delete(kind, name, request.app[RUNTIME].config, actor_of(request), request.remote,
                                 if_match(request))
    return web.json_response({"deleted": name, "kind": kind}, headers=NO_STORE)


@access.admin
async def audit(request: web.Request) -> web.Response:
    try:
        limit = int(request.query.get("limit", "100"))
        before = int(request.query["before"]) if "before" in request.query else None
    except ValueError:
        raise BadRequest("limit and before must be integers", param="limit") from None
    items = await _store(request).audit(limit, before)
    return web.json_response({"items": items, "next_before": items[-1]["id"] if items else None}, headers=NO_STORE)


def add_routes(router: web.UrlDispatcher) -> None:
    for plural in KINDS:
        router.add_post(f"/api/{plural}", create)
        router.add_get(f"/api/{plural}/{{name}}", read)
        router.add_patch(f"/api/{plural}/{{name}}", edit)
        router.add_delete(f"/api/{plural}/{{name}}", delete)
    router.add_get("/api/teams", list_teams)
    router.add_post("/api/keys/{name}/rotate", rotate)
    router.add_get("/api/audit", audit)
