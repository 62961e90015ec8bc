"""YAML config → frozen dataclasses. Every error names the file line and key path.

The YAML is composed (not just loaded) so each value keeps its source line;
validation walks the tree and raises ``ConfigError("config.yaml:14:
providers.groq.kyes: unknown key")``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Callable, Final, Mapping

import yaml

from finopsd.providers.registry import KNOWN_PROVIDERS, PROTOCOLS

DEFAULT_ALLOWED_HEADERS: Final = (
    "Content-Type",
    "Authorization",
    "X-Requested-With",
    "X-Stainless-Timeout",
    "X-Api-Key",
)


class ConfigError(Exception):
    """A config that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class CorsConfig:
    allowed_origins: tuple[str, ...] = ("*",)
    allowed_headers: tuple[str, ...] = DEFAULT_ALLOWED_HEADERS
    allowed_methods: tuple[str, ...] = ("GET", "POST", "DELETE", "OPTIONS")
    max_age: int = 600


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_mb: float = 32
    drain_timeout_s: float = 30
    cors: CorsConfig = field(default_factory=CorsConfig)
    # guards /logs and /api/*; when None they answer loopback clients only
    admin_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class StorageConfig:
    path: str = ""


@dataclass(frozen=True)
class LogsConfig:
    content: bool = True  # false: rows keep metadata and usage, no conversation text
    retention_days: float = 30


@dataclass(frozen=True)
class Timeouts:
    """Seconds. ``first_byte`` waits for response headers; ``idle`` between stream reads."""

    connect: float = 10
    first_byte: float = 120
    idle: float = 120
    total: float = 900


@dataclass(frozen=True, repr=False)
class ProviderKey:
    name: str
    value: str
    weight: float = 1

    def __repr__(self) -> str:  # the value never reaches a log line
        return f"ProviderKey(name={self.name!r}, weight={self.weight})"


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    type: str
    base_url: str
    keys: tuple[ProviderKey, ...] = ()
    models: tuple[str, ...] | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    headers: Mapping[str, str] = field(default_factory=dict)
    max_retries: int = 0
    retry_backoff_ms: int = 250
    # protocol-specific settings; each adapter reads the ones it needs
    api_version: str | None = None
    region: str | None = None
    project: str | None = None
    location: str | None = None
    credentials_file: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None


PERIODS: Final = ("minute", "hour", "day", "week", "month", "total")


@dataclass(frozen=True)
class Budget:
    """USD a key or team may spend per calendar period (UTC); ``total`` never resets."""

    usd: float
    period: str


@dataclass(frozen=True)
class RateLimit:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


@dataclass(frozen=True)
class TeamConfig:
    name: str
    budgets: tuple[Budget, ...] = ()
    rate_limit: RateLimit = field(default_factory=RateLimit)


@dataclass(frozen=True, repr=False)
class VirtualKey:
    """A client key, known only by its SHA-256 digest (hex); the plaintext is never kept."""

    name: str
    key_sha256: str
    team: str | None = None
    models: tuple[str, ...] | None = None  # fnmatch globs over provider/model; None: every model
    # fnmatch globs over the exposed MCP tool names (``server-tool``); None: every tool
    mcp_tools: tuple[str, ...] | None = None
    rate_limit: RateLimit = field(default_factory=RateLimit)
    budgets: tuple[Budget, ...] = ()
    expires: float | None = None  # epoch seconds (UTC); the key is refused from then on
    enabled: bool = True

    def __repr__(self) -> str:  # the digest is not a secret, but it has no business in a log line
        return f"VirtualKey(name={self.name!r}, team={self.team!r})"


@dataclass(frozen=True)
class AuthConfig:
    # None: required exactly when virtual_keys are configured
    required: bool | None = None


