"""Gemini API protocol: OpenAI chat requests as ``generateContent`` bodies, answers back as chat chunks.

References (the wire format is taken from these):
- https://ai.google.dev/api/generate-content — request body, GenerateContentResponse,
  FinishReason, UsageMetadata, the ``streamGenerateContent?alt=sse`` stream
- https://ai.google.dev/api/caching#Content — Content, Part, FunctionDeclaration, FunctionResponse
- https://ai.google.dev/gemini-api/docs/function-calling
- https://ai.google.dev/gemini-api/docs/thinking — ``thinkingLevel`` (Gemini 3), ``thinkingBudget`` (2.5)
- https://ai.google.dev/gemini-api/docs/thought-signatures

Tool schemas go in ``parametersJsonSchema``, not ``parameters``: ``parameters`` is an
OpenAPI-subset message whose parser rejects any keyword it lacks a field for
(``additionalProperties``, ``exclusiveMinimum``, ``propertyNames``, ``uniqueItems``…) with
400 INVALID_ARGUMENT, while ``parametersJsonSchema`` takes JSON Schema as a free JSON value
(``$ref``/``$defs``, ``anyOf``, ``additionalProperties`` included) on both the Gemini API and
Vertex AI. So agents' schemas pass unchanged instead of being lossily rewritten; only the
root ``$schema`` dialect tag is dropped. ``response_format`` uses ``responseJsonSchema`` alike.

Thought signatures: Gemini 3 puts an opaque ``thoughtSignature`` on the first ``functionCall``
part of each step and answers 400 when a later request's history lacks it on that same part.
OpenAI chat has no field for it, so it rides in the tool-call id the client echoes back::

    id = f"{base_id}__ts_{urlsafe_b64(signature, no padding)}"

``encode_call_id``/``decode_call_id`` do this; the request side puts the signature back on its
``functionCall`` part and looks function names up by the id as sent. Calls without one (history
from another model, or hand-made) get the documented ``skip_thought_signature_validator``
value on the first call of the step, for models that validate. Signatures on plain text parts
are only "recommended" to echo (not validated) and have no carrier in chat: they are dropped.
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
import re
import secrets
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlparse

from finopsd.errors import UpstreamError
from finopsd.jsonwire import loads
from finopsd.providers.base import BaseAdapter, Target, UpstreamRequest, path_segment, upstream_error
from finopsd.providers.canonical import (
    StreamState,
    arguments_json,
    chat_completion,
    completion_id,
    data_url_parts,
    load_object,
    parse_arguments,
    requested_max_tokens,
    tool_call,
)
from finopsd.usage import token_count

SIGNATURE_MARK: Final = "__ts_"
# documented placeholder for function calls Gemini did not sign itself
SKIP_SIGNATURE: Final = "skip_thought_signature_validator"

# https://ai.google.dev/gemini-api/docs/openai maps OpenAI efforts to these 2.5 budgets (low/medium/high)
_BUDGETS: Final = {"minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 24576}
_LEVELS: Final = {"none": "minimal", "minimal": "minimal", "low": "low", "medium": "medium",
                  "high": "high", "xhigh": "high"}
_FILTERED: Final = frozenset({
    "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
    "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION",
})
_VERSION: Final = re.compile(r"gemini-(\d+)")


# --- tool-call ids that carry a thought signature ---------------------------------------


def encode_call_id(base: str, signature: str | None) -> str:
    """The id the client sees: ``base`` alone, or with the signature appended (URL-safe, no '=')."""
    if not signature:
        return base
    packed = base64.urlsafe_b64encode(signature.encode()).rstrip(b"=").decode()
    return f"{base}{SIGNATURE_MARK}{packed}"


def decode_call_id(call_id: str) -> tuple[str, str | None]:
    """Split a client-echoed id into its base and the signature it carried (None if none)."""
    base, mark, packed = call_id.partition(SIGNATURE_MARK)
    if not mark or not packed:
        return call_id, None
    try:
        signature = base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        return call_id, None  # not one of ours: leave the id alone
    return base, signature


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def _major_version(model: str) -> int | None:
    """3 for ``gemini-3-pro-preview``; None for names without one (``gemini-flash-latest``)."""
    m = _VERSION.search(model)
    return int(m.group(1)) if m else None


def _validates_signatures(model: str) -> bool:
    # Gemini 3 enforces signatures; 1.x/2.x never did, and other families (Gemma) don't sign
    return "gemini" in model and _major_version(model) not in (1, 2)


# --- request: OpenAI chat → Gemini contents ----------------------------------------------


def _text_of(content: Any) -> str:
    """Text of a message content that is a string or a list of parts (non-text parts skipped)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _guess_mime(url: str, default: str) -> str:
    return mimetypes.guess_type(urlparse(url).path.lower())[0] or default


