"""Statements of the tag filters (tables ``tag_filters``, ``tag_filter_paths`` and ``source_tag_filters``):
rows in, plain rows out.

The rules (tag paths, what no filter may remove, combining the filters of a source, the cache)
live in ``routing/filtering.py``.  Functions taking a connection are parts of a transaction the
caller composes.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa

from .database import inserted_id
from .repository import Index
from .schema import source_tag_filters, sources, tag_filter_paths, tag_filters

__all__ = [
    "AssociationRow",
    "FilterRow",
    "PathRow",
    "SourcePathRow",
    "association_id_for",
    "associations",
    "delete_association",
    "delete_filter",
    "delete_tag_path",
    "detach_source",
    "filter_by_id",
    "filter_id_named",
    "filters",
    "insert_association",
    "insert_filter",
    "insert_tag_path",
    "paths_by_source",
]


class SourcePathRow(NamedTuple):
    """A tag path of a filter attached to a source (``tag_path`` None: the filter has no path)."""

    source_type: str
    source_name: str
    filter_type: str
    tag_path: str | None
    filter_id: int


class PathRow(NamedTuple):
    id: int
    filter_id: int
    tag_path: str


class FilterRow(NamedTuple):
    id: int
    name: str
    filter_type: str
    tag_paths: tuple[PathRow, ...]


class AssociationRow(NamedTuple):
    """A filter attached to a source; ``source_id`` None: nothing received from the source yet."""

    id: int
    source_type: str
    source_name: str
    source_id: int | None
    filter_id: int
    filter_name: str


def paths_by_source(index: Index) -> list[SourcePathRow]:
    """The tag paths of every attached filter, by association, then path, in the order they were added."""
    statement = (
        sa.select(
            source_tag_filters.c.source_type,
            source_tag_filters.c.source_name,
            tag_filters.c.filter_type,
            tag_filter_paths.c.tag_path,
            tag_filters.c.id,
        )  # fmt: skip
        .select_from(
            source_tag_filters.join(tag_filters, tag_filters.c.id == source_tag_filters.c.filter_id).outerjoin(
                tag_filter_paths, tag_filter_paths.c.filter_id == tag_filters.c.id
            )
        )
        .order_by(source_tag_filters.c.id, tag_filter_paths.c.id)
    )
    with index.reading() as conn:
        rows = conn.execute(statement).all()
    return [SourcePathRow(*row) for row in rows]


# ------------------------------------------------------------------ filters


def _paths_of(conn: sa.Connection, filter_ids: list[int]) -> dict[int, list[PathRow]]:
    out: dict[int, list[PathRow]] = {i: [] for i in filter_ids}
    if not filter_ids:
        return out
    statement = (
        sa.select(tag_filter_paths.c.id, tag_filter_paths.c.filter_id, tag_filter_paths.c.tag_path)
        .where(tag_filter_paths.c.filter_id.in_(filter_ids))
        .order_by(tag_filter_paths.c.id)
    )
    for row in conn.execute(statement):
        out[row.filter_id].append(PathRow(row.id, row.filter_id, row.tag_path))
    return out


def filters(conn: sa.Connection, filter_id: int | None = None) -> list[FilterRow]:
    """Every filter (or the one with ``filter_id``) with its tag paths, by id."""
    statement = sa.select(tag_filters.c.id, tag_filters.c.name, tag_filters.c.filter_type).order_by(tag_filters.c.id)
    if filter_id is not None:
        statement = statement.where(tag_filters.c.id == filter_id)
    rows = conn.execute(statement).all()
    paths = _paths_of(conn, [row.id for row in rows])
    return [FilterRow(row.id, row.name, row.filter_type, tuple(paths[row.id])) for row in rows]


def filter_by_id(conn: sa.Connection, filter_id: int) -> FilterRow | None:
    found = filters(conn, filter_id)
    return found[0] if found else None


def filter_id_named(conn: sa.Connection, name: str) -> int | None:
    return conn.execute(sa.select(tag_filters.c.id).where(tag_filters.c.name == name)).scalar()


def insert_filter(conn: sa.Connection, name: str, filter_type: str, tag_paths: list[str], created: datetime) -> int:
    """A new filter with its tag paths; its id."""
    filter_id = inserted_id(conn, tag_filters, name=name, filter_type=filter_type, created=created)
    if tag_paths:
        conn.execute(tag_filter_paths.insert(), [{"filter_id": filter_id, "tag_path": p} for p in tag_paths])
    return filter_id


def delete_filter(conn: sa.Connection, filter_id: int) -> bool:
    """Delete a filter with its tag paths and the associations that attach it; False when there was none."""
    conn.execute(source_tag_filters.delete().where(source_tag_filters.c.filter_id == filter_id))
    conn.execute(tag_filter_paths.delete().where(tag_filter_paths.c.filter_id == filter_id))
    return conn.execute(tag_filters.delete().where(tag_filters.c.id == filter_id)).rowcount != 0


def insert_tag_path(conn: sa.Connection, filter_id: int, tag_path: str) -> int:
    return inserted_id(conn, tag_filter_paths, filter_id=filter_id, tag_path=tag_path)


def delete_tag_path(conn: sa.Connection, filter_id: int, path_id: int) -> bool:
    """Delete the filter's tag path; False when the filter has no such path."""
    condition = sa.and_(tag_filter_paths.c.id == path_id, tag_filter_paths.c.filter_id == filter_id)
    return conn.execute(tag_filter_paths.delete().where(condition)).rowcount != 0