@dataclass(frozen=True)
class Price:
    """USD per million tokens; cache reads and writes cost ``input`` unless given."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None


MCP_TRANSPORTS: Final = ("stdio", "streamable_http", "sse")


@dataclass(frozen=True, repr=False)
class McpServerConfig:
    """An upstream MCP server; its tools are exposed at ``/mcp`` as ``{name}-{tool}``."""

    name: str
    transport: str  # one of MCP_TRANSPORTS
    command: str | None = None  # stdio
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)  # values may be secrets (env:NAME)
    cwd: str | None = None
    url: str | None = None  # streamable_http, sse
    headers: Mapping[str, str] = field(default_factory=dict)  # values may be secrets (env:NAME)
    timeout_s: float = 60  # connecting, and each tool call

    def __repr__(self) -> str:  # env and header values never reach a log line
        return f"McpServerConfig(name={self.name!r}, transport={self.transport!r})"


@dataclass(frozen=True)
class McpConfig:
    servers: Mapping[str, McpServerConfig] = field(default_factory=dict)
    health_interval_s: float = 30  # how often a quiet connection is checked (its tool list refetched)


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    logs: LogsConfig = field(default_factory=LogsConfig)
    providers: Mapping[str, ProviderConfig] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    # model or alias → models tried in order when it fails before answering
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # /anthropic route: Claude Code's model names → any provider/model (`anthropic.model_map`)
    anthropic_model_map: Mapping[str, str] = field(default_factory=dict)
    auth: AuthConfig = field(default_factory=AuthConfig)
    teams: Mapping[str, TeamConfig] = field(default_factory=dict)
    virtual_keys: tuple[VirtualKey, ...] = ()
    # "provider/model" or a glob of it → price; wins over genai-prices
    pricing: Mapping[str, Price] = field(default_factory=dict)
    mcp: McpConfig = field(default_factory=McpConfig)
    source: str = "<embedded default>"

    @property
    def auth_required(self) -> bool:
        return bool(self.virtual_keys) if self.auth.required is None else self.auth.required


# --- reading YAML with line numbers -------------------------------------------------


class _Doc:
    """Plain data from YAML plus the source line of every key path."""

    def __init__(self, filename: str, text: str) -> None:
        self.filename = filename
        self.lines: dict[str, int] = {}
        self._scalars = yaml.SafeLoader("")
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{filename}:{mark.line + 1}" if mark else filename
            raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
        self.data = self._plain(node, "") if node is not None else {}

    def _plain(self, node: yaml.Node, path: str) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for k, v in node.value:
                key = str(k.value)
                sub = f"{path}.{key}" if path else key
                self.lines[sub] = k.start_mark.line + 1
                out[key] = self._plain(v, sub)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._plain(v, f"{path}[{i}]") for i, v in enumerate(node.value)]
        return self._scalars.construct_object(node)

    def error(self, path: str, message: str) -> ConfigError:
        probe = path
        while probe and probe not in self.lines:
            probe = probe.rsplit(".", 1)[0] if "." in probe else ""
        line = self.lines.get(probe)
        where = f"{self.filename}:{line}" if line else self.filename
        return ConfigError(f"{where}: {path}: {message}" if path else f"{where}: {message}")


class _Reader:
    """Typed access to one mapping of the document; every problem is a located error."""

    def __init__(self, doc: _Doc, data: Any, path: str, allowed: set[str]) -> None:
        self.doc, self.path = doc, path
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise doc.error(path, f"must be a mapping, got {_kind(data)}")
        for key in data:
            if key not in allowed:
                raise doc.error(self.sub(key), "unknown key")
        self.data = data

    def sub(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        if key not in self.data or self.data[key] is None:
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
            raise self.doc.error(self.sub(key), f"must be {_name(kind)}, got {_kind(value)}")
        return value

    def number(self, key: str, default: float, minimum: float = 0) -> float:
        value = self.get(key, float, default)
        if value < minimum:
            raise self.doc.error(self.sub(key), f"must be at least {minimum}")
        return value

    def strings(self, key: str, default: tuple[str, ...] | None) -> tuple[str, ...] | None:
        value = self.get(key, list, None)
        if value is None:
            return default
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.doc.error(f"{self.sub(key)}[{i}]", f"must be a string, got {_kind(item)}")
        return tuple(value)

    def secret(self, key: str, env: Mapping[str, str]) -> str | None:
        value = self.get(key, str)
        return None if value is None else resolve_env(value, env, lambda m: self.doc.error(self.sub(key), m))


def resolve_env(value: str, env: Mapping[str, str], error: Callable[[str], Exception]) -> str:
    """``env:NAME`` → the variable's value; anything else is taken literally."""
    if not value.startswith("env:"):
        return value
    name = value[4:]
    if not env.get(name):
        raise error(f"environment variable {name} is not set")
    return env[name]


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a mapping"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


