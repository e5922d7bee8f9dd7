"""Durable and relaxed write transactions: the audit trail's commits do not wait for the disk, every
other write does, and a relaxed transaction leaves its pooled connection durable again."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from pg import pg_engine, postgresql_url  # noqa: F401

from slicebox_lab.index import Index, create_engine, sqlite_url, upgrade
from slicebox_lab.index.schema import audit

_ROW = {"user": "u", "action": "a", "method": "GET", "path": "/p", "status": 200, "remote_ip": "", "detail": ""}


def _setting(conn: sa.Connection) -> str:
    if conn.dialect.name == "sqlite":
        return {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[conn.exec_driver_sql("PRAGMA synchronous").scalar_one()]
    return str(conn.exec_driver_sql("SHOW synchronous_commit").scalar_one())


def test_a_relaxed_transaction_relaxes_only_itself(index: Index) -> None:
    relaxed = "NORMAL" if index.engine.dialect.name == "sqlite" else "off"
    with index.writing() as conn:
        durable = _setting(conn)  # FULL; the server's own setting on PostgreSQL (the test server's is off)
    if index.engine.dialect.name == "sqlite":
        assert durable == "FULL"
    for _ in range(3):  # the pool hands the same connection back: it must be durable again
        with index.writing(durable=False) as conn:
            assert _setting(conn) == relaxed
            conn.execute(audit.insert(), [{**_ROW, "created": datetime.now(UTC)}])
        with index.writing() as conn:
            assert _setting(conn) == durable
    with index.reading() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(audit)).scalar_one() == 3


def test_a_relaxed_commit_survives_a_crash_of_the_process(tmp_path: Path) -> None:
    """Only a power cut may lose a relaxed commit: a process killed right after it keeps the row."""
    url = sqlite_url(tmp_path / "index.sqlite")
    engine = create_engine(url)
    upgrade(engine)
    engine.dispose()
    script = f"""
import os
from datetime import datetime, timezone
from slicebox_lab.index import Index, create_engine
from slicebox_lab.index.schema import audit
index = Index(create_engine({url!r}))
with index.writing(durable=False) as conn:
    conn.execute(audit.insert(), [dict({_ROW!r}, created=datetime.now(timezone.utc))])
os._exit(9)  # no close, no checkpoint, no atexit
"""
    assert subprocess.run([sys.executable, "-c", script], timeout=60).returncode == 9
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.select(audit.c.path)).scalars().all() == ["/p"]
    finally:
        engine.dispose()
