"""The tools both test MCP servers serve, written with the official SDK's ``MCPServer``.

``echo``, ``add`` and ``sleep`` answer; ``fail`` reports a tool error (``isError``); ``crash``
kills the whole server process mid-call (an upstream that dies while a call is in
flight); ``grow`` registers a new tool and announces it with
``notifications/tools/list_changed``, on whichever era the caller speaks.
"""

from __future__ import annotations

import asyncio
import os

from mcp.server.mcpserver import Context, MCPServer


def build(name: str) -> MCPServer:
    server = MCPServer(name, version="1.0")

    @server.tool(description=f"Echo the text back, from {name}.")
    def echo(text: str) -> str:
        return f"{name} echo: {text}"

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="Always fails.")
    def fail(reason: str) -> str:
        raise ValueError(f"failed on purpose: {reason}")

    @server.tool(description="Wait, then answer (a long call).")
    async def sleep(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return f"slept {seconds}"

    @server.tool(description="Exit the server process while the call is in flight.")
    def crash() -> str:
        os._exit(3)

    @server.tool(description="Register the tool `extra` and announce the change.")
    async def grow(ctx: Context) -> str:
        def extra() -> str:
            """A tool that appeared at run time."""
            return "extra"

        server.add_tool(extra, name="extra")
        await ctx.notify_tools_changed()  # 2026-07-28 clients: subscriptions/listen
        try:
            await ctx.session.send_tool_list_changed()  # handshake-era clients
        except Exception:
            pass  # a modern per-request session has no standing channel for it
        return "grown"

    return server
