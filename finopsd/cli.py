"""The ``finopsd`` command."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
import logging
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import click

from finopsd import __version__, config as cfg
from finopsd.deps import missing
from finopsd.errors import BadRequest
from finopsd.governance import new_virtual_key, offline_report
from finopsd.keyclient import KeyChange, Refused, gateway_url
from finopsd.keystore import KeyStore
from finopsd.log import open_log
from finopsd.log.store import LogStore
from finopsd.routes.logs import SESSION_STATUSES, parse_time, search_items, session_items
from finopsd.server import run, serve
from finopsd.spend import iso, window_start
from finopsd.web.items import session_line, terminal_line


@click.group()
@click.version_option(__version__, prog_name="finopsd")
def main() -> None:
    """FinOps gateway: one OpenAI-compatible endpoint for every LLM provider."""


def _load(path: str | None) -> tuple[cfg.Config, str | None]:
    """The file named by --config (click fills it from $FINOPSD_CONFIG), else the embedded default."""
    try:
        return (cfg.load(path) if path else cfg.embedded_default()), path
    except cfg.ConfigError as e:
        raise click.ClickException(str(e)) from None


@main.command(name="serve")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="FINOPSD_CONFIG",
              help="YAML config file (default: $FINOPSD_CONFIG, else the embedded default).")
@click.option("--host", help="Address to bind; the default 127.0.0.1 keeps logs with conversations off the network.")
@click.option("--port", type=int, help="Port to bind (default 8080; 0 picks a free port).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def serve_command(config_path: str | None, host: str | None, port: int | None, log_level: str) -> None:
    """Run the gateway until SIGTERM; SIGHUP reloads the config file.

    \b
    finopsd serve                          # embedded default: 127.0.0.1:8080
    finopsd serve --config /etc/finopsd/config.yaml
    """
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config, path = _load(config_path)
    server = dataclasses.replace(
        config.server,
        **({"host": host} if host else {}),
        **({"port": port} if port is not None else {}),
    )
    config = dataclasses.replace(config, server=server)

    def reload() -> cfg.Config:
        assert path is not None
        new = cfg.load(path)
        return dataclasses.replace(new, server=dataclasses.replace(new.server, host=server.host, port=server.port))

    run(serve(config, reload if path else None, lambda text: click.echo(text, err=False)))


@main.command(name="check")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="YAML config file to validate.")
def check_command(config_path: str) -> None:
    """Validate a config file and show what it configures; exit 1 on errors.

    Also imports what its providers and MCP servers need (loaded on first use when serving),
    so an incomplete install is reported here, with the package to install.
    """
    try:
        config = cfg.load(config_path)
    except cfg.ConfigError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    problems = missing(config)
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    if problems:
        sys.exit(1)
    click.echo(f"{config_path}: OK")
    click.echo(f"listen: {config.server.host}:{config.server.port}")
    url, redis_url = config.storage.url, config.state.redis_url
    click.echo(f"storage: {cfg.redact_url(url) if url else config.storage.path}")
    click.echo(f"state: {cfg.redact_url(redis_url) if redis_url else 'in this process'}")
    if url and not redis_url:
        click.echo("warning: no state.redis_url: rate limits and budgets count per instance; run one instance"
                   " on this database, or share them through Redis", err=True)
    if url and not config.server.admin_token:
        click.echo("warning: no server.admin_token: the admin pages and /api/* then trust loopback clients,"
                   " which behind a load balancer on this host is every client", err=True)
    click.echo("providers:")
    for name, p in sorted(config.providers.items()):
        models = ", ".join(p.models) if p.models is not None else "(asked from the upstream at startup)"
        keys = ", ".join(k.name for k in p.keys) or "none"
        click.echo(f"  {name}  type={p.type}  base_url={p.base_url or '(default)'}  keys={keys}")
        click.echo(f"    models: {models}")
    if config.aliases:
        click.echo("aliases:")
        for alias, target in sorted(config.aliases.items()):
            click.echo(f"  {alias} -> {target}")


# ---------------------------------------------------------------- finopsd logs

T = TypeVar("T")
TAIL_LOOKBACK_S = 300.0  # a long stream is logged when it ends: look back past the newest start


@main.group(name="logs")
def logs_group() -> None:
    """Search and follow the request log (the SQLite file at the config's storage.path)."""


def _config_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="FINOPSD_CONFIG",
                        help="YAML config naming storage.path (default: $FINOPSD_CONFIG, else the embedded"
                        " default's data dir).")(fn)  # fmt: skip


