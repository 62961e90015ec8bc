"""Keys and teams made through the admin API, kept in the log database beside the config's.

The config file stays the source of truth for its own keys and teams: they are read-only
here, and a name used in both places is a startup error naming both (``conflicts``). A key
made here is stored as its SHA-256 digest only; its definition is what the config file
would hold under ``virtual_keys`` (``team``, ``models``, ``mcp_tools``, ``rate_limit``,
``budgets``, ``expires``, ``enabled``, ``caching``, ``description``, ``owner``), as JSON,
validated by the config's own parsers so both places accept the same things.

Every change bumps the row's ``version`` (the admin API's ETag: a write naming an older one
is refused, not lost) and ``generation``, which tells ``Runtime.effective`` to merge again,
so the next request sees it. Every change also writes an ``audit`` row, in the same
transaction: actor, client address, the definitions before and after (never a secret).

The tables live beside the log: in its SQLite file (work in a thread on one connection), or
in its PostgreSQL database (``storage.url``), where several instances share them. There, a
change is checked in SQL, not against this instance's memory: an update or delete names the
version it was based on (``where name = ? and version = ?``), a create meets the primary
key; a statement that finds the row moved on rolls the whole change back, the store reads
the tables again and either applies the change to what it finds (no ``If-Match`` given) or
answers 409. Writers take turns on an advisory lock, so audit ids commit in order and
``max(audit.id)`` is a version of the whole dashboard: ``watch`` polls it every
``POLL_S`` (an index lookup) and reloads when it moved, so a key made, edited, rotated or
deleted on one instance works or stops working on every other within a second. Polling,
not LISTEN/NOTIFY: no connection held open per instance, nothing to miss while one is
broken (a notification sent then is lost; a poll after it reconnects is not), and it works
through a transaction-pooling PgBouncer. SQLite gets the same watch: a change the CLI
writes into the file of a running gateway takes effect within a second too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from dataclasses import replace
from pathlib import Path
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from finopsd.appkeys import RUNTIME
from finopsd.errors import GatewayError
from finopsd.governance import new_virtual_key
from finopsd.keyconfig import TEAM_KEYS, TeamConfig, VirtualKey, team_config, virtual_key
from finopsd.log.schema import migrate
from finopsd.log.sql import Db, SqliteDb, Stale
from finopsd.spend import iso
from finopsd.yamldoc import ConfigError, Doc

if TYPE_CHECKING:
    from finopsd.config import Config, StorageConfig

__all__ = ["EDITABLE", "KeyStore", "key_definition", "open_keystore", "team_definition"]

EDITABLE: Final = {"key": {"team", "models", "mcp_tools", "rate_limit", "budgets", "expires", "enabled",
                           "caching", "description", "owner"},
                   "team": set(TEAM_KEYS)}
MAX_NAME: Final = 128
MAX_DEFINITION: Final = 16 * 1024  # JSON bytes of one key's or team's fields
MAX_GRACE_S: Final = 30 * 86400
AUDIT_PAGE: Final = 500
MAX_PENDING: Final = 100
AUDIT_INSERT: Final = ("insert into audit (ts, actor, client_ip, action, kind, name, before, after)"
                       " values (?, ?, ?, ?, ?, ?, ?, ?)")
POLL_S: Final = 0.5
ATTEMPTS: Final = 3  # a change another instance keeps beating is answered 409 after this many tries
WRITE_LOCK: Final = 0x6B657973  # "keys": PostgreSQL's advisory lock for dashboard changes

log = logging.getLogger(__name__)


class BodyDoc(Doc):
    """A JSON body read by the config's parsers: their errors become 422s naming the field."""

    def __init__(self, data: Any) -> None:  # noqa: D107 -- no YAML, so no lines to keep
        self.filename, self.lines, self.data = "", {}, data

    def error(self, path: str, message: str) -> ConfigError:
        raise GatewayError(f"{path}: {message}" if path else message, status=422, type="invalid_request_error",
                           param=path or None, code="invalid_field")


