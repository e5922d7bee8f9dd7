"""Statements of the boxes and their transactions (tables ``boxes``, ``box_outgoing_*``, ``box_incoming_*``,
and the ``jobs`` rows mirroring outgoing transactions): rows in, plain rows out.

The rules (validation, the outgoing transaction state machine, receipts) live in ``box/``; the states
a statement looks for or writes are its arguments (``box.SendMethod``, ``box.TransactionStatus``,
``box.outgoing.ImageState``, ``jobs.JobState``), so this module knows rows, not rules.  Functions taking
a connection are parts of one transaction the caller composes (``index.writing()``).  Datetimes come
back aware (SQLite hands back naive ones, which were written as UTC).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, Literal, NamedTuple

import sqlalchemy as sa

from ._records import aware
from .database import inserted_id
from .repository import Index
from .schema import (
    box_incoming_images,
    box_incoming_transactions,
    box_outgoing_images,
    box_outgoing_transactions,
    boxes,
    images,
    jobs,
)

#: a concurrent request recorded the incoming transaction or the image first (their keys are unique)
DuplicateReceipt = sa.exc.IntegrityError


# ---------------------------------------------------------------------------------------------- boxes


class BoxRow(NamedTuple):
    """A row of ``boxes``; ``default_profile`` as its stored JSON text."""

    id: int
    name: str
    send_method: str
    base_url: str
    token_hash: str
    default_profile: str
    last_contact: datetime | None
    last_error: str
    last_error_at: datetime | None
    created: datetime
    send_anonymous_as_is: bool


_BOX_COLUMNS = tuple(boxes.c[name] for name in BoxRow._fields)


def _box(row: Any) -> BoxRow:
    """A row of :data:`_BOX_COLUMNS`."""
    box = BoxRow(*row)
    return box._replace(
        last_contact=aware(box.last_contact),
        last_error_at=aware(box.last_error_at),
        created=aware(box.created),
        send_anonymous_as_is=bool(box.send_anonymous_as_is),
    )


def box_id_named(conn: sa.Connection, name: str) -> int | None:
    row = conn.execute(sa.select(boxes.c.id).where(boxes.c.name == name)).first()
    return None if row is None else int(row[0])


def box_named(conn: sa.Connection, name: str) -> BoxRow | None:
    row = conn.execute(sa.select(*_BOX_COLUMNS).where(boxes.c.name == name)).first()
    return None if row is None else _box(row)


def insert_box(
    conn: sa.Connection,
    *,
    name: str,
    send_method: str,
    token_hash: str,
    base_url: str,
    default_profile: str,
    send_anonymous_as_is: bool,
    created: datetime,
) -> int:
    return inserted_id(
        conn,
        boxes,
        name=name,
        send_method=send_method,
        token_hash=token_hash,
        base_url=base_url,
        default_profile=default_profile,
        send_anonymous_as_is=send_anonymous_as_is,
        created=created,
    )


def list_boxes(index: Index) -> list[BoxRow]:
    with index.reading() as conn:
        return [_box(row) for row in conn.execute(sa.select(*_BOX_COLUMNS).order_by(boxes.c.id))]


def box_row(index: Index, box_id: int) -> BoxRow | None:
    with index.reading() as conn:
        row = conn.execute(sa.select(*_BOX_COLUMNS).where(boxes.c.id == box_id)).first()
    return None if row is None else _box(row)


#: built once: every request of a partner looks its box up (building the statement cost more than running it)
_BOX_BY_TOKEN_HASH = sa.select(*_BOX_COLUMNS).where(
    boxes.c.send_method == sa.bindparam("b_method"), boxes.c.token_hash == sa.bindparam("b_hash")
)


def boxes_with_token_hash(index: Index, send_method: str, digest: str) -> list[BoxRow]:
    """The boxes of ``send_method`` whose token hash is ``digest`` (compare it again in constant time)."""
    with index.reading() as conn:
        return [_box(row) for row in conn.execute(_BOX_BY_TOKEN_HASH, {"b_method": send_method, "b_hash": digest})]


def delete_box(conn: sa.Connection, box_id: int) -> bool:
    """False if there was no such box."""
    return bool(conn.execute(boxes.delete().where(boxes.c.id == box_id)).rowcount)


def record_contact(index: Index, box_id: int, now: datetime, error: str = "") -> None:
    """The partner answered now (``error`` empty), or could not be reached (``error`` says why)."""
    values: dict[str, Any] = {"last_error": error, "last_error_at": now} if error else {"last_contact": now}
    with index.writing() as conn:
        conn.execute(boxes.update().where(boxes.c.id == box_id).values(**values))


# ---------------------------------------------------------------------------------------------- outgoing

_ot, _oi = box_outgoing_transactions, box_outgoing_images


def insert_mirror_job(
    conn: sa.Connection,
    *,
    kind: str,
    description: str,
    state: str,
    total: int,
    counts: str,
    owner: str,
    server: str,
    now: datetime,
) -> int:
    """The ``jobs`` row that mirrors a new outgoing transaction, started ``now``; its id."""
    return inserted_id(
        conn,
        jobs,
        kind=kind,
        description=description,
        state=state,
        progress_done=0,
        progress_total=total,
        counts=counts,
        parameters="{}",
        result="{}",
        error="",
        owner=owner,
        created=now,
        started=now,
        server=server,
    )


def set_job_parameters(conn: sa.Connection, job_id: int, parameters: str) -> None:
    conn.execute(jobs.update().where(jobs.c.id == job_id).values(parameters=parameters))


def insert_outgoing(
    conn: sa.Connection,
    *,
    box_id: int,
    box_name: str,
    profile: str,
    status: str,
    total: int,
    job_id: int,
    now: datetime,
) -> int:
    return inserted_id(
        conn,
        _ot,
        box_id=box_id,
        box_name=box_name,
        profile=profile,
        status=status,
        total_image_count=total,
        job_id=job_id,
        created=now,
        updated=now,
    )


def insert_outgoing_images(
    conn: sa.Connection, transaction_id: int, state: str, images_in_order: Sequence[tuple[int, int, str]]
) -> None:
    """(image id, sequence number, tag values JSON) of the transaction, all in ``state``."""
    conn.execute(
        _oi.insert(),
        [
            {
                "transaction_id": transaction_id,
                "image_id": image_id,
                "sequence_number": n,
                "state": state,
                "tag_values": values,
            }
            for image_id, n, values in images_in_order
        ],
    )


class OutgoingRow(NamedTuple):
    """An image of an outgoing transaction; ``profile`` and ``tag_values`` as their stored JSON text."""

    transaction_id: int
    outgoing_image_id: int
    image_id: int
    sequence_number: int
    total_image_count: int
    profile: str
    tag_values: str
    attempts: int


def pending_images(
    index: Index, box_id: int, limit: int, *, open_statuses: Collection[str], pending: str
) -> list[OutgoingRow]:
    """The box's images in state ``pending`` of transactions in ``open_statuses``: oldest transaction first,
    then sequence number."""
    t, i = _ot, _oi
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
        .where(t.c.box_id == box_id, t.c.status.in_(tuple(open_statuses)), i.c.state == pending)
        .order_by(t.c.created, t.c.id, i.c.sequence_number)
        .limit(limit)
    )
    with index.reading() as conn:
        rows = conn.execute(statement).all()
    return [OutgoingRow(int(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]), r[5], r[6], int(r[7])) for r in rows]


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
    .where(
        _oi.c.id == sa.bindparam("b_oid"),
        _oi.c.transaction_id == sa.bindparam("b_tid"),
        _oi.c.state != sa.bindparam("b_sent"),
    )
    .values(state=sa.bindparam("b_sent"), reason="", sha256=sa.bindparam("b_sha256"))
)


def outgoing_image(index: Index, box_id: int, transaction_id: int, outgoing_image_id: int) -> OutgoingRow | None:
    """One image of one of the box's transactions (any state); None for any other pair."""
    with index.reading() as conn:
        row = conn.execute(
            _OUTGOING_ITEM, {"b_box": box_id, "b_tid": transaction_id, "b_oid": outgoing_image_id}
        ).first()
    if row is None:
        return None
    return OutgoingRow(
        transaction_id, outgoing_image_id, int(row[0]), int(row[1]), int(row[2]), row[3], row[4], int(row[5])
    )


