"""Secrets out of every byte that leaves: the client's answers and the request log.

An upstream may echo our provider key back (in an error body, in an in-band stream
error after a 200, in a URL it quotes), and an MCP server may print its token. The
gateway does not try to guess where: whatever it sends to a client goes through
``Scrubber.bytes`` (the ``scrub_secrets`` middleware for whole answers, the relay and
/mcp for stream writes) and every log row through ``Scrubber.value``.

The secrets are every credential in the config (provider keys, their header values,
AWS credentials, the admin token, MCP servers' env and header values) and the tokens an
adapter fetched at run time (Vertex access tokens), each replaced by ``[secret]``.
Values shorter than ``MIN_LENGTH`` are not treated as secrets: a header such as
``x-beta: 1`` would otherwise blank every "1" in every answer.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final

from finopsd.config import url_password

if TYPE_CHECKING:
    from finopsd.config import Config

__all__ = ["MARK", "LogScrub", "Scrubber", "config_secrets"]

MARK: Final = "[secret]"
MIN_LENGTH: Final = 8
SEP: Final = "\x00"
MAX_LEARNED: Final = 64  # run-time tokens kept (Vertex tokens live an hour: a few per credential)


def config_secrets(config: Config) -> Iterator[str | None]:
    yield config.server.admin_token
    for p in config.providers.values():
        yield from (k.value for k in p.keys)
        yield from p.headers.values()
        yield from (p.secret_access_key, p.session_token)
    for server in config.mcp.servers.values():
        yield from server.env.values()
        yield from server.headers.values()
    yield url_password(config.storage.url)
    yield url_password(config.state.redis_url)


class Scrubber:
    """Replaces known secrets in text, bytes and JSON-shaped values; learns run-time tokens."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._learned: dict[str, None] = {}  # insertion order: the oldest is dropped first
        self.use(secrets)

    def use(self, secrets: Iterable[str | None]) -> None:
        """The configured secrets (again after a SIGHUP); learned tokens are kept."""
        self._static = {s for s in secrets if s and len(s) >= MIN_LENGTH}
        self._compile()

    def _compile(self) -> None:
        forms: set[str] = set()
        for s in self._static | self._learned.keys():
            forms.add(s)
            forms.add(json.dumps(s)[1:-1])  # as it appears inside a JSON string (escaped / " \)
        # longest first, so a secret that contains another is replaced whole
        ordered = sorted(forms, key=len, reverse=True)
        alternatives = "|".join(re.escape(f) for f in ordered)
        self._text = re.compile(alternatives) if alternatives else None
        self._bytes = re.compile(alternatives.encode()) if alternatives else None
        # `in` is a fast substring search; the regex alternation runs only when one is there
        self._forms, self._byte_forms = tuple(ordered), tuple(f.encode() for f in ordered)
        # every secret written the same inside a JSON string as outside one (no quote, backslash or
        # control character, as API keys are): then a value holds one only if its JSON text does
        self._plain = all(json.dumps(f, ensure_ascii=False)[1:-1] == f for f in ordered)
        # _holds_secret joins a value's strings by SEP: only if no secret holds it can no match span two
        self._joinable = not any(SEP in f for f in ordered)

    def learn(self, secret: str | None) -> None:
        """A credential fetched at run time (an OAuth access token): scrubbed from now on."""
        if not secret or len(secret) < MIN_LENGTH or secret in self._static or secret in self._learned:
            return
        self._learned[secret] = None
        while len(self._learned) > MAX_LEARNED:
            del self._learned[next(iter(self._learned))]
        self._compile()

    def text(self, value: str) -> str:
        if self._text is None or not any(f in value for f in self._forms):
            return value
        return self._text.sub(MARK, value)

    def bytes(self, value: bytes) -> bytes:
        if self._bytes is None or not any(f in value for f in self._byte_forms):
            return value
        return self._bytes.sub(MARK.encode(), value)

    def may_hold(self, encoded: bytes) -> bool:
        """Whether the value ``encoded`` is the JSON text of may hold a secret (False is certain):
        one substring search of the text instead of a walk of the value."""
        if self._bytes is None:
            return False
        return not self._plain or any(f in encoded for f in self._byte_forms)

    def value(self, value: Any) -> Any:
        """A JSON-shaped value (a log row) with every string scrubbed, keys included; a copy.

        Iterative, so a client's deeply nested JSON cannot make it raise RecursionError."""
        if self._text is None or not self._holds_secret(value):
            return value  # the common case: nothing to copy
        root = [value]
        stack: list[tuple[Any, Any]] = [(root, 0)]
        while stack:
            container, at = stack.pop()
            item = container[at]
            if isinstance(item, str):
                container[at] = self.text(item)
            elif isinstance(item, dict):
                copy = {self.text(k) if isinstance(k, str) else k: v for k, v in item.items()}
                container[at] = copy
                stack.extend((copy, k) for k in copy)
            elif isinstance(item, (list, tuple)):
                listed = list(item)
                container[at] = listed
                stack.extend((listed, i) for i in range(len(listed)))
        return root[0]

    def _holds_secret(self, value: Any) -> bool:
        strings: list[str] = []
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                strings.append(item)
            elif isinstance(item, dict):
                stack.extend(item.values())
                stack.extend(item.keys())
            elif isinstance(item, (list, tuple)):
                stack.extend(item)
        # one search over them all (a search per string cost more than the walk)
        if not self._joinable:
            return any(f in s for s in strings for f in self._forms)
        text = SEP.join(strings)
        return any(f in text for f in self._forms)


class LogScrub(logging.Filter):
    """On a handler: the process log (journald) gets the same scrub as clients and the request
    log. A record's message and traceback are rendered here, then scrubbed; ``scrubber`` is
    asked each time, so a SIGHUP's new secrets count at once."""

    def __init__(self, scrubber: Callable[[], Scrubber]) -> None:
        super().__init__()
        self._scrubber = scrubber
        self._format = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        scrubber = self._scrubber()
        record.msg, record.args = scrubber.text(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._format.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrubber.text(record.exc_text)
        return True
