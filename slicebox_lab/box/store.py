"""Boxes and their transactions in the index database: every state that must survive a restart.

Blocking functions over :class:`~slicebox_lab.index.Index` (``reading()`` / ``writing()``), like
``net/nodes.py``.  The outgoing state (which image of which transaction the receiver confirmed) is
written only after the receiver confirmed it, so a node killed at any moment resends at most the
image in flight, and the receiver's ``(transaction, sequence number)`` record makes that resend a
no-op.  Each outgoing transaction mirrors its progress into a row of the ``jobs`` table (kind
``box-send``), so clients follow it like any other job.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa

from slicebox_lab.errors import Conflict, InvalidInput, NotFound
from slicebox_lab.index import Index
from slicebox_lab.index.query import row_id
from slicebox_lab.index.schema import (
    box_incoming_images,
    box_incoming_transactions,
    box_outgoing_images,
    box_outgoing_transactions,
    boxes,
    images,
    jobs,
)
from slicebox_lab.jobs import DATABASE_SERVER

PUSH = "PUSH"
POLL = "POLL"

WAITING = "WAITING"
PROCESSING = "PROCESSING"
FINISHED = "FINISHED"
FAILED = "FAILED"
TRANSACTION_STATES = (WAITING, PROCESSING, FINISHED, FAILED)

PENDING = "PENDING"
SENT = "SENT"

JOB_KIND = "box-send"
NAME_MAX_LENGTH = 200
#: path segment between the partner's base URL and its token
TRANSACTIONS_PATH = "/slicebox/api/transactions/"


def now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes, which were written as UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _iso(value: datetime | None) -> str | None:
    aware = _aware(value)
    return None if aware is None else aware.isoformat()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Box:
    """A partner node.  POLL: the partner calls us (we hold our token's hash); PUSH: we call it."""

    id: int
    name: str
    send_method: str
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
        contact = _aware(self.last_contact)
        if contact is None or now() - contact > timedelta(seconds=window):
            return False
        error_at = _aware(self.last_error_at)
        return error_at is None or error_at <= contact

    def as_json(self, window: float) -> dict[str, Any]:
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
            "last_contact": _iso(self.last_contact),
            "last_error": self.last_error,
            "created": _iso(self.created),
        }


def _box(row: Any) -> Box:
    m = row._mapping
    url = m["base_url"]
    return Box(
        id=int(m["id"]),
        name=m["name"],
        send_method=m["send_method"],
        base_url=url,
        token=url.rsplit("/", 1)[-1] if url else "",
        token_hash=m["token_hash"],
        default_profile=json.loads(m["default_profile"] or "{}"),
        last_contact=_aware(m["last_contact"]),
        last_error=m["last_error"],
        last_error_at=_aware(m["last_error_at"]),
        created=m["created"],
        send_anonymous_as_is=bool(m["send_anonymous_as_is"]),
    )


@dataclass(frozen=True)
class OutgoingItem:
    """One image of an outgoing transaction still to deliver, with what is needed to make its bytes."""

    transaction_id: int
    outgoing_image_id: int
    image_id: int
    sequence_number: int
    total_image_count: int
    profile: dict[str, Any]
    tag_values: list[Any]
    attempts: int

    def as_json(self) -> dict[str, Any]:
        """What a polling partner sees (never the sender's image id or profile)."""
        return {
            "transaction_id": self.transaction_id,
            "outgoing_image_id": self.outgoing_image_id,
            "sequence_number": self.sequence_number,
            "total_image_count": self.total_image_count,
        }


# ---------------------------------------------------------------------------------------------- validation


