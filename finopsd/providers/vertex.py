"""Vertex AI: Gemini models through ``generateContent``, Claude models through ``rawPredict``.

References:
- https://cloud.google.com/vertex-ai/generative-ai/docs/reference/rest/v1/projects.locations.publishers.models/generateContent
  (``…/publishers/google/models/{model}:generateContent`` / ``:streamGenerateContent?alt=sse``)
- https://cloud.google.com/vertex-ai/generative-ai/docs/partner-models/claude/use-claude and
  https://docs.anthropic.com/en/api/claude-on-vertex-ai (``…/publishers/anthropic/models/{model}:rawPredict`` /
  ``:streamRawPredict``; ``model`` only in the URL, ``anthropic_version: vertex-2023-10-16`` in the body)
- https://cloud.google.com/vertex-ai/docs/general/locations (``global`` uses the host without a region)
- https://google-auth.readthedocs.io/en/latest/reference/google.oauth2.service_account.html

Bodies, answers and streams are the Gemini and Anthropic adapters' own; this module adds the
URL and the OAuth token. Tokens come from ``credentials_file`` (a service-account JSON), or
failing that from a key in ``keys`` used as a ready access token, or else from Application
Default Credentials. google-auth refreshes synchronously (an HTTPS POST to the token URI), so
the refresh runs in a worker thread, through its urllib3 transport (``requests`` is not a
dependency). A token is reused until five minutes before it expires, and one lock per
credentials source makes concurrent requests wait for a single refresh.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, replace
from datetime import timezone
from typing import TYPE_CHECKING, Any, Final

import google.auth
import urllib3
from google.auth.exceptions import DefaultCredentialsError, GoogleAuthError
from google.auth.transport.urllib3 import Request
from google.oauth2 import service_account

from finopsd.errors import GatewayError, UpstreamError
from finopsd.providers.anthropic import AnthropicAdapter
from finopsd.providers.base import BaseAdapter, Target, UpstreamRequest, path_segment
from finopsd.providers.gemini import GeminiAdapter, GeminiStream

if TYPE_CHECKING:
    from finopsd.config import ProviderConfig

SCOPES: Final = ("https://www.googleapis.com/auth/cloud-platform",)
ANTHROPIC_VERSION: Final = "vertex-2023-10-16"
DEFAULT_LOCATION: Final = "global"  # the only location serving every current Gemini model
REFRESH_MARGIN_S: Final = 300.0
TOKEN_TIMEOUT_S: Final = 30.0


def is_claude(model: str) -> bool:
    return model.startswith("claude")


# --- credentials --------------------------------------------------------------------------------


def _load_credentials(path: str | None) -> tuple[Any, str | None]:
    """Service-account file (or ADC when ``path`` is None) → (credentials, project id). Blocking."""
    if path is None:
        try:
            creds, project = google.auth.default(scopes=list(SCOPES))
        except DefaultCredentialsError:
            raise GatewayError(
                "vertex: no credentials: set `credentials_file`, a key, or Application Default Credentials",
                code="vertex_credentials",
            ) from None
        return creds, project
    try:
        creds = service_account.Credentials.from_service_account_file(path, scopes=list(SCOPES))
    except OSError as e:
        raise GatewayError(f"vertex: cannot read credentials_file {path}: {e.strerror}", code="vertex_credentials") from None
    except (ValueError, KeyError, TypeError) as e:
        # the message of a parse error may quote the file, and the file holds the private key
        raise GatewayError(
            f"vertex: credentials_file {path} is not a service-account key ({type(e).__name__})",
            code="vertex_credentials",
        ) from None
    return creds, getattr(creds, "project_id", None)


def _fetch_token(creds: Any) -> tuple[str, float]:
    """Exchange the credentials for an access token: (token, expiry as epoch seconds). Blocking."""
    http = urllib3.PoolManager(timeout=urllib3.Timeout(total=TOKEN_TIMEOUT_S))
    try:
        creds.refresh(Request(http))
    except GoogleAuthError as e:
        # the token endpoint's answer (e.g. "invalid_grant: Invalid JWT Signature."), never our request
        reason = str(e.args[0]) if e.args else type(e).__name__
        raise UpstreamError(
            f"vertex: could not get an access token: {reason[:300]}", status=502, code="vertex_auth"
        ) from None
    finally:
        http.clear()
    expiry = creds.expiry  # naive UTC datetime, or None when the endpoint gave no lifetime
    expires_at = expiry.replace(tzinfo=timezone.utc).timestamp() if expiry else time.time() + 3000
    return str(creds.token), expires_at


class TokenSource:
    """One credentials source: its cached access token and the lock that makes refreshes single-flight."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.project_id: str | None = None
        self._creds: Any = None
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    def _fresh(self) -> bool:
        return self._token is not None and time.time() < self._expires_at - REFRESH_MARGIN_S

    def _get_lock(self) -> asyncio.Lock:
        # the adapter outlives event loops (tests run many); a lock must belong to the running one
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def token(self) -> str:
        if not self._fresh():
            async with self._get_lock():
                if not self._fresh():  # another request may have refreshed while this one waited
                    if self._creds is None:
                        self._creds, self.project_id = await asyncio.to_thread(_load_credentials, self.path)
                    self._token, self._expires_at = await asyncio.to_thread(_fetch_token, self._creds)
        assert self._token is not None
        return self._token


