"""Amazon Bedrock Converse API: OpenAI chat requests as Converse bodies, answers back as chat chunks.

References (the wire format is taken from these):
- https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html — request body
  (``system``, ``messages``, ``inferenceConfig``, ``toolConfig``, ``additionalModelRequestFields``,
  ``outputConfig``), ``ContentBlock`` (text, image, toolUse, toolResult, reasoningContent,
  cachePoint), ``stopReason`` values, ``TokenUsage``; the service model botocore ships
  (``bedrock-runtime/2023-09-30/service-2.json``) is the same text in machine form
- https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStream.html and
  ``ConverseStreamOutput`` — messageStart, contentBlockStart/Delta/Stop, messageStop, metadata,
  and the in-stream exceptions (throttling, serviceUnavailable, validation, modelStreamError,
  internalServer) on the AWS binary event stream
- https://docs.aws.amazon.com/bedrock/latest/userguide/api-keys-use.html — ``Authorization:
  Bearer`` with a Bedrock API key, instead of SigV4
- https://docs.aws.amazon.com/bedrock/latest/userguide/prompt-caching.html — ``cachePoint``
  blocks; ``inputTokens`` excludes cache reads and writes
- https://docs.aws.amazon.com/bedrock/latest/userguide/claude-messages-extended-thinking.html and
  ``claude-messages-adaptive-thinking.html`` — ``thinking`` in ``additionalModelRequestFields``

Auth: a key in ``keys`` is a Bedrock API key (Bearer, no signing); otherwise SigV4 with
``access_key_id``/``secret_access_key``/``session_token``. The model id may be an inference-profile
ARN (``arn:aws:bedrock:…:application-inference-profile/x``): it is percent-encoded as one path
segment, the signature covers exactly that encoded path (botocore double-encodes it in the
canonical request, as AWS requires for every service but S3), and ``UpstreamRequest.encoded`` keeps
aiohttp from re-encoding it.

The request body is built in ``bedrock_request``, whose docstring lists the mapping choices a
reader would not guess; this module makes the call (URL, SigV4 or Bearer) and reads the answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer, ParserError
from botocore.utils import percent_encode

from finopsd.errors import GatewayError, UpstreamError, error_type_for_status
from finopsd.jsonwire import loads
from finopsd.providers.base import BaseAdapter, Target, UpstreamRequest, upstream_error
from finopsd.providers.bedrock_request import converse_body
from finopsd.providers.cache_points import place_converse
from finopsd.providers.canonical import (
    StreamState,
    arguments_json,
    as_object,
    chat_completion,
    load_object,
    tool_call,
)
from finopsd.usage import token_count

if TYPE_CHECKING:
    from finopsd.config import ProviderConfig

DEFAULT_BASE_URL: Final = "https://bedrock-runtime.{region}.amazonaws.com"
SERVICE: Final = "bedrock"  # the SigV4 signing name of bedrock-runtime
FINISH_REASONS: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
# in-stream exception → status; modelStreamErrorException is 424 in the service model, which no
# OpenAI client knows to retry: it is the model failing, so 502
EXCEPTION_STATUS: Final = {
    "throttlingException": 429,
    "serviceUnavailableException": 503,
    "validationException": 400,
    "modelStreamErrorException": 502,
    "internalServerException": 500,
}


# --- the call: URL, and SigV4 when there is no API key -----------------------------------------


def _base_url(provider: ProviderConfig) -> str:
    if provider.base_url:
        return provider.base_url.rstrip("/")
    if not provider.region:
        raise GatewayError(f"{provider.name}: set `region` (or `base_url`) for Bedrock", code="bedrock_config")
    return DEFAULT_BASE_URL.format(region=provider.region)


def sign(provider: ProviderConfig, url: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
    """SigV4 headers for a POST of ``body`` to the already-encoded ``url``."""
    if not (provider.access_key_id and provider.secret_access_key):
        raise GatewayError(
            f"{provider.name}: no credentials: set `keys` (Bedrock API keys) or `access_key_id` and "
            "`secret_access_key`", code="bedrock_credentials")
    if not provider.region:
        raise GatewayError(f"{provider.name}: SigV4 signing needs `region`", code="bedrock_config")
    creds = Credentials(provider.access_key_id, provider.secret_access_key, provider.session_token)
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(creds, SERVICE, provider.region).add_auth(request)
    return dict(request.headers.items())


# --- response: Converse output and stream events → chat completion and chunks ----------------


def usage_to_openai(u: dict[str, Any]) -> dict[str, Any]:
    """Bedrock TokenUsage → OpenAI usage; ``inputTokens`` excludes cache reads and writes."""
    fresh = token_count(u.get("inputTokens"))
    read = token_count(u.get("cacheReadInputTokens"))
    written = token_count(u.get("cacheWriteInputTokens"))
    output = token_count(u.get("outputTokens"))
    prompt = fresh + read + written
    details: dict[str, Any] = {"cached_tokens": read, "cache_creation_tokens": written}
    for entry in u.get("cacheDetails") or ():  # writes per TTL: 1h ones cost more (pricing needs the split)
        if isinstance(entry, dict) and entry.get("ttl") == "1h" and isinstance(entry.get("inputTokens"), int):
            details["ephemeral_1h_input_tokens"] = details.get("ephemeral_1h_input_tokens", 0) + entry["inputTokens"]
    return {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": details,
        "completion_tokens_details": {"reasoning_tokens": 0},  # Bedrock does not break it out
    }


def finish_reason(stop: Any, has_calls: bool) -> str:
    reason = FINISH_REASONS.get(stop, "stop") if isinstance(stop, str) else "stop"
    return "tool_calls" if has_calls and reason == "stop" else reason


def completion_from_converse(body: dict[str, Any], model: str) -> dict[str, Any]:
    """A ConverseResponse → ``chat.completion``."""
    text: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in as_object(as_object(body.get("output")).get("message")).get("content") or ():
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            text.append(block["text"])
        elif isinstance(block.get("toolUse"), dict):
            use = block["toolUse"]
            calls.append(tool_call(use.get("toolUseId"), use.get("name"), arguments_json(use.get("input"))))
        elif isinstance(block.get("reasoningContent"), dict):
            thought = as_object(block["reasoningContent"].get("reasoningText")).get("text")
            if isinstance(thought, str):
                thoughts.append(thought)
    usage = body.get("usage")
    return chat_completion(
        upstream_id=None,  # Converse answers carry no id of their own
        model=model, content="".join(text), thoughts=thoughts, calls=calls,
        finish=finish_reason(body.get("stopReason"), bool(calls)),
        usage=usage_to_openai(usage) if isinstance(usage, dict) else None,
    )


class EventStreamDecoder:
    """AWS binary event stream → ``(event type, payload)`` frames, built on botocore's buffer.

    Exceptions come as ``("exception:<type>", payload)`` and generic errors as
    ``("error:<code>", message)`` so that ``parse_event`` can raise them with a status.
    """

    def __init__(self) -> None:
        self._buffer = EventStreamBuffer()

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        self._buffer.add_data(chunk)
        frames: list[tuple[str | None, str]] = []
        try:
            for message in self._buffer:
                headers = message.headers
                payload = bytes(message.payload).decode("utf-8", "replace")
                kind = headers.get(":message-type", "event")
                if kind == "exception":
                    frames.append((f"exception:{headers.get(':exception-type', 'unknown')}", payload))
                elif kind == "error":
                    frames.append((f"error:{headers.get(':error-code', 'unknown')}",
                                   str(headers.get(":error-message") or payload)))
                else:
                    frames.append((headers.get(":event-type"), payload))
        except ParserError as e:  # a bad CRC or length: the stream cannot be trusted past here
            raise UpstreamError(f"bedrock: corrupt event stream ({type(e).__name__})",
                                code="upstream_bad_stream") from None
        return frames

    def close(self) -> list[tuple[str | None, str]]:
        return []  # a partial message at EOF is a cut stream; the relay reports it


def stream_error(kind: str, payload: str, provider: str) -> UpstreamError:
    """An in-stream exception or error frame → the error the client gets."""
    name = kind.partition(":")[2]
    message = payload
    try:
        parsed = loads(payload)
        if isinstance(parsed, dict):
            message = parsed.get("message") or parsed.get("Message") or payload
    except ValueError:
        pass
    status = EXCEPTION_STATUS.get(name, 502)
    return UpstreamError(f"{provider}: {message or name}", status=status, type=error_type_for_status(status),
                         code=name or None)


@dataclass(slots=True)
class BedrockStream(StreamState):
    """contentBlockIndex → our call index in ``tools``; the TokenUsage of the metadata event."""

    usage: dict[str, Any] | None = None

    def openai_usage(self) -> dict[str, Any] | None:
        return None if self.usage is None else usage_to_openai(self.usage)


def _block_delta(s: BedrockStream, ev: dict[str, Any]) -> list[dict[str, Any]]:
    delta = as_object(ev.get("delta"))
    if isinstance(delta.get("text"), str) and delta["text"]:
        return [s.chunk({"content": delta["text"]})]
    fragment = as_object(delta.get("toolUse")).get("input")
    block = ev.get("contentBlockIndex")
    if isinstance(fragment, str) and fragment and block in s.tools:
        return s.call_arguments(block, fragment)
    thought = as_object(delta.get("reasoningContent")).get("text")
    if isinstance(thought, str) and thought:
        return [s.chunk({"reasoning_content": thought})]
    return []  # reasoning signatures, redacted reasoning, citations


def stream_event(s: BedrockStream, event: str | None, data: str) -> list[dict[str, Any]]:
    """One event-stream frame → canonical chunks."""
    if event and (event.startswith("exception:") or event.startswith("error:")):
        raise stream_error(event, data, s.provider)
    ev = load_object(data, s.provider) if data.strip() else {}
    if event == "contentBlockDelta":
        return _block_delta(s, ev)
    if event == "contentBlockStart":
        use = as_object(as_object(ev.get("start")).get("toolUse"))
        if not use:
            return []
        return [s.start_call(ev.get("contentBlockIndex", -1), use.get("toolUseId"), use.get("name"))]
    if event == "contentBlockStop":
        # a call without parameters streams no input: end_call gives clients parseable arguments
        return s.end_call(ev.get("contentBlockIndex"))
    if event == "messageStart":
        return [s.chunk({"content": ""})]
    if event == "messageStop":
        if s.finished:
            return []
        s.finished = True
        return [s.chunk({}, finish_reason(ev.get("stopReason"), s.calls > 0))]
    if event == "metadata":
        if isinstance(ev.get("usage"), dict):
            s.usage = ev["usage"]
        return s.usage_chunk()
    return []  # event types added later


class BedrockAdapter(BaseAdapter):
    """``POST {base}/model/{modelId}/converse`` (or ``/converse-stream``), SigV4 or Bearer."""

    def build_request(self, target: Target, req: dict[str, Any], *, stream: bool) -> UpstreamRequest:
        provider = target.provider
        path = f"/model/{percent_encode(target.model)}/{'converse-stream' if stream else 'converse'}"
        url = _base_url(provider) + path
        converse = converse_body(target.model, req)
        place_converse(converse, target.model, target.cache_ttl)
        body = json.dumps(converse, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", **provider.headers}
        if target.api_key:
            headers["Authorization"] = f"Bearer {target.api_key}"
        else:
            headers = sign(provider, url, body, headers)
        return UpstreamRequest(url, headers, body, encoded=True)

    def parse_response(self, target: Target, body: bytes) -> dict[str, Any]:
        return completion_from_converse(load_object(body, target.provider.name), target.model)

    def new_decoder(self) -> EventStreamDecoder:
        return EventStreamDecoder()

    def new_stream(self, target: Target) -> BedrockStream:
        return BedrockStream(target.provider.name, target.model)

    def parse_event(self, state: BedrockStream, event: str | None, data: str) -> list[dict[str, Any]]:
        return stream_event(state, event, data)

    def finish_stream(self, state: BedrockStream) -> list[dict[str, Any]]:
        """At EOF: usage that arrived but was not sent (metadata is the last event; cut streams)."""
        return state.usage_chunk()

    def parse_error(self, status: int, body: bytes) -> GatewayError:
        # the body is {"message": …} (some errors say "Message"); AWS names the error in the
        # x-amzn-ErrorType header, which the relay does not pass, so the status decides the type
        if status == 424:  # ModelErrorException: the model failed; OpenAI clients know 502
            status = 502
        try:
            parsed = loads(body)
        except (ValueError, UnicodeDecodeError):
            parsed = None
        if isinstance(parsed, dict) and "message" not in parsed and isinstance(parsed.get("Message"), str):
            body = json.dumps({"message": parsed["Message"]}).encode()
        return upstream_error(status, body, "bedrock")
