"""What a coding agent sends, turn after turn: a task whose history grows with each tool result.

Shared by ``bench.growth`` (rows into the log store) and the driver's agent-session load
(HTTP bodies); no finopsd imports, so the driver stays light.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

IDENTS = ["parser", "tokens", "node", "block", "nested", "depth", "stack", "emit", "visit", "child", "scope",
          "buffer", "offset", "line", "column", "error", "value", "index", "result", "config"]  # fmt: skip
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {"name": n, "description": f"{n}: see the agent's system prompt.",
                                      "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                                                     "required": ["path"], "additionalProperties": False}}}
    for n in ("read_file", "write_to_file", "execute_command", "list_files", "search_files", "attempt_completion")
]  # fmt: skip


def code_text(rng: random.Random, size: int) -> str:
    """Text shaped like the files and command output agents read: code lines, varied names and numbers."""
    out: list[str] = []
    n = 0
    while n < size:
        a, b = rng.choice(IDENTS), rng.choice(IDENTS)
        line = rng.choice((
            f"    {a}_{rng.randint(0, 999)} = self.{b}({a}, {rng.randint(0, 99)})",
            f"def {a}_{b}(self, {a}: int = {rng.randint(0, 9)}) -> list[{b.title()}]:",
            f"        if {a} > {b}_{rng.randint(0, 50)}: return {rng.choice(IDENTS)}",
            f"tests/test_{a}.py::{b}_{rng.randint(0, 300)} PASSED [{rng.randint(0, 100)}%]",
            f"# {a} {b} handles the {rng.choice(IDENTS)} case (see issue #{rng.randint(1, 9999)})",
        ))  # fmt: skip
        out.append(line)
        n += len(line) + 1
    return "\n".join(out)[:size]


def system_prompt(kb: float) -> str:
    """The same long system prompt for every task, as an agent's is."""
    return code_text(random.Random(0), int(kb * 1024))


def task(seed: int, system: str, tool_kb: float) -> Iterator[tuple[list[dict[str, Any]], dict[str, Any], int]]:
    """(messages so far, the answer to them, bytes of new content) for each turn of one task, forever."""
    rng = random.Random(seed)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system},
        {"role": "user", "content": f"<task>fix the nested block bug #{seed}</task>"},
    ]
    seen = 0
    for turn in range(1 << 30):
        call = {"id": f"call_{seed}_{turn}", "name": "read_file", "arguments": json.dumps({"path": f"src/f{turn}.py"})}
        answer = {"content": "", "reasoning": "", "tool_calls": [call]}
        new = sum(len(json.dumps(m)) for m in messages[seen:]) + len(json.dumps(answer))
        seen = len(messages)
        yield messages, answer, new
        messages = [*messages,
                    {"role": "assistant", "content": "", "tool_calls": [
                        {"id": call["id"], "type": "function",
                         "function": {"name": call["name"], "arguments": call["arguments"]}}]},
                    {"role": "tool", "tool_call_id": call["id"], "content": code_text(rng, int(tool_kb * 1024))},
                    {"role": "user", "content": f"<environment_details>turn {turn}</environment_details>"}]


class GrowingBody:
    """HTTP bodies of one task, encoded incrementally (the driver must not re-encode 400 KB a turn)."""

    def __init__(self, model: str, seed: int, system: str, tool_kb: float) -> None:
        self.head = json.dumps({"model": model, "stream": True, "stream_options": {"include_usage": True},
                                "tools": TOOLS, "temperature": 0})[:-1] + ', "messages": ['
        self.turns = task(seed, system, tool_kb)
        self.encoded: list[str] = []

    def next(self) -> bytes:
        messages, _, _ = next(self.turns)
        self.encoded += [json.dumps(m) for m in messages[len(self.encoded):]]
        return (self.head + ", ".join(self.encoded) + "]}").encode()
