"""Throwaway PostgreSQL and Redis servers on loopback ports, for the scale-out tests.

Both come from Debian's packages (``postgresql``, ``redis-server``; scripts/test installs
them when it runs as root). Without them the fixtures fail with the install hint: a test
that needs a real server never passes by skipping.

- ``pg_cluster`` (one per test session): initdb in a temp dir, run as the ``postgres`` OS
  user when we are root (PostgreSQL refuses to run as root), password authentication over
  TCP on 127.0.0.1, fsync off. ``stop()`` / ``start()`` let a test take it away mid-load.
- ``postgres_url``: a fresh empty database on that cluster per test, dropped afterwards.
- ``redis_server``: one redis-server per test with a password, no persistence;
  ``stop()`` / ``start()`` / ``restart()`` (same port, data gone, as a crashed Redis).
- ``log_backend``: ``storage`` config for "sqlite" and "postgresql", so one store suite
  runs against both.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PG_PASSWORD = "finops-test-pg-secret"
REDIS_PASSWORD = "finops-test-redis-secret"
INSTALL_HINT = "install Debian's {pkg} (apt-get install {pkg}; scripts/test does it when run as root)"
_ids = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes] | None, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {seconds} s")


class PgCluster:
    """One PostgreSQL cluster in a temp dir."""

    def __init__(self, root: Path) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
        if not bins:
            pytest.fail(INSTALL_HINT.format(pkg="postgresql"), pytrace=False)
        self.bin = Path(bins[-1]).parent
        self.root, self.data, self.port = root, root / "data", free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        root.mkdir(parents=True, exist_ok=True)
        (root / "pw").write_text(PG_PASSWORD)
        if self.user:
            pw = pwd.getpwnam(self.user)
            for path in (root, root / "pw"):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "finops", "--pwfile", str(root / "pw"),
                  "--auth", "scram-sha-256", "-E", "UTF8", "--locale", "C", "--no-sync")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.root)
        if done.returncode:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.decode(errors='replace')}")

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
                " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-o", opts, "-w", "start")
        _wait_for_port(self.port, None, "postgres")

    def stop(self, mode: str = "fast") -> None:
        """``mode`` ``immediate`` is a crash (no shutdown checkpoint), ``fast`` a clean stop."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://finops:{PG_PASSWORD}@127.0.0.1:{self.port}/{db}"

    def sql(self, statement: str) -> None:
        """Run one statement as the admin on the ``postgres`` database (autocommit)."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(statement)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    # not under pytest's tmp dir: the postgres user cannot enter root's 0700 /tmp/pytest-of-root
    root = Path(tempfile.mkdtemp(prefix="finops-pg-"))
    try:
        cluster = PgCluster(root)
        yield cluster
        if cluster.running:
            cluster.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(pg_cluster: PgCluster) -> Iterator[str]:
    """A new empty database; the cluster is started again if an earlier test left it stopped."""
    if not pg_cluster.running:
        pg_cluster.start()
    name = f"t{os.getpid()}_{next(_ids)}"
    pg_cluster.sql(f"create database {name}")
    yield pg_cluster.url(name)
    if not pg_cluster.running:
        pg_cluster.start()
    pg_cluster.sql(f"drop database if exists {name} with (force)")


class RedisServer:
    """redis-server on a loopback port with a password and no persistence."""

    def __init__(self, root: Path) -> None:
        self.exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(self.exe):
            pytest.fail(INSTALL_HINT.format(pkg="redis-server"), pytrace=False)
        self.root, self.port = root, free_port()
        self.url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root),
             "--save", "", "--appendonly", "no", "--requirepass", REDIS_PASSWORD, "--daemonize", "no",
             "--logfile", str(self.root / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, self.proc, "redis-server")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # as a crash: nothing saved (persistence is off anyway)
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def log_backend(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The ``storage`` section for each backend; a test builds its config around it."""
    if request.param == "sqlite":
        return {"path": str(tmp_path / "finops.db")}
    return {"path": str(tmp_path / "unused.db"), "url": request.getfixturevalue("postgres_url")}
