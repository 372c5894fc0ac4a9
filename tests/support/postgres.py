"""A real PostgreSQL for tests: a private cluster in a temp folder, reached on a Unix socket in that folder.

Registered for every test by `pytest_plugins` in tests/conftest.py. `postgres` (session) starts the cluster once per
test run (initdb + start, ~1-2 s) and stops it at the end; `pg_url` (per test) is a fresh, empty database in it, so
tests never see each other's tables; `state_db` (per test, twice) is a state store's connection on SQLite and then
on PostgreSQL through the adapter central uses (bridge/db_postgres.py). The cluster runs Debian's own binaries
(`scripts/setup.sh` installs `postgresql`). PostgreSQL refuses to run as root: under root the cluster's files and
server belong to `nobody`.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bridge.db import Connection, connect
from bridge.db_postgres import PostgresConnection

# Debian keeps the server's programs out of PATH, in a folder per major version
_DEBIAN_BINS = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
UNPRIVILEGED = "nobody"


def _program(name: str) -> str:
    found = shutil.which(name) or next((f"{d}/{name}" for d in reversed(_DEBIAN_BINS) if os.path.exists(f"{d}/{name}")), None)
    if found is None:
        pytest.fail(f"{name} not found: PostgreSQL is not installed (scripts/setup.sh installs Debian's postgresql)")
    return found


class PostgresCluster:
    """One throw-away cluster: `start()`, `url(database)`, `stop()` (which also deletes its files)."""

    user = "jingbao"  # the cluster's superuser, trusted on its socket: its folder (mode 0700) admits only its owner

    def __init__(self, *, durable: bool = False, listen: str = "", clients: str = "") -> None:
        """`durable`: fsync and synchronous commits as a production server has them (a benchmark's figures); the tests'
        cluster goes without, since it holds nothing worth a power cut. `listen`: an address to take TCP connections
        on too, from the network `clients` (CIDR, trusted as the socket is); by default the socket only."""
        self.dir = Path(tempfile.mkdtemp(prefix="jingbao-pg-"))  # short: a socket path has at most 107 bytes
        self.durable = durable
        self.listen, self.clients = listen, clients
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam(UNPRIVILEGED)
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self._as_owner = ["setpriv", f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}", "--clear-groups"]
        self._names = itertools.count(1)

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self._as_owner, *args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log = self.dir / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stderr.strip()}\n{tail}")

    def start(self) -> None:
        data = str(self.dir / "data")
        # no fsync anywhere: a test cluster holds nothing worth a power cut, and fsyncs are most of initdb's time
        self._run(_program("initdb"), "-D", data, "-U", self.user, "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync")
        if self.clients:
            with (self.dir / "data" / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {self.clients} trust\n")
        self.resume()

    def pause(self) -> None:
        """Stop the server, keeping its files (a database outage: connections are cut, new ones refused)."""
        self._run(_program("pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start the server on the cluster's files (after `start()` made them, or a `pause()`)."""
        options = f"-c listen_addresses='{self.listen}' -c unix_socket_directories='{self.dir}'"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        data = str(self.dir / "data")
        self._run(_program("pg_ctl"), "-D", data, "-l", str(self.dir / "server.log"), "-o", options, "-w", "start")

    def stop(self) -> None:
        try:
            if (self.dir / "data" / "postmaster.pid").exists():  # not when start() failed
                self._run(_program("pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres", user: str | None = None) -> str:
        return f"postgresql://{user or self.user}@/{database}?host={self.dir}"

    def create_database(self) -> str:
        name = f"test_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")  # FORCE: a test that left a connection open


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(postgres: PostgresCluster) -> Iterator[str]:
    """The URL of a new, empty database, dropped after the test."""
    name = postgres.create_database()
    yield postgres.url(name)
    postgres.drop_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def state_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Connection]:
    """A state store's connection on each engine in turn: a box's SQLite file, and central's PostgreSQL through
    bridge/db_postgres.py's adapter (a fresh database, dropped after the test)."""
    conn: Connection = connect(tmp_path / "state.db") if request.param == "sqlite" else PostgresConnection(
        request.getfixturevalue("pg_url"))
    yield conn
    conn.close()
