"""An in-memory storage area for tests (house rule 4)."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from typing import BinaryIO

from ..errors import NotFound


class MemoryStorage:
    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._written: dict[str, float] = {}
        self._lock = threading.Lock()

    def write(self, key: str, data: bytes) -> None:
        with self._lock:
            self._blobs[key] = bytes(data)
            self._written[key] = time.time()

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

    def exists(self, key: str) -> bool:
        with self._lock:
            return key in self._blobs

    def delete(self, key: str) -> None:
        with self._lock:
            self._blobs.pop(key, None)
            self._written.pop(key, None)

    def keys(self, written_before: float | None = None) -> Iterator[str]:
        with self._lock:
            return iter(sorted(k for k in self._blobs if written_before is None or self._written[k] < written_before))

    def remove_incomplete(self, written_before: float | None = None) -> int:
        return 0
