"""Statements of series tags (tables ``series_tags`` and ``series_series_tags``): rows in, plain rows out.

The rules (tag names, selections of series, what is idempotent and what is a conflict) live in
``organize/tags.py``.  Functions taking a connection are parts of a transaction the caller composes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from .database import inserted_id
from .repository import Index
from .schema import series, series_series_tags, series_tags

__all__ = [
    "TagRow",
    "delete_tag",
    "existing_series",
    "insert_tag",
    "link",
    "rename_tag",
    "tag_by_id",
    "tag_id_named",
    "tags_of_series",
    "tags_page",
    "unlink",
    "untag",
]

#: ids per ``IN (...)``: well below the bind parameter limits of SQLite and PostgreSQL
_CHUNK = 500


class TagRow(NamedTuple):
    id: int
    name: str
    #: how many series carry the tag now
    series_count: int


def _counted() -> sa.Select[Any]:
    links = series_series_tags.alias("counted_links")  # never correlated with a join on the links
    count = (
        sa.select(sa.func.count())
        .select_from(links)
        .where(links.c.series_tag_id == series_tags.c.id)
        .scalar_subquery()
        .label("series_count")
    )
    return sa.select(series_tags.c.id, series_tags.c.name, count)


def _record(row: Any) -> TagRow:
    return TagRow(int(row.id), row.name, int(row.series_count))


def tag_by_id(conn: sa.Connection, tag_id: int) -> TagRow | None:
    row = conn.execute(_counted().where(series_tags.c.id == tag_id)).first()
    return None if row is None else _record(row)


def existing_series(conn: sa.Connection, series_ids: Sequence[int]) -> set[int]:
    """Those of the series that exist."""
    found: set[int] = set()
    for start in range(0, len(series_ids), _CHUNK):
        chunk = series_ids[start : start + _CHUNK]
        found.update(conn.execute(sa.select(series.c.id).where(series.c.id.in_(chunk))).scalars())
    return found


# ---------------------------------------------------------------------------------------------- tags


def tags_page(
    index: Index, start_index: int, count: int, order_by: str, order_ascending: bool, name_contains: str
) -> list[TagRow]:
    """Tags whose name contains ``name_contains`` (any case; "": every tag), ordered by the column ``order_by``."""
    column = series_tags.c[order_by]
    statement = _counted().order_by(column.asc() if order_ascending else column.desc(), series_tags.c.id.asc())
    if name_contains:
        escaped = name_contains.replace("/", "//").replace("%", "/%").replace("_", "/_")
        statement = statement.where(series_tags.c.name.ilike(f"%{escaped}%", escape="/"))
    statement = statement.offset(start_index).limit(count)
    with index.reading() as conn:
        return [_record(row) for row in conn.execute(statement)]


def insert_tag(conn: sa.Connection, name: str, created: datetime) -> int:
    return inserted_id(conn, series_tags, name=name, created=created)


def tag_id_named(conn: sa.Connection, name: str) -> int | None:
    found = conn.execute(sa.select(series_tags.c.id).where(series_tags.c.name == name)).scalar()
    return None if found is None else int(found)


def rename_tag(conn: sa.Connection, tag_id: int, name: str) -> bool:
    """False when there is no such tag."""
    return bool(conn.execute(series_tags.update().where(series_tags.c.id == tag_id).values(name=name)).rowcount)


def delete_tag(index: Index, tag_id: int) -> None:
    """Delete the tag and (cascading) its links."""
    with index.writing() as conn:
        conn.execute(series_tags.delete().where(series_tags.c.id == tag_id))


# ---------------------------------------------------------------------------------------------- links


def link(conn: sa.Connection, tag_id: int, series_ids: Sequence[int]) -> int:
    """Link the series not linked yet; how many were new."""
    added = 0
    for start in range(0, len(series_ids), _CHUNK):
        chunk = list(series_ids[start : start + _CHUNK])
        have = set(
            conn.execute(
                sa.select(series_series_tags.c.series_id).where(
                    series_series_tags.c.series_tag_id == tag_id, series_series_tags.c.series_id.in_(chunk)
                )
            ).scalars()
        )
        new = [{"series_tag_id": tag_id, "series_id": i} for i in chunk if i not in have]
        if new:
            conn.execute(series_series_tags.insert(), new)
            added += len(new)
    return added


def unlink(conn: sa.Connection, tag_id: int, series_ids: Sequence[int]) -> int:
    """Unlink the series from the tag; how many carried it."""
    removed = 0
    for start in range(0, len(series_ids), _CHUNK):
        chunk = series_ids[start : start + _CHUNK]
        removed += conn.execute(
            series_series_tags.delete().where(
                series_series_tags.c.series_tag_id == tag_id, series_series_tags.c.series_id.in_(chunk)
            )
        ).rowcount
    return removed


def tags_of_series(conn: sa.Connection, series_id: int) -> list[TagRow]:
    rows = conn.execute(
        _counted()
        .join(series_series_tags, series_series_tags.c.series_tag_id == series_tags.c.id)
        .where(series_series_tags.c.series_id == series_id)
        .order_by(series_tags.c.name, series_tags.c.id)
    )
    return [_record(row) for row in rows]


def untag(index: Index, series_id: int, tag_id: int) -> None:
    with index.writing() as conn:
        conn.execute(
            series_series_tags.delete().where(
                series_series_tags.c.series_id == series_id, series_series_tags.c.series_tag_id == tag_id
            )
        )
