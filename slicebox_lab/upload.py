"""An image on its way in (:class:`Upload`) and an anonymous copy on its way into the index (:class:`AnonymousBlob`):
the pieces of the one ingest path (``context.py``) that a handler, a box or a bulk job holds while bytes arrive
or workers run."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from .errors import InvalidInput
from .index.repository import IngestAlso, IngestEntry
from .model import Image, IndexedAttributes, IngestResult, Source
from .storage import BlobWriter
from .workers import tasks

__all__ = ["AnonymousBlob", "PendingAnonymization", "Store", "Upload"]

#: bytes of an upload kept in memory for messages about it (the header of any ordinary file)
_HEAD_BYTES = 64 << 10


class Store(Protocol):
    """``SliceboxContext._store``: validate, flush and index an upload."""

    def __call__(
        self,
        upload: Upload,
        reidentify: bool,
        also: IngestAlso | None,
        *,
        accept: Callable[[IndexedAttributes], None] | None = None,
    ) -> IngestResult: ...


@dataclass
class AnonymousBlob:
    """An image's de-identified copy in a new blob, on its way into the index (:meth:`anonymize_many`)."""

    image: Image
    source: Source
    upload: Upload
    done: tasks.AnonymizedBlob
    key: str

    @property
    def entry(self) -> IngestEntry:
        """What the index takes of it."""
        return IngestEntry(self.done.inspected.attributes, self.source, self.key, self.done.size)

    def flush(self) -> AnonymousBlob | BaseException:
        """Name the blob (its key is durable now) and make it durable: the one flush.  On failure (a full
        disk) the blob is gone again and the error is the answer."""
        writer = self.upload.writer
        try:
            writer.name(self.key)
            writer.flush()
        except BaseException as error:
            writer.discard()
            return error
        return self


class PendingAnonymization:
    """The anonymous copies of a chunk being written (``SliceboxContext.start_anonymizing``), a few images to each
    future: each image's :class:`AnonymousBlob`, a result already stored, or an error; none raises."""

    def __init__(self, writes: list[Future[list[AnonymousBlob | IngestResult | BaseException]]]) -> None:
        self._writes = writes

    def outcomes(self) -> list[AnonymousBlob | IngestResult | BaseException]:
        """Every image's outcome, in order, once all are done."""
        return [outcome for write in self._writes for outcome in write.result()]

    def discard(self) -> None:
        """Abandon the chunk (a cancelled or failed job): wait for the writes and remove every copy."""
        for outcome in self.outcomes():
            if isinstance(outcome, AnonymousBlob):
                outcome.upload.discard()


class Upload:
    """One image on its way in: written to storage as it arrives and hashed on the way, then stored
    by :meth:`store` (validated, flushed once, indexed) or dropped by :meth:`discard`.

    ``write`` blocks on the file system: call it off the event loop, in order."""

    def __init__(self, prefix: str, writer: BlobWriter, source: Source, store: Store) -> None:
        self._store = store
        self.source = source
        #: the start of the blob's key (``writer`` was created for it)
        self.prefix = prefix
        self.writer = writer
        self._hash = tasks.blob_digest()
        self._digest = ""
        self._done = False
        #: the first bytes written (the header, for messages about a file that was refused)
        self.head = b""
        self._early: Future[tasks.HeadInspected | None] | None = None

    @property
    def size(self) -> int:
        return self.writer.size

    def write(self, data: bytes | memoryview) -> None:
        if len(self.head) < _HEAD_BYTES:
            self.head += bytes(data[: _HEAD_BYTES - len(self.head)])
        self._hash.update(data)
        self.writer.write(data)

    def hexdigest(self) -> str:
        return self._digest or self._hash.hexdigest()

    def inspect_early(self, check: Future[tasks.HeadInspected | None] | None) -> None:
        """The inspection of this file's first bytes (:meth:`SliceboxContext.inspect_head`), running while the
        rest of it arrives: :meth:`store` uses its answer where it holds for the whole file."""
        self._early = check

    def inspected_early(self) -> tasks.Inspected | None:
        """The early inspection's answer, if there was one and it holds for the file as written (its size)."""
        if self._early is None:
            return None
        try:
            early = self._early.result()
        except Exception:  # a worker that died, a pool shutting down: the whole file is inspected instead
            return None
        return early.inspected if early is not None and early.size == self.writer.size else None

    def adopt(self, size: int, hexdigest: str) -> None:
        """The blob's file was written by another process (a worker, through ``writer.path``)."""
        self.writer.size = size
        self._digest = hexdigest

    def store(
        self,
        reidentify: bool = True,
        also: IngestAlso | None = None,
        accept: Callable[[IndexedAttributes], None] | None = None,
    ) -> IngestResult:
        """Validate, make durable and index the image (see :meth:`SliceboxContext.ingest`); ``accept`` may
        refuse it by its attributes (raising) before anything is indexed."""
        if self._done:
            raise InvalidInput("this upload was already stored or discarded")
        self._done = True
        return self._store(self, reidentify, also, accept=accept)

    def discard(self) -> None:
        """Forget everything written (a body cut short): nothing is left behind."""
        self._done = True
        self.writer.discard()
