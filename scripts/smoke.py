"""Smoke check of an installed finopsd, run by the Python of a venv holding the package alone.

    .venv-clean/bin/python scripts/smoke.py

What the test suite cannot see, because pytest and the SDK clients bring their own packages:
1. every module finopsd imports (also inside functions) comes from a distribution that
   finopsd's own metadata asks for (optional ones from the ``fast`` and ``otel`` extras);
2. every module of the installed package imports (but those of an extra not installed);
3. ``finopsd check`` loads each adapter and the MCP SDK;
4. ``finopsd serve`` answers one chat request through each provider adapter, against the
   fake upstreams of tests/fakes.py (real aiohttp servers on 127.0.0.1), prices and logs
   them, and calls a tool on a stdio MCP server written with the SDK.
Exit status 1, with what failed, when any of it does. Needs nothing beyond the package.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import importlib.metadata as md
import importlib.util
import json
import os
import pkgutil
import re
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
STARTUP_S = 30.0
failures: list[str] = []


def fail(what: str) -> None:
    failures.append(what)
    print(f"FAIL {what}", file=sys.stderr)


def ok(what: str) -> None:
    print(f"ok   {what}")


def load_fakes() -> Any:
    """tests/fakes.py by path: putting the checkout on sys.path would shadow the installed package."""
    spec = importlib.util.spec_from_file_location("fakes", ROOT / "tests" / "fakes.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["fakes"] = module
    spec.loader.exec_module(module)
    return module


# --- 1 and 2: what the package imports --------------------------------------------------------


def declared() -> tuple[set[str], set[str]]:
    """finopsd's requirements: (always, from the fast or otel extra), as normalised distribution names."""
    required, fast = set(), set()
    for req in md.requires("finopsd") or ():
        name = normalise(re.match(r"[A-Za-z0-9._-]+", req).group())  # type: ignore[union-attr]
        marker = req.partition(";")[2]
        if not marker:
            required.add(name)
        elif re.search(r"extra\s*==\s*['\"](fast|otel)['\"]", marker):
            fast.add(name)
    return required, fast


