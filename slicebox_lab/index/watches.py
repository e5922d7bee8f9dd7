"""Statements of the watched folders (table ``directory_watches``), with the record of their rows.

The rules (names, paths, overlaps, the same watch again) and the watch threads live in
``watch/service.py``; it reads the watches and inserts a new one in one transaction
(:func:`watches_in` and :func:`insert_watch` on the connection of ``Index.writing``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from . import _records, query
from .database import inserted_id
from .repository import Index
from .schema import directory_watches

__all__ = ["WatchedDirectory", "delete_watch", "insert_watch", "list_watches", "watch_by_id", "watches_in"]


@dataclass(frozen=True)
class WatchedDirectory:
    id: int
    name: str
    path: str
    delete_on_import: bool
    created: str


_COLUMNS = _records.columns_of(directory_watches, WatchedDirectory)


def _record(row: Sequence[Any]) -> WatchedDirectory:
    return _records.record_of(WatchedDirectory, row)


def watches_in(conn: sa.Connection) -> list[WatchedDirectory]:
    """Every watch, read in the caller's transaction."""
    return [_record(row) for row in conn.execute(sa.select(*_COLUMNS))]


def insert_watch(conn: sa.Connection, name: str, path: str, delete_on_import: bool) -> WatchedDirectory:
    """Insert a watch in the caller's transaction; the row as stored."""
    values = {"name": name, "path": path, "delete_on_import": delete_on_import, "created": datetime.now(UTC)}
    watch_id = inserted_id(conn, directory_watches, **values)
    row = conn.execute(sa.select(*_COLUMNS).where(directory_watches.c.id == watch_id)).one()
    return _record(row)


def delete_watch(index: Index, key: int) -> tuple[str, str] | None:
    """Delete a watch; its (name, path), or None if there was none with this id."""
    with index.writing() as conn:
        row = conn.execute(
            directory_watches.delete()
            .where(directory_watches.c.id == key)
            .returning(directory_watches.c.name, directory_watches.c.path)
        ).first()
    return None if row is None else (row.name, row.path)


def watch_by_id(index: Index, key: int) -> WatchedDirectory | None:
    with index.reading() as conn:
        row = conn.execute(sa.select(*_COLUMNS).where(directory_watches.c.id == key)).first()
    return None if row is None else _record(row)


def list_watches(index: Index, start_index: int = 0, count: int | None = None) -> list[WatchedDirectory]:
    """The watches by id; ``count`` None: all of them."""
    statement = sa.select(*_COLUMNS).order_by(directory_watches.c.id)
    if count is not None or start_index:
        start, limit = query._page(start_index, 20 if count is None else count)
        statement = statement.offset(start).limit(limit)
    with index.reading() as conn:
        return [_record(row) for row in conn.execute(statement)]
