"""Statements of series types (tables ``series_types``, ``series_type_rules`` and ``series_series_types``):
rows in, plain rows out.

The rules (names, rule conditions and their matching, when series are classified) live in
``organize/seriestypes.py``; a rule's conditions are stored as the JSON text it writes.  Functions
taking a connection are parts of a transaction the caller composes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from .database import inserted_id
from .repository import Index
from .schema import images, series, series_series_types, series_type_rules, series_types

__all__ = [
    "RuleRow",
    "TypeRow",
    "all_rules",
    "assign",
    "clear_rule_assignments",
    "delete_rule",
    "delete_type",
    "first_image_id",
    "insert_rule",
    "insert_type",
    "rename_type",
    "rule_by_id",
    "rules_of_type",
    "series_count",
    "series_exists",
    "series_ids_after",
    "set_rule_attributes",
    "type_by_id",
    "type_id_named",
    "types_of_many_series",
    "types_of_series",
    "types_page",
    "unassign",
    "write_classification",
]

#: ids per ``IN (...)``: well below the bind parameter limits of SQLite and PostgreSQL
_CHUNK = 500


class TypeRow(NamedTuple):
    id: int
    name: str


class RuleRow(NamedTuple):
    id: int
    series_type_id: int
    #: the conditions, as JSON text
    attributes: str


# ---------------------------------------------------------------------------------------------- types


def type_by_id(conn: sa.Connection, type_id: int) -> TypeRow | None:
    row = conn.execute(sa.select(series_types.c.id, series_types.c.name).where(series_types.c.id == type_id)).first()
    return None if row is None else TypeRow(int(row.id), row.name)


def type_id_named(conn: sa.Connection, name: str) -> int | None:
    return conn.execute(sa.select(series_types.c.id).where(series_types.c.name == name)).scalar()


def types_page(index: Index, start_index: int, count: int) -> list[TypeRow]:
    statement = (
        sa.select(series_types.c.id, series_types.c.name).order_by(series_types.c.id).offset(start_index).limit(count)
    )
    with index.reading() as conn:
        return [TypeRow(int(row.id), row.name) for row in conn.execute(statement)]


def insert_type(conn: sa.Connection, name: str, created: datetime) -> int:
    return inserted_id(conn, series_types, name=name, created=created)


def rename_type(conn: sa.Connection, type_id: int, name: str) -> None:
    conn.execute(series_types.update().where(series_types.c.id == type_id).values(name=name))


def delete_type(index: Index, type_id: int) -> bool:
    """Delete the type (its rules and assignments cascade); False when there was none."""
    with index.writing() as conn:
        return bool(conn.execute(series_types.delete().where(series_types.c.id == type_id)).rowcount)


# ---------------------------------------------------------------------------------------------- rules


_RULE_COLUMNS = (series_type_rules.c.id, series_type_rules.c.series_type_id, series_type_rules.c.attributes)


def _rule(row: Any) -> RuleRow:
    return RuleRow(int(row.id), int(row.series_type_id), row.attributes)


def rules_of_type(conn: sa.Connection, type_id: int) -> list[RuleRow]:
    statement = sa.select(*_RULE_COLUMNS).where(series_type_rules.c.series_type_id == type_id)
    return [_rule(row) for row in conn.execute(statement.order_by(series_type_rules.c.id))]


def all_rules(index: Index) -> list[RuleRow]:
    with index.reading() as conn:
        return [_rule(row) for row in conn.execute(sa.select(*_RULE_COLUMNS).order_by(series_type_rules.c.id))]


def rule_by_id(conn: sa.Connection, type_id: int, rule_id: int) -> RuleRow | None:
    rule = series_type_rules.c.id == rule_id, series_type_rules.c.series_type_id == type_id
    row = conn.execute(sa.select(*_RULE_COLUMNS).where(*rule)).first()
    return None if row is None else _rule(row)


def insert_rule(conn: sa.Connection, type_id: int, attributes: str, created: datetime) -> int:
    return inserted_id(conn, series_type_rules, series_type_id=type_id, attributes=attributes, created=created)


def set_rule_attributes(conn: sa.Connection, rule_id: int, attributes: str) -> None:
    conn.execute(series_type_rules.update().where(series_type_rules.c.id == rule_id).values(attributes=attributes))


def delete_rule(index: Index, type_id: int, rule_id: int) -> bool:
    """False when the type has no such rule."""
    with index.writing() as conn:
        deleted = conn.execute(
            series_type_rules.delete().where(
                series_type_rules.c.id == rule_id, series_type_rules.c.series_type_id == type_id
            )
        ).rowcount
    return bool(deleted)


# ---------------------------------------------------------------------------------------------- series


def series_exists(conn: sa.Connection, series_id: int) -> bool:
    return conn.execute(sa.select(series.c.id).where(series.c.id == series_id)).first() is not None


def types_of_series(conn: sa.Connection, series_id: int) -> list[TypeRow]:
    rows = conn.execute(
        sa.select(series_types.c.id, series_types.c.name)
        .join(series_series_types, series_series_types.c.series_type_id == series_types.c.id)
        .where(series_series_types.c.series_id == series_id)
        .order_by(series_types.c.id)
    )
    return [TypeRow(int(row.id), row.name) for row in rows]


def types_of_many_series(index: Index, series_ids: Sequence[int]) -> list[tuple[int, TypeRow]]:
    """(series id, type) of each type of each series, by series, then type."""
    out: list[tuple[int, TypeRow]] = []
    link = series_series_types
    with index.reading() as conn:
        for start in range(0, len(series_ids), _CHUNK):
            rows = conn.execute(
                sa.select(link.c.series_id, series_types.c.id, series_types.c.name)
                .join(series_types, series_types.c.id == link.c.series_type_id)
                .where(link.c.series_id.in_(series_ids[start : start + _CHUNK]))
                .order_by(link.c.series_id, series_types.c.id)
            )
            out.extend((int(row.series_id), TypeRow(int(row.id), row.name)) for row in rows)
    return out


def assign(conn: sa.Connection, series_id: int, type_id: int) -> None:
    """The series has the type, assigned by hand (re-classification keeps it)."""
    link = series_series_types
    where = (link.c.series_id == series_id, link.c.series_type_id == type_id)
    if not conn.execute(link.update().where(*where).values(manual=True)).rowcount:
        conn.execute(link.insert().values(series_id=series_id, series_type_id=type_id, manual=True))


def unassign(index: Index, series_id: int, type_id: int | None) -> None:
    """Remove one type (every type: None) of the series, manual or not."""
    link = series_series_types
    statement = link.delete().where(link.c.series_id == series_id)
    if type_id is not None:
        statement = statement.where(link.c.series_type_id == type_id)
    with index.writing() as conn:
        conn.execute(statement)


def write_classification(index: Index, series_id: int, type_ids: set[int]) -> None:
    """Replace the rule-assigned types of the series by ``type_ids`` (manual ones stay)."""
    link = series_series_types
    with index.writing() as conn:
        if not series_exists(conn, series_id):
            return  # deleted meanwhile
        have = {
            int(row.series_type_id): bool(row.manual)
            for row in conn.execute(
                sa.select(link.c.series_type_id, link.c.manual).where(link.c.series_id == series_id)
            )
        }
        stale = [t for t, manual in have.items() if not manual and t not in type_ids]
        if stale:
            conn.execute(link.delete().where(link.c.series_id == series_id, link.c.series_type_id.in_(stale)))
        wanted = sorted(type_ids - set(have))
        if wanted:  # a type deleted since the rules were read is skipped
            wanted = sorted(conn.execute(sa.select(series_types.c.id).where(series_types.c.id.in_(wanted))).scalars())
        new = [{"series_id": series_id, "series_type_id": t, "manual": False} for t in wanted]
        if new:
            conn.execute(link.insert(), new)


def clear_rule_assignments(index: Index) -> int:
    """Remove every rule-assigned type (manual ones stay); how many were removed."""
    with index.writing() as conn:
        return int(conn.execute(series_series_types.delete().where(~series_series_types.c.manual)).rowcount)


def first_image_id(index: Index, series_id: int) -> int | None:
    """The series' first stored image (the lowest id), None when it has none."""
    with index.reading() as conn:
        image_id = conn.execute(sa.select(sa.func.min(images.c.id)).where(images.c.series_id == series_id)).scalar()
    return None if image_id is None else int(image_id)


def series_count(index: Index) -> int:
    with index.reading() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(series)).scalar_one())


def series_ids_after(index: Index, last: int, limit: int) -> list[int]:
    """The next ``limit`` series ids above ``last``, in order."""
    with index.reading() as conn:
        return [
            int(i)
            for i in conn.execute(
                sa.select(series.c.id).where(series.c.id > last).order_by(series.c.id).limit(limit)
            ).scalars()
        ]
