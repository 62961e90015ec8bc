"""Agent-shaped multi-turn sessions, driven with the real SDKs (tests and bench/session_cost.py).

Shapes from CLIENTS.md: Roo Code (OpenAI chat, streamed, ~13 strict tools, a long system
prompt, every turn a tool call answered by a tool message and an ``<environment_details>``
user message; no cache markers through an "OpenAI Compatible" profile) and Codex
(Responses: ``instructions``, function tools, ``function_call`` / ``function_call_output``
items, ``store: false``).
"""

from __future__ import annotations

import json
from typing import Any

import openai

# Roo's system prompt is about 30 KB: role, tool-use rules, capabilities, rules, system info
SYSTEM_PROMPT = "You are Roo, a highly skilled software engineer.\n\n" + "\n".join(
    f"RULE {i}: Work step by step; use one tool per message and wait for its result before going on. "
    f"Never assume a tool succeeded. Prefer small, reviewable edits and explain each change briefly."
    for i in range(200)
)
ROO_TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {
        "name": name, "description": f"{name.replace('_', ' ')}: see the rules for when to use it. " * 4,
        "strict": True,
        "parameters": {"type": "object", "properties": {"path": {"type": "string", "description": "relative path"}},
                       "required": ["path"], "additionalProperties": False}}}
    for name in ("read_file", "write_to_file", "apply_diff", "search_files", "list_files", "list_code_definition_names",
                 "execute_command", "browser_action", "ask_followup_question", "attempt_completion",
                 "switch_mode", "new_task", "update_todo_list")
]
FILE_BODY = "".join(f"def function_{i}(x):\n    return x * {i}  # a line of the file being read\n" for i in range(40))


def environment(turn: int) -> str:
    return (f"<environment_details>\n# VSCode Visible Files\nsrc/module_{turn}.py\n"
            f"# Current Time\n2026-12-02T08:{turn % 60:02d}:00Z\n</environment_details>")


async def roo_turn(client: openai.AsyncOpenAI, model: str, messages: list[dict[str, Any]]) -> tuple[str, Any, Any]:
    """One streamed Roo request; appends the answer, its tool result and the next user message."""
    stream = await client.chat.completions.create(
        model=model, messages=messages, tools=ROO_TOOLS, tool_choice="auto", parallel_tool_calls=True,  # type: ignore[arg-type]
        temperature=0, stream=True, stream_options={"include_usage": True})
    text, calls, usage = "", {}, None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for call in choice.delta.tool_calls or ():
                entry = calls.setdefault(call.index, {"id": call.id, "name": "", "arguments": ""})
                entry["name"] += (call.function.name or "") if call.function else ""
                entry["arguments"] += (call.function.arguments or "") if call.function else ""
    tool_calls = [{"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                  for c in calls.values()]
    turn = sum(1 for m in messages if m["role"] == "assistant")
    messages.append({"role": "assistant", "content": text, "tool_calls": tool_calls} if tool_calls
                    else {"role": "assistant", "content": text})
    for call in tool_calls:
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": FILE_BODY})
    messages.append({"role": "user", "content": environment(turn + 1)})
    return text, tool_calls, usage


def roo_start(task: str = "Refactor the parser so that nested blocks are handled.") -> list[dict[str, Any]]:
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"<task>\n{task}\n</task>\n{environment(0)}"}]


async def roo_session(client: openai.AsyncOpenAI, model: str, turns: int,
                      task: str | None = None) -> list[tuple[str, Any, Any]]:
    messages = roo_start(task) if task else roo_start()
    return [await roo_turn(client, model, messages) for _ in range(turns)]


CODEX_TOOLS: list[dict[str, Any]] = [
    {"type": "function", "name": "exec_command", "description": "Run a shell command " * 20, "strict": False,
     "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}},
    {"type": "function", "name": "write_stdin", "description": "Write to a running command " * 20, "strict": False,
     "parameters": {"type": "object", "properties": {"chars": {"type": "string"}}, "required": ["chars"]}},
    {"type": "web_search"},
]


async def codex_session(client: openai.AsyncOpenAI, model: str, turns: int) -> list[Any]:
    """Codex CLI's loop: each function_call answered by a function_call_output item; usage per turn."""
    items: list[dict[str, Any]] = [{"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "Find why the tests fail and fix it."}]}]
    usages = []
    for _ in range(turns):
        done = None
        async with client.responses.stream(model=model, instructions=SYSTEM_PROMPT, input=items,  # type: ignore[arg-type]
                                           tools=CODEX_TOOLS, store=False, parallel_tool_calls=True) as stream:
            async for event in stream:
                if event.type == "response.completed":
                    done = event.response
        assert done is not None
        usages.append(done.usage)
        for item in done.output:
            if item.type == "function_call":
                items.append({"type": "function_call", "call_id": item.call_id, "name": item.name,
                              "arguments": item.arguments})
                items.append({"type": "function_call_output", "call_id": item.call_id,
                              "output": json.dumps({"output": FILE_BODY, "exit_code": 0})})
    return usages