async def _with_logstore(config: cfg.Config, work: Callable[[LogStore], Awaitable[T]]) -> T:
    # Never create a log the gateway has not: a typo in --config would show an empty log.
    path = config.storage.path
    if not config.storage.url and not Path(path).exists():
        raise click.ClickException(f"no request log at {path} (storage.path); the gateway creates it on start")
    store = await open_log(config)  # WAL: reading beside a running gateway is safe
    try:
        return await work(store)
    finally:
        await store.close()


@logs_group.command(name="search")
@click.argument("text")
@_config_option
@click.option("--provider", help="Only requests routed to this provider.")
@click.option("--model", help="Only this model, as the client wrote it (provider/model).")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 500), help="Rows to show.")
@click.option("--json", "as_json", is_flag=True, help="Print the /api/logs answer (items, next_cursor, totals).")
def logs_search(
    text: str, config_path: str | None, provider: str | None, model: str | None, limit: int, as_json: bool
) -> None:
    """Find requests whose conversation matches TEXT, newest first.

    TEXT is SQLite FTS5 syntax (words, "a phrase", prefix*, OR, NOT, NEAR(a b));
    anything FTS5 rejects is searched as a literal phrase.

    \b
    finopsd logs search quokka
    finopsd logs search '"list tests" OR read_file' --provider openai --json
    """
    config, _ = _load(config_path)
    kw = {"q": text, "provider": provider, "model": model, "limit": limit}
    body = asyncio.run(_with_logstore(config, lambda store: search_items(store, kw)))
    _print_page(body, terminal_line, as_json, lambda t: f"{t['requests']} matching requests, ${t['cost_usd']:.4f}")


def _print_page(body: dict[str, Any], line: Callable[..., str], as_json: bool,
                summary: Callable[[dict[str, Any]], str]) -> None:  # fmt: skip
    """An API answer as JSON, or one line per item and the totals on stderr."""
    if as_json:
        click.echo(json.dumps(body, indent=2, ensure_ascii=False))
        return
    bold = sys.stdout.isatty()
    for item in body["items"]:
        click.echo(line(item, bold=bold))
    more = " (more: raise --limit)" if body["next_cursor"] else ""
    click.echo(summary(body["totals"]) + more, err=True)


@logs_group.command(name="sessions")
@_config_option
@click.option("--search", "text", help="Only sessions whose text matches (FTS5 syntax, as `logs search`).")
@click.option("--provider", help="Only sessions with a request routed to this provider.")
@click.option("--model", help="Only sessions with a request for this model (provider/model).")
@click.option("--key", help="Only this virtual key's sessions (its name).")
@click.option("--team", help="Only this team's sessions.")
@click.option("--status", type=click.Choice(SESSION_STATUSES),
              help="ok, error (a request failed) or running (a request ended under 2 minutes ago).")
