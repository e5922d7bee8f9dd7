"""Statements of the node-local users (table ``users``): rows in, plain rows out.

The rules (names, roles, password hashing and checking) live in ``access/users.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from .repository import Index
from .schema import users

__all__ = ["UserRow", "delete_user", "insert_user", "list_users", "user_by_name"]


class UserRow(NamedTuple):
    id: int
    name: str
    role: str
    created: datetime
    password_hash: str


_COLUMNS = (users.c.id, users.c.name, users.c.role, users.c.created, users.c.password_hash)


def _row(row: Any) -> UserRow:
    return UserRow(int(row.id), row.name, row.role, row.created, str(row.password_hash))


def list_users(index: Index) -> list[UserRow]:
    with index.reading() as conn:
        return [_row(r) for r in conn.execute(sa.select(*_COLUMNS).order_by(users.c.id))]


def user_by_name(index: Index, name: str) -> UserRow | None:
    with index.reading() as conn:
        row = conn.execute(sa.select(*_COLUMNS).where(users.c.name == name)).first()
    return None if row is None else _row(row)


def insert_user(index: Index, name: str, role: str, password_hash: str, created: datetime) -> None:
    """Add the user unless the name exists (then nothing changes)."""
    with index.writing() as conn:
        if conn.execute(sa.select(users.c.id).where(users.c.name == name)).first() is None:
            conn.execute(users.insert().values(name=name, role=role, password_hash=password_hash, created=created))


def delete_user(index: Index, user_id: int) -> None:
    with index.writing() as conn:
        conn.execute(users.delete().where(users.c.id == user_id))
