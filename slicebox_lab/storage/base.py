"""The storage protocol every back-end implements."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import BinaryIO, Protocol, runtime_checkable


@runtime_checkable
class BlobWriter(Protocol):
    """A blob written in pieces as it arrives (an upload), named when it is complete."""

    size: int

    @property
    def path(self) -> str | None:
        """A file another process may write the blob into while this writer is open, or None."""
        ...

    def write(self, data: bytes | memoryview) -> None: ...

    def name(self, key: str) -> str | None:
        """The blob is complete: store it under ``key`` (which starts with the prefix it was created
        with); durable only after :meth:`flush`.  Returns its file path where it has one."""
        ...

    def flush(self) -> None:
        """Make the named blob durable (one flush)."""
        ...

    def discard(self) -> None:
        """Drop the blob, named or not; nothing is left behind (also after a failed write)."""
        ...


@runtime_checkable
class StorageArea(Protocol):
    """Bytes by opaque key.

    ``write`` and ``BlobWriter.flush`` are durable: when they return, the bytes survive a crash
    or a power cut, after one flush.  A crash during a write may leave a partial blob under its
    key: callers never hand out a key before its write returned (the context records it in the
    index only then) and recognise partial blobs by a digest in the key.  ``delete`` is
    idempotent; ``delete_durably`` also survives a power cut.
    """

    def write(self, key: str, data: bytes) -> None: ...

    def create(self, key_prefix: str) -> BlobWriter: ...

    def read(self, key: str) -> bytes: ...

    def open(self, key: str) -> BinaryIO: ...

    def size(self, key: str) -> int: ...

    def exists(self, key: str) -> bool: ...

    def modified(self, key: str) -> float:
        """When the blob was last written (a ``time.time()``)."""
        ...

    def local_path(self, key: str) -> str | None:
        """A file path other processes can read the blob from, or None (then hand them the bytes)."""
        ...

    def delete(self, key: str) -> None: ...

    def delete_durably(self, keys: Iterable[str]) -> None: ...

    def keys(self, written_before: float | None = None) -> Iterator[str]:
        """Every key; with ``written_before`` (a ``time.time()`` value), only blobs written before then."""
        ...

    def remove_incomplete(self, written_before: float | None = None) -> int:
        """Remove leftovers of streamed writes interrupted by a crash; returns how many.

        ``written_before``: only leftovers last written before that ``time.time()`` (other processes
        sharing the storage may be writing the younger ones right now).
        """
        ...