# --- sections -----------------------------------------------------------------------


def _server(doc: _Doc, data: Any, env: Mapping[str, str]) -> ServerConfig:
    r = _Reader(doc, data, "server", {"host", "port", "max_body_mb", "drain_timeout_s", "cors", "admin_token"})
    port = r.get("port", int, 8080)
    if not 0 <= port <= 65535:
        raise doc.error("server.port", "must be between 0 and 65535")
    c = _Reader(doc, r.data.get("cors"), "server.cors",
                {"allowed_origins", "allowed_headers", "allowed_methods", "max_age"})
    cors = CorsConfig(
        allowed_origins=c.strings("allowed_origins", ("*",)) or (),
        allowed_headers=c.strings("allowed_headers", DEFAULT_ALLOWED_HEADERS) or (),
        allowed_methods=c.strings("allowed_methods", CorsConfig.allowed_methods) or (),
        max_age=c.get("max_age", int, 600),
    )
    return ServerConfig(
        host=r.get("host", str, "127.0.0.1"),
        port=port,
        max_body_mb=r.number("max_body_mb", 32, minimum=0.001),
        drain_timeout_s=r.number("drain_timeout_s", 30),
        cors=cors,
        admin_token=r.secret("admin_token", env),
    )


_PROVIDER_KEYS: Final = {
    "type", "base_url", "keys", "models", "timeouts", "headers", "max_retries", "retry_backoff_ms",
    "api_version", "region", "project", "location", "credentials_file",
    "access_key_id", "secret_access_key", "session_token",
}


def _provider(doc: _Doc, name: str, data: Any, env: Mapping[str, str]) -> ProviderConfig:
    path = f"providers.{name}"
    r = _Reader(doc, data, path, _PROVIDER_KEYS)
    known = KNOWN_PROVIDERS.get(name)
    ptype = r.get("type", str, known.protocol if known else None)
    if ptype is None:
        raise doc.error(path, f"unknown provider; set `type` to one of: {', '.join(sorted(PROTOCOLS))}")
    if ptype not in PROTOCOLS:
        raise doc.error(f"{path}.type", f"unknown type {ptype!r}; one of: {', '.join(sorted(PROTOCOLS))}")
    base_url = r.get("base_url", str, known.base_url if known else None)
    if not base_url and ptype not in ("vertex", "bedrock"):
        raise doc.error(path, "needs `base_url`")
    keys = []
    for i, item in enumerate(r.get("keys", list, [])):
        kr = _Reader(doc, item, f"{path}.keys[{i}]", {"name", "value", "weight"})
        value = kr.secret("value", env)
        if value is None:
            raise doc.error(f"{path}.keys[{i}].value", "is required")
        weight = kr.number("weight", 1)
        keys.append(ProviderKey(name=kr.get("name", str, f"{name}-{i}"), value=value, weight=weight))
    t = _Reader(doc, r.data.get("timeouts"), f"{path}.timeouts", {"connect", "first_byte", "idle", "total"})
    timeouts = Timeouts(
        connect=t.number("connect", Timeouts.connect, 0.001),
        first_byte=t.number("first_byte", Timeouts.first_byte, 0.001),
        idle=t.number("idle", Timeouts.idle, 0.001),
        total=t.number("total", Timeouts.total, 0.001),
    )
    h = _Reader(doc, r.data.get("headers"), f"{path}.headers", set(r.data.get("headers") or {}))
    headers = {k: h.secret(k, env) or "" for k in h.data}
    return ProviderConfig(
        name=name,
        type=ptype,
        base_url=(base_url or "").rstrip("/"),
        keys=tuple(keys),
        models=r.strings("models", None),
        timeouts=timeouts,
        headers=headers,
        max_retries=r.get("max_retries", int, 0),
        retry_backoff_ms=r.get("retry_backoff_ms", int, 250),
        api_version=r.get("api_version", str),
        region=r.get("region", str),
        project=r.get("project", str),
        location=r.get("location", str),
        credentials_file=r.get("credentials_file", str),
        access_key_id=r.secret("access_key_id", env),
        secret_access_key=r.secret("secret_access_key", env),
        session_token=r.secret("session_token", env),
    )


# --- governance: auth, teams, virtual keys, pricing ----------------------------------

