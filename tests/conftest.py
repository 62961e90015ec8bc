"""Shared fixtures: isolated env, fake upstreams, the gateway under test, real SDK clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import openai
import pytest
import yaml
from aiohttp.test_utils import TestClient

from finopsd import config as cfg
from finopsd.app import build_app
from finopsd.providers.registry import KNOWN_PROVIDERS
from tests.daemon import daemon_for  # noqa: F401  (a fixture for every test module)
from tests.fakes import FakeUpstream
from tests.servers import log_backend, pg_cluster, postgres_url, redis_server  # noqa: F401

GatewayFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No real provider keys, and per-user data under tmp_path."""
    for spec in KNOWN_PROVIDERS.values():
        if spec.key_env:
            monkeypatch.delenv(spec.key_env, raising=False)
    monkeypatch.delenv("FINOPSD_CONFIG", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.fixture
async def fake_openai(aiohttp_server: Any) -> FakeUpstream:
    fake = FakeUpstream()
    server = await aiohttp_server(fake.app)
    fake.url = str(server.make_url("/v1"))
    return fake


@pytest.fixture
async def fake_anthropic(aiohttp_server: Any) -> FakeUpstream:
    """A fake served at its root: Anthropic, Gemini, Bedrock and the like append their own paths."""
    fake = FakeUpstream()
    fake.url = str((await aiohttp_server(fake.app)).make_url(""))
    return fake


def gateway_yaml(fake_url: str, extra: str = "") -> str:
    return f"""
providers:
  openai:
    base_url: {fake_url}
    keys: [{{value: env:TEST_OPENAI_KEY}}]
    models: [gpt-5]
  groq:
    base_url: {fake_url}
    keys: [{{value: sk-groq-literal-secret}}]
    models: [llama-3.3-70b-versatile]
    timeouts: {{connect: 1, first_byte: 2, idle: 2}}
{extra}
"""


def on_backend(yaml_text: str, backend: dict[str, Any] | None) -> str:
    """A test's config on the ``log_backend`` it asked for: PostgreSQL's adds ``storage.url``
    (its own ``storage.path``, if any, stays: then unused)."""
    if not backend or "url" not in backend:
        return yaml_text
    data = yaml.safe_load(yaml_text) or {}
    data["storage"] = {**(data.get("storage") or {}), "url": backend["url"]}
    return str(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture
def make_gateway(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> GatewayFactory:
    """Build a gateway from YAML; a test that takes ``log_backend`` gets it on each backend."""
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk-upstream-openai-secret")
    # the database first, so that it is dropped after the gateways closed
    backend = request.getfixturevalue("log_backend") if "log_backend" in request.fixturenames else None
    aiohttp_client = request.getfixturevalue("aiohttp_client")

    async def factory(yaml_text: str) -> TestClient:
        path = tmp_path / "config.yaml"
        path.write_text(on_backend(yaml_text, backend))
        client: TestClient = await aiohttp_client(build_app(cfg.load(path)))
        return client

    return factory


@pytest.fixture
async def gateway(make_gateway: GatewayFactory, fake_openai: FakeUpstream) -> TestClient:
    return await make_gateway(gateway_yaml(fake_openai.url))


@pytest.fixture
async def openai_client(gateway: TestClient) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=str(gateway.make_url("/openai")), api_key="sk-virtual-test", max_retries=0
    ) as client:
        yield client