def outgoing_pairs(index: Index, box_id: int, outgoing_image_ids: Sequence[int]) -> set[tuple[int, int]]:
    """(transaction id, outgoing image id) of those of the images that belong to the box's transactions."""
    with index.reading() as conn:
        return {
            (int(t), int(o))
            for t, o in conn.execute(_OUTGOING_PAIRS, {"b_box": box_id, "b_oids": list(outgoing_image_ids)})
        }


def mark_sent(conn: sa.Connection, confirmed: Sequence[tuple[int, int, str]], sent: str) -> None:
    """(transaction id, outgoing image id, SHA-256) in state ``sent`` (those already there unchanged)."""
    conn.execute(_MARK_SENT, [{"b_oid": o, "b_tid": t, "b_sha256": d, "b_sent": sent} for t, o, d in confirmed])


def mark_image_failed(
    conn: sa.Connection, transaction_id: int, outgoing_image_id: int, reason: str, *, pending: str, failed: str
) -> None:
    """The image from ``pending`` (only) to ``failed``, saying why."""
    conn.execute(
        _oi.update()
        .where(_oi.c.id == outgoing_image_id, _oi.c.transaction_id == transaction_id, _oi.c.state == pending)
        .values(state=failed, reason=reason)
    )


def record_attempt(index: Index, outgoing_image_id: int, reason: str) -> int:
    """One more failed try of the image, saying why; the number of tries so far."""
    with index.writing() as conn:
        conn.execute(
            _oi.update().where(_oi.c.id == outgoing_image_id).values(attempts=_oi.c.attempts + 1, reason=reason)
        )
        attempts = conn.execute(sa.select(_oi.c.attempts).where(_oi.c.id == outgoing_image_id)).scalar_one_or_none()
    return int(attempts or 0)


