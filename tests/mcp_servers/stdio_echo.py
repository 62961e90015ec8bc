"""A stdio MCP server for the tests: ``python -m tests.mcp_servers.stdio_echo [NAME]``."""

from __future__ import annotations

import sys

from tests.mcp_servers.tools import build

if __name__ == "__main__":
    build(sys.argv[1] if len(sys.argv) > 1 else "stdio").run("stdio")
