"""Selections of series (what a browser widget or a DataFrame filter picked) and the verbs on them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from ..model import FINISHED_STATES, TRANSACTION_ENDED, JobState, TransactionStatus
from .base import frame
from .errors import Conflict, NotFound
from .metadata import FLAT_SERIES_COLUMNS
from .volume import Volume

__all__ = ["Selection", "SelectionClient", "Series", "Transfer", "series_ids_of"]


class SelectionClient(Protocol):
    """What series, selections and transfers ask of their client; :class:`SliceboxClient` has it all.
    Declared here so that this module needs no client module: the client builds selections, so
    importing it back would close an import circle."""

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any], progress: bool, description: str) -> list[Any]: ...

    def get_all(self, path: str, params: Mapping[str, Any] | None = None) -> list[Any]: ...

    def post(self, path: str, json: Any = None) -> Any: ...

    def series_record(self, series_id: int) -> dict[str, Any]: ...

    def images(self, series_id: int | None = None) -> pd.DataFrame: ...

    def image_ids(self, series_id: int) -> list[int]: ...

    def series_volume(self, series_id: int, *, progress: bool = False) -> Volume: ...

    def add_series_tag(self, name: str) -> dict[str, Any]: ...

    def anonymize_images(self, image_ids: Iterable[int], options: Any = None) -> dict[str, Any]: ...

    def review(
        self, image_ids: Iterable[int] = (), options: Any = None, *, series_ids: Iterable[int] = ()
    ) -> pd.DataFrame: ...

    def send_to_box(self, box_id: int | str, image_ids: Iterable[int], *, options: Any = None) -> dict[str, Any]: ...

    def send_to_scu(self, scu_id: int | str, image_ids: Iterable[int]) -> dict[str, Any]: ...

    def delete_images(self, image_ids: Iterable[int]) -> None: ...

    def export(self, selection_or_image_ids: Any, folder: str | os.PathLike[str]) -> list[Path]: ...

    def job(self, job_id: int) -> dict[str, Any]: ...

    def wait_job(self, job_id: int, *, progress: bool = True, timeout: float | None = None) -> dict[str, Any]: ...

    def transaction(self, transaction_id: int) -> dict[str, Any]: ...

    def wait_transaction(
        self, transaction_id: int, *, progress: bool = True, timeout: float | None = None
    ) -> dict[str, Any]: ...


class Series:
    """One stored series: its attributes, images and pixels."""

    def __init__(self, client: SelectionClient, series_id: int) -> None:
        self.client = client
        self.id = int(series_id)
        self._attributes: dict[str, Any] | None = None

    @property
    def attributes(self) -> dict[str, Any]:
        """Patient, study and series attributes (the flat series record), fetched once."""
        if self._attributes is None:
            self._attributes = self.client.series_record(self.id)
        return self._attributes

    def images(self) -> pd.DataFrame:
        return self.client.images(self.id)

    def image_ids(self) -> list[int]:
        return self.client.image_ids(self.id)

    def to_numpy(self, *, progress: bool = False) -> Volume:
        return self.client.series_volume(self.id, progress=progress)

    def __repr__(self) -> str:
        return f"Series({self.id})"


@dataclass
class Transfer:
    """A send under way: a box transaction (``transaction``) or a C-STORE job (``job``)."""

    client: SelectionClient
    kind: str
    job: dict[str, Any]
    transaction: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        if self.transaction is not None:
            return self.transaction.get("status") in TRANSACTION_ENDED
        return self.job.get("state") in FINISHED_STATES

    @property
    def succeeded(self) -> bool:
        if self.transaction is not None:
            return self.transaction.get("status") == TransactionStatus.FINISHED
        return self.job.get("state") == JobState.SUCCEEDED

    def refresh(self) -> Transfer:
        if self.transaction is not None:
            self.transaction = self.client.transaction(int(self.transaction["id"]))
        if self.job.get("id") is not None:
            self.job = self.client.job(int(self.job["id"]))
        return self

    def wait(self, *, progress: bool = True, timeout: float | None = None) -> dict[str, Any]:
        """Until the transaction is FINISHED/FAILED (box) or the job is over (SCU); the final record."""
        if self.transaction is not None:
            self.transaction = self.client.wait_transaction(
                int(self.transaction["id"]), progress=progress, timeout=timeout
            )
            if self.job.get("id") is not None:
                self.job = self.client.job(int(self.job["id"]))
            return self.transaction
        self.job = self.client.wait_job(int(self.job["id"]), progress=progress, timeout=timeout)
        return self.job

    def __repr__(self) -> str:
        if self.transaction is not None:
            t = self.transaction
            return (
                f"Transfer(box {t.get('box_name')!r}, transaction {t.get('id')}: {t.get('status')}, "
                f"{t.get('sent_image_count', 0)}/{t.get('total_image_count')} sent)"
            )
        j = self.job
        return f"Transfer(scu, job {j.get('id')}: {j.get('state')}, {j.get('progress_done')}/{j.get('progress_total')})"


@dataclass
class Selection:
    """Series picked for one action; ``len()`` counts series."""

    client: SelectionClient
    series_ids: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.series_ids)

    def __iter__(self) -> Iterator[Series]:
        return (Series(self.client, i) for i in self.series_ids)

    def __repr__(self) -> str:
        return f"Selection({len(self)} series: {self.series_ids[:10]}{' …' if len(self) > 10 else ''})"

    def image_ids(self) -> list[int]:
        """Every image of the selected series (series order, then the node's image order)."""
        if not self.series_ids:
            return []
        parts = self.client._map(self.client.image_ids, self.series_ids, False, "series")
        return [i for part in parts for i in part]

    def to_frame(self) -> pd.DataFrame:
        """The selected series as flat series rows (patient, study, series attributes)."""
        rows = self.client._map(self.client.series_record, self.series_ids, False, "series")
        return frame(rows, [c for c in FLAT_SERIES_COLUMNS if c not in ("source", "tags", "series_types")])

    def _tag_id(self, name: str, create: bool) -> int | None:
        for tag in self.client.get_all("metadata/seriestags", {"filter": name}):
            if tag.get("name") == name:
                return int(tag["id"])
        if not create:
            return None
        try:
            return int(self.client.add_series_tag(name)["id"])
        except Conflict:  # created meanwhile by someone else
            return self._tag_id(name, False)

    def tag(self, name: str) -> dict[str, Any]:
        """Tag every selected series (the tag is created if new); counts ``added``, ``already_tagged``."""
        tag_id = self._tag_id(name, True)
        return dict(self.client.post(f"metadata/seriestags/{tag_id}/series", json=self.series_ids))

    def untag(self, name: str) -> dict[str, Any]:
        """Remove a tag from the selected series (the tag stays); counts ``removed``."""
        tag_id = self._tag_id(name, False)
        if tag_id is None:
            raise NotFound(f"no series tag named {name!r}", 404)
        return dict(self.client.post(f"metadata/seriestags/{tag_id}/series/remove", json=self.series_ids))

    def anonymize(
        self, options: Any = None, *, wait: bool = False, progress: bool = True, timeout: float | None = None
    ) -> dict[str, Any]:
        """Anonymize the selection in place, as a job (the final job with ``wait``)."""
        job = self.client.anonymize_images(self.image_ids(), options)
        if wait:
            return self.client.wait_job(int(job["id"]), progress=progress, timeout=timeout)
        return job

    def send(
        self,
        box: int | str | None = None,
        scu: int | str | None = None,
        options: Any = None,
        wait: bool = False,
        progress: bool = True,
        timeout: float | None = None,
    ) -> Transfer:
        """Send to a box (anonymized on the way out, ``options`` or the box's default profile) or a remote
        DICOM node (``scu``, as stored); ``wait`` follows it to the end."""
        if (box is None) == (scu is None):
            raise ValueError("send to exactly one of box= or scu=")
        ids = self.image_ids()
        if box is not None:
            transaction = self.client.send_to_box(box, ids, options=options)
            job = {"id": transaction.get("job_id")}
            transfer = Transfer(self.client, "box", job, transaction if "id" in transaction else None)
        else:
            if options is not None:
                raise ValueError("options apply to box sends; a remote node gets the images as stored")
            transfer = Transfer(self.client, "scu", self.client.send_to_scu(scu, ids))  # type: ignore[arg-type]
        if wait:
            transfer.wait(progress=progress, timeout=timeout)
        elif transfer.job.get("id") is not None and transfer.kind == "box":
            transfer.job = self.client.job(int(transfer.job["id"]))
        return transfer

    def delete(self) -> None:
        """Delete every image of the selected series (and the series, studies, patients left empty)."""
        self.client.delete_images(self.image_ids())

    def export(self, folder: str | os.PathLike[str]) -> list[Path]:
        return self.client.export(self.image_ids(), folder)

    def review(self, options: Any = None) -> pd.DataFrame:
        """The de-identification report of the selection (see :meth:`SliceboxClient.review`)."""
        return self.client.review(options=options, series_ids=self.series_ids)

    def to_numpy(self, *, progress: bool = False) -> list[Volume]:
        return [self.client.series_volume(i, progress=progress) for i in self.series_ids]


def series_ids_of(value: Any) -> list[int]:
    """Series ids of a DataFrame of series (``series_id`` or ``id``), ids, or objects with an ``id``; once each."""
    if isinstance(value, pd.DataFrame):
        column = "series_id" if "series_id" in value.columns else "id"
        if column not in value.columns:
            raise ValueError("the DataFrame needs a series_id or id column of series")
        ids = [int(i) for i in value[column]]
    elif isinstance(value, pd.Series):
        ids = [int(i) for i in value]
    elif isinstance(value, int | np.integer):
        ids = [int(value)]
    else:
        ids = [int(getattr(i, "id", i)) for i in value]
    return list(dict.fromkeys(ids))