@click.option("--since", help="Active since: ISO 8601 (UTC unless it has an offset) or epoch seconds.")
@click.option("--until", help="Active before: ISO 8601 or epoch seconds.")
@click.option("--min-cost", type=click.FloatRange(min=0), help="Only sessions that cost at least this (USD).")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 500), help="Sessions to show.")
@click.option("--json", "as_json", is_flag=True, help="Print the /api/sessions answer (items, next_cursor, totals).")
def logs_sessions(config_path: str | None, text: str | None, since: str | None, until: str | None,
                  min_cost: float | None, limit: int, as_json: bool, **filters: str | None) -> None:  # fmt: skip
    """List agent sessions (one task each), newest-active first: turns, tokens, cost, status.

    \b
    finopsd logs sessions --status running
    finopsd logs sessions --search read_file --key roo-team-a --json
    """
    config, _ = _load(config_path)
    kw: dict[str, Any] = {k: v for k, v in filters.items() if v}
    kw.update(limit=limit, **({"q": text} if text else {}), **({"min_cost": min_cost} if min_cost is not None else {}))
    for name, value in (("since", since), ("until", until)):
        if value:
            try:
                kw[name] = parse_time(value, f"--{name}")
            except BadRequest as e:
                raise click.BadParameter(e.message, param_hint=f"--{name}") from None
    body = asyncio.run(_with_logstore(config, lambda store: session_items(store, kw)))
    _print_page(body, session_line, as_json,
                lambda t: f"{t['sessions']} sessions, {t['requests']} requests, ${t['cost_usd']:.4f}")


@logs_group.command(name="tail")
@_config_option
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.05),
              help="Seconds between polls.")
@click.option("-n", "--lines", default=10, show_default=True, type=click.IntRange(0, 500),
              help="Newest requests to show before following.")
@click.option("--follow/--no-follow", default=True, show_default=True,
              help="Keep printing new requests until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="One JSON item per line.")
def logs_tail(config_path: str | None, interval: float, lines: int, follow: bool, as_json: bool) -> None:
    """Show the newest requests, then each new one as it is logged.

    \b
    finopsd logs tail --config /etc/finopsd/config.yaml
    finopsd logs tail --json | jq .cost_usd
    """
    config, _ = _load(config_path)
    bold = sys.stdout.isatty()

    def show(item: dict[str, Any]) -> None:
        click.echo(json.dumps(item, ensure_ascii=False) if as_json else terminal_line(item, bold=bold))

    async def run(store: LogStore) -> None:
        await _tail(store, show, lines, interval if follow else None)

    try:
        asyncio.run(_with_logstore(config, run))
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a tail ends


async def _tail(store: LogStore, show: Callable[[dict[str, Any]], None], lines: int, interval: float | None) -> None:
    """Print the newest ``lines`` rows oldest first, then poll every ``interval`` s for rows not yet seen.

    Rows are ordered by start time but written when they end, so each poll looks back
    TAIL_LOOKBACK_S past the newest start and prints ids it has not seen.
    """
    started = time.time()
    newest = await search_items(store, {"limit": max(lines, 1)}, totals=False, previews=True)
    for item in reversed(newest["items"][:lines]):
        show(item)
    if interval is None:
        return
    window = await search_items(store, {"limit": 500, "since": started - TAIL_LOOKBACK_S}, totals=False)
    seen = {i["id"]: i["ts"] for i in (*newest["items"], *window["items"])}
    while True:
        await asyncio.sleep(interval)
        # never before the first window: rows there were all marked seen at the start
        since = max(started, *seen.values()) - TAIL_LOOKBACK_S
        page = await search_items(store, {"limit": 500, "since": since}, totals=False, previews=True)
        fresh = [item for item in reversed(page["items"]) if item["id"] not in seen]
        for item in fresh:
            show(item)
            seen[item["id"]] = item["ts"]
        seen = {rid: ts for rid, ts in seen.items() if ts >= since}  # the window has moved past the rest


@main.command(name="migrate")
@click.option("--to", "url", required=True, metavar="postgresql://…",
              help="An empty PostgreSQL database (env:NAME reads the URL from a variable: it holds a password).")
@click.option("--from", "source", type=click.Path(dir_okay=False, exists=True),
              help="The SQLite log to copy (default: the config's storage.path).")
@_config_option
def migrate_command(url: str, source: str | None, config_path: str | None) -> None:
    """Copy the SQLite request log, with its sessions, roll-ups, keys and alerts, into PostgreSQL.

    Progress goes to stderr; a database that already holds a log is refused. Then set
    storage.url to the same URL (README "Scale-out").

    \b
    finopsd migrate --config /etc/finopsd/config.yaml --to env:FINOPSD_PG_URL
    """
    from finopsd.log.pg.from_sqlite import MigrateError, migrate_file, target_url  # psycopg only when asked for

    path = source or _load(config_path)[0].storage.path
    try:
        url = target_url(url, os.environ)
        copied = migrate_file(path, url, lambda line: click.echo(line, err=True))
    except MigrateError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"copied {copied['requests']:,} requests in {copied['sessions']:,} sessions from {path}"
               f" to {cfg.redact_url(url)}", err=True)


