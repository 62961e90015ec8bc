"""Node tools the tests run (MCP servers, Gemini CLI), installed once from npm into the project's cache."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def npm_tool(prefix: Path, package: str, entry: Path, purpose: str) -> Path:
    """``entry`` (a file the package installs under ``prefix``), installing ``package`` first if needed."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail(f"Node.js and npm are needed for {purpose}: apt-get install nodejs npm"
                    " (scripts/test installs them)")
    if not entry.exists():
        subprocess.run(["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", package],
                       check=True, cwd=ROOT, timeout=600)
    return entry