def validate_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("name must be a non-empty string")
    name = value.strip()
    if len(name) > NAME_MAX_LENGTH or any(ord(c) < 0x20 for c in name):
        raise InvalidInput(f"name must be at most {NAME_MAX_LENGTH} characters, without control characters")
    return name


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
        existing = conn.execute(sa.select(boxes.c.id).where(boxes.c.name == box_name)).first()
        if existing is not None:
            raise Conflict(
                f"a box named {box_name!r} exists already; its token is stored hashed and cannot be shown "
                "again: delete the box and create the connection anew to get a new URL"
            )
        box_id = conn.execute(
            boxes.insert()
            .values(
                name=box_name,
                send_method=POLL,
                token_hash=hash_token(token),
                base_url="",
                default_profile=json.dumps(profile),
                send_anonymous_as_is=as_is,
                created=now(),
            )
            .returning(boxes.c.id)
        ).scalar_one()
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
        row = conn.execute(sa.select(boxes).where(boxes.c.name == box_name)).first()
        if row is not None:
            box = _box(row)
            if box.send_method == PUSH and hmac.compare_digest(box.base_url, base_url):
                if send_anonymous_as_is is not None and as_is != box.send_anonymous_as_is:
                    raise Conflict(
                        f"the box {box_name!r} exists with sendAnonymousAsIs={str(box.send_anonymous_as_is).lower()}: "
                        "delete it and connect anew to change it"
                    )
                return box, False
            raise Conflict(f"a box named {box_name!r} exists already with another URL or direction")
        box_id = conn.execute(
            boxes.insert()
            .values(
                name=box_name,
                send_method=PUSH,
                base_url=base_url,
                default_profile=json.dumps(profile),
                send_anonymous_as_is=as_is,
                created=now(),
            )
            .returning(boxes.c.id)
        ).scalar_one()
    return get_box(index, box_id), True


def list_boxes(index: Index) -> list[Box]:
    with index.reading() as conn:
        return [_box(row) for row in conn.execute(sa.select(boxes).order_by(boxes.c.id))]


def get_box(index: Index, box_id: Any) -> Box:
    key = row_id(box_id, "box id")
    with index.reading() as conn:
        row = None if key is None else conn.execute(sa.select(boxes).where(boxes.c.id == key)).first()
    if row is None:
        raise NotFound(f"box {box_id} not found")
    return _box(row)


#: built once: every request of a partner looks its box up (building the statement cost more than running it)
_BOX_BY_TOKEN_HASH = sa.select(boxes).where(boxes.c.send_method == POLL, boxes.c.token_hash == sa.bindparam("b_hash"))


def box_for_token(index: Index, token: str) -> Box | None:
    """The POLL box whose token this is, compared in constant time; None for any other string."""
    if not token or len(token) > 200:
        return None
    digest = hash_token(token)
    with index.reading() as conn:
        rows = conn.execute(_BOX_BY_TOKEN_HASH, {"b_hash": digest}).all()
    for row in rows:
        if hmac.compare_digest(row._mapping["token_hash"], digest):
            return _box(row)
    return None


def delete_box(index: Index, box_id: Any) -> None:
    """Remove the box (its token stops working at once); its unfinished outgoing transactions fail."""
    key = row_id(box_id, "box id")
    if key is None:
        return
    with index.writing() as conn:
        deleted = conn.execute(boxes.delete().where(boxes.c.id == key)).rowcount
        if not deleted:
            return
        open_ids = [
            int(r[0])
            for r in conn.execute(
                sa.select(box_outgoing_transactions.c.id).where(
                    box_outgoing_transactions.c.box_id == key,
                    box_outgoing_transactions.c.status.in_((WAITING, PROCESSING)),
                )
            )
        ]
        for transaction_id in open_ids:
            _set_status(conn, transaction_id, FAILED, "the box was deleted")


def record_contact(index: Index, box_id: int, error: str = "") -> None:
    """The partner answered (``error`` empty) or could not be reached (``error`` says why)."""
    values: dict[str, Any] = {"last_error": error, "last_error_at": now()} if error else {"last_contact": now()}
    with index.writing() as conn:
        conn.execute(boxes.update().where(boxes.c.id == box_id).values(**values))


