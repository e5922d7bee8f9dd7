"""The node's DICOM network configuration: its SCPs (listeners) and the remote nodes it knows.

Rows live in the index database (tables ``scps`` and ``scus``), read and written through
:meth:`Index.reading` / :meth:`Index.writing`.  Every value a client sends is validated here and
refused with :class:`~slicebox_lab.errors.InvalidInput` naming what is wrong; a name that is
already used is a :class:`~slicebox_lab.errors.Conflict`.

AE titles follow PS3.5 (VR AE): 1 to 16 characters of the default character repertoire
(printable ASCII), no backslash, no control characters, leading and trailing spaces not
significant (they are removed), not only spaces.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from slicebox_lab.errors import Conflict, InvalidInput, NotFound
from slicebox_lab.index import Index
from slicebox_lab.index.query import row_id
from slicebox_lab.index.schema import scps, scus

__all__ = [
    "RemoteNode",
    "ScpConfig",
    "add_scu",
    "delete_scp_row",
    "delete_scu",
    "find_scu_by_ae_title",
    "get_scp",
    "get_scu",
    "insert_scp",
    "list_scps",
    "list_scus",
    "scp_name_used",
    "set_scp_port",
    "validate_ae_title",
    "validate_host",
    "validate_name",
    "validate_port",
]

AE_TITLE_MAX_LENGTH = 16
NAME_MAX_LENGTH = 200
#: default bind address of an SCP: every interface
ANY_HOST = "0.0.0.0"


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
# validation


def validate_ae_title(value: Any) -> str:
    """``value`` as an AE title (surrounding spaces removed), or InvalidInput saying why not."""
    if not isinstance(value, str):
        raise InvalidInput("ae_title must be a string of 1 to 16 characters")
    title = value.strip(" ")
    if not title:
        raise InvalidInput("ae_title must not be empty or only spaces")
    if len(title) > AE_TITLE_MAX_LENGTH:
        raise InvalidInput(f"ae_title {title!r} is {len(title)} characters long; an AE title has at most 16")
    bad = sorted({c for c in title if not (" " <= c <= "~") or c == "\\"})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise InvalidInput(
            f"ae_title {title!r} contains {shown}: an AE title uses printable ASCII characters except the backslash"
        )
    return title


def validate_port(value: Any, *, allow_zero: bool = False) -> int:
    """A TCP port 1..65535 (0, "any free port", only where ``allow_zero``)."""
    lowest = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= 65535:
        zero = " (0: any free port)" if allow_zero else ""
        raise InvalidInput(f"port must be an integer from {lowest} to 65535{zero}, not {value!r}")
    return value


def validate_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("name must be a non-empty string")
    name = value.strip()
    if len(name) > NAME_MAX_LENGTH or any(ord(c) < 0x20 for c in name):
        raise InvalidInput(f"name must be at most {NAME_MAX_LENGTH} characters, without control characters")
    return name


def validate_host(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("host must be a non-empty host name or IP address")
    host = value.strip()
    if len(host) > 253 or any(c.isspace() or ord(c) < 0x20 for c in host) or "/" in host:
        raise InvalidInput(f"host {host!r} is not a valid host name or IP address")
    return host


def _key(value: Any, what: str) -> int:
    key = row_id(value, f"{what} id")
    if key is None:
        raise NotFound(f"{what} {value} not found")
    return key


# ---------------------------------------------------------------------------------------------
# SCPs (used by ScpService, which keeps rows and listeners in step)


def _scp(row: Any) -> ScpConfig:
    return ScpConfig(id=int(row.id), name=row.name, ae_title=row.ae_title, host=row.host, port=int(row.port))


_SCP_COLUMNS = (scps.c.id, scps.c.name, scps.c.ae_title, scps.c.host, scps.c.port)


def list_scps(index: Index) -> list[ScpConfig]:
    with index.reading() as conn:
        return [_scp(row) for row in conn.execute(sa.select(*_SCP_COLUMNS).order_by(scps.c.id))]


def get_scp(index: Index, scp_id: Any) -> ScpConfig:
    key = _key(scp_id, "SCP")
    with index.reading() as conn:
        row = conn.execute(sa.select(*_SCP_COLUMNS).where(scps.c.id == key)).first()
    if row is None:
        raise NotFound(f"SCP {scp_id} not found")
    return _scp(row)


def scp_name_used(index: Index, name: str) -> bool:
    with index.reading() as conn:
        return conn.execute(sa.select(scps.c.id).where(scps.c.name == name)).first() is not None


def insert_scp(index: Index, name: str, ae_title: str, host: str, port: int) -> ScpConfig:
    """Insert a validated row; a used name is a Conflict."""
    values = {"name": name, "ae_title": ae_title, "host": host, "port": port, "created": _now()}
    try:
        with index.writing() as conn:
            new_id = conn.execute(scps.insert().values(values).returning(scps.c.id)).scalar_one()
    except sa.exc.IntegrityError:
        raise Conflict(f"an SCP named {name!r} already exists") from None
    return ScpConfig(id=int(new_id), name=name, ae_title=ae_title, host=host, port=port)


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


def get_scu(index: Index, scu_id: Any) -> RemoteNode:
    key = _key(scu_id, "remote node")
    with index.reading() as conn:
        row = conn.execute(sa.select(*_SCU_COLUMNS).where(scus.c.id == key)).first()
    if row is None:
        raise NotFound(f"remote node {scu_id} not found")
    return _scu(row)


def find_scu_by_ae_title(index: Index, ae_title: str) -> RemoteNode | None:
    """The remote node with this AE title (surrounding spaces ignored), if any: a C-MOVE destination."""
    title = ae_title.strip(" ")
    with index.reading() as conn:
        row = conn.execute(sa.select(*_SCU_COLUMNS).where(scus.c.ae_title == title).order_by(scus.c.id)).first()
    return None if row is None else _scu(row)


def add_scu(index: Index, name: Any, ae_title: Any, host: Any, port: Any) -> RemoteNode:
    """Validate and store a remote node.

    A name already used is a Conflict, and so is an AE title already used by another remote
    node: C-MOVE finds its destination by AE title, which must therefore be unambiguous.
    """
    node = RemoteNode(
        id=0,
        name=validate_name(name),
        ae_title=validate_ae_title(ae_title),
        host=validate_host(host),
        port=validate_port(port),
    )
    values = {"name": node.name, "ae_title": node.ae_title, "host": node.host, "port": node.port, "created": _now()}
    try:
        with index.writing() as conn:
            if conn.execute(sa.select(scus.c.id).where(scus.c.ae_title == values["ae_title"])).first():
                raise Conflict(
                    f"a remote node with AE title {values['ae_title']!r} already exists "
                    "(C-MOVE destinations are found by AE title)"
                )
            new_id = conn.execute(scus.insert().values(values).returning(scus.c.id)).scalar_one()
    except sa.exc.IntegrityError:
        raise Conflict(f"a remote node named {values['name']!r} already exists") from None
    return RemoteNode(id=int(new_id), name=node.name, ae_title=node.ae_title, host=node.host, port=node.port)


def delete_scu(index: Index, scu_id: Any) -> None:
    """Delete a remote node; an unknown id is NotFound."""
    key = _key(scu_id, "remote node")
    with index.writing() as conn:
        deleted = conn.execute(scus.delete().where(scus.c.id == key)).rowcount
    if not deleted:
        raise NotFound(f"remote node {scu_id} not found")


def _now() -> datetime:
    return datetime.now(UTC)
