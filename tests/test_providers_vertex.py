"""Vertex adapter: URLs per publisher and location, the service-account token, delegation of bodies.

The token tests run a real token endpoint (``aiohttp_server``) named by the service-account
file's ``token_uri``; it checks the signed JWT grant with the public half of a key made here.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from finopsd.config import ProviderConfig
from finopsd.errors import GatewayError
from finopsd.providers.base import Target
from finopsd.providers.gemini import decode_call_id
from finopsd.providers.vertex import ANTHROPIC_VERSION, VertexAdapter
from finopsd.sse import SSEDecoder

FIXTURES = Path(__file__).parent / "fixtures"
MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
TOOLS = [{"type": "function", "function": {"name": "read_file", "parameters": {
    "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}]


def provider(**kw: Any) -> ProviderConfig:
    fields: dict[str, Any] = {"name": "vertex", "type": "vertex", "base_url": "", "project": "acme-ml",
                              "location": "us-central1"}
    fields.update(kw)
    return ProviderConfig(**fields)


def static(model: str, **kw: Any) -> Target:
    return Target(provider(**kw), model, "ya29.static-token", "vertex-0")


# --- URLs and bodies -----------------------------------------------------------------------------


def test_gemini_model_uses_regional_host_publisher_google_and_bearer_token() -> None:
    adapter = VertexAdapter()
    call = adapter.build_request(static("gemini-2.5-pro"), {"messages": MSGS, "tools": TOOLS}, stream=False)
    assert call.url == ("https://us-central1-aiplatform.googleapis.com/v1/projects/acme-ml/locations/us-central1"
                        "/publishers/google/models/gemini-2.5-pro:generateContent")
    assert call.headers["Authorization"] == "Bearer ya29.static-token"
    assert "x-goog-api-key" not in call.headers
    body = json.loads(call.body)
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]
    assert body["tools"][0]["functionDeclarations"][0]["name"] == "read_file"
    assert "model" not in body


def test_global_location_uses_the_host_without_a_region_and_streams_as_sse() -> None:
    call = VertexAdapter().build_request(static("gemini-3-pro-preview", location="global"), {"messages": MSGS},
                                         stream=True)
    assert call.url == ("https://aiplatform.googleapis.com/v1/projects/acme-ml/locations/global"
                        "/publishers/google/models/gemini-3-pro-preview:streamGenerateContent?alt=sse")


def test_location_defaults_to_global() -> None:
    call = VertexAdapter().build_request(static("gemini-2.5-flash", location=None), {"messages": MSGS}, stream=False)
    assert call.url.startswith("https://aiplatform.googleapis.com/v1/projects/acme-ml/locations/global/")


def test_base_url_replaces_scheme_and_host() -> None:
    call = VertexAdapter().build_request(static("gemini-2.5-flash", base_url="http://127.0.0.1:9999"),
                                         {"messages": MSGS}, stream=False)
    assert call.url == ("http://127.0.0.1:9999/v1/projects/acme-ml/locations/us-central1"
                        "/publishers/google/models/gemini-2.5-flash:generateContent")


def test_missing_project_is_a_clear_error() -> None:
    with pytest.raises(GatewayError) as info:
        VertexAdapter().build_request(static("gemini-2.5-flash", project=None), {"messages": MSGS}, stream=False)
    assert "needs `project`" in info.value.message


def test_gemini_stream_is_parsed_by_the_gemini_rules() -> None:
    adapter = VertexAdapter()
    target = static("gemini-3-pro-preview")
    state, decoder = adapter.new_stream(target), SSEDecoder()
    frames = decoder.feed((FIXTURES / "gemini" / "parallel_calls.sse").read_bytes()) + decoder.close()
    chunks = [c for event, data in frames for c in adapter.parse_event(state, event, data)]
    calls = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert [c["index"] for c in calls] == [0, 1]
    assert decode_call_id(calls[0]["id"])[1] is not None
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 2210


def test_error_body_in_google_shape_maps_status() -> None:
    body = json.dumps({"error": {"code": 403, "message": "Permission 'aiplatform.endpoints.predict' denied",
                                 "status": "PERMISSION_DENIED"}}).encode()
    err = VertexAdapter().parse_error(403, body)
    assert err.status == 403 and err.type == "permission_denied" and "aiplatform" in err.message


async def test_a_key_from_config_is_used_as_the_access_token_without_io() -> None:
    target = static("gemini-2.5-flash")
    assert await VertexAdapter().prepare(target) is target


# --- service-account tokens ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


class TokenEndpoint:
    """A fake OAuth token URI: verifies the JWT bearer grant, counts fetches, answers as told."""

    def __init__(self, key: rsa.RSAPrivateKey, expires_in: int = 3600, fail: bool = False) -> None:
        self.public = key.public_key()
        self.expires_in, self.fail = expires_in, fail
        self.claims: list[dict[str, Any]] = []
        self.url = ""
        self.app = web.Application()
        self.app.router.add_post("/token", self.token)

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        header, payload, signature = str(form["assertion"]).split(".")
        self.public.verify(b64url(signature), f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
        self.claims.append(json.loads(b64url(payload)))
        await asyncio.sleep(0.05)  # long enough for concurrent callers to pile up on the lock
        if self.fail:
            return web.json_response({"error": "invalid_grant", "error_description": "Invalid JWT Signature."},
                                     status=400)
        n = len(self.claims)
        return web.json_response({"access_token": f"ya29.fake-{n}", "expires_in": self.expires_in,
                                  "token_type": "Bearer"})


async def serve(aiohttp_server: Any, endpoint: TokenEndpoint) -> TokenEndpoint:
    server = await aiohttp_server(endpoint.app)
    endpoint.url = str(server.make_url("/token"))
    return endpoint


def write_account(tmp_path: Path, key: rsa.RSAPrivateKey, token_uri: str) -> Path:
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "acme-from-file", "private_key_id": "4f2d9c1e0b7a",
        "private_key": pem(key), "client_email": "finopsd@acme-from-file.iam.gserviceaccount.com",
        "client_id": "1234567890", "token_uri": token_uri,
    }))
    return path


async def test_service_account_token_is_fetched_once_cached_and_used(
    aiohttp_server: Any, tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    endpoint = await serve(aiohttp_server, TokenEndpoint(rsa_key))
    path = write_account(tmp_path, rsa_key, endpoint.url)
    adapter = VertexAdapter()
    target = Target(provider(project=None, credentials_file=str(path)), "gemini-2.5-flash")
    first, second = await asyncio.gather(adapter.prepare(target), adapter.prepare(target))
    third = await adapter.prepare(target)
    assert len(endpoint.claims) == 1
    assert first.api_key == second.api_key == third.api_key == "ya29.fake-1"
    claims = endpoint.claims[0]
    assert claims["iss"] == "finopsd@acme-from-file.iam.gserviceaccount.com"
    assert claims["aud"].endswith("/token")  # google-auth names Google's token endpoint as audience
    assert claims["scope"] == "https://www.googleapis.com/auth/cloud-platform"
    assert "ya29" not in repr(first)
    call = adapter.build_request(first, {"messages": MSGS}, stream=False)
    assert call.headers["Authorization"] == "Bearer ya29.fake-1"
    assert "/projects/acme-from-file/" in call.url  # project taken from the credentials file


async def test_token_close_to_expiry_is_fetched_again(
    aiohttp_server: Any, tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    endpoint = await serve(aiohttp_server, TokenEndpoint(rsa_key, expires_in=60))
    path = write_account(tmp_path, rsa_key, endpoint.url)
    adapter = VertexAdapter()
    target = Target(provider(credentials_file=str(path)), "gemini-2.5-flash")
    tokens = [(await adapter.prepare(target)).api_key for _ in range(2)]
    assert tokens == ["ya29.fake-1", "ya29.fake-2"]


async def test_refresh_failure_names_the_reason_but_never_the_key(
    aiohttp_server: Any, tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    endpoint = await serve(aiohttp_server, TokenEndpoint(rsa_key, fail=True))
    path = write_account(tmp_path, rsa_key, endpoint.url)
    target = Target(provider(credentials_file=str(path)), "gemini-2.5-flash")
    with pytest.raises(GatewayError) as info:
        await VertexAdapter().prepare(target)
    err = info.value
    assert err.status == 502 and "invalid_grant" in err.message
    shown = json.dumps(err.body()) + repr(err) + str(err)
    key_lines = [line for line in pem(rsa_key).splitlines() if "PRIVATE KEY" not in line]
    assert not any(line in shown for line in key_lines)
    assert "4f2d9c1e0b7a" not in shown and "assertion" not in shown


async def test_a_malformed_credentials_file_error_does_not_quote_the_file(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    path = tmp_path / "broken.json"
    path.write_text(json.dumps({"type": "service_account", "private_key": pem(rsa_key)}))  # no client_email
    target = Target(provider(credentials_file=str(path)), "gemini-2.5-flash")
    with pytest.raises(GatewayError) as info:
        await VertexAdapter().prepare(target)
    assert "is not a service-account key" in info.value.message
    body = pem(rsa_key).splitlines()[1]
    assert body not in info.value.message and body not in repr(info.value)


async def test_without_file_or_key_application_default_credentials_are_used(
    aiohttp_server: Any, tmp_path: Path, rsa_key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = await serve(aiohttp_server, TokenEndpoint(rsa_key))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(write_account(tmp_path, rsa_key, endpoint.url)))
    adapter = VertexAdapter()
    prepared = await adapter.prepare(Target(provider(project=None), "gemini-2.5-flash"))
    assert prepared.api_key == "ya29.fake-1" and len(endpoint.claims) == 1
    assert "/projects/acme-from-file/" in adapter.build_request(prepared, {"messages": MSGS}, stream=False).url


async def test_a_missing_credentials_file_is_a_clear_error(tmp_path: Path) -> None:
    target = Target(provider(credentials_file=str(tmp_path / "nope.json")), "gemini-2.5-flash")
    with pytest.raises(GatewayError) as info:
        await VertexAdapter().prepare(target)
    assert "cannot read credentials_file" in info.value.message


# --- Claude on Vertex ----------------------------------------------------------------------------


@pytest.mark.parametrize(("stream", "verb"), [(False, "rawPredict"), (True, "streamRawPredict")])
def test_claude_model_uses_raw_predict_with_vertex_version_and_no_model(stream: bool, verb: str) -> None:
    target = static("claude-sonnet-4-5@20250929", location="us-east5")
    call = VertexAdapter().build_request(target, {"messages": MSGS, "tools": TOOLS, "max_tokens": 512}, stream=stream)
    assert call.url == ("https://us-east5-aiplatform.googleapis.com/v1/projects/acme-ml/locations/us-east5"
                        f"/publishers/anthropic/models/claude-sonnet-4-5@20250929:{verb}")
    assert call.headers["Authorization"] == "Bearer ya29.static-token"
    assert "x-api-key" not in {k.lower() for k in call.headers}
    body = json.loads(call.body)
    assert body["anthropic_version"] == ANTHROPIC_VERSION
    assert "model" not in body
    assert body["max_tokens"] == 512
    assert body["messages"][0]["role"] == "user"
    assert body["tools"][0]["name"] == "read_file"
    assert bool(body.get("stream")) is stream


def test_claude_stream_and_response_are_parsed_by_the_anthropic_rules() -> None:
    adapter = VertexAdapter()
    target = static("claude-sonnet-4-5@20250929")
    events = [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_vrtx_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 120, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "tool_use", "id": "toolu_vrtx_01", "name": "read_file",
                                                   "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "input_json_delta", "partial_json": "{\"path\": \"a.py\"}"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                           "usage": {"output_tokens": 30}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    state = adapter.new_stream(target)
    chunks = [c for event, data in events for c in adapter.parse_event(state, event, json.dumps(data))]
    calls = [tc for c in chunks if c.get("choices") for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0]["index"] == 0 and calls[0]["id"] == "toolu_vrtx_01" and calls[0]["function"]["name"] == "read_file"
    assert "".join(c["function"].get("arguments", "") for c in calls) == '{"path": "a.py"}'
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c.get("choices") and c["choices"][0].get("finish_reason")]
    assert finishes == ["tool_calls"]
    whole = {"id": "msg_vrtx_02", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
             "content": [{"type": "text", "text": "Hello."}], "stop_reason": "end_turn", "stop_sequence": None,
             "usage": {"input_tokens": 12, "output_tokens": 3}}
    out = adapter.parse_response(target, json.dumps(whole).encode())
    assert out["choices"][0]["message"]["content"] == "Hello."
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"]["prompt_tokens"] >= 12 and out["usage"]["completion_tokens"] == 3
