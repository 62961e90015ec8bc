"""Gemini API requests in (Gemini CLI, google-genai, @google/genai), OpenAI chat out.

References (the wire format is taken from these):
- https://ai.google.dev/api/generate-content — GenerateContentRequest, GenerationConfig,
  ThinkingConfig, ``streamGenerateContent``
- https://ai.google.dev/api/caching#Content — Content, Part (text, inlineData, fileData,
  functionCall, functionResponse, thought), Tool, FunctionDeclaration, ToolConfig
- https://ai.google.dev/api/caching#Schema — the OpenAPI-subset Schema (``type: OBJECT``, ``nullable``)
- https://ai.google.dev/gemini-api/docs/function-calling — parallel calls, ``id`` echoed in the
  ``functionResponse``
- https://ai.google.dev/api/tokens — ``countTokens``

``genai_to_chat`` builds the canonical request for providers that do not speak the Gemini API.
Function calls without an ``id`` (the Gemini API mostly sends none) get one from their position in
the history, so the same history gives the same ids every turn; each ``functionResponse`` is
matched to a call of the turn before by ``id``, else by name, in order. Built-in tools
(``googleSearch``, ``codeExecution``, ``urlContext``…), ``cachedContent``, ``safetySettings``
and thought signatures only mean something at Google: they are dropped, with a note on the log row.
"""

from __future__ import annotations

import json
import re
from collections import deque
from functools import lru_cache
from typing import Any, Final

from finopsd.errors import BadRequest
from finopsd.providers.canonical import as_object, assistant_message, is_number, tool_call

OPENAI_MAX_STOPS: Final = 4
MAX_NOTES: Final = 20  # notes on one log row, each naming at most a short piece of the client's input
MAX_FIELD_CHARS: Final = 64
MAX_SCHEMA_DEPTH: Final = 64
# generationConfig.thinkingConfig.thinkingBudget → reasoning effort (Gemini 2.5 budgets)
LOW_BUDGET: Final = 1024
MEDIUM_BUDGET: Final = 8192
LEVELS: Final = {"minimal": "minimal", "low": "low", "medium": "medium", "high": "high"}


@lru_cache(maxsize=256)
def snake(name: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group(0).lower(), name)


def camel(name: str) -> str:
    """``mime_type`` → ``mimeType``; names with no ``_`` (or too long to be a field name) stay as they are."""
    if "_" not in name or len(name) > MAX_FIELD_CHARS:
        return name
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def pick(obj: Any, name: str) -> Any:
    """A field by its JSON name (``mimeType``) or its proto name (``mime_type``): the API takes both,
    and google-genai sends some fields one way, some the other."""
    if not isinstance(obj, dict):
        return None
    value = obj.get(name)
    return value if value is not None else obj.get(snake(name))


# --- schemas: the OpenAPI subset → JSON Schema ---------------------------------------------