class _EveryTeam(dict[str, TeamConfig]):
    """Loading stored keys: a team since removed from the file must not make its keys unloadable."""

    def __contains__(self, name: object) -> bool:
        return True


def _budgets(budgets: tuple[Any, ...]) -> list[dict[str, Any]]:
    return [{"usd": b.usd, "period": b.period} for b in budgets]


def _rate(limit: Any) -> dict[str, Any]:
    return {k: v for k, v in (("requests_per_minute", limit.requests_per_minute),
                              ("tokens_per_minute", limit.tokens_per_minute)) if v is not None}


def _caching(c: Any) -> dict[str, Any]:
    return {"auto": c.auto, **({"ttl": c.ttl} if c.ttl else {})}


def key_definition(k: VirtualKey) -> dict[str, Any]:
    """A key's editable fields, as the config file or an admin API body writes them."""
    return {"team": k.team, "models": list(k.models) if k.models is not None else None,
            "mcp_tools": list(k.mcp_tools) if k.mcp_tools is not None else None, "rate_limit": _rate(k.rate_limit),
            "budgets": _budgets(k.budgets), "expires": iso(k.expires), "enabled": k.enabled,
            "caching": _caching(k.caching), "description": k.description, "owner": k.owner}


def team_definition(t: TeamConfig) -> dict[str, Any]:
    return {"rate_limit": _rate(t.rate_limit), "budgets": _budgets(t.budgets), "caching": _caching(t.caching),
            "description": t.description, "owner": t.owner}


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME or any(c < " " for c in name):
        raise GatewayError(f"name: needs a name of 1 to {MAX_NAME} printable characters", status=422,
                           type="invalid_request_error", param="name", code="invalid_field")
    return name


def _check_fields(kind: str, body: dict[str, Any]) -> None:
    if len(json.dumps(body)) > MAX_DEFINITION:  # kept in memory and on every audit row
        raise GatewayError(f"the definition is over {MAX_DEFINITION // 1024} kB", status=422,
                           type="invalid_request_error", code="definition_too_large")
    for field in body:
        if field not in EDITABLE[kind]:
            why = "cannot change (delete the key and make a new one)" if field == "name" else (
                "is never sent: the gateway makes the secret" if field in ("key", "key_sha256") else "unknown field")
            raise GatewayError(f"{field}: {why}", status=422, type="invalid_request_error", param=field,
                               code="invalid_field")


def conflict(message: str) -> GatewayError:
    return GatewayError(message, status=409, type="invalid_request_error", code="conflict")


def not_found(kind: str, name: str) -> GatewayError:
    return GatewayError(f"no {kind} named {name!r}", status=404, type="not_found_error", code=f"{kind}_not_found")