# ---------------------------------------------------------------------------------------------- outgoing


def create_outgoing(
    index: Index,
    box: Box,
    profile: Mapping[str, Any],
    images: Sequence[tuple[int, list[Any]]],
    description: str,
    owner: str = "",
) -> tuple[int, int]:
    """A WAITING transaction of ``images`` ((image id, tag values JSON) in send order) and its job row.

    Returns (transaction id, job id); one database transaction, so a crash leaves both or neither.
    """
    stamp = now()
    with index.writing() as conn:
        job_id = int(
            conn.execute(
                jobs.insert()
                .values(
                    kind=JOB_KIND,
                    description=description,
                    state="RUNNING",
                    progress_done=0,
                    progress_total=len(images),
                    counts=json.dumps({"sent": 0, "failed": 0}),
                    parameters="{}",
                    result="{}",
                    error="",
                    owner=owner,
                    created=stamp,
                    started=stamp,
                    server=DATABASE_SERVER,  # any server's box loop continues it: never "interrupted"
                )
                .returning(jobs.c.id)
            ).scalar_one()
        )
        transaction_id = int(
            conn.execute(
                box_outgoing_transactions.insert()
                .values(
                    box_id=box.id,
                    box_name=box.name,
                    profile=json.dumps(dict(profile)),
                    status=WAITING,
                    total_image_count=len(images),
                    job_id=job_id,
                    created=stamp,
                    updated=stamp,
                )
                .returning(box_outgoing_transactions.c.id)
            ).scalar_one()
        )
        conn.execute(
            box_outgoing_images.insert(),
            [
                {
                    "transaction_id": transaction_id,
                    "image_id": image_id,
                    "sequence_number": n,
                    "state": PENDING,
                    "tag_values": json.dumps(values),
                }
                for n, (image_id, values) in enumerate(images, start=1)
            ],
        )
        parameters = {"box_id": box.id, "transaction_id": transaction_id, "image_ids": [i for i, _ in images]}
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(parameters=json.dumps(parameters)))
    return transaction_id, job_id


def pending_items(index: Index, box_id: int, limit: int) -> list[OutgoingItem]:
    """The next images to deliver to the box: oldest transaction first, then sequence number."""
    t, i = box_outgoing_transactions, box_outgoing_images
    statement = (
        sa.select(
            t.c.id,
            i.c.id.label("outgoing_image_id"),
            i.c.image_id,
            i.c.sequence_number,
            t.c.total_image_count,
            t.c.profile,
            i.c.tag_values,
            i.c.attempts,
        )
        .select_from(i.join(t, t.c.id == i.c.transaction_id))
        .where(t.c.box_id == box_id, t.c.status.in_((WAITING, PROCESSING)), i.c.state == PENDING)
        .order_by(t.c.created, t.c.id, i.c.sequence_number)
        .limit(max(1, limit))
    )
    with index.reading() as conn:
        rows = conn.execute(statement).all()
    return [
        OutgoingItem(
            transaction_id=int(r[0]),
            outgoing_image_id=int(r[1]),
            image_id=int(r[2]),
            sequence_number=int(r[3]),
            total_image_count=int(r[4]),
            profile=json.loads(r[5] or "{}"),
            tag_values=json.loads(r[6] or "[]"),
            attempts=int(r[7]),
        )
        for r in rows
    ]