def set_box_status(
    index: Index, box_id: int, reason: str, now: datetime, *, open_statuses: Collection[str], status: str
) -> None:
    """The box's transactions in ``open_statuses`` to ``status``, saying why."""
    with index.writing() as conn:
        conn.execute(
            _ot.update()
            .where(_ot.c.box_id == box_id, _ot.c.status.in_(tuple(open_statuses)))
            .values(status=status, reason=reason, updated=now)
        )


def open_transactions_of_box(conn: sa.Connection, box_id: int, open_statuses: Collection[str]) -> list[int]:
    return [
        int(r[0])
        for r in conn.execute(sa.select(_ot.c.id).where(_ot.c.box_id == box_id, _ot.c.status.in_(tuple(open_statuses))))
    ]


def image_state_counts(conn: sa.Connection, transaction_id: int) -> dict[str, int]:
    """How many images of the transaction are in each state."""
    return {
        str(state): int(n)
        for state, n in conn.execute(
            sa.select(_oi.c.state, sa.func.count()).where(_oi.c.transaction_id == transaction_id).group_by(_oi.c.state)
        ).all()
    }


def outgoing_status(conn: sa.Connection, transaction_id: int) -> str | None:
    """The transaction's status; None if there is no such transaction."""
    row = conn.execute(sa.select(_ot.c.status).where(_ot.c.id == transaction_id)).first()
    return None if row is None else str(row[0])


def first_reason(conn: sa.Connection, transaction_id: int, state: str) -> str:
    """The reason of one image of the transaction in ``state`` (there is one)."""
    return str(
        conn.execute(
            sa.select(_oi.c.reason).where(_oi.c.transaction_id == transaction_id, _oi.c.state == state).limit(1)
        ).scalar_one()
    )


def set_outgoing_counts(
    conn: sa.Connection, transaction_id: int, *, sent: int, failed: int, status: str, reason: str, now: datetime
) -> None:
    conn.execute(
        _ot.update()
        .where(_ot.c.id == transaction_id)
        .values(sent_image_count=sent, failed_image_count=failed, status=status, reason=reason, updated=now)
    )


def set_outgoing_status(conn: sa.Connection, transaction_id: int, status: str, reason: str, now: datetime) -> None:
    conn.execute(_ot.update().where(_ot.c.id == transaction_id).values(status=status, reason=reason, updated=now))


class MirrorRow(NamedTuple):
    """What an outgoing transaction's job row shows: its job and the transaction's status and counts."""

    job_id: int | None
    status: str
    reason: str
    sent: int
    failed: int


def mirror_of(conn: sa.Connection, transaction_id: int) -> MirrorRow | None:
    row = conn.execute(
        sa.select(_ot.c.job_id, _ot.c.status, _ot.c.reason, _ot.c.sent_image_count, _ot.c.failed_image_count).where(
            _ot.c.id == transaction_id
        )
    ).first()
    return None if row is None else MirrorRow(*row)


