"""YAML config → frozen dataclasses. Every error names the file line and key path.

``yamldoc`` reads YAML keeping each value's line; this module holds the server,
storage, logs, providers, aliases, fallbacks, anthropic and gemini sections and puts the
whole ``Config`` together; ``keyconfig`` and ``mcpconfig`` hold their sections.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any, Final, Mapping
from urllib.parse import urlsplit, urlunsplit

from finopsd.caching import CachingConfig, caching_section
from finopsd.keyconfig import AuthConfig, Budget, Price, RateLimit, TeamConfig, VirtualKey, governance_section
from finopsd.alerts.config import AlertsConfig, alerts_section
from finopsd.mcpconfig import McpConfig, McpServerConfig, mcp_section
from finopsd.providers.registry import KNOWN_PROVIDERS, PROTOCOLS
from finopsd.yamldoc import ConfigError, Doc, Reader, resolve_env

IPNetwork = IPv4Network | IPv6Network

# the sections' types, importable from here as before the split
__all__ = [
    "AuthConfig", "Budget", "CachingConfig", "Config", "ConfigError", "CorsConfig", "LogsConfig", "McpConfig",
    "McpServerConfig", "Price", "ProviderConfig", "ProviderKey", "RateLimit", "ServerConfig", "StateConfig",
    "StorageConfig", "TeamConfig", "Timeouts", "VirtualKey", "default_data_dir", "embedded_default", "load",
    "parse", "redact_text", "redact_url", "resolve_env", "url_password",
]

DEFAULT_ALLOWED_HEADERS: Final = (
    "Content-Type",
    "Authorization",
    "X-Requested-With",
    "X-Stainless-Timeout",
    "X-Api-Key",
    "X-Goog-Api-Key",  # the Google GenAI SDKs' key header, and their client header
    "X-Goog-Api-Client",
)


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
    max_body_mb: float = 32  # after decompression too
    # SIGTERM: in-flight requests, the cut of those still running and the log flush, all told
    drain_timeout_s: float = 30
    # an idle connection, or one still sending its request headers, is closed after this long
    keepalive_timeout_s: float = 15
    body_timeout_s: float = 60  # the whole request body must arrive within this
    # open client connections; at the cap idle ones are closed to make room, else new ones get 503
    max_connections: int = 1000
    cors: CorsConfig = field(default_factory=CorsConfig)
    # guards /logs and /api/*; when None they answer loopback clients only
    admin_token: str | None = field(default=None, repr=False)
    # balancers whose X-Forwarded-For / X-Forwarded-Proto are believed (finopsd.forwarded)
    trusted_proxies: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True)
class StorageConfig:
    path: str = ""
    # postgresql://…: the log, sessions, roll-ups, alerts and dashboard keys live there, not in ``path``
    url: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class StateConfig:
    # redis://…: rate windows, budget counters and parked upstream keys shared by every instance
    redis_url: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class LogsConfig:
    content: bool = True  # false: rows keep metadata and usage, no conversation text
    retention_days: float = 30


@dataclass(frozen=True)
class MetricsConfig:
    public: bool = False  # /metrics without the admin token (a scraper on another host)
    per_key: bool = False  # virtual key names as labels (bounded by the config's key list)


@dataclass(frozen=True)
class OtelConfig:
    endpoint: str | None = None  # OTLP/HTTP traces URL (…/v1/traces); None: no tracing
    content: bool = False  # export the conversation as span attributes
    service_name: str = "finopsd"
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # e.g. a collector's API key


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
    # decoded sizes; past one the exchange fails (502, or an error event once streaming)
    max_answer_mb: float = 32  # a whole (non-stream) answer, held in memory to be parsed
    max_stream_mb: float = 256  # a whole stream, passed on as it comes
    max_event_mb: float = 8  # one stream line or event
    # protocol-specific settings; each adapter reads the ones it needs
    api_version: str | None = None
    region: str | None = None
    project: str | None = None
    location: str | None = None
    credentials_file: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    # gateway-placed prompt-cache breakpoints (Claude on anthropic, bedrock, vertex)
    caching: CachingConfig = field(default_factory=CachingConfig)


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    state: StateConfig = field(default_factory=StateConfig)
    logs: LogsConfig = field(default_factory=LogsConfig)
    providers: Mapping[str, ProviderConfig] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    # model or alias → models tried in order when it fails before answering
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # /anthropic route: Claude Code's model names → any provider/model (`anthropic.model_map`)
    anthropic_model_map: Mapping[str, str] = field(default_factory=dict)
    # /genai route: the Gemini names Gemini CLI sends → any provider/model (`gemini.model_map`)
    gemini_model_map: Mapping[str, str] = field(default_factory=dict)
    auth: AuthConfig = field(default_factory=AuthConfig)
    teams: Mapping[str, TeamConfig] = field(default_factory=dict)
    virtual_keys: tuple[VirtualKey, ...] = ()
    # "provider/model" or a glob of it → price; wins over genai-prices
    pricing: Mapping[str, Price] = field(default_factory=dict)
    mcp: McpConfig = field(default_factory=McpConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    otel: OtelConfig = field(default_factory=OtelConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    source: str = "<embedded default>"

    @property
    def auth_required(self) -> bool:
        return bool(self.virtual_keys) if self.auth.required is None else self.auth.required


# --- sections -----------------------------------------------------------------------


POSTGRES_SCHEMES: Final = ("postgresql://", "postgres://")
REDIS_SCHEMES: Final = ("redis://", "rediss://", "unix://")


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: what errors, logs and pages may show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + parts.netloc.rpartition("@")[2]))


def redact_text(text: str, url: str) -> str:
    """``text`` (a driver's error, say) with the password of ``url`` replaced by ``***``."""
    password = url_password(url)
    return text.replace(password, "***") if password else text


def url_password(url: str | None) -> str | None:
    """The password in a database URL, for the scrubber."""
    try:
        return urlsplit(url).password if url else None
    except ValueError:
        return None


def _storage(doc: Doc, top: Reader, env: Mapping[str, str]) -> tuple[StorageConfig, StateConfig]:
    st = Reader(doc, top.data.get("storage"), "storage", {"path", "url"})
    sa = Reader(doc, top.data.get("state"), "state", {"redis_url"})

    def url(r: Reader, key: str, schemes: tuple[str, ...], what: str) -> str | None:
        raw = r.get(key, str)
        if raw is None:
            return None
        value = resolve_env(raw, env, lambda m: doc.error(r.sub(key), m))
        if not value.startswith(schemes):
            # the value may hold a password: name the scheme only
            raise doc.error(r.sub(key), f"must be a {what} URL ({', '.join(schemes)}…), got {value.split(':')[0]!r}")
        try:
            urlsplit(value).port  # noqa: B018 -- parses the port, raising on a bad one
        except ValueError:
            raise doc.error(r.sub(key), f"is not a valid {what} URL") from None
        return value

    storage = StorageConfig(path=st.get("path", str) or str(default_data_dir(env) / "finops.db"),
                            url=url(st, "url", POSTGRES_SCHEMES, "PostgreSQL"))
    state = StateConfig(redis_url=url(sa, "redis_url", REDIS_SCHEMES, "Redis"))
    if state.redis_url and not storage.url:
        raise doc.error("state.redis_url", "shares live counters between instances, which then also need one "
                        "log: set storage.url to a PostgreSQL database too (or drop state.redis_url)")
    return storage, state


def _server(doc: Doc, data: Any, env: Mapping[str, str]) -> ServerConfig:
    r = Reader(doc, data, "server", {"host", "port", "max_body_mb", "drain_timeout_s", "keepalive_timeout_s",
                                     "body_timeout_s", "max_connections", "cors", "admin_token",
                                     "trusted_proxies"})
    port = r.get("port", int, 8080)
    if not 0 <= port <= 65535:
        raise doc.error("server.port", "must be between 0 and 65535")
    c = Reader(doc, r.data.get("cors"), "server.cors",
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
        drain_timeout_s=r.number("drain_timeout_s", 30, minimum=0.1),
        keepalive_timeout_s=r.number("keepalive_timeout_s", 15, minimum=0.1),
        body_timeout_s=r.number("body_timeout_s", 60, minimum=0.1),
        max_connections=int(r.number("max_connections", 1000, minimum=1)),
        cors=cors,
        admin_token=r.secret("admin_token", env),
        trusted_proxies=_networks(doc, r, "trusted_proxies"),
    )


def _networks(doc: Doc, r: Reader, key: str) -> tuple[IPNetwork, ...]:
    networks = []
    for i, text in enumerate(r.strings(key, ()) or ()):
        try:
            networks.append(ip_network(text, strict=False))
        except ValueError:
            raise doc.error(f"{r.sub(key)}[{i}]", f"{text!r} is not an IP address or network (CIDR)") from None
    return tuple(networks)


_PROVIDER_KEYS: Final = {
    "type", "base_url", "keys", "models", "timeouts", "headers", "max_retries", "retry_backoff_ms",
    "max_answer_mb", "max_stream_mb", "max_event_mb",
    "api_version", "region", "project", "location", "credentials_file",
    "access_key_id", "secret_access_key", "session_token", "caching",
}


def _provider(doc: Doc, name: str, data: Any, env: Mapping[str, str]) -> ProviderConfig:
    path = f"providers.{name}"
    r = Reader(doc, data, path, _PROVIDER_KEYS)
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
        kr = Reader(doc, item, f"{path}.keys[{i}]", {"name", "value", "weight"})
        value = kr.secret("value", env)
        if value is None:
            raise doc.error(f"{path}.keys[{i}].value", "is required")
        weight = kr.number("weight", 1)
        keys.append(ProviderKey(name=kr.get("name", str, f"{name}-{i}"), value=value, weight=weight))
    t = Reader(doc, r.data.get("timeouts"), f"{path}.timeouts", {"connect", "first_byte", "idle", "total"})
    timeouts = Timeouts(
        connect=t.number("connect", Timeouts.connect, 0.001),
        first_byte=t.number("first_byte", Timeouts.first_byte, 0.001),
        idle=t.number("idle", Timeouts.idle, 0.001),
        total=t.number("total", Timeouts.total, 0.001),
    )
    h = Reader(doc, r.data.get("headers"), f"{path}.headers", set(r.data.get("headers") or {}))
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
        max_answer_mb=r.number("max_answer_mb", 32, minimum=0.001),
        max_stream_mb=r.number("max_stream_mb", 256, minimum=0.001),
        max_event_mb=r.number("max_event_mb", 8, minimum=0.001),
        api_version=r.get("api_version", str),
        region=r.get("region", str),
        project=r.get("project", str),
        location=r.get("location", str),
        credentials_file=r.get("credentials_file", str),
        access_key_id=r.secret("access_key_id", env),
        secret_access_key=r.secret("secret_access_key", env),
        session_token=r.secret("session_token", env),
        caching=caching_section(doc, r.data.get("caching"), r.sub("caching")),
    )


