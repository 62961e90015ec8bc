"""Who may see conversation content: /logs, /keys and /api/* need the admin token, or loopback.

With ``server.admin_token`` set, a request needs ``Authorization: Bearer <token>``
or the HttpOnly session cookie that ``POST /login`` sets. The cookie holds an
HMAC of the token, never the token. Without a token, only clients on the
loopback interface are let in (the server binds 127.0.0.1 by default).

Two more refusals close the ways a web page the admin merely visits could read
conversations through the admin's own browser: JSON endpoints and pages refuse
cross-site fetches (``Sec-Fetch-Site``; the CORS middleware would otherwise let any
origin read the answer; pages still open from a link, ``Sec-Fetch-Mode: navigate``),
and without a token a request must name a loopback host (DNS rebinding points an
attacker's name at 127.0.0.1).

Wrong tokens (at /login or as a Bearer) are throttled per client address: after
``Throttle.FAILURES`` in ``Throttle.WINDOW_S`` that address gets 429 until the window has
passed, and the table of addresses is bounded (the oldest are forgotten first). After a
login the browser goes only to a same-origin path (``safe_next``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import ipaddress
import math
import time
from collections import OrderedDict
from html import escape
from typing import Final

from aiohttp import web
from yarl import URL

from finopsd import access
from finopsd.appkeys import RUNTIME
from finopsd.errors import GatewayError

COOKIE: Final = "finopsd_admin"
LOGIN_PATH: Final = "/login"


def _session_value(token: str) -> str:
    return hmac.new(token.encode(), b"finopsd admin session v1", hashlib.sha256).hexdigest()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(hashlib.sha256(a.encode()).digest(), hashlib.sha256(b.encode()).digest())


class Throttle:
    """Failed admin-token attempts per client address, in a bounded table."""

    FAILURES: Final = 5
    WINDOW_S: Final = 60.0
    MAX_ADDRESSES: Final = 4096

    def __init__(self) -> None:
        self._failed: OrderedDict[str, list[float]] = OrderedDict()  # address → failure times

    def check(self, remote: str | None) -> None:
        """429 while this address has used up its failures."""
        times = self._recent(remote or "", time.monotonic())
        if len(times) >= self.FAILURES:
            wait = max(1, math.ceil(times[0] + self.WINDOW_S - time.monotonic()))
            raise GatewayError(f"too many wrong admin tokens from this address; retry in {wait} s", status=429,
                               type="rate_limit_error", code="admin_token_throttled",
                               headers={"Retry-After": str(wait)})

    def fail(self, remote: str | None) -> None:
        now, address = time.monotonic(), remote or ""
        times = self._recent(address, now)
        times.append(now)
        self._failed[address] = times[-self.FAILURES:]
        self._failed.move_to_end(address)
        while len(self._failed) > self.MAX_ADDRESSES:
            self._failed.popitem(last=False)

    def _recent(self, address: str, now: float) -> list[float]:
        return [t for t in self._failed.get(address, ()) if now - t < self.WINDOW_S]


THROTTLE: Final = web.AppKey("admin_throttle", Throttle)


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
    try:
        host = request.url.host or ""
    except ValueError:  # a Host header no URL can hold ("::1" unbracketed, "a, b"): no loopback name
        host = ""
    if request.app[RUNTIME].config.server.admin_token is None and not (
        host == "localhost" or host.endswith(".localhost") or is_loopback(host.strip("[]"))
    ):
        return GatewayError(f"without server.admin_token admin pages answer only loopback host names, "
                            f"not {request.host[:80]!r}", status=403, type="permission_error",
                            code="admin_loopback_only")
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
    cookie = request.cookies.get(COOKIE)
    if cookie and _same(cookie, _session_value(token)):
        return None
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        throttle = request.app[THROTTLE]
        throttle.check(request.remote)
        if _same(auth[7:].strip(), token):
            return None
        throttle.fail(request.remote)
    return GatewayError(
        "this page needs the admin token (Authorization: Bearer, or log in at /login)",
        status=401, type="authentication_error", code="admin_token_required",
    )


def require_admin(request: web.Request) -> None:
    """For JSON endpoints: raise the refusal (the error middleware answers it)."""
    refusal = admin_refusal(request) or csrf_refusal(request)
    if refusal is not None:
        raise refusal


# --- CSRF: a browser's change needs the page's token and its own Origin -------------------

CSRF_HEADER: Final = "X-CSRF-Token"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_SECRET: Final = web.AppKey("csrf_secret", bytes)


def csrf_secret(admin_token: str | None) -> bytes:
    """With an admin token, derived from it: the same on every instance behind a load balancer,
    so that a /keys page one instance served may post to another (changing the token ends every
    session anyway). Without one (loopback browsers only), random per process."""
    if admin_token:
        return hmac.new(admin_token.encode(), b"finopsd csrf secret v1", hashlib.sha256).digest()
    return secrets.token_bytes(32)


def csrf_token(request: web.Request) -> str:
    """The token the /keys page carries: an HMAC of this browser's session (its login cookie; the
    loopback client when no admin token is set) under a secret of this process."""
    session = request.cookies.get(COOKIE, "") if request.app[RUNTIME].config.server.admin_token else "loopback"
    return hmac.new(request.app[CSRF_SECRET], f"csrf v1 {session}".encode(), hashlib.sha256).hexdigest()


def csrf_refusal(request: web.Request) -> GatewayError | None:
    """A change made with the cookie (or as a loopback browser) needs the page's token and a same-origin
    ``Origin``: a cross-site form or fetch rides on the cookie, but can neither read the token nor set the
    header. A Bearer token is proof enough: a browser never adds one on its own. Without a cookie and
    without the headers every browser sends with a change (``Origin``, ``Sec-Fetch-Site``), the caller is
    a program on this machine (curl, the CLI), which admin_refusal already limited to loopback."""
    if request.method in SAFE_METHODS or request.headers.get("Authorization", "").startswith("Bearer "):
        return None
    headers = request.headers
    if COOKIE not in request.cookies and "Origin" not in headers and "Sec-Fetch-Site" not in headers:
        return None
    origin = request.headers.get("Origin")
    if origin != f"{request.scheme}://{request.host}":
        return GatewayError("a change from a browser must come from this origin (Origin header)", status=403,
                            type="permission_error", code="csrf_origin")
    if not _same(request.headers.get(CSRF_HEADER, ""), csrf_token(request)):
        return GatewayError(f"a change from a browser needs the page's {CSRF_HEADER} (reload /keys)", status=403,
                            type="permission_error", code="csrf_token")
    return None


def require_admin_page(request: web.Request) -> None:
    """For HTML pages: a missing token sends a browser to the login form instead."""
    refusal = admin_refusal(request, api=False)
    if refusal is None:
        return
    if refusal.status == 401:
        raise web.HTTPSeeOther(str(URL(LOGIN_PATH).with_query(next=request.path_qs)))
    raise refusal


LOGIN_STYLE = """body{font:15px system-ui,sans-serif;margin:4rem auto;max-width:22rem}input,button{font:inherit;
padding:.4rem;width:100%;box-sizing:border-box;margin:.3rem 0}.err{color:#b00}"""
LOGIN_FORM = """<!doctype html><html><head><meta charset="utf-8"><title>finopsd login</title>
<style>""" + LOGIN_STYLE + """</style></head><body>
<h1>finopsd</h1><p>Enter the admin token to see request logs.</p>{error}
<form method="post" action="/login"><input type="hidden" name="next" value="{next}">
<input type="password" name="token" placeholder="admin token" autofocus>
<button type="submit">Log in</button></form></body></html>"""


_STYLE_HASH: Final = base64.b64encode(hashlib.sha256(LOGIN_STYLE.encode()).digest()).decode()
# the other pages' headers (routes/logs.py), with the form's one inline style allowed by its hash
LOGIN_HEADERS: Final = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self';"
    " frame-ancestors 'none'; base-uri 'none'",
}
DEFAULT_NEXT: Final = "/logs"
_ORIGIN: Final = URL("http://finopsd.invalid/")