_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_VIRTUAL_KEY_KEYS: Final = {
    "name", "key", "key_sha256", "team", "models", "mcp_tools", "rate_limit", "budgets", "expires", "enabled",
}


def _budgets(doc: _Doc, data: Any, path: str) -> tuple[Budget, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        raise doc.error(path, f"must be a list of {{usd, period}}, got {_kind(data)}")
    out = []
    for i, item in enumerate(data):
        r = _Reader(doc, item, f"{path}[{i}]", {"usd", "period"})
        usd = r.get("usd", float)
        if usd is None or usd < 0:
            raise doc.error(r.sub("usd"), "is required, a number of USD >= 0")
        period = r.get("period", str)
        if period not in PERIODS:
            raise doc.error(r.sub("period"), f"must be one of {', '.join(PERIODS)}")
        out.append(Budget(usd, period))
    return tuple(out)


def _rate_limit(doc: _Doc, data: Any, path: str) -> RateLimit:
    r = _Reader(doc, data, path, {"requests_per_minute", "tokens_per_minute"})
    values: dict[str, int | None] = {}
    for key in ("requests_per_minute", "tokens_per_minute"):
        value = r.get(key, int)
        if value is not None and value < 1:
            raise doc.error(r.sub(key), "must be at least 1")
        values[key] = value
    return RateLimit(**values)


def _expiry(doc: _Doc, path: str, value: Any) -> float | None:
    """YAML reads ``2027-01-01`` as a date (the key expires at its start, UTC) and a full time as datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise doc.error(path, "must be a date (2027-01-01) or a time (2027-01-01T12:00:00Z)") from None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    else:
        raise doc.error(path, f"must be a date (2027-01-01), got {_kind(value)}")
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _virtual_key(doc: _Doc, path: str, data: Any, env: Mapping[str, str], teams: Mapping[str, TeamConfig]) -> VirtualKey:
    r = _Reader(doc, data, path, _VIRTUAL_KEY_KEYS)
    name = r.get("name", str)
    if not name:
        raise doc.error(path, "needs `name`")
    digest, ref = r.get("key_sha256", str), r.get("key", str)
    if (digest is None) == (ref is None):
        raise doc.error(path, "needs exactly one of `key_sha256` and `key: env:NAME`")
    if ref is not None:
        if not ref.startswith("env:"):
            raise doc.error(r.sub("key"), "must be env:NAME; a key written in the file would be a plaintext"
                            " secret (write its key_sha256 instead)")
        # hashed here; the plaintext is not kept in the Config
        digest = hashlib.sha256(resolve_env(ref, env, lambda m: doc.error(r.sub("key"), m)).encode()).hexdigest()
    else:
        assert digest is not None
        digest = digest.strip().lower()
        if not _HEX64.fullmatch(digest):
            raise doc.error(r.sub("key_sha256"), "must be 64 hex digits (`finopsd keys new` prints it)")
    team = r.get("team", str)
    if team is not None and team not in teams:
        raise doc.error(r.sub("team"), f"team {team!r} is not defined under `teams` (add `{team}: {{}}` there)")
    return VirtualKey(
        name=name,
        key_sha256=digest,
        team=team,
        models=r.strings("models", None),
        mcp_tools=r.strings("mcp_tools", None),
        rate_limit=_rate_limit(doc, r.data.get("rate_limit"), r.sub("rate_limit")),
        budgets=_budgets(doc, r.data.get("budgets"), r.sub("budgets")),
        expires=_expiry(doc, r.sub("expires"), r.data.get("expires")),
        enabled=r.get("enabled", bool, True),
    )


def _governance(
    doc: _Doc, top: _Reader, env: Mapping[str, str]
) -> tuple[AuthConfig, dict[str, TeamConfig], tuple[VirtualKey, ...], dict[str, Price]]:
    au = _Reader(doc, top.data.get("auth"), "auth", {"required"})
    auth = AuthConfig(required=au.get("required", bool))
    tm = _Reader(doc, top.data.get("teams"), "teams", set(top.data.get("teams") or {}))
    teams = {}
    for name in tm.data:
        r = _Reader(doc, tm.data[name], f"teams.{name}", {"budgets", "rate_limit"})
        teams[name] = TeamConfig(name, _budgets(doc, r.data.get("budgets"), r.sub("budgets")),
                                 _rate_limit(doc, r.data.get("rate_limit"), r.sub("rate_limit")))
    items = top.get("virtual_keys", list, [])
    keys: list[VirtualKey] = []
    for i, item in enumerate(items):
        key = _virtual_key(doc, f"virtual_keys[{i}]", item, env, teams)
        for other in keys:
            if other.name == key.name:
                raise doc.error(f"virtual_keys[{i}].name", f"{key.name!r} is used by another key")
            if other.key_sha256 == key.key_sha256:
                raise doc.error(f"virtual_keys[{i}]", f"the same key as {other.name!r}")
        keys.append(key)
    pr = _Reader(doc, top.data.get("pricing"), "pricing", set(top.data.get("pricing") or {}))
    pricing = {}
    for model in pr.data:
        path = f"pricing.{model}"
        if "/" not in model:
            raise doc.error(path, "must name a model as provider/model (globs allowed: vllm/*)")
        r = _Reader(doc, pr.data[model], path, {"input", "output", "cache_read", "cache_write"})
        values: dict[str, float | None] = {}
        for field_name in ("input", "output", "cache_read", "cache_write"):
            value = r.get(field_name, float)
            if value is None and field_name in ("input", "output"):
                raise doc.error(r.sub(field_name), "is required (USD per million tokens)")
            if value is not None and value < 0:
                raise doc.error(r.sub(field_name), "must be at least 0")
            values[field_name] = value
        pricing[model] = Price(**values)  # type: ignore[arg-type]
    return auth, teams, tuple(keys), pricing


# --- mcp: upstream MCP servers -------------------------------------------------------

_MCP_SERVER_NAME: Final = re.compile(r"[A-Za-z0-9_]+")
_MCP_SERVER_KEYS: Final = {"command", "args", "env", "cwd", "url", "headers", "transport", "timeout_s"}


def _secrets(doc: _Doc, data: Any, path: str, env: Mapping[str, str]) -> dict[str, str]:
    """A mapping of strings whose values may be ``env:NAME`` references."""
    r = _Reader(doc, data, path, set(data) if isinstance(data, dict) else set())
    return {k: r.secret(k, env) or "" for k in r.data}


def _mcp_server(doc: _Doc, name: str, data: Any, env: Mapping[str, str]) -> McpServerConfig:
    path = f"mcp.servers.{name}"
    if not _MCP_SERVER_NAME.fullmatch(name):
        # a "-" would make ``{server}-{tool}`` ambiguous to split
        raise doc.error(path, "a server name may hold only letters, digits and _"
                        " (tools are exposed as <server>-<tool>)")
    r = _Reader(doc, data, path, _MCP_SERVER_KEYS)
    command, url = r.get("command", str), r.get("url", str)
    if (command is None) == (url is None):
        raise doc.error(path, "needs exactly one of `command` (a stdio server) and `url` (an HTTP server)")
    transport = r.get("transport", str, "stdio" if command is not None else "streamable_http")
    if transport not in MCP_TRANSPORTS:
        raise doc.error(r.sub("transport"), f"must be one of {', '.join(MCP_TRANSPORTS)}")
    if (transport == "stdio") != (command is not None):
        needs = "stdio needs `command`" if transport == "stdio" else f"{transport} needs `url`"
        raise doc.error(r.sub("transport"), needs)
    if url is not None and not url.startswith(("http://", "https://")):
        raise doc.error(r.sub("url"), "must be an http:// or https:// URL")
    for key in ("args", "env", "cwd") if url is not None else ("headers",):
        if key in r.data:
            raise doc.error(r.sub(key), f"applies to {'`command`' if url is not None else '`url`'} servers only")
    return McpServerConfig(
        name=name,
        transport=transport,
        command=command,
        args=r.strings("args", ()) or (),
        env=_secrets(doc, r.data.get("env"), r.sub("env"), env),
        cwd=r.get("cwd", str),
        url=url,
        headers=_secrets(doc, r.data.get("headers"), r.sub("headers"), env),
        timeout_s=r.number("timeout_s", McpServerConfig.timeout_s, minimum=0.001),
    )


def _mcp(doc: _Doc, data: Any, env: Mapping[str, str]) -> McpConfig:
    r = _Reader(doc, data, "mcp", {"servers", "health_interval_s"})
    servers = r.data.get("servers")
    sv = _Reader(doc, servers, "mcp.servers", set(servers) if isinstance(servers, dict) else set())
    return McpConfig(
        servers={name: _mcp_server(doc, str(name), sv.data[name], env) for name in sv.data},
        health_interval_s=r.number("health_interval_s", McpConfig.health_interval_s, minimum=0.01),
    )


def default_data_dir(env: Mapping[str, str]) -> Path:
    """The per-user data dir (XDG), where SQLite lives when the config names no path."""
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local" / "share")
    return Path(base) / "finopsd"


def parse(text: str, filename: str = "config.yaml", env: Mapping[str, str] | None = None) -> Config:
    """Validate YAML text into a Config; raise ConfigError naming file line and key path."""
    env = os.environ if env is None else env
    doc = _Doc(filename, text)
    top = _Reader(doc, doc.data, "", {"server", "storage", "logs", "providers", "aliases", "fallbacks", "anthropic",
                                      "auth", "teams", "virtual_keys", "pricing", "mcp"})
    st = _Reader(doc, top.data.get("storage"), "storage", {"path"})
    storage = StorageConfig(path=st.get("path", str) or str(default_data_dir(env) / "finops.db"))
    pr = _Reader(doc, top.data.get("providers"), "providers", set(top.data.get("providers") or {}))
    providers = {name: _provider(doc, name, pr.data[name], env) for name in pr.data}
    al = _Reader(doc, top.data.get("aliases"), "aliases", set(top.data.get("aliases") or {}))
    aliases = {name: al.get(name, str) for name in al.data}
    for name, target in aliases.items():
        if "/" not in target:
            raise doc.error(f"aliases.{name}", "must name a model as provider/model")
    fb = _Reader(doc, top.data.get("fallbacks"), "fallbacks", set(top.data.get("fallbacks") or {}))
    fallbacks = {name: fb.strings(name, ()) or () for name in fb.data}
    for name, targets in fallbacks.items():
        for i, target in enumerate(targets):
            prefix, slash, _ = aliases.get(target, target).partition("/")
            if not slash or prefix not in providers:
                raise doc.error(f"fallbacks.{name}[{i}]", f"{target!r} names no configured provider")
    an = _Reader(doc, top.data.get("anthropic"), "anthropic", {"model_map"})
    mm = _Reader(doc, an.data.get("model_map"), "anthropic.model_map", set(an.data.get("model_map") or {}))
    model_map = {name: mm.get(name, str) for name in mm.data}
    for name, target in model_map.items():
        prefix, slash, _ = aliases.get(target, target).partition("/")
        if not slash or prefix not in providers:
            raise doc.error(f"anthropic.model_map.{name}", f"{target!r} names no configured provider")
    lg = _Reader(doc, top.data.get("logs"), "logs", {"content", "retention_days"})
    logs = LogsConfig(content=lg.get("content", bool, True), retention_days=lg.number("retention_days", 30))
    auth, teams, virtual_keys, pricing = _governance(doc, top, env)
    return Config(
        server=_server(doc, top.data.get("server"), env),
        storage=storage,
        logs=logs,
        providers=providers,
        aliases=aliases,
        fallbacks=fallbacks,
        anthropic_model_map=model_map,
        auth=auth,
        teams=teams,
        virtual_keys=virtual_keys,
        pricing=pricing,
        mcp=_mcp(doc, top.data.get("mcp"), env),
        source=filename,
    )


def load(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror}") from None
    return parse(text, str(p), env)


def embedded_default(env: Mapping[str, str] | None = None) -> Config:
    """The config used with no file: loopback, per-user SQLite, every provider whose key is set."""
    env = os.environ if env is None else env
    providers = {
        name: ProviderConfig(
            name=name,
            type=spec.protocol,
            base_url=spec.base_url,
            keys=(ProviderKey(name=f"{name}-0", value=env[spec.key_env]),),
        )
        for name, spec in KNOWN_PROVIDERS.items()
        if spec.key_env and env.get(spec.key_env)
    }
    if "bedrock" in providers:  # Bedrock API keys need a region; AWS tools name it in these variables
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
        providers["bedrock"] = replace(providers["bedrock"], region=region)
    return Config(
        storage=StorageConfig(path=str(default_data_dir(env) / "finops.db")),
        providers=providers,
    )