# ------------------------------------------------------------------ associations


def associations(conn: sa.Connection, association_id: int | None = None) -> list[AssociationRow]:
    """Every association (or the one with ``association_id``), by id."""
    statement = (
        sa.select(
            source_tag_filters.c.id,
            source_tag_filters.c.source_type,
            source_tag_filters.c.source_name,
            sources.c.id.label("source_id"),
            tag_filters.c.id.label("filter_id"),
            tag_filters.c.name,
        )  # fmt: skip
        .select_from(
            source_tag_filters.join(tag_filters, tag_filters.c.id == source_tag_filters.c.filter_id).outerjoin(
                sources,
                sa.and_(
                    sources.c.source_type == source_tag_filters.c.source_type,
                    sources.c.source_name == source_tag_filters.c.source_name,
                ),  # fmt: skip
            )
        )
        .order_by(source_tag_filters.c.id)
    )
    if association_id is not None:
        statement = statement.where(source_tag_filters.c.id == association_id)
    return [
        AssociationRow(r.id, r.source_type, r.source_name, r.source_id, r.filter_id, r.name)
        for r in conn.execute(statement)
    ]


def association_id_for(conn: sa.Connection, source_type: str, source_name: str, filter_id: int) -> int | None:
    """The association attaching this filter to this source, if any."""
    existing = sa.and_(source_tag_filters.c.source_type == source_type,
                       source_tag_filters.c.source_name == source_name,
                       source_tag_filters.c.filter_id == filter_id)  # fmt: skip
    return conn.execute(sa.select(source_tag_filters.c.id).where(existing)).scalar()


def insert_association(
    conn: sa.Connection, source_type: str, source_name: str, filter_id: int, created: datetime
) -> int:
    return inserted_id(
        conn, source_tag_filters, source_type=source_type, source_name=source_name, filter_id=filter_id, created=created
    )


def delete_association(index: Index, association_id: int) -> bool:
    """False when there was no such association."""
    with index.writing() as conn:
        return conn.execute(source_tag_filters.delete().where(source_tag_filters.c.id == association_id)).rowcount != 0


def detach_source(index: Index, source_type: str, source_name: str) -> int:
    """Delete the associations of a source; how many there were."""
    condition = sa.and_(
        source_tag_filters.c.source_type == source_type, source_tag_filters.c.source_name == source_name
    )
    with index.writing() as conn:
        return int(conn.execute(source_tag_filters.delete().where(condition)).rowcount)