_ot, _oi = box_outgoing_transactions, box_outgoing_images
# built once: a polling partner fetches and acknowledges every image by these (building them per call
# cost more than running them)
_OUTGOING_ITEM = (
    sa.select(
        _oi.c.image_id, _oi.c.sequence_number, _ot.c.total_image_count, _ot.c.profile, _oi.c.tag_values, _oi.c.attempts
    )
    .select_from(_oi.join(_ot, _ot.c.id == _oi.c.transaction_id))
    .where(_ot.c.box_id == sa.bindparam("b_box"), _ot.c.id == sa.bindparam("b_tid"), _oi.c.id == sa.bindparam("b_oid"))
)
_OUTGOING_PAIRS = (
    sa.select(_ot.c.id, _oi.c.id)
    .select_from(_oi.join(_ot, _ot.c.id == _oi.c.transaction_id))
    .where(_ot.c.box_id == sa.bindparam("b_box"), _oi.c.id.in_(sa.bindparam("b_oids", expanding=True)))
)
_MARK_SENT = (
    _oi.update()
    .where(_oi.c.id == sa.bindparam("b_oid"), _oi.c.transaction_id == sa.bindparam("b_tid"), _oi.c.state != SENT)
    .values(state=SENT, reason="", sha256=sa.bindparam("b_sha256"))
)


def outgoing_item(index: Index, box_id: int, transaction_id: Any, outgoing_image_id: Any) -> OutgoingItem:
    """One image of one of the box's transactions (any state); NotFound for any other pair."""
    tid, oid = row_id(transaction_id, "transactionid"), row_id(outgoing_image_id, "imageid")
    row = None
    if tid is not None and oid is not None:
        with index.reading() as conn:
            row = conn.execute(_OUTGOING_ITEM, {"b_box": box_id, "b_tid": tid, "b_oid": oid}).first()
    if row is None or tid is None or oid is None:
        raise NotFound(f"no image {outgoing_image_id} in transaction {transaction_id} for this box")
    return OutgoingItem(
        tid, oid, int(row[0]), int(row[1]), int(row[2]), json.loads(row[3]), json.loads(row[4]), int(row[5])
    )


def check_outgoing(index: Index, box_id: int, pairs: Sequence[tuple[Any, Any]]) -> list[tuple[int, int]]:
    """(transaction id, outgoing image id) pairs as ids, each checked to be an image of one of the box's
    transactions, in one query; NotFound names the first that is not."""
    checked = [(row_id(t, "transaction_id"), row_id(o, "outgoing_image_id")) for t, o in pairs]
    known: set[tuple[int, int]] = set()
    ids = [o for _, o in checked if o is not None]
    if ids:
        with index.reading() as conn:
            known = {(int(t), int(o)) for t, o in conn.execute(_OUTGOING_PAIRS, {"b_box": box_id, "b_oids": ids})}
    for (given_t, given_o), (t, o) in zip(pairs, checked, strict=True):
        if t is None or o is None or (t, o) not in known:
            raise NotFound(f"no image {given_o} in transaction {given_t} for this box")
    return [(t, o) for t, o in checked if t is not None and o is not None]


def mark_sent(index: Index, transaction_id: int, outgoing_image_id: int, sha256: str = "") -> None:
    """The receiver confirmed the image durable (idempotent: a second confirmation changes nothing)."""
    mark_sent_many(index, [(transaction_id, outgoing_image_id, sha256)])


def mark_sent_many(index: Index, confirmed: Sequence[tuple[int, int, str]]) -> None:
    """:func:`mark_sent` for several (transaction id, outgoing image id, SHA-256) in one database
    transaction (one commit, one recount per transaction): each was confirmed durable by the receiver
    before it is listed here, so a crash before this commit only makes those images go again, which
    the receiver answers from its record without storing them twice."""
    if not confirmed:
        return
    with index.writing() as conn:
        conn.execute(_MARK_SENT, [{"b_oid": o, "b_tid": t, "b_sha256": d} for t, o, d in confirmed])
        for transaction_id in dict.fromkeys(t for t, _, _ in confirmed):
            _refresh(conn, transaction_id)


def mark_failed(index: Index, transaction_id: int, outgoing_image_id: int, reason: str) -> None:
    """The image cannot be delivered (refused by the receiver, cannot be anonymized, deleted)."""
    with index.writing() as conn:
        conn.execute(
            box_outgoing_images.update()
            .where(
                box_outgoing_images.c.id == outgoing_image_id,
                box_outgoing_images.c.transaction_id == transaction_id,
                box_outgoing_images.c.state == PENDING,
            )
            .values(state=FAILED, reason=reason[:2000])
        )
        _refresh(conn, transaction_id)


