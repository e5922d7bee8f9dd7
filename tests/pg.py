"""A throwaway PostgreSQL server for tests: ``postgresql_url`` (session) and ``pg_engine`` (per test).

Use ``SLICEBOX_TEST_POSTGRES_URL`` to test against a server of your own; otherwise Debian's server
binaries (``apt-get install postgresql``) are started on 127.0.0.1 at a free port, in a temporary
folder, with trust authentication and ``fsync=off``, and always stopped and removed at teardown.
As root (initdb refuses root) the server runs as the ``postgres`` system user via ``runuser``.

Import both fixtures where they are used (``from pg import postgresql_url, pg_engine  # noqa: F401``).
Pytest then registers the session fixture once per importing module; the server itself is shared
by reference count, so one session starts at most one server.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from slicebox_lab.index import create_engine, upgrade

ENV_URL = "SLICEBOX_TEST_POSTGRES_URL"
DATABASE = "slicebox_test"
_SKIP_MESSAGE = "PostgreSQL server binaries not found: apt-get install postgresql"


def _find_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin with initdb and pg_ctl, else the PATH's."""

    def version(path: str) -> float:
        try:
            return float(Path(path).parent.name)
        except ValueError:
            return 0.0

    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Server:
    """One PostgreSQL cluster in a temporary folder."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.as_postgres = os.geteuid() == 0
        self.folder = Path(tempfile.mkdtemp(prefix="slicebox-pg-"))
        self.data = self.folder / "data"
        self.sockets = self.folder / "sockets"
        self.logfile = self.folder / "server.log"
        self.port = 0
        self.running = False

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    def start(self) -> None:
        self.sockets.mkdir()
        if self.as_postgres:
            import pwd

            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no 'postgres' user to run the server as")
            for path in (self.folder, self.sockets):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        # C.UTF-8 folds the case of every letter (ILIKE 'zoë' finds 'ZOË'), as a real server does
        for locale in ("C.UTF-8", "C"):
            shutil.rmtree(self.data, ignore_errors=True)
            initdb = ("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
            done = self._run(*initdb, f"--locale={locale}", "--no-sync")
            if done.returncode == 0:
                break
        else:
            raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        last_error = ""
        for _attempt in range(5):  # another process may take the free port before we bind it
            self.port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                f"-c unix_socket_directories={self.sockets} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            done = self._run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-l",
                str(self.logfile),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            )
            if done.returncode == 0:
                self.running = True
                return
            last_error = done.stdout + done.stderr + self._log_tail()
        raise RuntimeError(f"pg_ctl start failed:\n{last_error}")

    def _log_tail(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        try:
            if self.running:
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
                self.running = False
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"


_lock = threading.Lock()
_server: _Server | None = None
_users = 0


def _acquire() -> str:
    global _server, _users
    with _lock:
        if _server is None:
            bin_dir = _find_bin_dir()
            if bin_dir is None:
                pytest.skip(_SKIP_MESSAGE)
            server = _Server(bin_dir)
            try:
                server.start()
                _execute_autocommit(server.url("postgres"), f'CREATE DATABASE "{DATABASE}"')
            except BaseException:
                server.stop()
                raise
            _server = server
        _users += 1
        return _server.url(DATABASE)


def _release() -> None:
    global _server, _users
    with _lock:
        _users -= 1
        if _users <= 0 and _server is not None:
            server, _server, _users = _server, None, 0
            server.stop()


@atexit.register
def _stop_at_exit() -> None:  # a safety net if pytest died before its teardown
    global _server
    if _server is not None:
        server, _server = _server, None
        server.stop()


def _execute_autocommit(url: str, *statements: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    """URL of a PostgreSQL database for the test session (``postgresql+psycopg://...``)."""
    configured = os.environ.get(ENV_URL)
    if configured:
        yield configured
        return
    url = _acquire()
    try:
        yield url
    finally:
        _release()


@pytest.fixture
def pg_engine(postgresql_url: str) -> Iterator[sa.Engine]:
    """An engine on a fresh database, migrated to the newest schema, dropped after the test.

    Without the right to create databases (a server of your own), the tables of the configured
    database are dropped instead, before and after the test.
    """
    base = make_url(postgresql_url)
    name = f"t_{uuid.uuid4().hex}"
    admin_url = base.set(database="postgres").render_as_string(hide_password=False)
    try:
        _execute_autocommit(admin_url, f'CREATE DATABASE "{name}"')
    except sa.exc.DBAPIError:
        engine = create_engine(postgresql_url)
        _drop_all(engine)
        upgrade(engine)
        try:
            yield engine
        finally:
            _drop_all(engine)
            engine.dispose()
        return
    engine = create_engine(base.set(database=name).render_as_string(hide_password=False))
    try:
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()
        _execute_autocommit(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _drop_all(engine: sa.Engine) -> None:
    reflected = sa.MetaData()
    reflected.reflect(engine)
    with engine.begin() as conn:
        reflected.drop_all(conn)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def index_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    """A migrated, empty index database on each back-end: a SQLite file, then a fresh PostgreSQL database
    (import with ``pg_engine`` and ``postgresql_url``)."""
    if request.param == "postgresql":
        yield request.getfixturevalue("pg_engine")
        return
    from slicebox_lab.index import sqlite_url

    engine = create_engine(sqlite_url(tmp_path / "node" / "slicebox.sqlite"))
    upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()