def update_mirror_job(conn: sa.Connection, job_id: int, kind: str, values: dict[str, Any]) -> None:
    """Write ``values`` (columns of ``jobs``) into the job row, if it is of ``kind``."""
    conn.execute(jobs.update().where(jobs.c.id == job_id, jobs.c.kind == kind).values(**values))


def jobs_of_open_transactions(conn: sa.Connection, open_statuses: Collection[str]) -> list[int]:
    return [
        int(r[0])
        for r in conn.execute(
            sa.select(_ot.c.job_id).where(_ot.c.status.in_(tuple(open_statuses)), _ot.c.job_id.is_not(None))
        )
    ]


def reopen_mirror_jobs(conn: sa.Connection, job_ids: Sequence[int], kind: str, running: str) -> None:
    """The job rows of ``kind`` among ``job_ids`` ``running`` again, without error or end."""
    conn.execute(
        jobs.update()
        .where(jobs.c.id.in_(list(job_ids)), jobs.c.kind == kind)
        .values(state=running, error="", finished=None)
    )


def cancel_mirror_job(
    conn: sa.Connection, job_id: int, kind: str, now: datetime, *, running: str, cancelled: str
) -> None:
    """The job row, if of ``kind`` and ``running``, ``cancelled`` now."""
    conn.execute(
        jobs.update()
        .where(jobs.c.id == job_id, jobs.c.kind == kind, jobs.c.state == running)
        .values(state=cancelled, finished=now)
    )


#: which transactions: those we send or those we receive
Direction = Literal["outgoing", "incoming"]
_TRANSACTIONS: dict[Direction, sa.Table] = {
    "outgoing": box_outgoing_transactions,
    "incoming": box_incoming_transactions,
}


def _transaction(row: Any) -> dict[str, Any]:
    m = dict(row._mapping)
    for name in ("created", "updated"):
        m[name] = aware(m[name])
    return m


def list_transactions(index: Index, direction: Direction, start: int, count: int) -> list[dict[str, Any]]:
    """Transactions as rows (column → value), last updated first."""
    t = _TRANSACTIONS[direction]
    with index.reading() as conn:
        rows = conn.execute(sa.select(t).order_by(t.c.updated.desc(), t.c.id.desc()).offset(start).limit(count))
        return [_transaction(r) for r in rows]


def transaction(index: Index, direction: Direction, transaction_id: int) -> dict[str, Any] | None:
    t = _TRANSACTIONS[direction]
    with index.reading() as conn:
        row = conn.execute(sa.select(t).where(t.c.id == transaction_id)).first()
    return None if row is None else _transaction(row)


def outgoing_images(index: Index, transaction_id: int) -> list[dict[str, Any]]:
    """The transaction's images as rows (column → value), in the order they were queued."""
    i = _oi
    columns = (i.c.id, i.c.image_id, i.c.sequence_number, i.c.state, i.c.reason, i.c.attempts, i.c.sha256)
    with index.reading() as conn:
        rows = conn.execute(sa.select(*columns).where(i.c.transaction_id == transaction_id).order_by(i.c.id))
        return [dict(r._mapping) for r in rows]


def outgoing_job_and_status(conn: sa.Connection, transaction_id: int) -> tuple[int | None, str] | None:
    row = conn.execute(sa.select(_ot.c.job_id, _ot.c.status).where(_ot.c.id == transaction_id)).first()
    return None if row is None else (row[0], row[1])


def delete_outgoing(conn: sa.Connection, transaction_id: int) -> None:
    conn.execute(_oi.delete().where(_oi.c.transaction_id == transaction_id))
    conn.execute(_ot.delete().where(_ot.c.id == transaction_id))


# ---------------------------------------------------------------------------------------------- incoming

_t, _i = box_incoming_transactions, box_incoming_images


def incoming_images(index: Index, transaction_id: int) -> list[dict[str, Any]]:
    """The images received in the transaction that are still stored, as rows, by sequence number."""
    i = _i
    columns = (i.c.id, i.c.sequence_number, i.c.image_id, i.c.overwrite, i.c.sha256)
    existing = sa.select(images.c.id)  # only images still stored (the record of receipt stays)
    with index.reading() as conn:
        rows = conn.execute(
            sa.select(*columns)
            .where(i.c.transaction_id == transaction_id, i.c.image_id.in_(existing))
            .order_by(i.c.sequence_number)
        )
        return [dict(r._mapping) for r in rows]