def _media_part(url: str, default_mime: str) -> dict[str, Any]:
    """A data: URL becomes inline bytes; anything else (https, gs://) a file reference."""
    if url.startswith("data:"):
        mime, data = data_url_parts(url)
        return {"inlineData": {"mimeType": mime or default_mime, "data": data}}
    return {"fileData": {"mimeType": _guess_mime(url, default_mime), "fileUri": url}}


def _user_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for p in content if isinstance(content, list) else ():
        if not isinstance(p, dict):
            continue
        kind = p.get("type")
        if kind == "text" and p.get("text"):
            parts.append({"text": p["text"]})
        elif kind == "image_url":
            image = p.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(url, str) and url:
                parts.append(_media_part(url, "image/jpeg"))
        elif kind == "input_audio" and isinstance(p.get("input_audio"), dict):
            audio = p["input_audio"]
            parts.append({"inlineData": {"mimeType": f"audio/{audio.get('format', 'wav')}", "data": audio.get("data", "")}})
        elif kind == "file" and isinstance(p.get("file"), dict) and p["file"].get("file_data"):
            parts.append(_media_part(p["file"]["file_data"], "application/pdf"))
    return parts


def _assistant_parts(msg: dict[str, Any], names: dict[str, str], bypass: bool) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    text = _text_of(msg.get("content"))
    if text:
        parts.append({"text": text})
    for pos, call in enumerate(msg.get("tool_calls") or ()):
        fn = call.get("function") or {}
        name = str(fn.get("name") or "")
        call_id = str(call.get("id") or "")
        base, signature = decode_call_id(call_id)
        names[call_id] = names[base] = name
        part: dict[str, Any] = {"functionCall": {"name": name, "args": parse_arguments(fn.get("arguments"))}}
        if signature:
            part["thoughtSignature"] = signature
        elif pos == 0 and bypass:
            part["thoughtSignature"] = SKIP_SIGNATURE
        parts.append(part)
    return parts


def _tool_result_parts(msg: dict[str, Any], names: dict[str, str]) -> list[dict[str, Any]]:
    call_id = str(msg.get("tool_call_id") or "")
    name = names.get(call_id) or names.get(decode_call_id(call_id)[0]) or msg.get("name")
    content = msg.get("content")
    text = _text_of(content)
    extras = [p for p in _user_parts(content) if "text" not in p]  # images returned by a tool
    if not name:
        # the call it answers was cut from the history (context condensing): keep it as text
        return [{"text": f"[result of tool call {decode_call_id(call_id)[0]}]\n{text}"}, *extras]
    try:
        parsed = loads(text) if text.lstrip().startswith("{") else None
    except ValueError:
        parsed = None
    # the docs: "output" holds the function's output; an object is taken as the output whole
    response = parsed if isinstance(parsed, dict) else {"output": text}
    return [{"functionResponse": {"name": name, "response": response}}, *extras]


def _append(contents: list[dict[str, Any]], role: str, parts: list[dict[str, Any]]) -> None:
    """Add a turn, merging into the previous one of the same role (parallel tool results → one turn)."""
    if not parts:
        return  # Gemini rejects a content without parts
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": parts})


