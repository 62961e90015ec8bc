"""Gemini API bodies forwarded as they came, to the ``gemini`` provider and to Gemini on Vertex AI.

The client's bytes go upstream untouched (every field, thought signatures included), with our key
instead of theirs. Only the URL is ours: ``{base_url}/models/{model}:{method}`` at the Gemini
API, ``…/publishers/google/models/{model}:{method}`` at Vertex (``VertexAdapter.model_url`` knows
the project, location and host). The model id goes into the path only as one plain, percent-encoded
segment (``path_segment``): anything else is a 400.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from finopsd.errors import GatewayError
from finopsd.providers.base import Adapter, BaseAdapter, FrameDecoder, Target, UpstreamRequest, path_segment
from finopsd.router import adapter_for
from finopsd.sse import DEFAULT_MAX_EVENT

if TYPE_CHECKING:
    from finopsd.config import ProviderConfig

STREAM_METHOD = "streamGenerateContent?alt=sse"
BLOCKED = "content_filter"  # the error code the Gemini adapter gives a blocked prompt  # the upstream always streams SSE; the client may want JSON


def is_native(provider: ProviderConfig, model: str) -> bool:
    """True when the provider serves the Gemini API for this model itself."""
    return provider.type == "gemini" or (provider.type == "vertex" and not model.startswith("claude"))


def upstream_url(target: Target, method: str) -> str:
    model = target.model.removeprefix("models/")
    if target.provider.type == "vertex":  # model_url checks and encodes the model itself
        model_url: Callable[[Target, str], str] = getattr(adapter_for(target.provider), "model_url")
        return f"{model_url(replace(target, model=model), 'google')}:{method}"
    return f"{target.provider.base_url}/models/{path_segment(model, target.provider.name)}:{method}"


def upstream_headers(target: Target) -> dict[str, str]:
    headers = {"Content-Type": "application/json", **target.provider.headers}
    if target.api_key:
        if target.provider.type == "vertex":
            headers["Authorization"] = f"Bearer {target.api_key}"  # an OAuth access token
        else:
            headers["x-goog-api-key"] = target.api_key
    return headers


def native_build(raw_body: bytes, method: str) -> Callable[[Adapter, Target], UpstreamRequest]:
    """The relay's ``build`` for one Gemini API method, with the client's body as it came."""

    def build(adapter: Adapter, target: Target) -> UpstreamRequest:
        return UpstreamRequest(upstream_url(target, method), upstream_headers(target), raw_body)

    return build


class NativeReader(BaseAdapter):
    """The provider's own adapter, except that a prompt Gemini blocked is an answer, not an error.

    The chat route makes a 400 of an answer with ``promptFeedback.blockReason`` and no candidates;
    a Gemini API client reads that answer itself, so here it goes through as Gemini sent it.
    """

    def __init__(self, inner: Adapter) -> None:
        self.inner = inner

    async def prepare(self, target: Target) -> Target:
        return await self.inner.prepare(target)

    def build_request(self, target: Target, req: dict[str, Any], *, stream: bool) -> UpstreamRequest:
        return self.inner.build_request(target, req, stream=stream)

    def parse_response(self, target: Target, body: bytes) -> dict[str, Any]:
        try:
            return self.inner.parse_response(target, body)
        except GatewayError as e:
            if e.code != BLOCKED:
                raise
            return {"choices": [{"index": 0, "message": {"role": "assistant", "content": ""},
                                 "finish_reason": "content_filter"}]}

    def new_decoder(self, max_event: int = DEFAULT_MAX_EVENT) -> FrameDecoder:
        return self.inner.new_decoder(max_event)

    def new_stream(self, target: Target) -> Any:
        return self.inner.new_stream(target)

    def parse_event(self, state: Any, event: str | None, data: str) -> list[dict[str, Any]]:
        try:
            return self.inner.parse_event(state, event, data)
        except GatewayError as e:
            if e.code != BLOCKED:
                raise
            return []

    def finish_stream(self, state: Any) -> list[dict[str, Any]]:
        return self.inner.finish_stream(state)

    def parse_error(self, status: int, body: bytes) -> GatewayError:
        return self.inner.parse_error(status, body)


def model_resource(name: str, provider: str) -> dict[str, Any]:
    """A ``Model`` as ``models.list`` / ``models.get`` give it (``name`` is ``models/provider/model``)."""
    return {"name": f"models/{name}", "baseModelId": name, "version": "001", "displayName": f"{name} ({provider})",
            "description": f"{name} through finopsd",
            "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"]}