# --- the adapter ----------------------------------------------------------------------------------


@dataclass(slots=True)
class VertexStream:
    """Which protocol this stream speaks, and that protocol's own state."""

    claude: bool
    inner: Any


class VertexAdapter(BaseAdapter):
    """Routes by model name: ``claude…`` to Anthropic's Messages on Vertex, anything else to Gemini."""

    def __init__(self) -> None:
        self.gemini = GeminiAdapter()
        self.claude = AnthropicAdapter()
        self._sources: dict[str, TokenSource] = {}  # credentials file ("" for ADC) → token source

    def _source(self, provider: ProviderConfig) -> TokenSource:
        key = provider.credentials_file or ""
        source = self._sources.get(key)
        if source is None:
            source = self._sources[key] = TokenSource(provider.credentials_file)
        return source

    async def prepare(self, target: Target) -> Target:
        provider = target.provider
        if not provider.credentials_file and target.api_key:
            return target  # a ready access token from `keys`
        token = await self._source(provider).token()
        name = target.key_name or os.path.basename(provider.credentials_file or "adc")
        return replace(target, api_key=token, key_name=name)

    def model_url(self, target: Target, publisher: str) -> str:
        provider = target.provider
        location = provider.location or provider.region or DEFAULT_LOCATION
        project = provider.project or self._source(provider).project_id
        if not project:
            raise GatewayError(
                f"provider {provider.name!r} needs `project` (or a credentials file that names one)",
                code="vertex_project",
            )
        host = provider.base_url or (
            "https://aiplatform.googleapis.com" if location == "global" else f"https://{location}-aiplatform.googleapis.com"
        )
        model = path_segment(target.model, provider.name)
        return f"{host}/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/{model}"

    def build_request(self, target: Target, req: dict[str, Any], *, stream: bool) -> UpstreamRequest:
        if is_claude(target.model):
            body = self.claude.messages_body(target, req, stream=stream)
            body.pop("model", None)
            body["anthropic_version"] = ANTHROPIC_VERSION
            url = self.model_url(target, "anthropic") + (":streamRawPredict" if stream else ":rawPredict")
        else:
            body = self.gemini.contents_body(target, req)
            url = self.model_url(target, "google") + (
                ":streamGenerateContent?alt=sse" if stream else ":generateContent"
            )
        headers = {"Content-Type": "application/json", **target.provider.headers}
        if target.api_key:
            headers["Authorization"] = f"Bearer {target.api_key}"
        return UpstreamRequest(url, headers, json.dumps(body, ensure_ascii=False).encode())

    def parse_response(self, target: Target, body: bytes) -> dict[str, Any]:
        if is_claude(target.model):
            return self.claude.parse_response(target, body)
        return self.gemini.parse_response(target, body)

    def new_stream(self, target: Target) -> VertexStream:
        if is_claude(target.model):
            return VertexStream(True, self.claude.new_stream(target))
        return VertexStream(False, self.gemini.new_stream(target))

    def parse_event(self, state: VertexStream, event: str | None, data: str) -> list[dict[str, Any]]:
        if state.claude:
            return self.claude.parse_event(state.inner, event, data)
        inner: GeminiStream = state.inner
        return self.gemini.parse_event(inner, event, data)

    def finish_stream(self, state: VertexStream) -> list[dict[str, Any]]:
        """At upstream EOF: whatever closing chunks the stream's own protocol still owes."""
        if state.claude:
            return self.claude.finish_stream(state.inner)
        return self.gemini.finish_stream(state.inner)

    def parse_error(self, status: int, body: bytes) -> GatewayError:
        # Google's error shape for both publishers, Anthropic's from rawPredict; the Anthropic
        # mapper reads both and also turns Claude's 529 "overloaded" into a 503 clients retry
        return self.claude.parse_error(status, body)
