"""OpenAI Responses API in (Codex CLI, ``client.responses.create``), canonical chat out and back.

References (the wire format is taken from these; names checked against the ``openai`` SDK's
``openai/types/responses``, which clients parse our output with):
- https://platform.openai.com/docs/api-reference/responses/create — request body: ``instructions``,
  ``input`` items (messages with ``input_text``/``output_text``/``input_image``/``input_file`` parts,
  ``function_call``, ``function_call_output``, ``reasoning``), ``tools``, ``tool_choice``,
  ``text.format``, ``reasoning.effort``, ``max_output_tokens``, ``safety_identifier``
- https://platform.openai.com/docs/api-reference/responses/object — the Response object:
  ``status``, ``incomplete_details.reason``, ``output`` items, ``usage`` with its details
- https://platform.openai.com/docs/api-reference/responses-streaming — event names and payloads;
  every event carries ``sequence_number``; an item's events run ``output_item.added`` → part/
  delta/done events → ``output_item.done``
- https://platform.openai.com/docs/guides/function-calling?api-mode=responses — the tool loop: a
  ``function_call`` output item, then a ``function_call_output`` input item with its ``call_id``

``responses_to_chat`` builds the canonical request; ``chat_to_response`` and
``ChatToResponsesStream`` turn the canonical answer back. Whatever only OpenAI can serve (hosted
tools, namespaces, custom tools, stored file ids, encrypted reasoning) is dropped with a note:
a chat upstream would reject it or could not read it.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Final

from finopsd.errors import BadRequest
from finopsd.pricing import cache_reads, cache_writes
from finopsd.usage import token_count

Event = tuple[str, dict[str, Any]]

ROLES: Final = frozenset({"user", "assistant", "system", "developer"})
TOOL_CHOICES: Final = frozenset({"auto", "none", "required"})
IMAGE_DETAILS: Final = frozenset({"low", "high", "auto"})  # "original" has no chat equivalent
# read by responses_to_chat; every other field gets a note, except the bookkeeping below
HANDLED: Final = frozenset({
    "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "max_output_tokens",
    "temperature", "top_p", "reasoning", "text", "stream", "user", "safety_identifier",
})
# no chat meaning and no effect on the answer; the route handles store and previous_response_id
BOOKKEEPING: Final = frozenset({
    "store", "include", "prompt_cache_key", "prompt_cache_retention", "client_metadata", "metadata",
    "previous_response_id", "truncation", "service_tier", "stream_options",
})
INCOMPLETE: Final = {"length": "max_output_tokens", "content_filter": "content_filter"}


def _obj(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (wire data is checked, not trusted)."""
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def new_response_id() -> str:
    return "resp_" + secrets.token_hex(24)


def _item_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


# --- requests: Responses → canonical chat ---------------------------------------------------


def _image_part(part: dict[str, Any], notes: list[str]) -> dict[str, Any] | None:
    url = part.get("image_url")
    if not isinstance(url, str) or not url:
        notes.append("input_image given by file_id dropped: OpenAI file ids mean nothing to another provider")
        return None
    image: dict[str, Any] = {"url": url}
    if part.get("detail") in IMAGE_DETAILS:
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _file_part(part: dict[str, Any], notes: list[str]) -> dict[str, Any] | None:
    data = part.get("file_data")
    if not isinstance(data, str) or not data:
        notes.append("input_file given by file_id or file_url dropped: only inline file_data can be forwarded")
        return None
    file: dict[str, Any] = {"file_data": data}
    if isinstance(part.get("filename"), str):
        file["filename"] = part["filename"]
    return {"type": "file", "file": file}


def _parts(content: list[Any], where: str, notes: list[str]) -> list[dict[str, Any]]:
    """Responses content parts → chat content parts (text, image_url, file)."""
    out: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            raise BadRequest(f"{where}[{j}] must be an object", param=f"{where}[{j}]")
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            out.append({"type": "text", "text": part["text"]})
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            out.append({"type": "text", "text": part["refusal"]})
        elif kind == "input_image":
            image = _image_part(part, notes)
            if image:
                out.append(image)
        elif kind == "input_file":
            file = _file_part(part, notes)
            if file:
                out.append(file)
        else:
            notes.append(f"content part type {kind!r} dropped: no chat equivalent")
    return out


