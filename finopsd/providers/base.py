"""The adapter contract every upstream protocol implements.

The canonical form is an OpenAI chat request (plain dicts). An adapter turns it
into one upstream HTTP request and turns what comes back into canonical
``chat.completion`` / ``chat.completion.chunk`` dicts. It knows nothing of
virtual keys, budgets or logging, and never does I/O except in ``prepare``
(for credentials that must be fetched, such as Vertex tokens).

Stream contract: the relay feeds upstream bytes to ``new_decoder()`` (SSE by
default; Bedrock decodes the AWS event stream) and calls
``parse_event(state, event, data)`` once per frame; the adapter returns zero
or more canonical chunks. Chunks need not be perfect: the relay's normaliser
adds the role chunk, tool-call ids and our own tool-call index counter, and
fixes ``finish_reason``. Usage goes in a chunk's ``usage`` field as OpenAI
usage (``prompt_tokens``, ``completion_tokens``, ``total_tokens``,
``prompt_tokens_details.cached_tokens``,
``completion_tokens_details.reasoning_tokens``). An in-band upstream error
raises ``GatewayError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol
from urllib.parse import quote

from finopsd.errors import BadRequest, GatewayError, UpstreamError, error_type_for_status
from finopsd.jsonwire import loads
from finopsd.sse import SSEDecoder

if TYPE_CHECKING:
    from finopsd.config import ProviderConfig


# a model id where an upstream puts it in a URL path: one plain segment, so that neither
# "/", "..", "%2e%2e" nor ":verb", "?" or "#" can reach another model, project or endpoint
PATH_SEGMENT: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,199}")


def path_segment(value: str, provider: str, what: str = "model") -> str:
    """``value`` as one percent-encoded URL path segment; a 400 unless it is a plain name."""
    if not PATH_SEGMENT.fullmatch(value):
        raise BadRequest(
            f"{provider}: {what} {value[:100]!r} is not a valid name (letters, digits and . _ - @,"
            " starting with a letter or digit; no '/')", param="model", code="invalid_model")
    return quote(value, safe="@")


@dataclass(frozen=True, repr=False)
class Target:
    """Where one attempt goes: provider, upstream model name, and the key chosen for it."""

    provider: ProviderConfig
    model: str
    api_key: str | None = None
    key_name: str | None = None
    # TTL of the prompt-cache breakpoints the adapter places when the request has none
    # (Claude: finopsd.caching); None places none
    cache_ttl: str | None = None

    def __repr__(self) -> str:
        return f"Target({self.provider.name}/{self.model}, key={self.key_name})"


@dataclass(frozen=True, repr=False)
class UpstreamRequest:
    """One HTTP call to make. ``headers`` may hold secrets: never log them."""

    url: str
    headers: dict[str, str]
    body: bytes
    method: str = "POST"
    # True when the URL is already percent-encoded exactly as signed (SigV4)
    encoded: bool = False

    def __repr__(self) -> str:
        return f"UpstreamRequest({self.method} {self.url})"


class Adapter(Protocol):
    """One upstream protocol. Instances are stateless; stream state is explicit."""

    async def prepare(self, target: Target) -> Target:
        """Fill credentials that need I/O (default: none)."""
        ...

    def build_request(self, target: Target, req: dict[str, Any], *, stream: bool) -> UpstreamRequest:
        """Canonical chat request → the upstream HTTP call (model already without prefix)."""
        ...

    def parse_response(self, target: Target, body: bytes) -> dict[str, Any]:
        """Upstream non-stream body → ``chat.completion`` dict."""
        ...

    def followup(self, target: Target, body: bytes, *, stream: bool) -> UpstreamRequest | None:
        """After a 2xx first answer ``body``: a second call whose answer is the result (Replicate)."""
        ...

    def new_decoder(self) -> FrameDecoder:
        """Splits the upstream byte stream into ``(event, data)`` frames."""
        ...

    def new_stream(self, target: Target) -> Any:
        """Per-request stream state."""
        ...

    def parse_event(self, state: Any, event: str | None, data: str) -> list[dict[str, Any]]:
        """One upstream stream frame → canonical chunks (possibly none)."""
        ...

    def finish_stream(self, state: Any) -> list[dict[str, Any]]:
        """At upstream EOF: chunks still owed (usage of a stream cut before its end)."""
        ...

    def parse_error(self, status: int, body: bytes) -> GatewayError:
        """Upstream error status and body → the error the client gets."""
        ...


class FrameDecoder(Protocol):
    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]: ...

    def close(self) -> list[tuple[str | None, str]]: ...


class BaseAdapter:
    """Defaults shared by adapters: SSE framing, no credential I/O, one call, JSON error bodies."""

    # True when upstream chunks are already canonical, so unchanged ones are relayed as bytes
    passthrough: ClassVar[bool] = False

    async def prepare(self, target: Target) -> Target:
        return target

    def followup(self, target: Target, body: bytes, *, stream: bool) -> UpstreamRequest | None:
        return None

    def new_decoder(self) -> FrameDecoder:
        return SSEDecoder()

    def finish_stream(self, state: Any) -> list[dict[str, Any]]:
        return []

    def parse_error(self, status: int, body: bytes) -> GatewayError:
        return upstream_error(status, body)


def upstream_error(status: int, body: bytes, provider: str | None = None) -> GatewayError:
    """Map an upstream error body (OpenAI, Anthropic, Google or plain text) to a GatewayError."""
    message, etype, code, param = None, None, None, None
    try:
        parsed = loads(body)
    except (ValueError, UnicodeDecodeError):
        parsed = None
    if isinstance(parsed, list) and parsed:  # Gemini sometimes wraps errors in a list
        parsed = parsed[0]
    if isinstance(parsed, dict):
        err = parsed.get("error", parsed)
        if isinstance(err, dict):
            message = err.get("message") or err.get("detail")
            etype = err.get("type") if isinstance(err.get("type"), str) else None
            code = err.get("code") if isinstance(err.get("code"), (str, int)) else None
            param = err.get("param") if isinstance(err.get("param"), str) else None
            if etype is None and isinstance(err.get("status"), str):
                etype = err["status"].lower()
        elif isinstance(err, str):
            message = err
        if message is None and isinstance(parsed.get("message"), str):
            message = parsed["message"]
    if message is None:
        text = body[:500].decode("utf-8", "replace").strip()
        message = text or f"upstream answered HTTP {status}"
    if provider:
        message = f"{provider}: {message}"
    return UpstreamError(
        str(message),
        status=status,
        type=etype or error_type_for_status(status),
        code=str(code) if code is not None else None,
        param=param,
    )
