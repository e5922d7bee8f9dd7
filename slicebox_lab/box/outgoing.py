"""Outgoing transactions: the images queued for a box, and the state machine that settles them.

Blocking functions over :class:`~slicebox_lab.index.Index`; the rows are ``index/boxes.py``.  The
outgoing state (which image of which transaction the receiver confirmed) is written only after the
receiver confirmed it, so a node killed at any moment resends at most the image in flight, and the
receiver's ``(transaction, sequence number)`` record makes that resend a no-op.  A transaction is
WAITING until images move, PROCESSING while they do, FINISHED once every image is SENT and FAILED
once every image is settled and some could not be delivered (or its box was deleted).  Each
transaction mirrors its progress into a row of the ``jobs`` table (kind ``box-send``), so clients
follow it like any other job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from slicebox_lab.errors import NotFound
from slicebox_lab.index import Connection, Index
from slicebox_lab.index import boxes as rows
from slicebox_lab.index.query import row_id
from slicebox_lab.jobs import DATABASE_SERVER, JobState
from slicebox_lab.model import TransactionStatus

from .connections import Box, iso, now


class ImageState(StrEnum):
    """The state of an image of an outgoing transaction."""

    PENDING = "PENDING"
    #: the receiver confirmed it durable
    SENT = "SENT"
    #: cannot be delivered (``reason`` says why)
    FAILED = "FAILED"


#: the statuses of a transaction whose images still go
OPEN_STATUSES = (TransactionStatus.WAITING, TransactionStatus.PROCESSING)

JOB_KIND = "box-send"


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

    def to_json(self) -> dict[str, Any]:
        """What a polling partner sees (never the sender's image id or profile)."""
        return {
            "transaction_id": self.transaction_id,
            "outgoing_image_id": self.outgoing_image_id,
            "sequence_number": self.sequence_number,
            "total_image_count": self.total_image_count,
        }


# ---------------------------------------------------------------------------------------------- queueing


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
        job_id = rows.insert_mirror_job(
            conn,
            kind=JOB_KIND,
            description=description,
            state=JobState.RUNNING,
            total=len(images),
            counts=json.dumps({"sent": 0, "failed": 0}),
            owner=owner,
            server=DATABASE_SERVER,  # any server's box loop continues it: never "interrupted"
            now=stamp,
        )
        transaction_id = rows.insert_outgoing(
            conn,
            box_id=box.id,
            box_name=box.name,
            profile=json.dumps(dict(profile)),
            status=TransactionStatus.WAITING,
            total=len(images),
            job_id=job_id,
            now=stamp,
        )
        rows.insert_outgoing_images(
            conn,
            transaction_id,
            ImageState.PENDING,
            [(image_id, n, json.dumps(values)) for n, (image_id, values) in enumerate(images, start=1)],
        )
        parameters = {"box_id": box.id, "transaction_id": transaction_id, "image_ids": [i for i, _ in images]}
        rows.set_job_parameters(conn, job_id, json.dumps(parameters))
    return transaction_id, job_id


def _item(row: rows.OutgoingRow) -> OutgoingItem:
    return OutgoingItem(
        transaction_id=row.transaction_id,
        outgoing_image_id=row.outgoing_image_id,
        image_id=row.image_id,
        sequence_number=row.sequence_number,
        total_image_count=row.total_image_count,
        profile=json.loads(row.profile or "{}"),
        tag_values=json.loads(row.tag_values or "[]"),
        attempts=row.attempts,
    )


def pending_items(index: Index, box_id: int, limit: int) -> list[OutgoingItem]:
    """The next images to deliver to the box: oldest transaction first, then sequence number."""
    found = rows.pending_images(index, box_id, max(1, limit), open_statuses=OPEN_STATUSES, pending=ImageState.PENDING)
    return [_item(row) for row in found]


def outgoing_item(index: Index, box_id: int, transaction_id: Any, outgoing_image_id: Any) -> OutgoingItem:
    """One image of one of the box's transactions (any state); NotFound for any other pair."""
    tid, oid = row_id(transaction_id, "transactionid"), row_id(outgoing_image_id, "imageid")
    row = None
    if tid is not None and oid is not None:
        row = rows.outgoing_image(index, box_id, tid, oid)
    if row is None or tid is None or oid is None:
        raise NotFound(f"no image {outgoing_image_id} in transaction {transaction_id} for this box")
    return OutgoingItem(
        tid,
        oid,
        row.image_id,
        row.sequence_number,
        row.total_image_count,
        json.loads(row.profile),
        json.loads(row.tag_values),
        row.attempts,
    )


def check_outgoing(index: Index, box_id: int, pairs: Sequence[tuple[Any, Any]]) -> list[tuple[int, int]]:
    """(transaction id, outgoing image id) pairs as ids, each checked to be an image of one of the box's
    transactions, in one query; NotFound names the first that is not."""
    checked = [(row_id(t, "transaction_id"), row_id(o, "outgoing_image_id")) for t, o in pairs]
    known: set[tuple[int, int]] = set()
    ids = [o for _, o in checked if o is not None]
    if ids:
        known = rows.outgoing_pairs(index, box_id, ids)
    for (given_t, given_o), (t, o) in zip(pairs, checked, strict=True):
        if t is None or o is None or (t, o) not in known:
            raise NotFound(f"no image {given_o} in transaction {given_t} for this box")
    return [(t, o) for t, o in checked if t is not None and o is not None]


# ---------------------------------------------------------------------------------------------- settling


def mark_sent_many(index: Index, confirmed: Sequence[tuple[int, int, str]]) -> None:
    """The receiver confirmed each (transaction id, outgoing image id, SHA-256) durable, in one database
    transaction (one commit, one recount per transaction; idempotent: a second confirmation changes
    nothing): each was confirmed durable by the receiver before it is listed here, so a crash before
    this commit only makes those images go again, which the receiver answers from its record without
    storing them twice."""
    if not confirmed:
        return
    with index.writing() as conn:
        rows.mark_sent(conn, confirmed, ImageState.SENT)
        for transaction_id in dict.fromkeys(t for t, _, _ in confirmed):
            _refresh(conn, transaction_id)


def mark_failed(index: Index, transaction_id: int, outgoing_image_id: int, reason: str) -> None:
    """The image cannot be delivered (refused by the receiver, cannot be anonymized, deleted)."""
    with index.writing() as conn:
        rows.mark_image_failed(
            conn, transaction_id, outgoing_image_id, reason[:2000], pending=ImageState.PENDING, failed=ImageState.FAILED
        )
        _refresh(conn, transaction_id)


def record_attempt(index: Index, transaction_id: int, outgoing_image_id: int, reason: str) -> int:
    """One failed try of the image (hash mismatch, ...); returns the number of tries so far."""
    return rows.record_attempt(index, outgoing_image_id, reason[:2000])


def set_waiting(index: Index, box_id: int, reason: str) -> None:
    """The partner cannot be reached: the box's open transactions wait, saying why."""
    rows.set_box_status(
        index, box_id, reason[:2000], now(), open_statuses=OPEN_STATUSES, status=TransactionStatus.WAITING
    )


def _refresh(conn: Connection, transaction_id: int) -> None:
    """Recount the transaction's images; FINISHED once every image is SENT, FAILED once all are settled."""
    counts = rows.image_state_counts(conn, transaction_id)
    sent, failed, pending = (int(counts.get(s, 0)) for s in (ImageState.SENT, ImageState.FAILED, ImageState.PENDING))
    current = rows.outgoing_status(conn, transaction_id)
    if current is None or current in (TransactionStatus.FINISHED, TransactionStatus.FAILED):
        return
    status, reason = TransactionStatus.PROCESSING, ""
    if not pending:
        if failed:
            first = rows.first_reason(conn, transaction_id, ImageState.FAILED)
            reason = f"{failed} of {sent + failed} images could not be delivered: {first}"
            status = TransactionStatus.FAILED
        else:
            status = TransactionStatus.FINISHED
    rows.set_outgoing_counts(conn, transaction_id, sent=sent, failed=failed, status=status, reason=reason, now=now())
    _sync_job(conn, transaction_id)


def _set_status(conn: Connection, transaction_id: int, status: TransactionStatus, reason: str) -> None:
    rows.set_outgoing_status(conn, transaction_id, status, reason, now())
    _sync_job(conn, transaction_id)


def _sync_job(conn: Connection, transaction_id: int) -> None:
    """Mirror the transaction into its job row: progress, counts, and the final state."""
    row = rows.mirror_of(conn, transaction_id)
    if row is None or row.job_id is None:
        return
    sent, failed = row.sent, row.failed
    values: dict[str, Any] = {"progress_done": sent + failed, "counts": json.dumps({"sent": sent, "failed": failed})}
    if row.status == TransactionStatus.FINISHED:
        values.update(state=JobState.SUCCEEDED, finished=now(), result=json.dumps({"transaction_id": transaction_id}))
    elif row.status == TransactionStatus.FAILED:
        values.update(state=JobState.FAILED, error=row.reason, finished=now())
    rows.update_mirror_job(conn, row.job_id, JOB_KIND, values)


def reopen_jobs(index: Index) -> int:
    """After a restart: the job manager marked our running job rows interrupted, but the transactions
    continue (their state is in the database), so their jobs run again."""
    with index.writing() as conn:
        ids = rows.jobs_of_open_transactions(conn, OPEN_STATUSES)
        if ids:
            rows.reopen_mirror_jobs(conn, ids, JOB_KIND, JobState.RUNNING)
    return len(ids)


def delete_box(index: Index, box_id: Any) -> None:
    """Remove the box (its token stops working at once); its unfinished outgoing transactions fail."""
    key = row_id(box_id, "box id")
    if key is None:
        return
    with index.writing() as conn:
        if not rows.delete_box(conn, key):
            return
        for transaction_id in rows.open_transactions_of_box(conn, key, OPEN_STATUSES):
            _set_status(conn, transaction_id, TransactionStatus.FAILED, "the box was deleted")


# ---------------------------------------------------------------------------------------------- listing

#: a PROCESSING transaction not updated for this long is shown WAITING (as Slicebox did after 15 s)
STALE_SECONDS = 15.0


def transaction_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The REST form of a transaction row, outgoing or incoming."""
    m = dict(row)
    updated = m["updated"]
    if (
        m["status"] == TransactionStatus.PROCESSING
        and updated is not None
        and now() - updated > timedelta(seconds=STALE_SECONDS)
    ):
        m["status"] = TransactionStatus.WAITING
        if "reason" in m:
            m["reason"] = m["reason"] or f"no image moved for {int(STALE_SECONDS)} s: waiting for the partner"
    for name in ("created", "updated"):
        m[name] = iso(m[name])
    if "profile" in m:
        m["profile"] = json.loads(m["profile"] or "{}")
    return m


def list_transactions(index: Index, direction: rows.Direction, start: int, count: int) -> list[dict[str, Any]]:
    return [transaction_json(r) for r in rows.list_transactions(index, direction, start, count)]


def get_transaction(index: Index, direction: rows.Direction, transaction_id: Any) -> dict[str, Any]:
    key = row_id(transaction_id, "transaction id")
    row = None if key is None else rows.transaction(index, direction, key)
    if row is None:
        raise NotFound(f"{direction} transaction {transaction_id} not found")
    return transaction_json(row)


def list_outgoing(index: Index, start: int = 0, count: int = 20) -> list[dict[str, Any]]:
    return list_transactions(index, "outgoing", start, count)


def get_outgoing(index: Index, transaction_id: Any) -> dict[str, Any]:
    return get_transaction(index, "outgoing", transaction_id)


def outgoing_images(index: Index, transaction_id: Any) -> list[dict[str, Any]]:
    get_outgoing(index, transaction_id)
    return rows.outgoing_images(index, int(transaction_id))


def delete_outgoing(index: Index, transaction_id: Any) -> None:
    """Forget the transaction (unknown → nothing); what was not delivered yet is not sent any more."""
    key = row_id(transaction_id, "transaction id")
    if key is None:
        return
    with index.writing() as conn:
        row = rows.outgoing_job_and_status(conn, key)
        if row is None:
            return
        job_id, status = row
        if job_id is not None and status in OPEN_STATUSES:
            rows.cancel_mirror_job(
                conn, job_id, JOB_KIND, now(), running=JobState.RUNNING, cancelled=JobState.CANCELLED
            )
        rows.delete_outgoing(conn, key)