# ---------------------------------------------------------------- finopsd keys, usage


@main.group(name="keys")
def keys_group() -> None:
    """Virtual keys: make, edit, rotate, disable, delete; see spend against budgets."""


def _key_fields(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The definition options of ``keys new`` and ``keys edit``: only those given are sent."""
    options = [
        click.option("--team", help="The key's team (defined in the config or made with the admin API)."),
        click.option("--model", "models", multiple=True, help="A provider/model glob it may use (repeat; default all)."),
        click.option("--budget", "budgets", multiple=True, metavar="USD/PERIOD",
                     help="A budget, e.g. 5/day or 100/month (repeat; periods: minute hour day week month total)."),
        click.option("--rpm", type=int, help="Requests per minute."),
        click.option("--tpm", type=int, help="Tokens per minute."),
        click.option("--expires", help="2027-01-01 or 2027-01-01T12:00:00Z."),
        click.option("--description", help="Free text shown on /keys."),
        click.option("--owner", help="Who answers for the key."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _definition(team: str | None, models: tuple[str, ...], budgets: tuple[str, ...], rpm: int | None,
                tpm: int | None, expires: str | None, description: str | None, owner: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {k: v for k, v in (("team", team), ("expires", expires), ("description", description),
                                              ("owner", owner)) if v is not None}
    if models:
        body["models"] = list(models)
    if budgets:
        try:
            body["budgets"] = [{"usd": float(b.split("/")[0]), "period": b.split("/")[1]} for b in budgets]
        except (ValueError, IndexError):
            raise click.BadParameter("write a budget as USD/PERIOD, e.g. 5/day", param_hint="--budget") from None
    if rpm is not None or tpm is not None:
        body["rate_limit"] = {k: v for k, v in (("requests_per_minute", rpm), ("tokens_per_minute", tpm)) if v}
    return body


def _url_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--url", help="A running gateway (default: the config's server address, else the database"
                        " file directly). Token: $FINOPSD_ADMIN_TOKEN.")(fn)


def _change(config_path: str | None, url: str | None, method: str, path: str,
            body: dict[str, Any] | None = None) -> tuple[dict[str, Any], KeyChange]:
    config, _ = _load(config_path)
    change = KeyChange(config, url)
    try:
        return asyncio.run(change.call(method, path, body)), change
    except Refused as e:
        raise click.ClickException(str(e)) from None


def _shown_once(answer: dict[str, Any], change: KeyChange) -> None:
    key, secret = answer["key"], answer["secret"]
    profile = answer.get("roo_code") or {"base_url": gateway_url(change.config) + "/openai",
                                         "model": next(iter(key.get("models") or []), "")}
    click.echo(f"key {key['name']!r} (version {key['version']}, via the {change.via})")
    click.echo(f"key (shown once): {secret}\n")
    click.echo("Roo Code profile (API Provider: OpenAI Compatible):")
    click.echo(f"  Base URL: {profile['base_url']}\n  API Key:  {secret}\n  Model:    {profile['model'] or '(any)'}")


@keys_group.command(name="new")
@click.option("--name", required=True, help="The key's name: logs, /keys and reports show it, never the key.")
@_key_fields
@click.option("--yaml", "as_yaml", is_flag=True, help="Only print a key and the YAML for the config file.")
@_url_option
@_config_option
def keys_new(name: str, team: str | None, models: tuple[str, ...], budgets: tuple[str, ...], rpm: int | None,
             tpm: int | None, expires: str | None, description: str | None, owner: str | None, as_yaml: bool,
             url: str | None, config_path: str | None) -> None:
    """Make a virtual key, live at once; print it once, with a Roo Code profile.

    finopsd keeps only the key's SHA-256; the key itself cannot be shown again.

    \b
    finopsd keys new --name platform-roo --team platform --budget 50/month --model 'anthropic/*'
    finopsd keys new --name platform-roo --yaml     # for the config file instead
    """
    if as_yaml:
        _print_yaml_key(name, team)
        return
    body = {"name": name, **_definition(team, models, budgets, rpm, tpm, expires, description, owner)}
    _shown_once(*_change(config_path, url, "POST", "/api/keys", body))


@keys_group.command(name="edit")
@click.argument("name")
@_key_fields
@click.option("--enable/--disable", "enabled", default=None, help="Let the key in again, or refuse it.")
@_url_option
@_config_option
def keys_edit(name: str, team: str | None, models: tuple[str, ...], budgets: tuple[str, ...], rpm: int | None,
              tpm: int | None, expires: str | None, description: str | None, owner: str | None,
              enabled: bool | None, url: str | None, config_path: str | None) -> None:
    """Change a dashboard key's fields (those given; the rest stay), live on its next request.

    \b
    finopsd keys edit platform-roo --budget 80/month
    """
    body = _definition(team, models, budgets, rpm, tpm, expires, description, owner)
    if enabled is not None:
        body["enabled"] = enabled
    if not body:
        raise click.UsageError("name at least one field to change")
    answer, change = _change(config_path, url, "PATCH", f"/api/keys/{quote(name, safe='')}", body)
    click.echo(f"key {name!r} is now version {answer['version']} (via the {change.via})")


@keys_group.command(name="rotate")
@click.argument("name")
@click.option("--grace", type=float, default=0, show_default=True,
              help="Seconds the old key keeps working (0: it stops at once).")
@_url_option
@_config_option
def keys_rotate(name: str, grace: float, url: str | None, config_path: str | None) -> None:
    """Give a key a new secret; its name, limits and spend stay."""
    _shown_once(*_change(config_path, url, "POST", f"/api/keys/{quote(name, safe='')}/rotate",
                         {"grace_seconds": grace}))


@keys_group.command(name="disable")
@click.argument("name")
@_url_option
@_config_option
def keys_disable(name: str, url: str | None, config_path: str | None) -> None:
    """Refuse a key from its next request on (``keys edit NAME --enable`` lets it in again)."""
    _, change = _change(config_path, url, "PATCH", f"/api/keys/{quote(name, safe='')}", {"enabled": False})
    click.echo(f"key {name!r} disabled (via the {change.via})")


@keys_group.command(name="delete")
@click.argument("name")
@_url_option
@_config_option
def keys_delete(name: str, url: str | None, config_path: str | None) -> None:
    """Revoke a key at once; its spend and log rows stay, under its name."""
    _, change = _change(config_path, url, "DELETE", f"/api/keys/{quote(name, safe='')}")
    click.echo(f"key {name!r} deleted (via the {change.via})")


def _print_yaml_key(name: str, team: str | None) -> None:
    """A key and the YAML to add under `virtual_keys:` (``keys new --yaml``)."""
    key, digest = new_virtual_key()
    name_text, team_text = _yaml_text(name), _yaml_text(team or "")
    env_name = re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_") + "_KEY"
    team_line = f"\n    team: {team_text}" if team else ""
    click.echo(f"key (shown once): {key}\n")
    click.echo("# add under virtual_keys: in the config, then reload (SIGHUP) or restart")
    click.echo(f"virtual_keys:\n  - name: {name_text}\n    key_sha256: \"{digest}\"{team_line}\n")
    click.echo(f"# or keep the key in the environment ({env_name}={key[:8]}…) and write instead:")
    click.echo(f"  - name: {name_text}\n    key: env:{env_name}{team_line}")
    if team:
        click.echo(f"\n# the team needs an entry too:\nteams:\n  {team_text}: {{}}")


def _yaml_text(text: str) -> str:
    """Plain when YAML reads it back as the same string, else a JSON (= YAML double-quoted) string."""
    plain = re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", text) and text.lower() not in (
        "true", "false", "yes", "no", "on", "off", "null", "y", "n")
    return text if plain else json.dumps(text)


def _budget_lines(budgets: list[dict[str, Any]]) -> list[str]:
    return [
        f"${b['spent_usd']:.4f} / ${b['usd']:.2f} {b['period']}  {b['percent']:.1f}%  "
        f"{'resets ' + b['resets_at'] if b['resets_at'] else 'never resets'}"
        for b in budgets
    ] or ["no budget"]


def _rate_text(rate: dict[str, Any]) -> str:
    def one(used: int, limit: int | None, unit: str) -> str:
        return f"{used:,}{'/' + format(limit, ',') if limit is not None else ''} {unit}/min"

    return f"{one(rate['requests_last_minute'], rate['requests_per_minute'], 'req')}, " \
        f"{one(rate['tokens_last_minute'], rate['tokens_per_minute'], 'tok')}"


@keys_group.command(name="list")
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print the /api/keys answer.")
def keys_list(config_path: str | None, as_json: bool) -> None:
    """Show each key and team (the config's and the dashboard's): spend per budget, % used, reset time, rate.

    Spend is read from the request log (storage.path or storage.url), also while the gateway runs.
    """
    config, _ = _load(config_path)
    if config.storage.url or Path(config.storage.path).exists():
        async def with_dashboard(store: LogStore) -> dict[str, Any]:
            keys = await KeyStore.open(config.storage)
            await keys.close()
            return await offline_report(keys.merged(config), store)

        report = asyncio.run(_with_logstore(config, with_dashboard))
    else:  # nothing logged yet: every budget is untouched
        report = asyncio.run(offline_report(config, None))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    rows = [(f"key {k['name']}", k["team"] or "-", k["status"], k["budgets"], k["rate"]) for k in report["keys"]]
    rows += [(f"team {t['name']}", ",".join(t["keys"]) or "-", "", t["budgets"], t["rate"]) for t in report["teams"]]
    if not rows:
        click.echo("no virtual keys or teams configured")
        return
    width = max(len(r[0]) for r in rows)
    for who, team, status, budgets, rate in rows:
        lines = _budget_lines(budgets)
        click.echo(f"{who:<{width}}  {team:<12} {status:<8} {lines[0]}")
        for line in lines[1:]:
            click.echo(f"{'':<{width}}  {'':<12} {'':<8} {line}")
        click.echo(f"{'':<{width}}  {'':<12} {'':<8} rate: {_rate_text(rate)}")


@main.group(name="mcp")
def mcp_group() -> None:
    """The upstream MCP servers whose tools /mcp serves."""


@mcp_group.command(name="list")
@_config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON document: each server's state and tools.")
def mcp_list(config_path: str | None, as_json: bool) -> None:
    """Connect to each configured MCP server once; show its state and tools; exit 1 if one is down.

    \b
    finopsd mcp list --config /etc/finopsd/config.yaml
    """
    from finopsd.mcp_upstream import probe  # the MCP SDK loads only for this command

    config, _ = _load(config_path)
    servers = asyncio.run(probe(config.mcp))
    if as_json:
        click.echo(json.dumps({"servers": servers}, indent=2))
    elif not servers:
        click.echo("no MCP servers configured (add them under `mcp.servers`)")
    else:
        width = max(len(s["name"]) for s in servers)
        for s in servers:
            detail = (f"{s['protocol_version']}  {len(s['tools'])} tools" if s["state"] == "up"
                      else f"error: {s['last_error']}")
            click.echo(f"{s['name']:<{width}}  {s['state']:<5} {s['transport']:<16} {detail}")
            exposed = [f"{s['name']}-{tool['name']}" for tool in s["tools"]]
            tool_width = max(map(len, exposed), default=0)
            for name, tool in zip(exposed, s["tools"]):
                summary = (tool.get("description") or "").strip().splitlines()[:1]
                click.echo(f"  {name:<{tool_width}}  {summary[0][:100] if summary else ''}".rstrip())
    if any(s["state"] != "up" for s in servers):
        sys.exit(1)


USAGE_COLUMNS = ("requests", "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens",
                 "cost_usd", "cost_without_cache_usd", "cache_savings_usd", "unpriced", "estimated")


@main.command(name="usage")
@_config_option
@click.option("--by", type=click.Choice(["key", "team", "model", "provider", "session", "user", "project", "tag", "day"]),
              default="key", show_default=True,
              help="What to group by (session: one row per agent task; user, project, tag: the x-finops-* headers"
              " or the key's pins; a request with two tags counts under each; day: per UTC day).")
@click.option("--since", help="ISO 8601 date or time (UTC unless it has an offset) or epoch seconds;"
              " default: the start of this month (UTC).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header row.")
def usage_command(config_path: str | None, by: str, since: str | None, as_json: bool, as_csv: bool) -> None:
    """Requests, tokens and cost per key, team, model, provider, session, user, project, tag or UTC day.

    Rows flagged `unpriced` cost 0 (no price known: add one under `pricing:`);
    `estimated` rows had no usage from the upstream (e.g. the client hung up).
    `saved USD` is what prompt caching saved: the cost had nothing been cached, minus the cost.

    \b
    finopsd usage --by team --since 2026-01-01
    finopsd usage --by model --csv > usage.csv
    finopsd usage --by session --since 2026-01-31    # the costliest agent tasks first
    finopsd usage --by user                          # who spent what inside one team key
    finopsd usage --by day                           # this month day by day
    """
    config, _ = _load(config_path)
    try:
        start = parse_time(since, "--since") if since else window_start("month", time.time())
    except BadRequest as e:
        raise click.BadParameter(e.message, param_hint="--since") from None
    rows = asyncio.run(_with_logstore(config, lambda store: store.usage_by(by, since=start)))
    if as_json:
        click.echo(json.dumps({"by": by, "since": iso(start), "rows": rows}, indent=2))
        return
    if as_csv:
        writer = csv.writer(sys.stdout)
        writer.writerow([by, *USAGE_COLUMNS])
        for row in rows:
            writer.writerow([row[by], *(row[c] for c in USAGE_COLUMNS)])
        return
    click.echo(f"since {iso(start)}, by {by}")
    names = [str(row[by] if row[by] is not None else "(none)") for row in rows]
    width = max(32, *map(len, names)) if names else 32  # session ids run past 32 characters
    click.echo(f"{by:<{width}} {'requests':>9} {'prompt':>12} {'completion':>11} {'cost USD':>11} {'saved USD':>10}  flags")
    for name, row in zip(names, rows):
        flags = ", ".join(f"{row[f]} {f}" for f in ("unpriced", "estimated") if row[f])
        click.echo(f"{name:<{width}} {row['requests']:>9,} "
                   f"{row['prompt_tokens']:>12,} {row['completion_tokens']:>11,} {row['cost_usd']:>11.4f} "
                   f"{row['cache_savings_usd']:>10.4f}  {flags}")
    click.echo(f"{'total':<{width}} {sum(r['requests'] for r in rows):>9,} "
               f"{sum(r['prompt_tokens'] for r in rows):>12,} "
               f"{sum(r['completion_tokens'] for r in rows):>11,} {sum(r['cost_usd'] for r in rows):>11.4f} "
               f"{sum(r['cache_savings_usd'] for r in rows):>10.4f}")
