"""A Streamable HTTP MCP server for the tests, on uvicorn (an ``mcp`` dependency).

``python -m tests.mcp_servers.http_echo PORT [NAME] [sse]`` serves ``/mcp`` on 127.0.0.1:PORT (or,
with ``sse``, the deprecated HTTP+SSE transport's ``/sse`` and ``/messages/``) and
refuses requests without ``Authorization: Bearer test-upstream-token``, so the tests also
show the gateway sends configured upstream headers.
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn

from tests.mcp_servers.tools import build

TOKEN = "test-upstream-token"


class RequireToken:
    """ASGI middleware: 401 unless the upstream header the gateway was configured with is sent."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            if headers.get(b"authorization") != f"Bearer {TOKEN}".encode():
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
        await self.app(scope, receive, send)


if __name__ == "__main__":
    port = int(sys.argv[1])
    server = build(sys.argv[2] if len(sys.argv) > 2 else "http")
    sse = len(sys.argv) > 3 and sys.argv[3] == "sse"
    app = RequireToken(server.sse_app(host="127.0.0.1") if sse else server.streamable_http_app(host="127.0.0.1"))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
