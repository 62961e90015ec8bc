"""Who may see conversation content: /logs, /keys and /api/* need the admin token, or loopback.

With ``server.admin_token`` set, a request needs ``Authorization: Bearer <token>``
or the HttpOnly session cookie that ``POST /login`` sets. The cookie holds an
HMAC of the token, never the token. Without a token, only clients on the
loopback interface are let in (the server binds 127.0.0.1 by default).

Two more refusals close the ways a web page the admin merely visits could read
conversations through the admin's own browser: JSON endpoints and pages refuse cross-site
fetches (``Sec-Fetch-Site``; the CORS middleware would otherwise let any origin read
the answer; pages still open from a link, ``Sec-Fetch-Mode: navigate``), and without a token a request must name a loopback host (DNS rebinding
points an attacker's name at 127.0.0.1).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from html import escape
from typing import Final

from aiohttp import web

from finopsd.appkeys import RUNTIME
from finopsd.errors import GatewayError

COOKIE: Final = "finopsd_admin"
LOGIN_PATH: Final = "/login"


def _session_value(token: str) -> str:
    return hmac.new(token.encode(), b"finopsd admin session v1", hashlib.sha256).hexdigest()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(hashlib.sha256(a.encode()).digest(), hashlib.sha256(b.encode()).digest())


def is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


def _foreign(request: web.Request, *, api: bool) -> GatewayError | None:
    """A browser reading admin data on behalf of another site, or through a rebound DNS name."""
    # Navigations may come from anywhere (a link in a chat): their answer is not readable
    # cross-site. A fetch's answer is, under CORS, pages included (the live /logs reads its
    # own HTML); browsers label every request they send.
    navigation = not api and request.headers.get("Sec-Fetch-Mode", "navigate") == "navigate"
    if not navigation and request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return GatewayError("admin data answers only same-origin browser requests", status=403,
                            type="permission_error", code="cross_site_refused")
    host = request.url.host or ""
    if request.app[RUNTIME].config.server.admin_token is None and not (
        host == "localhost" or host.endswith(".localhost") or is_loopback(host.strip("[]"))
    ):
        return GatewayError(f"without server.admin_token admin pages answer only loopback host names, "
                            f"not {host[:80]!r}", status=403, type="permission_error", code="admin_loopback_only")
    return None


def admin_refusal(request: web.Request, *, api: bool = True) -> GatewayError | None:
    """None when the request may see admin pages or data, else the error to answer with."""
    foreign = _foreign(request, api=api)
    if foreign is not None:
        return foreign
    token = request.app[RUNTIME].config.server.admin_token
    if token is None:
        if is_loopback(request.remote):
            return None
        return GatewayError(
            "admin pages answer only loopback clients while server.admin_token is not set",
            status=403, type="permission_error", code="admin_loopback_only",
        )
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer ") and _same(auth[7:].strip(), token):
        return None
    cookie = request.cookies.get(COOKIE)
    if cookie and _same(cookie, _session_value(token)):
        return None
    return GatewayError(
        "this page needs the admin token (Authorization: Bearer, or log in at /login)",
        status=401, type="authentication_error", code="admin_token_required",
    )


def require_admin(request: web.Request) -> None:
    """For JSON endpoints: raise the refusal (the error middleware answers it)."""
    refusal = admin_refusal(request)
    if refusal is not None:
        raise refusal


def require_admin_page(request: web.Request) -> None:
    """For HTML pages: a missing token sends a browser to the login form instead."""
    refusal = admin_refusal(request, api=False)
    if refusal is None:
        return
    if refusal.status == 401:
        raise web.HTTPSeeOther(f"{LOGIN_PATH}?next={request.path_qs}")
    raise refusal


LOGIN_FORM = """<!doctype html><html><head><meta charset="utf-8"><title>finopsd login</title>
<style>body{font:15px system-ui,sans-serif;margin:4rem auto;max-width:22rem}input,button{font:inherit;
padding:.4rem;width:100%;box-sizing:border-box;margin:.3rem 0}.err{color:#b00}</style></head><body>
<h1>finopsd</h1><p>Enter the admin token to see request logs.</p>{error}
<form method="post" action="/login"><input type="hidden" name="next" value="{next}">
<input type="password" name="token" placeholder="admin token" autofocus>
<button type="submit">Log in</button></form></body></html>"""


def _safe_next(value: str) -> str:
    # only local paths: never redirect off-site
    return value if value.startswith("/") and not value.startswith("//") else "/logs"


async def login_form(request: web.Request) -> web.Response:
    nxt = escape(_safe_next(request.query.get("next", "/logs")), quote=True)
    return web.Response(text=LOGIN_FORM.replace("{error}", "").replace("{next}", nxt), content_type="text/html")


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    token = request.app[RUNTIME].config.server.admin_token
    nxt = _safe_next(str(form.get("next", "/logs")))
    if token is None or not _same(str(form.get("token", "")), token):
        page = LOGIN_FORM.replace("{error}", '<p class="err">Wrong token.</p>').replace(
            "{next}", escape(nxt, quote=True)
        )
        return web.Response(text=page, content_type="text/html", status=401)
    resp = web.HTTPSeeOther(nxt)
    resp.set_cookie(COOKIE, _session_value(token), httponly=True, samesite="Strict", path="/")
    raise resp


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get(LOGIN_PATH, login_form)
    router.add_post(LOGIN_PATH, login)
