"""Node-local users: names, roles and argon2id password hashes (the rules; the rows are ``index/users.py``).

A standalone node has its own users besides the Jupyter identities: scripts use them with HTTP basic
auth and dashboards through ``POST /slicebox/api/users/login`` (``server/auth.py`` plugs them into
jupyter_server).  Roles, from strongest:

* ``SUPERUSER``: the server's owner (the token holder, or the JupyterHub user owning the server);
* ``ADMINISTRATOR``: may configure the node;
* ``USER``: may read, ingest, query, anonymize, export and send; gets 403 on configuration.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..errors import InvalidInput
from ..index import Index
from ..index import users as rows

__all__ = ["ADMINISTRATOR", "ROLES", "SUPERUSER", "USER", "USER_ROLES", "NodeUser", "UserStore", "hash_password"]

SUPERUSER, ADMINISTRATOR, USER = "SUPERUSER", "ADMINISTRATOR", "USER"
ROLES = (SUPERUSER, ADMINISTRATOR, USER)
#: roles a node-local user may have (the superuser is the server's owner, never a stored user)
USER_ROLES = (ADMINISTRATOR, USER)

_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")

_hasher = PasswordHasher()


@dataclass(frozen=True)
class NodeUser:
    """A stored user as the API shows it: never the hash."""

    id: int
    user: str
    role: str
    created: str = field(default="")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


class UserStore:
    """Node-local users in the index database (table ``users``); blocking, call off the loop."""

    def __init__(self, index: Index) -> None:
        self._index = index
        # (hash, digest of the password) pairs verified recently: argon2 costs ~50 ms per check,
        # and a script sends basic credentials with every request
        self._verified: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        self._lock = threading.Lock()
        self._pepper = secrets.token_bytes(32)

    def list(self) -> list[NodeUser]:
        return [_node_user(row) for row in rows.list_users(self._index)]

    def get(self, name: str) -> NodeUser | None:
        row = rows.user_by_name(self._index, name)
        return None if row is None else _node_user(row)

    def create(self, name: str, role: str, password: str) -> NodeUser:
        """Add a user; an existing name returns that user unchanged (its password too), as Slicebox."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidInput("user must be 1-64 characters of letters, digits, '.', '_', '@' or '-'")
        if role == SUPERUSER:
            raise InvalidInput("Superusers may not be added")
        if role not in USER_ROLES:
            raise InvalidInput(f"role must be one of {', '.join(USER_ROLES)}")
        if not isinstance(password, str) or len(password) < 1:
            raise InvalidInput("password must be a non-empty string")
        existing = self.get(name)
        if existing is not None:
            return existing
        rows.insert_user(self._index, name, role, hash_password(password), datetime.now(UTC))
        user = self.get(name)
        assert user is not None
        return user

    def delete(self, user_id: int) -> None:
        """Delete by id; unknown ids are ignored (idempotent)."""
        rows.delete_user(self._index, user_id)

    def authenticate(self, name: str, password: str) -> NodeUser | None:
        """The user if ``password`` is theirs, else None (no hint which part was wrong)."""
        row = rows.user_by_name(self._index, name)
        if row is None:
            # spend the same time as a real check, so names cannot be probed by timing
            _verify(_DUMMY_HASH, password)
            return None
        digest = hmac.new(self._pepper, password.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
        key = (str(row.password_hash), digest)
        with self._lock:
            known = key in self._verified
            if known:
                self._verified.move_to_end(key)
        if not known:
            if not _verify(row.password_hash, password):
                return None
            with self._lock:
                self._verified[key] = None
                while len(self._verified) > 256:
                    self._verified.popitem(last=False)
        return _node_user(row)


def _node_user(row: rows.UserRow) -> NodeUser:
    return NodeUser(row.id, row.name, row.role, _iso(row.created))


_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def _verify(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()
