"""Admin access: the token (Bearer or login cookie) when set, loopback only when not."""

from __future__ import annotations

import base64
import hashlib
import html
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

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


# --- after login, only this origin ----------------------------------------------------------------

OFF_SITE = ["//evil.example/x", "/\t/evil.example/x", "/%09/evil.example/x", "/\n/evil.example", "/\\evil.example",
            "/\\/evil.example", "\\\\evil.example", "http://evil.example/", "https:evil.example", "javascript:alert(1)",
            " /evil", "/..//evil.example/x", "/a/../..//evil.example", "/%2e%2e//evil.example", "/\x00/evil.example",
            "evil.example", "/logs\r\nSet-Cookie: x=1"]


async def test_login_goes_only_to_a_path_on_this_origin(aiohttp_client: Any) -> None:
    gw = await client_for(aiohttp_client, "server: {admin_token: s3cret-admin}\n")
    base = URL("http://finopsd.test/login")
    for nxt in OFF_SITE:
        resp = await gw.post("/login", data={"token": "s3cret-admin", "next": nxt}, allow_redirects=False)
        location = resp.headers["Location"]
        landed = base.join(URL(location))
        assert resp.status == 303 and landed.origin() == base.origin(), (nxt, location)
        assert not location.startswith(("//", "/\\")) and not any(c in location for c in "\t\r\n\\"), (nxt, location)
        form = await (await gw.get("/login", params={"next": nxt})).text()
        hidden = form.split('name="next" value="')[1].split('"')[0]
        assert base.join(URL(html.unescape(hidden))).origin() == base.origin(), (nxt, hidden)
    resp = await gw.post("/login", data={"token": "s3cret-admin", "next": "/logs/r1?q=a%20b&x=1"},
                         allow_redirects=False)
    assert resp.headers["Location"] == "/logs/r1?q=a%20b&x=1"  # a local path with its query keeps both
    gw.session.cookie_jar.clear()  # logged out again
    resp = await gw.get("/probe-page?q=a&b=c", allow_redirects=False)
    assert URL(resp.headers["Location"]).query["next"] == "/probe-page?q=a&b=c"


async def test_login_page_has_the_pages_headers(aiohttp_client: Any) -> None:
    gw = await client_for(aiohttp_client, "server: {admin_token: s3cret-admin}\n")
    for resp in (await gw.get("/login"), await gw.post("/login", data={"token": "nope"})):
        csp = resp.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
        assert resp.headers["Cache-Control"] == "no-store" and resp.headers["X-Content-Type-Options"] == "nosniff"
        style = (await resp.text()).split("<style>")[1].split("</style>")[0]
        digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp  # the one inline style is allowed by its hash, nothing else


async def test_wrong_tokens_are_throttled_per_address(aiohttp_client: Any) -> None:
    gw = await client_for(aiohttp_client, "server: {admin_token: s3cret-admin}\n")
    for _ in range(admin.Throttle.FAILURES):
        assert (await gw.post("/login", data={"token": "guess"})).status == 401
    for attempt in (gw.post("/login", data={"token": "s3cret-admin"}, allow_redirects=False),
                    gw.get("/api/probe", headers={"Authorization": "Bearer s3cret-admin"})):
        resp = await attempt
        assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0  # even the right token waits


async def test_bearer_guesses_are_throttled_too(aiohttp_client: Any) -> None:
    gw = await client_for(aiohttp_client, "server: {admin_token: s3cret-admin}\n")
    statuses = [(await gw.get("/api/probe", headers={"Authorization": f"Bearer guess-{i}"})).status
                for i in range(admin.Throttle.FAILURES + 2)]
    assert statuses == [401] * admin.Throttle.FAILURES + [429, 429]


def test_the_throttle_forgets_the_oldest_addresses_first() -> None:
    throttle = admin.Throttle()
    for i in range(admin.Throttle.MAX_ADDRESSES + 500):
        throttle.fail(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle._failed) == admin.Throttle.MAX_ADDRESSES
    assert "10.0.0.0" not in throttle._failed and f"10.0.{(admin.Throttle.MAX_ADDRESSES + 499) // 256}.243" in \
        throttle._failed