def _message(item: dict[str, Any], i: int, notes: list[str]) -> dict[str, Any] | None:
    role = item.get("role")
    if role not in ROLES:
        raise BadRequest(f"input[{i}].role must be one of {sorted(ROLES)}", param=f"input[{i}].role")
    # developer is OpenAI's newer name for system; many chat servers know only system
    chat_role = "system" if role == "developer" else role
    content = item.get("content")
    if isinstance(content, str):
        return {"role": chat_role, "content": content}
    if not isinstance(content, list):
        raise BadRequest(f"input[{i}].content must be a string or a list of parts", param=f"input[{i}].content")
    parts = _parts(content, f"input[{i}].content", notes)
    if chat_role != "user" and any(p["type"] != "text" for p in parts):
        notes.append(f"images and files in {role} messages dropped: chat takes them in user messages only")
        parts = [p for p in parts if p["type"] == "text"]
    if not parts:
        return None
    # text-only content goes as a string: some OpenAI-compatible servers take no part lists
    if all(p["type"] == "text" for p in parts):
        return {"role": chat_role, "content": "\n\n".join(p["text"] for p in parts)}
    return {"role": chat_role, "content": parts}


def _tool_call(item: dict[str, Any], i: int) -> dict[str, Any]:
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise BadRequest(f"input[{i}].call_id is required", param=f"input[{i}].call_id")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"input[{i}].name is required", param=f"input[{i}].name")
    args = item.get("arguments")
    if not isinstance(args, str):
        args = json.dumps(args if args is not None else {})
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def _tool_result(item: dict[str, Any], i: int, extra: list[dict[str, Any]], notes: list[str]) -> dict[str, Any]:
    """A function_call_output → a tool message; its images/files go to ``extra`` (tool messages take text)."""
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise BadRequest(f"input[{i}].call_id is required", param=f"input[{i}].call_id")
    output = item.get("output")
    if isinstance(output, str):
        text = output
    elif isinstance(output, list):
        parts = _parts(output, f"input[{i}].output", notes)
        text = "\n\n".join(p["text"] for p in parts if p["type"] == "text")
        extra.extend(p for p in parts if p["type"] != "text")
    else:
        text = "" if output is None else json.dumps(output)
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _messages(body: dict[str, Any], notes: list[str]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise BadRequest("instructions must be a string", param="instructions")
    if instructions:
        messages.append({"role": "system", "content": instructions})
    raw = body.get("input")
    if isinstance(raw, str):
        return messages + [{"role": "user", "content": raw}]
    if raw is None:
        return messages
    if not isinstance(raw, list):
        raise BadRequest("input must be a string or a list of items", param="input")
    extra: list[dict[str, Any]] = []  # tool-output images, sent after the run of tool messages

    def push(msg: dict[str, Any]) -> None:
        if extra and msg["role"] != "tool":  # a user message between tool results would break the call/result pairing
            messages.append({"role": "user", "content": extra.copy()})
            extra.clear()
        messages.append(msg)

    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise BadRequest(f"input[{i}] must be an object", param=f"input[{i}]")
        kind = item.get("type")
        if kind == "message" or (kind is None and "role" in item):  # EasyInputMessage may omit type
            msg = _message(item, i, notes)
            if msg:
                push(msg)
        elif kind == "function_call":
            call = _tool_call(item, i)
            last = messages[-1] if messages and not extra else None
            if last is not None and last["role"] == "assistant":
                # consecutive calls (and a call right after the assistant's text) are one chat turn
                last.setdefault("tool_calls", []).append(call)
            else:
                push({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            push(_tool_result(item, i, extra, notes))
        elif kind == "reasoning":
            notes.append("reasoning items dropped: encrypted or summarised reasoning cannot go to another provider")
        elif kind is None:
            raise BadRequest(f"input[{i}] has no type", param=f"input[{i}].type")
        else:
            notes.append(f"input item type {kind!r} dropped: no chat equivalent")
    if extra:
        messages.append({"role": "user", "content": extra})
    return messages


def _tools(tools: Any, notes: list[str]) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise BadRequest("tools must be a list", param="tools")
    out = []
    for j, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise BadRequest(f"tools[{j}] must be an object", param=f"tools[{j}]")
        kind = tool.get("type")
        if kind != "function":
            # hosted tools run at OpenAI only; namespace and custom tools have no chat form
            named = f" {tool['name']!r}" if isinstance(tool.get("name"), str) else ""
            notes.append(f"tool type {kind!r}{named} dropped: only function tools reach a chat upstream")
            continue
        spec = tool["function"] if isinstance(tool.get("function"), dict) else tool  # chat nesting tolerated
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"tools[{j}].name is required", param=f"tools[{j}].name")
        fn: dict[str, Any] = {"name": name}
        if isinstance(spec.get("description"), str):
            fn["description"] = spec["description"]
        if isinstance(spec.get("parameters"), dict):
            fn["parameters"] = spec["parameters"]
        if isinstance(spec.get("strict"), bool):
            fn["strict"] = spec["strict"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any, names: set[str], notes: list[str]) -> str | dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, str) and choice in TOOL_CHOICES:
        return choice
    if not isinstance(choice, dict):
        raise BadRequest("tool_choice must be auto, none, required or an object", param="tool_choice")
    kind = choice.get("type")
    if kind == "function" and choice.get("name") in names:
        return {"type": "function", "function": {"name": choice["name"]}}
    if kind == "allowed_tools" and choice.get("mode") in ("auto", "required"):
        notes.append("tool_choice allowed_tools became its mode: chat upstreams cannot narrow the tool list")
        return str(choice["mode"])
    notes.append(f"tool_choice {kind!r} dropped: it names a tool the upstream does not get")
    return None


def _response_format(text: Any, notes: list[str]) -> dict[str, Any] | None:
    if not isinstance(text, dict):
        return None
    if text.get("verbosity") is not None:
        notes.append("text.verbosity dropped: no chat equivalent outside OpenAI")
    fmt = _obj(text.get("format"))
    kind = fmt.get("type")
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise BadRequest("text.format.schema must be an object", param="text.format.schema")
        spec: dict[str, Any] = {"name": fmt.get("name") if isinstance(fmt.get("name"), str) else "response",
                                "schema": fmt["schema"]}
        for key, kind_ok in (("strict", bool), ("description", str)):
            if isinstance(fmt.get(key), kind_ok):
                spec[key] = fmt[key]
        return {"type": "json_schema", "json_schema": spec}
    if kind not in (None, "text"):
        notes.append(f"text.format {kind!r} dropped: no chat equivalent")
    return None


def responses_to_chat(body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A Responses request → the canonical chat request, plus notes on what was dropped."""
    notes: list[str] = []
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model is required", param="model")
    messages = _messages(body, notes)
    if not messages:
        raise BadRequest("input is required", param="input")
    req: dict[str, Any] = {"model": model, "messages": messages}
    tools = _tools(body.get("tools"), notes)
    if tools:
        req["tools"] = tools
        choice = _tool_choice(body.get("tool_choice"), {t["function"]["name"] for t in tools}, notes)
        if choice is not None:
            req["tool_choice"] = choice
        if isinstance(body.get("parallel_tool_calls"), bool):
            req["parallel_tool_calls"] = body["parallel_tool_calls"]
    max_tokens = body.get("max_output_tokens")
    if max_tokens is not None:
        if _int(max_tokens) <= 0:
            raise BadRequest("max_output_tokens must be a positive integer", param="max_output_tokens")
        req["max_tokens"] = max_tokens
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            if not _is_number(body[key]):
                raise BadRequest(f"{key} must be a number", param=key)
            req[key] = body[key]
    effort = _obj(body.get("reasoning")).get("effort")
    if isinstance(effort, str):
        req["reasoning_effort"] = effort
    fmt = _response_format(body.get("text"), notes)
    if fmt:
        req["response_format"] = fmt
    user = body.get("safety_identifier") or body.get("user")
    if isinstance(user, str) and user:
        req["user"] = user
    if body.get("stream"):
        req["stream"] = True
        # response.completed carries the token counts, so always ask for the usage chunk
        req["stream_options"] = {"include_usage": True}
    for key, value in body.items():
        if value is not None and key not in HANDLED and key not in BOOKKEEPING:
            notes.append(f"{key} dropped: no chat equivalent")
    return req, list(dict.fromkeys(notes))


# --- answers: chat.completion and chunks → Response and events ------------------------------


def usage_to_responses(usage: Any) -> dict[str, Any] | None:
    """Chat usage → Responses usage (input_tokens include cached ones, as prompt_tokens do)."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = token_count(usage.get("prompt_tokens")), token_count(usage.get("completion_tokens"))
    return {
        "input_tokens": prompt,
        # under any provider's names (DeepSeek's prompt_cache_hit_tokens, OpenRouter's cache_write_tokens…)
        "input_tokens_details": {"cached_tokens": cache_reads(usage), "cache_write_tokens": cache_writes(usage)},
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": token_count(_obj(usage.get("completion_tokens_details")).get("reasoning_tokens")),
        },
        "total_tokens": token_count(usage.get("total_tokens")) or prompt + completion,
    }


def _status(finish: Any) -> tuple[str, dict[str, Any] | None]:
    """finish_reason → the response status and its incomplete_details."""
    reason = INCOMPLETE.get(finish) if isinstance(finish, str) else None
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def _envelope(response_id: str, model: str, created_at: float, request: dict[str, Any],
              status: str) -> dict[str, Any]:
    """The Response object around ``output``, echoing the request fields it carries."""
    def pick(key: str, types: Any, default: Any = None) -> Any:
        value = request.get(key)
        if isinstance(value, bool) != (types is bool):  # JSON true is no number, 1 is no boolean
            return default
        return value if isinstance(value, types) else default

    return {
        "id": response_id, "object": "response", "created_at": created_at, "status": status,
        "background": False, "completed_at": None, "error": None, "incomplete_details": None,
        "instructions": pick("instructions", str), "max_output_tokens": pick("max_output_tokens", int),
        "max_tool_calls": pick("max_tool_calls", int), "metadata": pick("metadata", dict, {}),
        "model": model, "output": [], "parallel_tool_calls": pick("parallel_tool_calls", bool, True),
        "previous_response_id": pick("previous_response_id", str),
        "prompt_cache_key": pick("prompt_cache_key", str),
        "reasoning": pick("reasoning", dict, {"effort": None, "summary": None}),
        "safety_identifier": pick("safety_identifier", str), "store": pick("store", bool, True),
        "temperature": pick("temperature", (int, float)), "text": pick("text", dict, {"format": {"type": "text"}}),
        "tool_choice": pick("tool_choice", (str, dict), "auto"), "tools": pick("tools", list, []),
        "top_logprobs": pick("top_logprobs", int), "top_p": pick("top_p", (int, float)),
        "truncation": request.get("truncation") if request.get("truncation") in ("auto", "disabled") else "disabled",
        "usage": None, "user": pick("user", str),
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _summary(text: str) -> dict[str, Any]:
    return {"type": "summary_text", "text": text}


def _call_item(call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {"id": _item_id("fc"), "type": "function_call", "status": status, "arguments": arguments,
            "call_id": call_id, "name": name}


def chat_to_response(completion: dict[str, Any], *, response_id: str, model: str, created_at: float,
                     request: dict[str, Any]) -> dict[str, Any]:
    """A ``chat.completion`` → a Response object."""
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = _obj(choice.get("message"))
    status, details = _status(choice.get("finish_reason"))
    item_status = "completed" if status == "completed" else "incomplete"
    output: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        output.append({"id": _item_id("rs"), "type": "reasoning", "summary": [_summary(reasoning)]})
    content = message.get("content")
    text = content if isinstance(content, str) else "".join(
        p.get("text", "") for p in content or () if isinstance(p, dict) and p.get("type") == "text")
    parts = [_text_part(text)] if text else []
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    if parts:
        output.append({"id": _item_id("msg"), "type": "message", "role": "assistant", "status": item_status,
                       "content": parts})
    for call in message.get("tool_calls") or ():
        if isinstance(call, dict):
            fn = _obj(call.get("function"))
            args = fn.get("arguments")
            output.append(_call_item(str(call.get("id") or _item_id("call")), str(fn.get("name") or ""),
                                     args if isinstance(args, str) else json.dumps(args or {}), item_status))
    response = _envelope(response_id, model, created_at, request, status)
    response.update(output=output, incomplete_details=details, usage=usage_to_responses(completion.get("usage")),
                    completed_at=int(time.time()) if status == "completed" else None)
    return response


class ChatToResponsesStream:
    """Canonical chunks in, Responses stream events out, in the order the streaming docs give.

    A message or reasoning item stays open while its kind keeps coming; anything else closes it.
    Tool calls stay open together until something else starts, so fragments that an upstream
    interleaves between calls still land; a fragment for a call closed by later text cannot be
    sent any more and is dropped (chat upstreams send calls last, so this does not happen in
    practice). Items get ``output_index`` in order of appearance.
    """

    __slots__ = ("_id", "_model", "_created_at", "_request", "_seq", "_items", "_frags", "_open", "_calls",
                 "_finish", "_usage", "_started", "_done", "_response")

    def __init__(self, *, response_id: str, model: str, created_at: float, request: dict[str, Any]) -> None:
        self._id, self._model, self._created_at, self._request = response_id, model, created_at, request
        self._seq = 0
        self._items: list[dict[str, Any]] = []  # by output_index; final forms once closed
        self._frags: list[list[str]] = []  # text, summary or arguments fragments per item
        self._open: list[int] = []  # output indexes of open items
        self._calls: dict[Any, int] = {}  # chat tool-call index → output_index
        self._finish: Any = None
        self._usage: Any = None
        self._started = False
        self._done = False
        self._response: dict[str, Any] | None = None

    @property
    def response(self) -> dict[str, Any]:
        """The final response once finished or failed, else a snapshot in progress."""
        return self._response or self._snapshot("in_progress")

    def _snapshot(self, status: str) -> dict[str, Any]:
        """The response so far; items still open show their text so far (incomplete when failed)."""
        response = _envelope(self._id, self._model, self._created_at, self._request, status)
        open_status = "incomplete" if status == "failed" else "in_progress"
        response["output"] = [self._final(i, open_status) if i in self._open else self._items[i]
                              for i in range(len(self._items))]
        return response

    def _event(self, kind: str, **fields: Any) -> Event:
        data = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return (kind, data)

    def start(self) -> list[Event]:
        """``response.created`` and ``response.in_progress`` (once; later calls return nothing)."""
        if self._started:
            return []
        self._started = True
        return [self._event("response.created", response=self._snapshot("in_progress")),
                self._event("response.in_progress", response=self._snapshot("in_progress"))]

    def _add(self, item: dict[str, Any]) -> list[Event]:
        index = len(self._items)
        self._items.append(item)
        self._frags.append([])
        self._open.append(index)
        out = [self._event("response.output_item.added", output_index=index, item=dict(item))]
        if item["type"] == "message":
            out.append(self._event("response.content_part.added", item_id=item["id"], output_index=index,
                                   content_index=0, part=_text_part("")))
        elif item["type"] == "reasoning":
            out.append(self._event("response.reasoning_summary_part.added", item_id=item["id"],
                                   output_index=index, summary_index=0, part=_summary("")))
        return out

    def _final(self, index: int, status: str) -> dict[str, Any]:
        item, text = self._items[index], "".join(self._frags[index])
        if item["type"] == "message":
            return {**item, "status": status, "content": [_text_part(text)]}
        if item["type"] == "reasoning":
            return {**item, "summary": [_summary(text)]}
        return {**item, "status": status, "arguments": text}

    def _close(self, status: str = "completed") -> list[Event]:
        out: list[Event] = []
        for index in self._open:
            item = self._items[index] = self._final(index, status)
            ids = {"item_id": item["id"], "output_index": index}
            if item["type"] == "message":
                part = item["content"][0]
                out.append(self._event("response.output_text.done", **ids, content_index=0, text=part["text"],
                                       logprobs=[]))
                out.append(self._event("response.content_part.done", **ids, content_index=0, part=part))
            elif item["type"] == "reasoning":
                part = item["summary"][0]
                out.append(self._event("response.reasoning_summary_text.done", **ids, summary_index=0,
                                       text=part["text"]))
                out.append(self._event("response.reasoning_summary_part.done", **ids, summary_index=0, part=part))
            else:
                # name is newer than the SDK's model of this event; some typed clients require it
                out.append(self._event("response.function_call_arguments.done", **ids, name=item["name"],
                                       arguments=item["arguments"]))
            out.append(self._event("response.output_item.done", output_index=index, item=item))
        self._open.clear()
        return out

    def _text(self, kind: str, text: str) -> list[Event]:
        out: list[Event] = []
        if not (len(self._open) == 1 and self._items[self._open[0]]["type"] == kind):
            out = self._close()
            item: dict[str, Any] = (
                {"id": _item_id("msg"), "type": "message", "role": "assistant", "status": "in_progress",
                 "content": []} if kind == "message" else {"id": _item_id("rs"), "type": "reasoning", "summary": []})
            out += self._add(item)
        index = self._open[0]
        self._frags[index].append(text)
        ids = {"item_id": self._items[index]["id"], "output_index": index}
        if kind == "message":
            out.append(self._event("response.output_text.delta", **ids, content_index=0, delta=text, logprobs=[]))
        else:
            out.append(self._event("response.reasoning_summary_text.delta", **ids, summary_index=0, delta=text))
        return out

    def _tool_call(self, call: dict[str, Any], pos: int) -> list[Event]:
        key = call.get("index", pos)
        fn = _obj(call.get("function"))
        out: list[Event] = []
        index = self._calls.get(key)
        if index is None:
            if self._open and self._items[self._open[0]]["type"] != "function_call":
                out = self._close()
            call_id = call.get("id") if isinstance(call.get("id"), str) and call["id"] else _item_id("call")
            out += self._add(_call_item(call_id, str(fn.get("name") or ""), "", "in_progress"))
            index = self._calls[key] = self._open[-1]
        elif index not in self._open:
            return []  # its item is closed (see the class docstring)
        elif fn.get("name") and not self._items[index]["name"]:
            self._items[index]["name"] = str(fn["name"])  # a late name still reaches output_item.done
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            self._frags[index].append(args)
            out.append(self._event("response.function_call_arguments.delta", item_id=self._items[index]["id"],
                                   output_index=index, delta=args))
        return out

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        """One canonical chunk → the events it adds (the start events come with the first)."""
        if self._done:
            return []
        out = self.start()
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        delta = _obj(choice.get("delta"))
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            out += self._text("reasoning", reasoning)
        if isinstance(delta.get("content"), str) and delta["content"]:
            out += self._text("message", delta["content"])
        for pos, call in enumerate(delta.get("tool_calls") or ()):
            if isinstance(call, dict):
                out += self._tool_call(call, pos)
        if choice.get("finish_reason"):
            # close items now, not at finish(): Codex runs a tool once its output_item.done arrives
            self._finish = choice["finish_reason"]
            out += self._close("completed" if _status(self._finish)[0] == "completed" else "incomplete")
        return out

    def finish(self) -> list[Event]:
        """Close open items, then ``response.completed`` or ``response.incomplete`` (once)."""
        if self._done:
            return []
        status, details = _status(self._finish)
        out = self.start() + self._close("completed" if status == "completed" else "incomplete")
        self._done = True
        response = self._snapshot(status)
        response.update(incomplete_details=details, usage=usage_to_responses(self._usage),
                        completed_at=int(time.time()) if status == "completed" else None)
        self._response = response
        out.append(self._event(f"response.{status}", response=response))
        return out

    def fail(self, message: str, code: str | None) -> list[Event]:
        """``response.failed`` with the error; open items end as incomplete in its output (once)."""
        if self._done:
            return []
        out = self.start()
        self._done = True
        response = self._snapshot("failed")
        # the code is passed on as given: Codex keys retries on codes such as rate_limit_exceeded
        response.update(error={"code": code or "server_error", "message": message},
                        usage=usage_to_responses(self._usage))
        self._response = response
        out.append(self._event("response.failed", response=response))
        return out
