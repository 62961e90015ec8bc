"""A handshake-era (2025-11-25) stdio MCP server written without the SDK, as older servers are.

It answers ``server/discover`` with "method not found" (so clients fall back to
``initialize``), serves ``echo`` and ``grow``, and after ``grow`` lists ``extra`` and
sends ``notifications/tools/list_changed`` unasked, as that protocol revision allows.
``python -m tests.mcp_servers.legacy_stdio``
"""

from __future__ import annotations

import json
import sys
from typing import Any

SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}}
tools = [{"name": "echo", "description": "Echo the text back.", "inputSchema": SCHEMA},
         {"name": "grow", "description": "Add the tool `extra`.", "inputSchema": {"type": "object"}}]


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def text(value: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": value}], "isError": False}


def answer(method: str, params: dict[str, Any]) -> dict[str, Any]:
    if method == "initialize":
        return {"protocolVersion": "2025-11-25", "capabilities": {"tools": {"listChanged": True}},
                "serverInfo": {"name": "legacy-stdio", "version": "1.0"}}
    if method == "ping":
        return {}
    if method == "tools/list":
        return {"tools": tools}
    if method == "tools/call" and params.get("name") == "echo":
        return text(f"legacy echo: {params.get('arguments', {}).get('text')}")
    if method == "tools/call" and params.get("name") == "grow":
        if not any(t["name"] == "extra" for t in tools):
            tools.append({"name": "extra", "description": "Appeared at run time.", "inputSchema": {"type": "object"}})
        send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        return text("grown")
    if method == "tools/call" and params.get("name") == "extra":
        return text("extra")
    raise LookupError(method)


for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg or "method" not in msg:
        continue  # notifications and responses
    try:
        send({"jsonrpc": "2.0", "id": msg["id"], "result": answer(msg["method"], msg.get("params") or {})})
    except LookupError:
        send({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": "Method not found"}})
