"""Attribution inside one key: ``x-finops-user``, ``x-finops-project``, ``x-finops-tags``.

Coding agents (Roo Code, Cline, Kilo) let a profile set custom headers, so one team key can
still tell people and projects apart. The hook validates the headers in ``pre`` (a clear
400 before governance counts the request) and, in ``post``, lets a key's pinned ``user`` and
``project`` (``virtual_keys[].user``) win over what the client sent: a pinned key cannot be
spoofed. The values land on the log row; they are never metric labels (unbounded).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final, TypeVar

from finopsd.errors import BadRequest

if TYPE_CHECKING:  # keyconfig validates pinned values with ``valid``: no imports of the config here
    from aiohttp import web

    from finopsd.config import Config, VirtualKey
    from finopsd.exchange import Exchange
    from finopsd.runtime import Runtime

T = TypeVar("T")

USER_HEADER: Final = "x-finops-user"
PROJECT_HEADER: Final = "x-finops-project"
TAGS_HEADER: Final = "x-finops-tags"
MAX_VALUE: Final = 128  # characters of a user or project
MAX_TAG: Final = 64
MAX_TAGS: Final = 16
# names, e-mail addresses, paths like team/app: no quotes, commas or control characters
_VALUE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@+:/-]*")


def valid(value: str, what: str, limit: int = MAX_VALUE) -> str:
    """``value`` stripped; ValueError naming ``what`` when it is empty, too long or has odd characters."""
    value = value.strip()
    if not value:
        raise ValueError(f"{what} is empty")
    if len(value) > limit:
        raise ValueError(f"{what} is longer than {limit} characters")
    if not _VALUE.fullmatch(value):
        raise ValueError(f"{what} may hold letters, digits, spaces and . _ @ + : / - (starting with a letter"
                         " or digit)")
    return value


def tags_of(value: str) -> tuple[str, ...]:
    """Comma-separated tags, each valid, without repeats, in the order given."""
    tags = [valid(tag, "a tag", MAX_TAG) for tag in value.split(",") if tag.strip()]
    if len(tags) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags")
    return tuple(dict.fromkeys(tags))


def from_headers(headers: Mapping[str, str]) -> tuple[str | None, str | None, tuple[str, ...]]:
    """(user, project, tags) the client sent; BadRequest naming the header otherwise."""
    user = _header(headers, USER_HEADER, lambda v: valid(v, USER_HEADER))
    project = _header(headers, PROJECT_HEADER, lambda v: valid(v, PROJECT_HEADER))
    return user, project, _header(headers, TAGS_HEADER, tags_of) or ()


def _header(headers: Mapping[str, str], header: str, parse: Callable[[str], T]) -> T | None:
    value = headers.get(header)
    try:
        return None if value is None else parse(value)
    except ValueError as e:
        raise BadRequest(f"{header}: {e}", param=header, code="invalid_attribution") from None


class AttributionHook:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._keys: dict[str, VirtualKey] = {}
        self._keys_of: Config | None = None

    def key(self, name: str) -> VirtualKey | None:
        config = self.runtime.config
        if self._keys_of is not config:  # a SIGHUP's new key list
            self._keys, self._keys_of = {k.name: k for k in config.virtual_keys}, config
        return self._keys.get(name)

    async def pre(self, ex: Exchange, request: web.Request) -> None:
        ex.user, ex.project, ex.tags = from_headers(request.headers)

    async def post(self, ex: Exchange) -> None:
        key = self.key(ex.key_name) if ex.key_name else None
        if key is not None:
            ex.user = key.user or ex.user
            ex.project = key.project or ex.project
