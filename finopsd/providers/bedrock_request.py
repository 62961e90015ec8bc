"""Amazon Bedrock Converse API, request side: a canonical chat request → a Converse body.

The references are in ``finopsd.providers.bedrock``'s docstring; this module holds the
translation that makes the body, the adapter the call (URL, signing) and the answer.

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
from typing import Any, Final

from finopsd.errors import BadRequest
from finopsd.providers.anthropic_request import THINKING_BUDGETS
from finopsd.providers.canonical import (
    as_object,
    data_url_parts,
    is_number,
    parse_arguments,
    requested_max_tokens,
    requested_stops,
    trim_prefill,
)

IMAGE_FORMATS: Final = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg",
                        "image/gif": "gif", "image/webp": "webp"}
MAX_CACHE_POINTS: Final = 4  # Bedrock's limit per request, as Anthropic's
DEFAULT_ANSWER_ROOM: Final = 8192  # output room kept above a thinking budget
_EFFORTS: Final = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "high"}
_BAD_ID_CHARS: Final = re.compile(r"[^a-zA-Z0-9_.:-]")  # ToolUseId pattern in the service model
_CLAUDE: Final = re.compile(r"claude-(?:(3-7)|([a-z]+)-(\d+)(?:-(\d{1,2}))?(?!\d))")
CACHE_POINT: Final = {"cachePoint": {"type": "default"}}


# --- messages: OpenAI chat → Converse system and messages ---------------------------------


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
                fn = as_object(call.get("function"))
                blocks.append({"toolUse": {"toolUseId": _tool_use_id(call.get("id")),
                                           "name": str(fn.get("name") or ""),
                                           "input": parse_arguments(fn.get("arguments"))}})
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
        trim_prefill(out)
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


# --- tools, thinking and the whole body -----------------------------------------------------


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
        fn = as_object(tool.get("function")) if isinstance(tool, dict) else {}
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
    elif isinstance(choice, dict) and isinstance(as_object(choice.get("function")).get("name"), str):
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
    choice = as_object(body.get("toolConfig")).get("toolChoice")
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


def converse_body(model: str, req: dict[str, Any]) -> dict[str, Any]:
    """The Converse (and ConverseStream) body for a canonical chat request; the model is in the URL."""
    system, messages = _Builder().messages(req.get("messages"))
    body: dict[str, Any] = {"messages": messages}
    if system:
        body["system"] = system
    inference: dict[str, Any] = {}
    limit = requested_max_tokens(req)
    if limit is not None:
        inference["maxTokens"] = limit
    if is_number(req.get("temperature")):
        inference["temperature"] = req["temperature"]
    if is_number(req.get("top_p")):
        inference["topP"] = req["top_p"]
    stops = requested_stops(req)
    if stops:
        inference["stopSequences"] = stops
    if inference:
        body["inferenceConfig"] = inference
    tools = tool_config(req, messages)
    if tools:
        body["toolConfig"] = tools
    fmt = as_object(req.get("response_format"))
    spec = as_object(fmt.get("json_schema")) if fmt.get("type") == "json_schema" else {}
    if isinstance(spec.get("schema"), dict):
        schema: dict[str, Any] = {"schema": json.dumps(spec["schema"])}  # a JSON string, per the model
        if isinstance(spec.get("name"), str):
            schema["name"] = spec["name"]
        body["outputConfig"] = {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": schema}}}
    _apply_thinking(body, model, req.get("reasoning_effort"))
    return body
