"""Incoming transactions: the receipts of the images a partner sent us.

Blocking functions over :class:`~slicebox_lab.index.Index`; the rows are ``index/boxes.py``.  Every
image received is recorded once per (sender's transaction, sequence number), in the image's own
database transaction (see ``transfer.receive_image``), so a resend of an image already stored is
answered from its receipt without storing it again.  An incoming transaction is PROCESSING until it
received its total, then FINISHED.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slicebox_lab.errors import NotFound
from slicebox_lab.index import Connection, Index
from slicebox_lab.index import boxes as rows
from slicebox_lab.index.query import row_id

from .connections import Box, now
from .outgoing import TransactionStatus, get_transaction, list_transactions


class AlreadyReceived(Exception):
    """The image of this (transaction, sequence number) was received before: roll back its new copy."""

    def __init__(self, image_id: int, status: str) -> None:
        super().__init__(f"image {image_id} was received before")
        self.image_id, self.status = image_id, status


def received_image(index: Index, box_id: int, outgoing_transaction_id: int, sequence_number: int) -> int | None:
    """The image stored for (sender's transaction, sequence number) from this box, or None."""
    return rows.received_image(index, box_id, outgoing_transaction_id, sequence_number)


@dataclass(frozen=True)
class Receipt:
    """What a receipt records: one image of a partner's transaction, stored here as ``image_id``."""

    box: Box
    outgoing_transaction_id: int
    sequence_number: int
    total: int
    image_id: int
    added: bool
    sha256: str


def record_received(index: Index, receipt: Receipt) -> str:
    """Record a durable image of an incoming transaction (once per sequence number); returns its status.

    Concurrent receipts share one write transaction (one commit) on SQLite, as concurrent ingests do:
    with several images in flight, a commit per receipt was a large part of the receiver's time.
    """
    for attempt in range(3):
        try:
            # the ingest's group commit: the receipt usually shares the commit of the next images' rows
            status: str = index.grouped_writing(lambda conn: write_receipt(conn, receipt))
            return status
        except rows.DuplicateReceipt:  # a concurrent request recorded the transaction or the image first
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def write_receipt(conn: Connection, receipt: Receipt, new_only: bool = False) -> str:
    """``record_received`` inside the caller's transaction (the image's own, see ``transfer.receive_image``);
    ``new_only``: raise :class:`AlreadyReceived` if this sequence number has its receipt already."""
    stamp = now()
    box, total = receipt.box, receipt.total
    transaction_id = rows.incoming_id(conn, box.id, receipt.outgoing_transaction_id)
    if transaction_id is None:
        transaction_id = rows.insert_incoming(
            conn,
            box_id=box.id,
            box_name=box.name,
            outgoing_transaction_id=receipt.outgoing_transaction_id,
            status=TransactionStatus.PROCESSING,
            total=total,
            now=stamp,
        )
    known = rows.receipt_of(conn, transaction_id, receipt.sequence_number)
    if known is not None:
        status = rows.incoming_status(conn, transaction_id)
        if new_only:
            raise AlreadyReceived(known, status)
        return status
    return rows.insert_receipt(
        conn,
        transaction_id,
        receipt.sequence_number,
        total,
        receipt.image_id,
        receipt.added,
        receipt.sha256,
        stamp,
        finished=TransactionStatus.FINISHED,
        processing=TransactionStatus.PROCESSING,
    )


def incoming_status(index: Index, box_id: int, outgoing_transaction_id: Any) -> dict[str, Any]:
    key = row_id(outgoing_transaction_id, "transactionid")
    row = None if key is None else rows.incoming_progress(index, box_id, key)
    if row is None:
        raise NotFound(f"no incoming transaction {outgoing_transaction_id} from this box")
    return {"status": row[0], "received_image_count": row[1], "total_image_count": row[2]}


def list_incoming(index: Index, start: int = 0, count: int = 20) -> list[dict[str, Any]]:
    return list_transactions(index, "incoming", start, count)


def get_incoming(index: Index, transaction_id: Any) -> dict[str, Any]:
    return get_transaction(index, "incoming", transaction_id)


def incoming_images(index: Index, transaction_id: Any) -> list[dict[str, Any]]:
    """The images received in the transaction that are still stored."""
    get_incoming(index, transaction_id)
    return rows.incoming_images(index, int(transaction_id))


def delete_incoming(index: Index, transaction_id: Any) -> None:
    """Forget the record of the transaction (the images received stay)."""
    key = row_id(transaction_id, "transaction id")
    if key is None:
        return
    rows.delete_incoming(index, key)
