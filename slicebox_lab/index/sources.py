"""Statements on the sources table (``sources``) that features make inside their own transactions.

Forwarding rules and tag filters name a source by type and name; a client may give its id instead
(``GET /sources``), read in the transaction that stores the rule or the association.
"""

from __future__ import annotations

from typing import NamedTuple

import sqlalchemy as sa

from .schema import sources

__all__ = ["SourceName", "source_by_id", "source_ids"]


class SourceName(NamedTuple):
    source_type: str
    source_name: str


def source_by_id(conn: sa.Connection, source_id: int) -> SourceName | None:
    row = conn.execute(sa.select(sources.c.source_type, sources.c.source_name).where(sources.c.id == source_id)).first()
    return None if row is None else SourceName(row.source_type, row.source_name)


def source_ids(conn: sa.Connection) -> dict[tuple[str, str], int]:
    """The id of every source, by (type, name)."""
    rows = conn.execute(sa.select(sources.c.id, sources.c.source_type, sources.c.source_name)).all()
    return {(r.source_type, r.source_name): int(r.id) for r in rows}
