"""Statements of the node's DICOM network configuration: its SCPs (table ``scps``) and the remote nodes
it knows (table ``scus``), with the records of their rows.

Validation of every value a client sends, and the rules of a new row (a used name or AE title is a
Conflict), live in ``net/nodes.py``; it inserts in its own transaction (``index.unique.writing_unique``)
through :func:`insert_scp`, :func:`scu_ae_title_used` and :func:`insert_scu`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from .database import inserted_id
from .repository import Index
from .schema import scps, scus

__all__ = [
    "RemoteNode",
    "ScpConfig",
    "delete_scp_row",
    "delete_scu_row",
    "find_scu_by_ae_title",
    "insert_scp",
    "insert_scu",
    "list_scps",
    "list_scus",
    "scp_by_id",
    "scp_name_used",
    "scu_ae_title_used",
    "scu_by_id",
    "set_scp_port",
]


@dataclass(frozen=True)
class ScpConfig:
    """One SCP of this node: a listener with its own AE title on ``host:port``."""

    id: int
    name: str
    ae_title: str
    host: str
    port: int


@dataclass(frozen=True)
class RemoteNode:
    """A remote DICOM node (PACS, workstation) this node talks to: C-ECHO, C-MOVE destination."""

    id: int
    name: str
    ae_title: str
    host: str
    port: int


# ---------------------------------------------------------------------------------------------
# SCPs (used by ScpService, which keeps rows and listeners in step)


def _scp(row: Any) -> ScpConfig:
    return ScpConfig(id=int(row.id), name=row.name, ae_title=row.ae_title, host=row.host, port=int(row.port))


_SCP_COLUMNS = (scps.c.id, scps.c.name, scps.c.ae_title, scps.c.host, scps.c.port)


def list_scps(index: Index) -> list[ScpConfig]:
    with index.reading() as conn:
        return [_scp(row) for row in conn.execute(sa.select(*_SCP_COLUMNS).order_by(scps.c.id))]


def scp_by_id(index: Index, key: int) -> ScpConfig | None:
    with index.reading() as conn:
        row = conn.execute(sa.select(*_SCP_COLUMNS).where(scps.c.id == key)).first()
    return None if row is None else _scp(row)


def scp_name_used(index: Index, name: str) -> bool:
    with index.reading() as conn:
        return conn.execute(sa.select(scps.c.id).where(scps.c.name == name)).first() is not None


def insert_scp(conn: sa.Connection, name: str, ae_title: str, host: str, port: int) -> int:
    """Insert a validated row in the caller's transaction; its id (a used name: the insert fails)."""
    values = {"name": name, "ae_title": ae_title, "host": host, "port": port, "created": _now()}
    return inserted_id(conn, scps, **values)


def set_scp_port(index: Index, scp_id: int, port: int) -> None:
    with index.writing() as conn:
        conn.execute(scps.update().where(scps.c.id == scp_id).values(port=port))


def delete_scp_row(index: Index, scp_id: int) -> None:
    with index.writing() as conn:
        conn.execute(scps.delete().where(scps.c.id == scp_id))


# ---------------------------------------------------------------------------------------------
# remote nodes (SCUs in Slicebox's words)


_SCU_COLUMNS = (scus.c.id, scus.c.name, scus.c.ae_title, scus.c.host, scus.c.port)


def _scu(row: Any) -> RemoteNode:
    return RemoteNode(id=int(row.id), name=row.name, ae_title=row.ae_title, host=row.host, port=int(row.port))


def list_scus(index: Index) -> list[RemoteNode]:
    with index.reading() as conn:
        return [_scu(row) for row in conn.execute(sa.select(*_SCU_COLUMNS).order_by(scus.c.id))]


def scu_by_id(index: Index, key: int) -> RemoteNode | None:
    with index.reading() as conn:
        row = conn.execute(sa.select(*_SCU_COLUMNS).where(scus.c.id == key)).first()
    return None if row is None else _scu(row)


def find_scu_by_ae_title(index: Index, ae_title: str) -> RemoteNode | None:
    """The remote node with this AE title (surrounding spaces ignored), if any: a C-MOVE destination."""
    title = ae_title.strip(" ")
    with index.reading() as conn:
        row = conn.execute(sa.select(*_SCU_COLUMNS).where(scus.c.ae_title == title).order_by(scus.c.id)).first()
    return None if row is None else _scu(row)


def scu_ae_title_used(conn: sa.Connection, ae_title: str) -> bool:
    """Whether a remote node has this AE title, read in the caller's transaction."""
    return conn.execute(sa.select(scus.c.id).where(scus.c.ae_title == ae_title)).first() is not None


def insert_scu(conn: sa.Connection, node: RemoteNode) -> int:
    """Insert a validated remote node (its ``id`` is ignored) in the caller's transaction; its id (a used
    name: the insert fails)."""
    values = {"name": node.name, "ae_title": node.ae_title, "host": node.host, "port": node.port, "created": _now()}
    return inserted_id(conn, scus, **values)


def delete_scu_row(index: Index, key: int) -> bool:
    """Delete a remote node; False if there was none with this id."""
    with index.writing() as conn:
        deleted = conn.execute(scus.delete().where(scus.c.id == key)).rowcount
    return bool(deleted)


def _now() -> datetime:
    return datetime.now(UTC)
