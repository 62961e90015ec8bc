"""storage.url / state.redis_url: validation, no password shown, and the test servers themselves."""

from __future__ import annotations

import psycopg
import pytest
import redis

from finopsd.config import ConfigError, parse, redact_url
from finopsd.scrub import Scrubber, config_secrets
from tests.servers import PG_PASSWORD, REDIS_PASSWORD, PgCluster, RedisServer

PG = "postgresql://finops:pg-password-1@db.internal:5432/finops"
REDIS = "redis://:redis-password-1@cache.internal:6379/0"


def test_urls_from_env_and_never_shown() -> None:
    c = parse("storage:\n  url: env:PG\nstate:\n  redis_url: env:REDIS\n", env={"PG": PG, "REDIS": REDIS})
    assert (c.storage.url, c.state.redis_url) == (PG, REDIS)
    assert "pg-password-1" not in repr(c) and "redis-password-1" not in repr(c)
    assert redact_url(PG) == "postgresql://finops:***@db.internal:5432/finops"
    assert redact_url(REDIS) == "redis://:***@cache.internal:6379/0"
    assert redact_url("postgresql://db.internal/finops") == "postgresql://db.internal/finops"
    scrubbed = Scrubber(config_secrets(c)).text(f"could not connect to {PG} or {REDIS}")
    assert "pg-password-1" not in scrubbed and "redis-password-1" not in scrubbed


def test_default_is_sqlite_with_in_process_state() -> None:
    c = parse("{}", env={"HOME": "/home/u"})
    assert c.storage.url is None and c.state.redis_url is None
    assert c.storage.path == "/home/u/.local/share/finopsd/finops.db"


@pytest.mark.parametrize(("text", "message"), [
    ("state:\n  redis_url: redis://127.0.0.1/0\n", "set storage.url to a PostgreSQL database too"),
    ("storage:\n  url: mysql://u:hunter2hunter2@h/d\n", "must be a PostgreSQL URL"),
    ("storage:\n  url: postgresql://h:99999/d\n", "is not a valid PostgreSQL URL"),
    (f"storage:\n  url: {PG}\nstate:\n  redis_url: http://cache/0\n", "must be a Redis URL"),
    ("storage:\n  url: env:NOPE\n", "environment variable NOPE is not set"),
    ("state:\n  redis: redis://h\n", "redis"),
])  # fmt: skip
def test_half_configured_or_wrong_urls_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(text, env={})
    assert message in str(e.value)
    assert "hunter2hunter2" not in str(e.value)


def test_the_test_servers_want_their_passwords(pg_cluster: PgCluster, postgres_url: str,
                                               redis_server: RedisServer) -> None:
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(postgres_url.replace(PG_PASSWORD, "wrong")).close()
    r = redis.Redis.from_url(redis_server.url)
    assert r.ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(redis_server.url.replace(REDIS_PASSWORD, "wrong")).ping()
    redis_server.restart()
    assert redis.Redis.from_url(redis_server.url).ping()
