"""The storage protocol every back-end implements."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, Protocol, runtime_checkable


@runtime_checkable
class StorageArea(Protocol):
    """Bytes by opaque key.

    ``write`` must be atomic and durable: when it returns, the bytes survive a
    crash, and a reader never sees a partial blob.  ``delete`` is idempotent.
    """

    def write(self, key: str, data: bytes) -> None: ...

    def read(self, key: str) -> bytes: ...

    def open(self, key: str) -> BinaryIO: ...

    def size(self, key: str) -> int: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def keys(self, written_before: float | None = None) -> Iterator[str]:
        """Every key; with ``written_before`` (a ``time.time()`` value), only blobs written before then."""
        ...

    def remove_incomplete(self, written_before: float | None = None) -> int:
        """Remove leftovers of writes interrupted by a crash; returns how many.

        ``written_before``: only leftovers last written before that ``time.time()`` (other processes
        sharing the storage may be writing the younger ones right now).
        """
        ...