def record_attempt(index: Index, transaction_id: int, outgoing_image_id: int, reason: str) -> int:
    """One failed try of the image (hash mismatch, ...); returns the number of tries so far."""
    with index.writing() as conn:
        conn.execute(
            box_outgoing_images.update()
            .where(box_outgoing_images.c.id == outgoing_image_id)
            .values(attempts=box_outgoing_images.c.attempts + 1, reason=reason[:2000])
        )
        attempts = conn.execute(
            sa.select(box_outgoing_images.c.attempts).where(box_outgoing_images.c.id == outgoing_image_id)
        ).scalar_one_or_none()
    return int(attempts or 0)


def set_waiting(index: Index, box_id: int, reason: str) -> None:
    """The partner cannot be reached: the box's open transactions wait, saying why."""
    with index.writing() as conn:
        conn.execute(
            box_outgoing_transactions.update()
            .where(
                box_outgoing_transactions.c.box_id == box_id,
                box_outgoing_transactions.c.status.in_((WAITING, PROCESSING)),
            )
            .values(status=WAITING, reason=reason[:2000], updated=now())
        )


def _refresh(conn: sa.Connection, transaction_id: int) -> None:
    """Recount the transaction's images; FINISHED once every image is SENT, FAILED once all are settled."""
    i = box_outgoing_images
    counts: dict[str, int] = {
        str(state): int(n)
        for state, n in conn.execute(
            sa.select(i.c.state, sa.func.count()).where(i.c.transaction_id == transaction_id).group_by(i.c.state)
        ).all()
    }
    sent, failed, pending = (int(counts.get(s, 0)) for s in (SENT, FAILED, PENDING))
    row = conn.execute(
        sa.select(box_outgoing_transactions.c.status).where(box_outgoing_transactions.c.id == transaction_id)
    ).first()
    if row is None or row[0] in (FINISHED, FAILED):
        return
    status, reason = PROCESSING, ""
    if not pending:
        if failed:
            first = conn.execute(
                sa.select(i.c.reason).where(i.c.transaction_id == transaction_id, i.c.state == FAILED).limit(1)
            ).scalar_one()
            status, reason = FAILED, f"{failed} of {sent + failed} images could not be delivered: {first}"
        else:
            status = FINISHED
    conn.execute(
        box_outgoing_transactions.update()
        .where(box_outgoing_transactions.c.id == transaction_id)
        .values(sent_image_count=sent, failed_image_count=failed, status=status, reason=reason, updated=now())
    )
    _sync_job(conn, transaction_id)


def _set_status(conn: sa.Connection, transaction_id: int, status: str, reason: str) -> None:
    conn.execute(
        box_outgoing_transactions.update()
        .where(box_outgoing_transactions.c.id == transaction_id)
        .values(status=status, reason=reason, updated=now())
    )
    _sync_job(conn, transaction_id)


def _sync_job(conn: sa.Connection, transaction_id: int) -> None:
    """Mirror the transaction into its job row: progress, counts, and the final state."""
    t = box_outgoing_transactions
    row = conn.execute(
        sa.select(t.c.job_id, t.c.status, t.c.reason, t.c.sent_image_count, t.c.failed_image_count).where(
            t.c.id == transaction_id
        )
    ).first()
    if row is None or row[0] is None:
        return
    job_id, status, reason, sent, failed = row
    values: dict[str, Any] = {"progress_done": sent + failed, "counts": json.dumps({"sent": sent, "failed": failed})}
    if status == FINISHED:
        values.update(state="SUCCEEDED", finished=now(), result=json.dumps({"transaction_id": transaction_id}))
    elif status == FAILED:
        values.update(state="FAILED", error=reason, finished=now())
    conn.execute(jobs.update().where(jobs.c.id == job_id, jobs.c.kind == JOB_KIND).values(**values))