class KeyStore:
    """The dashboard's keys and teams: in memory for the hot path, in the log's database for
    restarts and for the other instances."""

    def __init__(self, where: str, db: Db, close: Any) -> None:
        self.path, self._db, self._close = where, db, close  # ``path``: where, as messages may name it
        self._lock = asyncio.Lock()
        self.keys: dict[str, VirtualKey] = {}
        self.teams: dict[str, TeamConfig] = {}
        # (kind, name) → {"definition", "version", "created_at", "updated_at"}
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.generation = 0
        self.seen = -1  # max(audit.id) when the tables were last read
        self._reloads: list[tuple[Any, ...]] = []  # audit rows of SIGHUPs, written with the next change or read

    # ---------------------------------------------------------------- opening

    @classmethod
    async def open(cls, storage: StorageConfig) -> KeyStore:
        """The store on ``storage.url`` (PostgreSQL) if set, else on the SQLite file ``storage.path``."""
        if storage.url:
            from finopsd.log.pg.reader import open_keys  # PostgreSQL only

            where, db, close = await open_keys(storage.url)
        else:
            where, db, close = await _open_sqlite(storage.path)
        store = cls(where, db, close)
        try:
            await store.refresh()
        except BaseException:
            await close()
            raise
        return store

    async def refresh(self) -> None:
        """Read the tables again (another instance, or the CLI, changed them)."""
        seen = (await self._db.fetch("select coalesce(max(id), 0) from audit"))[0][0]  # first: a change after it shows next time
        teams = await self._db.fetch("select name, definition, version, created_at, updated_at from dashboard_teams")
        keys = await self._db.fetch("select name, key_sha256, previous_sha256, previous_until, definition, version,"
                                    " created_at, updated_at from dashboard_keys")
        loaded = await asyncio.to_thread(self._parse_rows, teams, keys)  # a thousand keys: no stall on the loop
        self.keys, self.teams, self.rows = loaded
        self.seen = seen
        self.generation += 1

    def _parse_rows(self, teams: Sequence[Any], keys: Sequence[Any]) -> tuple[dict[str, VirtualKey],
                                                                               dict[str, TeamConfig],
                                                                               dict[tuple[str, str], dict[str, Any]]]:
        out_keys, out_teams, rows = {}, {}, {}
        for name, definition, version, created, updated in teams:
            out_teams[name] = team_config(BodyDoc(None), "", name, json.loads(definition), "dashboard")
            rows[("team", name)] = self._meta(json.loads(definition), version, created, updated)
        for name, digest, prev, prev_until, definition, version, created, updated in keys:
            out_keys[name] = self._parse_key(name, json.loads(definition), digest, _EveryTeam(), prev, prev_until)
            rows[("key", name)] = self._meta(json.loads(definition), version, created, updated)
        return out_keys, out_teams, rows

    async def watch(self, interval: float = POLL_S) -> None:
        """Reload whenever ``max(audit.id)`` moved: what the other instances changed, within ``interval``.
        Runs until cancelled; a database that is away leaves the keys in memory in force."""
        failing = False
        while True:
            await asyncio.sleep(interval)
            try:
                seen = (await self._db.fetch("select coalesce(max(id), 0) from audit"))[0][0]
                if seen != self.seen:
                    async with self._lock:
                        await self.refresh()
                if failing:
                    log.info("dashboard keys: the database answers again")
                failing = False
            except Exception as e:  # noqa: BLE001 - the watch outlives any one poll
                if not failing:
                    log.warning("dashboard keys: cannot read the database (%s); the keys in memory stay in force",
                                type(e).__name__)
                failing = True

    async def close(self) -> None:
        await self._close()

    @staticmethod
    def _meta(definition: dict[str, Any], version: int, created: float, updated: float) -> dict[str, Any]:
        return {"definition": definition, "version": version, "created_at": created, "updated_at": updated}

    @staticmethod
    def _parse_key(name: str, definition: dict[str, Any], digest: str, teams: Any,
                   previous: str | None = None, until: float | None = None) -> VirtualKey:
        key = virtual_key(BodyDoc(definition), "", {**definition, "name": name, "key_sha256": digest}, {}, teams)
        return replace(key, source="dashboard", previous_sha256=previous, previous_until=until)

    # ---------------------------------------------------------------- the config beside it

    def conflicts(self, config: Config) -> list[str]:
        """What the config file and this database both define (a startup error; a reload is refused)."""
        out = [f"key {k.name!r}" for k in config.virtual_keys if k.name in self.keys]
        out += [f"team {t!r}" for t in config.teams if t in self.teams]
        digests = {k.key_sha256 for k in self.keys.values()}
        out += [f"the secret of key {k.name!r}" for k in config.virtual_keys if k.key_sha256 in digests]
        return out

    def conflict_message(self, config: Config) -> str | None:
        found = self.conflicts(config)
        if not found:
            return None
        return (f"{', '.join(found)} defined both in {config.source or 'the config'} and in the database {self.path}"
                " (made through the dashboard or the admin API): rename or remove one")

    def merged(self, config: Config) -> Config:
        """The config in force: the file's keys and teams plus these."""
        if not self.keys and not self.teams:
            return config
        return replace(config, virtual_keys=config.virtual_keys + tuple(self.keys.values()),
                       teams={**config.teams, **self.teams})

    # ---------------------------------------------------------------- views

    def view(self, kind: str, name: str, config: Config) -> dict[str, Any]:
        """A key's or team's definition with where it lives and its version; never a secret or digest."""
        row = self.rows.get((kind, name))
        if row is not None:
            out = {"name": name, "source": "dashboard", **row["definition"], "version": row["version"],
                   "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"])}
            if kind == "key":
                out["grace_until"] = iso(self.keys[name].previous_until)
            return out
        if kind == "key":
            key = next((k for k in config.virtual_keys if k.name == name), None)
            if key is None:
                raise not_found(kind, name)
            return {"name": name, "source": "config", **key_definition(key), "version": None}
        if name not in config.teams:
            raise not_found(kind, name)
        return {"name": name, "source": "config", **team_definition(config.teams[name]), "version": None}

    def note_reload(self, old: Config, new: Config) -> None:
        """A SIGHUP that changed the file's keys or teams, for the audit trail (no I/O in a signal handler)."""
        before = {"keys": sorted(k.name for k in old.virtual_keys), "teams": sorted(old.teams)}
        after = {"keys": sorted(k.name for k in new.virtual_keys), "teams": sorted(new.teams)}
        changed = [k.name for k in set(old.virtual_keys) ^ set(new.virtual_keys)]
        if before != after or changed or old.teams != new.teams:
            self._reloads = [*self._reloads, self._audit("config reload", None, "reload", "config",
                                                         new.source or "config", before, after)][-MAX_PENDING:]

    async def audit(self, limit: int = 100, before_id: int | None = None) -> list[dict[str, Any]]:
        limit = max(1, min(limit, AUDIT_PAGE))

        pending, self._reloads = self._reloads, []  # taken on the loop, where note_reload adds
        if pending:
            await self._db.apply([(AUDIT_INSERT, row) for row in pending], lock=WRITE_LOCK)
        rows = await self._db.fetch(
            "select id, ts, actor, client_ip, action, kind, name, before, after from audit"
            " where id < ? order by id desc limit ?", (before_id or 2**62, limit))
        return [{"id": r[0], "time": iso(r[1]), "actor": r[2], "client_ip": r[3], "action": r[4], "kind": r[5],
                 "name": r[6], "before": json.loads(r[7]) if r[7] else None,
                 "after": json.loads(r[8]) if r[8] else None} for r in rows]

    # ---------------------------------------------------------------- changes

    def _owned(self, kind: str, name: str, config: Config, version: int | None) -> dict[str, Any]:
        """The row a change applies to: 404, 409 for a config-file entry or a stale version."""
        row = self.rows.get((kind, name))
        if row is None:
            if (kind == "key" and any(k.name == name for k in config.virtual_keys)) or (
                    kind == "team" and name in config.teams):
                raise conflict(f"{kind} {name!r} is defined in the config file {config.source or ''}: change it"
                               " there (the file is the source of truth for its own keys and teams)")
            raise not_found(kind, name)
        if version is not None and version != row["version"]:
            raise conflict(f"{kind} {name!r} changed since version {version} (now {row['version']}):"
                           " read it again and reapply your change")
        return row

    def _taken(self, kind: str, name: str, config: Config) -> None:
        in_file = (name in config.teams) if kind == "team" else any(k.name == name for k in config.virtual_keys)
        if in_file or (kind, name) in self.rows:
            where = "the config file" if in_file else "the database"
            raise conflict(f"{kind} {name!r} already exists (in {where})")

    def _teams(self, config: Config) -> dict[str, TeamConfig]:
        return {**config.teams, **self.teams}

    async def _write(self, sql: list[tuple[str, tuple[Any, ...]]], audit: tuple[Any, ...]) -> None:
        """The change and its audit rows in one transaction; Stale if a statement found its row
        moved on (then nothing is written, and the SIGHUP rows wait for the next change)."""
        pending, self._reloads = self._reloads, []
        rows, seen = (*pending, audit), self.seen
        try:
            await self._db.apply([*sql, *((AUDIT_INSERT, row) for row in rows)], lock=WRITE_LOCK)
        except BaseException:
            self._reloads = [*pending, *self._reloads][-MAX_PENDING:]
            raise
        self.generation += 1
        # the caller puts the change in memory itself: unless another writer's audit row came
        # since the tables were read (ids are then not just ours, or have a gap), the watch
        # need not read every key again for it
        if (await self._db.fetch("select coalesce(max(id), 0) from audit"))[0][0] == seen + len(rows):
            self.seen = seen + len(rows)

    async def _retrying(self, change: Any) -> Any:
        """Run ``change()`` (which checks against memory, then writes naming the version it saw)
        until no other instance got there first: after a Stale, read the tables again and retry,
        so a check that now fails (404, 409 for a moved If-Match) is answered from what is stored."""
        async with self._lock:
            for attempt in range(ATTEMPTS):
                try:
                    return await change()
                except Stale:
                    await self.refresh()
            raise conflict("the dashboard's keys changed under this request several times: try again")

    @staticmethod
    def _audit(actor: str, ip: str | None, action: str, kind: str, name: str,
               before: dict[str, Any] | None, after: dict[str, Any] | None) -> tuple[Any, ...]:
        dump = lambda d: json.dumps(d, sort_keys=True) if d is not None else None  # noqa: E731
        return time.time(), actor, ip, action, kind, name, dump(before), dump(after)

    async def create(self, kind: str, body: dict[str, Any], config: Config, actor: str,
                     ip: str | None) -> tuple[dict[str, Any], str | None]:
        """Make a key (answering its secret, the only time it is ever shown) or a team."""
        name = _check_name(body.get("name"))
        fields = {k: v for k, v in body.items() if k != "name"}
        _check_fields(kind, fields)

        async def change() -> str | None:
            self._taken(kind, name, config)  # a row another instance made is found by the primary key
            now = time.time()
            secret = None
            if kind == "key":
                secret, digest = new_virtual_key()
                key = self._parse_key(name, fields, digest, self._teams(config))
                definition = key_definition(key)
                sql = [("insert into dashboard_keys (name, key_sha256, definition, version, created_at, updated_at)"
                        " values (?, ?, ?, 1, ?, ?)", (name, digest, json.dumps(definition), now, now))]
            else:
                team = team_config(BodyDoc(fields), "", name, fields, "dashboard")
                definition = team_definition(team)
                sql = [("insert into dashboard_teams (name, definition, version, created_at, updated_at)"
                        " values (?, ?, 1, ?, ?)", (name, json.dumps(definition), now, now))]
            await self._write(sql, self._audit(actor, ip, "create", kind, name, None, definition))
            if kind == "key":
                self.keys[name] = key
            else:
                self.teams[name] = team
            self.rows[(kind, name)] = self._meta(definition, 1, now, now)
            return secret

        secret = await self._retrying(change)
        return self.view(kind, name, config), secret

    async def update(self, kind: str, name: str, patch: dict[str, Any], config: Config, actor: str,
                     ip: str | None, version: int | None = None, action: str = "edit") -> dict[str, Any]:
        """Apply the fields of ``patch`` (the rest stay); ``version``: refuse unless it is still current."""
        _check_fields(kind, patch)

        async def change() -> None:
            row = self._owned(kind, name, config, version)
            before = row["definition"]
            merged = {**before, **patch}
            now, new_version = time.time(), row["version"] + 1
            if kind == "key":
                old = self.keys[name]
                key = self._parse_key(name, merged, old.key_sha256, self._teams(config), old.previous_sha256,
                                      old.previous_until)
                after = key_definition(key)
                table = "dashboard_keys"
            else:
                team = team_config(BodyDoc(merged), "", name, merged, "dashboard")
                after = team_definition(team)
                table = "dashboard_teams"
            sql = [(f"update {table} set definition = ?, version = ?, updated_at = ? where name = ? and version = ?",
                    (json.dumps(after), new_version, now, name, row["version"]))]
            await self._write(sql, self._audit(actor, ip, action, kind, name, before, after))
            if kind == "key":
                self.keys[name] = key
            else:
                self.teams[name] = team
            self.rows[(kind, name)] = self._meta(after, new_version, row["created_at"], now)

        await self._retrying(change)
        return self.view(kind, name, config)

    async def rotate(self, name: str, config: Config, actor: str, ip: str | None, grace_s: float = 0,
                     version: int | None = None) -> tuple[dict[str, Any], str]:
        """A new secret for the same key (name, limits, spend); the old one works ``grace_s`` more seconds."""
        if not 0 <= grace_s <= MAX_GRACE_S:
            raise GatewayError(f"grace_seconds: must be 0 to {MAX_GRACE_S}", status=422,
                               type="invalid_request_error", param="grace_seconds", code="invalid_field")

        async def change() -> str:
            row = self._owned("key", name, config, version)
            old = self.keys[name]
            secret, digest = new_virtual_key()
            now, new_version = time.time(), row["version"] + 1
            previous, until = (old.key_sha256, now + grace_s) if grace_s else (None, None)
            sql = [("update dashboard_keys set key_sha256 = ?, previous_sha256 = ?, previous_until = ?, version = ?,"
                    " updated_at = ? where name = ? and version = ?",
                    (digest, previous, until, new_version, now, name, row["version"]))]
            note = {"grace_seconds": grace_s} if grace_s else None
            await self._write(sql, self._audit(actor, ip, "rotate", "key", name, None, note))
            self.keys[name] = replace(old, key_sha256=digest, previous_sha256=previous, previous_until=until)
            self.rows[("key", name)] = self._meta(row["definition"], new_version, row["created_at"], now)
            return secret

        secret = await self._retrying(change)
        return self.view("key", name, config), secret

    async def delete(self, kind: str, name: str, config: Config, actor: str, ip: str | None,
                     version: int | None = None) -> None:
        """Revoke a key at once (its spend and log rows stay, under its name), or remove an unused team."""

        async def change() -> None:
            row = self._owned(kind, name, config, version)
            if kind == "team":
                users = [k.name for k in config.virtual_keys + tuple(self.keys.values()) if k.team == name]
                if users:
                    raise conflict(f"team {name!r} still has keys: {', '.join(users[:10])}")
            table = "dashboard_keys" if kind == "key" else "dashboard_teams"
            await self._write([(f"delete from {table} where name = ? and version = ?", (name, row["version"]))],
                              self._audit(actor, ip, "delete", kind, name, row["definition"], None))
            (self.keys if kind == "key" else self.teams).pop(name, None)  # type: ignore[attr-defined]
            del self.rows[(kind, name)]

        await self._retrying(change)


