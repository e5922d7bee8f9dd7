"""Engines and migrations: SQLite (the embedded default) or any SQLAlchemy URL (PostgreSQL).

SQLite is tuned for a node that answers "stored" only when the row is durable: WAL (readers never
block the writer), ``synchronous=FULL`` (the commit is fsynced before we return), foreign keys on,
and a 30 s busy timeout.  pysqlite's own transaction handling is switched off and replaced by an
explicit ``BEGIN``; writers ask for ``BEGIN IMMEDIATE`` (see :func:`write_connection`) so they take
the write lock up front instead of upgrading a read lock, which SQLite cannot wait for ("database is
locked").  This is the recipe of SQLAlchemy's pysqlite documentation ("Serializable isolation /
Savepoints / Transactional DDL").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

SQLITE_BUSY_TIMEOUT_S = 30.0

#: Connection execution option read by the SQLite ``begin`` hook: how to ``BEGIN``.
SQLITE_BEGIN_OPTION = "slicebox_sqlite_begin"
_BEGIN_STATEMENTS = {
    "DEFERRED": "BEGIN DEFERRED",
    "IMMEDIATE": "BEGIN IMMEDIATE",
    "EXCLUSIVE": "BEGIN EXCLUSIVE",
}

#: PostgreSQL advisory lock key held while migrating (two servers starting at once wait in turn).
PG_MIGRATION_LOCK = 0x5B0C_0001

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def inserted_id(conn: sa.Connection, table: sa.Table, **values: Any) -> int:
    """Insert one row of ``values`` into ``table`` in the caller's transaction; the new row's id (how every
    store adds a row it refers to afterwards)."""
    return int(conn.execute(table.insert().values(values).returning(table.c.id)).scalar_one())


def sqlite_url(path: str | os.PathLike[str]) -> str:
    """The URL of a SQLite file (absolute; characters such as ``?`` and ``#`` escaped)."""
    absolute = Path(path).expanduser().absolute()
    return URL.create("sqlite", database=str(absolute)).render_as_string(hide_password=False)


def is_sqlite_memory(engine: sa.Engine) -> bool:
    """True for a private in-memory SQLite database (one shared connection, see create_engine)."""
    return engine.dialect.name == "sqlite" and _is_memory(engine.url)


def _is_memory(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def create_engine(url: str) -> sa.Engine:
    """An engine for the index at ``url``.

    A SQLite file gets its folder created and the pragmas of the module docstring.  An in-memory
    SQLite URL (``sqlite://``) gets one connection shared by all threads (``StaticPool``), for
    tests: :class:`~slicebox_lab.index.Index` serializes its use.  Anything else is a normal
    pooled engine that checks connections before use (a restarted PostgreSQL is survived).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)
    if _is_memory(parsed):
        engine = sa.create_engine(parsed, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        database = parsed.database or ""
        if not database.startswith("file:"):
            Path(database).expanduser().absolute().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            parsed,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
            pool_size=10,
            max_overflow=40,
            pool_timeout=60,
        )
    configure_sqlite(engine)
    return engine


def configure_sqlite(engine: sa.Engine) -> bool:
    """Install the pragma and ``BEGIN`` hooks on a SQLite engine; False if already installed.

    Idempotent, so an :class:`Index` built on a plain ``sqlalchemy.create_engine`` engine still
    gets them (connections opened before the call keep their old settings).
    """
    if engine.dialect.name != "sqlite" or event.contains(engine, "begin", _sqlite_begin):
        return False
    memory = _is_memory(engine.url)

    def on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        # pysqlite must not open or commit transactions on its own: the begin hook does.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA synchronous = FULL")
            connection_record.info["synchronous"] = "FULL"
            if not memory:
                cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return True


def _sqlite_begin(conn: sa.Connection) -> None:
    mode = conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
    conn.exec_driver_sql(_BEGIN_STATEMENTS[mode])


def write_connection(engine: sa.Engine) -> sa.Connection:
    """A connection whose transactions take the SQLite write lock at ``BEGIN`` (no-op elsewhere)."""
    conn = engine.connect()
    if engine.dialect.name == "sqlite":
        conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
    return conn


def alembic_config() -> Config:
    """An alembic configuration built in code: no ``alembic.ini`` needed at runtime."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade(engine: sa.Engine) -> None:
    """Bring the schema to the newest migration; cheap when it already is (call it at every start).

    Runs in one transaction (transactional DDL on both backends), under the SQLite write lock or
    a PostgreSQL advisory lock, so concurrent starts migrate once and the others wait.
    """
    config = alembic_config()
    with write_connection(engine) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK})
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