def delete_incoming(index: Index, transaction_id: int) -> None:
    """Forget the record of the transaction (the images received stay)."""
    with index.writing() as conn:
        conn.execute(_i.delete().where(_i.c.transaction_id == transaction_id))
        conn.execute(_t.delete().where(_t.c.id == transaction_id))


def received_image(index: Index, box_id: int, outgoing_transaction_id: int, sequence_number: int) -> int | None:
    """The image stored for (sender's transaction, sequence number) from this box, or None."""
    statement = (
        sa.select(_i.c.image_id)
        .select_from(_i.join(_t, _t.c.id == _i.c.transaction_id))
        .where(
            _t.c.box_id == box_id,
            _t.c.outgoing_transaction_id == outgoing_transaction_id,
            _i.c.sequence_number == sequence_number,
        )
    )
    with index.reading() as conn:
        value = conn.execute(statement).scalar_one_or_none()
    return None if value is None else int(value)


def incoming_progress(index: Index, box_id: int, outgoing_transaction_id: int) -> tuple[str, int, int] | None:
    """(status, received image count, total image count) of the box's transaction, or None."""
    with index.reading() as conn:
        row = conn.execute(
            sa.select(_t.c.status, _t.c.received_image_count, _t.c.total_image_count).where(
                _t.c.box_id == box_id, _t.c.outgoing_transaction_id == outgoing_transaction_id
            )
        ).first()
    return None if row is None else (row[0], row[1], row[2])


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
        # the values on the right are those before this update: this image makes the count + 1
        status=sa.case(
            (_t.c.received_image_count + 1 >= sa.bindparam("b_total"), sa.bindparam("b_finished")),
            else_=sa.bindparam("b_processing"),
        ),
    )
    .returning(_t.c.status)
)


def incoming_id(conn: sa.Connection, box_id: int, outgoing_transaction_id: int) -> int | None:
    """Our id of the box's transaction ``outgoing_transaction_id``, or None before its first image."""
    row = conn.execute(_INCOMING_BY_OUTGOING, {"b_box_id": box_id, "b_outgoing_id": outgoing_transaction_id}).first()
    return None if row is None else int(row[0])


def insert_incoming(
    conn: sa.Connection,
    *,
    box_id: int,
    box_name: str,
    outgoing_transaction_id: int,
    status: str,
    total: int,
    now: datetime,
) -> int:
    values = {
        "box_id": box_id,
        "box_name": box_name,
        "outgoing_transaction_id": outgoing_transaction_id,
        "status": status,
        "total_image_count": total,
        "created": now,
        "updated": now,
    }
    return int(conn.execute(_INSERT_INCOMING, values).scalar_one())


def receipt_of(conn: sa.Connection, transaction_id: int, sequence_number: int) -> int | None:
    """The image received as ``sequence_number`` of our incoming transaction, or None."""
    row = conn.execute(_RECEIVED_IMAGE, {"b_id": transaction_id, "b_sequence_number": sequence_number}).first()
    return None if row is None else int(row.image_id)


def incoming_status(conn: sa.Connection, transaction_id: int) -> str:
    return str(conn.execute(_INCOMING_STATUS, {"b_id": transaction_id}).scalar_one())


def insert_receipt(
    conn: sa.Connection,
    transaction_id: int,
    sequence_number: int,
    total: int,
    image_id: int,
    added: bool,
    sha256: str,
    now: datetime,
    finished: str,
    processing: str,
) -> str:
    """Record the image received as ``sequence_number`` of our incoming transaction of ``total`` images; the
    transaction's status is now ``finished`` once it received ``total`` images, else ``processing``: returned."""
    image = {
        "transaction_id": transaction_id,
        "sequence_number": sequence_number,
        "image_id": image_id,
        "overwrite": not added,
        "sha256": sha256,
    }
    conn.execute(_INSERT_RECEIVED_IMAGE, image)
    # counted as they come (one row per sequence number, unique): no recount of the whole transaction
    count = {
        "b_id": transaction_id,
        "b_added": 1 if added else 0,
        "b_total": total,
        "b_updated": now,
        "b_finished": finished,
        "b_processing": processing,
    }
    return str(conn.execute(_COUNT_RECEIVED, count).scalar_one())
