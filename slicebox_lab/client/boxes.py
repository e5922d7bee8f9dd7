"""The boxes area of the client: partner connections, sending to a box, and the transactions that follow it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from ..model import TRANSACTION_ENDED, TransactionStatus
from .base import ClientBase, frame, profile_body

__all__ = ["BoxesMixin"]

BOX_COLUMNS = ["id", "name", "send_method", "base_url", "online", "last_contact", "last_error", "created"]
TRANSACTION_COLUMNS = [
    "id",
    "box_id",
    "box_name",
    "status",
    "reason",
    "total_image_count",
    "sent_image_count",
    "failed_image_count",
    "received_image_count",
    "added_image_count",
    "outgoing_transaction_id",
    "job_id",
    "created",
    "updated",
]


def _direction(direction: str) -> str:
    if direction not in ("outgoing", "incoming"):
        raise ValueError(f"direction must be 'outgoing' or 'incoming', not {direction!r}")
    return direction


class BoxesMixin(ClientBase):
    """``boxes`` routes: connections, sends, outgoing and incoming transactions."""

    # ------------------------------------------------------------------ connections

    def boxes(self) -> pd.DataFrame:
        return frame(self.get_all("boxes"), BOX_COLUMNS)

    def create_box_connection(
        self, name: str, options: Any = None, *, send_anonymous_as_is: bool = False
    ) -> dict[str, Any]:
        """A box the partner will call; the answer's ``base_url`` is the URL to hand to the partner."""
        body: dict[str, Any] = {"name": name, "sendAnonymousAsIs": send_anonymous_as_is}
        if options is not None:
            body["defaultProfile"] = profile_body(options)
        return dict(self.post("boxes/createconnection", json=body))

    def connect_box(
        self, name: str, url: str, options: Any = None, *, send_anonymous_as_is: bool = False
    ) -> dict[str, Any]:
        """Connect to a partner from the URL its create_box_connection answered."""
        body: dict[str, Any] = {"name": name, "url": url, "sendAnonymousAsIs": send_anonymous_as_is}
        if options is not None:
            body["defaultProfile"] = profile_body(options)
        return dict(self.post("boxes/connect", json=body))

    def delete_box(self, box_id: int) -> None:
        self.delete(f"boxes/{int(box_id)}")

    # ------------------------------------------------------------------ sending and transactions

    def send_to_box(
        self, box_id: int | str, image_ids: Iterable[int], *, options: Any = None, tag_values: Any = None
    ) -> dict[str, Any]:
        """Send images to a box (id or name) as one outgoing transaction; the transaction (``job_id`` inside).
        ``options`` None: the box's default profile."""
        box = self._id_by_name(box_id, self.boxes, "box")
        body: dict[str, Any] = {"imageIds": [int(i) for i in image_ids]}
        if options is not None:
            body["profile"] = profile_body(options)
        if tag_values is not None:
            body["tagValues"] = tag_values
        job = self.post(f"boxes/{box}/send", json=body)
        transaction_id = (job.get("parameters") or {}).get("transaction_id")
        if transaction_id is None:
            return {"job_id": job["id"], "status": TransactionStatus.WAITING, "job": job}
        return dict(self.get(f"boxes/outgoing/transactions/{int(transaction_id)}"))

    def wait_transaction(
        self, transaction_id: int, *, progress: bool = True, timeout: float | None = None, interval: float = 0.5
    ) -> dict[str, Any]:
        """Poll an outgoing box transaction until FINISHED or FAILED; the final transaction."""
        return self._poll(
            lambda: dict(self.get(f"boxes/outgoing/transactions/{int(transaction_id)}")),
            lambda t: t.get("status") in TRANSACTION_ENDED,
            lambda t: (int(t.get("sent_image_count") or 0), t.get("total_image_count")),
            f"transaction {transaction_id}",
            progress,
            timeout,
            interval,
        )

    def transactions(self, direction: str = "outgoing", *, limit: int | None = None) -> pd.DataFrame:
        return frame(self.get_all(f"boxes/{_direction(direction)}/transactions", limit=limit), TRANSACTION_COLUMNS)

    def transaction(self, transaction_id: int, direction: str = "outgoing") -> dict[str, Any]:
        return dict(self.get(f"boxes/{_direction(direction)}/transactions/{int(transaction_id)}"))

    def transaction_images(self, transaction_id: int, direction: str = "outgoing") -> pd.DataFrame:
        return frame(self.get(f"boxes/{_direction(direction)}/transactions/{int(transaction_id)}/images"))

    def delete_transaction(self, transaction_id: int, direction: str = "outgoing") -> None:
        self.delete(f"boxes/{_direction(direction)}/transactions/{int(transaction_id)}")
