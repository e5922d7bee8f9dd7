"""The node's DICOM network configuration: its SCPs (listeners) and the remote nodes it knows.

Rows live in the index database (tables ``scps`` and ``scus``), read and written by
``index/nodes.py``, which also holds their records :class:`ScpConfig` and :class:`RemoteNode`.
Every value a client sends is validated here and refused with
:class:`~slicebox_lab.errors.InvalidInput` naming what is wrong; a name that is already used is a
:class:`~slicebox_lab.errors.Conflict`.

AE titles follow PS3.5 (VR AE): 1 to 16 characters of the default character repertoire
(printable ASCII), no backslash, no control characters, leading and trailing spaces not
significant (they are removed), not only spaces.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from slicebox_lab.errors import Conflict, InvalidInput, NotFound
from slicebox_lab.index import Index
from slicebox_lab.index import nodes as rows
from slicebox_lab.index.nodes import (
    RemoteNode,
    ScpConfig,
    delete_scp_row,
    find_scu_by_ae_title,
    list_scps,
    list_scus,
    scp_name_used,
    set_scp_port,
)
from slicebox_lab.index.query import row_id
from slicebox_lab.index.unique import writing_unique

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
    """The name of an SCP, a remote node or a partner box (``box/connections.py``): one rule for every peer."""
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
# SCPs (used by ScpService, which keeps rows and listeners in step; the rows: ``index/nodes.py``)


def get_scp(index: Index, scp_id: Any) -> ScpConfig:
    scp = rows.scp_by_id(index, _key(scp_id, "SCP"))
    if scp is None:
        raise NotFound(f"SCP {scp_id} not found")
    return scp


def insert_scp(index: Index, name: str, ae_title: str, host: str, port: int) -> ScpConfig:
    """Insert a validated row; a used name is a Conflict."""
    with writing_unique(index, f"an SCP named {name!r} already exists") as conn:
        new_id = rows.insert_scp(conn, name, ae_title, host, port)
    return ScpConfig(id=new_id, name=name, ae_title=ae_title, host=host, port=port)


# ---------------------------------------------------------------------------------------------
# remote nodes (SCUs in Slicebox's words)


def get_scu(index: Index, scu_id: Any) -> RemoteNode:
    node = rows.scu_by_id(index, _key(scu_id, "remote node"))
    if node is None:
        raise NotFound(f"remote node {scu_id} not found")
    return node


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
    with writing_unique(index, f"a remote node named {node.name!r} already exists") as conn:
        if rows.scu_ae_title_used(conn, node.ae_title):
            raise Conflict(
                f"a remote node with AE title {node.ae_title!r} already exists "
                "(C-MOVE destinations are found by AE title)"
            )
        new_id = rows.insert_scu(conn, node)
    return dataclasses.replace(node, id=new_id)


def delete_scu(index: Index, scu_id: Any) -> None:
    """Delete a remote node; an unknown id is NotFound."""
    if not rows.delete_scu_row(index, _key(scu_id, "remote node")):
        raise NotFound(f"remote node {scu_id} not found")