def _model_map(doc: Doc, top: Reader, section: str, providers: Mapping[str, ProviderConfig],
               aliases: Mapping[str, str]) -> dict[str, str]:
    """``<section>.model_map``: a client's own model names → provider/model (or an alias of one)."""
    sec = Reader(doc, top.data.get(section), section, {"model_map"})
    mm = Reader(doc, sec.data.get("model_map"), f"{section}.model_map", set(sec.data.get("model_map") or {}))
    model_map = {name: mm.get(name, str) for name in mm.data}
    for name, target in model_map.items():
        prefix, slash, _ = aliases.get(target, target).partition("/")
        if not slash or prefix not in providers:
            raise doc.error(f"{section}.model_map.{name}", f"{target!r} names no configured provider")
    return model_map


def default_data_dir(env: Mapping[str, str]) -> Path:
    """The per-user data dir (XDG), where SQLite lives when the config names no path."""
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local" / "share")
    return Path(base) / "finopsd"


def parse(text: str, filename: str = "config.yaml", env: Mapping[str, str] | None = None) -> Config:
    """Validate YAML text into a Config; raise ConfigError naming file line and key path."""
    env = os.environ if env is None else env
    doc = Doc(filename, text)
    top = Reader(doc, doc.data, "", {"server", "storage", "logs", "providers", "aliases", "fallbacks", "anthropic",
                                      "gemini", "auth", "teams", "virtual_keys", "pricing", "mcp", "metrics", "otel",
                                      "alerts", "state"})
    storage, state = _storage(doc, top, env)
    pr = Reader(doc, top.data.get("providers"), "providers", set(top.data.get("providers") or {}))
    providers = {name: _provider(doc, name, pr.data[name], env) for name in pr.data}
    al = Reader(doc, top.data.get("aliases"), "aliases", set(top.data.get("aliases") or {}))
    aliases = {name: al.get(name, str) for name in al.data}
    for name, target in aliases.items():
        if "/" not in target:
            raise doc.error(f"aliases.{name}", "must name a model as provider/model")
    fb = Reader(doc, top.data.get("fallbacks"), "fallbacks", set(top.data.get("fallbacks") or {}))
    fallbacks = {name: fb.strings(name, ()) or () for name in fb.data}
    for name, targets in fallbacks.items():
        for i, target in enumerate(targets):
            prefix, slash, _ = aliases.get(target, target).partition("/")
            if not slash or prefix not in providers:
                raise doc.error(f"fallbacks.{name}[{i}]", f"{target!r} names no configured provider")
    model_map, gemini_map = (_model_map(doc, top, section, providers, aliases) for section in ("anthropic", "gemini"))
    lg = Reader(doc, top.data.get("logs"), "logs", {"content", "retention_days"})
    logs = LogsConfig(content=lg.get("content", bool, True), retention_days=lg.number("retention_days", 30))
    mt = Reader(doc, top.data.get("metrics"), "metrics", {"public", "per_key"})
    metrics = MetricsConfig(public=mt.get("public", bool, False), per_key=mt.get("per_key", bool, False))
    ot = Reader(doc, top.data.get("otel"), "otel", {"endpoint", "content", "service_name", "headers"})
    endpoint = ot.get("endpoint", str)
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise doc.error(ot.sub("endpoint"), "must be an http:// or https:// URL (OTLP over HTTP, …/v1/traces)")
    oh = Reader(doc, ot.data.get("headers"), ot.sub("headers"), set(ot.data.get("headers") or {}))
    otel = OtelConfig(endpoint=endpoint, content=ot.get("content", bool, False),
                      service_name=ot.get("service_name", str, "finopsd"),
                      headers={k: resolve_env(oh.get(k, str), env, lambda m, k=k: doc.error(oh.sub(k), m))
                               for k in oh.data})
    auth, teams, virtual_keys, pricing = governance_section(doc, top, env)
    return Config(
        server=_server(doc, top.data.get("server"), env),
        storage=storage,
        state=state,
        logs=logs,
        providers=providers,
        aliases=aliases,
        fallbacks=fallbacks,
        anthropic_model_map=model_map,
        gemini_model_map=gemini_map,
        auth=auth,
        teams=teams,
        virtual_keys=virtual_keys,
        pricing=pricing,
        mcp=mcp_section(doc, top.data.get("mcp"), env),
        metrics=metrics,
        otel=otel,
        alerts=alerts_section(doc, top.data.get("alerts"), env),
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
