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

Mapping choices a reader would not guess:
- Bedrock rejects a request whose history holds toolUse/toolResult blocks without a
  ``toolConfig``, so one is always sent then; tools the history names but the request lacks get a
  spec with an empty object schema.
- ``tool_choice: none`` has no Converse equivalent: the tools are left out, unless the history
  needs a ``toolConfig``; then only the tools the history used are sent, with no ``toolChoice``
  (the model may still call one: that cannot be prevented on Converse).
- ``toolResult.status`` is not sent: OpenAI tool messages carry no success flag, and the field is
  only accepted by Claude and Nova models.
- ``reasoning_effort`` becomes Claude's ``thinking`` (adaptive with ``output_config.effort`` on 4.6
  and later, a ``budget_tokens`` budget on 3.7 to 4.5), only when the model id names the Claude
  version (an application-profile ARN does not) and the request allows it: no forced tool, and
  not a tool loop whose last assistant turn lacks its signed thinking block (chat cannot carry
  the signature back). Other models ignore ``reasoning_effort``.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer, ParserError
from botocore.utils import percent_encode

from finopsd.errors import BadRequest, GatewayError, UpstreamError, error_type_for_status
from finopsd.providers.anthropic import THINKING_BUDGETS, data_url_parts, tool_input
from finopsd.providers.base import BaseAdapter, Target, UpstreamRequest, upstream_error

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
IMAGE_FORMATS: Final = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg",
                        "image/gif": "gif", "image/webp": "webp"}
MAX_CACHE_POINTS: Final = 4  # Bedrock's limit per request, as Anthropic's
DEFAULT_ANSWER_ROOM: Final = 8192  # output room kept above a thinking budget
_EFFORTS: Final = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "high"}
_BAD_ID_CHARS: Final = re.compile(r"[^a-zA-Z0-9_.:-]")  # ToolUseId pattern in the service model
_CLAUDE: Final = re.compile(r"claude-(?:(3-7)|([a-z]+)-(\d+)(?:-(\d{1,2}))?(?!\d))")
CACHE_POINT: Final = {"cachePoint": {"type": "default"}}


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# --- request: OpenAI chat → Converse body --------------------------------------------------


def _tool_use_id(value: Any) -> str:
    return (_BAD_ID_CHARS.sub("_", str(value or "")) or "tooluse_missing")[:64]


def _image(url: str) -> dict[str, Any]:
    if url.startswith("s3://"):
        return {"image": {"format": IMAGE_FORMATS.get(f"image/{url.rsplit('.', 1)[-1].lower()}", "png"),
                          "source": {"s3Location": {"uri": url}}}}
    if not url.startswith("data:"):
        # Converse takes image bytes or S3 objects only; fetching URLs is not the gateway's job
        raise BadRequest("bedrock takes images as data: URLs or s3:// URIs, not http(s) links",
                         param="messages", code="unsupported_image_url")
    media, data = data_url_parts(url)
    fmt = IMAGE_FORMATS.get(media.lower())
    if fmt is None:
        raise BadRequest(f"bedrock does not take {media or 'untyped'} images (png, jpeg, gif, webp)",
                         param="messages", code="unsupported_image_type")
    return {"image": {"format": fmt, "source": {"bytes": data}}}  # blobs travel as base64 in JSON