def reopen_jobs(index: Index) -> int:
    """After a restart: the job manager marked our running job rows interrupted, but the transactions
    continue (their state is in the database), so their jobs run again."""
    t = box_outgoing_transactions
    with index.writing() as conn:
        ids = [
            int(r[0])
            for r in conn.execute(
                sa.select(t.c.job_id).where(t.c.status.in_((WAITING, PROCESSING)), t.c.job_id.is_not(None))
            )
        ]
        if ids:
            conn.execute(
                jobs.update()
                .where(jobs.c.id.in_(ids), jobs.c.kind == JOB_KIND)
                .values(state="RUNNING", error="", finished=None)
            )
    return len(ids)


#: a PROCESSING transaction not updated for this long is shown WAITING (as Slicebox did after 15 s)
STALE_SECONDS = 15.0


def transaction_json(row: Any) -> dict[str, Any]:
    m = dict(row._mapping)
    updated = _aware(m["updated"])
    if m["status"] == PROCESSING and updated is not None and now() - updated > timedelta(seconds=STALE_SECONDS):
        m["status"] = WAITING
        if "reason" in m:
            m["reason"] = m["reason"] or f"no image moved for {int(STALE_SECONDS)} s: waiting for the partner"
    for name in ("created", "updated"):
        m[name] = _iso(m[name])
    if "profile" in m:
        m["profile"] = json.loads(m["profile"] or "{}")
    return m


def list_outgoing(index: Index, start: int = 0, count: int = 20) -> list[dict[str, Any]]:
    t = box_outgoing_transactions
    with index.reading() as conn:
        rows = conn.execute(sa.select(t).order_by(t.c.updated.desc(), t.c.id.desc()).offset(start).limit(count))
        return [transaction_json(r) for r in rows]


def list_incoming(index: Index, start: int = 0, count: int = 20) -> list[dict[str, Any]]:
    t = box_incoming_transactions
    with index.reading() as conn:
        rows = conn.execute(sa.select(t).order_by(t.c.updated.desc(), t.c.id.desc()).offset(start).limit(count))
        return [transaction_json(r) for r in rows]


def get_outgoing(index: Index, transaction_id: Any) -> dict[str, Any]:
    key = row_id(transaction_id, "transaction id")
    t = box_outgoing_transactions
    with index.reading() as conn:
        row = None if key is None else conn.execute(sa.select(t).where(t.c.id == key)).first()
    if row is None:
        raise NotFound(f"outgoing transaction {transaction_id} not found")
    return transaction_json(row)


def get_incoming(index: Index, transaction_id: Any) -> dict[str, Any]:
    key = row_id(transaction_id, "transaction id")
    t = box_incoming_transactions
    with index.reading() as conn:
        row = None if key is None else conn.execute(sa.select(t).where(t.c.id == key)).first()
    if row is None:
        raise NotFound(f"incoming transaction {transaction_id} not found")
    return transaction_json(row)


def outgoing_images(index: Index, transaction_id: Any) -> list[dict[str, Any]]:
    get_outgoing(index, transaction_id)
    i = box_outgoing_images
    columns = (i.c.id, i.c.image_id, i.c.sequence_number, i.c.state, i.c.reason, i.c.attempts, i.c.sha256)
    with index.reading() as conn:
        rows = conn.execute(sa.select(*columns).where(i.c.transaction_id == int(transaction_id)).order_by(i.c.id))
        return [dict(r._mapping) for r in rows]