async def _open_sqlite(path: str) -> tuple[str, Db, Any]:
    def connect() -> sqlite3.Connection:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # the first to open a new file: set what the log store needs before any table exists
        for pragma in ("auto_vacuum = incremental", "journal_mode = wal", "busy_timeout = 5000"):
            db.execute(f"pragma {pragma}")
        migrate(db)
        return db

    db = await asyncio.to_thread(connect)
    lock = asyncio.Lock()  # one statement at a time on the one connection

    async def on_writer(fn: Any, *args: Any) -> Any:
        async with lock:
            return await asyncio.to_thread(fn, *args)

    return path, SqliteDb(db, on_writer), lambda: asyncio.to_thread(db.close)


async def open_keystore(app: web.Application) -> AsyncIterator[None]:
    """Load the dashboard's keys and teams (after the log store migrated the database), before
    governance starts; watch the database for what other instances change."""
    rt = app[RUNTIME]
    store = await KeyStore.open(rt.config.storage)
    clash = store.conflict_message(rt.config)
    if clash is not None:
        await store.close()
        raise ConfigError(clash)
    rt.dashboard = store  # governance merges it in on the next request (``Runtime.effective``)
    watch = asyncio.create_task(store.watch(), name="keystore-watch")
    try:
        yield
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        rt.dashboard = None
        await store.close()
