"""The shipped units: systemd accepts them, and stdio MCP servers live in them.

systemd/finopsd.service runs one gateway; systemd/finopsd@.service is its template for several
instances behind a load balancer (finopsd@8081…), with the same sandbox.

CI cannot start the unit (no systemd as PID 1), so this goes as far as it can:
``systemd-analyze verify`` reads it as systemd would, and scripts/unit-sandbox loads the
seccomp filters its settings make (MemoryDenyWriteExecute, SystemCallFilter with
SystemCallErrorNumber, RestrictAddressFamilies: what the gateway's children inherit) and its
environment, for the MCP test's npm server to run under. scripts/test installs systemd and
python3-seccomp when they are missing.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from finopsd.mcp_upstream import MCP_HUB
from tests.test_mcp import GatewayFactory, everything, gateway_yaml, keys_env, mcp_client, names  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "finopsd.service"
TEMPLATE = ROOT / "systemd" / "finopsd@.service"
# what an instance of the template may set differently from the single unit
PER_INSTANCE = {"Description", "User", "Environment", "EnvironmentFile", "ExecStartPre", "ExecStart"}
SANDBOX = ROOT / "scripts" / "unit-sandbox"


async def run(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


def needs(command: str, package: str) -> None:
    if shutil.which(command) is None:
        pytest.fail(f"{command} is needed for this test: apt-get install {package} (scripts/test installs it)")


@pytest.mark.parametrize(("source", "loaded"), [(UNIT, UNIT.name), (TEMPLATE, "finopsd@8081.service")])
async def test_systemd_analyze_verify_accepts_the_unit_without_a_warning(
        tmp_path: Path, source: Path, loaded: str) -> None:
    needs("systemd-analyze", "systemd")
    # verify checks that ExecStart's program exists: point it at this venv's finopsd
    (tmp_path / source.name).write_text(
        source.read_text().replace("/opt/finopsd/bin/finopsd", str(Path(sys.executable).parent / "finopsd")))
    status, out = await run("systemd-analyze", "verify", "--man=no", str(tmp_path / loaded))  # an instance
    assert (status, out) == (0, "")


def unit_lines(path: Path) -> list[tuple[str, str]]:
    """(setting, value) of each assignment, in order, comments and blank lines left out."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return [tuple(line.split("=", 1)) for line in lines  # type: ignore[misc]
            if line and not line.startswith(("#", "[")) and "=" in line]


def test_the_template_has_the_single_units_sandbox() -> None:
    single, template = unit_lines(UNIT), unit_lines(TEMPLATE)
    assert [s for s in single if s[0] not in PER_INSTANCE] == [t for t in template if t[0] not in PER_INSTANCE]
    settings = dict(template)
    # each instance binds its own port, on the config every instance shares
    assert settings["ExecStart"].endswith("serve --config ${FINOPSD_CONFIG} --port ${FINOPSD_PORT}")
    assert settings["ExecStartPre"].endswith("check --config ${FINOPSD_CONFIG}")
    assert "FINOPSD_PORT=%i" in settings["Environment"].split()
    assert set(dict(single)["Environment"].split()) <= set(settings["Environment"].split())


async def test_npm_mcp_server_serves_tools_inside_the_units_sandbox(
    make_gateway: GatewayFactory, everything: Path, keys_env: None, tmp_path: Path  # noqa: F811
) -> None:
    needs("/usr/bin/python3", "python3")
    status, out = await run("/usr/bin/python3", "-c", "import seccomp")
    assert status == 0, f"libseccomp's Python bindings are needed: apt-get install python3-seccomp\n{out}"
    root = tmp_path / "root"
    servers = f"    everything: {{command: {SANDBOX}, args: [--root, {root}, {UNIT}, node, {everything}, stdio]}}\n"
    gateway: TestClient = await make_gateway(gateway_yaml(servers))
    upstream = gateway.app[MCP_HUB].upstreams["everything"]
    assert upstream.state == "up", upstream.last_error
    async with mcp_client(gateway) as client:
        assert "everything-echo" in await names(client)
        echoed = await client.call_tool("everything-echo", {"message": "inside the unit"})
    assert echoed.content[0].text == "Echo: inside the unit"


@pytest.mark.parametrize("unit", [UNIT, TEMPLATE], ids=["single", "template"])
async def test_npm_writes_its_cache_where_the_unit_lets_it(tmp_path: Path, unit: Path) -> None:
    """A dynamic user's home is / (read-only under ProtectSystem=strict): npm's cache must be elsewhere."""
    needs("npm", "npm")
    root = tmp_path / "root"
    status, out = await run(str(SANDBOX), "--root", str(root), str(unit), "npm", "config", "get", "cache")
    assert status == 0, out
    cache = Path(out.strip())
    assert cache.is_relative_to(root / "var" / "cache" / "finopsd"), cache  # the unit's CacheDirectory