def messages_to_contents(messages: Any, *, bypass: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """OpenAI messages → (systemInstruction parts, contents)."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id (as sent, and its base) → function name
    for msg in messages if isinstance(messages, list) else ():
        if not isinstance(msg, dict):
            continue
        role = msg.get("role")
        if role in ("system", "developer"):
            text = _text_of(msg.get("content"))
            if text:
                system.append({"text": text})
        elif role == "assistant":
            _append(contents, "model", _assistant_parts(msg, names, bypass))
        elif role == "tool":
            _append(contents, "user", _tool_result_parts(msg, names))
        else:
            _append(contents, "user", _user_parts(msg.get("content")))
    return system, contents


def _tools(tools: Any) -> list[dict[str, Any]]:
    decls = []
    for tool in tools if isinstance(tools, list) else ():
        fn = tool.get("function") if isinstance(tool, dict) and tool.get("type", "function") == "function" else None
        if not isinstance(fn, dict) or not fn.get("name"):
            continue
        decl: dict[str, Any] = {"name": fn["name"]}
        if fn.get("description"):
            decl["description"] = fn["description"]
        params = fn.get("parameters")
        if isinstance(params, dict) and params:
            decl["parametersJsonSchema"] = {k: v for k, v in params.items() if k != "$schema"}
        decls.append(decl)
    return [{"functionDeclarations": decls}] if decls else []


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice == "auto":
        mode: dict[str, Any] = {"mode": "AUTO"}
    elif choice == "none":
        mode = {"mode": "NONE"}
    elif choice == "required":
        mode = {"mode": "ANY"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict) and choice["function"].get("name"):
        mode = {"mode": "ANY", "allowedFunctionNames": [choice["function"]["name"]]}
    else:
        return None
    return {"functionCallingConfig": mode}


def _thinking_config(model: str, effort: Any) -> dict[str, Any] | None:
    if not isinstance(effort, str) or "gemini" not in model:
        return None  # Gemma and other families on this API do not think
    version = _major_version(model)
    if version == 2 and "2.5" in model:
        if effort == "none":
            # 2.5 Pro cannot stop thinking; 128 is its smallest budget
            return {"thinkingBudget": 128 if "pro" in model else 0}
        return {"thinkingBudget": _BUDGETS.get(effort, 8192), "includeThoughts": True}
    if version in (1, 2):
        return None  # no thinking before 2.5
    # Gemini 3 and later take levels; "none" cannot switch thinking off there, minimal is closest
    return {"thinkingLevel": _LEVELS.get(effort, "high"), "includeThoughts": effort != "none"}


def _generation_config(model: str, req: dict[str, Any]) -> dict[str, Any]:
    gen: dict[str, Any] = {}
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed"),
                         ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):
        if req.get(ours) is not None:
            gen[theirs] = req[ours]
    limit = requested_max_tokens(req)
    if limit:
        gen["maxOutputTokens"] = limit
    stop = req.get("stop")
    if stop:
        gen["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    fmt = req.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        gen["responseMimeType"] = "application/json"
        spec = fmt.get("json_schema")
        if isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
            gen["responseJsonSchema"] = {k: v for k, v in spec["schema"].items() if k != "$schema"}
    thinking = _thinking_config(model, req.get("reasoning_effort"))
    if thinking:
        gen["thinkingConfig"] = thinking
    return gen


# --- response: Gemini → OpenAI -------------------------------------------------------------


def usage_from_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """UsageMetadata → OpenAI usage. Thought tokens are billed as output, so they count as completion."""
    prompt = token_count(meta.get("promptTokenCount"))  # includes the cached part
    thoughts = token_count(meta.get("thoughtsTokenCount"))
    completion = token_count(meta.get("candidatesTokenCount")) + thoughts
    details: dict[str, Any] = {"cached_tokens": token_count(meta.get("cachedContentTokenCount"))}
    if meta.get("toolUsePromptTokenCount"):
        details["tool_use_prompt_tokens"] = token_count(meta["toolUsePromptTokenCount"])
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": details,
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


def finish_reason(reason: str | None, made_calls: bool) -> str:
    if made_calls:
        return "tool_calls"
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTERED:
        return "content_filter"
    return "stop"  # STOP, and failures such as MALFORMED_FUNCTION_CALL that leave no content


def _tool_call(part: dict[str, Any]) -> dict[str, Any]:
    fc = part["functionCall"]
    base = str(fc.get("id") or new_call_id())
    return tool_call(encode_call_id(base, part.get("thoughtSignature")), fc.get("name"), arguments_json(fc.get("args")))


def _load(body: bytes | str, provider: str) -> dict[str, Any]:
    parsed = load_object(body, provider, first_of_list=True)  # errors sometimes come wrapped in a list
    if isinstance(parsed.get("error"), dict):
        code = parsed["error"].get("code")
        status = code if isinstance(code, int) and 400 <= code < 600 else 502
        raise upstream_error(status, json.dumps(parsed).encode(), provider)
    return parsed


def _check_prompt_blocked(resp: dict[str, Any], provider: str) -> None:
    """A blocked prompt has no candidates; like Azure's prompt filter, that is a 400, not an empty answer."""
    feedback = resp.get("promptFeedback")
    if not resp.get("candidates") and isinstance(feedback, dict) and feedback.get("blockReason"):
        raise UpstreamError(
            f"{provider}: the prompt was blocked ({feedback['blockReason']})",
            status=400, type="invalid_request_error", code="content_filter",
        )


def _candidate(resp: dict[str, Any]) -> dict[str, Any]:
    cands = resp.get("candidates")
    return cands[0] if isinstance(cands, list) and cands and isinstance(cands[0], dict) else {}


def _parts(cand: dict[str, Any]) -> list[dict[str, Any]]:
    content = cand.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def completion_from_response(resp: dict[str, Any], model: str, provider: str) -> dict[str, Any]:
    """A whole GenerateContentResponse → ``chat.completion``."""
    _check_prompt_blocked(resp, provider)
    cand = _candidate(resp)
    text: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in _parts(cand):
        if isinstance(part.get("functionCall"), dict):
            calls.append(_tool_call(part))
        elif isinstance(part.get("text"), str):
            (thoughts if part.get("thought") else text).append(part["text"])
    meta = resp.get("usageMetadata")
    return chat_completion(
        upstream_id=resp.get("responseId"), model=resp.get("modelVersion") or model, content="".join(text),
        thoughts=thoughts, calls=calls, finish=finish_reason(cand.get("finishReason"), bool(calls)),
        usage=usage_from_metadata(meta) if isinstance(meta, dict) else None,
    )


@dataclass(slots=True)
class GeminiStream(StreamState):
    """Usage is cumulative in every event and the stream has no end marker, so it may go out again."""

    usage: dict[str, Any] | None = None  # latest cumulative usage, as OpenAI usage
    usage_sent_as: dict[str, Any] | None = None

    def usage_chunk(self) -> list[dict[str, Any]]:
        """A usage chunk whenever the usage differs from the one last sent (unlike the base: not once)."""
        if self.usage is None or self.usage == self.usage_sent_as:
            return []
        self.usage_sent_as = self.usage
        return [self.usage_only(self.usage)]


def stream_event(state: GeminiStream, data: str) -> list[dict[str, Any]]:
    """One SSE ``data:`` (a GenerateContentResponse) → canonical chunks.

    Usage metadata is cumulative in every event, and the stream has no end marker, so the usage
    chunk goes out with the finish chunk; a later event that changes usage sends a fresh one.
    """
    if not data.strip() or data == "[DONE]":
        return []
    resp = _load(data, state.provider)
    if not state.started and not state.finished:
        if resp.get("responseId"):
            state.id = completion_id(resp["responseId"])
        if resp.get("modelVersion"):
            state.model = str(resp["modelVersion"])
    _check_prompt_blocked(resp, state.provider)
    cand = _candidate(resp)
    out: list[dict[str, Any]] = []
    for part in _parts(cand):
        if isinstance(part.get("functionCall"), dict):
            out.append(state.chunk({"tool_calls": [{"index": state.calls, **_tool_call(part)}]}))
            state.calls += 1
        elif isinstance(part.get("text"), str) and part["text"]:
            key = "reasoning_content" if part.get("thought") else "content"
            out.append(state.chunk({key: part["text"]}))
    if isinstance(resp.get("usageMetadata"), dict):
        state.usage = usage_from_metadata(resp["usageMetadata"])
    if cand.get("finishReason") and not state.finished:
        state.finished = True
        out.append(state.chunk({}, finish_reason(cand["finishReason"], state.calls > 0)))
    if state.finished:
        out += state.usage_chunk()
    return out


def finish_stream(state: GeminiStream) -> list[dict[str, Any]]:
    """At upstream EOF, for a stream cut before its finishReason: a finish chunk and the usage so far."""
    if state.finished or not state.started:
        return []
    state.finished = True
    return [state.chunk({}, "tool_calls" if state.calls else "stop")] + state.usage_chunk()


class GeminiAdapter(BaseAdapter):
    """``{base_url}/models/{model}:generateContent`` with an ``x-goog-api-key`` header."""

    def url(self, target: Target, *, stream: bool) -> str:
        model = path_segment(target.model.removeprefix("models/"), target.provider.name)
        verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{target.provider.base_url}/models/{model}:{verb}"

    def contents_body(self, target: Target, req: dict[str, Any]) -> dict[str, Any]:
        """The generateContent body (no model, no stream flag): shared with Vertex AI."""
        system, contents = messages_to_contents(req.get("messages"), bypass=_validates_signatures(target.model))
        body: dict[str, Any] = {"contents": contents}
        if system:
            body["systemInstruction"] = {"parts": system}
        tools = _tools(req.get("tools"))
        if tools:
            body["tools"] = tools
            tool_config = _tool_config(req.get("tool_choice"))
            if tool_config:
                body["toolConfig"] = tool_config
        gen = _generation_config(target.model, req)
        if gen:
            body["generationConfig"] = gen
        return body

    def build_request(self, target: Target, req: dict[str, Any], *, stream: bool) -> UpstreamRequest:
        headers = {"Content-Type": "application/json", **target.provider.headers}
        if target.api_key:
            headers["x-goog-api-key"] = target.api_key
        body = json.dumps(self.contents_body(target, req), ensure_ascii=False).encode()
        return UpstreamRequest(self.url(target, stream=stream), headers, body)

    def parse_response(self, target: Target, body: bytes) -> dict[str, Any]:
        provider = target.provider.name
        return completion_from_response(_load(body, provider), target.model, provider)

    def new_stream(self, target: Target) -> GeminiStream:
        return GeminiStream(target.provider.name, target.model)

    def parse_event(self, state: GeminiStream, event: str | None, data: str) -> list[dict[str, Any]]:
        return stream_event(state, data)

    def finish_stream(self, state: GeminiStream) -> list[dict[str, Any]]:
        """At upstream EOF: the finish and usage a stream cut before its finishReason still owes."""
        return finish_stream(state)
