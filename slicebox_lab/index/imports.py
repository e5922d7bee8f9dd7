"""Statements of the import sessions (table ``import_sessions``), with the record of their rows.

The rules (names, one owner per name) and the ingest of each file live in ``watch/imports.py``; it
reads the sessions of a name and inserts a new one in one transaction (:func:`sessions_named` and
:func:`insert_session` on the connection of ``Index.writing``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from slicebox_lab.model import Image

from . import _records, query
from .database import inserted_id
from .repository import Index
from .schema import images, import_sessions, sources

__all__ = [
    "ImportSession",
    "count_files",
    "delete_session",
    "insert_session",
    "list_sessions",
    "session_by_id",
    "session_images",
    "sessions_named",
]


@dataclass(frozen=True)
class ImportSession:
    id: int
    name: str
    user: str
    files_imported: int
    files_added: int
    files_rejected: int
    created: str
    last_updated: str


_COLUMNS = _records.columns_of(import_sessions, ImportSession)


def _session(row: Sequence[Any]) -> ImportSession:
    return _records.record_of(ImportSession, row)


def sessions_named(conn: sa.Connection, name: str) -> list[ImportSession]:
    """The sessions of this name (one per user), read in the caller's transaction."""
    return [_session(row) for row in conn.execute(sa.select(*_COLUMNS).where(import_sessions.c.name == name))]


def insert_session(conn: sa.Connection, name: str, user: str, now: datetime) -> ImportSession:
    """Insert a session in the caller's transaction; the row as stored."""
    session_id = inserted_id(conn, import_sessions, name=name, user=user, created=now, last_updated=now)
    row = conn.execute(sa.select(*_COLUMNS).where(import_sessions.c.id == session_id)).one()
    return _session(row)


def list_sessions(index: Index, start_index: int, count: int) -> list[ImportSession]:
    start, limit = query._page(start_index, count)
    statement = sa.select(*_COLUMNS).order_by(import_sessions.c.id).offset(start).limit(limit)
    with index.reading() as conn:
        return [_session(row) for row in conn.execute(statement)]


def session_by_id(index: Index, key: int) -> ImportSession | None:
    with index.reading() as conn:
        row = conn.execute(sa.select(*_COLUMNS).where(import_sessions.c.id == key)).first()
    return None if row is None else _session(row)


def delete_session(index: Index, key: int) -> str | None:
    """Delete a session (its images stay); its name, or None if there was none with this id."""
    with index.writing() as conn:
        return conn.execute(
            import_sessions.delete().where(import_sessions.c.id == key).returning(import_sessions.c.name)
        ).scalar_one_or_none()


def session_images(index: Index, name: str) -> list[Image]:
    """The images whose latest source is the import session of this name (those that still exist)."""
    statement = (
        sa.select(*_records.IMAGE_COLUMNS)
        .join(sources, sources.c.id == images.c.source_id)
        .where(sources.c.source_type == "import", sources.c.source_name == name)
        .order_by(images.c.id)
    )
    with index.reading() as conn:
        return [_records.image(row) for row in conn.execute(statement)]


def count_files(index: Index, session_id: int, imported: int, added: int, rejected: int) -> None:
    """Add to the session's counters and touch ``last_updated``."""
    c = import_sessions.c
    with index.writing() as conn:
        conn.execute(
            import_sessions.update()
            .where(c.id == session_id)
            .values(
                files_imported=c.files_imported + imported,
                files_added=c.files_added + added,
                files_rejected=c.files_rejected + rejected,
                last_updated=datetime.now(UTC),
            )
        )
