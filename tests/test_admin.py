"""Admin access: the token (Bearer or login cookie) when set, loopback only when not."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from finopsd import access, admin
from finopsd.app import build_app
from finopsd import config as cfg


async def probe(request: web.Request) -> web.Response:
    admin.require_admin(request)
    return web.json_response({"ok": True})


@access.admin_page  # unmarked, it would be closed as an admin API (a 401, not the login redirect)
async def page(request: web.Request) -> web.Response:
    admin.require_admin_page(request)
    return web.Response(text="secret page")


async def client_for(aiohttp_client: Any, yaml_text: str) -> TestClient:
    app = build_app(cfg.parse(yaml_text, env={}))
    app.router.add_get("/api/probe", probe)
    app.router.add_get("/probe-page", page)
    return await aiohttp_client(app)


async def test_without_token_loopback_is_let_in(aiohttp_client: Any) -> None:
    gw = await client_for(aiohttp_client, "{}")
    assert (await gw.get("/api/probe")).status == 200


async def test_token_required_via_bearer(aiohttp_client: Any) -> None:
    gw = await client_for(aiohttp_client, "server: {admin_token: s3cret-admin}\n")
    resp = await gw.get("/api/probe")
    assert resp.status == 401
    body = await resp.json()
    assert body["error"]["code"] == "admin_token_required" and "s3cret" not in await resp.text()
    assert (await gw.get("/api/probe", headers={"Authorization": "Bearer wrong"})).status == 401
    assert (await gw.get("/api/probe", headers={"Authorization": "Bearer s3cret-admin"})).status == 200


async def test_login_form_sets_httponly_cookie_without_the_token(aiohttp_client: Any) -> None:
    gw = await client_for(aiohttp_client, "server: {admin_token: s3cret-admin}\n")
    resp = await gw.get("/probe-page", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/login?next=/probe-page"
    resp = await gw.post("/login", data={"token": "nope", "next": "/probe-page"}, allow_redirects=False)
    assert resp.status == 401 and "Wrong token" in await resp.text()
    resp = await gw.post("/login", data={"token": "s3cret-admin", "next": "//evil.example/x"},
                         allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/logs"
    set_cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "s3cret-admin" not in set_cookie
    assert (await gw.get("/probe-page")).status == 200  # the cookie jar carries the session


def test_non_loopback_is_refused_without_token() -> None:
    assert admin.is_loopback("127.0.0.1") and admin.is_loopback("::1")
    assert not admin.is_loopback("10.1.2.3") and not admin.is_loopback(None)