class _Builder:
    """One request's translation: its messages, and the cache points spent so far."""

    def __init__(self) -> None:
        self.cache_points = 0

    def mark(self, blocks: list[dict[str, Any]], source: dict[str, Any]) -> None:
        """``cache_control`` on a part or message → a cachePoint after its content."""
        if (isinstance(source.get("cache_control"), dict) and blocks and "cachePoint" not in blocks[-1]
                and self.cache_points < MAX_CACHE_POINTS):
            self.cache_points += 1
            blocks.append(dict(CACHE_POINT))

    def content(self, content: Any, images: bool = True, cache: bool = True) -> list[dict[str, Any]]:
        """A string or parts → text (and image) blocks; blank text is dropped (Bedrock rejects it)."""
        if isinstance(content, str):
            return [{"text": content}] if content.strip() else []
        blocks: list[dict[str, Any]] = []
        for part in content if isinstance(content, list) else ():
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text" and isinstance(part.get("text"), str) and part["text"].strip():
                blocks.append({"text": part["text"]})
                if cache:
                    self.mark(blocks, part)
            elif part.get("type") == "image_url" and images:
                image = part.get("image_url")
                url = image.get("url") if isinstance(image, dict) else image
                if isinstance(url, str) and url:
                    blocks.append(_image(url))
                    if cache:
                        self.mark(blocks, part)
        return blocks

    def assistant(self, msg: dict[str, Any]) -> list[dict[str, Any]]:
        blocks = self.content(msg.get("content"), images=False)
        for call in msg.get("tool_calls") or ():
            if isinstance(call, dict):
                fn = _obj(call.get("function"))
                blocks.append({"toolUse": {"toolUseId": _tool_use_id(call.get("id")),
                                           "name": str(fn.get("name") or ""),
                                           "input": tool_input(fn.get("arguments"))}})
        return blocks

    def tool_result(self, msg: dict[str, Any]) -> dict[str, Any]:
        raw = msg.get("content")
        if isinstance(raw, (str, list)) or raw is None:
            # cachePoint is not a tool-result block; an empty result is refused, so say so
            content = self.content(raw or "", cache=False) or [{"text": "(empty)"}]
        else:
            content = [{"json": raw}]  # a client that sent structured data instead of a string
        return {"toolResult": {"toolUseId": _tool_use_id(msg.get("tool_call_id")), "content": content}}

    def messages(self, messages: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """OpenAI messages → (system blocks, Converse messages), same-role turns merged."""
        system: list[dict[str, Any]] = []
        out: list[dict[str, Any]] = []
        for msg in messages if isinstance(messages, list) else ():
            if not isinstance(msg, dict):
                continue
            role = msg.get("role")
            if role in ("system", "developer"):
                blocks = self.content(msg.get("content"), images=False)
                self.mark(blocks, msg)
                system.extend(blocks)
                continue
            if role == "assistant":
                turn, blocks = "assistant", self.assistant(msg)
            elif role == "tool":
                turn, blocks = "user", [self.tool_result(msg)]  # results travel in a user turn
            else:
                turn, blocks = "user", self.content(msg.get("content"))
                self.mark(blocks, msg)
            if not blocks:
                continue
            if out and out[-1]["role"] == turn:
                out[-1]["content"].extend(blocks)
            else:
                out.append({"role": turn, "content": blocks})
        _pair_tool_results(out)
        _trim_prefill(out)
        return system, out


def _pair_tool_results(messages: list[dict[str, Any]]) -> None:
    """Every toolUse answered in the next turn (results first), every toolResult answering one.

    Bedrock answers 400 otherwise, as Anthropic does; a client's context condensing leaves both
    kinds of orphan behind. A missing result is reported as such; an orphan result becomes text.
    """
    for i, msg in enumerate(messages):
        if msg["role"] != "user":
            continue
        prev = messages[i - 1] if i and messages[i - 1]["role"] == "assistant" else None
        asked = [b["toolUse"]["toolUseId"] for b in prev["content"] if "toolUse" in b] if prev else []
        results, rest = [], []
        for block in msg["content"]:
            result = block.get("toolResult")
            if result is None:
                rest.append(block)
            elif result["toolUseId"] in asked:
                results.append(block)
            else:
                texts = [c["text"] for c in result["content"] if "text" in c]
                rest.append({"text": f"[result of tool call {result['toolUseId']}]\n" + "\n".join(texts)})
        answered = {b["toolResult"]["toolUseId"] for b in results}
        missing = [{"toolResult": {"toolUseId": cid, "content": [{"text": "no result was recorded for this tool call"}]}}
                   for cid in asked if cid not in answered]
        msg["content"] = results + missing + rest


def _trim_prefill(messages: list[dict[str, Any]]) -> None:
    """A final assistant turn may not end in whitespace (Claude answers 400)."""
    last = messages[-1] if messages else None
    if last is None or last["role"] != "assistant" or "text" not in last["content"][-1]:
        return
    text = last["content"][-1]["text"].rstrip()
    if text:
        last["content"][-1]["text"] = text
    else:
        del last["content"][-1]
        if not last["content"]:
            messages.pop()


def _tool_spec(name: str, description: Any = None, schema: Any = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name}
    if isinstance(description, str) and description:
        spec["description"] = description
    params = schema if isinstance(schema, dict) and schema else {"type": "object", "properties": {}}
    spec["inputSchema"] = {"json": {k: v for k, v in params.items() if k != "$schema"}}
    return {"toolSpec": spec}


def tool_config(req: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``toolConfig`` for the request; present whenever the history holds tool blocks."""
    specs: dict[str, dict[str, Any]] = {}
    for tool in req.get("tools") or ():
        fn = _obj(tool.get("function")) if isinstance(tool, dict) else {}
        if isinstance(fn.get("name"), str) and fn["name"]:
            specs[fn["name"]] = _tool_spec(fn["name"], fn.get("description"), fn.get("parameters"))
    used = list(dict.fromkeys(b["toolUse"]["name"] for m in messages for b in m["content"] if "toolUse" in b))
    choice = req.get("tool_choice")
    if choice == "none":
        if not used:
            return None
        return {"tools": [specs.get(name) or _tool_spec(name) for name in used]}
    tools = list(specs.values()) + [_tool_spec(name) for name in used if name not in specs]
    if not tools:
        return None
    cfg: dict[str, Any] = {"tools": tools}
    if choice == "required":
        cfg["toolChoice"] = {"any": {}}
    elif choice == "auto":
        cfg["toolChoice"] = {"auto": {}}
    elif isinstance(choice, dict) and isinstance(_obj(choice.get("function")).get("name"), str):
        cfg["toolChoice"] = {"tool": {"name": choice["function"]["name"]}}
    return cfg


def _claude_version(model: str) -> tuple[int, int] | None:
    """(major, minor) of a Claude model id (``us.anthropic.claude-sonnet-4-5-…``); None otherwise."""
    m = _CLAUDE.search(model)
    if m is None:
        return None
    if m.group(1):
        return (3, 7)
    if m.group(2) in ("mythos", "fable"):
        return (5, 0)
    return int(m.group(3)), int(m.group(4) or 0)


def _apply_thinking(body: dict[str, Any], model: str, effort: Any) -> None:
    """reasoning_effort → Claude ``thinking`` (see the module docstring for when it is skipped)."""
    version = _claude_version(model)
    if not isinstance(effort, str) or effort not in THINKING_BUDGETS or version is None or version < (3, 7):
        return
    choice = _obj(body.get("toolConfig")).get("toolChoice")
    if choice and ("any" in choice or "tool" in choice):
        return  # Claude refuses forced tool use with thinking
    last = next((m for m in reversed(body["messages"]) if m["role"] == "assistant"), None)
    if last is not None and any("toolUse" in b for b in last["content"]):
        return
    extra = body.setdefault("additionalModelRequestFields", {})
    inference = body.setdefault("inferenceConfig", {})
    if version >= (4, 6):
        extra["thinking"] = {"type": "adaptive"}
        extra["output_config"] = {"effort": _EFFORTS[effort]}
    else:
        budget = THINKING_BUDGETS[effort]
        limit = inference.get("maxTokens")
        if not isinstance(limit, int) or limit <= budget:
            # thinking counts toward maxTokens: keep the answer's room on top of the budget
            inference["maxTokens"] = budget + min(limit or DEFAULT_ANSWER_ROOM, DEFAULT_ANSWER_ROOM)
        extra["thinking"] = {"type": "enabled", "budget_tokens": budget}
    inference.pop("temperature", None)  # thinking takes no temperature, and top_p only ≥ 0.95
    if isinstance(inference.get("topP"), (int, float)) and inference["topP"] < 0.95:
        del inference["topP"]
    if not inference:
        del body["inferenceConfig"]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def converse_body(model: str, req: dict[str, Any]) -> dict[str, Any]:
    """The Converse (and ConverseStream) body for a canonical chat request; the model is in the URL."""
    system, messages = _Builder().messages(req.get("messages"))
    body: dict[str, Any] = {"messages": messages}
    if system:
        body["system"] = system
    inference: dict[str, Any] = {}
    limit = req.get("max_completion_tokens") or req.get("max_tokens")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        inference["maxTokens"] = limit
    if _number(req.get("temperature")):
        inference["temperature"] = req["temperature"]
    if _number(req.get("top_p")):
        inference["topP"] = req["top_p"]
    stop = req.get("stop")
    stops = [s for s in ([stop] if isinstance(stop, str) else stop or ()) if isinstance(s, str) and s]
    if stops:
        inference["stopSequences"] = stops
    if inference:
        body["inferenceConfig"] = inference
    tools = tool_config(req, messages)
    if tools:
        body["toolConfig"] = tools
    fmt = _obj(req.get("response_format"))
    spec = _obj(fmt.get("json_schema")) if fmt.get("type") == "json_schema" else {}
    if isinstance(spec.get("schema"), dict):
        schema: dict[str, Any] = {"schema": json.dumps(spec["schema"])}  # a JSON string, per the model
        if isinstance(spec.get("name"), str):
            schema["name"] = spec["name"]
        body["outputConfig"] = {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": schema}}}
    _apply_thinking(body, model, req.get("reasoning_effort"))
    return body


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
    fresh = int(u.get("inputTokens") or 0)
    read = int(u.get("cacheReadInputTokens") or 0)
    written = int(u.get("cacheWriteInputTokens") or 0)
    output = int(u.get("outputTokens") or 0)
    prompt = fresh + read + written
    return {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": read, "cache_creation_tokens": written},
        "completion_tokens_details": {"reasoning_tokens": 0},  # Bedrock does not break it out
    }


def finish_reason(stop: Any, has_calls: bool) -> str:
    reason = FINISH_REASONS.get(stop, "stop") if isinstance(stop, str) else "stop"
    return "tool_calls" if has_calls and reason == "stop" else reason


def _load(data: bytes | str, provider: str) -> dict[str, Any]:
    try:
        parsed = json.loads(data)
    except ValueError:
        raise UpstreamError(f"{provider}: upstream sent invalid JSON") from None
    if not isinstance(parsed, dict):
        raise UpstreamError(f"{provider}: upstream sent an unexpected body")
    return parsed


def completion_from_converse(body: dict[str, Any], model: str) -> dict[str, Any]:
    """A ConverseResponse → ``chat.completion``."""
    text, thoughts, calls = [], [], []
    for block in _obj(_obj(body.get("output")).get("message")).get("content") or ():
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            text.append(block["text"])
        elif isinstance(block.get("toolUse"), dict):
            use = block["toolUse"]
            args = use.get("input")
            calls.append({"id": str(use.get("toolUseId") or ""), "type": "function",
                          "function": {"name": str(use.get("name") or ""),
                                       "arguments": json.dumps(args if args is not None else {})}})
        elif isinstance(block.get("reasoningContent"), dict):
            thought = _obj(block["reasoningContent"].get("reasoningText")).get("text")
            if isinstance(thought, str):
                thoughts.append(thought)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    completion: dict[str, Any] = {
        "id": "chatcmpl-" + secrets.token_hex(12),  # Converse answers carry no id of their own
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(body.get("stopReason"), bool(calls))}],
    }
    if isinstance(body.get("usage"), dict):
        completion["usage"] = usage_to_openai(body["usage"])
    return completion


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
        parsed = json.loads(payload)
        if isinstance(parsed, dict):
            message = parsed.get("message") or parsed.get("Message") or payload
    except ValueError:
        pass
    status = EXCEPTION_STATUS.get(name, 502)
    return UpstreamError(f"{provider}: {message or name}", status=status, type=error_type_for_status(status),
                         code=name or None)


@dataclass(slots=True)
class BedrockStream:
    """Per-request stream state: our tool-call counter, open tool blocks, usage."""

    provider: str
    model: str
    id: str
    created: int
    calls: int = 0
    tools: dict[int, int] = field(default_factory=dict)  # contentBlockIndex → our call index
    args_seen: set[int] = field(default_factory=set)
    usage: dict[str, Any] | None = None
    started: bool = False
    finished: bool = False
    usage_sent: bool = False

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        if not self.started:
            self.started = True
            delta = {"role": "assistant", **delta}
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def usage_chunk(self) -> list[dict[str, Any]]:
        if self.usage_sent or self.usage is None:
            return []
        self.usage_sent = True
        return [{"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                 "choices": [], "usage": usage_to_openai(self.usage)}]


def _block_delta(s: BedrockStream, ev: dict[str, Any]) -> list[dict[str, Any]]:
    delta = _obj(ev.get("delta"))
    if isinstance(delta.get("text"), str) and delta["text"]:
        return [s.chunk({"content": delta["text"]})]
    fragment = _obj(delta.get("toolUse")).get("input")
    block = ev.get("contentBlockIndex")
    if isinstance(fragment, str) and fragment and block in s.tools:
        s.args_seen.add(block)
        return [s.chunk({"tool_calls": [{"index": s.tools[block], "function": {"arguments": fragment}}]})]
    thought = _obj(delta.get("reasoningContent")).get("text")
    if isinstance(thought, str) and thought:
        return [s.chunk({"reasoning_content": thought})]
    return []  # reasoning signatures, redacted reasoning, citations


def stream_event(s: BedrockStream, event: str | None, data: str) -> list[dict[str, Any]]:
    """One event-stream frame → canonical chunks."""
    if event and (event.startswith("exception:") or event.startswith("error:")):
        raise stream_error(event, data, s.provider)
    ev = _load(data, s.provider) if data.strip() else {}
    if event == "contentBlockDelta":
        return _block_delta(s, ev)
    if event == "contentBlockStart":
        use = _obj(_obj(ev.get("start")).get("toolUse"))
        if not use:
            return []
        index, s.calls = s.calls, s.calls + 1
        s.tools[ev.get("contentBlockIndex", -1)] = index
        call = {"index": index, "id": str(use.get("toolUseId") or ""), "type": "function",
                "function": {"name": str(use.get("name") or ""), "arguments": ""}}
        return [s.chunk({"tool_calls": [call]})]
    if event == "contentBlockStop":
        block = ev.get("contentBlockIndex")
        if block in s.tools and block not in s.args_seen:
            # a call without parameters streams no input: give clients parseable arguments
            s.args_seen.add(block)
            return [s.chunk({"tool_calls": [{"index": s.tools[block], "function": {"arguments": "{}"}}]})]
        return []
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
        body = json.dumps(converse_body(target.model, req), ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", **provider.headers}
        if target.api_key:
            headers["Authorization"] = f"Bearer {target.api_key}"
        else:
            headers = sign(provider, url, body, headers)
        return UpstreamRequest(url, headers, body, encoded=True)

    def parse_response(self, target: Target, body: bytes) -> dict[str, Any]:
        return completion_from_converse(_load(body, target.provider.name), target.model)

    def new_decoder(self) -> EventStreamDecoder:
        return EventStreamDecoder()

    def new_stream(self, target: Target) -> BedrockStream:
        return BedrockStream(target.provider.name, target.model, "chatcmpl-" + secrets.token_hex(12),
                             int(time.time()))

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
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            parsed = None
        if isinstance(parsed, dict) and "message" not in parsed and isinstance(parsed.get("Message"), str):
            body = json.dumps({"message": parsed["Message"]}).encode()
        return upstream_error(status, body, "bedrock")
