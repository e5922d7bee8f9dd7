"""An in-memory storage area for tests (house rule 4)."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from ..errors import NotFound, SliceboxError


class MemoryStorage:
    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._written: dict[str, float] = {}
        self._lock = threading.Lock()

    def write(self, key: str, data: bytes) -> None:
        with self._lock:
            self._blobs[key] = bytes(data)
            self._written[key] = time.time()

    def create(self, key_prefix: str) -> MemoryBlobWriter:
        return MemoryBlobWriter(self, key_prefix)

    def local_path(self, key: str) -> None:
        return None

    def read(self, key: str) -> bytes:
        with self._lock:
            try:
                return self._blobs[key]
            except KeyError:
                raise NotFound(f"no stored data for key {key}") from None

    def open(self, key: str) -> BinaryIO:
        return io.BytesIO(self.read(key))

    def size(self, key: str) -> int:
        return len(self.read(key))

    def modified(self, key: str) -> float:
        with self._lock:
            try:
                return self._written[key]
            except KeyError:
                raise NotFound(f"no stored data for key {key}") from None

    def exists(self, key: str) -> bool:
        with self._lock:
            return key in self._blobs

    def delete(self, key: str) -> None:
        with self._lock:
            self._blobs.pop(key, None)
            self._written.pop(key, None)

    def delete_durably(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.delete(key)

    def keys(self, written_before: float | None = None) -> Iterator[str]:
        with self._lock:
            return iter(sorted(k for k in self._blobs if written_before is None or self._written[k] < written_before))

    def remove_incomplete(self, written_before: float | None = None) -> int:
        return 0


class MemoryBlobWriter:
    #: no file another process could write
    path: str | None = None

    def __init__(self, storage: MemoryStorage, key_prefix: str) -> None:
        self._storage = storage
        self._prefix = key_prefix
        self._parts: list[bytes] | None = []
        self._key: str | None = None
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        if self._parts is None:
            raise SliceboxError("the blob was already flushed or discarded")
        self._parts.append(bytes(data))
        self.size += len(data)

    def name(self, key: str) -> None:
        if self._parts is None:
            raise SliceboxError("the blob was already flushed or discarded")
        if not key.startswith(self._prefix):
            raise ValueError(f"key {key!r} does not start with {self._prefix!r}")
        self._key = key
        self._storage.write(key, b"".join(self._parts))

    def flush(self) -> None:
        if self._key is None:
            raise SliceboxError("name the blob before flushing it")
        self._parts = None

    def discard(self) -> None:
        self._parts = None
        if self._key is not None:
            self._storage.delete(self._key)
            self._key = None
