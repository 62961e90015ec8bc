"""Repairs a canonical chunk stream into the shape agent clients depend on.

Every upstream stream passes through ``StreamNormaliser.fix``, which also
feeds the transcript. It changes only what breaks real clients (CLIENTS.md):
the role on the first chunk; ``index``, ``id``, ``type`` and ``name`` on the
first delta of each tool call; our own 0, 1, 2… counter for parallel calls; a
repeated whole tool call at the end (Cline concatenates it); ``finish_reason``
``tool_calls`` when calls were made; the usage chunk only when asked for.
"""

from __future__ import annotations

import secrets
from typing import Any

from finopsd.exchange import ToolCall, Transcript


def new_tool_call_id() -> str:
    return "call_" + secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")


class StreamNormaliser:
    __slots__ = ("transcript", "include_usage", "_role_sent", "_calls", "_ids", "_usage_sent")

    def __init__(self, transcript: Transcript, *, include_usage: bool) -> None:
        self.transcript = transcript
        self.include_usage = include_usage
        self._role_sent = False
        self._usage_sent = False
        self._calls: dict[Any, ToolCall] = {}  # upstream index (or id) → call
        self._ids: dict[Any, int] = {}  # upstream index → our index

    def fix(self, chunk: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
        """Return the chunk to send (None: drop it) and whether it differs from the input.

        ``model`` is left alone: the relay rewrites it (by bytes when nothing else changed).
        """
        changed = False
        usage = chunk.get("usage")
        if usage:
            self.transcript.set_usage(usage)
            if not self.include_usage:
                del chunk["usage"]
                changed = True
        choices = chunk.get("choices")
        if not choices:
            if usage and self.include_usage and not self._usage_sent:
                self._usage_sent = True
                if choices is None:
                    chunk["choices"] = []
                    changed = True
                return chunk, changed
            return None, True
        choice = choices[0]
        delta = choice.get("delta")
        if delta is None:
            delta = choice["delta"] = {}
            changed = True
        if not self._role_sent:
            self._role_sent = True
            if delta.get("role") != "assistant":
                delta["role"] = "assistant"
                changed = True
        content = delta.get("content")
        if isinstance(content, str) and content:  # Mistral's reasoning models may send a list of parts
            self.transcript.content.append(content)
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            self.transcript.reasoning.append(reasoning)
        calls = delta.get("tool_calls")
        if calls:
            kept = []
            for pos, call in enumerate(calls):
                verdict = self._fix_call(call, pos)
                if verdict is not None:
                    kept.append(call)
                changed = changed or verdict is not False
            if len(kept) != len(calls):
                if kept:
                    delta["tool_calls"] = kept
                else:
                    del delta["tool_calls"]
                    if not delta and not choice.get("finish_reason") and not usage:
                        return None, True
        finish = choice.get("finish_reason")
        if finish:
            if self._calls and finish == "stop":
                choice["finish_reason"] = finish = "tool_calls"
                changed = True
            self.transcript.finish_reason = finish
        return chunk, changed

    def _fix_call(self, call: dict[str, Any], pos: int) -> bool | None:
        """Repair one tool-call delta in place: True if changed, None to drop it (a repeated whole call)."""
        changed = False
        key = call.get("index", pos)
        fn = call.get("function")
        if not isinstance(fn, dict):
            fn = call["function"] = {}
            changed = True
        args = fn.get("arguments")
        known = self._calls.get(key)
        if known is None and call.get("id") is not None and "index" not in call:
            known = next((c for c in self._calls.values() if c.id == call["id"]), None)
        if known is not None:
            if args and fn.get("name") and "".join(known.arguments) == args:
                return None  # a summary that repeats the whole call: Cline would concatenate it
            ours = self._ids[key] if key in self._ids else next(
                i for k, i in self._ids.items() if self._calls[k] is known
            )
            if call.get("index") != ours:
                call["index"] = ours
                changed = True
            if isinstance(args, str) and args:
                known.arguments.append(args)
            return changed
        ours = len(self._calls)
        tool = ToolCall(id=call.get("id") or new_tool_call_id(), name=str(fn.get("name") or ""))
        self._calls[key], self._ids[key] = tool, ours
        self.transcript.tool_calls.append(tool)
        if call.get("index") != ours or not call.get("id") or call.get("type") != "function":
            call["index"], call["id"], call["type"] = ours, tool.id, "function"
            changed = True
        if "name" not in fn:
            fn["name"] = tool.name
            changed = True
        if args is None:
            fn["arguments"] = ""
            changed = True
        elif isinstance(args, str) and args:
            tool.arguments.append(args)
        return changed


class UsageTap:
    """For non-chat streams (legacy completions): records usage and text, changes nothing else."""

    __slots__ = ("transcript", "include_usage")

    def __init__(self, transcript: Transcript, *, include_usage: bool) -> None:
        self.transcript = transcript
        self.include_usage = include_usage

    def fix(self, chunk: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
        if chunk.get("usage"):
            self.transcript.set_usage(chunk["usage"])
            if not self.include_usage:
                del chunk["usage"]
                return (chunk, True) if chunk.get("choices") else (None, True)
        for choice in chunk.get("choices") or ():
            if isinstance(choice.get("text"), str):
                self.transcript.content.append(choice["text"])
            if choice.get("finish_reason"):
                self.transcript.finish_reason = choice["finish_reason"]
        return chunk, False
