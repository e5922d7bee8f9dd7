"""A folder of files, written atomically: temp file, fsync, rename, fsync of the folder."""

from __future__ import annotations

import errno
import os
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import NotFound, SliceboxError, StorageFull

_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_TMP_PREFIX = ".tmp-"
_HEX = "0123456789abcdef"


class FileSystemStorage:
    """Blobs under ``root/<first two characters of key>/<key>``.

    The two-character fan-out keeps folders small at a million images.  Files
    being written are named ``.tmp-*`` and are never visible under a key; a
    crash leaves at most such a temp file, which :meth:`remove_incomplete` deletes.

    A :meth:`delete` of a key whose :meth:`write` is still running (the index row of an ingest
    may commit while its blob is being written, see ``SliceboxContext.ingest``) is remembered
    and done by that write once its file is in place, so no blob outlives its deletion.
    """

    def __init__(self, root: str | os.PathLike[str], fsync: bool = True) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._lock = threading.Lock()
        #: keys being written -> deleted meanwhile
        self._writing: dict[str, bool] = {}
        # the 256 folders of hex keys (the context's keys are uuid4 hex) are made once, here, so
        # that no write waits for a mkdir and an fsync of the root; other keys' folders on demand
        for first in _HEX:
            for second in _HEX:
                (self.root / f"{first}{second}").mkdir(exist_ok=True)
        #: fan-out folders known to exist durably: created by this process, or found at start
        #: (and made durable by the root's fsync below, also should a crashed process have skipped it)
        self._folders: frozenset[str] = frozenset(
            entry.name for entry in os.scandir(self.root) if entry.is_dir() and len(entry.name) == 2
        )
        if fsync:
            _fsync_dir(self.root)

    def _path(self, key: str) -> Path:
        if not _KEY.match(key) or key.startswith("."):
            raise ValueError(f"invalid storage key {key!r}")
        return self.root / key[:2] / key

    def write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        with self._lock:
            self._writing[key] = False
        try:
            self._write(path, data)
        finally:
            with self._lock:
                deleted = self._writing.pop(key, False)
            if deleted:
                path.unlink(missing_ok=True)

    def _write(self, path: Path, data: bytes) -> None:
        folder = path.parent
        if folder.name not in self._folders:
            self._make_folder(folder)
        tmp = folder / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        renamed = False
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self.fsync:
                    # data and the metadata needed to read it back (size, blocks); the name is
                    # made durable by the folder's fsync after the rename
                    os.fdatasync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            renamed = True
            if self.fsync:
                _fsync_dir(folder)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            if renamed:  # the name may not survive a crash: a failed write leaves nothing
                path.unlink(missing_ok=True)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"no space left in {self.root}: nothing was stored") from e
            raise SliceboxError(f"could not write to storage: {e.strerror}") from e

    def _make_folder(self, folder: Path) -> None:
        """Create a fan-out folder durably (once per folder and process: no stat per write)."""
        try:
            if not folder.is_dir():
                folder.mkdir(exist_ok=True)
                if self.fsync:
                    _fsync_dir(self.root)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"no space left in {self.root}: nothing was stored") from e
            raise SliceboxError(f"could not write to storage: {e.strerror}") from e
        with self._lock:
            self._folders = self._folders | {folder.name}

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
        path = self._path(key)
        with self._lock:
            if key in self._writing:
                self._writing[key] = True
        path.unlink(missing_ok=True)

    def keys(self, written_before: float | None = None) -> Iterator[str]:
        """Keys in order; ``written_before``: only blobs whose file was last modified before that time."""
        for folder in sorted(self.root.iterdir()):
            if folder.is_dir() and len(folder.name) == 2:
                for entry in sorted(folder.iterdir()):
                    if not entry.name.startswith(_TMP_PREFIX) and entry.is_file():
                        if written_before is not None and not _older(entry, written_before):
                            continue
                        yield entry.name

    def remove_incomplete(self, written_before: float | None = None) -> int:
        """Remove temp files of interrupted writes; ``written_before``: only those last modified before then.

        Several processes may share the folder: a young temp file may be another one's write in progress.
        """
        removed = 0
        for folder in self.root.iterdir():
            if folder.is_dir():
                for entry in folder.glob(f"{_TMP_PREFIX}*"):
                    if written_before is not None and not _older(entry, written_before):
                        continue
                    entry.unlink(missing_ok=True)
                    removed += 1
        return removed


def _older(path: Path, limit: float) -> bool:
    """Whether ``path`` was last modified before the time ``limit`` (a vanished file is not)."""
    try:
        return path.stat().st_mtime < limit
    except FileNotFoundError:
        return False


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
