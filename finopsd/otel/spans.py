"""Spans for an exchange, per the GenAI semantic conventions, exported over OTLP/HTTP.

https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/ : the exchange is a
SERVER span named ``{operation} {model}``; each upstream attempt a CLIENT child. An
incoming W3C ``traceparent`` makes the exchange a child of the agent's span. Content
(``gen_ai.input.messages``, ``gen_ai.output.messages``) only with ``otel.content``,
scrubbed of secrets and bounded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from finopsd.exchange import Exchange
from finopsd.log.recorder import token_counts
from finopsd.runtime import Runtime

EXPORT_TIMEOUT_S: Final = 5  # one export's bound (the batch thread's, never a request's)
MAX_QUEUE: Final = 4096  # spans waiting for export; past it the SDK drops new ones
MAX_CONTENT: Final = 64 * 1024  # characters of each content attribute
OPERATIONS: Final = {"mcp": "execute_tool", "embeddings": "embeddings", "completions": "text_completion"}
PROPAGATOR: Final = TraceContextTextMapPropagator()


class Spans:
    def __init__(self, runtime: Runtime) -> None:
        config = runtime.config.otel
        self.runtime = runtime
        self.provider = TracerProvider(resource=Resource.create({"service.name": config.service_name}))
        exporter = OTLPSpanExporter(endpoint=config.endpoint, headers=dict(config.headers), timeout=EXPORT_TIMEOUT_S)
        self.provider.add_span_processor(BatchSpanProcessor(
            exporter, max_queue_size=MAX_QUEUE, export_timeout_millis=EXPORT_TIMEOUT_S * 1000))
        self.tracer = self.provider.get_tracer("finopsd")
        self._parents: dict[int, Context] = {}  # exchanges under way with a traceparent; popped in end()

    def begin(self, ex: Exchange, headers: Mapping[str, str]) -> None:
        if "traceparent" in headers:
            self._parents[id(ex)] = PROPAGATOR.extract({"traceparent": headers["traceparent"],
                                                        "tracestate": headers.get("tracestate", "")})

    def end(self, ex: Exchange) -> None:
        parent = self._parents.pop(id(ex), None)
        start = int(ex.started * 1e9)
        end = start + int((ex.duration_ms or 0.0) * 1e6)
        operation = OPERATIONS.get(ex.route, "chat")
        span = self.tracer.start_span(f"{operation} {ex.model}" if ex.model else operation, context=parent,
                                      kind=SpanKind.SERVER, start_time=start, attributes=self._attributes(ex, operation))
        inside = trace.set_span_in_context(span)
        last = len(ex.attempts) - 1
        for i, (attempt, (began, ended)) in enumerate(zip(ex.attempts, ex.attempt_times)):
            at = {"gen_ai.operation.name": operation, "gen_ai.provider.name": str(attempt.get("provider")),
                  "gen_ai.request.model": str(attempt.get("model")), "finopsd.attempt": i + 1}
            if isinstance(attempt.get("status"), int):
                at["http.response.status_code"] = attempt["status"]
            child = self.tracer.start_span(f"{operation} {attempt.get('provider')}/{attempt.get('model')}",
                                           context=inside, kind=SpanKind.CLIENT, attributes=at,
                                           start_time=start + int((began - ex.t0) * 1e9))
            if "error" in attempt:
                child.set_attribute("error.type", str(attempt.get("status", "error")))
                child.set_status(Status(StatusCode.ERROR))
            # the answer of the last, successful attempt streams until the exchange ends
            child.end(end_time=end if i == last and "error" not in attempt else start + int((ended - ex.t0) * 1e9))
        if ex.status != "ok":
            span.set_attribute("error.type", ex.error_type or ex.status)
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=end)

    def _attributes(self, ex: Exchange, operation: str) -> dict[str, Any]:
        counts = token_counts(ex.transcript.usage)
        at: dict[str, Any] = {"gen_ai.operation.name": operation, "finopsd.route": ex.route,
                              "finopsd.request_id": ex.id, "gen_ai.response.id": ex.id}
        for name, value in (("gen_ai.provider.name", ex.provider), ("gen_ai.request.model", ex.model),
                            ("gen_ai.response.model", ex.upstream_model),
                            ("gen_ai.usage.input_tokens", counts["prompt_tokens"]),
                            ("gen_ai.usage.output_tokens", counts["completion_tokens"]),
                            ("http.response.status_code", ex.status_code), ("finopsd.key", ex.key_name),
                            ("finopsd.team", ex.team), ("finopsd.user", ex.user), ("finopsd.project", ex.project),
                            ("finopsd.cost_usd", ex.cost_usd)):  # fmt: skip
            if value is not None:
                at[name] = value
        if ex.transcript.finish_reason:
            at["gen_ai.response.finish_reasons"] = [str(ex.transcript.finish_reason)]
        if operation == "execute_tool" and ex.model:
            at["gen_ai.tool.name"] = ex.model
        if self.runtime.config.otel.content:
            request = ex.request or {}
            at["gen_ai.input.messages"] = self._content(request.get("messages", request))
            at["gen_ai.output.messages"] = self._content(ex.transcript.as_dict())
        return at

    def _content(self, value: Any) -> str:
        text = json.dumps(self.runtime.scrubber.value(value), ensure_ascii=False, default=str)
        return text if len(text) <= MAX_CONTENT else text[:MAX_CONTENT] + "…"

    async def shutdown(self) -> None:
        """Export what is queued, off the event loop; a dead collector costs at most the export timeout."""
        await asyncio.to_thread(self.provider.shutdown)
