"""Statements of the audit trail (table ``audit``): batches of entries in, pages of entries out.

What is recorded, when, and the writer thread batching entries live in ``access/audit.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ._records import iso
from .repository import Index
from .schema import audit

__all__ = ["AuditEntry", "insert_entries", "list_entries"]


@dataclass(frozen=True)
class AuditEntry:
    id: int
    created: str
    user: str
    action: str
    method: str
    path: str
    status: int
    remote_ip: str
    detail: str


def insert_entries(index: Index, batch: Sequence[dict[str, Any]]) -> None:
    """Write a batch of entries (column values) in one transaction.

    Not fsynced on its own: the next image commit (WAL) or checkpoint syncs these rows too, so only
    a power cut in between can lose the last entries, never a crash.
    """
    with index.writing(durable=False) as conn:
        conn.execute(audit.insert(), batch)


def list_entries(
    index: Index,
    start_index: int,
    count: int,
    user: str | None,
    action: str | None,
    since: datetime | None,
    until: datetime | None,
    newest_first: bool,
) -> list[AuditEntry]:
    statement = sa.select(audit)
    if user is not None:
        statement = statement.where(audit.c.user == user)
    if action is not None:
        statement = statement.where(audit.c.action == action)
    if since is not None:
        statement = statement.where(audit.c.created >= since)
    if until is not None:
        statement = statement.where(audit.c.created < until)
    order = audit.c.id.desc() if newest_first else audit.c.id.asc()
    statement = statement.order_by(order).offset(start_index).limit(count)
    with index.reading() as conn:
        rows = conn.execute(statement).all()
    return [
        AuditEntry(
            int(r.id), iso(r.created), r.user, r.action, r.method, r.path, int(r.status), r.remote_ip, r.detail
        )  # fmt: skip
        for r in rows
    ]