def safe_next(value: str) -> str:
    """Where to go after login: a path on this origin, dot segments resolved; anything else → /logs.

    Browsers drop tabs and newlines from a URL and read a backslash as a slash (``/<tab>/evil``
    goes to ``//evil``): any control character, space or backslash refuses the value outright."""
    if not value.startswith("/") or any(c <= " " or c in "\\\x7f" for c in value):
        return DEFAULT_NEXT
    try:
        target = _ORIGIN.join(URL(value))
    except ValueError:
        return DEFAULT_NEXT
    if target.origin() != _ORIGIN.origin() or target.raw_path.startswith("//"):
        return DEFAULT_NEXT
    return str(target.relative())


def _login_page(error: str, nxt: str, status: int = 200) -> web.Response:
    page = LOGIN_FORM.replace("{error}", error).replace("{next}", escape(nxt, quote=True))
    return web.Response(text=page, content_type="text/html", status=status, headers=LOGIN_HEADERS)


@access.public
async def login_form(request: web.Request) -> web.Response:
    return _login_page("", safe_next(request.query.get("next", DEFAULT_NEXT)))


@access.public
async def login(request: web.Request) -> web.Response:
    throttle = request.app[THROTTLE]
    throttle.check(request.remote)
    try:
        form = await request.post()
    except ValueError:  # UnicodeDecodeError: a form that is not UTF-8
        raise GatewayError("the login form must be UTF-8", status=400, type="invalid_request_error") from None
    token = request.app[RUNTIME].config.server.admin_token
    nxt = safe_next(str(form.get("next", DEFAULT_NEXT)))
    if token is None or not _same(str(form.get("token", "")), token):
        throttle.fail(request.remote)
        return _login_page('<p class="err">Wrong token.</p>', nxt, status=401)
    resp = web.HTTPSeeOther(nxt)
    resp.set_cookie(COOKIE, _session_value(token), httponly=True, samesite="Strict", path="/")
    raise resp


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get(LOGIN_PATH, login_form)
    router.add_post(LOGIN_PATH, login)
