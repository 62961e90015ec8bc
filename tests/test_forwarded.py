"""Behind a balancer (server.trusted_proxies): the client's address and scheme as the balancer saw them."""

from __future__ import annotations

import re

import pytest
from aiohttp.test_utils import TestClient

from finopsd.appkeys import LOGSTORE
from finopsd.config import ConfigError, parse
from tests.conftest import GatewayFactory, gateway_yaml
from tests.fakes import FakeUpstream

BALANCER = "server: {trusted_proxies: [127.0.0.0/8, '::1']}\n"
ANSWER = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-5",
          "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hello"}}],
          "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}
CHAT = {"model": "openai/gpt-5", "messages": [{"role": "user", "content": "hi"}]}


async def _chat_client_ip(gw: TestClient, forwarded_for: str | None) -> str | None:
    headers = {} if forwarded_for is None else {"X-Forwarded-For": forwarded_for}
    resp = await gw.post("/openai/v1/chat/completions", json=CHAT, headers=headers)
    assert resp.status == 200, await resp.text()
    await gw.server.app[LOGSTORE].flush()
    row = await (await gw.get(f"/api/logs/{resp.headers['x-request-id']}")).json()
    return row["client_ip"]


async def test_the_client_behind_a_trusted_balancer_is_logged_and_not_trusted_as_loopback(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream
) -> None:
    fake_openai.answer_json(ANSWER)
    gw = await make_gateway(gateway_yaml(fake_openai.url, BALANCER))
    assert await _chat_client_ip(gw, "198.51.100.7") == "198.51.100.7"
    # what stands left of the last untrusted hop is the client's to make up
    assert await _chat_client_ip(gw, "6.6.6.6, 198.51.100.7, 127.0.0.1") == "198.51.100.7"
    assert await _chat_client_ip(gw, "not-an-address") == "unknown"
    assert await _chat_client_ip(gw, None) == "127.0.0.1"  # the balancer's own health checks
    # without an admin token the admin API trusts loopback: a forwarded client is not loopback
    for hop in ("198.51.100.7", "127.0.0.1, 203.0.113.5", "garbage"):
        resp = await gw.get("/api/logs", headers={"X-Forwarded-For": hop})
        assert resp.status == 403, (hop, resp.status)


async def test_without_trusted_proxies_the_headers_are_ignored(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream
) -> None:
    fake_openai.answer_json(ANSWER)
    gw = await make_gateway(gateway_yaml(fake_openai.url))
    assert await _chat_client_ip(gw, "198.51.100.7") == "127.0.0.1"
    assert (await gw.get("/api/logs", headers={"X-Forwarded-For": "198.51.100.7"})).status == 200


async def test_a_browser_change_through_a_balancer_that_ends_tls(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream
) -> None:
    gw = await make_gateway(gateway_yaml(fake_openai.url, "server: {admin_token: adm-tls-1, trusted_proxies:"
                                                          " [127.0.0.1]}\nauth: {required: true}\n"))
    login = await gw.post("/login", data={"token": "adm-tls-1", "next": "/keys"}, allow_redirects=False)
    cookie = {"Cookie": f"finopsd_admin={login.cookies['finopsd_admin'].value}"}
    page = await (await gw.get("/keys", headers=cookie)).text()
    token = re.search(r'name="csrf-token" content="([0-9a-f]{64})"', page)[1]  # type: ignore[index]
    https = {**cookie, "X-CSRF-Token": token, "Origin": f"https://{gw.host}:{gw.port}"}
    refused = await gw.post("/api/keys", json={"name": "tls"}, headers=https)
    assert refused.status == 403 and (await refused.json())["error"]["code"] == "csrf_origin"
    made = await gw.post("/api/keys", json={"name": "tls"},
                         headers={**https, "X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.8"})
    assert made.status == 201, await made.text()
    audit = (await (await gw.get("/api/audit", headers=cookie)).json())["items"]
    assert audit[0]["client_ip"] == "198.51.100.8"


def test_trusted_proxies_must_be_addresses_or_networks() -> None:
    assert [str(n) for n in parse("server: {trusted_proxies: [10.0.0.0/8, '::1']}\n", env={}).server
            .trusted_proxies] == ["10.0.0.0/8", "::1/128"]
    with pytest.raises(ConfigError, match=r"server.trusted_proxies\[0\]: 'lb.internal' is not an IP address"):
        parse("server: {trusted_proxies: [lb.internal]}\n", env={})
