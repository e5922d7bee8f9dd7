"""Partner boxes: the :class:`Box` record, what a connection takes, and making, finding and contacting boxes.

Blocking functions over :class:`~slicebox_lab.index.Index`; the rows are ``index/boxes.py``.  A POLL
box is made by createconnection (the partner calls us with the token we hand out once, and we keep
only its hash); a PUSH box by connect (we call the partner's URL).  Deleting a box is
``outgoing.delete_box``: its unfinished outgoing transactions fail with it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from slicebox_lab.errors import Conflict, InvalidInput
from slicebox_lab.index import Index
from slicebox_lab.index import boxes as rows
from slicebox_lab.index.query import found
from slicebox_lab.net.nodes import validate_name  # a box is named as a remote DICOM node is


class SendMethod(StrEnum):
    """Who opens the connections of a box: PUSH, we call the partner; POLL, the partner calls us."""

    PUSH = "PUSH"
    POLL = "POLL"


#: path segment between the partner's base URL and its token
TRANSACTIONS_PATH = "/slicebox/api/transactions/"


def now() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class Box:
    """A partner node.  POLL: the partner calls us (we hold our token's hash); PUSH: we call it."""

    id: int
    name: str
    send_method: SendMethod
    base_url: str
    token: str
    token_hash: str
    default_profile: dict[str, Any]
    last_contact: datetime | None
    last_error: str
    last_error_at: datetime | None
    created: datetime
    #: images flagged PatientIdentityRemoved=YES leave as they are (see ``transfer.outgoing_bytes``)
    send_anonymous_as_is: bool = False

    def online(self, window: float) -> bool:
        """Contact within ``window`` seconds, and no failure since."""
        contact = self.last_contact
        if contact is None or now() - contact > timedelta(seconds=window):
            return False
        error_at = self.last_error_at
        return error_at is None or error_at <= contact

    def to_json(self, window: float) -> dict[str, Any]:
        """The REST form; never a token (PUSH boxes show the partner's URL without its token)."""
        url = self.base_url.rsplit("/", 1)[0] + "/<token>" if self.base_url else ""
        return {
            "id": self.id,
            "name": self.name,
            "send_method": self.send_method,
            "base_url": url,
            "default_profile": self.default_profile,
            "send_anonymous_as_is": self.send_anonymous_as_is,
            "online": self.online(window),
            "last_contact": iso(self.last_contact),
            "last_error": self.last_error,
            "created": iso(self.created),
        }


def _box(row: rows.BoxRow) -> Box:
    url = row.base_url
    return Box(
        id=row.id,
        name=row.name,
        send_method=SendMethod(row.send_method),
        base_url=url,
        token=url.rsplit("/", 1)[-1] if url else "",
        token_hash=row.token_hash,
        default_profile=json.loads(row.default_profile or "{}"),
        last_contact=row.last_contact,
        last_error=row.last_error,
        last_error_at=row.last_error_at,
        created=row.created,
        send_anonymous_as_is=row.send_anonymous_as_is,
    )


# ---------------------------------------------------------------------------------------------- validation


def validate_url(value: Any) -> str:
    """A partner's transaction URL ``http(s)://host[:port][/base]/slicebox/api/transactions/<token>``."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("url must be the partner's transaction URL, as its createconnection answered")
    url = value.strip().rstrip("/")
    parts = urlsplit(url)
    token = url.rsplit("/", 1)[-1]
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or TRANSACTIONS_PATH not in parts.path
        or len(token) < 32
        or any(c.isspace() for c in url)
    ):
        raise InvalidInput(
            f"malformed box url {value!r}: expected http(s)://host:port/slicebox/api/transactions/<token>, "
            "as the partner's createconnection answered"
        )
    return url


def as_is_flag(value: Any) -> bool:
    """``sendAnonymousAsIs``: a JSON boolean (absent or null: false)."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidInput("sendAnonymousAsIs must be true or false")
    return value


def profile_json(value: Any) -> dict[str, Any]:
    """A profile body checked by ``Profile.from_json`` (None: the basic profile)."""
    from slicebox_lab.anonymization import Profile

    body: dict[str, Any] = {} if value is None else value
    Profile.from_json(body)  # raises InvalidInput naming what is wrong
    return dict(body)


# ---------------------------------------------------------------------------------------------- boxes


def create_poll_box(
    index: Index, name: Any, default_profile: Any = None, send_anonymous_as_is: Any = None
) -> tuple[Box, str]:
    """A box the partner will call (it polls us and pushes to us); returns the box and its new token."""
    box_name = validate_name(name)
    profile = profile_json(default_profile)
    as_is = as_is_flag(send_anonymous_as_is)
    token = secrets.token_urlsafe(32)
    with index.writing() as conn:
        if rows.box_id_named(conn, box_name) is not None:
            raise Conflict(
                f"a box named {box_name!r} exists already; its token is stored hashed and cannot be shown "
                "again: delete the box and create the connection anew to get a new URL"
            )
        box_id = rows.insert_box(
            conn,
            name=box_name,
            send_method=SendMethod.POLL,
            token_hash=hash_token(token),
            base_url="",
            default_profile=json.dumps(profile),
            send_anonymous_as_is=as_is,
            created=now(),
        )
    return get_box(index, box_id), token


def connect_push_box(
    index: Index, name: Any, url: Any, default_profile: Any = None, send_anonymous_as_is: Any = None
) -> tuple[Box, bool]:
    """A box that calls the partner at ``url``; (box, created).  Same name and URL again → the same box
    (a ``send_anonymous_as_is`` given and different from the box's is a Conflict: delete and connect anew)."""
    box_name = validate_name(name)
    base_url = validate_url(url)
    profile = profile_json(default_profile)
    as_is = as_is_flag(send_anonymous_as_is)
    with index.writing() as conn:
        row = rows.box_named(conn, box_name)
        if row is not None:
            box = _box(row)
            if box.send_method == SendMethod.PUSH and hmac.compare_digest(box.base_url, base_url):
                if send_anonymous_as_is is not None and as_is != box.send_anonymous_as_is:
                    raise Conflict(
                        f"the box {box_name!r} exists with sendAnonymousAsIs={str(box.send_anonymous_as_is).lower()}: "
                        "delete it and connect anew to change it"
                    )
                return box, False
            raise Conflict(f"a box named {box_name!r} exists already with another URL or direction")
        box_id = rows.insert_box(
            conn,
            name=box_name,
            send_method=SendMethod.PUSH,
            token_hash="",
            base_url=base_url,
            default_profile=json.dumps(profile),
            send_anonymous_as_is=as_is,
            created=now(),
        )
    return get_box(index, box_id), True


def list_boxes(index: Index) -> list[Box]:
    return [_box(row) for row in rows.list_boxes(index)]


def get_box(index: Index, box_id: Any) -> Box:
    return _box(found(box_id, "box", lambda key: rows.box_row(index, key)))


def box_for_token(index: Index, token: str) -> Box | None:
    """The POLL box whose token this is, compared in constant time; None for any other string."""
    if not token or len(token) > 200:
        return None
    digest = hash_token(token)
    for row in rows.boxes_with_token_hash(index, SendMethod.POLL, digest):
        if hmac.compare_digest(row.token_hash, digest):
            return _box(row)
    return None


def record_contact(index: Index, box_id: int, error: str = "") -> None:
    """The partner answered (``error`` empty) or could not be reached (``error`` says why)."""
    rows.record_contact(index, box_id, now(), error)