def json_schema(schema: Any, depth: int = 0) -> Any:
    """A Gemini ``Schema`` (``type: OBJECT``, ``nullable``, ``propertyOrdering``) → JSON Schema."""
    if depth > MAX_SCHEMA_DEPTH:
        raise BadRequest(f"schema nested deeper than {MAX_SCHEMA_DEPTH} levels", code="schema_too_deep")
    if isinstance(schema, list):
        return [json_schema(s, depth + 1) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        key = camel(key)  # keywords only: property names under "properties" stay as they are
        if key in ("propertyOrdering", "nullable"):
            continue
        if key == "type" and isinstance(value, str):
            out["type"] = value.lower()
        elif key == "properties" and isinstance(value, dict):
            out["properties"] = {name: json_schema(v, depth + 1) for name, v in value.items()}
        elif key in ("items", "anyOf", "oneOf", "allOf", "not", "additionalProperties"):
            out[key] = json_schema(value, depth + 1)
        else:
            out[key] = value
    if pick(schema, "nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


# --- contents → messages -------------------------------------------------------------------


def _text(content: Any) -> str:
    """The text of a Content (or a bare string, or a list of parts): non-thought text parts joined."""
    if isinstance(content, str):
        return content
    parts = content.get("parts") if isinstance(content, dict) else content
    texts = [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)
             and not p.get("thought")] if isinstance(parts, list) else []
    return "\n\n".join(t for t in texts if t)


def _media(blob: dict[str, Any], inline: bool, notes: list[str]) -> dict[str, Any] | None:
    """inlineData / fileData → a chat content part (images, PDFs and audio have one)."""
    mime = str(pick(blob, "mimeType") or "")
    if inline:
        data = blob.get("data")
        if not isinstance(data, str):
            return None
        if mime.startswith("audio/"):
            return {"type": "input_audio", "input_audio": {"data": data, "format": mime.removeprefix("audio/")}}
        url = f"data:{mime or 'application/octet-stream'};base64,{data}"
        if mime == "application/pdf":
            return {"type": "file", "file": {"file_data": url}}
    else:
        url = pick(blob, "fileUri")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            notes.append("fileData part dropped: only Google can read its file URIs")
            return None
    if mime and not mime.startswith("image/"):
        notes.append(f"{mime[:MAX_FIELD_CHARS]} part dropped: no chat equivalent")
        return None
    return {"type": "image_url", "image_url": {"url": url}}


def _user_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    # text-only content goes as a string: some OpenAI-compatible servers take no part lists
    if all(p["type"] == "text" for p in parts):
        return "\n\n".join(p["text"] for p in parts)
    return parts


def _result_text(response: Any) -> str:
    """A functionResponse's ``response`` → tool message text: ``output`` as is when that is all."""
    if isinstance(response, dict) and len(response) == 1:
        (key, value), = response.items()
        if key in ("output", "result", "content") and isinstance(value, str):
            return value
        if key == "error" and isinstance(value, str):
            return f"Error: {value}"
    return json.dumps(response, ensure_ascii=False)


class _Calls:
    """Ids for the calls of the last model turn, and their matching to the function responses after it.

    Matching is by ``id``, else the first unanswered call of that name, else the first unanswered
    call; indexes keep it linear however many calls a (hostile) turn holds.
    """

    def __init__(self) -> None:
        self.count = 0
        self.pending: dict[str, str] = {}  # id → name of the last model turn's unanswered calls, in order
        self.by_name: dict[str, deque[str]] = {}

    def reset(self) -> None:
        self.pending, self.by_name = {}, {}

    def new(self, call: dict[str, Any]) -> str:
        self.count += 1
        call_id = str(call.get("id") or f"call_genai_{self.count}")
        if call_id in self.pending:  # a repeated id would answer two calls: make it unique
            call_id = f"{call_id}_{self.count}"
        name = str(call.get("name") or "")
        self.pending[call_id] = name
        self.by_name.setdefault(name, deque()).append(call_id)
        return call_id

    def match(self, response: dict[str, Any]) -> str | None:
        wanted = response.get("id")
        if isinstance(wanted, str) and wanted in self.pending:
            del self.pending[wanted]
            return wanted
        queue = self.by_name.get(str(response.get("name") or ""))
        while queue:
            call_id = queue.popleft()
            if self.pending.pop(call_id, None) is not None:
                return call_id
        if self.pending:
            call_id = next(iter(self.pending))
            del self.pending[call_id]
            return call_id
        return None


def _model_message(parts: list[Any], calls: _Calls) -> dict[str, Any]:
    texts: list[str] = []
    thoughts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    calls.reset()
    for part in parts:
        if not isinstance(part, dict):
            continue
        fc = pick(part, "functionCall")
        if isinstance(fc, dict):
            args = fc.get("args") if isinstance(fc.get("args"), dict) else {}
            tool_calls.append(tool_call(calls.new(fc), fc.get("name"), json.dumps(args, ensure_ascii=False)))
        elif isinstance(part.get("text"), str) and part["text"]:
            (thoughts if part.get("thought") else texts).append(part["text"])
    return assistant_message("".join(texts), tool_calls, thoughts)


def _user_messages(parts: list[Any], calls: _Calls, notes: list[str]) -> list[dict[str, Any]]:
    """One user turn → tool messages first (they must follow the assistant's calls), then the rest."""
    tools: list[dict[str, Any]] = []
    content: list[dict[str, Any]] = []
    for part in parts:
        if not isinstance(part, dict):
            continue
        fr = pick(part, "functionResponse")
        if isinstance(fr, dict):
            text = _result_text(fr.get("response"))
            call_id = calls.match(fr)
            if call_id is None:  # its call was cut from the history (compression): keep it as text
                content.append({"type": "text", "text": f"[result of {fr.get('name') or 'a tool call'}]\n{text}"})
            else:
                tools.append({"role": "tool", "tool_call_id": call_id, "content": text})
            for inner in as_list(fr.get("parts")):  # multimodal function responses (images a tool returned)
                if isinstance(pick(inner, "inlineData"), dict):
                    media = _media(pick(inner, "inlineData"), True, notes)
                    if media:
                        content.append(media)
        elif isinstance(part.get("text"), str):
            if part["text"] and not part.get("thought"):
                content.append({"type": "text", "text": part["text"]})
        elif isinstance(pick(part, "inlineData"), dict) or isinstance(pick(part, "fileData"), dict):
            inline = isinstance(pick(part, "inlineData"), dict)
            media = _media(pick(part, "inlineData" if inline else "fileData"), inline, notes)
            if media:
                content.append(media)
        else:
            kinds = ", ".join(camel(k)[:MAX_FIELD_CHARS] for k in part if camel(k) != "thoughtSignature") or "empty"
            notes.append(f"user part ({kinds}) dropped: no chat equivalent")
    calls.reset()
    return tools + ([{"role": "user", "content": _user_content(content)}] if content else [])


def _messages(body: dict[str, Any], notes: list[str]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    system = _text(pick(body, "systemInstruction"))
    if system:
        messages.append({"role": "system", "content": system})
    calls = _Calls()
    contents = body.get("contents")
    for content in [contents] if isinstance(contents, str) else contents if isinstance(contents, list) else ():
        if isinstance(content, str):  # REST accepts a bare string where a Content is expected
            messages.append({"role": "user", "content": content})
            continue
        content = as_object(content)
        parts = content.get("parts") if isinstance(content.get("parts"), list) else []
        if content.get("role") == "model":
            messages.append(_model_message(parts, calls))
        else:
            messages.extend(_user_messages(parts, calls, notes))
    return messages


# --- tools and configuration -------------------------------------------------------------------


def _tools(tools: Any, notes: list[str]) -> list[dict[str, Any]]:
    out = []
    for tool in tools if isinstance(tools, list) else ():
        if not isinstance(tool, dict):
            continue
        for kind in map(camel, tool):
            if kind != "functionDeclarations":
                notes.append(f"built-in tool {kind[:MAX_FIELD_CHARS]} dropped: only Gemini runs it")
        for decl in as_list(pick(tool, "functionDeclarations")):
            if not isinstance(decl, dict) or not isinstance(decl.get("name"), str):
                continue
            fn: dict[str, Any] = {"name": decl["name"]}
            if isinstance(decl.get("description"), str):
                fn["description"] = decl["description"]
            schema = pick(decl, "parametersJsonSchema")
            if not isinstance(schema, dict):
                params = decl.get("parameters")
                schema = json_schema(params) if isinstance(params, dict) else None
            fn["parameters"] = schema or {"type": "object", "properties": {}}
            out.append({"type": "function", "function": fn})
    return out


def _tool_choice(config: Any, req: dict[str, Any]) -> None:
    fcc = as_object(pick(config, "functionCallingConfig"))
    mode = str(fcc.get("mode") or "").upper()
    allowed = [n for n in as_list(pick(fcc, "allowedFunctionNames")) if isinstance(n, str)]
    if mode == "NONE":
        req["tool_choice"] = "none"
    elif mode == "ANY" and len(allowed) == 1:
        req["tool_choice"] = {"type": "function", "function": {"name": allowed[0]}}
    elif mode == "ANY":
        req["tool_choice"] = "required"
    elif mode in ("AUTO", "VALIDATED"):
        req["tool_choice"] = "auto"


def reasoning_effort(thinking: Any) -> str | None:
    """``thinkingConfig`` → reasoning effort: ``thinkingLevel`` as is, ``thinkingBudget`` by size."""
    thinking = as_object(thinking)
    level = pick(thinking, "thinkingLevel")
    if isinstance(level, str) and level.lower() in LEVELS:
        return LEVELS[level.lower()]
    budget = pick(thinking, "thinkingBudget")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget == 0:
        return None  # no budget given, or thinking switched off
    if budget < 0:
        return "medium"  # -1: dynamic thinking, the model decides
    return "low" if budget <= LOW_BUDGET else "medium" if budget <= MEDIUM_BUDGET else "high"


def _generation(gen: dict[str, Any], req: dict[str, Any]) -> None:
    for theirs, ours in (("temperature", "temperature"), ("topP", "top_p"), ("seed", "seed"),
                         ("presencePenalty", "presence_penalty"), ("frequencyPenalty", "frequency_penalty")):
        if is_number(pick(gen, theirs)):
            req[ours] = pick(gen, theirs)
    limit = pick(gen, "maxOutputTokens")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        req["max_tokens"] = limit
    stops = [s for s in as_list(pick(gen, "stopSequences")) if isinstance(s, str) and s]
    if stops:
        req["stop"] = stops[:OPENAI_MAX_STOPS]
    schema = pick(gen, "responseJsonSchema")
    if not isinstance(schema, dict) and isinstance(pick(gen, "responseSchema"), dict):
        schema = json_schema(pick(gen, "responseSchema"))
    if isinstance(schema, dict):
        req["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    elif pick(gen, "responseMimeType") == "application/json":
        req["response_format"] = {"type": "json_object"}
    effort = reasoning_effort(pick(gen, "thinkingConfig"))
    if effort:
        req["reasoning_effort"] = effort


def include_thoughts(body: dict[str, Any]) -> bool:
    """Whether the client asked to see thoughts (Gemini returns none otherwise)."""
    return pick(pick(pick(body, "generationConfig"), "thinkingConfig"), "includeThoughts") is True


def genai_to_chat(body: dict[str, Any], *, stream: bool) -> tuple[dict[str, Any], list[str]]:
    """A GenerateContentRequest → (the canonical chat request without ``model``, notes on what was dropped)."""
    notes: list[str] = []
    req: dict[str, Any] = {"messages": _messages(body, notes)}
    tools = _tools(body.get("tools"), notes)
    if tools:
        req["tools"] = tools
        _tool_choice(pick(body, "toolConfig"), req)
    _generation(as_object(pick(body, "generationConfig")), req)
    for field in ("cachedContent", "safetySettings"):
        if pick(body, field):
            notes.append(f"{field} dropped: it means something to Gemini only")
    if stream:
        req["stream"] = True
        req["stream_options"] = {"include_usage": True}  # the last event carries usageMetadata
    return req, list(dict.fromkeys(notes))[:MAX_NOTES]


def estimate_tokens(body: dict[str, Any]) -> int:
    """countTokens for providers that have no such call: about four characters a token."""
    text = json.dumps([pick(body, "systemInstruction"), body.get("contents"), body.get("tools")],
                      ensure_ascii=False)
    return max(1, len(text) // 4)
