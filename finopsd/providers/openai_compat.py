"""OpenAI chat-completions protocol: openai, azure, groq, mistral, vllm and every compatible server.

Reference: https://platform.openai.com/docs/api-reference/chat
Azure: https://learn.microsoft.com/azure/ai-foundry/openai/reference (v1 and deployment URLs).

Request fields the gateway does not know pass through untouched; stream chunks
are already canonical, so the relay can forward their bytes as they came.
"""

from __future__ import annotations

import hashlib
import string
from typing import Any, ClassVar

from finopsd.errors import UpstreamError
from finopsd.providers.base import BaseAdapter, Target, UpstreamRequest, path_segment, upstream_error
from finopsd.jsonwire import dumps, loads
from finopsd.providers.canonical import load_object


class OpenAIAdapter(BaseAdapter):
    """Canonical in, canonical out: the only work is URL, auth header and usage."""

    passthrough: ClassVar[bool] = True

    def url(self, target: Target, endpoint: str) -> str:
        return f"{target.provider.base_url}/{endpoint}"

    def auth_headers(self, target: Target) -> dict[str, str]:
        return {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}

    def build_passthrough(self, target: Target, endpoint: str, req: dict[str, Any]) -> UpstreamRequest:
        """Any OpenAI endpoint (embeddings, completions, chat): swap the model, keep the rest."""
        body = dict(req)
        body["model"] = target.model
        if body.get("stream"):
            # always ask for usage: spend depends on it; the relay hides it unless asked
            opts = body.get("stream_options")
            body["stream_options"] = {**(opts if isinstance(opts, dict) else {}), "include_usage": True}
        headers = {"Content-Type": "application/json", **target.provider.headers, **self.auth_headers(target)}
        return UpstreamRequest(self.url(target, endpoint), headers, dumps(body))

    def build_request(self, target: Target, req: dict[str, Any], *, stream: bool) -> UpstreamRequest:
        return self.build_passthrough(target, "chat/completions", {**req, "stream": stream})

    def parse_response(self, target: Target, body: bytes) -> dict[str, Any]:
        return load_object(body, target.provider.name)

    def new_stream(self, target: Target) -> str:
        return target.provider.name

    def parse_event(self, state: str, event: str | None, data: str) -> list[dict[str, Any]]:
        if data == "[DONE]":
            return []
        try:
            chunk = loads(data)
        except ValueError:
            raise UpstreamError(f"{state}: upstream sent an invalid stream event") from None
        if not isinstance(chunk, dict):
            raise UpstreamError(f"{state}: upstream sent an unexpected stream event")
        if "error" in chunk and "choices" not in chunk:
            raise upstream_error(500, data.encode(), state)
        return [chunk]


class MistralAdapter(OpenAIAdapter):
    """Mistral: tool-call ids must be exactly 9 characters of [a-zA-Z0-9].

    https://docs.mistral.ai/capabilities/function_calling/ — a history whose ids came from
    another provider (``call_…``, ``toolu_…``) is refused, so ids are mapped to a stable
    9-character digest on the assistant call and its tool result alike. Mistral's own ids
    already fit and pass unchanged, so a client keeps seeing the ids it was given.
    """

    def build_request(self, target: Target, req: dict[str, Any], *, stream: bool) -> UpstreamRequest:
        messages = req.get("messages")
        if isinstance(messages, list) and any(_foreign_ids(m) for m in messages if isinstance(m, dict)):
            req = {**req, "messages": [_with_mistral_ids(m) if isinstance(m, dict) else m for m in messages]}
        return super().build_request(target, req, stream=stream)


_ALNUM = string.ascii_letters + string.digits


def mistral_id(value: str) -> str:
    if len(value) == 9 and value.isascii() and value.isalnum():
        return value
    n = int.from_bytes(hashlib.sha256(value.encode()).digest()[:8], "big")
    return "".join(_ALNUM[(n >> (6 * i)) % 62] for i in range(9))


def _foreign_ids(message: dict[str, Any]) -> bool:
    ids = [c.get("id") for c in message.get("tool_calls") or () if isinstance(c, dict)]
    ids.append(message.get("tool_call_id"))
    return any(isinstance(i, str) and mistral_id(i) != i for i in ids)


def _with_mistral_ids(message: dict[str, Any]) -> dict[str, Any]:
    out = dict(message)
    if isinstance(out.get("tool_call_id"), str):
        out["tool_call_id"] = mistral_id(out["tool_call_id"])
    calls = out.get("tool_calls")
    if isinstance(calls, list):
        out["tool_calls"] = [
            {**c, "id": mistral_id(c["id"])} if isinstance(c, dict) and isinstance(c.get("id"), str) else c
            for c in calls
        ]
    return out


class AzureAdapter(OpenAIAdapter):
    """Azure OpenAI: ``api-key`` header; the v1 endpoint, or deployment URLs with ``api_version``."""

    def url(self, target: Target, endpoint: str) -> str:
        base, version = target.provider.base_url, target.provider.api_version
        if version and endpoint == "models":  # the resource's model list, not a deployment's
            return f"{base}/models?api-version={version}"
        if version:
            deployment = path_segment(target.model, target.provider.name, "deployment")
            return f"{base}/deployments/{deployment}/{endpoint}?api-version={version}"
        return f"{base}/{endpoint}"

    def auth_headers(self, target: Target) -> dict[str, str]:
        return {"api-key": target.api_key} if target.api_key else {}
