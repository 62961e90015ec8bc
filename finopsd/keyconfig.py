"""Config sections for governance: ``auth``, ``teams``, ``virtual_keys``, ``pricing``."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Final, Mapping

from finopsd import attribution
from finopsd.caching import CachingConfig, caching_section
from finopsd.yamldoc import Doc, Reader, kind_of, resolve_env


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
    caching: CachingConfig = field(default_factory=CachingConfig)
    description: str | None = None
    owner: str | None = None
    source: str = "config"  # or "dashboard": made through /api/teams, kept in the database


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
    caching: CachingConfig = field(default_factory=CachingConfig)
    # pinned attribution: wins over the client's x-finops-user / x-finops-project
    user: str | None = None
    project: str | None = None
    description: str | None = None
    owner: str | None = None
    source: str = "config"  # or "dashboard": made through /api/keys, kept in the database
    # after a rotation with a grace period: the old digest, still let in until ``previous_until``
    previous_sha256: str | None = None
    previous_until: float | None = None

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


# --- governance: auth, teams, virtual keys, pricing ----------------------------------

_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_VIRTUAL_KEY_KEYS: Final = {
    "name", "key", "key_sha256", "team", "models", "mcp_tools", "rate_limit", "budgets", "expires", "enabled",
    "user", "project",
    "caching", "description", "owner",
}
TEAM_KEYS: Final = {"budgets", "rate_limit", "caching", "description", "owner"}


def _budgets(doc: Doc, data: Any, path: str) -> tuple[Budget, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        raise doc.error(path, f"must be a list of {{usd, period}}, got {kind_of(data)}")
    out = []
    for i, item in enumerate(data):
        r = Reader(doc, item, f"{path}[{i}]", {"usd", "period"})
        usd = r.get("usd", float)
        if usd is None or usd < 0:
            raise doc.error(r.sub("usd"), "is required, a number of USD >= 0")
        period = r.get("period", str)
        if period not in PERIODS:
            raise doc.error(r.sub("period"), f"must be one of {', '.join(PERIODS)}")
        out.append(Budget(usd, period))
    return tuple(out)


def _rate_limit(doc: Doc, data: Any, path: str) -> RateLimit:
    r = Reader(doc, data, path, {"requests_per_minute", "tokens_per_minute"})
    values: dict[str, int | None] = {}
    for key in ("requests_per_minute", "tokens_per_minute"):
        value = r.get(key, int)
        if value is not None and value < 1:
            raise doc.error(r.sub(key), "must be at least 1")
        values[key] = value
    return RateLimit(**values)


def _expiry(doc: Doc, path: str, value: Any) -> float | None:
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
        raise doc.error(path, f"must be a date (2027-01-01), got {kind_of(value)}")
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def virtual_key(doc: Doc, path: str, data: Any, env: Mapping[str, str], teams: Mapping[str, TeamConfig]) -> VirtualKey:
    r = Reader(doc, data, path, _VIRTUAL_KEY_KEYS)
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
        caching=caching_section(doc, r.data.get("caching"), r.sub("caching")),
        user=_pinned(doc, r, "user"),
        project=_pinned(doc, r, "project"),
        description=r.get("description", str),
        owner=r.get("owner", str),
    )


def _pinned(doc: Doc, r: Reader, field_name: str) -> str | None:
    value = r.get(field_name, str)
    try:
        return None if value is None else attribution.valid(value, field_name)
    except ValueError as e:
        raise doc.error(r.sub(field_name), str(e)) from None


def team_config(doc: Doc, path: str, name: str, data: Any, source: str = "config") -> TeamConfig:
    r = Reader(doc, data, path, TEAM_KEYS)
    return TeamConfig(name, _budgets(doc, r.data.get("budgets"), r.sub("budgets")),
                      _rate_limit(doc, r.data.get("rate_limit"), r.sub("rate_limit")),
                      caching_section(doc, r.data.get("caching"), r.sub("caching")),
                      r.get("description", str), r.get("owner", str), source)


def governance_section(
    doc: Doc, top: Reader, env: Mapping[str, str]
) -> tuple[AuthConfig, dict[str, TeamConfig], tuple[VirtualKey, ...], dict[str, Price]]:
    au = Reader(doc, top.data.get("auth"), "auth", {"required"})
    auth = AuthConfig(required=au.get("required", bool))
    tm = Reader(doc, top.data.get("teams"), "teams", set(top.data.get("teams") or {}))
    teams = {}
    for name in tm.data:
        teams[name] = team_config(doc, f"teams.{name}", name, tm.data[name])
    items = top.get("virtual_keys", list, [])
    keys: list[VirtualKey] = []
    for i, item in enumerate(items):
        key = virtual_key(doc, f"virtual_keys[{i}]", item, env, teams)
        for other in keys:
            if other.name == key.name:
                raise doc.error(f"virtual_keys[{i}].name", f"{key.name!r} is used by another key")
            if other.key_sha256 == key.key_sha256:
                raise doc.error(f"virtual_keys[{i}]", f"the same key as {other.name!r}")
        keys.append(key)
    pr = Reader(doc, top.data.get("pricing"), "pricing", set(top.data.get("pricing") or {}))
    pricing = {}
    for model in pr.data:
        path = f"pricing.{model}"
        if "/" not in model:
            raise doc.error(path, "must name a model as provider/model (globs allowed: vllm/*)")
        r = Reader(doc, pr.data[model], path, {"input", "output", "cache_read", "cache_write"})
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


