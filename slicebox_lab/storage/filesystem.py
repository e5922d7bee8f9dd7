"""A folder of files, written atomically: temp file, fsync, rename, fsync of the folder."""

from __future__ import annotations

import errno
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import NotFound, SliceboxError, StorageFull

_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_TMP_PREFIX = ".tmp-"


class FileSystemStorage:
    """Blobs under ``root/<first two characters of key>/<key>``.

    The two-character fan-out keeps folders small at a million images.  Files
    being written are named ``.tmp-*`` and are never visible under a key; a
    crash leaves at most such a temp file, which :meth:`remove_incomplete` deletes.
    """

    def __init__(self, root: str | os.PathLike[str], fsync: bool = True) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync

    def _path(self, key: str) -> Path:
        if not _KEY.match(key) or key.startswith("."):
            raise ValueError(f"invalid storage key {key!r}")
        return self.root / key[:2] / key

    def write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        folder = path.parent
        new_folder = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
            if self.fsync:
                _fsync_dir(folder)
                if new_folder:
                    _fsync_dir(self.root)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"no space left in {self.root}: nothing was stored") from e
            raise SliceboxError(f"could not write to storage: {e.strerror}") from e

    def read(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no stored data for key {key}") from None

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise NotFound(f"no stored data for key {key}") from None

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"no stored data for key {key}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def keys(self) -> Iterator[str]:
        for folder in sorted(self.root.iterdir()):
            if folder.is_dir() and len(folder.name) == 2:
                for entry in sorted(folder.iterdir()):
                    if not entry.name.startswith(_TMP_PREFIX) and entry.is_file():
                        yield entry.name

    def remove_incomplete(self) -> int:
        removed = 0
        for folder in self.root.iterdir():
            if folder.is_dir():
                for entry in folder.glob(f"{_TMP_PREFIX}*"):
                    entry.unlink(missing_ok=True)
                    removed += 1
        return removed


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
