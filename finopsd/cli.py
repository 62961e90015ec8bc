"""The ``finopsd`` command."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys

import click

from finopsd import __version__, config as cfg
from finopsd.server import config_path_from, serve


@click.group()
@click.version_option(__version__, prog_name="finopsd")
def main() -> None:
    """FinOps gateway: one OpenAI-compatible endpoint for every LLM provider."""


def _load(path: str | None) -> tuple[cfg.Config, str | None]:
    p = config_path_from(path, dict(os.environ))
    try:
        return (cfg.load(p) if p else cfg.embedded_default()), (str(p) if p else None)
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

    asyncio.run(serve(config, reload if path else None, lambda text: click.echo(text, err=False)))


@main.command(name="check")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="YAML config file to validate.")
def check_command(config_path: str) -> None:
    """Validate a config file and show what it configures; exit 1 on errors."""
    try:
        config = cfg.load(config_path)
    except cfg.ConfigError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    click.echo(f"{config_path}: OK")
    click.echo(f"listen: {config.server.host}:{config.server.port}")
    click.echo(f"storage: {config.storage.path}")
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