def incoming_images(index: Index, transaction_id: Any) -> list[dict[str, Any]]:
    """The images received in the transaction that are still stored."""
    get_incoming(index, transaction_id)
    i = box_incoming_images
    columns = (i.c.id, i.c.sequence_number, i.c.image_id, i.c.overwrite, i.c.sha256)
    existing = sa.select(images.c.id)  # only images still stored (the record of receipt stays)
    with index.reading() as conn:
        rows = conn.execute(
            sa.select(*columns)
            .where(i.c.transaction_id == int(transaction_id), i.c.image_id.in_(existing))
            .order_by(i.c.sequence_number)
        )
        return [dict(r._mapping) for r in rows]


def delete_outgoing(index: Index, transaction_id: Any) -> None:
    """Forget the transaction (unknown → nothing); what was not delivered yet is not sent any more."""
    key = row_id(transaction_id, "transaction id")
    if key is None:
        return
    with index.writing() as conn:
        t = box_outgoing_transactions
        row = conn.execute(sa.select(t.c.job_id, t.c.status).where(t.c.id == key)).first()
        if row is None:
            return
        if row[0] is not None and row[1] in (WAITING, PROCESSING):
            conn.execute(
                jobs.update()
                .where(jobs.c.id == row[0], jobs.c.kind == JOB_KIND, jobs.c.state == "RUNNING")
                .values(state="CANCELLED", finished=now())
            )
        conn.execute(box_outgoing_images.delete().where(box_outgoing_images.c.transaction_id == key))
        conn.execute(t.delete().where(t.c.id == key))


def delete_incoming(index: Index, transaction_id: Any) -> None:
    """Forget the record of the transaction (the images received stay)."""
    key = row_id(transaction_id, "transaction id")
    if key is None:
        return
    with index.writing() as conn:
        conn.execute(box_incoming_images.delete().where(box_incoming_images.c.transaction_id == key))
        conn.execute(box_incoming_transactions.delete().where(box_incoming_transactions.c.id == key))


# ---------------------------------------------------------------------------------------------- incoming


class AlreadyReceived(Exception):
    """The image of this (transaction, sequence number) was received before: roll back its new copy."""

    def __init__(self, image_id: int, status: str) -> None:
        super().__init__(f"image {image_id} was received before")
        self.image_id, self.status = image_id, status


def received_image(index: Index, box_id: int, outgoing_transaction_id: int, sequence_number: int) -> int | None:
    """The image stored for (sender's transaction, sequence number) from this box, or None."""
    t, i = box_incoming_transactions, box_incoming_images
    statement = (
        sa.select(i.c.image_id)
        .select_from(i.join(t, t.c.id == i.c.transaction_id))
        .where(
            t.c.box_id == box_id,
            t.c.outgoing_transaction_id == outgoing_transaction_id,
            i.c.sequence_number == sequence_number,
        )
    )
    with index.reading() as conn:
        value = conn.execute(statement).scalar_one_or_none()
    return None if value is None else int(value)


def record_received(
    index: Index,
    box: Box,
    outgoing_transaction_id: int,
    sequence_number: int,
    total: int,
    image_id: int,
    added: bool,
    sha256: str,
) -> str:
    """Record a durable image of an incoming transaction (once per sequence number); returns its status.

    Concurrent receipts share one write transaction (one commit) on SQLite, as concurrent ingests do:
    with several images in flight, a commit per receipt was a large part of the receiver's time.
    """
    args = (box, outgoing_transaction_id, sequence_number, total, image_id, added, sha256)
    for attempt in range(3):
        try:
            # the ingest's group commit: the receipt usually shares the commit of the next images' rows
            status: str = index.grouped_writing(lambda conn: write_receipt(conn, *args))
            return status
        except sa.exc.IntegrityError:  # a concurrent request recorded the transaction or the image first
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


