"""Replicate predictions API: a chat request becomes one prediction of a language model.

References (the wire format is taken from these):
- https://replicate.com/docs/reference/http — ``POST /v1/models/{owner}/{name}/predictions``
  (official models), ``POST /v1/predictions`` with ``version`` (a pinned version), the
  prediction object (``status`` starting/processing/succeeded/failed/canceled, ``output``,
  ``error``, ``urls.get``/``urls.stream``, ``metrics.input_token_count``/``output_token_count``),
  ``Prefer: wait`` (hold the request open up to 60 s), errors as ``{"detail": …}``
- https://replicate.com/docs/topics/predictions/create-a-prediction — sync mode with ``Prefer: wait``
- https://replicate.com/docs/topics/predictions/streaming (and /docs/reference/streaming) — GET
  ``urls.stream`` with ``Accept: text/event-stream``; events ``output`` (data: a text piece; a
  piece with newlines spans several ``data:`` lines), ``logs``, ``error``, ``done`` (JSON data,
  may carry ``reason``)

Each model declares its own inputs; the language models this adapter targets (meta/…-instruct,
mistralai/…, and their kin) take ``prompt``, ``system_prompt``, ``max_tokens`` or
``max_new_tokens``, ``temperature`` and ``top_p``. Both token-limit names are sent, because
models differ and Replicate ignores inputs a model does not declare. The model applies its own
chat template to ``prompt``, so a conversation is written into it as a plain transcript
("User: …", "Assistant: …"); a single user message is sent as it is.

Replicate has no tool calling: a request with ``tools`` is refused with 400. Usage comes from the
prediction's ``metrics``; the stream carries none, so a streamed answer reports usage only when
its ``done`` event includes metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from yarl import URL

from finopsd.errors import BadRequest, GatewayError, UpstreamError, UpstreamTimeout
from finopsd.jsonwire import loads
from finopsd.providers.base import BaseAdapter, Target, UpstreamRequest, path_segment, upstream_error
from finopsd.providers.canonical import (
    StreamState,
    as_object,
    chat_completion,
    content_text,
    is_number,
    load_object,
    requested_max_tokens,
)
from finopsd.usage import token_count

RUNNING: Final = frozenset({"starting", "processing"})
ROLE_LABELS: Final = {"user": "User", "assistant": "Assistant", "tool": "Tool result"}


def prompt_of(messages: Any) -> tuple[str, str]:
    """OpenAI messages → (system prompt, prompt)."""
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    for msg in messages if isinstance(messages, list) else ():
        if not isinstance(msg, dict):
            continue
        role, text = msg.get("role"), content_text(msg.get("content"), "\n")
        if role in ("system", "developer"):
            if text:
                system.append(text)
            continue
        if role == "assistant":
            # history made with another provider may hold calls: keep them readable to the model
            for call in msg.get("tool_calls") or ():
                fn = as_object(as_object(call).get("function"))
                text += f"\n[called {fn.get('name')} with {fn.get('arguments') or '{}'}]"
        label = ROLE_LABELS.get(str(role), "User")
        if text.strip():
            turns.append((label, text.strip()))
    if len(turns) == 1 and turns[0][0] == "User":
        return "\n\n".join(system), turns[0][1]
    return "\n\n".join(system), "\n\n".join(f"{label}: {text}" for label, text in turns)


def prediction_body(model: str, req: dict[str, Any], *, stream: bool) -> tuple[str, dict[str, Any]]:
    """(path, body) for a canonical chat request; ``owner/name:version`` pins a version."""
    if req.get("tools"):
        raise BadRequest("replicate models have no tool calling; send the request without `tools`",
                         param="tools", code="tools_not_supported")
    name, _, version = model.partition(":")
    if name.count("/") != 1 or not all(name.split("/")):
        raise BadRequest(f"replicate models are named owner/name or owner/name:version, not {model!r}",
                         param="model", code="model_not_found")
    name = "/".join(path_segment(part, "replicate") for part in name.split("/"))
    system, prompt = prompt_of(req.get("messages"))
    inputs: dict[str, Any] = {"prompt": prompt}
    if system:
        inputs["system_prompt"] = system
    limit = requested_max_tokens(req)
    if limit is not None:
        inputs["max_tokens"] = inputs["max_new_tokens"] = limit
    for key in ("temperature", "top_p"):
        if is_number(req.get(key)):
            inputs[key] = req[key]
    body: dict[str, Any] = {"input": inputs}
    if stream:
        body["stream"] = True  # older models stream only when asked; newer ones ignore it
    if version:
        body["version"] = version
        return "/predictions", body
    return f"/models/{name}/predictions", body


def _failed(prediction: dict[str, Any], provider: str) -> UpstreamError:
    detail, status = prediction.get("error"), prediction.get("status")
    what = "was canceled" if status == "canceled" else f"failed: {detail}" if detail else "failed"
    return UpstreamError(f"{provider}: prediction {prediction.get('id') or '(no id)'} {what}",
                         code=f"prediction_{status}")


def usage_of(metrics: Any) -> dict[str, Any] | None:
    m = as_object(metrics)
    if not is_number(m.get("input_token_count")) and not is_number(m.get("output_token_count")):
        return None
    prompt, completion = token_count(m.get("input_token_count")), token_count(m.get("output_token_count"))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}


def completion_from_prediction(prediction: dict[str, Any], model: str, provider: str) -> dict[str, Any]:
    status = prediction.get("status")
    if status in RUNNING:
        # the one follow-up GET (with Prefer: wait) came back unfinished: we do not poll further
        raise UpstreamTimeout(f"{provider}: prediction {prediction.get('id', '')} still {status} after waiting",
                              code="prediction_unfinished")
    if status != "succeeded":
        raise _failed(prediction, provider)
    output = prediction.get("output")
    text = output if isinstance(output, str) else "".join(str(p) for p in output) if isinstance(output, list) else ""
    return chat_completion(upstream_id=prediction.get("id"), model=model, content=text, thoughts=[], calls=[],
                           finish="stop", usage=usage_of(prediction.get("metrics")))


@dataclass(slots=True)
class ReplicateStream(StreamState):
    """Text only (Replicate has no tool calls); usage, when the ``done`` event carries metrics."""

    usage: dict[str, Any] | None = None  # already OpenAI usage

    def openai_usage(self) -> dict[str, Any] | None:
        return self.usage


def stream_event(s: ReplicateStream, event: str | None, data: str) -> list[dict[str, Any]]:
    """One SSE frame → canonical chunks. ``output`` data is raw text, not JSON."""
    if event == "output" or event is None:
        return [s.chunk({"content": data})] if data and not s.finished else []
    if event == "error":
        detail = data
        try:
            detail = str(as_object(loads(data)).get("detail") or data)
        except ValueError:
            pass
        raise UpstreamError(f"{s.provider}: {detail or 'prediction failed'}", code="prediction_failed")
    if event == "done":
        if s.finished:
            return []
        s.finished = True
        try:
            done = as_object(loads(data))
        except ValueError:
            done = {}
        if done.get("reason") in ("canceled", "error"):
            raise UpstreamError(f"{s.provider}: prediction ended: {done['reason']}", code=f"prediction_{done['reason']}")
        out = [s.chunk({}, "stop")]
        s.usage = usage_of(done.get("metrics"))
        return out + s.usage_chunk()
    return []  # logs


def own_url(target: Target, url: str) -> str:
    """A follow-up URL from a prediction, only on the provider's own origin: it gets our token.

    Replicate serves streams from a sibling host (``api.replicate.com`` → ``stream.replicate.com``),
    so for a DNS name a sibling host (one first label swapped) counts too, on the default port; any
    other URL is a 502, never fetched."""
    base = URL(target.provider.base_url)
    try:
        found = URL(url)
    except ValueError:
        found = URL()
    host, own = found.host or "", base.host or ""
    if found.scheme == base.scheme and host:
        if found.origin() == base.origin():
            return url
        parent, dns = own.partition(".")[2], own.count(".") >= 2 and not own.replace(".", "").isdigit()
        if dns and host.partition(".")[2] == parent and found.explicit_port is None:
            return url
    raise UpstreamError(f"{target.provider.name}: the prediction named a URL off the provider's origin"
                        f" ({host[:80] or 'no host'}); not followed", code="upstream_foreign_url")


class ReplicateAdapter(BaseAdapter):
    """Create a prediction, then (``followup``) read its stream or wait for it to finish."""

    def auth(self, target: Target) -> dict[str, str]:
        return {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}

    def build_request(self, target: Target, req: dict[str, Any], *, stream: bool) -> UpstreamRequest:
        path, body = prediction_body(target.model, req, stream=stream)
        headers = {"Content-Type": "application/json", **target.provider.headers, **self.auth(target)}
        if not stream:
            headers["Prefer"] = "wait"  # sync mode: the answer is usually the finished prediction
        return UpstreamRequest(f"{target.provider.base_url}{path}", headers, json.dumps(body).encode())

    def followup(self, target: Target, body: bytes, *, stream: bool) -> UpstreamRequest | None:
        """The stream to read, or the prediction to wait for; None when the first answer is final."""
        name = target.provider.name
        prediction = load_object(body, name)
        status = prediction.get("status")
        if status in ("failed", "canceled"):
            raise _failed(prediction, name)
        urls = as_object(prediction.get("urls"))
        headers = {**target.provider.headers, **self.auth(target)}
        if stream:
            url = urls.get("stream")
            if not isinstance(url, str) or not url:
                raise UpstreamError(f"{name}: model {target.model} does not stream output; call it without stream",
                                    status=400, type="invalid_request_error", code="stream_not_supported")
            return UpstreamRequest(own_url(target, url), {**headers, "Accept": "text/event-stream",
                                   "Cache-Control": "no-store"}, b"", method="GET")
        if status in RUNNING and isinstance(urls.get("get"), str):
            return UpstreamRequest(own_url(target, urls["get"]), {**headers, "Prefer": "wait"}, b"", method="GET")
        return None

    def parse_response(self, target: Target, body: bytes) -> dict[str, Any]:
        name = target.provider.name
        return completion_from_prediction(load_object(body, name), target.model, name)

    def new_stream(self, target: Target) -> ReplicateStream:
        return ReplicateStream(target.provider.name, target.model)

    def parse_event(self, state: ReplicateStream, event: str | None, data: str) -> list[dict[str, Any]]:
        return stream_event(state, event, data)

    def parse_error(self, status: int, body: bytes) -> GatewayError:
        return upstream_error(status, body, "replicate")
