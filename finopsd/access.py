"""Who may call each route: every handler is marked, and one middleware enforces the mark.

    public    answers anyone: /healthz, /openapi.json, /login, static files
    key       reaches an upstream or stored data: a virtual key, as ``auth.required`` says
              (401 here, before the handler); the handler finds the key in ``CALLER``
    exchange  the same, but the governance hook of ``run_exchange`` admits the key, so that a
              refusal is logged with the model the client asked for
    admin     conversation content and key state: the admin token, or loopback (``admin.py``)

A handler without a mark is treated as ``admin``: a route added without thought is closed,
not open. ``tests/test_access.py`` walks the app's router and proves every route refuses a
caller without credentials.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeVar

from aiohttp import web

from finopsd.appkeys import GOVERNANCE
from finopsd.governance import PRESENTED_KEY
from finopsd.middleware import ERROR_SHAPE, ErrorShape, Handler

if TYPE_CHECKING:
    from finopsd.config import VirtualKey

__all__ = ["CALLER", "Mark", "access_of", "admin", "admin_page", "admin_unless", "authenticate", "dialect_exchange",
           "exchange", "key", "public"]

# the admitted caller of a ``key`` route: its key, or None for an anonymous caller (auth optional)
CALLER: Final[web.RequestKey[VirtualKey | None]] = web.RequestKey("caller")
ATTR: Final = "finopsd_access"


# where else than the headers a dialect takes the key from (the Gemini API's ``?key=``)
KeySource = Callable[[web.Request], "str | None"]


@dataclass(frozen=True)
class Mark:
    level: str  # public | key | exchange | admin
    page: bool = False  # admin: an HTML page (a browser without the token goes to /login)
    shape: ErrorShape | None = None  # refusals in the route's own dialect
    presented: KeySource | None = None  # key and exchange: a key presented outside the headers
    open_when: Callable[[web.Request], bool] | None = None  # admin: open to anyone while this holds


H = TypeVar("H", bound=Handler)


def _marker(mark: Mark) -> Callable[[H], H]:
    def mark_handler(handler: H) -> H:
        setattr(handler, ATTR, mark)
        return handler

    return mark_handler


public: Final = _marker(Mark("public"))
exchange: Final = _marker(Mark("exchange"))
admin: Final = _marker(Mark("admin"))
admin_page: Final = _marker(Mark("admin", page=True))


def key(shape: ErrorShape | None = None, presented: KeySource | None = None) -> Callable[[H], H]:
    return _marker(Mark("key", shape=shape, presented=presented))


def admin_unless(open_when: Callable[[web.Request], bool]) -> Callable[[H], H]:
    """``admin``, but open to anyone while ``open_when(request)`` holds (a config switch read per request)."""
    return _marker(Mark("admin", open_when=open_when))


def dialect_exchange(shape: ErrorShape, presented: KeySource | None = None) -> Callable[[H], H]:
    """``exchange``, for a route of another dialect: refusals in its shape, perhaps its own key source."""
    return _marker(Mark("exchange", shape=shape, presented=presented))


CLOSED: Final = Mark("admin")


def access_of(request: web.Request) -> Mark | None:
    """The matched route's mark; None for no match (aiohttp's 404/405 follow)."""
    info = request.match_info
    if info.http_exception is not None:
        return None
    return getattr(info.handler, ATTR, CLOSED)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    mark = access_of(request)
    if mark is not None:
        if mark.shape is not None:
            request[ERROR_SHAPE] = mark.shape
        presented = mark.presented(request) if mark.presented is not None else None
        if presented:
            request[PRESENTED_KEY] = presented  # for the governance hook of an ``exchange`` route, too
        if mark.level == "key":
            request[CALLER] = await request.app[GOVERNANCE].caller(request.headers, presented)
        elif mark.level == "admin" and not (mark.open_when is not None and mark.open_when(request)):
            (admin_access.require_admin_page if mark.page else admin_access.require_admin)(request)
    return await handler(request)


# last: admin.py marks its own login routes with the decorators above, so either module may load first
from finopsd import admin as admin_access  # noqa: E402