_t, _i = box_incoming_transactions, box_incoming_images
# the statements of a receipt, built once (building them per received image cost more than running them)
_INCOMING_BY_OUTGOING = sa.select(_t.c.id).where(
    _t.c.box_id == sa.bindparam("b_box_id"), _t.c.outgoing_transaction_id == sa.bindparam("b_outgoing_id")
)
_INSERT_INCOMING = _t.insert().returning(_t.c.id)
_RECEIVED_IMAGE = sa.select(_i.c.id, _i.c.image_id).where(
    _i.c.transaction_id == sa.bindparam("b_id"), _i.c.sequence_number == sa.bindparam("b_sequence_number")
)
_INCOMING_STATUS = sa.select(_t.c.status).where(_t.c.id == sa.bindparam("b_id"))
_INSERT_RECEIVED_IMAGE = _i.insert()
_COUNT_RECEIVED = (
    _t.update()
    .where(_t.c.id == sa.bindparam("b_id"))
    .values(
        received_image_count=_t.c.received_image_count + 1,
        added_image_count=_t.c.added_image_count + sa.bindparam("b_added"),
        total_image_count=sa.bindparam("b_total"),
        updated=sa.bindparam("b_updated"),
    )
    .returning(_t.c.received_image_count)
)
_SET_INCOMING_STATUS = _t.update().where(_t.c.id == sa.bindparam("b_id")).values(status=sa.bindparam("b_status"))


def write_receipt(
    conn: sa.Connection,
    box: Box,
    outgoing_transaction_id: int,
    sequence_number: int,
    total: int,
    image_id: int,
    added: bool,
    sha256: str,
    new_only: bool = False,
) -> str:
    """``record_received`` inside the caller's transaction (the image's own, see ``transfer.receive_image``);
    ``new_only``: raise :class:`AlreadyReceived` if this sequence number has its receipt already."""
    stamp = now()
    row = conn.execute(_INCOMING_BY_OUTGOING, {"b_box_id": box.id, "b_outgoing_id": outgoing_transaction_id}).first()
    if row is None:
        values = {
            "box_id": box.id,
            "box_name": box.name,
            "outgoing_transaction_id": outgoing_transaction_id,
            "status": PROCESSING,
            "total_image_count": total,
            "created": stamp,
            "updated": stamp,
        }
        transaction_id = int(conn.execute(_INSERT_INCOMING, values).scalar_one())
    else:
        transaction_id = int(row[0])
    known = conn.execute(_RECEIVED_IMAGE, {"b_id": transaction_id, "b_sequence_number": sequence_number}).first()
    if known is not None:
        status = str(conn.execute(_INCOMING_STATUS, {"b_id": transaction_id}).scalar_one())
        if new_only:
            raise AlreadyReceived(int(known.image_id), status)
        return status
    image = {
        "transaction_id": transaction_id,
        "sequence_number": sequence_number,
        "image_id": image_id,
        "overwrite": not added,
        "sha256": sha256,
    }
    conn.execute(_INSERT_RECEIVED_IMAGE, image)
    # counted as they come (one row per sequence number, unique): no recount of the whole transaction
    count = {"b_id": transaction_id, "b_added": 1 if added else 0, "b_total": total, "b_updated": stamp}
    received = conn.execute(_COUNT_RECEIVED, count).scalar_one()
    status = FINISHED if int(received) >= total else PROCESSING
    conn.execute(_SET_INCOMING_STATUS, {"b_id": transaction_id, "b_status": status})
    return status


def incoming_status(index: Index, box_id: int, outgoing_transaction_id: Any) -> dict[str, Any]:
    key = row_id(outgoing_transaction_id, "transactionid")
    t = box_incoming_transactions
    with index.reading() as conn:
        row = (
            None
            if key is None
            else conn.execute(
                sa.select(t.c.status, t.c.received_image_count, t.c.total_image_count).where(
                    t.c.box_id == box_id, t.c.outgoing_transaction_id == key
                )
            ).first()
        )
    if row is None:
        raise NotFound(f"no incoming transaction {outgoing_transaction_id} from this box")
    return {"status": row[0], "received_image_count": row[1], "total_image_count": row[2]}