# the top-level module of an extra whose distribution names another (opentelemetry-sdk)
OPTIONAL_MODULES = {"opentelemetry": "otel"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules(package_dir: Path) -> dict[str, str]:
    """Top-level module → one file importing it, for every absolute import in the package."""
    found: dict[str, str] = {}
    for path in sorted(package_dir.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                     else [])
            for name in names:
                found.setdefault(name.partition(".")[0], str(path.relative_to(package_dir.parent)))
    return found


def check_imports_are_declared(package_dir: Path) -> None:
    required, fast = declared()
    before = len(failures)
    owners = md.packages_distributions()
    for module, where in sorted(imported_modules(package_dir).items()):
        if module in sys.stdlib_module_names or module in ("finopsd", "__future__"):
            continue
        dists = {normalise(d) for d in owners.get(module, ())}
        if dists & required:
            continue
        if not dists and module in fast | {d.replace("-", "_") for d in fast}:
            ok(f"optional {module} is not installed (the fast extra)")
            continue
        if module in OPTIONAL_MODULES:  # another dependency may bring part of it (mcp: opentelemetry-api)
            ok(f"optional {module} comes with the {OPTIONAL_MODULES[module]} extra")
            continue
        if dists & fast:
            continue
        origin = f"from {', '.join(sorted(dists))}" if dists else "not installed"
        fail(f"{where} imports {module} ({origin}), which setup.cfg install_requires does not declare")
    if len(failures) == before:
        ok("every third-party import is declared")


def check_every_module_imports() -> None:
    import finopsd

    count = 0
    for info in pkgutil.walk_packages(finopsd.__path__, "finopsd."):
        if info.name.endswith(".__main__"):
            continue  # importing it runs the CLI
        try:
            importlib.import_module(info.name)
            count += 1
        except Exception as e:  # noqa: BLE001 - each broken module is reported, then the next
            extra = OPTIONAL_MODULES.get((getattr(e, "name", None) or "").partition(".")[0])
            if isinstance(e, ModuleNotFoundError) and extra:
                ok(f"{info.name} needs the {extra} extra, not installed")
                continue
            cause = e.__cause__ or e.__context__
            fail(f"import {info.name}: {type(e).__name__}: {str(e).splitlines()[0]}"
                 + (f" (caused by {cause!r})" if cause else ""))
    ok(f"{count} modules of finopsd import")


# --- 3 and 4: the CLI and the gateway -----------------------------------------------------------


def service_account(path: Path, token_uri: str) -> None:
    """A throwaway service-account key whose token_uri is the fake: google-auth signs a real JWT."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "smoke-project", "private_key_id": "k1", "private_key": pem,
        "client_email": "smoke@smoke-project.iam.gserviceaccount.com", "client_id": "1", "token_uri": token_uri}))


def openai_answer(text: str) -> dict[str, Any]:
    return {"id": "chatcmpl-smoke", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}}


def gemini_answer(text: str) -> dict[str, Any]:
    return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 2, "totalTokenCount": 12}}


# provider → (config fields besides base_url, model, the upstream's documented non-streaming answer)
PROVIDERS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "openai": ("keys: [{value: sk-smoke}]", "gpt-4o-mini", openai_answer("pong from openai")),
    "azure": ("keys: [{value: az-smoke}]", "gpt-4o-mini", openai_answer("pong from azure")),
    "mistral": ("keys: [{value: mi-smoke}]", "mistral-small-latest", openai_answer("pong from mistral")),
    "anthropic": ("keys: [{value: sk-ant-smoke}]", "claude-sonnet-4-5-20250929", {
        "id": "msg_smoke", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": "pong from anthropic"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 10, "output_tokens": 2}}),
    "gemini": ("keys: [{value: g-smoke}]", "gemini-2.5-flash", gemini_answer("pong from gemini")),
    "vertex": ("project: smoke-project, location: us-central1, credentials_file: {sa}", "gemini-2.5-flash",
               gemini_answer("pong from vertex")),
    "bedrock": ("region: us-east-1, access_key_id: AKIASMOKE, secret_access_key: smoke-secret",
                "anthropic.claude-3-5-haiku-20241022-v1:0", {
                    "output": {"message": {"role": "assistant", "content": [{"text": "pong from bedrock"}]}},
                    "stopReason": "end_turn", "usage": {"inputTokens": 10, "outputTokens": 2, "totalTokens": 12}}),
    "cohere": ("keys: [{value: co-smoke}]", "command-a-03-2025", {
        "id": "smoke", "finish_reason": "COMPLETE",
        "message": {"role": "assistant", "content": [{"type": "text", "text": "pong from cohere"}]},
        "usage": {"tokens": {"input_tokens": 10, "output_tokens": 2}}}),
    "replicate": ("keys: [{value: r8-smoke}]", "meta/meta-llama-3-70b-instruct", {
        "id": "smoke", "status": "succeeded", "output": ["pong ", "from replicate"], "error": None, "urls": {},
        "metrics": {"input_token_count": 10, "output_token_count": 2}}),
}


async def start_fakes(fakes: Any, tmp: Path) -> tuple[dict[str, Any], list[Any]]:
    by_provider, runners = {}, []
    for name, (_, _, answer) in PROVIDERS.items():
        fake = fakes.FakeUpstream()
        if name == "vertex":  # the first request is google-auth's token exchange
            fake.answer_json({"access_token": "ya29.smoke", "expires_in": 3600, "token_type": "Bearer"})
        if name == "openai":
            fake.play("openai/text_stream.sse")  # the streamed request comes first
        fake.answer_json(answer, status=201 if name == "replicate" else 200)
        runner = web.AppRunner(fake.app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        fake.url = f"http://127.0.0.1:{port}" + {"openai": "/v1", "mistral": "/v1", "azure": "/openai/v1"}.get(name, "")
        by_provider[name], runners = fake, [*runners, runner]
    service_account(tmp / "sa.json", f"{by_provider['vertex'].url}/token")
    return by_provider, runners


def config_yaml(fakes: dict[str, Any], tmp: Path) -> str:
    lines = ["server: {admin_token: smoke-admin}", f"storage: {{path: {tmp / 'smoke.db'}}}", "providers:"]
    for name, (fields, model, _) in PROVIDERS.items():
        fields = fields.replace("{sa}", str(tmp / "sa.json"))
        lines.append(f"  {name}: {{base_url: '{fakes[name].url}', {fields}, models: ['{model}']}}")
    # genai-prices has no Replicate prices: an override, so every row must come out priced
    lines += ["pricing:", f"  replicate/{PROVIDERS['replicate'][1]}: {{input: 0.65, output: 2.75}}"]
    lines += ["mcp:", "  servers:",
              f"    smoke: {{command: {json.dumps(sys.executable)}, args: [-m, tests.mcp_servers.stdio_echo, smoke],"
              f" cwd: {json.dumps(str(ROOT))}}}"]
    return "\n".join(lines) + "\n"


def finopsd_env(tmp: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp), "XDG_DATA_HOME": str(tmp / "data"),
            "LANG": "C.UTF-8"}


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "finopsd"), *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def chat(http: aiohttp.ClientSession, base: str, model: str, stream: bool = False) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": "ping"}], "stream": stream}
    async with http.post(f"{base}/openai/v1/chat/completions", json=body) as resp:
        raw = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {raw[:300].decode(errors='replace')}")
    if not stream:
        return str(json.loads(raw)["choices"][0]["message"]["content"])
    events = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]", events[-1:]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in map(json.loads, events[:-1]) if c["choices"])


async def mcp_call(http: aiohttp.ClientSession, base: str) -> str:
    headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "smoke", "version": "1"}}}
    async with http.post(f"{base}/mcp", json=init, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"initialize: HTTP {resp.status}: {(await resp.text())[:300]}")
        headers["Mcp-Session-Id"] = resp.headers["Mcp-Session-Id"]
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "smoke-echo", "arguments": {"text": "ping"}}}
    async with http.post(f"{base}/mcp", json=call, headers=headers) as resp:
        answer = await resp.json()
    if "result" not in answer:
        raise RuntimeError(f"tools/call: {answer}")
    return str(answer["result"]["content"][0]["text"])


async def check_gateway(tmp: Path) -> None:
    fakes, runners = await start_fakes(load_fakes(), tmp)
    config = tmp / "smoke.yaml"
    config.write_text(config_yaml(fakes, tmp))
    env = finopsd_env(tmp)
    status, out = await run_cli("check", "--config", str(config), env=env)
    if status:
        fail(f"finopsd check exited {status}:\n{out}")
    else:
        ok("finopsd check loads every adapter and the MCP SDK")
    gateway = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "finopsd"), "serve", "--config", str(config), "--port", "0",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert gateway.stdout is not None
        async with asyncio.timeout(STARTUP_S):
            banner = (await gateway.stdout.readline()).decode()
        match = re.search(r"listening on (http://\S+)", banner)
        if not match:
            fail(f"finopsd serve did not start: {banner!r}")
            return
        await drive(match.group(1))
    finally:
        # SIGTERM drains the log writer; `finopsd usage` then reads what was written
        gateway.terminate()
        _, errors = await gateway.communicate()
        if gateway.returncode:
            fail(f"finopsd serve exited {gateway.returncode}:\n{errors.decode()[-2000:]}")
        for runner in runners:
            await runner.cleanup()
    await check_usage(config, env)


async def check_usage(config: Path, env: dict[str, str]) -> None:
    status, out = await run_cli("usage", "--by", "provider", "--json", "--config", str(config), env=env)
    if status:
        fail(f"finopsd usage exited {status}:\n{out}")
        return
    rows = {r["provider"]: r for r in json.loads(out)["rows"]}
    wrong = {name: rows.get(name) for name in PROVIDERS
             if not rows.get(name) or rows[name]["requests"] != (2 if name == "openai" else 1)
             or not rows[name]["cost_usd"] > 0 or rows[name]["unpriced"]}
    if wrong:
        fail(f"finopsd usage: providers not logged once per request and priced: {wrong}")
    else:
        ok(f"finopsd usage: {sum(r['requests'] for r in rows.values())} requests logged, each priced (genai-prices)")


async def drive(base: str) -> None:
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        requests = [("openai", True)] + [(name, False) for name in PROVIDERS]
        for name, stream in requests:
            model = f"{name}/{PROVIDERS[name][1]}"
            want = "Hello, world" if stream else f"pong from {name}"
            try:
                got = await chat(http, base, model, stream)
            except Exception as e:  # noqa: BLE001 - each provider is reported, then the next
                fail(f"{model}{' (stream)' if stream else ''}: {e}")
                continue
            (ok if got == want else fail)(f"{model}{' (stream)' if stream else ''} answered {got!r}")
        try:
            echoed = await mcp_call(http, base)
            (ok if echoed == "smoke echo: ping" else fail)(f"/mcp tools/call smoke-echo answered {echoed!r}")
        except Exception as e:  # noqa: BLE001
            fail(f"/mcp tools/call: {e}")


def main() -> None:
    import finopsd

    package_dir = Path(finopsd.__file__).parent
    if package_dir == ROOT / "finopsd":
        sys.exit(f"finopsd is imported from the checkout ({package_dir}), not from an installed copy")
    check_imports_are_declared(package_dir)
    check_every_module_imports()
    with tempfile.TemporaryDirectory(prefix="finopsd-smoke-") as tmp:
        try:
            asyncio.run(check_gateway(Path(tmp)))
        except Exception:  # noqa: BLE001 - a crash of the check itself is a failure too
            fail(f"smoke check crashed:\n{traceback.format_exc()}")
    if failures:
        print(f"smoke: {len(failures)} failed", file=sys.stderr)
        sys.exit(1)
    print("smoke: installed package OK")


if __name__ == "__main__":
    main()
