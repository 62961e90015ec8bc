"""OpenTelemetry traces: an in-test OTLP/HTTP receiver decodes what finopsd exports.

The OpenAI SDK sends an agent's ``traceparent``; the spans must continue its trace, follow
the GenAI conventions, carry one child per upstream attempt, leave content out unless
``otel.content``; with the collector down every request still succeeds.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from finopsd import config as cfg
from finopsd.appkeys import LOGSTORE
from finopsd.otel import TRACING
from finopsd.yamldoc import ConfigError
from tests.conftest import GatewayFactory
from tests.fakes import FakeUpstream, Reply, fixture_frames

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
MSGS: list[Any] = [{"role": "user", "content": "the secret plan is zebra"}]


class Receiver:
    """OTLP/HTTP traces endpoint: decodes each protobuf export into plain span dicts."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/traces", self.receive)

    async def receive(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource in export.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    self.spans.append({
                        "name": span.name, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                        "parent": span.parent_span_id.hex(), "kind": span.kind, "status": span.status.code,
                        "attributes": {a.key: _value(a.value) for a in span.attributes},
                        "service": {a.key: _value(a.value) for a in resource.resource.attributes}["service.name"],
                    })  # fmt: skip
        return web.Response(body=b"", content_type="application/x-protobuf")


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind)


def config(fake_url: str, endpoint: str, extra: str = "") -> str:
    return f"""
providers:
  openai: {{base_url: {fake_url}, keys: [{{value: sk-upstream-secret}}], models: [gpt-5], max_retries: 1,
           retry_backoff_ms: 1}}
otel: {{endpoint: "{endpoint}", service_name: gw-test{extra}}}
"""


async def flush(gw: TestClient) -> None:
    await gw.server.app[LOGSTORE].flush()
    spans = gw.server.app[TRACING].spans
    assert spans is not None
    await asyncio.to_thread(spans.provider.force_flush)


async def receiver_url(aiohttp_server: Any, receiver: Receiver) -> str:
    return str((await aiohttp_server(receiver.app)).make_url("/v1/traces"))


async def test_an_exchange_continues_the_agents_trace_with_a_span_per_attempt(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream, aiohttp_server: Any
) -> None:
    receiver = Receiver()
    gw = await make_gateway(config(fake_openai.url, await receiver_url(aiohttp_server, receiver)))
    fake_openai.answer_json({"error": {"message": "boom"}}, status=500)
    fake_openai.add(Reply(frames=fixture_frames("openai/text_stream.sse")))
    async with openai.AsyncOpenAI(base_url=str(gw.make_url("/openai")), api_key="sk-any", max_retries=0,
                                  default_headers={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN}-01"}) as client:
        chunks = await client.chat.completions.create(model="openai/gpt-5", messages=MSGS, stream=True,
                                                      stream_options={"include_usage": True})
        assert [c async for c in chunks]
    await flush(gw)
    (exchange,) = [s for s in receiver.spans if s["kind"] == 2]  # SERVER
    attempts = sorted((s for s in receiver.spans if s["kind"] == 3), key=lambda s: s["attributes"]["finopsd.attempt"])
    assert exchange["name"] == "chat openai/gpt-5" and exchange["service"] == "gw-test"
    assert (exchange["trace_id"], exchange["parent"]) == (TRACE_ID, PARENT_SPAN)  # the agent's trace goes on
    at = exchange["attributes"]
    assert at["gen_ai.operation.name"] == "chat" and at["gen_ai.provider.name"] == "openai"
    assert at["gen_ai.request.model"] == "openai/gpt-5" and at["gen_ai.response.model"] == "gpt-5"
    assert (at["gen_ai.usage.input_tokens"], at["gen_ai.usage.output_tokens"]) == (12, 3)
    assert at["gen_ai.response.finish_reasons"] == ["stop"] and at["http.response.status_code"] == 200
    assert "gen_ai.input.messages" not in at and "zebra" not in str(receiver.spans)  # content stays home
    assert [s["attributes"]["http.response.status_code"] for s in attempts] == [500, 200]
    assert {(s["trace_id"], s["parent"]) for s in attempts} == {(TRACE_ID, exchange["span_id"])}
    assert attempts[0]["status"] == 2 and attempts[0]["attributes"]["error.type"] == "500"  # ERROR
    assert "sk-upstream-secret" not in str(receiver.spans)


async def test_content_is_exported_only_when_asked_and_without_secrets(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream, aiohttp_server: Any
) -> None:
    receiver = Receiver()
    gw = await make_gateway(config(fake_openai.url, await receiver_url(aiohttp_server, receiver), ", content: true"))
    fake_openai.play("openai/text_stream.sse")
    async with openai.AsyncOpenAI(base_url=str(gw.make_url("/openai")), api_key="sk-any", max_retries=0) as client:
        leaked = [{"role": "user", "content": "zebra; my key is sk-upstream-secret"}]
        chunks = await client.chat.completions.create(model="openai/gpt-5", messages=leaked, stream=True)
        assert [c async for c in chunks]
    await flush(gw)
    (span,) = [s for s in receiver.spans if s["kind"] == 2]  # SERVER; its one attempt is a CLIENT child
    assert len(span["trace_id"]) == 32 and span["parent"] == ""  # no traceparent: a trace of its own
    assert "zebra" in span["attributes"]["gen_ai.input.messages"]
    assert "sk-upstream-secret" not in span["attributes"]["gen_ai.input.messages"]
    assert span["attributes"]["gen_ai.output.messages"]


async def test_a_collector_that_is_down_never_fails_a_request(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gw = await make_gateway(config(fake_openai.url, f"http://127.0.0.1:{port}/v1/traces"))
    fake_openai.play("openai/text_stream.sse")
    async with openai.AsyncOpenAI(base_url=str(gw.make_url("/openai")), api_key="sk-any", max_retries=0) as client:
        for _ in range(3):
            chunks = await client.chat.completions.create(model="openai/gpt-5", messages=MSGS, stream=True)
            text = [c.choices[0].delta.content or "" async for c in chunks if c.choices]
            assert "".join(text)
    await gw.server.app[LOGSTORE].flush()
    assert (await gw.get("/healthz")).status == 200


def test_an_endpoint_must_be_an_http_url() -> None:
    with pytest.raises(ConfigError, match="otel.endpoint"):
        cfg.parse("otel: {endpoint: collector:4318}\n", env={})
