"""An in-memory storage area for tests (house rule 4)."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from typing import BinaryIO

from ..errors import NotFound


class MemoryStorage:
    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def write(self, key: str, data: bytes) -> None:
        with self._lock:
            self._blobs[key] = bytes(data)

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

    def keys(self) -> Iterator[str]:
        with self._lock:
            return iter(sorted(self._blobs))

    def remove_incomplete(self) -> int:
        return 0
