"""An incomplete install: ``finopsd check`` names the package to install, a request gets the same words.

A missing package is simulated the way Python sees one: a directory early on PYTHONPATH
holds a ``packaging`` that raises ModuleNotFoundError, as google-auth's urllib3 transport
meets it when the ``google-auth[urllib3]`` extra is not installed (issue 13). The package
installed alone, without the test extras, is checked by scripts/smoke.py.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
from click.testing import CliRunner

from finopsd.cli import main
from finopsd.providers.registry import PROTOCOLS
from tests.fakes import FakeUpstream

ALL_PROTOCOLS = "".join(
    f"  p-{protocol}: {{type: {protocol}, base_url: 'http://127.0.0.1:9', keys: [{{value: k}}], models: [m],"
    f" project: p, region: us-east-1}}\n"
    for protocol in sorted(PROTOCOLS))
MCP = "mcp:\n  servers:\n    tools: {command: node, args: [server.js]}\n"


def without_packaging(tmp_path: Path) -> dict[str, str]:
    shadow = tmp_path / "shadow" / "packaging"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'packaging'\", name='packaging')\n")
    return {**os.environ, "PYTHONPATH": str(shadow.parent)}


def test_check_imports_every_adapter_and_the_mcp_sdk(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"providers:\n{ALL_PROTOCOLS}{MCP}")
    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert all(f"p-{protocol}  type={protocol}" in result.output for protocol in PROTOCOLS)


async def test_check_names_the_missing_package_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"providers:\n{ALL_PROTOCOLS}")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "finopsd", "check", "--config", str(path), env=without_packaging(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 1, out
    assert err.decode().splitlines() == [
        "error: provider p-vertex: the vertex adapter cannot load: no module named 'packaging';"
        " the install is incomplete: pip install 'google-auth[urllib3]>=2.40' (or reinstall finopsd)"]


async def test_request_through_an_adapter_that_cannot_load_is_a_clear_500_and_others_still_work(
    daemon_for: Any, tmp_path: Path, fake_openai: FakeUpstream
) -> None:
    fake_openai.answer_json({"id": "c1", "object": "chat.completion", "model": "gpt-5", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "still here"}, "finish_reason": "stop"}]})
    path = tmp_path / "c.yaml"
    path.write_text(f"storage: {{path: {tmp_path / 'f.db'}}}\nproviders:\n"
                    f"  openai: {{base_url: '{fake_openai.url}', keys: [{{value: sk-x}}], models: [gpt-5]}}\n"
                    "  vertex: {project: p, keys: [{value: ya29.token}], models: [gemini-2.5-flash]}\n")
    daemon = await daemon_for(path, env=without_packaging(tmp_path))
    async with aiohttp.ClientSession() as http:
        ask = {"messages": [{"role": "user", "content": "hi"}]}
        async with http.post(f"{daemon.url}/openai/chat/completions",
                             json={**ask, "model": "vertex/gemini-2.5-flash"}) as resp:
            assert resp.status == 500
            error = (await resp.json())["error"]
        async with http.post(f"{daemon.url}/openai/chat/completions", json={**ask, "model": "openai/gpt-5"}) as ok:
            assert ok.status == 200 and (await ok.json())["choices"][0]["message"]["content"] == "still here"
    assert error["code"] == "missing_dependency"
    assert error["message"] == ("the vertex adapter cannot load: no module named 'packaging'; the install is"
                                " incomplete: pip install 'google-auth[urllib3]>=2.40' (or reinstall finopsd)")
